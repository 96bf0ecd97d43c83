"""The error table against common/error.h, and each exception raised by the
real call that fails with its code."""

import re
import signal
import socket
import time
from pathlib import Path

import pytest

import mayfly
from mayfly import errors
from conftest import BLOCKS, BLOCK_SIZE, REPO

HEADER = REPO / "common" / "error.h"


def header_table():
    text = HEADER.read_text()
    rows = re.findall(r'X\((\w+),\s*(-?\d+),\s*"((?:[^"\\]|\\.)*)"\)', text)
    assert len(rows) >= 29, "the X(NAME, value, \"text\") lines of common/error.h not found"
    minimum = int(re.search(r"MAYFLY_ERRNO_MIN\s*=\s*(-?\d+)", text).group(1))
    return {name: (int(code), msg) for name, code, msg in rows}, minimum


def test_the_table_matches_the_header():
    table, minimum = header_table()
    assert {n: c for n, (c, _) in table.items()} == {n: c for n, (c, _) in errors.ERRORS.items()}
    assert min(c for c, _ in table.values()) == minimum
    for name, (code, msg) in table.items():
        # The library agrees with its header (the binding reads the library).
        assert mayfly.strerror(code) == msg
        assert mayfly.error_name(code) == f"MAYFLY_{name}"
        cls = errors.ERRORS[name][1]
        e = errors.error_for(code, "detail")
        assert type(e) is cls and isinstance(e, mayfly.MayflyError)
        assert (e.code, e.name, e.message) == (code, f"MAYFLY_{name}", "detail")
        assert f"MAYFLY_{name}" in str(e)
        assert errors.error_for(code).message == msg


def test_named_classes():
    t = errors.ERRORS
    assert t["ENOENT"][1] is mayfly.NotFound
    assert t["ENOKEY"][1] is mayfly.KeyNotFound and issubclass(mayfly.KeyNotFound, KeyError)
    assert t["EEXIST"][1] is mayfly.Exists
    assert t["ETIMEDOUT"][1] is mayfly.Timeout
    assert t["EQUOTA"][1] is mayfly.QuotaExceeded
    assert t["EPERM"][1] is mayfly.PermissionDenied
    assert t["ELOST"][1] is mayfly.DataLost
    assert t["EDIRDOWN"][1] is mayfly.DirectoryDown
    assert t["EINVAL"][1] is mayfly.InvalidArgument and issubclass(mayfly.InvalidArgument, ValueError)
    assert errors.error_for(-1000).__class__ is mayfly.MayflyError
    assert errors.error_for(-1000).name == "UNKNOWN"


def test_errors_pickle_as_themselves():
    import pickle
    e = pickle.loads(pickle.dumps(mayfly.KeyNotFound(-26, "k: gone")))
    assert type(e) is mayfly.KeyNotFound and e.code == -26 and e.message == "k: gone"


def raises(cls, name, fn):
    with pytest.raises(cls) as info:
        fn()
    assert type(info.value) is cls
    assert info.value.name == f"MAYFLY_{name}"
    assert info.value.message  # the library's detailed message, or the code's text
    return info.value


def test_each_exception_from_a_real_call(client, root):
    kv = client.mount(f"{root}/kv")
    q = client.mount(f"{root}/q", kind="queue")
    f = client.mount(f"{root}/f", kind="file", max_blocks=1)
    raises(mayfly.NotFound, "ENOENT", lambda: client.stat(f"{root}/missing"))
    raises(mayfly.Exists, "EEXIST", lambda: client.mkdir(f"{root}/kv"))
    raises(mayfly.NotADirectory, "ENOTDIR", lambda: client.mkdir(f"{root}/kv/sub"))
    client.mkdir(f"{root}/d")
    client.create(f"{root}/d/x", kind="kv")
    raises(mayfly.DirectoryNotEmpty, "ENOTEMPTY", lambda: client.remove(f"{root}/d"))
    raises(mayfly.BadPath, "EBADPATH", lambda: client.stat("relative/path"))
    raises(mayfly.BadPath, "ENAMETOOLONG", lambda: client.mkdir(f"{root}/" + "n" * 5000))
    raises(mayfly.BadPath, "ESUBTREE", lambda: client.rename(f"{root}/d", f"{root}/d/e"))
    raises(mayfly.NoSpace, "ENOSPC", lambda: client.create(f"{root}/huge", blocks=BLOCKS + 1))
    raises(mayfly.PermissionDenied, "EPERM", lambda: client.remove("/", recursive=True))
    raises(mayfly.WrongKind, "EKIND", lambda: client.mount(f"{root}/kv", kind="file"))
    raises(mayfly.TooBig, "ETOOBIG", lambda: kv.put(b"k" * (64 * 1024 + 1), b"v"))
    raises(mayfly.QuotaExceeded, "EQUOTA", lambda: f.write(b"x" * (BLOCK_SIZE + 1)))
    raises(mayfly.TryAgain, "EAGAIN", lambda: q.pop(timeout=0))
    e = raises(mayfly.KeyNotFound, "ENOKEY", lambda: kv[b"absent"])
    assert isinstance(e, KeyError)
    raises(mayfly.InvalidArgument, "EINVAL", lambda: client.listen(f"{root}/kv", kinds="bogus"))
    raises(mayfly.InvalidArgument, "EINVAL", lambda: mayfly.connect("not an address:port:x"))


def test_connection_refused():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    raises(mayfly.ConnectionFailed, "ECONNREFUSED",
           lambda: mayfly.connect(f"127.0.0.1:{port}", timeout=1.0))


def test_timeout_when_the_directory_does_not_answer(private_cluster):
    c = mayfly.connect(private_cluster.address, timeout=0.5)
    d = private_cluster.directory
    d.proc.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        raises(mayfly.Timeout, "ETIMEDOUT", lambda: c.stat("/"))
        assert time.monotonic() - t0 < 0.5 + 10
    finally:
        d.proc.send_signal(signal.SIGCONT)
    assert c.stat("/").kind == "directory"
    c.close()


def test_data_lost_after_the_memory_server_restarts(private_cluster):
    m = private_cluster.start_memserver(blocks=8, block_size=64 * 1024)
    c = mayfly.connect(private_cluster.address, timeout=3.0)
    kv = c.mount("/job/kv", kind="kv")
    kv[b"a"] = b"1"
    m.kill()  # kill -9; the same port again is a new, empty incarnation
    private_cluster.start_memserver("--port", str(m.port), blocks=8, block_size=64 * 1024)
    deadline = time.monotonic() + 10
    while True:
        try:
            kv[b"a"]
        except mayfly.DataLost as e:
            assert e.name == "MAYFLY_ELOST"
            break
        except (mayfly.ConnectionFailed, mayfly.Timeout):
            pass  # the old connection died with the process
        assert time.monotonic() < deadline, "a read of lost data never failed with DataLost"
        time.sleep(0.1)
    assert c.stat("/job/kv").partitions[0].lost
    c.remove("/job/kv")
    c.close()


def test_directory_down_refuses_writes_to_a_watched_namespace(private_cluster):
    private_cluster.start_memserver(blocks=8, block_size=64 * 1024)
    c = mayfly.connect(private_cluster.address, timeout=1.0)
    kv = c.mount("/job/kv", kind="kv")
    listener = c.listen("/job/kv")
    kv[b"before"] = b"1"
    private_cluster.directory.kill()
    refused = None
    for i in range(40):
        try:
            kv[f"dead{i}"] = b"v"
            pytest.fail("a write to a watched namespace was acknowledged with the directory dead")
        except mayfly.DirectoryDown as e:
            refused = e
            break
        except mayfly.Timeout:
            time.sleep(0.1)  # held until the memory server notices
    assert refused is not None and refused.name == "MAYFLY_EDIRDOWN"
    listener.close()
    kv.unmount()
    c.close()


def test_every_c_function_called_has_a_prototype_from_the_header():
    """Each lib.mayfly_* the package calls is declared in client/mayfly.h (or
    common/error.h) and has argtypes and restype set explicitly."""
    header = (REPO / "client" / "mayfly.h").read_text() + HEADER.read_text()
    declared = set(re.findall(r"\b(mayfly_\w+)\s*\(", header))
    pkg = Path(mayfly.__file__).parent
    called = set()
    for src in pkg.glob("*.py"):
        called |= set(re.findall(r"\blib\.(mayfly_\w+)", src.read_text()))
        called |= set(re.findall(r'_proto\("(mayfly_\w+)"', src.read_text()))
    assert len(called) > 40
    assert called <= declared, f"not in the header: {sorted(called - declared)}"
    for name in called:
        fn = getattr(mayfly._lib.lib, name)
        assert fn.argtypes is not None, f"{name} has no argtypes"
    prototyped = set(re.findall(r'_proto\("(mayfly_\w+)"', (pkg / "_lib.py").read_text()))
    assert called <= prototyped, f"called without a prototype: {sorted(called - prototyped)}"
