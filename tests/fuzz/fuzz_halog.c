/*
 * Fuzz target for the log values of the etcd-backed directory (directory/ha.c,
 * dir_ha_log_value_scan): the bytes of a /mayfly/NAME/log/ key, which a
 * standby reads from etcd as it follows the leader.
 *
 * A scan either fails with MAYFLY_EPROTO and a reason, or succeeds: then it
 * handed over exactly `count` records, numbered from `first` without a gap,
 * each inside the input, and their lengths plus the frames add up to the
 * input's size; rebuilding a value from those records gives back the input
 * byte for byte. Each record handed over is decoded as a standby does
 * (ns_rec_decode) and, when it decodes, re-encodes to the same bytes. Any
 * wrong answer aborts; the counters tell the replay driver which outcomes its
 * inputs reached.
 */
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "directory/ha.h"
#include "fz_check.h"
#include "namespaces/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

long fuzz_hl_ok, fuzz_hl_refused, fuzz_hl_records, fuzz_hl_rec_refused;

typedef struct {
  const uint8_t *base;
  size_t size;
  int64_t next; /* the seq the next record must have; 0 before the first */
  GPtrArray *recs;
} scan_t;

static int one(const uint8_t *data, uint32_t len, int64_t seq, void *ud) {
  scan_t *s = ud;
  FZ_CHECK(data >= s->base && data + len <= s->base + s->size && len > 0);
  FZ_CHECK(s->next == 0 || seq == s->next);
  s->next = seq + 1;
  GByteArray *r = g_byte_array_new();
  g_byte_array_append(r, data, len);
  g_ptr_array_add(s->recs, r);
  ns_rec_buf_t b;
  ns_rec_buf_init(&b);
  char why[256] = "";
  if (ns_rec_decode(data, len, &b, why, sizeof why) == 0) {
    fuzz_hl_records++;
    if (b.version == NS_REC_VERSION) {
      GByteArray *again = g_byte_array_new();
      FZ_CHECK(ns_rec_encode(&b.rec, again) == 0);
      FZ_CHECK(again->len == len && memcmp(again->data, data, len) == 0);
      g_byte_array_free(again, TRUE);
    }
  } else {
    FZ_CHECK(why[0] != '\0');
    fuzz_hl_rec_refused++;
  }
  ns_rec_buf_clear(&b);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  scan_t s = {.base = data, .size = size, .recs = g_ptr_array_new_with_free_func(
                                             (GDestroyNotify)g_byte_array_unref)};
  int64_t first = -1;
  uint32_t count = 0;
  char why[256] = "";
  int rc = dir_ha_log_value_scan(data, size, &first, &count, one, &s, why, sizeof why);
  if (rc != 0) {
    FZ_CHECK(rc == MAYFLY_EPROTO);
    FZ_CHECK(why[0] != '\0');
    fuzz_hl_refused++;
  } else {
    FZ_CHECK(first >= 1 && count >= 1 && s.recs->len == count);
    FZ_CHECK(s.next == first + (int64_t)count);
    GByteArray *again = g_byte_array_new();
    dir_ha_log_value_build(again, first, (const GByteArray *const *)s.recs->pdata, s.recs->len);
    FZ_CHECK(again->len == size && memcmp(again->data, data, size) == 0);
    g_byte_array_free(again, TRUE);
    fuzz_hl_ok++;
  }
  g_ptr_array_free(s.recs, TRUE);
  return 0;
}
