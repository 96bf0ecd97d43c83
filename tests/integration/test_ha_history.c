/*
 * The HA tests' own tools, checked on their own (issue 14).
 *
 * - The history checker (history.h) against one plain in-memory directory
 *   and three memory servers, no fault: a clean run has no violation and no
 *   error; then the tree and the data are changed behind the clients' backs
 *   (an acknowledged namespace removed, a namespace nobody created, a value
 *   overwritten, a failed call logged outside any fault window) and the
 *   checker reports each.
 * - The rig's etcd helpers (ha.h) on a three-member etcd: the etcd leader is
 *   found, killed, and another member is found leading. Skipped (with a
 *   message, not failed) when etcd is not installed.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "ha.h"
#include "history.h"
#include "mf_test.h"

static void test_checker(void) {
  mf_daemon_t *dir = mf_start_directory(NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
  mf_daemon_t *ms[3];
  for (int i = 0; i < 3; i++) {
    ms[i] = mf_start_memserver(dir, 64, "64KiB", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ms[i]);
  }

  mf_hist_t *hist = mf_hist_new();
  mf_load_t *load = mf_load_start(hist, dir->address, 6, 2, 20, 5000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(load);
  mf_sleep_ms(1500);
  CU_ASSERT_EQUAL_FATAL(mf_load_pause(load), 0);
  int64_t ops = mf_load_ops(load);
  mf_sleep_ms(200);
  MF_ASSERT_EQ(mf_load_ops(load), ops); /* parked means parked */
  int64_t creates, removes, puts, errors;
  mf_hist_counts(hist, &creates, &removes, &puts, &errors);
  fprintf(stderr, "ha_history: %lld creates, %lld removes, %lld puts, %lld errors\n", (long long)creates,
          (long long)removes, (long long)puts, (long long)errors);
  CU_ASSERT(creates > 20 && removes > 10 && puts > 20);
  MF_ASSERT_EQ(errors, 0);

  mayfly_options_t o = {.timeout_ms = 5000};
  mayfly_client_t *c = NULL;
  CU_ASSERT_EQUAL_FATAL(mayfly_connect(dir->address, &o, &c), 0);
  MF_ASSERT_EQ(mf_hist_check_tree(hist, c), 0);
  MF_ASSERT_EQ(mf_hist_check_data(hist, c), 0);
  MF_ASSERT_EQ(mf_hist_check_errors(hist), 0);

  /* The load goes on and the checks still pass at a later point. */
  mf_load_resume(load);
  mf_sleep_ms(800);
  CU_ASSERT_EQUAL_FATAL(mf_load_pause(load), 0);
  CU_ASSERT(mf_load_ops(load) > ops);
  MF_ASSERT_EQ(mf_hist_check_tree(hist, c), 0);
  MF_ASSERT_EQ(mf_hist_check_data(hist, c), 0);

  /* Behind the clients' backs: one acknowledged leaf goes, a phantom comes. */
  mayfly_stat_t **kids = NULL;
  size_t n = 0;
  CU_ASSERT_EQUAL_FATAL(mayfly_list(c, "/h/t0", &kids, &n), 0);
  CU_ASSERT_FATAL(n > 0);
  MF_ASSERT_EQ(mayfly_remove(c, kids[0]->path, 0), 0);
  mayfly_stat_list_free(kids, n);
  MF_ASSERT_EQ(mf_hist_check_tree(hist, c), 1);
  MF_ASSERT_EQ(mayfly_mkdir(c, "/h/t1/phantom", 0), 0);
  MF_ASSERT_EQ(mf_hist_check_tree(hist, c), 2);

  /* An acknowledged value overwritten; a key nobody put is not looked at. */
  mayfly_ns_t *ns = NULL;
  CU_ASSERT_EQUAL_FATAL(mayfly_mount(c, "/h/w0", MAYFLY_KIND_KV, NULL, &ns), 0);
  MF_ASSERT_EQ(mayfly_kv_put(ns, "pre3", 4, "bogus", 5), 0);
  MF_ASSERT_EQ(mayfly_kv_put(ns, "nobody", 6, "x", 1), 0);
  MF_ASSERT_EQ(mf_hist_check_data(hist, c), 1);
  MF_ASSERT_EQ(mayfly_kv_delete(ns, "pre4", 4), 0);
  MF_ASSERT_EQ(mf_hist_check_data(hist, c), 2);
  mayfly_unmount(ns);
  mayfly_disconnect(c);

  /* A failed call outside every fault window is reported; inside one, not.
   * The directory stopped: the threads' next calls time out. */
  mf_load_resume(load);
  mf_pause(dir);
  int64_t t_stop = mf_ha_now_ms();
  mf_sleep_ms(5500);
  mf_resume(dir);
  CU_ASSERT_EQUAL_FATAL(mf_load_pause(load), 0);
  mf_hist_counts(hist, &creates, &removes, &puts, &errors);
  fprintf(stderr, "ha_history: %lld failed calls while the directory was stopped\n", (long long)errors);
  CU_ASSERT(errors > 0);
  CU_ASSERT(mf_hist_check_errors(hist) > 0);
  mf_hist_allow_errors(hist, t_stop, mf_ha_now_ms());
  MF_ASSERT_EQ(mf_hist_check_errors(hist), 0);

  mf_load_stop(load);
  mf_hist_free(hist);
  for (int i = 0; i < 3; i++) mf_kill(ms[i]);
  mf_kill(dir);
}

static void test_etcd_rig(void) {
  mf_ha_t h = {0};
  int rc = mf_ha_start_etcd(&h, 3);
  if (rc == MF_ETCD_SKIP) {
    fprintf(stderr, "ha_history: etcd is not installed: the etcd part is skipped\n");
    return;
  }
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  int el = -1;
  for (int64_t until = mf_ha_now_ms() + 10000; el < 0 && mf_ha_now_ms() < until; mf_sleep_ms(100)) {
    el = mf_ha_etcd_leader(&h);
  }
  CU_ASSERT_FATAL(el >= 0);
  mf_etcd_proc_kill(&h.etcd, el, SIGKILL);
  int next = -1;
  int64_t t0 = mf_ha_now_ms();
  for (int64_t until = t0 + 15000; next < 0 && mf_ha_now_ms() < until; mf_sleep_ms(100)) {
    next = mf_ha_etcd_leader(&h);
  }
  fprintf(stderr, "ha_history: etcd leader %d killed, member %d leads after %lld ms\n", el, next,
          (long long)(mf_ha_now_ms() - t0));
  CU_ASSERT(next >= 0 && next != el);
  mf_ha_stop(&h);
}

static const mf_test_t tests[] = {
    {"the history checker passes a clean run and catches loss, phantoms, bad data, errors", test_checker},
    {"the rig finds etcd's leader, and its successor", test_etcd_rig},
    {NULL, NULL}};

int main(void) {
  return mf_test_run("ha_history", NULL, NULL, tests);
}
