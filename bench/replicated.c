/*
 * mayfly-bench replicated: what replication (issue 12) costs and how fast it
 * recovers.
 *
 * Starts a throwaway directory and four memory servers, each on a loopback
 * host of its own (127.0.0.2 to 127.0.0.5), so that a chain of R blocks
 * spans R hosts. Then, for R = 1, 2 and 3 in the same run, on namespaces
 * created with that R (through the control API's CreateOptions.replicas):
 *   kv put / kv get 64 B   16 clients (or --clients), pipeline 1 and 16
 *   queue push 64 B        16 clients, pipeline 1
 *   file write 1 MiB       4 clients (or --clients)
 * and with R = 2:
 *   failover        kill -9 of the head of a file chain to the first
 *                   successful write through libmayfly (the heartbeat
 *                   timeout is 1 s here), and
 *   re-replication  the surviving replica's copy of the partition to a new
 *                   member: bytes the directory counts as re-replicated,
 *                   over the time the chain was "copying" (polled every
 *                   2 ms), in MB/s.
 * --quick: 8 MiB blocks and an 8 MiB partition to copy (a smoke run);
 * otherwise 64 MiB blocks and a 64 MiB partition.
 */
#include <glib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "bench/bench.h"
#include "client/mayfly.h"
#include "common/ctl.h"

#define HOSTS 4
#define HB_MS "100"
#define HB_TIMEOUT_MS 1000

/* Creates path of kind with r replicas and `blocks` blocks. */
static int create_replicated(const char *dir, const char *path, mayfly_kind_t kind, int r,
                             int blocks) {
  mf_ctl_t *ctl;
  int rc = mf_ctl_open(dir, 10000, 2000, &ctl);
  if (rc != 0) return rc;
  char *parent = g_path_get_dirname(path);
  rc = CTL_CALL(ctl, mkdir, parent, TRUE, 0, 0);
  if (rc == MAYFLY_EEXIST) rc = 0;
  g_free(parent);
  if (rc == 0) {
    MayflyCreateOptions *co = g_object_new(MAYFLY_TYPE_CREATE_OPTIONS, NULL);
    co->blocks = blocks;
    co->replicas = r;
    co->__isset_replicas = TRUE;
    MayflyNodeInfo *ni = g_object_new(MAYFLY_TYPE_NODE_INFO, NULL);
    rc = CTL_CALL(ctl, create_ns, &ni, path, (MayflyNodeKind)kind, co, 0, 0);
    g_object_unref(ni);
    g_object_unref(co);
  }
  if (rc != 0) {
    fprintf(stderr, "mayfly-bench: create %s with %d replicas: %s\n", path, r,
            mayfly_last_error());
  }
  mf_ctl_close(ctl);
  return rc;
}

/* The first partition of path: its members' addresses (head first) into
 * addr[0..*n) and its state. Returns 0 or a MAYFLY_E* code. */
static int first_chain(const char *dir, const char *path, char addr[][64], int *n, char *state,
                       size_t slen) {
  mf_ctl_t *ctl;
  int rc = mf_ctl_open(dir, 10000, 2000, &ctl);
  if (rc != 0) return rc;
  MayflyLayout *lay = g_object_new(MAYFLY_TYPE_LAYOUT, NULL);
  rc = CTL_CALL(ctl, get_layout, &lay, path);
  *n = 0;
  state[0] = '\0';
  if (rc == 0 && lay->partitions->len > 0) {
    const MayflyPartition *p = g_ptr_array_index(lay->partitions, 0);
    if (p->__isset_chain && p->chain != NULL) {
      for (guint k = 0; k < p->chain->len && k < 5; k++) {
        const MayflyReplica *r = g_ptr_array_index(p->chain, k);
        snprintf(addr[k], 64, "%s", r->server_address);
        (*n)++;
      }
    } else {
      snprintf(addr[0], 64, "%s", p->server_address);
      *n = 1;
    }
    if (p->__isset_state && p->state != NULL) snprintf(state, slen, "%s", p->state);
  }
  g_object_unref(lay);
  mf_ctl_close(ctl);
  return rc;
}

static int64_t rereplicated_bytes(const char *dir) {
  mf_ctl_t *ctl;
  if (mf_ctl_open(dir, 10000, 2000, &ctl) != 0) return -1;
  MayflyStats *s = g_object_new(MAYFLY_TYPE_STATS, NULL);
  int rc = CTL_CALL(ctl, stats, &s);
  int64_t b = rc == 0 && s->__isset_rereplicated_bytes ? s->rereplicated_bytes : -1;
  g_object_unref(s);
  mf_ctl_close(ctl);
  return b;
}

static int remove_tree(const char *dir, const char *path) {
  mayfly_client_t *c = NULL;
  int rc = mayfly_connect(dir, NULL, &c);
  if (rc == 0) rc = mayfly_remove(c, path, 1);
  mayfly_disconnect(c);
  return rc;
}

typedef struct {
  pid_t pid[HOSTS];
  char host[HOSTS][16];
  char address[HOSTS][64]; /* "" until found in `mayfly servers` */
} servers_t;

/* Waits until the directory lists `want` servers up and records their
 * addresses by host. */
static int wait_servers(const char *dir, servers_t *s, int want) {
  mayfly_client_t *c = NULL;
  if (mayfly_connect(dir, NULL, &c) != 0) return -1;
  int up = 0;
  for (int i = 0; i < 1000 && up < want; i++) {
    mayfly_server_t *list = NULL;
    size_t n = 0;
    up = 0;
    if (mayfly_servers(c, &list, &n) == 0) {
      for (size_t k = 0; k < n; k++) {
        if (!list[k].up) continue;
        up++;
        for (int h = 0; h < HOSTS; h++) {
          size_t hl = strlen(s->host[h]);
          if (strncmp(list[k].address, s->host[h], hl) == 0 && list[k].address[hl] == ':') {
            snprintf(s->address[h], sizeof s->address[h], "%s", list[k].address);
          }
        }
      }
      mayfly_servers_free(list, n);
    }
    if (up < want) g_usleep(10000);
  }
  mayfly_disconnect(c);
  return up >= want ? 0 : -1;
}

/* Failover and re-replication with R = 2 on a file partition of fill bytes:
 * prints the figures; returns 0 or -1. */
static int failover(const bench_opts_t *o, const char *dir, servers_t *s, int64_t fill) {
  const char *path = "/bench-r/failover";
  if (create_replicated(dir, path, MAYFLY_KIND_FILE, 2, 1) != 0) return -1;
  mayfly_options_t co = {.timeout_ms = 30000, .token = o->token};
  mayfly_client_t *c = NULL;
  mayfly_ns_t *f = NULL;
  int rc = mayfly_connect(dir, &co, &c);
  if (rc == 0) rc = mayfly_mount(c, path, MAYFLY_KIND_FILE, NULL, &f);
  size_t chunk = 1 << 20;
  uint8_t *buf = g_malloc(chunk);
  memset(buf, 'r', chunk);
  for (int64_t off = 0; rc == 0 && off < fill; off += (int64_t)chunk) {
    rc = mayfly_file_write(f, (uint64_t)off, buf, (size_t)MIN((int64_t)chunk, fill - off));
  }
  char chain[5][64], state[16];
  int n = 0;
  if (rc == 0) rc = first_chain(dir, path, chain, &n, state, sizeof state);
  int victim = -1;
  for (int h = 0; rc == 0 && h < HOSTS && n > 0; h++) {
    if (strcmp(s->address[h], chain[0]) == 0) victim = h;
  }
  if (rc != 0 || n != 2 || victim < 0) {
    fprintf(stderr, "mayfly-bench: failover: no chain of 2 to fail (%s; %d members)\n",
            mayfly_strerror(rc), n);
    g_free(buf);
    mayfly_unmount(f);
    mayfly_disconnect(c);
    return -1;
  }
  int64_t bytes0 = rereplicated_bytes(dir);
  double t_kill = bench_now_us();
  kill(s->pid[victim], SIGKILL);
  waitpid(s->pid[victim], NULL, 0);
  s->pid[victim] = 0;
  rc = mayfly_file_write(f, 0, buf, 4096);
  double t_write = bench_now_us();
  /* Then the copy: "copying" from the first poll that says so to "ok". */
  double t_copy = 0, t_ok = 0, t_dropped = 0;
  while (rc == 0 && bench_now_us() - t_kill < 60e6) {
    if (first_chain(dir, path, chain, &n, state, sizeof state) == 0) {
      if (t_dropped == 0 && n == 1) t_dropped = bench_now_us();
      if (t_copy == 0 && strcmp(state, "copying") == 0) t_copy = bench_now_us();
      if (n == 2 && strcmp(state, "ok") == 0) {
        t_ok = bench_now_us();
        break;
      }
    }
    g_usleep(2000);
  }
  int64_t bytes = rereplicated_bytes(dir) - bytes0;
  /* A copy too quick for any poll to see it "copying": timed from the drop
   * instead (a longer span, so a lower bound on the rate). */
  const char *from = "copying";
  if (t_copy == 0 && t_dropped > 0) {
    t_copy = t_dropped;
    from = "degraded";
  }
  if (!o->json) {
    printf("\nfailover, R = 2 (heartbeat timeout %d ms): kill -9 of the head to the first "
           "successful write: %.0f ms%s%s\n",
           HB_TIMEOUT_MS, (t_write - t_kill) / 1e3, rc != 0 ? ": the write failed: " : "",
           rc != 0 ? mayfly_strerror(rc) : "");
    if (t_ok > 0) {
      double copy_s = t_copy > 0 ? (t_ok - t_copy) / 1e6 : 0;
      printf("re-replication of a %.0f MiB partition: R = 2 again %.0f ms after the kill; "
             "%lld bytes copied in %.0f ms (from the chain shown %s to ok) = %.0f MB/s\n",
             (double)fill / (1 << 20), (t_ok - t_kill) / 1e3, (long long)bytes, copy_s * 1e3,
             from, copy_s > 0 ? (double)bytes / copy_s / 1e6 : 0);
    } else {
      printf("re-replication: R = 2 not restored within 60 s\n");
    }
  } else {
    printf("{\"failover_ms\": %.1f, \"rereplication_bytes\": %lld, \"rereplication_ms\": %.1f}\n",
           (t_write - t_kill) / 1e3, (long long)bytes, t_ok > 0 && t_copy > 0 ? (t_ok - t_copy) / 1e3 : -1);
  }
  g_free(buf);
  mayfly_unmount(f);
  mayfly_disconnect(c);
  return rc == 0 && t_ok > 0 ? 0 : -1;
}

int bench_replicated(bench_opts_t *o) {
  if (o->directory != NULL) {
    fprintf(stderr, "mayfly-bench: replicated starts its own cluster of four hosts (drop "
                    "--directory)\n");
    return 2;
  }
  o->value_size = o->value_size > 0 ? o->value_size : 64;
  const char *block_size = o->quick ? "8MiB" : "64MiB";
  int64_t fill = o->quick ? 8 << 20 : 64 << 20;
  const char *dflags[] = {"--heartbeat-ms", HB_MS, "--heartbeat-timeout-ms", "1000", NULL};
  bench_dir_t d;
  if (bench_dir_spawn(o, dflags, 5, &d) != 0) return 1;
  servers_t s;
  memset(&s, 0, sizeof s);
  int failed = 0;
  for (int h = 0; h < HOSTS && !failed; h++) {
    snprintf(s.host[h], sizeof s.host[h], "127.0.0.%d", h + 2);
    const char *mflags[] = {"--host", s.host[h], NULL};
    s.pid[h] = bench_memserver_spawn(o, &d, 32, block_size, mflags);
    failed = s.pid[h] < 0;
  }
  if (!failed && wait_servers(d.address, &s, HOSTS) != 0) {
    fprintf(stderr, "mayfly-bench: the four memory servers did not all register\n");
    failed = 1;
  }
  int clients = o->clients > 0 ? o->clients : 16;
  int fclients = o->clients > 0 ? o->clients : 4;
  GArray *rows = g_array_new(FALSE, TRUE, sizeof(bench_row_t));
  for (int r = 1; r <= 3 && !failed; r++) {
    char kv[64], q[64], file[64], name[96];
    snprintf(kv, sizeof kv, "/bench-r/r%d/kv", r);
    snprintf(q, sizeof q, "/bench-r/r%d/q", r);
    snprintf(file, sizeof file, "/bench-r/r%d/file", r);
    failed = create_replicated(d.address, kv, MAYFLY_KIND_KV, r, 4) != 0 ||
             create_replicated(d.address, q, MAYFLY_KIND_QUEUE, r, 1) != 0 ||
             create_replicated(d.address, file, MAYFLY_KIND_FILE, r, 1) != 0;
    /* Rows labelled R must measure chains of R. */
    char chain[5][64], state[16];
    int n = 0;
    if (!failed && (first_chain(d.address, kv, chain, &n, state, sizeof state) != 0 || n != r)) {
      fprintf(stderr, "mayfly-bench: %s was made with %d members per partition, not %d\n", kv, n,
              r);
      failed = 1;
    }
    const int pipelines[2] = {1, 16};
    for (int p = 0; p < 2 && !failed; p++) {
      bench_opts_t po = *o;
      po.pipeline = pipelines[p];
      snprintf(name, sizeof name, "kv put %dB R=%d P%d", o->value_size, r, pipelines[p]);
      failed |= bench_data_run(&po, d.address, kv, MAYFLY_KIND_KV, 4, BENCH_KV_PUT, clients,
                               name, rows);
      snprintf(name, sizeof name, "kv get %dB R=%d P%d", o->value_size, r, pipelines[p]);
      failed |= bench_data_run(&po, d.address, kv, MAYFLY_KIND_KV, 4, BENCH_KV_GET, clients,
                               name, rows);
    }
    bench_opts_t p1 = *o;
    p1.pipeline = 1;
    snprintf(name, sizeof name, "queue push %dB R=%d", o->value_size, r);
    failed |= bench_data_run(&p1, d.address, q, MAYFLY_KIND_QUEUE, 1, BENCH_Q_PUSH, clients, name,
                             rows);
    snprintf(name, sizeof name, "file write 1MiB R=%d", r);
    failed |= bench_data_run(&p1, d.address, file, MAYFLY_KIND_FILE, 1, BENCH_FILE_WRITE,
                             fclients, name, rows);
    char sub[64];
    snprintf(sub, sizeof sub, "/bench-r/r%d", r);
    remove_tree(d.address, sub); /* the blocks back for the next R */
  }
  if (!failed) bench_print(o, "replicated", rows);
  /* Replicated rows against R = 1, the targets. */
  int said = 0;
  for (guint i = 0; !failed && !o->json && !o->csv && i < rows->len; i++) {
    const bench_row_t *row = &g_array_index(rows, bench_row_t, i);
    const char *at = strstr(row->name, "R=");
    if (at == NULL || at[2] == '1') continue;
    GString *base = g_string_new_len(row->name, at - row->name);
    g_string_append(base, "R=1");
    g_string_append(base, at + 3);
    for (guint k = 0; k < rows->len; k++) {
      const bench_row_t *b = &g_array_index(rows, bench_row_t, k);
      if (strcmp(b->name, base->str) == 0 && b->ops_per_s > 0) {
        printf("%s%-28s %5.1f%% of R = 1\n", said++ == 0 ? "\n" : "", row->name,
               100 * row->ops_per_s / b->ops_per_s);
      }
    }
    g_string_free(base, TRUE);
  }
  if (!failed) failed |= failover(o, d.address, &s, fill) != 0;
  for (guint i = 0; i < rows->len; i++) {
    g_free(g_array_index(rows, bench_row_t, i).name);
    g_free(g_array_index(rows, bench_row_t, i).unit);
  }
  g_array_free(rows, TRUE);
  for (int h = 0; h < HOSTS; h++) {
    if (s.pid[h] > 0) bench_proc_stop(s.pid[h]);
  }
  bench_dir_stop(&d);
  return failed ? 1 : 0;
}
