/*
 * The data structures of chain replication with no I/O (issue 12): a
 * replicated block's dedup table (the replies of the writes it executed,
 * by client id and seq, so a retried write is applied once) and its
 * pending queue (the writes forwarded down the chain and not yet
 * acknowledged). chain.c drives them on the loop; tests/unit/test_dedup.c
 * drives them directly.
 */
#ifndef MAYFLY_MS_DEDUP_H
#define MAYFLY_MS_DEDUP_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

#include "common/wire.h"

#define MS_DEDUP_MAX_DEFAULT 65536
#define MS_DEDUP_BYTES_DEFAULT (64u << 20)

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

typedef struct ms_dedup ms_dedup_t;
typedef struct ms_dedup_client ms_dedup_client_t;

/* One write's entry: its reply, and whether the chain acknowledged it. */
typedef struct ms_dedup_entry {
  uint64_t client_id, seq;
  uint64_t cseq;
  ms_dedup_reply_t reply;
  int committed;
  ms_dedup_t *table;
  ms_dedup_client_t *client;
  GList client_link; /* in its client's entries, oldest first */
  GList budget_link; /* committed: in the budget's queue, oldest first */
} ms_dedup_entry_t;

/* What ms_dedup_find says of (client, seq). */
enum { MS_DEDUP_NEW = 0, MS_DEDUP_PENDING = 1, MS_DEDUP_DONE = 2, MS_DEDUP_OLD = 3 };

/* Server-wide bound on the reply payload bytes every block's table keeps
 * (--dedup-bytes), shared by the tables of one server. Initialise with
 * ms_dedup_budget_init. */
typedef struct ms_dedup_budget {
  uint64_t max_bytes; /* MS_DEDUP_BYTES_DEFAULT */
  uint64_t bytes;     /* payload bytes kept now, all tables */
  GQueue committed;   /* every table's committed entries, oldest first (for the byte bound) */
} ms_dedup_budget_t;

void ms_dedup_budget_init(ms_dedup_budget_t *bu, uint64_t max_bytes);

/* A block's table: at most max_entries entries (--dedup-max). */
ms_dedup_t *ms_dedup_new(ms_dedup_budget_t *budget, uint32_t max_entries);
void ms_dedup_free(ms_dedup_t *d);

/* Looks (client, seq) up: MS_DEDUP_DONE (*out: the entry, its
 * stored reply), MS_DEDUP_PENDING (*out: the entry; executed, not yet acknowledged by the chain: a retry
 * waits for it), MS_DEDUP_OLD (seq below what the client said it has
 * replies for, or an entry forgotten: the retry must not execute again;
 * answered MAYFLY_EINVAL by the handler) or MS_DEDUP_NEW. Also records the
 * client's `acked` and drops its entries below it. */
int ms_dedup_find(ms_dedup_t *d, const wire_seq_t *s, ms_dedup_entry_t **out);

/* Records that (client, seq) executed with reply r (its payload copied) and
 * is pending until ms_dedup_commit. Returns the entry (to commit later). */
ms_dedup_entry_t *ms_dedup_add(ms_dedup_t *d, const wire_seq_t *s, const ms_dedup_reply_t *r,
                               uint64_t cseq);
/* The chain acknowledged the entry: it may now be replayed and evicted
 * (bounds: ms_dedup_new, budget). */
void ms_dedup_commit(ms_dedup_t *d, ms_dedup_entry_t *e);
/* Entries and payload bytes the table holds. */
uint32_t ms_dedup_count(const ms_dedup_t *d);
uint64_t ms_dedup_bytes(const ms_dedup_t *d);

/* Serialises every committed entry and each client's acked (format:
 * docs/data-protocol.md, "Chain state in a copy"), appending to out. */
void ms_dedup_save(const ms_dedup_t *d, GByteArray *out);
/* Adds the clients (each with its acked, also one with no entry left) and
 * the entries of a ms_dedup_save image buf[0..len), committed, within the
 * table's bounds. Returns 0 or MAYFLY_EPROTO (nothing added then). */
int ms_dedup_restore(ms_dedup_t *d, const uint8_t *buf, size_t len);

/* A write forwarded down the chain and not yet acknowledged: its cseq, the
 * forwarded frame (the client's request as the head received it, or an
 * internal one), and who to tell when it is acknowledged (chain.c's). */
typedef struct ms_pending {
  uint64_t cseq;
  uint8_t *frame; /* owned */
  size_t len;
  int sent_succ;  /* forwarded to the current successor and not failed since */
  int sent_copy;  /* forwarded to the joining copy (ms_chain_attach_copy) */
  int need_copy;  /* the copy must acknowledge it too */
  int acked_succ, acked_copy;
  ms_dedup_entry_t *dedup; /* its dedup entry, or NULL (no seq record, or internal) */
  GSList *waiters;         /* chain.c's waiter records */
  void *charged;           /* chain.c: whose deferred bytes it counts in */
  /* Its data event, published by whichever member is the tail when it
   * commits (ev_kind 0: none). */
  int ev_kind;
  uint8_t *ev_key; /* owned, ev_klen bytes */
  uint32_t ev_klen;
  int64_t ev_offset, ev_length;
  GList link; /* in the queue, cseq order */
} ms_pending_t;

typedef struct ms_pending_queue {
  GQueue q;       /* ms_pending_t *, cseq ascending */
  uint64_t bytes; /* frame bytes held (count against the deferred bounds) */
} ms_pending_queue_t;

void ms_pending_init(ms_pending_queue_t *pq);
/* A new entry for cseq with a copy of frame[0..len). */
ms_pending_t *ms_pending_new(uint64_t cseq, const uint8_t *frame, size_t len);
/* Appends p (its cseq above every queued one: MF_CHECK). */
void ms_pending_push(ms_pending_queue_t *pq, ms_pending_t *p);
/* The entry of cseq, or NULL. */
ms_pending_t *ms_pending_find(ms_pending_queue_t *pq, uint64_t cseq);
/* Unlinks p (acknowledged); the caller frees it with ms_pending_free. */
void ms_pending_remove(ms_pending_queue_t *pq, ms_pending_t *p);
/* Frees an unlinked entry (its waiters must be gone: MF_CHECK). */
void ms_pending_free(ms_pending_t *p);
/* Marks every entry not sent to the successor (it changed, or its link
 * failed: everything is resent in cseq order). */
void ms_pending_unsend(ms_pending_queue_t *pq);
/* Entries queued. */
guint ms_pending_count(const ms_pending_queue_t *pq);

#endif /* MAYFLY_MS_DEDUP_H */
