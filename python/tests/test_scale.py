"""At scale: a multiprocessing pool of 8 workers pushing and popping 100,000
queue items exactly once, and 100,000 gets that do not grow the process (no
C buffer the library returns is leaked)."""

import multiprocessing
import os

import pytest

import mayfly

ITEMS = 100_000
WORKERS = 8
BATCH = 500


def push_and_pop(address: str, path: str, worker: int) -> list:
    """A pool worker (a process of its own, so its own client): pushes its
    share of the items in batches and pops a batch after each push."""
    got = []
    with mayfly.connect(address) as c:
        q = c.mount(path, kind="queue")
        share = range(worker, ITEMS, WORKERS)
        mine = [f"{i:06d}".encode() for i in share]
        for b in range(0, len(mine), BATCH):
            q.push_many(mine[b:b + BATCH])
            got += q.pop_many(BATCH)
        q.unmount()
    return got


def test_pool_of_8_pushes_and_pops_100000_items_exactly_once(cluster, client, root):
    path = f"{root}/q"
    client.create(path, kind="queue")
    # spawn: the workers start clean instead of inheriting the threads of this
    # process's clients.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(WORKERS) as pool:
        results = pool.starmap(push_and_pop, [(cluster.address, path, w) for w in range(WORKERS)])
    popped = [x for r in results for x in r]
    q = client.mount(path, kind="queue")
    while True:
        rest = q.pop_many(5000)
        if not rest:
            break
        popped += rest
    assert len(q) == 0
    assert len(popped) == ITEMS  # none twice...
    assert set(popped) == {f"{i:06d}".encode() for i in range(ITEMS)}  # ...and none lost
    q.unmount()


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def sanitized() -> bool:
    """Whether libmayfly was built with AddressSanitizer (its runtime is then
    reachable through the library's handle)."""
    return hasattr(mayfly._lib.lib, "__asan_init")


@pytest.mark.skipif(sanitized(), reason="ASan's quarantine holds freed memory, so the RSS "
                    "cannot show a leak (the plain build runs this)")
def test_100000_gets_do_not_grow_the_process(client, root):
    kv = client.mount(f"{root}/kv")
    value = os.urandom(64)
    kv.put_many({f"k{i}": value for i in range(100)})
    keys = [f"k{i}".encode() for i in range(100)]
    for i in range(5_000):  # warm up: caches, connections, the allocator's arenas
        assert kv[keys[i % 100]] == value
    kv.get_many(keys)
    before = rss_bytes()
    for i in range(100_000):
        kv[keys[i % 100]]
    for _ in range(1_000):
        kv.get_many(keys)  # another 100,000 values through the batch call
    grown = rss_bytes() - before
    # A leaked 64-byte value per get would be over 6 MB each way.
    assert grown < 4 * 1024 * 1024, f"the process grew by {grown} bytes"
    kv.unmount()


def test_the_word_count_example_verifies_its_counts(cluster):
    import subprocess
    import sys
    from conftest import REPO
    out = subprocess.run(
        [sys.executable, str(REPO / "python/examples/wordcount.py"), "--directory",
         cluster.address, "--mappers", "3", "--reducers", "2", "--words", "30000"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO / "python")})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "verified: every count matches" in out.stdout
    assert "reducer 1:" in out.stdout
