/*
 * A memory server's async link to another memory server (see link.h).
 *
 * Each connection attempt is a `sock_t` of its own (its uv_tcp_t is freed
 * by its close callback), so a failed connection's handles finish closing
 * while the link already connects again. A frame is a `req_t`: its bytes
 * stay with it until they are handed to uv_write, whose request then owns
 * them (a frame failed while its write is in flight never frees bytes libuv
 * still reads).
 *
 * Frames are not written one by one: write_req gathers them, and a check
 * handle (run once per loop iteration, after the reads of that iteration
 * were served) hands everything gathered to one uv_write of many buffers,
 * so the writes a head forwards in one iteration cost one writev.
 */
#include "memserver/link.h"

#include <string.h>

#include <glib.h>

#include "common/check.h"
#include "common/config.h"
#include "common/error.h"
#include "common/log.h"

#define LINK_TICK_MS 50

typedef struct sock sock_t;

typedef struct req {
  uint64_t id;
  ms_link_reply_cb cb;
  void *ud;
  uint8_t *bytes; /* the encoded frame until written (then the write request owns it) */
  size_t len;
  int64_t sent_ms; /* when queued on a connection (uv_now), for reply_timeout_ms */
  GList order;     /* in l->order, send order */
} req_t;

typedef struct {
  uv_write_t w;
  guint n;
  uint8_t **bytes; /* n frames, freed when written */
} wreq_t;

struct sock {
  uv_tcp_t tcp;
  uv_connect_t connect;
  ms_link_t *link; /* NULL once the link gave this connection up */
  GByteArray *rbuf;
};

struct ms_link {
  uv_loop_t *loop;
  char *address;
  int has_key;
  uint8_t key[MF_KEY_SIZE];
  int64_t connect_timeout_ms, reply_timeout_ms;
  uint64_t max_queued;
  uint32_t max_payload;
  void (*on_drain)(void *ud);
  void *ud;
  sock_t *sock;        /* the current connection attempt or connection; NULL: none */
  int up;              /* sock is connected */
  int64_t connect_at;  /* uv_now when the attempt started */
  GHashTable *by_id;   /* request id -> req_t * (every frame not yet answered) */
  GQueue order;        /* req_t * in send order */
  uint64_t next_id;
  uint64_t queued;     /* bytes of the frames in by_id */
  int want_drain;
  uv_timer_t timer;
  int timer_closed;
  int closing;
  int bad_address; /* the address does not resolve: sends fail ECONNREFUSED */
  GPtrArray *out;  /* uint8_t * frames gathered for the next write (this connection's) */
  GArray *out_bufs; /* uv_buf_t, one per frame of out */
  uv_check_t flush;
  int flush_closed;
  int busy; /* callbacks are running: free later */
};

const char *ms_link_address(const ms_link_t *l) {
  return l->address;
}

uint64_t ms_link_queued(const ms_link_t *l) {
  return l->queued;
}

unsigned ms_link_pending(const ms_link_t *l) {
  return g_hash_table_size(l->by_id);
}

int ms_link_connected(const ms_link_t *l) {
  return l->up;
}

int ms_link_check_mac(const uint8_t *key, const wire_hdr_t *h, const uint8_t *frame) {
  if (key == NULL) return h->cap_len == 0 ? 0 : MAYFLY_EPERM;
  if (h->cap_len != MF_MAC_SIZE) return MAYFLY_EPERM;
  uint8_t mac[MF_MAC_SIZE];
  mf_frame_mac(key, frame, NULL, 0, frame + WIRE_HEADER_SIZE + MF_MAC_SIZE, h->payload_len, mac);
  return mf_mac_equal(mac, frame + WIRE_HEADER_SIZE) ? 0 : MAYFLY_EPERM;
}

size_t ms_link_frame_head(const uint8_t *key, wire_hdr_t *h, const uint8_t *payload,
                          uint8_t out[WIRE_HEADER_SIZE + MF_MAC_SIZE]) {
  h->cap_len = key != NULL ? MF_MAC_SIZE : 0;
  wire_encode(h, out);
  if (key != NULL) mf_frame_mac(key, out, NULL, 0, payload, h->payload_len, out + WIRE_HEADER_SIZE);
  return WIRE_HEADER_SIZE + h->cap_len;
}

static void free_link(ms_link_t *l) {
  if (!l->closing || !l->timer_closed || !l->flush_closed || l->busy > 0 || l->sock != NULL) {
    return;
  }
  g_ptr_array_free(l->out, TRUE);
  g_array_free(l->out_bufs, TRUE);
  g_hash_table_destroy(l->by_id);
  mf_auth_wipe(l->key, sizeof l->key);
  g_free(l->address);
  g_free(l);
}

static void sock_closed(uv_handle_t *h) {
  sock_t *k = h->data;
  g_byte_array_free(k->rbuf, TRUE);
  g_free(k);
}

/* Frees the frames gathered for a connection given up (their requests
 * fail with it). */
static void discard_out(ms_link_t *l) {
  g_ptr_array_set_size(l->out, 0); /* frees each frame */
  g_array_set_size(l->out_bufs, 0);
}

/* Gives the current connection up (its handle closes on its own). */
static void drop_sock(ms_link_t *l) {
  sock_t *k = l->sock;
  if (k == NULL) return;
  discard_out(l);
  l->sock = NULL;
  l->up = 0;
  k->link = NULL;
  if (!uv_is_closing((uv_handle_t *)&k->tcp)) uv_close((uv_handle_t *)&k->tcp, sock_closed);
}

/* The frames not yet answered all fail with `status`; the connection is
 * given up (the next send connects again). */
static void fail_all(ms_link_t *l, int status) {
  drop_sock(l);
  GQueue q = l->order;
  g_queue_init(&l->order);
  g_hash_table_remove_all(l->by_id);
  l->queued = 0;
  l->busy++;
  GList *n;
  while ((n = g_queue_pop_head_link(&q)) != NULL) {
    req_t *r = n->data;
    g_free(r->bytes);
    r->cb(r->ud, status, NULL, NULL);
    g_free(r);
  }
  l->busy--;
  if (l->want_drain && !l->closing) {
    l->want_drain = 0;
    if (l->on_drain != NULL) l->on_drain(l->ud);
  }
  if (g_hash_table_size(l->by_id) == 0 && !l->closing) uv_timer_stop(&l->timer);
}

static void free_wreq(wreq_t *wr) {
  for (guint i = 0; i < wr->n; i++) g_free(wr->bytes[i]);
  g_free(wr->bytes);
  g_free(wr);
}

static void write_done(uv_write_t *w, int status) {
  (void)status; /* a failed write shows as a read error or EOF too */
  free_wreq((wreq_t *)w);
}

/* Writes every frame gathered, in one uv_write. */
static void flush_out(ms_link_t *l) {
  if (l->out->len == 0) return;
  if (l->sock == NULL || !l->up) {
    discard_out(l);
    return;
  }
  wreq_t *wr = g_new(wreq_t, 1);
  wr->n = l->out->len;
  g_ptr_array_set_free_func(l->out, NULL);
  wr->bytes = (uint8_t **)g_ptr_array_free(l->out, FALSE);
  l->out = g_ptr_array_new_with_free_func(g_free);
  if (uv_write(&wr->w, (uv_stream_t *)&l->sock->tcp, (uv_buf_t *)(void *)l->out_bufs->data,
               wr->n, write_done) != 0) {
    /* Their replies will never come: the read side fails the connection. */
    free_wreq(wr);
  }
  g_array_set_size(l->out_bufs, 0);
}

static void flush_cb(uv_check_t *h) {
  ms_link_t *l = h->data;
  uv_check_stop(h);
  flush_out(l);
}

static void write_req(ms_link_t *l, req_t *r) {
  r->sent_ms = (int64_t)uv_now(l->loop);
  uv_buf_t buf = uv_buf_init((char *)r->bytes, (unsigned)r->len);
  g_ptr_array_add(l->out, r->bytes);
  g_array_append_val(l->out_bufs, buf);
  r->bytes = NULL;
  if (!uv_is_active((uv_handle_t *)&l->flush)) uv_check_start(&l->flush, flush_cb);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  sock_t *k = h->data;
  (void)suggested;
  size_t have = k->rbuf->len;
  size_t want = 64 * 1024;
  g_byte_array_set_size(k->rbuf, (guint)(have + want));
  k->rbuf->len = (guint)have;
  *buf = uv_buf_init((char *)k->rbuf->data + have, (unsigned)want);
}

/* Serves the complete replies in the read buffer. Returns 0 or the error
 * that makes the connection fail. */
static int take_replies(ms_link_t *l, sock_t *k) {
  size_t pos = 0;
  int rc = 0;
  l->busy++;
  while (l->sock == k) {
    wire_hdr_t h;
    size_t flen;
    int pr = wire_parse(k->rbuf->data + pos, k->rbuf->len - pos, l->max_payload, &h, &flen);
    if (pr == MAYFLY_EAGAIN) break;
    if (pr != 0 || !(h.flags & WIRE_F_REPLY)) {
      rc = MAYFLY_EPROTO;
      break;
    }
    const uint8_t *frame = k->rbuf->data + pos;
    if (ms_link_check_mac(l->has_key ? l->key : NULL, &h, frame) != 0) {
      MF_WARN("link to %s: a reply with a bad frame MAC: dropping the connection", l->address);
      rc = MAYFLY_EPROTO;
      break;
    }
    req_t *r = g_hash_table_lookup(l->by_id, &h.request_id);
    if (r == NULL) {
      rc = MAYFLY_EPROTO; /* a reply to nothing we sent */
      break;
    }
    g_hash_table_remove(l->by_id, &r->id);
    g_queue_unlink(&l->order, &r->order);
    l->queued -= r->len;
    r->cb(r->ud, 0, &h, frame + WIRE_HEADER_SIZE + h.cap_len);
    g_free(r->bytes);
    g_free(r);
    pos += flen;
  }
  l->busy--;
  if (pos > 0 && pos <= k->rbuf->len) g_byte_array_remove_range(k->rbuf, 0, (guint)pos);
  if (l->want_drain && l->queued <= l->max_queued / 2 && !l->closing) {
    l->want_drain = 0;
    if (l->on_drain != NULL) l->on_drain(l->ud);
  }
  return rc;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  sock_t *k = s->data;
  ms_link_t *l = k->link;
  if (l == NULL) return;
  if (n < 0) {
    MF_DEBUG("link to %s: %s", l->address, uv_strerror((int)n));
    fail_all(l, MAYFLY_EIO);
    free_link(l);
    return;
  }
  k->rbuf->len += (guint)n;
  int rc = take_replies(l, k);
  if (rc != 0 && l->sock == k) fail_all(l, MAYFLY_EIO);
  free_link(l);
}

static void on_connect(uv_connect_t *cr, int status) {
  sock_t *k = cr->data;
  ms_link_t *l = k->link;
  if (l == NULL) return;
  if (status != 0) {
    MF_DEBUG("link to %s: cannot connect: %s", l->address, uv_strerror(status));
    fail_all(l, status == UV_ECONNREFUSED ? MAYFLY_ECONNREFUSED : MAYFLY_EIO);
    free_link(l);
    return;
  }
  l->up = 1;
  uv_tcp_nodelay(&k->tcp, 1);
  uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read);
  for (GList *n = l->order.head; n != NULL; n = n->next) write_req(l, n->data);
}

/* Resolves the address: a numeric one at once, a name with the (blocking,
 * but local-resolver) getaddrinfo. Returns 0 or MAYFLY_ECONNREFUSED. */
static int resolve(const char *address, struct sockaddr_storage *ss) {
  char host[256];
  int port;
  if (mf_parse_hostport(address, NULL, host, sizeof host, &port) != 0) return MAYFLY_ECONNREFUSED;
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0) return 0;
  if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0) return 0;
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
  char ps[16];
  g_snprintf(ps, sizeof ps, "%d", port);
  if (getaddrinfo(host, ps, &hints, &res) != 0 || res == NULL) return MAYFLY_ECONNREFUSED;
  memcpy(ss, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  return 0;
}

static void on_tick(uv_timer_t *t) {
  ms_link_t *l = t->data;
  int64_t now = (int64_t)uv_now(l->loop);
  if (g_hash_table_size(l->by_id) == 0) {
    uv_timer_stop(t);
    return;
  }
  if (l->sock != NULL && !l->up && now - l->connect_at >= l->connect_timeout_ms) {
    MF_DEBUG("link to %s: no connection within %lld ms", l->address,
             (long long)l->connect_timeout_ms);
    fail_all(l, l->bad_address ? MAYFLY_ECONNREFUSED : MAYFLY_ETIMEDOUT);
  } else if (l->up && l->reply_timeout_ms > 0 && l->order.head != NULL) {
    req_t *r = l->order.head->data;
    if (now - r->sent_ms >= l->reply_timeout_ms) {
      MF_WARN("link to %s: no reply within %lld ms: dropping the connection", l->address,
              (long long)l->reply_timeout_ms);
      fail_all(l, MAYFLY_EIO);
    }
  }
}

static int start_connect(ms_link_t *l) {
  struct sockaddr_storage ss;
  if (resolve(l->address, &ss) != 0) return MAYFLY_ECONNREFUSED;
  sock_t *k = g_new0(sock_t, 1);
  k->link = l;
  k->rbuf = g_byte_array_new();
  uv_tcp_init(l->loop, &k->tcp);
  k->tcp.data = k;
  k->connect.data = k;
  l->sock = k;
  l->up = 0;
  l->connect_at = (int64_t)uv_now(l->loop);
  if (uv_tcp_connect(&k->connect, &k->tcp, (struct sockaddr *)&ss, on_connect) != 0) {
    drop_sock(l);
    return MAYFLY_ECONNREFUSED;
  }
  return 0;
}

static guint id_hash(gconstpointer p) {
  uint64_t v = *(const uint64_t *)p;
  return (guint)(v ^ (v >> 32));
}

static gboolean id_equal(gconstpointer a, gconstpointer b) {
  return *(const uint64_t *)a == *(const uint64_t *)b;
}

ms_link_t *ms_link_new(uv_loop_t *loop, const char *address, const ms_link_config_t *cfg) {
  ms_link_t *l = g_new0(ms_link_t, 1);
  l->loop = loop;
  l->address = g_strdup(address);
  l->has_key = cfg != NULL && cfg->key != NULL;
  if (l->has_key) memcpy(l->key, cfg->key, MF_KEY_SIZE);
  l->connect_timeout_ms = cfg != NULL && cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 2000;
  l->reply_timeout_ms = cfg != NULL ? cfg->reply_timeout_ms : 0;
  l->max_queued = cfg != NULL && cfg->max_queued > 0 ? cfg->max_queued : (64u << 20);
  l->max_payload = cfg != NULL && cfg->max_payload > 0 ? cfg->max_payload : (16u << 20);
  l->on_drain = cfg != NULL ? cfg->on_drain : NULL;
  l->ud = cfg != NULL ? cfg->ud : NULL;
  l->by_id = g_hash_table_new(id_hash, id_equal);
  g_queue_init(&l->order);
  uv_timer_init(loop, &l->timer);
  l->timer.data = l;
  l->out = g_ptr_array_new_with_free_func(g_free);
  l->out_bufs = g_array_new(FALSE, FALSE, sizeof(uv_buf_t));
  uv_check_init(loop, &l->flush);
  l->flush.data = l;
  return l;
}

int ms_link_send(ms_link_t *l, const wire_hdr_t *h, const void *payload, size_t plen,
                 ms_link_reply_cb cb, void *ud) {
  if (l->closing) return MAYFLY_EIO;
  if (plen > UINT32_MAX) return MAYFLY_ETOOBIG;
  size_t head = WIRE_HEADER_SIZE + (l->has_key ? MF_MAC_SIZE : 0);
  if (l->queued > 0 && l->queued + head + plen > l->max_queued) {
    l->want_drain = 1;
    return MAYFLY_EAGAIN;
  }
  req_t *r = g_new0(req_t, 1);
  r->id = ++l->next_id;
  r->cb = cb;
  r->ud = ud;
  r->len = head + plen;
  r->bytes = g_malloc(r->len);
  r->order.data = r;
  wire_hdr_t fh = *h;
  fh.request_id = r->id;
  fh.payload_len = (uint32_t)plen;
  fh.status = 0;
  fh.flags &= (uint16_t)~WIRE_F_REPLY;
  if (plen > 0) memcpy(r->bytes + head, payload, plen);
  ms_link_frame_head(l->has_key ? l->key : NULL, &fh, r->bytes + head, r->bytes);
  g_hash_table_insert(l->by_id, &r->id, r);
  g_queue_push_tail_link(&l->order, &r->order);
  l->queued += r->len;
  if (!uv_is_active((uv_handle_t *)&l->timer)) {
    uv_timer_start(&l->timer, on_tick, LINK_TICK_MS, LINK_TICK_MS);
  }
  if (l->sock == NULL) {
    if (start_connect(l) != 0) {
      /* Failed from the timer's next tick, never from within this call. */
      l->connect_at = -l->connect_timeout_ms - 1;
      l->bad_address = 1;
      sock_t *k = g_new0(sock_t, 1);
      k->rbuf = g_byte_array_new();
      k->link = l;
      uv_tcp_init(l->loop, &k->tcp);
      k->tcp.data = k;
      l->sock = k; /* never connects: on_tick fails the frames */
    }
  } else if (l->up) {
    write_req(l, r);
  }
  return 0;
}

static void timer_closed(uv_handle_t *h) {
  ms_link_t *l = h->data;
  l->timer_closed = 1;
  free_link(l);
}

static void flush_closed(uv_handle_t *h) {
  ms_link_t *l = h->data;
  l->flush_closed = 1;
  free_link(l);
}

void ms_link_close(ms_link_t *l) {
  if (l == NULL || l->closing) return;
  l->closing = 1;
  fail_all(l, MAYFLY_EIO);
  uv_timer_stop(&l->timer);
  uv_close((uv_handle_t *)&l->timer, timer_closed);
  uv_check_stop(&l->flush);
  uv_close((uv_handle_t *)&l->flush, flush_closed);
}
