/*
 * The directory's durable store (see store.h): recovery, group commit of
 * the log, segments, snapshots.
 */
#include "directory/store.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "common/check.h"
#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "directory/disk.h"
#include "directory/snapfile.h"
#include "directory/wal.h"
#include "namespaces/record.h"

/* Batches being written or synced at once: one syncing while the next is
 * written and starts its sync, so the disk and the callers work at the
 * same time. A worker waits for its turn to write, so there must be more
 * libuv threads than this plus the snapshot's waiter (4 by default). */
#define STORE_INFLIGHT 2

/* Records encoded back to back, for one write and one fdatasync. */
typedef struct batch {
  uv_work_t work;
  dir_store_t *store;
  GByteArray *data;
  GArray *lens;      /* uint32_t per record */
  int64_t first_seq; /* of its first record */
  int new_segment;   /* open wal-<first_seq>.log before writing */
  int64_t ticket;    /* writes go to the file in ticket order */
  int64_t write_us;  /* how long the write and the sync took (worker) */
  int rc;
  char why[512];
} batch_t;

struct dir_store {
  uv_loop_t *loop;
  char *dir;
  int recover_truncate;
  int64_t snapshot_records;
  uint64_t snapshot_bytes;
  int lock_fd;
  ns_tree_t *tree;
  dir_wal_t *wal;      /* the segment appends go to; the worker's while a batch is in flight */
  batch_t *open;       /* takes the records of this loop iteration */
  GQueue sealed;       /* batch_t *: closed, waiting behind the one in flight */
  GQueue inflight;      /* batch_t *: at most STORE_INFLIGHT, in submission order */
  int64_t next_ticket;
  GMutex turn_lock;     /* the workers' turn to write (tickets in order) */
  GCond turn;
  int64_t written;      /* ticket of the last batch written (under turn_lock) */
  uv_check_t check;    /* end of each loop iteration: hand the open batch to a worker */
  int64_t applied;     /* seq of the newest record applied (and so logged or pending) */
  int64_t durable;     /* seq of the newest record on disk */
  dir_store_durable_cb cb;
  void *cb_ud;
  dir_store_stats_t st;
  int64_t since_records; /* log records and bytes since the last snapshot began */
  int64_t since_bytes;
  int stopping;
  /* The snapshot in progress (one at a time). */
  int snap_running;
  uv_work_t snap_work;
  dir_snapfile_job_t snap_job;
};


static char *segment_name(int64_t first_seq) {
  return g_strdup_printf("wal-%016" PRIx64 ".log", (uint64_t)first_seq);
}

/* ---- the batches ------------------------------------------------------- */

static batch_t *batch_new(dir_store_t *s, int64_t first_seq) {
  batch_t *b = g_new0(batch_t, 1);
  b->store = s;
  b->data = g_byte_array_new();
  b->lens = g_array_new(FALSE, FALSE, sizeof(uint32_t));
  b->first_seq = first_seq;
  b->work.data = b;
  return b;
}

static void batch_free(batch_t *b) {
  if (b == NULL) return;
  g_byte_array_free(b->data, TRUE);
  g_array_free(b->lens, TRUE);
  g_free(b);
}

/* Opens segment wal-<first>.log, which must hold no record yet. */
static int open_segment(const char *dir, int64_t first, dir_wal_t **out, char *why,
                        size_t whylen) {
  char *name = segment_name(first);
  dir_wal_t *w = NULL;
  int rc = dir_wal_open(dir, name, &w, why, whylen);
  dir_wal_load_result_t res;
  if (rc == 0) rc = dir_wal_load(w, 0, NULL, NULL, &res, why, whylen);
  if (rc == 0 && res.records > 0) {
    dir_disk_say(why, whylen, "%s/%s already holds %lld records", dir, name, (long long)res.records);
    rc = MAYFLY_EPROTO;
  }
  g_free(name);
  if (rc != 0) {
    dir_wal_close(w);
    return rc;
  }
  dir_wal_preallocate(w, DIR_WAL_PREALLOC);
  *out = w;
  return 0;
}

/* A worker thread: writes one batch in its turn (after opening a new
 * segment if asked: such a batch goes alone), then syncs the file. The sync
 * covers every batch written before it began, earlier tickets included. */
static void batch_work(uv_work_t *req) {
  batch_t *b = req->data;
  dir_store_t *s = b->store;
  dir_wal_rec_t *recs = g_new(dir_wal_rec_t, b->lens->len);
  const uint8_t *p = b->data->data;
  for (guint i = 0; i < b->lens->len; i++) {
    recs[i].data = p;
    recs[i].len = g_array_index(b->lens, uint32_t, i);
    p += recs[i].len;
  }
  g_mutex_lock(&s->turn_lock);
  while (s->written != b->ticket - 1) g_cond_wait(&s->turn, &s->turn_lock);
  int64_t t0 = g_get_monotonic_time();
  if (b->new_segment) {
    dir_wal_t *w = NULL;
    b->rc = open_segment(s->dir, b->first_seq, &w, b->why, sizeof b->why);
    if (b->rc == 0) {
      dir_wal_close(s->wal);
      s->wal = w;
    }
  }
  dir_wal_t *wal = s->wal;
  if (b->rc == 0) b->rc = dir_wal_write(wal, recs, b->lens->len, b->why, sizeof b->why);
  s->written = b->ticket;
  g_cond_broadcast(&s->turn);
  g_mutex_unlock(&s->turn_lock);
  if (b->rc == 0) b->rc = dir_wal_sync(wal, b->why, sizeof b->why);
  b->write_us = g_get_monotonic_time() - t0;
  g_free(recs);
}

static void batch_done(uv_work_t *req, int status);
static void maybe_snapshot(dir_store_t *s);

static void submit(dir_store_t *s, batch_t *b) {
  MF_CHECK(s->inflight.length < STORE_INFLIGHT && b->lens->len > 0);
  MF_CHECK(!b->new_segment || s->inflight.length == 0);
  b->ticket = ++s->next_ticket;
  g_queue_push_tail(&s->inflight, b);
  uv_queue_work(s->loop, &b->work, batch_work, batch_done);
}

/* Starts the next write when a slot is free: a sealed batch first, else
 * the open one (a new open batch then takes the next records); a batch that
 * begins a new segment waits until nothing else is in flight. */
static void submit_next(dir_store_t *s) {
  if (s->inflight.length >= STORE_INFLIGHT) return;
  batch_t *b = g_queue_peek_head(&s->sealed);
  if (b == NULL && s->open->lens->len > 0) b = s->open;
  if (b == NULL || (b->new_segment && s->inflight.length > 0)) return;
  if (b == s->open) {
    s->open = batch_new(s, s->applied + 1);
  } else {
    g_queue_pop_head(&s->sealed);
  }
  submit(s, b);
}

static void batch_done(uv_work_t *req, int status) {
  batch_t *b = req->data;
  dir_store_t *s = b->store;
  gboolean was_in_flight = g_queue_remove(&s->inflight, b);
  MF_CHECK(status == 0 && was_in_flight);
  if (b->rc != 0) {
    /* What reached the disk is no longer known: answering from this state
     * could tell clients of changes a restart would not have. */
    MF_ERROR("the log cannot be written: %s; stopping (a restart recovers what is on disk)",
             b->why);
    exit(1);
  }
  int64_t n = b->lens->len;
  /* Its sync began after every earlier batch was written. */
  s->durable = MAX(s->durable, b->first_seq + n - 1);
  s->st.log_records += n;
  s->st.log_bytes += (int64_t)b->data->len + n * DIR_WAL_FRAME_HEADER;
  s->st.log_fsyncs++;
  s->since_records += n;
  s->since_bytes += (int64_t)b->data->len + n * DIR_WAL_FRAME_HEADER;
  MF_DEBUG("log: %lld records written and synced in %lld us", (long long)n,
           (long long)b->write_us);
  batch_free(b);
  if (s->cb != NULL) s->cb(s->cb_ud, s->durable);
  maybe_snapshot(s);
  /* While running, the check handle submits at the end of this iteration,
   * with whatever else it brings; once stopping, nothing else will. */
  if (s->stopping) submit_next(s);
}

static void check_cb(uv_check_t *h) {
  submit_next(h->data);
}

/* The tree's observer: every applied record but renewals joins the open batch. */
static void observe(const ns_record_t *rec, void *ud) {
  dir_store_t *s = ud;
  if (rec->type == NS_REC_RENEW) return; /* leases are soft state */
  batch_t *b = s->open;
  guint before = b->data->len;
  int rc = ns_rec_encode(rec, b->data);
  /* The tree's limits keep every record it accepts within the codec's. */
  MF_CHECK(rc == 0);
  uint32_t len = b->data->len - before;
  g_array_append_val(b->lens, len);
  s->applied++;
  if (s->stopping) submit_next(s);
}

/* ---- snapshots --------------------------------------------------------- */

static void snap_work(uv_work_t *req) {
  dir_store_t *s = req->data;
  dir_snapfile_finish(&s->snap_job);
}

static void snap_done(uv_work_t *req, int status) {
  dir_store_t *s = req->data;
  MF_CHECK(status == 0);
  s->snap_running = 0;
  dir_snapfile_job_t *j = &s->snap_job;
  if (j->rc != 0) {
    MF_WARN("snapshot at record %lld failed: %s; the log is kept whole", (long long)j->seq, j->why);
    return;
  }
  s->st.snapshots++;
  s->st.last_snapshot_ms = j->wall_ms;
  MF_INFO("snapshot at record %lld: %lld bytes in %lld ms (the loop paused %lld us to fork); "
          "%d older files removed",
          (long long)j->seq, (long long)j->bytes, (long long)j->took_ms,
          (long long)j->fork_us, j->removed);
}

/* Takes a snapshot when enough log has piled up since the last one: rotates
 * the log at the newest applied record and forks the child that writes the
 * tree as it is now. */
static void maybe_snapshot(dir_store_t *s) {
  if (s->snap_running || s->stopping) return;
  if (s->since_records < s->snapshot_records && (uint64_t)s->since_bytes < s->snapshot_bytes) {
    return;
  }
  /* Records applied so far belong to the snapshot; the next ones start the
   * new segment. */
  if (s->open->lens->len > 0) {
    g_queue_push_tail(&s->sealed, s->open);
    s->open = batch_new(s, s->applied + 1);
  }
  s->open->new_segment = 1;
  char why[256];
  int rc = dir_snapfile_start(s->dir, s->tree, s->applied, &s->snap_job, why, sizeof why);
  s->since_records = s->since_bytes = 0;
  if (rc != 0) {
    MF_WARN("cannot take a snapshot: %s", why);
    return;
  }
  s->snap_running = 1;
  s->snap_work.data = s;
  uv_queue_work(s->loop, &s->snap_work, snap_work, snap_done);
}

/* ---- recovery ---------------------------------------------------------- */

/* Takes the data directory's lock, waiting up to 10 s for an earlier
 * process (or its snapshot child, which shares the lock) to let it go. */
static int lock_dir(dir_store_t *s, char *why, size_t whylen) {
  char *path = g_build_filename(s->dir, "LOCK", NULL);
  s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (s->lock_fd < 0) {
    dir_disk_say(why, whylen, "cannot open %s: %s", path, g_strerror(errno));
    g_free(path);
    return MAYFLY_EIO;
  }
  int64_t deadline = mf_now_ms() + 10000;
  int warned = 0;
  while (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) {
      dir_disk_say(why, whylen, "cannot lock %s: %s", path, g_strerror(errno));
      g_free(path);
      return MAYFLY_EIO;
    }
    if (mf_now_ms() > deadline) {
      dir_disk_say(why, whylen, "%s is in use by another mayfly-directory (its lock %s is held)", s->dir,
          path);
      g_free(path);
      return MAYFLY_EIO;
    }
    if (!warned++) MF_INFO("waiting for another process to let go of %s", path);
    g_usleep(20000);
  }
  g_free(path);
  return 0;
}

/* A file of the data directory: its kind and sequence number. */
typedef struct {
  char *name;
  int64_t seq;
} dir_file_t;

static gint cmp_file(gconstpointer a, gconstpointer b) {
  int64_t x = ((const dir_file_t *)a)->seq, y = ((const dir_file_t *)b)->seq;
  return x < y ? -1 : x > y;
}

static void clear_file(gpointer p) {
  g_free(((dir_file_t *)p)->name);
}

/* Lists the segments and snapshots, sorted by sequence number, and removes
 * temporary files a crash left behind. */
static int list_files(dir_store_t *s, GArray *segs, GArray *snaps, char *why, size_t whylen) {
  GError *err = NULL;
  GDir *d = g_dir_open(s->dir, 0, &err);
  if (d == NULL) {
    dir_disk_say(why, whylen, "cannot read %s: %s", s->dir, err->message);
    g_error_free(err);
    return MAYFLY_EIO;
  }
  const char *name;
  while ((name = g_dir_read_name(d)) != NULL) {
    dir_file_t f = {NULL, 0};
    if (dir_snapfile_parse_name(name, "wal-", ".log", &f.seq)) {
      f.name = g_strdup(name);
      g_array_append_val(segs, f);
    } else if (dir_snapfile_parse_name(name, "snap-", ".snap", &f.seq)) {
      f.name = g_strdup(name);
      g_array_append_val(snaps, f);
    } else if (g_str_has_suffix(name, ".tmp")) {
      char *p = g_build_filename(s->dir, name, NULL);
      if (g_unlink(p) == 0) MF_INFO("removed %s, left by an unfinished snapshot", p);
      g_free(p);
    }
  }
  g_dir_close(d);
  g_array_sort(segs, cmp_file);
  g_array_sort(snaps, cmp_file);
  return 0;
}

/* Replays one segment's records into the tree. */
typedef struct {
  ns_tree_t *tree;
  const char *path;
  int64_t seq;       /* of the record being read */
  int64_t skip_upto; /* records up to this seq are in the snapshot already */
  int64_t applied;
  char *why;
  size_t whylen;
  ns_rec_buf_t buf;
} replay_t;

static int replay_record(const uint8_t *data, uint32_t len, int64_t offset, void *ud) {
  replay_t *r = ud;
  int64_t seq = r->seq++;
  if (seq <= r->skip_upto) return 0;
  char reason[256] = "";
  int rc = ns_rec_decode(data, len, &r->buf, reason, sizeof reason);
  if (rc != 0) {
    dir_disk_say(r->why, r->whylen, "%s: record %lld at offset %lld does not decode (%s)", r->path,
        (long long)seq, (long long)offset, reason);
    return MAYFLY_EPROTO;
  }
  rc = ns_tree_apply(r->tree, &r->buf.rec, NULL, reason, sizeof reason);
  if (rc != 0) {
    dir_disk_say(r->why, r->whylen, "%s: record %lld at offset %lld does not apply (%s: %s)", r->path,
        (long long)seq, (long long)offset, mayfly_strerror(rc), reason);
    return MAYFLY_EPROTO;
  }
  r->applied++;
  return 0;
}

/* Moves a segment that follows a cut out of the way (renamed *.cut). */
static void set_aside(dir_store_t *s, const char *name) {
  char *from = g_build_filename(s->dir, name, NULL);
  char *to = g_strdup_printf("%s.cut", from);
  if (g_rename(from, to) == 0) {
    MF_WARN("--recover-truncate: %s follows the cut; kept aside as %s", from, to);
  } else {
    MF_WARN("--recover-truncate: cannot move %s aside: %s", from, g_strerror(errno));
  }
  g_free(from);
  g_free(to);
}

static int recover(dir_store_t *s, int64_t lease_ms, int64_t grace_ms, char *why,
                   size_t whylen) {
  GArray *segs = g_array_new(FALSE, FALSE, sizeof(dir_file_t));
  GArray *snaps = g_array_new(FALSE, FALSE, sizeof(dir_file_t));
  g_array_set_clear_func(segs, clear_file);
  g_array_set_clear_func(snaps, clear_file);
  int rc = list_files(s, segs, snaps, why, whylen);
  int64_t base = 0;
  ns_tree_t *t = NULL;
  int64_t now = mf_now_ms();
  /* The newest snapshot that reads back whole. */
  for (guint i = snaps->len; rc == 0 && i > 0; i--) {
    const dir_file_t *f = &g_array_index(snaps, dir_file_t, i - 1);
    char reason[512] = "";
    ns_snap_meta_t meta = {0, 0};
    if (dir_snapfile_load(s->dir, f->name, lease_ms, grace_ms, now, &t, &meta, reason,
                          sizeof reason) == 0) {
      int64_t seq = meta.seq;
      if (seq == f->seq) {
        s->st.last_snapshot_ms = meta.wall_ms;
        base = seq;
        MF_INFO("recovery: snapshot %s/%s, records 1..%lld", s->dir, f->name, (long long)seq);
        break;
      }
      dir_disk_say(reason, sizeof reason, "it says it covers record %lld, its name %lld", (long long)seq,
          (long long)f->seq);
      ns_tree_free(t);
      t = NULL;
    }
    MF_WARN("recovery: snapshot %s/%s is damaged (%s); trying an older one", s->dir, f->name,
            reason);
  }
  if (t == NULL) t = ns_tree_new(lease_ms, grace_ms);
  replay_t r = {.tree = t, .why = why, .whylen = whylen};
  ns_rec_buf_init(&r.buf);
  int64_t next = base + 1; /* seq of the next record to apply */
  for (guint i = 0; rc == 0 && i < segs->len; i++) {
    const dir_file_t *f = &g_array_index(segs, dir_file_t, i);
    /* A segment ends where the next begins: one wholly before the
     * snapshot's end holds nothing to replay (deleting it was cut short). */
    if (i + 1 < segs->len && g_array_index(segs, dir_file_t, i + 1).seq <= next) continue;
    char *path = g_build_filename(s->dir, f->name, NULL);
    dir_wal_t *w = NULL;
    dir_wal_load_result_t res;
    rc = dir_wal_open(s->dir, f->name, &w, why, whylen);
    if (rc == 0 && f->seq > next) {
      /* Records next .. f->seq - 1 are nowhere: fine only if nothing follows. */
      rc = dir_wal_load(w, 0, NULL, NULL, &res, why, whylen);
      if (rc == 0 && res.records > 0) {
        if (s->recover_truncate) {
          MF_WARN("recovery: records %lld..%lld are missing before %s", (long long)next,
                  (long long)f->seq - 1, path);
          for (guint k = i; k < segs->len; k++) {
            set_aside(s, g_array_index(segs, dir_file_t, k).name);
          }
          dir_wal_close(w);
          g_free(path);
          break;
        }
        dir_disk_say(why, whylen,
            "%s starts at record %lld but the log before it ends at record %lld: records are "
            "missing (--recover-truncate starts with what comes before)",
            path, (long long)f->seq, (long long)next - 1);
        rc = MAYFLY_EPROTO;
      }
    } else if (rc == 0) {
      r.path = path;
      r.seq = f->seq;
      r.skip_upto = next - 1;
      unsigned flags = s->recover_truncate ? DIR_WAL_CUT_CORRUPT : 0;
      rc = dir_wal_load(w, flags, replay_record, &r, &res, why, whylen);
      if (rc == MAYFLY_EPROTO && why[0] != '\0' && !s->recover_truncate) {
        size_t l = strlen(why);
        g_snprintf(why + l, whylen - l, "; --recover-truncate cuts the log there");
      }
      if (rc == 0) {
        if (res.dropped_bytes > 0 && res.corrupt_at >= 0) {
          MF_WARN("recovery: %s: cut at the corrupt record at offset %lld, %lld bytes dropped "
                  "(--recover-truncate)",
                  path, (long long)res.corrupt_at, (long long)res.dropped_bytes);
        } else if (res.dropped_bytes > 0) {
          MF_WARN("recovery: %s: dropped %lld bytes of a torn last record at offset %lld", path,
                  (long long)res.dropped_bytes, (long long)res.end);
        }
        if (f->seq + res.records > next) next = f->seq + res.records;
        if (res.corrupt_at >= 0) {
          for (guint k = i + 1; k < segs->len; k++) {
            set_aside(s, g_array_index(segs, dir_file_t, k).name);
          }
          dir_wal_close(w);
          g_free(path);
          break;
        }
      }
    }
    dir_wal_close(w);
    g_free(path);
  }
  ns_rec_buf_clear(&r.buf);
  g_array_free(segs, TRUE);
  g_array_free(snaps, TRUE);
  if (rc != 0) {
    ns_tree_free(t);
    return rc;
  }
  ns_tree_restart_times(t, now);
  s->tree = t;
  s->applied = s->durable = next - 1;
  s->st.recovered_records = r.applied;
  s->st.recovered_nodes = ns_tree_count(t);
  return 0;
}

/* ---- the store --------------------------------------------------------- */

int dir_store_open(uv_loop_t *loop, const dir_store_config_t *cfg, int64_t default_lease_ms,
                   int64_t grace_ms, dir_store_t **out, ns_tree_t **tree, char *why,
                   size_t whylen) {
  why[0] = '\0';
  int64_t t0 = g_get_monotonic_time();
  if (g_mkdir_with_parents(cfg->data_dir, 0755) != 0) {
    dir_disk_say(why, whylen, "cannot create %s: %s", cfg->data_dir, g_strerror(errno));
    return MAYFLY_EIO;
  }
  dir_store_t *s = g_new0(dir_store_t, 1);
  s->loop = loop;
  s->dir = g_strdup(cfg->data_dir);
  s->recover_truncate = cfg->recover_truncate;
  s->snapshot_records = cfg->snapshot_records > 0 ? cfg->snapshot_records : INT64_MAX;
  s->snapshot_bytes = cfg->snapshot_bytes > 0 ? cfg->snapshot_bytes : UINT64_MAX;
  s->lock_fd = -1;
  g_queue_init(&s->sealed);
  g_queue_init(&s->inflight);
  g_mutex_init(&s->turn_lock);
  g_cond_init(&s->turn);
  int rc = lock_dir(s, why, whylen);
  if (rc == 0) rc = recover(s, default_lease_ms, grace_ms, why, whylen);
  /* Every start appends to a segment of its own, so a torn tail of an
   * earlier one never has records after it. */
  if (rc == 0) rc = open_segment(s->dir, s->applied + 1, &s->wal, why, whylen);
  if (rc != 0) {
    if (s->tree != NULL) ns_tree_free(s->tree);
    s->tree = NULL;
    dir_store_close(s);
    return rc;
  }
  s->open = batch_new(s, s->applied + 1);
  uv_check_init(loop, &s->check);
  s->check.data = s;
  uv_check_start(&s->check, check_cb);
  ns_tree_set_observer(s->tree, observe, s);
  s->st.recovery_ms = (g_get_monotonic_time() - t0) / 1000;
  *out = s;
  *tree = s->tree;
  return 0;
}

void dir_store_set_durable_cb(dir_store_t *s, dir_store_durable_cb cb, void *ud) {
  s->cb = cb;
  s->cb_ud = ud;
}

int64_t dir_store_unsynced(const dir_store_t *s) {
  return s->applied > s->durable ? s->applied : 0;
}

void dir_store_stats(const dir_store_t *s, dir_store_stats_t *out) {
  *out = s->st;
  out->seq = s->applied;
}

void dir_store_stop(dir_store_t *s) {
  if (s == NULL || s->stopping) return;
  s->stopping = 1;
  uv_check_stop(&s->check);
  uv_close((uv_handle_t *)&s->check, NULL);
  submit_next(s);
}

void dir_store_close(dir_store_t *s) {
  if (s == NULL) return;
  MF_CHECK(s->inflight.length == 0 && !s->snap_running);
  g_mutex_clear(&s->turn_lock);
  g_cond_clear(&s->turn);
  if (s->tree != NULL) ns_tree_set_observer(s->tree, NULL, NULL);
  batch_free(s->open);
  batch_t *b;
  while ((b = g_queue_pop_head(&s->sealed)) != NULL) batch_free(b);
  dir_wal_close(s->wal);
  if (s->lock_fd >= 0) close(s->lock_fd);
  g_free(s->dir);
  g_free(s);
}
