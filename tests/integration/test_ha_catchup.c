/*
 * Standby catch-up, snapshots and compaction under load (issue 14): one
 * etcd, directories of one cluster with --snapshot-records 200 (a snapshot,
 * log deletion and etcd compaction every 200 records), three memory servers,
 * 8 threads creating and removing namespaces and 2 writing kv data
 * (history.h).
 *
 * Part 1: a standby S is stopped (SIGSTOP) while the leader writes more than
 * two snapshots' worth of records and takes a snapshot past S's position;
 * S continues and catches up (the applied_seq it reports reaches the
 * leader's committed_seq of that moment). Then the third directory and the
 * leader are killed, so S must lead: it does, and the history holds.
 *
 * Part 2: a fourth directory, in the address list from the start but
 * started only now, after several more snapshots, catches up from the
 * snapshot; then S is killed and the late directory must lead: it does,
 * with the tree and data intact and no error outside the fault windows.
 *
 * Exits 77 (skipped) when etcd is not installed.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "ha.h"
#include "history.h"
#include "mf_test.h"

#define SNAP_RECORDS 200

static mf_ha_t H;

/* Waits until the leader's snapshot covers more than `past` and its log has
 * moved `records` beyond it; returns the leader's view then (snapshot 0:
 * not within timeout_ms). */
static mf_ha_view_t wait_log(int leader, int64_t past, int64_t records, int timeout_ms) {
  mf_ha_view_t v = {0};
  int64_t until = mf_ha_now_ms() + timeout_ms;
  while (mf_ha_now_ms() < until) {
    if (mf_ha_view(&H, leader, 1000, &v) == 0 && v.snapshot > past && v.committed >= past + records) return v;
    mf_sleep_ms(200);
  }
  fprintf(stderr, "ha_catchup: the leader's log did not reach a snapshot past %lld and %lld records "
                  "beyond it (committed %lld, snapshot %lld)\n",
          (long long)past, (long long)records, (long long)v.committed, (long long)v.snapshot);
  v.snapshot = 0;
  return v;
}

/* Waits until directory i reports applied_seq >= seq; returns the ms it
 * took, or -1. */
static int64_t wait_applied(int i, int64_t seq, int timeout_ms) {
  int64_t t0 = mf_ha_now_ms();
  mf_ha_view_t v = {0};
  while (mf_ha_now_ms() < t0 + timeout_ms) {
    if (mf_ha_view(&H, i, 1000, &v) == 0 && v.applied >= seq) return mf_ha_now_ms() - t0;
    mf_sleep_ms(100);
  }
  fprintf(stderr, "ha_catchup: directory %d applied %lld (role %s), not %lld, within %d ms\n", i,
          (long long)v.applied, v.role, (long long)seq, timeout_ms);
  return -1;
}

/* Kills `victim`, asserts `heir` leads, and allows errors until it serves. */
static void hand_over(mf_hist_t *hist, int victim, int heir) {
  int64_t t_kill, t_lead, t_serve;
  int next = mf_ha_failover(&H, victim, 20000, &t_kill, &t_lead, &t_serve);
  MF_ASSERT_EQ(next, heir);
  CU_ASSERT(t_serve >= 0);
  mf_hist_allow_errors(hist, t_kill, t_serve >= 0 ? t_serve : t_kill + 20000);
}

static void test_catchup(void) {
  /* Four addresses, three directories now; the fourth starts in part 2. */
  H.extra[0] = "--snapshot-records";
  H.extra[1] = "200";
  CU_ASSERT_EQUAL_FATAL(mf_ha_plan_dirs(&H, 4), 0);
  for (int i = 0; i < 3; i++) CU_ASSERT_EQUAL_FATAL(mf_ha_restart(&H, i), 0);
  int leader = mf_ha_wait_leader(&H, 0, 20000);
  CU_ASSERT_FATAL(leader >= 0);
  int s = (leader + 1) % 3, third = (leader + 2) % 3;
  CU_ASSERT_EQUAL_FATAL(mf_ha_start_memservers(&H, 3, 64, "64KiB"), 0);

  mf_hist_t *hist = mf_hist_new();
  mf_load_t *load = mf_load_start(hist, H.list, 8, 2, 30, 10000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(load);
  mf_sleep_ms(1500);

  /* Part 1: S stopped while the log runs past a snapshot. */
  mf_ha_view_t sv;
  CU_ASSERT_EQUAL_FATAL(mf_ha_view(&H, s, 1000, &sv), 0);
  fprintf(stderr, "ha_catchup: stopping standby %d at applied %lld (role %s)\n", s, (long long)sv.applied, sv.role);
  CU_ASSERT_STRING_EQUAL(sv.role, "standby");
  CU_ASSERT_FATAL(sv.applied >= 0);
  int64_t t_stop = mf_ha_now_ms();
  mf_ha_signal(&H, s, SIGSTOP);
  mf_ha_view_t lv = wait_log(leader, sv.applied, 2 * SNAP_RECORDS + 50, 30000);
  CU_ASSERT_FATAL(lv.snapshot > 0);
  fprintf(stderr, "ha_catchup: while it was stopped (%lld ms) the leader committed %lld, snapshot at %lld\n",
          (long long)(mf_ha_now_ms() - t_stop), (long long)lv.committed, (long long)lv.snapshot);
  mf_ha_signal(&H, s, SIGCONT);
  int64_t took = wait_applied(s, lv.committed, 20000);
  CU_ASSERT(took >= 0);
  fprintf(stderr, "ha_catchup: standby %d caught up to %lld in %lld ms\n", s, (long long)lv.committed,
          (long long)took);

  /* S must lead: the third directory goes first, then the leader. */
  mf_ha_kill(&H, third);
  hand_over(hist, leader, s);
  mf_sleep_ms(2000);
  mf_ha_check_all(&H, hist, load, "ha_catchup", "after standby S took over");

  /* Part 2: more snapshots, then a directory that was never up starts. */
  CU_ASSERT_EQUAL_FATAL(mf_ha_view(&H, s, 1000, &lv), 0);
  mf_ha_view_t lv2 = wait_log(s, lv.snapshot + 2 * SNAP_RECORDS, SNAP_RECORDS, 30000);
  CU_ASSERT_FATAL(lv2.snapshot > 0);
  int late = 3;
  CU_ASSERT_EQUAL_FATAL(mf_ha_restart(&H, late), 0);
  took = wait_applied(late, lv2.committed, 20000);
  CU_ASSERT(took >= 0);
  fprintf(stderr, "ha_catchup: the late directory caught up to %lld (snapshot %lld) in %lld ms\n",
          (long long)lv2.committed, (long long)lv2.snapshot, (long long)took);
  /* It says "loading" while it reads the snapshot and log (again, when a
   * compaction overtook its first load), then "standby". */
  mf_ha_view_t latev = {0};
  for (int64_t until = mf_ha_now_ms() + 10000; mf_ha_now_ms() < until; mf_sleep_ms(100)) {
    if (mf_ha_view(&H, late, 1000, &latev) == 0 && strcmp(latev.role, "standby") == 0) break;
  }
  CU_ASSERT_STRING_EQUAL(latev.role, "standby");

  hand_over(hist, s, late);
  mf_sleep_ms(2000);
  mf_ha_check_all(&H, hist, load, "ha_catchup", "after the late directory took over");

  mf_load_stop(load);
  mf_hist_free(hist);
  mf_ha_stop(&H);
}

static const mf_test_t tests[] = {
    {"a stopped standby and a late one catch up past snapshots, then lead", test_catchup},
    {NULL, NULL}};

int main(void) {
  int rc = mf_ha_start_etcd(&H, 1);
  if (rc == MF_ETCD_SKIP) return 77;
  if (rc != 0) {
    fprintf(stderr, "ha_catchup: etcd did not start\n");
    return 1;
  }
  return mf_test_run("ha_catchup", NULL, NULL, tests);
}
