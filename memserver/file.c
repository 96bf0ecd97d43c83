/*
 * File segments: a block holds bytes [0, block_size) of one partition of a
 * file namespace; its size is the end of the furthest write.
 */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/error.h"
#include "memserver/store.h"

int store_file_write(store_t *s, store_block_t *b, uint64_t off, const void *data, uint64_t len) {
  if (off > s->block_size || len > s->block_size - off) return MAYFLY_ETOOBIG;
  if (len == 0) return 0; /* an empty write does not extend the segment */
  memcpy(b->mem + off, data, len);
  if (off + len > b->size) {
    b->size = off + len;
    b->used = b->size;
  }
  return 0;
}

uint64_t store_file_read(store_block_t *b, uint64_t off, uint64_t len, const uint8_t **data) {
  if (off >= b->size) return 0;
  if (len > b->size - off) len = b->size - off;
  *data = b->mem + off;
  return len;
}

void store_file_truncate(store_t *s, store_block_t *b, uint64_t size) {
  if (size >= b->size) return;
  uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
  uint64_t keep = (size + page - 1) / page * page; /* first whole page past the end */
  uint64_t end = (b->size + page - 1) / page * page;
  if (keep > size) memset(b->mem + size, 0, MIN(keep, b->size) - size);
  if (end > keep) madvise(b->mem + keep, (size_t)(MIN(end, s->block_size) - keep), MADV_DONTNEED);
  b->size = size;
  b->used = size;
}
