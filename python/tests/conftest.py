"""pytest fixtures: a real mayfly-directory and one mayfly-memserver on free
loopback ports for the whole session, killed at the end even when tests fail.

The binaries come from $MAYFLY_BIN_DIR (the build directory; CTest sets it),
else <repo>/build. The package is imported from the source tree (python/),
and the library from $MAYFLY_LIBRARY or the build tree (see mayfly._lib).
"""

from __future__ import annotations

import itertools
import re
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "python"))
BIN_DIR = Path(os.environ.get("MAYFLY_BIN_DIR", REPO / "build"))
os.environ.setdefault("MAYFLY_BUILD_DIR", str(BIN_DIR))

import mayfly  # noqa: E402  (after the path is set)

BLOCK_SIZE = 256 * 1024  # small blocks, so growth and splits happen with little data
BLOCKS = 256


class Daemon:
    """One daemon process started with --port 0 --port-file."""

    def __init__(self, name: str, binary: Path, args: List[str], workdir: Path) -> None:
        self.name = name
        port_file = workdir / f"{name}.port"
        self.log_path = workdir / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(binary), "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file)]
            + args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        self.port = 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited during start-up:\n{self.read_log()}")
            try:
                text = port_file.read_text().strip()
                if text:
                    self.port = int(text)
                    break
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.01)
        if self.port <= 0:
            self.kill()
            raise RuntimeError(f"{name} did not start listening within 10 s:\n{self.read_log()}")
        self.address = f"127.0.0.1:{self.port}"

    def read_log(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL by PID (the process we started) and reap it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()


class Cluster:
    """Daemons started for tests, all killed by kill_all() (in a finally)."""

    _n = itertools.count()

    def __init__(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="mayfly-pytest-"))
        self.daemons: List[Daemon] = []
        self.directory: Daemon = None  # type: ignore[assignment]
        self.memservers: List[Daemon] = []
        # The token the fixture's own calls log in with (a directory started
        # with --tenants answers `servers` to an admin only); None: none.
        self.token: Optional[str] = None

    @property
    def address(self) -> str:
        return self.directory.address

    def start_directory(self, *args: str) -> Daemon:
        d = Daemon(f"directory{next(self._n)}", BIN_DIR / "directory/mayfly-directory",
                   ["--heartbeat-ms", "200"] + list(args), self.work)
        self.daemons.append(d)
        self.directory = d
        return d

    def start_memserver(self, *args: str, blocks: int = BLOCKS,
                        block_size: int = BLOCK_SIZE) -> Daemon:
        """Starts one and waits until it says it registered and the directory
        lists its address as up."""
        m = Daemon(f"memserver{next(self._n)}", BIN_DIR / "memserver/mayfly-memserver",
                   ["--directory", self.address, "--blocks", str(blocks),
                    "--block-size", str(block_size)] + list(args), self.work)
        self.daemons.append(m)
        self.memservers.append(m)
        deadline = time.monotonic() + 10
        while "registered with the directory" not in m.read_log():
            if time.monotonic() > deadline or m.proc.poll() is not None:
                raise RuntimeError(f"{m.name} did not register:\n{m.read_log()}")
            time.sleep(0.02)
        with mayfly.connect(self.address, token=self.token) as c:
            while not any(s.address == m.address and s.up for s in c.servers()):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{m.name} is not listed as up:\n{m.read_log()}")
                time.sleep(0.02)
        return m

    def kill_all(self, failed: bool) -> None:
        """Kills every daemon; keeps the logs (and says where) when a test failed."""
        for daemon in reversed(self.daemons):
            daemon.kill()
        if failed:
            print(f"\nmayfly daemon logs kept in {self.work}", file=sys.stderr)
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def _check_built() -> None:
    for rel in ("directory/mayfly-directory", "memserver/mayfly-memserver"):
        if not (BIN_DIR / rel).exists():
            pytest.fail(f"{BIN_DIR / rel} not built (set MAYFLY_BIN_DIR to the build directory)")


@pytest.fixture(scope="session")
def cluster(request) -> Iterator[Cluster]:
    """One directory and one memory server shared by the session's tests."""
    _check_built()
    cl = Cluster()
    try:
        cl.start_directory()
        cl.start_memserver()
        yield cl
    finally:
        cl.kill_all(request.session.testsfailed > 0)


@pytest.fixture()
def private_cluster(request) -> Iterator[Cluster]:
    """A cluster of the test's own (for tests that kill or stop daemons): a
    directory started; the test starts its memory servers."""
    _check_built()
    cl = Cluster()
    try:
        failed_before = request.session.testsfailed
        cl.start_directory()
        yield cl
    finally:
        cl.kill_all(request.session.testsfailed > failed_before)


@pytest.fixture()
def client(cluster) -> Iterator[mayfly.Client]:
    with mayfly.connect(cluster.address) as c:
        yield c


_ids = itertools.count()


@pytest.fixture()
def root(client, request) -> Iterator[str]:
    """A fresh directory for one test, removed after it."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:40]
    path = f"/t{next(_ids)}-{name}"
    client.mkdir(path)
    yield path
    try:
        client.remove(path, recursive=True)
    except mayfly.MayflyError:
        pass
