/*
 * The directory's control-plane server: a libuv TCP listener that serves many
 * connections at once by driving the generated Thrift processor itself.
 *
 * Per connection, bytes accumulate in a read buffer; each complete frame
 * (4-byte big-endian length + compact-protocol message) is size-checked
 * against the limit before any allocation, depth-checked (compact_scan.h),
 * handed to the processor through an in-memory frame transport, and its
 * reply appended to the connection's output. All replies produced by one
 * read go out in one write, in request order (the generated client does not
 * match seqids). A frame over the limit or a message that does not parse
 * closes that connection only.
 */
#ifndef MAYFLY_DIR_SERVER_H
#define MAYFLY_DIR_SERVER_H

#include <glib.h>
#include <stdint.h>
#include <uv.h>

#include "directory/directory.h"

typedef struct dir_server dir_server_t;

/* The request path without the sockets: one processor, its handler and an
 * in-memory frame transport, shared by every connection of the loop (and
 * driven directly by the fuzz target). */
typedef struct dir_rpc dir_rpc_t;

dir_rpc_t *dir_rpc_new(dir_t *d);
void dir_rpc_free(dir_rpc_t *r); /* accepts NULL */

/* Serves one frame's payload: checks it (compact_scan.h), runs the processor
 * and appends the reply frame, if any, to out. Returns 0, with why[0] set
 * when the call failed but a reply (an exception) was produced, or -1 when
 * the request is malformed and the connection should be closed. */
int dir_rpc_call(dir_rpc_t *r, const uint8_t *msg, uint32_t len, GByteArray *out, char *why,
                 size_t whylen);

/* Binds host:port (port 0 picks a free one) and starts accepting. On success
 * *out is the server and *bound_port the port in use. Returns 0 or a negative
 * libuv error code. */
int dir_server_start(dir_t *d, const char *host, int port, dir_server_t **out,
                     int *bound_port);

/* Stops accepting, closes every connection and frees the server once the
 * loop has run the close callbacks. */
void dir_server_stop(dir_server_t *s);

#endif /* MAYFLY_DIR_SERVER_H */
