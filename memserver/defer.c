/*
 * Requests that cannot be answered yet, on the memory server's loop:
 * replies held until their data event is published (awaiting), requests
 * parked until the directory confirms a block's owner, and requests held
 * while their block is being repartitioned. Each keeps a reference on its
 * connection; a closed connection's requests are dropped when replayed.
 */
#include <string.h>

#include "common/error.h"
#include "common/wire.h"
#include "memserver/internal.h"

/* A write on watched block b succeeded: queues its data event and answers
 * `req` (status 0, the other fields as for ms__reply()) once the event, and
 * every one before it, is published; however long the directory takes
 * (publish.h: never an ack without its event). Holds a reference on the
 * connection; the reply's bytes and the queued event's count in its reply
 * backlog meanwhile (mf_net_reserve), so the backlog caps
 * (--max-reply-backlog, --max-reply-backlog-total) bound what an outage of
 * the directory piles up: a connection at its cap is not served until the
 * held replies go. */
void ms__reply_published(conn_t *c, const store_block_t *b, int kind, const void *key,
                            size_t klen, int64_t offset, int64_t length, const wire_hdr_t *req,
                            uint16_t flags, uint64_t a0, const void *payload, uint32_t plen) {
  ms_capture_t *cap = c->capture;
  if (cap != NULL) {
    /* A replicated write: the tail publishes its event (chain.c). */
    ms__reply(c, req, 0, flags, a0, 0, 0, payload, plen);
    if (cap->ev_kind == 0) {
      cap->ev_kind = kind;
      cap->ev_klen = key != NULL ? (uint32_t)MIN(klen, (size_t)MS_PUB_KEY_MAX) : 0;
      cap->ev_key = cap->ev_klen > 0 ? g_memdup2(key, cap->ev_klen) : NULL;
      cap->ev_offset = offset;
      cap->ev_length = length;
    }
    return;
  }
  uint64_t id = ms_publisher_add(c->srv->pub, b->index, b->generation, kind, key, klen, offset,
                                 length);
  if (c->net.closing) return;
  awaiting_t *aw = g_new(awaiting_t, 1);
  aw->c = c;
  aw->upto = id;
  aw->bytes = g_byte_array_sized_new(WIRE_HEADER_SIZE + plen);
  aw->reserved = WIRE_HEADER_SIZE + plen + ms_publisher_event_size(key != NULL ? klen : 0);
  uint8_t hdr[WIRE_HEADER_SIZE];
  ms__reply_header(req, 0, flags, a0, 0, 0, plen, hdr);
  g_byte_array_append(aw->bytes, hdr, WIRE_HEADER_SIZE);
  if (plen > 0) g_byte_array_append(aw->bytes, payload, plen);
  mf_net_reserve(&c->net, aw->reserved);
  mf_net_conn_ref(&c->net);
  g_queue_push_tail(&c->srv->awaiting, aw);
}

void ms__send_when_published(conn_t *c, uint64_t id, const uint8_t *bytes, size_t len) {
  if (c->net.closing) return;
  awaiting_t *aw = g_new(awaiting_t, 1);
  aw->c = c;
  aw->upto = id;
  aw->bytes = g_byte_array_sized_new((guint)len);
  g_byte_array_append(aw->bytes, bytes, (guint)len);
  aw->reserved = len + ms_publisher_event_size(0);
  mf_net_reserve(&c->net, aw->reserved);
  mf_net_conn_ref(&c->net);
  g_queue_push_tail(&c->srv->awaiting, aw);
  /* Published already (an event queued before may have been taken). */
  ms__release_published(c->srv);
}

/* Sends the replies whose events are published (with `send` 0, frees every
 * one unsent), each connection's in one write. */
static void release(ms_server_t *s, int send) {
  uint64_t done = send ? ms_publisher_done(s->pub) : UINT64_MAX;
  GPtrArray *touched = g_ptr_array_new();
  awaiting_t *aw;
  while ((aw = g_queue_peek_head(&s->awaiting)) != NULL && aw->upto <= done) {
    g_queue_pop_head(&s->awaiting);
    mf_net_unreserve(&aw->c->net, aw->reserved);
    if (send && !aw->c->net.closing) {
      mf_net_send(&aw->c->net, aw->bytes->data, aw->bytes->len);
      if (touched->len == 0 || g_ptr_array_index(touched, touched->len - 1) != aw->c) {
        mf_net_conn_ref(&aw->c->net);
        g_ptr_array_add(touched, aw->c);
      }
    }
    g_byte_array_free(aw->bytes, TRUE);
    ms__conn_unref(aw->c);
    g_free(aw);
  }
  for (guint i = 0; i < touched->len; i++) {
    conn_t *c = g_ptr_array_index(touched, i);
    ms__flush(c);
    ms__conn_unref(c);
  }
  g_ptr_array_free(touched, TRUE);
}

void ms__release_published(ms_server_t *s) {
  release(s, 1);
}

void ms__drop_published(ms_server_t *s) {
  release(s, 0);
}

void ms__on_published(uv_async_t *a) {
  ms__release_published(ms_publisher_data(a->data));
}

/* Keeps a copy of a request frame, in order, to serve later (replay). The
 * copy counts against the connection's and the server's deferred caps,
 * which server.c checks before serving each frame. */
static void keep(GQueue *q, conn_t *c, const uint8_t *frame, size_t len) {
  parked_t *p = g_new(parked_t, 1);
  p->c = c;
  p->frame = g_memdup2(frame, len);
  p->len = len;
  c->deferred += len;
  c->srv->deferred_total += len;
  mf_net_conn_ref(&c->net);
  g_queue_push_tail(q, p);
}

/* Parks a request for a block generation the server has not seen until the
 * directory says who owns it (replay_parked). */
void ms__park(conn_t *c, uint32_t index, const uint8_t *frame, size_t len) {
  ms_server_t *s = c->srv;
  GQueue *q = g_hash_table_lookup(s->parked, GUINT_TO_POINTER(index));
  if (q == NULL) {
    q = g_queue_new();
    g_hash_table_insert(s->parked, GUINT_TO_POINTER(index), q);
    ms_control_verify(s->ctl, (int32_t)index);
  }
  keep(q, c, frame, len);
}

/* Holds a request until the repartition of its block ends (replay_held). */
void ms__hold(conn_t *c, store_block_t *b, const uint8_t *frame, size_t len) {
  if (c->capture != NULL) {
    c->capture->held = 1; /* chain.c holds the frame itself (nothing was applied) */
    return;
  }
  if (b->held == NULL) b->held = g_queue_new();
  keep(b->held, c, frame, len);
}


/* Serves kept requests again (status 0; what is still unknown then is
 * stale), or answers them all with `status`; frees the queue. With lost_gen
 * set, the block's generation lost_gen is lost: requests naming it are
 * answered MAYFLY_ELOST, the others (stale) MAYFLY_EMOVED. */
static void replay(GQueue *q, int status, int64_t lost_gen) {
  parked_t *p;
  ms_server_t *s = NULL;
  while ((p = g_queue_pop_head(q)) != NULL) {
    wire_hdr_t h;
    size_t flen;
    s = p->c->srv;
    p->c->deferred -= p->len;
    s->deferred_total -= p->len;
    if (!p->c->net.closing && wire_parse(p->frame, p->len, UINT32_MAX, &h, &flen) == 0) {
      if (lost_gen != 0) {
        ms__reply_status(p->c, &h,
                         (int64_t)h.generation == lost_gen ? MAYFLY_ELOST : MAYFLY_EMOVED);
      } else if (status != 0) {
        ms__reply_status(p->c, &h, status);
      } else {
        /* A replayed read asks for room too (ms__reply_fits): one whose
         * reply does not fit the backlog caps now is answered
         * MAYFLY_EMOVED, which clients take as "look again" (nothing was
         * read or popped), so replays never queue replies past the caps. */
        int serving = p->c->serving, retry = p->c->retry;
        p->c->serving = 1;
        p->c->retry = 0;
        ms__handle(p->c, &h, p->frame, p->len, 0);
        if (p->c->retry) ms__reply_status(p->c, &h, MAYFLY_EMOVED);
        p->c->serving = serving;
        p->c->retry = retry;
      }
      ms__flush(p->c);
    }
    ms__conn_unref(p->c);
    g_free(p->frame);
    g_free(p);
  }
  g_queue_free(q);
  if (s != NULL) ms__deferred_released(s);
}

/* Serves the held requests again (status 0), or answers them all with
 * `status` (the block went away). */
void ms__replay_held(store_block_t *b, int status) {
  GQueue *q = b->held;
  if (q == NULL) return;
  b->held = NULL;
  replay(q, status, 0);
}

void ms__replay_parked(ms_server_t *s, int32_t index, int status) {
  GQueue *q = g_hash_table_lookup(s->parked, GINT_TO_POINTER(index));
  if (q == NULL) return;
  g_hash_table_steal(s->parked, GINT_TO_POINTER(index));
  replay(q, status, 0);
}

void ms__replay_parked_lost(ms_server_t *s, int32_t index, int64_t generation) {
  GQueue *q = g_hash_table_lookup(s->parked, GINT_TO_POINTER(index));
  if (q == NULL) return;
  g_hash_table_steal(s->parked, GINT_TO_POINTER(index));
  replay(q, 0, generation);
}

