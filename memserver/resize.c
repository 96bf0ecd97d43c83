/*
 * The loop side of repartitioning kv blocks: deciding when a block splits or
 * merges, running the blocking steps (repart.c) on the work queue one after
 * another, and applying each step's outcome to the block.
 */
#include <string.h>

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

/* A merge that rolled back (most often: the neighbour is too full to take the
 * block) is not tried again on the same pair for a while: 100 ms after the
 * first rollback, doubling with each try up to 10 s, or sooner once the
 * block's fill has dropped under what would let the pair fit given the
 * neighbour's fill at the last try. Retrying at once, with the same fill,
 * only rolls back again (and locks both partitions each time). Every try
 * first asks the neighbour (the last try's, or the one the layout shows)
 * for its fill and begins nothing while the two would not fit (repart.h,
 * pre_target), so a merge rolls back only when something changed between
 * that look and the copy. */
#define MS_MERGE_BACKOFF_MIN_MS 100
#define MS_MERGE_BACKOFF_MAX_MS 10000

/* Ends a block's merge backoff (the block merged or split, or its neighbour
 * changed). The pair's first rollback was logged on its own; the later ones
 * are summed up here. */
static void merge_backoff_end(store_block_t *b, const char *why) {
  if (b->mb_delay_ms == 0) return;
  if (b->mb_rollbacks > 1) {
    MF_INFO("block %d: merge into %s block %d rolled back %u times in all; %s", b->index,
            b->mb_target, b->mb_target_index, b->mb_rollbacks, why);
  }
  b->mb_delay_ms = b->mb_until_ms = 0;
  b->mb_fit_below = 0;
  b->mb_rollbacks = 0;
  g_free(b->mb_target);
  b->mb_target = NULL;
}

/* Whether a merge of b has to wait for its backoff. */
static int merge_waits(const store_block_t *b, int64_t now) {
  if (b->mb_delay_ms == 0 || now >= b->mb_until_ms) return 0;
  return !(b->mb_fit_below > 0 && b->used < b->mb_fit_below);
}

/* A merge of b rolled back (or, not_begun, was found not to fit before it
 * began): starts or lengthens the pair's backoff. */
static void merge_rolled_back(ms_server_t *s, store_block_t *b, const ms_repart_job_t *job) {
  const char *target = job->not_begun ? job->pre_target : job->target;
  int32_t t_server = job->not_begun ? job->pre_server_id : job->t_server_id;
  int32_t t_index = job->not_begun ? job->pre_index : job->t_index;
  int64_t t_gen = job->not_begun ? job->pre_generation : job->t_generation;
  int same = b->mb_delay_ms > 0 && b->mb_target != NULL && strcmp(b->mb_target, target) == 0 &&
             b->mb_target_index == t_index && b->mb_target_gen == t_gen;
  if (!same) {
    merge_backoff_end(b, "the neighbour changed");
    b->mb_target = g_strdup(target);
    b->mb_target_server = t_server;
    b->mb_target_index = t_index;
    b->mb_target_gen = t_gen;
    b->mb_delay_ms = MS_MERGE_BACKOFF_MIN_MS;
  } else {
    b->mb_delay_ms = MIN(b->mb_delay_ms * 2, MS_MERGE_BACKOFF_MAX_MS);
  }
  if (!job->not_begun) b->mb_rollbacks++;
  b->mb_until_ms = mf_now_ms() + b->mb_delay_ms;
  uint64_t room = (uint64_t)b->low_wm * s->store->block_size / 100;
  b->mb_fit_below = job->t_used_known && job->t_used < room ? room - job->t_used : 0;
  if (!same) {
    /* Once per pair; a merge found not to fit before it began is no fault. */
    MF_LOG(job->not_begun ? MF_LOG_INFO : MF_LOG_WARN,
           "block %d: merge into %s block %d %s: %s; not tried again for %d ms (doubling up to "
           "%d s) unless its fill drops under %llu bytes",
           b->index, target, t_index, job->not_begun ? "waits" : "rolled back", job->why,
           MS_MERGE_BACKOFF_MIN_MS, MS_MERGE_BACKOFF_MAX_MS / 1000,
           (unsigned long long)b->mb_fit_below);
  } else {
    MF_DEBUG("block %d: merge into %s block %d %s (%u rollbacks): %s; next try in %lld ms",
             b->index, target, t_index, job->not_begun ? "waits" : "rolled back again",
             b->mb_rollbacks, job->why, (long long)b->mb_delay_ms);
  }
}

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
  /* Only a chain's head asks for repartitions; its members follow it
   * (KV_MIGRATE and KV_DROP_RANGE come down the chain). */
  if (!ms__chain_may_repartition(b)) return;
  int split = full || b->used * 100 > (uint64_t)b->high_wm * st->block_size;
  int merge = !split && b->used * 100 < (uint64_t)b->low_wm * st->block_size &&
              !(b->range_lo == 0 && b->range_hi == WIRE_KV_SLOTS);
  if (split && b->range_hi - b->range_lo < 2) {
    ms__replay_held(b, 0); /* one slot cannot split: what waited for room gets "full" */
    return;
  }
  if (!split && !merge) return;
  int32_t id = ms_control_server_id(s->ctl);
  int64_t now = mf_now_ms();
  if (id == 0 || now < b->rp_retry_ms ||
      (merge && (now < b->rp_merge_retry_ms || merge_waits(b, now)))) {
    g_hash_table_add(s->rp_retry, GINT_TO_POINTER(b->index));
    return;
  }
  b->rp_refused = 0;
  ms_repart_job_t *job = g_new0(ms_repart_job_t, 1);
  if (merge && b->mb_target != NULL) {
    g_strlcpy(job->pre_target, b->mb_target, sizeof job->pre_target);
    job->pre_server_id = b->mb_target_server;
    job->pre_index = b->mb_target_index;
    job->pre_generation = b->mb_target_gen;
  }
  job->directory = s->directory;
  job->key = s->has_key ? s->key : NULL;
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
    if (committed) merge_backoff_end(b, job->merge ? "then it merged" : "then it split");
    if (committed && job->merge) {
      /* All of it went to the neighbour; the directory frees this block
       * (and the rest of its chain). */
      ms__chain_drop(s, b, MAYFLY_EMOVED);
      store_release(s->store, b->index, b->generation);
    } else if (committed) {
      int64_t hi = b->range_hi;
      b->range_hi = job->lo;
      store_kv_uncharge(b, b->rp_charge);
      /* The rest of a replicated block's chain drops the slots too. */
      ms__chain_drop_range(s, b, job->lo, hi);
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
      if (!job->merge && (rc == MAYFLY_EQUOTA || rc == MAYFLY_ENOSPC || rc == MAYFLY_ENOSERVERS)) {
        b->rp_refused = rc;
      }
      if (job->not_begun) {
        merge_rolled_back(s, b, job);
      } else {
        MF_DEBUG("block %d: %s refused: %s", b->index, what, job->why);
      }
    } else if (job->merge) {
      merge_rolled_back(s, b, job);
    } else {
      MF_WARN("block %d: %s rolled back: %s", b->index, what, job->why);
    }
    /* Busy partitions free up soon; a merge refused for good (EINVAL: no
     * neighbour, the namespace's initial partitions; ELOST: the neighbour
     * is lost) waits for long. A merge's wait holds back merges only: the
     * block may fill up meanwhile, and a put that finds it full is held
     * until a split makes room, which must not wait for this. */
    int64_t later = rc == MAYFLY_EAGAIN || rc == MAYFLY_EMOVED ? 20
                    : (rc == MAYFLY_EINVAL || rc == MAYFLY_ELOST) && job->merge ? 10000
                                                          : 1000;
    if (job->merge) {
      b->rp_merge_retry_ms = mf_now_ms() + later;
    } else {
      b->rp_retry_ms = mf_now_ms() + later;
    }
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
    /* A merge still waiting (rp_merge_retry_ms, backoff) is put back by
     * ms__rp_consider; a split may begin now. */
    b->rp_refused = 0;
    ms__rp_consider(s, b, b->held != NULL);
  }
  g_hash_table_destroy(due);
}

