/*
 * The memory server's check of a request's capability (prefix ms_capcheck):
 * with a cluster key, every data-plane request but PING carries the
 * directory's signed capability for its block in its capability area
 * (common/auth.h, docs/data-protocol.md), and this module decides whether
 * the capability grants the request. Pure apart from the per-connection
 * cache and the counters it is given; no I/O, no clock of its own (the
 * caller passes the wall clock), so unit tests and the fuzzer drive it
 * directly.
 *
 * What a request needs, by opcode:
 *   READ     BLOCK_STAT, FILE_READ, FILE_SIZE, Q_PEEK, Q_LEN, KV_GET, KV_EXISTS
 *   WRITE    FILE_WRITE, FILE_TRUNCATE, Q_PUSH, Q_POP, KV_PUT, KV_DEL
 *   MIGRATE  KV_MIGRATE, KV_MIGRATE_ABORT: the area is the capability and a
 *            frame MAC (MF_FRAME_AUTH_SIZE bytes, mf_frame_mac over the header
 *            as sent, the capability and the payload), and the slots
 *            [arg0, arg1) lie inside the capability's [lo, hi)
 *   STAT     SERVER_STAT, with a capability for block MF_CAP_ANY_BLOCK
 *   nothing  PING, and opcodes that do not exist (the handlers answer those
 *            as they always did)
 * Every other capability must name this server, the request's block index
 * and generation, and an expiry the wall clock has not reached.
 *
 * The cache: verifying a capability's MAC is one keyed BLAKE2b; a client
 * sends the same capability with every request for a block until its layout
 * is refreshed. So each connection keeps, per slot of a small direct-mapped
 * table indexed by block index, the bytes of the last capability whose MAC
 * verified and its decoded fields. A request whose capability bytes equal
 * the slot's (a constant-time compare of MF_CAP_SIZE bytes) skips the MAC;
 * every field check (server, block, generation, rights, expiry) is still
 * made on every request. Only capabilities whose MAC verified enter the
 * table, so a hit is as good as a verification. Migration frames are never
 * cached: their frame MAC covers each frame's own bytes.
 */
#ifndef MAYFLY_MS_CAPCHECK_H
#define MAYFLY_MS_CAPCHECK_H

#include <stddef.h>
#include <stdint.h>

#include "common/auth.h"
#include "common/wire.h"

/* Slots of a connection's cache (a power of two): a connection serving
 * requests for up to this many blocks with distinct low bits verifies each
 * capability once. */
#define MS_CAPCACHE_SLOTS 16

typedef struct ms_capcache_slot {
  uint8_t bytes[MF_CAP_SIZE]; /* a capability whose MAC verified */
  int valid;
  mf_cap_t cap; /* its fields */
} ms_capcache_slot_t;

/* A connection's cache: MS_CAPCACHE_SLOTS x about 160 bytes (2.5 KiB),
 * allocated on the connection's first checked request. */
typedef struct ms_capcache {
  ms_capcache_slot_t slot[MS_CAPCACHE_SLOTS];
} ms_capcache_t;

/* Counters a server keeps over all its connections. */
typedef struct ms_capcheck_stats {
  uint64_t verified; /* MACs computed (capability verifications) */
  uint64_t hits;     /* requests whose capability the cache already knew */
  uint64_t refused;  /* requests refused with MAYFLY_EPERM */
} ms_capcheck_stats_t;

/* The right a request of opcode op needs: an MF_RIGHT_* bit, 0 when it
 * needs none (PING), -1 for an opcode that does not exist. */
int ms_capcheck_right(uint8_t op);

/*
 * Checks the capability area of the request whose header h was decoded
 * from frame[0..flen) (wire_parse: the 56 header bytes as sent, then
 * h->cap_len capability bytes, then h->payload_len payload bytes) against
 * the cluster key, this server's id and the wall clock now_ms (ms since
 * the epoch). cache may be NULL (nothing remembered); stats may be NULL.
 * Returns 0 when the request may be served (or needs no capability), or
 * MAYFLY_EPERM when its capability is missing, malformed, forged, expired,
 * for another server, block or generation, or lacks the right (a migration
 * frame also: a bad frame MAC, slots outside the capability's). A frame
 * shorter than its header says is refused too.
 */
int ms_capcheck(const uint8_t key[MF_KEY_SIZE], uint32_t server_id, int64_t now_ms,
                ms_capcache_t *cache, ms_capcheck_stats_t *stats, const wire_hdr_t *h,
                const uint8_t *frame, size_t flen);

#endif /* MAYFLY_MS_CAPCHECK_H */
