/*
 * Unit tests for namespaces/record.c: records of every type encoded, decoded
 * and applied to a second tree rebuild exactly the tree the originals built
 * (compared through a snapshot of the whole state, the one test_tree.c uses),
 * the encoding is canonical, damaged input is refused with a reason, and the
 * same records written to the log file (directory/wal.c) and loaded back
 * rebuild the tree too.
 */
#include <string.h>

#include <glib/gstdio.h>

#include "common/error.h"
#include "directory/wal.h"
#include "mf_test.h"
#include "namespaces/record.h"
#include "namespaces/tree.h"
#include "tree_snapshot.h"

#define LEASE_MS 1000
#define GRACE_MS 100

static char why[512];

/* Every encoding made by the replay test, in order, for the tests after it,
 * and the snapshot of the tree they built. */
static GPtrArray *encodings; /* GByteArray * */
static char *live_final;

/* Applies rec to `live`; encodes it, decodes it and applies the copy to
 * `replay`; then checks the copy re-encodes to the same bytes and that both
 * trees are equal. */
static void apply_both(ns_tree_t *live, ns_tree_t *replay, const ns_record_t *rec, int line) {
  int rc = ns_tree_apply(live, rec, NULL, why, sizeof why);
  if (rc != 0) fprintf(stderr, "  line %d: live apply failed: %s\n", line, why);
  MF_ASSERT_EQ(rc, 0);
  GByteArray *enc = g_byte_array_new();
  MF_ASSERT_EQ(ns_rec_encode(rec, enc), 0);
  ns_rec_buf_t b;
  ns_rec_buf_init(&b);
  rc = ns_rec_decode(enc->data, enc->len, &b, why, sizeof why);
  if (rc != 0) fprintf(stderr, "  line %d: decode failed: %s\n", line, why);
  MF_ASSERT_EQ(rc, 0);
  GByteArray *again = g_byte_array_new();
  MF_ASSERT_EQ(ns_rec_encode(&b.rec, again), 0);
  CU_ASSERT(again->len == enc->len && memcmp(again->data, enc->data, enc->len) == 0);
  g_byte_array_free(again, TRUE);
  rc = ns_tree_apply(replay, &b.rec, NULL, why, sizeof why);
  if (rc != 0) fprintf(stderr, "  line %d: replayed apply failed: %s\n", line, why);
  MF_ASSERT_EQ(rc, 0);
  ns_rec_buf_clear(&b);
  char *a = tree_snapshot(live), *c = tree_snapshot(replay);
  if (strcmp(a, c) != 0) fprintf(stderr, "  line %d:\n  live:\n%s  replayed:\n%s", line, a, c);
  CU_ASSERT_STRING_EQUAL(a, c);
  g_free(a);
  g_free(c);
  g_ptr_array_add(encodings, enc);
}

#define APPLY(...)                                        \
  do {                                                    \
    ns_record_t r_ = {__VA_ARGS__};                       \
    apply_both(live, replay, &r_, __LINE__);              \
  } while (0)

static void test_decoded_records_of_every_type_rebuild_the_same_tree(void) {
  ns_tree_t *live = ns_tree_new(LEASE_MS, GRACE_MS);
  ns_tree_t *replay = ns_tree_new(LEASE_MS, GRACE_MS);
  uint32_t seen = 0; /* bit per record type */
#define SEEN(t) seen |= 1u << (t)
  APPLY(.type = NS_REC_SERVER_ADD, .address = "ms1:7000", .blocks = 8, .block_size = 1024,
        .incarnation = 0x1111);
  APPLY(.type = NS_REC_SERVER_ADD, .address = "ms2:7000", .blocks = 8, .block_size = 1024,
        .gen_floor = 40, .incarnation = 0x2222);
  SEEN(NS_REC_SERVER_ADD);
  APPLY(.type = NS_REC_MKDIR, .flags = NS_REC_PARENTS, .now_ms = 5, .wall_ms = 1700000000001LL,
        .path = "/jobs/a/b");
  APPLY(.type = NS_REC_MKDIR, .now_ms = 6, .wall_ms = 1700000000002LL, .path = "/jobs/c",
        .lease_ms = 5000);
  SEEN(NS_REC_MKDIR);
  GHashTable *tags = g_hash_table_new(g_str_hash, g_str_equal);
  g_hash_table_insert(tags, "owner", "alice");
  g_hash_table_insert(tags, "stage", "map");
  g_hash_table_insert(tags, "empty", "");
  ns_partition_t kv[2], file[3], queue[1], seg, split, split2;
  MF_ASSERT_EQ(ns_tree_plan_parts(live, NS_KIND_KV, 2, kv), 0);
  APPLY(.type = NS_REC_CREATE, .now_ms = 7, .wall_ms = 1700000000003LL, .path = "/jobs/a/kv",
        .kind = NS_KIND_KV, .lease_ms = 3000, .node_flags = NS_FLAG_PINNED, .tags = tags,
        .parts = kv, .nparts = 2, .max_blocks = 5, .high_wm = 80, .low_wm = 10);
  g_hash_table_destroy(tags);
  MF_ASSERT_EQ(ns_tree_plan_parts(live, NS_KIND_FILE, 3, file), 0);
  APPLY(.type = NS_REC_CREATE, .now_ms = 8, .wall_ms = 1700000000004LL, .path = "/jobs/f",
        .kind = NS_KIND_FILE, .parts = file, .nparts = 3);
  MF_ASSERT_EQ(ns_tree_plan_parts(live, NS_KIND_QUEUE, 1, queue), 0);
  APPLY(.type = NS_REC_CREATE, .now_ms = 9, .wall_ms = 1700000000005LL, .path = "/jobs/c/q",
        .kind = NS_KIND_QUEUE, .parts = queue, .nparts = 1);
  SEEN(NS_REC_CREATE);
  APPLY(.type = NS_REC_RENAME, .now_ms = 10, .path = "/jobs/c/q", .path2 = "/jobs/a/b/q2");
  SEEN(NS_REC_RENAME);
  const char *paths[] = {"/jobs/a", "/jobs/f", "/no/such/path"};
  APPLY(.type = NS_REC_RENEW, .now_ms = 11, .paths = paths, .npaths = 3);
  SEEN(NS_REC_RENEW);
  MF_ASSERT_EQ(ns_tree_plan_append(live, ns_tree_lookup(live, "/jobs/a/b/q2"), 0, 0, &seg), 0);
  APPLY(.type = NS_REC_ADD_PART, .now_ms = 12, .path = "/jobs/a/b/q2", .parts = &seg,
        .nparts = 1);
  SEEN(NS_REC_ADD_PART);
  APPLY(.type = NS_REC_REMOVE_PART, .now_ms = 13, .path = "/jobs/a/b/q2", .part_index = 0);
  SEEN(NS_REC_REMOVE_PART);
  APPLY(.type = NS_REC_SERVER_STATE, .server_id = 2, .up = 0);
  APPLY(.type = NS_REC_SERVER_STATE, .server_id = 2, .up = 1);
  SEEN(NS_REC_SERVER_STATE);
  ns_node_t *kvn = ns_tree_lookup(live, "/jobs/a/kv");
  MF_ASSERT_EQ(ns_tree_plan_append(live, kvn, 10000, 32768, &split), 0);
  APPLY(.type = NS_REC_REPART_BEGIN, .now_ms = 14, .path = "/jobs/a/kv", .op_id = 1,
        .block = kv[0].block, .block2 = split.block, .lo = 10000, .hi = 32768);
  SEEN(NS_REC_REPART_BEGIN);
  APPLY(.type = NS_REC_REPART_END, .now_ms = 15, .path = "/jobs/a/kv", .op_id = 1,
        .flags = NS_REC_COMMIT);
  SEEN(NS_REC_REPART_END);
  APPLY(.type = NS_REC_REPART_BEGIN, .now_ms = 16, .path = "/jobs/a/kv", .op_id = 2,
        .flags = NS_REC_MERGE, .block = split.block, .block2 = kv[0].block, .lo = 10000,
        .hi = 32768);
  APPLY(.type = NS_REC_REPART_END, .now_ms = 17, .path = "/jobs/a/kv", .op_id = 2);
  MF_ASSERT_EQ(ns_tree_plan_append(live, kvn, 50000, 65536, &split2), 0);
  APPLY(.type = NS_REC_REPART_BEGIN, .now_ms = 18, .path = "/jobs/a/kv", .op_id = 3,
        .block = kv[1].block, .block2 = split2.block, .lo = 50000, .hi = 65536);
  APPLY(.type = NS_REC_TRUNCATE, .now_ms = 19, .path = "/jobs/f", .lo = 1024);
  SEEN(NS_REC_TRUNCATE);
  /* ms1 restarted: its partitions are lost. */
  APPLY(.type = NS_REC_SERVER_ADD, .address = "ms1:7000", .blocks = 8, .block_size = 1024,
        .incarnation = 0x3333);
  APPLY(.type = NS_REC_REMOVE, .now_ms = 20, .path = "/jobs/a/b/q2");
  APPLY(.type = NS_REC_REMOVE, .flags = NS_REC_EXPIRED, .now_ms = 21, .path = "/jobs/f");
  APPLY(.type = NS_REC_MKDIR, .now_ms = 22, .wall_ms = 1700000000006LL, .path = "/tmp");
  APPLY(.type = NS_REC_REMOVE, .flags = NS_REC_RECURSIVE, .now_ms = 23, .path = "/jobs/a/b");
  SEEN(NS_REC_REMOVE);
#undef SEEN
  MF_ASSERT_EQ(seen, (1u << (NS_REC_TRUNCATE + 1)) - 1);
  /* The state is not trivial: the kv namespace lost partitions and a split is under way. */
  CU_ASSERT(ns_node_lost_parts(ns_tree_lookup(replay, "/jobs/a/kv")) > 0);
  CU_ASSERT_PTR_NOT_NULL(ns_node_find_repart(ns_tree_lookup(replay, "/jobs/a/kv"), 3));
  live_final = tree_snapshot(live);
  ns_tree_free(live);
  ns_tree_free(replay);
}
#undef APPLY

/* Every proper prefix of every encoding, and every encoding with a byte
 * more, is refused with a reason; the decoder leaves nothing allocated. */
static void test_truncated_or_extended_encodings_are_refused(void) {
  CU_ASSERT_FATAL(encodings->len > 20);
  ns_rec_buf_t b;
  ns_rec_buf_init(&b);
  for (guint i = 0; i < encodings->len; i++) {
    GByteArray *e = g_ptr_array_index(encodings, i);
    for (guint cut = 0; cut < e->len; cut++) {
      uint8_t *copy = g_memdup2(e->data, cut > 0 ? cut : 1);
      why[0] = '\0';
      MF_ASSERT_EQ(ns_rec_decode(copy, cut, &b, why, sizeof why), MAYFLY_EPROTO);
      CU_ASSERT(strstr(why, "record:") != NULL);
      CU_ASSERT_PTR_NULL(b.path);
      g_free(copy);
    }
    GByteArray *more = g_byte_array_new();
    g_byte_array_append(more, e->data, e->len);
    g_byte_array_append(more, (const guint8 *)"x", 1);
    why[0] = '\0';
    MF_ASSERT_EQ(ns_rec_decode(more->data, more->len, &b, why, sizeof why), MAYFLY_EPROTO);
    CU_ASSERT(strstr(why, "left over") != NULL);
    g_byte_array_free(more, TRUE);
  }
}

/* Offsets in a version 2 encoding, the same as in version 1 (docs/log-format.md). */
#define OFF_TYPE 1
#define OFF_PATH 22 /* after version, type, flags, now_ms, wall_ms */

static GByteArray *encode(const ns_record_t *r) {
  GByteArray *e = g_byte_array_new();
  MF_ASSERT_EQ(ns_rec_encode(r, e), 0);
  return e;
}

static void expect_refused(GByteArray *e, const char *reason) {
  ns_rec_buf_t b;
  ns_rec_buf_init(&b);
  why[0] = '\0';
  MF_ASSERT_EQ(ns_rec_decode(e->data, e->len, &b, why, sizeof why), MAYFLY_EPROTO);
  if (strstr(why, reason) == NULL) fprintf(stderr, "  reason \"%s\" lacks \"%s\"\n", why, reason);
  CU_ASSERT(strstr(why, reason) != NULL);
  g_byte_array_free(e, TRUE);
}

static void test_bad_versions_types_lengths_and_strings_are_refused(void) {
  ns_record_t mk = {.type = NS_REC_MKDIR, .path = "/abc"};
  GByteArray *e = encode(&mk);
  e->data[0] = 4;
  expect_refused(e, "version 4");
  e = encode(&mk);
  e->data[0] = 0;
  expect_refused(e, "version 0");
  e = encode(&mk);
  e->data[OFF_TYPE] = NS_REC_TYPE_LAST + 1;
  expect_refused(e, "unknown record type");
  e = encode(&mk);
  e->data[OFF_PATH + 4 + 1] = '\0'; /* "/\0bc" */
  expect_refused(e, "NUL");
  e = encode(&mk);
  e->data[OFF_PATH + 2] = 0x10; /* a length of 1 MiB */
  expect_refused(e, "over the limit");
  e = encode(&mk);
  e->data[OFF_PATH] = 200; /* longer than the input */
  expect_refused(e, "truncated");

  /* Counts that cannot fit in the input are refused before allocating. */
  const char *paths[] = {"/a"};
  ns_record_t renew = {.type = NS_REC_RENEW, .paths = paths, .npaths = 1};
  e = encode(&renew);
  /* The path count sits just before the one path "/a": find it. */
  guint at = 0;
  for (guint i = 0; i + 10 <= e->len; i++) {
    if (memcmp(e->data + i, "\x01\0\0\0\x02\0\0\0/a", 10) == 0) at = i;
  }
  CU_ASSERT_FATAL(at > 0);
  e->data[at + 3] = 0x00;
  e->data[at + 2] = 0x0f; /* 983,041 paths */
  expect_refused(e, "cannot fit");

  /* Tags must come sorted and distinct. */
  GHashTable *tags = g_hash_table_new(g_str_hash, g_str_equal);
  g_hash_table_insert(tags, "a", "1");
  g_hash_table_insert(tags, "b", "2");
  ns_record_t cr = {.type = NS_REC_CREATE, .path = "/x", .kind = NS_KIND_FILE, .tags = tags};
  e = encode(&cr);
  guint ka = 0, kb = 0;
  for (guint i = 0; i + 5 <= e->len; i++) {
    if (memcmp(e->data + i, "\x01\0\0\0a", 5) == 0) ka = i + 4;
    if (memcmp(e->data + i, "\x01\0\0\0b", 5) == 0) kb = i + 4;
  }
  CU_ASSERT_FATAL(ka > 0 && kb > ka);
  e->data[ka] = 'b';
  e->data[kb] = 'a';
  expect_refused(e, "not sorted");
  e = encode(&cr); /* a repeated key: "a", "a" */
  e->data[kb] = 'a';
  expect_refused(e, "not sorted and distinct");
  g_hash_table_destroy(tags);
}

/* The encoder refuses what it cannot represent and leaves out untouched. */
static void test_the_encoder_refuses_what_it_cannot_represent(void) {
  GByteArray *out = g_byte_array_new();
  g_byte_array_append(out, (const guint8 *)"keep", 4);
  ns_record_t bad_type = {.type = (ns_rec_type_t)99, .path = "/a"};
  MF_ASSERT_EQ(ns_rec_encode(&bad_type, out), MAYFLY_EINVAL);
  char *long_path = g_malloc(NS_REC_STR_MAX + 2);
  memset(long_path, 'a', NS_REC_STR_MAX + 1);
  long_path[0] = '/';
  long_path[NS_REC_STR_MAX + 1] = '\0';
  ns_record_t too_long = {.type = NS_REC_MKDIR, .path = long_path};
  MF_ASSERT_EQ(ns_rec_encode(&too_long, out), MAYFLY_EINVAL);
  g_free(long_path);
  const char *paths[] = {"/a", NULL};
  ns_record_t null_path = {.type = NS_REC_RENEW, .paths = paths, .npaths = 2};
  MF_ASSERT_EQ(ns_rec_encode(&null_path, out), MAYFLY_EINVAL);
  MF_ASSERT_EQ(out->len, 4);
  CU_ASSERT(memcmp(out->data, "keep", 4) == 0);
  g_byte_array_free(out, TRUE);
}

/* Decodes each record the log hands over and applies it. */
static int apply_logged(const uint8_t *data, uint32_t len, int64_t offset, void *ud) {
  ns_rec_buf_t b;
  ns_rec_buf_init(&b);
  int rc = ns_rec_decode(data, len, &b, why, sizeof why);
  if (rc == 0) rc = ns_tree_apply(ud, &b.rec, NULL, why, sizeof why);
  if (rc != 0) fprintf(stderr, "  record at offset %lld: %s\n", (long long)offset, why);
  ns_rec_buf_clear(&b);
  return rc;
}

/* The same records through the log file (directory/wal.c), in batches of
 * 1, 2, 3, ..., loaded and applied to an empty tree: the same tree again. */
static void test_records_through_the_log_file_rebuild_the_same_tree(void) {
  CU_ASSERT_PTR_NOT_NULL_FATAL(live_final);
  char *tmp = g_dir_make_tmp("mayfly-rec-XXXXXX", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(tmp);
  dir_wal_t *w;
  dir_wal_load_result_t res;
  MF_ASSERT_EQ(dir_wal_open(tmp, "wal.log", &w, why, sizeof why), 0);
  MF_ASSERT_EQ(dir_wal_load(w, 0, NULL, NULL, &res, why, sizeof why), 0);
  guint k = 0;
  for (guint batch = 1; k < encodings->len; batch++) {
    dir_wal_rec_t v[64];
    guint n = MIN(batch, encodings->len - k);
    for (guint i = 0; i < n; i++) {
      GByteArray *e = g_ptr_array_index(encodings, k + i);
      v[i] = (dir_wal_rec_t){e->data, e->len};
    }
    MF_ASSERT_EQ(dir_wal_append(w, v, n, why, sizeof why), 0);
    k += n;
  }
  dir_wal_close(w);
  ns_tree_t *t = ns_tree_new(LEASE_MS, GRACE_MS);
  MF_ASSERT_EQ(dir_wal_open(tmp, "wal.log", &w, why, sizeof why), 0);
  MF_ASSERT_EQ(dir_wal_load(w, 0, apply_logged, t, &res, why, sizeof why), 0);
  MF_ASSERT_EQ(res.records, (int64_t)encodings->len);
  dir_wal_close(w);
  char *got = tree_snapshot(t);
  CU_ASSERT_STRING_EQUAL(got, live_final);
  g_free(got);
  ns_tree_free(t);
  char *file = g_build_filename(tmp, "wal.log", NULL);
  CU_ASSERT_EQUAL(g_unlink(file), 0);
  CU_ASSERT_EQUAL(g_rmdir(tmp), 0);
  g_free(file);
  g_free(tmp);
}

static const mf_test_t tests[] = {
    {"decoded records of every type rebuild the same tree",
     test_decoded_records_of_every_type_rebuild_the_same_tree},
    {"truncated or extended encodings are refused",
     test_truncated_or_extended_encodings_are_refused},
    {"bad versions, types, lengths and strings are refused",
     test_bad_versions_types_lengths_and_strings_are_refused},
    {"the encoder refuses what it cannot represent",
     test_the_encoder_refuses_what_it_cannot_represent},
    {"records through the log file rebuild the same tree",
     test_records_through_the_log_file_rebuild_the_same_tree},
    {NULL, NULL}};

static int setup(void) {
  encodings = g_ptr_array_new_with_free_func((GDestroyNotify)g_byte_array_unref);
  return 0;
}

static int teardown(void) {
  g_ptr_array_free(encodings, TRUE);
  g_free(live_final);
  return 0;
}

int main(void) {
  return mf_test_run("namespaces/record", setup, teardown, tests);
}
