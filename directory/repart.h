/*
 * Repartitioning kv namespaces, the directory's side. A memory server whose
 * block crossed a watermark asks to split it (a new block takes the upper
 * half of its slots) or to merge it into a neighbour; the directory picks the
 * target, records the begun repartition (NS_REC_REPART_BEGIN, which locks the
 * partitions involved), and the memory server copies the data to the target,
 * server to server. It then ends the repartition: commit changes the layout
 * in one step (one new version), rollback leaves it as it was. A repartition
 * whose source never ends it is rolled back after DIR_REPART_TIMEOUT_MS.
 */
#ifndef MAYFLY_DIR_REPART_H
#define MAYFLY_DIR_REPART_H

#include <stdint.h>

#include "directory/directory.h"

#define DIR_REPART_TIMEOUT_MS 30000

/* What the memory server is to do. */
typedef struct dir_repart_plan {
  int64_t op_id;
  ns_partition_t target; /* split: the new block and its range; merge: the neighbour */
  int64_t lo, hi;        /* the slots to copy to the target */
} dir_repart_plan_t;

/* Begins a split of block (server_id, index, generation) at slot split_at,
 * or a merge of it into a neighbour. Returns 0 and *plan, or an error with
 * `why`: ESERVER, EINVAL, EMOVED (not a partition any more), EKIND,
 * EAGAIN (the partitions are busy; try later), EQUOTA (max_blocks reached),
 * ENOSPC / ENOSERVERS (no block for a split). */
int dir_repart_begin(dir_t *d, int32_t server_id, int32_t index, int64_t generation, int merge,
                     int64_t split_at, dir_repart_plan_t *plan, char *why, size_t whylen);

/* Ends repartition op_id begun by server_id. Returns 0 with *node set to the
 * namespace (for the reply's layout), or ENOENT (unknown or timed out), EPERM
 * (another server's), EMOVED (commit impossible: rolled back instead). */
int dir_repart_end(dir_t *d, int32_t server_id, int64_t op_id, int commit, int64_t bytes_moved,
                   ns_node_t **node, char *why, size_t whylen);

/* After recovery: takes up the repartitions the recovered tree has begun,
 * as if begun now (their memory server may end them, else they time out). */
void dir_repart_recover(dir_t *d);

/* Rolls back repartitions begun more than DIR_REPART_TIMEOUT_MS ago. */
void dir_repart_expire(dir_t *d, int64_t now_ms);

#endif /* MAYFLY_DIR_REPART_H */
