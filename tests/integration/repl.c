/*
 * Helpers of the replication tests (see repl.h): control-API views of
 * chains, and the checked load of writers and readers.
 */
#include "repl.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/ctl.h"
#include "common/error.h"

/* ---- control API ---- */

/* One call through the ctl, following the leader (common/ctl.h). */
#define CTL_CALL(ctl, method, ...) MF_CTL_CALL((ctl), method, __VA_ARGS__)

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
  g_usleep((gulong)ms * 1000);
}

int mf_repl_create(const char *dir, const char *path, mayfly_kind_t kind, int replicas, int blocks,
                   int high_watermark, char *why, size_t len) {
  mf_ctl_t *ctl;
  int rc = mf_ctl_open(dir, 10000, 2000, &ctl);
  if (rc != 0) return rc;
  char *parent = g_path_get_dirname(path);
  if (strcmp(parent, "/") != 0) {
    rc = CTL_CALL(ctl, mkdir, parent, TRUE, 0, 0);
    if (rc == MAYFLY_EEXIST) rc = 0;
  }
  g_free(parent);
  if (rc == 0) {
    MayflyCreateOptions *co = g_object_new(MAYFLY_TYPE_CREATE_OPTIONS, NULL);
    co->blocks = blocks;
    co->high_watermark = high_watermark;
    /* The low watermark may be at most half the high one. */
    if (high_watermark > 0 && high_watermark < 2 * 25) co->low_watermark = high_watermark / 4;
    co->replicas = replicas;
    co->__isset_replicas = TRUE;
    MayflyNodeInfo *ni = g_object_new(MAYFLY_TYPE_NODE_INFO, NULL);
    rc = CTL_CALL(ctl, create_ns, &ni, path, (MayflyNodeKind)kind, co, 0, 0);
    g_object_unref(ni);
    g_object_unref(co);
  }
  if (rc != 0 && why != NULL) snprintf(why, len, "%s", mayfly_last_error());
  mf_ctl_close(ctl);
  return rc;
}

static void member_from(mf_repl_member_t *m, int32_t id, const char *addr, int32_t block,
                        int64_t gen) {
  m->server_id = id;
  m->block_index = block;
  m->generation = gen;
  snprintf(m->address, sizeof m->address, "%s", addr != NULL ? addr : "");
}

int mf_repl_layout(const char *dir, const char *path, mf_repl_layout_t *out) {
  memset(out, 0, sizeof *out);
  mf_ctl_t *ctl;
  int rc = mf_ctl_open(dir, 10000, 2000, &ctl);
  if (rc != 0) return rc;
  MayflyLayout *lay = g_object_new(MAYFLY_TYPE_LAYOUT, NULL);
  rc = CTL_CALL(ctl, get_layout, &lay, path);
  if (rc == 0) {
    out->version = lay->version;
    out->n = lay->partitions->len;
    out->p = g_new0(mf_repl_part_t, out->n);
    for (guint i = 0; i < lay->partitions->len; i++) {
      const MayflyPartition *p = g_ptr_array_index(lay->partitions, i);
      mf_repl_part_t *q = &out->p[i];
      q->lo = p->range_lo;
      q->hi = p->range_hi;
      q->lost = p->__isset_lost && p->lost;
      q->replicas = p->__isset_replicas && p->replicas > 0 ? p->replicas : 1;
      q->chain_version = p->__isset_chain_version ? p->chain_version : 0;
      snprintf(q->state, sizeof q->state, "%s", p->__isset_state && p->state ? p->state : "");
      if (p->__isset_chain && p->chain != NULL && p->chain->len > 0) {
        for (guint k = 0; k < p->chain->len && k < MF_REPL_MAX; k++) {
          const MayflyReplica *r = g_ptr_array_index(p->chain, k);
          member_from(&q->m[k], r->server_id, r->server_address, r->block_index, r->generation);
          if (r->__isset_zone && r->zone != NULL) {
            snprintf(q->m[k].zone, sizeof q->m[k].zone, "%s", r->zone);
          }
        }
        q->n = (int)MIN(p->chain->len, MF_REPL_MAX);
      } else {
        member_from(&q->m[0], p->server_id, p->server_address, p->block_index, p->generation);
        q->n = 1;
      }
    }
  }
  g_object_unref(lay);
  mf_ctl_close(ctl);
  return rc;
}

void mf_repl_layout_clear(mf_repl_layout_t *l) {
  g_free(l->p);
  memset(l, 0, sizeof *l);
}

void mf_repl_layout_print(const char *label, const mf_repl_layout_t *l) {
  fprintf(stderr, "  %s: layout v%lld, %zu partitions\n", label, (long long)l->version, l->n);
  for (size_t i = 0; i < l->n; i++) {
    const mf_repl_part_t *p = &l->p[i];
    GString *s = g_string_new(NULL);
    for (int k = 0; k < p->n; k++) {
      g_string_append_printf(s, " %d:%d@%s", p->m[k].server_id, p->m[k].block_index,
                             p->m[k].address);
    }
    fprintf(stderr, "    [%lld,%lld) R=%d %s v%lld:%s\n", (long long)p->lo, (long long)p->hi,
            p->replicas, p->state[0] ? p->state : "-", (long long)p->chain_version, s->str);
    g_string_free(s, TRUE);
  }
}

int mf_repl_stats(const char *dir, mf_repl_stats_t *out) {
  memset(out, 0, sizeof *out);
  mf_ctl_t *ctl;
  int rc = mf_ctl_open(dir, 10000, 2000, &ctl);
  if (rc != 0) return rc;
  MayflyStats *s = g_object_new(MAYFLY_TYPE_STATS, NULL);
  rc = CTL_CALL(ctl, stats, &s);
  if (rc == 0) {
    out->chain_failovers = s->__isset_chain_failovers ? s->chain_failovers : 0;
    out->rereplications = s->__isset_rereplications ? s->rereplications : 0;
    out->rereplicated_bytes = s->__isset_rereplicated_bytes ? s->rereplicated_bytes : 0;
    out->partitions_degraded = s->__isset_partitions_degraded ? s->partitions_degraded : 0;
    out->splits = s->splits;
    out->rollbacks = s->rollbacks;
  }
  g_object_unref(s);
  mf_ctl_close(ctl);
  return rc;
}

/* The host part of "HOST:PORT" or "[V6]:PORT" into buf. */
static void host_of(const char *address, char *buf, size_t len) {
  const char *colon = strrchr(address, ':');
  size_t n = colon != NULL ? (size_t)(colon - address) : strlen(address);
  if (n >= 2 && address[0] == '[' && address[n - 1] == ']') {
    address++;
    n -= 2;
  }
  snprintf(buf, len, "%.*s", (int)n, address);
}

int mf_repl_chains_ok(const mf_repl_layout_t *l, int r, const char *const *gone, int ngone,
                      char *why, size_t len) {
  if (l->n == 0) {
    snprintf(why, len, "no partitions");
    return 0;
  }
  for (size_t i = 0; i < l->n; i++) {
    const mf_repl_part_t *p = &l->p[i];
    if (p->state[0] != '\0' && strcmp(p->state, "ok") != 0) {
      snprintf(why, len, "partition %zu is %s", i, p->state);
      return 0;
    }
    if (p->n != r) {
      snprintf(why, len, "partition %zu has %d members, not %d", i, p->n, r);
      return 0;
    }
    for (int a = 0; a < p->n; a++) {
      char ha[64], hb[64];
      host_of(p->m[a].address, ha, sizeof ha);
      for (int b = a + 1; b < p->n; b++) {
        host_of(p->m[b].address, hb, sizeof hb);
        if (strcmp(ha, hb) == 0) {
          snprintf(why, len, "partition %zu has two members on host %s", i, ha);
          return 0;
        }
      }
      for (int g = 0; g < ngone; g++) {
        if (strcmp(p->m[a].address, gone[g]) == 0) {
          snprintf(why, len, "partition %zu still has %s", i, gone[g]);
          return 0;
        }
      }
    }
  }
  return 1;
}

int64_t mf_repl_wait_chains(const char *dir, const char *const *paths, int npaths, int r,
                            const char *const *gone, int ngone, int timeout_ms, char *why,
                            size_t len) {
  int64_t t0 = now_ms();
  for (;;) {
    int ok = 1;
    for (int i = 0; ok && i < npaths; i++) {
      mf_repl_layout_t l;
      int rc = mf_repl_layout(dir, paths[i], &l);
      if (rc != 0) {
        snprintf(why, len, "%s: layout: %s", paths[i], mayfly_strerror(rc));
        ok = 0;
      } else {
        char w[200];
        ok = mf_repl_chains_ok(&l, r, gone, ngone, w, sizeof w);
        if (!ok) snprintf(why, len, "%s: %s", paths[i], w);
      }
      mf_repl_layout_clear(&l);
    }
    if (ok) return now_ms() - t0;
    if (now_ms() - t0 > timeout_ms) return -1;
    sleep_ms(50);
  }
}

int mf_repl_uses(const char *dir, const char *path, const char *address) {
  mf_repl_layout_t l;
  if (mf_repl_layout(dir, path, &l) != 0) return 0;
  int uses = 0;
  for (size_t i = 0; i < l.n; i++) {
    for (int k = 0; k < l.p[i].n; k++) uses |= strcmp(l.p[i].m[k].address, address) == 0;
  }
  mf_repl_layout_clear(&l);
  return uses;
}

/* ---- the load ---- */

#define REC 1024 /* file record bytes */

typedef struct worker {
  struct mf_load *load;
  int id;
  GThread *thread;
  mayfly_client_t *c;
  mayfly_ns_t *kv, *q, *file;
} worker_t;

struct mf_load {
  char *dir;
  int writers, readers, timeout_ms;
  int64_t file_slots; /* records per writer */
  gint stop;
  /* Per writer: how many of each kind were acknowledged (seq 0..n-1). */
  int64_t *kv_acked, *q_acked, *file_acked;
  int64_t acked_total;
  GMutex lock;       /* popped, errors, first_error */
  GHashTable *popped; /* item string -> count */
  GPtrArray *extra;   /* items pushed by others (mf_load_expect_item) */
  int64_t errors, dups, stale, bad;
  char first_error[256];
  worker_t *w;
  int nw;
  int has_kv, has_q, has_file;
};

static void note(mf_load_t *l, int64_t *counter, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void note(mf_load_t *l, int64_t *counter, const char *fmt, ...) {
  g_mutex_lock(&l->lock);
  (*counter)++;
  if (l->first_error[0] == '\0') {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->first_error, sizeof l->first_error, fmt, ap);
    va_end(ap);
  }
  g_mutex_unlock(&l->lock);
}

static void kv_key(char *buf, size_t len, int w, int64_t j) {
  snprintf(buf, len, "w%d-%lld", w, (long long)j);
}

static void kv_val(char *buf, size_t len, int w, int64_t j) {
  snprintf(buf, len, "value of w%d-%lld, padded to look like data", w, (long long)j);
}

/* Record j of writer w: a header and a fill byte derived from both. */
static void file_rec(uint8_t *buf, int w, int64_t j) {
  memset(buf, (int)(0x20 + (w * 31 + j) % 90), REC);
  snprintf((char *)buf, 32, "w%d j%lld;", w, (long long)j);
}

static int64_t file_off(const mf_load_t *l, int w, int64_t j) {
  return ((j % l->file_slots) * l->writers + w) * REC;
}

/* Parses a record; returns j or -1 when it is not one of writer w's. */
static int64_t file_rec_parse(const uint8_t *buf, int w) {
  int rw = -1;
  long long j = -1;
  char head[33];
  memcpy(head, buf, 32);
  head[32] = '\0';
  if (sscanf(head, "w%d j%lld;", &rw, &j) != 2 || rw != w || j < 0) return -1;
  uint8_t want[REC];
  file_rec(want, w, j);
  return memcmp(want, buf, REC) == 0 ? j : -1;
}

static gpointer writer_main(gpointer p) {
  worker_t *wk = p;
  mf_load_t *l = wk->load;
  int w = wk->id;
  for (int64_t j = 0; !g_atomic_int_get(&l->stop); j++) {
    if (wk->kv != NULL) {
      char k[64], v[128];
      kv_key(k, sizeof k, w, j);
      kv_val(v, sizeof v, w, j);
      int rc = mayfly_kv_put(wk->kv, k, strlen(k), v, strlen(v));
      if (rc != 0) {
        note(l, &l->errors, "writer %d: put %s: %s", w, k, mayfly_strerror(rc));
        break;
      }
      __atomic_store_n(&l->kv_acked[w], j + 1, __ATOMIC_RELEASE);
      __atomic_fetch_add(&l->acked_total, 1, __ATOMIC_RELAXED);
    }
    if (wk->q != NULL) {
      char item[64];
      kv_key(item, sizeof item, w, j);
      int rc = mayfly_queue_push(wk->q, item, strlen(item));
      if (rc != 0) {
        note(l, &l->errors, "writer %d: push %s: %s", w, item, mayfly_strerror(rc));
        break;
      }
      __atomic_store_n(&l->q_acked[w], j + 1, __ATOMIC_RELEASE);
      __atomic_fetch_add(&l->acked_total, 1, __ATOMIC_RELAXED);
    }
    if (wk->file != NULL) {
      uint8_t rec[REC];
      file_rec(rec, w, j);
      int rc = mayfly_file_write(wk->file, (uint64_t)file_off(l, w, j), rec, REC);
      if (rc != 0) {
        note(l, &l->errors, "writer %d: file write %lld: %s", w, (long long)j,
             mayfly_strerror(rc));
        break;
      }
      __atomic_store_n(&l->file_acked[w], j + 1, __ATOMIC_RELEASE);
      __atomic_fetch_add(&l->acked_total, 1, __ATOMIC_RELAXED);
    }
  }
  return NULL;
}

static void record_pop(mf_load_t *l, const void *item, size_t len) {
  char *s = g_strndup(item, len);
  g_mutex_lock(&l->lock);
  gpointer old = g_hash_table_lookup(l->popped, s);
  int n = GPOINTER_TO_INT(old) + 1;
  g_hash_table_replace(l->popped, s, GINT_TO_POINTER(n));
  int dup = n > 1;
  g_mutex_unlock(&l->lock);
  if (dup) note(l, &l->dups, "item %.*s popped twice", (int)len, (const char *)item);
}

/* The newest record of writer w at slot s that was acknowledged when a
 * reader saw `acked` of them: the largest j < acked with j % slots == s,
 * or -1. */
static int64_t latest_at(const mf_load_t *l, int64_t acked, int64_t s) {
  if (acked <= s) return -1;
  int64_t j = ((acked - 1 - s) / l->file_slots) * l->file_slots + s;
  return j;
}

static gpointer reader_main(gpointer p) {
  worker_t *wk = p;
  mf_load_t *l = wk->load;
  GRand *rnd = g_rand_new_with_seed((guint32)(wk->id * 7919 + 1));
  while (!g_atomic_int_get(&l->stop)) {
    /* After an error, do not spin: the count is what matters. */
    if (__atomic_load_n(&l->errors, __ATOMIC_RELAXED) > 0) sleep_ms(10);
    int w = g_rand_int_range(rnd, 0, l->writers);
    if (wk->kv != NULL) {
      int64_t a = __atomic_load_n(&l->kv_acked[w], __ATOMIC_ACQUIRE);
      if (a > 0) {
        int64_t j = g_rand_int_range(rnd, 0, (gint32)MIN(a, G_MAXINT32));
        char k[64], want[128];
        kv_key(k, sizeof k, w, j);
        kv_val(want, sizeof want, w, j);
        void *v = NULL;
        size_t vl = 0;
        int rc = mayfly_kv_get(wk->kv, k, strlen(k), &v, &vl);
        if (rc == MAYFLY_ENOKEY) {
          note(l, &l->stale, "reader %d: acknowledged key %s not found", wk->id, k);
        } else if (rc != 0) {
          note(l, &l->errors, "reader %d: get %s: %s", wk->id, k, mayfly_strerror(rc));
        } else if (vl != strlen(want) || memcmp(v, want, vl) != 0) {
          note(l, &l->bad, "reader %d: key %s has a wrong value", wk->id, k);
        }
        mayfly_free(v);
      }
    }
    if (wk->q != NULL) {
      void *item = NULL;
      size_t il = 0;
      int rc = mayfly_queue_pop(wk->q, &item, &il, 100);
      if (rc == 0) {
        record_pop(l, item, il);
      } else if (rc != MAYFLY_EAGAIN) {
        note(l, &l->errors, "reader %d: pop: %s", wk->id, mayfly_strerror(rc));
      }
      mayfly_free(item);
    }
    if (wk->file != NULL) {
      int64_t a = __atomic_load_n(&l->file_acked[w], __ATOMIC_ACQUIRE);
      if (a > 0) {
        int64_t s = g_rand_int_range(rnd, 0, (gint32)MIN(a, l->file_slots));
        int64_t least = latest_at(l, a, s);
        uint8_t buf[REC];
        int64_t n = mayfly_file_read(wk->file, (uint64_t)file_off(l, w, s), buf, REC);
        if (n < 0) {
          note(l, &l->errors, "reader %d: file read: %s", wk->id, mayfly_strerror((int)n));
        } else {
          int64_t j = n == REC ? file_rec_parse(buf, w) : -1;
          if (j < 0 || j % l->file_slots != s) {
            note(l, &l->bad, "reader %d: record %lld of writer %d is torn or wrong", wk->id,
                 (long long)s, w);
          } else if (j < least) {
            note(l, &l->stale, "reader %d: record slot %lld of writer %d: read j %lld, "
                               "%lld was acknowledged", wk->id, (long long)s, w, (long long)j,
                 (long long)least);
          }
        }
      }
    }
  }
  g_rand_free(rnd);
  return NULL;
}

static int worker_open(mf_load_t *l, worker_t *wk, const char *kv, const char *q,
                       const char *file) {
  mayfly_options_t o = {.timeout_ms = l->timeout_ms};
  int rc = mayfly_connect(l->dir, &o, &wk->c);
  if (rc == 0 && kv != NULL) rc = mayfly_mount(wk->c, kv, MAYFLY_KIND_KV, NULL, &wk->kv);
  if (rc == 0 && q != NULL) rc = mayfly_mount(wk->c, q, MAYFLY_KIND_QUEUE, NULL, &wk->q);
  if (rc == 0 && file != NULL) rc = mayfly_mount(wk->c, file, MAYFLY_KIND_FILE, NULL, &wk->file);
  if (rc != 0) note(l, &l->errors, "worker %d: connect/mount: %s", wk->id, mayfly_strerror(rc));
  return rc;
}

static void worker_close(worker_t *wk) {
  mayfly_unmount(wk->kv);
  mayfly_unmount(wk->q);
  mayfly_unmount(wk->file);
  mayfly_disconnect(wk->c);
  wk->kv = wk->q = wk->file = NULL;
  wk->c = NULL;
}

mf_load_t *mf_load_start(const char *dir, const char *kv, const char *queue, const char *file,
                         int64_t file_bytes, int writers, int readers, int timeout_ms) {
  mf_load_t *l = g_new0(mf_load_t, 1);
  l->dir = g_strdup(dir);
  l->writers = writers;
  l->readers = readers;
  l->timeout_ms = timeout_ms;
  l->file_slots = file != NULL ? MAX(1, file_bytes / REC / writers) : 1;
  l->kv_acked = g_new0(int64_t, writers);
  l->q_acked = g_new0(int64_t, writers);
  l->file_acked = g_new0(int64_t, writers);
  l->has_kv = kv != NULL;
  l->has_q = queue != NULL;
  l->has_file = file != NULL;
  g_mutex_init(&l->lock);
  l->popped = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  l->extra = g_ptr_array_new_with_free_func(g_free);
  l->nw = writers + readers;
  l->w = g_new0(worker_t, l->nw);
  for (int i = 0; i < l->nw; i++) {
    worker_t *wk = &l->w[i];
    wk->load = l;
    wk->id = i < writers ? i : i - writers;
    worker_open(l, wk, kv, queue, file);
  }
  for (int i = 0; i < l->nw; i++) {
    worker_t *wk = &l->w[i];
    if (wk->c == NULL) continue;
    wk->thread = g_thread_new(i < writers ? "writer" : "reader",
                              i < writers ? writer_main : reader_main, wk);
  }
  return l;
}

int64_t mf_load_acked(mf_load_t *l) {
  return __atomic_load_n(&l->acked_total, __ATOMIC_ACQUIRE);
}

int64_t mf_load_kv_acked(mf_load_t *l, int w) {
  return w >= 0 && w < l->writers ? __atomic_load_n(&l->kv_acked[w], __ATOMIC_ACQUIRE) : 0;
}

void mf_load_key(int w, int64_t j, char *buf, size_t len) {
  kv_key(buf, len, w, j);
}

void mf_load_expect_item(mf_load_t *l, const char *item) {
  g_mutex_lock(&l->lock);
  g_ptr_array_add(l->extra, g_strdup(item));
  g_mutex_unlock(&l->lock);
}

void mf_load_stop(mf_load_t *l) {
  g_atomic_int_set(&l->stop, 1);
  for (int i = 0; i < l->nw; i++) {
    if (l->w[i].thread != NULL) g_thread_join(l->w[i].thread);
    l->w[i].thread = NULL;
  }
}

int mf_load_verify(mf_load_t *l) {
  int64_t kv_checked = 0, file_checked = 0, items = 0, lost = 0;
  int64_t kv_total = 0, q_total = 0, file_total = 0;
  /* The writers' handles are still mounted: read back through writer 0's
   * client, which is idle now. */
  worker_t *r = &l->w[0];
  for (int w = 0; w < l->writers; w++) {
    kv_total += l->kv_acked[w];
    q_total += l->q_acked[w];
    file_total += l->file_acked[w];
    for (int64_t j = 0; r->kv != NULL && j < l->kv_acked[w]; j++) {
      char k[64], want[128];
      kv_key(k, sizeof k, w, j);
      kv_val(want, sizeof want, w, j);
      void *val = NULL;
      size_t vl = 0;
      int rc = mayfly_kv_get(r->kv, k, strlen(k), &val, &vl);
      if (rc != 0) {
        note(l, rc == MAYFLY_ENOKEY ? &l->stale : &l->errors, "after the run: get %s: %s", k,
             mayfly_strerror(rc));
      } else if (vl != strlen(want) || memcmp(val, want, vl) != 0) {
        note(l, &l->bad, "after the run: key %s has a wrong value", k);
      }
      mayfly_free(val);
      kv_checked++;
    }
    for (int64_t s = 0; r->file != NULL && s < MIN(l->file_acked[w], l->file_slots); s++) {
      int64_t want = latest_at(l, l->file_acked[w], s);
      uint8_t buf[REC];
      int64_t n = mayfly_file_read(r->file, (uint64_t)file_off(l, w, s), buf, REC);
      int64_t j = n == REC ? file_rec_parse(buf, w) : -1;
      if (n < 0) {
        note(l, &l->errors, "after the run: file read: %s", mayfly_strerror((int)n));
      } else if (j != want) {
        note(l, &l->stale, "after the run: writer %d slot %lld holds j %lld, not %lld", w,
             (long long)s, (long long)j, (long long)want);
      }
      file_checked++;
    }
  }
  /* Drain the queue: what is left, then every acknowledged item must have
   * been popped exactly once (record_pop counts duplicates). */
  for (int empty = 0; r->q != NULL && empty < 3;) {
    void *item = NULL;
    size_t il = 0;
    int rc = mayfly_queue_pop(r->q, &item, &il, 200);
    if (rc == 0) {
      record_pop(l, item, il);
      empty = 0;
    } else if (rc == MAYFLY_EAGAIN) {
      empty++;
    } else {
      note(l, &l->errors, "after the run: pop: %s", mayfly_strerror(rc));
      break;
    }
    mayfly_free(item);
  }
  for (int w = 0; r->q != NULL && w < l->writers; w++) {
    for (int64_t j = 0; j < l->q_acked[w]; j++) {
      char item[64];
      kv_key(item, sizeof item, w, j);
      if (g_hash_table_lookup(l->popped, item) == NULL) {
        if (lost++ == 0) note(l, &l->bad, "acknowledged item %s was never popped", item);
      }
    }
  }
  for (guint i = 0; r->q != NULL && i < l->extra->len; i++) {
    const char *item = g_ptr_array_index(l->extra, i);
    if (g_hash_table_lookup(l->popped, item) == NULL) {
      if (lost++ == 0) note(l, &l->bad, "acknowledged item %s was never popped", item);
    }
  }
  items = g_hash_table_size(l->popped);
  if (r->q != NULL && items != q_total + (int64_t)l->extra->len) {
    note(l, &l->bad, "%lld distinct items popped, %lld acknowledged pushes", (long long)items,
         (long long)(q_total + (int64_t)l->extra->len));
  }
  fprintf(stderr,
          "  load: %lld puts, %lld pushes, %lld file writes acknowledged; checked %lld keys, "
          "%lld records, %lld items; errors %lld, stale %lld, wrong %lld, duplicates %lld, "
          "lost items %lld%s%s\n",
          (long long)kv_total, (long long)q_total, (long long)file_total, (long long)kv_checked,
          (long long)file_checked, (long long)items, (long long)l->errors, (long long)l->stale,
          (long long)l->bad, (long long)l->dups, (long long)lost,
          l->first_error[0] ? "; first: " : "", l->first_error);
  int problems = (int)MIN(l->errors + l->stale + l->bad + l->dups, G_MAXINT);
  /* Nothing acknowledged would make every check above vacuous. */
  if ((l->has_kv && kv_total == 0) || (l->has_q && q_total == 0) ||
      (l->has_file && file_total == 0)) {
    fprintf(stderr, "  load: a kind had no acknowledged write at all\n");
    problems++;
  }
  for (int i = 0; i < l->nw; i++) worker_close(&l->w[i]);
  g_hash_table_destroy(l->popped);
  g_ptr_array_free(l->extra, TRUE);
  g_mutex_clear(&l->lock);
  g_free(l->kv_acked);
  g_free(l->q_acked);
  g_free(l->file_acked);
  g_free(l->w);
  g_free(l->dir);
  g_free(l);
  return problems;
}

/* ---- servers ---- */

int mf_repl_server(const char *dir, int32_t id, const char *address, mf_repl_server_t *out) {
  memset(out, 0, sizeof *out);
  mayfly_options_t o = {.timeout_ms = 5000};
  mayfly_client_t *c = NULL;
  int rc = mayfly_connect(dir, &o, &c);
  if (rc != 0) return rc;
  mayfly_server_t *s = NULL;
  size_t n = 0;
  rc = mayfly_servers(c, &s, &n);
  if (rc == 0) {
    rc = MAYFLY_ENOENT;
    for (size_t k = 0; k < n; k++) {
      if (address != NULL ? strcmp(s[k].address, address) != 0 : s[k].id != id) continue;
      out->id = s[k].id;
      snprintf(out->address, sizeof out->address, "%s", s[k].address);
      out->up = s[k].up;
      out->blocks_used = s[k].blocks_used;
      rc = 0;
    }
    mayfly_servers_free(s, n);
  }
  mayfly_disconnect(c);
  return rc;
}
