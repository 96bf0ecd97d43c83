/*
 * The memory server's event publisher (see publish.h).
 */
#include "memserver/publish.h"

#include <string.h>

#include "common/auth.h"
#include "common/ctl.h"
#include "common/error.h"
#include "common/log.h"

typedef struct ms_pub_event {
  uint64_t id;
  int32_t index;
  int64_t generation;
  int kind;
  int64_t offset, length;
  uint64_t chain_seq; /* replicated blocks: the write's cseq (0: none) */
  uint32_t klen;
  uint8_t key[]; /* klen bytes */
} ms_pub_event_t;

struct ms_publisher {
  uv_loop_t *loop;
  uv_async_t async;
  void *data;
  char *directory;
  ms_control_t *ctl;
  int has_key; /* the cluster key: the publish connection passes the handshake */
  uint8_t key[MF_KEY_SIZE];
  GThread *thread;
  GMutex lock; /* pending, done, stop */
  GCond cond;  /* events queued, or stop */
  GQueue pending; /* ms_pub_event_t *, oldest first */
  uint64_t done;
  int stop;
  gint down;   /* atomic: the last publish call failed (ms_publisher_refusing) */
  uint64_t next_id; /* the loop's */
  /* The thread's. */
  mf_ctl_t *mctl;
  int failing;
};

/* Publishes one batch as the server registered now (*server_id gets its
 * id, 0 when unregistered). Returns 0 or an error (logged once per outage). */
static int publish(ms_publisher_t *p, ms_pub_event_t **batch, guint n, int32_t *server_id_out) {
  int32_t server_id = ms_control_server_id(p->ctl);
  *server_id_out = server_id;
  int rc = 0;
  if (server_id == 0) {
    rc = MAYFLY_ESERVER;
    mf_set_last_error("not registered with the directory");
  } else if (p->mctl == NULL) {
    rc = mf_ctl_open(p->directory, MS_PUB_TIMEOUT_MS, MS_PUB_TIMEOUT_MS, &p->mctl);
    if (rc == 0 && p->has_key) mf_ctl_set_auth(p->mctl, NULL, p->key);
  }
  if (rc == 0) {
    GPtrArray *events = g_ptr_array_new_full(n, g_object_unref);
    for (guint i = 0; i < n; i++) {
      MayflyDataEvent *de = g_object_new(MAYFLY_TYPE_DATA_EVENT, NULL);
      de->block_index = batch[i]->index;
      de->generation = batch[i]->generation;
      de->kind = (MayflyEventKind)batch[i]->kind;
      if (batch[i]->kind == MS_EV_KIND_PUT || batch[i]->kind == MS_EV_KIND_DELETE) {
        g_free(de->key);
        de->key = g_base64_encode(batch[i]->key, batch[i]->klen);
      }
      de->offset = batch[i]->offset;
      de->length = batch[i]->length;
      if (batch[i]->chain_seq != 0) {
        de->chain_seq = (gint64)batch[i]->chain_seq;
        de->__isset_chain_seq = TRUE;
      }
      g_ptr_array_add(events, de);
    }
    /* Follows the leader and fails over (MF_CTL_CALL). */
    rc = MF_CTL_CALL(p->mctl, publish, server_id, events, (gint64)ms_control_incarnation(p->ctl));
    g_ptr_array_free(events, TRUE);
  }
  if (rc != 0 && !p->failing) {
    MF_WARN("directory %s: cannot publish %u data events: %s; their writes stay unanswered "
            "(retrying) and new writes to watched blocks are refused until it takes them",
            p->directory, n, mf_last_error()[0] ? mf_last_error() : mayfly_strerror(rc));
  } else if (rc == 0 && p->failing) {
    MF_INFO("directory %s: publishing data events again", p->directory);
  }
  p->failing = rc != 0;
  return rc;
}

/* Waits ms unless stopped; returns 1 when stopped. */
static int pause_unless_stopped(ms_publisher_t *p, int ms) {
  int64_t until = g_get_monotonic_time() + (int64_t)ms * 1000;
  g_mutex_lock(&p->lock);
  while (!p->stop && g_cond_wait_until(&p->cond, &p->lock, until)) {
  }
  int stop = p->stop;
  g_mutex_unlock(&p->lock);
  return stop;
}

static gpointer run(gpointer data) {
  ms_publisher_t *p = data;
  ms_pub_event_t **batch = g_new(ms_pub_event_t *, MS_PUB_BATCH_MAX);
  guint n = 0; /* events of a batch not yet taken by the directory */
  int backoff = MS_PUB_RETRY_MIN_MS;
  for (;;) {
    g_mutex_lock(&p->lock);
    while (!p->stop && n == 0 && g_queue_is_empty(&p->pending)) g_cond_wait(&p->cond, &p->lock);
    if (p->stop) {
      g_mutex_unlock(&p->lock);
      break;
    }
    /* A batch being retried takes the events queued since, after its own:
     * the order stays the writers'. */
    while (n < MS_PUB_BATCH_MAX && !g_queue_is_empty(&p->pending)) {
      batch[n++] = g_queue_pop_head(&p->pending);
    }
    g_mutex_unlock(&p->lock);
    uint32_t registration = ms_control_registration(p->ctl);
    int32_t server_id = 0;
    int rc = publish(p, batch, n, &server_id);
    if (rc != 0) {
      /* Nothing is answered: the batch waits for the directory. */
      g_atomic_int_set(&p->down, 1);
      if ((rc == MAYFLY_ESERVER || rc == MAYFLY_EINVAL) && server_id != 0) {
        /* The directory does not know this server as the id it publishes
         * with (it restarted): register again, then publish. */
        ms_control_reregister(p->ctl, registration);
      }
      if (pause_unless_stopped(p, backoff)) break;
      backoff = MIN(backoff * 2, MS_PUB_RETRY_MAX_MS);
      continue;
    }
    backoff = MS_PUB_RETRY_MIN_MS;
    g_atomic_int_set(&p->down, 0);
    g_mutex_lock(&p->lock);
    p->done = batch[n - 1]->id;
    g_mutex_unlock(&p->lock);
    uv_async_send(&p->async);
    for (guint i = 0; i < n; i++) g_free(batch[i]);
    n = 0;
  }
  for (guint i = 0; i < n; i++) g_free(batch[i]);
  g_free(batch);
  return NULL;
}

ms_publisher_t *ms_publisher_start(uv_loop_t *loop, const char *directory, ms_control_t *ctl,
                                   const uint8_t *key, uv_async_cb on_done, void *data) {
  ms_publisher_t *p = g_new0(ms_publisher_t, 1);
  p->has_key = key != NULL;
  if (key != NULL) memcpy(p->key, key, MF_KEY_SIZE);
  p->loop = loop;
  p->data = data;
  p->directory = g_strdup(directory);
  p->ctl = ctl;
  g_mutex_init(&p->lock);
  g_cond_init(&p->cond);
  g_queue_init(&p->pending);
  uv_async_init(loop, &p->async, on_done);
  p->async.data = p;
  p->thread = g_thread_new("mayfly-publish", run, p);
  return p;
}

uint64_t ms_publisher_add(ms_publisher_t *p, int32_t index, int64_t generation, int kind,
                          const void *key, size_t klen, int64_t offset, int64_t length) {
  return ms_publisher_add_seq(p, index, generation, kind, key, klen, offset, length, 0);
}

uint64_t ms_publisher_add_seq(ms_publisher_t *p, int32_t index, int64_t generation, int kind,
                              const void *key, size_t klen, int64_t offset, int64_t length,
                              uint64_t chain_seq) {
  if (key == NULL) klen = 0;
  if (klen > MS_PUB_KEY_MAX) klen = MS_PUB_KEY_MAX;
  ms_pub_event_t *e = g_malloc(sizeof *e + klen);
  uint64_t id = e->id = ++p->next_id; /* e is the thread's once queued */
  e->index = index;
  e->generation = generation;
  e->kind = kind;
  e->offset = offset;
  e->length = length;
  e->chain_seq = chain_seq;
  e->klen = (uint32_t)klen;
  if (klen > 0) memcpy(e->key, key, klen);
  g_mutex_lock(&p->lock);
  g_queue_push_tail(&p->pending, e);
  g_cond_signal(&p->cond);
  g_mutex_unlock(&p->lock);
  return id;
}

size_t ms_publisher_event_size(size_t klen) {
  return sizeof(ms_pub_event_t) + MIN(klen, (size_t)MS_PUB_KEY_MAX);
}

int ms_publisher_refusing(ms_publisher_t *p) {
  return g_atomic_int_get(&p->down) || ms_control_server_id(p->ctl) == 0;
}

uint64_t ms_publisher_done(ms_publisher_t *p) {
  g_mutex_lock(&p->lock);
  uint64_t d = p->done;
  g_mutex_unlock(&p->lock);
  return d;
}

void *ms_publisher_data(ms_publisher_t *p) {
  return p->data;
}

static void async_closed(uv_handle_t *h) {
  ms_publisher_t *p = h->data;
  g_mutex_clear(&p->lock);
  g_cond_clear(&p->cond);
  g_free(p);
}

void ms_publisher_stop(ms_publisher_t *p) {
  g_mutex_lock(&p->lock);
  p->stop = 1;
  g_cond_signal(&p->cond);
  g_mutex_unlock(&p->lock);
  g_thread_join(p->thread);
  mf_ctl_close(p->mctl);
  mf_auth_wipe(p->key, sizeof p->key);
  g_queue_clear_full(&p->pending, g_free);
  g_free(p->directory);
  uv_close((uv_handle_t *)&p->async, async_closed);
}
