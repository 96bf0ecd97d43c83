/*
 * Replays the record and log fuzz target (fuzz_record.c) without libFuzzer:
 * encodes records of every type (the seeds), and log images made of them (a
 * header, then frames), checks that each seed decodes or scans completely,
 * runs each through the target, then runs deterministic mutations of them
 * (bit flips, random bytes, truncations, duplicated and deleted ranges,
 * splices, string and count lengths and frame lengths rewritten to lie, zero
 * tails). Every input is handed over in a heap buffer of exactly its size, so
 * under AddressSanitizer a read past the end is reported. The target aborts on
 * any wrong answer; this program exits 0 only when every input passed and
 * every outcome was reached.
 *
 * The mutations come from the shared engine (mutate.c); the edits that know
 * the format are this file's. Usage: fuzz_record_replay [ROUNDS] [--corpus DIR];
 * with --corpus the seeds are also written to DIR (seed-N.rec), to start a
 * libFuzzer run.
 */
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "directory/wal.h"
#include "mutate.h"
#include "namespaces/record.h"

extern long fuzz_rec_ok, fuzz_rec_refused;
extern long fuzz_log_clean, fuzz_log_torn, fuzz_log_refused, fuzz_log_cut, fuzz_log_header_bad;
extern long fuzz_log_records;

static fz_t fz;            /* seeds: the records, then log images */
static GPtrArray *records; /* GByteArray *: the record seeds alone */

static void add_record(const ns_record_t *r) {
  GByteArray *e = g_byte_array_new();
  if (ns_rec_encode(r, e) != 0) abort();
  g_ptr_array_add(records, e);
  fz_add_seed(&fz, g_byte_array_ref(e));
}

/* Appends one frame carrying rec to a log image. */
static void append_frame(GByteArray *log, const GByteArray *rec) {
  uint8_t h[DIR_WAL_FRAME_HEADER];
  fz_put_le(h, rec->len, 4);
  fz_put_le(h + 4, dir_wal_crc32c(dir_wal_crc32c(0, h, 4), rec->data, rec->len), 4);
  g_byte_array_append(log, h, sizeof h);
  g_byte_array_append(log, rec->data, rec->len);
}

static GByteArray *new_log(void) {
  GByteArray *log = g_byte_array_new();
  uint8_t hdr[DIR_WAL_HEADER_SIZE];
  dir_wal_header(hdr);
  g_byte_array_append(log, hdr, sizeof hdr);
  return log;
}

static void make_seeds(void) {
  records = g_ptr_array_new_with_free_func((GDestroyNotify)g_byte_array_unref);
  ns_partition_t parts[3] = {
      {.block = {1, 0, 3}, .lo = 0, .hi = 21845},
      {.block = {2, 5, 0}, .lo = 21845, .hi = 43690, .state = NS_PART_LOST},
      {.block = {1, 7, 9}, .lo = 43690, .hi = 65536}};
  GHashTable *tags = g_hash_table_new(g_str_hash, g_str_equal);
  g_hash_table_insert(tags, "owner", "alice");
  g_hash_table_insert(tags, "stage", "");
  const char *paths[] = {"/a", "/b/c", "/d"};
  add_record(&(ns_record_t){.type = NS_REC_MKDIR, .flags = NS_REC_PARENTS, .now_ms = 5,
                            .wall_ms = 1700000000000LL, .path = "/jobs/a"});
  add_record(&(ns_record_t){.type = NS_REC_CREATE, .now_ms = 6, .wall_ms = 17, .path = "/kv",
                            .kind = NS_KIND_KV, .lease_ms = 3000, .node_flags = NS_FLAG_PINNED,
                            .tags = tags, .parts = parts, .nparts = 3, .max_blocks = 8,
                            .high_wm = 80, .low_wm = 20});
  add_record(&(ns_record_t){.type = NS_REC_REMOVE, .flags = NS_REC_RECURSIVE | NS_REC_EXPIRED,
                            .path = "/jobs"});
  add_record(&(ns_record_t){.type = NS_REC_RENAME, .path = "/a", .path2 = "/b"});
  add_record(&(ns_record_t){.type = NS_REC_RENEW, .now_ms = 9, .paths = paths, .npaths = 3});
  add_record(&(ns_record_t){.type = NS_REC_ADD_PART, .path = "/q", .parts = parts, .nparts = 1});
  add_record(&(ns_record_t){.type = NS_REC_REMOVE_PART, .path = "/q", .part_index = 0});
  add_record(&(ns_record_t){.type = NS_REC_SERVER_ADD, .address = "ms1:7000", .blocks = 64,
                            .block_size = 1 << 20, .gen_floor = 12, .incarnation = ~0ull});
  add_record(&(ns_record_t){.type = NS_REC_SERVER_STATE, .server_id = 2, .up = 1});
  add_record(&(ns_record_t){.type = NS_REC_REPART_BEGIN, .flags = NS_REC_MERGE, .path = "/kv",
                            .op_id = 4, .block = {1, 2, 3}, .block2 = {2, 3, 4}, .lo = 100,
                            .hi = 200});
  add_record(&(ns_record_t){.type = NS_REC_REPART_END, .flags = NS_REC_COMMIT, .path = "/kv",
                            .op_id = 4});
  add_record(&(ns_record_t){.type = NS_REC_TRUNCATE, .path = "/f", .lo = 4096});
  /* Replication (issue 12): chains, zones, replicas and copies. */
  ns_partition_t chain = {.block = {1, 0, 3}, .lo = 0, .hi = 65536, .replicas = 3,
                          .nmore = 2, .more = {{2, 4, 1}, {3, 1, 7}}, .chain_version = 5,
                          .copy = {4, 2, 2}, .copy_op = 9};
  add_record(&(ns_record_t){.type = NS_REC_CREATE, .path = "/r", .kind = NS_KIND_KV,
                            .parts = &chain, .nparts = 1, .replicas = 3});
  add_record(&(ns_record_t){.type = NS_REC_SERVER_ADD, .address = "127.0.0.2:7000",
                            .zone = "rack-1", .blocks = 8, .block_size = 4096,
                            .incarnation = 5});
  add_record(&(ns_record_t){.type = NS_REC_REPLICA_BEGIN, .path = "/r", .lo = 0,
                            .block = {4, 2, 2}, .op_id = 9});
  add_record(&(ns_record_t){.type = NS_REC_REPLICA_END, .path = "/r", .op_id = 9,
                            .flags = NS_REC_COMMIT});
  g_hash_table_destroy(tags);
  /* Log images: empty, header only, all records, a few, and one torn. */
  fz_add_seed(&fz, g_byte_array_new());
  fz_add_seed(&fz, new_log());
  GByteArray *all = new_log();
  for (guint i = 0; i < records->len; i++) append_frame(all, g_ptr_array_index(records, i));
  fz_add_seed(&fz, all);
  GByteArray *few = new_log();
  for (guint i = 0; i < 3; i++) append_frame(few, g_ptr_array_index(records, i));
  fz_add_seed(&fz, few);
  GByteArray *torn = new_log();
  for (guint i = 3; i < 7; i++) append_frame(torn, g_ptr_array_index(records, i));
  g_byte_array_set_size(torn, torn->len - 5);
  fz_add_seed(&fz, torn);
}

/* Each record seed decodes; each log image scans as intended. */
static int seeds_check(void) {
  int ok = 1;
  char why[256];
  for (guint i = 0; i < records->len; i++) {
    GByteArray *e = g_ptr_array_index(records, i);
    ns_rec_buf_t b;
    ns_rec_buf_init(&b);
    if (ns_rec_decode(e->data, e->len, &b, why, sizeof why) != 0) {
      fprintf(stderr, "fuzz_record: record seed %u does not decode: %s\n", i, why);
      ok = 0;
    }
    ns_rec_buf_clear(&b);
  }
  const int64_t want_records[] = {0, 0, (int64_t)records->len, 3, 3};
  for (guint i = records->len; i < fz.seeds->len; i++) {
    GByteArray *s = fz_seed(&fz, i);
    dir_wal_load_result_t res;
    int rc = dir_wal_scan(s->data, s->len, "seed", 0, NULL, NULL, &res, why, sizeof why);
    if (rc != 0 || res.records != want_records[i - records->len]) {
      fprintf(stderr, "fuzz_record: log seed %u scans wrong (rc %d, %lld records)\n", i, rc,
              (long long)res.records);
      ok = 0;
    }
  }
  return ok;
}

/* The offset of a random frame's length field in a log image, or -1. */
static long pick_frame(GRand *r, const GByteArray *m) {
  long offs[64];
  int n = 0;
  size_t off = DIR_WAL_HEADER_SIZE;
  while (off + DIR_WAL_FRAME_HEADER <= m->len && n < 64) {
    offs[n++] = (long)off;
    uint32_t len = (uint32_t)m->data[off] | (uint32_t)m->data[off + 1] << 8 |
                   (uint32_t)m->data[off + 2] << 16 | (uint32_t)m->data[off + 3] << 24;
    if (len == 0 || len > m->len) break;
    off += DIR_WAL_FRAME_HEADER + len;
  }
  return n > 0 ? offs[g_rand_int_range(r, 0, n)] : -1;
}

/* A record seed spliced after this input, framed or not. */
static void splice_record(fz_t *f, GByteArray *m) {
  GRand *r = f->rand;
  GByteArray *o = g_ptr_array_index(records, g_rand_int_range(r, 0, (gint32)records->len));
  if (g_rand_boolean(r)) {
    append_frame(m, o);
  } else {
    g_byte_array_append(m, o->data, o->len);
  }
}

/* A frame length that lies. */
static void lie_frame_len(fz_t *f, GByteArray *m) {
  GRand *r = f->rand;
  long fr = pick_frame(r, m);
  if (fr >= 0) {
    const uint64_t lies[] = {0, 1, g_rand_int_range(r, 0, 512), g_rand_int(r),
                             DIR_WAL_RECORD_MAX, DIR_WAL_RECORD_MAX + 1, UINT32_MAX};
    fz_put_lie(f, m->data + fr, lies, G_N_ELEMENTS(lies), 4);
  }
}

/* A u32 string or count length that lies, anywhere. */
static void lie_u32(fz_t *f, GByteArray *m) {
  GRand *r = f->rand;
  if (m->len >= 4) {
    guint p = (guint)g_rand_int_range(r, 0, (gint32)m->len - 3);
    const uint64_t lies[] = {g_rand_int_range(r, 0, 64), UINT32_MAX, UINT32_MAX - 1,
                             NS_REC_STR_MAX, NS_REC_STR_MAX + 1, NS_TAGS_MAX + 1,
                             NS_CREATE_BLOCKS_MAX + 1, 0x7fffffffu};
    fz_put_lie(f, m->data + p, lies, G_N_ELEMENTS(lies), 4);
  }
}

/* The engine's byte edits and zero tails, and the log-aware edits above. */
static const fz_edit_t byte_edits[] = {
    FZ_BASIC_EDITS(80),
    {.op = FZ_OWN, .fn = splice_record},
    {.op = FZ_OWN, .fn = lie_frame_len},
    {.op = FZ_OWN, .fn = lie_u32},
    {.op = FZ_ZEROS, .max = 600},
    {.op = FZ_RANDOM_TAIL, .max = 64},
};

int main(int argc, char **argv) {
  fz = (fz_t){.name = "fuzz_record", .corpus_ext = ".rec", .seed = 20261201, .edits = byte_edits,
              .nedits = G_N_ELEMENTS(byte_edits), .edits_max = 6};
  fz_start(&fz, argc, argv, 200000);
  make_seeds();
  int ok = seeds_check();
  if (fz_run_seeds(&fz) != 0) ok = 0;
  fz_rounds(&fz);
  printf("fuzz_record: %u seeds and %ld mutations passed every check: %ld records decoded, "
         "%ld refused; logs: %ld clean, %ld torn tails cut, %ld corrupt refused (and cut "
         "with the flag), %ld bad headers, %ld records read\n",
         fz.seeds->len, fz.rounds, fuzz_rec_ok, fuzz_rec_refused, fuzz_log_clean,
         fuzz_log_torn, fuzz_log_refused, fuzz_log_header_bad, fuzz_log_records);
  const fz_outcome_t outcomes[] = {
      {"record decoded", fuzz_rec_ok},   {"record refused", fuzz_rec_refused},
      {"log clean", fuzz_log_clean},     {"torn tail cut", fuzz_log_torn},
      {"log refused", fuzz_log_refused}, {"log cut", fuzz_log_cut},
      {"bad header", fuzz_log_header_bad}, {"log record read", fuzz_log_records}};
  if (!fz_outcomes_reached(&fz, outcomes, G_N_ELEMENTS(outcomes))) ok = 0;
  g_ptr_array_free(records, TRUE);
  fz_finish(&fz);
  return ok ? 0 : 1;
}
