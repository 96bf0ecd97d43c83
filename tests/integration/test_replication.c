/*
 * Replicated namespaces (issue 12) on emulated loopback hosts (hosts.h):
 * each memory server on a 127.0.0.N of its own, so chains span hosts.
 *
 *   kill      R = 2 over four hosts, four writers and four readers on kv,
 *             queue and file namespaces, kill -9 of one memory server
 *             mid-run: every acknowledged write readable afterwards, no
 *             queue item lost or popped twice, no error to any caller,
 *             re-replication restores R (the final chains are asserted);
 *             prints the time to the first write after the kill and to R
 *             restored.
 *   r3        R = 3 survives two failures in sequence.
 *   split     a kv split in progress (its target held still) when a member
 *             of the source chain dies.
 *   listen    listeners across a failover of the publishing tail: every
 *             put's event exactly once, in seq order, no gap.
 *   enohosts  R larger than the hosts up (or than the chain limit) is
 *             MAYFLY_ENOHOSTS; R = number of hosts places one per host.
 *   zones     chains span the servers' --zone values first, also when a
 *             member is replaced.
 *
 * `test_replication NAME` runs one (each is its own CTest entry, so they
 * run in parallel); without a name, all. Needs the memory-server,
 * directory and client parts of the issue: CMake registers these tests
 * once they are in the tree.
 */
#include <fcntl.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

static mf_hosts_t *cluster(int hosts, int blocks, const char *block_size) {
  char why[256] = "";
  mf_hosts_t *h = mf_hosts_new(MF_HOSTS_LOOPBACK, hosts, why, sizeof why);
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
    if (mf_hosts_start_server(h, i, blocks, block_size, NULL) != 0) {
      mf_hosts_free(h);
      return NULL;
    }
  }
  return h;
}

static int create(mf_hosts_t *h, const char *path, mayfly_kind_t kind, int r, int blocks,
                  int high) {
  char why[256] = "";
  int rc = mf_repl_create(h->dir->address, path, kind, r, blocks, high, why, sizeof why);
  if (rc != 0) fprintf(stderr, "  create %s (R = %d): %s: %s\n", path, r, mayfly_strerror(rc), why);
  return rc;
}

/* Asserts every partition of each path is a healthy chain of r. */
static void assert_chains(mf_hosts_t *h, const char *const *paths, int n, int r,
                          const char *const *gone, int ngone, const char *label) {
  for (int i = 0; i < n; i++) {
    mf_repl_layout_t l;
    MF_ASSERT_EQ(mf_repl_layout(h->dir->address, paths[i], &l), 0);
    char why[256] = "";
    int ok = mf_repl_chains_ok(&l, r, gone, ngone, why, sizeof why);
    if (!ok) {
      fprintf(stderr, "  %s: %s: %s\n", label, paths[i], why);
      mf_repl_layout_print(paths[i], &l);
    }
    CU_ASSERT(ok);
    for (size_t p = 0; p < l.n; p++) MF_ASSERT_EQ(l.p[p].replicas, r);
    mf_repl_layout_clear(&l);
  }
}

/* The host of member `k` (negative: from the tail) of partition `part`. */
static int host_of_member(mf_hosts_t *h, const char *path, size_t part, int k) {
  mf_repl_layout_t l;
  if (mf_repl_layout(h->dir->address, path, &l) != 0) return -1;
  int host = -1;
  if (part < l.n) {
    const mf_repl_part_t *p = &l.p[part];
    int idx = k >= 0 ? k : p->n + k;
    if (idx >= 0 && idx < p->n) host = mf_hosts_find(h, p->m[idx].address);
  }
  mf_repl_layout_clear(&l);
  return host;
}

static void print_stats(mf_hosts_t *h, const char *label, mf_repl_stats_t *out) {
  mf_repl_stats_t s;
  if (mf_repl_stats(h->dir->address, &s) != 0) return;
  fprintf(stderr, "  %s: chain failovers %lld, re-replications %lld (%lld bytes), degraded %lld, "
                  "splits %lld, rollbacks %lld\n",
          label, (long long)s.chain_failovers, (long long)s.rereplications,
          (long long)s.rereplicated_bytes, (long long)s.partitions_degraded, (long long)s.splits,
          (long long)s.rollbacks);
  if (out != NULL) *out = s;
}

/* ---- kill -9 under load ---- */

static void test_kill_under_load(void) {
  mf_hosts_t *h = cluster(4, 24, "1MiB");
  CU_ASSERT_FATAL(h != NULL);
  const char *paths[] = {"/r/kv", "/r/q", "/r/file"};
  MF_ASSERT_EQ(create(h, paths[0], MAYFLY_KIND_KV, 2, 4, 0), 0);
  MF_ASSERT_EQ(create(h, paths[1], MAYFLY_KIND_QUEUE, 2, 1, 0), 0);
  MF_ASSERT_EQ(create(h, paths[2], MAYFLY_KIND_FILE, 2, 2, 0), 0);
  assert_chains(h, paths, 3, 2, NULL, 0, "before");
  /* The victim heads the queue's chain, so every writer's push waits for the
   * failover; it is in other chains too (4 hosts, 7 chains of 2). */
  int victim = host_of_member(h, paths[1], 0, 0);
  CU_ASSERT_FATAL(victim >= 0);
  char gone[64];
  snprintf(gone, sizeof gone, "%s", mf_hosts_address(h, victim));
  int chains_hit = 0;
  for (int i = 0; i < 3; i++) chains_hit += mf_repl_uses(h->dir->address, paths[i], gone);
  CU_ASSERT(chains_hit >= 1);

  mf_load_t *load = mf_load_start(h->dir->address, paths[0], paths[1], paths[2], 2 << 20, 4, 4,
                                  CALL_TIMEOUT_MS);
  mf_sleep_ms(1500);
  int64_t before = mf_load_acked(load);
  CU_ASSERT(before > 0);

  mayfly_options_t o = {.timeout_ms = CALL_TIMEOUT_MS};
  mayfly_client_t *c = NULL;
  MF_ASSERT_EQ(mayfly_connect(h->dir->address, &o, &c), 0);
  mayfly_ns_t *q = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, paths[1], MAYFLY_KIND_QUEUE, NULL, &q), 0);
  MF_ASSERT_EQ(mayfly_queue_push(q, "probe-0", 7), 0); /* the connection is warm */
  mf_load_expect_item(load, "probe-0");

  int64_t t_kill = mf_hosts_now_ms();
  mf_hosts_kill(h, victim);
  int rc = mayfly_queue_push(q, "probe-1", 7);
  int64_t first_write = mf_hosts_now_ms() - t_kill;
  MF_ASSERT_EQ(rc, 0);
  if (rc == 0) mf_load_expect_item(load, "probe-1");
  char why[256] = "";
  const char *g[] = {gone};
  int64_t restored = mf_repl_wait_chains(h->dir->address, paths, 3, 2, g, 1, RESTORE_TIMEOUT_MS,
                                         why, sizeof why);
  int64_t restored_ms = restored >= 0 ? mf_hosts_now_ms() - t_kill : -1;
  fprintf(stderr, "  kill -9 of %s (in %d of 3 namespaces): first write after %lld ms "
                  "(heartbeat timeout %d ms), R = 2 restored after %lld ms%s%s\n",
          gone, chains_hit, (long long)first_write, HB_TIMEOUT_MS, (long long)restored_ms,
          restored < 0 ? ": not restored: " : "", restored < 0 ? why : "");
  CU_ASSERT(first_write <= CALL_TIMEOUT_MS + MARGIN_MS);
  CU_ASSERT(restored >= 0);
  mf_sleep_ms(500); /* load on the restored chains */
  mf_load_stop(load);
  CU_ASSERT(mf_load_acked(load) > before);
  MF_ASSERT_EQ(mf_load_verify(load), 0);
  assert_chains(h, paths, 3, 2, g, 1, "after");
  mf_repl_stats_t s;
  print_stats(h, "after", &s);
  CU_ASSERT(s.chain_failovers >= chains_hit);
  CU_ASSERT(s.rereplications >= chains_hit);
  CU_ASSERT(s.rereplicated_bytes > 0);
  MF_ASSERT_EQ(s.partitions_degraded, 0);
  mayfly_unmount(q);
  mayfly_disconnect(c);
  mf_hosts_free(h);
}

/* ---- R = 3, two failures in sequence ---- */

static void test_r3_survives_two_failures(void) {
  mf_hosts_t *h = cluster(5, 16, "1MiB");
  CU_ASSERT_FATAL(h != NULL);
  const char *paths[] = {"/r3/kv", "/r3/q", "/r3/file"};
  MF_ASSERT_EQ(create(h, paths[0], MAYFLY_KIND_KV, 3, 2, 0), 0);
  MF_ASSERT_EQ(create(h, paths[1], MAYFLY_KIND_QUEUE, 3, 1, 0), 0);
  MF_ASSERT_EQ(create(h, paths[2], MAYFLY_KIND_FILE, 3, 1, 0), 0);
  assert_chains(h, paths, 3, 3, NULL, 0, "before");
  /* Two members of the same chain: the head, then the tail, of kv's first
   * partition; its middle is the one replica left for a while. */
  int v1 = host_of_member(h, paths[0], 0, 0), v2 = host_of_member(h, paths[0], 0, -1);
  CU_ASSERT_FATAL(v1 >= 0 && v2 >= 0 && v1 != v2);
  char gone[2][64];
  snprintf(gone[0], sizeof gone[0], "%s", mf_hosts_address(h, v1));
  snprintf(gone[1], sizeof gone[1], "%s", mf_hosts_address(h, v2));
  const char *g[] = {gone[0], gone[1]};

  mf_load_t *load = mf_load_start(h->dir->address, paths[0], paths[1], paths[2], 1 << 20, 4, 4,
                                  CALL_TIMEOUT_MS);
  mf_sleep_ms(1000);
  int64_t t0 = mf_hosts_now_ms();
  mf_hosts_kill(h, v1);
  /* The second failure once the first is detected, before R is restored. */
  MF_ASSERT_EQ(mf_hosts_wait_up(h, v1, 0, HB_TIMEOUT_MS + MARGIN_MS), 0);
  int64_t acked_mid = mf_load_acked(load);
  mf_hosts_kill(h, v2);
  int64_t t1 = mf_hosts_now_ms();
  char why[256] = "";
  int64_t restored = mf_repl_wait_chains(h->dir->address, paths, 3, 3, g, 2, RESTORE_TIMEOUT_MS,
                                         why, sizeof why);
  fprintf(stderr, "  R = 3: killed %s, then %s %lld ms later; R = 3 restored on the three "
                  "hosts left %lld ms after the second kill%s%s\n",
          gone[0], gone[1], (long long)(t1 - t0), (long long)(restored >= 0 ? restored : -1),
          restored < 0 ? ": " : "", restored < 0 ? why : "");
  CU_ASSERT(restored >= 0);
  mf_sleep_ms(500);
  mf_load_stop(load);
  CU_ASSERT(mf_load_acked(load) > acked_mid);
  MF_ASSERT_EQ(mf_load_verify(load), 0);
  assert_chains(h, paths, 3, 3, g, 2, "after");
  mf_repl_stats_t s;
  print_stats(h, "after", &s);
  CU_ASSERT(s.chain_failovers >= 2);
  MF_ASSERT_EQ(s.partitions_degraded, 0);
  mf_hosts_free(h);
}

/* ---- a split in progress when a member of the source chain dies ---- */

/* Reads the directory's log from *off on (only the bytes added since the
 * last call); returns 1 at the first new line that begins a split ("...:
 * split OP: slots [lo, hi) of block S:I -> block T:J...") with its op,
 * source server and target server, or 0 when none came yet. */
static int next_split(const mf_daemon_t *dir, GString *pending, off_t *off, long long *op,
                      int *src, int *dst) {
  int fd = open(dir->log_path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char buf[65536];
    ssize_t n;
    while ((n = pread(fd, buf, sizeof buf, *off)) > 0) {
      g_string_append_len(pending, buf, n);
      *off += n;
    }
    close(fd);
  }
  for (;;) {
    char *nl = memchr(pending->str, '\n', pending->len);
    if (nl == NULL) return 0; /* a line still being written stays pending */
    *nl = '\0';
    const char *s = strstr(pending->str, ": split ");
    long long lo, hi;
    int si, ti;
    int found = s != NULL && sscanf(s, ": split %lld: slots [%lld, %lld) of block %d:%d -> "
                                       "block %d:%d",
                                    op, &lo, &hi, src, &si, dst, &ti) == 7;
    g_string_erase(pending, 0, nl - pending->str + 1);
    if (found) return 1;
  }
}

static void test_split_when_a_member_dies(void) {
  mf_hosts_t *h = cluster(4, 32, "1MiB");
  CU_ASSERT_FATAL(h != NULL);
  const char *paths[] = {"/s/kv"};
  MF_ASSERT_EQ(create(h, paths[0], MAYFLY_KIND_KV, 2, 1, 60), 0);
  assert_chains(h, paths, 1, 2, NULL, 0, "before");
  /* Server id -> host, resolved now: once a split shows, every moment
   * counts. */
  int host_of_id[64];
  for (int i = 0; i < 64; i++) host_of_id[i] = -1;
  for (int i = 0; i < h->n; i++) {
    mf_repl_server_t sv;
    MF_ASSERT_EQ(mf_repl_server(h->dir->address, -1, mf_hosts_address(h, i), &sv), 0);
    if (sv.id >= 0 && sv.id < 64) host_of_id[sv.id] = i;
  }
  mf_load_t *load = mf_load_start(h->dir->address, paths[0], NULL, NULL, 0, 4, 2,
                                  CALL_TIMEOUT_MS);
  GString *pending = g_string_new(NULL);
  off_t off = 0;
  int caught = 0, victim = -1, tries = 0;
  long long op = -1;
  char gone[64] = "";
  /* Catch a split before it commits: hold its target's head still
   * (SIGSTOP) the moment the directory logs the plan, then check it has
   * not committed. A split that committed first is let go, and the next
   * one tried. */
  for (int64_t end = mf_hosts_now_ms() + 20000; !caught && mf_hosts_now_ms() < end;) {
    int src = -1, dst = -1;
    if (!next_split(h->dir, pending, &off, &op, &src, &dst)) {
      mf_sleep_ms(1);
      continue;
    }
    int th = dst >= 0 && dst < 64 ? host_of_id[dst] : -1;
    int sh = src >= 0 && src < 64 ? host_of_id[src] : -1;
    if (th < 0 || sh < 0 || th == sh) continue;
    tries++;
    mf_hosts_pause(h, th);
    char committed[64];
    snprintf(committed, sizeof committed, "split %lld committed", op);
    if (mf_log_count(h->dir, committed) > 0) {
      mf_hosts_resume(h, th);
      continue;
    }
    /* In progress: the source chain's head dies. */
    victim = sh;
    snprintf(gone, sizeof gone, "%s", mf_hosts_address(h, victim));
    mf_hosts_kill(h, victim);
    mf_sleep_ms(300);
    mf_hosts_resume(h, th);
    caught = 1;
  }
  g_string_free(pending, TRUE);
  fprintf(stderr, "  split %lld %s (%d tried); the source head %s died during it\n", op,
          caught ? "caught in progress" : "never caught in progress", tries, gone);
  CU_ASSERT_FATAL(caught);
  const char *g[] = {gone};
  char why[256] = "";
  int64_t restored = mf_repl_wait_chains(h->dir->address, paths, 1, 2, g, 1, RESTORE_TIMEOUT_MS,
                                         why, sizeof why);
  if (restored < 0) fprintf(stderr, "  not restored: %s\n", why);
  CU_ASSERT(restored >= 0);
  mf_sleep_ms(1000); /* splits go on over the restored chains */
  mf_load_stop(load);
  MF_ASSERT_EQ(mf_load_verify(load), 0);
  assert_chains(h, paths, 1, 2, g, 1, "after");
  char rolled[64], committed[64];
  snprintf(rolled, sizeof rolled, "split %lld", op);
  snprintf(committed, sizeof committed, "split %lld committed", op);
  fprintf(stderr, "  split %lld: %s (directory log lines naming it: %d)\n", op,
          mf_log_count(h->dir, committed) > 0 ? "committed" : "rolled back",
          mf_log_count(h->dir, rolled));
  mf_repl_layout_t l;
  MF_ASSERT_EQ(mf_repl_layout(h->dir->address, paths[0], &l), 0);
  mf_repl_layout_print("after", &l);
  /* The partitions still cover every slot, once. */
  for (size_t p = 1; p < l.n; p++) MF_ASSERT_EQ(l.p[p].lo, l.p[p - 1].hi);
  mf_repl_layout_clear(&l);
  print_stats(h, "after", NULL);
  mf_hosts_free(h);
}

/* ---- listeners across a failover ---- */

typedef struct {
  GHashTable *seen; /* keys with an event */
  const int64_t *acked; /* puts acknowledged per writer (two) */
  int64_t events, dups, unknown, gaps, disorder, last_seq;
} listen_tally_t;

/* Counts one event: a put of a key seen before is a duplicate, of a key no
 * writer had acknowledged unknown; seqs must rise. */
static void tally(listen_tally_t *t, const mayfly_event_t *ev) {
  t->events++;
  if (ev->seq <= t->last_seq) t->disorder++;
  t->last_seq = ev->seq;
  if (ev->kind == MAYFLY_EV_GAP) {
    t->gaps++;
    return;
  }
  if (ev->kind != MAYFLY_EV_PUT) return;
  char *k = g_strndup((const char *)ev->key, ev->key_len);
  int w = -1;
  long long j = -1;
  if (sscanf(k, "w%d-%lld", &w, &j) != 2 || w < 0 || w > 1 || j < 0 || j >= t->acked[w]) {
    t->unknown++;
  }
  if (g_hash_table_contains(t->seen, k)) {
    t->dups++;
    g_free(k);
  } else {
    g_hash_table_add(t->seen, k);
  }
}

static void test_listener_across_failover(void) {
  mf_hosts_t *h = cluster(3, 16, "1MiB");
  CU_ASSERT_FATAL(h != NULL);
  const char *paths[] = {"/l/kv"};
  MF_ASSERT_EQ(create(h, paths[0], MAYFLY_KIND_KV, 2, 1, 0), 0);
  mayfly_options_t o = {.timeout_ms = CALL_TIMEOUT_MS};
  mayfly_client_t *c = NULL;
  MF_ASSERT_EQ(mayfly_connect(h->dir->address, &o, &c), 0);
  mayfly_listener_t *lis = NULL;
  MF_ASSERT_EQ(mayfly_listen(c, paths[0], MAYFLY_EV_BIT(MAYFLY_EV_PUT), &lis), 0);
  CU_ASSERT_FATAL(lis != NULL);
  /* The tail publishes: it dies. */
  int victim = host_of_member(h, paths[0], 0, -1);
  CU_ASSERT_FATAL(victim >= 0);
  char gone[64];
  snprintf(gone, sizeof gone, "%s", mf_hosts_address(h, victim));
  mf_load_t *load = mf_load_start(h->dir->address, paths[0], NULL, NULL, 0, 2, 0,
                                  CALL_TIMEOUT_MS);
  mf_sleep_ms(1000);
  mf_hosts_kill(h, victim);
  const char *g[] = {gone};
  char why[256] = "";
  int64_t restored = mf_repl_wait_chains(h->dir->address, paths, 1, 2, g, 1, RESTORE_TIMEOUT_MS,
                                         why, sizeof why);
  CU_ASSERT(restored >= 0);
  mf_sleep_ms(500);
  mf_load_stop(load);
  int64_t acked[2] = {mf_load_kv_acked(load, 0), mf_load_kv_acked(load, 1)};
  /* Every acknowledged put: exactly one event, seqs rising without a gap
   * event. */
  listen_tally_t t = {.seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL),
                      .acked = acked};
  int64_t want = acked[0] + acked[1];
  for (int64_t end = mf_hosts_now_ms() + 20000;
       (int64_t)g_hash_table_size(t.seen) < want && mf_hosts_now_ms() < end;) {
    mayfly_event_t *ev = NULL;
    int rc = mayfly_listener_next(lis, &ev, 1000);
    if (rc == MAYFLY_EAGAIN) continue;
    MF_ASSERT_EQ(rc, 0);
    if (rc != 0) break;
    tally(&t, ev);
    mayfly_event_free(ev);
  }
  /* Nothing more may come (a duplicate published late). */
  mayfly_event_t *ev = NULL;
  while (mayfly_listener_next(lis, &ev, 1500) == 0) {
    tally(&t, ev);
    mayfly_event_free(ev);
  }
  GHashTable *seen = t.seen;
  int64_t events = t.events, dups = t.dups, unknown = t.unknown, gaps = t.gaps,
          disorder = t.disorder;
  fprintf(stderr, "  listener: %lld puts acknowledged, %lld events, %u distinct keys, "
                  "%lld duplicates, %lld unknown, %lld gaps, %lld out of order\n",
          (long long)want, (long long)events, g_hash_table_size(seen), (long long)dups,
          (long long)unknown, (long long)gaps, (long long)disorder);
  CU_ASSERT(want > 0);
  MF_ASSERT_EQ(g_hash_table_size(seen), want);
  MF_ASSERT_EQ(dups, 0);
  MF_ASSERT_EQ(unknown, 0);
  MF_ASSERT_EQ(gaps, 0);
  MF_ASSERT_EQ(disorder, 0);
  g_hash_table_destroy(seen);
  MF_ASSERT_EQ(mf_load_verify(load), 0);
  mayfly_listener_close(lis);
  mayfly_disconnect(c);
  mf_hosts_free(h);
}

/* ---- too few hosts ---- */

static void test_too_few_hosts(void) {
  mf_hosts_t *h = cluster(2, 8, "64KiB");
  CU_ASSERT_FATAL(h != NULL);
  char why[256] = "";
  MF_ASSERT_EQ(mf_repl_create(h->dir->address, "/e/three", MAYFLY_KIND_KV, 3, 1, 0, why,
                              sizeof why),
               MAYFLY_ENOHOSTS);
  fprintf(stderr, "  R = 3 on 2 hosts: %s\n", why);
  /* The sentence names both numbers. */
  CU_ASSERT(strstr(why, "3") != NULL && strstr(why, "2") != NULL);
  MF_ASSERT_EQ(mf_repl_create(h->dir->address, "/e/six", MAYFLY_KIND_QUEUE, 6, 1, 0, why,
                              sizeof why),
               MAYFLY_ENOHOSTS);
  const char *paths[] = {"/e/two"};
  MF_ASSERT_EQ(create(h, paths[0], MAYFLY_KIND_FILE, 2, 2, 0), 0);
  assert_chains(h, paths, 1, 2, NULL, 0, "R = 2 on 2 hosts");
  /* R = 1 stays a single block with no chain. */
  const char *one[] = {"/e/one"};
  MF_ASSERT_EQ(create(h, one[0], MAYFLY_KIND_KV, 1, 1, 0), 0);
  assert_chains(h, one, 1, 1, NULL, 0, "R = 1");
  mf_hosts_free(h);
}

/* ---- zones ---- */

/* Four hosts in two zones (--zone): every chain of two has a member in each
 * zone, and a kill in one zone is re-replicated into that zone again (the
 * other one already holds the survivor). */
static void test_zones_first(void) {
  char why[256] = "";
  mf_hosts_t *h = mf_hosts_new(MF_HOSTS_LOOPBACK, 4, why, sizeof why);
  CU_ASSERT_FATAL(h != NULL);
  char timeout[16];
  snprintf(timeout, sizeof timeout, "%d", HB_TIMEOUT_MS);
  MF_ASSERT_EQ(mf_hosts_start_directory(h, "--heartbeat-ms", HB_MS, "--heartbeat-timeout-ms",
                                        timeout, NULL),
               0);
  CU_ASSERT_FATAL(h->dir != NULL);
  const char *zone_of[4] = {"east", "east", "west", "west"};
  for (int i = 0; i < 4; i++) {
    MF_ASSERT_EQ(mf_hosts_start_server(h, i, 16, "1MiB", "--zone", zone_of[i], NULL), 0);
  }
  const char *paths[] = {"/z/kv", "/z/q", "/z/file"};
  MF_ASSERT_EQ(create(h, paths[0], MAYFLY_KIND_KV, 2, 4, 0), 0);
  MF_ASSERT_EQ(create(h, paths[1], MAYFLY_KIND_QUEUE, 2, 1, 0), 0);
  MF_ASSERT_EQ(create(h, paths[2], MAYFLY_KIND_FILE, 2, 2, 0), 0);
  assert_chains(h, paths, 3, 2, NULL, 0, "zones");
  int victim = host_of_member(h, paths[0], 0, 0);
  CU_ASSERT_FATAL(victim >= 0);
  for (int pass = 0; pass < 2; pass++) {
    int split = 0, total = 0;
    for (int i = 0; i < 3; i++) {
      mf_repl_layout_t l;
      MF_ASSERT_EQ(mf_repl_layout(h->dir->address, paths[i], &l), 0);
      for (size_t p = 0; p < l.n; p++) {
        if (l.p[p].n != 2) continue;
        int a = mf_hosts_find(h, l.p[p].m[0].address), b = mf_hosts_find(h, l.p[p].m[1].address);
        CU_ASSERT(a >= 0 && b >= 0);
        if (a < 0 || b < 0) continue;
        total++;
        split += strcmp(zone_of[a], zone_of[b]) != 0;
        /* The layout names each member's zone. */
        CU_ASSERT_STRING_EQUAL(l.p[p].m[0].zone, zone_of[a]);
        CU_ASSERT_STRING_EQUAL(l.p[p].m[1].zone, zone_of[b]);
      }
      if (pass == 1) mf_repl_layout_print(paths[i], &l);
      mf_repl_layout_clear(&l);
    }
    fprintf(stderr, "  %s: %d of %d chains span both zones\n",
            pass == 0 ? "placed" : "re-replicated", split, total);
    CU_ASSERT(total >= 7);
    MF_ASSERT_EQ(split, total);
    if (pass == 1) break;
    char gone[64];
    snprintf(gone, sizeof gone, "%s", mf_hosts_address(h, victim));
    const char *g[] = {gone};
    mf_hosts_kill(h, victim);
    CU_ASSERT(mf_repl_wait_chains(h->dir->address, paths, 3, 2, g, 1, RESTORE_TIMEOUT_MS, why,
                                  sizeof why) >= 0);
  }
  mf_hosts_free(h);
}

static const mf_test_t all[] = {
    {"kill", test_kill_under_load},
    {"r3", test_r3_survives_two_failures},
    {"split", test_split_when_a_member_dies},
    {"listen", test_listener_across_failover},
    {"enohosts", test_too_few_hosts},
    {"zones", test_zones_first},
    {NULL, NULL}};

int main(int argc, char **argv) {
  if (argc < 2) return mf_test_run("replication", NULL, NULL, all);
  for (const mf_test_t *t = all; t->name != NULL; t++) {
    if (strcmp(t->name, argv[1]) == 0) {
      mf_test_t one[] = {*t, {NULL, NULL}};
      return mf_test_run("replication", NULL, NULL, one);
    }
  }
  fprintf(stderr, "test_replication: no test named '%s'\n", argv[1]);
  return 2;
}
