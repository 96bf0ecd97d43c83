"""Mayfly for Python: ephemeral namespaces as dicts, queues and files.

A thin ctypes binding over libmayfly (client/mayfly.h); standard library
only. Example::

    import mayfly
    with mayfly.connect("127.0.0.1:9090") as c:
        c.mkdir("/job42", parents=True)
        kv = c.mount("/job42/counts", kind="kv", blocks=4, lease_ms=30_000)
        kv[b"apples"] = b"3"
        q = c.mount("/job42/inbox", kind="queue")
        q.push(b"task"); item = q.pop(timeout=1.0)
        f = c.mount("/job42/blob", kind="file")     # an io.RawIOBase
        f.write(b"data"); f.seek(0); f.read()
        for ev in c.listen("/job42/counts", timeout=5.0):
            print(ev.seq, ev.kind, ev.key)

Keys, values and items are bytes (a str is encoded as UTF-8). Every failure
is a MayflyError subclass (see mayfly.errors). A Client and its mounted
namespaces may be shared by the threads of a process; ctypes releases the
GIL during each C call, so threads waiting in the library do not block each
other. A client must not be used after fork() in the child: it raises
ClientForked there (connect anew in the child).
"""

from __future__ import annotations

import ctypes
import io
import os
import threading
import weakref
from ctypes import POINTER, byref, c_char_p, c_int, c_int64, c_size_t, c_uint32, c_uint64, c_void_p
from dataclasses import dataclass, field
from typing import (Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union)

from . import _lib
from ._lib import lib, library_path
from .errors import (ERRORS, BadPath, ClientForked, ConnectionFailed, DataLost, DirectoryDown,
                     DirectoryNotEmpty, Exists, InvalidArgument, IsADirectory, KeyNotFound,
                     MayflyError, NoSpace, NotADirectory, NotFound, PermissionDenied,
                     QuotaExceeded, Timeout, TooBig, TryAgain, WrongKind, check, error_for,
                     error_name, strerror)

__all__ = [
    "connect", "Client", "KV", "Queue", "File", "Listener", "Event", "Stat", "Partition",
    "Replica", "Lease", "Server", "Tenant", "DirStats", "Usage", "MayflyError", "InvalidArgument",
    "NotFound", "Exists", "NotADirectory", "IsADirectory", "DirectoryNotEmpty", "BadPath", "NoSpace",
    "ConnectionFailed", "Timeout", "PermissionDenied", "WrongKind", "TooBig", "QuotaExceeded",
    "TryAgain", "KeyNotFound", "DataLost", "DirectoryDown", "ClientForked", "ERRORS",
    "strerror", "error_name", "library_path",
]

BytesLike = Union[bytes, bytearray, memoryview, str]

_KINDS = {"directory": 0, "file": 1, "queue": 2, "kv": 3}
_KIND_NAMES = {v: k for k, v in _KINDS.items()}

# --- the fork guard ---
#
# Every client remembers the fork generation it was made in; a child process
# bumps the generation (os.register_at_fork), so any later use of a parent's
# client in the child is caught before it reaches C (where the client's
# threads and sockets belong to the parent and do not exist in the child).
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


def _b(x: BytesLike) -> bytes:
    """bytes for a key, value or item; a str is encoded as UTF-8."""
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, (bytearray, memoryview)):
        return bytes(x)
    raise TypeError(f"expected bytes or str, not {type(x).__name__}")


def _p(path: str) -> bytes:
    if not isinstance(path, str):
        raise TypeError(f"a path is a str, not {type(path).__name__}")
    return path.encode("utf-8")


def _s(raw: Optional[bytes]) -> str:
    return raw.decode("utf-8", "replace") if raw is not None else ""


def _ms(seconds: Optional[float], none: int) -> int:
    """Seconds (float) to whole milliseconds; None gives `none`."""
    if seconds is None:
        return none
    if seconds < 0:
        raise ValueError("a timeout may not be negative")
    return int(round(seconds * 1000))


def _take(ptr: c_void_p, n: int) -> bytes:
    """Copies n bytes out of a buffer the library returned, then frees it."""
    try:
        return ctypes.string_at(ptr, n) if n else b""
    finally:
        lib.mayfly_free(ptr)


# --- plain records for what the directory describes ---


@dataclass(frozen=True)
class Replica:
    """One member of a replicated partition's chain."""
    server_id: int
    server_address: str
    block_index: int
    generation: int
    zone: str  # "" when its server has no --zone


@dataclass(frozen=True)
class Partition:
    """One block-backed partition of a namespace. For a replicated one the
    server fields are its chain's head; chain lists every member, head first
    (writes go to the head, reads to the last member)."""
    server_id: int
    server_address: str
    block_index: int
    generation: int
    block_size: int
    range_lo: int
    range_hi: int
    lost: bool
    replicas: int = 1  # R wanted
    state: str = "ok"  # "ok", "degraded", "copying" or "lost"
    chain: Tuple[Replica, ...] = ()  # empty when R = 1
    chain_version: int = 0


@dataclass(frozen=True)
class Stat:
    """What stat() and ls() say about a node."""
    path: str
    kind: str
    created_ms: int
    lease_ms: int
    remaining_ms: int  # -1 when pinned
    pinned: bool
    children: int
    layout_version: int
    partitions: Tuple[Partition, ...]
    tags: Dict[str, str]
    max_blocks: int
    high_watermark: int
    low_watermark: int


def _stat(st: _lib.CStat) -> Stat:
    parts = tuple(
        Partition(p.server_id, _s(p.server_address), p.block_index, p.generation, p.block_size,
                  p.range_lo, p.range_hi, bool(p.lost), p.replicas, _s(p.state),
                  tuple(Replica(r.server_id, _s(r.server_address), r.block_index, r.generation,
                                _s(r.zone))
                        for r in (p.chain[k] for k in range(p.nchain))),
                  p.chain_version)
        for p in (st.partitions[i] for i in range(st.npartitions)))
    tags = {_s(st.tag_keys[i]): _s(st.tag_values[i]) for i in range(st.ntags)}
    return Stat(_s(st.path), _KIND_NAMES.get(st.kind, "unknown"), st.created_ms, st.lease_ms,
                st.remaining_ms, bool(st.pinned), st.children, st.layout_version, parts, tags,
                st.max_blocks, st.high_watermark, st.low_watermark)


@dataclass(frozen=True)
class Lease:
    """One row of leases(): a node and its lease."""
    path: str
    kind: str
    lease_ms: int
    remaining_ms: int
    pinned: bool


@dataclass(frozen=True)
class Server:
    """A registered memory server."""
    id: int
    address: str
    up: bool
    blocks_used: int
    blocks_total: int
    block_size: int
    heartbeat_age_ms: int
    blocks_lost: int
    zone: str = ""   # its --zone
    host: str = ""   # the host part of its address (replicas go on distinct hosts)
    chains: int = 0  # replicated partitions with a member (or a copy being filled) here


@dataclass(frozen=True)
class Tenant:
    """A tenant of the directory (--tenants) and its use of the pool."""
    name: str
    prefixes: List[str]       # subtrees it owns
    read_prefixes: List[str]  # subtrees it may read but not change
    max_blocks: int           # 0: no limit
    blocks_used: int
    namespaces: int
    admin: bool


@dataclass(frozen=True)
class Usage:
    """A partition's usage as its memory server reports it (-1: unknown)."""
    bytes_used: int
    items: int


DirStats = dataclass(frozen=True)(type("DirStats", (), {
    "__annotations__": {name: int for name, _ in _lib.DIR_STATS_FIELDS},
    "__doc__": "The directory's counters (mayfly_dir_stats_t, field for field).",
    "__module__": __name__,
}))


@dataclass(frozen=True)
class Event:
    """One event of a listened node (see mayfly_event_t)."""
    seq: int
    kind: str  # "put", "delete", "push", "pop", "write", "child-created", ..., "gap", "lost"
    path: str
    key: Optional[bytes]  # put/delete: the key (its first 1024 bytes)
    offset: int  # write: byte offset; gap: first missed seq
    length: int
    time_ms: int


# --- the client ---


class _Closing:
    """A context manager that close()s on exit and finalises when collected
    (_finalize, close() unless a class says otherwise; errors are ignored
    there, as a finaliser must)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _finalize(self) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._finalize()
        except Exception:
            pass


class Client(_Closing):
    """A connection to a Mayfly directory; see connect().

    Usable as a context manager (close() on exit) and by several threads at
    once. close() unmounts what is still mounted and closes listeners; no
    other call may be in progress then (as for mayfly_disconnect).
    """

    def __init__(self, address: Optional[str] = None, token: Optional[str] = None,
                 timeout: float = 5.0, connect_timeout: Optional[float] = None) -> None:
        self.address = address
        self._pid = os.getpid()
        self._generation = _fork_generation
        self._lock = threading.Lock()
        self._children: "weakref.WeakSet" = weakref.WeakSet()  # mounts and listeners
        self._c = c_void_p()
        # token None: libmayfly takes $MAYFLY_TOKEN. The options are read only
        # during mayfly_connect, which copies the token.
        opts = _lib.Options(_ms(timeout, 0), _ms(connect_timeout, 0),
                            token.encode() if token is not None else None)
        check(lib.mayfly_connect(address.encode() if address else None, byref(opts),
                                 byref(self._c)))

    # -- plumbing --

    def _h(self) -> c_void_p:
        """The C handle, after the fork and closed checks."""
        if self._generation != _fork_generation:
            raise ClientForked(-1, f"this mayfly client was created in process {self._pid} before "
                                   f"fork(); process {os.getpid()} must call mayfly.connect() "
                                   f"anew instead of using it")
        if not self._c:
            raise InvalidArgument(-1, "the mayfly client is closed")
        return self._c

    def close(self) -> None:
        """Unmounts the namespaces and closes the listeners still open, then
        disconnects. Idempotent. In a forked child it only forgets the handle
        (the parent's client is not the child's to free)."""
        with self._lock:
            c, self._c = self._c, c_void_p()
            children = list(self._children)
            self._children.clear()
        if not c:
            return
        if self._generation != _fork_generation:
            return
        for ch in children:
            ch._release()
        lib.mayfly_disconnect(c)

    @property
    def closed(self) -> bool:
        return not self._c

    def __repr__(self) -> str:
        return f"<mayfly.Client {self.address or 'default'}{' closed' if self.closed else ''}>"

    # -- namespaces --

    def mkdir(self, path: str, parents: bool = False) -> None:
        """Creates a directory; with parents, missing ancestors too (and an
        existing directory is then not an error)."""
        check(lib.mayfly_mkdir(self._h(), _p(path), int(parents)))

    def create(self, path: str, kind: str = "kv", **options) -> Stat:
        """Creates a file, queue or kv namespace without mounting it (missing
        parents are created); Exists if the path exists. Options as mount()."""
        out = POINTER(_lib.CStat)()
        check(lib.mayfly_create(self._h(), _p(path), _kind(kind), byref(_create_options(**options)),
                                byref(out)))
        try:
            return _stat(out.contents)
        finally:
            lib.mayfly_stat_free(out)

    def mount(self, path: str, kind: str = "kv", blocks: int = 0, lease_ms: int = 0,
              pinned: bool = False, max_blocks: int = 0, high_watermark: int = 0,
              low_watermark: int = 0, replicas: int = 0) -> Union["KV", "Queue", "File"]:
        """Opens the namespace at path, creating it when absent with the given
        options (blocks 0: one; lease_ms 0: the directory's default; max_blocks
        0: no limit; watermarks 0: the defaults; replicas: blocks per partition
        on distinct hosts, 0: the directory's --replicas). Its lease is renewed
        in the background until unmount(). Returns a KV, Queue or File by kind."""
        k = _kind(kind)
        if k == 0:
            raise InvalidArgument(-1, "a directory is not mounted: use mkdir()")
        opts = _create_options(blocks=blocks, lease_ms=lease_ms, pinned=pinned,
                               max_blocks=max_blocks, high_watermark=high_watermark,
                               low_watermark=low_watermark, replicas=replicas)
        ns = c_void_p()
        check(lib.mayfly_mount(self._h(), _p(path), k, byref(opts), byref(ns)))
        obj = {1: File, 2: Queue, 3: KV}[k](self, path, ns)
        with self._lock:
            self._children.add(obj)
        return obj

    def remove(self, path: str, recursive: bool = False) -> None:
        """Removes a node; a non-empty directory only when recursive."""
        check(lib.mayfly_remove(self._h(), _p(path), int(recursive)))

    def rename(self, old_path: str, new_path: str) -> None:
        """Moves a node and its subtree to a new path whose parent exists."""
        check(lib.mayfly_rename(self._h(), _p(old_path), _p(new_path)))

    def exists(self, path: str) -> bool:
        """Whether the path exists."""
        return check(lib.mayfly_exists(self._h(), _p(path))) == 1

    def stat(self, path: str) -> Stat:
        """Describes one node."""
        out = POINTER(_lib.CStat)()
        check(lib.mayfly_stat(self._h(), _p(path), byref(out)))
        try:
            return _stat(out.contents)
        finally:
            lib.mayfly_stat_free(out)

    def ls(self, path: str = "/") -> List[Stat]:
        """A directory's children sorted by name (a leaf lists itself)."""
        out = POINTER(POINTER(_lib.CStat))()
        n = c_size_t()
        check(lib.mayfly_list(self._h(), _p(path), byref(out), byref(n)))
        try:
            return [_stat(out[i].contents) for i in range(n.value)]
        finally:
            lib.mayfly_stat_list_free(out, n)

    def leases(self, path: Optional[str] = None) -> List[Lease]:
        """Every node at or under path (None: all), path first, in tree order."""
        out = POINTER(_lib.CLease)()
        n = c_size_t()
        check(lib.mayfly_leases(self._h(), _p(path) if path is not None else None, byref(out),
                                byref(n)))
        try:
            return [Lease(_s(r.path), _KIND_NAMES.get(r.kind, "unknown"), r.lease_ms,
                          r.remaining_ms, bool(r.pinned)) for r in (out[i] for i in range(n.value))]
        finally:
            lib.mayfly_leases_free(out, n)

    def tree(self, path: str = "/") -> List[Tuple[str, str]]:
        """(path, kind) of every node at or under path, in tree order (one
        call: the lease listing holds the subtree)."""
        return [(r.path, r.kind) for r in self.leases(path)]

    def servers(self) -> List[Server]:
        """Every registered memory server."""
        out = POINTER(_lib.CServer)()
        n = c_size_t()
        check(lib.mayfly_servers(self._h(), byref(out), byref(n)))
        try:
            return [Server(s.id, _s(s.address), bool(s.up), s.blocks_used, s.blocks_total,
                           s.block_size, s.heartbeat_age_ms, s.blocks_lost, _s(s.zone),
                           _s(s.host), s.chains)
                    for s in (out[i] for i in range(n.value))]
        finally:
            lib.mayfly_servers_free(out, n)

    def renew(self, paths: Iterable[str]) -> List[str]:
        """Renews each path, its ancestors and its subtree in one call; returns
        the paths that do not exist (the rest are renewed regardless)."""
        enc = [_p(p) for p in paths]
        arr = (c_char_p * max(len(enc), 1))(*enc)
        missing = POINTER(c_char_p)()
        nmissing = c_size_t()
        lease = c_int64()
        check(lib.mayfly_renew(self._h(), arr, len(enc), byref(lease), byref(missing),
                               byref(nmissing)))
        try:
            return [_s(missing[i]) for i in range(nmissing.value)]
        finally:
            if missing:
                lib.mayfly_strv_free(missing, nmissing)

    def tenants(self) -> List[Tenant]:
        """The directory's tenants and what each uses: every tenant for an
        admin, the caller's own for anyone else, none for an open directory."""
        out = POINTER(_lib.CTenant)()
        n = c_size_t()
        check(lib.mayfly_tenants(self._h(), byref(out), byref(n)))
        try:
            return [Tenant(_s(t.name), [_s(t.prefixes[j]) for j in range(t.nprefixes)],
                           [_s(t.read_prefixes[j]) for j in range(t.nread_prefixes)],
                           t.max_blocks, t.blocks_used, t.namespaces, bool(t.admin))
                    for t in (out[i] for i in range(n.value))]
        finally:
            lib.mayfly_tenants_free(out, n)

    def stats(self) -> DirStats:
        """The directory's counters."""
        out = _lib.CDirStats()
        check(lib.mayfly_dir_stats(self._h(), byref(out)))
        return DirStats(**{name: getattr(out, name) for name, _ in _lib.DIR_STATS_FIELDS})

    def cluster(self) -> dict:
        """The directory service's replicas (mayfly_cluster_t): a dict of
        name, etcd, leader, answered_by, term, committed_seq, snapshot_seq,
        txns, txn_records and members, a list of dicts of address, role
        ("leader", "standby", or "single" without --etcd), applied_seq and
        updated_ms. Any directory answers, leader or not."""
        out = _lib.CCluster()
        check(lib.mayfly_cluster(self._h(), byref(out)))
        try:
            members = [{"address": _s(m.address), "role": _s(m.role),
                        "applied_seq": m.applied_seq, "updated_ms": m.updated_ms}
                       for m in (out.members[i] for i in range(out.nmembers))]
            return {"name": _s(out.name), "etcd": _s(out.etcd), "leader": _s(out.leader),
                    "answered_by": _s(out.answered_by), "term": out.term,
                    "committed_seq": out.committed_seq, "snapshot_seq": out.snapshot_seq,
                    "txns": out.txns, "txn_records": out.txn_records, "members": members}
        finally:
            lib.mayfly_cluster_clear(byref(out))

    def usage(self, path: str) -> List[Usage]:
        """Each partition's usage as its memory server reports it; a partition
        that is lost or whose server did not answer has -1 fields (no error)."""
        st = POINTER(_lib.CStat)()
        check(lib.mayfly_stat(self._h(), _p(path), byref(st)))
        try:
            n = st.contents.npartitions
            out = (_lib.CUsage * max(n, 1))()
            lib.mayfly_usage(self._h(), st, out)  # partial results are still results
            return [Usage(out[i].bytes_used, out[i].items) for i in range(n)]
        finally:
            lib.mayfly_stat_free(st)

    # -- notifications --

    def listen(self, path: str, timeout: Optional[float] = None,
               kinds: Union[None, str, Iterable[str]] = None) -> "Listener":
        """Listens on path; returns a Listener, an iterator of Events that ends
        when no event comes within `timeout` seconds (None: waits forever) or
        once the node is removed. kinds: "data", "namespace", "all" or event
        kind names ("put,delete" or ["put", "delete"]); None means all. Returns
        once data events of the namespace are being published (this can take
        two heartbeat periods of the memory servers)."""
        mask = c_uint32(0)
        if kinds is not None:
            words = kinds if isinstance(kinds, str) else ",".join(kinds)
            check(lib.mayfly_event_mask_parse(words.encode(), byref(mask)))
        h = c_void_p()
        check(lib.mayfly_listen(self._h(), _p(path), mask, byref(h)))
        obj = Listener(self, path, h, timeout)
        with self._lock:
            self._children.add(obj)
        return obj


def connect(address: Optional[str] = None, token: Optional[str] = None,
            timeout: float = 5.0) -> Client:
    """Connects to the directory at "host:port", or to the replicated
    directory service of a comma-separated list ("a:9090,b:9090,c:9090";
    calls follow its leader and fail over within their timeout) (None:
    $MAYFLY_DIRECTORY, else 127.0.0.1:9090). token: the tenant token to log in with (None:
    $MAYFLY_TOKEN, else none); a directory with tenants refuses a missing or
    wrong one with PermissionDenied at the first call. timeout: seconds per
    call. Raises ConnectionFailed or Timeout when the directory cannot be
    reached, InvalidArgument for a bad address. The Client is a context
    manager."""
    return Client(address, token=token, timeout=timeout)


def _kind(kind: str) -> int:
    try:
        return _KINDS[kind]
    except KeyError:
        raise InvalidArgument(-1, f"unknown namespace kind {kind!r} (file, queue or kv)") from None


def _create_options(blocks: int = 0, lease_ms: int = 0, pinned: bool = False, max_blocks: int = 0,
                    high_watermark: int = 0, low_watermark: int = 0,
                    replicas: int = 0) -> _lib.CreateOptions:
    if replicas < 0:
        raise InvalidArgument(-1, f"replicas must be positive (0: the directory's default), "
                              f"not {replicas}")
    return _lib.CreateOptions(blocks, lease_ms, int(pinned), max_blocks, high_watermark,
                              low_watermark, replicas)


# --- mounted namespaces ---


class _Mounted:
    """What the three kinds share: the handle, its client, unmount()."""

    def __init__(self, client: Client, path: str, ns: c_void_p) -> None:
        self._client = client  # keeps the client alive while the handle is
        self.path = path
        self._ns = ns

    def _h(self) -> c_void_p:
        self._client._h()  # the fork check, and a closed client
        if not self._ns:
            raise InvalidArgument(-1, f"{self.path} is unmounted")
        return self._ns

    def _release(self) -> None:
        ns, self._ns = self._ns, c_void_p()
        if ns and self._client._generation == _fork_generation:
            lib.mayfly_unmount(ns)

    def unmount(self) -> None:
        """Stops renewing the lease and frees the handle (the data expires after
        its lease unless removed or pinned). Idempotent."""
        with self._client._lock:
            self._client._children.discard(self)
        self._release()

    @property
    def mounted(self) -> bool:
        return bool(self._ns)

    def stat(self) -> Stat:
        """stat() of this namespace."""
        return self._client.stat(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.unmount()

    def __repr__(self) -> str:
        return f"<mayfly.{type(self).__name__} {self.path}{'' if self.mounted else ' unmounted'}>"


def _arrays(items: Sequence[bytes]):
    n = len(items)
    ptrs = (c_char_p * max(n, 1))(*items)
    lens = (c_size_t * max(n, 1))(*[len(x) for x in items])
    return ptrs, lens


class KV(_Mounted):
    """A kv namespace, mapping-like: kv[k], kv[k] = v, del kv[k], k in kv,
    get(), put_many(), get_many(). Keys and values are bytes (str is encoded
    as UTF-8). Not iterable: the C API has no key listing."""

    __iter__ = None  # type: ignore[assignment]  # no listing; `for k in kv` is a TypeError

    def put(self, key: BytesLike, value: BytesLike) -> None:
        """Stores value under key."""
        k, v = _b(key), _b(value)
        check(lib.mayfly_kv_put(self._h(), k, len(k), v, len(v)))

    def __setitem__(self, key: BytesLike, value: BytesLike) -> None:
        self.put(key, value)

    def __getitem__(self, key: BytesLike) -> bytes:
        """The value; KeyNotFound (a KeyError) when absent."""
        k = _b(key)
        val = c_void_p()
        n = c_size_t()
        check(lib.mayfly_kv_get(self._h(), k, len(k), byref(val), byref(n)))
        return _take(val, n.value)

    def get(self, key: BytesLike, default: Optional[bytes] = None) -> Optional[bytes]:
        """The value, or default when the key is absent."""
        try:
            return self[key]
        except KeyNotFound:
            return default

    def __delitem__(self, key: BytesLike) -> None:
        """Deletes the key (KeyNotFound when the library reports it absent)."""
        k = _b(key)
        check(lib.mayfly_kv_delete(self._h(), k, len(k)))

    def delete(self, key: BytesLike) -> None:
        """Same as del kv[key]."""
        del self[key]

    def __contains__(self, key: object) -> bool:
        k = _b(key)  # type: ignore[arg-type]
        return check(lib.mayfly_kv_exists(self._h(), k, len(k))) == 1

    def put_many(self, items: Union[Mapping[BytesLike, BytesLike],
                                    Iterable[Tuple[BytesLike, BytesLike]]]) -> None:
        """Stores every pair in one pipelined batch (one round trip); raises the
        first failure's exception (the other pairs were attempted)."""
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        if not pairs:
            return
        keys = [_b(k) for k, _ in pairs]
        vals = [_b(v) for _, v in pairs]
        kp, kl = _arrays(keys)
        vp, vl = _arrays(vals)
        rcs = (c_int * len(pairs))()
        check(lib.mayfly_kv_put_batch(self._h(), len(pairs), kp, kl, vp, vl, rcs))

    def get_many(self, keys: Iterable[BytesLike]) -> List[Optional[bytes]]:
        """The values of keys, in order, in one pipelined batch; None for an
        absent key. Other failures raise the first one's exception."""
        ks = [_b(k) for k in keys]
        n = len(ks)
        if n == 0:
            return []
        kp, kl = _arrays(ks)
        vals = (c_void_p * n)()
        vlens = (c_size_t * n)()
        rcs = (c_int * n)()
        lib.mayfly_kv_get_batch(self._h(), n, kp, kl, vals, vlens, rcs)
        out: List[Optional[bytes]] = []
        first_error = 0
        # Every returned buffer is taken (and freed) before anything is raised.
        for i in range(n):
            if rcs[i] == 0:
                out.append(_take(c_void_p(vals[i]), vlens[i]))
            else:
                out.append(None)
                if vals[i]:
                    lib.mayfly_free(vals[i])
                if rcs[i] != _ENOKEY and first_error == 0:
                    first_error = rcs[i]
        if first_error:
            raise error_for(first_error)
        return out


_ENOKEY = ERRORS["ENOKEY"][0]


class Queue(_Mounted):
    """A FIFO queue namespace of bytes items."""

    def push(self, item: BytesLike) -> None:
        """Appends an item at the tail."""
        b = _b(item)
        check(lib.mayfly_queue_push(self._h(), b, len(b)))

    def push_many(self, items: Iterable[BytesLike]) -> None:
        """Pushes the items in order, pipelined; raises the first failure's exception."""
        bs = [_b(x) for x in items]
        if not bs:
            return
        ptrs, lens = _arrays(bs)
        rcs = (c_int * len(bs))()
        check(lib.mayfly_queue_push_batch(self._h(), len(bs), ptrs, lens, rcs))

    def pop(self, timeout: Optional[float] = 0.0) -> bytes:
        """Takes the head item, waiting up to timeout seconds for one (0: do not
        wait). Raises TryAgain when none came."""
        out = c_void_p()
        n = c_size_t()
        check(lib.mayfly_queue_pop(self._h(), byref(out), byref(n), _ms(timeout, 0)))
        return _take(out, n.value)

    def pop_many(self, n: int) -> List[bytes]:
        """Pops up to n items without waiting (pipelined); may return fewer."""
        if n <= 0:
            return []
        items = (c_void_p * n)()
        lens = (c_size_t * n)()
        k = check(lib.mayfly_queue_pop_batch(self._h(), n, items, lens))
        return [_take(c_void_p(items[i]), lens[i]) for i in range(k)]

    def peek(self) -> bytes:
        """The head item without taking it; TryAgain when the queue is empty."""
        out = c_void_p()
        n = c_size_t()
        check(lib.mayfly_queue_peek(self._h(), byref(out), byref(n)))
        return _take(out, n.value)

    def __len__(self) -> int:
        return check(lib.mayfly_queue_length(self._h()))


class File(_Mounted, io.RawIOBase):
    """A file namespace as an io.RawIOBase (readinto, write, seek, tell,
    truncate), so io.BufferedReader / io.BufferedWriter can wrap it. Writing
    past the end grows the file; unwritten gaps read as zeros. close() is
    unmount()."""

    def __init__(self, client: Client, path: str, ns: c_void_p) -> None:
        _Mounted.__init__(self, client, path, ns)
        io.RawIOBase.__init__(self)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def size(self) -> int:
        """The file's size (the end of its furthest write)."""
        return check(lib.mayfly_file_size(self._h()))

    def readinto(self, b) -> int:
        """Reads up to len(b) bytes at the position into b; 0 at the end."""
        mv = memoryview(b).cast("B")
        n = len(mv)
        if n == 0:
            return 0
        buf = (ctypes.c_char * n).from_buffer(mv)
        got = check(lib.mayfly_file_read(self._h(), self._pos, buf, n))
        self._pos += got
        return got

    def readall(self) -> bytes:
        """Everything from the position to the end, in one read where it can."""
        want = max(self.size() - self._pos, 0)
        buf = bytearray(want)
        got = self.readinto(buf) if want else 0
        chunks = [bytes(buf[:got])]
        while True:  # the file may have grown meanwhile
            more = self.read(io.DEFAULT_BUFFER_SIZE)
            if not more:
                return b"".join(chunks)
            chunks.append(more)

    def write(self, b) -> int:
        """Writes all of b at the position; returns len(b)."""
        data = _b(b)
        check(lib.mayfly_file_write(self._h(), self._pos, data, len(data)))
        self._pos += len(data)
        return len(data)

    def append(self, b) -> int:
        """Appends at the current end (serialised within this client); returns
        the offset it was written at. The position is not moved."""
        data = _b(b)
        off = c_uint64()
        check(lib.mayfly_file_append(self._h(), data, len(data), byref(off)))
        return off.value

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size() + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._h()
        self._pos = pos
        return pos

    def tell(self) -> int:
        self._h()
        return self._pos

    def truncate(self, size: Optional[int] = None) -> int:
        """Resizes the file to size (None: the position) without moving the
        position. Shrinking frees the blocks wholly past it; growing writes a
        zero byte at size - 1 (the gap reads as zeros)."""
        size = self._pos if size is None else size
        if size < 0:
            raise ValueError("negative size")
        h = self._h()
        cur = self.size()
        if size < cur:
            check(lib.mayfly_file_truncate(h, size))
        elif size > cur:
            check(lib.mayfly_file_write(h, size - 1, b"\0", 1))
        return size

    def close(self) -> None:
        """Unmounts the file (and marks the stream closed)."""
        self.unmount()
        io.RawIOBase.close(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        # io's finaliser would call close(); a forked child must not touch C.
        try:
            self.close()
        except Exception:
            pass


# --- listeners ---


class Listener(_Closing):
    """The events of one node, as an iterator (see Client.listen). Close it
    (or use it as a context manager) to stop its background thread. One
    thread at a time takes events (a lock enforces it, as mayfly_listener_next
    requires); close() waits for a next_event() in progress to return."""

    def __init__(self, client: Client, path: str, h: c_void_p, timeout: Optional[float]) -> None:
        self._client = client
        self.path = path
        self._l = h
        self.timeout = timeout
        self._lock = threading.Lock()  # mayfly_listener_next: one caller at a time

    def _release(self) -> None:
        h, self._l = self._l, c_void_p()
        if h and self._client._generation == _fork_generation:
            lib.mayfly_listener_close(h)

    def close(self) -> None:
        """Stops the listener (events not taken are dropped). Idempotent."""
        with self._client._lock:
            self._client._children.discard(self)
        with self._lock:
            self._release()

    def next_event(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event, waiting up to timeout seconds (None: forever); None
        when none came in time. Raises NotFound once the node is gone and every
        event before that was delivered."""
        ev = POINTER(_lib.CEvent)()
        with self._lock:
            self._client._h()
            if not self._l:
                raise InvalidArgument(-1, f"the listener on {self.path} is closed")
            rc = lib.mayfly_listener_next(self._l, byref(ev), _ms(timeout, -1))
            if rc == ERRORS["EAGAIN"][0]:
                return None
            check(rc)
        try:
            e = ev.contents
            key = ctypes.string_at(e.key, e.key_len) if e.key else None
            return Event(e.seq, _s(lib.mayfly_event_kind_name(e.kind)), _s(e.path), key,
                         e.offset, e.length, e.time_ms)
        finally:
            lib.mayfly_event_free(ev)

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        try:
            ev = self.next_event(self.timeout)
        except NotFound:
            self.close()
            raise StopIteration from None
        if ev is None:
            raise StopIteration
        return ev

    def _finalize(self) -> None:
        self._release()
