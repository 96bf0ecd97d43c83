/*
 * Block snapshots: serialising a block into a REPLICA_COPY stream and
 * restoring one from it (see blocksnap.h; the format is in
 * docs/data-protocol.md, "REPLICA_COPY stream").
 *
 * The stream is a fixed header, then records (a tag byte and its lengths,
 * then the bytes): the data records of the block's kind, one chain record,
 * one end record. Records may span the chunks the stream is cut into, so
 * the restore is a small state machine: it gathers a record's head (at most
 * BS_HEADER_SIZE bytes) in a buffer, checks it, allocates the record's
 * destination (the block's memory for file bytes, a queue item, a kv entry,
 * the chain section) and copies the body straight into it as it arrives.
 */
#include "memserver/blocksnap.h"

#include <string.h>

#include "common/check.h"
#include "common/error.h"
#include "common/le.h"
#include "common/wire.h"

enum {
  BS_TAG_FILE = 1,  /* u32 len, then len file bytes (following the previous ones) */
  BS_TAG_ITEM = 2,  /* u32 len, then the queue item's len bytes */
  BS_TAG_ENTRY = 3, /* u32 klen, u32 vlen, then the key, then the value */
  BS_TAG_CHAIN = 4, /* u32 len, then the chain section */
  BS_TAG_END = 5,   /* nothing: the stream ends here */
};

#define BS_FLAG_SEALED 0x01u
/* A file record carries at most this many bytes (a 4 GiB block needs more
 * than one: the length is a u32). */
#define BS_FILE_RECORD_MAX ((uint64_t)1 << 30)

/* ---------- serialising ---------- */

/* Frees a chunk; a released one (NULL) is skipped. */
static void chunk_free(gpointer p) {
  if (p != NULL) g_byte_array_unref(p);
}

void bs_stream_init(bs_stream_t *st, size_t headroom) {
  st->chunks = g_ptr_array_new_with_free_func(chunk_free);
  st->headroom = headroom;
  st->bytes = 0;
}

void bs_stream_clear(bs_stream_t *st) {
  if (st->chunks != NULL) g_ptr_array_free(st->chunks, TRUE);
  st->chunks = NULL;
  st->bytes = 0;
}

void bs_stream_release(bs_stream_t *st, guint i) {
  GByteArray *c = g_ptr_array_index(st->chunks, i);
  g_ptr_array_index(st->chunks, i) = NULL;
  chunk_free(c);
}

const uint8_t *bs_stream_chunk(const bs_stream_t *st, guint i, size_t *len) {
  GByteArray *c = g_ptr_array_index(st->chunks, i);
  MF_CHECK(c != NULL);
  *len = c->len - st->headroom;
  return c->data + st->headroom;
}

/* Appends bytes to the stream, opening a new chunk whenever the last one
 * holds chunk_max bytes. Each chunk is allocated at its full size once, so
 * appending never moves what was written. */
typedef struct {
  bs_stream_t *st;
  size_t chunk_max;
  GByteArray *cur;
} writer_t;

static void w_put(writer_t *w, const void *data, size_t len) {
  const uint8_t *p = data;
  while (len > 0) {
    if (w->cur == NULL || w->cur->len - w->st->headroom == w->chunk_max) {
      w->cur = g_byte_array_sized_new((guint)(w->st->headroom + w->chunk_max));
      g_byte_array_set_size(w->cur, (guint)w->st->headroom);
      g_ptr_array_add(w->st->chunks, w->cur);
    }
    size_t room = w->chunk_max - (w->cur->len - w->st->headroom);
    size_t n = MIN(room, len);
    g_byte_array_append(w->cur, p, (guint)n);
    w->st->bytes += n;
    p += n;
    len -= n;
  }
}

static void w_tag_len(writer_t *w, uint8_t tag, uint32_t len) {
  uint8_t h[5];
  h[0] = tag;
  mf_le_put32(h + 1, len);
  w_put(w, h, sizeof h);
}

/* The number of data records and, for the header, of items or entries. */
static uint64_t data_count(const store_block_t *b) {
  if (b->kind == STORE_QUEUE) return b->items != NULL ? g_queue_get_length(b->items) : 0;
  if (b->kind == STORE_KV) return store_kv_count(b);
  return 0;
}

static void put_entries(writer_t *w, GHashTable *kv) {
  if (kv == NULL) return;
  GHashTableIter it;
  gpointer p;
  g_hash_table_iter_init(&it, kv);
  while (g_hash_table_iter_next(&it, &p, NULL)) {
    const store_kv_entry_t *e = p;
    uint8_t h[9];
    h[0] = BS_TAG_ENTRY;
    mf_le_put32(h + 1, e->h.klen);
    mf_le_put32(h + 5, e->h.vlen);
    w_put(w, h, sizeof h);
    w_put(w, e->data, (size_t)e->h.klen + e->h.vlen);
  }
}

int bs_save(const store_t *s, const store_block_t *b, uint64_t applied_cseq,
            const bs_chain_hook_t *hook, size_t chunk_max, bs_stream_t *out) {
  MF_CHECK(chunk_max >= 64 && out->chunks != NULL);
  if (b->kind == STORE_FREE) return MAYFLY_EKIND;
  GByteArray *chain = g_byte_array_new();
  if (hook != NULL && hook->save != NULL) {
    int rc = hook->save(hook->ud, b, chain);
    if (rc == 0 && chain->len > UINT32_MAX) rc = MAYFLY_ETOOBIG;
    if (rc != 0) {
      g_byte_array_unref(chain);
      return rc;
    }
  }
  (void)s;
  uint8_t h[BS_HEADER_SIZE] = {0};
  mf_le_put32(h, BS_MAGIC);
  mf_le_put16(h + 4, BS_VERSION);
  h[6] = (uint8_t)b->kind;
  h[7] = (b->kind == STORE_QUEUE && b->sealed) ? BS_FLAG_SEALED : 0;
  h[8] = (uint8_t)b->high_wm;
  h[9] = (uint8_t)b->low_wm;
  mf_le_put64(h + 16, (uint64_t)b->range_lo);
  mf_le_put64(h + 24, (uint64_t)b->range_hi);
  mf_le_put64(h + 32, applied_cseq);
  mf_le_put64(h + 40, b->kind == STORE_FILE ? b->size : 0);
  mf_le_put64(h + 48, data_count(b));
  mf_le_put64(h + 56, b->used);
  mf_le_put64(h + 64, chain->len);
  writer_t w = {.st = out, .chunk_max = chunk_max};
  w_put(&w, h, sizeof h);
  if (b->kind == STORE_FILE) {
    for (uint64_t off = 0; off < b->size;) {
      uint64_t n = MIN(b->size - off, BS_FILE_RECORD_MAX);
      w_tag_len(&w, BS_TAG_FILE, (uint32_t)n);
      w_put(&w, b->mem + off, (size_t)n);
      off += n;
    }
  } else if (b->kind == STORE_QUEUE) {
    for (GList *l = b->items != NULL ? b->items->head : NULL; l != NULL; l = l->next) {
      const store_item_t *it = l->data;
      w_tag_len(&w, BS_TAG_ITEM, it->len);
      w_put(&w, it->data, it->len);
    }
  } else {
    put_entries(&w, b->kv);
    put_entries(&w, b->rp_moving); /* still the block's until a repartition commits */
  }
  w_tag_len(&w, BS_TAG_CHAIN, chain->len);
  w_put(&w, chain->data, chain->len);
  uint8_t end = BS_TAG_END;
  w_put(&w, &end, 1);
  g_byte_array_unref(chain);
  return 0;
}

/* ---------- restoring ---------- */

typedef enum {
  R_HEADER,   /* gathering the stream header */
  R_TAG,      /* gathering a record's tag and lengths */
  R_BODY,     /* copying a record's body */
  R_END,      /* the end record was read: nothing may follow */
  R_FAILED,
  R_FINISHED, /* bs_restore_finish succeeded */
} rstate_t;

struct bs_restore {
  store_t *s;
  store_block_t *b;
  int64_t gen;
  store_kind_t kind;
  bs_chain_hook_t hook;
  uint64_t chain_max;
  rstate_t state;
  int error;
  uint64_t offset; /* stream bytes taken */
  /* The head being gathered: `need` bytes in all, `have` so far. */
  uint8_t head[BS_HEADER_SIZE];
  size_t need, have;
  /* The header's fields. */
  int sealed, high_wm, low_wm;
  int64_t lo, hi;
  uint64_t cseq, file_size, count, charge, chain_len;
  /* Progress. */
  uint64_t file_done, records, used;
  int chain_seen;
  /* The record whose body is being copied. */
  uint8_t tag;
  uint8_t *dst;          /* where the next body byte goes */
  uint64_t left;         /* body bytes still to come */
  store_item_t *item;    /* BS_TAG_ITEM: not yet in the queue */
  store_kv_entry_t *ent; /* BS_TAG_ENTRY: not yet in the table */
  GByteArray *chain;     /* BS_TAG_CHAIN */
};

/* The block still belongs to the owner the restore began with. */
static int same_owner(const bs_restore_t *r) {
  return r->b->generation == r->gen && r->b->kind == r->kind && !r->b->released;
}

void bs_block_empty(store_t *s, store_block_t *b) {
  switch (b->kind) {
    case STORE_FILE:
      store_file_truncate(s, b, 0);
      break;
    case STORE_QUEUE:
      if (b->items != NULL) g_queue_clear_full(b->items, g_free);
      break;
    case STORE_KV:
      if (b->kv != NULL) g_hash_table_remove_all(b->kv);
      break;
    default:
      break;
  }
  b->used = 0;
  b->sealed = 0;
}

/* Drops what the record in progress allocated. */
static void drop_partial(bs_restore_t *r) {
  g_free(r->item);
  r->item = NULL;
  g_free(r->ent);
  r->ent = NULL;
  if (r->chain != NULL) g_byte_array_unref(r->chain);
  r->chain = NULL;
}

static int fail(bs_restore_t *r, int rc) {
  drop_partial(r);
  if (rc != MAYFLY_EMOVED && same_owner(r)) bs_block_empty(r->s, r->b);
  r->state = R_FAILED;
  r->error = rc;
  return rc;
}

bs_restore_t *bs_restore_new(store_t *s, store_block_t *b, const bs_chain_hook_t *hook,
                             uint64_t chain_max) {
  bs_restore_t *r = g_new0(bs_restore_t, 1);
  r->s = s;
  r->b = b;
  r->gen = b->generation;
  r->kind = b->kind;
  if (hook != NULL) r->hook = *hook;
  r->chain_max = chain_max != 0 ? chain_max : BS_CHAIN_MAX_DEFAULT;
  r->state = R_HEADER;
  r->need = BS_HEADER_SIZE;
  /* The stream is the whole block: nothing of an earlier fill may stay. */
  bs_block_empty(s, b);
  return r;
}

/* Checks the gathered stream header and takes its fields. */
static int take_header(bs_restore_t *r) {
  const uint8_t *h = r->head;
  uint64_t bs = r->s->block_size;
  if (mf_le_get32(h) != BS_MAGIC || mf_le_get16(h + 4) != BS_VERSION) return MAYFLY_EPROTO;
  if (h[10] != 0 || h[11] != 0 || mf_le_get32(h + 12) != 0) return MAYFLY_EPROTO;
  int kind = h[6];
  if (kind < STORE_FILE || kind > STORE_KV) return MAYFLY_EPROTO;
  if (kind != (int)r->kind) return MAYFLY_EKIND;
  if ((h[7] & ~BS_FLAG_SEALED) != 0 || (h[7] != 0 && kind != STORE_QUEUE)) return MAYFLY_EPROTO;
  r->sealed = h[7] & BS_FLAG_SEALED;
  r->high_wm = h[8];
  r->low_wm = h[9];
  if (r->high_wm > 100 || r->low_wm > 100) return MAYFLY_EPROTO;
  r->lo = (int64_t)mf_le_get64(h + 16);
  r->hi = (int64_t)mf_le_get64(h + 24);
  if (r->lo > r->hi) return MAYFLY_EPROTO;
  if (kind == STORE_KV && (r->lo < 0 || r->hi > WIRE_KV_SLOTS)) return MAYFLY_EPROTO;
  r->cseq = mf_le_get64(h + 32);
  r->file_size = mf_le_get64(h + 40);
  r->count = mf_le_get64(h + 48);
  r->charge = mf_le_get64(h + 56);
  r->chain_len = mf_le_get64(h + 64);
  if (kind != STORE_FILE && r->file_size != 0) return MAYFLY_EPROTO;
  if (kind == STORE_FILE && (r->count != 0 || r->charge != r->file_size)) return MAYFLY_EPROTO;
  if (r->file_size > bs || r->charge > bs) return MAYFLY_EFULL;
  /* Every item and entry costs at least its empty charge. */
  uint64_t least = kind == STORE_QUEUE ? wire_queue_charge(0) : store_kv_charge(0, 0);
  if (kind != STORE_FILE && r->count > bs / least) return MAYFLY_EFULL;
  if (r->chain_len > r->chain_max || r->chain_len > UINT32_MAX) return MAYFLY_EPROTO;
  return 0;
}

/* The bytes of a record's head after its tag, or -1 for an unknown tag. */
static int head_size(uint8_t tag) {
  switch (tag) {
    case BS_TAG_FILE:
    case BS_TAG_ITEM:
    case BS_TAG_CHAIN:
      return 5;
    case BS_TAG_ENTRY:
      return 9;
    case BS_TAG_END:
      return 1;
    default:
      return -1;
  }
}

/* Every data record the header announced has been read. */
static int data_done(const bs_restore_t *r) {
  return r->kind == STORE_FILE ? r->file_done == r->file_size : r->records == r->count;
}

/* Checks a gathered record head and sets up the copy of its body. */
static int take_record(bs_restore_t *r) {
  const uint8_t *h = r->head;
  uint64_t bs = r->s->block_size;
  store_block_t *b = r->b;
  r->tag = h[0];
  if (r->chain_seen && r->tag != BS_TAG_END) return MAYFLY_EPROTO;
  switch (r->tag) {
    case BS_TAG_FILE: {
      uint64_t len = mf_le_get32(h + 1);
      if (r->kind != STORE_FILE || len == 0 || len > r->file_size - r->file_done) {
        return MAYFLY_EPROTO;
      }
      r->dst = b->mem + r->file_done;
      r->left = len;
      return 0;
    }
    case BS_TAG_ITEM: {
      uint64_t len = mf_le_get32(h + 1);
      if (r->kind != STORE_QUEUE || r->records == r->count) return MAYFLY_EPROTO;
      uint64_t cost = wire_queue_charge(len);
      if (cost > bs || r->used + cost > bs) return MAYFLY_EFULL;
      r->item = g_malloc(sizeof *r->item + len);
      r->item->len = (uint32_t)len;
      r->dst = r->item->data;
      r->left = len;
      return 0;
    }
    case BS_TAG_ENTRY: {
      uint64_t klen = mf_le_get32(h + 1), vlen = mf_le_get32(h + 5);
      if (r->kind != STORE_KV || r->records == r->count || klen > WIRE_KEY_MAX) {
        return MAYFLY_EPROTO;
      }
      if (vlen > bs) return MAYFLY_EFULL; /* before the sum, which a huge vlen could wrap */
      uint64_t cost = store_kv_charge(klen, vlen);
      if (cost > bs || r->used + cost > bs) return MAYFLY_EFULL;
      r->ent = g_malloc(sizeof *r->ent + klen + vlen);
      r->ent->h.klen = (uint32_t)klen;
      r->ent->h.vlen = (uint32_t)vlen;
      r->dst = r->ent->data;
      r->left = klen + vlen;
      return 0;
    }
    case BS_TAG_CHAIN: {
      uint64_t len = mf_le_get32(h + 1);
      if (!data_done(r) || len != r->chain_len) return MAYFLY_EPROTO;
      r->chain = g_byte_array_sized_new((guint)len);
      g_byte_array_set_size(r->chain, (guint)len);
      r->dst = r->chain->data;
      r->left = len;
      return 0;
    }
    case BS_TAG_END:
      if (!r->chain_seen) return MAYFLY_EPROTO;
      r->left = 0;
      return 0;
    default:
      return MAYFLY_EPROTO;
  }
}

/* A record's body is complete: it joins the block. */
static int end_record(bs_restore_t *r) {
  store_block_t *b = r->b;
  switch (r->tag) {
    case BS_TAG_FILE: {
      uint64_t end = (uint64_t)(r->dst - b->mem);
      r->file_done = end;
      /* The bytes so far count as the segment's, so emptying it after a
       * later error gives their pages back. */
      b->size = b->used = end;
      r->used = end;
      return 0;
    }
    case BS_TAG_ITEM:
      g_queue_push_tail(b->items, r->item);
      r->used += wire_queue_charge(r->item->len);
      b->used = r->used;
      r->item = NULL;
      r->records++;
      return 0;
    case BS_TAG_ENTRY: {
      store_kv_entry_t *e = r->ent;
      e->h.hash = wire_kv_hash(e->data, e->h.klen);
      int64_t slot = wire_kv_slot_of(e->h.hash);
      uint32_t vlen;
      if (slot < r->lo || slot >= r->hi ||
          store_kv_get(b, e->h.hash, e->data, e->h.klen, &vlen) != NULL) {
        return MAYFLY_EPROTO;
      }
      g_hash_table_add(b->kv, e);
      r->ent = NULL;
      r->used += store_kv_charge(e->h.klen, e->h.vlen);
      b->used = r->used;
      r->records++;
      return 0;
    }
    case BS_TAG_CHAIN:
      r->chain_seen = 1;
      return 0;
    case BS_TAG_END:
      r->state = R_END;
      return 0;
    default:
      MF_CHECK(0);
      return MAYFLY_EPROTO;
  }
}

int bs_restore_feed(bs_restore_t *r, const uint8_t *data, size_t len) {
  if (r->state == R_FAILED) return r->error;
  if (r->state == R_FINISHED) return MAYFLY_EPROTO;
  if (!same_owner(r)) return fail(r, MAYFLY_EMOVED);
  int rc;
  while (len > 0) {
    switch (r->state) {
      case R_HEADER:
      case R_TAG: {
        size_t n = MIN(len, r->need - r->have);
        memcpy(r->head + r->have, data, n);
        r->have += n;
        data += n;
        len -= n;
        r->offset += n;
        if (r->state == R_TAG && r->have == 1) {
          /* The tag says how long the rest of the head is. */
          int hs = head_size(r->head[0]);
          if (hs < 0) return fail(r, MAYFLY_EPROTO);
          r->need = (size_t)hs;
        }
        if (r->have < r->need) break;
        if (r->state == R_HEADER) {
          if ((rc = take_header(r)) != 0) return fail(r, rc);
        } else {
          if ((rc = take_record(r)) != 0) return fail(r, rc);
          if (r->left == 0 && (rc = end_record(r)) != 0) return fail(r, rc);
          if (r->state == R_END) break;
          if (r->left > 0) {
            r->state = R_BODY;
            break;
          }
        }
        r->state = R_TAG;
        r->need = 1;
        r->have = 0;
        break;
      }
      case R_BODY: {
        size_t n = (size_t)MIN((uint64_t)len, r->left);
        memcpy(r->dst, data, n);
        r->dst += n;
        r->left -= n;
        data += n;
        len -= n;
        r->offset += n;
        if (r->left > 0) break;
        if ((rc = end_record(r)) != 0) return fail(r, rc);
        r->state = R_TAG;
        r->need = 1;
        r->have = 0;
        break;
      }
      case R_END:
        return fail(r, MAYFLY_EPROTO); /* bytes after the end */
      default:
        MF_CHECK(0);
        return MAYFLY_EPROTO;
    }
  }
  return 0;
}

int bs_restore_finish(bs_restore_t *r, uint64_t *applied_cseq) {
  if (r->state == R_FAILED) return r->error;
  if (r->state == R_FINISHED) return 0;
  if (!same_owner(r)) return fail(r, MAYFLY_EMOVED);
  if (r->state != R_END || r->used != r->charge) return fail(r, MAYFLY_EPROTO);
  store_block_t *b = r->b;
  const uint8_t *cdata = r->chain != NULL ? r->chain->data : NULL;
  size_t clen = r->chain != NULL ? r->chain->len : 0;
  if (clen > 0 && r->hook.load == NULL) return fail(r, MAYFLY_EPROTO);
  if (r->hook.load != NULL) {
    int rc = r->hook.load(r->hook.ud, b, cdata, clen);
    if (rc != 0) return fail(r, rc);
  }
  b->range_lo = r->lo;
  b->range_hi = r->hi;
  b->high_wm = r->high_wm;
  b->low_wm = r->low_wm;
  b->sealed = r->sealed;
  drop_partial(r);
  r->state = R_FINISHED;
  if (applied_cseq != NULL) *applied_cseq = r->cseq;
  return 0;
}

uint64_t bs_restore_offset(const bs_restore_t *r) {
  return r->offset;
}

void bs_restore_free(bs_restore_t *r) {
  if (r == NULL) return;
  if (r->state != R_FINISHED && r->state != R_FAILED) {
    drop_partial(r);
    if (same_owner(r)) bs_block_empty(r->s, r->b);
  }
  drop_partial(r);
  g_free(r);
}
