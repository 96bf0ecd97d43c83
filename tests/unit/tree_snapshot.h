/*
 * Test helper: the whole state of a namespace tree (every node with its
 * lease, layout, partitions' states, repartitions and tags) and of its
 * allocator (servers, incarnations, generations, blocks in use and the node
 * holding each, the free stack in its order) as text, so two trees are equal
 * exactly when their snapshots are.
 */
#ifndef MAYFLY_TEST_TREE_SNAPSHOT_H
#define MAYFLY_TEST_TREE_SNAPSHOT_H

#include "namespaces/tree.h"

/* Returns the snapshot; free with g_free. */
char *tree_snapshot(ns_tree_t *t);

/* The same without the soft state of leases: every node's renewed_ms and
 * subtree_ms and every repartition's started_ms, which a tree decoded from a
 * snapshot restarts (namespaces/snapshot.h). */
char *tree_snapshot_untimed(ns_tree_t *t);

#endif /* MAYFLY_TEST_TREE_SNAPSHOT_H */
