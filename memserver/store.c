/*
 * The block pool of a memory server: reservation, ownership by generation,
 * release (see store.h). The kinds' operations are in file.c, queue.c, kv.c.
 */
#include "memserver/store.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/error.h"

int store_init(store_t *s, int32_t nblocks, uint64_t block_size) {
  memset(s, 0, sizeof *s);
  /* Blocks start on page boundaries, so giving a block's pages back never
   * touches a neighbour. */
  if (block_size == 0 || block_size % (uint64_t)sysconf(_SC_PAGESIZE) != 0) return MAYFLY_EINVAL;
  size_t total = (size_t)nblocks * block_size;
  void *r = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (r == MAP_FAILED) return MAYFLY_ENOMEM;
  s->region = r;
  s->nblocks = nblocks;
  s->block_size = block_size;
  s->blocks = g_new0(store_block_t, (gsize)nblocks);
  for (int32_t i = 0; i < nblocks; i++) {
    s->blocks[i].index = i;
    s->blocks[i].mem = s->region + (size_t)i * block_size;
  }
  return 0;
}

/* Drops a block's contents and gives its pages back. */
static void clear_block(store_t *s, store_block_t *b) {
  if (b->kind == STORE_FILE && b->size > 0) {
    madvise(b->mem, (size_t)s->block_size, MADV_DONTNEED);
  }
  if (b->items != NULL) {
    g_queue_free_full(b->items, g_free);
    b->items = NULL;
  }
  if (b->kv != NULL) {
    g_hash_table_destroy(b->kv);
    b->kv = NULL;
  }
  if (b->kind != STORE_FREE) s->blocks_in_use--;
  b->kind = STORE_FREE;
  /* A repartition under way belongs to the server, which finds the block
   * changed when it ends; the held requests are the server's to answer. */
  b->rp_state = STORE_RP_IDLE;
  b->rp_moving = NULL;
  b->rp_job = NULL;
  b->rp_charge = 0;
  /* The waits after a refused repartition were the previous owner's: its
   * partition (and the reason it could not split or merge) is gone. */
  b->rp_retry_ms = b->rp_merge_retry_ms = 0;
  b->rp_refused = 0;
  b->mb_delay_ms = b->mb_until_ms = 0;
  b->mb_fit_below = 0;
  b->mb_rollbacks = 0;
  g_free(b->mb_target);
  b->mb_target = NULL;
  b->used = 0;
  b->size = 0;
  b->sealed = 0;
}

void store_free(store_t *s) {
  if (s->blocks == NULL) return;
  for (int32_t i = 0; i < s->nblocks; i++) clear_block(s, &s->blocks[i]);
  munmap(s->region, (size_t)s->nblocks * s->block_size);
  g_free(s->blocks);
  s->blocks = NULL;
}

int store_lookup(store_t *s, uint32_t index, uint64_t generation, store_kind_t kind,
                 store_block_t **out) {
  if (index >= (uint32_t)s->nblocks) return MAYFLY_EINVAL;
  store_block_t *b = &s->blocks[index];
  if ((int64_t)generation < b->generation) return MAYFLY_EMOVED;
  if ((int64_t)generation > b->generation) return MAYFLY_EAGAIN;
  if (b->kind == STORE_FREE) return MAYFLY_EMOVED; /* released */
  if (kind != STORE_FREE && b->kind != kind) return MAYFLY_EKIND;
  *out = b;
  return 0;
}

void store_adopt(store_t *s, int32_t index, int64_t generation, store_kind_t kind, int64_t lo,
                 int64_t hi) {
  if (index < 0 || index >= s->nblocks) return;
  store_block_t *b = &s->blocks[index];
  if (generation < b->generation ||
      (generation == b->generation && (b->kind != STORE_FREE || b->released))) {
    return;
  }
  clear_block(s, b);
  b->generation = generation;
  b->released = 0;
  b->kind = kind;
  b->range_lo = lo;
  b->range_hi = hi;
  b->high_wm = STORE_HIGH_WM_DEFAULT;
  b->low_wm = STORE_LOW_WM_DEFAULT;
  b->watched = 0;
  if (kind == STORE_QUEUE) b->items = g_queue_new();
  if (kind == STORE_KV) {
    b->kv = store_kv_table_new();
  }
  if (kind != STORE_FREE) s->blocks_in_use++;
  if (generation > s->max_generation) s->max_generation = generation;
}

int store_release(store_t *s, int32_t index, int64_t generation) {
  if (index < 0 || index >= s->nblocks) return 0;
  store_block_t *b = &s->blocks[index];
  if (generation < b->generation) return 0;
  int had = b->kind != STORE_FREE;
  clear_block(s, b);
  b->generation = generation;
  b->released = 1;
  if (generation > s->max_generation) s->max_generation = generation;
  return had;
}

void store_totals(const store_t *s, uint64_t *charged, uint64_t *kv_entries) {
  *charged = *kv_entries = 0;
  for (int32_t i = 0; s->blocks != NULL && i < s->nblocks; i++) {
    const store_block_t *b = &s->blocks[i];
    if (b->kind == STORE_FREE) continue;
    *charged += b->used;
    if (b->kind == STORE_KV) *kv_entries += store_kv_count(b);
  }
}
