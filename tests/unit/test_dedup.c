/*
 * Unit tests for memserver/dedup.c: a replicated block's dedup table and
 * its pending queue.
 *
 * The table: a new write is NEW; once added it is PENDING until committed,
 * then DONE with its stored reply (payload included); seqs below the
 * client's acked are dropped and answered OLD; --dedup-max drops the oldest
 * committed entry of the least recently active client and never a pending
 * one; --dedup-bytes (shared by the tables of a server) drops the oldest
 * committed entries; the save/restore image round-trips and a truncated
 * image is refused; a client with only its acked survives a restore (and
 * bare clients past the entry bound are forgotten). The queue: cseq order,
 * lookup, removal, unsend.
 */
#include <glib.h>
#include <string.h>

#include "common/error.h"
#include "memserver/dedup.h"
#include "mf_test.h"

static ms_dedup_reply_t reply_of(int32_t status, const char *payload) {
  ms_dedup_reply_t r = {.status = status, .flags = 3, .arg0 = 11, .arg1 = 22, .arg2 = 33};
  r.plen = payload != NULL ? (uint32_t)strlen(payload) : 0;
  r.payload = (uint8_t *)payload;
  return r;
}

static wire_seq_t seq_of(uint64_t client, uint64_t seq, uint64_t acked) {
  return (wire_seq_t){.client_id = client, .seq = seq, .acked = acked};
}

static void test_a_write_is_new_then_pending_then_done(void) {
  ms_dedup_budget_t bu;
  ms_dedup_budget_init(&bu, 0);
  ms_dedup_t *d = ms_dedup_new(&bu, 0);
  wire_seq_t s = seq_of(7, 1, 1);
  ms_dedup_entry_t *e = NULL;
  MF_ASSERT_EQ(ms_dedup_find(d, &s, &e), MS_DEDUP_NEW);
  CU_ASSERT_PTR_NULL(e);
  ms_dedup_reply_t r = reply_of(0, "item");
  ms_dedup_entry_t *added = ms_dedup_add(d, &s, &r, 5);
  MF_ASSERT_EQ(ms_dedup_find(d, &s, &e), MS_DEDUP_PENDING);
  CU_ASSERT_PTR_EQUAL(e, added);
  MF_ASSERT_EQ(e->cseq, 5);
  ms_dedup_commit(d, added);
  MF_ASSERT_EQ(ms_dedup_find(d, &s, &e), MS_DEDUP_DONE);
  MF_ASSERT_EQ(e->reply.status, 0);
  MF_ASSERT_EQ(e->reply.flags, 3);
  MF_ASSERT_EQ(e->reply.arg0, 11);
  MF_ASSERT_EQ(e->reply.arg1, 22);
  MF_ASSERT_EQ(e->reply.arg2, 33);
  MF_ASSERT_EQ(e->reply.plen, 4);
  CU_ASSERT_EQUAL(memcmp(e->reply.payload, "item", 4), 0);
  /* Another client's same seq is another write. */
  wire_seq_t other = seq_of(8, 1, 1);
  MF_ASSERT_EQ(ms_dedup_find(d, &other, &e), MS_DEDUP_NEW);
  MF_ASSERT_EQ(ms_dedup_count(d), 1);
  MF_ASSERT_EQ(ms_dedup_bytes(d), 4);
  MF_ASSERT_EQ(bu.bytes, 4);
  ms_dedup_free(d);
  MF_ASSERT_EQ(bu.bytes, 0);
}

static void test_acked_drops_committed_entries_below_it(void) {
  ms_dedup_budget_t bu;
  ms_dedup_budget_init(&bu, 0);
  ms_dedup_t *d = ms_dedup_new(&bu, 0);
  for (uint64_t q = 1; q <= 10; q++) {
    wire_seq_t s = seq_of(7, q, 1);
    ms_dedup_reply_t r = reply_of(0, NULL);
    ms_dedup_entry_t *e = ms_dedup_add(d, &s, &r, q);
    if (q != 4) ms_dedup_commit(d, e); /* 4 stays pending */
  }
  MF_ASSERT_EQ(ms_dedup_count(d), 10);
  /* The client says it has every reply below 6. */
  wire_seq_t s = seq_of(7, 11, 6);
  ms_dedup_entry_t *e = NULL;
  MF_ASSERT_EQ(ms_dedup_find(d, &s, &e), MS_DEDUP_NEW);
  MF_ASSERT_EQ(ms_dedup_count(d), 6); /* 4 (pending), 6..10 */
  s = seq_of(7, 2, 6);
  MF_ASSERT_EQ(ms_dedup_find(d, &s, &e), MS_DEDUP_OLD);
  s = seq_of(7, 4, 6);
  MF_ASSERT_EQ(ms_dedup_find(d, &s, &e), MS_DEDUP_PENDING);
  ms_dedup_commit(d, e); /* committed below acked: dropped at once */
  MF_ASSERT_EQ(ms_dedup_count(d), 5);
  s = seq_of(7, 6, 6);
  MF_ASSERT_EQ(ms_dedup_find(d, &s, &e), MS_DEDUP_DONE);
  ms_dedup_free(d);
}

static void test_the_entry_bound_drops_the_least_recent_clients_oldest_committed(void) {
  ms_dedup_budget_t bu;
  ms_dedup_budget_init(&bu, 0);
  ms_dedup_t *d = ms_dedup_new(&bu, 4);
  ms_dedup_reply_t r = reply_of(0, NULL);
  /* Client 1: seq 1 pending, seq 2 committed; client 2: seq 1, 2 committed. */
  wire_seq_t s = seq_of(1, 1, 1);
  ms_dedup_add(d, &s, &r, 1);
  s = seq_of(1, 2, 1);
  ms_dedup_commit(d, ms_dedup_add(d, &s, &r, 2));
  s = seq_of(2, 1, 1);
  ms_dedup_commit(d, ms_dedup_add(d, &s, &r, 3));
  s = seq_of(2, 2, 1);
  ms_dedup_commit(d, ms_dedup_add(d, &s, &r, 4));
  MF_ASSERT_EQ(ms_dedup_count(d), 4);
  /* A fifth entry from client 2: client 1 is the least recently active;
   * its oldest committed entry (seq 2) goes, never its pending seq 1. */
  s = seq_of(2, 3, 1);
  ms_dedup_commit(d, ms_dedup_add(d, &s, &r, 5));
  MF_ASSERT_EQ(ms_dedup_count(d), 4);
  ms_dedup_entry_t *e = NULL;
  s = seq_of(1, 1, 1);
  MF_ASSERT_EQ(ms_dedup_find(d, &s, &e), MS_DEDUP_PENDING);
  s = seq_of(1, 2, 1);
  MF_ASSERT_EQ(ms_dedup_find(d, &s, &e), MS_DEDUP_NEW);
  /* Client 1 has only its pending entry left, so the next entry over the
   * bound takes client 2's oldest committed one. */
  s = seq_of(2, 4, 1);
  ms_dedup_commit(d, ms_dedup_add(d, &s, &r, 6));
  s = seq_of(2, 1, 1);
  MF_ASSERT_EQ(ms_dedup_find(d, &s, &e), MS_DEDUP_NEW);
  s = seq_of(2, 4, 1);
  MF_ASSERT_EQ(ms_dedup_find(d, &s, &e), MS_DEDUP_DONE);
  MF_ASSERT_EQ(ms_dedup_count(d), 4);
  ms_dedup_free(d);
}

static void test_the_byte_budget_is_shared_and_drops_oldest_committed(void) {
  ms_dedup_budget_t bu;
  ms_dedup_budget_init(&bu, 10);
  ms_dedup_t *a = ms_dedup_new(&bu, 0), *b = ms_dedup_new(&bu, 0);
  ms_dedup_reply_t r = reply_of(0, "abcd"); /* 4 bytes each */
  wire_seq_t s = seq_of(1, 1, 1);
  ms_dedup_commit(a, ms_dedup_add(a, &s, &r, 1));
  s = seq_of(1, 2, 1);
  ms_dedup_commit(b, ms_dedup_add(b, &s, &r, 1));
  MF_ASSERT_EQ(bu.bytes, 8);
  s = seq_of(1, 3, 1);
  ms_dedup_commit(b, ms_dedup_add(b, &s, &r, 2)); /* 12 > 10: a's entry, the oldest, goes */
  MF_ASSERT_EQ(bu.bytes, 8);
  MF_ASSERT_EQ(ms_dedup_count(a), 0);
  MF_ASSERT_EQ(ms_dedup_count(b), 2);
  /* Pending entries are never dropped for bytes. */
  s = seq_of(1, 4, 1);
  ms_dedup_add(a, &s, &r, 2);
  s = seq_of(1, 5, 1);
  ms_dedup_add(a, &s, &r, 3);
  MF_ASSERT_EQ(ms_dedup_count(a), 2);
  MF_ASSERT_EQ(bu.bytes, 16);
  ms_dedup_free(a);
  ms_dedup_free(b);
  MF_ASSERT_EQ(bu.bytes, 0);
}

static void test_the_image_round_trips_and_a_truncated_one_is_refused(void) {
  ms_dedup_budget_t bu;
  ms_dedup_budget_init(&bu, 0);
  ms_dedup_t *d = ms_dedup_new(&bu, 0);
  ms_dedup_reply_t r = reply_of(0, "popped item");
  wire_seq_t s = seq_of(5, 3, 2);
  ms_dedup_commit(d, ms_dedup_add(d, &s, &r, 9));
  r = reply_of(MAYFLY_ENOKEY, NULL);
  s = seq_of(6, 1, 1);
  ms_dedup_commit(d, ms_dedup_add(d, &s, &r, 10));
  s = seq_of(6, 2, 1);
  ms_dedup_add(d, &s, &r, 11); /* pending: not in the image */
  GByteArray *img = g_byte_array_new();
  ms_dedup_save(d, img);
  ms_dedup_t *e = ms_dedup_new(&bu, 0);
  MF_ASSERT_EQ(ms_dedup_restore(e, img->data, img->len - 1), MAYFLY_EPROTO);
  MF_ASSERT_EQ(ms_dedup_count(e), 0);
  MF_ASSERT_EQ(ms_dedup_restore(e, img->data, img->len), 0);
  MF_ASSERT_EQ(ms_dedup_count(e), 2);
  ms_dedup_entry_t *x = NULL;
  s = seq_of(5, 3, 2);
  MF_ASSERT_EQ(ms_dedup_find(e, &s, &x), MS_DEDUP_DONE);
  MF_ASSERT_EQ(x->cseq, 9);
  MF_ASSERT_EQ(x->reply.plen, 11);
  CU_ASSERT_EQUAL(memcmp(x->reply.payload, "popped item", 11), 0);
  s = seq_of(5, 1, 2); /* below the client's acked, which the image kept */
  MF_ASSERT_EQ(ms_dedup_find(e, &s, &x), MS_DEDUP_OLD);
  s = seq_of(6, 1, 1);
  MF_ASSERT_EQ(ms_dedup_find(e, &s, &x), MS_DEDUP_DONE);
  MF_ASSERT_EQ(x->reply.status, MAYFLY_ENOKEY);
  s = seq_of(6, 2, 1);
  MF_ASSERT_EQ(ms_dedup_find(e, &s, &x), MS_DEDUP_NEW);
  g_byte_array_free(img, TRUE);
  ms_dedup_free(d);
  ms_dedup_free(e);
}

/* Found by fuzz_dedup: a client whose entries were all pruned by its acked
 * is in the image with no entry; the restore must keep it (and its acked),
 * or a retry of an old write would execute again on the new member. */
static void test_a_client_with_only_its_acked_survives_a_restore(void) {
  ms_dedup_budget_t bu;
  ms_dedup_budget_init(&bu, 0);
  ms_dedup_t *d = ms_dedup_new(&bu, 4);
  ms_dedup_reply_t r = reply_of(0, "x");
  for (uint64_t q = 1; q <= 3; q++) {
    wire_seq_t s = seq_of(4, q, 1);
    ms_dedup_commit(d, ms_dedup_add(d, &s, &r, q));
  }
  wire_seq_t s = seq_of(4, 9, 9); /* the client has every reply below 9 */
  ms_dedup_entry_t *x = NULL;
  MF_ASSERT_EQ(ms_dedup_find(d, &s, &x), MS_DEDUP_NEW);
  MF_ASSERT_EQ(ms_dedup_count(d), 0);
  GByteArray *img = g_byte_array_new();
  ms_dedup_save(d, img);
  ms_dedup_t *e = ms_dedup_new(&bu, 4);
  MF_ASSERT_EQ(ms_dedup_restore(e, img->data, img->len), 0);
  s = seq_of(4, 2, 0);
  MF_ASSERT_EQ(ms_dedup_find(e, &s, &x), MS_DEDUP_OLD);
  GByteArray *again = g_byte_array_new();
  ms_dedup_save(e, again);
  MF_ASSERT_EQ(again->len, img->len);
  CU_ASSERT_EQUAL(memcmp(again->data, img->data, img->len), 0);
  /* Bare clients past the entry bound are forgotten, least recently
   * active first: an image of six keeps the last four. */
  GByteArray *six = g_byte_array_new();
  uint8_t b[20] = {0};
  b[0] = 1;
  b[4] = 6;
  g_byte_array_append(six, b, 8);
  for (uint8_t c = 1; c <= 6; c++) {
    memset(b, 0, sizeof b);
    b[0] = c; /* id */
    b[8] = 5; /* acked */
    g_byte_array_append(six, b, 20);
  }
  ms_dedup_t *f = ms_dedup_new(&bu, 4);
  MF_ASSERT_EQ(ms_dedup_restore(f, six->data, six->len), 0);
  g_byte_array_set_size(again, 0);
  ms_dedup_save(f, again);
  MF_ASSERT_EQ(again->len, 8 + 4 * 20);
  MF_ASSERT_EQ(again->data[4], 4);
  MF_ASSERT_EQ(again->data[8], 3); /* the first kept is client 3 */
  s = seq_of(6, 1, 0);
  MF_ASSERT_EQ(ms_dedup_find(f, &s, &x), MS_DEDUP_OLD);
  s = seq_of(1, 1, 0);
  MF_ASSERT_EQ(ms_dedup_find(f, &s, &x), MS_DEDUP_NEW);
  g_byte_array_free(six, TRUE);
  g_byte_array_free(again, TRUE);
  g_byte_array_free(img, TRUE);
  ms_dedup_free(d);
  ms_dedup_free(e);
  ms_dedup_free(f);
}

static void test_the_pending_queue_keeps_cseq_order(void) {
  ms_pending_queue_t pq;
  ms_pending_init(&pq);
  uint8_t frame[100] = {0};
  for (uint64_t c = 1; c <= 5; c++) {
    ms_pending_t *p = ms_pending_new(c, frame, 10 * c);
    p->sent_succ = 1;
    ms_pending_push(&pq, p);
  }
  MF_ASSERT_EQ(ms_pending_count(&pq), 5);
  MF_ASSERT_EQ(pq.bytes, 150);
  ms_pending_t *p = ms_pending_find(&pq, 3);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  MF_ASSERT_EQ(p->len, 30);
  CU_ASSERT_PTR_NULL(ms_pending_find(&pq, 9));
  ms_pending_remove(&pq, p);
  ms_pending_free(p);
  CU_ASSERT_PTR_NULL(ms_pending_find(&pq, 3));
  MF_ASSERT_EQ(pq.bytes, 120);
  ms_pending_unsend(&pq);
  uint64_t last = 0;
  for (GList *n = pq.q.head; n != NULL; n = n->next) {
    ms_pending_t *x = n->data;
    MF_ASSERT_EQ(x->sent_succ, 0);
    CU_ASSERT(x->cseq > last);
    last = x->cseq;
  }
  while ((p = g_queue_peek_head(&pq.q)) != NULL) {
    ms_pending_remove(&pq, p);
    ms_pending_free(p);
  }
  MF_ASSERT_EQ(pq.bytes, 0);
}

int main(void) {
  static const mf_test_t tests[] = {
      {"a write is new, then pending, then done", test_a_write_is_new_then_pending_then_done},
      {"acked drops committed entries below it", test_acked_drops_committed_entries_below_it},
      {"the entry bound drops the least recent client's oldest committed",
       test_the_entry_bound_drops_the_least_recent_clients_oldest_committed},
      {"the byte budget is shared and drops the oldest committed",
       test_the_byte_budget_is_shared_and_drops_oldest_committed},
      {"the image round-trips and a truncated one is refused",
       test_the_image_round_trips_and_a_truncated_one_is_refused},
      {"a client with only its acked survives a restore",
       test_a_client_with_only_its_acked_survives_a_restore},
      {"the pending queue keeps cseq order", test_the_pending_queue_keeps_cseq_order},
      {NULL, NULL}};
  return mf_test_run("dedup", NULL, NULL, tests);
}
