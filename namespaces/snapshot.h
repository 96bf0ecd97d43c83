/*
 * The snapshot codec: the whole state of an ns_tree_t (namespaces/tree.h)
 * and of its block allocator (namespaces/alloc.h) as bytes and back, for the
 * directory's snapshots (the file around these bytes, with its magic, version
 * and checksum, is the directory's: see docs/log-format.md). No I/O.
 *
 * A snapshot stores every node (children sorted by name, in pre-order), its
 * lease, tags, layout, partitions and begun repartitions, the tree's
 * counters, and every memory server with each block's generation and state
 * and the free stack in its order, so that a decoded tree hands out the same
 * blocks as the original would. Leases are soft state: renewal times are not
 * stored and restart in full after recovery; the observer is not stored.
 *
 * The body starts with its own version byte (NS_SNAP_VERSION). The encoding
 * is canonical: encode(decode(bytes)) == bytes for every accepted input of
 * the current version.
 *
 * The decoder treats its input as hostile (a snapshot file may be damaged or
 * forged): every count is checked against a limit and against the bytes
 * left before anything is allocated, and what it accepts is a consistent
 * tree, one that ns_tree_apply() and the read functions handle like a tree
 * they built themselves (the checks are listed in docs/log-format.md,
 * "Snapshot body").
 */
#ifndef MAYFLY_NS_SNAPSHOT_H
#define MAYFLY_NS_SNAPSHOT_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

#include "namespaces/tree.h"

/* The encoding version written in a body's first byte: 2 since replication
 * (zones, replicas, chains, copies), 3 since directory HA (the request ids
 * the tree remembers, at the end, sorted by client); version 1 and 2 bodies
 * still decode (as unreplicated namespaces, and without request ids; their
 * re-encoding is version 3). */
#define NS_SNAP_VERSION 3
#define NS_SNAP_VERSION_MIN 1

/* Largest value the decoder accepts for a range end (lo, hi), a
 * generation, a layout version and the tree's counters: the tree adds to
 * these (a file's next range starts at the last hi plus a block size, a
 * generation goes up at every free), and below 2^62 no such sum overflows. */
#define NS_SNAP_INT_MAX (INT64_C(1) << 62)

/* Largest block size the decoder accepts (1 PiB): planning a file adds up
 * the sizes of up to NS_CREATE_BLOCKS_MAX (2^12) blocks, which stays within
 * NS_SNAP_INT_MAX. */
#define NS_SNAP_BLOCK_SIZE_MAX NS_ALLOC_MAX_BLOCK_SIZE

/* What a snapshot says besides the tree. */
typedef struct ns_snap_meta {
  int64_t seq;     /* sequence number of the last log record the snapshot covers */
  int64_t wall_ms; /* when it was taken (wall clock) */
} ns_snap_meta_t;

/*
 * Appends the encoding of the whole tree and its allocator to out. The tree
 * is only read (so a fork()ed child may encode its copy). Returns 0, or
 * MAYFLY_EINVAL when the tree holds something the encoding cannot represent
 * (a string longer than NS_REC_STR_MAX, more than NS_TAGS_MAX tags, more than
 * UINT32_MAX of something), in which case out is as it was.
 */
int ns_snap_encode(const ns_tree_t *t, const ns_snap_meta_t *meta, GByteArray *out);

/*
 * Decodes exactly len bytes into a new tree, made with
 * ns_tree_new(default_lease_ms, grace_ms) and filled. Every node's
 * renewed_ms and subtree_ms, and every begun repartition's started_ms, are
 * set to now_ms (leases restart in full after recovery). Returns 0 with the
 * tree in *out (free with ns_tree_free) and the metadata in *meta, or
 * MAYFLY_EPROTO with a sentence naming the fault and its byte offset in
 * `why` (may be NULL); on error nothing is allocated and *out is NULL.
 */
int ns_snap_decode(const uint8_t *data, size_t len, int64_t default_lease_ms, int64_t grace_ms,
                   int64_t now_ms, ns_tree_t **out, ns_snap_meta_t *meta, char *why,
                   size_t whylen);

#endif /* MAYFLY_NS_SNAPSHOT_H */
