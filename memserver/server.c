/*
 * The memory server's data plane on libuv (see server.h): its protocol on
 * the shared connection layer (common/netserver.h: sockets, buffers,
 * back-pressure, timeouts), replies, the caps on parked and held requests,
 * and start and stop. Serving a frame is handlers.c; requests that wait are
 * defer.c (held, parked, awaiting publication) and waiters.c (pops).
 */
#include "memserver/server.h"

#include <stdio.h>
#include <string.h>

#include "common/check.h"
#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "common/netserver.h"
#include "common/wire.h"
#include "memserver/internal.h"

#define RP_SCAN_MS 20 /* how often blocks waiting to retry a repartition are looked at */

void ms__conn_unref(conn_t *c) {
  MF_CHECK(c->net.refs > 0);
  mf_net_conn_unref(&c->net);
}

void ms__flush(conn_t *c) {
  mf_net_flush(&c->net);
}

int ms__reply_fits(conn_t *c, uint64_t n) {
  /* A captured reply (chain.c) is kept, not queued on the socket now. */
  if (c->capture != NULL || !c->serving || mf_net_fits(&c->net, WIRE_HEADER_SIZE + n)) return 1;
  c->retry = 1;
  return 0;
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

/* Keeps a reply in c's capture (a replicated write, chain.c). */
static void capture_reply(ms_capture_t *cap, int status, uint16_t flags, uint64_t a0,
                          uint64_t a1, uint32_t a2, const void *payload, uint32_t plen) {
  if (cap->replied) return; /* the first answer is the write's */
  cap->replied = 1;
  cap->reply = (ms_dedup_reply_t){.status = status,
                                  .flags = flags,
                                  .arg0 = a0,
                                  .arg1 = a1,
                                  .arg2 = a2,
                                  .plen = plen,
                                  .payload = plen > 0 ? g_memdup2(payload, plen) : NULL};
}

void ms__reply(conn_t *c, const wire_hdr_t *req, int status, uint16_t flags, uint64_t a0,
                  uint64_t a1, uint32_t a2, const void *payload, uint32_t plen) {
  if (c->capture != NULL) {
    capture_reply(c->capture, status, flags, a0, a1, a2, payload, plen);
    return;
  }
  if (c->net.closing) return;
  if (plen < MF_NET_ZERO_COPY_MIN) {
    /* The common case: header and payload are written straight into the
     * connection's output buffer. */
    uint8_t *out = mf_net_send_buf(&c->net, WIRE_HEADER_SIZE + (size_t)plen);
    ms__reply_header(req, status, flags, a0, a1, a2, plen, out);
    if (plen > 0) memcpy(out + WIRE_HEADER_SIZE, payload, plen);
    return;
  }
  uint8_t hdr[WIRE_HEADER_SIZE];
  ms__reply_header(req, status, flags, a0, a1, a2, plen, hdr);
  /* A large payload (a file read) goes to the socket straight from block
   * memory when the socket takes it now (mf_net_send_zc). */
  mf_net_send_zc(&c->net, hdr, WIRE_HEADER_SIZE, payload, plen);
}

void ms__reply_status(conn_t *c, const wire_hdr_t *req, int status) {
  ms__reply(c, req, status, 0, 0, 0, 0, NULL, 0);
}

/* Frees the server once its connections and timer are closed and no worker
 * job is left. */
void ms__server_free(ms_server_t *s) {
  if (!s->closed || !s->rp_timer_closed || !s->chain_timer_closed || s->rp_jobs > 0) return;
  g_hash_table_destroy(s->parked);
  g_hash_table_destroy(s->peers);
  g_hash_table_destroy(s->chain_dirty);
  mf_pool_free(s->rp_pool);
  g_free(s->directory);
  g_hash_table_destroy(s->rp_retry);
  mf_auth_wipe(s->key, sizeof s->key);
  g_free(s);
}

int64_t ms__wall_ms(ms_server_t *s) {
  uint64_t now = uv_now(s->loop);
  if (s->wall_ms == 0 || now != s->wall_at) {
    s->wall_at = now;
    s->wall_ms = g_get_real_time() / 1000;
  }
  return s->wall_ms;
}

uint32_t ms__server_id(ms_server_t *s) {
  int32_t id = ms_control_server_id(s->ctl);
  if (id > 0) s->cap_server_id = (uint32_t)id;
  return s->cap_server_id;
}

static int is_migrate(uint8_t op) {
  return op == WIRE_OP_KV_MIGRATE || op == WIRE_OP_KV_MIGRATE_ABORT;
}

static void ms_conn_open(mf_net_conn_t *nc) {
  conn_t *c = (conn_t *)nc;
  c->srv = mf_net_server_data(nc->srv);
  g_queue_init(&c->waiters);
  c->blocked_link.data = c;
}

static int ms_frame(mf_net_conn_t *nc, const uint8_t *buf, size_t len, size_t *flen) {
  conn_t *c = (conn_t *)nc;
  return wire_parse(buf, len, c->srv->max_payload, &c->hdr, flen);
}

/* Whether c may not add parked or held copies now: it is over its own cap,
 * or the server is over the total. */
static int deferred_over(const conn_t *c) {
  const ms_server_t *s = c->srv;
  return c->deferred >= s->deferred_max || s->deferred_total >= s->deferred_total_max;
}

static int ms_serve(mf_net_conn_t *nc, const uint8_t *frame, size_t flen) {
  conn_t *c = (conn_t *)nc;
  ms_server_t *s = c->srv;
  /* A repartition's copy is never blocked: it is what releases held
   * requests; nor is a chain's forward (what acknowledges pending writes). */
  if (!is_migrate(c->hdr.opcode) && c->hdr.opcode != WIRE_OP_CHAIN_FWD && deferred_over(c)) {
    if (!c->blocked) {
      c->blocked = 1;
      mf_net_conn_ref(nc);
      g_queue_push_tail_link(&s->deferred_blocked, &c->blocked_link);
    }
    mf_net_conn_hold(nc);
    return MF_NET_RETRY;
  }
  c->serving = 1;
  c->retry = 0;
  ms__handle(c, &c->hdr, frame, flen, 1);
  c->serving = 0;
  return c->retry ? MF_NET_RETRY : 0;
}

void ms__deferred_released(ms_server_t *s) {
  GList *l;
  while ((l = g_queue_pop_head_link(&s->deferred_blocked)) != NULL) {
    conn_t *c = l->data;
    c->blocked = 0;
    mf_net_conn_release(&c->net);
    ms__conn_unref(c);
  }
}

static void ms_conn_close(mf_net_conn_t *nc) {
  conn_t *c = (conn_t *)nc;
  waiter_t *w;
  while ((w = g_queue_peek_head(&c->waiters)) != NULL) ms__waiter_finish(w);
  if (c->blocked) {
    c->blocked = 0;
    g_queue_unlink(&c->srv->deferred_blocked, &c->blocked_link);
    ms__conn_unref(c);
  }
}

static void ms_conn_free(mf_net_conn_t *nc) {
  conn_t *c = (conn_t *)nc;
  if (c->caps != NULL) {
    mf_auth_wipe(c->caps, sizeof *c->caps);
    g_free(c->caps);
  }
}

static void ms_net_stopped(void *ud) {
  ms_server_t *s = ud;
  s->closed = 1;
  ms__server_free(s);
}

static const mf_net_proto_t ms_proto = {.conn_size = sizeof(conn_t),
                                        .on_open = ms_conn_open,
                                        .frame = ms_frame,
                                        .serve = ms_serve,
                                        .on_close = ms_conn_close,
                                        .on_free = ms_conn_free,
                                        .on_stopped = ms_net_stopped};

int ms_server_start(uv_loop_t *loop, store_t *store, const ms_server_config_t *cfg,
                    ms_server_t **out, int *bound_port, char *why, size_t whylen) {
  ms_server_t *s = g_new0(ms_server_t, 1);
  s->loop = loop;
  s->store = store;
  /* A frame carries at most one block's worth of data plus a key. */
  s->max_payload = (uint32_t)MIN((uint64_t)store->block_size + WIRE_KEY_MAX, UINT32_MAX - 4096);
  s->deferred_max = cfg->deferred_max;
  s->deferred_total_max = cfg->deferred_total_max;
  s->pops_max = cfg->pops_max;
  s->pops_total_max = cfg->pops_total_max;
  s->has_key = cfg->cluster_key != NULL;
  if (s->has_key) memcpy(s->key, cfg->cluster_key, MF_KEY_SIZE);
  s->on_fatal = cfg->on_fatal;
  s->fatal_ud = cfg->fatal_ud;
  g_queue_init(&s->deferred_blocked);
  g_queue_init(&s->awaiting);
  int rc = mf_net_server_start(loop, &cfg->net, &ms_proto, s, &s->net, bound_port, why, whylen);
  if (rc != 0) {
    g_free(s);
    return rc;
  }
  s->parked = g_hash_table_new(g_direct_hash, g_direct_equal);
  s->directory = g_strdup(cfg->directory);
  s->rp_pool = mf_pool_new(2000);
  s->rp_retry = g_hash_table_new(g_direct_hash, g_direct_equal);
  uv_timer_init(loop, &s->rp_timer);
  s->rp_timer.data = s;
  uv_timer_start(&s->rp_timer, ms__rp_scan, RP_SCAN_MS, RP_SCAN_MS);
  char adv[300];
  if (cfg->advertise != NULL) {
    snprintf(adv, sizeof adv, "%s", cfg->advertise);
  } else {
    snprintf(adv, sizeof adv, strchr(cfg->net.host, ':') ? "[%s]:%d" : "%s:%d", cfg->net.host,
             *bound_port);
  }
  const uint8_t *key = s->has_key ? s->key : NULL;
  ms__chain_start(s, cfg);
  ms__replcopy_start(s);
  s->ctl = ms_control_start(loop, cfg->directory, adv, cfg->zone, store->nblocks,
                            store->block_size, key, ms__on_control_event, s);
  s->pub = ms_publisher_start(loop, cfg->directory, s->ctl, key, ms__on_published, s);
  *out = s;
  return 0;
}

static void rp_timer_closed(uv_handle_t *h) {
  ms_server_t *s = h->data;
  s->rp_timer_closed = 1;
  ms__server_free(s);
}

void ms_server_stop(ms_server_t *s) {
  if (s == NULL || s->stopping) return;
  s->stopping = 1;
  ms_control_stop(s->ctl);
  /* Replies held for events not yet published are never sent: nobody will
   * number those events now, and a write is not acknowledged without its
   * event (its client sees the connection close). */
  ms_publisher_stop(s->pub);
  ms__drop_published(s);
  /* Requests still waiting for the directory will not be answered now. */
  GHashTableIter it;
  gpointer key;
  g_hash_table_iter_init(&it, s->parked);
  GList *keys = NULL;
  while (g_hash_table_iter_next(&it, &key, NULL)) keys = g_list_prepend(keys, key);
  for (GList *k = keys; k; k = k->next) ms__replay_parked(s, GPOINTER_TO_INT(k->data), MAYFLY_EIO);
  g_list_free(keys);
  uv_timer_stop(&s->rp_timer);
  uv_close((uv_handle_t *)&s->rp_timer, rp_timer_closed);
  ms__replcopy_stop(s);
  ms__chain_stop(s);
  for (int32_t i = 0; i < s->store->nblocks; i++) {
    store_block_t *b = &s->store->blocks[i];
    ms__wake_all(b, MAYFLY_EIO);
    ms__replay_held(b, MAYFLY_EIO);
    if (b->waiters != NULL) g_queue_free(b->waiters);
    b->waiters = NULL;
  }
  mf_net_server_stop(s->net);
}

