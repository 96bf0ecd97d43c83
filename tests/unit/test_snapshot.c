/*
 * Unit tests for namespaces/snapshot.c: a tree built by records of every
 * type (servers registered again with a new incarnation, a server down,
 * namespaces of every kind with tags, pins, quotas and watermarks, parts
 * added and removed, a truncate, renames, removes, repartitions begun and
 * ended, split and merge) is encoded and decoded into the same state
 * (compared through tests/unit/tree_snapshot.c without the lease times a
 * decoded tree restarts); the encoding is canonical; a snapshot taken after
 * record k with records k+1..n applied to the decoded tree gives the state
 * all n records give; a decoded tree keeps working like the original (same
 * blocks picked, same blocks freed, leases restarted in full); and damaged
 * or forged snapshots (every truncation, targeted corruptions of each
 * invariant, huge counts) are refused with MAYFLY_EPROTO and a reason,
 * leaving nothing allocated (AddressSanitizer's leak check in the
 * sanitizer build).
 */
#include <string.h>

#include "common/error.h"
#include "mf_test.h"
#include "namespaces/path.h"
#include "namespaces/record.h"
#include "namespaces/snapshot.h"
#include "namespaces/tree.h"
#include "tree_snapshot.h"

#define LEASE_MS 1000
#define GRACE_MS 100
#define NOW 777777 /* the monotonic time trees are decoded at */

static char why[512];

/* The script: every record applied to `live`, encoded in order. */
static GPtrArray *script; /* GByteArray * */
static ns_tree_t *live;
static GByteArray *live_enc; /* the encoding of `live` */

static void apply_ok(ns_tree_t *t, const ns_record_t *rec, ns_effects_t *fx, int line) {
  int rc = ns_tree_apply(t, rec, fx, why, sizeof why);
  if (rc != 0) fprintf(stderr, "  line %d: apply failed: %s\n", line, why);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
}

/* Applies one record to `live` and keeps its encoding in the script. */
static void script_add(const ns_record_t *rec, int line) {
  apply_ok(live, rec, NULL, line);
  GByteArray *e = g_byte_array_new();
  MF_ASSERT_EQ(ns_rec_encode(rec, e), 0);
  g_ptr_array_add(script, e);
}

#define REC(...)                  \
  do {                            \
    ns_record_t r_ = {__VA_ARGS__}; \
    script_add(&r_, __LINE__);    \
  } while (0)

/* Applies script records [from, to) to t. */
static void replay(ns_tree_t *t, guint from, guint to) {
  for (guint i = from; i < to; i++) {
    GByteArray *e = g_ptr_array_index(script, i);
    ns_rec_buf_t b;
    ns_rec_buf_init(&b);
    MF_ASSERT_EQ(ns_rec_decode(e->data, e->len, &b, why, sizeof why), 0);
    apply_ok(t, &b.rec, NULL, (int)i);
    ns_rec_buf_clear(&b);
  }
}

static GByteArray *encode(const ns_tree_t *t, int64_t seq) {
  GByteArray *e = g_byte_array_new();
  ns_snap_meta_t meta = {.seq = seq, .wall_ms = 1700000000000LL + seq};
  MF_ASSERT_EQ(ns_snap_encode(t, &meta, e), 0);
  return e;
}

/* Decodes bytes that must be accepted. */
static ns_tree_t *decode_ok(const GByteArray *e) {
  ns_tree_t *t = NULL;
  ns_snap_meta_t meta;
  int rc = ns_snap_decode(e->data, e->len, LEASE_MS, GRACE_MS, NOW, &t, &meta, why, sizeof why);
  if (rc != 0) fprintf(stderr, "  decode failed: %s\n", why);
  MF_ASSERT_EQ(rc, 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(t);
  return t;
}

static void assert_same_state(ns_tree_t *a, ns_tree_t *b) {
  char *x = tree_snapshot_untimed(a), *y = tree_snapshot_untimed(b);
  if (strcmp(x, y) != 0) fprintf(stderr, "  first:\n%s  second:\n%s", x, y);
  CU_ASSERT_STRING_EQUAL(x, y);
  g_free(x);
  g_free(y);
  /* The request ids too (the retries a failover may bring). */
  MF_ASSERT_EQ(g_hash_table_size(a->requests), g_hash_table_size(b->requests));
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, a->requests);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    const ns_request_t *ra = v, *rb = g_hash_table_lookup(b->requests, &ra->client);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rb);
    MF_ASSERT_EQ(ra->seq, rb->seq);
    MF_ASSERT_EQ(ra->window, rb->window);
    MF_ASSERT_EQ(ra->wall_ms, rb->wall_ms);
  }
}

static int same_bytes(const GByteArray *a, const GByteArray *b) {
  return a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
}

static void build_script(void) {
  live = ns_tree_new(LEASE_MS, GRACE_MS);
  REC(.type = NS_REC_SERVER_ADD, .address = "ms1:7000", .blocks = 8, .block_size = 1024,
      .incarnation = 0x11);
  REC(.type = NS_REC_SERVER_ADD, .address = "ms2:7000", .blocks = 8, .block_size = 1024,
      .gen_floor = 40, .incarnation = 0x22);
  REC(.type = NS_REC_SERVER_ADD, .address = "ms3:7000", .blocks = 6, .block_size = 4096,
      .incarnation = 0x33);
  REC(.type = NS_REC_MKDIR, .flags = NS_REC_PARENTS, .now_ms = 5, .wall_ms = 1700000000001LL,
      .path = "/jobs/a/b");
  REC(.type = NS_REC_MKDIR, .now_ms = 6, .wall_ms = 1700000000002LL, .path = "/jobs/c",
      .req_client = 0xabcdef0123456789ULL, .req_seq = 1);
  GHashTable *tags = g_hash_table_new(g_str_hash, g_str_equal);
  g_hash_table_insert(tags, "owner", "alice");
  g_hash_table_insert(tags, "stage", "map");
  g_hash_table_insert(tags, "empty", "");
  ns_partition_t kv[3], file[3], queue[1], kv2[2], seg, small, split, split2, z, kv1;
  MF_ASSERT_EQ(ns_tree_plan_parts(live, NS_KIND_KV, 3, kv), 0);
  REC(.type = NS_REC_CREATE, .now_ms = 7, .wall_ms = 1700000000003LL, .path = "/jobs/a/kv",
      .kind = NS_KIND_KV, .lease_ms = 3000, .node_flags = NS_FLAG_PINNED, .tags = tags,
      .parts = kv, .nparts = 3, .max_blocks = 6, .high_wm = 80, .low_wm = 10);
  g_hash_table_destroy(tags);
  MF_ASSERT_EQ(ns_tree_plan_parts(live, NS_KIND_FILE, 3, file), 0);
  REC(.type = NS_REC_CREATE, .now_ms = 8, .wall_ms = 1700000000004LL, .path = "/jobs/f",
      .kind = NS_KIND_FILE, .parts = file, .nparts = 3);
  MF_ASSERT_EQ(ns_tree_plan_parts(live, NS_KIND_QUEUE, 1, queue), 0);
  REC(.type = NS_REC_CREATE, .now_ms = 9, .wall_ms = 1700000000005LL, .path = "/jobs/c/q",
      .kind = NS_KIND_QUEUE, .parts = queue, .nparts = 1, .max_blocks = 4);
  MF_ASSERT_EQ(ns_tree_plan_parts(live, NS_KIND_KV, 2, kv2), 0);
  REC(.type = NS_REC_CREATE, .now_ms = 9, .wall_ms = 1700000000006LL, .path = "/deep/x/y/kv2",
      .kind = NS_KIND_KV, .lease_ms = 500, .parts = kv2, .nparts = 2);
  REC(.type = NS_REC_RENAME, .now_ms = 10, .path = "/jobs/c/q", .path2 = "/jobs/a/b/q2");
  const char *paths[] = {"/jobs/a", "/no/such/path"};
  REC(.type = NS_REC_RENEW, .now_ms = 11, .paths = paths, .npaths = 2);
  MF_ASSERT_EQ(ns_tree_plan_append(live, ns_tree_lookup(live, "/jobs/a/b/q2"), 0, 0, &seg), 0);
  REC(.type = NS_REC_ADD_PART, .now_ms = 12, .path = "/jobs/a/b/q2", .parts = &seg, .nparts = 1);
  REC(.type = NS_REC_REMOVE_PART, .now_ms = 13, .path = "/jobs/a/b/q2", .part_index = 0);
  REC(.type = NS_REC_SERVER_STATE, .server_id = 2, .up = 0);
  MF_ASSERT_EQ(ns_tree_plan_parts(live, NS_KIND_QUEUE, 1, &small), 0);
  REC(.type = NS_REC_CREATE, .now_ms = 14, .wall_ms = 1700000000007LL, .path = "/jobs/small",
      .kind = NS_KIND_QUEUE, .parts = &small, .nparts = 1);
  REC(.type = NS_REC_SERVER_STATE, .server_id = 2, .up = 1);
  ns_node_t *kvn = ns_tree_lookup(live, "/jobs/a/kv");
  MF_ASSERT_EQ(ns_tree_plan_append(live, kvn, 10000, kv[0].hi, &split), 0);
  REC(.type = NS_REC_REPART_BEGIN, .now_ms = 15, .path = "/jobs/a/kv", .op_id = 1,
      .block = kv[0].block, .block2 = split.block, .lo = 10000, .hi = kv[0].hi);
  REC(.type = NS_REC_REPART_END, .now_ms = 16, .path = "/jobs/a/kv", .op_id = 1,
      .flags = NS_REC_COMMIT);
  REC(.type = NS_REC_REPART_BEGIN, .now_ms = 17, .path = "/jobs/a/kv", .op_id = 2,
      .flags = NS_REC_MERGE, .block = split.block, .block2 = kv[0].block, .lo = 10000,
      .hi = kv[0].hi);
  REC(.type = NS_REC_REPART_END, .now_ms = 18, .path = "/jobs/a/kv", .op_id = 2);
  MF_ASSERT_EQ(ns_tree_plan_append(live, kvn, 50000, kv[2].hi, &split2), 0);
  REC(.type = NS_REC_REPART_BEGIN, .now_ms = 19, .path = "/jobs/a/kv", .op_id = 3,
      .block = kv[2].block, .block2 = split2.block, .lo = 50000, .hi = kv[2].hi);
  REC(.type = NS_REC_REPART_BEGIN, .now_ms = 20, .path = "/deep/x/y/kv2", .op_id = 4,
      .flags = NS_REC_MERGE, .block = kv2[1].block, .block2 = kv2[0].block, .lo = kv2[1].lo,
      .hi = kv2[1].hi);
  REC(.type = NS_REC_TRUNCATE, .now_ms = 21, .path = "/jobs/f", .lo = 1024);
  /* ms1 restarted: its partitions are lost, and repartitions touching it. */
  REC(.type = NS_REC_SERVER_ADD, .address = "ms1:7000", .blocks = 8, .block_size = 1024,
      .incarnation = 0x44);
  REC(.type = NS_REC_REMOVE, .now_ms = 22, .path = "/jobs/a/b/q2");
  REC(.type = NS_REC_REMOVE, .flags = NS_REC_EXPIRED, .now_ms = 23, .path = "/jobs/small");
  REC(.type = NS_REC_MKDIR, .now_ms = 24, .wall_ms = 1700000000008LL, .path = "/tmp",
      .req_client = 7, .req_seq = 41);
  REC(.type = NS_REC_MKDIR, .now_ms = 24, .wall_ms = 1700000000008LL, .path = "/tmp2",
      .req_client = 0xabcdef0123456789ULL, .req_seq = 2);
  REC(.type = NS_REC_MKDIR, .now_ms = 24, .wall_ms = 1700000000009LL, .path = "/tmp/dup1");
  REC(.type = NS_REC_MKDIR, .now_ms = 24, .wall_ms = 1700000000010LL, .path = "/tmp/dup2");
  REC(.type = NS_REC_REMOVE, .flags = NS_REC_RECURSIVE, .now_ms = 25, .path = "/jobs/a/b");
  GHashTable *tags2 = g_hash_table_new(g_str_hash, g_str_equal);
  g_hash_table_insert(tags2, "team", "search");
  MF_ASSERT_EQ(ns_tree_plan_parts(live, NS_KIND_FILE, 1, &z), 0);
  REC(.type = NS_REC_CREATE, .now_ms = 26, .wall_ms = 1700000000011LL, .path = "/tmp/z",
      .kind = NS_KIND_FILE, .tags = tags2, .parts = &z, .nparts = 1);
  g_hash_table_destroy(tags2);
  REC(.type = NS_REC_SERVER_ADD, .address = "ms4:7000", .blocks = 4, .block_size = 512,
      .incarnation = 0x55);
  MF_ASSERT_EQ(ns_tree_plan_parts(live, NS_KIND_KV, 1, &kv1), 0);
  REC(.type = NS_REC_CREATE, .now_ms = 27, .wall_ms = 1700000000012LL, .path = "/tmp/kv1",
      .kind = NS_KIND_KV, .parts = &kv1, .nparts = 1, .high_wm = 60, .low_wm = 30);
  live_enc = encode(live, (int64_t)script->len);
}
#undef REC

/* The final state is not trivial: partitions were lost, splits and merges
 * are under way, one of them lost, and some blocks were freed (generations
 * moved on). */
static void test_the_script_builds_a_rich_tree(void) {
  build_script();
  CU_ASSERT_FATAL(script->len > 30);
  ns_node_t *kv = ns_tree_lookup(live, "/jobs/a/kv"), *kv2 = ns_tree_lookup(live, "/deep/x/y/kv2");
  CU_ASSERT_PTR_NOT_NULL_FATAL(kv);
  CU_ASSERT_PTR_NOT_NULL_FATAL(kv2);
  int32_t lost = 0, lost_reparts = 0;
  for (int32_t id = 1; id <= 4; id++) lost += ns_tree_server_lost_blocks(live, id);
  CU_ASSERT(lost > 0);
  CU_ASSERT_PTR_NOT_NULL(ns_node_find_repart(kv, 3));
  CU_ASSERT_PTR_NOT_NULL(ns_node_find_repart(kv2, 4));
  CU_ASSERT(ns_node_find_repart(kv2, 4)->merge);
  for (ns_node_t *n = kv; n != NULL; n = n == kv ? kv2 : NULL) {
    for (guint i = 0; i < n->reparts->len; i++) {
      lost_reparts += g_array_index(n->reparts, ns_repart_t, i).lost;
    }
  }
  CU_ASSERT(lost_reparts > 0);
  MF_ASSERT_EQ(live->n_expired, 1);
  MF_ASSERT_EQ(live->last_op_id, 4);
  CU_ASSERT(ns_alloc_server(live->alloc, 2)->generation[0] > 40);
}

/* Leases restart: every node's renewal times and every begun
 * repartition's start are the decode time. */
static void check_times(ns_node_t *n, void *ud) {
  int *bad = ud;
  if (n->renewed_ms != NOW || n->subtree_ms != NOW) (*bad)++;
  for (guint i = 0; n->reparts != NULL && i < n->reparts->len; i++) {
    if (g_array_index(n->reparts, ns_repart_t, i).started_ms != NOW) (*bad)++;
  }
}

/* For every k: the tree after records 1..k round-trips, re-encodes to the
 * same bytes, and with records k+1..n applied gives the final state, whose
 * encoding is the live tree's byte for byte. */
static void test_snapshot_at_every_record_then_the_rest_gives_the_same_tree(void) {
  CU_ASSERT_PTR_NOT_NULL_FATAL(live_enc);
  for (guint k = 0; k <= script->len; k++) {
    ns_tree_t *t = ns_tree_new(LEASE_MS, GRACE_MS);
    replay(t, 0, k);
    GByteArray *e = encode(t, k);
    ns_tree_t *d = NULL;
    ns_snap_meta_t meta = {0};
    MF_ASSERT_EQ(ns_snap_decode(e->data, e->len, LEASE_MS, GRACE_MS, NOW, &d, &meta, why,
                                sizeof why),
                 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    MF_ASSERT_EQ(meta.seq, k);
    MF_ASSERT_EQ(meta.wall_ms, 1700000000000LL + k);
    MF_ASSERT_EQ(d->default_lease_ms, LEASE_MS);
    MF_ASSERT_EQ(d->grace_ms, GRACE_MS);
    CU_ASSERT_PTR_NULL(d->observer);
    assert_same_state(t, d);
    int bad = 0;
    ns_tree_walk(d->root, check_times, &bad);
    MF_ASSERT_EQ(bad, 0);
    GByteArray *again = encode(d, k);
    CU_ASSERT(same_bytes(e, again));
    replay(d, k, script->len);
    assert_same_state(d, live);
    GByteArray *fin = encode(d, script->len);
    CU_ASSERT(same_bytes(fin, live_enc));
    g_byte_array_free(fin, TRUE);
    g_byte_array_free(again, TRUE);
    g_byte_array_free(e, TRUE);
    ns_tree_free(d);
    ns_tree_free(t);
  }
}

/* The encoding appends to what out holds, and refuses a tree it cannot
 * represent leaving out as it was. */
static void test_encode_appends_and_refuses_what_it_cannot_represent(void) {
  CU_ASSERT_PTR_NOT_NULL_FATAL(live_enc);
  GByteArray *out = g_byte_array_new();
  g_byte_array_append(out, (const guint8 *)"keep", 4);
  ns_snap_meta_t meta = {.seq = 1, .wall_ms = 2};
  MF_ASSERT_EQ(ns_snap_encode(live, &meta, out), 0);
  CU_ASSERT(memcmp(out->data, "keep", 4) == 0);
  CU_ASSERT(out->len == live_enc->len + 4);
  MF_ASSERT_EQ(out->data[4], NS_SNAP_VERSION);
  ns_tree_t *t = decode_ok(live_enc);
  ns_node_t *z = ns_tree_lookup(t, "/tmp/z");
  for (int i = 0; i < NS_TAGS_MAX; i++) {
    g_hash_table_insert(z->tags, g_strdup_printf("k%02d", i), g_strdup("v"));
  }
  guint before = out->len;
  MF_ASSERT_EQ(ns_snap_encode(t, &meta, out), MAYFLY_EINVAL);
  MF_ASSERT_EQ(out->len, before);
  ns_tree_free(t);
  g_byte_array_free(out, TRUE);
}

static int same_parts(const ns_partition_t *a, const ns_partition_t *b, int n) {
  for (int i = 0; i < n; i++) {
    if (a[i].block.server != b[i].block.server || a[i].block.index != b[i].block.index ||
        a[i].block.generation != b[i].block.generation || a[i].lo != b[i].lo ||
        a[i].hi != b[i].hi) {
      return 0;
    }
  }
  return 1;
}

/* A decoded tree answers and changes like the original: the same blocks
 * are picked, the same are freed, lost blocks are the same, lookups and
 * renames work, and leases run from the decode time in full. */
static void test_a_decoded_tree_keeps_working_like_the_original(void) {
  CU_ASSERT_PTR_NOT_NULL_FATAL(live_enc);
  ns_tree_t *orig = ns_tree_new(LEASE_MS, GRACE_MS);
  replay(orig, 0, script->len);
  ns_tree_t *d = decode_ok(live_enc);
  for (int32_t id = 1; id <= 4; id++) {
    const ns_server_t *s = ns_alloc_server(d->alloc, id);
    for (int32_t b = 0; b < s->nblocks; b++) {
      MF_ASSERT_EQ(ns_tree_block_lost(d, id, b), ns_tree_block_lost(orig, id, b));
    }
    MF_ASSERT_EQ(ns_tree_server_lost_blocks(d, id), ns_tree_server_lost_blocks(orig, id));
  }
  /* Several creates in a row pick the same blocks (the free stacks agree). */
  for (int round = 0; round < 3; round++) {
    ns_partition_t a[3], b[3];
    MF_ASSERT_EQ(ns_tree_plan_parts(orig, NS_KIND_KV, 3, a), 0);
    MF_ASSERT_EQ(ns_tree_plan_parts(d, NS_KIND_KV, 3, b), 0);
    CU_ASSERT(same_parts(a, b, 3));
    char path[32];
    snprintf(path, sizeof path, "/tmp/new%d", round);
    ns_record_t mk = {.type = NS_REC_CREATE, .now_ms = NOW, .path = path, .kind = NS_KIND_KV,
                      .parts = a, .nparts = 3};
    apply_ok(orig, &mk, NULL, __LINE__);
    apply_ok(d, &mk, NULL, __LINE__);
  }
  /* Removing frees the same blocks, lost ones and a begun split's included. */
  ns_effects_t fa, fb;
  ns_effects_init(&fa);
  ns_effects_init(&fb);
  ns_record_t rm = {.type = NS_REC_REMOVE, .flags = NS_REC_RECURSIVE, .path = "/jobs"};
  apply_ok(orig, &rm, &fa, __LINE__);
  apply_ok(d, &rm, &fb, __LINE__);
  CU_ASSERT(fa.freed->len >= 4);
  CU_ASSERT(fa.freed->len == fb.freed->len &&
            memcmp(fa.freed->data, fb.freed->data, fa.freed->len * sizeof(ns_block_t)) == 0);
  MF_ASSERT_EQ(fb.removed->len, 5); /* /jobs, /jobs/a, /jobs/a/kv, /jobs/c, /jobs/f */
  ns_effects_clear(&fa);
  ns_effects_clear(&fb);
  /* A begun merge ends; a rename moves a subtree. */
  ns_record_t end = {.type = NS_REC_REPART_END, .path = "/deep/x/y/kv2", .op_id = 4};
  apply_ok(orig, &end, NULL, __LINE__);
  apply_ok(d, &end, NULL, __LINE__);
  ns_record_t mv = {.type = NS_REC_RENAME, .path = "/deep/x", .path2 = "/tmp/x"};
  apply_ok(orig, &mv, NULL, __LINE__);
  apply_ok(d, &mv, NULL, __LINE__);
  assert_same_state(orig, d);
  ns_node_t *kv2 = ns_tree_lookup(d, "/tmp/x/y/kv2");
  CU_ASSERT_PTR_NOT_NULL_FATAL(kv2);
  MF_ASSERT_EQ(kv2->kind, NS_KIND_KV);
  CU_ASSERT_PTR_NULL(ns_tree_lookup(d, "/deep/x"));
  /* Leases run from the decode time: nothing expires before lease + grace. */
  ns_node_t *z = ns_tree_lookup(d, "/tmp/z");
  MF_ASSERT_EQ(ns_node_remaining_ms(d, z, NOW), LEASE_MS + GRACE_MS);
  MF_ASSERT_EQ(ns_node_remaining_ms(d, kv2, NOW), 500 + GRACE_MS);
  ns_effects_t fx;
  ns_effects_init(&fx);
  MF_ASSERT_EQ(ns_tree_reap(d, NOW + 500 + GRACE_MS - 1, &fx), 0);
  int64_t used = d->alloc->blocks_used;
  CU_ASSERT(ns_tree_reap(d, NOW + LEASE_MS + GRACE_MS, &fx) > 0);
  CU_ASSERT_PTR_NULL(ns_tree_lookup(d, "/tmp/z"));
  CU_ASSERT(d->alloc->blocks_used < used);
  MF_ASSERT_EQ(d->alloc->blocks_used + (int64_t)fx.freed->len, used);
  ns_effects_clear(&fx);
  ns_tree_free(d);
  ns_tree_free(orig);
}

/* Decodes bytes that must be refused, with `reason` in the message and
 * nothing handed out. */
static void expect_refused_bytes(const uint8_t *data, size_t len, const char *reason, int line) {
  static ns_tree_t dummy;
  ns_tree_t *t = &dummy; /* decode must set it to NULL */
  ns_snap_meta_t meta = {0};
  why[0] = '\0';
  uint8_t *copy = g_memdup2(data, len > 0 ? len : 1); /* exactly len bytes for ASan */
  int rc = ns_snap_decode(copy, len, LEASE_MS, GRACE_MS, NOW, &t, &meta, why, sizeof why);
  g_free(copy);
  if (rc != MAYFLY_EPROTO) fprintf(stderr, "  line %d: accepted (rc %d)\n", line, rc);
  MF_ASSERT_EQ(rc, MAYFLY_EPROTO);
  CU_ASSERT_PTR_NULL(t);
  if (rc == 0) ns_tree_free(t);
  if (strstr(why, reason) == NULL || strncmp(why, "snapshot: ", 10) != 0) {
    fprintf(stderr, "  line %d: reason \"%s\" lacks \"%s\"\n", line, why, reason);
  }
  CU_ASSERT(strstr(why, reason) != NULL);
  CU_ASSERT(strncmp(why, "snapshot: ", 10) == 0);
}

static void expect_refused(const GByteArray *e, const char *reason, int line) {
  expect_refused_bytes(e->data, e->len, reason, line);
}

/* Every proper prefix is refused; so is a byte more; a bad version too;
 * and a NULL why is fine. */
static void test_every_truncation_and_extension_is_refused(void) {
  CU_ASSERT_PTR_NOT_NULL_FATAL(live_enc);
  for (guint cut = 0; cut < live_enc->len; cut++) {
    expect_refused_bytes(live_enc->data, cut, cut == 0 ? "version" : "", __LINE__);
  }
  GByteArray *more = g_byte_array_new();
  g_byte_array_append(more, live_enc->data, live_enc->len);
  g_byte_array_append(more, (const guint8 *)"x", 1);
  expect_refused(more, "left over", __LINE__);
  g_byte_array_set_size(more, live_enc->len);
  more->data[0] = 4;
  expect_refused(more, "version 4", __LINE__);
  ns_tree_t *t = NULL;
  ns_snap_meta_t meta;
  MF_ASSERT_EQ(ns_snap_decode(more->data, more->len, 1, 1, 1, &t, &meta, NULL, 0), MAYFLY_EPROTO);
  CU_ASSERT_PTR_NULL(t);
  g_byte_array_free(more, TRUE);
}

/* ---- targeted corruptions of a decoded tree, encoded again ---------------- */

typedef void (*corrupt_fn)(ns_tree_t *t);

/* Decodes the live encoding, breaks one invariant in memory, encodes the
 * result (the encoder writes what it finds) and expects the decoder to
 * refuse it for `reason`. */
static void corrupt_and_expect(corrupt_fn fn, const char *reason, int line) {
  ns_tree_t *t = decode_ok(live_enc);
  fn(t);
  GByteArray *e = g_byte_array_new();
  ns_snap_meta_t meta = {0};
  MF_ASSERT_EQ(ns_snap_encode(t, &meta, e), 0);
  expect_refused(e, reason, line);
  g_byte_array_free(e, TRUE);
  ns_tree_free(t);
}

static ns_partition_t *part0(ns_tree_t *t, const char *path) {
  ns_node_t *n = ns_tree_lookup(t, path);
  MF_ASSERT_EQ(n != NULL && n->layout.parts->len > 0, 1);
  return &g_array_index(n->layout.parts, ns_partition_t, 0);
}

static ns_repart_t *repart(ns_tree_t *t, const char *path, int64_t id) {
  ns_repart_t *r = ns_node_find_repart(ns_tree_lookup(t, path), id);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r);
  return r;
}

static ns_server_t *server(ns_tree_t *t, int32_t id) { return ns_alloc_server(t->alloc, id); }

static void c_owner_twice(ns_tree_t *t) { part0(t, "/tmp/z")->block = part0(t, "/tmp/kv1")->block; }
static void c_generation(ns_tree_t *t) { part0(t, "/tmp/z")->block.generation++; }
static void c_used(ns_tree_t *t) { server(t, 1)->used++; }
static void c_total(ns_tree_t *t) { t->alloc->blocks_total++; }
static void c_free_twice(ns_tree_t *t) {
  GArray *fs = server(t, 2)->free_stack;
  g_array_index(fs, int32_t, 0) = g_array_index(fs, int32_t, 1);
}
static void c_free_in_use(ns_tree_t *t) {
  const ns_partition_t *p = part0(t, "/tmp/z");
  ns_server_t *s = server(t, p->block.server);
  g_array_index(s->free_stack, int32_t, 0) = p->block.index;
}
static void c_unheld(ns_tree_t *t) {
  ns_server_t *s = server(t, 4);
  int32_t idx = g_array_index(s->free_stack, int32_t, s->free_stack->len - 1);
  g_array_set_size(s->free_stack, s->free_stack->len - 1);
  s->in_use[idx] = 1;
  s->used++;
  t->alloc->blocks_used++;
}
static void c_address(ns_tree_t *t) {
  g_free(server(t, 2)->address);
  server(t, 2)->address = g_strdup("ms1:7000");
}
static void c_empty_address(ns_tree_t *t) { server(t, 3)->address[0] = '\0'; }
static void c_server_id(ns_tree_t *t) { server(t, 2)->id = 7; }
static void c_gen_zero(ns_tree_t *t) {
  ns_server_t *s = server(t, 4);
  s->generation[g_array_index(s->free_stack, int32_t, 0)] = 0;
}
static void c_gen_huge(ns_tree_t *t) { server(t, 4)->generation[3] = INT64_MAX; }
static void c_reparts_on_queue(ns_tree_t *t) { ns_tree_lookup(t, "/deep/x/y/kv2")->kind = NS_KIND_QUEUE; }
static void c_repart_src(ns_tree_t *t) { repart(t, "/deep/x/y/kv2", 4)->src.generation++; }
static void c_repart_not_lost(ns_tree_t *t) {
  ns_repart_t *r = repart(t, "/deep/x/y/kv2", 4);
  r->lost = 0;
  part0(t, "/deep/x/y/kv2")->state = NS_PART_LOST;
}
static void c_split_range(ns_tree_t *t) {
  ns_node_t *n = ns_tree_lookup(t, "/jobs/a/kv");
  ns_repart_t *r = repart(t, "/jobs/a/kv", 3);
  r->lo = ns_node_part_of(n, r->src.server, r->src.index)->lo;
}
static void c_merge_not_adjacent(ns_tree_t *t) { repart(t, "/deep/x/y/kv2", 4)->lo++; }
static void c_split_dst_is_a_part(ns_tree_t *t) {
  repart(t, "/jobs/a/kv", 3)->dst = part0(t, "/tmp/kv1")->block;
}
static void c_op_id(ns_tree_t *t) { t->last_op_id = 3; }
static void c_watermarks(ns_tree_t *t) {
  ns_node_t *n = ns_tree_lookup(t, "/tmp/z");
  n->high_wm = 30;
  n->low_wm = 20;
}
static void c_wm_range(ns_tree_t *t) { ns_tree_lookup(t, "/tmp/z")->high_wm = 101; }
static void c_quota(ns_tree_t *t) { ns_tree_lookup(t, "/jobs/a/kv")->max_blocks = 4; }
static void c_initial(ns_tree_t *t) {
  ns_tree_lookup(t, "/jobs/a/kv")->initial_blocks = NS_CREATE_BLOCKS_MAX + 1;
}
static void c_initial_over_max(ns_tree_t *t) {
  ns_node_t *n = ns_tree_lookup(t, "/jobs/a/kv");
  n->initial_blocks = 5;
  n->max_blocks = 4;
}
static void c_lease(ns_tree_t *t) { ns_tree_lookup(t, "/tmp/z")->lease_ms = NS_LEASE_MAX_MS + 1; }
static void c_flags(ns_tree_t *t) { ns_tree_lookup(t, "/tmp/z")->flags = 0x2; }
static void c_version(ns_tree_t *t) { ns_tree_lookup(t, "/tmp/z")->layout.version = 0; }
static void c_counts(ns_tree_t *t) {
  t->n_dirs--;
  t->n_leaves++;
}
static void c_expired(ns_tree_t *t) { t->n_expired = -1; }
static void c_range(ns_tree_t *t) { part0(t, "/tmp/z")->hi = part0(t, "/tmp/z")->lo - 1; }
static void c_range_huge(ns_tree_t *t) { part0(t, "/tmp/z")->hi = NS_SNAP_INT_MAX + 1; }
static void c_block_size(ns_tree_t *t) { server(t, 3)->block_size = 0; }
static void c_block_size_huge(ns_tree_t *t) {
  server(t, 3)->block_size = NS_SNAP_BLOCK_SIZE_MAX + 1;
}
static void c_name_slash(ns_tree_t *t) { strcpy(ns_tree_lookup(t, "/tmp/dup1")->name, "a/b"); }
static void c_name_dots(ns_tree_t *t) { strcpy(ns_tree_lookup(t, "/tmp/dup1")->name, ".."); }
static void c_name_control(ns_tree_t *t) { ns_tree_lookup(t, "/tmp/dup1")->name[1] = '\x01'; }
static void c_name_empty(ns_tree_t *t) { ns_tree_lookup(t, "/tmp/dup1")->name[0] = '\0'; }
static void c_name_twice(ns_tree_t *t) { strcpy(ns_tree_lookup(t, "/tmp/dup2")->name, "dup1"); }

static void test_targeted_corruptions_are_refused(void) {
  CU_ASSERT_PTR_NOT_NULL_FATAL(live_enc);
  static const struct {
    corrupt_fn fn;
    const char *reason;
  } cases[] = {
      {c_owner_twice, "held twice"},
      {c_generation, "generation"},
      {c_used, "blocks are used"},
      {c_total, "the allocator says"},
      {c_free_twice, "on the free stack twice"},
      {c_free_in_use, "on the free stack but in use"},
      {c_unheld, "no namespace holds it"},
      {c_address, "repeated address \"ms1:7000\""},
      {c_empty_address, "empty address"},
      {c_server_id, "numbered 7"},
      {c_gen_zero, "block generation 0"},
      {c_gen_huge, "block generation"},
      {c_reparts_on_queue, "only kv"},
      {c_repart_src, "not a partition"},
      {c_repart_not_lost, "not marked lost"},
      {c_split_range, "upper part"},
      {c_merge_not_adjacent, "whole partition"},
      {c_split_dst_is_a_part, "held twice"},
      {c_op_id, "repartition id 4"},
      {c_watermarks, "half"},
      {c_wm_range, "high watermark 101"},
      {c_quota, "over its max_blocks"},
      {c_initial, "initial_blocks 4097"},
      {c_initial_over_max, "initial_blocks 5 is over max_blocks 4"},
      {c_lease, "lease"},
      {c_flags, "flags"},
      {c_version, "layout version 0"},
      {c_counts, "announced"},
      {c_expired, "n_expired"},
      {c_range, "partition hi"},
      {c_range_huge, "partition hi"},
      {c_block_size, "block size 0"},
      {c_block_size_huge, "block size 1125899906842625 is outside"},
      {c_name_slash, "contains '/'"},
      {c_name_dots, "'.' and '..'"},
      {c_name_control, "control character"},
      {c_name_empty, "empty"},
      {c_name_twice, "repeated"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    corrupt_and_expect(cases[i].fn, cases[i].reason, (int)i);
  }
}

/* ---- corruptions of the bytes --------------------------------------------- */

/* Offsets in a version 2 body (docs/log-format.md, "Snapshot body"). */
#define OFF_SERVERS 33 /* after version, seq, wall_ms, n_expired, last_op_id */

static void put_le(uint8_t *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* The offset of the one occurrence of a string, written as u32 length and
 * bytes, in the live encoding. */
static size_t find_str(const char *s) {
  size_t n = strlen(s);
  uint8_t pat[64];
  put_le(pat, n, 4);
  memcpy(pat + 4, s, n);
  size_t at = 0;
  int found = 0;
  for (size_t i = 0; i + n + 4 <= live_enc->len; i++) {
    if (memcmp(live_enc->data + i, pat, n + 4) == 0) {
      at = i;
      found++;
    }
  }
  MF_ASSERT_EQ(found, 1);
  return at;
}

/* The offset of blocks_total: the servers' bytes as the format lays them out. */
static size_t off_blocks_total(void) {
  size_t off = OFF_SERVERS + 4;
  for (guint i = 0; i < live->alloc->servers->len; i++) {
    const ns_server_t *s = g_ptr_array_index(live->alloc->servers, i);
    off += 4 + 4 + strlen(s->address) + 4 + strlen(s->zone) + 4 + 8 + 1 + 8 + 4 +
           (size_t)s->nblocks * 9 + 4 +
           s->free_stack->len * 4;
  }
  return off;
}

/* Copies the live encoding with n bytes at off replaced by v. */
static GByteArray *patched(size_t off, uint64_t v, int n) {
  GByteArray *e = g_byte_array_new();
  g_byte_array_append(e, live_enc->data, live_enc->len);
  put_le(e->data + off, v, n);
  return e;
}

#define EXPECT_PATCH(off, v, n, reason)          \
  do {                                           \
    GByteArray *e_ = patched((off), (v), (n));   \
    expect_refused(e_, (reason), __LINE__);      \
    g_byte_array_free(e_, TRUE);                 \
  } while (0)

static void test_forged_counts_parents_and_orders_are_refused(void) {
  CU_ASSERT_PTR_NOT_NULL_FATAL(live_enc);
  size_t total = off_blocks_total();
  /* The layout computed from the format matches the bytes. */
  GByteArray *same = patched(total, (uint64_t)live->alloc->blocks_total, 8);
  CU_ASSERT(same_bytes(same, live_enc));
  g_byte_array_free(same, TRUE);
  EXPECT_PATCH(OFF_SERVERS, UINT32_MAX, 4, "over the limit");
  EXPECT_PATCH(OFF_SERVERS, 0x7fffffff, 4, "cannot fit");
  EXPECT_PATCH(OFF_SERVERS, 0, 4, "the allocator says");
  size_t nblocks = find_str("ms1:7000") + 4 + 8 + 4; /* after the address and an empty zone */
  EXPECT_PATCH(nblocks, NS_ALLOC_MAX_BLOCKS + 1, 4, "server blocks");
  EXPECT_PATCH(nblocks, NS_ALLOC_MAX_BLOCKS, 4, "cannot fit");
  EXPECT_PATCH(nblocks, 0, 4, "server blocks 0");
  EXPECT_PATCH(find_str("ms1:7000"), 0xffffffffu, 4, "over the limit");
  EXPECT_PATCH(total + 16, (uint64_t)1 << 40, 8, "cannot fit");
  EXPECT_PATCH(total + 16, (uint64_t)-1, 8, "cannot fit");
  EXPECT_PATCH(total + 24, (uint64_t)INT64_MAX, 8, "cannot fit");
  /* Node numbers in pre-order: 1 deep, 2 x, 3 y, 4 kv2, 5 jobs, 6 a, 7 kv,
   * 8 c, 9 f, 10 tmp, 11 dup1, 12 dup2, 13 kv1, 14 z. */
  size_t tmp_parent = find_str("tmp") - 4;
  EXPECT_PATCH(tmp_parent, 4, 4, "not an earlier directory");  /* a leaf */
  EXPECT_PATCH(tmp_parent, 10, 4, "not an earlier directory"); /* itself */
  EXPECT_PATCH(tmp_parent, 500, 4, "not an earlier directory");
  EXPECT_PATCH(tmp_parent, 6, 4, "pre-order");                 /* /jobs/a, closed */
  EXPECT_PATCH(find_str("tmp") + 4, 'a' | 'b' << 8 | 'c' << 16, 3, "not sorted");
  EXPECT_PATCH(find_str("tmp"), 300, 4, "over the limit");
  size_t tags = find_str("empty") - 4;
  EXPECT_PATCH(tags, NS_TAGS_MAX + 1, 4, "over the limit");
  EXPECT_PATCH(tags, 0, 4, "");
  EXPECT_PATCH(find_str("owner") + 4, 'e' | 'm' << 8 | 'p' << 16 | 't' << 24, 4, "not sorted");
  size_t parts = find_str("map") + 7;
  EXPECT_PATCH(parts, 0x7fffffff, 4, "cannot fit");
  EXPECT_PATCH(parts, 0, 4, "");
  EXPECT_PATCH(find_str("dup1") + 4 + 4, 7, 1, "unknown kind 7");
  EXPECT_PATCH(find_str("search"), NS_TAG_VALUE_MAX + 1, 4, "over the limit");
}

/* A path of exactly NS_PATH_MAX bytes decodes; one byte more is refused. */
static void test_path_length_is_checked_against_the_limit(void) {
  ns_tree_t *t = ns_tree_new(LEASE_MS, GRACE_MS);
  GString *path = g_string_new(NULL);
  char name[251];
  memset(name, 'a', 250);
  name[250] = '\0';
  for (int i = 0; i < 16; i++) {
    name[0] = (char)('a' + i);
    g_string_append_printf(path, "/%s", name);
    ns_record_t mk = {.type = NS_REC_MKDIR, .path = path->str};
    apply_ok(t, &mk, NULL, __LINE__);
  }
  g_string_append_c(path, '/');
  while (path->len < NS_PATH_MAX) g_string_append_c(path, 'z');
  ns_record_t mk = {.type = NS_REC_MKDIR, .path = path->str};
  apply_ok(t, &mk, NULL, __LINE__);
  GByteArray *e = encode(t, 1);
  ns_tree_t *d = decode_ok(e);
  assert_same_state(t, d);
  ns_tree_free(d);
  g_byte_array_free(e, TRUE);
  /* Make the last name one byte longer, as a forged snapshot could. */
  ns_node_t *last = ns_tree_lookup(t, path->str);
  CU_ASSERT_PTR_NOT_NULL_FATAL(last);
  g_hash_table_steal(last->parent->children, last->name);
  char *longer = g_strconcat(last->name, "z", NULL);
  g_free(last->name);
  last->name = longer;
  g_hash_table_insert(last->parent->children, last->name, last);
  e = encode(t, 1);
  expect_refused(e, "longer than 4096 bytes", __LINE__);
  g_byte_array_free(e, TRUE);
  g_string_free(path, TRUE);
  ns_tree_free(t);
}

/* 100,000 namespaces (queues of one block each, in 1,000 directories)
 * round-trip; the time to encode and decode is printed, not asserted. */
static void test_a_large_tree_round_trips(void) {
  ns_tree_t *t = ns_tree_new(LEASE_MS, GRACE_MS);
  ns_record_t add = {.type = NS_REC_SERVER_ADD, .address = "big:7000", .blocks = 120000,
                     .block_size = 1 << 20, .incarnation = 1};
  apply_ok(t, &add, NULL, __LINE__);
  char path[64];
  for (int dir = 0; dir < 1000; dir++) {
    for (int leaf = 0; leaf < 100; leaf++) {
      ns_partition_t p;
      MF_ASSERT_EQ(ns_tree_plan_parts(t, NS_KIND_QUEUE, 1, &p), 0);
      snprintf(path, sizeof path, "/job%04d/queue%03d", dir, leaf);
      ns_record_t mk = {.type = NS_REC_CREATE, .path = path, .kind = NS_KIND_QUEUE,
                        .parts = &p, .nparts = 1, .wall_ms = dir};
      if (ns_tree_apply(t, &mk, NULL, why, sizeof why) != 0) {
        CU_FAIL_FATAL("create failed");
      }
    }
  }
  MF_ASSERT_EQ(t->n_leaves, 100000);
  int64_t t0 = g_get_monotonic_time();
  GByteArray *e = encode(t, 1);
  int64_t t1 = g_get_monotonic_time();
  ns_tree_t *d = decode_ok(e);
  int64_t t2 = g_get_monotonic_time();
  printf("\n    snapshot of %lld namespaces and %lld blocks: %u bytes, encode %.1f ms, "
         "decode %.1f ms (%.2f us per namespace)\n    ",
         (long long)ns_tree_count(t), (long long)t->alloc->blocks_total, e->len,
         (double)(t1 - t0) / 1000.0, (double)(t2 - t1) / 1000.0,
         (double)(t2 - t1) / (double)ns_tree_count(t));
  assert_same_state(t, d);
  GByteArray *again = encode(d, 1);
  CU_ASSERT(same_bytes(e, again));
  g_byte_array_free(again, TRUE);
  g_byte_array_free(e, TRUE);
  ns_tree_free(d);
  ns_tree_free(t);
}

/* Request ids: applied ones are remembered per client (the newest seq),
 * kept in a snapshot, and past NS_REQUESTS_MAX the clients heard of longest
 * ago go first, the same ones in every replica. */
static void test_request_ids_are_remembered_and_pruned_the_same_everywhere(void) {
  CU_ASSERT(ns_tree_request_done(live, 0xabcdef0123456789ULL, 2));
  CU_ASSERT(ns_tree_request_done(live, 0xabcdef0123456789ULL, 1));
  CU_ASSERT(!ns_tree_request_done(live, 0xabcdef0123456789ULL, 3));
  CU_ASSERT(ns_tree_request_done(live, 7, 41));
  CU_ASSERT(!ns_tree_request_done(live, 8, 1));
  CU_ASSERT(!ns_tree_request_done(live, 0, 0));
  /* Out of order (threads sharing a connection): 10 and 12 applied, then 11
   * arrives: not a repeat; after it, it is. Older than the window counts as
   * applied. */
  ns_tree_t *w = ns_tree_new(LEASE_MS, GRACE_MS);
  ns_tree_request_note(w, 5, 10, 1);
  ns_tree_request_note(w, 5, 12, 2);
  CU_ASSERT(ns_tree_request_done(w, 5, 10) && ns_tree_request_done(w, 5, 12));
  CU_ASSERT(!ns_tree_request_done(w, 5, 11));
  CU_ASSERT(!ns_tree_request_done(w, 5, 13));
  ns_tree_request_note(w, 5, 11, 3);
  CU_ASSERT(ns_tree_request_done(w, 5, 11));
  ns_tree_request_note(w, 5, 12 + NS_REQUEST_WINDOW, 4);
  CU_ASSERT(ns_tree_request_done(w, 5, 12));  /* older than the window */
  CU_ASSERT(!ns_tree_request_done(w, 5, 13)); /* inside it, never applied */
  GByteArray *ew = encode(w, 1);
  ns_tree_t *dw = decode_ok(ew);
  assert_same_state(w, dw);
  CU_ASSERT(!ns_tree_request_done(dw, 5, 13) && ns_tree_request_done(dw, 5, 12 + NS_REQUEST_WINDOW));
  ns_tree_free(dw);
  g_byte_array_free(ew, TRUE);
  ns_tree_free(w);
  ns_tree_t *a = ns_tree_new(LEASE_MS, GRACE_MS), *b = ns_tree_new(LEASE_MS, GRACE_MS);
  for (uint64_t i = 1; i <= NS_REQUESTS_MAX + 10; i++) {
    /* Clients 1..: each heard of once, the earlier ones longer ago; b gets
     * them in another order with the same times. */
    ns_tree_request_note(a, i, 5, (int64_t)i);
  }
  for (uint64_t i = NS_REQUESTS_MAX + 10; i >= 1; i--) ns_tree_request_note(b, i, 5, (int64_t)i);
  guint n = g_hash_table_size(a->requests);
  CU_ASSERT(n <= NS_REQUESTS_MAX && n >= NS_REQUESTS_MAX * 3 / 4);
  /* The newest are kept. */
  CU_ASSERT(ns_tree_request_done(a, NS_REQUESTS_MAX + 10, 5));
  CU_ASSERT(!ns_tree_request_done(a, 1, 1));
  GByteArray *ea = encode(a, 1);
  ns_tree_t *d = decode_ok(ea);
  assert_same_state(a, d);
  ns_tree_free(d);
  /* b pruned at another moment (it met the bound at its own point of the
   * order); but what it kept round-trips too. */
  GByteArray *eb = encode(b, 1);
  d = decode_ok(eb);
  assert_same_state(b, d);
  ns_tree_free(d);
  g_byte_array_free(ea, TRUE);
  g_byte_array_free(eb, TRUE);
  ns_tree_free(a);
  ns_tree_free(b);
}

static const mf_test_t tests[] = {
    {"the script builds a rich tree", test_the_script_builds_a_rich_tree},
    {"a snapshot at every record, then the rest, gives the same tree",
     test_snapshot_at_every_record_then_the_rest_gives_the_same_tree},
    {"encode appends and refuses what it cannot represent",
     test_encode_appends_and_refuses_what_it_cannot_represent},
    {"a decoded tree keeps working like the original",
     test_a_decoded_tree_keeps_working_like_the_original},
    {"every truncation and extension is refused", test_every_truncation_and_extension_is_refused},
    {"targeted corruptions are refused", test_targeted_corruptions_are_refused},
    {"forged counts, parents and orders are refused",
     test_forged_counts_parents_and_orders_are_refused},
    {"path length is checked against the limit", test_path_length_is_checked_against_the_limit},
    {"a large tree round-trips", test_a_large_tree_round_trips},
    {"request ids are remembered and pruned the same everywhere",
     test_request_ids_are_remembered_and_pruned_the_same_everywhere},
    {NULL, NULL}};

static int setup(void) {
  script = g_ptr_array_new_with_free_func((GDestroyNotify)g_byte_array_unref);
  return 0;
}

static int teardown(void) {
  g_ptr_array_free(script, TRUE);
  ns_tree_free(live);
  if (live_enc != NULL) g_byte_array_free(live_enc, TRUE);
  return 0;
}

int main(void) {
  return mf_test_run("namespaces/snapshot", setup, teardown, tests);
}
