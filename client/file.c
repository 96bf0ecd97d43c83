/*
 * File namespaces in libmayfly: partitions hold consecutive byte ranges, one
 * block each. A write or read spanning blocks is split by range and the
 * pieces go out to their memory servers in parallel; a write past the end
 * first asks the directory for the blocks it needs (idempotently). A read or
 * write touching a lost block fails with MAYFLY_ELOST. In a replicated
 * namespace each block is a chain: a write's piece goes to its head with a
 * sequence record of its own, a read's to its tail, and only the pieces that
 * failed with a chain error are sent again (mf_calls_run).
 */
#include <string.h>

#include "client/internal.h"
#include "common/wire.h"

#define ATTEMPTS 8

/* Copies the layout (the partitions overlapping [off, off+len), or all when
 * len is 0) so calls can proceed without holding the lock. */
static mf_part_t *snapshot(mayfly_ns_t *ns, uint64_t off, uint64_t len, size_t *n,
                           int64_t *end) {
  mf_ns_caps_fresh(ns);
  g_rw_lock_reader_lock(&ns->lock);
  mf_part_t *out = g_new(mf_part_t, ns->nparts ? ns->nparts : 1);
  *n = 0;
  *end = ns->nparts ? ns->parts[ns->nparts - 1].hi : 0;
  for (size_t i = 0; i < ns->nparts; i++) {
    const mf_part_t *p = &ns->parts[i];
    if (len == 0 || ((uint64_t)p->hi > off && (uint64_t)p->lo < off + len)) out[(*n)++] = *p;
  }
  g_rw_lock_reader_unlock(&ns->lock);
  return out;
}

/* Makes sure blocks cover [0, end). */
static int cover(mayfly_ns_t *ns, uint64_t end) {
  for (;;) {
    size_t n;
    int64_t have;
    g_free(snapshot(ns, 0, 0, &n, &have));
    if ((uint64_t)have >= end) return 0;
    mf_part_t last;
    int64_t bs = 0;
    g_rw_lock_reader_lock(&ns->lock);
    if (ns->nparts > 0) {
      last = ns->parts[ns->nparts - 1];
      bs = last.block_size;
    }
    g_rw_lock_reader_unlock(&ns->lock);
    if (bs <= 0) return MAYFLY_EMOVED;
    int rc = mf_ns_grow(ns, have, have + bs);
    if (rc != 0) return rc;
  }
}

/* Runs one call per overlapping partition, in parallel. For writes `data`
 * is the source; for reads `into` the destination; got[i] receives each
 * piece's byte count (reads) and seg[i] the segment's size. */
static int spread(mayfly_ns_t *ns, uint8_t op, uint64_t off, const uint8_t *data, uint8_t *into,
                  size_t len, mf_part_t *parts, size_t n, uint64_t *got, uint64_t *seg) {
  mf_call_t *calls = g_new0(mf_call_t, n ? n : 1);
  int *rcs = g_new0(int, n ? n : 1);
  for (size_t i = 0; i < n; i++) {
    const mf_part_t *p = &parts[i];
    uint64_t from = MAX(off, (uint64_t)p->lo), to = MIN(off + len, (uint64_t)p->hi);
    mf_call_target(ns, &calls[i], op, p);
    calls[i].req.arg0 = from - (uint64_t)p->lo;
    calls[i].req.arg1 = to - from;
    if (data != NULL) {
      calls[i].p1 = data + (from - off);
      calls[i].l1 = to - from;
    }
    if (into != NULL) {
      calls[i].into = into + (from - off);
      calls[i].into_cap = to - from;
      calls[i].reply_max = (uint32_t)(to - from);
    }
  }
  mf_calls_run(ns, parts, calls, n, rcs); /* a lost block: MAYFLY_ELOST */
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    int r = rcs[i];
    if (r == 0 && calls[i].payload != NULL) {
      /* A reply larger than asked for: take what was asked. */
      memcpy(calls[i].into, calls[i].payload, MIN(calls[i].plen, calls[i].into_cap));
    }
    g_free(calls[i].payload);
    if (got) got[i] = r == 0 ? calls[i].plen : 0;
    if (seg) seg[i] = r == 0 ? calls[i].rep.arg0 : 0;
    if (r != 0 && (rc == 0 || rc == MAYFLY_EMOVED)) rc = r;
  }
  mf_calls_end(ns, calls, n);
  g_free(rcs);
  g_free(calls);
  return rc;
}

int mayfly_file_write(mayfly_ns_t *ns, uint64_t offset, const void *buf, size_t len) {
  if (ns == NULL || (buf == NULL && len > 0) || offset > INT64_MAX - len) return MAYFLY_EINVAL;
  if (ns->kind != MAYFLY_KIND_FILE) return MAYFLY_EKIND;
  if (len == 0) return 0;
  int rc = cover(ns, offset + len), perm_tried = 0;
  for (int attempt = 0; rc == 0 && attempt < ATTEMPTS; attempt++) {
    size_t n;
    int64_t end;
    mf_part_t *parts = snapshot(ns, offset, len, &n, &end);
    rc = spread(ns, WIRE_OP_FILE_WRITE, offset, buf, NULL, len, parts, n, NULL, NULL);
    g_free(parts);
    if (mf_ns_perm_retry(ns, rc, &perm_tried)) {
      rc = 0; /* a refused capability: once more with the new layout's */
      continue;
    }
    if (rc != MAYFLY_EMOVED) break;
    if ((rc = mf_ns_refresh(ns)) == 0) rc = cover(ns, offset + len);
    if (rc == 0) rc = MAYFLY_EMOVED;
  }
  return rc;
}

int64_t mayfly_file_size(mayfly_ns_t *ns) {
  if (ns == NULL) return MAYFLY_EINVAL;
  if (ns->kind != MAYFLY_KIND_FILE) return MAYFLY_EKIND;
  int perm_tried = 0;
  for (int attempt = 0; attempt < ATTEMPTS; attempt++) {
    size_t n;
    int64_t end;
    mf_part_t *parts = snapshot(ns, 0, 0, &n, &end);
    uint64_t *seg = g_new0(uint64_t, n ? n : 1);
    int rc = spread(ns, WIRE_OP_FILE_SIZE, 0, NULL, NULL, 0, parts, n, NULL, seg);
    int64_t size = 0;
    for (size_t i = 0; i < n; i++) {
      if (seg[i] > 0) size = MAX(size, parts[i].lo + (int64_t)seg[i]);
    }
    g_free(seg);
    g_free(parts);
    if (mf_ns_perm_retry(ns, rc, &perm_tried)) continue;
    if (rc == MAYFLY_EMOVED) {
      if ((rc = mf_ns_refresh(ns)) != 0) return rc;
      continue;
    }
    return rc != 0 ? rc : size;
  }
  return MAYFLY_EMOVED;
}

int mayfly_file_append(mayfly_ns_t *ns, const void *buf, size_t len, uint64_t *offset) {
  if (ns == NULL) return MAYFLY_EINVAL;
  g_mutex_lock(&ns->append_lock);
  int64_t size = mayfly_file_size(ns);
  int rc = size < 0 ? (int)size : mayfly_file_write(ns, (uint64_t)size, buf, len);
  if (rc == 0 && offset != NULL) *offset = (uint64_t)size;
  g_mutex_unlock(&ns->append_lock);
  return rc;
}

int64_t mayfly_file_read(mayfly_ns_t *ns, uint64_t offset, void *buf, size_t len) {
  if (ns == NULL || (buf == NULL && len > 0) || offset > INT64_MAX - len) return MAYFLY_EINVAL;
  if (ns->kind != MAYFLY_KIND_FILE) return MAYFLY_EKIND;
  if (len == 0) return 0;
  int perm_tried = 0;
  for (int attempt = 0; attempt < ATTEMPTS; attempt++) {
    size_t n;
    int64_t end;
    mf_part_t *parts = snapshot(ns, offset, len, &n, &end);
    uint64_t *got = g_new0(uint64_t, n ? n : 1);
    int rc = spread(ns, WIRE_OP_FILE_READ, offset, NULL, buf, len, parts, n, got, NULL);
    /* Bytes are present up to the end of the last piece that is full; a
     * short piece may be a hole (zeros) if the file goes on after it. */
    int short_piece = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
      uint64_t from = MAX(offset, (uint64_t)parts[i].lo);
      uint64_t want = MIN(offset + len, (uint64_t)parts[i].hi) - from;
      if (got[i] < want) {
        memset((uint8_t *)buf + (from - offset) + got[i], 0, want - got[i]);
        short_piece = 1;
      }
    }
    /* Past the last block nothing was read at all: that part is short too. */
    uint64_t covered = n > 0 ? MIN(offset + len, (uint64_t)parts[n - 1].hi) : offset;
    if (rc == 0 && covered < offset + len) {
      memset((uint8_t *)buf + (covered - offset), 0, offset + len - covered);
      short_piece = 1;
    }
    g_free(got);
    g_free(parts);
    if (mf_ns_perm_retry(ns, rc, &perm_tried)) continue;
    if (rc == MAYFLY_EMOVED) {
      if ((rc = mf_ns_refresh(ns)) != 0) return rc;
      continue;
    }
    if (rc != 0) return rc;
    if (!short_piece) return (int64_t)len;
    int64_t size = mayfly_file_size(ns);
    if (size < 0) return size;
    if ((uint64_t)size <= offset) return 0;
    return (int64_t)MIN((uint64_t)len, (uint64_t)size - offset);
  }
  return MAYFLY_EMOVED;
}

int mayfly_file_truncate(mayfly_ns_t *ns, uint64_t size) {
  if (ns == NULL || size > INT64_MAX) return MAYFLY_EINVAL;
  if (ns->kind != MAYFLY_KIND_FILE) return MAYFLY_EKIND;
  int64_t cur = mayfly_file_size(ns);
  if (cur < 0) return (int)cur;
  if ((int64_t)size > cur) return MAYFLY_EINVAL; /* truncate shrinks; write extends */
  /* Cut every segment past the new end (a reader with an older layout then
   * sees the new size at once), then let the directory drop the blocks
   * wholly past it: they return to the pool. */
  int rc = MAYFLY_EMOVED, perm_tried = 0;
  for (int attempt = 0; attempt < ATTEMPTS && rc == MAYFLY_EMOVED; attempt++) {
    if (attempt > 0 && (rc = mf_ns_refresh(ns)) != 0) return rc;
    size_t n;
    int64_t end;
    mf_part_t *parts = snapshot(ns, 0, 0, &n, &end);
    /* Only the segments past the new end are cut. */
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
      if (parts[i].hi > (int64_t)size) parts[m++] = parts[i];
    }
    mf_call_t *calls = g_new0(mf_call_t, m ? m : 1);
    int *rcs = g_new0(int, m ? m : 1);
    for (size_t i = 0; i < m; i++) {
      mf_call_target(ns, &calls[i], WIRE_OP_FILE_TRUNCATE, &parts[i]);
      calls[i].req.arg0 = (int64_t)size > parts[i].lo ? size - (uint64_t)parts[i].lo : 0;
    }
    mf_calls_run(ns, parts, calls, m, rcs);
    rc = 0;
    for (size_t i = 0; i < m; i++) {
      g_free(calls[i].payload);
      if (rcs[i] != 0 && rc != MAYFLY_EMOVED) rc = rcs[i];
    }
    mf_calls_end(ns, calls, m);
    g_free(rcs);
    g_free(calls);
    g_free(parts);
    if (mf_ns_perm_retry(ns, rc, &perm_tried)) rc = MAYFLY_EMOVED; /* once more */
  }
  if (rc != 0) return rc;
  mayfly_stat_t *st = NULL;
  rc = mf_truncate(ns->client, ns->path, (int64_t)size, &st);
  if (rc == 0) {
    mf_ns_set_layout(ns, st);
    mayfly_stat_free(st);
  }
  return rc;
}
