/*
 * Tests of the emulated-hosts harness (hosts.h) itself, so that the
 * replication tests stand on something proven: in each mode a directory and
 * two memory servers on two hosts register, serve data, and (network
 * namespaces) a cut link makes a server's heartbeat age grow until the
 * directory marks it down, and a restored link brings it back.
 *
 * `test_hosts` runs the loopback mode; `test_hosts netns` the namespace
 * mode, which exits with MF_HOSTS_SKIP (counted as skipped) when it cannot
 * build namespaces here.
 */
#include <glib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/mayfly.h"
#include "common/error.h"
#include "hosts.h"
#include "mf_test.h"
#include "repl.h"

static mf_hosts_mode_t mode;

/* The executable of a running process ("" when it cannot be read). */
static char *exe_of(pid_t pid) {
  char link[64];
  snprintf(link, sizeof link, "/proc/%d/exe", (int)pid);
  char *target = g_file_read_link(link, NULL);
  return target != NULL ? target : g_strdup("");
}

/* Two hosts, a kv namespace whose two partitions land one on each (the
 * directory spreads blocks over the least-used server), a put and a get on
 * each. */
static void check_two_hosts_serve(mf_hosts_t *h) {
  mayfly_options_t o = {.timeout_ms = 5000};
  mayfly_client_t *c = NULL;
  MF_ASSERT_EQ(mayfly_connect(h->dir->address, &o, &c), 0);
  CU_ASSERT_FATAL(c != NULL);
  mayfly_create_options_t two = {.blocks = 2};
  mayfly_ns_t *kv = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, "/hosts/kv", MAYFLY_KIND_KV, &two, &kv), 0);
  CU_ASSERT_FATAL(kv != NULL);
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(c, "/hosts/kv", &st), 0);
  CU_ASSERT_FATAL(st != NULL);
  MF_ASSERT_EQ(st->npartitions, 2);
  int on[2] = {0, 0};
  for (size_t p = 0; p < st->npartitions; p++) {
    int host = mf_hosts_find(h, st->partitions[p].server_address);
    CU_ASSERT(host == 0 || host == 1);
    if (host == 0 || host == 1) on[host]++;
  }
  MF_ASSERT_EQ(on[0], 1);
  MF_ASSERT_EQ(on[1], 1);
  mayfly_stat_free(st);
  for (int k = 0; k < 64; k++) {
    char key[16], val[16];
    snprintf(key, sizeof key, "k%d", k);
    snprintf(val, sizeof val, "v%d", k);
    MF_ASSERT_EQ(mayfly_kv_put(kv, key, strlen(key), val, strlen(val)), 0);
  }
  for (int k = 0; k < 64; k++) {
    char key[16], want[16];
    snprintf(key, sizeof key, "k%d", k);
    snprintf(want, sizeof want, "v%d", k);
    void *v = NULL;
    size_t vl = 0;
    MF_ASSERT_EQ(mayfly_kv_get(kv, key, strlen(key), &v, &vl), 0);
    CU_ASSERT(vl == strlen(want) && v != NULL && memcmp(v, want, vl) == 0);
    mayfly_free(v);
  }
  mayfly_unmount(kv);
  mayfly_disconnect(c);
}

static void test_two_servers_register_on_two_hosts(void) {
  char why[256] = "";
  mf_hosts_t *h = mf_hosts_new(mode, 2, why, sizeof why);
  if (h == NULL) fprintf(stderr, "  hosts: %s\n", why);
  CU_ASSERT_FATAL(h != NULL);
  MF_ASSERT_EQ(mf_hosts_start_directory(h, "--heartbeat-ms", "200", "--heartbeat-timeout-ms",
                                        "1500", NULL),
               0);
  CU_ASSERT_FATAL(h->dir != NULL);
  MF_ASSERT_EQ(mf_hosts_start_server(h, 0, 8, "64KiB", NULL), 0);
  MF_ASSERT_EQ(mf_hosts_start_server(h, 1, 8, "64KiB", NULL), 0);
  CU_ASSERT_FATAL(h->ms[0] != NULL && h->ms[1] != NULL);
  /* Two hosts: two distinct addresses, each the one the harness gave. */
  CU_ASSERT_STRING_NOT_EQUAL(h->ip[0], h->ip[1]);
  CU_ASSERT(g_str_has_prefix(h->ms[0]->address, h->ip[0]));
  CU_ASSERT(g_str_has_prefix(h->ms[1]->address, h->ip[1]));
  if (mode == MF_HOSTS_LOOPBACK) {
    CU_ASSERT_STRING_EQUAL(h->ip[0], "127.0.0.2");
    CU_ASSERT_STRING_EQUAL(h->ip[1], "127.0.0.3");
  } else {
    CU_ASSERT(g_str_has_prefix(h->ip[0], "10.211.") && g_str_has_suffix(h->ip[0], ".11"));
    CU_ASSERT(g_str_has_prefix(h->dir_ip, "10.211.") && g_str_has_suffix(h->dir_ip, ".1"));
  }
  /* The PID kept is the daemon's (the one a kill -9 must hit). */
  for (int i = 0; i < 2; i++) {
    char *exe = exe_of(h->ms[i]->pid);
    CU_ASSERT(g_str_has_suffix(exe, "/mayfly-memserver"));
    g_free(exe);
  }
  for (int i = 0; i < 2; i++) {
    int up = -1;
    int64_t age = -1;
    MF_ASSERT_EQ(mf_hosts_server_state(h, i, &up, &age), 0);
    MF_ASSERT_EQ(up, 1); /* the directory's own "heard within the timeout" */
    CU_ASSERT(age >= 0);
  }
  check_two_hosts_serve(h);

  /* kill -9 by the kept PID: the directory marks it down. */
  pid_t victim = h->ms[1]->pid;
  mf_hosts_kill(h, 1);
  CU_ASSERT(kill(victim, 0) != 0);
  MF_ASSERT_EQ(mf_hosts_wait_up(h, 1, 0, 1500 + 5000), 0);
  /* And a restart on the same host and port registers again. */
  int port = h->port[1];
  MF_ASSERT_EQ(mf_hosts_start_server(h, 1, 8, "64KiB", NULL), 0);
  CU_ASSERT(h->ms[1] != NULL && h->ms[1]->port == port);
  char *names[MF_HOSTS_MAX];
  for (int i = 0; i < 2; i++) names[i] = g_strdup(h->netns[i]);
  mf_hosts_free(h);
  /* Everything the hosts had is gone. */
  for (int i = 0; i < 2; i++) {
    if (names[i][0] != '\0') {
      char *path = g_strdup_printf("/var/run/netns/%s", names[i]);
      struct stat sb;
      CU_ASSERT(stat(path, &sb) != 0);
      g_free(path);
    }
    g_free(names[i]);
  }
}

/* Netns mode only: a cut link silences the host's heartbeats (its age grows,
 * the directory marks it down after the timeout) while the other host is
 * unaffected; a restored link brings it back up. */
static void test_a_cut_link_silences_the_host(void) {
  char why[256] = "";
  mf_hosts_t *h = mf_hosts_new(mode, 2, why, sizeof why);
  if (h == NULL) fprintf(stderr, "  hosts: %s\n", why);
  CU_ASSERT_FATAL(h != NULL);
  MF_ASSERT_EQ(mf_hosts_start_directory(h, "--heartbeat-ms", "200", "--heartbeat-timeout-ms",
                                        "1500", NULL),
               0);
  CU_ASSERT_FATAL(h->dir != NULL);
  MF_ASSERT_EQ(mf_hosts_start_server(h, 0, 4, "64KiB", NULL), 0);
  MF_ASSERT_EQ(mf_hosts_start_server(h, 1, 4, "64KiB", NULL), 0);
  CU_ASSERT_FATAL(h->ms[0] != NULL && h->ms[1] != NULL);

  MF_ASSERT_EQ(mf_hosts_cut(h, 0), 0);
  int64_t t0 = mf_hosts_now_ms();
  mf_sleep_ms(1000);
  int up0 = -1, up1 = -1;
  int64_t age0 = -1, age1 = -1;
  MF_ASSERT_EQ(mf_hosts_server_state(h, 0, &up0, &age0), 0);
  MF_ASSERT_EQ(mf_hosts_server_state(h, 1, &up1, &age1), 0);
  fprintf(stderr, "  1 s after the cut: heartbeat age %lld ms (cut host), %lld ms (other)\n",
          (long long)age0, (long long)age1);
  CU_ASSERT(age0 >= 800); /* no heartbeat since the cut (they come every 200 ms) */
  CU_ASSERT(age1 >= 0 && age1 < age0); /* the other one's still come */
  MF_ASSERT_EQ(up1, 1);
  /* The directory gives up on it after its heartbeat timeout. */
  MF_ASSERT_EQ(mf_hosts_wait_up(h, 0, 0, 1500 + 5000), 0);
  fprintf(stderr, "  the cut host was marked down %lld ms after the cut\n",
          (long long)(mf_hosts_now_ms() - t0));
  CU_ASSERT(mf_alive(h->ms[0])); /* the process runs on; only its link is gone */
  /* The other host still serves and heartbeats. */
  MF_ASSERT_EQ(mf_hosts_server_state(h, 1, &up1, &age1), 0);
  MF_ASSERT_EQ(up1, 1);

  /* A slower link (when the kernel has netem) still carries heartbeats. */
  if (mf_hosts_slow(h, 1, 50) == 0) {
    mf_sleep_ms(600);
    MF_ASSERT_EQ(mf_hosts_server_state(h, 1, &up1, &age1), 0);
    MF_ASSERT_EQ(up1, 1);
    MF_ASSERT_EQ(mf_hosts_slow(h, 1, 0), 0);
  } else {
    fprintf(stderr, "  (tc netem is not available in this kernel: the delay is not tried)\n");
  }

  /* Restored: its heartbeats reach the directory again and it is back up. */
  MF_ASSERT_EQ(mf_hosts_restore(h, 0), 0);
  MF_ASSERT_EQ(mf_hosts_wait_up(h, 0, 1, 10000), 0);
  MF_ASSERT_EQ(mf_hosts_server_state(h, 0, &up0, &age0), 0);
  MF_ASSERT_EQ(up0, 1);
  /* Its last heartbeat came after the cut: it is heard from again. */
  CU_ASSERT(age0 >= 0 && age0 < mf_hosts_now_ms() - t0);
  mf_hosts_free(h);
}

static void test_loopback_has_no_links_to_cut(void) {
  char why[256] = "";
  mf_hosts_t *h = mf_hosts_new(MF_HOSTS_LOOPBACK, 1, why, sizeof why);
  CU_ASSERT_FATAL(h != NULL);
  MF_ASSERT_EQ(mf_hosts_cut(h, 0), -1);
  MF_ASSERT_EQ(mf_hosts_slow(h, 0, 10), -1);
  CU_ASSERT(mf_hosts_new(MF_HOSTS_LOOPBACK, MF_HOSTS_MAX + 1, why, sizeof why) == NULL);
  CU_ASSERT(strstr(why, "hosts") != NULL);
  mf_hosts_free(h);
}

/* The replication tests' load and its checker (repl.h), proven here on
 * R = 1 namespaces: a clean run verifies clean, and a run whose data is
 * tampered with afterwards (an acknowledged key deleted, an item popped
 * behind its back) is caught. */
static void test_the_load_checker(void) {
  char why[256] = "";
  mf_hosts_t *h = mf_hosts_new(MF_HOSTS_LOOPBACK, 2, why, sizeof why);
  CU_ASSERT_FATAL(h != NULL);
  MF_ASSERT_EQ(mf_hosts_start_directory(h, NULL), 0);
  CU_ASSERT_FATAL(h->dir != NULL);
  MF_ASSERT_EQ(mf_hosts_start_server(h, 0, 16, "256KiB", NULL), 0);
  MF_ASSERT_EQ(mf_hosts_start_server(h, 1, 16, "256KiB", NULL), 0);
  const char *a = h->dir->address;
  const char *paths[] = {"/load/kv", "/load/q", "/load/file"};
  MF_ASSERT_EQ(mf_repl_create(a, paths[0], MAYFLY_KIND_KV, 1, 2, 0, why, sizeof why), 0);
  MF_ASSERT_EQ(mf_repl_create(a, paths[1], MAYFLY_KIND_QUEUE, 1, 1, 0, why, sizeof why), 0);
  MF_ASSERT_EQ(mf_repl_create(a, paths[2], MAYFLY_KIND_FILE, 1, 2, 0, why, sizeof why), 0);
  for (int i = 0; i < 3; i++) {
    mf_repl_layout_t l;
    MF_ASSERT_EQ(mf_repl_layout(a, paths[i], &l), 0);
    MF_ASSERT_EQ(l.n, i == 1 ? 1 : 2);
    CU_ASSERT(mf_repl_chains_ok(&l, 1, NULL, 0, why, sizeof why));
    for (size_t p = 0; p < l.n; p++) CU_ASSERT(mf_hosts_find(h, l.p[p].m[0].address) >= 0);
    mf_repl_layout_clear(&l);
  }
  /* R = 2 wanted of a single-member chain: not ok, and says why. */
  mf_repl_layout_t l1;
  MF_ASSERT_EQ(mf_repl_layout(a, paths[0], &l1), 0);
  CU_ASSERT(!mf_repl_chains_ok(&l1, 2, NULL, 0, why, sizeof why));
  CU_ASSERT(strstr(why, "members") != NULL);
  const char *gone[] = {l1.p[0].m[0].address};
  CU_ASSERT(!mf_repl_chains_ok(&l1, 1, gone, 1, why, sizeof why));
  mf_repl_layout_clear(&l1);

  mf_load_t *load = mf_load_start(a, paths[0], paths[1], paths[2], 256 << 10, 4, 4, 5000);
  mf_sleep_ms(1000);
  mf_load_stop(load);
  CU_ASSERT(mf_load_acked(load) > 0);
  MF_ASSERT_EQ(mf_load_verify(load), 0);

  /* Again, then tamper: one acknowledged key deleted, one item taken. */
  load = mf_load_start(a, paths[0], paths[1], paths[2], 256 << 10, 2, 0, 5000);
  mf_sleep_ms(500);
  mf_load_stop(load);
  mayfly_client_t *c = NULL;
  MF_ASSERT_EQ(mayfly_connect(a, NULL, &c), 0);
  mayfly_ns_t *kv = NULL, *q = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, paths[0], MAYFLY_KIND_KV, NULL, &kv), 0);
  MF_ASSERT_EQ(mayfly_mount(c, paths[1], MAYFLY_KIND_QUEUE, NULL, &q), 0);
  char key[64];
  mf_load_key(1, 0, key, sizeof key);
  MF_ASSERT_EQ(mayfly_kv_delete(kv, key, strlen(key)), 0);
  void *item = NULL;
  size_t il = 0;
  MF_ASSERT_EQ(mayfly_queue_pop(q, &item, &il, 1000), 0);
  mayfly_free(item);
  CU_ASSERT(mf_load_verify(load) >= 2);
  mayfly_unmount(kv);
  mayfly_unmount(q);
  mayfly_disconnect(c);
  mf_hosts_free(h);
}

static const mf_test_t loopback_tests[] = {
    {"the replication tests' load checker catches what it should", test_the_load_checker},
    {"two servers register on two loopback hosts", test_two_servers_register_on_two_hosts},
    {"loopback hosts have no links to cut", test_loopback_has_no_links_to_cut},
    {NULL, NULL}};

static const mf_test_t netns_tests[] = {
    {"two servers register in two host namespaces", test_two_servers_register_on_two_hosts},
    {"a cut link silences the host until it is restored", test_a_cut_link_silences_the_host},
    {NULL, NULL}};

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "netns") == 0) {
    char why[256] = "";
    /* Before any thread: setns moves only the calling thread. */
    if (mf_hosts_enter_netns(why, sizeof why) != 0) {
      fprintf(stderr, "test_hosts netns: SKIPPED: %s\n", why);
      return MF_HOSTS_SKIP;
    }
    mode = MF_HOSTS_NETNS;
    return mf_test_run("hosts (network namespaces)", NULL, NULL, netns_tests);
  }
  mode = MF_HOSTS_LOOPBACK;
  return mf_test_run("hosts (loopback)", NULL, NULL, loopback_tests);
}
