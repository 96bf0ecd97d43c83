/*
 * Mayfly error codes.
 *
 * Every internal and public function returns 0 on success or one of the
 * negative MAYFLY_E* codes below; mayfly_strerror() names it. The codes travel
 * on the wire (the control API's Error exception, the data plane's status
 * field), so their values are part of the protocol: never renumber one.
 */
#ifndef MAYFLY_ERROR_H
#define MAYFLY_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, value, message) */
#define MAYFLY_ERRNO_MAP(X)                                                   \
  X(EINVAL, -1, "invalid argument")                                           \
  X(ENOENT, -2, "no such namespace")                                          \
  X(EEXIST, -3, "already exists")                                             \
  X(ENOTDIR, -4, "not a directory")                                           \
  X(EISDIR, -5, "is a directory")                                             \
  X(ENOTEMPTY, -6, "directory not empty")                                     \
  X(ENAMETOOLONG, -7, "name or path too long")                                \
  X(EBADPATH, -8, "invalid path")                                             \
  X(ESUBTREE, -9, "cannot move a node into its own subtree")                  \
  X(ENOSERVERS, -10, "no memory servers registered")                          \
  X(ENOSPC, -11, "block pool exhausted")                                      \
  X(ENOMEM, -12, "out of memory")                                             \
  X(EPROTO, -13, "protocol error")                                            \
  X(ECONNREFUSED, -14, "cannot connect")                                      \
  X(ETIMEDOUT, -15, "timed out")                                              \
  X(EIO, -16, "connection lost")                                              \
  X(EPERM, -17, "operation not permitted")                                    \
  X(EKIND, -18, "wrong namespace kind")                                       \
  X(EMOVED, -19, "block moved or stale")                                      \
  X(ETOOBIG, -20, "too large")                                                \
  X(EQUOTA, -21, "quota exceeded")                                            \
  X(ESERVER, -22, "unknown memory server")                                    \
  X(ESERVERDOWN, -23, "memory server down")                                   \
  X(EAGAIN, -24, "try again")                                                 \
  X(EINTERNAL, -25, "internal error")                                         \
  X(ENOKEY, -26, "no such key")                                               \
  X(EFULL, -27, "block full")                                                 \
  X(ELOST, -28, "data lost: memory server restarted")                        \
  X(EDIRDOWN, -29, "directory unreachable: write to a watched namespace refused") \
  X(ENOHOSTS, -30, "too few hosts for the replicas")                          \
  X(ENOTLEADER, -31, "not the leader directory")

typedef enum {
  MAYFLY_OK = 0,
#define MAYFLY__ERR_ENUM(name, value, msg) MAYFLY_##name = (value),
  MAYFLY_ERRNO_MAP(MAYFLY__ERR_ENUM)
#undef MAYFLY__ERR_ENUM
  MAYFLY_ERRNO_MIN = -31
} mayfly_errno_t;

/* Returns a static, human-readable description of an error code. Unknown codes
 * give "unknown error". Never returns NULL. Thread-safe. */
const char *mayfly_strerror(int err);

/* Returns the symbolic name of an error code ("MAYFLY_ENOENT"), or "UNKNOWN". */
const char *mayfly_err_name(int err);

#ifdef __cplusplus
}
#endif

#endif /* MAYFLY_ERROR_H */
