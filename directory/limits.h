/*
 * What a request to the directory may hold: one declarative table of the
 * Directory service's methods (common/control.thrift) with, for each
 * argument, its type and caps (the most elements of a list or map, the
 * longest string, and the same for the fields of structs inside).
 *
 * The server hands the table to the compact scan (common/compact_scan.h),
 * which checks every frame against it before Thrift decodes anything: a
 * frame over a method's caps closes the connection, so no handler ever sees
 * more than the table allows, and what a request costs decoded stays a
 * small multiple of its size. The caps are the limits the handlers and the
 * namespace tree enforce (DIR_EVENT_KEY_MAX key characters,
 * DIR_PUBLISH_MAX_EVENTS events, DIR_RENEW_MAX_PATHS paths, ...), and twice
 * those for what a person types (paths, tags: see limits.c), so that a
 * value a little too long still gets its handler's error naming the rule.
 * A request within the caps is decoded and judged by its handler.
 */
#ifndef MAYFLY_DIR_LIMITS_H
#define MAYFLY_DIR_LIMITS_H

#include "common/compact_scan.h"

/* Most paths in one renew call. */
#define DIR_RENEW_MAX_PATHS 100000
/* Longest host of a memory server's address, and the address itself
 * ("[" host "]:" port). */
#define DIR_HOST_MAX 255
#define DIR_ADDRESS_MAX (DIR_HOST_MAX + 8)
/* The longest --zone name of a memory server. */
#define DIR_ZONE_MAX 64
/* Longest tenant token a login may carry. */
#define DIR_TOKEN_MAX 1024

/* The Directory service's methods and their caps, ended by name NULL. */
extern const mf_compact_method_t dir_limits[];

#endif /* MAYFLY_DIR_LIMITS_H */
