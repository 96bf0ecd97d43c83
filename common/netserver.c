/*
 * The libuv TCP server layer both daemons use (see netserver.h): listener,
 * connection buffers, framing loop, replies and back-pressure, timeouts.
 */
#include "common/netserver.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "common/check.h"
#include "common/error.h"
#include "common/log.h"
#include "common/uvnet.h"

/* A payload this large goes to the socket straight from its memory. */
#define ZERO_COPY_MIN MF_NET_ZERO_COPY_MIN
/* The first output buffer of a connection; it grows by doubling. */
#define OUT_MIN 512u
/* The read buffer grows when less than this is free. */
#define READ_MIN_FREE 4096u

/* What a server that failed to start calls back: nothing. */
static const mf_net_proto_t no_proto = {0};

struct mf_net_server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  uv_timer_t sweep;  /* idle and partial-frame timeouts */
  uv_idle_t ready_h; /* serves released connections from the loop */
  mf_net_config_t cfg;
  const mf_net_proto_t *proto;
  void *ud;
  int64_t open;      /* connections open */
  int64_t live;      /* connection structs not yet freed */
  size_t input_extra;   /* read buffer bytes past read_buffer, all connections */
  size_t backlog_total; /* reply bytes not yet taken by sockets, all connections */
  GQueue conns;      /* open connections */
  GQueue idle;       /* open connections, least recently active first */
  GQueue partial;    /* connections receiving a frame, oldest first */
  GQueue stalled;    /* connections waiting for input_total to allow growth */
  GQueue big;        /* connections whose read buffer is past read_buffer */
  GQueue total_wait; /* connections whose large reply waits for room in the total, oldest first */
  GQueue sending;    /* connections with replies queued, least recent progress first */
  int64_t sweep_ms;  /* the sweep timer's period */
  GQueue ready;      /* released connections to serve */
  int handles;       /* listener, sweep, ready_h not yet closed */
  int stopping;
};

/* What the socket did not take at once: the connection's output buffer,
 * handed over whole (the connection starts a new one). */
typedef struct {
  uv_write_t req;
  uint8_t *data;
  size_t len, cap;
} write_req_t;

static void conn_process(mf_net_conn_t *c);
static void ready_cb(uv_idle_t *h);
static void conn_update_reading(mf_net_conn_t *c);
static void total_wake(mf_net_server_t *s);

void *mf_net_server_data(const mf_net_server_t *s) {
  return s->ud;
}

int64_t mf_net_connections(const mf_net_server_t *s) {
  return s->open;
}

/* Frees the server once everything it owns is gone. */
static void server_maybe_free(mf_net_server_t *s) {
  if (!s->stopping || s->handles > 0 || s->live > 0) return;
  void (*done)(void *) = s->proto->on_stopped;
  void *ud = s->ud;
  g_free(s);
  if (done != NULL) done(ud);
}

/* Changes a buffer's accounted growth past read_buffer; wakes connections
 * stalled on input_total when it shrinks. */
static void set_cap(mf_net_conn_t *c, uint8_t *buf, size_t cap) {
  mf_net_server_t *s = c->srv;
  size_t base = s->cfg.read_buffer;
  size_t old_extra = c->cap > base ? c->cap - base : 0;
  size_t new_extra = cap > base ? cap - base : 0;
  s->input_extra = s->input_extra - old_extra + new_extra;
  c->buf = buf;
  c->cap = cap;
  if (old_extra == 0 && new_extra > 0) g_queue_push_tail_link(&s->big, &c->big_link);
  if (old_extra > 0 && new_extra == 0) g_queue_unlink(&s->big, &c->big_link);
  if (new_extra < old_extra) {
    mf_net_conn_t *w;
    while ((w = g_queue_peek_head(&s->stalled)) != NULL) {
      g_queue_unlink(&s->stalled, &w->stall_link);
      w->stalled = 0;
      conn_update_reading(w);
    }
  }
}

void mf_net_conn_ref(mf_net_conn_t *c) {
  c->refs++;
}

void mf_net_conn_unref(mf_net_conn_t *c) {
  MF_CHECK(c->refs > 0);
  if (--c->refs > 0) return;
  MF_CHECK(c->closing);
  mf_net_server_t *s = c->srv;
  if (s->proto->on_free != NULL) s->proto->on_free(c);
  MF_CHECK(c->reserved == 0);
  s->backlog_total -= c->out_len;
  if (c->out_len > 0) total_wake(s);
  g_free(c->out);
  uint8_t *buf = c->buf;
  set_cap(c, NULL, 0);
  g_free(buf);
  g_free(c);
  s->live--;
  server_maybe_free(s);
}

static void conn_closed(uv_handle_t *h) {
  mf_net_conn_unref(h->data);
}

void mf_net_conn_close(mf_net_conn_t *c) {
  if (c->closing) return;
  mf_net_server_t *s = c->srv;
  c->closing = 1;
  s->open--;
  g_queue_unlink(&s->conns, &c->conn_link);
  g_queue_unlink(&s->idle, &c->idle_link);
  if (c->partial_ms >= 0) g_queue_unlink(&s->partial, &c->partial_link);
  if (c->stalled) g_queue_unlink(&s->stalled, &c->stall_link);
  if (c->wait_total) g_queue_unlink(&s->total_wait, &c->total_link);
  if (c->sending) g_queue_unlink(&s->sending, &c->send_link);
  c->partial_ms = -1;
  c->stalled = c->wait_total = c->sending = 0;
  if (s->proto->on_close != NULL) s->proto->on_close(c);
  uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

/* Gives a read buffer's growth back when what it holds fits the base size. */
static void shrink(mf_net_conn_t *c) {
  size_t base = c->srv->cfg.read_buffer;
  if (c->cap > base && c->len <= base / 2) set_cap(c, g_realloc(c->buf, base), base);
}

/* Whether c must wait for its writes before another frame is served. */
static int backlog_over(const mf_net_conn_t *c) {
  const mf_net_server_t *s = c->srv;
  return c->backlog >= s->cfg.reply_backlog ||
         (c->backlog > 0 && s->backlog_total >= s->cfg.reply_backlog_total);
}

int mf_net_fits(mf_net_conn_t *c, size_t n) {
  const mf_net_server_t *s = c->srv;
  int room = s->backlog_total + n <= s->cfg.reply_backlog_total;
  int fits = c->backlog == 0 ? n <= MF_NET_SMALL_REPLY || room
                             : c->backlog + n <= s->cfg.reply_backlog && room;
  if (!fits) c->want = n;
  return fits;
}

/* Queues c to be served from the loop (never from inside the caller). */
static void conn_schedule(mf_net_conn_t *c) {
  mf_net_server_t *s = c->srv;
  if (c->closing || c->scheduled) return;
  c->scheduled = 1;
  mf_net_conn_ref(c);
  if (s->ready.length == 0 && !s->stopping) uv_idle_start(&s->ready_h, ready_cb);
  g_queue_push_tail_link(&s->ready, &c->ready_link);
}

/* Wakes the connections waiting for room in the total, oldest first, as
 * far as the room goes (the first one also when nothing at all is queued,
 * so a reply larger than the total cannot wait forever). */
static void total_wake(mf_net_server_t *s) {
  size_t cap = s->cfg.reply_backlog_total;
  size_t avail = s->backlog_total < cap ? cap - s->backlog_total : 0;
  int first = 1;
  mf_net_conn_t *w;
  while ((w = g_queue_peek_head(&s->total_wait)) != NULL &&
         (w->want <= avail || (first && s->backlog_total == 0))) {
    g_queue_unlink(&s->total_wait, &w->total_link);
    w->wait_total = 0;
    avail -= MIN(avail, w->want);
    first = 0;
    conn_schedule(w);
  }
}

/* Bytes of c's replies the socket has taken so far (monotonic): what was
 * queued minus what is still in the output buffer or libuv's write queue
 * (which libuv shrinks as the kernel takes parts of a write). */
static uint64_t taken(const mf_net_conn_t *c) {
  return c->queued - c->out_len - uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp);
}

/* Keeps c in srv->sending while it has replies queued for the socket, in
 * the order of their last progress (`progressed`: some were taken now). */
static void sending_update(mf_net_conn_t *c, int progressed) {
  mf_net_server_t *s = c->srv;
  int sending = !c->closing && c->backlog > c->reserved;
  if (sending && (!c->sending || progressed)) {
    if (c->sending) g_queue_unlink(&s->sending, &c->send_link);
    c->sending = 1;
    c->progress_ms = (int64_t)uv_now(s->loop);
    c->taken_mark = taken(c);
    g_queue_push_tail_link(&s->sending, &c->send_link);
  } else if (!sending && c->sending) {
    g_queue_unlink(&s->sending, &c->send_link);
    c->sending = 0;
  }
}

void mf_net_reserve(mf_net_conn_t *c, size_t n) {
  c->backlog += n;
  c->reserved += n;
  c->srv->backlog_total += n;
}

void mf_net_unreserve(mf_net_conn_t *c, size_t n) {
  MF_CHECK(c->reserved >= n);
  c->backlog -= n;
  c->reserved -= n;
  c->srv->backlog_total -= n;
  sending_update(c, 0);
  total_wake(c->srv);
  if (c->wait_backlog && !c->processing && !backlog_over(c)) {
    c->wait_backlog = 0;
    conn_schedule(c);
  }
}

/* Marks c active now: it moves to the idle queue's tail. A connection
 * already touched in this millisecond stays where it is: everything behind
 * it was touched in the same millisecond, so the queue stays in order. */
static void touch(mf_net_conn_t *c) {
  mf_net_server_t *s = c->srv;
  int64_t now = (int64_t)uv_now(s->loop);
  if (c->active_ms == now) return;
  c->active_ms = now;
  g_queue_unlink(&s->idle, &c->idle_link);
  g_queue_push_tail_link(&s->idle, &c->idle_link);
}

static void account_sent(mf_net_conn_t *c, size_t n) {
  if (n == 0) return;
  c->backlog -= n;
  c->srv->backlog_total -= n;
  sending_update(c, 1);
  total_wake(c->srv);
}

/* Makes room for n more bytes in c's output buffer. */
static void out_reserve(mf_net_conn_t *c, size_t n) {
  if (c->out_cap - c->out_len >= n) return;
  size_t cap = MAX(c->out_cap * 2, OUT_MIN);
  if (cap - c->out_len < n) cap = c->out_len + n;
  c->out = g_realloc(c->out, cap);
  c->out_cap = cap;
}

/* Drops the first n bytes of the output buffer (the socket took them). */
static void out_consume(mf_net_conn_t *c, size_t n) {
  memmove(c->out, c->out + n, c->out_len - n);
  c->out_len -= n;
}

/* The socket took the whole output buffer: it is kept for the next replies,
 * unless a large reply grew it (its memory is given back rather than kept
 * per connection). */
static void out_sent_all(mf_net_conn_t *c) {
  c->out_len = 0;
  if (c->out_cap > ZERO_COPY_MIN) {
    g_free(c->out);
    c->out = NULL;
    c->out_cap = 0;
  }
}

uint8_t *mf_net_send_buf(mf_net_conn_t *c, size_t len) {
  if (c->closing) return NULL;
  out_reserve(c, len);
  uint8_t *p = c->out + c->out_len;
  c->out_len += len;
  c->backlog += len;
  c->queued += len;
  c->srv->backlog_total += len;
  sending_update(c, 0);
  return p;
}

void mf_net_send(mf_net_conn_t *c, const void *data, size_t len) {
  if (c->closing || len == 0) return;
  memcpy(mf_net_send_buf(c, len), data, len);
}

void mf_net_send_zc(mf_net_conn_t *c, const void *head, size_t hlen, const void *payload,
                    size_t plen) {
  if (c->closing) return;
  mf_net_send(c, head, hlen);
  if (plen >= ZERO_COPY_MIN && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
    uv_buf_t bufs[2] = {uv_buf_init((char *)c->out, (unsigned)c->out_len),
                        uv_buf_init((char *)payload, (unsigned)plen)};
    int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, 2);
    if (n > 0) {
      size_t sent = (size_t)n, head_len = c->out_len;
      if (sent < head_len) {
        out_consume(c, sent);
        account_sent(c, sent);
        mf_net_send(c, payload, plen);
      } else {
        out_sent_all(c);
        account_sent(c, head_len);
        mf_net_send(c, (const uint8_t *)payload + (sent - head_len), plen - (sent - head_len));
      }
      return;
    }
  }
  mf_net_send(c, payload, plen);
}

static void write_cb(uv_write_t *req, int status) {
  write_req_t *w = (write_req_t *)req;
  mf_net_conn_t *c = req->handle->data;
  account_sent(c, w->len);
  if (!c->closing && c->out == NULL && w->cap <= ZERO_COPY_MIN) {
    /* Nothing was queued since: the buffer serves the next replies. */
    c->out = w->data;
    c->out_cap = w->cap;
  } else {
    g_free(w->data);
  }
  g_free(w);
  if (c->closing) return;
  if (status < 0) {
    MF_DEBUG("peer %s: write failed: %s", c->peer, uv_strerror(status));
    mf_net_conn_close(c);
    return;
  }
  touch(c);
  if (c->wait_backlog && !backlog_over(c)) {
    c->wait_backlog = 0;
    conn_process(c);
  } else {
    conn_update_reading(c);
  }
}

/* The write path of a reply batch: one write() from the connection's
 * reused output buffer, which in the common case takes everything (no
 * allocation, and libuv's write queue, and with it epoll, is never touched).
 * Only the rest the socket refuses becomes a write request, which takes the
 * buffer over. */
void mf_net_flush(mf_net_conn_t *c) {
  if (c->closing || c->out_len == 0) return;
  if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
    uv_buf_t b = uv_buf_init((char *)c->out, (unsigned)c->out_len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n > 0 && (size_t)n == c->out_len) {
      account_sent(c, (size_t)n);
      out_sent_all(c);
      /* No write_cb will come: what waited for this backlog can go now. */
      if (c->wait_backlog && !c->processing && !backlog_over(c)) {
        c->wait_backlog = 0;
        conn_schedule(c);
      }
      return;
    }
    if (n > 0) {
      out_consume(c, (size_t)n);
      account_sent(c, (size_t)n);
    }
  }
  write_req_t *w = g_new(write_req_t, 1);
  w->data = c->out;
  w->len = c->out_len;
  w->cap = c->out_cap;
  c->out = NULL;
  c->out_len = c->out_cap = 0;
  uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->len);
  int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_cb);
  if (rc != 0) {
    MF_DEBUG("peer %s: write failed: %s", c->peer, uv_strerror(rc));
    account_sent(c, w->len);
    g_free(w->data);
    g_free(w);
    mf_net_conn_close(c);
  }
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

/* Offers the free part of the read buffer, growing it first when little is
 * free: at most doubling (so it grows only as bytes arrive), never past the
 * frame being received, never while frames wait unserved, and only within
 * input_total. */
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *out) {
  (void)suggested;
  mf_net_conn_t *c = h->data;
  mf_net_server_t *s = c->srv;
  size_t base = s->cfg.read_buffer;
  if (c->cap == 0) {
    set_cap(c, g_malloc(base), base);
  }
  int waiting = c->held || c->wait_backlog || c->wait_total || (c->need > 0 && c->len >= c->need);
  if (c->cap - c->len < READ_MIN_FREE && !waiting) {
    size_t want = c->cap * 2;
    if (c->need > c->len && want > c->need) want = MAX(c->need, c->len + READ_MIN_FREE);
    size_t extra_now = c->cap > base ? c->cap - base : 0;
    size_t extra_new = want > base ? want - base : 0;
    if (want > c->cap && s->input_extra - extra_now + extra_new <= s->cfg.input_total) {
      set_cap(c, g_realloc(c->buf, want), want);
    } else if (want > c->cap && c->cap == c->len && !c->stalled) {
      c->stalled = 1;
      g_queue_push_tail_link(&s->stalled, &c->stall_link);
    }
  }
  *out = uv_buf_init((char *)c->buf + c->len, (unsigned)(c->cap - c->len));
}

/* Reads while replies drain, the buffer has room and nothing stalls it. */
static void conn_update_reading(mf_net_conn_t *c) {
  if (c->closing) return;
  int waiting = c->held || c->wait_backlog || c->wait_total;
  int want = !c->stalled && !backlog_over(c) && !(waiting && c->len >= c->cap);
  if (want && !c->reading) {
    c->reading = 1;
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
  } else if (!want && c->reading) {
    c->reading = 0;
    uv_read_stop((uv_stream_t *)&c->tcp);
  }
}

/* Serves the complete frames buffered, in order, until one must wait; then
 * gives memory back, notes a partial frame's start and flushes. */
static void conn_process(mf_net_conn_t *c) {
  mf_net_server_t *s = c->srv;
  if (c->closing || c->processing) return;
  c->processing = 1;
  mf_net_conn_ref(c);
  size_t pos = 0;
  int front_partial = 0;
  for (;;) {
    while (!c->closing && !c->held && !c->wait_total && pos < c->len) {
      if (backlog_over(c)) {
        c->wait_backlog = 1;
        break;
      }
      size_t flen = 0;
      int rc = s->proto->frame(c, c->buf + pos, c->len - pos, &flen);
      if (rc == MAYFLY_EAGAIN) {
        c->need = flen;
        front_partial = 1;
        break;
      }
      if (rc < 0) {
        MF_WARN("peer %s: %s; closing the connection", c->peer,
                rc == MAYFLY_ETOOBIG ? "frame over the size limit" : "not a valid frame");
        mf_net_flush(c);
        mf_net_conn_close(c);
        break;
      }
      rc = s->proto->serve(c, c->buf + pos, flen);
      if (rc == MF_NET_RETRY) {
        c->need = flen;
        if (!c->held && c->backlog > 0) {
          c->wait_backlog = 1; /* mf_net_fits said no: wait for c's writes */
        } else if (!c->held) {
          /* A large reply on an empty backlog: wait for room in the total. */
          MF_CHECK(c->want > 0);
          c->wait_total = 1;
          g_queue_push_tail_link(&s->total_wait, &c->total_link);
          total_wake(s); /* room may have come already */
        }
        break;
      }
      if (rc < 0) { /* the protocol said why */
        mf_net_flush(c);
        mf_net_conn_close(c);
        break;
      }
      pos += flen;
      c->need = 0;
    }
    mf_net_flush(c);
    /* The socket took everything: what waited for the backlog can go now. */
    if (c->closing || !c->wait_backlog || c->backlog > 0 || c->held) break;
    c->wait_backlog = 0;
  }
  if (!c->closing) {
    if (pos > 0) {
      if (pos < c->len) memmove(c->buf, c->buf + pos, c->len - pos);
      c->len -= pos;
    }
    /* A large buffer is kept while the peer keeps sending large frames and
     * given back when it goes quiet (sweep_cb), or at once when another
     * connection waits for input_total. */
    if (s->stalled.length > 0) shrink(c);
    if (c->partial_ms >= 0 && (pos > 0 || !front_partial)) {
      g_queue_unlink(&s->partial, &c->partial_link);
      c->partial_ms = -1;
    }
    if (front_partial && c->partial_ms < 0) {
      c->partial_ms = (int64_t)uv_now(s->loop);
      g_queue_push_tail_link(&s->partial, &c->partial_link);
    }
    conn_update_reading(c);
  }
  c->processing = 0;
  mf_net_conn_unref(c);
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  mf_net_conn_t *c = stream->data;
  if (nread == UV_ENOBUFS) {
    conn_update_reading(c);
    return;
  }
  if (nread < 0) {
    if (nread != UV_EOF) MF_DEBUG("peer %s: read failed: %s", c->peer, uv_strerror((int)nread));
    mf_net_conn_close(c);
    return;
  }
  if (nread == 0) return;
  c->len += (size_t)nread;
  touch(c);
  conn_process(c);
}

void mf_net_conn_hold(mf_net_conn_t *c) {
  c->held = 1;
}

void mf_net_conn_release(mf_net_conn_t *c) {
  c->held = 0;
  conn_schedule(c);
}

static void ready_cb(uv_idle_t *h) {
  mf_net_server_t *s = h->data;
  GQueue batch = s->ready;
  g_queue_init(&s->ready);
  uv_idle_stop(h);
  GList *l;
  while ((l = g_queue_pop_head_link(&batch)) != NULL) {
    mf_net_conn_t *c = l->data;
    c->scheduled = 0;
    if (!c->closing && !c->held && !c->wait_total) conn_process(c);
    mf_net_conn_unref(c);
  }
}

/* Closes connections whose partial frame or idleness outlasted its limit.
 * Idle means no byte read, none taken by the socket, and no reference but
 * the socket's (no request waiting in the protocol): a peer that stopped
 * reading its replies is idle too, and its backlog goes with it. */
static void sweep_cb(uv_timer_t *t) {
  mf_net_server_t *s = t->data;
  int64_t now = (int64_t)uv_now(s->loop);
  mf_net_conn_t *c;
  /* Large read buffers of connections that went quiet. */
  for (GList *l = s->big.head, *next; l != NULL; l = next) {
    next = l->next;
    c = l->data;
    if (now - c->active_ms >= s->sweep_ms && !c->processing) shrink(c);
  }
  while (s->cfg.frame_timeout_ms > 0 && (c = g_queue_peek_head(&s->partial)) != NULL &&
         now - c->partial_ms >= s->cfg.frame_timeout_ms) {
    MF_WARN("peer %s: frame not complete after %lld ms (%zu of %zu bytes); closing the connection",
            c->peer, (long long)s->cfg.frame_timeout_ms, c->len, c->need);
    mf_net_conn_close(c);
  }
  while (s->cfg.idle_timeout_ms > 0 && (c = g_queue_peek_head(&s->idle)) != NULL &&
         now - c->active_ms >= s->cfg.idle_timeout_ms) {
    if (c->refs > 1 || c->held || c->wait_total) {
      touch(c); /* waiting for the server, not idle */
      continue;
    }
    MF_DEBUG("peer %s: idle for %lld ms; closing the connection", c->peer,
             (long long)s->cfg.idle_timeout_ms);
    mf_net_conn_close(c);
  }
  /* Replies that make no progress: the peer stopped reading. */
  while (s->cfg.send_timeout_ms > 0 && (c = g_queue_peek_head(&s->sending)) != NULL &&
         now - c->progress_ms >= s->cfg.send_timeout_ms) {
    if (taken(c) > c->taken_mark) {
      sending_update(c, 1); /* part of a write in flight was taken */
      continue;
    }
    MF_WARN("peer %s: no reply byte taken for %lld ms (%zu bytes queued); closing the "
            "connection",
            c->peer, (long long)s->cfg.send_timeout_ms, c->backlog - c->reserved);
    mf_net_conn_close(c);
  }
}

static void on_connection(uv_stream_t *listener, int status) {
  mf_net_server_t *s = listener->data;
  if (status < 0) {
    MF_WARN("accept failed: %s", uv_strerror(status));
    return;
  }
  mf_net_conn_t *c = g_malloc0(s->proto->conn_size);
  c->srv = s;
  if (s->proto->on_open != NULL) s->proto->on_open(c);
  c->refs = 1;
  c->partial_ms = -1;
  c->conn_link.data = c->idle_link.data = c->partial_link.data = c->stall_link.data =
      c->ready_link.data = c->big_link.data = c->total_link.data = c->send_link.data = c;
  s->live++;
  uv_tcp_init(s->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
    c->closing = 1;
    if (s->proto->on_close != NULL) s->proto->on_close(c);
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
    return;
  }
  s->open++;
  g_queue_push_tail_link(&s->conns, &c->conn_link);
  g_queue_push_tail_link(&s->idle, &c->idle_link);
  c->active_ms = (int64_t)uv_now(s->loop);
  mf_peer_name(&c->tcp, c->peer, sizeof c->peer);
  if (s->open > s->cfg.max_connections) {
    MF_WARN("peer %s: refused, %lld connections already open", c->peer,
            (long long)s->cfg.max_connections);
    mf_net_conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  conn_update_reading(c);
}

static void handle_closed(uv_handle_t *h) {
  mf_net_server_t *s = h->data;
  s->handles--;
  server_maybe_free(s);
}

int mf_net_server_start(uv_loop_t *loop, const mf_net_config_t *cfg, const mf_net_proto_t *proto,
                        void *ud, mf_net_server_t **out, int *bound_port, char *why,
                        size_t whylen) {
  struct sockaddr_storage addr;
  int rc = uv_ip4_addr(cfg->host, cfg->port, (struct sockaddr_in *)&addr);
  if (rc != 0) rc = uv_ip6_addr(cfg->host, cfg->port, (struct sockaddr_in6 *)&addr);
  if (rc != 0) {
    snprintf(why, whylen, "'%s' is not an IPv4 or IPv6 address", cfg->host);
    return MAYFLY_EINVAL;
  }
  MF_CHECK(proto->conn_size >= sizeof(mf_net_conn_t));
  mf_net_server_t *s = g_new0(mf_net_server_t, 1);
  s->loop = loop;
  s->cfg = *cfg;
  s->cfg.host = NULL;
  if (s->cfg.read_buffer < 2 * READ_MIN_FREE) s->cfg.read_buffer = 2 * READ_MIN_FREE;
  s->proto = proto;
  s->ud = ud;
  uv_tcp_init(loop, &s->listener);
  s->listener.data = s;
  s->handles = 1;
  rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
  if (rc != 0) {
    snprintf(why, whylen, "cannot listen on %s:%d: %s", cfg->host, cfg->port, uv_strerror(rc));
    s->stopping = 1;
    s->proto = &no_proto;
    uv_close((uv_handle_t *)&s->listener, handle_closed);
    return MAYFLY_EIO;
  }
  struct sockaddr_storage bound;
  int blen = sizeof bound;
  uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen);
  *bound_port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                  : ((struct sockaddr_in *)&bound)->sin_port);
  uv_timer_init(loop, &s->sweep);
  s->sweep.data = s;
  s->handles++;
  int64_t period = 1000;
  if (cfg->frame_timeout_ms > 0) period = MIN(period, cfg->frame_timeout_ms / 4);
  if (cfg->idle_timeout_ms > 0) period = MIN(period, cfg->idle_timeout_ms / 4);
  if (cfg->send_timeout_ms > 0) period = MIN(period, cfg->send_timeout_ms / 4);
  if (period < 10) period = 10;
  s->sweep_ms = period;
  uv_timer_start(&s->sweep, sweep_cb, (uint64_t)period, (uint64_t)period);
  uv_idle_init(loop, &s->ready_h);
  s->ready_h.data = s;
  s->handles++;
  *out = s;
  return 0;
}

void mf_net_server_stop(mf_net_server_t *s) {
  if (s == NULL || s->stopping) return;
  s->stopping = 1;
  mf_net_conn_t *c;
  while ((c = g_queue_peek_head(&s->conns)) != NULL) mf_net_conn_close(c);
  /* Released connections are closed now: drop their scheduling. */
  GList *l;
  while ((l = g_queue_pop_head_link(&s->ready)) != NULL) {
    c = l->data;
    c->scheduled = 0;
    mf_net_conn_unref(c);
  }
  uv_idle_stop(&s->ready_h);
  uv_timer_stop(&s->sweep);
  uv_close((uv_handle_t *)&s->sweep, handle_closed);
  uv_close((uv_handle_t *)&s->ready_h, handle_closed);
  uv_close((uv_handle_t *)&s->listener, handle_closed);
}

int mf_net_raise_nofile(int64_t max_connections, int64_t spare) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  rlim_t need = (rlim_t)(max_connections + spare);
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur >= need) return 0;
  if (rl.rlim_cur == RLIM_INFINITY) return 0;
  rlim_t old = rl.rlim_cur;
  /* As Redis does: as far as the hard limit allows. */
  rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? need : rl.rlim_max;
  if (rl.rlim_cur > old && setrlimit(RLIMIT_NOFILE, &rl) != 0) {
    MF_WARN("cannot raise the open file limit from %llu to %llu: %s", (unsigned long long)old,
            (unsigned long long)rl.rlim_cur, strerror(errno));
    rl.rlim_cur = old;
  } else if (rl.rlim_cur > old) {
    MF_INFO("raised the open file limit from %llu to %llu for %lld connections",
            (unsigned long long)old, (unsigned long long)rl.rlim_cur, (long long)max_connections);
  }
  if (rl.rlim_cur < need) {
    MF_WARN("open file limit %llu (hard limit %llu) is below the %lld that --max-connections "
            "%lld needs: connections past it are refused by the kernel",
            (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max, (long long)need,
            (long long)max_connections);
    return MAYFLY_EINVAL;
  }
  return 0;
}
