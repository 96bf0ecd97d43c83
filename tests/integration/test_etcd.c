/*
 * The directory's etcd client (directory/etcd.c) against a real etcd started
 * by the test (tests/integration/etcdproc.h): key-value operations,
 * transactions, leases, watches, compaction, endpoint failover in a
 * three-member cluster, deadlines and etcd's request-size limit.
 *
 * `test_etcd bench` (not run by CTest) measures the round trip of a small
 * transaction, one in flight and several at once.
 */
#include <glib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "common/error.h"
#include "directory/etcd.h"
#include "etcdproc.h"
#include "harness.h"
#include "mf_test.h"

static mf_etcd_proc_t one; /* a one-member cluster most tests share */
static uv_loop_t loop;

/* A copy of a result, taken in the callback (the client's is valid only
 * there). */
typedef struct got {
  int done;
  dir_etcd_result_t r;
} got_t;

static dir_etcd_kv_t *kv_copy(const dir_etcd_kv_t *kv) {
  dir_etcd_kv_t *c = g_new0(dir_etcd_kv_t, 1);
  *c = *kv;
  c->key = g_strdup(kv->key);
  c->value = g_bytes_ref(kv->value);
  return c;
}

static void on_result(const dir_etcd_result_t *r, void *ud) {
  got_t *g = ud;
  CU_ASSERT_FALSE(g->done); /* exactly once */
  GPtrArray *kvs = g->r.kvs;
  g->r = *r;
  g->r.kvs = kvs;
  for (guint i = 0; i < r->kvs->len; i++) g_ptr_array_add(kvs, kv_copy(g_ptr_array_index(r->kvs, i)));
  g->done = 1;
}

static void got_init(got_t *g) {
  g->done = 0;
  dir_etcd_result_init(&g->r);
}

/* Runs the loop until g is answered. */
static void wait_for(got_t *g) {
  while (!g->done) uv_run(&loop, UV_RUN_ONCE);
}

static dir_etcd_t *client(const char *endpoints, int64_t timeout_ms) {
  dir_etcd_t *e = NULL;
  char why[256] = "";
  int rc = dir_etcd_new(&loop, endpoints, timeout_ms, &e, why, sizeof why);
  if (rc != 0) fprintf(stderr, "dir_etcd_new: %s\n", why);
  MF_ASSERT_EQ(rc, 0);
  return e;
}

/* Frees the client and lets its handles close. */
static void client_free(dir_etcd_t *e) {
  dir_etcd_free(e);
  uv_run(&loop, UV_RUN_NOWAIT);
  uv_run(&loop, UV_RUN_NOWAIT);
}

static void put_sync(dir_etcd_t *e, const char *key, const void *val, size_t len, int64_t lease, got_t *g) {
  got_init(g);
  dir_etcd_put(e, key, val, len, lease, on_result, g);
  wait_for(g);
  if (g->r.rc != 0) fprintf(stderr, "put %s: %s\n", key, g->r.why);
  MF_ASSERT_EQ(g->r.rc, 0);
}

static void range_sync(dir_etcd_t *e, const char *key, const char *end, int64_t rev, int64_t limit, got_t *g) {
  got_init(g);
  dir_etcd_range(e, key, end, rev, limit, on_result, g);
  wait_for(g);
}

static int value_is(const dir_etcd_kv_t *kv, const char *s) {
  gsize n = 0;
  const char *d = g_bytes_get_data(kv->value, &n);
  return n == strlen(s) && (n == 0 || memcmp(d, s, n) == 0);
}

static void test_put_and_range_with_revision_limit_and_prefix(void) {
  dir_etcd_t *e = client(one.endpoints, 2000);
  got_t g;
  for (int i = 1; i <= 5; i++) {
    char k[32], v[32];
    snprintf(k, sizeof k, "/t/range/%d", i);
    snprintf(v, sizeof v, "v%d", i);
    put_sync(e, k, v, strlen(v), 0, &g);
    CU_ASSERT(g.r.revision > 0);
    dir_etcd_result_clear(&g.r);
  }
  put_sync(e, "/t/rangeX", "outside", 7, 0, &g); /* not under the prefix "/t/range/" */
  dir_etcd_result_clear(&g.r);
  put_sync(e, "/t/range/1", "old", 3, 0, &g);
  int64_t old_rev = g.r.revision;
  dir_etcd_result_clear(&g.r);
  put_sync(e, "/t/range/1", "new", 3, 0, &g);
  dir_etcd_result_clear(&g.r);

  /* One key. */
  range_sync(e, "/t/range/1", NULL, 0, 0, &g);
  MF_ASSERT_EQ(g.r.rc, 0);
  MF_ASSERT_EQ(g.r.kvs->len, 1);
  if (g.r.kvs->len == 1) {
    dir_etcd_kv_t *kv = g_ptr_array_index(g.r.kvs, 0);
    CU_ASSERT_STRING_EQUAL(kv->key, "/t/range/1");
    CU_ASSERT(value_is(kv, "new"));
    MF_ASSERT_EQ(kv->version, 3);
    CU_ASSERT(kv->create_revision < kv->mod_revision);
  }
  dir_etcd_result_clear(&g.r);
  /* At an older revision. */
  range_sync(e, "/t/range/1", NULL, old_rev, 0, &g);
  MF_ASSERT_EQ(g.r.rc, 0);
  MF_ASSERT_EQ(g.r.kvs->len, 1);
  if (g.r.kvs->len == 1) CU_ASSERT(value_is(g_ptr_array_index(g.r.kvs, 0), "old"));
  dir_etcd_result_clear(&g.r);
  /* The prefix, with a limit. */
  char *end = dir_etcd_prefix_end("/t/range/");
  CU_ASSERT_STRING_EQUAL(end, "/t/range0");
  range_sync(e, "/t/range/", end, 0, 2, &g);
  MF_ASSERT_EQ(g.r.rc, 0);
  MF_ASSERT_EQ(g.r.kvs->len, 2);
  MF_ASSERT_EQ(g.r.more, 1);
  if (g.r.kvs->len == 2) {
    CU_ASSERT_STRING_EQUAL(((dir_etcd_kv_t *)g_ptr_array_index(g.r.kvs, 0))->key, "/t/range/1");
    CU_ASSERT_STRING_EQUAL(((dir_etcd_kv_t *)g_ptr_array_index(g.r.kvs, 1))->key, "/t/range/2");
  }
  dir_etcd_result_clear(&g.r);
  /* The whole prefix: five keys, not /t/rangeX. */
  range_sync(e, "/t/range/", end, 0, 0, &g);
  MF_ASSERT_EQ(g.r.rc, 0);
  MF_ASSERT_EQ(g.r.kvs->len, 5);
  MF_ASSERT_EQ(g.r.more, 0);
  dir_etcd_result_clear(&g.r);
  g_free(end);
  /* A key that does not exist. */
  range_sync(e, "/t/range/none", NULL, 0, 0, &g);
  MF_ASSERT_EQ(g.r.rc, 0);
  MF_ASSERT_EQ(g.r.kvs->len, 0);
  dir_etcd_result_clear(&g.r);
  /* Delete the prefix. */
  got_init(&g);
  char *end2 = dir_etcd_prefix_end("/t/range/");
  dir_etcd_delete(e, "/t/range/", end2, on_result, &g);
  wait_for(&g);
  MF_ASSERT_EQ(g.r.rc, 0);
  MF_ASSERT_EQ(g.r.deleted, 5);
  dir_etcd_result_clear(&g.r);
  g_free(end2);
  client_free(e);
}

static void test_binary_values_with_zero_bytes_round_trip(void) {
  dir_etcd_t *e = client(one.endpoints, 2000);
  got_t g;
  unsigned char val[300];
  for (size_t i = 0; i < sizeof val; i++) val[i] = (unsigned char)(i % 3 == 0 ? 0 : i);
  put_sync(e, "/t/bin", val, sizeof val, 0, &g);
  dir_etcd_result_clear(&g.r);
  range_sync(e, "/t/bin", NULL, 0, 0, &g);
  MF_ASSERT_EQ(g.r.kvs->len, 1);
  if (g.r.kvs->len == 1) {
    gsize n = 0;
    const void *d = g_bytes_get_data(((dir_etcd_kv_t *)g_ptr_array_index(g.r.kvs, 0))->value, &n);
    MF_ASSERT_EQ(n, sizeof val);
    CU_ASSERT(n == sizeof val && memcmp(d, val, n) == 0);
  }
  dir_etcd_result_clear(&g.r);
  /* An empty value is a key with an empty value, not a missing one. */
  put_sync(e, "/t/empty", "", 0, 0, &g);
  dir_etcd_result_clear(&g.r);
  range_sync(e, "/t/empty", NULL, 0, 0, &g);
  MF_ASSERT_EQ(g.r.kvs->len, 1);
  if (g.r.kvs->len == 1) MF_ASSERT_EQ(g_bytes_get_size(((dir_etcd_kv_t *)g_ptr_array_index(g.r.kvs, 0))->value), 0);
  dir_etcd_result_clear(&g.r);
  client_free(e);
}

static void create_txn(dir_etcd_t *e, const char *key, const char *val, got_t *g) {
  dir_etcd_txn_t *t = dir_etcd_txn_new();
  dir_etcd_txn_cmp_create(t, key, 0);
  dir_etcd_txn_put(t, 0, key, val, strlen(val), 0);
  dir_etcd_txn_put(t, 0, "/t/txn/side", "s", 1, 0);
  dir_etcd_txn_get(t, 1, key);
  MF_ASSERT_EQ(dir_etcd_txn_size(t), 2 * strlen(key) + strlen(val) + strlen("/t/txn/side") + 1 + strlen(key));
  got_init(g);
  dir_etcd_txn(e, t, on_result, g);
  wait_for(g);
}

static void test_txn_cmp_create_succeeds_once_then_fails_with_the_current_key(void) {
  dir_etcd_t *e = client(one.endpoints, 2000);
  got_t g;
  create_txn(e, "/t/txn/k", "first", &g);
  MF_ASSERT_EQ(g.r.rc, 0);
  MF_ASSERT_EQ(g.r.succeeded, 1);
  MF_ASSERT_EQ(g.r.kvs->len, 0);
  int64_t created = g.r.revision;
  dir_etcd_result_clear(&g.r);

  create_txn(e, "/t/txn/k", "second", &g);
  MF_ASSERT_EQ(g.r.rc, 0);
  MF_ASSERT_EQ(g.r.succeeded, 0);
  MF_ASSERT_EQ(g.r.kvs->len, 1);
  if (g.r.kvs->len == 1) {
    dir_etcd_kv_t *kv = g_ptr_array_index(g.r.kvs, 0);
    CU_ASSERT(value_is(kv, "first"));
    MF_ASSERT_EQ(kv->create_revision, created);
  }
  dir_etcd_result_clear(&g.r);

  /* A compare on the create revision it has holds (the fencing pattern). */
  dir_etcd_txn_t *t = dir_etcd_txn_new();
  dir_etcd_txn_cmp_create(t, "/t/txn/k", created);
  dir_etcd_txn_delete(t, 0, "/t/txn/k", NULL);
  got_init(&g);
  dir_etcd_txn(e, t, on_result, &g);
  wait_for(&g);
  MF_ASSERT_EQ(g.r.rc, 0);
  MF_ASSERT_EQ(g.r.succeeded, 1);
  dir_etcd_result_clear(&g.r);
  range_sync(e, "/t/txn/k", NULL, 0, 0, &g);
  MF_ASSERT_EQ(g.r.kvs->len, 0);
  dir_etcd_result_clear(&g.r);
  client_free(e);
}

static void test_lease_grant_put_keepalive_and_revoke(void) {
  dir_etcd_t *e = client(one.endpoints, 2000);
  got_t g;
  got_init(&g);
  dir_etcd_lease_grant(e, 10, on_result, &g);
  wait_for(&g);
  MF_ASSERT_EQ(g.r.rc, 0);
  int64_t id = g.r.lease_id;
  CU_ASSERT(id > 0);
  MF_ASSERT_EQ(g.r.ttl, 10);
  dir_etcd_result_clear(&g.r);

  put_sync(e, "/t/lease/k", "v", 1, id, &g);
  dir_etcd_result_clear(&g.r);
  range_sync(e, "/t/lease/k", NULL, 0, 0, &g);
  MF_ASSERT_EQ(g.r.kvs->len, 1);
  if (g.r.kvs->len == 1) MF_ASSERT_EQ(((dir_etcd_kv_t *)g_ptr_array_index(g.r.kvs, 0))->lease, id);
  dir_etcd_result_clear(&g.r);

  for (int i = 0; i < 3; i++) {
    got_init(&g);
    dir_etcd_lease_keepalive(e, id, on_result, &g);
    wait_for(&g);
    MF_ASSERT_EQ(g.r.rc, 0);
    MF_ASSERT_EQ(g.r.lease_id, id);
    MF_ASSERT_EQ(g.r.ttl, 10);
    dir_etcd_result_clear(&g.r);
  }

  got_init(&g);
  dir_etcd_lease_revoke(e, id, on_result, &g);
  wait_for(&g);
  MF_ASSERT_EQ(g.r.rc, 0);
  dir_etcd_result_clear(&g.r);
  range_sync(e, "/t/lease/k", NULL, 0, 0, &g);
  MF_ASSERT_EQ(g.r.rc, 0);
  MF_ASSERT_EQ(g.r.kvs->len, 0); /* the key went with its lease */
  dir_etcd_result_clear(&g.r);

  /* A keepalive of a gone lease: ttl <= 0, not an error. */
  got_init(&g);
  dir_etcd_lease_keepalive(e, id, on_result, &g);
  wait_for(&g);
  MF_ASSERT_EQ(g.r.rc, 0);
  CU_ASSERT(g.r.ttl <= 0);
  dir_etcd_result_clear(&g.r);
  /* Revoking it again is etcd's "not found". */
  got_init(&g);
  dir_etcd_lease_revoke(e, id, on_result, &g);
  wait_for(&g);
  MF_ASSERT_EQ(g.r.rc, MAYFLY_EPROTO);
  CU_ASSERT(strstr(g.r.why, "lease not found") != NULL);
  dir_etcd_result_clear(&g.r);
  client_free(e);
}

/* What a watch delivered, in order. */
typedef struct seen {
  GPtrArray *lines; /* "PUT key value rev" / "DELETE key rev" */
  int64_t last_rev;
  int in_order;
  int ended, rc, compacted;
  int64_t compact_revision;
} seen_t;

static void on_watch(const dir_etcd_event_t *ev, size_t n, int64_t revision, int rc, const dir_etcd_result_t *why,
                     void *ud) {
  seen_t *s = ud;
  if (rc != 0) {
    CU_ASSERT_FALSE(s->ended);
    CU_ASSERT_PTR_NOT_NULL(why);
    s->ended = 1;
    s->rc = rc;
    s->compacted = why != NULL && why->compacted;
    s->compact_revision = why != NULL ? why->compact_revision : 0;
    return;
  }
  for (size_t i = 0; i < n; i++) {
    if (ev[i].kv.mod_revision < s->last_rev) s->in_order = 0;
    s->last_rev = ev[i].kv.mod_revision;
    gsize len = 0;
    const char *d = g_bytes_get_data(ev[i].kv.value, &len);
    g_ptr_array_add(s->lines, ev[i].deleted ? g_strdup_printf("DELETE %s", ev[i].kv.key)
                                            : g_strdup_printf("PUT %s %.*s", ev[i].kv.key, (int)len, d ? d : ""));
  }
}

static void seen_init(seen_t *s) {
  memset(s, 0, sizeof *s);
  s->lines = g_ptr_array_new_with_free_func(g_free);
  s->in_order = 1;
}

static void tick_noop(uv_timer_t *t) {
}

/* Runs the loop until the watch saw n lines or ended, up to 10 s. */
static void wait_lines(seen_t *s, guint n) {
  gint64 until = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
  uv_timer_t tick;
  uv_timer_init(&loop, &tick);
  uv_timer_start(&tick, tick_noop, 50, 50);
  while (s->lines->len < n && !s->ended && g_get_monotonic_time() < until) uv_run(&loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&tick, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
}

static void test_watch_from_a_revision_sees_puts_and_deletes_in_order(void) {
  dir_etcd_t *e = client(one.endpoints, 2000);
  got_t g;
  put_sync(e, "/t/watch/a", "1", 1, 0, &g);
  int64_t from = g.r.revision;
  dir_etcd_result_clear(&g.r);
  put_sync(e, "/t/watch/b", "2", 1, 0, &g);
  dir_etcd_result_clear(&g.r);
  got_init(&g);
  dir_etcd_delete(e, "/t/watch/a", NULL, on_result, &g);
  wait_for(&g);
  dir_etcd_result_clear(&g.r);
  put_sync(e, "/t/other", "x", 1, 0, &g); /* outside the watched prefix */
  dir_etcd_result_clear(&g.r);

  seen_t s;
  seen_init(&s);
  char *end = dir_etcd_prefix_end("/t/watch/");
  dir_etcd_watch_t *w = dir_etcd_watch(e, "/t/watch/", end, from, on_watch, &s);
  wait_lines(&s, 3);
  /* And live ones, after the history. */
  put_sync(e, "/t/watch/c", "3", 1, 0, &g);
  dir_etcd_result_clear(&g.r);
  got_init(&g);
  dir_etcd_txn_t *t = dir_etcd_txn_new();
  dir_etcd_txn_put(t, 0, "/t/watch/d", "4", 1, 0);
  dir_etcd_txn_delete(t, 0, "/t/watch/c", NULL);
  dir_etcd_txn(e, t, on_result, &g);
  wait_for(&g);
  dir_etcd_result_clear(&g.r);
  wait_lines(&s, 6);
  const char *want[] = {"PUT /t/watch/a 1", "PUT /t/watch/b 2", "DELETE /t/watch/a",
                        "PUT /t/watch/c 3", "PUT /t/watch/d 4", "DELETE /t/watch/c"};
  MF_ASSERT_EQ(s.lines->len, 6);
  for (guint i = 0; i < s.lines->len && i < 6; i++) {
    if (strcmp(g_ptr_array_index(s.lines, i), want[i]) != 0) {
      fprintf(stderr, "  event %u: %s, want %s\n", i, (char *)g_ptr_array_index(s.lines, i), want[i]);
    }
    CU_ASSERT_STRING_EQUAL(g_ptr_array_index(s.lines, i), want[i]);
  }
  CU_ASSERT(s.in_order);
  CU_ASSERT_FALSE(s.ended);
  dir_etcd_watch_cancel(w);
  g_ptr_array_free(s.lines, TRUE);
  g_free(end);
  client_free(e);
}

static void test_compaction_and_a_watch_from_a_compacted_revision(void) {
  dir_etcd_t *e = client(one.endpoints, 2000);
  got_t g;
  put_sync(e, "/t/compact", "1", 1, 0, &g);
  int64_t old = g.r.revision;
  dir_etcd_result_clear(&g.r);
  put_sync(e, "/t/compact", "2", 1, 0, &g);
  int64_t now = g.r.revision;
  dir_etcd_result_clear(&g.r);

  got_init(&g);
  dir_etcd_compact(e, now, on_result, &g);
  wait_for(&g);
  MF_ASSERT_EQ(g.r.rc, 0);
  dir_etcd_result_clear(&g.r);
  /* Again: already compacted. */
  got_init(&g);
  dir_etcd_compact(e, now, on_result, &g);
  wait_for(&g);
  MF_ASSERT_EQ(g.r.rc, MAYFLY_EPROTO);
  MF_ASSERT_EQ(g.r.compacted, 1);
  dir_etcd_result_clear(&g.r);
  /* A range at the old revision. */
  range_sync(e, "/t/compact", NULL, old, 0, &g);
  MF_ASSERT_EQ(g.r.rc, MAYFLY_EPROTO);
  MF_ASSERT_EQ(g.r.compacted, 1);
  CU_ASSERT(strstr(g.r.why, "compacted") != NULL);
  dir_etcd_result_clear(&g.r);
  /* The newest is still there. */
  range_sync(e, "/t/compact", NULL, now, 0, &g);
  MF_ASSERT_EQ(g.r.rc, 0);
  MF_ASSERT_EQ(g.r.kvs->len, 1);
  dir_etcd_result_clear(&g.r);

  seen_t s;
  seen_init(&s);
  dir_etcd_watch_t *w = dir_etcd_watch(e, "/t/compact", NULL, old, on_watch, &s);
  wait_lines(&s, 1);
  CU_ASSERT(s.ended);
  MF_ASSERT_EQ(s.rc, MAYFLY_EPROTO);
  MF_ASSERT_EQ(s.compacted, 1);
  MF_ASSERT_EQ(s.compact_revision, now);
  MF_ASSERT_EQ(s.lines->len, 0);
  dir_etcd_watch_cancel(w);
  g_ptr_array_free(s.lines, TRUE);
  client_free(e);
}

static void test_a_request_too_large_reports_etoobig(void) {
  dir_etcd_t *e = client(one.endpoints, 2000);
  size_t len = 2 << 20; /* etcd's default limit is 1.5 MiB */
  char *big = g_malloc0(len);
  got_t g;
  got_init(&g);
  dir_etcd_put(e, "/t/big", big, len, 0, on_result, &g);
  wait_for(&g);
  MF_ASSERT_EQ(g.r.rc, MAYFLY_ETOOBIG);
  /* etcd's own "request is too large", or its gRPC server's "received
   * message larger than max" for a body past the limit. */
  CU_ASSERT(strstr(g.r.why, "too large") != NULL || strstr(g.r.why, "larger than max") != NULL);
  dir_etcd_result_clear(&g.r);
  /* In a transaction too. */
  dir_etcd_txn_t *t = dir_etcd_txn_new();
  dir_etcd_txn_put(t, 0, "/t/big/1", big, len / 2, 0);
  dir_etcd_txn_put(t, 0, "/t/big/2", big, len / 2, 0);
  CU_ASSERT(dir_etcd_txn_size(t) >= len);
  got_init(&g);
  dir_etcd_txn(e, t, on_result, &g);
  wait_for(&g);
  MF_ASSERT_EQ(g.r.rc, MAYFLY_ETOOBIG);
  dir_etcd_result_clear(&g.r);
  g_free(big);
  client_free(e);
}

static void test_many_requests_in_flight_all_answer(void) {
  dir_etcd_t *e = client(one.endpoints, 5000);
  enum { N = 200 };
  static got_t g[N];
  for (int i = 0; i < N; i++) {
    char k[32];
    snprintf(k, sizeof k, "/t/many/%03d", i);
    got_init(&g[i]);
    dir_etcd_txn_t *t = dir_etcd_txn_new();
    dir_etcd_txn_cmp_create(t, k, 0);
    dir_etcd_txn_put(t, 0, k, k, strlen(k), 0);
    dir_etcd_txn(e, t, on_result, &g[i]);
  }
  int ok = 0;
  for (int i = 0; i < N; i++) {
    wait_for(&g[i]);
    ok += g[i].r.rc == 0 && g[i].r.succeeded;
    dir_etcd_result_clear(&g[i].r);
  }
  MF_ASSERT_EQ(ok, N);
  got_t r;
  char *end = dir_etcd_prefix_end("/t/many/");
  range_sync(e, "/t/many/", end, 0, 0, &r);
  MF_ASSERT_EQ(r.r.kvs->len, N);
  dir_etcd_result_clear(&r.r);
  g_free(end);
  client_free(e);
}

static int called_after_free, freed;
static void must_not_be_called(const dir_etcd_result_t *r, void *ud) {
  called_after_free += freed;
}
static void watch_must_not_be_called(const dir_etcd_event_t *ev, size_t n, int64_t revision, int rc,
                                     const dir_etcd_result_t *why, void *ud) {
  called_after_free += freed;
}

static void test_free_with_requests_and_watches_outstanding_calls_nothing(void) {
  dir_etcd_t *e = client(one.endpoints, 2000);
  /* Some not sent yet, some in flight, one watch streaming. */
  got_t g;
  seen_t s;
  seen_init(&s);
  /* The put first, the watch from its revision: a watch "from now" could
   * be created after the put and miss it. */
  put_sync(e, "/t/free", "1", 1, 0, &g);
  dir_etcd_watch_t *w = dir_etcd_watch(e, "/t/free", NULL, g.r.revision, on_watch, &s);
  (void)w;
  dir_etcd_result_clear(&g.r);
  wait_lines(&s, 1);
  MF_ASSERT_EQ(s.lines->len, 1);
  for (int i = 0; i < 20; i++) dir_etcd_put(e, "/t/free", "2", 1, 0, must_not_be_called, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
  for (int i = 0; i < 20; i++) dir_etcd_range(e, "/t/free", NULL, 0, 0, must_not_be_called, NULL);
  dir_etcd_watch(e, "/t/free2", NULL, 0, watch_must_not_be_called, NULL);
  freed = 1;
  client_free(e);
  /* Run the loop dry: nothing of the client is left to call anyone. */
  uv_run(&loop, UV_RUN_DEFAULT);
  MF_ASSERT_EQ(called_after_free, 0);
  g_ptr_array_free(s.lines, TRUE);
}

/* Frees the client from inside one of its callbacks. */
static void free_from_callback(const dir_etcd_result_t *r, void *ud) {
  dir_etcd_t **e = ud;
  freed = 1;
  dir_etcd_free(*e);
  *e = NULL;
}

static void test_free_from_inside_a_callback(void) {
  dir_etcd_t *e = client(one.endpoints, 2000);
  freed = 0;
  dir_etcd_put(e, "/t/free3", "1", 1, 0, free_from_callback, &e);
  for (int i = 0; i < 5; i++) dir_etcd_put(e, "/t/free3", "1", 1, 0, must_not_be_called, NULL);
  while (e != NULL) uv_run(&loop, UV_RUN_ONCE);
  uv_run(&loop, UV_RUN_DEFAULT);
  MF_ASSERT_EQ(called_after_free, 0);
}

static void test_bad_endpoints_are_refused(void) {
  dir_etcd_t *e = NULL;
  char why[256];
  MF_ASSERT_EQ(dir_etcd_new(&loop, "", 1000, &e, why, sizeof why), MAYFLY_EINVAL);
  MF_ASSERT_EQ(dir_etcd_new(&loop, "127.0.0.1:2379", 1000, &e, why, sizeof why), MAYFLY_EINVAL);
  CU_ASSERT(strstr(why, "127.0.0.1:2379") != NULL);
  MF_ASSERT_EQ(dir_etcd_new(&loop, "http://a:1,ftp://b:2", 1000, &e, why, sizeof why), MAYFLY_EINVAL);
  MF_ASSERT_EQ(dir_etcd_new(&loop, "http://a:1", 0, &e, why, sizeof why), MAYFLY_EINVAL);
  CU_ASSERT_PTR_NULL(e);
}

/* Endpoints nobody listens on: the request fails within its deadline plus
 * a generous margin, with EIO or ETIMEDOUT. */
static void test_a_dead_only_endpoint_list_fails_within_the_deadline(void) {
  char eps[128];
  int ports[2];
  mf_etcd_proc_t dead;
  /* Take two ports from a cluster of our own that we kill: surely closed. */
  int rc = mf_etcd_proc_start(1, &dead);
  MF_ASSERT_EQ(rc, 0);
  if (rc != 0) return;
  ports[0] = dead.client_port[0];
  ports[1] = dead.peer_port[0];
  mf_etcd_proc_stop(&dead);
  snprintf(eps, sizeof eps, "http://127.0.0.1:%d,http://127.0.0.1:%d", ports[0], ports[1]);
  dir_etcd_t *e = client(eps, 1000);
  got_t g;
  gint64 t0 = g_get_monotonic_time();
  got_init(&g);
  dir_etcd_put(e, "/t/dead", "x", 1, 0, on_result, &g);
  wait_for(&g);
  gint64 took_ms = (g_get_monotonic_time() - t0) / 1000;
  CU_ASSERT(g.r.rc == MAYFLY_EIO || g.r.rc == MAYFLY_ETIMEDOUT);
  CU_ASSERT(took_ms < 1000 + 3000);
  CU_ASSERT(strlen(g.r.why) > 0);
  dir_etcd_result_clear(&g.r);
  /* A watch on them ends with EIO in about the same time. */
  seen_t s;
  seen_init(&s);
  dir_etcd_watch_t *w = dir_etcd_watch(e, "/t/dead", NULL, 0, on_watch, &s);
  wait_lines(&s, 1);
  CU_ASSERT(s.ended);
  MF_ASSERT_EQ(s.rc, MAYFLY_EIO);
  dir_etcd_watch_cancel(w);
  g_ptr_array_free(s.lines, TRUE);
  client_free(e);
}

/* Three members; the one the client talks to is killed: requests go on
 * through the others, and a watch reopens on another member without losing
 * or repeating an event. */
static void test_three_members_one_killed_requests_and_watches_fail_over(void) {
  mf_etcd_proc_t c;
  int rc = mf_etcd_proc_start(3, &c);
  MF_ASSERT_EQ(rc, 0);
  if (rc != 0) return;
  dir_etcd_t *e = client(c.endpoints, 3000);
  got_t g;
  put_sync(e, "/t/ha/0", "0", 1, 0, &g);
  int64_t from = g.r.revision;
  dir_etcd_result_clear(&g.r);
  seen_t s;
  seen_init(&s);
  char *end = dir_etcd_prefix_end("/t/ha/");
  dir_etcd_watch_t *w = dir_etcd_watch(e, "/t/ha/", end, from, on_watch, &s);
  wait_lines(&s, 1);
  MF_ASSERT_EQ(s.lines->len, 1);

  /* The client starts with the first endpoint: kill that member. */
  mf_etcd_proc_kill(&c, 0, SIGKILL);
  int ok = 0;
  for (int i = 1; i <= 20; i++) {
    char k[32];
    snprintf(k, sizeof k, "/t/ha/%d", i);
    got_init(&g);
    dir_etcd_txn_t *t = dir_etcd_txn_new();
    dir_etcd_txn_cmp_create(t, k, 0);
    dir_etcd_txn_put(t, 0, k, "v", 1, 0);
    dir_etcd_txn(e, t, on_result, &g);
    wait_for(&g);
    if (g.r.rc != 0) fprintf(stderr, "  txn %d: %s\n", i, g.r.why);
    ok += g.r.rc == 0 && g.r.succeeded;
    dir_etcd_result_clear(&g.r);
  }
  MF_ASSERT_EQ(ok, 20);
  range_sync(e, "/t/ha/", end, 0, 0, &g);
  MF_ASSERT_EQ(g.r.rc, 0);
  MF_ASSERT_EQ(g.r.kvs->len, 21);
  dir_etcd_result_clear(&g.r);
  wait_lines(&s, 21);
  MF_ASSERT_EQ(s.lines->len, 21); /* each event once */
  CU_ASSERT(s.in_order);
  CU_ASSERT_FALSE(s.ended);
  /* A client of the killed member alone fails; with it back, works. */
  dir_etcd_t *only = client(mf_etcd_proc_endpoint(&c, 0), 500);
  got_init(&g);
  dir_etcd_range(only, "/t/ha/1", NULL, 0, 0, on_result, &g);
  wait_for(&g);
  CU_ASSERT(g.r.rc == MAYFLY_EIO || g.r.rc == MAYFLY_ETIMEDOUT);
  dir_etcd_result_clear(&g.r);
  MF_ASSERT_EQ(mf_etcd_proc_restart(&c, 0), 0);
  range_sync(only, "/t/ha/1", NULL, 0, 0, &g);
  MF_ASSERT_EQ(g.r.rc, 0);
  MF_ASSERT_EQ(g.r.kvs->len, 1);
  dir_etcd_result_clear(&g.r);
  client_free(only);
  dir_etcd_watch_cancel(w);
  g_ptr_array_free(s.lines, TRUE);
  g_free(end);
  client_free(e);
  mf_etcd_proc_stop(&c);
}

/* ---- bench mode ---------------------------------------------------------- */

typedef struct bench {
  dir_etcd_t *e;
  int inflight, left, done;
  GArray *lat_us;
  int errors;
} bench_t;

typedef struct bench_op {
  bench_t *b;
  gint64 t0;
  int n;
} bench_op_t;

static void bench_send(bench_op_t *op);

static void bench_done(const dir_etcd_result_t *r, void *ud) {
  bench_op_t *op = ud;
  bench_t *b = op->b;
  gint64 us = g_get_monotonic_time() - op->t0;
  g_array_append_val(b->lat_us, us);
  if (r->rc != 0 || !r->succeeded) b->errors++;
  b->done++;
  if (b->left > 0) {
    b->left--;
    bench_send(op);
  } else {
    g_free(op);
  }
}

/* A small txn of the log's shape: a fence compare and one put. */
static void bench_send(bench_op_t *op) {
  static int seq;
  char k[64];
  snprintf(k, sizeof k, "/bench/log/%016x", ++seq);
  dir_etcd_txn_t *t = dir_etcd_txn_new();
  dir_etcd_txn_cmp_create(t, "/bench/leader", 0);
  dir_etcd_txn_put(t, 0, k, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", 64, 0);
  op->t0 = g_get_monotonic_time();
  dir_etcd_txn(op->b->e, t, bench_done, op);
}

static gint cmp_i64(gconstpointer a, gconstpointer b) {
  gint64 x = *(const gint64 *)a, y = *(const gint64 *)b;
  return x < y ? -1 : x > y;
}

static int bench(void) {
  mf_etcd_proc_t p;
  int rc = mf_etcd_proc_start(1, &p);
  if (rc != 0) return rc == MF_ETCD_SKIP ? 77 : 1;
  const int levels[] = {1, 4, 16};
  for (size_t l = 0; l < G_N_ELEMENTS(levels); l++) {
    bench_t b = {.lat_us = g_array_new(FALSE, FALSE, sizeof(gint64))};
    char why[256];
    if (dir_etcd_new(&loop, p.endpoints, 5000, &b.e, why, sizeof why) != 0) {
      fprintf(stderr, "dir_etcd_new: %s\n", why);
      return 1;
    }
    int total = levels[l] == 1 ? 2000 : 8000;
    b.left = total - levels[l];
    gint64 t0 = g_get_monotonic_time();
    for (int i = 0; i < levels[l]; i++) {
      bench_op_t *op = g_new0(bench_op_t, 1);
      op->b = &b;
      bench_send(op);
    }
    while (b.done < total) uv_run(&loop, UV_RUN_ONCE);
    double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
    g_array_sort(b.lat_us, cmp_i64);
    gint64 *v = (gint64 *)(void *)b.lat_us->data;
    printf("txn in flight %2d: %6d txns in %.2f s = %7.0f txn/s; latency p50 %5.0f us p99 %6.0f us (errors %d)\n",
           levels[l], total, secs, total / secs, (double)v[total / 2], (double)v[total * 99 / 100], b.errors);
    g_array_free(b.lat_us, TRUE);
    client_free(b.e);
  }
  mf_etcd_proc_stop(&p);
  return 0;
}

static const mf_test_t tests[] = {
    {"put and range with a revision, a limit and a prefix end", test_put_and_range_with_revision_limit_and_prefix},
    {"binary values with zero bytes round-trip", test_binary_values_with_zero_bytes_round_trip},
    {"a txn cmp_create succeeds once, then fails with the current key",
     test_txn_cmp_create_succeeds_once_then_fails_with_the_current_key},
    {"lease grant, put with the lease, keepalive and revoke", test_lease_grant_put_keepalive_and_revoke},
    {"a watch from a revision sees puts and deletes in order",
     test_watch_from_a_revision_sees_puts_and_deletes_in_order},
    {"compaction, and a watch from a compacted revision", test_compaction_and_a_watch_from_a_compacted_revision},
    {"a request too large reports ETOOBIG", test_a_request_too_large_reports_etoobig},
    {"200 transactions in flight all answer", test_many_requests_in_flight_all_answer},
    {"free with requests and watches outstanding calls nothing",
     test_free_with_requests_and_watches_outstanding_calls_nothing},
    {"free from inside a callback", test_free_from_inside_a_callback},
    {"bad endpoints are refused", test_bad_endpoints_are_refused},
    {"a dead-only endpoint list fails within the deadline", test_a_dead_only_endpoint_list_fails_within_the_deadline},
    {"three members, one killed: requests and watches fail over",
     test_three_members_one_killed_requests_and_watches_fail_over},
    {NULL, NULL}};

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  uv_loop_init(&loop);
  if (argc > 1 && strcmp(argv[1], "bench") == 0) return bench();
  int rc = mf_etcd_proc_start(1, &one);
  if (rc == MF_ETCD_SKIP) {
    fprintf(stderr, "test_etcd: etcd is not installed; skipped\n");
    return 77;
  }
  if (rc != 0) return 1;
  int status = mf_test_run("etcd", NULL, NULL, tests);
  mf_etcd_proc_stop(&one);
  uv_run(&loop, UV_RUN_NOWAIT);
  if (uv_loop_close(&loop) != 0) {
    fprintf(stderr, "test_etcd: handles left open on the loop\n");
    status = 1;
  }
  return status;
}
