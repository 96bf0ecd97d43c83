/*
 * Unit tests for namespaces/alloc.c: the block allocator.
 *
 * What users rely on: every registered block is counted, a request spreads over
 * the emptiest servers that are up, the pool says ENOSERVERS or ENOSPC instead
 * of handing out a block twice, and a block reference goes stale (EMOVED) the
 * moment its block is freed.
 */
#include <string.h>

#include "common/error.h"
#include "mf_test.h"
#include "namespaces/alloc.h"

/* An allocator with `n` servers "ms1:7000", "ms2:7000", ... of `nblocks`
 * blocks of 1 KiB each; their ids are 1..n. */
static ns_alloc_t *alloc_with(int n, int32_t nblocks) {
  ns_alloc_t *a = ns_alloc_new();
  for (int i = 1; i <= n; i++) {
    char addr[32];
    snprintf(addr, sizeof addr, "ms%d:7000", i);
    int32_t id = 0;
    MF_ASSERT_EQ(ns_alloc_add_server(a, addr, nblocks, 1024, &id), 0);
    MF_ASSERT_EQ(id, i);
  }
  return a;
}

/* Picks n blocks and takes them, as the tree does when it applies a record. */
static void take_n(ns_alloc_t *a, int n, ns_block_t *out) {
  MF_ASSERT_EQ(ns_alloc_pick(a, n, out), 0);
  for (int i = 0; i < n; i++) MF_ASSERT_EQ(ns_alloc_take(a, &out[i]), 0);
}

/* Takes a specific block of a server at its current generation. */
static ns_block_t take_index(ns_alloc_t *a, int32_t server, int32_t index) {
  ns_server_t *s = ns_alloc_server(a, server);
  ns_block_t b = {server, index, s->generation[index]};
  MF_ASSERT_EQ(ns_alloc_take(a, &b), 0);
  return b;
}

/* Counts how many of the blocks lie on each server: per_server[id] for ids
 * 1..max_id. */
static void count_by_server(const ns_block_t *b, int n, int *per_server, int max_id) {
  memset(per_server, 0, sizeof(int) * (size_t)(max_id + 1));
  for (int i = 0; i < n; i++) {
    CU_ASSERT(b[i].server >= 1 && b[i].server <= max_id);
    if (b[i].server >= 1 && b[i].server <= max_id) per_server[b[i].server]++;
  }
}

static void test_registering_servers_counts_their_blocks(void) {
  ns_alloc_t *a = ns_alloc_new();
  MF_ASSERT_EQ(a->blocks_total, 0);
  int32_t id1 = 0, id2 = 0;
  MF_ASSERT_EQ(ns_alloc_add_server(a, "10.0.0.1:7000", 4, 4096, &id1), 0);
  MF_ASSERT_EQ(ns_alloc_add_server(a, "10.0.0.2:7000", 6, 8192, &id2), 0);
  MF_ASSERT_EQ(id1, 1);
  MF_ASSERT_EQ(id2, 2);
  MF_ASSERT_EQ(a->blocks_total, 10);
  MF_ASSERT_EQ(a->blocks_used, 0);

  ns_server_t *s2 = ns_alloc_server(a, id2);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s2);
  CU_ASSERT_STRING_EQUAL(s2->address, "10.0.0.2:7000");
  MF_ASSERT_EQ(s2->nblocks, 6);
  MF_ASSERT_EQ(s2->block_size, 8192);
  MF_ASSERT_EQ(s2->up, 1);
  MF_ASSERT_EQ(s2->used, 0);
  CU_ASSERT_PTR_EQUAL(ns_alloc_server_by_address(a, "10.0.0.1:7000"), ns_alloc_server(a, id1));
  CU_ASSERT_PTR_NULL(ns_alloc_server_by_address(a, "10.0.0.3:7000"));
  CU_ASSERT_PTR_NULL(ns_alloc_server(a, 0));
  CU_ASSERT_PTR_NULL(ns_alloc_server(a, 3));
  CU_ASSERT_PTR_NULL(ns_alloc_server(a, -1));
  ns_alloc_free(a);
  ns_alloc_free(NULL);
}

static void test_bad_geometry_is_refused(void) {
  ns_alloc_t *a = ns_alloc_new();
  int32_t id = -5;
  MF_ASSERT_EQ(ns_alloc_add_server(a, NULL, 4, 1024, &id), MAYFLY_EINVAL);
  MF_ASSERT_EQ(ns_alloc_add_server(a, "", 4, 1024, &id), MAYFLY_EINVAL);
  MF_ASSERT_EQ(ns_alloc_add_server(a, "ms:1", 0, 1024, &id), MAYFLY_EINVAL);
  MF_ASSERT_EQ(ns_alloc_add_server(a, "ms:1", -3, 1024, &id), MAYFLY_EINVAL);
  MF_ASSERT_EQ(ns_alloc_add_server(a, "ms:1", NS_ALLOC_MAX_BLOCKS + 1, 1024, &id),
               MAYFLY_EINVAL);
  MF_ASSERT_EQ(ns_alloc_add_server(a, "ms:1", 4, 0, &id), MAYFLY_EINVAL);
  MF_ASSERT_EQ(ns_alloc_add_server(a, "ms:1", 4, -1, &id), MAYFLY_EINVAL);
  MF_ASSERT_EQ(a->servers->len, 0);
  MF_ASSERT_EQ(a->blocks_total, 0);
  MF_ASSERT_EQ(id, -5);
  /* The limits themselves are fine. */
  MF_ASSERT_EQ(ns_alloc_add_server(a, "ms:1", 1, 1, &id), 0);
  MF_ASSERT_EQ(a->blocks_total, 1);
  ns_alloc_free(a);
}

static void test_reregistering_keeps_the_id_and_marks_the_server_up(void) {
  ns_alloc_t *a = alloc_with(2, 4);
  ns_block_t b = take_index(a, 2, 0);
  MF_ASSERT_EQ(ns_alloc_set_up(a, 2, 0), 0);
  MF_ASSERT_EQ(ns_alloc_server(a, 2)->up, 0);

  int32_t id = 0;
  MF_ASSERT_EQ(ns_alloc_add_server(a, "ms2:7000", 4, 1024, &id), 0);
  MF_ASSERT_EQ(id, 2);
  MF_ASSERT_EQ(a->servers->len, 2);
  MF_ASSERT_EQ(ns_alloc_server(a, 2)->up, 1);
  /* Same geometry: the blocks in use stay in use and nothing is recounted. */
  MF_ASSERT_EQ(a->blocks_total, 8);
  MF_ASSERT_EQ(a->blocks_used, 1);
  MF_ASSERT_EQ(ns_alloc_server(a, 2)->used, 1);
  MF_ASSERT_EQ(ns_alloc_release(a, &b), 0);
  ns_alloc_free(a);
}

static void test_geometry_change_is_refused_while_blocks_are_in_use(void) {
  ns_alloc_t *a = alloc_with(1, 4);
  ns_block_t b = take_index(a, 1, 0);
  int32_t id = 0;
  MF_ASSERT_EQ(ns_alloc_add_server(a, "ms1:7000", 8, 1024, &id), MAYFLY_EPERM);
  MF_ASSERT_EQ(ns_alloc_add_server(a, "ms1:7000", 4, 2048, &id), MAYFLY_EPERM);
  ns_server_t *s = ns_alloc_server(a, 1);
  MF_ASSERT_EQ(s->nblocks, 4);
  MF_ASSERT_EQ(s->block_size, 1024);
  MF_ASSERT_EQ(a->blocks_total, 4);
  MF_ASSERT_EQ(a->blocks_used, 1);
  /* The block in use is still the same block. */
  MF_ASSERT_EQ(ns_alloc_release(a, &b), 0);
  ns_alloc_free(a);
}

static void test_geometry_may_change_while_no_block_is_in_use(void) {
  ns_alloc_t *a = alloc_with(2, 4);
  int32_t id = 0;
  MF_ASSERT_EQ(ns_alloc_add_server(a, "ms1:7000", 10, 4096, &id), 0);
  MF_ASSERT_EQ(id, 1);
  ns_server_t *s = ns_alloc_server(a, 1);
  MF_ASSERT_EQ(s->nblocks, 10);
  MF_ASSERT_EQ(s->block_size, 4096);
  MF_ASSERT_EQ(a->blocks_total, 14);
  MF_ASSERT_EQ(ns_alloc_add_server(a, "ms1:7000", 2, 4096, &id), 0);
  MF_ASSERT_EQ(a->blocks_total, 6);
  /* Every new block can be handed out: 2 on ms1 + 4 on ms2, then nothing. */
  ns_block_t out[6];
  take_n(a, 6, out);
  MF_ASSERT_EQ(a->blocks_used, 6);
  MF_ASSERT_EQ(ns_alloc_pick(a, 1, out), MAYFLY_ENOSPC);
  ns_alloc_free(a);
}

/* Regression: a server that re-registers with a new geometry must not hand a
 * block out again under a generation an earlier owner already held, or a
 * client with a stale layout could read or write the new owner's data. */
static void test_geometry_change_does_not_revive_stale_references(void) {
  ns_alloc_t *a = alloc_with(1, 4);
  ns_block_t old = take_index(a, 1, 0);
  MF_ASSERT_EQ(ns_alloc_release(a, &old), 0); /* `old` is now stale */
  int32_t id = 0;
  MF_ASSERT_EQ(ns_alloc_add_server(a, "ms1:7000", 8, 1024, &id), 0);
  ns_block_t fresh;
  MF_ASSERT_EQ(ns_alloc_pick(a, 1, &fresh), 0);
  MF_ASSERT_EQ(fresh.index, old.index);
  CU_ASSERT(fresh.generation != old.generation);
  MF_ASSERT_EQ(ns_alloc_take(a, &old), MAYFLY_EMOVED);
  ns_alloc_free(a);
}

static void test_pick_spreads_a_request_one_block_per_server(void) {
  ns_alloc_t *a = alloc_with(3, 4);
  ns_block_t out[3];
  MF_ASSERT_EQ(ns_alloc_pick(a, 3, out), 0);
  int per[4];
  count_by_server(out, 3, per, 3);
  MF_ASSERT_EQ(per[1], 1);
  MF_ASSERT_EQ(per[2], 1);
  MF_ASSERT_EQ(per[3], 1);
  /* Six blocks: two per server. */
  ns_block_t six[6];
  MF_ASSERT_EQ(ns_alloc_pick(a, 6, six), 0);
  count_by_server(six, 6, per, 3);
  MF_ASSERT_EQ(per[1], 2);
  MF_ASSERT_EQ(per[2], 2);
  MF_ASSERT_EQ(per[3], 2);
  ns_alloc_free(a);
}

static void test_pick_changes_nothing(void) {
  ns_alloc_t *a = alloc_with(2, 4);
  ns_block_t first[3], again[3];
  MF_ASSERT_EQ(ns_alloc_pick(a, 3, first), 0);
  MF_ASSERT_EQ(a->blocks_used, 0);
  MF_ASSERT_EQ(ns_alloc_server(a, 1)->used, 0);
  MF_ASSERT_EQ(ns_alloc_server(a, 2)->used, 0);
  MF_ASSERT_EQ(ns_alloc_pick(a, 3, again), 0);
  CU_ASSERT(memcmp(first, again, sizeof first) == 0);
  /* What was picked can then be taken as picked. */
  for (int i = 0; i < 3; i++) MF_ASSERT_EQ(ns_alloc_take(a, &first[i]), 0);
  MF_ASSERT_EQ(a->blocks_used, 3);
  ns_alloc_free(a);
}

static void test_pick_goes_to_the_least_used_servers_first(void) {
  ns_alloc_t *a = alloc_with(3, 4);
  /* ms1 three quarters full, ms2 one quarter, ms3 empty. */
  take_index(a, 1, 0);
  take_index(a, 1, 1);
  take_index(a, 1, 2);
  take_index(a, 2, 0);
  ns_block_t one;
  MF_ASSERT_EQ(ns_alloc_pick(a, 1, &one), 0);
  MF_ASSERT_EQ(one.server, 3);
  ns_block_t out[3];
  MF_ASSERT_EQ(ns_alloc_pick(a, 3, out), 0);
  int per[4];
  count_by_server(out, 3, per, 3);
  MF_ASSERT_EQ(per[1], 0); /* the fullest gets nothing while others are emptier */
  MF_ASSERT_EQ(per[2], 1);
  MF_ASSERT_EQ(per[3], 2);
  ns_alloc_free(a);
}

static void test_least_used_means_smallest_fraction_in_use(void) {
  ns_alloc_t *a = ns_alloc_new();
  int32_t big = 0, small = 0;
  MF_ASSERT_EQ(ns_alloc_add_server(a, "big:1", 8, 1024, &big), 0);
  MF_ASSERT_EQ(ns_alloc_add_server(a, "small:1", 2, 1024, &small), 0);
  /* big: 3 of 8 in use (37.5%); small: 1 of 2 (50%). big has more blocks in
   * use but is emptier. */
  take_index(a, big, 0);
  take_index(a, big, 1);
  take_index(a, big, 2);
  take_index(a, small, 0);
  ns_block_t b;
  MF_ASSERT_EQ(ns_alloc_pick(a, 1, &b), 0);
  MF_ASSERT_EQ(b.server, big);
  ns_alloc_free(a);
}

static void test_pick_never_hands_out_a_block_twice(void) {
  ns_alloc_t *a = alloc_with(3, 4);
  take_index(a, 2, 1);
  ns_block_t out[11];
  MF_ASSERT_EQ(ns_alloc_pick(a, 11, out), 0);
  for (int i = 0; i < 11; i++) {
    CU_ASSERT(!(out[i].server == 2 && out[i].index == 1)); /* already taken */
    for (int j = i + 1; j < 11; j++) {
      CU_ASSERT(!(out[i].server == out[j].server && out[i].index == out[j].index));
    }
  }
  for (int i = 0; i < 11; i++) MF_ASSERT_EQ(ns_alloc_take(a, &out[i]), 0);
  MF_ASSERT_EQ(a->blocks_used, 12);
  ns_alloc_free(a);
}

static void test_pick_never_chooses_a_server_marked_down(void) {
  ns_alloc_t *a = alloc_with(3, 4);
  MF_ASSERT_EQ(ns_alloc_set_up(a, 2, 0), 0);
  ns_block_t out[8];
  MF_ASSERT_EQ(ns_alloc_pick(a, 8, out), 0);
  int per[4];
  count_by_server(out, 8, per, 3);
  MF_ASSERT_EQ(per[2], 0);
  MF_ASSERT_EQ(per[1], 4);
  MF_ASSERT_EQ(per[3], 4);
  /* The down server's free blocks do not make up a shortfall. */
  MF_ASSERT_EQ(ns_alloc_pick(a, 9, out), MAYFLY_ENOSPC);
  /* Back up, it is the emptiest and is chosen. */
  MF_ASSERT_EQ(ns_alloc_set_up(a, 2, 1), 0);
  take_index(a, 1, 0);
  take_index(a, 3, 0);
  MF_ASSERT_EQ(ns_alloc_pick(a, 1, out), 0);
  MF_ASSERT_EQ(out[0].server, 2);
  MF_ASSERT_EQ(ns_alloc_set_up(a, 4, 0), MAYFLY_ESERVER);
  MF_ASSERT_EQ(ns_alloc_set_up(a, 0, 1), MAYFLY_ESERVER);
  ns_alloc_free(a);
}

static void test_no_servers_registered_or_up_is_enoservers(void) {
  ns_alloc_t *a = ns_alloc_new();
  ns_block_t out[2];
  MF_ASSERT_EQ(ns_alloc_pick(a, 1, out), MAYFLY_ENOSERVERS);
  ns_alloc_free(a);

  a = alloc_with(2, 4);
  MF_ASSERT_EQ(ns_alloc_set_up(a, 1, 0), 0);
  MF_ASSERT_EQ(ns_alloc_set_up(a, 2, 0), 0);
  MF_ASSERT_EQ(ns_alloc_pick(a, 1, out), MAYFLY_ENOSERVERS);
  MF_ASSERT_EQ(ns_alloc_set_up(a, 1, 1), 0);
  MF_ASSERT_EQ(ns_alloc_pick(a, 2, out), 0);
  MF_ASSERT_EQ(out[0].server, 1);
  MF_ASSERT_EQ(out[1].server, 1);
  ns_alloc_free(a);
}

static void test_exhausted_pool_is_enospc(void) {
  ns_alloc_t *a = alloc_with(2, 2);
  ns_block_t out[5];
  MF_ASSERT_EQ(ns_alloc_pick(a, 5, out), MAYFLY_ENOSPC); /* more than exist */
  MF_ASSERT_EQ(ns_alloc_pick(a, 4, out), 0);
  take_n(a, 3, out);
  MF_ASSERT_EQ(ns_alloc_pick(a, 2, out), MAYFLY_ENOSPC);
  MF_ASSERT_EQ(ns_alloc_pick(a, 1, out), 0);
  MF_ASSERT_EQ(ns_alloc_take(a, &out[0]), 0);
  MF_ASSERT_EQ(a->blocks_used, 4);
  MF_ASSERT_EQ(ns_alloc_pick(a, 1, out), MAYFLY_ENOSPC);
  MF_ASSERT_EQ(ns_alloc_pick(a, 0, out), 0); /* asking for nothing is fine */
  MF_ASSERT_EQ(ns_alloc_pick(a, -1, out), MAYFLY_EINVAL);
  ns_alloc_free(a);
}

static void test_take_and_release_account_for_blocks(void) {
  ns_alloc_t *a = alloc_with(2, 4);
  ns_block_t out[3];
  take_n(a, 3, out);
  MF_ASSERT_EQ(a->blocks_total, 8);
  MF_ASSERT_EQ(a->blocks_used, 3);
  MF_ASSERT_EQ(ns_alloc_server(a, 1)->used + ns_alloc_server(a, 2)->used, 3);
  for (int i = 0; i < 3; i++) {
    ns_server_t *s = ns_alloc_server(a, out[i].server);
    MF_ASSERT_EQ(s->in_use[out[i].index], 1);
  }
  MF_ASSERT_EQ(ns_alloc_release(a, &out[1]), 0);
  MF_ASSERT_EQ(a->blocks_used, 2);
  MF_ASSERT_EQ(ns_alloc_server(a, out[1].server)->in_use[out[1].index], 0);
  MF_ASSERT_EQ(ns_alloc_release(a, &out[0]), 0);
  MF_ASSERT_EQ(ns_alloc_release(a, &out[2]), 0);
  MF_ASSERT_EQ(a->blocks_used, 0);
  MF_ASSERT_EQ(a->blocks_total, 8);
  /* Every block can be handed out again. */
  ns_block_t all[8];
  take_n(a, 8, all);
  MF_ASSERT_EQ(a->blocks_used, 8);
  ns_alloc_free(a);
}

static void test_a_block_cannot_be_taken_twice(void) {
  ns_alloc_t *a = alloc_with(1, 4);
  ns_block_t b;
  MF_ASSERT_EQ(ns_alloc_pick(a, 1, &b), 0);
  MF_ASSERT_EQ(ns_alloc_take(a, &b), 0);
  MF_ASSERT_EQ(ns_alloc_take(a, &b), MAYFLY_EMOVED);
  MF_ASSERT_EQ(a->blocks_used, 1);
  /* The next pick does not offer it either. */
  ns_block_t next;
  MF_ASSERT_EQ(ns_alloc_pick(a, 1, &next), 0);
  CU_ASSERT(next.index != b.index);
  ns_alloc_free(a);
}

static void test_release_makes_every_older_reference_stale(void) {
  ns_alloc_t *a = alloc_with(1, 1);
  ns_block_t b;
  MF_ASSERT_EQ(ns_alloc_pick(a, 1, &b), 0);
  MF_ASSERT_EQ(ns_alloc_take(a, &b), 0);
  MF_ASSERT_EQ(ns_alloc_release(a, &b), 0);
  /* Released twice: refused, and the accounting does not go negative. */
  MF_ASSERT_EQ(ns_alloc_release(a, &b), MAYFLY_EMOVED);
  MF_ASSERT_EQ(a->blocks_used, 0);
  MF_ASSERT_EQ(ns_alloc_server(a, 1)->used, 0);
  /* The stale reference cannot take the block back. */
  MF_ASSERT_EQ(ns_alloc_take(a, &b), MAYFLY_EMOVED);
  /* The block is handed out again under a new generation... */
  ns_block_t again;
  MF_ASSERT_EQ(ns_alloc_pick(a, 1, &again), 0);
  MF_ASSERT_EQ(again.server, b.server);
  MF_ASSERT_EQ(again.index, b.index);
  CU_ASSERT(again.generation > b.generation);
  MF_ASSERT_EQ(ns_alloc_take(a, &again), 0);
  /* ...and the old reference cannot free the new owner's block. */
  MF_ASSERT_EQ(ns_alloc_release(a, &b), MAYFLY_EMOVED);
  MF_ASSERT_EQ(a->blocks_used, 1);
  MF_ASSERT_EQ(ns_alloc_release(a, &again), 0);
  ns_alloc_free(a);
}

static void test_references_to_unknown_servers_or_indexes_are_refused(void) {
  ns_alloc_t *a = alloc_with(1, 4);
  ns_block_t no_server = {2, 0, 1}, zero_server = {0, 0, 1};
  ns_block_t bad_index = {1, 4, 1}, negative = {1, -1, 1};
  MF_ASSERT_EQ(ns_alloc_take(a, &no_server), MAYFLY_ESERVER);
  MF_ASSERT_EQ(ns_alloc_take(a, &zero_server), MAYFLY_ESERVER);
  MF_ASSERT_EQ(ns_alloc_take(a, &bad_index), MAYFLY_EINVAL);
  MF_ASSERT_EQ(ns_alloc_take(a, &negative), MAYFLY_EINVAL);
  MF_ASSERT_EQ(ns_alloc_release(a, &no_server), MAYFLY_ESERVER);
  MF_ASSERT_EQ(ns_alloc_release(a, &bad_index), MAYFLY_EINVAL);
  MF_ASSERT_EQ(ns_alloc_release(a, &negative), MAYFLY_EINVAL);
  /* A free block cannot be released. */
  ns_block_t free_block = {1, 0, ns_alloc_server(a, 1)->generation[0]};
  MF_ASSERT_EQ(ns_alloc_release(a, &free_block), MAYFLY_EMOVED);
  MF_ASSERT_EQ(a->blocks_used, 0);
  ns_alloc_free(a);
}

static const mf_test_t tests[] = {
    {"registering servers numbers them from 1 and counts their blocks",
     test_registering_servers_counts_their_blocks},
    {"a server without address, blocks or block size is refused", test_bad_geometry_is_refused},
    {"re-registering an address keeps its id and marks the server up",
     test_reregistering_keeps_the_id_and_marks_the_server_up},
    {"a server cannot change geometry while its blocks are in use (EPERM)",
     test_geometry_change_is_refused_while_blocks_are_in_use},
    {"a server may change geometry while none of its blocks is in use",
     test_geometry_may_change_while_no_block_is_in_use},
    {"a geometry change does not revive stale block references",
     test_geometry_change_does_not_revive_stale_references},
    {"pick spreads a request over servers, one block per server in turn",
     test_pick_spreads_a_request_one_block_per_server},
    {"pick only chooses; nothing is used until taken", test_pick_changes_nothing},
    {"pick goes to the least-used servers first", test_pick_goes_to_the_least_used_servers_first},
    {"least-used means the smallest fraction of blocks in use",
     test_least_used_means_smallest_fraction_in_use},
    {"pick never hands out a block in use, nor the same block twice",
     test_pick_never_hands_out_a_block_twice},
    {"pick never chooses a server marked down", test_pick_never_chooses_a_server_marked_down},
    {"pick is ENOSERVERS with no server registered or none up",
     test_no_servers_registered_or_up_is_enoservers},
    {"pick is ENOSPC when the pool is exhausted", test_exhausted_pool_is_enospc},
    {"take and release keep blocks_used and per-server use exact",
     test_take_and_release_account_for_blocks},
    {"a block in use cannot be taken again (EMOVED)", test_a_block_cannot_be_taken_twice},
    {"release bumps the generation: a stale reference can be neither released nor taken",
     test_release_makes_every_older_reference_stale},
    {"references to unknown servers or indexes are refused",
     test_references_to_unknown_servers_or_indexes_are_refused},
    {NULL, NULL}};

int main(void) {
  return mf_test_run("namespaces/alloc", NULL, NULL, tests);
}
