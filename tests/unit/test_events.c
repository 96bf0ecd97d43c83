/*
 * Unit tests for directory/events.c: how the directory numbers the events of
 * each node, what a watcher gets back (GAPs included), and which namespace
 * events each change of the tree causes, in-process over a real ns_tree_t;
 * and the publish and watch calls' policy (which log a data event goes to,
 * what a watch answers and when it defers) that the handlers only adapt.
 *
 * Records are applied the way dir_apply() does: dir_events_before(), then
 * ns_tree_apply(), then dir_events_after() when the record applied.
 */
#include <string.h>

#include "common/config.h"
#include "common/error.h"
#include "directory/events.h"
#include "mf_test.h"
#include "namespaces/tree.h"

#define WALL 1700000000000LL

typedef struct {
  ns_tree_t *t;
  dir_events_t *ev;
} fixture_t;

static void setup(fixture_t *f) {
  f->t = ns_tree_new(1000, 100);
  f->ev = dir_events_new(42);
}

static void teardown(fixture_t *f) {
  dir_events_free(f->ev);
  ns_tree_free(f->t);
}

/* Applies a record as the directory does; returns ns_tree_apply's result. */
static int apply(fixture_t *f, ns_record_t rec) {
  ns_effects_t fx;
  ns_effects_init(&fx);
  rec.wall_ms = WALL;
  dir_events_pre_t pre;
  dir_events_before(f->ev, f->t, &rec, &pre);
  int rc = ns_tree_apply(f->t, &rec, &fx, NULL, 0);
  if (rc == 0) dir_events_after(f->ev, f->t, &rec, &fx, 0, &pre);
  dir_events_pre_clear(&pre);
  ns_effects_clear(&fx);
  return rc;
}

static int mkdir_p(fixture_t *f, const char *path) {
  return apply(f, (ns_record_t){.type = NS_REC_MKDIR, .path = path, .flags = NS_REC_PARENTS});
}

/* The log of path, watched now (as a watch call does). */
static dir_evlog_t *watch(fixture_t *f, const char *path) {
  dir_evlog_t *log = dir_events_open(f->ev, path);
  dir_events_touch(f->ev, log, mf_now_ms(), 0);
  return log;
}

static GArray *collect(dir_evlog_t *log, int64_t after, uint32_t mask, guint max, int64_t *last) {
  GArray *out = g_array_new(FALSE, FALSE, sizeof(dir_event_t));
  *last = dir_events_collect(log, after, mask, max, 1u << 20, out);
  return out;
}

static dir_event_t *at(GArray *a, guint i) {
  return &g_array_index(a, dir_event_t, i);
}

static void put(fixture_t *f, dir_evlog_t *log, const char *key) {
  dir_events_append(f->ev, log, DIR_EV_PUT, NULL, key, 0, 3, WALL);
}

/* ---- numbering and collecting -------------------------------------------- */

static void test_numbers_start_at_one_and_a_mask_skips_without_losing_the_place(void) {
  fixture_t f;
  setup(&f);
  dir_evlog_t *log = watch(&f, "/kv");
  put(&f, log, "YQ==");
  dir_events_append(f.ev, log, DIR_EV_DELETE, NULL, "YQ==", 0, 1, WALL);
  put(&f, log, "Yg==");
  MF_ASSERT_EQ(log->last_seq, 3);
  int64_t last;
  GArray *got = collect(log, 0, DIR_EV_BIT(DIR_EV_PUT), 10, &last);
  MF_ASSERT_EQ(got->len, 2);
  MF_ASSERT_EQ(at(got, 0)->seq, 1);
  MF_ASSERT_EQ(at(got, 1)->seq, 3);
  CU_ASSERT_STRING_EQUAL(at(got, 1)->key, "Yg==");
  CU_ASSERT_STRING_EQUAL(at(got, 1)->path, "/kv"); /* filled in from the log */
  MF_ASSERT_EQ(last, 3);
  g_array_free(got, TRUE);
  /* Only the deletes: the puts are skipped, the place still moves on. */
  got = collect(log, 1, DIR_EV_BIT(DIR_EV_DELETE), 10, &last);
  MF_ASSERT_EQ(got->len, 1);
  MF_ASSERT_EQ(last, 3);
  g_array_free(got, TRUE);
  /* max: the place stops at the last event returned. */
  got = collect(log, 0, 0, 2, &last);
  MF_ASSERT_EQ(got->len, 2);
  MF_ASSERT_EQ(last, 2);
  g_array_free(got, TRUE);
  /* Nothing new: nothing, same place. */
  got = collect(log, 3, 0, 10, &last);
  MF_ASSERT_EQ(got->len, 0);
  MF_ASSERT_EQ(last, 3);
  g_array_free(got, TRUE);
  teardown(&f);
}

static void test_a_watcher_behind_the_ring_gets_a_gap_of_exactly_what_it_missed(void) {
  fixture_t f;
  setup(&f);
  dir_evlog_t *log = watch(&f, "/kv");
  for (int i = 0; i < DIR_EVLOG_MAX + 904; i++) put(&f, log, "YQ==");
  MF_ASSERT_EQ(log->len, DIR_EVLOG_MAX);
  int64_t last;
  GArray *got = collect(log, 0, 0, 3, &last);
  MF_ASSERT_EQ(got->len, 3);
  MF_ASSERT_EQ(at(got, 0)->kind, DIR_EV_GAP);
  MF_ASSERT_EQ(at(got, 0)->offset, 1);
  MF_ASSERT_EQ(at(got, 0)->length, 904);
  MF_ASSERT_EQ(at(got, 0)->seq, 904);
  MF_ASSERT_EQ(at(got, 1)->seq, 905);
  MF_ASSERT_EQ(last, 906);
  g_array_free(got, TRUE);
  /* A GAP passes any mask. */
  got = collect(log, 10, DIR_EV_BIT(DIR_EV_DELETE), 3, &last);
  MF_ASSERT_EQ(got->len, 1);
  MF_ASSERT_EQ(at(got, 0)->kind, DIR_EV_GAP);
  MF_ASSERT_EQ(at(got, 0)->offset, 11);
  MF_ASSERT_EQ(at(got, 0)->length, 894);
  g_array_free(got, TRUE);
  teardown(&f);
}

static void test_events_of_a_log_nobody_watches_are_counted_not_kept(void) {
  fixture_t f;
  setup(&f);
  dir_evlog_t *log = watch(&f, "/kv");
  put(&f, log, "YQ==");
  log->watched_until = 0; /* the watch lapsed */
  put(&f, log, "YQ==");
  put(&f, log, "YQ==");
  MF_ASSERT_EQ(log->len, 0);
  MF_ASSERT_EQ(log->last_seq, 3);
  watch(&f, "/kv");
  put(&f, log, "YQ==");
  int64_t last;
  GArray *got = collect(log, 1, 0, 10, &last);
  MF_ASSERT_EQ(got->len, 2);
  MF_ASSERT_EQ(at(got, 0)->kind, DIR_EV_GAP);
  MF_ASSERT_EQ(at(got, 0)->offset, 2);
  MF_ASSERT_EQ(at(got, 0)->length, 2);
  MF_ASSERT_EQ(at(got, 1)->seq, 4);
  g_array_free(got, TRUE);
  teardown(&f);
}

static void test_a_lapsed_data_watch_leaves_a_gap_of_unknown_size(void) {
  fixture_t f;
  setup(&f);
  dir_evlog_t *log = dir_events_open(f.ev, "/kv");
  int64_t now = mf_now_ms();
  MF_ASSERT_EQ(dir_events_touch(f.ev, log, now, 1), 1); /* a new data watch */
  MF_ASSERT_EQ(dir_events_touch(f.ev, log, now + 10, 1), 0);
  CU_ASSERT(dir_events_data_watched(log, now + 10));
  CU_ASSERT_FALSE(dir_events_data_watched(log, now + DIR_WATCH_WINDOW_MS + 20));
  uint64_t v = log->data_version;
  MF_ASSERT_EQ(dir_events_touch(f.ev, log, now + DIR_WATCH_WINDOW_MS + 20, 1), 1);
  CU_ASSERT(log->data_version > v);
  MF_ASSERT_EQ(log->last_seq, 1);
  int64_t last;
  GArray *got = collect(log, 0, DIR_EV_BIT(DIR_EV_PUT), 10, &last);
  MF_ASSERT_EQ(got->len, 1);
  MF_ASSERT_EQ(at(got, 0)->kind, DIR_EV_GAP);
  MF_ASSERT_EQ(at(got, 0)->length, -1);
  g_array_free(got, TRUE);
  teardown(&f);
}

static int woken;
static void on_wake(void *w) {
  woken += *(int *)w;
}

static void test_waiters_are_woken_by_each_event_until_removed(void) {
  fixture_t f;
  setup(&f);
  dir_evlog_t *log = watch(&f, "/kv");
  int one = 1, ten = 10;
  woken = 0;
  dir_events_wait(log, on_wake, &one);
  dir_events_wait(log, on_wake, &ten);
  put(&f, log, "YQ==");
  MF_ASSERT_EQ(woken, 11);
  dir_events_unwait(log, &ten);
  dir_events_wake(log);
  MF_ASSERT_EQ(woken, 12);
  /* A log with a waiter keeps its events even when the watch lapsed. */
  log->watched_until = 0;
  put(&f, log, "YQ==");
  MF_ASSERT_EQ(log->len, 2);
  dir_events_unwait(log, &one);
  teardown(&f);
}

/* ---- namespace events from the tree -------------------------------------- */

static void test_mkdir_p_reports_each_created_child_to_its_watched_parent_only(void) {
  fixture_t f;
  setup(&f);
  MF_ASSERT_EQ(mkdir_p(&f, "/a"), 0);
  dir_evlog_t *a = watch(&f, "/a");
  MF_ASSERT_EQ(mkdir_p(&f, "/a/b/c"), 0);
  MF_ASSERT_EQ(a->last_seq, 1); /* /a/b only: /a/b/c is not a child of /a */
  int64_t last;
  GArray *got = collect(a, 0, 0, 10, &last);
  MF_ASSERT_EQ(at(got, 0)->kind, DIR_EV_CHILD_CREATED);
  CU_ASSERT_STRING_EQUAL(at(got, 0)->path, "/a/b");
  g_array_free(got, TRUE);
  /* An existing directory with NS_REC_PARENTS creates nothing. */
  MF_ASSERT_EQ(mkdir_p(&f, "/a/b"), 0);
  MF_ASSERT_EQ(a->last_seq, 1);
  /* A failed record numbers nothing. */
  CU_ASSERT(apply(&f, (ns_record_t){.type = NS_REC_MKDIR, .path = "/a/b"}) != 0);
  MF_ASSERT_EQ(a->last_seq, 1);
  /* Nobody watches /a/b: it has no log. */
  CU_ASSERT_PTR_NULL(dir_events_find(f.ev, "/a/b"));
  teardown(&f);
}

static void test_a_removal_is_removed_on_the_node_and_child_removed_on_its_parent(void) {
  fixture_t f;
  setup(&f);
  MF_ASSERT_EQ(mkdir_p(&f, "/a/b/c"), 0);
  dir_evlog_t *a = watch(&f, "/a"), *b = watch(&f, "/a/b"), *c = watch(&f, "/a/b/c");
  MF_ASSERT_EQ(apply(&f, (ns_record_t){.type = NS_REC_REMOVE, .path = "/a/b",
                                        .flags = NS_REC_RECURSIVE}),
               0);
  int64_t last;
  GArray *got = collect(c, 0, 0, 10, &last);
  MF_ASSERT_EQ(got->len, 1);
  MF_ASSERT_EQ(at(got, 0)->kind, DIR_EV_REMOVED);
  g_array_free(got, TRUE);
  got = collect(b, 0, 0, 10, &last); /* children first */
  MF_ASSERT_EQ(got->len, 2);
  MF_ASSERT_EQ(at(got, 0)->kind, DIR_EV_CHILD_REMOVED);
  CU_ASSERT_STRING_EQUAL(at(got, 0)->path, "/a/b/c");
  MF_ASSERT_EQ(at(got, 1)->kind, DIR_EV_REMOVED);
  g_array_free(got, TRUE);
  got = collect(a, 0, 0, 10, &last);
  MF_ASSERT_EQ(got->len, 1);
  MF_ASSERT_EQ(at(got, 0)->kind, DIR_EV_CHILD_REMOVED);
  CU_ASSERT_STRING_EQUAL(at(got, 0)->path, "/a/b");
  g_array_free(got, TRUE);
  /* Watched logs stay as tombstones; the sweep drops them once unwatched. */
  CU_ASSERT(b->removed && c->removed);
  CU_ASSERT(dir_events_find(f.ev, "/a/b") == b);
  b->watched_until = c->watched_until = 0;
  dir_events_sweep(f.ev, mf_now_ms());
  CU_ASSERT_PTR_NULL(dir_events_find(f.ev, "/a/b"));
  CU_ASSERT_PTR_NULL(dir_events_find(f.ev, "/a/b/c"));
  CU_ASSERT(dir_events_find(f.ev, "/a") == a);
  teardown(&f);
}

static void test_a_node_created_again_takes_its_tombstone_back_and_numbers_go_on(void) {
  fixture_t f;
  setup(&f);
  MF_ASSERT_EQ(mkdir_p(&f, "/a/b"), 0);
  dir_evlog_t *b = watch(&f, "/a/b");
  MF_ASSERT_EQ(apply(&f, (ns_record_t){.type = NS_REC_REMOVE, .path = "/a/b"}), 0);
  CU_ASSERT(b->removed);
  MF_ASSERT_EQ(mkdir_p(&f, "/a/b"), 0);
  CU_ASSERT_FALSE(b->removed);
  MF_ASSERT_EQ(mkdir_p(&f, "/a/b/x"), 0);
  MF_ASSERT_EQ(b->last_seq, 2); /* REMOVED, then CHILD_CREATED */
  teardown(&f);
}

static void test_an_unwatched_removed_node_leaves_nothing_behind(void) {
  fixture_t f;
  setup(&f);
  MF_ASSERT_EQ(mkdir_p(&f, "/a/b"), 0);
  dir_evlog_t *b = watch(&f, "/a/b");
  b->watched_until = 0;
  MF_ASSERT_EQ(apply(&f, (ns_record_t){.type = NS_REC_REMOVE, .path = "/a/b"}), 0);
  CU_ASSERT_PTR_NULL(dir_events_find(f.ev, "/a/b"));
  teardown(&f);
}

static void test_a_rename_is_the_old_path_removed_and_the_new_one_created(void) {
  fixture_t f;
  setup(&f);
  MF_ASSERT_EQ(mkdir_p(&f, "/src/d/inner"), 0);
  MF_ASSERT_EQ(mkdir_p(&f, "/dst"), 0);
  dir_evlog_t *src = watch(&f, "/src"), *dst = watch(&f, "/dst"), *d = watch(&f, "/src/d"),
              *inner = watch(&f, "/src/d/inner");
  MF_ASSERT_EQ(apply(&f, (ns_record_t){.type = NS_REC_RENAME, .path = "/src/d",
                                        .path2 = "/dst/e"}),
               0);
  int64_t last;
  GArray *got = collect(src, 0, 0, 10, &last);
  MF_ASSERT_EQ(got->len, 1);
  MF_ASSERT_EQ(at(got, 0)->kind, DIR_EV_CHILD_REMOVED);
  CU_ASSERT_STRING_EQUAL(at(got, 0)->path, "/src/d");
  g_array_free(got, TRUE);
  got = collect(dst, 0, 0, 10, &last);
  MF_ASSERT_EQ(got->len, 1);
  MF_ASSERT_EQ(at(got, 0)->kind, DIR_EV_CHILD_CREATED);
  CU_ASSERT_STRING_EQUAL(at(got, 0)->path, "/dst/e");
  g_array_free(got, TRUE);
  /* Everything at or under the old path is gone from there. */
  CU_ASSERT(d->removed && inner->removed);
  MF_ASSERT_EQ(d->last_seq, 1);
  MF_ASSERT_EQ(inner->last_seq, 1);
  teardown(&f);
}

static void test_an_expiry_is_lease_expired_then_the_removal_on_node_and_parent(void) {
  fixture_t f;
  setup(&f);
  MF_ASSERT_EQ(mkdir_p(&f, "/job"), 0);
  ns_node_t *job = ns_tree_lookup(f.t, "/job");
  job->flags |= NS_FLAG_PINNED; /* only the child expires */
  MF_ASSERT_EQ(apply(&f, (ns_record_t){.type = NS_REC_MKDIR, .path = "/job/tmp", .now_ms = 1}),
               0);
  dir_evlog_t *jl = watch(&f, "/job"), *tl = watch(&f, "/job/tmp");
  ns_effects_t fx;
  ns_effects_init(&fx);
  MF_ASSERT_EQ(ns_tree_reap(f.t, 100000, &fx), 1);
  ns_record_t expired = {.type = NS_REC_REMOVE, .flags = NS_REC_EXPIRED, .wall_ms = WALL};
  dir_events_after(f.ev, f.t, &expired, &fx, 0, NULL);
  ns_effects_clear(&fx);
  int64_t last;
  GArray *got = collect(tl, 0, 0, 10, &last);
  MF_ASSERT_EQ(got->len, 2);
  MF_ASSERT_EQ(at(got, 0)->kind, DIR_EV_LEASE_EXPIRED);
  MF_ASSERT_EQ(at(got, 1)->kind, DIR_EV_REMOVED);
  g_array_free(got, TRUE);
  got = collect(jl, 0, 0, 10, &last);
  MF_ASSERT_EQ(got->len, 2);
  MF_ASSERT_EQ(at(got, 0)->kind, DIR_EV_LEASE_EXPIRED);
  CU_ASSERT_STRING_EQUAL(at(got, 0)->path, "/job/tmp");
  MF_ASSERT_EQ(at(got, 1)->kind, DIR_EV_CHILD_REMOVED);
  MF_ASSERT_EQ(at(got, 1)->time_ms, WALL);
  g_array_free(got, TRUE);
  teardown(&f);
}

static void test_nothing_is_done_while_nobody_ever_watched(void) {
  fixture_t f;
  setup(&f);
  MF_ASSERT_EQ(mkdir_p(&f, "/a/b/c"), 0);
  MF_ASSERT_EQ(apply(&f, (ns_record_t){.type = NS_REC_REMOVE, .path = "/a",
                                        .flags = NS_REC_RECURSIVE}),
               0);
  MF_ASSERT_EQ(g_hash_table_size(f.ev->logs), 0);
  MF_ASSERT_EQ(f.ev->sequenced, 0);
  teardown(&f);
}

static void test_a_retired_block_maps_to_its_namespace_for_a_while(void) {
  fixture_t f;
  setup(&f);
  watch(&f, "/kv");
  int64_t now = mf_now_ms();
  dir_events_retire(f.ev, 2, 7, 41, "/kv", now);
  dir_events_retire(f.ev, 2, 8, 41, "/never-watched", now);
  CU_ASSERT_STRING_EQUAL(dir_events_retired_path(f.ev, 2, 7, 41), "/kv");
  CU_ASSERT_PTR_NULL(dir_events_retired_path(f.ev, 2, 7, 42)); /* another generation */
  CU_ASSERT_PTR_NULL(dir_events_retired_path(f.ev, 2, 8, 41));
  dir_events_sweep(f.ev, now + DIR_RETIRED_MS - 1);
  CU_ASSERT_PTR_NOT_NULL(dir_events_retired_path(f.ev, 2, 7, 41));
  dir_events_sweep(f.ev, now + DIR_RETIRED_MS);
  CU_ASSERT_PTR_NULL(dir_events_retired_path(f.ev, 2, 7, 41));
  teardown(&f);
}

/* ---- the publish and watch calls ------------------------------------------ */

/* Registers a server of 4 blocks and creates a kv namespace of 2 blocks
 * on it; returns the server id. */
static int32_t server_and_kv(fixture_t *f, const char *path) {
  ns_effects_t fx;
  ns_effects_init(&fx);
  ns_record_t srv = {.type = NS_REC_SERVER_ADD, .address = "127.0.0.1:7001", .blocks = 4,
                     .block_size = 4096};
  MF_ASSERT_EQ(ns_tree_apply(f->t, &srv, &fx, NULL, 0), 0);
  int32_t id = fx.server_id;
  ns_effects_clear(&fx);
  ns_partition_t parts[2];
  MF_ASSERT_EQ(ns_tree_plan_parts(f->t, NS_KIND_KV, 2, parts), 0);
  MF_ASSERT_EQ(apply(f, (ns_record_t){.type = NS_REC_CREATE, .path = path, .kind = NS_KIND_KV,
                                      .parts = parts, .nparts = 2}),
               0);
  return id;
}

static void test_publish_numbers_events_on_the_owner_of_each_block_and_checks_the_batch_first(
    void) {
  fixture_t f;
  setup(&f);
  int32_t sid = server_and_kv(&f, "/kv");
  const ns_node_t *n = ns_tree_lookup(f.t, "/kv");
  const ns_partition_t *p0 = &g_array_index(n->layout.parts, ns_partition_t, 0);
  const ns_partition_t *p1 = &g_array_index(n->layout.parts, ns_partition_t, 1);
  dir_evlog_t *log = watch(&f, "/kv");
  char why[160] = "";
  dir_data_event_t evs[] = {
      {.block_index = p0->block.index, .generation = p0->block.generation, .kind = DIR_EV_PUT,
       .key = "YQ==", .length = 1},
      {.block_index = p1->block.index, .generation = p1->block.generation, .kind = DIR_EV_WRITE,
       .offset = 9, .length = 4},
      /* A stale generation: nobody's event, dropped. */
      {.block_index = p1->block.index, .generation = p1->block.generation + 5,
       .kind = DIR_EV_DELETE, .key = "Yg=="}};
  MF_ASSERT_EQ(dir_events_publish(f.ev, f.t->alloc, sid, evs, 3, WALL, why, sizeof why), 0);
  MF_ASSERT_EQ(log->last_seq, 2);
  int64_t last;
  GArray *got = collect(log, 0, 0, 10, &last);
  MF_ASSERT_EQ(got->len, 2);
  MF_ASSERT_EQ(at(got, 0)->kind, DIR_EV_PUT);
  CU_ASSERT_STRING_EQUAL(at(got, 0)->key, "YQ==");
  MF_ASSERT_EQ(at(got, 1)->kind, DIR_EV_WRITE);
  MF_ASSERT_EQ(at(got, 1)->offset, 9);
  CU_ASSERT_PTR_NULL(at(got, 1)->key);
  g_array_free(got, TRUE);

  /* A bad event refuses the whole batch, naming it; nothing is numbered. */
  dir_data_event_t bad[] = {evs[0], {.block_index = 99, .kind = DIR_EV_PUT}};
  MF_ASSERT_EQ(dir_events_publish(f.ev, f.t->alloc, sid, bad, 2, WALL, why, sizeof why),
               MAYFLY_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "event 1: server"));
  bad[1] = (dir_data_event_t){.block_index = 0, .kind = DIR_EV_CHILD_CREATED};
  MF_ASSERT_EQ(dir_events_publish(f.ev, f.t->alloc, sid, bad, 2, WALL, why, sizeof why),
               MAYFLY_EINVAL);
  bad[1] = (dir_data_event_t){.block_index = 0, .kind = DIR_EV_PUT, .key = "not base64!"};
  MF_ASSERT_EQ(dir_events_publish(f.ev, f.t->alloc, sid, bad, 2, WALL, why, sizeof why),
               MAYFLY_EINVAL);
  bad[1] = (dir_data_event_t){.block_index = 0, .kind = DIR_EV_POP, .length = -1};
  MF_ASSERT_EQ(dir_events_publish(f.ev, f.t->alloc, sid, bad, 2, WALL, why, sizeof why),
               MAYFLY_EINVAL);
  MF_ASSERT_EQ(log->last_seq, 2);
  MF_ASSERT_EQ(dir_events_publish(f.ev, f.t->alloc, sid + 1, evs, 1, WALL, why, sizeof why),
               MAYFLY_ESERVER);
  dir_data_event_t *many = g_new0(dir_data_event_t, DIR_PUBLISH_MAX_EVENTS + 1);
  MF_ASSERT_EQ(dir_events_publish(f.ev, f.t->alloc, sid, many, DIR_PUBLISH_MAX_EVENTS + 1, WALL,
                                  why, sizeof why),
               MAYFLY_ETOOBIG);
  g_free(many);

  /* A block a layout change just freed still counts as its namespace's. */
  dir_events_retire(f.ev, sid, 3, 77, "/kv", mf_now_ms());
  dir_data_event_t late = {.block_index = 3, .generation = 77, .kind = DIR_EV_PUSH, .length = 8};
  MF_ASSERT_EQ(dir_events_publish(f.ev, f.t->alloc, sid, &late, 1, WALL, why, sizeof why), 0);
  MF_ASSERT_EQ(log->last_seq, 3);
  teardown(&f);
}

static int always_armed(void *ud, dir_evlog_t *log) {
  return 1;
}

static int never_armed(void *ud, dir_evlog_t *log) {
  return 0;
}

static void test_watch_starts_from_now_collects_after_seq_and_defers_only_when_it_may(void) {
  fixture_t f;
  setup(&f);
  server_and_kv(&f, "/kv");
  char why[160] = "";
  dir_watch_req_t req = {.path = "/kv", .max = 10, .armed = always_armed};
  dir_watch_res_t res = {.events = g_array_new(FALSE, FALSE, sizeof(dir_event_t))};
  int64_t now = mf_now_ms();
  /* Epoch 0: the place to start from, no events. */
  MF_ASSERT_EQ(dir_events_watch(f.ev, f.t, &req, now, &res, why, sizeof why), 0);
  MF_ASSERT_EQ(res.epoch, 42);
  MF_ASSERT_EQ(res.last_seq, 0);
  MF_ASSERT_EQ(res.events->len, 0);
  CU_ASSERT_PTR_NULL(res.defer_log);
  dir_evlog_t *log = dir_events_find(f.ev, "/kv");
  CU_ASSERT_PTR_NOT_NULL_FATAL(log);
  put(&f, log, "YQ==");
  put(&f, log, "Yg==");
  req.epoch = 42;
  req.after_seq = 1;
  MF_ASSERT_EQ(dir_events_watch(f.ev, f.t, &req, now, &res, why, sizeof why), 0);
  MF_ASSERT_EQ(res.events->len, 1);
  MF_ASSERT_EQ(g_array_index(res.events, dir_event_t, 0).seq, 2);
  MF_ASSERT_EQ(res.last_seq, 2);
  g_array_set_size(res.events, 0);

  /* Nothing new: defers when the caller can hold it, else answers empty. */
  req.after_seq = 2;
  req.timeout_ms = 500;
  MF_ASSERT_EQ(dir_events_watch(f.ev, f.t, &req, now, &res, why, sizeof why), 0);
  CU_ASSERT_PTR_NULL(res.defer_log);
  req.can_defer = 1;
  MF_ASSERT_EQ(dir_events_watch(f.ev, f.t, &req, now, &res, why, sizeof why), 0);
  CU_ASSERT(res.defer_log == log);
  MF_ASSERT_EQ(res.defer_ms, 500);
  req.timeout_ms = 1 << 30; /* capped */
  MF_ASSERT_EQ(dir_events_watch(f.ev, f.t, &req, now, &res, why, sizeof why), 0);
  MF_ASSERT_EQ(res.defer_ms, DIR_WATCH_MAX_WAIT_MS);

  /* A fresh data watch waits until every memory server publishes. */
  dir_watch_req_t fresh = {.path = "/kv", .can_defer = 1, .timeout_ms = 100,
                           .armed = never_armed};
  MF_ASSERT_EQ(dir_events_watch(f.ev, f.t, &fresh, now, &res, why, sizeof why), 0);
  CU_ASSERT(res.defer_log == log);

  /* A stale epoch starts from now with a GAP of unknown size. */
  dir_watch_req_t stale = {.path = "/kv", .epoch = 7, .armed = always_armed};
  g_array_set_size(res.events, 0);
  MF_ASSERT_EQ(dir_events_watch(f.ev, f.t, &stale, now, &res, why, sizeof why), 0);
  MF_ASSERT_EQ(res.events->len, 1);
  MF_ASSERT_EQ(g_array_index(res.events, dir_event_t, 0).kind, DIR_EV_GAP);
  MF_ASSERT_EQ(g_array_index(res.events, dir_event_t, 0).length, -1);
  MF_ASSERT_EQ(res.last_seq, 2);

  /* Refusals: each names what is wrong. */
  dir_watch_req_t r2 = req;
  r2.mask = 1u << 20;
  MF_ASSERT_EQ(dir_events_watch(f.ev, f.t, &r2, now, &res, why, sizeof why), MAYFLY_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "mask"));
  r2 = req;
  r2.timeout_ms = -1;
  MF_ASSERT_EQ(dir_events_watch(f.ev, f.t, &r2, now, &res, why, sizeof why), MAYFLY_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "timeout_ms"));
  r2 = req;
  r2.path = "/absent";
  MF_ASSERT_EQ(dir_events_watch(f.ev, f.t, &r2, now, &res, why, sizeof why), MAYFLY_ENOENT);
  r2.path = "no/slash";
  MF_ASSERT_EQ(dir_events_watch(f.ev, f.t, &r2, now, &res, why, sizeof why), MAYFLY_EBADPATH);
  g_array_free(res.events, TRUE);
  teardown(&f);
}

static void test_a_watcher_from_another_epoch_whose_node_is_gone_gets_gap_then_removed(void) {
  fixture_t f;
  setup(&f);
  server_and_kv(&f, "/kv");
  char why[160] = "";
  int64_t now = mf_now_ms();
  dir_watch_res_t res = {.events = g_array_new(FALSE, FALSE, sizeof(dir_event_t))};
  /* The directory restarted (epoch 42 now, the watcher saw 7) and /gone
   * is not in its tree: GAP of unknown count, then REMOVED, new epoch. */
  dir_watch_req_t req = {.path = "/gone", .epoch = 7, .after_seq = 30, .can_defer = 1,
                         .timeout_ms = 1000, .armed = never_armed};
  MF_ASSERT_EQ(dir_events_watch(f.ev, f.t, &req, now, &res, why, sizeof why), 0);
  CU_ASSERT_PTR_NULL(res.defer_log);
  MF_ASSERT_EQ(res.epoch, 42);
  MF_ASSERT_EQ(res.last_seq, 0);
  MF_ASSERT_EQ(res.events->len, 2);
  if (res.events->len == 2) {
    MF_ASSERT_EQ(at(res.events, 0)->kind, DIR_EV_GAP);
    MF_ASSERT_EQ(at(res.events, 0)->offset, 0);
    MF_ASSERT_EQ(at(res.events, 0)->length, -1);
    CU_ASSERT_STRING_EQUAL(at(res.events, 0)->path, "/gone");
    MF_ASSERT_EQ(at(res.events, 1)->kind, DIR_EV_REMOVED);
    CU_ASSERT_STRING_EQUAL(at(res.events, 1)->path, "/gone");
  }
  /* Nothing was created for it, and its next watch (new epoch) ends. */
  CU_ASSERT_PTR_NULL(dir_events_find(f.ev, "/gone"));
  req.epoch = res.epoch;
  req.after_seq = res.last_seq;
  g_array_set_size(res.events, 0);
  MF_ASSERT_EQ(dir_events_watch(f.ev, f.t, &req, now, &res, why, sizeof why), MAYFLY_ENOENT);

  /* A mask without REMOVED still gets the GAP (a GAP always passes). */
  dir_watch_req_t data_only = {.path = "/gone", .epoch = 7, .mask = DIR_EV_DATA_MASK,
                               .armed = always_armed};
  MF_ASSERT_EQ(dir_events_watch(f.ev, f.t, &data_only, now, &res, why, sizeof why), 0);
  MF_ASSERT_EQ(res.events->len, 1);
  if (res.events->len == 1) MF_ASSERT_EQ(at(res.events, 0)->kind, DIR_EV_GAP);
  g_array_set_size(res.events, 0);

  /* A node removed in the new epoch leaves a tombstone: the old-epoch
   * watcher goes on from its seq, so it does not get REMOVED twice. */
  dir_watch_req_t fresh = {.path = "/kv", .armed = always_armed};
  MF_ASSERT_EQ(dir_events_watch(f.ev, f.t, &fresh, now, &res, why, sizeof why), 0);
  MF_ASSERT_EQ(apply(&f, (ns_record_t){.type = NS_REC_REMOVE, .path = "/kv"}), 0);
  dir_evlog_t *log = dir_events_find(f.ev, "/kv");
  CU_ASSERT_PTR_NOT_NULL_FATAL(log);
  CU_ASSERT(log->removed);
  g_array_set_size(res.events, 0);
  dir_watch_req_t old = {.path = "/kv", .epoch = 7, .after_seq = 5, .armed = always_armed};
  MF_ASSERT_EQ(dir_events_watch(f.ev, f.t, &old, now, &res, why, sizeof why), 0);
  MF_ASSERT_EQ(res.last_seq, log->last_seq);
  MF_ASSERT_EQ(res.events->len, 2);
  old.epoch = res.epoch;
  old.after_seq = res.last_seq;
  MF_ASSERT_EQ(dir_events_watch(f.ev, f.t, &old, now, &res, why, sizeof why), MAYFLY_ENOENT);

  /* Epoch 0 (a first watch) of a missing path is still MAYFLY_ENOENT. */
  dir_watch_req_t first = {.path = "/gone", .armed = always_armed};
  MF_ASSERT_EQ(dir_events_watch(f.ev, f.t, &first, now, &res, why, sizeof why), MAYFLY_ENOENT);
  g_array_free(res.events, TRUE);
  teardown(&f);
}

static const mf_test_t tests[] = {
    {"numbers start at 1 and a mask skips without losing the place",
     test_numbers_start_at_one_and_a_mask_skips_without_losing_the_place},
    {"a watcher behind the ring gets a GAP of exactly what it missed",
     test_a_watcher_behind_the_ring_gets_a_gap_of_exactly_what_it_missed},
    {"events of a log nobody watches are counted, not kept",
     test_events_of_a_log_nobody_watches_are_counted_not_kept},
    {"a lapsed data watch leaves a GAP of unknown size",
     test_a_lapsed_data_watch_leaves_a_gap_of_unknown_size},
    {"waiters are woken by each event until removed",
     test_waiters_are_woken_by_each_event_until_removed},
    {"mkdir -p reports each created child to its watched parent only",
     test_mkdir_p_reports_each_created_child_to_its_watched_parent_only},
    {"a removal is REMOVED on the node and CHILD_REMOVED on its parent",
     test_a_removal_is_removed_on_the_node_and_child_removed_on_its_parent},
    {"a node created again takes its tombstone back and numbers go on",
     test_a_node_created_again_takes_its_tombstone_back_and_numbers_go_on},
    {"an unwatched removed node leaves nothing behind",
     test_an_unwatched_removed_node_leaves_nothing_behind},
    {"a rename is the old path removed and the new one created",
     test_a_rename_is_the_old_path_removed_and_the_new_one_created},
    {"an expiry is LEASE_EXPIRED then the removal, on node and parent",
     test_an_expiry_is_lease_expired_then_the_removal_on_node_and_parent},
    {"nothing is done while nobody ever watched", test_nothing_is_done_while_nobody_ever_watched},
    {"a retired block maps to its namespace for a while",
     test_a_retired_block_maps_to_its_namespace_for_a_while},
    {"publish numbers events on the owner of each block and checks the batch first",
     test_publish_numbers_events_on_the_owner_of_each_block_and_checks_the_batch_first},
    {"a watcher from another epoch whose node is gone gets GAP then REMOVED",
     test_a_watcher_from_another_epoch_whose_node_is_gone_gets_gap_then_removed},
    {"watch starts from now, collects after after_seq and defers only when it may",
     test_watch_starts_from_now_collects_after_seq_and_defers_only_when_it_may},
    {NULL, NULL}};

int main(void) {
  return mf_test_run("directory events", NULL, NULL, tests);
}
