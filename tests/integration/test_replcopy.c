/*
 * Integration test of re-replication (issue 12, memserver/replcopy.c): a
 * real mayfly-directory and three mayfly-memservers on distinct loopback
 * hosts (127.0.0.2, 127.0.0.3, 127.0.0.4), spoken to with raw frames.
 *
 * A kv namespace created with replicas 2 gets a chain on two of the three
 * hosts; 2,000 puts of 1 KiB go to its head. The tail's server is killed
 * (SIGKILL). The directory drops it from the chain (the head is now alone)
 * and picks a block on the third host; the head, now the tail, copies the
 * whole block there (REPLICA_COPY) and reports replica_end; the copy joins
 * at the tail. Asserted: within the heartbeat timeout plus the copy and a
 * generous margin the chain has two members again, none on the killed
 * server, the new one on the third host, state "ok"; every acknowledged
 * put reads back, byte for byte, from the new tail (the copy); and a put
 * after the copy reaches it too. The times to the first write after the
 * kill and to R restored are printed.
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

#include "common/ctl.h"
#include "common/error.h"
#include "common/wire.h"
#include "harness.h"
#include "mf_test.h"

/* One call through the ctl, following the leader (common/ctl.h). */
#define CALL(ctl, method, ...) MF_CTL_CALL((ctl), method, __VA_ARGS__)

static mf_daemon_t *dir;
static mf_daemon_t *ms[3];
static const char *HOSTS[3] = {"127.0.0.2", "127.0.0.3", "127.0.0.4"};
static mf_ctl_t *ctl;

/* A request to (index, generation) of kv op with key/value. */
static wire_hdr_t kv_hdr(uint8_t op, int32_t index, int64_t gen, uint32_t klen) {
  wire_hdr_t h = {.opcode = op, .block_index = (uint32_t)index, .generation = (uint64_t)gen};
  if (op == WIRE_OP_KV_PUT) h.arg2 = klen;
  return h;
}

/* A write with a sequence record (no capability: the cluster has no key). */
static int seq_write(int fd, wire_hdr_t h, uint64_t client, uint64_t seq, const void *payload,
                     size_t plen, mf_raw_reply_t *r) {
  uint8_t rec[WIRE_SEQ_SIZE];
  wire_seq_t s = {.client_id = client, .seq = seq, .acked = seq};
  wire_seq_put(rec, &s);
  h.flags |= WIRE_F_SEQ;
  return mf_raw_roundtrip(fd, h, rec, sizeof rec, payload, plen, r);
}

static int create(const char *path, MayflyNodeKind kind, int replicas) {
  return mf_ctl_create(ctl, path, kind, replicas);
}

static MayflyPartition *first_part(const char *path) {
  return mf_ctl_first_part(ctl, path);
}

typedef struct {
  int n;
  char addr[5][64];
  int32_t index[5];
  int64_t gen[5];
} chain_t;

static int chain_of(MayflyPartition *p, chain_t *c) {
  memset(c, 0, sizeof *c);
  if (!p->__isset_chain || p->chain == NULL) return -1;
  for (guint k = 0; k < p->chain->len && k < 5; k++) {
    MayflyReplica *m = g_ptr_array_index(p->chain, k);
    snprintf(c->addr[k], sizeof c->addr[k], "%s", m->server_address);
    c->index[k] = m->block_index;
    c->gen[k] = m->generation;
    c->n++;
  }
  return c->n > 0 ? 0 : -1;
}

#define NPUTS 2000
#define VLEN 1024

static int64_t now_ms(void) {
  return g_get_monotonic_time() / 1000;
}

static void value_of(int i, uint8_t *v) {
  for (int k = 0; k < VLEN; k++) v[k] = (uint8_t)(i * 31 + k);
}

/* Puts key i at the head (fd) under client 7, seq seq; returns the status
 * or -1. */
static int put(int fd, const chain_t *c, int i, uint64_t seq) {
  char key[32];
  int kl = snprintf(key, sizeof key, "key-%d", i);
  uint8_t buf[32 + VLEN];
  memcpy(buf, key, (size_t)kl);
  value_of(i, buf + kl);
  mf_raw_reply_t r;
  wire_hdr_t h = kv_hdr(WIRE_OP_KV_PUT, c->index[0], c->gen[0], (uint32_t)kl);
  if (seq_write(fd, h, 7, seq, buf, (size_t)kl + VLEN, &r) != 0) return -1;
  return r.h.status;
}

/* Reads key i from the tail (fd): 1 when its value is right. A tail that
 * has not heard yet that it is one answers MAYFLY_EMOVED, and the read is
 * tried again, as a client does, for up to 10 s. */
static int get_ok(int fd, const chain_t *c, int i) {
  char key[32];
  int kl = snprintf(key, sizeof key, "key-%d", i);
  mf_raw_reply_t r;
  wire_hdr_t h = kv_hdr(WIRE_OP_KV_GET, c->index[c->n - 1], c->gen[c->n - 1], (uint32_t)kl);
  int64_t end = now_ms() + 10000;
  do {
    if (mf_raw_roundtrip(fd, h, NULL, 0, key, (size_t)kl, &r) != 0) return 0;
    if (r.h.status != MAYFLY_EMOVED) break;
    g_usleep(20000);
  } while (now_ms() < end);
  if (r.h.status != 0) {
    fprintf(stderr, "  get key-%d: %s\n", i, mayfly_strerror(r.h.status));
    return 0;
  }
  uint8_t want[VLEN];
  value_of(i, want);
  return r.h.payload_len == VLEN && memcmp(r.payload, want, VLEN) == 0;
}

static int server_of(const char *addr) {
  for (int i = 0; i < 3; i++) {
    if (ms[i] != NULL && strcmp(ms[i]->address, addr) == 0) return i;
  }
  return -1;
}

static void test_a_killed_member_is_replaced_by_a_full_copy(void) {
  MayflyPartition *p = first_part("/rkv");
  chain_t c;
  CU_ASSERT_FATAL(p != NULL && chain_of(p, &c) == 0 && c.n == 2);
  g_object_unref(p);
  int head = mf_raw_connect_to(c.addr[0], 10);
  CU_ASSERT_FATAL(head >= 0);
  uint64_t seq = 1;
  for (int i = 0; i < NPUTS; i++) MF_ASSERT_EQ(put(head, &c, i, seq++), 0);
  int victim = server_of(c.addr[1]);
  CU_ASSERT_FATAL(victim >= 0);
  char killed[64];
  snprintf(killed, sizeof killed, "%s", c.addr[1]);
  int64_t t0 = now_ms();
  mf_kill(ms[victim]);
  ms[victim] = NULL;
  /* The first put after the kill: retried (as a client does) until the head,
   * alone in the chain, takes it. */
  int64_t t_write = -1;
  while (now_ms() - t0 < 20000) {
    int rc = put(head, &c, NPUTS, seq);
    if (rc == 0) {
      t_write = now_ms() - t0;
      break;
    }
    g_usleep(20000);
  }
  CU_ASSERT(t_write >= 0);
  seq++;
  /* R restored: two members again, the new one on the third host. */
  chain_t n;
  int64_t t_r = -1;
  while (now_ms() - t0 < 45000) {
    p = first_part("/rkv");
    int ok = p != NULL && chain_of(p, &n) == 0 && n.n == 2 && p->__isset_state &&
             strcmp(p->state, "ok") == 0;
    if (p != NULL) g_object_unref(p);
    if (ok) {
      t_r = now_ms() - t0;
      break;
    }
    g_usleep(50000);
  }
  CU_ASSERT_FATAL(t_r >= 0);
  printf("\n  first write %lld ms after the kill; R = 2 restored after %lld ms\n",
         (long long)t_write, (long long)t_r);
  CU_ASSERT(strcmp(n.addr[0], c.addr[0]) == 0);
  CU_ASSERT(strcmp(n.addr[0], killed) != 0 && strcmp(n.addr[1], killed) != 0);
  int fresh = server_of(n.addr[1]);
  CU_ASSERT(fresh >= 0 && fresh != victim && strcmp(n.addr[1], c.addr[0]) != 0);
  /* Every acknowledged put, from the new tail: the copy. */
  int tail = mf_raw_connect_to(n.addr[1], 10);
  CU_ASSERT_FATAL(tail >= 0);
  /* The new tail serves reads once it knows it is the tail: it asks the
   * directory when a read reaches it before the heartbeat tells it (the
   * library retries EMOVED the same way). */
  int64_t t_tail = now_ms();
  while (!get_ok(tail, &n, 0) && now_ms() - t_tail < 5000) g_usleep(20000);
  int good = 0;
  for (int i = 0; i <= NPUTS; i++) good += get_ok(tail, &n, i);
  MF_ASSERT_EQ(good, NPUTS + 1);
  /* A put now goes down the new chain to the copy. */
  close(head);
  head = mf_raw_connect_to(n.addr[0], 10);
  CU_ASSERT_FATAL(head >= 0);
  int rc;
  int64_t end = now_ms() + 10000;
  while ((rc = put(head, &n, NPUTS + 1, seq)) == MAYFLY_EMOVED && now_ms() < end) g_usleep(20000);
  seq++;
  MF_ASSERT_EQ(rc, 0);
  CU_ASSERT(get_ok(tail, &n, NPUTS + 1));
  close(head);
  close(tail);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  dir = mf_start_directory("--heartbeat-ms", "100", "--heartbeat-timeout-ms", "1500", NULL);
  if (dir == NULL) return 1;
  for (int i = 0; i < 3; i++) {
    ms[i] = mf_start_memserver(dir, 4, "4MiB", "--host", HOSTS[i], NULL);
    if (ms[i] == NULL) return 1;
  }
  if (mf_ctl_open(dir->address, 5000, 2000, &ctl) != 0) return 1;
  if (create("/rkv", MAYFLY_NODE_KIND_KV, 2) != 0) {
    fprintf(stderr, "create with replicas 2: %s\n", mf_last_error());
    return 1;
  }
  MayflyPartition *p = first_part("/rkv");
  chain_t c;
  int have = p != NULL && chain_of(p, &c) == 0 && c.n == 2;
  if (p != NULL) g_object_unref(p);
  if (!have) {
    fprintf(stderr, "the directory built no chain: a namespace with replicas 2 has "
            "partitions of one block\n");
    return 1;
  }
  static const mf_test_t tests[] = {
      {"a killed member is replaced by a full copy of the block",
       test_a_killed_member_is_replaced_by_a_full_copy},
      {NULL, NULL}};
  return mf_test_run("replcopy_it", NULL, NULL, tests);
}
