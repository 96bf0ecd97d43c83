/*
 * libmayfly internals shared by its modules: the client and namespace
 * structures, and the helpers data operations use (layout cache, calls).
 */
#ifndef MAYFLY_CLIENT_INTERNAL_H
#define MAYFLY_CLIENT_INTERNAL_H

#include <glib.h>
#include <stdatomic.h>

#include "common/auth.h"
#include "common/conn.h"
#include "common/ctl.h"
#include "client/mayfly.h"
#include "client/seqs.h"

struct mayfly_client {
  mf_ctl_t *ctl;
  char *token; /* what every control connection logs in with; NULL: none */
  mf_pool_t *pool;
  int timeout_ms;
  GMutex lock;          /* mounted, renewer state */
  GHashTable *mounted;  /* path -> mf_mount_t: namespaces being renewed */
  GThread *renewer;
  GCond renew_cond;
  int stopping;
  mf_seqs_t seqs; /* the client id and write sequence numbers (replicated namespaces) */
};

/* A path being renewed: how many handles have it mounted, and its lease. */
typedef struct mf_mount {
  int handles;
  int64_t lease_ms;
} mf_mount_t;

/* One block of a partition as requests address it: its memory server, its
 * place there and the capability sent with every request for it. */
typedef struct mf_member {
  char address[64];
  int32_t index;
  int64_t generation;
  uint16_t cap_len; /* 0 (no cluster key) or MF_CAP_SIZE */
  uint8_t cap[MF_CAP_SIZE];
} mf_member_t;

/* A cached partition. A replicated one (a namespace created with R > 1) is a
 * chain of blocks: writes go to its head, reads to its tail (the last
 * member). Otherwise head is the partition's one block and tail a copy of
 * it, so picking the member for an operation costs no branch on R. */
typedef struct mf_part {
  mf_member_t head;
  mf_member_t tail;
  int64_t block_size;
  int64_t lo, hi;
  int lost; /* the directory says its data is gone: MAYFLY_ELOST without asking */
  int replicated; /* a chain (writes carry sequence records; chain errors are retried) */
  int replicas;   /* R wanted (1 when not replicated) */
  int members;    /* blocks in the chain now (1 when not replicated) */
  int64_t chain_version;
} mf_part_t;

/* The member a request with opcode goes to: the tail for reads, else the
 * head. */
const mf_member_t *mf_part_member(const mf_part_t *p, uint8_t opcode);

struct mayfly_ns {
  mayfly_client_t *client;
  char *path;
  mayfly_kind_t kind;
  int64_t lease_ms;
  GRWLock lock;     /* the layout below */
  int64_t version;
  mf_part_t *parts; /* sorted by lo */
  size_t nparts;
  /* When the layout's capabilities are due for a refresh (monotonic us: 3/4
   * of the shortest one's lifetime after the layout arrived); 0 when it has
   * none. Read without the lock (atomic); the thread that moves it on by
   * compare-and-swap does the refresh (mf_ns_caps_fresh). */
  _Atomic int64_t cap_refresh_us;
  GMutex append_lock;
  int64_t queue_head; /* lo of the first queue segment not known to be drained */
  /* When the layout was last refreshed because a call to a replicated
   * partition failed (monotonic us; see mf_ns_chain_refresh). */
  _Atomic int64_t chain_refresh_us;
};

/* Replaces the cached layout with the directory's. */
int mf_ns_refresh(mayfly_ns_t *ns);

/* Asks the directory for a block covering [lo, hi) (idempotent) and caches
 * the new layout. */
int mf_ns_grow(mayfly_ns_t *ns, int64_t lo, int64_t hi);

/* Refreshes the layout first when its capabilities are due (see
 * cap_refresh_us): one thread refreshes, the others go on with the current
 * capabilities, which stay valid for a quarter of their lifetime. Costs one
 * atomic read when the layout has no capabilities, else a clock read too.
 * Called by the data operations that pick partitions for several calls at
 * once (batches, file ranges); mf_call_one makes the same check with the
 * clock read it takes anyway. */
void mf_ns_caps_fresh(mayfly_ns_t *ns);

/* Whether a call answered rc is to be redone after a layout refresh because
 * a memory server refused its capability: the first MAYFLY_EPERM of an
 * operation (*tried is its flag, 0 at the start) refreshes the layout and
 * answers 1; a second one, or a failed refresh, answers 0. */
int mf_ns_perm_retry(mayfly_ns_t *ns, int rc, int *tried);

/* Copies the partition whose range holds `key` (kv slot, file offset) into
 * *out; returns 0 or MAYFLY_EMOVED when none does. */
int mf_ns_find(mayfly_ns_t *ns, int64_t key, mf_part_t *out);

/* Fills the addressing fields of a call for partition p (the member
 * mf_part_member picks for opcode), its capability included, and sets its
 * reply_max to 0 (a caller expecting a payload raises it). A write to a
 * replicated partition also gets a sequence record: a new seq the first time
 * the call is targeted, the same one (with a fresh acked) every later time,
 * so a call struct reused for the retries of one operation keeps its seq.
 * End every targeted call with mf_call_end. p must stay in place until the
 * call is started. */
void mf_call_target(mayfly_ns_t *ns, mf_call_t *call, uint8_t opcode, const mf_part_t *p);

/* Gives back the seq of a call's sequence record, if it has one (the
 * operation has its final answer, or gave up). Idempotent; accepts a call
 * that was never targeted (zeroed). */
void mf_call_end(mayfly_ns_t *ns, mf_call_t *call);
void mf_calls_end(mayfly_ns_t *ns, mf_call_t *calls, size_t n);

/* Whether rc, the answer of a call to a replicated partition, is a chain
 * error: the chain may be reconfiguring (a member died, the head moved), so
 * the call is sent again after a layout refresh: MAYFLY_EIO, ECONNREFUSED,
 * ETIMEDOUT, EMOVED (not a drained queue segment's: WIRE_F_SEALED) and
 * ESERVERDOWN. */
int mf_chain_error(const mf_call_t *call, int rc);

/* After a call to a replicated partition failed with a chain error:
 * refreshes the layout, at most once per 50 ms per namespace (a thread that
 * comes sooner sleeps until then, never past end_us; one that finds another
 * thread refreshed while it slept uses that layout). */
void mf_ns_chain_refresh(mayfly_ns_t *ns, int64_t end_us);

/* Redoes the calls (calls[i] made for parts[i], already waited for) of
 * replicated partitions that failed with a chain error: after a paced
 * refresh, each goes again, with its sequence record, to the partition now
 * holding parts[i].lo (parts[i] is updated), calls to one server together in
 * their order, until each has another answer or end_us passes (then a call
 * still failing with MAYFLY_EMOVED gets MAYFLY_ETIMEDOUT). A partition whose
 * range changed (a split or merge) or that is gone gives MAYFLY_EMOVED at
 * once: the caller finds the new one. Each call's status holds its answer;
 * the seqs of the calls that succeeded are ended (mf_call_end). */
void mf_calls_chain_redo(mayfly_ns_t *ns, mf_part_t *parts, mf_call_t *const *calls, size_t n,
                         int64_t end_us);

/* Starts calls[i] (targeted at parts[i]) in parallel and waits for all,
 * within the client's timeout; calls of replicated partitions that fail with
 * a chain error are redone (mf_calls_chain_redo) within that timeout, each
 * attempt bounded by a second. A lost partition's call gets MAYFLY_ELOST
 * without being sent. rcs[i] receives each result (the call's status). */
void mf_calls_run(mayfly_ns_t *ns, mf_part_t *parts, mf_call_t *calls, size_t n, int *rcs);

/* The most payload a reply about one block can carry (a kv value or a queue
 * item): the partition's block size. */
uint32_t mf_block_reply_max(const mf_part_t *p);

/* A replicated call's attempt is bounded by this (plus a waiting pop's
 * wait), so a member cut off without closing its sockets is given up on
 * soon and the chain's new layout tried. */
#define MF_CHAIN_ATTEMPT_US G_USEC_PER_SEC

/* MAYFLY_ELOST (with a message for mayfly_last_error) when p is lost, else 0. */
int mf_part_lost(mayfly_ns_t *ns, const mf_part_t *p);

/* Starts and waits for one call, all of it within the client's timeout plus
 * extra_ms (MAYFLY_ELOST at once for a lost partition; when the server
 * answers MAYFLY_ELOST the layout is refreshed). Capabilities due for a
 * refresh are refreshed first (*p then carries the block's new one). A call
 * refused with
 * MAYFLY_EPERM (its capability expired or was replaced) refreshes the layout
 * and is sent once more with the new capability of the same block (*p is
 * updated); MAYFLY_EMOVED when the block is no longer there.
 *
 * A replicated partition's call that fails with a chain error
 * (mf_chain_error) is sent again, with the same sequence record, after a
 * paced refresh (mf_ns_chain_refresh), to the partition of the same range
 * in the new layout (*p is updated), until the timeout; each attempt is
 * bounded by a second (plus extra_ms, a waiting pop's wait, which each
 * attempt asks again for what is left of it). MAYFLY_EMOVED when the range
 * changed (the caller finds the key's new partition); a chain still failing
 * at the timeout gives its last error (MAYFLY_ETIMEDOUT for EMOVED). */
int mf_call_one(mayfly_ns_t *ns, mf_part_t *p, mf_call_t *call, int64_t extra_ms);

/* Layout calls of the directory (client.c): each answers with the
 * namespace's layout in *out (partitions and layout_version only; free with
 * mayfly_stat_free). get_layout reads it; add_block grows the namespace by
 * a block for [lo, hi) (idempotent for a given range); release_range gives
 * back the block of the partition starting at lo, if it is still there. */
int mf_get_layout(mayfly_client_t *c, const char *path, mayfly_stat_t **out);
int mf_add_block(mayfly_client_t *c, const char *path, int64_t lo, int64_t hi,
                 mayfly_stat_t **out);
int mf_release_range(mayfly_client_t *c, const char *path, int64_t lo, mayfly_stat_t **out);

/* Drops a file's blocks past `size` at the directory (layout in *out). */
int mf_truncate(mayfly_client_t *c, const char *path, int64_t size, mayfly_stat_t **out);

/* Sets the namespace's layout from a stat result. */
void mf_ns_set_layout(mayfly_ns_t *ns, const mayfly_stat_t *st);

#endif /* MAYFLY_CLIENT_INTERNAL_H */
