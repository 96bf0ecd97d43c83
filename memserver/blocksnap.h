/*
 * Block snapshots (prefix bs_): a whole block of the store serialised into
 * a byte stream, and a block restored from that stream piece by piece. This
 * is what re-replication sends (WIRE_OP_REPLICA_COPY, replcopy.h): the tail
 * of a chain serialises its block at once on its loop, and the block joining
 * the chain restores it from the chunks as they arrive. The stream format is
 * documented in docs/data-protocol.md ("REPLICA_COPY stream").
 *
 * What a stream holds: the block's kind, range and kv watermarks; a file
 * block's bytes up to its size; a queue block's items in order and its
 * sealed flag; a kv block's entries (set-aside entries of a repartition
 * included); the chain's applied_cseq; and an opaque chain section (the
 * dedup table) that the chain module produces and consumes through
 * bs_chain_hook_t. The charge is not trusted: the restore recomputes it
 * with the store's own rules and refuses a stream whose charge would pass
 * the block size, or that disagrees with the charge the sender declared.
 *
 * No I/O and no loop state: everything runs on the caller's thread (the
 * memory server's loop). The restore is a state machine fed arbitrary
 * pieces of the stream (a record may span pieces); it checks every length
 * before allocating, and on any error leaves the block empty.
 */
#ifndef MAYFLY_MS_BLOCKSNAP_H
#define MAYFLY_MS_BLOCKSNAP_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

#include "memserver/store.h"

/* "MFBS", little-endian, and the format version. */
#define BS_MAGIC 0x5342464du
#define BS_VERSION 1
/* The fixed header that opens a stream. */
#define BS_HEADER_SIZE 72
/* The largest chain section a restore accepts unless told otherwise: the
 * dedup table's payload bound (--dedup-bytes default) plus the table's
 * per-entry overhead for --dedup-max entries, with room to spare. */
#define BS_CHAIN_MAX_DEFAULT ((uint64_t)128 << 20)
/* The chunk size re-replication uses: a REPLICA_COPY payload is at most this. */
#define BS_CHUNK_MAX ((size_t)1 << 20)

/*
 * The chain state of a block, which blocksnap carries without knowing its
 * format. save appends the section for block b to out and returns 0 or a
 * negative MAYFLY_E*; load installs a section (data, len) into block b once
 * the rest of the stream restored cleanly, and returns 0 or a negative
 * MAYFLY_E* (MAYFLY_EPROTO for a malformed section), in which case the
 * restore fails and the block is emptied; load must then leave no chain
 * state behind. Either may be NULL: a NULL save writes an empty section, a
 * NULL load requires the section to be empty. ud is passed to both.
 */
typedef struct bs_chain_hook {
  int (*save)(void *ud, const store_block_t *b, GByteArray *out);
  int (*load)(void *ud, store_block_t *b, const uint8_t *data, size_t len);
  void *ud;
} bs_chain_hook_t;

/* A serialised block: chunks of at most chunk_max stream bytes each, every
 * one preceded by `headroom` bytes the caller may fill (a frame header and
 * MAC, so a chunk goes out as one buffer with no further copy). */
typedef struct bs_stream {
  GPtrArray *chunks; /* GByteArray *: headroom bytes, then the chunk */
  size_t headroom;
  uint64_t bytes;    /* stream bytes in all chunks (headroom not counted) */
} bs_stream_t;

/*
 * Serialises block b of store s (a file, queue or kv block) at applied_cseq
 * into *out, which the caller initialises with bs_stream_init and frees with
 * bs_stream_clear. Copies the data once, so the block may change right after
 * the call. chunk_max must be at least 64 bytes. Returns 0, MAYFLY_EKIND for
 * a free block, or the error of hook->save (the stream is then cleared).
 */
int bs_save(const store_t *s, const store_block_t *b, uint64_t applied_cseq,
            const bs_chain_hook_t *hook, size_t chunk_max, bs_stream_t *out);

/* An empty stream whose chunks will start after `headroom` bytes. */
void bs_stream_init(bs_stream_t *st, size_t headroom);
/* Frees the chunks; the stream may be used again. Accepts a cleared stream. */
void bs_stream_clear(bs_stream_t *st);
/* Chunk i's stream bytes (after the headroom) and their number; chunk i
 * must not have been released. */
const uint8_t *bs_stream_chunk(const bs_stream_t *st, guint i, size_t *len);
/* Frees chunk i (sent: its memory goes at once; the stream's length and
 * the other chunks stay). */
void bs_stream_release(bs_stream_t *st, guint i);

/* A restore in progress (opaque). */
typedef struct bs_restore bs_restore_t;

/*
 * Starts restoring into block b of store s, which must be owned (not
 * STORE_FREE) and of the kind the stream will name; its contents are
 * dropped first (bs_block_empty), so it starts empty. The
 * restore remembers b's generation and never touches b again once it
 * changed (released or adopted by a new owner). chain_max bounds the chain
 * section (0: BS_CHAIN_MAX_DEFAULT); hook may be NULL (see bs_chain_hook_t).
 * The hook struct is copied. Free with bs_restore_free.
 */
bs_restore_t *bs_restore_new(store_t *s, store_block_t *b, const bs_chain_hook_t *hook,
                             uint64_t chain_max);

/*
 * Feeds the next len bytes of the stream. Returns 0 when they were taken,
 * or an error, after which the block has been emptied and every later call
 * returns the same error: MAYFLY_EPROTO (a bad magic, version, tag, length,
 * order or count, a kv key outside the range or twice, bytes after the
 * end), MAYFLY_EKIND (the stream's kind is not the block's), MAYFLY_EFULL
 * (the data would pass the block size), MAYFLY_EMOVED (the block changed
 * owner since bs_restore_new).
 */
int bs_restore_feed(bs_restore_t *r, const uint8_t *data, size_t len);

/*
 * Ends the restore: the stream must be complete (MAYFLY_EPROTO otherwise,
 * and for a charge that disagrees with the header), then the chain
 * section goes to hook->load. On success the block holds exactly what was
 * serialised, its charge recomputed, and *applied_cseq (may be NULL) is the
 * stream's; on error the block is emptied. Returns 0 or the error.
 */
int bs_restore_finish(bs_restore_t *r, uint64_t *applied_cseq);

/* Stream bytes taken so far (what a REPLICA_COPY's offset must equal). */
uint64_t bs_restore_offset(const bs_restore_t *r);

/* Frees a restore. One that did not finish successfully empties the block
 * first (unless the block changed owner meanwhile). Accepts NULL. */
void bs_restore_free(bs_restore_t *r);

/* Empties block b's contents (file bytes, queue items, kv entries, charge,
 * sealed flag) and keeps its owner, kind and range. */
void bs_block_empty(store_t *s, store_block_t *b);

#endif /* MAYFLY_MS_BLOCKSNAP_H */
