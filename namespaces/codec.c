/*
 * The byte codec (codec.h) that the record and snapshot codecs share:
 * little-endian integers, length-prefixed strings and sorted tag sets, and
 * the reader that checks every length against the bytes left.
 */
#include "namespaces/codec.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"

/* ---- encoding -------------------------------------------------------------- */

void ns_codec_put_le(GByteArray *o, uint64_t v, int n) {
  uint8_t b[8];
  for (int i = 0; i < n; i++) b[i] = (uint8_t)(v >> (8 * i));
  g_byte_array_append(o, b, (guint)n);
}

int ns_codec_put_str(GByteArray *o, const char *s, size_t max) {
  size_t n = strlen(s);
  if (n > max) return MAYFLY_EINVAL;
  ns_codec_put_u32(o, (uint32_t)n);
  g_byte_array_append(o, (const guint8 *)s, (guint)n);
  return 0;
}

static gint cmp_str(gconstpointer a, gconstpointer b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int ns_codec_put_tags(GByteArray *o, GHashTable *tags, guint max_tags, size_t str_max) {
  guint n = tags != NULL ? g_hash_table_size(tags) : 0;
  if (n > max_tags) return MAYFLY_EINVAL;
  ns_codec_put_u32(o, n);
  if (n == 0) return 0;
  GPtrArray *keys = g_ptr_array_new();
  GHashTableIter it;
  gpointer k;
  g_hash_table_iter_init(&it, tags);
  while (g_hash_table_iter_next(&it, &k, NULL)) g_ptr_array_add(keys, k);
  g_ptr_array_sort(keys, cmp_str);
  int rc = 0;
  for (guint i = 0; i < keys->len && rc == 0; i++) {
    const char *key = g_ptr_array_index(keys, i);
    const char *val = g_hash_table_lookup(tags, key);
    rc = ns_codec_put_str(o, key, str_max);
    if (rc == 0) rc = ns_codec_put_str(o, val != NULL ? val : "", str_max);
  }
  g_ptr_array_free(keys, TRUE);
  return rc;
}

/* ---- decoding -------------------------------------------------------------- */

void ns_codec_reader_init(ns_codec_reader_t *r, const char *what, size_t msg_max,
                          const uint8_t *data, size_t len, char *why, size_t whylen) {
  *r = (ns_codec_reader_t){.p = data,
                           .left = len,
                           .len = len,
                           .what = what,
                           .msg_max = CLAMP(msg_max, 1, NS_CODEC_MSG_MAX),
                           .why = why,
                           .whylen = whylen};
}

void ns_codec_fail(ns_codec_reader_t *r, const char *fmt, ...) {
  if (r->failed) return;
  r->failed = 1;
  if (r->why == NULL || r->whylen == 0) return;
  char msg[NS_CODEC_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, r->msg_max, fmt, ap);
  va_end(ap);
  snprintf(r->why, r->whylen, "%s: %s at byte %zu of %zu", r->what, msg, r->len - r->left,
           r->len);
}

const uint8_t *ns_codec_take(ns_codec_reader_t *r, size_t n, const char *what) {
  if (r->failed) return NULL;
  if (n > r->left) {
    ns_codec_fail(r, "%s truncated (%zu bytes needed, %zu left)", what, n, r->left);
    return NULL;
  }
  const uint8_t *p = r->p;
  r->p += n;
  r->left -= n;
  return p;
}

uint64_t ns_codec_get_le(ns_codec_reader_t *r, int n, const char *what) {
  const uint8_t *p = ns_codec_take(r, (size_t)n, what);
  uint64_t v = 0;
  if (p == NULL) return 0;
  for (int i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

int ns_codec_get_chars(ns_codec_reader_t *r, uint32_t n, uint32_t max, const char *what,
                       char **out) {
  *out = NULL;
  if (r->failed) return -1;
  if (n > max) {
    ns_codec_fail(r, "%s of %u bytes is over the limit of %u", what, n, max);
    return -1;
  }
  const uint8_t *p = ns_codec_take(r, n, what);
  if (p == NULL) return -1;
  if (memchr(p, '\0', n) != NULL) {
    ns_codec_fail(r, "%s contains a NUL byte", what);
    return -1;
  }
  *out = g_strndup((const char *)p, n);
  return 0;
}

uint32_t ns_codec_get_count(ns_codec_reader_t *r, const char *what, uint32_t max,
                            size_t min_bytes) {
  uint32_t n = ns_codec_get_u32(r, what);
  if (r->failed) return 0;
  if (n > max) {
    ns_codec_fail(r, "%u %s is over the limit of %u", n, what, max);
    return 0;
  }
  if ((size_t)n * min_bytes > r->left) {
    ns_codec_fail(r, "%u %s cannot fit in the %zu bytes left", n, what, r->left);
    return 0;
  }
  return n;
}
