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
 * The byte mutations come from the shared engine (mutate.c); the field lies
 * and the tree mutations are this file's. Usage: fuzz_snapshot_replay
 * [ROUNDS] [--corpus DIR]; with --corpus the seeds are also written to DIR
 * (seed-N.snap), to start a libFuzzer run.
 */
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "mutate.h"
#include "namespaces/snapshot.h"
#include "namespaces/tree.h"

extern long fuzz_snap_ok, fuzz_snap_refused, fuzz_snap_created, fuzz_snap_rolled_back,
    fuzz_snap_removed, fuzz_snap_grown, fuzz_snap_split;

#define LEASE_MS 1000
#define GRACE_MS 10

static fz_t fz;

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
  fz_add_seed(&fz, e);
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
    /* Request ids of three clients, some out of order (snapshot version 3). */
    apply(t, (ns_record_t){.type = NS_REC_MKDIR, .flags = NS_REC_PARENTS, .path = path,
                           .req_client = 1 + (uint64_t)i % 3, .req_seq = 20 - (uint64_t)i % 5,
                           .wall_ms = 1700000000000LL + i});
    snprintf(path, sizeof path, "/d%d/e%d/n%d", i % 4, i, i);
    create(t, path, (ns_kind_t)(1 + i % 3), 1 + i % 3,
           (ns_record_t){.lease_ms = i * 100, .node_flags = i % 2 ? NS_FLAG_PINNED : 0});
  }
  apply(t, (ns_record_t){.type = NS_REC_RENAME, .path = "/d1", .path2 = "/d0/moved"});
  apply(t, (ns_record_t){.type = NS_REC_REMOVE, .flags = NS_REC_RECURSIVE, .path = "/d2"});
  return t;
}

/* Replicated namespaces (issue 12): zones, chains, a degraded chain with a
 * copy under way, a split of a chain begun, a member dropped. */
static ns_tree_t *chain_tree(void) {
  ns_tree_t *t = ns_tree_new(LEASE_MS, GRACE_MS);
  const char *addrs[] = {"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000", "[::1]:7000"};
  const char *zones[] = {"a", "b", "a", NULL};
  for (int i = 0; i < 4; i++) {
    apply(t, (ns_record_t){.type = NS_REC_SERVER_ADD, .address = addrs[i], .zone = zones[i],
                           .blocks = 8, .block_size = 1024, .incarnation = 1});
  }
  ns_partition_t parts[2];
  must(ns_tree_plan_chains(t, NS_KIND_KV, 2, 2, parts, NULL, 0), "planning chains");
  apply(t, (ns_record_t){.type = NS_REC_CREATE, .path = "/r/kv", .kind = NS_KIND_KV,
                         .parts = parts, .nparts = 2, .replicas = 2});
  must(ns_tree_plan_chains(t, NS_KIND_QUEUE, 1, 3, parts, NULL, 0), "planning chains");
  apply(t, (ns_record_t){.type = NS_REC_CREATE, .path = "/r/q", .kind = NS_KIND_QUEUE,
                         .parts = parts, .nparts = 1, .replicas = 3});
  ns_node_t *kv = ns_tree_lookup(t, "/r/kv"), *q = ns_tree_lookup(t, "/r/q");
  ns_partition_t k0 = g_array_index(kv->layout.parts, ns_partition_t, 0), split;
  must(ns_tree_plan_append(t, kv, 500, k0.hi, &split), "planning a split");
  apply(t, (ns_record_t){.type = NS_REC_REPART_BEGIN, .path = "/r/kv", .op_id = 1,
                         .block = k0.block, .block2 = split.block, .lo = 500, .hi = k0.hi,
                         .parts = &split, .nparts = 1});
  ns_partition_t q0 = g_array_index(q->layout.parts, ns_partition_t, 0);
  apply(t, (ns_record_t){.type = NS_REC_SERVER_STATE, .server_id = q0.more[0].server, .up = 0});
  q0 = g_array_index(q->layout.parts, ns_partition_t, 0);
  int32_t avoid[NS_CHAIN_MAX];
  for (int m = 0; m < ns_part_members(&q0); m++) avoid[m] = ns_part_member(&q0, m)->server;
  ns_block_t copy;
  must(ns_alloc_pick_chain(t->alloc, 1, avoid, ns_part_members(&q0), &copy), "picking a copy");
  apply(t, (ns_record_t){.type = NS_REC_REPLICA_BEGIN, .path = "/r/q", .lo = q0.lo,
                         .block = copy, .op_id = 2});
  return t;
}

static void make_seeds(void) {
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
  t = chain_tree();
  add_seed(t, 77);
  ns_tree_free(t);
}

static int seeds_check(void) {
  int ok = 1;
  char why[512];
  for (guint i = 0; i < fz.seeds->len; i++) {
    GByteArray *e = fz_seed(&fz, i);
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

/* A u32 count or length that lies. */
static void lie_u32(fz_t *f, GByteArray *m) {
  GRand *r = f->rand;
  if (m->len >= 4) {
    guint p = (guint)g_rand_int_range(r, 0, (gint32)m->len - 3);
    const uint64_t lies[] = {g_rand_int_range(r, 0, 64), UINT32_MAX, 0x7fffffffu,
                             NS_TAGS_MAX + 1, NS_ALLOC_MAX_BLOCKS, NS_ALLOC_MAX_BLOCKS + 1,
                             0, 1};
    fz_put_lie(f, m->data + p, lies, G_N_ELEMENTS(lies), 4);
  }
}

/* An i64 that lies. */
static void lie_i64(fz_t *f, GByteArray *m) {
  GRand *r = f->rand;
  if (m->len >= 8) {
    guint p = (guint)g_rand_int_range(r, 0, (gint32)m->len - 7);
    const uint64_t lies[] = {0, 1, UINT64_MAX, INT64_MAX, (uint64_t)NS_SNAP_INT_MAX,
                             (uint64_t)NS_SNAP_INT_MAX + 1, (uint64_t)NS_SNAP_BLOCK_SIZE_MAX,
                             (uint64_t)NS_LEASE_MAX_MS + 1};
    fz_put_lie(f, m->data + p, lies, G_N_ELEMENTS(lies), 8);
  }
}

/* The byte edits: the engine's, a splice of another seed's tail, zero
 * tails, and the field lies above. */
static const fz_edit_t byte_edits[] = {
    FZ_BASIC_EDITS(80),
    {.op = FZ_SPLICE_TAIL},
    {.op = FZ_OWN, .fn = lie_u32},
    {.op = FZ_OWN, .fn = lie_i64},
    {.op = FZ_ZEROS, .max = 300},
    {.op = FZ_RANDOM_TAIL, .max = 64},
};

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

/* Half of the rounds are tree mutants, a quarter of those with a byte edit
 * too; the other half (NULL) are byte edits of the seed. */
static GByteArray *round_input(fz_t *f, const GByteArray *seed) {
  if (g_rand_int_range(f->rand, 0, 2) != 0) return NULL;
  GByteArray *m = tree_mutant(f->rand, seed);
  if (g_rand_int_range(f->rand, 0, 4) == 0) fz_mutate(f, m);
  return m;
}

int main(int argc, char **argv) {
  fz = (fz_t){.name = "fuzz_snapshot", .corpus_ext = ".snap", .seed = 20261201, .edits = byte_edits,
              .nedits = G_N_ELEMENTS(byte_edits), .edits_max = 6, .round = round_input};
  fz_start(&fz, argc, argv, 100000);
  make_seeds();
  int ok = seeds_check();
  if (fz_run_seeds(&fz) != 0) ok = 0;
  long seeds_ok = fuzz_snap_ok;
  fz_rounds(&fz);
  printf("fuzz_snapshot: %u seeds and %ld mutations passed every check: %ld snapshots "
         "decoded (%ld of them mutants), %ld refused; on the decoded trees %ld blocks added, "
         "%ld splits, %ld creates, %ld repartitions rolled back, %ld namespaces removed\n",
         fz.seeds->len, fz.rounds, fuzz_snap_ok, fuzz_snap_ok - seeds_ok, fuzz_snap_refused,
         fuzz_snap_grown, fuzz_snap_split, fuzz_snap_created, fuzz_snap_rolled_back,
         fuzz_snap_removed);
  const fz_outcome_t outcomes[] = {{"mutant decoded", fuzz_snap_ok - seeds_ok},
                                   {"refused", fuzz_snap_refused},
                                   {"create", fuzz_snap_created},
                                   {"repartition rolled back", fuzz_snap_rolled_back},
                                   {"block added", fuzz_snap_grown},
                                   {"split", fuzz_snap_split},
                                   {"namespace removed", fuzz_snap_removed}};
  if (!fz_outcomes_reached(&fz, outcomes, G_N_ELEMENTS(outcomes))) ok = 0;
  fz_finish(&fz);
  return ok ? 0 : 1;
}
