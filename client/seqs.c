/*
 * Write sequence numbers of one client and their acked watermark (see
 * seqs.h).
 */
#include "client/seqs.h"

#include "common/auth.h"
#include "common/check.h"

void mf_seqs_init(mf_seqs_t *s) {
  g_mutex_init(&s->lock);
  /* Two clients must not share an id (their seqs would collide in the
   * heads' dedup tables): libsodium's randomness, GLib's when libsodium
   * cannot start. */
  int sodium = mf_auth_init() == 0;
  do {
    if (sodium) {
      mf_auth_random(&s->client_id, sizeof s->client_id);
    } else {
      s->client_id = (uint64_t)g_random_int() << 32 | g_random_int();
    }
  } while (s->client_id == 0);
  s->next = 1;
  s->low = 1;
  s->ended = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
}

void mf_seqs_clear(mf_seqs_t *s) {
  if (s->ended != NULL) g_hash_table_destroy(s->ended);
  s->ended = NULL;
  g_mutex_clear(&s->lock);
}

uint64_t mf_seqs_begin(mf_seqs_t *s, size_t n) {
  MF_CHECK(n >= 1);
  g_mutex_lock(&s->lock);
  uint64_t first = s->next;
  s->next += n;
  g_mutex_unlock(&s->lock);
  return first;
}

void mf_seqs_end(mf_seqs_t *s, uint64_t seq) {
  if (seq == 0) return;
  g_mutex_lock(&s->lock);
  MF_CHECK(seq >= s->low && seq < s->next);
  if (seq == s->low) {
    /* The lowest one in flight: the watermark moves past it and past every
     * seq above it that ended before it. */
    s->low++;
    while (s->low < s->next && g_hash_table_remove(s->ended, &s->low)) s->low++;
  } else {
    uint64_t *k = g_new(uint64_t, 1);
    *k = seq;
    gboolean fresh = g_hash_table_add(s->ended, k);
    MF_CHECK(fresh);
  }
  g_mutex_unlock(&s->lock);
}

uint64_t mf_seqs_acked(mf_seqs_t *s) {
  g_mutex_lock(&s->lock);
  uint64_t low = s->low;
  g_mutex_unlock(&s->lock);
  return low;
}

void mf_seqs_record(mf_seqs_t *s, uint64_t seq, uint8_t out[WIRE_SEQ_SIZE]) {
  wire_seq_t r = {.client_id = s->client_id, .seq = seq, .acked = mf_seqs_acked(s)};
  wire_seq_put(out, &r);
}
