#!/usr/bin/python3
"""Smoke test of bench/python_bench.py, run by CTest as bench_python_smoke
(python/CMakeLists.txt): runs `python_bench.py --quick` and checks that it
exits 0 and prints every row of the table (kv get and put, 1 and 8
processes, single calls and batches of 16 and 100) with a positive rate for
both sides and their ratio, that no kv split happened while measuring, and
that every key read back on both sides. It asserts no timing: the figures of
a quick run mean nothing. Exits 77 (skipped) when the benchmark says redis-py
or redis-server is missing.
"""

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent / "python_bench.py"
KEYS = 2000  # --quick's key count


def main() -> int:
    p = subprocess.run([sys.executable, str(BENCH), "--quick"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=300)
    out = p.stdout
    print(out)
    if p.returncode == 77:
        return 77
    failures = []
    if p.returncode != 0:
        failures.append(f"python_bench.py --quick exited {p.returncode}")
    for op in ("get", "put"):
        for procs in (1, 8):
            for shape in ("single", "batch 16", "batch 100"):
                name = f"kv {op}, {procs} proc{'s' if procs > 1 else ''}, {shape}"
                m = re.search(rf"^{re.escape(name)}\s+(\d+)\s+(\d+)\s+(\d+\.\d+)x\s", out,
                              re.MULTILINE)
                if m is None:
                    failures.append(f"no table row {name!r}")
                elif int(m.group(1)) <= 0 or int(m.group(2)) <= 0 or float(m.group(3)) <= 0:
                    failures.append(f"row {name!r} has a zero figure: {m.group(0)!r}")
    if not re.search(r"^kv splits during the timed part: 0 \(partitions 16 before, 16 after\)",
                     out, re.MULTILINE):
        failures.append("a kv split happened while measuring (or no line says)")
    if f"read back: all {KEYS} keys on both sides hold a 64-byte value" not in out:
        failures.append("no line says every key read back on both sides")
    if not re.search(r"^target mayfly >= 1\.0x redis-py on every row: ", out, re.MULTILINE):
        failures.append("no target line")
    for f in failures:
        print(f"bench_python_smoke: FAIL: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
