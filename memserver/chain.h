/*
 * Chain replication on a memory server (issue 12; docs/data-protocol.md,
 * "Chains"): the state a replicated block keeps (its chain, its place in
 * it, the successor's link, the chain sequence numbers, the writes
 * forwarded and not yet acknowledged, the dedup table) and the roles it
 * plays: the head executes client writes once (dedup on client id + seq),
 * numbers them (cseq) and forwards them; middles and the tail apply
 * forwarded writes in cseq order; the tail serves reads and acknowledges.
 *
 * Two layers:
 *   - ms_dedup_* and ms_pending_*: the dedup table and the pending queue,
 *     plain data structures with no I/O (unit-tested directly);
 *   - ms_chain_*: the loop side (link to the successor, CHAIN_FWD in and
 *     out, reconfiguration), used by handlers.c, ctlevents.c and the copy
 *     part (replcopy.c, blocksnap.c).
 * Everything runs on the loop thread.
 */
#ifndef MAYFLY_MS_CHAIN_H
#define MAYFLY_MS_CHAIN_H

#include <glib.h>
#include <stdint.h>

#include "common/wire.h"
#include "memserver/link.h"
#include "memserver/store.h"

#define MS_CHAIN_MAX 5 /* NS_CHAIN_MAX */
#define MS_DEDUP_MAX_DEFAULT 65536
#define MS_DEDUP_BYTES_DEFAULT (64u << 20)
/* A member whose forwards fail asks the directory for its chain at most
 * this often (per block). */
#define MS_CHAIN_RECHECK_MS 100

/* --- the dedup table ---------------------------------------------------- */

/* The reply a write got, kept so that a retry of it (same client id and
 * seq) is answered the same without executing it again. */
typedef struct ms_dedup_reply {
  int32_t status;
  uint16_t flags;
  uint64_t arg0, arg1;
  uint32_t arg2;
  uint32_t plen;
  uint8_t *payload; /* plen bytes (a pop's item), owned; NULL when plen is 0 */
} ms_dedup_reply_t;

typedef struct ms_dedup_entry ms_dedup_entry_t;
typedef struct ms_dedup ms_dedup_t;

/* What ms_dedup_find says of (client, seq). */
enum { MS_DEDUP_NEW = 0, MS_DEDUP_PENDING = 1, MS_DEDUP_DONE = 2, MS_DEDUP_OLD = 3 };

/* Server-wide bound on the reply payload bytes every block's table keeps
 * (--dedup-bytes), shared by the tables of one server. */
typedef struct ms_dedup_budget {
  uint64_t max_bytes; /* MS_DEDUP_BYTES_DEFAULT */
  uint64_t bytes;     /* payload bytes kept now, all tables */
  GQueue committed;   /* every table's committed entries, oldest first (for the byte bound) */
} ms_dedup_budget_t;

/* A block's table: at most max_entries entries (--dedup-max). */
ms_dedup_t *ms_dedup_new(ms_dedup_budget_t *budget, uint32_t max_entries);
void ms_dedup_free(ms_dedup_t *d);

/* Looks (client, seq) up: MS_DEDUP_DONE (*out: the stored reply),
 * MS_DEDUP_PENDING (executed, not yet acknowledged by the chain: a retry
 * waits for it), MS_DEDUP_OLD (seq below what the client said it has
 * replies for, or an entry forgotten: the retry must not execute again;
 * answered MAYFLY_EINVAL by the handler) or MS_DEDUP_NEW. Also records the
 * client's `acked` and drops its entries below it. */
int ms_dedup_find(ms_dedup_t *d, const wire_seq_t *s, const ms_dedup_reply_t **out);

/* Records that (client, seq) executed with reply r (its payload copied) and
 * is pending until ms_dedup_commit. Returns the entry (to commit later). */
ms_dedup_entry_t *ms_dedup_add(ms_dedup_t *d, const wire_seq_t *s, const ms_dedup_reply_t *r,
                               uint64_t cseq);
/* The chain acknowledged the entry: it may now be replayed and evicted
 * (bounds: ms_dedup_new, budget). */
void ms_dedup_commit(ms_dedup_t *d, ms_dedup_entry_t *e);
/* Commits every entry of cseq <= upto (a member that became the tail). */
void ms_dedup_commit_upto(ms_dedup_t *d, uint64_t upto);
/* Entries and payload bytes the table holds. */
uint32_t ms_dedup_count(const ms_dedup_t *d);
uint64_t ms_dedup_bytes(const ms_dedup_t *d);

/* Serialises every committed entry and each client's acked (format:
 * docs/data-protocol.md, "Chain state in a copy"), appending to out. */
void ms_dedup_save(const ms_dedup_t *d, GByteArray *out);
/* Adds the entries of a ms_dedup_save image buf[0..len), committed.
 * Returns 0 or MAYFLY_EPROTO (nothing added then). */
int ms_dedup_restore(ms_dedup_t *d, const uint8_t *buf, size_t len);

/* --- the pending queue ---------------------------------------------------- */

/* A write forwarded to the successor and not yet acknowledged: its cseq,
 * the forwarded frame (the client's request as the head received it, or an
 * internal one), and who to tell when it is acknowledged. */
typedef struct ms_pending {
  uint64_t cseq;
  uint8_t *frame; /* owned */
  size_t len;
  int sent;       /* forwarded on the current successor link and not failed since */
  /* Who waits (chain.c): the client's connection and reply, or the
   * predecessor's CHAIN_FWD to acknowledge. */
  void *waiter;
  GList link; /* in the queue, cseq order */
} ms_pending_t;

typedef struct ms_pending_queue {
  GQueue q;       /* ms_pending_t *, cseq ascending */
  uint64_t bytes; /* frame bytes held (count against the deferred bounds) */
} ms_pending_queue_t;

void ms_pending_init(ms_pending_queue_t *pq);
/* Appends p (cseq above every queued one: MF_CHECK). */
void ms_pending_push(ms_pending_queue_t *pq, ms_pending_t *p);
/* The entry of cseq, or NULL. */
ms_pending_t *ms_pending_find(ms_pending_queue_t *pq, uint64_t cseq);
/* Unlinks p (acknowledged); the caller frees it with ms_pending_free. */
void ms_pending_remove(ms_pending_queue_t *pq, ms_pending_t *p);
void ms_pending_free(ms_pending_t *p);
/* Marks every entry not sent (the successor changed: resend all in order). */
void ms_pending_unsend(ms_pending_queue_t *pq);

/* --- the loop side --------------------------------------------------------- */

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

/* The server's one link to the memory server at address (created on first
 * use, shared by every block that talks to it, closed when the server
 * stops), so that a copy stream and the forwards that follow it share one
 * connection and stay in order. */
ms_link_t *ms_chain_peer_link(ms_server_t *s, const char *address);

#endif /* MAYFLY_MS_CHAIN_H */
