/*
 * Fuzz target for the directory's log decoders: the record codec
 * (namespaces/record.c) and the log reader (dir_wal_scan in
 * directory/wal.c), both fed the same arbitrary bytes.
 *
 * As a record: a decode either fails with MAYFLY_EPROTO and a reason, or
 * succeeds, and then the encoding of what it decoded must be exactly the
 * input (the encoding is canonical). As a log image: the scan reads records
 * only inside the input, ends where it says, accounts for every byte (kept
 * plus dropped), refuses corruption only without the cut flag, and with the
 * flag cuts at the same record; each record it hands over is decoded too.
 * Any wrong answer aborts. The counters tell the replay driver which outcomes
 * its inputs reached.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "directory/wal.h"
#include "fz_check.h"
#include "namespaces/record.h"

long fuzz_rec_ok, fuzz_rec_refused;
long fuzz_log_clean, fuzz_log_torn, fuzz_log_refused, fuzz_log_cut, fuzz_log_header_bad;
long fuzz_log_records;

/* Decodes one record and checks the outcome; returns 1 when it decoded. */
static int decode_one(const uint8_t *data, size_t size) {
  char why[256] = "";
  ns_rec_buf_t b;
  ns_rec_buf_init(&b);
  int rc = ns_rec_decode(data, size, &b, why, sizeof why);
  if (rc != 0) {
    FZ_CHECK(rc == MAYFLY_EPROTO);
    FZ_CHECK(why[0] != '\0');
    FZ_CHECK(b.path == NULL && b.tags == NULL && b.parts == NULL && b.paths == NULL);
    return 0;
  }
  GByteArray *again = g_byte_array_new();
  FZ_CHECK(ns_rec_encode(&b.rec, again) == 0);
  if (b.version == NS_REC_VERSION) {
    FZ_CHECK(again->len == size && memcmp(again->data, data, size) == 0);
  } else {
    /* An older version re-encodes as the current one, which is canonical. */
    ns_rec_buf_t b2;
    ns_rec_buf_init(&b2);
    FZ_CHECK(again->data[0] == NS_REC_VERSION);
    FZ_CHECK(ns_rec_decode(again->data, again->len, &b2, why, sizeof why) == 0);
    GByteArray *third = g_byte_array_new();
    FZ_CHECK(ns_rec_encode(&b2.rec, third) == 0);
    FZ_CHECK(third->len == again->len && memcmp(third->data, again->data, again->len) == 0);
    g_byte_array_free(third, TRUE);
    ns_rec_buf_clear(&b2);
  }
  g_byte_array_free(again, TRUE);
  ns_rec_buf_clear(&b);
  return 1;
}

typedef struct {
  const uint8_t *base;
  size_t size;
  int64_t next; /* the offset the next record must start at */
  long n;
} scan_t;

static int on_record(const uint8_t *data, uint32_t len, int64_t offset, void *ud) {
  scan_t *s = ud;
  FZ_CHECK(offset == s->next);
  FZ_CHECK(data == s->base + offset + DIR_WAL_FRAME_HEADER);
  FZ_CHECK(len > 0 && (size_t)offset + DIR_WAL_FRAME_HEADER + len <= s->size);
  s->next = offset + DIR_WAL_FRAME_HEADER + len;
  s->n++;
  if (decode_one(data, len)) fuzz_rec_ok++;
  return 0;
}

static void scan_log(const uint8_t *data, size_t size) {
  char why[512] = "";
  dir_wal_load_result_t res, cut;
  scan_t s = {.base = data, .size = size, .next = DIR_WAL_HEADER_SIZE};
  int rc = dir_wal_scan(data, size, "fuzz.log", 0, on_record, &s, &res, why, sizeof why);
  scan_t s2 = {.base = data, .size = size, .next = DIR_WAL_HEADER_SIZE};
  char why2[512] = "";
  int rc2 = dir_wal_scan(data, size, "fuzz.log", DIR_WAL_CUT_CORRUPT, on_record, &s2, &cut, why2,
                         sizeof why2);
  if (rc == 0) {
    FZ_CHECK(rc2 == 0);
    FZ_CHECK(res.corrupt_at == -1);
    FZ_CHECK(res.end >= 0 && (size_t)res.end <= size);
    FZ_CHECK((size_t)(res.end + res.dropped_bytes + res.zero_bytes) == size);
    FZ_CHECK(res.records == s.n);
    FZ_CHECK(res.end == 0 || res.end == s.next);
    FZ_CHECK(cut.end == res.end && cut.records == res.records && cut.corrupt_at == -1);
    if (res.dropped_bytes + res.zero_bytes > 0) {
      fuzz_log_torn++;
    } else {
      fuzz_log_clean++;
    }
    fuzz_log_records += res.records;
    return;
  }
  FZ_CHECK(rc == MAYFLY_EPROTO);
  FZ_CHECK(strstr(why, "fuzz.log") != NULL);
  if (rc2 != 0) {
    /* The header is bad: no flag helps. */
    FZ_CHECK(rc2 == MAYFLY_EPROTO && s.n == 0 && s2.n == 0);
    fuzz_log_header_bad++;
    return;
  }
  /* Corruption with more log after it: the cut keeps exactly the records
   * before it. */
  FZ_CHECK(strstr(why, "offset") != NULL);
  FZ_CHECK(cut.corrupt_at >= DIR_WAL_HEADER_SIZE && cut.corrupt_at == cut.end);
  FZ_CHECK((size_t)(cut.end + cut.dropped_bytes + cut.zero_bytes) == size);
  FZ_CHECK(cut.records == s2.n && s2.n == s.n);
  char at[48];
  snprintf(at, sizeof at, "offset %lld ", (long long)cut.corrupt_at);
  FZ_CHECK(strstr(why, at) != NULL);
  fuzz_log_refused++;
  fuzz_log_cut++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (decode_one(data, size)) {
    fuzz_rec_ok++;
  } else {
    fuzz_rec_refused++;
  }
  scan_log(data, size);
  return 0;
}
