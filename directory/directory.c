/*
 * The directory's state and its periodic work (see directory.h).
 */
#include "directory/directory.h"
#include "directory/chains.h"
#include "directory/ha.h"
#include "directory/repart.h"
#include "directory/tenants.h"

#include "common/check.h"
#include "common/auth.h"
#include "common/config.h"
#include "common/error.h"
#include "common/log.h"

static void server_rt_free(dir_server_rt_t *rt) {
  if (rt == NULL) return;
  g_array_free(rt->pending_release, TRUE);
  g_array_free(rt->pending_rechain, TRUE);
  g_free(rt);
}

dir_server_rt_t *dir_server_rt(dir_t *d, int32_t id) {
  dir_server_rt_t *rt = g_hash_table_lookup(d->servers_rt, GINT_TO_POINTER(id));
  if (rt == NULL) {
    rt = g_new0(dir_server_rt_t, 1);
    rt->pending_release = g_array_new(FALSE, FALSE, sizeof(ns_block_t));
    rt->pending_rechain = g_array_new(FALSE, FALSE, sizeof(ns_block_t));
    rt->last_heartbeat_ms = mf_now_ms();
    g_hash_table_insert(d->servers_rt, GINT_TO_POINTER(id), rt);
  }
  return rt;
}

int dir_apply(dir_t *d, ns_record_t *rec, ns_effects_t *fx, char *why, size_t whylen) {
  ns_effects_t local;
  ns_effects_t *e = fx;
  if (e == NULL) {
    ns_effects_init(&local);
    e = &local;
  }
  rec->now_ms = rec->now_ms ? rec->now_ms : mf_now_ms();
  rec->wall_ms = rec->wall_ms ? rec->wall_ms : mf_wall_ms();
  if (rec->req_client == 0) {
    rec->req_client = d->call.req_client;
    rec->req_seq = d->call.req_seq;
  }
  guint freed_before = e->freed->len, removed_before = e->removed->len;
  guint rechain_before = e->rechain->len;
  dir_events_pre_t pre;
  dir_events_before(d->events, d->tree, rec, &pre);
  int rc = ns_tree_apply(d->tree, rec, e, why, whylen);
  if (rc == 0) dir_events_after(d->events, d->tree, rec, e, removed_before, &pre);
  dir_events_pre_clear(&pre);
  if (rc == 0) {
    for (guint i = freed_before; i < e->freed->len; i++) {
      ns_block_t *b = &g_array_index(e->freed, ns_block_t, i);
      g_array_append_val(dir_server_rt(d, b->server)->pending_release, *b);
      /* A layout change (the namespace lives on): events of the block may
       * still be on their way from its memory server. */
      if (rec->type != NS_REC_REMOVE && rec->path != NULL) {
        dir_events_retire(d->events, b->server, b->index, b->generation, rec->path, rec->now_ms);
      }
    }
    dir_chains_applied(d, rec, e, rechain_before, freed_before);
    for (guint i = removed_before; i < e->removed->len; i++) {
      MF_DEBUG("namespace %s: %s", (char *)g_ptr_array_index(e->removed, i),
               (rec->flags & NS_REC_EXPIRED) ? "lease expired" : "removed");
    }
  }
  if (e == &local) ns_effects_clear(&local);
  return rc;
}

int dir_reap(dir_t *d) {
  ns_effects_t fx;
  ns_effects_init(&fx);
  int64_t now = mf_now_ms();
  int n = ns_tree_reap(d->tree, now, &fx);
  /* The reaper applies its records itself: number their events here. */
  ns_record_t expired = {.type = NS_REC_REMOVE, .flags = NS_REC_EXPIRED, .wall_ms = mf_wall_ms()};
  dir_events_after(d->events, d->tree, &expired, &fx, 0, NULL);
  for (guint i = 0; i < fx.freed->len; i++) {
    ns_block_t *b = &g_array_index(fx.freed, ns_block_t, i);
    g_array_append_val(dir_server_rt(d, b->server)->pending_release, *b);
  }
  for (guint i = 0; i < fx.removed->len; i++) {
    MF_INFO("namespace %s: lease expired", (char *)g_ptr_array_index(fx.removed, i));
  }
  if (fx.freed->len > 0) {
    MF_INFO("lease reaper: %d nodes expired, %u blocks returned to the pool", n, fx.freed->len);
  }
  ns_effects_clear(&fx);
  return n;
}

static void reaper_cb(uv_timer_t *t) {
  dir_reap(t->data);
}

static void sweep_cb(uv_timer_t *t) {
  dir_t *d = t->data;
  dir_events_sweep(d->events, mf_now_ms());
}

int dir_data_armed(dir_t *d, dir_evlog_t *log) {
  if (log->armed) return 1;
  /* Every server that is up, not only those holding the namespace now: a
   * split or growth may put a block of it on any of them at any time. */
  ns_alloc_t *a = d->tree->alloc;
  for (guint i = 0; i < a->servers->len; i++) {
    const ns_server_t *s = g_ptr_array_index(a->servers, i);
    if (!s->up) continue; /* a server that is down publishes nothing anyway */
    if (dir_server_rt(d, s->id)->watch_acked < log->data_version) return 0;
  }
  log->armed = 1;
  return 1;
}

/* Marks servers that stopped heartbeating as down (and up again when they
 * come back, which the heartbeat handler does). */
static void health_cb(uv_timer_t *t) {
  dir_t *d = t->data;
  int64_t now = mf_now_ms();
  ns_alloc_t *a = d->tree->alloc;
  for (guint i = 0; i < a->servers->len; i++) {
    ns_server_t *s = g_ptr_array_index(a->servers, i);
    dir_server_rt_t *rt = dir_server_rt(d, s->id);
    if (s->up && now - rt->last_heartbeat_ms > d->cfg.heartbeat_timeout_ms) {
      ns_record_t rec = {.type = NS_REC_SERVER_STATE, .server_id = s->id, .up = 0};
      dir_apply(d, &rec, NULL, NULL, 0);
      MF_WARN("memory server %s (id %d): no heartbeat for %lld ms, marked down", s->address,
              s->id, (long long)(now - rt->last_heartbeat_ms));
    }
  }
  dir_repart_expire(d, now);
}

/* Every server a taken-over tree knows must register again (so that it
 * reconciles its blocks with the layout), and counts as heard from now. */
static void mark_registered_again(dir_t *d) {
  for (guint i = 0; i < d->tree->alloc->servers->len; i++) {
    const ns_server_t *s = g_ptr_array_index(d->tree->alloc->servers, i);
    dir_server_rt_t *rt = dir_server_rt(d, s->id);
    rt->needs_register = 1;
    rt->last_heartbeat_ms = mf_now_ms();
  }
}

void dir_adopt_tree(dir_t *d, ns_tree_t *tree) {
  MF_CHECK(ns_tree_count(d->tree) <= 1 && d->tree->alloc->servers->len == 0);
  ns_tree_free(d->tree);
  d->tree = tree;
  ns_tree_restart_times(tree, mf_now_ms());
  mark_registered_again(d);
  dir_repart_recover(d);
  dir_chains_recover(d);
}

int dir_init(dir_t *d, uv_loop_t *loop, const dir_config_t *cfg, dir_store_t *store,
             ns_tree_t *tree) {
  d->cfg = *cfg;
  d->loop = loop;
  d->store = store;
  d->tree = tree != NULL ? tree : ns_tree_new(cfg->lease_ms, cfg->grace_ms);
  d->servers_rt = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL,
                                        (GDestroyNotify)server_rt_free);
  mark_registered_again(d);
  if (d->cfg.replicas < 1) d->cfg.replicas = 1;
  if (d->cfg.copy_timeout_ms <= 0) d->cfg.copy_timeout_ms = 30000;
  if (d->cfg.heartbeat_ms <= 0) d->cfg.heartbeat_ms = 1000;
  if (tree != NULL) dir_repart_recover(d);
  d->started_ms = mf_now_ms();
  d->events = dir_events_new(mf_wall_ms());
  int64_t every = cfg->reap_interval_ms;
  if (every <= 0) {
    /* Often enough that expiry lands within a tenth of the shortest window. */
    every = (cfg->lease_ms + cfg->grace_ms) / 10;
    if (every < 20) every = 20;
    if (every > 1000) every = 1000;
  }
  uv_timer_init(loop, &d->reaper);
  d->reaper.data = d;
  uv_timer_start(&d->reaper, reaper_cb, (uint64_t)every, (uint64_t)every);
  uv_timer_init(loop, &d->health);
  d->health.data = d;
  int64_t hc = cfg->heartbeat_timeout_ms / 4 > 10 ? cfg->heartbeat_timeout_ms / 4 : 10;
  uv_timer_start(&d->health, health_cb, (uint64_t)hc, (uint64_t)hc);
  uv_timer_init(loop, &d->sweep);
  d->sweep.data = d;
  uv_timer_start(&d->sweep, sweep_cb, 1000, 1000);
  dir_chains_init(d);
  return 0;
}

void dir_session_clear(dir_session_t *s) {
  const char *peer = s->peer;
  g_free(s->tenant);
  mf_auth_wipe(s->nonce, sizeof s->nonce);
  *s = (dir_session_t){.peer = peer};
}

void dir_stop(dir_t *d) {
  uv_timer_stop(&d->reaper);
  uv_timer_stop(&d->health);
  uv_timer_stop(&d->sweep);
  uv_close((uv_handle_t *)&d->reaper, NULL);
  uv_close((uv_handle_t *)&d->health, NULL);
  uv_close((uv_handle_t *)&d->sweep, NULL);
  dir_chains_stop(d);
  dir_store_stop(d->store);
  if (d->ha != NULL) dir_ha_stop(d->ha);
}

void dir_free(dir_t *d) {
  dir_store_close(d->store);
  d->store = NULL;
  dir_ha_free(d->ha);
  d->ha = NULL;
  g_free(d->advertise);
  d->advertise = NULL;
  ns_tree_free(d->tree);
  g_hash_table_destroy(d->servers_rt);
  dir_events_free(d->events);
  d->events = NULL;
  if (d->reparts != NULL) g_hash_table_destroy(d->reparts);
  d->reparts = NULL;
  dir_chains_free(d);
  dir_tenants_free(d->tenants);
  d->tenants = NULL;
  d->tree = NULL;
  d->servers_rt = NULL;
}
