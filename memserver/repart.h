/*
 * Repartitioning a kv block, the memory server's side: the blocking steps a
 * worker thread runs (uv_queue_work) while the loop keeps serving.
 *
 *   plan    repartition_begin at the directory: the target block and the
 *           slots [lo, hi) to move (split: the upper half; merge: all of it).
 *   copy    the entries of those slots, which the loop has set aside in
 *           `moving` (read-only from then on), go to the target memory server
 *           in bulk: WIRE_OP_KV_MIGRATE frames of up to MS_REPART_CHUNK bytes,
 *           MS_REPART_WINDOW in flight. A merge first checks that the two
 *           blocks together are under the low watermark.
 *   commit  repartition_end(commit) at the directory. When the answer is lost,
 *           the block's state at the directory (check_block) tells whether it
 *           committed.
 *   abort   repartition_end(rollback); a merge also tells the target to drop
 *           what it received.
 * With the cluster key, every frame to another memory server carries a
 * capability (docs/data-protocol.md): KV_MIGRATE and KV_MIGRATE_ABORT the
 * directory's migrate capability from the plan, followed by a frame MAC;
 * BLOCK_STAT a short-lived read capability this server signs itself (it
 * holds the cluster key too).
 * The loop (server.c) holds writes to the moving slots from `copy` on, and
 * every request for them during `commit`, and answers or replays them when
 * the repartition ends.
 */
#ifndef MAYFLY_MS_REPART_H
#define MAYFLY_MS_REPART_H

#include <glib.h>
#include <stdint.h>

#include "common/auth.h"
#include "common/conn.h"
#include "common/ctl.h"

#define MS_REPART_CHUNK (1u << 20)
#define MS_REPART_WINDOW 8
#define MS_REPART_TIMEOUT_MS 5000

typedef struct ms_repart_job {
  /* in */
  const char *directory;
  const uint8_t *key; /* the cluster key (MF_KEY_SIZE bytes, the server's; NULL: none) */
  mf_pool_t *pool;
  int32_t server_id;
  int32_t index;
  int64_t generation;
  int merge;
  int64_t split_at;
  uint64_t block_size;
  uint64_t used; /* bytes the block held when the job was planned */
  int low_wm;
  /* A merge: the neighbour of the last try, or (first try, pre_target "")
   * the one the namespace's layout shows, asked for its fill before anything
   * is begun at the directory. When the pair does not fit, plan fails with
   * MAYFLY_EAGAIN and sets not_begun: nothing was locked or rolled back. */
  char pre_target[256];
  int32_t pre_server_id; /* its server's id (for its capability) */
  int32_t pre_index;
  int64_t pre_generation;
  int not_begun;
  /* the plan */
  int64_t op_id;
  char target[256];
  int32_t t_server_id;
  int32_t t_index;
  int64_t t_generation;
  int64_t lo, hi;
  /* with the key: the directory's migrate capability for the target */
  uint8_t migrate_cap[MF_CAP_SIZE];
  /* a merge: the neighbour's fill as its BLOCK_STAT said (t_used_known) */
  uint64_t t_used;
  int t_used_known;
  /* the data: a table of store_kv_entry_t * (store.h), owned by the job */
  GHashTable *moving;
  uint64_t bytes, entries;
  /* the outcome of the last step */
  int status;
  char why[512];
  int64_t started_us;
  mf_ctl_t *ctl;
} ms_repart_job_t;

/* Each returns 0 or a MAYFLY_E* code (also in job->status, with job->why). */
int ms_repart_plan(ms_repart_job_t *job);
int ms_repart_copy(ms_repart_job_t *job); /* rolls back itself on failure */
int ms_repart_commit(ms_repart_job_t *job); /* rolls back when not committed */
void ms_repart_abort(ms_repart_job_t *job);

/* Frees the job, its `moving` table and its directory connection. */
void ms_repart_job_free(ms_repart_job_t *job);

#endif /* MAYFLY_MS_REPART_H */
