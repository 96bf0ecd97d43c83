/*
 * mayfly-callcost: a timing-free driver that makes a fixed number of
 * unpipelined single-key calls, one thread, one connection, so that the
 * per-call cost of a client can be counted from outside (strace -c,
 * valgrind --tool=callgrind: run it with two call counts and take the
 * difference). It starts no server:
 *   mayfly-callcost mayfly DIRECTORY_HOST:PORT get|put N
 *   mayfly-callcost redis PORT get|put N
 * Mayfly goes through libmayfly (namespace /callcost/kv), Redis through the
 * RESP client of bench/resp.c, as mayfly-bench compare --loader threads does.
 * Each does one put of the key before the N calls; values are 64 bytes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/resp.h"
#include "client/mayfly.h"

#define VSIZE 64

static int run_mayfly(const char *dir, int get, long n) {
  mayfly_client_t *c = NULL;
  mayfly_ns_t *ns = NULL;
  mayfly_create_options_t co = {.blocks = 1};
  if (mayfly_connect(dir, NULL, &c) != 0 ||
      mayfly_mount(c, "/callcost/kv", MAYFLY_KIND_KV, &co, &ns) != 0) {
    fprintf(stderr, "mayfly-callcost: cannot reach %s\n", dir);
    return 1;
  }
  char val[VSIZE];
  memset(val, 'v', sizeof val);
  int errors = mayfly_kv_put(ns, "key:0", 5, val, sizeof val) != 0;
  for (long i = 0; i < n; i++) {
    if (get) {
      void *v = NULL;
      size_t vl = 0;
      if (mayfly_kv_get(ns, "key:0", 5, &v, &vl) != 0 || vl != VSIZE) errors++;
      mayfly_free(v);
    } else if (mayfly_kv_put(ns, "key:0", 5, val, sizeof val) != 0) {
      errors++;
    }
  }
  mayfly_unmount(ns);
  mayfly_disconnect(c);
  printf("mayfly %s x%ld: %d errors\n", get ? "get" : "put", n, errors);
  return errors != 0;
}

static int run_redis(int port, int get, long n) {
  resp_t *r = resp_connect("127.0.0.1", port);
  if (r == NULL) {
    fprintf(stderr, "mayfly-callcost: cannot reach redis on port %d\n", port);
    return 1;
  }
  char val[VSIZE];
  memset(val, 'v', sizeof val);
  const char *set[3] = {"SET", "key:0", val};
  const size_t setl[3] = {3, 5, VSIZE};
  const char *getv[2] = {"GET", "key:0"};
  const size_t getl[2] = {3, 5};
  int errors = 0;
  for (long i = -1; i < n; i++) {
    if (get && i >= 0) {
      resp_cmd(r, 2, getv, getl);
    } else {
      resp_cmd(r, 3, set, setl);
    }
    const uint8_t *data;
    int64_t len;
    if (resp_flush(r) != 0 || resp_read(r, &data, &len) < 0) errors++;
  }
  resp_close(r);
  printf("redis %s x%ld: %d errors\n", get ? "get" : "put", n, errors);
  return errors != 0;
}

int main(int argc, char **argv) {
  if (argc != 5 || (strcmp(argv[1], "mayfly") != 0 && strcmp(argv[1], "redis") != 0) ||
      (strcmp(argv[3], "get") != 0 && strcmp(argv[3], "put") != 0)) {
    fprintf(stderr, "usage: mayfly-callcost mayfly|redis ADDRESS|PORT get|put N\n");
    return 2;
  }
  int get = strcmp(argv[3], "get") == 0;
  long n = atol(argv[4]);
  return strcmp(argv[1], "mayfly") == 0 ? run_mayfly(argv[2], get, n)
                                        : run_redis(atoi(argv[2]), get, n);
}
