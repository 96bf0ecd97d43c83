/*
 * Fuzz target for the dedup table's restore (memserver/dedup.c,
 * ms_dedup_restore), fed arbitrary bytes as the table image a REPLICA_COPY
 * stream carries in its chain section (docs/data-protocol.md, "Chain state
 * in a copy").
 *
 * Each input is restored into a fresh table with small bounds (at most
 * FUZZ_DD_MAX entries, FUZZ_DD_BYTES payload bytes in its own budget). A
 * refused image (MAYFLY_EPROTO, the only error) leaves the table empty. An
 * accepted one leaves it within its bounds, with the entries and bytes its
 * own image (ms_dedup_save) describes and its budget counting exactly those
 * bytes; that image restores into a second table whose image is the same,
 * byte for byte. Freeing the tables gives every byte back to the budgets.
 * Any wrong answer aborts; the counters tell the replay driver which
 * outcomes its inputs reached.
 */
#include <glib.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/error.h"
#include "common/le.h"
#include "fz_check.h"
#include "memserver/dedup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The fuzzed table's bounds (what the driver's seeds are made for). */
#define FUZZ_DD_MAX 8u
#define FUZZ_DD_BYTES 2048u

/* Accepted, refused, accepted with the same image it was given (a canonical
 * image), accepted with entries or bytes dropped by the bounds or by acked,
 * accepted with a client that has only its acked. */
long fuzz_dd_restored, fuzz_dd_eproto, fuzz_dd_same, fuzz_dd_dropped, fuzz_dd_bare;

/* What a well-formed image holds. */
typedef struct {
  uint32_t clients, entries, bare; /* bare: clients with no entry */
  uint64_t bytes;
  int head_has_entries; /* the first client has entries */
} image_stats_t;

/* Reads an image by the documented format (not by dedup.c's code); returns
 * 0 when it is well formed. */
static int image_stats(const uint8_t *p, size_t len, image_stats_t *st) {
  memset(st, 0, sizeof *st);
  if (len < 8 || mf_le_get32(p) != 1) return -1;
  st->clients = mf_le_get32(p + 4);
  size_t pos = 8;
  for (uint32_t i = 0; i < st->clients; i++) {
    if (len - pos < 20) return -1;
    uint32_t n = mf_le_get32(p + pos + 16);
    pos += 20;
    if (n == 0) st->bare++;
    if (i == 0) st->head_has_entries = n > 0;
    for (uint32_t k = 0; k < n; k++) {
      if (len - pos < 48) return -1;
      uint32_t plen = mf_le_get32(p + pos + 44);
      pos += 48;
      if (len - pos < plen) return -1;
      pos += plen;
      st->entries++;
      st->bytes += plen;
    }
  }
  return pos == len ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ms_dedup_budget_t bu, bu2;
  ms_dedup_budget_init(&bu, FUZZ_DD_BYTES);
  ms_dedup_budget_init(&bu2, FUZZ_DD_BYTES);
  ms_dedup_t *d = ms_dedup_new(&bu, FUZZ_DD_MAX);
  int rc = ms_dedup_restore(d, data, size);
  GByteArray *img = g_byte_array_new();
  if (rc != 0) {
    FZ_CHECK(rc == MAYFLY_EPROTO);
    FZ_CHECK(ms_dedup_count(d) == 0 && ms_dedup_bytes(d) == 0 && bu.bytes == 0);
    ms_dedup_save(d, img);
    FZ_CHECK(img->len == 8 && mf_le_get32(img->data + 4) == 0);
    fuzz_dd_eproto++;
  } else {
    fuzz_dd_restored++;
    image_stats_t in, out;
    /* Accepted means well formed. */
    FZ_CHECK(image_stats(data, size, &in) == 0);
    FZ_CHECK(ms_dedup_count(d) <= FUZZ_DD_MAX && ms_dedup_bytes(d) <= FUZZ_DD_BYTES);
    FZ_CHECK(bu.bytes == ms_dedup_bytes(d));
    ms_dedup_save(d, img);
    FZ_CHECK(image_stats(img->data, img->len, &out) == 0);
    FZ_CHECK(out.entries == ms_dedup_count(d) && out.bytes == ms_dedup_bytes(d));
    FZ_CHECK(out.entries <= in.entries && out.bytes <= in.bytes);
    /* Clients past the bound are forgotten once they hold nothing but
     * their acked, least recently active first. */
    FZ_CHECK(out.clients <= FUZZ_DD_MAX || out.head_has_entries);
    if (out.entries < in.entries) fuzz_dd_dropped++;
    if (out.bare > 0) fuzz_dd_bare++;
    if (img->len == size && memcmp(img->data, data, size) == 0) fuzz_dd_same++;
    /* Its own image restores to the same table. */
    ms_dedup_t *d2 = ms_dedup_new(&bu2, FUZZ_DD_MAX);
    FZ_CHECK(ms_dedup_restore(d2, img->data, img->len) == 0);
    GByteArray *img2 = g_byte_array_new();
    ms_dedup_save(d2, img2);
    FZ_CHECK(img2->len == img->len && memcmp(img2->data, img->data, img->len) == 0);
    FZ_CHECK(bu2.bytes == ms_dedup_bytes(d2));
    g_byte_array_free(img2, TRUE);
    ms_dedup_free(d2);
  }
  g_byte_array_free(img, TRUE);
  ms_dedup_free(d);
  FZ_CHECK(bu.bytes == 0 && bu.committed.length == 0);
  FZ_CHECK(bu2.bytes == 0 && bu2.committed.length == 0);
  return 0;
}
