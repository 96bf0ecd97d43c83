/*
 * mayfly-bench compare: Mayfly and Redis side by side, in the same run, with
 * the same load shapes (clients, pipeline depth, value size), one data server
 * each: a throwaway redis-server (127.0.0.1, no persistence) and a Mayfly
 * cluster of a directory and one memory server. Both sides are driven by
 * this program, with two loaders (--loader threads|event|both):
 *   threads  one thread and connection per client: Mayfly through libmayfly
 *            (pipelining through its batch calls), Redis through a minimal
 *            RESP client that pipelines like redis-benchmark -P. What a
 *            multi-threaded application sees.
 *   event    one thread driving every connection with epoll (evload.c):
 *            Mayfly's data protocol straight to a one-partition kv
 *            namespace, RESP to Redis. It measures the servers, as
 *            redis-benchmark and memtier do.
 * redis-benchmark itself runs each kv shape too, as a check on our Redis
 * loaders. The loopback TCP bandwidth of the machine is measured in the same
 * run as the anchor for bulk transfers.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/evload.h"
#include "bench/resp.h"
#include "client/mayfly.h"
#include "common/wire.h"

typedef enum { OP_SET, OP_GET, OP_PUSH, OP_POP, OP_FWRITE, OP_FREAD } op_t;

typedef struct {
  const char *name;
  op_t op;
  int clients, pipeline;
  size_t vsize;
} spec_t;

typedef struct {
  double ops_per_s, p50, p99, p999, gbps;
  int errors;
} result_t;

typedef struct {
  const bench_opts_t *o;
  const spec_t *spec;
  int redis;
  int idx;
  const char *mayfly_dir;
  int redis_port;
  pthread_barrier_t *ready;
  long long ops;
  int errors;
  bench_lat_t lat;
  double t0, t1;
} worker_t;

#define KEYS 1000
#define BIG_KEYS 16

static int nkeys(const spec_t *s) {
  return s->vsize >= (1u << 20) ? BIG_KEYS : KEYS;
}

static char *key_of(char *buf, size_t len, int idx, long long j, const spec_t *s) {
  snprintf(buf, len, "%s:%d:%lld", s->vsize >= (1u << 20) ? "big" : "k", idx, j % nkeys(s));
  return buf;
}

/* One batch of `pipeline` operations on Redis. Returns ops done (0: the
 * queue is empty), or -1. */
static int redis_batch(resp_t *r, const worker_t *w, long long base, const uint8_t *val) {
  const spec_t *s = w->spec;
  int d = s->pipeline;
  char keys[64][64];
  for (int i = 0; i < d; i++) {
    key_of(keys[i], sizeof keys[i], w->idx, base + i, s);
    const char *argv[3];
    size_t lens[3];
    switch (s->op) {
      case OP_SET:
      case OP_FWRITE:
        argv[0] = "SET", lens[0] = 3;
        argv[1] = keys[i], lens[1] = strlen(keys[i]);
        argv[2] = (const char *)val, lens[2] = s->vsize;
        resp_cmd(r, 3, argv, lens);
        break;
      case OP_GET:
      case OP_FREAD:
        argv[0] = "GET", lens[0] = 3;
        argv[1] = keys[i], lens[1] = strlen(keys[i]);
        resp_cmd(r, 2, argv, lens);
        break;
      case OP_PUSH:
        argv[0] = "LPUSH", lens[0] = 5;
        argv[1] = "q", lens[1] = 1;
        argv[2] = (const char *)val, lens[2] = s->vsize;
        resp_cmd(r, 3, argv, lens);
        break;
      case OP_POP:
        argv[0] = "RPOP", lens[0] = 4;
        argv[1] = "q", lens[1] = 1;
        resp_cmd(r, 2, argv, lens);
        break;
    }
  }
  if (resp_flush(r) != 0) return -1;
  int done = 0;
  for (int i = 0; i < d; i++) {
    const uint8_t *data;
    int64_t len;
    int t = resp_read(r, &data, &len);
    if (t < 0 || t == '-') return -1;
    if (!(t == '$' && len < 0)) done++;
  }
  return done;
}

static int mayfly_batch(mayfly_ns_t *ns, const worker_t *w, long long base, const uint8_t *val) {
  const spec_t *s = w->spec;
  int d = s->pipeline;
  char kb[64][64];
  const void *keys[64];
  size_t klens[64];
  const void *vals[64];
  size_t vlens[64];
  int rcs[64];
  void *out[64];
  size_t olens[64];
  for (int i = 0; i < d; i++) {
    keys[i] = key_of(kb[i], sizeof kb[i], w->idx, base + i, s);
    klens[i] = strlen(kb[i]);
    vals[i] = val;
    vlens[i] = s->vsize;
  }
  int rc = 0;
  switch (s->op) {
    case OP_SET:
      rc = d == 1 ? mayfly_kv_put(ns, keys[0], klens[0], val, s->vsize)
                  : mayfly_kv_put_batch(ns, (size_t)d, keys, klens, vals, vlens, rcs);
      return rc == 0 ? d : -1;
    case OP_GET:
      if (d == 1) {
        rc = mayfly_kv_get(ns, keys[0], klens[0], &out[0], &olens[0]);
        if (rc == 0) mayfly_free(out[0]);
      } else {
        rc = mayfly_kv_get_batch(ns, (size_t)d, keys, klens, out, olens, rcs);
        for (int i = 0; i < d; i++) mayfly_free(out[i]);
      }
      return rc == 0 ? d : -1;
    case OP_PUSH:
      rc = d == 1 ? mayfly_queue_push(ns, val, s->vsize)
                  : mayfly_queue_push_batch(ns, (size_t)d, vals, vlens, rcs);
      return rc == 0 ? d : -1;
    case OP_POP: {
      if (d == 1) {
        rc = mayfly_queue_pop(ns, &out[0], &olens[0], 0);
        if (rc == 0) mayfly_free(out[0]);
        return rc == 0 ? 1 : rc == MAYFLY_EAGAIN ? 0 : -1;
      }
      int64_t k = mayfly_queue_pop_batch(ns, (size_t)d, out, olens);
      for (int64_t i = 0; i < k; i++) mayfly_free(out[i]);
      return k < 0 ? -1 : (int)k;
    }
    case OP_FWRITE:
    case OP_FREAD: {
      uint64_t off = ((uint64_t)w->idx * BIG_KEYS + (uint64_t)(base % BIG_KEYS)) * s->vsize;
      if (s->op == OP_FWRITE) return mayfly_file_write(ns, off, val, s->vsize) == 0 ? 1 : -1;
      uint8_t *buf = g_malloc(s->vsize);
      int64_t n = mayfly_file_read(ns, off, buf, s->vsize);
      g_free(buf);
      return n == (int64_t)s->vsize ? 1 : -1;
    }
  }
  return -1;
}

static void *run_worker(void *arg) {
  worker_t *w = arg;
  const spec_t *s = w->spec;
  uint8_t *val = g_malloc(s->vsize);
  memset(val, 'v', s->vsize);
  bench_lat_init(&w->lat);
  resp_t *r = NULL;
  mayfly_client_t *c = NULL;
  mayfly_ns_t *ns = NULL;
  int setup = 0;
  if (w->redis) {
    r = resp_connect("127.0.0.1", w->redis_port);
    setup = r != NULL ? 0 : -1;
  } else {
    mayfly_kind_t kind = s->op == OP_PUSH || s->op == OP_POP       ? MAYFLY_KIND_QUEUE
                         : s->op == OP_FWRITE || s->op == OP_FREAD ? MAYFLY_KIND_FILE
                                                                   : MAYFLY_KIND_KV;
    const char *path = kind == MAYFLY_KIND_QUEUE ? "/cmp/q"
                       : kind == MAYFLY_KIND_FILE ? "/cmp/f"
                                                 : "/cmp/kv";
    mayfly_create_options_t co = {.blocks = kind == MAYFLY_KIND_KV ? 16 : 1};
    setup = mayfly_connect(w->mayfly_dir, NULL, &c) == 0 && mayfly_mount(c, path, kind, &co, &ns) == 0
                ? 0
                : -1;
  }
  /* Reads need their keys to exist before the clock starts. */
  if (setup == 0 && (s->op == OP_GET || s->op == OP_FREAD)) {
    spec_t fill = *s;
    fill.op = s->op == OP_GET ? OP_SET : OP_FWRITE;
    fill.pipeline = 1;
    worker_t fw = *w;
    fw.spec = &fill;
    for (int j = 0; j < nkeys(s) && setup == 0; j++) {
      setup = (w->redis ? redis_batch(r, &fw, j, val) : mayfly_batch(ns, &fw, j, val)) == 1 ? 0 : -1;
    }
  }
  if (setup != 0) w->errors++;
  pthread_barrier_wait(w->ready);
  double deadline = bench_now_us() + w->o->seconds * 1e6;
  w->t0 = bench_now_us();
  for (long long base = 0; setup == 0 && bench_now_us() < deadline; base += s->pipeline) {
    double t = bench_now_us();
    int done = w->redis ? redis_batch(r, w, base, val) : mayfly_batch(ns, w, base, val);
    if (done < 0) {
      w->errors++;
      break;
    }
    if (done == 0) break; /* queue drained */
    double lat = bench_now_us() - t;
    for (int i = 0; i < done; i++) bench_lat_add(&w->lat, lat);
    w->ops += done;
  }
  w->t1 = bench_now_us();
  resp_close(r);
  mayfly_unmount(ns);
  mayfly_disconnect(c);
  g_free(val);
  return NULL;
}

static result_t run(const bench_opts_t *o, const spec_t *s, int redis, const char *dir,
                    int redis_port) {
  int n = s->clients;
  worker_t *w = g_new0(worker_t, n);
  pthread_t *th = g_new(pthread_t, n);
  pthread_barrier_t ready;
  pthread_barrier_init(&ready, NULL, (unsigned)n);
  for (int i = 0; i < n; i++) {
    w[i] = (worker_t){.o = o, .spec = s, .redis = redis, .idx = i, .mayfly_dir = dir,
                      .redis_port = redis_port, .ready = &ready};
    pthread_create(&th[i], NULL, run_worker, &w[i]);
  }
  bench_lat_t all;
  bench_lat_init(&all);
  long long ops = 0;
  int errors = 0;
  double t0 = 1e300, t1 = 0;
  for (int i = 0; i < n; i++) {
    pthread_join(th[i], NULL);
    ops += w[i].ops;
    errors += w[i].errors;
    bench_lat_merge(&all, &w[i].lat);
    bench_lat_free(&w[i].lat);
    t0 = MIN(t0, w[i].t0);
    t1 = MAX(t1, w[i].t1);
  }
  pthread_barrier_destroy(&ready);
  double secs = t1 > t0 ? (t1 - t0) / 1e6 : 1;
  result_t r = {.ops_per_s = ops / secs,
                .p50 = bench_lat_pct(&all, 50),
                .p99 = bench_lat_pct(&all, 99),
                .p999 = bench_lat_pct(&all, 99.9),
                .gbps = ops * (double)s->vsize / secs / 1e9,
                .errors = errors};
  bench_lat_free(&all);
  g_free(w);
  g_free(th);
  return r;
}

int bench_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  socklen_t l = sizeof a;
  bind(fd, (struct sockaddr *)&a, sizeof a);
  getsockname(fd, (struct sockaddr *)&a, &l);
  close(fd);
  return ntohs(a.sin_port);
}

pid_t bench_redis_start(int port) {
  char ps[16];
  snprintf(ps, sizeof ps, "%d", port);
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int null = open("/dev/null", O_WRONLY);
    dup2(null, STDOUT_FILENO);
    dup2(null, STDERR_FILENO);
    execlp("redis-server", "redis-server", "--port", ps, "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning",
           (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 500; i++) {
    resp_t *r = resp_connect("127.0.0.1", port);
    if (r != NULL) {
      const char *argv[] = {"PING"};
      size_t lens[] = {4};
      resp_cmd(r, 1, argv, lens);
      const uint8_t *d;
      int64_t len;
      int ok = resp_flush(r) == 0 && resp_read(r, &d, &len) == '+';
      resp_close(r);
      if (ok) return pid;
    }
    g_usleep(10000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  return -1;
}

typedef struct {
  int fd;
  long long bytes;
} sink_t;

static void *sink(void *arg) {
  sink_t *s = arg;
  int c = accept(s->fd, NULL, NULL);
  uint8_t *buf = g_malloc(1 << 20);
  ssize_t r;
  while ((r = recv(c, buf, 1 << 20, 0)) > 0) s->bytes += r;
  close(c);
  g_free(buf);
  return NULL;
}

/* One TCP stream over loopback, 1 MiB writes, for `seconds`: GB/s. */
static double loopback_gbps(int seconds) {
  sink_t s = {.fd = socket(AF_INET, SOCK_STREAM, 0)};
  struct sockaddr_in a = {.sin_family = AF_INET};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  socklen_t l = sizeof a;
  bind(s.fd, (struct sockaddr *)&a, sizeof a);
  listen(s.fd, 1);
  getsockname(s.fd, (struct sockaddr *)&a, &l);
  pthread_t th;
  pthread_create(&th, NULL, sink, &s);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  connect(fd, (struct sockaddr *)&a, sizeof a);
  uint8_t *buf = g_malloc0(1 << 20);
  long long sent = 0;
  double t0 = bench_now_us(), end = t0 + seconds * 1e6;
  while (bench_now_us() < end) {
    ssize_t w = send(fd, buf, 1 << 20, MSG_NOSIGNAL);
    if (w <= 0) break;
    sent += w;
  }
  double secs = (bench_now_us() - t0) / 1e6;
  close(fd);
  pthread_join(th, NULL);
  close(s.fd);
  g_free(buf);
  return sent / secs / 1e9;
}

/* --- the event-driven loader's side of a row --- */

/* Keys per connection for the event loader: the filled values of a row stay
 * under 48 MiB, so Mayfly's one partition (a 64 MiB block) never needs to
 * split; Redis gets the same keys. */
static int ev_keys(const spec_t *s) {
  long long k = (48ll << 20) / ((long long)s->clients * (long long)(s->vsize + 160));
  return (int)CLAMP(k, 1, nkeys(s));
}

/* Creates the kv namespace of one event-loader row: one partition that
 * cannot split (max_blocks 1), pinned, so the loader can address its block
 * directly for the whole row. Fills the target fields of *es. */
static int ev_namespace(mayfly_client_t *c, const char *path, evl_spec_t *es) {
  mayfly_create_options_t co = {.blocks = 1, .max_blocks = 1, .pinned = 1};
  mayfly_stat_t *st = NULL;
  mayfly_remove(c, path, 0);
  int rc = mayfly_create(c, path, MAYFLY_KIND_KV, &co, &st);
  if (rc != 0) {
    fprintf(stderr, "mayfly-bench: create %s: %s\n", path, mayfly_last_error());
    return rc;
  }
  rc = MAYFLY_EPROTO;
  if (st->npartitions == 1 && st->partitions[0].range_lo == 0 &&
      st->partitions[0].range_hi == WIRE_KV_SLOTS) {
    const mayfly_partition_t *p = &st->partitions[0];
    const char *colon = strrchr(p->server_address, ':');
    if (colon != NULL && (size_t)(colon - p->server_address) < sizeof es->host) {
      snprintf(es->host, sizeof es->host, "%.*s", (int)(colon - p->server_address),
               p->server_address);
      es->port = atoi(colon + 1);
      es->block_index = (uint32_t)p->block_index;
      es->generation = (uint64_t)p->generation;
      rc = 0;
    }
  }
  if (rc != 0) fprintf(stderr, "mayfly-bench: %s: unexpected layout\n", path);
  mayfly_stat_free(st);
  return rc;
}

static result_t ev_result(evl_result_t *e, const spec_t *s) {
  double secs = e->t1 > e->t0 ? (e->t1 - e->t0) / 1e6 : 1;
  result_t r = {.ops_per_s = e->ops / secs,
                .p50 = bench_lat_pct(&e->lat, 50),
                .p99 = bench_lat_pct(&e->lat, 99),
                .p999 = bench_lat_pct(&e->lat, 99.9),
                .gbps = e->ops * (double)s->vsize / secs / 1e9,
                .errors = e->errors};
  bench_lat_free(&e->lat);
  return r;
}

/* One row with the event loader: Mayfly over the data protocol to a fresh
 * one-partition namespace, then Redis over RESP. */
static void run_event(const bench_opts_t *o, const spec_t *s, mayfly_client_t *c, int row,
                      int redis_port, result_t *m, result_t *r) {
  evl_spec_t es = {.proto = EVL_MAYFLY, .put = s->op == OP_SET, .conns = s->clients,
                   .pipeline = s->pipeline, .vsize = s->vsize, .keys = ev_keys(s),
                   .seconds = o->seconds,
                   .batches = o->ops > 0 ? (o->ops + s->pipeline - 1) / s->pipeline : 0};
  evl_result_t er;
  char path[64];
  snprintf(path, sizeof path, "/cmp/ev%d", row);
  if (ev_namespace(c, path, &es) == 0) {
    evl_run(&es, &er);
    *m = ev_result(&er, s);
  } else {
    *m = (result_t){.errors = 1};
  }
  mayfly_remove(c, path, 0);
  es.proto = EVL_REDIS;
  snprintf(es.host, sizeof es.host, "127.0.0.1");
  es.port = redis_port;
  evl_run(&es, &er);
  *r = ev_result(&er, s);
}

/* --- redis-benchmark, the check on the Redis side --- */

typedef struct {
  int ran;
  double ops_per_s, p99, gbps;
} rb_t;

/* Runs redis-benchmark with the row's shape (-c, -P, -d, -t set|get) for
 * about `seconds` at the rate `expect` our loader saw; its GETs read keys
 * filled first. ran = 0 when the tool is missing or failed. */
static rb_t redis_benchmark(int port, const spec_t *s, double expect, int seconds) {
  rb_t rb = {0};
  char *tool = g_find_program_in_path("redis-benchmark");
  if (tool == NULL) return rb;
  int keyspace = s->vsize >= (1u << 20) ? BIG_KEYS : KEYS;
  if (s->op == OP_GET) {
    /* redis-benchmark names its keys key:%012d with -r. */
    resp_t *r = resp_connect("127.0.0.1", port);
    uint8_t *val = g_malloc(s->vsize);
    memset(val, 'v', s->vsize);
    for (int k = 0; r != NULL && k < keyspace; k++) {
      char key[32];
      snprintf(key, sizeof key, "key:%012d", k);
      const char *argv[] = {"SET", key, (const char *)val};
      size_t lens[] = {3, strlen(key), s->vsize};
      resp_cmd(r, 3, argv, lens);
      const uint8_t *d;
      int64_t len;
      if (resp_flush(r) != 0 || resp_read(r, &d, &len) != '+') break;
    }
    resp_close(r);
    g_free(val);
  }
  long long n = (long long)(expect * seconds);
  n = CLAMP(n, 1000, 50000000);
  char *own[6] = {g_strdup_printf("%d", port), g_strdup_printf("%d", s->clients),
                  g_strdup_printf("%d", s->pipeline), g_strdup_printf("%zu", s->vsize),
                  g_strdup_printf("%lld", n), g_strdup_printf("%d", keyspace)};
  char *argv[] = {tool, "-h", "127.0.0.1", "-p", own[0], "-c", own[1], "-P", own[2], "-d", own[3],
                  "-n", own[4], "-r", own[5], "-t", s->op == OP_SET ? "set" : "get", "--csv",
                  NULL};
  char *out = NULL;
  int status = -1;
  if (g_spawn_sync(NULL, argv, NULL, G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, &out, NULL, &status,
                   NULL) &&
      status == 0 && out != NULL) {
    /* "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",
     * "p95_latency_ms","p99_latency_ms","max_latency_ms", then one line. */
    char **lines = g_strsplit(out, "\n", 3);
    if (lines[0] != NULL && lines[1] != NULL) {
      char **f = g_strsplit(lines[1], ",", 10);
      if (g_strv_length(f) >= 7) {
        for (int i = 0; f[i] != NULL; i++) g_strdelimit(f[i], "\"", ' ');
        rb.ops_per_s = g_ascii_strtod(f[1], NULL);
        rb.p99 = g_ascii_strtod(f[6], NULL) * 1000;
        rb.gbps = rb.ops_per_s * (double)s->vsize / 1e9;
        rb.ran = rb.ops_per_s > 0;
      }
      g_strfreev(f);
    }
    g_strfreev(lines);
  }
  g_free(out);
  for (int i = 0; i < 6; i++) g_free(own[i]);
  g_free(tool);
  return rb;
}

/* --- rows and the table --- */

static const char *size_name(const spec_t *s, char *buf, size_t len) {
  if (s->vsize >= (1u << 20)) {
    snprintf(buf, len, "%zuMiB", s->vsize >> 20);
  } else {
    snprintf(buf, len, "%zu", s->vsize);
  }
  return buf;
}

static void print_row(const bench_opts_t *o, const spec_t *s, const char *loader,
                      const result_t *m, const result_t *r, const rb_t *rb, double loop,
                      int first) {
  double ratio = r->ops_per_s > 0 ? m->ops_per_s / r->ops_per_s : 0;
  int big = s->vsize >= (1u << 20);
  const char *err = m->errors || r->errors ? "  ERRORS" : "";
  char sz[32];
  if (o->json) {
    printf("%s  {\"workload\": \"%s\", \"loader\": \"%s\", \"clients\": %d, \"pipeline\": %d, "
           "\"size\": %zu, \"mayfly\": {\"ops_per_s\": %.0f, \"gbps\": %.3f, \"p50_us\": %.1f, "
           "\"p99_us\": %.1f, \"p999_us\": %.1f, \"errors\": %d}, \"redis\": {\"ops_per_s\": %.0f, "
           "\"gbps\": %.3f, \"p50_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f, \"errors\": %d}, "
           "\"ratio\": %.3f, ",
           first ? "" : ",\n", s->name, loader, s->clients, s->pipeline, s->vsize, m->ops_per_s,
           m->gbps, m->p50, m->p99, m->p999, m->errors, r->ops_per_s, r->gbps, r->p50, r->p99,
           r->p999, r->errors, ratio);
    if (rb->ran) {
      printf("\"redis_benchmark\": {\"ops_per_s\": %.0f, \"gbps\": %.3f, \"p99_us\": %.1f}}",
             rb->ops_per_s, rb->gbps, rb->p99);
    } else {
      printf("\"redis_benchmark\": null}");
    }
  } else if (o->csv) {
    printf("%s,%s,%d,%d,%zu,%.0f,%.0f,%.3f,%.3f,%.3f,%.1f,%.1f,%.1f,%.1f,%.3f,%.0f,%.1f\n",
           s->name, loader, s->clients, s->pipeline, s->vsize, m->ops_per_s, r->ops_per_s, ratio,
           m->gbps, r->gbps, m->p50, r->p50, m->p99, r->p99, loop, rb->ops_per_s, rb->p99);
  } else if (big) {
    char rbs[32] = "-";
    if (rb->ran) snprintf(rbs, sizeof rbs, "%.2fGB/s", rb->gbps);
    printf("%-16s %-7s %4d %4d %6s %9.2fGB/s %9.2fGB/s %5.2fx %12s %7.0fus %7.0fus  "
           "(%.0f%% of loopback)%s\n",
           s->name, loader, s->clients, s->pipeline, size_name(s, sz, sizeof sz), m->gbps,
           r->gbps, ratio, rbs, m->p99, r->p99, 100 * m->gbps / loop, err);
  } else {
    char rbs[32] = "-";
    if (rb->ran) snprintf(rbs, sizeof rbs, "%.0f", rb->ops_per_s);
    printf("%-16s %-7s %4d %4d %6s %13.0f %13.0f %5.2fx %12s %7.0fus %7.0fus%s\n", s->name,
           loader, s->clients, s->pipeline, size_name(s, sz, sizeof sz), m->ops_per_s,
           r->ops_per_s, ratio, rbs, m->p99, r->p99, err);
  }
  fflush(stdout);
}

/* The rows of issue 9's targets (compare-redis.sh): kv get and put of 64 B
 * at 16 and 50 clients without pipelining and at 50 clients with a pipeline
 * of 16, and of 1 MiB values at 4 clients. */
static GArray *target_specs(void) {
  GArray *specs = g_array_new(FALSE, FALSE, sizeof(spec_t));
  const spec_t t[] = {{"kv put", OP_SET, 16, 1, 64},       {"kv get", OP_GET, 16, 1, 64},
                      {"kv put", OP_SET, 50, 1, 64},       {"kv get", OP_GET, 50, 1, 64},
                      {"kv put", OP_SET, 50, 16, 64},      {"kv get", OP_GET, 50, 16, 64},
                      {"kv put 1MiB", OP_SET, 4, 1, 1 << 20}, {"kv get 1MiB", OP_GET, 4, 1, 1 << 20}};
  g_array_append_vals(specs, t, G_N_ELEMENTS(t));
  return specs;
}

static GArray *all_specs(int quick) {
  GArray *specs = g_array_new(FALSE, FALSE, sizeof(spec_t));
  const int clients[] = {1, 16, 50}, pipes[] = {1, 16};
  const size_t sizes[] = {64, 4096};
  for (int z = 0; z < 2; z++) {
    for (int c = 0; c < 3; c++) {
      for (int p = 0; p < 2; p++) {
        spec_t set = {"kv put", OP_SET, clients[c], pipes[p], sizes[z]};
        spec_t get = {"kv get", OP_GET, clients[c], pipes[p], sizes[z]};
        g_array_append_val(specs, set);
        g_array_append_val(specs, get);
      }
    }
  }
  for (int c = 0; c < 3; c++) {
    for (int p = 0; p < 2; p++) {
      spec_t push = {"queue push", OP_PUSH, clients[c], pipes[p], 64};
      spec_t pop = {"queue pop", OP_POP, clients[c], pipes[p], 64};
      g_array_append_val(specs, push);
      g_array_append_val(specs, pop);
    }
  }
  spec_t big[] = {{"kv put 1MiB", OP_SET, 4, 1, 1 << 20},
                  {"kv get 1MiB", OP_GET, 4, 1, 1 << 20},
                  {"file write 1MiB", OP_FWRITE, 4, 1, 1 << 20},
                  {"file read 1MiB", OP_FREAD, 4, 1, 1 << 20}};
  g_array_append_vals(specs, big, 4);
  if (quick) {
    /* A smoke run: one row of each kind, to keep the comparison working. */
    GArray *few = g_array_new(FALSE, FALSE, sizeof(spec_t));
    for (guint i = 0; i < specs->len; i++) {
      const spec_t *s = &g_array_index(specs, spec_t, i);
      if ((s->clients == 1 && s->pipeline == 16 && s->vsize == 64) || s->op == OP_FREAD) {
        g_array_append_val(few, *s);
      }
    }
    g_array_free(specs, TRUE);
    specs = few;
  }
  return specs;
}

int bench_compare(bench_opts_t *o) {
  int threads = 1, event = 1;
  if (o->loader != NULL && strcmp(o->loader, "both") != 0) {
    threads = strcmp(o->loader, "threads") == 0;
    event = strcmp(o->loader, "event") == 0;
    if (!threads && !event) {
      fprintf(stderr, "mayfly-bench: --loader: '%s' is not threads, event or both\n", o->loader);
      return 2;
    }
  }
  int rport = bench_free_port();
  pid_t redis = bench_redis_start(rport);
  if (redis < 0) {
    fprintf(stderr, "mayfly-bench: cannot start redis-server (install the Debian package "
                    "redis-server, or run bench/compare-redis.sh)\n");
    return 1;
  }
  bench_dir_t d;
  if (bench_dir_start(o, &d) != 0) return 1;
  pid_t ms = bench_memserver_start(o, &d, 64, "64MiB");
  if (ms < 0) return 1;
  mayfly_client_t *ctl = NULL;
  if (mayfly_connect(d.address, NULL, &ctl) != 0) {
    fprintf(stderr, "mayfly-bench: cannot connect to the directory: %s\n", mayfly_last_error());
    return 1;
  }
  mayfly_mkdir(ctl, "/cmp", 1);

  GArray *specs = o->targets ? target_specs() : all_specs(o->quick);
  /* --workload, --clients, --pipeline and --value-size pick rows. */
  for (guint i = specs->len; i-- > 0;) {
    const spec_t *s = &g_array_index(specs, spec_t, i);
    if ((o->workload != NULL && strcmp(o->workload, s->name) != 0) ||
        (o->clients > 0 && o->clients != s->clients) ||
        (o->pipeline > 0 && o->pipeline != s->pipeline) ||
        (o->value_size > 0 && (size_t)o->value_size != s->vsize)) {
      g_array_remove_index(specs, i);
    }
  }
  double loop = loopback_gbps(2);
  if (o->json) {
    printf("{\"bench\": \"compare\", \"loopback_gbps\": %.3f, \"rows\": [\n", loop);
  } else if (!o->csv) {
    printf("mayfly-bench compare: Mayfly (directory + 1 memory server) vs Redis (redis-server, "
           "no persistence), same connections/pipeline/value size, %d s each. Loaders: threads = "
           "one thread and connection per client (Mayfly through libmayfly); event = one thread "
           "driving every connection with epoll (Mayfly's data protocol to one kv partition, "
           "RESP to Redis). Ratios are Mayfly/Redis with the same loader; redis-bench is "
           "redis-benchmark's own figure for the same shape.\n",
           o->seconds);
    printf("loopback TCP, one stream, 1 MiB writes: %.2f GB/s\n\n", loop);
    printf("%-16s %-7s %4s %4s %6s %13s %13s %6s %12s %9s %9s\n", "workload", "loader", "cl",
           "pipe", "size", "mayfly", "redis", "ratio", "redis-bench", "p99 mf", "p99 rd");
  } else {
    printf("workload,loader,clients,pipeline,size,mayfly_ops,redis_ops,ratio,mayfly_gbps,"
           "redis_gbps,mayfly_p50_us,redis_p50_us,mayfly_p99_us,redis_p99_us,loopback_gbps,"
           "redis_benchmark_ops,redis_benchmark_p99_us\n");
  }
  int failed = 0, first = 1;
  for (guint i = 0; i < specs->len; i++) {
    const spec_t *s = &g_array_index(specs, spec_t, i);
    int kv = s->op == OP_SET || s->op == OP_GET;
    result_t tm = {0}, tr = {0}, em = {0}, er = {0};
    if (threads) {
      tm = run(o, s, 0, d.address, rport);
      tr = run(o, s, 1, d.address, rport);
      failed |= tm.errors || tr.errors;
    }
    if (event && kv) {
      run_event(o, s, ctl, (int)i, rport, &em, &er);
      failed |= em.errors || er.errors;
    }
    rb_t rb = {0};
    if (kv) {
      double expect = event ? er.ops_per_s : tr.ops_per_s;
      rb = redis_benchmark(rport, s, expect, o->seconds);
    }
    if (threads) {
      print_row(o, s, "threads", &tm, &tr, &rb, loop, first);
      first = 0;
    }
    if (event && kv) {
      print_row(o, s, "event", &em, &er, &rb, loop, first);
      first = 0;
    }
  }
  if (o->json) printf("\n]}\n");
  g_array_free(specs, TRUE);
  mayfly_disconnect(ctl);
  bench_proc_stop(ms);
  bench_dir_stop(&d);
  kill(redis, SIGTERM);
  waitpid(redis, NULL, 0);
  return failed ? 1 : 0;
}
