/*
 * The record codec: an ns_record_t (namespaces/tree.h) as bytes and back, for
 * the directory's write-ahead log (directory/wal.h). No I/O.
 *
 * Version 1 encodes every field of the record, whatever its type, in a fixed
 * order (docs/log-format.md), so that a record decoded from the log applies
 * exactly as the one that was logged. The encoding is canonical: tags are
 * written sorted by key, and the decoder accepts only sorted, distinct keys,
 * so encode(decode(bytes)) == bytes for every accepted input of the current
 * version (a version 1 record re-encodes as version 2, which decodes to the
 * same record).
 *
 * The decoder treats its input as hostile (a log on disk may be damaged):
 * every length is checked against the bytes left and against the limits
 * below before anything is allocated, and bad input is MAYFLY_EPROTO with a
 * reason, never a crash.
 */
#ifndef MAYFLY_NS_RECORD_H
#define MAYFLY_NS_RECORD_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

#include "namespaces/tree.h"

/* The encoding version written in each record's first byte. Version 2
 * (replication) adds chains to partitions, the zone and replicas fields and
 * the REPLICA_BEGIN/END types; version 3 (directory HA) adds the request id
 * (req_client, req_seq) at the end. The decoder still reads versions 1 and 2
 * (without request ids), and the encoder writes 3. */
#define NS_REC_VERSION 3
#define NS_REC_VERSION_MIN 1

/* Limits checked by the encoder and the decoder. */
#define NS_REC_STR_MAX 65536          /* bytes of one string (paths are far shorter) */
#define NS_REC_PATHS_MAX (1 << 20)    /* paths of one RENEW */
#define NS_REC_SIZE_MAX (64u << 20)   /* bytes of one encoded record */

/* A decoded record and the storage its pointers borrow. Initialise with
 * ns_rec_buf_init, free with ns_rec_buf_clear; `rec` is valid in between. */
typedef struct ns_rec_buf {
  ns_record_t rec;
  char *path, *path2, *address, *zone;
  int version;            /* the encoding version the record was decoded from */
  GHashTable *tags;       /* char * -> char *, owned; NULL when none */
  ns_partition_t *parts;  /* owned */
  char **paths;           /* owned strings, owned array */
  size_t npaths;
} ns_rec_buf_t;

void ns_rec_buf_init(ns_rec_buf_t *b);
void ns_rec_buf_clear(ns_rec_buf_t *b); /* frees the contents; b can be decoded into again */

/*
 * Appends the encoding of rec to out. Returns 0, or MAYFLY_EINVAL (a type
 * or kind the codec does not know, a NULL among the paths, a string,
 * tag set or path list past the limits) or MAYFLY_ETOOBIG (the record would
 * exceed NS_REC_SIZE_MAX), in which case out is as it was.
 */
int ns_rec_encode(const ns_record_t *rec, GByteArray *out);

/*
 * Decodes exactly len bytes into b (cleared first). Returns 0, or
 * MAYFLY_EPROTO with a sentence in `why` (may be NULL): an unknown version
 * or type, a length past the input or a limit, a string containing NUL,
 * unsorted or repeated tag keys, an enum value out of range, or bytes left
 * over. On error b holds nothing (it is cleared).
 */
int ns_rec_decode(const uint8_t *data, size_t len, ns_rec_buf_t *b, char *why, size_t whylen);

#endif /* MAYFLY_NS_RECORD_H */
