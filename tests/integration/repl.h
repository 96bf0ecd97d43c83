/*
 * Helpers of the replication tests (issue 12): replicated namespaces made and
 * inspected through the directory's control API (CreateOptions.replicas,
 * Partition.chain/state/chain_version, the chain counters of Stats: all in
 * common/control.thrift), and a load of writers and readers on kv, queue and
 * file namespaces that records every acknowledged write and checks, during
 * and after the run, that each one is readable and that no queue item is
 * popped twice or lost.
 *
 * Only the IDL and the public libmayfly calls of today are used, so this
 * compiles before the memory-server, directory and client parts of the issue
 * are merged; it passes only once they are.
 */
#ifndef MAYFLY_TEST_REPL_H
#define MAYFLY_TEST_REPL_H

#include <stddef.h>
#include <stdint.h>

#include "client/mayfly.h"

#define MF_REPL_MAX 5 /* NS_CHAIN_MAX */

typedef struct mf_repl_member {
  int32_t server_id;
  int32_t block_index;
  int64_t generation;
  char address[64];
  char zone[32]; /* its server's --zone ("" when none or not said) */
} mf_repl_member_t;

typedef struct mf_repl_part {
  int64_t lo, hi;
  int replicas;               /* R wanted (1 when the directory says nothing) */
  int n;                      /* members, head first (the head alone when R = 1) */
  mf_repl_member_t m[MF_REPL_MAX];
  char state[16];             /* "ok", "degraded", "copying", "lost" ("" when not said) */
  int64_t chain_version;
  int lost;
} mf_repl_part_t;

typedef struct mf_repl_layout {
  int64_t version;
  size_t n;
  mf_repl_part_t *p;
} mf_repl_layout_t;

typedef struct mf_repl_stats {
  int64_t chain_failovers, rereplications, rereplicated_bytes, partitions_degraded;
  int64_t splits, rollbacks;
} mf_repl_stats_t;

/* Creates `path` (and its parents) of `kind` with `replicas` (0: the
 * directory's default), `blocks` initial blocks and, for kv, the split
 * watermark `high_watermark` (0: default). Returns 0 or a MAYFLY_E* code;
 * why (may be NULL) gets the directory's message. */
int mf_repl_create(const char *dir, const char *path, mayfly_kind_t kind, int replicas, int blocks,
                   int high_watermark, char *why, size_t len);

/* The layout of `path` with every partition's chain. Free with
 * mf_repl_layout_clear. Returns 0 or a MAYFLY_E* code. */
int mf_repl_layout(const char *dir, const char *path, mf_repl_layout_t *out);
void mf_repl_layout_clear(mf_repl_layout_t *l);

/* Prints the layout, one line per partition ("[lo,hi) state v: id:block@addr ..."). */
void mf_repl_layout_print(const char *label, const mf_repl_layout_t *l);

/* The directory's chain counters. Returns 0 or a MAYFLY_E* code. */
int mf_repl_stats(const char *dir, mf_repl_stats_t *out);

/* Whether every partition of l is a healthy chain of r members: state "ok"
 * (when said), r members on r distinct hosts (the address's host part), no
 * member at an address in gone[0..ngone). 1 yes; 0 no, with the first
 * reason in why. */
int mf_repl_chains_ok(const mf_repl_layout_t *l, int r, const char *const *gone, int ngone,
                      char *why, size_t len);

/* Polls the layouts of paths[0..npaths) until mf_repl_chains_ok holds for
 * all of them, up to timeout_ms. Returns the milliseconds it took, or -1
 * (why says what was still wrong). */
int64_t mf_repl_wait_chains(const char *dir, const char *const *paths, int npaths, int r,
                            const char *const *gone, int ngone, int timeout_ms, char *why,
                            size_t len);

/* Whether any partition of `path` has a member at `address`. */
int mf_repl_uses(const char *dir, const char *path, const char *address);

typedef struct mf_repl_server {
  int32_t id;
  char address[64];
  int up;
  int32_t blocks_used;
} mf_repl_server_t;

/* The directory's view of one server, found by `address` (when not NULL)
 * or by id. Returns 0 or a MAYFLY_E* code (MAYFLY_ENOENT: not listed). */
int mf_repl_server(const char *dir, int32_t id, const char *address, mf_repl_server_t *out);

/* ---- the load ---- */

typedef struct mf_load mf_load_t;

/* Starts `writers` writer threads and `readers` reader threads, each with a
 * client of its own (call timeout timeout_ms). Each writer round puts a kv
 * key, pushes a queue item and writes a 1 KiB file record at an offset of
 * its own (any path may be NULL: that kind is left out; the namespaces must
 * exist, the file one with at least file_bytes); each reader round gets an
 * acknowledged key, pops an item (waiting up to 100 ms) and reads an
 * acknowledged record, checking it is the latest or newer. Every error is
 * counted and the first one kept. */
mf_load_t *mf_load_start(const char *dir, const char *kv, const char *queue, const char *file,
                         int64_t file_bytes, int writers, int readers, int timeout_ms);

/* Acknowledged writes so far (all kinds). */
int64_t mf_load_acked(mf_load_t *l);

/* How many puts of writer w were acknowledged; the key of its j-th put
 * (its queue items carry the same string). */
int64_t mf_load_kv_acked(mf_load_t *l, int w);
void mf_load_key(int w, int64_t j, char *buf, size_t len);

/* One more acknowledged item that someone else pushed to the load's queue
 * (it must be popped exactly once too). */
void mf_load_expect_item(mf_load_t *l, const char *item);

/* Stops the threads (each finishes its call) and joins them. */
void mf_load_stop(mf_load_t *l);

/* After mf_load_stop: reads back every acknowledged key and record, drains
 * the queue and checks each acknowledged item was popped exactly once.
 * Prints what it found. Returns the number of problems (0: all good),
 * counting the errors the threads saw. Frees l. */
int mf_load_verify(mf_load_t *l);

#endif /* MAYFLY_TEST_REPL_H */
