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

GBytes *store_kv_get(store_block_t *b, const void *key, uint32_t klen) {
  GBytes *k = g_bytes_new_static(key, klen);
  GBytes *v = g_hash_table_lookup(b->kv, k);
  g_bytes_unref(k);
  return v;
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
