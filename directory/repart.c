/*
 * Repartitioning kv namespaces, the directory's side (see repart.h).
 */
#include "directory/repart.h"

#include "common/config.h"
#include "common/error.h"
#include "common/log.h"

/* What the directory keeps of a begun repartition beyond the tree's record:
 * enough to find the namespace again (through the source block's owner, so a
 * rename in between does not matter) and to log the outcome. */
typedef struct dir_repart_rt {
  ns_block_t src;
  ns_block_t dst; /* the target's head (a split's new block) */
  int merge;
  int64_t lo, hi;
  int64_t started_ms;
} dir_repart_rt_t;

static GHashTable *table(dir_t *d) {
  if (d->reparts == NULL) {
    d->reparts = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
  }
  return d->reparts;
}

/* The namespace block b belongs to, if b is still allocated with that generation. */
static ns_node_t *owner_of(dir_t *d, const ns_block_t *b) {
  ns_server_t *s = ns_alloc_server(d->tree->alloc, b->server);
  if (s == NULL || b->index < 0 || b->index >= s->nblocks || !s->in_use[b->index] ||
      s->generation[b->index] != b->generation) {
    return NULL;
  }
  return s->owner[b->index];
}

/* The namespace of a begun repartition: through its source block, or,
 * when the source left its chain (freed), through the target's head. */
static ns_node_t *node_of(dir_t *d, const dir_repart_rt_t *rt) {
  ns_node_t *n = owner_of(d, &rt->src);
  return n != NULL ? n : owner_of(d, &rt->dst);
}

int dir_repart_begin(dir_t *d, int32_t server_id, int32_t index, int64_t generation, int merge,
                     int64_t split_at, dir_repart_plan_t *plan, char *why, size_t whylen) {
  ns_server_t *s = ns_alloc_server(d->tree->alloc, server_id);
  if (s == NULL) {
    g_snprintf(why, whylen, "unknown memory server %d: register again", server_id);
    return MAYFLY_ESERVER;
  }
  if (index < 0 || index >= s->nblocks) {
    g_snprintf(why, whylen, "no block %d on server %d", index, server_id);
    return MAYFLY_EINVAL;
  }
  ns_block_t src = {.server = server_id, .index = index, .generation = generation};
  ns_node_t *n = owner_of(d, &src);
  int pi = -1, member = -1;
  if (n == NULL || ns_node_find_block(n, &src, &pi, &member) != 0) {
    g_snprintf(why, whylen, "block %d:%d (generation %lld) is no longer a partition", server_id,
               index, (long long)generation);
    return MAYFLY_EMOVED;
  }
  if (member != 0) {
    /* Only a chain's head repartitions: it orders the chain's writes. */
    g_snprintf(why, whylen, "block %d:%d is not the head of its partition's chain: only the "
               "head asks for splits and merges", server_id, index);
    return MAYFLY_EMOVED;
  }
  if (n->kind != NS_KIND_KV) {
    g_snprintf(why, whylen, "only kv namespaces are repartitioned");
    return MAYFLY_EKIND;
  }
  const ns_partition_t *p = &g_array_index(n->layout.parts, ns_partition_t, pi);
  if (p->state == NS_PART_LOST) {
    g_snprintf(why, whylen, "block %d:%d is lost: a lost partition is never repartitioned",
               server_id, index);
    return MAYFLY_ELOST;
  }
  char *path = ns_node_path(n);
  ns_record_t rec = {.type = NS_REC_REPART_BEGIN,
                     .path = path,
                     .op_id = d->tree->last_op_id + 1,
                     .block = src,
                     .flags = merge ? NS_REC_MERGE : 0};
  int rc = 0;
  if (merge) {
    /* Into the left neighbour when there is one, else the right one. */
    const ns_partition_t *left = NULL, *right = NULL;
    for (guint i = 0; i < n->layout.parts->len; i++) {
      const ns_partition_t *q = &g_array_index(n->layout.parts, ns_partition_t, i);
      if (q->hi == p->lo) left = q;
      if (q->lo == p->hi) right = q;
    }
    const ns_partition_t *to = left != NULL ? left : right;
    if (to == NULL) {
      g_snprintf(why, whylen, "the namespace has a single partition: nothing to merge with");
      rc = MAYFLY_EINVAL;
    } else if (to->state == NS_PART_LOST) {
      /* Merging into a lost partition would hide the loss of its slots. */
      g_snprintf(why, whylen, "the neighbour (block %d:%d) is lost: a lost partition is never "
                 "merged", to->block.server, to->block.index);
      rc = MAYFLY_ELOST;
    } else if ((int32_t)n->layout.parts->len <= n->initial_blocks) {
      /* The partitions asked for at creation stay: they spread the load. */
      g_snprintf(why, whylen, "the namespace keeps the %d partitions it was created with",
                 n->initial_blocks);
      rc = MAYFLY_EINVAL;
    } else {
      plan->target = *to;
      rec.block2 = to->block;
      rec.lo = p->lo;
      rec.hi = p->hi;
    }
  } else if (split_at <= p->lo || split_at >= p->hi) {
    g_snprintf(why, whylen, "split point %lld lies outside the partition's slots (%lld, %lld)",
               (long long)split_at, (long long)p->lo, (long long)p->hi);
    rc = MAYFLY_EINVAL;
  } else if (n->max_blocks > 0 && ns_node_blocks_committed(n) >= n->max_blocks) {
    g_snprintf(why, whylen, "quota: the namespace holds its max_blocks (%d)", n->max_blocks);
    rc = MAYFLY_EQUOTA;
  } else {
    /* A replicated namespace splits into a whole new chain. */
    char pwhy[256] = "";
    plan->target = (ns_partition_t){0};
    rc = ns_tree_plan_append_why(d->tree, n, split_at, p->hi, &plan->target, pwhy, sizeof pwhy);
    if (rc != 0) {
      g_snprintf(why, whylen, "cannot split: %s",
                 pwhy[0]                   ? pwhy
                 : rc == MAYFLY_ENOSPC     ? "block pool exhausted"
                 : rc == MAYFLY_ENOSERVERS ? "no memory server is up"
                                           : mayfly_strerror(rc));
    }
    rec.block2 = plan->target.block;
    rec.lo = split_at;
    rec.hi = p->hi;
    if (ns_node_replicas(n) > 1) {
      rec.parts = &plan->target;
      rec.nparts = 1;
    }
  }
  if (rc == 0) rc = dir_apply(d, &rec, NULL, why, whylen);
  if (rc == 0) {
    plan->op_id = rec.op_id;
    plan->lo = rec.lo;
    plan->hi = rec.hi;
    dir_repart_rt_t *rt = g_new0(dir_repart_rt_t, 1);
    rt->src = src;
    rt->dst = rec.block2;
    rt->merge = merge;
    rt->lo = rec.lo;
    rt->hi = rec.hi;
    rt->started_ms = mf_now_ms();
    gint64 *key = g_new(gint64, 1);
    *key = rec.op_id;
    g_hash_table_insert(table(d), key, rt);
    MF_INFO("namespace %s: %s %lld: slots [%lld, %lld) of block %d:%d -> block %d:%d%s", path,
            merge ? "merge" : "split", (long long)rec.op_id, (long long)rec.lo, (long long)rec.hi,
            server_id, index, rec.block2.server, rec.block2.index,
            plan->target.nmore > 0 ? " (the head of a new chain)" : "");
  }
  g_free(path);
  return rc;
}

/* Applies the end record; on a commit that is no longer possible, rolls back. */
static int end_op(dir_t *d, ns_node_t *n, int64_t op_id, int commit, char *why, size_t whylen) {
  char *path = ns_node_path(n);
  ns_record_t rec = {.type = NS_REC_REPART_END,
                     .path = path,
                     .op_id = op_id,
                     .flags = commit ? NS_REC_COMMIT : 0};
  int rc = dir_apply(d, &rec, NULL, why, whylen);
  if (rc == MAYFLY_EMOVED && commit) {
    ns_record_t undo = {.type = NS_REC_REPART_END, .path = path, .op_id = op_id};
    dir_apply(d, &undo, NULL, NULL, 0);
  }
  g_free(path);
  return rc;
}

int dir_repart_end(dir_t *d, int32_t server_id, int64_t op_id, int commit, int64_t bytes_moved,
                   ns_node_t **node, char *why, size_t whylen) {
  dir_repart_rt_t *rt = d->reparts ? g_hash_table_lookup(d->reparts, &op_id) : NULL;
  if (rt == NULL) {
    g_snprintf(why, whylen, "no repartition %lld under way (rolled back after a timeout?)",
               (long long)op_id);
    return MAYFLY_ENOENT;
  }
  if (rt->src.server != server_id) {
    g_snprintf(why, whylen, "repartition %lld belongs to another memory server", (long long)op_id);
    return MAYFLY_EPERM;
  }
  ns_node_t *n = node_of(d, rt);
  int rc = MAYFLY_ENOENT;
  if (n == NULL || ns_node_find_repart(n, op_id) == NULL) {
    g_snprintf(why, whylen, "the namespace of repartition %lld is gone", (long long)op_id);
  } else {
    rc = end_op(d, n, op_id, commit, why, whylen);
    int64_t ms = mf_now_ms() - rt->started_ms;
    char *path = ns_node_path(n);
    if (rc == 0 && commit) {
      *(rt->merge ? &d->merges : &d->splits) += 1;
      d->bytes_moved += bytes_moved > 0 ? bytes_moved : 0;
      d->move_ms += ms;
      d->move_ms_max = MAX(d->move_ms_max, ms);
      double mbs = ms > 0 ? (double)bytes_moved / 1e3 / (double)ms : 0;
      MF_INFO("namespace %s: %s %lld committed in %lld ms, %lld bytes moved (%.0f MB/s); "
              "%u partitions, layout version %lld",
              path, rt->merge ? "merge" : "split", (long long)op_id, (long long)ms,
              (long long)bytes_moved, mbs, n->layout.parts->len, (long long)n->layout.version);
    } else {
      d->rollbacks++;
      /* Counted in the stats; the memory server that drives the repartition
       * logs a pair's rollbacks once (a merge backs off and may roll back
       * again), so a line per attempt here would only repeat it. */
      MF_DEBUG("namespace %s: %s %lld rolled back after %lld ms", path,
              rt->merge ? "merge" : "split", (long long)op_id, (long long)ms);
    }
    g_free(path);
    *node = n;
  }
  g_hash_table_remove(d->reparts, &op_id);
  return rc;
}

static void recover_node(ns_node_t *n, void *ud) {
  dir_t *d = ud;
  for (guint i = 0; n->reparts != NULL && i < n->reparts->len; i++) {
    const ns_repart_t *r = &g_array_index(n->reparts, ns_repart_t, i);
    dir_repart_rt_t *rt = g_new0(dir_repart_rt_t, 1);
    rt->src = r->src;
    rt->dst = r->dst;
    rt->merge = r->merge;
    rt->lo = r->lo;
    rt->hi = r->hi;
    rt->started_ms = mf_now_ms();
    gint64 *key = g_new(gint64, 1);
    *key = r->id;
    g_hash_table_insert(table(d), key, rt);
    char *path = ns_node_path(n);
    MF_INFO("namespace %s: %s %lld was under way before the restart: its memory server may "
            "still end it, else it is rolled back in %d ms",
            path, r->merge ? "merge" : "split", (long long)r->id, DIR_REPART_TIMEOUT_MS);
    g_free(path);
  }
}

void dir_repart_recover(dir_t *d) {
  ns_tree_walk(d->tree->root, recover_node, d);
}

/* A repartition of a replicated namespace whose source head left its chain
 * (or another block of it went: the tree's lost flag) cannot commit, and
 * its source may never end it (it is no head any more): roll it back now
 * rather than hold the namespace's re-replication for the timeout. The
 * source block was freed when it left, so the namespace is found through
 * the target. Returns 1 when it rolled back. */
static int rollback_lost(dir_t *d, int64_t op_id, const dir_repart_rt_t *rt) {
  ns_node_t *n = node_of(d, rt);
  ns_repart_t *r = n != NULL ? ns_node_find_repart(n, op_id) : NULL;
  if (r == NULL || !r->lost || ns_node_replicas(n) <= 1) return 0;
  char why[256] = "";
  end_op(d, n, op_id, 0, why, sizeof why);
  d->rollbacks++;
  char *path = ns_node_path(n);
  MF_WARN("namespace %s: %s %lld rolled back: a block it involves left its chain", path,
          rt->merge ? "merge" : "split", (long long)op_id);
  g_free(path);
  return 1;
}

void dir_repart_expire(dir_t *d, int64_t now_ms) {
  if (d->reparts == NULL || g_hash_table_size(d->reparts) == 0) return;
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, d->reparts);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    dir_repart_rt_t *rt = v;
    if (rollback_lost(d, *(gint64 *)k, rt)) {
      g_hash_table_iter_remove(&it);
      continue;
    }
    if (now_ms - rt->started_ms < DIR_REPART_TIMEOUT_MS) continue;
    ns_node_t *n = node_of(d, rt);
    if (n != NULL && ns_node_find_repart(n, *(gint64 *)k) != NULL) {
      char why[256] = "";
      end_op(d, n, *(gint64 *)k, 0, why, sizeof why);
      d->rollbacks++;
      char *path = ns_node_path(n);
      MF_WARN("namespace %s: %s %lld not ended by its memory server within %d ms: rolled back",
              path, rt->merge ? "merge" : "split", (long long)*(gint64 *)k,
              DIR_REPART_TIMEOUT_MS);
      g_free(path);
    }
    g_hash_table_iter_remove(&it);
  }
}
