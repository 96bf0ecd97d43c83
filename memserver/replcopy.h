/*
 * Re-replication on a memory server (issue 12; docs/data-protocol.md,
 * "REPLICA_COPY stream"): copying a whole block from a chain's tail to the
 * block joining the chain.
 *
 * The tail's side (the copy driver). When check_block tells a chain's tail
 * to fill a copy (BlockInfo.copy_to, copy_op; chain.c calls the copy hook
 * this module installs), the driver serialises the block at once, on the
 * loop, at its applied cseq (blocksnap.h), attaches the copy to the chain
 * from that cseq (ms_chain_attach_copy: later writes are kept for the copy),
 * and streams the chunks (at most BS_CHUNK_MAX bytes each) as
 * WIRE_OP_REPLICA_COPY frames over the server's peer link to the copy's
 * server (link.h; frame MAC with the cluster key when there is one). At
 * most MS_REPLCOPY_WINDOW chunks are in the link at a time, and each
 * chunk's memory is freed once the link has it, so a copy holds at most
 * the block's serialised size, shrinking as it goes. Once the last chunk is
 * queued the chain's writes kept for the copy follow it on the same
 * connection (ms_chain_copy_release); once the last chunk is acknowledged
 * (the copy holds the whole block) the driver calls replica_end(commit)
 * through the control thread. On any failure (the link fails, the copy's
 * server refuses a chunk, the tail's block changes owner) it detaches the
 * copy and calls replica_end(abort). One copy per op id: a check_block
 * that says the same again while it runs, or after it ended, starts
 * nothing.
 *
 * The joining block's side (the receiver). A REPLICA_COPY frame is served
 * only for a block check_block called a copy being filled (chain_pos -1)
 * under the frame's copy op (ms__replcopy_expect; when check_block names
 * no op, the op of the stream's first chunk), with a good frame MAC;
 * any other is refused (MAYFLY_EMOVED; a bad MAC MAYFLY_EPERM, counted in
 * cap_refused). Chunks must come in stream order (arg1 = the offset so
 * far); each is restored into the block at once (blocksnap.h) and
 * acknowledged; the last (arg2 = 1) is acknowledged once the whole block,
 * its chain state included, is restored. A refused stream leaves the block
 * empty, and the next copy starts again from offset 0.
 *
 * Everything runs on the loop thread.
 */
#ifndef MAYFLY_MS_REPLCOPY_H
#define MAYFLY_MS_REPLCOPY_H

#include <stdint.h>

#include "common/wire.h"
#include "memserver/store.h"

/* Chunks in the link at a time per copy. */
#define MS_REPLCOPY_WINDOW 8
/* How long a copy waits before trying a link that refused a chunk for
 * being full (ms_link_send's MAYFLY_EAGAIN). */
#define MS_REPLCOPY_RETRY_MS 5

typedef struct ms_server ms_server_t;
typedef struct conn conn_t;
typedef struct ms_event ms_event_t;
typedef struct ms_replcopy ms_replcopy_t;

/* Sets the module up on a starting server (installs the chain's copy
 * hook). */
void ms__replcopy_start(ms_server_t *s);
/* The server stops: every copy still streaming is dropped without a
 * replica_end (the directory's copy timeout aborts it); restores in
 * progress are dropped (their blocks go with the server). */
void ms__replcopy_stop(ms_server_t *s);

/* check_block answered for block b: with joining set b is a copy being
 * filled (chain_pos -1) under copy_op, and REPLICA_COPY frames of that op
 * are served for it (copy_op 0: the op is not named, and the first chunk's
 * op, at offset 0, is taken); otherwise b is not (any longer) a copy and
 * none are. */
void ms__replcopy_expect(ms_server_t *s, store_block_t *b, int joining, int64_t copy_op);

/* Serves a WIRE_OP_REPLICA_COPY frame (its complete bytes, frame[0..flen)).
 * can_park as for ms__handle: a generation the server does not know yet
 * is parked until the directory confirmed it. */
void ms__replcopy_in(conn_t *c, const wire_hdr_t *h, const uint8_t *frame, size_t flen,
                     int can_park);

/* The directory answered a replica_end (MS_EV_REPLICA_END). */
void ms__replcopy_ended(ms_server_t *s, const ms_event_t *e);

/* Copies this server streamed to the end, and their stream bytes. */
void ms__replcopy_stats(const ms_server_t *s, uint64_t *copies, uint64_t *bytes);

#endif /* MAYFLY_MS_REPLCOPY_H */
