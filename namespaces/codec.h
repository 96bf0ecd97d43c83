/*
 * The byte codec under the record codec (record.h) and the snapshot codec
 * (snapshot.h): little-endian integers, length-prefixed strings and tag sets
 * appended to a GByteArray, and a reader over hostile input that takes the
 * same pieces back and keeps the first failure as a reason such as
 * "record: flags truncated (4 bytes needed, 3 left) at byte 2 of 5".
 * Internal to namespaces/; no I/O.
 *
 * A reader fails once: after its first failure every ns_codec_take() returns
 * NULL and every ns_codec_get_*() returns 0, so a decoder can read a run of
 * fields and test r->failed once at the end of the run.
 */
#ifndef MAYFLY_NS_CODEC_H
#define MAYFLY_NS_CODEC_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

/* The most bytes of a failure's message (before the prefix and the offset). */
#define NS_CODEC_MSG_MAX 400

/* ---- encoding -------------------------------------------------------------- */

/* Appends the low n bytes (1 to 8) of v to o, least significant first. */
void ns_codec_put_le(GByteArray *o, uint64_t v, int n);

static inline void ns_codec_put_u8(GByteArray *o, uint8_t v) { g_byte_array_append(o, &v, 1); }
static inline void ns_codec_put_u32(GByteArray *o, uint32_t v) { ns_codec_put_le(o, v, 4); }
static inline void ns_codec_put_u64(GByteArray *o, uint64_t v) { ns_codec_put_le(o, v, 8); }

/*
 * Appends the string s (not NULL) as its u32 length and its bytes. Returns 0,
 * or MAYFLY_EINVAL when s is longer than max bytes, in which case nothing is
 * appended.
 */
int ns_codec_put_str(GByteArray *o, const char *s, size_t max);

/*
 * Appends tags (char * to char *, or NULL for none) as a u32 count and then
 * the key/value pairs sorted by key, each as ns_codec_put_str(), so that the
 * encoding is canonical; a NULL value is written as "". Returns 0, or
 * MAYFLY_EINVAL when there are more than max_tags tags or a key or value is
 * longer than str_max bytes; then o may hold part of the tags (the caller
 * truncates it back).
 */
int ns_codec_put_tags(GByteArray *o, GHashTable *tags, guint max_tags, size_t str_max);

/* ---- decoding -------------------------------------------------------------- */

/* A reader of len bytes; set it up with ns_codec_reader_init(). */
typedef struct {
  const uint8_t *p; /* the next byte */
  size_t left;      /* bytes from p to the end */
  size_t len;       /* of the whole input, for offsets in reasons */
  const char *what; /* prefix of reasons: "record", "snapshot" */
  size_t msg_max;   /* bytes kept of a message, its NUL included */
  char *why;        /* the reason of the first failure; may be NULL */
  size_t whylen;
  int failed;
} ns_codec_reader_t;

/*
 * Sets r up to read the len bytes at data (borrowed; they must outlive r).
 * A failure writes "<what>: <message> at byte N of M" into why (NULL or
 * whylen 0: no reason kept), with the message cut to msg_max - 1 bytes
 * (msg_max from 1 to NS_CODEC_MSG_MAX; the record codec keeps 200 and the
 * snapshot codec 400, as each did before they shared this code, so their
 * reasons read exactly as they did). `what` is borrowed too (a literal).
 */
void ns_codec_reader_init(ns_codec_reader_t *r, const char *what, size_t msg_max,
                          const uint8_t *data, size_t len, char *why, size_t whylen);

/*
 * Marks r failed with the message fmt formats, unless it has failed already:
 * only the first failure's reason is kept, with the offset where it happened.
 */
void ns_codec_fail(ns_codec_reader_t *r, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/*
 * Takes the next n bytes and returns them (pointing into the input), or
 * returns NULL when r has failed or when fewer than n bytes are left, failing
 * it with "<what> truncated (n bytes needed, m left)".
 */
const uint8_t *ns_codec_take(ns_codec_reader_t *r, size_t n, const char *what);

/* Takes n bytes (1 to 8) as a little-endian integer; 0 when r fails. */
uint64_t ns_codec_get_le(ns_codec_reader_t *r, int n, const char *what);

static inline uint8_t ns_codec_get_u8(ns_codec_reader_t *r, const char *w) {
  return (uint8_t)ns_codec_get_le(r, 1, w);
}
static inline uint32_t ns_codec_get_u32(ns_codec_reader_t *r, const char *w) {
  return (uint32_t)ns_codec_get_le(r, 4, w);
}
static inline int32_t ns_codec_get_i32(ns_codec_reader_t *r, const char *w) {
  return (int32_t)ns_codec_get_u32(r, w);
}
static inline int64_t ns_codec_get_i64(ns_codec_reader_t *r, const char *w) {
  return (int64_t)ns_codec_get_le(r, 8, w);
}

/*
 * Takes the n bytes of a string whose u32 length n the caller has read
 * (so that it can give some lengths a meaning of their own first). Fails r
 * when n is over max, the bytes are truncated or contain a NUL byte. Returns
 * 0 with *out a new NUL-terminated copy (g_free it), or -1 with *out NULL.
 */
int ns_codec_get_chars(ns_codec_reader_t *r, uint32_t n, uint32_t max, const char *what,
                       char **out);

/*
 * Reads a u32 count of elements that take at least min_bytes each and
 * checks it against max and against the bytes left, so the caller may
 * allocate for it. Returns the count, or 0 when r fails.
 */
uint32_t ns_codec_get_count(ns_codec_reader_t *r, const char *what, uint32_t max,
                            size_t min_bytes);

#endif
