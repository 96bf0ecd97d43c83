/*
 * mayfly-bench control: the control plane's throughput and latency.
 *
 *   create+remove   each client creates a kv namespace (one block) and
 *                   removes it again; one op = the pair
 *   renew 10k       each client renews the same 10,000 paths in one batched
 *                   call; one op = the whole batch
 *
 * Blocks come from a pool the bench registers through the control API (the
 * same call a memory server makes), so allocation is part of the measure.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "bench/bench.h"
#include "common/ctl.h"
#include "client/mayfly.h"

#define RENEW_PATHS 10000

typedef struct {
  const bench_opts_t *o;
  const char *address;
  int index;
  int kind; /* 0 create+remove, 1 renew */
  const char *const *paths;
  long long ops;
  int errors;
  bench_lat_t lat;
  double started, finished;
} worker_t;

static void *run_worker(void *arg) {
  worker_t *w = arg;
  mayfly_client_t *c = NULL;
  bench_lat_init(&w->lat);
  if (mayfly_connect(w->address, NULL, &c) != 0) {
    w->errors++;
    return NULL;
  }
  char path[64];
  double deadline = bench_now_us() + w->o->seconds * 1e6;
  w->started = bench_now_us();
  for (long long i = 0; w->o->ops ? i < w->o->ops : bench_now_us() < deadline; i++) {
    double t0 = bench_now_us();
    if (w->kind == 0) {
      snprintf(path, sizeof path, "/bench/c%d/n%lld", w->index, i);
      if (mayfly_create(c, path, MAYFLY_KIND_KV, NULL, NULL) != 0 ||
          mayfly_remove(c, path, 0) != 0) {
        w->errors++;
        break;
      }
    } else if (mayfly_renew(c, w->paths, RENEW_PATHS, NULL, NULL, NULL) != 0) {
      w->errors++;
      break;
    }
    bench_lat_add(&w->lat, bench_now_us() - t0);
    w->ops++;
  }
  w->finished = bench_now_us();
  mayfly_disconnect(c);
  return NULL;
}

static int run(const bench_opts_t *o, const char *address, int kind, int clients,
               const char *const *paths, const char *name, GArray *rows) {
  worker_t *w = g_new0(worker_t, clients);
  pthread_t *th = g_new(pthread_t, clients);
  for (int i = 0; i < clients; i++) {
    w[i] = (worker_t){.o = o, .address = address, .index = i, .kind = kind, .paths = paths};
    pthread_create(&th[i], NULL, run_worker, &w[i]);
  }
  bench_lat_t all;
  bench_lat_init(&all);
  long long ops = 0;
  int errors = 0;
  double start = 1e300, end = 0;
  for (int i = 0; i < clients; i++) {
    pthread_join(th[i], NULL);
    ops += w[i].ops;
    errors += w[i].errors;
    if (w[i].lat.us) {
      bench_lat_merge(&all, &w[i].lat);
      bench_lat_free(&w[i].lat);
    }
    start = MIN(start, w[i].started);
    end = MAX(end, w[i].finished);
  }
  bench_row_t r = {.name = g_strdup(name),
                   .clients = clients,
                   .ops = ops,
                   .unit = g_strdup(kind == 0 ? "create+remove pair" : "renew of 10,000 paths"),
                   .ops_per_s = end > start ? ops / ((end - start) / 1e6) : 0,
                   .p50_us = bench_lat_pct(&all, 50),
                   .p99_us = bench_lat_pct(&all, 99),
                   .p999_us = bench_lat_pct(&all, 99.9)};
  g_array_append_val(rows, r);
  bench_lat_free(&all);
  g_free(w);
  g_free(th);
  if (errors > 0) {
    fprintf(stderr, "mayfly-bench: %s: %d clients failed: %s\n", name, errors,
            mayfly_last_error());
  }
  return errors ? -1 : 0;
}

static int register_pool(const char *address) {
  mf_ctl_t *ctl;
  int rc = mf_ctl_open(address, 5000, 2000, &ctl);
  if (rc != 0) return rc;
  rc = mf_ctl_register(ctl, "127.0.0.1:1", 100000, 1 << 20, 0, 0, NULL);
  mf_ctl_close(ctl);
  return rc;
}

int bench_control(bench_opts_t *o) {
  bench_dir_t d;
  if (bench_dir_start(o, &d) != 0) return 1;
  int rc = register_pool(d.address);
  if (rc != 0) {
    fprintf(stderr, "mayfly-bench: cannot register a block pool at %s: %s\n", d.address,
            mayfly_last_error());
    bench_dir_stop(&d);
    return 1;
  }
  mayfly_client_t *c = NULL;
  if (mayfly_connect(d.address, NULL, &c) != 0) {
    fprintf(stderr, "mayfly-bench: %s\n", mayfly_last_error());
    bench_dir_stop(&d);
    return 1;
  }
  GPtrArray *paths = g_ptr_array_new_with_free_func(g_free);
  for (int i = 0; i < RENEW_PATHS; i++) {
    char *p = g_strdup_printf("/renew/d%02d/n%05d", i % 100, i);
    mayfly_mkdir(c, p, 1);
    g_ptr_array_add(paths, p);
  }
  mayfly_mkdir(c, "/bench", 0);
  mayfly_disconnect(c);

  int sets[] = {1, 16};
  int nsets = o->clients > 0 ? 1 : 2;
  if (o->clients > 0) sets[0] = o->clients;
  GArray *rows = g_array_new(FALSE, TRUE, sizeof(bench_row_t));
  int failed = 0;
  for (int s = 0; s < nsets; s++) {
    failed |= run(o, d.address, 0, sets[s], NULL, "create+remove", rows);
  }
  for (int s = 0; s < nsets; s++) {
    failed |= run(o, d.address, 1, sets[s], (const char *const *)paths->pdata, "renew 10,000 paths",
                  rows);
  }
  bench_print(o, "control", rows);
  for (guint i = 0; i < rows->len; i++) {
    g_free(g_array_index(rows, bench_row_t, i).name);
    g_free(g_array_index(rows, bench_row_t, i).unit);
  }
  g_array_free(rows, TRUE);
  g_ptr_array_free(paths, TRUE);
  bench_dir_stop(&d);
  return failed ? 1 : 0;
}
