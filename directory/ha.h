/*
 * High availability on etcd (--etcd): several directories started with the
 * same --cluster form one service, one leader and hot standbys.
 *
 * Keys, under /mayfly/NAME/ (docs/ha.md):
 *   leader                  the leader's advertise address, bound to its lease
 *   log/<16 hex seq>        a run of records (namespaces/record.h encodings)
 *                           starting at record seq, each framed as u32 length
 *                           (little-endian) + bytes, after a header (ha.c)
 *   snapshot                the newest complete snapshot: its seq and chunks
 *   snap/<16 hex seq>/<8 hex chunk>   the snapshot's body in chunks
 *   members/<advertise>     each directory's role and applied seq, bound to
 *                           its lease
 *
 * Election and fencing. Every directory holds an etcd lease of --leader-ttl,
 * kept alive a third of it. The leader is the directory whose transaction
 * created the leader key (compare: create revision 0) with its lease; that
 * key's create revision is the term. Every append is one transaction guarded
 * by "leader's create revision == term", so a deposed leader can never
 * append, even before it knows it was deposed. A leader serves only while
 * its lease is surely alive (the last keepalive it *sent* that etcd answered,
 * plus the TTL, is in the future): from the moment it may have lost the key,
 * it answers nothing more. A leader that loses its key drops the replies it
 * holds and re-executes itself as a standby (state rebuilt from etcd).
 *
 * The log. Records are applied to the tree first (the call that made them
 * can answer), then logged; the records of one loop iteration go in one
 * transaction (group commit), up to --etcd-inflight transactions in flight.
 * Replies wait until every record up to theirs is committed (the server
 * holds them, as with the local log). Transactions in flight may commit out
 * of order; the log is the contiguous run of seqs from the start, and a new
 * leader deletes any key past a gap (their replies never went out).
 *
 * Standbys load the newest snapshot and the log after it at one revision,
 * then follow by watching the prefix from the next revision, applying records
 * in seq order to their tree. A watch whose revision was compacted starts
 * over from the snapshot. On winning the election a standby reads what is
 * left of the log, drops what follows a gap, adopts its tree (every lease
 * restarts in full: now + lease + grace; every memory server must register
 * again), and serves.
 *
 * Snapshots: after --snapshot-records records or --snapshot-bytes bytes of
 * log, the leader encodes the tree, writes it in chunks (fenced
 * transactions), then one transaction points `snapshot` at it and deletes the
 * log keys and the chunks it makes useless; then etcd's history before that
 * revision is compacted.
 *
 * Everything here runs on the directory's loop.
 */
#ifndef MAYFLY_DIR_HA_H
#define MAYFLY_DIR_HA_H

#include <stdint.h>

#include <mayfly_directory.h>

#include "directory/directory.h"

typedef struct dir_ha_config {
  const char *endpoints; /* --etcd: "http://host:port,..." */
  const char *cluster;   /* --cluster */
  const char *advertise; /* this directory's address for clients */
  int64_t leader_ttl_ms;
  int64_t etcd_timeout_ms;
  int64_t inflight;
  int64_t snapshot_records;
  uint64_t snapshot_bytes;
  char **argv; /* to re-execute on stepping down (with --port pinned) */
  int port;    /* the bound port */
} dir_ha_config_t;

typedef struct dir_ha dir_ha_t;

/*
 * Connects to etcd, loads the tree (snapshot and log) into a tree of its own
 * and starts following and campaigning; the directory d serves as a standby
 * meanwhile and takes the tree over on winning. Sets d->ha. Returns 0, or
 * MAYFLY_EINVAL (bad endpoints) with why. Loading happens on the loop.
 */
int dir_ha_start(dir_t *d, const dir_ha_config_t *cfg, char *why, size_t whylen);

/* Whether this directory leads now and may answer calls (its lease is
 * surely alive and its tree caught up). */
int dir_ha_serving(dir_ha_t *ha);

/* The leader's address as known here, or NULL. */
const char *dir_ha_leader(const dir_ha_t *ha);

/* The seq a reply produced now must wait for (not committed yet), else 0. */
int64_t dir_ha_unsynced(const dir_ha_t *ha);

/* Called on the loop when every record up to seq is committed. */
void dir_ha_set_durable_cb(dir_ha_t *ha, void (*cb)(void *ud, int64_t seq), void *ud);

/* Fills a cluster() answer (name, leader, members, positions, counters). */
void dir_ha_cluster(dir_ha_t *ha, MayflyClusterInfo *out);

/* Stops: a leader writes what is pending, revokes its lease (so a standby
 * takes over at once) and the loop runs out. */
void dir_ha_stop(dir_ha_t *ha);
void dir_ha_free(dir_ha_t *ha); /* after the loop ran out; accepts NULL */

/* Reads one log value (a log/ key's bytes) the way a standby does: checks
 * the header and every record's length against the bytes left, then calls
 * cb (may be NULL) for each record in order with its seq; a nonzero return
 * stops the scan and is returned. Returns 0 with *first and *count, or
 * MAYFLY_EPROTO with why. Exposed for the fuzz target (fuzz_halog). */
typedef int (*dir_ha_rec_cb)(const uint8_t *data, uint32_t len, int64_t seq, void *ud);
int dir_ha_log_value_scan(const uint8_t *p, size_t len, int64_t *first, uint32_t *count,
                          dir_ha_rec_cb cb, void *ud, char *why, size_t whylen);

/* Appends a log value holding the encoded records recs[0..n) numbered from
 * first (what a leader writes; the fuzz target's seeds). */
void dir_ha_log_value_build(GByteArray *out, int64_t first, const GByteArray *const *recs,
                            size_t n);

#endif /* MAYFLY_DIR_HA_H */
