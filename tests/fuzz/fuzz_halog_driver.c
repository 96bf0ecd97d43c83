/*
 * Replays the HA log value fuzz target (fuzz_halog.c) without libFuzzer. The
 * seeds: log values built as a leader builds them (dir_ha_log_value_build)
 * from real records - one mkdir; a create with partitions, a remove and a
 * rename with request ids; a server registration - then mutated
 * deterministically: the engine's byte edits, and edits that know the
 * format (a count, a record length or the first seq that lies). The target
 * aborts on any wrong answer; this program exits 0 only when every input
 * passed and every outcome was reached.
 *
 * Usage: fuzz_halog_replay [ROUNDS] [--corpus DIR]; with --corpus the seeds
 * are also written to DIR (seed-N.halog), to start a libFuzzer run.
 */
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "directory/ha.h"
#include "mutate.h"
#include "namespaces/record.h"

extern long fuzz_hl_ok, fuzz_hl_refused, fuzz_hl_records, fuzz_hl_rec_refused;

static fz_t fz;

static GByteArray *rec(const ns_record_t *r) {
  GByteArray *e = g_byte_array_new();
  if (ns_rec_encode(r, e) != 0) abort();
  return e;
}

static void add_value(int64_t first, GByteArray **recs, size_t n) {
  GByteArray *v = g_byte_array_new();
  dir_ha_log_value_build(v, first, (const GByteArray *const *)recs, n);
  fz_add_seed(&fz, v);
  for (size_t i = 0; i < n; i++) g_byte_array_free(recs[i], TRUE);
}

static void make_seeds(void) {
  GByteArray *a[4];
  a[0] = rec(&(ns_record_t){.type = NS_REC_MKDIR, .path = "/jobs", .flags = NS_REC_PARENTS,
                            .now_ms = 5, .wall_ms = 1700000000000LL});
  add_value(1, a, 1);
  ns_partition_t parts[2] = {{.block = {1, 0, 1}, .lo = 0, .hi = 1000, .replicas = 1,
                              .chain_version = 1},
                             {.block = {2, 3, 7}, .lo = 1000, .hi = 5000, .replicas = 1,
                              .chain_version = 1}};
  a[0] = rec(&(ns_record_t){.type = NS_REC_CREATE, .path = "/jobs/kv", .kind = NS_KIND_KV,
                            .parts = parts, .nparts = 2, .lease_ms = 3000, .req_client = 99,
                            .req_seq = 4});
  a[1] = rec(&(ns_record_t){.type = NS_REC_REMOVE, .path = "/jobs/old",
                            .flags = NS_REC_RECURSIVE, .req_client = 99, .req_seq = 5});
  a[2] = rec(&(ns_record_t){.type = NS_REC_RENAME, .path = "/jobs/a", .path2 = "/jobs/b",
                            .req_client = UINT64_MAX, .req_seq = 1});
  add_value(41, a, 3);
  a[0] = rec(&(ns_record_t){.type = NS_REC_SERVER_ADD, .address = "10.0.0.1:7000", .blocks = 64,
                            .block_size = 1 << 20, .incarnation = 0x1234, .zone = "a"});
  a[1] = rec(&(ns_record_t){.type = NS_REC_SERVER_STATE, .server_id = 1, .up = 0});
  add_value(1000000, a, 2);
}

/* A u32 (the count or a record's length) that lies. */
static void lie_u32(fz_t *f, GByteArray *m) {
  if (m->len < 24) return;
  GRand *r = f->rand;
  guint p = g_rand_int_range(r, 0, 2) == 0 ? 16 : 20;
  const uint64_t lies[] = {0, 1, 2, 3, m->len, m->len - 20, m->len - 24, UINT32_MAX,
                           (uint64_t)g_rand_int_range(r, 0, 300)};
  fz_put_lie(f, m->data + p, lies, G_N_ELEMENTS(lies), 4);
}

/* The first seq set to a boundary value. */
static void lie_first(fz_t *f, GByteArray *m) {
  if (m->len < 16) return;
  const uint64_t lies[] = {0, 1, 2, INT64_MAX, (uint64_t)INT64_MAX + 1, UINT64_MAX};
  fz_put_lie(f, m->data + 8, lies, G_N_ELEMENTS(lies), 8);
}

static const fz_edit_t edits[] = {
    FZ_BASIC_EDITS(200),
    {.op = FZ_APPEND_SEED},
    {.op = FZ_SPLICE_TAIL},
    {.op = FZ_OWN, .fn = lie_u32},
    {.op = FZ_OWN, .fn = lie_u32},
    {.op = FZ_OWN, .fn = lie_first},
    {.op = FZ_ZEROS, .max = 32},
    {.op = FZ_RANDOM_TAIL, .max = 32},
};

int main(int argc, char **argv) {
  fz = (fz_t){.name = "fuzz_halog", .corpus_ext = ".halog", .seed = 20261202,
              .edits = edits, .nedits = G_N_ELEMENTS(edits), .edits_max = 4};
  fz_start(&fz, argc, argv, 100000);
  make_seeds();
  int ok = fz_run_seeds(&fz) == 0 && fuzz_hl_ok == (long)fz.seeds->len;
  if (!ok) fprintf(stderr, "fuzz_halog: a seed did not scan\n");
  long seeds_ok = fuzz_hl_ok;
  fz_rounds(&fz);
  printf("fuzz_halog: %u seeds and %ld mutations passed every check: %ld values read (%ld of "
         "them mutants), %ld refused EPROTO; %ld records decoded, %ld refused\n",
         fz.seeds->len, fz.rounds, fuzz_hl_ok, fuzz_hl_ok - seeds_ok, fuzz_hl_refused,
         fuzz_hl_records, fuzz_hl_rec_refused);
  const fz_outcome_t outcomes[] = {{"mutant read", fuzz_hl_ok - seeds_ok},
                                   {"refused EPROTO", fuzz_hl_refused},
                                   {"record refused", fuzz_hl_rec_refused}};
  if (!fz_outcomes_reached(&fz, outcomes, G_N_ELEMENTS(outcomes))) ok = 0;
  fz_finish(&fz);
  return ok ? 0 : 1;
}
