/*
 * mayfly-bench memory: what one kv entry costs in memory, Mayfly and Redis in
 * the same run. A throwaway directory and one memory server, and a throwaway
 * redis-server (127.0.0.1, no persistence), get the same N keys of 16 bytes
 * with values of --value-size bytes (default 64): Mayfly through
 * mayfly_kv_put_batch, Redis through pipelined SETs. Before and after the
 * load the bench reads each server's own allocator figures (Mayfly:
 * WIRE_OP_SERVER_STAT, jemalloc's stats.allocated in a release build; Redis:
 * INFO memory's used_memory) and each process's resident set from /proc, and
 * prints the growth divided by N. It also prints what the memory server
 * charges its blocks per entry, which must be at least what the allocator
 * says an entry takes for the memory bound of the README to hold.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/resp.h"
#include "client/mayfly.h"
#include "common/conn.h"
#include "common/wire.h"

#define KEY_LEN 16
#define BATCH 256
#define QUICK_ENTRIES 20000
#define FULL_ENTRIES 1000000

/* The resident set of a process in bytes, or 0. */
static uint64_t rss_of(pid_t pid) {
  char path[64], *txt = NULL;
  snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
  if (!g_file_get_contents(path, &txt, NULL, NULL)) return 0;
  unsigned long long size = 0, resident = 0;
  int n = sscanf(txt, "%llu %llu", &size, &resident);
  g_free(txt);
  return n == 2 ? resident * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
}

static void key_of(char out[KEY_LEN + 1], long i) {
  snprintf(out, KEY_LEN + 1, "key:%012ld", i);
}

static void value_of(uint8_t *v, size_t len, long i) {
  for (size_t k = 0; k < len; k++) v[k] = (uint8_t)('a' + (i * 31 + (long)k) % 26);
}

/* --- Mayfly --- */

typedef struct {
  wire_server_stat_t st;
  uint64_t rss;
} mf_sample_t;

static const char *source_name(uint64_t source) {
  switch (source) {
    case WIRE_ALLOC_STATS_JEMALLOC:
      return "jemalloc";
    case WIRE_ALLOC_STATS_GLIBC:
      return "glibc";
    case WIRE_ALLOC_STATS_SANITIZER:
      return "sanitizer";
    default:
      return "none";
  }
}

static int server_stat(mf_pool_t *pool, const char *address, pid_t pid, mf_sample_t *out) {
  mf_call_t call;
  memset(&call, 0, sizeof call);
  call.req.opcode = WIRE_OP_SERVER_STAT;
  call.reply_max = 4096; /* six u64 fields today; room for more */
  int64_t deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
  mf_call_start(pool, address, &call, deadline);
  int rc = mf_call_wait(&call, deadline);
  if (rc == 0) rc = wire_server_stat_get(call.payload, call.plen, &out->st);
  g_free(call.payload);
  out->rss = rss_of(pid);
  return rc;
}

/* Loads n entries; returns 0 or the first error. */
static int mayfly_load(mayfly_ns_t *ns, long n, size_t vsize) {
  static char kb[BATCH][KEY_LEN + 1];
  const void *keys[BATCH], *vals[BATCH];
  size_t klens[BATCH], vlens[BATCH];
  int rcs[BATCH];
  uint8_t *vb = g_malloc((size_t)BATCH * vsize);
  int rc = 0;
  for (long base = 0; base < n && rc == 0; base += BATCH) {
    size_t d = (size_t)MIN((long)BATCH, n - base);
    for (size_t i = 0; i < d; i++) {
      key_of(kb[i], base + (long)i);
      value_of(vb + i * vsize, vsize, base + (long)i);
      keys[i] = kb[i];
      klens[i] = KEY_LEN;
      vals[i] = vb + i * vsize;
      vlens[i] = vsize;
    }
    rc = mayfly_kv_put_batch(ns, d, keys, klens, vals, vlens, rcs);
  }
  g_free(vb);
  return rc;
}

typedef struct {
  int ok;
  const char *source;
  double allocated, rss, charged; /* bytes per entry */
  uint64_t entries;
} mf_result_t;

static mf_result_t measure_mayfly(const bench_opts_t *o, long n, size_t vsize) {
  mf_result_t r = {0};
  bench_dir_t d;
  if (bench_dir_start(o, &d) != 0) return r;
  pid_t ms = bench_memserver_start(o, &d, 64, "64MiB");
  mayfly_client_t *c = NULL;
  mayfly_ns_t *ns = NULL;
  mayfly_server_t *servers = NULL;
  size_t nservers = 0;
  mf_pool_t *pool = mf_pool_new(2000);
  mayfly_create_options_t co = {.blocks = 4};
  if (ms < 0 || mayfly_connect(d.address, NULL, &c) != 0 ||
      mayfly_mount(c, "/bench/memory", MAYFLY_KIND_KV, &co, &ns) != 0 ||
      mayfly_servers(c, &servers, &nservers) != 0 || nservers != 1) {
    fprintf(stderr, "mayfly-bench: cannot set up Mayfly: %s\n", mayfly_last_error());
    goto out;
  }
  /* The baseline has the namespace and a connection already: what grows
   * after it is the entries. */
  mf_sample_t before, after;
  if (server_stat(pool, servers[0].address, ms, &before) != 0) goto out;
  int rc = mayfly_load(ns, n, vsize);
  if (rc != 0) {
    fprintf(stderr, "mayfly-bench: loading Mayfly: %s\n", mayfly_strerror(rc));
    goto out;
  }
  /* Splits started by the load may still be moving entries (a set-aside
   * table costs memory until the commit): wait until the figures settle. */
  uint64_t last = 0;
  for (int i = 0; i < 100; i++) {
    g_usleep(200000);
    if (server_stat(pool, servers[0].address, ms, &after) != 0) goto out;
    if (after.st.kv_entries == (uint64_t)n && after.st.allocated == last) break;
    last = after.st.allocated;
  }
  r.ok = after.st.kv_entries == (uint64_t)n;
  if (!r.ok) {
    fprintf(stderr, "mayfly-bench: the memory server holds %llu entries, not %ld\n",
            (unsigned long long)after.st.kv_entries, n);
  }
  r.source = source_name(after.st.source);
  r.entries = after.st.kv_entries;
  r.allocated = ((double)after.st.allocated - (double)before.st.allocated) / (double)n;
  r.rss = ((double)after.rss - (double)before.rss) / (double)n;
  r.charged = ((double)after.st.charged - (double)before.st.charged) / (double)n;
out:
  mf_pool_free(pool);
  mayfly_servers_free(servers, nservers);
  if (ns != NULL) mayfly_unmount(ns);
  if (c != NULL) {
    mayfly_remove(c, "/bench/memory", 0);
    mayfly_disconnect(c);
  }
  bench_proc_stop(ms);
  bench_dir_stop(&d);
  return r;
}

/* --- Redis --- */

/* INFO memory's used_memory, or -1. */
static int64_t redis_used_memory(resp_t *r) {
  const char *argv[] = {"INFO", "memory"};
  size_t lens[] = {4, 6};
  resp_cmd(r, 2, argv, lens);
  const uint8_t *data;
  int64_t len;
  if (resp_flush(r) != 0 || resp_read(r, &data, &len) != '$' || len < 0) return -1;
  char *txt = g_strndup((const char *)data, (gsize)len);
  const char *at = strstr(txt, "used_memory:");
  int64_t used = at ? g_ascii_strtoll(at + strlen("used_memory:"), NULL, 10) : -1;
  g_free(txt);
  return used;
}

typedef struct {
  int ok;
  double used_memory, rss; /* bytes per key */
} rd_result_t;

static rd_result_t measure_redis(long n, size_t vsize) {
  rd_result_t out = {0};
  int port = bench_free_port();
  pid_t pid = bench_redis_start(port);
  if (pid < 0) {
    fprintf(stderr, "mayfly-bench: cannot start redis-server (install the Debian package "
                    "redis-server)\n");
    return out;
  }
  resp_t *r = resp_connect("127.0.0.1", port);
  uint8_t *vb = g_malloc(vsize);
  int64_t u0 = r ? redis_used_memory(r) : -1;
  uint64_t rss0 = rss_of(pid);
  int bad = r == NULL || u0 < 0;
  for (long base = 0; base < n && !bad; base += BATCH) {
    long d = MIN((long)BATCH, n - base);
    char key[KEY_LEN + 1];
    for (long i = 0; i < d; i++) {
      key_of(key, base + i);
      value_of(vb, vsize, base + i);
      const char *argv[] = {"SET", key, (const char *)vb};
      size_t lens[] = {3, KEY_LEN, vsize};
      resp_cmd(r, 3, argv, lens);
    }
    if (resp_flush(r) != 0) bad = 1;
    for (long i = 0; i < d && !bad; i++) {
      const uint8_t *data;
      int64_t len;
      if (resp_read(r, &data, &len) != '+') bad = 1;
    }
  }
  int64_t u1 = bad ? -1 : redis_used_memory(r);
  uint64_t rss1 = rss_of(pid);
  if (!bad && u1 >= 0) {
    out.ok = 1;
    out.used_memory = (double)(u1 - u0) / (double)n;
    out.rss = ((double)rss1 - (double)rss0) / (double)n;
  } else {
    fprintf(stderr, "mayfly-bench: loading Redis failed\n");
  }
  g_free(vb);
  resp_close(r);
  kill(pid, SIGTERM);
  waitpid(pid, NULL, 0);
  return out;
}

int bench_memory(bench_opts_t *o) {
  long n = o->ops > 0 ? o->ops : o->quick ? QUICK_ENTRIES : FULL_ENTRIES;
  size_t vsize = o->value_size > 0 ? (size_t)o->value_size : 64;
  mf_result_t m = measure_mayfly(o, n, vsize);
  rd_result_t r = measure_redis(n, vsize);
  double ra = r.used_memory > 0 ? m.allocated / r.used_memory : 0;
  double rr = r.rss > 0 ? m.rss / r.rss : 0;
  double payload = KEY_LEN + (double)vsize;
  /* What the server charges each entry, computed as clients do. */
  unsigned long long formula = (unsigned long long)wire_kv_charge(KEY_LEN, vsize);
  char machine[256];
  bench_machine(machine, sizeof machine);
  if (o->json) {
    printf("{\"bench\": \"memory\", \"machine\": \"%s\", \"entries\": %ld, \"key_size\": %d, "
           "\"value_size\": %zu,\n  \"mayfly\": {\"ok\": %s, \"allocator\": \"%s\", "
           "\"allocated_per_entry\": %.1f, \"rss_per_entry\": %.1f, \"charged_per_entry\": %.1f, "
           "\"overhead_per_entry\": %.1f, \"charge_formula\": %llu, \"charge_covers\": %s},\n"
           "  \"redis\": {\"ok\": %s, \"used_memory_per_key\": %.1f, \"rss_per_key\": %.1f},\n"
           "  \"ratio_allocated\": %.3f, \"ratio_rss\": %.3f}\n",
           machine, n, KEY_LEN, vsize, m.ok ? "true" : "false", m.source ? m.source : "none",
           m.allocated, m.rss, m.charged, m.allocated - payload, formula,
           m.ok && m.charged >= m.allocated ? "true" : "false", r.ok ? "true" : "false", r.used_memory, r.rss, ra, rr);
  } else if (o->csv) {
    printf("bench,system,entries,key_size,value_size,allocator,allocated_per_entry,"
           "rss_per_entry,charged_per_entry\n");
    printf("memory,mayfly,%ld,%d,%zu,%s,%.1f,%.1f,%.1f\n", n, KEY_LEN, vsize,
           m.source ? m.source : "none", m.allocated, m.rss, m.charged);
    printf("memory,redis,%ld,%d,%zu,redis used_memory,%.1f,%.1f,\n", n, KEY_LEN, vsize,
           r.used_memory, r.rss);
  } else {
    printf("mayfly-bench memory — %s\n", machine);
    printf("%ld entries of a %d-byte key and a %zu-byte value (%.0f payload bytes each); "
           "growth over the load divided by the entries\n\n",
           n, KEY_LEN, vsize, payload);
    printf("%-8s %-22s %12s %10s %10s\n", "system", "allocator figure", "allocator/e", "RSS/e",
           "charged/e");
    printf("%-8s %-22s %10.1f B %8.1f B %8.1f B\n", "mayfly",
           m.source ? m.source : "none", m.allocated, m.rss, m.charged);
    printf("%-8s %-22s %10.1f B %8.1f B %10s\n", "redis", "INFO used_memory", r.used_memory,
           r.rss, "-");
    printf("mayfly/redis: %.2fx allocator, %.2fx RSS; Mayfly's overhead over the payload "
           "%.1f B per entry; charged %llu B per entry (wire_kv_charge), %s what is allocated\n",
           ra, rr, m.allocated - payload, formula,
           !m.ok ? "not measured against" : m.charged >= m.allocated ? "at least" : "LESS THAN");
  }
  return m.ok && r.ok ? 0 : 1;
}
