/*
 * The local write-ahead log (wal.h): one file, a header, then frames of
 * u32 length, u32 CRC32C (of the length bytes and the payload), payload.
 *
 * CRC32C is computed here with one 256-entry table, built once: Debian has
 * no small C library for it that we already depend on (GLib and zlib offer
 * only the plain CRC-32), and byte-at-a-time is far faster than the fdatasync
 * each batch pays anyway.
 */
#include "directory/wal.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/check.h"
#include "common/error.h"
#include "directory/disk.h"

/* ---- CRC32C ---------------------------------------------------------------- */

static uint32_t crc_table[256];

static gpointer build_crc_table(gpointer unused) {
  (void)unused;
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    crc_table[i] = c;
  }
  return NULL;
}

uint32_t dir_wal_crc32c(uint32_t crc, const void *data, size_t len) {
  static GOnce once = G_ONCE_INIT;
  g_once(&once, build_crc_table, NULL);
  const uint8_t *p = data;
  crc = ~crc;
  for (size_t i = 0; i < len; i++) crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

/* ---- format ---------------------------------------------------------------- */

/* Writes a reason into why, which may be NULL. */



void dir_wal_header(uint8_t *out) {
  memcpy(out, DIR_WAL_MAGIC, 8);
  dir_disk_put_u32(out + 8, DIR_WAL_VERSION);
  dir_disk_put_u32(out + 12, dir_wal_crc32c(0, out, 12));
}

/* The checksum of a frame: its length bytes, then its payload. */
static uint32_t frame_crc(const uint8_t *len_bytes, const uint8_t *payload, uint32_t len) {
  return dir_wal_crc32c(dir_wal_crc32c(0, len_bytes, 4), payload, len);
}

static int all_zero(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (p[i] != 0) return 0;
  }
  return 1;
}

int dir_wal_scan(const uint8_t *buf, size_t len, const char *name, unsigned flags,
                 dir_wal_record_cb cb, void *ud, dir_wal_load_result_t *res, char *why,
                 size_t whylen) {
  memset(res, 0, sizeof *res);
  res->corrupt_at = -1;
  uint8_t hdr[DIR_WAL_HEADER_SIZE];
  dir_wal_header(hdr);
  if (len < DIR_WAL_HEADER_SIZE) {
    if (len > 0 && memcmp(buf, hdr, len) != 0) {
      dir_disk_say(why, whylen, "%s: %zu bytes that are not the start of a Mayfly log", name, len);
      return MAYFLY_EPROTO;
    }
    res->dropped_bytes = (int64_t)len; /* a creation torn before its header was whole */
    return 0;
  }
  if (memcmp(buf, DIR_WAL_MAGIC, 8) != 0) {
    dir_disk_say(why, whylen, "%s: not a Mayfly log (bad magic)", name);
    return MAYFLY_EPROTO;
  }
  if (dir_disk_get_u32(buf + 12) != dir_wal_crc32c(0, buf, 12)) {
    dir_disk_say(why, whylen, "%s: the header's checksum fails", name);
    return MAYFLY_EPROTO;
  }
  uint32_t version = dir_disk_get_u32(buf + 8);
  if (version != DIR_WAL_VERSION) {
    dir_disk_say(why, whylen, "%s: log format version %u, this build reads version %d only", name,
             version, DIR_WAL_VERSION);
    return MAYFLY_EPROTO;
  }
  size_t off = DIR_WAL_HEADER_SIZE;
  while (off < len) {
    size_t left = len - off;
    const char *bad = NULL;
    int torn = 0;
    size_t torn_len = left; /* bytes of the torn frame, when it is one */
    uint32_t rlen = 0;
    if (left < DIR_WAL_FRAME_HEADER) {
      torn = 1;
    } else {
      rlen = dir_disk_get_u32(buf + off);
      if (rlen == 0 || rlen > DIR_WAL_RECORD_MAX) {
        bad = "impossible record length";
      } else if (rlen > left - DIR_WAL_FRAME_HEADER) {
        torn = 1;
      } else if (frame_crc(buf + off, buf + off + DIR_WAL_FRAME_HEADER, rlen) !=
                 dir_disk_get_u32(buf + off + 4)) {
        bad = "checksum mismatch";
        /* The last frame written (only zeros, or nothing, after it): a write
         * torn inside it. */
        size_t after = off + DIR_WAL_FRAME_HEADER + rlen;
        if (all_zero(buf + after, len - after)) {
          torn = 1;
          torn_len = DIR_WAL_FRAME_HEADER + rlen;
        }
      }
    }
    /* The rest of the file zero: space the file system allocated but a crash
     * kept from being written. */
    if (!torn && bad != NULL && all_zero(buf + off, left)) torn = 1;
    if (torn) {
      /* The frame torn inside, and after it only zeros (preallocated
       * space, nothing lost); or nothing but zeros from here. */
      if (all_zero(buf + off, left)) {
        res->zero_bytes = (int64_t)left;
      } else {
        res->dropped_bytes = (int64_t)MIN(left, torn_len);
        res->zero_bytes = (int64_t)left - res->dropped_bytes;
      }
      break;
    }
    if (bad != NULL && (flags & DIR_WAL_CUT_CORRUPT)) {
      res->corrupt_at = (int64_t)off;
      res->dropped_bytes = (int64_t)left;
      break;
    }
    if (bad != NULL) {
      dir_disk_say(why, whylen,
               "%s: corrupt record at offset %zu (%s) with %zu more bytes after it; "
               "refusing to continue (cutting the log there would lose them)",
               name, off, bad, left);
      return MAYFLY_EPROTO;
    }
    if (cb != NULL) {
      int rc = cb(buf + off + DIR_WAL_FRAME_HEADER, rlen, (int64_t)off, ud);
      if (rc != 0) {
        res->end = (int64_t)off;
        return rc;
      }
    }
    res->records++;
    off += DIR_WAL_FRAME_HEADER + rlen;
  }
  res->end = (int64_t)off;
  return 0;
}

/* ---- the local implementation ---------------------------------------------- */

typedef struct {
  dir_wal_t base;
  char *dir;
  char *path;
  int fd;
  int loaded;
  int broken;  /* an append failed: the end of the file is unknown (atomic) */
  int syncs;   /* fdatasync calls that succeeded (atomic) */
  int64_t end; /* where the next frame goes */
  int64_t zeroed; /* the file holds zeros from end up to here (preallocated) */
  int64_t prealloc; /* zeros to keep ahead (dir_wal_preallocate), 0: none */
} local_wal_t;

static int io_error(char *why, size_t whylen, const char *what, const char *path, int err) {
  dir_disk_say(why, whylen, "%s %s: %s", what, path, g_strerror(err));
  return MAYFLY_EIO;
}

/* Writes all of len bytes at off (pwrite can return short). */


static int local_load(dir_wal_t *base, unsigned flags, dir_wal_record_cb cb, void *ud,
                      dir_wal_load_result_t *res, char *why, size_t whylen) {
  local_wal_t *w = (local_wal_t *)base;
  MF_CHECK(!w->loaded);
  struct stat st;
  if (fstat(w->fd, &st) != 0) return io_error(why, whylen, "cannot stat", w->path, errno);
  size_t len = (size_t)st.st_size;
  uint8_t *buf = g_malloc(len > 0 ? len : 1);
  size_t got = 0;
  while (got < len) {
    ssize_t n = pread(w->fd, buf + got, len - got, (off_t)got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = n < 0 ? errno : EIO;
      g_free(buf);
      return io_error(why, whylen, "cannot read", w->path, err);
    }
    got += (size_t)n;
  }
  int rc = dir_wal_scan(buf, len, w->path, flags, cb, ud, res, why, whylen);
  g_free(buf);
  if (rc != 0) return rc;
  if (res->end == 0) {
    /* New, empty, or torn before its header was whole: start it afresh. */
    uint8_t hdr[DIR_WAL_HEADER_SIZE];
    dir_wal_header(hdr);
    int err = ftruncate(w->fd, 0) != 0 ? errno : dir_disk_write_all(w->fd, hdr, sizeof hdr, 0);
    if (err == 0 && fdatasync(w->fd) != 0) err = errno;
    if (err == 0) err = dir_disk_sync_dir(w->dir);
    if (err != 0) return io_error(why, whylen, "cannot write the header of", w->path, err);
    res->created = 1;
    res->end = DIR_WAL_HEADER_SIZE;
  } else if ((size_t)res->end < len) {
    if (ftruncate(w->fd, (off_t)res->end) != 0 || fdatasync(w->fd) != 0) {
      return io_error(why, whylen, "cannot cut the tail of", w->path, errno);
    }
  }
  w->end = w->zeroed = res->end;
  w->loaded = 1;
  return 0;
}

static int local_write(dir_wal_t *base, const dir_wal_rec_t *recs, size_t n, char *why,
                       size_t whylen) {
  local_wal_t *w = (local_wal_t *)base;
  MF_CHECK(w->loaded);
  if (g_atomic_int_get(&w->broken)) {
    dir_disk_say(why, whylen, "%s: an earlier append failed; the log takes no more", w->path);
    return MAYFLY_EIO;
  }
  if (n == 0) {
    dir_disk_say(why, whylen, "an empty batch");
    return MAYFLY_EINVAL;
  }
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    if (recs[i].len == 0 || recs[i].len > DIR_WAL_RECORD_MAX) {
      dir_disk_say(why, whylen, "record %zu of the batch has %u bytes", i, recs[i].len);
      return MAYFLY_EINVAL;
    }
    total += DIR_WAL_FRAME_HEADER + recs[i].len;
  }
  uint8_t *buf = g_malloc(total);
  uint8_t *p = buf;
  for (size_t i = 0; i < n; i++) {
    dir_disk_put_u32(p, recs[i].len);
    memcpy(p + DIR_WAL_FRAME_HEADER, recs[i].data, recs[i].len);
    dir_disk_put_u32(p + 4, frame_crc(p, p + DIR_WAL_FRAME_HEADER, recs[i].len));
    p += DIR_WAL_FRAME_HEADER + recs[i].len;
  }
  int err = 0;
  if (w->prealloc > 0 && w->end + (int64_t)total > w->zeroed) {
    /* Zeros ahead of the frames, synced once: later syncs of frames written
     * over them change no file metadata (size, extents), which is what makes
     * an fdatasync cheap, and lets two run at once. */
    static const uint8_t zeros[1 << 20];
    int64_t to = w->end + (int64_t)total + w->prealloc;
    for (int64_t at = MAX(w->zeroed, w->end); err == 0 && at < to; at += (int64_t)sizeof zeros) {
      err = dir_disk_write_all(w->fd, zeros, sizeof zeros, at);
    }
    if (err == 0 && fdatasync(w->fd) != 0) err = errno;
    if (err == 0) w->zeroed = to;
  }
  if (err == 0) err = dir_disk_write_all(w->fd, buf, total, w->end);
  g_free(buf);
  if (err != 0) {
    /* Best effort: take the batch back off so a restart does not find half
     * of it; the log refuses further appends either way. */
    if (ftruncate(w->fd, (off_t)w->end) != 0) { /* nothing more to do */
    }
    g_atomic_int_set(&w->broken, 1);
    return io_error(why, whylen, "cannot append to", w->path, err);
  }
  w->end += (int64_t)total;
  w->base.stats.records += (int64_t)n;
  w->base.stats.bytes += (int64_t)total;
  return 0;
}

static int local_sync(dir_wal_t *base, char *why, size_t whylen) {
  local_wal_t *w = (local_wal_t *)base;
  if (fdatasync(w->fd) != 0) {
    int err = errno;
    /* What reached the disk is unknown now (the kernel may have dropped
     * the pages it failed to write): no append may follow. */
    g_atomic_int_set(&w->broken, 1);
    return io_error(why, whylen, "cannot sync", w->path, err);
  }
  g_atomic_int_inc(&w->syncs);
  return 0;
}

static int local_append(dir_wal_t *base, const dir_wal_rec_t *recs, size_t n, char *why,
                        size_t whylen) {
  int rc = local_write(base, recs, n, why, whylen);
  if (rc == 0) rc = local_sync(base, why, whylen);
  if (rc == 0) base->stats.syncs = g_atomic_int_get(&((local_wal_t *)base)->syncs);
  return rc;
}

static void local_close(dir_wal_t *base) {
  local_wal_t *w = (local_wal_t *)base;
  if (w->fd >= 0) close(w->fd);
  g_free(w->path);
  g_free(w->dir);
  g_free(w);
}

static const dir_wal_ops_t local_ops = {
    .load = local_load,
    .append = local_append,
    .write = local_write,
    .sync = local_sync,
    .close = local_close};

int dir_wal_open(const char *dir, const char *name, dir_wal_t **out, char *why, size_t whylen) {
  *out = NULL;
  if (g_mkdir_with_parents(dir, 0755) != 0) {
    return io_error(why, whylen, "cannot create the directory", dir, errno);
  }
  char *path = g_build_filename(dir, name, NULL);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    int rc = io_error(why, whylen, "cannot open", path, errno);
    g_free(path);
    return rc;
  }
  local_wal_t *w = g_new0(local_wal_t, 1);
  w->base.ops = &local_ops;
  w->dir = g_strdup(dir);
  w->path = path;
  w->fd = fd;
  *out = &w->base;
  return 0;
}

/* ---- dispatch -------------------------------------------------------------- */

int dir_wal_load(dir_wal_t *w, unsigned flags, dir_wal_record_cb cb, void *ud,
                 dir_wal_load_result_t *res, char *why, size_t whylen) {
  return w->ops->load(w, flags, cb, ud, res, why, whylen);
}

int dir_wal_append(dir_wal_t *w, const dir_wal_rec_t *recs, size_t n, char *why, size_t whylen) {
  return w->ops->append(w, recs, n, why, whylen);
}

void dir_wal_preallocate(dir_wal_t *w, int64_t bytes) {
  /* Only the local log has a file to preallocate. */
  if (w->ops == &local_ops) ((local_wal_t *)w)->prealloc = bytes > 0 ? bytes : 0;
}

int dir_wal_write(dir_wal_t *w, const dir_wal_rec_t *recs, size_t n, char *why, size_t whylen) {
  return w->ops->write(w, recs, n, why, whylen);
}

int dir_wal_sync(dir_wal_t *w, char *why, size_t whylen) {
  return w->ops->sync(w, why, whylen);
}

void dir_wal_close(dir_wal_t *w) {
  if (w != NULL) w->ops->close(w);
}

const dir_wal_stats_t *dir_wal_stats(const dir_wal_t *w) { return &w->stats; }
