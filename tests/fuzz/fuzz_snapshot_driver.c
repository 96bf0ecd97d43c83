/*
 * Replays the snapshot fuzz target (fuzz_snapshot.c) without libFuzzer.
 *
 * The seeds are snapshots of trees built through records (an empty tree,
 * servers alone, a tree with lost partitions and begun splits and merges, a
 * wide and deep tree of every kind); each must decode. Then come
 * deterministic mutations of two sorts: of the bytes (bit flips, random
 * bytes, truncations, duplicated and deleted ranges, splices of another
 * seed, u32 and i64 fields rewritten to lie, zero tails), and of a decoded
 * seed in memory, encoded again (a block, generation, in_use flag, free
 * stack entry, partition, repartition, limit or counter changed), which
 * reach the decoder's consistency checks with a well-formed body. Every
 * input is handed over in a heap buffer of exactly its size, so under
 * AddressSanitizer a read past the end is reported. The target aborts on any
 * wrong answer; this program exits 0 only when every input passed and every
 * outcome was reached.
 *
 * Usage: fuzz_snapshot_replay [ROUNDS] [--corpus DIR]; with --corpus the
 * seeds are also written to DIR, one file each, to start a libFuzzer run.
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "namespaces/snapshot.h"
#include "namespaces/tree.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
extern long fuzz_snap_ok, fuzz_snap_refused, fuzz_snap_created, fuzz_snap_rolled_back,
    fuzz_snap_removed, fuzz_snap_grown, fuzz_snap_split;

#define LEASE_MS 1000
#define GRACE_MS 10

static GPtrArray *seeds; /* GByteArray * */

static void must(int rc, const char *what) {
  if (rc != 0) {
    fprintf(stderr, "fuzz_snapshot: building the seeds: %s failed (%d)\n", what, rc);
    exit(1);
  }
}

static void apply(ns_tree_t *t, ns_record_t rec) {
  char why[256];
  int rc = ns_tree_apply(t, &rec, NULL, why, sizeof why);
  if (rc != 0) fprintf(stderr, "fuzz_snapshot: seed record: %s\n", why);
  must(rc, "a seed record");
}

static void create(ns_tree_t *t, const char *path, ns_kind_t kind, int n, ns_record_t rec) {
  ns_partition_t parts[8];
  must(ns_tree_plan_parts(t, kind, n, parts), "planning");
  rec.type = NS_REC_CREATE;
  rec.path = path;
  rec.kind = kind;
  rec.parts = parts;
  rec.nparts = (size_t)n;
  apply(t, rec);
}

static void add_seed(const ns_tree_t *t, int64_t seq) {
  GByteArray *e = g_byte_array_new();
  ns_snap_meta_t meta = {.seq = seq, .wall_ms = 1700000000000LL + seq};
  must(ns_snap_encode(t, &meta, e), "encoding a seed");
  g_ptr_array_add(seeds, e);
}

static ns_tree_t *rich_tree(void) {
  ns_tree_t *t = ns_tree_new(LEASE_MS, GRACE_MS);
  apply(t, (ns_record_t){.type = NS_REC_SERVER_ADD, .address = "ms1:7000", .blocks = 6,
                         .block_size = 1024, .incarnation = 1});
  apply(t, (ns_record_t){.type = NS_REC_SERVER_ADD, .address = "ms2:7000", .blocks = 6,
                         .block_size = 2048, .gen_floor = 9, .incarnation = 2});
  GHashTable *tags = g_hash_table_new(g_str_hash, g_str_equal);
  g_hash_table_insert(tags, "a", "1");
  g_hash_table_insert(tags, "b", "");
  create(t, "/j/kv", NS_KIND_KV, 2,
         (ns_record_t){.lease_ms = 300, .node_flags = NS_FLAG_PINNED, .tags = tags,
                       .max_blocks = 5, .high_wm = 70, .low_wm = 20});
  g_hash_table_destroy(tags);
  create(t, "/j/f", NS_KIND_FILE, 2, (ns_record_t){.wall_ms = 5});
  create(t, "/q", NS_KIND_QUEUE, 1, (ns_record_t){0});
  create(t, "/m/kv", NS_KIND_KV, 2, (ns_record_t){0});
  ns_node_t *kv = ns_tree_lookup(t, "/j/kv"), *mkv = ns_tree_lookup(t, "/m/kv");
  ns_partition_t k0 = g_array_index(kv->layout.parts, ns_partition_t, 0);
  ns_partition_t k1 = g_array_index(kv->layout.parts, ns_partition_t, 1);
  ns_partition_t m0 = g_array_index(mkv->layout.parts, ns_partition_t, 0);
  ns_partition_t m1 = g_array_index(mkv->layout.parts, ns_partition_t, 1);
  ns_partition_t split, split2;
  must(ns_tree_plan_append(t, kv, 1000, k0.hi, &split), "planning a split");
  apply(t, (ns_record_t){.type = NS_REC_REPART_BEGIN, .path = "/j/kv", .op_id = 1,
                         .block = k0.block, .block2 = split.block, .lo = 1000, .hi = k0.hi});
  must(ns_tree_plan_append(t, kv, 40000, k1.hi, &split2), "planning a split");
  apply(t, (ns_record_t){.type = NS_REC_REPART_BEGIN, .path = "/j/kv", .op_id = 2,
                         .block = k1.block, .block2 = split2.block, .lo = 40000, .hi = k1.hi});
  apply(t, (ns_record_t){.type = NS_REC_REPART_END, .path = "/j/kv", .op_id = 2,
                         .flags = NS_REC_COMMIT});
  apply(t, (ns_record_t){.type = NS_REC_REPART_BEGIN, .path = "/m/kv", .op_id = 3,
                         .flags = NS_REC_MERGE, .block = m1.block, .block2 = m0.block,
                         .lo = m1.lo, .hi = m1.hi});
  apply(t, (ns_record_t){.type = NS_REC_TRUNCATE, .path = "/j/f", .lo = 100});
  apply(t, (ns_record_t){.type = NS_REC_SERVER_ADD, .address = "ms1:7000", .blocks = 6,
                         .block_size = 1024, .incarnation = 3});
  apply(t, (ns_record_t){.type = NS_REC_SERVER_STATE, .server_id = 2, .up = 0});
  apply(t, (ns_record_t){.type = NS_REC_REMOVE, .flags = NS_REC_EXPIRED, .path = "/q"});
  return t;
}

static ns_tree_t *wide_tree(void) {
  ns_tree_t *t = ns_tree_new(LEASE_MS, GRACE_MS);
  apply(t, (ns_record_t){.type = NS_REC_SERVER_ADD, .address = "w:1", .blocks = 64,
                         .block_size = 4096, .incarnation = 7});
  char path[64];
  for (int i = 0; i < 12; i++) {
    snprintf(path, sizeof path, "/d%d/e%d/f", i % 4, i);
    apply(t, (ns_record_t){.type = NS_REC_MKDIR, .flags = NS_REC_PARENTS, .path = path});
    snprintf(path, sizeof path, "/d%d/e%d/n%d", i % 4, i, i);
    create(t, path, (ns_kind_t)(1 + i % 3), 1 + i % 3,
           (ns_record_t){.lease_ms = i * 100, .node_flags = i % 2 ? NS_FLAG_PINNED : 0});
  }
  apply(t, (ns_record_t){.type = NS_REC_RENAME, .path = "/d1", .path2 = "/d0/moved"});
  apply(t, (ns_record_t){.type = NS_REC_REMOVE, .flags = NS_REC_RECURSIVE, .path = "/d2"});
  return t;
}

static void make_seeds(void) {
  seeds = g_ptr_array_new_with_free_func((GDestroyNotify)g_byte_array_unref);
  ns_tree_t *t = ns_tree_new(LEASE_MS, GRACE_MS);
  add_seed(t, 0);
  apply(t, (ns_record_t){.type = NS_REC_SERVER_ADD, .address = "s:1", .blocks = 3,
                         .block_size = 10});
  apply(t, (ns_record_t){.type = NS_REC_SERVER_ADD, .address = "s:2", .blocks = 2,
                         .block_size = 10, .incarnation = ~0ull});
  apply(t, (ns_record_t){.type = NS_REC_SERVER_STATE, .server_id = 1, .up = 0});
  add_seed(t, 3);
  ns_tree_free(t);
  t = rich_tree();
  add_seed(t, 42);
  ns_tree_free(t);
  t = wide_tree();
  add_seed(t, 1234567);
  ns_tree_free(t);
}

static int seeds_check(void) {
  int ok = 1;
  char why[512];
  for (guint i = 0; i < seeds->len; i++) {
    GByteArray *e = g_ptr_array_index(seeds, i);
    ns_tree_t *t = NULL;
    ns_snap_meta_t meta;
    if (ns_snap_decode(e->data, e->len, LEASE_MS, GRACE_MS, 0, &t, &meta, why, sizeof why) != 0) {
      fprintf(stderr, "fuzz_snapshot: seed %u does not decode: %s\n", i, why);
      ok = 0;
    }
    ns_tree_free(t);
  }
  return ok;
}

static void write_corpus(const char *dir) {
  g_mkdir_with_parents(dir, 0755);
  for (guint i = 0; i < seeds->len; i++) {
    GByteArray *e = g_ptr_array_index(seeds, i);
    char *file = g_strdup_printf("%s/seed-%u.snap", dir, i);
    GError *err = NULL;
    if (!g_file_set_contents(file, (const gchar *)e->data, e->len, &err)) {
      fprintf(stderr, "fuzz_snapshot: %s\n", err->message);
      g_error_free(err);
    }
    g_free(file);
  }
}

static void run(const uint8_t *d, size_t len) {
  uint8_t *copy = malloc(len > 0 ? len : 1);
  if (copy == NULL) abort();
  if (len > 0) memcpy(copy, d, len);
  LLVMFuzzerTestOneInput(copy, len);
  free(copy);
}

static void put_le(uint8_t *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void mutate_bytes(GRand *r, GByteArray *m) {
  guint at = m->len > 0 ? (guint)g_rand_int_range(r, 0, (gint32)m->len) : 0;
  switch (g_rand_int_range(r, 0, 10)) {
    case 0:
      if (m->len > 0) m->data[at] ^= (uint8_t)(1u << g_rand_int_range(r, 0, 8));
      break;
    case 1:
      if (m->len > 0) m->data[at] = (uint8_t)g_rand_int(r);
      break;
    case 2:
      g_byte_array_set_size(m, at);
      break;
    case 3: { /* duplicate a range at the end */
      guint len = (guint)g_rand_int_range(r, 1, 80);
      if (len > m->len - at) len = m->len - at;
      GByteArray *copy = g_byte_array_new();
      g_byte_array_append(copy, m->data + at, len);
      g_byte_array_append(m, copy->data, copy->len);
      g_byte_array_free(copy, TRUE);
      break;
    }
    case 4: { /* delete a range */
      guint len = (guint)g_rand_int_range(r, 1, 16);
      if (m->len > 0) g_byte_array_remove_range(m, at, MIN(len, m->len - at));
      break;
    }
    case 5: { /* splice the tail of another seed in */
      GByteArray *o = g_ptr_array_index(seeds, g_rand_int_range(r, 0, (gint32)seeds->len));
      guint from = o->len > 0 ? (guint)g_rand_int_range(r, 0, (gint32)o->len) : 0;
      g_byte_array_set_size(m, at);
      g_byte_array_append(m, o->data + from, o->len - from);
      break;
    }
    case 6: /* a u32 count or length that lies */
      if (m->len >= 4) {
        guint p = (guint)g_rand_int_range(r, 0, (gint32)m->len - 3);
        const uint64_t lies[] = {g_rand_int_range(r, 0, 64), UINT32_MAX, 0x7fffffffu,
                                 NS_TAGS_MAX + 1, NS_ALLOC_MAX_BLOCKS, NS_ALLOC_MAX_BLOCKS + 1,
                                 0, 1};
        put_le(m->data + p, lies[g_rand_int_range(r, 0, G_N_ELEMENTS(lies))], 4);
      }
      break;
    case 7: /* an i64 that lies */
      if (m->len >= 8) {
        guint p = (guint)g_rand_int_range(r, 0, (gint32)m->len - 7);
        const uint64_t lies[] = {0, 1, UINT64_MAX, INT64_MAX, (uint64_t)NS_SNAP_INT_MAX,
                                 (uint64_t)NS_SNAP_INT_MAX + 1, (uint64_t)NS_SNAP_BLOCK_SIZE_MAX,
                                 (uint64_t)NS_LEASE_MAX_MS + 1};
        put_le(m->data + p, lies[g_rand_int_range(r, 0, G_N_ELEMENTS(lies))], 8);
      }
      break;
    case 8: { /* a tail of zeros */
      guint len = (guint)g_rand_int_range(r, 1, 300);
      guint old = m->len;
      g_byte_array_set_size(m, old + len);
      memset(m->data + old, 0, len);
      break;
    }
    default: {
      guint len = (guint)g_rand_int_range(r, 1, 64);
      for (guint i = 0; i < len; i++) {
        uint8_t b = (uint8_t)g_rand_int(r);
        g_byte_array_append(m, &b, 1);
      }
      break;
    }
  }
}

typedef struct {
  GPtrArray *leaves; /* ns_node_t * */
} leaves_t;

static void collect_leaves(ns_node_t *n, void *ud) {
  if (n->kind != NS_KIND_DIRECTORY) g_ptr_array_add(((leaves_t *)ud)->leaves, n);
}

/* A small random change of v: off by one, or a value from the edges. */
static int64_t nudge(GRand *r, int64_t v) {
  switch (g_rand_int_range(r, 0, 4)) {
    case 0:
      return v + 1;
    case 1:
      return v - 1;
    case 2:
      return g_rand_int_range(r, -1, 70000);
    default:
      return 0;
  }
}

/* Changes one thing in a decoded tree. Kinds change only among leaf kinds
 * (a directory's storage differs from a leaf's). */
static void mutate_tree(GRand *r, ns_tree_t *t) {
  ns_alloc_t *a = t->alloc;
  leaves_t lv = {g_ptr_array_new()};
  ns_tree_walk(t->root, collect_leaves, &lv);
  ns_server_t *s = a->servers->len > 0 ? g_ptr_array_index(a->servers, g_rand_int_range(
                                                                           r, 0, (gint32)a->servers->len))
                                       : NULL;
  ns_node_t *n = lv.leaves->len > 0 ? g_ptr_array_index(lv.leaves, g_rand_int_range(
                                                                       r, 0, (gint32)lv.leaves->len))
                                    : NULL;
  ns_partition_t *p = n != NULL && n->layout.parts->len > 0
                          ? &g_array_index(n->layout.parts, ns_partition_t,
                                           g_rand_int_range(r, 0, (gint32)n->layout.parts->len))
                          : NULL;
  ns_repart_t *rp = n != NULL && n->reparts != NULL && n->reparts->len > 0
                        ? &g_array_index(n->reparts, ns_repart_t,
                                         g_rand_int_range(r, 0, (gint32)n->reparts->len))
                        : NULL;
  int32_t b = s != NULL ? g_rand_int_range(r, 0, s->nblocks) : 0;
  switch (g_rand_int_range(r, 0, 14)) {
    case 0: /* reorder a free stack: still valid */
      if (s != NULL && s->free_stack->len >= 2) {
        guint i = (guint)g_rand_int_range(r, 0, (gint32)s->free_stack->len);
        guint j = (guint)g_rand_int_range(r, 0, (gint32)s->free_stack->len);
        int32_t x = g_array_index(s->free_stack, int32_t, i);
        g_array_index(s->free_stack, int32_t, i) = g_array_index(s->free_stack, int32_t, j);
        g_array_index(s->free_stack, int32_t, j) = x;
      }
      break;
    case 1:
      if (s != NULL) s->generation[b] = nudge(r, s->generation[b]);
      break;
    case 2:
      if (s != NULL) s->in_use[b] = !s->in_use[b];
      break;
    case 3:
      if (s != NULL && s->free_stack->len > 0) {
        g_array_index(s->free_stack, int32_t, 0) = (int32_t)nudge(r, g_array_index(s->free_stack, int32_t, 0));
      }
      break;
    case 4:
      if (p != NULL) {
        p->block.index = (int32_t)nudge(r, p->block.index);
      }
      break;
    case 5:
      if (p != NULL) p->block.generation = nudge(r, p->block.generation);
      break;
    case 6:
      if (p != NULL) {
        if (g_rand_boolean(r)) {
          p->lo = nudge(r, p->lo);
        } else {
          p->hi = nudge(r, p->hi);
        }
      }
      break;
    case 7:
      if (p != NULL) p->state = p->state == NS_PART_LIVE ? NS_PART_LOST : NS_PART_LIVE;
      break;
    case 8:
      if (rp != NULL) {
        switch (g_rand_int_range(r, 0, 6)) {
          case 0: rp->lo = nudge(r, rp->lo); break;
          case 1: rp->hi = nudge(r, rp->hi); break;
          case 2: rp->merge = !rp->merge; break;
          case 3: rp->lost = !rp->lost; break;
          case 4: rp->dst.index = (int32_t)nudge(r, rp->dst.index); break;
          default: rp->id = nudge(r, rp->id); break;
        }
      }
      break;
    case 9:
      if (n != NULL) n->kind = (ns_kind_t)g_rand_int_range(r, 1, 4);
      break;
    case 10:
      if (n != NULL) {
        switch (g_rand_int_range(r, 0, 4)) {
          case 0: n->max_blocks = (int32_t)nudge(r, n->max_blocks); break;
          case 1: n->initial_blocks = (int32_t)nudge(r, n->initial_blocks); break;
          case 2: n->high_wm = (int32_t)nudge(r, n->high_wm); break;
          default: n->low_wm = (int32_t)nudge(r, n->low_wm); break;
        }
      }
      break;
    case 11:
      switch (g_rand_int_range(r, 0, 4)) {
        case 0: t->n_dirs = nudge(r, t->n_dirs); break;
        case 1: t->n_leaves = nudge(r, t->n_leaves); break;
        case 2: t->n_expired = nudge(r, t->n_expired); break;
        default: t->last_op_id = nudge(r, t->last_op_id); break;
      }
      break;
    case 12: /* swap the blocks of two partitions */
      if (p != NULL && lv.leaves->len > 1) {
        ns_node_t *o = g_ptr_array_index(lv.leaves, g_rand_int_range(r, 0, (gint32)lv.leaves->len));
        if (o->layout.parts->len > 0) {
          ns_partition_t *q = &g_array_index(o->layout.parts, ns_partition_t, 0);
          ns_block_t x = p->block;
          p->block = q->block;
          q->block = x;
        }
      }
      break;
    default:
      if (s != NULL) {
        if (g_rand_boolean(r)) {
          s->used = (int32_t)nudge(r, s->used);
        } else {
          s->up = !s->up;
        }
      }
      break;
  }
  g_ptr_array_free(lv.leaves, TRUE);
}

/* A seed decoded, changed in memory and encoded again. */
static GByteArray *tree_mutant(GRand *r, const GByteArray *seed) {
  ns_tree_t *t = NULL;
  ns_snap_meta_t meta;
  if (ns_snap_decode(seed->data, seed->len, LEASE_MS, GRACE_MS, 0, &t, &meta, NULL, 0) != 0) {
    abort();
  }
  int edits = g_rand_int_range(r, 0, 10) < 7 ? 1 : 2;
  for (int e = 0; e < edits; e++) mutate_tree(r, t);
  GByteArray *m = g_byte_array_new();
  if (ns_snap_encode(t, &meta, m) != 0) g_byte_array_set_size(m, 0);
  ns_tree_free(t);
  return m;
}

int main(int argc, char **argv) {
  long rounds = 100000;
  const char *corpus = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--corpus") == 0 && i + 1 < argc) {
      corpus = argv[++i];
    } else {
      rounds = atol(argv[i]);
    }
  }
  make_seeds();
  int ok = seeds_check();
  if (corpus != NULL) write_corpus(corpus);
  for (guint s = 0; s < seeds->len; s++) {
    GByteArray *seed = g_ptr_array_index(seeds, s);
    run(seed->data, seed->len);
  }
  long seeds_ok = fuzz_snap_ok;
  GRand *r = g_rand_new_with_seed(20261201);
  for (long k = 0; k < rounds; k++) {
    GByteArray *seed = g_ptr_array_index(seeds, g_rand_int_range(r, 0, (gint32)seeds->len));
    GByteArray *m;
    if (g_rand_int_range(r, 0, 2) == 0) {
      m = tree_mutant(r, seed);
      if (g_rand_int_range(r, 0, 4) == 0) mutate_bytes(r, m);
    } else {
      m = g_byte_array_new();
      g_byte_array_append(m, seed->data, seed->len);
      int edits = g_rand_int_range(r, 0, 10) < 7 ? 1 : g_rand_int_range(r, 2, 6);
      for (int e = 0; e < edits; e++) mutate_bytes(r, m);
    }
    run(m->data, m->len);
    g_byte_array_free(m, TRUE);
  }
  g_rand_free(r);
  printf("fuzz_snapshot: %u seeds and %ld mutations passed every check: %ld snapshots "
         "decoded (%ld of them mutants), %ld refused; on the decoded trees %ld blocks added, "
         "%ld splits, %ld creates, %ld repartitions rolled back, %ld namespaces removed\n",
         seeds->len, rounds, fuzz_snap_ok, fuzz_snap_ok - seeds_ok, fuzz_snap_refused,
         fuzz_snap_grown, fuzz_snap_split, fuzz_snap_created, fuzz_snap_rolled_back,
         fuzz_snap_removed);
  if (rounds > 0 && (fuzz_snap_ok - seeds_ok == 0 || fuzz_snap_refused == 0 ||
                     fuzz_snap_created == 0 || fuzz_snap_rolled_back == 0 ||
                     fuzz_snap_grown == 0 || fuzz_snap_split == 0 ||
                     fuzz_snap_removed == 0)) {
    fprintf(stderr, "fuzz_snapshot: an outcome was never reached; the mutations test too little\n");
    ok = 0;
  }
  g_ptr_array_free(seeds, TRUE);
  return ok ? 0 : 1;
}
