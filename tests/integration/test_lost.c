/*
 * Integration tests of what a memory server's restart costs, and no more:
 * a real directory and two real memory servers; one is killed with SIGKILL
 * and started again on the same address, with its memory empty.
 *
 * The behaviour users rely on: nothing that was lost ever reads as empty.
 * Every operation on a partition the dead process held fails with
 * MAYFLY_ELOST, through a client whose layout predates the restart (the
 * memory server answers) and through a fresh one (the library knows from
 * the layout and does not ask); listeners hear LOST; partitions on the
 * other server keep their data; `mayfly stat` says lost; removing the
 * namespaces gives the blocks back and the restarted server serves new
 * namespaces on them. A server that registers again with the same
 * incarnation (it only lost touch with the directory) keeps its data.
 */
#include <glib.h>
#include <json-glib/json-glib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/mayfly.h"
#include "common/wire.h"
#include "harness.h"
#include "mf_test.h"

#define NKEYS 200
#define FILE_BYTES 3000

static int64_t now_ms(void) {
  return g_get_monotonic_time() / 1000;
}

static char *key_of(int i) {
  return g_strdup_printf("key-%d", i);
}

static char *value_of(int i) {
  return g_strdup_printf("value-%d-of-%d", i, NKEYS);
}

/* Parses `text` as JSON; NULL (and a failed check) when it is not. */
static JsonNode *parse(const char *text) {
  JsonParser *p = json_parser_new();
  JsonNode *root = NULL;
  if (text != NULL && json_parser_load_from_data(p, text, -1, NULL) &&
      json_parser_get_root(p) != NULL) {
    root = json_node_copy(json_parser_get_root(p));
  }
  g_object_unref(p);
  CU_ASSERT_PTR_NOT_NULL(root);
  if (root == NULL) fprintf(stderr, "  not JSON: %s\n", text ? text : "(null)");
  return root;
}

/* `mayfly servers --json`: the object of the server at `address`, or NULL. */
static JsonObject *server_row(JsonNode *root, const char *address) {
  if (root == NULL || JSON_NODE_TYPE(root) != JSON_NODE_OBJECT) return NULL;
  JsonObject *top = json_node_get_object(root);
  if (!json_object_has_member(top, "servers")) return NULL;
  JsonArray *a = json_object_get_array_member(top, "servers");
  for (guint i = 0; i < json_array_get_length(a); i++) {
    JsonObject *o = json_array_get_object_element(a, i);
    if (strcmp(json_object_get_string_member(o, "address"), address) == 0) return o;
  }
  return NULL;
}

/* blocks_used (or blocks_lost) of the server at `address` as `mayfly
 * servers --json` reports it; -1 when it cannot be had. */
static long long server_count(const mf_daemon_t *dir, const char *address, const char *member) {
  char *out = NULL;
  long long n = -1;
  if (mf_cli(dir, &out, NULL, "--json", "servers", NULL) == 0) {
    JsonNode *root = parse(out);
    JsonObject *o = server_row(root, address);
    if (o != NULL && json_object_has_member(o, member)) {
      n = (long long)json_object_get_int_member(o, member);
    }
    if (root) json_node_unref(root);
  }
  g_free(out);
  return n;
}

/* Waits (up to 10 s) until the server's used-block count is `want`. */
static long long wait_blocks_used(const mf_daemon_t *dir, const char *address, long long want) {
  long long n = -1;
  for (int64_t until = now_ms() + 10000; now_ms() < until; mf_sleep_ms(50)) {
    if ((n = server_count(dir, address, "blocks_used")) == want) break;
  }
  return n;
}

/* A get whose connection the kill broke answers MAYFLY_EIO once (the pool
 * reports the broken connection to the next call, common/conn.h); the call
 * after that reaches the restarted server. */
static int get_after_kill(mayfly_ns_t *ns, const char *key, void **v, size_t *vlen) {
  int rc = mayfly_kv_get(ns, key, strlen(key), v, vlen);
  if (rc == MAYFLY_EIO) rc = mayfly_kv_get(ns, key, strlen(key), v, vlen);
  return rc;
}

/* Whether the kv partition holding `key` is on the server at `address`. */
static int key_on(const mayfly_stat_t *st, const char *key, const char *address) {
  int64_t slot = wire_kv_slot(key, strlen(key));
  for (size_t i = 0; i < st->npartitions; i++) {
    const mayfly_partition_t *p = &st->partitions[i];
    if (slot >= p->range_lo && slot < p->range_hi) {
      return strcmp(p->server_address, address) == 0;
    }
  }
  return 0;
}

/* Checks every key of /job/kv through `kv`: ELOST exactly for the keys of
 * partitions on `lost_address`, the right value for the others. Returns how
 * many were lost. */
static int check_keys(mayfly_ns_t *kv, const mayfly_stat_t *st, const char *lost_address) {
  int lost = 0, wrong = 0;
  for (int i = 0; i < NKEYS; i++) {
    char *k = key_of(i), *want = value_of(i);
    void *v = NULL;
    size_t vlen = 0;
    int rc = get_after_kill(kv, k, &v, &vlen);
    if (key_on(st, k, lost_address)) {
      lost++;
      if (rc != MAYFLY_ELOST) {
        fprintf(stderr, "  %s (lost partition): %s\n", k, mayfly_strerror(rc));
        wrong++;
      }
    } else if (rc != 0 || vlen != strlen(want) || memcmp(v, want, vlen) != 0) {
      fprintf(stderr, "  %s (live partition): %s\n", k, mayfly_strerror(rc));
      wrong++;
    }
    if (rc == 0) mayfly_free(v);
    g_free(k);
    g_free(want);
  }
  MF_ASSERT_EQ(wrong, 0);
  return lost;
}

/* The state of each partition in `mayfly stat --json PATH`, as a string of
 * 'L' (lost) and '-' (live) in partition order, e.g. "--L-"; g_free. */
static char *stat_states(const mf_daemon_t *dir, const char *path, long long *lost_parts) {
  char *out = NULL;
  GString *s = g_string_new(NULL);
  *lost_parts = -1;
  if (mf_cli(dir, &out, NULL, "--json", "stat", path, NULL) == 0) {
    JsonNode *root = parse(out);
    if (root != NULL && JSON_NODE_TYPE(root) == JSON_NODE_OBJECT) {
      JsonObject *o = json_node_get_object(root);
      JsonArray *parts = json_object_get_array_member(o, "partitions");
      for (guint i = 0; parts != NULL && i < json_array_get_length(parts); i++) {
        const char *state =
            json_object_get_string_member(json_array_get_object_element(parts, i), "state");
        g_string_append_c(s, state == NULL ? '?' : strcmp(state, "lost") == 0 ? 'L' : '-');
      }
      if (json_object_has_member(o, "lost_partitions")) {
        *lost_parts = (long long)json_object_get_int_member(o, "lost_partitions");
      }
    }
    if (root) json_node_unref(root);
  }
  g_free(out);
  return g_string_free(s, FALSE);
}

/* The expected state string of st's partitions: 'L' for those on address. */
static char *states_on(const mayfly_stat_t *st, const char *address) {
  GString *s = g_string_new(NULL);
  for (size_t i = 0; i < st->npartitions; i++) {
    g_string_append_c(s, strcmp(st->partitions[i].server_address, address) == 0 ? 'L' : '-');
  }
  return g_string_free(s, FALSE);
}

static void test_a_restarted_memory_server_loses_its_partitions_loudly(void) {
  mf_daemon_t *dir = mf_start_directory("--heartbeat-ms", "200", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
  /* The victim starts alone, so the file and the queue go to it. */
  mf_daemon_t *victim = mf_start_memserver(dir, 8, "64KiB", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(victim);
  char victim_addr[64], victim_port[16];
  g_strlcpy(victim_addr, victim->address, sizeof victim_addr);
  snprintf(victim_port, sizeof victim_port, "%d", victim->port);

  mayfly_client_t *c1 = NULL;
  MF_ASSERT_EQ(mayfly_connect(dir->address, NULL, &c1), 0);
  mayfly_ns_t *file = NULL, *q = NULL, *kv = NULL;
  MF_ASSERT_EQ(mayfly_mount(c1, "/job/file", MAYFLY_KIND_FILE, NULL, &file), 0);
  MF_ASSERT_EQ(mayfly_mount(c1, "/job/q", MAYFLY_KIND_QUEUE, NULL, &q), 0);
  mf_daemon_t *other = mf_start_memserver(dir, 8, "64KiB", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(other);
  mayfly_create_options_t four = {.blocks = 4};
  MF_ASSERT_EQ(mayfly_mount(c1, "/job/kv", MAYFLY_KIND_KV, &four, &kv), 0);

  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(c1, "/job/kv", &st), 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  int on_victim = 0;
  for (size_t i = 0; i < st->npartitions; i++) {
    on_victim += strcmp(st->partitions[i].server_address, victim_addr) == 0;
    MF_ASSERT_EQ(st->partitions[i].lost, 0);
  }
  /* The kv namespace has partitions on both servers. */
  CU_ASSERT(on_victim > 0 && on_victim < (int)st->npartitions);
  mayfly_stat_t *fst = NULL, *qst = NULL;
  MF_ASSERT_EQ(mayfly_stat(c1, "/job/file", &fst), 0);
  MF_ASSERT_EQ(mayfly_stat(c1, "/job/q", &qst), 0);
  CU_ASSERT_STRING_EQUAL(fst->partitions[0].server_address, victim_addr);
  CU_ASSERT_STRING_EQUAL(qst->partitions[0].server_address, victim_addr);
  mayfly_stat_free(fst);
  mayfly_stat_free(qst);

  for (int i = 0; i < NKEYS; i++) {
    char *k = key_of(i), *v = value_of(i);
    MF_ASSERT_EQ(mayfly_kv_put(kv, k, strlen(k), v, strlen(v)), 0);
    g_free(k);
    g_free(v);
  }
  uint8_t bytes[FILE_BYTES];
  for (int i = 0; i < FILE_BYTES; i++) bytes[i] = (uint8_t)(i * 7 + 1);
  MF_ASSERT_EQ(mayfly_file_write(file, 0, bytes, sizeof bytes), 0);
  MF_ASSERT_EQ(mayfly_queue_push(q, "first", 5), 0);
  MF_ASSERT_EQ(mayfly_queue_push(q, "second", 6), 0);
  long long used_before = server_count(dir, victim_addr, "blocks_used");
  MF_ASSERT_EQ(used_before, 2 + on_victim);
  mayfly_listener_t *l = NULL;
  MF_ASSERT_EQ(mayfly_listen(c1, "/job/kv", MAYFLY_EV_BIT(MAYFLY_EV_LOST), &l), 0);

  /* kill -9, and the same address again: an empty memory server. */
  mf_kill(victim);
  victim = mf_start_memserver(dir, 8, "64KiB", "--port", victim_port, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(victim);
  CU_ASSERT_STRING_EQUAL(victim->address, victim_addr);

  /* The listener hears it, with how many partitions went. */
  mayfly_event_t *ev = NULL;
  MF_ASSERT_EQ(mayfly_listener_next(l, &ev, 10000), 0);
  if (ev != NULL) {
    MF_ASSERT_EQ(ev->kind, MAYFLY_EV_LOST);
    CU_ASSERT_STRING_EQUAL(ev->path, "/job/kv");
    MF_ASSERT_EQ(ev->length, on_victim);
    mayfly_event_free(ev);
  }
  mayfly_listener_close(l);
  /* The directory's log names each namespace that lost partitions. */
  MF_ASSERT_EQ(mf_log_count(dir, "restarted (new incarnation"), 3);

  /* The client with the layout from before: the restarted server answers. */
  MF_ASSERT_EQ(check_keys(kv, st, victim_addr) > 0, 1);
  uint8_t back[FILE_BYTES];
  int64_t n = mayfly_file_read(file, 0, back, sizeof back);
  if (n == MAYFLY_EIO) n = mayfly_file_read(file, 0, back, sizeof back);
  MF_ASSERT_EQ(n, MAYFLY_ELOST);
  void *item = NULL;
  size_t ilen = 0;
  MF_ASSERT_EQ(mayfly_queue_pop(q, &item, &ilen, 0), MAYFLY_ELOST);
  MF_ASSERT_EQ(mayfly_queue_push(q, "third", 5), MAYFLY_ELOST);
  MF_ASSERT_EQ(mayfly_file_write(file, 0, "x", 1), MAYFLY_ELOST);

  /* A fresh client: the layout says lost, and the library does not even
   * ask: with the restarted server stopped, it still answers at once. */
  mayfly_options_t quick = {.timeout_ms = 3000};
  mayfly_client_t *c2 = NULL;
  MF_ASSERT_EQ(mayfly_connect(dir->address, &quick, &c2), 0);
  mayfly_ns_t *kv2 = NULL, *file2 = NULL, *q2 = NULL;
  MF_ASSERT_EQ(mayfly_mount(c2, "/job/kv", MAYFLY_KIND_KV, NULL, &kv2), 0);
  MF_ASSERT_EQ(mayfly_mount(c2, "/job/file", MAYFLY_KIND_FILE, NULL, &file2), 0);
  MF_ASSERT_EQ(mayfly_mount(c2, "/job/q", MAYFLY_KIND_QUEUE, NULL, &q2), 0);
  mayfly_stat_t *st2 = NULL;
  MF_ASSERT_EQ(mayfly_stat(c2, "/job/kv", &st2), 0);
  int lost_in_layout = 0;
  for (size_t i = 0; i < st2->npartitions; i++) {
    int there = strcmp(st2->partitions[i].server_address, victim_addr) == 0;
    MF_ASSERT_EQ(st2->partitions[i].lost, there);
    lost_in_layout += st2->partitions[i].lost;
  }
  MF_ASSERT_EQ(lost_in_layout, on_victim);
  mf_pause(victim);
  int64_t t0 = now_ms();
  MF_ASSERT_EQ(check_keys(kv2, st2, victim_addr) > 0, 1);
  MF_ASSERT_EQ(mayfly_file_read(file2, 0, back, sizeof back), MAYFLY_ELOST);
  MF_ASSERT_EQ(mayfly_file_write(file2, 10, "y", 1), MAYFLY_ELOST);
  MF_ASSERT_EQ(mayfly_queue_pop(q2, &item, &ilen, 0), MAYFLY_ELOST);
  MF_ASSERT_EQ(mayfly_queue_peek(q2, &item, &ilen), MAYFLY_ELOST);
  MF_ASSERT_EQ(mayfly_queue_push(q2, "fourth", 6), MAYFLY_ELOST);
  MF_ASSERT_EQ(mayfly_queue_length(q2), MAYFLY_ELOST);
  /* None of that waited for the stopped server (a call to it would have
   * timed out after 3 s). */
  CU_ASSERT(now_ms() - t0 < 3000);
  mf_resume(victim);
  mayfly_stat_free(st2);

  /* The stat command says lost, partition by partition. */
  long long lost_parts = -1;
  char *states = stat_states(dir, "/job/kv", &lost_parts), *want = states_on(st, victim_addr);
  CU_ASSERT_STRING_EQUAL(states, want);
  MF_ASSERT_EQ(lost_parts, on_victim);
  g_free(states);
  g_free(want);
  char *out = NULL;
  MF_ASSERT_EQ(mf_cli(dir, &out, NULL, "stat", "/job/q", NULL), 0);
  CU_ASSERT(out != NULL && strstr(out, "state:           lost") != NULL);
  g_free(out);
  /* The lost blocks stay taken until their namespaces go. */
  MF_ASSERT_EQ(server_count(dir, victim_addr, "blocks_used"), used_before);
  MF_ASSERT_EQ(server_count(dir, victim_addr, "blocks_lost"), used_before);
  MF_ASSERT_EQ(server_count(dir, other->address, "blocks_lost"), 0);

  mayfly_unmount(kv2);
  mayfly_unmount(file2);
  mayfly_unmount(q2);
  mayfly_disconnect(c2);
  mayfly_unmount(kv);
  mayfly_unmount(file);
  mayfly_unmount(q);
  mayfly_stat_free(st);

  /* rm gives the blocks back; the restarted server hands them out again. */
  MF_ASSERT_EQ(mf_cli(dir, NULL, NULL, "rm", "-r", "/job", NULL), 0);
  MF_ASSERT_EQ(wait_blocks_used(dir, victim_addr, 0), 0);
  MF_ASSERT_EQ(server_count(dir, victim_addr, "blocks_lost"), 0);
  MF_ASSERT_EQ(wait_blocks_used(dir, other->address, 0), 0);
  mayfly_ns_t *fresh = NULL;
  mayfly_create_options_t two = {.blocks = 2};
  MF_ASSERT_EQ(mayfly_mount(c1, "/again/kv", MAYFLY_KIND_KV, &two, &fresh), 0);
  mayfly_stat_t *st3 = NULL;
  MF_ASSERT_EQ(mayfly_stat(c1, "/again/kv", &st3), 0);
  int again_on_victim = 0;
  for (size_t i = 0; st3 != NULL && i < st3->npartitions; i++) {
    again_on_victim += strcmp(st3->partitions[i].server_address, victim_addr) == 0;
    MF_ASSERT_EQ(st3->partitions[i].lost, 0);
  }
  MF_ASSERT_EQ(again_on_victim, 1);
  for (int i = 0; i < NKEYS; i++) {
    char *k = key_of(i), *v = value_of(i);
    MF_ASSERT_EQ(mayfly_kv_put(fresh, k, strlen(k), v, strlen(v)), 0);
    g_free(k);
    g_free(v);
  }
  int victim_keys = 0;
  for (int i = 0; i < NKEYS; i++) {
    char *k = key_of(i), *want_v = value_of(i);
    void *v = NULL;
    size_t vlen = 0;
    MF_ASSERT_EQ(mayfly_kv_get(fresh, k, strlen(k), &v, &vlen), 0);
    if (v != NULL) {
      MF_ASSERT_EQ(vlen, strlen(want_v));
      CU_ASSERT(memcmp(v, want_v, vlen) == 0);
      mayfly_free(v);
    }
    victim_keys += key_on(st3, k, victim_addr);
    g_free(k);
    g_free(want_v);
  }
  CU_ASSERT(victim_keys > 0); /* the restarted server serves some of them */
  mayfly_stat_free(st3);
  mayfly_unmount(fresh);
  mayfly_disconnect(c1);
  MF_ASSERT_EQ(mf_stop(victim), 0);
  MF_ASSERT_EQ(mf_stop(other), 0);
  MF_ASSERT_EQ(mf_stop(dir), 0);
}

/* A memory server that loses touch with the directory (here: the directory
 * stops answering for a while) registers again with the same incarnation:
 * the directory keeps its blocks and nothing is lost. */
static void test_registering_again_with_the_same_incarnation_keeps_the_data(void) {
  mf_daemon_t *dir = mf_start_directory("--heartbeat-ms", "200", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
  mf_daemon_t *ms = mf_start_memserver(dir, 8, "64KiB", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ms);
  mayfly_client_t *c = NULL;
  MF_ASSERT_EQ(mayfly_connect(dir->address, NULL, &c), 0);
  mayfly_ns_t *kv = NULL;
  mayfly_create_options_t two = {.blocks = 2};
  MF_ASSERT_EQ(mayfly_mount(c, "/keep/kv", MAYFLY_KIND_KV, &two, &kv), 0);
  for (int i = 0; i < NKEYS; i++) {
    char *k = key_of(i), *v = value_of(i);
    MF_ASSERT_EQ(mayfly_kv_put(kv, k, strlen(k), v, strlen(v)), 0);
    g_free(k);
    g_free(v);
  }
  MF_ASSERT_EQ(mf_log_count(ms, "registered with the directory"), 1);
  /* Its heartbeat times out (2 s) while the directory is stopped, so it
   * registers again once the directory answers. */
  mf_pause(dir);
  mf_sleep_ms(3500);
  mf_resume(dir);
  int again = 0;
  for (int64_t until = now_ms() + 15000; now_ms() < until && !again; mf_sleep_ms(50)) {
    again = mf_log_count(ms, "registered with the directory") >= 2;
  }
  CU_ASSERT(again);
  MF_ASSERT_EQ(mf_log_count(dir, "restarted (new incarnation"), 0);
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(c, "/keep/kv", &st), 0);
  for (size_t i = 0; st != NULL && i < st->npartitions; i++) MF_ASSERT_EQ(st->partitions[i].lost, 0);
  mayfly_stat_free(st);
  for (int i = 0; i < NKEYS; i++) {
    char *k = key_of(i), *want = value_of(i);
    void *v = NULL;
    size_t vlen = 0;
    MF_ASSERT_EQ(mayfly_kv_get(kv, k, strlen(k), &v, &vlen), 0);
    if (v != NULL) {
      MF_ASSERT_EQ(vlen, strlen(want));
      CU_ASSERT(memcmp(v, want, vlen) == 0);
      mayfly_free(v);
    }
    g_free(k);
    g_free(want);
  }
  MF_ASSERT_EQ(server_count(dir, ms->address, "blocks_lost"), 0);
  mayfly_unmount(kv);
  mayfly_disconnect(c);
  MF_ASSERT_EQ(mf_stop(ms), 0);
  MF_ASSERT_EQ(mf_stop(dir), 0);
}

static const mf_test_t tests[] = {
    {"a restarted memory server loses its partitions loudly",
     test_a_restarted_memory_server_loses_its_partitions_loudly},
    {"registering again with the same incarnation keeps the data",
     test_registering_again_with_the_same_incarnation_keeps_the_data},
    {NULL, NULL}};

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  return mf_test_run("lost", NULL, NULL, tests);
}
