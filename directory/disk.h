/*
 * Small pieces the durable store's files share (wal.c, snapfile.c,
 * store.c): little-endian u32 fields, whole writes, syncing a directory,
 * and a reason written into a caller's buffer.
 */
#ifndef MAYFLY_DIR_DISK_H
#define MAYFLY_DIR_DISK_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

static inline void dir_disk_put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t dir_disk_get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Writes all of len bytes at offset off (pwrite may write less). Returns 0
 * or an errno value. */
int dir_disk_write_all(int fd, const uint8_t *p, size_t len, int64_t off);

/* fsyncs directory `dir`, so that names created or renamed in it last.
 * Returns 0 or an errno value. */
int dir_disk_sync_dir(const char *dir);

/* Formats a reason into why (which may be NULL or empty). */
void dir_disk_say(char *why, size_t whylen, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

#endif /* MAYFLY_DIR_DISK_H */
