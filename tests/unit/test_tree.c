/*
 * Unit tests for namespaces/tree.c: every change of the namespace tree made
 * through ns_tree_apply() with records, the reads (lookup, list, stat) and the
 * planning of partitions.
 *
 * "Changes nothing" is checked against a snapshot of the whole state: every
 * node with its fields, layout, quota, watermarks and repartitions under way,
 * the counters, and every block's use and generation. A failed record must
 * leave that snapshot exactly as it was, or replaying the successful records
 * after a crash would not rebuild the tree.
 */
#include <string.h>

#include "common/error.h"
#include "mf_test.h"
#include "namespaces/tree.h"
#include "tree_snapshot.h"

#define LEASE_MS 1000
#define GRACE_MS 100
#define NOW 10
#define WALL 1700000000000LL

static char why[512];

/* ---- helpers --------------------------------------------------------------- */

/* Registers a server through a record and returns its id. */
static int32_t add_server(ns_tree_t *t, const char *address, int32_t blocks, int64_t block_size) {
  ns_effects_t fx;
  ns_effects_init(&fx);
  ns_record_t rec = {.type = NS_REC_SERVER_ADD,
                     .address = address,
                     .blocks = blocks,
                     .block_size = block_size};
  MF_ASSERT_EQ(ns_tree_apply(t, &rec, &fx, why, sizeof why), 0);
  int32_t id = fx.server_id;
  ns_effects_clear(&fx);
  return id;
}

/* A tree with `nservers` servers of `nblocks` blocks of 1 KiB. */
static ns_tree_t *tree_with(int nservers, int32_t nblocks) {
  ns_tree_t *t = ns_tree_new(LEASE_MS, GRACE_MS);
  for (int i = 1; i <= nservers; i++) {
    char addr[32];
    snprintf(addr, sizeof addr, "ms%d:7000", i);
    MF_ASSERT_EQ(add_server(t, addr, nblocks, 1024), i);
  }
  return t;
}

static int do_mkdir(ns_tree_t *t, const char *path, uint32_t flags) {
  why[0] = '\0';
  ns_record_t rec = {
      .type = NS_REC_MKDIR, .flags = flags, .now_ms = NOW, .wall_ms = WALL, .path = path};
  return ns_tree_apply(t, &rec, NULL, why, sizeof why);
}

static int do_create_parts(ns_tree_t *t, const char *path, ns_kind_t kind,
                           const ns_partition_t *parts, size_t nparts) {
  why[0] = '\0';
  ns_record_t rec = {.type = NS_REC_CREATE,
                     .now_ms = NOW,
                     .wall_ms = WALL,
                     .path = path,
                     .kind = kind,
                     .parts = parts,
                     .nparts = nparts};
  return ns_tree_apply(t, &rec, NULL, why, sizeof why);
}

/* Plans `nblocks` partitions and creates the namespace with them. */
static int do_create(ns_tree_t *t, const char *path, ns_kind_t kind, int nblocks) {
  ns_partition_t parts[16];
  CU_ASSERT_FATAL(nblocks <= 16);
  int rc = ns_tree_plan_parts(t, kind, nblocks, parts);
  if (rc != 0) return rc;
  return do_create_parts(t, path, kind, parts, (size_t)nblocks);
}

static int do_remove(ns_tree_t *t, const char *path, uint32_t flags, ns_effects_t *fx) {
  why[0] = '\0';
  ns_record_t rec = {.type = NS_REC_REMOVE, .flags = flags, .now_ms = NOW, .path = path};
  return ns_tree_apply(t, &rec, fx, why, sizeof why);
}

static int do_rename(ns_tree_t *t, const char *from, const char *to) {
  why[0] = '\0';
  ns_record_t rec = {.type = NS_REC_RENAME, .now_ms = NOW, .path = from, .path2 = to};
  return ns_tree_apply(t, &rec, NULL, why, sizeof why);
}

static int do_add_part(ns_tree_t *t, const char *path, const ns_partition_t *p) {
  why[0] = '\0';
  ns_record_t rec = {.type = NS_REC_ADD_PART, .now_ms = NOW, .path = path, .parts = p, .nparts = 1};
  return ns_tree_apply(t, &rec, NULL, why, sizeof why);
}

static int do_remove_part(ns_tree_t *t, const char *path, int32_t index, ns_effects_t *fx) {
  why[0] = '\0';
  ns_record_t rec = {.type = NS_REC_REMOVE_PART, .now_ms = NOW, .path = path, .part_index = index};
  return ns_tree_apply(t, &rec, fx, why, sizeof why);
}

static int is_taken(ns_tree_t *t, ns_block_t b) {
  ns_server_t *s = ns_alloc_server(t->alloc, b.server);
  return s != NULL && s->in_use[b.index] && s->generation[b.index] == b.generation;
}

static ns_partition_t *part(ns_node_t *n, guint i) {
  return &g_array_index(n->layout.parts, ns_partition_t, i);
}

/* Asserts that the tree is exactly as `before` (a snapshot), then frees it. */
static void expect_unchanged(char *before, ns_tree_t *t, int line) {
  char *after = tree_snapshot(t);
  if (strcmp(before, after) != 0) {
    fprintf(stderr, "  line %d: state changed\n  before:\n%s  after:\n%s", line, before, after);
  }
  CU_ASSERT(strcmp(before, after) == 0);
  g_free(after);
  g_free(before);
}
#define EXPECT_UNCHANGED(before, t) expect_unchanged((before), (t), __LINE__)

/* Asserts that an error came with a reason for a human. */
#define EXPECT_WHY() CU_ASSERT(strlen(why) > 0)

/* ---- mkdir ----------------------------------------------------------------- */

static void test_mkdir_makes_a_directory(void) {
  ns_tree_t *t = tree_with(1, 4);
  MF_ASSERT_EQ(do_mkdir(t, "/job42", 0), 0);
  MF_ASSERT_EQ(do_mkdir(t, "/job42/stage1", 0), 0);
  ns_node_t *n = ns_tree_lookup(t, "/job42/stage1");
  CU_ASSERT_PTR_NOT_NULL_FATAL(n);
  MF_ASSERT_EQ(n->kind, NS_KIND_DIRECTORY);
  CU_ASSERT_STRING_EQUAL(n->name, "stage1");
  CU_ASSERT_PTR_EQUAL(n->parent, ns_tree_lookup(t, "/job42"));
  MF_ASSERT_EQ(n->created_wall_ms, WALL);
  MF_ASSERT_EQ(g_hash_table_size(n->children), 0);
  MF_ASSERT_EQ(t->n_dirs, 2);
  MF_ASSERT_EQ(t->n_leaves, 0);
  MF_ASSERT_EQ(t->alloc->blocks_used, 0); /* a directory has no blocks */
  ns_tree_free(t);
}

static void test_mkdir_without_parents_needs_the_parent(void) {
  ns_tree_t *t = tree_with(1, 4);
  char *before = tree_snapshot(t);
  MF_ASSERT_EQ(do_mkdir(t, "/job42/stage1", 0), MAYFLY_ENOENT);
  EXPECT_WHY();
  CU_ASSERT_PTR_NULL(ns_tree_lookup(t, "/job42"));
  EXPECT_UNCHANGED(before, t);
  ns_tree_free(t);
}

static void test_mkdir_with_parents_makes_every_missing_directory(void) {
  ns_tree_t *t = tree_with(1, 4);
  MF_ASSERT_EQ(do_mkdir(t, "/a", 0), 0);
  MF_ASSERT_EQ(do_mkdir(t, "/a/b/c/d", NS_REC_PARENTS), 0);
  const char *dirs[] = {"/a", "/a/b", "/a/b/c", "/a/b/c/d"};
  for (int i = 0; i < 4; i++) {
    ns_node_t *n = ns_tree_lookup(t, dirs[i]);
    CU_ASSERT_PTR_NOT_NULL(n);
    if (n != NULL) MF_ASSERT_EQ(n->kind, NS_KIND_DIRECTORY);
  }
  MF_ASSERT_EQ(t->n_dirs, 4);
  /* Like mkdir -p, an existing directory is fine and nothing changes. */
  char *before = tree_snapshot(t);
  MF_ASSERT_EQ(do_mkdir(t, "/a/b", NS_REC_PARENTS), 0);
  MF_ASSERT_EQ(do_mkdir(t, "/", NS_REC_PARENTS), 0);
  EXPECT_UNCHANGED(before, t);
  ns_tree_free(t);
}

static void test_mkdir_of_an_existing_path_is_eexist(void) {
  ns_tree_t *t = tree_with(1, 4);
  MF_ASSERT_EQ(do_mkdir(t, "/d", 0), 0);
  MF_ASSERT_EQ(do_create(t, "/f", NS_KIND_FILE, 1), 0);
  char *before = tree_snapshot(t);
  MF_ASSERT_EQ(do_mkdir(t, "/d", 0), MAYFLY_EEXIST);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_mkdir(t, "/f", 0), MAYFLY_EEXIST);
  MF_ASSERT_EQ(do_mkdir(t, "/f", NS_REC_PARENTS), MAYFLY_EEXIST); /* a leaf is no directory */
  EXPECT_WHY();
  MF_ASSERT_EQ(do_mkdir(t, "/", 0), MAYFLY_EEXIST);
  EXPECT_UNCHANGED(before, t);
  MF_ASSERT_EQ(ns_tree_lookup(t, "/f")->kind, NS_KIND_FILE);
  ns_tree_free(t);
}

static void test_mkdir_under_a_leaf_is_enotdir(void) {
  ns_tree_t *t = tree_with(1, 4);
  MF_ASSERT_EQ(do_create(t, "/j/f", NS_KIND_KV, 1), 0);
  char *before = tree_snapshot(t);
  MF_ASSERT_EQ(do_mkdir(t, "/j/f/x", 0), MAYFLY_ENOTDIR);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_mkdir(t, "/j/f/x", NS_REC_PARENTS), MAYFLY_ENOTDIR);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_mkdir(t, "/j/f/x/y/z", 0), MAYFLY_ENOTDIR);
  MF_ASSERT_EQ(do_mkdir(t, "/j/f/x/y/z", NS_REC_PARENTS), MAYFLY_ENOTDIR);
  EXPECT_UNCHANGED(before, t);
  ns_tree_free(t);
}

static void test_mkdir_follows_the_path_rules(void) {
  ns_tree_t *t = tree_with(1, 4);
  char long_name[300];
  long_name[0] = '/';
  memset(long_name + 1, 'x', 256);
  long_name[257] = '\0';
  char *before = tree_snapshot(t);
  MF_ASSERT_EQ(do_mkdir(t, "relative", 0), MAYFLY_EBADPATH);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_mkdir(t, "/a/../b", NS_REC_PARENTS), MAYFLY_EBADPATH);
  MF_ASSERT_EQ(do_mkdir(t, "/a/", NS_REC_PARENTS), MAYFLY_EBADPATH);
  MF_ASSERT_EQ(do_mkdir(t, long_name, 0), MAYFLY_ENAMETOOLONG);
  EXPECT_WHY();
  EXPECT_UNCHANGED(before, t);
  ns_tree_free(t);
}

/* ---- create ---------------------------------------------------------------- */

static void test_create_makes_file_queue_and_kv_namespaces(void) {
  ns_tree_t *t = tree_with(2, 8);
  MF_ASSERT_EQ(do_mkdir(t, "/j", 0), 0);
  const struct {
    const char *path;
    ns_kind_t kind;
    int blocks;
  } want[] = {{"/j/file", NS_KIND_FILE, 2}, {"/j/queue", NS_KIND_QUEUE, 1}, {"/j/kv", NS_KIND_KV, 3}};
  for (int i = 0; i < 3; i++) {
    MF_ASSERT_EQ(do_create(t, want[i].path, want[i].kind, want[i].blocks), 0);
  }
  for (int i = 0; i < 3; i++) {
    ns_node_t *n = ns_tree_lookup(t, want[i].path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(n);
    MF_ASSERT_EQ(n->kind, want[i].kind);
    CU_ASSERT_PTR_NULL(n->children);
    CU_ASSERT_PTR_NULL(ns_node_sorted_children(n));
    MF_ASSERT_EQ(n->layout.version, 1);
    MF_ASSERT_EQ(n->layout.parts->len, want[i].blocks);
    for (guint p = 0; p < n->layout.parts->len; p++) CU_ASSERT(is_taken(t, part(n, p)->block));
    MF_ASSERT_EQ(n->created_wall_ms, WALL);
    MF_ASSERT_EQ(n->renewed_ms, NOW);
  }
  MF_ASSERT_EQ(t->n_leaves, 3);
  MF_ASSERT_EQ(t->n_dirs, 1);
  MF_ASSERT_EQ(ns_tree_count(t), 4);
  MF_ASSERT_EQ(t->alloc->blocks_used, 6);
  /* A namespace may start with no blocks at all. */
  MF_ASSERT_EQ(do_create(t, "/j/empty", NS_KIND_QUEUE, 0), 0);
  MF_ASSERT_EQ(ns_tree_lookup(t, "/j/empty")->layout.parts->len, 0);
  MF_ASSERT_EQ(t->alloc->blocks_used, 6);
  ns_tree_free(t);
}

static void test_create_keeps_lease_pinning_and_a_copy_of_the_tags(void) {
  ns_tree_t *t = tree_with(1, 4);
  GHashTable *tags = g_hash_table_new(g_str_hash, g_str_equal);
  g_hash_table_insert(tags, "owner", "job42");
  g_hash_table_insert(tags, "stage", "map");
  ns_record_t rec = {.type = NS_REC_CREATE,
                     .now_ms = NOW,
                     .wall_ms = WALL,
                     .path = "/kv",
                     .kind = NS_KIND_KV,
                     .lease_ms = 5000,
                     .node_flags = NS_FLAG_PINNED | 0xf0u, /* unknown flags are dropped */
                     .tags = tags};
  MF_ASSERT_EQ(ns_tree_apply(t, &rec, NULL, why, sizeof why), 0);
  /* The caller's table is borrowed: changing it afterwards changes nothing. */
  g_hash_table_insert(tags, "owner", "someone-else");
  g_hash_table_remove(tags, "stage");
  g_hash_table_destroy(tags);

  ns_node_t *n = ns_tree_lookup(t, "/kv");
  CU_ASSERT_PTR_NOT_NULL_FATAL(n);
  MF_ASSERT_EQ(n->lease_ms, 5000);
  MF_ASSERT_EQ(ns_node_lease_ms(t, n), 5000);
  MF_ASSERT_EQ(n->flags, NS_FLAG_PINNED);
  CU_ASSERT_PTR_NOT_NULL_FATAL(n->tags);
  MF_ASSERT_EQ(g_hash_table_size(n->tags), 2);
  CU_ASSERT_STRING_EQUAL(g_hash_table_lookup(n->tags, "owner"), "job42");
  CU_ASSERT_STRING_EQUAL(g_hash_table_lookup(n->tags, "stage"), "map");

  /* Lease 0 means the tree's default; no tags means no table. */
  MF_ASSERT_EQ(do_create(t, "/plain", NS_KIND_FILE, 0), 0);
  ns_node_t *plain = ns_tree_lookup(t, "/plain");
  MF_ASSERT_EQ(plain->lease_ms, 0);
  MF_ASSERT_EQ(ns_node_lease_ms(t, plain), LEASE_MS);
  MF_ASSERT_EQ(plain->flags, 0);
  CU_ASSERT_PTR_NULL(plain->tags);
  ns_tree_free(t);
}

static void test_create_of_an_existing_path_is_eexist(void) {
  ns_tree_t *t = tree_with(1, 4);
  MF_ASSERT_EQ(do_mkdir(t, "/d", 0), 0);
  MF_ASSERT_EQ(do_create(t, "/d/f", NS_KIND_FILE, 1), 0);
  char *before = tree_snapshot(t);
  MF_ASSERT_EQ(do_create(t, "/d/f", NS_KIND_FILE, 1), MAYFLY_EEXIST);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_create(t, "/d/f", NS_KIND_KV, 2), MAYFLY_EEXIST);
  MF_ASSERT_EQ(do_create(t, "/d", NS_KIND_QUEUE, 1), MAYFLY_EEXIST);
  EXPECT_UNCHANGED(before, t); /* in particular, no block was taken */
  ns_tree_free(t);
}

static void test_create_refuses_directories_and_unknown_kinds(void) {
  ns_tree_t *t = tree_with(1, 4);
  char *before = tree_snapshot(t);
  MF_ASSERT_EQ(do_create(t, "/d", NS_KIND_DIRECTORY, 0), MAYFLY_EINVAL);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_create(t, "/d", NS_KIND_DIRECTORY, 1), MAYFLY_EINVAL);
  MF_ASSERT_EQ(do_create_parts(t, "/x", (ns_kind_t)4, NULL, 0), MAYFLY_EINVAL);
  MF_ASSERT_EQ(do_create_parts(t, "/x", (ns_kind_t)-1, NULL, 0), MAYFLY_EINVAL);
  EXPECT_UNCHANGED(before, t);
  ns_tree_free(t);
}

static void test_create_makes_missing_parent_directories(void) {
  ns_tree_t *t = tree_with(1, 4);
  MF_ASSERT_EQ(do_mkdir(t, "/job", 0), 0);
  MF_ASSERT_EQ(do_create(t, "/job/stage1/part/kv", NS_KIND_KV, 1), 0);
  ns_node_t *stage = ns_tree_lookup(t, "/job/stage1");
  ns_node_t *partd = ns_tree_lookup(t, "/job/stage1/part");
  ns_node_t *kv = ns_tree_lookup(t, "/job/stage1/part/kv");
  CU_ASSERT_PTR_NOT_NULL_FATAL(stage);
  CU_ASSERT_PTR_NOT_NULL_FATAL(partd);
  CU_ASSERT_PTR_NOT_NULL_FATAL(kv);
  MF_ASSERT_EQ(stage->kind, NS_KIND_DIRECTORY);
  MF_ASSERT_EQ(partd->kind, NS_KIND_DIRECTORY);
  MF_ASSERT_EQ(kv->kind, NS_KIND_KV);
  CU_ASSERT_PTR_EQUAL(kv->parent, partd);
  CU_ASSERT_PTR_EQUAL(partd->parent, stage);
  MF_ASSERT_EQ(t->n_dirs, 3);
  MF_ASSERT_EQ(t->n_leaves, 1);
  ns_tree_free(t);
}

static void test_create_under_a_leaf_is_enotdir(void) {
  ns_tree_t *t = tree_with(1, 8);
  MF_ASSERT_EQ(do_create(t, "/j/leaf", NS_KIND_FILE, 1), 0);
  char *before = tree_snapshot(t);
  MF_ASSERT_EQ(do_create(t, "/j/leaf/x", NS_KIND_KV, 1), MAYFLY_ENOTDIR);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_create(t, "/j/leaf/x/y/z", NS_KIND_KV, 2), MAYFLY_ENOTDIR);
  EXPECT_WHY();
  EXPECT_UNCHANGED(before, t); /* no block taken, no directory made */
  ns_tree_free(t);
}

static void test_create_accepts_leases_up_to_30_days_only(void) {
  ns_tree_t *t = tree_with(1, 4);
  ns_record_t rec = {.type = NS_REC_CREATE, .now_ms = NOW, .path = "/a", .kind = NS_KIND_KV};
  char *before = tree_snapshot(t);
  rec.lease_ms = -1;
  why[0] = '\0';
  MF_ASSERT_EQ(ns_tree_apply(t, &rec, NULL, why, sizeof why), MAYFLY_EINVAL);
  EXPECT_WHY();
  rec.lease_ms = NS_LEASE_MAX_MS + 1;
  MF_ASSERT_EQ(ns_tree_apply(t, &rec, NULL, why, sizeof why), MAYFLY_EINVAL);
  EXPECT_UNCHANGED(before, t);

  rec.lease_ms = NS_LEASE_MAX_MS;
  MF_ASSERT_EQ(ns_tree_apply(t, &rec, NULL, why, sizeof why), 0);
  MF_ASSERT_EQ(ns_node_lease_ms(t, ns_tree_lookup(t, "/a")), NS_LEASE_MAX_MS);
  rec.path = "/b";
  rec.lease_ms = 1;
  MF_ASSERT_EQ(ns_tree_apply(t, &rec, NULL, why, sizeof why), 0);
  MF_ASSERT_EQ(ns_node_lease_ms(t, ns_tree_lookup(t, "/b")), 1);
  ns_tree_free(t);
}

static int create_tagged(ns_tree_t *t, const char *path, GHashTable *tags) {
  why[0] = '\0';
  ns_record_t rec = {
      .type = NS_REC_CREATE, .now_ms = NOW, .path = path, .kind = NS_KIND_QUEUE, .tags = tags};
  return ns_tree_apply(t, &rec, NULL, why, sizeof why);
}

static void test_create_limits_tags(void) {
  ns_tree_t *t = tree_with(1, 4);
  GHashTable *tags = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  char key64[65], value256[257];
  memset(key64, 'k', 64);
  key64[64] = '\0';
  memset(value256, 'v', 256);
  value256[256] = '\0';
  /* At the limits: 32 tags, one with a 64-byte key and a 256-byte value. */
  g_hash_table_insert(tags, g_strdup(key64), g_strdup(value256));
  for (int i = 1; i < NS_TAGS_MAX; i++) {
    g_hash_table_insert(tags, g_strdup_printf("t%d", i), g_strdup(""));
  }
  MF_ASSERT_EQ(create_tagged(t, "/ok", tags), 0);
  ns_node_t *ok = ns_tree_lookup(t, "/ok");
  CU_ASSERT_PTR_NOT_NULL_FATAL(ok);
  MF_ASSERT_EQ(g_hash_table_size(ok->tags), NS_TAGS_MAX);
  CU_ASSERT_STRING_EQUAL(g_hash_table_lookup(ok->tags, key64), value256);

  char *before = tree_snapshot(t);
  g_hash_table_insert(tags, g_strdup("one-too-many"), g_strdup("x"));
  MF_ASSERT_EQ(create_tagged(t, "/bad", tags), MAYFLY_EINVAL);
  EXPECT_WHY();
  g_hash_table_remove_all(tags);

  char key65[66], value257[258];
  memset(key65, 'k', 65);
  key65[65] = '\0';
  memset(value257, 'v', 257);
  value257[257] = '\0';
  g_hash_table_insert(tags, g_strdup(key65), g_strdup("x"));
  MF_ASSERT_EQ(create_tagged(t, "/bad", tags), MAYFLY_EINVAL);
  EXPECT_WHY();
  g_hash_table_remove_all(tags);
  g_hash_table_insert(tags, g_strdup("k"), g_strdup(value257));
  MF_ASSERT_EQ(create_tagged(t, "/bad", tags), MAYFLY_EINVAL);
  g_hash_table_remove_all(tags);
  g_hash_table_insert(tags, g_strdup(""), g_strdup("empty key"));
  MF_ASSERT_EQ(create_tagged(t, "/bad", tags), MAYFLY_EINVAL);
  EXPECT_UNCHANGED(before, t);
  g_hash_table_destroy(tags);
  ns_tree_free(t);
}

static void test_create_limits_blocks_per_request(void) {
  ns_tree_t *t = tree_with(1, 4);
  ns_partition_t *parts = g_new0(ns_partition_t, NS_CREATE_BLOCKS_MAX + 1);
  char *before = tree_snapshot(t);
  MF_ASSERT_EQ(do_create_parts(t, "/big", NS_KIND_FILE, parts, NS_CREATE_BLOCKS_MAX + 1),
               MAYFLY_EINVAL);
  EXPECT_WHY();
  EXPECT_UNCHANGED(before, t);
  MF_ASSERT_EQ(ns_tree_plan_parts(t, NS_KIND_FILE, NS_CREATE_BLOCKS_MAX + 1, parts),
               MAYFLY_EINVAL);
  g_free(parts);
  ns_tree_free(t);
}

static void test_create_takes_blocks_and_remove_gives_them_back(void) {
  ns_tree_t *t = tree_with(2, 4);
  ns_partition_t parts[3];
  MF_ASSERT_EQ(ns_tree_plan_parts(t, NS_KIND_KV, 3, parts), 0);
  MF_ASSERT_EQ(t->alloc->blocks_used, 0);
  MF_ASSERT_EQ(do_create_parts(t, "/kv", NS_KIND_KV, parts, 3), 0);
  MF_ASSERT_EQ(t->alloc->blocks_used, 3);
  for (int i = 0; i < 3; i++) CU_ASSERT(is_taken(t, parts[i].block));
  ns_node_t *n = ns_tree_lookup(t, "/kv");
  for (guint i = 0; i < 3; i++) {
    CU_ASSERT(memcmp(part(n, i), &parts[i], sizeof parts[i]) == 0); /* layout as planned */
  }

  ns_effects_t fx;
  ns_effects_init(&fx);
  MF_ASSERT_EQ(do_remove(t, "/kv", 0, &fx), 0);
  MF_ASSERT_EQ(t->alloc->blocks_used, 0);
  MF_ASSERT_EQ(fx.freed->len, 3);
  for (guint i = 0; i < fx.freed->len; i++) {
    ns_block_t b = g_array_index(fx.freed, ns_block_t, i);
    int found = 0;
    for (int j = 0; j < 3; j++) found += memcmp(&b, &parts[j].block, sizeof b) == 0;
    MF_ASSERT_EQ(found, 1);
    CU_ASSERT(!is_taken(t, b));
  }
  MF_ASSERT_EQ(fx.removed->len, 1);
  CU_ASSERT_STRING_EQUAL(g_ptr_array_index(fx.removed, 0), "/kv");
  CU_ASSERT_PTR_NULL(ns_tree_lookup(t, "/kv"));
  MF_ASSERT_EQ(t->n_leaves, 0);
  ns_effects_clear(&fx);
  ns_tree_free(t);
}

static void test_create_with_a_block_already_taken_is_emoved_and_changes_nothing(void) {
  ns_tree_t *t = tree_with(1, 4);
  ns_partition_t p;
  MF_ASSERT_EQ(ns_tree_plan_parts(t, NS_KIND_FILE, 1, &p), 0);
  MF_ASSERT_EQ(do_create_parts(t, "/first", NS_KIND_FILE, &p, 1), 0);
  char *before = tree_snapshot(t);
  /* The same plan again (a stale plan): its block belongs to /first now. */
  MF_ASSERT_EQ(do_create_parts(t, "/new/dir/second", NS_KIND_FILE, &p, 1), MAYFLY_EMOVED);
  EXPECT_WHY();
  CU_ASSERT_PTR_NULL(ns_tree_lookup(t, "/new/dir/second"));
  CU_ASSERT_PTR_NULL(ns_tree_lookup(t, "/new")); /* no parents made either */
  MF_ASSERT_EQ(t->alloc->blocks_used, 1);
  EXPECT_UNCHANGED(before, t);
  /* A block that was freed since the plan is as stale as one in use. */
  MF_ASSERT_EQ(do_remove(t, "/first", 0, NULL), 0);
  MF_ASSERT_EQ(do_create_parts(t, "/second", NS_KIND_FILE, &p, 1), MAYFLY_EMOVED);
  CU_ASSERT_PTR_NULL(ns_tree_lookup(t, "/second"));
  MF_ASSERT_EQ(t->alloc->blocks_used, 0);
  ns_tree_free(t);
}

/* Regression: when the second block of a create is not free, the first one
 * was already taken; undoing that must not bump its generation, or a failed
 * record (which is never logged) changes state that replay will not see, and
 * the caller's plan goes stale for no reason. */
static void test_a_failed_create_leaves_its_other_planned_blocks_untouched(void) {
  ns_tree_t *t = tree_with(2, 4);
  ns_partition_t plan[2];
  MF_ASSERT_EQ(ns_tree_plan_parts(t, NS_KIND_KV, 2, plan), 0);
  MF_ASSERT_EQ(do_create_parts(t, "/other", NS_KIND_KV, &plan[1], 1), 0); /* steal block 2 */
  char *before = tree_snapshot(t);
  MF_ASSERT_EQ(do_create_parts(t, "/victim", NS_KIND_KV, plan, 2), MAYFLY_EMOVED);
  EXPECT_WHY();
  CU_ASSERT_PTR_NULL(ns_tree_lookup(t, "/victim"));
  MF_ASSERT_EQ(t->alloc->blocks_used, 1);
  EXPECT_UNCHANGED(before, t);
  /* The first planned block is still free under the planned generation. */
  ns_server_t *s = ns_alloc_server(t->alloc, plan[0].block.server);
  MF_ASSERT_EQ(s->generation[plan[0].block.index], plan[0].block.generation);
  MF_ASSERT_EQ(do_create_parts(t, "/victim", NS_KIND_KV, plan, 1), 0);
  ns_tree_free(t);
}

/* ---- remove ---------------------------------------------------------------- */

static void test_remove_of_a_missing_path_is_enoent(void) {
  ns_tree_t *t = tree_with(1, 4);
  MF_ASSERT_EQ(do_mkdir(t, "/d", 0), 0);
  MF_ASSERT_EQ(do_create(t, "/f", NS_KIND_FILE, 1), 0);
  char *before = tree_snapshot(t);
  MF_ASSERT_EQ(do_remove(t, "/d/nothing", 0, NULL), MAYFLY_ENOENT);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_remove(t, "/no/such/dir", NS_REC_RECURSIVE, NULL), MAYFLY_ENOENT);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_remove(t, "/f/x", 0, NULL), MAYFLY_ENOTDIR);
  MF_ASSERT_EQ(do_remove(t, "bad", 0, NULL), MAYFLY_EBADPATH);
  EXPECT_UNCHANGED(before, t);
  ns_tree_free(t);
}

static void test_remove_of_a_non_empty_directory_needs_recursive(void) {
  ns_tree_t *t = tree_with(1, 4);
  MF_ASSERT_EQ(do_create(t, "/j/kv", NS_KIND_KV, 1), 0);
  char *before = tree_snapshot(t);
  ns_effects_t fx;
  ns_effects_init(&fx);
  MF_ASSERT_EQ(do_remove(t, "/j", 0, &fx), MAYFLY_ENOTEMPTY);
  EXPECT_WHY();
  MF_ASSERT_EQ(fx.freed->len, 0);
  MF_ASSERT_EQ(fx.removed->len, 0);
  EXPECT_UNCHANGED(before, t);
  ns_effects_clear(&fx);
  ns_tree_free(t);
}

static void test_remove_of_an_empty_directory_or_a_leaf_needs_no_flag(void) {
  ns_tree_t *t = tree_with(1, 4);
  MF_ASSERT_EQ(do_mkdir(t, "/j/empty", NS_REC_PARENTS), 0);
  MF_ASSERT_EQ(do_create(t, "/j/q", NS_KIND_QUEUE, 2), 0);
  MF_ASSERT_EQ(do_remove(t, "/j/empty", 0, NULL), 0);
  MF_ASSERT_EQ(do_remove(t, "/j/q", 0, NULL), 0);
  CU_ASSERT_PTR_NULL(ns_tree_lookup(t, "/j/empty"));
  CU_ASSERT_PTR_NULL(ns_tree_lookup(t, "/j/q"));
  MF_ASSERT_EQ(g_hash_table_size(ns_tree_lookup(t, "/j")->children), 0);
  MF_ASSERT_EQ(t->n_dirs, 1);
  MF_ASSERT_EQ(t->n_leaves, 0);
  MF_ASSERT_EQ(t->alloc->blocks_used, 0);
  MF_ASSERT_EQ(t->n_expired, 0); /* an explicit remove is no expiry */
  ns_tree_free(t);
}

static void test_recursive_remove_frees_the_subtree_children_first(void) {
  ns_tree_t *t = tree_with(3, 8);
  MF_ASSERT_EQ(do_create(t, "/j/a/kv", NS_KIND_KV, 3), 0);
  MF_ASSERT_EQ(do_create(t, "/j/a/file", NS_KIND_FILE, 2), 0);
  MF_ASSERT_EQ(do_mkdir(t, "/j/b/deep/er", NS_REC_PARENTS), 0);
  MF_ASSERT_EQ(do_create(t, "/j/b/deep/er/q", NS_KIND_QUEUE, 1), 0);
  MF_ASSERT_EQ(do_create(t, "/keep", NS_KIND_FILE, 1), 0);
  MF_ASSERT_EQ(t->alloc->blocks_used, 7);
  GArray *subtree_blocks = g_array_new(FALSE, FALSE, sizeof(ns_block_t));
  const char *leaves[] = {"/j/a/kv", "/j/a/file", "/j/b/deep/er/q"};
  for (int i = 0; i < 3; i++) {
    ns_node_t *n = ns_tree_lookup(t, leaves[i]);
    for (guint p = 0; p < n->layout.parts->len; p++) {
      g_array_append_val(subtree_blocks, part(n, p)->block);
    }
  }

  ns_effects_t fx;
  ns_effects_init(&fx);
  MF_ASSERT_EQ(do_remove(t, "/j", NS_REC_RECURSIVE, &fx), 0);
  /* Every block of the subtree is freed, and only those. */
  MF_ASSERT_EQ(t->alloc->blocks_used, 1);
  MF_ASSERT_EQ(fx.freed->len, 6);
  for (guint i = 0; i < subtree_blocks->len; i++) {
    ns_block_t b = g_array_index(subtree_blocks, ns_block_t, i);
    CU_ASSERT(!is_taken(t, b));
    int found = 0;
    for (guint j = 0; j < fx.freed->len; j++) {
      found += memcmp(&b, &g_array_index(fx.freed, ns_block_t, j), sizeof b) == 0;
    }
    MF_ASSERT_EQ(found, 1);
  }
  CU_ASSERT(is_taken(t, part(ns_tree_lookup(t, "/keep"), 0)->block));
  /* Every removed node is listed once, each after all of its descendants. */
  const char *gone[] = {"/j",   "/j/a",          "/j/a/kv",          "/j/a/file",
                        "/j/b", "/j/b/deep", "/j/b/deep/er", "/j/b/deep/er/q"};
  MF_ASSERT_EQ(fx.removed->len, 8);
  for (int i = 0; i < 8; i++) {
    int at = -1;
    for (guint j = 0; j < fx.removed->len; j++) {
      if (strcmp(g_ptr_array_index(fx.removed, j), gone[i]) == 0) at = (int)j;
    }
    CU_ASSERT(at >= 0);
    for (guint j = 0; at >= 0 && j < fx.removed->len; j++) {
      const char *other = g_ptr_array_index(fx.removed, j);
      if (strcmp(other, gone[i]) != 0 && g_str_has_prefix(other, gone[i]) &&
          other[strlen(gone[i])] == '/') {
        CU_ASSERT((int)j < at); /* a descendant comes before */
      }
    }
  }
  CU_ASSERT_STRING_EQUAL(g_ptr_array_index(fx.removed, fx.removed->len - 1), "/j");
  CU_ASSERT_PTR_NULL(ns_tree_lookup(t, "/j"));
  MF_ASSERT_EQ(t->n_dirs, 0);
  MF_ASSERT_EQ(t->n_leaves, 1);
  g_array_free(subtree_blocks, TRUE);
  ns_effects_clear(&fx);
  ns_tree_free(t);
}

static void test_the_root_cannot_be_removed(void) {
  ns_tree_t *t = tree_with(1, 4);
  MF_ASSERT_EQ(do_create(t, "/f", NS_KIND_FILE, 1), 0);
  char *before = tree_snapshot(t);
  MF_ASSERT_EQ(do_remove(t, "/", 0, NULL), MAYFLY_EPERM);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_remove(t, "/", NS_REC_RECURSIVE, NULL), MAYFLY_EPERM);
  EXPECT_UNCHANGED(before, t);
  ns_tree_free(t);
}

/* ---- rename ---------------------------------------------------------------- */

static void test_rename_moves_a_node_with_its_subtree(void) {
  ns_tree_t *t = tree_with(1, 8);
  MF_ASSERT_EQ(do_create(t, "/j/stage1/kv", NS_KIND_KV, 2), 0);
  MF_ASSERT_EQ(do_create(t, "/j/stage1/sub/q", NS_KIND_QUEUE, 1), 0);
  MF_ASSERT_EQ(do_mkdir(t, "/archive", 0), 0);
  ns_node_t *kv = ns_tree_lookup(t, "/j/stage1/kv");
  ns_partition_t kv0 = *part(kv, 0);
  int64_t dirs = t->n_dirs, leaves = t->n_leaves, used = t->alloc->blocks_used;

  MF_ASSERT_EQ(do_rename(t, "/j/stage1", "/archive/done"), 0);
  CU_ASSERT_PTR_NULL(ns_tree_lookup(t, "/j/stage1"));
  CU_ASSERT_PTR_NULL(ns_tree_lookup(t, "/j/stage1/kv"));
  MF_ASSERT_EQ(g_hash_table_size(ns_tree_lookup(t, "/j")->children), 0);
  ns_node_t *moved = ns_tree_lookup(t, "/archive/done/kv");
  CU_ASSERT_PTR_EQUAL(moved, kv); /* the same namespace, with the same data */
  CU_ASSERT(memcmp(part(moved, 0), &kv0, sizeof kv0) == 0);
  MF_ASSERT_EQ(moved->layout.version, 1);
  CU_ASSERT_PTR_NOT_NULL(ns_tree_lookup(t, "/archive/done/sub/q"));
  CU_ASSERT_STRING_EQUAL(ns_tree_lookup(t, "/archive/done")->name, "done");
  char *p = ns_node_path(moved);
  CU_ASSERT_STRING_EQUAL(p, "/archive/done/kv");
  g_free(p);
  MF_ASSERT_EQ(t->n_dirs, dirs);
  MF_ASSERT_EQ(t->n_leaves, leaves);
  MF_ASSERT_EQ(t->alloc->blocks_used, used);
  ns_tree_free(t);
}

static void test_rename_within_a_directory_changes_the_name(void) {
  ns_tree_t *t = tree_with(1, 4);
  MF_ASSERT_EQ(do_create(t, "/j/tmp", NS_KIND_FILE, 1), 0);
  MF_ASSERT_EQ(do_rename(t, "/j/tmp", "/j/final"), 0);
  CU_ASSERT_PTR_NULL(ns_tree_lookup(t, "/j/tmp"));
  ns_node_t *n = ns_tree_lookup(t, "/j/final");
  CU_ASSERT_PTR_NOT_NULL_FATAL(n);
  CU_ASSERT_STRING_EQUAL(n->name, "final");
  MF_ASSERT_EQ(n->kind, NS_KIND_FILE);
  GPtrArray *kids = ns_node_sorted_children(ns_tree_lookup(t, "/j"));
  MF_ASSERT_EQ(kids->len, 1);
  g_ptr_array_free(kids, TRUE);
  /* The old name is free for a new namespace. */
  MF_ASSERT_EQ(do_create(t, "/j/tmp", NS_KIND_FILE, 1), 0);
  ns_tree_free(t);
}

static void test_rename_into_its_own_subtree_is_esubtree(void) {
  ns_tree_t *t = tree_with(1, 4);
  MF_ASSERT_EQ(do_mkdir(t, "/a/b/c", NS_REC_PARENTS), 0);
  char *before = tree_snapshot(t);
  MF_ASSERT_EQ(do_rename(t, "/a", "/a/x"), MAYFLY_ESUBTREE);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_rename(t, "/a", "/a/b/c/x"), MAYFLY_ESUBTREE);
  MF_ASSERT_EQ(do_rename(t, "/a/b", "/a/b/x"), MAYFLY_ESUBTREE);
  EXPECT_UNCHANGED(before, t);
  /* A sibling whose name starts the same is not inside. */
  MF_ASSERT_EQ(do_rename(t, "/a/b", "/ab"), 0);
  CU_ASSERT_PTR_NOT_NULL(ns_tree_lookup(t, "/ab/c"));
  ns_tree_free(t);
}

static void test_rename_onto_an_existing_path_is_eexist(void) {
  ns_tree_t *t = tree_with(1, 4);
  MF_ASSERT_EQ(do_create(t, "/a", NS_KIND_FILE, 1), 0);
  MF_ASSERT_EQ(do_create(t, "/b", NS_KIND_KV, 1), 0);
  MF_ASSERT_EQ(do_mkdir(t, "/d", 0), 0);
  char *before = tree_snapshot(t);
  MF_ASSERT_EQ(do_rename(t, "/a", "/b"), MAYFLY_EEXIST);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_rename(t, "/a", "/d"), MAYFLY_EEXIST);
  MF_ASSERT_EQ(do_rename(t, "/d", "/a"), MAYFLY_EEXIST);
  EXPECT_UNCHANGED(before, t);
  ns_tree_free(t);
}

static void test_rename_of_a_missing_path_is_enoent(void) {
  ns_tree_t *t = tree_with(1, 4);
  MF_ASSERT_EQ(do_mkdir(t, "/d", 0), 0);
  char *before = tree_snapshot(t);
  MF_ASSERT_EQ(do_rename(t, "/d/none", "/d/other"), MAYFLY_ENOENT);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_rename(t, "/none/x", "/d/x"), MAYFLY_ENOENT);
  EXPECT_UNCHANGED(before, t);
  ns_tree_free(t);
}

static void test_rename_to_a_missing_or_leaf_parent_fails_and_keeps_the_source(void) {
  ns_tree_t *t = tree_with(1, 4);
  MF_ASSERT_EQ(do_create(t, "/src", NS_KIND_QUEUE, 1), 0);
  MF_ASSERT_EQ(do_create(t, "/leaf", NS_KIND_FILE, 1), 0);
  char *before = tree_snapshot(t);
  MF_ASSERT_EQ(do_rename(t, "/src", "/no/such/dst"), MAYFLY_ENOENT);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_rename(t, "/src", "/leaf/dst"), MAYFLY_ENOTDIR);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_rename(t, "/src", "bad//path"), MAYFLY_EBADPATH);
  EXPECT_UNCHANGED(before, t);
  CU_ASSERT_PTR_NOT_NULL(ns_tree_lookup(t, "/src"));
  ns_tree_free(t);
}

static void test_the_root_cannot_be_renamed_or_replaced(void) {
  ns_tree_t *t = tree_with(1, 4);
  MF_ASSERT_EQ(do_mkdir(t, "/d", 0), 0);
  char *before = tree_snapshot(t);
  MF_ASSERT_EQ(do_rename(t, "/", "/d/root"), MAYFLY_EPERM);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_rename(t, "/d", "/"), MAYFLY_EPERM);
  EXPECT_UNCHANGED(before, t);
  ns_tree_free(t);
}

/* ---- reads ----------------------------------------------------------------- */

static void test_lookup_finds_only_existing_valid_paths(void) {
  ns_tree_t *t = tree_with(1, 4);
  MF_ASSERT_EQ(do_create(t, "/j/f", NS_KIND_FILE, 1), 0);
  CU_ASSERT_PTR_EQUAL(ns_tree_lookup(t, "/"), t->root);
  CU_ASSERT_PTR_NOT_NULL(ns_tree_lookup(t, "/j"));
  CU_ASSERT_PTR_NOT_NULL(ns_tree_lookup(t, "/j/f"));
  CU_ASSERT_PTR_NULL(ns_tree_lookup(t, "/j/g"));
  CU_ASSERT_PTR_NULL(ns_tree_lookup(t, "/k"));
  CU_ASSERT_PTR_NULL(ns_tree_lookup(t, "/j/f/x")); /* through a leaf */
  CU_ASSERT_PTR_NULL(ns_tree_lookup(t, "/j/"));    /* invalid spellings of /j */
  CU_ASSERT_PTR_NULL(ns_tree_lookup(t, "//j"));
  CU_ASSERT_PTR_NULL(ns_tree_lookup(t, "/j/./f"));
  CU_ASSERT_PTR_NULL(ns_tree_lookup(t, "j"));
  ns_tree_free(t);
}

static void collect_path(ns_node_t *n, void *ud) {
  g_ptr_array_add(ud, ns_node_path(n));
}

static void test_children_are_listed_sorted_by_name(void) {
  ns_tree_t *t = tree_with(1, 8);
  const char *names[] = {"zeta", "alpha", "Mid", "beta", "alpha2", "_x"};
  for (int i = 0; i < 6; i++) {
    char *p = g_strconcat("/j/", names[i], NULL);
    if (i % 2 == 0) {
      MF_ASSERT_EQ(do_mkdir(t, p, NS_REC_PARENTS), 0);
    } else {
      MF_ASSERT_EQ(do_create(t, p, NS_KIND_KV, 1), 0);
    }
    g_free(p);
  }
  GPtrArray *kids = ns_node_sorted_children(ns_tree_lookup(t, "/j"));
  CU_ASSERT_PTR_NOT_NULL_FATAL(kids);
  const char *want[] = {"Mid", "_x", "alpha", "alpha2", "beta", "zeta"}; /* byte order */
  MF_ASSERT_EQ(kids->len, 6);
  for (guint i = 0; i < kids->len && i < 6; i++) {
    CU_ASSERT_STRING_EQUAL(((ns_node_t *)g_ptr_array_index(kids, i))->name, want[i]);
  }
  g_ptr_array_free(kids, TRUE);
  /* An empty directory lists nothing; a leaf has no list. */
  kids = ns_node_sorted_children(ns_tree_lookup(t, "/j/zeta"));
  MF_ASSERT_EQ(kids->len, 0);
  g_ptr_array_free(kids, TRUE);
  CU_ASSERT_PTR_NULL(ns_node_sorted_children(ns_tree_lookup(t, "/j/alpha")));

  /* A walk visits each node before its children, children in name order. */
  GPtrArray *seen = g_ptr_array_new_with_free_func(g_free);
  ns_tree_walk(t->root, collect_path, seen);
  const char *order[] = {"/",        "/j",       "/j/Mid",  "/j/_x",
                         "/j/alpha", "/j/alpha2", "/j/beta", "/j/zeta"};
  MF_ASSERT_EQ(seen->len, 8);
  for (guint i = 0; i < seen->len && i < 8; i++) {
    CU_ASSERT_STRING_EQUAL(g_ptr_array_index(seen, i), order[i]);
  }
  g_ptr_array_free(seen, TRUE);
  ns_tree_free(t);
}

static void test_stat_fields_describe_the_node(void) {
  ns_tree_t *t = tree_with(1, 4);
  ns_record_t mk = {.type = NS_REC_MKDIR, .now_ms = 5, .wall_ms = 111, .path = "/d"};
  MF_ASSERT_EQ(ns_tree_apply(t, &mk, NULL, why, sizeof why), 0);
  ns_partition_t p;
  MF_ASSERT_EQ(ns_tree_plan_parts(t, NS_KIND_FILE, 1, &p), 0);
  ns_record_t cr = {.type = NS_REC_CREATE,
                    .now_ms = 7,
                    .wall_ms = 222,
                    .path = "/d/f",
                    .kind = NS_KIND_FILE,
                    .lease_ms = 2500,
                    .parts = &p,
                    .nparts = 1};
  MF_ASSERT_EQ(ns_tree_apply(t, &cr, NULL, why, sizeof why), 0);

  ns_node_t *d = ns_tree_lookup(t, "/d"), *f = ns_tree_lookup(t, "/d/f");
  MF_ASSERT_EQ(d->kind, NS_KIND_DIRECTORY);
  MF_ASSERT_EQ(d->created_wall_ms, 111);
  MF_ASSERT_EQ(ns_node_lease_ms(t, d), LEASE_MS);
  MF_ASSERT_EQ(d->flags, 0);
  CU_ASSERT_PTR_NULL(d->layout.parts);
  MF_ASSERT_EQ(f->kind, NS_KIND_FILE);
  MF_ASSERT_EQ(f->created_wall_ms, 222);
  MF_ASSERT_EQ(ns_node_lease_ms(t, f), 2500);
  MF_ASSERT_EQ(ns_node_effective_renewal(f), 7);
  MF_ASSERT_EQ(ns_node_remaining_ms(t, f, 7), 2500 + GRACE_MS);
  MF_ASSERT_EQ(f->layout.version, 1);
  MF_ASSERT_EQ(f->layout.parts->len, 1);
  MF_ASSERT_EQ(part(f, 0)->hi - part(f, 0)->lo, 1024);
  char *path = ns_node_path(f);
  CU_ASSERT_STRING_EQUAL(path, "/d/f");
  g_free(path);
  path = ns_node_path(t->root);
  CU_ASSERT_STRING_EQUAL(path, "/");
  g_free(path);
  CU_ASSERT_STRING_EQUAL(t->root->name, "");
  MF_ASSERT_EQ(t->root->flags & NS_FLAG_PINNED, NS_FLAG_PINNED);
  MF_ASSERT_EQ(ns_tree_count(t), 2);
  ns_tree_free(t);
}

static void test_kind_names_parse_back(void) {
  for (int k = NS_KIND_DIRECTORY; k <= NS_KIND_KV; k++) {
    ns_kind_t parsed = (ns_kind_t)-1;
    MF_ASSERT_EQ(ns_kind_parse(ns_kind_name((ns_kind_t)k), &parsed), 0);
    MF_ASSERT_EQ(parsed, k);
  }
  CU_ASSERT_STRING_EQUAL(ns_kind_name(NS_KIND_KV), "kv");
  CU_ASSERT_STRING_EQUAL(ns_kind_name(NS_KIND_QUEUE), "queue");
  CU_ASSERT_STRING_EQUAL(ns_kind_name((ns_kind_t)9), "unknown");
  ns_kind_t out = NS_KIND_FILE;
  MF_ASSERT_EQ(ns_kind_parse("table", &out), MAYFLY_EINVAL);
  MF_ASSERT_EQ(ns_kind_parse("KV", &out), MAYFLY_EINVAL);
  MF_ASSERT_EQ(ns_kind_parse(NULL, &out), MAYFLY_EINVAL);
  MF_ASSERT_EQ(out, NS_KIND_FILE);
}

/* ---- partitions ------------------------------------------------------------ */

static void test_adding_a_partition_takes_its_block_and_bumps_the_version(void) {
  ns_tree_t *t = tree_with(2, 4);
  MF_ASSERT_EQ(do_create(t, "/f", NS_KIND_FILE, 1), 0);
  ns_node_t *f = ns_tree_lookup(t, "/f");
  ns_partition_t p;
  MF_ASSERT_EQ(ns_tree_plan_append(t, f, 0, 0, &p), 0);
  MF_ASSERT_EQ(t->alloc->blocks_used, 1); /* planning takes nothing */
  MF_ASSERT_EQ(do_add_part(t, "/f", &p), 0);
  MF_ASSERT_EQ(t->alloc->blocks_used, 2);
  CU_ASSERT(is_taken(t, p.block));
  MF_ASSERT_EQ(f->layout.version, 2);
  MF_ASSERT_EQ(f->layout.parts->len, 2);
  CU_ASSERT(memcmp(part(f, 1), &p, sizeof p) == 0);
  ns_tree_free(t);
}

static void test_removing_a_partition_frees_its_block_and_bumps_the_version(void) {
  ns_tree_t *t = tree_with(2, 4);
  MF_ASSERT_EQ(do_create(t, "/q", NS_KIND_QUEUE, 3), 0);
  ns_node_t *q = ns_tree_lookup(t, "/q");
  ns_partition_t head = *part(q, 0), second = *part(q, 1), third = *part(q, 2);
  ns_effects_t fx;
  ns_effects_init(&fx);
  MF_ASSERT_EQ(do_remove_part(t, "/q", 0, &fx), 0); /* the head drained */
  MF_ASSERT_EQ(t->alloc->blocks_used, 2);
  CU_ASSERT(!is_taken(t, head.block));
  MF_ASSERT_EQ(fx.freed->len, 1);
  CU_ASSERT(memcmp(&g_array_index(fx.freed, ns_block_t, 0), &head.block, sizeof head.block) == 0);
  MF_ASSERT_EQ(q->layout.version, 2);
  MF_ASSERT_EQ(q->layout.parts->len, 2);
  CU_ASSERT(memcmp(part(q, 0), &second, sizeof second) == 0); /* the rest keeps its order */
  CU_ASSERT(memcmp(part(q, 1), &third, sizeof third) == 0);
  ns_effects_clear(&fx);
  ns_tree_free(t);
}

static void test_partition_changes_are_refused_without_changing_anything(void) {
  ns_tree_t *t = tree_with(1, 4);
  MF_ASSERT_EQ(do_create(t, "/f", NS_KIND_FILE, 1), 0);
  MF_ASSERT_EQ(do_mkdir(t, "/d", 0), 0);
  ns_node_t *f = ns_tree_lookup(t, "/f");
  ns_partition_t taken = *part(f, 0), fresh;
  MF_ASSERT_EQ(ns_tree_plan_append(t, f, 0, 0, &fresh), 0);
  char *before = tree_snapshot(t);
  MF_ASSERT_EQ(do_add_part(t, "/missing", &fresh), MAYFLY_ENOENT);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_add_part(t, "/d", &fresh), MAYFLY_EISDIR);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_add_part(t, "/f", &taken), MAYFLY_EMOVED);
  EXPECT_WHY();
  ns_record_t two = {.type = NS_REC_ADD_PART, .path = "/f", .parts = &fresh, .nparts = 2};
  MF_ASSERT_EQ(ns_tree_apply(t, &two, NULL, NULL, 0), MAYFLY_EINVAL);
  ns_record_t none = {.type = NS_REC_ADD_PART, .path = "/f", .parts = &fresh, .nparts = 0};
  MF_ASSERT_EQ(ns_tree_apply(t, &none, NULL, NULL, 0), MAYFLY_EINVAL);
  MF_ASSERT_EQ(do_remove_part(t, "/f", 1, NULL), MAYFLY_EINVAL);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_remove_part(t, "/f", -1, NULL), MAYFLY_EINVAL);
  MF_ASSERT_EQ(do_remove_part(t, "/d", 0, NULL), MAYFLY_EISDIR);
  MF_ASSERT_EQ(do_remove_part(t, "/missing", 0, NULL), MAYFLY_ENOENT);
  EXPECT_UNCHANGED(before, t);
  ns_tree_free(t);
}

static void test_kv_plan_covers_every_slot_without_gaps(void) {
  ns_tree_t *t = tree_with(4, 4);
  const int counts[] = {1, 2, 3, 7, 16};
  for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
    int n = counts[c];
    ns_partition_t parts[16];
    MF_ASSERT_EQ(ns_tree_plan_parts(t, NS_KIND_KV, n, parts), 0);
    MF_ASSERT_EQ(parts[0].lo, 0);
    MF_ASSERT_EQ(parts[n - 1].hi, NS_KV_SLOTS);
    for (int i = 0; i < n; i++) {
      CU_ASSERT(parts[i].hi > parts[i].lo);
      if (i > 0) MF_ASSERT_EQ(parts[i].lo, parts[i - 1].hi);
      /* Evenly: sizes differ by at most one slot. */
      int64_t size = parts[i].hi - parts[i].lo;
      CU_ASSERT(size == NS_KV_SLOTS / n || size == NS_KV_SLOTS / n + 1);
    }
  }
  ns_tree_free(t);
}

static void test_file_plan_gives_consecutive_byte_ranges(void) {
  ns_tree_t *t = ns_tree_new(LEASE_MS, GRACE_MS);
  int32_t small = add_server(t, "small:1", 4, 1024);
  int32_t big = add_server(t, "big:1", 4, 4096);
  ns_partition_t parts[6];
  MF_ASSERT_EQ(ns_tree_plan_parts(t, NS_KIND_FILE, 6, parts), 0);
  int64_t offset = 0;
  for (int i = 0; i < 6; i++) {
    MF_ASSERT_EQ(parts[i].lo, offset);
    int64_t size = parts[i].block.server == big ? 4096 : 1024;
    CU_ASSERT(parts[i].block.server == big || parts[i].block.server == small);
    MF_ASSERT_EQ(parts[i].hi - parts[i].lo, size); /* one block's worth of bytes */
    offset = parts[i].hi;
  }
  MF_ASSERT_EQ(t->alloc->blocks_used, 0);
  ns_tree_free(t);
}

static void test_queue_plan_numbers_segments_from_zero(void) {
  ns_tree_t *t = tree_with(2, 4);
  ns_partition_t parts[5];
  MF_ASSERT_EQ(ns_tree_plan_parts(t, NS_KIND_QUEUE, 5, parts), 0);
  for (int i = 0; i < 5; i++) {
    MF_ASSERT_EQ(parts[i].lo, i);
    MF_ASSERT_EQ(parts[i].hi, i + 1);
  }
  ns_tree_free(t);
}

static void test_plans_spread_blocks_and_fail_when_the_pool_cannot_serve(void) {
  ns_tree_t *t = ns_tree_new(LEASE_MS, GRACE_MS);
  ns_partition_t parts[8];
  MF_ASSERT_EQ(ns_tree_plan_parts(t, NS_KIND_KV, 1, parts), MAYFLY_ENOSERVERS);
  add_server(t, "ms1:1", 2, 1024);
  add_server(t, "ms2:1", 2, 1024);
  MF_ASSERT_EQ(ns_tree_plan_parts(t, NS_KIND_KV, 2, parts), 0);
  CU_ASSERT(parts[0].block.server != parts[1].block.server);
  MF_ASSERT_EQ(ns_tree_plan_parts(t, NS_KIND_KV, 5, parts), MAYFLY_ENOSPC);
  MF_ASSERT_EQ(ns_tree_plan_parts(t, NS_KIND_KV, -1, parts), MAYFLY_EINVAL);
  ns_record_t down = {.type = NS_REC_SERVER_STATE, .server_id = 1, .up = 0};
  MF_ASSERT_EQ(ns_tree_apply(t, &down, NULL, NULL, 0), 0);
  MF_ASSERT_EQ(ns_tree_plan_parts(t, NS_KIND_KV, 3, parts), MAYFLY_ENOSPC);
  MF_ASSERT_EQ(ns_tree_plan_parts(t, NS_KIND_KV, 2, parts), 0);
  MF_ASSERT_EQ(parts[0].block.server, 2);
  MF_ASSERT_EQ(parts[1].block.server, 2);
  down.server_id = 2;
  MF_ASSERT_EQ(ns_tree_apply(t, &down, NULL, NULL, 0), 0);
  MF_ASSERT_EQ(ns_tree_plan_parts(t, NS_KIND_KV, 1, parts), MAYFLY_ENOSERVERS);
  ns_tree_free(t);
}

static void test_append_plan_continues_after_the_last_partition(void) {
  ns_tree_t *t = tree_with(2, 8);
  MF_ASSERT_EQ(do_create(t, "/f", NS_KIND_FILE, 2), 0);
  MF_ASSERT_EQ(do_create(t, "/q", NS_KIND_QUEUE, 2), 0);
  MF_ASSERT_EQ(do_create(t, "/empty", NS_KIND_FILE, 0), 0);
  ns_partition_t p;
  MF_ASSERT_EQ(ns_tree_plan_append(t, ns_tree_lookup(t, "/f"), 0, 0, &p), 0);
  MF_ASSERT_EQ(p.lo, 2048);
  MF_ASSERT_EQ(p.hi, 3072);
  MF_ASSERT_EQ(ns_tree_plan_append(t, ns_tree_lookup(t, "/q"), 0, 0, &p), 0);
  MF_ASSERT_EQ(p.lo, 2);
  MF_ASSERT_EQ(p.hi, 3);
  MF_ASSERT_EQ(ns_tree_plan_append(t, ns_tree_lookup(t, "/empty"), 0, 0, &p), 0);
  MF_ASSERT_EQ(p.lo, 0);
  MF_ASSERT_EQ(p.hi, 1024);
  /* An explicit range is used as given (a kv split). */
  MF_ASSERT_EQ(ns_tree_plan_append(t, ns_tree_lookup(t, "/f"), 100, 200, &p), 0);
  MF_ASSERT_EQ(p.lo, 100);
  MF_ASSERT_EQ(p.hi, 200);
  MF_ASSERT_EQ(ns_tree_plan_append(t, ns_tree_lookup(t, "/f"), 200, 100, &p), MAYFLY_EINVAL);
  MF_ASSERT_EQ(ns_tree_plan_append(t, ns_tree_lookup(t, "/f"), -1, 100, &p), MAYFLY_EINVAL);
  MF_ASSERT_EQ(t->alloc->blocks_used, 4);
  ns_tree_free(t);
}

/* ---- quotas, watermarks and kv repartitions -------------------------------- */

/* Creates a namespace of `kind` with `nblocks` planned partitions and the
 * given quota and watermarks. */
static int do_create_limited(ns_tree_t *t, const char *path, ns_kind_t kind, int nblocks,
                             int32_t max_blocks, int32_t high_wm, int32_t low_wm) {
  ns_partition_t parts[16];
  CU_ASSERT_FATAL(nblocks <= 16);
  int rc = ns_tree_plan_parts(t, kind, nblocks, parts);
  if (rc != 0) return rc;
  why[0] = '\0';
  ns_record_t rec = {.type = NS_REC_CREATE,
                     .now_ms = NOW,
                     .wall_ms = WALL,
                     .path = path,
                     .kind = kind,
                     .parts = parts,
                     .nparts = (size_t)nblocks,
                     .max_blocks = max_blocks,
                     .high_wm = high_wm,
                     .low_wm = low_wm};
  return ns_tree_apply(t, &rec, NULL, why, sizeof why);
}

static int do_begin(ns_tree_t *t, const char *path, int64_t op_id, uint32_t flags,
                    ns_block_t src, ns_block_t dst, int64_t lo, int64_t hi) {
  why[0] = '\0';
  ns_record_t rec = {.type = NS_REC_REPART_BEGIN,
                     .flags = flags,
                     .now_ms = NOW,
                     .path = path,
                     .op_id = op_id,
                     .block = src,
                     .block2 = dst,
                     .lo = lo,
                     .hi = hi};
  return ns_tree_apply(t, &rec, NULL, why, sizeof why);
}

/* Begins a split of partition `i` of path at `mid`: a new planned block takes
 * [mid, hi). *dst receives that block. */
static int do_split(ns_tree_t *t, const char *path, int64_t op_id, guint i, int64_t mid,
                    ns_block_t *dst) {
  ns_node_t *n = ns_tree_lookup(t, path);
  CU_ASSERT_PTR_NOT_NULL_FATAL(n);
  ns_partition_t src = *part(n, i), p;
  int rc = ns_tree_plan_append(t, n, mid, src.hi, &p);
  if (rc != 0) return rc;
  if (dst != NULL) *dst = p.block;
  return do_begin(t, path, op_id, 0, src.block, p.block, mid, src.hi);
}

/* Begins a merge of partition `from` of path into its neighbour `into`. */
static int do_merge(ns_tree_t *t, const char *path, int64_t op_id, guint from, guint into) {
  ns_node_t *n = ns_tree_lookup(t, path);
  CU_ASSERT_PTR_NOT_NULL_FATAL(n);
  ns_partition_t src = *part(n, from), dst = *part(n, into);
  return do_begin(t, path, op_id, NS_REC_MERGE, src.block, dst.block, src.lo, src.hi);
}

static int do_end(ns_tree_t *t, const char *path, int64_t op_id, uint32_t flags,
                  ns_effects_t *fx) {
  why[0] = '\0';
  ns_record_t rec = {
      .type = NS_REC_REPART_END, .flags = flags, .now_ms = NOW, .path = path, .op_id = op_id};
  return ns_tree_apply(t, &rec, fx, why, sizeof why);
}

static int do_truncate(ns_tree_t *t, const char *path, int64_t lo, ns_effects_t *fx) {
  why[0] = '\0';
  ns_record_t rec = {.type = NS_REC_TRUNCATE, .now_ms = NOW, .path = path, .lo = lo};
  return ns_tree_apply(t, &rec, fx, why, sizeof why);
}

static int same_block(ns_block_t a, ns_block_t b) {
  return a.server == b.server && a.index == b.index && a.generation == b.generation;
}

/* Asserts that fx freed exactly the blocks want[0..n), in any order. */
static void expect_freed(const ns_effects_t *fx, const ns_block_t *want, guint n) {
  MF_ASSERT_EQ(fx->freed->len, n);
  for (guint i = 0; i < n; i++) {
    int found = 0;
    for (guint j = 0; j < fx->freed->len; j++) {
      found += same_block(g_array_index(fx->freed, ns_block_t, j), want[i]);
    }
    MF_ASSERT_EQ(found, 1);
  }
}

/* The layout of a node as text, to compare before and after. */
static char *layout_of(ns_node_t *n) {
  GString *s = g_string_new(NULL);
  g_string_append_printf(s, "v=%lld", (long long)n->layout.version);
  for (guint i = 0; i < n->layout.parts->len; i++) {
    ns_partition_t *p = part(n, i);
    g_string_append_printf(s, " %d:%d:%lld[%lld,%lld)", p->block.server, p->block.index,
                           (long long)p->block.generation, (long long)p->lo, (long long)p->hi);
  }
  return g_string_free(s, FALSE);
}

static void test_create_keeps_the_quota_and_the_watermarks(void) {
  ns_tree_t *t = tree_with(2, 8);
  MF_ASSERT_EQ(do_create_limited(t, "/kv", NS_KIND_KV, 2, 5, 80, 40), 0);
  ns_node_t *n = ns_tree_lookup(t, "/kv");
  CU_ASSERT_PTR_NOT_NULL_FATAL(n);
  MF_ASSERT_EQ(n->max_blocks, 5);
  MF_ASSERT_EQ(n->high_wm, 80);
  MF_ASSERT_EQ(n->low_wm, 40);
  MF_ASSERT_EQ(ns_node_blocks_committed(n), 2);
  CU_ASSERT_PTR_NULL(n->reparts);
  /* 0 means no limit and the defaults. */
  MF_ASSERT_EQ(do_create(t, "/plain", NS_KIND_KV, 1), 0);
  ns_node_t *plain = ns_tree_lookup(t, "/plain");
  MF_ASSERT_EQ(plain->max_blocks, 0);
  MF_ASSERT_EQ(plain->high_wm, 0);
  MF_ASSERT_EQ(plain->low_wm, 0);
  /* The limits themselves: max_blocks equal to the initial blocks, a high
   * watermark of 100 with a low one of exactly half. */
  MF_ASSERT_EQ(do_create_limited(t, "/edge", NS_KIND_KV, 3, 3, 100, 50), 0);
  MF_ASSERT_EQ(ns_tree_lookup(t, "/edge")->max_blocks, 3);
  MF_ASSERT_EQ(do_create_limited(t, "/low-only", NS_KIND_KV, 1, 0, 0, 30), 0);
  MF_ASSERT_EQ(ns_tree_lookup(t, "/low-only")->low_wm, 30);
  ns_tree_free(t);
}

static void test_create_refuses_bad_quotas_and_watermarks(void) {
  ns_tree_t *t = tree_with(2, 8);
  char *before = tree_snapshot(t);
  const struct {
    int blocks;
    int32_t max, high, low;
  } bad[] = {
      {3, 2, 0, 0},    /* fewer blocks allowed than it starts with */
      {1, -1, 0, 0},   /* a negative quota */
      {1, 0, -1, 0},   /* watermarks are % of a block */
      {1, 0, 101, 0},  /* ... at most 100 */
      {1, 0, 0, -1},   /* ... not negative */
      {1, 0, 0, 101},  /* ... at most 100 */
      {1, 0, 80, 41},  /* the low one more than half the high one */
      {1, 0, 100, 51}, /* ... at the top too */
      {1, 0, 10, 100}, /* ... or above it */
      {1, 0, 0, 60},   /* the defaults count: low 60 against the default high 90 */
      {1, 0, 0, 100},  /* ... a low above the default high */
      {1, 0, 40, 0},   /* ... the default low 25 against a high of 40 */
  };
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    int rc = do_create_limited(t, "/kv", NS_KIND_KV, bad[i].blocks, bad[i].max, bad[i].high,
                               bad[i].low);
    if (rc != MAYFLY_EINVAL) fprintf(stderr, "  case %zu\n", i);
    MF_ASSERT_EQ(rc, MAYFLY_EINVAL);
    EXPECT_WHY();
  }
  CU_ASSERT_PTR_NULL(ns_tree_lookup(t, "/kv"));
  EXPECT_UNCHANGED(before, t); /* in particular, no block was taken */
  ns_tree_free(t);
}

static void test_split_begin_takes_the_new_block_and_leaves_the_layout(void) {
  ns_tree_t *t = tree_with(2, 8);
  MF_ASSERT_EQ(do_create(t, "/kv", NS_KIND_KV, 2), 0);
  ns_node_t *n = ns_tree_lookup(t, "/kv");
  ns_partition_t first = *part(n, 0);
  char *layout = layout_of(n);
  MF_ASSERT_EQ(t->alloc->blocks_used, 2);
  ns_block_t dst;
  MF_ASSERT_EQ(do_split(t, "/kv", 7, 0, 16384, &dst), 0);
  MF_ASSERT_EQ(t->alloc->blocks_used, 3);
  CU_ASSERT(is_taken(t, dst));
  CU_ASSERT(ns_alloc_server(t->alloc, dst.server)->owner[dst.index] == n);
  /* The layout changes only when the split commits. */
  char *now = layout_of(n);
  CU_ASSERT_STRING_EQUAL(now, layout);
  g_free(now);
  ns_repart_t *r = ns_node_find_repart(n, 7);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r);
  MF_ASSERT_EQ(r->id, 7);
  MF_ASSERT_EQ(r->merge, 0);
  CU_ASSERT(same_block(r->src, first.block));
  CU_ASSERT(same_block(r->dst, dst));
  MF_ASSERT_EQ(r->lo, 16384);
  MF_ASSERT_EQ(r->hi, first.hi);
  MF_ASSERT_EQ(r->started_ms, NOW);
  CU_ASSERT_PTR_NULL(ns_node_find_repart(n, 8));
  MF_ASSERT_EQ(t->last_op_id, 7);
  /* Both blocks are busy, the other partition is not; the new block counts
   * against the quota already. */
  MF_ASSERT_EQ(ns_node_block_busy(n, first.block.server, first.block.index), 1);
  MF_ASSERT_EQ(ns_node_block_busy(n, dst.server, dst.index), 1);
  MF_ASSERT_EQ(ns_node_block_busy(n, part(n, 1)->block.server, part(n, 1)->block.index), 0);
  MF_ASSERT_EQ(ns_node_blocks_committed(n), 3);
  MF_ASSERT_EQ(ns_node_find_part(n, first.block.server, first.block.index), 0);
  MF_ASSERT_EQ(ns_node_find_part(n, part(n, 1)->block.server, part(n, 1)->block.index), 1);
  MF_ASSERT_EQ(ns_node_find_part(n, dst.server, dst.index), -1); /* not a partition yet */
  g_free(layout);
  ns_tree_free(t);
}

static void test_split_commit_gives_two_partitions_sorted_by_lo(void) {
  ns_tree_t *t = tree_with(2, 8);
  MF_ASSERT_EQ(do_create(t, "/kv", NS_KIND_KV, 2), 0);
  ns_node_t *n = ns_tree_lookup(t, "/kv");
  ns_partition_t first = *part(n, 0), second = *part(n, 1);
  MF_ASSERT_EQ(first.hi, 32768);
  ns_block_t dst;
  MF_ASSERT_EQ(do_split(t, "/kv", 1, 0, 16384, &dst), 0);
  ns_effects_t fx;
  ns_effects_init(&fx);
  MF_ASSERT_EQ(do_end(t, "/kv", 1, NS_REC_COMMIT, &fx), 0);
  MF_ASSERT_EQ(fx.freed->len, 0);
  MF_ASSERT_EQ(n->layout.version, 2);
  MF_ASSERT_EQ(n->layout.parts->len, 3);
  /* [lo, mid) stays with the source, [mid, hi) is the new block's, and the
   * partitions are in slot order. */
  CU_ASSERT(same_block(part(n, 0)->block, first.block));
  MF_ASSERT_EQ(part(n, 0)->lo, 0);
  MF_ASSERT_EQ(part(n, 0)->hi, 16384);
  CU_ASSERT(same_block(part(n, 1)->block, dst));
  MF_ASSERT_EQ(part(n, 1)->lo, 16384);
  MF_ASSERT_EQ(part(n, 1)->hi, 32768);
  CU_ASSERT(memcmp(part(n, 2), &second, sizeof second) == 0);
  MF_ASSERT_EQ(t->alloc->blocks_used, 3);
  CU_ASSERT(is_taken(t, dst));
  CU_ASSERT_PTR_NULL(ns_node_find_repart(n, 1));
  MF_ASSERT_EQ(ns_node_block_busy(n, first.block.server, first.block.index), 0);
  MF_ASSERT_EQ(ns_node_block_busy(n, dst.server, dst.index), 0);
  MF_ASSERT_EQ(ns_node_blocks_committed(n), 3);

  /* Splitting the last partition keeps the order too. */
  MF_ASSERT_EQ(do_split(t, "/kv", 2, 2, 60000, &dst), 0);
  MF_ASSERT_EQ(do_end(t, "/kv", 2, NS_REC_COMMIT, &fx), 0);
  MF_ASSERT_EQ(n->layout.version, 3);
  MF_ASSERT_EQ(n->layout.parts->len, 4);
  for (guint i = 0; i < n->layout.parts->len; i++) {
    MF_ASSERT_EQ(part(n, i)->lo, i == 0 ? 0 : part(n, i - 1)->hi); /* no gap, no overlap */
  }
  MF_ASSERT_EQ(part(n, 2)->hi, 60000);
  CU_ASSERT(same_block(part(n, 3)->block, dst));
  MF_ASSERT_EQ(part(n, 3)->hi, NS_KV_SLOTS);
  ns_effects_clear(&fx);
  ns_tree_free(t);
}

static void test_split_rollback_frees_the_new_block_and_keeps_the_layout(void) {
  ns_tree_t *t = tree_with(2, 8);
  MF_ASSERT_EQ(do_create(t, "/kv", NS_KIND_KV, 2), 0);
  ns_node_t *n = ns_tree_lookup(t, "/kv");
  char *layout = layout_of(n);
  ns_block_t dst;
  MF_ASSERT_EQ(do_split(t, "/kv", 3, 1, 40000, &dst), 0);
  MF_ASSERT_EQ(t->alloc->blocks_used, 3);
  ns_effects_t fx;
  ns_effects_init(&fx);
  MF_ASSERT_EQ(do_end(t, "/kv", 3, 0, &fx), 0);
  expect_freed(&fx, &dst, 1);
  CU_ASSERT(!is_taken(t, dst));
  MF_ASSERT_EQ(t->alloc->blocks_used, 2);
  char *now = layout_of(n);
  CU_ASSERT_STRING_EQUAL(now, layout); /* version included */
  g_free(now);
  CU_ASSERT_PTR_NULL(ns_node_find_repart(n, 3));
  MF_ASSERT_EQ(ns_node_blocks_committed(n), 2);
  /* The partition is free to be split again, and the next commit is the
   * layout's next version. */
  MF_ASSERT_EQ(do_split(t, "/kv", 4, 1, 40000, &dst), 0);
  MF_ASSERT_EQ(do_end(t, "/kv", 4, NS_REC_COMMIT, NULL), 0);
  MF_ASSERT_EQ(n->layout.version, 2);
  MF_ASSERT_EQ(n->layout.parts->len, 3);
  g_free(layout);
  ns_effects_clear(&fx);
  ns_tree_free(t);
}

static void test_merge_commit_unions_the_ranges_and_frees_the_source(void) {
  ns_tree_t *t = tree_with(2, 8);
  MF_ASSERT_EQ(do_create(t, "/kv", NS_KIND_KV, 4), 0);
  ns_node_t *n = ns_tree_lookup(t, "/kv");
  ns_partition_t p[4];
  for (guint i = 0; i < 4; i++) p[i] = *part(n, i);
  ns_effects_t fx;
  ns_effects_init(&fx);

  /* Into the lower neighbour: partition 1 goes into partition 0. A merge
   * takes no block. */
  MF_ASSERT_EQ(do_merge(t, "/kv", 1, 1, 0), 0);
  MF_ASSERT_EQ(t->alloc->blocks_used, 4);
  MF_ASSERT_EQ(ns_node_blocks_committed(n), 4);
  MF_ASSERT_EQ(ns_node_block_busy(n, p[0].block.server, p[0].block.index), 1);
  MF_ASSERT_EQ(ns_node_block_busy(n, p[1].block.server, p[1].block.index), 1);
  MF_ASSERT_EQ(n->layout.version, 1);
  MF_ASSERT_EQ(do_end(t, "/kv", 1, NS_REC_COMMIT, &fx), 0);
  expect_freed(&fx, &p[1].block, 1);
  CU_ASSERT(!is_taken(t, p[1].block));
  MF_ASSERT_EQ(t->alloc->blocks_used, 3);
  MF_ASSERT_EQ(n->layout.version, 2);
  MF_ASSERT_EQ(n->layout.parts->len, 3);
  CU_ASSERT(same_block(part(n, 0)->block, p[0].block));
  MF_ASSERT_EQ(part(n, 0)->lo, p[0].lo);
  MF_ASSERT_EQ(part(n, 0)->hi, p[1].hi);
  MF_ASSERT_EQ(ns_node_find_part(n, p[1].block.server, p[1].block.index), -1);

  /* Into the upper neighbour: partition 2 (now at index 1) goes into 3. */
  ns_effects_clear(&fx);
  ns_effects_init(&fx);
  MF_ASSERT_EQ(do_merge(t, "/kv", 2, 1, 2), 0);
  MF_ASSERT_EQ(do_end(t, "/kv", 2, NS_REC_COMMIT, &fx), 0);
  expect_freed(&fx, &p[2].block, 1);
  MF_ASSERT_EQ(n->layout.version, 3);
  MF_ASSERT_EQ(n->layout.parts->len, 2);
  CU_ASSERT(same_block(part(n, 1)->block, p[3].block));
  MF_ASSERT_EQ(part(n, 1)->lo, p[2].lo);
  MF_ASSERT_EQ(part(n, 1)->hi, NS_KV_SLOTS);
  MF_ASSERT_EQ(part(n, 0)->hi, part(n, 1)->lo);
  MF_ASSERT_EQ(t->alloc->blocks_used, 2);
  ns_effects_clear(&fx);
  ns_tree_free(t);
}

static void test_merge_rollback_keeps_both_partitions(void) {
  ns_tree_t *t = tree_with(2, 8);
  MF_ASSERT_EQ(do_create(t, "/kv", NS_KIND_KV, 2), 0);
  ns_node_t *n = ns_tree_lookup(t, "/kv");
  char *before = tree_snapshot(t);
  MF_ASSERT_EQ(do_merge(t, "/kv", 5, 0, 1), 0);
  ns_effects_t fx;
  ns_effects_init(&fx);
  MF_ASSERT_EQ(do_end(t, "/kv", 5, 0, &fx), 0);
  MF_ASSERT_EQ(fx.freed->len, 0); /* both blocks still hold their data */
  MF_ASSERT_EQ(n->layout.version, 1);
  CU_ASSERT(is_taken(t, part(n, 0)->block));
  CU_ASSERT(is_taken(t, part(n, 1)->block));
  /* Everything is as before, but for the id, which is never reused. */
  MF_ASSERT_EQ(t->last_op_id, 5);
  t->last_op_id = 0;
  EXPECT_UNCHANGED(before, t);
  ns_effects_clear(&fx);
  ns_tree_free(t);
}

static void test_merge_of_non_adjacent_partitions_is_einval(void) {
  ns_tree_t *t = tree_with(2, 8);
  MF_ASSERT_EQ(do_create(t, "/kv", NS_KIND_KV, 3), 0);
  ns_node_t *n = ns_tree_lookup(t, "/kv");
  ns_partition_t p0 = *part(n, 0), p1 = *part(n, 1), p2 = *part(n, 2), fresh;
  MF_ASSERT_EQ(ns_tree_plan_append(t, n, 0, 1, &fresh), 0);
  char *before = tree_snapshot(t);
  /* Partition 0 and partition 2 do not touch. */
  MF_ASSERT_EQ(do_merge(t, "/kv", 1, 0, 2), MAYFLY_EINVAL);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_merge(t, "/kv", 1, 2, 0), MAYFLY_EINVAL);
  /* Into itself. */
  MF_ASSERT_EQ(do_merge(t, "/kv", 1, 1, 1), MAYFLY_EINVAL);
  /* A part of a partition only: a merge moves the whole source. */
  MF_ASSERT_EQ(do_begin(t, "/kv", 1, NS_REC_MERGE, p1.block, p0.block, p1.lo + 1, p1.hi),
               MAYFLY_EINVAL);
  MF_ASSERT_EQ(do_begin(t, "/kv", 1, NS_REC_MERGE, p1.block, p0.block, p1.lo, p1.hi - 1),
               MAYFLY_EINVAL);
  /* Into a block that is no partition of the namespace. */
  MF_ASSERT_EQ(do_begin(t, "/kv", 1, NS_REC_MERGE, p1.block, fresh.block, p1.lo, p1.hi),
               MAYFLY_EINVAL);
  /* Into a stale generation of a neighbour. */
  ns_block_t stale = p2.block;
  stale.generation++;
  MF_ASSERT_EQ(do_begin(t, "/kv", 1, NS_REC_MERGE, p1.block, stale, p1.lo, p1.hi),
               MAYFLY_EINVAL);
  EXPECT_UNCHANGED(before, t);
  ns_tree_free(t);
}

static void test_split_begin_with_a_bad_range_or_id_is_refused(void) {
  ns_tree_t *t = tree_with(2, 8);
  MF_ASSERT_EQ(do_create(t, "/kv", NS_KIND_KV, 2), 0);
  MF_ASSERT_EQ(do_create(t, "/f", NS_KIND_FILE, 1), 0);
  MF_ASSERT_EQ(do_mkdir(t, "/d", 0), 0);
  ns_node_t *n = ns_tree_lookup(t, "/kv");
  ns_partition_t p0 = *part(n, 0), p1 = *part(n, 1), fresh;
  MF_ASSERT_EQ(ns_tree_plan_append(t, n, 0, 1, &fresh), 0);
  ns_block_t f = part(ns_tree_lookup(t, "/f"), 0)->block;
  char *before = tree_snapshot(t);
  const struct {
    int64_t lo, hi;
  } bad[] = {
      {p0.lo, p0.hi},         /* the whole partition: nothing would stay */
      {p0.lo - 1, p0.hi},     /* below the partition */
      {100, p0.hi - 1},       /* not up to the partition's end */
      {100, p0.hi + 1},       /* past it */
      {p0.hi, p0.hi},         /* an empty range */
      {p0.hi + 5, p0.hi + 1}, /* a backwards one */
  };
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    MF_ASSERT_EQ(do_begin(t, "/kv", 1, 0, p0.block, fresh.block, bad[i].lo, bad[i].hi),
                 MAYFLY_EINVAL);
    EXPECT_WHY();
  }
  /* Ids are positive. */
  MF_ASSERT_EQ(do_begin(t, "/kv", 0, 0, p0.block, fresh.block, 100, p0.hi), MAYFLY_EINVAL);
  MF_ASSERT_EQ(do_begin(t, "/kv", -3, 0, p0.block, fresh.block, 100, p0.hi), MAYFLY_EINVAL);
  /* The source must be a partition of the namespace, at its generation. */
  ns_block_t stale = p0.block;
  stale.generation++;
  MF_ASSERT_EQ(do_begin(t, "/kv", 1, 0, stale, fresh.block, 100, p0.hi), MAYFLY_EMOVED);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_begin(t, "/kv", 1, 0, f, fresh.block, 100, p0.hi), MAYFLY_EMOVED);
  /* The new block must be free: not one of the partitions. */
  MF_ASSERT_EQ(do_begin(t, "/kv", 1, 0, p0.block, p1.block, 100, p0.hi), MAYFLY_EMOVED);
  EXPECT_WHY();
  /* Only kv namespaces are repartitioned. */
  MF_ASSERT_EQ(do_begin(t, "/f", 1, 0, f, fresh.block, 100, 1024), MAYFLY_EKIND);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_begin(t, "/d", 1, 0, p0.block, fresh.block, 100, p0.hi), MAYFLY_EISDIR);
  MF_ASSERT_EQ(do_begin(t, "/nope", 1, 0, p0.block, fresh.block, 100, p0.hi), MAYFLY_ENOENT);
  MF_ASSERT_EQ(do_begin(t, "bad", 1, 0, p0.block, fresh.block, 100, p0.hi), MAYFLY_EBADPATH);
  EXPECT_UNCHANGED(before, t);

  /* An id in use is refused too. */
  MF_ASSERT_EQ(do_begin(t, "/kv", 9, 0, p0.block, fresh.block, 100, p0.hi), 0);
  ns_partition_t fresh2;
  MF_ASSERT_EQ(ns_tree_plan_append(t, n, 0, 1, &fresh2), 0);
  before = tree_snapshot(t);
  MF_ASSERT_EQ(do_begin(t, "/kv", 9, 0, p1.block, fresh2.block, p1.lo + 1, p1.hi),
               MAYFLY_EINVAL);
  EXPECT_WHY();
  EXPECT_UNCHANGED(before, t);
  ns_tree_free(t);
}

static void test_a_second_begin_on_a_busy_partition_is_eagain(void) {
  ns_tree_t *t = tree_with(2, 8);
  MF_ASSERT_EQ(do_create(t, "/kv", NS_KIND_KV, 3), 0);
  ns_node_t *n = ns_tree_lookup(t, "/kv");
  ns_block_t dst;
  MF_ASSERT_EQ(do_split(t, "/kv", 1, 1, part(n, 1)->lo + 10, &dst), 0);
  char *before = tree_snapshot(t);
  /* Its source again, with another new block. */
  MF_ASSERT_EQ(do_split(t, "/kv", 2, 1, part(n, 1)->lo + 20, NULL), MAYFLY_EAGAIN);
  EXPECT_WHY();
  /* A merge into the busy partition, or of it. */
  MF_ASSERT_EQ(do_merge(t, "/kv", 2, 0, 1), MAYFLY_EAGAIN);
  MF_ASSERT_EQ(do_merge(t, "/kv", 2, 2, 1), MAYFLY_EAGAIN);
  MF_ASSERT_EQ(do_merge(t, "/kv", 2, 1, 0), MAYFLY_EAGAIN);
  /* The split's new block cannot be the new block of another split. */
  ns_partition_t p2 = *part(n, 2);
  MF_ASSERT_EQ(do_begin(t, "/kv", 2, 0, p2.block, dst, p2.lo + 1, p2.hi), MAYFLY_EAGAIN);
  /* The partition cannot be removed either. */
  MF_ASSERT_EQ(do_remove_part(t, "/kv", 1, NULL), MAYFLY_EAGAIN);
  EXPECT_WHY();
  EXPECT_UNCHANGED(before, t);

  /* A partition outside the repartition can be split at the same time. */
  ns_block_t dst2;
  MF_ASSERT_EQ(do_split(t, "/kv", 2, 2, p2.lo + 1, &dst2), 0);
  MF_ASSERT_EQ(ns_node_blocks_committed(n), 5);
  /* Once ended, the partition is free again. */
  MF_ASSERT_EQ(do_end(t, "/kv", 1, 0, NULL), 0);
  MF_ASSERT_EQ(ns_node_block_busy(n, part(n, 1)->block.server, part(n, 1)->block.index), 0);
  MF_ASSERT_EQ(do_merge(t, "/kv", 3, 1, 0), 0);
  ns_tree_free(t);
}

static void test_removing_a_busy_partition_is_eagain_and_allowed_once_ended(void) {
  ns_tree_t *t = tree_with(2, 8);
  MF_ASSERT_EQ(do_create(t, "/kv", NS_KIND_KV, 2), 0);
  ns_node_t *n = ns_tree_lookup(t, "/kv");
  ns_partition_t p0 = *part(n, 0);
  MF_ASSERT_EQ(do_merge(t, "/kv", 1, 0, 1), 0);
  char *before = tree_snapshot(t);
  ns_effects_t fx;
  ns_effects_init(&fx);
  MF_ASSERT_EQ(do_remove_part(t, "/kv", 0, &fx), MAYFLY_EAGAIN); /* the merge's source */
  EXPECT_WHY();
  MF_ASSERT_EQ(do_remove_part(t, "/kv", 1, &fx), MAYFLY_EAGAIN); /* its target */
  MF_ASSERT_EQ(fx.freed->len, 0);
  EXPECT_UNCHANGED(before, t);
  MF_ASSERT_EQ(do_end(t, "/kv", 1, 0, NULL), 0);
  MF_ASSERT_EQ(do_remove_part(t, "/kv", 0, &fx), 0);
  expect_freed(&fx, &p0.block, 1);
  MF_ASSERT_EQ(n->layout.parts->len, 1);
  ns_effects_clear(&fx);
  ns_tree_free(t);
}

static void test_split_begin_past_max_blocks_is_equota_and_changes_nothing(void) {
  ns_tree_t *t = tree_with(2, 8);
  /* At its quota from the start. */
  MF_ASSERT_EQ(do_create_limited(t, "/full", NS_KIND_KV, 2, 2, 0, 0), 0);
  char *before = tree_snapshot(t);
  MF_ASSERT_EQ(do_split(t, "/full", 1, 0, 100, NULL), MAYFLY_EQUOTA);
  EXPECT_WHY();
  EXPECT_UNCHANGED(before, t); /* no block taken, no repartition begun */

  /* One block of room: the first split takes it, a second is refused, and
   * so is an added partition, while a merge (which needs no block) is not. */
  MF_ASSERT_EQ(do_create_limited(t, "/kv", NS_KIND_KV, 3, 4, 0, 0), 0);
  ns_node_t *n = ns_tree_lookup(t, "/kv");
  MF_ASSERT_EQ(do_split(t, "/kv", 1, 0, 100, NULL), 0);
  MF_ASSERT_EQ(ns_node_blocks_committed(n), 4);
  ns_partition_t extra;
  MF_ASSERT_EQ(ns_tree_plan_append(t, n, 0, 1, &extra), 0);
  before = tree_snapshot(t);
  MF_ASSERT_EQ(do_split(t, "/kv", 2, 2, part(n, 2)->lo + 1, NULL), MAYFLY_EQUOTA);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_add_part(t, "/kv", &extra), MAYFLY_EQUOTA);
  EXPECT_WHY();
  EXPECT_UNCHANGED(before, t);
  MF_ASSERT_EQ(do_merge(t, "/kv", 2, 2, 1), 0);
  MF_ASSERT_EQ(ns_node_blocks_committed(n), 4);
  /* Rolling the split back gives its block back to the quota. */
  MF_ASSERT_EQ(do_end(t, "/kv", 1, 0, NULL), 0);
  MF_ASSERT_EQ(ns_node_blocks_committed(n), 3);
  MF_ASSERT_EQ(do_add_part(t, "/kv", &extra), 0);
  MF_ASSERT_EQ(ns_node_blocks_committed(n), 4);
  ns_tree_free(t);
}

static void test_adding_a_partition_past_max_blocks_is_equota(void) {
  ns_tree_t *t = tree_with(2, 8);
  MF_ASSERT_EQ(do_create_limited(t, "/f", NS_KIND_FILE, 1, 2, 0, 0), 0);
  ns_node_t *f = ns_tree_lookup(t, "/f");
  ns_partition_t p;
  MF_ASSERT_EQ(ns_tree_plan_append(t, f, 0, 0, &p), 0);
  MF_ASSERT_EQ(do_add_part(t, "/f", &p), 0);
  MF_ASSERT_EQ(ns_tree_plan_append(t, f, 0, 0, &p), 0);
  char *before = tree_snapshot(t);
  MF_ASSERT_EQ(do_add_part(t, "/f", &p), MAYFLY_EQUOTA);
  EXPECT_WHY();
  EXPECT_UNCHANGED(before, t);
  /* Removing a partition makes room again. */
  MF_ASSERT_EQ(do_remove_part(t, "/f", 1, NULL), 0);
  MF_ASSERT_EQ(do_add_part(t, "/f", &p), 0);
  MF_ASSERT_EQ(f->layout.parts->len, 2);
  ns_tree_free(t);
}

static void test_ending_an_unknown_repartition_is_enoent(void) {
  ns_tree_t *t = tree_with(2, 8);
  MF_ASSERT_EQ(do_create(t, "/kv", NS_KIND_KV, 2), 0);
  MF_ASSERT_EQ(do_mkdir(t, "/d", 0), 0);
  char *before = tree_snapshot(t);
  ns_effects_t fx;
  ns_effects_init(&fx);
  MF_ASSERT_EQ(do_end(t, "/kv", 1, NS_REC_COMMIT, &fx), MAYFLY_ENOENT);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_end(t, "/kv", 1, 0, &fx), MAYFLY_ENOENT);
  MF_ASSERT_EQ(do_end(t, "/missing", 1, NS_REC_COMMIT, &fx), MAYFLY_ENOENT);
  MF_ASSERT_EQ(do_end(t, "/d", 1, NS_REC_COMMIT, &fx), MAYFLY_EISDIR);
  EXPECT_UNCHANGED(before, t);

  MF_ASSERT_EQ(do_split(t, "/kv", 7, 0, 100, NULL), 0);
  before = tree_snapshot(t);
  MF_ASSERT_EQ(do_end(t, "/kv", 8, NS_REC_COMMIT, &fx), MAYFLY_ENOENT);
  MF_ASSERT_EQ(do_end(t, "/kv", 6, 0, &fx), MAYFLY_ENOENT);
  MF_ASSERT_EQ(fx.freed->len, 0);
  EXPECT_UNCHANGED(before, t);
  /* An ended repartition cannot be ended again. */
  MF_ASSERT_EQ(do_end(t, "/kv", 7, NS_REC_COMMIT, &fx), 0);
  before = tree_snapshot(t);
  MF_ASSERT_EQ(do_end(t, "/kv", 7, NS_REC_COMMIT, &fx), MAYFLY_ENOENT);
  MF_ASSERT_EQ(do_end(t, "/kv", 7, 0, &fx), MAYFLY_ENOENT);
  MF_ASSERT_EQ(fx.freed->len, 0);
  EXPECT_UNCHANGED(before, t);
  ns_effects_clear(&fx);
  ns_tree_free(t);
}

static void test_removing_a_namespace_mid_split_frees_the_new_block(void) {
  ns_tree_t *t = tree_with(2, 8);
  MF_ASSERT_EQ(do_create(t, "/job/kv", NS_KIND_KV, 2), 0);
  ns_node_t *n = ns_tree_lookup(t, "/job/kv");
  ns_block_t want[3] = {part(n, 0)->block, part(n, 1)->block};
  MF_ASSERT_EQ(do_split(t, "/job/kv", 1, 0, 100, &want[2]), 0);
  MF_ASSERT_EQ(do_merge(t, "/job/kv", 2, 1, 0), MAYFLY_EAGAIN);
  MF_ASSERT_EQ(t->alloc->blocks_used, 3);
  ns_effects_t fx;
  ns_effects_init(&fx);
  MF_ASSERT_EQ(do_remove(t, "/job", NS_REC_RECURSIVE, &fx), 0);
  expect_freed(&fx, want, 3); /* each block once */
  for (int i = 0; i < 3; i++) CU_ASSERT(!is_taken(t, want[i]));
  MF_ASSERT_EQ(t->alloc->blocks_used, 0);
  MF_ASSERT_EQ(t->n_leaves, 0);
  ns_effects_clear(&fx);

  /* A merge under way frees each block once too (its target is a partition). */
  MF_ASSERT_EQ(do_create(t, "/kv2", NS_KIND_KV, 2), 0);
  n = ns_tree_lookup(t, "/kv2");
  ns_block_t both[2] = {part(n, 0)->block, part(n, 1)->block};
  MF_ASSERT_EQ(do_merge(t, "/kv2", 1, 0, 1), 0);
  ns_effects_init(&fx);
  MF_ASSERT_EQ(do_remove(t, "/kv2", 0, &fx), 0);
  expect_freed(&fx, both, 2);
  MF_ASSERT_EQ(t->alloc->blocks_used, 0);
  ns_effects_clear(&fx);
  ns_tree_free(t);
}

static void test_truncate_drops_the_partitions_from_lo_and_keeps_the_first(void) {
  ns_tree_t *t = tree_with(2, 8);
  MF_ASSERT_EQ(do_create(t, "/f", NS_KIND_FILE, 4), 0); /* [0,1K) [1K,2K) [2K,3K) [3K,4K) */
  ns_node_t *f = ns_tree_lookup(t, "/f");
  ns_partition_t p[4];
  for (guint i = 0; i < 4; i++) p[i] = *part(f, i);
  MF_ASSERT_EQ(p[2].lo, 2048);
  ns_effects_t fx;
  ns_effects_init(&fx);

  /* Partitions that start at or past the new size go. */
  MF_ASSERT_EQ(do_truncate(t, "/f", 2048, &fx), 0);
  ns_block_t tail[2] = {p[2].block, p[3].block};
  expect_freed(&fx, tail, 2);
  MF_ASSERT_EQ(f->layout.version, 2);
  MF_ASSERT_EQ(f->layout.parts->len, 2);
  CU_ASSERT(memcmp(part(f, 0), &p[0], sizeof p[0]) == 0);
  CU_ASSERT(memcmp(part(f, 1), &p[1], sizeof p[1]) == 0);
  MF_ASSERT_EQ(t->alloc->blocks_used, 2);
  CU_ASSERT(!is_taken(t, p[2].block));
  CU_ASSERT(!is_taken(t, p[3].block));

  /* A size inside a partition keeps it (its server cuts the bytes), and
   * when nothing goes the version stays. */
  ns_effects_clear(&fx);
  ns_effects_init(&fx);
  char *before = tree_snapshot(t);
  MF_ASSERT_EQ(do_truncate(t, "/f", 1500, &fx), 0);
  MF_ASSERT_EQ(do_truncate(t, "/f", 1 << 20, &fx), 0); /* growing is not truncating */
  MF_ASSERT_EQ(fx.freed->len, 0);
  EXPECT_UNCHANGED(before, t);

  /* Truncating to 0 keeps the first block: a file always has one. */
  MF_ASSERT_EQ(do_truncate(t, "/f", 0, &fx), 0);
  expect_freed(&fx, &p[1].block, 1);
  MF_ASSERT_EQ(f->layout.version, 3);
  MF_ASSERT_EQ(f->layout.parts->len, 1);
  CU_ASSERT(memcmp(part(f, 0), &p[0], sizeof p[0]) == 0);
  before = tree_snapshot(t);
  MF_ASSERT_EQ(do_truncate(t, "/f", 0, NULL), 0);
  EXPECT_UNCHANGED(before, t);

  /* The file grows again after its last partition. */
  ns_partition_t next;
  MF_ASSERT_EQ(ns_tree_plan_append(t, f, 0, 0, &next), 0);
  MF_ASSERT_EQ(next.lo, 1024);
  ns_effects_clear(&fx);
  ns_tree_free(t);
}

static void test_truncate_is_refused_for_other_kinds_and_negative_sizes(void) {
  ns_tree_t *t = tree_with(2, 8);
  MF_ASSERT_EQ(do_create(t, "/kv", NS_KIND_KV, 2), 0);
  MF_ASSERT_EQ(do_create(t, "/q", NS_KIND_QUEUE, 2), 0);
  MF_ASSERT_EQ(do_create(t, "/f", NS_KIND_FILE, 2), 0);
  MF_ASSERT_EQ(do_mkdir(t, "/d", 0), 0);
  char *before = tree_snapshot(t);
  MF_ASSERT_EQ(do_truncate(t, "/kv", 0, NULL), MAYFLY_EKIND);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_truncate(t, "/q", 1, NULL), MAYFLY_EKIND);
  MF_ASSERT_EQ(do_truncate(t, "/d", 0, NULL), MAYFLY_EISDIR);
  MF_ASSERT_EQ(do_truncate(t, "/missing", 0, NULL), MAYFLY_ENOENT);
  MF_ASSERT_EQ(do_truncate(t, "/f", -1, NULL), MAYFLY_EINVAL);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_truncate(t, "/f", INT64_MIN, NULL), MAYFLY_EINVAL);
  EXPECT_UNCHANGED(before, t);
  ns_tree_free(t);
}

/* The records of repartitions and truncation replay like every other: the
 * log of a live tree, applied to an empty one, gives the same state, with
 * the repartition left under way still under way. */
static void test_replaying_repartition_records_rebuilds_the_same_state(void) {
  ns_tree_t *live = ns_tree_new(LEASE_MS, GRACE_MS);
  GArray *log = g_array_new(FALSE, FALSE, sizeof(ns_record_t));
  ns_partition_t kv_parts[2], file_parts[3], split1, split2, split3;

#define APPLY(...)                                                    \
  do {                                                                \
    ns_record_t r_ = {__VA_ARGS__};                                   \
    MF_ASSERT_EQ(ns_tree_apply(live, &r_, NULL, why, sizeof why), 0); \
    g_array_append_val(log, r_);                                      \
  } while (0)

  APPLY(.type = NS_REC_SERVER_ADD, .address = "ms1:1", .blocks = 6, .block_size = 1024);
  APPLY(.type = NS_REC_SERVER_ADD, .address = "ms2:1", .blocks = 6, .block_size = 1024);
  MF_ASSERT_EQ(ns_tree_plan_parts(live, NS_KIND_KV, 2, kv_parts), 0);
  APPLY(.type = NS_REC_CREATE, .now_ms = 1, .wall_ms = 11, .path = "/kv", .kind = NS_KIND_KV,
        .parts = kv_parts, .nparts = 2, .max_blocks = 4, .high_wm = 70, .low_wm = 20);
  ns_node_t *kv = ns_tree_lookup(live, "/kv");
  /* A split that commits. */
  MF_ASSERT_EQ(ns_tree_plan_append(live, kv, 10000, 32768, &split1), 0);
  APPLY(.type = NS_REC_REPART_BEGIN, .now_ms = 2, .path = "/kv", .op_id = 1,
        .block = kv_parts[0].block, .block2 = split1.block, .lo = 10000, .hi = 32768);
  APPLY(.type = NS_REC_REPART_END, .now_ms = 3, .path = "/kv", .op_id = 1,
        .flags = NS_REC_COMMIT);
  /* A split that is rolled back. */
  MF_ASSERT_EQ(ns_tree_plan_append(live, kv, 50000, 65536, &split2), 0);
  APPLY(.type = NS_REC_REPART_BEGIN, .now_ms = 4, .path = "/kv", .op_id = 2,
        .block = kv_parts[1].block, .block2 = split2.block, .lo = 50000, .hi = 65536);
  APPLY(.type = NS_REC_REPART_END, .now_ms = 5, .path = "/kv", .op_id = 2);
  /* A merge that commits: [10000, 32768) back into [0, 10000). */
  APPLY(.type = NS_REC_REPART_BEGIN, .now_ms = 6, .path = "/kv", .op_id = 3,
        .flags = NS_REC_MERGE, .block = split1.block, .block2 = kv_parts[0].block, .lo = 10000,
        .hi = 32768);
  APPLY(.type = NS_REC_REPART_END, .now_ms = 7, .path = "/kv", .op_id = 3,
        .flags = NS_REC_COMMIT);
  /* A split left under way. */
  MF_ASSERT_EQ(ns_tree_plan_append(live, kv, 60000, 65536, &split3), 0);
  APPLY(.type = NS_REC_REPART_BEGIN, .now_ms = 8, .path = "/kv", .op_id = 4,
        .block = kv_parts[1].block, .block2 = split3.block, .lo = 60000, .hi = 65536);
  /* A file truncated. */
  MF_ASSERT_EQ(ns_tree_plan_parts(live, NS_KIND_FILE, 3, file_parts), 0);
  APPLY(.type = NS_REC_CREATE, .now_ms = 9, .wall_ms = 19, .path = "/f", .kind = NS_KIND_FILE,
        .parts = file_parts, .nparts = 3);
  APPLY(.type = NS_REC_TRUNCATE, .now_ms = 10, .path = "/f", .lo = 1024);
#undef APPLY

  MF_ASSERT_EQ(kv->layout.version, 3);
  MF_ASSERT_EQ(kv->layout.parts->len, 2);
  MF_ASSERT_EQ(ns_tree_lookup(live, "/f")->layout.parts->len, 1);
  ns_tree_t *replayed = ns_tree_new(LEASE_MS, GRACE_MS);
  for (guint i = 0; i < log->len; i++) {
    int rc = ns_tree_apply(replayed, &g_array_index(log, ns_record_t, i), NULL, why, sizeof why);
    if (rc != 0) fprintf(stderr, "  replay of record %u failed: %s\n", i, why);
    MF_ASSERT_EQ(rc, 0);
  }
  char *a = tree_snapshot(live), *b = tree_snapshot(replayed);
  if (strcmp(a, b) != 0) fprintf(stderr, "  live:\n%s  replayed:\n%s", a, b);
  CU_ASSERT_STRING_EQUAL(a, b);
  CU_ASSERT_PTR_NOT_NULL(ns_node_find_repart(ns_tree_lookup(replayed, "/kv"), 4));
  g_free(a);
  g_free(b);
  g_array_free(log, TRUE);
  ns_tree_free(live);
  ns_tree_free(replayed);
}

/* ---- servers and replay ---------------------------------------------------- */

static void test_server_records_register_and_mark_servers(void) {
  ns_tree_t *t = ns_tree_new(LEASE_MS, GRACE_MS);
  MF_ASSERT_EQ(add_server(t, "ms1:7000", 4, 1024), 1);
  MF_ASSERT_EQ(add_server(t, "ms2:7000", 2, 1024), 2);
  MF_ASSERT_EQ(add_server(t, "ms1:7000", 4, 1024), 1); /* re-registration */
  MF_ASSERT_EQ(t->alloc->blocks_total, 6);
  char *before = tree_snapshot(t);
  ns_record_t bad = {.type = NS_REC_SERVER_ADD, .address = "ms3:7000", .blocks = 0,
                     .block_size = 1024};
  why[0] = '\0';
  MF_ASSERT_EQ(ns_tree_apply(t, &bad, NULL, why, sizeof why), MAYFLY_EINVAL);
  EXPECT_WHY();
  ns_record_t unknown = {.type = NS_REC_SERVER_STATE, .server_id = 9, .up = 0};
  MF_ASSERT_EQ(ns_tree_apply(t, &unknown, NULL, NULL, 0), MAYFLY_ESERVER);
  EXPECT_UNCHANGED(before, t);

  MF_ASSERT_EQ(do_create(t, "/f", NS_KIND_FILE, 1), 0);
  ns_record_t grow = {.type = NS_REC_SERVER_ADD, .address = "ms1:7000", .blocks = 8,
                      .block_size = 1024};
  why[0] = '\0';
  MF_ASSERT_EQ(ns_tree_apply(t, &grow, NULL, why, sizeof why), MAYFLY_EPERM);
  EXPECT_WHY();
  ns_tree_free(t);
}

/* The write-ahead log's promise: the records that succeeded, applied in order
 * to an empty tree, rebuild the same tree and the same allocator state. */
static void test_replaying_the_records_rebuilds_the_same_state(void) {
  ns_tree_t *live = ns_tree_new(LEASE_MS, GRACE_MS);
  GArray *log = g_array_new(FALSE, FALSE, sizeof(ns_record_t));
  ns_partition_t kv_parts[3], file_parts[2], extra;
  const char *renew_paths[] = {"/job/kv"};

#define APPLY(...)                                                     \
  do {                                                                 \
    ns_record_t r_ = {__VA_ARGS__};                                    \
    MF_ASSERT_EQ(ns_tree_apply(live, &r_, NULL, why, sizeof why), 0);  \
    g_array_append_val(log, r_);                                       \
  } while (0)

  APPLY(.type = NS_REC_SERVER_ADD, .address = "ms1:1", .blocks = 4, .block_size = 1024,
        .incarnation = 5);
  APPLY(.type = NS_REC_SERVER_ADD, .address = "ms2:1", .blocks = 4, .block_size = 2048,
        .incarnation = 6);
  APPLY(.type = NS_REC_MKDIR, .flags = NS_REC_PARENTS, .now_ms = 1, .wall_ms = 11,
        .path = "/job/tmp");
  MF_ASSERT_EQ(ns_tree_plan_parts(live, NS_KIND_KV, 3, kv_parts), 0);
  APPLY(.type = NS_REC_CREATE, .now_ms = 2, .wall_ms = 12, .path = "/job/kv", .kind = NS_KIND_KV,
        .lease_ms = 3000, .parts = kv_parts, .nparts = 3);
  MF_ASSERT_EQ(ns_tree_plan_parts(live, NS_KIND_FILE, 2, file_parts), 0);
  APPLY(.type = NS_REC_CREATE, .now_ms = 3, .wall_ms = 13, .path = "/job/tmp/f",
        .kind = NS_KIND_FILE, .parts = file_parts, .nparts = 2);
  APPLY(.type = NS_REC_REMOVE_PART, .now_ms = 4, .path = "/job/kv", .part_index = 1);
  MF_ASSERT_EQ(ns_tree_plan_append(live, ns_tree_lookup(live, "/job/tmp/f"), 0, 0, &extra), 0);
  APPLY(.type = NS_REC_ADD_PART, .now_ms = 5, .path = "/job/tmp/f", .parts = &extra, .nparts = 1);
  APPLY(.type = NS_REC_RENAME, .now_ms = 6, .path = "/job/tmp", .path2 = "/done");
  APPLY(.type = NS_REC_RENEW, .now_ms = 7, .paths = renew_paths, .npaths = 1);
  /* ms1 restarted: its partitions are lost, in the replayed tree too. */
  APPLY(.type = NS_REC_SERVER_ADD, .address = "ms1:1", .blocks = 4, .block_size = 1024,
        .incarnation = 7);
  APPLY(.type = NS_REC_SERVER_STATE, .server_id = 2, .up = 0);
#undef APPLY
  MF_ASSERT_EQ(ns_tree_server_lost_blocks(live, 1) > 0, 1);

  ns_tree_t *replayed = ns_tree_new(LEASE_MS, GRACE_MS);
  for (guint i = 0; i < log->len; i++) {
    int rc = ns_tree_apply(replayed, &g_array_index(log, ns_record_t, i), NULL, why, sizeof why);
    if (rc != 0) fprintf(stderr, "  replay of record %u failed: %s\n", i, why);
    MF_ASSERT_EQ(rc, 0);
  }
  char *a = tree_snapshot(live), *b = tree_snapshot(replayed);
  if (strcmp(a, b) != 0) fprintf(stderr, "  live:\n%s  replayed:\n%s", a, b);
  CU_ASSERT_STRING_EQUAL(a, b);
  g_free(a);
  g_free(b);
  g_array_free(log, TRUE);
  ns_tree_free(live);
  ns_tree_free(replayed);
}


/* ---- lost partitions (a memory server's new incarnation) ------------------ */

/* Registers `address` (8 blocks of 1 KiB) with an incarnation; fx may be NULL. */
static int do_register(ns_tree_t *t, const char *address, uint64_t incarnation,
                       ns_effects_t *fx) {
  why[0] = '\0';
  ns_record_t rec = {.type = NS_REC_SERVER_ADD,
                     .address = address,
                     .blocks = 8,
                     .block_size = 1024,
                     .incarnation = incarnation};
  return ns_tree_apply(t, &rec, fx, why, sizeof why);
}

/* Two servers (ids 1 and 2, incarnations 11 and 22), a kv namespace of four
 * partitions (on 1, 2, 1, 2) and a file of two blocks (on 1, 2). */
static ns_tree_t *tree_with_incarnations(void) {
  ns_tree_t *t = ns_tree_new(LEASE_MS, GRACE_MS);
  MF_ASSERT_EQ(do_register(t, "ms1:7000", 11, NULL), 0);
  MF_ASSERT_EQ(do_register(t, "ms2:7000", 22, NULL), 0);
  MF_ASSERT_EQ(do_create(t, "/kv", NS_KIND_KV, 4), 0);
  MF_ASSERT_EQ(do_create(t, "/f", NS_KIND_FILE, 2), 0);
  ns_node_t *kv = ns_tree_lookup(t, "/kv");
  for (guint i = 0; i < 4; i++) MF_ASSERT_EQ(part(kv, i)->block.server, i % 2 ? 2 : 1);
  return t;
}

static void test_a_new_incarnation_marks_the_servers_partitions_lost_in_one_record(void) {
  ns_tree_t *t = tree_with_incarnations();
  ns_node_t *kv = ns_tree_lookup(t, "/kv"), *f = ns_tree_lookup(t, "/f");
  ns_partition_t before[4];
  for (guint i = 0; i < 4; i++) before[i] = *part(kv, i);
  int64_t used = t->alloc->blocks_used;

  /* The same incarnation again (a directory or network hiccup): nothing is lost. */
  char *snap = tree_snapshot(t);
  ns_effects_t fx;
  ns_effects_init(&fx);
  MF_ASSERT_EQ(do_register(t, "ms1:7000", 11, &fx), 0);
  MF_ASSERT_EQ(fx.lost->len, 0);
  MF_ASSERT_EQ(fx.lost_parts, 0);
  EXPECT_UNCHANGED(snap, t);

  /* A new one: every partition on ms1 is lost, the others are not. */
  MF_ASSERT_EQ(do_register(t, "ms1:7000", 99, &fx), 0);
  MF_ASSERT_EQ(fx.server_id, 1);
  MF_ASSERT_EQ(fx.lost_parts, 3); /* two of the kv, one of the file */
  MF_ASSERT_EQ(fx.lost->len, 2);
  CU_ASSERT_STRING_EQUAL(g_ptr_array_index(fx.lost, 0), "/kv"); /* its block 0 comes first */
  CU_ASSERT_STRING_EQUAL(g_ptr_array_index(fx.lost, 1), "/f");
  MF_ASSERT_EQ(fx.freed->len, 0);
  for (guint i = 0; i < 4; i++) {
    MF_ASSERT_EQ(part(kv, i)->state, i % 2 ? NS_PART_LIVE : NS_PART_LOST);
    /* Same block, same generation, same range: only the state changed. */
    CU_ASSERT(same_block(part(kv, i)->block, before[i].block));
    MF_ASSERT_EQ(part(kv, i)->lo, before[i].lo);
    MF_ASSERT_EQ(part(kv, i)->hi, before[i].hi);
    MF_ASSERT_EQ(ns_tree_block_lost(t, before[i].block.server, before[i].block.index),
                 i % 2 ? 0 : 1);
  }
  MF_ASSERT_EQ(part(f, 0)->state, NS_PART_LOST);
  MF_ASSERT_EQ(part(f, 1)->state, NS_PART_LIVE);
  /* One new layout version per namespace; the blocks stay taken. */
  MF_ASSERT_EQ(kv->layout.version, 2);
  MF_ASSERT_EQ(f->layout.version, 2);
  MF_ASSERT_EQ(ns_node_lost_parts(kv), 2);
  MF_ASSERT_EQ(ns_node_lost_parts(f), 1);
  MF_ASSERT_EQ(t->alloc->blocks_used, used);
  MF_ASSERT_EQ(ns_tree_server_lost_blocks(t, 1), 3);
  MF_ASSERT_EQ(ns_tree_server_lost_blocks(t, 2), 0);
  MF_ASSERT_EQ(ns_alloc_server(t->alloc, 1)->incarnation, 99);
  MF_ASSERT_EQ(ns_tree_block_lost(t, 1, 7), 0); /* a free block is not lost */
  ns_effects_clear(&fx);

  /* Registering again as the new incarnation loses nothing more. */
  ns_effects_init(&fx);
  snap = tree_snapshot(t);
  MF_ASSERT_EQ(do_register(t, "ms1:7000", 99, &fx), 0);
  MF_ASSERT_EQ(fx.lost->len, 0);
  EXPECT_UNCHANGED(snap, t);
  ns_effects_clear(&fx);
  ns_tree_free(t);
}

static void test_an_unknown_incarnation_never_loses_anything(void) {
  ns_tree_t *t = ns_tree_new(LEASE_MS, GRACE_MS);
  /* Registered without an incarnation (an older memory server): a later
   * registration with one cannot tell a restart, and keeps the blocks. */
  MF_ASSERT_EQ(do_register(t, "ms1:7000", 0, NULL), 0);
  MF_ASSERT_EQ(do_create(t, "/kv", NS_KIND_KV, 2), 0);
  ns_effects_t fx;
  ns_effects_init(&fx);
  MF_ASSERT_EQ(do_register(t, "ms1:7000", 5, &fx), 0);
  MF_ASSERT_EQ(fx.lost->len, 0);
  MF_ASSERT_EQ(ns_node_lost_parts(ns_tree_lookup(t, "/kv")), 0);
  /* And a registration without one says nothing about the one on record. */
  MF_ASSERT_EQ(do_register(t, "ms1:7000", 0, &fx), 0);
  MF_ASSERT_EQ(fx.lost->len, 0);
  MF_ASSERT_EQ(ns_alloc_server(t->alloc, 1)->incarnation, 5);
  MF_ASSERT_EQ(ns_node_lost_parts(ns_tree_lookup(t, "/kv")), 0);
  ns_effects_clear(&fx);
  ns_tree_free(t);
}

static void test_lost_partitions_are_never_released_split_merged_or_truncated(void) {
  ns_tree_t *t = tree_with_incarnations();
  MF_ASSERT_EQ(do_create(t, "/q", NS_KIND_QUEUE, 2), 0); /* on ms1 and ms2 */
  MF_ASSERT_EQ(do_register(t, "ms1:7000", 99, NULL), 0);
  ns_node_t *kv = ns_tree_lookup(t, "/kv");
  char *snap = tree_snapshot(t);
  /* Release: a drained queue segment or a removed block must not free it. */
  ns_node_t *q = ns_tree_lookup(t, "/q");
  MF_ASSERT_EQ(part(q, 0)->state, NS_PART_LOST);
  MF_ASSERT_EQ(do_remove_part(t, "/q", 0, NULL), MAYFLY_ELOST);
  EXPECT_WHY();
  /* Split of a lost partition, merge of a live one into a lost one, and a
   * merge of a lost one into a live one. */
  MF_ASSERT_EQ(do_split(t, "/kv", 1, 0, 4096, NULL), MAYFLY_ELOST);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_merge(t, "/kv", 2, 1, 0), MAYFLY_ELOST);
  EXPECT_WHY();
  MF_ASSERT_EQ(do_merge(t, "/kv", 3, 0, 1), MAYFLY_ELOST);
  EXPECT_WHY();
  EXPECT_UNCHANGED(snap, t);
  MF_ASSERT_EQ(part(kv, 1)->state, NS_PART_LIVE);
  /* The live partitions still split. */
  MF_ASSERT_EQ(do_split(t, "/kv", 4, 1, part(kv, 1)->lo + 10, NULL), 0);
  ns_tree_free(t);

  /* Truncating a file must not drop a lost block either. */
  t = tree_with_incarnations();
  MF_ASSERT_EQ(do_register(t, "ms2:7000", 77, NULL), 0); /* the file's second block goes */
  ns_node_t *f = ns_tree_lookup(t, "/f");
  MF_ASSERT_EQ(part(f, 1)->state, NS_PART_LOST);
  snap = tree_snapshot(t);
  MF_ASSERT_EQ(do_truncate(t, "/f", 1024, NULL), MAYFLY_ELOST);
  EXPECT_WHY();
  EXPECT_UNCHANGED(snap, t);
  ns_tree_free(t);
}

static void test_removing_a_namespace_frees_its_lost_blocks_at_a_new_generation(void) {
  ns_tree_t *t = tree_with_incarnations();
  MF_ASSERT_EQ(do_register(t, "ms1:7000", 99, NULL), 0);
  ns_node_t *kv = ns_tree_lookup(t, "/kv");
  ns_block_t lost[2] = {part(kv, 0)->block, part(kv, 2)->block};
  ns_block_t all[4];
  for (guint i = 0; i < 4; i++) all[i] = part(kv, i)->block;
  int64_t used = t->alloc->blocks_used;
  ns_effects_t fx;
  ns_effects_init(&fx);
  MF_ASSERT_EQ(do_remove(t, "/kv", 0, &fx), 0);
  expect_freed(&fx, all, 4);
  MF_ASSERT_EQ(t->alloc->blocks_used, used - 4);
  MF_ASSERT_EQ(ns_tree_server_lost_blocks(t, 1), 1); /* the file's block is still lost */
  for (guint i = 0; i < 2; i++) {
    CU_ASSERT(!is_taken(t, lost[i]));
    MF_ASSERT_EQ(ns_tree_block_lost(t, lost[i].server, lost[i].index), 0);
    /* Free again, under a generation no stale reference names. */
    MF_ASSERT_EQ(ns_alloc_server(t->alloc, 1)->generation[lost[i].index],
                 lost[i].generation + 1);
  }
  /* A new namespace can have them, live. */
  MF_ASSERT_EQ(do_create(t, "/again", NS_KIND_KV, 4), 0);
  ns_node_t *again = ns_tree_lookup(t, "/again");
  int on_ms1 = 0;
  for (guint i = 0; i < 4; i++) {
    MF_ASSERT_EQ(part(again, i)->state, NS_PART_LIVE);
    on_ms1 += part(again, i)->block.server == 1;
  }
  MF_ASSERT_EQ(on_ms1, 2);
  ns_effects_clear(&fx);
  ns_tree_free(t);
}

static void test_a_repartition_under_way_when_its_server_restarts_only_rolls_back(void) {
  ns_tree_t *t = tree_with_incarnations();
  ns_node_t *kv = ns_tree_lookup(t, "/kv");
  /* A split of the partition on ms2 whose new block is on ms1. */
  ns_block_t dst;
  MF_ASSERT_EQ(do_split(t, "/kv", 1, 1, part(kv, 1)->lo + 100, &dst), 0);
  MF_ASSERT_EQ(dst.server, 1);
  MF_ASSERT_EQ(do_register(t, "ms1:7000", 99, NULL), 0);
  CU_ASSERT(ns_node_find_repart(kv, 1)->lost);
  MF_ASSERT_EQ(ns_tree_block_lost(t, dst.server, dst.index), 1);
  MF_ASSERT_EQ(ns_tree_server_lost_blocks(t, 1), 4); /* two kv, the file's, the split's */
  /* What was copied there is gone: a commit is refused, a rollback frees it. */
  char *snap = tree_snapshot(t);
  MF_ASSERT_EQ(do_end(t, "/kv", 1, NS_REC_COMMIT, NULL), MAYFLY_EMOVED);
  EXPECT_WHY();
  EXPECT_UNCHANGED(snap, t);
  ns_effects_t fx;
  ns_effects_init(&fx);
  MF_ASSERT_EQ(do_end(t, "/kv", 1, 0, &fx), 0);
  expect_freed(&fx, &dst, 1);
  MF_ASSERT_EQ(kv->layout.parts->len, 4);
  MF_ASSERT_EQ(part(kv, 1)->state, NS_PART_LIVE);
  ns_effects_clear(&fx);
  ns_tree_free(t);
}

/* ---- subtree counts (the quota of a tenant's prefixes) -------------------- */

/* The blocks and namespaces counted at path's node. */
static void expect_counts(ns_tree_t *t, const char *path, int64_t blocks, int64_t leaves,
                          int line) {
  ns_node_t *n = ns_tree_lookup(t, path);
  CU_ASSERT_PTR_NOT_NULL_FATAL(n);
  if (n->sub_blocks != blocks || n->sub_leaves != leaves) {
    fprintf(stderr, "  line %d: %s counts %lld blocks, %lld namespaces; expected %lld, %lld\n",
            line, path, (long long)n->sub_blocks, (long long)n->sub_leaves, (long long)blocks,
            (long long)leaves);
  }
  CU_ASSERT(n->sub_blocks == blocks && n->sub_leaves == leaves);
  CU_ASSERT_EQUAL(ns_tree_check_counts(t, why, sizeof why), 0);
}
#define EXPECT_COUNTS(t, path, b, l) expect_counts((t), (path), (b), (l), __LINE__)

static void test_subtree_counts_follow_every_change_of_blocks(void) {
  ns_tree_t *t = tree_with(2, 16);
  MF_ASSERT_EQ(do_create(t, "/a/x/kv", NS_KIND_KV, 2), 0);
  MF_ASSERT_EQ(do_create(t, "/a/f", NS_KIND_FILE, 3), 0);
  MF_ASSERT_EQ(do_create(t, "/b/q", NS_KIND_QUEUE, 1), 0);
  EXPECT_COUNTS(t, "/", 6, 3);
  EXPECT_COUNTS(t, "/a", 5, 2);
  EXPECT_COUNTS(t, "/a/x", 2, 1);
  EXPECT_COUNTS(t, "/b", 1, 1);

  /* Growth and shrinking. */
  ns_partition_t extra;
  MF_ASSERT_EQ(ns_tree_plan_append(t, ns_tree_lookup(t, "/b/q"), 0, 0, &extra), 0);
  MF_ASSERT_EQ(do_add_part(t, "/b/q", &extra), 0);
  EXPECT_COUNTS(t, "/b", 2, 1);
  MF_ASSERT_EQ(do_remove_part(t, "/b/q", 0, NULL), 0);
  EXPECT_COUNTS(t, "/b", 1, 1);
  MF_ASSERT_EQ(do_truncate(t, "/a/f", 1024, NULL), 0);
  EXPECT_COUNTS(t, "/a", 3, 2);

  /* A split counts its new block from begin; a rollback gives it back, a
   * commit keeps it; a merge's commit frees one. */
  MF_ASSERT_EQ(do_split(t, "/a/x/kv", 1, 0, 8192, NULL), 0);
  EXPECT_COUNTS(t, "/a/x", 3, 1);
  MF_ASSERT_EQ(do_end(t, "/a/x/kv", 1, 0, NULL), 0);
  EXPECT_COUNTS(t, "/a/x", 2, 1);
  MF_ASSERT_EQ(do_split(t, "/a/x/kv", 2, 0, 8192, NULL), 0);
  MF_ASSERT_EQ(do_end(t, "/a/x/kv", 2, NS_REC_COMMIT, NULL), 0);
  EXPECT_COUNTS(t, "/a/x", 3, 1);
  MF_ASSERT_EQ(do_merge(t, "/a/x/kv", 3, 1, 0), 0);
  EXPECT_COUNTS(t, "/a/x", 3, 1);
  MF_ASSERT_EQ(do_end(t, "/a/x/kv", 3, NS_REC_COMMIT, NULL), 0);
  EXPECT_COUNTS(t, "/a/x", 2, 1);
  EXPECT_COUNTS(t, "/", 4, 3);

  /* A rename moves the counts from one subtree to the other. */
  MF_ASSERT_EQ(do_rename(t, "/a/x", "/b/x"), 0);
  EXPECT_COUNTS(t, "/a", 1, 1);
  EXPECT_COUNTS(t, "/b", 3, 2);
  EXPECT_COUNTS(t, "/", 4, 3);

  /* A removal mid-split takes the new block's count away too. */
  MF_ASSERT_EQ(do_split(t, "/b/x/kv", 4, 0, 8192, NULL), 0);
  EXPECT_COUNTS(t, "/b", 4, 2);
  MF_ASSERT_EQ(do_remove(t, "/b/x", NS_REC_RECURSIVE, NULL), 0);
  EXPECT_COUNTS(t, "/b", 1, 1);
  EXPECT_COUNTS(t, "/", 2, 2);
  /* A failed change changes no count. */
  MF_ASSERT_EQ(do_create(t, "/b/q", NS_KIND_KV, 1), MAYFLY_EEXIST);
  EXPECT_COUNTS(t, "/", 2, 2);
  MF_ASSERT_EQ(t->alloc->blocks_used, t->root->sub_blocks);
  ns_tree_free(t);
}

static void test_count_check_names_a_node_whose_counts_are_wrong(void) {
  ns_tree_t *t = tree_with(1, 8);
  MF_ASSERT_EQ(do_create(t, "/a/kv", NS_KIND_KV, 2), 0);
  MF_ASSERT_EQ(ns_tree_check_counts(t, why, sizeof why), 0);
  ns_tree_lookup(t, "/a")->sub_blocks++;
  why[0] = '\0';
  MF_ASSERT_EQ(ns_tree_check_counts(t, why, sizeof why), MAYFLY_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "/a:"));
  ns_tree_lookup(t, "/a")->sub_blocks--;
  ns_tree_free(t);
}

static const mf_test_t tests[] = {
    {"mkdir makes a directory under an existing directory", test_mkdir_makes_a_directory},
    {"mkdir without parents is ENOENT when the parent is missing",
     test_mkdir_without_parents_needs_the_parent},
    {"mkdir with parents makes every missing directory and accepts existing ones",
     test_mkdir_with_parents_makes_every_missing_directory},
    {"mkdir of an existing path is EEXIST", test_mkdir_of_an_existing_path_is_eexist},
    {"mkdir under a leaf is ENOTDIR, with or without parents", test_mkdir_under_a_leaf_is_enotdir},
    {"mkdir follows the path rules", test_mkdir_follows_the_path_rules},
    {"create makes file, queue and kv namespaces with their planned blocks",
     test_create_makes_file_queue_and_kv_namespaces},
    {"create keeps the lease, the pinned flag and a copy of the tags",
     test_create_keeps_lease_pinning_and_a_copy_of_the_tags},
    {"create of an existing path is EEXIST and takes no block",
     test_create_of_an_existing_path_is_eexist},
    {"create refuses the directory kind and unknown kinds",
     test_create_refuses_directories_and_unknown_kinds},
    {"create makes missing parent directories", test_create_makes_missing_parent_directories},
    {"create under a leaf is ENOTDIR and takes no block", test_create_under_a_leaf_is_enotdir},
    {"create accepts leases from 0 to 30 days only", test_create_accepts_leases_up_to_30_days_only},
    {"create accepts 32 tags of 64-byte keys and 256-byte values, and no more",
     test_create_limits_tags},
    {"create refuses more than NS_CREATE_BLOCKS_MAX blocks", test_create_limits_blocks_per_request},
    {"create takes its blocks from the allocator and remove gives them back",
     test_create_takes_blocks_and_remove_gives_them_back},
    {"create with a block already taken is EMOVED and changes nothing",
     test_create_with_a_block_already_taken_is_emoved_and_changes_nothing},
    {"a failed create leaves its other planned blocks untouched",
     test_a_failed_create_leaves_its_other_planned_blocks_untouched},
    {"remove of a missing path is ENOENT", test_remove_of_a_missing_path_is_enoent},
    {"remove of a non-empty directory without recursive is ENOTEMPTY",
     test_remove_of_a_non_empty_directory_needs_recursive},
    {"remove of an empty directory or a leaf needs no flag",
     test_remove_of_an_empty_directory_or_a_leaf_needs_no_flag},
    {"recursive remove frees every block of the subtree and lists children first",
     test_recursive_remove_frees_the_subtree_children_first},
    {"the root cannot be removed (EPERM)", test_the_root_cannot_be_removed},
    {"rename moves a node with its subtree, blocks and all",
     test_rename_moves_a_node_with_its_subtree},
    {"rename within a directory changes the name", test_rename_within_a_directory_changes_the_name},
    {"rename into its own subtree is ESUBTREE", test_rename_into_its_own_subtree_is_esubtree},
    {"rename onto an existing path is EEXIST", test_rename_onto_an_existing_path_is_eexist},
    {"rename of a missing path is ENOENT", test_rename_of_a_missing_path_is_enoent},
    {"rename to a missing or leaf parent fails and keeps the source",
     test_rename_to_a_missing_or_leaf_parent_fails_and_keeps_the_source},
    {"the root cannot be renamed or replaced (EPERM)", test_the_root_cannot_be_renamed_or_replaced},
    {"lookup finds only existing nodes at valid paths", test_lookup_finds_only_existing_valid_paths},
    {"children are listed and walked sorted by name", test_children_are_listed_sorted_by_name},
    {"stat fields describe the node", test_stat_fields_describe_the_node},
    {"kind names parse back to their kinds", test_kind_names_parse_back},
    {"adding a partition takes its block and bumps the layout version",
     test_adding_a_partition_takes_its_block_and_bumps_the_version},
    {"removing a partition frees its block and bumps the layout version",
     test_removing_a_partition_frees_its_block_and_bumps_the_version},
    {"refused partition changes change nothing",
     test_partition_changes_are_refused_without_changing_anything},
    {"a kv plan covers every slot without gaps", test_kv_plan_covers_every_slot_without_gaps},
    {"a file plan gives consecutive byte ranges of one block each",
     test_file_plan_gives_consecutive_byte_ranges},
    {"a queue plan numbers segments from zero", test_queue_plan_numbers_segments_from_zero},
    {"plans spread blocks and fail when the pool cannot serve them",
     test_plans_spread_blocks_and_fail_when_the_pool_cannot_serve},
    {"an append plan continues after the last partition",
     test_append_plan_continues_after_the_last_partition},
    {"server records register servers and mark them up or down",
     test_server_records_register_and_mark_servers},
    {"replaying the successful records rebuilds the same state",
     test_replaying_the_records_rebuilds_the_same_state},
    {"create keeps the quota and the watermarks", test_create_keeps_the_quota_and_the_watermarks},
    {"create refuses bad quotas and watermarks and takes no block",
     test_create_refuses_bad_quotas_and_watermarks},
    {"split begin takes the new block and leaves the layout",
     test_split_begin_takes_the_new_block_and_leaves_the_layout},
    {"split commit gives two partitions [lo, mid) and [mid, hi) sorted by lo",
     test_split_commit_gives_two_partitions_sorted_by_lo},
    {"split rollback frees the new block and keeps the layout and its version",
     test_split_rollback_frees_the_new_block_and_keeps_the_layout},
    {"merge commit unions the ranges and frees the source",
     test_merge_commit_unions_the_ranges_and_frees_the_source},
    {"merge rollback keeps both partitions", test_merge_rollback_keeps_both_partitions},
    {"merge of non-adjacent partitions is EINVAL",
     test_merge_of_non_adjacent_partitions_is_einval},
    {"split begin with a bad range or id is refused and changes nothing",
     test_split_begin_with_a_bad_range_or_id_is_refused},
    {"a second begin on a busy partition is EAGAIN",
     test_a_second_begin_on_a_busy_partition_is_eagain},
    {"removing a busy partition is EAGAIN, and allowed once the repartition ended",
     test_removing_a_busy_partition_is_eagain_and_allowed_once_ended},
    {"split begin past max_blocks is EQUOTA and changes nothing",
     test_split_begin_past_max_blocks_is_equota_and_changes_nothing},
    {"adding a partition past max_blocks is EQUOTA",
     test_adding_a_partition_past_max_blocks_is_equota},
    {"ending an unknown repartition is ENOENT and changes nothing",
     test_ending_an_unknown_repartition_is_enoent},
    {"removing a namespace mid-split frees the split's new block",
     test_removing_a_namespace_mid_split_frees_the_new_block},
    {"truncate drops the partitions from lo and keeps the first",
     test_truncate_drops_the_partitions_from_lo_and_keeps_the_first},
    {"truncate is refused for other kinds and negative sizes",
     test_truncate_is_refused_for_other_kinds_and_negative_sizes},
    {"replaying repartition and truncate records rebuilds the same state",
     test_replaying_repartition_records_rebuilds_the_same_state},
    {"a new incarnation marks the server's partitions lost in one record",
     test_a_new_incarnation_marks_the_servers_partitions_lost_in_one_record},
    {"an unknown incarnation never loses anything",
     test_an_unknown_incarnation_never_loses_anything},
    {"lost partitions are never released, split, merged or truncated",
     test_lost_partitions_are_never_released_split_merged_or_truncated},
    {"removing a namespace frees its lost blocks at a new generation",
     test_removing_a_namespace_frees_its_lost_blocks_at_a_new_generation},
    {"a repartition under way when its server restarts only rolls back",
     test_a_repartition_under_way_when_its_server_restarts_only_rolls_back},
    {"subtree counts of blocks and namespaces follow every change",
     test_subtree_counts_follow_every_change_of_blocks},
    {"the count check names a node whose counts are wrong",
     test_count_check_names_a_node_whose_counts_are_wrong},
    {NULL, NULL}};

int main(void) {
  return mf_test_run("namespaces/tree", NULL, NULL, tests);
}
