/*
 * The memory server's data plane on libuv (see server.h): the listener,
 * connection I/O (read buffer, framing, replies, back-pressure), and start
 * and stop. Serving a frame is handlers.c; requests that wait are defer.c
 * (held, parked, awaiting publication) and waiters.c (pops).
 */
#include "memserver/server.h"

#include <stdio.h>
#include <string.h>

#include "common/check.h"
#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "common/uvnet.h"
#include "common/wire.h"
#include "memserver/internal.h"

#define READ_CHUNK (256u << 10)
#define OUT_HIGH_WATER (64u << 20)
#define OUT_LOW_WATER (8u << 20)
#define ZERO_COPY_MIN (64u << 10)
#define RP_SCAN_MS 20 /* how often blocks waiting to retry a repartition are looked at */

void ms__conn_unref(conn_t *c) {
  MF_CHECK(c->refs > 0);
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
void ms__flush(conn_t *c) {
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

void ms__reply_header(const wire_hdr_t *req, int status, uint16_t flags, uint64_t a0,
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

void ms__reply(conn_t *c, const wire_hdr_t *req, int status, uint16_t flags, uint64_t a0,
                  uint64_t a1, uint32_t a2, const void *payload, uint32_t plen) {
  if (c->closing) return;
  uint8_t hdr[WIRE_HEADER_SIZE];
  ms__reply_header(req, status, flags, a0, a1, a2, plen, hdr);
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

void ms__reply_status(conn_t *c, const wire_hdr_t *req, int status) {
  ms__reply(c, req, status, 0, 0, 0, 0, NULL, 0);
}

/* Frees the server once its listener is closed and no worker job is left. */
void ms__server_free(ms_server_t *s) {
  if (!s->closed || s->rp_jobs > 0) return;
  g_hash_table_destroy(s->parked);
  mf_pool_free(s->rp_pool);
  g_free(s->directory);
  g_hash_table_destroy(s->rp_retry);
  g_free(s);
}

static void conn_closed(uv_handle_t *h) {
  ms__conn_unref(h->data);
}

static void conn_close(conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  while (c->waiters != NULL) ms__waiter_finish(c->waiters->data);
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
      ms__flush(c);
      conn_close(c);
      return;
    }
    ms__handle(c, &h, c->buf + pos, flen, 1);
    pos += flen;
  }
  memmove(c->buf, c->buf + pos, c->len - pos);
  c->len -= pos;
  if (c->cap > 8 * READ_CHUNK && c->len < READ_CHUNK) {
    c->buf = g_realloc(c->buf, 2 * READ_CHUNK);
    c->cap = 2 * READ_CHUNK;
  }
  ms__flush(c);
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
  s->max_payload = (uint32_t)MIN((uint64_t)store->block_size + WIRE_KEY_MAX, UINT32_MAX - 4096);
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
    ms__server_free(s);
    return rc;
  }
  uv_timer_init(loop, &s->rp_timer);
  s->rp_timer.data = s;
  uv_timer_start(&s->rp_timer, ms__rp_scan, RP_SCAN_MS, RP_SCAN_MS);
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
                            ms__on_control_event, s);
  g_queue_init(&s->awaiting);
  s->pub = ms_publisher_start(loop, cfg->directory, s->ctl, ms__on_published, s);
  *out = s;
  return 0;
}

static void listener_closed(uv_handle_t *h) {
  ms_server_t *s = h->data;
  s->closed = 1;
  ms__server_free(s);
}

void ms_server_stop(ms_server_t *s) {
  if (s == NULL || s->stopping) return;
  s->stopping = 1;
  ms_control_stop(s->ctl);
  /* Replies held for events not yet published go out now: nobody will
   * publish them any more. */
  ms_publisher_stop(s->pub);
  ms__release_published(s, 1);
  /* Requests still waiting for the directory will not be answered now. */
  GHashTableIter it;
  gpointer key;
  g_hash_table_iter_init(&it, s->parked);
  GList *keys = NULL;
  while (g_hash_table_iter_next(&it, &key, NULL)) keys = g_list_prepend(keys, key);
  for (GList *k = keys; k; k = k->next) ms__replay_parked(s, GPOINTER_TO_INT(k->data), MAYFLY_EIO);
  g_list_free(keys);
  uv_timer_stop(&s->rp_timer);
  uv_close((uv_handle_t *)&s->rp_timer, NULL);
  for (int32_t i = 0; i < s->store->nblocks; i++) {
    store_block_t *b = &s->store->blocks[i];
    ms__wake_all(b, MAYFLY_EIO);
    ms__replay_held(b, MAYFLY_EIO);
    if (b->waiters != NULL) g_queue_free(b->waiters);
    b->waiters = NULL;
  }
  while (s->conns != NULL) conn_close(s->conns->data);
  uv_close((uv_handle_t *)&s->listener, listener_closed);
}

