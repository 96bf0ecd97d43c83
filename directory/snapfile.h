/*
 * Snapshot files of the durable store (store.h): the snapshot body
 * (namespaces/snapshot.h) inside a checksummed file, written by a forked
 * child so that the loop pauses only for the fork, and the clean-up of the
 * log segments and snapshots a new snapshot makes useless. The format is in
 * docs/log-format.md ("Snapshot files").
 */
#ifndef MAYFLY_DIR_SNAPFILE_H
#define MAYFLY_DIR_SNAPFILE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "namespaces/snapshot.h"
#include "namespaces/tree.h"

#define DIR_SNAP_MAGIC "MAYFLYSN"
#define DIR_SNAP_VERSION 1
/* Magic, u32 version, u32 CRC32C of those 12 bytes, u64 body length, u32
 * CRC32C of the body, u32 CRC32C of bytes 16..27. */
#define DIR_SNAP_HEADER_SIZE 32

/* A snapshot being written by a child process. */
typedef struct dir_snapfile_job {
  const char *dir;  /* borrowed: the data directory */
  int64_t seq;      /* last record covered */
  int64_t wall_ms;  /* when it was taken */
  pid_t pid;
  int64_t fork_us;  /* how long the fork held the loop */
  int64_t started_us;
  /* Set by dir_snapfile_finish. */
  int rc;
  char why[256];
  int64_t bytes, took_ms;
  int removed;      /* older segments and snapshots deleted */
} dir_snapfile_job_t;

/* Forks a child that writes snap-<seq>.snap in dir from its copy of `tree`
 * (temporary file, fsync, rename, fsync of dir) and exits. The child dies
 * with its parent (it must never rename a snapshot into place after a new
 * directory process has recovered without it). Returns 0 with job filled,
 * or MAYFLY_EIO (fork failed) with why. */
int dir_snapfile_start(const char *dir, const ns_tree_t *tree, int64_t seq,
                       dir_snapfile_job_t *job, char *why, size_t whylen);

/* Waits for the child (blocking: run it on a worker thread); when it
 * succeeded, deletes the log segments that hold only records up to
 * job->seq and the older snapshots. Sets job->rc (0 or -1 with job->why). */
void dir_snapfile_finish(dir_snapfile_job_t *job);

/* Writes the snapshot of `tree` at record seq into dir as above (the child
 * runs this). Returns 0 and the file's size in *bytes, or MAYFLY_EIO /
 * MAYFLY_EINVAL with why. */
int dir_snapfile_write(const char *dir, const ns_tree_t *tree, int64_t seq, int64_t wall_ms,
                       int64_t *bytes, char *why, size_t whylen);

/* Reads dir/name: checks the header and checksums and decodes the body
 * into a new tree (ns_snap_decode; leases restart at now_ms). Returns 0
 * with *tree and *meta (the record it covers up to, when it was taken), or MAYFLY_EIO / MAYFLY_EPROTO with why naming what
 * is wrong and where. */
int dir_snapfile_load(const char *dir, const char *name, int64_t default_lease_ms,
                      int64_t grace_ms, int64_t now_ms, ns_tree_t **tree, ns_snap_meta_t *meta,
                      char *why, size_t whylen);

/* Parses a data-directory file name "<prefix><16 lowercase hex digits><suffix>"
 * ("wal-", ".log" or "snap-", ".snap"): 1 with *seq (>= 1), else 0. */
int dir_snapfile_parse_name(const char *name, const char *prefix, const char *suffix,
                            int64_t *seq);

/* The reader without I/O, over a whole file image (the load and the fuzz
 * target use it). */
int dir_snapfile_parse(const uint8_t *buf, size_t len, const char *name,
                       int64_t default_lease_ms, int64_t grace_ms, int64_t now_ms,
                       ns_tree_t **tree, ns_snap_meta_t *meta, char *why, size_t whylen);

#endif /* MAYFLY_DIR_SNAPFILE_H */
