/*
 * Snapshot files (see snapfile.h).
 */
#include "directory/snapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "directory/disk.h"
#include "directory/wal.h"
#include "namespaces/snapshot.h"




static char *snap_name(int64_t seq) {
  return g_strdup_printf("snap-%016" PRIx64 ".snap", (uint64_t)seq);
}



void dir_snapfile_header(const uint8_t *body, size_t len, uint8_t *h) {
  memcpy(h, DIR_SNAP_MAGIC, 8);
  dir_disk_put_u32(h + 8, DIR_SNAP_VERSION);
  dir_disk_put_u32(h + 12, dir_wal_crc32c(0, h, 12));
  dir_disk_put_u32(h + 16, (uint32_t)len);
  dir_disk_put_u32(h + 20, (uint32_t)((uint64_t)len >> 32));
  dir_disk_put_u32(h + 24, dir_wal_crc32c(0, body, len));
  dir_disk_put_u32(h + 28, dir_wal_crc32c(0, h + 16, 12));
}

int dir_snapfile_write(const char *dir, const ns_tree_t *tree, int64_t seq, int64_t wall_ms,
                       int64_t *bytes, char *why, size_t whylen) {
  GByteArray *buf = g_byte_array_sized_new(1 << 20);
  g_byte_array_set_size(buf, DIR_SNAP_HEADER_SIZE);
  ns_snap_meta_t meta = {.seq = seq, .wall_ms = wall_ms};
  int rc = ns_snap_encode(tree, &meta, buf);
  if (rc != 0) {
    dir_disk_say(why, whylen, "the tree cannot be encoded (%s)", mayfly_strerror(rc));
    g_byte_array_free(buf, TRUE);
    return rc;
  }
  dir_snapfile_header(buf->data + DIR_SNAP_HEADER_SIZE, buf->len - DIR_SNAP_HEADER_SIZE,
                      buf->data);
  char *name = snap_name(seq);
  char *path = g_build_filename(dir, name, NULL);
  char *tmp = g_strdup_printf("%s.tmp", path);
  int err = 0;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) err = errno;
  if (err == 0) err = dir_disk_write_all(fd, buf->data, buf->len, 0);
  if (err == 0 && fsync(fd) != 0) err = errno;
  if (fd >= 0 && close(fd) != 0 && err == 0) err = errno;
  if (err == 0 && rename(tmp, path) != 0) err = errno;
  if (err == 0) err = dir_disk_sync_dir(dir);
  if (err != 0) {
    dir_disk_say(why, whylen, "cannot write %s: %s", tmp, g_strerror(err));
    g_unlink(tmp);
    rc = MAYFLY_EIO;
  } else {
    *bytes = (int64_t)buf->len;
  }
  g_free(tmp);
  g_free(path);
  g_free(name);
  g_byte_array_free(buf, TRUE);
  return rc;
}

int dir_snapfile_start(const char *dir, const ns_tree_t *tree, int64_t seq,
                       dir_snapfile_job_t *job, char *why, size_t whylen) {
  *job = (dir_snapfile_job_t){.dir = dir, .seq = seq, .wall_ms = mf_wall_ms(), .rc = -1};
  job->started_us = g_get_monotonic_time();
  pid_t parent = getpid();
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    dir_disk_say(why, whylen, "fork: %s", g_strerror(errno));
    return MAYFLY_EIO;
  }
  if (pid == 0) {
    /* The child: its memory is the tree as of record seq. It must not
     * outlive its parent: a snapshot renamed into place after a new
     * directory recovered without it would mix two histories. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(3);
    char reason[256] = "";
    int64_t bytes = 0;
    int rc = dir_snapfile_write(dir, tree, seq, job->wall_ms, &bytes, reason, sizeof reason);
    if (rc != 0) {
      MF_WARN("snapshot at record %lld: %s", (long long)seq, reason);
      _exit(1);
    }
    _exit(0);
  }
  job->pid = pid;
  job->fork_us = g_get_monotonic_time() - job->started_us;
  return 0;
}

int dir_snapfile_parse_name(const char *name, const char *prefix, const char *suffix,
                            int64_t *seq) {
  size_t pl = strlen(prefix), sl = strlen(suffix), n = strlen(name);
  if (n != pl + 16 + sl || strncmp(name, prefix, pl) != 0 || strcmp(name + pl + 16, suffix) != 0) {
    return 0;
  }
  uint64_t v = 0;
  for (size_t i = pl; i < pl + 16; i++) {
    int d = g_ascii_xdigit_value(name[i]);
    if (d < 0 || g_ascii_isupper(name[i])) return 0;
    v = v << 4 | (uint64_t)d;
  }
  if (v == 0 || v > INT64_MAX) return 0;
  *seq = (int64_t)v;
  return 1;
}

/* Deletes what snapshot `seq` makes useless: segments whose records are all
 * at or before it (a segment starting after it is kept, and the current
 * one starts right after it) and older snapshots. */
static int clean_up(const char *dir, int64_t seq) {
  GDir *d = g_dir_open(dir, 0, NULL);
  if (d == NULL) return 0;
  int removed = 0;
  const char *name;
  GPtrArray *doomed = g_ptr_array_new_with_free_func(g_free);
  while ((name = g_dir_read_name(d)) != NULL) {
    int64_t v;
    if ((dir_snapfile_parse_name(name, "wal-", ".log", &v) && v <= seq) ||
        (dir_snapfile_parse_name(name, "snap-", ".snap", &v) && v < seq)) {
      g_ptr_array_add(doomed, g_build_filename(dir, name, NULL));
    }
  }
  g_dir_close(d);
  for (guint i = 0; i < doomed->len; i++) {
    if (g_unlink(g_ptr_array_index(doomed, i)) == 0) removed++;
  }
  g_ptr_array_free(doomed, TRUE);
  if (removed > 0) dir_disk_sync_dir(dir);
  return removed;
}

void dir_snapfile_finish(dir_snapfile_job_t *job) {
  int status = 0;
  pid_t r;
  do {
    r = waitpid(job->pid, &status, 0);
  } while (r < 0 && errno == EINTR);
  job->took_ms = (g_get_monotonic_time() - job->started_us) / 1000;
  if (r < 0) {
    dir_disk_say(job->why, sizeof job->why, "waitpid: %s", g_strerror(errno));
    return;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    if (WIFSIGNALED(status)) {
      dir_disk_say(job->why, sizeof job->why, "the snapshot process was killed by signal %d",
          WTERMSIG(status));
    } else {
      dir_disk_say(job->why, sizeof job->why, "the snapshot process failed (status %d)",
          WEXITSTATUS(status));
    }
    return;
  }
  char *name = snap_name(job->seq);
  char *path = g_build_filename(job->dir, name, NULL);
  GStatBuf st;
  job->bytes = g_stat(path, &st) == 0 ? (int64_t)st.st_size : 0;
  g_free(path);
  g_free(name);
  job->removed = clean_up(job->dir, job->seq);
  job->rc = 0;
}

int dir_snapfile_parse(const uint8_t *buf, size_t len, const char *name,
                       int64_t default_lease_ms, int64_t grace_ms, int64_t now_ms,
                       ns_tree_t **tree, ns_snap_meta_t *meta, char *why, size_t whylen) {
  *tree = NULL;
  if (len < DIR_SNAP_HEADER_SIZE) {
    dir_disk_say(why, whylen, "%s: %zu bytes, shorter than the header", name, len);
    return MAYFLY_EPROTO;
  }
  if (memcmp(buf, DIR_SNAP_MAGIC, 8) != 0) {
    dir_disk_say(why, whylen, "%s: not a Mayfly snapshot (bad magic)", name);
    return MAYFLY_EPROTO;
  }
  if (dir_disk_get_u32(buf + 12) != dir_wal_crc32c(0, buf, 12) ||
      dir_disk_get_u32(buf + 28) != dir_wal_crc32c(0, buf + 16, 12)) {
    dir_disk_say(why, whylen, "%s: the header's checksum fails", name);
    return MAYFLY_EPROTO;
  }
  if (dir_disk_get_u32(buf + 8) != DIR_SNAP_VERSION) {
    dir_disk_say(why, whylen, "%s: snapshot format version %u; this directory reads version %d", name,
        dir_disk_get_u32(buf + 8), DIR_SNAP_VERSION);
    return MAYFLY_EPROTO;
  }
  uint64_t body = (uint64_t)dir_disk_get_u32(buf + 16) | (uint64_t)dir_disk_get_u32(buf + 20) << 32;
  if (body != len - DIR_SNAP_HEADER_SIZE) {
    dir_disk_say(why, whylen, "%s: the header announces %llu bytes of body, the file has %zu", name,
        (unsigned long long)body, len - DIR_SNAP_HEADER_SIZE);
    return MAYFLY_EPROTO;
  }
  if (dir_disk_get_u32(buf + 24) != dir_wal_crc32c(0, buf + DIR_SNAP_HEADER_SIZE, body)) {
    dir_disk_say(why, whylen, "%s: the body's checksum fails", name);
    return MAYFLY_EPROTO;
  }
  char reason[256] = "";
  int rc = ns_snap_decode(buf + DIR_SNAP_HEADER_SIZE, body, default_lease_ms, grace_ms, now_ms,
                          tree, meta, reason, sizeof reason);
  if (rc != 0) {
    dir_disk_say(why, whylen, "%s: %s", name, reason);
    return rc;
  }
  return 0;
}

int dir_snapfile_load(const char *dir, const char *name, int64_t default_lease_ms,
                      int64_t grace_ms, int64_t now_ms, ns_tree_t **tree, ns_snap_meta_t *meta,
                      char *why, size_t whylen) {
  char *path = g_build_filename(dir, name, NULL);
  gchar *buf = NULL;
  gsize len = 0;
  GError *err = NULL;
  int rc;
  if (!g_file_get_contents(path, &buf, &len, &err)) {
    dir_disk_say(why, whylen, "%s", err->message);
    g_error_free(err);
    rc = MAYFLY_EIO;
  } else {
    rc = dir_snapfile_parse((const uint8_t *)buf, len, path, default_lease_ms, grace_ms, now_ms,
                            tree, meta, why, whylen);
  }
  g_free(buf);
  g_free(path);
  return rc;
}
