/*
 * Replicated namespaces (issue 12) on emulated hosts in network namespaces
 * (hosts.h, netns mode; needs root, else exits MF_HOSTS_SKIP = skipped):
 *
 *   cut   R = 2 over four hosts, four writers and four readers on kv, queue
 *         and file namespaces; the link of one host (the tail of the kv
 *         chain) is cut mid-run. No caller sees an error, re-replication
 *         restores R without it, and every acknowledged write is readable.
 *         Then (the load stopped, so that nothing new is placed on it) the
 *         host comes back (its server never stopped, so it is the
 *         same incarnation): its old blocks are dropped, and a client that
 *         still has the layout from before the cut reads the new value of a
 *         key, never the old one from the returned host (nothing served
 *         twice: no queue item popped twice either).
 *   kill  the kill -9 case of test_replication over the bridge.
 *
 * Needs the memory-server, directory and client parts of the issue: CMake
 * registers these tests once they are in the tree.
 */
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/mayfly.h"
#include "common/error.h"
#include "hosts.h"
#include "mf_test.h"
#include "repl.h"

#define HB_MS "200"
#define HB_TIMEOUT_MS 1500
#define CALL_TIMEOUT_MS 10000
#define MARGIN_MS 5000
#define RESTORE_TIMEOUT_MS 30000

static mf_hosts_t *cluster(int hosts) {
  char why[256] = "";
  mf_hosts_t *h = mf_hosts_new(MF_HOSTS_NETNS, hosts, why, sizeof why);
  if (h == NULL) {
    fprintf(stderr, "  hosts: %s\n", why);
    return NULL;
  }
  char timeout[16];
  snprintf(timeout, sizeof timeout, "%d", HB_TIMEOUT_MS);
  if (mf_hosts_start_directory(h, "--heartbeat-ms", HB_MS, "--heartbeat-timeout-ms", timeout,
                               NULL) != 0) {
    mf_hosts_free(h);
    return NULL;
  }
  for (int i = 0; i < hosts; i++) {
    if (mf_hosts_start_server(h, i, 24, "1MiB", NULL) != 0) {
      mf_hosts_free(h);
      return NULL;
    }
  }
  return h;
}

static int create_all(mf_hosts_t *h, const char *const *paths) {
  static const mayfly_kind_t kinds[] = {MAYFLY_KIND_KV, MAYFLY_KIND_QUEUE, MAYFLY_KIND_FILE};
  static const int blocks[] = {1, 1, 2};
  for (int i = 0; i < 3; i++) {
    char why[256] = "";
    int rc = mf_repl_create(h->dir->address, paths[i], kinds[i], 2, blocks[i], 0, why, sizeof why);
    if (rc != 0) {
      fprintf(stderr, "  create %s: %s: %s\n", paths[i], mayfly_strerror(rc), why);
      return rc;
    }
  }
  return 0;
}

static int chains_ok(mf_hosts_t *h, const char *const *paths, const char *const *gone,
                     int ngone, const char *label) {
  int all = 1;
  for (int i = 0; i < 3; i++) {
    mf_repl_layout_t l;
    if (mf_repl_layout(h->dir->address, paths[i], &l) != 0) return 0;
    char why[256] = "";
    int ok = mf_repl_chains_ok(&l, 2, gone, ngone, why, sizeof why);
    if (!ok) {
      fprintf(stderr, "  %s: %s: %s\n", label, paths[i], why);
      mf_repl_layout_print(paths[i], &l);
    }
    all &= ok;
    mf_repl_layout_clear(&l);
  }
  return all;
}

/* The host of the tail of the first partition of path. */
static int tail_host(mf_hosts_t *h, const char *path) {
  mf_repl_layout_t l;
  if (mf_repl_layout(h->dir->address, path, &l) != 0) return -1;
  int host = l.n > 0 ? mf_hosts_find(h, l.p[0].m[l.p[0].n - 1].address) : -1;
  mf_repl_layout_clear(&l);
  return host;
}

static void test_cut_link_then_host_back(void) {
  mf_hosts_t *h = cluster(4);
  CU_ASSERT_FATAL(h != NULL);
  const char *paths[] = {"/n/kv", "/n/q", "/n/file"};
  MF_ASSERT_EQ(create_all(h, paths), 0);
  CU_ASSERT(chains_ok(h, paths, NULL, 0, "before"));
  int victim = tail_host(h, paths[0]);
  CU_ASSERT_FATAL(victim >= 0);
  char gone[64];
  snprintf(gone, sizeof gone, "%s", mf_hosts_address(h, victim));
  const char *g[] = {gone};

  /* A client that reads a key from the victim (the tail) and then sits on
   * that layout through the whole failure. */
  mayfly_options_t o = {.timeout_ms = CALL_TIMEOUT_MS};
  mayfly_client_t *stale = NULL;
  MF_ASSERT_EQ(mayfly_connect(h->dir->address, &o, &stale), 0);
  mayfly_ns_t *skv = NULL;
  MF_ASSERT_EQ(mayfly_mount(stale, paths[0], MAYFLY_KIND_KV, NULL, &skv), 0);
  MF_ASSERT_EQ(mayfly_kv_put(skv, "the-key", 7, "old", 3), 0);
  void *v = NULL;
  size_t vl = 0;
  MF_ASSERT_EQ(mayfly_kv_get(skv, "the-key", 7, &v, &vl), 0);
  CU_ASSERT(vl == 3 && v != NULL && memcmp(v, "old", 3) == 0);
  mayfly_free(v);

  mf_load_t *load = mf_load_start(h->dir->address, paths[0], paths[1], paths[2], 2 << 20, 4, 4,
                                  CALL_TIMEOUT_MS);
  mf_sleep_ms(1500);
  int64_t before = mf_load_acked(load);
  CU_ASSERT(before > 0);
  mayfly_client_t *c = NULL;
  MF_ASSERT_EQ(mayfly_connect(h->dir->address, &o, &c), 0);
  mayfly_ns_t *kv = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, paths[0], MAYFLY_KIND_KV, NULL, &kv), 0);
  MF_ASSERT_EQ(mayfly_kv_put(kv, "probe", 5, "0", 1), 0);

  int64_t t_cut = mf_hosts_now_ms();
  MF_ASSERT_EQ(mf_hosts_cut(h, victim), 0);
  /* kv's chain loses its tail: a write waits for the reconfiguration. */
  int rc = mayfly_kv_put(kv, "probe", 5, "1", 1);
  int64_t first_write = mf_hosts_now_ms() - t_cut;
  MF_ASSERT_EQ(rc, 0);
  char why[256] = "";
  int64_t restored = mf_repl_wait_chains(h->dir->address, paths, 3, 2, g, 1, RESTORE_TIMEOUT_MS,
                                         why, sizeof why);
  int64_t restored_ms = restored >= 0 ? mf_hosts_now_ms() - t_cut : -1;
  fprintf(stderr, "  link of %s cut: first kv write after %lld ms (heartbeat timeout %d ms), "
                  "R = 2 restored after %lld ms%s%s\n",
          gone, (long long)first_write, HB_TIMEOUT_MS, (long long)restored_ms,
          restored < 0 ? ": " : "", restored < 0 ? why : "");
  CU_ASSERT(restored >= 0);
  /* The process behind the cut link runs on. */
  CU_ASSERT(h->ms[victim] != NULL && mf_alive(h->ms[victim]));
  MF_ASSERT_EQ(mayfly_kv_put(kv, "the-key", 7, "new", 3), 0);
  mf_sleep_ms(500); /* load on the restored chains */
  /* Stopped before the host comes back, so that no split or growth may
   * place a new chain on it: every block it holds then is an old one. */
  mf_load_stop(load);
  CU_ASSERT(mf_load_acked(load) > before);

  /* The host comes back. */
  MF_ASSERT_EQ(mf_hosts_restore(h, victim), 0);
  int64_t t_back = mf_hosts_now_ms();
  /* The stale client's next read: the new value, whoever it asked first. */
  v = NULL;
  vl = 0;
  MF_ASSERT_EQ(mayfly_kv_get(skv, "the-key", 7, &v, &vl), 0);
  CU_ASSERT(vl == 3 && v != NULL && memcmp(v, "new", 3) == 0);
  if (v != NULL && vl == 3 && memcmp(v, "old", 3) == 0) {
    fprintf(stderr, "  the returned host served its old copy of the-key\n");
  }
  mayfly_free(v);
  /* Its server heartbeats again and is told to drop its old blocks. */
  MF_ASSERT_EQ(mf_hosts_wait_up(h, victim, 1, 10000), 0);
  mf_repl_server_t s = {0};
  int64_t dropped_ms = -1;
  for (int64_t end = mf_hosts_now_ms() + 10000; mf_hosts_now_ms() < end; mf_sleep_ms(100)) {
    if (mf_repl_server(h->dir->address, -1, gone, &s) == 0 && s.up && s.blocks_used == 0) {
      dropped_ms = mf_hosts_now_ms() - t_back;
      break;
    }
  }
  fprintf(stderr, "  host back: up with %d blocks used, %lld ms after the link came back\n",
          s.blocks_used, (long long)dropped_ms);
  CU_ASSERT(dropped_ms >= 0);
  /* Nobody's chain took it back meanwhile (R was already restored). */
  CU_ASSERT(chains_ok(h, paths, g, 1, "host back"));
  /* Every acknowledged write, read after the host is back. */
  MF_ASSERT_EQ(mf_load_verify(load), 0);
  CU_ASSERT(chains_ok(h, paths, g, 1, "after"));
  mf_repl_stats_t st;
  MF_ASSERT_EQ(mf_repl_stats(h->dir->address, &st), 0);
  fprintf(stderr, "  chain failovers %lld, re-replications %lld (%lld bytes)\n",
          (long long)st.chain_failovers, (long long)st.rereplications,
          (long long)st.rereplicated_bytes);
  CU_ASSERT(st.chain_failovers >= 1);
  CU_ASSERT(st.rereplications >= 1);
  mayfly_unmount(kv);
  mayfly_disconnect(c);
  mayfly_unmount(skv);
  mayfly_disconnect(stale);
  mf_hosts_free(h);
}

static void test_kill_over_the_bridge(void) {
  mf_hosts_t *h = cluster(4);
  CU_ASSERT_FATAL(h != NULL);
  const char *paths[] = {"/k/kv", "/k/q", "/k/file"};
  MF_ASSERT_EQ(create_all(h, paths), 0);
  CU_ASSERT(chains_ok(h, paths, NULL, 0, "before"));
  int victim = tail_host(h, paths[1]);
  CU_ASSERT_FATAL(victim >= 0);
  char gone[64];
  snprintf(gone, sizeof gone, "%s", mf_hosts_address(h, victim));
  const char *g[] = {gone};
  mf_load_t *load = mf_load_start(h->dir->address, paths[0], paths[1], paths[2], 2 << 20, 4, 4,
                                  CALL_TIMEOUT_MS);
  mf_sleep_ms(1500);
  int64_t t_kill = mf_hosts_now_ms();
  mf_hosts_kill(h, victim);
  char why[256] = "";
  int64_t restored = mf_repl_wait_chains(h->dir->address, paths, 3, 2, g, 1, RESTORE_TIMEOUT_MS,
                                         why, sizeof why);
  fprintf(stderr, "  kill -9 of %s: R = 2 restored after %lld ms%s%s\n", gone,
          (long long)(restored >= 0 ? mf_hosts_now_ms() - t_kill : -1), restored < 0 ? ": " : "",
          restored < 0 ? why : "");
  CU_ASSERT(restored >= 0);
  mf_sleep_ms(500);
  mf_load_stop(load);
  MF_ASSERT_EQ(mf_load_verify(load), 0);
  CU_ASSERT(chains_ok(h, paths, g, 1, "after"));
  mf_hosts_free(h);
}

static const mf_test_t all[] = {
    {"cut", test_cut_link_then_host_back},
    {"kill", test_kill_over_the_bridge},
    {NULL, NULL}};

int main(int argc, char **argv) {
  char why[256] = "";
  /* Before any thread: setns moves only the calling thread. */
  if (mf_hosts_enter_netns(why, sizeof why) != 0) {
    fprintf(stderr, "test_replication_netns: SKIPPED: %s\n", why);
    return MF_HOSTS_SKIP;
  }
  if (argc < 2) return mf_test_run("replication (network namespaces)", NULL, NULL, all);
  for (const mf_test_t *t = all; t->name != NULL; t++) {
    if (strcmp(t->name, argv[1]) == 0) {
      mf_test_t one[] = {*t, {NULL, NULL}};
      return mf_test_run("replication (network namespaces)", NULL, NULL, one);
    }
  }
  fprintf(stderr, "test_replication_netns: no test named '%s'\n", argv[1]);
  return 2;
}
