/*
 * Internals of the memory server's loop, shared by its modules: the server
 * and connection structures and the ms__ functions each module offers.
 *
 *   server.c     listener, connection I/O, replies, start and stop
 *   handlers.c   serving one frame (file, queue, kv, migrate)
 *   defer.c      held, parked and awaiting-publication requests
 *   waiters.c    pops waiting for a push
 *   resize.c     the loop side of kv splits and merges
 *   ctlevents.c  events from the control thread
 *   capcheck.c   the capability a request carries (no loop state of its own)
 *   chain.c      chain replication: roles, CHAIN_FWD, reconfiguration (chain.h)
 *   link.c       links to other memory servers (link.h)
 *   replcopy.c   re-replication: the tail's copy driver, the joining block's receiver
 *
 * Everything here runs on the loop thread.
 */
#ifndef MAYFLY_MS_INTERNAL_H
#define MAYFLY_MS_INTERNAL_H

#include <glib.h>
#include <stdint.h>
#include <uv.h>

#include "common/auth.h"
#include "common/netserver.h"
#include "common/wire.h"
#include "memserver/capcheck.h"
#include "memserver/chain.h"
#include "memserver/control.h"
#include "memserver/publish.h"
#include "memserver/repart.h"
#include "memserver/replcopy.h"
#include "memserver/server.h"
#include "memserver/store.h"

typedef struct conn conn_t;

struct ms_server {
  uv_loop_t *loop;
  mf_net_server_t *net; /* sockets, buffers, back-pressure, timeouts (common/netserver.h) */
  store_t *store;
  ms_control_t *ctl;
  /* The cluster key (--cluster-key-file): has_key 0 means none, and
   * capabilities are not checked. The id the directory gave this server
   * (what a capability's server_id must be) is ms__server_id(): the last
   * ms_control_server_id(ctl) that was not 0, so that capabilities stay
   * good while the server registers again after a directory outage. */
  int has_key;
  uint8_t key[MF_KEY_SIZE];
  void (*on_fatal)(void *ud); /* ms_server_config_t */
  void *fatal_ud;
  uint32_t max_payload;
  GHashTable *parked; /* block index -> GQueue of parked_t * awaiting check_block */
  ms_publisher_t *pub;
  GQueue awaiting;    /* awaiting_t *: replies waiting for their events to be published */
  int stopping;
  /* Bounds on requests that wait (ms_server_config_t). */
  uint64_t deferred_max, deferred_total_max; /* parked and held copies, bytes */
  uint64_t deferred_total;
  int64_t pops_max, pops_total_max;          /* waiting pops */
  int64_t pops_total;
  GQueue deferred_blocked; /* conn_t * not served until parked or held requests are released */
  /* repartitions */
  char *directory;
  mf_pool_t *rp_pool;     /* connections to other memory servers */
  GHashTable *rp_retry;   /* block indices to look at again */
  uv_timer_t rp_timer;
  int rp_jobs;            /* worker jobs not yet completed */
  int closed;             /* the connections are closed: free once rp_jobs is 0 */
  int rp_timer_closed;
  /* Capabilities (capcheck.h), checked only with the cluster key. */
  ms_capcheck_stats_t caps;
  uint32_t cap_server_id; /* the last id the directory gave (kept while re-registering) */
  uint64_t wall_at;       /* uv_now() when wall_ms was read */
  int64_t wall_ms;        /* the wall clock, read once per loop iteration (ms__wall_ms) */
  /* Replication (chain.c). */
  GHashTable *peers;           /* address -> ms_link_t *: links to other memory servers */
  ms_dedup_budget_t dedup_budget;
  uint32_t dedup_max;
  int64_t hb_timeout_ms;       /* the directory's heartbeat timeout (0: no liveness guard) */
  int64_t live_at_us;          /* g_get_monotonic_time() at which the call behind the last
                                  MS_EV_LIVE was sent (0: never) */
  GHashTable *chain_dirty;     /* block indices with writes waiting to be (re)forwarded */
  uv_timer_t chain_timer;
  int chain_timer_closed;
  struct ms_replcopy *replcopy; /* re-replication (replcopy.c) */
  ms_chain_copy_hook_t copy_hook; /* ms_chain_set_copy_hook (NULL: none) */
};

/* A replicated write executed with its reply kept rather than sent
 * (conn_t.capture, chain.c): what the handlers answered, and whether they
 * would have held, or made wait, the request instead (nothing applied). */
typedef struct ms_capture {
  int replied;
  ms_dedup_reply_t reply; /* payload owned */
  int held, waited;
  int ev_kind; /* the data event the write makes on a watched block (0: none) */
  uint8_t *ev_key;
  uint32_t ev_klen;
  int64_t ev_offset, ev_length;
} ms_capture_t;

/* A data connection: the layer's part first (sockets, buffers, refs; the
 * open connection and each parked, held, awaiting or waiting request hold a
 * reference), then the memory server's. */
struct conn {
  mf_net_conn_t net;
  ms_server_t *srv;
  GQueue waiters;        /* waiter_t * of this connection's waiting pops */
  uint64_t deferred;     /* bytes of this connection's parked and held copies */
  GList blocked_link;    /* in srv->deferred_blocked while blocked there */
  int blocked;
  int serving;           /* a frame is being served (from the input buffer, or replayed) */
  int retry;             /* its reply did not fit: keep the frame (ms__reply_fits) */
  wire_hdr_t hdr;        /* the header of the frame the layer is serving */
  ms_capcache_t *caps;   /* verified capabilities (capcheck.h); NULL until the first */
  ms_capture_t *capture; /* replies are kept here, not sent (chain.c); NULL: sent */
};

typedef struct {
  conn_t *c;
  uint8_t *frame;
  size_t len;
} parked_t;

/* A waiting pop, linked from its block's queue (b->waiters) and its
 * connection's (c->waiters) through its own links, so it leaves both in O(1). */
typedef struct {
  uv_timer_t timer;
  conn_t *c;
  store_block_t *b;
  wire_hdr_t req;
  uint8_t *frame; /* replicated blocks: the pop's frame, served again once a push commits */
  size_t flen;
  GList block_link, conn_link;
  int done;
} waiter_t;

/* The reply to a write on a watched block, sent once its event (and every
 * event before it) has been published (publish.h). Holds a reference on
 * its connection. */
typedef struct {
  conn_t *c;
  GByteArray *bytes;
  uint64_t upto;   /* the publisher's event id */
  size_t reserved; /* reply and event bytes counted in c's reply backlog */
} awaiting_t;


/* server.c */
/* Drops one reference; the last frees the connection. */
void ms__conn_unref(conn_t *c);
/* Hands the replies gathered so far to the socket (mf_net_flush). */
void ms__flush(conn_t *c);
/* Whether a reply of n payload bytes fits c's reply backlog now
 * (mf_net_fits). Called by the handlers of reads (no side effect until
 * served) before serving: when it returns 0 the handler returns without
 * replying and the layer keeps the frame buffered until the backlog drains
 * (a replayed request is answered MAYFLY_EMOVED instead, defer.c). Always 1
 * outside the serving of a frame. */
int ms__reply_fits(conn_t *c, uint64_t n);
/* Wakes the connections blocked on the parked/held caps (some were released). */
void ms__deferred_released(ms_server_t *s);
void ms__reply_header(const wire_hdr_t *req, int status, uint16_t flags, uint64_t a0,
                      uint64_t a1, uint32_t a2, uint32_t plen, uint8_t out[WIRE_HEADER_SIZE]);
/* Queues a reply to req (payload copied, or sent from block memory at once). */
void ms__reply(conn_t *c, const wire_hdr_t *req, int status, uint16_t flags, uint64_t a0,
               uint64_t a1, uint32_t a2, const void *payload, uint32_t plen);
void ms__reply_status(conn_t *c, const wire_hdr_t *req, int status);
/* Frees the server once its listener is closed and no worker job is left. */
void ms__server_free(ms_server_t *s);
/* The wall clock in ms since the epoch, read at most once per loop
 * iteration (when uv_now() moved): what capability expiries are checked
 * against. */
int64_t ms__wall_ms(ms_server_t *s);
/* The id the directory gave this server, or the last one it gave while
 * the server registers again (0 before the first registration). */
uint32_t ms__server_id(ms_server_t *s);

/* handlers.c */
/* Applies one request to block b (kind checked, capability passed). */
void ms__apply(conn_t *c, store_block_t *b, const wire_hdr_t *h, const uint8_t *payload,
               const uint8_t *frame, size_t flen);
/* Serves one complete frame. can_park is 0 when replaying parked requests
 * after the directory answered: what is still unknown then is stale. */
void ms__handle(conn_t *c, const wire_hdr_t *h, const uint8_t *frame, size_t flen, int can_park);

/* defer.c */
void ms__reply_published(conn_t *c, const store_block_t *b, int kind, const void *key,
                         size_t klen, int64_t offset, int64_t length, const wire_hdr_t *req,
                         uint16_t flags, uint64_t a0, const void *payload, uint32_t plen);
/* Sends the replies whose events the directory took, each connection's in
 * one write. */
void ms__release_published(ms_server_t *s);
/* Frees every held reply without sending it (the server stops: their
 * events will never be numbered, so their writes are never acknowledged;
 * the clients see their connections close). */
void ms__drop_published(ms_server_t *s);
void ms__on_published(uv_async_t *a);
/* Sends bytes (a whole reply) on c once event `id` and every one before it
 * is published (as ms__reply_published's replies). */
void ms__send_when_published(conn_t *c, uint64_t id, const uint8_t *bytes, size_t len);
void ms__park(conn_t *c, uint32_t index, const uint8_t *frame, size_t len);
void ms__hold(conn_t *c, store_block_t *b, const uint8_t *frame, size_t len);
void ms__replay_held(store_block_t *b, int status);
void ms__replay_parked(ms_server_t *s, int32_t index, int status);
/* The directory says generation `generation` of block `index` is lost:
 * answers the requests parked for it MAYFLY_ELOST (MAYFLY_EMOVED for those
 * naming another, stale, generation). */
void ms__replay_parked_lost(ms_server_t *s, int32_t index, int64_t generation);

/* waiters.c */
/* Makes a pop wait on b up to h->arg0 ms; answers MAYFLY_EAGAIN at once when
 * the connection or the server already has its cap of waiting pops. */
void ms__add_waiter(conn_t *c, store_block_t *b, const wire_hdr_t *h);
/* The same for a replicated block: the waiter keeps the frame, and when a
 * push commits, ms__wake_replicated serves the oldest waiter's frame again
 * (a pop of its own, numbered and forwarded like any write). */
void ms__add_waiter_frame(conn_t *c, store_block_t *b, const wire_hdr_t *h,
                          const uint8_t *frame, size_t flen);
void ms__wake_replicated(store_block_t *b);
void ms__waiter_finish(waiter_t *w);
void ms__wake_all(store_block_t *b, int status);

/* resize.c */
void ms__rp_consider(ms_server_t *s, store_block_t *b, int full);
void ms__rp_scan(uv_timer_t *t);

/* chain.c */
void ms__chain_start(ms_server_t *s, const ms_server_config_t *cfg);
void ms__chain_stop(ms_server_t *s);
/* Serves what a replicated block does differently (roles, dedup,
 * forwarding, the liveness guard): returns 1 when the request was handled
 * (answered, or waiting), 0 when the ordinary path serves it (reads at the
 * tail, BLOCK_STAT). */
int ms__chain_handle(conn_t *c, store_block_t *b, const wire_hdr_t *h, const uint8_t *frame,
                     size_t flen);
/* Serves a WIRE_OP_CHAIN_FWD frame from a predecessor. */
void ms__chain_fwd_in(conn_t *c, const wire_hdr_t *h, const uint8_t *frame, size_t flen,
                      int can_park);
/* check_block said this of b (e: a VERIFIED event at b's generation). */
void ms__chain_update(ms_server_t *s, store_block_t *b, const ms_event_t *e);
/* b changes owner or is released: its chain state goes, and everyone
 * waiting on it is answered `status`. */
void ms__chain_drop(ms_server_t *s, store_block_t *b, int status);
/* A heartbeat (or registration) sent at sent_us (g_get_monotonic_time)
 * succeeded: replicated blocks are served until timeout_ms after it. */
void ms__chain_live(ms_server_t *s, int64_t timeout_ms, int64_t sent_us);
/* Whether b may ask for a repartition (not replicated, or its head). */
int ms__chain_may_repartition(const store_block_t *b);
/* The head of b gave slots [lo, hi) away (a committed split or merge):
 * forwards KV_DROP_RANGE down the chain. */
void ms__chain_drop_range(ms_server_t *s, store_block_t *b, int64_t lo, int64_t hi);

/* ctlevents.c */
void ms__on_control_event(uv_async_t *a);

#endif /* MAYFLY_MS_INTERNAL_H */
