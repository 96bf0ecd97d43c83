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

/* Fills a member from a block's fields; its capability's lifetime (from
 * now_ms) lowers *life_ms, the shortest one of the layout (-1: none yet). */
static void member_set(mf_member_t *m, const char *address, int32_t index, int64_t generation,
                       const uint8_t *cap, size_t cap_len, int64_t now_ms, int64_t *life_ms) {
  g_strlcpy(m->address, address != NULL ? address : "", sizeof m->address);
  m->index = index;
  m->generation = generation;
  m->cap_len = 0;
  mf_cap_t c;
  if (cap_len == MF_CAP_SIZE && mf_cap_decode(cap, cap_len, &c) == 0) {
    memcpy(m->cap, cap, MF_CAP_SIZE);
    m->cap_len = MF_CAP_SIZE;
    int64_t life = c.expiry_ms - now_ms;
    if (*life_ms < 0 || life < *life_ms) *life_ms = MAX(life, 0);
  }
}

void mf_ns_set_layout(mayfly_ns_t *ns, const mayfly_stat_t *st) {
  mf_part_t *parts = g_new0(mf_part_t, st->npartitions ? st->npartitions : 1);
  /* The capabilities' lifetimes run from now, when the layout arrived. */
  int64_t now_ms = g_get_real_time() / 1000, life_ms = -1;
  for (size_t i = 0; i < st->npartitions; i++) {
    const mayfly_partition_t *p = &st->partitions[i];
    mf_part_t *o = &parts[i];
    o->block_size = p->block_size;
    o->lo = p->range_lo;
    o->hi = p->range_hi;
    o->lost = p->lost;
    o->replicas = p->replicas > 0 ? p->replicas : 1;
    o->chain_version = p->chain_version;
    /* A partition of a namespace with R > 1 (even with every other member
     * gone), or with a chain of several members, is replicated: its writes
     * need sequence records, which the head refuses a replicated write
     * without. A chain of one with R = 1 is a plain block. */
    o->replicated = o->replicas > 1 || p->nchain > 1;
    if (p->nchain > 0) {
      const mayfly_replica_t *h = &p->chain[0], *t = &p->chain[p->nchain - 1];
      member_set(&o->head, h->server_address, h->block_index, h->generation, h->capability,
                 h->capability_len, now_ms, &life_ms);
      member_set(&o->tail, t->server_address, t->block_index, t->generation, t->capability,
                 t->capability_len, now_ms, &life_ms);
      o->members = (int)p->nchain;
    } else {
      member_set(&o->head, p->server_address, p->block_index, p->generation, p->capability,
                 p->capability_len, now_ms, &life_ms);
      o->tail = o->head;
      o->members = 1;
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

const mf_member_t *mf_part_member(const mf_part_t *p, uint8_t opcode) {
  return wire_op_is_read(opcode) ? &p->tail : &p->head;
}

/* Points a call at the member of p for its opcode (block, generation,
 * capability), leaving the rest of the request as it is, and renews the
 * acked watermark of its sequence record, if any. */
static void call_point(mayfly_ns_t *ns, mf_call_t *call, const mf_part_t *p) {
  const mf_member_t *m = mf_part_member(p, call->req.opcode);
  call->req.block_index = (uint32_t)m->index;
  call->req.generation = (uint64_t)m->generation;
  call->cap = m->cap_len > 0 ? m->cap : NULL;
  call->cap_len = m->cap_len;
  if (call->has_seq) {
    wire_seq_t r;
    wire_seq_get(call->seq, &r);
    mf_seqs_record(&ns->client->seqs, r.seq, call->seq);
  }
}

void mf_call_target(mayfly_ns_t *ns, mf_call_t *call, uint8_t opcode, const mf_part_t *p) {
  memset(&call->req, 0, sizeof call->req);
  call->req.opcode = opcode;
  call->reply_max = 0;
  if (p->replicated && wire_op_is_write(opcode) && !call->has_seq) {
    uint64_t seq = mf_seqs_begin(&ns->client->seqs, 1);
    mf_seqs_record(&ns->client->seqs, seq, call->seq);
    call->has_seq = 1;
  } else if (call->has_seq && !(p->replicated && wire_op_is_write(opcode))) {
    mf_call_end(ns, call); /* reused for something that needs no record */
  }
  call_point(ns, call, p);
}

void mf_call_end(mayfly_ns_t *ns, mf_call_t *call) {
  if (!call->has_seq) return;
  wire_seq_t r;
  wire_seq_get(call->seq, &r);
  mf_seqs_end(&ns->client->seqs, r.seq);
  call->has_seq = 0;
}

void mf_calls_end(mayfly_ns_t *ns, mf_call_t *calls, size_t n) {
  for (size_t i = 0; i < n; i++) mf_call_end(ns, &calls[i]);
}

int mf_chain_error(const mf_call_t *call, int rc) {
  switch (rc) {
    case MAYFLY_EMOVED:
      /* A drained queue segment says so with EMOVED and the sealed flag:
       * that is an answer (the pop moves on), not a chain in trouble. */
      return !(call->rep.flags & WIRE_F_SEALED);
    case MAYFLY_EIO:
    case MAYFLY_ECONNREFUSED:
    case MAYFLY_ETIMEDOUT:
    case MAYFLY_ESERVERDOWN:
      return 1;
    default:
      return 0;
  }
}

/* Refreshes of a replicated namespace's layout after chain errors come at
 * most this often. */
#define CHAIN_REFRESH_US (50 * 1000)

void mf_ns_chain_refresh(mayfly_ns_t *ns, int64_t end_us) {
  int64_t last = atomic_load_explicit(&ns->chain_refresh_us, memory_order_relaxed);
  int64_t now = g_get_monotonic_time();
  if (now < last + CHAIN_REFRESH_US) {
    int64_t until = MIN(last + CHAIN_REFRESH_US, end_us);
    if (until > now) g_usleep((gulong)(until - now));
    now = g_get_monotonic_time();
    if (now < last + CHAIN_REFRESH_US) return; /* out of time: try what we have */
  }
  /* Whoever moves the time on refreshes; a thread that finds it moved while
   * it slept goes on with the layout that refresh brought. */
  if (atomic_compare_exchange_strong(&ns->chain_refresh_us, &last, now)) mf_ns_refresh(ns);
}

uint32_t mf_block_reply_max(const mf_part_t *p) {
  return p->block_size > 0 ? (uint32_t)MIN(p->block_size, (int64_t)UINT32_MAX) : 0;
}

int mf_part_lost(mayfly_ns_t *ns, const mf_part_t *p) {
  if (!p->lost) return 0;
  mf_set_last_error("%s: data lost: the memory server %s holding [%lld, %lld) restarted",
                    ns->path, p->head.address, (long long)p->lo, (long long)p->hi);
  return MAYFLY_ELOST;
}

/* Starts a call for partition p at the member its opcode goes to, as
 * mf_calls_start_at does, now_us being the caller's clock read; a lost
 * partition's call is done at once with MAYFLY_ELOST and nothing is sent. */
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
  return mf_calls_start_at(ns->client->pool, mf_part_member(p, call->req.opcode)->address, &call,
                           1, now_us, deadline_us);
}

/* Whether a and b are the same block (the same incarnation of it). */
static int same_block(const mf_member_t *a, const mf_member_t *b) {
  return a->index == b->index && a->generation == b->generation &&
         strcmp(a->address, b->address) == 0;
}

/* Points a call for *p at the block's partition in the cached layout (its
 * new capability): 0, or MAYFLY_EMOVED when the layout no longer has that
 * block where p was (the caller finds the key's new place). A replicated
 * partition is the same one while its range is: its chain's members may
 * have changed (a failover), and the call goes to its new head or tail. */
static int retarget(mayfly_ns_t *ns, mf_part_t *p, mf_call_t *call) {
  mf_part_t now_p;
  if (mf_ns_find(ns, p->lo, &now_p) != 0) return MAYFLY_EMOVED;
  if (p->replicated ? now_p.lo != p->lo || now_p.hi != p->hi
                    : !same_block(&now_p.head, &p->head)) {
    return MAYFLY_EMOVED;
  }
  *p = now_p;
  call_point(ns, call, p);
  return 0;
}

/* The attempt deadline of a replicated call: a second (plus what is left of
 * a waiting pop's wait, wait_us), never past the call's end. */
static int64_t chain_attempt_deadline(int64_t now, int64_t wait_us, int64_t end) {
  return MIN(end, now + MF_CHAIN_ATTEMPT_US + MAX(wait_us, 0));
}

/* Records why a replicated call gave up and returns what the caller gets:
 * its last error, MAYFLY_ETIMEDOUT for a chain that kept answering EMOVED. */
static int chain_give_up(mayfly_ns_t *ns, const mf_part_t *p, int rc) {
  mf_set_last_error("%s: the chain of [%lld, %lld) (head %s) did not answer within %d ms: %s",
                    ns->path, (long long)p->lo, (long long)p->hi, p->head.address,
                    ns->client->timeout_ms, mayfly_strerror(rc));
  return rc == MAYFLY_EMOVED ? MAYFLY_ETIMEDOUT : rc;
}

/* mf_call_one for a replicated partition (see internal.h). */
static int chain_call(mayfly_ns_t *ns, mf_part_t *p, mf_call_t *call, int64_t extra_ms,
                      int64_t now) {
  int64_t end = now + ((int64_t)ns->client->timeout_ms + extra_ms) * 1000;
  int64_t wait_end = now + extra_ms * 1000; /* a waiting pop's */
  int perm_tried = 0;
  for (int attempt = 0;; attempt++) {
    if (attempt > 0) {
      now = g_get_monotonic_time();
      if (call->req.opcode == WIRE_OP_Q_POP) {
        call->req.arg0 = wait_end > now ? (uint64_t)((wait_end - now) / 1000) : 0;
      }
    }
    int64_t deadline = chain_attempt_deadline(now, wait_end - now, end);
    start_part_at(ns, p, call, now, deadline);
    int rc = mf_call_wait(call, deadline);
    if (rc == 0) return 0;
    if (rc == MAYFLY_ELOST) {
      mf_ns_refresh(ns);
      return rc;
    }
    if (rc == MAYFLY_EPERM && !perm_tried) {
      /* As for R = 1: once, the directory's capabilities. */
      perm_tried = 1;
      char why[256];
      g_strlcpy(why, mf_last_error(), sizeof why);
      if (mf_ns_refresh(ns) != 0) {
        mf_set_last_error("%s", why);
        return rc;
      }
    } else if (!mf_chain_error(call, rc)) {
      return rc;
    } else if (g_get_monotonic_time() >= end) {
      return chain_give_up(ns, p, rc);
    } else {
      mf_ns_chain_refresh(ns, end);
    }
    g_free(call->payload);
    call->payload = NULL;
    if ((rc = retarget(ns, p, call)) != 0) return rc;
  }
}

int mf_call_one(mayfly_ns_t *ns, mf_part_t *p, mf_call_t *call, int64_t extra_ms) {
  /* One clock read per call: the deadline's, also the send's time and the
   * moment to tell whether the capabilities are due for a refresh. */
  int64_t now = g_get_monotonic_time();
  if (caps_due(ns, now) && mf_ns_refresh(ns) == 0) {
    int rc = retarget(ns, p, call);
    if (rc != 0) return rc;
  }
  if (p->replicated) return chain_call(ns, p, call, extra_ms, now);
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

/* Starts calls (for parts, one each) grouped by the server they go to, each
 * group in one system call, in their order. */
static void start_grouped(mayfly_ns_t *ns, mf_part_t *parts, mf_call_t *const *calls, size_t n,
                          int64_t now, int64_t deadline) {
  if (n == 1) {
    start_part_at(ns, &parts[0], calls[0], now, deadline);
    return;
  }
  GHashTable *by_server = g_hash_table_new_full(g_str_hash, g_str_equal, NULL,
                                                (GDestroyNotify)g_ptr_array_unref);
  GPtrArray *order = g_ptr_array_new(); /* the servers' addresses, first seen first */
  for (size_t i = 0; i < n; i++) {
    if (parts[i].lost) {
      start_part_at(ns, &parts[i], calls[i], now, deadline); /* done at once: MAYFLY_ELOST */
      continue;
    }
    const char *addr = mf_part_member(&parts[i], calls[i]->req.opcode)->address;
    GPtrArray *group = g_hash_table_lookup(by_server, addr);
    if (group == NULL) {
      group = g_ptr_array_new();
      g_hash_table_insert(by_server, (gpointer)addr, group);
      g_ptr_array_add(order, (gpointer)addr);
    }
    g_ptr_array_add(group, calls[i]);
  }
  for (guint k = 0; k < order->len; k++) {
    GPtrArray *g = g_hash_table_lookup(by_server, order->pdata[k]);
    mf_calls_start_at(ns->client->pool, order->pdata[k], (mf_call_t *const *)g->pdata, g->len,
                      now, deadline);
  }
  g_ptr_array_free(order, TRUE);
  g_hash_table_destroy(by_server);
}

void mf_calls_chain_redo(mayfly_ns_t *ns, mf_part_t *parts, mf_call_t *const *calls, size_t n,
                         int64_t end_us) {
  mf_part_t *rparts = g_new(mf_part_t, n ? n : 1);
  mf_call_t **rcalls = g_new(mf_call_t *, n ? n : 1);
  size_t *ri = g_new(size_t, n ? n : 1);
  gboolean *moved = g_new0(gboolean, n ? n : 1); /* its range changed: the caller's */
  for (;;) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
      /* A write that succeeded is done whatever the caller does with the
       * rest: its seq stops holding acked back for the retries' records. */
      if (calls[i]->status == 0) mf_call_end(ns, calls[i]);
      if (parts[i].replicated && !moved[i] && mf_chain_error(calls[i], calls[i]->status)) {
        ri[m++] = i;
      }
    }
    if (m == 0) break;
    if (g_get_monotonic_time() >= end_us) {
      for (size_t k = 0; k < m; k++) {
        mf_call_t *c = calls[ri[k]];
        c->status = chain_give_up(ns, &parts[ri[k]], c->status);
      }
      break;
    }
    mf_ns_chain_refresh(ns, end_us);
    size_t sent = 0;
    for (size_t k = 0; k < m; k++) {
      size_t i = ri[k];
      g_free(calls[i]->payload);
      calls[i]->payload = NULL;
      if (retarget(ns, &parts[i], calls[i]) != 0) {
        calls[i]->status = MAYFLY_EMOVED; /* the caller finds the key's new partition */
        calls[i]->rep.flags = 0;
        moved[i] = TRUE;
        continue;
      }
      rparts[sent] = parts[i];
      rcalls[sent++] = calls[i];
    }
    if (sent == 0) continue;
    int64_t now = g_get_monotonic_time();
    /* A second per attempt, and a millisecond more per call in it: a large
     * batch is not given up on while it is still being sent. */
    int64_t deadline = MIN(end_us, now + MF_CHAIN_ATTEMPT_US + (int64_t)sent * 1000);
    start_grouped(ns, rparts, rcalls, sent, now, deadline);
    for (size_t k = 0; k < sent; k++) mf_call_wait(rcalls[k], deadline);
  }
  g_free(moved);
  g_free(ri);
  g_free(rcalls);
  g_free(rparts);
}

void mf_calls_run(mayfly_ns_t *ns, mf_part_t *parts, mf_call_t *calls, size_t n, int *rcs) {
  int64_t now = g_get_monotonic_time();
  int64_t end = now + (int64_t)ns->client->timeout_ms * 1000, deadline = end;
  int chained = 0;
  for (size_t i = 0; i < n; i++) chained |= parts[i].replicated;
  if (chained) deadline = MIN(end, now + MF_CHAIN_ATTEMPT_US + (int64_t)n * 1000);
  for (size_t i = 0; i < n; i++) start_part_at(ns, &parts[i], &calls[i], now, deadline);
  for (size_t i = 0; i < n; i++) rcs[i] = mf_call_wait(&calls[i], deadline);
  if (!chained) return;
  mf_call_t **ptrs = g_new(mf_call_t *, n ? n : 1);
  for (size_t i = 0; i < n; i++) ptrs[i] = &calls[i];
  mf_calls_chain_redo(ns, parts, ptrs, n, end);
  for (size_t i = 0; i < n; i++) rcs[i] = calls[i].status;
  g_free(ptrs);
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
