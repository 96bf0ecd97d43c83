/*
 * The directory's state: the namespace tree (with its block allocator), what
 * it knows of each memory server at run time (last heartbeat, blocks waiting
 * to be released there), the lease reaper and the server health check.
 *
 * Owned by one libuv loop; every function here runs on that loop's thread.
 * Mutations of the tree go through dir_apply(), which applies a record and
 * acts on its effects (queues block releases for the memory servers, logs).
 */
#ifndef MAYFLY_DIR_STATE_H
#define MAYFLY_DIR_STATE_H

#include <glib.h>
#include <stdint.h>
#include <uv.h>

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
  char *log_level;
} dir_config_t;

/* What the directory remembers of a memory server beyond the allocator. */
typedef struct dir_server_rt {
  int64_t last_heartbeat_ms; /* monotonic */
  int32_t blocks_used_reported;
  GArray *pending_release;   /* ns_block_t freed here, not yet told to the server */
} dir_server_rt_t;

typedef struct dir {
  dir_config_t cfg;
  uv_loop_t *loop;
  ns_tree_t *tree;
  GHashTable *servers_rt; /* server id -> dir_server_rt_t * */
  uv_timer_t reaper;
  uv_timer_t health;
  int64_t started_ms;
  uint64_t connections_total;
  uint64_t connections_open;
  uint64_t requests;
  GHashTable *reparts; /* op id -> begun repartition (repart.c) */
  int64_t splits, merges, rollbacks, bytes_moved, move_ms, move_ms_max;
} dir_t;

/* Initialises the state and starts its timers on `loop`. Returns 0. */
int dir_init(dir_t *d, uv_loop_t *loop, const dir_config_t *cfg);

/* Stops the timers; call dir_free from their close callbacks (uv_run after). */
void dir_stop(dir_t *d);
void dir_free(dir_t *d);

/* Applies one record to the tree, stamping its times. On success queues the
 * freed blocks for release on their servers and logs removals; fx (may be
 * NULL) receives the effects. Returns 0 or a MAYFLY_E* code with `why`
 * filled. */
int dir_apply(dir_t *d, ns_record_t *rec, ns_effects_t *fx, char *why, size_t whylen);

/* Runs the lease reaper once (the timer calls it). Returns nodes removed. */
int dir_reap(dir_t *d);

/* Runtime record of a server, created on first use. */
dir_server_rt_t *dir_server_rt(dir_t *d, int32_t id);

#endif /* MAYFLY_DIR_STATE_H */
