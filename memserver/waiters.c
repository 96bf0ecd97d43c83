/*
 * Queue pops that wait for a push (up to their timeout), on the memory
 * server's loop. A waiter is linked from its block (FIFO: the oldest pop
 * gets the next item) and from its connection (dropped when it closes),
 * through links of its own, so it leaves both in O(1) whether it is served,
 * times out or its connection closes. Waiting pops are capped per
 * connection and in total; past a cap a pop answers MAYFLY_EAGAIN at once
 * (a connection is never blocked behind its pops: the push that would wake
 * them may come on the same connection).
 */
#include "common/check.h"
#include "common/error.h"
#include "memserver/internal.h"

#define POP_WAIT_MAX_MS 600000

static void waiter_closed(uv_handle_t *h) {
  waiter_t *w = h->data;
  g_free(w->frame);
  ms__conn_unref(w->c);
  g_free(w);
}

/* Detaches a waiter from its block and connection and frees it. */
void ms__waiter_finish(waiter_t *w) {
  MF_CHECK(!w->done);
  w->done = 1;
  if (w->b->waiters != NULL) g_queue_unlink(w->b->waiters, &w->block_link);
  g_queue_unlink(&w->c->waiters, &w->conn_link);
  w->c->srv->pops_total--;
  uv_timer_stop(&w->timer);
  uv_close((uv_handle_t *)&w->timer, waiter_closed);
}

static void waiter_timeout(uv_timer_t *t) {
  waiter_t *w = t->data;
  ms__reply_status(w->c, &w->req, MAYFLY_EAGAIN);
  ms__flush(w->c);
  ms__waiter_finish(w);
}

/* Answers every pop waiting on a block with `status` (the block changes owner). */
void ms__wake_all(store_block_t *b, int status) {
  waiter_t *w;
  while (b->waiters != NULL && (w = g_queue_peek_head(b->waiters)) != NULL) {
    ms__reply_status(w->c, &w->req, status);
    ms__flush(w->c);
    ms__waiter_finish(w);
  }
}

void ms__add_waiter(conn_t *c, store_block_t *b, const wire_hdr_t *h) {
  ms__add_waiter_frame(c, b, h, NULL, 0);
}

void ms__add_waiter_frame(conn_t *c, store_block_t *b, const wire_hdr_t *h,
                          const uint8_t *frame, size_t flen) {
  ms_server_t *s = c->srv;
  if (c->capture != NULL) {
    c->capture->waited = 1; /* chain.c makes it wait with its frame */
    return;
  }
  if ((int64_t)c->waiters.length >= s->pops_max || s->pops_total >= s->pops_total_max) {
    ms__reply_status(c, h, MAYFLY_EAGAIN);
    return;
  }
  waiter_t *w = g_new0(waiter_t, 1);
  w->c = c;
  w->b = b;
  w->req = *h;
  if (frame != NULL) {
    w->frame = g_memdup2(frame, flen);
    w->flen = flen;
  }
  w->block_link.data = w->conn_link.data = w;
  mf_net_conn_ref(&c->net);
  s->pops_total++;
  uv_timer_init(s->loop, &w->timer);
  w->timer.data = w;
  if (b->waiters == NULL) b->waiters = g_queue_new();
  g_queue_push_tail_link(b->waiters, &w->block_link);
  g_queue_push_tail_link(&c->waiters, &w->conn_link);
  uint64_t ms = h->arg0 > POP_WAIT_MAX_MS ? POP_WAIT_MAX_MS : h->arg0;
  uv_timer_start(&w->timer, waiter_timeout, ms, 0);
}

void ms__wake_replicated(store_block_t *b) {
  waiter_t *w = b->waiters != NULL ? g_queue_peek_head(b->waiters) : NULL;
  if (w == NULL || w->frame == NULL) return;
  conn_t *c = w->c;
  uint8_t *frame = w->frame;
  size_t flen = w->flen;
  w->frame = NULL;
  mf_net_conn_ref(&c->net);
  ms__waiter_finish(w);
  wire_hdr_t h;
  size_t n;
  if (!c->net.closing && wire_parse(frame, flen, UINT32_MAX, &h, &n) == 0) {
    /* Served again as if it had just come (can_park 0: its block is known). */
    int serving = c->serving, retry = c->retry;
    c->serving = 0;
    c->retry = 0;
    ms__handle(c, &h, frame, flen, 0);
    c->serving = serving;
    c->retry = retry;
    ms__flush(c);
  }
  g_free(frame);
  ms__conn_unref(c);
}
