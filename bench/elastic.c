/*
 * mayfly-bench elastic: what repartitioning costs.
 *
 * Starts a throwaway directory and two memory servers (or uses --directory),
 * then, on one kv namespace that starts as a single partition:
 *   baseline   --clients reader threads (default 4) get random existing keys
 *              for --seconds while a writer overwrites keys in batches (the
 *              namespace does not grow: no split);
 *   growth     the same readers run while a writer puts new keys in batches
 *              until the namespace has split SPLITS times: every split moves
 *              half of a full partition to a block on the other server.
 *   solo       one more split with nothing else running;
 *   notify     a listener on a namespace while one writer does single puts.
 * It reports the splits (count, mean and longest duration, bytes moved and
 * MB/s, from the directory's counters: begin to commit), the readers' p50
 * and p99 with and without splits running and their ratio, and the
 * notification latency from each put's acknowledgement to the listener.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "client/mayfly.h"

#define SPLITS 4
#define BATCH 64

typedef struct {
  mayfly_ns_t *ns;
  int nkeys;        /* keys [0, nkeys) exist */
  volatile int *stop;
  int seed;
  long long ops, errors;
  bench_lat_t lat;
} reader_t;

static int key_of(int i, char *key, size_t len) {
  return snprintf(key, len, "k%09d", i);
}

static void *run_reader(void *arg) {
  reader_t *r = arg;
  GRand *rnd = g_rand_new_with_seed((guint32)r->seed);
  char key[32];
  while (!*r->stop) {
    int klen = key_of(g_rand_int_range(rnd, 0, r->nkeys), key, sizeof key);
    void *v = NULL;
    size_t vl = 0;
    double t0 = bench_now_us();
    int rc = mayfly_kv_get(r->ns, key, (size_t)klen, &v, &vl);
    bench_lat_add(&r->lat, bench_now_us() - t0);
    mayfly_free(v);
    r->ops++;
    if (rc != 0) r->errors++;
  }
  g_rand_free(rnd);
  return NULL;
}

/* Puts keys [from, to) in batches; returns the number of failures. */
static long long put_keys(mayfly_ns_t *ns, int from, int to, const uint8_t *val, size_t vsize) {
  char keys[BATCH][32];
  const void *kp[BATCH], *vp[BATCH];
  size_t kl[BATCH], vl[BATCH];
  int rcs[BATCH];
  long long errors = 0;
  for (int i = from; i < to; i += BATCH) {
    int n = MIN(BATCH, to - i);
    for (int k = 0; k < n; k++) {
      kl[k] = (size_t)key_of(i + k, keys[k], sizeof keys[k]);
      kp[k] = keys[k];
      vp[k] = val;
      vl[k] = vsize;
    }
    if (mayfly_kv_put_batch(ns, (size_t)n, kp, kl, vp, vl, rcs) != 0) {
      for (int k = 0; k < n; k++) errors += rcs[k] != 0;
    }
  }
  return errors;
}

static int partitions(mayfly_client_t *c, const char *path) {
  mayfly_stat_t *st = NULL;
  if (mayfly_stat(c, path, &st) != 0) return -1;
  int n = (int)st->npartitions;
  mayfly_stat_free(st);
  return n;
}

/* Runs readers for `seconds`, or while `writer` (if given) runs. */
typedef struct {
  mayfly_ns_t *ns;
  int from, to;
  const uint8_t *val;
  size_t vsize;
  mayfly_client_t *c;
  const char *path;
  int want_parts; /* 0: overwrite keys [0, to) for `seconds` instead */
  int seconds;
  long long errors;
  int parts;
} writer_t;

static void *run_writer(void *arg) {
  writer_t *w = arg;
  if (w->want_parts == 0) {
    /* The baseline: the same puts, overwriting existing keys, for as long
     * as the growth phase is expected to take: no split can happen. */
    double until = bench_now_us() + w->seconds * 1e6;
    while (bench_now_us() < until) {
      for (int i = 0; i < w->to && bench_now_us() < until; i += BATCH * 16) {
        w->errors += put_keys(w->ns, i, MIN(w->to, i + BATCH * 16), w->val, w->vsize);
      }
    }
    return NULL;
  }
  /* A batch at a time until the namespace has split enough (or the keys run out). */
  for (int i = w->from; i < w->to; i += BATCH * 16) {
    w->errors += put_keys(w->ns, i, MIN(w->to, i + BATCH * 16), w->val, w->vsize);
    w->parts = partitions(w->c, w->path);
    if (w->parts >= w->want_parts) break;
  }
  /* Let the last split finish before the readers stop. */
  for (int tries = 0; tries < 200 && partitions(w->c, w->path) < w->want_parts; tries++) {
    g_usleep(10000);
  }
  w->parts = partitions(w->c, w->path);
  return NULL;
}

static void reads(mayfly_ns_t **ns, int readers, int nkeys, int seconds, writer_t *w,
                  bench_lat_t *lat, long long *ops, long long *errors, double *secs) {
  volatile int stop = 0;
  reader_t *r = g_new0(reader_t, readers);
  pthread_t *t = g_new(pthread_t, readers);
  double t0 = bench_now_us();
  for (int i = 0; i < readers; i++) {
    r[i] = (reader_t){.ns = ns[i], .nkeys = nkeys, .stop = &stop, .seed = i + 1};
    bench_lat_init(&r[i].lat);
    pthread_create(&t[i], NULL, run_reader, &r[i]);
  }
  if (w != NULL) {
    pthread_t wt;
    pthread_create(&wt, NULL, run_writer, w);
    pthread_join(wt, NULL);
  } else {
    g_usleep((gulong)seconds * 1000000);
  }
  stop = 1;
  *ops = *errors = 0;
  for (int i = 0; i < readers; i++) {
    pthread_join(t[i], NULL);
    bench_lat_merge(lat, &r[i].lat);
    bench_lat_free(&r[i].lat);
    *ops += r[i].ops;
    *errors += r[i].errors;
  }
  *secs = (bench_now_us() - t0) / 1e6;
  g_free(r);
  g_free(t);
}

/* Notification latency: a listener on a kv namespace, one writer doing
 * single puts; for each put, the time from the writer's acknowledgement to
 * the listener's receipt (0 when the event arrived first). */
#define NOTIFY_PUTS 2000

typedef struct {
  mayfly_listener_t *l;
  int64_t *acked; /* per key, us, written by the writer (0 = not yet) */
  int64_t *called; /* per key, us: when the put was called */
  bench_lat_t lat, from_call;
  int got, gaps;
} notify_t;

static void *run_listener(void *arg) {
  notify_t *n = arg;
  while (n->got < NOTIFY_PUTS) {
    mayfly_event_t *ev = NULL;
    if (mayfly_listener_next(n->l, &ev, 5000) != 0) break;
    double now = bench_now_us();
    if (ev->kind == MAYFLY_EV_GAP) n->gaps++;
    int i = -1;
    char key[16] = ""; /* "n%06d"; the event's key is not NUL-terminated */
    if (ev->kind == MAYFLY_EV_PUT && ev->key_len > 1 && ev->key_len < sizeof key) {
      memcpy(key, ev->key, ev->key_len);
      i = atoi(key + 1);
    }
    if (ev->kind == MAYFLY_EV_PUT && i >= 0 && i < NOTIFY_PUTS) {
      double acked = (double)__atomic_load_n(&n->acked[i], __ATOMIC_ACQUIRE);
      bench_lat_add(&n->lat, acked > 0 && now > acked ? now - acked : 0);
      bench_lat_add(&n->from_call,
                    now - (double)__atomic_load_n(&n->called[i], __ATOMIC_ACQUIRE));
      n->got++;
    }
    mayfly_event_free(ev);
  }
  return NULL;
}

static int notify_latency(mayfly_client_t *c, bench_lat_t *out, bench_lat_t *out_call,
                          int *got) {
  const char *path = "/bench/elastic-notify";
  mayfly_ns_t *ns = NULL;
  int rc = mayfly_mount(c, path, MAYFLY_KIND_KV, NULL, &ns);
  notify_t n = {.acked = g_new0(int64_t, NOTIFY_PUTS), .called = g_new0(int64_t, NOTIFY_PUTS)};
  bench_lat_init(&n.lat);
  bench_lat_init(&n.from_call);
  if (rc == 0) rc = mayfly_listen(c, path, MAYFLY_EV_BIT(MAYFLY_EV_PUT), &n.l);
  if (rc == 0) {
    pthread_t t;
    pthread_create(&t, NULL, run_listener, &n);
    char key[32];
    for (int i = 0; i < NOTIFY_PUTS; i++) {
      int klen = snprintf(key, sizeof key, "n%06d", i);
      __atomic_store_n(&n.called[i], (int64_t)bench_now_us(), __ATOMIC_RELEASE);
      if (mayfly_kv_put(ns, key, (size_t)klen, "v", 1) != 0) rc = MAYFLY_EIO;
      __atomic_store_n(&n.acked[i], (int64_t)bench_now_us(), __ATOMIC_RELEASE);
    }
    pthread_join(t, NULL);
    mayfly_listener_close(n.l);
  }
  *got = n.got;
  bench_lat_merge(out, &n.lat);
  bench_lat_merge(out_call, &n.from_call);
  bench_lat_free(&n.lat);
  bench_lat_free(&n.from_call);
  g_free(n.acked);
  g_free(n.called);
  mayfly_unmount(ns);
  mayfly_remove(c, path, 0);
  return rc != 0 ? rc : (n.got == NOTIFY_PUTS && n.gaps == 0 ? 0 : MAYFLY_EIO);
}

int bench_elastic(bench_opts_t *o) {
  const char *block = o->quick ? "4MiB" : "64MiB";
  uint64_t block_size = o->quick ? (4u << 20) : (64u << 20);
  size_t vsize = o->value_size > 0 ? (size_t)o->value_size : 4096;
  int readers = o->clients > 0 ? o->clients : 4;
  bench_dir_t d;
  if (bench_dir_start(o, &d) != 0) return 1;
  pid_t ms[2] = {0, 0};
  if (d.pid != 0) {
    for (int i = 0; i < 2; i++) {
      ms[i] = bench_memserver_start(o, &d, 2 * SPLITS + 2, block);
      if (ms[i] < 0) {
        bench_dir_stop(&d);
        return 1;
      }
    }
  }
  int failed = 1;
  mayfly_client_t *c = NULL;
  mayfly_ns_t **ns = g_new0(mayfly_ns_t *, readers + 1);
  mayfly_dir_stats_t s0, s1;
  const char *path = "/bench/elastic";
  uint8_t *val = g_malloc(vsize);
  memset(val, 'v', vsize);
  /* Entries a block holds at its high watermark (90 %), with the server's
   * per-entry charge (128 bytes) and the key. */
  int per_block = (int)((double)block_size * 0.9 / (double)(vsize + 10 + 128));
  mayfly_options_t copts = {.timeout_ms = 30000};
  if (mayfly_connect(d.address, &copts, &c) != 0) {
    fprintf(stderr, "mayfly-bench: cannot connect to %s: %s\n", d.address, mayfly_last_error());
    goto out;
  }
  mayfly_remove(c, path, 0);
  for (int i = 0; i <= readers; i++) {
    if (mayfly_mount(c, path, MAYFLY_KIND_KV, NULL, &ns[i]) != 0) {
      fprintf(stderr, "mayfly-bench: mount %s: %s\n", path, mayfly_last_error());
      goto out;
    }
  }
  /* Half a block of data to read, one partition. */
  int base = per_block / 2;
  long long perr = put_keys(ns[readers], 0, base, val, vsize);
  bench_lat_t quiet, busy;
  bench_lat_init(&quiet);
  bench_lat_init(&busy);
  long long qops, qerr, bops, berr;
  double qsecs, bsecs;
  writer_t same = {.ns = ns[readers], .to = base, .val = val, .vsize = vsize,
                   .seconds = o->seconds};
  reads(ns, readers, base, o->seconds, &same, &quiet, &qops, &qerr, &qsecs);
  perr += same.errors;
  mayfly_dir_stats(c, &s0);
  writer_t w = {.ns = ns[readers],
                .from = base,
                .to = base + per_block * (SPLITS + 2),
                .val = val,
                .vsize = vsize,
                .c = c,
                .path = path,
                .want_parts = SPLITS + 1};
  reads(ns, readers, base, 0, &w, &busy, &bops, &berr, &bsecs);
  mayfly_dir_stats(c, &s1);
  perr += w.errors;
  /* One more split with nothing else running: a partition filled to just
   * under its watermark, then one batch over it. */
  const char *solo = "/bench/elastic-solo";
  mayfly_ns_t *sns = NULL;
  mayfly_dir_stats_t s2 = s1, s3 = s1;
  if (mayfly_mount(c, solo, MAYFLY_KIND_KV, NULL, &sns) == 0) {
    int under = per_block - 2 * BATCH;
    perr += put_keys(sns, 0, under, val, vsize);
    mayfly_dir_stats(c, &s2);
    perr += put_keys(sns, under, per_block + BATCH, val, vsize);
    for (int tries = 0; tries < 500 && partitions(c, solo) < 2; tries++) g_usleep(2000);
    mayfly_dir_stats(c, &s3);
    mayfly_unmount(sns);
    mayfly_remove(c, solo, 0);
  }
  bench_lat_t nlat, ncall;
  bench_lat_init(&nlat);
  bench_lat_init(&ncall);
  int notified = 0;
  int nrc = notify_latency(c, &nlat, &ncall, &notified);
  double np50 = bench_lat_pct(&nlat, 50), np99 = bench_lat_pct(&nlat, 99);
  double cp50 = bench_lat_pct(&ncall, 50), cp99 = bench_lat_pct(&ncall, 99);
  bench_lat_free(&nlat);
  bench_lat_free(&ncall);
  if (nrc != 0) {
    fprintf(stderr, "mayfly-bench: notifications: %d of %d puts delivered (%s)\n", notified,
            NOTIFY_PUTS, mayfly_strerror(nrc));
    perr++;
  }
  long long solo_moved = s3.bytes_moved - s2.bytes_moved, solo_ms = s3.move_ms - s2.move_ms;
  double solo_mbs = solo_ms > 0 ? (double)solo_moved / 1e3 / (double)solo_ms : 0;
  long long splits = s1.splits - s0.splits, moved = s1.bytes_moved - s0.bytes_moved;
  long long rollbacks = s1.rollbacks - s0.rollbacks, longest = s1.move_ms_max;
  long long mms = s1.move_ms - s0.move_ms;
  double mbs = mms > 0 ? (double)moved / 1e3 / (double)mms : 0;
  double qp50 = bench_lat_pct(&quiet, 50), qp99 = bench_lat_pct(&quiet, 99);
  double bp50 = bench_lat_pct(&busy, 50), bp99 = bench_lat_pct(&busy, 99);
  double qp999 = bench_lat_pct(&quiet, 99.9), bp999 = bench_lat_pct(&busy, 99.9);
  double ratio = qp99 > 0 ? bp99 / qp99 : 0;
  if (o->json) {
    printf("{\"bench\":\"elastic\",\"block_size\":%llu,\"value_size\":%zu,\"readers\":%d,"
           "\"splits\":%lld,\"rollbacks\":%lld,\"bytes_moved\":%lld,\"split_ms_mean\":%.1f,"
           "\"split_ms_max\":%lld,\"moved_mb_per_s\":%.0f,"
           "\"get_quiet\":{\"ops_per_s\":%.0f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f},"
           "\"get_splitting\":{\"ops_per_s\":%.0f,\"p50_us\":%.1f,\"p99_us\":%.1f,"
           "\"p999_us\":%.1f},"
           "\"p99_ratio\":%.2f,\"solo_split_ms\":%lld,\"solo_bytes_moved\":%lld,"
           "\"solo_mb_per_s\":%.0f,\"notify_p50_us\":%.1f,\"notify_p99_us\":%.1f,"
           "\"notify_from_call_p50_us\":%.1f,\"notify_from_call_p99_us\":%.1f,"
           "\"errors\":%lld}\n",
           (unsigned long long)block_size, vsize, readers, splits, rollbacks,
           moved, splits ? (double)mms / (double)splits : 0.0, longest, mbs,
           qops / qsecs, qp50, qp99, qp999, bops / bsecs, bp50, bp99, bp999, ratio, solo_ms,
           solo_moved,
           solo_mbs, np50, np99, cp50, cp99, perr + qerr + berr);
  } else if (o->csv) {
    printf("bench,block_size,value_size,readers,splits,bytes_moved,split_ms_mean,split_ms_max,"
           "moved_mb_per_s,get_p50_quiet_us,get_p99_quiet_us,get_p50_splitting_us,"
           "get_p99_splitting_us,p99_ratio,solo_split_ms,solo_mb_per_s,notify_p50_us,"
           "notify_p99_us,errors\n");
    printf("elastic,%llu,%zu,%d,%lld,%lld,%.1f,%lld,%.0f,%.1f,%.1f,%.1f,%.1f,%.2f,%lld,%.0f,%.1f,"
           "%.1f,%lld\n",
           (unsigned long long)block_size, vsize, readers, splits, moved,
           splits ? (double)mms / (double)splits : 0.0, longest, mbs, qp50, qp99, bp50,
           bp99, ratio, solo_ms, solo_mbs, np50, np99, perr + qerr + berr);
  } else {
    printf("mayfly-bench elastic — %s blocks, %zu-byte values, %d readers\n\n", block, vsize,
           readers);
    printf("splits of a full partition   %lld (rollbacks %lld), %.1f MB moved\n", splits,
           rollbacks, (double)moved / 1e6);
    printf("split time (begin..commit)   mean %.1f ms, longest %lld ms\n",
           splits ? (double)mms / (double)splits : 0.0, longest);
    printf("data moved between servers   %.0f MB/s (readers and writer running)\n", mbs);
    printf("one split, nothing else      %lld ms, %.1f MB moved, %.0f MB/s\n\n", solo_ms,
           (double)solo_moved / 1e6, solo_mbs);
    printf("%-28s %12s %10s %10s %10s\n", "kv get", "ops/s", "p50", "p99", "p99.9");
    printf("%-28s %12.0f %8.0fus %8.0fus %8.0fus\n", "writer, no split", qops / qsecs, qp50, qp99,
           qp999);
    printf("%-28s %12.0f %8.0fus %8.0fus %8.0fus\n", "writer, splitting", bops / bsecs, bp50,
           bp99, bp999);
    printf("p99 while splitting / quiet  %.2fx\n\n", ratio);
    printf("notification (%d puts, one writer, one listener)\n", NOTIFY_PUTS);
    printf("  from the put's ack           p50 %.0fus, p99 %.0fus (0: the event came first)\n",
           np50, np99);
    printf("  from the put's call          p50 %.0fus, p99 %.0fus\n", cp50, cp99);
    printf("errors                       %lld\n", perr + qerr + berr);
  }
  failed = (perr + qerr + berr) != 0 || splits < SPLITS;
  if (splits < SPLITS) {
    fprintf(stderr, "mayfly-bench: only %lld splits happened (%d partitions)\n", splits, w.parts);
  }
  bench_lat_free(&quiet);
  bench_lat_free(&busy);
out:
  for (int i = 0; i <= readers; i++) mayfly_unmount(ns[i]);
  if (c != NULL) mayfly_remove(c, path, 0);
  mayfly_disconnect(c);
  g_free(ns);
  g_free(val);
  for (int i = 0; i < 2; i++) {
    if (ms[i] > 0) bench_proc_stop(ms[i]);
  }
  bench_dir_stop(&d);
  return failed;
}
