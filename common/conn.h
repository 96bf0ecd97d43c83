/*
 * Data-plane connections of a client: one TCP connection per memory server,
 * shared by every namespace and thread of the client, with many requests in
 * flight (pipelined; replies matched by request id). Used by libmayfly and by
 * memory servers for server-to-server moves.
 *
 * A call is started (sent), then waited for, so a caller can start several
 * calls on several servers and wait for all of them: that is how a read
 * spanning blocks goes out in parallel. Every call has a deadline that bounds
 * all of it: the dial, the wait for the send side, the send itself and the
 * wait for the reply. Past it the call gives MAYFLY_ETIMEDOUT, never a hang.
 *
 * Sending: requests of one connection go out one writer at a time (the send
 * token, below); a writer tries sendmsg first (MSG_DONTWAIT, one system call
 * per batch) and polls for POLLOUT only when the socket is full, until its
 * deadline. A send that times out before its first byte leaves the stream
 * intact (its calls fail alone); one that times out part-way leaves a torn
 * frame, so the connection is killed: its calls fail with MAYFLY_ETIMEDOUT,
 * every other call in flight on it with MAYFLY_EIO, and the next call dials
 * a new one.
 *
 * Receiving (leader/follower): whichever waiting thread holds the
 * connection's "leader" role reads and dispatches every reply that arrives
 * and hands the role to a waiting follower when its own call completes, so a
 * reply reaches its caller without a hop through a reader thread. The leader
 * receives in slices of at most 50 ms, so a follower whose reply payload is
 * arriving is let go at its own deadline (the rest of that payload is
 * discarded). The first receive of a wait goes out without a clock read
 * (a call just started is within its deadline), so a call whose reply never
 * comes may end up to one slice after its deadline. Every call states the
 * most reply payload it can get
 * (reply_max); a reply claiming more fails the call with MAYFLY_EPROTO and
 * kills the connection before anything is allocated.
 *
 * The fast path (one thread, nothing else in flight on its connection)
 * costs one sendmsg and one recv, one clock read when the caller passes its
 * own (mf_calls_start_at), no condition variable (the caller reads its own
 * reply as the leader, and only a sleeping follower is signalled), no
 * hashing (a lone pending call sits in a slot; the pool remembers the last
 * address used) and no allocation beyond the reply payload handed to the
 * caller.
 *
 * Dialing happens outside every lock: concurrent callers to one address share
 * one dial (a per-address "dialing" state), callers to other addresses never
 * wait for it, and each dial is bounded by the smaller of the connect timeout
 * and the call's deadline. A pooled connection idle for more than a second is
 * checked for a peer close (a 0-timeout poll for POLLRDHUP) before it is used
 * again and replaced when the server closed it; a busy one costs nothing.
 *
 * Locks and their order (take them left to right, never the other way):
 *   pool->lock  ->  conn->lock
 *   - pool->lock: the address table and each address's dialing state. Never
 *     held across a system call that can block.
 *   - conn->lock: the pending calls, dead, the send token (sending), the
 *     leader role, the list of waiting followers and every call's completion.
 *     Never held across a system call that can block.
 *   - The send token and the leader role are flags taken under conn->lock and
 *     held without it: the token's holder owns the socket's send side, the
 *     leader owns the receive side and the read buffer. A writer never waits
 *     for a reader and a reader never waits for a writer.
 */
#ifndef MAYFLY_COMMON_CONN_H
#define MAYFLY_COMMON_CONN_H

#include <glib.h>
#include <stdint.h>

#include "common/auth.h"
#include "common/wire.h"

typedef struct mf_conn mf_conn_t;
typedef struct mf_pool mf_pool_t;

/* One request and, once done, its reply. The caller owns it (stack is fine),
 * fills the request part, and must not touch it between mf_call_start and
 * mf_call_wait. */
typedef struct mf_call {
  wire_hdr_t req;
  const void *p1; /* payload, in two pieces (key and value) */
  size_t l1;
  const void *p2;
  size_t l2;
  /* The capability area sent between header and payload: cap_len bytes at
   * cap (0: none). With frame_key set (server-to-server frames), the send
   * appends a frame MAC, mf_frame_mac under frame_key over the header as
   * sent, those cap_len bytes and the payload, so the area is cap_len +
   * MF_MAC_SIZE bytes; the payload must then be in p1 alone (l2 == 0). */
  const uint8_t *cap;
  uint16_t cap_len;
  const uint8_t *frame_key;
  uint8_t frame_mac[MF_MAC_SIZE]; /* the send's */
  /* Requests to a replicated partition (issue 12): with has_seq set, the
   * send appends this sequence record (wire_seq_put) after the capability
   * and sets WIRE_F_SEQ in the header, so the area on the wire is cap_len +
   * WIRE_SEQ_SIZE bytes. Never with frame_key (server-to-server frames carry
   * no record). A call without it goes out byte for byte as before. */
  uint8_t seq[WIRE_SEQ_SIZE];
  uint8_t has_seq;
  void *into;     /* optional: reply payload copied here if it fits in into_cap */
  size_t into_cap;
  /* The most reply payload this call can legitimately get (FILE_READ: the
   * length asked; KV_GET, Q_POP, Q_PEEK: the partition's block size; other
   * operations: 0). A reply over it fails the call with MAYFLY_EPROTO. */
  uint32_t reply_max;
  /* results */
  int done;
  int status;     /* transport error, else the reply's status */
  wire_hdr_t rep;
  uint8_t *payload; /* reply payload when not copied `into` (g_free) */
  uint32_t plen;
  /* the pool's, under the connection's lock */
  mf_conn_t *conn;
  int waiting;           /* a follower in mf_call_wait */
  int64_t wait_deadline; /* its deadline, while waiting */
  GList wait_link;       /* in the connection's list of followers */
  GCond cond;            /* signalled when the call completes or may lead */
} mf_call_t;

mf_pool_t *mf_pool_new(int connect_timeout_ms);
/* Closes every connection. No call may be in progress. Accepts NULL. */
void mf_pool_free(mf_pool_t *p);

/* Sends a call to the memory server at `address` (dialing if needed), all of
 * it by deadline_us (g_get_monotonic_time() microseconds). Sets
 * call->req.request_id and payload_len. Returns 0, or an error
 * (MAYFLY_ETIMEDOUT, MAYFLY_ECONNREFUSED, MAYFLY_EIO, MAYFLY_EINVAL). Either
 * way the caller then calls mf_call_wait, which returns at once for a call
 * that failed to start (a batch sent in part may still be finishing the
 * reply of one of its calls). */
int mf_call_start(mf_pool_t *p, const char *address, mf_call_t *call, int64_t deadline_us);

/* Sends n calls to one memory server with a single system call when the
 * socket has room (a batch pipelined on one connection). Same contract as
 * mf_call_start per call. */
int mf_calls_start(mf_pool_t *p, const char *address, mf_call_t *const *calls, size_t n,
                   int64_t deadline_us);

/* As mf_calls_start, for a caller that has just read the clock: now_us is
 * that read (g_get_monotonic_time()), taken as the time of the send and of
 * the idle check, so the call costs no clock read of its own. */
int mf_calls_start_at(mf_pool_t *p, const char *address, mf_call_t *const *calls, size_t n,
                      int64_t now_us, int64_t deadline_us);

/* Waits until the call completes or deadline_us passes. Returns call->status
 * (MAYFLY_ETIMEDOUT on deadline, MAYFLY_EIO when the connection broke,
 * MAYFLY_EPROTO for a reply over reply_max or a broken stream) and records a
 * message for mf_last_error() on failure. Afterwards free call->payload with
 * g_free. Any thread may wait for a call; one thread per call. */
int mf_call_wait(mf_call_t *call, int64_t deadline_us);

#endif /* MAYFLY_COMMON_CONN_H */
