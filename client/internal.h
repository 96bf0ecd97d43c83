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
};

/* A path being renewed: how many handles have it mounted, and its lease. */
typedef struct mf_mount {
  int handles;
  int64_t lease_ms;
} mf_mount_t;

/* A cached partition. */
typedef struct mf_part {
  char address[64];
  int32_t index;
  int64_t generation;
  int64_t block_size;
  int64_t lo, hi;
  int lost; /* the directory says its data is gone: MAYFLY_ELOST without asking */
  uint16_t cap_len; /* 0 (no cluster key) or MF_CAP_SIZE */
  uint8_t cap[MF_CAP_SIZE]; /* the block's capability, sent with each request */
} mf_part_t;

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

/* Fills the addressing fields of a call for partition p, its capability
 * included (and sets its reply_max to 0: a caller expecting a payload raises
 * it). p must stay in place until the call is started. */
void mf_call_target(mf_call_t *call, uint8_t opcode, const mf_part_t *p);

/* The most payload a reply about one block can carry (a kv value or a queue
 * item): the partition's block size. */
uint32_t mf_block_reply_max(const mf_part_t *p);

/* Absolute deadline for a call started now, plus extra milliseconds. */
int64_t mf_deadline(const mayfly_client_t *c, int64_t extra_ms);

/* MAYFLY_ELOST (with a message for mayfly_last_error) when p is lost, else 0. */
int mf_part_lost(mayfly_ns_t *ns, const mf_part_t *p);

/* Starts a call for partition p, as mf_call_start does (to be waited for
 * with mf_call_wait); a lost partition's call is done at once with
 * MAYFLY_ELOST and nothing is sent. */
int mf_call_start_part(mayfly_ns_t *ns, const mf_part_t *p, mf_call_t *call, int64_t deadline_us);

/* Starts and waits for one call, all of it within the client's timeout plus
 * extra_ms (MAYFLY_ELOST at once for a lost partition; when the server
 * answers MAYFLY_ELOST the layout is refreshed). Capabilities due for a
 * refresh are refreshed first (*p then carries the block's new one). A call
 * refused with
 * MAYFLY_EPERM (its capability expired or was replaced) refreshes the layout
 * and is sent once more with the new capability of the same block (*p is
 * updated); MAYFLY_EMOVED when the block is no longer there. */
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
