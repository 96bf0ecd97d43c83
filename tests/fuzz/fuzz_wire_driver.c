/*
 * Replays the wire-codec fuzz target without libFuzzer: encodes valid frames
 * of every kind of request and reply (the seeds: single frames, kv migrations
 * carrying migration records, and a stream of several back to back), checks
 * that each seed parses completely, runs each through the target, then runs
 * deterministic mutations of them (bit flips, random bytes, truncations,
 * duplicated and deleted ranges, splices of two seeds, frame and record
 * lengths rewritten to lie). Every input is handed over in a heap buffer of
 * exactly its size, so under AddressSanitizer a read past the end is
 * reported. The target aborts on any wrong answer; this program exits 0 only
 * when every input passed and every outcome (frame ready, need more, protocol
 * error, too big; record read, records ended, record refused) was reached.
 *
 * The mutations come from the shared engine (mutate.c); the edits that know
 * the format are this file's. Usage: fuzz_wire_replay [ROUNDS] [--corpus DIR];
 * with --corpus the seeds are also written to DIR (seed-N.wire), to start a
 * libFuzzer run.
 */
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/wire.h"
#include "mutate.h"

extern long fuzz_wire_frames, fuzz_wire_again, fuzz_wire_proto, fuzz_wire_toobig;
extern long fuzz_wire_kv_records, fuzz_wire_kv_ends, fuzz_wire_kv_proto;

static fz_t fz;

/* Appends one frame (header, cap_len bytes of capability, payload) to out. */
static void append_frame(GByteArray *out, wire_hdr_t h, const void *payload) {
  uint8_t hdr[WIRE_HEADER_SIZE];
  wire_encode(&h, hdr);
  g_byte_array_append(out, hdr, sizeof hdr);
  for (uint16_t i = 0; i < h.cap_len; i++) {
    uint8_t c = (uint8_t)(0xc0 + i);
    g_byte_array_append(out, &c, 1);
  }
  if (h.payload_len > 0) g_byte_array_append(out, payload, h.payload_len);
}

/* A request header for opcode with the given payload length. */
static wire_hdr_t request(uint8_t opcode, uint32_t payload_len) {
  static uint64_t next_id = 1;
  wire_hdr_t h = {.opcode = opcode,
                  .payload_len = payload_len,
                  .request_id = next_id++,
                  .block_index = 3,
                  .generation = 17};
  return h;
}

static void add_seed(wire_hdr_t h, const void *payload) {
  GByteArray *s = g_byte_array_new();
  append_frame(s, h, payload);
  fz_add_seed(&fz, s);
}

/* Appends one migration record to out. */
static void append_record(GByteArray *out, const void *key, uint32_t klen, const void *val,
                          uint32_t vlen) {
  guint at = out->len;
  g_byte_array_set_size(out, at + WIRE_KV_ENTRY_HEADER + klen + vlen);
  wire_kv_entry_put(out->data + at, key, klen, val, vlen);
}

/* A migration of slots [lo, hi) carrying the records in `records`. */
static wire_hdr_t migrate(const GByteArray *records, uint64_t lo, uint64_t hi) {
  wire_hdr_t h = request(WIRE_OP_KV_MIGRATE, records->len);
  h.arg0 = lo;
  h.arg1 = hi;
  return h;
}

static void make_seeds(void) {
  uint8_t data[300];
  for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 13);

  add_seed(request(WIRE_OP_PING, 0), NULL);
  add_seed(request(WIRE_OP_BLOCK_STAT, 0), NULL);
  wire_hdr_t h = request(WIRE_OP_FILE_WRITE, 100);
  h.arg0 = 4096;
  add_seed(h, data);
  h = request(WIRE_OP_FILE_READ, 0);
  h.arg0 = 10;
  h.arg1 = 1 << 20;
  add_seed(h, NULL);
  add_seed(request(WIRE_OP_FILE_SIZE, 0), NULL);
  add_seed(request(WIRE_OP_Q_PUSH, 40), data);
  h = request(WIRE_OP_Q_POP, 0);
  h.arg0 = 500;
  add_seed(h, NULL);
  add_seed(request(WIRE_OP_Q_PEEK, 0), NULL);
  add_seed(request(WIRE_OP_Q_LEN, 0), NULL);
  h = request(WIRE_OP_KV_PUT, 12);
  h.arg1 = 4242;
  h.arg2 = 5;
  add_seed(h, "key\0\1value\0!");
  h = request(WIRE_OP_KV_GET, 3);
  h.arg1 = 4242;
  add_seed(h, "key");
  h = request(WIRE_OP_KV_DEL, 3);
  add_seed(h, "key");
  h = request(WIRE_OP_KV_EXISTS, 3);
  add_seed(h, "key");
  /* Replies: negative status, flags, a payload. */
  h = request(WIRE_OP_Q_PUSH, 0);
  h.flags = WIRE_F_REPLY | WIRE_F_SEALED;
  h.status = MAYFLY_EFULL;
  add_seed(h, NULL);
  h = request(WIRE_OP_FILE_READ, 300);
  h.flags = WIRE_F_REPLY;
  h.arg0 = 300;
  add_seed(h, data);
  /* kv migrations: records with binary and empty keys and values, none at
   * all, and the abort of a merge. */
  GByteArray *records = g_byte_array_new();
  append_record(records, "alpha", 5, "one", 3);
  append_record(records, "", 0, "empty key", 9);
  append_record(records, "k\0x", 3, "", 0);
  append_record(records, "bin", 3, data, 200);
  append_record(records, "", 0, "", 0);
  add_seed(migrate(records, 32768, 65536), records->data);
  GByteArray *none = g_byte_array_new();
  add_seed(migrate(none, 0, 100), NULL);
  h = request(WIRE_OP_KV_MIGRATE_ABORT, 0);
  h.arg0 = 100;
  h.arg1 = 200;
  add_seed(h, NULL);
  /* A frame with a capability. */
  h = request(WIRE_OP_KV_GET, 3);
  h.cap_len = 32;
  add_seed(h, "abc");
  /* A stream of frames back to back, the last one incomplete. */
  GByteArray *s = g_byte_array_new();
  append_frame(s, request(WIRE_OP_PING, 0), NULL);
  append_frame(s, request(WIRE_OP_Q_PUSH, 7), data);
  h = request(WIRE_OP_KV_PUT, 6);
  h.arg2 = 3;
  append_frame(s, h, "k\0vv\0v");
  append_frame(s, migrate(records, 0, 1000), records->data);
  append_frame(s, request(WIRE_OP_FILE_WRITE, 50), data);
  g_byte_array_set_size(s, s->len - 20);
  fz_add_seed(&fz, s);
  g_byte_array_free(records, TRUE);
  g_byte_array_free(none, TRUE);
}

/* Each seed is whole valid frames, except the stream's deliberate tail. */
static int seeds_parse(void) {
  int ok = 1;
  for (guint i = 0; i < fz.seeds->len; i++) {
    GByteArray *s = fz_seed(&fz, i);
    size_t pos = 0, flen = 0;
    wire_hdr_t h;
    int rc;
    while ((rc = wire_parse(s->data + pos, s->len - pos, 1 << 20, &h, &flen)) == 0) pos += flen;
    int last = i + 1 == fz.seeds->len;
    if (rc != MAYFLY_EAGAIN || (last ? pos == s->len : pos != s->len)) {
      fprintf(stderr, "fuzz_wire: seed %u does not parse as intended (rc %d at %zu of %u)\n", i,
                  rc, pos, s->len);
      ok = 0;
    }
  }
  return ok;
}

/* A payload length that lies (small, huge, just over a limit). */
static void lie_payload_len(fz_t *f, GByteArray *m) {
  GRand *r = f->rand;
  if (m->len >= 8) {
    const uint64_t lies[] = {g_rand_int_range(r, 0, 512), g_rand_int(r), 64, 65,
                             1u << 20, (1u << 20) + 1, UINT32_MAX};
    fz_put_lie(f, m->data + 4, lies, G_N_ELEMENTS(lies), 4);
  }
}

/* A capability length that lies. */
static void lie_cap_len(fz_t *f, GByteArray *m) {
  GRand *r = f->rand;
  if (m->len >= 24) {
    const uint64_t lies[] = {g_rand_int_range(r, 0, 64), WIRE_CAP_MAX, WIRE_CAP_MAX + 1, 0xffff};
    fz_put_lie(f, m->data + 22, lies, G_N_ELEMENTS(lies), 2);
  }
}

/* A migration record length that lies, in the first frame's payload. */
static void lie_record_len(fz_t *f, GByteArray *m) {
  GRand *r = f->rand;
  size_t payload = WIRE_HEADER_SIZE;
  if (m->len >= 24) payload += (size_t)(m->data[22] | m->data[23] << 8);
  size_t field = payload + 4 * (size_t)g_rand_int_range(r, 0, 2);
  if (field + 4 <= m->len) {
    const uint64_t lies[] = {g_rand_int_range(r, 0, 64), g_rand_int(r), UINT32_MAX,
                             UINT32_MAX - 7, 0x80000000u, 0x7fffffffu};
    fz_put_lie(f, m->data + field, lies, G_N_ELEMENTS(lies), 4);
  }
}

/* The engine's byte edits, a splice of another seed after this one, and the
 * frame-aware lies above. */
static const fz_edit_t byte_edits[] = {
    FZ_BASIC_EDITS(80),
    {.op = FZ_APPEND_SEED},
    {.op = FZ_OWN, .fn = lie_payload_len},
    {.op = FZ_OWN, .fn = lie_cap_len},
    {.op = FZ_OWN, .fn = lie_record_len},
    {.op = FZ_RANDOM_TAIL, .max = 64},
};

int main(int argc, char **argv) {
  fz = (fz_t){.name = "fuzz_wire", .corpus_ext = ".wire", .seed = 20261122, .edits = byte_edits,
              .nedits = G_N_ELEMENTS(byte_edits), .edits_max = 6};
  fz_start(&fz, argc, argv, 200000);
  make_seeds();
  int ok = seeds_parse();
  if (fz_run_seeds(&fz) != 0) ok = 0;
  long seed_frames = fuzz_wire_frames;
  fz_rounds(&fz);

  printf("fuzz_wire: %u seeds (%ld frames) and %ld mutations passed every check: "
         "%ld frames ready, %ld need-more, %ld protocol errors, %ld too big; "
         "%ld migration records read, %ld walks ended, %ld records refused\n",
         fz.seeds->len, seed_frames, fz.rounds, fuzz_wire_frames, fuzz_wire_again,
         fuzz_wire_proto, fuzz_wire_toobig, fuzz_wire_kv_records, fuzz_wire_kv_ends,
         fuzz_wire_kv_proto);
  const fz_outcome_t outcomes[] = {
      {"frame ready", fuzz_wire_frames},          {"need more", fuzz_wire_again},
      {"protocol error", fuzz_wire_proto},        {"too big", fuzz_wire_toobig},
      {"record read", fuzz_wire_kv_records},      {"records ended", fuzz_wire_kv_ends},
      {"record refused", fuzz_wire_kv_proto}};
  if (!fz_outcomes_reached(&fz, outcomes, G_N_ELEMENTS(outcomes))) ok = 0;
  fz_finish(&fz);
  return ok ? 0 : 1;
}
