/*
 * Integration tests of libmayfly's side of replicated namespaces (issue 12):
 * what the client sends to a chain and how it retries.
 *
 * A real directory and memory server give the test real mounted namespaces
 * (R = 1); the test then puts a chain layout in the handle's cache (the
 * layout a directory with replicas would send, with a version no refresh
 * from the real directory can replace), whose head and tail are fake memory
 * servers: threads of this process with a listening socket on loopback that
 * record every frame and answer as each test scripts (a reply with a
 * status, a closed connection, or silence). What the tests assert is what a
 * chain relies on: writes go to the head with WIRE_F_SEQ and a sequence
 * record after the capability (client id, seq, acked), reads to the tail
 * without one; a write retried after a chain error (connection lost,
 * EMOVED, ESERVERDOWN, a timed-out attempt) carries the same record, so a
 * head that applied it replays its answer (a queue pop gets the same item);
 * batches and multi-block file writes redo only the failed pieces, each
 * with its own seq; acked is the lowest seq in flight; a chain that never
 * answers fails with MAYFLY_ETIMEDOUT within the client's timeout, after
 * several bounded attempts; a layout without a chain sends no record.
 *
 * End-to-end replication (real chains of memory servers, failover,
 * re-replication) needs the memory servers' and directory's parts of the
 * issue and is tested with them.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <glib.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client/internal.h"
#include "common/wire.h"
#include "harness.h"
#include "mf_test.h"

/* Slack past a timeout: scheduling on a loaded machine, sanitizers. */
#define MARGIN_MS 1500

/* ---- a fake memory server ---- */

typedef enum { ACT_REPLY, ACT_CLOSE, ACT_SILENT } act_kind_t;

/* How the fake server answers one frame. */
typedef struct act {
  act_kind_t kind;
  int status;
  char payload[64];
} act_t;

/* One frame it received: header, metadata section (capability and
 * sequence record), payload. */
typedef struct got {
  wire_hdr_t h;
  uint8_t meta[WIRE_CAP_MAX];
  uint8_t payload[256];
  size_t plen;
} got_t;

typedef struct fake {
  int lfd;
  char address[64];
  GThread *thread;
  gint stop;
  GMutex lock;
  GQueue acts;   /* act_t *, for the next frames; empty: reply 0 */
  GPtrArray *got; /* got_t * */
} fake_t;

static int recv_exact(fake_t *f, int fd, void *buf, size_t len) {
  uint8_t *p = buf;
  while (len > 0) {
    if (g_atomic_int_get(&f->stop)) return -1;
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, 100) <= 0) continue;
    ssize_t r = recv(fd, p, len, 0);
    if (r <= 0) return -1;
    p += r;
    len -= (size_t)r;
  }
  return 0;
}

/* Serves one connection until it closes, the script closes it, or stop. */
static void serve(fake_t *f, int fd) {
  for (;;) {
    uint8_t hb[WIRE_HEADER_SIZE];
    if (recv_exact(f, fd, hb, sizeof hb) != 0) return;
    got_t *g = g_new0(got_t, 1);
    size_t flen;
    int rc = wire_parse(hb, sizeof hb, UINT32_MAX, &g->h, &flen);
    if ((rc != 0 && rc != MAYFLY_EAGAIN) || g->h.payload_len > sizeof g->payload ||
        recv_exact(f, fd, g->meta, g->h.cap_len) != 0 ||
        recv_exact(f, fd, g->payload, g->h.payload_len) != 0) {
      g_free(g);
      return;
    }
    g->plen = g->h.payload_len;
    g_mutex_lock(&f->lock);
    g_ptr_array_add(f->got, g);
    act_t *a = g_queue_pop_head(&f->acts);
    g_mutex_unlock(&f->lock);
    act_t dflt = {ACT_REPLY, 0, ""};
    act_t act = a != NULL ? *a : dflt;
    g_free(a);
    if (act.kind == ACT_CLOSE) return;
    if (act.kind == ACT_SILENT) continue;
    size_t pl = strlen(act.payload);
    wire_hdr_t rep = {.opcode = g->h.opcode,
                      .flags = WIRE_F_REPLY,
                      .request_id = g->h.request_id,
                      .status = act.status,
                      .payload_len = (uint32_t)pl};
    uint8_t out[WIRE_HEADER_SIZE + sizeof act.payload];
    wire_encode(&rep, out);
    memcpy(out + WIRE_HEADER_SIZE, act.payload, pl);
    if (mf_send_all(fd, out, WIRE_HEADER_SIZE + pl) != 0) return;
  }
}

static gpointer fake_main(gpointer data) {
  fake_t *f = data;
  while (!g_atomic_int_get(&f->stop)) {
    struct pollfd pf = {.fd = f->lfd, .events = POLLIN};
    if (poll(&pf, 1, 100) <= 0) continue;
    int fd = accept(f->lfd, NULL, NULL);
    if (fd < 0) continue;
    serve(f, fd);
    close(fd);
  }
  return NULL;
}

static fake_t *fake_start(void) {
  fake_t *f = g_new0(fake_t, 1);
  f->lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  /* Called from the suite's set-up, where CUnit cannot assert yet. */
  if (f->lfd < 0 || bind(f->lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
      listen(f->lfd, 8) != 0 || getsockname(f->lfd, (struct sockaddr *)&a, &len) != 0) {
    fprintf(stderr, "fake memory server: cannot listen on loopback\n");
    if (f->lfd >= 0) close(f->lfd);
    g_free(f);
    return NULL;
  }
  g_snprintf(f->address, sizeof f->address, "127.0.0.1:%d", ntohs(a.sin_port));
  g_mutex_init(&f->lock);
  g_queue_init(&f->acts);
  f->got = g_ptr_array_new_with_free_func(g_free);
  f->thread = g_thread_new("fake-memserver", fake_main, f);
  return f;
}

static void fake_stop(fake_t *f) {
  g_atomic_int_set(&f->stop, 1);
  g_thread_join(f->thread);
  close(f->lfd);
  g_queue_clear_full(&f->acts, g_free);
  g_ptr_array_unref(f->got);
  g_mutex_clear(&f->lock);
  g_free(f);
}

/* Scripts the answer to the next frame not yet scripted. */
static void fake_then(fake_t *f, act_kind_t kind, int status, const char *payload) {
  act_t *a = g_new0(act_t, 1);
  a->kind = kind;
  a->status = status;
  g_strlcpy(a->payload, payload != NULL ? payload : "", sizeof a->payload);
  g_mutex_lock(&f->lock);
  g_queue_push_tail(&f->acts, a);
  g_mutex_unlock(&f->lock);
}

static guint fake_count(fake_t *f) {
  g_mutex_lock(&f->lock);
  guint n = f->got->len;
  g_mutex_unlock(&f->lock);
  return n;
}

/* The i-th frame received (valid until fake_reset or fake_stop). */
static const got_t *fake_frame(fake_t *f, guint i) {
  g_mutex_lock(&f->lock);
  const got_t *g = i < f->got->len ? g_ptr_array_index(f->got, i) : NULL;
  g_mutex_unlock(&f->lock);
  return g;
}

static void fake_reset(fake_t *f) {
  g_mutex_lock(&f->lock);
  g_ptr_array_set_size(f->got, 0);
  g_queue_clear_full(&f->acts, g_free);
  g_queue_init(&f->acts);
  g_mutex_unlock(&f->lock);
}

/* The sequence record of a frame (asserting it has exactly one, after no
 * capability: the test's directory has no cluster key). */
static wire_seq_t seq_of(const got_t *g) {
  wire_seq_t r = {0};
  CU_ASSERT(g->h.flags & WIRE_F_SEQ);
  MF_ASSERT_EQ(g->h.cap_len, WIRE_SEQ_SIZE);
  if (g->h.cap_len >= WIRE_SEQ_SIZE) wire_seq_get(g->meta + g->h.cap_len - WIRE_SEQ_SIZE, &r);
  return r;
}

/* ---- the cluster and the chain layout ---- */

static mf_daemon_t *dir, *ms;
static fake_t *head, *tail;

/* A chain layout of n partitions, each over [lo, lo + width) and all on the
 * same two fake servers (head block 10 + i, tail block 20 + i), or, with
 * chain 0, partitions of one block on the head (R = 1). */
static void set_chain_layout(mayfly_ns_t *ns, int n, int64_t width, int chain) {
  static int64_t version = (int64_t)1 << 40; /* above anything the directory says */
  mayfly_stat_t st = {.layout_version = ++version, .npartitions = (size_t)n};
  st.partitions = g_new0(mayfly_partition_t, n);
  for (int i = 0; i < n; i++) {
    mayfly_partition_t *p = &st.partitions[i];
    *p = (mayfly_partition_t){.server_id = 1, .server_address = head->address,
                              .block_index = 10 + i, .generation = 7, .block_size = 65536,
                              .range_lo = i * width, .range_hi = (i + 1) * width,
                              .replicas = chain ? 2 : 1, .state = "ok"};
    if (chain) {
      p->nchain = 2;
      p->chain = g_new0(mayfly_replica_t, 2);
      p->chain[0] = (mayfly_replica_t){.server_id = 1, .server_address = head->address,
                                       .block_index = 10 + i, .generation = 7, .zone = ""};
      p->chain[1] = (mayfly_replica_t){.server_id = 2, .server_address = tail->address,
                                       .block_index = 20 + i, .generation = 8, .zone = ""};
      p->chain_version = 3;
    }
  }
  mf_ns_set_layout(ns, &st);
  for (int i = 0; i < n; i++) g_free(st.partitions[i].chain);
  g_free(st.partitions);
}

static mayfly_client_t *client_with(int timeout_ms) {
  mayfly_options_t o = {.timeout_ms = timeout_ms, .connect_timeout_ms = 1000};
  mayfly_client_t *c = NULL;
  MF_ASSERT_EQ(mayfly_connect(dir->address, &o, &c), 0);
  return c;
}

static mayfly_ns_t *mount_chain(mayfly_client_t *c, const char *path, mayfly_kind_t kind,
                                int n, int64_t width) {
  mayfly_create_options_t co = {.blocks = 1};
  mayfly_ns_t *ns = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, path, kind, &co, &ns), 0);
  CU_ASSERT_FATAL(ns != NULL);
  set_chain_layout(ns, n, width, 1);
  fake_reset(head);
  fake_reset(tail);
  return ns;
}

/* ---- tests ---- */

static void test_writes_go_to_the_head_with_a_record_and_reads_to_the_tail(void) {
  mayfly_client_t *c = client_with(8000);
  mayfly_ns_t *ns = mount_chain(c, "/chain/kv1", MAYFLY_KIND_KV, 1, WIRE_KV_SLOTS);
  MF_ASSERT_EQ(mayfly_kv_put(ns, "a", 1, "1", 1), 0);
  MF_ASSERT_EQ(fake_count(head), 1);
  const got_t *put = fake_frame(head, 0);
  MF_ASSERT_EQ(put->h.opcode, WIRE_OP_KV_PUT);
  MF_ASSERT_EQ(put->h.block_index, 10);
  MF_ASSERT_EQ(put->h.generation, 7);
  MF_ASSERT_EQ(put->plen, 2); /* key and value, as for R = 1 */
  wire_seq_t r1 = seq_of(put);
  CU_ASSERT(r1.client_id == c->seqs.client_id && r1.client_id != 0);
  CU_ASSERT(r1.seq >= 1);
  MF_ASSERT_EQ(r1.acked, r1.seq); /* the only write in flight */

  fake_then(tail, ACT_REPLY, 0, "1");
  void *v = NULL;
  size_t vlen = 0;
  MF_ASSERT_EQ(mayfly_kv_get(ns, "a", 1, &v, &vlen), 0);
  MF_ASSERT_EQ(vlen, 1);
  CU_ASSERT(v != NULL && memcmp(v, "1", 1) == 0);
  mayfly_free(v);
  fake_then(tail, ACT_REPLY, 0, NULL);
  MF_ASSERT_EQ(mayfly_kv_exists(ns, "a", 1), 0); /* arg0 0: absent */
  MF_ASSERT_EQ(fake_count(tail), 2);
  for (guint i = 0; i < 2; i++) {
    const got_t *g = fake_frame(tail, i);
    MF_ASSERT_EQ(g->h.opcode, i == 0 ? WIRE_OP_KV_GET : WIRE_OP_KV_EXISTS);
    MF_ASSERT_EQ(g->h.block_index, 20); /* the tail's block */
    MF_ASSERT_EQ(g->h.generation, 8);
    MF_ASSERT_EQ(g->h.flags & WIRE_F_SEQ, 0); /* reads carry no record */
    MF_ASSERT_EQ(g->h.cap_len, 0);
  }
  MF_ASSERT_EQ(fake_count(head), 1); /* no read went to the head */

  MF_ASSERT_EQ(mayfly_kv_delete(ns, "a", 1), 0);
  MF_ASSERT_EQ(fake_count(head), 2);
  wire_seq_t r2 = seq_of(fake_frame(head, 1));
  MF_ASSERT_EQ(fake_frame(head, 1)->h.opcode, WIRE_OP_KV_DEL);
  CU_ASSERT(r2.client_id == r1.client_id);
  MF_ASSERT_EQ(r2.seq, r1.seq + 1);
  MF_ASSERT_EQ(r2.acked, r2.seq); /* the put had its answer */
  mayfly_unmount(ns);
  mayfly_disconnect(c);
}

static void test_a_write_retried_after_chain_errors_keeps_its_record(void) {
  mayfly_client_t *c = client_with(8000);
  mayfly_ns_t *ns = mount_chain(c, "/chain/kv2", MAYFLY_KIND_KV, 1, WIRE_KV_SLOTS);
  /* The head dies mid-call (connection lost), then answers "not the head"
   * (the chain is being reconfigured), then "server down", then applies. */
  fake_then(head, ACT_CLOSE, 0, NULL);
  fake_then(head, ACT_REPLY, MAYFLY_EMOVED, NULL);
  fake_then(head, ACT_REPLY, MAYFLY_ESERVERDOWN, NULL);
  fake_then(head, ACT_REPLY, 0, NULL);
  MF_ASSERT_EQ(mayfly_kv_put(ns, "k", 1, "v", 1), 0);
  MF_ASSERT_EQ(fake_count(head), 4);
  wire_seq_t first = seq_of(fake_frame(head, 0));
  for (guint i = 1; i < 4; i++) {
    wire_seq_t r = seq_of(fake_frame(head, i));
    CU_ASSERT(r.client_id == first.client_id);
    MF_ASSERT_EQ(r.seq, first.seq);
    MF_ASSERT_EQ(fake_frame(head, i)->h.opcode, WIRE_OP_KV_PUT);
  }
  /* An answer that is not a chain error is the caller's, at once. */
  fake_then(head, ACT_REPLY, MAYFLY_ENOKEY, NULL);
  MF_ASSERT_EQ(mayfly_kv_delete(ns, "k", 1), MAYFLY_ENOKEY);
  MF_ASSERT_EQ(fake_count(head), 5);
  MF_ASSERT_EQ(seq_of(fake_frame(head, 4)).seq, first.seq + 1);
  mayfly_unmount(ns);
  mayfly_disconnect(c);
}

static void test_a_pop_retried_keeps_its_record_and_gets_the_item(void) {
  mayfly_client_t *c = client_with(8000);
  mayfly_ns_t *ns = mount_chain(c, "/chain/q", MAYFLY_KIND_QUEUE, 1, 1);
  /* The head took the item and its reply was lost: the retry with the same
   * record is what lets it answer with that item again. */
  fake_then(head, ACT_CLOSE, 0, NULL);
  fake_then(head, ACT_REPLY, 0, "item-1");
  void *item = NULL;
  size_t len = 0;
  MF_ASSERT_EQ(mayfly_queue_pop(ns, &item, &len, 0), 0);
  MF_ASSERT_EQ(len, 6);
  CU_ASSERT(item != NULL && memcmp(item, "item-1", 6) == 0);
  mayfly_free(item);
  MF_ASSERT_EQ(fake_count(head), 2);
  wire_seq_t a = seq_of(fake_frame(head, 0)), b = seq_of(fake_frame(head, 1));
  MF_ASSERT_EQ(fake_frame(head, 1)->h.opcode, WIRE_OP_Q_POP);
  MF_ASSERT_EQ(a.seq, b.seq);
  /* A push, and a peek and length at the tail. */
  MF_ASSERT_EQ(mayfly_queue_push(ns, "x", 1), 0);
  MF_ASSERT_EQ(fake_frame(head, 2)->h.opcode, WIRE_OP_Q_PUSH);
  MF_ASSERT_EQ(seq_of(fake_frame(head, 2)).seq, a.seq + 1);
  fake_then(tail, ACT_REPLY, 0, "x");
  MF_ASSERT_EQ(mayfly_queue_peek(ns, &item, &len), 0);
  mayfly_free(item);
  MF_ASSERT_EQ(mayfly_queue_length(ns), 0);
  MF_ASSERT_EQ(fake_count(tail), 2);
  MF_ASSERT_EQ(fake_frame(tail, 0)->h.opcode, WIRE_OP_Q_PEEK);
  MF_ASSERT_EQ(fake_frame(tail, 1)->h.opcode, WIRE_OP_Q_LEN);
  MF_ASSERT_EQ(fake_frame(tail, 1)->h.flags & WIRE_F_SEQ, 0);
  mayfly_unmount(ns);
  mayfly_disconnect(c);
}

static void test_a_batch_redoes_only_the_failed_items_each_with_its_record(void) {
  mayfly_client_t *c = client_with(8000);
  mayfly_ns_t *ns = mount_chain(c, "/chain/kv3", MAYFLY_KIND_KV, 1, WIRE_KV_SLOTS);
  const void *keys[4] = {"k0", "k1", "k2", "k3"};
  const size_t klens[4] = {2, 2, 2, 2};
  const void *vals[4] = {"v0", "v1", "v2", "v3"};
  const size_t vlens[4] = {2, 2, 2, 2};
  int rcs[4] = {1, 1, 1, 1};
  fake_then(head, ACT_REPLY, 0, NULL);
  fake_then(head, ACT_REPLY, MAYFLY_ESERVERDOWN, NULL);
  fake_then(head, ACT_REPLY, 0, NULL);
  fake_then(head, ACT_REPLY, MAYFLY_EMOVED, NULL);
  MF_ASSERT_EQ(mayfly_kv_put_batch(ns, 4, keys, klens, vals, vlens, rcs), 0);
  for (int i = 0; i < 4; i++) MF_ASSERT_EQ(rcs[i], 0);
  MF_ASSERT_EQ(fake_count(head), 6); /* four, then the two that failed */
  wire_seq_t s[6];
  for (guint i = 0; i < 6; i++) s[i] = seq_of(fake_frame(head, i));
  for (guint i = 1; i < 4; i++) MF_ASSERT_EQ(s[i].seq, s[0].seq + i); /* one each */
  MF_ASSERT_EQ(s[4].seq, s[1].seq);
  MF_ASSERT_EQ(s[5].seq, s[3].seq);
  CU_ASSERT(memcmp(fake_frame(head, 4)->payload, "k1v1", 4) == 0);
  CU_ASSERT(memcmp(fake_frame(head, 5)->payload, "k3v3", 4) == 0);
  /* While k1 and k3 were being redone, the acked their records carry is
   * below them: k1 (the lowest in flight). */
  MF_ASSERT_EQ(s[5].acked, s[1].seq);
  /* Gets go to the tail, no records. */
  void *got[4] = {0};
  size_t glens[4] = {0};
  MF_ASSERT_EQ(mayfly_kv_get_batch(ns, 4, keys, klens, got, glens, rcs), 0);
  for (int i = 0; i < 4; i++) mayfly_free(got[i]);
  MF_ASSERT_EQ(fake_count(tail), 4);
  for (guint i = 0; i < 4; i++) MF_ASSERT_EQ(fake_frame(tail, i)->h.flags & WIRE_F_SEQ, 0);
  mayfly_unmount(ns);
  mayfly_disconnect(c);
}

static void test_a_file_write_over_two_chains_redoes_only_the_failed_piece(void) {
  mayfly_client_t *c = client_with(8000);
  /* Two blocks of 64 bytes: a write of [60, 70) is two pieces. */
  mayfly_ns_t *ns = mount_chain(c, "/chain/f", MAYFLY_KIND_FILE, 2, 64);
  fake_then(head, ACT_REPLY, 0, NULL);
  fake_then(head, ACT_REPLY, MAYFLY_EIO, NULL);
  MF_ASSERT_EQ(mayfly_file_write(ns, 60, "0123456789", 10), 0);
  MF_ASSERT_EQ(fake_count(head), 3);
  const got_t *a = fake_frame(head, 0), *b = fake_frame(head, 1), *redo = fake_frame(head, 2);
  MF_ASSERT_EQ(a->h.block_index, 10);
  MF_ASSERT_EQ(b->h.block_index, 11);
  MF_ASSERT_EQ(redo->h.block_index, 11);
  MF_ASSERT_EQ(seq_of(b).seq, seq_of(a).seq + 1); /* a record per piece */
  MF_ASSERT_EQ(seq_of(redo).seq, seq_of(b).seq);
  MF_ASSERT_EQ(redo->h.arg0, 0); /* offset in block 11 */
  CU_ASSERT(redo->plen == 6 && memcmp(redo->payload, "456789", 6) == 0);
  mayfly_unmount(ns);
  mayfly_disconnect(c);
}

static void test_a_chain_that_never_answers_times_out_within_the_timeout(void) {
  const int timeout_ms = 2500;
  mayfly_client_t *c = client_with(timeout_ms);
  mayfly_ns_t *ns = mount_chain(c, "/chain/kv4", MAYFLY_KIND_KV, 1, WIRE_KV_SLOTS);
  for (int i = 0; i < 64; i++) fake_then(head, ACT_SILENT, 0, NULL);
  int64_t t0 = g_get_monotonic_time();
  MF_ASSERT_EQ(mayfly_kv_put(ns, "k", 1, "v", 1), MAYFLY_ETIMEDOUT);
  int64_t took_ms = (g_get_monotonic_time() - t0) / 1000;
  CU_ASSERT(took_ms <= timeout_ms + MARGIN_MS);
  /* Each attempt is bounded by a second: more than one went out, all with
   * the write's one record. */
  guint n = fake_count(head);
  CU_ASSERT(n >= 2);
  for (guint i = 1; i < n; i++) {
    MF_ASSERT_EQ(seq_of(fake_frame(head, i)).seq, seq_of(fake_frame(head, 0)).seq);
  }
  CU_ASSERT(strstr(mayfly_last_error(), "chain") != NULL);
  mayfly_unmount(ns);
  mayfly_disconnect(c);
}

static void test_a_layout_without_a_chain_sends_no_record(void) {
  mayfly_client_t *c = client_with(8000);
  mayfly_ns_t *ns = mount_chain(c, "/chain/kv5", MAYFLY_KIND_KV, 1, WIRE_KV_SLOTS);
  set_chain_layout(ns, 1, WIRE_KV_SLOTS, 0); /* R = 1: one block, on the head */
  MF_ASSERT_EQ(mayfly_kv_put(ns, "a", 1, "1", 1), 0);
  fake_then(head, ACT_REPLY, 0, "1");
  void *v = NULL;
  size_t vlen = 0;
  MF_ASSERT_EQ(mayfly_kv_get(ns, "a", 1, &v, &vlen), 0);
  mayfly_free(v);
  MF_ASSERT_EQ(fake_count(head), 2); /* the read too: one block is head and tail */
  for (guint i = 0; i < 2; i++) {
    MF_ASSERT_EQ(fake_frame(head, i)->h.flags, 0);
    MF_ASSERT_EQ(fake_frame(head, i)->h.cap_len, 0);
    MF_ASSERT_EQ(fake_frame(head, i)->h.block_index, 10);
  }
  MF_ASSERT_EQ(fake_count(tail), 0);
  /* Nothing in flight: the client's watermark is its next seq. */
  MF_ASSERT_EQ(mf_seqs_acked(&c->seqs), c->seqs.next);
  mayfly_unmount(ns);
  mayfly_disconnect(c);
}

static void test_the_real_cluster_serves_a_namespace_without_replicas(void) {
  /* The same client code against the real memory server (R = 1), and the
   * layout it gets says R = 1 with no chain. */
  mayfly_client_t *c = client_with(8000);
  mayfly_create_options_t co = {.blocks = 2, .replicas = 1};
  mayfly_ns_t *ns = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, "/chain/real", MAYFLY_KIND_KV, &co, &ns), 0);
  MF_ASSERT_EQ(mayfly_kv_put(ns, "x", 1, "yz", 2), 0);
  void *v = NULL;
  size_t vlen = 0;
  MF_ASSERT_EQ(mayfly_kv_get(ns, "x", 1, &v, &vlen), 0);
  CU_ASSERT(vlen == 2 && memcmp(v, "yz", 2) == 0);
  mayfly_free(v);
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(c, "/chain/real", &st), 0);
  MF_ASSERT_EQ(st->npartitions, 2);
  for (size_t i = 0; i < st->npartitions; i++) {
    MF_ASSERT_EQ(st->partitions[i].replicas, 1);
    MF_ASSERT_EQ(st->partitions[i].nchain, 0);
    CU_ASSERT(strcmp(st->partitions[i].state, "ok") == 0);
  }
  mayfly_stat_free(st);
  MF_ASSERT_EQ(mf_seqs_acked(&c->seqs), 1); /* R = 1 writes take no seq */
  mayfly_unmount(ns);
  mayfly_disconnect(c);
}

static int suite_init(void) {
  signal(SIGPIPE, SIG_IGN);
  dir = mf_start_directory(NULL);
  if (dir == NULL) return 1;
  ms = mf_start_memserver(dir, 32, "64KiB", NULL);
  if (ms == NULL) return 1;
  head = fake_start();
  tail = fake_start();
  return head != NULL && tail != NULL ? 0 : 1;
}

static int suite_cleanup(void) {
  if (head != NULL) fake_stop(head);
  if (tail != NULL) fake_stop(tail);
  if (ms != NULL) mf_stop(ms);
  if (dir != NULL) mf_stop(dir);
  return 0;
}

int main(void) {
  static const mf_test_t tests[] = {
      {"writes go to the head with a sequence record, reads to the tail",
       test_writes_go_to_the_head_with_a_record_and_reads_to_the_tail},
      {"a write retried after chain errors keeps its record",
       test_a_write_retried_after_chain_errors_keeps_its_record},
      {"a pop retried keeps its record and gets the item",
       test_a_pop_retried_keeps_its_record_and_gets_the_item},
      {"a batch redoes only the failed items, each with its record",
       test_a_batch_redoes_only_the_failed_items_each_with_its_record},
      {"a file write over two chains redoes only the failed piece",
       test_a_file_write_over_two_chains_redoes_only_the_failed_piece},
      {"a chain that never answers times out within the timeout",
       test_a_chain_that_never_answers_times_out_within_the_timeout},
      {"a layout without a chain sends no record", test_a_layout_without_a_chain_sends_no_record},
      {"the real cluster serves a namespace without replicas",
       test_the_real_cluster_serves_a_namespace_without_replicas},
      {NULL, NULL}};
  return mf_test_run("client_chain", suite_init, suite_cleanup, tests);
}
