/*
 * The record codec (record.h): version 1 writes every field of an
 * ns_record_t little-endian in one fixed order; see docs/log-format.md.
 */
#include "namespaces/record.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"

/* Fixed bytes of one partition: server, index, generation, lo, hi, state. */
#define PART_BYTES (4 + 4 + 8 + 8 + 8 + 1)
/* Marks an absent (NULL) string in place of its length. */
#define STR_NULL UINT32_MAX

/* ---- encoding -------------------------------------------------------------- */

static void put_u8(GByteArray *o, uint8_t v) { g_byte_array_append(o, &v, 1); }

static void put_le(GByteArray *o, uint64_t v, int n) {
  uint8_t b[8];
  for (int i = 0; i < n; i++) b[i] = (uint8_t)(v >> (8 * i));
  g_byte_array_append(o, b, (guint)n);
}
#define put_u32(o, v) put_le((o), (uint32_t)(v), 4)
#define put_u64(o, v) put_le((o), (uint64_t)(v), 8)

/* A string as u32 length and bytes, or STR_NULL for NULL. */
static int put_str(GByteArray *o, const char *s) {
  if (s == NULL) {
    put_u32(o, STR_NULL);
    return 0;
  }
  size_t n = strlen(s);
  if (n > NS_REC_STR_MAX) return MAYFLY_EINVAL;
  put_u32(o, n);
  g_byte_array_append(o, (const guint8 *)s, (guint)n);
  return 0;
}

static void put_block(GByteArray *o, const ns_block_t *b) {
  put_u32(o, b->server);
  put_u32(o, b->index);
  put_u64(o, b->generation);
}

static gint cmp_str(gconstpointer a, gconstpointer b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The tags as a count and sorted key/value pairs, so the encoding is canonical. */
static int put_tags(GByteArray *o, GHashTable *tags) {
  guint n = tags != NULL ? g_hash_table_size(tags) : 0;
  if (n > NS_TAGS_MAX) return MAYFLY_EINVAL;
  put_u32(o, n);
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
    rc = put_str(o, key);
    if (rc == 0) rc = put_str(o, val != NULL ? val : "");
  }
  g_ptr_array_free(keys, TRUE);
  return rc;
}

static int encode_body(const ns_record_t *r, GByteArray *o) {
  if ((unsigned)r->type > NS_REC_TRUNCATE || (unsigned)r->kind > NS_KIND_KV) return MAYFLY_EINVAL;
  if (r->nparts > NS_CREATE_BLOCKS_MAX || r->npaths > NS_REC_PATHS_MAX) return MAYFLY_EINVAL;
  if ((r->nparts > 0 && r->parts == NULL) || (r->npaths > 0 && r->paths == NULL)) {
    return MAYFLY_EINVAL;
  }
  put_u8(o, NS_REC_VERSION);
  put_u8(o, (uint8_t)r->type);
  put_u32(o, r->flags);
  put_u64(o, r->now_ms);
  put_u64(o, r->wall_ms);
  int rc = put_str(o, r->path);
  if (rc == 0) rc = put_str(o, r->path2);
  if (rc != 0) return rc;
  put_u8(o, (uint8_t)r->kind);
  put_u64(o, r->lease_ms);
  put_u32(o, r->node_flags);
  if ((rc = put_tags(o, r->tags)) != 0) return rc;
  put_u32(o, r->nparts);
  for (size_t i = 0; i < r->nparts; i++) {
    const ns_partition_t *p = &r->parts[i];
    if ((unsigned)p->state > NS_PART_LOST) return MAYFLY_EINVAL;
    put_block(o, &p->block);
    put_u64(o, p->lo);
    put_u64(o, p->hi);
    put_u8(o, (uint8_t)p->state);
  }
  put_u32(o, r->part_index);
  put_u32(o, r->npaths);
  for (size_t i = 0; i < r->npaths; i++) {
    if (r->paths[i] == NULL) return MAYFLY_EINVAL;
    if ((rc = put_str(o, r->paths[i])) != 0) return rc;
    if (o->len > NS_REC_SIZE_MAX) return MAYFLY_ETOOBIG;
  }
  if ((rc = put_str(o, r->address)) != 0) return rc;
  put_u32(o, r->blocks);
  put_u64(o, r->block_size);
  put_u32(o, r->server_id);
  put_u32(o, r->up);
  put_u64(o, r->gen_floor);
  put_u64(o, r->incarnation);
  put_u32(o, r->max_blocks);
  put_u32(o, r->high_wm);
  put_u32(o, r->low_wm);
  put_u64(o, r->op_id);
  put_block(o, &r->block);
  put_block(o, &r->block2);
  put_u64(o, r->lo);
  put_u64(o, r->hi);
  return 0;
}

int ns_rec_encode(const ns_record_t *rec, GByteArray *out) {
  guint start = out->len;
  int rc = encode_body(rec, out);
  if (rc == 0 && out->len - start > NS_REC_SIZE_MAX) rc = MAYFLY_ETOOBIG;
  if (rc != 0) g_byte_array_set_size(out, start);
  return rc;
}

/* ---- decoding -------------------------------------------------------------- */

typedef struct {
  const uint8_t *p;
  size_t left;
  size_t len; /* of the whole input, for offsets in reasons */
  char *why;
  size_t whylen;
  int failed;
} reader_t;

/* Records the first failure with its reason and offset. */
static void fail(reader_t *r, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void fail(reader_t *r, const char *fmt, ...) {
  if (r->failed) return;
  r->failed = 1;
  if (r->why == NULL || r->whylen == 0) return;
  char msg[200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(r->why, r->whylen, "record: %s at byte %zu of %zu", msg, r->len - r->left, r->len);
}

/* Takes n bytes, or fails with "truncated" and returns NULL. */
static const uint8_t *take(reader_t *r, size_t n, const char *what) {
  if (r->failed) return NULL;
  if (n > r->left) {
    fail(r, "%s truncated (%zu bytes needed, %zu left)", what, n, r->left);
    return NULL;
  }
  const uint8_t *p = r->p;
  r->p += n;
  r->left -= n;
  return p;
}

static uint64_t get_le(reader_t *r, int n, const char *what) {
  const uint8_t *p = take(r, (size_t)n, what);
  uint64_t v = 0;
  if (p == NULL) return 0;
  for (int i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}
static uint8_t get_u8(reader_t *r, const char *w) { return (uint8_t)get_le(r, 1, w); }
static uint32_t get_u32(reader_t *r, const char *w) { return (uint32_t)get_le(r, 4, w); }
static int32_t get_i32(reader_t *r, const char *w) { return (int32_t)get_u32(r, w); }
static int64_t get_i64(reader_t *r, const char *w) { return (int64_t)get_le(r, 8, w); }

/* A string: *out is a new NUL-terminated copy, or NULL for an absent string
 * when allow_null. Returns 0 or -1 (failed). */
static int get_str(reader_t *r, const char *what, int allow_null, char **out) {
  *out = NULL;
  uint32_t n = get_u32(r, what);
  if (r->failed) return -1;
  if (n == STR_NULL) {
    if (allow_null) return 0;
    fail(r, "%s may not be absent", what);
    return -1;
  }
  if (n > NS_REC_STR_MAX) {
    fail(r, "%s of %u bytes is over the limit of %d", what, n, NS_REC_STR_MAX);
    return -1;
  }
  const uint8_t *p = take(r, n, what);
  if (p == NULL) return -1;
  if (memchr(p, '\0', n) != NULL) {
    fail(r, "%s contains a NUL byte", what);
    return -1;
  }
  *out = g_strndup((const char *)p, n);
  return 0;
}

static void get_block(reader_t *r, ns_block_t *b, const char *what) {
  b->server = get_i32(r, what);
  b->index = get_i32(r, what);
  b->generation = get_i64(r, what);
}

/* A count whose elements take at least min_bytes each: checked against the
 * limit and the bytes left before the caller allocates for it. */
static uint32_t get_count(reader_t *r, const char *what, uint32_t max, size_t min_bytes) {
  uint32_t n = get_u32(r, what);
  if (r->failed) return 0;
  if (n > max) {
    fail(r, "%u %s is over the limit of %u", n, what, max);
    return 0;
  }
  if ((size_t)n * min_bytes > r->left) {
    fail(r, "%u %s cannot fit in the %zu bytes left", n, what, r->left);
    return 0;
  }
  return n;
}

void ns_rec_buf_init(ns_rec_buf_t *b) { memset(b, 0, sizeof *b); }

void ns_rec_buf_clear(ns_rec_buf_t *b) {
  g_free(b->path);
  g_free(b->path2);
  g_free(b->address);
  if (b->tags != NULL) g_hash_table_destroy(b->tags);
  g_free(b->parts);
  for (size_t i = 0; i < b->npaths; i++) g_free(b->paths[i]);
  g_free(b->paths);
  ns_rec_buf_init(b);
}

static void decode_body(reader_t *r, ns_rec_buf_t *b) {
  ns_record_t *rec = &b->rec;
  uint8_t version = get_u8(r, "version");
  if (r->failed) return;
  if (version != NS_REC_VERSION) {
    fail(r, "encoding version %u is not the version %d this build reads", version,
         NS_REC_VERSION);
    return;
  }
  uint8_t type = get_u8(r, "type");
  if (!r->failed && type > NS_REC_TRUNCATE) fail(r, "unknown record type %u", type);
  rec->type = (ns_rec_type_t)type;
  rec->flags = get_u32(r, "flags");
  rec->now_ms = get_i64(r, "now_ms");
  rec->wall_ms = get_i64(r, "wall_ms");
  if (get_str(r, "path", 1, &b->path) != 0 || get_str(r, "path2", 1, &b->path2) != 0) return;
  uint8_t kind = get_u8(r, "kind");
  if (!r->failed && kind > NS_KIND_KV) fail(r, "unknown kind %u", kind);
  rec->kind = (ns_kind_t)kind;
  rec->lease_ms = get_i64(r, "lease_ms");
  rec->node_flags = get_u32(r, "node_flags");
  uint32_t ntags = get_count(r, "tags", NS_TAGS_MAX, 8);
  if (ntags > 0) b->tags = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  char *prev = NULL;
  for (uint32_t i = 0; i < ntags && !r->failed; i++) {
    char *k, *v;
    if (get_str(r, "tag key", 0, &k) != 0) return;
    if (get_str(r, "tag value", 0, &v) != 0) {
      g_free(k);
      return;
    }
    if (prev != NULL && strcmp(prev, k) >= 0) {
      fail(r, "tag keys are not sorted and distinct (\"%s\" after \"%s\")", k, prev);
      g_free(k);
      g_free(v);
      return;
    }
    g_hash_table_insert(b->tags, k, v);
    prev = k;
  }
  uint32_t nparts = get_count(r, "partitions", NS_CREATE_BLOCKS_MAX, PART_BYTES);
  if (nparts > 0) b->parts = g_new0(ns_partition_t, nparts);
  for (uint32_t i = 0; i < nparts && !r->failed; i++) {
    ns_partition_t *p = &b->parts[i];
    get_block(r, &p->block, "partition");
    p->lo = get_i64(r, "partition");
    p->hi = get_i64(r, "partition");
    uint8_t state = get_u8(r, "partition");
    if (!r->failed && state > NS_PART_LOST) fail(r, "unknown partition state %u", state);
    p->state = (ns_part_state_t)state;
  }
  rec->parts = b->parts;
  rec->nparts = nparts;
  rec->part_index = get_i32(r, "part_index");
  uint32_t npaths = get_count(r, "paths", NS_REC_PATHS_MAX, 4);
  if (npaths > 0) b->paths = g_new0(char *, npaths);
  for (uint32_t i = 0; i < npaths && !r->failed; i++) {
    if (get_str(r, "renewed path", 0, &b->paths[i]) != 0) return;
    b->npaths = i + 1;
  }
  rec->paths = (const char *const *)b->paths;
  rec->npaths = npaths;
  if (get_str(r, "address", 1, &b->address) != 0) return;
  rec->blocks = get_i32(r, "blocks");
  rec->block_size = get_i64(r, "block_size");
  rec->server_id = get_i32(r, "server_id");
  rec->up = get_i32(r, "up");
  rec->gen_floor = get_i64(r, "gen_floor");
  rec->incarnation = (uint64_t)get_i64(r, "incarnation");
  rec->max_blocks = get_i32(r, "max_blocks");
  rec->high_wm = get_i32(r, "high_wm");
  rec->low_wm = get_i32(r, "low_wm");
  rec->op_id = get_i64(r, "op_id");
  get_block(r, &rec->block, "block");
  get_block(r, &rec->block2, "block2");
  rec->lo = get_i64(r, "lo");
  rec->hi = get_i64(r, "hi");
  if (!r->failed && r->left != 0) fail(r, "%zu bytes left over after the record", r->left);
  rec->path = b->path;
  rec->path2 = b->path2;
  rec->address = b->address;
  rec->tags = b->tags;
}

int ns_rec_decode(const uint8_t *data, size_t len, ns_rec_buf_t *b, char *why, size_t whylen) {
  ns_rec_buf_clear(b);
  reader_t r = {.p = data, .left = len, .len = len, .why = why, .whylen = whylen};
  if (len > NS_REC_SIZE_MAX) fail(&r, "%zu bytes is over the record limit", len);
  decode_body(&r, b);
  if (r.failed) {
    ns_rec_buf_clear(b);
    return MAYFLY_EPROTO;
  }
  return 0;
}
