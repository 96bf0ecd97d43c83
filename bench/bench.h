/*
 * mayfly-bench: shared pieces of the benchmark subcommands. Benchmarks report
 * figures (ops/s, latency percentiles); they never pass or fail on timings.
 */
#ifndef MAYFLY_BENCH_H
#define MAYFLY_BENCH_H

#include <glib.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct bench_opts {
  char *directory; /* NULL: start a throwaway directory */
  int clients;     /* 0: the subcommand's default set (1 and 16) */
  int seconds;
  int ops;         /* 0: run for `seconds` */
  int pin;         /* pin to CPU 0 */
  int json, csv;
  int value_size;   /* 0: the subcommand's default */
  int pipeline;     /* requests in flight per client (data); default 1 */
  int quick;        /* compare: a few rows only (smoke run) */
  char *loader;     /* compare: "threads", "event" or "both" (NULL: both) */
  int targets;      /* compare: only the rows of issue 9's targets */
  char *workload;   /* compare: only rows of this workload ("kv get"); NULL: all */
  char *data_dir;   /* control: also run a durable directory with its data under here */
  int keep;         /* control: keep the data directories under data_dir */
  char *recovery;   /* control --data-dir: namespace counts for recovery ("10000,100000") */
  int auth;         /* data, compare: kv get with authentication off and on (bench_auth) */
  const char *token; /* the tenant token the bench's clients log in with; NULL: none */
  int ha;           /* control: in-memory, local log and etcd side by side, and failover */
  char *leader_ttl; /* control --ha: the etcd directories' --leader-ttl (NULL: 2s) */
  int kills;        /* control --ha: failovers to time (0: 10, --quick 2) */
} bench_opts_t;

/* One measured row. */
typedef struct bench_row {
  char *name;
  int clients;
  double ops_per_s;
  double p50_us, p99_us, p999_us;
  long long ops;
  char *unit; /* what one op is */
} bench_row_t;

/* Latency samples in microseconds. */
typedef struct {
  GArray *us; /* double */
} bench_lat_t;

void bench_lat_init(bench_lat_t *l);
void bench_lat_add(bench_lat_t *l, double us);
void bench_lat_merge(bench_lat_t *into, const bench_lat_t *from);
double bench_lat_pct(bench_lat_t *l, double pct); /* sorts in place */
void bench_lat_free(bench_lat_t *l);

double bench_now_us(void);

/* A directory started for the run, or the one given with --directory. */
typedef struct {
  pid_t pid; /* 0 when not ours */
  char address[128];
} bench_dir_t;

/* Uses --directory if given, else starts a directory from the build tree
 * (bench_dir_spawn without extra flags). Returns 0 or -1. */
int bench_dir_start(const bench_opts_t *o, bench_dir_t *d);
/* Starts a directory from the build tree on a free port, whatever
 * --directory says, with the NULL-terminated flags `extra` (may be NULL)
 * after the bench's own, and waits up to wait_s seconds for its port (a
 * durable directory recovers before it listens). Returns 0 or -1. */
int bench_dir_spawn(const bench_opts_t *o, const char *const *extra, int wait_s, bench_dir_t *d);
/* SIGTERM and wait; nothing when the directory is not ours. */
void bench_dir_stop(bench_dir_t *d);
/* SIGKILL and wait (a crash, for recovery); nothing when not ours. */
void bench_dir_kill(bench_dir_t *d);

/* Starts a memory server registered with the directory `d` (n blocks of
 * block_size bytes) and waits until the directory lists it. Returns its pid
 * (stop with bench_proc_stop) or -1. */
pid_t bench_memserver_start(const bench_opts_t *o, const bench_dir_t *d, int blocks,
                            const char *block_size);
/* As bench_memserver_start, with the NULL-terminated flags `extra` (may be
 * NULL) after the bench's own. */
pid_t bench_memserver_spawn(const bench_opts_t *o, const bench_dir_t *d, int blocks,
                            const char *block_size, const char *const *extra);
void bench_proc_stop(pid_t pid);

/* A free TCP port on 127.0.0.1 (compare.c). */
int bench_free_port(void);
/* Starts a throwaway redis-server on 127.0.0.1:port (no persistence) and
 * waits until it answers PING. Returns its pid (stop with kill + waitpid)
 * or -1 (compare.c). */
pid_t bench_redis_start(int port);

/* One call of the generated Thrift client on an mf_ctl (common/ctl.h), following the leader:
 * CTL_CALL(ctl, stats, &s) calls mayfly_directory_if_stats(iface, &s, ...)
 * between mf_ctl_begin and mf_ctl_end and yields their MAYFLY_E* code. The
 * including file includes common/ctl.h. */
#define CTL_CALL(ctl, method, ...) MF_CTL_CALL((ctl), method, __VA_ARGS__)

int bench_data(bench_opts_t *o);

/* One workload of `data` (data.c) as a row: `clients` clients of
 * o->pipeline threads each on `path` (opened, or created of `kind`,
 * a mayfly_kind_t, with `blocks` blocks), for o->seconds or o->ops. kv
 * get fills its keys first; file ops are 1 MiB within 16 MiB per client.
 * Returns 0, or -1 when an operation failed (the row is still added). */
typedef enum {
  BENCH_KV_PUT,
  BENCH_KV_GET,
  BENCH_Q_PUSH,
  BENCH_Q_POP,
  BENCH_FILE_WRITE,
  BENCH_FILE_READ
} bench_work_t;
int bench_data_run(const bench_opts_t *o, const char *address, const char *path, int kind,
                   int blocks, bench_work_t work, int clients, const char *name, GArray *rows);

/* mayfly-bench replicated (replicated.c): the data rows at R = 1, 2 and 3
 * over memory servers on distinct loopback hosts, failover time and
 * re-replication MB/s. */
int bench_replicated(bench_opts_t *o);
/* data --auth and compare --auth: kv get throughput at 16 clients (or
 * --clients), pipeline 1 and 16, against an open cluster and one with a
 * cluster key and tenants (capabilities checked on every request), both
 * started for the run and measured alternately; prints the rows and the
 * on/off ratios. Returns the exit code. */
int bench_auth(bench_opts_t *o);
int bench_memory(bench_opts_t *o);
int bench_compare(bench_opts_t *o);
int bench_elastic(bench_opts_t *o);

/* The machine line: CPU model, CPU count, kernel. */
void bench_machine(char *out, size_t len);

/* Prints the machine line, then rows as a table, CSV or JSON. */
void bench_print(const bench_opts_t *o, const char *title, GArray *rows /* bench_row_t */);

int bench_control(bench_opts_t *o);

#endif /* MAYFLY_BENCH_H */
