/*
 * Fuzz target for the block snapshot restore (memserver/blocksnap.c), fed
 * arbitrary bytes as a REPLICA_COPY stream.
 *
 * The receiving block's kind is the one the stream's header names (byte 6,
 * when it is a kind; a file block otherwise), so most inputs get past the
 * kind check (one in seven, chosen by length, goes to another kind), and the input is fed in pieces of a size chosen from its
 * length (all at once, 1 byte, 13 bytes, 4096 bytes), so records are cut
 * everywhere. A restore either fails, and then the block is empty (no
 * bytes, items, entries, charge or seal), or succeeds, and then the block
 * is consistent (its charge is what its contents cost and at most the
 * block size; every kv key lies in its range) and serialising it again
 * gives a stream of the input's length (shorter only for a file whose
 * bytes came in several records) that restores into a
 * second block with the same contents and charge. Any wrong answer aborts;
 * the counters tell the replay driver which outcomes its inputs reached.
 */
#include <glib.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/error.h"
#include "common/wire.h"
#include "fz_check.h"
#include "memserver/blocksnap.h"
#include "memserver/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The block size of the fuzzed store (what the driver's seeds are made for). */
#define FUZZ_BS_BLOCK 16384u

long fuzz_bs_restored, fuzz_bs_eproto, fuzz_bs_efull, fuzz_bs_ekind, fuzz_bs_chain;

static store_t store;
static int64_t gen;

/* The chain section: load keeps a copy, save writes it back. */
static GByteArray *section;

static int load(void *ud, store_block_t *b, const uint8_t *p, size_t len) {
  (void)ud;
  (void)b;
  g_byte_array_set_size(section, 0);
  if (len > 0) g_byte_array_append(section, p, (guint)len);
  return 0;
}

static int save(void *ud, const store_block_t *b, GByteArray *out) {
  (void)ud;
  (void)b;
  g_byte_array_append(out, section->data, section->len);
  return 0;
}

static const bs_chain_hook_t hook = {save, load, NULL};

static void check_empty(const store_block_t *b) {
  FZ_CHECK(b->used == 0 && b->size == 0 && b->sealed == 0);
  FZ_CHECK(b->items == NULL || g_queue_get_length(b->items) == 0);
  FZ_CHECK(b->kv == NULL || g_hash_table_size(b->kv) == 0);
}

/* What the block's contents cost, by the store's rules. */
static uint64_t charge_of(const store_block_t *b) {
  uint64_t c = 0;
  if (b->kind == STORE_FILE) return b->size;
  if (b->kind == STORE_QUEUE) {
    for (GList *l = b->items->head; l != NULL; l = l->next) {
      c += wire_queue_charge(((const store_item_t *)l->data)->len);
    }
    return c;
  }
  GHashTableIter it;
  gpointer p;
  g_hash_table_iter_init(&it, b->kv);
  while (g_hash_table_iter_next(&it, &p, NULL)) {
    const store_kv_entry_t *e = p;
    FZ_CHECK(e->h.hash == wire_kv_hash(e->data, e->h.klen));
    FZ_CHECK(store_kv_check_slot(b, e->h.hash) == 0);
    c += store_kv_charge(e->h.klen, e->h.vlen);
  }
  return c;
}

static void check_same(const store_block_t *a, const store_block_t *b) {
  FZ_CHECK(a->used == b->used && a->range_lo == b->range_lo && a->range_hi == b->range_hi);
  FZ_CHECK(a->high_wm == b->high_wm && a->low_wm == b->low_wm && a->sealed == b->sealed);
  if (a->kind == STORE_FILE) {
    FZ_CHECK(a->size == b->size && memcmp(a->mem, b->mem, a->size) == 0);
  } else if (a->kind == STORE_QUEUE) {
    FZ_CHECK(g_queue_get_length(a->items) == g_queue_get_length(b->items));
    for (GList *x = a->items->head, *y = b->items->head; x != NULL; x = x->next, y = y->next) {
      const store_item_t *i = x->data, *j = y->data;
      FZ_CHECK(i->len == j->len && memcmp(i->data, j->data, i->len) == 0);
    }
  } else {
    FZ_CHECK(g_hash_table_size(a->kv) == g_hash_table_size(b->kv));
    GHashTableIter it;
    gpointer p;
    g_hash_table_iter_init(&it, a->kv);
    while (g_hash_table_iter_next(&it, &p, NULL)) {
      const store_kv_entry_t *e = p;
      uint32_t vlen = 0;
      const uint8_t *v = store_kv_get(b, e->h.hash, e->data, e->h.klen, &vlen);
      FZ_CHECK(v != NULL && vlen == e->h.vlen && memcmp(v, store_kv_entry_value(e), vlen) == 0);
    }
  }
}

static store_block_t *fresh(int32_t i, store_kind_t kind) {
  store_adopt(&store, i, ++gen, kind, 0, 0);
  return &store.blocks[i];
}

static int feed(store_block_t *b, const uint8_t *data, size_t size, size_t piece) {
  bs_restore_t *r = bs_restore_new(&store, b, &hook, 4096);
  int rc = 0;
  for (size_t off = 0; off < size && rc == 0;) {
    size_t n = piece == 0 ? size - off : MIN(piece, size - off);
    rc = bs_restore_feed(r, data + off, n);
    off += n;
    FZ_CHECK(rc != 0 || bs_restore_offset(r) == off);
  }
  if (rc == 0) rc = bs_restore_finish(r, NULL);
  bs_restore_free(r);
  return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (store.blocks == NULL) {
    FZ_CHECK(store_init(&store, 2, FUZZ_BS_BLOCK) == 0);
    section = g_byte_array_new();
  }
  store_kind_t kind = size > 6 && data[6] >= STORE_FILE && data[6] <= STORE_KV
                          ? (store_kind_t)data[6]
                          : STORE_FILE;
  /* One input in seven goes to a block of another kind, which must refuse it. */
  if (size % 7 == 3) kind = (store_kind_t)(kind % 3 + 1);
  static const size_t pieces[] = {0, 1, 13, 4096};
  store_block_t *b = fresh(0, kind);
  int rc = feed(b, data, size, pieces[size % G_N_ELEMENTS(pieces)]);
  if (rc != 0) {
    FZ_CHECK(rc == MAYFLY_EPROTO || rc == MAYFLY_EFULL || rc == MAYFLY_EKIND);
    FZ_CHECK(b->kind == kind);
    check_empty(b);
    if (rc == MAYFLY_EPROTO) fuzz_bs_eproto++;
    if (rc == MAYFLY_EFULL) fuzz_bs_efull++;
    if (rc == MAYFLY_EKIND) fuzz_bs_ekind++;
    return 0;
  }
  fuzz_bs_restored++;
  if (section->len > 0) fuzz_bs_chain++;
  FZ_CHECK(b->used <= FUZZ_BS_BLOCK && b->used == charge_of(b));
  /* Serialised again: the same length, and the same block once restored. */
  bs_stream_t st;
  bs_stream_init(&st, 0);
  FZ_CHECK(bs_save(&store, b, 0, &hook, 777, &st) == 0);
  /* Only a file's bytes may have come in more records than the one a save
   * writes. */
  FZ_CHECK(st.bytes == size || (kind == STORE_FILE && st.bytes < size));
  GByteArray *all = g_byte_array_new();
  for (guint i = 0; i < st.chunks->len; i++) {
    size_t n;
    const uint8_t *p = bs_stream_chunk(&st, i, &n);
    g_byte_array_append(all, p, (guint)n);
  }
  bs_stream_clear(&st);
  store_block_t *b2 = fresh(1, kind);
  FZ_CHECK(feed(b2, all->data, all->len, 0) == 0);
  check_same(b, b2);
  g_byte_array_unref(all);
  return 0;
}
