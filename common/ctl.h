/*
 * The control connection: one blocking Thrift client of the directory over
 * MfFrameTransport (compact protocol, TCP_NODELAY, MSG_NOSIGNAL, timeouts).
 * Shared by libmayfly and the memory server (neither links the other).
 *
 * A call brackets the generated client:
 *   MayflyDirectoryIf *i; int rc = mf_ctl_begin(ctl, &i); if (rc) return rc;
 *   gboolean ok = mayfly_directory_if_X(i, ..., &err, &gerr);
 *   return mf_ctl_end(ctl, ok, err, gerr);
 * mf_ctl_begin locks and (re)connects if the last call broke the connection
 * or the directory closed it since (checked with a 0-timeout poll before
 * every request, so a connection closed while idle is replaced
 * transparently; a request that was sent is never resent). mf_ctl_end maps
 * the outcome to a MAYFLY_E* code, records the message for
 * mayfly_last_error(), frees err/gerr, and unlocks. Each call, its send and
 * its reply together, takes at most timeout_ms (MAYFLY_ETIMEDOUT after);
 * a reply frame longer than the transport's limit (64 MiB) fails the call
 * with MAYFLY_EIO before anything is allocated, and a frame's storage grows
 * only as its bytes arrive.
 *
 * Locks, in order: ctl->lock (one call at a time: held from mf_ctl_begin to
 * mf_ctl_end, across the call's blocking I/O) -> ctl->fd_lock (the socket
 * number, so mf_ctl_interrupt can shut it down from another thread without
 * waiting for the call). mf_ctl_interrupt takes only fd_lock.
 */
#ifndef MAYFLY_CTL_H
#define MAYFLY_CTL_H

#include <glib.h>
#include <stdint.h>
#include <mayfly_directory.h>

typedef struct mf_ctl mf_ctl_t;

/* Parses "host:port" and connects. Returns 0, MAYFLY_EINVAL,
 * MAYFLY_ECONNREFUSED or MAYFLY_ETIMEDOUT. */
int mf_ctl_open(const char *address, int timeout_ms, int connect_timeout_ms, mf_ctl_t **out);
void mf_ctl_close(mf_ctl_t *ctl);

/* What every connection presents before its first call, from the next call
 * on: with key (MF_KEY_SIZE bytes; NULL: none) the cluster handshake
 * (common/auth.h), with token (NULL or "": none) a login as that tenant.
 * A handshake that fails fails the call that triggered it (MAYFLY_EPERM for
 * a key or token the directory refuses, with the reason in
 * mf_last_error()); the next call tries again on a new connection. */
void mf_ctl_set_auth(mf_ctl_t *ctl, const char *token, const uint8_t *key);

/* Breaks the connection from another thread: a call in progress fails (with
 * MAYFLY_EIO) and every later call too. For a thread blocked in a long
 * call (a watch) that must stop. */
void mf_ctl_interrupt(mf_ctl_t *ctl);

/* The directory's "host:port" (brackets around an IPv6 host), into buf. */
void mf_ctl_address(const mf_ctl_t *ctl, char *buf, size_t len);

int mf_ctl_begin(mf_ctl_t *ctl, MayflyDirectoryIf **iface);
int mf_ctl_end(mf_ctl_t *ctl, gboolean ok, MayflyError *err, GError *gerr);

/* Registers a memory server's blocks (the call mayfly-memserver makes at
 * start-up). `incarnation` is the server's id for this run of its process
 * (0: none, nothing is ever marked lost); `zone` its --zone (NULL or "": none),
 * which placement spreads replicas over. *reply (may be NULL) receives the
 * directory's answer; unref it. Returns 0 or a MAYFLY_E* code. */
int mf_ctl_register(mf_ctl_t *ctl, const char *address, int32_t blocks, int64_t block_size,
                    int64_t gen_floor, uint64_t incarnation, const char *zone,
                    MayflyRegisterReply **reply);

/* Records a message for mf_last_error() (mayfly_last_error() in the public
 * API) on this thread. */
void mf_set_last_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The calling thread's message from the last failed call ("" if none). */
const char *mf_last_error(void);

#endif /* MAYFLY_CTL_H */
