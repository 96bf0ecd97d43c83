/*
 * Unit tests for the client's write sequence numbers (client/seqs.c) and the
 * sequence record a replicated request carries (common/conn.c, issue 12).
 *
 * What a chain head relies on: a client's id is random and never 0; seqs go
 * up from 1, one per write, and n taken at once are consecutive; `acked` is
 * the lowest seq still in flight (the next one when none is), so every seq
 * below it has had its answer and its stored reply may be dropped, and it
 * never passes a seq in flight, whatever the order writes end in and however
 * many threads write. The record is client id, seq, acked as little-endian
 * u64s. On the wire a call with a record goes out with WIRE_F_SEQ and a
 * metadata section of the capability then the record (cap_len counts both);
 * a call without one goes out byte for byte as before (no flag, cap_len the
 * capability's): what the listening socket of the test receives is compared
 * with frames encoded by hand.
 */
#include <arpa/inet.h>
#include <glib.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client/seqs.h"
#include "common/conn.h"
#include "common/error.h"
#include "common/wire.h"
#include "mf_test.h"

static void test_a_fresh_client_has_a_nonzero_random_id_and_acked_1(void) {
  mf_seqs_t a, b;
  mf_seqs_init(&a);
  mf_seqs_init(&b);
  CU_ASSERT(a.client_id != 0);
  CU_ASSERT(b.client_id != 0);
  CU_ASSERT(a.client_id != b.client_id); /* 2^-64 to fail by chance */
  MF_ASSERT_EQ(mf_seqs_acked(&a), 1);    /* nothing in flight: the next seq */
  mf_seqs_clear(&a);
  mf_seqs_clear(&b);
}

static void test_seqs_go_up_from_1_and_a_batch_takes_consecutive_ones(void) {
  mf_seqs_t s;
  mf_seqs_init(&s);
  MF_ASSERT_EQ(mf_seqs_begin(&s, 1), 1);
  MF_ASSERT_EQ(mf_seqs_begin(&s, 1), 2);
  MF_ASSERT_EQ(mf_seqs_begin(&s, 5), 3); /* 3..7 */
  MF_ASSERT_EQ(mf_seqs_begin(&s, 1), 8);
  for (uint64_t q = 1; q <= 8; q++) mf_seqs_end(&s, q);
  MF_ASSERT_EQ(mf_seqs_acked(&s), 9);
  mf_seqs_clear(&s);
}

static void test_acked_is_the_lowest_seq_in_flight_whatever_order_they_end_in(void) {
  mf_seqs_t s;
  mf_seqs_init(&s);
  uint64_t first = mf_seqs_begin(&s, 4); /* 1, 2, 3, 4 in flight */
  MF_ASSERT_EQ(first, 1);
  MF_ASSERT_EQ(mf_seqs_acked(&s), 1);
  mf_seqs_end(&s, 3);
  MF_ASSERT_EQ(mf_seqs_acked(&s), 1); /* 1 still in flight */
  mf_seqs_end(&s, 2);
  MF_ASSERT_EQ(mf_seqs_acked(&s), 1);
  mf_seqs_end(&s, 1);
  MF_ASSERT_EQ(mf_seqs_acked(&s), 4); /* past 1, 2 and 3 at once; 4 in flight */
  MF_ASSERT_EQ(mf_seqs_begin(&s, 1), 5);
  mf_seqs_end(&s, 5);
  MF_ASSERT_EQ(mf_seqs_acked(&s), 4);
  mf_seqs_end(&s, 4);
  MF_ASSERT_EQ(mf_seqs_acked(&s), 6); /* none in flight: the next seq */
  MF_ASSERT_EQ(g_hash_table_size(s.ended), 0);
  mf_seqs_end(&s, 0); /* a call that never took one: nothing */
  MF_ASSERT_EQ(mf_seqs_acked(&s), 6);
  mf_seqs_clear(&s);
}

static void test_the_record_is_id_seq_acked_little_endian(void) {
  mf_seqs_t s;
  mf_seqs_init(&s);
  uint64_t q1 = mf_seqs_begin(&s, 1), q2 = mf_seqs_begin(&s, 1);
  uint8_t rec[WIRE_SEQ_SIZE];
  mf_seqs_record(&s, q2, rec);
  wire_seq_t r;
  wire_seq_get(rec, &r);
  CU_ASSERT(r.client_id == s.client_id);
  MF_ASSERT_EQ(r.seq, q2);
  MF_ASSERT_EQ(r.acked, q1); /* q1 is still in flight */
  /* Byte order: the id's lowest byte first, then the seq's. */
  MF_ASSERT_EQ(rec[0], s.client_id & 0xff);
  MF_ASSERT_EQ(rec[7], s.client_id >> 56);
  MF_ASSERT_EQ(rec[8], q2);
  MF_ASSERT_EQ(rec[16], q1);
  mf_seqs_end(&s, q1);
  mf_seqs_record(&s, q2, rec);
  wire_seq_get(rec, &r);
  MF_ASSERT_EQ(r.acked, q2); /* a retry's record carries the watermark of its send */
  mf_seqs_end(&s, q2);
  mf_seqs_clear(&s);
}

/* ---- many threads: acked never passes a seq in flight ---- */

#define THREADS 4
#define ROUNDS 20000

typedef struct {
  mf_seqs_t *s;
  int violations;
  unsigned seed;
} worker_t;

static gpointer worker(gpointer data) {
  worker_t *w = data;
  GRand *rng = g_rand_new_with_seed(w->seed);
  uint64_t held[3];
  for (int r = 0; r < ROUNDS; r++) {
    /* Up to three writes in flight, ended in a random order. */
    int n = g_rand_int_range(rng, 1, 4);
    for (int k = 0; k < n; k++) held[k] = mf_seqs_begin(w->s, 1);
    for (int left = n; left > 0; left--) {
      uint64_t acked = mf_seqs_acked(w->s);
      for (int k = 0; k < left; k++) {
        if (acked > held[k]) w->violations++;
      }
      int pick = g_rand_int_range(rng, 0, left);
      mf_seqs_end(w->s, held[pick]);
      held[pick] = held[left - 1];
    }
  }
  g_rand_free(rng);
  return NULL;
}

static void test_acked_never_passes_a_seq_in_flight_across_threads(void) {
  mf_seqs_t s;
  mf_seqs_init(&s);
  worker_t w[THREADS];
  GThread *t[THREADS];
  for (int i = 0; i < THREADS; i++) {
    w[i] = (worker_t){.s = &s, .seed = 17u + (unsigned)i};
    t[i] = g_thread_new("seqs", worker, &w[i]);
  }
  for (int i = 0; i < THREADS; i++) {
    g_thread_join(t[i]);
    MF_ASSERT_EQ(w[i].violations, 0);
  }
  /* Everything ended: acked is the next seq and nothing waits in the set. */
  MF_ASSERT_EQ(mf_seqs_acked(&s), s.next);
  MF_ASSERT_EQ(g_hash_table_size(s.ended), 0);
  CU_ASSERT(s.next > (uint64_t)THREADS * ROUNDS);
  mf_seqs_clear(&s);
}

/* ---- the frames conn.c sends ---- */

/* A listening socket on loopback; *port receives its port. */
static int listen_loopback(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 4) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  *port = ntohs(a.sin_port);
  return fd;
}

static int recv_all(int fd, void *buf, size_t len) {
  uint8_t *p = buf;
  while (len > 0) {
    ssize_t r = recv(fd, p, len, 0);
    if (r <= 0) return -1;
    p += r;
    len -= (size_t)r;
  }
  return 0;
}

/* Sends `call` through a pool to a socket of the test, reads exactly the
 * bytes `want` (the frame as it must be) and compares, then answers the
 * request so the call completes with 0. */
static void send_and_compare(mf_call_t *call, const uint8_t *want, size_t want_len) {
  int port = 0;
  int lfd = listen_loopback(&port);
  CU_ASSERT_FATAL(lfd >= 0);
  char addr[64];
  g_snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
  mf_pool_t *pool = mf_pool_new(1000);
  int64_t deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
  MF_ASSERT_EQ(mf_call_start(pool, addr, call, deadline), 0);
  int fd = accept(lfd, NULL, NULL);
  CU_ASSERT_FATAL(fd >= 0);
  struct timeval tv = {.tv_sec = 5};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  uint8_t *got = g_malloc(want_len);
  MF_ASSERT_EQ(recv_all(fd, got, want_len), 0);
  /* The request id is the pool's: take it from what arrived. */
  wire_hdr_t h, eh;
  size_t flen = 0;
  MF_ASSERT_EQ(wire_parse(got, want_len, UINT32_MAX, &h, &flen), 0);
  MF_ASSERT_EQ(flen, want_len);
  uint8_t *expect = g_memdup2(want, want_len);
  MF_ASSERT_EQ(wire_parse(expect, want_len, UINT32_MAX, &eh, &flen), 0);
  eh.request_id = h.request_id;
  wire_encode(&eh, expect);
  CU_ASSERT(memcmp(got, expect, want_len) == 0);
  /* Nothing more than the frame was sent. */
  uint8_t extra;
  MF_ASSERT_EQ(recv(fd, &extra, 1, MSG_DONTWAIT), -1);
  wire_hdr_t rep = {.opcode = h.opcode, .flags = WIRE_F_REPLY, .request_id = h.request_id};
  uint8_t rb[WIRE_HEADER_SIZE];
  wire_encode(&rep, rb);
  MF_ASSERT_EQ(send(fd, rb, sizeof rb, 0), (ssize_t)sizeof rb);
  MF_ASSERT_EQ(mf_call_wait(call, deadline), 0);
  g_free(call->payload);
  g_free(got);
  g_free(expect);
  close(fd);
  close(lfd);
  mf_pool_free(pool);
}

/* The frame a request must be: header (cap_len = meta_len), metadata,
 * payload. */
static uint8_t *frame(const wire_hdr_t *h, const uint8_t *meta, size_t meta_len,
                      const char *payload, size_t *len) {
  size_t pl = strlen(payload);
  *len = WIRE_HEADER_SIZE + meta_len + pl;
  uint8_t *f = g_malloc(*len);
  wire_hdr_t hh = *h;
  hh.cap_len = (uint16_t)meta_len;
  hh.payload_len = (uint32_t)pl;
  wire_encode(&hh, f);
  memcpy(f + WIRE_HEADER_SIZE, meta, meta_len);
  memcpy(f + WIRE_HEADER_SIZE + meta_len, payload, pl);
  return f;
}

static void test_a_call_without_a_record_goes_out_as_before(void) {
  uint8_t cap[80];
  for (size_t i = 0; i < sizeof cap; i++) cap[i] = (uint8_t)(0xa0 + i);
  mf_call_t call = {0};
  call.req = (wire_hdr_t){.opcode = WIRE_OP_KV_PUT, .block_index = 7, .generation = 9,
                          .arg1 = 1234, .arg2 = 3};
  call.p1 = "key";
  call.l1 = 3;
  call.p2 = "value";
  call.l2 = 5;
  call.cap = cap;
  call.cap_len = sizeof cap;
  size_t len;
  wire_hdr_t want = call.req; /* no WIRE_F_SEQ, cap_len = the capability's */
  uint8_t *f = frame(&want, cap, sizeof cap, "keyvalue", &len);
  send_and_compare(&call, f, len);
  g_free(f);
}

static void test_a_call_with_a_record_sets_the_flag_and_appends_it_to_the_capability(void) {
  uint8_t cap[80];
  for (size_t i = 0; i < sizeof cap; i++) cap[i] = (uint8_t)(0x10 + i);
  mf_call_t call = {0};
  call.req = (wire_hdr_t){.opcode = WIRE_OP_Q_PUSH, .block_index = 3, .generation = 4};
  call.p1 = "item";
  call.l1 = 4;
  call.cap = cap;
  call.cap_len = sizeof cap;
  wire_seq_t rec = {.client_id = 0x1122334455667788ULL, .seq = 42, .acked = 40};
  wire_seq_put(call.seq, &rec);
  call.has_seq = 1;
  uint8_t meta[sizeof cap + WIRE_SEQ_SIZE];
  memcpy(meta, cap, sizeof cap);
  wire_seq_put(meta + sizeof cap, &rec);
  wire_hdr_t want = call.req;
  want.flags = WIRE_F_SEQ;
  size_t len;
  uint8_t *f = frame(&want, meta, sizeof meta, "item", &len);
  send_and_compare(&call, f, len);
  g_free(f);
  /* Without a capability (no cluster key) the section is the record alone. */
  mf_call_t bare = {0};
  bare.req = (wire_hdr_t){.opcode = WIRE_OP_KV_DEL, .block_index = 1, .generation = 2};
  bare.p1 = "k";
  bare.l1 = 1;
  wire_seq_put(bare.seq, &rec);
  bare.has_seq = 1;
  want = bare.req;
  want.flags = WIRE_F_SEQ;
  f = frame(&want, meta + sizeof cap, WIRE_SEQ_SIZE, "k", &len);
  send_and_compare(&bare, f, len);
  g_free(f);
}

int main(void) {
  static const mf_test_t tests[] = {
      {"a fresh client has a non-zero random id and acked 1",
       test_a_fresh_client_has_a_nonzero_random_id_and_acked_1},
      {"seqs go up from 1 and a batch takes consecutive ones",
       test_seqs_go_up_from_1_and_a_batch_takes_consecutive_ones},
      {"acked is the lowest seq in flight whatever order they end in",
       test_acked_is_the_lowest_seq_in_flight_whatever_order_they_end_in},
      {"the record is id, seq, acked, little-endian", test_the_record_is_id_seq_acked_little_endian},
      {"acked never passes a seq in flight across threads",
       test_acked_never_passes_a_seq_in_flight_across_threads},
      {"a call without a record goes out as before", test_a_call_without_a_record_goes_out_as_before},
      {"a call with a record sets WIRE_F_SEQ and appends it to the capability",
       test_a_call_with_a_record_sets_the_flag_and_appends_it_to_the_capability},
      {NULL, NULL}};
  return mf_test_run("seqs", NULL, NULL, tests);
}
