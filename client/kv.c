/*
 * kv namespaces in libmayfly: a key's hash slot picks the partition; the
 * request goes to the memory server holding it. A "moved" answer refreshes
 * the layout and retries, so repartitioning is invisible to the caller. A key
 * whose partition is lost fails with MAYFLY_ELOST (mf_call_one). In a
 * replicated namespace puts and deletes go to the chain's head with a
 * sequence record, gets and exists to its tail, and chain errors are retried
 * (mf_call_one, mf_calls_chain_redo).
 */
#include <string.h>

#include "client/internal.h"
#include "common/wire.h"

#define ATTEMPTS 8

static int kv_call(mayfly_ns_t *ns, uint8_t op, const void *key, size_t klen, const void *val,
                   size_t vlen, mf_call_t *call) {
  if (ns == NULL || (key == NULL && klen > 0)) return MAYFLY_EINVAL;
  if (ns->kind != MAYFLY_KIND_KV) return MAYFLY_EKIND;
  if (klen > WIRE_KEY_MAX) return MAYFLY_ETOOBIG;
  int64_t slot = wire_kv_slot(key, klen);
  int rc = MAYFLY_EMOVED;
  for (int attempt = 0; attempt < ATTEMPTS && rc == MAYFLY_EMOVED; attempt++) {
    mf_part_t p;
    if (attempt > 0 || mf_ns_find(ns, slot, &p) != 0) {
      if ((rc = mf_ns_refresh(ns)) != 0) return rc;
      if (mf_ns_find(ns, slot, &p) != 0) {
        rc = MAYFLY_EMOVED;
        g_usleep(1000 * attempt);
        continue;
      }
    }
    if (wire_kv_charge(klen, vlen) > (uint64_t)p.block_size) return MAYFLY_ETOOBIG;
    mf_call_target(ns, call, op, &p);
    call->req.arg1 = (uint64_t)slot;
    call->req.arg2 = (uint32_t)klen;
    call->p1 = key;
    call->l1 = klen;
    call->p2 = val;
    call->l2 = vlen;
    call->into = NULL;
    if (op == WIRE_OP_KV_GET) call->reply_max = mf_block_reply_max(&p);
    rc = mf_call_one(ns, &p, call, 0);
    if (rc == MAYFLY_EMOVED) {
      g_free(call->payload);
      call->payload = NULL;
    }
  }
  return rc;
}

int mayfly_kv_put(mayfly_ns_t *ns, const void *key, size_t klen, const void *val, size_t vlen) {
  mf_call_t call = {0};
  int rc = kv_call(ns, WIRE_OP_KV_PUT, key, klen, val, vlen, &call);
  mf_call_end(ns, &call);
  g_free(call.payload);
  return rc;
}

int mayfly_kv_get(mayfly_ns_t *ns, const void *key, size_t klen, void **val, size_t *vlen) {
  mf_call_t call = {0};
  int rc = kv_call(ns, WIRE_OP_KV_GET, key, klen, NULL, 0, &call);
  if (rc == 0) {
    *vlen = call.plen;
    /* An empty value still gets a distinct pointer, so NULL means absent. */
    *val = call.payload != NULL ? call.payload : g_malloc(1);
  } else {
    g_free(call.payload);
  }
  return rc;
}

int mayfly_kv_delete(mayfly_ns_t *ns, const void *key, size_t klen) {
  mf_call_t call = {0};
  int rc = kv_call(ns, WIRE_OP_KV_DEL, key, klen, NULL, 0, &call);
  mf_call_end(ns, &call);
  g_free(call.payload);
  return rc;
}

int mayfly_kv_exists(mayfly_ns_t *ns, const void *key, size_t klen) {
  mf_call_t call = {0};
  int rc = kv_call(ns, WIRE_OP_KV_EXISTS, key, klen, NULL, 0, &call);
  g_free(call.payload);
  return rc != 0 ? rc : (call.rep.arg0 ? 1 : 0);
}

/* Sends n requests at once on the connections they belong to, then waits for
 * all: one round trip for the batch instead of n. Requests of replicated
 * partitions that fail with a chain error are redone together, each with
 * its own sequence record, until the client's timeout
 * (mf_calls_chain_redo). Requests answered "moved" (a repartition in
 * between) are redone one by one with refresh and retry, keeping theirs. */
static int kv_batch(mayfly_ns_t *ns, uint8_t op, size_t n, const void *const *keys,
                    const size_t *klens, const void *const *vals, const size_t *vlens,
                    void **outv, size_t *outl, int *rcs) {
  if (ns == NULL || (n > 0 && (keys == NULL || klens == NULL || rcs == NULL))) return MAYFLY_EINVAL;
  if (ns->kind != MAYFLY_KIND_KV) return MAYFLY_EKIND;
  mf_call_t *calls = g_new0(mf_call_t, n ? n : 1);
  mf_ns_caps_fresh(ns);
  /* Each call's partition, whose capability it sends: kept until sent, and
   * until the chain redo is over. */
  mf_part_t *parts = g_new(mf_part_t, n ? n : 1);
  /* Calls for the same server go out together, in one system call. */
  GHashTable *by_server = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                                (GDestroyNotify)g_ptr_array_unref);
  int chained = 0;
  for (size_t i = 0; i < n; i++) {
    mf_part_t *pp = &parts[i];
    size_t vlen = vals ? vlens[i] : 0;
    int64_t slot = wire_kv_slot(keys[i], klens[i]);
    calls[i].status = MAYFLY_EMOVED; /* redone below unless sent */
    /* A lost partition's keys are redone one by one below (MAYFLY_ELOST). */
    if (klens[i] > WIRE_KEY_MAX || mf_ns_find(ns, slot, pp) != 0 || pp->lost ||
        wire_kv_charge(klens[i], vlen) > (uint64_t)pp->block_size) {
      pp->replicated = 0; /* nothing sent: not the chain redo's */
      continue;
    }
    chained |= pp->replicated;
    mf_call_target(ns, &calls[i], op, pp);
    calls[i].req.arg1 = (uint64_t)slot;
    calls[i].req.arg2 = (uint32_t)klens[i];
    calls[i].p1 = keys[i];
    calls[i].l1 = klens[i];
    calls[i].p2 = vals ? vals[i] : NULL;
    calls[i].l2 = vlen;
    if (op == WIRE_OP_KV_GET) calls[i].reply_max = mf_block_reply_max(pp);
    const char *addr = mf_part_member(pp, op)->address;
    GPtrArray *group = g_hash_table_lookup(by_server, addr);
    if (group == NULL) {
      group = g_ptr_array_new();
      g_hash_table_insert(by_server, g_strdup(addr), group);
    }
    g_ptr_array_add(group, &calls[i]);
  }
  GHashTableIter it;
  gpointer addr, group;
  int64_t now = g_get_monotonic_time();
  int64_t end = now + (int64_t)ns->client->timeout_ms * 1000, deadline = end;
  /* A replicated batch's first attempt is bounded as a redo's is. */
  if (chained) deadline = MIN(end, now + MF_CHAIN_ATTEMPT_US + (int64_t)n * 1000);
  g_hash_table_iter_init(&it, by_server);
  while (g_hash_table_iter_next(&it, &addr, &group)) {
    GPtrArray *g = group;
    mf_calls_start_at(ns->client->pool, addr, (mf_call_t *const *)g->pdata, g->len, now,
                      deadline);
  }
  g_hash_table_destroy(by_server);
  int *first_rc = g_new(int, n ? n : 1);
  for (size_t i = 0; i < n; i++) first_rc[i] = mf_call_wait(&calls[i], deadline);
  if (chained) {
    mf_call_t **ptrs = g_new(mf_call_t *, n ? n : 1);
    for (size_t i = 0; i < n; i++) ptrs[i] = &calls[i];
    mf_calls_chain_redo(ns, parts, ptrs, n, end);
    for (size_t i = 0; i < n; i++) first_rc[i] = calls[i].status;
    g_free(ptrs);
  }
  g_free(parts);
  int first = 0;
  for (size_t i = 0; i < n; i++) {
    int rc = first_rc[i];
    /* Moved, or a capability refused (redone one by one, which refreshes
     * the layout and retries once: mf_call_one). The call is reused, so a
     * write keeps its sequence record. */
    if (rc == MAYFLY_EMOVED || rc == MAYFLY_EPERM) {
      g_free(calls[i].payload);
      calls[i].payload = NULL;
      rc = kv_call(ns, op, keys[i], klens[i], vals ? vals[i] : NULL, vals ? vlens[i] : 0,
                   &calls[i]);
    }
    rcs[i] = rc;
    if (outv != NULL) {
      outv[i] = rc == 0 ? (calls[i].payload ? calls[i].payload : g_malloc(1)) : NULL;
      outl[i] = rc == 0 ? calls[i].plen : 0;
      if (rc != 0) g_free(calls[i].payload);
    } else {
      g_free(calls[i].payload);
    }
    if (rc != 0 && first == 0) first = rc;
  }
  mf_calls_end(ns, calls, n);
  g_free(first_rc);
  g_free(calls);
  return first;
}

int mayfly_kv_put_batch(mayfly_ns_t *ns, size_t n, const void *const *keys, const size_t *klens,
                        const void *const *vals, const size_t *vlens, int *rcs) {
  if (vals == NULL || vlens == NULL) return MAYFLY_EINVAL;
  return kv_batch(ns, WIRE_OP_KV_PUT, n, keys, klens, vals, vlens, NULL, NULL, rcs);
}

int mayfly_kv_get_batch(mayfly_ns_t *ns, size_t n, const void *const *keys, const size_t *klens,
                        void **vals, size_t *vlens, int *rcs) {
  if (vals == NULL || vlens == NULL) return MAYFLY_EINVAL;
  return kv_batch(ns, WIRE_OP_KV_GET, n, keys, klens, NULL, NULL, vals, vlens, rcs);
}
