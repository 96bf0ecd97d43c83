/*
 * Write sequence numbers of one client (issue 12, replicated namespaces).
 *
 * Every write to a replicated partition carries a sequence record
 * (wire_seq_t): the client's random id, the write's sequence number and
 * `acked`, below which every seq of this client has had its reply, so the
 * chain heads may forget the replies they keep for deduplication. A write
 * takes its seq once (mf_seqs_begin) and keeps it across every retry, so a
 * head that already applied it replays the stored reply instead of applying
 * it twice; it gives the seq back (mf_seqs_end) when it has its final answer
 * or gives up.
 *
 * acked is the lowest seq begun and not yet ended, or the next seq to hand
 * out when none is in flight. Seqs are handed out in order, so everything in
 * [low, next) is either in flight or ended out of order; the ended ones wait
 * in a small set until the seqs below them end too. Both operations cost one
 * uncontended mutex hold (plus a hash insert for an out-of-order end).
 * Thread-safe.
 */
#ifndef MAYFLY_CLIENT_SEQS_H
#define MAYFLY_CLIENT_SEQS_H

#include <glib.h>
#include <stdint.h>

#include "common/wire.h"

typedef struct mf_seqs {
  GMutex lock;
  uint64_t client_id; /* random, never 0 */
  uint64_t next;      /* the next seq handed out (from 1) */
  uint64_t low;       /* acked: the lowest seq not ended (next when none) */
  GHashTable *ended;  /* seqs in (low, next) already ended (uint64 keys) */
} mf_seqs_t;

/* Initialises s with a fresh random client id (mf_auth_random, redrawn
 * while 0); the first seq is 1. Pair with mf_seqs_clear. */
void mf_seqs_init(mf_seqs_t *s);
void mf_seqs_clear(mf_seqs_t *s);

/* Hands out n consecutive seqs (n >= 1) and returns the first. Each must be
 * ended once with mf_seqs_end. */
uint64_t mf_seqs_begin(mf_seqs_t *s, size_t n);

/* Ends a seq from mf_seqs_begin (0 is ignored, so a call that never took one
 * may end it). Ending one twice, or one never begun, is a bug (MF_CHECK). */
void mf_seqs_end(mf_seqs_t *s, uint64_t seq);

/* The current acked watermark (see above). */
uint64_t mf_seqs_acked(mf_seqs_t *s);

/* Encodes the sequence record of `seq` with the current acked into out. */
void mf_seqs_record(mf_seqs_t *s, uint64_t seq, uint8_t out[WIRE_SEQ_SIZE]);

#endif /* MAYFLY_CLIENT_SEQS_H */
