/*
 * Re-replication: the tail's copy driver and the joining block's receiver
 * (see replcopy.h).
 */
#include "memserver/replcopy.h"

#include <string.h>

#include "common/error.h"
#include "common/log.h"
#include "memserver/blocksnap.h"
#include "memserver/chain.h"
#include "memserver/internal.h"
#include "memserver/link.h"

/* A copy the tail streams. Lives while it runs and until every chunk sent
 * has had its callback (the link calls each exactly once) and its timer
 * is closed; after the end it is out of the table of running copies. */
typedef struct copy_job {
  ms_server_t *s;      /* NULL once the server stopped: touch nothing of it */
  int64_t op;
  int32_t index;       /* the tail's block */
  int64_t generation;
  char *address;       /* the copy's server */
  int32_t dst_index;
  int64_t dst_gen;
  ms_link_t *link;     /* the server's peer link (not owned) */
  bs_stream_t st;
  guint nchunks;
  uint64_t bytes;      /* the stream's */
  guint next;          /* the next chunk to send */
  guint acked;
  unsigned inflight;   /* chunks sent and not yet answered */
  uint64_t offset;     /* stream offset of chunk `next` */
  int ended;           /* succeeded or failed: no more sends */
  int released;        /* ms_chain_copy_release done */
  uint64_t started_ms;
  uv_timer_t retry;    /* after MAYFLY_EAGAIN from the link */
  int timer_closed;
} copy_job_t;

/* A joining block's restore. */
typedef struct rx {
  int64_t generation; /* the block's, when check_block said it is a copy */
  int64_t op;
  bs_restore_t *restore; /* NULL before the first chunk and after the end */
  int done;              /* the stream was restored */
} rx_t;

struct ms_replcopy {
  GHashTable *jobs;  /* op id (int64 *) -> copy_job_t *, running copies */
  GHashTable *ended; /* op ids (int64 *) of copies that ended (not started again) */
  GHashTable *rx;    /* block index -> rx_t * */
  uint64_t copies, bytes;
};

/* The ended set is forgotten past this many ops (a check_block still
 * naming a copy that ended long ago would start it once more, and the
 * directory, which ended it, refuses its replica_end). */
#define ENDED_MAX 4096

static void rx_free(gpointer p) {
  rx_t *r = p;
  bs_restore_free(r->restore);
  g_free(r);
}

static ms_replcopy_t *rc_of(ms_server_t *s) {
  return s->replcopy;
}

/* ---------- the tail's side ---------- */

static int snap_save(void *ud, const store_block_t *b, GByteArray *out) {
  (void)ud;
  ms_chain_snap_save(b, out);
  return 0;
}

static void job_timer_closed(uv_handle_t *h) {
  copy_job_t *j = h->data;
  j->timer_closed = 1;
  if (j->inflight == 0) {
    bs_stream_clear(&j->st);
    g_free(j->address);
    g_free(j);
  }
}

/* The tail's block as the job began with it, or NULL when it changed. */
static store_block_t *job_block(copy_job_t *j) {
  if (j->s == NULL) return NULL;
  store_block_t *b = &j->s->store->blocks[j->index];
  return b->generation == j->generation && b->kind != STORE_FREE ? b : NULL;
}

/* Ends the job (once): takes it out of the running copies, and tells the
 * directory unless the server stops. Frees it once its chunks' callbacks
 * have all run. */
static void job_end(copy_job_t *j, int commit, const char *why) {
  if (j->ended) return;
  j->ended = 1;
  bs_stream_clear(&j->st); /* the chunks not sent are never needed */
  ms_server_t *s = j->s;
  if (s != NULL) {
    ms_replcopy_t *rc = rc_of(s);
    g_hash_table_remove(rc->jobs, &j->op);
    if (g_hash_table_size(rc->ended) >= ENDED_MAX) g_hash_table_remove_all(rc->ended);
    g_hash_table_add(rc->ended, g_memdup2(&j->op, sizeof j->op));
    store_block_t *b = job_block(j);
    uint64_t ms = uv_hrtime() / 1000000 - j->started_ms;
    if (commit) {
      rc->copies++;
      rc->bytes += j->bytes;
      double mbs = ms > 0 ? (double)j->bytes / 1e6 / ((double)ms / 1e3) : 0;
      MF_INFO("block %d: copy (op %lld) to %s block %d: %llu bytes in %llu ms (%.0f MB/s)",
              j->index, (long long)j->op, j->address, j->dst_index,
              (unsigned long long)j->bytes, (unsigned long long)ms, mbs);
    } else {
      MF_WARN("block %d: copy (op %lld) to %s block %d failed after %llu ms: %s", j->index,
              (long long)j->op, j->address, j->dst_index, (unsigned long long)ms, why);
      if (b != NULL) ms_chain_detach_copy(s, b);
    }
    ms_control_replica_end(s->ctl, j->op, commit, (int64_t)j->bytes);
  }
  uv_timer_stop(&j->retry);
  uv_close((uv_handle_t *)&j->retry, job_timer_closed);
}

static void job_pump(copy_job_t *j);

static void on_chunk_reply(void *ud, int status, const wire_hdr_t *reply,
                           const uint8_t *payload) {
  copy_job_t *j = ud;
  (void)payload;
  j->inflight--;
  if (!j->ended) {
    if (status != 0) {
      job_end(j, 0, mayfly_strerror(status));
    } else if (reply->status != 0) {
      job_end(j, 0, mayfly_strerror(reply->status));
    } else if (job_block(j) == NULL) {
      job_end(j, 0, "the block changed owner");
    } else if (++j->acked == j->nchunks) {
      job_end(j, 1, NULL);
    } else {
      job_pump(j);
    }
  }
  if (j->ended && j->inflight == 0 && j->timer_closed) job_timer_closed((uv_handle_t *)&j->retry);
}

static void on_retry(uv_timer_t *t) {
  job_pump(t->data);
}

/* Sends chunks while fewer than the window are in the link; after the
 * last one, lets the writes kept for the copy follow. */
static void job_pump(copy_job_t *j) {
  guint n = j->nchunks;
  while (!j->ended && j->next < n && j->inflight < MS_REPLCOPY_WINDOW) {
    size_t len;
    const uint8_t *p = bs_stream_chunk(&j->st, j->next, &len);
    wire_hdr_t h = {.opcode = WIRE_OP_REPLICA_COPY,
                    .block_index = (uint32_t)j->dst_index,
                    .generation = (uint64_t)j->dst_gen,
                    .arg0 = (uint64_t)j->op,
                    .arg1 = j->offset,
                    .arg2 = j->next + 1 == n ? 1 : 0};
    int rc = ms_link_send(j->link, &h, p, len, on_chunk_reply, j);
    if (rc == MAYFLY_EAGAIN) {
      uv_timer_start(&j->retry, on_retry, MS_REPLCOPY_RETRY_MS, 0);
      return;
    }
    if (rc != 0) {
      job_end(j, 0, mayfly_strerror(rc));
      return;
    }
    j->inflight++;
    j->offset += len;
    bs_stream_release(&j->st, j->next); /* the link has its own copy */
    j->next++;
  }
  if (!j->ended && j->next == n && !j->released) {
    j->released = 1;
    store_block_t *b = job_block(j);
    if (b == NULL || ms_chain_copy_release(j->s, b) != 0) {
      job_end(j, 0, "the block is no longer the chain's tail");
    }
  }
}

/* The chain's copy hook: check_block told tail b to fill `to` under op. */
static void on_copy(ms_server_t *s, store_block_t *b, const ms_chain_member_t *to,
                    int64_t op) {
  ms_replcopy_t *rc = rc_of(s);
  if (rc == NULL) return; /* stopping */
  if (g_hash_table_contains(rc->jobs, &op) || g_hash_table_contains(rc->ended, &op)) return;
  copy_job_t *j = g_new0(copy_job_t, 1);
  j->s = s;
  j->op = op;
  j->index = b->index;
  j->generation = b->generation;
  j->address = g_strdup(to->address);
  j->dst_index = to->block_index;
  j->dst_gen = to->generation;
  j->started_ms = uv_hrtime() / 1000000;
  uv_timer_init(s->loop, &j->retry);
  j->retry.data = j;
  g_hash_table_insert(rc->jobs, g_memdup2(&op, sizeof op), j);
  /* Serialised and attached in the same turn of the loop: no write comes
   * between the snapshot and the cseq the copy is fed from. */
  uint64_t applied = ms_chain_applied(b);
  bs_chain_hook_t hook = {snap_save, NULL, NULL};
  bs_stream_init(&j->st, 0);
  int r = bs_save(s->store, b, applied, &hook, BS_CHUNK_MAX, &j->st);
  if (r == 0) {
    r = ms_chain_attach_copy(s, b, to->address, to->block_index, to->generation, applied);
  }
  if (r != 0) {
    job_end(j, 0, mayfly_strerror(r));
    return;
  }
  j->nchunks = j->st.chunks->len;
  j->bytes = j->st.bytes;
  j->link = ms_chain_peer_link(s, to->address);
  MF_INFO("block %d: copying %llu bytes at cseq %llu to %s block %d (op %lld)", b->index,
          (unsigned long long)j->st.bytes, (unsigned long long)applied, j->address,
          j->dst_index, (long long)op);
  job_pump(j);
}

/* ---------- the joining block's side ---------- */

static int snap_load(void *ud, store_block_t *b, const uint8_t *data, size_t len) {
  return ms_chain_snap_restore(ud, b, data, len);
}

void ms__replcopy_expect(ms_server_t *s, store_block_t *b, int joining, int64_t copy_op) {
  ms_replcopy_t *rc = rc_of(s);
  if (rc == NULL) return; /* stopping */
  gpointer key = GINT_TO_POINTER(b->index);
  rx_t *r = g_hash_table_lookup(rc->rx, key);
  if (!joining) {
    /* A member now (the copy committed) or nothing: its restore, if one
     * runs, is over. A restore that finished leaves its data in place. */
    if (r != NULL) g_hash_table_remove(rc->rx, key);
    return;
  }
  /* The same copy again. A check_block that names no op (a directory from
   * before copy_op went to the copy's own server too) keeps the op the
   * stream brought. */
  if (r != NULL && r->generation == b->generation && (copy_op == 0 || r->op == copy_op)) return;
  if (r != NULL) g_hash_table_remove(rc->rx, key);
  r = g_new0(rx_t, 1);
  r->generation = b->generation;
  r->op = copy_op;
  g_hash_table_insert(rc->rx, key, r);
}

/* Answers a REPLICA_COPY with status (arg0: the stream bytes restored). */
static void copy_reply(conn_t *c, const wire_hdr_t *h, int status, uint64_t offset) {
  if (c->net.closing) return;
  ms_server_t *s = c->srv;
  wire_hdr_t r = {.opcode = h->opcode,
                  .flags = WIRE_F_REPLY,
                  .request_id = h->request_id,
                  .block_index = h->block_index,
                  .generation = h->generation,
                  .arg0 = offset,
                  .arg1 = h->arg1,
                  .status = status};
  uint8_t out[WIRE_HEADER_SIZE + MF_MAC_SIZE];
  size_t n = ms_link_frame_head(s->has_key ? s->key : NULL, &r, NULL, out);
  mf_net_send(&c->net, out, n);
}

void ms__replcopy_in(conn_t *c, const wire_hdr_t *h, const uint8_t *frame, size_t flen,
                     int can_park) {
  ms_server_t *s = c->srv;
  ms_replcopy_t *rc = rc_of(s);
  if (ms_link_check_mac(s->has_key ? s->key : NULL, h, frame) != 0) {
    s->caps.refused++;
    copy_reply(c, h, MAYFLY_EPERM, 0);
    return;
  }
  store_block_t *b = NULL;
  int st = store_lookup(s->store, h->block_index, h->generation, STORE_FREE, &b);
  if (st == MAYFLY_EAGAIN && can_park) {
    ms__park(c, h->block_index, frame, flen);
    return;
  }
  rx_t *r = st == 0 && rc != NULL ? g_hash_table_lookup(rc->rx, GINT_TO_POINTER(b->index))
                                  : NULL;
  /* A copy whose op check_block did not name takes the op of the stream
   * that starts it: the block's generation is this copy's alone. */
  if (r != NULL && r->op == 0 && h->arg1 == 0 && r->generation == b->generation) {
    r->op = (int64_t)h->arg0;
  }
  if (r == NULL || r->generation != b->generation || r->op != (int64_t)h->arg0 || r->done) {
    copy_reply(c, h, st == 0 || st == MAYFLY_EAGAIN ? MAYFLY_EMOVED : st, 0);
    return;
  }
  if (h->arg1 == 0 && r->restore != NULL) {
    /* The tail began the stream again (its link dropped): start over. */
    bs_restore_free(r->restore);
    r->restore = NULL;
  }
  if (r->restore == NULL) {
    if (h->arg1 != 0) {
      copy_reply(c, h, MAYFLY_EPROTO, 0);
      return;
    }
    bs_chain_hook_t hook = {NULL, snap_load, s};
    r->restore = bs_restore_new(s->store, b, &hook, 0);
  }
  if (h->arg1 != bs_restore_offset(r->restore)) {
    uint64_t at = bs_restore_offset(r->restore);
    bs_restore_free(r->restore); /* the block is emptied */
    r->restore = NULL;
    MF_WARN("block %d: copy chunk at offset %llu, expected %llu: refused", b->index,
            (unsigned long long)h->arg1, (unsigned long long)at);
    copy_reply(c, h, MAYFLY_EPROTO, 0);
    return;
  }
  const uint8_t *payload = frame + WIRE_HEADER_SIZE + h->cap_len;
  int e = bs_restore_feed(r->restore, payload, h->payload_len);
  uint64_t cseq = 0;
  if (e == 0 && h->arg2 == 1) e = bs_restore_finish(r->restore, &cseq);
  uint64_t done = bs_restore_offset(r->restore);
  if (e != 0) {
    MF_WARN("block %d: copy (op %lld) refused at offset %llu: %s", b->index,
            (long long)r->op, (unsigned long long)done, mayfly_strerror(e));
    bs_restore_free(r->restore);
    r->restore = NULL;
    copy_reply(c, h, e, done);
    return;
  }
  if (h->arg2 == 1) {
    bs_restore_free(r->restore);
    r->restore = NULL;
    r->done = 1;
    MF_INFO("block %d: filled by copy op %lld: %llu bytes, at cseq %llu", b->index,
            (long long)r->op, (unsigned long long)done, (unsigned long long)cseq);
  }
  copy_reply(c, h, 0, done);
}

/* ---------- the rest ---------- */

void ms__replcopy_ended(ms_server_t *s, const ms_event_t *e) {
  (void)s;
  if (e->status != 0) return; /* logged by the control thread */
  MF_DEBUG("replica_end(op %lld, %s) taken by the directory", (long long)e->op_id,
           e->commit ? "commit" : "abort");
}

void ms__replcopy_stats(const ms_server_t *s, uint64_t *copies, uint64_t *bytes) {
  const ms_replcopy_t *rc = s->replcopy;
  *copies = rc != NULL ? rc->copies : 0;
  *bytes = rc != NULL ? rc->bytes : 0;
}

void ms__replcopy_start(ms_server_t *s) {
  ms_replcopy_t *rc = g_new0(ms_replcopy_t, 1);
  rc->jobs = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
  rc->ended = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
  rc->rx = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, rx_free);
  s->replcopy = rc;
  ms_chain_set_copy_hook(s, on_copy);
}

void ms__replcopy_stop(ms_server_t *s) {
  ms_replcopy_t *rc = s->replcopy;
  if (rc == NULL) return;
  /* The jobs still running end without telling the directory; the link's
   * callbacks for their chunks find them ended (and s forgotten). */
  GList *jobs = g_hash_table_get_values(rc->jobs);
  for (GList *l = jobs; l != NULL; l = l->next) {
    copy_job_t *j = l->data;
    j->s = NULL;
    j->ended = 1;
    bs_stream_clear(&j->st);
    uv_timer_stop(&j->retry);
    uv_close((uv_handle_t *)&j->retry, job_timer_closed);
  }
  g_list_free(jobs);
  g_hash_table_destroy(rc->jobs);
  g_hash_table_destroy(rc->ended);
  g_hash_table_destroy(rc->rx);
  g_free(rc);
  s->replcopy = NULL;
}
