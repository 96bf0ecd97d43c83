"""Reproduces a suspected memory-server/directory bug found by the Python tests
(not a test: pytest does not collect this file).

A kv namespace of one block gets 600 x 1 KB puts in batches of 50 (256 KiB
blocks, so it splits three times). When another kv namespace (2 blocks) was
used and removed on the same memory server just before (test_data's
test_kv_mapping), the batch of keys 500..549 is often not answered: the
call times out (MAYFLY_ETIMEDOUT, after 5 to 10 s: one or two call timeouts), although
a put retried right after succeeds at once. Without the earlier namespace it
has not happened (0 of 6 runs; 4 of 6 with it). With a listener on the
namespace, 4 keys of the batch were also not applied.

  PYTHONPATH=python python3 python/tests/repro_batch_during_split.py [nomapping]

Prints "all batches answered", or the batch that hung and the layout; the
daemon logs are kept (the path is printed) when it hung.
"""
import os, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import conftest, mayfly
import test_data

cl = conftest.Cluster()
failed = True
try:
    cl.start_directory(); cl.start_memserver()
    with mayfly.connect(cl.address) as c:
        c.mkdir("/t0")
        if "nomapping" not in sys.argv:
            test_data.test_kv_mapping(c, "/t0")
        c.remove("/t0", recursive=True)
    with mayfly.connect(cl.address) as c:
        c.mkdir("/t1")
        kv = c.mount("/t1/kv", kind="kv", blocks=1)
        for i in range(0, 600, 50):
            t0 = time.monotonic()
            try:
                kv.put_many({f"key{j:05d}": b"v" * 1000 for j in range(i, i + 50)})
            except mayfly.MayflyError as e:
                print(f"batch {i}: {e} after {time.monotonic() - t0:.1f} s; partitions",
                      [(p.block_index, p.range_lo, p.range_hi) for p in kv.stat().partitions])
                break
        else:
            print("all batches answered")
            failed = False
finally:
    cl.kill_all(failed)
