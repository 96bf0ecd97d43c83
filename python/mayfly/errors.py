"""Mayfly's exceptions, mapped from the C error codes of common/error.h.

ERRORS is the one table: C code name (without the MAYFLY_ prefix) to its
numeric value and the exception class raised for it. Several codes may share
a class; a code without a more specific class raises MayflyError itself.
tests/test_errors.py parses the X(NAME, value, "text") lines of
common/error.h and checks this table against them, so the two cannot drift.
"""

from __future__ import annotations

from typing import Dict, Tuple, Type

from . import _lib


class MayflyError(Exception):
    """A failed libmayfly call.

    Attributes: code (the negative MAYFLY_E* value), name ("MAYFLY_ENOENT")
    and message (the library's detailed message for the call, else the code's
    description).
    """

    def __init__(self, code: int, message: str = "") -> None:
        self.code = code
        self.name = error_name(code)
        self.message = message or strerror(code)
        super().__init__(code, self.message)

    def __str__(self) -> str:
        return f"{self.message} [{self.name}]"

    def __reduce__(self):  # picklable across multiprocessing, as the same class
        return (type(self), (self.code, self.message))


class InvalidArgument(MayflyError, ValueError):
    """MAYFLY_EINVAL: a bad argument (also a ValueError)."""


class NotFound(MayflyError):
    """MAYFLY_ENOENT: no such namespace or directory."""


class Exists(MayflyError):
    """MAYFLY_EEXIST: the path already exists."""


class NotADirectory(MayflyError):
    """MAYFLY_ENOTDIR."""


class IsADirectory(MayflyError):
    """MAYFLY_EISDIR."""


class DirectoryNotEmpty(MayflyError):
    """MAYFLY_ENOTEMPTY: remove it with recursive=True."""


class BadPath(MayflyError):
    """MAYFLY_ENAMETOOLONG, MAYFLY_EBADPATH, MAYFLY_ESUBTREE: an unusable path."""


class NoSpace(MayflyError):
    """MAYFLY_ENOSERVERS, MAYFLY_ENOSPC, MAYFLY_EFULL, MAYFLY_ENOHOSTS: no blocks to be had
    (ENOHOSTS: too few distinct hosts for the replicas asked for)."""


class ConnectionFailed(MayflyError):
    """MAYFLY_ECONNREFUSED, MAYFLY_EIO, MAYFLY_ESERVERDOWN, MAYFLY_ENOTLEADER: a server cannot
    be reached (ENOTLEADER: the directory asked is a standby and no leader answered in time)."""


class Timeout(MayflyError):
    """MAYFLY_ETIMEDOUT: a server did not answer within the timeout."""


class PermissionDenied(MayflyError):
    """MAYFLY_EPERM: the operation is not permitted."""


class WrongKind(MayflyError):
    """MAYFLY_EKIND: the namespace exists with another kind."""


class TooBig(MayflyError):
    """MAYFLY_ETOOBIG: a key, value or item too large."""


class QuotaExceeded(MayflyError):
    """MAYFLY_EQUOTA: the namespace may not grow past its max_blocks."""


class TryAgain(MayflyError):
    """MAYFLY_EAGAIN: nothing came in time (a queue pop); trying again is safe."""


class KeyNotFound(MayflyError, KeyError):
    """MAYFLY_ENOKEY: no such key (also a KeyError, so kv[k] behaves like a dict)."""


class DataLost(MayflyError):
    """MAYFLY_ELOST: the memory server holding the data restarted; remove the namespace."""


class DirectoryDown(MayflyError):
    """MAYFLY_EDIRDOWN: the directory is unreachable, so a write to a watched
    namespace was refused (nothing was applied; trying again later is safe)."""


class ClientForked(MayflyError):
    """The client was created before fork(): a child process must connect anew."""


# The table: C name -> (value, class). Checked against common/error.h by the tests.
ERRORS: Dict[str, Tuple[int, Type[MayflyError]]] = {
    "EINVAL": (-1, InvalidArgument),
    "ENOENT": (-2, NotFound),
    "EEXIST": (-3, Exists),
    "ENOTDIR": (-4, NotADirectory),
    "EISDIR": (-5, IsADirectory),
    "ENOTEMPTY": (-6, DirectoryNotEmpty),
    "ENAMETOOLONG": (-7, BadPath),
    "EBADPATH": (-8, BadPath),
    "ESUBTREE": (-9, BadPath),
    "ENOSERVERS": (-10, NoSpace),
    "ENOSPC": (-11, NoSpace),
    "ENOMEM": (-12, MayflyError),
    "EPROTO": (-13, MayflyError),
    "ECONNREFUSED": (-14, ConnectionFailed),
    "ETIMEDOUT": (-15, Timeout),
    "EIO": (-16, ConnectionFailed),
    "EPERM": (-17, PermissionDenied),
    "EKIND": (-18, WrongKind),
    "EMOVED": (-19, MayflyError),
    "ETOOBIG": (-20, TooBig),
    "EQUOTA": (-21, QuotaExceeded),
    "ESERVER": (-22, MayflyError),
    "ESERVERDOWN": (-23, ConnectionFailed),
    "EAGAIN": (-24, TryAgain),
    "EINTERNAL": (-25, MayflyError),
    "ENOKEY": (-26, KeyNotFound),
    "EFULL": (-27, NoSpace),
    "ELOST": (-28, DataLost),
    "EDIRDOWN": (-29, DirectoryDown),
    "ENOHOSTS": (-30, NoSpace),
    "ENOTLEADER": (-31, ConnectionFailed),
}

_BY_CODE: Dict[int, Type[MayflyError]] = {code: cls for code, cls in ERRORS.values()}
CODES: Dict[str, int] = {name: code for name, (code, _) in ERRORS.items()}


def strerror(code: int) -> str:
    """The library's static description of a code ("no such namespace")."""
    return _lib.lib.mayfly_strerror(code).decode()


def error_name(code: int) -> str:
    """The symbolic name of a code ("MAYFLY_ENOENT"), or "UNKNOWN"."""
    return _lib.lib.mayfly_err_name(code).decode()


def error_for(code: int, message: str = "") -> MayflyError:
    """The exception for a negative code (an instance of its table class)."""
    return _BY_CODE.get(code, MayflyError)(code, message)


def check(rc: int) -> int:
    """Returns rc when it is not negative; raises its exception otherwise, with
    the calling thread's last_error message (read at once, on the same thread
    that made the call: the message is thread-local in the library)."""
    if rc < 0:
        raise error_for(rc, _lib.last_error())
    return rc
