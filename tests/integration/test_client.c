/*
 * Integration tests of the client's promises (libmayfly over common/conn.c
 * and common/ctl.c): every call that talks to a server ends by its timeout,
 * a stalled or unreachable server stalls nobody else, a reply never makes
 * the client reserve more than the call can legitimately get, and a
 * connection the server closed while idle is replaced transparently.
 *
 * Real daemons where the real thing can show the behaviour; small fake
 * servers (threads of this process with a listening socket on loopback)
 * where a real server cannot misbehave on purpose. The blackhole test builds
 * its own network (a namespace with two veth pairs; needs root) and runs as
 * a separate CTest entry, `test_client blackhole`, reported as skipped when
 * the namespace cannot be made.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <glib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "client/mayfly.h"
#include "common/wire.h"
#include "harness.h"
#include "mf_test.h"

/* Slack allowed past a timeout: scheduling on a loaded two-core VM, a
 * receive slice, sanitizers. A hang is many times longer. */
#define MARGIN_MS 1500

static int64_t now_ms(void) {
  return g_get_monotonic_time() / 1000;
}

/* A field of /proc/self/status in KiB ("VmSize", "VmPeak"). */
static int64_t vm_kib(const char *field) {
  char *txt = NULL;
  int64_t v = -1;
  if (!g_file_get_contents("/proc/self/status", &txt, NULL, NULL)) return -1;
  char *line = strstr(txt, field);
  if (line != NULL) v = strtoll(line + strlen(field) + 1, NULL, 10);
  g_free(txt);
  return v;
}

static mayfly_client_t *client_for(const char *address, int timeout_ms, int connect_ms) {
  mayfly_options_t o = {.timeout_ms = timeout_ms, .connect_timeout_ms = connect_ms};
  mayfly_client_t *c = NULL;
  int rc = mayfly_connect(address, &o, &c);
  MF_ASSERT_EQ(rc, 0);
  return c;
}

/* The data-plane address of a namespace's first partition (g_free). */
static char *server_of(mayfly_client_t *c, const char *path) {
  mayfly_stat_t *st = NULL;
  if (mayfly_stat(c, path, &st) != 0) return NULL;
  char *a = st->npartitions > 0 ? g_strdup(st->partitions[0].server_address) : NULL;
  mayfly_stat_free(st);
  return a;
}

/* ---- readers: calls to healthy servers, counted while a window is open ---- */

typedef struct reader {
  mayfly_ns_t *ns;
  int timeout_ms;
  gint stop;
  gint window;       /* set by the test while the stalled call runs */
  int ok_in_window;  /* gets that began and ended inside the window */
  int failures;
  int64_t max_ms;    /* the slowest get */
  GThread *thread;
} reader_t;

static gpointer reader_main(gpointer data) {
  reader_t *r = data;
  while (!g_atomic_int_get(&r->stop)) {
    int in = g_atomic_int_get(&r->window);
    int64_t t0 = now_ms();
    void *v = NULL;
    size_t vl = 0;
    int rc = mayfly_kv_get(r->ns, "k", 1, &v, &vl);
    int64_t took = now_ms() - t0;
    if (took > r->max_ms) r->max_ms = took;
    if (rc != 0 || vl != 1 || memcmp(v, "v", 1) != 0) {
      r->failures++;
    } else if (in && g_atomic_int_get(&r->window)) {
      r->ok_in_window++;
    }
    mayfly_free(v);
    g_usleep(2000);
  }
  return NULL;
}

static void readers_start(reader_t *rs, int n, mayfly_ns_t *ns, int timeout_ms) {
  for (int i = 0; i < n; i++) {
    rs[i] = (reader_t){.ns = ns, .timeout_ms = timeout_ms};
    rs[i].thread = g_thread_new("reader", reader_main, &rs[i]);
  }
}

static void readers_window(reader_t *rs, int n, int open) {
  for (int i = 0; i < n; i++) g_atomic_int_set(&rs[i].window, open);
}

/* Stops the readers and checks that each of them kept succeeding while the
 * window was open, every get within its own timeout. */
static void readers_check(reader_t *rs, int n) {
  for (int i = 0; i < n; i++) {
    g_atomic_int_set(&rs[i].stop, 1);
    g_thread_join(rs[i].thread);
    fprintf(stderr, "  reader %d: %d gets in the window, %d failures, slowest %lld ms\n", i,
            rs[i].ok_in_window, rs[i].failures, (long long)rs[i].max_ms);
    MF_ASSERT_EQ(rs[i].failures, 0);
    CU_ASSERT(rs[i].ok_in_window >= 20);
    CU_ASSERT(rs[i].max_ms <= rs[i].timeout_ms + MARGIN_MS);
  }
}

/* ---- a call to the stalled server on the same connection, from a thread ---- */

typedef struct side_call {
  mayfly_ns_t *ns;
  int file; /* a file read, else a kv get */
  int delay_ms;
  int rc;
  int64_t took_ms;
  GThread *thread;
} side_call_t;

static gpointer side_read_main(gpointer data) {
  side_call_t *s = data;
  g_usleep((gulong)s->delay_ms * 1000);
  int64_t t0 = now_ms();
  if (s->file) {
    char buf[16];
    int64_t n = mayfly_file_read(s->ns, 0, buf, sizeof buf);
    s->rc = n < 0 ? (int)n : 0;
  } else {
    void *v = NULL;
    size_t vl;
    s->rc = mayfly_kv_get(s->ns, "k", 1, &v, &vl);
    mayfly_free(v);
  }
  s->took_ms = now_ms() - t0;
  return NULL;
}

/* ---- a put to a stopped server ---- */

#define STALL_TIMEOUT_MS 2000
#define BIG_WRITE (48u << 20) /* more than both sockets' buffers can take */

static void test_a_large_put_to_a_stopped_server_times_out_and_stalls_nobody(void) {
  mf_daemon_t *dir = mf_start_directory("--heartbeat-timeout-ms", "60000", NULL);
  CU_ASSERT_FATAL(dir != NULL);
  mf_daemon_t *slow = mf_start_memserver(dir, 1, "64MiB", NULL);
  CU_ASSERT_FATAL(slow != NULL);
  mayfly_client_t *c = client_for(dir->address, STALL_TIMEOUT_MS, 1000);
  mayfly_ns_t *big = NULL, *kv = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, "/stall-big", MAYFLY_KIND_FILE, NULL, &big), 0);
  /* The next namespace goes to the emptier server: the second one. */
  mf_daemon_t *fast = mf_start_memserver(dir, 4, "64KiB", NULL);
  CU_ASSERT_FATAL(fast != NULL);
  MF_ASSERT_EQ(mayfly_mount(c, "/stall-kv", MAYFLY_KIND_KV, NULL, &kv), 0);
  char *a_big = server_of(c, "/stall-big"), *a_kv = server_of(c, "/stall-kv");
  CU_ASSERT_FATAL(a_big != NULL && a_kv != NULL);
  CU_ASSERT_STRING_EQUAL(a_big, slow->address);
  CU_ASSERT_STRING_EQUAL(a_kv, fast->address);
  MF_ASSERT_EQ(mayfly_file_write(big, 0, "hello", 5), 0); /* the connection is up */
  MF_ASSERT_EQ(mayfly_kv_put(kv, "k", 1, "v", 1), 0);

  reader_t rs[2];
  readers_start(rs, 2, kv, STALL_TIMEOUT_MS);
  uint8_t *buf = g_malloc(BIG_WRITE);
  memset(buf, 'x', BIG_WRITE);
  mf_pause(slow);
  /* A small read on the same connection while the put is stuck sending. */
  side_call_t side = {.ns = big, .file = 1, .delay_ms = 300};
  side.thread = g_thread_new("side", side_read_main, &side);
  readers_window(rs, 2, 1);
  int64_t t0 = now_ms();
  int rc = mayfly_file_write(big, 0, buf, BIG_WRITE);
  int64_t took = now_ms() - t0;
  readers_window(rs, 2, 0);
  g_thread_join(side.thread);
  fprintf(stderr, "  put of %u MiB: %s after %lld ms; side read: %s after %lld ms\n",
          BIG_WRITE >> 20, mayfly_strerror(rc), (long long)took, mayfly_strerror(side.rc),
          (long long)side.took_ms);
  MF_ASSERT_EQ(rc, MAYFLY_ETIMEDOUT);
  CU_ASSERT(took <= STALL_TIMEOUT_MS + MARGIN_MS);
  MF_ASSERT_EQ(side.rc, MAYFLY_ETIMEDOUT);
  CU_ASSERT(side.took_ms <= STALL_TIMEOUT_MS + MARGIN_MS);
  readers_check(rs, 2);

  /* Back up: the next call reconnects and works. */
  mf_resume(slow);
  char back[5] = {0};
  MF_ASSERT_EQ(mayfly_file_write(big, 0, "again", 5), 0);
  MF_ASSERT_EQ(mayfly_file_read(big, 0, back, 5), 5);
  CU_ASSERT(memcmp(back, "again", 5) == 0);

  g_free(buf);
  g_free(a_big);
  g_free(a_kv);
  mayfly_unmount(big);
  mayfly_unmount(kv);
  mayfly_disconnect(c);
  mf_stop(fast);
  mf_stop(slow);
  mf_stop(dir);
}

/* ---- fake servers ---- */

typedef enum {
  FAKE_HUGE_REPLY,       /* data: every reply claims a 4 GiB payload, never sent */
  FAKE_CLOSE_AFTER_ONE,  /* data: answers one request ("v"), then closes */
  FAKE_DIR_HUGE_FRAME,   /* control: answers with a 4 GB frame length */
  FAKE_DIR_TRICKLE,      /* control: a 64 MiB frame length, 1 KiB of it, then silence */
} fake_mode_t;

typedef struct fake {
  fake_mode_t mode;
  int lfd;
  char address[64];
  gint stop;
  gint accepts;
  gint baited;       /* replies that made a claim */
  int64_t vm_before; /* VmSize when the first claim went out (KiB) */
  int64_t vm_during; /* VmSize 300 ms later, while the client digests it */
  GThread *thread;
} fake_t;

/* Notes the process's size around the first bait. */
static void fake_baited(fake_t *f) {
  if (g_atomic_int_add(&f->baited, 1) == 0) {
    g_usleep(300 * 1000);
    f->vm_during = vm_kib("VmSize");
  }
}

/* Serves one connection until the peer closes or the test stops. */
static void fake_serve(fake_t *f, int fd) {
  GByteArray *in = g_byte_array_new();
  uint8_t tmp[65536];
  int replied = 0;
  while (!g_atomic_int_get(&f->stop)) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 100) <= 0) continue;
    ssize_t r = recv(fd, tmp, sizeof tmp, 0);
    if (r <= 0) break;
    if (f->mode == FAKE_DIR_HUGE_FRAME || f->mode == FAKE_DIR_TRICKLE) {
      if (replied++) continue; /* the rest of the request: ignored */
      f->vm_before = vm_kib("VmSize");
      uint32_t len = f->mode == FAKE_DIR_HUGE_FRAME ? 0xF0000000u : (64u << 20) - 1;
      uint8_t pre[4 + 1024] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                               (uint8_t)len};
      mf_send_all(fd, pre, f->mode == FAKE_DIR_TRICKLE ? sizeof pre : 4);
      fake_baited(f);
      continue;
    }
    g_byte_array_append(in, tmp, (guint)r);
    for (;;) {
      wire_hdr_t h;
      size_t flen;
      if (in->len < WIRE_HEADER_SIZE) break;
      int rc = wire_parse(in->data, in->len, 1u << 30, &h, &flen);
      if (rc == MAYFLY_EAGAIN) break;
      if (rc != 0) goto out;
      g_byte_array_remove_range(in, 0, (guint)flen);
      wire_hdr_t rep = {.opcode = h.opcode, .flags = WIRE_F_REPLY, .request_id = h.request_id,
                        .block_index = h.block_index, .generation = h.generation};
      uint8_t hdr[WIRE_HEADER_SIZE];
      if (f->mode == FAKE_HUGE_REPLY) {
        if (replied++ == 0) f->vm_before = vm_kib("VmSize");
        rep.payload_len = 0xFFF00000u; /* the 4.28 GB that a CLI once reserved */
        wire_encode(&rep, hdr);
        mf_send_all(fd, hdr, sizeof hdr);
        fake_baited(f);
      } else {
        rep.payload_len = h.opcode == WIRE_OP_KV_GET ? 1 : 0;
        wire_encode(&rep, hdr);
        mf_send_all(fd, hdr, sizeof hdr);
        if (rep.payload_len) mf_send_all(fd, "v", 1);
        goto out; /* FAKE_CLOSE_AFTER_ONE: done with this connection */
      }
    }
  }
out:
  g_byte_array_free(in, TRUE);
  close(fd);
}

static gpointer fake_main(gpointer data) {
  fake_t *f = data;
  while (!g_atomic_int_get(&f->stop)) {
    struct pollfd p = {.fd = f->lfd, .events = POLLIN};
    if (poll(&p, 1, 100) <= 0) continue;
    int fd = accept(f->lfd, NULL, NULL);
    if (fd < 0) continue;
    g_atomic_int_inc(&f->accepts);
    fake_serve(f, fd);
  }
  return NULL;
}

/* Listens on a free loopback port. */
static int listen_loopback(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof a;
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &sl) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  *port = ntohs(a.sin_port);
  return fd;
}

static fake_t *fake_start(fake_mode_t mode) {
  fake_t *f = g_new0(fake_t, 1);
  f->mode = mode;
  int port = 0;
  f->lfd = listen_loopback(&port);
  CU_ASSERT_FATAL(f->lfd >= 0);
  snprintf(f->address, sizeof f->address, "127.0.0.1:%d", port);
  f->thread = g_thread_new("fake", fake_main, f);
  return f;
}

static void fake_stop(fake_t *f) {
  g_atomic_int_set(&f->stop, 1);
  g_thread_join(f->thread);
  close(f->lfd);
  g_free(f);
}

/* Waits (bounded) until the fake has measured the process after its bait. */
static void fake_wait_measured(fake_t *f) {
  for (int i = 0; i < 500 && f->vm_during == 0; i++) g_usleep(10 * 1000);
  CU_ASSERT(f->vm_during > 0);
}

/* Runs the CLI against `directory` with its address space capped at 2 GiB
 * (a build without sanitizers: their shadow memory needs terabytes of
 * address space). Returns the exit status, or -1 when it died of a signal. */
#if defined(__SANITIZE_ADDRESS__)
#define CAP_CLI 0
#else
#define CAP_CLI 1
#endif
static void cap_address_space(gpointer data) {
  (void)data;
  if (CAP_CLI) {
    struct rlimit r = {2ull << 30, 2ull << 30};
    setrlimit(RLIMIT_AS, &r);
  }
}

static int cli_capped(const char *directory, char **err, const char *a1, const char *a2,
                      const char *a3) {
  char *bin = g_strdup(mf_bin("client/mayfly"));
  const char *argv[] = {bin, "--directory", directory, a1, a2, a3, NULL};
  int status = -1;
  gboolean ok = g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_STDOUT_TO_DEV_NULL,
                             cap_address_space, NULL, NULL, err, &status, NULL);
  g_free(bin);
  if (!ok) return -2;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---- replies that claim too much ---- */

static void test_a_reply_claiming_4_gib_fails_the_call_without_allocating_it(void) {
  mf_daemon_t *dir = mf_start_directory("--heartbeat-timeout-ms", "60000", NULL);
  CU_ASSERT_FATAL(dir != NULL);
  fake_t *f = fake_start(FAKE_HUGE_REPLY);
  int id = 0;
  MF_ASSERT_EQ(mf_register_blocks(dir, f->address, 4, 65536, &id), 0);
  mayfly_client_t *c = client_for(dir->address, 5000, 1000);
  mayfly_ns_t *kv = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, "/huge", MAYFLY_KIND_KV, NULL, &kv), 0);
  int64_t peak0 = vm_kib("VmPeak");
  void *v = NULL;
  size_t vl = 0;
  int64_t t0 = now_ms();
  int rc = mayfly_kv_get(kv, "k", 1, &v, &vl);
  int64_t took = now_ms() - t0;
  fake_wait_measured(f);
  int64_t peak1 = vm_kib("VmPeak");
  fprintf(stderr, "  get: %s (%s) after %lld ms; VmSize %+lld KiB during, VmPeak %+lld KiB\n",
          mayfly_strerror(rc), mayfly_last_error(), (long long)took,
          (long long)(f->vm_during - f->vm_before), (long long)(peak1 - peak0));
  MF_ASSERT_EQ(rc, MAYFLY_EPROTO);
  CU_ASSERT(v == NULL);
  CU_ASSERT(took < 5000); /* refused, not waited for */
  CU_ASSERT(f->vm_during - f->vm_before < 256 * 1024);
  CU_ASSERT(peak1 - peak0 < 256 * 1024);
  /* The connection was dropped: the next call dials again. */
  rc = mayfly_kv_get(kv, "k", 1, &v, &vl);
  MF_ASSERT_EQ(rc, MAYFLY_EPROTO);
  MF_ASSERT_EQ(g_atomic_int_get(&f->accepts), 2);
  mayfly_unmount(kv);
  mayfly_disconnect(c);

  /* The CLI too, with its address space capped: an attempt to reserve the
   * claim would kill it instead of failing the command. */
  char *err = NULL;
  int st = cli_capped(dir->address, &err, "get", "/huge", "k");
  fprintf(stderr, "  mayfly get: exit %d, %s", st, err ? err : "\n");
  MF_ASSERT_EQ(st, 1);
  CU_ASSERT(err != NULL && strstr(err, "mayfly") != NULL);
  g_free(err);
  fake_stop(f);
  mf_stop(dir);
}

static void test_a_directory_frame_of_4_gb_fails_the_call_without_allocating_it(void) {
  fake_t *f = fake_start(FAKE_DIR_HUGE_FRAME);
  mayfly_client_t *c = client_for(f->address, 5000, 1000);
  int64_t peak0 = vm_kib("VmPeak");
  mayfly_stat_t *st = NULL;
  int64_t t0 = now_ms();
  int rc = mayfly_stat(c, "/x", &st);
  int64_t took = now_ms() - t0;
  fake_wait_measured(f);
  int64_t peak1 = vm_kib("VmPeak");
  fprintf(stderr, "  stat: %s (%s) after %lld ms; VmSize %+lld KiB during, VmPeak %+lld KiB\n",
          mayfly_strerror(rc), mayfly_last_error(), (long long)took,
          (long long)(f->vm_during - f->vm_before), (long long)(peak1 - peak0));
  MF_ASSERT_EQ(rc, MAYFLY_EIO);
  CU_ASSERT(st == NULL);
  CU_ASSERT(took < 5000);
  CU_ASSERT(f->vm_during - f->vm_before < 256 * 1024);
  CU_ASSERT(peak1 - peak0 < 256 * 1024);
  mayfly_disconnect(c);

  char *err = NULL;
  int status = cli_capped(f->address, &err, "stat", "/x", NULL);
  fprintf(stderr, "  mayfly stat: exit %d, %s", status, err ? err : "\n");
  MF_ASSERT_EQ(status, 1);
  g_free(err);
  fake_stop(f);
}

static void test_a_directory_frame_that_trickles_times_out_without_reserving_it(void) {
  fake_t *f = fake_start(FAKE_DIR_TRICKLE);
  mayfly_client_t *c = client_for(f->address, 1500, 1000);
  mayfly_stat_t *st = NULL;
  int64_t t0 = now_ms();
  int rc = mayfly_stat(c, "/x", &st);
  int64_t took = now_ms() - t0;
  fake_wait_measured(f);
  fprintf(stderr, "  stat: %s after %lld ms; VmSize %+lld KiB while 1 KiB of 64 MiB was in\n",
          mayfly_strerror(rc), (long long)took, (long long)(f->vm_during - f->vm_before));
  MF_ASSERT_EQ(rc, MAYFLY_ETIMEDOUT);
  CU_ASSERT(took <= 1500 + MARGIN_MS);
  /* Storage follows the bytes: 64 KiB for the first kilobyte, not 64 MiB. */
  CU_ASSERT(f->vm_during - f->vm_before < 16 * 1024);
  mayfly_disconnect(c);
  fake_stop(f);
}

/* ---- connections the server closed while idle ---- */

static void test_a_pooled_connection_closed_while_idle_is_replaced(void) {
  mf_daemon_t *dir = mf_start_directory("--heartbeat-timeout-ms", "60000", NULL);
  CU_ASSERT_FATAL(dir != NULL);
  fake_t *f = fake_start(FAKE_CLOSE_AFTER_ONE);
  int id = 0;
  MF_ASSERT_EQ(mf_register_blocks(dir, f->address, 4, 65536, &id), 0);
  mayfly_client_t *c = client_for(dir->address, 3000, 1000);
  mayfly_ns_t *kv = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, "/idle", MAYFLY_KIND_KV, NULL, &kv), 0);
  for (int i = 0; i < 3; i++) {
    void *v = NULL;
    size_t vl = 0;
    MF_ASSERT_EQ(mayfly_kv_get(kv, "k", 1, &v, &vl), 0);
    CU_ASSERT(vl == 1 && v != NULL && memcmp(v, "v", 1) == 0);
    mayfly_free(v);
    mf_sleep_ms(1300); /* idle: the server has closed by now */
  }
  /* Each get found the last connection closed and dialed a new one. */
  MF_ASSERT_EQ(g_atomic_int_get(&f->accepts), 3);
  mayfly_unmount(kv);
  mayfly_disconnect(c);
  fake_stop(f);
  mf_stop(dir);
}

/* A proxy in front of the real directory that serves one request per
 * connection and then closes it, as a directory with a short idle timeout
 * would. */
typedef struct proxy {
  int lfd;
  char address[64];
  int dir_port;
  gint stop;
  gint accepts;
  GThread *thread;
} proxy_t;

static int read_frame(int fd, GByteArray *out) {
  uint8_t pre[4];
  if (recv(fd, pre, 4, MSG_WAITALL) != 4) return -1;
  uint32_t len = (uint32_t)pre[0] << 24 | (uint32_t)pre[1] << 16 | (uint32_t)pre[2] << 8 | pre[3];
  if (len > (16u << 20)) return -1;
  g_byte_array_set_size(out, 4 + len);
  memcpy(out->data, pre, 4);
  return len == 0 || recv(fd, out->data + 4, len, MSG_WAITALL) == (ssize_t)len ? 0 : -1;
}

static gpointer proxy_main(gpointer data) {
  proxy_t *p = data;
  GByteArray *buf = g_byte_array_new();
  while (!g_atomic_int_get(&p->stop)) {
    struct pollfd pl = {.fd = p->lfd, .events = POLLIN};
    if (poll(&pl, 1, 100) <= 0) continue;
    int cfd = accept(p->lfd, NULL, NULL);
    if (cfd < 0) continue;
    g_atomic_int_inc(&p->accepts);
    struct timeval tv = {5, 0};
    setsockopt(cfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int dfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p->dir_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    setsockopt(dfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(dfd, (struct sockaddr *)&a, sizeof a) == 0 && read_frame(cfd, buf) == 0 &&
        mf_send_all(dfd, buf->data, buf->len) == 0 && read_frame(dfd, buf) == 0) {
      mf_send_all(cfd, buf->data, buf->len);
    }
    close(dfd);
    close(cfd);
  }
  g_byte_array_free(buf, TRUE);
  return NULL;
}

static void test_a_control_connection_closed_while_idle_is_replaced(void) {
  mf_daemon_t *dir = mf_start_directory(NULL);
  CU_ASSERT_FATAL(dir != NULL);
  proxy_t p = {.dir_port = dir->port};
  int port = 0;
  p.lfd = listen_loopback(&port);
  CU_ASSERT_FATAL(p.lfd >= 0);
  snprintf(p.address, sizeof p.address, "127.0.0.1:%d", port);
  p.thread = g_thread_new("proxy", proxy_main, &p);
  mayfly_client_t *c = client_for(p.address, 3000, 1000);
  MF_ASSERT_EQ(mayfly_mkdir(c, "/idle-a", 0), 0);
  mf_sleep_ms(100); /* the proxy has closed that connection */
  MF_ASSERT_EQ(mayfly_mkdir(c, "/idle-b", 0), 0);
  mf_sleep_ms(100);
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(c, "/idle-a", &st), 0);
  mayfly_stat_free(st);
  /* Three calls, three connections, and none of them failed. */
  MF_ASSERT_EQ(g_atomic_int_get(&p.accepts), 3);
  mayfly_disconnect(c);
  g_atomic_int_set(&p.stop, 1);
  g_thread_join(p.thread);
  close(p.lfd);
  mf_stop(dir);
}

/* ---- many replies in one receive ---- */

#define BATCH 10000

static void test_ten_thousand_pipelined_gets_are_each_matched_to_their_call(void) {
  mf_daemon_t *dir = mf_start_directory(NULL);
  CU_ASSERT_FATAL(dir != NULL);
  mf_daemon_t *ms = mf_start_memserver(dir, 2, "8MiB", NULL);
  CU_ASSERT_FATAL(ms != NULL);
  mayfly_client_t *c = client_for(dir->address, 10000, 1000);
  mayfly_ns_t *kv = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, "/many", MAYFLY_KIND_KV, NULL, &kv), 0);
  char **keys = g_new(char *, BATCH), **vals = g_new(char *, BATCH);
  size_t *klens = g_new(size_t, BATCH), *vlens = g_new(size_t, BATCH);
  int *rcs = g_new(int, BATCH);
  for (int i = 0; i < BATCH; i++) {
    keys[i] = g_strdup_printf("key-%d", i);
    vals[i] = g_strdup_printf("value-%d-%s", i, i % 7 == 0 ? "longer-than-the-others" : "");
    klens[i] = strlen(keys[i]);
    vlens[i] = strlen(vals[i]);
  }
  MF_ASSERT_EQ(mayfly_kv_put_batch(kv, BATCH, (const void *const *)keys, klens,
                                   (const void *const *)vals, vlens, rcs),
               0);
  void **got = g_new0(void *, BATCH);
  size_t *glens = g_new0(size_t, BATCH);
  MF_ASSERT_EQ(mayfly_kv_get_batch(kv, BATCH, (const void *const *)keys, klens, got, glens, rcs),
               0);
  int right = 0;
  for (int i = 0; i < BATCH; i++) {
    right += rcs[i] == 0 && glens[i] == vlens[i] && memcmp(got[i], vals[i], vlens[i]) == 0;
    mayfly_free(got[i]);
    g_free(keys[i]);
    g_free(vals[i]);
  }
  MF_ASSERT_EQ(right, BATCH);
  g_free(got);
  g_free(glens);
  g_free(keys);
  g_free(vals);
  g_free(klens);
  g_free(vlens);
  g_free(rcs);
  mayfly_unmount(kv);
  mayfly_disconnect(c);
  mf_stop(ms);
  mf_stop(dir);
}

/* ---- many threads on one connection ---- */

#define SHARERS 6
#define SHARED_OPS 1500
#define PIECE (256u << 10) /* a file read longer than the read buffer's quarter */

typedef struct sharer {
  mayfly_ns_t *kv, *file;
  const uint8_t *expect;
  int index;
  int ok;
  GThread *thread;
} sharer_t;

/* Mixes small gets with large reads, so replies of every size interleave on
 * the one connection and the leader role changes hands mid-payload. */
static gpointer sharer_main(gpointer data) {
  sharer_t *s = data;
  uint8_t *buf = g_malloc(PIECE);
  for (int i = 0; i < SHARED_OPS; i++) {
    if ((i + s->index) % 5 == 0) {
      uint64_t off = (uint64_t)((i * 7 + s->index) % 8) * PIECE;
      s->ok += mayfly_file_read(s->file, off, buf, PIECE) == (int64_t)PIECE &&
               memcmp(buf, s->expect + off, PIECE) == 0;
    } else {
      void *v = NULL;
      size_t vl = 0;
      s->ok += mayfly_kv_get(s->kv, "k", 1, &v, &vl) == 0 && vl == 1 && memcmp(v, "v", 1) == 0;
      mayfly_free(v);
    }
  }
  g_free(buf);
  return NULL;
}

static void test_threads_sharing_one_connection_all_get_their_own_replies(void) {
  mf_daemon_t *dir = mf_start_directory(NULL);
  CU_ASSERT_FATAL(dir != NULL);
  mf_daemon_t *ms = mf_start_memserver(dir, 2, "4MiB", NULL);
  CU_ASSERT_FATAL(ms != NULL);
  mayfly_client_t *c = client_for(dir->address, 10000, 1000);
  mayfly_ns_t *kv = NULL, *file = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, "/share-kv", MAYFLY_KIND_KV, NULL, &kv), 0);
  MF_ASSERT_EQ(mayfly_mount(c, "/share-file", MAYFLY_KIND_FILE, NULL, &file), 0);
  uint8_t *content = g_malloc(8 * PIECE);
  for (size_t i = 0; i < 8 * PIECE; i++) content[i] = (uint8_t)(i * 31 + i / 4093);
  MF_ASSERT_EQ(mayfly_file_write(file, 0, content, 8 * PIECE), 0);
  MF_ASSERT_EQ(mayfly_kv_put(kv, "k", 1, "v", 1), 0);
  sharer_t ss[SHARERS];
  for (int i = 0; i < SHARERS; i++) {
    ss[i] = (sharer_t){.kv = kv, .file = file, .expect = content, .index = i};
    ss[i].thread = g_thread_new("sharer", sharer_main, &ss[i]);
  }
  int ok = 0;
  for (int i = 0; i < SHARERS; i++) {
    g_thread_join(ss[i].thread);
    ok += ss[i].ok;
  }
  MF_ASSERT_EQ(ok, SHARERS * SHARED_OPS);
  g_free(content);
  mayfly_unmount(kv);
  mayfly_unmount(file);
  mayfly_disconnect(c);
  mf_stop(ms);
  mf_stop(dir);
}

/* ---- a server whose address blackholes connects (own network) ---- */

#define NET_DIR "198.18.0.2"  /* RFC 2544 benchmarking range, only on our veths */
#define NET_FAR "198.18.0.6"
#define BH_TIMEOUT_MS 1500

static char netns[32], veth_a[16], veth_b[16];

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *cmd = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  char *full = g_strdup_printf("%s >/dev/null 2>&1", cmd);
  int st = system(full);
  g_free(full);
  g_free(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void net_down(void) {
  if (netns[0] == '\0') return;
  sh("ip link del %s", veth_a);
  sh("ip link del %s", veth_b);
  sh("ip netns del %s", netns);
}

/* Removes namespaces that earlier runs left behind when they crashed. */
static void net_sweep(void) {
  GDir *d = g_dir_open("/var/run/netns", 0, NULL);
  if (d == NULL) return;
  const char *name;
  while ((name = g_dir_read_name(d)) != NULL) {
    int pid = 0;
    if (sscanf(name, "mfc-%d", &pid) == 1 && pid > 0 && kill(pid, 0) != 0) {
      sh("ip netns del %s", name);
      sh("ip link del mfa%dr", pid);
      sh("ip link del mfb%dr", pid);
    }
  }
  g_dir_close(d);
}

/* Builds the namespace: veth A carries the directory (198.18.0.1 <-> .2),
 * veth B the far memory server (198.18.0.5 <-> .6). Returns 0, or prints
 * why not and returns -1. */
static int net_up(void) {
  if (geteuid() != 0) {
    fprintf(stderr, "test_client blackhole: SKIPPED: creating a network namespace needs root\n");
    return -1;
  }
  net_sweep();
  int pid = (int)getpid();
  snprintf(netns, sizeof netns, "mfc-%d", pid);
  snprintf(veth_a, sizeof veth_a, "mfa%dr", pid);
  snprintf(veth_b, sizeof veth_b, "mfb%dr", pid);
  if (sh("ip netns add %s", netns) != 0) {
    fprintf(stderr, "test_client blackhole: SKIPPED: `ip netns add` failed\n");
    netns[0] = '\0';
    return -1;
  }
  atexit(net_down);
  int rc = sh("ip -n %s link set lo up", netns);
  rc |= sh("ip link add %s type veth peer name a0 netns %s", veth_a, netns);
  rc |= sh("ip link add %s type veth peer name b0 netns %s", veth_b, netns);
  rc |= sh("ip addr add 198.18.0.1/30 dev %s", veth_a);
  rc |= sh("ip addr add 198.18.0.5/30 dev %s", veth_b);
  rc |= sh("ip link set %s up", veth_a);
  rc |= sh("ip link set %s up", veth_b);
  rc |= sh("ip -n %s addr add " NET_DIR "/30 dev a0", netns);
  rc |= sh("ip -n %s addr add " NET_FAR "/30 dev b0", netns);
  rc |= sh("ip -n %s link set a0 up", netns);
  rc |= sh("ip -n %s link set b0 up", netns);
  if (rc != 0) {
    fprintf(stderr, "test_client blackhole: SKIPPED: cannot set up the veth pairs\n");
    return -1;
  }
  return 0;
}

/* Drops every packet sent towards the far server: a token bucket whose
 * burst is smaller than any packet (netem is not in every kernel). */
static int blackhole(void) {
  return sh("tc qdisc add dev %s root tbf rate 1kbit burst 1 latency 1ms", veth_b);
}

/* Waits until the directory lists `ms` as up. */
static int wait_registered(const mf_daemon_t *dir, const mf_daemon_t *ms) {
  for (int waited = 0; waited < 10000; waited += 50) {
    char *out = NULL;
    if (mf_cli(dir, &out, NULL, "servers", NULL) == 0 && out != NULL) {
      char *line = strstr(out, ms->address);
      if (line != NULL) line += strlen(ms->address);
      while (line != NULL && *line == ' ') line++; /* the column is padded */
      int up = line != NULL && strncmp(line, "up", 2) == 0;
      g_free(out);
      if (up) return 0;
    } else {
      g_free(out);
    }
    mf_sleep_ms(50);
  }
  return -1;
}

static void test_a_call_to_a_blackholed_server_times_out_and_stalls_nobody(void) {
  mf_daemon_t *dir = mf_start_in_netns(netns, NET_DIR, "directory/mayfly-directory",
                                       "--heartbeat-timeout-ms", "60000", NULL);
  CU_ASSERT_FATAL(dir != NULL);
  char dir_arg[80];
  snprintf(dir_arg, sizeof dir_arg, "%s", dir->address);
  mf_daemon_t *far = mf_start_in_netns(netns, NET_FAR, "memserver/mayfly-memserver",
                                       "--directory", dir_arg, "--blocks", "4", "--block-size",
                                       "64KiB", NULL);
  CU_ASSERT_FATAL(far != NULL);
  CU_ASSERT_FATAL(wait_registered(dir, far) == 0);
  mayfly_client_t *c1 = client_for(dir->address, BH_TIMEOUT_MS, BH_TIMEOUT_MS);
  mayfly_ns_t *kfar = NULL, *knear = NULL;
  MF_ASSERT_EQ(mayfly_mount(c1, "/bh-far", MAYFLY_KIND_KV, NULL, &kfar), 0);
  MF_ASSERT_EQ(mayfly_kv_put(kfar, "k", 1, "v", 1), 0); /* reachable before */
  mf_daemon_t *near = mf_start_in_netns(NULL, "127.0.0.1", "memserver/mayfly-memserver",
                                        "--directory", dir_arg, "--blocks", "4",
                                        "--block-size", "64KiB", NULL);
  CU_ASSERT_FATAL(near != NULL);
  CU_ASSERT_FATAL(wait_registered(dir, near) == 0);
  MF_ASSERT_EQ(mayfly_mount(c1, "/bh-near", MAYFLY_KIND_KV, NULL, &knear), 0);
  MF_ASSERT_EQ(mayfly_kv_put(knear, "k", 1, "v", 1), 0);
  char *a_far = server_of(c1, "/bh-far"), *a_near = server_of(c1, "/bh-near");
  CU_ASSERT_FATAL(a_far != NULL && a_near != NULL);
  CU_ASSERT_STRING_EQUAL(a_far, far->address);
  CU_ASSERT_STRING_EQUAL(a_near, near->address);
  mayfly_unmount(kfar);
  mayfly_unmount(knear);
  mayfly_disconnect(c1);

  MF_ASSERT_EQ(blackhole(), 0);
  /* A fresh client: its pool has no connection to the far server, so its
   * first call there must dial into the blackhole. */
  mayfly_client_t *c = client_for(dir->address, BH_TIMEOUT_MS, BH_TIMEOUT_MS);
  MF_ASSERT_EQ(mayfly_mount(c, "/bh-far", MAYFLY_KIND_KV, NULL, &kfar), 0);
  MF_ASSERT_EQ(mayfly_mount(c, "/bh-near", MAYFLY_KIND_KV, NULL, &knear), 0);
  reader_t rs[2];
  readers_start(rs, 2, knear, BH_TIMEOUT_MS);
  side_call_t side = {.ns = kfar, .delay_ms = 200}; /* a second caller of the same dial */
  mf_sleep_ms(100);
  readers_window(rs, 2, 1);
  side.thread = g_thread_new("side", side_read_main, &side);
  int64_t t0 = now_ms();
  void *v = NULL;
  size_t vl = 0;
  int rc = mayfly_kv_get(kfar, "k", 1, &v, &vl);
  int64_t took = now_ms() - t0;
  g_thread_join(side.thread);
  readers_window(rs, 2, 0);
  fprintf(stderr, "  get from the blackholed server: %s after %lld ms; second caller: %s after "
                  "%lld ms\n",
          mayfly_strerror(rc), (long long)took, mayfly_strerror(side.rc),
          (long long)side.took_ms);
  MF_ASSERT_EQ(rc, MAYFLY_ETIMEDOUT);
  CU_ASSERT(took <= BH_TIMEOUT_MS + MARGIN_MS);
  MF_ASSERT_EQ(side.rc, MAYFLY_ETIMEDOUT);
  CU_ASSERT(side.took_ms <= BH_TIMEOUT_MS + MARGIN_MS);
  readers_check(rs, 2);
  mayfly_free(v);
  g_free(a_far);
  g_free(a_near);
  mayfly_unmount(kfar);
  mayfly_unmount(knear);
  mayfly_disconnect(c);
  mf_stop(near);
  mf_stop(far);
  mf_stop(dir);
}

static const mf_test_t tests[] = {
    {"a directory frame that trickles times out without reserving it",
     test_a_directory_frame_that_trickles_times_out_without_reserving_it},
    {"a directory frame of 4 GB fails the call without allocating it",
     test_a_directory_frame_of_4_gb_fails_the_call_without_allocating_it},
    {"a reply claiming 4 GiB fails the call without allocating it",
     test_a_reply_claiming_4_gib_fails_the_call_without_allocating_it},
    {"a large put to a stopped server times out and stalls nobody",
     test_a_large_put_to_a_stopped_server_times_out_and_stalls_nobody},
    {"a pooled connection closed while idle is replaced",
     test_a_pooled_connection_closed_while_idle_is_replaced},
    {"a control connection closed while idle is replaced",
     test_a_control_connection_closed_while_idle_is_replaced},
    {"ten thousand pipelined gets are each matched to their call",
     test_ten_thousand_pipelined_gets_are_each_matched_to_their_call},
    {"threads sharing one connection all get their own replies",
     test_threads_sharing_one_connection_all_get_their_own_replies},
    {NULL, NULL}};

static const mf_test_t blackhole_tests[] = {
    {"a call to a blackholed server times out and stalls nobody",
     test_a_call_to_a_blackholed_server_times_out_and_stalls_nobody},
    {NULL, NULL}};

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "blackhole") == 0) {
    if (net_up() != 0 || (blackhole() != 0 && (fprintf(stderr, "test_client blackhole: SKIPPED: "
                                                               "no tbf qdisc\n"),
                                               1))) {
      return 77; /* CTest reports it as skipped */
    }
    sh("tc qdisc del dev %s root", veth_b); /* probed; set again once data went through */
    return mf_test_run("client (blackhole)", NULL, NULL, blackhole_tests);
  }
  return mf_test_run("client", NULL, NULL, tests);
}
