/*
 * Events from the control thread (control.h), applied on the loop: blocks
 * confirmed or released by the directory, the set of watched blocks, the
 * reconciliation after (re-)registering, and the directory's refusal of
 * this server's cluster key (which stops it).
 */
#include "common/error.h"
#include "common/log.h"
#include "memserver/internal.h"

/* The directory answered ms_control_verify: adopt the block (a newer
 * generation moves the pops waiting on the old one, and answers the
 * requests held for the old one's repartition, which its release, still to
 * come in a heartbeat reply, no longer reaches) and serve what was parked
 * for it. A block the directory says is lost (its data died with an earlier
 * incarnation of this server) is never adopted: what was parked for it is
 * answered MAYFLY_ELOST, and so is every later request, each asking again,
 * so an empty block is never served in its place. */
static void on_verified(ms_server_t *s, const ms_event_t *e) {
  store_t *st = s->store;
  if (e->status == 0 && e->allocated && e->lost) {
    MF_DEBUG("block %d (generation %lld) is lost: answering MAYFLY_ELOST", e->index,
             (long long)e->generation);
    ms__replay_parked_lost(s, e->index, e->generation);
    return;
  }
  if (e->status == 0 && e->allocated) {
    store_block_t *b = &st->blocks[e->index];
    if (e->generation > b->generation) {
      ms__wake_all(b, MAYFLY_EMOVED);
      ms__replay_held(b, MAYFLY_EMOVED);
      ms__chain_drop(s, b, MAYFLY_EMOVED);
    }
    store_adopt(st, e->index, e->generation, (store_kind_t)e->kind, e->lo, e->hi);
    if (b->generation == e->generation) {
      b->high_wm = e->high_wm > 0 ? e->high_wm : STORE_HIGH_WM_DEFAULT;
      b->low_wm = e->low_wm > 0 ? e->low_wm : STORE_LOW_WM_DEFAULT;
      b->watched = e->watched;
      /* Replicated: the chain and this block's place in it (chain.c). */
      ms__chain_update(s, b, e);
      /* A copy being filled (chain_pos -1, with or without the chain it
       * will join) takes REPLICA_COPY frames (replcopy.c). */
      ms__replcopy_expect(s, b, e->joining || (e->chain_n > 0 && e->chain_pos == -1),
                          e->copy_op);
    }
  }
  if (e->status != 0) {
    MF_WARN("block %d: cannot confirm its owner with the directory: %s", e->index,
            mayfly_strerror(e->status));
  }
  ms__replay_parked(s, e->index, e->status == 0 ? 0 : MAYFLY_EIO);
}

/* The directory freed (index, generation): everything waiting on it moves.
 * A release that comes after the block was adopted by a newer owner
 * (on_verified answered the old owner's waiting requests then) leaves the
 * new owner's alone. */
static void on_release(ms_server_t *s, const ms_event_t *e) {
  store_t *st = s->store;
  if (e->index < 0 || e->index >= st->nblocks) return;
  store_block_t *b = &st->blocks[e->index];
  if (e->generation < b->generation) return;
  ms__wake_all(b, MAYFLY_EMOVED);
  ms__replay_held(b, MAYFLY_EMOVED);
  ms__chain_drop(s, b, MAYFLY_EMOVED);
  if (store_release(st, e->index, e->generation)) {
    MF_DEBUG("block %d (generation %lld) released", e->index, (long long)e->generation);
  }
}

/* Exactly the listed blocks publish their data events. */
static void on_watched(ms_server_t *s, const ms_event_t *e) {
  store_t *st = s->store;
  for (int32_t i = 0; i < st->nblocks; i++) st->blocks[i].watched = 0;
  int n = 0;
  for (guint k = 0; k + 1 < e->blocks->len; k += 2) {
    int64_t idx = g_array_index(e->blocks, int64_t, k);
    int64_t gen = g_array_index(e->blocks, int64_t, k + 1);
    if (idx >= 0 && idx < st->nblocks && st->blocks[idx].generation == gen &&
        st->blocks[idx].kind != STORE_FREE) {
      st->blocks[idx].watched = 1;
      n++;
    }
  }
  MF_DEBUG("%d blocks publish their data events", n);
  ms_control_applied(s->ctl, e->ticket);
}

/* Registered: keep exactly the blocks the directory says are allocated here. */
static void on_reconcile(ms_server_t *s, const ms_event_t *e) {
  store_t *st = s->store;
  GHashTable *keep = g_hash_table_new(g_direct_hash, g_direct_equal);
  for (guint k = 0; k + 1 < e->blocks->len; k += 2) {
    int64_t idx = g_array_index(e->blocks, int64_t, k);
    int64_t gen = g_array_index(e->blocks, int64_t, k + 1);
    if (idx >= 0 && idx < st->nblocks && st->blocks[idx].generation == gen) {
      g_hash_table_add(keep, GINT_TO_POINTER((int)idx));
    }
  }
  int dropped = 0;
  for (int32_t i = 0; i < st->nblocks; i++) {
    store_block_t *b = &st->blocks[i];
    if (b->kind != STORE_FREE && !g_hash_table_contains(keep, GINT_TO_POINTER(i))) {
      ms__wake_all(b, MAYFLY_EMOVED);
      ms__replay_held(b, MAYFLY_EMOVED);
      ms__chain_drop(s, b, MAYFLY_EMOVED);
      dropped += store_release(st, i, b->generation);
    }
  }
  if (dropped > 0) MF_INFO("dropped %d blocks the directory no longer knows", dropped);
  g_hash_table_destroy(keep);
}

/* Drains the control thread's queue (uv_async_send coalesces). */
void ms__on_control_event(uv_async_t *a) {
  ms_control_t *ctl = a->data;
  ms_server_t *s = ms_control_data(ctl);
  GQueue events = G_QUEUE_INIT;
  ms_control_take(ctl, &events);
  ms_event_t *e;
  while ((e = g_queue_pop_head(&events)) != NULL) {
    switch (e->type) {
      case MS_EV_VERIFIED:
        on_verified(s, e);
        break;
      case MS_EV_RELEASE:
        on_release(s, e);
        break;
      case MS_EV_WATCHED:
        on_watched(s, e);
        break;
      case MS_EV_RECONCILE:
        on_reconcile(s, e);
        break;
      case MS_EV_REPLICA_END:
        ms__replcopy_ended(s, e);
        break;
      case MS_EV_LIVE:
        ms__chain_live(s, e->timeout_ms, e->sent_us);
        break;
      case MS_EV_FATAL:
        /* Logged by the control thread; what else was queued no longer
         * matters. */
        ms_event_free(e);
        while ((e = g_queue_pop_head(&events)) != NULL) ms_event_free(e);
        if (s->on_fatal != NULL) {
          s->on_fatal(s->fatal_ud);
        } else {
          ms_server_stop(s);
        }
        return;
    }
    ms_event_free(e);
  }
  ms_control_set_stats(ctl, s->store->blocks_in_use, s->store->max_generation);
}
