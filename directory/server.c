/*
 * Control-plane server on libuv (see server.h): the Thrift protocol and the
 * deferred watches on the shared connection layer (common/netserver.h),
 * which owns the sockets, buffers, back-pressure and timeouts.
 */
#include "directory/server.h"

#include <mayfly_directory.h>
#include <string.h>
#include <thrift/c_glib/protocol/thrift_compact_protocol.h>

#include "common/compact_scan.h"
#include "common/config.h"
#include "common/error.h"
#include "common/frame_transport.h"
#include "common/log.h"
#include "common/netserver.h"
#include "directory/ha.h"
#include "directory/handler.h"
#include "directory/limits.h"

typedef struct conn conn_t;

struct dir_rpc {
  dir_t *dir;
  MayflyDirectoryHandler *handler;
  ThriftProcessor *processor;
  MfFrameTransport *transport;
  ThriftProtocol *in_proto;
  ThriftProtocol *out_proto;
};

struct dir_server {
  dir_t *dir;
  mf_net_server_t *net; /* sockets, buffers, back-pressure, timeouts (common/netserver.h) */
  dir_rpc_t *rpc;
  uint32_t max_frame;
  GByteArray *out;      /* one call's reply, before it is handed to the connection */
  GQueue held;          /* held_t: replies waiting for their records to be durable */
  int stopping;
};

/* A reply produced while some applied record was not on disk yet: it goes
 * out once the store says record `seq` is (store.h). Its bytes count in the
 * connection's backlog meanwhile (mf_net_reserve), so the caps still hold. */
typedef struct held {
  conn_t *c; /* holds a reference */
  int64_t seq;
  size_t len;
  uint8_t data[];
} held_t;

/* A request held until its watch has something to say (see server.h). Its
 * frame stays first in the connection's input buffer meanwhile. */
typedef struct deferred {
  uv_timer_t timer; /* fires at the deadline, or at once when woken */
  conn_t *c;        /* holds a reference */
  int64_t deadline; /* monotonic ms */
  dir_evlog_t *log; /* the log it waits on, NULL while running */
} deferred_t;

/* A control connection: the layer's part first, then the directory's. */
struct conn {
  mf_net_conn_t net;
  dir_server_t *srv;
  deferred_t *deferred; /* at most one: later requests wait behind it */
  dir_session_t session;
};

static void deferred_closed(uv_handle_t *h) {
  deferred_t *df = h->data;
  mf_net_conn_unref(&df->c->net);
  g_free(df);
}

/* Forgets a deferred request: no longer woken, its memory freed once the
 * loop closed its timer. */
static void deferred_drop(deferred_t *df) {
  if (df->log != NULL) dir_events_unwait(df->log, df);
  df->log = NULL;
  df->c->deferred = NULL;
  uv_timer_stop(&df->timer);
  uv_close((uv_handle_t *)&df->timer, deferred_closed);
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
  return r;
}

void dir_rpc_free(dir_rpc_t *r) {
  if (r == NULL) return;
  g_object_unref(r->processor);
  g_object_unref(r->handler);
  g_object_unref(r->in_proto);
  g_object_unref(r->out_proto);
  g_object_unref(r->transport);
  g_free(r);
}

int dir_rpc_call(dir_rpc_t *r, dir_session_t *session, const uint8_t *msg, uint32_t len,
                 int flags, GByteArray *out, dir_evlog_t **wait_log, int64_t *wait_ms,
                 char *why, size_t whylen) {
  mf_compact_msg_t hdr;
  /* The caps of the method (limits.h), before Thrift decodes anything. */
  if (mf_compact_scan(msg, len, MF_COMPACT_MAX_DEPTH, dir_limits, &hdr, why, whylen) != 0) {
    return -1;
  }
  /* Only calls of the service's methods (the table) reach the processor:
   * Thrift c_glib leaks on unknown names and other message types. */
  if (hdr.type != MF_COMPACT_CALL || hdr.method == NULL) {
    snprintf(why, whylen, "not a call of a known method");
    return -1;
  }
  mf_frame_transport_set_input(r->transport, msg, len);
  GError *err = NULL;
  dir_call_t *call = &r->dir->call;
  *call = (dir_call_t){.can_defer = (flags & DIR_RPC_CAN_DEFER) != 0 && wait_log != NULL,
                       .last_chance = (flags & DIR_RPC_LAST_CHANCE) != 0,
                       .session = session};
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

static void deferred_fire(uv_timer_t *t);

static void deferred_wake(void *waiter) {
  deferred_t *df = waiter;
  uv_timer_start(&df->timer, deferred_fire, 0, 0);
}

/* A deferred request is woken by an event, or its time is up: the layer
 * serves its frame again (dir_serve). */
static void deferred_fire(uv_timer_t *t) {
  deferred_t *df = t->data;
  if (df->log != NULL) dir_events_unwait(df->log, df);
  df->log = NULL;
  mf_net_conn_release(&df->c->net);
}

static int dir_frame(mf_net_conn_t *nc, const uint8_t *buf, size_t len, size_t *flen) {
  conn_t *c = (conn_t *)nc;
  *flen = 0;
  if (len < 4) return MAYFLY_EAGAIN;
  uint32_t n = be32(buf);
  if (n > c->srv->max_frame) return MAYFLY_ETOOBIG;
  *flen = 4 + (size_t)n;
  return len >= *flen ? 0 : MAYFLY_EAGAIN;
}

/* Serves one frame, or defers it: the frame then stays first in the input
 * buffer (MF_NET_RETRY with the connection held) and runs again when its
 * watch is woken or its time is up, the last time with "answer now". */
static int dir_serve(mf_net_conn_t *nc, const uint8_t *frame, size_t flen) {
  conn_t *c = (conn_t *)nc;
  dir_server_t *s = c->srv;
  deferred_t *df = c->deferred;
  int flags = DIR_RPC_CAN_DEFER;
  int64_t left = 0;
  if (df != NULL) {
    left = df->deadline - mf_now_ms();
    if (left <= 0) flags |= DIR_RPC_LAST_CHANCE;
  }
  dir_evlog_t *wait_log = NULL;
  int64_t wait_ms = 0;
  char why[160] = "";
  /* A reply is at most one frame and its size is known only once the call
   * ran: the call runs when a largest one has room under the backlog caps
   * (else the frame waits buffered, mf_net_fits), so the total holds. */
  if (!mf_net_fits(nc, (size_t)s->max_frame + 4)) return MF_NET_RETRY;
  g_byte_array_set_size(s->out, 0);
  int rc = dir_rpc_call(s->rpc, &c->session, frame + 4, (uint32_t)(flen - 4), flags, s->out, &wait_log,
                        &wait_ms, why, sizeof why);
  if (rc < 0) {
    MF_WARN("peer %s: malformed request (%s); closing the connection", nc->peer, why);
    return MAYFLY_EPROTO;
  }
  if (rc == 1) {
    if (df == NULL) {
      df = g_new0(deferred_t, 1);
      df->c = c;
      df->deadline = mf_now_ms() + wait_ms;
      mf_net_conn_ref(nc);
      uv_timer_init(nc->tcp.loop, &df->timer);
      df->timer.data = df;
      c->deferred = df;
    } else {
      /* Woken by events the watch does not want: wait on, same deadline. */
      wait_ms = left > 0 ? left : 0;
    }
    df->log = wait_log;
    dir_events_wait(wait_log, deferred_wake, df);
    uv_timer_start(&df->timer, deferred_fire, (uint64_t)wait_ms, 0);
    mf_net_conn_hold(nc);
    return MF_NET_RETRY;
  }
  if (df != NULL) deferred_drop(df);
  if (why[0] != '\0') MF_WARN("peer %s: request failed: %s", nc->peer, why);
  int64_t seq = s->dir->store != NULL ? dir_store_unsynced(s->dir->store)
                : s->dir->ha != NULL  ? dir_ha_unsynced(s->dir->ha)
                                      : 0;
  if (seq == 0) {
    mf_net_send(nc, s->out->data, s->out->len);
    return 0;
  }
  /* The call changed the tree, or may have seen a change, that is not on
   * disk yet: its answer waits for the group commit (replies of one
   * connection keep their order, since every later one waits too). */
  held_t *h = g_malloc(sizeof *h + s->out->len);
  h->c = c;
  h->seq = seq;
  h->len = s->out->len;
  memcpy(h->data, s->out->data, h->len);
  mf_net_conn_ref(nc);
  mf_net_reserve(nc, h->len);
  g_queue_push_tail(&s->held, h);
  return 0;
}

/* Drops a held reply unsent. */
static void held_drop(held_t *h) {
  mf_net_unreserve(&h->c->net, h->len);
  mf_net_conn_unref(&h->c->net);
  g_free(h);
}

/* The store's durable callback: sends the replies whose records are on disk. */
static void on_durable(void *ud, int64_t seq) {
  dir_server_t *s = ud;
  held_t *h;
  while ((h = g_queue_peek_head(&s->held)) != NULL && h->seq <= seq) {
    g_queue_pop_head(&s->held);
    const held_t *next = g_queue_peek_head(&s->held);
    mf_net_unreserve(&h->c->net, h->len);
    mf_net_send(&h->c->net, h->data, h->len);
    /* One write for a connection's run of replies. */
    if (next == NULL || next->seq > seq || next->c != h->c) mf_net_flush(&h->c->net);
    mf_net_conn_unref(&h->c->net);
    g_free(h);
  }
}

static void dir_conn_open(mf_net_conn_t *nc) {
  conn_t *c = (conn_t *)nc;
  c->srv = mf_net_server_data(nc->srv);
  /* Filled once the connection is accepted; lives as long as the session. */
  c->session.peer = nc->peer;
  c->srv->dir->connections_open++;
  c->srv->dir->connections_total++;
}

static void dir_conn_close(mf_net_conn_t *nc) {
  conn_t *c = (conn_t *)nc;
  if (c->deferred != NULL) deferred_drop(c->deferred);
  dir_session_clear(&c->session);
  c->srv->dir->connections_open--;
}

static void dir_net_stopped(void *ud) {
  dir_server_t *s = ud;
  dir_rpc_free(s->rpc);
  g_byte_array_free(s->out, TRUE);
  g_free(s);
}

static const mf_net_proto_t dir_proto = {.conn_size = sizeof(conn_t),
                                         .on_open = dir_conn_open,
                                         .frame = dir_frame,
                                         .serve = dir_serve,
                                         .on_close = dir_conn_close,
                                         .on_stopped = dir_net_stopped};

int dir_server_start(dir_t *d, const char *host, int port, dir_server_t **out, int *bound_port,
                     char *why, size_t whylen) {
  dir_server_t *s = g_new0(dir_server_t, 1);
  s->dir = d;
  s->max_frame = (uint32_t)d->cfg.max_frame;
  mf_net_config_t net = {.host = host,
                         .port = port,
                         .max_connections = d->cfg.max_connections,
                         .read_buffer = d->cfg.read_buffer,
                         .input_total = d->cfg.input_total,
                         .reply_backlog = d->cfg.reply_backlog,
                         .reply_backlog_total = d->cfg.reply_backlog_total,
                         .frame_timeout_ms = d->cfg.frame_timeout_ms,
                         .idle_timeout_ms = d->cfg.idle_timeout_ms,
                         .send_timeout_ms = d->cfg.send_timeout_ms};
  int rc = mf_net_server_start(d->loop, &net, &dir_proto, s, &s->net, bound_port, why, whylen);
  if (rc != 0) {
    g_free(s);
    return rc;
  }
  s->rpc = dir_rpc_new(d);
  s->out = g_byte_array_new();
  g_queue_init(&s->held);
  if (d->store != NULL) dir_store_set_durable_cb(d->store, on_durable, s);
  *out = s;
  return 0;
}

void dir_server_bind_ha(dir_server_t *s) {
  dir_ha_set_durable_cb(s->dir->ha, on_durable, s);
}

void dir_server_stop(dir_server_t *s) {
  if (s == NULL || s->stopping) return;
  s->stopping = 1;
  if (s->dir->store != NULL) dir_store_set_durable_cb(s->dir->store, NULL, NULL);
  if (s->dir->ha != NULL) dir_ha_set_durable_cb(s->dir->ha, NULL, NULL);
  /* Replies not durable yet are never sent: their connections close now. */
  held_t *h;
  while ((h = g_queue_pop_head(&s->held)) != NULL) held_drop(h);
  mf_net_server_stop(s->net);
}
