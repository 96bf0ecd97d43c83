/*
 * Integration tests of the daemons' memory bounds (docs/memory-bound.md):
 * real daemons attacked through raw sockets the way an attacker found they
 * could be, each test asserting that the daemon's resident memory (VmRSS of
 * its process) stays within the bound computed from the options it was
 * started with, and that it keeps serving a well-behaved client meanwhile
 * and afterwards.
 *
 * The bound is the formula of docs/memory-bound.md with the daemon's options;
 * its fixed base is the RSS measured once the daemon is up and loaded with
 * the test's data (the tree, the blocks in use), plus an allowance for the
 * allocator's own overhead (ALLOC_SLACK). A regression of any bound shows as
 * hundreds of megabytes, far past it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client/mayfly.h"
#include "common/error.h"
#include "common/wire.h"
#include "harness.h"
#include "mf_test.h"

#define MiB (1024LL * 1024)
#define KiB 1024LL
/* What the allocator keeps beyond what the code holds (arenas, free lists). */
#define ALLOC_SLACK (16 * MiB)
/* Per connection, besides its read buffer: the connection structs, the libuv
 * handle, GLib's list links (docs/memory-bound.md, "per connection"). */
#define CONN_OVERHEAD (2 * KiB)

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

static int64_t now_ms(void) {
  return g_get_monotonic_time() / 1000;
}

/* VmRSS of a process in bytes, -1 if unknown. */
static long long rss_of(pid_t pid) {
  char path[64], *text = NULL;
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  if (!g_file_get_contents(path, &text, NULL, NULL)) return -1;
  long long kb = -1;
  const char *p = strstr(text, "VmRSS:");
  if (p != NULL) kb = strtoll(p + 6, NULL, 10);
  g_free(text);
  return kb < 0 ? -1 : kb * KiB;
}

/* Under ASan freed memory sits in a quarantine and every allocation has a
 * shadow: the daemons get a small quarantine (set before they start) and the
 * bound an allowance for both. */
static long long sanitizer_slack(long long bound) {
  return UNDER_ASAN ? 64 * MiB + bound / 4 : 0;
}

static void sanitizer_env(void) {
  if (!UNDER_ASAN) return;
  const char *old = getenv("ASAN_OPTIONS");
  char *v = g_strdup_printf("%s%squarantine_size_mb=16", old ? old : "", old && *old ? ":" : "");
  setenv("ASAN_OPTIONS", v, 1);
  g_free(v);
}

static void raise_nofile(rlim_t want) {
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur >= want) return;
  rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
}

static int tcp_connect(int port, int nonblocking) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  if (nonblocking) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

/* Sends what the socket takes within ms; returns bytes sent. */
static size_t send_some(int fd, const uint8_t *p, size_t len, int ms) {
  size_t sent = 0;
  int64_t end = now_ms() + ms;
  while (sent < len && now_ms() < end) {
    ssize_t w = send(fd, p + sent, len - sent, MSG_NOSIGNAL);
    if (w > 0) {
      sent += (size_t)w;
      continue;
    }
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) break;
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    poll(&pfd, 1, 50);
  }
  return sent;
}

static int recv_all(int fd, void *buf, size_t len, int ms) {
  uint8_t *p = buf;
  int64_t end = now_ms() + ms;
  while (len > 0) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int left = (int)(end - now_ms());
    if (left <= 0 || poll(&pfd, 1, left) <= 0) return -1;
    ssize_t r = recv(fd, p, len, 0);
    if (r <= 0) {
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      return -1;
    }
    p += r;
    len -= (size_t)r;
  }
  return 0;
}

/* Receives one data-plane reply (payload discarded); 0 or -1. */
static int recv_reply(int fd, wire_hdr_t *h, int ms) {
  uint8_t hdr[WIRE_HEADER_SIZE];
  if (recv_all(fd, hdr, sizeof hdr, ms) != 0) return -1;
  size_t flen;
  int rc = wire_parse(hdr, sizeof hdr, UINT32_MAX, h, &flen);
  if (rc != 0 && rc != MAYFLY_EAGAIN) return -1;
  if (h->payload_len > 0) {
    uint8_t *p = g_malloc(h->payload_len);
    rc = recv_all(fd, p, h->payload_len, ms);
    g_free(p);
    if (rc != 0) return -1;
  }
  return 0;
}

/* Whether the peer closed fd (EOF or reset) within ms, reading and
 * dropping whatever it sent before. */
static int closed_within(int fd, int ms) {
  int64_t end = now_ms() + ms;
  uint8_t tmp[4096];
  for (;;) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int left = (int)(end - now_ms());
    if (left <= 0 || poll(&pfd, 1, left) <= 0) return 0;
    ssize_t r = recv(fd, tmp, sizeof tmp, MSG_DONTWAIT);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) return 1;
  }
}

/* --- a well-behaved client, running in a thread while the attack goes on --- */

typedef struct {
  mayfly_ns_t *ns; /* kv */
  volatile int stop;
  int ok, failed;
} loop_t;

static void *kv_loop(void *arg) {
  loop_t *l = arg;
  for (int i = 0; !l->stop; i++) {
    char key[32], val[32];
    snprintf(key, sizeof key, "k%d", i % 500);
    snprintf(val, sizeof val, "v%d", i);
    void *got = NULL;
    size_t glen = 0;
    if (mayfly_kv_put(l->ns, key, strlen(key), val, strlen(val)) == 0 &&
        mayfly_kv_get(l->ns, key, strlen(key), &got, &glen) == 0 && glen == strlen(val) &&
        memcmp(got, val, glen) == 0) {
      l->ok++;
    } else {
      l->failed++;
    }
    mayfly_free(got);
    mf_sleep_ms(2);
  }
  return NULL;
}

/* --- the memory server's bound --- */

typedef struct {
  long long blocks, block_size, max_conns, read_buffer, input_total, backlog, backlog_total,
      deferred_total, pops_total;
  long long deferred; /* --max-deferred; 0: deferred_total */
} ms_opts_t;

/* A reply this small goes out on an empty backlog whatever the total
 * (MF_NET_SMALL_REPLY, common/netserver.h). */
#define SMALL_REPLY (64 * KiB)

/* docs/memory-bound.md, memory server: what may grow past the base. */
static long long ms_bound_growth(const ms_opts_t *o) {
  long long R = WIRE_HEADER_SIZE + o->block_size + WIRE_KEY_MAX; /* largest reply */
  long long F = R + WIRE_CAP_MAX;                                 /* largest frame */
  long long per_conn = o->max_conns * (o->backlog + R);
  long long total = o->backlog_total + o->max_conns * SMALL_REPLY;
  return o->max_conns * (o->read_buffer + CONN_OVERHEAD) + o->input_total +
         (per_conn < total ? per_conn : total) + o->deferred_total + F +
         o->pops_total * 400 /* W: a waiter and its timer */;
}

typedef struct {
  mf_daemon_t *dir, *ms, *ms2; /* ms2: a second server, when started */
  mayfly_client_t *c;
  ms_opts_t o;
  const char *send_timeout;    /* NULL: the default */
} ms_env_t;

static char *num(long long v) {
  return g_strdup_printf("%lld", v);
}

static mf_daemon_t *ms_start(ms_env_t *e, const char *frame_timeout, const char *idle_timeout,
                             const char *host);

/* Starts a directory and one memory server with the options in e->o. */
static int ms_env_start(ms_env_t *e, const char *frame_timeout, const char *idle_timeout,
                        const char *host) {
  sanitizer_env();
  e->dir = mf_start_directory("--heartbeat-ms", "200", NULL);
  if (e->dir == NULL) return -1;
  e->ms = ms_start(e, frame_timeout, idle_timeout, host);
  if (e->ms == NULL) return -1;
  mayfly_options_t co = {.timeout_ms = 20000};
  return mayfly_connect(e->dir->address, &co, &e->c);
}

/* Starts a memory server of e's directory with the options in e->o. */
static mf_daemon_t *ms_start(ms_env_t *e, const char *frame_timeout, const char *idle_timeout,
                             const char *host) {
  char *bs = num(e->o.block_size), *mc = num(e->o.max_conns), *rb = num(e->o.read_buffer),
       *it = num(e->o.input_total), *bl = num(e->o.backlog), *bt = num(e->o.backlog_total),
       *dt = num(e->o.deferred_total), *pt = num(e->o.pops_total),
       *dc = num(e->o.deferred ? e->o.deferred : e->o.deferred_total);
  mf_daemon_t *ms = mf_start_memserver(e->dir, (int)e->o.blocks, bs, "--max-connections", mc,
                             "--read-buffer", rb, "--max-input-total", it, "--max-reply-backlog",
                             bl, "--max-reply-backlog-total", bt, "--max-deferred", dc,
                             "--max-deferred-total", dt, "--max-waiting-pops", pt,
                             "--max-waiting-pops-total", pt, "--frame-timeout", frame_timeout,
                             "--idle-timeout", idle_timeout, "--host", host, "--send-timeout",
                             e->send_timeout ? e->send_timeout : "30s", NULL);
  g_free(bs), g_free(mc), g_free(rb), g_free(it), g_free(bl), g_free(bt), g_free(dt), g_free(pt);
  g_free(dc);
  return ms;
}

static void ms_env_stop(ms_env_t *e) {
  mayfly_disconnect(e->c);
  if (e->ms2 != NULL) MF_ASSERT_EQ(mf_stop(e->ms2), 0);
  if (e->ms != NULL) MF_ASSERT_EQ(mf_stop(e->ms), 0);
  if (e->dir != NULL) MF_ASSERT_EQ(mf_stop(e->dir), 0);
}

static const ms_opts_t ms_small = {.blocks = 16,
                                   .block_size = 1 * MiB,
                                   .max_conns = 32,
                                   .read_buffer = 16 * KiB,
                                   .input_total = 4 * MiB,
                                   .backlog = 2 * MiB,
                                   .backlog_total = 8 * MiB,
                                   .deferred_total = 2 * MiB,
                                   .pops_total = 1000};

/* A client that sends 100,000 reads of a whole block and never reads a
 * reply: the memory server stops serving it once its reply backlog is full
 * (before, it served every buffered request and grew by a block per
 * request), and serves another client meanwhile and afterwards. */
static void test_ms_reader_that_never_reads(void) {
  ms_env_t e = {.o = ms_small};
  if (ms_env_start(&e, "10s", "600s", "127.0.0.1") != 0) {
    CU_FAIL("the cluster did not start");
    ms_env_stop(&e);
    return;
  }
  mayfly_ns_t *file = NULL, *kv = NULL;
  MF_ASSERT_EQ(mayfly_mount(e.c, "/bounds/file", MAYFLY_KIND_FILE, NULL, &file), 0);
  MF_ASSERT_EQ(mayfly_mount(e.c, "/bounds/kv", MAYFLY_KIND_KV, NULL, &kv), 0);
  uint8_t *block = g_malloc(e.o.block_size);
  memset(block, 'x', e.o.block_size);
  MF_ASSERT_EQ(mayfly_file_write(file, 0, block, e.o.block_size), 0);
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(e.c, "/bounds/file", &st), 0);
  CU_ASSERT_FATAL(st != NULL && st->npartitions >= 1);

  loop_t l = {.ns = kv};
  pthread_t th;
  pthread_create(&th, NULL, kv_loop, &l);
  mf_sleep_ms(300);
  long long base = rss_of(e.ms->pid) + ALLOC_SLACK;
  long long bound = base + ms_bound_growth(&e.o);
  bound += sanitizer_slack(bound);

  /* 100,000 FILE_READs of the whole first block, 5.6 MB of requests asking
   * for 100 GB of replies. */
  const int n = 100000;
  uint8_t *reqs = g_malloc((size_t)n * WIRE_HEADER_SIZE);
  for (int i = 0; i < n; i++) {
    wire_hdr_t h = {.opcode = WIRE_OP_FILE_READ,
                    .request_id = (uint64_t)i + 1,
                    .block_index = (uint32_t)st->partitions[0].block_index,
                    .generation = (uint64_t)st->partitions[0].generation,
                    .arg0 = 0,
                    .arg1 = (uint64_t)e.o.block_size};
    wire_encode(&h, reqs + (size_t)i * WIRE_HEADER_SIZE);
  }
  int fd = tcp_connect(e.ms->port, 1);
  CU_ASSERT_FATAL(fd >= 0);
  size_t total = (size_t)n * WIRE_HEADER_SIZE, sent = 0;
  long long peak = 0;
  int64_t end = now_ms() + 4000;
  while (sent < total && now_ms() < end) {
    sent += send_some(fd, reqs + sent, total - sent, 200);
    long long r = rss_of(e.ms->pid);
    if (r > peak) peak = r;
  }
  for (int i = 0; i < 10; i++) { /* the server has what it will take: let it settle */
    mf_sleep_ms(100);
    long long r = rss_of(e.ms->pid);
    if (r > peak) peak = r;
  }
  fprintf(stderr, "  memserver: base %lld MiB (with slack), peak %lld MiB, bound %lld MiB, "
          "%zu of %zu request bytes taken\n", (base - ALLOC_SLACK) / MiB, peak / MiB,
          bound / MiB, sent, total);
  CU_ASSERT(peak > 0 && peak <= bound);
  int ok_during = l.ok;
  CU_ASSERT(ok_during > 0);

  /* Another client reads the same block meanwhile. */
  uint8_t *back = g_malloc(e.o.block_size);
  MF_ASSERT_EQ(mayfly_file_read(file, 0, back, e.o.block_size), e.o.block_size);
  CU_ASSERT(memcmp(back, block, e.o.block_size) == 0);

  /* The attacker goes away; everything still works. */
  close(fd);
  mf_sleep_ms(300);
  l.stop = 1;
  pthread_join(th, NULL);
  MF_ASSERT_EQ(l.failed, 0);
  CU_ASSERT(l.ok > ok_during);
  MF_ASSERT_EQ(mayfly_file_read(file, 0, back, e.o.block_size), e.o.block_size);
  CU_ASSERT(rss_of(e.ms->pid) <= bound);
  g_free(back);
  g_free(block);
  g_free(reqs);
  mayfly_stat_free(st);
  mayfly_unmount(file);
  mayfly_unmount(kv);
  ms_env_stop(&e);
}

/* 2,000 connections each holding the start of a large frame: each costs
 * its small read buffer (the header's announced size is never allocated),
 * all are closed by the partial-frame timeout, and a put/get loop succeeds
 * throughout. */
static void test_ms_partial_frames_time_out(void) {
  const int nconn = 2000;
  raise_nofile(nconn + 500);
  ms_env_t e = {.o = ms_small};
  e.o.max_conns = nconn + 50;
  if (ms_env_start(&e, "2s", "600s", "127.0.0.1") != 0) {
    CU_FAIL("the cluster did not start");
    ms_env_stop(&e);
    return;
  }
  mayfly_ns_t *kv = NULL;
  MF_ASSERT_EQ(mayfly_mount(e.c, "/partial/kv", MAYFLY_KIND_KV, NULL, &kv), 0);
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(e.c, "/partial/kv", &st), 0);
  CU_ASSERT_FATAL(st != NULL && st->npartitions >= 1);
  loop_t l = {.ns = kv};
  pthread_t th;
  pthread_create(&th, NULL, kv_loop, &l);
  mf_sleep_ms(300);
  long long base = rss_of(e.ms->pid) + ALLOC_SLACK;
  long long bound = base + ms_bound_growth(&e.o);
  bound += sanitizer_slack(bound);

  /* A KV_PUT announcing a whole block of payload, of which 1,000 bytes come. */
  uint8_t frame[WIRE_HEADER_SIZE + 1000];
  memset(frame, 'p', sizeof frame);
  wire_hdr_t h = {.opcode = WIRE_OP_KV_PUT,
                  .payload_len = (uint32_t)e.o.block_size,
                  .block_index = (uint32_t)st->partitions[0].block_index,
                  .generation = (uint64_t)st->partitions[0].generation,
                  .arg2 = 8};
  wire_encode(&h, frame);
  int *fds = g_new(int, nconn);
  int opened = 0;
  int64_t started = now_ms();
  for (int i = 0; i < nconn; i++) {
    fds[i] = tcp_connect(e.ms->port, 0);
    if (fds[i] < 0) break;
    opened++;
    if (send_some(fds[i], frame, sizeof frame, 1000) != sizeof frame) break;
  }
  MF_ASSERT_EQ(opened, nconn);
  long long peak = rss_of(e.ms->pid);
  int ok_during = l.ok;
  /* Every connection is closed by the server, within the timeout plus a
   * generous margin counted from when the last one was opened. */
  int closed = 0;
  for (int i = 0; i < opened; i++) {
    long long r = rss_of(e.ms->pid);
    if (r > peak) peak = r;
    int left = (int)(started + 2000 + 15000 - now_ms());
    closed += closed_within(fds[i], left > 0 ? left : 1);
    close(fds[i]);
  }
  fprintf(stderr, "  memserver, %d partial frames: base %lld MiB, peak %lld MiB, bound %lld MiB, "
          "%d closed by the server after %lld ms\n", opened, (base - ALLOC_SLACK) / MiB,
          peak / MiB, bound / MiB, closed, (long long)(now_ms() - started));
  MF_ASSERT_EQ(closed, opened);
  CU_ASSERT(peak <= bound);
  /* Nothing is served, so only the input terms of the bound apply: each
   * connection costs its small read buffer, never the announced frame. */
  CU_ASSERT(peak <= base + sanitizer_slack(base) + e.o.max_conns * (e.o.read_buffer + CONN_OVERHEAD) +
                        e.o.input_total);
  mf_sleep_ms(200);
  l.stop = 1;
  pthread_join(th, NULL);
  MF_ASSERT_EQ(l.failed, 0);
  CU_ASSERT(l.ok > ok_during && ok_during > 0);
  g_free(fds);
  mayfly_stat_free(st);
  mayfly_unmount(kv);
  ms_env_stop(&e);
}

/* Many pops waiting on one connection, which then closes: past the cap a
 * pop answers "try again" at once, waiting pops are served by pushes in
 * order, and after the close the queue and the server behave as if the
 * closed connection's pops had never been there. */
static void test_ms_waiting_pops_capped_and_dropped(void) {
  ms_env_t e = {.o = ms_small};
  e.o.pops_total = 20000;
  if (ms_env_start(&e, "10s", "600s", "127.0.0.1") != 0) {
    CU_FAIL("the cluster did not start");
    ms_env_stop(&e);
    return;
  }
  mayfly_ns_t *q = NULL;
  MF_ASSERT_EQ(mayfly_mount(e.c, "/pops/q", MAYFLY_KIND_QUEUE, NULL, &q), 0);
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(e.c, "/pops/q", &st), 0);
  CU_ASSERT_FATAL(st != NULL && st->npartitions >= 1);

  const int waiting = 20000, over = 500, served = 10;
  const int n = waiting + over;
  uint8_t *reqs = g_malloc((size_t)n * WIRE_HEADER_SIZE);
  for (int i = 0; i < n; i++) {
    wire_hdr_t h = {.opcode = WIRE_OP_Q_POP,
                    .request_id = (uint64_t)i + 1,
                    .block_index = (uint32_t)st->partitions[0].block_index,
                    .generation = (uint64_t)st->partitions[0].generation,
                    .arg0 = 60000};
    wire_encode(&h, reqs + (size_t)i * WIRE_HEADER_SIZE);
  }
  int fd = tcp_connect(e.ms->port, 0);
  CU_ASSERT_FATAL(fd >= 0);
  MF_ASSERT_EQ(send_some(fd, reqs, (size_t)n * WIRE_HEADER_SIZE, 10000),
               (size_t)n * WIRE_HEADER_SIZE);
  /* The pops past the cap answer EAGAIN at once, the later ones of the batch. */
  int eagain = 0, first_eagain = 0;
  for (int i = 0; i < over; i++) {
    wire_hdr_t r;
    if (recv_reply(fd, &r, 10000) != 0) break;
    if (r.status == MAYFLY_EAGAIN) eagain++;
    if (i == 0) first_eagain = (int)r.request_id;
  }
  MF_ASSERT_EQ(eagain, over);
  MF_ASSERT_EQ(first_eagain, waiting + 1);
  /* Pushes from another client are handed to the oldest waiting pops. */
  for (int i = 0; i < served; i++) {
    char item[16];
    snprintf(item, sizeof item, "item%d", i);
    MF_ASSERT_EQ(mayfly_queue_push(q, item, strlen(item)), 0);
  }
  int got = 0;
  for (int i = 0; i < served; i++) {
    wire_hdr_t r;
    if (recv_reply(fd, &r, 10000) != 0) break;
    if (r.status == 0 && r.request_id == (uint64_t)i + 1) got++;
  }
  MF_ASSERT_EQ(got, served);
  /* The connection with 19,990 waiting pops closes; the server drops them. */
  close(fd);
  mf_sleep_ms(300);
  for (int i = 0; i < 100; i++) {
    char item[16];
    snprintf(item, sizeof item, "after%d", i);
    MF_ASSERT_EQ(mayfly_queue_push(q, item, strlen(item)), 0);
  }
  /* Nothing went to a closed connection's pop: all 100 are in the queue. */
  MF_ASSERT_EQ(mayfly_queue_length(q), 100);
  int popped = 0;
  for (int i = 0; i < 100; i++) {
    void *it = NULL;
    size_t len = 0;
    char want[16];
    snprintf(want, sizeof want, "after%d", i);
    if (mayfly_queue_pop(q, &it, &len, 1000) == 0 && len == strlen(want) &&
        memcmp(it, want, len) == 0) {
      popped++;
    }
    mayfly_free(it);
  }
  MF_ASSERT_EQ(popped, 100);
  /* A pop waits again (the caps count only live waiters). */
  void *it = NULL;
  size_t len = 0;
  MF_ASSERT_EQ(mayfly_queue_pop(q, &it, &len, 200), MAYFLY_EAGAIN);
  g_free(reqs);
  mayfly_stat_free(st);
  mayfly_unmount(q);
  ms_env_stop(&e);
}

/* A connection that sends nothing is closed after the idle timeout; one
 * whose pop is waiting is not idle: it gets its answer when the pop's own
 * time is up. */
static void test_ms_idle_connections_close(void) {
  ms_env_t e = {.o = ms_small};
  if (ms_env_start(&e, "10s", "1s", "127.0.0.1") != 0) {
    CU_FAIL("the cluster did not start");
    ms_env_stop(&e);
    return;
  }
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_create(e.c, "/idle/q", MAYFLY_KIND_QUEUE, NULL, &st), 0);
  CU_ASSERT_FATAL(st != NULL && st->npartitions >= 1);
  int idle = tcp_connect(e.ms->port, 0), busy = tcp_connect(e.ms->port, 0);
  CU_ASSERT_FATAL(idle >= 0 && busy >= 0);
  wire_hdr_t h = {.opcode = WIRE_OP_Q_POP,
                  .request_id = 7,
                  .block_index = (uint32_t)st->partitions[0].block_index,
                  .generation = (uint64_t)st->partitions[0].generation,
                  .arg0 = 3000};
  uint8_t frame[WIRE_HEADER_SIZE];
  wire_encode(&h, frame);
  MF_ASSERT_EQ(send_some(busy, frame, sizeof frame, 1000), sizeof frame);
  int64_t t0 = now_ms();
  MF_ASSERT_EQ(closed_within(idle, 1000 + 5000), 1);
  wire_hdr_t r;
  MF_ASSERT_EQ(recv_reply(busy, &r, 3000 + 5000), 0);
  MF_ASSERT_EQ(r.status, MAYFLY_EAGAIN);
  MF_ASSERT_EQ(r.request_id, 7);
  CU_ASSERT(now_ms() - t0 >= 2900); /* answered by its own timeout, not closed as idle */
  MF_ASSERT_EQ(closed_within(busy, 1000 + 5000), 1);
  close(idle);
  close(busy);
  mayfly_stat_free(st);
  ms_env_stop(&e);
}

/* The memory server listens on IPv6 too (the shared layer binds either). */
static void test_ms_serves_ipv6(void) {
  ms_env_t e = {.o = ms_small};
  if (ms_env_start(&e, "10s", "600s", "::1") != 0) {
    CU_FAIL("the cluster did not start on ::1");
    ms_env_stop(&e);
    return;
  }
  mayfly_ns_t *kv = NULL;
  MF_ASSERT_EQ(mayfly_mount(e.c, "/v6/kv", MAYFLY_KIND_KV, NULL, &kv), 0);
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(e.c, "/v6/kv", &st), 0);
  CU_ASSERT_FATAL(st != NULL && st->npartitions >= 1);
  CU_ASSERT(g_str_has_prefix(st->partitions[0].server_address, "[::1]:"));
  MF_ASSERT_EQ(mayfly_kv_put(kv, "k", 1, "v6", 2), 0);
  void *v = NULL;
  size_t vlen = 0;
  MF_ASSERT_EQ(mayfly_kv_get(kv, "k", 1, &v, &vlen), 0);
  CU_ASSERT(vlen == 2 && memcmp(v, "v6", 2) == 0);
  mayfly_free(v);
  mayfly_stat_free(st);
  mayfly_unmount(kv);
  ms_env_stop(&e);
}

/* --- the caps of issue 9, part two --- */

/* Like tcp_connect, with a small receive buffer, so that a client that does
 * not read leaves the server's replies in the server, not in the kernel. */
static int tcp_connect_small(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  int rcv = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* A frame: header h (payload_len set from plen) and payload; g_free. */
static uint8_t *frame_of(wire_hdr_t h, const void *payload, uint32_t plen, size_t *len) {
  h.payload_len = plen;
  uint8_t *f = g_malloc(WIRE_HEADER_SIZE + plen);
  wire_encode(&h, f);
  if (plen > 0) memcpy(f + WIRE_HEADER_SIZE, payload, plen);
  *len = WIRE_HEADER_SIZE + plen;
  return f;
}

/* Whether a reply arrives on fd within ms (nothing is read). */
static int reply_within(int fd, int ms) {
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  return poll(&pfd, 1, ms) > 0;
}

/* The total input cap: two connections hold most of a 500 KiB FILE_WRITE
 * each, so a third one sending a whole frame cannot grow its read buffer
 * under --max-input-total: it stops being read and is not served. Once one
 * holder completes its frame (its buffer is given back), the third resumes
 * and is served; every write lands. */
static void test_ms_input_total_stalls_and_resumes(void) {
  ms_env_t e = {.o = ms_small};
  e.o.input_total = 1280 * KiB; /* just over one largest frame (1 MiB + 65 KiB) */
  if (ms_env_start(&e, "30s", "600s", "127.0.0.1") != 0) {
    CU_FAIL("the cluster did not start");
    ms_env_stop(&e);
    return;
  }
  mayfly_ns_t *file = NULL;
  MF_ASSERT_EQ(mayfly_mount(e.c, "/input/file", MAYFLY_KIND_FILE, NULL, &file), 0);
  uint8_t *zero = g_malloc0(2 * e.o.block_size);
  MF_ASSERT_EQ(mayfly_file_write(file, 0, zero, 2 * e.o.block_size), 0);
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(e.c, "/input/file", &st), 0);
  CU_ASSERT_FATAL(st != NULL && st->npartitions >= 2);

  const uint32_t P = 500 * KiB;
  /* Holder 0 and 1 write 'a' and 'b' at 0 and P in the first block, the
   * third connection 'c' at 0 in the second. */
  uint8_t *data = g_malloc(P);
  size_t flen[3];
  uint8_t *frames[3];
  int fds[3];
  for (int i = 0; i < 3; i++) {
    memset(data, 'a' + i, P);
    const mayfly_partition_t *part = &st->partitions[i < 2 ? 0 : 1];
    wire_hdr_t h = {.opcode = WIRE_OP_FILE_WRITE,
                    .request_id = (uint64_t)i + 1,
                    .block_index = (uint32_t)part->block_index,
                    .generation = (uint64_t)part->generation,
                    .arg0 = i == 1 ? P : 0};
    frames[i] = frame_of(h, data, P, &flen[i]);
    fds[i] = tcp_connect(e.ms->port, 0);
    CU_ASSERT_FATAL(fds[i] >= 0);
  }
  /* The holders send all but the last byte of their frames. */
  for (int i = 0; i < 2; i++) MF_ASSERT_EQ(send_some(fds[i], frames[i], flen[i] - 1, 5000), flen[i] - 1);
  mf_sleep_ms(500);
  MF_ASSERT_EQ(send_some(fds[2], frames[2], flen[2], 5000), flen[2]);
  /* The third is over the cap: not read past it, not served. */
  CU_ASSERT(!reply_within(fds[2], 1000));
  /* Holder 0 completes: served; its buffer goes back and the third resumes. */
  MF_ASSERT_EQ(send_some(fds[0], frames[0] + flen[0] - 1, 1, 1000), 1);
  wire_hdr_t r;
  MF_ASSERT_EQ(recv_reply(fds[0], &r, 10000), 0);
  MF_ASSERT_EQ(r.status, 0);
  MF_ASSERT_EQ(r.request_id, 1);
  MF_ASSERT_EQ(recv_reply(fds[2], &r, 10000), 0);
  MF_ASSERT_EQ(r.status, 0);
  MF_ASSERT_EQ(r.request_id, 3);
  MF_ASSERT_EQ(send_some(fds[1], frames[1] + flen[1] - 1, 1, 1000), 1);
  MF_ASSERT_EQ(recv_reply(fds[1], &r, 10000), 0);
  MF_ASSERT_EQ(r.status, 0);
  MF_ASSERT_EQ(r.request_id, 2);
  /* Every write landed where it was sent. */
  uint8_t *back = g_malloc(P);
  for (int i = 0; i < 3; i++) {
    const mayfly_partition_t *part = &st->partitions[i < 2 ? 0 : 1];
    uint64_t off = (uint64_t)part->range_lo + (i == 1 ? P : 0);
    MF_ASSERT_EQ(mayfly_file_read(file, off, back, P), P);
    memset(data, 'a' + i, P);
    CU_ASSERT(memcmp(back, data, P) == 0);
  }
  for (int i = 0; i < 3; i++) {
    close(fds[i]);
    g_free(frames[i]);
  }
  g_free(back);
  g_free(data);
  g_free(zero);
  mayfly_stat_free(st);
  mayfly_unmount(file);
  ms_env_stop(&e);
}

#define SPLIT_VALUE 1000

static void split_value(int i, char *v) {
  for (int k = 0; k < SPLIT_VALUE; k++) v[k] = (char)('a' + (i * 7 + k) % 26);
}

/* Partitions of path, or -1. With lo set, the slot range of the partition
 * served on `port`. */
static int kv_partitions(mayfly_client_t *c, const char *path, int port, int64_t *lo,
                         int64_t *hi) {
  mayfly_stat_t *st = NULL;
  if (mayfly_stat(c, path, &st) != 0 || st == NULL) return -1;
  int n = (int)st->npartitions;
  for (int i = 0; i < n && lo != NULL; i++) {
    const char *colon = strrchr(st->partitions[i].server_address, ':');
    if (colon != NULL && atoi(colon + 1) == port) {
      *lo = st->partitions[i].range_lo;
      *hi = st->partitions[i].range_hi;
    }
  }
  mayfly_stat_free(st);
  return n;
}

/* The parked/held caps: a kv block splits onto a server that hangs
 * (SIGSTOP), so puts to the slots being moved are held. A client sends 100
 * puts on one connection: once its held copies reach --max-deferred, none
 * of its later frames is served (not even puts to slots that are not
 * moving). When the hung server resumes, the split completes (its KV_MIGRATE
 * frames are never blocked by the caps, and the source is at its cap
 * meanwhile) and every put is answered, in order, correctly. */
static void test_ms_deferred_caps_hold_during_split(void) {
  ms_env_t e = {.o = ms_small};
  e.o.block_size = 256 * KiB;
  e.o.input_total = 2 * MiB;
  e.o.deferred = 2 * KiB;
  e.o.deferred_total = 64 * KiB;
  if (ms_env_start(&e, "30s", "600s", "127.0.0.1") != 0) {
    CU_FAIL("the cluster did not start");
    ms_env_stop(&e);
    return;
  }
  e.ms2 = ms_start(&e, "30s", "600s", "127.0.0.1");
  CU_ASSERT_FATAL(e.ms2 != NULL);
  const char *path = "/held/kv";
  mayfly_ns_t *ns = NULL;
  MF_ASSERT_EQ(mayfly_mount(e.c, path, MAYFLY_KIND_KV, NULL, &ns), 0);
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(e.c, path, &st), 0);
  CU_ASSERT_FATAL(st != NULL && st->npartitions == 1);
  int src_port = atoi(strrchr(st->partitions[0].server_address, ':') + 1);
  mf_daemon_t *src = src_port == e.ms->port ? e.ms : e.ms2;
  mf_daemon_t *target = src == e.ms ? e.ms2 : e.ms;
  char key[32], val[SPLIT_VALUE];
  int n80 = (int)(e.o.block_size * 0.80 / (SPLIT_VALUE + 10 + 128));
  int n95 = (int)(e.o.block_size * 0.95 / (SPLIT_VALUE + 10 + 128));
  for (int i = 0; i < n80; i++) {
    snprintf(key, sizeof key, "f%05d", i);
    split_value(i, val);
    MF_ASSERT_EQ(mayfly_kv_put(ns, key, strlen(key), val, SPLIT_VALUE), 0);
  }
  /* The target hangs; crossing the high watermark starts a split whose copy
   * waits on it (the source gives up after 5 s: resume well before). The
   * puts that cross it go on a connection of their own, not waiting for
   * answers (those to moving slots are held, and it reaches its cap too). */
  mf_pause(target);
  int fill = tcp_connect(src->port, 0);
  CU_ASSERT_FATAL(fill >= 0);
  for (int i = n80; i < n95; i++) {
    snprintf(key, sizeof key, "f%05d", i);
    split_value(i, val);
    uint8_t kvp[32 + SPLIT_VALUE];
    memcpy(kvp, key, strlen(key));
    memcpy(kvp + strlen(key), val, SPLIT_VALUE);
    wire_hdr_t h = {.opcode = WIRE_OP_KV_PUT,
                    .request_id = (uint64_t)i + 1,
                    .block_index = (uint32_t)st->partitions[0].block_index,
                    .generation = (uint64_t)st->partitions[0].generation,
                    .arg2 = (uint32_t)strlen(key)};
    size_t fl;
    uint8_t *f = frame_of(h, kvp, (uint32_t)(strlen(key) + SPLIT_VALUE), &fl);
    MF_ASSERT_EQ(send_some(fill, f, fl, 2000), fl);
    g_free(f);
  }
  mf_sleep_ms(300);
  /* 100 puts of 200 bytes on one connection. */
  const int n = 100;
  int fd = tcp_connect(src->port, 0);
  CU_ASSERT_FATAL(fd >= 0);
  size_t flen = 0;
  uint8_t one[300];
  for (int i = 0; i < n; i++) {
    char k[16], v[200];
    snprintf(k, sizeof k, "h%04d", i);
    memset(v, 'v', sizeof v);
    memcpy(v, k, strlen(k));
    memcpy(one, k, strlen(k));
    memcpy(one + strlen(k), v, sizeof v);
    wire_hdr_t h = {.opcode = WIRE_OP_KV_PUT,
                    .request_id = (uint64_t)i + 1,
                    .block_index = (uint32_t)st->partitions[0].block_index,
                    .generation = (uint64_t)st->partitions[0].generation,
                    .arg2 = (uint32_t)strlen(k)};
    uint8_t *f = frame_of(h, one, (uint32_t)(strlen(k) + sizeof v), &flen);
    MF_ASSERT_EQ(send_some(fd, f, flen, 2000), flen);
    g_free(f);
  }
  /* While the target hangs: the answers that come are the puts to slots not
   * being moved, all before the frame that found the connection at its cap. */
  int during = 0;
  uint64_t last_id = 0;
  wire_hdr_t r;
  while (reply_within(fd, 1000) && recv_reply(fd, &r, 1000) == 0) {
    during++;
    last_id = r.request_id;
    CU_ASSERT(r.status == 0);
  }
  MF_ASSERT_EQ(kv_partitions(e.c, path, 0, NULL, NULL), 1); /* the split has not completed */
  mf_resume(target);
  /* Every put is answered now, in order: 0, or MAYFLY_EMOVED for a key the
   * split moved (the client library puts those again at their new owner). */
  int answered = during, moved_or_ok = during;
  int64_t until = now_ms() + 20000;
  while (answered < n && now_ms() < until) {
    if (recv_reply(fd, &r, 20000) != 0) break;
    answered++;
    if (r.status == 0 || r.status == MAYFLY_EMOVED) moved_or_ok++;
  }
  MF_ASSERT_EQ(answered, n);
  MF_ASSERT_EQ(moved_or_ok, n);
  int64_t lo = 0, hi = 0;
  MF_ASSERT_EQ(kv_partitions(e.c, path, target->port, &lo, &hi), 2); /* the split completed */
  /* What was held: the puts to the moved slots [lo, hi) among the first
   * frames, until their copies reached --max-deferred. */
  int held = 0, cap_at = n;
  for (int i = 0; i < n; i++) {
    char k[16];
    snprintf(k, sizeof k, "h%04d", i);
    int64_t slot = wire_kv_slot(k, strlen(k));
    if (slot >= lo && slot < hi && ++held * (int64_t)flen >= e.o.deferred) {
      cap_at = i + 1;
      break;
    }
  }
  fprintf(stderr, "  held during the split: slots [%lld, %lld) moved, %d answers before the "
          "cap (frame %d of %d), last id %llu\n",
          (long long)lo, (long long)hi, during, cap_at, n, (unsigned long long)last_id);
  CU_ASSERT(cap_at < n);
  CU_ASSERT(last_id < (uint64_t)cap_at);
  CU_ASSERT(during < cap_at);
  /* Every put is readable through the library (it follows the new layout). */
  int good = 0;
  for (int i = 0; i < n; i++) {
    char k[16], v[200];
    snprintf(k, sizeof k, "h%04d", i);
    memset(v, 'v', sizeof v);
    memcpy(v, k, strlen(k));
    void *got = NULL;
    size_t glen = 0;
    int rc = mayfly_kv_get(ns, k, strlen(k), &got, &glen);
    if (rc == MAYFLY_ENOKEY) {
      /* Answered EMOVED: the put did not happen; the library's put lands. */
      MF_ASSERT_EQ(mayfly_kv_put(ns, k, strlen(k), v, sizeof v), 0);
      rc = mayfly_kv_get(ns, k, strlen(k), &got, &glen);
    }
    if (rc == 0 && glen == sizeof v && memcmp(got, v, glen) == 0) good++;
    mayfly_free(got);
  }
  MF_ASSERT_EQ(good, n);
  /* The filling connection's puts are all answered too; those answered
   * EMOVED are put again through the library. */
  int fill_answered = 0;
  for (int i = n80; i < n95; i++) {
    if (recv_reply(fill, &r, 20000) != 0) break;
    fill_answered++;
    CU_ASSERT(r.status == 0 || r.status == MAYFLY_EMOVED);
    if (r.status == MAYFLY_EMOVED) {
      int j = (int)r.request_id - 1;
      snprintf(key, sizeof key, "f%05d", j);
      split_value(j, val);
      MF_ASSERT_EQ(mayfly_kv_put(ns, key, strlen(key), val, SPLIT_VALUE), 0);
    }
  }
  MF_ASSERT_EQ(fill_answered, n95 - n80);
  close(fill);
  for (int i = 0; i < n95; i++) {
    void *got = NULL;
    size_t glen = 0;
    snprintf(key, sizeof key, "f%05d", i);
    split_value(i, val);
    if (mayfly_kv_get(ns, key, strlen(key), &got, &glen) != 0 || glen != SPLIT_VALUE ||
        memcmp(got, val, glen) != 0) {
      CU_FAIL("a value written before the split is wrong");
      mayfly_free(got);
      break;
    }
    mayfly_free(got);
  }
  close(fd);
  mayfly_stat_free(st);
  mayfly_unmount(ns);
  ms_env_stop(&e);
}

/* The total reply backlog: 24 connections that never read each ask for 50
 * whole-block FILE_READs. A reply over 64 KiB needs room under
 * --max-reply-backlog-total, so the server's memory stays within the bound
 * of the options (before, each connection held a block or more); a reading
 * client is served meanwhile; the send-stall timeout closes every stalled
 * connection (each logged), after which a whole-block read is served. */
static void test_ms_total_backlog_and_send_timeout(void) {
  const int nconn = 24;
  ms_env_t e = {.o = ms_small};
  e.o.max_conns = 64;
  e.send_timeout = "1s";
  if (ms_env_start(&e, "10s", "600s", "127.0.0.1") != 0) {
    CU_FAIL("the cluster did not start");
    ms_env_stop(&e);
    return;
  }
  mayfly_ns_t *file = NULL, *kv = NULL;
  MF_ASSERT_EQ(mayfly_mount(e.c, "/total/file", MAYFLY_KIND_FILE, NULL, &file), 0);
  MF_ASSERT_EQ(mayfly_mount(e.c, "/total/kv", MAYFLY_KIND_KV, NULL, &kv), 0);
  uint8_t *block = g_malloc(e.o.block_size);
  for (long long i = 0; i < e.o.block_size; i++) block[i] = (uint8_t)(i * 31 + 7);
  MF_ASSERT_EQ(mayfly_file_write(file, 0, block, e.o.block_size), 0);
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(e.c, "/total/file", &st), 0);
  CU_ASSERT_FATAL(st != NULL && st->npartitions >= 1);
  loop_t l = {.ns = kv};
  pthread_t th;
  pthread_create(&th, NULL, kv_loop, &l);
  mf_sleep_ms(300);
  long long base = rss_of(e.ms->pid) + ALLOC_SLACK;
  long long bound = base + ms_bound_growth(&e.o);
  bound += sanitizer_slack(bound);
  /* What the rule of before allowed: a block per connection on top. */
  long long before = base + nconn * e.o.block_size;

  const int reads = 50;
  uint8_t reqs[50 * WIRE_HEADER_SIZE];
  for (int i = 0; i < reads; i++) {
    wire_hdr_t h = {.opcode = WIRE_OP_FILE_READ,
                    .request_id = (uint64_t)i + 1,
                    .block_index = (uint32_t)st->partitions[0].block_index,
                    .generation = (uint64_t)st->partitions[0].generation,
                    .arg1 = (uint64_t)e.o.block_size};
    wire_encode(&h, reqs + (size_t)i * WIRE_HEADER_SIZE);
  }
  int before_log = mf_log_count(e.ms, "no reply byte taken");
  int fds[24];
  int64_t started = now_ms();
  long long peak = 0;
  for (int i = 0; i < nconn; i++) {
    fds[i] = tcp_connect_small(e.ms->port);
    CU_ASSERT_FATAL(fds[i] >= 0);
    MF_ASSERT_EQ(send_some(fds[i], reqs, sizeof reqs, 2000), sizeof reqs);
    long long r = rss_of(e.ms->pid);
    if (r > peak) peak = r;
  }
  /* A reading client is served meanwhile (its small reads always go out). */
  uint8_t small[4096];
  int small_ok = 0;
  for (int i = 0; i < 20; i++) {
    if (mayfly_file_read(file, (uint64_t)i * 4096, small, sizeof small) == (int64_t)sizeof small &&
        memcmp(small, block + i * 4096, sizeof small) == 0) {
      small_ok++;
    }
    long long r = rss_of(e.ms->pid);
    if (r > peak) peak = r;
    mf_sleep_ms(20);
  }
  MF_ASSERT_EQ(small_ok, 20);
  int ok_during = l.ok;
  /* Every stalled connection is closed by the send-stall timeout: each is
   * served in turn as room comes, then stalls. */
  int closed = 0;
  while (now_ms() - started < 40000) {
    long long r = rss_of(e.ms->pid);
    if (r > peak) peak = r;
    closed = mf_log_count(e.ms, "no reply byte taken") - before_log;
    if (closed >= nconn) break;
    mf_sleep_ms(50);
  }
  fprintf(stderr, "  memserver, %d connections not reading whole blocks: base %lld MiB, peak %lld "
          "MiB, bound %lld MiB (the rule before allowed %lld MiB); %d closed by the send timeout "
          "after %lld ms\n", nconn, (base - ALLOC_SLACK) / MiB, peak / MiB, bound / MiB,
          before / MiB, closed, (long long)(now_ms() - started));
  MF_ASSERT_EQ(closed, nconn);
  CU_ASSERT(peak > 0 && peak <= bound);
  for (int i = 0; i < nconn; i++) {
    CU_ASSERT(closed_within(fds[i], 10000));
    close(fds[i]);
  }
  /* A whole-block read is served. */
  uint8_t *back = g_malloc(e.o.block_size);
  MF_ASSERT_EQ(mayfly_file_read(file, 0, back, e.o.block_size), e.o.block_size);
  CU_ASSERT(memcmp(back, block, e.o.block_size) == 0);
  l.stop = 1;
  pthread_join(th, NULL);
  MF_ASSERT_EQ(l.failed, 0);
  CU_ASSERT(ok_during > 0 && l.ok >= ok_during);
  g_free(back);
  g_free(block);
  mayfly_stat_free(st);
  mayfly_unmount(file);
  mayfly_unmount(kv);
  ms_env_stop(&e);
}

/* A waiting pop whose connection does not read its replies (its backlog is
 * within 60 KiB of --max-reply-backlog, or a write of more in flight): a 100 KiB push is not handed to
 * it; the pop is answered MAYFLY_EAGAIN, the item stays in the queue and a
 * reading client pops it, whole. */
static void test_ms_push_skips_pop_without_room(void) {
  ms_env_t e = {.o = ms_small};
  if (ms_env_start(&e, "10s", "600s", "127.0.0.1") != 0) {
    CU_FAIL("the cluster did not start");
    ms_env_stop(&e);
    return;
  }
  mayfly_ns_t *q = NULL, *file = NULL;
  MF_ASSERT_EQ(mayfly_mount(e.c, "/room/q", MAYFLY_KIND_QUEUE, NULL, &q), 0);
  MF_ASSERT_EQ(mayfly_mount(e.c, "/room/file", MAYFLY_KIND_FILE, NULL, &file), 0);
  uint8_t *block = g_malloc0(e.o.block_size);
  MF_ASSERT_EQ(mayfly_file_write(file, 0, block, e.o.block_size), 0);
  mayfly_stat_t *qs = NULL, *fs = NULL;
  MF_ASSERT_EQ(mayfly_stat(e.c, "/room/q", &qs), 0);
  MF_ASSERT_EQ(mayfly_stat(e.c, "/room/file", &fs), 0);
  CU_ASSERT_FATAL(qs != NULL && qs->npartitions >= 1 && fs != NULL && fs->npartitions >= 1);
  /* A pop that waits, then 1,000 reads of 60 KiB it will not read for now
   * (the kernel's socket buffers take several MB of them). */
  const int reads = 1000;
  uint8_t *reqs = g_malloc((size_t)(reads + 1) * WIRE_HEADER_SIZE);
  wire_hdr_t pop = {.opcode = WIRE_OP_Q_POP,
                    .request_id = 5000,
                    .block_index = (uint32_t)qs->partitions[0].block_index,
                    .generation = (uint64_t)qs->partitions[0].generation,
                    .arg0 = 60000};
  wire_encode(&pop, reqs);
  for (int i = 0; i < reads; i++) {
    wire_hdr_t h = {.opcode = WIRE_OP_FILE_READ,
                    .request_id = (uint64_t)i + 1,
                    .block_index = (uint32_t)fs->partitions[0].block_index,
                    .generation = (uint64_t)fs->partitions[0].generation,
                    .arg1 = 60 * KiB};
    wire_encode(&h, reqs + (size_t)(i + 1) * WIRE_HEADER_SIZE);
  }
  int fd = tcp_connect_small(e.ms->port);
  CU_ASSERT_FATAL(fd >= 0);
  size_t total = (size_t)(reads + 1) * WIRE_HEADER_SIZE;
  MF_ASSERT_EQ(send_some(fd, reqs, total, 2000), total);
  mf_sleep_ms(500); /* the server fills the connection's backlog */
  uint8_t *item = g_malloc(100 * KiB);
  for (int i = 0; i < 100 * KiB; i++) item[i] = (uint8_t)(i * 13 + 1);
  MF_ASSERT_EQ(mayfly_queue_push(q, item, 100 * KiB), 0);
  MF_ASSERT_EQ(mayfly_queue_length(q), 1); /* stored, not handed over */
  mayfly_client_t *c2 = NULL;
  mayfly_ns_t *q2 = NULL;
  MF_ASSERT_EQ(mayfly_connect(e.dir->address, NULL, &c2), 0);
  MF_ASSERT_EQ(mayfly_mount(c2, "/room/q", MAYFLY_KIND_QUEUE, NULL, &q2), 0);
  void *got = NULL;
  size_t glen = 0;
  MF_ASSERT_EQ(mayfly_queue_pop(q2, &got, &glen, 2000), 0);
  CU_ASSERT(glen == 100 * KiB && got != NULL && memcmp(got, item, glen) == 0);
  mayfly_free(got);
  /* The non-reading client now reads: its pop was answered "try again". */
  int pop_status = 1, replies = 0;
  wire_hdr_t r;
  while (replies < reads + 1 && recv_reply(fd, &r, 10000) == 0) {
    replies++;
    if (r.request_id == 5000) pop_status = r.status;
  }
  MF_ASSERT_EQ(replies, reads + 1);
  MF_ASSERT_EQ(pop_status, MAYFLY_EAGAIN);
  close(fd);
  g_free(item);
  g_free(reqs);
  g_free(block);
  mayfly_stat_free(qs);
  mayfly_stat_free(fs);
  mayfly_unmount(q2);
  mayfly_disconnect(c2);
  mayfly_unmount(q);
  mayfly_unmount(file);
  ms_env_stop(&e);
}

/* The total rule, deterministically: with --max-reply-backlog-total just
 * over one largest reply, a connection that does not read keeps most of the
 * total queued (small reads, with its backlog never empty); a whole-block
 * read on another connection, whose backlog is empty, then waits for room
 * (before, a reply always went out on an empty backlog). The send-stall
 * timeout closes the first connection and the read is served, right. */
static void test_ms_large_reply_waits_for_total(void) {
  ms_env_t e = {.o = ms_small};
  e.o.backlog_total = 1152 * KiB; /* a largest reply is 1 MiB + 64 KiB + 56 */
  e.send_timeout = "2s";
  if (ms_env_start(&e, "10s", "600s", "127.0.0.1") != 0) {
    CU_FAIL("the cluster did not start");
    ms_env_stop(&e);
    return;
  }
  mayfly_ns_t *file = NULL;
  MF_ASSERT_EQ(mayfly_mount(e.c, "/wait/file", MAYFLY_KIND_FILE, NULL, &file), 0);
  uint8_t *block = g_malloc(e.o.block_size);
  for (long long i = 0; i < e.o.block_size; i++) block[i] = (uint8_t)(i * 17 + 3);
  MF_ASSERT_EQ(mayfly_file_write(file, 0, block, e.o.block_size), 0);
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(e.c, "/wait/file", &st), 0);
  CU_ASSERT_FATAL(st != NULL && st->npartitions >= 1);
  const int reads = 1000;
  uint8_t *reqs = g_malloc((size_t)reads * WIRE_HEADER_SIZE);
  for (int i = 0; i < reads; i++) {
    wire_hdr_t h = {.opcode = WIRE_OP_FILE_READ,
                    .request_id = (uint64_t)i + 1,
                    .block_index = (uint32_t)st->partitions[0].block_index,
                    .generation = (uint64_t)st->partitions[0].generation,
                    .arg1 = 60 * KiB};
    wire_encode(&h, reqs + (size_t)i * WIRE_HEADER_SIZE);
  }
  int stalled = tcp_connect_small(e.ms->port);
  CU_ASSERT_FATAL(stalled >= 0);
  MF_ASSERT_EQ(send_some(stalled, reqs, (size_t)reads * WIRE_HEADER_SIZE, 2000),
               (size_t)reads * WIRE_HEADER_SIZE);
  mf_sleep_ms(500); /* the kernel's buffers fill, then the server's backlog */
  int before_log = mf_log_count(e.ms, "no reply byte taken");
  int fd = tcp_connect(e.ms->port, 0);
  CU_ASSERT_FATAL(fd >= 0);
  wire_hdr_t h = {.opcode = WIRE_OP_FILE_READ,
                  .request_id = 77,
                  .block_index = (uint32_t)st->partitions[0].block_index,
                  .generation = (uint64_t)st->partitions[0].generation,
                  .arg1 = (uint64_t)e.o.block_size};
  uint8_t frame[WIRE_HEADER_SIZE];
  wire_encode(&h, frame);
  MF_ASSERT_EQ(send_some(fd, frame, sizeof frame, 1000), sizeof frame);
  /* No room in the total: the whole-block reply waits. */
  CU_ASSERT(!reply_within(fd, 1000));
  CU_ASSERT(mf_log_count(e.ms, "no reply byte taken") == before_log);
  /* The stalled connection is closed within the send timeout (plus a
   * generous margin); the read is served then, right. */
  uint8_t hdr[WIRE_HEADER_SIZE];
  MF_ASSERT_EQ(recv_all(fd, hdr, sizeof hdr, 2000 + 15000), 0);
  wire_hdr_t r;
  size_t flen;
  int prc = wire_parse(hdr, sizeof hdr, UINT32_MAX, &r, &flen);
  CU_ASSERT(prc == 0 || prc == MAYFLY_EAGAIN);
  MF_ASSERT_EQ(r.status, 0);
  MF_ASSERT_EQ(r.request_id, 77);
  MF_ASSERT_EQ(r.payload_len, e.o.block_size);
  uint8_t *back = g_malloc(e.o.block_size);
  MF_ASSERT_EQ(recv_all(fd, back, e.o.block_size, 10000), 0);
  CU_ASSERT(memcmp(back, block, e.o.block_size) == 0);
  MF_ASSERT_EQ(mf_log_count(e.ms, "no reply byte taken") - before_log, 1);
  CU_ASSERT(closed_within(stalled, 10000));
  close(stalled);
  close(fd);
  g_free(back);
  g_free(reqs);
  g_free(block);
  mayfly_stat_free(st);
  mayfly_unmount(file);
  ms_env_stop(&e);
}

/* --- the directory --- */

typedef struct {
  long long max_conns, read_buffer, input_total, backlog, backlog_total, max_frame;
} dir_opts_t;

/* docs/memory-bound.md, directory: what may grow past the base. */
static long long dir_bound_growth(const dir_opts_t *o) {
  long long per_conn = o->max_conns * (o->backlog > o->max_frame ? o->backlog : o->max_frame);
  long long total = o->backlog_total;
  return o->max_conns * (o->read_buffer + CONN_OVERHEAD) + o->input_total +
         (per_conn < total ? per_conn : total) + 2 * o->max_frame;
}

static mf_daemon_t *dir_start(const dir_opts_t *o, const char *frame_timeout) {
  sanitizer_env();
  char *mc = num(o->max_conns), *rb = num(o->read_buffer), *it = num(o->input_total),
       *bl = num(o->backlog), *bt = num(o->backlog_total), *mf = num(o->max_frame);
  mf_daemon_t *d = mf_start_directory("--max-connections", mc, "--read-buffer", rb,
                                      "--max-input-total", it, "--max-reply-backlog", bl,
                                      "--max-reply-backlog-total", bt, "--max-frame", mf,
                                      "--frame-timeout", frame_timeout, NULL);
  g_free(mc), g_free(rb), g_free(it), g_free(bl), g_free(bt), g_free(mf);
  return d;
}

static const dir_opts_t dir_small = {.max_conns = 32,
                                     .read_buffer = 16 * KiB,
                                     .input_total = 8 * MiB,
                                     .backlog = 1 * MiB,
                                     .backlog_total = 8 * MiB,
                                     .max_frame = 1 * MiB};

static size_t put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

/* A framed compact-protocol call list_children(path). */
static size_t list_children_frame(uint8_t *out, int32_t seqid, const char *path) {
  uint8_t *p = out + 4;
  *p++ = 0x82;
  *p++ = 0x21; /* version 1, type CALL */
  p += put_varint(p, (uint32_t)seqid); /* compact: a plain varint */
  const char *name = "list_children";
  p += put_varint(p, strlen(name));
  memcpy(p, name, strlen(name));
  p += strlen(name);
  *p++ = 0x18; /* field 1, binary */
  p += put_varint(p, strlen(path));
  memcpy(p, path, strlen(path));
  p += strlen(path);
  *p++ = 0x00; /* stop */
  size_t len = (size_t)(p - out - 4);
  out[0] = (uint8_t)(len >> 24), out[1] = (uint8_t)(len >> 16), out[2] = (uint8_t)(len >> 8),
  out[3] = (uint8_t)len;
  return len + 4;
}

typedef struct {
  mayfly_client_t *c;
  volatile int stop;
  int ok, failed;
} dir_loop_t;

static void *dir_loop(void *arg) {
  dir_loop_t *l = arg;
  for (int i = 0; !l->stop; i++) {
    char path[64];
    snprintf(path, sizeof path, "/alive/n%d", i);
    mayfly_stat_t *st = NULL;
    if (mayfly_mkdir(l->c, path, 1) == 0 && mayfly_stat(l->c, path, &st) == 0) {
      l->ok++;
    } else {
      l->failed++;
    }
    mayfly_stat_free(st);
    mf_sleep_ms(2);
  }
  return NULL;
}

/* A client that asks for a large listing 20,000 times and never reads the
 * replies: the directory stops serving it at its reply backlog (before, it
 * queued every reply) and serves another client meanwhile and afterwards. */
static void test_dir_lister_that_never_reads(void) {
  dir_opts_t o = dir_small;
  mf_daemon_t *d = dir_start(&o, "10s");
  CU_ASSERT_FATAL(d != NULL);
  mayfly_client_t *c = NULL, *c2 = NULL;
  MF_ASSERT_EQ(mayfly_connect(d->address, NULL, &c), 0);
  MF_ASSERT_EQ(mayfly_connect(d->address, NULL, &c2), 0);
  /* A directory whose listing is about 100 KB. */
  for (int i = 0; i < 1500; i++) {
    char path[96];
    snprintf(path, sizeof path, "/wide/child-with-a-longish-name-%05d", i);
    if (mayfly_mkdir(c, path, 1) != 0) {
      CU_FAIL("mkdir failed");
      break;
    }
  }
  dir_loop_t l = {.c = c2};
  pthread_t th;
  pthread_create(&th, NULL, dir_loop, &l);
  mf_sleep_ms(300);
  long long base = rss_of(d->pid) + ALLOC_SLACK;
  long long bound = base + dir_bound_growth(&o);
  bound += sanitizer_slack(bound);

  const int n = 20000;
  uint8_t *reqs = g_malloc((size_t)n * 64);
  size_t total = 0;
  for (int i = 0; i < n; i++) total += list_children_frame(reqs + total, i + 1, "/wide");
  int fd = tcp_connect(d->port, 1);
  CU_ASSERT_FATAL(fd >= 0);
  size_t sent = 0;
  long long peak = 0;
  int64_t end = now_ms() + 4000;
  while (sent < total && now_ms() < end) {
    sent += send_some(fd, reqs + sent, total - sent, 200);
    long long r = rss_of(d->pid);
    if (r > peak) peak = r;
  }
  for (int i = 0; i < 10; i++) {
    mf_sleep_ms(100);
    long long r = rss_of(d->pid);
    if (r > peak) peak = r;
  }
  fprintf(stderr, "  directory: base %lld MiB (with slack), peak %lld MiB, bound %lld MiB, "
          "%zu of %zu request bytes taken\n", (base - ALLOC_SLACK) / MiB, peak / MiB,
          bound / MiB, sent, total);
  CU_ASSERT(peak > 0 && peak <= bound);
  int ok_during = l.ok;
  CU_ASSERT(ok_during > 0);
  /* The attacker's first replies are real listings. */
  uint8_t len4[4];
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  MF_ASSERT_EQ(recv_all(fd, len4, 4, 5000), 0);
  uint32_t flen = (uint32_t)len4[0] << 24 | (uint32_t)len4[1] << 16 | (uint32_t)len4[2] << 8 | len4[3];
  CU_ASSERT(flen > 50000 && flen <= o.max_frame);
  close(fd);
  mf_sleep_ms(300);
  l.stop = 1;
  pthread_join(th, NULL);
  MF_ASSERT_EQ(l.failed, 0);
  CU_ASSERT(l.ok > ok_during);
  mayfly_stat_t **list = NULL;
  size_t nl = 0;
  MF_ASSERT_EQ(mayfly_list(c, "/wide", &list, &nl), 0);
  MF_ASSERT_EQ(nl, 1500);
  mayfly_stat_list_free(list, nl);
  g_free(reqs);
  mayfly_disconnect(c);
  mayfly_disconnect(c2);
  MF_ASSERT_EQ(mf_stop(d), 0);
}

/* The directory too: 2,000 connections each holding the start of a frame
 * are closed by the partial-frame timeout, within the memory bound, while
 * another client is served. */
static void test_dir_partial_frames_time_out(void) {
  const int nconn = 2000;
  raise_nofile(nconn + 500);
  dir_opts_t o = dir_small;
  o.max_conns = nconn + 50;
  mf_daemon_t *d = dir_start(&o, "2s");
  CU_ASSERT_FATAL(d != NULL);
  mayfly_client_t *c = NULL;
  MF_ASSERT_EQ(mayfly_connect(d->address, NULL, &c), 0);
  dir_loop_t l = {.c = c};
  pthread_t th;
  pthread_create(&th, NULL, dir_loop, &l);
  mf_sleep_ms(300);
  long long base = rss_of(d->pid) + ALLOC_SLACK;
  long long bound = base + dir_bound_growth(&o);
  bound += sanitizer_slack(bound);
  /* A frame announcing the largest size, of which 1,000 bytes come. */
  uint8_t frame[1004];
  memset(frame, 0, sizeof frame);
  uint32_t announced = (uint32_t)o.max_frame;
  frame[0] = (uint8_t)(announced >> 24), frame[1] = (uint8_t)(announced >> 16),
  frame[2] = (uint8_t)(announced >> 8), frame[3] = (uint8_t)announced;
  int *fds = g_new(int, nconn);
  int opened = 0;
  int64_t started = now_ms();
  for (int i = 0; i < nconn; i++) {
    fds[i] = tcp_connect(d->port, 0);
    if (fds[i] < 0) break;
    opened++;
    if (send_some(fds[i], frame, sizeof frame, 1000) != sizeof frame) break;
  }
  MF_ASSERT_EQ(opened, nconn);
  long long peak = rss_of(d->pid);
  int ok_during = l.ok;
  int closed = 0;
  for (int i = 0; i < opened; i++) {
    long long r = rss_of(d->pid);
    if (r > peak) peak = r;
    int left = (int)(started + 2000 + 15000 - now_ms());
    closed += closed_within(fds[i], left > 0 ? left : 1);
    close(fds[i]);
  }
  fprintf(stderr, "  directory, %d partial frames: base %lld MiB, peak %lld MiB, bound %lld MiB, "
          "%d closed by the server after %lld ms\n", opened, (base - ALLOC_SLACK) / MiB,
          peak / MiB, bound / MiB, closed, (long long)(now_ms() - started));
  MF_ASSERT_EQ(closed, opened);
  CU_ASSERT(peak <= bound);
  /* Only the input terms apply (nothing is served). */
  CU_ASSERT(peak <= base + sanitizer_slack(base) + o.max_conns * (o.read_buffer + CONN_OVERHEAD) +
                        o.input_total);
  mf_sleep_ms(200);
  l.stop = 1;
  pthread_join(th, NULL);
  MF_ASSERT_EQ(l.failed, 0);
  CU_ASSERT(l.ok > ok_during && ok_during > 0);
  g_free(fds);
  mayfly_disconnect(c);
  MF_ASSERT_EQ(mf_stop(d), 0);
}

static const mf_test_t tests[] = {
    {"a memory server client that never reads replies stays within the bound",
     test_ms_reader_that_never_reads},
    {"memory server: 2,000 partial frames stay within the bound and time out",
     test_ms_partial_frames_time_out},
    {"memory server: waiting pops are capped, served in order, dropped with their connection",
     test_ms_waiting_pops_capped_and_dropped},
    {"memory server: idle connections close, a connection waiting for a pop is not idle",
     test_ms_idle_connections_close},
    {"memory server: serves on IPv6", test_ms_serves_ipv6},
    {"memory server: a connection over the input cap stalls and resumes when a buffer is given back",
     test_ms_input_total_stalls_and_resumes},
    {"memory server: the deferred caps stop a connection during a split; the split completes",
     test_ms_deferred_caps_hold_during_split},
    {"memory server: large replies wait for the total backlog; stalled senders time out",
     test_ms_total_backlog_and_send_timeout},
    {"memory server: a push skips a waiting pop whose connection has no room",
     test_ms_push_skips_pop_without_room},
    {"memory server: a large reply on an empty backlog waits for room in the total",
     test_ms_large_reply_waits_for_total},
    {"a directory client that never reads replies stays within the bound",
     test_dir_lister_that_never_reads},
    {"directory: 2,000 partial frames stay within the bound and time out",
     test_dir_partial_frames_time_out},
    {NULL, NULL}};

int main(void) {
  return mf_test_run("bounds", NULL, NULL, tests);
}
