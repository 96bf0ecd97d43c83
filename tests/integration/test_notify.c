/*
 * Integration tests of notifications: a real mayfly-directory and real
 * mayfly-memserver processes on free ports, listeners of libmayfly, the
 * `mayfly watch` CLI, and raw calls of the control API's watch and publish.
 *
 * Each test states one promise a user relies on: a listener sees every write
 * of a writer exactly once and in the writer's order, whatever the
 * partitions; a lease expiry, a child created or removed reaches a listener
 * of the directory; events carry the right sizes and offsets; missed events
 * are reported as a GAP with the right count instead of vanishing; `mayfly
 * watch` prints what happens and follows the CLI's conventions; hostile
 * watch and publish arguments get clear errors. Daemons die with the test
 * (tests/integration/harness.c).
 */
#include <glib.h>
#include <json-glib/json-glib.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/ctl.h"
#include "client/mayfly.h"
#include "harness.h"
#include "mf_test.h"

#define NMS 3

static int64_t now_ms(void) {
  return g_get_monotonic_time() / 1000;
}

/* --- a cluster: one directory, NMS memory servers (ms[i] NULL when not
 * started), one client --- */

typedef struct {
  mf_daemon_t *dir;
  mf_daemon_t *ms[NMS];
  mayfly_client_t *c;
} cluster_t;

/* Starts a directory (heartbeats every 200 ms, plus `extra` arguments, a
 * NULL-terminated list that may be NULL) and `nms` memory servers of 32
 * blocks of 64 KiB, and connects a client. Returns 0 when all is up. */
static int cluster_start(cluster_t *cl, int nms, const char *const *extra) {
  memset(cl, 0, sizeof *cl);
  const char *a[8] = {NULL};
  for (int i = 0; extra != NULL && extra[i] != NULL && i < 6; i++) a[i] = extra[i];
  cl->dir = mf_start_directory("--heartbeat-ms", "200", a[0], a[1], a[2], a[3], a[4], a[5], NULL);
  if (cl->dir == NULL) {
    CU_FAIL("the directory did not start");
    return -1;
  }
  for (int i = 0; i < nms; i++) {
    cl->ms[i] = mf_start_memserver(cl->dir, 32, "64KiB", NULL);
    if (cl->ms[i] == NULL) {
      CU_FAIL("a memory server did not start");
      return -1;
    }
  }
  int rc = mayfly_connect(cl->dir->address, NULL, &cl->c);
  MF_ASSERT_EQ(rc, 0);
  return rc;
}

/* Disconnects and stops every daemon still running; each must exit 0. */
static void cluster_stop(cluster_t *cl) {
  mayfly_disconnect(cl->c);
  cl->c = NULL;
  for (int i = 0; i < NMS; i++) {
    if (cl->ms[i] != NULL) MF_ASSERT_EQ(mf_stop(cl->ms[i]), 0);
    cl->ms[i] = NULL;
  }
  if (cl->dir != NULL) MF_ASSERT_EQ(mf_stop(cl->dir), 0);
  cl->dir = NULL;
}

/* Takes events from l until n came or timeout_ms passed; returns how many
 * (appended to out, a GPtrArray freeing with mayfly_event_free). */
static guint take_events(mayfly_listener_t *l, guint n, int timeout_ms, GPtrArray *out) {
  int64_t deadline = now_ms() + timeout_ms;
  guint got = 0;
  while (got < n) {
    int64_t left = deadline - now_ms();
    if (left <= 0) break;
    mayfly_event_t *ev = NULL;
    int rc = mayfly_listener_next(l, &ev, (int)left);
    if (rc != 0) break;
    g_ptr_array_add(out, ev);
    got++;
  }
  return got;
}

static mayfly_event_t *ev_at(GPtrArray *a, guint i) {
  return g_ptr_array_index(a, i);
}

static int key_is(const mayfly_event_t *ev, const char *key) {
  return ev->key != NULL && ev->key_len == strlen(key) && memcmp(ev->key, key, ev->key_len) == 0;
}

static void dump_events(const char *what, GPtrArray *a, guint from, guint n) {
  fprintf(stderr, "  %s:\n", what);
  for (guint i = from; i < a->len && i < from + n; i++) {
    const mayfly_event_t *ev = ev_at(a, i);
    fprintf(stderr, "    #%u seq %lld %s %s key=%.*s offset=%lld length=%lld\n", i,
            (long long)ev->seq, mayfly_event_kind_name(ev->kind), ev->path, (int)ev->key_len,
            ev->key ? (const char *)ev->key : "", (long long)ev->offset, (long long)ev->length);
  }
}

/* --- 1. one writer, several partitions, two listeners --- */

#define WRITES 2000

typedef struct {
  mayfly_ns_t *ns;
  GPtrArray *expect; /* char *: "put:KEY" / "delete:KEY" in the order acknowledged */
  int failed;
} writer_t;

static gpointer writer_run(gpointer data) {
  writer_t *w = data;
  for (int i = 0; i < WRITES; i++) {
    char key[32];
    snprintf(key, sizeof key, "key-%05d", i);
    if (mayfly_kv_put(w->ns, key, strlen(key), "value", 5) != 0) {
      w->failed = 1;
      return NULL;
    }
    g_ptr_array_add(w->expect, g_strdup_printf("put:%s", key));
    if (i % 10 == 9) {
      snprintf(key, sizeof key, "key-%05d", i - 5);
      if (mayfly_kv_delete(w->ns, key, strlen(key)) != 0) {
        w->failed = 1;
        return NULL;
      }
      g_ptr_array_add(w->expect, g_strdup_printf("delete:%s", key));
    }
  }
  return NULL;
}

/* The events are exactly the writer's acknowledged writes, in its order,
 * numbered one after another, with no GAP. */
static int matches_writer(GPtrArray *got, GPtrArray *expect) {
  if (got->len != expect->len) {
    fprintf(stderr, "  listener got %u events, the writer made %u writes\n", got->len,
            expect->len);
  }
  for (guint i = 0; i < got->len || i < expect->len; i++) {
    if (i >= got->len || i >= expect->len) {
      fprintf(stderr, "  event %u: %s\n", i,
              i >= got->len ? (char *)g_ptr_array_index(expect, i) : "one more than written");
      return 0;
    }
    const mayfly_event_t *ev = ev_at(got, i);
    char *want = g_ptr_array_index(expect, i);
    const char *key = strchr(want, ':') + 1;
    mayfly_event_kind_t kind = want[0] == 'p' ? MAYFLY_EV_PUT : MAYFLY_EV_DELETE;
    int ok = ev->kind == kind && key_is(ev, key) && ev->length == (int64_t)strlen(key) &&
             (i == 0 || ev->seq == ev_at(got, i - 1)->seq + 1);
    if (!ok) {
      fprintf(stderr, "  event %u differs from write %s\n", i, want);
      dump_events("around it", got, i > 2 ? i - 2 : 0, 5);
      return 0;
    }
  }
  return 1;
}

static void test_two_listeners_see_every_write_of_a_writer_once_and_in_order_across_servers(
    void) {
  cluster_t cl;
  if (cluster_start(&cl, NMS, NULL) != 0) goto out;
  mayfly_create_options_t co = {.blocks = 6};
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_create(cl.c, "/job/table", MAYFLY_KIND_KV, &co, &st), 0);
  if (st != NULL) {
    /* Spread over the three servers: events of all of them meet in order. */
    int seen[64] = {0}, servers = 0;
    for (size_t i = 0; i < st->npartitions; i++) {
      if (!seen[st->partitions[i].server_id & 63]++) servers++;
    }
    MF_ASSERT_EQ(servers, NMS);
  }
  mayfly_stat_free(st);
  writer_t w = {.expect = g_ptr_array_new_with_free_func(g_free)};
  MF_ASSERT_EQ(mayfly_mount(cl.c, "/job/table", MAYFLY_KIND_KV, NULL, &w.ns), 0);
  /* The memory servers serve the partitions before anyone listens: they
   * learn of the listeners from their heartbeats, and mayfly_listen
   * returns only once they have. */
  for (int i = 0; i < 200 && w.ns != NULL; i++) {
    char key[32];
    snprintf(key, sizeof key, "before-%d", i);
    MF_ASSERT_EQ(mayfly_kv_put(w.ns, key, strlen(key), "v", 1), 0);
  }
  mayfly_listener_t *l1 = NULL, *l2 = NULL;
  MF_ASSERT_EQ(mayfly_listen(cl.c, "/job/table", 0, &l1), 0);
  MF_ASSERT_EQ(mayfly_listen(cl.c, "/job/table",
                             MAYFLY_EV_BIT(MAYFLY_EV_PUT) | MAYFLY_EV_BIT(MAYFLY_EV_DELETE), &l2),
               0);
  if (l1 == NULL || l2 == NULL || w.ns == NULL) goto done;
  int64_t t0 = now_ms();
  GThread *t = g_thread_new("writer", writer_run, &w);
  g_thread_join(t);
  CU_ASSERT_FALSE(w.failed);
  int64_t t1 = now_ms();
  GPtrArray *got1 = g_ptr_array_new_with_free_func((GDestroyNotify)mayfly_event_free);
  GPtrArray *got2 = g_ptr_array_new_with_free_func((GDestroyNotify)mayfly_event_free);
  take_events(l1, w.expect->len, 30000, got1);
  take_events(l2, w.expect->len, 30000, got2);
  CU_ASSERT(matches_writer(got1, w.expect));
  CU_ASSERT(matches_writer(got2, w.expect));
  /* Both listeners see the same numbers: they come from the directory. */
  if (got1->len > 0 && got2->len > 0) MF_ASSERT_EQ(ev_at(got1, 0)->seq, ev_at(got2, 0)->seq);
  /* Nothing more comes: each write gave exactly one event. */
  mayfly_event_t *extra = NULL;
  MF_ASSERT_EQ(mayfly_listener_next(l1, &extra, 300), MAYFLY_EAGAIN);
  mayfly_event_free(extra);
  printf("\n    %u writes from one writer over %d servers in %lld ms, each seen by two listeners\n",
         w.expect->len, NMS, (long long)(t1 - t0));
  g_ptr_array_free(got1, TRUE);
  g_ptr_array_free(got2, TRUE);
done:
  mayfly_unmount(w.ns);
  g_ptr_array_free(w.expect, TRUE);
  mayfly_listener_close(l1);
  mayfly_listener_close(l2);
out:
  cluster_stop(&cl);
}

/* --- 2. namespace events --- */

static void test_a_lease_expiry_reaches_a_listener_of_the_parent_directory(void) {
  cluster_t cl;
  const char *const grace[] = {"--grace-ms", "200", NULL};
  if (cluster_start(&cl, 1, grace) != 0) goto out;
  MF_ASSERT_EQ(mayfly_mkdir(cl.c, "/job", 0), 0);
  mayfly_listener_t *l = NULL;
  MF_ASSERT_EQ(mayfly_listen(cl.c, "/job", MAYFLY_EV_MASK_NAMESPACE, &l), 0);
  if (l == NULL) goto out;
  /* Created, never renewed: it expires after its 300 ms lease and the
   * directory's grace. */
  mayfly_create_options_t co = {.lease_ms = 300};
  /* t0 before the create: the lease cannot start before it, so the expiry
   * comes at least lease + grace after t0, however slow the machine. */
  int64_t t0 = now_ms();
  MF_ASSERT_EQ(mayfly_create(cl.c, "/job/short", MAYFLY_KIND_QUEUE, &co, NULL), 0);
  mayfly_dir_stats_t ds;
  MF_ASSERT_EQ(mayfly_dir_stats(cl.c, &ds), 0);
  GPtrArray *got = g_ptr_array_new_with_free_func((GDestroyNotify)mayfly_event_free);
  take_events(l, 3, (int)(300 + ds.grace_ms + 5000), got);
  int64_t waited = now_ms() - t0;
  MF_ASSERT_EQ(got->len, 3);
  if (got->len == 3) {
    const mayfly_event_kind_t want[] = {MAYFLY_EV_CHILD_CREATED, MAYFLY_EV_LEASE_EXPIRED,
                                        MAYFLY_EV_CHILD_REMOVED};
    for (guint i = 0; i < 3; i++) {
      MF_ASSERT_EQ(ev_at(got, i)->kind, want[i]);
      CU_ASSERT_STRING_EQUAL(ev_at(got, i)->path, "/job/short");
      if (i > 0) MF_ASSERT_EQ(ev_at(got, i)->seq, ev_at(got, i - 1)->seq + 1);
    }
    /* Not before the lease and grace ran out. */
    CU_ASSERT(waited >= 300 + ds.grace_ms);
  }
  MF_ASSERT_EQ(mayfly_exists(cl.c, "/job/short"), 0);
  g_ptr_array_free(got, TRUE);
  mayfly_listener_close(l);
out:
  cluster_stop(&cl);
}

/* The reducer's side of "wait for the done marker": a callback that wakes
 * the waiting thread when /job/stage1/done appears, and closes its own
 * listener. */
typedef struct {
  GMutex lock;
  GCond cond;
  int parts_seen; /* part-N created before done */
  int done;
  int64_t done_seq;
} marker_t;

static void on_stage_event(mayfly_listener_t *l, const mayfly_event_t *ev, void *ud) {
  marker_t *m = ud;
  if (ev->kind != MAYFLY_EV_CHILD_CREATED) return;
  g_mutex_lock(&m->lock);
  if (g_str_has_prefix(ev->path, "/job/stage1/part-")) m->parts_seen++;
  if (strcmp(ev->path, "/job/stage1/done") == 0 && !m->done) {
    m->done = 1;
    m->done_seq = ev->seq;
    g_cond_broadcast(&m->cond);
    mayfly_listener_close(l);
  }
  g_mutex_unlock(&m->lock);
}

typedef struct {
  const char *directory;
  int failed;
} mapper_t;

/* A mapper in a thread of its own with its own client: writes four parts,
 * then the marker. */
static gpointer mapper_run(gpointer data) {
  mapper_t *m = data;
  mayfly_client_t *c = NULL;
  if (mayfly_connect(m->directory, NULL, &c) != 0) {
    m->failed = 1;
    return NULL;
  }
  for (int i = 0; i < 4 && !m->failed; i++) {
    char path[64];
    snprintf(path, sizeof path, "/job/stage1/part-%d", i);
    mayfly_ns_t *ns = NULL;
    if (mayfly_mount(c, path, MAYFLY_KIND_FILE, NULL, &ns) != 0 ||
        mayfly_file_write(ns, 0, "data", 4) != 0) {
      m->failed = 1;
    }
    mayfly_unmount(ns);
    mf_sleep_ms(20);
  }
  if (!m->failed && mayfly_mkdir(c, "/job/stage1/done", 0) != 0) m->failed = 1;
  mayfly_disconnect(c);
  return NULL;
}

static void test_a_reducer_waits_for_the_done_marker_instead_of_polling(void) {
  cluster_t cl;
  if (cluster_start(&cl, 1, NULL) != 0) goto out;
  MF_ASSERT_EQ(mayfly_mkdir(cl.c, "/job/stage1", 1), 0);
  marker_t m = {0};
  g_mutex_init(&m.lock);
  g_cond_init(&m.cond);
  mayfly_listener_t *l = NULL;
  MF_ASSERT_EQ(mayfly_listen_callback(cl.c, "/job/stage1", MAYFLY_EV_BIT(MAYFLY_EV_CHILD_CREATED),
                                      on_stage_event, &m, &l),
               0);
  mapper_t mp = {.directory = cl.dir->address};
  GThread *t = g_thread_new("mapper", mapper_run, &mp);
  int64_t until = g_get_monotonic_time() + 10 * G_TIME_SPAN_SECOND;
  g_mutex_lock(&m.lock);
  while (!m.done && g_cond_wait_until(&m.cond, &m.lock, until)) {
  }
  int done = m.done, parts = m.parts_seen;
  int64_t seq = m.done_seq;
  g_mutex_unlock(&m.lock);
  g_thread_join(t);
  CU_ASSERT_FALSE(mp.failed);
  CU_ASSERT(done);
  /* The marker came after the four parts, numbered after them. */
  MF_ASSERT_EQ(parts, 4);
  MF_ASSERT_EQ(seq, 5);
  if (!done) mayfly_listener_close(l); /* else the callback closed it */
  mf_sleep_ms(50);                     /* let the listener's thread finish */
  g_mutex_clear(&m.lock);
  g_cond_clear(&m.cond);
out:
  cluster_stop(&cl);
}

static void test_children_created_and_removed_reach_a_directory_listener_and_removal_ends_it(
    void) {
  cluster_t cl;
  if (cluster_start(&cl, 1, NULL) != 0) goto out;
  MF_ASSERT_EQ(mayfly_mkdir(cl.c, "/w", 0), 0);
  mayfly_listener_t *dir_l = NULL, *kv_l = NULL;
  MF_ASSERT_EQ(mayfly_listen(cl.c, "/w", 0, &dir_l), 0);
  MF_ASSERT_EQ(mayfly_create(cl.c, "/w/a", MAYFLY_KIND_KV, NULL, NULL), 0);
  MF_ASSERT_EQ(mayfly_listen(cl.c, "/w/a", 0, &kv_l), 0);
  MF_ASSERT_EQ(mayfly_mkdir(cl.c, "/w/sub/deeper", 1), 0);
  MF_ASSERT_EQ(mayfly_rename(cl.c, "/w/sub", "/w/moved"), 0);
  MF_ASSERT_EQ(mayfly_remove(cl.c, "/w/a", 0), 0);
  GPtrArray *got = g_ptr_array_new_with_free_func((GDestroyNotify)mayfly_event_free);
  take_events(dir_l, 5, 5000, got);
  /* Only the children themselves: /w/sub/deeper is a grandchild. A rename
   * is the removal of the old name and the creation of the new one. */
  const struct {
    mayfly_event_kind_t kind;
    const char *path;
  } want[] = {{MAYFLY_EV_CHILD_CREATED, "/w/a"},
              {MAYFLY_EV_CHILD_CREATED, "/w/sub"},
              {MAYFLY_EV_CHILD_REMOVED, "/w/sub"},
              {MAYFLY_EV_CHILD_CREATED, "/w/moved"},
              {MAYFLY_EV_CHILD_REMOVED, "/w/a"}};
  MF_ASSERT_EQ(got->len, 5);
  for (guint i = 0; i < got->len && i < 5; i++) {
    MF_ASSERT_EQ(ev_at(got, i)->kind, want[i].kind);
    CU_ASSERT_STRING_EQUAL(ev_at(got, i)->path, want[i].path);
    MF_ASSERT_EQ(ev_at(got, i)->seq, i + 1);
  }
  /* The removed namespace's own listener hears REMOVED, then the end. */
  mayfly_event_t *ev = NULL;
  if (kv_l != NULL) {
    MF_ASSERT_EQ(mayfly_listener_next(kv_l, &ev, 5000), 0);
    if (ev != NULL) {
      MF_ASSERT_EQ(ev->kind, MAYFLY_EV_REMOVED);
      CU_ASSERT_STRING_EQUAL(ev->path, "/w/a");
    }
    mayfly_event_free(ev);
    ev = NULL;
    MF_ASSERT_EQ(mayfly_listener_next(kv_l, &ev, 5000), MAYFLY_ENOENT);
  }
  /* A listener of a path that does not exist is refused at once. */
  mayfly_listener_t *none = NULL;
  MF_ASSERT_EQ(mayfly_listen(cl.c, "/w/a", 0, &none), MAYFLY_ENOENT);
  CU_ASSERT_PTR_NULL(none);
  g_ptr_array_free(got, TRUE);
  mayfly_listener_close(dir_l);
  mayfly_listener_close(kv_l);
out:
  cluster_stop(&cl);
}

/* --- 3. queue and file events --- */

typedef struct {
  mayfly_ns_t *ns;
  int rc;
  size_t len;
} popper_t;

static gpointer popper_run(gpointer data) {
  popper_t *p = data;
  void *v = NULL;
  p->rc = mayfly_queue_pop(p->ns, &v, &p->len, 5000);
  mayfly_free(v);
  return NULL;
}

static void test_queue_and_file_events_carry_item_sizes_offsets_and_lengths(void) {
  cluster_t cl;
  if (cluster_start(&cl, 2, NULL) != 0) goto out;
  mayfly_ns_t *q = NULL, *f = NULL;
  MF_ASSERT_EQ(mayfly_mount(cl.c, "/io/q", MAYFLY_KIND_QUEUE, NULL, &q), 0);
  mayfly_create_options_t two = {.blocks = 2};
  MF_ASSERT_EQ(mayfly_mount(cl.c, "/io/f", MAYFLY_KIND_FILE, &two, &f), 0);
  mayfly_listener_t *ql = NULL, *fl = NULL;
  MF_ASSERT_EQ(mayfly_listen(cl.c, "/io/q", MAYFLY_EV_MASK_DATA, &ql), 0);
  MF_ASSERT_EQ(mayfly_listen(cl.c, "/io/f", 0, &fl), 0);
  if (q == NULL || f == NULL || ql == NULL || fl == NULL) goto done;
  char item[1000];
  memset(item, 'x', sizeof item);
  MF_ASSERT_EQ(mayfly_queue_push(q, item, 5), 0);
  MF_ASSERT_EQ(mayfly_queue_push(q, item, 100), 0);
  MF_ASSERT_EQ(mayfly_queue_push(q, item, 1000), 0);
  void *v = NULL;
  size_t vlen = 0;
  MF_ASSERT_EQ(mayfly_queue_pop(q, &v, &vlen, 0), 0);
  mayfly_free(v);
  MF_ASSERT_EQ(mayfly_queue_pop(q, &v, &vlen, 0), 0);
  mayfly_free(v);
  MF_ASSERT_EQ(mayfly_queue_pop(q, &v, &vlen, 0), 0);
  mayfly_free(v);
  /* A pop waiting on the empty queue is served by the next push. */
  popper_t p = {.ns = q};
  GThread *t = g_thread_new("popper", popper_run, &p);
  mf_sleep_ms(300);
  MF_ASSERT_EQ(mayfly_queue_push(q, item, 7), 0);
  g_thread_join(t);
  MF_ASSERT_EQ(p.rc, 0);
  MF_ASSERT_EQ(p.len, 7);
  GPtrArray *got = g_ptr_array_new_with_free_func((GDestroyNotify)mayfly_event_free);
  take_events(ql, 8, 5000, got);
  const struct {
    mayfly_event_kind_t kind;
    int64_t length;
  } want[] = {{MAYFLY_EV_PUSH, 5}, {MAYFLY_EV_PUSH, 100}, {MAYFLY_EV_PUSH, 1000},
              {MAYFLY_EV_POP, 5},  {MAYFLY_EV_POP, 100},  {MAYFLY_EV_POP, 1000},
              {MAYFLY_EV_PUSH, 7}, {MAYFLY_EV_POP, 7}};
  MF_ASSERT_EQ(got->len, 8);
  for (guint i = 0; i < got->len && i < 8; i++) {
    MF_ASSERT_EQ(ev_at(got, i)->kind, want[i].kind);
    MF_ASSERT_EQ(ev_at(got, i)->length, want[i].length);
    CU_ASSERT_STRING_EQUAL(ev_at(got, i)->path, "/io/q");
    CU_ASSERT_PTR_NULL(ev_at(got, i)->key);
  }
  g_ptr_array_set_size(got, 0);

  /* File writes: offsets in the file, not in the block. A write across the
   * boundary of the two blocks is two writes, one per block. */
  const int64_t bs = 64 * 1024;
  char data[4096];
  memset(data, 'd', sizeof data);
  MF_ASSERT_EQ(mayfly_file_write(f, 10, data, 20), 0);
  MF_ASSERT_EQ(mayfly_file_write(f, bs + 100, data, 50), 0);
  MF_ASSERT_EQ(mayfly_file_write(f, bs - 6, data, 20), 0);
  take_events(fl, 4, 5000, got);
  MF_ASSERT_EQ(got->len, 4);
  if (got->len == 4) {
    MF_ASSERT_EQ(ev_at(got, 0)->kind, MAYFLY_EV_WRITE);
    MF_ASSERT_EQ(ev_at(got, 0)->offset, 10);
    MF_ASSERT_EQ(ev_at(got, 0)->length, 20);
    MF_ASSERT_EQ(ev_at(got, 1)->offset, bs + 100);
    MF_ASSERT_EQ(ev_at(got, 1)->length, 50);
    /* The two halves, in either order (they go to their blocks at once). */
    const mayfly_event_t *a = ev_at(got, 2), *b = ev_at(got, 3);
    if (a->offset > b->offset) {
      const mayfly_event_t *tmp = a;
      a = b;
      b = tmp;
    }
    MF_ASSERT_EQ(a->offset, bs - 6);
    MF_ASSERT_EQ(a->length, 6);
    MF_ASSERT_EQ(b->offset, bs);
    MF_ASSERT_EQ(b->length, 14);
  }
  g_ptr_array_free(got, TRUE);
done:
  mayfly_listener_close(ql);
  mayfly_listener_close(fl);
  mayfly_unmount(q);
  mayfly_unmount(f);
out:
  cluster_stop(&cl);
}

/* Growth and shrink change the layout under a listener: a queue filling
 * three segments on several servers and draining again. */
static void test_a_queue_that_grows_and_shrinks_under_a_listener_loses_no_event(void) {
  cluster_t cl;
  if (cluster_start(&cl, NMS, NULL) != 0) goto out;
  mayfly_ns_t *q = NULL;
  MF_ASSERT_EQ(mayfly_mount(cl.c, "/grow/q", MAYFLY_KIND_QUEUE, NULL, &q), 0);
  mayfly_listener_t *l = NULL;
  MF_ASSERT_EQ(mayfly_listen(cl.c, "/grow/q", MAYFLY_EV_MASK_DATA, &l), 0);
  if (q == NULL || l == NULL) goto done;
  const int n = 150; /* items of about 1 KB: some 60 fit in a 64 KiB segment */
  char item[1100];
  for (int i = 0; i < n; i++) {
    memset(item, 'a' + i % 26, sizeof item);
    MF_ASSERT_EQ(mayfly_queue_push(q, item, 900 + (size_t)i), 0);
  }
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(cl.c, "/grow/q", &st), 0);
  size_t grown = st ? st->npartitions : 0;
  mayfly_stat_free(st);
  CU_ASSERT(grown >= 3);
  for (int i = 0; i < n; i++) {
    void *v = NULL;
    size_t vlen = 0;
    MF_ASSERT_EQ(mayfly_queue_pop(q, &v, &vlen, 0), 0);
    MF_ASSERT_EQ(vlen, 900 + (size_t)i);
    mayfly_free(v);
  }
  MF_ASSERT_EQ(mayfly_stat(cl.c, "/grow/q", &st), 0);
  CU_ASSERT(st != NULL && st->npartitions < grown);
  mayfly_stat_free(st);
  GPtrArray *got = g_ptr_array_new_with_free_func((GDestroyNotify)mayfly_event_free);
  take_events(l, 2 * (guint)n, 10000, got);
  MF_ASSERT_EQ(got->len, 2 * n);
  for (guint i = 0; i < got->len; i++) {
    const mayfly_event_t *ev = ev_at(got, i);
    int ok = ev->kind == (i < (guint)n ? MAYFLY_EV_PUSH : MAYFLY_EV_POP) &&
             ev->length == 900 + (int64_t)(i % (guint)n) &&
             (i == 0 || ev->seq == ev_at(got, i - 1)->seq + 1);
    if (!ok) {
      dump_events("an event out of place", got, i > 2 ? i - 2 : 0, 5);
      CU_FAIL("the events are not every push then every pop, in order");
      break;
    }
  }
  g_ptr_array_free(got, TRUE);
done:
  mayfly_listener_close(l);
  mayfly_unmount(q);
out:
  cluster_stop(&cl);
}

static int kv_partitions(mayfly_client_t *c, const char *path) {
  mayfly_stat_t *st = NULL;
  if (mayfly_stat(c, path, &st) != 0) return -1;
  int n = (int)st->npartitions;
  mayfly_stat_free(st);
  return n;
}

/* A kv namespace that splits from one partition into many as it fills, and
 * merges back as it empties, under two listeners: each sees every put and
 * delete once, in the writer's order, numbered one after another. */
static void test_a_kv_namespace_that_splits_and_merges_under_a_listener_loses_no_event(void) {
  cluster_t cl;
  if (cluster_start(&cl, NMS, NULL) != 0) goto out;
  const char *path = "/split/kv";
  mayfly_ns_t *ns = NULL;
  MF_ASSERT_EQ(mayfly_mount(cl.c, path, MAYFLY_KIND_KV, NULL, &ns), 0);
  mayfly_listener_t *l = NULL, *l2 = NULL;
  MF_ASSERT_EQ(mayfly_listen(cl.c, path, MAYFLY_EV_MASK_DATA, &l), 0);
  MF_ASSERT_EQ(mayfly_listen(cl.c, path, MAYFLY_EV_MASK_DATA, &l2), 0);
  if (ns == NULL || l == NULL || l2 == NULL) goto done;
  MF_ASSERT_EQ(kv_partitions(cl.c, path), 1);
  GPtrArray *expect = g_ptr_array_new_with_free_func(g_free);
  char key[32], val[1000];
  memset(val, 'v', sizeof val);
  const int n = 800; /* 800 KB in 64 KiB blocks */
  int errors = 0;
  for (int i = 0; i < n && errors == 0; i++) {
    snprintf(key, sizeof key, "key-%04d", i);
    if (mayfly_kv_put(ns, key, strlen(key), val, sizeof val) != 0) errors++;
    g_ptr_array_add(expect, g_strdup_printf("put:%s", key));
  }
  int grown = kv_partitions(cl.c, path);
  for (int i = 0; i < n && errors == 0; i++) {
    snprintf(key, sizeof key, "key-%04d", i);
    if (mayfly_kv_delete(ns, key, strlen(key)) != 0) errors++;
    g_ptr_array_add(expect, g_strdup_printf("delete:%s", key));
  }
  MF_ASSERT_EQ(errors, 0);
  int shrunk = grown;
  for (int64_t until = now_ms() + 30000; now_ms() < until && shrunk > 2; mf_sleep_ms(100)) {
    shrunk = kv_partitions(cl.c, path);
  }
  /* And writes after the merges. */
  for (int i = 0; i < 50 && errors == 0; i++) {
    snprintf(key, sizeof key, "after-%02d", i);
    if (mayfly_kv_put(ns, key, strlen(key), val, 10) != 0) errors++;
    g_ptr_array_add(expect, g_strdup_printf("put:%s", key));
  }
  MF_ASSERT_EQ(errors, 0);
  printf("\n    1 partition grew to %d and shrank to %d under a listener\n", grown, shrunk);
  CU_ASSERT(grown >= 8);
  CU_ASSERT(shrunk <= 2);
  mayfly_listener_t *both[2] = {l, l2};
  for (int k = 0; k < 2; k++) {
    GPtrArray *got = g_ptr_array_new_with_free_func((GDestroyNotify)mayfly_event_free);
    take_events(both[k], expect->len, 30000, got);
    CU_ASSERT(matches_writer(got, expect));
    g_ptr_array_free(got, TRUE);
  }
  g_ptr_array_free(expect, TRUE);
done:
  mayfly_listener_close(l);
  mayfly_listener_close(l2);
  mayfly_unmount(ns);
out:
  cluster_stop(&cl);
}

/* --- 4. gaps --- */

static void test_a_slow_listener_whose_buffer_overflowed_gets_a_gap_with_the_right_count(void) {
  cluster_t cl;
  if (cluster_start(&cl, 1, NULL) != 0) goto out;
  mayfly_ns_t *ns = NULL;
  MF_ASSERT_EQ(mayfly_mount(cl.c, "/slow", MAYFLY_KIND_KV, NULL, &ns), 0);
  mayfly_listen_options_t o = {.buffer = 100};
  mayfly_listener_t *l = NULL;
  MF_ASSERT_EQ(mayfly_listen_with(cl.c, "/slow", &o, &l), 0);
  if (ns == NULL || l == NULL) goto done;
  /* 300 events while the listener takes none: 100 fit in its buffer. */
  for (int i = 0; i < 300; i++) {
    char key[16];
    snprintf(key, sizeof key, "k%d", i);
    MF_ASSERT_EQ(mayfly_kv_put(ns, key, strlen(key), "v", 1), 0);
  }
  mf_sleep_ms(500);
  GPtrArray *got = g_ptr_array_new_with_free_func((GDestroyNotify)mayfly_event_free);
  take_events(l, 1000, 1500, got);
  /* Every seq is accounted for exactly once, in order: delivered, or
   * covered by a GAP that names the first one missed and how many. */
  int64_t next = got->len > 0 ? ev_at(got, 0)->seq : 0;
  int64_t delivered = 0, missed = 0, gaps = 0;
  int ok = got->len > 0;
  for (guint i = 0; ok && i < got->len; i++) {
    const mayfly_event_t *ev = ev_at(got, i);
    if (ev->kind == MAYFLY_EV_GAP) {
      ok = ev->offset == next && ev->length > 0 && ev->seq == next + ev->length - 1;
      next += ev->length;
      missed += ev->length;
      gaps++;
    } else {
      ok = ev->kind == MAYFLY_EV_PUT && ev->seq == next;
      next++;
      delivered++;
    }
    if (!ok) dump_events("where the accounting breaks", got, i > 2 ? i - 2 : 0, 5);
  }
  CU_ASSERT(ok);
  MF_ASSERT_EQ(delivered + missed, 300);
  CU_ASSERT(gaps >= 1);
  CU_ASSERT(delivered >= 100);
  /* The first 100 came, then the GAP of what did not fit. */
  if (got->len > 100) {
    MF_ASSERT_EQ(ev_at(got, 100)->kind, MAYFLY_EV_GAP);
    MF_ASSERT_EQ(ev_at(got, 100)->offset, ev_at(got, 0)->seq + 100);
  }
  g_ptr_array_free(got, TRUE);
done:
  mayfly_listener_close(l);
  mayfly_unmount(ns);
out:
  cluster_stop(&cl);
}

/* Raw calls of the control API. */
static int raw_watch(mf_ctl_t *ctl, const char *path, int32_t mask, int64_t epoch,
                     int64_t after, int32_t max, int32_t timeout_ms, MayflyWatchReply **out) {
  MayflyDirectoryIf *i;
  int rc = mf_ctl_begin(ctl, &i);
  if (rc != 0) return rc;
  MayflyWatchReply *r = g_object_new(MAYFLY_TYPE_WATCH_REPLY, NULL);
  MayflyError *err = NULL;
  GError *gerr = NULL;
  gboolean ok =
      mayfly_directory_if_watch(i, &r, path, mask, epoch, after, max, timeout_ms, &err, &gerr);
  rc = mf_ctl_end(ctl, ok, err, gerr);
  if (rc == 0 && out != NULL) {
    *out = r;
  } else {
    g_object_unref(r);
  }
  return rc;
}

static MayflyEvent *reply_event(MayflyWatchReply *r, guint i) {
  return g_ptr_array_index(r->events, i);
}

static void test_a_watcher_that_fell_behind_the_directory_ring_gets_a_gap_of_what_it_missed(
    void) {
  mf_daemon_t *d = mf_start_directory(NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  mayfly_client_t *c = NULL;
  mf_ctl_t *ctl = NULL;
  MF_ASSERT_EQ(mayfly_connect(d->address, NULL, &c), 0);
  MF_ASSERT_EQ(mf_ctl_open(d->address, 5000, 2000, &ctl), 0);
  MF_ASSERT_EQ(mayfly_mkdir(c, "/many", 0), 0);
  MayflyWatchReply *r = NULL;
  MF_ASSERT_EQ(raw_watch(ctl, "/many", 0, 0, 0, 10, 0, &r), 0);
  if (r == NULL) goto out;
  int64_t epoch = r->epoch, start = r->last_seq;
  g_object_unref(r);
  r = NULL;
  /* 5000 children: the directory keeps the last 4096 events. */
  const int n = 5000;
  for (int i = 0; i < n; i++) {
    char path[32];
    snprintf(path, sizeof path, "/many/d%04d", i);
    if (mayfly_mkdir(c, path, 0) != 0) {
      CU_FAIL("mkdir failed");
      break;
    }
  }
  MF_ASSERT_EQ(raw_watch(ctl, "/many", 0, epoch, start, 3, 0, &r), 0);
  if (r != NULL) {
    MF_ASSERT_EQ(r->epoch, epoch);
    MF_ASSERT_EQ(r->events->len, 3);
    if (r->events->len == 3) {
      MayflyEvent *gap = reply_event(r, 0);
      MF_ASSERT_EQ(gap->kind, MAYFLY_EVENT_KIND_GAP);
      MF_ASSERT_EQ(gap->offset, start + 1);
      MF_ASSERT_EQ(gap->length, n - 4096);
      MF_ASSERT_EQ(gap->seq, start + n - 4096);
      /* Then the oldest kept: the child made right after the missed ones. */
      MF_ASSERT_EQ(reply_event(r, 1)->seq, start + n - 4096 + 1);
      MF_ASSERT_EQ(reply_event(r, 1)->kind, MAYFLY_EVENT_KIND_CHILD_CREATED);
      char want[32];
      snprintf(want, sizeof want, "/many/d%04d", n - 4096);
      CU_ASSERT_STRING_EQUAL(reply_event(r, 1)->path, want);
      MF_ASSERT_EQ(r->last_seq, reply_event(r, 2)->seq);
    }
    g_object_unref(r);
  }
out:
  mf_ctl_close(ctl);
  mayfly_disconnect(c);
  MF_ASSERT_EQ(mf_stop(d), 0);
}

static void test_a_directory_restart_is_reported_to_a_listener_as_a_gap(void) {
  mf_daemon_t *d = mf_start_directory(NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  mayfly_client_t *c = NULL;
  MF_ASSERT_EQ(mayfly_connect(d->address, NULL, &c), 0);
  mayfly_listener_t *l = NULL;
  MF_ASSERT_EQ(mayfly_listen(c, "/", MAYFLY_EV_MASK_NAMESPACE, &l), 0);
  MF_ASSERT_EQ(mayfly_mkdir(c, "/before", 0), 0);
  mayfly_event_t *ev = NULL;
  MF_ASSERT_EQ(mayfly_listener_next(l, &ev, 5000), 0);
  if (ev != NULL) CU_ASSERT_STRING_EQUAL(ev->path, "/before");
  mayfly_event_free(ev);
  ev = NULL;
  char port[16];
  snprintf(port, sizeof port, "%d", d->port);
  MF_ASSERT_EQ(mf_stop(d), 0);
  d = mf_start_directory("--port", port, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  /* The listener reconnects by itself; its numbers are of the old
   * directory: it hears that it may have missed events, count unknown. */
  MF_ASSERT_EQ(mayfly_listener_next(l, &ev, 10000), 0);
  if (ev != NULL) {
    MF_ASSERT_EQ(ev->kind, MAYFLY_EV_GAP);
    MF_ASSERT_EQ(ev->length, -1);
  }
  mayfly_event_free(ev);
  ev = NULL;
  /* And it goes on with the new directory's events. */
  mayfly_disconnect(c);
  c = NULL;
  MF_ASSERT_EQ(mayfly_connect(d->address, NULL, &c), 0);
  MF_ASSERT_EQ(mayfly_mkdir(c, "/after", 0), 0);
  MF_ASSERT_EQ(mayfly_listener_next(l, &ev, 5000), 0);
  if (ev != NULL) {
    MF_ASSERT_EQ(ev->kind, MAYFLY_EV_CHILD_CREATED);
    CU_ASSERT_STRING_EQUAL(ev->path, "/after");
    MF_ASSERT_EQ(ev->seq, 1);
  }
  mayfly_event_free(ev);
  mayfly_listener_close(l);
  mayfly_disconnect(c);
  MF_ASSERT_EQ(mf_stop(d), 0);
}

/* --- 5. the CLI --- */

typedef struct {
  GPid pid;
  int out, err; /* pipes */
  GString *obuf, *ebuf;
} child_t;

/* Starts `mayfly --directory D ARGS...` with stdout and stderr piped. */
static int child_start(child_t *ch, const mf_daemon_t *d, const char *const *args) {
  GPtrArray *argv = g_ptr_array_new();
  char *bin = g_strdup(mf_bin("client/mayfly"));
  g_ptr_array_add(argv, bin);
  g_ptr_array_add(argv, "--directory");
  g_ptr_array_add(argv, (gpointer)d->address);
  for (int i = 0; args[i] != NULL; i++) g_ptr_array_add(argv, (gpointer)args[i]);
  g_ptr_array_add(argv, NULL);
  GError *err = NULL;
  memset(ch, 0, sizeof *ch);
  gboolean ok = g_spawn_async_with_pipes(NULL, (char **)argv->pdata, NULL,
                                         G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &ch->pid, NULL,
                                         &ch->out, &ch->err, &err);
  g_ptr_array_free(argv, TRUE);
  g_free(bin);
  if (!ok) {
    fprintf(stderr, "  cannot run mayfly: %s\n", err->message);
    g_error_free(err);
    return -1;
  }
  ch->obuf = g_string_new(NULL);
  ch->ebuf = g_string_new(NULL);
  return 0;
}

/* Reads what the child wrote until `pred` holds or timeout_ms passes (or
 * both pipes close). Returns 1 when pred held. */
static int child_read_until(child_t *ch, int (*pred)(child_t *, const void *), const void *arg,
                            int timeout_ms) {
  int64_t deadline = now_ms() + timeout_ms;
  while (!pred(ch, arg)) {
    int64_t left = deadline - now_ms();
    if (left <= 0 || (ch->out < 0 && ch->err < 0)) return 0;
    struct pollfd p[2] = {{.fd = ch->out, .events = POLLIN}, {.fd = ch->err, .events = POLLIN}};
    if (poll(p, 2, (int)left) <= 0) continue;
    for (int i = 0; i < 2; i++) {
      if (!(p[i].revents & (POLLIN | POLLHUP))) continue;
      char buf[4096];
      ssize_t n = read(p[i].fd, buf, sizeof buf);
      int *fd = i == 0 ? &ch->out : &ch->err;
      if (n <= 0) {
        close(*fd);
        *fd = -1;
      } else {
        g_string_append_len(i == 0 ? ch->obuf : ch->ebuf, buf, n);
      }
    }
  }
  return 1;
}

static int lines_at_least(child_t *ch, const void *n) {
  int lines = 0;
  for (const char *s = ch->obuf->str; *s; s++) lines += *s == '\n';
  return lines >= *(const int *)n;
}

static int stderr_has(child_t *ch, const void *s) {
  return strstr(ch->ebuf->str, s) != NULL;
}

static int pipes_closed(child_t *ch, const void *unused) {
  return ch->out < 0 && ch->err < 0;
}

/* Waits for the child to exit (SIGKILL after timeout_ms); returns its exit
 * status, or -1 when it had to be killed or died of a signal. */
static int child_wait(child_t *ch, int timeout_ms) {
  int status = 0;
  int64_t deadline = now_ms() + timeout_ms;
  while (waitpid(ch->pid, &status, WNOHANG) == 0) {
    if (now_ms() > deadline) {
      kill(ch->pid, SIGKILL);
      waitpid(ch->pid, &status, 0);
      return -1;
    }
    mf_sleep_ms(10);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void child_free(child_t *ch) {
  if (ch->out >= 0) close(ch->out);
  if (ch->err >= 0) close(ch->err);
  g_spawn_close_pid(ch->pid);
  if (ch->obuf) g_string_free(ch->obuf, TRUE);
  if (ch->ebuf) g_string_free(ch->ebuf, TRUE);
}

static int cli_ok(const mf_daemon_t *d, const char *a1, const char *a2, const char *a3,
                  const char *a4) {
  char *err = NULL;
  int rc = mf_cli(d, NULL, &err, a1, a2, a3, a4, NULL);
  if (rc != 0) {
    fprintf(stderr, "  mayfly %s %s %s failed (%d): %s", a1, a2, a3 ? a3 : "", rc,
            err ? err : "");
  }
  g_free(err);
  return rc;
}

static void test_mayfly_watch_prints_events_as_they_happen_and_stops_cleanly(void) {
  cluster_t cl;
  if (cluster_start(&cl, 1, NULL) != 0) goto out;
  const mf_daemon_t *d = cl.dir;
  MF_ASSERT_EQ(cli_ok(d, "create", "/cli/kv", "--kind", "kv"), 0);

  /* Plain lines, until SIGINT. */
  child_t ch;
  const char *plain[] = {"watch", "/cli/kv", NULL};
  if (child_start(&ch, d, plain) != 0) goto out;
  CU_ASSERT(child_read_until(&ch, stderr_has, "watching", 10000));
  MF_ASSERT_EQ(cli_ok(d, "put", "/cli/kv", "alpha", "1"), 0);
  MF_ASSERT_EQ(cli_ok(d, "put", "/cli/kv", "two words", "2"), 0);
  MF_ASSERT_EQ(mf_cli(d, NULL, NULL, "del", "/cli/kv", "alpha", NULL), 0);
  int three = 3;
  CU_ASSERT(child_read_until(&ch, lines_at_least, &three, 5000));
  kill(ch.pid, SIGINT);
  child_read_until(&ch, pipes_closed, NULL, 5000);
  MF_ASSERT_EQ(child_wait(&ch, 5000), 0);
  char **lines = g_strsplit(ch.obuf->str, "\n", -1);
  if (g_strv_length(lines) >= 3) {
    CU_ASSERT_STRING_EQUAL(lines[0], "1 put /cli/kv key=alpha");
    CU_ASSERT_STRING_EQUAL(lines[1], "2 put /cli/kv key=\"two words\"");
    CU_ASSERT_STRING_EQUAL(lines[2], "3 delete /cli/kv key=alpha");
  } else {
    fprintf(stderr, "  watch printed:\n%s\n", ch.obuf->str);
    CU_FAIL("fewer than three lines");
  }
  g_strfreev(lines);
  child_free(&ch);

  /* JSON, only deletes, ends by itself after --count. */
  const char *json[] = {"--json", "watch", "/cli/kv", "--events", "delete", "--count", "1", NULL};
  if (child_start(&ch, d, json) != 0) goto out;
  CU_ASSERT(child_read_until(&ch, stderr_has, "watching", 10000));
  MF_ASSERT_EQ(cli_ok(d, "put", "/cli/kv", "beta", "x"), 0);
  MF_ASSERT_EQ(mf_cli(d, NULL, NULL, "del", "/cli/kv", "beta", NULL), 0);
  child_read_until(&ch, pipes_closed, NULL, 5000);
  MF_ASSERT_EQ(child_wait(&ch, 5000), 0);
  JsonParser *p = json_parser_new();
  char *first = g_strndup(ch.obuf->str, strcspn(ch.obuf->str, "\n"));
  int one_line = 1;
  CU_ASSERT(lines_at_least(&ch, &one_line) && strlen(first) + 1 == ch.obuf->len);
  if (first[0] != '\0' && json_parser_load_from_data(p, first, -1, NULL) &&
      JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p))) {
    JsonObject *o = json_node_get_object(json_parser_get_root(p));
    const char *kind = json_object_get_string_member_with_default(o, "kind", "");
    const char *path = json_object_get_string_member_with_default(o, "path", "");
    const char *key = json_object_get_string_member_with_default(o, "key", "");
    CU_ASSERT_STRING_EQUAL(kind, "delete");
    CU_ASSERT_STRING_EQUAL(path, "/cli/kv");
    CU_ASSERT_STRING_EQUAL(key, "beta");
    MF_ASSERT_EQ(json_object_get_int_member_with_default(o, "seq", -1), 5);
    CU_ASSERT(json_object_get_int_member_with_default(o, "time_ms", -1) > 0);
  } else {
    fprintf(stderr, "  not JSON: %s\n", first);
    CU_FAIL("watch --json printed something that is not JSON");
  }
  g_free(first);
  g_object_unref(p);
  child_free(&ch);

  /* SIGTERM ends it with status 0 too; a queue's events in JSON. */
  MF_ASSERT_EQ(cli_ok(d, "create", "/cli/q", "--kind", "queue"), 0);
  const char *q[] = {"--json", "watch", "/cli/q", NULL};
  if (child_start(&ch, d, q) != 0) goto out;
  CU_ASSERT(child_read_until(&ch, stderr_has, "watching", 10000));
  MF_ASSERT_EQ(cli_ok(d, "push", "/cli/q", "hello", NULL), 0);
  int one = 1;
  CU_ASSERT(child_read_until(&ch, lines_at_least, &one, 5000));
  kill(ch.pid, SIGTERM);
  child_read_until(&ch, pipes_closed, NULL, 5000);
  MF_ASSERT_EQ(child_wait(&ch, 5000), 0);
  CU_ASSERT(strstr(ch.obuf->str, "\"kind\":\"push\"") != NULL);
  CU_ASSERT(strstr(ch.obuf->str, "\"length\":5") != NULL);
  child_free(&ch);
out:
  cluster_stop(&cl);
}

static void test_mayfly_watch_refuses_bad_arguments_with_the_cli_conventions(void) {
  cluster_t cl;
  if (cluster_start(&cl, 1, NULL) != 0) goto out;
  const mf_daemon_t *d = cl.dir;
  MF_ASSERT_EQ(cli_ok(d, "create", "/c/kv", "--kind", "kv"), 0);
  char *o = NULL, *e = NULL;
  MF_ASSERT_EQ(mf_cli(d, &o, &e, "watch", "/c/kv", "--events", "put,bogus", NULL), 2);
  CU_ASSERT(g_str_has_prefix(e, "mayfly: watch: /c/kv: --events: 'bogus' is not an event kind"));
  CU_ASSERT_STRING_EQUAL(o, "");
  g_free(o);
  g_free(e);
  MF_ASSERT_EQ(mf_cli(d, &o, &e, "watch", "/c/kv", "--count", "-1", NULL), 2);
  CU_ASSERT(g_str_has_prefix(e, "mayfly: watch: /c/kv: --count must be positive"));
  g_free(o);
  g_free(e);
  MF_ASSERT_EQ(mf_cli(d, &o, &e, "watch", "/c/kv", "--timeout", "soon", NULL), 2);
  CU_ASSERT(strstr(e, "--timeout takes a duration") != NULL);
  g_free(o);
  g_free(e);
  MF_ASSERT_EQ(mf_cli(d, &o, &e, "watch", NULL), 2);
  CU_ASSERT(g_str_has_prefix(e, "mayfly: watch: missing argument"));
  g_free(o);
  g_free(e);
  MF_ASSERT_EQ(mf_cli(d, &o, &e, "watch", "/c/nothing", NULL), 1);
  CU_ASSERT_STRING_EQUAL(e, "mayfly: watch: /c/nothing: no such namespace\n");
  g_free(o);
  g_free(e);
  MF_ASSERT_EQ(mf_cli(d, &o, &e, "watch", "c/kv", NULL), 1);
  CU_ASSERT(g_str_has_prefix(e, "mayfly: watch: c/kv: "));
  g_free(o);
  g_free(e);
  /* --timeout: a normal end without --count, a failure with it. */
  MF_ASSERT_EQ(mf_cli(d, &o, &e, "watch", "/c/kv", "--timeout", "300ms", NULL), 0);
  CU_ASSERT_STRING_EQUAL(o, "");
  g_free(o);
  g_free(e);
  MF_ASSERT_EQ(mf_cli(d, &o, &e, "watch", "/c/kv", "--count", "5", "--timeout", "300ms", NULL),
               1);
  CU_ASSERT(strstr(e, "mayfly: watch: /c/kv: timed out after 0 of 5 events") != NULL);
  g_free(o);
  g_free(e);
  MF_ASSERT_EQ(mf_cli(d, &o, &e, "watch", "--help", NULL), 0);
  CU_ASSERT(strstr(o, "--events") != NULL && strstr(o, "child-created") != NULL &&
            strstr(o, "--count") != NULL && strstr(o, "--timeout") != NULL);
  g_free(o);
  g_free(e);
out:
  cluster_stop(&cl);
}

/* --- 6. the control API under hostile or unusual calls --- */

static int raw_publish(mf_ctl_t *ctl, int32_t server, GPtrArray *events) {
  MayflyDirectoryIf *i;
  int rc = mf_ctl_begin(ctl, &i);
  if (rc != 0) return rc;
  MayflyError *err = NULL;
  GError *gerr = NULL;
  gboolean ok = mayfly_directory_if_publish(i, server, events, 0, &err, &gerr);
  return mf_ctl_end(ctl, ok, err, gerr);
}

static MayflyDataEvent *data_event(int32_t block, int64_t gen, MayflyEventKind kind,
                                   const char *key) {
  MayflyDataEvent *de = g_object_new(MAYFLY_TYPE_DATA_EVENT, NULL);
  de->block_index = block;
  de->generation = gen;
  de->kind = kind;
  if (key != NULL) {
    g_free(de->key);
    de->key = g_strdup(key);
  }
  de->length = 3;
  return de;
}

typedef struct {
  const char *address;
  int64_t epoch, after;
  int rc;
  int64_t elapsed;
  MayflyWatchReply *r;
} waiting_t;

static gpointer waiting_run(gpointer data) {
  waiting_t *w = data;
  mf_ctl_t *ctl = NULL;
  w->rc = mf_ctl_open(w->address, 10000, 2000, &ctl);
  int64_t t0 = now_ms();
  if (w->rc == 0) w->rc = raw_watch(ctl, "/h", 0, w->epoch, w->after, 10, 5000, &w->r);
  w->elapsed = now_ms() - t0;
  mf_ctl_close(ctl);
  return NULL;
}

static void test_watch_and_publish_refuse_hostile_arguments_and_a_watch_waits_without_blocking(
    void) {
  mf_daemon_t *d = mf_start_directory(NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  /* A "memory server" of 4 blocks, registered by hand: it never heartbeats,
   * so the test plays its part in publish. */
  int sid = 0;
  MF_ASSERT_EQ(mf_register_blocks(d, "127.0.0.1:7001", 4, 65536, &sid), 0);
  mayfly_client_t *c = NULL;
  mf_ctl_t *ctl = NULL;
  MF_ASSERT_EQ(mayfly_connect(d->address, NULL, &c), 0);
  MF_ASSERT_EQ(mf_ctl_open(d->address, 10000, 2000, &ctl), 0);
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_create(c, "/h", MAYFLY_KIND_KV, NULL, &st), 0);
  if (st == NULL) goto out;
  int32_t block = st->partitions[0].block_index;
  int64_t gen = st->partitions[0].generation;
  mayfly_stat_free(st);

  /* watch */
  MF_ASSERT_EQ(raw_watch(ctl, "/h", 1, 0, 0, 10, 0, NULL), MAYFLY_EINVAL);
  MF_ASSERT_EQ(raw_watch(ctl, "/h", 1 << 20, 0, 0, 10, 0, NULL), MAYFLY_EINVAL);
  CU_ASSERT(strstr(mayfly_last_error(), "mask") != NULL);
  MF_ASSERT_EQ(raw_watch(ctl, "/h", 0, 0, 0, 10, -5, NULL), MAYFLY_EINVAL);
  CU_ASSERT(strstr(mayfly_last_error(), "timeout_ms") != NULL);
  MF_ASSERT_EQ(raw_watch(ctl, "/h", 0, 0, 0, -1, 0, NULL), MAYFLY_EINVAL);
  MF_ASSERT_EQ(raw_watch(ctl, "/h", 0, -1, -1, 10, 0, NULL), MAYFLY_EINVAL);
  MF_ASSERT_EQ(raw_watch(ctl, "no/slash", 0, 0, 0, 10, 0, NULL), MAYFLY_EBADPATH);
  MF_ASSERT_EQ(raw_watch(ctl, "/absent", 0, 0, 0, 10, 0, NULL), MAYFLY_ENOENT);
  CU_ASSERT(strstr(mayfly_last_error(), "/absent") != NULL);
  MayflyWatchReply *r = NULL;
  MF_ASSERT_EQ(raw_watch(ctl, "/h", 0, 0, 0, 1 << 30, 0, &r), 0); /* a huge max is capped */
  if (r == NULL) goto out;
  int64_t epoch = r->epoch, start = r->last_seq;
  MF_ASSERT_EQ(r->events->len, 0);
  g_object_unref(r);
  r = NULL;

  /* publish */
  GPtrArray *evs = g_ptr_array_new_with_free_func(g_object_unref);
  g_ptr_array_add(evs, data_event(block, gen, MAYFLY_EVENT_KIND_PUT, "a2V5"));
  MF_ASSERT_EQ(raw_publish(ctl, 999, evs), MAYFLY_ESERVER);
  MF_ASSERT_EQ(raw_publish(ctl, -1, evs), MAYFLY_ESERVER);
  g_ptr_array_add(evs, data_event(1 << 20, gen, MAYFLY_EVENT_KIND_PUT, "a2V5"));
  MF_ASSERT_EQ(raw_publish(ctl, sid, evs), MAYFLY_EINVAL);
  CU_ASSERT(strstr(mayfly_last_error(), "no block") != NULL);
  g_ptr_array_remove_index(evs, 1);
  g_ptr_array_add(evs, data_event(block, gen, MAYFLY_EVENT_KIND_CHILD_CREATED, NULL));
  MF_ASSERT_EQ(raw_publish(ctl, sid, evs), MAYFLY_EINVAL);
  CU_ASSERT(strstr(mayfly_last_error(), "not a data event") != NULL);
  g_ptr_array_remove_index(evs, 1);
  g_ptr_array_add(evs, data_event(block, gen, MAYFLY_EVENT_KIND_DELETE, "not base64!"));
  MF_ASSERT_EQ(raw_publish(ctl, sid, evs), MAYFLY_EINVAL);
  g_ptr_array_remove_index(evs, 1);
  /* A key or a batch past the caps of publish (directory/limits.h) is
   * refused before Thrift decodes it: the connection closes, and the next
   * call connects again. */
  char *huge = g_strnfill(4000, 'A');
  g_ptr_array_add(evs, data_event(block, gen, MAYFLY_EVENT_KIND_PUT, huge));
  g_free(huge);
  MF_ASSERT_EQ(raw_publish(ctl, sid, evs), MAYFLY_EIO);
  g_ptr_array_remove_index(evs, 1);
  GPtrArray *many = g_ptr_array_new_with_free_func(g_object_unref);
  for (int i = 0; i < 5000; i++) g_ptr_array_add(many, data_event(block, gen, MAYFLY_EVENT_KIND_POP, NULL));
  MF_ASSERT_EQ(raw_publish(ctl, sid, many), MAYFLY_EIO);
  g_ptr_array_free(many, TRUE);
  gchar *log = NULL;
  CU_ASSERT(g_file_get_contents(d->log_path, &log, NULL, NULL));
  CU_ASSERT(log != NULL && strstr(log, "publish: events: key: string of 4000 bytes, at most 1368") != NULL);
  CU_ASSERT(log != NULL && strstr(log, "publish: events: 5000 elements, at most 4096") != NULL);
  g_free(log);
  /* A refused batch numbered nothing; a stale generation is dropped; the
   * good event is numbered. */
  g_ptr_array_add(evs, data_event(block, gen - 1, MAYFLY_EVENT_KIND_PUT, "c3RhbGU="));
  MF_ASSERT_EQ(raw_publish(ctl, sid, evs), 0);
  MF_ASSERT_EQ(raw_watch(ctl, "/h", 0, epoch, start, 10, 0, &r), 0);
  if (r != NULL) {
    MF_ASSERT_EQ(r->events->len, 1);
    if (r->events->len == 1) {
      MF_ASSERT_EQ(reply_event(r, 0)->kind, MAYFLY_EVENT_KIND_PUT);
      CU_ASSERT_STRING_EQUAL(reply_event(r, 0)->key, "a2V5");
      CU_ASSERT_STRING_EQUAL(reply_event(r, 0)->path, "/h");
      MF_ASSERT_EQ(reply_event(r, 0)->seq, start + 1);
    }
    start = r->last_seq;
    g_object_unref(r);
    r = NULL;
  }

  /* A watch with nothing to report waits, and the directory serves other
   * calls meanwhile; an event ends the wait at once. */
  waiting_t w = {.address = d->address, .epoch = epoch, .after = start};
  GThread *t = g_thread_new("waiting", waiting_run, &w);
  mf_sleep_ms(300);
  int64_t t0 = now_ms();
  MF_ASSERT_EQ(mayfly_exists(c, "/h"), 1);
  CU_ASSERT(now_ms() - t0 < 200);
  MF_ASSERT_EQ(raw_publish(ctl, sid, evs), 0);
  g_thread_join(t);
  MF_ASSERT_EQ(w.rc, 0);
  CU_ASSERT(w.elapsed >= 250 && w.elapsed < 3000);
  if (w.r != NULL) {
    MF_ASSERT_EQ(w.r->events->len, 1);
    start = w.r->last_seq;
    g_object_unref(w.r);
  }
  /* With nothing to report it answers, empty, when its time is up. */
  t0 = now_ms();
  MF_ASSERT_EQ(raw_watch(ctl, "/h", 0, epoch, start, 10, 300, &r), 0);
  CU_ASSERT(now_ms() - t0 >= 250);
  if (r != NULL) {
    MF_ASSERT_EQ(r->events->len, 0);
    MF_ASSERT_EQ(r->last_seq, start);
    g_object_unref(r);
    r = NULL;
  }
  /* A stale epoch: start from now, behind a GAP of unknown size. */
  MF_ASSERT_EQ(raw_watch(ctl, "/h", 0, epoch - 1, start, 10, 0, &r), 0);
  if (r != NULL) {
    MF_ASSERT_EQ(r->events->len, 1);
    if (r->events->len == 1) {
      MF_ASSERT_EQ(reply_event(r, 0)->kind, MAYFLY_EVENT_KIND_GAP);
      MF_ASSERT_EQ(reply_event(r, 0)->length, -1);
    }
    MF_ASSERT_EQ(r->last_seq, start);
    g_object_unref(r);
    r = NULL;
  }
  /* Removed: the watcher gets REMOVED, and after it the path is gone. */
  MF_ASSERT_EQ(mayfly_remove(c, "/h", 0), 0);
  MF_ASSERT_EQ(raw_watch(ctl, "/h", 0, epoch, start, 10, 0, &r), 0);
  if (r != NULL) {
    MF_ASSERT_EQ(r->events->len, 1);
    if (r->events->len == 1) MF_ASSERT_EQ(reply_event(r, 0)->kind, MAYFLY_EVENT_KIND_REMOVED);
    MF_ASSERT_EQ(raw_watch(ctl, "/h", 0, epoch, r->last_seq, 10, 0, NULL), MAYFLY_ENOENT);
    g_object_unref(r);
  }
  MF_ASSERT_EQ(raw_watch(ctl, "/h", 0, 0, 0, 10, 0, NULL), MAYFLY_ENOENT);
  g_ptr_array_free(evs, TRUE);
out:
  mf_ctl_close(ctl);
  mayfly_disconnect(c);
  MF_ASSERT_EQ(mf_stop(d), 0);
}

/* Regression: a memory server publishes the events of a block a moment
 * after its writes; when a merge or a drained segment freed the block in
 * between, the directory dropped them as events of a stale block. They
 * belong to the namespace that lives on; only a removed namespace's are
 * dropped. */
static void test_events_of_a_block_freed_by_a_layout_change_still_count(void) {
  mf_daemon_t *d = mf_start_directory(NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  int sid = 0;
  MF_ASSERT_EQ(mf_register_blocks(d, "127.0.0.1:7001", 8, 65536, &sid), 0);
  mf_ctl_t *ctl = NULL;
  MF_ASSERT_EQ(mf_ctl_open(d->address, 10000, 2000, &ctl), 0);
  mayfly_client_t *c = NULL;
  MF_ASSERT_EQ(mayfly_connect(d->address, NULL, &c), 0);
  mayfly_create_options_t two = {.blocks = 2};
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_create(c, "/lc/q", MAYFLY_KIND_QUEUE, &two, &st), 0);
  MF_ASSERT_EQ(mayfly_create(c, "/lc/gone", MAYFLY_KIND_QUEUE, NULL, NULL), 0);
  if (st == NULL) goto out;
  int32_t block = st->partitions[0].block_index;
  int64_t gen = st->partitions[0].generation, seg = st->partitions[0].range_lo;
  mayfly_stat_free(st);
  MayflyWatchReply *r = NULL;
  MF_ASSERT_EQ(raw_watch(ctl, "/lc/q", 0, 0, 0, 10, 0, &r), 0);
  if (r == NULL) goto out;
  int64_t epoch = r->epoch, start = r->last_seq;
  g_object_unref(r);
  r = NULL;
  /* The first segment is drained and released: its block is free. */
  MayflyDirectoryIf *i;
  MF_ASSERT_EQ(mf_ctl_begin(ctl, &i), 0);
  MayflyLayout *lay = g_object_new(MAYFLY_TYPE_LAYOUT, NULL);
  MayflyError *err = NULL;
  GError *gerr = NULL;
  gboolean ok = mayfly_directory_if_release_range(i, &lay, "/lc/q", seg, &err, &gerr);
  MF_ASSERT_EQ(mf_ctl_end(ctl, ok, err, gerr), 0);
  MF_ASSERT_EQ(lay->partitions->len, 1);
  g_object_unref(lay);
  /* The pop made there just before is published now. */
  GPtrArray *evs = g_ptr_array_new_with_free_func(g_object_unref);
  g_ptr_array_add(evs, data_event(block, gen, MAYFLY_EVENT_KIND_POP, NULL));
  MF_ASSERT_EQ(raw_publish(ctl, sid, evs), 0);
  MF_ASSERT_EQ(raw_watch(ctl, "/lc/q", 0, epoch, start, 10, 0, &r), 0);
  if (r != NULL) {
    MF_ASSERT_EQ(r->events->len, 1);
    if (r->events->len == 1) {
      MF_ASSERT_EQ(reply_event(r, 0)->kind, MAYFLY_EVENT_KIND_POP);
      CU_ASSERT_STRING_EQUAL(reply_event(r, 0)->path, "/lc/q");
    }
    g_object_unref(r);
    r = NULL;
  }
  /* A removed namespace's late events go nowhere. */
  MF_ASSERT_EQ(mayfly_stat(c, "/lc/gone", &st), 0);
  if (st != NULL) {
    MF_ASSERT_EQ(raw_watch(ctl, "/lc/gone", 0, 0, 0, 10, 0, NULL), 0);
    MF_ASSERT_EQ(mayfly_remove(c, "/lc/gone", 0), 0);
    g_ptr_array_set_size(evs, 0);
    g_ptr_array_add(evs, data_event(st->partitions[0].block_index, st->partitions[0].generation,
                                    MAYFLY_EVENT_KIND_PUSH, NULL));
    MF_ASSERT_EQ(raw_publish(ctl, sid, evs), 0);
    mayfly_stat_free(st);
  }
  g_ptr_array_free(evs, TRUE);
out:
  mf_ctl_close(ctl);
  mayfly_disconnect(c);
  MF_ASSERT_EQ(mf_stop(d), 0);
}

/* A connection closed while its watch waits costs the directory nothing:
 * many of them come and go, the directory stays up and exits cleanly (the
 * sanitizer build checks for leaks at that exit). */
static void test_connections_closed_while_their_watch_waits_are_cleaned_up(void) {
  mf_daemon_t *d = mf_start_directory(NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  mayfly_client_t *c = NULL;
  MF_ASSERT_EQ(mayfly_connect(d->address, NULL, &c), 0);
  MF_ASSERT_EQ(mayfly_mkdir(c, "/idle", 0), 0);
  for (int i = 0; i < 20; i++) {
    mayfly_listener_t *l = NULL;
    MF_ASSERT_EQ(mayfly_listen(c, "/idle", 0, &l), 0);
    mf_sleep_ms(20); /* its long poll is waiting in the directory now */
    mayfly_listener_close(l);
  }
  /* Still serving, and a listener still works. */
  mayfly_listener_t *l = NULL;
  MF_ASSERT_EQ(mayfly_listen(c, "/idle", 0, &l), 0);
  MF_ASSERT_EQ(mayfly_mkdir(c, "/idle/x", 0), 0);
  mayfly_event_t *ev = NULL;
  MF_ASSERT_EQ(mayfly_listener_next(l, &ev, 5000), 0);
  if (ev != NULL) CU_ASSERT_STRING_EQUAL(ev->path, "/idle/x");
  mayfly_event_free(ev);
  /* Shut down with a watch still waiting. */
  mayfly_disconnect(c);
  MF_ASSERT_EQ(mf_stop(d), 0);
  mayfly_listener_close(l);
}

static const mf_test_t tests[] = {
    {"two listeners see every write of a writer once and in order across servers",
     test_two_listeners_see_every_write_of_a_writer_once_and_in_order_across_servers},
    {"a lease expiry reaches a listener of the parent directory",
     test_a_lease_expiry_reaches_a_listener_of_the_parent_directory},
    {"a reducer waits for the done marker instead of polling",
     test_a_reducer_waits_for_the_done_marker_instead_of_polling},
    {"children created and removed reach a directory listener; removal ends a listener",
     test_children_created_and_removed_reach_a_directory_listener_and_removal_ends_it},
    {"queue and file events carry item sizes, offsets and lengths",
     test_queue_and_file_events_carry_item_sizes_offsets_and_lengths},
    {"a queue that grows and shrinks under a listener loses no event",
     test_a_queue_that_grows_and_shrinks_under_a_listener_loses_no_event},
    {"a kv namespace that splits and merges under two listeners loses no event",
     test_a_kv_namespace_that_splits_and_merges_under_a_listener_loses_no_event},
    {"a slow listener whose buffer overflowed gets a GAP with the right count",
     test_a_slow_listener_whose_buffer_overflowed_gets_a_gap_with_the_right_count},
    {"a watcher that fell behind the directory's ring gets a GAP of what it missed",
     test_a_watcher_that_fell_behind_the_directory_ring_gets_a_gap_of_what_it_missed},
    {"a directory restart is reported to a listener as a GAP",
     test_a_directory_restart_is_reported_to_a_listener_as_a_gap},
    {"mayfly watch prints events as they happen and stops cleanly",
     test_mayfly_watch_prints_events_as_they_happen_and_stops_cleanly},
    {"mayfly watch refuses bad arguments with the CLI's conventions",
     test_mayfly_watch_refuses_bad_arguments_with_the_cli_conventions},
    {"watch and publish refuse hostile arguments; a watch waits without blocking",
     test_watch_and_publish_refuse_hostile_arguments_and_a_watch_waits_without_blocking},
    {"events of a block freed by a layout change still count",
     test_events_of_a_block_freed_by_a_layout_change_still_count},
    {"connections closed while their watch waits are cleaned up",
     test_connections_closed_while_their_watch_waits_are_cleaned_up},
    {NULL, NULL}};

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  return mf_test_run("notifications", NULL, NULL, tests);
}
