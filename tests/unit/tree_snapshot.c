/*
 * The whole state of a namespace tree and its allocator as canonical text,
 * for tests that compare two trees (test_tree, test_record).
 */
#include "tree_snapshot.h"

#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

static gint cmp_str(gconstpointer a, gconstpointer b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

typedef struct {
  GString *s;
  int times; /* include renewal and start times */
} snap_t;

static void snap_node(ns_node_t *n, void *ud) {
  snap_t *st = ud;
  GString *s = st->s;
  char *path = ns_node_path(n);
  g_string_append_printf(s, "%s kind=%d flags=%u lease=%lld", path, (int)n->kind, n->flags,
                         (long long)n->lease_ms);
  if (st->times) {
    g_string_append_printf(s, " renewed=%lld subtree=%lld", (long long)n->renewed_ms,
                           (long long)n->subtree_ms);
  }
  g_string_append_printf(s, " created=%lld v=%lld init=%d sub=%lld/%lld",
                         (long long)n->created_wall_ms, (long long)n->layout.version,
                         n->initial_blocks, (long long)n->sub_blocks, (long long)n->sub_leaves);
  g_free(path);
  if (n->layout.parts != NULL) {
    for (guint i = 0; i < n->layout.parts->len; i++) {
      ns_partition_t *p = &g_array_index(n->layout.parts, ns_partition_t, i);
      g_string_append_printf(s, " %d:%d:%lld[%lld,%lld)%s", p->block.server, p->block.index,
                             (long long)p->block.generation, (long long)p->lo, (long long)p->hi,
                             p->state == NS_PART_LOST ? "lost" : "");
      /* The rest of the chain, its version and a pending copy. */
      for (int m = 0; m < p->nmore; m++) {
        g_string_append_printf(s, "+%d:%d:%lld", p->more[m].server, p->more[m].index,
                               (long long)p->more[m].generation);
      }
      g_string_append_printf(s, " r%d cv%lld", p->replicas, (long long)p->chain_version);
      if (p->copy.server != 0) {
        g_string_append_printf(s, " copy#%lld=%d:%d:%lld", (long long)p->copy_op,
                               p->copy.server, p->copy.index, (long long)p->copy.generation);
      }
    }
  }
  if (n->kind != NS_KIND_DIRECTORY) {
    g_string_append_printf(s, " max=%d wm=%d/%d replicas=%d", n->max_blocks, n->high_wm,
                           n->low_wm, ns_node_replicas(n));
  }
  for (guint i = 0; n->reparts != NULL && i < n->reparts->len; i++) {
    ns_repart_t *r = &g_array_index(n->reparts, ns_repart_t, i);
    g_string_append_printf(s, " %s#%lld %d:%d:%lld->%d:%d:%lld[%lld,%lld)",
                           r->merge ? "merge" : "split", (long long)r->id, r->src.server,
                           r->src.index, (long long)r->src.generation, r->dst.server,
                           r->dst.index, (long long)r->dst.generation, (long long)r->lo,
                           (long long)r->hi);
    for (int32_t m = 0; !r->merge && m < r->dst_nmore; m++) {
      g_string_append_printf(s, "+%d:%d:%lld", r->dst_more[m].server, r->dst_more[m].index,
                             (long long)r->dst_more[m].generation);
    }
    if (st->times) g_string_append_printf(s, "@%lld", (long long)r->started_ms);
    g_string_append(s, r->lost ? "lost" : "");
  }
  if (n->tags != NULL) {
    GPtrArray *keys = g_ptr_array_new();
    GHashTableIter it;
    gpointer k;
    g_hash_table_iter_init(&it, n->tags);
    while (g_hash_table_iter_next(&it, &k, NULL)) g_ptr_array_add(keys, k);
    g_ptr_array_sort(keys, cmp_str);
    for (guint i = 0; i < keys->len; i++) {
      const char *key = g_ptr_array_index(keys, i);
      g_string_append_printf(s, " %s=%s", key, (const char *)g_hash_table_lookup(n->tags, key));
    }
    g_ptr_array_free(keys, TRUE);
  }
  g_string_append_c(s, '\n');
}

static char *snapshot(ns_tree_t *t, int times) {
  /* Every snapshot checks the subtree counts too: so does every test that
   * compares trees, after each change it makes. */
  char why[512] = "";
  if (ns_tree_check_counts(t, why, sizeof why) != 0) fprintf(stderr, "  counts: %s\n", why);
  CU_ASSERT(why[0] == '\0');
  GString *s = g_string_new(NULL);
  snap_t st = {.s = s, .times = times};
  ns_tree_walk(t->root, snap_node, &st);
  g_string_append_printf(s, "dirs=%lld leaves=%lld expired=%lld total=%lld used=%lld op=%lld\n",
                         (long long)t->n_dirs, (long long)t->n_leaves, (long long)t->n_expired,
                         (long long)t->alloc->blocks_total, (long long)t->alloc->blocks_used,
                         (long long)t->last_op_id);
  for (guint i = 0; i < t->alloc->servers->len; i++) {
    ns_server_t *sv = g_ptr_array_index(t->alloc->servers, i);
    g_string_append_printf(s, "server %d %s host=%s zone=%s up=%d used=%d blocks=%d size=%lld inc=%llx:",
                           sv->id, sv->address, sv->host, sv->zone, sv->up, sv->used, sv->nblocks,
                           (long long)sv->block_size, (unsigned long long)sv->incarnation);
    for (int32_t b = 0; b < sv->nblocks; b++) {
      g_string_append_printf(s, " %d/%lld%s", b, (long long)sv->generation[b],
                             sv->in_use[b] ? "*" : "");
      /* The holder of each block, by path, and any holder left on a free block. */
      if (sv->owner[b] != NULL) {
        char *owner = ns_node_path(sv->owner[b]);
        g_string_append_printf(s, "%s%s", sv->in_use[b] ? "" : "!", owner);
        g_free(owner);
      } else if (sv->in_use[b]) {
        g_string_append(s, "?");
      }
    }
    /* The free stack in its order: it decides which blocks are picked next. */
    g_string_append(s, " free=[");
    for (guint k = 0; k < sv->free_stack->len; k++) {
      g_string_append_printf(s, "%s%d", k > 0 ? " " : "",
                             g_array_index(sv->free_stack, int32_t, k));
    }
    g_string_append(s, "]\n");
  }
  return g_string_free(s, FALSE);
}

char *tree_snapshot(ns_tree_t *t) { return snapshot(t, 1); }

char *tree_snapshot_untimed(ns_tree_t *t) { return snapshot(t, 0); }
