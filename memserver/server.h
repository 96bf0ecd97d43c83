/*
 * The memory server's data plane: a libuv TCP server speaking the wire
 * protocol (common/wire.h) over the block store (store.h).
 *
 * Requests are pipelined: a connection may have many in flight, and each
 * reply carries its request's id. Frames are decoded as they arrive; every
 * length is checked before the frame is buffered. All replies produced by one
 * read go out in one write. A request naming a block generation the store
 * has not seen is parked (in order, per block) until the directory confirms
 * the owner; a queue pop that finds nothing waits up to its timeout for a
 * push. A bad magic or version, or a frame over the size limit, closes that
 * connection only; every other error is a reply.
 */
#ifndef MAYFLY_MS_SERVER_H
#define MAYFLY_MS_SERVER_H

#include <uv.h>

#include "memserver/store.h"

typedef struct ms_server ms_server_t;

typedef struct ms_server_config {
  const char *host;
  int port;
  const char *directory;
  const char *advertise; /* NULL: host:port */
  int64_t max_connections;
} ms_server_config_t;

/* Binds, starts serving and starts the control thread. Returns 0 or a
 * negative libuv error code; *bound_port is the port in use. */
int ms_server_start(uv_loop_t *loop, store_t *store, const ms_server_config_t *cfg,
                    ms_server_t **out, int *bound_port);

/* Closes the listener and every connection and stops the control thread;
 * run the loop afterwards so close callbacks free the rest. */
void ms_server_stop(ms_server_t *s);

#endif /* MAYFLY_MS_SERVER_H */
