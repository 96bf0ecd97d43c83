/*
 * Data-plane connections of a client: one TCP connection per memory server,
 * shared by every namespace and thread of the client, with many requests in
 * flight (pipelined; replies matched by request id).
 *
 * Sending is serialised by a mutex. Replies are read by whichever waiting
 * thread holds the connection's "leader" role (leader/follower): it reads and
 * dispatches every reply that arrives, and hands the role to another waiter
 * when its own call completes, so a reply reaches its caller without a hop
 * through a reader thread. A call is started (sent), then
 * waited for, so a caller can start several calls on several servers and
 * wait for all of them: that is how a read spanning blocks goes out in
 * parallel. Each wait has a deadline; a connection that breaks fails every
 * call in flight on it with MAYFLY_EIO, and the next call reconnects.
 */
#ifndef MAYFLY_CLIENT_CONN_H
#define MAYFLY_CLIENT_CONN_H

#include <glib.h>
#include <stdint.h>

#include "common/wire.h"

typedef struct mf_conn mf_conn_t;
typedef struct mf_pool mf_pool_t;

/* One request and, once done, its reply. The caller owns it (stack is fine)
 * and must not touch it between mf_call_start and mf_call_wait. */
typedef struct mf_call {
  wire_hdr_t req;
  const void *p1; /* payload, in two pieces (key and value) */
  size_t l1;
  const void *p2;
  size_t l2;
  void *into;     /* optional: reply payload copied here if it fits in into_cap */
  size_t into_cap;
  /* results */
  int done;
  int status;     /* transport error, else the reply's status */
  wire_hdr_t rep;
  uint8_t *payload; /* reply payload when not copied `into` (g_free) */
  uint32_t plen;
  mf_conn_t *conn;
  int receiving; /* the reader is copying the payload: the call cannot time out now */
  GCond cond;    /* signalled when the call completes */
} mf_call_t;

mf_pool_t *mf_pool_new(int connect_timeout_ms);
/* Closes every connection; calls in flight fail with MAYFLY_EIO. */
void mf_pool_free(mf_pool_t *p);

/* Sends a call to the memory server at `address` (connecting if needed).
 * Sets call->req.request_id. Returns 0, or an error (the call is then done
 * with that status and needs no wait). */
int mf_call_start(mf_pool_t *p, const char *address, mf_call_t *call);

/* Sends n calls to one memory server with a single system call (a batch
 * pipelined on one connection). Same contract as mf_call_start per call. */
int mf_calls_start(mf_pool_t *p, const char *address, mf_call_t *const *calls, size_t n);

/* Waits until the call completes or the deadline (g_get_monotonic_time()
 * microseconds) passes. Returns call->status (MAYFLY_ETIMEDOUT on deadline).
 * Afterwards free call->payload with g_free. */
int mf_call_wait(mf_call_t *call, int64_t deadline_us);

#endif /* MAYFLY_CLIENT_CONN_H */
