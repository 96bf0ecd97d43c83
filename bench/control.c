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
 *
 * With --data-dir DIR the bench starts two directories, one in memory and
 * one durable (--data-dir DIR/mayfly-bench-XXXXXX/rows), and runs each row
 * on both, one after the other, so that the ratio durable/in-memory comes
 * from the same minute of the same machine. Records per fsync come from the
 * durable directory's own counters (log_records and log_fsyncs, their growth
 * over the row). Then, for each count of --recovery-namespaces, it fills a
 * fresh durable directory with that many kv namespaces, kills it with
 * SIGKILL, starts it again on the same data and reports the directory's own
 * recovery_ms and the wall time from spawn until it answers a stats call:
 * once replaying the log only, once again after it has written a snapshot.
 * The data is removed afterwards unless --keep.
 */
#define _GNU_SOURCE
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench/bench.h"
#include "common/ctl.h"
#include "client/mayfly.h"

#define RENEW_PATHS 10000
/* Blocks of the pool the rows allocate from. */
#define ROW_POOL_BLOCKS 100000
/* Clients that set a directory up (the renew paths, the namespaces of a
 * recovery run). */
#define FILL_CLIENTS 16
/* Leases of every node in the --data-dir runs: long enough that nothing
 * expires while the bench runs (the renew paths are made before the
 * create+remove rows, which take four rows' time there). */
#define LONG_LEASE "3600000"
/* Alternations of the in-memory and the durable directory in a row. */
#define SIDE_ROUNDS 3
/* Seconds a durable directory may take to recover and listen. */
#define RECOVERY_WAIT_S 120

/* Targets of issue 10 on this machine kind. */
#define TARGET_DURABLE_RATIO 0.5 /* durable create+remove at 16 clients */
#define TARGET_RECOVERY_N 100000
#define TARGET_RECOVERY_MS 1000.0

enum { WORK_PAIR, WORK_RENEW, WORK_POPULATE, WORK_MKDIR };

typedef struct {
  const bench_opts_t *o;
  const char *address;
  int index;
  int clients;
  int kind;
  const char *const *paths; /* WORK_RENEW, WORK_MKDIR */
  int total;                /* WORK_POPULATE, WORK_MKDIR: items over all clients */
  double seconds;           /* measured rows, unless --ops */
  long long ops;
  int errors;
  bench_lat_t lat;
  double started, finished;
} worker_t;

/* One op of a measured row; 0 or a MAYFLY_E* code. */
static int one_op(mayfly_client_t *c, const worker_t *w, long long i) {
  char path[64];
  if (w->kind == WORK_PAIR) {
    snprintf(path, sizeof path, "/bench/c%d/n%lld", w->index, i);
    int rc = mayfly_create(c, path, MAYFLY_KIND_KV, NULL, NULL);
    return rc != 0 ? rc : mayfly_remove(c, path, 0);
  }
  return mayfly_renew(c, w->paths, RENEW_PATHS, NULL, NULL, NULL);
}

static void *run_worker(void *arg) {
  worker_t *w = arg;
  mayfly_client_t *c = NULL;
  bench_lat_init(&w->lat);
  if (mayfly_connect(w->address, NULL, &c) != 0) {
    w->errors++;
    return NULL;
  }
  double deadline = bench_now_us() + w->seconds * 1e6;
  w->started = bench_now_us();
  for (long long i = 0; w->o->ops ? i < w->o->ops : bench_now_us() < deadline; i++) {
    double t0 = bench_now_us();
    if (one_op(c, w, i) != 0) {
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

/* Does this client's share of a setup: WORK_POPULATE creates the
 * namespaces of a recovery run, /recovery/dDD/nNNNNNN, kv, one block each,
 * in 100 directories; WORK_MKDIR makes paths[] with their parents. Several
 * clients, because a durable directory syncs each client's call apart. */
static void *fill_worker(void *arg) {
  worker_t *w = arg;
  mayfly_client_t *c = NULL;
  if (mayfly_connect(w->address, NULL, &c) != 0) {
    w->errors++;
    return NULL;
  }
  char buf[64];
  for (int j = w->index; j < w->total; j += w->clients) {
    const char *path = w->paths != NULL ? w->paths[j] : buf;
    int rc;
    if (w->kind == WORK_MKDIR) {
      rc = mayfly_mkdir(c, path, 1);
    } else {
      snprintf(buf, sizeof buf, "/recovery/d%02d/n%06d", j % 100, j);
      rc = mayfly_create(c, path, MAYFLY_KIND_KV, NULL, NULL);
    }
    if (rc != 0) {
      fprintf(stderr, "mayfly-bench: %s %s: %s\n", w->kind == WORK_MKDIR ? "mkdir" : "create",
              path, mayfly_last_error());
      w->errors++;
      break;
    }
    w->ops++;
  }
  mayfly_disconnect(c);
  return NULL;
}

/* What the rounds of one row on one directory add up to. */
typedef struct {
  long long ops;
  double us; /* time the rounds took, summed */
  bench_lat_t lat;
} tally_t;

/* Runs `clients` workers of `kind` for `seconds` (or --ops each) against
 * the directory at address and adds what they did to *t. Returns 0, or -1
 * if a client failed (what was done still counts). */
static int measure_round(const bench_opts_t *o, const char *address, int kind, int clients,
                         const char *const *paths, double seconds, tally_t *t) {
  worker_t *w = g_new0(worker_t, clients);
  pthread_t *th = g_new(pthread_t, clients);
  double begun = bench_now_us();
  for (int i = 0; i < clients; i++) {
    w[i] = (worker_t){.o = o,
                      .address = address,
                      .index = i,
                      .clients = clients,
                      .kind = kind,
                      .paths = paths,
                      .seconds = seconds,
                      .started = begun,
                      .finished = begun};
    pthread_create(&th[i], NULL, run_worker, &w[i]);
  }
  int errors = 0;
  double start = 1e300, end = 0;
  for (int i = 0; i < clients; i++) {
    pthread_join(th[i], NULL);
    t->ops += w[i].ops;
    errors += w[i].errors;
    if (w[i].lat.us) {
      bench_lat_merge(&t->lat, &w[i].lat);
      bench_lat_free(&w[i].lat);
    }
    start = MIN(start, w[i].started);
    end = MAX(end, w[i].finished);
  }
  t->us += end - start;
  g_free(w);
  g_free(th);
  if (errors > 0) fprintf(stderr, "mayfly-bench: %s: %d clients failed\n", address, errors);
  return errors ? -1 : 0;
}

/* Turns a tally into *r (name and unit are g_strdup'd: the caller frees
 * them) and frees the tally's samples. */
static void tally_row(tally_t *t, const char *name, int kind, int clients, bench_row_t *r) {
  *r = (bench_row_t){
      .name = g_strdup(name),
      .clients = clients,
      .ops = t->ops,
      .unit = g_strdup(kind == WORK_PAIR ? "create+remove pair" : "renew of 10,000 paths"),
      .ops_per_s = t->us > 0 ? t->ops / (t->us / 1e6) : 0,
      .p50_us = bench_lat_pct(&t->lat, 50),
      .p99_us = bench_lat_pct(&t->lat, 99),
      .p999_us = bench_lat_pct(&t->lat, 99.9)};
  bench_lat_free(&t->lat);
}

/* One row in one round of --seconds. Returns 0 or -1 (see measure_round). */
static int measure(const bench_opts_t *o, const char *address, int kind, int clients,
                   const char *const *paths, const char *name, bench_row_t *r) {
  tally_t t = {0};
  bench_lat_init(&t.lat);
  int rc = measure_round(o, address, kind, clients, paths, o->seconds, &t);
  tally_row(&t, name, kind, clients, r);
  return rc;
}

/* Runs a setup of `total` items (fill_worker) from FILL_CLIENTS
 * clients; paths is for WORK_MKDIR. Returns 0 or -1. */
static int fill(const bench_opts_t *o, const char *address, int kind, int total,
                const char *const *paths) {
  int clients = MIN(FILL_CLIENTS, MAX(total, 1));
  worker_t *w = g_new0(worker_t, clients);
  pthread_t *th = g_new(pthread_t, clients);
  for (int i = 0; i < clients; i++) {
    w[i] = (worker_t){.o = o,
                      .address = address,
                      .index = i,
                      .clients = clients,
                      .kind = kind,
                      .paths = paths,
                      .total = total};
    pthread_create(&th[i], NULL, fill_worker, &w[i]);
  }
  int errors = 0;
  for (int i = 0; i < clients; i++) {
    pthread_join(th[i], NULL);
    errors += w[i].errors;
  }
  g_free(w);
  g_free(th);
  return errors ? -1 : 0;
}

/* Registers a pool of `blocks` blocks of 1 MiB at an address nobody serves:
 * the directory hands its blocks out without contacting it. */
static int register_pool(const char *address, int blocks) {
  mf_ctl_t *ctl;
  int rc = mf_ctl_open(address, 5000, 2000, &ctl);
  if (rc != 0) return rc;
  rc = mf_ctl_register(ctl, "127.0.0.1:1", blocks, 1 << 20, 0, 0, NULL, NULL);
  mf_ctl_close(ctl);
  return rc;
}

/* The 10,000 paths of the renew rows. */
static GPtrArray *renew_paths(void) {
  GPtrArray *paths = g_ptr_array_new_with_free_func(g_free);
  for (int i = 0; i < RENEW_PATHS; i++) {
    g_ptr_array_add(paths, g_strdup_printf("/renew/d%02d/n%05d", i % 100, i));
  }
  return paths;
}

/* Registers the rows' pool and makes the renew paths and /bench at address.
 * Returns 0 or -1 with a message on stderr. */
static int prepare(const bench_opts_t *o, const char *address, GPtrArray *paths) {
  int rc = register_pool(address, ROW_POOL_BLOCKS);
  if (rc != 0) {
    fprintf(stderr, "mayfly-bench: cannot register a block pool at %s: %s\n", address,
            mayfly_last_error());
    return -1;
  }
  if (fill(o, address, WORK_MKDIR, (int)paths->len, (const char *const *)paths->pdata) != 0) {
    return -1;
  }
  const char *bench[] = {"/bench"};
  return fill(o, address, WORK_MKDIR, 1, bench);
}

static void row_clear(bench_row_t *r) {
  g_free(r->name);
  g_free(r->unit);
}

/* The client counts of the rows: --clients, else 1 and 16. */
static int client_sets(const bench_opts_t *o, int sets[2]) {
  sets[0] = 1;
  sets[1] = 16;
  if (o->clients > 0) sets[0] = o->clients;
  return o->clients > 0 ? 1 : 2;
}

/* The subcommand without --data-dir: one directory, in memory (or the one
 * given with --directory). */
static int control_memory(bench_opts_t *o) {
  bench_dir_t d;
  if (bench_dir_start(o, &d) != 0) return 1;
  GPtrArray *paths = renew_paths();
  if (prepare(o, d.address, paths) != 0) {
    g_ptr_array_free(paths, TRUE);
    bench_dir_stop(&d);
    return 1;
  }
  int sets[2];
  int nsets = client_sets(o, sets);
  GArray *rows = g_array_new(FALSE, TRUE, sizeof(bench_row_t));
  int failed = 0;
  for (int k = WORK_PAIR; k <= WORK_RENEW; k++) {
    for (int s = 0; s < nsets; s++) {
      bench_row_t r;
      failed |= measure(o, d.address, k, sets[s], (const char *const *)paths->pdata,
                        k == WORK_PAIR ? "create+remove" : "renew 10,000 paths", &r);
      g_array_append_val(rows, r);
    }
  }
  bench_print(o, "control", rows);
  for (guint i = 0; i < rows->len; i++) row_clear(&g_array_index(rows, bench_row_t, i));
  g_array_free(rows, TRUE);
  g_ptr_array_free(paths, TRUE);
  bench_dir_stop(&d);
  return failed ? 1 : 0;
}

/* --- --data-dir: in memory and durable side by side --- */

/* One row run on both directories. */
typedef struct {
  int kind; /* WORK_PAIR or WORK_RENEW */
  bench_row_t mem, dur;
  /* The durable directory's counters, their growth over its row, and the
   * row's length in seconds (from stats call to stats call). */
  int64_t records, fsyncs, snapshots;
  double seconds;
} side_row_t;

/* One timed start of a durable directory. */
typedef struct {
  int namespaces;
  int after_snapshot;         /* 0: the log only */
  int64_t disk_bytes;         /* size of the data directory before the start */
  int64_t recovery_ms;        /* the directory's own figure */
  int64_t recovered_records;  /* records replayed (after the snapshot, if any) */
  double wall_ms;             /* spawn until the first stats reply */
} recovery_row_t;

/* The stats of the directory at address; 0 or a MAYFLY_E* code. */
static int stats_of(const char *address, mayfly_dir_stats_t *st) {
  mayfly_client_t *c = NULL;
  int rc = mayfly_connect(address, NULL, &c);
  if (rc == 0) rc = mayfly_dir_stats(c, st);
  if (rc != 0) fprintf(stderr, "mayfly-bench: stats of %s: %s\n", address, mayfly_last_error());
  mayfly_disconnect(c);
  return rc;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  if (remove(path) != 0) perror(path);
  return 0;
}

/* Removes a tree of files (the bench's own data directory). */
static void rm_tree(const char *path) {
  nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The bytes of the regular files directly in dir (a data directory). */
static int64_t dir_bytes(const char *dir) {
  GDir *gd = g_dir_open(dir, 0, NULL);
  if (gd == NULL) return 0;
  int64_t total = 0;
  const char *name;
  while ((name = g_dir_read_name(gd)) != NULL) {
    char *p = g_build_filename(dir, name, NULL);
    struct stat sb;
    if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode)) total += sb.st_size;
    g_free(p);
  }
  g_dir_close(gd);
  return total;
}

/* Flags of a durable directory on data_dir. snapshot_records NULL leaves the
 * directory's default; the strings must outlive the array's use. */
static void durable_flags(const char *data_dir, const char *snapshot_records,
                          const char *snapshot_bytes, const char *argv[9]) {
  int n = 0;
  argv[n++] = "--data-dir";
  argv[n++] = data_dir;
  argv[n++] = "--lease-ms";
  argv[n++] = LONG_LEASE;
  if (snapshot_records != NULL) {
    argv[n++] = "--snapshot-records";
    argv[n++] = snapshot_records;
  }
  if (snapshot_bytes != NULL) {
    argv[n++] = "--snapshot-bytes";
    argv[n++] = snapshot_bytes;
  }
  argv[n] = NULL;
}

/* Runs each row on mem then on dur, in SIDE_ROUNDS alternations of a
 * share of --seconds each (one round with --ops), so that a change of the
 * machine's load during the row weighs on both sides alike. Returns 0 or -1. */
static int side_rows(const bench_opts_t *o, const bench_dir_t *mem, const bench_dir_t *dur,
                     GPtrArray *paths, GArray *rows) {
  int sets[2];
  int nsets = client_sets(o, sets);
  int rounds = o->ops ? 1 : SIDE_ROUNDS;
  double slice = (double)o->seconds / rounds;
  const char *const *pv = (const char *const *)paths->pdata;
  int failed = 0;
  for (int k = WORK_PAIR; k <= WORK_RENEW; k++) {
    const char *name = k == WORK_PAIR ? "create+remove" : "renew 10,000 paths";
    for (int s = 0; s < nsets; s++) {
      side_row_t r = {.kind = k};
      tally_t tm = {0}, td = {0};
      bench_lat_init(&tm.lat);
      bench_lat_init(&td.lat);
      for (int round = 0; round < rounds; round++) {
        mayfly_dir_stats_t before, after;
        failed |= measure_round(o, mem->address, k, sets[s], pv, slice, &tm);
        if (stats_of(dur->address, &before) != 0) failed = -1;
        double t0 = bench_now_us();
        failed |= measure_round(o, dur->address, k, sets[s], pv, slice, &td);
        r.seconds += (bench_now_us() - t0) / 1e6;
        if (stats_of(dur->address, &after) != 0) failed = -1;
        r.records += after.log_records - before.log_records;
        r.fsyncs += after.log_fsyncs - before.log_fsyncs;
        r.snapshots += after.snapshots - before.snapshots;
      }
      tally_row(&tm, name, k, sets[s], &r.mem);
      tally_row(&td, name, k, sets[s], &r.dur);
      g_array_append_val(rows, r);
    }
  }
  return failed;
}

/* Spawns a durable directory with flags, waits until it answers a stats
 * call, and records the start in *r. The directory stays up in *d. Checks
 * that it is durable and holds `namespaces` namespaces. Returns 0 or -1. */
static int timed_start(const bench_opts_t *o, const char *const *flags, int namespaces,
                       bench_dir_t *d, recovery_row_t *r) {
  double t0 = bench_now_us();
  if (bench_dir_spawn(o, flags, RECOVERY_WAIT_S, d) != 0) return -1;
  mayfly_client_t *c = NULL;
  mayfly_dir_stats_t st;
  int rc = mayfly_connect(d->address, NULL, &c);
  for (int i = 0; rc == 0 && i < RECOVERY_WAIT_S * 1000; i++) {
    if ((rc = mayfly_dir_stats(c, &st)) == 0) break;
    /* A listener that is not serving yet; the call's own timeout paces this. */
    if (rc == MAYFLY_ECONNREFUSED || rc == MAYFLY_ETIMEDOUT) rc = 0;
    g_usleep(1000);
  }
  r->wall_ms = (bench_now_us() - t0) / 1e3;
  if (rc != 0) fprintf(stderr, "mayfly-bench: recovered directory: %s\n", mayfly_last_error());
  mayfly_disconnect(c);
  if (rc != 0) return -1;
  r->namespaces = namespaces;
  r->recovery_ms = st.recovery_ms;
  r->recovered_records = st.recovered_records;
  if (!st.durable) {
    fprintf(stderr, "mayfly-bench: the directory started with --data-dir says it is not durable\n");
    return -1;
  }
  if (st.namespaces != namespaces) {
    fprintf(stderr, "mayfly-bench: recovered %lld namespaces, %d were created\n",
            (long long)st.namespaces, namespaces);
    return -1;
  }
  return 0;
}

/* Times the recovery of n namespaces from data under run_dir, from the log
 * only and after a snapshot, appending two rows. Returns 0 or -1. */
static int time_recovery(const bench_opts_t *o, const char *run_dir, int n, GArray *rows) {
  char name[32];
  snprintf(name, sizeof name, "recovery-%d", n);
  char *data = g_build_filename(run_dir, name, NULL);
  /* While filling and timing, no snapshot: thresholds past what the run
   * writes. */
  const char *no_snap[9], *snap[9];
  durable_flags(data, "1000000000", "1TiB", no_snap);
  /* One record past the last snapshot is enough to take one. */
  durable_flags(data, "1", NULL, snap);
  bench_dir_t d;
  int rc = -1, snapped = 0;
  recovery_row_t log_only = {0}, after = {0};
  mayfly_client_t *c = NULL;
  mayfly_dir_stats_t st = {0};
  if (g_mkdir_with_parents(data, 0700) != 0) {
    perror(data);
    goto out;
  }
  if (bench_dir_spawn(o, no_snap, RECOVERY_WAIT_S, &d) != 0) goto out;
  if (register_pool(d.address, n + 1) != 0) {
    fprintf(stderr, "mayfly-bench: cannot register a pool of %d blocks: %s\n", n + 1,
            mayfly_last_error());
    bench_dir_kill(&d);
    goto out;
  }
  if (fill(o, d.address, WORK_POPULATE, n, NULL) != 0) {
    bench_dir_kill(&d);
    goto out;
  }
  /* Every create was answered after its fdatasync: all of it is on disk. */
  bench_dir_kill(&d);

  log_only.disk_bytes = dir_bytes(data);
  if (timed_start(o, no_snap, n, &d, &log_only) != 0) {
    bench_dir_kill(&d);
    goto out;
  }
  bench_dir_kill(&d);

  /* A start that writes a snapshot after one more record. */
  if (bench_dir_spawn(o, snap, RECOVERY_WAIT_S, &d) != 0) goto out;
  if (mayfly_connect(d.address, NULL, &c) == 0 && mayfly_mkdir(c, "/recovery/snap", 0) == 0) {
    for (int i = 0; i < RECOVERY_WAIT_S * 100 && !snapped; i++) {
      snapped = mayfly_dir_stats(c, &st) == 0 && st.snapshots > 0;
      if (!snapped) g_usleep(10000);
    }
  }
  if (!snapped) fprintf(stderr, "mayfly-bench: no snapshot: %s\n", mayfly_last_error());
  mayfly_disconnect(c);
  bench_dir_kill(&d);
  if (!snapped) goto out;

  after.after_snapshot = 1;
  after.disk_bytes = dir_bytes(data);
  if (timed_start(o, no_snap, n, &d, &after) != 0) {
    bench_dir_kill(&d);
    goto out;
  }
  bench_dir_kill(&d);
  rc = 0;
out:
  if (log_only.namespaces) g_array_append_val(rows, log_only);
  if (after.namespaces) g_array_append_val(rows, after);
  g_free(data);
  return rc;
}

/* The counts of --recovery-namespaces (default 10,000 and 100,000); an
 * empty array for "0". NULL if the list is malformed. */
static GArray *recovery_counts(const bench_opts_t *o) {
  GArray *a = g_array_new(FALSE, FALSE, sizeof(int));
  char **words = g_strsplit(o->recovery ? o->recovery : "10000,100000", ",", -1);
  for (char **w = words; *w != NULL; w++) {
    char *end;
    long v = strtol(*w, &end, 10);
    if (*end != '\0' || end == *w || v < 0 || v > 10000000) {
      fprintf(stderr, "mayfly-bench: --recovery-namespaces: bad count '%s'\n", *w);
      g_array_free(a, TRUE);
      a = NULL;
      break;
    }
    int n = (int)v;
    if (n > 0) g_array_append_val(a, n);
  }
  g_strfreev(words);
  return a;
}

static double ratio(const side_row_t *r) {
  return r->mem.ops_per_s > 0 ? r->dur.ops_per_s / r->mem.ops_per_s : 0;
}

static double per_fsync(const side_row_t *r) {
  return r->fsyncs > 0 ? (double)r->records / r->fsyncs : 0;
}

static double fsyncs_per_s(const side_row_t *r) {
  return r->seconds > 0 ? r->fsyncs / r->seconds : 0;
}

/* The target a row is held to, or NULL; *met says whether it was. */
static const char *side_target(const side_row_t *r, int *met) {
  if (r->kind != WORK_PAIR || r->mem.clients != 16) return NULL;
  *met = ratio(r) >= TARGET_DURABLE_RATIO;
  return ">= 50 % of in-memory";
}

static const char *recovery_target(const recovery_row_t *r, int *met) {
  if (r->namespaces != TARGET_RECOVERY_N) return NULL;
  *met = r->wall_ms < TARGET_RECOVERY_MS && r->recovery_ms < TARGET_RECOVERY_MS;
  return "< 1 s";
}

static void print_side(const bench_opts_t *o, const char *run_dir, GArray *rows, GArray *recs) {
  char machine[256];
  bench_machine(machine, sizeof machine);
  if (o->json) {
    printf("{\"bench\": \"control --data-dir\", \"machine\": \"%s\", \"pinned\": %s, \"rows\": [\n",
           machine, o->pin ? "true" : "false");
    for (guint i = 0; i < rows->len; i++) {
      side_row_t *r = &g_array_index(rows, side_row_t, i);
      printf("  {\"name\": \"%s\", \"clients\": %d, \"unit\": \"%s\", "
             "\"memory_ops_per_s\": %.1f, \"memory_p50_us\": %.1f, \"memory_p99_us\": %.1f, "
             "\"durable_ops_per_s\": %.1f, \"durable_p50_us\": %.1f, \"durable_p99_us\": %.1f, "
             "\"ratio\": %.3f, \"log_records\": %lld, \"log_fsyncs\": %lld, "
             "\"records_per_fsync\": %.2f, \"fsyncs_per_s\": %.1f, \"snapshots\": %lld}%s\n",
             r->mem.name, r->mem.clients, r->mem.unit, r->mem.ops_per_s, r->mem.p50_us,
             r->mem.p99_us, r->dur.ops_per_s, r->dur.p50_us, r->dur.p99_us, ratio(r),
             (long long)r->records, (long long)r->fsyncs, per_fsync(r), fsyncs_per_s(r),
             (long long)r->snapshots,
             i + 1 < rows->len ? "," : "");
    }
    printf("], \"recovery\": [\n");
    for (guint i = 0; i < recs->len; i++) {
      recovery_row_t *r = &g_array_index(recs, recovery_row_t, i);
      printf("  {\"namespaces\": %d, \"from\": \"%s\", \"disk_bytes\": %lld, "
             "\"recovery_ms\": %lld, \"recovered_records\": %lld, \"wall_ms\": %.1f}%s\n",
             r->namespaces, r->after_snapshot ? "snapshot" : "log", (long long)r->disk_bytes,
             (long long)r->recovery_ms, (long long)r->recovered_records, r->wall_ms,
             i + 1 < recs->len ? "," : "");
    }
    printf("]}\n");
    return;
  }
  if (o->csv) {
    printf("bench,name,clients,memory_ops_per_s,memory_p99_us,durable_ops_per_s,durable_p99_us,"
           "ratio,log_records,log_fsyncs,records_per_fsync,fsyncs_per_s\n");
    for (guint i = 0; i < rows->len; i++) {
      side_row_t *r = &g_array_index(rows, side_row_t, i);
      printf("control-durable,%s,%d,%.1f,%.1f,%.1f,%.1f,%.3f,%lld,%lld,%.2f,%.1f\n", r->mem.name,
             r->mem.clients, r->mem.ops_per_s, r->mem.p99_us, r->dur.ops_per_s, r->dur.p99_us,
             ratio(r), (long long)r->records, (long long)r->fsyncs, per_fsync(r),
             fsyncs_per_s(r));
    }
    printf("bench,namespaces,from,disk_bytes,recovery_ms,recovered_records,wall_ms\n");
    for (guint i = 0; i < recs->len; i++) {
      recovery_row_t *r = &g_array_index(recs, recovery_row_t, i);
      printf("control-recovery,%d,%s,%lld,%lld,%lld,%.1f\n", r->namespaces,
             r->after_snapshot ? "snapshot" : "log", (long long)r->disk_bytes,
             (long long)r->recovery_ms, (long long)r->recovered_records, r->wall_ms);
    }
    return;
  }
  printf("mayfly-bench control --data-dir — %s%s\n", machine, o->pin ? " (pinned to CPU 0)" : "");
  printf("durable directory data under %s (%s)\n\n", run_dir,
         o->keep ? "kept" : "removed afterwards");
  printf("%-20s %7s %12s %8s %12s %8s %8s %9s %8s  %s\n", "workload", "clients", "in-memory/s",
         "p99", "durable/s", "p99", "dur/mem", "rec/fsync", "fsync/s", "target");
  for (guint i = 0; i < rows->len; i++) {
    side_row_t *r = &g_array_index(rows, side_row_t, i);
    int met = 0;
    const char *t = side_target(r, &met);
    char fs[16];
    if (r->fsyncs > 0) {
      snprintf(fs, sizeof fs, "%.1f", per_fsync(r));
    } else {
      snprintf(fs, sizeof fs, "-");
    }
    printf("%-20s %7d %12.0f %6.0fus %12.0f %6.0fus %6.0f %% %9s %8.0f  %s%s\n", r->mem.name,
           r->mem.clients, r->mem.ops_per_s, r->mem.p99_us, r->dur.ops_per_s, r->dur.p99_us,
           100 * ratio(r), fs, fsyncs_per_s(r), t ? t : "", t ? (met ? ": met" : ": MISSED") : "");
  }
  int64_t snaps = 0;
  for (guint i = 0; i < rows->len; i++) snaps += g_array_index(rows, side_row_t, i).snapshots;
  printf("(rec/fsync: growth of the durable directory's log_records / log_fsyncs over its row; "
         "'-': the row logged nothing; %lld snapshots during the rows)\n",
         (long long)snaps);
  if (recs->len == 0) return;
  printf("\n%-18s %10s %10s %12s %12s %14s  %s\n", "recovery", "namespaces", "on disk",
         "replayed", "recovery_ms", "spawn->answer", "target");
  for (guint i = 0; i < recs->len; i++) {
    recovery_row_t *r = &g_array_index(recs, recovery_row_t, i);
    int met = 0;
    const char *t = recovery_target(r, &met);
    printf("%-18s %10d %8.1fMB %12lld %10lldms %12.0fms  %s%s\n",
           r->after_snapshot ? "after a snapshot" : "log only", r->namespaces,
           r->disk_bytes / 1e6, (long long)r->recovered_records, (long long)r->recovery_ms,
           r->wall_ms, t ? t : "", t ? (met ? ": met" : ": MISSED") : "");
  }
  printf("(kv namespaces of one block each; killed with SIGKILL, then started on the same data; "
         "recovery_ms is the directory's own figure)\n");
}

static int control_durable(bench_opts_t *o) {
  if (o->directory != NULL) {
    fprintf(stderr, "mayfly-bench: --data-dir starts its own directories; drop --directory\n");
    return 2;
  }
  GArray *counts = recovery_counts(o);
  if (counts == NULL) return 2;
  if (g_mkdir_with_parents(o->data_dir, 0700) != 0) {
    perror(o->data_dir);
    g_array_free(counts, TRUE);
    return 1;
  }
  char *tmpl = g_build_filename(o->data_dir, "mayfly-bench-XXXXXX", NULL);
  if (g_mkdtemp(tmpl) == NULL) {
    perror(tmpl);
    g_free(tmpl);
    g_array_free(counts, TRUE);
    return 1;
  }
  char *run_dir = tmpl;
  char *rows_dir = g_build_filename(run_dir, "rows", NULL);
  g_mkdir_with_parents(rows_dir, 0700);

  GArray *rows = g_array_new(FALSE, TRUE, sizeof(side_row_t));
  GArray *recs = g_array_new(FALSE, TRUE, sizeof(recovery_row_t));
  GPtrArray *paths = renew_paths();
  const char *mem_flags[] = {"--lease-ms", LONG_LEASE, NULL};
  const char *dur_flags[9];
  durable_flags(rows_dir, NULL, NULL, dur_flags);
  bench_dir_t mem = {0}, dur = {0};
  int failed = 0;
  if (bench_dir_spawn(o, mem_flags, 5, &mem) != 0 ||
      bench_dir_spawn(o, dur_flags, RECOVERY_WAIT_S, &dur) != 0 ||
      prepare(o, mem.address, paths) != 0 || prepare(o, dur.address, paths) != 0) {
    failed = 1;
  } else {
    mayfly_dir_stats_t st;
    if (stats_of(dur.address, &st) != 0 || !st.durable) {
      fprintf(stderr, "mayfly-bench: the directory started with --data-dir is not durable\n");
      failed = 1;
    } else {
      failed |= side_rows(o, &mem, &dur, paths, rows) != 0;
    }
  }
  bench_dir_stop(&mem);
  bench_dir_stop(&dur);
  for (guint i = 0; !failed && i < counts->len; i++) {
    failed |= time_recovery(o, run_dir, g_array_index(counts, int, i), recs) != 0;
  }
  print_side(o, run_dir, rows, recs);
  if (!o->keep) rm_tree(run_dir);
  for (guint i = 0; i < rows->len; i++) {
    row_clear(&g_array_index(rows, side_row_t, i).mem);
    row_clear(&g_array_index(rows, side_row_t, i).dur);
  }
  g_array_free(rows, TRUE);
  g_array_free(recs, TRUE);
  g_array_free(counts, TRUE);
  g_ptr_array_free(paths, TRUE);
  g_free(rows_dir);
  g_free(run_dir);
  return failed ? 1 : 0;
}

int bench_control(bench_opts_t *o) {
  return o->data_dir != NULL ? control_durable(o) : control_memory(o);
}
