/*
 * Replication, the directory's side (issue 12; docs/control-protocol.md,
 * "Replication"). The tree (namespaces/tree.h) keeps each replicated
 * partition's chain and changes it through records; this module acts on
 * those changes and drives what the memory servers must do about them:
 *
 * - Rechain. Every applied record's `fx->rechain` (the members and copy
 *   block of each chain that changed) is queued per memory server and
 *   handed out in its next heartbeat reply (HeartbeatReply.rechain); the
 *   server then asks check_block for the new chain. Members dropped from a
 *   chain (a server marked down, or registered with a new incarnation) are
 *   freed by the tree and reach their server's release list as any freed
 *   block does (directory.c).
 * - Re-replication. A timer, every heartbeat period, looks at the chains
 *   shorter than their R (kept as a set of candidate blocks, filled from
 *   fx->rechain, so no walk of the tree): for a live partition with no copy
 *   pending, no repartition under way on its namespace and its tail's
 *   server up, it picks one block on a host none of the members is on
 *   (ns_alloc_pick_chain with the members to avoid) and applies
 *   NS_REC_REPLICA_BEGIN. The tail learns it from check_block (copy_to,
 *   copy_op), fills the block and ends the copy with replica_end; commit
 *   appends it at the tail (NS_REC_REPLICA_END with NS_REC_COMMIT), abort
 *   frees it. A copy not ended within --copy-timeout, whose block's server
 *   went down, or whose tail left the chain, is aborted by the directory
 *   (and tried again at a later tick).
 *
 * Copies under way are remembered by op id (the tree's op id space, shared
 * with repartitions); after a restart the recovered tree's copies are taken
 * up as if begun then. Everything runs on the directory's loop.
 */
#ifndef MAYFLY_DIR_CHAINS_H
#define MAYFLY_DIR_CHAINS_H

#include <stddef.h>
#include <stdint.h>

#include "directory/directory.h"

/* Starts the re-replication timer (every heartbeat period) and, with a
 * recovered tree, takes up its degraded chains and copies under way. */
void dir_chains_init(dir_t *d);

/* Picks up the copies under way and the short chains of the tree (at start,
 * and when a directory takes over a tree: ha.c). */
void dir_chains_recover(dir_t *d);

/* Stops the timer (closed on the loop) and forgets the copies. */
void dir_chains_stop(dir_t *d);
void dir_chains_free(dir_t *d);

/* The R a create asks for (0: the directory's --replicas), checked: 0 and
 * *out, or MAYFLY_EINVAL (negative), MAYFLY_ENOHOSTS (more than
 * NS_CHAIN_MAX, or more than the distinct hosts with a server up), with a
 * sentence naming both numbers in why. */
int dir_chains_replicas(const dir_t *d, int32_t asked, int32_t *out, char *why, size_t whylen);

/* Checks a memory server's --zone: at most DIR_ZONE_MAX characters among
 * letters, digits, '.', '-' and '_' ("" for none). 0 or MAYFLY_EINVAL with
 * why. */
int dir_chains_check_zone(const char *zone, char *why, size_t whylen);

/* dir_apply's hook, after a record applied: queues fx->rechain from index
 * rechain_from on for each block's server, notes the chains that may be
 * short now, counts the members dropped from chains (freed from index
 * freed_from on by a SERVER_STATE or SERVER_ADD record) and logs each
 * changed chain. */
void dir_chains_applied(dir_t *d, const ns_record_t *rec, const ns_effects_t *fx,
                        guint rechain_from, guint freed_from);

/* Moves the server's pending rechain blocks (each once) to out, a GPtrArray
 * of MayflyBlockRef, for its heartbeat reply. */
void dir_chains_take_rechain(dir_t *d, int32_t server_id, GPtrArray *out);

/* One scheduler pass at monotonic time now (the timer calls it): aborts
 * the copies that must end, then begins a copy for each degraded chain
 * that can have one. */
void dir_chains_tick(dir_t *d, int64_t now);

/* replica_end: the tail `server_id` ends copy op_id. A commit adds the
 * copy at the tail of the chain; an abort frees it. Returns 0 with *node
 * the namespace (for the reply's layout), or MAYFLY_ENOENT (no such copy
 * under way: aborted, timed out or its namespace gone), MAYFLY_EPERM (the
 * caller is not the chain's tail) or the tree's error (the copy was then
 * aborted), with why. */
int dir_chains_replica_end(dir_t *d, int32_t server_id, int64_t op_id, int commit,
                           int64_t bytes, ns_node_t **node, char *why, size_t whylen);

/* Chains shorter than their R now (the candidate set, pruned). */
int64_t dir_chains_degraded(dir_t *d);

#endif /* MAYFLY_DIR_CHAINS_H */
