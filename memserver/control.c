/*
 * The memory server's control thread (see control.h).
 */
#include "memserver/control.h"

#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/ctl.h"
#include "common/config.h"
#include "common/error.h"
#include "common/log.h"

#define STOP_REQUEST (-1)
#define REREGISTER_REQUEST (-2)
#define REPLICA_END_REQUEST (-3) /* the next of `replica_ends` */

/* A replica_end call the loop posted. */
typedef struct {
  int64_t op_id;
  int commit;
  int64_t bytes;
} replica_end_t;

struct ms_control {
  uv_loop_t *loop;
  uv_async_t async;
  void *data;
  char *directory;
  char *advertise;
  char *zone;
  int32_t nblocks;
  uint64_t block_size;
  int has_key;
  uint8_t key[MF_KEY_SIZE];
  uint64_t incarnation; /* drawn at start: this run of the process (never 0) */
  GThread *thread;
  GAsyncQueue *requests; /* GINT_TO_POINTER(index + 1), or a *_REQUEST */
  GMutex lock;
  GQueue events;
  GQueue replica_ends; /* replica_end_t *, one per REPLICA_END_REQUEST (under lock) */
  gint blocks_used;
  gint64 max_generation;
  gint server_id_pub;  /* server_id, for other threads */
  gint registrations;  /* successful registrations so far (atomic) */
  gint rereg_of;       /* ms_control_reregister's registration (atomic) */
  GCond applied_cond;  /* the loop applied a watched list (under lock) */
  uint64_t applied;    /* ticket of the last watched list applied (under lock) */
  int stopping;        /* (under lock) */
  /* Owned by the thread. */
  mf_ctl_t *ctl;
  int32_t server_id;
  GArray *watched;     /* int64 pairs (index, generation) of the last list posted */
  uint64_t tickets;
  int64_t heartbeat_ms;
  int64_t heartbeat_timeout_ms; /* RegisterReply.heartbeat_timeout_ms (0: not given) */
  int warned;
  int fatal; /* MS_EV_FATAL posted: never register again */
};

static void post(ms_control_t *c, ms_event_t *e) {
  g_mutex_lock(&c->lock);
  g_queue_push_tail(&c->events, e);
  g_mutex_unlock(&c->lock);
  uv_async_send(&c->async);
}

/* Says the loop may serve replicated blocks again (MS_EV_LIVE), after
 * every event the same reply caused. */
static void post_live(ms_control_t *c, int64_t sent_us) {
  ms_event_t *e = g_new0(ms_event_t, 1);
  e->type = MS_EV_LIVE;
  e->timeout_ms = c->heartbeat_timeout_ms;
  e->sent_us = sent_us;
  post(c, e);
}

static void do_verify(ms_control_t *c, int32_t index, int rechain);

static void set_server_id(ms_control_t *c, int32_t id) {
  c->server_id = id;
  g_atomic_int_set(&c->server_id_pub, id);
}

/* The directory refused this server for the cluster key (what, then the
 * directory's words in mf_last_error()). Before the first registration the
 * server cannot join the cluster: it is told to stop (MS_EV_FATAL); later,
 * it keeps serving what it holds and tries again. */
static void key_refused(ms_control_t *c, const char *what) {
  if (g_atomic_int_get(&c->registrations) == 0) {
    MF_ERROR("cannot register with the directory: %s: %s; stopping", what, mf_last_error());
    c->fatal = 1;
    ms_event_t *e = g_new0(ms_event_t, 1);
    e->type = MS_EV_FATAL;
    post(c, e);
  } else if (!c->warned) {
    MF_ERROR("cannot register with the directory again: %s: %s; retrying", what,
             mf_last_error());
    c->warned = 1;
  }
}

/* Connects, passes the cluster handshake (with a key) and registers.
 * Returns 0 or an error (logged once per outage). */
static int do_register(ms_control_t *c) {
  if (c->ctl == NULL) {
    int rc = mf_ctl_open(c->directory, 3000, 2000, &c->ctl);
    if (rc != 0) {
      if (!c->warned) MF_WARN("directory %s: %s; retrying", c->directory, mf_last_error());
      c->warned = 1;
      return rc;
    }
    if (c->has_key) mf_ctl_set_auth(c->ctl, NULL, c->key);
  }
  if (c->has_key) {
    /* The handshake runs before a connection's first call: bracketing no
     * call runs it alone, so its refusal is told apart from the
     * registration's (and from a directory that is only unreachable). */
    mf_ctl_try_t t = MF_CTL_TRY_INIT;
    int rc;
    do {
      MayflyDirectoryIf *i;
      rc = mf_ctl_attempt(c->ctl, &t, &i);
      if (rc == 0) mf_ctl_end(c->ctl, TRUE, NULL, NULL);
    } while (mf_ctl_retry(c->ctl, &t, rc));
    if (rc == MAYFLY_EPERM || rc == MAYFLY_EINVAL) {
      key_refused(c, "the cluster handshake failed");
      return rc;
    } else if (rc != 0) {
      if (!c->warned) MF_WARN("directory %s: %s; retrying", c->directory, mf_last_error());
      c->warned = 1;
      return rc;
    }
  }
  g_mutex_lock(&c->lock);
  int64_t floor = c->max_generation;
  g_mutex_unlock(&c->lock);
  MayflyRegisterReply *r = NULL;
  int64_t sent_us = g_get_monotonic_time();
  /* The same incarnation every time this process registers (after a
   * directory restart, too): the directory then keeps the blocks. */
  int rc = mf_ctl_register(c->ctl, c->advertise, c->nblocks, (gint64)c->block_size, floor,
                           c->incarnation, c->zone, &r);
  if (rc == 0) {
    set_server_id(c, r->server_id);
    g_atomic_int_inc(&c->registrations);
    c->heartbeat_ms = r->heartbeat_ms > 0 ? r->heartbeat_ms : 1000;
    c->heartbeat_timeout_ms = r->__isset_heartbeat_timeout_ms ? r->heartbeat_timeout_ms : 0;
    ms_event_t *e = g_new0(ms_event_t, 1);
    e->type = MS_EV_RECONCILE;
    e->blocks = g_array_new(FALSE, FALSE, sizeof(int64_t));
    for (guint k = 0; k < r->allocated->len; k++) {
      MayflyBlockRef *b = g_ptr_array_index(r->allocated, k);
      int64_t pair[2] = {b->block_index, b->generation};
      g_array_append_vals(e->blocks, pair, 2);
    }
    post(c, e);
    post_live(c, sent_us);
    MF_INFO("registered with the directory %s as server %d (%d blocks of %llu bytes, data on %s, "
            "incarnation %016llx)",
            c->directory, c->server_id, c->nblocks, (unsigned long long)c->block_size,
            c->advertise, (unsigned long long)c->incarnation);
    c->warned = 0;
    g_object_unref(r);
  } else if (rc == MAYFLY_EPERM && !c->has_key) {
    key_refused(c, "the directory requires the cluster handshake (start this server with its "
                   "--cluster-key-file)");
  } else if (!c->warned) {
    MF_WARN("directory %s: register: %s; retrying", c->directory, mf_last_error());
    c->warned = 1;
  }
  return rc;
}

/* Orders (index, generation) pairs. */
static int cmp_pair(const void *a, const void *b) {
  const int64_t *x = a, *y = b;
  return x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : (x[1] > y[1]) - (x[1] < y[1]);
}

/* Posts the blocks whose data events are wanted (int64 pairs) when they
 * changed, and waits (a bounded time) until the loop has applied them. */
static void set_watched(ms_control_t *c, GArray *pairs) {
  if (pairs->len > 0) qsort(pairs->data, pairs->len / 2, 2 * sizeof(int64_t), cmp_pair);
  if (pairs->len == c->watched->len &&
      (pairs->len == 0 ||
       memcmp(pairs->data, c->watched->data, pairs->len * sizeof(int64_t)) == 0)) {
    g_array_free(pairs, TRUE);
    return;
  }
  g_array_set_size(c->watched, 0);
  g_array_append_vals(c->watched, pairs->data, pairs->len);
  ms_event_t *e = g_new0(ms_event_t, 1);
  e->type = MS_EV_WATCHED;
  e->blocks = pairs;
  uint64_t ticket = e->ticket = ++c->tickets; /* e is the loop's once posted */
  post(c, e);
  int64_t until = g_get_monotonic_time() + G_TIME_SPAN_SECOND;
  g_mutex_lock(&c->lock);
  while (c->applied < ticket && !c->stopping) {
    if (!g_cond_wait_until(&c->applied_cond, &c->lock, until)) break;
  }
  g_mutex_unlock(&c->lock);
}


/* One heartbeat. On failure the server counts as unregistered (the
 * caller registers again at once): the directory is unreachable, or it
 * answered MAYFLY_ESERVER because it restarted and has not seen this server
 * register since. The watched list stays as the directory last said: until
 * a directory says otherwise, writes to those blocks are published (held,
 * or refused while unreachable: publish.h), never answered without their
 * event. Returns 0 or the error. */
static int do_heartbeat(ms_control_t *c) {
  MayflyHeartbeatReply *r = g_object_new(MAYFLY_TYPE_HEARTBEAT_REPLY, NULL);
  int64_t sent_us = g_get_monotonic_time();
  /* Follows the leader (MF_CTL_CALL): a new leader that has not seen this
   * server register answers MAYFLY_ESERVER, and the server registers with
   * it, on the same ctl, aimed at it now. */
  int rc = MF_CTL_CALL(c->ctl, heartbeat, &r, c->server_id, g_atomic_int_get(&c->blocks_used),
                       (gint64)c->incarnation);
  if (rc == 0) {
    for (guint k = 0; k < r->release->len; k++) {
      MayflyBlockRef *b = g_ptr_array_index(r->release, k);
      ms_event_t *e = g_new0(ms_event_t, 1);
      e->type = MS_EV_RELEASE;
      e->index = b->block_index;
      e->generation = b->generation;
      post(c, e);
    }
    GArray *pairs = g_array_new(FALSE, FALSE, sizeof(int64_t));
    for (guint k = 0; k < r->watched->len; k++) {
      MayflyBlockRef *b = g_ptr_array_index(r->watched, k);
      int64_t pair[2] = {b->block_index, b->generation};
      g_array_append_vals(pairs, pair, 2);
    }
    set_watched(c, pairs);
    /* Chains that changed: their members ask for their new place now, so
     * the loop has them before it hears the server is live again. */
    if (r->__isset_rechain && r->rechain != NULL) {
      for (guint k = 0; k < r->rechain->len; k++) {
        MayflyBlockRef *b = g_ptr_array_index(r->rechain, k);
        do_verify(c, b->block_index, 1);
      }
    }
    post_live(c, sent_us);
  } else {
    /* Unknown to the directory (it restarted) or unreachable: register again. */
    MF_WARN("directory %s: heartbeat: %s; registering again", c->directory, mf_last_error());
    c->warned = 1;
    set_server_id(c, 0);
  }
  g_object_unref(r);
  return rc;
}

/* Copies one Replica of the IDL into an event's member. */
static void take_member(ms_event_member_t *m, const MayflyReplica *r) {
  m->server_id = r->server_id;
  m->address = g_strdup(r->server_address != NULL ? r->server_address : "");
  m->block_index = r->block_index;
  m->generation = r->generation;
}

static void do_verify(ms_control_t *c, int32_t index, int rechain) {
  ms_event_t *e = g_new0(ms_event_t, 1);
  e->type = MS_EV_VERIFIED;
  e->index = index;
  e->rechain = rechain;
  int rc = c->server_id == 0 ? MAYFLY_ESERVER : 0;
  if (rc == 0) {
    MayflyBlockInfo *bi = g_object_new(MAYFLY_TYPE_BLOCK_INFO, NULL);
    rc = MF_CTL_CALL(c->ctl, check_block, &bi, c->server_id, index);
    if (rc == 0) {
      e->allocated = bi->allocated;
      e->generation = bi->generation;
      e->kind = bi->kind;
      e->lo = bi->range_lo;
      e->hi = bi->range_hi;
      e->high_wm = bi->high_watermark;
      e->low_wm = bi->low_watermark;
      e->watched = bi->watched;
      e->lost = bi->__isset_lost && bi->lost;
      if (bi->__isset_chain && bi->chain != NULL && bi->chain->len > 0) {
        for (guint k = 0; k < bi->chain->len && k < MS_EVENT_CHAIN_MAX; k++) {
          take_member(&e->chain[k], g_ptr_array_index(bi->chain, k));
          e->chain_n++;
        }
        e->chain_pos = bi->__isset_chain_pos ? bi->chain_pos : -1;
        e->chain_version = bi->__isset_chain_version ? bi->chain_version : 0;
        /* A copy being filled: the chain it will join, itself not in it. */
        if (e->chain_pos == -1) {
          e->joining = 1;
          e->copy_op = bi->__isset_copy_op ? bi->copy_op : 0;
        }
      } else if (bi->__isset_chain_pos && bi->chain_pos == -1) {
        /* A copy being filled: not in the chain yet. */
        e->chain_pos = -1;
        e->chain_version = bi->__isset_chain_version ? bi->chain_version : 0;
        e->joining = 1;
        e->copy_op = bi->__isset_copy_op ? bi->copy_op : 0;
      }
      if (bi->__isset_copy_to && bi->copy_to != NULL) {
        e->has_copy = 1;
        take_member(&e->copy_to, bi->copy_to);
        e->copy_op = bi->__isset_copy_op ? bi->copy_op : 0;
      }
    }
    g_object_unref(bi);
  }
  e->status = rc;
  post(c, e);
}

/* Calls replica_end for the oldest posted request and posts its answer.
 * Not registered: the call fails (MAYFLY_ESERVER) and the directory's copy
 * timeout aborts the copy. */
static void do_replica_end(ms_control_t *c) {
  g_mutex_lock(&c->lock);
  replica_end_t *q = g_queue_pop_head(&c->replica_ends);
  g_mutex_unlock(&c->lock);
  if (q == NULL) return;
  ms_event_t *e = g_new0(ms_event_t, 1);
  e->type = MS_EV_REPLICA_END;
  e->op_id = q->op_id;
  e->commit = q->commit;
  int rc = c->server_id == 0 ? MAYFLY_ESERVER : 0;
  if (rc == 0) {
    MayflyLayout *layout = g_object_new(MAYFLY_TYPE_LAYOUT, NULL);
    rc = MF_CTL_CALL(c->ctl, replica_end, &layout, c->server_id, q->op_id, q->commit != 0,
                     q->bytes);
    g_object_unref(layout);
  }
  if (rc != 0) {
    MF_WARN("directory %s: replica_end(op %lld, %s): %s", c->directory, (long long)q->op_id,
            q->commit ? "commit" : "abort", mf_last_error());
  }
  e->status = rc;
  g_free(q);
  post(c, e);
}

static gpointer run(gpointer data) {
  ms_control_t *c = data;
  int64_t next_beat = 0;
  for (;;) {
    int64_t now = mf_now_ms();
    if (c->fatal) {
      next_beat = now + 1000; /* unregistered: verify answers ESERVER until stopped */
    } else if (c->server_id == 0) {
      if (do_register(c) != 0) {
        next_beat = now + 500; /* retry soon */
      } else {
        next_beat = now + c->heartbeat_ms;
      }
    } else if (now >= next_beat) {
      /* A failed heartbeat registers again at once (the loop's top). */
      if (do_heartbeat(c) != 0) continue;
      next_beat = now + c->heartbeat_ms;
    }
    g_atomic_int_set(&c->server_id_pub, c->server_id);
    int64_t wait = next_beat - mf_now_ms();
    gpointer req = g_async_queue_timeout_pop(c->requests, (guint64)(wait > 0 ? wait : 1) * 1000);
    if (req == GINT_TO_POINTER(STOP_REQUEST)) break;
    if (req == GINT_TO_POINTER(REREGISTER_REQUEST)) {
      /* The publisher found the directory does not know this registration
       * (it restarted): register at once rather than at the next heartbeat,
       * unless a registration since did already. */
      if (c->server_id != 0 &&
          g_atomic_int_get(&c->rereg_of) == g_atomic_int_get(&c->registrations)) {
        MF_INFO("directory %s: it does not know server %d any more; registering again",
                c->directory, c->server_id);
        set_server_id(c, 0);
      }
    } else if (req == GINT_TO_POINTER(REPLICA_END_REQUEST)) {
      do_replica_end(c);
    } else if (req != NULL) {
      do_verify(c, GPOINTER_TO_INT(req) - 1, 0);
    }
  }
  return NULL;
}

ms_control_t *ms_control_start(uv_loop_t *loop, const char *directory, const char *advertise,
                               const char *zone, int32_t nblocks, uint64_t block_size,
                               const uint8_t *key,
                               uv_async_cb on_event, void *data) {
  ms_control_t *c = g_new0(ms_control_t, 1);
  c->has_key = key != NULL;
  if (key != NULL) memcpy(c->key, key, MF_KEY_SIZE);
  c->loop = loop;
  c->data = data;
  c->directory = g_strdup(directory);
  c->advertise = g_strdup(advertise);
  c->zone = g_strdup(zone != NULL ? zone : "");
  c->nblocks = nblocks;
  c->block_size = block_size;
  /* A new incarnation at every start (GLib seeds from /dev/urandom): blocks
   * the directory remembers from an earlier run are known to be lost. */
  while (c->incarnation == 0) {
    c->incarnation = ((uint64_t)g_random_int() << 32) | g_random_int();
  }
  c->heartbeat_ms = 1000;
  c->requests = g_async_queue_new();
  g_mutex_init(&c->lock);
  g_cond_init(&c->applied_cond);
  c->watched = g_array_new(FALSE, FALSE, sizeof(int64_t));
  g_queue_init(&c->events);
  g_queue_init(&c->replica_ends);
  uv_async_init(loop, &c->async, on_event);
  c->async.data = c;
  c->thread = g_thread_new("mayfly-control", run, c);
  return c;
}

int32_t ms_control_server_id(ms_control_t *c) {
  return g_atomic_int_get(&c->server_id_pub);
}

void *ms_control_data(ms_control_t *c) {
  return c->data;
}

uint64_t ms_control_incarnation(const ms_control_t *c) {
  return c->incarnation;
}

uint32_t ms_control_registration(ms_control_t *c) {
  return (uint32_t)g_atomic_int_get(&c->registrations);
}

void ms_control_reregister(ms_control_t *c, uint32_t registration) {
  g_atomic_int_set(&c->rereg_of, (gint)registration);
  g_async_queue_push(c->requests, GINT_TO_POINTER(REREGISTER_REQUEST));
}

void ms_control_verify(ms_control_t *c, int32_t index) {
  g_async_queue_push(c->requests, GINT_TO_POINTER(index + 1));
}

void ms_control_replica_end(ms_control_t *c, int64_t op_id, int commit, int64_t bytes) {
  replica_end_t *q = g_new(replica_end_t, 1);
  *q = (replica_end_t){op_id, commit, bytes};
  g_mutex_lock(&c->lock);
  g_queue_push_tail(&c->replica_ends, q);
  g_mutex_unlock(&c->lock);
  g_async_queue_push(c->requests, GINT_TO_POINTER(REPLICA_END_REQUEST));
}

void ms_control_set_stats(ms_control_t *c, int32_t blocks_used, int64_t max_generation) {
  g_atomic_int_set(&c->blocks_used, blocks_used);
  g_mutex_lock(&c->lock);
  c->max_generation = max_generation;
  g_mutex_unlock(&c->lock);
}

void ms_control_applied(ms_control_t *c, uint64_t ticket) {
  g_mutex_lock(&c->lock);
  if (ticket > c->applied) c->applied = ticket;
  g_cond_broadcast(&c->applied_cond);
  g_mutex_unlock(&c->lock);
}

void ms_control_take(ms_control_t *c, GQueue *out) {
  g_mutex_lock(&c->lock);
  ms_event_t *e;
  while ((e = g_queue_pop_head(&c->events)) != NULL) g_queue_push_tail(out, e);
  g_mutex_unlock(&c->lock);
}

void ms_event_free(ms_event_t *e) {
  if (e == NULL) return;
  if (e->blocks) g_array_free(e->blocks, TRUE);
  for (int k = 0; k < MS_EVENT_CHAIN_MAX; k++) g_free(e->chain[k].address);
  g_free(e->copy_to.address);
  g_free(e);
}

static void async_closed(uv_handle_t *h) {
  ms_control_t *c = h->data;
  ms_event_t *e;
  while ((e = g_queue_pop_head(&c->events)) != NULL) ms_event_free(e);
  g_queue_clear_full(&c->replica_ends, g_free);
  g_mutex_clear(&c->lock);
  g_cond_clear(&c->applied_cond);
  g_free(c);
}

void ms_control_stop(ms_control_t *c) {
  /* The thread may be waiting for this (the loop's) thread to apply a
   * watched list: let it go. */
  g_mutex_lock(&c->lock);
  c->stopping = 1;
  g_cond_broadcast(&c->applied_cond);
  g_mutex_unlock(&c->lock);
  g_async_queue_push(c->requests, GINT_TO_POINTER(STOP_REQUEST));
  g_thread_join(c->thread);
  mf_ctl_close(c->ctl);
  mf_auth_wipe(c->key, sizeof c->key);
  g_array_free(c->watched, TRUE);
  g_async_queue_unref(c->requests);
  g_free(c->directory);
  g_free(c->advertise);
  g_free(c->zone);
  uv_close((uv_handle_t *)&c->async, async_closed);
}
