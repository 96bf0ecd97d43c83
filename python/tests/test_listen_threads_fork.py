"""Listeners (also across a kv split), threads sharing a client, and the
fork guard."""

import os
import threading
import time

import pytest

import mayfly


def test_listen_yields_events_in_order(client, root):
    kv = client.mount(f"{root}/kv")
    with client.listen(f"{root}/kv", timeout=5.0) as lst:
        kv[b"a"] = b"1"
        kv[b"b"] = b"2"
        del kv[b"a"]
        evs = [lst.next_event(10.0) for _ in range(3)]
    assert [(e.kind, e.key, e.path) for e in evs] == [
        ("put", b"a", f"{root}/kv"), ("put", b"b", f"{root}/kv"), ("delete", b"a", f"{root}/kv")]
    assert [e.seq for e in evs] == [evs[0].seq, evs[0].seq + 1, evs[0].seq + 2]
    assert all(isinstance(e, mayfly.Event) and e.time_ms > 0 for e in evs)
    kv.unmount()


def test_listen_queue_file_and_kinds_filter(client, root):
    q = client.mount(f"{root}/q", kind="queue")
    f = client.mount(f"{root}/f", kind="file")
    lq = client.listen(f"{root}/q", kinds=["pop"])
    lf = client.listen(f"{root}/f", kinds="data")
    q.push(b"12345")
    assert q.pop() == b"12345"
    f.seek(100)
    f.write(b"abc")
    e = lq.next_event(10.0)
    assert (e.kind, e.length, e.key) == ("pop", 5, None)
    e = lf.next_event(10.0)
    assert (e.kind, e.offset, e.length) == ("write", 100, 3)
    assert lq.next_event(0) is None  # the push was filtered out
    lq.close()
    lf.close()
    lq.close()  # idempotent
    with pytest.raises(mayfly.MayflyError, match="closed"):
        lq.next_event(0)
    q.unmount()
    f.close()


def test_iteration_ends_on_silence_and_on_removal(client, root):
    client.mkdir(f"{root}/d")
    lst = client.listen(f"{root}/d", timeout=0.2)
    assert list(lst) == []  # nothing within the timeout: the loop ends
    client.create(f"{root}/d/kv", kind="kv")
    client.remove(f"{root}/d", recursive=True)
    lst.timeout = 10.0
    kinds = [e.kind for e in lst]  # ends once the node is gone
    assert kinds[0] == "child-created" and kinds[-1] == "removed"
    with pytest.raises(mayfly.MayflyError):
        lst.next_event(0)  # closed at the end


def test_listener_across_a_kv_split(private_cluster):
    # Daemons of its own: on the shared ones, after test_data's
    # test_kv_mapping, a put of this test hung until the client timeout
    # (a suspected memserver/directory bug, see the branch notes).
    private_cluster.start_memserver()
    client = mayfly.connect(private_cluster.address)
    root = "/split"
    kv = client.mount(f"{root}/kv", kind="kv", blocks=1)
    before = client.stats().splits
    lst = client.listen(f"{root}/kv", kinds="put")
    n = 600
    value = b"v" * 1000  # 600 KB into 256 KiB blocks: it must split
    for i in range(0, n, 50):
        kv.put_many({f"key{j:05d}": value for j in range(i, i + 50)})
    assert client.stats().splits > before
    assert len(kv.stat().partitions) > 1
    seen = [lst.next_event(10.0) for _ in range(n)]
    assert None not in seen
    assert [e.seq for e in seen] == list(range(seen[0].seq, seen[0].seq + n))
    assert sorted(e.key for e in seen) == [f"key{j:05d}".encode() for j in range(n)]
    assert kv.get_many([f"key{j:05d}" for j in range(n)]) == [value] * n
    lst.close()
    kv.unmount()
    client.close()


def test_threads_share_a_client(client, root):
    kv = client.mount(f"{root}/kv", blocks=2)
    q = client.mount(f"{root}/q", kind="queue")
    errors = []
    popped = []
    lock = threading.Lock()

    def worker(t):
        try:
            for i in range(200):
                kv[f"t{t}-{i}"] = f"{t}:{i}"
                q.push(f"{t}:{i}")
                assert kv[f"t{t}-{i}"] == f"{t}:{i}".encode()
            client.stat(f"{root}/kv")
            mine = []
            while len(mine) < 200:
                try:
                    mine.append(q.pop(timeout=1.0))
                except mayfly.TryAgain:
                    break
            with lock:
                popped.extend(mine)
        except Exception as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    popped += q.pop_many(2000)
    assert sorted(popped) == sorted(f"{t}:{i}".encode() for t in range(8) for i in range(200))
    assert len(q) == 0


def test_a_blocked_pop_does_not_hold_the_gil(client, root):
    """ctypes releases the GIL during C calls: another thread runs while one
    waits in a pop."""
    q = client.mount(f"{root}/q", kind="queue")
    got = []
    t = threading.Thread(target=lambda: got.append(q.pop(timeout=10.0)))
    t.start()
    time.sleep(0.2)
    q.push(b"wake")  # this thread is not stopped by the waiting one
    t.join(20)
    assert got == [b"wake"]


def test_fork_guard(cluster, client, root):
    kv = client.mount(f"{root}/kv")
    kv[b"k"] = b"parent"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        code = 1
        try:
            try:
                kv[b"k"]
                msg = b"no error"
            except mayfly.ClientForked as e:
                msg = str(e).encode()
                try:
                    client.stat("/")
                except mayfly.ClientForked:
                    # A fresh client works in the child.
                    with mayfly.connect(cluster.address) as c2:
                        kv2 = c2.mount(f"{root}/kv")
                        kv2[b"child"] = b"was here"
                        kv2.unmount()
                    code = 0
            os.write(w, msg)
        finally:
            client.close()  # must not touch the parent's threads
            os._exit(code)
    os.close(w)
    msg = b""
    while chunk := os.read(r, 4096):
        msg += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, msg
    assert b"connect" in msg and b"fork" in msg
    # The parent's client is unaffected, and saw the child's write.
    assert kv[b"k"] == b"parent" and kv[b"child"] == b"was here"
