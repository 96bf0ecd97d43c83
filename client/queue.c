/*
 * Queue namespaces in libmayfly. Items go to the tail segment (the partition
 * with the highest number); when it is full the memory server seals it and
 * the client asks the directory for the next segment (idempotently, so
 * racing producers add one block). Pops take from the head segment; a sealed
 * segment that is empty is drained for good and the head moves on. A lost
 * segment (its memory server restarted) is never drained: the operations
 * that reach it fail with MAYFLY_ELOST.
 *
 * In a replicated namespace every segment is a chain: pushes and pops go to
 * its head with a sequence record, peeks and lengths to its tail. A push or
 * pop retried after a chain error goes to the same segment with the same
 * record, so the head replays its answer if it had applied it (a pop gets
 * the item its first attempt took); one refused because the segment is
 * sealed or drained was applied nowhere and moves on to the next segment.
 */
#include <string.h>

#include "client/internal.h"
#include "common/wire.h"

#define ATTEMPTS 64

/* The tail (last) or head (first live) segment. */
static int segment(mayfly_ns_t *ns, int tail, mf_part_t *out) {
  int rc = MAYFLY_EMOVED;
  g_rw_lock_reader_lock(&ns->lock);
  for (size_t i = 0; i < ns->nparts; i++) {
    const mf_part_t *p = &ns->parts[tail ? ns->nparts - 1 - i : i];
    if (!tail && p->lo < ns->queue_head) continue;
    *out = *p;
    rc = 0;
    break;
  }
  g_rw_lock_reader_unlock(&ns->lock);
  return rc;
}

/* Moves the head past a drained segment and gives its block back to the
 * pool: a sealed, empty segment never holds an item again. Releasing is
 * idempotent at the directory, so consumers racing here release it once. */
static void drained(mayfly_ns_t *ns, const mf_part_t *p) {
  g_rw_lock_writer_lock(&ns->lock);
  if (ns->queue_head < p->lo + 1) ns->queue_head = p->lo + 1;
  g_rw_lock_writer_unlock(&ns->lock);
  mayfly_stat_t *st = NULL;
  if (mf_release_range(ns->client, ns->path, p->lo, &st) == 0) {
    mf_ns_set_layout(ns, st);
    mayfly_stat_free(st);
  }
}

int mayfly_queue_push(mayfly_ns_t *ns, const void *buf, size_t len) {
  if (ns == NULL || (buf == NULL && len > 0)) return MAYFLY_EINVAL;
  if (ns->kind != MAYFLY_KIND_QUEUE) return MAYFLY_EKIND;
  int rc = MAYFLY_EMOVED;
  /* One call for every attempt: a replicated push keeps its sequence record. */
  mf_call_t call = {0};
  for (int attempt = 0; attempt < ATTEMPTS; attempt++) {
    mf_part_t p;
    if (segment(ns, 1, &p) != 0) {
      if ((rc = mf_ns_refresh(ns)) != 0) break;
      if (segment(ns, 1, &p) != 0) {
        rc = MAYFLY_EMOVED;
        break;
      }
    }
    if (wire_queue_charge(len) > (uint64_t)p.block_size) {
      rc = MAYFLY_ETOOBIG;
      break;
    }
    mf_call_target(ns, &call, WIRE_OP_Q_PUSH, &p);
    call.p1 = buf;
    call.l1 = len;
    rc = mf_call_one(ns, &p, &call, 0);
    g_free(call.payload);
    call.payload = NULL;
    if (rc == MAYFLY_EFULL) {
      /* Sealed: make sure the next segment exists, then push there. */
      if ((rc = mf_ns_grow(ns, p.lo + 1, p.lo + 2)) != 0) break;
      rc = MAYFLY_EMOVED;
      continue;
    }
    if (rc == MAYFLY_EMOVED) {
      if ((rc = mf_ns_refresh(ns)) != 0) break;
      rc = MAYFLY_EMOVED;
      continue;
    }
    break;
  }
  mf_call_end(ns, &call);
  return rc;
}

/* take() with the call its attempts share (a replicated pop's sequence
 * record), which the caller ends. */
static int take_with(mayfly_ns_t *ns, uint8_t op, void **out, size_t *len, int timeout_ms,
                     mf_call_t *call) {
  int64_t end = g_get_monotonic_time() + (int64_t)timeout_ms * 1000;
  for (int attempt = 0;; attempt++) {
    mf_part_t p;
    if (segment(ns, 0, &p) != 0) {
      int rc = mf_ns_refresh(ns);
      if (rc != 0) return rc;
      if (segment(ns, 0, &p) != 0) {
        /* The next segment is being added by a producer: look again soon. */
        if (g_get_monotonic_time() >= end && attempt > 0) return MAYFLY_EAGAIN;
        g_usleep(1000);
        continue;
      }
    }
    int64_t left_ms = (end - g_get_monotonic_time()) / 1000;
    if (left_ms < 0) left_ms = 0;
    mf_call_target(ns, call, op, &p);
    call->req.arg0 = op == WIRE_OP_Q_POP ? (uint64_t)left_ms : 0;
    call->reply_max = mf_block_reply_max(&p);
    int rc = mf_call_one(ns, &p, call, op == WIRE_OP_Q_POP ? left_ms : 0);
    if (rc == 0) {
      *len = call->plen;
      *out = call->payload != NULL ? call->payload : g_malloc(1);
      call->payload = NULL;
      return 0;
    }
    g_free(call->payload);
    call->payload = NULL;
    if (rc == MAYFLY_EMOVED && (call->rep.flags & WIRE_F_SEALED)) {
      drained(ns, &p);
      continue;
    }
    if (rc == MAYFLY_EMOVED) {
      if ((rc = mf_ns_refresh(ns)) != 0) return rc;
      continue;
    }
    return rc; /* MAYFLY_EAGAIN: nothing came within the timeout */
  }
}

static int take(mayfly_ns_t *ns, uint8_t op, void **out, size_t *len, int timeout_ms) {
  if (ns == NULL || out == NULL || len == NULL || timeout_ms < 0) return MAYFLY_EINVAL;
  if (ns->kind != MAYFLY_KIND_QUEUE) return MAYFLY_EKIND;
  mf_call_t call = {0};
  int rc = take_with(ns, op, out, len, timeout_ms, &call);
  mf_call_end(ns, &call);
  return rc;
}

int mayfly_queue_pop(mayfly_ns_t *ns, void **out, size_t *len, int timeout_ms) {
  return take(ns, WIRE_OP_Q_POP, out, len, timeout_ms);
}

int mayfly_queue_peek(mayfly_ns_t *ns, void **out, size_t *len) {
  return take(ns, WIRE_OP_Q_PEEK, out, len, 0);
}

int64_t mayfly_queue_length(mayfly_ns_t *ns) {
  if (ns == NULL) return MAYFLY_EINVAL;
  if (ns->kind != MAYFLY_KIND_QUEUE) return MAYFLY_EKIND;
  int perm_tried = 0;
  for (int attempt = 0; attempt < 8; attempt++) {
    mf_ns_caps_fresh(ns);
    g_rw_lock_reader_lock(&ns->lock);
    size_t n = ns->nparts;
    mf_part_t *parts = g_memdup2(ns->parts, (n ? n : 1) * sizeof *parts);
    g_rw_lock_reader_unlock(&ns->lock);
    mf_call_t *calls = g_new0(mf_call_t, n ? n : 1);
    int *rcs = g_new0(int, n ? n : 1);
    for (size_t i = 0; i < n; i++) mf_call_target(ns, &calls[i], WIRE_OP_Q_LEN, &parts[i]);
    mf_calls_run(ns, parts, calls, n, rcs); /* a lost segment: MAYFLY_ELOST */
    int64_t total = 0;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
      g_free(calls[i].payload);
      if (rcs[i] == 0) total += (int64_t)calls[i].rep.arg0;
      if (rcs[i] != 0 && rc == 0) rc = rcs[i];
    }
    mf_calls_end(ns, calls, n);
    g_free(rcs);
    g_free(calls);
    g_free(parts);
    if (mf_ns_perm_retry(ns, rc, &perm_tried)) continue;
    if (rc == MAYFLY_EMOVED) {
      if ((rc = mf_ns_refresh(ns)) != 0) return rc;
      continue;
    }
    return rc != 0 ? rc : total;
  }
  return MAYFLY_EMOVED;
}

/* The deadline of one round of a batch to segment p, started at now (and,
 * for a replicated segment, the end of its chain redo in *end). */
static int64_t round_deadline(const mayfly_ns_t *ns, const mf_part_t *p, size_t m, int64_t now,
                              int64_t *end) {
  *end = now + (int64_t)ns->client->timeout_ms * 1000;
  if (!p->replicated) return *end;
  return MIN(*end, now + MF_CHAIN_ATTEMPT_US + (int64_t)m * 1000);
}

int mayfly_queue_push_batch(mayfly_ns_t *ns, size_t n, const void *const *items,
                            const size_t *lens, int *rcs) {
  if (ns == NULL || (n > 0 && (items == NULL || lens == NULL || rcs == NULL))) return MAYFLY_EINVAL;
  if (ns->kind != MAYFLY_KIND_QUEUE) return MAYFLY_EKIND;
  mf_call_t *calls = g_new0(mf_call_t, n ? n : 1);
  gboolean *final = g_new0(gboolean, n ? n : 1); /* rcs[i] holds its answer */
  mf_part_t *parts = g_new(mf_part_t, n ? n : 1); /* each sent call's segment */
  mf_call_t **send = g_new(mf_call_t *, n ? n : 1);
  size_t next = 0; /* the first item without its answer */
  int first = 0, perm_tried = 0;
  mf_ns_caps_fresh(ns);
  for (int attempt = 0; next < n && attempt < ATTEMPTS; attempt++) {
    mf_part_t p;
    int rc = segment(ns, 1, &p);
    if (rc != 0 && (rc = mf_ns_refresh(ns)) == 0) rc = segment(ns, 1, &p);
    if (rc != 0) break;
    if ((rc = mf_part_lost(ns, &p)) != 0) {
      for (size_t i = next; i < n; i++) {
        if (!final[i]) rcs[i] = rc, final[i] = TRUE;
      }
      first = first != 0 ? first : rc;
      break;
    }
    /* The items still to push go to the tail in order, on one connection,
     * so the server applies them in order: once one item seals the segment,
     * every later one is refused too and is sent again to the next segment
     * (with its sequence record: a refused push was applied nowhere). */
    size_t m = 0;
    for (size_t i = next; i < n; i++) {
      if (final[i]) continue;
      mf_call_target(ns, &calls[i], WIRE_OP_Q_PUSH, &p);
      calls[i].p1 = items[i];
      calls[i].l1 = lens[i];
      if (wire_queue_charge(lens[i]) > (uint64_t)p.block_size) {
        rcs[i] = MAYFLY_ETOOBIG;
        final[i] = TRUE;
        if (first == 0) first = MAYFLY_ETOOBIG;
        continue;
      }
      parts[m] = p;
      send[m++] = &calls[i];
    }
    int64_t now = g_get_monotonic_time(), end;
    int64_t deadline = round_deadline(ns, &p, m, now, &end);
    mf_calls_start_at(ns->client->pool, p.head.address, send, m, now, deadline);
    for (size_t k = 0; k < m; k++) mf_call_wait(send[k], deadline);
    /* Chain errors are retried on this segment, each push with its record. */
    if (p.replicated) mf_calls_chain_redo(ns, parts, send, m, end);
    int full = 0, moved = 0, refused = 0;
    for (size_t k = 0; k < m; k++) {
      mf_call_t *c = send[k];
      size_t i = (size_t)(c - calls);
      rc = c->status;
      g_free(c->payload);
      c->payload = NULL;
      if (rc == MAYFLY_EFULL) {
        full = 1;
      } else if (rc == MAYFLY_EMOVED) {
        moved = 1;
      } else if (rc == MAYFLY_EPERM && !perm_tried) {
        refused = 1; /* the first refused capability: again after a refresh */
      } else {
        rcs[i] = rc;
        final[i] = TRUE;
        if (rc != 0 && first == 0) first = rc;
      }
    }
    if (full && mf_ns_grow(ns, p.lo + 1, p.lo + 2) != 0) break;
    if (moved && mf_ns_refresh(ns) != 0) break;
    if (refused && !mf_ns_perm_retry(ns, MAYFLY_EPERM, &perm_tried)) {
      for (size_t i = next; i < n; i++) {
        if (!final[i]) rcs[i] = MAYFLY_EPERM, final[i] = TRUE;
      }
      if (first == 0) first = MAYFLY_EPERM;
    }
    while (next < n && final[next]) next++;
  }
  for (size_t i = next; i < n; i++) {
    if (final[i]) continue;
    rcs[i] = MAYFLY_EMOVED;
    if (first == 0) first = MAYFLY_EMOVED;
  }
  mf_calls_end(ns, calls, n);
  g_free(send);
  g_free(parts);
  g_free(final);
  g_free(calls);
  return first;
}

int64_t mayfly_queue_pop_batch(mayfly_ns_t *ns, size_t n, void **items, size_t *lens) {
  if (ns == NULL || (n > 0 && (items == NULL || lens == NULL))) return MAYFLY_EINVAL;
  if (ns->kind != MAYFLY_KIND_QUEUE) return MAYFLY_EKIND;
  mf_call_t *calls = g_new0(mf_call_t, n ? n : 1);
  mf_part_t *parts = g_new(mf_part_t, n ? n : 1);
  mf_call_t **send = g_new(mf_call_t *, n ? n : 1);
  size_t got = 0;
  int err = 0, perm_tried = 0;
  mf_ns_caps_fresh(ns);
  for (int attempt = 0; got < n && attempt < ATTEMPTS && err == 0; attempt++) {
    mf_part_t p;
    int rc = segment(ns, 0, &p);
    if (rc != 0 && (rc = mf_ns_refresh(ns)) == 0) rc = segment(ns, 0, &p);
    if (rc != 0) break;
    if ((err = mf_part_lost(ns, &p)) != 0) break;
    size_t want = n - got;
    for (size_t i = 0; i < want; i++) {
      mf_call_target(ns, &calls[i], WIRE_OP_Q_POP, &p);
      calls[i].reply_max = mf_block_reply_max(&p);
      parts[i] = p;
      send[i] = &calls[i];
    }
    int64_t now = g_get_monotonic_time(), end;
    int64_t deadline = round_deadline(ns, &p, want, now, &end);
    mf_calls_start_at(ns->client->pool, p.head.address, send, want, now, deadline);
    for (size_t i = 0; i < want; i++) mf_call_wait(&calls[i], deadline);
    /* A pop that failed with a chain error goes to this segment again with
     * its record: if the head had applied it, it answers with that item. */
    if (p.replicated) mf_calls_chain_redo(ns, parts, send, want, end);
    int drained_seen = 0, empty = 0, refused = 0;
    for (size_t i = 0; i < want; i++) {
      rc = calls[i].status;
      if (rc == 0) {
        items[got] = calls[i].payload ? calls[i].payload : g_malloc(1);
        lens[got++] = calls[i].plen;
        calls[i].payload = NULL;
        continue;
      }
      g_free(calls[i].payload);
      calls[i].payload = NULL;
      if (rc == MAYFLY_EMOVED && (calls[i].rep.flags & WIRE_F_SEALED)) {
        drained_seen = 1;
      } else if (rc == MAYFLY_EAGAIN) {
        empty = 1;
      } else if (rc == MAYFLY_EMOVED) {
        if (mf_ns_refresh(ns) != 0) err = rc;
      } else if (rc == MAYFLY_EPERM && !perm_tried) {
        refused = 1; /* a capability refused: refresh once, below */
      } else {
        err = rc;
      }
    }
    /* Every pop of this round has its answer: the next round's are new. */
    mf_calls_end(ns, calls, want);
    if (refused && err == 0 && !mf_ns_perm_retry(ns, MAYFLY_EPERM, &perm_tried)) {
      err = MAYFLY_EPERM;
    }
    if (drained_seen) {
      drained(ns, &p);
    } else if (empty) {
      break; /* the queue is empty for now */
    }
  }
  g_free(send);
  g_free(parts);
  g_free(calls);
  return got > 0 || err == 0 ? (int64_t)got : err;
}
