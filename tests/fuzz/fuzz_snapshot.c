/*
 * Fuzz target for the snapshot decoder (namespaces/snapshot.c), fed
 * arbitrary bytes as a snapshot body.
 *
 * A decode either fails with MAYFLY_EPROTO, a reason and no tree, or
 * succeeds, and then the encoding of the decoded tree must be exactly the
 * input (the encoding is canonical) and the tree must be consistent enough
 * to be used: every namespace grows by a block, a partition of each kv
 * namespace is split, a create is planned and applied, every begun
 * repartition is rolled back, the reaper runs past every lease and every remaining
 * namespace is removed; all of these must succeed without tripping a check
 * (under the sanitizers, without a bad access), and at the end every block
 * of every server must be free and on its free stack exactly once. Any
 * wrong answer aborts. The same bytes also go through the snapshot file's
 * reader (directory/snapfile.c): raw, where they must be refused unless
 * they happen to be a whole valid file; inside a valid header, where the
 * reader must agree with the body decoder; and with one header byte
 * changed, where it must refuse. The counters tell the replay driver which outcomes
 * its inputs reached.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "directory/snapfile.h"
#include "fz_check.h"
#include "namespaces/snapshot.h"
#include "namespaces/tree.h"

long fuzz_snap_ok, fuzz_snap_refused, fuzz_snap_created, fuzz_snap_rolled_back,
    fuzz_snap_removed, fuzz_snap_grown, fuzz_snap_split;

#define NOW 1000000
#define LEASE_MS 1000
#define GRACE_MS 10

typedef struct {
  GPtrArray *paths; /* char *, g_free */
  GArray *ids;      /* int64_t, one per path */
} reparts_t;

static void collect_reparts(ns_node_t *n, void *ud) {
  reparts_t *r = ud;
  for (guint i = 0; n->reparts != NULL && i < n->reparts->len; i++) {
    g_ptr_array_add(r->paths, ns_node_path(n));
    g_array_append_val(r->ids, g_array_index(n->reparts, ns_repart_t, i).id);
  }
}

static void collect_leaves(ns_node_t *n, void *ud) {
  if (n->kind != NS_KIND_DIRECTORY) g_ptr_array_add(ud, n);
}

/* Grows every leaf by a block (the next range after its last one) and
 * splits the first live, idle partition of each kv namespace in two,
 * committed; the tree's own answers (quota, no space, no server up) are
 * fine, anything else is not. */
static void grow_and_split(ns_tree_t *t) {
  char why[256];
  GPtrArray *leaves = g_ptr_array_new();
  ns_tree_walk(t->root, collect_leaves, leaves);
  for (guint i = 0; i < leaves->len; i++) {
    ns_node_t *n = g_ptr_array_index(leaves, i);
    char *path = ns_node_path(n);
    ns_partition_t p;
    if (ns_tree_plan_append(t, n, 0, 0, &p) == 0) {
      ns_record_t add = {.type = NS_REC_ADD_PART, .now_ms = NOW, .path = path, .parts = &p,
                         .nparts = 1};
      int rc = ns_tree_apply(t, &add, NULL, why, sizeof why);
      FZ_CHECK(rc == 0 || rc == MAYFLY_EQUOTA);
      if (rc == 0) fuzz_snap_grown++;
    }
    for (guint k = 0; n->kind == NS_KIND_KV && k < n->layout.parts->len; k++) {
      const ns_partition_t src = g_array_index(n->layout.parts, ns_partition_t, k);
      if (src.state != NS_PART_LIVE || src.hi - src.lo < 2 ||
          ns_node_block_busy(n, src.block.server, src.block.index)) {
        continue;
      }
      int64_t mid = src.lo + (src.hi - src.lo) / 2;
      if (ns_tree_plan_append(t, n, mid, src.hi, &p) != 0) break;
      ns_record_t begin = {.type = NS_REC_REPART_BEGIN, .now_ms = NOW, .path = path,
                           .op_id = t->last_op_id + 1, .block = src.block, .block2 = p.block,
                           .lo = mid, .hi = src.hi};
      int rc = ns_tree_apply(t, &begin, NULL, why, sizeof why);
      FZ_CHECK(rc == 0 || rc == MAYFLY_EQUOTA);
      if (rc == 0) {
        ns_record_t end = {.type = NS_REC_REPART_END, .now_ms = NOW, .path = path,
                           .op_id = begin.op_id, .flags = NS_REC_COMMIT};
        FZ_CHECK(ns_tree_apply(t, &end, NULL, why, sizeof why) == 0);
        fuzz_snap_split++;
      }
      break;
    }
    g_free(path);
  }
  g_ptr_array_free(leaves, TRUE);
}

/* Uses an accepted tree the way the directory would, then checks that
 * removing everything gave every block back. */
static void exercise(ns_tree_t *t, const uint8_t *data, size_t size) {
  char why[256];
  /* The decoder rebuilt the subtree counts (tenant quotas); they stay
   * right through every change below. */
  FZ_CHECK(ns_tree_check_counts(t, why, sizeof why) == 0);
  grow_and_split(t);
  FZ_CHECK(ns_tree_check_counts(t, why, sizeof why) == 0);
  /* A create of 1-3 blocks of a kind chosen by the input. */
  ns_kind_t kind = (ns_kind_t)(1 + (size > 0 ? data[size - 1] % 3 : 0));
  int nb = 1 + (int)(size % 3);
  ns_partition_t parts[3];
  if (ns_tree_plan_parts(t, kind, nb, parts) == 0) {
    ns_record_t mk = {.type = NS_REC_CREATE, .flags = 0, .now_ms = NOW, .path = "/fuzz/new",
                      .kind = kind, .parts = parts, .nparts = (size_t)nb};
    int rc = ns_tree_apply(t, &mk, NULL, why, sizeof why);
    FZ_CHECK(rc == 0 || rc == MAYFLY_ENOTDIR || rc == MAYFLY_EEXIST);
    if (rc == 0) fuzz_snap_created++;
  }
  /* Every begun repartition rolls back. */
  reparts_t r = {g_ptr_array_new_with_free_func(g_free), g_array_new(FALSE, FALSE, 8)};
  ns_tree_walk(t->root, collect_reparts, &r);
  for (guint i = 0; i < r.paths->len; i++) {
    ns_record_t end = {.type = NS_REC_REPART_END, .now_ms = NOW,
                       .path = g_ptr_array_index(r.paths, i),
                       .op_id = g_array_index(r.ids, int64_t, i)};
    FZ_CHECK(ns_tree_apply(t, &end, NULL, why, sizeof why) == 0);
    fuzz_snap_rolled_back++;
  }
  g_ptr_array_free(r.paths, TRUE);
  g_array_free(r.ids, TRUE);
  /* The reaper, past every lease, then the rest (pinned) by hand. */
  ns_effects_t fx;
  ns_effects_init(&fx);
  ns_tree_reap(t, NOW + NS_LEASE_MAX_MS + GRACE_MS + 1, &fx);
  GPtrArray *kids = ns_node_sorted_children(t->root);
  for (guint i = 0; i < kids->len; i++) {
    char *path = ns_node_path(g_ptr_array_index(kids, i));
    ns_record_t rm = {.type = NS_REC_REMOVE, .flags = NS_REC_RECURSIVE, .path = path};
    FZ_CHECK(ns_tree_apply(t, &rm, &fx, why, sizeof why) == 0);
    g_free(path);
  }
  g_ptr_array_free(kids, TRUE);
  fuzz_snap_removed += fx.removed->len;
  ns_effects_clear(&fx);
  FZ_CHECK(t->n_dirs == 0 && t->n_leaves == 0);
  FZ_CHECK(t->alloc->blocks_used == 0);
  FZ_CHECK(t->root->sub_blocks == 0 && t->root->sub_leaves == 0);
  for (guint i = 0; i < t->alloc->servers->len; i++) {
    const ns_server_t *s = g_ptr_array_index(t->alloc->servers, i);
    FZ_CHECK(s->used == 0 && s->free_stack->len == (guint)s->nblocks);
    uint8_t *seen = g_new0(uint8_t, (gsize)s->nblocks);
    for (guint k = 0; k < s->free_stack->len; k++) {
      int32_t idx = g_array_index(s->free_stack, int32_t, k);
      FZ_CHECK(idx >= 0 && idx < s->nblocks && !seen[idx] && !s->in_use[idx] &&
            s->owner[idx] == NULL);
      seen[idx] = 1;
    }
    g_free(seen);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* The file reader over raw bytes, and over the body inside a header (intact
 * and with byte `flip` of it changed): returns whether the intact file was
 * accepted. */
static int check_file(const uint8_t *data, size_t size) {
  char why[512];
  ns_tree_t *t = NULL;
  ns_snap_meta_t meta;
  if (dir_snapfile_parse(data, size, "raw", LEASE_MS, GRACE_MS, NOW, &t, &meta, why,
                         sizeof why) == 0) {
    ns_tree_free(t);
  } else {
    FZ_CHECK(t == NULL);
  }
  uint8_t *file = g_malloc(DIR_SNAP_HEADER_SIZE + size);
  dir_snapfile_header(data, size, file);
  if (size > 0) memcpy(file + DIR_SNAP_HEADER_SIZE, data, size);
  int ok = dir_snapfile_parse(file, DIR_SNAP_HEADER_SIZE + size, "wrapped", LEASE_MS, GRACE_MS,
                              NOW, &t, &meta, why, sizeof why) == 0;
  ns_tree_free(t);
  t = NULL;
  size_t flip = size > 0 ? data[0] % DIR_SNAP_HEADER_SIZE : 0;
  file[flip] ^= 0x40;
  FZ_CHECK(dir_snapfile_parse(file, DIR_SNAP_HEADER_SIZE + size, "flipped", LEASE_MS, GRACE_MS,
                           NOW, &t, &meta, why, sizeof why) == MAYFLY_EPROTO);
  FZ_CHECK(t == NULL);
  g_free(file);
  return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char why[512] = "";
  ns_tree_t *t = NULL;
  ns_snap_meta_t meta;
  int file_ok = check_file(data, size);
  int rc = ns_snap_decode(data, size, LEASE_MS, GRACE_MS, NOW, &t, &meta, why, sizeof why);
  FZ_CHECK(file_ok == (rc == 0));
  if (rc != 0) {
    FZ_CHECK(rc == MAYFLY_EPROTO);
    FZ_CHECK(t == NULL);
    FZ_CHECK(strncmp(why, "snapshot: ", 10) == 0);
    fuzz_snap_refused++;
    return 0;
  }
  FZ_CHECK(t != NULL);
  GByteArray *again = g_byte_array_new();
  FZ_CHECK(ns_snap_encode(t, &meta, again) == 0);
  if (data[0] == NS_SNAP_VERSION) {
    FZ_CHECK(again->len == size && memcmp(again->data, data, size) == 0);
  } else {
    /* An older version re-encodes as the current one, which is canonical. */
    ns_tree_t *t2 = NULL;
    ns_snap_meta_t meta2;
    FZ_CHECK(again->data[0] == NS_SNAP_VERSION);
    FZ_CHECK(ns_snap_decode(again->data, again->len, LEASE_MS, GRACE_MS, NOW, &t2, &meta2, why,
                            sizeof why) == 0);
    GByteArray *third = g_byte_array_new();
    FZ_CHECK(ns_snap_encode(t2, &meta2, third) == 0);
    FZ_CHECK(third->len == again->len && memcmp(third->data, again->data, again->len) == 0);
    g_byte_array_free(third, TRUE);
    ns_tree_free(t2);
  }
  g_byte_array_free(again, TRUE);
  fuzz_snap_ok++;
  exercise(t, data, size);
  ns_tree_free(t);
  return 0;
}
