"""Loading libmayfly and the ctypes prototypes of the C API (client/mayfly.h).

Every function the package calls is declared here with its argtypes and
restype set explicitly, so a wrong argument is a TypeError in Python rather
than undefined behaviour in C. The library is a ctypes.CDLL: ctypes releases
the GIL for the duration of every foreign call made through a CDLL (unlike a
PyDLL), so one thread blocked in a network call (a queue pop waiting for an
item, a listener waiting for an event) never stops the other threads.

The library is found, in order: $MAYFLY_LIBRARY (a path); libmayfly.so next
to this package (an installed copy); the build tree of a source checkout
($MAYFLY_BUILD_DIR/client/libmayfly.so, else <repo>/build/client/libmayfly.so);
the system's library path (ctypes.util.find_library("mayfly")).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from ctypes import (POINTER, Structure, c_char_p, c_int, c_int32, c_int64, c_size_t,
                    c_uint8, c_uint32, c_uint64, c_void_p)
from pathlib import Path
from typing import List, Optional

__all__ = ["lib", "library_path"]


def _candidates() -> List[str]:
    """Where the library may be, in the order the module docstring gives."""
    out: List[str] = []
    env = os.environ.get("MAYFLY_LIBRARY")
    if env:
        out.append(env)
    here = Path(__file__).resolve().parent
    out += [str(here / "libmayfly.so"), str(here / "libmayfly.so.0")]
    build = os.environ.get("MAYFLY_BUILD_DIR")
    if build:
        out.append(str(Path(build) / "client" / "libmayfly.so"))
    # python/mayfly/_lib.py -> the repository root is two levels above the package.
    out.append(str(here.parent.parent / "build" / "client" / "libmayfly.so"))
    return out


def _load() -> tuple:
    env = os.environ.get("MAYFLY_LIBRARY")
    for path in _candidates():
        # $MAYFLY_LIBRARY is taken as given: if it names a missing file that
        # is an error, not a reason to load some other copy silently.
        if (env and path == env) or os.path.exists(path):
            return ctypes.CDLL(path), path
    found = ctypes.util.find_library("mayfly")
    if found is None:
        raise ImportError("libmayfly not found: set MAYFLY_LIBRARY to its path, or build the "
                          "source tree (build/client/libmayfly.so), or install it; tried "
                          + ", ".join(_candidates()))
    return ctypes.CDLL(found), found


lib, library_path = _load()

# --- structures (field for field as in client/mayfly.h) ---


class Options(Structure):
    _fields_ = [("timeout_ms", c_int), ("connect_timeout_ms", c_int), ("token", c_char_p)]


class CreateOptions(Structure):
    _fields_ = [("blocks", c_int), ("lease_ms", c_int64), ("pinned", c_int),
                ("max_blocks", c_int), ("high_watermark", c_int), ("low_watermark", c_int),
                ("replicas", c_int)]


class CReplica(Structure):
    _fields_ = [("server_id", c_int32), ("server_address", c_char_p), ("block_index", c_int32),
                ("generation", c_int64), ("capability", c_void_p), ("capability_len", c_size_t),
                ("zone", c_char_p)]


class CPartition(Structure):
    _fields_ = [("server_id", c_int32), ("server_address", c_char_p), ("block_index", c_int32),
                ("generation", c_int64), ("block_size", c_int64), ("range_lo", c_int64),
                ("range_hi", c_int64), ("lost", c_int), ("capability", c_void_p),
                ("capability_len", c_size_t), ("replicas", c_int), ("state", c_char_p),
                ("chain_version", c_int64), ("nchain", c_size_t), ("chain", POINTER(CReplica))]


class CStat(Structure):
    _fields_ = [("path", c_char_p), ("kind", c_int), ("created_ms", c_int64),
                ("lease_ms", c_int64), ("remaining_ms", c_int64), ("pinned", c_int),
                ("children", c_int32), ("layout_version", c_int64),
                ("npartitions", c_size_t), ("partitions", POINTER(CPartition)),
                ("ntags", c_size_t), ("tag_keys", POINTER(c_char_p)),
                ("tag_values", POINTER(c_char_p)), ("max_blocks", c_int),
                ("high_watermark", c_int), ("low_watermark", c_int)]


class CTenant(Structure):
    _fields_ = [("name", c_char_p), ("prefixes", POINTER(c_char_p)), ("nprefixes", c_size_t),
                ("read_prefixes", POINTER(c_char_p)), ("nread_prefixes", c_size_t),
                ("max_blocks", c_int32), ("blocks_used", c_int64), ("namespaces", c_int64),
                ("admin", c_int)]


class CLease(Structure):
    _fields_ = [("path", c_char_p), ("kind", c_int), ("lease_ms", c_int64),
                ("remaining_ms", c_int64), ("pinned", c_int)]


class CServer(Structure):
    _fields_ = [("id", c_int32), ("address", c_char_p), ("up", c_int),
                ("blocks_used", c_int32), ("blocks_total", c_int32), ("block_size", c_int64),
                ("heartbeat_age_ms", c_int64), ("blocks_lost", c_int32), ("zone", c_char_p),
                ("host", c_char_p), ("chains", c_int32)]


class CDirMember(Structure):
    _fields_ = [("address", c_char_p), ("role", c_char_p), ("applied_seq", c_int64),
                ("updated_ms", c_int64)]


class CCluster(Structure):
    _fields_ = [("name", c_char_p), ("etcd", c_char_p), ("leader", c_char_p),
                ("answered_by", c_char_p), ("term", c_int64), ("committed_seq", c_int64),
                ("snapshot_seq", c_int64), ("txns", c_int64), ("txn_records", c_int64),
                ("members", POINTER(CDirMember)), ("nmembers", c_size_t)]


DIR_STATS_FIELDS = [
    ("nodes", c_int64), ("directories", c_int64), ("namespaces", c_int64),
    ("servers", c_int32), ("servers_up", c_int32),
    ("blocks_total", c_int64), ("blocks_used", c_int64), ("expired_total", c_int64),
    ("uptime_ms", c_int64), ("connections", c_int64), ("requests", c_int64),
    ("lease_ms", c_int64), ("grace_ms", c_int64),
    ("splits", c_int64), ("merges", c_int64), ("rollbacks", c_int64), ("bytes_moved", c_int64),
    ("move_ms", c_int64), ("move_ms_max", c_int64),
    ("durable", c_int),
    ("log_records", c_int64), ("log_bytes", c_int64), ("log_fsyncs", c_int64),
    ("snapshots", c_int64), ("last_snapshot_ms", c_int64),
    ("recovery_ms", c_int64), ("recovered_records", c_int64), ("log_seq", c_int64),
    ("chain_failovers", c_int64), ("rereplications", c_int64), ("rereplicated_bytes", c_int64),
    ("partitions_degraded", c_int64),
]


class CDirStats(Structure):
    _fields_ = DIR_STATS_FIELDS


class CUsage(Structure):
    _fields_ = [("bytes_used", c_int64), ("items", c_int64)]


class CEvent(Structure):
    _fields_ = [("seq", c_int64), ("kind", c_int), ("path", c_char_p),
                ("key", POINTER(c_uint8)), ("key_len", c_size_t), ("offset", c_int64),
                ("length", c_int64), ("time_ms", c_int64)]


# Opaque handles are plain c_void_p values.
_client = c_void_p
_ns = c_void_p
_listener = c_void_p


def _proto(name: str, restype, *argtypes) -> None:
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)


_proto("mayfly_strerror", c_char_p, c_int)
_proto("mayfly_err_name", c_char_p, c_int)
_proto("mayfly_last_error", c_char_p)
_proto("mayfly_connect", c_int, c_char_p, POINTER(Options), POINTER(_client))
_proto("mayfly_disconnect", None, _client)
_proto("mayfly_kind_name", c_char_p, c_int)
_proto("mayfly_kind_parse", c_int, c_char_p, POINTER(c_int))

_proto("mayfly_mkdir", c_int, _client, c_char_p, c_int)
_proto("mayfly_create", c_int, _client, c_char_p, c_int, POINTER(CreateOptions),
       POINTER(POINTER(CStat)))
_proto("mayfly_remove", c_int, _client, c_char_p, c_int)
_proto("mayfly_rename", c_int, _client, c_char_p, c_char_p)
_proto("mayfly_exists", c_int, _client, c_char_p)
_proto("mayfly_stat", c_int, _client, c_char_p, POINTER(POINTER(CStat)))
_proto("mayfly_stat_free", None, POINTER(CStat))
_proto("mayfly_list", c_int, _client, c_char_p, POINTER(POINTER(POINTER(CStat))),
       POINTER(c_size_t))
_proto("mayfly_stat_list_free", None, POINTER(POINTER(CStat)), c_size_t)
_proto("mayfly_renew", c_int, _client, POINTER(c_char_p), c_size_t, POINTER(c_int64),
       POINTER(POINTER(c_char_p)), POINTER(c_size_t))
_proto("mayfly_strv_free", None, POINTER(c_char_p), c_size_t)
_proto("mayfly_leases", c_int, _client, c_char_p, POINTER(POINTER(CLease)), POINTER(c_size_t))
_proto("mayfly_leases_free", None, POINTER(CLease), c_size_t)
_proto("mayfly_servers", c_int, _client, POINTER(POINTER(CServer)), POINTER(c_size_t))
_proto("mayfly_servers_free", None, POINTER(CServer), c_size_t)
_proto("mayfly_dir_stats", c_int, _client, POINTER(CDirStats))
_proto("mayfly_cluster", c_int, _client, POINTER(CCluster))
_proto("mayfly_cluster_clear", None, POINTER(CCluster))
_proto("mayfly_tenants", c_int, _client, POINTER(POINTER(CTenant)), POINTER(c_size_t))
_proto("mayfly_tenants_free", None, POINTER(CTenant), c_size_t)
_proto("mayfly_usage", c_int, _client, POINTER(CStat), POINTER(CUsage))

_proto("mayfly_mount", c_int, _client, c_char_p, c_int, POINTER(CreateOptions), POINTER(_ns))
_proto("mayfly_unmount", None, _ns)
_proto("mayfly_free", None, c_void_p)

_proto("mayfly_file_write", c_int, _ns, c_uint64, c_void_p, c_size_t)
_proto("mayfly_file_append", c_int, _ns, c_void_p, c_size_t, POINTER(c_uint64))
_proto("mayfly_file_read", c_int64, _ns, c_uint64, c_void_p, c_size_t)
_proto("mayfly_file_size", c_int64, _ns)
_proto("mayfly_file_truncate", c_int, _ns, c_uint64)

_proto("mayfly_queue_push", c_int, _ns, c_char_p, c_size_t)
_proto("mayfly_queue_pop", c_int, _ns, POINTER(c_void_p), POINTER(c_size_t), c_int)
_proto("mayfly_queue_peek", c_int, _ns, POINTER(c_void_p), POINTER(c_size_t))
_proto("mayfly_queue_length", c_int64, _ns)
_proto("mayfly_queue_push_batch", c_int, _ns, c_size_t, POINTER(c_char_p), POINTER(c_size_t),
       POINTER(c_int))
_proto("mayfly_queue_pop_batch", c_int64, _ns, c_size_t, POINTER(c_void_p), POINTER(c_size_t))

_proto("mayfly_kv_put", c_int, _ns, c_char_p, c_size_t, c_char_p, c_size_t)
_proto("mayfly_kv_get", c_int, _ns, c_char_p, c_size_t, POINTER(c_void_p), POINTER(c_size_t))
_proto("mayfly_kv_delete", c_int, _ns, c_char_p, c_size_t)
_proto("mayfly_kv_exists", c_int, _ns, c_char_p, c_size_t)
_proto("mayfly_kv_put_batch", c_int, _ns, c_size_t, POINTER(c_char_p), POINTER(c_size_t),
       POINTER(c_char_p), POINTER(c_size_t), POINTER(c_int))
_proto("mayfly_kv_get_batch", c_int, _ns, c_size_t, POINTER(c_char_p), POINTER(c_size_t),
       POINTER(c_void_p), POINTER(c_size_t), POINTER(c_int))

_proto("mayfly_listen", c_int, _client, c_char_p, c_uint32, POINTER(_listener))
_proto("mayfly_listener_next", c_int, _listener, POINTER(POINTER(CEvent)), c_int)
_proto("mayfly_listener_close", None, _listener)
_proto("mayfly_event_free", None, POINTER(CEvent))
_proto("mayfly_event_kind_name", c_char_p, c_int)
_proto("mayfly_event_mask_parse", c_int, c_char_p, POINTER(c_uint32))


def last_error() -> str:
    """The calling thread's message about its last failed call (thread-local in C)."""
    raw: Optional[bytes] = lib.mayfly_last_error()
    return raw.decode("utf-8", "replace") if raw else ""
