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
 *
 * Everything here runs on the loop thread.
 */
#ifndef MAYFLY_MS_INTERNAL_H
#define MAYFLY_MS_INTERNAL_H

#include <glib.h>
#include <stdint.h>
#include <uv.h>

#include "common/wire.h"
#include "memserver/control.h"
#include "memserver/publish.h"
#include "memserver/repart.h"
#include "memserver/server.h"
#include "memserver/store.h"

typedef struct conn conn_t;

struct ms_server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  store_t *store;
  ms_control_t *ctl;
  uint32_t max_payload;
  int64_t max_connections;
  int64_t conns_open;
  GList *conns;
  GHashTable *parked; /* block index -> GQueue of parked_t * awaiting check_block */
  ms_publisher_t *pub;
  GQueue awaiting;    /* awaiting_t *: replies waiting for their events to be published */
  int stopping;
  /* repartitions */
  char *directory;
  mf_pool_t *rp_pool;     /* connections to other memory servers */
  GHashTable *rp_retry;   /* block indices to look at again */
  uv_timer_t rp_timer;
  int rp_jobs;            /* worker jobs not yet completed */
  int closed;             /* the listener is closed: free once rp_jobs is 0 */
};

struct conn {
  uv_tcp_t tcp;
  ms_server_t *srv;
  GList *link;
  char peer[80];
  uint8_t *buf;
  size_t len, cap;
  int reading;
  int closing;
  int refs;          /* the open connection + each parked request */
  GByteArray *out;   /* replies not yet handed to uv_write */
  GList *waiters;    /* waiter_t * of this connection's waiting pops */
};

typedef struct {
  conn_t *c;
  uint8_t *frame;
  size_t len;
} parked_t;

typedef struct {
  uv_timer_t timer;
  conn_t *c;
  store_block_t *b;
  wire_hdr_t req;
} waiter_t;

typedef struct {
  uv_write_t req;
  GByteArray *data;
} write_req_t;

/* The reply to a write on a watched block, sent once its event (and every
 * event before it) has been published (publish.h). Holds a reference on
 * its connection. */
typedef struct {
  conn_t *c;
  GByteArray *bytes;
  uint64_t upto; /* the publisher's event id */
} awaiting_t;


/* server.c */
/* Drops one reference; the last frees the connection. */
void ms__conn_unref(conn_t *c);
/* Hands the replies gathered so far to one write. */
void ms__flush(conn_t *c);
void ms__reply_header(const wire_hdr_t *req, int status, uint16_t flags, uint64_t a0,
                      uint64_t a1, uint32_t a2, uint32_t plen, uint8_t out[WIRE_HEADER_SIZE]);
/* Queues a reply to req (payload copied, or sent from block memory at once). */
void ms__reply(conn_t *c, const wire_hdr_t *req, int status, uint16_t flags, uint64_t a0,
               uint64_t a1, uint32_t a2, const void *payload, uint32_t plen);
void ms__reply_status(conn_t *c, const wire_hdr_t *req, int status);
/* Frees the server once its listener is closed and no worker job is left. */
void ms__server_free(ms_server_t *s);

/* handlers.c */
/* Serves one complete frame. can_park is 0 when replaying parked requests
 * after the directory answered: what is still unknown then is stale. */
void ms__handle(conn_t *c, const wire_hdr_t *h, const uint8_t *frame, size_t flen, int can_park);

/* defer.c */
void ms__reply_published(conn_t *c, const store_block_t *b, int kind, const void *key,
                         size_t klen, int64_t offset, int64_t length, const wire_hdr_t *req,
                         uint16_t flags, uint64_t a0, const void *payload, uint32_t plen);
void ms__release_published(ms_server_t *s, int all);
void ms__on_published(uv_async_t *a);
void ms__park(conn_t *c, uint32_t index, const uint8_t *frame, size_t len);
void ms__hold(conn_t *c, store_block_t *b, const uint8_t *frame, size_t len);
void ms__replay_held(store_block_t *b, int status);
void ms__replay_parked(ms_server_t *s, int32_t index, int status);
/* The directory says generation `generation` of block `index` is lost:
 * answers the requests parked for it MAYFLY_ELOST (MAYFLY_EMOVED for those
 * naming another, stale, generation). */
void ms__replay_parked_lost(ms_server_t *s, int32_t index, int64_t generation);

/* waiters.c */
void ms__add_waiter(conn_t *c, store_block_t *b, const wire_hdr_t *h);
void ms__waiter_finish(waiter_t *w);
void ms__wake_all(store_block_t *b, int status);

/* resize.c */
void ms__rp_consider(ms_server_t *s, store_block_t *b, int full);
void ms__rp_scan(uv_timer_t *t);

/* ctlevents.c */
void ms__on_control_event(uv_async_t *a);

#endif /* MAYFLY_MS_INTERNAL_H */
