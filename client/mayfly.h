/*
 * libmayfly: the client library of Mayfly, an ephemeral-state memory service
 * for serverless functions. This is its one public header.
 *
 * A client talks to the directory (control plane: namespaces, leases, layouts,
 * memory servers). Every function returns 0 (or a documented non-negative
 * value) on success and a negative MAYFLY_E* code on failure; mayfly_strerror()
 * names the code and mayfly_last_error() gives the calling thread's detailed
 * message from the last failed call ("/a/b: parent directory does not exist").
 * Every call that talks to a server has a timeout; a server that does not
 * answer gives MAYFLY_ETIMEDOUT, never a hang. A client may be shared by the
 * threads of a process. Objects returned through out-parameters belong to the
 * caller and are freed with the matching *_free function.
 */
#ifndef MAYFLY_H
#define MAYFLY_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mayfly_client mayfly_client_t;

typedef enum {
  MAYFLY_KIND_DIRECTORY = 0,
  MAYFLY_KIND_FILE = 1,
  MAYFLY_KIND_QUEUE = 2,
  MAYFLY_KIND_KV = 3
} mayfly_kind_t;

typedef struct mayfly_options {
  int timeout_ms;         /* per call; 0 means 5000. In a replicated namespace it also
                             bounds a call's retries while a chain is reconfigured */
  int connect_timeout_ms; /* 0 means 2000 */
  /* The tenant token this client logs in with (a directory started with
   * --tenants refuses every call of a client without a valid one, with
   * MAYFLY_EPERM). NULL: $MAYFLY_TOKEN, else none; "": none. Copied by
   * mayfly_connect. */
  const char *token;
} mayfly_options_t;

typedef struct mayfly_create_options {
  int blocks;       /* initial blocks; 0 means 1 */
  int64_t lease_ms; /* 0 means the directory's default */
  int pinned;       /* never expires when set */
  int max_blocks;   /* most blocks it may grow to; 0 means no limit (growth past it: EQUOTA) */
  int high_watermark; /* kv: a partition fuller than this % of its block splits; 0 means 90 */
  int low_watermark;  /* kv: neighbours together under this % merge; 0 means 25 */
  /* Replication: every partition is a chain of this many blocks on as many
   * memory servers on distinct hosts (spread over their --zone first). 0
   * means the directory's --replicas (default 1); 1 is no replication. More
   * than 5, or more than the hosts with a server up: MAYFLY_ENOHOSTS. */
  int replicas;
} mayfly_create_options_t;

/* One member of a replicated partition's chain. */
typedef struct mayfly_replica {
  int32_t server_id;
  char *server_address; /* data-plane host:port */
  int32_t block_index;
  int64_t generation;
  uint8_t *capability;  /* as mayfly_partition_t's, for this member's block */
  size_t capability_len;
  char *zone;           /* the server's --zone ("" when none) */
} mayfly_replica_t;

/* One block-backed partition of a namespace. */
typedef struct mayfly_partition {
  int32_t server_id;
  char *server_address; /* data-plane host:port */
  int32_t block_index;
  int64_t generation;
  int64_t block_size;
  int64_t range_lo, range_hi; /* kv: slots; file: bytes; queue: segment number */
  int lost; /* 1: its memory server restarted and the data is gone; every operation on
               it fails with MAYFLY_ELOST until the namespace is removed */
  /* The directory's capability for this block (opaque bytes that libmayfly
   * sends with every request for it; NULL and 0 when the directory has no
   * cluster key). */
  uint8_t *capability;
  size_t capability_len;
  /* Replication. replicas: R wanted (1 for a namespace without replicas).
   * chain: the partition's members now, head first (nchain of them; writes
   * go to the head, reads to the last member, the tail); the fields above
   * repeat the head. NULL and 0 when R = 1: the fields above are then the
   * partition's one block. state: "ok", "degraded" (fewer members than R),
   * "copying" (a new member is being filled) or "lost" (for R = 1: "lost"
   * when lost, else "ok"). chain_version goes up at every change of the
   * chain (0 when R = 1). */
  int replicas;
  char *state;
  int64_t chain_version;
  size_t nchain;
  mayfly_replica_t *chain;
} mayfly_partition_t;

typedef struct mayfly_stat {
  char *path;
  mayfly_kind_t kind;
  int64_t created_ms;   /* wall clock, ms since the epoch */
  int64_t lease_ms;
  int64_t remaining_ms; /* until expiry (lease + grace); -1 when pinned */
  int pinned;
  int32_t children;
  int64_t layout_version;
  size_t npartitions;
  mayfly_partition_t *partitions;
  size_t ntags;
  char **tag_keys, **tag_values;
  int max_blocks;                    /* 0: no limit */
  int high_watermark, low_watermark; /* kv: % of a block */
} mayfly_stat_t;

typedef struct mayfly_lease {
  char *path;
  mayfly_kind_t kind;
  int64_t lease_ms;
  int64_t remaining_ms;
  int pinned;
} mayfly_lease_t;

typedef struct mayfly_server {
  int32_t id;
  char *address;
  int up;
  int32_t blocks_used;
  int32_t blocks_total;
  int64_t block_size;
  int64_t heartbeat_age_ms;
  int32_t blocks_lost; /* of blocks_used: held by lost partitions (freed when their
                          namespaces are removed) */
  char *zone;     /* its --zone ("" when none) */
  char *host;     /* the host part of its address: replicas go on distinct hosts */
  int32_t chains; /* replicated partitions with a member (or a copy being filled) here */
} mayfly_server_t;

typedef struct mayfly_dir_stats {
  int64_t nodes, directories, namespaces;
  int32_t servers, servers_up;
  int64_t blocks_total, blocks_used;
  int64_t expired_total;
  int64_t uptime_ms;
  int64_t connections, requests;
  int64_t lease_ms, grace_ms;
  /* kv repartitions since the directory started: committed splits and
   * merges, rollbacks, bytes the committed ones moved and their durations */
  int64_t splits, merges, rollbacks, bytes_moved, move_ms, move_ms_max;
  /* The durable directory (--data-dir); durable is 0 (and the rest 0) when
   * it keeps its state in memory only. Log figures count since start:
   * records and framed bytes appended, fdatasync calls (one per group
   * commit, so records per fsync = log_records / log_fsyncs), snapshots
   * written; last_snapshot_ms is the wall-clock time of the newest
   * snapshot (0: none); recovery_ms and recovered_records say what the
   * start cost (records replayed after the snapshot); log_seq is the
   * sequence number of the newest record. */
  int durable;
  int64_t log_records, log_bytes, log_fsyncs, snapshots, last_snapshot_ms;
  int64_t recovery_ms, recovered_records, log_seq;
  /* Replication since the directory started: members dropped from chains
   * (their server went silent or restarted), new members that joined a
   * chain and the bytes copied to them; and now, the chains shorter than
   * their R. */
  int64_t chain_failovers, rereplications, rereplicated_bytes, partitions_degraded;
} mayfly_dir_stats_t;

/* One replica of the directory service (mayfly_cluster). */
typedef struct mayfly_dir_member {
  char *address;       /* where clients reach it (its --advertise) */
  char *role;          /* "leader", "standby", or "single" (a directory without --etcd) */
  int64_t applied_seq; /* newest log record applied to its tree */
  int64_t updated_ms;  /* wall-clock time (ms since the epoch) of that report */
} mayfly_dir_member_t;

/* The directory service's replicas and log positions, as the directory
 * that answered knows them. Strings are "" when unknown or not used. */
typedef struct mayfly_cluster {
  char *name;            /* --cluster; "" without --etcd */
  char *etcd;            /* the etcd endpoints; "" without --etcd */
  char *leader;          /* the leader's address; "" when none is known */
  char *answered_by;     /* the directory that answered */
  int64_t term;          /* changes at every election (the leader key's creation revision) */
  int64_t committed_seq; /* newest record committed to the log */
  int64_t snapshot_seq;  /* the newest snapshot covers records up to this; 0: none */
  int64_t txns;          /* log transactions the answering directory committed as leader */
  int64_t txn_records;   /* the records they carried */
  mayfly_dir_member_t *members;
  size_t nmembers;
} mayfly_cluster_t;

/* A tenant of a directory started with --tenants, and its use of the pool. */
typedef struct mayfly_tenant {
  char *name;
  char **prefixes; /* subtrees it owns (reads and writes) */
  size_t nprefixes;
  char **read_prefixes; /* subtrees it may read but not change */
  size_t nread_prefixes;
  int32_t max_blocks; /* quota over all its namespaces; 0: no limit */
  int64_t blocks_used;
  int64_t namespaces;
  int admin;
} mayfly_tenant_t;

/* Who the client is logged in as (mayfly_whoami). */
typedef struct mayfly_session {
  int open; /* the directory runs without --tenants: everyone may do everything */
  char *tenant; /* "" when open */
  int admin;
  char **prefixes;
  size_t nprefixes;
  char **read_prefixes;
  size_t nread_prefixes;
} mayfly_session_t;

/* Connects to a directory at "host:port", or to the directory service of
 * a comma-separated list of them ("a:9090,b:9090,c:9090", IPv6 hosts in
 * brackets; NULL: $MAYFLY_DIRECTORY, else 127.0.0.1:9090): the first that
 * answers. Calls then go to the leader: a directory that is not the leader
 * names it (MAYFLY_ENOTLEADER), and the call is sent there; a directory of
 * the list that goes away is replaced by the next one; all of this within
 * the call's timeout, after which the call fails (mayfly_last_error() says
 * which directories it tried). A client of one address behaves as before:
 * a request that reached the directory is never sent twice. The mutating
 * calls (mkdir, create, remove, rename, growth) carry a request id, the
 * same on every resend, by which the directory answers a repeat with the
 * first outcome. opts may be NULL. Returns 0 and *out, MAYFLY_EINVAL (a bad
 * address, named in mayfly_last_error()), MAYFLY_ECONNREFUSED or
 * MAYFLY_ETIMEDOUT (none answered). The token (opts->token,
 * else $MAYFLY_TOKEN) is presented on every control connection the client
 * opens, before its first call: a token the directory refuses fails that
 * call with MAYFLY_EPERM and the directory's reason in mayfly_last_error(). */
int mayfly_connect(const char *directory, const mayfly_options_t *opts, mayfly_client_t **out);

/* Closes the client. Accepts NULL. No call may be in progress. */
void mayfly_disconnect(mayfly_client_t *c);

/* The calling thread's message about its last failed call ("" if none). */
const char *mayfly_last_error(void);

/* Names: "directory", "file", "queue", "kv"; parse returns 0 or MAYFLY_EINVAL. */
const char *mayfly_kind_name(mayfly_kind_t k);
int mayfly_kind_parse(const char *s, mayfly_kind_t *out);

/* --- namespaces --- */

/* Creates a directory; with parents, missing ancestors too and an existing
 * directory is not an error. */
int mayfly_mkdir(mayfly_client_t *c, const char *path, int parents);

/* Creates a file, queue or kv namespace (missing parent directories are
 * created). Fails with MAYFLY_EEXIST if the path exists, MAYFLY_ENOSERVERS
 * or MAYFLY_ENOSPC if no blocks can be had, MAYFLY_ENOHOSTS if its
 * opts->replicas cannot go on distinct hosts. out may be NULL. */
int mayfly_create(mayfly_client_t *c, const char *path, mayfly_kind_t kind,
                  const mayfly_create_options_t *opts, mayfly_stat_t **out);

/* Opens an existing namespace, or creates it when absent (MAYFLY_EKIND if it
 * exists with another kind). out may be NULL. */
int mayfly_open_or_create(mayfly_client_t *c, const char *path, mayfly_kind_t kind,
                          const mayfly_create_options_t *opts, mayfly_stat_t **out);

/* Removes a node; a non-empty directory only when recursive. Blocks return
 * to the pool. */
int mayfly_remove(mayfly_client_t *c, const char *path, int recursive);

/* Moves a node (and its subtree) to a new path whose parent exists. */
int mayfly_rename(mayfly_client_t *c, const char *old_path, const char *new_path);

/* Returns 1 if the path exists, 0 if not, or a negative error. */
int mayfly_exists(mayfly_client_t *c, const char *path);

/* Describes one node. */
int mayfly_stat(mayfly_client_t *c, const char *path, mayfly_stat_t **out);
void mayfly_stat_free(mayfly_stat_t *st);

/* Lists a directory's children sorted by name (a leaf lists itself). */
int mayfly_list(mayfly_client_t *c, const char *path, mayfly_stat_t ***out, size_t *n);
void mayfly_stat_list_free(mayfly_stat_t **list, size_t n);

/* Renews each path, its ancestors and its subtree, in one call. *lease_ms
 * (may be NULL) receives the directory's default lease. Paths that do not
 * exist are returned in *missing (may be NULL; free with mayfly_strv_free);
 * the rest are renewed regardless. */
int mayfly_renew(mayfly_client_t *c, const char *const *paths, size_t n, int64_t *lease_ms,
                 char ***missing, size_t *nmissing);
void mayfly_strv_free(char **v, size_t n);

/* --- administration --- */

/* Every node at or under path (NULL or "/" for all), path itself first, in
 * tree order. The root "/" never expires: its row is pinned, remaining_ms -1. */
int mayfly_leases(mayfly_client_t *c, const char *path, mayfly_lease_t **out, size_t *n);
void mayfly_leases_free(mayfly_lease_t *l, size_t n);

/* Every registered memory server. */
int mayfly_servers(mayfly_client_t *c, mayfly_server_t **out, size_t *n);
void mayfly_servers_free(mayfly_server_t *s, size_t n);

int mayfly_dir_stats(mayfly_client_t *c, mayfly_dir_stats_t *out);

/* The directory service's replicas (answered by any directory, leader or
 * not). Free with mayfly_cluster_clear. */
int mayfly_cluster(mayfly_client_t *c, mayfly_cluster_t *out);
void mayfly_cluster_clear(mayfly_cluster_t *ci);

/* The directory's tenants (--tenants): every tenant for an admin, the
 * caller's own entry for any other; none for an open directory. */
int mayfly_tenants(mayfly_client_t *c, mayfly_tenant_t **out, size_t *n);
void mayfly_tenants_free(mayfly_tenant_t *t, size_t n);

/* Logs in again with the client's token and says who that is. Free with
 * mayfly_session_clear. MAYFLY_EPERM for a token the directory refuses. */
int mayfly_whoami(mayfly_client_t *c, mayfly_session_t *out);
void mayfly_session_clear(mayfly_session_t *s);

/* --- data: mounted namespaces ---
 *
 * A mounted namespace is opened (or created with opts) and its lease renewed
 * by the client's background thread, in one batched call per period for all
 * mounted namespaces, until unmounted. Data operations go straight to the
 * memory servers that hold the blocks; the layout is cached and refreshed
 * when a server answers that a block moved. A handle may be used by several
 * threads at once.
 *
 * Capabilities. With a directory that has a cluster key, each block of the
 * layout comes with a signed capability that the library sends with every
 * request for it. It refreshes the layout once 3/4 of a capability's
 * lifetime (--capability-ttl) has passed, and a request a memory server
 * refuses with MAYFLY_EPERM (an expired capability) is sent again once after
 * a refresh: callers never see either. A second refusal (the tenant may
 * only read there, say) is returned as MAYFLY_EPERM.
 *
 * Replicated namespaces (created with replicas R > 1). Each partition is a
 * chain of R blocks on distinct hosts: writes (kv put and delete, queue push
 * and pop, file write and truncate) go to its head and are answered once
 * every member holds them; reads (kv get and exists, queue peek and length,
 * file read and size) are served by its tail. Every write carries the
 * client's random id and a sequence number that its retries keep, so a write
 * retried after a failure is applied once: a push is never duplicated, and
 * a pop retried gets the item the first attempt took. When a memory server
 * dies the directory drops it from its chains (after its heartbeat timeout)
 * and later copies the partition to a new server. Meanwhile a call whose
 * chain member fails (MAYFLY_EIO, ECONNREFUSED, ETIMEDOUT, EMOVED,
 * ESERVERDOWN) refreshes the layout (at most every 50 ms) and is sent again
 * with the same sequence number, each attempt bounded by a second, until the
 * call's timeout (mayfly_options_t.timeout_ms): the caller sees no error if
 * the chain is reconfigured within it, so the timeout should exceed the
 * directory's heartbeat timeout. Batches redo only the operations that
 * failed, each with its own sequence number. A partition all of whose
 * members are gone behaves as with R = 1 (MAYFLY_ELOST).
 *
 * Lost data. A memory server that restarts (a crash, kill -9) comes back
 * empty. The directory then marks the partitions it held lost, and every
 * operation that needs one fails with MAYFLY_ELOST, never with an empty
 * read: kv operations on keys that hash into a lost partition (the other
 * keys work), file reads and writes that touch a lost block (and the file's
 * size), queue operations that reach a lost segment (push to a lost tail,
 * pop or peek at a lost head, length when any segment is lost). The
 * library knows from the layout and fails without asking the server; a
 * layout cached before the restart gets MAYFLY_ELOST from the server and is
 * refreshed. Listeners receive MAYFLY_EV_LOST. Removing the namespace gives
 * its blocks back to the pool.
 */
typedef struct mayfly_ns mayfly_ns_t;

int mayfly_mount(mayfly_client_t *c, const char *path, mayfly_kind_t kind,
                 const mayfly_create_options_t *opts, mayfly_ns_t **out);

/* Stops renewing and frees the handle (the data expires after its lease
 * unless removed or pinned). Accepts NULL. */
void mayfly_unmount(mayfly_ns_t *ns);

/* Frees memory returned by the data operations. */
void mayfly_free(void *p);

/* file: a byte array. Writing past the end grows the file block by block. */
int mayfly_file_write(mayfly_ns_t *ns, uint64_t offset, const void *buf, size_t len);
/* Appends at the current end; *offset (may be NULL) gets where. Appends from
 * one client are serialised; concurrent appenders in several clients must
 * coordinate (or write at offsets of their own). */
int mayfly_file_append(mayfly_ns_t *ns, const void *buf, size_t len, uint64_t *offset);
/* Reads up to len bytes at offset; returns the count (0 at or past the end)
 * or a negative error. Unwritten gaps before the end read as zeros. */
int64_t mayfly_file_read(mayfly_ns_t *ns, uint64_t offset, void *buf, size_t len);
/* The file's size (end of the furthest write), or a negative error. */
int64_t mayfly_file_size(mayfly_ns_t *ns);
/* Shrinks the file to `size` bytes; the blocks wholly past it return to the
 * pool. A size beyond the end is MAYFLY_EINVAL (writing extends a file). */
int mayfly_file_truncate(mayfly_ns_t *ns, uint64_t size);

/* queue: FIFO items. The tail grows by a block when full. */
int mayfly_queue_push(mayfly_ns_t *ns, const void *buf, size_t len);
/* Takes the head item into *out (free with mayfly_free), waiting up to
 * timeout_ms for one (0: do not wait). MAYFLY_EAGAIN when none came. */
int mayfly_queue_pop(mayfly_ns_t *ns, void **out, size_t *len, int timeout_ms);
int mayfly_queue_peek(mayfly_ns_t *ns, void **out, size_t *len);
int64_t mayfly_queue_length(mayfly_ns_t *ns);

/* kv: binary keys (up to 64 KiB) and values. */
int mayfly_kv_put(mayfly_ns_t *ns, const void *key, size_t klen, const void *val, size_t vlen);
/* *val is freed with mayfly_free; MAYFLY_ENOKEY when the key is absent. */
int mayfly_kv_get(mayfly_ns_t *ns, const void *key, size_t klen, void **val, size_t *vlen);
int mayfly_kv_delete(mayfly_ns_t *ns, const void *key, size_t klen);
/* 1 if present, 0 if not, or a negative error. */
int mayfly_kv_exists(mayfly_ns_t *ns, const void *key, size_t klen);

/* Batches: n operations in flight at once (pipelined on the connections to
 * their servers), one round trip for the batch. rcs[i] receives each result;
 * the call returns 0 when all succeeded, else the first error. Gets fill
 * vals[i]/vlens[i] (free each with mayfly_free; NULL on error). */
int mayfly_kv_put_batch(mayfly_ns_t *ns, size_t n, const void *const *keys, const size_t *klens,
                        const void *const *vals, const size_t *vlens, int *rcs);
int mayfly_kv_get_batch(mayfly_ns_t *ns, size_t n, const void *const *keys, const size_t *klens,
                        void **vals, size_t *vlens, int *rcs);
/* Pushes n items in order, pipelined; rcs[i] gets each result. */
int mayfly_queue_push_batch(mayfly_ns_t *ns, size_t n, const void *const *items,
                            const size_t *lens, int *rcs);
/* Pops up to n items without waiting, pipelined; returns how many were
 * popped (items[0..k), free each with mayfly_free) or a negative error. */
int64_t mayfly_queue_pop_batch(mayfly_ns_t *ns, size_t n, void **items, size_t *lens);

/* Usage of one partition as its memory server reports it. */
typedef struct mayfly_usage {
  int64_t bytes_used; /* bytes charged to the block */
  int64_t items;      /* queue items, kv keys, or file segment bytes */
} mayfly_usage_t;
/* Fills usage[i] for each of the namespace's st->npartitions partitions,
 * asking their memory servers at once and waiting at most one timeout in
 * all. A lost partition is not asked about; it and a partition whose server
 * did not answer (down, unreachable, or the block moved) get bytes_used and
 * items -1; the others are filled anyway. Returns 0 when every partition
 * was filled, else the first error. */
int mayfly_usage(mayfly_client_t *c, const mayfly_stat_t *st, mayfly_usage_t *usage);

/* --- notifications ---
 *
 * A listener receives the events of one node: data events of a namespace
 * (kv put and delete with the key, queue push and pop with the item's size,
 * file write with offset and length) and namespace events (a child created
 * or removed, a lease expired, the node removed, partitions of the node
 * lost because their memory server restarted). Listening on a directory
 * delivers the namespace events of its children.
 *
 * The directory numbers the events of each node: `seq` goes up by one per
 * event of that node, in the order they happened, whatever the layout
 * (splits, merges, growth and shrink change nothing). A write is answered
 * only once its event is numbered, so the events of one writer come in the
 * writer's order even across partitions. While the directory is unreachable
 * a write to a watched namespace is therefore not answered until the
 * directory is back (the call may time out: the write was applied and its
 * event comes later), and once the memory server knows the directory is
 * unreachable such writes fail with MAYFLY_EDIRDOWN, applied nothing, so
 * trying again later is safe. Events are never lost silently: a
 * listener that misses some (it fell more than 4096 events behind, its own
 * buffer overflowed, it reconnected after a directory restart) receives a
 * MAYFLY_EV_GAP event saying which seqs it missed (offset = first missing
 * seq, length = how many; 0 and -1 when unknown, e.g. after a directory
 * restart, when numbering starts again).
 *
 * A listener has its own connection to the directory and a background
 * thread that long-polls it and reconnects after errors. mayfly_listen
 * returns once data events of the namespace are being published (the memory
 * servers learn of a new listener at their next heartbeat, so this takes up
 * to two heartbeat periods), so every write made after it returns is
 * delivered. When the node is removed the
 * listener delivers MAYFLY_EV_REMOVED (if its mask takes it) and then
 * mayfly_listener_next returns MAYFLY_ENOENT. After a directory restart the
 * first event is a GAP of unknown count; a node that did not survive the
 * restart gives that GAP, then REMOVED, then the end (MAYFLY_ENOENT).
 */
typedef enum {
  MAYFLY_EV_PUT = 1,           /* kv: key, length = key bytes */
  MAYFLY_EV_DELETE = 2,        /* kv: key, length = key bytes */
  MAYFLY_EV_PUSH = 3,          /* queue: length = item bytes */
  MAYFLY_EV_POP = 4,           /* queue: length = item bytes */
  MAYFLY_EV_WRITE = 5,         /* file: offset, length */
  MAYFLY_EV_CHILD_CREATED = 6, /* directory: path = the child */
  MAYFLY_EV_CHILD_REMOVED = 7, /* directory: path = the child */
  MAYFLY_EV_LEASE_EXPIRED = 8, /* the node's lease ran out (path = the node, or its child) */
  MAYFLY_EV_REMOVED = 9,       /* the node itself is gone */
  MAYFLY_EV_GAP = 10,          /* events missed: offset = first seq, length = count */
  MAYFLY_EV_LOST = 11          /* partitions lost (their memory server restarted): length =
                                  how many of the node's partitions are lost now */
} mayfly_event_kind_t;

/* Event masks: one bit per kind; 0 means every kind. */
#define MAYFLY_EV_BIT(kind) (1u << (kind))
#define MAYFLY_EV_MASK_DATA                                                          \
  (MAYFLY_EV_BIT(MAYFLY_EV_PUT) | MAYFLY_EV_BIT(MAYFLY_EV_DELETE) |                  \
   MAYFLY_EV_BIT(MAYFLY_EV_PUSH) | MAYFLY_EV_BIT(MAYFLY_EV_POP) |                    \
   MAYFLY_EV_BIT(MAYFLY_EV_WRITE))
#define MAYFLY_EV_MASK_NAMESPACE                                                     \
  (MAYFLY_EV_BIT(MAYFLY_EV_CHILD_CREATED) | MAYFLY_EV_BIT(MAYFLY_EV_CHILD_REMOVED) | \
   MAYFLY_EV_BIT(MAYFLY_EV_LEASE_EXPIRED) | MAYFLY_EV_BIT(MAYFLY_EV_REMOVED) |       \
   MAYFLY_EV_BIT(MAYFLY_EV_LOST))

typedef struct mayfly_event {
  int64_t seq;              /* per node, from 1; a GAP carries the last seq it covers */
  mayfly_event_kind_t kind;
  char *path;               /* the node the event is about (a child for CHILD_*) */
  uint8_t *key;             /* PUT/DELETE: the key (its first 1024 bytes); else NULL */
  size_t key_len;
  int64_t offset;           /* WRITE: byte offset in the file; GAP: first missed seq */
  int64_t length;           /* see mayfly_event_kind_t */
  int64_t time_ms;          /* wall clock when the directory numbered it */
} mayfly_event_t;

typedef struct mayfly_listener mayfly_listener_t;

/* Called on the listener's thread for each event, in order. `ev` is valid
 * during the call only. The callback may close its own listener. */
typedef void (*mayfly_event_cb)(mayfly_listener_t *l, const mayfly_event_t *ev,
                                void *user_data);

typedef struct mayfly_listen_options {
  uint32_t mask;        /* MAYFLY_EV_BIT(kind) per kind wanted; 0 = all kinds */
  size_t buffer;        /* events kept for mayfly_listener_next; 0 = 65536. Past it,
                           new events are dropped and reported as one GAP */
  mayfly_event_cb cb;   /* NULL: use mayfly_listener_next */
  void *user_data;
} mayfly_listen_options_t;

/* Starts listening on `path` for the kinds in `mask` (0 = all), events read
 * with mayfly_listener_next. Returns 0 and *out, MAYFLY_ENOENT, MAYFLY_EINVAL
 * (a bad path or mask), or a connection error. */
int mayfly_listen(mayfly_client_t *c, const char *path, uint32_t mask, mayfly_listener_t **out);

/* The same, with every event handed to cb on the listener's thread. */
int mayfly_listen_callback(mayfly_client_t *c, const char *path, uint32_t mask,
                           mayfly_event_cb cb, void *user_data, mayfly_listener_t **out);

/* The general form (opts may be NULL: every kind, next()). */
int mayfly_listen_with(mayfly_client_t *c, const char *path, const mayfly_listen_options_t *opts,
                       mayfly_listener_t **out);

/* Waits up to timeout_ms (0: do not wait, < 0: forever) for the next event
 * and stores it in *ev (free with mayfly_event_free). Returns 0,
 * MAYFLY_EAGAIN when none came in time, MAYFLY_ENOENT once the node is gone
 * and every event before that was delivered, MAYFLY_EINVAL for a callback
 * listener. Reconnections are not errors: the listener keeps trying. Only
 * one thread may call it at a time. */
int mayfly_listener_next(mayfly_listener_t *l, mayfly_event_t **ev, int timeout_ms);

/* Stops the listener and frees it (events not taken are dropped). Accepts
 * NULL. The client may be disconnected before or after. */
void mayfly_listener_close(mayfly_listener_t *l);

void mayfly_event_free(mayfly_event_t *ev);

/* Kind names: "put", "delete", "push", "pop", "write", "child-created",
 * "child-removed", "lease-expired", "removed", "gap", "lost". */
const char *mayfly_event_kind_name(mayfly_event_kind_t k);
int mayfly_event_kind_parse(const char *s, mayfly_event_kind_t *out);
/* Parses a comma-separated list of kind names, or the groups "data" (put,
 * delete, push, pop, write), "namespace" (child-created, child-removed,
 * lease-expired, removed, lost) and "all", into a mask. Returns 0 or
 * MAYFLY_EINVAL (mayfly_last_error names the word). */
int mayfly_event_mask_parse(const char *list, uint32_t *mask);

#ifdef __cplusplus
}
#endif

#endif /* MAYFLY_H */
