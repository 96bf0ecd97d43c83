/*
 * The history checker of the HA tests (issue 14), and the workload that
 * writes the history.
 *
 * Workload: `ntree` namespace threads, each with a client of its own (the
 * directory address list, the library's own leader following and retries),
 * create and remove leaves under a subtree of their own, /h/t<i>/n<k>
 * (directories and pinned one-block kv namespaces by turns), and `nwriters`
 * data threads put values into pinned kv namespaces /h/w<i> created before
 * the run (which also gets keys put before the run). Every thread logs each
 * operation it made: what, on which path (key, value), when it started and
 * ended (ms, mf_ha_now_ms's clock), and what it returned.
 *
 * Checks, after the faults with every thread paused:
 * - replay: each path's operations in their owner's order, from "absent",
 *   through "present" (acknowledged create), "absent" (acknowledged remove)
 *   and "unknown" (a failed call: either). An answer that contradicts a
 *   known state (EEXIST on a path acknowledged absent, ENOENT on one
 *   acknowledged present, success of a create over a present path) is a
 *   violation: a lost acknowledgement or a phantom seen during the run.
 * - the tree, listed and stat'ed through the service: every path whose
 *   replay ends "present" is there, none that ends "absent" is, and no path
 *   is there that no thread created (a phantom);
 * - the data: every key's value read back is its last acknowledged put or a
 *   failed put after it (absent only when no put was ever acknowledged);
 * - errors: a failed call (rc other than 0 or a definite answer to an
 *   unknown state) is allowed only when it ended inside a fault window (from
 *   a fault until the new leader was up); any other is a failure ("no caller
 *   saw an error after the new leader was up").
 * Each check prints what it found wrong (the first few of each kind) and
 * returns how many violations it found.
 */
#ifndef MAYFLY_TEST_HISTORY_H
#define MAYFLY_TEST_HISTORY_H

#include <stdint.h>

#include "client/mayfly.h"

typedef struct mf_hist mf_hist_t;
typedef struct mf_load mf_load_t;

mf_hist_t *mf_hist_new(void);
void mf_hist_free(mf_hist_t *h);

/* Errors that end in [from_ms, to_ms] are allowed (a fault: from the kill or
 * stop until the new leader was seen up). */
void mf_hist_allow_errors(mf_hist_t *h, int64_t from_ms, int64_t to_ms);

/* Failed calls outside every allowed window (printed). */
int mf_hist_check_errors(mf_hist_t *h);

/* Replays every path's log and compares the tree under /h, read through c,
 * with it (printed). Returns the number of violations. */
int mf_hist_check_tree(mf_hist_t *h, mayfly_client_t *c);

/* Reads every key ever put through c (mounting /h/w<i> afresh) and compares
 * it with the log. Returns the number of violations. */
int mf_hist_check_data(mf_hist_t *h, mayfly_client_t *c);

/* Counts: acknowledged creates and removes, puts, failed calls. */
void mf_hist_counts(mf_hist_t *h, int64_t *creates, int64_t *removes, int64_t *puts,
                    int64_t *errors);

/* Creates /h/t<i> (i < ntree) and the pinned kv namespaces /h/w<i> (i <
 * nwriters), puts `prefill` keys into each (logged), then starts the threads
 * with clients of `directory` (a comma list) of call timeout timeout_ms.
 * Returns NULL (printed why) when the setup failed. */
mf_load_t *mf_load_start(mf_hist_t *h, const char *directory, int ntree, int nwriters,
                         int prefill, int timeout_ms);

/* Parks every thread between two calls; returns 0 once all are parked, -1
 * after 30 s (a call hung past its timeout). */
int mf_load_pause(mf_load_t *l);
void mf_load_resume(mf_load_t *l);

/* Operations completed so far (all threads). */
int64_t mf_load_ops(mf_load_t *l);

/* Stops and joins the threads, closes their clients, frees l. */
void mf_load_stop(mf_load_t *l);

#endif /* MAYFLY_TEST_HISTORY_H */
