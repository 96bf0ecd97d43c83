/*
 * Control-plane server on libuv (see server.h).
 */
#include "directory/server.h"

#include <mayfly_directory.h>
#include <string.h>
#include <thrift/c_glib/protocol/thrift_compact_protocol.h>

#include "common/compact_scan.h"
#include "common/config.h"
#include "common/frame_transport.h"
#include "common/log.h"
#include "common/uvnet.h"
#include "directory/handler.h"
#include "directory/limits.h"

/* Reading stops while a connection has this much output queued, and resumes
 * when it drains below the low mark: a client that pipelines without reading
 * cannot make the daemon buffer without bound. */
#define OUT_HIGH_WATER (8u << 20)
#define OUT_LOW_WATER (1u << 20)
#define READ_CHUNK (64u << 10)

typedef struct conn conn_t;

struct dir_rpc {
  dir_t *dir;
  GHashTable *methods; /* names the processor serves */
  MayflyDirectoryHandler *handler;
  ThriftProcessor *processor;
  MfFrameTransport *transport;
  ThriftProtocol *in_proto;
  ThriftProtocol *out_proto;
};

struct dir_server {
  dir_t *dir;
  uv_tcp_t listener;
  dir_rpc_t *rpc;
  uint32_t max_frame;
  GList *conns;
  int stopping;
};

/* A request held until its watch has something to say (see server.h). */
typedef struct deferred {
  uv_timer_t timer; /* fires at the deadline, or at once when woken */
  conn_t *c;
  uint8_t *frame;   /* the request's payload, copied */
  uint32_t len;
  int64_t deadline; /* monotonic ms */
  dir_evlog_t *log; /* the log it waits on, NULL while running */
} deferred_t;

struct conn {
  uv_tcp_t tcp;
  dir_server_t *srv;
  GList *link;
  char peer[80];
  uint8_t *buf;
  size_t len, cap;
  int reading;
  int closing;
  deferred_t *deferred; /* at most one: later requests wait behind it */
};

typedef struct {
  uv_write_t req;
  GByteArray *data;
} write_req_t;

static void conn_close_cb(uv_handle_t *h) {
  conn_t *c = h->data;
  g_free(c->buf);
  g_free(c);
}

static void deferred_closed(uv_handle_t *h) {
  deferred_t *df = h->data;
  g_free(df->frame);
  g_free(df);
}

/* Forgets a deferred request: no longer woken, its memory freed once the
 * loop closed its timer. */
static void deferred_drop(deferred_t *df) {
  dir_events_unwait(df->log, df);
  df->log = NULL;
  df->c->deferred = NULL;
  uv_timer_stop(&df->timer);
  uv_close((uv_handle_t *)&df->timer, deferred_closed);
}

static void conn_close(conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  if (c->deferred != NULL) deferred_drop(c->deferred);
  c->srv->dir->connections_open--;
  c->srv->conns = g_list_delete_link(c->srv->conns, c->link);
  uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

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

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void conn_update_reading(conn_t *c);

static void write_cb(uv_write_t *req, int status) {
  write_req_t *w = (write_req_t *)req;
  conn_t *c = req->handle->data;
  g_byte_array_free(w->data, TRUE);
  g_free(w);
  if (status < 0) {
    if (status != UV_ECANCELED) MF_DEBUG("peer %s: write failed: %s", c->peer, uv_strerror(status));
    conn_close(c);
    return;
  }
  conn_update_reading(c);
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

dir_rpc_t *dir_rpc_new(dir_t *d) {
  dir_rpc_t *r = g_new0(dir_rpc_t, 1);
  uint32_t max_frame = (uint32_t)d->cfg.max_frame;
  r->dir = d;
  r->transport = mf_frame_transport_new(-1, 0, max_frame);
  r->in_proto = g_object_new(THRIFT_TYPE_COMPACT_PROTOCOL, "transport", r->transport,
                             "string_limit", (gint32)max_frame, "container_limit",
                             (gint32)max_frame, NULL);
  r->out_proto = g_object_new(THRIFT_TYPE_COMPACT_PROTOCOL, "transport", r->transport, NULL);
  r->handler = dir_handler_new(d);
  r->processor = g_object_new(MAYFLY_TYPE_DIRECTORY_PROCESSOR, "handler", r->handler, NULL);
  /* The method names of the Directory service (common/control.thrift). A
   * request for any other name, or of a type other than a call, is refused
   * before the processor sees it: Thrift c_glib leaks on those paths. */
  static const char *const names[] = {
      "mkdir",         "create_ns",       "open_ns",   "open_or_create", "remove",
      "rename",        "exists",          "stat",      "list_children",  "renew",
      "get_layout",    "add_block",       "remove_block", "register_server", "heartbeat",
      "servers",       "leases",          "stats",     "check_block",    "release_range",
      "repartition_begin", "repartition_end", "truncate", "watch", "publish"};
  r->methods = g_hash_table_new(g_str_hash, g_str_equal);
  for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
    g_hash_table_add(r->methods, (gpointer)names[i]);
  }
  return r;
}

void dir_rpc_free(dir_rpc_t *r) {
  if (r == NULL) return;
  g_object_unref(r->processor);
  g_object_unref(r->handler);
  g_object_unref(r->in_proto);
  g_object_unref(r->out_proto);
  g_object_unref(r->transport);
  g_hash_table_destroy(r->methods);
  g_free(r);
}

int dir_rpc_call(dir_rpc_t *r, const uint8_t *msg, uint32_t len, int flags, GByteArray *out,
                 dir_evlog_t **wait_log, int64_t *wait_ms, char *why, size_t whylen) {
  mf_compact_msg_t hdr;
  /* The caps of the method (limits.h), before Thrift decodes anything. */
  if (mf_compact_scan(msg, len, MF_COMPACT_MAX_DEPTH, dir_limits, &hdr, why, whylen) != 0) {
    return -1;
  }
  char name[32];
  if (hdr.type != MF_COMPACT_CALL || hdr.name_len >= sizeof name) {
    snprintf(why, whylen, "not a call of a known method");
    return -1;
  }
  memcpy(name, hdr.name, hdr.name_len);
  name[hdr.name_len] = '\0';
  if (!g_hash_table_contains(r->methods, name)) {
    char *printable = g_strescape(name, NULL);
    snprintf(why, whylen, "unknown method '%s'", printable);
    g_free(printable);
    return -1;
  }
  mf_frame_transport_set_input(r->transport, msg, len);
  GError *err = NULL;
  dir_call_t *call = &r->dir->call;
  *call = (dir_call_t){.can_defer = (flags & DIR_RPC_CAN_DEFER) != 0 && wait_log != NULL,
                       .last_chance = (flags & DIR_RPC_LAST_CHANCE) != 0};
  gboolean ok = thrift_processor_process(r->processor, r->in_proto, r->out_proto, &err);
  dir_evlog_t *defer_log = call->defer_log;
  int64_t defer_ms = call->defer_ms;
  *call = (dir_call_t){0};
  if (ok && defer_log != NULL) {
    /* The handler's empty answer is not sent: the request runs again. */
    g_clear_error(&err);
    *wait_log = defer_log;
    *wait_ms = defer_ms;
    return 1;
  }
  r->dir->requests++;
  size_t olen;
  const uint8_t *reply = mf_frame_transport_output(r->transport, &olen);
  if (!ok) snprintf(why, whylen, "%s", err ? err->message : "unknown error");
  g_clear_error(&err);
  if (reply != NULL) g_byte_array_append(out, reply, (guint)olen);
  /* A failed call that produced no reply leaves the stream untrustworthy. */
  return ok || reply != NULL ? 0 : -1;
}

/* Hands replies to one uv_write (takes out). Returns 0, or -1 when the
 * connection must close. */
static int conn_send(conn_t *c, GByteArray *out) {
  if (out->len == 0 || c->closing) {
    g_byte_array_free(out, TRUE);
    return 0;
  }
  write_req_t *w = g_new0(write_req_t, 1);
  w->data = out;
  uv_buf_t b = uv_buf_init((char *)out->data, out->len);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_cb) < 0) {
    g_byte_array_free(out, TRUE);
    g_free(w);
    return -1;
  }
  return 0;
}

/* Reads while the peer's replies drain and nothing blocks the requests:
 * stops above the high-water mark of queued output, and while a deferred
 * request holds back a frame's worth of later requests. */
static void conn_update_reading(conn_t *c) {
  if (c->closing) return;
  size_t queued = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
  int held_back = c->deferred != NULL && c->len >= c->srv->max_frame;
  if (c->reading && (queued > OUT_HIGH_WATER || held_back)) {
    c->reading = 0;
    uv_read_stop((uv_stream_t *)&c->tcp);
  } else if (!c->reading && queued < OUT_LOW_WATER && !held_back) {
    c->reading = 1;
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
  }
}

static void deferred_fire(uv_timer_t *t);

static void deferred_wake(void *waiter) {
  deferred_t *df = waiter;
  uv_timer_start(&df->timer, deferred_fire, 0, 0);
}

/* Holds a request the handler deferred: waits on `log` for at most ms. */
static void deferred_start(conn_t *c, const uint8_t *msg, uint32_t len, dir_evlog_t *log,
                           int64_t ms) {
  deferred_t *df = g_new0(deferred_t, 1);
  df->c = c;
  df->frame = g_memdup2(msg, len);
  df->len = len;
  df->deadline = mf_now_ms() + ms;
  df->log = log;
  uv_timer_init(c->tcp.loop, &df->timer);
  df->timer.data = df;
  c->deferred = df;
  dir_events_wait(log, deferred_wake, df);
  uv_timer_start(&df->timer, deferred_fire, (uint64_t)ms, 0);
}

static void process_input(conn_t *c);

/* Runs a deferred request again: woken by an event, or its time is up. */
static void deferred_fire(uv_timer_t *t) {
  deferred_t *df = t->data;
  conn_t *c = df->c;
  dir_server_t *s = c->srv;
  dir_events_unwait(df->log, df);
  df->log = NULL;
  int64_t left = df->deadline - mf_now_ms();
  int flags = DIR_RPC_CAN_DEFER | (left <= 0 ? DIR_RPC_LAST_CHANCE : 0);
  GByteArray *out = g_byte_array_new();
  dir_evlog_t *wait_log = NULL;
  int64_t wait_ms = 0;
  char why[160] = "";
  int rc = dir_rpc_call(s->rpc, df->frame, df->len, flags, out, &wait_log, &wait_ms, why,
                        sizeof why);
  if (rc == 1) {
    /* Woken by events the watch does not want: wait on, same deadline. */
    g_byte_array_free(out, TRUE);
    df->log = wait_log;
    dir_events_wait(wait_log, deferred_wake, df);
    uv_timer_start(&df->timer, deferred_fire, (uint64_t)(left > 0 ? left : 0), 0);
    return;
  }
  deferred_drop(df);
  if (rc < 0) {
    MF_WARN("peer %s: malformed request (%s); closing the connection", c->peer, why);
    g_byte_array_free(out, TRUE);
    conn_close(c);
    return;
  }
  if (why[0] != '\0') MF_WARN("peer %s: request failed: %s", c->peer, why);
  if (conn_send(c, out) != 0) {
    conn_close(c);
    return;
  }
  /* The requests that waited behind it. */
  process_input(c);
}

static void process_input(conn_t *c) {
  dir_server_t *s = c->srv;
  GByteArray *out = g_byte_array_new();
  size_t pos = 0;
  int bad = 0;
  while (c->deferred == NULL && c->len - pos >= 4) {
    uint32_t flen = be32(c->buf + pos);
    if (flen > s->max_frame) {
      MF_WARN("peer %s: frame of %u bytes exceeds the limit of %u; closing the connection",
              c->peer, flen, s->max_frame);
      bad = 1;
      break;
    }
    if (c->len - pos - 4 < flen) break;
    char why[160] = "";
    dir_evlog_t *wait_log = NULL;
    int64_t wait_ms = 0;
    int rc = dir_rpc_call(s->rpc, c->buf + pos + 4, flen, DIR_RPC_CAN_DEFER, out, &wait_log,
                          &wait_ms, why, sizeof why);
    if (rc < 0) {
      MF_WARN("peer %s: malformed request (%s); closing the connection", c->peer, why);
      bad = 1;
      break;
    }
    if (rc == 1) deferred_start(c, c->buf + pos + 4, flen, wait_log, wait_ms);
    if (why[0] != '\0') MF_WARN("peer %s: request failed: %s", c->peer, why);
    pos += 4 + (size_t)flen;
  }
  memmove(c->buf, c->buf + pos, c->len - pos);
  c->len -= pos;
  /* Give memory back after a large frame. */
  if (c->cap > 4 * READ_CHUNK && c->len < READ_CHUNK) {
    c->buf = g_realloc(c->buf, 2 * READ_CHUNK);
    c->cap = 2 * READ_CHUNK;
  }
  if (conn_send(c, out) != 0) bad = 1;
  if (bad) {
    conn_close(c);
    return;
  }
  conn_update_reading(c);
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = stream->data;
  if (nread < 0) {
    if (nread != UV_EOF) MF_DEBUG("peer %s: read failed: %s", c->peer, uv_strerror((int)nread));
    conn_close(c);
    return;
  }
  c->len += (size_t)nread;
  process_input(c);
}

static void on_connection(uv_stream_t *listener, int status) {
  dir_server_t *s = listener->data;
  if (status < 0) {
    MF_WARN("accept failed: %s", uv_strerror(status));
    return;
  }
  conn_t *c = g_new0(conn_t, 1);
  c->srv = s;
  uv_tcp_init(listener->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
    return;
  }
  s->dir->connections_open++;
  s->dir->connections_total++;
  c->link = s->conns = g_list_prepend(s->conns, c);
  mf_peer_name(&c->tcp, c->peer, sizeof c->peer);
  if ((int64_t)s->dir->connections_open > s->dir->cfg.max_connections) {
    MF_WARN("peer %s: refused, %lld connections already open", c->peer,
            (long long)s->dir->cfg.max_connections);
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  c->reading = 1;
  uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

static void free_unstarted(uv_handle_t *h) {
  g_free(h->data);
}

int dir_server_start(dir_t *d, const char *host, int port, dir_server_t **out,
                     int *bound_port) {
  struct sockaddr_storage addr;
  int rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
  if (rc != 0) rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr);
  if (rc != 0) return rc;

  dir_server_t *s = g_new0(dir_server_t, 1);
  s->dir = d;
  s->max_frame = (uint32_t)d->cfg.max_frame;
  uv_tcp_init(d->loop, &s->listener);
  s->listener.data = s;
  rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
  if (rc != 0) {
    uv_close((uv_handle_t *)&s->listener, free_unstarted);
    return rc;
  }
  struct sockaddr_storage bound;
  int blen = sizeof bound;
  uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen);
  *bound_port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                  : ((struct sockaddr_in *)&bound)->sin_port);

  s->rpc = dir_rpc_new(d);
  *out = s;
  return 0;
}

static void listener_closed(uv_handle_t *h) {
  dir_server_t *s = h->data;
  dir_rpc_free(s->rpc);
  g_free(s);
}

void dir_server_stop(dir_server_t *s) {
  if (s == NULL || s->stopping) return;
  s->stopping = 1;
  while (s->conns != NULL) conn_close(s->conns->data);
  uv_close((uv_handle_t *)&s->listener, listener_closed);
}
