/*
 * The directory's control-plane server: a libuv TCP listener that serves many
 * connections at once by driving the generated Thrift processor itself.
 *
 * Connections, buffers, back-pressure and timeouts are the shared layer's
 * (common/netserver.h); this file is the protocol on it. Each complete frame
 * (4-byte big-endian length + compact-protocol message) is size-checked
 * against the limit before any allocation, depth-checked and held to its
 * method's caps (compact_scan.h, limits.h), handed to the processor through
 * an in-memory frame transport, and its reply appended to the connection's
 * output. The reply backlog is checked before each frame (a reply is at most
 * --max-frame). All replies produced by one read go out together, in request
 * order (the generated client does not
 * match seqids). A frame over the limit or a message that does not parse
 * closes that connection only.
 *
 * Deferred requests. A watch with nothing to report yet is held without
 * blocking the loop: the handler says "defer" (dir_t.call), the reply it
 * produced is discarded, and the request's frame stays first in the
 * connection's input buffer (no copy) with a timer until an event is
 * appended to the watched log (the log wakes it) or the wait is over; then
 * the frame runs through the processor again (the last time with "answer
 * now"). Meanwhile the connection's later requests stay buffered,
 * unprocessed, so replies keep their order; reading goes on into the
 * buffer's free space only (to notice the peer closing).
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

/* dir_rpc_call flags: the caller can hold a deferred request and run it
 * again (DIR_RPC_CAN_DEFER); this run must answer (DIR_RPC_LAST_CHANCE). */
#define DIR_RPC_CAN_DEFER 0x1
#define DIR_RPC_LAST_CHANCE 0x2

/* Serves one frame's payload for the connection whose session is given: checks it (compact_scan.h), runs the processor
 * and appends the reply frame, if any, to out. Returns 0, with why[0] set
 * when the call failed but a reply (an exception) was produced; 1 when the
 * handler deferred the call (only with DIR_RPC_CAN_DEFER): nothing was
 * appended, and *wait_log / *wait_ms say what to wait for before running
 * the same frame again; or -1 when the request is malformed and the
 * connection should be closed. wait_log and wait_ms may be NULL when flags
 * do not allow deferral. */
int dir_rpc_call(dir_rpc_t *r, dir_session_t *session, const uint8_t *msg, uint32_t len,
                 int flags, GByteArray *out, dir_evlog_t **wait_log, int64_t *wait_ms,
                 char *why, size_t whylen);

/* Binds host:port (IPv4 or IPv6; port 0 picks a free one) and starts
 * accepting, with the bounds of d->cfg. On success *out is the server and
 * *bound_port the port in use. Returns 0, or a MAYFLY_E* code with a message
 * in why (as mf_net_server_start). */
int dir_server_start(dir_t *d, const char *host, int port, dir_server_t **out, int *bound_port,
                     char *why, size_t whylen);

/* Holds replies until the directory's etcd log (ha.h) has their records:
 * call once after dir_ha_start (the local store is bound at start). */
void dir_server_bind_ha(dir_server_t *s);

/* Stops accepting, closes every connection and frees the server once the
 * loop has run the close callbacks. */
void dir_server_stop(dir_server_t *s);

#endif /* MAYFLY_DIR_SERVER_H */
