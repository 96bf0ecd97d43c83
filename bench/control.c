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
 *
 * With --ha (issue 14) it starts, in one run, an in-memory directory, a
 * durable one (its local log under --data-dir, else a temporary directory),
 * and a one-member etcd on free loopback ports (its data in a temporary
 * directory, killed at the end whatever happens) with three directories on it
 * (--etcd --cluster bench --leader-ttl, default 2s), each back end with a
 * memory server of its own. Rows: create+remove pairs at 1 and 16 clients
 * (--clients), each client its own libmayfly client and namespaces, the
 * etcd clients given the list of the three directories; records per etcd
 * transaction from the leader's cluster() counters (txn_records / txns, their
 * growth over the row). Then --kills times (default 10): kill -9 of the
 * leader, timed to the first successful create through a client of all
 * three; the killed directory is started again on its port as a standby.
 * --quick: rows of 1 s and 2 kills (the smoke test; exit 77 without etcd).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"
#include "common/config.h"
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

/* --- --ha: in memory, local log and etcd side by side, and failover --- */

/* The etcd directories' --cluster. */
#define HA_CLUSTER "bench"
#define HA_DIRS 3
/* Every directory of the --ha run asks its memory servers for a heartbeat
 * this often: after a failover a memory server registers with the new leader
 * at its next heartbeat, and a create needs its blocks. */
#define HA_HEARTBEAT_MS "250"
/* Blocks of each memory server of the --ha run (mapped lazily: a 1 MiB
 * block costs nothing until written, and the rows write none). */
#define HA_MS_BLOCKS 4096
/* Seconds etcd may take to answer /health, and a cluster to elect a leader
 * or take a restarted standby back. */
#define ETCD_WAIT_S 30
#define HA_WAIT_S 30
/* A failover that has not produced a successful create after this long
 * counts as failed. */
#define FAILOVER_GIVE_UP_S 60

/* Targets of issue 14 on this machine kind. */
#define TARGET_ETCD_PAIRS 5000.0 /* etcd create+remove pairs/s at 16 clients */
#define TARGET_FAILOVER_SLACK_MS 1000.0 /* failover p99 <= leader-ttl + this */

/* The one-member etcd of the run. */
typedef struct {
  pid_t pid;
  int client_port, peer_port;
  char endpoint[64]; /* http://127.0.0.1:client_port */
  char *tmp;         /* its data directory and log; removed by etcd_stop */
} etcd_proc_t;

/* Whether the etcd at 127.0.0.1:port answers GET /health with
 * "health":"true" (a plain HTTP/1.0 request on a socket of our own: the
 * bench links no HTTP client). */
static int etcd_healthy(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  struct timeval tv = {.tv_sec = 1};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  char buf[2048];
  size_t got = 0;
  static const char req[] = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      send(fd, req, sizeof req - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof req - 1)) {
    ssize_t n;
    while (got < sizeof buf - 1 && (n = recv(fd, buf + got, sizeof buf - 1 - got, 0)) > 0) {
      got += (size_t)n;
    }
  }
  close(fd);
  buf[got] = '\0';
  return strstr(buf, "\"health\":\"true\"") != NULL;
}

/* Kills etcd (SIGKILL: its data is thrown away anyway) and removes its data
 * directory. Safe on a zeroed or half-started *e. */
static void etcd_stop(etcd_proc_t *e) {
  if (e->pid > 0) {
    kill(e->pid, SIGKILL);
    waitpid(e->pid, NULL, 0);
    e->pid = 0;
  }
  if (e->tmp != NULL) {
    rm_tree(e->tmp);
    g_free(e->tmp);
    e->tmp = NULL;
  }
}

/* Starts a one-member etcd from $PATH on two free loopback ports, its data
 * and log in a fresh temporary directory, and waits until it is healthy.
 * The child dies with the bench (PR_SET_PDEATHSIG), so a bench that crashes
 * leaves no etcd behind. Returns 0, 77 when there is no etcd in $PATH, or -1
 * (with the end of etcd's log on stderr). */
static int etcd_start(etcd_proc_t *e) {
  memset(e, 0, sizeof *e);
  char *bin = g_find_program_in_path("etcd");
  if (bin == NULL) return 77;
  e->tmp = g_dir_make_tmp("mayfly-bench-etcd-XXXXXX", NULL);
  if (e->tmp == NULL) {
    perror("mayfly-bench: etcd data directory");
    g_free(bin);
    return -1;
  }
  e->client_port = bench_free_port();
  do {
    e->peer_port = bench_free_port();
  } while (e->peer_port == e->client_port);
  snprintf(e->endpoint, sizeof e->endpoint, "http://127.0.0.1:%d", e->client_port);
  char *peer = g_strdup_printf("http://127.0.0.1:%d", e->peer_port);
  char *initial = g_strdup_printf("bench=%s", peer);
  char *data = g_build_filename(e->tmp, "data", NULL);
  char *log = g_build_filename(e->tmp, "etcd.log", NULL);
  const char *argv[] = {bin,
                        "--name", "bench",
                        "--data-dir", data,
                        "--listen-client-urls", e->endpoint,
                        "--advertise-client-urls", e->endpoint,
                        "--listen-peer-urls", peer,
                        "--initial-advertise-peer-urls", peer,
                        "--initial-cluster", initial,
                        "--initial-cluster-state", "new",
                        "--initial-cluster-token", "mayfly-bench",
                        NULL};
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
    }
    execv(bin, (char **)argv);
    _exit(127);
  }
  int rc = -1;
  if (pid > 0) {
    e->pid = pid;
    for (int i = 0; i < ETCD_WAIT_S * 20; i++) {
      if (etcd_healthy(e->client_port)) {
        rc = 0;
        break;
      }
      if (waitpid(pid, NULL, WNOHANG) == pid) {
        e->pid = 0;
        break;
      }
      g_usleep(50000);
    }
  }
  if (rc != 0) {
    fprintf(stderr, "mayfly-bench: etcd did not become healthy on %s; its log:\n", e->endpoint);
    char *txt = NULL;
    gsize len = 0;
    if (g_file_get_contents(log, &txt, &len, NULL)) {
      fputs(len > 2000 ? txt + len - 2000 : txt, stderr);
    }
    g_free(txt);
    etcd_stop(e);
  }
  g_free(peer);
  g_free(initial);
  g_free(data);
  g_free(log);
  g_free(bin);
  return rc;
}

/* What cluster() says, reduced to what the bench uses. */
typedef struct {
  char leader[128];
  char answered_by[128];
  int members;
  int64_t term, txns, txn_records;
} cluster_view_t;

/* cluster() of the one directory at address (not a list: the counters are
 * that directory's own). Returns 0 or a MAYFLY_E* code. */
static int cluster_of(const char *address, cluster_view_t *v) {
  memset(v, 0, sizeof *v);
  mf_ctl_t *ctl;
  int rc = mf_ctl_open(address, 2000, 1000, &ctl);
  if (rc != 0) return rc;
  MayflyClusterInfo *ci = g_object_new(MAYFLY_TYPE_CLUSTER_INFO, NULL);
  rc = CTL_CALL(ctl, cluster, &ci);
  if (rc == 0) {
    snprintf(v->leader, sizeof v->leader, "%s", ci->leader ? ci->leader : "");
    snprintf(v->answered_by, sizeof v->answered_by, "%s", ci->answered_by ? ci->answered_by : "");
    v->members = ci->members ? (int)ci->members->len : 0;
    v->term = ci->term;
    v->txns = ci->txns;
    v->txn_records = ci->txn_records;
  }
  g_object_unref(ci);
  mf_ctl_close(ctl);
  return rc;
}

/* The three etcd-backed directories of the run, their memory server and the
 * list clients are given. */
typedef struct {
  etcd_proc_t etcd;
  char ttl[32];              /* --leader-ttl */
  bench_dir_t dirs[HA_DIRS]; /* pid 0: down */
  int ports[HA_DIRS];        /* pinned at the first start, so the list stays true */
  char list[HA_DIRS * 32];   /* "127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3" */
  pid_t ms;
} ha_cluster_t;

/* Starts (port 0: a free port) or restarts directory i of h. */
static int ha_dir_spawn(const bench_opts_t *o, ha_cluster_t *h, int i, int port) {
  char ps[16];
  snprintf(ps, sizeof ps, "%d", port);
  /* The bench's own --port 0 comes first; the last --port given wins. */
  const char *flags[] = {"--etcd",         h->etcd.endpoint, "--cluster",    HA_CLUSTER,
                         "--leader-ttl",   h->ttl,           "--lease-ms",   LONG_LEASE,
                         "--heartbeat-ms", HA_HEARTBEAT_MS,  "--port",       ps,
                         NULL};
  if (bench_dir_spawn(o, flags, 10, &h->dirs[i]) != 0) {
    fprintf(stderr, "mayfly-bench: an etcd-backed directory did not start (does this "
                    "mayfly-directory have --etcd, issue 14?)\n");
    return -1;
  }
  const char *colon = strrchr(h->dirs[i].address, ':');
  h->ports[i] = colon ? atoi(colon + 1) : 0;
  return 0;
}

/* Waits until some directory names a leader that is one of ours and that
 * leader answers cluster() as itself with `members` members; *leader gets
 * its index and *v its view. Returns 0, or -1 after HA_WAIT_S seconds. */
static int ha_leader(ha_cluster_t *h, int members, int *leader, cluster_view_t *v) {
  double deadline = bench_now_us() + HA_WAIT_S * 1e6;
  char last[128] = "no directory answered cluster()";
  while (bench_now_us() < deadline) {
    for (int i = 0; i < HA_DIRS; i++) {
      if (h->dirs[i].pid <= 0) continue;
      cluster_view_t any;
      if (cluster_of(h->dirs[i].address, &any) != 0 || any.leader[0] == '\0') continue;
      for (int j = 0; j < HA_DIRS; j++) {
        if (h->dirs[j].pid <= 0 || strcmp(h->dirs[j].address, any.leader) != 0) continue;
        if (cluster_of(h->dirs[j].address, v) == 0 && strcmp(v->leader, v->answered_by) == 0) {
          if (v->members >= members) {
            *leader = j;
            return 0;
          }
          snprintf(last, sizeof last, "the leader lists %d members", v->members);
        }
      }
    }
    g_usleep(20000);
  }
  fprintf(stderr, "mayfly-bench: no leader with %d members after %d s (%s)\n", members,
          HA_WAIT_S, last);
  return -1;
}

/* Waits until directory i answers cluster() and knows a leader (a restarted
 * standby that follows). Returns 0 or -1 after HA_WAIT_S seconds. */
static int ha_following(ha_cluster_t *h, int i) {
  double deadline = bench_now_us() + HA_WAIT_S * 1e6;
  while (bench_now_us() < deadline) {
    cluster_view_t v;
    if (cluster_of(h->dirs[i].address, &v) == 0 && v.leader[0] != '\0') return 0;
    g_usleep(20000);
  }
  fprintf(stderr, "mayfly-bench: the restarted directory %s knows no leader after %d s\n",
          h->dirs[i].address, HA_WAIT_S);
  return -1;
}

static void ha_stop(ha_cluster_t *h) {
  bench_proc_stop(h->ms);
  h->ms = 0;
  for (int i = 0; i < HA_DIRS; i++) bench_dir_stop(&h->dirs[i]);
  etcd_stop(&h->etcd);
}

/* Starts etcd, the three directories and a memory server registered
 * through the list, and waits for a leader. Returns 0, 77 (no etcd) or -1;
 * on failure everything started is stopped. */
static int ha_start(const bench_opts_t *o, ha_cluster_t *h) {
  memset(h, 0, sizeof *h);
  snprintf(h->ttl, sizeof h->ttl, "%s", o->leader_ttl ? o->leader_ttl : "2s");
  int rc = etcd_start(&h->etcd);
  if (rc != 0) return rc;
  size_t off = 0;
  for (int i = 0; i < HA_DIRS; i++) {
    if (ha_dir_spawn(o, h, i, 0) != 0) {
      ha_stop(h);
      return -1;
    }
    off += (size_t)snprintf(h->list + off, sizeof h->list - off, "%s%s", i ? "," : "",
                            h->dirs[i].address);
  }
  int leader;
  cluster_view_t v;
  bench_dir_t listed = {.pid = 0};
  snprintf(listed.address, sizeof listed.address, "%s", h->list);
  if (ha_leader(h, 1, &leader, &v) != 0 ||
      (h->ms = bench_memserver_start(o, &listed, HA_MS_BLOCKS, "1MiB")) < 0) {
    h->ms = 0;
    ha_stop(h);
    return -1;
  }
  return 0;
}

/* One row of the --ha run on the three back ends. */
typedef struct {
  bench_row_t mem, log, etcd;
  int64_t records, fsyncs;   /* the local log's counters, their growth */
  int64_t txns, txn_records; /* the etcd leader's counters, their growth */
  int leader_changed;        /* a failover during the row: the txn figures are partial */
} ha_row_t;

/* Runs create+remove at each client count on mem, then the local log, then
 * the etcd cluster (clients given the list of its three directories), in
 * SIDE_ROUNDS alternations of a share of the row's seconds. Returns 0 or -1. */
static int ha_rows(const bench_opts_t *o, const char *mem, const char *log, ha_cluster_t *h,
                   GArray *rows) {
  int sets[2];
  int nsets = client_sets(o, sets);
  int rounds = o->ops ? 1 : SIDE_ROUNDS;
  double slice = (o->quick ? 1.0 : (double)o->seconds) / rounds;
  int failed = 0;
  for (int s = 0; s < nsets; s++) {
    ha_row_t r = {0};
    tally_t tm = {0}, tl = {0}, te = {0};
    bench_lat_init(&tm.lat);
    bench_lat_init(&tl.lat);
    bench_lat_init(&te.lat);
    for (int round = 0; round < rounds; round++) {
      mayfly_dir_stats_t before, after;
      failed |= measure_round(o, mem, WORK_PAIR, sets[s], NULL, slice, &tm);
      if (stats_of(log, &before) != 0) failed = -1;
      failed |= measure_round(o, log, WORK_PAIR, sets[s], NULL, slice, &tl);
      if (stats_of(log, &after) != 0) failed = -1;
      r.records += after.log_records - before.log_records;
      r.fsyncs += after.log_fsyncs - before.log_fsyncs;
      int leader;
      cluster_view_t cb, ca;
      if (ha_leader(h, 1, &leader, &cb) != 0) {
        failed = -1;
        continue;
      }
      failed |= measure_round(o, h->list, WORK_PAIR, sets[s], NULL, slice, &te);
      if (cluster_of(h->dirs[leader].address, &ca) != 0 || ca.term != cb.term) {
        r.leader_changed = 1;
      } else {
        r.txns += ca.txns - cb.txns;
        r.txn_records += ca.txn_records - cb.txn_records;
      }
    }
    tally_row(&tm, "create+remove", WORK_PAIR, sets[s], &r.mem);
    tally_row(&tl, "create+remove", WORK_PAIR, sets[s], &r.log);
    tally_row(&te, "create+remove", WORK_PAIR, sets[s], &r.etcd);
    g_array_append_val(rows, r);
  }
  return failed;
}

/* Creates path through c, again and again, until it succeeds or
 * FAILOVER_GIVE_UP_S seconds have passed since t0 (bench_now_us). The
 * client's own failover (its list, its resends) runs inside each call; a
 * call that still fails (no leader yet past its timeout, no blocks while the
 * memory server registers again) is simply made again. Returns 0 or the
 * last call's MAYFLY_E* code, with its message in *why. */
static int create_until(mayfly_client_t *c, const char *prefix, double t0, char *why,
                        size_t whylen) {
  int rc = -1;
  for (int a = 0; bench_now_us() - t0 < FAILOVER_GIVE_UP_S * 1e6; a++) {
    char path[96];
    snprintf(path, sizeof path, "%s/a%d", prefix, a);
    rc = mayfly_create(c, path, MAYFLY_KIND_KV, NULL, NULL);
    if (rc == 0) return 0;
    snprintf(why, whylen, "%s", mayfly_last_error());
    g_usleep(1000);
  }
  return rc;
}

/* --kills times: waits for a leader with all three members, makes one create
 * through a client of the list (so the memory server is registered with
 * this leader and the client connected), kills the leader with SIGKILL and
 * times until the first successful create through the same client; then
 * starts the killed directory again on its port, as a standby. The times go
 * to *ms (milliseconds); *failed counts the kills without a create within
 * FAILOVER_GIVE_UP_S. Returns 0, or -1 when the cluster could not be brought
 * back to three directories. */
static int ha_failovers(const bench_opts_t *o, ha_cluster_t *h, int kills, bench_lat_t *ms,
                        int *failed) {
  mayfly_options_t co = {.timeout_ms = 5000};
  mayfly_client_t *c = NULL;
  if (mayfly_connect(h->list, &co, &c) != 0) {
    fprintf(stderr, "mayfly-bench: connect to %s: %s\n", h->list, mayfly_last_error());
    return -1;
  }
  int rc = 0;
  char why[256] = "";
  for (int k = 0; k < kills && rc == 0; k++) {
    int leader;
    cluster_view_t v;
    char prefix[64];
    if (ha_leader(h, HA_DIRS, &leader, &v) != 0) {
      rc = -1;
      break;
    }
    snprintf(prefix, sizeof prefix, "/failover/k%d/before", k);
    if (create_until(c, prefix, bench_now_us(), why, sizeof why) != 0) {
      fprintf(stderr, "mayfly-bench: no create before kill %d: %s\n", k + 1, why);
      rc = -1;
      break;
    }
    int port = h->ports[leader];
    double t0 = bench_now_us();
    bench_dir_kill(&h->dirs[leader]);
    snprintf(prefix, sizeof prefix, "/failover/k%d/after", k);
    if (create_until(c, prefix, t0, why, sizeof why) == 0) {
      bench_lat_add(ms, (bench_now_us() - t0) / 1e3);
    } else {
      fprintf(stderr, "mayfly-bench: kill %d of the leader %s: no successful create in %d s: %s\n",
              k + 1, h->dirs[leader].address, FAILOVER_GIVE_UP_S, why);
      (*failed)++;
    }
    if (ha_dir_spawn(o, h, leader, port) != 0 || ha_following(h, leader) != 0) rc = -1;
  }
  mayfly_disconnect(c);
  return rc;
}

static double ha_ratio(const bench_row_t *num, const bench_row_t *den) {
  return den->ops_per_s > 0 ? num->ops_per_s / den->ops_per_s : 0;
}

static double ha_per_txn(const ha_row_t *r) {
  return r->txns > 0 ? (double)r->txn_records / r->txns : 0;
}

static void print_ha(const bench_opts_t *o, const ha_cluster_t *h, const char *log_dir,
                     int64_t ttl_ms, GArray *rows, bench_lat_t *fo, int kills, int fo_failed) {
  char machine[256];
  bench_machine(machine, sizeof machine);
  int n = (int)fo->us->len;
  double p50 = bench_lat_pct(fo, 50), p99 = bench_lat_pct(fo, 99), max = bench_lat_pct(fo, 100);
  double fo_target = ttl_ms + TARGET_FAILOVER_SLACK_MS;
  if (o->json) {
    printf("{\"bench\": \"control --ha\", \"machine\": \"%s\", \"leader_ttl_ms\": %lld, "
           "\"rows\": [\n",
           machine, (long long)ttl_ms);
    for (guint i = 0; i < rows->len; i++) {
      ha_row_t *r = &g_array_index(rows, ha_row_t, i);
      printf("  {\"name\": \"%s\", \"clients\": %d, \"unit\": \"%s\", "
             "\"memory_ops_per_s\": %.1f, \"memory_p99_us\": %.1f, "
             "\"log_ops_per_s\": %.1f, \"log_p99_us\": %.1f, "
             "\"etcd_ops_per_s\": %.1f, \"etcd_p50_us\": %.1f, \"etcd_p99_us\": %.1f, "
             "\"etcd_over_memory\": %.3f, \"etcd_over_log\": %.3f, "
             "\"log_records\": %lld, \"log_fsyncs\": %lld, \"etcd_txns\": %lld, "
             "\"etcd_txn_records\": %lld, \"records_per_txn\": %.2f, \"leader_changed\": %s}%s\n",
             r->mem.name, r->mem.clients, r->mem.unit, r->mem.ops_per_s, r->mem.p99_us,
             r->log.ops_per_s, r->log.p99_us, r->etcd.ops_per_s, r->etcd.p50_us, r->etcd.p99_us,
             ha_ratio(&r->etcd, &r->mem), ha_ratio(&r->etcd, &r->log), (long long)r->records,
             (long long)r->fsyncs, (long long)r->txns, (long long)r->txn_records, ha_per_txn(r),
             r->leader_changed ? "true" : "false", i + 1 < rows->len ? "," : "");
    }
    printf("], \"failover\": {\"kills\": %d, \"timed\": %d, \"failed\": %d, \"p50_ms\": %.1f, "
           "\"p99_ms\": %.1f, \"max_ms\": %.1f}}\n",
           kills, n, fo_failed, p50, p99, max);
    return;
  }
  if (o->csv) {
    printf("bench,name,clients,memory_ops_per_s,log_ops_per_s,etcd_ops_per_s,etcd_p99_us,"
           "etcd_over_memory,etcd_over_log,records_per_fsync,records_per_txn\n");
    for (guint i = 0; i < rows->len; i++) {
      ha_row_t *r = &g_array_index(rows, ha_row_t, i);
      printf("control-ha,%s,%d,%.1f,%.1f,%.1f,%.1f,%.3f,%.3f,%.2f,%.2f\n", r->mem.name,
             r->mem.clients, r->mem.ops_per_s, r->log.ops_per_s, r->etcd.ops_per_s,
             r->etcd.p99_us, ha_ratio(&r->etcd, &r->mem), ha_ratio(&r->etcd, &r->log),
             r->fsyncs > 0 ? (double)r->records / r->fsyncs : 0, ha_per_txn(r));
    }
    printf("bench,kills,timed,failed,p50_ms,p99_ms,max_ms\n");
    printf("control-failover,%d,%d,%d,%.1f,%.1f,%.1f\n", kills, n, fo_failed, p50, p99, max);
    return;
  }
  printf("mayfly-bench control --ha — %s%s\n", machine, o->pin ? " (pinned to CPU 0)" : "");
  printf("etcd: one member at %s; three directories (--cluster %s --leader-ttl %s), clients "
         "given all three;\nlocal log under %s (%s); memory servers heartbeat every %s ms\n\n",
         h->etcd.endpoint, HA_CLUSTER, h->ttl, log_dir, o->keep ? "kept" : "removed afterwards",
         HA_HEARTBEAT_MS);
  printf("%-14s %7s %11s %7s %11s %7s %9s %7s %8s %8s %9s %7s  %s\n", "workload", "clients",
         "in-memory/s", "p99", "local log/s", "p99", "etcd/s", "p99", "etcd/mem", "etcd/log",
         "rec/fsync", "rec/txn", "target");
  for (guint i = 0; i < rows->len; i++) {
    ha_row_t *r = &g_array_index(rows, ha_row_t, i);
    char fs[16], tx[16];
    if (r->fsyncs > 0) {
      snprintf(fs, sizeof fs, "%.1f", (double)r->records / r->fsyncs);
    } else {
      snprintf(fs, sizeof fs, "-");
    }
    if (r->txns > 0) {
      snprintf(tx, sizeof tx, "%.1f%s", ha_per_txn(r), r->leader_changed ? "?" : "");
    } else {
      snprintf(tx, sizeof tx, "-");
    }
    int targeted = r->etcd.clients == 16;
    int met = r->etcd.ops_per_s >= TARGET_ETCD_PAIRS;
    printf("%-14s %7d %11.0f %5.0fus %11.0f %5.0fus %9.0f %5.0fus %6.0f %% %6.0f %% %9s %7s  %s\n",
           r->mem.name, r->mem.clients, r->mem.ops_per_s, r->mem.p99_us, r->log.ops_per_s,
           r->log.p99_us, r->etcd.ops_per_s, r->etcd.p99_us, 100 * ha_ratio(&r->etcd, &r->mem),
           100 * ha_ratio(&r->etcd, &r->log), fs, tx,
           targeted ? (met ? "etcd >= 5,000/s: met" : "etcd >= 5,000/s: MISSED") : "");
  }
  printf("(rec/fsync: the local log's log_records / log_fsyncs over its row; rec/txn: the etcd "
         "leader's cluster() txn_records / txns over its row, '?' when a leader changed during "
         "it)\n\n");
  printf("failover: kill -9 of the leader to the first successful create through a client of "
         "all three directories\n");
  if (n == 0) {
    printf("  no failover timed (%d kills, %d without a create in %d s)\n", kills, fo_failed,
           FAILOVER_GIVE_UP_S);
    return;
  }
  printf("  %d kills: p50 %.0f ms, p99 %.0f ms, max %.0f ms%s   target p99 <= leader-ttl + 1 s "
         "= %.0f ms: %s\n",
         n, p50, p99, max, fo_failed ? " (and some without a create: see stderr)" : "",
         fo_target, p99 <= fo_target && fo_failed == 0 ? "met" : "MISSED");
}

/* --ha: the three back ends side by side, then failover. */
static int control_ha(bench_opts_t *o) {
  if (o->directory != NULL) {
    fprintf(stderr, "mayfly-bench: --ha starts its own directories; drop --directory\n");
    return 2;
  }
  int64_t ttl_ms = 2000;
  if (o->leader_ttl != NULL &&
      (mf_parse_duration_ms(o->leader_ttl, &ttl_ms) != 0 || ttl_ms < 1000 || ttl_ms > 60000)) {
    fprintf(stderr, "mayfly-bench: --leader-ttl: a duration from 1s to 60s, not '%s'\n",
            o->leader_ttl);
    return 2;
  }
  int kills = o->kills > 0 ? o->kills : o->quick ? 2 : 10;
  char *log_root = NULL;
  if (o->data_dir != NULL) {
    if (g_mkdir_with_parents(o->data_dir, 0700) != 0) {
      perror(o->data_dir);
      return 1;
    }
    log_root = g_build_filename(o->data_dir, "mayfly-bench-XXXXXX", NULL);
    if (g_mkdtemp(log_root) == NULL) {
      perror(log_root);
      g_free(log_root);
      return 1;
    }
  } else if ((log_root = g_dir_make_tmp("mayfly-bench-log-XXXXXX", NULL)) == NULL) {
    perror("mayfly-bench: local log directory");
    return 1;
  }

  ha_cluster_t h;
  int rc = ha_start(o, &h);
  if (rc == 77) {
    fprintf(stderr, "mayfly-bench: no etcd in $PATH (Debian: etcd-server); skipping --ha\n");
    rm_tree(log_root);
    g_free(log_root);
    return 77;
  }
  const char *mem_flags[] = {"--lease-ms", LONG_LEASE, "--heartbeat-ms", HA_HEARTBEAT_MS, NULL};
  const char *log_flags[] = {"--data-dir",     log_root,        "--lease-ms", LONG_LEASE,
                             "--heartbeat-ms", HA_HEARTBEAT_MS, NULL};
  bench_dir_t mem = {0}, log = {0};
  pid_t mem_ms = 0, log_ms = 0;
  GArray *rows = g_array_new(FALSE, TRUE, sizeof(ha_row_t));
  bench_lat_t fo;
  bench_lat_init(&fo);
  int failed = rc != 0, fo_failed = 0;
  if (!failed && (bench_dir_spawn(o, mem_flags, 5, &mem) != 0 ||
                  bench_dir_spawn(o, log_flags, RECOVERY_WAIT_S, &log) != 0 ||
                  (mem_ms = bench_memserver_start(o, &mem, HA_MS_BLOCKS, "1MiB")) < 0 ||
                  (log_ms = bench_memserver_start(o, &log, HA_MS_BLOCKS, "1MiB")) < 0)) {
    failed = 1;
  }
  if (!failed) failed |= ha_rows(o, mem.address, log.address, &h, rows) != 0;
  bench_proc_stop(mem_ms);
  bench_proc_stop(log_ms);
  bench_dir_stop(&mem);
  bench_dir_stop(&log);
  /* The failovers run alone: nothing else loads the machine meanwhile. */
  if (!failed) failed |= ha_failovers(o, &h, kills, &fo, &fo_failed) != 0;
  if (!failed || rows->len > 0) {
    print_ha(o, &h, log_root, ttl_ms, rows, &fo, kills, fo_failed);
  }
  ha_stop(&h);
  if (!o->keep) rm_tree(log_root);
  for (guint i = 0; i < rows->len; i++) {
    ha_row_t *r = &g_array_index(rows, ha_row_t, i);
    row_clear(&r->mem);
    row_clear(&r->log);
    row_clear(&r->etcd);
  }
  g_array_free(rows, TRUE);
  bench_lat_free(&fo);
  g_free(log_root);
  return failed || fo_failed ? 1 : 0;
}

int bench_control(bench_opts_t *o) {
  if (o->ha) return control_ha(o);
  return o->data_dir != NULL ? control_durable(o) : control_memory(o);
}
