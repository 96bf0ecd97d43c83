/*
 * The directory's state: the namespace tree (with its block allocator), what
 * it knows of each memory server at run time (last heartbeat, blocks waiting
 * to be released there, the data watches it has applied), the event logs of
 * watched nodes (events.h), the lease reaper and the server health check.
 *
 * Owned by one libuv loop; every function here runs on that loop's thread.
 * Mutations of the tree go through dir_apply(), which applies a record and
 * acts on its effects (queues block releases and chain changes for the
 * memory servers, numbers the namespace events, logs).
 */
#ifndef MAYFLY_DIR_STATE_H
#define MAYFLY_DIR_STATE_H

#include <glib.h>
#include <stdint.h>
#include <uv.h>

#include "directory/events.h"
#include "directory/store.h"
#include "namespaces/tree.h"

typedef struct dir_config {
  char *host;
  int64_t port;
  int64_t lease_ms;
  int64_t grace_ms;
  int64_t heartbeat_ms;         /* how often memory servers are asked to heartbeat */
  int64_t heartbeat_timeout_ms; /* silence after which a server is marked down */
  int64_t reap_interval_ms;     /* 0 = derived from the lease and grace */
  uint64_t max_frame;
  int64_t max_connections;
  /* The connection layer's bounds (common/netserver.h). */
  uint64_t read_buffer, input_total, reply_backlog, reply_backlog_total;
  int64_t frame_timeout_ms, idle_timeout_ms, send_timeout_ms;
  char *log_level;
  /* Durability (store.h): no data_dir keeps the state in memory only. */
  char *data_dir;
  gboolean recover_truncate;
  int64_t snapshot_records;
  uint64_t snapshot_bytes;
  /* Tenants (tenants.h): NULL runs the directory open. */
  char *tenants_file;
  /* The cluster (caps.h): the key (MF_KEY_SIZE bytes, kept alive by the
   * caller; NULL: none, the server-only methods are open and no capability
   * is issued), how long a capability is valid, and how many memory servers
   * may register (a new address past it is refused). */
  const uint8_t *cluster_key;
  int64_t capability_ttl_ms;
  int64_t max_servers;
  /* Replication (chains.h): blocks per partition when a create does not
   * say (1: unreplicated), and how long a re-replication copy may take
   * before the directory aborts it. */
  int64_t replicas;
  int64_t copy_timeout_ms;
  /* High availability (ha.h): etcd endpoints (NULL: none), the cluster's
   * name, the leader lease, this directory's address for clients, one etcd
   * request's timeout, log transactions in flight. */
  char *etcd;
  char *cluster;
  int64_t leader_ttl_ms;
  char *advertise;
  int64_t etcd_timeout_ms;
  int64_t etcd_inflight;
} dir_config_t;

/* What the directory remembers of a memory server beyond the allocator. */
typedef struct dir_server_rt {
  int64_t last_heartbeat_ms; /* monotonic */
  int32_t blocks_used_reported;
  GArray *pending_release;   /* ns_block_t freed here, not yet told to the server */
  GArray *pending_rechain;   /* ns_block_t here whose chain changed, not yet told (chains.h) */
  /* Data watches (events.h): the dir_events_t.data_version the last heartbeat
   * reply covered, and the one the server had applied when it sent its
   * latest heartbeat (it applies a reply before sending the next one). */
  uint64_t watch_sent;
  uint64_t watch_acked;
  /* Known from the recovered state but not registered with this process:
   * its heartbeats are answered "register again", so that it reconciles
   * its blocks with the recovered layout (and learns what to release). */
  int needs_register;
} dir_server_rt_t;

/* Who is on a control connection: what it proved (the cluster handshake,
 * a tenant's login). One per connection, kept by the server (server.c);
 * handlers see it as d->call.session. */
typedef struct dir_session {
  const char *peer; /* the connection's "ip:port", for log lines (NULL in-process);
                       kept by clear */
  char *tenant;   /* the tenant it logged in as (tenants.h); NULL: none */
  int cluster;    /* passed the cluster handshake: may call server-only methods */
  int challenged; /* a challenge was drawn: nonce holds it */
  uint8_t nonce[32];
} dir_session_t;

/* Forgets what a session proved and frees its strings (the struct stays,
 * and so does the peer's address). */
void dir_session_clear(dir_session_t *s);

/* How the request being processed may be answered, and what its handler
 * asked for: a watch with nothing to report yet is deferred (no reply now)
 * until an event comes to `defer_log` or `defer_ms` pass. Set around each
 * call by the server (directory/server.c). */
typedef struct dir_call {
  int can_defer;           /* the caller can hold the request and run it again */
  int last_chance;         /* a deferred request whose time is up: answer now */
  dir_evlog_t *defer_log;  /* set by a handler that defers */
  int64_t defer_ms;
  dir_session_t *session;  /* the connection's; never NULL during a call */
  /* The request id of a mutating call (handler.c): the records it applies
   * carry it (dir_apply). 0: none. */
  uint64_t req_client, req_seq;
} dir_call_t;

typedef struct dir {
  dir_config_t cfg;
  uv_loop_t *loop;
  ns_tree_t *tree;
  dir_store_t *store;     /* NULL: in memory only */
  GHashTable *servers_rt; /* server id -> dir_server_rt_t * */
  uv_timer_t reaper;
  uv_timer_t health;
  uv_timer_t sweep;      /* forgets event logs nobody watches (events.h) */
  dir_events_t *events;
  dir_call_t call;
  int64_t started_ms;
  uint64_t connections_total;
  uint64_t connections_open;
  uint64_t requests;
  GHashTable *reparts; /* op id -> begun repartition (repart.c) */
  int64_t splits, merges, rollbacks, bytes_moved, move_ms, move_ms_max;
  /* Replication (chains.h): the re-replication timer, the copies under way
   * (op id -> their record), the candidate blocks of chains that may be
   * shorter than their R (a set of ns_block_t), and counters since start. */
  uv_timer_t rereplicate;
  GHashTable *copies;
  GHashTable *short_chains;
  int64_t chain_failovers, rereplications, rereplicated_bytes;
  struct dir_tenants *tenants; /* the loaded tenants file (tenants.h); NULL: open */
  /* High availability (ha.h): the etcd-backed log, election and follower;
   * NULL without --etcd. */
  struct dir_ha *ha;
  char *advertise; /* "host:port" where clients reach this directory (set once listening) */
} dir_t;

/* Initialises the state and starts its timers on `loop`. With a store
 * (dir_store_open recovered `tree` from it), the directory takes both over:
 * every server the tree knows must register again, begun repartitions may
 * still be ended by their memory server; else (store and tree NULL) the tree
 * starts empty. Returns 0. */
int dir_init(dir_t *d, uv_loop_t *loop, const dir_config_t *cfg, dir_store_t *store,
             ns_tree_t *tree);

/* Takes over `tree` (a standby's, on winning the election: ha.c) in place of
 * the empty tree the directory served meanwhile: every lease restarts in
 * full, every server it knows must register again, begun repartitions and
 * copies may still be ended by their memory servers. */
void dir_adopt_tree(dir_t *d, ns_tree_t *tree);

/* Stops the timers and the store (which writes what is pending); call
 * dir_free once uv_run has returned. */
void dir_stop(dir_t *d);
void dir_free(dir_t *d);

/* Applies one record to the tree, stamping its times. On success queues the
 * freed blocks for release on their servers, the blocks whose chain changed
 * for their servers' next heartbeat (chains.h), and logs removals; fx (may
 * be NULL) receives the effects. Returns 0 or a MAYFLY_E* code with `why`
 * filled. */
int dir_apply(dir_t *d, ns_record_t *rec, ns_effects_t *fx, char *why, size_t whylen);

/* Runs the lease reaper once (the timer calls it). Returns nodes removed. */
int dir_reap(dir_t *d);

/* Whether every memory server that is up has applied the data watch of
 * `log` (it answered a heartbeat after the one whose reply carried it), so
 * writes on the namespace from now on publish events, wherever its blocks
 * are. */
int dir_data_armed(dir_t *d, dir_evlog_t *log);

/* Runtime record of a server, created on first use. */
dir_server_rt_t *dir_server_rt(dir_t *d, int32_t id);

#endif /* MAYFLY_DIR_STATE_H */
