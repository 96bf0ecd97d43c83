/*
 * Listeners (see mayfly.h, notifications): each owns a control connection
 * and a thread that long-polls the directory's `watch` with the epoch and
 * seq it last saw, converts the events, and either buffers them for
 * mayfly_listener_next (bounded; what does not fit becomes one GAP) or hands
 * them to the callback. After an error the thread reconnects with a backoff
 * and carries on from the same epoch and seq, so a reconnection loses
 * nothing the directory still holds and the directory reports the rest as a
 * gap. After a directory restart (a new epoch) the first thing delivered
 * is a GAP of unknown count, and when the node did not survive the
 * restart, REMOVED after it (the directory sends both); the listener then
 * ends as after any REMOVED (mayfly_listener_next: MAYFLY_ENOENT), never
 * silently.
 *
 * Locking: `lock` guards the buffer, the drop counters, `stop`, `error` and
 * `self_close`; the poll state (epoch, last_seq, the connection) belongs to
 * the thread.
 */
#include <string.h>

#include "client/internal.h"

/* One long poll waits this long for events; the directory keeps a node
 * watched for 30 s after each poll. */
#define POLL_MS 10000
/* The first watch waits this long for the memory servers to start
 * publishing the namespace's data events (one or two heartbeats). */
#define ARM_MS 10000
/* Events asked for per poll. */
#define POLL_MAX 512
#define BUFFER_DEFAULT 65536
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

struct mayfly_listener {
  char *path;
  uint32_t mask;
  size_t buffer_max;
  mayfly_event_cb cb;
  void *user_data;
  mf_ctl_t *ctl;
  GThread *thread;
  GMutex lock;
  GCond cond;       /* events buffered, or the thread stopped */
  GQueue buf;       /* mayfly_event_t * */
  int64_t dropped;  /* events not buffered since the last GAP we delivered */
  int64_t dropped_first, dropped_last;
  int dropped_unknown;
  int stop;
  int error;        /* the thread ended: MAYFLY_ENOENT (node gone) */
  int self_close;   /* closed from its own callback: the thread frees it */
  /* The thread's. */
  int64_t epoch, last_seq;
};

static const char *const kind_names[] = {NULL,           "put",           "delete",
                                         "push",         "pop",           "write",
                                         "child-created", "child-removed", "lease-expired",
                                         "removed",      "gap",           "lost"};

const char *mayfly_event_kind_name(mayfly_event_kind_t k) {
  return (k >= MAYFLY_EV_PUT && k <= MAYFLY_EV_LOST) ? kind_names[k] : "unknown";
}

int mayfly_event_kind_parse(const char *s, mayfly_event_kind_t *out) {
  for (int k = MAYFLY_EV_PUT; s != NULL && k <= MAYFLY_EV_LOST; k++) {
    if (strcmp(s, kind_names[k]) == 0) {
      *out = (mayfly_event_kind_t)k;
      return 0;
    }
  }
  return MAYFLY_EINVAL;
}

int mayfly_event_mask_parse(const char *list, uint32_t *mask) {
  if (list == NULL || mask == NULL) return MAYFLY_EINVAL;
  uint32_t m = 0;
  char **words = g_strsplit(list, ",", -1);
  int rc = 0;
  for (char **w = words; *w != NULL; w++) {
    char *word = g_strstrip(*w);
    mayfly_event_kind_t k;
    if (strcmp(word, "all") == 0) {
      m |= MAYFLY_EV_MASK_DATA | MAYFLY_EV_MASK_NAMESPACE | MAYFLY_EV_BIT(MAYFLY_EV_GAP);
    } else if (strcmp(word, "data") == 0) {
      m |= MAYFLY_EV_MASK_DATA;
    } else if (strcmp(word, "namespace") == 0) {
      m |= MAYFLY_EV_MASK_NAMESPACE;
    } else if (mayfly_event_kind_parse(word, &k) == 0) {
      m |= MAYFLY_EV_BIT(k);
    } else {
      mf_set_last_error("'%s' is not an event kind (put, delete, push, pop, write, "
                        "child-created, child-removed, lease-expired, removed, gap, lost, data, "
                        "namespace, all)",
                        word);
      rc = MAYFLY_EINVAL;
      break;
    }
  }
  g_strfreev(words);
  if (rc == 0 && m == 0) {
    mf_set_last_error("no event kind given");
    rc = MAYFLY_EINVAL;
  }
  if (rc == 0) *mask = m;
  return rc;
}

void mayfly_event_free(mayfly_event_t *ev) {
  if (ev == NULL) return;
  g_free(ev->path);
  g_free(ev->key);
  g_free(ev);
}

static mayfly_event_t *event_from(const MayflyEvent *me) {
  mayfly_event_t *ev = g_new0(mayfly_event_t, 1);
  ev->seq = me->seq;
  ev->kind = (mayfly_event_kind_t)me->kind;
  ev->path = g_strdup(me->path ? me->path : "");
  if ((ev->kind == MAYFLY_EV_PUT || ev->kind == MAYFLY_EV_DELETE) && me->key != NULL) {
    gsize n = 0;
    ev->key = me->key[0] != '\0' ? g_base64_decode(me->key, &n) : g_malloc0(1);
    ev->key_len = n;
  }
  ev->offset = me->offset;
  ev->length = me->length;
  ev->time_ms = me->time_ms;
  return ev;
}

/* Whether a watch reply opens with a GAP. */
static int starts_with_gap(const MayflyWatchReply *r) {
  return r->events->len > 0 &&
         (int)((const MayflyEvent *)g_ptr_array_index(r->events, 0))->kind == (int)MAYFLY_EV_GAP;
}

/* The GAP of unknown count that stands for an epoch change. */
static mayfly_event_t *epoch_gap(const mayfly_listener_t *l, const MayflyWatchReply *r) {
  mayfly_event_t *gap = g_new0(mayfly_event_t, 1);
  gap->kind = MAYFLY_EV_GAP;
  gap->path = g_strdup(l->path);
  gap->seq = r->last_seq;
  gap->offset = 0;
  gap->length = -1;
  gap->time_ms = g_get_real_time() / 1000;
  return gap;
}

/* One watch call. *reply is the directory's answer on success (unref it). */
static int watch_call(mayfly_listener_t *l, int64_t epoch, int64_t after, int max, int timeout_ms,
                      MayflyWatchReply **reply) {
  MayflyWatchReply *r = g_object_new(MAYFLY_TYPE_WATCH_REPLY, NULL);
  /* Follows the leader and fails over (MF_CTL_CALL); a new leader's epoch
   * differs, which the caller reports as a GAP. */
  int rc = MF_CTL_CALL(l->ctl, watch, &r, l->path, (gint32)l->mask, epoch, after, max,
                       timeout_ms);
  if (rc == 0) {
    *reply = r;
  } else {
    g_object_unref(r);
  }
  return rc;
}

/* The GAP that stands for the events dropped since the last one. Under lock. */
static mayfly_event_t *take_drop_gap(mayfly_listener_t *l) {
  mayfly_event_t *gap = g_new0(mayfly_event_t, 1);
  gap->kind = MAYFLY_EV_GAP;
  gap->path = g_strdup(l->path);
  gap->seq = l->dropped_last;
  gap->offset = l->dropped_unknown ? 0 : l->dropped_first;
  gap->length = l->dropped_unknown ? -1 : l->dropped;
  gap->time_ms = g_get_real_time() / 1000;
  l->dropped = 0;
  l->dropped_unknown = 0;
  return gap;
}

/* Buffers one event (taking it), or counts it as dropped. Under lock. */
static void buffer_event(mayfly_listener_t *l, mayfly_event_t *ev) {
  int pending_gap = l->dropped > 0 || l->dropped_unknown;
  guint room = (guint)l->buffer_max - MIN(g_queue_get_length(&l->buf), (guint)l->buffer_max);
  if (room >= (pending_gap ? 2u : 1u)) {
    if (pending_gap) g_queue_push_tail(&l->buf, take_drop_gap(l));
    g_queue_push_tail(&l->buf, ev);
    return;
  }
  /* No room: the events dropped here are reported as one GAP later. */
  if (!pending_gap) l->dropped_first = ev->kind == MAYFLY_EV_GAP ? ev->offset : ev->seq;
  if (ev->kind == MAYFLY_EV_GAP) {
    if (ev->length < 0) l->dropped_unknown = 1;
    l->dropped += ev->length > 0 ? ev->length : 0;
  } else {
    l->dropped++;
  }
  l->dropped_last = ev->seq;
  if (l->dropped == 0) l->dropped_unknown = 1; /* a GAP of nothing: still a GAP */
  mayfly_event_free(ev);
}

static void listener_free(mayfly_listener_t *l) {
  mf_ctl_close(l->ctl);
  g_queue_clear_full(&l->buf, (GDestroyNotify)mayfly_event_free);
  g_mutex_clear(&l->lock);
  g_cond_clear(&l->cond);
  g_free(l->path);
  g_free(l);
}

/* Waits ms unless stopped; returns 1 when stopped. */
static int pause_unless_stopped(mayfly_listener_t *l, int ms) {
  int64_t until = g_get_monotonic_time() + (int64_t)ms * 1000;
  g_mutex_lock(&l->lock);
  while (!l->stop && g_cond_wait_until(&l->cond, &l->lock, until)) {
  }
  int stop = l->stop;
  g_mutex_unlock(&l->lock);
  return stop;
}

static gpointer run(gpointer data) {
  mayfly_listener_t *l = data;
  int backoff = BACKOFF_MIN_MS;
  int end = 0;
  for (;;) {
    g_mutex_lock(&l->lock);
    int stop = l->stop;
    g_mutex_unlock(&l->lock);
    if (stop) break;
    MayflyWatchReply *r = NULL;
    int rc = watch_call(l, l->epoch, l->last_seq, POLL_MAX, POLL_MS, &r);
    if (rc == MAYFLY_ENOENT) {
      end = rc;
      break;
    }
    if (rc != 0) {
      /* Connection lost, directory restarting, ...: try again; the
       * directory says what was missed. */
      if (pause_unless_stopped(l, backoff)) break;
      backoff = MIN(backoff * 2, BACKOFF_MAX_MS);
      continue;
    }
    backoff = BACKOFF_MIN_MS;
    GPtrArray *evs = g_ptr_array_new_with_free_func((GDestroyNotify)mayfly_event_free);
    if (r->epoch != l->epoch && !starts_with_gap(r)) {
      /* Another life of the directory (it restarted): our numbers mean
       * nothing there, so whatever happened meanwhile is a GAP for the
       * user, even if the directory did not say so. */
      g_ptr_array_add(evs, epoch_gap(l, r));
    }
    for (guint i = 0; i < r->events->len; i++) {
      g_ptr_array_add(evs, event_from(g_ptr_array_index(r->events, i)));
    }
    l->epoch = r->epoch;
    l->last_seq = r->last_seq;
    g_object_unref(r);
    if (l->cb != NULL) {
      for (guint i = 0; i < evs->len; i++) {
        g_mutex_lock(&l->lock);
        stop = l->stop;
        g_mutex_unlock(&l->lock);
        if (stop) break;
        l->cb(l, g_ptr_array_index(evs, i), l->user_data);
      }
    } else if (evs->len > 0) {
      g_mutex_lock(&l->lock);
      for (guint i = 0; i < evs->len; i++) {
        buffer_event(l, g_ptr_array_index(evs, i)); /* taken: the array frees NULL */
        g_ptr_array_index(evs, i) = NULL;
      }
      g_cond_broadcast(&l->cond);
      g_mutex_unlock(&l->lock);
    }
    g_ptr_array_free(evs, TRUE);
  }
  g_mutex_lock(&l->lock);
  l->error = end != 0 ? end : MAYFLY_EIO;
  int self_close = l->self_close;
  g_cond_broadcast(&l->cond);
  g_mutex_unlock(&l->lock);
  if (self_close) {
    /* Closed from its own callback: nobody joins this thread. */
    g_thread_unref(l->thread);
    listener_free(l);
  }
  return NULL;
}

int mayfly_listen_with(mayfly_client_t *c, const char *path, const mayfly_listen_options_t *opts,
                       mayfly_listener_t **out) {
  mayfly_listen_options_t o = {0};
  if (opts != NULL) o = *opts;
  if (c == NULL || path == NULL || out == NULL) return MAYFLY_EINVAL;
  uint32_t all = MAYFLY_EV_MASK_DATA | MAYFLY_EV_MASK_NAMESPACE | MAYFLY_EV_BIT(MAYFLY_EV_GAP);
  if (o.mask & ~all) {
    mf_set_last_error("%s: the event mask has bits of no event kind", path);
    return MAYFLY_EINVAL;
  }
  /* Every directory of the client's list, the one it talks to first. */
  char address[4096];
  mf_ctl_addresses(c->ctl, address, sizeof address);
  mayfly_listener_t *l = g_new0(mayfly_listener_t, 1);
  l->path = g_strdup(path);
  l->mask = o.mask;
  l->buffer_max = o.buffer > 0 ? o.buffer : BUFFER_DEFAULT;
  l->cb = o.cb;
  l->user_data = o.user_data;
  g_mutex_init(&l->lock);
  g_cond_init(&l->cond);
  g_queue_init(&l->buf);
  /* The socket waits out a long poll plus the client's usual timeout. */
  int rc = mf_ctl_open(address, MAX(POLL_MS, ARM_MS) + c->timeout_ms, 2000, &l->ctl);
  if (rc == 0) mf_ctl_set_auth(l->ctl, c->token, NULL); /* logs in as the client does */
  MayflyWatchReply *r = NULL;
  /* Start from now, once the memory servers publish (directory/events.h). */
  if (rc == 0) rc = watch_call(l, 0, 0, 1, ARM_MS, &r);
  if (rc != 0) {
    listener_free(l);
    return rc;
  }
  l->epoch = r->epoch;
  l->last_seq = r->last_seq;
  g_object_unref(r);
  /* Under the lock, so a callback that closes the listener at once finds
   * l->thread set (the thread takes the lock before its first poll). */
  g_mutex_lock(&l->lock);
  l->thread = g_thread_new("mayfly-listen", run, l);
  g_mutex_unlock(&l->lock);
  *out = l;
  return 0;
}

int mayfly_listen(mayfly_client_t *c, const char *path, uint32_t mask, mayfly_listener_t **out) {
  mayfly_listen_options_t o = {.mask = mask};
  return mayfly_listen_with(c, path, &o, out);
}

int mayfly_listen_callback(mayfly_client_t *c, const char *path, uint32_t mask,
                           mayfly_event_cb cb, void *user_data, mayfly_listener_t **out) {
  if (cb == NULL) return MAYFLY_EINVAL;
  mayfly_listen_options_t o = {.mask = mask, .cb = cb, .user_data = user_data};
  return mayfly_listen_with(c, path, &o, out);
}

int mayfly_listener_next(mayfly_listener_t *l, mayfly_event_t **ev, int timeout_ms) {
  if (l == NULL || ev == NULL || l->cb != NULL) return MAYFLY_EINVAL;
  int64_t until = g_get_monotonic_time() + (int64_t)timeout_ms * 1000;
  int rc = 0;
  g_mutex_lock(&l->lock);
  for (;;) {
    mayfly_event_t *e = g_queue_pop_head(&l->buf);
    if (e != NULL) {
      *ev = e;
      break;
    }
    if (l->dropped > 0 || l->dropped_unknown) {
      *ev = take_drop_gap(l);
      break;
    }
    if (l->error != 0) {
      rc = l->error;
      mf_set_last_error("%s: %s", l->path,
                        rc == MAYFLY_ENOENT ? "removed: no more events" : mayfly_strerror(rc));
      break;
    }
    if (timeout_ms == 0) {
      rc = MAYFLY_EAGAIN;
      break;
    }
    if (timeout_ms < 0) {
      g_cond_wait(&l->cond, &l->lock);
    } else if (!g_cond_wait_until(&l->cond, &l->lock, until)) {
      rc = MAYFLY_EAGAIN;
      break;
    }
  }
  g_mutex_unlock(&l->lock);
  return rc;
}

void mayfly_listener_close(mayfly_listener_t *l) {
  if (l == NULL) return;
  g_mutex_lock(&l->lock);
  l->stop = 1;
  int own_thread = g_thread_self() == l->thread;
  if (own_thread) l->self_close = 1;
  g_cond_broadcast(&l->cond);
  g_mutex_unlock(&l->lock);
  if (own_thread) return; /* the thread frees it once the callback returns */
  /* A long poll in progress ends now rather than when it times out. */
  mf_ctl_interrupt(l->ctl);
  g_thread_join(l->thread);
  listener_free(l);
}
