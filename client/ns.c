/*
 * Mounted namespaces: open-or-create, the cached layout, the lease renewal
 * thread, and the helpers the data operations share (see internal.h).
 */
#include <string.h>

#include "client/internal.h"
#include "common/config.h"

static int cmp_part(const void *a, const void *b) {
  const mf_part_t *x = a, *y = b;
  return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* A capability layout is refreshed at 3/4 of its lifetime, and never sooner
 * than this after the last refresh (a directory whose clock is ahead of ours
 * would otherwise be asked at every request). */
#define CAP_REFRESH_MIN_US (250 * 1000)
/* After a refresh that failed (the directory is away) the next try waits
 * this long; the capabilities in hand stay valid meanwhile. */
#define CAP_RETRY_US G_USEC_PER_SEC

void mf_ns_set_layout(mayfly_ns_t *ns, const mayfly_stat_t *st) {
  mf_part_t *parts = g_new0(mf_part_t, st->npartitions ? st->npartitions : 1);
  /* The capabilities' lifetimes run from now, when the layout arrived. */
  int64_t now_ms = g_get_real_time() / 1000, life_ms = -1;
  for (size_t i = 0; i < st->npartitions; i++) {
    const mayfly_partition_t *p = &st->partitions[i];
    g_strlcpy(parts[i].address, p->server_address, sizeof parts[i].address);
    parts[i].index = p->block_index;
    parts[i].generation = p->generation;
    parts[i].block_size = p->block_size;
    parts[i].lo = p->range_lo;
    parts[i].hi = p->range_hi;
    parts[i].lost = p->lost;
    mf_cap_t cap;
    if (p->capability_len == MF_CAP_SIZE &&
        mf_cap_decode(p->capability, p->capability_len, &cap) == 0) {
      memcpy(parts[i].cap, p->capability, MF_CAP_SIZE);
      parts[i].cap_len = MF_CAP_SIZE;
      int64_t life = cap.expiry_ms - now_ms;
      if (life_ms < 0 || life < life_ms) life_ms = MAX(life, 0);
    }
  }
  int64_t refresh_us = 0;
  if (life_ms >= 0) {
    refresh_us = g_get_monotonic_time() + MAX(life_ms * 1000 * 3 / 4, CAP_REFRESH_MIN_US);
  }
  qsort(parts, st->npartitions, sizeof *parts, cmp_part);
  g_rw_lock_writer_lock(&ns->lock);
  /* Never go back to an older layout than one already seen. */
  if (st->layout_version >= ns->version) {
    g_free(ns->parts);
    ns->parts = parts;
    ns->nparts = st->npartitions;
    ns->version = st->layout_version;
    atomic_store_explicit(&ns->cap_refresh_us, refresh_us, memory_order_relaxed);
    parts = NULL;
  }
  g_rw_lock_writer_unlock(&ns->lock);
  g_free(parts);
}

int mf_ns_refresh(mayfly_ns_t *ns) {
  mayfly_stat_t *st = NULL;
  int rc = mf_get_layout(ns->client, ns->path, &st);
  if (rc == 0) {
    mf_ns_set_layout(ns, st);
    mayfly_stat_free(st);
  }
  return rc;
}

int mf_ns_grow(mayfly_ns_t *ns, int64_t lo, int64_t hi) {
  mayfly_stat_t *st = NULL;
  int rc = mf_add_block(ns->client, ns->path, lo, hi, &st);
  if (rc == 0) {
    mf_ns_set_layout(ns, st);
    mayfly_stat_free(st);
  }
  return rc;
}

/* Whether the layout's capabilities are due for a refresh at `now` and this
 * thread is the one to do it: whoever moves the time on refreshes; a
 * successful refresh sets it anew from the new capabilities, a failed one
 * leaves the retry time. */
static int caps_due(mayfly_ns_t *ns, int64_t now) {
  int64_t at = atomic_load_explicit(&ns->cap_refresh_us, memory_order_relaxed);
  if (at == 0 || now < at) return 0;
  return atomic_compare_exchange_strong(&ns->cap_refresh_us, &at, now + CAP_RETRY_US);
}

void mf_ns_caps_fresh(mayfly_ns_t *ns) {
  if (atomic_load_explicit(&ns->cap_refresh_us, memory_order_relaxed) == 0) return;
  if (caps_due(ns, g_get_monotonic_time())) mf_ns_refresh(ns);
}

int mf_ns_perm_retry(mayfly_ns_t *ns, int rc, int *tried) {
  if (rc != MAYFLY_EPERM || *tried) return 0;
  *tried = 1;
  return mf_ns_refresh(ns) == 0;
}

int mf_ns_find(mayfly_ns_t *ns, int64_t key, mf_part_t *out) {
  int rc = MAYFLY_EMOVED;
  g_rw_lock_reader_lock(&ns->lock);
  /* Binary search for the last partition with lo <= key. */
  size_t lo = 0, hi = ns->nparts;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (ns->parts[mid].lo <= key) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  if (lo > 0 && key < ns->parts[lo - 1].hi) {
    *out = ns->parts[lo - 1];
    rc = 0;
  }
  g_rw_lock_reader_unlock(&ns->lock);
  return rc;
}

void mf_call_target(mf_call_t *call, uint8_t opcode, const mf_part_t *p) {
  memset(&call->req, 0, sizeof call->req);
  call->req.opcode = opcode;
  call->req.block_index = (uint32_t)p->index;
  call->req.generation = (uint64_t)p->generation;
  call->reply_max = 0;
  call->cap = p->cap_len > 0 ? p->cap : NULL;
  call->cap_len = p->cap_len;
}

uint32_t mf_block_reply_max(const mf_part_t *p) {
  return p->block_size > 0 ? (uint32_t)MIN(p->block_size, (int64_t)UINT32_MAX) : 0;
}

int64_t mf_deadline(const mayfly_client_t *c, int64_t extra_ms) {
  return g_get_monotonic_time() + ((int64_t)c->timeout_ms + extra_ms) * 1000;
}

int mf_part_lost(mayfly_ns_t *ns, const mf_part_t *p) {
  if (!p->lost) return 0;
  mf_set_last_error("%s: data lost: the memory server %s holding [%lld, %lld) restarted",
                    ns->path, p->address, (long long)p->lo, (long long)p->hi);
  return MAYFLY_ELOST;
}

/* mf_call_start_part with the clock read the deadline came from. */
static int start_part_at(mayfly_ns_t *ns, const mf_part_t *p, mf_call_t *call, int64_t now_us,
                         int64_t deadline_us) {
  if (p->lost) {
    /* Done at once, as a call that failed to start is (common/conn.h). */
    call->done = 1;
    call->conn = NULL;
    call->payload = NULL;
    call->plen = 0;
    call->status = mf_part_lost(ns, p);
    return call->status;
  }
  return mf_calls_start_at(ns->client->pool, p->address, &call, 1, now_us, deadline_us);
}

int mf_call_start_part(mayfly_ns_t *ns, const mf_part_t *p, mf_call_t *call, int64_t deadline_us) {
  return start_part_at(ns, p, call, g_get_monotonic_time(), deadline_us);
}

/* Whether a and b are the same block (the same incarnation of it). */
static int same_block(const mf_part_t *a, const mf_part_t *b) {
  return a->index == b->index && a->generation == b->generation &&
         strcmp(a->address, b->address) == 0;
}

/* Points a call for *p at the block's partition in the cached layout (its
 * new capability): 0, or MAYFLY_EMOVED when the layout no longer has that
 * block where p was (the caller finds the key's new place). */
static int retarget(mayfly_ns_t *ns, mf_part_t *p, mf_call_t *call) {
  mf_part_t now_p;
  if (mf_ns_find(ns, p->lo, &now_p) != 0 || !same_block(&now_p, p)) return MAYFLY_EMOVED;
  *p = now_p;
  call->cap = p->cap_len > 0 ? p->cap : NULL;
  call->cap_len = p->cap_len;
  return 0;
}

int mf_call_one(mayfly_ns_t *ns, mf_part_t *p, mf_call_t *call, int64_t extra_ms) {
  /* One clock read per call: the deadline's, also the send's time and the
   * moment to tell whether the capabilities are due for a refresh. */
  int64_t now = g_get_monotonic_time();
  if (caps_due(ns, now) && mf_ns_refresh(ns) == 0) {
    int rc = retarget(ns, p, call);
    if (rc != 0) return rc;
  }
  int rc = 0;
  for (int attempt = 0; attempt < 2; attempt++) {
    if (attempt > 0) now = g_get_monotonic_time();
    int64_t deadline = now + ((int64_t)ns->client->timeout_ms + extra_ms) * 1000;
    start_part_at(ns, p, call, now, deadline);
    rc = mf_call_wait(call, deadline); /* at once when the start failed */
    /* The server knows the block is lost and our layout did not say so: take
     * the directory's, so the next call fails without asking. */
    if (rc == MAYFLY_ELOST) mf_ns_refresh(ns);
    if (rc != MAYFLY_EPERM || attempt > 0) break;
    /* The capability was refused (expired, or the block's was replaced):
     * once, take the directory's layout and send again with the block's new
     * capability. A second refusal is the caller's. */
    char why[256];
    g_strlcpy(why, mf_last_error(), sizeof why);
    if (mf_ns_refresh(ns) != 0) {
      mf_set_last_error("%s", why); /* the refusal, not the refresh, is the caller's error */
      break;
    }
    g_free(call->payload);
    call->payload = NULL;
    if ((rc = retarget(ns, p, call)) != 0) break;
  }
  return rc;
}

/* --- lease renewal --- */

/* After a failed renewal the next try comes this soon, doubling up to the
 * period. */
#define RENEW_RETRY_MIN_MS 100

/* Renews every mounted namespace in one call per period: a third of the
 * shortest lease among them, so two renewals can be lost before expiry. A
 * renewal that fails (the directory is down or restarting: the control
 * connection reconnects by itself at the next call) is tried again sooner,
 * so renewals resume as soon as a directory answers; a restarted directory
 * restarts every lease in full, so nothing expires meanwhile. Paths a
 * directory does not know (an in-memory one that restarted) stay mounted
 * and are renewed again should they come back. */
static gpointer renewer(gpointer data) {
  mayfly_client_t *c = data;
  int64_t retry = RENEW_RETRY_MIN_MS;
  g_mutex_lock(&c->lock);
  while (!c->stopping) {
    int64_t period = 0;
    GPtrArray *paths = g_ptr_array_new_with_free_func(g_free);
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, c->mounted);
    while (g_hash_table_iter_next(&it, &k, &v)) {
      g_ptr_array_add(paths, g_strdup(k));
      int64_t lease = ((mf_mount_t *)v)->lease_ms;
      if (period == 0 || lease / 3 < period) period = lease / 3;
    }
    g_mutex_unlock(&c->lock);
    int rc = 0;
    if (paths->len > 0) {
      rc = mayfly_renew(c, (const char *const *)paths->pdata, paths->len, NULL, NULL, NULL);
    }
    g_ptr_array_free(paths, TRUE);
    if (period < 20) period = period > 0 ? 20 : 1000;
    if (rc != 0) {
      int64_t wait = MIN(retry, period);
      retry = MIN(retry * 2, period);
      period = wait;
    } else {
      retry = RENEW_RETRY_MIN_MS;
    }
    g_mutex_lock(&c->lock);
    int64_t until = g_get_monotonic_time() + period * 1000;
    while (!c->stopping && g_cond_wait_until(&c->renew_cond, &c->lock, until)) {
    }
  }
  g_mutex_unlock(&c->lock);
  return NULL;
}

int mayfly_mount(mayfly_client_t *c, const char *path, mayfly_kind_t kind,
                 const mayfly_create_options_t *opts, mayfly_ns_t **out) {
  if (c == NULL || path == NULL || out == NULL || kind == MAYFLY_KIND_DIRECTORY) {
    return MAYFLY_EINVAL;
  }
  mayfly_stat_t *st = NULL;
  int rc = mayfly_open_or_create(c, path, kind, opts, &st);
  if (rc != 0) return rc;
  mayfly_ns_t *ns = g_new0(mayfly_ns_t, 1);
  ns->client = c;
  ns->path = g_strdup(path);
  ns->kind = kind;
  ns->lease_ms = st->lease_ms > 0 ? st->lease_ms : 10000;
  ns->version = -1;
  g_rw_lock_init(&ns->lock);
  g_mutex_init(&ns->append_lock);
  mf_ns_set_layout(ns, st);
  ns->queue_head = ns->nparts > 0 ? ns->parts[0].lo : 0;
  mayfly_stat_free(st);

  g_mutex_lock(&c->lock);
  mf_mount_t *m = g_hash_table_lookup(c->mounted, path);
  if (m == NULL) {
    m = g_new0(mf_mount_t, 1);
    g_hash_table_insert(c->mounted, g_strdup(path), m);
  }
  m->handles++;
  m->lease_ms = ns->lease_ms;
  if (c->renewer == NULL) c->renewer = g_thread_new("mayfly-renew", renewer, c);
  g_cond_broadcast(&c->renew_cond); /* a shorter lease may shorten the period */
  g_mutex_unlock(&c->lock);
  *out = ns;
  return 0;
}

void mayfly_unmount(mayfly_ns_t *ns) {
  if (ns == NULL) return;
  mayfly_client_t *c = ns->client;
  g_mutex_lock(&c->lock);
  mf_mount_t *m = g_hash_table_lookup(c->mounted, ns->path);
  if (m != NULL && --m->handles <= 0) g_hash_table_remove(c->mounted, ns->path);
  g_mutex_unlock(&c->lock);
  g_free(ns->parts);
  g_free(ns->path);
  g_rw_lock_clear(&ns->lock);
  g_mutex_clear(&ns->append_lock);
  g_free(ns);
}

void mayfly_free(void *p) {
  g_free(p);
}

int mayfly_usage(mayfly_client_t *c, const mayfly_stat_t *st, mayfly_usage_t *usage) {
  size_t n = st->npartitions;
  mf_call_t *calls = g_new0(mf_call_t, n ? n : 1);
  /* One deadline for all: a server that does not answer costs one timeout,
   * however many partitions it holds. */
  int64_t deadline = g_get_monotonic_time() + (int64_t)c->timeout_ms * 1000;
  for (size_t i = 0; i < n; i++) {
    const mayfly_partition_t *p = &st->partitions[i];
    if (p->lost) continue; /* nothing there to ask about */
    calls[i].req.opcode = WIRE_OP_BLOCK_STAT;
    calls[i].req.block_index = (uint32_t)p->block_index;
    calls[i].req.generation = (uint64_t)p->generation;
    calls[i].cap = p->capability;
    calls[i].cap_len = (uint16_t)p->capability_len;
    mf_call_start(c->pool, p->server_address, &calls[i], deadline);
  }
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    if (st->partitions[i].lost) {
      usage[i].bytes_used = usage[i].items = -1;
      continue;
    }
    int r = mf_call_wait(&calls[i], deadline);
    usage[i].bytes_used = r == 0 ? (int64_t)calls[i].rep.arg0 : -1;
    usage[i].items = r == 0 ? (int64_t)calls[i].rep.arg1 : -1;
    g_free(calls[i].payload);
    if (r != 0 && rc == 0) rc = r;
  }
  g_free(calls);
  return rc;
}
