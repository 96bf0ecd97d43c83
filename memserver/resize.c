/*
 * The loop side of repartitioning kv blocks: deciding when a block splits or
 * merges, running the blocking steps (repart.c) on the work queue one after
 * another, and applying each step's outcome to the block.
 */
#include "common/check.h"
#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "memserver/internal.h"

typedef struct {
  uv_work_t req;
  ms_server_t *srv;
  ms_repart_job_t *job;
  int step; /* STORE_RP_PLANNING, _MOVING (copy), _COMMITTING */
} rp_work_t;

static void rp_queue(ms_server_t *s, ms_repart_job_t *job, int step);

/* The block a job works on, if it is still that block and that job. */
static store_block_t *rp_block(ms_server_t *s, ms_repart_job_t *job) {
  store_block_t *b = &s->store->blocks[job->index];
  return (b->generation == job->generation && b->kind == STORE_KV && b->rp_job == job) ? b
                                                                                      : NULL;
}

/* Looks at a kv block's fill and starts a split (above the high watermark,
 * or a put that did not fit) or a merge (under the low watermark). */
void ms__rp_consider(ms_server_t *s, store_block_t *b, int full) {
  store_t *st = s->store;
  if (b->kind != STORE_KV || b->rp_state != STORE_RP_IDLE || s->stopping) return;
  int split = full || b->used * 100 > (uint64_t)b->high_wm * st->block_size;
  int merge = !split && b->used * 100 < (uint64_t)b->low_wm * st->block_size &&
              !(b->range_lo == 0 && b->range_hi == WIRE_KV_SLOTS);
  if (split && b->range_hi - b->range_lo < 2) {
    ms__replay_held(b, 0); /* one slot cannot split: what waited for room gets "full" */
    return;
  }
  if (!split && !merge) return;
  int32_t id = ms_control_server_id(s->ctl);
  if (id == 0 || mf_now_ms() < b->rp_retry_ms) {
    g_hash_table_add(s->rp_retry, GINT_TO_POINTER(b->index));
    return;
  }
  b->rp_refused = 0;
  ms_repart_job_t *job = g_new0(ms_repart_job_t, 1);
  job->directory = s->directory;
  job->pool = s->rp_pool;
  job->server_id = id;
  job->index = b->index;
  job->generation = b->generation;
  job->merge = !split;
  job->split_at = b->range_lo + (b->range_hi - b->range_lo) / 2;
  job->block_size = st->block_size;
  job->used = b->used;
  job->low_wm = b->low_wm;
  job->started_us = g_get_monotonic_time();
  b->rp_job = job;
  b->rp_state = STORE_RP_PLANNING;
  rp_queue(s, job, STORE_RP_PLANNING);
}

static void rp_work(uv_work_t *req) {
  rp_work_t *w = req->data;
  switch (w->step) {
    case STORE_RP_PLANNING:
      ms_repart_plan(w->job);
      break;
    case STORE_RP_MOVING:
      ms_repart_copy(w->job);
      break;
    default:
      ms_repart_commit(w->job);
  }
}

/* The repartition is over (committed or not): the block serves again. */
static void rp_finish(ms_server_t *s, store_block_t *b, ms_repart_job_t *job, int committed) {
  if (b != NULL) {
    if (b->rp_moving != NULL && !committed) store_kv_restore(b, b->rp_moving);
    if (committed && job->merge) {
      /* All of it went to the neighbour; the directory frees this block. */
      store_release(s->store, b->index, b->generation);
    } else if (committed) {
      b->range_hi = job->lo;
      store_kv_uncharge(b, b->rp_charge);
    }
    b->rp_state = STORE_RP_IDLE;
    b->rp_moving = NULL;
    b->rp_job = NULL;
    b->rp_charge = 0;
    ms__replay_held(b, 0);
    if (!committed || !job->merge) ms__rp_consider(s, b, 0);
  }
  ms_repart_job_free(job);
}

static void rp_after(uv_work_t *req, int status) {
  rp_work_t *w = req->data;
  ms_server_t *s = w->srv;
  ms_repart_job_t *job = w->job;
  int step = w->step;
  g_free(w);
  s->rp_jobs--;
  store_block_t *b = s->stopping ? NULL : rp_block(s, job);
  const char *what = job->merge ? "merge" : "split";
  if (b == NULL) {
    /* The block went away (its namespace was removed) or the server stops:
     * nothing to hand back; a repartition the directory still holds is
     * rolled back there after its timeout. */
    ms_repart_job_free(job);
    if (s->stopping) ms__server_free(s);
    return;
  }
  if (job->status != 0) {
    int rc = job->status;
    if (step == STORE_RP_PLANNING) {
      /* Refused: busy partitions (EAGAIN) are retried soon; no room or the
       * quota (EQUOTA, ENOSPC) make full puts fail with that reason for a while. */
      if (rc == MAYFLY_EQUOTA || rc == MAYFLY_ENOSPC || rc == MAYFLY_ENOSERVERS) {
        b->rp_refused = rc;
      }
      MF_DEBUG("block %d: %s refused: %s", b->index, what, job->why);
    } else {
      MF_WARN("block %d: %s rolled back: %s", b->index, what, job->why);
    }
    /* Busy partitions free up soon; a merge refused for good (EINVAL: no
     * neighbour, the namespace's initial partitions; ELOST: the neighbour
     * is lost) waits for long. */
    int64_t later = rc == MAYFLY_EAGAIN || rc == MAYFLY_EMOVED ? 20
                    : (rc == MAYFLY_EINVAL || rc == MAYFLY_ELOST) && job->merge ? 10000
                                                          : 1000;
    b->rp_retry_ms = mf_now_ms() + later;
    rp_finish(s, b, job, 0);
    return;
  }
  if (step == STORE_RP_PLANNING) {
    b->rp_lo = job->lo;
    b->rp_hi = job->hi;
    job->moving = store_kv_take_range(b, job->lo, job->hi, &b->rp_charge);
    b->rp_moving = job->moving;
    MF_CHECK(b->rp_state == STORE_RP_PLANNING);
    b->rp_state = STORE_RP_MOVING;
    rp_queue(s, job, STORE_RP_MOVING);
  } else if (step == STORE_RP_MOVING) {
    MF_CHECK(b->rp_state == STORE_RP_MOVING);
    b->rp_state = STORE_RP_COMMITTING;
    rp_queue(s, job, STORE_RP_COMMITTING);
  } else {
    double ms = (double)(g_get_monotonic_time() - job->started_us) / 1000.0;
    MF_INFO("block %d: %s of slots [%lld, %lld) to %s block %d: %llu entries, %llu bytes in "
            "%.1f ms (%.0f MB/s)",
            b->index, what, (long long)job->lo, (long long)job->hi, job->target, job->t_index,
            (unsigned long long)job->entries, (unsigned long long)job->bytes, ms,
            ms > 0 ? (double)job->bytes / 1e3 / ms : 0.0);
    rp_finish(s, b, job, 1);
  }
}

static void rp_queue(ms_server_t *s, ms_repart_job_t *job, int step) {
  rp_work_t *w = g_new0(rp_work_t, 1);
  w->srv = s;
  w->job = job;
  w->step = step;
  w->req.data = w;
  s->rp_jobs++;
  uv_queue_work(s->loop, &w->req, rp_work, rp_after);
}

/* Looks again at the blocks whose repartition had to wait. */
void ms__rp_scan(uv_timer_t *t) {
  ms_server_t *s = t->data;
  if (g_hash_table_size(s->rp_retry) == 0) return;
  GHashTable *due = s->rp_retry;
  s->rp_retry = g_hash_table_new(g_direct_hash, g_direct_equal);
  GHashTableIter it;
  gpointer k;
  g_hash_table_iter_init(&it, due);
  int64_t now = mf_now_ms();
  while (g_hash_table_iter_next(&it, &k, NULL)) {
    store_block_t *b = &s->store->blocks[GPOINTER_TO_INT(k)];
    if (b->kind == STORE_KV && now < b->rp_retry_ms) {
      g_hash_table_add(s->rp_retry, k); /* not yet */
      continue;
    }
    b->rp_refused = 0;
    ms__rp_consider(s, b, b->held != NULL);
  }
  g_hash_table_destroy(due);
}

