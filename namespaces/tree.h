/*
 * The namespace tree: directories and leaf namespaces (file, queue, kv), their
 * leases, tags and layouts, and the block allocator that backs them.
 *
 * Every change of state goes through ns_tree_apply() with an ns_record_t, so
 * that a write-ahead log can later persist records and replay them after a
 * crash. Records carry everything apply needs (times, chosen blocks), so
 * applying the same records to an empty tree rebuilds the same state. Reads
 * (lookup, stat, list, lease queries) are plain functions.
 *
 * Time is passed in, never read here: `now_ms` is a monotonic clock for
 * leases, `wall_ms` a wall clock for creation times. Tests inject both.
 *
 * Leases. Every node has a lease duration (0 = the tree's default). renew(P)
 * renews P, its ancestors and its whole subtree. A node not renewed for its
 * lease plus the tree's grace period expires, unless it is pinned; a directory
 * goes only when its whole subtree has gone. Subtree renewal is O(depth): each
 * node keeps `renewed_ms` (the node itself was renewed) and `subtree_ms` (it
 * was the target of a renew, which covers everything below it); a node's
 * effective renewal is the later of its own and every ancestor's subtree_ms.
 *
 * Not thread-safe: one owner (the directory's loop) serialises all calls.
 */
#ifndef MAYFLY_NS_TREE_H
#define MAYFLY_NS_TREE_H

#include <glib.h>
#include <stdint.h>

#include "common/wire.h"
#include "namespaces/alloc.h"

typedef enum {
  NS_KIND_DIRECTORY = 0,
  NS_KIND_FILE = 1,
  NS_KIND_QUEUE = 2,
  NS_KIND_KV = 3
} ns_kind_t;

#define NS_FLAG_PINNED 0x1u

/* Limits on tags and on blocks per request, checked before allocating. */
#define NS_TAGS_MAX 32
#define NS_TAG_KEY_MAX 64
#define NS_TAG_VALUE_MAX 256
#define NS_CREATE_BLOCKS_MAX 4096
#define NS_LEASE_MAX_MS (30LL * 24 * 3600 * 1000)

/* Number of hash slots of a kv namespace; partitions own ranges of slots. */
#define NS_KV_SLOTS WIRE_KV_SLOTS

/* One block-backed partition of a namespace and the part of the data it holds:
 * for kv a slot range [lo, hi), for a file a byte range, for a queue the
 * segment's sequence number in lo.
 *
 * State. A partition is live, or lost: its memory server registered again
 * with a new incarnation (it restarted), so the data died with the old one.
 * A lost partition keeps its block, taken, at the same generation, so that
 * nothing else is ever handed that (index, generation) and every request
 * naming it can be answered MAYFLY_ELOST; it is never split, merged,
 * released or truncated away. Only removing its namespace frees the block
 * (at a new generation). */
typedef enum { NS_PART_LIVE = 0, NS_PART_LOST = 1 } ns_part_state_t;

/* Replication (issue 12). A partition of a namespace with R > 1 replicas is
 * a chain of blocks on distinct hosts: `block` is the head (where writes
 * go), more[0..nmore) the members after it in order, the last one the tail
 * (where reads go). R = 1 partitions have nmore = 0 and replicas 1 (or 0 in
 * records from before replication, read as 1). A member whose server died
 * or restarted leaves the chain (the head's successor becomes the head when
 * the head goes); the partition is lost only when its last member goes.
 * `copy` is a block taken to join the chain at the tail once the tail has
 * filled it (copy_op names that copy); server 0 when none. NS_CHAIN_MAX
 * (alloc.h) bounds the members. Every member's block and the copy block are
 * taken and owned by the namespace, and counted in its sub_blocks. */

typedef struct ns_partition {
  ns_block_t block;
  int64_t lo, hi;
  ns_part_state_t state;
  int32_t replicas;                 /* R wanted: 1 unreplicated */
  int32_t nmore;                    /* members after the head */
  ns_block_t more[NS_CHAIN_MAX - 1];
  int64_t chain_version;            /* bumped at every change of the chain */
  ns_block_t copy;                  /* a block being filled to join; server 0: none */
  int64_t copy_op;
} ns_partition_t;

/* Members of the chain, the head included. */
static inline int ns_part_members(const ns_partition_t *p) { return 1 + p->nmore; }
/* The i-th member, 0 = the head. */
static inline const ns_block_t *ns_part_member(const ns_partition_t *p, int i) {
  return i == 0 ? &p->block : &p->more[i - 1];
}
/* The tail (the head when unreplicated). */
static inline const ns_block_t *ns_part_tail(const ns_partition_t *p) {
  return ns_part_member(p, p->nmore);
}

typedef struct ns_layout {
  int64_t version; /* bumped on every change of parts */
  GArray *parts;   /* ns_partition_t; NULL for a directory */
} ns_layout_t;

/* A repartition of a kv namespace that was begun and not yet ended: the
 * slots [lo, hi) of block `src` (a partition's head) are being copied to
 * block `dst` (a split: dst is a new block, taken at begin, the head of the
 * new partition's chain whose other members are dst_more[0..dst_nmore), taken
 * too; a merge: dst is the head of the neighbour that takes over src's whole
 * range). The layout changes only when it commits. */
typedef struct ns_repart {
  int64_t id;
  int merge;
  ns_block_t src, dst;
  int64_t lo, hi;
  int64_t started_ms;
  int lost; /* src or dst lost with a server's incarnation, or src's or dst's head left
               its chain (or a member of a split's new chain left): it can only roll back */
  int32_t dst_nmore;                    /* split: members of the new chain after dst */
  ns_block_t dst_more[NS_CHAIN_MAX - 1];
} ns_repart_t;

/* Watermark defaults, % of a block. */
#define NS_HIGH_WM_DEFAULT 90
#define NS_LOW_WM_DEFAULT 25

typedef struct ns_node ns_node_t;
struct ns_node {
  char *name; /* last path component; "" for the root */
  ns_node_t *parent;
  ns_kind_t kind;
  uint32_t flags;
  int64_t created_wall_ms;
  int64_t lease_ms;    /* 0 = the tree's default */
  int64_t renewed_ms;  /* monotonic time this node was last renewed */
  int64_t subtree_ms;  /* monotonic time of the last renew of this node's subtree */
  GHashTable *children; /* name -> ns_node_t *; directories only */
  GHashTable *tags;     /* char * -> char *; NULL when there are none */
  ns_layout_t layout;
  int32_t max_blocks;  /* 0 = no limit */
  int32_t initial_blocks; /* blocks at creation: merges never go below */
  int32_t high_wm, low_wm; /* kv: % of a block; 0 = the defaults */
  int32_t replicas;    /* R of every partition (CREATE; 1 before replication) */
  GArray *reparts;     /* ns_repart_t begun and not ended; NULL when none */
  /* What the subtree rooted here (this node included) holds: blocks (every
   * node's ns_node_blocks_held: chain members and copies included) and leaf
   * namespaces. Kept by every
   * change of the tree in O(depth), so a quota over a subtree is one
   * lookup; ns_tree_check_counts() verifies them. */
  int64_t sub_blocks;
  int64_t sub_leaves;
};

struct ns_record;

/* Called with every record ns_tree_apply() accepted, after it applied (the
 * reaper's included): the directory logs exactly these. */
typedef void (*ns_tree_observer_cb)(const struct ns_record *rec, void *ud);

typedef struct ns_tree {
  ns_node_t *root;
  ns_alloc_t *alloc;
  int64_t default_lease_ms;
  int64_t grace_ms;
  int64_t n_dirs;     /* not counting the root */
  int64_t n_leaves;
  int64_t n_expired;  /* nodes removed by lease expiry since start */
  int64_t last_op_id; /* of repartitions */
  ns_tree_observer_cb observer; /* NULL: none */
  void *observer_ud;
  /* Request ids applied (ns_record_t.req_client): client id (uint64_t *) ->
   * ns_request_t *, at most NS_REQUESTS_MAX (the oldest go first). Part of
   * the state: logged with the records, kept in snapshots. */
  GHashTable *requests;
} ns_tree_t;

/* What the tree remembers of one client's requests. */
typedef struct ns_request {
  uint64_t client;
  uint64_t seq;    /* its newest request applied */
  /* Which of the NS_REQUEST_WINDOW seqs up to `seq` were applied: bit i is
   * seq - i (bit 0 always set). Threads sharing one control connection
   * object draw their seqs before they take turns, so seqs may arrive out of
   * order: a seq below the newest is a repeat only if its bit is set. */
  uint64_t window;
  int64_t wall_ms; /* when (the record's wall clock) */
} ns_request_t;

/* The seqs below a client's newest that the tree tells apart. A seq older
 * than that counts as applied: a call is resent within its own timeout, long
 * before 64 later calls of the same client could overtake it. */
#define NS_REQUEST_WINDOW 64

/* Clients remembered. Past it, those not heard of for the longest are
 * forgotten, down to three quarters of it, so a retry from one of them could
 * apply twice: 65536 clients retrying at once is far beyond a failover's. */
#define NS_REQUESTS_MAX 65536

typedef enum {
  NS_REC_MKDIR,         /* path; flags NS_REC_PARENTS */
  NS_REC_CREATE,        /* path, kind, lease_ms, node_flags, tags, parts (with chains),
                           replicas */
  NS_REC_REMOVE,        /* path; flags NS_REC_RECURSIVE, NS_REC_EXPIRED */
  NS_REC_RENAME,        /* path -> path2 */
  NS_REC_RENEW,         /* paths[npaths] */
  NS_REC_ADD_PART,      /* path, parts[0] (with its chain) appended to the layout */
  NS_REC_REMOVE_PART,   /* path, part_index */
  NS_REC_SERVER_ADD,    /* address, zone, blocks, block_size, gen_floor, incarnation: a
                           known address with another incarnation leaves every chain
                           with another member and loses its other partitions */
  NS_REC_SERVER_STATE,  /* server_id, up: up 0 also drops the server from every chain
                           with another member */
  NS_REC_REPART_BEGIN,  /* path, op_id, flags NS_REC_MERGE, block (src), block2 (dst), lo, hi;
                           a split of a replicated namespace: parts[0] = the new partition
                           with its chain (its head = block2), nparts 1 */
  NS_REC_REPART_END,    /* path, op_id, flags NS_REC_COMMIT */
  NS_REC_TRUNCATE,      /* path, lo: drop the file partitions starting at or past lo */
  NS_REC_REPLICA_BEGIN, /* path, lo (the partition's range lo), block (the copy), op_id */
  NS_REC_REPLICA_END    /* path, op_id, flags NS_REC_COMMIT (else abort) */
} ns_rec_type_t;

/* The last record type (codecs). */
#define NS_REC_TYPE_LAST NS_REC_REPLICA_END

#define NS_REC_PARENTS 0x1u
#define NS_REC_RECURSIVE 0x2u
#define NS_REC_EXPIRED 0x4u
#define NS_REC_MERGE 0x8u
#define NS_REC_COMMIT 0x10u

/* A mutation of the tree. Borrowed pointers: apply copies what it keeps. */
typedef struct ns_record {
  ns_rec_type_t type;
  uint32_t flags;
  int64_t now_ms;
  int64_t wall_ms;
  const char *path;
  const char *path2;
  ns_kind_t kind;
  int64_t lease_ms;
  uint32_t node_flags;
  GHashTable *tags; /* may be NULL */
  const ns_partition_t *parts;
  size_t nparts;
  int32_t part_index;
  const char *const *paths;
  size_t npaths;
  const char *address;
  const char *zone;     /* SERVER_ADD: NULL or "" = none */
  int32_t blocks;
  int64_t block_size;
  int32_t server_id;
  int up;
  int64_t gen_floor;
  uint64_t incarnation; /* SERVER_ADD: 0 = unknown (never marks anything lost) */
  int32_t max_blocks, high_wm, low_wm; /* CREATE */
  int32_t replicas;     /* CREATE: 0 or 1 unreplicated, at most NS_CHAIN_MAX */
  int64_t op_id;
  ns_block_t block, block2;
  int64_t lo, hi;
  /* The request id of the call that made the record (any type; 0, 0: none):
   * applying it remembers that the client's calls up to req_seq are done
   * (ns_tree_request_done), so a call retried after a failover applies once. */
  uint64_t req_client, req_seq;
} ns_record_t;

/* What applying a record did, for the caller to act on: blocks to release on
 * the memory servers, paths removed (events), paths not found (renew), the id
 * of a registered server, the namespaces whose partitions were just marked
 * lost (events) and how many partitions that was, and the blocks whose chain
 * changed (every remaining member and the copy block of each chain that a
 * member left or joined, or that began or ended a copy: their servers are
 * told to check them). The caller owns it: init, apply, read, clear. */
typedef struct ns_effects {
  GArray *freed;       /* ns_block_t: dropped chain members and cancelled copies too */
  GArray *rechain;     /* ns_block_t */
  GPtrArray *removed;  /* char * (g_free), in removal order, children first */
  GPtrArray *missing;  /* char * (g_free) */
  GPtrArray *lost;     /* char * (g_free): each namespace once, by its first block */
  int32_t server_id;
  int32_t lost_parts;
} ns_effects_t;

void ns_effects_init(ns_effects_t *fx);
void ns_effects_clear(ns_effects_t *fx); /* frees contents; fx can be reused after init */

/* Creates an empty tree (just the root) with its own allocator. */
ns_tree_t *ns_tree_new(int64_t default_lease_ms, int64_t grace_ms);
void ns_tree_free(ns_tree_t *t); /* accepts NULL */

/*
 * Applies one record. Returns 0 or a negative MAYFLY_E* code, in which case
 * nothing changed; `why` (may be NULL) receives a sentence for a human. `fx`
 * may be NULL when the caller does not need the effects.
 * Errors: EBADPATH/ENAMETOOLONG (path rules), ENOENT, EEXIST, ENOTDIR,
 * EISDIR, ENOTEMPTY, EPERM (the root), ESUBTREE, EINVAL, EMOVED (blocks not
 * free any more), ESERVER, ELOST (the record would split, merge, release or
 * truncate away a lost partition).
 */
int ns_tree_apply(ns_tree_t *t, const ns_record_t *rec, ns_effects_t *fx, char *why,
                  size_t whylen);

/* Leases restart in full: every node counts as renewed at now_ms; begun
 * repartitions count as begun then (their memory server may still end
 * them, or the directory rolls them back after the usual timeout). For a
 * tree recovered from a log, or taken over by a new leader. */
void ns_tree_restart_times(ns_tree_t *t, int64_t now_ms);

/* Whether the client's request seq was applied already: its bit in the
 * window below the client's newest, or older than the window. client 0 is
 * never. */
int ns_tree_request_done(const ns_tree_t *t, uint64_t client, uint64_t seq);

/* Remembers that the client's request seq is applied (the apply of a record
 * with a request id does it). */
void ns_tree_request_note(ns_tree_t *t, uint64_t client, uint64_t seq, int64_t wall_ms);

/* Sets what the tree remembers of a client outright (the snapshot decoder). */
void ns_tree_request_set(ns_tree_t *t, uint64_t client, uint64_t seq, uint64_t window,
                         int64_t wall_ms);

/* Sets (or, with NULL, clears) the one observer of applied records. */
void ns_tree_set_observer(ns_tree_t *t, ns_tree_observer_cb cb, void *ud);

/* Looks a valid path up; NULL if absent (or the path is invalid). */
ns_node_t *ns_tree_lookup(const ns_tree_t *t, const char *path);

/* Builds the absolute path of a node; free with g_free. */
char *ns_node_path(const ns_node_t *n);

/* The node's lease duration, with the default resolved. */
int64_t ns_node_lease_ms(const ns_tree_t *t, const ns_node_t *n);

/* Monotonic time the node was last renewed, directly or through an ancestor's
 * subtree renewal. */
int64_t ns_node_effective_renewal(const ns_node_t *n);

/* Milliseconds left before the node may expire (lease + grace after its
 * effective renewal), 0 when it is due; -1 for pinned nodes and the root. */
int64_t ns_node_remaining_ms(const ns_tree_t *t, const ns_node_t *n, int64_t now_ms);

/* Children of a directory, sorted by name (a new GPtrArray of borrowed
 * ns_node_t *; free the array only). NULL for a leaf. */
GPtrArray *ns_node_sorted_children(const ns_node_t *n);

/* Calls cb on `n` and its subtree in pre-order, children sorted by name. */
typedef void (*ns_walk_cb)(ns_node_t *n, void *ud);
void ns_tree_walk(ns_node_t *n, ns_walk_cb cb, void *ud);

/* Total nodes below the root, and of each kind. */
int64_t ns_tree_count(const ns_tree_t *t);

/*
 * The lease reaper: removes every node whose lease (plus grace) has run out at
 * now_ms, through NS_REC_REMOVE records flagged NS_REC_EXPIRED, children before
 * their directory. fx receives the freed blocks and the removed paths.
 * Returns the number of nodes removed.
 */
int ns_tree_reap(ns_tree_t *t, int64_t now_ms, ns_effects_t *fx);

/*
 * Chooses n blocks for a new namespace of `kind` and the part of the data each
 * holds: kv slot ranges split evenly over NS_KV_SLOTS, file byte ranges one
 * block after another, queue segments numbered from 0. Changes nothing: the
 * caller applies the NS_REC_CREATE that carries them. Returns 0,
 * MAYFLY_ENOSERVERS or MAYFLY_ENOSPC.
 */
int ns_tree_plan_parts(const ns_tree_t *t, ns_kind_t kind, int n, ns_partition_t *out);

/*
 * ns_tree_plan_parts() for a namespace of `replicas` (0 or 1: as
 * ns_tree_plan_parts) : each partition a chain of `replicas` blocks on
 * distinct hosts (ns_alloc_pick_chain; chains planned together spread over
 * the servers as single blocks do). File ranges use the head's block size.
 * Returns 0, MAYFLY_EINVAL (n or replicas out of range), MAYFLY_ENOSERVERS,
 * MAYFLY_ENOSPC or MAYFLY_ENOHOSTS, with a sentence in why (may be NULL)
 * naming the replicas asked for and the hosts up.
 */
int ns_tree_plan_chains(const ns_tree_t *t, ns_kind_t kind, int n, int replicas,
                        ns_partition_t *out, char *why, size_t whylen);

/*
 * Chooses one block to append to namespace `n`. When lo == hi == 0 the range
 * follows the last partition (the next byte range of a file, the next queue
 * segment); otherwise [lo, hi) is used as given. Returns 0, MAYFLY_EINVAL
 * (hi < lo), MAYFLY_EISDIR (a directory), MAYFLY_ENOSERVERS or MAYFLY_ENOSPC.
 */
int ns_tree_plan_append(const ns_tree_t *t, const ns_node_t *n, int64_t lo, int64_t hi,
                        ns_partition_t *out);

/* ns_tree_plan_append() with the reason of a failure in why (may be NULL).
 * Both pick a whole chain of the node's replicas (ns_node_replicas) for a
 * replicated namespace (so queue and file growth, and a kv split's new
 * partition, are chains); MAYFLY_ENOHOSTS when too few hosts are up. */
int ns_tree_plan_append_why(const ns_tree_t *t, const ns_node_t *n, int64_t lo, int64_t hi,
                            ns_partition_t *out, char *why, size_t whylen);

/* R of the node's partitions: its replicas, 1 when 0 (before replication). */
int32_t ns_node_replicas(const ns_node_t *n);

/*
 * Finds block b (server and index; any generation check is the caller's,
 * against the block returned by ns_part_member or copy) among the chains of
 * n's partitions: *part (may be NULL) gets the partition's index, *member
 * (may be NULL) its position, 0 = the head ... nmore = the tail, or -1 for
 * the partition's copy block. Returns 0, or MAYFLY_ENOENT (then *part and
 * *member are -1); the blocks of a split under way are not partitions yet.
 */
int ns_node_find_block(const ns_node_t *n, const ns_block_t *b, int *part, int *member);

/* The index of the partition whose head is block (server, index) (any
 * generation check is the caller's), or -1. Other chain members:
 * ns_node_find_block(). */
int ns_node_find_part(const ns_node_t *n, int32_t server, int32_t index);

/* The partition of n held by block (server, index), with generation check
 * left to the caller, or NULL; the new block of a split under way is not a
 * partition yet. */
const ns_partition_t *ns_node_part_of(const ns_node_t *n, int32_t server, int32_t index);

/* 1 when block (server, index) is taken by a lost partition (any member), or
 * is a block of a split that was lost, else 0 (free blocks included). The
 * directory leaves such blocks out of a memory server's reconcile list and
 * answers "lost" when the server asks about one. */
int ns_tree_block_lost(const ns_tree_t *t, int32_t server, int32_t index);

/* How many partitions of n are lost. */
int32_t ns_node_lost_parts(const ns_node_t *n);

/* How many blocks of server `id` are taken by lost partitions or splits. */
int32_t ns_tree_server_lost_blocks(const ns_tree_t *t, int32_t id);

/* How many partitions of replicated namespaces (chains, R > 1) have a
 * member or their copy on server `id`: what `mayfly servers` shows as the
 * chains depending on it. */
int32_t ns_tree_server_chains(const ns_tree_t *t, int32_t id);

/* The state of a partition for a human (`mayfly stat`): "lost", "copying"
 * (a copy is being filled to join), "degraded" (fewer members than its
 * replicas) or "ok". */
const char *ns_part_chain_state(const ns_partition_t *p);

/* The begun repartition with this id, or NULL. */
ns_repart_t *ns_node_find_repart(const ns_node_t *n, int64_t op_id);

/* 1 when block (server, index) takes part in a begun repartition of n. */
int ns_node_block_busy(const ns_node_t *n, int32_t server, int32_t index);

/* Partitions n has or is about to have (splits begun), against max_blocks
 * (which counts partitions, whatever their replicas). */
int32_t ns_node_blocks_committed(const ns_node_t *n);

/* Every block n holds: each partition's members and copy, and the chains of
 * begun splits (what sub_blocks and the tenants' quotas count). */
int64_t ns_node_blocks_held(const ns_node_t *n);

/* Recounts every node's sub_blocks and sub_leaves and compares them with the
 * kept ones. Returns 0 when all match, else MAYFLY_EINVAL with the first
 * node that differs in why. A walk of the whole tree: for tests and
 * consistency checks, never per request. */
int ns_tree_check_counts(const ns_tree_t *t, char *why, size_t whylen);

/* Internal to namespaces/ (the snapshot decoder): sets every node's
 * sub_blocks and sub_leaves from the nodes below it (one walk), for a tree
 * built without ns_tree_apply(). */
void ns__tree_recount(ns_tree_t *t);

/* Internal to namespaces/ (the snapshot decoder, snapshot.c): a node as
 * ns_tree_apply() creates one, not linked into any tree (no parent, counted
 * nowhere): a directory with an empty children table, a leaf with an empty
 * layout. The caller links it into a directory's children, which then owns
 * it (the table frees its nodes). */
ns_node_t *ns__node_new(const char *name, ns_kind_t kind, int64_t now_ms, int64_t wall_ms);

const char *ns_kind_name(ns_kind_t k);
/* Parses "directory", "file", "queue" or "kv"; returns 0 or MAYFLY_EINVAL. */
int ns_kind_parse(const char *s, ns_kind_t *out);

#endif /* MAYFLY_NS_TREE_H */
