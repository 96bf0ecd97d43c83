/*
 * Queue segments: a FIFO of items in one block. When an item does not fit,
 * the segment is sealed: it takes no more items, so everything pushed after
 * it goes to the next segment and FIFO order holds across segments.
 */
#include <string.h>

#include "common/error.h"
#include "common/wire.h"
#include "memserver/store.h"

int store_queue_push(store_t *s, store_block_t *b, const void *data, uint32_t len) {
  uint64_t cost = wire_queue_charge(len);
  if (cost > s->block_size) return MAYFLY_ETOOBIG;
  if (b->sealed || b->used + cost > s->block_size) {
    b->sealed = 1;
    return MAYFLY_EFULL;
  }
  store_item_t *it = g_malloc(sizeof *it + len);
  it->len = len;
  memcpy(it->data, data, len);
  g_queue_push_tail(b->items, it);
  b->used += cost;
  return 0;
}

store_item_t *store_queue_pop(store_block_t *b) {
  store_item_t *it = g_queue_pop_head(b->items);
  if (it != NULL) b->used -= wire_queue_charge(it->len);
  return it;
}

const store_item_t *store_queue_peek(const store_block_t *b) {
  return g_queue_peek_head(b->items);
}
