/*
 * Integration tests of the memory server's chain replication (issue 12,
 * memserver/chain.c): real mayfly-memservers on distinct loopback hosts
 * (127.0.0.2, 127.0.0.3, 127.0.0.4) registered with a real
 * mayfly-directory, spoken to with raw frames.
 *
 * Without arguments, what needs no chain from the directory:
 *   - a CHAIN_FWD for a block the server does not hold as a chain member is
 *     answered MAYFLY_EMOVED, and nothing is applied;
 *   - a CHAIN_FWD whose metadata is not the frame MAC the cluster wants
 *     (here: 32 bytes where the cluster has no key) is refused with
 *     MAYFLY_EPERM and counted in SERVER_STAT's cap_refused;
 *   - a write carrying WIRE_F_SEQ and a sequence record to an R = 1 block
 *     is served as today (the record is skipped, the payload found after
 *     it). The servers run with --zone.
 *
 * With the argument "chains" (CTest: test_chain_ms_chains), the tests that
 * need the directory to build chains (namespaces created with replicas 2).
 * A directory that gives the partition no chain fails the run:
 *   - writes go to the head only (EMOVED elsewhere) and need a sequence
 *     record (EINVAL without); reads at the tail only;
 *   - a retried write (same client id and seq) is applied once: the retry
 *     of a put with another value leaves the first, the retry of a push
 *     adds no item, and both get the first reply;
 *   - the tail killed: within the heartbeat timeout and a margin, writes at
 *     the head succeed again (the chain shrank to the head) and every
 *     acknowledged write is readable from the new tail.
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

static int start_cluster(int chains) {
  dir = mf_start_directory("--heartbeat-ms", "100", "--heartbeat-timeout-ms", "1500", NULL);
  if (dir == NULL) return -1;
  for (int i = 0; i < 3; i++) {
    char zone[16];
    snprintf(zone, sizeof zone, "zone%d", i);
    ms[i] = mf_start_memserver(dir, 8, "1MiB", "--host", HOSTS[i], "--zone", zone, NULL);
    if (ms[i] == NULL) return -1;
    if (!chains) break; /* one server will do */
  }
  return mf_ctl_open(dir->address, 5000, 2000, &ctl);
}

static int create(const char *path, MayflyNodeKind kind, int replicas) {
  return mf_ctl_create(ctl, path, kind, replicas);
}

static MayflyPartition *first_part(const char *path) {
  return mf_ctl_first_part(ctl, path);
}

/* --- without chains --- */

static void test_a_forward_for_a_block_not_in_a_chain_is_moved(void) {
  int fd = mf_raw_connect_to(ms[0]->address, 10);
  CU_ASSERT_FATAL(fd >= 0);
  /* An embedded put, as a head would forward it. */
  uint8_t inner[WIRE_HEADER_SIZE + 8];
  wire_hdr_t ih = kv_hdr(WIRE_OP_KV_PUT, 0, 1, 4);
  ih.payload_len = 8;
  wire_encode(&ih, inner);
  memcpy(inner + WIRE_HEADER_SIZE, "keyvalue", 8);
  wire_hdr_t h = {.opcode = WIRE_OP_CHAIN_FWD, .block_index = 0, .generation = 1, .arg0 = 1};
  mf_raw_reply_t r;
  CU_ASSERT_EQUAL_FATAL(mf_raw_roundtrip(fd, h, NULL, 0, inner, sizeof inner, &r), 0);
  CU_ASSERT(r.h.flags & WIRE_F_REPLY);
  MF_ASSERT_EQ(r.h.status, MAYFLY_EMOVED);
  MF_ASSERT_EQ(r.h.cap_len, 0); /* no key: no MAC on the reply either */
  close(fd);
}

static void test_a_forward_with_a_bad_mac_is_refused_and_counted(void) {
  int fd = mf_raw_connect_to(ms[0]->address, 10);
  CU_ASSERT_FATAL(fd >= 0);
  mf_raw_reply_t r;
  wire_hdr_t st = {.opcode = WIRE_OP_SERVER_STAT};
  CU_ASSERT_EQUAL_FATAL(mf_raw_roundtrip(fd, st, NULL, 0, NULL, 0, &r), 0);
  wire_server_stat_t before;
  MF_ASSERT_EQ(wire_server_stat_get(r.payload, r.h.payload_len, &before), 0);
  uint8_t mac[32] = {0};
  wire_hdr_t h = {.opcode = WIRE_OP_CHAIN_FWD, .block_index = 0, .generation = 1, .arg0 = 1};
  CU_ASSERT_EQUAL_FATAL(mf_raw_roundtrip(fd, h, mac, sizeof mac, NULL, 0, &r), 0);
  MF_ASSERT_EQ(r.h.status, MAYFLY_EPERM);
  CU_ASSERT_EQUAL_FATAL(mf_raw_roundtrip(fd, st, NULL, 0, NULL, 0, &r), 0);
  wire_server_stat_t after;
  MF_ASSERT_EQ(wire_server_stat_get(r.payload, r.h.payload_len, &after), 0);
  MF_ASSERT_EQ(after.cap_refused, before.cap_refused + 1);
  close(fd);
}

static void test_a_write_with_a_sequence_record_to_an_r1_block_is_served(void) {
  MF_ASSERT_EQ(create("/r1kv", MAYFLY_NODE_KIND_KV, 0), 0);
  MayflyPartition *p = first_part("/r1kv");
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  CU_ASSERT(!p->__isset_chain || p->chain->len == 0);
  int fd = mf_raw_connect_to(p->server_address, 10);
  CU_ASSERT_FATAL(fd >= 0);
  mf_raw_reply_t r;
  CU_ASSERT_EQUAL_FATAL(seq_write(fd, kv_hdr(WIRE_OP_KV_PUT, p->block_index, p->generation, 3),
                                  77, 1, "keyval", 6, &r),
                        0);
  MF_ASSERT_EQ(r.h.status, 0);
  CU_ASSERT_EQUAL_FATAL(
      mf_raw_roundtrip(fd, kv_hdr(WIRE_OP_KV_GET, p->block_index, p->generation, 3), NULL, 0, "key", 3,
                &r),
      0);
  MF_ASSERT_EQ(r.h.status, 0);
  MF_ASSERT_EQ(r.h.payload_len, 3);
  CU_ASSERT_EQUAL(memcmp(r.payload, "val", 3), 0);
  /* R = 1 keeps no dedup table: the retry executes again (a put: the same). */
  CU_ASSERT_EQUAL_FATAL(seq_write(fd, kv_hdr(WIRE_OP_KV_PUT, p->block_index, p->generation, 3),
                                  77, 1, "keyva2", 6, &r),
                        0);
  MF_ASSERT_EQ(r.h.status, 0);
  close(fd);
  g_object_unref(p);
}

/* --- with chains --- */

/* The partition's chain members' addresses, blocks and generations. */
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

static void test_roles_dedup_and_a_dead_tail(void) {
  MayflyPartition *p = first_part("/chkv");
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  chain_t c;
  CU_ASSERT_EQUAL_FATAL(chain_of(p, &c), 0);
  MF_ASSERT_EQ(c.n, 2);
  CU_ASSERT(strcmp(c.addr[0], c.addr[1]) != 0);
  int head = mf_raw_connect_to(c.addr[0], 10), tail = mf_raw_connect_to(c.addr[1], 10);
  CU_ASSERT_FATAL(head >= 0 && tail >= 0);
  mf_raw_reply_t r;
  /* The head wants the sequence record; the tail takes no write. */
  CU_ASSERT_EQUAL_FATAL(
      mf_raw_roundtrip(head, kv_hdr(WIRE_OP_KV_PUT, c.index[0], c.gen[0], 1), NULL, 0, "ab", 2, &r), 0);
  MF_ASSERT_EQ(r.h.status, MAYFLY_EINVAL);
  CU_ASSERT_EQUAL_FATAL(
      seq_write(tail, kv_hdr(WIRE_OP_KV_PUT, c.index[1], c.gen[1], 1), 5, 1, "ab", 2, &r), 0);
  MF_ASSERT_EQ(r.h.status, MAYFLY_EMOVED);
  /* A put, acknowledged once the tail has it. */
  CU_ASSERT_EQUAL_FATAL(
      seq_write(head, kv_hdr(WIRE_OP_KV_PUT, c.index[0], c.gen[0], 1), 5, 1, "ab", 2, &r), 0);
  MF_ASSERT_EQ(r.h.status, 0);
  /* Reads at the tail only. */
  CU_ASSERT_EQUAL_FATAL(
      mf_raw_roundtrip(head, kv_hdr(WIRE_OP_KV_GET, c.index[0], c.gen[0], 1), NULL, 0, "a", 1, &r), 0);
  MF_ASSERT_EQ(r.h.status, MAYFLY_EMOVED);
  CU_ASSERT_EQUAL_FATAL(
      mf_raw_roundtrip(tail, kv_hdr(WIRE_OP_KV_GET, c.index[1], c.gen[1], 1), NULL, 0, "a", 1, &r), 0);
  MF_ASSERT_EQ(r.h.status, 0);
  CU_ASSERT(r.h.payload_len == 1 && r.payload[0] == 'b');
  /* The retry of seq 1 with another value is not applied again. */
  CU_ASSERT_EQUAL_FATAL(
      seq_write(head, kv_hdr(WIRE_OP_KV_PUT, c.index[0], c.gen[0], 1), 5, 1, "aX", 2, &r), 0);
  MF_ASSERT_EQ(r.h.status, 0);
  CU_ASSERT_EQUAL_FATAL(
      mf_raw_roundtrip(tail, kv_hdr(WIRE_OP_KV_GET, c.index[1], c.gen[1], 1), NULL, 0, "a", 1, &r), 0);
  CU_ASSERT(r.h.payload_len == 1 && r.payload[0] == 'b');
  g_object_unref(p);

  /* A queue: a push retried adds one item. */
  MayflyPartition *q = first_part("/chq");
  chain_t qc;
  CU_ASSERT_FATAL(q != NULL && chain_of(q, &qc) == 0 && qc.n == 2);
  int qh = mf_raw_connect_to(qc.addr[0], 10), qt = mf_raw_connect_to(qc.addr[1], 10);
  CU_ASSERT_FATAL(qh >= 0 && qt >= 0);
  wire_hdr_t push = {.opcode = WIRE_OP_Q_PUSH, .block_index = (uint32_t)qc.index[0],
                     .generation = (uint64_t)qc.gen[0]};
  for (int i = 0; i < 2; i++) {
    CU_ASSERT_EQUAL_FATAL(seq_write(qh, push, 5, 2, "item", 4, &r), 0);
    MF_ASSERT_EQ(r.h.status, 0);
  }
  wire_hdr_t len = {.opcode = WIRE_OP_Q_LEN, .block_index = (uint32_t)qc.index[1],
                    .generation = (uint64_t)qc.gen[1]};
  CU_ASSERT_EQUAL_FATAL(mf_raw_roundtrip(qt, len, NULL, 0, NULL, 0, &r), 0);
  MF_ASSERT_EQ(r.h.status, 0);
  MF_ASSERT_EQ(r.h.arg0, 1);
  close(qh);
  close(qt);
  g_object_unref(q);

  /* Kill the kv chain's tail: the head becomes the whole chain. */
  int victim = -1;
  for (int i = 0; i < 3; i++) {
    if (ms[i] != NULL && strcmp(ms[i]->address, c.addr[1]) == 0) victim = i;
  }
  CU_ASSERT_FATAL(victim >= 0);
  mf_kill(ms[victim]);
  ms[victim] = NULL;
  close(tail);
  /* Within the heartbeat timeout (1.5 s) and a generous margin. */
  gint64 deadline = g_get_monotonic_time() + 15 * G_TIME_SPAN_SECOND;
  int ok = 0;
  for (uint64_t seq = 2; g_get_monotonic_time() < deadline; seq++) {
    if (seq_write(head, kv_hdr(WIRE_OP_KV_PUT, c.index[0], c.gen[0], 1), 5, seq, "cd", 2, &r) !=
        0) {
      break;
    }
    if (r.h.status == 0) {
      ok = 1;
      break;
    }
    mf_sleep_ms(100);
  }
  CU_ASSERT_FATAL(ok);
  /* Every acknowledged write at the new tail (the head). */
  MayflyPartition *p2 = first_part("/chkv");
  chain_t c2;
  CU_ASSERT_FATAL(p2 != NULL && chain_of(p2, &c2) == 0);
  CU_ASSERT(strcmp(c2.addr[c2.n - 1], c.addr[1]) != 0);
  int nt = mf_raw_connect_to(c2.addr[c2.n - 1], 10);
  CU_ASSERT_FATAL(nt >= 0);
  const char *keys[2] = {"a", "c"};
  const char vals[2] = {'b', 'd'};
  for (int k = 0; k < 2; k++) {
    CU_ASSERT_EQUAL_FATAL(mf_raw_roundtrip(nt, kv_hdr(WIRE_OP_KV_GET, c2.index[c2.n - 1],
                                               c2.gen[c2.n - 1], 1),
                                    NULL, 0, keys[k], 1, &r),
                          0);
    MF_ASSERT_EQ(r.h.status, 0);
    CU_ASSERT(r.h.payload_len == 1 && r.payload[0] == vals[k]);
  }
  close(nt);
  close(head);
  g_object_unref(p2);
}

int main(int argc, char **argv) {
  int chains = argc > 1 && strcmp(argv[1], "chains") == 0;
  signal(SIGPIPE, SIG_IGN);
  if (start_cluster(chains) != 0) {
    fprintf(stderr, "cannot start the cluster\n");
    return 1;
  }
  if (chains) {
    if (create("/chkv", MAYFLY_NODE_KIND_KV, 2) != 0 ||
        create("/chq", MAYFLY_NODE_KIND_QUEUE, 2) != 0) {
      fprintf(stderr, "create with replicas 2: %s\n", mf_last_error());
      return 1;
    }
    MayflyPartition *p = first_part("/chkv");
    chain_t c;
    int have = p != NULL && chain_of(p, &c) == 0 && c.n == 2;
    if (p != NULL) g_object_unref(p);
    if (!have) {
      fprintf(stderr, "the directory built no chain: a namespace with replicas 2 has "
              "partitions of one block\n");
      return 1;
    }
    static const mf_test_t tests[] = {
        {"roles, dedup and a dead tail", test_roles_dedup_and_a_dead_tail}, {NULL, NULL}};
    return mf_test_run("chain_ms_chains", NULL, NULL, tests);
  }
  static const mf_test_t tests[] = {
      {"a forward for a block not in a chain is moved",
       test_a_forward_for_a_block_not_in_a_chain_is_moved},
      {"a forward with a bad MAC is refused and counted",
       test_a_forward_with_a_bad_mac_is_refused_and_counted},
      {"a write with a sequence record to an R = 1 block is served",
       test_a_write_with_a_sequence_record_to_an_r1_block_is_served},
      {NULL, NULL}};
  return mf_test_run("chain_ms", NULL, NULL, tests);
}
