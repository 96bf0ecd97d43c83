/*
 * Queue pops that wait for a push (up to their timeout), on the memory
 * server's loop. A waiter is linked from its block (FIFO: the oldest pop
 * gets the next item) and from its connection (dropped when it closes).
 */
#include "common/error.h"
#include "memserver/internal.h"

#define POP_WAIT_MAX_MS 600000

static void waiter_closed(uv_handle_t *h) {
  waiter_t *w = h->data;
  ms__conn_unref(w->c);
  g_free(w);
}

/* Detaches a waiter from its block and connection and frees it. */
void ms__waiter_finish(waiter_t *w) {
  if (w->b->waiters != NULL) g_queue_remove(w->b->waiters, w);
  w->c->waiters = g_list_remove(w->c->waiters, w);
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
  waiter_t *w = g_new0(waiter_t, 1);
  w->c = c;
  w->b = b;
  w->req = *h;
  c->refs++;
  uv_timer_init(c->srv->loop, &w->timer);
  w->timer.data = w;
  if (b->waiters == NULL) b->waiters = g_queue_new();
  g_queue_push_tail(b->waiters, w);
  c->waiters = g_list_prepend(c->waiters, w);
  uint64_t ms = h->arg0 > POP_WAIT_MAX_MS ? POP_WAIT_MAX_MS : h->arg0;
  uv_timer_start(&w->timer, waiter_timeout, ms, 0);
}

