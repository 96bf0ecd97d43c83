/*
 * Integration tests of what happens around a directory restart on the
 * client and memory-server side: a real mayfly-directory (in memory, killed
 * with SIGKILL or stopped with SIGSTOP, and restarted on the same port), a
 * real mayfly-memserver, and libmayfly's mounted handles and listeners.
 *
 * The promises (issue 10): a listener never ends silently (every event
 * delivered, or a GAP covering it; a node gone after the restart is GAP then
 * REMOVED); a write to a watched namespace is never acknowledged without its
 * event (while the directory is stopped it is held until the directory
 * takes the event, and once the memory server knows the directory is
 * unreachable new ones are refused with MAYFLY_EDIRDOWN, not applied);
 * data calls of an unwatched mounted namespace never need the directory;
 * renewals resume after a restart; and with --data-dir a mounted kv
 * namespace, its data and its listener ride through a kill -9. Daemons die
 * with the test
 * (tests/integration/harness.c).
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "client/mayfly.h"
#include "harness.h"
#include "mf_test.h"

/* The client's per-call timeout: a held write gives MAYFLY_ETIMEDOUT after it. */
#define CALL_MS 1000

/* Starts an in-memory directory (heartbeats every 200 ms, plus `extra`, up
 * to four more arguments) on `port` (NULL: a free one). */
static mf_daemon_t *directory_at(const char *port, const char *extra1, const char *extra2) {
  if (port != NULL) {
    return mf_start_directory("--heartbeat-ms", "200", "--port", port, extra1, extra2, NULL);
  }
  return mf_start_directory("--heartbeat-ms", "200", extra1, extra2, NULL);
}

static mayfly_client_t *client_of(const mf_daemon_t *d) {
  mayfly_options_t o = {.timeout_ms = CALL_MS};
  mayfly_client_t *c = NULL;
  MF_ASSERT_EQ(mayfly_connect(d->address, &o, &c), 0);
  return c;
}

/* Waits until the directory lists `want` memory servers as up (they
 * register again by themselves after a restart). */
static int wait_servers_up(mayfly_client_t *c, int want) {
  for (int waited = 0; waited < 10000; waited += 50) {
    mayfly_server_t *s = NULL;
    size_t n = 0;
    int up = 0;
    if (mayfly_servers(c, &s, &n) == 0) {
      for (size_t i = 0; i < n; i++) up += s[i].up;
      mayfly_servers_free(s, n);
    }
    if (up >= want) return 0;
    mf_sleep_ms(50);
  }
  return -1;
}

/* The next event, or NULL (with a failed assertion) when none comes in ms. */
static mayfly_event_t *next_event(mayfly_listener_t *l, int ms) {
  mayfly_event_t *ev = NULL;
  int rc = mayfly_listener_next(l, &ev, ms);
  MF_ASSERT_EQ(rc, 0);
  return rc == 0 ? ev : NULL;
}

static int put_str(mayfly_ns_t *ns, const char *k, const char *v) {
  return mayfly_kv_put(ns, k, strlen(k), v, strlen(v));
}

/* 1 when the key holds exactly v, 0 when it is absent, else an error. */
static int holds(mayfly_ns_t *ns, const char *k, const char *v) {
  void *got = NULL;
  size_t n = 0;
  int rc = mayfly_kv_get(ns, k, strlen(k), &got, &n);
  if (rc == MAYFLY_ENOKEY) return 0;
  if (rc != 0) return rc;
  int same = n == strlen(v) && memcmp(got, v, n) == 0;
  mayfly_free(got);
  return same ? 1 : -1000;
}

/* Whether a PUT of key k is among the events the listener has now (taken
 * from it; other events are counted in *others). Waits up to ms for it. */
static int saw_put(mayfly_listener_t *l, const char *k, int ms, int *others) {
  int64_t until = g_get_monotonic_time() / 1000 + ms;
  for (;;) {
    int64_t left = until - g_get_monotonic_time() / 1000;
    if (left <= 0) return 0;
    mayfly_event_t *ev = NULL;
    if (mayfly_listener_next(l, &ev, (int)left) != 0) return 0;
    int hit = ev->kind == MAYFLY_EV_PUT && ev->key_len == strlen(k) &&
              memcmp(ev->key, k, ev->key_len) == 0;
    if (!hit && others != NULL) (*others)++;
    mayfly_event_free(ev);
    if (hit) return 1;
  }
}

/* Puts keys k00.. (n of them, value v) and expects their PUT events, seq
 * 1..n in order, on a listener that has seen nothing yet. */
static void put_and_expect_events(mayfly_ns_t *kv, mayfly_listener_t *l, int n, const char *v) {
  for (int i = 0; i < n; i++) {
    char k[16];
    snprintf(k, sizeof k, "k%02d", i);
    MF_ASSERT_EQ(put_str(kv, k, v), 0);
  }
  for (int i = 0; i < n; i++) {
    mayfly_event_t *ev = next_event(l, 5000);
    CU_ASSERT_PTR_NOT_NULL(ev);
    if (ev == NULL) break;
    MF_ASSERT_EQ(ev->kind, MAYFLY_EV_PUT);
    MF_ASSERT_EQ(ev->seq, i + 1);
    mayfly_event_free(ev);
  }
}

static void test_a_listener_whose_namespace_is_gone_after_a_restart_gets_gap_then_removed(void) {
  mf_daemon_t *d = directory_at(NULL, NULL, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  mf_daemon_t *ms = mf_start_memserver(d, 16, "64KiB", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ms);
  mayfly_client_t *c = client_of(d);
  mayfly_ns_t *kv = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, "/jobs/a", MAYFLY_KIND_KV, NULL, &kv), 0);
  mayfly_listener_t *l = NULL;
  MF_ASSERT_EQ(mayfly_listen(c, "/jobs/a", 0, &l), 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(l);

  /* Every acknowledged write before the kill is delivered, in order. */
  put_and_expect_events(kv, l, 20, "v");

  /* While the directory is dead, no write to the watched namespace is
   * acknowledged: the first may be held (the memory server has not noticed
   * yet; the call times out), then they are refused up front. */
  char port[16];
  snprintf(port, sizeof port, "%d", d->port);
  mf_kill(d);
  int refused = 0, acked = 0;
  for (int i = 0; i < 10 && !refused; i++) {
    char k[16];
    snprintf(k, sizeof k, "dead%d", i);
    int rc = put_str(kv, k, "v");
    if (rc == 0) acked++;
    if (rc == MAYFLY_EDIRDOWN) refused = 1;
    CU_ASSERT(rc == MAYFLY_EDIRDOWN || rc == MAYFLY_ETIMEDOUT);
    if (rc != MAYFLY_EDIRDOWN) mf_sleep_ms(100);
  }
  MF_ASSERT_EQ(acked, 0);
  MF_ASSERT_EQ(refused, 1);

  /* The new directory knows nothing of /jobs/a: the listener hears that it
   * may have missed events, then that the node is gone, then it ends. */
  d = directory_at(port, NULL, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  mayfly_event_t *ev = next_event(l, 10000);
  if (ev != NULL) {
    MF_ASSERT_EQ(ev->kind, MAYFLY_EV_GAP);
    MF_ASSERT_EQ(ev->length, -1);
    CU_ASSERT_STRING_EQUAL(ev->path, "/jobs/a");
  }
  mayfly_event_free(ev);
  ev = next_event(l, 5000);
  if (ev != NULL) {
    MF_ASSERT_EQ(ev->kind, MAYFLY_EV_REMOVED);
    CU_ASSERT_STRING_EQUAL(ev->path, "/jobs/a");
  }
  mayfly_event_free(ev);
  ev = NULL;
  MF_ASSERT_EQ(mayfly_listener_next(l, &ev, 5000), MAYFLY_ENOENT);
  mayfly_event_free(ev);

  mayfly_listener_close(l);
  mayfly_unmount(kv);
  mayfly_disconnect(c);
  MF_ASSERT_EQ(mf_stop(ms), 0);
  MF_ASSERT_EQ(mf_stop(d), 0);
}

static void test_a_watched_write_while_the_directory_is_stopped_is_held_then_refused(void) {
  mf_daemon_t *d = directory_at(NULL, NULL, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  mf_daemon_t *ms = mf_start_memserver(d, 16, "64KiB", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ms);
  mayfly_client_t *c = client_of(d);
  mayfly_ns_t *w = NULL, *u = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, "/w", MAYFLY_KIND_KV, NULL, &w), 0);
  MF_ASSERT_EQ(mayfly_mount(c, "/u", MAYFLY_KIND_KV, NULL, &u), 0);
  mayfly_listener_t *l = NULL;
  MF_ASSERT_EQ(mayfly_listen(c, "/w", MAYFLY_EV_MASK_DATA, &l), 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(l);
  MF_ASSERT_EQ(put_str(w, "warm", "1"), 0);
  CU_ASSERT(saw_put(l, "warm", 5000, NULL));
  /* A memory server learns of a block from the directory at its first use
   * (memserver/ctlevents.c): use /u once while the directory answers. */
  MF_ASSERT_EQ(put_str(u, "first", "0"), 0);

  mf_pause(d);
  /* Applied, but its event cannot be numbered: no answer (held), so the
   * call times out. */
  MF_ASSERT_EQ(put_str(w, "held", "2"), MAYFLY_ETIMEDOUT);
  /* Once the memory server knows the directory does not answer, writes to
   * the watched namespace are refused before anything is applied. Those
   * that time out first were applied (held too). */
  GPtrArray *held = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(held, g_strdup("held"));
  int refused = 0;
  for (int i = 0; i < 15 && !refused; i++) {
    char *k = g_strdup_printf("more%d", i);
    int rc = put_str(w, k, "3");
    CU_ASSERT(rc == MAYFLY_ETIMEDOUT || rc == MAYFLY_EDIRDOWN);
    if (rc == MAYFLY_EDIRDOWN) {
      refused = 1;
      MF_ASSERT_EQ(holds(w, k, "3"), 0); /* reads need no directory: not applied */
      g_free(k);
    } else {
      g_ptr_array_add(held, k);
    }
  }
  MF_ASSERT_EQ(refused, 1);
  MF_ASSERT_EQ(put_str(w, "refused", "4"), MAYFLY_EDIRDOWN);
  /* An unwatched namespace's data calls never needed the directory. */
  for (int i = 0; i < 20; i++) {
    char k[16];
    snprintf(k, sizeof k, "u%d", i);
    MF_ASSERT_EQ(put_str(u, k, "x"), 0);
    MF_ASSERT_EQ(holds(u, k, "x"), 1);
  }
  MF_ASSERT_EQ(holds(w, "held", "2"), 1);

  mf_resume(d);
  /* The held writes' events arrive (each at least once: a publish call
   * that timed out may have been numbered too). */
  int others = 0;
  for (guint i = 0; i < held->len; i++) {
    const char *k = g_ptr_array_index(held, i);
    int seen = saw_put(l, k, 15000, &others);
    if (!seen) fprintf(stderr, "  no event for the held put of %s\n", k);
    CU_ASSERT(seen);
  }
  /* The directory takes events again: writes are answered again (refused
   * until the memory server has published its backlog). */
  int rc = MAYFLY_EDIRDOWN;
  for (int waited = 0; waited < 10000 && rc == MAYFLY_EDIRDOWN; waited += 100) {
    rc = put_str(w, "after", "5");
    if (rc == MAYFLY_EDIRDOWN) mf_sleep_ms(100);
  }
  MF_ASSERT_EQ(rc, 0);
  CU_ASSERT(saw_put(l, "after", 5000, &others));
  MF_ASSERT_EQ(holds(w, "refused", "4"), 0);
  MF_ASSERT_EQ(holds(w, "after", "5"), 1);
  g_ptr_array_free(held, TRUE);

  mayfly_listener_close(l);
  mayfly_unmount(w);
  mayfly_unmount(u);
  mayfly_disconnect(c);
  MF_ASSERT_EQ(mf_stop(ms), 0);
  MF_ASSERT_EQ(mf_stop(d), 0);
}

static void test_an_unwatched_mount_works_with_the_directory_down_and_renewals_resume(void) {
  /* Short leases and grace, so a namespace nobody renews is gone fast. */
  mf_daemon_t *d = directory_at(NULL, "--grace-ms", "200");
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  mf_daemon_t *ms = mf_start_memserver(d, 16, "64KiB", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ms);
  mayfly_client_t *c = client_of(d);
  mayfly_create_options_t short_lease = {.lease_ms = 600};
  mayfly_ns_t *u = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, "/u", MAYFLY_KIND_KV, &short_lease, &u), 0);
  MF_ASSERT_EQ(put_str(u, "before", "1"), 0);

  /* Dead directory: the mounted handle's puts and gets go on. */
  mf_daemon_t *old = d;
  char port[16];
  snprintf(port, sizeof port, "%d", old->port);
  mf_kill(old);
  for (int i = 0; i < 20; i++) {
    char k[16];
    snprintf(k, sizeof k, "down%d", i);
    MF_ASSERT_EQ(put_str(u, k, "2"), 0);
    MF_ASSERT_EQ(holds(u, k, "2"), 1);
  }
  MF_ASSERT_EQ(holds(u, "before", "1"), 1);
  /* Longer than a lease: the renewer fails meanwhile and must survive. */
  mf_sleep_ms(900);

  /* An in-memory directory comes back empty: the path is created again
   * (by someone else), and the mounted client's renewals, which went on
   * failing meanwhile, keep it alive; one nobody renews expires. */
  d = directory_at(port, "--grace-ms", "200");
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  mayfly_client_t *c2 = client_of(d);
  MF_ASSERT_EQ(wait_servers_up(c2, 1), 0);
  MF_ASSERT_EQ(mayfly_create(c2, "/u", MAYFLY_KIND_KV, &short_lease, NULL), 0);
  MF_ASSERT_EQ(mayfly_create(c2, "/unrenewed", MAYFLY_KIND_KV, &short_lease, NULL), 0);
  mf_sleep_ms(3000); /* five leases */
  MF_ASSERT_EQ(mayfly_exists(c2, "/u"), 1);
  MF_ASSERT_EQ(mayfly_exists(c2, "/unrenewed"), 0);
  /* And the client's own control calls reconnected too. */
  MF_ASSERT_EQ(mayfly_exists(c, "/u"), 1);

  mayfly_unmount(u);
  mayfly_disconnect(c2);
  mayfly_disconnect(c);
  MF_ASSERT_EQ(mf_stop(ms), 0);
  MF_ASSERT_EQ(mf_stop(d), 0);
}

/* Removes a directory and everything under it. */
static void rm_tree(const char *path) {
  GDir *dir = g_dir_open(path, 0, NULL);
  const char *name;
  while (dir != NULL && (name = g_dir_read_name(dir)) != NULL) {
    char *p = g_build_filename(path, name, NULL);
    if (g_file_test(p, G_FILE_TEST_IS_DIR)) {
      rm_tree(p);
    } else {
      g_remove(p);
    }
    g_free(p);
  }
  if (dir != NULL) g_dir_close(dir);
  g_rmdir(path);
}

static void test_a_durable_restart_keeps_the_mount_its_data_its_listener_and_renewals(void) {
  char *data = g_dir_make_tmp("mayfly-restart-XXXXXX", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(data);
  mf_daemon_t *d = mf_start_directory("--heartbeat-ms", "200", "--grace-ms", "200",
                                      "--data-dir", data, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  mf_daemon_t *ms = mf_start_memserver(d, 16, "64KiB", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ms);
  mayfly_client_t *c = client_of(d);
  mayfly_create_options_t short_lease = {.lease_ms = 600};
  mayfly_ns_t *kv = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, "/job/kv", MAYFLY_KIND_KV, &short_lease, &kv), 0);
  mayfly_listener_t *l = NULL;
  MF_ASSERT_EQ(mayfly_listen(c, "/job/kv", 0, &l), 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(l);
  put_and_expect_events(kv, l, 10, "before");

  char port[16];
  snprintf(port, sizeof port, "%d", d->port);
  mf_kill(d);
  d = mf_start_directory("--heartbeat-ms", "200", "--grace-ms", "200", "--port", port,
                         "--data-dir", data, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);

  /* The listener hears of the new epoch as a GAP and goes on. */
  mayfly_event_t *ev = next_event(l, 10000);
  if (ev != NULL) {
    MF_ASSERT_EQ(ev->kind, MAYFLY_EV_GAP);
    MF_ASSERT_EQ(ev->length, -1);
  }
  mayfly_event_free(ev);
  /* The memory server reconciled instead of dropping: the data written
   * before the kill reads back through the same handle, same layout. */
  MF_ASSERT_EQ(wait_servers_up(c, 1), 0);
  for (int i = 0; i < 10; i++) {
    char k[16];
    snprintf(k, sizeof k, "k%02d", i);
    MF_ASSERT_EQ(holds(kv, k, "before"), 1);
  }
  /* New writes are answered again (refused, applied nothing, until the
   * memory server has registered again), and their events reach the
   * same listener. */
  int rc = MAYFLY_EDIRDOWN;
  for (int waited = 0; waited < 10000 && rc != 0; waited += 100) {
    rc = put_str(kv, "after", "1");
    CU_ASSERT(rc == 0 || rc == MAYFLY_EDIRDOWN || rc == MAYFLY_ETIMEDOUT);
    if (rc != 0) mf_sleep_ms(100);
  }
  MF_ASSERT_EQ(rc, 0);
  CU_ASSERT(saw_put(l, "after", 10000, NULL));
  /* Renewals resumed: five leases later the namespace is still there. */
  mf_sleep_ms(3000);
  MF_ASSERT_EQ(mayfly_exists(c, "/job/kv"), 1);
  MF_ASSERT_EQ(holds(kv, "k00", "before"), 1);

  mayfly_listener_close(l);
  mayfly_unmount(kv);
  mayfly_disconnect(c);
  MF_ASSERT_EQ(mf_stop(ms), 0);
  MF_ASSERT_EQ(mf_stop(d), 0);
  rm_tree(data);
  g_free(data);
}

static const mf_test_t tests[] = {
    {"a listener whose namespace is gone after a restart gets GAP then REMOVED",
     test_a_listener_whose_namespace_is_gone_after_a_restart_gets_gap_then_removed},
    {"a watched write while the directory is stopped is held, then refused",
     test_a_watched_write_while_the_directory_is_stopped_is_held_then_refused},
    {"an unwatched mount works with the directory down and renewals resume",
     test_an_unwatched_mount_works_with_the_directory_down_and_renewals_resume},
    {"a durable restart keeps the mount, its data, its listener and renewals",
     test_a_durable_restart_keeps_the_mount_its_data_its_listener_and_renewals},
    {NULL, NULL}};

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  return mf_test_run("restart", NULL, NULL, tests);
}
