/*
 * The record codec (record.h): version 2 writes every field of an
 * ns_record_t little-endian in one fixed order; version 1 (before
 * replication) is the same without the chain of each partition and the
 * trailing zone and replicas, and is still read. See docs/log-format.md.
 */
#include "namespaces/record.h"

#include <string.h>

#include "common/error.h"
#include "namespaces/codec.h"

/* Fixed bytes of one partition: server, index, generation, lo, hi, state;
 * version 2 adds replicas, nmore, chain_version, copy and copy_op (and nmore
 * blocks). */
#define PART_BYTES_V1 (4 + 4 + 8 + 8 + 8 + 1)
#define PART_BYTES_V2 (PART_BYTES_V1 + 4 + 1 + 8 + 16 + 8)
/* Marks an absent (NULL) string in place of its length. */
#define STR_NULL UINT32_MAX
/* Bytes kept of a failure's message before the prefix and offset (codec.h). */
#define REASON_MSG_MAX 200

/* ---- encoding -------------------------------------------------------------- */

/* A string as u32 length and bytes, or STR_NULL for NULL. */
static int put_str(GByteArray *o, const char *s) {
  if (s == NULL) {
    ns_codec_put_u32(o, STR_NULL);
    return 0;
  }
  return ns_codec_put_str(o, s, NS_REC_STR_MAX);
}

static void put_block(GByteArray *o, const ns_block_t *b) {
  ns_codec_put_u32(o, b->server);
  ns_codec_put_u32(o, b->index);
  ns_codec_put_u64(o, b->generation);
}

static int encode_body(const ns_record_t *r, GByteArray *o) {
  if ((unsigned)r->type > NS_REC_TYPE_LAST || (unsigned)r->kind > NS_KIND_KV) return MAYFLY_EINVAL;
  if (r->nparts > NS_CREATE_BLOCKS_MAX || r->npaths > NS_REC_PATHS_MAX) return MAYFLY_EINVAL;
  if ((r->nparts > 0 && r->parts == NULL) || (r->npaths > 0 && r->paths == NULL)) {
    return MAYFLY_EINVAL;
  }
  ns_codec_put_u8(o, NS_REC_VERSION);
  ns_codec_put_u8(o, (uint8_t)r->type);
  ns_codec_put_u32(o, r->flags);
  ns_codec_put_u64(o, r->now_ms);
  ns_codec_put_u64(o, r->wall_ms);
  int rc = put_str(o, r->path);
  if (rc == 0) rc = put_str(o, r->path2);
  if (rc != 0) return rc;
  ns_codec_put_u8(o, (uint8_t)r->kind);
  ns_codec_put_u64(o, r->lease_ms);
  ns_codec_put_u32(o, r->node_flags);
  if ((rc = ns_codec_put_tags(o, r->tags, NS_TAGS_MAX, NS_REC_STR_MAX)) != 0) return rc;
  ns_codec_put_u32(o, r->nparts);
  for (size_t i = 0; i < r->nparts; i++) {
    const ns_partition_t *p = &r->parts[i];
    if ((unsigned)p->state > NS_PART_LOST) return MAYFLY_EINVAL;
    if (p->nmore < 0 || p->nmore > NS_CHAIN_MAX - 1) return MAYFLY_EINVAL;
    put_block(o, &p->block);
    ns_codec_put_u64(o, p->lo);
    ns_codec_put_u64(o, p->hi);
    ns_codec_put_u8(o, (uint8_t)p->state);
    ns_codec_put_u32(o, (uint32_t)p->replicas);
    ns_codec_put_u8(o, (uint8_t)p->nmore);
    for (int m = 0; m < p->nmore; m++) put_block(o, &p->more[m]);
    ns_codec_put_u64(o, p->chain_version);
    put_block(o, &p->copy);
    ns_codec_put_u64(o, p->copy_op);
  }
  ns_codec_put_u32(o, r->part_index);
  ns_codec_put_u32(o, r->npaths);
  for (size_t i = 0; i < r->npaths; i++) {
    if (r->paths[i] == NULL) return MAYFLY_EINVAL;
    if ((rc = put_str(o, r->paths[i])) != 0) return rc;
    if (o->len > NS_REC_SIZE_MAX) return MAYFLY_ETOOBIG;
  }
  if ((rc = put_str(o, r->address)) != 0) return rc;
  ns_codec_put_u32(o, r->blocks);
  ns_codec_put_u64(o, r->block_size);
  ns_codec_put_u32(o, r->server_id);
  ns_codec_put_u32(o, r->up);
  ns_codec_put_u64(o, r->gen_floor);
  ns_codec_put_u64(o, r->incarnation);
  ns_codec_put_u32(o, r->max_blocks);
  ns_codec_put_u32(o, r->high_wm);
  ns_codec_put_u32(o, r->low_wm);
  ns_codec_put_u64(o, r->op_id);
  put_block(o, &r->block);
  put_block(o, &r->block2);
  ns_codec_put_u64(o, r->lo);
  ns_codec_put_u64(o, r->hi);
  if ((rc = put_str(o, r->zone)) != 0) return rc;
  ns_codec_put_u32(o, (uint32_t)r->replicas);
  ns_codec_put_u64(o, r->req_client);
  ns_codec_put_u64(o, r->req_seq);
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

/* A string: *out is a new NUL-terminated copy, or NULL for an absent string
 * when allow_null. Returns 0 or -1 (failed). */
static int get_str(ns_codec_reader_t *r, const char *what, int allow_null, char **out) {
  *out = NULL;
  uint32_t n = ns_codec_get_u32(r, what);
  if (r->failed) return -1;
  if (n == STR_NULL) {
    if (allow_null) return 0;
    ns_codec_fail(r, "%s may not be absent", what);
    return -1;
  }
  return ns_codec_get_chars(r, n, NS_REC_STR_MAX, what, out);
}

static void get_block(ns_codec_reader_t *r, ns_block_t *b, const char *what) {
  b->server = ns_codec_get_i32(r, what);
  b->index = ns_codec_get_i32(r, what);
  b->generation = ns_codec_get_i64(r, what);
}

void ns_rec_buf_init(ns_rec_buf_t *b) { memset(b, 0, sizeof *b); }

void ns_rec_buf_clear(ns_rec_buf_t *b) {
  g_free(b->path);
  g_free(b->path2);
  g_free(b->address);
  g_free(b->zone);
  if (b->tags != NULL) g_hash_table_destroy(b->tags);
  g_free(b->parts);
  for (size_t i = 0; i < b->npaths; i++) g_free(b->paths[i]);
  g_free(b->paths);
  ns_rec_buf_init(b);
}

static void decode_body(ns_codec_reader_t *r, ns_rec_buf_t *b) {
  ns_record_t *rec = &b->rec;
  uint8_t version = ns_codec_get_u8(r, "version");
  if (r->failed) return;
  if (version < NS_REC_VERSION_MIN || version > NS_REC_VERSION) {
    ns_codec_fail(r, "encoding version %u is not a version %d to %d this build reads", version,
                  NS_REC_VERSION_MIN, NS_REC_VERSION);
    return;
  }
  b->version = version;
  uint8_t type = ns_codec_get_u8(r, "type");
  unsigned last = version == 1 ? NS_REC_TRUNCATE : NS_REC_TYPE_LAST;
  if (!r->failed && type > last) {
    ns_codec_fail(r, "unknown record type %u (version %u)", type, version);
  }
  rec->type = (ns_rec_type_t)type;
  rec->flags = ns_codec_get_u32(r, "flags");
  rec->now_ms = ns_codec_get_i64(r, "now_ms");
  rec->wall_ms = ns_codec_get_i64(r, "wall_ms");
  if (get_str(r, "path", 1, &b->path) != 0 || get_str(r, "path2", 1, &b->path2) != 0) return;
  uint8_t kind = ns_codec_get_u8(r, "kind");
  if (!r->failed && kind > NS_KIND_KV) ns_codec_fail(r, "unknown kind %u", kind);
  rec->kind = (ns_kind_t)kind;
  rec->lease_ms = ns_codec_get_i64(r, "lease_ms");
  rec->node_flags = ns_codec_get_u32(r, "node_flags");
  uint32_t ntags = ns_codec_get_count(r, "tags", NS_TAGS_MAX, 8);
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
      ns_codec_fail(r, "tag keys are not sorted and distinct (\"%s\" after \"%s\")", k, prev);
      g_free(k);
      g_free(v);
      return;
    }
    g_hash_table_insert(b->tags, k, v);
    prev = k;
  }
  uint32_t nparts = ns_codec_get_count(r, "partitions", NS_CREATE_BLOCKS_MAX,
                                       version == 1 ? PART_BYTES_V1 : PART_BYTES_V2);
  if (nparts > 0) b->parts = g_new0(ns_partition_t, nparts);
  for (uint32_t i = 0; i < nparts && !r->failed; i++) {
    ns_partition_t *p = &b->parts[i];
    get_block(r, &p->block, "partition");
    p->lo = ns_codec_get_i64(r, "partition");
    p->hi = ns_codec_get_i64(r, "partition");
    uint8_t state = ns_codec_get_u8(r, "partition");
    if (!r->failed && state > NS_PART_LOST) ns_codec_fail(r, "unknown partition state %u", state);
    p->state = (ns_part_state_t)state;
    if (version == 1) continue;
    p->replicas = ns_codec_get_i32(r, "partition replicas");
    uint8_t nmore = ns_codec_get_u8(r, "partition chain");
    if (!r->failed && nmore > NS_CHAIN_MAX - 1) {
      ns_codec_fail(r, "a chain of %u blocks is longer than %d", nmore + 1u, NS_CHAIN_MAX);
    }
    p->nmore = r->failed ? 0 : nmore;
    for (int m = 0; m < p->nmore; m++) get_block(r, &p->more[m], "chain member");
    p->chain_version = ns_codec_get_i64(r, "chain version");
    get_block(r, &p->copy, "copy block");
    p->copy_op = ns_codec_get_i64(r, "copy op");
  }
  rec->parts = b->parts;
  rec->nparts = nparts;
  rec->part_index = ns_codec_get_i32(r, "part_index");
  uint32_t npaths = ns_codec_get_count(r, "paths", NS_REC_PATHS_MAX, 4);
  if (npaths > 0) b->paths = g_new0(char *, npaths);
  for (uint32_t i = 0; i < npaths && !r->failed; i++) {
    if (get_str(r, "renewed path", 0, &b->paths[i]) != 0) return;
    b->npaths = i + 1;
  }
  rec->paths = (const char *const *)b->paths;
  rec->npaths = npaths;
  if (get_str(r, "address", 1, &b->address) != 0) return;
  rec->blocks = ns_codec_get_i32(r, "blocks");
  rec->block_size = ns_codec_get_i64(r, "block_size");
  rec->server_id = ns_codec_get_i32(r, "server_id");
  rec->up = ns_codec_get_i32(r, "up");
  rec->gen_floor = ns_codec_get_i64(r, "gen_floor");
  rec->incarnation = (uint64_t)ns_codec_get_i64(r, "incarnation");
  rec->max_blocks = ns_codec_get_i32(r, "max_blocks");
  rec->high_wm = ns_codec_get_i32(r, "high_wm");
  rec->low_wm = ns_codec_get_i32(r, "low_wm");
  rec->op_id = ns_codec_get_i64(r, "op_id");
  get_block(r, &rec->block, "block");
  get_block(r, &rec->block2, "block2");
  rec->lo = ns_codec_get_i64(r, "lo");
  rec->hi = ns_codec_get_i64(r, "hi");
  if (version >= 2) {
    if (get_str(r, "zone", 1, &b->zone) != 0) return;
    rec->replicas = ns_codec_get_i32(r, "replicas");
  }
  if (version >= 3) {
    rec->req_client = (uint64_t)ns_codec_get_i64(r, "request client");
    rec->req_seq = (uint64_t)ns_codec_get_i64(r, "request seq");
  }
  if (!r->failed && r->left != 0) ns_codec_fail(r, "%zu bytes left over after the record", r->left);
  rec->path = b->path;
  rec->path2 = b->path2;
  rec->address = b->address;
  rec->zone = b->zone;
  rec->tags = b->tags;
}

int ns_rec_decode(const uint8_t *data, size_t len, ns_rec_buf_t *b, char *why, size_t whylen) {
  ns_rec_buf_clear(b);
  ns_codec_reader_t r;
  ns_codec_reader_init(&r, "record", REASON_MSG_MAX, data, len, why, whylen);
  if (len > NS_REC_SIZE_MAX) ns_codec_fail(&r, "%zu bytes is over the record limit", len);
  decode_body(&r, b);
  if (r.failed) {
    ns_rec_buf_clear(b);
    return MAYFLY_EPROTO;
  }
  return 0;
}
