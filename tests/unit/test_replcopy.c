/*
 * Tests of memserver/replcopy.c: a chain's tail copying a whole block to a
 * block joining the chain, over real sockets between two real memory
 * servers (server.c, chain.c, link.c) running on this test's loop.
 *
 * The directory's side of re-replication (placing the copy, telling both
 * servers through check_block, taking replica_end) is not in this branch,
 * so the test gives each server the check_block answer the directory would
 * give (the event ctlevents.c would apply: the tail's chain with copy_to
 * and copy_op, the copy's chain_pos -1 under the same op) and applies it
 * as ctlevents.c does; everything after that is the servers' own doing.
 * Their directory address is a closed port, so replica_end is attempted
 * and fails there (logged): what the test asserts is the data.
 *
 * What re-replication relies on: the joining block ends up holding exactly
 * the tail's block (kv entries, a 64 MiB file, queue items, and the chain
 * state: applied cseq), including a write acknowledged while the copy ran;
 * a copy op is streamed once however often check_block repeats it; and a
 * REPLICA_COPY frame for a block that is not a copy being filled, or of
 * another op, is refused with MAYFLY_EMOVED and changes nothing.
 */
#include <arpa/inet.h>
#include <glib.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "common/error.h"
#include "common/le.h"
#include "common/wire.h"
#include "memserver/blocksnap.h"
#include "memserver/chain.h"
#include "memserver/internal.h"
#include "memserver/link.h"
#include "memserver/replcopy.h"
#include "memserver/server.h"
#include "memserver/store.h"
#include "mf_test.h"

#define BSZ (64u << 20)
#define NBLOCKS 4

typedef struct {
  store_t store;
  ms_server_t *srv;
  int port;
  char addr[64];
} node_t;

static uv_loop_t loop;
static node_t tail, copy;
/* A second pair with a cluster key: frames carry the frame MAC. */
static node_t ktail, kcopy;
static const uint8_t cluster_key[MF_KEY_SIZE] = {7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                                                 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27,
                                                 28, 29, 30, 31};
static int64_t next_op = 100;

static int start_node(node_t *n, const uint8_t *key) {
  if (store_init(&n->store, NBLOCKS, BSZ) != 0) return -1;
  ms_server_config_t cfg = {0};
  cfg.net = (mf_net_config_t){.host = "127.0.0.1",
                              .max_connections = 100,
                              .read_buffer = 16 << 10,
                              .input_total = 256u << 20,
                              .reply_backlog = 8u << 20,
                              .reply_backlog_total = 256u << 20,
                              .frame_timeout_ms = 10000};
  cfg.directory = "127.0.0.1:1"; /* nothing listens: see the file's comment */
  cfg.deferred_max = 64u << 20;
  cfg.deferred_total_max = 256u << 20;
  cfg.pops_max = 16;
  cfg.pops_total_max = 64;
  cfg.cluster_key = key;
  char why[256];
  if (ms_server_start(&loop, &n->store, &cfg, &n->srv, &n->port, why, sizeof why) != 0) {
    fprintf(stderr, "cannot start a memory server: %s\n", why);
    return -1;
  }
  g_snprintf(n->addr, sizeof n->addr, "127.0.0.1:%d", n->port);
  return 0;
}

static int setup(void) {
  uv_loop_init(&loop);
  return start_node(&tail, NULL) != 0 || start_node(&copy, NULL) != 0 ||
         start_node(&ktail, cluster_key) != 0 || start_node(&kcopy, cluster_key) != 0;
}

static int teardown(void) {
  ms_server_stop(tail.srv);
  ms_server_stop(copy.srv);
  ms_server_stop(ktail.srv);
  ms_server_stop(kcopy.srv);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  store_free(&tail.store);
  store_free(&copy.store);
  store_free(&ktail.store);
  store_free(&kcopy.store);
  return 0;
}

static void on_poll(uv_timer_t *t) {
  (void)t;
}

/* Runs the loop until done(ud) or about timeout_ms passed; returns done's. */
static int run_until(int (*done)(void *), void *ud, int64_t timeout_ms) {
  uv_timer_t t;
  uv_timer_init(&loop, &t);
  uv_timer_start(&t, on_poll, 5, 5);
  int64_t end = (int64_t)g_get_monotonic_time() / 1000 + timeout_ms;
  while (!done(ud) && (int64_t)g_get_monotonic_time() / 1000 < end) {
    uv_run(&loop, UV_RUN_ONCE);
  }
  uv_timer_stop(&t);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
  return done(ud);
}

static store_block_t *adopt(node_t *n, int32_t index, store_kind_t kind) {
  int64_t gen = n->store.blocks[index].generation + 1;
  store_adopt(&n->store, index, gen, kind, 0, kind == STORE_KV ? WIRE_KV_SLOTS : 1);
  return &n->store.blocks[index];
}

/* What check_block would answer: b on the tail is a chain of one (head and
 * tail) told to fill cb under op; cb on the copy's server is that copy. */
static void tell_pair(node_t *t, node_t *k, store_block_t *b, store_block_t *cb, int64_t op) {
  ms_event_t e = {.type = MS_EV_VERIFIED, .index = b->index, .generation = b->generation,
                  .allocated = 1, .kind = b->kind, .lo = b->range_lo, .hi = b->range_hi,
                  .chain_n = 1, .chain_pos = 0, .chain_version = 1};
  e.chain[0] = (ms_event_member_t){1, t->addr, b->index, b->generation};
  ms_event_t ce = {.type = MS_EV_VERIFIED, .index = cb->index, .generation = cb->generation,
                   .allocated = 1, .kind = cb->kind, .lo = cb->range_lo, .hi = cb->range_hi,
                   .joining = 1, .chain_pos = -1, .chain_version = 1, .copy_op = op};
  /* The copy first (its server hears of it first when the directory
   * picks it: the heartbeat's rechain), then the tail, as ctlevents.c. */
  ms__chain_update(k->srv, cb, &ce);
  ms__replcopy_expect(k->srv, cb, ce.joining, ce.copy_op);
  e.has_copy = 1;
  e.copy_to = (ms_event_member_t){2, k->addr, cb->index, cb->generation};
  e.copy_op = op;
  ms__chain_update(t->srv, b, &e);
}

static void tell_copy(store_block_t *b, store_block_t *cb, int64_t op) {
  tell_pair(&tail, &copy, b, cb, op);
}

static uint64_t copies_of(node_t *n) {
  uint64_t c, bytes;
  ms__replcopy_stats(n->srv, &c, &bytes);
  return c;
}

typedef struct {
  uint64_t want;
} want_t;

static int tail_copied(void *ud) {
  return copies_of(&tail) >= ((want_t *)ud)->want;
}

static int ktail_copied(void *ud) {
  return copies_of(&ktail) >= ((want_t *)ud)->want;
}

/* ---------- a client in a thread of its own: one replicated KV_PUT ---------- */

typedef struct {
  int port;
  uint32_t index;
  int64_t generation;
  const char *key, *val;
  int status; /* the reply's, or 1 before it came */
} put_t;

static int read_full(int fd, void *buf, size_t n) {
  uint8_t *p = buf;
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static gpointer put_thread(gpointer ud) {
  put_t *p = ud;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p->port),
                          .sin_addr.s_addr = htonl(0x7f000001)};
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    p->status = MAYFLY_EIO;
    close(fd);
    return NULL;
  }
  size_t kl = strlen(p->key), vl = strlen(p->val);
  wire_hdr_t h = {.opcode = WIRE_OP_KV_PUT, .flags = WIRE_F_SEQ, .request_id = 1,
                  .block_index = p->index, .generation = (uint64_t)p->generation,
                  .arg2 = (uint32_t)kl, .cap_len = WIRE_SEQ_SIZE,
                  .payload_len = (uint32_t)(kl + vl)};
  GByteArray *f = g_byte_array_new();
  uint8_t hdr[WIRE_HEADER_SIZE], seq[WIRE_SEQ_SIZE];
  wire_encode(&h, hdr);
  wire_seq_put(seq, &(wire_seq_t){.client_id = 42, .seq = 1, .acked = 1});
  g_byte_array_append(f, hdr, sizeof hdr);
  g_byte_array_append(f, seq, sizeof seq);
  g_byte_array_append(f, (const uint8_t *)p->key, (guint)kl);
  g_byte_array_append(f, (const uint8_t *)p->val, (guint)vl);
  if (write(fd, f->data, f->len) != (ssize_t)f->len || read_full(fd, hdr, sizeof hdr) != 0) {
    p->status = MAYFLY_EIO;
  } else {
    wire_hdr_t r;
    size_t flen;
    p->status = wire_parse(hdr, sizeof hdr, UINT32_MAX, &r, &flen) == 0 ? r.status : MAYFLY_EPROTO;
  }
  g_byte_array_free(f, TRUE);
  close(fd);
  return NULL;
}

static int put_done(void *ud) {
  return g_atomic_int_get(&((put_t *)ud)->status) != 1;
}

/* ---------- the tests ---------- */

static void kv_fill(store_t *s, store_block_t *b, int n, size_t vlen) {
  char key[32];
  uint8_t *v = g_malloc(vlen);
  for (int i = 0; i < n; i++) {
    int kl = g_snprintf(key, sizeof key, "key-%d", i);
    memset(v, i & 0xff, vlen);
    MF_ASSERT_EQ(store_kv_put(s, b, wire_kv_hash(key, (uint32_t)kl), key, (uint32_t)kl, v, vlen),
                 0);
  }
  g_free(v);
}

static void assert_kv_same(const store_block_t *a, const store_block_t *b) {
  MF_ASSERT_EQ(b->used, a->used);
  MF_ASSERT_EQ(g_hash_table_size(b->kv), g_hash_table_size(a->kv));
  GHashTableIter it;
  gpointer p;
  g_hash_table_iter_init(&it, a->kv);
  while (g_hash_table_iter_next(&it, &p, NULL)) {
    const store_kv_entry_t *e = p;
    uint32_t vlen = 0;
    const uint8_t *v = store_kv_get(b, e->h.hash, e->data, e->h.klen, &vlen);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    MF_ASSERT_EQ(vlen, e->h.vlen);
    CU_ASSERT(memcmp(v, store_kv_entry_value(e), vlen) == 0);
  }
}

/* A kv block is copied whole, and a write acknowledged while the copy runs
 * is on the copy too, at the same applied cseq. */
static void test_kv_copy_with_write(void) {
  store_block_t *b = adopt(&tail, 0, STORE_KV);
  store_block_t *cb = adopt(&copy, 0, STORE_KV);
  kv_fill(&tail.store, b, 20000, 300);
  uint64_t before = copies_of(&tail);
  int64_t op = next_op++;
  tell_copy(b, cb, op);
  put_t p = {.port = tail.port, .index = (uint32_t)b->index, .generation = b->generation,
             .key = "written-during-the-copy", .val = "its value", .status = 1};
  GThread *th = g_thread_new("put", put_thread, &p);
  CU_ASSERT(run_until(put_done, &p, 20000));
  g_thread_join(th);
  MF_ASSERT_EQ(p.status, 0);
  want_t w = {before + 1};
  CU_ASSERT(run_until(tail_copied, &w, 20000));
  uint32_t vlen = 0;
  const uint8_t *v = store_kv_get(cb, wire_kv_hash(p.key, (uint32_t)strlen(p.key)), p.key,
                                  (uint32_t)strlen(p.key), &vlen);
  CU_ASSERT_PTR_NOT_NULL_FATAL(v);
  MF_ASSERT_EQ(vlen, strlen(p.val));
  assert_kv_same(b, cb);
  MF_ASSERT_EQ(ms_chain_applied(cb), ms_chain_applied(b));
  MF_ASSERT_EQ(ms_chain_applied(b), 1);
  /* check_block says the same again: nothing is streamed a second time. */
  tell_copy(b, cb, op);
  w.want = before + 2;
  CU_ASSERT(!run_until(tail_copied, &w, 300));
  MF_ASSERT_EQ(copies_of(&tail), before + 1);
}

/* A full 64 MiB file block is copied byte for byte; prints the rate. */
static void test_file_copy(void) {
  store_block_t *b = adopt(&tail, 1, STORE_FILE);
  store_block_t *cb = adopt(&copy, 1, STORE_FILE);
  uint8_t *data = g_malloc(BSZ);
  for (size_t i = 0; i < BSZ; i++) data[i] = (uint8_t)(i * 131 + (i >> 12));
  MF_ASSERT_EQ(store_file_write(&tail.store, b, 0, data, BSZ), 0);
  g_free(data);
  uint64_t before = copies_of(&tail);
  gint64 t0 = g_get_monotonic_time();
  tell_copy(b, cb, next_op++);
  want_t w = {before + 1};
  CU_ASSERT(run_until(tail_copied, &w, 30000));
  gint64 t1 = g_get_monotonic_time();
  MF_ASSERT_EQ(cb->size, BSZ);
  MF_ASSERT_EQ(cb->used, BSZ);
  CU_ASSERT(memcmp(cb->mem, b->mem, BSZ) == 0);
  printf("\n  64 MiB file block copied in %.1f ms: %.0f MB/s\n", (t1 - t0) / 1e3,
         (double)BSZ / 1e6 / ((double)(t1 - t0) / 1e6));
}

/* A queue block's items arrive in order. */
static void test_queue_copy(void) {
  store_block_t *b = adopt(&tail, 2, STORE_QUEUE);
  store_block_t *cb = adopt(&copy, 2, STORE_QUEUE);
  char item[64];
  for (int i = 0; i < 5000; i++) {
    int n = g_snprintf(item, sizeof item, "item %d", i);
    MF_ASSERT_EQ(store_queue_push(&tail.store, b, item, (uint32_t)n), 0);
  }
  uint64_t before = copies_of(&tail);
  tell_copy(b, cb, next_op++);
  want_t w = {before + 1};
  CU_ASSERT(run_until(tail_copied, &w, 20000));
  MF_ASSERT_EQ(g_queue_get_length(cb->items), 5000);
  MF_ASSERT_EQ(cb->used, b->used);
  int i = 0;
  for (GList *l = cb->items->head; l != NULL; l = l->next, i++) {
    const store_item_t *it = l->data;
    int n = g_snprintf(item, sizeof item, "item %d", i);
    MF_ASSERT_EQ(it->len, (uint32_t)n);
    CU_ASSERT(memcmp(it->data, item, (size_t)n) == 0);
  }
}

typedef struct {
  int status; /* 1 until the reply */
} reply_t;

static void on_reply(void *ud, int status, const wire_hdr_t *r, const uint8_t *payload) {
  (void)payload;
  ((reply_t *)ud)->status = status != 0 ? status : r->status;
}

static int replied(void *ud) {
  return ((reply_t *)ud)->status != 1;
}

/* Sends one REPLICA_COPY chunk (the start of a real stream) to the copy's
 * server and returns its answer. */
static int send_chunk(ms_link_t *l, store_block_t *cb, int64_t op, uint64_t offset) {
  store_block_t *src = &tail.store.blocks[2];
  bs_stream_t st;
  bs_stream_init(&st, 0);
  CU_ASSERT_FATAL(bs_save(&tail.store, src, 0, NULL, 4096, &st) == 0);
  size_t n;
  const uint8_t *p = bs_stream_chunk(&st, 0, &n);
  wire_hdr_t h = {.opcode = WIRE_OP_REPLICA_COPY, .block_index = (uint32_t)cb->index,
                  .generation = (uint64_t)cb->generation, .arg0 = (uint64_t)op,
                  .arg1 = offset};
  reply_t r = {1};
  CU_ASSERT_FATAL(ms_link_send(l, &h, p, n, on_reply, &r) == 0);
  bs_stream_clear(&st);
  CU_ASSERT(run_until(replied, &r, 10000));
  return r.status;
}

/* Frames for anything but a copy being filled under their op are refused. */
static void test_refused(void) {
  ms_link_config_t lc = {0};
  ms_link_t *l = ms_link_new(&loop, copy.addr, &lc);
  /* A block that is no copy (never told so), with data of its own. */
  store_block_t *plain = adopt(&copy, 3, STORE_QUEUE);
  MF_ASSERT_EQ(store_queue_push(&copy.store, plain, "mine", 4), 0);
  MF_ASSERT_EQ(send_chunk(l, plain, 999, 0), MAYFLY_EMOVED);
  MF_ASSERT_EQ(g_queue_get_length(plain->items), 1);
  /* A copy being filled, but under another op. */
  store_block_t *cb = adopt(&copy, 3, STORE_QUEUE);
  ms__replcopy_expect(copy.srv, cb, 1, 500);
  MF_ASSERT_EQ(send_chunk(l, cb, 501, 0), MAYFLY_EMOVED);
  /* The right op, but not from the stream's start. */
  MF_ASSERT_EQ(send_chunk(l, cb, 500, 4096), MAYFLY_EPROTO);
  /* The right op from the start: taken. */
  MF_ASSERT_EQ(send_chunk(l, cb, 500, 0), 0);
  /* A copy whose op check_block did not name takes the first stream's op:
   * a chunk of another op after it is refused. */
  store_block_t *cb4 = adopt(&copy, 3, STORE_QUEUE);
  ms__replcopy_expect(copy.srv, cb4, 1, 0);
  MF_ASSERT_EQ(send_chunk(l, cb4, 600, 0), 0);
  ms__replcopy_expect(copy.srv, cb4, 1, 0); /* check_block says it again */
  MF_ASSERT_EQ(send_chunk(l, cb4, 601, 0), MAYFLY_EMOVED);
  MF_ASSERT_EQ(send_chunk(l, cb4, 600, 0), 0); /* offset 0 again: starts over */
  cb = cb4;
  /* A generation the server has not heard of: parked, then (the directory
   * being unreachable) refused. */
  store_block_t ghost = *cb;
  ghost.generation = cb->generation + 5;
  int st = send_chunk(l, &ghost, 500, 0);
  CU_ASSERT(st == MAYFLY_EIO || st == MAYFLY_EMOVED);
  ms_link_close(l);
  uv_run(&loop, UV_RUN_NOWAIT);
}

/* With the cluster key the copy goes through (every frame and reply carries
 * its MAC), and a frame without the MAC is refused (counted in cap_refused). */
static void test_cluster_key(void) {
  store_block_t *b = adopt(&ktail, 0, STORE_KV);
  store_block_t *cb = adopt(&kcopy, 0, STORE_KV);
  kv_fill(&ktail.store, b, 3000, 100);
  int64_t op = next_op++;
  tell_pair(&ktail, &kcopy, b, cb, op);
  want_t w = {1};
  CU_ASSERT(run_until(ktail_copied, &w, 20000));
  assert_kv_same(b, cb);
  /* An unkeyed link: no frame MAC. */
  store_block_t *cb2 = adopt(&kcopy, 1, STORE_QUEUE);
  ms__replcopy_expect(kcopy.srv, cb2, 1, 700);
  uint64_t refused = kcopy.srv->caps.refused;
  ms_link_config_t lc = {0};
  ms_link_t *l = ms_link_new(&loop, kcopy.addr, &lc);
  /* The server answers MAYFLY_EPERM, with its own MAC on the reply, which
   * an unkeyed link takes for a broken peer (MAYFLY_EIO): either way the
   * refusal is counted and nothing is restored. */
  int st = send_chunk(l, cb2, 700, 0);
  CU_ASSERT(st == MAYFLY_EPERM || st == MAYFLY_EIO);
  MF_ASSERT_EQ(kcopy.srv->caps.refused, refused + 1);
  MF_ASSERT_EQ(cb2->used, 0);
  /* The same frame with the key's MAC is taken. */
  ms_link_close(l);
  lc.key = cluster_key;
  l = ms_link_new(&loop, kcopy.addr, &lc);
  MF_ASSERT_EQ(send_chunk(l, cb2, 700, 0), 0);
  ms_link_close(l);
  uv_run(&loop, UV_RUN_NOWAIT);
}

static const mf_test_t tests[] = {
    {"a kv block is copied whole, with a write acknowledged during the copy",
     test_kv_copy_with_write},
    {"a full 64 MiB file block is copied byte for byte", test_file_copy},
    {"a queue block's items are copied in order", test_queue_copy},
    {"REPLICA_COPY frames not for a copy being filled under their op are refused",
     test_refused},
    {"with the cluster key frames carry their MAC; one without is refused",
     test_cluster_key},
    {NULL, NULL},
};

int main(void) {
  return mf_test_run("replcopy", setup, teardown, tests);
}
