/*
 * The event-driven loader of mayfly-bench compare: one thread drives N
 * connections with epoll, as redis-benchmark and memtier do, so the load
 * generator costs little CPU next to the server it measures (a thread per
 * client costs more than the server on two vCPUs). It speaks either
 * Mayfly's data protocol (common/wire.h) straight to one memory server, for
 * one kv partition, or RESP to a Redis server: kv put / SET and kv get /
 * GET, with the same connections, pipeline depth, value size and keys.
 */
#ifndef MAYFLY_BENCH_EVLOAD_H
#define MAYFLY_BENCH_EVLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "bench/bench.h"

typedef enum { EVL_MAYFLY, EVL_REDIS } evl_proto_t;

typedef struct evl_spec {
  evl_proto_t proto;
  char host[64];
  int port;
  /* Mayfly: the partition every key goes to (it holds all the slots). */
  uint32_t block_index;
  uint64_t generation;
  int put;      /* 1: kv put / SET; 0: kv get / GET (its keys are put first) */
  int conns;    /* connections */
  int pipeline; /* requests sent at once per connection (1..64) */
  size_t vsize;
  int keys;     /* keys per connection: "k:CONN:J" (or "big:CONN:J" for 1 MiB+) */
  int seconds;
  long long batches; /* > 0: each connection sends this many batches, whatever the time */
} evl_spec_t;

typedef struct evl_result {
  long long ops;
  int errors;       /* connections that failed (connect, a bad reply, a lost stream) */
  double t0, t1;    /* the measured phase, bench_now_us() */
  bench_lat_t lat;  /* per request, us: its batch's send to its last reply */
} evl_result_t;

/* Opens s->conns connections, fills the keys for a get run, then keeps every
 * connection busy for s->seconds: it sends a batch of s->pipeline requests,
 * waits for their replies and sends the next, until the time is up (batches
 * under way are finished and counted) or, with s->batches, until each has
 * sent that many. Fills *r (free r->lat with
 * bench_lat_free). Returns 0, or -1 when any connection failed (r->errors). */
int evl_run(const evl_spec_t *s, evl_result_t *r);

/* The key of request j on connection conn, as both loaders name it. */
char *evl_key(char *buf, size_t len, size_t vsize, int conn, long long j, int keys);

#endif /* MAYFLY_BENCH_EVLOAD_H */
