/*
 * Replication, the directory's side (see chains.h).
 */
#include "directory/chains.h"

#include <mayfly_control_types.h>
#include <string.h>

#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "directory/limits.h"

/* A copy under way (NS_REC_REPLICA_BEGIN applied, not ended yet): enough to
 * find its partition again (through the copy block's owner, so a rename in
 * between does not matter) and to tell when it must be aborted. */
typedef struct dir_copy_rt {
  int64_t op_id;
  ns_block_t copy;     /* the block being filled */
  ns_block_t tail;     /* the tail that fills it, as of the begin */
  int64_t started_ms;  /* monotonic */
} dir_copy_rt_t;

static guint block_hash(gconstpointer p) {
  const ns_block_t *b = p;
  return (guint)b->server * 2654435761u ^ (guint)b->index * 40503u ^ (guint)b->generation;
}

static gboolean block_equal(gconstpointer a, gconstpointer b) {
  const ns_block_t *x = a, *y = b;
  return x->server == y->server && x->index == y->index && x->generation == y->generation;
}

static int same_block(const ns_block_t *a, const ns_block_t *b) { return block_equal(a, b); }

/* The namespace block b belongs to, if b is still taken with that generation. */
static ns_node_t *owner_of(const dir_t *d, const ns_block_t *b) {
  ns_server_t *s = ns_alloc_server(d->tree->alloc, b->server);
  if (s == NULL || b->index < 0 || b->index >= s->nblocks || !s->in_use[b->index] ||
      s->generation[b->index] != b->generation) {
    return NULL;
  }
  return s->owner[b->index];
}

/* Where block b is now: its namespace, partition and place in the chain
 * (-1: the copy). 0, or MAYFLY_ENOENT when b is no chain's any more. */
static int locate(const dir_t *d, const ns_block_t *b, ns_node_t **n, ns_partition_t **p,
                  int *member) {
  ns_node_t *owner = owner_of(d, b);
  int pi = -1, mi = -1;
  if (owner == NULL || ns_node_find_block(owner, b, &pi, &mi) != 0) return MAYFLY_ENOENT;
  ns_partition_t *part = &g_array_index(owner->layout.parts, ns_partition_t, pi);
  const ns_block_t *at = mi < 0 ? &part->copy : ns_part_member(part, mi);
  if (!same_block(at, b)) return MAYFLY_ENOENT;
  *n = owner;
  *p = part;
  if (member != NULL) *member = mi;
  return 0;
}

/* "s:i s:i ...": the chain, head first, for log lines (g_free). */
static char *chain_text(const ns_partition_t *p) {
  GString *s = g_string_new(NULL);
  for (int i = 0; i < ns_part_members(p); i++) {
    const ns_block_t *b = ns_part_member(p, i);
    g_string_append_printf(s, "%s%d:%d", i ? " " : "", b->server, b->index);
  }
  return g_string_free(s, FALSE);
}

static const char *address_of(const dir_t *d, int32_t id) {
  const ns_server_t *s = ns_alloc_server(d->tree->alloc, id);
  return s != NULL ? s->address : "?";
}

static void note_short(dir_t *d, const ns_block_t *b) {
  if (g_hash_table_contains(d->short_chains, b)) return;
  g_hash_table_add(d->short_chains, g_memdup2(b, sizeof *b));
}

static void copy_forget(dir_t *d, int64_t op_id) { g_hash_table_remove(d->copies, &op_id); }

static void copy_remember(dir_t *d, int64_t op_id, const ns_block_t *copy,
                          const ns_block_t *tail) {
  dir_copy_rt_t *rt = g_new0(dir_copy_rt_t, 1);
  rt->op_id = op_id;
  rt->copy = *copy;
  rt->tail = *tail;
  rt->started_ms = mf_now_ms();
  g_hash_table_replace(d->copies, &rt->op_id, rt);
}

static void queue_rechain(dir_t *d, const ns_block_t *b) {
  g_array_append_val(dir_server_rt(d, b->server)->pending_rechain, *b);
}

static void timer_cb(uv_timer_t *t) {
  dir_t *d = t->data;
  dir_chains_tick(d, mf_now_ms());
}

/* After a restart: every replicated partition that is short or copying is
 * a candidate, and its copy is taken up as if begun now. */
static void recover_node(ns_node_t *n, void *ud) {
  dir_t *d = ud;
  for (guint i = 0; n->layout.parts != NULL && i < n->layout.parts->len; i++) {
    const ns_partition_t *p = &g_array_index(n->layout.parts, ns_partition_t, i);
    if (p->replicas <= 1 || p->state == NS_PART_LOST) continue;
    if (ns_part_members(p) < p->replicas) note_short(d, &p->block);
    if (p->copy.server != 0) {
      copy_remember(d, p->copy_op, &p->copy, ns_part_tail(p));
      char *path = ns_node_path(n);
      MF_INFO("namespace %s: partition [%lld, %lld): re-replication %lld to block %d:%d was "
              "under way before the restart: its tail may still end it, else it is aborted "
              "in %lld ms",
              path, (long long)p->lo, (long long)p->hi, (long long)p->copy_op, p->copy.server,
              p->copy.index, (long long)d->cfg.copy_timeout_ms);
      g_free(path);
    }
  }
}

void dir_chains_init(dir_t *d) {
  d->copies = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, g_free);
  d->short_chains = g_hash_table_new_full(block_hash, block_equal, g_free, NULL);
  dir_chains_recover(d);
  uv_timer_init(d->loop, &d->rereplicate);
  d->rereplicate.data = d;
  uint64_t every = (uint64_t)d->cfg.heartbeat_ms;
  uv_timer_start(&d->rereplicate, timer_cb, every, every);
}

void dir_chains_recover(dir_t *d) {
  ns_tree_walk(d->tree->root, recover_node, d);
}

void dir_chains_stop(dir_t *d) {
  uv_timer_stop(&d->rereplicate);
  uv_close((uv_handle_t *)&d->rereplicate, NULL);
}

void dir_chains_free(dir_t *d) {
  if (d->copies != NULL) g_hash_table_destroy(d->copies);
  if (d->short_chains != NULL) g_hash_table_destroy(d->short_chains);
  d->copies = d->short_chains = NULL;
}

int dir_chains_replicas(const dir_t *d, int32_t asked, int32_t *out, char *why,
                        size_t whylen) {
  if (asked < 0) {
    g_snprintf(why, whylen, "replicas must be between 1 and %d (0: the directory's --replicas)",
               NS_CHAIN_MAX);
    return MAYFLY_EINVAL;
  }
  int32_t r = asked > 0 ? asked : (int32_t)d->cfg.replicas;
  if (r < 1) r = 1;
  if (r > NS_CHAIN_MAX) {
    g_snprintf(why, whylen, "cannot place %d replicas per partition: at most %d are supported",
               r, NS_CHAIN_MAX);
    return MAYFLY_ENOHOSTS;
  }
  if (r > 1) {
    int hosts = ns_alloc_hosts_up(d->tree->alloc, NULL, 0);
    if (hosts < r) {
      g_snprintf(why, whylen,
                 "cannot place %d replicas per partition on distinct hosts: only %d host%s "
                 "with a memory server up",
                 r, hosts, hosts == 1 ? " has" : "s have");
      return MAYFLY_ENOHOSTS;
    }
  }
  *out = r;
  return 0;
}

int dir_chains_check_zone(const char *zone, char *why, size_t whylen) {
  if (zone == NULL) return 0;
  size_t len = strlen(zone);
  if (len > DIR_ZONE_MAX) {
    g_snprintf(why, whylen, "a zone name has at most %d characters", DIR_ZONE_MAX);
    return MAYFLY_EINVAL;
  }
  for (size_t i = 0; i < len; i++) {
    char c = zone[i];
    if (!g_ascii_isalnum(c) && c != '.' && c != '-' && c != '_') {
      g_snprintf(why, whylen, "a zone name takes letters, digits, '.', '-' and '_' only");
      return MAYFLY_EINVAL;
    }
  }
  return 0;
}

/* Whether b is the block of a copy under way (as of its begin). */
static int is_copy(const dir_t *d, const ns_block_t *b) {
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, d->copies);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    if (same_block(&((const dir_copy_rt_t *)v)->copy, b)) return 1;
  }
  return 0;
}

void dir_chains_applied(dir_t *d, const ns_record_t *rec, const ns_effects_t *fx,
                        guint rechain_from, guint freed_from) {
  int failover = (rec->type == NS_REC_SERVER_STATE && !rec->up) ||
                 rec->type == NS_REC_SERVER_ADD;
  for (guint i = freed_from; failover && i < fx->freed->len; i++) {
    /* A copy's block freed with its server is no member leaving a chain. */
    d->chain_failovers += !is_copy(d, &g_array_index(fx->freed, ns_block_t, i));
  }
  if (fx->rechain->len <= rechain_from) return;
  GHashTable *logged = failover ? g_hash_table_new(g_direct_hash, g_direct_equal) : NULL;
  int32_t gone = rec->type == NS_REC_SERVER_STATE ? rec->server_id : fx->server_id;
  for (guint i = rechain_from; i < fx->rechain->len; i++) {
    const ns_block_t *b = &g_array_index(fx->rechain, ns_block_t, i);
    queue_rechain(d, b);
    note_short(d, b);
    ns_node_t *n;
    ns_partition_t *p;
    if (logged == NULL || locate(d, b, &n, &p, NULL) != 0 || !g_hash_table_add(logged, p)) {
      continue;
    }
    char *path = ns_node_path(n), *chain = chain_text(p);
    MF_WARN("namespace %s: partition [%lld, %lld): memory server %d (%s) %s, it left the "
            "chain: now %s (chain version %lld, %d of %d replicas)",
            path, (long long)p->lo, (long long)p->hi, gone, address_of(d, gone),
            rec->type == NS_REC_SERVER_ADD ? "restarted" : "is down", chain,
            (long long)p->chain_version, ns_part_members(p), p->replicas);
    g_free(chain);
    g_free(path);
  }
  if (logged != NULL) g_hash_table_destroy(logged);
}

void dir_chains_take_rechain(dir_t *d, int32_t server_id, GPtrArray *out) {
  dir_server_rt_t *rt = dir_server_rt(d, server_id);
  if (rt->pending_rechain->len == 0) return;
  GHashTable *seen = g_hash_table_new(block_hash, block_equal);
  for (guint i = 0; i < rt->pending_rechain->len; i++) {
    ns_block_t *b = &g_array_index(rt->pending_rechain, ns_block_t, i);
    if (!g_hash_table_add(seen, b)) continue;
    MayflyBlockRef *br = g_object_new(MAYFLY_TYPE_BLOCK_REF, NULL);
    br->block_index = b->index;
    br->generation = b->generation;
    g_ptr_array_add(out, br);
  }
  g_hash_table_destroy(seen);
  g_array_set_size(rt->pending_rechain, 0);
}

/* Ends copy op_id of partition p of n as aborted; `because` says why. */
static void abort_copy(dir_t *d, ns_node_t *n, const ns_partition_t *p, int64_t op_id,
                       const char *because) {
  char *path = ns_node_path(n);
  ns_block_t copy = p->copy;
  int64_t lo = p->lo, hi = p->hi;
  ns_record_t rec = {.type = NS_REC_REPLICA_END, .path = path, .op_id = op_id};
  char why[256] = "";
  int rc = dir_apply(d, &rec, NULL, why, sizeof why);
  if (rc == 0) {
    MF_WARN("namespace %s: partition [%lld, %lld): re-replication %lld to block %d:%d (%s) "
            "aborted: %s",
            path, (long long)lo, (long long)hi, (long long)op_id, copy.server, copy.index,
            address_of(d, copy.server), because);
  } else {
    MF_ERROR("namespace %s: re-replication %lld cannot be aborted: %s", path,
             (long long)op_id, why);
  }
  g_free(path);
  copy_forget(d, op_id);
}

/* Aborts the copies that cannot end well any more: too old, their block's
 * server down, or their tail no longer the chain's tail. Forgets those the
 * tree ended on its own (a member drop that took the copy along). */
static void expire_copies(dir_t *d, int64_t now) {
  if (g_hash_table_size(d->copies) == 0) return;
  GArray *ops = g_array_new(FALSE, FALSE, sizeof(int64_t));
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, d->copies);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    const dir_copy_rt_t *rt = v;
    g_array_append_val(ops, rt->op_id);
  }
  for (guint i = 0; i < ops->len; i++) {
    int64_t op = g_array_index(ops, int64_t, i);
    dir_copy_rt_t *rt = g_hash_table_lookup(d->copies, &op);
    ns_node_t *n;
    ns_partition_t *p;
    int member;
    if (locate(d, &rt->copy, &n, &p, &member) != 0 || member != -1 || p->copy_op != op) {
      copy_forget(d, op); /* ended by the tree (its namespace went, a server left) */
      continue;
    }
    const ns_server_t *cs = ns_alloc_server(d->tree->alloc, rt->copy.server);
    char because[160] = "";
    if (now - rt->started_ms > d->cfg.copy_timeout_ms) {
      g_snprintf(because, sizeof because, "not ended by the tail within %lld ms (--copy-timeout)",
                 (long long)d->cfg.copy_timeout_ms);
    } else if (cs == NULL || !cs->up) {
      g_snprintf(because, sizeof because, "the copy's memory server is down");
    } else if (!same_block(ns_part_tail(p), &rt->tail)) {
      g_snprintf(because, sizeof because, "its tail (block %d:%d) left the chain",
                 rt->tail.server, rt->tail.index);
    } else {
      continue;
    }
    abort_copy(d, n, p, op, because);
  }
  g_array_free(ops, TRUE);
}

/* Begins a copy for partition p of n when it can have one now. */
static void maybe_begin(dir_t *d, ns_node_t *n, ns_partition_t *p) {
  if (p->copy.server != 0) return;                              /* one at a time */
  if (n->reparts != NULL && n->reparts->len > 0) return;        /* after the repartition */
  const ns_block_t *tail = ns_part_tail(p);
  const ns_server_t *ts = ns_alloc_server(d->tree->alloc, tail->server);
  if (ts == NULL || !ts->up) return; /* nobody to copy from until it is back */
  int32_t avoid[NS_CHAIN_MAX];
  int navoid = ns_part_members(p);
  for (int i = 0; i < navoid; i++) avoid[i] = ns_part_member(p, i)->server;
  ns_block_t copy;
  int rc = ns_alloc_pick_chain(d->tree->alloc, 1, avoid, navoid, &copy);
  char *path = ns_node_path(n);
  if (rc != 0) {
    MF_DEBUG("namespace %s: partition [%lld, %lld) has %d of %d replicas and no block for "
             "another yet: %s",
             path, (long long)p->lo, (long long)p->hi, navoid, p->replicas,
             mayfly_strerror(rc));
    g_free(path);
    return;
  }
  ns_block_t tail_b = *tail;
  int64_t lo = p->lo, hi = p->hi;
  int members = navoid, replicas = p->replicas;
  char *chain = chain_text(p);
  ns_record_t rec = {.type = NS_REC_REPLICA_BEGIN,
                     .path = path,
                     .lo = lo,
                     .block = copy,
                     .op_id = d->tree->last_op_id + 1};
  char why[256] = "";
  rc = dir_apply(d, &rec, NULL, why, sizeof why);
  if (rc == 0) {
    copy_remember(d, rec.op_id, &copy, &tail_b);
    /* Both must hear of it (the tree's rechain says so too; the queue
     * hands each block out once). */
    queue_rechain(d, &tail_b);
    queue_rechain(d, &copy);
    MF_INFO("namespace %s: partition [%lld, %lld): re-replication %lld begun: the tail %d:%d "
            "(%s) copies to block %d:%d (%s); chain %s, %d of %d replicas",
            path, (long long)lo, (long long)hi, (long long)rec.op_id, tail_b.server,
            tail_b.index, address_of(d, tail_b.server), copy.server, copy.index,
            address_of(d, copy.server), chain, members, replicas);
  } else {
    MF_WARN("namespace %s: partition [%lld, %lld): re-replication cannot begin: %s", path,
            (long long)lo, (long long)hi, why);
  }
  g_free(chain);
  g_free(path);
}

/* Begins the copies the degraded chains can have; drops candidates whose
 * chain is whole, lost or gone. */
static void begin_copies(dir_t *d) {
  if (g_hash_table_size(d->short_chains) == 0) return;
  GArray *cands = g_array_new(FALSE, FALSE, sizeof(ns_block_t));
  GHashTableIter it;
  gpointer k;
  g_hash_table_iter_init(&it, d->short_chains);
  while (g_hash_table_iter_next(&it, &k, NULL)) g_array_append_vals(cands, k, 1);
  GHashTable *seen = g_hash_table_new(g_direct_hash, g_direct_equal);
  for (guint i = 0; i < cands->len; i++) {
    const ns_block_t *b = &g_array_index(cands, ns_block_t, i);
    ns_node_t *n;
    ns_partition_t *p;
    if (locate(d, b, &n, &p, NULL) != 0 || p->state == NS_PART_LOST || p->replicas <= 1 ||
        ns_part_members(p) >= p->replicas) {
      g_hash_table_remove(d->short_chains, b);
      continue;
    }
    /* Begin records leave the layout's array as it is: p stays valid. */
    if (!g_hash_table_add(seen, p)) continue;
    maybe_begin(d, n, p);
  }
  g_hash_table_destroy(seen);
  g_array_free(cands, TRUE);
}

void dir_chains_tick(dir_t *d, int64_t now) {
  expire_copies(d, now);
  begin_copies(d);
}

int dir_chains_replica_end(dir_t *d, int32_t server_id, int64_t op_id, int commit,
                           int64_t bytes, ns_node_t **node, char *why, size_t whylen) {
  dir_copy_rt_t *rt = g_hash_table_lookup(d->copies, &op_id);
  if (rt == NULL) {
    g_snprintf(why, whylen, "no re-replication %lld is under way (aborted or timed out?)",
               (long long)op_id);
    return MAYFLY_ENOENT;
  }
  ns_node_t *n;
  ns_partition_t *p;
  int member;
  if (locate(d, &rt->copy, &n, &p, &member) != 0 || member != -1 || p->copy_op != op_id) {
    copy_forget(d, op_id);
    g_snprintf(why, whylen, "re-replication %lld ended already (its chain or namespace changed)",
               (long long)op_id);
    return MAYFLY_ENOENT;
  }
  const ns_block_t *tail = ns_part_tail(p);
  if (tail->server != server_id) {
    g_snprintf(why, whylen, "re-replication %lld is ended by the chain's tail (server %d)",
               (long long)op_id, tail->server);
    return MAYFLY_EPERM;
  }
  char *path = ns_node_path(n);
  ns_block_t copy = p->copy;
  int64_t lo = p->lo, hi = p->hi;
  int64_t ms = mf_now_ms() - rt->started_ms;
  ns_record_t rec = {.type = NS_REC_REPLICA_END,
                     .path = path,
                     .op_id = op_id,
                     .flags = commit ? NS_REC_COMMIT : 0};
  int rc = dir_apply(d, &rec, NULL, why, whylen);
  if (rc != 0 && commit) {
    /* The copy cannot join: free it rather than leave it pending. */
    ns_record_t undo = {.type = NS_REC_REPLICA_END, .path = path, .op_id = op_id};
    dir_apply(d, &undo, NULL, NULL, 0);
    MF_WARN("namespace %s: partition [%lld, %lld): re-replication %lld to block %d:%d "
            "cannot commit (%s): aborted",
            path, (long long)lo, (long long)hi, (long long)op_id, copy.server, copy.index, why);
  } else if (rc == 0 && commit) {
    d->rereplications++;
    d->rereplicated_bytes += bytes > 0 ? bytes : 0;
    const ns_partition_t *q = NULL;
    int pi = -1;
    if (ns_node_find_block(n, &copy, &pi, NULL) == 0) {
      q = &g_array_index(n->layout.parts, ns_partition_t, pi);
    }
    char *chain = q != NULL ? chain_text(q) : g_strdup("?");
    double mbs = ms > 0 ? (double)bytes / 1e3 / (double)ms : 0;
    MF_INFO("namespace %s: partition [%lld, %lld): re-replication %lld committed in %lld ms, "
            "%lld bytes (%.0f MB/s): block %d:%d (%s) joined at the tail; chain now %s "
            "(chain version %lld, %d of %d replicas)",
            path, (long long)lo, (long long)hi, (long long)op_id, (long long)ms,
            (long long)bytes, mbs, copy.server, copy.index, address_of(d, copy.server), chain,
            q ? (long long)q->chain_version : 0LL, q ? ns_part_members(q) : 0,
            q ? q->replicas : 0);
    g_free(chain);
  } else if (rc == 0) {
    MF_WARN("namespace %s: partition [%lld, %lld): re-replication %lld to block %d:%d (%s) "
            "aborted by the tail (server %d) after %lld ms",
            path, (long long)lo, (long long)hi, (long long)op_id, copy.server, copy.index,
            address_of(d, copy.server), server_id, (long long)ms);
  }
  g_free(path);
  copy_forget(d, op_id);
  *node = n;
  return rc;
}

int64_t dir_chains_degraded(dir_t *d) {
  GHashTable *seen = g_hash_table_new(g_direct_hash, g_direct_equal);
  GHashTableIter it;
  gpointer k;
  g_hash_table_iter_init(&it, d->short_chains);
  while (g_hash_table_iter_next(&it, &k, NULL)) {
    ns_node_t *n;
    ns_partition_t *p;
    if (locate(d, k, &n, &p, NULL) != 0 || p->state == NS_PART_LOST || p->replicas <= 1 ||
        ns_part_members(p) >= p->replicas) {
      g_hash_table_iter_remove(&it);
      continue;
    }
    g_hash_table_add(seen, p);
  }
  int64_t count = g_hash_table_size(seen);
  g_hash_table_destroy(seen);
  return count;
}
