/*
 * kv partitions: binary keys and values in one block, for the keys whose
 * hash slot lies in the block's slot range. Entries are single allocations
 * kept in a GHashTable used as a set (see store.h for the layout).
 */
#include <string.h>

#include "common/error.h"
#include "common/wire.h"
#include "memserver/store.h"

/* A lookup key on the stack: the same head as an entry, with the top bit of
 * klen set, and a pointer to the key instead of the key bytes. Stored
 * entries never have the bit (keys are at most WIRE_KEY_MAX bytes). */
#define KV_PROBE 0x80000000u

typedef struct {
  store_kv_head_t h;
  const uint8_t *key;
} kv_probe_t;

static inline kv_probe_t probe_of(uint64_t hash, const void *key, uint32_t klen) {
  return (kv_probe_t){.h = {.hash = hash, .klen = klen | KV_PROBE}, .key = key};
}

static inline uint32_t head_klen(const store_kv_head_t *h) {
  return h->klen & ~KV_PROBE;
}

static inline const uint8_t *head_key(const store_kv_head_t *h) {
  return (h->klen & KV_PROBE) ? ((const kv_probe_t *)h)->key
                              : store_kv_entry_key((const store_kv_entry_t *)h);
}

/* The table's hash: the upper half of the 64-bit hash. Its lower 16 bits are
 * the slot, which a partition's range narrows; the upper bits are the best
 * mixed ones of FNV-1a (the last step is a multiplication). */
static guint kv_hash(gconstpointer p) {
  return (guint)(((const store_kv_head_t *)p)->hash >> 32);
}

/* Equality of two heads, each an entry or a probe. */
static gboolean kv_equal(gconstpointer a, gconstpointer b) {
  const store_kv_head_t *x = a, *y = b;
  uint32_t n = head_klen(x);
  return x->hash == y->hash && n == head_klen(y) && memcmp(head_key(x), head_key(y), n) == 0;
}

GHashTable *store_kv_table_new(void) {
  return g_hash_table_new_full(kv_hash, kv_equal, g_free, NULL);
}

static uint64_t charge_of(const store_kv_entry_t *e) {
  return store_kv_charge(e->h.klen, e->h.vlen);
}

static int in_range(const store_kv_entry_t *e, int64_t lo, int64_t hi) {
  int64_t slot = wire_kv_slot_of(e->h.hash);
  return slot >= lo && slot < hi;
}

int store_kv_check_slot(const store_block_t *b, uint64_t hash) {
  int64_t slot = wire_kv_slot_of(hash);
  return (slot >= b->range_lo && slot < b->range_hi) ? 0 : MAYFLY_EMOVED;
}

static store_kv_entry_t *lookup(GHashTable *kv, uint64_t hash, const void *key, uint32_t klen) {
  kv_probe_t p = probe_of(hash, key, klen);
  return g_hash_table_lookup(kv, &p);
}

int store_kv_put(store_t *s, store_block_t *b, uint64_t hash, const void *key, uint32_t klen,
                 const void *val, uint64_t vlen) {
  if (klen > WIRE_KEY_MAX) return MAYFLY_EINVAL;
  if (vlen > s->block_size || vlen > UINT32_MAX || store_kv_charge(klen, vlen) > s->block_size) {
    return MAYFLY_ETOOBIG; /* checked in steps so a huge vlen cannot wrap the sum */
  }
  uint64_t cost = store_kv_charge(klen, vlen);
  const store_kv_entry_t *old = lookup(b->kv, hash, key, klen);
  uint64_t freed = old ? charge_of(old) : 0;
  if (b->used - freed + cost > s->block_size) return MAYFLY_EFULL;
  store_kv_entry_t *e = g_malloc(sizeof *e + klen + vlen);
  e->h.hash = hash;
  e->h.klen = klen;
  e->h.vlen = (uint32_t)vlen;
  if (klen > 0) memcpy(e->data, key, klen);
  if (vlen > 0) memcpy(e->data + klen, val, vlen);
  /* An equal entry already there is replaced and freed (set mode keeps the
   * new key, and the key is the entry). */
  g_hash_table_add(b->kv, e);
  b->used = b->used - freed + cost;
  return 0;
}

const uint8_t *store_kv_get_in(GHashTable *kv, uint64_t hash, const void *key, uint32_t klen,
                               uint32_t *vlen) {
  const store_kv_entry_t *e = lookup(kv, hash, key, klen);
  if (e == NULL) return NULL;
  *vlen = e->h.vlen;
  return store_kv_entry_value(e);
}

const uint8_t *store_kv_get(const store_block_t *b, uint64_t hash, const void *key,
                            uint32_t klen, uint32_t *vlen) {
  return store_kv_get_in(b->kv, hash, key, klen, vlen);
}

int store_kv_del(store_block_t *b, uint64_t hash, const void *key, uint32_t klen) {
  kv_probe_t p = probe_of(hash, key, klen);
  gpointer found = NULL;
  /* One lookup: the entry is taken out, then freed here. */
  if (!g_hash_table_steal_extended(b->kv, &p, &found, NULL)) return MAYFLY_ENOKEY;
  store_kv_uncharge(b, charge_of(found));
  g_free(found);
  return 0;
}

uint64_t store_kv_count(const store_block_t *b) {
  uint64_t n = b->kv != NULL ? g_hash_table_size(b->kv) : 0;
  if (b->rp_moving != NULL) n += g_hash_table_size(b->rp_moving);
  return n;
}

GHashTable *store_kv_take_range(store_block_t *b, int64_t lo, int64_t hi, uint64_t *charge) {
  GHashTable *out = store_kv_table_new();
  uint64_t total = 0;
  GHashTableIter it;
  gpointer e;
  g_hash_table_iter_init(&it, b->kv);
  while (g_hash_table_iter_next(&it, &e, NULL)) {
    if (!in_range(e, lo, hi)) continue;
    total += charge_of(e);
    g_hash_table_iter_steal(&it);
    g_hash_table_add(out, e);
  }
  *charge = total;
  return out;
}

void store_kv_restore(store_block_t *b, GHashTable *moving) {
  GHashTableIter it;
  gpointer e;
  g_hash_table_iter_init(&it, moving);
  while (g_hash_table_iter_next(&it, &e, NULL)) {
    g_hash_table_iter_steal(&it);
    g_hash_table_add(b->kv, e);
  }
}

void store_kv_uncharge(store_block_t *b, uint64_t charge) {
  b->used = charge > b->used ? 0 : b->used - charge;
}

int store_kv_migrate_in(store_t *s, store_block_t *b, const uint8_t *buf, size_t len, int64_t lo,
                        int64_t hi, uint64_t *count) {
  const uint8_t *key, *val;
  uint32_t klen, vlen;
  size_t pos = 0;
  int rc;
  *count = 0;
  /* Every record is checked before any is stored; the hashes computed for
   * the check are kept for the store. */
  GArray *hashes = g_array_sized_new(FALSE, FALSE, sizeof(uint64_t), (guint)(len / 64 + 1));
  while ((rc = wire_kv_entry_next(buf, len, &pos, &key, &klen, &val, &vlen)) == 1) {
    if (klen > WIRE_KEY_MAX) {
      rc = MAYFLY_EPROTO;
      break;
    }
    uint64_t hash = wire_kv_hash(key, klen);
    int64_t slot = wire_kv_slot_of(hash);
    if (slot < lo || slot >= hi) {
      rc = MAYFLY_EINVAL;
      break;
    }
    g_array_append_val(hashes, hash);
  }
  pos = 0;
  for (guint i = 0; rc == 0 && wire_kv_entry_next(buf, len, &pos, &key, &klen, &val, &vlen) == 1;
       i++) {
    rc = store_kv_put(s, b, g_array_index(hashes, uint64_t, i), key, klen, val, vlen);
    if (rc == 0) (*count)++;
  }
  g_array_free(hashes, TRUE);
  return rc;
}

void store_kv_drop_range(store_block_t *b, int64_t lo, int64_t hi) {
  GHashTableIter it;
  gpointer e;
  g_hash_table_iter_init(&it, b->kv);
  while (g_hash_table_iter_next(&it, &e, NULL)) {
    if (!in_range(e, lo, hi)) continue;
    store_kv_uncharge(b, charge_of(e));
    g_hash_table_iter_remove(&it);
  }
}
