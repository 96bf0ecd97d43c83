/*
 * The directory's durable store (--data-dir): every record the tree applies
 * is logged, batched into one write and one fdatasync per loop iteration
 * (group commit), and the state is rebuilt at start from the newest snapshot
 * and the log after it.
 *
 * On disk, in the data directory (docs/log-format.md):
 *   LOCK                     held (flock) while a directory uses the data dir
 *   wal-<seq>.log            log segments (wal.h), named by the sequence
 *                            number of their first record, 16 hex digits; a
 *                            new one at every start and at every snapshot
 *   snap-<seq>.snap          snapshots, named by the last record they cover
 *
 * Sequence numbers count records from 1, over the life of the data dir.
 *
 * Durability contract. A record is applied to the tree first (so the call
 * that made it can answer), then logged; the store says which records are
 * not on disk yet (dir_store_unsynced) and calls the durable callback, on the
 * loop, each time a batch is. The server holds every reply produced while
 * some applied record is not durable until it is, so nothing a client is
 * told (a write's success, or state it read) can be lost by a crash.
 *
 * Group commit. Records of one loop iteration are encoded into the open
 * batch; at the end of the iteration (a uv_check handle) the batch goes to a
 * libuv worker (uv_queue_work) that writes and syncs it; records arriving
 * meanwhile make the next batch. Two batches may be in flight: the second
 * is written while the first syncs (writes keep their order), so the disk
 * and the callers work at the same time, and a sync that completes makes
 * every batch written before it durable. Log segments are preallocated with
 * zeros (wal.h), so a sync writes data, not file metadata. The loop keeps
 * serving while the disk works.
 *
 * Leases are soft state: renewals (NS_REC_RENEW) are not logged, and after
 * recovery every node's lease restarts in full (now + lease + grace).
 *
 * Snapshots: after snapshot_records records or snapshot_bytes bytes of log
 * since the last one, the store forks; the child encodes the tree as it was
 * at that record (namespaces/snapshot.h), writes snap-<seq>.snap.tmp, syncs
 * it, renames it into place and syncs the directory, while the parent goes
 * on serving (the fork costs about a millisecond per GiB of heap); the log
 * is rotated at the same record, and once the child succeeded the segments
 * and snapshots the new one makes useless are deleted.
 *
 * A failed append (disk full, I/O error) leaves the log's end unknown: the
 * store logs why and ends the process (exit status 1) rather than answer
 * from state that may not survive; a restart recovers what is on disk.
 *
 * Everything here runs on the loop thread except the workers' file I/O.
 */
#ifndef MAYFLY_DIR_STORE_H
#define MAYFLY_DIR_STORE_H

#include <stdint.h>
#include <uv.h>

#include "namespaces/tree.h"

typedef struct dir_store_config {
  const char *data_dir;
  int recover_truncate;       /* cut the log at a corrupt record instead of refusing to start */
  int64_t snapshot_records;   /* log records between snapshots */
  uint64_t snapshot_bytes;    /* or log bytes, whichever comes first */
} dir_store_config_t;

/* What the store did since start (dir_store_stats). */
typedef struct dir_store_stats {
  int64_t log_records, log_bytes, log_fsyncs;
  int64_t snapshots, last_snapshot_ms; /* wall-clock ms of the newest snapshot, 0 none */
  int64_t recovery_ms, recovered_records, recovered_nodes;
  int64_t seq;                         /* of the newest record applied */
} dir_store_stats_t;

typedef struct dir_store dir_store_t;

/* Called on the loop when every record up to `seq` is on disk. */
typedef void (*dir_store_durable_cb)(void *ud, int64_t seq);

/*
 * Locks the data directory (waiting up to 10 s for a previous process and
 * its snapshot child to let go), recovers the tree from it (created empty
 * when the directory is new), opens a new log segment and starts logging
 * every record the tree applies. *tree is the recovered tree, owned by the
 * caller (free it after dir_store_close). Returns 0, or MAYFLY_EIO (the
 * file system failed, or the directory is locked by another process) or
 * MAYFLY_EPROTO (a damaged snapshot or log: `why` names the file and the
 * offset) with a sentence in why.
 */
int dir_store_open(uv_loop_t *loop, const dir_store_config_t *cfg, int64_t default_lease_ms,
                   int64_t grace_ms, dir_store_t **out, ns_tree_t **tree, char *why,
                   size_t whylen);

/* Sets the callback told when records become durable. */
void dir_store_set_durable_cb(dir_store_t *s, dir_store_durable_cb cb, void *ud);

/* The sequence number a reply produced now must wait for: the newest
 * applied record's when it is not durable yet, else 0 (answer at once). */
int64_t dir_store_unsynced(const dir_store_t *s);

void dir_store_stats(const dir_store_t *s, dir_store_stats_t *out);

/* Stops logging after the records applied so far: their batch is written,
 * and the loop runs until it and any snapshot are done. */
void dir_store_stop(dir_store_t *s);

/* Frees the store once the loop has run out (accepts NULL); the tree is the
 * caller's. */
void dir_store_close(dir_store_t *s);

#endif /* MAYFLY_DIR_STORE_H */
