/*
 * The memory server's request handlers: one complete, length-checked frame
 * in, a reply (or a held, parked or waiting request) out. Runs on the loop.
 */
#include <string.h>

#include "common/error.h"
#include "common/wire.h"
#include "memserver/allocstats.h"
#include "memserver/internal.h"

/* The block kind an opcode works on; -1 for an opcode that does not exist. */
static int kind_of(uint8_t op) {
  switch (op) {
    case WIRE_OP_BLOCK_STAT:
      return STORE_FREE; /* any kind */
    case WIRE_OP_FILE_WRITE:
    case WIRE_OP_FILE_READ:
    case WIRE_OP_FILE_SIZE:
    case WIRE_OP_FILE_TRUNCATE:
      return STORE_FILE;
    case WIRE_OP_Q_PUSH:
    case WIRE_OP_Q_POP:
    case WIRE_OP_Q_PEEK:
    case WIRE_OP_Q_LEN:
      return STORE_QUEUE;
    case WIRE_OP_KV_PUT:
    case WIRE_OP_KV_GET:
    case WIRE_OP_KV_DEL:
    case WIRE_OP_KV_EXISTS:
    case WIRE_OP_KV_MIGRATE:
    case WIRE_OP_KV_MIGRATE_ABORT:
      return STORE_KV;
    default:
      return -1;
  }
}

/* Whether the opcode changes a block in a way that makes a data event on a
 * watched block (defer.c, ms__reply_published). */
static int makes_event(const wire_hdr_t *h) {
  switch (h->opcode) {
    case WIRE_OP_KV_PUT:
    case WIRE_OP_KV_DEL:
    case WIRE_OP_Q_PUSH:
    case WIRE_OP_Q_POP:
      return 1;
    case WIRE_OP_FILE_WRITE:
      return h->payload_len > 0;
    default:
      return 0;
  }
}

/* Another memory server moves entries here (or takes them back). */
static void handle_migrate(conn_t *c, store_block_t *b, const wire_hdr_t *h,
                           const uint8_t *payload) {
  int64_t lo = (int64_t)h->arg0, hi = (int64_t)h->arg1;
  /* A block moving data of its own does not take any (the directory never
   * plans both at once; this guards against a confused peer). */
  if (h->arg0 >= WIRE_KV_SLOTS || h->arg1 > WIRE_KV_SLOTS || lo >= hi || b->rp_state > STORE_RP_PLANNING) {
    ms__reply_status(c, h, MAYFLY_EINVAL);
    return;
  }
  if (h->opcode == WIRE_OP_KV_MIGRATE_ABORT) {
    store_kv_drop_range(b, lo, hi);
    if (b->range_hi == hi && b->range_lo < lo) b->range_hi = lo;
    if (b->range_lo == lo && b->range_hi > hi) b->range_lo = hi;
    ms__reply_status(c, h, 0);
    return;
  }
  if (lo < b->range_lo || hi > b->range_hi) {
    /* A merge: the block takes over the adjacent slots of its neighbour. */
    if (b->range_hi == lo) {
      b->range_hi = hi;
    } else if (b->range_lo == hi) {
      b->range_lo = lo;
    } else {
      ms__reply_status(c, h, MAYFLY_EINVAL);
      return;
    }
  }
  uint64_t count = 0;
  int rc = store_kv_migrate_in(c->srv->store, b, payload, h->payload_len, lo, hi, &count);
  ms__reply(c, h, rc, 0, count, 0, 0, NULL, 0);
}

static void handle_kv(conn_t *c, store_block_t *b, const wire_hdr_t *h, const uint8_t *payload,
                      const uint8_t *frame, size_t flen) {
  store_t *st = c->srv->store;
  if (h->opcode == WIRE_OP_KV_MIGRATE || h->opcode == WIRE_OP_KV_MIGRATE_ABORT) {
    handle_migrate(c, b, h, payload);
    return;
  }
  uint32_t klen = h->opcode == WIRE_OP_KV_PUT ? h->arg2 : h->payload_len;
  if (klen > h->payload_len || klen > WIRE_KEY_MAX) {
    ms__reply_status(c, h, MAYFLY_EINVAL);
    return;
  }
  /* The key is hashed once: the hash gives the slot and finds the entry. */
  uint64_t hash = wire_kv_hash(payload, klen);
  int rc = store_kv_check_slot(b, hash);
  if (rc != 0) {
    ms__reply_status(c, h, rc);
    return;
  }
  GHashTable *moving = NULL;
  if (b->rp_state >= STORE_RP_MOVING) {
    int64_t slot = wire_kv_slot_of(hash);
    if (slot >= b->rp_lo && slot < b->rp_hi) {
      /* Being moved: reads are served from the set-aside copy while it is
       * sent; writes wait, and so does everything once the commit is asked
       * for (the target may be answering by then). */
      int read = h->opcode == WIRE_OP_KV_GET || h->opcode == WIRE_OP_KV_EXISTS;
      if (!read || b->rp_state == STORE_RP_COMMITTING) {
        ms__hold(c, b, frame, flen);
        return;
      }
      moving = b->rp_moving;
    }
  }
  switch (h->opcode) {
    case WIRE_OP_KV_PUT: {
      rc = store_kv_put(st, b, hash, payload, klen, payload + klen, h->payload_len - klen);
      if (rc == MAYFLY_EFULL) {
        /* Room is made by a split, now or after a short wait (partitions
         * busy); the put waits for it unless splitting was refused. */
        ms__rp_consider(c->srv, b, 1);
        if (b->rp_state != STORE_RP_IDLE ||
            (b->rp_refused == 0 && b->range_hi - b->range_lo >= 2 &&
             g_hash_table_contains(c->srv->rp_retry, GINT_TO_POINTER(b->index)))) {
          ms__hold(c, b, frame, flen);
          return;
        }
        if (b->rp_refused != 0) rc = b->rp_refused;
      }
      if (rc == 0 && b->watched) {
        ms__reply_published(c, b, MS_EV_KIND_PUT, payload, klen, 0, klen, h, 0, 0, NULL, 0);
      } else {
        ms__reply_status(c, h, rc);
      }
      if (rc == 0 && b->used * 100 > (uint64_t)b->high_wm * st->block_size) {
        ms__rp_consider(c->srv, b, 0);
      }
      break;
    }
    case WIRE_OP_KV_GET: {
      /* The value is borrowed from its entry; ms__reply copies or sends it
       * before returning. */
      uint32_t vlen = 0;
      const uint8_t *v = moving ? store_kv_get_in(moving, hash, payload, klen, &vlen)
                                : store_kv_get(b, hash, payload, klen, &vlen);
      if (v != NULL && !ms__reply_fits(c, vlen)) break; /* waits for the backlog */
      if (v == NULL) {
        ms__reply_status(c, h, MAYFLY_ENOKEY);
      } else {
        ms__reply(c, h, 0, 0, 0, 0, 0, v, vlen);
      }
      break;
    }
    case WIRE_OP_KV_DEL: {
      rc = store_kv_del(b, hash, payload, klen);
      if (rc == 0 && b->watched) {
        ms__reply_published(c, b, MS_EV_KIND_DELETE, payload, klen, 0, klen, h, 0, 0, NULL, 0);
      } else {
        ms__reply_status(c, h, rc);
      }
      if (rc == 0 && b->used * 100 < (uint64_t)b->low_wm * st->block_size) {
        ms__rp_consider(c->srv, b, 0);
      }
      break;
    }
    case WIRE_OP_KV_EXISTS: {
      uint32_t vlen = 0;
      const uint8_t *v = moving ? store_kv_get_in(moving, hash, payload, klen, &vlen)
                                : store_kv_get(b, hash, payload, klen, &vlen);
      ms__reply(c, h, 0, 0, v != NULL, 0, 0, NULL, 0);
      break;
    }
    default:
      ms__reply_status(c, h, MAYFLY_EPROTO);
  }
}

static void handle_queue(conn_t *c, store_block_t *b, const wire_hdr_t *h,
                         const uint8_t *payload) {
  store_t *st = c->srv->store;
  uint16_t sealed = b->sealed ? WIRE_F_SEALED : 0;
  switch (h->opcode) {
    case WIRE_OP_Q_PUSH: {
      /* A replicated segment never hands an item over: the push is stored
       * (and forwarded), then the oldest waiting pop is served again as a
       * write of its own (chain.c, ms__wake_replicated). */
      waiter_t *w = b->waiters && b->chain == NULL ? g_queue_peek_head(b->waiters) : NULL;
      /* A waiting pop whose connection has no room for the item (its client
       * is not reading its replies) is answered "try again" and the next
       * one is looked at: nothing is handed over past the backlog caps, and
       * with no taker the item is stored below. */
      while (w != NULL && !b->sealed &&
             !mf_net_fits(&w->c->net, (size_t)WIRE_HEADER_SIZE + h->payload_len)) {
        ms__reply_status(w->c, &w->req, MAYFLY_EAGAIN);
        ms__flush(w->c);
        ms__waiter_finish(w);
        w = g_queue_peek_head(b->waiters);
      }
      if (w != NULL && !b->sealed && b->watched) {
        /* Handed over to a waiting pop: a push and a pop happened. */
        ms__reply_published(c, b, MS_EV_KIND_PUSH, NULL, 0, 0, h->payload_len, h, 0, 0, NULL, 0);
        ms__reply_published(w->c, b, MS_EV_KIND_POP, NULL, 0, 0, h->payload_len, &w->req, 0, 0,
                        payload, h->payload_len);
        ms__waiter_finish(w);
        break;
      }
      if (w != NULL && !b->sealed) {
        /* Someone is waiting on an empty segment: hand the item over. */
        ms__reply(w->c, &w->req, 0, 0, 0, 0, 0, payload, h->payload_len);
        ms__flush(w->c);
        ms__waiter_finish(w);
        ms__reply_status(c, h, 0);
        break;
      }
      int rc = store_queue_push(st, b, payload, h->payload_len);
      if (rc == 0 && b->watched) {
        ms__reply_published(c, b, MS_EV_KIND_PUSH, NULL, 0, 0, h->payload_len, h,
                        b->sealed ? WIRE_F_SEALED : 0, 0, NULL, 0);
        break;
      }
      ms__reply(c, h, rc, b->sealed ? WIRE_F_SEALED : 0, 0, 0, 0, NULL, 0);
      break;
    }
    case WIRE_OP_Q_POP: {
      const store_item_t *head = store_queue_peek(b);
      if (head != NULL && !ms__reply_fits(c, head->len)) break; /* waits for the backlog */
      store_item_t *it = store_queue_pop(b);
      if (it != NULL && b->watched) {
        ms__reply_published(c, b, MS_EV_KIND_POP, NULL, 0, 0, it->len, h, sealed, 0, it->data,
                        it->len);
        g_free(it);
      } else if (it != NULL) {
        ms__reply(c, h, 0, sealed, 0, 0, 0, it->data, it->len);
        g_free(it);
      } else if (b->sealed) {
        ms__reply(c, h, MAYFLY_EMOVED, WIRE_F_SEALED, 0, 0, 0, NULL, 0);
      } else if (h->arg0 > 0) {
        ms__add_waiter(c, b, h);
      } else {
        ms__reply_status(c, h, MAYFLY_EAGAIN);
      }
      break;
    }
    case WIRE_OP_Q_PEEK: {
      const store_item_t *it = store_queue_peek(b);
      if (it != NULL && !ms__reply_fits(c, it->len)) break; /* waits for the backlog */
      if (it != NULL) {
        ms__reply(c, h, 0, sealed, 0, 0, 0, it->data, it->len);
      } else {
        ms__reply(c, h, b->sealed ? MAYFLY_EMOVED : MAYFLY_EAGAIN, sealed, 0, 0, 0, NULL, 0);
      }
      break;
    }
    case WIRE_OP_Q_LEN:
      ms__reply(c, h, 0, sealed, g_queue_get_length(b->items), 0, 0, NULL, 0);
      break;
    default:
      ms__reply_status(c, h, MAYFLY_EPROTO);
  }
}

static void handle_file(conn_t *c, store_block_t *b, const wire_hdr_t *h,
                        const uint8_t *payload) {
  store_t *st = c->srv->store;
  switch (h->opcode) {
    case WIRE_OP_FILE_WRITE: {
      int rc = store_file_write(st, b, h->arg0, payload, h->payload_len);
      if (rc == 0 && h->payload_len > 0 && b->watched) {
        /* The offset in the file: the segment starts at range_lo. */
        ms__reply_published(c, b, MS_EV_KIND_WRITE, NULL, 0, b->range_lo + (int64_t)h->arg0,
                        h->payload_len, h, 0, b->size, NULL, 0);
        break;
      }
      ms__reply(c, h, rc, 0, b->size, 0, 0, NULL, 0);
      break;
    }
    case WIRE_OP_FILE_READ: {
      const uint8_t *data = NULL;
      uint64_t want = h->arg1 > c->srv->max_payload ? c->srv->max_payload : h->arg1;
      uint64_t n = store_file_read(b, h->arg0, want, &data);
      if (!ms__reply_fits(c, n)) break; /* waits for the backlog */
      ms__reply(c, h, 0, 0, b->size, 0, 0, data, (uint32_t)n);
      break;
    }
    case WIRE_OP_FILE_SIZE:
      ms__reply(c, h, 0, 0, b->size, 0, 0, NULL, 0);
      break;
    case WIRE_OP_FILE_TRUNCATE:
      store_file_truncate(st, b, h->arg0);
      ms__reply(c, h, 0, 0, b->size, 0, 0, NULL, 0);
      break;
    default:
      ms__reply_status(c, h, MAYFLY_EPROTO);
  }
}

/* The server as a whole: its allocator's figures and the store's. */
static void handle_server_stat(conn_t *c, const wire_hdr_t *h) {
  wire_server_stat_t st = {0};
  st.source = (uint64_t)ms_alloc_stats(&st.allocated, &st.resident);
  store_totals(c->srv->store, &st.charged, &st.kv_entries);
  st.blocks_in_use = (uint64_t)c->srv->store->blocks_in_use;
  st.cap_refused = c->srv->caps.refused;
  uint8_t out[WIRE_SERVER_STAT_SIZE];
  wire_server_stat_put(out, &st);
  ms__reply(c, h, 0, 0, 0, 0, 0, out, sizeof out);
}

/* With the cluster key, whether the frame's capability grants it
 * (capcheck.h). Asked before anything else about the frame, the block
 * included, so a refused request learns nothing: not even whether the
 * block or its generation exists. */
static int capability_ok(conn_t *c, const wire_hdr_t *h, const uint8_t *frame, size_t flen) {
  ms_server_t *s = c->srv;
  if (!s->has_key) return 1;
  if (c->caps == NULL && ms_capcheck_right(h->opcode) > 0) c->caps = g_new0(ms_capcache_t, 1);
  if (h->flags & WIRE_F_SEQ) {
    /* A replicated write: the capability is what precedes the sequence
     * record at the end of the metadata. */
    if (h->cap_len < WIRE_SEQ_SIZE) {
      s->caps.refused++;
      return 0;
    }
    wire_hdr_t ch = *h;
    ch.cap_len = (uint16_t)(h->cap_len - WIRE_SEQ_SIZE);
    return ms_capcheck(s->key, ms__server_id(s), ms__wall_ms(s), c->caps, &s->caps, &ch, frame,
                       flen) == 0;
  }
  return ms_capcheck(s->key, ms__server_id(s), ms__wall_ms(s), c->caps, &s->caps, h, frame,
                     flen) == 0;
}

/* Serves one complete frame. can_park is 0 when replaying parked requests
 * after the directory answered: what is still unknown then is stale. */
void ms__handle(conn_t *c, const wire_hdr_t *h, const uint8_t *frame, size_t flen,
                   int can_park) {
  const uint8_t *payload = frame + WIRE_HEADER_SIZE + h->cap_len;
  if (h->opcode == WIRE_OP_CHAIN_FWD) {
    /* Server to server: its frame MAC is checked there. */
    ms__chain_fwd_in(c, h, frame, flen, can_park);
    return;
  }
  if (h->opcode == WIRE_OP_REPLICA_COPY) {
    /* Server to server too: its frame MAC is checked there (replcopy.c). */
    ms__replcopy_in(c, h, frame, flen, can_park);
    return;
  }
  if (!capability_ok(c, h, frame, flen)) {
    ms__reply_status(c, h, MAYFLY_EPERM);
    return;
  }
  if (h->opcode == WIRE_OP_PING) {
    ms__reply_status(c, h, 0);
    return;
  }
  if (h->opcode == WIRE_OP_SERVER_STAT) {
    handle_server_stat(c, h);
    return;
  }
  int k = kind_of(h->opcode);
  if (k < 0) {
    ms__reply_status(c, h, MAYFLY_EPROTO); /* checked before the block: nothing else is looked at */
    return;
  }
  store_block_t *b = NULL;
  int rc = store_lookup(c->srv->store, h->block_index, h->generation, (store_kind_t)k, &b);
  if (rc == MAYFLY_EAGAIN) {
    if (can_park) {
      ms__park(c, h->block_index, frame, flen);
    } else {
      ms__reply_status(c, h, MAYFLY_EMOVED);
    }
    return;
  }
  if (rc != 0) {
    ms__reply_status(c, h, rc);
    return;
  }
  if (b->chain != NULL && ms__chain_handle(c, b, h, frame, flen)) return;
  if (b->chain == NULL && b->watched && makes_event(h) && ms_publisher_refusing(c->srv->pub)) {
    /* Its event could not be numbered now (publish.h): refused before
     * anything is applied, so the caller may simply try again later. */
    ms__reply_status(c, h, MAYFLY_EDIRDOWN);
    return;
  }
  ms__apply(c, b, h, payload, frame, flen);
}

void ms__apply(conn_t *c, store_block_t *b, const wire_hdr_t *h, const uint8_t *payload,
               const uint8_t *frame, size_t flen) {
  switch ((store_kind_t)kind_of(h->opcode)) {
    case STORE_FILE:
      handle_file(c, b, h, payload);
      break;
    case STORE_QUEUE:
      handle_queue(c, b, h, payload);
      break;
    case STORE_KV:
      handle_kv(c, b, h, payload, frame, flen);
      break;
    default: {
      uint64_t items = b->kind == STORE_QUEUE ? g_queue_get_length(b->items)
                       : b->kind == STORE_KV  ? g_hash_table_size(b->kv)
                                              : b->size;
      ms__reply(c, h, 0, b->sealed ? WIRE_F_SEALED : 0, b->used, items, (uint32_t)b->kind, NULL, 0);
    }
  }
}

