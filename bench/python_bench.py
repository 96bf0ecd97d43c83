#!/usr/bin/python3
"""The Python binding's benchmark (issue 13): Mayfly's `mayfly` package against
redis-py on the same machine, in the same run.

One run starts a throwaway redis-server (127.0.0.1, no persistence) and a
Mayfly cluster of its own (mayfly-directory and one mayfly-memserver from the
build tree, on free loopback ports), so each side has one data server; every
daemon is killed by PID at the end, also when the run fails. It then measures
kv get and put of 64-byte values under 16-byte keys, through `import mayfly`
and through redis-py (Debian python3-redis) against that redis-server:

  * single calls: kv[k] and kv[k] = v against r.get(k) and r.set(k, v);
  * batches: kv.get_many / kv.put_many against a redis-py pipeline
    (transaction=False) of the same size;

with 1 process and with 8 (multiprocessing, spawn; each process connects on
its own; all start at a barrier and do a fixed share of the row's operations;
throughput is the row's operations over the span from the first start to the
last end). Each row warms up, then runs --reps repetitions per side,
alternating which side goes first, and reports the median ops/s of each side,
their ratio, and the median and range of the per-repetition ratios; p50/p99
latency is per call for single calls and per batch for batches, over every
repetition; a second table gives the CPU time per operation of the client
processes and of each server. The run ends by reading every key back on both
sides. See ../shared/docs/MEASURING.md: ratios within one run are the figures.

  /usr/bin/python3 bench/python_bench.py [--ops N] [--batch-ops N] [--procs 1,8]
      [--batch 16,100] [--reps 7] [--keys N] [--build-dir DIR] [--quick]

Nothing is pinned. The machines have 2 vCPUs, so 8 processes (and the server)
oversubscribe them; the output says so.
"""

from __future__ import annotations

import argparse
import array
import ctypes
import datetime
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

KEY_LEN = 16
VALUE_LEN = 64
PRELOAD_VALUE = b"p" * VALUE_LEN  # what every key holds before the put rows
PUT_VALUE = b"v" * VALUE_LEN  # what the put rows write
KV_PATH = "/pybench/kv"
KV_BLOCKS = 16  # partitions of the kv namespace: far from splitting (see block_size_for)
SYSTEMS = ("mayfly", "redis-py")
TASK_TIMEOUT_S = 600.0  # a worker that says nothing for this long has hung


def key(i: int) -> bytes:
    """The i-th key: exactly KEY_LEN bytes."""
    return b"k%015d" % i


# --- daemons ---


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the benchmark dies, so a daemon
    never outlives a run killed with SIGKILL (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


class Daemon:
    """A process we started, its log kept in the work directory; kill() is by PID."""

    def __init__(self, name: str, argv: List[str], work: Path) -> None:
        self.name = name
        self.log_path = work / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)

    def read_log(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()


class Daemons:
    """The run's redis-server, mayfly-directory and mayfly-memserver; kill_all()
    (in a finally) stops every one that was started."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.work = Path(tempfile.mkdtemp(prefix="mayfly-pybench-"))
        self.started: List[Daemon] = []
        self.directory = ""
        self.redis_port = 0
        self.pids: Dict[str, int] = {}  # the data server of each side

    def _start(self, name: str, argv: List[str]) -> Daemon:
        d = Daemon(name, argv, self.work)
        self.started.append(d)
        return d

    def _mayfly(self, name: str, rel: str, args: List[str]) -> str:
        """Starts a Mayfly daemon with --port 0 --port-file; returns host:port."""
        port_file = self.work / f"{name}.port"
        d = self._start(name, [str(self.bin_dir / rel), "--host", "127.0.0.1", "--port", "0",
                               "--port-file", str(port_file)] + args)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if d.proc.poll() is not None:
                raise RuntimeError(f"{name} exited during start-up:\n{d.read_log()}")
            try:
                text = port_file.read_text().strip()
                if text:
                    return f"127.0.0.1:{int(text)}"
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.01)
        raise RuntimeError(f"{name} did not start listening within 10 s:\n{d.read_log()}")

    def start_mayfly(self, blocks: int, block_size: int) -> None:
        import mayfly
        self.directory = self._mayfly("directory", "directory/mayfly-directory", [])
        ms = self._mayfly("memserver", "memserver/mayfly-memserver",
                          ["--directory", self.directory, "--blocks", str(blocks),
                           "--block-size", str(block_size), "--log-level", "warn"])
        self.pids["mayfly"] = self.started[-1].proc.pid
        deadline = time.monotonic() + 10
        with mayfly.connect(self.directory) as c:
            while not any(s.address == ms and s.up for s in c.servers()):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the memory server is not listed as up:\n"
                                       f"{self.started[-1].read_log()}")
                time.sleep(0.02)

    def start_redis(self) -> None:
        """redis-server on a free loopback port. Redis has no --port-file, so
        the port is one the kernel just handed out and released (a race with
        other programs, hence three tries)."""
        import redis
        for attempt in range(3):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            d = self._start(f"redis{attempt}", [
                "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning"])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and d.proc.poll() is None:
                try:
                    redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping()
                    self.redis_port = port
                    self.pids["redis-py"] = d.proc.pid
                    return
                except redis.exceptions.ConnectionError:
                    time.sleep(0.02)
            d.kill()
        raise RuntimeError(f"redis-server did not start:\n{d.read_log()}")

    def kill_all(self, failed: bool) -> None:
        for d in reversed(self.started):
            d.kill()
        if failed:
            print(f"daemon logs kept in {self.work}", file=sys.stderr)
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process so far, all its threads
    (/proc/PID/stat; clock-tick resolution)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the worker processes ---


def _pct(sorted_ns: Sequence[int], q: float) -> float:
    """The q-quantile (nearest rank) of sorted nanoseconds, in microseconds."""
    if not sorted_ns:
        return float("nan")
    i = min(len(sorted_ns) - 1, max(0, int(round(q * len(sorted_ns))) - 1))
    return sorted_ns[i] / 1000.0


class Worker:
    """What one worker process holds: its Mayfly client and mounted kv, its
    redis-py client and a pipeline, and the keys."""

    def __init__(self, directory: str, redis_port: int, nkeys: int) -> None:
        import mayfly
        import redis
        self.client = mayfly.connect(directory)
        self.kv = self.client.mount(KV_PATH, kind="kv")
        self.r = redis.Redis(host="127.0.0.1", port=redis_port)
        self.pipe = self.r.pipeline(transaction=False)
        self.keys = [key(i) for i in range(nkeys)]

    def close(self) -> None:
        self.kv.unmount()
        self.client.close()
        self.r.close()

    @staticmethod
    def prepare(system: str, op: str, batch: int, keys: List[bytes]) -> list:
        """The work of run() made ready before the clock starts: the keys for
        single calls, else the batches (for put_many, dicts of key to value)."""
        if batch == 1:
            return keys
        chunks = [keys[i:i + batch] for i in range(0, len(keys), batch)]
        if system == "mayfly" and op == "put":
            return [dict.fromkeys(ch, PUT_VALUE) for ch in chunks]
        return chunks

    def run(self, system: str, op: str, batch: int, work: list, lat: array.array) -> None:
        """Does op on the prepared work (single calls when batch is 1),
        appending each call's or batch's latency in ns to lat."""
        clock = time.perf_counter_ns
        kv, r, p = self.kv, self.r, self.pipe
        v = PUT_VALUE
        t = clock()
        if batch == 1:
            if system == "mayfly" and op == "get":
                for k in work:
                    kv[k]
                    t2 = clock(); lat.append(t2 - t); t = t2  # noqa: E702
            elif system == "mayfly":
                for k in work:
                    kv[k] = v
                    t2 = clock(); lat.append(t2 - t); t = t2  # noqa: E702
            elif op == "get":
                for k in work:
                    r.get(k)
                    t2 = clock(); lat.append(t2 - t); t = t2  # noqa: E702
            else:
                for k in work:
                    r.set(k, v)
                    t2 = clock(); lat.append(t2 - t); t = t2  # noqa: E702
        elif system == "mayfly" and op == "get":
            for ch in work:
                kv.get_many(ch)
                t2 = clock(); lat.append(t2 - t); t = t2  # noqa: E702
        elif system == "mayfly":
            for d in work:
                kv.put_many(d)
                t2 = clock(); lat.append(t2 - t); t = t2  # noqa: E702
        elif op == "get":
            for ch in work:
                for k in ch:
                    p.get(k)
                p.execute()
                t2 = clock(); lat.append(t2 - t); t = t2  # noqa: E702
        else:
            for ch in work:
                for k in ch:
                    p.set(k, v)
                p.execute()
                t2 = clock(); lat.append(t2 - t); t = t2  # noqa: E702

    def check(self, system: str, keys: List[bytes]) -> None:
        """That the keys read back as one of the two values, through the system."""
        if system == "mayfly":
            got = self.kv.get_many(keys)
        else:
            got = self.r.mget(keys)
        bad = [(k, g) for k, g in zip(keys, got) if g not in (PRELOAD_VALUE, PUT_VALUE)]
        if bad:
            raise AssertionError(f"{system}: {len(bad)} of {len(keys)} keys read back wrong, "
                                 f"first {bad[0]!r}")


def worker_main(idx: int, nprocs: int, conn, barrier, directory: str, redis_port: int,
                nkeys: int) -> None:
    """A worker process: connects, then runs the tasks the parent sends
    ((system, op, batch, nops, warm) or None to stop), answering each with
    ("ok", t0_ns, t1_ns, nops, cpu_s, latencies bytes) or ("error", traceback):
    the times around the timed part, the process's CPU time in it (user and
    system, all its threads) and each call's or batch's latency in ns."""
    w = None
    try:
        w = Worker(directory, redis_port, nkeys)
        conn.send(("ready",))
        # Each process starts at its own offset in the keys, and moves on from
        # task to task, so processes do not hit the same keys at once.
        pos = idx * nkeys // nprocs
        while True:
            task = conn.recv()
            if task is None:
                break
            system, op, batch, nops, warm = task
            ks = [w.keys[(pos + i) % nkeys] for i in range(warm + nops)]
            pos = (pos + warm + nops) % nkeys
            w.check(system, ks[:max(batch, 16)])
            w.run(system, op, batch, w.prepare(system, op, batch, ks[:warm]),
                  array.array("q"))  # the warm-up, not timed
            work = w.prepare(system, op, batch, ks[warm:])
            lat = array.array("q")
            barrier.wait(TASK_TIMEOUT_S)
            c0 = time.process_time()
            t0 = time.perf_counter_ns()
            w.run(system, op, batch, work, lat)
            t1 = time.perf_counter_ns()
            c1 = time.process_time()
            conn.send(("ok", t0, t1, nops, c1 - c0, lat.tobytes()))
    except BaseException:
        barrier.abort()  # the others stop waiting for this one
        try:
            conn.send(("error", f"worker {idx}:\n{traceback.format_exc()}"))
        except OSError:
            pass
    finally:
        if w is not None:
            w.close()


class Pool:
    """nprocs worker processes (spawn: each starts clean and connects on its
    own) sharing one barrier with this process (which samples the servers'
    CPU time when the workers' clocks start); run() hands every worker the
    same task."""

    def __init__(self, nprocs: int, directory: str, redis_port: int, nkeys: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.barrier = ctx.Barrier(nprocs + 1)  # and this process
        self.procs = []
        self.conns = []
        try:
            for i in range(nprocs):
                parent, child = ctx.Pipe()
                p = ctx.Process(target=worker_main, daemon=True,
                                args=(i, nprocs, child, self.barrier, directory, redis_port,
                                      nkeys))
                p.start()
                child.close()
                self.procs.append(p)
                self.conns.append(parent)
            for _ in self._collect():  # every worker connected
                pass
        except BaseException:
            self.close(wait=False)
            raise

    def _collect(self):
        for i, (p, c) in enumerate(zip(self.procs, self.conns)):
            if not c.poll(TASK_TIMEOUT_S):
                raise RuntimeError(f"worker {i} (pid {p.pid}) did not answer within "
                                   f"{TASK_TIMEOUT_S:.0f} s")
            try:
                msg = c.recv()
            except EOFError:
                raise RuntimeError(f"worker {i} (pid {p.pid}) exited "
                                   f"(code {p.exitcode})") from None
            if msg[0] == "error":
                raise RuntimeError(msg[1])
            yield msg

    def run(self, system: str, op: str, batch: int, nops: int, warm: int, server_pid: int
            ) -> Tuple[float, array.array, float, float]:
        """ops/s of all processes together, the latencies (ns), and the CPU
        seconds of the timed part: of the client processes together and of
        the server (its pid; every thread of it)."""
        share = -(-nops // len(self.procs))  # ceil
        share = -(-share // batch) * batch  # whole batches
        warm = -(-warm // batch) * batch
        for c in self.conns:
            c.send((system, op, batch, share, warm))
        try:
            self.barrier.wait(TASK_TIMEOUT_S)  # with the workers: the clock starts
        except threading.BrokenBarrierError:
            pass  # a worker failed; _collect raises its error
        s0 = cpu_seconds(server_pid)
        t0s, t1s, total, cpu = [], [], 0, 0.0
        lat = array.array("q")
        for _, t0, t1, n, c, raw in self._collect():
            t0s.append(t0)
            t1s.append(t1)
            total += n
            cpu += c
            lat.frombytes(raw)
        server = cpu_seconds(server_pid) - s0
        return total / ((max(t1s) - min(t0s)) / 1e9), lat, cpu, server

    def close(self, wait: bool = True) -> None:
        """Stops the workers: asks them and waits (wait), then kills by PID any
        still running. Without wait (a failed or interrupted run) it kills at
        once: a worker may be in the middle of a task."""
        if wait:
            for c in self.conns:
                try:
                    c.send(None)
                except OSError:
                    pass
        for p in self.procs:
            if wait:
                p.join(10)
            if p.is_alive():
                p.kill()
                p.join(10)


# --- the run ---


def block_size_for(nkeys: int) -> int:
    """A block size with which KV_BLOCKS partitions hold nkeys entries at
    under a tenth of the split watermark (90 %): a kv entry of a 16-byte key
    and a 64-byte value is charged 176 B (README, "Memory per kv entry"), so
    1 KiB an entry leaves a wide margin. At least 16 MiB."""
    need = nkeys * 1024 // KV_BLOCKS
    size = 16 << 20
    while size < need:
        size *= 2
    return size


def machine() -> str:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / (1 << 20):.0f} GiB"
                break
    except OSError:
        pass
    return f"{model or platform.processor()}, {os.cpu_count()} vCPUs, {mem}"


def preload(directory: str, redis_port: int, nkeys: int) -> None:
    """Creates the kv namespace (pinned, KV_BLOCKS partitions) and puts every
    key with PRELOAD_VALUE on both sides."""
    import mayfly
    import redis
    with mayfly.connect(directory) as c:
        c.mkdir("/pybench")
        c.create(KV_PATH, kind="kv", blocks=KV_BLOCKS, pinned=True)
        kv = c.mount(KV_PATH, kind="kv")
        r = redis.Redis(host="127.0.0.1", port=redis_port)
        for i in range(0, nkeys, 500):
            ks = [key(j) for j in range(i, min(i + 500, nkeys))]
            kv.put_many(dict.fromkeys(ks, PRELOAD_VALUE))
            r.mset(dict.fromkeys(ks, PRELOAD_VALUE))
        kv.unmount()
        r.close()


def verify(directory: str, redis_port: int, nkeys: int, put_rows: bool) -> str:
    """Reads every key back on both sides: each holds a 64-byte value, and
    after put rows some hold PUT_VALUE. Returns a line for the output."""
    import mayfly
    import redis
    counts = {}
    with mayfly.connect(directory) as c:
        kv = c.mount(KV_PATH, kind="kv")
        r = redis.Redis(host="127.0.0.1", port=redis_port)
        for system in SYSTEMS:
            put = 0
            for i in range(0, nkeys, 500):
                ks = [key(j) for j in range(i, min(i + 500, nkeys))]
                got = kv.get_many(ks) if system == "mayfly" else r.mget(ks)
                for k, g in zip(ks, got):
                    if g not in (PRELOAD_VALUE, PUT_VALUE):
                        raise AssertionError(f"{system}: key {k!r} reads back as {g!r}")
                    put += g == PUT_VALUE
            if put_rows and put == 0:
                raise AssertionError(f"{system}: no key holds the value the put rows wrote")
            counts[system] = put
        if r.dbsize() != nkeys:
            raise AssertionError(f"redis-server holds {r.dbsize()} keys, not {nkeys}")
        kv.unmount()
        r.close()
    return (f"read back: all {nkeys} keys on both sides hold a 64-byte value "
            f"(rewritten by the put rows: mayfly {counts['mayfly']}, "
            f"redis-py {counts['redis-py']})")


def row_name(op: str, nprocs: int, batch: int) -> str:
    return (f"kv {op}, {nprocs} proc{'s' if nprocs > 1 else ''}, "
            + ("single" if batch == 1 else f"batch {batch}"))


def run(args, daemons: Daemons) -> int:
    """The whole benchmark on daemons it starts through `daemons`; prints the
    header, a line per row as it completes, then the tables. Returns 0 (a
    failure raises)."""
    import mayfly
    import redis
    nkeys = args.keys
    block_size = block_size_for(nkeys)
    daemons.start_redis()
    daemons.start_mayfly(blocks=2 * KV_BLOCKS, block_size=block_size)
    preload(daemons.directory, daemons.redis_port, nkeys)
    redis_version = redis.Redis(host="127.0.0.1", port=daemons.redis_port).info()["redis_version"]
    try:
        from redis.utils import HIREDIS_AVAILABLE
    except ImportError:
        HIREDIS_AVAILABLE = False
    oversub = [n for n in args.procs if n + 1 > (os.cpu_count() or 1)]
    print(f"python_bench: Mayfly's Python binding against redis-py, "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {machine()}; load average before: "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"python {platform.python_version()} ({sys.executable}), redis-py {redis.__version__} "
          f"({'hiredis' if HIREDIS_AVAILABLE else 'pure-Python'} parser), "
          f"redis-server {redis_version}, libmayfly {mayfly.library_path}")
    print(f"mayfly: 1 directory + 1 memory server ({2 * KV_BLOCKS} blocks of "
          f"{block_size >> 20} MiB), kv namespace of {KV_BLOCKS} partitions; redis-server: "
          f"no persistence; both on 127.0.0.1, nothing pinned")
    print(f"kv {KEY_LEN}-byte keys, {VALUE_LEN}-byte values, {nkeys} keys preloaded on both "
          f"sides; per row and side: {args.ops} single calls or {args.batch_ops} batched "
          f"operations shared by the processes, after a warm-up; {args.reps} repetitions "
          f"(the side going first alternates), median shown")
    if oversub:
        print(f"note: {', '.join(map(str, oversub))} processes oversubscribe the "
              f"{os.cpu_count()} vCPUs (client processes plus the server): those rows "
              f"measure a crowded machine, for both sides alike")
    sys.stdout.flush()

    with mayfly.connect(daemons.directory) as c:
        splits0 = c.stats().splits
        parts0 = len(c.stat(KV_PATH).partitions)
    results = []  # (name, batch, {system: [ops/s per rep]}, {system: sorted ns})
    for nprocs in args.procs:
        pool = Pool(nprocs, daemons.directory, daemons.redis_port, nkeys)
        try:
            for op in ("get", "put"):
                for batch in [1] + args.batch:
                    nops = args.ops if batch == 1 else args.batch_ops
                    warm = max(nops // 10, batch)
                    rates: Dict[str, List[float]] = {s: [] for s in SYSTEMS}
                    lats: Dict[str, array.array] = {s: array.array("q") for s in SYSTEMS}
                    cpu = {s: [0.0, 0.0, 0] for s in SYSTEMS}  # client s, server s, ops
                    for rep in range(args.reps):
                        order = SYSTEMS if rep % 2 == 0 else SYSTEMS[::-1]
                        for system in order:
                            rate, lat, ccpu, scpu = pool.run(system, op, batch, nops, warm,
                                                             daemons.pids[system])
                            rates[system].append(rate)
                            lats[system].extend(lat)
                            cpu[system][0] += ccpu
                            cpu[system][1] += scpu
                            cpu[system][2] += len(lat) * batch
                    name = row_name(op, nprocs, batch)
                    results.append((name, batch, rates,
                                    {s: sorted(lats[s]) for s in SYSTEMS},
                                    {s: (1e6 * cpu[s][0] / cpu[s][2], 1e6 * cpu[s][1] / cpu[s][2])
                                     for s in SYSTEMS}))
                    print(f"  {name}: mayfly " + " ".join(f"{x:.0f}" for x in rates["mayfly"])
                          + "; redis-py " + " ".join(f"{x:.0f}" for x in rates["redis-py"]),
                          flush=True)
        except BaseException:
            pool.close(wait=False)
            raise
        pool.close()
    with mayfly.connect(daemons.directory) as c:
        splits = c.stats().splits - splits0
        parts = len(c.stat(KV_PATH).partitions)
    checked = verify(daemons.directory, daemons.redis_port, nkeys, put_rows=True)

    print()
    head = (f"{'row':<26} {'mayfly ops/s':>13} {'redis-py ops/s':>15} {'ratio':>6} "
            f"{'per-rep ratios':>19}  {'mayfly p50/p99':>16} {'redis-py p50/p99':>17}")
    print(head)
    print("-" * len(head))
    below = []
    for name, batch, rates, lats, _ in results:
        m = statistics.median(rates["mayfly"])
        r = statistics.median(rates["redis-py"])
        per_rep = [a / b for a, b in zip(rates["mayfly"], rates["redis-py"])]
        lat_cols = [f"{_pct(lats[s], 0.50):.0f}/{_pct(lats[s], 0.99):.0f} us" for s in SYSTEMS]
        paired = (f"{statistics.median(per_rep):.2f}x "
                  f"({min(per_rep):.2f}-{max(per_rep):.2f})")
        print(f"{name:<26} {m:>13.0f} {r:>15.0f} {m / r:>5.2f}x {paired:>19}  "
              f"{lat_cols[0]:>16} {lat_cols[1]:>17}")
        if m < r:
            below.append(name)
    print("ratio: of the medians; per-rep ratios: each repetition's pair (run one after the "
          "other), their median and range")
    print("latency: per call for single calls, per whole batch for batches "
          "(all repetitions and processes)")
    print()
    head = (f"{'CPU per operation (us)':<26} {'mayfly client':>13} {'redis-py client':>15} "
            f"{'memserver':>10} {'redis-server':>12}")
    print(head)
    print("-" * len(head))
    for name, _, _, _, cpu in results:
        print(f"{name:<26} {cpu['mayfly'][0]:>13.2f} {cpu['redis-py'][0]:>15.2f} "
              f"{cpu['mayfly'][1]:>10.2f} {cpu['redis-py'][1]:>12.2f}")
    print("CPU: user + system time of the client processes and of the server over the timed "
          "parts, all repetitions, divided by the operations (less sensitive to other load "
          "than ops/s; the server's at clock-tick resolution)")
    print(f"kv splits during the timed part: {splits} (partitions {parts0} before, {parts} after)"
          + ("" if splits == 0 else "  WARNING: splits happened while measuring"))
    print(checked)
    print("load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"target mayfly >= 1.0x redis-py on every row: "
          + ("met" if not below else f"not met on {len(below)} rows: {'; '.join(below)}"))
    return 0


def parse_list(text: str) -> List[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}")
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers: {text!r}")
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", type=int, default=30_000,
                    help="single calls per row, side and repetition, shared by the processes "
                         "(default 30000)")
    ap.add_argument("--batch-ops", type=int, default=300_000,
                    help="operations (keys) per batch row, side and repetition, shared by the "
                         "processes (default 300000)")
    ap.add_argument("--procs", type=parse_list, default=[1, 8],
                    help="process counts, comma-separated (default 1,8)")
    ap.add_argument("--batch", type=parse_list, default=[16, 100],
                    help="batch sizes, comma-separated (default 16,100)")
    ap.add_argument("--reps", type=int, default=7, help="repetitions per row and side (default 7)")
    ap.add_argument("--keys", type=int, default=100_000,
                    help="keys preloaded and cycled through (default 100000)")
    ap.add_argument("--build-dir", type=Path,
                    default=Path(os.environ.get("MAYFLY_BIN_DIR", REPO / "build")),
                    help="the build tree with the daemons and libmayfly "
                         "(default $MAYFLY_BIN_DIR, else <repo>/build)")
    ap.add_argument("--quick", action="store_true",
                    help="tiny counts and one repetition (a smoke run: the figures mean nothing)")
    args = ap.parse_args(argv)
    if args.quick:
        args.ops, args.batch_ops, args.reps, args.keys = 400, 3200, 1, 2000
    if min(args.ops, args.batch_ops, args.reps, args.keys) < 1:
        ap.error("--ops, --batch-ops, --reps and --keys must be positive")
    args.procs = sorted(set(args.procs))
    args.batch = sorted(set(b for b in args.batch if b > 1))
    for rel in ("directory/mayfly-directory", "memserver/mayfly-memserver"):
        if not (args.build_dir / rel).exists():
            ap.error(f"{args.build_dir / rel} is not built (BUILD_DIR=build scripts/build.sh)")
    # The workers inherit these: the library of this build tree.
    os.environ.setdefault("MAYFLY_BUILD_DIR", str(args.build_dir))
    try:
        import redis  # noqa: F401
    except ImportError:
        print("python_bench: redis-py is missing (apt-get install python3-redis, see "
              "scripts/install-deps.sh)", file=sys.stderr)
        return 77
    if shutil.which("redis-server") is None:
        print("python_bench: redis-server is missing (apt-get install redis-server)",
              file=sys.stderr)
        return 77

    # SIGTERM and SIGHUP end the run through the finally below, like ^C.
    def stop(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    daemons = Daemons(args.build_dir)
    failed = True
    try:
        rc = run(args, daemons)
        failed = rc != 0
        return rc
    finally:
        daemons.kill_all(failed)


if __name__ == "__main__":
    sys.exit(main())
