/*
 * Unit tests for directory/wal.c on real files in a temporary directory:
 * batches round trip; a torn tail, cut at every byte of the last record in
 * turn, loads the prefix and reports the bytes dropped; a flipped byte in an
 * earlier record is refused naming the offset, or cut there with
 * DIR_WAL_CUT_CORRUPT; empty, header-only, wrong-version and foreign files.
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "directory/wal.h"
#include "mf_test.h"

static char why[512];
static char *tmp;  /* the temporary directory of one test */
static char *file; /* tmp/wal.log */

static void fresh_dir(void) {
  GError *err = NULL;
  tmp = g_dir_make_tmp("mayfly-wal-XXXXXX", &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(tmp);
  file = g_build_filename(tmp, "wal.log", NULL);
}

static void remove_dir(void) {
  g_unlink(file);
  CU_ASSERT_EQUAL(g_rmdir(tmp), 0);
  g_free(file);
  g_free(tmp);
}

/* Record k of a test log: k's number repeated, 1 to 300 bytes. */
static GByteArray *make_record(int k) {
  GByteArray *r = g_byte_array_new();
  int len = 1 + (k * 37) % 300;
  for (int i = 0; i < len; i++) {
    uint8_t b = (uint8_t)(k + i);
    g_byte_array_append(r, &b, 1);
  }
  return r;
}

/* What the load callback saw. */
typedef struct {
  GPtrArray *recs; /* GByteArray * */
  GArray *offsets; /* int64_t */
} seen_t;

static int collect(const uint8_t *data, uint32_t len, int64_t offset, void *ud) {
  seen_t *s = ud;
  GByteArray *r = g_byte_array_new();
  g_byte_array_append(r, data, len);
  g_ptr_array_add(s->recs, r);
  g_array_append_val(s->offsets, offset);
  return 0;
}

static void seen_init(seen_t *s) {
  s->recs = g_ptr_array_new_with_free_func((GDestroyNotify)g_byte_array_unref);
  s->offsets = g_array_new(FALSE, FALSE, sizeof(int64_t));
}

static void seen_clear(seen_t *s) {
  g_ptr_array_free(s->recs, TRUE);
  g_array_free(s->offsets, TRUE);
}

/* Opens and loads the log; returns the load's code. */
static int open_load(unsigned flags, seen_t *s, dir_wal_load_result_t *res, dir_wal_t **out) {
  dir_wal_t *w = NULL;
  MF_ASSERT_EQ(dir_wal_open(tmp, "wal.log", &w, why, sizeof why), 0);
  why[0] = '\0';
  int rc = dir_wal_load(w, flags, collect, s, res, why, sizeof why);
  if (out != NULL && rc == 0) {
    *out = w;
  } else {
    dir_wal_close(w);
  }
  return rc;
}

/* Opens and loads the log, for appends (its records are not kept). */
static dir_wal_t *open_for_appends(void) {
  dir_wal_t *w = NULL;
  seen_t s;
  seen_init(&s);
  dir_wal_load_result_t res;
  MF_ASSERT_EQ(open_load(0, &s, &res, &w), 0);
  seen_clear(&s);
  return w;
}

/* Writes `nrec` records in batches of 1, 2, 3, ... and closes the log. */
static void write_log(int nrec) {
  dir_wal_t *w = open_for_appends();
  int k = 0;
  for (int batch = 1; k < nrec; batch++) {
    int n = MIN(batch, nrec - k);
    GByteArray *recs[64];
    dir_wal_rec_t v[64];
    for (int i = 0; i < n; i++) {
      recs[i] = make_record(k + i);
      v[i] = (dir_wal_rec_t){recs[i]->data, recs[i]->len};
    }
    MF_ASSERT_EQ(dir_wal_append(w, v, (size_t)n, why, sizeof why), 0);
    for (int i = 0; i < n; i++) g_byte_array_free(recs[i], TRUE);
    k += n;
  }
  dir_wal_close(w);
}

/* Asserts that s holds records 0..n-1. */
static void expect_records(const seen_t *s, int n) {
  MF_ASSERT_EQ(s->recs->len, (guint)n);
  for (int k = 0; k < n && k < (int)s->recs->len; k++) {
    GByteArray *want = make_record(k), *got = g_ptr_array_index(s->recs, k);
    CU_ASSERT(want->len == got->len && memcmp(want->data, got->data, want->len) == 0);
    g_byte_array_free(want, TRUE);
  }
}

static gsize file_size(void) {
  gchar *c;
  gsize len;
  CU_ASSERT_FATAL(g_file_get_contents(file, &c, &len, NULL));
  g_free(c);
  return len;
}

static void test_batches_round_trip_and_appends_continue_after_a_reload(void) {
  fresh_dir();
  write_log(200);
  seen_t s;
  seen_init(&s);
  dir_wal_load_result_t res;
  dir_wal_t *w;
  MF_ASSERT_EQ(open_load(0, &s, &res, &w), 0);
  expect_records(&s, 200);
  MF_ASSERT_EQ(res.records, 200);
  MF_ASSERT_EQ(res.dropped_bytes, 0);
  MF_ASSERT_EQ(res.end, (int64_t)file_size());
  MF_ASSERT_EQ(g_array_index(s.offsets, int64_t, 0), DIR_WAL_HEADER_SIZE);
  /* One more batch after the reload follows the old records. */
  GByteArray *r = make_record(200), *r2 = make_record(201);
  dir_wal_rec_t v[2] = {{r->data, r->len}, {r2->data, r2->len}};
  MF_ASSERT_EQ(dir_wal_append(w, v, 2, why, sizeof why), 0);
  MF_ASSERT_EQ(dir_wal_stats(w)->records, 2);
  MF_ASSERT_EQ(dir_wal_stats(w)->syncs, 1);
  MF_ASSERT_EQ(dir_wal_stats(w)->bytes, 2 * DIR_WAL_FRAME_HEADER + r->len + r2->len);
  /* Bad batches are refused and change nothing. */
  MF_ASSERT_EQ(dir_wal_append(w, v, 0, why, sizeof why), MAYFLY_EINVAL);
  dir_wal_rec_t empty = {r->data, 0};
  MF_ASSERT_EQ(dir_wal_append(w, &empty, 1, why, sizeof why), MAYFLY_EINVAL);
  g_byte_array_free(r, TRUE);
  g_byte_array_free(r2, TRUE);
  dir_wal_close(w);
  seen_clear(&s);
  seen_init(&s);
  MF_ASSERT_EQ(open_load(0, &s, &res, NULL), 0);
  expect_records(&s, 202);
  seen_clear(&s);
  remove_dir();
}

static void test_a_torn_tail_cut_at_every_byte_loads_the_prefix(void) {
  fresh_dir();
  write_log(20);
  gchar *full;
  gsize len;
  CU_ASSERT_FATAL(g_file_get_contents(file, &full, &len, NULL));
  seen_t s;
  seen_init(&s);
  dir_wal_load_result_t res;
  MF_ASSERT_EQ(open_load(0, &s, &res, NULL), 0);
  int64_t last = g_array_index(s.offsets, int64_t, 19);
  seen_clear(&s);
  for (gsize cut = (gsize)last; cut < len; cut++) {
    CU_ASSERT_FATAL(g_file_set_contents(file, full, (gssize)cut, NULL));
    seen_init(&s);
    int rc = open_load(0, &s, &res, NULL);
    if (rc != 0) fprintf(stderr, "  cut at %zu: %s\n", (size_t)cut, why);
    MF_ASSERT_EQ(rc, 0);
    expect_records(&s, 19);
    MF_ASSERT_EQ(res.dropped_bytes, (int64_t)(cut - (gsize)last));
    MF_ASSERT_EQ(res.end, last);
    MF_ASSERT_EQ(file_size(), (gsize)last); /* the tail is gone from the file too */
    seen_clear(&s);
  }
  /* A last record whose bytes are all there but damaged is a torn write too. */
  full[len - 1] ^= 0x40;
  CU_ASSERT_FATAL(g_file_set_contents(file, full, (gssize)len, NULL));
  seen_init(&s);
  MF_ASSERT_EQ(open_load(0, &s, &res, NULL), 0);
  expect_records(&s, 19);
  MF_ASSERT_EQ(res.dropped_bytes, (int64_t)len - last);
  seen_clear(&s);
  /* So is a tail of zeros, as a file system may leave after a crash (or
   * an append preallocated): counted apart, nothing was lost. */
  full[len - 1] ^= 0x40;
  GByteArray *z = g_byte_array_new();
  g_byte_array_append(z, (const guint8 *)full, (guint)len);
  g_byte_array_set_size(z, (guint)len + 4096);
  memset(z->data + len, 0, 4096);
  CU_ASSERT_FATAL(g_file_set_contents(file, (const gchar *)z->data, z->len, NULL));
  seen_init(&s);
  MF_ASSERT_EQ(open_load(0, &s, &res, NULL), 0);
  expect_records(&s, 20);
  MF_ASSERT_EQ(res.dropped_bytes, 0);
  MF_ASSERT_EQ(res.zero_bytes, 4096);
  seen_clear(&s);
  g_byte_array_free(z, TRUE);
  g_free(full);
  remove_dir();
}

static void test_a_flipped_byte_in_an_earlier_record_is_refused_or_cut(void) {
  fresh_dir();
  write_log(30);
  gchar *full;
  gsize len;
  CU_ASSERT_FATAL(g_file_get_contents(file, &full, &len, NULL));
  seen_t s;
  seen_init(&s);
  dir_wal_load_result_t res;
  MF_ASSERT_EQ(open_load(0, &s, &res, NULL), 0);
  int64_t at = g_array_index(s.offsets, int64_t, 12);
  seen_clear(&s);
  full[at + DIR_WAL_FRAME_HEADER + 1] ^= 0x01; /* inside record 12's payload */
  CU_ASSERT_FATAL(g_file_set_contents(file, full, (gssize)len, NULL));
  seen_init(&s);
  MF_ASSERT_EQ(open_load(0, &s, &res, NULL), MAYFLY_EPROTO);
  char offset[32];
  snprintf(offset, sizeof offset, "offset %lld", (long long)at);
  CU_ASSERT(strstr(why, offset) != NULL);
  CU_ASSERT(strstr(why, file) != NULL);
  MF_ASSERT_EQ(file_size(), len); /* refused: the file is untouched */
  seen_clear(&s);
  /* An impossible length in an earlier record is corruption as well. */
  gchar *zero_len = g_memdup2(full, len);
  full[at + DIR_WAL_FRAME_HEADER + 1] ^= 0x01;
  memset(zero_len + at, 0, 4);
  CU_ASSERT_FATAL(g_file_set_contents(file, zero_len, (gssize)len, NULL));
  seen_init(&s);
  MF_ASSERT_EQ(open_load(0, &s, &res, NULL), MAYFLY_EPROTO);
  CU_ASSERT(strstr(why, offset) != NULL);
  seen_clear(&s);
  g_free(zero_len);
  /* With the cut flag the log is cut at the corrupt record. */
  full[at + DIR_WAL_FRAME_HEADER + 1] ^= 0x01;
  CU_ASSERT_FATAL(g_file_set_contents(file, full, (gssize)len, NULL));
  seen_init(&s);
  MF_ASSERT_EQ(open_load(DIR_WAL_CUT_CORRUPT, &s, &res, NULL), 0);
  expect_records(&s, 12);
  MF_ASSERT_EQ(res.corrupt_at, at);
  MF_ASSERT_EQ(res.dropped_bytes, (int64_t)len - at);
  MF_ASSERT_EQ(file_size(), (gsize)at);
  seen_clear(&s);
  g_free(full);
  remove_dir();
}

static void test_empty_header_only_and_torn_header_files(void) {
  fresh_dir();
  seen_t s;
  dir_wal_load_result_t res;
  /* No file yet, then an empty one: each gets a header. */
  seen_init(&s);
  MF_ASSERT_EQ(open_load(0, &s, &res, NULL), 0);
  MF_ASSERT_EQ(res.records, 0);
  CU_ASSERT(res.created);
  MF_ASSERT_EQ(file_size(), DIR_WAL_HEADER_SIZE);
  seen_clear(&s);
  CU_ASSERT_FATAL(g_file_set_contents(file, "", 0, NULL));
  seen_init(&s);
  MF_ASSERT_EQ(open_load(0, &s, &res, NULL), 0);
  CU_ASSERT(res.created);
  MF_ASSERT_EQ(file_size(), DIR_WAL_HEADER_SIZE);
  seen_clear(&s);
  /* Header only: no records, nothing created or dropped. */
  seen_init(&s);
  MF_ASSERT_EQ(open_load(0, &s, &res, NULL), 0);
  MF_ASSERT_EQ(res.records, 0);
  CU_ASSERT(!res.created);
  MF_ASSERT_EQ(res.dropped_bytes, 0);
  seen_clear(&s);
  /* A header torn on creation is started afresh. */
  uint8_t hdr[DIR_WAL_HEADER_SIZE];
  dir_wal_header(hdr);
  CU_ASSERT_FATAL(g_file_set_contents(file, (const gchar *)hdr, 7, NULL));
  seen_init(&s);
  MF_ASSERT_EQ(open_load(0, &s, &res, NULL), 0);
  CU_ASSERT(res.created);
  MF_ASSERT_EQ(res.dropped_bytes, 7);
  MF_ASSERT_EQ(file_size(), DIR_WAL_HEADER_SIZE);
  seen_clear(&s);
  remove_dir();
}

static void test_wrong_version_magic_or_header_checksum_is_a_clear_error(void) {
  fresh_dir();
  write_log(3);
  gchar *full;
  gsize len;
  CU_ASSERT_FATAL(g_file_get_contents(file, &full, &len, NULL));
  seen_t s;
  dir_wal_load_result_t res;
  /* Version 2 with a valid header checksum. */
  gchar *v2 = g_memdup2(full, len);
  v2[8] = 2;
  uint32_t crc = dir_wal_crc32c(0, v2, 12);
  for (int i = 0; i < 4; i++) v2[12 + i] = (gchar)(crc >> (8 * i));
  CU_ASSERT_FATAL(g_file_set_contents(file, v2, (gssize)len, NULL));
  seen_init(&s);
  MF_ASSERT_EQ(open_load(DIR_WAL_CUT_CORRUPT, &s, &res, NULL), MAYFLY_EPROTO);
  CU_ASSERT(strstr(why, "version 2") != NULL);
  MF_ASSERT_EQ(s.recs->len, 0);
  MF_ASSERT_EQ(file_size(), len);
  seen_clear(&s);
  g_free(v2);
  /* A foreign file. */
  CU_ASSERT_FATAL(g_file_set_contents(file, "hello, this is not a log", -1, NULL));
  seen_init(&s);
  MF_ASSERT_EQ(open_load(0, &s, &res, NULL), MAYFLY_EPROTO);
  CU_ASSERT(strstr(why, "not a Mayfly log") != NULL);
  seen_clear(&s);
  CU_ASSERT_FATAL(g_file_set_contents(file, "hello", -1, NULL));
  seen_init(&s);
  MF_ASSERT_EQ(open_load(0, &s, &res, NULL), MAYFLY_EPROTO);
  seen_clear(&s);
  /* A damaged header checksum. */
  full[13] ^= 1;
  CU_ASSERT_FATAL(g_file_set_contents(file, full, (gssize)len, NULL));
  seen_init(&s);
  MF_ASSERT_EQ(open_load(0, &s, &res, NULL), MAYFLY_EPROTO);
  CU_ASSERT(strstr(why, "checksum") != NULL);
  seen_clear(&s);
  g_free(full);
  remove_dir();
}

/* A callback's error stops the load and is returned as it is. */
static int stop_at_third(const uint8_t *data, uint32_t len, int64_t offset, void *ud) {
  (void)data, (void)len, (void)offset;
  return ++*(int *)ud == 3 ? MAYFLY_EINVAL : 0;
}

/* With preallocation the file holds zeros past the last frame; a reload
 * keeps every record, counts the zeros apart and cuts them; a frame torn
 * inside the zeros (its bytes half there, zeros after) is a torn tail, not
 * corruption. */
static void test_preallocated_zeros_are_not_lost_data(void) {
  fresh_dir();
  dir_wal_t *w = open_for_appends();
  dir_wal_preallocate(w, 64 << 10);
  for (int i = 0; i < 3; i++) {
    GByteArray *r = make_record(i);
    dir_wal_rec_t v = {r->data, r->len};
    MF_ASSERT_EQ(dir_wal_append(w, &v, 1, why, sizeof why), 0);
    g_byte_array_free(r, TRUE);
  }
  dir_wal_close(w);
  gsize grown = file_size();
  seen_t s;
  dir_wal_load_result_t res;
  seen_init(&s);
  MF_ASSERT_EQ(open_load(0, &s, &res, NULL), 0);
  expect_records(&s, 3);
  MF_ASSERT_EQ(res.dropped_bytes, 0);
  CU_ASSERT(res.zero_bytes >= (64 << 10));
  MF_ASSERT_EQ((gsize)(res.end + res.zero_bytes), grown);
  MF_ASSERT_EQ(file_size(), (gsize)res.end);
  int64_t end = res.end;
  seen_clear(&s);
  /* A fourth frame written halfway into preallocated zeros. */
  GByteArray *r = make_record(3);
  guint8 frame[8];
  for (int i = 0; i < 4; i++) frame[i] = (guint8)(r->len >> (8 * i));
  uint32_t crc = 0xdeadbeef; /* whatever: the payload is incomplete */
  memcpy(frame + 4, &crc, 4);
  gchar *full;
  gsize len;
  CU_ASSERT_FATAL(g_file_get_contents(file, &full, &len, NULL));
  GByteArray *img = g_byte_array_new();
  g_byte_array_append(img, (const guint8 *)full, (guint)len);
  g_byte_array_append(img, frame, sizeof frame);
  g_byte_array_append(img, r->data, r->len / 2);
  guint at = img->len;
  g_byte_array_set_size(img, at + 8192);
  memset(img->data + at, 0, 8192);
  CU_ASSERT_FATAL(g_file_set_contents(file, (const gchar *)img->data, img->len, NULL));
  seen_init(&s);
  MF_ASSERT_EQ(open_load(0, &s, &res, NULL), 0);
  expect_records(&s, 3);
  MF_ASSERT_EQ(res.end, end);
  MF_ASSERT_EQ(res.dropped_bytes + res.zero_bytes, (int64_t)(img->len - (guint)end));
  CU_ASSERT(res.dropped_bytes >= 8 && res.dropped_bytes <= 8 + (int64_t)r->len);
  seen_clear(&s);
  g_byte_array_free(img, TRUE);
  g_byte_array_free(r, TRUE);
  g_free(full);
  remove_dir();
}

/* Two batches written, one sync that started after both: a reload finds
 * both, in order, and an append after them continues the file. */
static void test_writes_then_one_sync_keep_order(void) {
  fresh_dir();
  dir_wal_t *w = open_for_appends();
  GByteArray *r[3];
  dir_wal_rec_t v[3];
  for (int i = 0; i < 3; i++) {
    r[i] = make_record(i);
    v[i] = (dir_wal_rec_t){r[i]->data, r[i]->len};
  }
  MF_ASSERT_EQ(dir_wal_write(w, &v[0], 1, why, sizeof why), 0);
  MF_ASSERT_EQ(dir_wal_write(w, &v[1], 1, why, sizeof why), 0);
  MF_ASSERT_EQ(dir_wal_sync(w, why, sizeof why), 0);
  MF_ASSERT_EQ(dir_wal_append(w, &v[2], 1, why, sizeof why), 0);
  MF_ASSERT_EQ(dir_wal_stats(w)->records, 3);
  for (int i = 0; i < 3; i++) g_byte_array_free(r[i], TRUE);
  dir_wal_close(w);
  seen_t s;
  dir_wal_load_result_t res;
  seen_init(&s);
  MF_ASSERT_EQ(open_load(0, &s, &res, NULL), 0);
  MF_ASSERT_EQ(res.records, 3);
  expect_records(&s, 3);
  seen_clear(&s);
  remove_dir();
}

static void test_a_callback_error_stops_the_load(void) {
  fresh_dir();
  write_log(5);
  dir_wal_t *w;
  MF_ASSERT_EQ(dir_wal_open(tmp, "wal.log", &w, why, sizeof why), 0);
  int count = 0;
  dir_wal_load_result_t res;
  MF_ASSERT_EQ(dir_wal_load(w, 0, stop_at_third, &count, &res, why, sizeof why), MAYFLY_EINVAL);
  MF_ASSERT_EQ(count, 3);
  dir_wal_close(w);
  remove_dir();
}

/* The CRC32C check value of the standard ("123456789" -> 0xE3069283). */
static void test_crc32c_matches_the_standard_check_value(void) {
  MF_ASSERT_EQ(dir_wal_crc32c(0, "123456789", 9), 0xE3069283u);
  MF_ASSERT_EQ(dir_wal_crc32c(dir_wal_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
}

static const mf_test_t tests[] = {
    {"batches round trip and appends continue after a reload",
     test_batches_round_trip_and_appends_continue_after_a_reload},
    {"a torn tail cut at every byte loads the prefix",
     test_a_torn_tail_cut_at_every_byte_loads_the_prefix},
    {"a flipped byte in an earlier record is refused or cut",
     test_a_flipped_byte_in_an_earlier_record_is_refused_or_cut},
    {"empty, header-only and torn-header files", test_empty_header_only_and_torn_header_files},
    {"wrong version, magic or header checksum is a clear error",
     test_wrong_version_magic_or_header_checksum_is_a_clear_error},
    {"a callback error stops the load", test_a_callback_error_stops_the_load},
    {"writes then one sync keep their order", test_writes_then_one_sync_keep_order},
    {"preallocated zeros are not lost data", test_preallocated_zeros_are_not_lost_data},
    {"crc32c matches the standard check value", test_crc32c_matches_the_standard_check_value},
    {NULL, NULL}};

int main(void) {
  return mf_test_run("directory/wal", NULL, NULL, tests);
}
