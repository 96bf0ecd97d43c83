/*
 * Replays the dedup table restore fuzz target (fuzz_dedup.c) without
 * libFuzzer. The seeds: images made by ms_dedup_save from real tables with
 * the target's bounds - empty, one client, several clients with payloads
 * (and a pending entry, which the image leaves out), a client whose entries
 * were all pruned by its acked, a table past its entry bound and one past
 * its byte budget - each checked to restore to exactly its own image, then
 * mutated deterministically: the engine's byte edits, and edits that know
 * the format (a count or payload length that lies, an id, acked or seq set
 * to a boundary value). The target aborts on any wrong answer; this program
 * exits 0 only when every input passed and every outcome was reached.
 *
 * Usage: fuzz_dedup_replay [ROUNDS] [--corpus DIR]; with --corpus the seeds
 * are also written to DIR (seed-N.dedup), to start a libFuzzer run.
 */
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "memserver/dedup.h"
#include "mutate.h"

#define FUZZ_DD_MAX 8u
#define FUZZ_DD_BYTES 2048u
extern long fuzz_dd_restored, fuzz_dd_eproto, fuzz_dd_same, fuzz_dd_dropped, fuzz_dd_bare;

static fz_t fz;
static uint8_t payload[1024];

/* A write (client, seq) with the client's acked, its reply carrying plen
 * payload bytes; committed unless pending. */
static void write_one(ms_dedup_t *d, uint64_t client, uint64_t seq, uint64_t acked, int32_t status,
                      uint32_t plen, int pending) {
  wire_seq_t s = {.client_id = client, .seq = seq, .acked = acked};
  ms_dedup_reply_t r = {.status = status, .flags = (uint16_t)(seq * 3), .arg0 = seq * 1000,
                        .arg1 = client, .arg2 = (uint32_t)seq + 7, .plen = plen,
                        .payload = plen > 0 ? payload + seq % 64 : NULL};
  ms_dedup_entry_t *e = ms_dedup_add(d, &s, &r, seq + 100);
  if (!pending) ms_dedup_commit(d, e);
}

/* Adds the image of d as a seed and frees d. */
static void add_table(ms_dedup_t *d) {
  GByteArray *img = g_byte_array_new();
  ms_dedup_save(d, img);
  fz_add_seed(&fz, img);
  ms_dedup_free(d);
}

static void make_seeds(void) {
  for (size_t i = 0; i < sizeof payload; i++) payload[i] = (uint8_t)(i * 37 + (i >> 5));
  ms_dedup_budget_t bu;
  ms_dedup_budget_init(&bu, FUZZ_DD_BYTES);
  /* Empty. */
  add_table(ms_dedup_new(&bu, FUZZ_DD_MAX));
  /* One client: three writes, one with a payload, one an error. */
  ms_dedup_t *d = ms_dedup_new(&bu, FUZZ_DD_MAX);
  write_one(d, 7, 1, 1, 0, 0, 0);
  write_one(d, 7, 2, 1, 0, 40, 0);
  write_one(d, 7, 3, 2, MAYFLY_ENOKEY, 0, 0);
  add_table(d);
  /* Several clients, interleaved, with payloads of several sizes, one
   * entry pending (not in the image). */
  d = ms_dedup_new(&bu, FUZZ_DD_MAX);
  write_one(d, 1, 1, 1, 0, 10, 0);
  write_one(d, UINT64_MAX, 5, 5, 0, 200, 0);
  write_one(d, 2, 9, 3, MAYFLY_EINVAL, 0, 0);
  write_one(d, 1, 2, 1, 0, 0, 0);
  write_one(d, 3, 1, 0, 0, 300, 0);
  write_one(d, 2, 10, 3, 0, 1, 1);
  add_table(d);
  /* Pruned by acked: client 4 has only its acked left, client 5 half its
   * entries. */
  d = ms_dedup_new(&bu, FUZZ_DD_MAX);
  for (uint64_t q = 1; q <= 3; q++) write_one(d, 4, q, 1, 0, 20, 0);
  for (uint64_t q = 1; q <= 4; q++) write_one(d, 5, q, 1, 0, 8, 0);
  ms_dedup_entry_t *e = NULL;
  wire_seq_t s = {.client_id = 4, .seq = 9, .acked = 9};
  if (ms_dedup_find(d, &s, &e) != MS_DEDUP_NEW) abort();
  s = (wire_seq_t){.client_id = 5, .seq = 5, .acked = 3};
  if (ms_dedup_find(d, &s, &e) != MS_DEDUP_NEW) abort();
  if (ms_dedup_count(d) != 2) abort();
  add_table(d);
  /* Past the entry bound: the oldest committed entries went. */
  d = ms_dedup_new(&bu, FUZZ_DD_MAX);
  for (uint64_t q = 1; q <= 3 * FUZZ_DD_MAX; q++) write_one(d, q % 3, q, 0, 0, 16, 0);
  if (ms_dedup_count(d) != FUZZ_DD_MAX) abort();
  add_table(d);
  /* Past the byte budget. */
  d = ms_dedup_new(&bu, FUZZ_DD_MAX);
  for (uint64_t q = 1; q <= 6; q++) write_one(d, 9, q, 1, 0, 700, 0);
  if (ms_dedup_bytes(d) > FUZZ_DD_BYTES) abort();
  add_table(d);
  if (bu.bytes != 0) abort();
}

/* Every seed restores to exactly its own image. */
static int seeds_check(void) {
  long before = fuzz_dd_restored, same_before = fuzz_dd_same;
  if (fz_run_seeds(&fz) != 0) return 0;
  if (fuzz_dd_restored - before != (long)fz.seeds->len ||
      fuzz_dd_same - same_before != (long)fz.seeds->len) {
    fprintf(stderr, "fuzz_dedup: of %u seeds %ld restored, %ld to their own image\n",
            fz.seeds->len, fuzz_dd_restored - before, fuzz_dd_same - same_before);
    return 0;
  }
  return 1;
}

/* A u32 (maybe a client count, an entry count or a payload length) that
 * lies. */
static void lie_u32(fz_t *f, GByteArray *m) {
  if (m->len < 8) return;
  GRand *r = f->rand;
  guint p = (guint)g_rand_int_range(r, 0, (gint32)m->len - 3);
  if (g_rand_int_range(r, 0, 2) == 0) p = 4; /* the client count */
  const uint64_t lies[] = {0, 1, 2, FUZZ_DD_MAX, FUZZ_DD_MAX + 1,
                           (uint64_t)g_rand_int_range(r, 0, 3000), m->len, UINT32_MAX};
  fz_put_lie(f, m->data + p, lies, G_N_ELEMENTS(lies), 4);
}

/* A u64 (maybe an id, an acked, a seq or a cseq) set to a boundary value. */
static void lie_u64(fz_t *f, GByteArray *m) {
  if (m->len < 16) return;
  GRand *r = f->rand;
  guint p = (guint)g_rand_int_range(r, 8, (gint32)m->len - 7);
  const uint64_t lies[] = {0, 1, 2, 3, 5, 9, 1000, UINT64_MAX};
  fz_put_lie(f, m->data + p, lies, G_N_ELEMENTS(lies), 8);
}

static const fz_edit_t edits[] = {
    FZ_BASIC_EDITS(400),
    {.op = FZ_APPEND_SEED},
    {.op = FZ_SPLICE_TAIL},
    {.op = FZ_OWN, .fn = lie_u32},
    {.op = FZ_OWN, .fn = lie_u32},
    {.op = FZ_OWN, .fn = lie_u64},
    {.op = FZ_ZEROS, .max = 64},
    {.op = FZ_RANDOM_TAIL, .max = 64},
};

int main(int argc, char **argv) {
  fz = (fz_t){.name = "fuzz_dedup", .corpus_ext = ".dedup", .seed = 20261201,
              .edits = edits, .nedits = G_N_ELEMENTS(edits), .edits_max = 4};
  fz_start(&fz, argc, argv, 100000);
  make_seeds();
  int ok = seeds_check();
  long seeds_ok = fuzz_dd_restored;
  fz_rounds(&fz);
  printf("fuzz_dedup: %u seeds and %ld mutations passed every check: %ld images restored "
         "(%ld of them mutants, %ld to their own image, %ld with entries dropped, %ld with a "
         "client holding only its acked), %ld refused EPROTO\n",
         fz.seeds->len, fz.rounds, fuzz_dd_restored, fuzz_dd_restored - seeds_ok, fuzz_dd_same,
         fuzz_dd_dropped, fuzz_dd_bare, fuzz_dd_eproto);
  const fz_outcome_t outcomes[] = {{"mutant restored", fuzz_dd_restored - seeds_ok},
                                   {"refused EPROTO", fuzz_dd_eproto},
                                   {"entries dropped on restore", fuzz_dd_dropped},
                                   {"client with only its acked", fuzz_dd_bare}};
  if (!fz_outcomes_reached(&fz, outcomes, G_N_ELEMENTS(outcomes))) ok = 0;
  fz_finish(&fz);
  return ok ? 0 : 1;
}
