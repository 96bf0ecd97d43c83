/*
 * The memory server's data plane on libuv (see server.h).
 */
#include "memserver/server.h"

#include <stdio.h>
#include <string.h>

#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "common/uvnet.h"
#include "common/wire.h"
#include "memserver/control.h"
#include "memserver/publish.h"
#include "memserver/repart.h"

#define READ_CHUNK (256u << 10)
#define OUT_HIGH_WATER (64u << 20)
#define OUT_LOW_WATER (8u << 20)
#define POP_WAIT_MAX_MS 600000
#define KEY_MAX (64u << 10)
#define ZERO_COPY_MIN (64u << 10)
#define KV_SLOTS 65536 /* the slots of a kv namespace (NS_KV_SLOTS) */
#define RP_SCAN_MS 20  /* how often blocks waiting to retry a repartition are looked at */

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

static void conn_unref(conn_t *c) {
  if (--c->refs > 0) return;
  g_free(c->buf);
  g_byte_array_free(c->out, TRUE);
  g_free(c);
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *out) {
  conn_t *c = h->data;
  if (c->cap - c->len < READ_CHUNK) {
    size_t cap = c->cap ? c->cap * 2 : READ_CHUNK * 2;
    while (cap - c->len < READ_CHUNK) cap *= 2;
    c->buf = g_realloc(c->buf, cap);
    c->cap = cap;
  }
  *out = uv_buf_init((char *)c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void write_cb(uv_write_t *req, int status) {
  write_req_t *w = (write_req_t *)req;
  conn_t *c = req->handle->data;
  g_byte_array_free(w->data, TRUE);
  g_free(w);
  if (status < 0 || c->closing) return;
  if (!c->reading && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) < OUT_LOW_WATER) {
    c->reading = 1;
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
  }
}

/* Hands the replies gathered so far to one uv_write. */
static void flush(conn_t *c) {
  if (c->closing || c->out->len == 0) return;
  write_req_t *w = g_new0(write_req_t, 1);
  w->data = c->out;
  c->out = g_byte_array_new();
  uv_buf_t b = uv_buf_init((char *)w->data->data, w->data->len);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_cb) != 0) {
    g_byte_array_free(w->data, TRUE);
    g_free(w);
    return;
  }
  if (c->reading && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > OUT_HIGH_WATER) {
    c->reading = 0;
    uv_read_stop((uv_stream_t *)&c->tcp);
  }
}

static void reply_header(const wire_hdr_t *req, int status, uint16_t flags, uint64_t a0,
                         uint64_t a1, uint32_t a2, uint32_t plen, uint8_t out[WIRE_HEADER_SIZE]) {
  wire_hdr_t h = {.opcode = req->opcode,
                  .flags = (uint16_t)(flags | WIRE_F_REPLY),
                  .payload_len = plen,
                  .request_id = req->request_id,
                  .block_index = req->block_index,
                  .generation = req->generation,
                  .arg0 = a0,
                  .arg1 = a1,
                  .status = status,
                  .arg2 = a2};
  wire_encode(&h, out);
}

static void reply(conn_t *c, const wire_hdr_t *req, int status, uint16_t flags, uint64_t a0,
                  uint64_t a1, uint32_t a2, const void *payload, uint32_t plen) {
  if (c->closing) return;
  uint8_t hdr[WIRE_HEADER_SIZE];
  reply_header(req, status, flags, a0, a1, a2, plen, hdr);
  g_byte_array_append(c->out, hdr, WIRE_HEADER_SIZE);
  if (plen >= ZERO_COPY_MIN && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
    /* A large payload (a file read) goes to the socket straight from block
     * memory when the socket takes it now; only what it does not take is
     * copied. Nothing is left pointing at the block after this returns, so
     * a later write or release of the block cannot change what was sent. */
    uv_buf_t bufs[2] = {uv_buf_init((char *)c->out->data, c->out->len),
                        uv_buf_init((char *)payload, plen)};
    int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, 2);
    if (n > 0) {
      size_t sent = (size_t)n, head = c->out->len;
      if (sent < head) {
        g_byte_array_remove_range(c->out, 0, (guint)sent);
        g_byte_array_append(c->out, payload, plen);
      } else {
        g_byte_array_set_size(c->out, 0);
        g_byte_array_append(c->out, (const uint8_t *)payload + (sent - head),
                            (guint)(plen - (sent - head)));
      }
      return;
    }
  }
  if (plen > 0) g_byte_array_append(c->out, payload, plen);
}

static void reply_status(conn_t *c, const wire_hdr_t *req, int status) {
  reply(c, req, status, 0, 0, 0, 0, NULL, 0);
}

/* --- data events of watched blocks (publish.h) --- */

/* A write on watched block b succeeded: queues its data event and answers
 * `req` (status 0, the other fields as for reply()) once the event, and
 * every one before it, is published. Holds a reference on the connection. */
static void reply_published(conn_t *c, const store_block_t *b, int kind, const void *key,
                            size_t klen, int64_t offset, int64_t length, const wire_hdr_t *req,
                            uint16_t flags, uint64_t a0, const void *payload, uint32_t plen) {
  uint64_t id = ms_publisher_add(c->srv->pub, b->index, b->generation, kind, key, klen, offset,
                                 length);
  if (c->closing) return;
  awaiting_t *aw = g_new(awaiting_t, 1);
  aw->c = c;
  aw->upto = id;
  aw->bytes = g_byte_array_sized_new(WIRE_HEADER_SIZE + plen);
  uint8_t hdr[WIRE_HEADER_SIZE];
  reply_header(req, 0, flags, a0, 0, 0, plen, hdr);
  g_byte_array_append(aw->bytes, hdr, WIRE_HEADER_SIZE);
  if (plen > 0) g_byte_array_append(aw->bytes, payload, plen);
  c->refs++;
  g_queue_push_tail(&c->srv->awaiting, aw);
}

/* Sends the replies whose events are published (all of them when `all`),
 * each connection's in one write. */
static void release_published(ms_server_t *s, int all) {
  uint64_t done = all ? UINT64_MAX : ms_publisher_done(s->pub);
  GPtrArray *touched = g_ptr_array_new();
  awaiting_t *aw;
  while ((aw = g_queue_peek_head(&s->awaiting)) != NULL && aw->upto <= done) {
    g_queue_pop_head(&s->awaiting);
    if (!aw->c->closing) {
      g_byte_array_append(aw->c->out, aw->bytes->data, aw->bytes->len);
      if (touched->len == 0 || g_ptr_array_index(touched, touched->len - 1) != aw->c) {
        aw->c->refs++;
        g_ptr_array_add(touched, aw->c);
      }
    }
    g_byte_array_free(aw->bytes, TRUE);
    conn_unref(aw->c);
    g_free(aw);
  }
  for (guint i = 0; i < touched->len; i++) {
    conn_t *c = g_ptr_array_index(touched, i);
    flush(c);
    conn_unref(c);
  }
  g_ptr_array_free(touched, TRUE);
}

static void on_published(uv_async_t *a) {
  release_published(ms_publisher_data(a->data), 0);
}

/* --- waiting pops --- */

static void waiter_closed(uv_handle_t *h) {
  waiter_t *w = h->data;
  conn_unref(w->c);
  g_free(w);
}

/* Detaches a waiter from its block and connection and frees it. */
static void waiter_finish(waiter_t *w) {
  if (w->b->waiters != NULL) g_queue_remove(w->b->waiters, w);
  w->c->waiters = g_list_remove(w->c->waiters, w);
  uv_timer_stop(&w->timer);
  uv_close((uv_handle_t *)&w->timer, waiter_closed);
}

static void waiter_timeout(uv_timer_t *t) {
  waiter_t *w = t->data;
  reply_status(w->c, &w->req, MAYFLY_EAGAIN);
  flush(w->c);
  waiter_finish(w);
}

/* Answers every pop waiting on a block with `status` (the block changes owner). */
static void wake_all(store_block_t *b, int status) {
  waiter_t *w;
  while (b->waiters != NULL && (w = g_queue_peek_head(b->waiters)) != NULL) {
    reply_status(w->c, &w->req, status);
    flush(w->c);
    waiter_finish(w);
  }
}

static void add_waiter(conn_t *c, store_block_t *b, const wire_hdr_t *h) {
  waiter_t *w = g_new0(waiter_t, 1);
  w->c = c;
  w->b = b;
  w->req = *h;
  c->refs++;
  uv_timer_init(c->srv->loop, &w->timer);
  w->timer.data = w;
  if (b->waiters == NULL) b->waiters = g_queue_new();
  g_queue_push_tail(b->waiters, w);
  c->waiters = g_list_prepend(c->waiters, w);
  uint64_t ms = h->arg0 > POP_WAIT_MAX_MS ? POP_WAIT_MAX_MS : h->arg0;
  uv_timer_start(&w->timer, waiter_timeout, ms, 0);
}

/* --- request handling --- */

/* Keeps a copy of a request frame, in order, to serve later (replay). */
static void keep(GQueue *q, conn_t *c, const uint8_t *frame, size_t len) {
  parked_t *p = g_new(parked_t, 1);
  p->c = c;
  p->frame = g_memdup2(frame, len);
  p->len = len;
  c->refs++;
  g_queue_push_tail(q, p);
}

/* Parks a request for a block generation the server has not seen until the
 * directory says who owns it (replay_parked). */
static void park(conn_t *c, uint32_t index, const uint8_t *frame, size_t len) {
  ms_server_t *s = c->srv;
  GQueue *q = g_hash_table_lookup(s->parked, GUINT_TO_POINTER(index));
  if (q == NULL) {
    q = g_queue_new();
    g_hash_table_insert(s->parked, GUINT_TO_POINTER(index), q);
    ms_control_verify(s->ctl, (int32_t)index);
  }
  keep(q, c, frame, len);
}

/* Holds a request until the repartition of its block ends (replay_held). */
static void hold(conn_t *c, store_block_t *b, const uint8_t *frame, size_t len) {
  if (b->held == NULL) b->held = g_queue_new();
  keep(b->held, c, frame, len);
}

static void handle(conn_t *c, const wire_hdr_t *h, const uint8_t *frame, size_t flen,
                   int can_park);
static void rp_consider(ms_server_t *s, store_block_t *b, int full);

/* Serves kept requests again (status 0; what is still unknown then is
 * stale), or answers them all with `status`; frees the queue. */
static void replay(GQueue *q, int status) {
  parked_t *p;
  while ((p = g_queue_pop_head(q)) != NULL) {
    wire_hdr_t h;
    size_t flen;
    if (!p->c->closing && wire_parse(p->frame, p->len, UINT32_MAX, &h, &flen) == 0) {
      if (status != 0) {
        reply_status(p->c, &h, status);
      } else {
        handle(p->c, &h, p->frame, p->len, 0);
      }
      flush(p->c);
    }
    conn_unref(p->c);
    g_free(p->frame);
    g_free(p);
  }
  g_queue_free(q);
}

/* Serves the held requests again (status 0), or answers them all with
 * `status` (the block went away). */
static void replay_held(store_block_t *b, int status) {
  GQueue *q = b->held;
  if (q == NULL) return;
  b->held = NULL;
  replay(q, status);
}

/* The block kind an opcode works on; -1 for an opcode that does not exist. */
static int kind_of(uint8_t op) {
  switch (op) {
    case WIRE_OP_BLOCK_STAT:
      return STORE_FREE; /* any kind */
    case WIRE_OP_FILE_WRITE:
    case WIRE_OP_FILE_READ:
    case WIRE_OP_FILE_SIZE:
    case WIRE_OP_FILE_TRUNCATE:
      return STORE_FILE;
    case WIRE_OP_Q_PUSH:
    case WIRE_OP_Q_POP:
    case WIRE_OP_Q_PEEK:
    case WIRE_OP_Q_LEN:
      return STORE_QUEUE;
    case WIRE_OP_KV_PUT:
    case WIRE_OP_KV_GET:
    case WIRE_OP_KV_DEL:
    case WIRE_OP_KV_EXISTS:
    case WIRE_OP_KV_MIGRATE:
    case WIRE_OP_KV_MIGRATE_ABORT:
      return STORE_KV;
    default:
      return -1;
  }
}

/* Another memory server moves entries here (or takes them back). */
static void handle_migrate(conn_t *c, store_block_t *b, const wire_hdr_t *h,
                           const uint8_t *payload) {
  int64_t lo = (int64_t)h->arg0, hi = (int64_t)h->arg1;
  /* A block moving data of its own does not take any (the directory never
   * plans both at once; this guards against a confused peer). */
  if (h->arg0 >= KV_SLOTS || h->arg1 > KV_SLOTS || lo >= hi || b->rp_state > STORE_RP_PLANNING) {
    reply_status(c, h, MAYFLY_EINVAL);
    return;
  }
  if (h->opcode == WIRE_OP_KV_MIGRATE_ABORT) {
    store_kv_drop_range(b, lo, hi);
    if (b->range_hi == hi && b->range_lo < lo) b->range_hi = lo;
    if (b->range_lo == lo && b->range_hi > hi) b->range_lo = hi;
    reply_status(c, h, 0);
    return;
  }
  if (lo < b->range_lo || hi > b->range_hi) {
    /* A merge: the block takes over the adjacent slots of its neighbour. */
    if (b->range_hi == lo) {
      b->range_hi = hi;
    } else if (b->range_lo == hi) {
      b->range_lo = lo;
    } else {
      reply_status(c, h, MAYFLY_EINVAL);
      return;
    }
  }
  uint64_t count = 0;
  int rc = store_kv_migrate_in(c->srv->store, b, payload, h->payload_len, lo, hi, &count);
  reply(c, h, rc, 0, count, 0, 0, NULL, 0);
}

static void handle_kv(conn_t *c, store_block_t *b, const wire_hdr_t *h, const uint8_t *payload,
                      const uint8_t *frame, size_t flen) {
  store_t *st = c->srv->store;
  if (h->opcode == WIRE_OP_KV_MIGRATE || h->opcode == WIRE_OP_KV_MIGRATE_ABORT) {
    handle_migrate(c, b, h, payload);
    return;
  }
  uint32_t klen = h->opcode == WIRE_OP_KV_PUT ? h->arg2 : h->payload_len;
  if (klen > h->payload_len || klen > KEY_MAX) {
    reply_status(c, h, MAYFLY_EINVAL);
    return;
  }
  int rc = store_kv_check_slot(b, payload, klen);
  if (rc != 0) {
    reply_status(c, h, rc);
    return;
  }
  GHashTable *moving = NULL;
  if (b->rp_state >= STORE_RP_MOVING) {
    int64_t slot = wire_kv_slot(payload, klen);
    if (slot >= b->rp_lo && slot < b->rp_hi) {
      /* Being moved: reads are served from the set-aside copy while it is
       * sent; writes wait, and so does everything once the commit is asked
       * for (the target may be answering by then). */
      int read = h->opcode == WIRE_OP_KV_GET || h->opcode == WIRE_OP_KV_EXISTS;
      if (!read || b->rp_state == STORE_RP_COMMITTING) {
        hold(c, b, frame, flen);
        return;
      }
      moving = b->rp_moving;
    }
  }
  switch (h->opcode) {
    case WIRE_OP_KV_PUT: {
      rc = store_kv_put(st, b, payload, klen, payload + klen, h->payload_len - klen);
      if (rc == MAYFLY_EFULL) {
        /* Room is made by a split, now or after a short wait (partitions
         * busy); the put waits for it unless splitting was refused. */
        rp_consider(c->srv, b, 1);
        if (b->rp_state != STORE_RP_IDLE ||
            (b->rp_refused == 0 && b->range_hi - b->range_lo >= 2 &&
             g_hash_table_contains(c->srv->rp_retry, GINT_TO_POINTER(b->index)))) {
          hold(c, b, frame, flen);
          return;
        }
        if (b->rp_refused != 0) rc = b->rp_refused;
      }
      if (rc == 0 && b->watched) {
        reply_published(c, b, MS_EV_KIND_PUT, payload, klen, 0, klen, h, 0, 0, NULL, 0);
      } else {
        reply_status(c, h, rc);
      }
      if (rc == 0 && b->used * 100 > (uint64_t)b->high_wm * st->block_size) {
        rp_consider(c->srv, b, 0);
      }
      break;
    }
    case WIRE_OP_KV_GET: {
      GBytes *v = moving ? store_kv_get_in(moving, payload, klen) : store_kv_get(b, payload, klen);
      if (v == NULL) {
        reply_status(c, h, MAYFLY_ENOKEY);
      } else {
        gsize vlen;
        const void *vd = g_bytes_get_data(v, &vlen);
        reply(c, h, 0, 0, 0, 0, 0, vd, (uint32_t)vlen);
      }
      break;
    }
    case WIRE_OP_KV_DEL: {
      rc = store_kv_del(b, payload, klen);
      if (rc == 0 && b->watched) {
        reply_published(c, b, MS_EV_KIND_DELETE, payload, klen, 0, klen, h, 0, 0, NULL, 0);
      } else {
        reply_status(c, h, rc);
      }
      if (rc == 0 && b->used * 100 < (uint64_t)b->low_wm * st->block_size) {
        rp_consider(c->srv, b, 0);
      }
      break;
    }
    case WIRE_OP_KV_EXISTS: {
      GBytes *v = moving ? store_kv_get_in(moving, payload, klen) : store_kv_get(b, payload, klen);
      reply(c, h, 0, 0, v != NULL, 0, 0, NULL, 0);
      break;
    }
    default:
      reply_status(c, h, MAYFLY_EPROTO);
  }
}

static void handle_queue(conn_t *c, store_block_t *b, const wire_hdr_t *h,
                         const uint8_t *payload) {
  store_t *st = c->srv->store;
  uint16_t sealed = b->sealed ? WIRE_F_SEALED : 0;
  switch (h->opcode) {
    case WIRE_OP_Q_PUSH: {
      waiter_t *w = b->waiters ? g_queue_peek_head(b->waiters) : NULL;
      if (w != NULL && !b->sealed && b->watched) {
        /* Handed over to a waiting pop: a push and a pop happened. */
        reply_published(c, b, MS_EV_KIND_PUSH, NULL, 0, 0, h->payload_len, h, 0, 0, NULL, 0);
        reply_published(w->c, b, MS_EV_KIND_POP, NULL, 0, 0, h->payload_len, &w->req, 0, 0,
                        payload, h->payload_len);
        waiter_finish(w);
        break;
      }
      if (w != NULL && !b->sealed) {
        /* Someone is waiting on an empty segment: hand the item over. */
        reply(w->c, &w->req, 0, 0, 0, 0, 0, payload, h->payload_len);
        flush(w->c);
        waiter_finish(w);
        reply_status(c, h, 0);
        break;
      }
      int rc = store_queue_push(st, b, payload, h->payload_len);
      if (rc == 0 && b->watched) {
        reply_published(c, b, MS_EV_KIND_PUSH, NULL, 0, 0, h->payload_len, h,
                        b->sealed ? WIRE_F_SEALED : 0, 0, NULL, 0);
        break;
      }
      reply(c, h, rc, b->sealed ? WIRE_F_SEALED : 0, 0, 0, 0, NULL, 0);
      break;
    }
    case WIRE_OP_Q_POP: {
      store_item_t *it = store_queue_pop(b);
      if (it != NULL && b->watched) {
        reply_published(c, b, MS_EV_KIND_POP, NULL, 0, 0, it->len, h, sealed, 0, it->data,
                        it->len);
        g_free(it);
      } else if (it != NULL) {
        reply(c, h, 0, sealed, 0, 0, 0, it->data, it->len);
        g_free(it);
      } else if (b->sealed) {
        reply(c, h, MAYFLY_EMOVED, WIRE_F_SEALED, 0, 0, 0, NULL, 0);
      } else if (h->arg0 > 0) {
        add_waiter(c, b, h);
      } else {
        reply_status(c, h, MAYFLY_EAGAIN);
      }
      break;
    }
    case WIRE_OP_Q_PEEK: {
      const store_item_t *it = store_queue_peek(b);
      if (it != NULL) {
        reply(c, h, 0, sealed, 0, 0, 0, it->data, it->len);
      } else {
        reply(c, h, b->sealed ? MAYFLY_EMOVED : MAYFLY_EAGAIN, sealed, 0, 0, 0, NULL, 0);
      }
      break;
    }
    case WIRE_OP_Q_LEN:
      reply(c, h, 0, sealed, g_queue_get_length(b->items), 0, 0, NULL, 0);
      break;
    default:
      reply_status(c, h, MAYFLY_EPROTO);
  }
}

static void handle_file(conn_t *c, store_block_t *b, const wire_hdr_t *h,
                        const uint8_t *payload) {
  store_t *st = c->srv->store;
  switch (h->opcode) {
    case WIRE_OP_FILE_WRITE: {
      int rc = store_file_write(st, b, h->arg0, payload, h->payload_len);
      if (rc == 0 && h->payload_len > 0 && b->watched) {
        /* The offset in the file: the segment starts at range_lo. */
        reply_published(c, b, MS_EV_KIND_WRITE, NULL, 0, b->range_lo + (int64_t)h->arg0,
                        h->payload_len, h, 0, b->size, NULL, 0);
        break;
      }
      reply(c, h, rc, 0, b->size, 0, 0, NULL, 0);
      break;
    }
    case WIRE_OP_FILE_READ: {
      const uint8_t *data = NULL;
      uint64_t want = h->arg1 > c->srv->max_payload ? c->srv->max_payload : h->arg1;
      uint64_t n = store_file_read(b, h->arg0, want, &data);
      reply(c, h, 0, 0, b->size, 0, 0, data, (uint32_t)n);
      break;
    }
    case WIRE_OP_FILE_SIZE:
      reply(c, h, 0, 0, b->size, 0, 0, NULL, 0);
      break;
    case WIRE_OP_FILE_TRUNCATE:
      store_file_truncate(st, b, h->arg0);
      reply(c, h, 0, 0, b->size, 0, 0, NULL, 0);
      break;
    default:
      reply_status(c, h, MAYFLY_EPROTO);
  }
}

/* Serves one complete frame. can_park is 0 when replaying parked requests
 * after the directory answered: what is still unknown then is stale. */
static void handle(conn_t *c, const wire_hdr_t *h, const uint8_t *frame, size_t flen,
                   int can_park) {
  const uint8_t *payload = frame + WIRE_HEADER_SIZE + h->cap_len;
  if (h->opcode == WIRE_OP_PING) {
    reply_status(c, h, 0);
    return;
  }
  int k = kind_of(h->opcode);
  if (k < 0) {
    reply_status(c, h, MAYFLY_EPROTO); /* checked before the block: nothing else is looked at */
    return;
  }
  store_kind_t kind = (store_kind_t)k;
  store_block_t *b = NULL;
  int rc = store_lookup(c->srv->store, h->block_index, h->generation, kind, &b);
  if (rc == MAYFLY_EAGAIN) {
    if (can_park) {
      park(c, h->block_index, frame, flen);
    } else {
      reply_status(c, h, MAYFLY_EMOVED);
    }
    return;
  }
  if (rc != 0) {
    reply_status(c, h, rc);
    return;
  }
  switch (kind) {
    case STORE_FILE:
      handle_file(c, b, h, payload);
      break;
    case STORE_QUEUE:
      handle_queue(c, b, h, payload);
      break;
    case STORE_KV:
      handle_kv(c, b, h, payload, frame, flen);
      break;
    default: {
      uint64_t items = b->kind == STORE_QUEUE ? g_queue_get_length(b->items)
                       : b->kind == STORE_KV  ? g_hash_table_size(b->kv)
                                              : b->size;
      reply(c, h, 0, b->sealed ? WIRE_F_SEALED : 0, b->used, items, (uint32_t)b->kind, NULL, 0);
    }
  }
}

/* --- repartitions (the blocking steps are in repart.c) --- */

typedef struct {
  uv_work_t req;
  ms_server_t *srv;
  ms_repart_job_t *job;
  int step; /* STORE_RP_PLANNING, _MOVING (copy), _COMMITTING */
} rp_work_t;

static void rp_queue(ms_server_t *s, ms_repart_job_t *job, int step);

/* The block a job works on, if it is still that block and that job. */
static store_block_t *rp_block(ms_server_t *s, ms_repart_job_t *job) {
  store_block_t *b = &s->store->blocks[job->index];
  return (b->generation == job->generation && b->kind == STORE_KV && b->rp_job == job) ? b
                                                                                      : NULL;
}

/* Frees the server once its listener is closed and no worker job is left. */
static void server_free(ms_server_t *s) {
  if (!s->closed || s->rp_jobs > 0) return;
  g_hash_table_destroy(s->parked);
  mf_pool_free(s->rp_pool);
  g_free(s->directory);
  g_hash_table_destroy(s->rp_retry);
  g_free(s);
}

/* Looks at a kv block's fill and starts a split (above the high watermark,
 * or a put that did not fit) or a merge (under the low watermark). */
static void rp_consider(ms_server_t *s, store_block_t *b, int full) {
  store_t *st = s->store;
  if (b->kind != STORE_KV || b->rp_state != STORE_RP_IDLE || s->stopping) return;
  int split = full || b->used * 100 > (uint64_t)b->high_wm * st->block_size;
  int merge = !split && b->used * 100 < (uint64_t)b->low_wm * st->block_size &&
              !(b->range_lo == 0 && b->range_hi == KV_SLOTS);
  if (split && b->range_hi - b->range_lo < 2) {
    replay_held(b, 0); /* one slot cannot split: what waited for room gets "full" */
    return;
  }
  if (!split && !merge) return;
  int32_t id = ms_control_server_id(s->ctl);
  if (id == 0 || mf_now_ms() < b->rp_retry_ms) {
    g_hash_table_add(s->rp_retry, GINT_TO_POINTER(b->index));
    return;
  }
  b->rp_refused = 0;
  ms_repart_job_t *job = g_new0(ms_repart_job_t, 1);
  job->directory = s->directory;
  job->pool = s->rp_pool;
  job->server_id = id;
  job->index = b->index;
  job->generation = b->generation;
  job->merge = !split;
  job->split_at = b->range_lo + (b->range_hi - b->range_lo) / 2;
  job->block_size = st->block_size;
  job->used = b->used;
  job->low_wm = b->low_wm;
  job->started_us = g_get_monotonic_time();
  b->rp_job = job;
  b->rp_state = STORE_RP_PLANNING;
  rp_queue(s, job, STORE_RP_PLANNING);
}

static void rp_work(uv_work_t *req) {
  rp_work_t *w = req->data;
  switch (w->step) {
    case STORE_RP_PLANNING:
      ms_repart_plan(w->job);
      break;
    case STORE_RP_MOVING:
      ms_repart_copy(w->job);
      break;
    default:
      ms_repart_commit(w->job);
  }
}

/* The repartition is over (committed or not): the block serves again. */
static void rp_finish(ms_server_t *s, store_block_t *b, ms_repart_job_t *job, int committed) {
  if (b != NULL) {
    if (b->rp_moving != NULL && !committed) store_kv_restore(b, b->rp_moving);
    if (committed && job->merge) {
      /* All of it went to the neighbour; the directory frees this block. */
      store_release(s->store, b->index, b->generation);
    } else if (committed) {
      b->range_hi = job->lo;
      store_kv_uncharge(b, b->rp_charge);
    }
    b->rp_state = STORE_RP_IDLE;
    b->rp_moving = NULL;
    b->rp_job = NULL;
    b->rp_charge = 0;
    replay_held(b, 0);
    if (!committed || !job->merge) rp_consider(s, b, 0);
  }
  ms_repart_job_free(job);
}

static void rp_after(uv_work_t *req, int status) {
  rp_work_t *w = req->data;
  ms_server_t *s = w->srv;
  ms_repart_job_t *job = w->job;
  int step = w->step;
  g_free(w);
  s->rp_jobs--;
  store_block_t *b = s->stopping ? NULL : rp_block(s, job);
  const char *what = job->merge ? "merge" : "split";
  if (b == NULL) {
    /* The block went away (its namespace was removed) or the server stops:
     * nothing to hand back; a repartition the directory still holds is
     * rolled back there after its timeout. */
    ms_repart_job_free(job);
    if (s->stopping) server_free(s);
    return;
  }
  if (job->status != 0) {
    int rc = job->status;
    if (step == STORE_RP_PLANNING) {
      /* Refused: busy partitions (EAGAIN) are retried soon; no room or the
       * quota (EQUOTA, ENOSPC) make full puts fail with that reason for a while. */
      if (rc == MAYFLY_EQUOTA || rc == MAYFLY_ENOSPC || rc == MAYFLY_ENOSERVERS) {
        b->rp_refused = rc;
      }
      MF_DEBUG("block %d: %s refused: %s", b->index, what, job->why);
    } else {
      MF_WARN("block %d: %s rolled back: %s", b->index, what, job->why);
    }
    /* Busy partitions free up soon; a merge refused for good (EINVAL: no
     * neighbour, the namespace's initial partitions) waits for long. */
    int64_t later = rc == MAYFLY_EAGAIN || rc == MAYFLY_EMOVED ? 20
                    : rc == MAYFLY_EINVAL && job->merge   ? 10000
                                                          : 1000;
    b->rp_retry_ms = mf_now_ms() + later;
    rp_finish(s, b, job, 0);
    return;
  }
  if (step == STORE_RP_PLANNING) {
    b->rp_lo = job->lo;
    b->rp_hi = job->hi;
    job->moving = store_kv_take_range(b, job->lo, job->hi, &b->rp_charge);
    b->rp_moving = job->moving;
    b->rp_state = STORE_RP_MOVING;
    rp_queue(s, job, STORE_RP_MOVING);
  } else if (step == STORE_RP_MOVING) {
    b->rp_state = STORE_RP_COMMITTING;
    rp_queue(s, job, STORE_RP_COMMITTING);
  } else {
    double ms = (double)(g_get_monotonic_time() - job->started_us) / 1000.0;
    MF_INFO("block %d: %s of slots [%lld, %lld) to %s block %d: %llu entries, %llu bytes in "
            "%.1f ms (%.0f MB/s)",
            b->index, what, (long long)job->lo, (long long)job->hi, job->target, job->t_index,
            (unsigned long long)job->entries, (unsigned long long)job->bytes, ms,
            ms > 0 ? (double)job->bytes / 1e3 / ms : 0.0);
    rp_finish(s, b, job, 1);
  }
}

static void rp_queue(ms_server_t *s, ms_repart_job_t *job, int step) {
  rp_work_t *w = g_new0(rp_work_t, 1);
  w->srv = s;
  w->job = job;
  w->step = step;
  w->req.data = w;
  s->rp_jobs++;
  uv_queue_work(s->loop, &w->req, rp_work, rp_after);
}

/* Looks again at the blocks whose repartition had to wait. */
static void rp_scan(uv_timer_t *t) {
  ms_server_t *s = t->data;
  if (g_hash_table_size(s->rp_retry) == 0) return;
  GHashTable *due = s->rp_retry;
  s->rp_retry = g_hash_table_new(g_direct_hash, g_direct_equal);
  GHashTableIter it;
  gpointer k;
  g_hash_table_iter_init(&it, due);
  int64_t now = mf_now_ms();
  while (g_hash_table_iter_next(&it, &k, NULL)) {
    store_block_t *b = &s->store->blocks[GPOINTER_TO_INT(k)];
    if (b->kind == STORE_KV && now < b->rp_retry_ms) {
      g_hash_table_add(s->rp_retry, k); /* not yet */
      continue;
    }
    b->rp_refused = 0;
    rp_consider(s, b, b->held != NULL);
  }
  g_hash_table_destroy(due);
}

/* --- connections --- */

static void conn_closed(uv_handle_t *h) {
  conn_unref(h->data);
}

static void conn_close(conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  while (c->waiters != NULL) waiter_finish(c->waiters->data);
  c->srv->conns_open--;
  c->srv->conns = g_list_delete_link(c->srv->conns, c->link);
  uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void process_input(conn_t *c) {
  ms_server_t *s = c->srv;
  size_t pos = 0;
  while (!c->closing) {
    wire_hdr_t h;
    size_t flen = 0;
    int rc = wire_parse(c->buf + pos, c->len - pos, s->max_payload, &h, &flen);
    if (rc == MAYFLY_EAGAIN) break;
    if (rc != 0) {
      MF_WARN("peer %s: %s; closing the connection", c->peer,
              rc == MAYFLY_ETOOBIG ? "frame over the size limit" : "not a Mayfly data frame");
      flush(c);
      conn_close(c);
      return;
    }
    handle(c, &h, c->buf + pos, flen, 1);
    pos += flen;
  }
  memmove(c->buf, c->buf + pos, c->len - pos);
  c->len -= pos;
  if (c->cap > 8 * READ_CHUNK && c->len < READ_CHUNK) {
    c->buf = g_realloc(c->buf, 2 * READ_CHUNK);
    c->cap = 2 * READ_CHUNK;
  }
  flush(c);
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = stream->data;
  if (nread < 0) {
    conn_close(c);
    return;
  }
  c->len += (size_t)nread;
  process_input(c);
}

static void on_connection(uv_stream_t *listener, int status) {
  ms_server_t *s = listener->data;
  if (status < 0) return;
  conn_t *c = g_new0(conn_t, 1);
  c->srv = s;
  c->refs = 1;
  c->out = g_byte_array_new();
  uv_tcp_init(s->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
    return;
  }
  s->conns_open++;
  c->link = s->conns = g_list_prepend(s->conns, c);
  mf_peer_name(&c->tcp, c->peer, sizeof c->peer);
  if (s->conns_open > s->max_connections) {
    MF_WARN("peer %s: refused, %lld connections already open", c->peer,
            (long long)s->max_connections);
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  c->reading = 1;
  uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

/* --- events from the control thread --- */

static void replay_parked(ms_server_t *s, int32_t index, int status) {
  GQueue *q = g_hash_table_lookup(s->parked, GINT_TO_POINTER(index));
  if (q == NULL) return;
  g_hash_table_steal(s->parked, GINT_TO_POINTER(index));
  replay(q, status);
}

static void on_control_event(uv_async_t *a) {
  ms_control_t *ctl = a->data;
  ms_server_t *s = ms_control_data(ctl);
  store_t *st = s->store;
  GQueue events = G_QUEUE_INIT;
  ms_control_take(ctl, &events);
  ms_event_t *e;
  while ((e = g_queue_pop_head(&events)) != NULL) {
    switch (e->type) {
      case MS_EV_VERIFIED:
        if (e->status == 0 && e->allocated) {
          store_block_t *b = &st->blocks[e->index];
          if (e->generation > b->generation) wake_all(b, MAYFLY_EMOVED);
          store_adopt(st, e->index, e->generation, (store_kind_t)e->kind, e->lo, e->hi);
          if (b->generation == e->generation) {
            b->high_wm = e->high_wm > 0 ? e->high_wm : STORE_HIGH_WM_DEFAULT;
            b->low_wm = e->low_wm > 0 ? e->low_wm : STORE_LOW_WM_DEFAULT;
            b->watched = e->watched;
          }
        }
        if (e->status != 0) {
          MF_WARN("block %d: cannot confirm its owner with the directory: %s", e->index,
                  mayfly_strerror(e->status));
        }
        replay_parked(s, e->index, e->status == 0 ? 0 : MAYFLY_EIO);
        break;
      case MS_EV_RELEASE:
        if (e->index >= 0 && e->index < st->nblocks) {
          wake_all(&st->blocks[e->index], MAYFLY_EMOVED);
          replay_held(&st->blocks[e->index], MAYFLY_EMOVED);
          if (store_release(st, e->index, e->generation)) {
            MF_DEBUG("block %d (generation %lld) released", e->index, (long long)e->generation);
          }
        }
        break;
      case MS_EV_WATCHED: {
        /* Exactly the listed blocks publish their data events. */
        for (int32_t i = 0; i < st->nblocks; i++) st->blocks[i].watched = 0;
        int n = 0;
        for (guint k = 0; k + 1 < e->blocks->len; k += 2) {
          int64_t idx = g_array_index(e->blocks, int64_t, k);
          int64_t gen = g_array_index(e->blocks, int64_t, k + 1);
          if (idx >= 0 && idx < st->nblocks && st->blocks[idx].generation == gen &&
              st->blocks[idx].kind != STORE_FREE) {
            st->blocks[idx].watched = 1;
            n++;
          }
        }
        MF_DEBUG("%d blocks publish their data events", n);
        ms_control_applied(ctl, e->ticket);
        break;
      }
      case MS_EV_RECONCILE: {
        /* Keep exactly the blocks the directory says are allocated here. */
        GHashTable *keep = g_hash_table_new(g_direct_hash, g_direct_equal);
        for (guint k = 0; k + 1 < e->blocks->len; k += 2) {
          int64_t idx = g_array_index(e->blocks, int64_t, k);
          int64_t gen = g_array_index(e->blocks, int64_t, k + 1);
          if (idx >= 0 && idx < st->nblocks && st->blocks[idx].generation == gen) {
            g_hash_table_add(keep, GINT_TO_POINTER((int)idx));
          }
        }
        int dropped = 0;
        for (int32_t i = 0; i < st->nblocks; i++) {
          store_block_t *b = &st->blocks[i];
          if (b->kind != STORE_FREE && !g_hash_table_contains(keep, GINT_TO_POINTER(i))) {
            wake_all(b, MAYFLY_EMOVED);
            replay_held(b, MAYFLY_EMOVED);
            dropped += store_release(st, i, b->generation);
          }
        }
        if (dropped > 0) MF_INFO("dropped %d blocks the directory no longer knows", dropped);
        g_hash_table_destroy(keep);
        break;
      }
    }
    ms_event_free(e);
  }
  ms_control_set_stats(ctl, st->blocks_in_use, st->max_generation);
}

int ms_server_start(uv_loop_t *loop, store_t *store, const ms_server_config_t *cfg,
                    ms_server_t **out, int *bound_port) {
  struct sockaddr_in addr;
  int rc = uv_ip4_addr(cfg->host, cfg->port, &addr);
  if (rc != 0) return rc;
  ms_server_t *s = g_new0(ms_server_t, 1);
  s->loop = loop;
  s->store = store;
  s->max_connections = cfg->max_connections;
  /* A frame carries at most one block's worth of data plus a key. */
  s->max_payload = (uint32_t)MIN((uint64_t)store->block_size + KEY_MAX, UINT32_MAX - 4096);
  s->parked = g_hash_table_new(g_direct_hash, g_direct_equal);
  s->directory = g_strdup(cfg->directory);
  s->rp_pool = mf_pool_new(2000);
  s->rp_retry = g_hash_table_new(g_direct_hash, g_direct_equal);
  uv_tcp_init(loop, &s->listener);
  s->listener.data = s;
  rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
  if (rc != 0) {
    uv_close((uv_handle_t *)&s->listener, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    s->closed = 1;
    server_free(s);
    return rc;
  }
  uv_timer_init(loop, &s->rp_timer);
  s->rp_timer.data = s;
  uv_timer_start(&s->rp_timer, rp_scan, RP_SCAN_MS, RP_SCAN_MS);
  struct sockaddr_in bound;
  int blen = sizeof bound;
  uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen);
  *bound_port = ntohs(bound.sin_port);
  char adv[300];
  if (cfg->advertise != NULL) {
    snprintf(adv, sizeof adv, "%s", cfg->advertise);
  } else {
    snprintf(adv, sizeof adv, "%s:%d", cfg->host, *bound_port);
  }
  s->ctl = ms_control_start(loop, cfg->directory, adv, store->nblocks, store->block_size,
                            on_control_event, s);
  g_queue_init(&s->awaiting);
  s->pub = ms_publisher_start(loop, cfg->directory, s->ctl, on_published, s);
  *out = s;
  return 0;
}

static void listener_closed(uv_handle_t *h) {
  ms_server_t *s = h->data;
  s->closed = 1;
  server_free(s);
}

void ms_server_stop(ms_server_t *s) {
  if (s == NULL || s->stopping) return;
  s->stopping = 1;
  ms_control_stop(s->ctl);
  /* Replies held for events not yet published go out now: nobody will
   * publish them any more. */
  ms_publisher_stop(s->pub);
  release_published(s, 1);
  /* Requests still waiting for the directory will not be answered now. */
  GHashTableIter it;
  gpointer key;
  g_hash_table_iter_init(&it, s->parked);
  GList *keys = NULL;
  while (g_hash_table_iter_next(&it, &key, NULL)) keys = g_list_prepend(keys, key);
  for (GList *k = keys; k; k = k->next) replay_parked(s, GPOINTER_TO_INT(k->data), MAYFLY_EIO);
  g_list_free(keys);
  uv_timer_stop(&s->rp_timer);
  uv_close((uv_handle_t *)&s->rp_timer, NULL);
  for (int32_t i = 0; i < s->store->nblocks; i++) {
    store_block_t *b = &s->store->blocks[i];
    wake_all(b, MAYFLY_EIO);
    replay_held(b, MAYFLY_EIO);
    if (b->waiters != NULL) g_queue_free(b->waiters);
    b->waiters = NULL;
  }
  while (s->conns != NULL) conn_close(s->conns->data);
  uv_close((uv_handle_t *)&s->listener, listener_closed);
}
