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
 * individual allocations charged to their block: a queue item its length
 * charged wire_queue_charge (the allocator's size class of the item and of
 * its list link), a kv entry store_kv_charge (the
 * allocator's size class of the entry plus its hash-table slot), which cover
 * the allocator's and the containers' bookkeeping, so a block's charge never
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


/* kv watermarks when the namespace sets none: % of the block. */
#define STORE_HIGH_WM_DEFAULT 90
#define STORE_LOW_WM_DEFAULT 25

typedef enum { STORE_FREE = 0, STORE_FILE = 1, STORE_QUEUE = 2, STORE_KV = 3 } store_kind_t;

typedef struct store_item {
  uint32_t len;
  uint8_t data[];
} store_item_t;
_Static_assert(sizeof(store_item_t) == WIRE_QUEUE_ITEM_HEAD, "queue item head size");
_Static_assert(sizeof(GList) == WIRE_QUEUE_LINK_SIZE, "queue list link size");

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
  GHashTable *kv; /* a set of store_kv_entry_t * (store_kv_table_new) */
  void *waiters;  /* the server's parked pops (opaque here) */
  /* kv repartition, driven by the server (server.c, repart.h) */
  int rp_state;          /* STORE_RP_* */
  int64_t rp_lo, rp_hi;  /* the slots being moved */
  GHashTable *rp_moving; /* their entries, set aside (owned by the job); same kind of table */
  uint64_t rp_charge;    /* what they are charged to this block */
  void *rp_job;
  void *held;            /* requests held until the repartition ends (server's) */
  void *chain;           /* replication state (the server's chain.c; NULL: R = 1) */
  /* No new repartition before rp_retry_ms, and no new merge before
   * rp_merge_retry_ms (monotonic ms): a refused or failed split waits for
   * the first, a refused or failed merge for the second only, so a merge
   * refused for good (10 s) never keeps a block that fills up from
   * splitting. Both belong to the block's owner: a new owner starts with 0. */
  int64_t rp_retry_ms, rp_merge_retry_ms;
  int rp_refused;        /* why the last split was refused (EQUOTA, ENOSPC), until rp_retry_ms */
  /* Merge backoff (resize.c): after a merge of this block into a neighbour
   * rolled back, no merge is tried again before mb_until_ms unless the fill
   * fell under mb_fit_below (the fill at which the pair fits, as the
   * neighbour's last fill says; 0 when not known). mb_delay_ms doubles with
   * each rollback of the same pair, up to a cap; mb_delay_ms == 0 means no
   * backoff. */
  int64_t mb_delay_ms, mb_until_ms;
  uint64_t mb_fit_below;
  char *mb_target;     /* the pair's neighbour: server address (owned), block, generation */
  int32_t mb_target_server; /* its server's id */
  int32_t mb_target_index;
  int64_t mb_target_gen;
  uint32_t mb_rollbacks; /* rollbacks of this pair so far */
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

/* The bytes charged to every block (their `used`, set-aside entries of a
 * repartition included) and the kv entries they hold. */
void store_totals(const store_t *s, uint64_t *charged, uint64_t *kv_entries);

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

/* --- kv partitions ---
 *
 * An entry is one allocation: a 16-byte header (the key's 64-bit hash, the
 * key and value lengths), then the key bytes, then the value bytes. A block's
 * table is a GHashTable in set mode (each entry is its own key, so the table
 * keeps one array of pointers and one of 32-bit hashes) whose hash function
 * takes the stored hash and whose equality function also accepts a lookup
 * probe built on the stack (hash, key pointer, length): a lookup allocates
 * nothing and never hashes the key again. Every kv function takes the key's
 * hash from the caller, who computes it once per request with
 * wire_kv_hash() and uses it for the slot check too; a hash that is not
 * wire_kv_hash(key, klen) finds nothing and stores the entry where no lookup
 * finds it.
 */
typedef struct store_kv_head {
  uint64_t hash; /* wire_kv_hash of the key */
  uint32_t klen; /* at most WIRE_KEY_MAX; the top bit marks a probe (kv.c) */
  uint32_t vlen;
} store_kv_head_t;

typedef struct store_kv_entry {
  store_kv_head_t h;
  uint8_t data[]; /* h.klen key bytes, then h.vlen value bytes */
} store_kv_entry_t;

/* The head is what wire_kv_charge reckons with. */
_Static_assert(sizeof(store_kv_head_t) == WIRE_KV_ENTRY_HEAD, "kv entry head size");

static inline const uint8_t *store_kv_entry_key(const store_kv_entry_t *e) {
  return e->data;
}
static inline const uint8_t *store_kv_entry_value(const store_kv_entry_t *e) {
  return e->data + e->h.klen;
}

/* What an entry of klen + vlen bytes is charged to its block: at least the
 * memory its allocation and its table slot take (wire_kv_charge). */
static inline uint64_t store_kv_charge(uint64_t klen, uint64_t vlen) {
  return wire_kv_charge(klen, vlen);
}

/* An empty kv table: a set of store_kv_entry_t *, owned (freed with g_free
 * when removed or when the table is destroyed). */
GHashTable *store_kv_table_new(void);
/* The slot of the key (wire_kv_slot_of(hash)) must lie in the block's range,
 * else MAYFLY_EMOVED. */
int store_kv_check_slot(const store_block_t *b, uint64_t hash);
/* Stores or replaces the value of a key. Returns 0, MAYFLY_EINVAL (a key
 * longer than WIRE_KEY_MAX), MAYFLY_ETOOBIG (an entry larger than a block)
 * or MAYFLY_EFULL (the block's charge would pass its size; nothing changes). */
int store_kv_put(store_t *s, store_block_t *b, uint64_t hash, const void *key, uint32_t klen,
                 const void *val, uint64_t vlen);
/* Points at the value of a key and sets *vlen, or returns NULL when the key
 * is absent. The pointer is borrowed from the entry: it stays valid until
 * the next write to the block (put, delete, migrate, drop, release), so a
 * caller copies the bytes (as a reply does) before anything else runs on
 * the loop. Allocates nothing. */
const uint8_t *store_kv_get(const store_block_t *b, uint64_t hash, const void *key,
                            uint32_t klen, uint32_t *vlen);
/* The same lookup in a table set aside by store_kv_take_range (valid while
 * the repartition that set it aside runs). */
const uint8_t *store_kv_get_in(GHashTable *kv, uint64_t hash, const void *key, uint32_t klen,
                               uint32_t *vlen);
/* Deletes a key: 0, or MAYFLY_ENOKEY when it is absent. */
int store_kv_del(store_block_t *b, uint64_t hash, const void *key, uint32_t klen);
/* The kv entries the block holds (set-aside ones included). */
uint64_t store_kv_count(const store_block_t *b);

/* Sets the entries of slots [lo, hi) aside in a new table (they stay charged
 * to the block: *charge says how much) for a repartition to copy. Moves
 * pointers only: no entry is copied or hashed again. */
GHashTable *store_kv_take_range(store_block_t *b, int64_t lo, int64_t hi, uint64_t *charge);
/* A repartition rolled back: the entries come back (the table is emptied). */
void store_kv_restore(store_block_t *b, GHashTable *moving);
/* A repartition committed: the entries went elsewhere; uncharge them. */
void store_kv_uncharge(store_block_t *b, uint64_t charge);
/* Stores migrated entries (wire_kv_entry_* records) of slots [lo, hi):
 * checks every record first (MAYFLY_EPROTO for a truncated record or a key
 * longer than WIRE_KEY_MAX, MAYFLY_EINVAL for a key outside [lo, hi)), then
 * stores them (MAYFLY_EFULL when they do not fit; the ones before stay).
 * Each key is hashed once. *count receives the number stored. */
int store_kv_migrate_in(store_t *s, store_block_t *b, const uint8_t *buf, size_t len, int64_t lo,
                        int64_t hi, uint64_t *count);
/* Drops the entries of slots [lo, hi) (a merge into this block rolled back). */
void store_kv_drop_range(store_block_t *b, int64_t lo, int64_t hi);

#endif /* MAYFLY_MS_STORE_H */
