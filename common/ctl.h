/*
 * The control connection: one blocking Thrift client of the directory over
 * MfFrameTransport (compact protocol, TCP_NODELAY, MSG_NOSIGNAL, timeouts).
 * Shared by libmayfly and the memory server (neither links the other).
 *
 * Addresses. A ctl holds a list of directories ("a:9090,b:9090,c:9090",
 * IPv6 hosts in brackets): the replicas of one directory service, of which
 * one leads (docs/ha.md) and the others answer MAYFLY_ENOTLEADER, naming
 * the leader when they know it. The ctl talks to one of them at a time, its
 * target: the first that answered at mf_ctl_open, then whichever the calls
 * led it to.
 *
 * A call is a loop of attempts:
 *   mf_ctl_try_t t = MF_CTL_TRY_INIT;
 *   int rc;
 *   do {
 *     MayflyDirectoryIf *i;
 *     rc = mf_ctl_attempt(ctl, &t, &i);
 *     if (rc == 0) {
 *       gboolean ok = mayfly_directory_if_X(i, ..., &err, &gerr);
 *       rc = mf_ctl_end(ctl, ok, err, gerr);
 *     }
 *   } while (mf_ctl_retry(ctl, &t, rc));
 * or, the same in one expression, MF_CTL_CALL(ctl, X, args...). Outputs
 * the generated call fills (a pre-created struct, a list) are untouched by
 * an attempt that is retried: it failed before a reply arrived, or the
 * reply was only an error.
 *
 * The retry rule (mf_ctl_retry). The call has a deadline, timeout_ms from
 * its first attempt; each attempt gets what is left of it (its connect at
 * most connect_timeout_ms of that). An attempt is made again, while time is
 * left, when
 *   - the directory answered MAYFLY_ENOTLEADER: the request was not
 *     executed. The next attempt goes to the leader it named (which need not
 *     be in the list), else to the next address of the list;
 *   - nothing of the call was sent (the connect, or the handshake or login a
 *     new connection runs first, failed with MAYFLY_ECONNREFUSED,
 *     MAYFLY_ETIMEDOUT or MAYFLY_EIO), in a ctl of more than one address or
 *     once this call followed an ENOTLEADER: the next address;
 *   - the request was sent and the connection failed before a whole reply
 *     came back (MAYFLY_EIO, MAYFLY_ETIMEDOUT), under the same condition:
 *     the next address. The request may then run twice; the mutating calls
 *     carry a request id (mf_ctl_request_id) by which the directory answers
 *     a repeat with the first outcome.
 * After as many failed attempts in a row as the call has addresses (the
 * list, plus the leader it was told of), it pauses (50 ms, doubling to
 * 200 ms) so that an election in progress costs no busy loop. So a ctl of
 * one address that is never told MAYFLY_ENOTLEADER makes each call once,
 * exactly as a ctl without a list: a sent request is never resent. A call
 * that gives up after several attempts says in mf_last_error() which
 * directories it tried and why the last one failed.
 *
 * mf_ctl_attempt locks and (re)connects if the last call broke the
 * connection or the directory closed it since (checked with a 0-timeout
 * poll before every request, so a connection closed while idle is replaced
 * transparently). mf_ctl_end maps the outcome to a MAYFLY_E* code, records
 * the message for mayfly_last_error(), frees err/gerr, and unlocks. A reply
 * frame longer than the transport's limit (64 MiB) fails the call with
 * MAYFLY_EIO before anything is allocated, and a frame's storage grows only
 * as its bytes arrive.
 *
 * Locks, in order: ctl->lock (one attempt at a time: held from
 * mf_ctl_attempt to mf_ctl_end, across the call's blocking I/O; not held in
 * mf_ctl_retry's pause) -> ctl->fd_lock (the socket number and the target's
 * name, so mf_ctl_interrupt and mf_ctl_address work from another thread
 * without waiting for the call). mf_ctl_interrupt takes only fd_lock.
 */
#ifndef MAYFLY_CTL_H
#define MAYFLY_CTL_H

#include <glib.h>
#include <stdint.h>
#include <mayfly_directory.h>

typedef struct mf_ctl mf_ctl_t;

/* One call's attempts (see above); MF_CTL_TRY_INIT before the first. */
typedef struct mf_ctl_try {
  int64_t deadline_us; /* monotonic; 0 until the first attempt */
  int attempts;
  int failures;        /* failed attempts since the last pause */
  int pause_ms;        /* the next pause */
  int followed;        /* this call was told MAYFLY_ENOTLEADER */
  int sent;            /* the last attempt's request went out */
  int replied;         /* ... and a whole reply frame came back */
  char target[280];    /* the directory of the last attempt */
  char tried[512];     /* "a:1 (why), b:2 (why)" of the failed attempts */
} mf_ctl_try_t;
#define MF_CTL_TRY_INIT {0}

/* Parses a comma-separated list of "host:port" addresses (spaces around the
 * commas are ignored, a repeated address counts once; a host alone is not an
 * address, a port alone means 127.0.0.1) and connects to the first that
 * answers, trying each once in order. Returns 0, MAYFLY_EINVAL (an element
 * that is not an address; mf_last_error() names it), MAYFLY_ECONNREFUSED or
 * MAYFLY_ETIMEDOUT (none answered; mf_last_error() says why for each). */
int mf_ctl_open(const char *addresses, int timeout_ms, int connect_timeout_ms, mf_ctl_t **out);
void mf_ctl_close(mf_ctl_t *ctl);

/* The request id of one mutating call (mkdir, create_ns, remove, rename,
 * add_block, remove_block): the ctl's client id (random, nonzero, drawn at
 * mf_ctl_open) and the next of its sequence numbers (1, 2, ...). Take it
 * once per call, before the attempt loop, so that every resend of the call
 * carries the same pair. Thread-safe. */
void mf_ctl_request_id(mf_ctl_t *ctl, int64_t *client_id, int64_t *seq);

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

/* The target directory's "host:port" (brackets around an IPv6 host), into
 * buf. Thread-safe. */
void mf_ctl_address(mf_ctl_t *ctl, char *buf, size_t len);

/* Every address of the ctl as a list mf_ctl_open takes, the target first
 * (so that a second ctl opened with it reaches the same leader at once),
 * into buf. Thread-safe. */
void mf_ctl_addresses(mf_ctl_t *ctl, char *buf, size_t len);

/* Starts one attempt of a call (t: its state; NULL: a call of one attempt,
 * for callers that never resend). On 0, *iface is the generated client and
 * ctl->lock is held until mf_ctl_end. Otherwise the lock is released and the
 * error (the connect or the new connection's handshake failed; MAYFLY_ETIMEDOUT
 * when the call's deadline has passed) goes to mf_ctl_retry. */
int mf_ctl_attempt(mf_ctl_t *ctl, mf_ctl_try_t *t, MayflyDirectoryIf **iface);

/* mf_ctl_attempt(ctl, NULL, iface): one attempt, no resend. The target still
 * moves to the leader a MAYFLY_ENOTLEADER names, for the next call. */
int mf_ctl_begin(mf_ctl_t *ctl, MayflyDirectoryIf **iface);

/* Ends the attempt mf_ctl_attempt started: maps the outcome to 0 or a
 * MAYFLY_E* code, records the message, takes the leader a MAYFLY_ENOTLEADER
 * names as the ctl's target (the next address when it names none), frees
 * err and gerr and unlocks. */
int mf_ctl_end(mf_ctl_t *ctl, gboolean ok, MayflyError *err, GError *gerr);

/* Whether the call whose last attempt ended with rc is made again (the rule
 * above); may pause first, without holding the ctl's lock. When it returns
 * 0 after more than one attempt and rc is the kind of failure it retries,
 * mf_last_error() lists the directories tried. */
int mf_ctl_retry(mf_ctl_t *ctl, mf_ctl_try_t *t, int rc);

/* One call with leader following and failover, as an expression: the
 * generated client's method `method` with the given arguments (the trailing
 * &err, &gerr are added), evaluating to 0 or a MAYFLY_E* code. */
#define MF_CTL_CALL(ctl, method, ...)                                                    \
  ({                                                                                     \
    mf_ctl_try_t try_ = MF_CTL_TRY_INIT;                                                 \
    int rc_;                                                                             \
    do {                                                                                 \
      MayflyDirectoryIf *iface_;                                                         \
      rc_ = mf_ctl_attempt((ctl), &try_, &iface_);                                       \
      if (rc_ == 0) {                                                                    \
        MayflyError *err_ = NULL;                                                        \
        GError *gerr_ = NULL;                                                            \
        gboolean ok_ = mayfly_directory_if_##method(iface_, __VA_ARGS__, &err_, &gerr_); \
        rc_ = mf_ctl_end((ctl), ok_, err_, gerr_);                                       \
      }                                                                                  \
    } while (mf_ctl_retry((ctl), &try_, rc_));                                           \
    rc_;                                                                                 \
  })

/* Registers a memory server's blocks (the call mayfly-memserver makes at
 * start-up). `incarnation` is the server's id for this run of its process
 * (0: none, nothing is ever marked lost); `zone` its --zone (NULL or "": none),
 * which placement spreads replicas over. *reply (may be NULL) receives the
 * directory's answer; unref it. Follows the leader and fails over as
 * MF_CTL_CALL does. Returns 0 or a MAYFLY_E* code. */
int mf_ctl_register(mf_ctl_t *ctl, const char *address, int32_t blocks, int64_t block_size,
                    int64_t gen_floor, uint64_t incarnation, const char *zone,
                    MayflyRegisterReply **reply);

/* Records a message for mf_last_error() (mayfly_last_error() in the public
 * API) on this thread. */
void mf_set_last_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The calling thread's message from the last failed call ("" if none). */
const char *mf_last_error(void);

#endif /* MAYFLY_CTL_H */
