/*
 * The memory server's data plane: a libuv TCP server speaking the wire
 * protocol (common/wire.h) over the block store (store.h).
 *
 * Requests are pipelined: a connection may have many in flight, and each
 * reply carries its request's id. Frames are decoded as they arrive; every
 * length is checked before the frame is buffered. All replies produced by one
 * read go out in one write. A read whose reply does not fit the connection's
 * reply backlog waits in the input buffer until the backlog drains. A request naming a block generation the store
 * has not seen is parked (in order, per block) until the directory confirms
 * the owner; a queue pop that finds nothing waits up to its timeout for a
 * push. A bad magic or version, or a frame over the size limit, closes that
 * connection only; every other error is a reply.
 */
#ifndef MAYFLY_MS_SERVER_H
#define MAYFLY_MS_SERVER_H

#include <uv.h>

#include "common/netserver.h"
#include "memserver/store.h"

typedef struct ms_server ms_server_t;

typedef struct ms_server_config {
  mf_net_config_t net;   /* host, port and the connection layer's bounds */
  const char *directory;
  const char *advertise; /* NULL: host:port */
  /* Bytes of parked and held request copies a connection, and the server,
   * may have before the connection's frames stay buffered, unserved, until
   * some are released (KV_MIGRATE frames are never held back). */
  uint64_t deferred_max, deferred_total_max;
  /* Waiting pops per connection and in total; past them a pop that would
   * wait answers MAYFLY_EAGAIN at once. */
  int64_t pops_max, pops_total_max;
  /* The cluster key (MF_KEY_SIZE bytes, copied; NULL: none): the control
   * connections pass the cluster handshake with it, and the data plane
   * checks capabilities against it. */
  const uint8_t *cluster_key;
  /* Called on the loop when the server cannot go on (the directory refused
   * its first registration's cluster handshake: a wrong key, or a key on
   * one side only); the caller stops the server and exits non-zero.
   * NULL: the server stops itself. */
  void (*on_fatal)(void *ud);
  void *fatal_ud;
  /* Replication (issue 12, chain.h): the --zone passed at registration
   * (NULL: none); per block at most dedup_max remembered write replies,
   * and at most dedup_bytes of their payloads in all (0: the defaults,
   * MS_DEDUP_MAX_DEFAULT and MS_DEDUP_BYTES_DEFAULT). */
  const char *zone;
  int64_t dedup_max;
  uint64_t dedup_bytes;
} ms_server_config_t;

/* Binds (IPv4 or IPv6), starts serving and starts the control thread.
 * Returns 0, or a MAYFLY_E* code with a message in why (as
 * mf_net_server_start); *bound_port is the port in use. */
int ms_server_start(uv_loop_t *loop, store_t *store, const ms_server_config_t *cfg,
                    ms_server_t **out, int *bound_port, char *why, size_t whylen);

/* Closes the listener and every connection and stops the control thread;
 * run the loop afterwards so close callbacks free the rest. */
void ms_server_stop(ms_server_t *s);

#endif /* MAYFLY_MS_SERVER_H */
