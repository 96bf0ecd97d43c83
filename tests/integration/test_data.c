/*
 * Integration tests of Mayfly's data plane: a real mayfly-directory and three
 * real mayfly-memserver processes on free ports, driven through libmayfly,
 * the `mayfly` CLI and raw TCP sockets.
 *
 * Each test states one behaviour a user relies on (a file spanning servers
 * reads back byte for byte, a queue shared by processes delivers every item
 * exactly once, an unrenewed namespace gives its memory back, a dead server
 * fails fast instead of hanging, hostile bytes close one connection only...)
 * and checks it end to end. Every test starts its own cluster and stops it
 * cleanly at the end (a daemon that does not exit 0 on SIGTERM fails the
 * test); what a failed test leaves running is killed by the harness at exit.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/mayfly.h"
#include "common/wire.h"
#include "harness.h"
#include "mf_test.h"

#define NMS 3 /* memory servers per test */

static int64_t now_ms(void) {
  return g_get_monotonic_time() / 1000;
}

/* --- a cluster: one directory, three memory servers, one client --- */

typedef struct {
  mf_daemon_t *dir;
  mf_daemon_t *ms[NMS]; /* NULL once killed */
  mayfly_client_t *c;
} cluster_t;

/* Starts a directory with the given lease and grace (heartbeats every
 * 200 ms so released blocks reach the memory servers quickly), NMS memory
 * servers of `blocks` blocks of `block_size`, and a client whose calls time
 * out after timeout_ms (0: the library's default). Returns 0 when all is up. */
static int cluster_start(cluster_t *cl, const char *lease, const char *grace, int blocks,
                         const char *block_size, int timeout_ms) {
  memset(cl, 0, sizeof *cl);
  cl->dir = mf_start_directory("--lease-ms", lease, "--grace-ms", grace, "--heartbeat-ms", "200",
                               NULL);
  if (cl->dir == NULL) {
    CU_FAIL("the directory did not start");
    return -1;
  }
  for (int i = 0; i < NMS; i++) {
    cl->ms[i] = mf_start_memserver(cl->dir, blocks, block_size, NULL);
    if (cl->ms[i] == NULL) {
      CU_FAIL("a memory server did not start");
      return -1;
    }
  }
  mayfly_options_t o = {.timeout_ms = timeout_ms};
  int rc = mayfly_connect(cl->dir->address, &o, &cl->c);
  MF_ASSERT_EQ(rc, 0);
  return rc;
}

/* Disconnects and stops every daemon still running; each must exit 0. */
static void cluster_stop(cluster_t *cl) {
  mayfly_disconnect(cl->c);
  cl->c = NULL;
  for (int i = 0; i < NMS; i++) {
    if (cl->ms[i] != NULL) {
      int status = mf_stop(cl->ms[i]);
      if (status != 0) fprintf(stderr, "  memory server %d exited with status %d\n", i, status);
      MF_ASSERT_EQ(status, 0);
      cl->ms[i] = NULL;
    }
  }
  if (cl->dir != NULL) {
    MF_ASSERT_EQ(mf_stop(cl->dir), 0);
    cl->dir = NULL;
  }
}

/* The memory server daemon serving `address`, or -1. */
static int ms_of(const cluster_t *cl, const char *address) {
  for (int i = 0; i < NMS; i++) {
    if (cl->ms[i] != NULL && strcmp(cl->ms[i]->address, address) == 0) return i;
  }
  return -1;
}

/* How many distinct memory servers hold the namespace's partitions. */
static int distinct_servers(const mayfly_stat_t *st) {
  int seen[64] = {0}, n = 0;
  for (size_t i = 0; i < st->npartitions; i++) {
    int id = st->partitions[i].server_id;
    if (id >= 0 && id < 64 && !seen[id]) {
      seen[id] = 1;
      n++;
    }
  }
  return n;
}

/* Blocks the directory counts as used on each of the cluster's servers
 * (used[i] for cl->ms[i]); returns 0 or an error. */
static int blocks_used_per_server(const cluster_t *cl, int used[NMS]) {
  mayfly_server_t *s = NULL;
  size_t n = 0;
  int rc = mayfly_servers(cl->c, &s, &n);
  if (rc != 0) return rc;
  for (int i = 0; i < NMS; i++) used[i] = -1;
  for (size_t k = 0; k < n; k++) {
    int i = ms_of(cl, s[k].address);
    if (i >= 0) used[i] = s[k].blocks_used;
  }
  mayfly_servers_free(s, n);
  return 0;
}

/* Whether `mayfly servers` output has a line for `address`, up, showing
 * "USED/TOTAL" blocks. */
static int servers_line_shows(const char *out, const char *address, int used, int total) {
  int ok = 0;
  char **lines = g_strsplit(out ? out : "", "\n", -1);
  for (char **l = lines; *l != NULL; l++) {
    char **cols = g_strsplit_set(*l, " ", -1);
    char *want = g_strdup_printf("%d/%d", used, total);
    int addr = 0, up = 0, blocks = 0;
    for (char **c = cols; *c != NULL; c++) {
      addr |= strcmp(*c, address) == 0;
      up |= strcmp(*c, "up") == 0;
      blocks |= strcmp(*c, want) == 0;
    }
    ok |= addr && up && blocks;
    g_free(want);
    g_strfreev(cols);
  }
  g_strfreev(lines);
  if (!ok) fprintf(stderr, "  `mayfly servers` does not show %s with %d/%d:\n%s", address, used, total, out ? out : "");
  return ok;
}

/* --- raw data-plane frames, encoded here from the documented layout so the
 * tests do not trust the codec they are checking: magic "MF", version 1,
 * opcode, then little-endian payload_len@4, request_id@8, block_index@16,
 * flags@20, cap_len@22, generation@24, arg0@32, arg1@40, status@48,
 * arg2@52; 56 bytes in all. --- */

enum {
  OP_PING = 0x01,
  OP_SERVER_STAT = 0x03,
  OP_FILE_READ = 0x11,
  OP_Q_PUSH = 0x20,
  OP_KV_PUT = 0x30,
  OP_KV_GET = 0x31,
  HDR = 56,
  F_REPLY = 0x0001
};

typedef struct {
  uint8_t opcode;
  uint16_t flags;
  uint32_t payload_len;
  uint64_t id;
  uint32_t block;
  uint64_t gen;
  uint64_t arg0, arg1;
  int32_t status;
  uint32_t arg2;
} frame_t;

static void put_le(uint8_t *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

static void encode(const frame_t *f, uint8_t out[HDR]) {
  out[0] = 'M';
  out[1] = 'F';
  out[2] = 1;
  out[3] = f->opcode;
  put_le(out + 4, f->payload_len, 4);
  put_le(out + 8, f->id, 8);
  put_le(out + 16, f->block, 4);
  put_le(out + 20, f->flags, 2);
  put_le(out + 22, 0, 2);
  put_le(out + 24, f->gen, 8);
  put_le(out + 32, f->arg0, 8);
  put_le(out + 40, f->arg1, 8);
  put_le(out + 48, (uint32_t)f->status, 4);
  put_le(out + 52, f->arg2, 4);
}

/* Sends a frame whose payload is `payload` (payload_len set from len). */
static int send_frame(int fd, frame_t f, const void *payload, size_t len) {
  uint8_t h[HDR];
  f.payload_len = (uint32_t)len;
  encode(&f, h);
  if (mf_send_all(fd, h, HDR) != 0) return -1;
  return len > 0 ? mf_send_all(fd, payload, len) : 0;
}

/* Receives one reply frame; *payload (may be NULL) gets its payload
 * (g_free). Returns 0, or -1 when the connection closed or 3 s passed. */
static int recv_frame(int fd, frame_t *f, uint8_t **payload) {
  uint8_t h[HDR];
  if (mf_recv_all(fd, h, HDR) != 0) return -1;
  if (h[0] != 'M' || h[1] != 'F' || h[2] != 1) return -1;
  f->opcode = h[3];
  f->payload_len = (uint32_t)get_le(h + 4, 4);
  f->id = get_le(h + 8, 8);
  f->block = (uint32_t)get_le(h + 16, 4);
  f->flags = (uint16_t)get_le(h + 20, 2);
  f->gen = get_le(h + 24, 8);
  f->arg0 = get_le(h + 32, 8);
  f->arg1 = get_le(h + 40, 8);
  f->status = (int32_t)get_le(h + 48, 4);
  f->arg2 = (uint32_t)get_le(h + 52, 4);
  uint8_t *p = g_malloc(f->payload_len + 1);
  if (f->payload_len > 0 && mf_recv_all(fd, p, f->payload_len) != 0) {
    g_free(p);
    return -1;
  }
  if (payload != NULL) {
    *payload = p;
  } else {
    g_free(p);
  }
  return 0;
}

/* Whether the peer closes the connection within 3 s without sending a
 * frame: 1 closed, 0 still open (or it sent bytes). */
static int peer_closes(int fd) {
  uint8_t tmp[256];
  ssize_t r = recv(fd, tmp, sizeof tmp, 0);
  return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

/* One request, one reply, on a fresh connection. Returns the reply's status
 * (payload into *payload when not NULL), or 1 when no reply came. */
static int raw_call(int port, frame_t f, const void *payload, size_t len, frame_t *rep,
                    uint8_t **out) {
  int fd = mf_raw_connect(port, 3);
  if (fd < 0) return 1;
  int rc = 1;
  if (send_frame(fd, f, payload, len) == 0 && recv_frame(fd, rep, out) == 0) rc = rep->status;
  close(fd);
  return rc;
}

/* --- 1. files --- */

#define MIB (1u << 20)
#define BLK (64u << 10)

static void fill_random(uint8_t *buf, size_t len, guint32 seed) {
  GRand *r = g_rand_new_with_seed(seed);
  for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)g_rand_int(r);
  g_rand_free(r);
}

/* Reads [off, off+len) and compares it with want[off...]; returns 1 if the
 * count and every byte match. */
static int reads_back(mayfly_ns_t *ns, uint64_t off, size_t len, const uint8_t *want,
                      int64_t want_count) {
  uint8_t *buf = g_malloc(len + 1);
  int64_t n = mayfly_file_read(ns, off, buf, len);
  int ok = n == want_count && (n <= 0 || memcmp(buf, want + off, (size_t)n) == 0);
  if (!ok) {
    fprintf(stderr, "  read [%llu, +%zu) returned %lld (want %lld)%s\n", (unsigned long long)off,
            len, (long long)n, (long long)want_count, n == want_count ? ", bytes differ" : "");
  }
  g_free(buf);
  return ok;
}

static void test_a_file_larger_than_a_block_spans_servers_and_reads_back_exactly(void) {
  cluster_t cl;
  if (cluster_start(&cl, "10s", "10s", 16, "64KiB", 0) != 0) goto out;
  mayfly_ns_t *ns = NULL;
  MF_ASSERT_EQ(mayfly_mount(cl.c, "/job/blob", MAYFLY_KIND_FILE, NULL, &ns), 0);
  if (ns == NULL) goto out;

  /* The expected contents of the whole file, as it evolves. */
  size_t cap = 2 * MIB;
  uint8_t *want = g_malloc0(cap);
  fill_random(want, MIB, 1);
  MF_ASSERT_EQ(mayfly_file_write(ns, 0, want, MIB), 0);
  MF_ASSERT_EQ(mayfly_file_size(ns), MIB);

  /* Sixteen 64 KiB blocks, consecutive byte ranges, on all three servers. */
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(cl.c, "/job/blob", &st), 0);
  if (st != NULL) {
    MF_ASSERT_EQ(st->kind, MAYFLY_KIND_FILE);
    MF_ASSERT_EQ(st->npartitions, MIB / BLK);
    MF_ASSERT_EQ(distinct_servers(st), NMS);
    int64_t covered = 0;
    for (size_t i = 0; i < st->npartitions; i++) {
      MF_ASSERT_EQ(st->partitions[i].block_size, BLK);
      covered += st->partitions[i].range_hi - st->partitions[i].range_lo;
    }
    MF_ASSERT_EQ(covered, MIB);
    mayfly_stat_free(st);
  }

  /* Whole, then at odd offsets and lengths crossing block boundaries. */
  CU_ASSERT(reads_back(ns, 0, MIB, want, MIB));
  CU_ASSERT(reads_back(ns, 0, 1, want, 1));
  CU_ASSERT(reads_back(ns, BLK - 1, 2, want, 2));
  CU_ASSERT(reads_back(ns, 3 * BLK - 7, 2 * BLK + 13, want, 2 * BLK + 13));
  CU_ASSERT(reads_back(ns, 123457, 654321, want, 654321));
  CU_ASSERT(reads_back(ns, MIB - 1, 1, want, 1));
  CU_ASSERT(reads_back(ns, MIB - 6, 100, want, 6)); /* short at the end */
  CU_ASSERT(reads_back(ns, MIB, 10, want, 0));      /* at the end */
  CU_ASSERT(reads_back(ns, 3 * MIB, 10, want, 0));  /* far past it */

  /* An overwrite across a block boundary changes exactly those bytes. */
  fill_random(want + 5 * BLK - 50, 100, 2);
  MF_ASSERT_EQ(mayfly_file_write(ns, 5 * BLK - 50, want + 5 * BLK - 50, 100), 0);
  CU_ASSERT(reads_back(ns, 4 * BLK, 2 * BLK, want, 2 * BLK));
  MF_ASSERT_EQ(mayfly_file_size(ns), MIB);

  /* Append lands at the end. */
  uint64_t at = 0;
  fill_random(want + MIB, 1000, 3);
  MF_ASSERT_EQ(mayfly_file_append(ns, want + MIB, 1000, &at), 0);
  MF_ASSERT_EQ(at, MIB);
  MF_ASSERT_EQ(mayfly_file_size(ns), MIB + 1000);
  CU_ASSERT(reads_back(ns, MIB - 500, 1500, want, 1500));

  /* A write past the end leaves a zero-filled gap (want is zeroed there). */
  uint64_t far = MIB + 1000 + 70000;
  fill_random(want + far, 10, 4);
  MF_ASSERT_EQ(mayfly_file_write(ns, far, want + far, 10), 0);
  MF_ASSERT_EQ(mayfly_file_size(ns), far + 10);
  CU_ASSERT(reads_back(ns, MIB, 1000 + 70000 + 10, want, 1000 + 70000 + 10));
  CU_ASSERT(reads_back(ns, 0, cap, want, (int64_t)far + 10));
  CU_ASSERT(reads_back(ns, far + 5, 100, want, 5));

  /* The memory servers hold exactly the bytes written: 16 full blocks, the
   * appended 1000 bytes, and the block with the far write up to its end. */
  st = NULL;
  MF_ASSERT_EQ(mayfly_stat(cl.c, "/job/blob", &st), 0);
  if (st != NULL) {
    MF_ASSERT_EQ(st->npartitions, MIB / BLK + 2);
    mayfly_usage_t *use = g_new0(mayfly_usage_t, st->npartitions);
    MF_ASSERT_EQ(mayfly_usage(cl.c, st, use), 0);
    int64_t bytes = 0;
    for (size_t i = 0; i < st->npartitions; i++) bytes += use[i].items;
    MF_ASSERT_EQ(bytes, MIB + 1000 + (far + 10 - (MIB + BLK)));
    g_free(use);
    mayfly_stat_free(st);
  }
  g_free(want);
  mayfly_unmount(ns);
out:
  cluster_stop(&cl);
}

/* --- 2. a queue shared by processes --- */

#define PRODUCERS 4
#define CONSUMERS 4
#define ITEMS_PER_PRODUCER 2000

static const char queue_path[] = "/job/work";

static void producer_main(const char *dir, int p) {
  mayfly_client_t *c = NULL;
  mayfly_ns_t *ns = NULL;
  if (mayfly_connect(dir, NULL, &c) != 0) _exit(2);
  if (mayfly_mount(c, queue_path, MAYFLY_KIND_QUEUE, NULL, &ns) != 0) _exit(3);
  for (int seq = 0; seq < ITEMS_PER_PRODUCER; seq++) {
    char item[32];
    int len = snprintf(item, sizeof item, "p%d-%d", p, seq);
    int rc = mayfly_queue_push(ns, item, (size_t)len);
    if (rc != 0) {
      fprintf(stderr, "producer %d: push %s: %s\n", p, item, mayfly_strerror(rc));
      _exit(4);
    }
  }
  mayfly_unmount(ns);
  mayfly_disconnect(c);
  _exit(0);
}

/* Pops until it gets an "END" sentinel, writing each item on a line of
 * `out`. Waits for the go-ahead byte on `gate` first. */
static void consumer_main(const char *dir, int gate, const char *out) {
  char go;
  if (read(gate, &go, 1) != 1) _exit(2);
  mayfly_client_t *c = NULL;
  mayfly_ns_t *ns = NULL;
  if (mayfly_connect(dir, NULL, &c) != 0) _exit(3);
  if (mayfly_mount(c, queue_path, MAYFLY_KIND_QUEUE, NULL, &ns) != 0) _exit(4);
  FILE *f = fopen(out, "w");
  if (f == NULL) _exit(5);
  int64_t give_up = now_ms() + 40000;
  for (;;) {
    void *v = NULL;
    size_t len = 0;
    int rc = mayfly_queue_pop(ns, &v, &len, 500);
    if (rc == MAYFLY_EAGAIN) {
      if (now_ms() > give_up) _exit(6);
      continue;
    }
    if (rc != 0) {
      fprintf(stderr, "consumer: pop: %s\n", mayfly_strerror(rc));
      _exit(7);
    }
    int end = len == 3 && memcmp(v, "END", 3) == 0;
    if (!end) {
      fwrite(v, 1, len, f);
      fputc('\n', f);
    }
    mayfly_free(v);
    if (end) break;
  }
  if (fclose(f) != 0) _exit(8);
  mayfly_unmount(ns);
  mayfly_disconnect(c);
  _exit(0);
}

/* Whether a child is still running (without reaping it). */
static int still_running(pid_t pid) {
  siginfo_t info = {0};
  return waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == 0;
}

/* Waits for the children in pids[0..n) until deadline_ms; kills the ones
 * still running after it. Each status goes to status[i] (-1 if killed).
 * Returns how many were killed. */
static int reap_all(pid_t *pids, int *status, int n, int64_t deadline_ms) {
  int left = 0;
  for (int i = 0; i < n; i++) left += pids[i] > 0;
  while (left > 0 && now_ms() < deadline_ms) {
    for (int i = 0; i < n; i++) {
      if (pids[i] > 0 && waitpid(pids[i], &status[i], WNOHANG) == pids[i]) {
        pids[i] = 0;
        left--;
      }
    }
    if (left > 0) mf_sleep_ms(10);
  }
  for (int i = 0; i < n; i++) {
    if (pids[i] > 0) {
      fprintf(stderr, "  watchdog: child %d (pid %d) still running; killing it\n", i,
              (int)pids[i]);
      kill(pids[i], SIGKILL);
      waitpid(pids[i], NULL, 0);
      pids[i] = 0;
      status[i] = -1;
    }
  }
  return left;
}

static void test_a_queue_shared_by_four_producer_and_four_consumer_processes_delivers_each_item_once(
    void) {
  cluster_t cl;
  char *tmp = g_dir_make_tmp("mayfly-queue-XXXXXX", NULL);
  char *outs[CONSUMERS] = {0};
  pid_t prod[PRODUCERS] = {0}, cons[CONSUMERS] = {0};
  int pstat[PRODUCERS], cstat[CONSUMERS];
  int gate[2] = {-1, -1};
  /* Blocks of 16 KiB hold about 400 of these items: the queue must grow
   * over many segments (and servers) to hold them. */
  if (cluster_start(&cl, "10s", "10s", 32, "16KiB", 0) != 0) goto out;
  MF_ASSERT_EQ(mayfly_create(cl.c, queue_path, MAYFLY_KIND_QUEUE, NULL, NULL), 0);
  for (int i = 0; i < CONSUMERS; i++) outs[i] = g_strdup_printf("%s/consumer%d", tmp, i);
  if (pipe(gate) != 0) goto out;

  /* Fork before this process starts any thread (no namespace is mounted
   * here yet): each child makes its own connection. */
  fflush(NULL);
  for (int i = 0; i < CONSUMERS; i++) {
    cons[i] = fork();
    if (cons[i] == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      close(gate[1]);
      consumer_main(cl.dir->address, gate[0], outs[i]);
    }
  }
  for (int p = 0; p < PRODUCERS; p++) {
    prod[p] = fork();
    if (prod[p] == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      producer_main(cl.dir->address, p);
    }
  }
  close(gate[0]);
  gate[0] = -1;
  int64_t deadline = now_ms() + 50000;

  /* Let the consumers in once the queue has grown past its first segments,
   * while the producers are (normally) still pushing. */
  size_t grown = 0;
  for (int64_t until = now_ms() + 20000; now_ms() < until;) {
    mayfly_stat_t *st = NULL;
    if (mayfly_stat(cl.c, queue_path, &st) == 0) {
      grown = st->npartitions;
      mayfly_stat_free(st);
    }
    int running = 0;
    for (int p = 0; p < PRODUCERS; p++) running += still_running(prod[p]);
    if (grown >= 3 || running < PRODUCERS) break;
    mf_sleep_ms(5);
  }
  CU_ASSERT(grown > 1);
  char go[CONSUMERS] = {0};
  MF_ASSERT_EQ(write(gate[1], go, sizeof go), CONSUMERS);
  close(gate[1]);
  gate[1] = -1;

  /* Producers finish; then one sentinel per consumer goes behind all items. */
  MF_ASSERT_EQ(reap_all(prod, pstat, PRODUCERS, deadline), 0);
  for (int p = 0; p < PRODUCERS; p++) {
    if (!(WIFEXITED(pstat[p]) && WEXITSTATUS(pstat[p]) == 0)) {
      fprintf(stderr, "  producer %d: status %d\n", p, pstat[p]);
      CU_FAIL("a producer failed");
    }
  }
  mayfly_ns_t *ns = NULL;
  MF_ASSERT_EQ(mayfly_mount(cl.c, queue_path, MAYFLY_KIND_QUEUE, NULL, &ns), 0);
  for (int i = 0; ns != NULL && i < CONSUMERS; i++) MF_ASSERT_EQ(mayfly_queue_push(ns, "END", 3), 0);
  MF_ASSERT_EQ(reap_all(cons, cstat, CONSUMERS, deadline), 0);
  for (int i = 0; i < CONSUMERS; i++) {
    if (!(WIFEXITED(cstat[i]) && WEXITSTATUS(cstat[i]) == 0)) {
      fprintf(stderr, "  consumer %d: status %d\n", i, cstat[i]);
      CU_FAIL("a consumer failed");
    }
  }

  /* Every item exactly once, and each consumer saw each producer's items in
   * the order they were pushed. */
  int *seen = g_new0(int, PRODUCERS * ITEMS_PER_PRODUCER);
  int bad_lines = 0, out_of_order = 0, per_consumer_min = ITEMS_PER_PRODUCER * PRODUCERS;
  for (int i = 0; i < CONSUMERS; i++) {
    char *text = NULL;
    if (!g_file_get_contents(outs[i], &text, NULL, NULL)) {
      CU_FAIL("a consumer left no output");
      continue;
    }
    int last[PRODUCERS];
    for (int p = 0; p < PRODUCERS; p++) last[p] = -1;
    char **lines = g_strsplit(text, "\n", -1);
    int count = 0;
    for (char **l = lines; *l != NULL; l++) {
      if (**l == '\0') continue;
      int p, seq;
      char extra;
      if (sscanf(*l, "p%d-%d%c", &p, &seq, &extra) != 2 || p < 0 || p >= PRODUCERS || seq < 0 ||
          seq >= ITEMS_PER_PRODUCER) {
        bad_lines++;
        continue;
      }
      seen[p * ITEMS_PER_PRODUCER + seq]++;
      if (seq <= last[p]) out_of_order++;
      last[p] = seq;
      count++;
    }
    per_consumer_min = MIN(per_consumer_min, count);
    g_strfreev(lines);
    g_free(text);
  }
  int missing = 0, duplicated = 0;
  for (int k = 0; k < PRODUCERS * ITEMS_PER_PRODUCER; k++) {
    missing += seen[k] == 0;
    duplicated += seen[k] > 1;
  }
  MF_ASSERT_EQ(bad_lines, 0);
  MF_ASSERT_EQ(missing, 0);
  MF_ASSERT_EQ(duplicated, 0);
  MF_ASSERT_EQ(out_of_order, 0);
  g_free(seen);
  /* All drained: the queue gave its drained head blocks back, one is left. */
  if (ns != NULL) {
    MF_ASSERT_EQ(mayfly_queue_length(ns), 0);
    void *v = NULL;
    size_t len = 0;
    MF_ASSERT_EQ(mayfly_queue_pop(ns, &v, &len, 0), MAYFLY_EAGAIN);
  }
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(cl.c, queue_path, &st), 0);
  if (st != NULL) {
    MF_ASSERT_EQ(st->npartitions, 1);
    mayfly_stat_free(st);
  }
  mayfly_unmount(ns);
out:
  for (int i = 0; i < 2; i++) {
    if (gate[i] >= 0) close(gate[i]);
  }
  reap_all(prod, pstat, PRODUCERS, 0);
  reap_all(cons, cstat, CONSUMERS, 0);
  for (int i = 0; i < CONSUMERS; i++) {
    if (outs[i] != NULL) g_unlink(outs[i]);
    g_free(outs[i]);
  }
  g_rmdir(tmp);
  g_free(tmp);
  cluster_stop(&cl);
}

/* --- 3. a kv namespace with 100,000 keys --- */

#define KV_KEYS 100000
#define KV_THREADS 4

/* Key i's value: 0..40 bytes (every 997th: 3000), binary, with NUL bytes. */
static size_t kv_value(int i, uint8_t *buf) {
  size_t len = i % 997 == 0 ? 3000 : (size_t)(i % 41);
  for (size_t j = 0; j < len; j++) buf[j] = j % 5 == 1 ? 0 : (uint8_t)(i * 31 + j * 7);
  return len;
}

static size_t kv_key(int i, char *buf) {
  return (size_t)sprintf(buf, "key-%06d", i);
}

typedef struct {
  mayfly_ns_t *ns;
  int lo, hi; /* keys [lo, hi) */
  int errors, wrong, deleted;
} kv_worker_t;

static void *kv_worker(void *arg) {
  kv_worker_t *w = arg;
  uint8_t val[4096];
  char key[32];
  for (int i = w->lo; i < w->hi; i++) {
    size_t kl = kv_key(i, key), vl = kv_value(i, val);
    if (mayfly_kv_put(w->ns, key, kl, val, vl) != 0) w->errors++;
  }
  for (int i = w->lo; i < w->hi; i++) {
    size_t kl = kv_key(i, key), vl = kv_value(i, val);
    void *got = NULL;
    size_t gl = 0;
    int rc = mayfly_kv_get(w->ns, key, kl, &got, &gl);
    if (rc != 0) {
      w->errors++;
    } else if (gl != vl || memcmp(got, val, vl) != 0) {
      w->wrong++;
    }
    mayfly_free(got);
  }
  /* Delete every third key; check exists before and after. */
  for (int i = w->lo; i < w->hi; i += 3) {
    size_t kl = kv_key(i, key);
    if (mayfly_kv_exists(w->ns, key, kl) != 1) w->wrong++;
    if (mayfly_kv_delete(w->ns, key, kl) != 0) w->errors++;
    if (mayfly_kv_exists(w->ns, key, kl) != 0) w->wrong++;
    w->deleted++;
  }
  for (int i = w->lo; i < w->hi; i++) {
    size_t kl = kv_key(i, key), vl = kv_value(i, val);
    void *got = NULL;
    size_t gl = 0;
    int rc = mayfly_kv_get(w->ns, key, kl, &got, &gl);
    if ((i - w->lo) % 3 == 0) {
      if (rc != MAYFLY_ENOKEY) w->wrong++;
      if (i % 7 == 0 && mayfly_kv_delete(w->ns, key, kl) != MAYFLY_ENOKEY) w->wrong++;
    } else if (rc != 0 || gl != vl || memcmp(got, val, vl) != 0) {
      w->wrong++;
    }
    mayfly_free(got);
  }
  return NULL;
}

static void test_a_kv_namespace_of_four_partitions_holds_a_hundred_thousand_keys(void) {
  cluster_t cl;
  if (cluster_start(&cl, "10s", "10s", 4, "4MiB", 0) != 0) goto out;
  mayfly_ns_t *ns = NULL;
  mayfly_create_options_t o = {.blocks = 4};
  MF_ASSERT_EQ(mayfly_mount(cl.c, "/job/index", MAYFLY_KIND_KV, &o, &ns), 0);
  if (ns == NULL) goto out;

  /* Keys and values that C strings would get wrong. */
  const char k1[] = "bin\0a", k2[] = "bin\0b";
  const uint8_t v1[] = {0, 0, 0}, v2[] = {0xff, 0, 0x7f, 0};
  MF_ASSERT_EQ(mayfly_kv_put(ns, k1, sizeof k1, v1, sizeof v1), 0);
  MF_ASSERT_EQ(mayfly_kv_put(ns, k2, sizeof k2, v2, sizeof v2), 0);
  MF_ASSERT_EQ(mayfly_kv_put(ns, "empty", 5, "", 0), 0);
  void *got = NULL;
  size_t gl = 99;
  MF_ASSERT_EQ(mayfly_kv_get(ns, k1, sizeof k1, &got, &gl), 0);
  CU_ASSERT(gl == sizeof v1 && got != NULL && memcmp(got, v1, gl) == 0);
  mayfly_free(got);
  got = NULL;
  MF_ASSERT_EQ(mayfly_kv_get(ns, k2, sizeof k2, &got, &gl), 0);
  CU_ASSERT(gl == sizeof v2 && got != NULL && memcmp(got, v2, gl) == 0);
  mayfly_free(got);
  got = NULL;
  MF_ASSERT_EQ(mayfly_kv_get(ns, "empty", 5, &got, &gl), 0);
  MF_ASSERT_EQ(gl, 0);
  CU_ASSERT_PTR_NOT_NULL(got); /* present, empty: not "absent" */
  mayfly_free(got);
  got = NULL;
  MF_ASSERT_EQ(mayfly_kv_get(ns, "bin", 3, &got, &gl), MAYFLY_ENOKEY);
  MF_ASSERT_EQ(mayfly_kv_exists(ns, "bin", 3), 0);

  /* Four threads sharing the client and the handle, 25,000 keys each. */
  pthread_t th[KV_THREADS];
  kv_worker_t w[KV_THREADS];
  for (int t = 0; t < KV_THREADS; t++) {
    w[t] = (kv_worker_t){.ns = ns, .lo = t * (KV_KEYS / KV_THREADS),
                         .hi = (t + 1) * (KV_KEYS / KV_THREADS)};
    pthread_create(&th[t], NULL, kv_worker, &w[t]);
  }
  int errors = 0, wrong = 0, deleted = 0;
  for (int t = 0; t < KV_THREADS; t++) {
    pthread_join(th[t], NULL);
    errors += w[t].errors;
    wrong += w[t].wrong;
    deleted += w[t].deleted;
  }
  MF_ASSERT_EQ(errors, 0);
  MF_ASSERT_EQ(wrong, 0);

  /* The memory servers hold exactly the surviving keys, on the four
   * partitions it was created with or more (the data outgrew 4 x 4 MiB at
   * 90 %, so some split), each with a share. */
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(cl.c, "/job/index", &st), 0);
  if (st != NULL) {
    CU_ASSERT(st->npartitions >= 4);
    mayfly_usage_t *use = g_new0(mayfly_usage_t, st->npartitions);
    MF_ASSERT_EQ(mayfly_usage(cl.c, st, use), 0);
    int64_t keys = 0;
    for (size_t i = 0; i < st->npartitions; i++) {
      keys += use[i].items;
      CU_ASSERT(use[i].items > 0);
    }
    MF_ASSERT_EQ(keys, KV_KEYS - deleted + 3);
    g_free(use);
    mayfly_stat_free(st);
  }
  mayfly_unmount(ns);
out:
  cluster_stop(&cl);
}

/* --- 4. expiry --- */

/* Asks each partition of `st` on the wire for keys "k0".."k<n-1>": counts
 * the replies carrying the value "data" in *hits, and the "moved" ones (a
 * key of another partition's slots, or a stale block) in *moved. */
static void raw_kv_probe(const cluster_t *cl, const mayfly_stat_t *st, int n, int *hits,
                         int *moved) {
  *hits = *moved = 0;
  for (size_t p = 0; p < st->npartitions; p++) {
    int i = ms_of(cl, st->partitions[p].server_address);
    CU_ASSERT(i >= 0);
    if (i < 0) continue;
    for (int k = 0; k < n; k++) {
      char key[16];
      size_t kl = (size_t)sprintf(key, "k%d", k);
      frame_t rep = {0};
      uint8_t *payload = NULL;
      frame_t f = {.opcode = OP_KV_GET, .id = 7, .block = (uint32_t)st->partitions[p].block_index,
                   .gen = (uint64_t)st->partitions[p].generation};
      int rc = raw_call(cl->ms[i]->port, f, key, kl, &rep, &payload);
      if (rc == 0 && rep.payload_len == 4 && memcmp(payload, "data", 4) == 0) (*hits)++;
      if (rc == MAYFLY_EMOVED && rep.payload_len == 0) (*moved)++;
      g_free(payload);
    }
  }
}

static void test_an_unmounted_namespace_expires_and_its_blocks_return_to_the_pool(void) {
  cluster_t cl;
  mayfly_ns_t *keep = NULL, *job = NULL;
  mayfly_stat_t *old = NULL;
  if (cluster_start(&cl, "2000", "500", 16, "64KiB", 0) != 0) goto out;
  int before[NMS], used[NMS];
  MF_ASSERT_EQ(blocks_used_per_server(&cl, before), 0);

  /* A namespace that stays mounted throughout: the control group. */
  MF_ASSERT_EQ(mayfly_mount(cl.c, "/keep/kv", MAYFLY_KIND_KV, NULL, &keep), 0);
  mayfly_create_options_t three = {.blocks = 3};
  MF_ASSERT_EQ(mayfly_mount(cl.c, "/job/kv", MAYFLY_KIND_KV, &three, &job), 0);
  if (keep == NULL || job == NULL) goto done;
  MF_ASSERT_EQ(mayfly_kv_put(keep, "k", 1, "kept", 4), 0);
  /* What each server should count once /job/kv is gone: its earlier value,
   * plus the kept namespace's block on one of them. */
  int expect[NMS];
  memcpy(expect, before, sizeof expect);
  mayfly_stat_t *kst = NULL;
  MF_ASSERT_EQ(mayfly_stat(cl.c, "/keep/kv", &kst), 0);
  int ks = kst != NULL && kst->npartitions == 1 ? ms_of(&cl, kst->partitions[0].server_address) : -1;
  mayfly_stat_free(kst);
  if (ks < 0) {
    CU_FAIL("the kept namespace has no block on the cluster's servers");
    goto done;
  }
  expect[ks]++;
  char key[16];
  for (int i = 0; i < 50; i++) {
    size_t kl = (size_t)sprintf(key, "k%d", i);
    MF_ASSERT_EQ(mayfly_kv_put(job, key, kl, "data", 4), 0);
  }
  MF_ASSERT_EQ(mayfly_stat(cl.c, "/job/kv", &old), 0);
  if (old == NULL || old->npartitions != 3) {
    CU_FAIL("/job/kv does not have its three blocks");
    goto done;
  }
  MF_ASSERT_EQ(blocks_used_per_server(&cl, used), 0);
  int grew = 0;
  for (int i = 0; i < NMS; i++) grew += used[i] - before[i];
  MF_ASSERT_EQ(grew, 4);
  mayfly_usage_t use[3];
  MF_ASSERT_EQ(mayfly_usage(cl.c, old, use), 0);
  MF_ASSERT_EQ(use[0].items + use[1].items + use[2].items, 50);
  /* On the wire, each key is served by exactly one of the three blocks. */
  int hits = 0, moved = 0;
  raw_kv_probe(&cl, old, 50, &hits, &moved);
  MF_ASSERT_EQ(hits, 50);
  MF_ASSERT_EQ(moved, 100);

  /* Unmount without remove: still there within the lease... */
  mayfly_unmount(job);
  job = NULL;
  MF_ASSERT_EQ(mayfly_exists(cl.c, "/job/kv"), 1);
  /* ...gone after lease + grace (2.5 s; polled with a generous deadline). */
  int64_t deadline = now_ms() + 10000;
  while (mayfly_exists(cl.c, "/job/kv") != 0 && now_ms() < deadline) mf_sleep_ms(50);
  MF_ASSERT_EQ(mayfly_exists(cl.c, "/job/kv"), 0);
  /* The directory counts its blocks free again, server by server. */
  int back = 0;
  while (!back && now_ms() < deadline) {
    back = blocks_used_per_server(&cl, used) == 0 && memcmp(used, expect, sizeof used) == 0;
    if (!back) mf_sleep_ms(50);
  }
  for (int i = 0; i < NMS; i++) MF_ASSERT_EQ(used[i], expect[i]);
  /* `mayfly servers` says the same. */
  char *out = NULL;
  MF_ASSERT_EQ(mf_cli(cl.dir, &out, NULL, "servers", NULL), 0);
  for (int i = 0; i < NMS; i++) CU_ASSERT(servers_line_shows(out, cl.ms[i]->address, used[i], 16));
  g_free(out);
  /* The memory servers drop the data (each at its next heartbeat): the old
   * layout is refused as stale, by the library and on the wire, and never
   * returns data. */
  int rc = 0, dropped = 0;
  while (!dropped && now_ms() < deadline) {
    rc = mayfly_usage(cl.c, old, use);
    dropped = rc == MAYFLY_EMOVED;
    for (int p = 0; p < 3; p++) dropped = dropped && use[p].bytes_used == -1;
    if (!dropped) mf_sleep_ms(50);
  }
  MF_ASSERT_EQ(rc, MAYFLY_EMOVED);
  CU_ASSERT(dropped);
  raw_kv_probe(&cl, old, 50, &hits, &moved);
  MF_ASSERT_EQ(hits, 0);
  MF_ASSERT_EQ(moved, 150);
  /* The same path mounted again is a new, empty namespace. */
  MF_ASSERT_EQ(mayfly_mount(cl.c, "/job/kv", MAYFLY_KIND_KV, NULL, &job), 0);
  void *v = NULL;
  size_t vl = 0;
  if (job != NULL) MF_ASSERT_EQ(mayfly_kv_get(job, "k1", 2, &v, &vl), MAYFLY_ENOKEY);
  /* The mounted namespace lived through all of it. */
  MF_ASSERT_EQ(mayfly_kv_get(keep, "k", 1, &v, &vl), 0);
  CU_ASSERT(vl == 4 && v != NULL && memcmp(v, "kept", 4) == 0);
  mayfly_free(v);
done:
  mayfly_stat_free(old);
  mayfly_unmount(job);
  mayfly_unmount(keep);
out:
  cluster_stop(&cl);
}

/* --- 5. failures --- */

static int is_failure_code(int rc) {
  return rc == MAYFLY_EIO || rc == MAYFLY_ETIMEDOUT || rc == MAYFLY_ECONNREFUSED;
}

static void test_a_dead_or_hung_server_fails_its_operations_fast_and_spares_the_others(void) {
  cluster_t cl;
  if (cluster_start(&cl, "10s", "10s", 16, "64KiB", 1000) != 0) goto out;
  /* One single-block kv namespace per server (blocks go to the least
   * filled server, so six land two on each). */
  enum { NNS = 6 };
  mayfly_ns_t *ns[NNS] = {0};
  int on[NNS];
  int per_server[NMS] = {0};
  for (int k = 0; k < NNS; k++) {
    char path[32];
    snprintf(path, sizeof path, "/job/kv%d", k);
    MF_ASSERT_EQ(mayfly_mount(cl.c, path, MAYFLY_KIND_KV, NULL, &ns[k]), 0);
    mayfly_stat_t *st = NULL;
    MF_ASSERT_EQ(mayfly_stat(cl.c, path, &st), 0);
    on[k] = st != NULL && st->npartitions == 1 ? ms_of(&cl, st->partitions[0].server_address) : -1;
    mayfly_stat_free(st);
    if (ns[k] == NULL || on[k] < 0) goto unmount;
    per_server[on[k]]++;
    MF_ASSERT_EQ(mayfly_kv_put(ns[k], "k", 1, path, strlen(path)), 0);
  }
  for (int i = 0; i < NMS; i++) CU_ASSERT(per_server[i] > 0);
  for (int i = 0; i < NMS; i++) {
    if (per_server[i] == 0) goto unmount;
  }

  /* Kill server 0: its namespaces fail within the timeout, twice over. */
  mf_kill(cl.ms[0]);
  cl.ms[0] = NULL;
  for (int round = 0; round < 2; round++) {
    for (int k = 0; k < NNS; k++) {
      if (on[k] != 0) continue;
      void *v = NULL;
      size_t vl = 0;
      int64_t t0 = now_ms();
      int rc = mayfly_kv_get(ns[k], "k", 1, &v, &vl);
      int64_t took = now_ms() - t0;
      if (!is_failure_code(rc)) fprintf(stderr, "  get on a killed server: %s\n", mayfly_err_name(rc));
      CU_ASSERT(is_failure_code(rc));
      CU_ASSERT(took < 5000);
      mayfly_free(v);
      rc = mayfly_kv_put(ns[k], "k2", 2, "x", 1);
      CU_ASSERT(is_failure_code(rc));
    }
  }
  /* The others are untouched. */
  for (int k = 0; k < NNS; k++) {
    if (on[k] == 0) continue;
    void *v = NULL;
    size_t vl = 0;
    MF_ASSERT_EQ(mayfly_kv_get(ns[k], "k", 1, &v, &vl), 0);
    CU_ASSERT(v != NULL && vl == 8 && memcmp(v, "/job/kv", 7) == 0);
    mayfly_free(v);
    MF_ASSERT_EQ(mayfly_kv_put(ns[k], "after", 5, "kill", 4), 0);
  }

  /* Pause server 1: a hang without a closed socket gives ETIMEDOUT within
   * the 1 s timeout, and server 2 keeps serving meanwhile. */
  mf_pause(cl.ms[1]);
  for (int k = 0; k < NNS; k++) {
    if (on[k] == 0) continue;
    void *v = NULL;
    size_t vl = 0;
    int64_t t0 = now_ms();
    int rc = mayfly_kv_get(ns[k], "k", 1, &v, &vl);
    int64_t took = now_ms() - t0;
    if (on[k] == 1) {
      MF_ASSERT_EQ(rc, MAYFLY_ETIMEDOUT);
      CU_ASSERT(took >= 900 && took < 5000);
    } else {
      MF_ASSERT_EQ(rc, 0);
    }
    mayfly_free(v);
  }
  mf_resume(cl.ms[1]);
  /* Resumed, it answers again with its data intact. */
  for (int k = 0; k < NNS; k++) {
    if (on[k] != 1) continue;
    void *v = NULL;
    size_t vl = 0;
    MF_ASSERT_EQ(mayfly_kv_get(ns[k], "after", 5, &v, &vl), 0);
    CU_ASSERT(v != NULL && vl == 4 && memcmp(v, "kill", 4) == 0);
    mayfly_free(v);
  }
unmount:
  for (int k = 0; k < NNS; k++) mayfly_unmount(ns[k]);
out:
  cluster_stop(&cl);
}

/* --- 6. hostile bytes on a memory server's socket --- */

static void test_bad_frames_close_or_fail_one_connection_and_the_server_serves_on(void) {
  cluster_t cl;
  if (cluster_start(&cl, "10s", "10s", 16, "64KiB", 0) != 0) goto out;
  mayfly_ns_t *kv = NULL, *q = NULL;
  MF_ASSERT_EQ(mayfly_mount(cl.c, "/job/kv", MAYFLY_KIND_KV, NULL, &kv), 0);
  MF_ASSERT_EQ(mayfly_mount(cl.c, "/job/q", MAYFLY_KIND_QUEUE, NULL, &q), 0);
  if (kv == NULL || q == NULL) goto unmount;
  MF_ASSERT_EQ(mayfly_kv_put(kv, "hello", 5, "world", 5), 0);
  MF_ASSERT_EQ(mayfly_queue_push(q, "item", 4), 0);
  mayfly_stat_t *kst = NULL, *qst = NULL;
  MF_ASSERT_EQ(mayfly_stat(cl.c, "/job/kv", &kst), 0);
  MF_ASSERT_EQ(mayfly_stat(cl.c, "/job/q", &qst), 0);
  if (kst == NULL || qst == NULL || kst->npartitions != 1 || qst->npartitions != 1) goto free_stats;
  int s = ms_of(&cl, kst->partitions[0].server_address);
  CU_ASSERT(s >= 0);
  if (s < 0) goto free_stats;
  int port = cl.ms[s]->port;
  uint32_t kblock = (uint32_t)kst->partitions[0].block_index;
  uint64_t kgen = (uint64_t)kst->partitions[0].generation;

  /* A well-formed GET works: the frames below differ from it in one way. */
  frame_t rep;
  uint8_t *payload = NULL;
  frame_t get = {.opcode = OP_KV_GET, .id = 41, .block = kblock, .gen = kgen};
  MF_ASSERT_EQ(raw_call(port, get, "hello", 5, &rep, &payload), 0);
  MF_ASSERT_EQ(rep.id, 41);
  CU_ASSERT(rep.flags & F_REPLY);
  CU_ASSERT(rep.payload_len == 5 && payload != NULL && memcmp(payload, "world", 5) == 0);
  g_free(payload);

  /* Bad magic, bad version: the connection is closed. */
  uint8_t h[HDR];
  encode(&get, h);
  h[0] = 'X';
  int fd = mf_raw_connect(port, 3);
  CU_ASSERT(fd >= 0 && mf_send_all(fd, h, HDR) == 0 && peer_closes(fd));
  close(fd);
  encode(&get, h);
  h[2] = 2;
  fd = mf_raw_connect(port, 3);
  CU_ASSERT(fd >= 0 && mf_send_all(fd, h, HDR) == 0 && peer_closes(fd));
  close(fd);

  /* A payload over the limit (a block plus a key): closed on the header
   * alone, before any of the payload is sent. */
  frame_t huge = {.opcode = OP_KV_PUT, .id = 42, .block = kblock, .gen = kgen, .arg2 = 5};
  encode(&huge, h);
  put_le(h + 4, 64u << 20, 4);
  fd = mf_raw_connect(port, 3);
  CU_ASSERT(fd >= 0 && mf_send_all(fd, h, HDR) == 0 && peer_closes(fd));
  close(fd);

  /* Unknown opcodes: an EPROTO reply with the same id, and the connection
   * stays usable. 0x1f sits in the file range and names a block that is not
   * a file: the opcode is still what is wrong. */
  const uint8_t unknown[] = {0x7f, 0x00, 0xee, 0x1f};
  fd = mf_raw_connect(port, 3);
  CU_ASSERT(fd >= 0);
  for (size_t u = 0; fd >= 0 && u < sizeof unknown; u++) {
    frame_t f = {.opcode = unknown[u], .id = 1000 + u, .block = kblock, .gen = kgen};
    MF_ASSERT_EQ(send_frame(fd, f, "abc", 3), 0);
    memset(&rep, 0, sizeof rep);
    MF_ASSERT_EQ(recv_frame(fd, &rep, NULL), 0);
    if (rep.status != MAYFLY_EPROTO) {
      fprintf(stderr, "  opcode 0x%02x: status %s\n", unknown[u], mayfly_err_name(rep.status));
    }
    MF_ASSERT_EQ(rep.status, MAYFLY_EPROTO);
    MF_ASSERT_EQ(rep.id, 1000 + u);
    frame_t ping = {.opcode = OP_PING, .id = 2000 + u};
    MF_ASSERT_EQ(send_frame(fd, ping, NULL, 0), 0);
    memset(&rep, 0, sizeof rep);
    MF_ASSERT_EQ(recv_frame(fd, &rep, NULL), 0);
    MF_ASSERT_EQ(rep.status, 0);
    MF_ASSERT_EQ(rep.id, 2000 + u);
  }
  if (fd >= 0) close(fd);

  /* A truncated frame, then the client goes away: the server closes its
   * side without answering. */
  fd = mf_raw_connect(port, 3);
  CU_ASSERT(fd >= 0);
  if (fd >= 0) {
    encode(&get, h);
    put_le(h + 4, 100, 4);
    CU_ASSERT(mf_send_all(fd, h, HDR) == 0 && mf_send_all(fd, "hello", 5) == 0);
    shutdown(fd, SHUT_WR);
    CU_ASSERT(peer_closes(fd));
    close(fd);
  }
  fd = mf_raw_connect(port, 3);
  if (fd >= 0) {
    CU_ASSERT(mf_send_all(fd, h, 30) == 0);
    close(fd);
  }

  /* Stale and forged generations of the kv block: "moved", never data. */
  const uint64_t gens[] = {kgen - 1, kgen + 1, kgen + 1000, 0};
  for (size_t g = 0; g < G_N_ELEMENTS(gens); g++) {
    frame_t f = get;
    f.gen = gens[g];
    payload = NULL;
    MF_ASSERT_EQ(raw_call(port, f, "hello", 5, &rep, &payload), MAYFLY_EMOVED);
    MF_ASSERT_EQ(rep.payload_len, 0);
    g_free(payload);
  }
  /* A block index the server does not have gets an error, not data. */
  frame_t beyond = get;
  beyond.block = 1u << 30;
  payload = NULL;
  memset(&rep, 0, sizeof rep);
  int rc = raw_call(port, beyond, "hello", 5, &rep, &payload);
  CU_ASSERT(rc < 0);
  MF_ASSERT_EQ(rep.payload_len, 0);
  g_free(payload);

  /* An operation of the wrong kind on a block: the queue's block asked for
   * a key, the kv block asked for file bytes. */
  int qs = ms_of(&cl, qst->partitions[0].server_address);
  CU_ASSERT(qs >= 0);
  if (qs >= 0) {
    frame_t f = {.opcode = OP_KV_GET, .id = 43, .block = (uint32_t)qst->partitions[0].block_index,
                 .gen = (uint64_t)qst->partitions[0].generation};
    payload = NULL;
    MF_ASSERT_EQ(raw_call(cl.ms[qs]->port, f, "item", 4, &rep, &payload), MAYFLY_EKIND);
    MF_ASSERT_EQ(rep.payload_len, 0);
    g_free(payload);
  }
  frame_t rd = {.opcode = OP_FILE_READ, .id = 44, .block = kblock, .gen = kgen, .arg1 = 100};
  MF_ASSERT_EQ(raw_call(port, rd, NULL, 0, &rep, NULL), MAYFLY_EKIND);

  /* Too big for a block: refused by the library and by the server. */
  size_t big = 64u << 10;
  uint8_t *blob = g_malloc0(big + 16);
  MF_ASSERT_EQ(mayfly_kv_put(kv, "big", 3, blob, big), MAYFLY_ETOOBIG);
  MF_ASSERT_EQ(mayfly_queue_push(q, blob, big), MAYFLY_ETOOBIG);
  memcpy(blob, "big", 3);
  frame_t put = {.opcode = OP_KV_PUT, .id = 45, .block = kblock, .gen = kgen, .arg2 = 3};
  MF_ASSERT_EQ(raw_call(port, put, blob, big + 3, &rep, NULL), MAYFLY_ETOOBIG);
  g_free(blob);
  MF_ASSERT_EQ(mayfly_kv_exists(kv, "big", 3), 0);

  /* Through all of it: alive, serving this client and a new one, data
   * intact. */
  CU_ASSERT(mf_alive(cl.ms[s]));
  void *v = NULL;
  size_t vl = 0;
  MF_ASSERT_EQ(mayfly_kv_get(kv, "hello", 5, &v, &vl), 0);
  CU_ASSERT(vl == 5 && v != NULL && memcmp(v, "world", 5) == 0);
  mayfly_free(v);
  mayfly_client_t *c2 = NULL;
  MF_ASSERT_EQ(mayfly_connect(cl.dir->address, NULL, &c2), 0);
  mayfly_ns_t *kv2 = NULL, *q2 = NULL;
  MF_ASSERT_EQ(mayfly_mount(c2, "/job/kv", MAYFLY_KIND_KV, NULL, &kv2), 0);
  MF_ASSERT_EQ(mayfly_mount(c2, "/job/q", MAYFLY_KIND_QUEUE, NULL, &q2), 0);
  if (kv2 != NULL && q2 != NULL) {
    v = NULL;
    MF_ASSERT_EQ(mayfly_kv_get(kv2, "hello", 5, &v, &vl), 0);
    CU_ASSERT(vl == 5 && v != NULL && memcmp(v, "world", 5) == 0);
    mayfly_free(v);
    MF_ASSERT_EQ(mayfly_kv_put(kv2, "new", 3, "key", 3), 0);
    v = NULL;
    MF_ASSERT_EQ(mayfly_queue_pop(q2, &v, &vl, 0), 0);
    CU_ASSERT(vl == 4 && v != NULL && memcmp(v, "item", 4) == 0);
    mayfly_free(v);
  }
  mayfly_unmount(kv2);
  mayfly_unmount(q2);
  mayfly_disconnect(c2);
free_stats:
  mayfly_stat_free(kst);
  mayfly_stat_free(qst);
unmount:
  mayfly_unmount(kv);
  mayfly_unmount(q);
out:
  cluster_stop(&cl);
}

/* --- 7. the CLI's data commands --- */

/* Runs `mayfly --directory D <cmd>` through sh so stdin/stdout can be
 * redirected from/to files: `cmd` may use "$2" and "$3" for a2 and a3.
 * Files it writes are limited to a few MiB, so a runaway `cat` dies of
 * SIGXFSZ instead of filling the disk. */
static int cli_sh(const mf_daemon_t *d, const char *cmd, const char *a2, const char *a3,
                  char **err) {
  char *script = g_strdup_printf("ulimit -f 16384; exec \"$0\" --directory \"$1\" %s", cmd);
  char *bin = g_strdup(mf_bin("client/mayfly"));
  const char *argv[] = {"/bin/sh", "-c", script, bin, d->address, a2, a3, NULL};
  int status = -1;
  gboolean ok = g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, NULL, err,
                             &status, NULL);
  g_free(script);
  g_free(bin);
  return ok && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int files_equal(const char *a, const char *b) {
  char *x = NULL, *y = NULL;
  gsize xl = 0, yl = 0;
  int eq = g_file_get_contents(a, &x, &xl, NULL) && g_file_get_contents(b, &y, &yl, NULL) &&
           xl == yl && memcmp(x, y, xl) == 0;
  if (!eq) fprintf(stderr, "  %s (%zu bytes) differs from %s (%zu bytes)\n", a, xl, b, yl);
  g_free(x);
  g_free(y);
  return eq;
}

static void test_the_cli_data_commands_work_across_three_servers(void) {
  cluster_t cl;
  char *tmp = g_dir_make_tmp("mayfly-cli-XXXXXX", NULL);
  char *src = g_build_filename(tmp, "src", NULL), *dst = g_build_filename(tmp, "dst", NULL);
  if (cluster_start(&cl, "10s", "10s", 16, "64KiB", 0) != 0) goto out;
  const mf_daemon_t *d = cl.dir;
  char *out = NULL, *err = NULL;

  /* kv: put, get, del, over three partitions. */
  MF_ASSERT_EQ(mf_cli(d, NULL, NULL, "create", "/c/kv", "--kind", "kv", "--blocks", "3", NULL), 0);
  char key[16], val[32];
  for (int i = 0; i < 30; i++) {
    snprintf(key, sizeof key, "key%d", i);
    snprintf(val, sizeof val, "value %d", i);
    MF_ASSERT_EQ(mf_cli(d, NULL, NULL, "put", "/c/kv", key, val, NULL), 0);
  }
  for (int i = 0; i < 30; i++) {
    snprintf(key, sizeof key, "key%d", i);
    snprintf(val, sizeof val, "value %d", i);
    MF_ASSERT_EQ(mf_cli(d, &out, NULL, "get", "/c/kv", key, NULL), 0);
    CU_ASSERT(out != NULL && strcmp(out, val) == 0);
    g_free(out);
  }
  MF_ASSERT_EQ(mf_cli(d, NULL, NULL, "del", "/c/kv", "key7", NULL), 0);
  MF_ASSERT_EQ(mf_cli(d, NULL, &err, "get", "/c/kv", "key7", NULL), 1);
  CU_ASSERT(err != NULL && strstr(err, "no such key") != NULL);
  g_free(err);
  MF_ASSERT_EQ(mf_cli(d, NULL, NULL, "del", "/c/kv", "key7", NULL), 1);
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(cl.c, "/c/kv", &st), 0);
  if (st != NULL) {
    MF_ASSERT_EQ(distinct_servers(st), 3);
    mayfly_usage_t use[3] = {{0}};
    MF_ASSERT_EQ(mayfly_usage(cl.c, st, use), 0);
    MF_ASSERT_EQ(use[0].items + use[1].items + use[2].items, 29);
    mayfly_stat_free(st);
  }

  /* queue: push, pop in order, pop on empty, and pop --timeout waiting for
   * an item pushed while it waits. */
  MF_ASSERT_EQ(mf_cli(d, NULL, NULL, "create", "/c/q", "--kind", "queue", NULL), 0);
  MF_ASSERT_EQ(mf_cli(d, NULL, NULL, "push", "/c/q", "first", NULL), 0);
  MF_ASSERT_EQ(mf_cli(d, NULL, NULL, "push", "/c/q", "second", NULL), 0);
  MF_ASSERT_EQ(mf_cli(d, &out, NULL, "pop", "/c/q", NULL), 0);
  CU_ASSERT(out != NULL && strcmp(out, "first") == 0);
  g_free(out);
  MF_ASSERT_EQ(mf_cli(d, &out, NULL, "pop", "/c/q", NULL), 0);
  CU_ASSERT(out != NULL && strcmp(out, "second") == 0);
  g_free(out);
  MF_ASSERT_EQ(mf_cli(d, NULL, &err, "pop", "/c/q", "--timeout", "200", NULL), 1);
  CU_ASSERT(err != NULL && strstr(err, "queue is empty") != NULL);
  g_free(err);
  char *bin = g_strdup(mf_bin("client/mayfly"));
  const char *pop_argv[] = {bin, "--directory", d->address, "pop", "/c/q", "--timeout", "8000",
                            NULL};
  GPid pid = 0;
  int pop_out = -1;
  gboolean spawned = g_spawn_async_with_pipes(NULL, (char **)pop_argv, NULL,
                                              G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &pid, NULL,
                                              &pop_out, NULL, NULL);
  g_free(bin);
  CU_ASSERT(spawned);
  if (spawned) {
    mf_sleep_ms(300);
    MF_ASSERT_EQ(mf_cli(d, NULL, NULL, "push", "/c/q", "late", NULL), 0);
    int status = -1;
    int64_t until = now_ms() + 10000;
    while (waitpid(pid, &status, WNOHANG) == 0 && now_ms() < until) mf_sleep_ms(10);
    if (now_ms() >= until) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    }
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char got[64] = {0};
    ssize_t n = read(pop_out, got, sizeof got - 1);
    CU_ASSERT(n == 4 && strcmp(got, "late") == 0);
    close(pop_out);
    g_spawn_close_pid(pid);
  }

  /* file: write from --file and from stdin, cat back byte for byte. */
  size_t flen = 200u << 10;
  uint8_t *data = g_malloc(flen);
  fill_random(data, flen, 7);
  data[0] = 0; /* binary from the first byte */
  CU_ASSERT(g_file_set_contents(src, (const char *)data, (gssize)flen, NULL));
  MF_ASSERT_EQ(mf_cli(d, NULL, NULL, "create", "/c/f1", "--kind", "file", NULL), 0);
  MF_ASSERT_EQ(mf_cli(d, NULL, NULL, "write", "/c/f1", "--file", src, NULL), 0);
  MF_ASSERT_EQ(cli_sh(d, "cat \"$2\" > \"$3\"", "/c/f1", dst, NULL), 0);
  CU_ASSERT(files_equal(src, dst));
  MF_ASSERT_EQ(mf_cli(d, NULL, NULL, "create", "/c/f2", "--kind", "file", NULL), 0);
  MF_ASSERT_EQ(cli_sh(d, "write \"$2\" < \"$3\"", "/c/f2", src, NULL), 0);
  MF_ASSERT_EQ(cli_sh(d, "cat \"$2\" > \"$3\"", "/c/f2", dst, NULL), 0);
  CU_ASSERT(files_equal(src, dst));
  /* A file that ends exactly on a block boundary ends there too. */
  CU_ASSERT(g_file_set_contents(src, (const char *)data, (gssize)(128u << 10), NULL));
  MF_ASSERT_EQ(mf_cli(d, NULL, NULL, "create", "/c/f3", "--kind", "file", NULL), 0);
  MF_ASSERT_EQ(mf_cli(d, NULL, NULL, "write", "/c/f3", "--file", src, NULL), 0);
  MF_ASSERT_EQ(cli_sh(d, "cat \"$2\" > \"$3\"", "/c/f3", dst, NULL), 0);
  CU_ASSERT(files_equal(src, dst));
  CU_ASSERT(g_file_set_contents(src, (const char *)data, (gssize)flen, NULL));
  g_free(data);
  st = NULL;
  MF_ASSERT_EQ(mayfly_stat(cl.c, "/c/f2", &st), 0);
  if (st != NULL) {
    MF_ASSERT_EQ(st->npartitions, 4); /* 200 KiB in 64 KiB blocks */
    MF_ASSERT_EQ(distinct_servers(st), 3);
    mayfly_stat_free(st);
  }

  /* stat reports the bytes the memory servers hold; servers, the blocks
   * used on each. */
  MF_ASSERT_EQ(mf_cli(d, &out, NULL, "stat", "/c/f2", NULL), 0);
  CU_ASSERT(out != NULL && strstr(out, "bytes used:      204800\n") != NULL);
  if (out != NULL && strstr(out, "bytes used:      204800\n") == NULL) fprintf(stderr, "%s", out);
  g_free(out);
  MF_ASSERT_EQ(mf_cli(d, &out, NULL, "stat", "/c/kv", NULL), 0);
  CU_ASSERT(out != NULL && strstr(out, "bytes used:") != NULL &&
            strstr(out, "bytes used:      0\n") == NULL && strstr(out, "unknown") == NULL);
  g_free(out);
  int used[NMS];
  MF_ASSERT_EQ(blocks_used_per_server(&cl, used), 0);
  int total = 0;
  MF_ASSERT_EQ(mf_cli(d, &out, NULL, "servers", NULL), 0);
  for (int i = 0; i < NMS; i++) {
    CU_ASSERT(servers_line_shows(out, cl.ms[i]->address, used[i], 16));
    total += used[i];
  }
  g_free(out);
  MF_ASSERT_EQ(total, 3 + 1 + 4 + 4 + 2); /* kv, queue, three files */
out:
  g_unlink(src);
  g_unlink(dst);
  g_rmdir(tmp);
  g_free(src);
  g_free(dst);
  g_free(tmp);
  cluster_stop(&cl);
}

/* --- 8. threads sharing one client and one handle --- */

#define HAMMER_THREADS 8
#define HAMMER_KEYS 1000
#define HAMMER_ITEMS 500

typedef struct {
  mayfly_ns_t *kv, *q;
  int t;
  int errors, wrong;
  GArray *popped; /* item numbers t * HAMMER_ITEMS + seq, in pop order */
} hammer_t;

static size_t hammer_value(int t, int i, char *buf) {
  size_t n = (size_t)sprintf(buf, "t%d-k%d:", t, i);
  for (int r = 0; r < i % 50; r++) buf[n++] = (char)('a' + (t + r) % 26);
  return n;
}

static void take_one(hammer_t *h, int timeout_ms) {
  void *v = NULL;
  size_t len = 0;
  int rc = mayfly_queue_pop(h->q, &v, &len, timeout_ms);
  if (rc == 0) {
    int t, seq;
    char s[32] = {0};
    memcpy(s, v, MIN(len, sizeof s - 1));
    if (sscanf(s, "t%d-%d", &t, &seq) == 2) {
      int item = t * HAMMER_ITEMS + seq;
      g_array_append_val(h->popped, item);
    } else {
      h->wrong++;
    }
  } else if (rc != MAYFLY_EAGAIN) {
    h->errors++;
  }
  mayfly_free(v);
}

static void *hammer(void *arg) {
  hammer_t *h = arg;
  char key[32], val[128];
  for (int i = 0; i < HAMMER_KEYS; i++) {
    size_t kl = (size_t)sprintf(key, "t%d/%d", h->t, i), vl = hammer_value(h->t, i, val);
    if (mayfly_kv_put(h->kv, key, kl, val, vl) != 0) h->errors++;
    if (i < HAMMER_ITEMS) {
      char item[32];
      int il = sprintf(item, "t%d-%d", h->t, i);
      if (mayfly_queue_push(h->q, item, (size_t)il) != 0) h->errors++;
      if (i % 2 == 1) take_one(h, 0);
    }
  }
  for (int i = 0; i < HAMMER_KEYS; i++) {
    size_t kl = (size_t)sprintf(key, "t%d/%d", h->t, i), vl = hammer_value(h->t, i, val);
    void *got = NULL;
    size_t gl = 0;
    if (mayfly_kv_get(h->kv, key, kl, &got, &gl) != 0) {
      h->errors++;
    } else if (gl != vl || memcmp(got, val, vl) != 0) {
      h->wrong++;
    }
    mayfly_free(got);
    if (i % 4 == 0) take_one(h, 0);
  }
  return NULL;
}

static void test_eight_threads_sharing_one_client_and_handle_lose_nothing(void) {
  cluster_t cl;
  if (cluster_start(&cl, "10s", "10s", 8, "1MiB", 0) != 0) goto out;
  mayfly_ns_t *kv = NULL, *q = NULL;
  mayfly_create_options_t three = {.blocks = 3};
  MF_ASSERT_EQ(mayfly_mount(cl.c, "/job/shared-kv", MAYFLY_KIND_KV, &three, &kv), 0);
  MF_ASSERT_EQ(mayfly_mount(cl.c, "/job/shared-q", MAYFLY_KIND_QUEUE, NULL, &q), 0);
  if (kv == NULL || q == NULL) goto unmount;
  pthread_t th[HAMMER_THREADS];
  hammer_t h[HAMMER_THREADS];
  for (int t = 0; t < HAMMER_THREADS; t++) {
    h[t] = (hammer_t){.kv = kv, .q = q, .t = t, .popped = g_array_new(FALSE, FALSE, sizeof(int))};
    pthread_create(&th[t], NULL, hammer, &h[t]);
  }
  int errors = 0, wrong = 0;
  for (int t = 0; t < HAMMER_THREADS; t++) {
    pthread_join(th[t], NULL);
    errors += h[t].errors;
    wrong += h[t].wrong;
  }
  MF_ASSERT_EQ(errors, 0);
  MF_ASSERT_EQ(wrong, 0);

  /* What the threads did not pop is still there, in order. */
  hammer_t rest = {.kv = kv, .q = q, .t = -1, .popped = g_array_new(FALSE, FALSE, sizeof(int))};
  int64_t left = mayfly_queue_length(q);
  for (int64_t k = 0; k < left; k++) take_one(&rest, 0);
  MF_ASSERT_EQ(rest.errors, 0);
  MF_ASSERT_EQ(mayfly_queue_length(q), 0);

  /* Every item popped exactly once; each popper saw each pusher's items in
   * push order. */
  int *seen = g_new0(int, HAMMER_THREADS * HAMMER_ITEMS);
  int out_of_order = 0, bad = 0;
  for (int t = 0; t <= HAMMER_THREADS; t++) {
    GArray *a = t < HAMMER_THREADS ? h[t].popped : rest.popped;
    int last[HAMMER_THREADS];
    for (int p = 0; p < HAMMER_THREADS; p++) last[p] = -1;
    for (guint k = 0; k < a->len; k++) {
      int item = g_array_index(a, int, k);
      if (item < 0 || item >= HAMMER_THREADS * HAMMER_ITEMS) {
        bad++;
        continue;
      }
      seen[item]++;
      int p = item / HAMMER_ITEMS, seq = item % HAMMER_ITEMS;
      if (seq <= last[p]) out_of_order++;
      last[p] = seq;
    }
    g_array_free(a, TRUE);
  }
  int missing = 0, dup = 0;
  for (int k = 0; k < HAMMER_THREADS * HAMMER_ITEMS; k++) {
    missing += seen[k] == 0;
    dup += seen[k] > 1;
  }
  g_free(seen);
  MF_ASSERT_EQ(bad, 0);
  MF_ASSERT_EQ(missing, 0);
  MF_ASSERT_EQ(dup, 0);
  MF_ASSERT_EQ(out_of_order, 0);

  /* The kv holds exactly the keys written. */
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(cl.c, "/job/shared-kv", &st), 0);
  if (st != NULL) {
    mayfly_usage_t *use = g_new0(mayfly_usage_t, st->npartitions + 1);
    MF_ASSERT_EQ(mayfly_usage(cl.c, st, use), 0);
    int64_t keys = 0;
    for (size_t i = 0; i < st->npartitions; i++) keys += use[i].items;
    MF_ASSERT_EQ(keys, HAMMER_THREADS * HAMMER_KEYS);
    g_free(use);
    mayfly_stat_free(st);
  }
unmount:
  mayfly_unmount(kv);
  mayfly_unmount(q);
out:
  cluster_stop(&cl);
}

/* A directory that restarts forgets its tree (it does not persist yet); the
 * memory servers notice at their next heartbeat, register again with the new
 * directory, drop the blocks it does not know, and serve new namespaces. */
static void test_memory_servers_register_again_after_a_directory_restart(void) {
  mf_daemon_t *d1 = mf_start_directory(NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d1);
  mf_daemon_t *ms = mf_start_memserver(d1, 8, "64KiB", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ms);
  mayfly_client_t *c = NULL;
  MF_ASSERT_EQ(mayfly_connect(d1->address, NULL, &c), 0);
  mayfly_ns_t *old = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, "/before", MAYFLY_KIND_KV, NULL, &old), 0);
  MF_ASSERT_EQ(mayfly_kv_put(old, "k", 1, "v", 1), 0);
  mayfly_unmount(old);
  mayfly_disconnect(c);

  char port[16];
  snprintf(port, sizeof port, "%d", d1->port);
  MF_ASSERT_EQ(mf_stop(d1), 0);
  mf_daemon_t *d2 = mf_start_directory("--port", port, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d2);
  /* Registered again when the new directory lists the server as up. */
  int up = 0;
  for (int waited = 0; waited < 10000 && !up; waited += 50) {
    char *out = NULL;
    if (mf_cli(d2, &out, NULL, "servers", NULL) == 0 && out != NULL) {
      char *line = strstr(out, ms->address);
      up = line != NULL && strncmp(line + strlen(ms->address), "  up", 4) == 0;
    }
    g_free(out);
    if (!up) mf_sleep_ms(50);
  }
  CU_ASSERT(up);
  MF_ASSERT_EQ(mayfly_connect(d2->address, NULL, &c), 0);
  MF_ASSERT_EQ(mayfly_exists(c, "/before"), 0);
  mayfly_ns_t *ns = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, "/after", MAYFLY_KIND_KV, NULL, &ns), 0);
  /* The new namespace's block starts empty: nothing of the old one shows. */
  void *v = NULL;
  size_t vlen = 0;
  MF_ASSERT_EQ(mayfly_kv_get(ns, "k", 1, &v, &vlen), MAYFLY_ENOKEY);
  MF_ASSERT_EQ(mayfly_kv_put(ns, "k2", 2, "v2", 2), 0);
  MF_ASSERT_EQ(mayfly_kv_get(ns, "k2", 2, &v, &vlen), 0);
  MF_ASSERT_EQ(vlen, 2);
  mayfly_free(v);
  mayfly_unmount(ns);
  mayfly_disconnect(c);
  MF_ASSERT_EQ(mf_stop(ms), 0);
  MF_ASSERT_EQ(mf_stop(d2), 0);
}

/* Batches pipeline many operations in one round trip and keep their
 * meaning: every put lands, every get returns its value, queue items keep
 * their order across the segments the batch fills. */
static void test_batches_pipeline_operations_and_keep_their_order(void) {
  mf_daemon_t *d = mf_start_directory(NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  mf_daemon_t *ms[3];
  for (int i = 0; i < 3; i++) {
    ms[i] = mf_start_memserver(d, 16, "64KiB", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ms[i]);
  }
  mayfly_client_t *c = NULL;
  MF_ASSERT_EQ(mayfly_connect(d->address, NULL, &c), 0);
  mayfly_create_options_t three = {.blocks = 3};
  mayfly_ns_t *kv = NULL, *q = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, "/batch/kv", MAYFLY_KIND_KV, &three, &kv), 0);
  MF_ASSERT_EQ(mayfly_mount(c, "/batch/q", MAYFLY_KIND_QUEUE, NULL, &q), 0);

  enum { N = 600 };
  char *keys[N], *vals[N];
  size_t klens[N], vlens[N];
  int rcs[N];
  for (int i = 0; i < N; i++) {
    keys[i] = g_strdup_printf("key-%d", i);
    vals[i] = g_strdup_printf("value-%d-%s", i, i % 2 ? "odd" : "even");
    klens[i] = strlen(keys[i]);
    vlens[i] = strlen(vals[i]);
  }
  MF_ASSERT_EQ(mayfly_kv_put_batch(kv, N, (const void *const *)keys, klens,
                                   (const void *const *)vals, vlens, rcs), 0);
  void *got[N];
  size_t glens[N];
  MF_ASSERT_EQ(mayfly_kv_get_batch(kv, N, (const void *const *)keys, klens, got, glens, rcs), 0);
  int wrong = 0;
  for (int i = 0; i < N; i++) {
    wrong += rcs[i] != 0 || glens[i] != vlens[i] || memcmp(got[i], vals[i], vlens[i]) != 0;
    mayfly_free(got[i]);
  }
  MF_ASSERT_EQ(wrong, 0);
  /* A missing key in a batch is reported for that key only. */
  const char *mixed[] = {"key-1", "absent", "key-2"};
  size_t mlens[] = {5, 6, 5};
  int mrcs[3];
  void *mv[3];
  size_t ml[3];
  MF_ASSERT_EQ(mayfly_kv_get_batch(kv, 3, (const void *const *)mixed, mlens, mv, ml, mrcs),
               MAYFLY_ENOKEY);
  MF_ASSERT_EQ(mrcs[0], 0);
  MF_ASSERT_EQ(mrcs[1], MAYFLY_ENOKEY);
  MF_ASSERT_EQ(mrcs[2], 0);
  CU_ASSERT_PTR_NULL(mv[1]);
  mayfly_free(mv[0]);
  mayfly_free(mv[2]);

  /* 600 items of ~1 KiB fill several 64 KiB segments within one batch. */
  char *items[N];
  size_t ilens[N];
  for (int i = 0; i < N; i++) {
    items[i] = g_strnfill(1000, (char)('a' + i % 26));
    g_snprintf(items[i], 12, "%08d", i);
    ilens[i] = 1000;
  }
  MF_ASSERT_EQ(mayfly_queue_push_batch(q, N, (const void *const *)items, ilens, rcs), 0);
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(c, "/batch/q", &st), 0);
  CU_ASSERT(st->npartitions > 5);
  mayfly_stat_free(st);
  MF_ASSERT_EQ(mayfly_queue_length(q), N);
  int next = 0, disorder = 0;
  for (int round = 0; round < 100 && next < N; round++) {
    void *out[64];
    size_t olens[64];
    int64_t k = mayfly_queue_pop_batch(q, 64, out, olens);
    CU_ASSERT(k >= 0);
    for (int64_t j = 0; j < k; j++) {
      disorder += olens[j] != 1000 || atoi((char *)out[j]) != next;
      next++;
      mayfly_free(out[j]);
    }
  }
  MF_ASSERT_EQ(next, N);
  MF_ASSERT_EQ(disorder, 0);
  void *none[4];
  size_t nl[4];
  MF_ASSERT_EQ(mayfly_queue_pop_batch(q, 4, none, nl), 0);
  /* Drained head segments went back to the pool as the pops passed them. */
  MF_ASSERT_EQ(mayfly_stat(c, "/batch/q", &st), 0);
  MF_ASSERT_EQ(st->npartitions, 1);
  mayfly_stat_free(st);
  for (int i = 0; i < N; i++) {
    g_free(keys[i]);
    g_free(vals[i]);
    g_free(items[i]);
  }
  mayfly_unmount(kv);
  mayfly_unmount(q);
  mayfly_disconnect(c);
  for (int i = 0; i < 3; i++) MF_ASSERT_EQ(mf_stop(ms[i]), 0);
  MF_ASSERT_EQ(mf_stop(d), 0);
}


/* SERVER_STAT on the wire, decoded by hand (docs/data-protocol.md): source,
 * allocated, resident, charged, kv entries, blocks in use. Returns the
 * reply's status. */
static int server_stat(int port, uint64_t f[6]) {
  frame_t req = {.opcode = OP_SERVER_STAT, .id = 77}, rep;
  uint8_t *p = NULL;
  int rc = raw_call(port, req, NULL, 0, &rep, &p);
  if (rc == 0 && rep.payload_len < 48) rc = 1;
  for (int i = 0; rc == 0 && i < 6; i++) f[i] = get_le(p + 8 * i, 8);
  g_free(p);
  return rc;
}

#define STAT_KEYS 20000

/* The figures a memory server gives about itself come from its allocator
 * and its store: loading entries raises the kv count and the charge by
 * exactly what was stored, and the allocator's count by at least the
 * entries' own bytes and no more than the charge plus a fixed slack (the
 * memory bound). */
static void test_the_server_stat_reports_the_allocator_and_the_store(void) {
  cluster_t cl;
  if (cluster_start(&cl, "10s", "10s", 4, "4MiB", 0) != 0) goto out;
  mayfly_ns_t *ns = NULL;
  MF_ASSERT_EQ(mayfly_mount(cl.c, "/job/stat", MAYFLY_KIND_KV, NULL, &ns), 0);
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(cl.c, "/job/stat", &st), 0);
  if (ns == NULL || st == NULL) goto out;
  int m = ms_of(&cl, st->partitions[0].server_address);
  CU_ASSERT_FATAL(m >= 0);
  uint64_t before[6], after[6];
  MF_ASSERT_EQ(server_stat(cl.ms[m]->port, before), 0);
  CU_ASSERT(before[0] >= 1 && before[0] <= 3); /* jemalloc, glibc or the sanitizer's */
  CU_ASSERT(before[1] > 0 && before[2] >= before[1]);
  MF_ASSERT_EQ(before[4], 0);
  CU_ASSERT(before[5] <= 1); /* the block is taken on its first request */

  char keys[256][17];
  const void *kp[256], *vp[256];
  size_t kl[256], vl[256];
  int rcs[256];
  uint8_t val[64];
  memset(val, 'v', sizeof val);
  for (int base = 0; base < STAT_KEYS; base += 256) {
    for (int i = 0; i < 256; i++) {
      g_snprintf(keys[i], sizeof keys[i], "key:%012d", base + i);
      kp[i] = keys[i];
      kl[i] = 16;
      vp[i] = val;
      vl[i] = sizeof val;
    }
    int n = MIN(256, STAT_KEYS - base);
    MF_ASSERT_EQ(mayfly_kv_put_batch(ns, (size_t)n, kp, kl, vp, vl, rcs), 0);
  }
  mayfly_stat_t *now = NULL;
  MF_ASSERT_EQ(mayfly_stat(cl.c, "/job/stat", &now), 0);
  MF_ASSERT_EQ(now != NULL ? now->npartitions : 0, 1); /* no split: all on that server */
  mayfly_stat_free(now);
  MF_ASSERT_EQ(server_stat(cl.ms[m]->port, after), 0);
  MF_ASSERT_EQ(after[4] - before[4], STAT_KEYS);
  MF_ASSERT_EQ(after[5], 1);
  uint64_t charged = after[3] - before[3];
  MF_ASSERT_EQ(charged, (uint64_t)STAT_KEYS * wire_kv_charge(16, 64));
  uint64_t grew = after[1] - before[1];
  fprintf(stderr, "  %d entries of 16 + 64 bytes: allocator +%llu bytes (%.1f per entry), "
                  "charged %.1f per entry\n",
          STAT_KEYS, (unsigned long long)grew, (double)grew / STAT_KEYS,
          (double)charged / STAT_KEYS);
  CU_ASSERT(after[1] > before[1] && grew >= (uint64_t)STAT_KEYS * (16 + 16 + 64));
  CU_ASSERT(grew <= charged + (1u << 20));
  mayfly_stat_free(st);
  mayfly_unmount(ns);
out:
  cluster_stop(&cl);
}

static const mf_test_t tests[] = {
    {"batches pipeline operations and keep their order",
     test_batches_pipeline_operations_and_keep_their_order},
    {"memory servers register again after a directory restart",
     test_memory_servers_register_again_after_a_directory_restart},
    {"a file larger than a block spans servers and reads back exactly",
     test_a_file_larger_than_a_block_spans_servers_and_reads_back_exactly},
    {"a queue shared by four producer and four consumer processes delivers each item once",
     test_a_queue_shared_by_four_producer_and_four_consumer_processes_delivers_each_item_once},
    {"a kv namespace of four partitions holds a hundred thousand keys",
     test_a_kv_namespace_of_four_partitions_holds_a_hundred_thousand_keys},
    {"an unmounted namespace expires and its blocks return to the pool",
     test_an_unmounted_namespace_expires_and_its_blocks_return_to_the_pool},
    {"a dead or hung server fails its operations fast and spares the others",
     test_a_dead_or_hung_server_fails_its_operations_fast_and_spares_the_others},
    {"bad frames close or fail one connection and the server serves on",
     test_bad_frames_close_or_fail_one_connection_and_the_server_serves_on},
    {"the cli data commands work across three servers",
     test_the_cli_data_commands_work_across_three_servers},
    {"eight threads sharing one client and handle lose nothing",
     test_eight_threads_sharing_one_client_and_handle_lose_nothing},
    {"the server stat reports the allocator and the store",
     test_the_server_stat_reports_the_allocator_and_the_store},
    {NULL, NULL}};

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  return mf_test_run("data", NULL, NULL, tests);
}
