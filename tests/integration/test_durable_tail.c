/*
 * Integration tests of the durable directory's recovery from damaged logs
 * and from snapshots (issue 10), on the data directory of a real
 * mayfly-directory that was killed:
 *
 * - torn tail: the newest log segment cut at every byte offset of its last
 *   record in turn starts, and the tree is exactly the one before the last
 *   mutation (and with the whole log, the one after it);
 * - corruption: a byte flipped inside an earlier record makes the directory
 *   refuse to start (exit status 1, the file and the offset on stderr); with
 *   --recover-truncate it starts with the tree before that record, and stays
 *   so across another restart;
 * - snapshots: the same deterministic workload run with --snapshot-records 50
 *   (snapshots taken while requests keep coming) and without snapshots gives,
 *   after a kill -9 and a restart of each, the same `mayfly --json tree /`
 *   and the same stat of every node, equal to what each showed before its
 *   kill.
 *
 * The frames of a segment are found with dir_wal_scan() and their records
 * decoded with ns_rec_decode() (the directory's own library), so the test
 * knows which record is which mutation.
 */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/mayfly.h"
#include "directory/wal.h"
#include "harness.h"
#include "mf_test.h"
#include "namespaces/record.h"

static int64_t now_ms(void) {
  return g_get_monotonic_time() / 1000;
}

/* --- data directories --- */

static char *scratch; /* this run's temporary directory */

static char *new_dir(const char *name) {
  char *d = g_build_filename(scratch, name, NULL);
  char *rm[] = {"rm", "-rf", d, NULL};
  g_spawn_sync(NULL, rm, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL, NULL);
  g_mkdir_with_parents(d, 0755);
  return d;
}

/* Copies every regular file of src into dst (emptied first). */
static void copy_dir(const char *src, const char *dst) {
  char *rm[] = {"rm", "-rf", (char *)dst, NULL};
  g_spawn_sync(NULL, rm, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL, NULL);
  g_mkdir_with_parents(dst, 0755);
  GDir *d = g_dir_open(src, 0, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  for (const char *n; (n = g_dir_read_name(d)) != NULL;) {
    char *from = g_build_filename(src, n, NULL), *to = g_build_filename(dst, n, NULL);
    char *buf = NULL;
    gsize len = 0;
    if (g_file_test(from, G_FILE_TEST_IS_REGULAR) && g_file_get_contents(from, &buf, &len, NULL)) {
      CU_ASSERT(g_file_set_contents(to, buf, (gssize)len, NULL));
    }
    g_free(buf);
    g_free(from);
    g_free(to);
  }
  g_dir_close(d);
}

/* g_ptr_array_sort passes pointers to the elements. */
static gint cmp_names(gconstpointer a, gconstpointer b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Names in dir starting with prefix and ending with suffix, sorted (the
 * 16 hex digits sort as the sequence numbers do). */
static GPtrArray *list_files(const char *dir, const char *prefix, const char *suffix) {
  GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
  GDir *d = g_dir_open(dir, 0, NULL);
  if (d == NULL) return a;
  for (const char *n; (n = g_dir_read_name(d)) != NULL;) {
    if (g_str_has_prefix(n, prefix) && g_str_has_suffix(n, suffix)) g_ptr_array_add(a, g_strdup(n));
  }
  g_dir_close(d);
  g_ptr_array_sort(a, cmp_names);
  return a;
}

static GPtrArray *segments(const char *dir) {
  return list_files(dir, "wal-", ".log");
}

/* One frame of a segment. */
typedef struct {
  int64_t offset; /* of the frame header */
  uint32_t len;   /* payload bytes */
  ns_rec_type_t type;
  char *path;
} frame_t;

static int collect(const uint8_t *data, uint32_t len, int64_t offset, void *ud) {
  GArray *frames = ud;
  frame_t f = {offset, len, 0, NULL};
  ns_rec_buf_t b;
  ns_rec_buf_init(&b);
  char why[256];
  if (ns_rec_decode(data, len, &b, why, sizeof why) == 0) {
    f.type = b.rec.type;
    f.path = g_strdup(b.rec.path);
  } else {
    fprintf(stderr, "  frame at %lld does not decode: %s\n", (long long)offset, why);
    f.type = (ns_rec_type_t)-1;
  }
  ns_rec_buf_clear(&b);
  g_array_append_val(frames, f);
  return 0;
}

static void frames_free(GArray *frames) {
  for (guint i = 0; i < frames->len; i++) g_free(g_array_index(frames, frame_t, i).path);
  g_array_free(frames, TRUE);
}

/* The frames of file `path`, or NULL (and a failed check). */
static GArray *scan(const char *path, gsize *size) {
  char *buf = NULL;
  gsize len = 0;
  if (!g_file_get_contents(path, &buf, &len, NULL)) {
    CU_FAIL("cannot read a log segment");
    return NULL;
  }
  GArray *frames = g_array_new(FALSE, TRUE, sizeof(frame_t));
  dir_wal_load_result_t res;
  char why[256] = "";
  int rc = dir_wal_scan((const uint8_t *)buf, len, path, 0, collect, frames, &res, why, sizeof why);
  if (rc != 0) fprintf(stderr, "  %s: %s\n", path, why);
  MF_ASSERT_EQ(rc, 0);
  MF_ASSERT_EQ(res.dropped_bytes, 0);
  /* The store preallocates zeros after the last frame. */
  MF_ASSERT_EQ(res.end + res.zero_bytes, (int64_t)len);
  g_free(buf);
  if (size) *size = (gsize)res.end;
  return frames;
}

/* The newest segment of dir that holds records: its name and frames. */
static GArray *newest_segment(const char *dir, char **name, gsize *size) {
  GPtrArray *segs = segments(dir);
  GArray *found = NULL;
  for (guint i = segs->len; i-- > 0 && found == NULL;) {
    char *p = g_build_filename(dir, segs->pdata[i], NULL);
    GArray *f = scan(p, size);
    g_free(p);
    if (f != NULL && f->len > 0) {
      found = f;
      *name = g_strdup(segs->pdata[i]);
    } else if (f != NULL) {
      frames_free(f);
    }
  }
  if (found == NULL) CU_FAIL("no log segment with records");
  g_ptr_array_free(segs, TRUE);
  return found;
}

/* --- the directory --- */

static mf_daemon_t *start_dir(const char *data_dir, const char *extra) {
  return mf_start_directory("--data-dir", data_dir, "--lease-ms", "600s", "--heartbeat-ms", "100",
                            extra, NULL);
}

static mayfly_client_t *connect_to(const mf_daemon_t *d) {
  mayfly_options_t o = {.timeout_ms = 5000};
  mayfly_client_t *c = NULL;
  MF_ASSERT_EQ(mayfly_connect(d->address, &o, &c), 0);
  return c;
}

/* The whole tree as text: one "path kind" line per node in tree order. */
static char *tree_text(mayfly_client_t *c) {
  mayfly_lease_t *l = NULL;
  size_t n = 0;
  int rc = mayfly_leases(c, "/", &l, &n);
  if (rc != 0) return g_strdup_printf("(leases failed: %s)", mayfly_strerror(rc));
  GString *s = g_string_new(NULL);
  for (size_t i = 0; i < n; i++) {
    g_string_append_printf(s, "%s %s%s\n", l[i].path, mayfly_kind_name(l[i].kind),
                           l[i].pinned ? " pinned" : "");
  }
  mayfly_leases_free(l, n);
  return g_string_free(s, FALSE);
}

/* Runs mayfly-directory on data_dir expecting it to refuse to start: returns
 * its exit status (as waitpid gives it) and its stderr in *err; -1 (and the
 * process killed) if it was still running after 10 s. */
static int run_expect_exit(const char *data_dir, const char *extra, char **err) {
  char *log = g_build_filename(scratch, "refuse.log", NULL);
  char *port_file = g_build_filename(scratch, "refuse.port", NULL);
  g_unlink(port_file);
  char *bin = g_strdup(mf_bin("directory/mayfly-directory"));
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, STDERR_FILENO);
      dup2(fd, STDOUT_FILENO);
      close(fd);
    }
    execl(bin, bin, "--host", "127.0.0.1", "--port", "0", "--port-file", port_file, "--data-dir",
          data_dir, extra, (char *)NULL);
    _exit(127);
  }
  int status = -1;
  for (int waited = 0; waited < 10000; waited += 10) {
    if (waitpid(pid, &status, WNOHANG) == pid) break;
    status = -1;
    mf_sleep_ms(10);
  }
  if (status == -1) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
  }
  *err = NULL;
  g_file_get_contents(log, err, NULL, NULL);
  if (*err == NULL) *err = g_strdup("");
  g_free(bin);
  g_free(log);
  g_free(port_file);
  return status;
}

/* --- torn tail and corruption --- */

#define NOPS 40

/* A known tree: mkdir /tail, then NOPS mutations in order, each
 * acknowledged, the last a mkdir. states[i] is the tree after mutation i
 * (states[-1] is after mkdir /tail). */
static char *states[NOPS + 1];
static char *last_path;

static void build_known_tree(mf_daemon_t *dir, mayfly_client_t *c) {
  MF_ASSERT_EQ(mayfly_mkdir(c, "/tail", 0), 0);
  states[0] = tree_text(c);
  for (int i = 0; i < NOPS; i++) {
    char p[64], q[64];
    snprintf(p, sizeof p, "/tail/m-%03d", i);
    int rc;
    if (i == NOPS - 1) {
      snprintf(p, sizeof p, "/tail/the-last-mutation");
      rc = mayfly_mkdir(c, p, 0);
      last_path = g_strdup(p);
    } else if (i % 5 == 0) {
      rc = mayfly_mkdir(c, p, 0);
    } else if (i % 5 == 1) {
      mayfly_create_options_t o = {.blocks = 1, .pinned = i % 2};
      rc = mayfly_create(c, p, MAYFLY_KIND_KV, &o, NULL);
    } else if (i % 5 == 2) {
      mayfly_create_options_t o = {.blocks = 2, .max_blocks = 5};
      rc = mayfly_create(c, p, MAYFLY_KIND_FILE, &o, NULL);
    } else if (i % 5 == 3) {
      /* Rename the directory made two steps before. */
      snprintf(q, sizeof q, "/tail/m-%03d", i - 3);
      snprintf(p, sizeof p, "/tail/moved-%03d", i);
      rc = mayfly_rename(c, q, p);
    } else {
      /* Remove the kv made three steps before. */
      snprintf(p, sizeof p, "/tail/m-%03d", i - 3);
      rc = mayfly_remove(c, p, 0);
    }
    if (rc != 0) fprintf(stderr, "  mutation %d (%s): %s\n", i, p, mayfly_last_error());
    MF_ASSERT_EQ(rc, 0);
    states[i + 1] = tree_text(c);
  }
  (void)dir;
}

/* Starts the directory on data_dir and checks its tree is `want`. Returns
 * the daemon (running) or NULL. */
static mf_daemon_t *start_and_expect(const char *data_dir, const char *extra, const char *want,
                                     const char *what) {
  mf_daemon_t *d = start_dir(data_dir, extra);
  if (d == NULL) {
    fprintf(stderr, "  %s: the directory did not start\n", what);
    CU_FAIL("the directory did not start");
    return NULL;
  }
  mayfly_client_t *c = connect_to(d);
  char *got = tree_text(c);
  if (strcmp(got, want) != 0) {
    fprintf(stderr, "  %s: tree\n%s  expected\n%s", what, got, want);
    CU_FAIL("the recovered tree is not the expected one");
  }
  g_free(got);
  mayfly_disconnect(c);
  return d;
}

static void truncate_file(const char *path, int64_t len) {
  MF_ASSERT_EQ(truncate(path, (off_t)len), 0);
}

static void flip_byte(const char *path, int64_t at) {
  int fd = open(path, O_RDWR);
  CU_ASSERT_FATAL(fd >= 0);
  uint8_t b;
  MF_ASSERT_EQ(pread(fd, &b, 1, at), 1);
  b ^= 0x5a;
  MF_ASSERT_EQ(pwrite(fd, &b, 1, at), 1);
  close(fd);
}

static void test_torn_tail_and_corruption(void) {
  int64_t t0 = now_ms();
  char *data = new_dir("tail-data"), *work = g_build_filename(scratch, "tail-work", NULL);
  mf_daemon_t *dir = start_dir(data, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
  mf_daemon_t *ms = mf_start_memserver(dir, 64, "64KiB", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ms);
  mayfly_client_t *c = connect_to(dir);
  build_known_tree(dir, c);
  mayfly_disconnect(c);
  /* Every mutation was acknowledged, so it is on disk: no clean shutdown. */
  mf_kill(dir);
  MF_ASSERT_EQ(mf_stop(ms), 0);

  char *seg = NULL;
  gsize size = 0;
  GArray *frames = newest_segment(data, &seg, &size);
  CU_ASSERT_PTR_NOT_NULL_FATAL(frames);
  const frame_t *last = &g_array_index(frames, frame_t, frames->len - 1);
  int64_t end = last->offset + DIR_WAL_FRAME_HEADER + last->len;
  MF_ASSERT_EQ(end, (int64_t)size);
  /* The last record is the last mutation (no heartbeat or other record after it). */
  MF_ASSERT_EQ(last->type, NS_REC_MKDIR);
  CU_ASSERT(last->path != NULL && strcmp(last->path, last_path) == 0);
  char *work_seg = g_build_filename(work, seg, NULL);

  /* The whole log: the whole tree. */
  copy_dir(data, work);
  mf_daemon_t *d = start_and_expect(work, NULL, states[NOPS], "the whole log");
  if (d != NULL) mf_kill(d);

  /* Cut at every offset of the last frame: the tree before the last mutation. */
  int starts = 0, dropped_lines = 0;
  for (int64_t cut = last->offset; cut < end; cut++) {
    copy_dir(data, work);
    truncate_file(work_seg, cut);
    char what[96];
    snprintf(what, sizeof what, "log cut at %lld of %lld", (long long)cut, (long long)end);
    d = start_and_expect(work, NULL, states[NOPS - 1], what);
    if (d == NULL) break;
    starts++;
    if (cut > last->offset) {
      /* The log line says how many bytes were dropped. */
      char n[32];
      snprintf(n, sizeof n, " %lld byte", (long long)(cut - last->offset));
      int said = mf_log_count(d, n) > 0;
      if (!said) fprintf(stderr, "  %s: no log line says%s(s) were dropped\n", what, n);
      dropped_lines += said;
    }
    mf_kill(d);
    if (CU_get_number_of_failures() > 0) break;
  }
  MF_ASSERT_EQ(starts, end - last->offset);

  /* The torn record was really cut: after a start on a half-cut log, a new
   * mutation, a kill and another start, the tree is the prefix plus it (a
   * torn record left in place would now be corruption before later log). */
  copy_dir(data, work);
  truncate_file(work_seg, last->offset + (end - last->offset) / 2);
  d = start_and_expect(work, NULL, states[NOPS - 1], "log cut in the middle of its last record");
  if (d != NULL) {
    c = connect_to(d);
    MF_ASSERT_EQ(mayfly_mkdir(c, "/tail/after-the-cut", 0), 0);
    char *want = tree_text(c);
    mayfly_disconnect(c);
    mf_kill(d);
    d = start_and_expect(work, NULL, want, "restart after a cut tail and one more mutation");
    if (d != NULL) mf_kill(d);
    g_free(want);
  }
  MF_ASSERT_EQ(dropped_lines, end - last->offset - 1);
  printf("\n  torn tail: %lld cuts of the last record (%u bytes framed) of %s, %u records; "
         "each started with the prefix\n",
         (long long)(end - last->offset), DIR_WAL_FRAME_HEADER + last->len, seg, frames->len);

  /* A flipped byte in an earlier record: the record of mutation NOPS/2. */
  int target = -1;
  char want_path[64];
  snprintf(want_path, sizeof want_path, "/tail/m-%03d", NOPS / 2);
  for (guint i = 0; i < frames->len; i++) {
    const frame_t *f = &g_array_index(frames, frame_t, i);
    if (f->path != NULL && strcmp(f->path, want_path) == 0 && f->type == NS_REC_MKDIR) target = (int)i;
  }
  CU_ASSERT_FATAL(target >= 0 && target < (int)frames->len - 1);
  const frame_t *f = &g_array_index(frames, frame_t, target);
  /* Two places: inside the payload, and in the frame's checksum. */
  int64_t flips[2] = {f->offset + DIR_WAL_FRAME_HEADER + f->len / 2, f->offset + 5};
  for (int k = 0; k < 2; k++) {
    copy_dir(data, work);
    flip_byte(work_seg, flips[k]);
    char *err = NULL;
    int status = run_expect_exit(work, NULL, &err);
    CU_ASSERT(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 1);
    char dec[32], hex[32];
    snprintf(dec, sizeof dec, "%lld", (long long)f->offset);
    snprintf(hex, sizeof hex, "0x%llx", (long long)f->offset);
    int names_file = strstr(err, seg) != NULL;
    int names_offset = strstr(err, dec) != NULL || strstr(err, hex) != NULL;
    if (!names_file || !names_offset || status == -1 || !WIFEXITED(status)) {
      fprintf(stderr, "  byte %lld flipped (record at %lld in %s): status %d, stderr:\n%s\n",
              (long long)flips[k], (long long)f->offset, seg, status, err);
    }
    CU_ASSERT(names_file);
    CU_ASSERT(names_offset);
    if (k == 0) {
      char *first = g_strstrip(g_strdup(err));
      char *nl = strrchr(first, '\n');
      printf("  corrupt record at %lld: exit %d: %s\n", (long long)f->offset,
             WIFEXITED(status) ? WEXITSTATUS(status) : -1, nl ? nl + 1 : first);
      g_free(first);
    }
    g_free(err);

    /* --recover-truncate: the tree before that record, and it stays so. */
    d = start_and_expect(work, "--recover-truncate", states[NOPS / 2], "--recover-truncate");
    if (d != NULL) {
      MF_ASSERT_EQ(mf_stop(d), 0);
      d = start_and_expect(work, NULL, states[NOPS / 2], "restart after --recover-truncate");
      if (d != NULL) MF_ASSERT_EQ(mf_stop(d), 0);
    }
  }
  printf("  torn tail and corruption checks: %lld ms\n", (long long)(now_ms() - t0));
  frames_free(frames);
  for (int i = 0; i <= NOPS; i++) g_free(states[i]);
  g_free(last_path);
  g_free(seg);
  g_free(work_seg);
  g_free(data);
  g_free(work);
}

/* --- snapshot plus log against the log alone --- */

#define SNAP_OPS 600

/* Reads the tree and stats while the workload runs, so snapshots are taken
 * with requests arriving from several connections. */
typedef struct {
  const char *address;
  volatile int stop;
  int reads;
} reader_t;

static gpointer reader_thread(gpointer p) {
  reader_t *r = p;
  mayfly_options_t o = {.timeout_ms = 5000};
  mayfly_client_t *c = NULL;
  if (mayfly_connect(r->address, &o, &c) != 0) return NULL;
  while (!r->stop) {
    mayfly_lease_t *l = NULL;
    size_t n = 0;
    if (mayfly_leases(c, "/s", &l, &n) == 0) mayfly_leases_free(l, n);
    mayfly_dir_stats_t s;
    mayfly_dir_stats(c, &s);
    r->reads += 2;
  }
  mayfly_disconnect(c);
  return NULL;
}

/* Every node in tree order with what stat says of it, leaving out what
 * depends on the clock or the memory server's port. */
static char *state_text(mayfly_client_t *c) {
  mayfly_lease_t *l = NULL;
  size_t n = 0;
  int rc = mayfly_leases(c, "/", &l, &n);
  if (rc != 0) return g_strdup_printf("(leases failed: %s)", mayfly_strerror(rc));
  GString *s = g_string_new(NULL);
  for (size_t i = 0; i < n; i++) {
    mayfly_stat_t *st = NULL;
    rc = mayfly_stat(c, l[i].path, &st);
    if (rc != 0) {
      g_string_append_printf(s, "%s: stat failed: %s\n", l[i].path, mayfly_strerror(rc));
      continue;
    }
    g_string_append_printf(s, "%s %s lease %lld pinned %d children %d version %lld max %d wm %d/%d",
                           st->path, mayfly_kind_name(st->kind), (long long)st->lease_ms,
                           st->pinned, st->children, (long long)st->layout_version,
                           st->max_blocks, st->high_watermark, st->low_watermark);
    for (size_t t = 0; t < st->ntags; t++) {
      g_string_append_printf(s, " tag %s=%s", st->tag_keys[t], st->tag_values[t]);
    }
    for (size_t p = 0; p < st->npartitions; p++) {
      const mayfly_partition_t *q = &st->partitions[p];
      g_string_append_printf(s, " [server %d block %d gen %lld size %lld range %lld-%lld%s]",
                             q->server_id, q->block_index, (long long)q->generation,
                             (long long)q->block_size, (long long)q->range_lo,
                             (long long)q->range_hi, q->lost ? " lost" : "");
    }
    g_string_append_c(s, '\n');
    mayfly_stat_free(st);
  }
  mayfly_leases_free(l, n);
  return g_string_free(s, FALSE);
}

static char *cli_tree(const mf_daemon_t *d) {
  char *out = NULL;
  MF_ASSERT_EQ(mf_cli(d, &out, NULL, "--json", "tree", "/", NULL), 0);
  return out ? out : g_strdup("");
}

static int wait_servers_up(mayfly_client_t *c, int want) {
  for (int64_t until = now_ms() + 10000; now_ms() < until; mf_sleep_ms(20)) {
    mayfly_dir_stats_t s;
    if (mayfly_dir_stats(c, &s) == 0 && s.servers_up == want) return 0;
  }
  return -1;
}

typedef struct {
  char *tree_before, *state_before, *tree_after, *state_after;
  mayfly_dir_stats_t before, after;
  int snap_files, reads;
} run_t;

/* The deterministic workload: SNAP_OPS mutations from a fixed seed, one at
 * a time from one client (so every run allocates the same blocks in the same
 * order), with growing files among them. */
static void workload(mayfly_client_t *c) {
  GRand *r = g_rand_new_with_seed(20261201);
  GPtrArray *leaves = g_ptr_array_new_with_free_func(g_free);
  GPtrArray *dirs = g_ptr_array_new_with_free_func(g_free);
  MF_ASSERT_EQ(mayfly_mkdir(c, "/s", 0), 0);
  g_ptr_array_add(dirs, g_strdup("/s"));
  int counter = 0, failed = 0;
  for (int i = 0; i < SNAP_OPS; i++) {
    int x = g_rand_int_range(r, 0, 100);
    char p[128];
    int rc = 0;
    if (x < 15 && dirs->len < 12) {
      const char *parent = dirs->pdata[g_rand_int_range(r, 0, (gint32)dirs->len)];
      snprintf(p, sizeof p, "%s/d%d", parent, counter++);
      rc = mayfly_mkdir(c, p, 0);
      if (rc == 0) g_ptr_array_add(dirs, g_strdup(p));
    } else if (x < 55 && leaves->len < 40) {
      const char *parent = dirs->pdata[g_rand_int_range(r, 0, (gint32)dirs->len)];
      snprintf(p, sizeof p, "%s/n%d", parent, counter++);
      mayfly_create_options_t o = {.blocks = g_rand_int_range(r, 1, 3),
                                   .pinned = g_rand_int_range(r, 0, 3) == 0,
                                   .max_blocks = g_rand_boolean(r) ? 6 : 0};
      mayfly_kind_t kind = (mayfly_kind_t)g_rand_int_range(r, 1, 4);
      if (kind == MAYFLY_KIND_KV) {
        o.blocks = 1;
        o.high_watermark = 70;
        o.low_watermark = 10;
      }
      rc = mayfly_create(c, p, kind, &o, NULL);
      if (rc == 0) g_ptr_array_add(leaves, g_strdup(p));
    } else if (x < 65 && leaves->len > 0) {
      /* A file grown by a write past its end (ADD_PART records). */
      int k = g_rand_int_range(r, 0, (gint32)leaves->len);
      mayfly_stat_t *st = NULL;
      if (mayfly_stat(c, leaves->pdata[k], &st) == 0 && st->kind == MAYFLY_KIND_FILE &&
          st->npartitions < 4) {
        mayfly_ns_t *ns = NULL;
        rc = mayfly_mount(c, leaves->pdata[k], MAYFLY_KIND_FILE, NULL, &ns);
        if (rc == 0) {
          char buf[100];
          memset(buf, 'f', sizeof buf);
          rc = mayfly_file_write(ns, (uint64_t)st->npartitions * 65536 + 10, buf, sizeof buf);
          mayfly_unmount(ns);
        }
      }
      mayfly_stat_free(st);
    } else if (x < 85 && leaves->len > 0) {
      int k = g_rand_int_range(r, 0, (gint32)leaves->len);
      const char *parent = dirs->pdata[g_rand_int_range(r, 0, (gint32)dirs->len)];
      snprintf(p, sizeof p, "%s/m%d", parent, counter++);
      rc = mayfly_rename(c, leaves->pdata[k], p);
      if (rc == 0) {
        g_free(leaves->pdata[k]);
        leaves->pdata[k] = g_strdup(p);
      }
    } else if (leaves->len > 0) {
      int k = g_rand_int_range(r, 0, (gint32)leaves->len);
      rc = mayfly_remove(c, leaves->pdata[k], 0);
      if (rc == 0) g_ptr_array_remove_index(leaves, (guint)k);
    }
    if (rc != 0) {
      if (failed++ < 5) fprintf(stderr, "  workload step %d: %s\n", i, mayfly_last_error());
    }
  }
  MF_ASSERT_EQ(failed, 0);
  g_ptr_array_free(leaves, TRUE);
  g_ptr_array_free(dirs, TRUE);
  g_rand_free(r);
}

/* Runs the workload on a new directory started with `opt value` (NULL: no
 * snapshot option), kills it with SIGKILL and starts it again on the same
 * port and data dir. */
static void one_run(const char *data_dir, const char *opt, const char *value, run_t *out) {
  mf_daemon_t *dir = mf_start_directory("--data-dir", data_dir, "--lease-ms", "600s",
                                        "--heartbeat-ms", "100", opt, value, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
  mf_daemon_t *ms = mf_start_memserver(dir, 256, "64KiB", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ms);
  mayfly_client_t *c = connect_to(dir);
  reader_t rd[2] = {{dir->address, 0, 0}, {dir->address, 0, 0}};
  GThread *th[2];
  for (int i = 0; i < 2; i++) th[i] = g_thread_new("reader", reader_thread, &rd[i]);
  workload(c);
  for (int i = 0; i < 2; i++) {
    rd[i].stop = 1;
    g_thread_join(th[i]);
    out->reads += rd[i].reads;
  }
  /* A snapshot's child may still be writing: give it a moment to finish, so
   * the restart has a snapshot to start from (one it did not finish is no
   * worse: the log behind it is still there). */
  mf_sleep_ms(300);
  MF_ASSERT_EQ(mayfly_dir_stats(c, &out->before), 0);
  out->tree_before = cli_tree(dir);
  out->state_before = state_text(c);
  mayfly_disconnect(c);
  char port[16];
  snprintf(port, sizeof port, "%d", dir->port);
  mf_kill(dir);
  GPtrArray *snaps = list_files(data_dir, "snap-", ".snap");
  out->snap_files = (int)snaps->len;
  g_ptr_array_free(snaps, TRUE);

  dir = mf_start_directory("--port", port, "--data-dir", data_dir, "--lease-ms", "600s",
                           "--heartbeat-ms", "100", opt, value, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
  c = connect_to(dir);
  MF_ASSERT_EQ(wait_servers_up(c, 1), 0);
  MF_ASSERT_EQ(mayfly_dir_stats(c, &out->after), 0);
  out->tree_after = cli_tree(dir);
  out->state_after = state_text(c);
  mayfly_disconnect(c);
  MF_ASSERT_EQ(mf_stop(ms), 0);
  MF_ASSERT_EQ(mf_stop(dir), 0);
}

static void expect_same(const char *a, const char *b, const char *what) {
  if (strcmp(a, b) != 0) {
    fprintf(stderr, "  %s differ:\n---\n%s---\n%s---\n", what, a, b);
    CU_FAIL("states differ");
  }
}

static void report_run(const char *name, const run_t *r, int64_t ms) {
  printf("  %s: %lld records, %lld snapshots (%d snap files left), %d reads beside; after kill "
         "-9: recovered %lld records in %lld ms (%lld ms in all)\n",
         name, (long long)r->before.log_records, (long long)r->before.snapshots, r->snap_files,
         r->reads, (long long)r->after.recovered_records, (long long)r->after.recovery_ms,
         (long long)ms);
}

static void run_free(run_t *r) {
  g_free(r->tree_before);
  g_free(r->tree_after);
  g_free(r->state_before);
  g_free(r->state_after);
}

static void test_snapshot_plus_log_equals_log_alone(void) {
  char *da = new_dir("snap-a"), *db = new_dir("snap-b"), *dc = new_dir("snap-c");
  run_t a = {0}, b = {0}, c = {0};
  int64_t t0 = now_ms();
  one_run(da, "--snapshot-records", "50", &a);
  int64_t t1 = now_ms();
  one_run(db, NULL, NULL, &b);
  int64_t t2 = now_ms();
  one_run(dc, "--snapshot-bytes", "8KiB", &c);
  int64_t t3 = now_ms();
  printf("\n");
  report_run("A, --snapshot-records 50", &a, t1 - t0);
  report_run("B, the log alone", &b, t2 - t1);
  report_run("C, --snapshot-bytes 8KiB", &c, t3 - t2);
  /* Snapshots were taken in runs A and C, none in run B, and the restarts
   * of A and C replayed only the log after their newest snapshot. */
  CU_ASSERT(a.before.snapshots >= 2);
  CU_ASSERT(c.before.snapshots >= 2);
  CU_ASSERT(a.snap_files >= 1);
  CU_ASSERT(c.snap_files >= 1);
  MF_ASSERT_EQ(b.before.snapshots, 0);
  MF_ASSERT_EQ(b.snap_files, 0);
  CU_ASSERT(b.after.recovered_records >= SNAP_OPS / 2);
  CU_ASSERT(a.after.recovered_records < b.after.recovered_records);
  CU_ASSERT(c.after.recovered_records < b.after.recovered_records);
  CU_ASSERT(a.after.recovered_records < 200);
  /* Nothing was lost (the memory server's registering again may add records). */
  CU_ASSERT(a.after.log_seq >= a.before.log_seq);
  CU_ASSERT(b.after.log_seq >= b.before.log_seq);
  CU_ASSERT(c.after.log_seq >= c.before.log_seq);
  /* The same state every way. */
  expect_same(a.tree_before, a.tree_after, "run A's tree before and after the restart");
  expect_same(b.tree_before, b.tree_after, "run B's tree before and after the restart");
  expect_same(c.tree_before, c.tree_after, "run C's tree before and after the restart");
  expect_same(a.tree_after, b.tree_after, "the recovered trees of A (snapshot + log) and B (log)");
  expect_same(c.tree_after, b.tree_after, "the recovered trees of C (snapshot + log) and B (log)");
  expect_same(a.state_before, a.state_after, "run A's stats before and after the restart");
  expect_same(b.state_before, b.state_after, "run B's stats before and after the restart");
  expect_same(c.state_before, c.state_after, "run C's stats before and after the restart");
  expect_same(a.state_after, b.state_after, "the recovered stats of A and B");
  expect_same(c.state_after, b.state_after, "the recovered stats of C and B");
  CU_ASSERT(strlen(a.state_after) > 1000);
  run_free(&a);
  run_free(&b);
  run_free(&c);
  g_free(da);
  g_free(db);
  g_free(dc);
}

static const mf_test_t tests[] = {
    {"a torn tail is cut and a corrupt record refuses the start", test_torn_tail_and_corruption},
    {"a snapshot plus the log after it equals the log alone", test_snapshot_plus_log_equals_log_alone},
    {NULL, NULL}};

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  scratch = g_dir_make_tmp("mayfly-tail-XXXXXX", NULL);
  int rc = mf_test_run("durable_tail", NULL, NULL, tests);
  if (getenv("MAYFLY_KEEP_LOGS") == NULL) {
    char *rm[] = {"rm", "-rf", scratch, NULL};
    g_spawn_sync(NULL, rm, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL, NULL);
  }
  g_free(scratch);
  return rc;
}
