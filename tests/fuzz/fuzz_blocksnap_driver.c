/*
 * Replays the block snapshot fuzz target (fuzz_blocksnap.c) without
 * libFuzzer. The seeds: streams of file, queue and kv blocks made by
 * bs_save from a real store of the target's block size - empty, partly
 * filled, full (a sealed queue, a kv block that refused its last put), with
 * and without a chain section, with a narrow kv range - each checked to
 * restore, then mutated deterministically: the engine's byte edits, and
 * edits that know the format (a header field or a record's length that
 * lies, a record's tag changed, the stream cut inside a record). The target
 * aborts on any wrong answer; this program exits 0 only when every input
 * passed and every outcome was reached.
 *
 * Usage: fuzz_blocksnap_replay [ROUNDS] [--corpus DIR]; with --corpus the
 * seeds are also written to DIR (seed-N.bsnap), to start a libFuzzer run.
 */
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/wire.h"
#include "memserver/blocksnap.h"
#include "memserver/store.h"
#include "mutate.h"

#define FUZZ_BS_BLOCK 16384u
extern long fuzz_bs_restored, fuzz_bs_eproto, fuzz_bs_efull, fuzz_bs_ekind, fuzz_bs_chain;

static fz_t fz;
static store_t seeds_store;

static GByteArray *chain_bytes;

static int seed_save(void *ud, const store_block_t *b, GByteArray *out) {
  (void)b;
  if (ud != NULL) g_byte_array_append(out, chain_bytes->data, chain_bytes->len);
  return 0;
}

/* Adds the stream of block b as a seed (with a chain section when chain). */
static void add_block(store_block_t *b, int chain) {
  bs_chain_hook_t hook = {seed_save, NULL, chain ? b : NULL};
  bs_stream_t st;
  bs_stream_init(&st, 0);
  if (bs_save(&seeds_store, b, 77, &hook, 1000, &st) != 0) abort();
  GByteArray *all = g_byte_array_new();
  for (guint i = 0; i < st.chunks->len; i++) {
    size_t n;
    const uint8_t *p = bs_stream_chunk(&st, i, &n);
    g_byte_array_append(all, p, (guint)n);
  }
  bs_stream_clear(&st);
  fz_add_seed(&fz, all);
}

static store_block_t *fresh(int32_t i, store_kind_t kind, int64_t lo, int64_t hi) {
  store_adopt(&seeds_store, i, seeds_store.blocks[i].generation + 1, kind, lo, hi);
  return &seeds_store.blocks[i];
}

static void kv_put(store_block_t *b, const char *key, size_t klen, const uint8_t *v, size_t vlen) {
  uint64_t h = wire_kv_hash(key, (uint32_t)klen);
  if (store_kv_check_slot(b, h) != 0) return;
  store_kv_put(&seeds_store, b, h, key, (uint32_t)klen, v, vlen);
}

static void make_seeds(void) {
  uint8_t buf[FUZZ_BS_BLOCK];
  for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)(i * 37 + (i >> 7));
  chain_bytes = g_byte_array_new();
  g_byte_array_append(chain_bytes, buf, 300);
  /* Files: empty, a few bytes, a hole, full. */
  store_block_t *b = fresh(0, STORE_FILE, 0, FUZZ_BS_BLOCK);
  add_block(b, 0);
  store_file_write(&seeds_store, b, 0, buf, 100);
  add_block(b, 1);
  store_file_write(&seeds_store, b, 5000, buf, 2000);
  add_block(b, 0);
  store_file_write(&seeds_store, b, 0, buf, FUZZ_BS_BLOCK);
  add_block(b, 0);
  /* Queues: empty, items of several sizes (one empty), full and sealed. */
  b = fresh(0, STORE_QUEUE, 2, 3);
  add_block(b, 0);
  for (uint32_t i = 0; i < 12; i++) store_queue_push(&seeds_store, b, buf, (i * 53) % 400);
  add_block(b, 1);
  while (store_queue_push(&seeds_store, b, buf, 700) == 0) {
  }
  add_block(b, 0);
  /* kv: empty, some entries (an empty key and an empty value among them),
   * a narrow range, full. */
  b = fresh(0, STORE_KV, 0, WIRE_KV_SLOTS);
  b->high_wm = 70;
  b->low_wm = 20;
  add_block(b, 0);
  char key[32];
  kv_put(b, "", 0, buf, 10);
  for (int i = 0; i < 20; i++) {
    int kl = g_snprintf(key, sizeof key, "key%d", i);
    kv_put(b, key, (size_t)kl, buf + i, (size_t)(i % 4 == 0 ? 0 : i * 11));
  }
  add_block(b, 1);
  for (int i = 0; i < 1000; i++) {
    int kl = g_snprintf(key, sizeof key, "fill%d", i);
    kv_put(b, key, (size_t)kl, buf, 200);
  }
  add_block(b, 0);
  b = fresh(0, STORE_KV, 100, 40000);
  for (int i = 0; i < 30; i++) {
    int kl = g_snprintf(key, sizeof key, "r%d", i);
    kv_put(b, key, (size_t)kl, buf, 5);
  }
  add_block(b, 0);
}

/* Every seed restores, except those the target sends to a block of another
 * kind (a length of 3 modulo 7), which are refused with MAYFLY_EKIND. */
static int seeds_check(void) {
  long before = fuzz_bs_restored, kind_before = fuzz_bs_ekind, other = 0;
  for (guint i = 0; i < fz.seeds->len; i++) other += fz_seed(&fz, i)->len % 7 == 3;
  if (fz_run_seeds(&fz) != 0) return 0;
  if (fuzz_bs_restored - before != (long)fz.seeds->len - other ||
      fuzz_bs_ekind - kind_before != other) {
    fprintf(stderr, "fuzz_blocksnap: %ld of %u seeds restored, %ld refused as another kind\n",
            fuzz_bs_restored - before, fz.seeds->len, fuzz_bs_ekind - kind_before);
    return 0;
  }
  return 1;
}

/* A header field that lies: the kind, flags, watermarks, range, counts,
 * charge or chain length. */
static void lie_header(fz_t *f, GByteArray *m) {
  if (m->len < BS_HEADER_SIZE) return;
  GRand *r = f->rand;
  static const guint fields[] = {16, 24, 40, 48, 56, 64};
  const uint64_t lies[] = {0, 1, (uint64_t)g_rand_int_range(r, 0, 70000), FUZZ_BS_BLOCK,
                           FUZZ_BS_BLOCK + 1, UINT64_MAX, INT64_MAX, WIRE_KV_SLOTS,
                           UINT32_MAX};
  switch (g_rand_int_range(r, 0, 3)) {
    case 0:
      m->data[g_rand_int_range(r, 6, 10)] = (uint8_t)g_rand_int_range(r, 0, 5);
      break;
    case 1:
      m->data[g_rand_int_range(r, 6, 10)] = (uint8_t)g_rand_int_range(r, 0, 256);
      break;
    default:
      fz_put_lie(f, m->data + fields[g_rand_int_range(r, 0, G_N_ELEMENTS(fields))], lies,
                 G_N_ELEMENTS(lies), 8);
      break;
  }
}

/* A u32 after the header (most likely a record length) that lies. */
static void lie_length(fz_t *f, GByteArray *m) {
  if (m->len < BS_HEADER_SIZE + 5) return;
  GRand *r = f->rand;
  guint p = (guint)g_rand_int_range(r, BS_HEADER_SIZE + 1, (gint32)m->len - 3);
  const uint64_t lies[] = {0, 1, (uint64_t)g_rand_int_range(r, 0, 2000), FUZZ_BS_BLOCK,
                           FUZZ_BS_BLOCK + 1, WIRE_KEY_MAX, WIRE_KEY_MAX + 1, UINT32_MAX};
  fz_put_lie(f, m->data + p, lies, G_N_ELEMENTS(lies), 4);
}

/* A byte after the header (maybe a tag) set to a tag value. */
static void edit_tag(fz_t *f, GByteArray *m) {
  if (m->len <= BS_HEADER_SIZE) return;
  guint p = (guint)g_rand_int_range(f->rand, BS_HEADER_SIZE, (gint32)m->len);
  m->data[p] = (uint8_t)g_rand_int_range(f->rand, 0, 7);
}

static const fz_edit_t edits[] = {
    FZ_BASIC_EDITS(600),
    {.op = FZ_SPLICE_TAIL},
    {.op = FZ_OWN, .fn = lie_header},
    {.op = FZ_OWN, .fn = lie_length},
    {.op = FZ_OWN, .fn = edit_tag},
    {.op = FZ_ZEROS, .max = 64},
    {.op = FZ_RANDOM_TAIL, .max = 64},
};

int main(int argc, char **argv) {
  fz = (fz_t){.name = "fuzz_blocksnap", .corpus_ext = ".bsnap", .seed = 20261212,
              .edits = edits, .nedits = G_N_ELEMENTS(edits), .edits_max = 4};
  fz_start(&fz, argc, argv, 100000);
  if (store_init(&seeds_store, 1, FUZZ_BS_BLOCK) != 0) return 1;
  make_seeds();
  int ok = seeds_check();
  long seeds_ok = fuzz_bs_restored;
  fz_rounds(&fz);
  printf("fuzz_blocksnap: %u seeds and %ld mutations passed every check: %ld streams "
         "restored (%ld of them mutants, %ld with a chain section), refused: %ld EPROTO, "
         "%ld EFULL, %ld EKIND\n",
         fz.seeds->len, fz.rounds, fuzz_bs_restored, fuzz_bs_restored - seeds_ok, fuzz_bs_chain,
         fuzz_bs_eproto, fuzz_bs_efull, fuzz_bs_ekind);
  const fz_outcome_t outcomes[] = {{"mutant restored", fuzz_bs_restored - seeds_ok},
                                   {"refused EPROTO", fuzz_bs_eproto},
                                   {"refused EFULL", fuzz_bs_efull},
                                   {"refused EKIND", fuzz_bs_ekind},
                                   {"chain section restored", fuzz_bs_chain}};
  if (!fz_outcomes_reached(&fz, outcomes, G_N_ELEMENTS(outcomes))) ok = 0;
  fz_finish(&fz);
  store_free(&seeds_store);
  g_byte_array_unref(chain_bytes);
  return ok ? 0 : 1;
}
