/*
 * Unit tests for namespaces/lease.c: hierarchical leases and the reaper.
 *
 * The clock is injected: every record and query passes now_ms itself. The
 * tree's default lease is 1000 ms with a 100 ms grace, so a node not renewed
 * since time T is due at T + 1100.
 */
#include <string.h>

#include "common/error.h"
#include "mf_test.h"
#include "namespaces/tree.h"

#define LEASE_MS 1000
#define GRACE_MS 100
#define DUE (LEASE_MS + GRACE_MS)

static char why[512];

/* ---- helpers --------------------------------------------------------------- */

static ns_tree_t *new_tree(void) {
  ns_tree_t *t = ns_tree_new(LEASE_MS, GRACE_MS);
  const char *servers[] = {"ms1:7000", "ms2:7000"};
  for (int i = 0; i < 2; i++) {
    ns_record_t rec = {
        .type = NS_REC_SERVER_ADD, .address = servers[i], .blocks = 16, .block_size = 1024};
    MF_ASSERT_EQ(ns_tree_apply(t, &rec, NULL, why, sizeof why), 0);
  }
  return t;
}

static void mkdir_at(ns_tree_t *t, const char *path, int64_t now) {
  ns_record_t rec = {.type = NS_REC_MKDIR, .flags = NS_REC_PARENTS, .now_ms = now, .path = path};
  int rc = ns_tree_apply(t, &rec, NULL, why, sizeof why);
  if (rc != 0) fprintf(stderr, "  mkdir %s: %s\n", path, why);
  MF_ASSERT_EQ(rc, 0);
}

/* Creates a kv namespace (and its missing parents) at `now` with `nblocks`
 * blocks, its own lease (0 = default) and node flags. */
static void create_at(ns_tree_t *t, const char *path, int64_t now, int nblocks, int64_t lease_ms,
                      uint32_t flags) {
  ns_partition_t parts[8];
  MF_ASSERT_EQ(ns_tree_plan_parts(t, NS_KIND_KV, nblocks, parts), 0);
  ns_record_t rec = {.type = NS_REC_CREATE,
                     .now_ms = now,
                     .path = path,
                     .kind = NS_KIND_KV,
                     .lease_ms = lease_ms,
                     .node_flags = flags,
                     .parts = parts,
                     .nparts = (size_t)nblocks};
  int rc = ns_tree_apply(t, &rec, NULL, why, sizeof why);
  if (rc != 0) fprintf(stderr, "  create %s: %s\n", path, why);
  MF_ASSERT_EQ(rc, 0);
}

static void leaf_at(ns_tree_t *t, const char *path, int64_t now) {
  create_at(t, path, now, 1, 0, 0);
}

/* Renews `paths` at `now`; fx may be NULL. */
static void renew_at(ns_tree_t *t, int64_t now, const char *const *paths, size_t n,
                     ns_effects_t *fx) {
  ns_record_t rec = {.type = NS_REC_RENEW, .now_ms = now, .paths = paths, .npaths = n};
  MF_ASSERT_EQ(ns_tree_apply(t, &rec, fx, why, sizeof why), 0);
}

static void renew1(ns_tree_t *t, int64_t now, const char *path) {
  renew_at(t, now, &path, 1, NULL);
}

static int64_t remaining(ns_tree_t *t, const char *path, int64_t now) {
  ns_node_t *n = ns_tree_lookup(t, path);
  CU_ASSERT_PTR_NOT_NULL(n);
  return n != NULL ? ns_node_remaining_ms(t, n, now) : -999;
}

static int64_t effective(ns_tree_t *t, const char *path) {
  ns_node_t *n = ns_tree_lookup(t, path);
  CU_ASSERT_PTR_NOT_NULL(n);
  return n != NULL ? ns_node_effective_renewal(n) : -999;
}

static int index_of(GPtrArray *paths, const char *path) {
  for (guint i = 0; i < paths->len; i++) {
    if (strcmp(g_ptr_array_index(paths, i), path) == 0) return (int)i;
  }
  return -1;
}

#define EXPECT_ALIVE(t, path)                                             \
  do {                                                                    \
    if (ns_tree_lookup((t), (path)) == NULL) fprintf(stderr, "  %s is gone\n", (path)); \
    CU_ASSERT_PTR_NOT_NULL(ns_tree_lookup((t), (path)));                  \
  } while (0)
#define EXPECT_GONE(t, path)                                              \
  do {                                                                    \
    if (ns_tree_lookup((t), (path)) != NULL) fprintf(stderr, "  %s is alive\n", (path)); \
    CU_ASSERT_PTR_NULL(ns_tree_lookup((t), (path)));                      \
  } while (0)

/* ---- tests ----------------------------------------------------------------- */

static void test_remaining_time_counts_down_to_zero_when_due(void) {
  ns_tree_t *t = new_tree();
  leaf_at(t, "/f", 0);
  mkdir_at(t, "/d", 200);
  MF_ASSERT_EQ(remaining(t, "/f", 0), DUE);
  MF_ASSERT_EQ(remaining(t, "/f", 400), DUE - 400);
  MF_ASSERT_EQ(remaining(t, "/f", DUE - 1), 1);
  MF_ASSERT_EQ(remaining(t, "/f", DUE), 0);
  MF_ASSERT_EQ(remaining(t, "/f", DUE + 5000), 0); /* never negative */
  MF_ASSERT_EQ(remaining(t, "/d", 200), DUE);      /* directories too */
  MF_ASSERT_EQ(remaining(t, "/d", 1000), DUE - 800);
  ns_tree_free(t);
}

static void test_an_unrenewed_node_expires_and_its_blocks_return_to_the_pool(void) {
  ns_tree_t *t = new_tree();
  create_at(t, "/job/kv", 0, 3, 0, 0);
  ns_node_t *kv = ns_tree_lookup(t, "/job/kv");
  ns_block_t blocks[3];
  for (guint i = 0; i < 3; i++) blocks[i] = g_array_index(kv->layout.parts, ns_partition_t, i).block;
  MF_ASSERT_EQ(t->alloc->blocks_used, 3);

  ns_effects_t fx;
  ns_effects_init(&fx);
  /* One millisecond early: nothing goes. */
  MF_ASSERT_EQ(ns_tree_reap(t, DUE - 1, &fx), 0);
  MF_ASSERT_EQ(fx.removed->len, 0);
  MF_ASSERT_EQ(fx.freed->len, 0);
  EXPECT_ALIVE(t, "/job/kv");
  MF_ASSERT_EQ(t->alloc->blocks_used, 3);

  /* Due: the namespace and its (now empty, also due) directory go. */
  MF_ASSERT_EQ(ns_tree_reap(t, DUE, &fx), 2);
  EXPECT_GONE(t, "/job/kv");
  EXPECT_GONE(t, "/job");
  MF_ASSERT_EQ(t->alloc->blocks_used, 0);
  MF_ASSERT_EQ(fx.freed->len, 3);
  for (int i = 0; i < 3; i++) {
    int found = 0;
    for (guint j = 0; j < fx.freed->len; j++) {
      found += memcmp(&blocks[i], &g_array_index(fx.freed, ns_block_t, j), sizeof blocks[i]) == 0;
    }
    MF_ASSERT_EQ(found, 1);
  }
  MF_ASSERT_EQ(fx.removed->len, 2);
  CU_ASSERT_STRING_EQUAL(g_ptr_array_index(fx.removed, 0), "/job/kv");
  CU_ASSERT_STRING_EQUAL(g_ptr_array_index(fx.removed, 1), "/job");
  MF_ASSERT_EQ(t->n_expired, 2);
  MF_ASSERT_EQ(ns_tree_count(t), 0);
  /* The whole pool can be handed out again. */
  ns_partition_t all[32];
  MF_ASSERT_EQ(ns_tree_plan_parts(t, NS_KIND_KV, 32, all), 0);
  ns_effects_clear(&fx);
  ns_tree_free(t);
}

static void test_renew_covers_ancestors_and_subtree_but_not_siblings(void) {
  ns_tree_t *t = new_tree();
  leaf_at(t, "/j/a/x", 0);
  leaf_at(t, "/j/a/sub/y", 0);
  leaf_at(t, "/j/b/z", 0);
  leaf_at(t, "/j/c", 0);
  renew1(t, 900, "/j/a");

  /* The target and everything below it. */
  MF_ASSERT_EQ(effective(t, "/j/a"), 900);
  MF_ASSERT_EQ(effective(t, "/j/a/x"), 900);
  MF_ASSERT_EQ(effective(t, "/j/a/sub"), 900);
  MF_ASSERT_EQ(effective(t, "/j/a/sub/y"), 900);
  /* Its ancestors. */
  MF_ASSERT_EQ(effective(t, "/j"), 900);
  /* Not its siblings, nor what lies below them. */
  MF_ASSERT_EQ(effective(t, "/j/b"), 0);
  MF_ASSERT_EQ(effective(t, "/j/b/z"), 0);
  MF_ASSERT_EQ(effective(t, "/j/c"), 0);
  MF_ASSERT_EQ(remaining(t, "/j/a/sub/y", 1000), 900 + DUE - 1000);
  MF_ASSERT_EQ(remaining(t, "/j/b/z", 1000), DUE - 1000);

  ns_effects_t fx;
  ns_effects_init(&fx);
  MF_ASSERT_EQ(ns_tree_reap(t, DUE, &fx), 3);
  EXPECT_GONE(t, "/j/b/z");
  EXPECT_GONE(t, "/j/b");
  EXPECT_GONE(t, "/j/c");
  EXPECT_ALIVE(t, "/j");
  EXPECT_ALIVE(t, "/j/a");
  EXPECT_ALIVE(t, "/j/a/x");
  EXPECT_ALIVE(t, "/j/a/sub/y");
  MF_ASSERT_EQ(t->alloc->blocks_used, 2);
  /* Once the renewal runs out too, the rest goes. */
  MF_ASSERT_EQ(ns_tree_reap(t, 900 + DUE - 1, &fx), 0);
  MF_ASSERT_EQ(ns_tree_reap(t, 900 + DUE, &fx), 5);
  EXPECT_GONE(t, "/j");
  MF_ASSERT_EQ(t->alloc->blocks_used, 0);
  ns_effects_clear(&fx);
  ns_tree_free(t);
}

static void test_renewing_a_leaf_keeps_its_parent_directories_alive(void) {
  ns_tree_t *t = new_tree();
  leaf_at(t, "/job/stage/leaf", 0);
  leaf_at(t, "/job/stage/other", 0);
  leaf_at(t, "/job/elsewhere", 0);
  renew1(t, 900, "/job/stage/leaf");
  MF_ASSERT_EQ(remaining(t, "/job/stage", DUE), 900);
  MF_ASSERT_EQ(remaining(t, "/job", DUE), 900);

  MF_ASSERT_EQ(ns_tree_reap(t, DUE, NULL), 2);
  EXPECT_ALIVE(t, "/job/stage/leaf");
  EXPECT_ALIVE(t, "/job/stage");
  EXPECT_ALIVE(t, "/job");
  EXPECT_GONE(t, "/job/stage/other");
  EXPECT_GONE(t, "/job/elsewhere");
  ns_tree_free(t);
}

static void test_renewing_a_subtree_extends_the_lease_from_the_renewal(void) {
  ns_tree_t *t = new_tree();
  leaf_at(t, "/j/f", 0);
  for (int64_t now = 500; now <= 5000; now += 500) renew1(t, now, "/j"); /* a driver's loop */
  MF_ASSERT_EQ(remaining(t, "/j/f", 5000), DUE);
  MF_ASSERT_EQ(ns_tree_reap(t, 5000 + DUE - 1, NULL), 0);
  EXPECT_ALIVE(t, "/j/f");
  MF_ASSERT_EQ(ns_tree_reap(t, 5000 + DUE, NULL), 2);
  EXPECT_GONE(t, "/j");
  ns_tree_free(t);
}

static void test_renewing_the_root_renews_everything(void) {
  ns_tree_t *t = new_tree();
  leaf_at(t, "/a/b/c", 0);
  leaf_at(t, "/d", 0);
  renew1(t, 700, "/");
  MF_ASSERT_EQ(effective(t, "/a/b/c"), 700);
  MF_ASSERT_EQ(effective(t, "/a/b"), 700);
  MF_ASSERT_EQ(effective(t, "/d"), 700);
  MF_ASSERT_EQ(ns_tree_reap(t, DUE, NULL), 0);
  MF_ASSERT_EQ(ns_tree_count(t), 4);
  ns_tree_free(t);
}

static void test_a_directory_goes_only_when_its_whole_subtree_has_gone(void) {
  ns_tree_t *t = new_tree();
  mkdir_at(t, "/d", 0);
  create_at(t, "/d/long", 0, 1, 5000, 0);
  leaf_at(t, "/d/short", 0);

  ns_effects_t fx;
  ns_effects_init(&fx);
  MF_ASSERT_EQ(ns_tree_reap(t, DUE, &fx), 1);
  EXPECT_GONE(t, "/d/short");
  /* The directory is due itself but a child is alive. */
  MF_ASSERT_EQ(remaining(t, "/d", DUE), 0);
  EXPECT_ALIVE(t, "/d");
  EXPECT_ALIVE(t, "/d/long");
  MF_ASSERT_EQ(remaining(t, "/d/long", DUE), 5000 + GRACE_MS - DUE);

  g_ptr_array_set_size(fx.removed, 0);
  MF_ASSERT_EQ(ns_tree_reap(t, 5000 + GRACE_MS, &fx), 2);
  EXPECT_GONE(t, "/d");
  MF_ASSERT_EQ(fx.removed->len, 2);
  CU_ASSERT(index_of(fx.removed, "/d/long") >= 0);
  CU_ASSERT(index_of(fx.removed, "/d/long") < index_of(fx.removed, "/d")); /* children first */
  MF_ASSERT_EQ(t->n_expired, 3);
  ns_effects_clear(&fx);
  ns_tree_free(t);
}

static void test_a_child_created_later_keeps_an_old_directory_alive(void) {
  ns_tree_t *t = new_tree();
  mkdir_at(t, "/d", 0);
  leaf_at(t, "/d/new", 1000);
  MF_ASSERT_EQ(ns_tree_reap(t, DUE, NULL), 0);
  EXPECT_ALIVE(t, "/d");
  MF_ASSERT_EQ(ns_tree_reap(t, 1000 + DUE, NULL), 2);
  EXPECT_GONE(t, "/d");
  ns_tree_free(t);
}

static void test_pinned_nodes_and_the_root_never_expire(void) {
  ns_tree_t *t = new_tree();
  create_at(t, "/a/b/pinned", 0, 2, 0, NS_FLAG_PINNED);
  leaf_at(t, "/a/b/plain", 0);
  leaf_at(t, "/elsewhere", 0);
  const int64_t much_later = 30LL * 24 * 3600 * 1000;
  MF_ASSERT_EQ(remaining(t, "/a/b/pinned", 0), -1);
  MF_ASSERT_EQ(remaining(t, "/a/b/pinned", much_later), -1);
  MF_ASSERT_EQ(ns_node_remaining_ms(t, t->root, 0), -1);
  MF_ASSERT_EQ(ns_node_remaining_ms(t, t->root, much_later), -1);

  MF_ASSERT_EQ(ns_tree_reap(t, much_later, NULL), 2);
  EXPECT_GONE(t, "/a/b/plain");
  EXPECT_GONE(t, "/elsewhere");
  /* The pinned leaf keeps its ancestor directories alive. */
  EXPECT_ALIVE(t, "/a/b/pinned");
  EXPECT_ALIVE(t, "/a/b");
  EXPECT_ALIVE(t, "/a");
  MF_ASSERT_EQ(t->alloc->blocks_used, 2);
  MF_ASSERT_EQ(ns_tree_reap(t, much_later * 10, NULL), 0);
  EXPECT_ALIVE(t, "/a/b/pinned");
  CU_ASSERT_PTR_NOT_NULL(ns_tree_lookup(t, "/"));
  ns_tree_free(t);
}

static void test_a_per_node_lease_overrides_the_default(void) {
  ns_tree_t *t = new_tree();
  create_at(t, "/short", 0, 1, 200, 0);
  create_at(t, "/long", 0, 1, 3000, 0);
  leaf_at(t, "/default", 0);
  MF_ASSERT_EQ(ns_node_lease_ms(t, ns_tree_lookup(t, "/short")), 200);
  MF_ASSERT_EQ(ns_node_lease_ms(t, ns_tree_lookup(t, "/default")), LEASE_MS);
  MF_ASSERT_EQ(remaining(t, "/short", 0), 200 + GRACE_MS);
  MF_ASSERT_EQ(remaining(t, "/long", 0), 3000 + GRACE_MS);
  MF_ASSERT_EQ(remaining(t, "/default", 0), DUE);

  MF_ASSERT_EQ(ns_tree_reap(t, 200 + GRACE_MS, NULL), 1);
  EXPECT_GONE(t, "/short");
  EXPECT_ALIVE(t, "/default");
  MF_ASSERT_EQ(ns_tree_reap(t, DUE, NULL), 1);
  EXPECT_GONE(t, "/default");
  EXPECT_ALIVE(t, "/long");
  MF_ASSERT_EQ(ns_tree_reap(t, 3000 + GRACE_MS, NULL), 1);
  EXPECT_GONE(t, "/long");
  ns_tree_free(t);
}

static void test_renewing_missing_paths_reports_them_and_renews_the_others(void) {
  ns_tree_t *t = new_tree();
  leaf_at(t, "/a", 0);
  leaf_at(t, "/b", 0);
  leaf_at(t, "/c", 0);
  const char *paths[] = {"/a", "/nope", "/b/under-a-leaf", "not-a-path", "/c"};
  ns_effects_t fx;
  ns_effects_init(&fx);
  renew_at(t, 800, paths, 5, &fx);
  MF_ASSERT_EQ(fx.missing->len, 3);
  CU_ASSERT(index_of(fx.missing, "/nope") >= 0);
  CU_ASSERT(index_of(fx.missing, "/b/under-a-leaf") >= 0);
  CU_ASSERT(index_of(fx.missing, "not-a-path") >= 0);
  MF_ASSERT_EQ(effective(t, "/a"), 800);
  MF_ASSERT_EQ(effective(t, "/c"), 800);
  MF_ASSERT_EQ(effective(t, "/b"), 0); /* not named, not renewed */
  MF_ASSERT_EQ(ns_tree_reap(t, DUE, NULL), 1);
  EXPECT_GONE(t, "/b");
  EXPECT_ALIVE(t, "/a");
  EXPECT_ALIVE(t, "/c");
  /* An expired namespace cannot be renewed back to life. */
  ns_effects_clear(&fx);
  ns_effects_init(&fx);
  const char *late[] = {"/b"};
  renew_at(t, DUE + 1, late, 1, &fx);
  MF_ASSERT_EQ(fx.missing->len, 1);
  EXPECT_GONE(t, "/b");
  ns_effects_clear(&fx);
  ns_tree_free(t);
}

static void test_n_expired_counts_only_nodes_removed_by_expiry(void) {
  ns_tree_t *t = new_tree();
  leaf_at(t, "/x/1", 0);
  leaf_at(t, "/x/2", 0);
  leaf_at(t, "/y", 0);
  leaf_at(t, "/z", 0);
  ns_record_t rm = {.type = NS_REC_REMOVE, .now_ms = 10, .path = "/y"};
  MF_ASSERT_EQ(ns_tree_apply(t, &rm, NULL, why, sizeof why), 0);
  MF_ASSERT_EQ(t->n_expired, 0);
  int n = ns_tree_reap(t, DUE, NULL);
  MF_ASSERT_EQ(n, 4); /* /x/1, /x/2, /x, /z */
  MF_ASSERT_EQ(t->n_expired, 4);
  /* Reaping again at the same time finds nothing more. */
  ns_effects_t fx;
  ns_effects_init(&fx);
  MF_ASSERT_EQ(ns_tree_reap(t, DUE, &fx), 0);
  MF_ASSERT_EQ(fx.removed->len, 0);
  MF_ASSERT_EQ(fx.freed->len, 0);
  MF_ASSERT_EQ(t->n_expired, 4);
  ns_effects_clear(&fx);
  ns_tree_free(t);
}

static const mf_test_t tests[] = {
    {"remaining time counts down to 0 when the node is due",
     test_remaining_time_counts_down_to_zero_when_due},
    {"a node not renewed for lease plus grace expires and its blocks return to the pool",
     test_an_unrenewed_node_expires_and_its_blocks_return_to_the_pool},
    {"renewing a path renews its ancestors and its subtree but not its siblings",
     test_renew_covers_ancestors_and_subtree_but_not_siblings},
    {"renewing a leaf keeps its parent directories alive",
     test_renewing_a_leaf_keeps_its_parent_directories_alive},
    {"renewing a subtree extends its lease from the renewal",
     test_renewing_a_subtree_extends_the_lease_from_the_renewal},
    {"renewing the root renews everything", test_renewing_the_root_renews_everything},
    {"a directory goes only when its whole subtree has gone",
     test_a_directory_goes_only_when_its_whole_subtree_has_gone},
    {"a child created later keeps an old directory alive",
     test_a_child_created_later_keeps_an_old_directory_alive},
    {"pinned nodes and the root never expire (remaining -1)",
     test_pinned_nodes_and_the_root_never_expire},
    {"a per-node lease overrides the tree's default", test_a_per_node_lease_overrides_the_default},
    {"renewing a missing path reports it while the others are renewed",
     test_renewing_missing_paths_reports_them_and_renews_the_others},
    {"n_expired counts only nodes removed by expiry",
     test_n_expired_counts_only_nodes_removed_by_expiry},
    {NULL, NULL}};

int main(void) {
  return mf_test_run("namespaces/lease", NULL, NULL, tests);
}
