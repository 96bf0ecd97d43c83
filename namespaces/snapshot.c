/*
 * The snapshot codec (snapshot.h): version 2 writes the tree's counters, the
 * allocator's servers and then every node in pre-order, little-endian; see
 * docs/log-format.md, "Snapshot body". Version 1 (before replication: no
 * zones, replicas, chains or copies) is still read. The decoder checks, as it reads, every
 * invariant the tree's code relies on, and builds the tree in place, so that
 * on any failure freeing the half-built tree is the whole clean-up.
 */
#include "namespaces/snapshot.h"

#include <string.h>

#include "common/error.h"
#include "namespaces/codec.h"
#include "namespaces/path.h"
#include "namespaces/record.h"

/* Fixed bytes of the encoded pieces, for the "cannot fit" checks made before
 * allocating: a block's state (generation, in_use), a partition (block, lo,
 * hi, state), a begun repartition (id, merge, src, dst, lo, hi, lost), a
 * server before its blocks and free stack (id, address length, nblocks,
 * block_size, up, incarnation, used) and the smallest node (parent, a name
 * of one byte, kind, flags, created, lease). */
#define BLOCK_STATE_BYTES (8 + 1)
#define PART_BYTES (16 + 8 + 8 + 1)
#define REPART_BYTES (8 + 1 + 16 + 16 + 8 + 8 + 1)
#define SERVER_MIN_BYTES (4 + 4 + 4 + 8 + 1 + 8 + 4 + BLOCK_STATE_BYTES + 4)
#define NODE_MIN_BYTES (4 + 4 + 1 + 1 + 4 + 8 + 8)
/* (Version 2 adds bytes to servers, partitions and repartitions; the
 * version 1 sizes above stay valid lower bounds for the checks.) */

/* ---- encoding -------------------------------------------------------------- */

static void put_block(GByteArray *o, const ns_block_t *b) {
  ns_codec_put_u32(o, b->server);
  ns_codec_put_u32(o, b->index);
  ns_codec_put_u64(o, b->generation);
}

static int put_server(GByteArray *o, const ns_server_t *s) {
  ns_codec_put_u32(o, s->id);
  if (ns_codec_put_str(o, s->address, NS_REC_STR_MAX) != 0) return MAYFLY_EINVAL;
  if (ns_codec_put_str(o, s->zone, NS_REC_STR_MAX) != 0) return MAYFLY_EINVAL;
  ns_codec_put_u32(o, s->nblocks);
  ns_codec_put_u64(o, s->block_size);
  ns_codec_put_u8(o, s->up ? 1 : 0);
  ns_codec_put_u64(o, s->incarnation);
  ns_codec_put_u32(o, s->used);
  for (int32_t i = 0; i < s->nblocks; i++) {
    ns_codec_put_u64(o, s->generation[i]);
    ns_codec_put_u8(o, s->in_use[i] ? 1 : 0);
  }
  ns_codec_put_u32(o, s->free_stack->len);
  for (guint i = 0; i < s->free_stack->len; i++) {
    ns_codec_put_u32(o, g_array_index(s->free_stack, int32_t, i));
  }
  return 0;
}

/* A leaf's fields after the ones every node has. */
static int put_leaf(GByteArray *o, const ns_node_t *n) {
  ns_codec_put_u64(o, n->layout.version);
  ns_codec_put_u32(o, n->max_blocks);
  ns_codec_put_u32(o, n->initial_blocks);
  ns_codec_put_u32(o, n->high_wm);
  ns_codec_put_u32(o, n->low_wm);
  ns_codec_put_u32(o, (uint32_t)ns_node_replicas(n));
  if (ns_codec_put_tags(o, n->tags, NS_TAGS_MAX, NS_REC_STR_MAX) != 0) return MAYFLY_EINVAL;
  ns_codec_put_u32(o, n->layout.parts->len);
  for (guint i = 0; i < n->layout.parts->len; i++) {
    const ns_partition_t *p = &g_array_index(n->layout.parts, ns_partition_t, i);
    put_block(o, &p->block);
    ns_codec_put_u64(o, p->lo);
    ns_codec_put_u64(o, p->hi);
    ns_codec_put_u8(o, (uint8_t)p->state);
    ns_codec_put_u8(o, (uint8_t)p->nmore);
    for (int m = 0; m < p->nmore; m++) put_block(o, &p->more[m]);
    ns_codec_put_u64(o, p->chain_version);
    put_block(o, &p->copy);
    ns_codec_put_u64(o, p->copy_op);
  }
  guint nr = n->reparts != NULL ? n->reparts->len : 0;
  ns_codec_put_u32(o, nr);
  for (guint i = 0; i < nr; i++) {
    const ns_repart_t *r = &g_array_index(n->reparts, ns_repart_t, i);
    ns_codec_put_u64(o, r->id);
    ns_codec_put_u8(o, r->merge ? 1 : 0);
    put_block(o, &r->src);
    put_block(o, &r->dst);
    ns_codec_put_u64(o, r->lo);
    ns_codec_put_u64(o, r->hi);
    ns_codec_put_u8(o, r->lost ? 1 : 0);
    ns_codec_put_u8(o, (uint8_t)(r->merge ? 0 : r->dst_nmore));
    for (int32_t m = 0; !r->merge && m < r->dst_nmore; m++) put_block(o, &r->dst_more[m]);
  }
  return 0;
}

/* Writes the children of directory `dir` (node number dir_no) and their
 * subtrees in pre-order, children sorted by name; *count numbers the nodes
 * as they are written (the root is 0). Depth is bounded by NS_PATH_MAX. */
static int put_children(GByteArray *o, const ns_node_t *dir, uint32_t dir_no, uint64_t *count) {
  GPtrArray *kids = ns_node_sorted_children(dir);
  int rc = 0;
  for (guint i = 0; i < kids->len && rc == 0; i++) {
    const ns_node_t *n = g_ptr_array_index(kids, i);
    if (++*count > UINT32_MAX) {
      rc = MAYFLY_EINVAL;
      break;
    }
    uint32_t no = (uint32_t)*count;
    ns_codec_put_u32(o, dir_no);
    if (ns_codec_put_str(o, n->name, NS_REC_STR_MAX) != 0) {
      rc = MAYFLY_EINVAL;
      break;
    }
    ns_codec_put_u8(o, (uint8_t)n->kind);
    ns_codec_put_u32(o, n->flags);
    ns_codec_put_u64(o, n->created_wall_ms);
    ns_codec_put_u64(o, n->lease_ms);
    rc = n->kind == NS_KIND_DIRECTORY ? put_children(o, n, no, count) : put_leaf(o, n);
  }
  g_ptr_array_free(kids, TRUE);
  return rc;
}

static gint cmp_request_client(gconstpointer a, gconstpointer b) {
  uint64_t x = (*(ns_request_t *const *)a)->client, y = (*(ns_request_t *const *)b)->client;
  return x < y ? -1 : x > y;
}

/* The request ids (version 3): u32 count, then client, seq, window,
 * wall_ms each, sorted by client (canonical). */
static void put_requests(GByteArray *o, const ns_tree_t *t) {
  GPtrArray *all = g_ptr_array_sized_new(g_hash_table_size(t->requests));
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, t->requests);
  while (g_hash_table_iter_next(&it, NULL, &v)) g_ptr_array_add(all, v);
  g_ptr_array_sort(all, cmp_request_client);
  ns_codec_put_u32(o, all->len);
  for (guint i = 0; i < all->len; i++) {
    const ns_request_t *r = g_ptr_array_index(all, i);
    ns_codec_put_u64(o, r->client);
    ns_codec_put_u64(o, r->seq);
    ns_codec_put_u64(o, r->window);
    ns_codec_put_u64(o, (uint64_t)r->wall_ms);
  }
  g_ptr_array_free(all, TRUE);
}

int ns_snap_encode(const ns_tree_t *t, const ns_snap_meta_t *meta, GByteArray *out) {
  guint start = out->len;
  const ns_alloc_t *a = t->alloc;
  ns_codec_put_u8(out, NS_SNAP_VERSION);
  ns_codec_put_u64(out, meta->seq);
  ns_codec_put_u64(out, meta->wall_ms);
  ns_codec_put_u64(out, t->n_expired);
  ns_codec_put_u64(out, t->last_op_id);
  ns_codec_put_u32(out, a->servers->len);
  int rc = 0;
  for (guint i = 0; i < a->servers->len && rc == 0; i++) {
    rc = put_server(out, g_ptr_array_index(a->servers, i));
  }
  if (rc == 0) {
    ns_codec_put_u64(out, a->blocks_total);
    ns_codec_put_u64(out, a->blocks_used);
    ns_codec_put_u64(out, t->n_dirs);
    ns_codec_put_u64(out, t->n_leaves);
    uint64_t count = 0;
    rc = put_children(out, t->root, 0, &count);
  }
  if (rc == 0) put_requests(out, t);
  if (rc != 0) g_byte_array_set_size(out, start);
  return rc;
}

/* ---- decoding -------------------------------------------------------------- */

/* A 0/1 byte. */
static int get_bool(ns_codec_reader_t *r, const char *what) {
  uint8_t v = ns_codec_get_u8(r, what);
  if (!r->failed && v > 1) ns_codec_fail(r, "%s is %u, not 0 or 1", what, v);
  return v;
}

/* An i64 in [lo, hi]. */
static int64_t get_range(ns_codec_reader_t *r, const char *what, int64_t lo, int64_t hi) {
  int64_t v = ns_codec_get_i64(r, what);
  if (!r->failed && (v < lo || v > hi)) {
    ns_codec_fail(r, "%s %lld is outside [%lld, %lld]", what, (long long)v, (long long)lo,
                  (long long)hi);
  }
  return v;
}

/* An i32 in [lo, hi]. */
static int32_t get_range32(ns_codec_reader_t *r, const char *what, int32_t lo, int32_t hi) {
  int32_t v = ns_codec_get_i32(r, what);
  if (!r->failed && (v < lo || v > hi)) {
    ns_codec_fail(r, "%s %d is outside [%d, %d]", what, v, lo, hi);
  }
  return v;
}

/* A string of at most max bytes without NUL: *out is a new copy, or NULL
 * after a failure. Returns 0 or -1. */
static int get_str(ns_codec_reader_t *r, const char *what, uint32_t max, char **out) {
  uint32_t n = ns_codec_get_u32(r, what);
  return ns_codec_get_chars(r, n, max, what, out);
}

static void get_block(ns_codec_reader_t *r, ns_block_t *b, const char *what) {
  b->server = ns_codec_get_i32(r, what);
  b->index = ns_codec_get_i32(r, what);
  b->generation = ns_codec_get_i64(r, what);
}

/* The decoder's state: the input, the tree being built and the time leases
 * restart from. */
typedef struct {
  ns_codec_reader_t r;
  ns_tree_t *t;
  int64_t now_ms;
  int version;
} dec_t;


/* Reads one server's blocks and free stack into s. The free stack must hold
 * exactly the free blocks, each once: each listed block is marked 2 in
 * in_use while the stack is read, then set back to 0. */
static void get_blocks(ns_codec_reader_t *r, ns_server_t *s) {
  int32_t used = 0;
  for (int32_t i = 0; i < s->nblocks && !r->failed; i++) {
    s->generation[i] = get_range(r, "block generation", 1, NS_SNAP_INT_MAX);
    s->in_use[i] = (uint8_t)get_bool(r, "block in_use");
    used += s->in_use[i];
  }
  if (r->failed) return;
  if (used != s->used) {
    ns_codec_fail(r, "server %d says %d blocks are used but %d are marked in use", s->id, s->used,
                  used);
    return;
  }
  uint32_t nfree = ns_codec_get_count(r, "free stack entries", (uint32_t)s->nblocks, 4);
  if (!r->failed && nfree != (uint32_t)(s->nblocks - used)) {
    ns_codec_fail(r, "server %d's free stack has %u entries for %d free blocks", s->id, nfree,
                  s->nblocks - used);
  }
  for (uint32_t i = 0; i < nfree && !r->failed; i++) {
    int32_t idx = get_range32(r, "free stack entry", 0, s->nblocks - 1);
    if (r->failed) break;
    if (s->in_use[idx] != 0) {
      ns_codec_fail(r, "block %d:%d is on the free stack %s", s->id, idx,
                    s->in_use[idx] == 1 ? "but in use" : "twice");
      break;
    }
    s->in_use[idx] = 2;
    g_array_append_val(s->free_stack, idx);
  }
  for (guint i = 0; i < s->free_stack->len; i++) {
    s->in_use[g_array_index(s->free_stack, int32_t, i)] = 0;
  }
}

/* Reads one server and adds it to the allocator, which then owns it. */
static void get_server(ns_codec_reader_t *r, int version, ns_alloc_t *a, int32_t id,
                       GHashTable *addresses) {
  int32_t got_id = ns_codec_get_i32(r, "server id");
  if (!r->failed && got_id != id) {
    ns_codec_fail(r, "server %d is numbered %d (ids run 1, 2, ... in order)", id, got_id);
  }
  char *address;
  if (r->failed || get_str(r, "server address", NS_REC_STR_MAX, &address) != 0) return;
  if (address[0] == '\0' || g_hash_table_contains(addresses, address)) {
    ns_codec_fail(r, "server %d has %s address \"%s\"", id,
                  address[0] ? "the repeated" : "an empty", address);
    g_free(address);
    return;
  }
  char *zone = NULL;
  if (version >= 2 && get_str(r, "server zone", NS_REC_STR_MAX, &zone) != 0) {
    g_free(address);
    return;
  }
  int32_t nblocks = get_range32(r, "server blocks", 1, NS_ALLOC_MAX_BLOCKS);
  int64_t block_size = get_range(r, "block size", 1, NS_SNAP_BLOCK_SIZE_MAX);
  int up = get_bool(r, "server up");
  uint64_t incarnation = (uint64_t)ns_codec_get_i64(r, "incarnation");
  int32_t used = get_range32(r, "server used", 0, nblocks);
  if (!r->failed && (size_t)nblocks * BLOCK_STATE_BYTES > r->left) {
    ns_codec_fail(r, "server %d's %d blocks cannot fit in the %zu bytes left", id, nblocks,
                  r->left);
  }
  if (r->failed) {
    g_free(address);
    g_free(zone);
    return;
  }
  ns_server_t *s = g_new0(ns_server_t, 1);
  s->id = id;
  s->address = address;
  s->host = ns_alloc_host_of(address);
  s->zone = zone != NULL ? zone : g_strdup("");
  s->nblocks = nblocks;
  s->block_size = block_size;
  s->up = up;
  s->incarnation = incarnation;
  s->used = used;
  s->generation = g_new(int64_t, (gsize)nblocks);
  s->in_use = g_new0(uint8_t, (gsize)nblocks);
  s->owner = g_new0(void *, (gsize)nblocks);
  s->free_stack = g_array_sized_new(FALSE, FALSE, sizeof(int32_t), (guint)(nblocks - used));
  g_ptr_array_add(a->servers, s);
  g_hash_table_add(addresses, address);
  a->blocks_total += nblocks;
  a->blocks_used += used;
  get_blocks(r, s);
}

static void get_servers(ns_codec_reader_t *r, int version, ns_alloc_t *a) {
  uint32_t n = ns_codec_get_count(r, "servers", INT32_MAX, SERVER_MIN_BYTES);
  GHashTable *addresses = g_hash_table_new(g_str_hash, g_str_equal); /* borrowed */
  for (uint32_t i = 0; i < n && !r->failed; i++) get_server(r, version, a, (int32_t)i + 1, addresses);
  g_hash_table_destroy(addresses);
  int64_t total = ns_codec_get_i64(r, "blocks_total");
  int64_t used = ns_codec_get_i64(r, "blocks_used");
  if (!r->failed && (total != a->blocks_total || used != a->blocks_used)) {
    ns_codec_fail(
        r, "the allocator says %lld blocks of which %lld used; its servers have %lld and %lld",
        (long long)total, (long long)used, (long long)a->blocks_total, (long long)a->blocks_used);
  }
}

/* Marks block b as held by node n: it must exist, be in use at exactly
 * that generation and not be held by anything else yet. */
static void claim_block(ns_codec_reader_t *r, ns_alloc_t *a, const ns_block_t *b, ns_node_t *n,
                        const char *what) {
  if (r->failed) return;
  ns_server_t *s = ns_alloc_server(a, b->server);
  if (s == NULL || b->index < 0 || b->index >= s->nblocks) {
    ns_codec_fail(r, "the block %d:%d of a %s does not exist", b->server, b->index, what);
  } else if (!s->in_use[b->index]) {
    ns_codec_fail(r, "the block %d:%d of a %s is free", b->server, b->index, what);
  } else if (s->generation[b->index] != b->generation) {
    ns_codec_fail(r, "the block %d:%d of a %s has generation %lld, the allocator's is %lld",
                  b->server, b->index, what, (long long)b->generation,
                  (long long)s->generation[b->index]);
  } else if (s->owner[b->index] != NULL) {
    ns_codec_fail(r, "the block %d:%d of a %s is held twice", b->server, b->index, what);
  } else {
    s->owner[b->index] = n;
  }
}

static void get_tags(ns_codec_reader_t *r, ns_node_t *n) {
  uint32_t ntags = ns_codec_get_count(r, "tags", NS_TAGS_MAX, 4 + 1 + 4);
  if (ntags == 0) return;
  n->tags = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  const char *prev = NULL;
  for (uint32_t i = 0; i < ntags && !r->failed; i++) {
    char *k, *v;
    if (get_str(r, "tag key", NS_TAG_KEY_MAX, &k) != 0) return;
    if (get_str(r, "tag value", NS_TAG_VALUE_MAX, &v) != 0) {
      g_free(k);
      return;
    }
    if (k[0] == '\0' || (prev != NULL && strcmp(prev, k) >= 0)) {
      ns_codec_fail(r, "tag keys are not sorted, distinct and non-empty (\"%s\" after \"%s\")", k,
                    prev != NULL ? prev : "");
      g_free(k);
      g_free(v);
      return;
    }
    g_hash_table_insert(n->tags, k, v);
    prev = k;
  }
}

/* A partition's chain after its state (version 2): members after the head,
 * chain version and copy, as the tree keeps them: at most the node's
 * replicas members, a copy only while fewer, its op id an id handed out,
 * unused slots zero. */
static void get_chain(dec_t *d, ns_node_t *n, ns_partition_t *p) {
  ns_codec_reader_t *r = &d->r;
  int32_t replicas = ns_node_replicas(n);
  uint8_t nmore = ns_codec_get_u8(r, "partition chain");
  if (!r->failed && nmore + 1 > replicas) {
    ns_codec_fail(r, "a chain of %u blocks in a namespace of %d replicas", nmore + 1u, replicas);
  }
  if (r->failed) return;
  p->nmore = nmore;
  for (int m = 0; m < p->nmore; m++) get_block(r, &p->more[m], "chain member");
  p->chain_version = get_range(r, "chain version", 1, NS_SNAP_INT_MAX);
  get_block(r, &p->copy, "copy block");
  p->copy_op = ns_codec_get_i64(r, "copy op");
  if (r->failed) return;
  if (p->copy.server == 0) {
    if (p->copy.index != 0 || p->copy.generation != 0 || p->copy_op != 0) {
      ns_codec_fail(r, "a partition without a copy has copy fields set");
    }
  } else if (nmore + 1 >= replicas || p->copy_op < 1 || p->copy_op > d->t->last_op_id) {
    ns_codec_fail(r, "a copy (op %lld) on a chain of %u blocks of %d replicas",
                  (long long)p->copy_op, nmore + 1u, replicas);
  }
}

static void get_parts(dec_t *d, ns_node_t *n) {
  ns_codec_reader_t *r = &d->r;
  ns_alloc_t *a = d->t->alloc;
  uint32_t np = ns_codec_get_count(r, "partitions", INT32_MAX, PART_BYTES);
  g_array_set_size(n->layout.parts, np);
  if (np > 0) memset(n->layout.parts->data, 0, sizeof(ns_partition_t) * np);
  for (uint32_t i = 0; i < np && !r->failed; i++) {
    ns_partition_t *p = &g_array_index(n->layout.parts, ns_partition_t, i);
    get_block(r, &p->block, "partition block");
    p->lo = get_range(r, "partition lo", 0, NS_SNAP_INT_MAX);
    p->hi = get_range(r, "partition hi", p->lo, NS_SNAP_INT_MAX);
    p->state = get_bool(r, "partition state") ? NS_PART_LOST : NS_PART_LIVE;
    p->replicas = ns_node_replicas(n);
    p->chain_version = 1;
    if (d->version >= 2) get_chain(d, n, p);
    for (int m = 0; m < ns_part_members(p); m++) {
      claim_block(r, a, ns_part_member(p, m), n, "partition");
    }
    if (p->copy.server != 0) claim_block(r, a, &p->copy, n, "copy");
  }
}

/* A key for a block (server, index) in the hash tables below. */
static gint64 block_key(const ns_block_t *b) {
  return (gint64)((uint64_t)(uint32_t)b->server << 32 | (uint32_t)b->index);
}

/* The partition of n held by block b at its generation, by the table of
 * block keys to partition numbers, or NULL. */
static const ns_partition_t *part_by_block(const ns_node_t *n, GHashTable *parts,
                                           const ns_block_t *b) {
  gint64 key = block_key(b);
  gpointer v;
  if (!g_hash_table_lookup_extended(parts, &key, NULL, &v)) return NULL;
  const ns_partition_t *p = &g_array_index(n->layout.parts, ns_partition_t, GPOINTER_TO_UINT(v));
  return p->block.generation == b->generation ? p : NULL;
}

/* Checks one begun repartition against its node's partitions, as
 * apply_repart_begin() left it: a split moves the upper part of a live
 * partition to a new block the node holds; a merge moves a whole live
 * partition into an adjacent one; either may since have been marked lost
 * (then its partitions may be lost too). No two share a block. */
static void check_repart(ns_codec_reader_t *r, ns_alloc_t *a, ns_node_t *n, const ns_repart_t *rp,
                         GHashTable *parts, GHashTable *busy, gint64 *keys) {
  const ns_partition_t *src = part_by_block(n, parts, &rp->src);
  if (src == NULL && !rp->lost) {
    ns_codec_fail(r, "repartition %lld moves block %d:%d, not a partition of its namespace",
                  (long long)rp->id, rp->src.server, rp->src.index);
    return;
  }
  keys[0] = block_key(&rp->src);
  keys[1] = block_key(&rp->dst);
  if (g_hash_table_contains(busy, &keys[0]) || g_hash_table_contains(busy, &keys[1]) ||
      keys[0] == keys[1]) {
    ns_codec_fail(r, "repartition %lld shares a block with another one", (long long)rp->id);
    return;
  }
  g_hash_table_add(busy, &keys[0]);
  g_hash_table_add(busy, &keys[1]);
  if (!rp->merge) {
    claim_block(r, a, &rp->dst, n, "split");
    for (int32_t m = 0; m < rp->dst_nmore; m++) claim_block(r, a, &rp->dst_more[m], n, "split");
  }
  /* A lost repartition only rolls back: the head it moved from (or merged
   * into) may have left its chain since, so src and dst need not be heads. */
  if (src == NULL) return;
  int lost = src->state == NS_PART_LOST;
  if (rp->merge) {
    const ns_partition_t *dst = part_by_block(n, parts, &rp->dst);
    if (dst == NULL && rp->lost) return;
    if (dst == NULL || (dst->hi != src->lo && dst->lo != src->hi) || rp->lo != src->lo ||
        rp->hi != src->hi) {
      ns_codec_fail(r, "merge %lld does not move a whole partition into an adjacent one",
                    (long long)rp->id);
      return;
    }
    lost |= dst->state == NS_PART_LOST;
  } else {
    if (rp->lo <= src->lo || rp->hi != src->hi || rp->lo >= rp->hi) {
      ns_codec_fail(r, "split %lld does not move the upper part of its partition",
                    (long long)rp->id);
      return;
    }
  }
  if (lost && !rp->lost) {
    ns_codec_fail(r, "repartition %lld has a lost partition but is not marked lost",
                  (long long)rp->id);
  }
}

static void get_reparts(dec_t *d, ns_node_t *n) {
  ns_codec_reader_t *r = &d->r;
  uint32_t nr = ns_codec_get_count(r, "repartitions", INT32_MAX, REPART_BYTES);
  if (nr == 0) return;
  if (n->kind != NS_KIND_KV) {
    ns_codec_fail(r, "a %s namespace has repartitions (only kv namespaces do)",
                  ns_kind_name(n->kind));
    return;
  }
  n->reparts = g_array_sized_new(FALSE, FALSE, sizeof(ns_repart_t), nr);
  g_array_set_size(n->reparts, nr);
  /* Block keys of the partitions, of the blocks repartitions use and the
   * repartition ids, so the checks take linear time whatever the input. */
  GHashTable *parts = g_hash_table_new(g_int64_hash, g_int64_equal);
  GHashTable *busy = g_hash_table_new(g_int64_hash, g_int64_equal);
  GHashTable *ids = g_hash_table_new(g_int64_hash, g_int64_equal);
  gint64 *part_keys = g_new(gint64, n->layout.parts->len + 1);
  gint64 *busy_keys = g_new(gint64, 2 * (gsize)nr);
  for (guint i = 0; i < n->layout.parts->len; i++) {
    part_keys[i] = block_key(&g_array_index(n->layout.parts, ns_partition_t, i).block);
    g_hash_table_insert(parts, &part_keys[i], GUINT_TO_POINTER(i));
  }
  for (uint32_t i = 0; i < nr && !r->failed; i++) {
    ns_repart_t *rp = &g_array_index(n->reparts, ns_repart_t, i);
    rp->id = get_range(r, "repartition id", 1, d->t->last_op_id);
    rp->merge = get_bool(r, "repartition merge");
    get_block(r, &rp->src, "repartition src");
    get_block(r, &rp->dst, "repartition dst");
    rp->lo = ns_codec_get_i64(r, "repartition lo");
    rp->hi = ns_codec_get_i64(r, "repartition hi");
    rp->lost = get_bool(r, "repartition lost");
    rp->started_ms = d->now_ms;
    if (d->version >= 2) {
      uint8_t nmore = ns_codec_get_u8(r, "split chain");
      if (!r->failed && (nmore + 1 > ns_node_replicas(n) || (rp->merge && nmore != 0))) {
        ns_codec_fail(r, "repartition %lld brings a chain of %u blocks (%d replicas)",
                      (long long)rp->id, nmore + 1u, ns_node_replicas(n));
      }
      rp->dst_nmore = r->failed ? 0 : nmore;
      for (int32_t m = 0; m < rp->dst_nmore; m++) get_block(r, &rp->dst_more[m], "split chain");
    }
    if (r->failed) break;
    if (!g_hash_table_add(ids, &rp->id)) {
      ns_codec_fail(r, "repartition id %lld is repeated", (long long)rp->id);
      break;
    }
    check_repart(r, d->t->alloc, n, rp, parts, busy, &busy_keys[2 * i]);
  }
  g_hash_table_destroy(parts);
  g_hash_table_destroy(busy);
  g_hash_table_destroy(ids);
  g_free(part_keys);
  g_free(busy_keys);
}

/* A leaf's fields after the ones every node has, checked as apply_create()
 * and the quota checks of later records keep them. */
static void get_leaf(dec_t *d, ns_node_t *n) {
  ns_codec_reader_t *r = &d->r;
  n->layout.version = get_range(r, "layout version", 1, NS_SNAP_INT_MAX);
  n->max_blocks = get_range32(r, "max_blocks", 0, INT32_MAX);
  n->initial_blocks = get_range32(r, "initial_blocks", 0, NS_CREATE_BLOCKS_MAX);
  n->high_wm = get_range32(r, "high watermark", 0, 100);
  n->low_wm = get_range32(r, "low watermark", 0, 100);
  n->replicas = d->version >= 2 ? get_range32(r, "replicas", 1, NS_CHAIN_MAX) : 1;
  if (r->failed) return;
  int32_t high = n->high_wm > 0 ? n->high_wm : NS_HIGH_WM_DEFAULT;
  int32_t low = n->low_wm > 0 ? n->low_wm : NS_LOW_WM_DEFAULT;
  if (low * 2 > high) {
    ns_codec_fail(r, "low watermark %d is more than half the high one %d", low, high);
    return;
  }
  if (n->max_blocks > 0 && n->initial_blocks > n->max_blocks) {
    ns_codec_fail(r, "initial_blocks %d is over max_blocks %d", n->initial_blocks, n->max_blocks);
    return;
  }
  get_tags(r, n);
  get_parts(d, n);
  get_reparts(d, n);
  if (!r->failed && n->max_blocks > 0 && ns_node_blocks_committed(n) > n->max_blocks) {
    ns_codec_fail(r, "a namespace holds %d blocks, over its max_blocks %d",
                  ns_node_blocks_committed(n), n->max_blocks);
  }
}

/* Checks a name as a path component (path.h): "/" + name must be a valid
 * path of one component. */
static int name_ok(ns_codec_reader_t *r, const char *name) {
  char path[NS_NAME_MAX + 2];
  char reason[128];
  size_t len = strlen(name);
  if (len == 0 || len > NS_NAME_MAX || strchr(name, '/') != NULL) {
    ns_codec_fail(r, "name \"%.64s\" is empty, longer than %d bytes or contains '/'", name,
                  NS_NAME_MAX);
    return 0;
  }
  path[0] = '/';
  memcpy(path + 1, name, len + 1);
  if (ns_path_check(path, reason, sizeof reason) != 0) {
    ns_codec_fail(r, "name \"%.64s\": %s", name, reason);
    return 0;
  }
  return 1;
}

/* One open directory of the pre-order walk: its node number, the length of
 * its path and the name of its last child so far. */
typedef struct {
  uint32_t no;
  size_t path_len;
  const char *last;
} frame_t;

/* Reads one node numbered no, links it under its parent (the tree then owns
 * it) and, for a directory, opens it on the stack. The parent must be an
 * open directory (one on the path to the previous node) and the name must
 * sort after its previous sibling's: so the nodes come in exactly the order
 * the encoder writes them, each name once per directory. */
static void get_node(dec_t *d, uint32_t no, ns_node_t **nodes, GArray *stack) {
  ns_codec_reader_t *r = &d->r;
  uint32_t parent = ns_codec_get_u32(r, "parent");
  if (r->failed) return;
  if (parent >= no || nodes[parent]->kind != NS_KIND_DIRECTORY) {
    ns_codec_fail(r, "the parent %u of node %u is not an earlier directory", parent, no);
    return;
  }
  while (g_array_index(stack, frame_t, stack->len - 1).no != parent) {
    if (stack->len == 1) {
      ns_codec_fail(r, "node %u comes after its parent %u's subtree ended (not in pre-order)", no,
                    parent);
      return;
    }
    g_array_set_size(stack, stack->len - 1);
  }
  frame_t *top = &g_array_index(stack, frame_t, stack->len - 1);
  char *name;
  if (get_str(r, "name", NS_NAME_MAX, &name) != 0) return;
  if (!name_ok(r, name)) {
    g_free(name);
    return;
  }
  if (top->last != NULL && strcmp(top->last, name) >= 0) {
    ns_codec_fail(r, "name \"%s\" comes after \"%s\" in its directory (not sorted, or repeated)",
                  name, top->last);
    g_free(name);
    return;
  }
  size_t path_len = top->path_len + 1 + strlen(name);
  if (path_len > NS_PATH_MAX) {
    ns_codec_fail(r, "the path of node %u is longer than %d bytes", no, NS_PATH_MAX);
    g_free(name);
    return;
  }
  uint8_t kind = ns_codec_get_u8(r, "kind");
  if (!r->failed && kind > NS_KIND_KV) ns_codec_fail(r, "unknown kind %u", kind);
  uint32_t flags = ns_codec_get_u32(r, "node flags");
  if (!r->failed && (flags & ~NS_FLAG_PINNED) != 0) {
    ns_codec_fail(r, "unknown node flags 0x%x", flags);
  }
  int64_t created = ns_codec_get_i64(r, "created_wall_ms");
  int64_t lease_ms = get_range(r, "lease", 0, NS_LEASE_MAX_MS);
  if (r->failed) {
    g_free(name);
    return;
  }
  ns_node_t *n = ns__node_new(name, (ns_kind_t)kind, d->now_ms, created);
  g_free(name);
  n->flags = flags;
  n->lease_ms = lease_ms;
  n->parent = nodes[parent];
  g_hash_table_insert(n->parent->children, n->name, n);
  nodes[no] = n;
  top->last = n->name;
  if (kind == NS_KIND_DIRECTORY) {
    d->t->n_dirs++;
    frame_t f = {.no = no, .path_len = path_len};
    g_array_append_val(stack, f);
  } else {
    d->t->n_leaves++;
    get_leaf(d, n);
  }
}

static void get_nodes(dec_t *d) {
  ns_codec_reader_t *r = &d->r;
  int64_t n_dirs = ns_codec_get_i64(r, "n_dirs");
  int64_t n_leaves = ns_codec_get_i64(r, "n_leaves");
  if (r->failed) return;
  int64_t cap = (int64_t)MIN(r->left / NODE_MIN_BYTES, UINT32_MAX - 1);
  if (n_dirs < 0 || n_leaves < 0 || n_dirs > cap || n_leaves > cap - n_dirs) {
    ns_codec_fail(r, "%lld directories and %lld leaves cannot fit in the %zu bytes left",
                  (long long)n_dirs, (long long)n_leaves, r->left);
    return;
  }
  uint32_t total = (uint32_t)(n_dirs + n_leaves);
  ns_node_t **nodes = g_new(ns_node_t *, (gsize)total + 1);
  nodes[0] = d->t->root;
  GArray *stack = g_array_new(FALSE, FALSE, sizeof(frame_t));
  frame_t root = {0};
  g_array_append_val(stack, root);
  for (uint32_t no = 1; no <= total && !r->failed; no++) get_node(d, no, nodes, stack);
  g_array_free(stack, TRUE);
  g_free(nodes);
  if (!r->failed && (d->t->n_dirs != n_dirs || d->t->n_leaves != n_leaves)) {
    ns_codec_fail(r, "%lld directories and %lld leaves were announced, %lld and %lld came",
                  (long long)n_dirs, (long long)n_leaves, (long long)d->t->n_dirs,
                  (long long)d->t->n_leaves);
  }
}

/* Every block in use must be held by a namespace (claim_block() already
 * made sure every held block is in use). */
static void check_held(ns_codec_reader_t *r, const ns_alloc_t *a) {
  for (guint i = 0; i < a->servers->len && !r->failed; i++) {
    const ns_server_t *s = g_ptr_array_index(a->servers, i);
    for (int32_t b = 0; b < s->nblocks; b++) {
      if (s->in_use[b] && s->owner[b] == NULL) {
        ns_codec_fail(r, "block %d:%d is in use but no namespace holds it", s->id, b);
        return;
      }
    }
  }
}

/* The request ids (version 3): at most NS_REQUESTS_MAX, clients nonzero
 * and strictly rising (canonical), every seq at least 1. */
static void get_requests(ns_codec_reader_t *r, ns_tree_t *t) {
  uint32_t n = ns_codec_get_u32(r, "request count");
  if (r->failed) return;
  if (n > NS_REQUESTS_MAX || (uint64_t)n * 32 > r->left) {
    ns_codec_fail(r, "%u request ids: more than %d, or than the bytes left", n, NS_REQUESTS_MAX);
    return;
  }
  uint64_t prev = 0;
  for (uint32_t i = 0; i < n && !r->failed; i++) {
    uint64_t client = (uint64_t)ns_codec_get_i64(r, "request client");
    uint64_t seq = (uint64_t)ns_codec_get_i64(r, "request seq");
    uint64_t window = (uint64_t)ns_codec_get_i64(r, "request window");
    int64_t wall_ms = ns_codec_get_i64(r, "request time");
    if (r->failed) return;
    /* The window never reaches below seq 1, and its bit 0 (seq itself) is set. */
    uint64_t below = seq >= NS_REQUEST_WINDOW ? 0 : ~UINT64_C(0) << seq;
    if (client <= prev || seq == 0 || (window & 1) == 0 || (window & below) != 0) {
      ns_codec_fail(r, "request id %u: client %llu after %llu, seq %llu, window %llx (clients "
                    "rise, seqs start at 1, the window holds seq and nothing below 1)",
                    i, (unsigned long long)client, (unsigned long long)prev,
                    (unsigned long long)seq, (unsigned long long)window);
      return;
    }
    prev = client;
    ns_tree_request_set(t, client, seq, window, wall_ms);
  }
}

int ns_snap_decode(const uint8_t *data, size_t len, int64_t default_lease_ms, int64_t grace_ms,
                   int64_t now_ms, ns_tree_t **out, ns_snap_meta_t *meta, char *why,
                   size_t whylen) {
  *out = NULL;
  dec_t d = {.now_ms = now_ms};
  ns_codec_reader_init(&d.r, "snapshot", NS_CODEC_MSG_MAX, data, len, why, whylen);
  ns_codec_reader_t *r = &d.r;
  uint8_t version = ns_codec_get_u8(r, "version");
  if (!r->failed && (version < NS_SNAP_VERSION_MIN || version > NS_SNAP_VERSION)) {
    ns_codec_fail(r, "encoding version %u is not a version %d to %d this build reads", version,
                  NS_SNAP_VERSION_MIN, NS_SNAP_VERSION);
  }
  d.version = version;
  ns_snap_meta_t m;
  m.seq = ns_codec_get_i64(r, "seq");
  m.wall_ms = ns_codec_get_i64(r, "wall_ms");
  int64_t n_expired = get_range(r, "n_expired", 0, NS_SNAP_INT_MAX);
  int64_t last_op_id = get_range(r, "last_op_id", 0, NS_SNAP_INT_MAX);
  if (r->failed) return MAYFLY_EPROTO;
  d.t = ns_tree_new(default_lease_ms, grace_ms);
  d.t->root->renewed_ms = now_ms;
  d.t->root->subtree_ms = now_ms;
  d.t->n_expired = n_expired;
  d.t->last_op_id = last_op_id;
  get_servers(r, version, d.t->alloc);
  if (!r->failed) get_nodes(&d);
  if (!r->failed) check_held(r, d.t->alloc);
  if (!r->failed && version >= 3) get_requests(r, d.t);
  /* The subtree counts are derived, not stored: rebuilt in one walk. */
  if (!r->failed) ns__tree_recount(d.t);
  if (!r->failed && r->left != 0) {
    ns_codec_fail(r, "%zu bytes left over after the snapshot", r->left);
  }
  if (r->failed) {
    ns_tree_free(d.t);
    return MAYFLY_EPROTO;
  }
  *out = d.t;
  *meta = m;
  return 0;
}
