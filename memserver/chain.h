/*
 * Chain replication on a memory server (issue 12; docs/data-protocol.md,
 * "Chains"): the state a replicated block keeps (its chain, its place in
 * it, the successor's link, the chain sequence numbers, the writes
 * forwarded and not yet acknowledged, the dedup table) and the roles it
 * plays: the head executes client writes once (dedup on client id + seq),
 * numbers them (cseq) and forwards them; middles and the tail apply
 * forwarded writes in cseq order; the tail serves reads and acknowledges.
 *
 * The dedup table and the pending queue are plain data structures with no
 * I/O (dedup.h, unit-tested directly); this is the loop side (the link to
 * the successor, CHAIN_FWD in and out, reconfiguration), used by
 * handlers.c, ctlevents.c and the copy part (replcopy.c, blocksnap.c);
 * internal.h lists the ms__chain_* functions the server's modules call.
 * Everything runs on the loop thread.
 */
#ifndef MAYFLY_MS_CHAIN_H
#define MAYFLY_MS_CHAIN_H

#include <glib.h>
#include <stdint.h>

#include "common/wire.h"
#include "memserver/dedup.h"
#include "memserver/link.h"
#include "memserver/store.h"

#define MS_CHAIN_MAX 5 /* NS_CHAIN_MAX */
/* A member whose forwards fail asks the directory for its chain at most
 * this often (per block). */
#define MS_CHAIN_RECHECK_MS 100

typedef struct ms_server ms_server_t;

/* One member of a block's chain, as check_block said. */
typedef struct ms_chain_member {
  int32_t server_id;
  char *address;
  int32_t block_index;
  int64_t generation;
} ms_chain_member_t;

/* A replicated block's chain state (store_block_t.chain; NULL when R = 1). */
typedef struct ms_chain ms_chain_t;

/* Whether b is a replicated block (it has chain state). */
int ms_chain_replicated(const store_block_t *b);
/* The block's applied chain sequence number (0 when not replicated). */
uint64_t ms_chain_applied(const store_block_t *b);

/*
 * Hooks for the copy part (blocksnap.c, replcopy.c).
 *
 * ms_chain_snap_save appends the chain state a copy needs (applied_cseq,
 * then the dedup table: ms_dedup_save) to out. ms_chain_snap_restore sets it
 * on a block being filled (chain_pos -1: its state is created when absent)
 * from such an image buf[0..len); returns 0 or MAYFLY_EPROTO.
 *
 * ms_chain_attach_copy: the tail b, having serialised itself at applied
 * cseq `from`, forwards every later write (cseq > from) also to the joining
 * block (address, index, generation) over the same link the copy stream
 * uses (ms_chain_peer_link(s, address)), and acknowledges a write upstream
 * only when the copy acknowledged it too. ms_chain_detach_copy stops that
 * (the copy failed or was aborted; a committed copy becomes the successor
 * through the next rechain, which detaches it too). Both return 0 or
 * MAYFLY_EINVAL (b is not a replicated tail).
 */
void ms_chain_snap_save(const store_block_t *b, GByteArray *out);
int ms_chain_snap_restore(ms_server_t *s, store_block_t *b, const uint8_t *buf, size_t len);
int ms_chain_attach_copy(ms_server_t *s, store_block_t *b, const char *address, int32_t index,
                         int64_t generation, uint64_t from);
void ms_chain_detach_copy(ms_server_t *s, store_block_t *b);
/* The copy stream's last chunk is queued on the copy's link: the forwards
 * held for the copy since ms_chain_attach_copy go out now, after it, on
 * the same connection (they would find nothing to apply to before it).
 * Returns 0 or MAYFLY_EINVAL (no copy attached). */
int ms_chain_copy_release(ms_server_t *s, store_block_t *b);

/* How the copy part learns that check_block gave a tail a copy to fill
 * (BlockInfo.copy_to, copy_op): set once at start (replcopy.c); called on
 * the loop after the block's chain state is updated, at every check_block
 * answer that names the copy (so possibly again for the same copy_op: the
 * hook ignores one it already drives). */
typedef void (*ms_chain_copy_hook_t)(ms_server_t *s, store_block_t *b,
                                     const ms_chain_member_t *to, int64_t copy_op);
void ms_chain_set_copy_hook(ms_server_t *s, ms_chain_copy_hook_t hook);

/* The server's one link to the memory server at address (created on first
 * use, shared by every block that talks to it, closed when the server
 * stops), so that a copy stream and the forwards that follow it share one
 * connection and stay in order. */
ms_link_t *ms_chain_peer_link(ms_server_t *s, const char *address);

#endif /* MAYFLY_MS_CHAIN_H */
