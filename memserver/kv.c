/*
 * kv partitions: binary keys and values in one block, for the keys whose
 * hash slot lies in the block's slot range.
 */
#include "common/error.h"
#include "common/wire.h"
#include "memserver/store.h"

int store_kv_check_slot(const store_block_t *b, const void *key, uint32_t klen) {
  int64_t slot = wire_kv_slot(key, klen);
  return (slot >= b->range_lo && slot < b->range_hi) ? 0 : MAYFLY_EMOVED;
}

int store_kv_put(store_t *s, store_block_t *b, const void *key, uint32_t klen, const void *val,
                 uint64_t vlen) {
  if (vlen > s->block_size || (uint64_t)klen + vlen + STORE_KV_ENTRY_OVERHEAD > s->block_size) {
    return MAYFLY_ETOOBIG; /* checked in two steps so a huge vlen cannot wrap the sum */
  }
  uint64_t cost = (uint64_t)klen + vlen + STORE_KV_ENTRY_OVERHEAD;
  GBytes *k = g_bytes_new(key, klen);
  GBytes *old = g_hash_table_lookup(b->kv, k);
  uint64_t freed = old ? (uint64_t)klen + g_bytes_get_size(old) + STORE_KV_ENTRY_OVERHEAD : 0;
  if (b->used - freed + cost > s->block_size) {
    g_bytes_unref(k);
    return MAYFLY_EFULL;
  }
  g_hash_table_replace(b->kv, k, g_bytes_new(val, vlen));
  b->used = b->used - freed + cost;
  return 0;
}

GBytes *store_kv_get_in(GHashTable *kv, const void *key, uint32_t klen) {
  GBytes *k = g_bytes_new_static(key, klen);
  GBytes *v = g_hash_table_lookup(kv, k);
  g_bytes_unref(k);
  return v;
}

GBytes *store_kv_get(store_block_t *b, const void *key, uint32_t klen) {
  return store_kv_get_in(b->kv, key, klen);
}

int store_kv_del(store_block_t *b, const void *key, uint32_t klen) {
  GBytes *k = g_bytes_new_static(key, klen);
  GBytes *v = g_hash_table_lookup(b->kv, k);
  int rc = MAYFLY_ENOKEY;
  if (v != NULL) {
    b->used -= (uint64_t)klen + g_bytes_get_size(v) + STORE_KV_ENTRY_OVERHEAD;
    g_hash_table_remove(b->kv, k);
    rc = 0;
  }
  g_bytes_unref(k);
  return rc;
}

static int in_range(GBytes *key, int64_t lo, int64_t hi) {
  gsize klen;
  const void *k = g_bytes_get_data(key, &klen);
  int64_t slot = wire_kv_slot(k, klen);
  return slot >= lo && slot < hi;
}

static uint64_t charge_of(GBytes *k, GBytes *v) {
  return g_bytes_get_size(k) + g_bytes_get_size(v) + STORE_KV_ENTRY_OVERHEAD;
}

static guint bytes_hash(gconstpointer k) {
  return g_bytes_hash(k);
}

GHashTable *store_kv_table_new(void) {
  return g_hash_table_new_full(bytes_hash, g_bytes_equal, (GDestroyNotify)g_bytes_unref,
                               (GDestroyNotify)g_bytes_unref);
}

GHashTable *store_kv_take_range(store_block_t *b, int64_t lo, int64_t hi, uint64_t *charge) {
  GHashTable *out = store_kv_table_new();
  uint64_t total = 0;
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, b->kv);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    if (!in_range(k, lo, hi)) continue;
    total += charge_of(k, v);
    g_hash_table_iter_steal(&it);
    g_hash_table_insert(out, k, v);
  }
  *charge = total;
  return out;
}

void store_kv_restore(store_block_t *b, GHashTable *moving) {
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, moving);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    g_hash_table_iter_steal(&it);
    g_hash_table_replace(b->kv, k, v);
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
  while ((rc = wire_kv_entry_next(buf, len, &pos, &key, &klen, &val, &vlen)) == 1) {
    int64_t slot = wire_kv_slot(key, klen);
    if (slot < lo || slot >= hi) return MAYFLY_EINVAL;
  }
  if (rc != 0) return rc;
  pos = 0;
  while (wire_kv_entry_next(buf, len, &pos, &key, &klen, &val, &vlen) == 1) {
    rc = store_kv_put(s, b, key, klen, val, vlen);
    if (rc != 0) return rc;
    (*count)++;
  }
  return 0;
}

void store_kv_drop_range(store_block_t *b, int64_t lo, int64_t hi) {
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, b->kv);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    if (!in_range(k, lo, hi)) continue;
    store_kv_uncharge(b, charge_of(k, v));
    g_hash_table_iter_remove(&it);
  }
}
