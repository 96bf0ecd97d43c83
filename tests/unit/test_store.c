/*
 * Unit tests for memserver/store.c, file.c, queue.c, kv.c: the block store
 * of a memory server.
 *
 * What the server and its clients rely on. Ownership: a block serves exactly
 * the generation the directory confirmed; an older one is stale (EMOVED), a
 * newer one must be confirmed first (EAGAIN), a request for another kind is
 * refused (EKIND), and after a release nothing of the old owner is served or
 * shows through to the next one. File segments hold bytes [0, block_size)
 * byte-exact and refuse, untouched, a write that would not fit. Queue
 * segments are FIFO, and seal themselves once an item does not fit so that
 * order holds across segments. kv partitions store binary keys and values
 * and never charge more than the block holds: a put that does not fit is
 * refused and the old value stays. A kv repartition moves every entry of its
 * slots to exactly one block and keeps them charged to the source until the
 * commit; migrated records are all checked before any is stored. A file
 * segment truncated and extended again reads zeros where the cut bytes were.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <glib.h>
#include <malloc.h>
#include <stdbool.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/error.h"
#include "common/wire.h"
#include "memserver/store.h"
#include "mf_test.h"

#define BS 4096u    /* block size of most tests */
#define NBLOCKS 4   /* blocks in the test store */
#define ALL_SLOTS 0, 65536

static const store_kind_t kinds[] = {STORE_FILE, STORE_QUEUE, STORE_KV};

/* The store's kv calls with the key's hash, which the server computes once
 * per request (wire_kv_hash). vlen may be NULL. */
static int kv_put(store_t *s, store_block_t *b, const void *key, uint32_t klen, const void *val,
                  uint64_t vlen) {
  return store_kv_put(s, b, wire_kv_hash(key, klen), key, klen, val, vlen);
}

static const uint8_t *kv_get_in(GHashTable *kv, const void *key, uint32_t klen, uint32_t *vlen) {
  uint32_t n = 0;
  const uint8_t *v = store_kv_get_in(kv, wire_kv_hash(key, klen), key, klen, &n);
  if (vlen != NULL) *vlen = n;
  return v;
}

static const uint8_t *kv_get(const store_block_t *b, const void *key, uint32_t klen,
                             uint32_t *vlen) {
  return kv_get_in(b->kv, key, klen, vlen);
}

static int kv_del(store_block_t *b, const void *key, uint32_t klen) {
  return store_kv_del(b, wire_kv_hash(key, klen), key, klen);
}

/* A fresh store of NBLOCKS blocks of BS bytes. */
static void fresh(store_t *s) {
  MF_ASSERT_EQ(store_init(s, NBLOCKS, BS), 0);
  MF_ASSERT_EQ(s->nblocks, NBLOCKS);
  MF_ASSERT_EQ(s->block_size, BS);
  MF_ASSERT_EQ(s->blocks_in_use, 0);
}

/* Adopts (index, generation) as kind over all kv slots and returns the block
 * store_lookup finds for it. */
static store_block_t *own(store_t *s, int32_t index, int64_t gen, store_kind_t kind) {
  store_adopt(s, index, gen, kind, ALL_SLOTS);
  store_block_t *b = NULL;
  MF_ASSERT_EQ(store_lookup(s, (uint32_t)index, (uint64_t)gen, kind, &b), 0);
  CU_ASSERT_PTR_EQUAL_FATAL(b, &s->blocks[index]);
  return b;
}

static int lookup(store_t *s, uint32_t index, uint64_t gen, store_kind_t kind) {
  store_block_t *b = NULL;
  return store_lookup(s, index, gen, kind, &b);
}

/* Stores "hello" in a block of any kind, the way its kind stores data. */
static void put_hello(store_t *s, store_block_t *b) {
  switch (b->kind) {
    case STORE_FILE:
      MF_ASSERT_EQ(store_file_write(s, b, 0, "hello", 5), 0);
      break;
    case STORE_QUEUE:
      MF_ASSERT_EQ(store_queue_push(s, b, "hello", 5), 0);
      break;
    case STORE_KV:
      MF_ASSERT_EQ(kv_put(s, b, "k", 1, "hello", 5), 0);
      break;
    default:
      CU_FAIL("no such kind");
  }
}

/* Whether the block holds the "hello" put_hello stored (and nothing else). */
static int has_hello(store_block_t *b) {
  switch (b->kind) {
    case STORE_FILE: {
      const uint8_t *d = NULL;
      return b->size == 5 && store_file_read(b, 0, 100, &d) == 5 && memcmp(d, "hello", 5) == 0;
    }
    case STORE_QUEUE: {
      const store_item_t *it = store_queue_peek(b);
      return it != NULL && g_queue_get_length(b->items) == 1 && it->len == 5 &&
             memcmp(it->data, "hello", 5) == 0;
    }
    case STORE_KV: {
      uint32_t n = 0;
      const uint8_t *d = kv_get(b, "k", 1, &n);
      return d != NULL && g_hash_table_size(b->kv) == 1 && n == 5 && memcmp(d, "hello", 5) == 0;
    }
    default:
      return 0;
  }
}

/* Whether the block is owned and holds nothing. */
static int is_empty(store_block_t *b) {
  if (b->used != 0) return 0;
  switch (b->kind) {
    case STORE_FILE: {
      const uint8_t *d = NULL;
      return b->size == 0 && store_file_read(b, 0, BS, &d) == 0;
    }
    case STORE_QUEUE:
      return store_queue_peek(b) == NULL && g_queue_get_length(b->items) == 0 && !b->sealed;
    case STORE_KV:
      return g_hash_table_size(b->kv) == 0 && kv_get(b, "k", 1, NULL) == NULL;
    default:
      return 0;
  }
}

/* --- ownership, for every kind --- */

static void test_index_out_of_range_is_invalid(void) {
  store_t s;
  fresh(&s);
  for (size_t k = 0; k < G_N_ELEMENTS(kinds); k++) {
    MF_ASSERT_EQ(lookup(&s, NBLOCKS, 1, kinds[k]), MAYFLY_EINVAL);
    MF_ASSERT_EQ(lookup(&s, UINT32_MAX, 1, kinds[k]), MAYFLY_EINVAL);
    MF_ASSERT_EQ(lookup(&s, 0x80000000u, 1, kinds[k]), MAYFLY_EINVAL);
  }
  MF_ASSERT_EQ(lookup(&s, NBLOCKS, 1, STORE_FREE), MAYFLY_EINVAL);
  /* Adopting or releasing a block that does not exist changes nothing. */
  store_adopt(&s, NBLOCKS, 1, STORE_FILE, ALL_SLOTS);
  store_adopt(&s, -1, 1, STORE_FILE, ALL_SLOTS);
  MF_ASSERT_EQ(store_release(&s, NBLOCKS, 1), 0);
  MF_ASSERT_EQ(store_release(&s, -1, 1), 0);
  MF_ASSERT_EQ(s.blocks_in_use, 0);
  store_free(&s);
}

static void test_unconfirmed_generation_must_be_confirmed_first(void) {
  store_t s;
  fresh(&s);
  for (size_t k = 0; k < G_N_ELEMENTS(kinds); k++) {
    MF_ASSERT_EQ(lookup(&s, 0, 1, kinds[k]), MAYFLY_EAGAIN);
    MF_ASSERT_EQ(lookup(&s, NBLOCKS - 1, 1000, kinds[k]), MAYFLY_EAGAIN);
    /* Generation 0 names no owner: nothing to serve. */
    MF_ASSERT_EQ(lookup(&s, 0, 0, kinds[k]), MAYFLY_EMOVED);
  }
  store_free(&s);
}

static void test_adopted_generation_is_served_and_others_are_not(void) {
  for (size_t k = 0; k < G_N_ELEMENTS(kinds); k++) {
    store_t s;
    fresh(&s);
    store_block_t *b = own(&s, 1, 5, kinds[k]);
    MF_ASSERT_EQ(b->kind, kinds[k]);
    MF_ASSERT_EQ(b->generation, 5);
    MF_ASSERT_EQ(b->index, 1);
    CU_ASSERT(is_empty(b));
    MF_ASSERT_EQ(s.blocks_in_use, 1);
    MF_ASSERT_EQ(s.max_generation, 5);

    MF_ASSERT_EQ(lookup(&s, 1, 4, kinds[k]), MAYFLY_EMOVED);
    MF_ASSERT_EQ(lookup(&s, 1, 1, kinds[k]), MAYFLY_EMOVED);
    MF_ASSERT_EQ(lookup(&s, 1, 6, kinds[k]), MAYFLY_EAGAIN);
    for (size_t o = 0; o < G_N_ELEMENTS(kinds); o++) {
      if (o != k) MF_ASSERT_EQ(lookup(&s, 1, 5, kinds[o]), MAYFLY_EKIND);
    }
    /* STORE_FREE as the expected kind accepts whatever the block holds. */
    store_block_t *any = NULL;
    MF_ASSERT_EQ(store_lookup(&s, 1, 5, STORE_FREE, &any), 0);
    CU_ASSERT_PTR_EQUAL(any, b);
    /* The other blocks know nothing of generation 5. */
    MF_ASSERT_EQ(lookup(&s, 0, 5, kinds[k]), MAYFLY_EAGAIN);
    MF_ASSERT_EQ(lookup(&s, 2, 5, kinds[k]), MAYFLY_EAGAIN);

    /* A generation above INT64_MAX read off the wire is not newer. */
    MF_ASSERT_EQ(lookup(&s, 1, UINT64_MAX, kinds[k]), MAYFLY_EMOVED);
    store_free(&s);
  }
}

static void test_release_makes_the_generation_stale(void) {
  for (size_t k = 0; k < G_N_ELEMENTS(kinds); k++) {
    store_t s;
    fresh(&s);
    store_block_t *b = own(&s, 2, 5, kinds[k]);
    put_hello(&s, b);
    CU_ASSERT(has_hello(b));

    MF_ASSERT_EQ(store_release(&s, 2, 5), 1);
    MF_ASSERT_EQ(s.blocks_in_use, 0);
    MF_ASSERT_EQ(lookup(&s, 2, 5, kinds[k]), MAYFLY_EMOVED);
    MF_ASSERT_EQ(lookup(&s, 2, 5, STORE_FREE), MAYFLY_EMOVED);
    MF_ASSERT_EQ(lookup(&s, 2, 4, kinds[k]), MAYFLY_EMOVED);
    MF_ASSERT_EQ(lookup(&s, 2, 6, kinds[k]), MAYFLY_EAGAIN);
    MF_ASSERT_EQ(b->used, 0);
    /* Releasing again drops nothing more. */
    MF_ASSERT_EQ(store_release(&s, 2, 5), 0);
    MF_ASSERT_EQ(s.blocks_in_use, 0);

    /* The next owner starts empty. */
    b = own(&s, 2, 6, kinds[k]);
    CU_ASSERT(is_empty(b));
    MF_ASSERT_EQ(s.blocks_in_use, 1);
    store_free(&s);
  }
}

static void test_release_of_a_generation_never_adopted_makes_it_stale(void) {
  /* The directory may release a generation this server never saw a request
   * for: requests that arrive late for it are stale, not "confirm first". */
  store_t s;
  fresh(&s);
  MF_ASSERT_EQ(store_release(&s, 0, 7), 0);
  MF_ASSERT_EQ(lookup(&s, 0, 7, STORE_KV), MAYFLY_EMOVED);
  MF_ASSERT_EQ(lookup(&s, 0, 6, STORE_KV), MAYFLY_EMOVED);
  MF_ASSERT_EQ(lookup(&s, 0, 8, STORE_KV), MAYFLY_EAGAIN);
  MF_ASSERT_EQ(s.max_generation, 7);
  store_free(&s);
}

static void test_release_of_an_older_generation_keeps_the_owner(void) {
  for (size_t k = 0; k < G_N_ELEMENTS(kinds); k++) {
    store_t s;
    fresh(&s);
    store_block_t *b = own(&s, 0, 5, kinds[k]);
    put_hello(&s, b);
    MF_ASSERT_EQ(store_release(&s, 0, 4), 0);
    MF_ASSERT_EQ(lookup(&s, 0, 5, kinds[k]), 0);
    CU_ASSERT(has_hello(b));
    MF_ASSERT_EQ(s.blocks_in_use, 1);
    store_free(&s);
  }
}

static void test_adopt_of_an_older_generation_is_ignored(void) {
  for (size_t k = 0; k < G_N_ELEMENTS(kinds); k++) {
    store_kind_t other = kinds[(k + 1) % G_N_ELEMENTS(kinds)];
    store_t s;
    fresh(&s);
    store_block_t *b = own(&s, 3, 5, kinds[k]);
    put_hello(&s, b);

    store_adopt(&s, 3, 4, other, ALL_SLOTS);
    MF_ASSERT_EQ(b->kind, kinds[k]);
    MF_ASSERT_EQ(b->generation, 5);
    MF_ASSERT_EQ(lookup(&s, 3, 5, kinds[k]), 0);
    MF_ASSERT_EQ(lookup(&s, 3, 4, other), MAYFLY_EMOVED);
    CU_ASSERT(has_hello(b));

    /* A second confirmation of the current owner (two requests raced to
     * the directory) keeps its data. */
    store_adopt(&s, 3, 5, kinds[k], ALL_SLOTS);
    CU_ASSERT(has_hello(b));
    MF_ASSERT_EQ(s.blocks_in_use, 1);

    /* After a release, an older generation stays refused too. */
    MF_ASSERT_EQ(store_release(&s, 3, 5), 1);
    store_adopt(&s, 3, 4, kinds[k], ALL_SLOTS);
    MF_ASSERT_EQ(lookup(&s, 3, 4, kinds[k]), MAYFLY_EMOVED);
    MF_ASSERT_EQ(s.blocks_in_use, 0);
    store_free(&s);
  }
}

static void test_a_newer_owner_replaces_the_old_one_empty(void) {
  /* Adopting a newer generation over a live owner (the directory freed and
   * reallocated the block while this server missed the release) drops the
   * old contents, whatever the old and the new kind. */
  for (size_t k = 0; k < G_N_ELEMENTS(kinds); k++) {
    for (size_t n = 0; n < G_N_ELEMENTS(kinds); n++) {
      store_t s;
      fresh(&s);
      store_block_t *b = own(&s, 1, 1, kinds[k]);
      put_hello(&s, b);
      b = own(&s, 1, 2, kinds[n]);
      MF_ASSERT_EQ(b->kind, kinds[n]);
      CU_ASSERT(is_empty(b));
      MF_ASSERT_EQ(lookup(&s, 1, 1, kinds[k]), MAYFLY_EMOVED);
      MF_ASSERT_EQ(s.blocks_in_use, 1);
      store_free(&s);
    }
  }
}

/* Regression: the wait after a refused repartition (10 s for a merge the
 * directory refuses for good) outlived its owner, so the next namespace
 * given the block could not split it for that long and its puts, held
 * until a split made room, timed out. A new owner, by release then adopt
 * or by adopting over the old one, starts with no wait and no refusal. */
static void test_a_new_owner_starts_with_no_repartition_wait(void) {
  for (int released = 0; released < 2; released++) {
    store_t s;
    fresh(&s);
    store_block_t *b = own(&s, 2, 1, STORE_KV);
    b->rp_retry_ms = b->rp_merge_retry_ms = INT64_MAX;
    b->rp_refused = MAYFLY_EQUOTA;
    if (released) MF_ASSERT_EQ(store_release(&s, 2, 1), 1);
    b = own(&s, 2, 2, STORE_KV);
    MF_ASSERT_EQ(b->rp_retry_ms, 0);
    MF_ASSERT_EQ(b->rp_merge_retry_ms, 0);
    MF_ASSERT_EQ(b->rp_refused, 0);
    MF_ASSERT_EQ(b->rp_state, STORE_RP_IDLE);
    store_free(&s);
  }
}

static void test_counts_blocks_in_use_and_the_highest_generation(void) {
  store_t s;
  fresh(&s);
  own(&s, 0, 3, STORE_FILE);
  own(&s, 1, 9, STORE_QUEUE);
  own(&s, 2, 4, STORE_KV);
  MF_ASSERT_EQ(s.blocks_in_use, 3);
  MF_ASSERT_EQ(s.max_generation, 9);
  own(&s, 0, 5, STORE_KV); /* replaces an owner: still 3 in use */
  MF_ASSERT_EQ(s.blocks_in_use, 3);
  MF_ASSERT_EQ(store_release(&s, 1, 9), 1);
  MF_ASSERT_EQ(s.blocks_in_use, 2);
  MF_ASSERT_EQ(s.max_generation, 9);
  MF_ASSERT_EQ(store_release(&s, 3, 12), 0);
  MF_ASSERT_EQ(s.max_generation, 12);
  MF_ASSERT_EQ(s.blocks_in_use, 2);
  store_free(&s);
  /* store_free twice (or on a zeroed store) is harmless. */
  store_free(&s);
  store_t zero = {0};
  store_free(&zero);
}

/* --- file segments --- */

/* Reads [off, off+len) and asserts the bytes equal want (len of them). */
static void expect_read(store_block_t *b, uint64_t off, const void *want, uint64_t len) {
  const uint8_t *d = NULL;
  MF_ASSERT_EQ(store_file_read(b, off, len, &d), len);
  if (len > 0) {
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    CU_ASSERT(memcmp(d, want, len) == 0);
  }
}

static void test_file_reads_back_what_was_written_at_offsets(void) {
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 0, 1, STORE_FILE);
  const uint8_t bin[] = {0, 1, 2, 0, 0xff, 0x80, 0};
  MF_ASSERT_EQ(store_file_write(&s, b, 100, bin, sizeof bin), 0);
  MF_ASSERT_EQ(b->size, 100 + sizeof bin);
  MF_ASSERT_EQ(store_file_write(&s, b, 0, "head", 4), 0);
  MF_ASSERT_EQ(b->size, 100 + sizeof bin); /* a write below the end keeps the size */
  MF_ASSERT_EQ(store_file_write(&s, b, BS - 4, "tail", 4), 0);
  MF_ASSERT_EQ(b->size, BS);
  MF_ASSERT_EQ(b->used, BS);

  expect_read(b, 100, bin, sizeof bin);
  expect_read(b, 0, "head", 4);
  expect_read(b, BS - 4, "tail", 4);
  /* The gaps between writes read as zeros. */
  uint8_t zeros[BS];
  memset(zeros, 0, sizeof zeros);
  expect_read(b, 4, zeros, 96);
  expect_read(b, 100 + sizeof bin, zeros, BS - 4 - 100 - sizeof bin);

  /* An overlapping write replaces exactly its bytes. */
  MF_ASSERT_EQ(store_file_write(&s, b, 2, "XY", 2), 0);
  expect_read(b, 0, "heXY", 4);
  expect_read(b, 4, zeros, 96);
  store_free(&s);
}

static void test_file_reads_past_the_size_are_short(void) {
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 0, 1, STORE_FILE);
  const uint8_t *d = NULL;
  MF_ASSERT_EQ(store_file_read(b, 0, 10, &d), 0); /* empty segment */
  MF_ASSERT_EQ(store_file_write(&s, b, 0, "0123456789", 10), 0);
  MF_ASSERT_EQ(store_file_read(b, 7, 100, &d), 3);
  CU_ASSERT(memcmp(d, "789", 3) == 0);
  MF_ASSERT_EQ(store_file_read(b, 10, 1, &d), 0);
  MF_ASSERT_EQ(store_file_read(b, 11, 1, &d), 0);
  MF_ASSERT_EQ(store_file_read(b, BS, 1, &d), 0);
  MF_ASSERT_EQ(store_file_read(b, UINT64_MAX, UINT64_MAX, &d), 0);
  MF_ASSERT_EQ(store_file_read(b, 3, 0, &d), 0);
  MF_ASSERT_EQ(store_file_read(b, 3, UINT64_MAX, &d), 7);
  CU_ASSERT(memcmp(d, "3456789", 7) == 0);
  store_free(&s);
}

static void test_file_write_beyond_the_block_is_refused_and_changes_nothing(void) {
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 1, 1, STORE_FILE);
  MF_ASSERT_EQ(store_file_write(&s, b, 0, "abcdef", 6), 0);
  uint8_t big[BS + 1];
  memset(big, 0x5a, sizeof big);

  const struct {
    uint64_t off, len;
  } bad[] = {{0, BS + 1}, {BS - 3, 4}, {BS, 1}, {BS + 1, 0}, {1, BS}, {UINT64_MAX, 1},
             {UINT64_MAX - 2, 4}, {2, UINT64_MAX}};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    MF_ASSERT_EQ(store_file_write(&s, b, bad[i].off, big, bad[i].len), MAYFLY_ETOOBIG);
    MF_ASSERT_EQ(b->size, 6);
    MF_ASSERT_EQ(b->used, 6);
    expect_read(b, 0, "abcdef", 6);
  }
  /* Nothing leaked into the next block either. */
  store_block_t *next = own(&s, 2, 1, STORE_FILE);
  MF_ASSERT_EQ(store_file_write(&s, next, 0, "", 0), 0);
  MF_ASSERT_EQ(next->mem[0], 0);

  /* The whole block, exactly, fits. */
  MF_ASSERT_EQ(store_file_write(&s, b, 0, big, BS), 0);
  MF_ASSERT_EQ(b->size, BS);
  expect_read(b, 0, big, BS);
  MF_ASSERT_EQ(next->mem[0], 0);
  store_free(&s);
}

static void test_file_blocks_do_not_overlap(void) {
  store_t s;
  fresh(&s);
  uint8_t pat[NBLOCKS][BS];
  for (int i = 0; i < NBLOCKS; i++) {
    memset(pat[i], 0x10 + i, BS);
    store_block_t *b = own(&s, i, 1, STORE_FILE);
    MF_ASSERT_EQ(store_file_write(&s, b, 0, pat[i], BS), 0);
  }
  for (int i = 0; i < NBLOCKS; i++) expect_read(&s.blocks[i], 0, pat[i], BS);
  store_free(&s);
}

static void test_file_data_of_an_old_generation_never_shows_through(void) {
  store_t s;
  fresh(&s);
  uint8_t secret[BS], zeros[BS];
  memset(secret, 0x77, sizeof secret);
  memset(zeros, 0, sizeof zeros);

  store_block_t *b = own(&s, 0, 1, STORE_FILE);
  MF_ASSERT_EQ(store_file_write(&s, b, 0, secret, BS), 0);
  b = own(&s, 0, 2, STORE_FILE); /* new owner, without a release first */
  const uint8_t *d = NULL;
  MF_ASSERT_EQ(store_file_read(b, 0, BS, &d), 0);
  /* Writing the last byte makes the whole block readable: all zeros. */
  MF_ASSERT_EQ(store_file_write(&s, b, BS - 1, "z", 1), 0);
  expect_read(b, 0, zeros, BS - 1);
  expect_read(b, BS - 1, "z", 1);

  /* The same through a release. */
  MF_ASSERT_EQ(store_file_write(&s, b, 0, secret, BS - 1), 0);
  MF_ASSERT_EQ(store_release(&s, 0, 2), 1);
  b = own(&s, 0, 3, STORE_FILE);
  MF_ASSERT_EQ(store_file_write(&s, b, BS - 1, "z", 1), 0);
  expect_read(b, 0, zeros, BS - 1);

  /* And through an owner of another kind in between. */
  MF_ASSERT_EQ(store_file_write(&s, b, 0, secret, BS), 0);
  b = own(&s, 0, 4, STORE_KV);
  MF_ASSERT_EQ(kv_put(&s, b, "k", 1, "v", 1), 0);
  b = own(&s, 0, 5, STORE_FILE);
  MF_ASSERT_EQ(store_file_write(&s, b, BS - 1, "z", 1), 0);
  expect_read(b, 0, zeros, BS - 1);
  store_free(&s);
}

/* --- queue segments --- */

static void test_queue_is_fifo_and_peek_does_not_take(void) {
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 0, 1, STORE_QUEUE);
  CU_ASSERT_PTR_NULL(store_queue_peek(b));
  CU_ASSERT_PTR_NULL(store_queue_pop(b));

  /* Items of different lengths, binary, one of them empty. */
  for (uint32_t i = 0; i < 20; i++) {
    uint8_t item[32];
    for (uint32_t j = 0; j < i; j++) item[j] = (uint8_t)(i * 7 + j) & (j % 3 ? 0xff : 0);
    MF_ASSERT_EQ(store_queue_push(&s, b, item, i), 0);
  }
  for (uint32_t i = 0; i < 20; i++) {
    const store_item_t *head = store_queue_peek(b);
    CU_ASSERT_PTR_NOT_NULL_FATAL(head);
    CU_ASSERT_PTR_EQUAL(store_queue_peek(b), head); /* peeking twice: same item */
    store_item_t *it = store_queue_pop(b);
    CU_ASSERT_PTR_EQUAL(it, head);
    CU_ASSERT_PTR_NOT_NULL_FATAL(it);
    MF_ASSERT_EQ(it->len, i);
    for (uint32_t j = 0; j < i; j++) {
      MF_ASSERT_EQ(it->data[j], (uint8_t)(i * 7 + j) & (j % 3 ? 0xff : 0));
    }
    g_free(it);
  }
  CU_ASSERT_PTR_NULL(store_queue_pop(b));
  MF_ASSERT_EQ(b->used, 0);
  store_free(&s);
}

/* The longest queue item whose charge fits in `room` bytes (the charge only
 * grows with the length). */
static uint32_t fit_item(uint64_t room) {
  uint64_t lo = 0, hi = room;
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo + 1) / 2;
    if (wire_queue_charge(mid) <= room) lo = mid;
    else hi = mid - 1;
  }
  return (uint32_t)lo;
}

static void test_queue_item_bigger_than_a_block_is_too_big(void) {
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 0, 1, STORE_QUEUE);
  static uint8_t big[BS];
  memset(big, 1, sizeof big);
  const uint32_t max_item = fit_item(BS);
  MF_ASSERT_EQ(store_queue_push(&s, b, big, max_item + 1), MAYFLY_ETOOBIG);
  MF_ASSERT_EQ(store_queue_push(&s, b, big, UINT32_MAX), MAYFLY_ETOOBIG);
  /* Too big for any segment is not "this segment is full": it stays open. */
  MF_ASSERT_EQ(b->sealed, 0);
  MF_ASSERT_EQ(b->used, 0);
  CU_ASSERT_PTR_NULL(store_queue_peek(b));
  /* The largest item that fits an empty block. */
  MF_ASSERT_EQ(store_queue_push(&s, b, big, max_item), 0);
  MF_ASSERT_EQ(b->used, wire_queue_charge(max_item));
  CU_ASSERT(b->used <= BS);
  store_item_t *it = store_queue_pop(b);
  CU_ASSERT_PTR_NOT_NULL_FATAL(it);
  MF_ASSERT_EQ(it->len, max_item);
  CU_ASSERT(memcmp(it->data, big, max_item) == 0);
  g_free(it);
  MF_ASSERT_EQ(b->used, 0);
  store_free(&s);
}

static void test_queue_full_segment_is_sealed(void) {
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 0, 1, STORE_QUEUE);
  uint8_t item[100];
  const uint64_t cost = wire_queue_charge(sizeof item);
  const uint64_t fits = BS / cost;
  for (uint64_t i = 0; i < fits; i++) {
    memset(item, (int)i, sizeof item);
    MF_ASSERT_EQ(store_queue_push(&s, b, item, sizeof item), 0);
    MF_ASSERT_EQ(b->used, (i + 1) * cost);
    MF_ASSERT_EQ(b->sealed, 0);
  }
  MF_ASSERT_EQ(store_queue_push(&s, b, item, sizeof item), MAYFLY_EFULL);
  MF_ASSERT_EQ(b->sealed, 1);
  MF_ASSERT_EQ(b->used, fits * cost);
  MF_ASSERT_EQ(g_queue_get_length(b->items), fits);

  /* Sealed for good: even an item that would fit now goes elsewhere, so
   * nothing pushed after the refused item overtakes it. */
  g_free(store_queue_pop(b));
  MF_ASSERT_EQ(b->used, (fits - 1) * cost);
  MF_ASSERT_EQ(store_queue_push(&s, b, "x", 1), MAYFLY_EFULL);
  MF_ASSERT_EQ(store_queue_push(&s, b, "", 0), MAYFLY_EFULL);
  MF_ASSERT_EQ(g_queue_get_length(b->items), fits - 1);

  /* Draining gives back every item in order and the accounting returns to 0. */
  for (uint64_t i = 1; i < fits; i++) {
    store_item_t *it = store_queue_pop(b);
    CU_ASSERT_PTR_NOT_NULL_FATAL(it);
    MF_ASSERT_EQ(it->len, sizeof item);
    MF_ASSERT_EQ(it->data[0], (uint8_t)i);
    MF_ASSERT_EQ(it->data[sizeof item - 1], (uint8_t)i);
    g_free(it);
  }
  CU_ASSERT_PTR_NULL(store_queue_pop(b));
  MF_ASSERT_EQ(b->used, 0);
  MF_ASSERT_EQ(b->sealed, 1);
  MF_ASSERT_EQ(store_queue_push(&s, b, "x", 1), MAYFLY_EFULL);

  /* A new owner of the block starts unsealed. */
  b = own(&s, 0, 2, STORE_QUEUE);
  MF_ASSERT_EQ(b->sealed, 0);
  MF_ASSERT_EQ(store_queue_push(&s, b, "x", 1), 0);
  store_free(&s);
}

static void test_queue_accounting_follows_pushes_and_pops(void) {
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 0, 1, STORE_QUEUE);
  GRand *r = g_rand_new_with_seed(32);
  GQueue model = G_QUEUE_INIT; /* lengths, as pointers */
  uint64_t charged = 0;
  static uint8_t data[BS];
  memset(data, 0xee, sizeof data);
  for (int k = 0; k < 5000; k++) {
    if (g_rand_boolean(r) && !b->sealed) {
      uint32_t len = (uint32_t)g_rand_int_range(r, 0, 300);
      int rc = store_queue_push(&s, b, data, len);
      if (rc == 0) {
        g_queue_push_tail(&model, GUINT_TO_POINTER(len));
        charged += wire_queue_charge(len);
      } else {
        MF_ASSERT_EQ(rc, MAYFLY_EFULL);
        CU_ASSERT(charged + wire_queue_charge(len) > BS);
        /* The test wants to keep pushing: give the block a new owner. */
        g_queue_clear(&model);
        charged = 0;
        b = own(&s, 0, 2 + k, STORE_QUEUE);
      }
    } else {
      store_item_t *it = store_queue_pop(b);
      if (g_queue_is_empty(&model)) {
        CU_ASSERT_PTR_NULL(it);
      } else {
        CU_ASSERT_PTR_NOT_NULL_FATAL(it);
        uint32_t want = GPOINTER_TO_UINT(g_queue_pop_head(&model));
        MF_ASSERT_EQ(it->len, want);
        charged -= wire_queue_charge(want);
      }
      g_free(it);
    }
    MF_ASSERT_EQ(b->used, charged);
    CU_ASSERT(b->used <= BS);
  }
  g_queue_clear(&model);
  g_rand_free(r);
  store_free(&s);
}

/* --- kv partitions --- */

/* The longest value a key of klen bytes can have within a charge of `room`
 * bytes, or -1 when not even an empty value fits (the charge only grows with
 * the value). */
static int64_t fit_vlen(uint32_t klen, uint64_t room) {
  if (store_kv_charge(klen, 0) > room) return -1;
  uint64_t lo = 0, hi = room; /* charge(lo) <= room < charge(hi + 1) */
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo + 1) / 2;
    if (store_kv_charge(klen, mid) <= room) lo = mid;
    else hi = mid - 1;
  }
  return (int64_t)lo;
}

/* Asserts that key maps to exactly the value want[0..wlen). */
static void expect_value(store_block_t *b, const void *key, uint32_t klen, const void *want,
                         size_t wlen) {
  uint32_t n = 0;
  const uint8_t *d = kv_get(b, key, klen, &n);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  MF_ASSERT_EQ(n, wlen);
  if (n == wlen && wlen > 0) CU_ASSERT(memcmp(d, want, wlen) == 0);
}

static void test_kv_put_get_overwrite_delete_with_binary_keys(void) {
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 0, 1, STORE_KV);
  /* Keys that differ only after an embedded NUL, or by a trailing NUL. */
  const char k1[] = "k\0a", k2[] = "k\0b", k3[] = "k";
  const uint8_t v1[] = {0, 0, 1}, v2[] = {'x', 0, 'y', 0};
  MF_ASSERT_EQ(kv_put(&s, b, k1, 3, v1, sizeof v1), 0);
  MF_ASSERT_EQ(kv_put(&s, b, k2, 3, v2, sizeof v2), 0);
  MF_ASSERT_EQ(kv_put(&s, b, k3, 1, "", 0), 0); /* an empty value is a value */
  MF_ASSERT_EQ(kv_put(&s, b, k3, 2, "2", 1), 0); /* "k\0" is yet another key */
  MF_ASSERT_EQ(g_hash_table_size(b->kv), 4);
  expect_value(b, k1, 3, v1, sizeof v1);
  expect_value(b, k2, 3, v2, sizeof v2);
  expect_value(b, k3, 1, "", 0);
  expect_value(b, k3, 2, "2", 1);
  /* exists is "get is not NULL"; a key extended by a NUL is not the key. */
  CU_ASSERT_PTR_NULL(kv_get(b, "k\0a\0", 4, NULL));
  CU_ASSERT_PTR_NULL(kv_get(b, "k\0c", 3, NULL));
  CU_ASSERT_PTR_NULL(kv_get(b, "", 0, NULL));
  MF_ASSERT_EQ(b->used, store_kv_charge(3, 3) + store_kv_charge(3, 4) + store_kv_charge(1, 0) + store_kv_charge(2, 1));

  /* Overwrite replaces the value and its charge. */
  MF_ASSERT_EQ(kv_put(&s, b, k1, 3, "longer value", 12), 0);
  expect_value(b, k1, 3, "longer value", 12);
  MF_ASSERT_EQ(g_hash_table_size(b->kv), 4);
  MF_ASSERT_EQ(b->used, store_kv_charge(3, 12) + store_kv_charge(3, 4) + store_kv_charge(1, 0) + store_kv_charge(2, 1));
  expect_value(b, k2, 3, v2, sizeof v2);

  /* Delete removes exactly one key; a missing key is ENOKEY. */
  MF_ASSERT_EQ(kv_del(b, k1, 3), 0);
  CU_ASSERT_PTR_NULL(kv_get(b, k1, 3, NULL));
  MF_ASSERT_EQ(kv_del(b, k1, 3), MAYFLY_ENOKEY);
  MF_ASSERT_EQ(kv_del(b, "nope", 4), MAYFLY_ENOKEY);
  MF_ASSERT_EQ(kv_del(b, "k\0a\0", 4), MAYFLY_ENOKEY);
  expect_value(b, k2, 3, v2, sizeof v2);
  expect_value(b, k3, 2, "2", 1);
  MF_ASSERT_EQ(b->used, store_kv_charge(3, 4) + store_kv_charge(1, 0) + store_kv_charge(2, 1));

  /* The empty key is a key. */
  MF_ASSERT_EQ(kv_put(&s, b, "", 0, "e", 1), 0);
  expect_value(b, "", 0, "e", 1);
  MF_ASSERT_EQ(kv_del(b, "", 0), 0);

  MF_ASSERT_EQ(kv_del(b, k2, 3), 0);
  MF_ASSERT_EQ(kv_del(b, k3, 1), 0);
  MF_ASSERT_EQ(kv_del(b, k3, 2), 0);
  MF_ASSERT_EQ(b->used, 0);
  MF_ASSERT_EQ(g_hash_table_size(b->kv), 0);
  store_free(&s);
}

static void test_kv_value_is_a_copy_of_the_callers_bytes(void) {
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 0, 1, STORE_KV);
  char key[8] = "key", val[8] = "value";
  MF_ASSERT_EQ(kv_put(&s, b, key, 3, val, 5), 0);
  memcpy(key, "xxx", 3);
  memcpy(val, "XXXXX", 5);
  expect_value(b, "key", 3, "value", 5);
  store_free(&s);
}

/* Finds a key whose slot is not 0 or 65535 (so both neighbours exist). */
static uint32_t inner_key(char *key, size_t size, uint32_t *klen) {
  for (int i = 0;; i++) {
    *klen = (uint32_t)g_snprintf(key, size, "key-%d", i);
    uint32_t slot = wire_kv_slot(key, *klen);
    if (slot > 0 && slot < 65535) return slot;
  }
}

static void test_kv_slot_must_lie_in_the_blocks_range(void) {
  store_t s;
  fresh(&s);
  char key[32];
  uint32_t klen;
  uint32_t slot = inner_key(key, sizeof key, &klen);
  const struct {
    int64_t lo, hi;
    int want;
  } cases[] = {
      {slot, slot + 1, 0},              /* a range of one slot: its own */
      {0, 65536, 0},                    /* all slots */
      {slot, 65536, 0},                 /* lo is inclusive */
      {0, slot + 1, 0},                 /* hi - 1 is inside */
      {0, slot, MAYFLY_EMOVED},         /* hi is exclusive */
      {slot + 1, 65536, MAYFLY_EMOVED}, /* above the range */
      {slot - 1, slot, MAYFLY_EMOVED},  /* just below */
      {slot, slot, MAYFLY_EMOVED},      /* an empty range holds nothing */
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    /* Each case is a new owner of block 0 with its own range. */
    int64_t gen = (int64_t)i + 1;
    store_adopt(&s, 0, gen, STORE_KV, cases[i].lo, cases[i].hi);
    store_block_t *b = NULL;
    MF_ASSERT_EQ(store_lookup(&s, 0, (uint64_t)gen, STORE_KV, &b), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    MF_ASSERT_EQ(b->range_lo, cases[i].lo);
    MF_ASSERT_EQ(b->range_hi, cases[i].hi);
    int rc = store_kv_check_slot(b, wire_kv_hash(key, klen));
    if (rc != cases[i].want) {
      fprintf(stderr, "  slot %u in [%lld, %lld)\n", slot, (long long)cases[i].lo,
              (long long)cases[i].hi);
    }
    MF_ASSERT_EQ(rc, cases[i].want);
  }
  store_free(&s);
}

static void test_kv_put_that_does_not_fit_is_full_and_keeps_the_old_value(void) {
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 0, 1, STORE_KV);
  /* Two entries of at most 1000 charged bytes each and a small one. */
  uint8_t val[BS];
  memset(val, 0x61, sizeof val);
  const uint32_t vlen = (uint32_t)fit_vlen(2, 1000);
  MF_ASSERT_EQ(kv_put(&s, b, "k1", 2, val, vlen), 0);
  MF_ASSERT_EQ(kv_put(&s, b, "k2", 2, val, vlen), 0);
  MF_ASSERT_EQ(kv_put(&s, b, "k3", 2, "old", 3), 0);
  const uint64_t used = 2 * store_kv_charge(2, vlen) + store_kv_charge(2, 3);
  MF_ASSERT_EQ(b->used, used);
  const uint64_t room = BS - used;

  /* A new key one byte too large for what is left. */
  CU_ASSERT_FATAL(fit_vlen(2, room) >= 0);
  uint64_t too_much = (uint64_t)fit_vlen(2, room) + 1;
  MF_ASSERT_EQ(kv_put(&s, b, "k4", 2, val, too_much), MAYFLY_EFULL);
  CU_ASSERT_PTR_NULL(kv_get(b, "k4", 2, NULL));
  MF_ASSERT_EQ(b->used, used);
  MF_ASSERT_EQ(g_hash_table_size(b->kv), 3);

  /* Overwriting with a value one byte longer than the old one's charge plus
   * what is left allows: refused, and the old value stays, byte for byte. */
  const uint64_t most = (uint64_t)fit_vlen(2, room + store_kv_charge(2, 3));
  MF_ASSERT_EQ(kv_put(&s, b, "k3", 2, val, most + 1), MAYFLY_EFULL);
  expect_value(b, "k3", 2, "old", 3);
  MF_ASSERT_EQ(b->used, used);

  /* The longest value that fits in what is left fits, for an overwrite as
   * for a new key, and then no longer value does. */
  MF_ASSERT_EQ(kv_put(&s, b, "k3", 2, val, most), 0);
  MF_ASSERT_EQ(b->used, used - store_kv_charge(2, 3) + store_kv_charge(2, most));
  CU_ASSERT(b->used <= BS);
  expect_value(b, "k3", 2, val, most);
  int64_t left = fit_vlen(2, BS - b->used);
  MF_ASSERT_EQ(kv_put(&s, b, "k5", 2, val, (uint64_t)(left + 1)), MAYFLY_EFULL);
  MF_ASSERT_EQ(kv_put(&s, b, "k3", 2, "old", 3), 0);
  MF_ASSERT_EQ(b->used, used);
  MF_ASSERT_EQ(kv_put(&s, b, "k4", 2, val, too_much - 1), 0);
  MF_ASSERT_EQ(b->used, used + store_kv_charge(2, too_much - 1));
  CU_ASSERT(b->used <= BS);
  const uint64_t full = b->used;

  /* Deleting makes room again. */
  MF_ASSERT_EQ(kv_del(b, "k1", 2), 0);
  MF_ASSERT_EQ(b->used, full - store_kv_charge(2, vlen));
  MF_ASSERT_EQ(kv_put(&s, b, "k6", 2, val, vlen), 0);
  MF_ASSERT_EQ(b->used, full);

  /* An entry larger than a whole block can never fit anywhere. */
  MF_ASSERT_EQ(kv_put(&s, b, "k7", 2, val, BS), MAYFLY_ETOOBIG);
  MF_ASSERT_EQ(kv_put(&s, b, "k3", 2, val, (uint64_t)1 << 40), MAYFLY_ETOOBIG);
  expect_value(b, "k3", 2, "old", 3);
  MF_ASSERT_EQ(b->used, full);
  store_free(&s);
}

/* Runs fn in a child process, so that a crash fails the test instead of
 * ending the whole run. Returns 1 when the child exited with status 0. */
static int passes_in_child(void (*fn)(void)) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) return 0;
  if (pid == 0) {
    fn();
    _exit(0);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return 0;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "  child %s %d\n", WIFEXITED(status) ? "exited with" : "killed by signal",
            WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    return 0;
  }
  return 1;
}

/* In the child: a put whose value length is near UINT64_MAX must be refused
 * as too big, not wrap the charge around and try to copy it. */
static void put_value_of_length_near_uint64_max(void) {
  store_t s;
  if (store_init(&s, 1, BS) != 0) _exit(2);
  store_adopt(&s, 0, 1, STORE_KV, ALL_SLOTS);
  store_block_t *b = NULL;
  if (store_lookup(&s, 0, 1, STORE_KV, &b) != 0) _exit(3);
  int rc = kv_put(&s, b, "k", 1, "v", UINT64_MAX - 10);
  _exit(rc == MAYFLY_ETOOBIG && b->used == 0 ? 0 : 1);
}

static void test_kv_value_length_near_uint64_max_is_too_big(void) {
  /* The charge is computed in 64 bits; a sum of klen, vlen and the head
   * near UINT64_MAX must not wrap to a small cost. The server caps vlen
   * below 4 GiB, but store.h promises any uint64_t. */
  CU_ASSERT(passes_in_child(put_value_of_length_near_uint64_max));
}

static void test_kv_budget_holds_over_random_operations(void) {
  /* A model of the partition (key -> value) is kept beside it; after every
   * operation the store must agree with it, and the charge must be exactly
   * the sum of the entries' store_kv_charge, never above the block. */
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 0, 1, STORE_KV);
  GHashTable *model = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                            (GDestroyNotify)g_bytes_unref,
                                            (GDestroyNotify)g_bytes_unref);
  GRand *r = g_rand_new_with_seed(10000);
  uint64_t charged = 0;
  int fulls = 0, puts = 0, dels = 0;
  for (int op = 0; op < 10000; op++) {
    uint8_t key[6] = {'k', 0, 0, 0, 0, 0};
    uint32_t klen = (uint32_t)g_rand_int_range(r, 1, 7);
    key[klen - 1] = (uint8_t)g_rand_int_range(r, 0, 12); /* binary, NULs included */
    GBytes *kb = g_bytes_new(key, klen);
    GBytes *old = g_hash_table_lookup(model, kb);
    uint64_t old_cost = old ? store_kv_charge(klen, g_bytes_get_size(old)) : 0;
    int what = g_rand_int_range(r, 0, 10);
    if (what < 6) {
      uint32_t vlen = (uint32_t)g_rand_int_range(r, 0, 900);
      uint8_t val[900];
      for (uint32_t i = 0; i < vlen; i++) val[i] = (uint8_t)(op + i);
      uint64_t cost = store_kv_charge(klen, vlen);
      int rc = kv_put(&s, b, key, klen, val, vlen);
      if (charged - old_cost + cost <= BS) {
        MF_ASSERT_EQ(rc, 0);
        g_hash_table_replace(model, g_bytes_ref(kb), g_bytes_new(val, vlen));
        charged = charged - old_cost + cost;
        puts++;
      } else {
        MF_ASSERT_EQ(rc, MAYFLY_EFULL);
        fulls++;
      }
    } else if (what < 9) {
      int rc = kv_del(b, key, klen);
      MF_ASSERT_EQ(rc, old ? 0 : MAYFLY_ENOKEY);
      if (old) {
        charged -= old_cost;
        g_hash_table_remove(model, kb);
        dels++;
      }
    } else {
      uint32_t n = 0;
      const uint8_t *v = kv_get(b, key, klen, &n);
      CU_ASSERT((v == NULL) == (old == NULL));
      if (v != NULL && old != NULL) {
        MF_ASSERT_EQ(n, g_bytes_get_size(old));
        CU_ASSERT(n == 0 || memcmp(v, g_bytes_get_data(old, NULL), n) == 0);
      }
    }
    g_bytes_unref(kb);
    CU_ASSERT(b->used <= BS);
    MF_ASSERT_EQ(b->used, charged);
    MF_ASSERT_EQ(g_hash_table_size(b->kv), g_hash_table_size(model));
  }
  /* Every key the model holds has its latest value. */
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, model);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    gsize klen = 0;
    const void *kd = g_bytes_get_data(k, &klen);
    uint32_t n = 0;
    const uint8_t *got = kv_get(b, kd, (uint32_t)klen, &n);
    CU_ASSERT(got != NULL && n == g_bytes_get_size(v) &&
              (n == 0 || memcmp(got, g_bytes_get_data(v, NULL), n) == 0));
  }
  /* The sequence exercised all three outcomes. */
  CU_ASSERT(fulls > 100);
  CU_ASSERT(puts > 500);
  CU_ASSERT(dels > 500);
  g_rand_free(r);
  g_hash_table_destroy(model);
  store_free(&s);
}

static void test_release_drops_every_kinds_contents(void) {
  for (size_t k = 0; k < G_N_ELEMENTS(kinds); k++) {
    store_t s;
    fresh(&s);
    store_block_t *b = own(&s, 1, 1, kinds[k]);
    put_hello(&s, b);
    CU_ASSERT(b->used > 0);
    MF_ASSERT_EQ(store_release(&s, 1, 1), 1);
    MF_ASSERT_EQ(b->kind, STORE_FREE);
    MF_ASSERT_EQ(b->used, 0);
    MF_ASSERT_EQ(b->size, 0);
    CU_ASSERT_PTR_NULL(b->items);
    CU_ASSERT_PTR_NULL(b->kv);
    /* Generation 2 of the same kind sees none of generation 1. */
    b = own(&s, 1, 2, kinds[k]);
    CU_ASSERT(is_empty(b));
    store_free(&s);
  }
}

static void test_kv_contents_of_an_old_generation_never_show_through(void) {
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 0, 1, STORE_KV);
  MF_ASSERT_EQ(kv_put(&s, b, "secret", 6, "1234", 4), 0);
  b = own(&s, 0, 2, STORE_KV);
  CU_ASSERT_PTR_NULL(kv_get(b, "secret", 6, NULL));
  MF_ASSERT_EQ(kv_del(b, "secret", 6), MAYFLY_ENOKEY);
  MF_ASSERT_EQ(b->used, 0);

  store_block_t *q = own(&s, 1, 1, STORE_QUEUE);
  MF_ASSERT_EQ(store_queue_push(&s, q, "secret", 6), 0);
  q = own(&s, 1, 2, STORE_QUEUE);
  CU_ASSERT_PTR_NULL(store_queue_pop(q));
  MF_ASSERT_EQ(q->used, 0);
  store_free(&s);
}

static void test_large_blocks_work_the_same(void) {
  /* 64 KiB blocks: a file segment written end to end, a queue filled to
   * its seal, a kv partition to EFULL. */
  store_t s;
  const uint64_t bs = 64 * 1024;
  MF_ASSERT_EQ(store_init(&s, 3, bs), 0);
  store_adopt(&s, 0, 1, STORE_FILE, ALL_SLOTS);
  store_adopt(&s, 1, 1, STORE_QUEUE, ALL_SLOTS);
  store_adopt(&s, 2, 1, STORE_KV, ALL_SLOTS);
  store_block_t *f = NULL, *q = NULL, *kv = NULL;
  MF_ASSERT_EQ(store_lookup(&s, 0, 1, STORE_FILE, &f), 0);
  MF_ASSERT_EQ(store_lookup(&s, 1, 1, STORE_QUEUE, &q), 0);
  MF_ASSERT_EQ(store_lookup(&s, 2, 1, STORE_KV, &kv), 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  CU_ASSERT_PTR_NOT_NULL_FATAL(q);
  CU_ASSERT_PTR_NOT_NULL_FATAL(kv);

  uint8_t chunk[1000];
  uint64_t off = 0;
  for (int i = 0; off + sizeof chunk <= bs; i++, off += sizeof chunk) {
    memset(chunk, i, sizeof chunk);
    MF_ASSERT_EQ(store_file_write(&s, f, off, chunk, sizeof chunk), 0);
  }
  MF_ASSERT_EQ(store_file_write(&s, f, off, chunk, sizeof chunk), MAYFLY_ETOOBIG);
  MF_ASSERT_EQ(f->size, off);
  const uint8_t *d = NULL;
  MF_ASSERT_EQ(store_file_read(f, 37 * sizeof chunk, 1, &d), 1);
  MF_ASSERT_EQ(d[0], 37);

  int pushed = 0;
  while (store_queue_push(&s, q, chunk, sizeof chunk) == 0) pushed++;
  MF_ASSERT_EQ(pushed, bs / wire_queue_charge(sizeof chunk));
  MF_ASSERT_EQ(q->sealed, 1);

  int stored = 0;
  for (;;) {
    char key[16];
    uint32_t klen = (uint32_t)g_snprintf(key, sizeof key, "%04d", stored);
    int rc = kv_put(&s, kv, key, klen, chunk, sizeof chunk);
    if (rc != 0) {
      MF_ASSERT_EQ(rc, MAYFLY_EFULL);
      break;
    }
    stored++;
  }
  MF_ASSERT_EQ(stored, bs / store_kv_charge(4, sizeof chunk));
  CU_ASSERT(kv->used <= bs);
  MF_ASSERT_EQ(s.blocks_in_use, 3);
  store_free(&s);
}

/* --- kv repartitions: entries set aside, moved in, dropped --- */

/* Writes into key (size bytes) the n-th key, counting from 0, whose slot lies
 * in [lo, hi), and returns its length. */
static uint32_t key_in(char *key, size_t size, int64_t lo, int64_t hi, int n) {
  for (int i = 0;; i++) {
    uint32_t klen = (uint32_t)g_snprintf(key, size, "key-%d", i);
    int64_t slot = wire_kv_slot(key, klen);
    if (slot >= lo && slot < hi && n-- == 0) return klen;
  }
}

/* What a kv entry is charged. */
static uint64_t charge(uint32_t klen, uint64_t vlen) {
  return store_kv_charge(klen, vlen);
}

/* Puts `n` keys of slots [lo, hi) with values "v<key>", and returns their
 * charge. */
static uint64_t put_keys_in(store_t *s, store_block_t *b, int64_t lo, int64_t hi, int n) {
  uint64_t total = 0;
  for (int i = 0; i < n; i++) {
    char key[32], val[40];
    uint32_t klen = key_in(key, sizeof key, lo, hi, i);
    uint32_t vlen = (uint32_t)g_snprintf(val, sizeof val, "v%s", key);
    MF_ASSERT_EQ(kv_put(s, b, key, klen, val, vlen), 0);
    total += charge(klen, vlen);
  }
  return total;
}

/* Whether the table holds the value put_keys_in stored for the i-th key of
 * slots [lo, hi). */
static int holds_key(GHashTable *kv, int64_t lo, int64_t hi, int i) {
  char key[32], val[40];
  uint32_t klen = key_in(key, sizeof key, lo, hi, i);
  uint32_t vlen = (uint32_t)g_snprintf(val, sizeof val, "v%s", key);
  uint32_t n = 0;
  const uint8_t *d = kv_get_in(kv, key, klen, &n);
  return d != NULL && n == vlen && memcmp(d, val, vlen) == 0;
}

/* The slots moved in these tests, and the ones around them. */
#define MOVE_LO 20000
#define MOVE_HI 45000

static void test_kv_take_range_sets_the_slots_aside_still_charged(void) {
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 0, 1, STORE_KV);
  uint64_t below = put_keys_in(&s, b, 0, MOVE_LO, 5);
  uint64_t inside = put_keys_in(&s, b, MOVE_LO, MOVE_HI, 6);
  uint64_t above = put_keys_in(&s, b, MOVE_HI, 65536, 4);
  MF_ASSERT_EQ(b->used, below + inside + above);

  uint64_t moved = 0;
  GHashTable *moving = store_kv_take_range(b, MOVE_LO, MOVE_HI, &moved);
  CU_ASSERT_PTR_NOT_NULL_FATAL(moving);
  MF_ASSERT_EQ(moved, inside);
  MF_ASSERT_EQ(b->used, below + inside + above); /* still charged until the commit */
  MF_ASSERT_EQ(g_hash_table_size(moving), 6);
  MF_ASSERT_EQ(g_hash_table_size(b->kv), 9);
  for (int i = 0; i < 6; i++) {
    CU_ASSERT(holds_key(moving, MOVE_LO, MOVE_HI, i)); /* served from the copy */
    CU_ASSERT(!holds_key(b->kv, MOVE_LO, MOVE_HI, i));
  }
  for (int i = 0; i < 5; i++) {
    CU_ASSERT(holds_key(b->kv, 0, MOVE_LO, i));
    CU_ASSERT(!holds_key(moving, 0, MOVE_LO, i));
  }
  for (int i = 0; i < 4; i++) CU_ASSERT(holds_key(b->kv, MOVE_HI, 65536, i));
  /* store_kv_get on the block is store_kv_get_in on its table. */
  char key[32];
  uint32_t klen = key_in(key, sizeof key, 0, MOVE_LO, 0);
  CU_ASSERT_PTR_EQUAL(kv_get(b, key, klen, NULL), kv_get_in(b->kv, key, klen, NULL));
  CU_ASSERT_PTR_NULL(kv_get_in(moving, "no such key", 11, NULL));
  g_hash_table_destroy(moving);

  /* An empty range, or one without entries, sets nothing aside. */
  moved = 12345;
  moving = store_kv_take_range(b, 100, 100, &moved);
  MF_ASSERT_EQ(moved, 0);
  MF_ASSERT_EQ(g_hash_table_size(moving), 0);
  MF_ASSERT_EQ(g_hash_table_size(b->kv), 9);
  g_hash_table_destroy(moving);
  store_free(&s);
}

static void test_kv_take_range_is_inclusive_at_lo_and_exclusive_at_hi(void) {
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 0, 1, STORE_KV);
  char ka[32], kb[32];
  uint32_t la = key_in(ka, sizeof ka, 0, 65536, 0), lb = 0;
  int64_t sa = wire_kv_slot(ka, la);
  for (int i = 1; lb == 0; i++) {
    uint32_t l = key_in(kb, sizeof kb, 0, 65536, i);
    if (wire_kv_slot(kb, l) > sa) lb = l;
  }
  int64_t sb = wire_kv_slot(kb, lb);
  MF_ASSERT_EQ(kv_put(&s, b, ka, la, "a", 1), 0);
  MF_ASSERT_EQ(kv_put(&s, b, kb, lb, "b", 1), 0);
  uint64_t moved = 0;
  GHashTable *moving = store_kv_take_range(b, sa, sb, &moved);
  MF_ASSERT_EQ(moved, charge(la, 1));
  CU_ASSERT_PTR_NOT_NULL(kv_get_in(moving, ka, la, NULL)); /* slot lo: taken */
  CU_ASSERT_PTR_NOT_NULL(kv_get(b, kb, lb, NULL));        /* slot hi: stays */
  CU_ASSERT_PTR_NULL(kv_get_in(moving, kb, lb, NULL));
  g_hash_table_destroy(moving);
  store_free(&s);
}

static void test_kv_restore_brings_the_entries_back(void) {
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 0, 1, STORE_KV);
  uint64_t total = put_keys_in(&s, b, 0, 65536, 12);
  uint64_t moved = 0;
  GHashTable *moving = store_kv_take_range(b, MOVE_LO, MOVE_HI, &moved);
  guint n_moving = g_hash_table_size(moving);
  CU_ASSERT(n_moving > 0 && n_moving < 12);
  store_kv_restore(b, moving);
  MF_ASSERT_EQ(g_hash_table_size(moving), 0); /* emptied */
  MF_ASSERT_EQ(g_hash_table_size(b->kv), 12);
  MF_ASSERT_EQ(b->used, total);
  for (int i = 0; i < 12; i++) CU_ASSERT(holds_key(b->kv, 0, 65536, i));
  g_hash_table_destroy(moving);
  /* The entries are the block's again: deleting one uncharges it. */
  char key[32], val[40];
  uint32_t klen = key_in(key, sizeof key, MOVE_LO, MOVE_HI, 0);
  uint32_t vlen = (uint32_t)g_snprintf(val, sizeof val, "v%s", key);
  MF_ASSERT_EQ(kv_del(b, key, klen), 0);
  MF_ASSERT_EQ(b->used, total - charge(klen, vlen));
  store_free(&s);
}

static void test_kv_uncharge_after_a_commit_makes_room(void) {
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 0, 1, STORE_KV);
  uint64_t stays = put_keys_in(&s, b, 0, MOVE_LO, 3);
  uint64_t goes = put_keys_in(&s, b, MOVE_LO, MOVE_HI, 4);
  uint64_t moved = 0;
  GHashTable *moving = store_kv_take_range(b, MOVE_LO, MOVE_HI, &moved);
  MF_ASSERT_EQ(moved, goes);
  g_hash_table_destroy(moving); /* the entries went to the new block */
  store_kv_uncharge(b, moved);
  MF_ASSERT_EQ(b->used, stays);
  /* The room is really there: the longest entry that fits in what is left
   * (not without the uncharge) is stored. */
  uint8_t val[BS];
  memset(val, 0x42, sizeof val);
  int64_t most = fit_vlen(3, BS - stays);
  CU_ASSERT_FATAL(most >= 0);
  CU_ASSERT(stays + goes + charge(3, (uint64_t)most) > BS);
  MF_ASSERT_EQ(kv_put(&s, b, "big", 3, val, (uint64_t)most), 0);
  MF_ASSERT_EQ(b->used, stays + charge(3, (uint64_t)most));
  CU_ASSERT(b->used <= BS);
  /* Uncharging more than is charged stops at zero, never wraps. */
  store_kv_uncharge(b, BS + 1);
  MF_ASSERT_EQ(b->used, 0);
  store_free(&s);
}

/* Appends one migration record to buf. */
static void append_record(GByteArray *buf, const void *key, uint32_t klen, const void *val,
                          uint32_t vlen) {
  guint at = buf->len;
  g_byte_array_set_size(buf, at + WIRE_KV_ENTRY_HEADER + klen + vlen);
  wire_kv_entry_put(buf->data + at, key, klen, val, vlen);
}

/* Migration records of the first n keys of slots [lo, hi), values "v<key>". */
static GByteArray *records_in(int64_t lo, int64_t hi, int n) {
  GByteArray *buf = g_byte_array_new();
  for (int i = 0; i < n; i++) {
    char key[32], val[40];
    uint32_t klen = key_in(key, sizeof key, lo, hi, i);
    uint32_t vlen = (uint32_t)g_snprintf(val, sizeof val, "v%s", key);
    append_record(buf, key, klen, val, vlen);
  }
  return buf;
}

static void test_kv_migrate_in_stores_every_record(void) {
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 0, 1, STORE_KV);
  GByteArray *buf = records_in(MOVE_LO, MOVE_HI, 10);
  uint64_t count = 99;
  MF_ASSERT_EQ(store_kv_migrate_in(&s, b, buf->data, buf->len, MOVE_LO, MOVE_HI, &count), 0);
  MF_ASSERT_EQ(count, 10);
  MF_ASSERT_EQ(g_hash_table_size(b->kv), 10);
  uint64_t want = 0;
  for (int i = 0; i < 10; i++) {
    CU_ASSERT(holds_key(b->kv, MOVE_LO, MOVE_HI, i));
    char key[32];
    uint32_t klen = key_in(key, sizeof key, MOVE_LO, MOVE_HI, i);
    want += charge(klen, 1 + klen);
  }
  MF_ASSERT_EQ(b->used, want);
  /* The same records again (a batch sent twice) replace, not double. */
  MF_ASSERT_EQ(store_kv_migrate_in(&s, b, buf->data, buf->len, MOVE_LO, MOVE_HI, &count), 0);
  MF_ASSERT_EQ(count, 10);
  MF_ASSERT_EQ(g_hash_table_size(b->kv), 10);
  MF_ASSERT_EQ(b->used, want);
  /* An empty batch stores nothing. */
  MF_ASSERT_EQ(store_kv_migrate_in(&s, b, NULL, 0, MOVE_LO, MOVE_HI, &count), 0);
  MF_ASSERT_EQ(count, 0);
  MF_ASSERT_EQ(b->used, want);
  g_byte_array_free(buf, TRUE);

  /* Binary keys and values, empty ones included. */
  store_block_t *c = own(&s, 1, 1, STORE_KV);
  buf = g_byte_array_new();
  append_record(buf, "", 0, "empty key", 9);
  append_record(buf, "k\0x", 3, "", 0);
  append_record(buf, "k\0y", 3, "\0\1\0", 3);
  MF_ASSERT_EQ(store_kv_migrate_in(&s, c, buf->data, buf->len, ALL_SLOTS, &count), 0);
  MF_ASSERT_EQ(count, 3);
  expect_value(c, "", 0, "empty key", 9);
  expect_value(c, "k\0x", 3, "", 0);
  expect_value(c, "k\0y", 3, "\0\1\0", 3);
  g_byte_array_free(buf, TRUE);
  store_free(&s);
}

static void test_kv_migrate_in_checks_every_record_before_storing_any(void) {
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 0, 1, STORE_KV);
  MF_ASSERT_EQ(kv_put(&s, b, "mine", 4, "old", 3), 0);
  const uint64_t used = b->used;
  GByteArray *good = records_in(MOVE_LO, MOVE_HI, 5);
  uint64_t count = 0;

  /* Valid records followed by a record cut short, at every length short of
   * whole: a header in part, a key in part, a value in part. */
  GByteArray *cut = records_in(MOVE_LO, MOVE_HI, 1);
  for (guint keep = 1; keep < cut->len; keep++) {
    GByteArray *buf = g_byte_array_new();
    g_byte_array_append(buf, good->data, good->len);
    g_byte_array_append(buf, cut->data, keep);
    count = 99;
    MF_ASSERT_EQ(store_kv_migrate_in(&s, b, buf->data, buf->len, MOVE_LO, MOVE_HI, &count),
                 MAYFLY_EPROTO);
    MF_ASSERT_EQ(count, 0);
    MF_ASSERT_EQ(g_hash_table_size(b->kv), 1);
    MF_ASSERT_EQ(b->used, used);
    g_byte_array_free(buf, TRUE);
  }
  /* Lengths that claim more than the buffer holds, up to UINT32_MAX. */
  const uint32_t lies[][2] = {{UINT32_MAX, 0}, {0, UINT32_MAX}, {UINT32_MAX, UINT32_MAX},
                              {0x80000000u, 0x80000000u}, {4, 100}};
  for (size_t i = 0; i < G_N_ELEMENTS(lies); i++) {
    GByteArray *buf = g_byte_array_new();
    g_byte_array_append(buf, good->data, good->len);
    uint8_t hdr[WIRE_KV_ENTRY_HEADER];
    for (int j = 0; j < 4; j++) {
      hdr[j] = (uint8_t)(lies[i][0] >> (8 * j));
      hdr[4 + j] = (uint8_t)(lies[i][1] >> (8 * j));
    }
    g_byte_array_append(buf, hdr, sizeof hdr);
    g_byte_array_append(buf, (const uint8_t *)"keyvalue", 8);
    MF_ASSERT_EQ(store_kv_migrate_in(&s, b, buf->data, buf->len, MOVE_LO, MOVE_HI, &count),
                 MAYFLY_EPROTO);
    MF_ASSERT_EQ(count, 0);
    MF_ASSERT_EQ(g_hash_table_size(b->kv), 1);
    g_byte_array_free(buf, TRUE);
  }

  /* A last record whose key's slot lies below lo, or at or above hi. */
  const int64_t outside[][2] = {{0, MOVE_LO}, {MOVE_HI, 65536}};
  for (size_t i = 0; i < G_N_ELEMENTS(outside); i++) {
    GByteArray *buf = g_byte_array_new();
    g_byte_array_append(buf, good->data, good->len);
    char key[32];
    uint32_t klen = key_in(key, sizeof key, outside[i][0], outside[i][1], 0);
    append_record(buf, key, klen, "x", 1);
    MF_ASSERT_EQ(store_kv_migrate_in(&s, b, buf->data, buf->len, MOVE_LO, MOVE_HI, &count),
                 MAYFLY_EINVAL);
    MF_ASSERT_EQ(count, 0);
    MF_ASSERT_EQ(g_hash_table_size(b->kv), 1);
    CU_ASSERT_PTR_NULL(kv_get(b, key, klen, NULL));
    g_byte_array_free(buf, TRUE);
  }
  /* The range is exact: the good records themselves are refused for a range
   * one slot short of theirs. */
  char first[32];
  uint32_t flen = key_in(first, sizeof first, MOVE_LO, MOVE_HI, 0);
  int64_t fslot = wire_kv_slot(first, flen);
  MF_ASSERT_EQ(store_kv_migrate_in(&s, b, good->data, good->len, fslot + 1, MOVE_HI, &count),
               MAYFLY_EINVAL);
  MF_ASSERT_EQ(store_kv_migrate_in(&s, b, good->data, good->len, MOVE_LO, fslot, &count),
               MAYFLY_EINVAL);
  /* One record alone: at hi it is outside, at lo inside. */
  GByteArray *one = g_byte_array_new();
  append_record(one, first, flen, "1", 1);
  MF_ASSERT_EQ(store_kv_migrate_in(&s, b, one->data, one->len, fslot - 1, fslot, &count),
               MAYFLY_EINVAL);
  MF_ASSERT_EQ(store_kv_migrate_in(&s, b, one->data, one->len, fslot + 1, fslot + 2, &count),
               MAYFLY_EINVAL);
  MF_ASSERT_EQ(g_hash_table_size(b->kv), 1);
  MF_ASSERT_EQ(store_kv_migrate_in(&s, b, one->data, one->len, fslot, fslot + 1, &count), 0);
  MF_ASSERT_EQ(count, 1);
  expect_value(b, first, flen, "1", 1);
  MF_ASSERT_EQ(kv_del(b, first, flen), 0);
  g_byte_array_free(one, TRUE);
  MF_ASSERT_EQ(b->used, used);
  expect_value(b, "mine", 4, "old", 3);
  MF_ASSERT_EQ(g_hash_table_size(b->kv), 1);
  g_byte_array_free(cut, TRUE);
  g_byte_array_free(good, TRUE);
  store_free(&s);
}

static void test_kv_migrate_in_that_does_not_fit_is_full_and_keeps_the_ones_before(void) {
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 0, 1, STORE_KV);
  /* Five entries of 976 charged bytes (the most within 1000): four fit in
   * 4096, not five. */
  uint8_t val[1000];
  memset(val, 0x33, sizeof val);
  GByteArray *buf = g_byte_array_new();
  char keys[5][32];
  uint32_t klens[5];
  uint64_t charged = 0;
  for (int i = 0; i < 5; i++) {
    klens[i] = key_in(keys[i], sizeof keys[i], MOVE_LO, MOVE_HI, i);
    uint32_t vlen = (uint32_t)fit_vlen(klens[i], 1000);
    MF_ASSERT_EQ(charge(klens[i], vlen), 976);
    append_record(buf, keys[i], klens[i], val, vlen);
    if (i < 4) charged += charge(klens[i], vlen);
  }
  uint64_t count = 99;
  MF_ASSERT_EQ(store_kv_migrate_in(&s, b, buf->data, buf->len, MOVE_LO, MOVE_HI, &count),
               MAYFLY_EFULL);
  MF_ASSERT_EQ(count, 4);
  for (int i = 0; i < 4; i++) CU_ASSERT_PTR_NOT_NULL(kv_get(b, keys[i], klens[i], NULL));
  CU_ASSERT_PTR_NULL(kv_get(b, keys[4], klens[4], NULL));
  MF_ASSERT_EQ(b->used, charged);
  CU_ASSERT(b->used <= BS);
  g_byte_array_free(buf, TRUE);
  store_free(&s);
}

static void test_kv_drop_range_drops_those_slots_and_uncharges_them(void) {
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 0, 1, STORE_KV);
  uint64_t below = put_keys_in(&s, b, 0, MOVE_LO, 4);
  put_keys_in(&s, b, MOVE_LO, MOVE_HI, 5);
  uint64_t above = put_keys_in(&s, b, MOVE_HI, 65536, 3);
  store_kv_drop_range(b, MOVE_LO, MOVE_HI);
  MF_ASSERT_EQ(g_hash_table_size(b->kv), 7);
  MF_ASSERT_EQ(b->used, below + above);
  for (int i = 0; i < 5; i++) CU_ASSERT(!holds_key(b->kv, MOVE_LO, MOVE_HI, i));
  for (int i = 0; i < 4; i++) CU_ASSERT(holds_key(b->kv, 0, MOVE_LO, i));
  for (int i = 0; i < 3; i++) CU_ASSERT(holds_key(b->kv, MOVE_HI, 65536, i));
  /* Again, or over slots without entries: nothing changes. */
  store_kv_drop_range(b, MOVE_LO, MOVE_HI);
  store_kv_drop_range(b, 7, 7);
  MF_ASSERT_EQ(g_hash_table_size(b->kv), 7);
  MF_ASSERT_EQ(b->used, below + above);
  /* Every slot: the block is empty. */
  store_kv_drop_range(b, ALL_SLOTS);
  MF_ASSERT_EQ(g_hash_table_size(b->kv), 0);
  MF_ASSERT_EQ(b->used, 0);
  store_free(&s);
}

/* A split as the server drives it, on the store's side: the source sets the
 * upper slots aside, the records of its copy go into the new block, and the
 * commit uncharges the source. Every entry ends up in exactly one block. */
static void test_kv_split_moves_every_entry_to_exactly_one_block(void) {
  store_t s;
  fresh(&s);
  store_block_t *src = own(&s, 0, 1, STORE_KV);
  store_adopt(&s, 1, 1, STORE_KV, MOVE_LO, 65536);
  store_block_t *dst = NULL;
  MF_ASSERT_EQ(store_lookup(&s, 1, 1, STORE_KV, &dst), 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(dst);
  uint64_t stays = put_keys_in(&s, src, 0, MOVE_LO, 8);
  uint64_t goes = put_keys_in(&s, src, MOVE_LO, 65536, 9);
  uint64_t moved = 0;
  GHashTable *moving = store_kv_take_range(src, MOVE_LO, 65536, &moved);
  MF_ASSERT_EQ(moved, goes);
  GByteArray *buf = g_byte_array_new();
  GHashTableIter it;
  gpointer p;
  g_hash_table_iter_init(&it, moving);
  while (g_hash_table_iter_next(&it, &p, NULL)) {
    const store_kv_entry_t *e = p;
    append_record(buf, store_kv_entry_key(e), e->h.klen, store_kv_entry_value(e), e->h.vlen);
  }
  uint64_t count = 0;
  MF_ASSERT_EQ(store_kv_migrate_in(&s, dst, buf->data, buf->len, MOVE_LO, 65536, &count), 0);
  MF_ASSERT_EQ(count, 9);
  g_hash_table_destroy(moving);
  store_kv_uncharge(src, moved);
  MF_ASSERT_EQ(src->used, stays);
  MF_ASSERT_EQ(dst->used, goes);
  for (int i = 0; i < 8; i++) CU_ASSERT(holds_key(src->kv, 0, MOVE_LO, i));
  for (int i = 0; i < 9; i++) {
    CU_ASSERT(holds_key(dst->kv, MOVE_LO, 65536, i));
    CU_ASSERT(!holds_key(src->kv, MOVE_LO, 65536, i));
    char key[32];
    uint32_t klen = key_in(key, sizeof key, MOVE_LO, 65536, i);
    MF_ASSERT_EQ(store_kv_check_slot(dst, wire_kv_hash(key, klen)), 0);
  }
  g_byte_array_free(buf, TRUE);
  store_free(&s);
}

/* --- file truncation --- */

static void test_file_truncate_shrinks_and_the_cut_bytes_read_as_zeros(void) {
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 0, 1, STORE_FILE);
  uint8_t data[BS], zeros[BS];
  for (size_t i = 0; i < BS; i++) data[i] = (uint8_t)(i * 7 + 1);
  memset(zeros, 0, sizeof zeros);
  MF_ASSERT_EQ(store_file_write(&s, b, 0, data, BS), 0);

  store_file_truncate(&s, b, 100);
  MF_ASSERT_EQ(b->size, 100);
  MF_ASSERT_EQ(b->used, 100);
  expect_read(b, 0, data, 100);
  const uint8_t *d = NULL;
  MF_ASSERT_EQ(store_file_read(b, 100, 1, &d), 0); /* nothing past the new size */
  /* A later write that extends the segment again shows zeros in the gap. */
  MF_ASSERT_EQ(store_file_write(&s, b, BS - 1, "z", 1), 0);
  MF_ASSERT_EQ(b->size, BS);
  expect_read(b, 0, data, 100);
  expect_read(b, 100, zeros, BS - 101);
  expect_read(b, BS - 1, "z", 1);

  /* Only shrinks: a larger or equal size changes nothing. */
  store_file_truncate(&s, b, BS);
  store_file_truncate(&s, b, UINT64_MAX);
  MF_ASSERT_EQ(b->size, BS);
  expect_read(b, BS - 1, "z", 1);
  store_file_truncate(&s, b, 50);
  store_file_truncate(&s, b, 60);
  MF_ASSERT_EQ(b->size, 50);
  MF_ASSERT_EQ(b->used, 50);

  /* To zero: empty, and nothing of it shows through a later write. */
  store_file_truncate(&s, b, 0);
  MF_ASSERT_EQ(b->size, 0);
  MF_ASSERT_EQ(b->used, 0);
  MF_ASSERT_EQ(store_file_read(b, 0, BS, &d), 0);
  MF_ASSERT_EQ(store_file_write(&s, b, BS - 1, "z", 1), 0);
  expect_read(b, 0, zeros, BS - 1);
  store_free(&s);
}

static void test_file_truncate_over_many_pages_touches_no_other_block(void) {
  /* 64 KiB blocks span many pages: the cut is zeroed within its page and
   * whole pages past it are given back, and nothing of the neighbours. */
  store_t s;
  const uint64_t bs = 64 * 1024;
  MF_ASSERT_EQ(store_init(&s, 3, bs), 0);
  uint8_t *pat = g_malloc(bs), *zeros = g_malloc0(bs);
  store_block_t *blk[3];
  for (int i = 0; i < 3; i++) {
    store_adopt(&s, i, 1, STORE_FILE, ALL_SLOTS);
    MF_ASSERT_EQ(store_lookup(&s, (uint32_t)i, 1, STORE_FILE, &blk[i]), 0);
    memset(pat, 0x50 + i, bs);
    MF_ASSERT_EQ(store_file_write(&s, blk[i], 0, pat, bs), 0);
  }
  const uint64_t sizes[] = {bs - 1, 40000, 8192, 5000, 1};
  for (size_t k = 0; k < G_N_ELEMENTS(sizes); k++) {
    store_file_truncate(&s, blk[1], sizes[k]);
    MF_ASSERT_EQ(blk[1]->size, sizes[k]);
    memset(pat, 0x51, bs);
    expect_read(blk[1], 0, pat, sizes[k]);
  }
  MF_ASSERT_EQ(store_file_write(&s, blk[1], bs - 1, "z", 1), 0);
  expect_read(blk[1], 1, zeros, bs - 2);
  for (int i = 0; i < 3; i += 2) {
    memset(pat, 0x50 + i, bs);
    expect_read(blk[i], 0, pat, bs);
  }
  g_free(pat);
  g_free(zeros);
  store_free(&s);
}

/* --- kv entry layout --- */

/* The only entry of a block's table. */
static const store_kv_entry_t *only_entry(store_block_t *b) {
  MF_ASSERT_EQ(g_hash_table_size(b->kv), 1);
  GHashTableIter it;
  gpointer e = NULL;
  g_hash_table_iter_init(&it, b->kv);
  CU_ASSERT_FATAL(g_hash_table_iter_next(&it, &e, NULL));
  return e;
}

static void test_kv_entry_is_one_allocation_of_head_key_and_value(void) {
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 0, 1, STORE_KV);
  const char key[] = "a\0key\0";
  const uint8_t val[] = {0, 'v', 0, 'w', 0};
  MF_ASSERT_EQ(kv_put(&s, b, key, 6, val, sizeof val), 0);
  const store_kv_entry_t *e = only_entry(b);
  /* The head: the hash of the key as wire_kv_hash computes it, the lengths;
   * then the key and the value, back to back, in the same allocation. */
  MF_ASSERT_EQ(sizeof(store_kv_head_t), 16);
  MF_ASSERT_EQ(e->h.hash, wire_kv_hash(key, 6));
  MF_ASSERT_EQ(e->h.klen, 6);
  MF_ASSERT_EQ(e->h.vlen, sizeof val);
  CU_ASSERT(memcmp(e->data, key, 6) == 0);
  CU_ASSERT(memcmp(e->data + 6, val, sizeof val) == 0);
  CU_ASSERT_PTR_EQUAL(store_kv_entry_key(e), e->data);
  CU_ASSERT_PTR_EQUAL(store_kv_entry_value(e), e->data + 6);
  /* A get borrows the entry's bytes: no copy. */
  uint32_t vlen = 0;
  CU_ASSERT_PTR_EQUAL(kv_get(b, key, 6, &vlen), store_kv_entry_value(e));
  MF_ASSERT_EQ(vlen, sizeof val);
  /* An overwrite is a new entry in place of the old one (the old one is
   * freed: the sanitizer build checks that nothing leaks). */
  MF_ASSERT_EQ(kv_put(&s, b, key, 6, "new", 3), 0);
  e = only_entry(b);
  MF_ASSERT_EQ(e->h.vlen, 3);
  CU_ASSERT(memcmp(store_kv_entry_value(e), "new", 3) == 0);
  CU_ASSERT_PTR_EQUAL(kv_get(b, key, 6, &vlen), store_kv_entry_value(e));
  /* An empty value still has a (non-NULL) place: it is present. */
  MF_ASSERT_EQ(kv_put(&s, b, key, 6, "", 0), 0);
  CU_ASSERT_PTR_NOT_NULL(kv_get(b, key, 6, &vlen));
  MF_ASSERT_EQ(vlen, 0);
  MF_ASSERT_EQ(kv_del(b, key, 6), 0);
  MF_ASSERT_EQ(g_hash_table_size(b->kv), 0);
  MF_ASSERT_EQ(b->used, 0);
  store_free(&s);
}

static void test_kv_lookups_use_the_callers_hash_and_compare_the_key(void) {
  /* The store never hashes a key itself: it finds entries by the hash it is
   * given, then compares length and bytes. Keys made to share a hash (the
   * caller says so) stay apart; the right key with another hash is not
   * found. */
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 0, 1, STORE_KV);
  const uint64_t h = 0x123456789abcdef0ULL;
  MF_ASSERT_EQ(store_kv_put(&s, b, h, "ab", 2, "1", 1), 0);
  MF_ASSERT_EQ(store_kv_put(&s, b, h, "ab\0", 3, "2", 1), 0); /* a prefix of another length */
  MF_ASSERT_EQ(store_kv_put(&s, b, h, "ac", 2, "3", 1), 0);   /* same length, other bytes */
  MF_ASSERT_EQ(g_hash_table_size(b->kv), 3);
  const char *want[] = {"1", "2", "3"};
  const char *keys[] = {"ab", "ab\0", "ac"};
  const uint32_t klens[] = {2, 3, 2};
  for (int i = 0; i < 3; i++) {
    uint32_t vlen = 0;
    const uint8_t *v = store_kv_get(b, h, keys[i], klens[i], &vlen);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    MF_ASSERT_EQ(vlen, 1);
    MF_ASSERT_EQ(v[0], want[i][0]);
  }
  uint32_t vlen = 0;
  CU_ASSERT_PTR_NULL(store_kv_get(b, h, "a", 1, &vlen));
  CU_ASSERT_PTR_NULL(store_kv_get(b, h + 1, "ab", 2, &vlen));
  /* Only the upper half of the hash differs from h: another table bucket. */
  CU_ASSERT_PTR_NULL(store_kv_get(b, h ^ (1ULL << 40), "ab", 2, &vlen));
  MF_ASSERT_EQ(store_kv_del(b, h + 1, "ab", 2), MAYFLY_ENOKEY);
  MF_ASSERT_EQ(store_kv_del(b, h, "ab", 2), 0);
  CU_ASSERT_PTR_NOT_NULL(store_kv_get(b, h, "ab\0", 3, &vlen));
  CU_ASSERT_PTR_NOT_NULL(store_kv_get(b, h, "ac", 2, &vlen));
  /* The slot check works from the hash too. */
  store_adopt(&s, 1, 1, STORE_KV, wire_kv_slot_of(h), wire_kv_slot_of(h) + 1);
  store_block_t *one = NULL;
  MF_ASSERT_EQ(store_lookup(&s, 1, 1, STORE_KV, &one), 0);
  MF_ASSERT_EQ(store_kv_check_slot(one, h), 0);
  MF_ASSERT_EQ(store_kv_check_slot(one, h + 1), MAYFLY_EMOVED);
  store_free(&s);
}

static void test_kv_key_longer_than_the_limit_is_invalid(void) {
  store_t s;
  MF_ASSERT_EQ(store_init(&s, 1, 256u << 10), 0);
  store_block_t *b = own(&s, 0, 1, STORE_KV);
  uint8_t *key = g_malloc0(WIRE_KEY_MAX + 1);
  MF_ASSERT_EQ(kv_put(&s, b, key, WIRE_KEY_MAX + 1, "v", 1), MAYFLY_EINVAL);
  MF_ASSERT_EQ(kv_put(&s, b, key, WIRE_KEY_MAX, "v", 1), 0);
  MF_ASSERT_EQ(b->used, store_kv_charge(WIRE_KEY_MAX, 1));
  /* A migration record with such a key is a protocol error; none is stored. */
  GByteArray *buf = g_byte_array_new();
  append_record(buf, "k", 1, "v", 1);
  append_record(buf, key, WIRE_KEY_MAX + 1, "v", 1);
  uint64_t count = 0;
  MF_ASSERT_EQ(store_kv_migrate_in(&s, b, buf->data, buf->len, ALL_SLOTS, &count),
               MAYFLY_EPROTO);
  MF_ASSERT_EQ(count, 0);
  MF_ASSERT_EQ(g_hash_table_size(b->kv), 1);
  g_byte_array_free(buf, TRUE);
  g_free(key);
  store_free(&s);
}

static void test_kv_migrated_records_become_entries_with_their_hash(void) {
  store_t s;
  fresh(&s);
  store_block_t *b = own(&s, 0, 1, STORE_KV);
  GByteArray *buf = g_byte_array_new();
  append_record(buf, "x\0y", 3, "1\0", 2);
  append_record(buf, "", 0, "empty key", 9);
  append_record(buf, "z", 1, "", 0);
  uint64_t count = 0;
  MF_ASSERT_EQ(store_kv_migrate_in(&s, b, buf->data, buf->len, ALL_SLOTS, &count), 0);
  MF_ASSERT_EQ(count, 3);
  GHashTableIter it;
  gpointer p;
  g_hash_table_iter_init(&it, b->kv);
  int n = 0;
  while (g_hash_table_iter_next(&it, &p, NULL)) {
    const store_kv_entry_t *e = p;
    MF_ASSERT_EQ(e->h.hash, wire_kv_hash(store_kv_entry_key(e), e->h.klen));
    n++;
  }
  MF_ASSERT_EQ(n, 3);
  expect_value(b, "x\0y", 3, "1\0", 2);
  expect_value(b, "", 0, "empty key", 9);
  expect_value(b, "z", 1, "", 0);
  MF_ASSERT_EQ(b->used, store_kv_charge(3, 2) + store_kv_charge(0, 9) + store_kv_charge(1, 0));
  g_byte_array_free(buf, TRUE);
  store_free(&s);
}

static void test_kv_charge_per_entry_is_what_the_store_accounts(void) {
  /* What a client reckons an entry costs (wire_kv_charge) is exactly what
   * the block is charged, for every
   * way an entry arrives or leaves; store_totals adds up what the blocks hold. */
  store_t s;
  MF_ASSERT_EQ(store_init(&s, 3, 64u << 10), 0);
  store_adopt(&s, 0, 1, STORE_KV, ALL_SLOTS);
  store_adopt(&s, 1, 1, STORE_KV, ALL_SLOTS);
  store_adopt(&s, 2, 1, STORE_QUEUE, 0, 0);
  store_block_t *a = &s.blocks[0], *b = &s.blocks[1];
  const uint32_t klens[] = {0, 1, 16, 100, 1000};
  const uint32_t vlens[] = {0, 1, 64, 1000, 20000};
  uint64_t total = 0;
  int entries = 0;
  for (size_t i = 0; i < G_N_ELEMENTS(klens); i++) {
    for (size_t j = 0; j < G_N_ELEMENTS(vlens); j++) {
      char key[1024];
      uint32_t klen = klens[i];
      if (klen == 0 && j > 0) continue; /* there is one empty key */
      memset(key, 'k', klen);
      if (klen >= 4) g_snprintf(key, 4, "%zu%zu", i, j); /* distinct keys */
      if (klen > 0 && klen < 4) key[0] = (char)('a' + j);
      uint8_t *val = g_malloc0(vlens[j] + 1);
      uint64_t before = a->used;
      int rc = kv_put(&s, a, key, klen, val, vlens[j]);
      if (rc == MAYFLY_EFULL) {
        g_free(val);
        continue;
      }
      MF_ASSERT_EQ(rc, 0);
      uint64_t charge = store_kv_charge(klen, vlens[j]);
      MF_ASSERT_EQ(charge, wire_kv_charge(klen, vlens[j]));
      MF_ASSERT_EQ(a->used - before, charge);
      total += charge;
      entries++;
      g_free(val);
    }
  }
  MF_ASSERT_EQ(a->used, total);
  uint64_t charged = 0, kv_entries = 0;
  MF_ASSERT_EQ(store_queue_push(&s, &s.blocks[2], "item", 4), 0);
  store_totals(&s, &charged, &kv_entries);
  MF_ASSERT_EQ(charged, total + wire_queue_charge(4));
  MF_ASSERT_EQ(kv_entries, (uint64_t)entries);
  /* Set aside for a repartition, the entries stay charged and counted. */
  uint64_t moved = 0;
  GHashTable *moving = store_kv_take_range(a, ALL_SLOTS, &moved);
  a->rp_moving = moving;
  MF_ASSERT_EQ(moved, total);
  MF_ASSERT_EQ(store_kv_count(a), (uint64_t)entries);
  store_totals(&s, &charged, &kv_entries);
  MF_ASSERT_EQ(kv_entries, (uint64_t)entries);
  /* Migrated to the other block, they are charged there the same. */
  GByteArray *buf = g_byte_array_new();
  GHashTableIter it;
  gpointer p;
  g_hash_table_iter_init(&it, moving);
  while (g_hash_table_iter_next(&it, &p, NULL)) {
    const store_kv_entry_t *e = p;
    append_record(buf, store_kv_entry_key(e), e->h.klen, store_kv_entry_value(e), e->h.vlen);
  }
  uint64_t count = 0;
  MF_ASSERT_EQ(store_kv_migrate_in(&s, b, buf->data, buf->len, ALL_SLOTS, &count), 0);
  MF_ASSERT_EQ(count, (uint64_t)entries);
  MF_ASSERT_EQ(b->used, total);
  a->rp_moving = NULL;
  g_hash_table_destroy(moving);
  store_kv_uncharge(a, moved);
  MF_ASSERT_EQ(a->used, 0);
  /* Dropped, they are uncharged to zero. */
  store_kv_drop_range(b, ALL_SLOTS);
  MF_ASSERT_EQ(b->used, 0);
  store_totals(&s, &charged, &kv_entries);
  MF_ASSERT_EQ(charged, wire_queue_charge(4));
  MF_ASSERT_EQ(kv_entries, 0);
  g_byte_array_free(buf, TRUE);
  store_free(&s);
}

/* --- the charge against the allocator --- */

typedef int (*mallctl_fn)(const char *, void *, size_t *, void *, size_t);

/* What an allocation p of n bytes takes beyond its usable size, for the
 * allocator this process runs on: jemalloc (when linked, it exports mallctl)
 * adds a page to large allocations when cache-oblivious placement is on;
 * glibc has an 8-byte chunk header, 16 for a mapped chunk (128 KiB and up),
 * and may hand out a free chunk 16 bytes larger than asked (usable covers it);
 * ASan's usable size is the request, so glibc's terms only overstate it. */
static uint64_t beyond_usable(size_t usable, size_t n, mallctl_fn mallctl, bool oblivious) {
  if (mallctl != NULL) return usable >= (16u << 10) && oblivious ? 4096 : 0;
  return n >= (128u << 10) - 32 ? 16 : 8;
}

/* Asserts that the charge of an entry of klen + vlen covers a real
 * allocation of its bytes and the table's slot cost. Returns 1 if it did. */
static int charge_covers(uint64_t klen, uint64_t vlen, mallctl_fn mallctl, bool oblivious) {
  size_t n = (size_t)(WIRE_KV_ENTRY_HEAD + klen + vlen);
  void *p = malloc(n);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  size_t usable = malloc_usable_size(p);
  free(p);
  uint64_t real = usable + beyond_usable(usable, n, mallctl, oblivious) + WIRE_KV_SLOT_CHARGE;
  uint64_t charge = store_kv_charge(klen, vlen);
  if (charge >= real && usable >= n) return 1;
  fprintf(stderr, "  klen %llu vlen %llu: %zu bytes usable of %zu, real %llu, charged %llu\n",
          (unsigned long long)klen, (unsigned long long)vlen, usable, n,
          (unsigned long long)real, (unsigned long long)charge);
  return 0;
}

static void test_kv_charge_covers_the_allocation_and_the_table_slot(void) {
  mallctl_fn mallctl;
  *(void **)&mallctl = dlsym(RTLD_DEFAULT, "mallctl");
  bool oblivious = true;
  size_t blen = sizeof oblivious;
  if (mallctl != NULL && mallctl("opt.cache_oblivious", &oblivious, &blen, NULL, 0) != 0) {
    oblivious = true; /* not reported: assume the default */
  }
  fprintf(stderr, "  allocator: %s\n", mallctl != NULL ? "jemalloc" : "glibc or a sanitizer's");
  /* Known values: the head, key and value rounded to the class, plus 48. */
  MF_ASSERT_EQ(store_kv_charge(16, 64), 128 + WIRE_KV_SLOT_CHARGE);   /* 96 + 24 -> 128 */
  MF_ASSERT_EQ(store_kv_charge(10, 1000), 1280 + WIRE_KV_SLOT_CHARGE); /* 1026 -> 1280 */
  MF_ASSERT_EQ(store_kv_charge(0, 0), 48 + WIRE_KV_SLOT_CHARGE);
  MF_ASSERT_EQ(store_kv_charge(0, (1u << 20) - 16), (1u << 20) + 4096 + WIRE_KV_SLOT_CHARGE);
  MF_ASSERT_EQ(store_kv_charge(0, UINT64_MAX), UINT64_MAX);
  MF_ASSERT_EQ(store_kv_charge(UINT64_MAX, 0), UINT64_MAX);

  int failed = 0, checked = 0;
  uint64_t prev = 0;
  /* Every entry size up to 40 KiB (all small classes and the first large
   * ones), with the bytes split between key and value in turn; the charge
   * never decreases with the size. */
  for (uint64_t sum = 0; sum <= (40u << 10); sum++) {
    uint64_t klen = MIN(sum, (uint64_t)(sum % 3 == 0 ? 0 : sum % 3 == 1 ? 10 : WIRE_KEY_MAX));
    CU_ASSERT(store_kv_charge(klen, sum - klen) >= prev);
    prev = store_kv_charge(klen, sum - klen);
    failed += !charge_covers(klen, sum - klen, mallctl, oblivious);
    checked++;
  }
  /* Up to 8 MiB: each jemalloc class boundary (four per doubling), a page
   * boundary, and the sizes just under and over each, for keys of 0 bytes to
   * WIRE_KEY_MAX. */
  const uint64_t klens[] = {0, 1, 16, 1000, WIRE_KEY_MAX};
  for (uint64_t pow = 32u << 10; pow <= (8u << 20); pow *= 2) {
    for (uint64_t q = 0; q < 4; q++) {
      uint64_t edge = pow + q * (pow / 4);
      for (int64_t d = -24; d <= 24; d += 8) {
        for (size_t i = 0; i < G_N_ELEMENTS(klens); i++) {
          uint64_t n = edge + (uint64_t)d; /* the allocation's size */
          if (n < WIRE_KV_ENTRY_HEAD + klens[i]) continue;
          uint64_t vlen = n - WIRE_KV_ENTRY_HEAD - klens[i];
          failed += !charge_covers(klens[i], vlen, mallctl, oblivious);
          failed += !charge_covers(klens[i], vlen + 1, mallctl, oblivious);
          checked += 2;
        }
      }
    }
  }
  /* Random sizes of up to 4 MiB. */
  GRand *r = g_rand_new_with_seed(9);
  for (int i = 0; i < 2000; i++) {
    uint64_t klen = (uint64_t)g_rand_int_range(r, 0, WIRE_KEY_MAX + 1);
    uint64_t vlen = (uint64_t)g_rand_int_range(r, 0, 4 << 20);
    failed += !charge_covers(klen, vlen, mallctl, oblivious);
    checked++;
  }
  g_rand_free(r);
  fprintf(stderr, "  %d sizes checked, %d not covered\n", checked, failed);
  MF_ASSERT_EQ(failed, 0);
}

/* Asserts that the charge of a queue item of len bytes covers a real
 * allocation of its head and bytes and of its list link. */
static int queue_charge_covers(uint64_t len, mallctl_fn mallctl, bool oblivious) {
  size_t n = (size_t)(WIRE_QUEUE_ITEM_HEAD + len);
  void *p = malloc(n), *link = malloc(WIRE_QUEUE_LINK_SIZE);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  CU_ASSERT_PTR_NOT_NULL_FATAL(link);
  size_t usable = malloc_usable_size(p), lusable = malloc_usable_size(link);
  free(p);
  free(link);
  uint64_t real = usable + beyond_usable(usable, n, mallctl, oblivious) + lusable +
                  beyond_usable(lusable, WIRE_QUEUE_LINK_SIZE, mallctl, oblivious);
  if (wire_queue_charge(len) >= real) return 1;
  fprintf(stderr, "  item of %llu bytes: real %llu, charged %llu\n", (unsigned long long)len,
          (unsigned long long)real, (unsigned long long)wire_queue_charge(len));
  return 0;
}

static void test_queue_charge_covers_the_item_and_its_link(void) {
  mallctl_fn mallctl;
  *(void **)&mallctl = dlsym(RTLD_DEFAULT, "mallctl");
  bool oblivious = true;
  size_t blen = sizeof oblivious;
  if (mallctl != NULL && mallctl("opt.cache_oblivious", &oblivious, &blen, NULL, 0) != 0) {
    oblivious = true;
  }
  MF_ASSERT_EQ(wire_queue_charge(UINT64_MAX), UINT64_MAX);
  int failed = 0, checked = 0;
  uint64_t prev = 0;
  for (uint64_t len = 0; len <= (40u << 10); len++) {
    CU_ASSERT(wire_queue_charge(len) >= prev);
    prev = wire_queue_charge(len);
    failed += !queue_charge_covers(len, mallctl, oblivious);
    checked++;
  }
  for (uint64_t pow = 32u << 10; pow <= (8u << 20); pow *= 2) {
    for (uint64_t q = 0; q < 4; q++) {
      for (int64_t d = -24; d <= 24; d += 4) {
        uint64_t n = pow + q * (pow / 4) + (uint64_t)d;
        failed += !queue_charge_covers(n - WIRE_QUEUE_ITEM_HEAD, mallctl, oblivious);
        checked++;
      }
    }
  }
  fprintf(stderr, "  %d item sizes checked, %d not covered\n", checked, failed);
  MF_ASSERT_EQ(failed, 0);
}

int main(void) {
  static const mf_test_t tests[] = {
      {"an index out of range is invalid", test_index_out_of_range_is_invalid},
      {"an unconfirmed generation must be confirmed first",
       test_unconfirmed_generation_must_be_confirmed_first},
      {"the adopted generation is served and others are not",
       test_adopted_generation_is_served_and_others_are_not},
      {"release makes the generation stale", test_release_makes_the_generation_stale},
      {"release of a generation never adopted makes it stale",
       test_release_of_a_generation_never_adopted_makes_it_stale},
      {"release of an older generation keeps the owner",
       test_release_of_an_older_generation_keeps_the_owner},
      {"adopt of an older generation is ignored", test_adopt_of_an_older_generation_is_ignored},
      {"a newer owner replaces the old one, empty", test_a_newer_owner_replaces_the_old_one_empty},
      {"a new owner starts with no repartition wait",
       test_a_new_owner_starts_with_no_repartition_wait},
      {"counts blocks in use and the highest generation",
       test_counts_blocks_in_use_and_the_highest_generation},
      {"file: reads back what was written at offsets",
       test_file_reads_back_what_was_written_at_offsets},
      {"file: reads past the size are short", test_file_reads_past_the_size_are_short},
      {"file: a write beyond the block is refused and changes nothing",
       test_file_write_beyond_the_block_is_refused_and_changes_nothing},
      {"file: blocks do not overlap", test_file_blocks_do_not_overlap},
      {"file: data of an old generation never shows through",
       test_file_data_of_an_old_generation_never_shows_through},
      {"queue: FIFO, and peek does not take", test_queue_is_fifo_and_peek_does_not_take},
      {"queue: an item bigger than a block is too big",
       test_queue_item_bigger_than_a_block_is_too_big},
      {"queue: a full segment is sealed", test_queue_full_segment_is_sealed},
      {"queue: accounting follows pushes and pops", test_queue_accounting_follows_pushes_and_pops},
      {"kv: put, get, overwrite, delete with binary keys",
       test_kv_put_get_overwrite_delete_with_binary_keys},
      {"kv: the value is a copy of the caller's bytes",
       test_kv_value_is_a_copy_of_the_callers_bytes},
      {"kv: the slot must lie in the block's range", test_kv_slot_must_lie_in_the_blocks_range},
      {"kv: a put that does not fit is full and keeps the old value",
       test_kv_put_that_does_not_fit_is_full_and_keeps_the_old_value},
      {"kv: a value length near UINT64_MAX is too big",
       test_kv_value_length_near_uint64_max_is_too_big},
      {"kv: the budget holds over random operations", test_kv_budget_holds_over_random_operations},
      {"release drops every kind's contents", test_release_drops_every_kinds_contents},
      {"kv and queue contents of an old generation never show through",
       test_kv_contents_of_an_old_generation_never_show_through},
      {"64 KiB blocks work the same", test_large_blocks_work_the_same},
      {"kv: take_range sets the slots aside, still charged",
       test_kv_take_range_sets_the_slots_aside_still_charged},
      {"kv: take_range is inclusive at lo and exclusive at hi",
       test_kv_take_range_is_inclusive_at_lo_and_exclusive_at_hi},
      {"kv: restore brings the entries back", test_kv_restore_brings_the_entries_back},
      {"kv: uncharge after a commit makes room", test_kv_uncharge_after_a_commit_makes_room},
      {"kv: migrate_in stores every record", test_kv_migrate_in_stores_every_record},
      {"kv: migrate_in checks every record before storing any",
       test_kv_migrate_in_checks_every_record_before_storing_any},
      {"kv: migrate_in that does not fit is full and keeps the ones before",
       test_kv_migrate_in_that_does_not_fit_is_full_and_keeps_the_ones_before},
      {"kv: drop_range drops those slots and uncharges them",
       test_kv_drop_range_drops_those_slots_and_uncharges_them},
      {"kv: a split moves every entry to exactly one block",
       test_kv_split_moves_every_entry_to_exactly_one_block},
      {"kv: an entry is one allocation of head, key and value",
       test_kv_entry_is_one_allocation_of_head_key_and_value},
      {"kv: lookups use the caller's hash and compare the key",
       test_kv_lookups_use_the_callers_hash_and_compare_the_key},
      {"kv: a key longer than the limit is invalid", test_kv_key_longer_than_the_limit_is_invalid},
      {"kv: migrated records become entries with their hash",
       test_kv_migrated_records_become_entries_with_their_hash},
      {"kv: the charge per entry is what the store accounts",
       test_kv_charge_per_entry_is_what_the_store_accounts},
      {"queue: the charge covers the item and its list link",
       test_queue_charge_covers_the_item_and_its_link},
      {"kv: the charge covers the allocation and the table slot",
       test_kv_charge_covers_the_allocation_and_the_table_slot},
      {"file: truncate shrinks, and the cut bytes read as zeros",
       test_file_truncate_shrinks_and_the_cut_bytes_read_as_zeros},
      {"file: truncate over many pages touches no other block",
       test_file_truncate_over_many_pages_touches_no_other_block},
      {NULL, NULL}};
  return mf_test_run("store", NULL, NULL, tests);
}
