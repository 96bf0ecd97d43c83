/*
 * Tests of memserver/link.c, the memory server's async link to another
 * memory server, against a real mayfly-memserver (frames it answers) and a
 * listener of the test's own on loopback (a peer that accepts, reads and
 * hangs up), all on one libuv loop in this process.
 *
 * Asserted: 200 pipelined frames are each answered exactly once with the
 * peer's reply; past max_queued a send is refused MAYFLY_EAGAIN and
 * on_drain comes once the replies arrived; a connection that drops fails
 * every unanswered frame with MAYFLY_EIO and the next send connects again
 * (the listener sees a second connection); a port nobody listens on fails
 * the frame (ECONNREFUSED); ms_link_close fails what is pending with
 * MAYFLY_EIO.
 */
#include <glib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"
#include "common/log.h"
#include "common/wire.h"
#include "harness.h"
#include "memserver/link.h"
#include "mf_test.h"

static uv_loop_t loop;
static mf_daemon_t *dir, *ms;

/* --- outcomes --- */

typedef struct {
  int calls;
  int status;      /* the last callback's */
  int peer_status; /* the reply's status when status is 0 */
} outcome_t;

static int outstanding;

static void on_reply(void *ud, int status, const wire_hdr_t *reply, const uint8_t *payload) {
  (void)payload;
  outcome_t *o = ud;
  o->calls++;
  o->status = status;
  o->peer_status = status == 0 ? reply->status : 1;
  outstanding--;
}

/* Runs the loop until every frame sent got its callback (or 10 s). */
static void wait_all(void) {
  gint64 until = g_get_monotonic_time() + 10 * G_TIME_SPAN_SECOND;
  while (outstanding > 0 && g_get_monotonic_time() < until) uv_run(&loop, UV_RUN_ONCE);
}

static int drained;
static void on_drain(void *ud) {
  (void)ud;
  drained++;
}

static wire_hdr_t ping(void) {
  return (wire_hdr_t){.opcode = WIRE_OP_PING};
}

/* --- a peer that hangs up: accepts, reads one chunk, closes --- */

static uv_tcp_t listener;
static int accepted;
static int hangup_port;

static void peer_closed(uv_handle_t *h) {
  g_free(h);
}

static void peer_alloc(uv_handle_t *h, size_t n, uv_buf_t *b) {
  (void)h;
  static char buf[65536];
  (void)n;
  *b = uv_buf_init(buf, sizeof buf);
}

static void peer_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  if (n != 0 && !uv_is_closing((uv_handle_t *)s)) uv_close((uv_handle_t *)s, peer_closed);
}

static void on_accept(uv_stream_t *srv, int status) {
  if (status != 0) return;
  uv_tcp_t *c = g_new0(uv_tcp_t, 1);
  uv_tcp_init(&loop, c);
  if (uv_accept(srv, (uv_stream_t *)c) == 0) {
    accepted++;
    uv_read_start((uv_stream_t *)c, peer_alloc, peer_read);
  } else {
    uv_close((uv_handle_t *)c, peer_closed);
  }
}

/* --- tests --- */

static void test_pipelined_frames_are_each_answered_once(void) {
  ms_link_config_t cfg = {0};
  ms_link_t *l = ms_link_new(&loop, ms->address, &cfg);
  enum { N = 200 };
  static outcome_t o[N];
  memset(o, 0, sizeof o);
  wire_hdr_t h = ping();
  for (int i = 0; i < N; i++) {
    MF_ASSERT_EQ(ms_link_send(l, &h, NULL, 0, on_reply, &o[i]), 0);
    outstanding++;
  }
  MF_ASSERT_EQ(ms_link_pending(l), N);
  wait_all();
  for (int i = 0; i < N; i++) {
    MF_ASSERT_EQ(o[i].calls, 1);
    MF_ASSERT_EQ(o[i].status, 0);
    MF_ASSERT_EQ(o[i].peer_status, 0);
  }
  MF_ASSERT_EQ(ms_link_pending(l), 0);
  MF_ASSERT_EQ(ms_link_queued(l), 0);
  CU_ASSERT(ms_link_connected(l));
  ms_link_close(l);
  uv_run(&loop, UV_RUN_NOWAIT);
}

static void test_the_queued_bytes_are_bounded(void) {
  drained = 0;
  /* Room for 4 frames of 56 + 100 bytes. */
  ms_link_config_t cfg = {.max_queued = 4 * (WIRE_HEADER_SIZE + 100), .on_drain = on_drain};
  ms_link_t *l = ms_link_new(&loop, ms->address, &cfg);
  static outcome_t o[8];
  memset(o, 0, sizeof o);
  uint8_t payload[100] = {0};
  wire_hdr_t h = ping();
  int accepted_n = 0, refused = 0;
  for (int i = 0; i < 8; i++) {
    int rc = ms_link_send(l, &h, payload, sizeof payload, on_reply, &o[i]);
    if (rc == 0) {
      accepted_n++;
      outstanding++;
    } else {
      MF_ASSERT_EQ(rc, MAYFLY_EAGAIN);
      refused++;
    }
  }
  MF_ASSERT_EQ(accepted_n, 4);
  MF_ASSERT_EQ(refused, 4);
  CU_ASSERT(ms_link_queued(l) <= 4 * (WIRE_HEADER_SIZE + 100));
  wait_all();
  MF_ASSERT_EQ(drained, 1);
  for (int i = 0; i < 4; i++) MF_ASSERT_EQ(o[i].calls, 1);
  for (int i = 4; i < 8; i++) MF_ASSERT_EQ(o[i].calls, 0);
  ms_link_close(l);
  uv_run(&loop, UV_RUN_NOWAIT);
}

static void test_a_dropped_connection_fails_pending_and_the_next_send_reconnects(void) {
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", hangup_port);
  ms_link_config_t cfg = {0};
  ms_link_t *l = ms_link_new(&loop, addr, &cfg);
  static outcome_t o[10];
  memset(o, 0, sizeof o);
  wire_hdr_t h = ping();
  for (int i = 0; i < 10; i++) {
    MF_ASSERT_EQ(ms_link_send(l, &h, NULL, 0, on_reply, &o[i]), 0);
    outstanding++;
  }
  wait_all();
  for (int i = 0; i < 10; i++) {
    MF_ASSERT_EQ(o[i].calls, 1);
    MF_ASSERT_EQ(o[i].status, MAYFLY_EIO);
  }
  MF_ASSERT_EQ(accepted, 1);
  outcome_t again = {0};
  MF_ASSERT_EQ(ms_link_send(l, &h, NULL, 0, on_reply, &again), 0);
  outstanding++;
  wait_all();
  MF_ASSERT_EQ(again.calls, 1);
  MF_ASSERT_EQ(again.status, MAYFLY_EIO);
  MF_ASSERT_EQ(accepted, 2);
  ms_link_close(l);
  uv_run(&loop, UV_RUN_NOWAIT);
}

static void test_a_port_nobody_listens_on_fails_the_frame(void) {
  /* Bind a port, then close it: nobody listens there. */
  uv_tcp_t t;
  uv_tcp_init(&loop, &t);
  struct sockaddr_in sa;
  uv_ip4_addr("127.0.0.1", 0, &sa);
  uv_tcp_bind(&t, (struct sockaddr *)&sa, 0);
  struct sockaddr_storage ss;
  int len = sizeof ss;
  uv_tcp_getsockname(&t, (struct sockaddr *)&ss, &len);
  int port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
  ms_link_config_t cfg = {0};
  ms_link_t *l = ms_link_new(&loop, addr, &cfg);
  outcome_t o = {0};
  wire_hdr_t h = ping();
  MF_ASSERT_EQ(ms_link_send(l, &h, NULL, 0, on_reply, &o), 0);
  MF_ASSERT_EQ(o.calls, 0); /* never from within the send */
  outstanding++;
  wait_all();
  MF_ASSERT_EQ(o.calls, 1);
  MF_ASSERT_EQ(o.status, MAYFLY_ECONNREFUSED);
  ms_link_close(l);
  uv_run(&loop, UV_RUN_NOWAIT);
}

static void test_closing_fails_what_is_pending(void) {
  ms_link_config_t cfg = {0};
  ms_link_t *l = ms_link_new(&loop, ms->address, &cfg);
  outcome_t o[3] = {{0}};
  wire_hdr_t h = ping();
  for (int i = 0; i < 3; i++) MF_ASSERT_EQ(ms_link_send(l, &h, NULL, 0, on_reply, &o[i]), 0);
  ms_link_close(l);
  for (int i = 0; i < 3; i++) {
    MF_ASSERT_EQ(o[i].calls, 1);
    MF_ASSERT_EQ(o[i].status, MAYFLY_EIO);
  }
  uv_run(&loop, UV_RUN_NOWAIT);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  mf_log_init("test_link", MF_LOG_WARN);
  dir = mf_start_directory(NULL);
  if (dir == NULL) return 1;
  ms = mf_start_memserver(dir, 4, "1MiB", NULL);
  if (ms == NULL) return 1;
  uv_loop_init(&loop);
  uv_tcp_init(&loop, &listener);
  struct sockaddr_in sa;
  uv_ip4_addr("127.0.0.1", 0, &sa);
  if (uv_tcp_bind(&listener, (struct sockaddr *)&sa, 0) != 0 ||
      uv_listen((uv_stream_t *)&listener, 16, on_accept) != 0) {
    return 1;
  }
  struct sockaddr_storage ss;
  int len = sizeof ss;
  uv_tcp_getsockname(&listener, (struct sockaddr *)&ss, &len);
  hangup_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  static const mf_test_t tests[] = {
      {"pipelined frames are each answered once", test_pipelined_frames_are_each_answered_once},
      {"the queued bytes are bounded", test_the_queued_bytes_are_bounded},
      {"a dropped connection fails pending and the next send reconnects",
       test_a_dropped_connection_fails_pending_and_the_next_send_reconnects},
      {"a port nobody listens on fails the frame", test_a_port_nobody_listens_on_fails_the_frame},
      {"closing fails what is pending", test_closing_fails_what_is_pending},
      {NULL, NULL}};
  int rc = mf_test_run("link", NULL, NULL, tests);
  uv_close((uv_handle_t *)&listener, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return rc;
}
