/*
 * Chain replication on the memory server's loop (see chain.h and
 * docs/data-protocol.md, "Chains").
 *
 * A write to a replicated block is executed with its reply captured
 * (conn_t.capture: the handlers' ms__reply and ms__reply_published keep
 * the reply and the data event instead of sending them), so one code path
 * serves R = 1 and every member. The head numbers the write (cseq), stores
 * its reply in the dedup table and queues it as pending; a member with a
 * successor forwards every pending write (CHAIN_FWD over the server's
 * shared link to that peer) and acknowledges upstream, or replies to the
 * client, when its successor acknowledged; the tail (no successor)
 * commits at once: it publishes the write's data event when its block is
 * watched and acknowledges once the event is published.
 */
#include "memserver/chain.h"

#include <string.h>

#include "common/check.h"
#include "common/error.h"
#include "common/log.h"
#include "memserver/internal.h"

#define CHAIN_TICK_MS 50
/* The successor link's bound on unanswered bytes, and how long a forward
 * may wait for its acknowledgement before the connection is given up (the
 * directory reconfigures a chain whose member died well before that). */
#define CHAIN_LINK_QUEUED (64u << 20)
#define CHAIN_LINK_REPLY_TIMEOUT_MS 10000

enum { W_CLIENT = 1, W_FWD = 2 };

/* Someone waiting for a pending write's acknowledgement: a client (its
 * request header; the reply is the dedup entry's, or `reply` for a write
 * with no dedup entry) or a predecessor's CHAIN_FWD (answered status 0). */
typedef struct chain_waiter {
  int kind;
  conn_t *c; /* holds a reference */
  wire_hdr_t req;
  int has_reply;
  ms_dedup_reply_t reply; /* payload owned */
} chain_waiter_t;

struct ms_chain {
  int64_t version;
  int n;                                /* members */
  ms_chain_member_t m[MS_CHAIN_MAX];    /* head first */
  int pos;                              /* this block's place; -1: a copy being filled */
  uint64_t last_cseq;                   /* head: the last cseq given */
  uint64_t applied;                     /* every cseq up to this is applied here */
  ms_pending_queue_t pending;
  ms_dedup_t *dedup;
  ms_link_t *succ;                      /* the server's link to the successor (not owned) */
  int32_t succ_index;
  int64_t succ_gen;
  uint64_t epoch;                       /* bumped when the successor changes */
  /* A joining copy (ms_chain_attach_copy) and the tail's copy_to. */
  int copy_on, copy_go;
  ms_link_t *copy_link;
  int32_t copy_index;
  int64_t copy_gen;
  uint64_t copy_from;
  uint64_t copy_epoch;
  int64_t recheck_ms;                   /* uv_now of the last check_block asked on a failure */
};

/* What a forward's callback needs to find its write again. */
typedef struct fwd_ctx {
  ms_server_t *s;
  int32_t index;
  int64_t generation;
  uint64_t cseq;
  uint64_t epoch;
  int to_copy;
} fwd_ctx_t;

static ms_chain_t *chain_of(const store_block_t *b) {
  return b->chain;
}

int ms_chain_replicated(const store_block_t *b) {
  return b->chain != NULL;
}

uint64_t ms_chain_applied(const store_block_t *b) {
  return b->chain != NULL ? chain_of(b)->applied : 0;
}

int ms__chain_may_repartition(const store_block_t *b) {
  return b->chain == NULL || chain_of(b)->pos == 0;
}

static int is_tail(const ms_chain_t *ch) {
  return ch->pos < 0 || ch->pos == ch->n - 1;
}

static int is_migrate(uint8_t op) {
  return op == WIRE_OP_KV_MIGRATE || op == WIRE_OP_KV_MIGRATE_ABORT;
}

/* --- server-wide ---------------------------------------------------------- */

static void peer_drained(void *ud) {
  ms_server_t *s = ud;
  /* Every block with unsent writes tries again at the next tick. */
  (void)s;
}

ms_link_t *ms_chain_peer_link(ms_server_t *s, const char *address) {
  ms_link_t *l = g_hash_table_lookup(s->peers, address);
  if (l == NULL) {
    ms_link_config_t cfg = {.key = s->has_key ? s->key : NULL,
                            .connect_timeout_ms = 1000,
                            .reply_timeout_ms = CHAIN_LINK_REPLY_TIMEOUT_MS,
                            .max_queued = CHAIN_LINK_QUEUED,
                            .max_payload = s->max_payload,
                            .on_drain = peer_drained,
                            .ud = s};
    l = ms_link_new(s->loop, address, &cfg);
    g_hash_table_insert(s->peers, g_strdup(address), l);
  }
  return l;
}

/* Counted from when the last successful heartbeat was sent, which is
 * before the directory received it: the server stops serving its chains no
 * later than the directory, counting from that heartbeat, drops it from
 * them. */
static int ms__chain_is_live(ms_server_t *s) {
  if (s->hb_timeout_ms <= 0) return 1;
  return s->live_at_us != 0 &&
         g_get_monotonic_time() - s->live_at_us <= s->hb_timeout_ms * 1000;
}

void ms__chain_live(ms_server_t *s, int64_t timeout_ms, int64_t sent_us) {
  s->hb_timeout_ms = timeout_ms;
  if (sent_us > s->live_at_us) s->live_at_us = sent_us;
}

/* --- replies ---------------------------------------------------------------- */

/* Answers a predecessor's CHAIN_FWD (h) with status: header and frame MAC. */
static void fwd_reply(conn_t *c, const wire_hdr_t *h, int status) {
  if (c->net.closing) return;
  ms_server_t *s = c->srv;
  wire_hdr_t r = {.opcode = h->opcode,
                  .flags = WIRE_F_REPLY,
                  .request_id = h->request_id,
                  .block_index = h->block_index,
                  .generation = h->generation,
                  .arg0 = h->arg0,
                  .arg1 = h->arg1,
                  .status = status};
  uint8_t out[WIRE_HEADER_SIZE + MF_MAC_SIZE];
  size_t n = ms_link_frame_head(s->has_key ? s->key : NULL, &r, NULL, out);
  mf_net_send(&c->net, out, n);
}

static void reply_stored(conn_t *c, const wire_hdr_t *req, const ms_dedup_reply_t *r) {
  ms__reply(c, req, r->status, r->flags, r->arg0, r->arg1, r->arg2, r->payload, r->plen);
}

static void waiter_free(chain_waiter_t *w) {
  g_free(w->reply.payload);
  ms__conn_unref(w->c);
  g_free(w);
}

static chain_waiter_t *waiter_new(int kind, conn_t *c, const wire_hdr_t *req) {
  chain_waiter_t *w = g_new0(chain_waiter_t, 1);
  w->kind = kind;
  w->c = c;
  w->req = *req;
  mf_net_conn_ref(&c->net);
  return w;
}

/* The bytes of w's reply. */
static GByteArray *waiter_bytes(ms_server_t *s, chain_waiter_t *w, const ms_dedup_entry_t *e) {
  GByteArray *a = g_byte_array_new();
  if (w->kind == W_FWD) {
    wire_hdr_t r = {.opcode = w->req.opcode,
                    .flags = WIRE_F_REPLY,
                    .request_id = w->req.request_id,
                    .block_index = w->req.block_index,
                    .generation = w->req.generation,
                    .arg0 = w->req.arg0,
                    .arg1 = w->req.arg1};
    uint8_t out[WIRE_HEADER_SIZE + MF_MAC_SIZE];
    size_t n = ms_link_frame_head(s->has_key ? s->key : NULL, &r, NULL, out);
    g_byte_array_append(a, out, (guint)n);
    return a;
  }
  const ms_dedup_reply_t *r = e != NULL && !w->has_reply ? &e->reply : &w->reply;
  uint8_t hdr[WIRE_HEADER_SIZE];
  ms__reply_header(&w->req, r->status, r->flags, r->arg0, r->arg1, r->arg2, r->plen, hdr);
  g_byte_array_append(a, hdr, WIRE_HEADER_SIZE);
  if (r->plen > 0) g_byte_array_append(a, r->payload, r->plen);
  return a;
}

/*
 * The write cseq is acknowledged at this member (every member after it
 * holds it, or this is the tail): commits its dedup entry and answers its
 * waiters. The tail of a watched block first publishes the write's data
 * event (numbered with cseq) and answers once it is published.
 */
static void finish(ms_server_t *s, store_block_t *b, uint64_t cseq, ms_dedup_entry_t *e,
                   GSList *waiters, int ev_kind, const uint8_t *ev_key, uint32_t ev_klen,
                   int64_t ev_offset, int64_t ev_length) {
  ms_chain_t *ch = chain_of(b);
  if (e != NULL) ms_dedup_commit(ch->dedup, e);
  uint64_t pub = 0;
  /* A copy still joining publishes too (is_tail: it has no successor): the
   * member before it stops publishing once it learns the copy joined, which
   * may be before the copy learns it, and a write both publish is dropped
   * the second time by the directory (chain_seq). */
  if (ev_kind != 0 && b->watched && is_tail(ch)) {
    pub = ms_publisher_add_seq(s->pub, b->index, b->generation, ev_kind, ev_key, ev_klen,
                               ev_offset, ev_length, cseq);
  }
  for (GSList *l = waiters; l != NULL; l = l->next) {
    chain_waiter_t *w = l->data;
    if (!w->c->net.closing) {
      GByteArray *a = waiter_bytes(s, w, e);
      if (pub != 0) {
        ms__send_when_published(w->c, pub, a->data, a->len);
      } else {
        mf_net_send(&w->c->net, a->data, a->len);
        ms__flush(w->c);
      }
      g_byte_array_free(a, TRUE);
    }
    waiter_free(w);
  }
  g_slist_free(waiters);
}

/* Uncharges a pending write's bytes from the deferred bounds. */
static void uncharge(ms_server_t *s, ms_pending_t *p) {
  conn_t *c = p->charged;
  if (c == NULL) return;
  c->deferred -= p->len;
  s->deferred_total -= p->len;
  p->charged = NULL;
  ms__conn_unref(c);
}

/* The pending write p is acknowledged: it leaves the queue and finishes. */
static void ack(ms_server_t *s, store_block_t *b, ms_pending_t *p) {
  ms_chain_t *ch = chain_of(b);
  ms_pending_remove(&ch->pending, p);
  uncharge(s, p);
  GSList *w = p->waiters;
  p->waiters = NULL;
  finish(s, b, p->cseq, p->dedup, w, p->ev_kind, p->ev_key, p->ev_klen, p->ev_offset,
         p->ev_length);
  ms_pending_free(p);
  ms__deferred_released(s);
}

/* Whether p is acknowledged by everyone it must be. */
static int acked_enough(const ms_chain_t *ch, const ms_pending_t *p) {
  return (ch->succ == NULL || p->acked_succ) && (!p->need_copy || p->acked_copy);
}

/* --- forwarding --------------------------------------------------------------- */

static void recheck(ms_server_t *s, store_block_t *b) {
  ms_chain_t *ch = chain_of(b);
  uint64_t now = uv_now(s->loop);
  if (ch->recheck_ms != 0 && now - (uint64_t)ch->recheck_ms < MS_CHAIN_RECHECK_MS) return;
  ch->recheck_ms = (int64_t)now;
  ms_control_verify(s->ctl, b->index);
}

static void mark_dirty(ms_server_t *s, store_block_t *b) {
  g_hash_table_add(s->chain_dirty, GINT_TO_POINTER(b->index));
}

static void on_fwd_reply(void *ud, int status, const wire_hdr_t *reply, const uint8_t *payload);

/* Forwards p where it is still due; returns 0, or MAYFLY_EAGAIN when a link
 * is full (tried again at the next tick). */
static int send_one(ms_server_t *s, store_block_t *b, ms_pending_t *p) {
  ms_chain_t *ch = chain_of(b);
  int rc = 0;
  if (ch->succ != NULL && !p->sent_succ && !p->acked_succ) {
    wire_hdr_t h = {.opcode = WIRE_OP_CHAIN_FWD,
                    .block_index = (uint32_t)ch->succ_index,
                    .generation = (uint64_t)ch->succ_gen,
                    .arg0 = p->cseq,
                    .arg1 = (uint64_t)ch->version};
    fwd_ctx_t *x = g_new(fwd_ctx_t, 1);
    *x = (fwd_ctx_t){s, b->index, b->generation, p->cseq, ch->epoch, 0};
    rc = ms_link_send(ch->succ, &h, p->frame, p->len, on_fwd_reply, x);
    if (rc == 0) {
      p->sent_succ = 1;
    } else {
      g_free(x);
    }
  }
  if (rc == 0 && p->need_copy && ch->copy_go && !p->sent_copy && !p->acked_copy) {
    wire_hdr_t h = {.opcode = WIRE_OP_CHAIN_FWD,
                    .block_index = (uint32_t)ch->copy_index,
                    .generation = (uint64_t)ch->copy_gen,
                    .arg0 = p->cseq,
                    .arg1 = (uint64_t)ch->version};
    fwd_ctx_t *x = g_new(fwd_ctx_t, 1);
    *x = (fwd_ctx_t){s, b->index, b->generation, p->cseq, ch->copy_epoch, 1};
    rc = ms_link_send(ch->copy_link, &h, p->frame, p->len, on_fwd_reply, x);
    if (rc == 0) {
      p->sent_copy = 1;
    } else {
      g_free(x);
    }
  }
  if (rc != 0) mark_dirty(s, b);
  return rc;
}

/* Sends every pending write not yet sent, in cseq order. */
static void send_all(ms_server_t *s, store_block_t *b) {
  ms_chain_t *ch = chain_of(b);
  for (GList *n = ch->pending.q.head; n != NULL; n = n->next) {
    if (send_one(s, b, n->data) != 0) break;
  }
}

static void on_fwd_reply(void *ud, int status, const wire_hdr_t *reply, const uint8_t *payload) {
  (void)payload;
  fwd_ctx_t *x = ud;
  ms_server_t *s = x->s;
  store_block_t *b = &s->store->blocks[x->index];
  ms_chain_t *ch = b->generation == x->generation ? chain_of(b) : NULL;
  if (ch == NULL || x->epoch != (x->to_copy ? ch->copy_epoch : ch->epoch) ||
      (x->to_copy && !ch->copy_on)) {
    g_free(x);
    return;
  }
  ms_pending_t *p = ms_pending_find(&ch->pending, x->cseq);
  int rc = status != 0 ? status : reply->status;
  if (p != NULL && rc == 0) {
    if (x->to_copy) {
      p->acked_copy = 1;
    } else {
      p->acked_succ = 1;
    }
    if (acked_enough(ch, p)) ack(s, b, p);
  } else if (p != NULL) {
    if (x->to_copy) {
      p->sent_copy = 0;
    } else {
      p->sent_succ = 0;
    }
    MF_DEBUG("block %d: forward of cseq %llu to its %s failed: %s", b->index,
             (unsigned long long)x->cseq, x->to_copy ? "copy" : "successor",
             mayfly_strerror(rc));
    mark_dirty(s, b);
    if (!x->to_copy) recheck(s, b);
  }
  g_free(x);
}

static void on_tick(uv_timer_t *t) {
  ms_server_t *s = t->data;
  if (g_hash_table_size(s->chain_dirty) == 0) return;
  GList *keys = g_hash_table_get_keys(s->chain_dirty);
  g_hash_table_remove_all(s->chain_dirty);
  for (GList *k = keys; k != NULL; k = k->next) {
    int32_t i = GPOINTER_TO_INT(k->data);
    store_block_t *b = &s->store->blocks[i];
    if (b->chain == NULL) continue;
    send_all(s, b);
  }
  g_list_free(keys);
}

/* A write was executed here as cseq: it commits at once at the tail, else
 * it waits in the pending queue for the successor's acknowledgement.
 * `charge` (may be NULL) is the connection whose deferred bytes the pending
 * frame counts in. */
static void commit_or_forward(ms_server_t *s, store_block_t *b, uint64_t cseq,
                              const uint8_t *frame, size_t flen, ms_dedup_entry_t *e,
                              chain_waiter_t *w, const ms_capture_t *cap, conn_t *charge) {
  ms_chain_t *ch = chain_of(b);
  int need_copy = ch->copy_on && cseq > ch->copy_from;
  if (ch->succ == NULL && !need_copy) {
    finish(s, b, cseq, e, w != NULL ? g_slist_prepend(NULL, w) : NULL, cap->ev_kind, cap->ev_key,
           cap->ev_klen, cap->ev_offset, cap->ev_length);
    return;
  }
  ms_pending_t *p = ms_pending_new(cseq, frame, flen);
  p->dedup = e;
  if (w != NULL) p->waiters = g_slist_prepend(NULL, w);
  p->ev_kind = cap->ev_kind;
  p->ev_key = cap->ev_klen > 0 ? g_memdup2(cap->ev_key, cap->ev_klen) : NULL;
  p->ev_klen = cap->ev_klen;
  p->ev_offset = cap->ev_offset;
  p->ev_length = cap->ev_length;
  p->need_copy = need_copy;
  if (charge != NULL) {
    /* The pending copy counts against the deferred bounds (server.c stops
     * serving a connection over them until writes are acknowledged). */
    charge->deferred += flen;
    s->deferred_total += flen;
    mf_net_conn_ref(&charge->net);
    p->charged = charge;
  }
  ms_pending_push(&ch->pending, p);
  send_one(s, b, p);
}

static void capture_free(ms_capture_t *cap) {
  g_free(cap->reply.payload);
  g_free(cap->ev_key);
}

/* Executes h on b with its reply captured. */
static void run_captured(conn_t *c, store_block_t *b, const wire_hdr_t *h, const uint8_t *frame,
                         size_t flen, ms_capture_t *cap) {
  memset(cap, 0, sizeof *cap);
  ms_capture_t *prev = c->capture;
  c->capture = cap;
  ms__apply(c, b, h, frame + WIRE_HEADER_SIZE + h->cap_len, frame, flen);
  c->capture = prev;
}

/* Whether a write that did not succeed changed the block all the same: a
 * push that found its segment full sealed it, which the replicas must know
 * (their readers see the seal). */
static int changed_anyway(const wire_hdr_t *h, const ms_capture_t *cap, int was_sealed,
                          const store_block_t *b) {
  return h->opcode == WIRE_OP_Q_PUSH && cap->reply.status == MAYFLY_EFULL && !was_sealed &&
         b->sealed;
}

/* The head executes a client write (seq: its sequence record; NULL for a
 * migration, which cseq alone orders). */
static void head_write(conn_t *c, store_block_t *b, const wire_hdr_t *h, const uint8_t *frame,
                       size_t flen, const wire_seq_t *seq) {
  ms_server_t *s = c->srv;
  ms_chain_t *ch = chain_of(b);
  ms_capture_t cap;
  int was_sealed = b->sealed;
  run_captured(c, b, h, frame, flen, &cap);
  if (cap.held) {
    ms__hold(c, b, frame, flen); /* nothing applied: served again later */
  } else if (cap.waited) {
    ms__add_waiter_frame(c, b, h, frame, flen);
  } else if (!cap.replied) {
    ms__reply_status(c, h, MAYFLY_EINTERNAL);
  } else if (cap.reply.status != 0 && !changed_anyway(h, &cap, was_sealed, b)) {
    /* Failed, nothing changed: not numbered, stored nor forwarded. */
    reply_stored(c, h, &cap.reply);
  } else {
    uint64_t cseq = ++ch->last_cseq;
    ch->applied = cseq;
    ms_dedup_entry_t *e = seq != NULL ? ms_dedup_add(ch->dedup, seq, &cap.reply, cseq) : NULL;
    chain_waiter_t *w = waiter_new(W_CLIENT, c, h);
    if (e == NULL) {
      w->has_reply = 1;
      w->reply = cap.reply;
      cap.reply.payload = NULL;
    }
    commit_or_forward(s, b, cseq, frame, flen, e, w, &cap, c);
    if (h->opcode == WIRE_OP_Q_PUSH && cap.reply.status == 0) ms__wake_replicated(b);
  }
  capture_free(&cap);
}

/* The sequence record of a request (the last WIRE_SEQ_SIZE bytes of its
 * metadata). Returns 0 or MAYFLY_EINVAL. */
static int seq_of(const wire_hdr_t *h, const uint8_t *frame, wire_seq_t *out) {
  if (!(h->flags & WIRE_F_SEQ) || h->cap_len < WIRE_SEQ_SIZE) return MAYFLY_EINVAL;
  wire_seq_get(frame + WIRE_HEADER_SIZE + h->cap_len - WIRE_SEQ_SIZE, out);
  return out->client_id != 0 && out->seq != 0 ? 0 : MAYFLY_EINVAL;
}

int ms__chain_handle(conn_t *c, store_block_t *b, const wire_hdr_t *h, const uint8_t *frame,
                     size_t flen) {
  ms_server_t *s = c->srv;
  ms_chain_t *ch = chain_of(b);
  if (!ms__chain_is_live(s) || ch->pos < 0) {
    /* Cut off from the directory for its heartbeat timeout: it may have
     * dropped this server from the chain (or the block is a copy not yet
     * in it). A client sent it here from a newer layout, perhaps: ask the
     * directory now rather than at the next heartbeat's rechain. */
    if (ch->pos < 0) recheck(s, b);
    ms__reply_status(c, h, MAYFLY_EMOVED);
    return 1;
  }
  if (wire_op_is_read(h->opcode)) {
    if (!is_tail(ch)) {
      recheck(s, b);
      ms__reply_status(c, h, MAYFLY_EMOVED);
      return 1;
    }
    return 0;
  }
  if (!wire_op_is_write(h->opcode) && !is_migrate(h->opcode)) return 0; /* BLOCK_STAT */
  if (ch->pos != 0) {
    recheck(s, b);
    ms__reply_status(c, h, MAYFLY_EMOVED);
    return 1;
  }
  if (is_migrate(h->opcode)) {
    head_write(c, b, h, frame, flen, NULL);
    return 1;
  }
  wire_seq_t seq;
  if (seq_of(h, frame, &seq) != 0) {
    ms__reply_status(c, h, MAYFLY_EINVAL);
    return 1;
  }
  ms_dedup_entry_t *e = NULL;
  switch (ms_dedup_find(ch->dedup, &seq, &e)) {
    case MS_DEDUP_DONE:
      reply_stored(c, h, &e->reply);
      return 1;
    case MS_DEDUP_PENDING: {
      ms_pending_t *p = ms_pending_find(&ch->pending, e->cseq);
      if (p == NULL) {
        reply_stored(c, h, &e->reply);
      } else {
        /* A retry of a write still on its way down the chain: answered
         * with it. */
        p->waiters = g_slist_append(p->waiters, waiter_new(W_CLIENT, c, h));
      }
      return 1;
    }
    case MS_DEDUP_OLD:
      ms__reply_status(c, h, MAYFLY_EINVAL);
      return 1;
    default:
      break;
  }
  head_write(c, b, h, frame, flen, &seq);
  return 1;
}

/* A member applies KV_DROP_RANGE: its head gave the slots away. */
static void apply_drop_range(store_block_t *b, const wire_hdr_t *in) {
  int64_t lo = (int64_t)in->arg0, hi = (int64_t)in->arg1;
  if (lo >= hi || b->kind != STORE_KV) return;
  store_kv_drop_range(b, lo, hi);
  if (b->range_hi == hi && b->range_lo < lo) b->range_hi = lo;
  if (b->range_lo == lo && b->range_hi > hi) b->range_lo = hi;
}

void ms__chain_fwd_in(conn_t *c, const wire_hdr_t *h, const uint8_t *frame, size_t flen,
                      int can_park) {
  ms_server_t *s = c->srv;
  if (ms_link_check_mac(s->has_key ? s->key : NULL, h, frame) != 0) {
    s->caps.refused++;
    fwd_reply(c, h, MAYFLY_EPERM);
    return;
  }
  store_block_t *b = NULL;
  int rc = store_lookup(s->store, h->block_index, h->generation, STORE_FREE, &b);
  if (rc == MAYFLY_EAGAIN && can_park) {
    ms__park(c, h->block_index, frame, flen);
    return;
  }
  if (rc != 0 || b->chain == NULL || !ms__chain_is_live(s)) {
    fwd_reply(c, h, rc == MAYFLY_EAGAIN || rc == 0 ? MAYFLY_EMOVED : rc);
    return;
  }
  ms_chain_t *ch = chain_of(b);
  if ((int64_t)h->arg1 < ch->version || ch->pos == 0) {
    fwd_reply(c, h, MAYFLY_EMOVED); /* a stale sender (or one that thinks we follow it) */
    if (ch->pos == 0) recheck(s, b);
    return;
  }
  if ((int64_t)h->arg1 > ch->version) recheck(s, b);
  /* The embedded frame: the client's request as the head got it. */
  const uint8_t *inner = frame + WIRE_HEADER_SIZE + h->cap_len;
  wire_hdr_t in;
  size_t ilen;
  if (wire_parse(inner, h->payload_len, UINT32_MAX, &in, &ilen) != 0 || ilen != h->payload_len ||
      !(wire_op_is_write(in.opcode) || is_migrate(in.opcode) || in.opcode == WIRE_OP_KV_DROP_RANGE)) {
    fwd_reply(c, h, MAYFLY_EPROTO);
    return;
  }
  uint64_t cseq = h->arg0;
  if (cseq <= ch->applied) {
    /* Already applied (a resend after a reconfiguration): acknowledged
     * once every member after this one has it too. */
    ms_pending_t *p = ms_pending_find(&ch->pending, cseq);
    if (p != NULL) {
      p->waiters = g_slist_append(p->waiters, waiter_new(W_FWD, c, h));
    } else {
      fwd_reply(c, h, 0);
    }
    return;
  }
  if (cseq != ch->applied + 1) {
    MF_ERROR("block %d: chain write %llu arrived with only %llu applied: refused", b->index,
             (unsigned long long)cseq, (unsigned long long)ch->applied);
    fwd_reply(c, h, MAYFLY_EPROTO);
    return;
  }
  ms_capture_t cap;
  memset(&cap, 0, sizeof cap);
  ms_dedup_entry_t *e = NULL;
  if (in.opcode == WIRE_OP_KV_DROP_RANGE) {
    apply_drop_range(b, &in);
  } else {
    wire_hdr_t run = in;
    /* The embedded frame named the head's block; it applies to ours. */
    run.block_index = (uint32_t)b->index;
    run.generation = (uint64_t)b->generation;
    run_captured(c, b, &run, inner, ilen, &cap);
    if (cap.held || cap.waited || !cap.replied) {
      MF_ERROR("block %d: chain write %llu (opcode 0x%02x) could not be applied as at the head",
               b->index, (unsigned long long)cseq, in.opcode);
    }
    wire_seq_t seq;
    if (wire_op_is_write(in.opcode) && seq_of(&in, inner, &seq) == 0) {
      e = ms_dedup_add(ch->dedup, &seq, &cap.reply, cseq);
    }
  }
  ch->applied = cseq;
  if (ch->last_cseq < cseq) ch->last_cseq = cseq;
  commit_or_forward(s, b, cseq, inner, ilen, e, waiter_new(W_FWD, c, h), &cap, NULL);
  capture_free(&cap);
}

void ms__chain_drop_range(ms_server_t *s, store_block_t *b, int64_t lo, int64_t hi) {
  ms_chain_t *ch = chain_of(b);
  if (ch == NULL || ch->pos != 0) return;
  wire_hdr_t in = {.opcode = WIRE_OP_KV_DROP_RANGE,
                   .block_index = (uint32_t)b->index,
                   .generation = (uint64_t)b->generation,
                   .arg0 = (uint64_t)lo,
                   .arg1 = (uint64_t)hi};
  uint8_t frame[WIRE_HEADER_SIZE];
  wire_encode(&in, frame);
  uint64_t cseq = ++ch->last_cseq;
  ch->applied = cseq;
  ms_capture_t cap;
  memset(&cap, 0, sizeof cap);
  commit_or_forward(s, b, cseq, frame, sizeof frame, NULL, NULL, &cap, NULL);
}

/* --- reconfiguration ------------------------------------------------------ */

static ms_chain_t *chain_new(ms_server_t *s) {
  ms_chain_t *ch = g_new0(ms_chain_t, 1);
  ms_pending_init(&ch->pending);
  ch->dedup = ms_dedup_new(&s->dedup_budget, s->dedup_max);
  ch->pos = -1;
  return ch;
}

static void members_clear(ms_chain_t *ch) {
  for (int k = 0; k < ch->n; k++) g_free(ch->m[k].address);
  ch->n = 0;
}

/* A member that has no successor any more commits what it had forwarded:
 * it is the tail now (publishing the events of those writes, which the
 * directory drops when the old tail had published them). */
static void commit_pending(ms_server_t *s, store_block_t *b) {
  ms_chain_t *ch = chain_of(b);
  GList *n = ch->pending.q.head;
  while (n != NULL) {
    GList *next = n->next;
    ms_pending_t *p = n->data;
    if (acked_enough(ch, p)) ack(s, b, p);
    n = next;
  }
}

void ms__chain_update(ms_server_t *s, store_block_t *b, const ms_event_t *e) {
  if (e->chain_n <= 0 && !e->joining) return; /* not replicated */
  ms_chain_t *ch = chain_of(b);
  if (ch == NULL) {
    ch = chain_new(s);
    b->chain = ch;
  } else if (e->chain_version < ch->version) {
    return; /* an older answer than one applied already */
  }
  int old_pos = ch->pos;
  members_clear(ch);
  ch->version = e->chain_version;
  if (e->joining) {
    ch->pos = -1;
  } else {
    for (int k = 0; k < e->chain_n && k < MS_CHAIN_MAX; k++) {
      ch->m[k].server_id = e->chain[k].server_id;
      ch->m[k].address = g_strdup(e->chain[k].address);
      ch->m[k].block_index = e->chain[k].block_index;
      ch->m[k].generation = e->chain[k].generation;
      ch->n++;
    }
    ch->pos = e->chain_pos;
    if (ch->pos < -1 || ch->pos >= ch->n) ch->pos = -1;
  }
  /* The successor. */
  ms_link_t *succ = NULL;
  int32_t sidx = 0;
  int64_t sgen = 0;
  if (ch->pos >= 0 && ch->pos + 1 < ch->n) {
    succ = ms_chain_peer_link(s, ch->m[ch->pos + 1].address);
    sidx = ch->m[ch->pos + 1].block_index;
    sgen = ch->m[ch->pos + 1].generation;
  }
  if (succ != ch->succ || sidx != ch->succ_index || sgen != ch->succ_gen) {
    ch->succ = succ;
    ch->succ_index = sidx;
    ch->succ_gen = sgen;
    ch->epoch++;
    for (GList *n = ch->pending.q.head; n != NULL; n = n->next) {
      ms_pending_t *p = n->data;
      p->sent_succ = 0;
      p->acked_succ = 0;
    }
    MF_INFO("block %d: chain version %lld, position %d of %d, successor %s", b->index,
            (long long)ch->version, ch->pos, ch->n,
            succ != NULL ? ms_link_address(succ) : "none");
  }
  /* A copy that joined is now the successor (or gone): stop feeding it. */
  if (ch->copy_on && succ != NULL) ms_chain_detach_copy(s, b);
  if (ch->pos == 0 && old_pos != 0 && ch->last_cseq < ch->applied) ch->last_cseq = ch->applied;
  if (ch->succ == NULL) {
    commit_pending(s, b);
  } else {
    send_all(s, b);
  }
  if (e->has_copy && ch->pos >= 0 && is_tail(ch) && s->copy_hook != NULL) {
    ms_chain_member_t to = {.server_id = e->copy_to.server_id,
                            .address = e->copy_to.address,
                            .block_index = e->copy_to.block_index,
                            .generation = e->copy_to.generation};
    s->copy_hook(s, b, &to, e->copy_op);
  }
}

void ms_chain_set_copy_hook(ms_server_t *s, ms_chain_copy_hook_t hook) {
  s->copy_hook = hook;
}

void ms__chain_drop(ms_server_t *s, store_block_t *b, int status) {
  ms_chain_t *ch = chain_of(b);
  if (ch == NULL) return;
  b->chain = NULL;
  ms_pending_t *p;
  while ((p = g_queue_peek_head(&ch->pending.q)) != NULL) {
    ms_pending_remove(&ch->pending, p);
    uncharge(s, p);
    for (GSList *l = p->waiters; l != NULL; l = l->next) {
      chain_waiter_t *w = l->data;
      if (w->kind == W_FWD) {
        fwd_reply(w->c, &w->req, status);
      } else {
        ms__reply_status(w->c, &w->req, status);
      }
      ms__flush(w->c);
      waiter_free(w);
    }
    g_slist_free(p->waiters);
    p->waiters = NULL;
    ms_pending_free(p);
  }
  ms_dedup_free(ch->dedup);
  members_clear(ch);
  g_free(ch);
  ms__deferred_released(s);
}

/* --- the copy part's hooks ------------------------------------------------ */

void ms_chain_snap_save(const store_block_t *b, GByteArray *out) {
  const ms_chain_t *ch = chain_of(b);
  uint8_t a[8];
  uint64_t applied = ch != NULL ? ch->applied : 0;
  for (int i = 0; i < 8; i++) a[i] = (uint8_t)(applied >> (8 * i));
  g_byte_array_append(out, a, 8);
  if (ch != NULL) {
    ms_dedup_save(ch->dedup, out);
  } else {
    uint8_t empty[8] = {1, 0, 0, 0, 0, 0, 0, 0};
    g_byte_array_append(out, empty, 8);
  }
}

int ms_chain_snap_restore(ms_server_t *s, store_block_t *b, const uint8_t *buf, size_t len) {
  if (len < 8) return MAYFLY_EPROTO;
  ms_chain_t *ch = chain_of(b);
  if (ch == NULL) {
    ch = chain_new(s);
    b->chain = ch;
  }
  ms_dedup_t *d = ms_dedup_new(&s->dedup_budget, s->dedup_max);
  int rc = ms_dedup_restore(d, buf + 8, len - 8);
  if (rc != 0) {
    ms_dedup_free(d);
    return rc;
  }
  ms_dedup_free(ch->dedup);
  ch->dedup = d;
  uint64_t applied = 0;
  for (int i = 0; i < 8; i++) applied |= (uint64_t)buf[i] << (8 * i);
  ch->applied = applied;
  if (ch->last_cseq < applied) ch->last_cseq = applied;
  return 0;
}

int ms_chain_attach_copy(ms_server_t *s, store_block_t *b, const char *address, int32_t index,
                         int64_t generation, uint64_t from) {
  ms_chain_t *ch = chain_of(b);
  if (ch == NULL || ch->pos < 0 || !is_tail(ch)) return MAYFLY_EINVAL;
  ch->copy_on = 1;
  ch->copy_go = 0;
  ch->copy_link = ms_chain_peer_link(s, address);
  ch->copy_index = index;
  ch->copy_gen = generation;
  ch->copy_from = from;
  ch->copy_epoch++;
  return 0;
}

int ms_chain_copy_release(ms_server_t *s, store_block_t *b) {
  ms_chain_t *ch = chain_of(b);
  if (ch == NULL || !ch->copy_on) return MAYFLY_EINVAL;
  ch->copy_go = 1;
  send_all(s, b);
  return 0;
}

void ms_chain_detach_copy(ms_server_t *s, store_block_t *b) {
  ms_chain_t *ch = chain_of(b);
  if (ch == NULL || !ch->copy_on) return;
  ch->copy_on = 0;
  ch->copy_go = 0;
  ch->copy_link = NULL;
  ch->copy_epoch++;
  GList *n = ch->pending.q.head;
  while (n != NULL) {
    GList *next = n->next;
    ms_pending_t *p = n->data;
    p->need_copy = 0;
    if (acked_enough(ch, p)) ack(s, b, p);
    n = next;
  }
}

/* --- start and stop ----------------------------------------------------- */

void ms__chain_start(ms_server_t *s, const ms_server_config_t *cfg) {
  s->peers = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  ms_dedup_budget_init(&s->dedup_budget, cfg->dedup_bytes);
  s->dedup_max = cfg->dedup_max > 0 ? (uint32_t)cfg->dedup_max : MS_DEDUP_MAX_DEFAULT;
  s->chain_dirty = g_hash_table_new(g_direct_hash, g_direct_equal);
  uv_timer_init(s->loop, &s->chain_timer);
  s->chain_timer.data = s;
  uv_timer_start(&s->chain_timer, on_tick, CHAIN_TICK_MS, CHAIN_TICK_MS);
}

static void chain_timer_closed(uv_handle_t *h) {
  ms_server_t *s = h->data;
  s->chain_timer_closed = 1;
  ms__server_free(s);
}

void ms__chain_stop(ms_server_t *s) {
  for (int32_t i = 0; i < s->store->nblocks; i++) {
    ms__chain_drop(s, &s->store->blocks[i], MAYFLY_EIO);
  }
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, s->peers);
  while (g_hash_table_iter_next(&it, &k, &v)) ms_link_close(v);
  g_hash_table_remove_all(s->peers);
  uv_timer_stop(&s->chain_timer);
  uv_close((uv_handle_t *)&s->chain_timer, chain_timer_closed);
}
