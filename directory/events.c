/*
 * The directory's per-node event logs (see events.h).
 */
#include "directory/events.h"

#include <string.h>

#include "common/check.h"
#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
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
  if (log->chain_seqs != NULL) g_hash_table_destroy(log->chain_seqs);
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

static void chain_forget(dir_evlog_t *log, int64_t lo) {
  gint64 key = lo;
  g_hash_table_remove(log->chain_seqs, &key);
}

/* The chain_seq numbering of a partition is its chain's: a partition the
 * record creates, or a repartition moves, starts afresh at its lo. */
static void forget_chain_seqs(dir_events_t *ev, const ns_tree_t *t, const ns_record_t *rec) {
  if (rec->path == NULL) return;
  if (rec->type != NS_REC_CREATE && rec->type != NS_REC_ADD_PART &&
      rec->type != NS_REC_REPART_END) {
    return;
  }
  dir_evlog_t *log = g_hash_table_lookup(ev->logs, rec->path);
  if (log == NULL || log->chain_seqs == NULL) return;
  if (rec->type == NS_REC_CREATE) {
    g_hash_table_remove_all(log->chain_seqs); /* a tombstone's log taken back */
  } else if (rec->type == NS_REC_ADD_PART) {
    for (size_t i = 0; i < rec->nparts; i++) chain_forget(log, rec->parts[i].lo);
  } else {
    const ns_node_t *n = ns_tree_lookup(t, rec->path);
    const ns_repart_t *r = n != NULL ? ns_node_find_repart(n, rec->op_id) : NULL;
    if (r == NULL) return;
    chain_forget(log, r->lo);
    const ns_partition_t *src = ns_node_part_of(n, r->src.server, r->src.index);
    const ns_partition_t *dst = ns_node_part_of(n, r->dst.server, r->dst.index);
    if (src != NULL) chain_forget(log, src->lo);
    if (dst != NULL) chain_forget(log, dst->lo);
  }
}

void dir_events_before(dir_events_t *ev, const ns_tree_t *t, const ns_record_t *rec,
                       dir_events_pre_t *pre) {
  pre->missing = NULL;
  if (g_hash_table_size(ev->logs) == 0) return; /* nobody ever watched: nothing to number */
  forget_chain_seqs(ev, t, rec);
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

/* --- the watch and publish calls --- */

/* Holds the request until `log` has an event (or the wait is over), if the
 * caller can; returns 1 when it does. */
static int defer(const dir_watch_req_t *req, dir_evlog_t *log, dir_watch_res_t *res) {
  if (!req->can_defer || req->timeout_ms <= 0) return 0;
  res->defer_log = log;
  res->defer_ms =
      req->timeout_ms > DIR_WATCH_MAX_WAIT_MS ? DIR_WATCH_MAX_WAIT_MS : req->timeout_ms;
  return 1;
}

/* A watcher from another epoch (the directory restarted since its last
 * watch) whose node does not exist now: whatever happened to the node in
 * between, it hears that it may have missed events (a GAP of unknown
 * count) and that the node is gone (REMOVED, if its mask takes it), never a
 * silent end. The answer carries the new epoch and the seq to go on from
 * (the path's log's, or 0), so the watcher's next watch ends with
 * MAYFLY_ENOENT unless the node was created again. */
static void gone_in_new_epoch(dir_events_t *ev, const dir_watch_req_t *req,
                              dir_watch_res_t *res) {
  const dir_evlog_t *log = dir_events_find(ev, req->path);
  res->last_seq = log != NULL ? log->last_seq : 0;
  const char *path = log != NULL ? log->path : req->path;
  int64_t wall = mf_wall_ms();
  dir_event_t gap = {.seq = res->last_seq,
                     .kind = DIR_EV_GAP,
                     .path = (char *)path,
                     .offset = 0,
                     .length = -1,
                     .time_ms = wall};
  g_array_append_val(res->events, gap);
  if (req->mask == 0 || (req->mask & DIR_EV_BIT(DIR_EV_REMOVED))) {
    dir_event_t removed = {.seq = res->last_seq,
                           .kind = DIR_EV_REMOVED,
                           .path = (char *)path,
                           .time_ms = wall};
    g_array_append_val(res->events, removed);
  }
}

int dir_events_watch(dir_events_t *ev, const ns_tree_t *t, const dir_watch_req_t *req,
                     int64_t now, dir_watch_res_t *res, char *why, size_t whylen) {
  int rc = ns_path_check(req->path, why, whylen);
  if (rc != 0) return rc;
  const char *bad = NULL;
  if (req->mask & ~(uint32_t)DIR_EV_ALL_MASK) {
    bad = "mask has bits of no event kind (use 1 << kind for kinds 1 to 10, 0 for all)";
  } else if (req->epoch < 0 || req->after_seq < 0) {
    bad = "epoch and after_seq cannot be negative";
  } else if (req->max < 0) {
    bad = "max cannot be negative";
  } else if (req->timeout_ms < 0) {
    bad = "timeout_ms cannot be negative";
  }
  if (bad != NULL) {
    g_snprintf(why, whylen, "%s", bad);
    return MAYFLY_EINVAL;
  }
  guint limit = req->max == 0 || req->max > DIR_WATCH_MAX_EVENTS ? DIR_WATCH_MAX_EVENTS
                                                                 : (guint)req->max;
  res->defer_log = NULL;
  res->epoch = ev->epoch;

  const ns_node_t *n = ns_tree_lookup(t, req->path);
  dir_evlog_t *log;
  if (n != NULL) {
    log = dir_events_open(ev, req->path);
  } else if (req->epoch != 0 && req->epoch != ev->epoch) {
    gone_in_new_epoch(ev, req, res);
    return 0;
  } else {
    /* A removed node's watcher still gets what it has not seen, REMOVED
     * last; after that, and for anyone else, the path does not exist. */
    log = dir_events_find(ev, req->path);
    if (log == NULL || !log->removed || req->epoch != ev->epoch ||
        req->after_seq >= log->last_seq) {
      return MAYFLY_ENOENT;
    }
  }
  int wants_data = n != NULL && n->kind != NS_KIND_DIRECTORY &&
                   (req->mask == 0 || (req->mask & DIR_EV_DATA_MASK) != 0);
  dir_events_touch(ev, log, now, wants_data);

  if (req->epoch != ev->epoch || req->after_seq > log->last_seq) {
    /* Starting (epoch 0), or numbers from another life of the directory or
     * of the log: start from now. Data events start once every memory
     * server holding the namespace publishes them, so wait for that: a
     * listener then sees every write made after its first watch returned. */
    if (wants_data && !req->armed(req->armed_ud, log) && defer(req, log, res)) return 0;
    res->last_seq = log->last_seq;
    if (req->epoch != 0) {
      dir_event_t gap = {.seq = log->last_seq,
                         .kind = DIR_EV_GAP,
                         .path = log->path,
                         .offset = 0,
                         .length = -1,
                         .time_ms = mf_wall_ms()};
      g_array_append_val(res->events, gap);
    }
    return 0;
  }
  guint before = res->events->len;
  res->last_seq = dir_events_collect(log, req->after_seq, req->mask, limit,
                                     DIR_WATCH_REPLY_BUDGET, res->events);
  if (res->events->len == before && defer(req, log, res)) return 0;
  return 0;
}

/* A key as an event carries it: base64 of at most DIR_EVENT_KEY_RAW_MAX
 * bytes. */
static int valid_event_key(const char *k) {
  size_t n = 0;
  for (; k[n] != '\0'; n++) {
    char c = k[n];
    if (n >= DIR_EVENT_KEY_MAX) return 0;
    if (!g_ascii_isalnum(c) && c != '+' && c != '/' && c != '=') return 0;
  }
  return n % 4 == 0;
}

/* Checks one event of server s; fills why when it cannot be. */
static int check_data_event(const ns_server_t *s, size_t i, const dir_data_event_t *e, char *why,
                            size_t whylen) {
  if (e->kind < DIR_EV_PUT || e->kind > DIR_EV_WRITE) {
    g_snprintf(why, whylen, "event %zu: kind %d is not a data event", i, e->kind);
  } else if (e->block_index < 0 || e->block_index >= s->nblocks) {
    g_snprintf(why, whylen, "event %zu: server %d has no block %d", i, s->id, e->block_index);
  } else if (e->key != NULL && !valid_event_key(e->key)) {
    g_snprintf(why, whylen, "event %zu: key must be base64 of at most %d bytes", i,
               DIR_EVENT_KEY_RAW_MAX);
  } else if (e->offset < 0 || e->length < 0 || e->chain_seq < 0) {
    g_snprintf(why, whylen, "event %zu: offset, length and chain_seq cannot be negative", i);
  } else {
    return 0;
  }
  return MAYFLY_EINVAL;
}

/* Whether replicated event e (chain_seq set) of a member (or the joining
 * copy) of owner's chains is new: its chain_seq is above the last sequenced
 * for its partition (then it becomes the last). Other blocks pass. */
static int chain_seq_fresh(dir_evlog_t *log, const ns_node_t *owner, int32_t server_id,
                           const dir_data_event_t *e) {
  ns_block_t b = {.server = server_id, .index = e->block_index, .generation = e->generation};
  int pi = -1, member = -1;
  if (ns_node_find_block(owner, &b, &pi, &member) != 0) return 1;
  const ns_partition_t *p = &g_array_index(owner->layout.parts, ns_partition_t, pi);
  if (log->chain_seqs == NULL) {
    log->chain_seqs = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
  }
  gint64 key = p->lo;
  gint64 *last = g_hash_table_lookup(log->chain_seqs, &key);
  if (last != NULL && *last >= e->chain_seq) return 0;
  if (last != NULL) {
    *last = e->chain_seq;
  } else {
    g_hash_table_insert(log->chain_seqs, g_memdup2(&key, sizeof key),
                        g_memdup2(&e->chain_seq, sizeof e->chain_seq));
  }
  return 1;
}

int dir_events_publish(dir_events_t *ev, ns_alloc_t *alloc, int32_t server_id,
                       const dir_data_event_t *events, size_t n, int64_t wall_ms, char *why,
                       size_t whylen) {
  const ns_server_t *s = ns_alloc_server(alloc, server_id);
  if (s == NULL) {
    g_snprintf(why, whylen, "unknown memory server: register again");
    return MAYFLY_ESERVER;
  }
  if (n > DIR_PUBLISH_MAX_EVENTS) {
    g_snprintf(why, whylen, "publish takes at most %d events per call", DIR_PUBLISH_MAX_EVENTS);
    return MAYFLY_ETOOBIG;
  }
  /* Check the whole batch first: a bad one numbers nothing. */
  for (size_t i = 0; i < n; i++) {
    int rc = check_data_event(s, i, &events[i], why, whylen);
    if (rc != 0) return rc;
  }
  const ns_node_t *last = NULL;
  dir_evlog_t *log = NULL;
  guint dropped = 0, repeated = 0;
  for (size_t i = 0; i < n; i++) {
    const dir_data_event_t *e = &events[i];
    /* The block's owner now, whatever the layout. */
    const ns_node_t *owner = s->in_use[e->block_index] &&
                                     s->generation[e->block_index] == e->generation
                                 ? s->owner[e->block_index]
                                 : NULL;
    if (owner == NULL) {
      /* Freed by a layout change since the write (a merge, a drained
       * segment): still its namespace's event. Else (the namespace went,
       * or the block is unknown) nobody's. */
      const char *p = dir_events_retired_path(ev, server_id, e->block_index, e->generation);
      dir_evlog_t *rl = p != NULL ? dir_events_find(ev, p) : NULL;
      if (rl == NULL || rl->removed) {
        dropped++;
        continue;
      }
      log = rl;
      last = NULL;
    } else if (owner != last) {
      char *p = ns_node_path(owner);
      log = dir_events_find(ev, p);
      g_free(p);
      last = owner;
    }
    if (log == NULL) continue; /* never watched: nobody holds its numbers */
    if (e->chain_seq > 0 && owner != NULL && !chain_seq_fresh(log, owner, server_id, e)) {
      repeated++;
      continue;
    }
    const char *key = (e->kind == DIR_EV_PUT || e->kind == DIR_EV_DELETE)
                          ? (e->key != NULL ? e->key : "")
                          : NULL;
    dir_events_append(ev, log, (dir_ev_kind_t)e->kind, NULL, key,
                      e->kind == DIR_EV_WRITE ? e->offset : 0, e->length, wall_ms);
  }
  if (dropped > 0) {
    MF_DEBUG("memory server %s (id %d): %u events of released blocks dropped", s->address,
             server_id, dropped);
  }
  if (repeated > 0) {
    MF_DEBUG("memory server %s (id %d): %u events already sequenced by an earlier tail dropped",
             s->address, server_id, repeated);
  }
  return 0;
}

void dir_events_watched_blocks(dir_events_t *ev, const ns_tree_t *t, int32_t server_id,
                               int64_t now, GArray *out) {
  if (g_hash_table_size(ev->data) == 0) return;
  const ns_server_t *s = ns_alloc_server(t->alloc, server_id);
  GHashTable *nodes = g_hash_table_new(g_direct_hash, g_direct_equal);
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, ev->data);
  while (g_hash_table_iter_next(&it, &v, NULL)) {
    dir_evlog_t *log = v;
    if (!dir_events_data_watched(log, now) || log->removed) continue;
    ns_node_t *n = ns_tree_lookup(t, log->path);
    if (n != NULL) g_hash_table_add(nodes, n);
  }
  for (int32_t i = 0; s != NULL && g_hash_table_size(nodes) > 0 && i < s->nblocks; i++) {
    if (!s->in_use[i] || !g_hash_table_contains(nodes, s->owner[i])) continue;
    if (ns_tree_block_lost(t, server_id, i)) continue; /* nothing is written there */
    ns_block_t b = {.server = server_id, .index = i, .generation = s->generation[i]};
    g_array_append_val(out, b);
  }
  g_hash_table_destroy(nodes);
}

void dir_events_wake_armed(dir_events_t *ev, dir_armed_cb armed, void *ud) {
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, ev->data);
  while (g_hash_table_iter_next(&it, &v, NULL)) {
    dir_evlog_t *log = v;
    if (log->armed || log->waiters == NULL || log->waiters->len == 0) continue;
    if (armed(ud, log)) dir_events_wake(log);
  }
}
