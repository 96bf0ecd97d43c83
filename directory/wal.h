/*
 * The directory's write-ahead log: records (namespaces/record.h encodings)
 * appended in batches, each batch one write and one fdatasync, and read back
 * in order at start. The file format is in docs/log-format.md.
 *
 * The log is an interface, dir_wal_t with a table of operations, so that a
 * replicated implementation (etcd, a later issue) can sit behind the same
 * "append a batch -> done; load -> records" shape. dir_wal_open() gives the
 * local one: one file. The directory's store (store.h) keeps a series of
 * such files (segments) beside its snapshots and drives the appends.
 *
 * Threads: dir_wal_load() runs once, before the first append. Appends may run
 * on any thread (a uv_queue_work worker) but one at a time: the caller
 * serialises them. dir_wal_stats() may be read only when no append runs (in
 * the after-work callback, say).
 */
#ifndef MAYFLY_DIR_WAL_H
#define MAYFLY_DIR_WAL_H

#include <stddef.h>
#include <stdint.h>

/* The file format version written in the header. */
#define DIR_WAL_VERSION 1
/* Header: 8 bytes of magic, u32 version, u32 CRC32C of the first 12 bytes. */
#define DIR_WAL_MAGIC "MAYFLYWL"
#define DIR_WAL_HEADER_SIZE 16
/* Frame header before each record: u32 length, u32 CRC32C. */
#define DIR_WAL_FRAME_HEADER 8
/* Largest record payload a frame may carry (NS_REC_SIZE_MAX). */
#define DIR_WAL_RECORD_MAX (64u << 20)

/* The zeros the directory's store keeps ahead of its log's last frame. */
#define DIR_WAL_PREALLOC (4 << 20)

/* dir_wal_load flags. */
#define DIR_WAL_CUT_CORRUPT 0x1u /* cut the log at a corrupt record (--recover-truncate) */

/* One encoded record of a batch (borrowed). */
typedef struct dir_wal_rec {
  const uint8_t *data;
  uint32_t len;
} dir_wal_rec_t;

/* Called by load for each valid record in order, with its payload and the
 * file offset of its frame. A nonzero return stops the load, which returns it. */
typedef int (*dir_wal_record_cb)(const uint8_t *data, uint32_t len, int64_t offset, void *ud);

/* What a load found. */
typedef struct dir_wal_load_result {
  int64_t records;       /* valid records handed to the callback */
  int64_t end;           /* file offset after the last valid record */
  int64_t dropped_bytes; /* cut off the end: a torn tail, or (with the flag) from a corrupt
                            record; zeros at the end are not counted */
  int64_t zero_bytes;    /* zeros at the end (preallocated, never written), cut too */
  int64_t corrupt_at;    /* offset of the corrupt record cut with DIR_WAL_CUT_CORRUPT, else -1 */
  int created;           /* the file was new or empty: a header was written */
} dir_wal_load_result_t;

/* Counters since open (appends only). */
typedef struct dir_wal_stats {
  int64_t records;
  int64_t bytes; /* framed bytes appended */
  int64_t syncs; /* fdatasync calls, one per batch */
} dir_wal_stats_t;

typedef struct dir_wal dir_wal_t;

typedef struct dir_wal_ops {
  int (*load)(dir_wal_t *w, unsigned flags, dir_wal_record_cb cb, void *ud,
              dir_wal_load_result_t *res, char *why, size_t whylen);
  int (*append)(dir_wal_t *w, const dir_wal_rec_t *recs, size_t n, char *why, size_t whylen);
  int (*write)(dir_wal_t *w, const dir_wal_rec_t *recs, size_t n, char *why, size_t whylen);
  int (*sync)(dir_wal_t *w, char *why, size_t whylen);
  void (*close)(dir_wal_t *w);
} dir_wal_ops_t;

/* Every implementation starts with this. */
struct dir_wal {
  const dir_wal_ops_t *ops;
  dir_wal_stats_t stats;
};

/* In every function below, `why` (may be NULL) receives a sentence for a
 * human when the call fails. */

/*
 * Opens (creating when needed) the local log file DIR/NAME, creating DIR
 * too. Reads nothing yet: call dir_wal_load() next. Returns 0 and *out, or
 * MAYFLY_EIO with the file and the system's reason in `why`. The directory's
 * store (store.h) keeps its log as a series of such files, one segment per
 * start and per snapshot.
 */
int dir_wal_open(const char *dir, const char *name, dir_wal_t **out, char *why, size_t whylen);

/*
 * Reads the log from the start, calling cb for each valid record, then makes
 * the file end after the last one so appends follow it. A new or empty file
 * gets its header (written, synced, and the directory synced). A torn tail (a
 * frame that runs past the end of the file, a frame whose checksum fails
 * with nothing but zeros after it, or a tail of zero bytes: appends
 * may preallocate zeros ahead, dir_wal_preallocate) is cut, its non-zero
 * bytes counted in res->dropped_bytes and the zeros in res->zero_bytes. A
 * record that fails its checksum or has an impossible length with other
 * than zeros after it is corruption: MAYFLY_EPROTO naming the file and offset, unless
 * flags has DIR_WAL_CUT_CORRUPT, which cuts the log there instead (reported
 * in res). A header with a wrong magic, version or checksum is MAYFLY_EPROTO
 * whatever the flags. I/O failures are MAYFLY_EIO. Returns cb's nonzero
 * return as it is. Call once, before any append.
 */
int dir_wal_load(dir_wal_t *w, unsigned flags, dir_wal_record_cb cb, void *ud,
                 dir_wal_load_result_t *res, char *why, size_t whylen);

/*
 * Appends n records (n >= 1, each 1..DIR_WAL_RECORD_MAX bytes) with one write
 * and one fdatasync; when it returns 0 they are on disk. On failure (MAYFLY_EIO
 * with the reason, MAYFLY_EINVAL for a bad record) none of the batch counts:
 * the file is cut back to where the batch began, and after an I/O failure the
 * log refuses every later append (MAYFLY_EIO), since what is on disk is no
 * longer known. Safe off the loop thread; one append at a time.
 */
int dir_wal_append(dir_wal_t *w, const dir_wal_rec_t *recs, size_t n, char *why, size_t whylen);

/*
 * Makes appends keep `bytes` of zeros written (and synced) ahead of the
 * last frame, a chunk at a time: a sync of frames written over them then
 * changes no file metadata, so it is cheaper and two can run at once. A
 * load cuts the zeros off again (res->zero_bytes). 0 (the default): none.
 * Call before the first append.
 */
void dir_wal_preallocate(dir_wal_t *w, int64_t bytes);

/*
 * dir_wal_append in two steps, so that one batch can be written while an
 * earlier one is being synced: dir_wal_write() appends the frames with one
 * write (calls one at a time, in order, like appends) and dir_wal_sync()
 * makes everything written before it began durable; a sync may run on
 * another thread at the same time as the next write. Errors as
 * dir_wal_append: after a failed write or sync the log takes no more.
 * The syncs counter of dir_wal_stats() counts dir_wal_append's only.
 */
int dir_wal_write(dir_wal_t *w, const dir_wal_rec_t *recs, size_t n, char *why, size_t whylen);
int dir_wal_sync(dir_wal_t *w, char *why, size_t whylen);

/* Closes the log and frees it (accepts NULL). */
void dir_wal_close(dir_wal_t *w);

/* The append counters (see the thread note above). */
const dir_wal_stats_t *dir_wal_stats(const dir_wal_t *w);

/*
 * The reader without I/O, over a whole log image in memory (the load and the
 * fuzz target use it): checks the header, calls cb per valid record, and
 * fills res (end, dropped_bytes for a torn tail; with DIR_WAL_CUT_CORRUPT,
 * corrupt_at). Errors as dir_wal_load, with `name` in the reasons. An image
 * shorter than the header that is a prefix of a valid header is a torn
 * creation: res->end is 0 and everything is dropped.
 */
int dir_wal_scan(const uint8_t *buf, size_t len, const char *name, unsigned flags,
                 dir_wal_record_cb cb, void *ud, dir_wal_load_result_t *res, char *why,
                 size_t whylen);

/* CRC32C (Castagnoli) of len bytes, continuing from crc (0 to start). */
uint32_t dir_wal_crc32c(uint32_t crc, const void *data, size_t len);

/* Writes the file header for the current version into out[DIR_WAL_HEADER_SIZE]. */
void dir_wal_header(uint8_t *out);

#endif /* MAYFLY_DIR_WAL_H */
