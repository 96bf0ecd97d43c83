"""Mounted namespaces: kv as a mapping, queues, and files as io.RawIOBase."""

import io
import os
import time

import pytest

import mayfly
from conftest import BLOCK_SIZE


def test_kv_mapping(client, root):
    kv = client.mount(f"{root}/kv", kind="kv", blocks=2, lease_ms=30_000)
    assert isinstance(kv, mayfly.KV)
    kv[b"apples"] = b"3"
    kv["pears"] = "4"  # str keys and values are UTF-8
    assert kv[b"apples"] == b"3" and kv[b"pears"] == b"4"
    assert kv["pears"] == b"4"
    assert b"apples" in kv and b"nope" not in kv
    kv[b"apples"] = b"5"
    assert kv[b"apples"] == b"5"
    del kv[b"apples"]
    assert b"apples" not in kv
    with pytest.raises(KeyError):
        kv[b"apples"]
    with pytest.raises(mayfly.KeyNotFound) as e:
        kv[b"apples"]
    assert e.value.code == mayfly.ERRORS["ENOKEY"][0]
    assert kv.get(b"apples") is None and kv.get(b"apples", b"d") == b"d"
    assert kv.get(b"pears", b"d") == b"4"
    binary = bytes(range(256)) * 3
    kv[b"\0key\xff"] = binary
    assert kv[b"\0key\xff"] == binary
    kv[b"empty"] = b""
    assert kv[b"empty"] == b"" and b"empty" in kv
    with pytest.raises(TypeError):
        kv[1] = b"x"
    with pytest.raises(TypeError):
        iter(kv)
    kv.unmount()
    assert not kv.mounted
    with pytest.raises(mayfly.MayflyError, match="unmounted"):
        kv[b"pears"]
    kv.unmount()  # idempotent


def test_kv_batches(client, root):
    kv = client.mount(f"{root}/kv", kind="kv", blocks=3)
    kv.put_many({f"k{i}": f"v{i}" for i in range(500)})
    kv.put_many([(b"pair", b"wise")])
    kv.put_many({})
    keys = [f"k{i}" for i in range(500)] + ["missing", "pair"]
    got = kv.get_many(keys)
    assert got[:500] == [f"v{i}".encode() for i in range(500)]
    assert got[500] is None and got[501] == b"wise"
    assert kv.get_many([]) == []
    kv.unmount()


def test_kv_mounted_again_sees_the_data_and_a_kind_mismatch_is_wrong_kind(client, root):
    kv = client.mount(f"{root}/kv")
    kv[b"a"] = b"1"
    kv2 = client.mount(f"{root}/kv", kind="kv")
    assert kv2[b"a"] == b"1"
    with pytest.raises(mayfly.WrongKind):
        client.mount(f"{root}/kv", kind="queue")
    with pytest.raises(mayfly.InvalidArgument):
        client.mount(f"{root}/dir", kind="directory")
    kv.unmount()
    kv2.unmount()


def test_queue(client, root):
    q = client.mount(f"{root}/q", kind="queue")
    assert isinstance(q, mayfly.Queue) and len(q) == 0
    with pytest.raises(mayfly.TryAgain):
        q.pop()
    with pytest.raises(mayfly.TryAgain):
        q.peek()
    q.push(b"one")
    q.push("two")
    q.push_many([b"three", b"", b"five"])
    assert len(q) == 5
    assert q.peek() == b"one" and len(q) == 5
    assert q.pop(timeout=1.0) == b"one"
    assert q.pop_many(3) == [b"two", b"three", b""]
    assert q.pop_many(10) == [b"five"]
    assert q.pop_many(10) == []
    assert len(q) == 0
    # A waiting pop returns within its timeout plus a generous margin.
    t0 = time.monotonic()
    with pytest.raises(mayfly.TryAgain):
        q.pop(timeout=0.3)
    assert time.monotonic() - t0 < 0.3 + 5
    q.unmount()


def test_queue_grows_past_one_block(client, root):
    q = client.mount(f"{root}/q", kind="queue")
    item = os.urandom(1000)
    n = 3 * BLOCK_SIZE // 1000
    for i in range(0, n, 100):
        q.push_many([item + i.to_bytes(4, "big") for i in range(i, min(i + 100, n))])
    assert len(q) == n
    assert len(q.stat().partitions) > 1
    popped = []
    while len(popped) < n:
        popped += q.pop_many(100)
    assert popped == [item + i.to_bytes(4, "big") for i in range(n)]
    q.unmount()


def test_file_is_a_raw_io(client, root):
    f = client.mount(f"{root}/f", kind="file")
    assert isinstance(f, io.RawIOBase) and isinstance(f, mayfly.File)
    assert f.readable() and f.writable() and f.seekable()
    assert f.write(b"hello world") == 11
    assert f.tell() == 11 and f.size() == 11
    assert f.seek(0) == 0
    assert f.read() == b"hello world"
    assert f.seek(6) == 6 and f.read(3) == b"wor"
    assert f.seek(-5, io.SEEK_END) == 6
    assert f.seek(2, io.SEEK_CUR) == 8
    buf = bytearray(10)
    assert f.readinto(buf) == 3 and buf[:3] == b"rld"
    assert f.read(5) == b""  # at the end
    f.seek(20)
    f.write(bytearray(b"!"))
    f.seek(0)
    assert f.read() == b"hello world" + b"\0" * 9 + b"!"
    assert f.truncate(5) == 5 and f.size() == 5 and f.tell() == 21
    f.seek(0)
    assert f.read() == b"hello"
    assert f.truncate(8) == 8  # growing: the gap reads as zeros
    f.seek(0)
    assert f.read() == b"hello\0\0\0"
    f.truncate(0)
    assert f.size() == 0
    assert f.append(b"abc") == 0 and f.append(b"de") == 3
    f.seek(0)
    assert f.read() == b"abcde"
    with pytest.raises(ValueError):
        f.seek(-1)
    f.close()
    assert f.closed and not f.mounted


def test_buffered_reader_over_a_multi_block_file(client, root):
    f = client.mount(f"{root}/big", kind="file")
    data = os.urandom(3 * BLOCK_SIZE + 12345)
    with io.BufferedWriter(f, buffer_size=100_000) as w:
        w.write(data)
        w.flush()
        assert f.size() == len(data)
        assert len(f.stat().partitions) == 4
        f.seek(0)
        r = io.BufferedReader(f, buffer_size=64 * 1024)
        assert r.read(10) == data[:10]
        line_sized = [r.read(50_000) for _ in range(4)]
        assert b"".join(line_sized) == data[10:200_010]
        r.seek(BLOCK_SIZE - 7)
        assert r.read(14) == data[BLOCK_SIZE - 7:BLOCK_SIZE + 7]  # across a block boundary
        r.seek(0)
        assert r.read() == data
        r.detach()
    assert f.closed  # the writer closed the raw file on exit


def test_file_quota(client, root):
    f = client.mount(f"{root}/small", kind="file", max_blocks=1)
    f.write(b"x" * 100)
    with pytest.raises(mayfly.QuotaExceeded) as e:
        f.write(b"y" * (BLOCK_SIZE + 1))
    assert e.value.name == "MAYFLY_EQUOTA"
    f.close()
