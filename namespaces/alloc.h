/*
 * The block allocator: which blocks of which memory server are free.
 *
 * Memory servers register a number of blocks of one block size. A block is
 * named by (server id, index, generation); the generation of a block goes up
 * every time the block is freed, so a reference taken before the free can be
 * told apart from the block's next owner. Allocation spreads a request across
 * servers, least-used (by fraction of blocks in use) first, and never picks a
 * block of a server marked down.
 *
 * Picking is separate from taking: ns_alloc_pick() chooses blocks without
 * changing anything, and the tree's apply function (tree.h) takes them when it
 * applies the record that uses them, so every change of state is a record.
 * No I/O, no locking: the owner (the directory's loop) serialises calls.
 */
#ifndef MAYFLY_NS_ALLOC_H
#define MAYFLY_NS_ALLOC_H

#include <glib.h>
#include <stdint.h>

typedef struct ns_block {
  int32_t server;     /* server id, >= 1 */
  int32_t index;      /* block index on that server */
  int64_t generation; /* bumped each time the block is freed */
} ns_block_t;

/* Most blocks of one chain (replicated partition, see tree.h). */
#define NS_CHAIN_MAX 5

typedef struct ns_server {
  int32_t id;
  char *address;      /* data-plane host:port */
  char *host;         /* host part of address (IPv6 brackets stripped): replicas of a
                         partition go on distinct hosts */
  char *zone;         /* placement zone, "" when none */
  int32_t nblocks;
  int64_t block_size;
  int up;             /* 0 when marked down (missed heartbeats) */
  uint64_t incarnation; /* of the last registration; 0 = unknown */
  int32_t used;
  int64_t *generation; /* per block */
  uint8_t *in_use;     /* per block */
  void **owner;        /* per block: the tree node holding it, NULL when free */
  GArray *free_stack;  /* int32 indices of free blocks; top = next handed out */
} ns_server_t;

typedef struct ns_alloc {
  GPtrArray *servers; /* ns_server_t *, index = id - 1 */
  int64_t blocks_total;
  int64_t blocks_used;
} ns_alloc_t;

/* Largest number of blocks one server may register. */
#define NS_ALLOC_MAX_BLOCKS (1 << 24)
/* Largest block size (1 PiB): sums of a few block sizes and file offsets
 * stay far from overflowing int64_t. */
#define NS_ALLOC_MAX_BLOCK_SIZE (INT64_C(1) << 50)

ns_alloc_t *ns_alloc_new(void);
void ns_alloc_free(ns_alloc_t *a); /* accepts NULL */

/* Adds a server or, when the address is known, re-registers it (marking it up).
 * A known server may change its geometry only while none of its blocks are in
 * use. Writes the server id to *id. Returns 0, MAYFLY_EINVAL (bad geometry) or
 * MAYFLY_EPERM (geometry change with blocks in use). */
int ns_alloc_add_server(ns_alloc_t *a, const char *address, int32_t nblocks,
                        int64_t block_size, int32_t *id);

/* Sets a server's zone (NULL or "" = none). Returns 0 or MAYFLY_ESERVER. */
int ns_alloc_set_zone(ns_alloc_t *a, int32_t id, const char *zone);

/* The host part of a "host:port" address as a new string (g_free): what
 * comes before the last ':' ("[::1]:7000" gives "::1", an address without
 * a port is its own host). */
char *ns_alloc_host_of(const char *address);

/* Returns the server with this id, or NULL. */
ns_server_t *ns_alloc_server(ns_alloc_t *a, int32_t id);

/* Returns the server registered at this address, or NULL. */
ns_server_t *ns_alloc_server_by_address(ns_alloc_t *a, const char *address);

/* Marks a server up or down. Returns 0 or MAYFLY_ESERVER. */
int ns_alloc_set_up(ns_alloc_t *a, int32_t id, int up);

/* Chooses n free blocks without taking them, least-used server first, one
 * block at a time so a multi-block request spreads across servers. Returns 0,
 * MAYFLY_ENOSERVERS (no server registered, or none up) or MAYFLY_ENOSPC (not
 * enough free blocks on the servers that are up). */
int ns_alloc_pick(const ns_alloc_t *a, int n, ns_block_t *out);

/*
 * Chooses r free blocks for one chain without taking them: one per host, on
 * r distinct hosts with a server up, none on the host of a server listed in
 * avoid[0..navoid) (the members a chain keeps; their servers may be down);
 * for each pick, a server whose zone is not yet used by avoid[] or earlier
 * picks comes first (servers without a zone never count as using one), then
 * the least-used server (by fraction of blocks in use; ties: lowest id).
 * out[0] is the head. Returns 0, MAYFLY_EINVAL (r < 1 or navoid < 0),
 * MAYFLY_ENOSERVERS (none up), MAYFLY_ENOHOSTS (r > NS_CHAIN_MAX, or fewer
 * than r hosts up besides the avoided ones: ns_alloc_hosts_up() tells how
 * many) or MAYFLY_ENOSPC (the hosts exist but not enough free blocks).
 */
int ns_alloc_pick_chain(const ns_alloc_t *a, int r, const int32_t *avoid, int navoid,
                        ns_block_t *out);

/* Distinct hosts with a server up, not counting the hosts of the servers in
 * avoid[0..navoid): how many replicas ns_alloc_pick_chain() can place. */
int ns_alloc_hosts_up(const ns_alloc_t *a, const int32_t *avoid, int navoid);

/* Internal to namespaces/ (planning several chains at once):
 * ns_alloc_pick_chain() counting extra[id - 1] blocks of each server as
 * already picked (extra has one entry per server; picks are added to it). */
int ns__alloc_pick_chain_x(const ns_alloc_t *a, int r, const int32_t *avoid, int navoid,
                           int32_t *extra, ns_block_t *out);

/* Marks a picked block as used. Returns 0, MAYFLY_ESERVER, MAYFLY_EINVAL (no
 * such index) or MAYFLY_EMOVED (block in use, or generation moved on). */
int ns_alloc_take(ns_alloc_t *a, const ns_block_t *b);

/* Frees a used block and bumps its generation. Returns 0, MAYFLY_ESERVER,
 * MAYFLY_EINVAL or MAYFLY_EMOVED (not in use with that generation). */
int ns_alloc_release(ns_alloc_t *a, const ns_block_t *b);

/* Records which tree node holds a taken block (NULL to clear). */
void ns_alloc_set_owner(ns_alloc_t *a, const ns_block_t *b, void *owner);

/* Raises every generation of server `id` above `floor`, so that after a
 * directory restart no block is handed out under a generation a stale client
 * may still hold (the server reports the highest it has seen). */
void ns_alloc_raise_generations(ns_alloc_t *a, int32_t id, int64_t floor);

/* Undoes ns_alloc_take() within one failed apply: the block is free again
 * with its generation unchanged, as if never taken (internal to the tree). */
int ns__alloc_untake(ns_alloc_t *a, const ns_block_t *b);

#endif /* MAYFLY_NS_ALLOC_H */
