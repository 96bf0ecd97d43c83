/*
 * Small pieces of the durable store's file handling (see disk.h).
 */
#include "directory/disk.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

int dir_disk_write_all(int fd, const uint8_t *p, size_t len, int64_t off) {
  while (len > 0) {
    ssize_t n = pwrite(fd, p, len, (off_t)off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += n;
    len -= (size_t)n;
    off += n;
  }
  return 0;
}

int dir_disk_sync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  int rc = fsync(fd) == 0 ? 0 : errno;
  close(fd);
  return rc;
}

void dir_disk_say(char *why, size_t whylen, const char *fmt, ...) {
  if (why == NULL || whylen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, whylen, fmt, ap);
  va_end(ap);
}
