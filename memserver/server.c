/*
 * The memory server's data plane on libuv (see server.h).
 */
#include "memserver/server.h"

#include <stdio.h>
#include <string.h>

#include "common/error.h"
#include "common/log.h"
#include "common/uvnet.h"
#include "common/wire.h"
#include "memserver/control.h"
#include "memserver/publish.h"

#define READ_CHUNK (256u << 10)
#define OUT_HIGH_WATER (64u << 20)
#define OUT_LOW_WATER (8u << 20)
#define POP_WAIT_MAX_MS 600000
#define KEY_MAX (64u << 10)
#define ZERO_COPY_MIN (64u << 10)

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
  GQueue held;        /* held_t *: replies waiting for their events to be published */
  int stopping;
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
} held_t;

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

/* Queues a data event of block b; returns its id for hold_reply. */
static uint64_t publish_event(conn_t *c, const store_block_t *b, int kind, const void *key,
                              size_t klen, int64_t offset, int64_t length) {
  return ms_publisher_add(c->srv->pub, b->index, b->generation, kind, key, klen, offset, length);
}

/* Like reply(), but the reply goes out once event `upto` is published. */
static void hold_reply(conn_t *c, uint64_t upto, const wire_hdr_t *req, int status,
                       uint16_t flags, uint64_t a0, const void *payload, uint32_t plen) {
  if (c->closing) return;
  held_t *hr = g_new(held_t, 1);
  hr->c = c;
  hr->upto = upto;
  hr->bytes = g_byte_array_sized_new(WIRE_HEADER_SIZE + plen);
  uint8_t hdr[WIRE_HEADER_SIZE];
  reply_header(req, status, flags, a0, 0, 0, plen, hdr);
  g_byte_array_append(hr->bytes, hdr, WIRE_HEADER_SIZE);
  if (plen > 0) g_byte_array_append(hr->bytes, payload, plen);
  c->refs++;
  g_queue_push_tail(&c->srv->held, hr);
}

/* Sends the held replies whose events are published (all of them when
 * `all`), each connection's in one write. */
static void release_held(ms_server_t *s, int all) {
  uint64_t done = all ? UINT64_MAX : ms_publisher_done(s->pub);
  GPtrArray *touched = g_ptr_array_new();
  held_t *hr;
  while ((hr = g_queue_peek_head(&s->held)) != NULL && hr->upto <= done) {
    g_queue_pop_head(&s->held);
    if (!hr->c->closing) {
      g_byte_array_append(hr->c->out, hr->bytes->data, hr->bytes->len);
      if (touched->len == 0 || g_ptr_array_index(touched, touched->len - 1) != hr->c) {
        hr->c->refs++;
        g_ptr_array_add(touched, hr->c);
      }
    }
    g_byte_array_free(hr->bytes, TRUE);
    conn_unref(hr->c);
    g_free(hr);
  }
  for (guint i = 0; i < touched->len; i++) {
    conn_t *c = g_ptr_array_index(touched, i);
    flush(c);
    conn_unref(c);
  }
  g_ptr_array_free(touched, TRUE);
}

static void on_published(uv_async_t *a) {
  release_held(ms_publisher_data(a->data), 0);
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

static void park(conn_t *c, uint32_t index, const uint8_t *frame, size_t len) {
  ms_server_t *s = c->srv;
  GQueue *q = g_hash_table_lookup(s->parked, GUINT_TO_POINTER(index));
  if (q == NULL) {
    q = g_queue_new();
    g_hash_table_insert(s->parked, GUINT_TO_POINTER(index), q);
    ms_control_verify(s->ctl, (int32_t)index);
  }
  parked_t *p = g_new(parked_t, 1);
  p->c = c;
  p->frame = g_memdup2(frame, len);
  p->len = len;
  c->refs++;
  g_queue_push_tail(q, p);
}

/* The block kind an opcode works on; -1 for an opcode that does not exist. */
static int kind_of(uint8_t op) {
  switch (op) {
    case WIRE_OP_BLOCK_STAT:
      return STORE_FREE; /* any kind */
    case WIRE_OP_FILE_WRITE:
    case WIRE_OP_FILE_READ:
    case WIRE_OP_FILE_SIZE:
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
      return STORE_KV;
    default:
      return -1;
  }
}

static void handle_kv(conn_t *c, store_block_t *b, const wire_hdr_t *h, const uint8_t *payload) {
  store_t *st = c->srv->store;
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
  switch (h->opcode) {
    case WIRE_OP_KV_PUT: {
      rc = store_kv_put(st, b, payload, klen, payload + klen, h->payload_len - klen);
      if (rc == 0 && b->watched) {
        hold_reply(c, publish_event(c, b, MS_EV_KIND_PUT, payload, klen, 0, klen), h, 0, 0, 0,
                   NULL, 0);
      } else {
        reply_status(c, h, rc);
      }
      break;
    }
    case WIRE_OP_KV_GET: {
      GBytes *v = store_kv_get(b, payload, klen);
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
        hold_reply(c, publish_event(c, b, MS_EV_KIND_DELETE, payload, klen, 0, klen), h, 0, 0, 0,
                   NULL, 0);
      } else {
        reply_status(c, h, rc);
      }
      break;
    }
    case WIRE_OP_KV_EXISTS:
      reply(c, h, 0, 0, store_kv_get(b, payload, klen) != NULL, 0, 0, NULL, 0);
      break;
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
        uint64_t push = publish_event(c, b, MS_EV_KIND_PUSH, NULL, 0, 0, h->payload_len);
        uint64_t pop = publish_event(c, b, MS_EV_KIND_POP, NULL, 0, 0, h->payload_len);
        hold_reply(c, push, h, 0, 0, 0, NULL, 0);
        hold_reply(w->c, pop, &w->req, 0, 0, 0, payload, h->payload_len);
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
        hold_reply(c, publish_event(c, b, MS_EV_KIND_PUSH, NULL, 0, 0, h->payload_len), h, 0,
                   b->sealed ? WIRE_F_SEALED : 0, 0, NULL, 0);
        break;
      }
      reply(c, h, rc, b->sealed ? WIRE_F_SEALED : 0, 0, 0, 0, NULL, 0);
      break;
    }
    case WIRE_OP_Q_POP: {
      store_item_t *it = store_queue_pop(b);
      if (it != NULL && b->watched) {
        hold_reply(c, publish_event(c, b, MS_EV_KIND_POP, NULL, 0, 0, it->len), h, 0, sealed, 0,
                   it->data, it->len);
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
        uint64_t id = publish_event(c, b, MS_EV_KIND_WRITE, NULL, 0,
                                    b->range_lo + (int64_t)h->arg0, h->payload_len);
        hold_reply(c, id, h, 0, 0, b->size, NULL, 0);
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
      handle_kv(c, b, h, payload);
      break;
    default: {
      uint64_t items = b->kind == STORE_QUEUE ? g_queue_get_length(b->items)
                       : b->kind == STORE_KV  ? g_hash_table_size(b->kv)
                                              : b->size;
      reply(c, h, 0, b->sealed ? WIRE_F_SEALED : 0, b->used, items, (uint32_t)b->kind, NULL, 0);
    }
  }
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
  uv_tcp_init(loop, &s->listener);
  s->listener.data = s;
  rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
  if (rc != 0) {
    uv_close((uv_handle_t *)&s->listener, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    g_hash_table_destroy(s->parked);
    g_free(s);
    return rc;
  }
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
  g_queue_init(&s->held);
  s->pub = ms_publisher_start(loop, cfg->directory, s->ctl, on_published, s);
  *out = s;
  return 0;
}

static void listener_closed(uv_handle_t *h) {
  ms_server_t *s = h->data;
  g_hash_table_destroy(s->parked);
  g_free(s);
}

void ms_server_stop(ms_server_t *s) {
  if (s == NULL || s->stopping) return;
  s->stopping = 1;
  ms_control_stop(s->ctl);
  /* Replies held for events not yet published go out now: nobody will
   * publish them any more. */
  ms_publisher_stop(s->pub);
  release_held(s, 1);
  /* Requests still waiting for the directory will not be answered now. */
  GHashTableIter it;
  gpointer key;
  g_hash_table_iter_init(&it, s->parked);
  GList *keys = NULL;
  while (g_hash_table_iter_next(&it, &key, NULL)) keys = g_list_prepend(keys, key);
  for (GList *k = keys; k; k = k->next) replay_parked(s, GPOINTER_TO_INT(k->data), MAYFLY_EIO);
  g_list_free(keys);
  for (int32_t i = 0; i < s->store->nblocks; i++) {
    store_block_t *b = &s->store->blocks[i];
    wake_all(b, MAYFLY_EIO);
    if (b->waiters != NULL) g_queue_free(b->waiters);
    b->waiters = NULL;
  }
  while (s->conns != NULL) conn_close(s->conns->data);
  uv_close((uv_handle_t *)&s->listener, listener_closed);
}
