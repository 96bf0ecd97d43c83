/*
 * The directory's per-node event logs (see events.h).
 */
#include "directory/events.h"

#include <string.h>

#include "common/check.h"
#include "common/config.h"
#include "namespaces/path.h"

typedef struct {
  dir_wake_cb cb;
  void *waiter;
} dir_waiter_t;

typedef struct {
  char *path;
  int64_t until; /* monotonic ms */
} dir_retired_t;

static void retired_free(dir_retired_t *r) {
  g_free(r->path);
  g_free(r);
}

static void event_clear(dir_event_t *e) {
  g_free(e->path);
  g_free(e->key);
  e->path = NULL;
  e->key = NULL;
}

static void ring_clear(dir_evlog_t *log) {
  for (guint i = 0; i < log->len; i++) event_clear(&log->ring[(log->head + i) % log->cap]);
  g_free(log->ring);
  log->ring = NULL;
  log->cap = log->head = log->len = 0;
}

static void log_free(dir_evlog_t *log) {
  if (log == NULL) return;
  /* A waiter outliving its log would be woken through freed memory. */
  MF_CHECK(log->waiters == NULL || log->waiters->len == 0);
  ring_clear(log);
  if (log->waiters != NULL) g_array_free(log->waiters, TRUE);
  g_free(log->path);
  g_free(log);
}

dir_events_t *dir_events_new(int64_t epoch) {
  dir_events_t *ev = g_new0(dir_events_t, 1);
  ev->epoch = epoch > 0 ? epoch : 1;
  ev->logs = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, (GDestroyNotify)log_free);
  ev->hot = g_hash_table_new(g_direct_hash, g_direct_equal);
  ev->data = g_hash_table_new(g_direct_hash, g_direct_equal);
  ev->retired =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)retired_free);
  return ev;
}

void dir_events_free(dir_events_t *ev) {
  if (ev == NULL) return;
  g_hash_table_destroy(ev->hot);
  g_hash_table_destroy(ev->data);
  g_hash_table_destroy(ev->retired);
  g_hash_table_destroy(ev->logs);
  g_free(ev);
}

dir_evlog_t *dir_events_find(dir_events_t *ev, const char *path) {
  return g_hash_table_lookup(ev->logs, path);
}

dir_evlog_t *dir_events_open(dir_events_t *ev, const char *path) {
  dir_evlog_t *log = g_hash_table_lookup(ev->logs, path);
  if (log == NULL) {
    log = g_new0(dir_evlog_t, 1);
    log->path = g_strdup(path);
    g_hash_table_insert(ev->logs, log->path, log);
  }
  return log;
}

static int watched(const dir_evlog_t *log, int64_t now) {
  return log->watched_until > now || (log->waiters != NULL && log->waiters->len > 0);
}

int64_t dir_events_append(dir_events_t *ev, dir_evlog_t *log, dir_ev_kind_t kind,
                          const char *path, const char *key, int64_t offset, int64_t length,
                          int64_t wall_ms) {
  int64_t seq = ++log->last_seq;
  ev->sequenced++;
  if (!watched(log, mf_now_ms())) {
    /* Counted, not kept: the ring must stay a run of consecutive seqs
     * ending at last_seq, so what it held goes too. */
    if (log->len > 0) ring_clear(log);
  } else {
    if (log->len == log->cap) {
      if (log->cap < DIR_EVLOG_MAX) {
        /* Grow, unrolling the ring so it starts at 0. */
        guint cap = log->cap ? log->cap * 2 : 16;
        if (cap > DIR_EVLOG_MAX) cap = DIR_EVLOG_MAX;
        dir_event_t *ring = g_new0(dir_event_t, cap);
        for (guint i = 0; i < log->len; i++) ring[i] = log->ring[(log->head + i) % log->cap];
        g_free(log->ring);
        log->ring = ring;
        log->cap = cap;
        log->head = 0;
      } else {
        /* Full: the oldest event goes; a watcher behind it gets a GAP. */
        event_clear(&log->ring[log->head]);
        log->head = (log->head + 1) % log->cap;
        log->len--;
      }
    }
    dir_event_t *e = &log->ring[(log->head + log->len) % log->cap];
    log->len++;
    *e = (dir_event_t){.seq = seq,
                       .kind = kind,
                       .path = (path != NULL && strcmp(path, log->path) != 0) ? g_strdup(path)
                                                                               : NULL,
                       .key = g_strdup(key),
                       .offset = offset,
                       .length = length,
                       .time_ms = wall_ms};
    g_hash_table_add(ev->hot, log);
  }
  dir_events_wake(log);
  return seq;
}

void dir_events_wake(dir_evlog_t *log) {
  if (log->waiters == NULL) return;
  for (guint i = 0; i < log->waiters->len; i++) {
    dir_waiter_t *w = &g_array_index(log->waiters, dir_waiter_t, i);
    w->cb(w->waiter);
  }
}

int dir_events_data_watched(const dir_evlog_t *log, int64_t now) {
  return log->data_version != 0 && log->data_until > now;
}

int dir_events_touch(dir_events_t *ev, dir_evlog_t *log, int64_t now, int data) {
  log->watched_until = now + DIR_WATCH_WINDOW_MS;
  g_hash_table_add(ev->hot, log);
  if (!data) return 0;
  int fresh = !dir_events_data_watched(log, now);
  if (fresh) {
    if (log->data_version != 0) {
      /* Data events were not published while nobody watched: whoever
       * continues from before must hear that some may be missing. */
      dir_events_append(ev, log, DIR_EV_GAP, NULL, NULL, 0, -1, mf_wall_ms());
    }
    log->data_version = ++ev->data_version;
    log->armed = 0;
    g_hash_table_add(ev->data, log);
  }
  log->data_until = now + DIR_WATCH_WINDOW_MS;
  return fresh;
}

/* Rough size of an event in a reply, for the reply's byte budget. */
static size_t event_size(const dir_event_t *e) {
  return 48 + strlen(e->path) + (e->key ? strlen(e->key) : 0);
}

int64_t dir_events_collect(const dir_evlog_t *log, int64_t after_seq, uint32_t mask, guint max,
                           size_t budget, GArray *out) {
  int64_t oldest = log->len > 0 ? log->ring[log->head].seq : log->last_seq + 1;
  int64_t pos = after_seq;
  size_t used = 0;
  guint n = 0;
  if (max == 0) return pos;
  if (pos + 1 < oldest) {
    dir_event_t gap = {.seq = oldest - 1,
                       .kind = DIR_EV_GAP,
                       .path = log->path,
                       .offset = pos + 1,
                       .length = oldest - 1 - pos,
                       .time_ms = mf_wall_ms()};
    g_array_append_val(out, gap);
    used += event_size(&gap);
    n++;
    pos = oldest - 1;
  }
  for (int64_t s = pos + 1; s <= log->last_seq && n < max; s++) {
    const dir_event_t *e = &log->ring[(log->head + (guint)(s - oldest)) % log->cap];
    if (mask == 0 || (mask & DIR_EV_BIT(e->kind)) || e->kind == DIR_EV_GAP) {
      dir_event_t copy = *e;
      if (copy.path == NULL) copy.path = log->path;
      size_t sz = event_size(&copy);
      if (n > 0 && used + sz > budget) break;
      g_array_append_val(out, copy);
      used += sz;
      n++;
    }
    pos = s;
  }
  return pos;
}

void dir_events_wait(dir_evlog_t *log, dir_wake_cb cb, void *waiter) {
  if (log->waiters == NULL) log->waiters = g_array_new(FALSE, FALSE, sizeof(dir_waiter_t));
  dir_waiter_t w = {cb, waiter};
  g_array_append_val(log->waiters, w);
}

void dir_events_unwait(dir_evlog_t *log, void *waiter) {
  if (log == NULL || log->waiters == NULL) return;
  for (guint i = 0; i < log->waiters->len; i++) {
    if (g_array_index(log->waiters, dir_waiter_t, i).waiter == waiter) {
      g_array_remove_index(log->waiters, i);
      return;
    }
  }
}

/* --- tree hooks --- */

/* Appends to the log of `path`, if it has one. */
static void append_to(dir_events_t *ev, const char *path, dir_ev_kind_t kind,
                      const char *about, int64_t wall_ms) {
  dir_evlog_t *log = g_hash_table_lookup(ev->logs, path);
  if (log != NULL) dir_events_append(ev, log, kind, about, NULL, 0, 0, wall_ms);
}

static void node_created(dir_events_t *ev, const char *path, int64_t wall_ms) {
  dir_evlog_t *log = g_hash_table_lookup(ev->logs, path);
  if (log != NULL) log->removed = 0; /* the path's numbers carry on */
  char *parent = ns_path_parent(path);
  append_to(ev, parent, DIR_EV_CHILD_CREATED, path, wall_ms);
  g_free(parent);
}

/* The node's own events: a tombstone while someone may want them, else
 * nothing more. */
static void node_gone(dir_events_t *ev, dir_evlog_t *log, int expired, int64_t wall_ms) {
  if (expired) dir_events_append(ev, log, DIR_EV_LEASE_EXPIRED, NULL, NULL, 0, 0, wall_ms);
  dir_events_append(ev, log, DIR_EV_REMOVED, NULL, NULL, 0, 0, wall_ms);
  g_hash_table_remove(ev->data, log);
  log->data_until = 0;
  if (watched(log, mf_now_ms())) {
    log->removed = 1;
    g_hash_table_add(ev->hot, log);
  } else {
    g_hash_table_remove(ev->hot, log);
    g_hash_table_remove(ev->logs, log->path);
  }
}

static void node_removed(dir_events_t *ev, const char *path, int expired, int64_t wall_ms) {
  dir_evlog_t *log = g_hash_table_lookup(ev->logs, path);
  if (log != NULL && !log->removed) node_gone(ev, log, expired, wall_ms);
  char *parent = ns_path_parent(path);
  if (expired) append_to(ev, parent, DIR_EV_LEASE_EXPIRED, path, wall_ms);
  append_to(ev, parent, DIR_EV_CHILD_REMOVED, path, wall_ms);
  g_free(parent);
}

static gint deepest_first(gconstpointer a, gconstpointer b) {
  const dir_evlog_t *x = *(dir_evlog_t *const *)a, *y = *(dir_evlog_t *const *)b;
  size_t lx = strlen(x->path), ly = strlen(y->path);
  return lx < ly ? 1 : lx > ly ? -1 : strcmp(x->path, y->path);
}

/* A rename: everything at or under the old path is gone from there; the new
 * path and the tombstones under it that now name nodes come back. */
static void node_renamed(dir_events_t *ev, const ns_tree_t *t, const char *from,
                         const char *to, int64_t wall_ms) {
  GPtrArray *gone = g_ptr_array_new();
  GPtrArray *back = g_ptr_array_new();
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, ev->logs);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    dir_evlog_t *log = v;
    if (!log->removed && ns_path_is_within(log->path, from)) g_ptr_array_add(gone, log);
    if (log->removed && ns_path_is_within(log->path, to) && strcmp(log->path, to) != 0 &&
        ns_tree_lookup(t, log->path) != NULL) {
      g_ptr_array_add(back, log);
    }
  }
  g_ptr_array_sort(gone, deepest_first);
  for (guint i = 0; i < gone->len; i++) node_gone(ev, g_ptr_array_index(gone, i), 0, wall_ms);
  for (guint i = 0; i < back->len; i++) ((dir_evlog_t *)g_ptr_array_index(back, i))->removed = 0;
  g_ptr_array_free(gone, TRUE);
  g_ptr_array_free(back, TRUE);
  char *parent = ns_path_parent(from);
  append_to(ev, parent, DIR_EV_CHILD_REMOVED, from, wall_ms);
  g_free(parent);
  node_created(ev, to, wall_ms);
}

void dir_events_before(dir_events_t *ev, const ns_tree_t *t, const ns_record_t *rec,
                       dir_events_pre_t *pre) {
  pre->missing = NULL;
  if (g_hash_table_size(ev->logs) == 0) return; /* nobody ever watched: nothing to number */
  if (rec->type != NS_REC_MKDIR && rec->type != NS_REC_CREATE) return;
  if (rec->path == NULL || ns_path_check(rec->path, NULL, 0) != 0) return;
  /* Walk up until a node exists; what lies below it is created (top down). */
  pre->missing = g_ptr_array_new_with_free_func(g_free);
  char *p = g_strdup(rec->path);
  while (strcmp(p, "/") != 0 && ns_tree_lookup(t, p) == NULL) {
    g_ptr_array_insert(pre->missing, 0, p);
    p = ns_path_parent(p);
  }
  g_free(p);
}

void dir_events_after(dir_events_t *ev, const ns_tree_t *t, const ns_record_t *rec,
                      const ns_effects_t *fx, guint removed_from, dir_events_pre_t *pre) {
  if (g_hash_table_size(ev->logs) == 0) return;
  int64_t wall = rec->wall_ms ? rec->wall_ms : mf_wall_ms();
  switch (rec->type) {
    case NS_REC_MKDIR:
    case NS_REC_CREATE:
      for (guint i = 0; pre->missing != NULL && i < pre->missing->len; i++) {
        const char *p = g_ptr_array_index(pre->missing, i);
        if (ns_tree_lookup(t, p) != NULL) node_created(ev, p, wall);
      }
      break;
    case NS_REC_REMOVE:
      for (guint i = removed_from; fx != NULL && i < fx->removed->len; i++) {
        node_removed(ev, g_ptr_array_index(fx->removed, i), (rec->flags & NS_REC_EXPIRED) != 0,
                     wall);
      }
      break;
    case NS_REC_RENAME:
      node_renamed(ev, t, rec->path, rec->path2, wall);
      break;
    case NS_REC_SERVER_ADD:
      for (guint i = 0; fx != NULL && i < fx->lost->len; i++) {
        const char *path = g_ptr_array_index(fx->lost, i);
        const ns_node_t *n = ns_tree_lookup(t, path);
        dir_events_lost(ev, path, n != NULL ? ns_node_lost_parts(n) : 0, wall);
      }
      break;
    default:
      break;
  }
}

void dir_events_lost(dir_events_t *ev, const char *path, int32_t nlost, int64_t wall_ms) {
  dir_evlog_t *log = g_hash_table_lookup(ev->logs, path);
  if (log != NULL && !log->removed) {
    dir_events_append(ev, log, DIR_EV_LOST, NULL, NULL, 0, nlost, wall_ms);
  }
}

void dir_events_pre_clear(dir_events_pre_t *pre) {
  if (pre->missing != NULL) g_ptr_array_free(pre->missing, TRUE);
  pre->missing = NULL;
}

static char *block_key(int32_t server, int32_t index, int64_t generation) {
  return g_strdup_printf("%d:%d:%lld", server, index, (long long)generation);
}

void dir_events_retire(dir_events_t *ev, int32_t server, int32_t index, int64_t generation,
                       const char *path, int64_t now) {
  if (g_hash_table_lookup(ev->logs, path) == NULL) return; /* nobody ever watched it */
  dir_retired_t *r = g_new(dir_retired_t, 1);
  r->path = g_strdup(path);
  r->until = now + DIR_RETIRED_MS;
  g_hash_table_replace(ev->retired, block_key(server, index, generation), r);
}

const char *dir_events_retired_path(dir_events_t *ev, int32_t server, int32_t index,
                                    int64_t generation) {
  if (g_hash_table_size(ev->retired) == 0) return NULL;
  char *k = block_key(server, index, generation);
  dir_retired_t *r = g_hash_table_lookup(ev->retired, k);
  g_free(k);
  return r != NULL ? r->path : NULL;
}

void dir_events_sweep(dir_events_t *ev, int64_t now) {
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, ev->retired);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    if (((dir_retired_t *)v)->until <= now) g_hash_table_iter_remove(&it);
  }
  g_hash_table_iter_init(&it, ev->data);
  while (g_hash_table_iter_next(&it, &v, NULL)) {
    if (((dir_evlog_t *)v)->data_until <= now) g_hash_table_iter_remove(&it);
  }
  GPtrArray *drop = g_ptr_array_new();
  g_hash_table_iter_init(&it, ev->hot);
  while (g_hash_table_iter_next(&it, &v, NULL)) {
    dir_evlog_t *log = v;
    if (watched(log, now)) continue;
    if (log->len > 0) ring_clear(log);
    if (log->removed) {
      g_ptr_array_add(drop, log);
    } else if (!g_hash_table_contains(ev->data, log)) {
      g_hash_table_iter_remove(&it);
    }
  }
  for (guint i = 0; i < drop->len; i++) {
    dir_evlog_t *log = g_ptr_array_index(drop, i);
    g_hash_table_remove(ev->hot, log);
    g_hash_table_remove(ev->data, log);
    g_hash_table_remove(ev->logs, log->path);
  }
  g_ptr_array_free(drop, TRUE);
}
