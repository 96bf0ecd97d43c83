/*
 * Replays the capability fuzz target (fuzz_cap.c) without libFuzzer. The
 * seeds: each signed capability alone (fuzz_cap_seed), and data-plane
 * frames of every opcode carrying them - client requests with a good
 * capability, with one failing one check, migrations with their frame MAC
 * (a good one, slots outside, a wrong MAC), and a stream of several back to
 * back. Each seed is checked to verify or parse as intended, run through the
 * target, then mutated deterministically: the engine's byte edits, and edits
 * that know the formats (the version, reserved and rights bytes of a
 * capability; a frame's opcode, block, generation, slots and capability
 * length; another seed's capability pasted into a frame). Every input is
 * handed over in a heap buffer of exactly its size, so under
 * AddressSanitizer a read past the end is reported. The target aborts on any
 * wrong answer; this program exits 0 only when every input passed and every
 * outcome was reached.
 *
 * Usage: fuzz_cap_replay [ROUNDS] [--corpus DIR]; with --corpus the seeds
 * are also written to DIR (seed-N.cap), to start a libFuzzer run.
 */
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/error.h"
#include "common/wire.h"
#include "memserver/capcheck.h"
#include "mutate.h"

extern const uint8_t fuzz_cap_key[MF_KEY_SIZE];
int fuzz_cap_seed(size_t i, uint8_t out[MF_CAP_SIZE]);
extern long fuzz_cap_decoded, fuzz_cap_undecoded, fuzz_cap_verified, fuzz_cap_forged;
extern long fuzz_cap_frames_ok, fuzz_cap_frames_refused, fuzz_cap_migrations_ok;

static fz_t fz;

/* Appends a frame of op for (block, gen) with slots [a0, a1), carrying seed
 * capability `seed` (none when -1) and, with mac, a frame MAC under the key
 * (a wrong one when mac is 2). */
static void append_frame(GByteArray *out, uint8_t op, uint32_t block, uint64_t gen, uint64_t a0,
                         uint64_t a1, int seed, int mac, const void *payload, uint32_t plen) {
  static uint64_t next_id = 1;
  uint8_t area[MF_FRAME_AUTH_SIZE];
  size_t n = 0;
  if (seed >= 0) {
    if (!fuzz_cap_seed((size_t)seed, area)) abort();
    n = mac ? MF_FRAME_AUTH_SIZE : MF_CAP_SIZE;
  }
  wire_hdr_t h = {.opcode = op,
                  .request_id = next_id++,
                  .block_index = block,
                  .generation = gen,
                  .arg0 = a0,
                  .arg1 = a1,
                  .cap_len = (uint16_t)n,
                  .payload_len = plen};
  if (op == WIRE_OP_KV_PUT) h.arg2 = plen / 2;
  uint8_t hdr[WIRE_HEADER_SIZE];
  wire_encode(&h, hdr);
  if (n == MF_FRAME_AUTH_SIZE) {
    mf_frame_mac(fuzz_cap_key, hdr, area, MF_CAP_SIZE, payload, plen, area + MF_CAP_SIZE);
    if (mac == 2) area[MF_CAP_SIZE + 5] ^= 0x40;
  }
  g_byte_array_append(out, hdr, sizeof hdr);
  g_byte_array_append(out, area, (guint)n);
  if (plen > 0) g_byte_array_append(out, payload, plen);
}

static void add_frame(uint8_t op, uint32_t block, uint64_t gen, uint64_t a0, uint64_t a1,
                      int seed, int mac, const void *payload, uint32_t plen) {
  GByteArray *s = g_byte_array_new();
  append_frame(s, op, block, gen, a0, a1, seed, mac, payload, plen);
  fz_add_seed(&fz, s);
}

static const uint8_t CLIENT_OPS[] = {
    WIRE_OP_BLOCK_STAT, WIRE_OP_FILE_WRITE, WIRE_OP_FILE_READ, WIRE_OP_FILE_SIZE,
    WIRE_OP_FILE_TRUNCATE, WIRE_OP_Q_PUSH, WIRE_OP_Q_POP, WIRE_OP_Q_PEEK, WIRE_OP_Q_LEN,
    WIRE_OP_KV_PUT, WIRE_OP_KV_GET, WIRE_OP_KV_DEL, WIRE_OP_KV_EXISTS};

static void make_seeds(void) {
  uint8_t cap[MF_CAP_SIZE];
  for (size_t i = 0; fuzz_cap_seed(i, cap); i++) {
    fz_add_seed(&fz, g_byte_array_append(g_byte_array_new(), cap, sizeof cap));
  }
  static const char payload[] = "key-and-a-value";
  uint32_t plen = sizeof payload - 1;
  for (size_t i = 0; i < sizeof CLIENT_OPS; i++) {
    add_frame(CLIENT_OPS[i], 3, 9, 0, 0, 0, 0, payload, plen);      /* good */
    add_frame(CLIENT_OPS[i], 3, 9, 0, 0, 1, 0, payload, plen);      /* read only */
    add_frame(CLIENT_OPS[i], 3, 9, 0, 0, -1, 0, payload, plen);     /* none */
    add_frame(CLIENT_OPS[i], 3, 9, 0, 0, 4 + (int)(i % 3), 0, payload, plen);
  }
  add_frame(WIRE_OP_PING, 0, 0, 0, 0, -1, 0, NULL, 0);
  add_frame(WIRE_OP_SERVER_STAT, 0, 0, 0, 0, 3, 0, NULL, 0);
  add_frame(WIRE_OP_SERVER_STAT, 0, 0, 0, 0, 0, 0, NULL, 0);
  add_frame(WIRE_OP_KV_GET, 4, 9, 0, 0, 7, 0, payload, plen);
  uint8_t records[64];
  guint rl = 0;
  wire_kv_entry_put(records, "alpha", 5, "one", 3);
  rl += WIRE_KV_ENTRY_HEADER + 8;
  wire_kv_entry_put(records + rl, "beta", 4, "two", 3);
  rl += WIRE_KV_ENTRY_HEADER + 7;
  add_frame(WIRE_OP_KV_MIGRATE, 3, 9, 100, 200, 2, 1, records, rl);
  add_frame(WIRE_OP_KV_MIGRATE, 3, 9, 120, 130, 2, 1, records, rl);
  add_frame(WIRE_OP_KV_MIGRATE, 3, 9, 0, 200, 2, 1, records, rl);  /* slots outside */
  add_frame(WIRE_OP_KV_MIGRATE, 3, 9, 100, 200, 2, 2, records, rl); /* wrong MAC */
  add_frame(WIRE_OP_KV_MIGRATE, 3, 9, 100, 200, 2, 0, records, rl); /* no MAC */
  add_frame(WIRE_OP_KV_MIGRATE_ABORT, 3, 9, 100, 200, 2, 1, NULL, 0);
  add_frame(WIRE_OP_KV_MIGRATE_ABORT, 4, 9, 0, 65536, 7, 1, NULL, 0);
  add_frame(WIRE_OP_KV_MIGRATE_ABORT, 3, 9, 100, 200, 0, 1, NULL, 0); /* no migrate right */
  add_frame(0x7f, 3, 9, 0, 0, -1, 0, NULL, 0);
  /* A stream: the cache sees the same capability several times. */
  GByteArray *s = g_byte_array_new();
  append_frame(s, WIRE_OP_KV_PUT, 3, 9, 0, 0, 0, 0, payload, plen);
  append_frame(s, WIRE_OP_KV_GET, 3, 9, 0, 0, 0, 0, payload, plen);
  append_frame(s, WIRE_OP_KV_GET, 3, 9, 0, 0, 1, 0, payload, plen);
  append_frame(s, WIRE_OP_KV_PUT, 3, 9, 0, 0, 1, 0, payload, plen);
  append_frame(s, WIRE_OP_KV_MIGRATE, 3, 9, 100, 200, 2, 1, records, rl);
  append_frame(s, WIRE_OP_KV_DEL, 4, 9, 0, 0, 7, 0, payload, plen);
  fz_add_seed(&fz, s);
}

/* The capability seeds verify; the frame seeds parse whole. */
static int seeds_ok(void) {
  int ok = 1;
  uint8_t cap[MF_CAP_SIZE];
  guint ncaps = 0;
  while (fuzz_cap_seed(ncaps, cap)) ncaps++;
  for (guint i = 0; i < fz.seeds->len; i++) {
    GByteArray *s = fz_seed(&fz, i);
    if (i < ncaps) {
      mf_cap_t c;
      if (mf_cap_verify(fuzz_cap_key, s->data, s->len, &c) != 0) {
        fprintf(stderr, "fuzz_cap: seed %u does not verify\n", i);
        ok = 0;
      }
      continue;
    }
    size_t pos = 0, flen = 0;
    wire_hdr_t h;
    while (pos < s->len && wire_parse(s->data + pos, s->len - pos, 1 << 20, &h, &flen) == 0) {
      pos += flen;
    }
    if (pos != s->len) {
      fprintf(stderr, "fuzz_cap: seed %u does not parse whole\n", i);
      ok = 0;
    }
  }
  return ok;
}

/* The version, reserved or rights byte of a capability at the input's start
 * or in a frame's capability area. */
static void edit_cap_byte(fz_t *f, GByteArray *m) {
  size_t at = m->len >= WIRE_HEADER_SIZE + 4 && m->data[0] == 'M' ? WIRE_HEADER_SIZE : 0;
  if (at + 4 > m->len) return;
  guint which = (guint)g_rand_int_range(f->rand, 0, 4);
  const uint8_t vals[] = {0, 1, 2, 0x0f, 0x10, 0x80, 0xff};
  m->data[at + which] = vals[g_rand_int_range(f->rand, 0, G_N_ELEMENTS(vals))];
}

/* A frame's opcode, block, generation, slots or capability length changed
 * after it was signed. */
static void edit_header(fz_t *f, GByteArray *m) {
  if (m->len < WIRE_HEADER_SIZE) return;
  GRand *r = f->rand;
  switch (g_rand_int_range(r, 0, 6)) {
    case 0: {
      const uint8_t ops[] = {0x01, 0x02, 0x03, 0x10, 0x11, 0x12, 0x13, 0x20, 0x21, 0x22,
                             0x23, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x7f};
      m->data[3] = ops[g_rand_int_range(r, 0, G_N_ELEMENTS(ops))];
      break;
    }
    case 1: {
      const uint64_t lies[] = {3, 4, 19, 3 + MS_CAPCACHE_SLOTS, UINT32_MAX};
      fz_put_lie(f, m->data + 16, lies, G_N_ELEMENTS(lies), 4);
      break;
    }
    case 2: {
      const uint64_t lies[] = {0, 8, 9, 10, UINT64_MAX};
      fz_put_lie(f, m->data + 24, lies, G_N_ELEMENTS(lies), 8);
      break;
    }
    case 3:
    case 4: {
      const uint64_t lies[] = {0, 99, 100, 101, 199, 200, 201, 65536, UINT64_MAX};
      fz_put_lie(f, m->data + (g_rand_boolean(r) ? 32 : 40), lies, G_N_ELEMENTS(lies), 8);
      break;
    }
    default: {
      const uint64_t lies[] = {0, MF_CAP_SIZE, MF_CAP_SIZE - 1, MF_CAP_SIZE + 1,
                               MF_FRAME_AUTH_SIZE, MF_FRAME_AUTH_SIZE + 1};
      fz_put_lie(f, m->data + 22, lies, G_N_ELEMENTS(lies), 2);
      break;
    }
  }
}

/* Another seed's capability pasted over a frame's. */
static void paste_cap(fz_t *f, GByteArray *m) {
  if (m->len < WIRE_HEADER_SIZE + MF_CAP_SIZE || m->data[0] != 'M') return;
  uint8_t cap[MF_CAP_SIZE];
  guint n = 0;
  while (fuzz_cap_seed(n, cap)) n++;
  fuzz_cap_seed((size_t)g_rand_int_range(f->rand, 0, (gint32)n), cap);
  memcpy(m->data + WIRE_HEADER_SIZE, cap, sizeof cap);
}

static const fz_edit_t edits[] = {
    FZ_BASIC_EDITS(64),
    {.op = FZ_APPEND_SEED},
    {.op = FZ_OWN, .fn = edit_cap_byte},
    {.op = FZ_OWN, .fn = edit_header},
    {.op = FZ_OWN, .fn = edit_header},
    {.op = FZ_OWN, .fn = paste_cap},
    {.op = FZ_RANDOM_TAIL, .max = 32},
};

int main(int argc, char **argv) {
  if (mf_auth_init() != 0) return 2;
  fz = (fz_t){.name = "fuzz_cap", .corpus_ext = ".cap", .seed = 20261201, .edits = edits,
              .nedits = G_N_ELEMENTS(edits), .edits_max = 4};
  fz_start(&fz, argc, argv, 100000);
  make_seeds();
  int ok = seeds_ok();
  if (fz_run_seeds(&fz) != 0) ok = 0;
  long seed_ok = fuzz_cap_frames_ok, seed_migrations = fuzz_cap_migrations_ok;
  fz_rounds(&fz);
  printf("fuzz_cap: %u seeds (%ld frames accepted, %ld of them migrations) and %ld mutations "
         "passed every check: %ld decoded, %ld not decoded, %ld verified, %ld forged; "
         "%ld frames accepted (%ld migrations), %ld refused\n",
         fz.seeds->len, seed_ok, seed_migrations, fz.rounds, fuzz_cap_decoded,
         fuzz_cap_undecoded, fuzz_cap_verified, fuzz_cap_forged, fuzz_cap_frames_ok,
         fuzz_cap_migrations_ok, fuzz_cap_frames_refused);
  const fz_outcome_t outcomes[] = {{"capability decoded", fuzz_cap_decoded},
                                   {"capability not decoded", fuzz_cap_undecoded},
                                   {"capability verified", fuzz_cap_verified},
                                   {"capability forged", fuzz_cap_forged},
                                   {"frame accepted", fuzz_cap_frames_ok},
                                   {"migration accepted", fuzz_cap_migrations_ok},
                                   {"frame refused", fuzz_cap_frames_refused}};
  if (!fz_outcomes_reached(&fz, outcomes, G_N_ELEMENTS(outcomes))) ok = 0;
  fz_finish(&fz);
  return ok ? 0 : 1;
}
