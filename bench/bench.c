/*
 * mayfly-bench: benchmark driver. Subcommands:
 *   control   create+remove pairs/s and batched renew of 10,000 paths; with
 *             --data-dir, the durable directory beside the in-memory one;
 *             with --ha, in-memory, local log and etcd, and failover times
 *   data      the data plane through libmayfly
 *   elastic   kv splits under load
 *   compare   Mayfly and Redis side by side
 *   memory    bytes per kv entry, Mayfly and Redis in the same run
 */
#define _GNU_SOURCE
#include "bench/bench.h"
#include "client/mayfly.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

void bench_lat_init(bench_lat_t *l) {
  l->us = g_array_new(FALSE, FALSE, sizeof(double));
}

void bench_lat_add(bench_lat_t *l, double us) {
  g_array_append_val(l->us, us);
}

void bench_lat_merge(bench_lat_t *into, const bench_lat_t *from) {
  g_array_append_vals(into->us, from->us->data, from->us->len);
}

static gint cmp_double(gconstpointer a, gconstpointer b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

double bench_lat_pct(bench_lat_t *l, double pct) {
  if (l->us->len == 0) return 0;
  g_array_sort(l->us, cmp_double);
  guint i = (guint)(pct / 100.0 * (l->us->len - 1) + 0.5);
  return g_array_index(l->us, double, i);
}

void bench_lat_free(bench_lat_t *l) {
  g_array_free(l->us, TRUE);
}

double bench_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* The directory binary next to this one in the build tree. */
static char *sibling_binary(const char *rel) {
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return NULL;
  self[n] = '\0';
  char *bdir = g_path_get_dirname(self);
  char *root = g_path_get_dirname(bdir);
  char *path = g_build_filename(root, rel, NULL);
  g_free(bdir);
  g_free(root);
  return path;
}

/* Spawns a daemon from the build tree with --port 0 --port-file and waits
 * for the port, polling every millisecond for up to wait_s seconds; returns
 * the pid or -1. For profiling, the words of $MAYFLY_BENCH_WRAP_MEMSERVER
 * (e.g. "valgrind --tool=callgrind") go before the memory server's command
 * line; the pid is then the wrapper's, and the wait is at least 60 s. */
static pid_t spawn(const bench_opts_t *o, const char *rel, const char *const *args, int wait_s,
                   int *port) {
  char *bin = sibling_binary(rel);
  char *tmp = g_dir_make_tmp("mayfly-bench-XXXXXX", NULL);
  char *port_file = g_build_filename(tmp, "port", NULL);
  GPtrArray *argv = g_ptr_array_new();
  const char *wrap = strstr(rel, "memserver") ? getenv("MAYFLY_BENCH_WRAP_MEMSERVER") : NULL;
  char **words = wrap != NULL ? g_strsplit_set(wrap, " ", -1) : NULL;
  for (char **w = words; w != NULL && *w != NULL; w++) {
    if (**w) g_ptr_array_add(argv, *w);
  }
  g_ptr_array_add(argv, bin);
  g_ptr_array_add(argv, "--port");
  g_ptr_array_add(argv, "0");
  g_ptr_array_add(argv, "--port-file");
  g_ptr_array_add(argv, port_file);
  g_ptr_array_add(argv, "--log-level");
  g_ptr_array_add(argv, "warn");
  for (const char *const *a = args; *a; a++) g_ptr_array_add(argv, (gpointer)*a);
  g_ptr_array_add(argv, NULL);
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    execvp(g_ptr_array_index(argv, 0), (char **)argv->pdata);
    _exit(127);
  }
  *port = 0;
  /* Valgrind starts slowly. The poll is fine-grained because the bench
   * times a durable directory's start (control --data-dir). */
  double deadline = bench_now_us() + (words ? MAX(wait_s, 60) : wait_s) * 1e6;
  int exited = 0;
  while (*port == 0 && !exited && bench_now_us() < deadline) {
    char *txt = NULL;
    if (g_file_get_contents(port_file, &txt, NULL, NULL)) {
      *port = atoi(txt);
      g_free(txt);
    } else if (waitpid(pid, NULL, WNOHANG) == pid) {
      exited = 1; /* a refused option, say: no need to wait on */
    } else {
      g_usleep(1000);
    }
  }
  unlink(port_file);
  rmdir(tmp);
  if (*port == 0) {
    fprintf(stderr, "mayfly-bench: could not start %s\n", bin);
    if (!exited) {
      kill(pid, SIGKILL);
      waitpid(pid, NULL, 0);
    }
    pid = -1;
  } else if (o->pin) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(0, &set);
    sched_setaffinity(pid, sizeof set, &set);
  }
  g_ptr_array_free(argv, TRUE);
  g_strfreev(words);
  g_free(port_file);
  g_free(tmp);
  g_free(bin);
  return pid;
}

pid_t bench_memserver_start(const bench_opts_t *o, const bench_dir_t *d, int blocks,
                            const char *block_size) {
  return bench_memserver_spawn(o, d, blocks, block_size, NULL);
}

pid_t bench_memserver_spawn(const bench_opts_t *o, const bench_dir_t *d, int blocks,
                            const char *block_size, const char *const *extra) {
  char nb[16];
  snprintf(nb, sizeof nb, "%d", blocks);
  GPtrArray *args = g_ptr_array_new();
  const char *own[] = {"--directory", d->address, "--blocks", nb, "--block-size", block_size};
  for (size_t i = 0; i < G_N_ELEMENTS(own); i++) g_ptr_array_add(args, (gpointer)own[i]);
  for (const char *const *a = extra; a != NULL && *a != NULL; a++) {
    g_ptr_array_add(args, (gpointer)*a);
  }
  g_ptr_array_add(args, NULL);
  int port;
  pid_t pid = spawn(o, "memserver/mayfly-memserver", (const char *const *)args->pdata, 5, &port);
  g_ptr_array_free(args, TRUE);
  if (pid < 0) return -1;
  /* Registered once the directory counts it. */
  mayfly_client_t *c = NULL;
  mayfly_options_t co = {.token = o->token};
  if (mayfly_connect(d->address, &co, &c) == 0) {
    for (int i = 0; i < 500; i++) {
      mayfly_dir_stats_t st;
      if (mayfly_dir_stats(c, &st) == 0 && st.servers_up > 0) break;
      g_usleep(10000);
    }
    mayfly_disconnect(c);
  }
  return pid;
}

void bench_proc_stop(pid_t pid) {
  if (pid > 0) {
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
  }
}

int bench_dir_start(const bench_opts_t *o, bench_dir_t *d) {
  memset(d, 0, sizeof *d);
  if (o->directory != NULL) {
    snprintf(d->address, sizeof d->address, "%s", o->directory);
    return 0;
  }
  return bench_dir_spawn(o, NULL, 5, d);
}

int bench_dir_spawn(const bench_opts_t *o, const char *const *extra, int wait_s, bench_dir_t *d) {
  memset(d, 0, sizeof *d);
  GPtrArray *args = g_ptr_array_new();
  g_ptr_array_add(args, "--heartbeat-timeout-ms");
  g_ptr_array_add(args, "3600000");
  for (const char *const *a = extra; a != NULL && *a != NULL; a++) {
    g_ptr_array_add(args, (gpointer)*a);
  }
  g_ptr_array_add(args, NULL);
  int port;
  pid_t pid = spawn(o, "directory/mayfly-directory", (const char *const *)args->pdata, wait_s,
                    &port);
  g_ptr_array_free(args, TRUE);
  if (pid < 0) return -1;
  d->pid = pid;
  snprintf(d->address, sizeof d->address, "127.0.0.1:%d", port);
  return 0;
}

void bench_dir_stop(bench_dir_t *d) {
  if (d->pid > 0) {
    kill(d->pid, SIGTERM);
    waitpid(d->pid, NULL, 0);
    d->pid = 0;
  }
}

void bench_dir_kill(bench_dir_t *d) {
  if (d->pid > 0) {
    kill(d->pid, SIGKILL);
    waitpid(d->pid, NULL, 0);
    d->pid = 0;
  }
}

void bench_machine(char *out, size_t len) {
  struct utsname u;
  uname(&u);
  char *model = NULL, *cpuinfo = NULL;
  if (g_file_get_contents("/proc/cpuinfo", &cpuinfo, NULL, NULL)) {
    char *m = strstr(cpuinfo, "model name");
    if (m && (m = strchr(m, ':'))) model = g_strndup(m + 2, strcspn(m + 2, "\n"));
  }
  snprintf(out, len, "%s, %ld CPUs, %s %s", model ? model : "unknown CPU",
           sysconf(_SC_NPROCESSORS_ONLN), u.sysname, u.release);
  g_free(model);
  g_free(cpuinfo);
}

void bench_print(const bench_opts_t *o, const char *title, GArray *rows) {
  char machine[256];
  bench_machine(machine, sizeof machine);
  if (o->json) {
    printf("{\"bench\": \"%s\", \"machine\": \"%s\", \"rows\": [\n", title, machine);
    for (guint i = 0; i < rows->len; i++) {
      bench_row_t *r = &g_array_index(rows, bench_row_t, i);
      printf("  {\"name\": \"%s\", \"clients\": %d, \"ops\": %lld, \"unit\": \"%s\", "
             "\"ops_per_s\": %.1f, \"p50_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f}%s\n",
             r->name, r->clients, r->ops, r->unit, r->ops_per_s, r->p50_us, r->p99_us,
             r->p999_us, i + 1 < rows->len ? "," : "");
    }
    printf("]}\n");
    return;
  }
  if (o->csv) {
    printf("bench,name,clients,ops,unit,ops_per_s,p50_us,p99_us,p999_us\n");
    for (guint i = 0; i < rows->len; i++) {
      bench_row_t *r = &g_array_index(rows, bench_row_t, i);
      printf("%s,%s,%d,%lld,%s,%.1f,%.1f,%.1f,%.1f\n", title, r->name, r->clients, r->ops,
             r->unit, r->ops_per_s, r->p50_us, r->p99_us, r->p999_us);
    }
    return;
  }
  printf("mayfly-bench %s — %s%s\n\n", title, machine, o->pin ? " (pinned to CPU 0)" : "");
  printf("%-28s %7s %10s %12s %10s %10s %10s\n", "workload", "clients", "ops", "ops/s",
         "p50", "p99", "p99.9");
  for (guint i = 0; i < rows->len; i++) {
    bench_row_t *r = &g_array_index(rows, bench_row_t, i);
    printf("%-28s %7d %10lld %12.0f %8.0fus %8.0fus %8.0fus\n", r->name, r->clients, r->ops,
           r->ops_per_s, r->p50_us, r->p99_us, r->p999_us);
  }
}

static int usage(void) {
  fprintf(stderr,
          "usage: mayfly-bench SUBCOMMAND [options]\n"
          "subcommands:\n"
          "  control   create+remove pairs/s and batched renew of 10,000 paths; with\n"
          "            --data-dir, in-memory and durable side by side, and recovery times;\n"
          "            with --ha, in-memory, local log and etcd (three directories) side\n"
          "            by side, and the time of a failover (issue 14)\n"
          "  data      kv get/put, queue push/pop, file write/read through a memory server\n"
          "  elastic   kv splits under load: time, MB/s moved, get latency while splitting\n"
          "  compare   the same workloads against Mayfly and Redis side by side\n"
          "  (data --auth, compare --auth: kv get with authentication off and on)\n"
          "  memory    bytes per kv entry (allocator and RSS), Mayfly and Redis\n"
          "  replicated  the data rows at R = 1, 2, 3 on four loopback hosts, failover\n"
          "            time and re-replication MB/s (issue 12)\n"
          "run 'mayfly-bench SUBCOMMAND --help' for options\n");
  return 2;
}

/* The subcommands. Unknown names are refused before the options are parsed,
 * so `mayfly-bench NAME --help` succeeds only for a subcommand that exists
 * (bench/compare-redis.sh tests for optional ones that way). */
static const struct {
  const char *name;
  int (*run)(bench_opts_t *o);
} subcommands[] = {{"control", bench_control},
                   {"data", bench_data},
                   {"compare", bench_compare},
                   {"elastic", bench_elastic},
                   {"memory", bench_memory},
                   {"replicated", bench_replicated}};

int main(int argc, char **argv) {
  if (argc < 2 || argv[1][0] == '-') return usage();
  const char *sub = argv[1];
  int (*run)(bench_opts_t *o) = NULL;
  for (size_t i = 0; i < G_N_ELEMENTS(subcommands); i++) {
    if (strcmp(sub, subcommands[i].name) == 0) run = subcommands[i].run;
  }
  if (run == NULL) {
    fprintf(stderr, "mayfly-bench: unknown subcommand '%s'\n", sub);
    return usage();
  }
  bench_opts_t o = {.seconds = 3};
  GOptionEntry e[] = {
      {"directory", 'd', 0, G_OPTION_ARG_STRING, &o.directory,
       "Directory to measure (default: start one)", "HOST:PORT"},
      {"clients", 'c', 0, G_OPTION_ARG_INT, &o.clients, "Concurrent clients (default: 1 and 16)",
       "N"},
      {"seconds", 's', 0, G_OPTION_ARG_INT, &o.seconds, "Seconds per workload (default 3)", "T"},
      {"ops", 'n', 0, G_OPTION_ARG_INT, &o.ops,
       "Operations per client instead of --seconds (memory: entries to load)",
       "N"},
      {"pin", 0, 0, G_OPTION_ARG_NONE, &o.pin, "Pin the bench and the daemons to CPU 0", NULL},
      {"json", 0, 0, G_OPTION_ARG_NONE, &o.json, "Print JSON", NULL},
      {"csv", 0, 0, G_OPTION_ARG_NONE, &o.csv, "Print CSV", NULL},
      {"value-size", 'v', 0, G_OPTION_ARG_INT, &o.value_size,
       "Value size in bytes for kv and queue (default 64)", "BYTES"},
      {"quick", 0, 0, G_OPTION_ARG_NONE, &o.quick,
       "compare: a few rows only; elastic: 4 MiB blocks; memory: 20,000 entries; control --ha: "
       "rows of 1 s and 2 kills (smoke runs)", NULL},
      {"pipeline", 'P', 0, G_OPTION_ARG_INT, &o.pipeline,
       "Requests in flight per client (data; default 1)", "D"},
      {"loader", 0, 0, G_OPTION_ARG_STRING, &o.loader,
       "compare: threads (a thread per client, Mayfly through libmayfly), event (one epoll "
       "thread, the data protocol) or both (default)", "L"},
      {"targets", 0, 0, G_OPTION_ARG_NONE, &o.targets,
       "compare: only the rows of the Redis targets (kv 64 B at 16/50 clients, pipeline 16, "
       "1 MiB)", NULL},
      {"workload", 'w', 0, G_OPTION_ARG_STRING, &o.workload,
       "compare: only the rows of this workload (\"kv get\"); --clients, --pipeline and "
       "--value-size also pick rows", "NAME"},
      {"data-dir", 0, 0, G_OPTION_ARG_FILENAME, &o.data_dir,
       "control: also run a durable directory (its data in a fresh subdirectory of DIR, removed "
       "afterwards) beside the in-memory one, and time its recovery", "DIR"},
      {"keep", 0, 0, G_OPTION_ARG_NONE, &o.keep,
       "control: keep the data directories under --data-dir", NULL},
      {"auth", 0, 0, G_OPTION_ARG_NONE, &o.auth,
       "data, compare: instead of the usual rows, kv get at 16 clients (or --clients), "
       "pipeline 1 and 16, against an open cluster and one with a cluster key and tenants "
       "(capabilities checked), alternately, with the on/off ratios",
       NULL},
      {"ha", 0, 0, G_OPTION_ARG_NONE, &o.ha,
       "control: create+remove against an in-memory directory, a local log (--data-dir, or a "
       "temporary directory) and three directories on a one-member etcd the bench starts "
       "(etcd in $PATH), side by side, then the time from kill -9 of the leader to the first "
       "successful create", NULL},
      {"leader-ttl", 0, 0, G_OPTION_ARG_STRING, &o.leader_ttl,
       "control --ha: --leader-ttl of the etcd directories (default 2s)", "DURATION"},
      {"kills", 0, 0, G_OPTION_ARG_INT, &o.kills,
       "control --ha: failovers to time (default 10; --quick 2)", "N"},
      {"recovery-namespaces", 0, 0, G_OPTION_ARG_STRING, &o.recovery,
       "control --data-dir: namespace counts to time recovery at (default 10000,100000; "
       "0 skips)", "N,N"},
      {NULL}};
  char *param = g_strdup_printf("%s [options]", sub);
  GOptionContext *ctx = g_option_context_new(param);
  g_option_context_add_main_entries(ctx, e, NULL);
  GError *err = NULL;
  argv[1] = argv[0];
  argc--;
  argv++;
  if (!g_option_context_parse(ctx, &argc, &argv, &err)) {
    fprintf(stderr, "mayfly-bench: %s\n", err->message);
    return 2;
  }
  g_option_context_free(ctx);
  g_free(param);
  if (o.seconds < 1) o.seconds = 1;
  if (o.pin) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(0, &set);
    sched_setaffinity(0, sizeof set, &set);
  }
  signal(SIGPIPE, SIG_IGN);
  int rc = o.auth && (run == bench_data || run == bench_compare) ? bench_auth(&o) : run(&o);
  g_free(o.directory);
  g_free(o.loader);
  g_free(o.workload);
  g_free(o.data_dir);
  g_free(o.recovery);
  g_free(o.leader_ttl);
  return rc;
}
