/*
 * Integration tests of mayfly-directory through libmayfly and raw sockets:
 * leases expiring and being renewed, many concurrent clients, hostile bytes.
 */
#include <arpa/inet.h>
#include <glib.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client/mayfly.h"
#include "harness.h"
#include "mf_test.h"

static mayfly_client_t *client_of(const mf_daemon_t *d) {
  mayfly_client_t *c = NULL;
  int rc = mayfly_connect(d->address, NULL, &c);
  MF_ASSERT_EQ(rc, 0);
  return c;
}

static int64_t blocks_used(mayfly_client_t *c) {
  mayfly_dir_stats_t s;
  if (mayfly_dir_stats(c, &s) != 0) return -1;
  return s.blocks_used;
}

/* --- leases --- */

static void test_unrenewed_tree_expires_and_renewed_tree_stays(void) {
  mf_daemon_t *d = mf_start_directory("--lease-ms", "300", "--grace-ms", "200",
                                      "--heartbeat-timeout-ms", "60000", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  int id;
  MF_ASSERT_EQ(mf_register_blocks(d, "127.0.0.1:7001", 16, 4096, &id), 0);
  mayfly_client_t *c = client_of(d);
  MF_ASSERT_EQ(mayfly_mkdir(c, "/gone/stage1", 1), 0);
  mayfly_create_options_t o = {.blocks = 3};
  MF_ASSERT_EQ(mayfly_create(c, "/gone/stage1/kv", MAYFLY_KIND_KV, &o, NULL), 0);
  MF_ASSERT_EQ(mayfly_mkdir(c, "/kept/stage1", 1), 0);
  MF_ASSERT_EQ(mayfly_create(c, "/kept/stage1/q", MAYFLY_KIND_QUEUE, &o, NULL), 0);
  MF_ASSERT_EQ(blocks_used(c), 6);

  /* Renew only /kept (its whole subtree) for 1.5 s: three lease windows. */
  const char *paths[] = {"/kept"};
  for (int i = 0; i < 15; i++) {
    MF_ASSERT_EQ(mayfly_renew(c, paths, 1, NULL, NULL, NULL), 0);
    mf_sleep_ms(100);
  }
  MF_ASSERT_EQ(mayfly_exists(c, "/gone"), 0);
  MF_ASSERT_EQ(mayfly_exists(c, "/gone/stage1/kv"), 0);
  MF_ASSERT_EQ(mayfly_exists(c, "/kept/stage1/q"), 1);
  MF_ASSERT_EQ(mayfly_exists(c, "/kept/stage1"), 1);
  /* The expired namespace's blocks are back in the pool, and the memory
   * server is told to release them at its next heartbeat. */
  MF_ASSERT_EQ(blocks_used(c), 3);
  int released = -1;
  MF_ASSERT_EQ(mf_heartbeat(d, id, &released), 0);
  MF_ASSERT_EQ(released, 3);
  mayfly_dir_stats_t s;
  MF_ASSERT_EQ(mayfly_dir_stats(c, &s), 0);
  MF_ASSERT_EQ(s.expired_total, 3); /* /gone, /gone/stage1, /gone/stage1/kv */

  /* Stop renewing: everything goes, blocks included. */
  mf_sleep_ms(1000);
  MF_ASSERT_EQ(mayfly_exists(c, "/kept"), 0);
  MF_ASSERT_EQ(blocks_used(c), 0);
  mayfly_disconnect(c);
  MF_ASSERT_EQ(mf_stop(d), 0);
}

/* An id names one registration: after an in-memory directory restarted,
 * a server's old id may be another's, and its heartbeat must not pass for
 * the other's. A heartbeat that names a different incarnation than the one
 * registered under that id is told to register again. */
static void test_a_heartbeat_of_another_incarnation_is_told_to_register_again(void) {
  mf_daemon_t *d = mf_start_directory(NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  int id = 0;
  MF_ASSERT_EQ(mf_register_as(d, "127.0.0.1:7101", 8, 4096, 0x1111, &id), 0);
  MF_ASSERT_EQ(mf_heartbeat_as(d, id, 0x1111, NULL), 0);
  MF_ASSERT_EQ(mf_heartbeat_as(d, id, 0x2222, NULL), MAYFLY_ESERVER);
  MF_ASSERT_EQ(mf_heartbeat_as(d, id, 0, NULL), 0); /* a caller that does not say */
  MF_ASSERT_EQ(mf_stop(d), 0);
}

static void test_pinned_namespace_outlives_its_lease_and_keeps_its_parents(void) {
  mf_daemon_t *d = mf_start_directory("--lease-ms", "200", "--grace-ms", "100",
                                      "--heartbeat-timeout-ms", "60000", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  int id;
  MF_ASSERT_EQ(mf_register_blocks(d, "127.0.0.1:7001", 4, 4096, &id), 0);
  mayfly_client_t *c = client_of(d);
  mayfly_create_options_t pinned = {.pinned = 1};
  MF_ASSERT_EQ(mayfly_create(c, "/job/result", MAYFLY_KIND_FILE, &pinned, NULL), 0);
  mayfly_create_options_t longer = {.lease_ms = 5000};
  MF_ASSERT_EQ(mayfly_create(c, "/job/slow", MAYFLY_KIND_FILE, &longer, NULL), 0);
  MF_ASSERT_EQ(mayfly_create(c, "/job/fast", MAYFLY_KIND_FILE, NULL, NULL), 0);
  mf_sleep_ms(800);
  MF_ASSERT_EQ(mayfly_exists(c, "/job/result"), 1);
  MF_ASSERT_EQ(mayfly_exists(c, "/job/slow"), 1); /* its own, longer lease */
  MF_ASSERT_EQ(mayfly_exists(c, "/job/fast"), 0);
  MF_ASSERT_EQ(mayfly_exists(c, "/job"), 1); /* a directory goes only when empty */
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(c, "/job/result", &st), 0);
  MF_ASSERT_EQ(st->pinned, 1);
  MF_ASSERT_EQ(st->remaining_ms, -1);
  mayfly_stat_free(st);
  mayfly_disconnect(c);
  MF_ASSERT_EQ(mf_stop(d), 0);
}

/* --- concurrency --- */

#define NCLIENTS 50
#define PER_CLIENT 40
#define SHARED 20

static pthread_barrier_t phase; /* every create of shared names before any remove */

typedef struct {
  const mf_daemon_t *d;
  int index;
  int errors;
  int shared_created;
  int shared_removed;
} worker_t;

static void *worker(void *arg) {
  worker_t *w = arg;
  mayfly_client_t *c = NULL;
  if (mayfly_connect(w->d->address, NULL, &c) != 0) {
    w->errors++;
    pthread_barrier_wait(&phase);
    return NULL;
  }
  char path[128];
  /* Private names: create all, remove the odd ones. */
  for (int j = 0; j < PER_CLIENT; j++) {
    snprintf(path, sizeof path, "/c%02d/n%02d", w->index, j);
    mayfly_kind_t k = j % 3 == 0 ? MAYFLY_KIND_KV : j % 3 == 1 ? MAYFLY_KIND_FILE : MAYFLY_KIND_QUEUE;
    if (mayfly_create(c, path, k, NULL, NULL) != 0) w->errors++;
  }
  for (int j = 1; j < PER_CLIENT; j += 2) {
    snprintf(path, sizeof path, "/c%02d/n%02d", w->index, j);
    if (mayfly_remove(c, path, 0) != 0) w->errors++;
  }
  /* Shared names: every client races to create, then to remove, each one. */
  for (int j = 0; j < SHARED; j++) {
    snprintf(path, sizeof path, "/shared/s%02d", j);
    int rc = mayfly_create(c, path, MAYFLY_KIND_KV, NULL, NULL);
    if (rc == 0) {
      w->shared_created++;
    } else if (rc != MAYFLY_EEXIST) {
      w->errors++;
    }
  }
  pthread_barrier_wait(&phase);
  for (int j = 0; j < SHARED; j += 2) {
    snprintf(path, sizeof path, "/shared/s%02d", j);
    int rc = mayfly_remove(c, path, 0);
    if (rc == 0) {
      w->shared_removed++;
    } else if (rc != MAYFLY_ENOENT) {
      w->errors++;
    }
  }
  mayfly_disconnect(c);
  return NULL;
}

static void test_fifty_concurrent_clients_lose_and_duplicate_nothing(void) {
  mf_daemon_t *d = mf_start_directory("--heartbeat-timeout-ms", "60000", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  int id;
  MF_ASSERT_EQ(mf_register_blocks(d, "127.0.0.1:7001", 2000, 4096, &id), 0);
  MF_ASSERT_EQ(mf_register_blocks(d, "127.0.0.1:7002", 2000, 4096, &id), 0);
  pthread_t th[NCLIENTS];
  worker_t w[NCLIENTS];
  pthread_barrier_init(&phase, NULL, NCLIENTS);
  for (int i = 0; i < NCLIENTS; i++) {
    w[i] = (worker_t){.d = d, .index = i};
    pthread_create(&th[i], NULL, worker, &w[i]);
  }
  int errors = 0, created = 0, removed = 0;
  for (int i = 0; i < NCLIENTS; i++) {
    pthread_join(th[i], NULL);
    errors += w[i].errors;
    created += w[i].shared_created;
    removed += w[i].shared_removed;
  }
  pthread_barrier_destroy(&phase);
  MF_ASSERT_EQ(errors, 0);
  MF_ASSERT_EQ(created, SHARED);     /* each shared name created exactly once */
  MF_ASSERT_EQ(removed, SHARED / 2); /* and removed exactly once */

  mayfly_client_t *c = client_of(d);
  for (int i = 0; i < NCLIENTS; i++) {
    char path[64];
    snprintf(path, sizeof path, "/c%02d", i);
    mayfly_stat_t **list = NULL;
    size_t n = 0;
    MF_ASSERT_EQ(mayfly_list(c, path, &list, &n), 0);
    MF_ASSERT_EQ(n, PER_CLIENT / 2);
    for (size_t k = 0; k < n; k++) {
      char want[64];
      snprintf(want, sizeof want, "/c%02d/n%02zu", i, 2 * k);
      CU_ASSERT_STRING_EQUAL(list[k]->path, want);
    }
    mayfly_stat_list_free(list, n);
  }
  mayfly_stat_t **shared = NULL;
  size_t ns = 0;
  MF_ASSERT_EQ(mayfly_list(c, "/shared", &shared, &ns), 0);
  MF_ASSERT_EQ(ns, SHARED / 2);
  mayfly_stat_list_free(shared, ns);
  /* Exactly the surviving namespaces hold blocks. */
  int64_t live = (int64_t)NCLIENTS * PER_CLIENT / 2 + SHARED / 2;
  MF_ASSERT_EQ(blocks_used(c), live);
  mayfly_dir_stats_t s;
  MF_ASSERT_EQ(mayfly_dir_stats(c, &s), 0);
  MF_ASSERT_EQ(s.namespaces, live);
  MF_ASSERT_EQ(s.directories, NCLIENTS + 1);
  mayfly_disconnect(c);
  MF_ASSERT_EQ(mf_stop(d), 0);
}

/* --- hostile bytes --- */

static int raw_connect(const mf_daemon_t *d) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)d->port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Sends bytes and reports whether the server closed the connection within
 * 3 s (1) or kept it open (0). */
static int closed_after(const mf_daemon_t *d, const void *buf, size_t len) {
  int fd = raw_connect(d);
  if (fd < 0) return -1;
  send(fd, buf, len, MSG_NOSIGNAL);
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int closed = 0;
  if (poll(&p, 1, 3000) > 0) {
    char tmp[4096];
    ssize_t r;
    while ((r = recv(fd, tmp, sizeof tmp, MSG_DONTWAIT)) > 0) {
    }
    closed = r == 0 || (r < 0 && errno != EAGAIN);
  }
  close(fd);
  return closed;
}

static void test_garbage_on_the_socket_closes_that_connection_only(void) {
  mf_daemon_t *d = mf_start_directory(NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  mayfly_client_t *c = client_of(d);
  MF_ASSERT_EQ(mayfly_mkdir(c, "/before", 0), 0);

  /* Oversized frame: refused on its length alone, nothing allocated. */
  const uint8_t huge[] = {0xff, 0xff, 0xff, 0xf0, 1, 2, 3};
  MF_ASSERT_EQ(closed_after(d, huge, sizeof huge), 1);
  /* A frame whose payload is not a compact-protocol message. */
  const uint8_t junk[] = {0, 0, 0, 6, 'h', 'e', 'l', 'l', 'o', '!'};
  MF_ASSERT_EQ(closed_after(d, junk, sizeof junk), 1);
  /* A valid call header followed by 100,000 nested structs (stack bomb). */
  GByteArray *bomb = g_byte_array_new();
  const uint8_t hdr[] = {0, 0, 0, 0, 0x82, 0x21, 0x00, 0x05, 's', 't', 'a', 't', 's'};
  g_byte_array_append(bomb, hdr, sizeof hdr);
  for (int i = 0; i < 100000; i++) {
    const uint8_t nested = 0x1c; /* field delta 1, type struct */
    g_byte_array_append(bomb, &nested, 1);
  }
  uint32_t blen = htonl(bomb->len - 4);
  memcpy(bomb->data, &blen, 4);
  MF_ASSERT_EQ(closed_after(d, bomb->data, bomb->len), 1);
  g_byte_array_free(bomb, TRUE);
  /* A list claiming a billion elements in a ten-byte message. */
  const uint8_t liar[] = {0, 0, 0, 14, 0x82, 0x21, 0x00, 0x05, 'r', 'e', 'n', 'e', 'w',
                          0x19, 0xf8, 0x80, 0x94, 0xeb};
  MF_ASSERT_EQ(closed_after(d, liar, sizeof liar), 1);
  /* Random bytes. */
  GRand *r = g_rand_new_with_seed(42);
  for (int round = 0; round < 50; round++) {
    uint8_t buf[512];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)g_rand_int(r);
    buf[0] = 0;
    buf[1] = 0; /* a plausible length so the payload reaches the parser */
    int fd = raw_connect(d);
    CU_ASSERT(fd >= 0);
    if (fd >= 0) {
      send(fd, buf, sizeof buf, MSG_NOSIGNAL);
      close(fd);
    }
  }
  g_rand_free(r);
  /* A connection that stops in the middle of a frame. */
  const uint8_t partial[] = {0, 0, 0, 100, 0x82, 0x21};
  int fd = raw_connect(d);
  send(fd, partial, sizeof partial, MSG_NOSIGNAL);
  close(fd);

  /* The daemon is alive and everyone else is still served, data intact. */
  CU_ASSERT(mf_alive(d));
  MF_ASSERT_EQ(mayfly_exists(c, "/before"), 1);
  MF_ASSERT_EQ(mayfly_mkdir(c, "/after", 0), 0);
  mayfly_disconnect(c);
  MF_ASSERT_EQ(mf_stop(d), 0);
}

/* VmRSS or VmHWM (peak) of a process, in KiB; -1 when unreadable. */
static long proc_kib(pid_t pid, const char *field) {
  char path[64], *text = NULL;
  g_snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  if (!g_file_get_contents(path, &text, NULL, NULL)) return -1;
  long kib = -1;
  char *at = strstr(text, field);
  if (at != NULL) kib = strtol(at + strlen(field) + 1, NULL, 10);
  g_free(text);
  return kib;
}

/* How much the directory's peak RSS may grow over three 4 MiB frames: a
 * few times the frame (its read buffer doubles past 4 MiB). AddressSanitizer
 * keeps freed blocks in quarantine and pads every allocation, so each
 * doubling of that buffer stays resident there. Decoding the frame would
 * take over 500 MB either way. */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_GROWTH_MAX_KIB (16 * 4096)
#else
#define RSS_GROWTH_MAX_KIB (4 * 4096)
#endif

/* A publish call whose events list holds empty structs up to `payload`
 * bytes, as one frame (length prefix included). */
static GByteArray *empty_publish_frame(size_t payload) {
  GByteArray *b = g_byte_array_new();
  const uint8_t hdr[] = {0, 0, 0, 0, 0x82, 0x21, 0x00, 0x07, 'p', 'u', 'b', 'l', 'i', 's', 'h',
                         0x15, 0x02,  /* server_id = 1 */
                         0x19, 0xfc}; /* events: list<struct>, count as a varint */
  g_byte_array_append(b, hdr, sizeof hdr);
  size_t n = payload - (sizeof hdr - 4) - 4 - 1; /* a 4-byte varint count, the final stop */
  uint64_t v = n;
  while (v >= 0x80) {
    uint8_t byte = (uint8_t)(v | 0x80);
    g_byte_array_append(b, &byte, 1);
    v >>= 7;
  }
  uint8_t last = (uint8_t)v;
  g_byte_array_append(b, &last, 1);
  guint at = b->len;
  g_byte_array_set_size(b, at + (guint)n + 1); /* n empty structs and the stop */
  memset(b->data + at, 0, n + 1);
  uint32_t len = htonl(b->len - 4);
  memcpy(b->data, &len, 4);
  return b;
}

/* The attack that stalled the directory for 1.85 s and grew it by 520 MB:
 * 4 MiB of empty publish structs, which Thrift decoded into four million
 * objects before the handler could refuse the count. */
static void test_a_4_mib_frame_of_empty_publish_structs_is_refused_without_decoding_it(void) {
  mf_daemon_t *d = mf_start_directory("--heartbeat-ms", "100", "--heartbeat-timeout-ms", "1000",
                                      NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  mf_daemon_t *ms = mf_start_memserver(d, 4, "64KiB", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ms);
  mayfly_client_t *c = client_of(d);
  MF_ASSERT_EQ(mayfly_mkdir(c, "/before", 0), 0);
  long rss_before = proc_kib(d->pid, "VmRSS:");
  CU_ASSERT(rss_before > 0);

  GByteArray *frame = empty_publish_frame(4u << 20);
  MF_ASSERT_EQ(frame->len, (4u << 20) + 4);
  for (int k = 0; k < 3; k++) {
    /* Closed within the helper's 3 s, and the directory serves the next
     * call at once. */
    MF_ASSERT_EQ(closed_after(d, frame->data, frame->len), 1);
    char path[32];
    g_snprintf(path, sizeof path, "/after-%d", k);
    MF_ASSERT_EQ(mayfly_mkdir(c, path, 0), 0);
    mayfly_server_t *sv = NULL;
    size_t nsv = 0;
    MF_ASSERT_EQ(mayfly_servers(c, &sv, &nsv), 0);
    MF_ASSERT_EQ(nsv, 1);
    if (nsv == 1) MF_ASSERT_EQ(sv[0].up, 1);
    mayfly_servers_free(sv, nsv);
  }
  g_byte_array_free(frame, TRUE);

  /* At its peak the directory held the frame being read (its read buffer
   * doubles past 4 MiB), never its decoding: four million objects would be
   * over 500 MB. */
  long peak = proc_kib(d->pid, "VmHWM:");
  fprintf(stderr, "  directory RSS before %ld KiB, peak after three frames %ld KiB\n",
          rss_before, peak);
  CU_ASSERT(peak > 0 && peak - rss_before <= RSS_GROWTH_MAX_KIB);

  /* A heartbeat timeout later the memory server is still up: no heartbeat
   * was missed while the frames were refused. */
  mf_sleep_ms(1500);
  mayfly_server_t *sv = NULL;
  size_t nsv = 0;
  MF_ASSERT_EQ(mayfly_servers(c, &sv, &nsv), 0);
  if (nsv == 1) MF_ASSERT_EQ(sv[0].up, 1);
  mayfly_servers_free(sv, nsv);

  gchar *log = NULL;
  CU_ASSERT(g_file_get_contents(d->log_path, &log, NULL, NULL));
  CU_ASSERT(log != NULL && strstr(log, "peer 127.0.0.1:") != NULL &&
            strstr(log, "publish: events: 4194284 elements, at most 4096") != NULL);
  g_free(log);
  mayfly_disconnect(c);
  MF_ASSERT_EQ(mf_stop(ms), 0);
  MF_ASSERT_EQ(mf_stop(d), 0);
}

static void test_renew_of_ten_thousand_paths_reports_the_missing_ones(void) {
  mf_daemon_t *d = mf_start_directory(NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  mayfly_client_t *c = client_of(d);
  GPtrArray *paths = g_ptr_array_new_with_free_func(g_free);
  for (int i = 0; i < 10000; i++) {
    char *p = g_strdup_printf("/r%02d/n%04d", i % 50, i);
    if (i % 1000 != 7) MF_ASSERT_EQ(mayfly_mkdir(c, p, 1), 0);
    g_ptr_array_add(paths, p);
  }
  char **missing = NULL;
  size_t nmissing = 0;
  int64_t lease = 0;
  MF_ASSERT_EQ(mayfly_renew(c, (const char *const *)paths->pdata, paths->len, &lease, &missing,
                            &nmissing),
               0);
  MF_ASSERT_EQ(lease, 10000);
  MF_ASSERT_EQ(nmissing, 10);
  if (nmissing > 0) CU_ASSERT_STRING_EQUAL(missing[0], "/r07/n0007");
  mayfly_strv_free(missing, nmissing);
  g_ptr_array_free(paths, TRUE);
  mayfly_disconnect(c);
  MF_ASSERT_EQ(mf_stop(d), 0);
}

static void test_open_or_create_returns_the_existing_namespace_of_the_same_kind(void) {
  mf_daemon_t *d = mf_start_directory("--heartbeat-timeout-ms", "60000", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  int id;
  MF_ASSERT_EQ(mf_register_blocks(d, "127.0.0.1:7001", 8, 4096, &id), 0);
  mayfly_client_t *c = client_of(d);
  mayfly_stat_t *a = NULL, *b = NULL;
  mayfly_create_options_t o = {.blocks = 2};
  MF_ASSERT_EQ(mayfly_open_or_create(c, "/j/kv", MAYFLY_KIND_KV, &o, &a), 0);
  MF_ASSERT_EQ(mayfly_open_or_create(c, "/j/kv", MAYFLY_KIND_KV, NULL, &b), 0);
  MF_ASSERT_EQ(a->npartitions, 2);
  MF_ASSERT_EQ(b->npartitions, 2);
  MF_ASSERT_EQ(a->partitions[1].block_index, b->partitions[1].block_index);
  /* kv partitions split the slot space between them. */
  MF_ASSERT_EQ(a->partitions[0].range_lo, 0);
  MF_ASSERT_EQ(a->partitions[0].range_hi, a->partitions[1].range_lo);
  MF_ASSERT_EQ(a->partitions[1].range_hi, 65536);
  MF_ASSERT_EQ(mayfly_open_or_create(c, "/j/kv", MAYFLY_KIND_QUEUE, NULL, NULL), MAYFLY_EKIND);
  CU_ASSERT(strstr(mayfly_last_error(), "/j/kv") != NULL);
  mayfly_stat_free(a);
  mayfly_stat_free(b);
  /* The pool running out is named as such. */
  mayfly_create_options_t big = {.blocks = 7};
  MF_ASSERT_EQ(mayfly_create(c, "/j/big", MAYFLY_KIND_FILE, &big, NULL), MAYFLY_ENOSPC);
  CU_ASSERT(strstr(mayfly_last_error(), "pool exhausted") != NULL);
  MF_ASSERT_EQ(blocks_used(c), 2);
  mayfly_disconnect(c);
  MF_ASSERT_EQ(mf_stop(d), 0);
}

static const mf_test_t tests[] = {
    {"an unrenewed tree expires and a renewed tree stays", test_unrenewed_tree_expires_and_renewed_tree_stays},
    {"a heartbeat of another incarnation is told to register again", test_a_heartbeat_of_another_incarnation_is_told_to_register_again},
    {"a pinned namespace outlives its lease and keeps its parents", test_pinned_namespace_outlives_its_lease_and_keeps_its_parents},
    {"fifty concurrent clients lose and duplicate nothing", test_fifty_concurrent_clients_lose_and_duplicate_nothing},
    {"garbage on the socket closes that connection only", test_garbage_on_the_socket_closes_that_connection_only},
    {"a 4 MiB frame of empty publish structs is refused without decoding it",
     test_a_4_mib_frame_of_empty_publish_structs_is_refused_without_decoding_it},
    {"renew of ten thousand paths reports the missing ones", test_renew_of_ten_thousand_paths_reports_the_missing_ones},
    {"open-or-create returns the existing namespace of the same kind", test_open_or_create_returns_the_existing_namespace_of_the_same_kind},
    {NULL, NULL}};

int main(void) {
  return mf_test_run("directory", NULL, NULL, tests);
}
