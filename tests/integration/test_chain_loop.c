/*
 * Chain replication across three real memory servers (memserver/server.c,
 * chain.c, link.c) run in this process on one libuv loop, on loopback hosts
 * 127.0.0.2-4, spoken to over real sockets with raw frames from a second
 * thread. The chain each block is in is set the way check_block's answers
 * set it (ms__chain_update with the event the control thread would post),
 * by the test acting as the directory, so the data path is tested before
 * the directory builds chains (test_chain_ms_chains runs it with the real
 * one). No directory runs: capabilities are off (no key) and the liveness
 * guard only when a test turns it on.
 *
 * Asserted:
 *   - roles: writes at the head only, with a sequence record; reads at the
 *     tail only (MAYFLY_EMOVED elsewhere); a write is readable at the tail
 *     as soon as the head acknowledged it;
 *   - dedup: a put retried with another value keeps the first; a push
 *     retried adds no item; a pop retried returns the same item and takes
 *     no other;
 *   - a KV_MIGRATE into a replicated head reaches the tail, and so does
 *     the KV_DROP_RANGE its head forwards when it gives slots away;
 *   - reconfiguration: the middle stopped, a write waits (its forward
 *     fails) and completes once the head is given the tail as successor
 *     (the pending write is resent); the tail dropped, the head commits at
 *     once; the head dropped, the last member takes writes and answers a
 *     retry of a write the old head acknowledged from its dedup table;
 *   - the liveness guard: with a heartbeat timeout and no heartbeat since,
 *     a replicated block answers MAYFLY_EMOVED, and serves again after one.
 */
#include <arpa/inet.h>
#include <glib.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/error.h"
#include "common/log.h"
#include "common/wire.h"
#include "harness.h"
#include "memserver/internal.h"
#include "mf_test.h"

#define NSRV 3
#define KV_BLOCK 0
#define Q_BLOCK 1
#define GEN 5

static const char *HOSTS[NSRV] = {"127.0.0.2", "127.0.0.3", "127.0.0.4"};
static uv_loop_t loop;
static store_t stores[NSRV];
static ms_server_t *srv[NSRV];
static char addr[NSRV][64];

/* --- running something on the loop from the test thread --- */

static uv_async_t on_loop;
static GMutex mu;
static GCond cv;
static void (*job)(void *);
static void *job_arg;
static int job_done;

static void run_job(uv_async_t *a) {
  (void)a;
  g_mutex_lock(&mu);
  void (*f)(void *) = job;
  void *arg = job_arg;
  g_mutex_unlock(&mu);
  if (f == NULL) return;
  f(arg);
  g_mutex_lock(&mu);
  job = NULL;
  job_done = 1;
  g_cond_broadcast(&cv);
  g_mutex_unlock(&mu);
}

static void on_loop_run(void (*f)(void *), void *arg) {
  g_mutex_lock(&mu);
  job = f;
  job_arg = arg;
  job_done = 0;
  g_mutex_unlock(&mu);
  uv_async_send(&on_loop);
  g_mutex_lock(&mu);
  while (!job_done) g_cond_wait(&cv, &mu);
  g_mutex_unlock(&mu);
}

/* --- the test as the directory --- */

typedef struct {
  int block;
  int64_t version;
  int n;
  int members[NSRV]; /* server numbers, head first */
} rechain_t;

/* Tells each listed server its place in the chain of `block` (and adopts
 * the block the first time), as a check_block answer would. */
static void do_rechain(void *arg) {
  rechain_t *r = arg;
  for (int k = 0; k < r->n; k++) {
    int i = r->members[k];
    if (srv[i] == NULL) continue;
    store_block_t *b = &stores[i].blocks[r->block];
    ms_event_t e = {.type = MS_EV_VERIFIED, .index = r->block, .generation = GEN,
                    .allocated = 1, .kind = r->block == KV_BLOCK ? STORE_KV : STORE_QUEUE,
                    .lo = 0, .hi = r->block == KV_BLOCK ? WIRE_KV_SLOTS : 0};
    if (b->generation != GEN) store_adopt(&stores[i], r->block, GEN, (store_kind_t)e.kind, e.lo, e.hi);
    e.chain_n = r->n;
    for (int m = 0; m < r->n; m++) {
      e.chain[m].server_id = r->members[m] + 1;
      e.chain[m].address = addr[r->members[m]];
      e.chain[m].block_index = r->block;
      e.chain[m].generation = GEN;
    }
    e.chain_pos = k;
    e.chain_version = r->version;
    ms__chain_update(srv[i], b, &e);
  }
}

static void rechain(int block, int64_t version, int n, int m0, int m1, int m2) {
  rechain_t r = {.block = block, .version = version, .n = n, .members = {m0, m1, m2}};
  on_loop_run(do_rechain, &r);
}

static void do_stop(void *arg) {
  int i = GPOINTER_TO_INT(arg);
  ms_server_stop(srv[i]);
  srv[i] = NULL;
}

static void do_live(void *arg) {
  int64_t *t = arg;
  for (int i = 0; i < NSRV; i++) {
    if (srv[i] != NULL) ms__chain_live(srv[i], *t, g_get_monotonic_time());
  }
}

/* --- raw frames --- */

static wire_hdr_t hdr_of(uint8_t op, int block) {
  return (wire_hdr_t){.opcode = op, .block_index = (uint32_t)block, .generation = GEN};
}

static wire_hdr_t put_hdr(int klen) {
  wire_hdr_t h = hdr_of(WIRE_OP_KV_PUT, KV_BLOCK);
  h.arg2 = (uint32_t)klen;
  return h;
}

static size_t seq_meta(uint8_t rec[WIRE_SEQ_SIZE], uint64_t client, uint64_t seq) {
  wire_seq_t s = {.client_id = client, .seq = seq, .acked = 1};
  wire_seq_put(rec, &s);
  return WIRE_SEQ_SIZE;
}

static int seq_write(int fd, wire_hdr_t h, uint64_t client, uint64_t seq, const void *payload,
                     size_t plen, mf_raw_reply_t *r) {
  uint8_t rec[WIRE_SEQ_SIZE];
  h.flags |= WIRE_F_SEQ;
  return mf_raw_roundtrip(fd, h, rec, seq_meta(rec, client, seq), payload, plen, r);
}

/* The value of a one-byte-valued key at server i (its status). */
static int get_at(int i, const char *key, char *val) {
  int fd = mf_raw_connect_to(addr[i], 20);
  if (fd < 0) return -100;
  mf_raw_reply_t r;
  int rc = mf_raw_roundtrip(fd, hdr_of(WIRE_OP_KV_GET, KV_BLOCK), NULL, 0, key, strlen(key), &r);
  close(fd);
  if (rc != 0) return -101;
  if (r.h.status == 0 && val != NULL) *val = r.h.payload_len == 1 ? (char)r.payload[0] : '?';
  return r.h.status;
}

/* --- tests --- */

static void test_roles(void) {
  int fd[NSRV];
  for (int i = 0; i < NSRV; i++) {
    fd[i] = mf_raw_connect_to(addr[i], 20);
    CU_ASSERT_FATAL(fd[i] >= 0);
  }
  mf_raw_reply_t r;
  /* Without a sequence record: refused at the head. */
  CU_ASSERT_EQUAL_FATAL(mf_raw_roundtrip(fd[0], put_hdr(1), NULL, 0, "ab", 2, &r), 0);
  MF_ASSERT_EQ(r.h.status, MAYFLY_EINVAL);
  /* At the middle or the tail: moved. */
  for (int i = 1; i < NSRV; i++) {
    CU_ASSERT_EQUAL_FATAL(seq_write(fd[i], put_hdr(1), 9, 1, "ab", 2, &r), 0);
    MF_ASSERT_EQ(r.h.status, MAYFLY_EMOVED);
  }
  CU_ASSERT_EQUAL_FATAL(seq_write(fd[0], put_hdr(1), 9, 1, "ab", 2, &r), 0);
  MF_ASSERT_EQ(r.h.status, 0);
  /* Acknowledged: the tail has it; reads elsewhere are moved. */
  char v = 0;
  MF_ASSERT_EQ(get_at(2, "a", &v), 0);
  MF_ASSERT_EQ(v, 'b');
  MF_ASSERT_EQ(get_at(0, "a", NULL), MAYFLY_EMOVED);
  MF_ASSERT_EQ(get_at(1, "a", NULL), MAYFLY_EMOVED);
  /* Every member holds it (BLOCK_STAT: any member): one entry each. */
  for (int i = 0; i < NSRV; i++) {
    CU_ASSERT_EQUAL_FATAL(mf_raw_roundtrip(fd[i], hdr_of(WIRE_OP_BLOCK_STAT, KV_BLOCK), NULL, 0, NULL, 0, &r), 0);
    MF_ASSERT_EQ(r.h.status, 0);
    MF_ASSERT_EQ(r.h.arg1, 1);
  }
  for (int i = 0; i < NSRV; i++) close(fd[i]);
}

static void test_dedup(void) {
  int head = mf_raw_connect_to(addr[0], 20), tail = mf_raw_connect_to(addr[2], 20);
  CU_ASSERT_FATAL(head >= 0 && tail >= 0);
  mf_raw_reply_t r;
  /* The retry of (9, 1) with another value keeps the first. */
  CU_ASSERT_EQUAL_FATAL(seq_write(head, put_hdr(1), 9, 1, "aZ", 2, &r), 0);
  MF_ASSERT_EQ(r.h.status, 0);
  char v = 0;
  MF_ASSERT_EQ(get_at(2, "a", &v), 0);
  MF_ASSERT_EQ(v, 'b');
  /* Pushes: seq 2 twice, seq 3 once: two items. */
  wire_hdr_t push = hdr_of(WIRE_OP_Q_PUSH, Q_BLOCK);
  CU_ASSERT_EQUAL_FATAL(seq_write(head, push, 9, 2, "one", 3, &r), 0);
  MF_ASSERT_EQ(r.h.status, 0);
  CU_ASSERT_EQUAL_FATAL(seq_write(head, push, 9, 2, "one", 3, &r), 0);
  MF_ASSERT_EQ(r.h.status, 0);
  CU_ASSERT_EQUAL_FATAL(seq_write(head, push, 9, 3, "two", 3, &r), 0);
  MF_ASSERT_EQ(r.h.status, 0);
  CU_ASSERT_EQUAL_FATAL(mf_raw_roundtrip(tail, hdr_of(WIRE_OP_Q_LEN, Q_BLOCK), NULL, 0, NULL, 0, &r), 0);
  MF_ASSERT_EQ(r.h.arg0, 2);
  /* A pop, retried: the same item, and the other stays. */
  wire_hdr_t pop = hdr_of(WIRE_OP_Q_POP, Q_BLOCK);
  for (int k = 0; k < 2; k++) {
    CU_ASSERT_EQUAL_FATAL(seq_write(head, pop, 9, 4, NULL, 0, &r), 0);
    MF_ASSERT_EQ(r.h.status, 0);
    CU_ASSERT(r.h.payload_len == 3 && memcmp(r.payload, "one", 3) == 0);
  }
  CU_ASSERT_EQUAL_FATAL(mf_raw_roundtrip(tail, hdr_of(WIRE_OP_Q_LEN, Q_BLOCK), NULL, 0, NULL, 0, &r), 0);
  MF_ASSERT_EQ(r.h.arg0, 1);
  close(head);
  close(tail);
}

typedef struct {
  int64_t lo, hi;
} range_t;

/* What the head's side of a committed split does: drops the slots, then
 * forwards KV_DROP_RANGE down its chain. */
static void do_drop_range(void *arg) {
  range_t *r = arg;
  store_block_t *b = &stores[0].blocks[KV_BLOCK];
  store_kv_drop_range(b, r->lo, r->hi);
  ms__chain_drop_range(srv[0], b, r->lo, r->hi);
}

static void test_migrations_and_dropped_ranges_go_down_the_chain(void) {
  /* A key in a slot none of the other tests' keys is in. */
  char key[8] = "";
  uint32_t taken[3] = {wire_kv_slot("a", 1), wire_kv_slot("c", 1), wire_kv_slot("e", 1)};
  for (int k = 0; k < 100 && key[0] == '\0'; k++) {
    char cand[8];
    snprintf(cand, sizeof cand, "m%d", k);
    uint32_t sl = wire_kv_slot(cand, strlen(cand));
    if (sl != taken[0] && sl != taken[1] && sl != taken[2]) snprintf(key, sizeof key, "%s", cand);
  }
  CU_ASSERT_FATAL(key[0] != '\0');
  /* A migration into the head (a neighbour's split), as repart.c sends it. */
  uint8_t rec[64];
  size_t klen = strlen(key);
  wire_kv_entry_put(rec, key, (uint32_t)klen, "M", 1);
  wire_hdr_t h = hdr_of(WIRE_OP_KV_MIGRATE, KV_BLOCK);
  h.arg0 = 0;
  h.arg1 = WIRE_KV_SLOTS;
  int head = mf_raw_connect_to(addr[0], 20);
  CU_ASSERT_FATAL(head >= 0);
  mf_raw_reply_t r;
  CU_ASSERT_EQUAL_FATAL(mf_raw_roundtrip(head, h, NULL, 0, rec, WIRE_KV_ENTRY_HEADER + klen + 1, &r), 0);
  MF_ASSERT_EQ(r.h.status, 0);
  MF_ASSERT_EQ(r.h.arg0, 1);
  close(head);
  char v = 0;
  MF_ASSERT_EQ(get_at(2, key, &v), 0);
  MF_ASSERT_EQ(v, 'M');
  /* The head gives the key's slot away: the tail drops it too. */
  uint32_t sl = wire_kv_slot(key, klen);
  range_t dr = {sl, sl + 1};
  on_loop_run(do_drop_range, &dr);
  gint64 until = g_get_monotonic_time() + 10 * G_TIME_SPAN_SECOND;
  while (get_at(2, key, NULL) == 0 && g_get_monotonic_time() < until) mf_sleep_ms(20);
  MF_ASSERT_EQ(get_at(2, key, NULL), MAYFLY_ENOKEY);
  MF_ASSERT_EQ(get_at(2, "a", &v), 0);
  MF_ASSERT_EQ(v, 'b');
}

static void test_the_middle_stops_and_pending_writes_are_resent(void) {
  on_loop_run(do_stop, GINT_TO_POINTER(1));
  int head = mf_raw_connect_to(addr[0], 20);
  CU_ASSERT_FATAL(head >= 0);
  /* The forward fails: the write waits for a new chain. */
  wire_hdr_t h = put_hdr(1);
  uint8_t rec[WIRE_SEQ_SIZE];
  h.flags |= WIRE_F_SEQ;
  CU_ASSERT_EQUAL_FATAL(mf_raw_send(head, &h, rec, seq_meta(rec, 9, 5), "cd", 2), 0);
  mf_sleep_ms(300);
  char v = 0;
  MF_ASSERT_EQ(get_at(2, "c", &v), MAYFLY_ENOKEY); /* not at the tail yet */
  rechain(KV_BLOCK, 2, 2, 0, 2, 0);
  mf_raw_reply_t r;
  CU_ASSERT_EQUAL_FATAL(mf_raw_recv(head, h.request_id, &r), 0);
  MF_ASSERT_EQ(r.h.status, 0);
  MF_ASSERT_EQ(get_at(2, "c", &v), 0);
  MF_ASSERT_EQ(v, 'd');
  MF_ASSERT_EQ(get_at(2, "a", &v), 0);
  MF_ASSERT_EQ(v, 'b');
  close(head);
}

static void test_the_head_alone_commits_at_once(void) {
  rechain(KV_BLOCK, 3, 1, 0, 0, 0);
  int head = mf_raw_connect_to(addr[0], 20);
  CU_ASSERT_FATAL(head >= 0);
  mf_raw_reply_t r;
  CU_ASSERT_EQUAL_FATAL(seq_write(head, put_hdr(1), 9, 6, "ef", 2, &r), 0);
  MF_ASSERT_EQ(r.h.status, 0);
  char v = 0;
  MF_ASSERT_EQ(get_at(0, "e", &v), 0); /* the head is the tail too */
  MF_ASSERT_EQ(v, 'f');
  close(head);
}

static void test_a_new_head_continues_and_remembers_replies(void) {
  /* The queue's chain loses its head (and its middle, stopped): the tail
   * is the whole chain. */
  rechain(Q_BLOCK, 2, 1, 2, 0, 0);
  int fd = mf_raw_connect_to(addr[2], 20);
  CU_ASSERT_FATAL(fd >= 0);
  mf_raw_reply_t r;
  /* The retry of the pop the old head acknowledged: the same item. */
  CU_ASSERT_EQUAL_FATAL(seq_write(fd, hdr_of(WIRE_OP_Q_POP, Q_BLOCK), 9, 4, NULL, 0, &r), 0);
  MF_ASSERT_EQ(r.h.status, 0);
  CU_ASSERT(r.h.payload_len == 3 && memcmp(r.payload, "one", 3) == 0);
  /* New writes are numbered on from what it applied. */
  CU_ASSERT_EQUAL_FATAL(seq_write(fd, hdr_of(WIRE_OP_Q_PUSH, Q_BLOCK), 9, 7, "six", 3, &r), 0);
  MF_ASSERT_EQ(r.h.status, 0);
  CU_ASSERT_EQUAL_FATAL(mf_raw_roundtrip(fd, hdr_of(WIRE_OP_Q_LEN, Q_BLOCK), NULL, 0, NULL, 0, &r), 0);
  MF_ASSERT_EQ(r.h.arg0, 2);
  close(fd);
}

static void test_the_liveness_guard(void) {
  int64_t t = 200;
  on_loop_run(do_live, &t);
  mf_sleep_ms(400);
  int fd = mf_raw_connect_to(addr[2], 20);
  CU_ASSERT_FATAL(fd >= 0);
  mf_raw_reply_t r;
  CU_ASSERT_EQUAL_FATAL(mf_raw_roundtrip(fd, hdr_of(WIRE_OP_Q_LEN, Q_BLOCK), NULL, 0, NULL, 0, &r), 0);
  MF_ASSERT_EQ(r.h.status, MAYFLY_EMOVED);
  t = 60000; /* a heartbeat came */
  on_loop_run(do_live, &t);
  CU_ASSERT_EQUAL_FATAL(mf_raw_roundtrip(fd, hdr_of(WIRE_OP_Q_LEN, Q_BLOCK), NULL, 0, NULL, 0, &r), 0);
  MF_ASSERT_EQ(r.h.status, 0);
  close(fd);
}

static int result = 1;

static void do_stop_all(void *arg) {
  (void)arg;
  for (int i = 0; i < NSRV; i++) {
    if (srv[i] != NULL) ms_server_stop(srv[i]);
    srv[i] = NULL;
  }
  uv_close((uv_handle_t *)&on_loop, NULL);
}

static gpointer tests_thread(gpointer data) {
  (void)data;
  static const mf_test_t tests[] = {
      {"roles", test_roles},
      {"dedup", test_dedup},
      {"migrations and dropped ranges go down the chain",
       test_migrations_and_dropped_ranges_go_down_the_chain},
      {"the middle stops and pending writes are resent",
       test_the_middle_stops_and_pending_writes_are_resent},
      {"the head alone commits at once", test_the_head_alone_commits_at_once},
      {"a new head continues and remembers replies",
       test_a_new_head_continues_and_remembers_replies},
      {"the liveness guard", test_the_liveness_guard},
      {NULL, NULL}};
  result = mf_test_run("chain_loop", NULL, NULL, tests);
  g_mutex_lock(&mu);
  job = do_stop_all;
  job_arg = NULL;
  g_mutex_unlock(&mu);
  uv_async_send(&on_loop);
  return NULL;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  mf_log_init("test_chain_loop", MF_LOG_WARN);
  uv_loop_init(&loop);
  uv_async_init(&loop, &on_loop, run_job);
  for (int i = 0; i < NSRV; i++) {
    if (store_init(&stores[i], 4, 1u << 20) != 0) return 2;
    ms_server_config_t cfg = {0};
    cfg.net = (mf_net_config_t){.host = HOSTS[i],
                                .max_connections = 100,
                                .read_buffer = 16384,
                                .input_total = 64u << 20,
                                .reply_backlog = 8u << 20,
                                .reply_backlog_total = 64u << 20,
                                .frame_timeout_ms = 10000,
                                .idle_timeout_ms = 600000,
                                .send_timeout_ms = 30000};
    /* No directory listens there: the control threads keep trying. */
    cfg.directory = "127.0.0.1:1";
    cfg.deferred_max = 8u << 20;
    cfg.deferred_total_max = 64u << 20;
    cfg.pops_max = 16;
    cfg.pops_total_max = 64;
    char why[256];
    int port = 0;
    if (ms_server_start(&loop, &stores[i], &cfg, &srv[i], &port, why, sizeof why) != 0) {
      fprintf(stderr, "%s\n", why);
      return 2;
    }
    snprintf(addr[i], sizeof addr[i], "%s:%d", HOSTS[i], port);
  }
  rechain_t kv = {.block = KV_BLOCK, .version = 1, .n = 3, .members = {0, 1, 2}};
  rechain_t q = {.block = Q_BLOCK, .version = 1, .n = 3, .members = {0, 1, 2}};
  do_rechain(&kv);
  do_rechain(&q);
  GThread *t = g_thread_new("tests", tests_thread, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  g_thread_join(t);
  uv_loop_close(&loop);
  for (int i = 0; i < NSRV; i++) store_free(&stores[i]);
  return result;
}
