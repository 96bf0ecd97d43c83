/*
 * Unit tests for memserver/blocksnap.c: serialising a block into a
 * REPLICA_COPY stream and restoring it.
 *
 * What re-replication relies on. A restored block is the block that was
 * serialised: a file's bytes and size, a queue's items in order and its
 * sealed flag, a kv block's entries (those set aside by a repartition too),
 * the range, the watermarks, the charge (recomputed, equal to the
 * source's), the applied cseq and the chain section handed to the chain
 * hook, whatever pieces the stream arrives in, for empty and full blocks.
 * A stream that is cut short, corrupt, of another kind, larger than the
 * block or with bytes after its end is refused and leaves the block empty;
 * a block that changed owner during a restore is never touched.
 */
#include <glib.h>
#include <string.h>

#include "common/error.h"
#include "common/le.h"
#include "common/wire.h"
#include "memserver/blocksnap.h"
#include "memserver/store.h"
#include "mf_test.h"

#define BSZ 65536u  /* block size */
#define CHUNK 1000u /* a small chunk size, so that records span chunks */
#define CSEQ 4242u

static store_t src, dst;

static int setup(void) {
  if (store_init(&src, 4, BSZ) != 0 || store_init(&dst, 4, BSZ) != 0) return 1;
  return 0;
}

static int teardown(void) {
  store_free(&src);
  store_free(&dst);
  return 0;
}

/* A fresh owner (a new generation) of block i in store s. */
static store_block_t *fresh(store_t *s, int32_t i, store_kind_t kind, int64_t lo, int64_t hi) {
  store_adopt(s, i, s->blocks[i].generation + 1, kind, lo, hi);
  return &s->blocks[i];
}

/* The whole stream in one array. */
static GByteArray *flatten(const bs_stream_t *st) {
  GByteArray *all = g_byte_array_new();
  for (guint i = 0; i < st->chunks->len; i++) {
    size_t n;
    const uint8_t *p = bs_stream_chunk(st, i, &n);
    g_byte_array_append(all, p, (guint)n);
  }
  return all;
}

static GByteArray *save_flat(store_block_t *b, const bs_chain_hook_t *hook) {
  bs_stream_t st;
  bs_stream_init(&st, 16);
  MF_ASSERT_EQ(bs_save(&src, b, CSEQ, hook, CHUNK, &st), 0);
  GByteArray *all = flatten(&st);
  MF_ASSERT_EQ(all->len, st.bytes);
  for (guint i = 0; i < st.chunks->len; i++) {
    size_t n;
    bs_stream_chunk(&st, i, &n);
    CU_ASSERT(n <= CHUNK && n > 0);
    CU_ASSERT(i + 1 == st.chunks->len || n == CHUNK);
  }
  bs_stream_clear(&st);
  return all;
}

/* Restores data into b in pieces of `piece` bytes (the whole at once for
 * 0); returns the first error of feed or finish. */
static int restore(store_t *s, store_block_t *b, const uint8_t *data, size_t len, size_t piece,
                   const bs_chain_hook_t *hook, uint64_t *cseq) {
  bs_restore_t *r = bs_restore_new(s, b, hook, 0);
  int rc = 0;
  for (size_t off = 0; off < len && rc == 0;) {
    size_t n = piece == 0 ? len - off : MIN(piece, len - off);
    rc = bs_restore_feed(r, data + off, n);
    off += n;
    if (rc == 0) MF_ASSERT_EQ(bs_restore_offset(r), off);
  }
  if (rc == 0) rc = bs_restore_finish(r, cseq);
  bs_restore_free(r);
  return rc;
}

/* The block holds nothing: no bytes, items, entries or charge. */
static void assert_empty(const store_block_t *b) {
  MF_ASSERT_EQ(b->used, 0);
  MF_ASSERT_EQ(b->size, 0);
  if (b->items != NULL) MF_ASSERT_EQ(g_queue_get_length(b->items), 0);
  if (b->kv != NULL) MF_ASSERT_EQ(g_hash_table_size(b->kv), 0);
  MF_ASSERT_EQ(b->sealed, 0);
}

static void assert_same(const store_block_t *a, const store_block_t *b) {
  MF_ASSERT_EQ(b->kind, a->kind);
  MF_ASSERT_EQ(b->used, a->used);
  MF_ASSERT_EQ(b->range_lo, a->range_lo);
  MF_ASSERT_EQ(b->range_hi, a->range_hi);
  MF_ASSERT_EQ(b->high_wm, a->high_wm);
  MF_ASSERT_EQ(b->low_wm, a->low_wm);
  if (a->kind == STORE_FILE) {
    MF_ASSERT_EQ(b->size, a->size);
    CU_ASSERT(memcmp(a->mem, b->mem, a->size) == 0);
  } else if (a->kind == STORE_QUEUE) {
    MF_ASSERT_EQ(b->sealed, a->sealed);
    MF_ASSERT_EQ(g_queue_get_length(b->items), g_queue_get_length(a->items));
    for (GList *x = a->items->head, *y = b->items->head; x != NULL && y != NULL;
         x = x->next, y = y->next) {
      const store_item_t *i = x->data, *j = y->data;
      MF_ASSERT_EQ(j->len, i->len);
      CU_ASSERT(memcmp(i->data, j->data, i->len) == 0);
    }
  } else {
    uint64_t na = store_kv_count(a);
    MF_ASSERT_EQ(g_hash_table_size(b->kv), na);
    GHashTable *tables[2] = {a->kv, a->rp_moving};
    for (int t = 0; t < 2; t++) {
      if (tables[t] == NULL) continue;
      GHashTableIter it;
      gpointer p;
      g_hash_table_iter_init(&it, tables[t]);
      while (g_hash_table_iter_next(&it, &p, NULL)) {
        const store_kv_entry_t *e = p;
        uint32_t vlen = 0;
        const uint8_t *v = store_kv_get(b, wire_kv_hash(e->data, e->h.klen), e->data,
                                        e->h.klen, &vlen);
        CU_ASSERT_PTR_NOT_NULL_FATAL(v);
        MF_ASSERT_EQ(vlen, e->h.vlen);
        CU_ASSERT(memcmp(v, store_kv_entry_value(e), vlen) == 0);
      }
    }
  }
}

/* Serialises a, restores into a fresh block of dst in several piece sizes
 * (1 byte, odd sizes, all at once) and checks each result. */
static void round_trip(store_block_t *a) {
  GByteArray *all = save_flat(a, NULL);
  const size_t pieces[] = {0, 1, 7, CHUNK, 4097};
  for (size_t i = 0; i < G_N_ELEMENTS(pieces); i++) {
    if (pieces[i] == 1 && all->len > 200000) continue;
    store_block_t *b = fresh(&dst, 0, a->kind, 0, 0);
    uint64_t cseq = 0;
    MF_ASSERT_EQ(restore(&dst, b, all->data, all->len, pieces[i], NULL, &cseq), 0);
    MF_ASSERT_EQ(cseq, CSEQ);
    assert_same(a, b);
  }
  g_byte_array_unref(all);
}

static void fill(uint8_t *p, size_t n, uint32_t seed) {
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)((i * 131u + seed * 7u) ^ (i >> 8));
}

static void test_file_round_trip(void) {
  store_block_t *a = fresh(&src, 0, STORE_FILE, 0, BSZ);
  round_trip(a); /* empty */
  uint8_t buf[5000];
  fill(buf, sizeof buf, 1);
  MF_ASSERT_EQ(store_file_write(&src, a, 0, buf, sizeof buf), 0);
  MF_ASSERT_EQ(store_file_write(&src, a, 20000, buf, 1234), 0); /* a hole reads zeros */
  round_trip(a);
  /* Full: every byte of the block. */
  uint8_t *big = g_malloc(BSZ);
  fill(big, BSZ, 2);
  MF_ASSERT_EQ(store_file_write(&src, a, 0, big, BSZ), 0);
  MF_ASSERT_EQ(a->size, BSZ);
  round_trip(a);
  g_free(big);
}

static void test_queue_round_trip(void) {
  store_block_t *a = fresh(&src, 1, STORE_QUEUE, 3, 4);
  round_trip(a); /* empty */
  uint8_t buf[3000];
  for (uint32_t i = 0; i < 20; i++) {
    fill(buf, sizeof buf, i);
    MF_ASSERT_EQ(store_queue_push(&src, a, buf, (i * 97) % sizeof buf), 0); /* item 0 is empty */
  }
  round_trip(a);
  /* Full: pushed until the segment sealed itself. */
  int rc;
  uint32_t n = 0;
  while ((rc = store_queue_push(&src, a, buf, 1500)) == 0) n++;
  MF_ASSERT_EQ(rc, MAYFLY_EFULL);
  CU_ASSERT(a->sealed && n > 0);
  round_trip(a);
  store_block_t *b = &dst.blocks[0];
  MF_ASSERT_EQ(b->sealed, 1);
  MF_ASSERT_EQ(store_queue_push(&dst, b, buf, 1), MAYFLY_EFULL); /* sealed: stays so */
}

static void kv_fill(store_block_t *a, int n, uint32_t vlen) {
  char key[32];
  uint8_t *val = g_malloc(vlen + 1);
  for (int i = 0; i < n; i++) {
    int kl = g_snprintf(key, sizeof key, "key-%d", i);
    fill(val, vlen, (uint32_t)i);
    int rc = store_kv_put(&src, a, wire_kv_hash(key, (uint32_t)kl), key, (uint32_t)kl, val,
                          (uint64_t)(i % 5 == 0 ? 0 : vlen));
    if (rc == MAYFLY_EFULL) break;
    MF_ASSERT_EQ(rc, 0);
  }
  g_free(val);
}

static void test_kv_round_trip(void) {
  store_block_t *a = fresh(&src, 2, STORE_KV, 0, WIRE_KV_SLOTS);
  a->high_wm = 80;
  a->low_wm = 10;
  round_trip(a); /* empty */
  kv_fill(a, 300, 50);
  uint8_t empty_key = 0;
  MF_ASSERT_EQ(store_kv_put(&src, a, wire_kv_hash(&empty_key, 0), &empty_key, 0, "v", 1), 0);
  round_trip(a);
  /* Entries set aside by a repartition are still the block's. */
  uint64_t charge = 0;
  a->rp_moving = store_kv_take_range(a, 0, WIRE_KV_SLOTS / 2, &charge);
  CU_ASSERT(g_hash_table_size(a->rp_moving) > 0);
  round_trip(a);
  store_kv_restore(a, a->rp_moving);
  g_hash_table_destroy(a->rp_moving);
  a->rp_moving = NULL;
  /* Full: puts until one did not fit. */
  kv_fill(a, 100000, 700);
  CU_ASSERT(a->used > BSZ - 1000);
  round_trip(a);
}

/* A range narrower than the whole: the restored block keeps it, and an
 * entry outside the range in a stream is refused. */
static void test_kv_range(void) {
  store_block_t *a = fresh(&src, 2, STORE_KV, 1000, 30000);
  char key[32];
  int stored = 0;
  for (int i = 0; stored < 50; i++) {
    int kl = g_snprintf(key, sizeof key, "k%d", i);
    uint64_t h = wire_kv_hash(key, (uint32_t)kl);
    if (store_kv_check_slot(a, h) != 0) continue;
    MF_ASSERT_EQ(store_kv_put(&src, a, h, key, (uint32_t)kl, "x", 1), 0);
    stored++;
  }
  round_trip(a);
  /* The same stream with the header's range shrunk to [1000, 1001). */
  GByteArray *all = save_flat(a, NULL);
  mf_le_put64(all->data + 24, 1001);
  store_block_t *b = fresh(&dst, 0, STORE_KV, 0, 0);
  MF_ASSERT_EQ(restore(&dst, b, all->data, all->len, 0, NULL, NULL), MAYFLY_EPROTO);
  assert_empty(b);
  g_byte_array_unref(all);
}

typedef struct {
  GByteArray *saved; /* what save wrote */
  GByteArray *got;   /* what load received */
  int load_rc;
  int loads;
} hook_ud_t;

static int h_save(void *ud, const store_block_t *b, GByteArray *out) {
  hook_ud_t *h = ud;
  (void)b;
  g_byte_array_append(out, h->saved->data, h->saved->len);
  return 0;
}

static int h_load(void *ud, store_block_t *b, const uint8_t *data, size_t len) {
  hook_ud_t *h = ud;
  (void)b;
  h->loads++;
  if (h->load_rc != 0) return h->load_rc;
  g_byte_array_set_size(h->got, 0);
  if (len > 0) g_byte_array_append(h->got, data, (guint)len);
  return 0;
}

/* The chain section reaches the hook byte for byte; a hook that refuses
 * it fails the restore, and a section without a hook is refused. */
static void test_chain_section(void) {
  hook_ud_t h = {g_byte_array_new(), g_byte_array_new(), 0, 0};
  g_byte_array_set_size(h.saved, 3 * CHUNK + 17);
  fill(h.saved->data, h.saved->len, 9);
  bs_chain_hook_t hook = {h_save, h_load, &h};
  store_block_t *a = fresh(&src, 1, STORE_QUEUE, 0, 1);
  MF_ASSERT_EQ(store_queue_push(&src, a, "one", 3), 0);
  GByteArray *all = save_flat(a, &hook);
  store_block_t *b = fresh(&dst, 1, STORE_QUEUE, 0, 1);
  MF_ASSERT_EQ(restore(&dst, b, all->data, all->len, 333, &hook, NULL), 0);
  MF_ASSERT_EQ(h.loads, 1);
  MF_ASSERT_EQ(h.got->len, h.saved->len);
  CU_ASSERT(memcmp(h.got->data, h.saved->data, h.saved->len) == 0);
  assert_same(a, b);
  h.load_rc = MAYFLY_EPROTO;
  MF_ASSERT_EQ(restore(&dst, b, all->data, all->len, 0, &hook, NULL), MAYFLY_EPROTO);
  assert_empty(b);
  MF_ASSERT_EQ(restore(&dst, b, all->data, all->len, 0, NULL, NULL), MAYFLY_EPROTO);
  assert_empty(b);
  /* A chain section over the restore's bound is refused at the header. */
  bs_restore_t *r = bs_restore_new(&dst, b, &hook, 100);
  MF_ASSERT_EQ(bs_restore_feed(r, all->data, BS_HEADER_SIZE), MAYFLY_EPROTO);
  bs_restore_free(r);
  g_byte_array_unref(all);
  g_byte_array_unref(h.saved);
  g_byte_array_unref(h.got);
}

/* Every proper prefix of a stream is refused at finish and leaves the
 * block empty. */
static void test_truncated_refused(void) {
  store_block_t *blocks[3];
  blocks[0] = fresh(&src, 0, STORE_FILE, 0, BSZ);
  uint8_t buf[2500];
  fill(buf, sizeof buf, 3);
  MF_ASSERT_EQ(store_file_write(&src, blocks[0], 0, buf, sizeof buf), 0);
  blocks[1] = fresh(&src, 1, STORE_QUEUE, 0, 1);
  for (int i = 0; i < 5; i++) MF_ASSERT_EQ(store_queue_push(&src, blocks[1], buf, 300), 0);
  blocks[2] = fresh(&src, 2, STORE_KV, 0, WIRE_KV_SLOTS);
  kv_fill(blocks[2], 10, 100);
  for (int k = 0; k < 3; k++) {
    GByteArray *all = save_flat(blocks[k], NULL);
    for (guint cut = 0; cut < all->len; cut++) {
      store_block_t *b = fresh(&dst, 0, blocks[k]->kind, 0, 0);
      int rc = restore(&dst, b, all->data, cut, 0, NULL, NULL);
      MF_ASSERT_EQ(rc, MAYFLY_EPROTO);
      assert_empty(b);
    }
    g_byte_array_unref(all);
  }
}

static int restore_edited(store_kind_t kind, const GByteArray *all, size_t at, uint64_t v,
                          int width) {
  GByteArray *m = g_byte_array_new();
  g_byte_array_append(m, all->data, all->len);
  if (width == 1) m->data[at] = (uint8_t)v;
  if (width == 4) mf_le_put32(m->data + at, (uint32_t)v);
  if (width == 8) mf_le_put64(m->data + at, v);
  store_block_t *b = fresh(&dst, 0, kind, 0, 0);
  int rc = restore(&dst, b, m->data, m->len, 0, NULL, NULL);
  if (rc != 0) assert_empty(b);
  g_byte_array_unref(m);
  return rc;
}

/* Corrupt headers and records: each refused with its error, the block
 * left empty; and bytes after the end. */
static void test_corrupt_refused(void) {
  store_block_t *q = fresh(&src, 1, STORE_QUEUE, 0, 1);
  MF_ASSERT_EQ(store_queue_push(&src, q, "abcdef", 6), 0);
  MF_ASSERT_EQ(store_queue_push(&src, q, "gh", 2), 0);
  GByteArray *all = save_flat(q, NULL);
  MF_ASSERT_EQ(restore_edited(STORE_QUEUE, all, 0, 0, 0), 0); /* unedited: fine */
  MF_ASSERT_EQ(restore_edited(STORE_QUEUE, all, 0, 'X', 1), MAYFLY_EPROTO);   /* magic */
  MF_ASSERT_EQ(restore_edited(STORE_QUEUE, all, 4, 9, 1), MAYFLY_EPROTO);     /* version */
  MF_ASSERT_EQ(restore_edited(STORE_QUEUE, all, 6, STORE_KV, 1), MAYFLY_EKIND);
  MF_ASSERT_EQ(restore_edited(STORE_QUEUE, all, 6, 7, 1), MAYFLY_EPROTO);     /* no such kind */
  MF_ASSERT_EQ(restore_edited(STORE_QUEUE, all, 8, 101, 1), MAYFLY_EPROTO);   /* watermark */
  MF_ASSERT_EQ(restore_edited(STORE_QUEUE, all, 11, 1, 1), MAYFLY_EPROTO);    /* reserved */
  MF_ASSERT_EQ(restore_edited(STORE_QUEUE, all, 48, 3, 8), MAYFLY_EPROTO);    /* count */
  MF_ASSERT_EQ(restore_edited(STORE_QUEUE, all, 48, UINT64_MAX, 8), MAYFLY_EFULL);
  MF_ASSERT_EQ(restore_edited(STORE_QUEUE, all, 56, q->used + 1, 8), MAYFLY_EPROTO); /* charge */
  MF_ASSERT_EQ(restore_edited(STORE_QUEUE, all, 56, BSZ + 1, 8), MAYFLY_EFULL);
  MF_ASSERT_EQ(restore_edited(STORE_QUEUE, all, BS_HEADER_SIZE, 9, 1), MAYFLY_EPROTO); /* tag */
  MF_ASSERT_EQ(restore_edited(STORE_QUEUE, all, BS_HEADER_SIZE, 1, 1), MAYFLY_EPROTO); /* FILE */
  /* An item claiming more than the block: refused before allocating it. */
  MF_ASSERT_EQ(restore_edited(STORE_QUEUE, all, BS_HEADER_SIZE + 1, UINT32_MAX, 4),
               MAYFLY_EFULL);
  MF_ASSERT_EQ(restore_edited(STORE_QUEUE, all, BS_HEADER_SIZE + 1, 5, 4), MAYFLY_EPROTO); /* "f" read as a tag */
  /* A byte after the end. */
  GByteArray *more = g_byte_array_new();
  g_byte_array_append(more, all->data, all->len);
  g_byte_array_append(more, (const uint8_t *)"", 1);
  store_block_t *b = fresh(&dst, 0, STORE_QUEUE, 0, 0);
  MF_ASSERT_EQ(restore(&dst, b, more->data, more->len, 0, NULL, NULL), MAYFLY_EPROTO);
  assert_empty(b);
  g_byte_array_unref(more);
  g_byte_array_unref(all);
  /* A kv entry whose key is longer than keys may be. */
  store_block_t *k = fresh(&src, 2, STORE_KV, 0, WIRE_KV_SLOTS);
  MF_ASSERT_EQ(store_kv_put(&src, k, wire_kv_hash("k", 1), "k", 1, "v", 1), 0);
  all = save_flat(k, NULL);
  MF_ASSERT_EQ(restore_edited(STORE_KV, all, BS_HEADER_SIZE + 1, WIRE_KEY_MAX + 1, 4),
               MAYFLY_EPROTO);
  MF_ASSERT_EQ(restore_edited(STORE_KV, all, BS_HEADER_SIZE + 5, UINT32_MAX, 4), MAYFLY_EFULL);
  g_byte_array_unref(all);
  /* The same kv entry twice (the count raised to match): refused. */
  store_block_t *k2 = fresh(&src, 2, STORE_KV, 0, WIRE_KV_SLOTS);
  MF_ASSERT_EQ(store_kv_put(&src, k2, wire_kv_hash("k", 1), "k", 1, "v", 1), 0);
  all = save_flat(k2, NULL);
  size_t rec = 9 + 2;
  GByteArray *dup = g_byte_array_new();
  g_byte_array_append(dup, all->data, BS_HEADER_SIZE + (guint)rec);
  g_byte_array_append(dup, all->data + BS_HEADER_SIZE, (guint)(all->len - BS_HEADER_SIZE));
  mf_le_put64(dup->data + 48, 2);
  mf_le_put64(dup->data + 56, 2 * k2->used);
  b = fresh(&dst, 0, STORE_KV, 0, 0);
  MF_ASSERT_EQ(restore(&dst, b, dup->data, dup->len, 0, NULL, NULL), MAYFLY_EPROTO);
  assert_empty(b);
  g_byte_array_unref(dup);
  g_byte_array_unref(all);
}

/* A block larger than the receiving store's blocks is refused (EFULL)
 * and the receiving block stays empty. */
static void test_too_big_refused(void) {
  store_t small;
  MF_ASSERT_EQ(store_init(&small, 1, 4096), 0);
  store_block_t *a = fresh(&src, 0, STORE_FILE, 0, BSZ);
  uint8_t *big = g_malloc(BSZ);
  fill(big, BSZ, 4);
  MF_ASSERT_EQ(store_file_write(&src, a, 0, big, BSZ), 0);
  GByteArray *all = save_flat(a, NULL);
  store_block_t *b = fresh(&small, 0, STORE_FILE, 0, 0);
  MF_ASSERT_EQ(restore(&small, b, all->data, all->len, 0, NULL, NULL), MAYFLY_EFULL);
  assert_empty(b);
  g_byte_array_unref(all);
  /* A queue whose items pass the small block once restored: EFULL on the item. */
  store_block_t *q = fresh(&src, 1, STORE_QUEUE, 0, 1);
  for (int i = 0; i < 10; i++) MF_ASSERT_EQ(store_queue_push(&src, q, big, 1000), 0);
  all = save_flat(q, NULL);
  mf_le_put64(all->data + 56, 4000); /* the header lies about the charge */
  b = fresh(&small, 0, STORE_QUEUE, 0, 0);
  MF_ASSERT_EQ(restore(&small, b, all->data, all->len, 0, NULL, NULL), MAYFLY_EFULL);
  assert_empty(b);
  g_byte_array_unref(all);
  g_free(big);
  store_free(&small);
}

/* The block is released and taken by a new owner in the middle of a
 * restore: the restore stops (EMOVED) and leaves the new owner's data. */
static void test_owner_changed(void) {
  store_block_t *a = fresh(&src, 1, STORE_QUEUE, 0, 1);
  uint8_t buf[900];
  for (int i = 0; i < 5; i++) MF_ASSERT_EQ(store_queue_push(&src, a, buf, sizeof buf), 0);
  GByteArray *all = save_flat(a, NULL);
  store_block_t *b = fresh(&dst, 2, STORE_QUEUE, 0, 1);
  bs_restore_t *r = bs_restore_new(&dst, b, NULL, 0);
  MF_ASSERT_EQ(bs_restore_feed(r, all->data, 1000), 0);
  store_release(&dst, 2, b->generation);
  store_adopt(&dst, 2, b->generation + 1, STORE_QUEUE, 0, 1);
  MF_ASSERT_EQ(store_queue_push(&dst, b, "new", 3), 0);
  MF_ASSERT_EQ(bs_restore_feed(r, all->data + 1000, all->len - 1000), MAYFLY_EMOVED);
  MF_ASSERT_EQ(bs_restore_finish(r, NULL), MAYFLY_EMOVED);
  bs_restore_free(r);
  MF_ASSERT_EQ(g_queue_get_length(b->items), 1);
  MF_ASSERT_EQ(b->used, wire_queue_charge(3));
  /* An abandoned restore (freed before its end) empties its block. */
  b = fresh(&dst, 2, STORE_QUEUE, 0, 1);
  r = bs_restore_new(&dst, b, NULL, 0);
  MF_ASSERT_EQ(bs_restore_feed(r, all->data, 2000), 0);
  CU_ASSERT(g_queue_get_length(b->items) > 0);
  bs_restore_free(r);
  assert_empty(b);
  g_byte_array_unref(all);
}

static const mf_test_t tests[] = {
    {"a file block round-trips: empty, with a hole, full", test_file_round_trip},
    {"a queue block round-trips in order, empty and full (sealed)", test_queue_round_trip},
    {"a kv block round-trips, set-aside entries included, empty and full", test_kv_round_trip},
    {"a kv block keeps its range; an entry outside it is refused", test_kv_range},
    {"the chain section reaches the hook intact; refused by it, the block is empty",
     test_chain_section},
    {"every truncated stream is refused and leaves the block empty", test_truncated_refused},
    {"corrupt headers and records are refused and leave the block empty",
     test_corrupt_refused},
    {"a stream larger than the block is refused (EFULL)", test_too_big_refused},
    {"a block that changed owner mid-restore is left alone", test_owner_changed},
    {NULL, NULL},
};

int main(void) {
  return mf_test_run("blocksnap", setup, teardown, tests);
}
