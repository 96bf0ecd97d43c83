/*
 * libmayfly internals shared by its modules: the client and namespace
 * structures, and the helpers data operations use (layout cache, calls).
 */
#ifndef MAYFLY_CLIENT_INTERNAL_H
#define MAYFLY_CLIENT_INTERNAL_H

#include <glib.h>

#include "common/conn.h"
#include "common/ctl.h"
#include "client/mayfly.h"

struct mayfly_client {
  mf_ctl_t *ctl;
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
  GMutex append_lock;
  int64_t queue_head; /* lo of the first queue segment not known to be drained */
};

/* Replaces the cached layout with the directory's. */
int mf_ns_refresh(mayfly_ns_t *ns);

/* Asks the directory for a block covering [lo, hi) (idempotent) and caches
 * the new layout. */
int mf_ns_grow(mayfly_ns_t *ns, int64_t lo, int64_t hi);

/* Copies the partition whose range holds `key` (kv slot, file offset) into
 * *out; returns 0 or MAYFLY_EMOVED when none does. */
int mf_ns_find(mayfly_ns_t *ns, int64_t key, mf_part_t *out);

/* Fills the addressing fields of a call for partition p (and sets its
 * reply_max to 0: a caller expecting a payload raises it). */
void mf_call_target(mf_call_t *call, uint8_t opcode, const mf_part_t *p);

/* The most payload a reply about one block can carry (a kv value or a queue
 * item): the partition's block size. */
uint32_t mf_block_reply_max(const mf_part_t *p);

/* Absolute deadline for a call started now, plus extra milliseconds. */
int64_t mf_deadline(const mayfly_client_t *c, int64_t extra_ms);

/* Starts and waits for one call, all of it within the client's timeout plus
 * extra_ms. */
int mf_call_one(mayfly_ns_t *ns, const mf_part_t *p, mf_call_t *call, int64_t extra_ms);

/* Drops a file's blocks past `size` at the directory (layout in *out). */
int mf_truncate(mayfly_client_t *c, const char *path, int64_t size, mayfly_stat_t **out);

/* Sets the namespace's layout from a stat result. */
void mf_ns_set_layout(mayfly_ns_t *ns, const mayfly_stat_t *st);

#endif /* MAYFLY_CLIENT_INTERNAL_H */
