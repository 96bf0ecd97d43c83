/*
 * Repartitioning a kv block: the blocking steps (see repart.h).
 */
#include "memserver/repart.h"

#include <stdio.h>
#include <string.h>

#include "common/ctl.h"
#include "common/error.h"
#include "common/wire.h"
#include "memserver/store.h"

static int set(ms_repart_job_t *job, int rc, const char *what) {
  job->status = rc;
  if (rc != 0) {
    snprintf(job->why, sizeof job->why, "%s: %s", what, mf_last_error());
  }
  return rc;
}

/* Opens the job's control connection (--directory, a list of the
 * directory service's replicas) on first use. Calls on it follow the
 * leader (MF_CTL_CALL). */
static int ctl(ms_repart_job_t *job) {
  if (job->ctl == NULL) {
    int rc = mf_ctl_open(job->directory, MS_REPART_TIMEOUT_MS, 2000, &job->ctl);
    if (rc != 0) return rc;
    /* repartition_begin and _end are server-only: the cluster handshake first. */
    if (job->key != NULL) mf_ctl_set_auth(job->ctl, NULL, job->key);
  }
  return 0;
}

/* Ends the repartition at the directory. Returns the call's status. */
static int end(ms_repart_job_t *job, int commit) {
  int rc = ctl(job);
  if (rc != 0) return rc;
  MayflyLayout *layout = g_object_new(MAYFLY_TYPE_LAYOUT, NULL);
  rc = MF_CTL_CALL(job->ctl, repartition_end, &layout, job->server_id, job->op_id, commit,
                   (gint64)job->bytes);
  g_object_unref(layout);
  return rc;
}

static int64_t deadline(void) {
  return g_get_monotonic_time() + (int64_t)MS_REPART_TIMEOUT_MS * 1000;
}

/* One call to the target: MIGRATE (entries) or MIGRATE_ABORT. */
static void target_call(ms_repart_job_t *job, mf_call_t *call, uint8_t op, const void *data,
                        size_t len) {
  memset(call, 0, sizeof *call);
  call->req.opcode = op;
  call->req.block_index = (uint32_t)job->t_index;
  call->req.generation = (uint64_t)job->t_generation;
  call->req.arg0 = (uint64_t)job->lo;
  call->req.arg1 = (uint64_t)job->hi;
  call->p1 = data;
  call->l1 = len;
  if (job->key != NULL) {
    call->cap = job->migrate_cap;
    call->cap_len = MF_CAP_SIZE;
    call->frame_key = job->key;
  }
  mf_call_start(job->pool, job->target, call, deadline());
}

void ms_repart_abort(ms_repart_job_t *job) {
  if (job->merge) {
    /* The neighbour may have taken some entries and the slots: undo that. */
    mf_call_t call;
    target_call(job, &call, WIRE_OP_KV_MIGRATE_ABORT, NULL, 0);
    mf_call_wait(&call, deadline());
    g_free(call.payload);
  }
  end(job, 0);
}

/* How long the read capability of a BLOCK_STAT to another server lasts. */
#define STAT_CAP_TTL_MS 60000

/* A block's fill (BLOCK_STAT). */
static int block_used(ms_repart_job_t *job, const char *address, int32_t server_id,
                      int32_t index, int64_t generation, uint64_t *used) {
  mf_call_t call;
  memset(&call, 0, sizeof call);
  call.req.opcode = WIRE_OP_BLOCK_STAT;
  call.req.block_index = (uint32_t)index;
  call.req.generation = (uint64_t)generation;
  uint8_t cap[MF_CAP_SIZE];
  if (job->key != NULL) {
    mf_cap_t c = {.rights = MF_RIGHT_READ,
                  .server_id = (uint32_t)server_id,
                  .block_index = (uint32_t)index,
                  .generation = (uint64_t)generation,
                  .expiry_ms = g_get_real_time() / 1000 + STAT_CAP_TTL_MS};
    mf_cap_sign(job->key, &c, cap);
    call.cap = cap;
    call.cap_len = MF_CAP_SIZE;
  }
  int64_t until = deadline();
  mf_call_start(job->pool, address, &call, until);
  int rc = mf_call_wait(&call, until);
  *used = call.rep.arg0;
  g_free(call.payload);
  return rc;
}

/* The neighbour's fill, for a merge. */
static int target_used(ms_repart_job_t *job, uint64_t *used) {
  return block_used(job, job->target, job->t_server_id, job->t_index, job->t_generation, used);
}

/* Whether the two blocks of a merge together reach the low watermark. */
static int too_full(const ms_repart_job_t *job, uint64_t neighbour) {
  return (neighbour + job->used) * 100 >= (uint64_t)job->low_wm * job->block_size;
}

/* Picks the neighbour of slots [lo, hi) in a layout the way the directory
 * does for a merge (dir_repart_begin: the left one, else the right one).
 * Returns 1 and fills the job's pre_* when there is one. */
static int pick_neighbour(ms_repart_job_t *job, const MayflyLayout *layout, int64_t lo,
                          int64_t hi) {
  const MayflyPartition *left = NULL, *right = NULL;
  for (guint k = 0; layout != NULL && layout->partitions != NULL && k < layout->partitions->len;
       k++) {
    const MayflyPartition *p = g_ptr_array_index(layout->partitions, k);
    if (p->range_hi == lo) left = p;
    if (p->range_lo == hi) right = p;
  }
  const MayflyPartition *to = left != NULL ? left : right;
  if (to == NULL || to->server_address == NULL) return 0;
  g_strlcpy(job->pre_target, to->server_address, sizeof job->pre_target);
  job->pre_server_id = to->server_id;
  job->pre_index = to->block_index;
  job->pre_generation = to->generation;
  return 1;
}

/* A first merge try knows no neighbour yet: it looks the block's namespace
 * up (check_block gives its path, stat its layout) to find the one the
 * directory would name, so that a pair that does not fit is found out before
 * anything is begun (and rolled back). Any failure leaves pre_target empty:
 * the directory then names the neighbour as usual. */
static void find_neighbour(ms_repart_job_t *job) {
  if (ctl(job) != 0) return;
  MayflyBlockInfo *bi = g_object_new(MAYFLY_TYPE_BLOCK_INFO, NULL);
  int rc = MF_CTL_CALL(job->ctl, check_block, &bi, job->server_id, job->index);
  char *path = NULL;
  if (rc == 0 && bi->allocated && bi->generation == job->generation && bi->path != NULL) {
    path = g_strdup(bi->path);
  }
  int64_t lo = bi->range_lo, hi = bi->range_hi;
  g_object_unref(bi);
  if (path == NULL) return;
  MayflyNodeInfo *ni = g_object_new(MAYFLY_TYPE_NODE_INFO, NULL);
  if (MF_CTL_CALL(job->ctl, stat, &ni, path) == 0) pick_neighbour(job, ni->layout, lo, hi);
  g_object_unref(ni);
  g_free(path);
}

int ms_repart_plan(ms_repart_job_t *job) {
  /* A merge looks at its neighbour first: the last try's, or the one the
   * layout shows. When the neighbour is too full there is nothing to begin.
   * When it cannot be asked (it merged away, its server is gone), the layout
   * is read again once; after that the directory names the neighbour. */
  for (int look = 0; job->merge && look < 2; look++) {
    if (job->pre_target[0] == '\0') find_neighbour(job);
    if (job->pre_target[0] == '\0') break;
    uint64_t used = 0;
    if (block_used(job, job->pre_target, job->pre_server_id, job->pre_index, job->pre_generation,
                   &used) == 0) {
      if (!too_full(job, used)) break;
      job->t_used = used;
      job->t_used_known = 1;
      job->not_begun = 1;
      snprintf(job->why, sizeof job->why, "the neighbour holds %llu bytes: together over %d%%",
               (unsigned long long)used, job->low_wm);
      job->status = MAYFLY_EAGAIN;
      return MAYFLY_EAGAIN;
    }
    job->pre_target[0] = '\0';
  }
  int rc = ctl(job);
  if (rc != 0) return set(job, rc, "directory");
  MayflyRepartPlan *plan = g_object_new(MAYFLY_TYPE_REPART_PLAN, NULL);
  rc = MF_CTL_CALL(job->ctl, repartition_begin, &plan, job->server_id, job->index,
                   job->generation, job->merge, job->split_at);
  if (rc == 0) {
    job->op_id = plan->op_id;
    g_strlcpy(job->target, plan->target->server_address, sizeof job->target);
    job->t_server_id = plan->target->server_id;
    job->t_index = plan->target->block_index;
    job->t_generation = plan->target->generation;
    job->lo = plan->lo;
    job->hi = plan->hi;
    if (job->key != NULL && (!plan->__isset_migrate_capability ||
                         mf_hex_decode(plan->migrate_capability, job->migrate_cap,
                                       MF_CAP_SIZE) != 0)) {
      /* The target would refuse every frame: give the repartition back. */
      g_object_unref(plan);
      end(job, 0);
      mf_set_last_error("the directory's plan carries no migrate capability (has it the "
                        "cluster key?)");
      return set(job, MAYFLY_EPERM, "repartition_begin");
    }
  }
  g_object_unref(plan);
  return set(job, rc, "repartition_begin");
}

typedef struct {
  mf_call_t call;
  GByteArray *data;
} chunk_t;

/* Waits for a chunk in flight, if any, and frees it. */
static int finish(chunk_t *c) {
  if (c->data == NULL) return 0;
  int rc = mf_call_wait(&c->call, deadline());
  g_free(c->call.payload);
  g_byte_array_free(c->data, TRUE);
  c->data = NULL;
  return rc;
}

/* Sends *cur as the next chunk (waiting for the chunk that last used its
 * window slot) and starts a new *cur. */
static int send_chunk(ms_repart_job_t *job, chunk_t *window, size_t *sent, GByteArray **cur) {
  chunk_t *c = &window[*sent % MS_REPART_WINDOW];
  int rc = finish(c);
  c->data = *cur;
  target_call(job, &c->call, WIRE_OP_KV_MIGRATE, c->data->data, c->data->len);
  (*sent)++;
  *cur = g_byte_array_new();
  return rc;
}

int ms_repart_copy(ms_repart_job_t *job) {
  if (job->merge) {
    uint64_t used = 0;
    int rc = target_used(job, &used);
    job->t_used = used;
    job->t_used_known = rc == 0;
    if (rc == 0 && too_full(job, used)) {
      snprintf(job->why, sizeof job->why, "the neighbour holds %llu bytes: together over %d%%",
               (unsigned long long)used, job->low_wm);
      job->status = MAYFLY_EAGAIN;
      ms_repart_abort(job);
      return MAYFLY_EAGAIN;
    }
    if (rc != 0) {
      set(job, rc, "neighbour");
      ms_repart_abort(job);
      return rc;
    }
  }
  chunk_t window[MS_REPART_WINDOW];
  memset(window, 0, sizeof window);
  size_t sent = 0;
  int rc = 0;
  GByteArray *cur = g_byte_array_new();
  GHashTableIter it;
  gpointer p;
  g_hash_table_iter_init(&it, job->moving);
  while (rc == 0 && g_hash_table_iter_next(&it, &p, NULL)) {
    const store_kv_entry_t *e = p;
    uint32_t klen = e->h.klen, vlen = e->h.vlen;
    size_t need = WIRE_KV_ENTRY_HEADER + (size_t)klen + vlen;
    if (cur->len > 0 && cur->len + need > MS_REPART_CHUNK) {
      rc = send_chunk(job, window, &sent, &cur);
    }
    guint at = cur->len;
    g_byte_array_set_size(cur, at + (guint)need);
    wire_kv_entry_put(cur->data + at, store_kv_entry_key(e), klen, store_kv_entry_value(e), vlen);
    job->bytes += (uint64_t)klen + vlen;
    job->entries++;
  }
  /* The rest; at least one frame, so a merge target takes the slots. */
  if (rc == 0 && (cur->len > 0 || sent == 0)) rc = send_chunk(job, window, &sent, &cur);
  for (size_t i = 0; i < MS_REPART_WINDOW; i++) {
    int r = finish(&window[i]);
    if (rc == 0) rc = r;
  }
  g_byte_array_free(cur, TRUE);
  if (rc != 0) {
    snprintf(job->why, sizeof job->why, "copy to %s block %d: %s", job->target, job->t_index,
             mayfly_strerror(rc));
    job->status = rc;
    ms_repart_abort(job);
  }
  return rc;
}

/* Whether the directory committed op, judging by the source block: a split
 * shrank its range to lo; a merge freed it. -1 when it cannot be told. */
static int committed(ms_repart_job_t *job) {
  if (ctl(job) != 0) return -1;
  MayflyBlockInfo *bi = g_object_new(MAYFLY_TYPE_BLOCK_INFO, NULL);
  int rc = MF_CTL_CALL(job->ctl, check_block, &bi, job->server_id, job->index), yes = -1;
  if (rc == 0) {
    int mine = bi->allocated && bi->generation == job->generation;
    yes = job->merge ? !mine : (mine && bi->range_hi == job->lo);
  }
  g_object_unref(bi);
  return yes;
}

int ms_repart_commit(ms_repart_job_t *job) {
  int rc = end(job, 1);
  for (int attempt = 0; rc != 0 && attempt < 5; attempt++) {
    int yes = committed(job);
    if (yes == 1) {
      rc = 0;
    } else if (yes == 0) {
      break;
    } else {
      g_usleep(200000); /* the directory is unreachable: ask again */
    }
  }
  if (rc != 0) {
    set(job, rc, "repartition_end");
    ms_repart_abort(job);
  }
  job->status = rc;
  return rc;
}

void ms_repart_job_free(ms_repart_job_t *job) {
  if (job == NULL) return;
  if (job->moving != NULL) g_hash_table_destroy(job->moving);
  mf_ctl_close(job->ctl);
  g_free(job);
}
