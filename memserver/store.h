/*
 * The block store of a memory server: a fixed pool of blocks and the data
 * operations on them. No I/O: the server (server.c) decodes requests and
 * calls these functions on its loop thread; unit tests call them directly.
 *
 * Backing. File blocks live in one anonymous mmap of N x B bytes reserved
 * with MAP_NORESERVE: a block costs no memory until written, and freeing it
 * hands its pages back with madvise(MADV_DONTNEED), so the resident size
 * follows the data, never more than N x B. (A jemalloc arena would also
 * return pages, but a fixed region makes each block's address and limit
 * explicit and keeps file reads one memcpy.) Queue items and kv entries are
 * individual allocations charged to their block with a fixed per-item
 * overhead (STORE_QUEUE_ITEM_OVERHEAD, STORE_KV_ENTRY_OVERHEAD) that covers
 * the allocator's and the container's bookkeeping, so a block's charge never
 * exceeds B and the process stays within N x B plus the fixed costs stated in
 * the README. A write that does not fit is refused (MAYFLY_EFULL).
 *
 * Ownership. Each block remembers the generation of its current owner.
 * A request naming an older generation is stale (MAYFLY_EMOVED); one naming
 * a newer generation than the store knows must be confirmed with the
 * directory first (store_lookup says MAYFLY_EAGAIN), after which
 * store_adopt() installs the new owner with empty contents.
 */
#ifndef MAYFLY_MS_STORE_H
#define MAYFLY_MS_STORE_H

#include <glib.h>
#include <stdint.h>

#include "common/wire.h"

#define STORE_QUEUE_ITEM_OVERHEAD WIRE_QUEUE_ITEM_OVERHEAD
#define STORE_KV_ENTRY_OVERHEAD WIRE_KV_ENTRY_OVERHEAD

/* kv watermarks when the namespace sets none: % of the block. */
#define STORE_HIGH_WM_DEFAULT 90
#define STORE_LOW_WM_DEFAULT 25

typedef enum { STORE_FREE = 0, STORE_FILE = 1, STORE_QUEUE = 2, STORE_KV = 3 } store_kind_t;

typedef struct store_item {
  uint32_t len;
  uint8_t data[];
} store_item_t;

typedef struct store_block {
  int32_t index;
  int64_t generation; /* owner's generation; 0 = never used */
  store_kind_t kind;  /* STORE_FREE when not owned (released or never used) */
  int released;       /* `generation` was released: it never comes back */
  uint64_t used;      /* bytes charged */
  int64_t range_lo, range_hi;
  int high_wm, low_wm; /* kv: split above / merge under these % of the block */
  int watched;         /* publish data events of this block */
  /* file */
  uint8_t *mem;
  uint64_t size;
  /* queue */
  GQueue *items; /* store_item_t * */
  int sealed;
  /* kv */
  GHashTable *kv; /* GBytes key -> GBytes value */
  void *waiters;  /* the server's parked pops (opaque here) */
  /* kv repartition, driven by the server (server.c, repart.h) */
  int rp_state;          /* STORE_RP_* */
  int64_t rp_lo, rp_hi;  /* the slots being moved */
  GHashTable *rp_moving; /* their entries, set aside (owned by the job) */
  uint64_t rp_charge;    /* what they are charged to this block */
  void *rp_job;
  void *held;            /* requests held until the repartition ends (server's) */
  int64_t rp_retry_ms;   /* no new repartition before this (monotonic ms) */
  int rp_refused;        /* why the last split was refused (EQUOTA, ENOSPC), until rp_retry_ms */
} store_block_t;

enum { STORE_RP_IDLE = 0, STORE_RP_PLANNING, STORE_RP_MOVING, STORE_RP_COMMITTING };

typedef struct store {
  int32_t nblocks;
  uint64_t block_size;
  uint8_t *region;
  store_block_t *blocks;
  int64_t max_generation; /* highest generation seen, reported at registration */
  int32_t blocks_in_use;
} store_t;

/* Reserves the pool. Returns 0, MAYFLY_EINVAL (a block size that is not a
 * multiple of the page size) or MAYFLY_ENOMEM. */
int store_init(store_t *s, int32_t nblocks, uint64_t block_size);
void store_free(store_t *s);

/*
 * Finds the block a request names. Returns 0 and *out; MAYFLY_EINVAL for an
 * index out of range; MAYFLY_EMOVED when the generation is older than the
 * block's owner or was released; MAYFLY_EKIND when the owner is of another
 * kind; MAYFLY_EAGAIN when the generation is newer than any the store knows
 * (confirm with the directory, then store_adopt or answer EMOVED).
 * kind STORE_FREE accepts a block of any kind.
 */
int store_lookup(store_t *s, uint32_t index, uint64_t generation, store_kind_t kind,
                 store_block_t **out);

/* Installs a confirmed owner: empties the block and sets its generation,
 * kind and range. Ignored when the block already has a newer generation. */
void store_adopt(store_t *s, int32_t index, int64_t generation, store_kind_t kind, int64_t lo,
                 int64_t hi);

/* Frees a block's contents once the directory released (index, generation);
 * requests with that generation get MAYFLY_EMOVED from then on. Returns 1 if
 * contents were dropped. */
int store_release(store_t *s, int32_t index, int64_t generation);

/* --- file segments: bytes [0, block_size) --- */
int store_file_write(store_t *s, store_block_t *b, uint64_t off, const void *data, uint64_t len);
/* Points *data at up to len bytes from off (fewer past the segment's size). */
uint64_t store_file_read(store_block_t *b, uint64_t off, uint64_t len, const uint8_t **data);
/* Cuts the segment to `size` bytes when it is longer; the bytes cut read as
 * zeros if a later write extends the segment again, and whole pages go back
 * to the system. */
void store_file_truncate(store_t *s, store_block_t *b, uint64_t size);

/* --- queue segments --- */
/* Returns 0, MAYFLY_ETOOBIG (an item larger than a block) or MAYFLY_EFULL
 * (the segment is now sealed: later items belong in the next segment). */
int store_queue_push(store_t *s, store_block_t *b, const void *data, uint32_t len);
/* Takes the head item (caller frees with g_free) or NULL when empty. */
store_item_t *store_queue_pop(store_block_t *b);
const store_item_t *store_queue_peek(const store_block_t *b);

/* --- kv partitions --- */
/* An empty kv table: GBytes key -> GBytes value, both owned. */
GHashTable *store_kv_table_new(void);
/* The slot of the key must lie in the block's range, else MAYFLY_EMOVED. */
int store_kv_check_slot(const store_block_t *b, const void *key, uint32_t klen);
int store_kv_put(store_t *s, store_block_t *b, const void *key, uint32_t klen, const void *val,
                 uint64_t vlen);
/* Returns the value (borrowed, valid until the next change) or NULL. */
GBytes *store_kv_get(store_block_t *b, const void *key, uint32_t klen);
/* The same lookup in a table set aside by store_kv_take_range. */
GBytes *store_kv_get_in(GHashTable *kv, const void *key, uint32_t klen);
int store_kv_del(store_block_t *b, const void *key, uint32_t klen);

/* Sets the entries of slots [lo, hi) aside in a new table (they stay charged
 * to the block: *charge says how much) for a repartition to copy. */
GHashTable *store_kv_take_range(store_block_t *b, int64_t lo, int64_t hi, uint64_t *charge);
/* A repartition rolled back: the entries come back (the table is emptied). */
void store_kv_restore(store_block_t *b, GHashTable *moving);
/* A repartition committed: the entries went elsewhere; uncharge them. */
void store_kv_uncharge(store_block_t *b, uint64_t charge);
/* Stores migrated entries (wire_kv_entry_* records) of slots [lo, hi):
 * checks every record first (MAYFLY_EPROTO, MAYFLY_EINVAL for a key outside
 * [lo, hi)), then stores them (MAYFLY_EFULL when they do not fit; the ones
 * before stay). *count receives the number stored. */
int store_kv_migrate_in(store_t *s, store_block_t *b, const uint8_t *buf, size_t len, int64_t lo,
                        int64_t hi, uint64_t *count);
/* Drops the entries of slots [lo, hi) (a merge into this block rolled back). */
void store_kv_drop_range(store_block_t *b, int64_t lo, int64_t hi);

#endif /* MAYFLY_MS_STORE_H */
