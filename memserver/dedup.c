/*
 * The dedup table and the pending queue of a replicated block (see
 * dedup.h).
 *
 * A table keeps its entries in a hash table by (client id, seq) and, per
 * client, in insertion order; clients are kept least recently active
 * first, so the --dedup-max bound drops the oldest committed entry of the
 * least recently active client. Committed entries of every table of a
 * server are also in the budget's queue, oldest first, which the
 * --dedup-bytes bound drops from.
 */
#include "memserver/dedup.h"

#include <string.h>

#include "common/check.h"
#include "common/error.h"
#include "common/le.h"

struct ms_dedup_client {
  uint64_t id;
  uint64_t acked; /* every seq below has its reply at the client */
  GQueue entries; /* ms_dedup_entry_t *, oldest first */
  GList lru_link; /* in d->clients, least recently active first */
};

struct ms_dedup {
  ms_dedup_budget_t *budget;
  uint32_t max_entries;
  GHashTable *by_key;     /* ms_dedup_entry_t * (key: the entry itself) */
  GHashTable *by_client;  /* client id -> ms_dedup_client_t * */
  GQueue clients;         /* ms_dedup_client_t *, least recently active first */
  uint32_t count;
  uint64_t bytes;
};

static guint entry_hash(gconstpointer p) {
  const ms_dedup_entry_t *e = p;
  uint64_t v = e->client_id * 0x9e3779b97f4a7c15ull ^ e->seq;
  return (guint)(v ^ (v >> 32));
}

static gboolean entry_equal(gconstpointer a, gconstpointer b) {
  const ms_dedup_entry_t *x = a, *y = b;
  return x->client_id == y->client_id && x->seq == y->seq;
}

static guint id_hash(gconstpointer p) {
  uint64_t v = *(const uint64_t *)p;
  return (guint)(v ^ (v >> 32));
}

static gboolean id_equal(gconstpointer a, gconstpointer b) {
  return *(const uint64_t *)a == *(const uint64_t *)b;
}

void ms_dedup_budget_init(ms_dedup_budget_t *bu, uint64_t max_bytes) {
  bu->max_bytes = max_bytes > 0 ? max_bytes : MS_DEDUP_BYTES_DEFAULT;
  bu->bytes = 0;
  g_queue_init(&bu->committed);
}

ms_dedup_t *ms_dedup_new(ms_dedup_budget_t *budget, uint32_t max_entries) {
  ms_dedup_t *d = g_new0(ms_dedup_t, 1);
  d->budget = budget;
  d->max_entries = max_entries > 0 ? max_entries : MS_DEDUP_MAX_DEFAULT;
  d->by_key = g_hash_table_new(entry_hash, entry_equal);
  d->by_client = g_hash_table_new(id_hash, id_equal);
  g_queue_init(&d->clients);
  return d;
}

/* Removes and frees one entry (and its client once it has none left and
 * nothing worth remembering). */
static void drop_entry(ms_dedup_t *d, ms_dedup_entry_t *e) {
  g_hash_table_remove(d->by_key, e);
  g_queue_unlink(&e->client->entries, &e->client_link);
  if (e->committed) g_queue_unlink(&d->budget->committed, &e->budget_link);
  d->count--;
  d->bytes -= e->reply.plen;
  d->budget->bytes -= e->reply.plen;
  g_free(e->reply.payload);
  g_free(e);
}

static void free_client(ms_dedup_t *d, ms_dedup_client_t *c) {
  MF_CHECK(c->entries.length == 0);
  g_hash_table_remove(d->by_client, &c->id);
  g_queue_unlink(&d->clients, &c->lru_link);
  g_free(c);
}

void ms_dedup_free(ms_dedup_t *d) {
  if (d == NULL) return;
  ms_dedup_client_t *c;
  while ((c = g_queue_peek_head(&d->clients)) != NULL) {
    ms_dedup_entry_t *e;
    while ((e = g_queue_peek_head(&c->entries)) != NULL) drop_entry(d, e);
    free_client(d, c);
  }
  g_hash_table_destroy(d->by_key);
  g_hash_table_destroy(d->by_client);
  g_free(d);
}

static ms_dedup_client_t *client_of(ms_dedup_t *d, uint64_t id, int create) {
  ms_dedup_client_t *c = g_hash_table_lookup(d->by_client, &id);
  if (c == NULL && create) {
    c = g_new0(ms_dedup_client_t, 1);
    c->id = id;
    g_queue_init(&c->entries);
    c->lru_link.data = c;
    g_hash_table_insert(d->by_client, &c->id, c);
    g_queue_push_tail_link(&d->clients, &c->lru_link);
  }
  return c;
}

/* The client was active now: it becomes the most recently active. */
static void touch(ms_dedup_t *d, ms_dedup_client_t *c) {
  g_queue_unlink(&d->clients, &c->lru_link);
  g_queue_push_tail_link(&d->clients, &c->lru_link);
}

/* Drops the committed entries of c below its acked (their replies reached
 * the client). */
static void prune_acked(ms_dedup_t *d, ms_dedup_client_t *c) {
  GList *n = c->entries.head;
  while (n != NULL) {
    GList *next = n->next;
    ms_dedup_entry_t *e = n->data;
    if (e->committed && e->seq < c->acked) drop_entry(d, e);
    n = next;
  }
}

/* Keeps the table within max_entries and the budget within max_bytes by
 * dropping committed entries. */
static void enforce(ms_dedup_t *d) {
  for (GList *cl = d->clients.head; cl != NULL && d->count > d->max_entries;) {
    ms_dedup_client_t *c = cl->data;
    GList *next = cl->next;
    for (GList *n = c->entries.head; n != NULL && d->count > d->max_entries;) {
      GList *nn = n->next;
      ms_dedup_entry_t *e = n->data;
      if (e->committed) drop_entry(d, e);
      n = nn;
    }
    cl = next;
  }
  /* Clients with nothing left but their acked are forgotten too, least
   * recently active first, past as many clients as entries. */
  while (d->clients.length > d->max_entries) {
    ms_dedup_client_t *c = d->clients.head->data;
    if (c->entries.length > 0) break;
    free_client(d, c);
  }
  ms_dedup_budget_t *bu = d->budget;
  while (bu->bytes > bu->max_bytes && bu->committed.head != NULL) {
    ms_dedup_entry_t *e = bu->committed.head->data;
    drop_entry(e->table, e);
  }
}

int ms_dedup_find(ms_dedup_t *d, const wire_seq_t *s, ms_dedup_entry_t **out) {
  *out = NULL;
  ms_dedup_client_t *c = client_of(d, s->client_id, 0);
  if (c == NULL) return MS_DEDUP_NEW;
  touch(d, c);
  if (s->acked > c->acked) {
    c->acked = s->acked;
    prune_acked(d, c);
  }
  ms_dedup_entry_t probe = {.client_id = s->client_id, .seq = s->seq};
  ms_dedup_entry_t *e = g_hash_table_lookup(d->by_key, &probe);
  if (e != NULL) {
    *out = e;
    return e->committed ? MS_DEDUP_DONE : MS_DEDUP_PENDING;
  }
  return s->seq < c->acked ? MS_DEDUP_OLD : MS_DEDUP_NEW;
}

ms_dedup_entry_t *ms_dedup_add(ms_dedup_t *d, const wire_seq_t *s, const ms_dedup_reply_t *r,
                               uint64_t cseq) {
  ms_dedup_client_t *c = client_of(d, s->client_id, 1);
  touch(d, c);
  if (s->acked > c->acked) {
    c->acked = s->acked;
    prune_acked(d, c);
  }
  ms_dedup_entry_t probe = {.client_id = s->client_id, .seq = s->seq};
  ms_dedup_entry_t *old = g_hash_table_lookup(d->by_key, &probe);
  if (old != NULL) drop_entry(d, old); /* a member applying a write it already had: the newer */
  ms_dedup_entry_t *e = g_new0(ms_dedup_entry_t, 1);
  e->client_id = s->client_id;
  e->seq = s->seq;
  e->cseq = cseq;
  e->reply = *r;
  e->reply.payload = r->plen > 0 ? g_memdup2(r->payload, r->plen) : NULL;
  e->table = d;
  e->client = c;
  e->client_link.data = e;
  e->budget_link.data = e;
  g_hash_table_add(d->by_key, e);
  g_queue_push_tail_link(&c->entries, &e->client_link);
  d->count++;
  d->bytes += r->plen;
  d->budget->bytes += r->plen;
  return e;
}

void ms_dedup_commit(ms_dedup_t *d, ms_dedup_entry_t *e) {
  if (e->committed) return;
  e->committed = 1;
  g_queue_push_tail_link(&d->budget->committed, &e->budget_link);
  if (e->seq < e->client->acked) {
    drop_entry(d, e);
    return;
  }
  enforce(d);
}

uint32_t ms_dedup_count(const ms_dedup_t *d) {
  return d->count;
}

uint64_t ms_dedup_bytes(const ms_dedup_t *d) {
  return d->bytes;
}

/*
 * Image: u32 version (1), u32 clients; per client: u64 id, u64 acked,
 * u32 entries; per entry: u64 seq, u64 cseq, i32 status, u16 flags,
 * u16 0, u64 arg0, u64 arg1, u32 arg2, u32 plen, plen bytes. Little-endian.
 * Only committed entries are saved (a copy is taken at the tail, where
 * every entry is committed).
 */
#define IMAGE_VERSION 1
#define ENTRY_FIXED 48

static void put32(GByteArray *o, uint32_t v) {
  uint8_t b[4];
  mf_le_put32(b, v);
  g_byte_array_append(o, b, 4);
}

static void put64(GByteArray *o, uint64_t v) {
  uint8_t b[8];
  mf_le_put64(b, v);
  g_byte_array_append(o, b, 8);
}

void ms_dedup_save(const ms_dedup_t *d, GByteArray *out) {
  put32(out, IMAGE_VERSION);
  put32(out, d->clients.length);
  for (GList *cl = d->clients.head; cl != NULL; cl = cl->next) {
    ms_dedup_client_t *c = cl->data;
    uint32_t n = 0;
    for (GList *l = c->entries.head; l != NULL; l = l->next) {
      n += ((ms_dedup_entry_t *)l->data)->committed ? 1 : 0;
    }
    put64(out, c->id);
    put64(out, c->acked);
    put32(out, n);
    for (GList *l = c->entries.head; l != NULL; l = l->next) {
      const ms_dedup_entry_t *e = l->data;
      if (!e->committed) continue;
      put64(out, e->seq);
      put64(out, e->cseq);
      put32(out, (uint32_t)e->reply.status);
      put32(out, e->reply.flags);
      put64(out, e->reply.arg0);
      put64(out, e->reply.arg1);
      put32(out, e->reply.arg2);
      put32(out, e->reply.plen);
      if (e->reply.plen > 0) g_byte_array_append(out, e->reply.payload, e->reply.plen);
    }
  }
}

/* Walks an image; with d NULL only checks it. */
static int walk(ms_dedup_t *d, const uint8_t *buf, size_t len) {
  size_t pos = 0;
  if (len < 8 || mf_le_get32(buf) != IMAGE_VERSION) return MAYFLY_EPROTO;
  uint32_t nclients = mf_le_get32(buf + 4);
  pos = 8;
  for (uint32_t i = 0; i < nclients; i++) {
    if (len - pos < 20) return MAYFLY_EPROTO;
    uint64_t id = mf_le_get64(buf + pos), acked = mf_le_get64(buf + pos + 8);
    uint32_t n = mf_le_get32(buf + pos + 16);
    pos += 20;
    if (d != NULL) {
      /* The client is kept even with no entry: its acked still answers a
       * retry of an older write MS_DEDUP_OLD rather than executing it. */
      ms_dedup_client_t *c = client_of(d, id, 1);
      touch(d, c);
      if (acked > c->acked) {
        c->acked = acked;
        prune_acked(d, c);
      }
    }
    for (uint32_t k = 0; k < n; k++) {
      if (len - pos < ENTRY_FIXED) return MAYFLY_EPROTO;
      const uint8_t *p = buf + pos;
      ms_dedup_reply_t r = {.status = (int32_t)mf_le_get32(p + 16),
                            .flags = (uint16_t)mf_le_get32(p + 20),
                            .arg0 = mf_le_get64(p + 24),
                            .arg1 = mf_le_get64(p + 32),
                            .arg2 = mf_le_get32(p + 40),
                            .plen = mf_le_get32(p + 44)};
      pos += ENTRY_FIXED;
      if (len - pos < r.plen) return MAYFLY_EPROTO;
      r.payload = (uint8_t *)buf + pos;
      pos += r.plen;
      if (d != NULL) {
        wire_seq_t s = {.client_id = id, .seq = mf_le_get64(p), .acked = acked};
        ms_dedup_entry_t *e = ms_dedup_add(d, &s, &r, mf_le_get64(p + 8));
        ms_dedup_commit(d, e);
      }
    }
  }
  return pos == len ? 0 : MAYFLY_EPROTO;
}

int ms_dedup_restore(ms_dedup_t *d, const uint8_t *buf, size_t len) {
  int rc = walk(NULL, buf, len);
  if (rc != 0) return rc;
  rc = walk(d, buf, len);
  /* Clients with no entry were added without a commit: bound them too. */
  enforce(d);
  return rc;
}

/* --- the pending queue --- */

void ms_pending_init(ms_pending_queue_t *pq) {
  g_queue_init(&pq->q);
  pq->bytes = 0;
}

ms_pending_t *ms_pending_new(uint64_t cseq, const uint8_t *frame, size_t len) {
  ms_pending_t *p = g_new0(ms_pending_t, 1);
  p->cseq = cseq;
  p->frame = g_memdup2(frame, len);
  p->len = len;
  p->link.data = p;
  return p;
}

void ms_pending_push(ms_pending_queue_t *pq, ms_pending_t *p) {
  MF_CHECK(pq->q.tail == NULL || ((ms_pending_t *)pq->q.tail->data)->cseq < p->cseq);
  g_queue_push_tail_link(&pq->q, &p->link);
  pq->bytes += p->len;
}

ms_pending_t *ms_pending_find(ms_pending_queue_t *pq, uint64_t cseq) {
  /* Acknowledgements come mostly in order: look from the oldest. */
  for (GList *n = pq->q.head; n != NULL; n = n->next) {
    ms_pending_t *p = n->data;
    if (p->cseq == cseq) return p;
    if (p->cseq > cseq) break;
  }
  return NULL;
}

void ms_pending_remove(ms_pending_queue_t *pq, ms_pending_t *p) {
  g_queue_unlink(&pq->q, &p->link);
  pq->bytes -= p->len;
}

void ms_pending_free(ms_pending_t *p) {
  if (p == NULL) return;
  MF_CHECK(p->waiters == NULL);
  g_free(p->frame);
  g_free(p->ev_key);
  g_free(p);
}

void ms_pending_unsend(ms_pending_queue_t *pq) {
  for (GList *n = pq->q.head; n != NULL; n = n->next) ((ms_pending_t *)n->data)->sent_succ = 0;
}

guint ms_pending_count(const ms_pending_queue_t *pq) {
  return pq->q.length;
}
