/*
 * mayfly-bench data: the data plane through libmayfly.
 *
 * Starts a throwaway directory and one memory server (or uses --directory),
 * then measures, with 1 and 16 clients (each its own connection; with
 * --pipeline D, D threads share each client's connection so D requests are
 * in flight on it):
 *   kv put / kv get     --value-size bytes (default 64) over 10,000 keys per client
 *   queue push / pop    the same size, one shared queue
 *   file write / read   1 MiB per operation, 1 and 4 clients, reported in GB/s too
 *
 * With --auth (bench_auth) it measures instead what authentication costs the
 * data plane: kv get against an open cluster and against one with a cluster
 * key and a tenants file (every request carries a capability the memory
 * server checks), in the same run.
 */
#include <glib/gstdio.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench/bench.h"
#include "client/mayfly.h"

#define KEYS_PER_CLIENT 10000
#define FILE_OP (1u << 20)
#define FILE_SPAN_PER_CLIENT (16u << 20)

typedef bench_work_t work_t;

typedef struct {
  const bench_opts_t *o;
  pthread_barrier_t *ready; /* every worker set up before the clock starts */
  mayfly_ns_t *ns;
  work_t work;
  int client, thread, threads;
  long long ops;
  int errors;
  int last_error;
  bench_lat_t lat;
  double started, finished;
} worker_t;

static void *run_worker(void *arg) {
  worker_t *w = arg;
  size_t vsize = (size_t)w->o->value_size;
  uint8_t *buf = g_malloc(MAX(vsize, (size_t)FILE_OP));
  memset(buf, 'x', MAX(vsize, (size_t)FILE_OP));
  char key[64];
  if (w->work == BENCH_KV_GET) {
    /* Every key this thread will read exists before the clock starts. */
    for (int k = w->thread; k < KEYS_PER_CLIENT; k += w->threads) {
      int klen = snprintf(key, sizeof key, "key:%d:%d", w->client, k);
      if (mayfly_kv_put(w->ns, key, (size_t)klen, buf, vsize) != 0) w->errors++;
    }
  }
  pthread_barrier_wait(w->ready);
  double deadline = bench_now_us() + w->o->seconds * 1e6;
  w->started = bench_now_us();
  for (long long i = 0; w->o->ops ? i < w->o->ops : bench_now_us() < deadline; i++) {
    int k = (int)((i * w->threads + w->thread) % KEYS_PER_CLIENT);
    int klen = snprintf(key, sizeof key, "key:%d:%d", w->client, k);
    double t0 = bench_now_us();
    int rc = 0;
    switch (w->work) {
      case BENCH_KV_PUT:
        rc = mayfly_kv_put(w->ns, key, (size_t)klen, buf, vsize);
        break;
      case BENCH_KV_GET: {
        void *v = NULL;
        size_t vl = 0;
        rc = mayfly_kv_get(w->ns, key, (size_t)klen, &v, &vl);
        mayfly_free(v);
        break;
      }
      case BENCH_Q_PUSH:
        rc = mayfly_queue_push(w->ns, buf, vsize);
        break;
      case BENCH_Q_POP: {
        void *v = NULL;
        size_t vl = 0;
        rc = mayfly_queue_pop(w->ns, &v, &vl, 0);
        mayfly_free(v);
        if (rc == MAYFLY_EAGAIN) goto done; /* drained */
        break;
      }
      case BENCH_FILE_WRITE:
      case BENCH_FILE_READ: {
        uint64_t slot = (uint64_t)((i * w->threads + w->thread) % (FILE_SPAN_PER_CLIENT / FILE_OP));
        uint64_t off = (uint64_t)w->client * FILE_SPAN_PER_CLIENT + slot * FILE_OP;
        if (w->work == BENCH_FILE_WRITE) {
          rc = mayfly_file_write(w->ns, off, buf, FILE_OP);
        } else {
          int64_t n = mayfly_file_read(w->ns, off, buf, FILE_OP);
          rc = n == FILE_OP ? 0 : (n < 0 ? (int)n : MAYFLY_EIO);
        }
        break;
      }
    }
    if (rc != 0) {
      w->errors++;
      w->last_error = rc;
      break;
    }
    bench_lat_add(&w->lat, bench_now_us() - t0);
    w->ops++;
  }
done:
  w->finished = bench_now_us();
  g_free(buf);
  return NULL;
}

/* CPU time a process has used, in microseconds (/proc/PID/stat utime +
 * stime), or -1. */
static double proc_cpu_us(pid_t pid) {
  char path[64], *txt = NULL;
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  if (!g_file_get_contents(path, &txt, NULL, NULL)) return -1;
  /* Fields after the command (which may hold spaces) start past its ')'. */
  const char *p = strrchr(txt, ')');
  unsigned long long ut = 0, st = 0;
  int ok = p != NULL && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                               &ut, &st) == 2;
  g_free(txt);
  return ok ? (double)(ut + st) * 1e6 / (double)sysconf(_SC_CLK_TCK) : -1;
}

/* This process's CPU time (every thread), in microseconds. */
static double self_cpu_us(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* CPU spent while the workers ran (the clock running, not their set-up). */
typedef struct {
  pid_t server; /* the memory server to account, 0: none */
  double server_us, client_us;
} cpu_use_t;

/* Runs one workload with `clients` clients of `threads` threads each; with
 * cpu (may be NULL), also what the memory server and this process spent. */
static int run_cpu(const bench_opts_t *o, const char *address, const char *path,
                   mayfly_kind_t kind, int blocks, work_t work, int clients, const char *name,
                   GArray *rows, cpu_use_t *cpu) {
  int threads = o->pipeline > 0 ? o->pipeline : 1;
  int n = clients * threads;
  mayfly_client_t **cl = g_new0(mayfly_client_t *, clients);
  mayfly_ns_t **ns = g_new0(mayfly_ns_t *, clients);
  worker_t *w = g_new0(worker_t, n);
  pthread_t *th = g_new(pthread_t, n);
  int failed = 0;
  pthread_barrier_t ready;
  /* With cpu, this thread waits at the barrier too, to read the clocks
   * when the workers start. */
  pthread_barrier_init(&ready, NULL, (unsigned)n + (cpu != NULL));
  for (int c = 0; c < clients && !failed; c++) {
    mayfly_create_options_t co = {.blocks = blocks};
    mayfly_options_t copts = {.token = o->token};
    failed = mayfly_connect(address, &copts, &cl[c]) != 0 ||
             mayfly_mount(cl[c], path, kind, &co, &ns[c]) != 0;
  }
  if (failed) {
    fprintf(stderr, "mayfly-bench: %s: %s\n", name, mayfly_last_error());
  }
  for (int i = 0; i < n && !failed; i++) {
    w[i] = (worker_t){.o = o, .ready = &ready, .ns = ns[i / threads], .work = work, .client = i / threads,
                      .thread = i % threads, .threads = threads};
    bench_lat_init(&w[i].lat);
    pthread_create(&th[i], NULL, run_worker, &w[i]);
  }
  double s0 = 0, c0 = 0;
  if (cpu != NULL && !failed) {
    pthread_barrier_wait(&ready);
    s0 = proc_cpu_us(cpu->server);
    c0 = self_cpu_us();
  }
  bench_lat_t all;
  bench_lat_init(&all);
  long long ops = 0;
  int errors = 0, last = 0;
  double start = 1e300, end = 0;
  for (int i = 0; i < n && !failed; i++) {
    pthread_join(th[i], NULL);
    ops += w[i].ops;
    errors += w[i].errors;
    if (w[i].errors) last = w[i].last_error;
    bench_lat_merge(&all, &w[i].lat);
    bench_lat_free(&w[i].lat);
    start = MIN(start, w[i].started);
    end = MAX(end, w[i].finished);
  }
  if (cpu != NULL && !failed) {
    cpu->server_us = proc_cpu_us(cpu->server) - s0;
    cpu->client_us = self_cpu_us() - c0;
  }
  if (!failed) {
    int file = work == BENCH_FILE_READ || work == BENCH_FILE_WRITE;
    double secs = end > start ? (end - start) / 1e6 : 1;
    bench_row_t r = {.name = g_strdup(name),
                     .clients = clients,
                     .ops = ops,
                     .unit = g_strdup(file ? "1 MiB" : "op"),
                     .ops_per_s = ops / secs,
                     .p50_us = bench_lat_pct(&all, 50),
                     .p99_us = bench_lat_pct(&all, 99),
                     .p999_us = bench_lat_pct(&all, 99.9)};
    if (file) {
      char *n2 = g_strdup_printf("%s (%.2f GB/s)", name, ops * (double)FILE_OP / secs / 1e9);
      g_free(r.name);
      r.name = n2;
    }
    g_array_append_val(rows, r);
  }
  bench_lat_free(&all);
  pthread_barrier_destroy(&ready);
  for (int c = 0; c < clients; c++) {
    mayfly_unmount(ns[c]);
    mayfly_disconnect(cl[c]);
  }
  g_free(cl);
  g_free(ns);
  g_free(w);
  g_free(th);
  if (errors > 0) {
    fprintf(stderr, "mayfly-bench: %s with %d clients: %d failed: %s\n", name, clients, errors,
            mayfly_strerror(last));
  }
  return failed || errors ? -1 : 0;
}

static int run(const bench_opts_t *o, const char *address, const char *path, mayfly_kind_t kind,
               int blocks, work_t work, int clients, const char *name, GArray *rows) {
  return run_cpu(o, address, path, kind, blocks, work, clients, name, rows, NULL);
}

int bench_data_run(const bench_opts_t *o, const char *address, const char *path, int kind,
                   int blocks, bench_work_t work, int clients, const char *name, GArray *rows) {
  return run(o, address, path, (mayfly_kind_t)kind, blocks, work, clients, name, rows);
}

int bench_data(bench_opts_t *o) {
  if (o->value_size <= 0) o->value_size = 64;
  bench_dir_t d;
  if (bench_dir_start(o, &d) != 0) return 1;
  pid_t ms = 0;
  if (o->directory == NULL) {
    ms = bench_memserver_start(o, &d, 64, "64MiB");
    if (ms < 0) {
      bench_dir_stop(&d);
      return 1;
    }
  }
  int sets[2] = {1, 16}, fsets[2] = {1, 4};
  int nsets = 2;
  if (o->clients > 0) {
    sets[0] = fsets[0] = o->clients;
    nsets = 1;
  }
  GArray *rows = g_array_new(FALSE, TRUE, sizeof(bench_row_t));
  int failed = 0;
  char kvname[64], qname[64];
  snprintf(kvname, sizeof kvname, "kv put %dB", o->value_size);
  for (int s = 0; s < nsets; s++) {
    failed |= run(o, d.address, "/bench/kv", MAYFLY_KIND_KV, 4, BENCH_KV_PUT, sets[s], kvname, rows);
  }
  snprintf(kvname, sizeof kvname, "kv get %dB", o->value_size);
  for (int s = 0; s < nsets; s++) {
    failed |= run(o, d.address, "/bench/kv", MAYFLY_KIND_KV, 4, BENCH_KV_GET, sets[s], kvname, rows);
  }
  for (int s = 0; s < nsets; s++) {
    snprintf(qname, sizeof qname, "queue push %dB", o->value_size);
    failed |= run(o, d.address, "/bench/q", MAYFLY_KIND_QUEUE, 1, BENCH_Q_PUSH, sets[s], qname, rows);
    snprintf(qname, sizeof qname, "queue pop %dB", o->value_size);
    failed |= run(o, d.address, "/bench/q", MAYFLY_KIND_QUEUE, 1, BENCH_Q_POP, sets[s], qname, rows);
  }
  for (int s = 0; s < nsets; s++) {
    failed |= run(o, d.address, "/bench/file", MAYFLY_KIND_FILE, 1, BENCH_FILE_WRITE, fsets[s],
                  "file write 1MiB", rows);
  }
  for (int s = 0; s < nsets; s++) {
    failed |= run(o, d.address, "/bench/file", MAYFLY_KIND_FILE, 1, BENCH_FILE_READ, fsets[s],
                  "file read 1MiB", rows);
  }
  bench_print(o, "data", rows);
  for (guint i = 0; i < rows->len; i++) {
    g_free(g_array_index(rows, bench_row_t, i).name);
    g_free(g_array_index(rows, bench_row_t, i).unit);
  }
  g_array_free(rows, TRUE);
  bench_proc_stop(ms);
  bench_dir_stop(&d);
  return failed ? 1 : 0;
}

/* --- authentication on and off (--auth) --- */

#define AUTH_ROUNDS 3

/* Writes text to dir/name (mode 0600); returns the path (g_free) or NULL. */
static char *write_private(const char *dir, const char *name, const char *text) {
  char *path = g_build_filename(dir, name, NULL);
  GError *err = NULL;
  if (!g_file_set_contents(path, text, -1, &err) || g_chmod(path, 0600) != 0) {
    fprintf(stderr, "mayfly-bench: %s: %s\n", path, err ? err->message : "chmod failed");
    if (err) g_error_free(err);
    g_free(path);
    return NULL;
  }
  return path;
}

/* n random bytes as hexadecimal (a throwaway key or token for the run). */
static char *random_hex(size_t n) {
  GString *s = g_string_new(NULL);
  for (size_t i = 0; i < n; i++) g_string_append_printf(s, "%02x", g_random_int_range(0, 256));
  return g_string_free(s, FALSE);
}

int bench_auth(bench_opts_t *o) {
  if (o->directory != NULL) {
    fprintf(stderr, "mayfly-bench: --auth starts its own two clusters (drop --directory)\n");
    return 2;
  }
  if (o->value_size <= 0) o->value_size = 64;
  int clients = o->clients > 0 ? o->clients : 16;
  char *tmp = g_dir_make_tmp("mayfly-bench-auth-XXXXXX", NULL);
  char *key = random_hex(32), *token = random_hex(16);
  char *tenants_text = g_strdup_printf("[tenant bench]\ntoken = %s\nprefix = /\nadmin = true\n",
                                       token);
  char *key_file = tmp ? write_private(tmp, "cluster.key", key) : NULL;
  char *tenants_file = tmp ? write_private(tmp, "tenants.ini", tenants_text) : NULL;
  bench_dir_t off = {0}, on = {0};
  pid_t ms_off = -1, ms_on = -1;
  int failed = key_file == NULL || tenants_file == NULL;
  if (!failed) {
    const char *dflags[] = {"--tenants", tenants_file, "--cluster-key-file", key_file, NULL};
    const char *mflags[] = {"--cluster-key-file", key_file, NULL};
    failed = bench_dir_spawn(o, NULL, 5, &off) != 0 ||
             (ms_off = bench_memserver_start(o, &off, 64, "64MiB")) < 0 ||
             bench_dir_spawn(o, dflags, 5, &on) != 0;
    if (!failed) {
      bench_opts_t admin = *o;
      admin.token = token;
      failed = (ms_on = bench_memserver_spawn(&admin, &on, 64, "64MiB", mflags)) < 0;
    }
  }
  GArray *rows = g_array_new(FALSE, TRUE, sizeof(bench_row_t));
  const int pipelines[2] = {16, 1};
  double sum[2][2] = {{0}}; /* [pipeline][auth] ops/s over the rounds */
  /* CPU microseconds per get over the rounds, [pipeline][auth]: the memory
   * server's and this process's (the clients'), steadier than throughput on
   * a machine others load too. */
  double srv[2][2] = {{0}}, cli[2][2] = {{0}}, nops[2][2] = {{0}};
  for (int p = 0; p < 2 && !failed; p++) {
    /* Off and on alternate, in the other order every second round, so a
     * drift of the machine weighs on both sides alike. */
    for (int round = 0; round < AUTH_ROUNDS && !failed; round++) {
      for (int k = 0; k < 2 && !failed; k++) {
        int auth = (k + round) % 2;
        bench_opts_t r = *o;
        r.pipeline = pipelines[p];
        r.token = auth ? token : NULL;
        char name[96];
        snprintf(name, sizeof name, "kv get %dB P%d auth %s", o->value_size, pipelines[p],
                 auth ? "on" : "off");
        cpu_use_t cpu = {.server = auth ? ms_on : ms_off};
        failed |= run_cpu(&r, auth ? on.address : off.address, "/bench/kv", MAYFLY_KIND_KV, 4,
                          BENCH_KV_GET, clients, name, rows, &cpu);
        if (!failed) {
          const bench_row_t *row = &g_array_index(rows, bench_row_t, rows->len - 1);
          sum[p][auth] += row->ops_per_s;
          srv[p][auth] += cpu.server_us;
          cli[p][auth] += cpu.client_us;
          nops[p][auth] += (double)row->ops;
        }
      }
    }
  }
  if (!failed) {
    bench_print(o, "data --auth", rows);
    for (int p = 0; p < 2 && !o->json; p++) {
      double ratio = sum[p][0] > 0 ? sum[p][1] / sum[p][0] : 0;
      printf("%skv get %dB, %d clients, pipeline %d: auth on/off %.3f (%+.1f%%), mean of %d "
             "rounds: off %.0f ops/s, on %.0f ops/s\n",
             p == 0 && !o->json && !o->csv ? "\n" : "", o->value_size, clients, pipelines[p],
             ratio, (ratio - 1) * 100, AUTH_ROUNDS, sum[p][0] / AUTH_ROUNDS,
             sum[p][1] / AUTH_ROUNDS);
      double s_off = srv[p][0] / nops[p][0], s_on = srv[p][1] / nops[p][1];
      double c_off = cli[p][0] / nops[p][0], c_on = cli[p][1] / nops[p][1];
      printf("  CPU per get: memory server %.2f -> %.2f us (%+.1f%%), clients %.2f -> %.2f us "
             "(%+.1f%%)\n",
             s_off, s_on, (s_on / s_off - 1) * 100, c_off, c_on, (c_on / c_off - 1) * 100);
    }
  }
  for (guint i = 0; i < rows->len; i++) {
    g_free(g_array_index(rows, bench_row_t, i).name);
    g_free(g_array_index(rows, bench_row_t, i).unit);
  }
  g_array_free(rows, TRUE);
  if (ms_on > 0) bench_proc_stop(ms_on);
  if (ms_off > 0) bench_proc_stop(ms_off);
  bench_dir_stop(&on);
  bench_dir_stop(&off);
  if (key_file) g_unlink(key_file);
  if (tenants_file) g_unlink(tenants_file);
  if (tmp) g_rmdir(tmp);
  g_free(key_file);
  g_free(tenants_file);
  g_free(tmp);
  g_free(key);
  g_free(token);
  g_free(tenants_text);
  return failed ? 1 : 0;
}
