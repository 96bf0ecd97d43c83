/*
 * Hierarchical leases: effective renewal times, time left, and the reaper
 * (see tree.h for the model).
 */
#include <glib.h>

#include "namespaces/tree.h"

int64_t ns_node_lease_ms(const ns_tree_t *t, const ns_node_t *n) {
  return n->lease_ms > 0 ? n->lease_ms : t->default_lease_ms;
}

int64_t ns_node_effective_renewal(const ns_node_t *n) {
  int64_t r = n->renewed_ms;
  for (const ns_node_t *p = n; p != NULL; p = p->parent) {
    if (p->subtree_ms > r) r = p->subtree_ms;
  }
  return r;
}

static int64_t remaining(const ns_tree_t *t, const ns_node_t *n, int64_t renewed, int64_t now) {
  if (n->parent == NULL || (n->flags & NS_FLAG_PINNED)) return -1;
  int64_t left = renewed + ns_node_lease_ms(t, n) + t->grace_ms - now;
  return left > 0 ? left : 0;
}

int64_t ns_node_remaining_ms(const ns_tree_t *t, const ns_node_t *n, int64_t now_ms) {
  return remaining(t, n, ns_node_effective_renewal(n), now_ms);
}

/* Collects, children first, the paths of nodes that expire at `now`.
 * `inherited` is the latest subtree renewal among the node's ancestors.
 * Returns 1 if the node itself expires (so its parent may count it gone). */
static int collect(const ns_tree_t *t, ns_node_t *n, int64_t inherited, int64_t now,
                   GPtrArray *out) {
  int64_t sub = n->subtree_ms > inherited ? n->subtree_ms : inherited;
  int64_t eff = n->renewed_ms > sub ? n->renewed_ms : sub;
  guint kids_left = 0;
  if (n->children != NULL) {
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, n->children);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
      if (!collect(t, v, sub, now, out)) kids_left++;
    }
  }
  if (kids_left > 0 || remaining(t, n, eff, now) != 0) return 0;
  g_ptr_array_add(out, ns_node_path(n));
  return 1;
}

int ns_tree_reap(ns_tree_t *t, int64_t now_ms, ns_effects_t *fx) {
  GPtrArray *due = g_ptr_array_new_with_free_func(g_free);
  collect(t, t->root, t->root->subtree_ms, now_ms, due);
  int removed = 0;
  for (guint i = 0; i < due->len; i++) {
    /* Children come before their directory, so each removal is of a leaf or
     * of an emptied directory: never recursive. */
    ns_record_t rec = {.type = NS_REC_REMOVE,
                       .flags = NS_REC_EXPIRED,
                       .now_ms = now_ms,
                       .path = g_ptr_array_index(due, i)};
    if (ns_tree_apply(t, &rec, fx, NULL, 0) == 0) removed++;
  }
  g_ptr_array_free(due, TRUE);
  return removed;
}
