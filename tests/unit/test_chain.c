/*
 * Unit tests for replicated namespaces in namespaces/ (issue 12): chain
 * placement on distinct hosts and zones (ns_alloc_pick_chain,
 * ns_tree_plan_chains), chains taken by CREATE, ADD_PART and splits, members
 * dropped when their server goes down or comes back as a new incarnation,
 * copies begun and ended (NS_REC_REPLICA_BEGIN/END), ns_node_find_block, the
 * subtree counts, the snapshot and record codecs with chains, and the
 * version 1 encodings from before replication, which must still load.
 *
 * Every test that changes a tree records what it applied through the
 * observer; the scenario tests replay those records, through the record
 * codec, into an empty tree and compare the two states (tree_snapshot.c,
 * which checks the counts as well).
 */
#include <string.h>

#include "common/error.h"
#include "mf_test.h"
#include "namespaces/codec.h"
#include "namespaces/record.h"
#include "namespaces/snapshot.h"
#include "namespaces/tree.h"
#include "tree_snapshot.h"

#define LEASE_MS 1000
#define GRACE_MS 100
#define NOW 10

static char why[512];

/* ---- helpers --------------------------------------------------------------- */

/* Every record a tree applied, encoded, for replay. */
static void record_cb(const ns_record_t *rec, void *ud) {
  GByteArray *e = g_byte_array_new();
  MF_ASSERT_EQ(ns_rec_encode(rec, e), 0);
  g_ptr_array_add(ud, e);
}

static ns_tree_t *new_tree(GPtrArray **log) {
  ns_tree_t *t = ns_tree_new(LEASE_MS, GRACE_MS);
  *log = g_ptr_array_new_with_free_func((GDestroyNotify)g_byte_array_unref);
  ns_tree_set_observer(t, record_cb, *log);
  return t;
}

static void apply_ok(ns_tree_t *t, const ns_record_t *rec, ns_effects_t *fx, int line) {
  why[0] = '\0';
  int rc = ns_tree_apply(t, rec, fx, why, sizeof why);
  if (rc != 0) fprintf(stderr, "  line %d: apply failed (%d): %s\n", line, rc, why);
  MF_ASSERT_EQ(rc, 0);
}

#define APPLY(t, fx, ...) apply_ok((t), &(ns_record_t){__VA_ARGS__}, (fx), __LINE__)

/* Applies a record that must fail with `want` and change nothing. */
static void apply_fails(ns_tree_t *t, const ns_record_t *rec, int want, int line) {
  char *before = tree_snapshot(t);
  why[0] = '\0';
  int rc = ns_tree_apply(t, rec, NULL, why, sizeof why);
  if (rc != want) fprintf(stderr, "  line %d: rc %d (%s), expected %d\n", line, rc, why, want);
  MF_ASSERT_EQ(rc, want);
  CU_ASSERT(why[0] != '\0');
  char *after = tree_snapshot(t);
  CU_ASSERT_STRING_EQUAL(before, after);
  g_free(before);
  g_free(after);
}

#define FAILS(t, want, ...) apply_fails((t), &(ns_record_t){__VA_ARGS__}, (want), __LINE__)

/* Registers a memory server at address (host:port) in zone, incarnation inc. */
static int32_t add_server(ns_tree_t *t, const char *address, const char *zone, int32_t blocks,
                          uint64_t inc) {
  ns_effects_t fx;
  ns_effects_init(&fx);
  APPLY(t, &fx, .type = NS_REC_SERVER_ADD, .address = address, .zone = zone, .blocks = blocks,
        .block_size = 1024, .incarnation = inc);
  int32_t id = fx.server_id;
  ns_effects_clear(&fx);
  return id;
}

/* A tree with n servers, each its own host 127.0.0.(1 + i), no zone. */
static ns_tree_t *hosts_tree(int n, GPtrArray **log) {
  ns_tree_t *t = new_tree(log);
  for (int i = 1; i <= n; i++) {
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.%d:7000", i + 1);
    MF_ASSERT_EQ(add_server(t, addr, NULL, 16, 100 + (uint64_t)i), i);
  }
  return t;
}

/* Plans and creates a namespace of nparts chains of r blocks. */
static void create(ns_tree_t *t, const char *path, ns_kind_t kind, int nparts, int r) {
  ns_partition_t parts[8];
  CU_ASSERT_FATAL(nparts <= 8);
  MF_ASSERT_EQ(ns_tree_plan_chains(t, kind, nparts, r, parts, why, sizeof why), 0);
  APPLY(t, NULL, .type = NS_REC_CREATE, .now_ms = NOW, .path = path, .kind = kind,
        .parts = parts, .nparts = (size_t)nparts, .replicas = r);
}

static ns_partition_t *part(ns_tree_t *t, const char *path, guint i) {
  ns_node_t *n = ns_tree_lookup(t, path);
  CU_ASSERT_PTR_NOT_NULL_FATAL(n);
  CU_ASSERT_FATAL(i < n->layout.parts->len);
  return &g_array_index(n->layout.parts, ns_partition_t, i);
}

static int is_taken(ns_tree_t *t, const ns_block_t *b) {
  ns_server_t *s = ns_alloc_server(t->alloc, b->server);
  return s != NULL && s->in_use[b->index] && s->generation[b->index] == b->generation;
}

/* The servers of p's chain, head first, as "1,3,4". */
static char *chain_str(const ns_partition_t *p) {
  GString *s = g_string_new(NULL);
  for (int m = 0; m < ns_part_members(p); m++) {
    g_string_append_printf(s, "%s%d", m ? "," : "", ns_part_member(p, m)->server);
  }
  return g_string_free(s, FALSE);
}

#define ASSERT_CHAIN(p, want)                                                        \
  do {                                                                               \
    char *got_ = chain_str(p);                                                       \
    if (strcmp(got_, (want)) != 0) fprintf(stderr, "  line %d: chain %s, expected %s\n", \
                                           __LINE__, got_, (want));                  \
    CU_ASSERT_STRING_EQUAL(got_, (want));                                            \
    g_free(got_);                                                                    \
  } while (0)

static int has_block(const GArray *a, const ns_block_t *b) {
  for (guint i = 0; i < a->len; i++) {
    const ns_block_t *x = &g_array_index(a, ns_block_t, i);
    if (x->server == b->server && x->index == b->index && x->generation == b->generation) {
      return 1;
    }
  }
  return 0;
}

static void counts_ok(ns_tree_t *t) {
  why[0] = '\0';
  int rc = ns_tree_check_counts(t, why, sizeof why);
  if (rc != 0) fprintf(stderr, "  counts: %s\n", why);
  MF_ASSERT_EQ(rc, 0);
  MF_ASSERT_EQ(t->root->sub_blocks, t->alloc->blocks_used);
}

/* Replays the log through the record codec into a new tree and compares. */
static void replay_matches(ns_tree_t *t, GPtrArray *log) {
  ns_tree_t *r = ns_tree_new(LEASE_MS, GRACE_MS);
  for (guint i = 0; i < log->len; i++) {
    GByteArray *e = g_ptr_array_index(log, i);
    ns_rec_buf_t b;
    ns_rec_buf_init(&b);
    MF_ASSERT_EQ(ns_rec_decode(e->data, e->len, &b, why, sizeof why), 0);
    MF_ASSERT_EQ(b.version, NS_REC_VERSION);
    apply_ok(r, &b.rec, NULL, (int)i);
    ns_rec_buf_clear(&b);
  }
  char *a = tree_snapshot(t), *c = tree_snapshot(r);
  CU_ASSERT_STRING_EQUAL(a, c);
  g_free(a);
  g_free(c);
  ns_tree_free(r);
}

static void done(ns_tree_t *t, GPtrArray *log) {
  ns_tree_free(t);
  g_ptr_array_free(log, TRUE);
}

/* ---- placement -------------------------------------------------------------- */

static void test_host_of_addresses(void) {
  const char *cases[][2] = {{"127.0.0.2:7000", "127.0.0.2"}, {"[::1]:7000", "::1"},
                            {"ms1:7000", "ms1"},             {"name", "name"},
                            {"fe80::1", "fe80::1"},          {"[::1]", "::1"}};
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    char *h = ns_alloc_host_of(cases[i][0]);
    CU_ASSERT_STRING_EQUAL(h, cases[i][1]);
    g_free(h);
  }
}

static void test_pick_chain_spreads_over_hosts_then_zones(void) {
  GPtrArray *log;
  ns_tree_t *t = new_tree(&log);
  /* Two servers share host .2; zone b has one server. */
  MF_ASSERT_EQ(add_server(t, "127.0.0.2:7000", "a", 8, 1), 1);
  MF_ASSERT_EQ(add_server(t, "127.0.0.2:7001", "a", 8, 2), 2);
  MF_ASSERT_EQ(add_server(t, "127.0.0.3:7000", "a", 8, 3), 3);
  MF_ASSERT_EQ(add_server(t, "127.0.0.4:7000", "b", 8, 4), 4);
  CU_ASSERT_STRING_EQUAL(ns_alloc_server(t->alloc, 1)->host, "127.0.0.2");
  CU_ASSERT_STRING_EQUAL(ns_alloc_server(t->alloc, 4)->zone, "b");
  MF_ASSERT_EQ(ns_alloc_hosts_up(t->alloc, NULL, 0), 3);
  ns_block_t out[NS_CHAIN_MAX];
  MF_ASSERT_EQ(ns_alloc_pick_chain(t->alloc, 3, NULL, 0, out), 0);
  /* The head on the least-used server (1); then zone b before another
   * server of zone a; never two blocks on one host. */
  MF_ASSERT_EQ(out[0].server, 1);
  MF_ASSERT_EQ(out[1].server, 4);
  MF_ASSERT_EQ(out[2].server, 3);
  MF_ASSERT_EQ(ns_alloc_pick_chain(t->alloc, 4, NULL, 0, out), MAYFLY_ENOHOSTS);
  /* Avoiding server 1 avoids its host (server 2 too) and prefers zone b. */
  int32_t avoid[] = {1};
  MF_ASSERT_EQ(ns_alloc_hosts_up(t->alloc, avoid, 1), 2);
  MF_ASSERT_EQ(ns_alloc_pick_chain(t->alloc, 1, avoid, 1, out), 0);
  MF_ASSERT_EQ(out[0].server, 4);
  MF_ASSERT_EQ(ns_alloc_pick_chain(t->alloc, 2, avoid, 1, out), 0);
  CU_ASSERT(out[0].server >= 3 && out[1].server >= 3 && out[0].server != out[1].server);
  MF_ASSERT_EQ(ns_alloc_pick_chain(t->alloc, 3, avoid, 1, out), MAYFLY_ENOHOSTS);
  /* A host whose servers are all down does not count. */
  APPLY(t, NULL, .type = NS_REC_SERVER_STATE, .server_id = 4, .up = 0);
  MF_ASSERT_EQ(ns_alloc_hosts_up(t->alloc, NULL, 0), 2);
  MF_ASSERT_EQ(ns_alloc_pick_chain(t->alloc, 3, NULL, 0, out), MAYFLY_ENOHOSTS);
  MF_ASSERT_EQ(ns_alloc_pick_chain(t->alloc, 2, NULL, 0, out), 0);
  CU_ASSERT(out[0].server != 4 && out[1].server != 4);
  MF_ASSERT_EQ(ns_alloc_pick_chain(t->alloc, NS_CHAIN_MAX + 1, NULL, 0, out), MAYFLY_ENOHOSTS);
  MF_ASSERT_EQ(ns_alloc_pick_chain(t->alloc, 0, NULL, 0, out), MAYFLY_EINVAL);
  done(t, log);

  /* Hosts without free blocks: ENOSPC; no server up: ENOSERVERS. */
  t = new_tree(&log);
  add_server(t, "10.0.0.1:1", NULL, 1, 1);
  add_server(t, "10.0.0.2:1", NULL, 1, 1);
  create(t, "/q", NS_KIND_QUEUE, 1, 2);
  MF_ASSERT_EQ(ns_alloc_pick_chain(t->alloc, 2, NULL, 0, out), MAYFLY_ENOSPC);
  APPLY(t, NULL, .type = NS_REC_SERVER_STATE, .server_id = 1, .up = 0);
  APPLY(t, NULL, .type = NS_REC_SERVER_STATE, .server_id = 2, .up = 0);
  MF_ASSERT_EQ(ns_alloc_pick_chain(t->alloc, 1, NULL, 0, out), MAYFLY_ENOSERVERS);
  done(t, log);
}

static void test_plan_chains_places_every_partition_and_names_too_few_hosts(void) {
  GPtrArray *log;
  ns_tree_t *t = hosts_tree(4, &log);
  ns_partition_t parts[4];
  MF_ASSERT_EQ(ns_tree_plan_chains(t, NS_KIND_KV, 4, 2, parts, why, sizeof why), 0);
  int per_server[5] = {0};
  for (int i = 0; i < 4; i++) {
    MF_ASSERT_EQ(ns_part_members(&parts[i]), 2);
    MF_ASSERT_EQ(parts[i].replicas, 2);
    MF_ASSERT_EQ(parts[i].chain_version, 1);
    CU_ASSERT(parts[i].block.server != parts[i].more[0].server);
    per_server[parts[i].block.server]++;
    per_server[parts[i].more[0].server]++;
  }
  /* Chains planned together spread like single blocks: 2 per server. */
  for (int s = 1; s <= 4; s++) MF_ASSERT_EQ(per_server[s], 2);
  MF_ASSERT_EQ(parts[0].lo, 0);
  MF_ASSERT_EQ(parts[3].hi, NS_KV_SLOTS);
  why[0] = '\0';
  MF_ASSERT_EQ(ns_tree_plan_chains(t, NS_KIND_KV, 2, 5, parts, why, sizeof why), MAYFLY_ENOHOSTS);
  CU_ASSERT(strstr(why, "5 replicas") != NULL && strstr(why, "4 hosts") != NULL);
  why[0] = '\0';
  MF_ASSERT_EQ(ns_tree_plan_chains(t, NS_KIND_KV, 2, 6, parts, why, sizeof why), MAYFLY_ENOHOSTS);
  CU_ASSERT(strstr(why, "at most 5") != NULL);
  /* R = 1 plans exactly as ns_tree_plan_parts. */
  ns_partition_t a[3], b[3];
  MF_ASSERT_EQ(ns_tree_plan_chains(t, NS_KIND_FILE, 3, 1, a, NULL, 0), 0);
  MF_ASSERT_EQ(ns_tree_plan_parts(t, NS_KIND_FILE, 3, b), 0);
  CU_ASSERT(memcmp(a, b, sizeof a) == 0);
  /* A file's ranges are the block size. */
  MF_ASSERT_EQ(ns_tree_plan_chains(t, NS_KIND_FILE, 2, 3, parts, NULL, 0), 0);
  MF_ASSERT_EQ(parts[1].lo, 1024);
  MF_ASSERT_EQ(parts[1].hi, 2048);
  done(t, log);
}

/* ---- chains in the tree ----------------------------------------------------- */

static void test_create_takes_every_member_and_finds_each_block(void) {
  GPtrArray *log;
  ns_tree_t *t = hosts_tree(4, &log);
  create(t, "/kv", NS_KIND_KV, 2, 3);
  ns_node_t *n = ns_tree_lookup(t, "/kv");
  MF_ASSERT_EQ(n->replicas, 3);
  /* 2 chains of 3 over 4 servers: the chains depending on each add up to 6. */
  int32_t deps = 0;
  for (int32_t id = 1; id <= 4; id++) deps += ns_tree_server_chains(t, id);
  MF_ASSERT_EQ(deps, 6);
  MF_ASSERT_EQ(ns_tree_server_chains(t, 9), 0);
  MF_ASSERT_EQ(ns_node_replicas(n), 3);
  MF_ASSERT_EQ(n->sub_blocks, 6);
  MF_ASSERT_EQ(ns_node_blocks_committed(n), 2); /* partitions, for max_blocks */
  MF_ASSERT_EQ(ns_node_blocks_held(n), 6);
  counts_ok(t);
  for (guint i = 0; i < 2; i++) {
    ns_partition_t *p = part(t, "/kv", i);
    MF_ASSERT_EQ(p->replicas, 3);
    for (int m = 0; m < 3; m++) {
      const ns_block_t *b = ns_part_member(p, m);
      CU_ASSERT(is_taken(t, b));
      CU_ASSERT(ns_alloc_server(t->alloc, b->server)->owner[b->index] == n);
      int pi = -5, mi = -5;
      MF_ASSERT_EQ(ns_node_find_block(n, b, &pi, &mi), 0);
      MF_ASSERT_EQ(pi, (int)i);
      MF_ASSERT_EQ(mi, m);
    }
  }
  ns_block_t nope = {4, 15, 1};
  int pi = 0, mi = 0;
  MF_ASSERT_EQ(ns_node_find_block(n, &nope, &pi, &mi), MAYFLY_ENOENT);
  MF_ASSERT_EQ(pi, -1);
  MF_ASSERT_EQ(mi, -1);
  MF_ASSERT_EQ(ns_node_find_block(n, &nope, NULL, NULL), MAYFLY_ENOENT);

  /* A chain whose last member is taken already: nothing taken at all. */
  ns_partition_t parts[2];
  MF_ASSERT_EQ(ns_tree_plan_chains(t, NS_KIND_QUEUE, 2, 2, parts, NULL, 0), 0);
  parts[1].more[0] = part(t, "/kv", 0)->more[1];
  FAILS(t, MAYFLY_EMOVED, .type = NS_REC_CREATE, .path = "/q", .kind = NS_KIND_QUEUE,
        .parts = parts, .nparts = 2, .replicas = 2);
  /* More members than replicas, or replicas past the limit. */
  MF_ASSERT_EQ(ns_tree_plan_chains(t, NS_KIND_QUEUE, 1, 3, parts, NULL, 0), 0);
  FAILS(t, MAYFLY_EINVAL, .type = NS_REC_CREATE, .path = "/q", .kind = NS_KIND_QUEUE,
        .parts = parts, .nparts = 1, .replicas = 2);
  FAILS(t, MAYFLY_EINVAL, .type = NS_REC_CREATE, .path = "/q", .kind = NS_KIND_QUEUE,
        .parts = parts, .nparts = 1, .replicas = NS_CHAIN_MAX + 1);
  /* Growth appends whole chains. */
  create(t, "/q", NS_KIND_QUEUE, 1, 3);
  ns_partition_t seg;
  MF_ASSERT_EQ(ns_tree_plan_append_why(t, ns_tree_lookup(t, "/q"), 0, 0, &seg, why, sizeof why),
               0);
  MF_ASSERT_EQ(ns_part_members(&seg), 3);
  MF_ASSERT_EQ(seg.lo, 1);
  APPLY(t, NULL, .type = NS_REC_ADD_PART, .path = "/q", .parts = &seg, .nparts = 1);
  MF_ASSERT_EQ(ns_tree_lookup(t, "/q")->sub_blocks, 6);
  counts_ok(t);
  /* With a host down, a chain of 3 on 4 hosts still fits; with two down not. */
  APPLY(t, NULL, .type = NS_REC_SERVER_STATE, .server_id = 1, .up = 0);
  APPLY(t, NULL, .type = NS_REC_SERVER_STATE, .server_id = 2, .up = 0);
  why[0] = '\0';
  MF_ASSERT_EQ(ns_tree_plan_append_why(t, ns_tree_lookup(t, "/q"), 0, 0, &seg, why, sizeof why),
               MAYFLY_ENOHOSTS);
  CU_ASSERT(strstr(why, "3 replicas") != NULL && strstr(why, "2 hosts") != NULL);
  replay_matches(t, log);
  done(t, log);
}

/* Creates /q, one queue segment on the chain of servers 1, 2, 3 (R = 3). */
static ns_tree_t *three_chain(GPtrArray **log) {
  ns_tree_t *t = hosts_tree(4, log);
  create(t, "/q", NS_KIND_QUEUE, 1, 3);
  ASSERT_CHAIN(part(t, "/q", 0), "1,2,3");
  return t;
}

static void expect_dropped(ns_tree_t *t, ns_effects_t *fx, const ns_block_t *gone,
                           int64_t version) {
  const ns_partition_t *p = part(t, "/q", 0);
  MF_ASSERT_EQ(fx->freed->len, 1);
  CU_ASSERT(has_block(fx->freed, gone));
  CU_ASSERT(!is_taken(t, gone));
  /* The block went back at a new generation. */
  MF_ASSERT_EQ(ns_alloc_server(t->alloc, gone->server)->generation[gone->index],
               gone->generation + 1);
  MF_ASSERT_EQ(p->chain_version, version);
  MF_ASSERT_EQ(fx->rechain->len, (guint)ns_part_members(p));
  for (int m = 0; m < ns_part_members(p); m++) CU_ASSERT(has_block(fx->rechain, ns_part_member(p, m)));
  MF_ASSERT_EQ(p->state, NS_PART_LIVE);
  MF_ASSERT_EQ(fx->lost->len, 0);
  counts_ok(t);
}

static void test_down_drops_the_member_head_middle_or_tail(void) {
  for (int which = 0; which < 3; which++) {
    GPtrArray *log;
    ns_tree_t *t = three_chain(&log);
    ns_block_t gone = *ns_part_member(part(t, "/q", 0), which);
    int64_t lv = ns_tree_lookup(t, "/q")->layout.version;
    ns_effects_t fx;
    ns_effects_init(&fx);
    APPLY(t, &fx, .type = NS_REC_SERVER_STATE, .server_id = which + 1, .up = 0);
    expect_dropped(t, &fx, &gone, 2);
    ASSERT_CHAIN(part(t, "/q", 0), which == 0 ? "2,3" : which == 1 ? "1,3" : "1,2");
    CU_ASSERT(ns_tree_lookup(t, "/q")->layout.version > lv);
    MF_ASSERT_EQ(ns_tree_lookup(t, "/q")->sub_blocks, 2);
    ns_effects_clear(&fx);
    /* Down again: nothing more to drop. */
    ns_effects_init(&fx);
    APPLY(t, &fx, .type = NS_REC_SERVER_STATE, .server_id = which + 1, .up = 0);
    MF_ASSERT_EQ(fx.freed->len, 0);
    MF_ASSERT_EQ(fx.rechain->len, 0);
    ns_effects_clear(&fx);
    replay_matches(t, log);
    done(t, log);
  }
}

static void test_new_incarnation_drops_the_member_head_middle_or_tail(void) {
  for (int which = 0; which < 3; which++) {
    GPtrArray *log;
    ns_tree_t *t = three_chain(&log);
    ns_block_t gone = *ns_part_member(part(t, "/q", 0), which);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.%d:7000", which + 2);
    ns_effects_t fx;
    ns_effects_init(&fx);
    APPLY(t, &fx, .type = NS_REC_SERVER_ADD, .address = addr, .blocks = 16, .block_size = 1024,
          .incarnation = 999);
    expect_dropped(t, &fx, &gone, 2);
    MF_ASSERT_EQ(fx.lost_parts, 0);
    ASSERT_CHAIN(part(t, "/q", 0), which == 0 ? "2,3" : which == 1 ? "1,3" : "1,2");
    CU_ASSERT(ns_alloc_server(t->alloc, which + 1)->up);
    ns_effects_clear(&fx);
    replay_matches(t, log);
    done(t, log);
  }
}

static void test_a_chain_is_lost_only_when_its_last_member_goes(void) {
  GPtrArray *log;
  ns_tree_t *t = three_chain(&log);
  ns_effects_t fx;
  ns_effects_init(&fx);
  APPLY(t, &fx, .type = NS_REC_SERVER_STATE, .server_id = 1, .up = 0);
  APPLY(t, &fx, .type = NS_REC_SERVER_ADD, .address = "127.0.0.3:7000", .blocks = 16,
        .block_size = 1024, .incarnation = 7);
  ns_effects_clear(&fx);
  ASSERT_CHAIN(part(t, "/q", 0), "3");
  MF_ASSERT_EQ(part(t, "/q", 0)->chain_version, 3);
  /* The last member down: it waits, as an unreplicated block does. */
  ns_effects_init(&fx);
  APPLY(t, &fx, .type = NS_REC_SERVER_STATE, .server_id = 3, .up = 0);
  MF_ASSERT_EQ(fx.freed->len, 0);
  MF_ASSERT_EQ(fx.lost->len, 0);
  ASSERT_CHAIN(part(t, "/q", 0), "3");
  MF_ASSERT_EQ(part(t, "/q", 0)->state, NS_PART_LIVE);
  ns_effects_clear(&fx);
  /* The last member restarted: lost, its block kept taken. */
  ns_block_t last = part(t, "/q", 0)->block;
  ns_effects_init(&fx);
  APPLY(t, &fx, .type = NS_REC_SERVER_ADD, .address = "127.0.0.4:7000", .blocks = 16,
        .block_size = 1024, .incarnation = 8);
  MF_ASSERT_EQ(fx.lost_parts, 1);
  MF_ASSERT_EQ(fx.lost->len, 1);
  CU_ASSERT_STRING_EQUAL(g_ptr_array_index(fx.lost, 0), "/q");
  MF_ASSERT_EQ(fx.freed->len, 0);
  MF_ASSERT_EQ(part(t, "/q", 0)->state, NS_PART_LOST);
  CU_ASSERT_STRING_EQUAL(ns_part_chain_state(part(t, "/q", 0)), "lost");
  CU_ASSERT(is_taken(t, &last));
  CU_ASSERT(ns_tree_block_lost(t, last.server, last.index));
  MF_ASSERT_EQ(ns_tree_server_lost_blocks(t, 3), 1);
  ns_effects_clear(&fx);
  counts_ok(t);
  /* Removing it frees the block at a new generation. */
  ns_effects_init(&fx);
  APPLY(t, &fx, .type = NS_REC_REMOVE, .path = "/q");
  MF_ASSERT_EQ(fx.freed->len, 1);
  CU_ASSERT(!is_taken(t, &last));
  ns_effects_clear(&fx);
  counts_ok(t);
  replay_matches(t, log);
  done(t, log);

  /* R = 1 as before replication: down changes nothing, a restart loses. */
  t = hosts_tree(2, &log);
  create(t, "/one", NS_KIND_KV, 1, 1);
  char *before = tree_snapshot_untimed(t);
  APPLY(t, NULL, .type = NS_REC_SERVER_STATE, .server_id = 1, .up = 0);
  APPLY(t, NULL, .type = NS_REC_SERVER_STATE, .server_id = 1, .up = 1);
  char *after = tree_snapshot_untimed(t);
  /* Only the server's up flag went and came back. */
  CU_ASSERT_STRING_EQUAL(before, after);
  g_free(before);
  g_free(after);
  ns_effects_init(&fx);
  APPLY(t, &fx, .type = NS_REC_SERVER_ADD, .address = "127.0.0.2:7000", .blocks = 16,
        .block_size = 1024, .incarnation = 55);
  MF_ASSERT_EQ(fx.lost_parts, 1);
  MF_ASSERT_EQ(fx.rechain->len, 0);
  MF_ASSERT_EQ(part(t, "/one", 0)->state, NS_PART_LOST);
  ns_effects_clear(&fx);
  replay_matches(t, log);
  done(t, log);
}

/* ---- copies ----------------------------------------------------------------- */

/* Drops server `id` by marking it down and returns the copy block picked
 * for /q's partition 0 away from the remaining members. */
static ns_block_t pick_copy(ns_tree_t *t) {
  const ns_partition_t *p = part(t, "/q", 0);
  int32_t avoid[NS_CHAIN_MAX];
  for (int m = 0; m < ns_part_members(p); m++) avoid[m] = ns_part_member(p, m)->server;
  ns_block_t b;
  MF_ASSERT_EQ(ns_alloc_pick_chain(t->alloc, 1, avoid, ns_part_members(p), &b), 0);
  return b;
}

static void test_replica_begin_and_end_commit_and_abort(void) {
  GPtrArray *log;
  ns_tree_t *t = three_chain(&log);
  /* Not degraded: no copy. */
  ns_block_t spare = {4, 0, ns_alloc_server(t->alloc, 4)->generation[0]};
  FAILS(t, MAYFLY_EINVAL, .type = NS_REC_REPLICA_BEGIN, .path = "/q", .lo = 0, .block = spare,
        .op_id = 1);
  APPLY(t, NULL, .type = NS_REC_SERVER_STATE, .server_id = 2, .up = 0);
  ASSERT_CHAIN(part(t, "/q", 0), "1,3");
  ns_block_t copy = pick_copy(t);
  MF_ASSERT_EQ(copy.server, 4); /* servers 2 (down), 1 and 3 (members) are out */
  FAILS(t, MAYFLY_ENOENT, .type = NS_REC_REPLICA_BEGIN, .path = "/q", .lo = 5, .block = copy,
        .op_id = 1);
  FAILS(t, MAYFLY_ENOENT, .type = NS_REC_REPLICA_BEGIN, .path = "/nope", .lo = 0, .block = copy,
        .op_id = 1);
  FAILS(t, MAYFLY_EINVAL, .type = NS_REC_REPLICA_BEGIN, .path = "/q", .lo = 0, .block = copy,
        .op_id = 0);
  /* A block on a member's host, or one not free. */
  ns_block_t same_host = {1, 10, ns_alloc_server(t->alloc, 1)->generation[10]};
  FAILS(t, MAYFLY_EINVAL, .type = NS_REC_REPLICA_BEGIN, .path = "/q", .lo = 0,
        .block = same_host, .op_id = 1);
  ns_block_t stale = copy;
  stale.generation++;
  FAILS(t, MAYFLY_EMOVED, .type = NS_REC_REPLICA_BEGIN, .path = "/q", .lo = 0, .block = stale,
        .op_id = 1);
  ns_effects_t fx;
  ns_effects_init(&fx);
  CU_ASSERT_STRING_EQUAL(ns_part_chain_state(part(t, "/q", 0)), "degraded");
  MF_ASSERT_EQ(ns_tree_server_chains(t, 4), 0);
  APPLY(t, &fx, .type = NS_REC_REPLICA_BEGIN, .path = "/q", .lo = 0, .block = copy, .op_id = 41);
  ns_partition_t *p = part(t, "/q", 0);
  CU_ASSERT_STRING_EQUAL(ns_part_chain_state(p), "copying");
  MF_ASSERT_EQ(ns_tree_server_chains(t, 4), 1);
  CU_ASSERT(p->copy.server == copy.server && p->copy.index == copy.index);
  MF_ASSERT_EQ(p->copy_op, 41);
  MF_ASSERT_EQ(t->last_op_id, 41);
  CU_ASSERT(is_taken(t, &copy));
  MF_ASSERT_EQ(fx.rechain->len, 3); /* both members and the copy */
  CU_ASSERT(has_block(fx.rechain, &copy));
  ns_effects_clear(&fx);
  int pi, mi;
  MF_ASSERT_EQ(ns_node_find_block(ns_tree_lookup(t, "/q"), &copy, &pi, &mi), 0);
  MF_ASSERT_EQ(pi, 0);
  MF_ASSERT_EQ(mi, -1);
  MF_ASSERT_EQ(ns_tree_lookup(t, "/q")->sub_blocks, 3);
  counts_ok(t);
  /* One copy at a time; an unknown op ends nothing. */
  FAILS(t, MAYFLY_EINVAL, .type = NS_REC_REPLICA_BEGIN, .path = "/q", .lo = 0, .block = spare,
        .op_id = 42);
  FAILS(t, MAYFLY_ENOENT, .type = NS_REC_REPLICA_END, .path = "/q", .op_id = 40,
        .flags = NS_REC_COMMIT);
  int64_t cv = p->chain_version;
  ns_effects_init(&fx);
  APPLY(t, &fx, .type = NS_REC_REPLICA_END, .path = "/q", .op_id = 41, .flags = NS_REC_COMMIT);
  p = part(t, "/q", 0);
  ASSERT_CHAIN(p, "1,3,4");
  CU_ASSERT_STRING_EQUAL(ns_part_chain_state(p), "ok");
  MF_ASSERT_EQ(p->chain_version, cv + 1);
  MF_ASSERT_EQ(p->copy.server, 0);
  MF_ASSERT_EQ(p->copy_op, 0);
  MF_ASSERT_EQ(fx.rechain->len, 3);
  MF_ASSERT_EQ(fx.freed->len, 0);
  ns_effects_clear(&fx);
  MF_ASSERT_EQ(ns_node_find_block(ns_tree_lookup(t, "/q"), &copy, &pi, &mi), 0);
  MF_ASSERT_EQ(mi, 2);
  counts_ok(t);
  FAILS(t, MAYFLY_ENOENT, .type = NS_REC_REPLICA_END, .path = "/q", .op_id = 41,
        .flags = NS_REC_COMMIT);

  /* Abort: the copy block goes back at a new generation. */
  APPLY(t, NULL, .type = NS_REC_SERVER_STATE, .server_id = 2, .up = 1);
  APPLY(t, NULL, .type = NS_REC_SERVER_STATE, .server_id = 1, .up = 0);
  ASSERT_CHAIN(part(t, "/q", 0), "3,4");
  copy = pick_copy(t);
  MF_ASSERT_EQ(copy.server, 2);
  APPLY(t, NULL, .type = NS_REC_REPLICA_BEGIN, .path = "/q", .lo = 0, .block = copy, .op_id = 50);
  cv = part(t, "/q", 0)->chain_version;
  ns_effects_init(&fx);
  APPLY(t, &fx, .type = NS_REC_REPLICA_END, .path = "/q", .op_id = 50);
  MF_ASSERT_EQ(fx.freed->len, 1);
  CU_ASSERT(has_block(fx.freed, &copy));
  CU_ASSERT(!is_taken(t, &copy));
  MF_ASSERT_EQ(fx.rechain->len, 2);
  ASSERT_CHAIN(part(t, "/q", 0), "3,4");
  MF_ASSERT_EQ(part(t, "/q", 0)->chain_version, cv);
  MF_ASSERT_EQ(part(t, "/q", 0)->copy.server, 0);
  ns_effects_clear(&fx);
  counts_ok(t);
  replay_matches(t, log);
  done(t, log);
}

static void test_a_copy_is_cancelled_when_its_server_or_the_tail_leaves(void) {
  GPtrArray *log;
  ns_tree_t *t = hosts_tree(5, &log);
  create(t, "/q", NS_KIND_QUEUE, 1, 3);
  ASSERT_CHAIN(part(t, "/q", 0), "1,2,3");
  APPLY(t, NULL, .type = NS_REC_SERVER_STATE, .server_id = 1, .up = 0);
  /* The copy's server goes down: the copy is freed, the chain stays. */
  ns_block_t copy = pick_copy(t);
  MF_ASSERT_EQ(copy.server, 4);
  APPLY(t, NULL, .type = NS_REC_REPLICA_BEGIN, .path = "/q", .lo = 0, .block = copy, .op_id = 1);
  int64_t cv = part(t, "/q", 0)->chain_version;
  ns_effects_t fx;
  ns_effects_init(&fx);
  APPLY(t, &fx, .type = NS_REC_SERVER_STATE, .server_id = 4, .up = 0);
  ASSERT_CHAIN(part(t, "/q", 0), "2,3");
  MF_ASSERT_EQ(part(t, "/q", 0)->copy.server, 0);
  MF_ASSERT_EQ(part(t, "/q", 0)->chain_version, cv + 1);
  MF_ASSERT_EQ(fx.freed->len, 1);
  CU_ASSERT(has_block(fx.freed, &copy));
  MF_ASSERT_EQ(fx.rechain->len, 2);
  ns_effects_clear(&fx);
  counts_ok(t);
  FAILS(t, MAYFLY_ENOENT, .type = NS_REC_REPLICA_END, .path = "/q", .op_id = 1,
        .flags = NS_REC_COMMIT);
  /* The tail that fills the copy leaves: both go. */
  copy = pick_copy(t);
  MF_ASSERT_EQ(copy.server, 5);
  APPLY(t, NULL, .type = NS_REC_REPLICA_BEGIN, .path = "/q", .lo = 0, .block = copy, .op_id = 2);
  ns_block_t tail = *ns_part_tail(part(t, "/q", 0));
  ns_effects_init(&fx);
  APPLY(t, &fx, .type = NS_REC_SERVER_STATE, .server_id = 3, .up = 0);
  ASSERT_CHAIN(part(t, "/q", 0), "2");
  MF_ASSERT_EQ(part(t, "/q", 0)->copy.server, 0);
  MF_ASSERT_EQ(fx.freed->len, 2);
  CU_ASSERT(has_block(fx.freed, &copy) && has_block(fx.freed, &tail));
  MF_ASSERT_EQ(fx.rechain->len, 1);
  ns_effects_clear(&fx);
  MF_ASSERT_EQ(ns_tree_lookup(t, "/q")->sub_blocks, 1);
  counts_ok(t);
  /* A copy pending when the namespace goes is freed with it. */
  APPLY(t, NULL, .type = NS_REC_SERVER_STATE, .server_id = 1, .up = 1);
  copy = pick_copy(t);
  APPLY(t, NULL, .type = NS_REC_REPLICA_BEGIN, .path = "/q", .lo = 0, .block = copy, .op_id = 3);
  ns_effects_init(&fx);
  APPLY(t, &fx, .type = NS_REC_REMOVE, .path = "/q");
  MF_ASSERT_EQ(fx.freed->len, 2);
  CU_ASSERT(has_block(fx.freed, &copy));
  ns_effects_clear(&fx);
  MF_ASSERT_EQ(t->alloc->blocks_used, 0);
  counts_ok(t);
  replay_matches(t, log);
  done(t, log);
}

/* ---- truncate, remove_part, splits and merges -------------------------------- */

static void test_truncate_and_remove_part_free_whole_chains(void) {
  GPtrArray *log;
  ns_tree_t *t = hosts_tree(3, &log);
  create(t, "/f", NS_KIND_FILE, 3, 2);
  MF_ASSERT_EQ(t->alloc->blocks_used, 6);
  ns_effects_t fx;
  ns_effects_init(&fx);
  APPLY(t, &fx, .type = NS_REC_TRUNCATE, .path = "/f", .lo = 1024);
  MF_ASSERT_EQ(fx.freed->len, 4);
  MF_ASSERT_EQ(t->alloc->blocks_used, 2);
  MF_ASSERT_EQ(ns_tree_lookup(t, "/f")->sub_blocks, 2);
  ns_effects_clear(&fx);
  counts_ok(t);
  create(t, "/q", NS_KIND_QUEUE, 2, 3);
  ns_effects_init(&fx);
  APPLY(t, &fx, .type = NS_REC_REMOVE_PART, .path = "/q", .part_index = 0);
  MF_ASSERT_EQ(fx.freed->len, 3);
  ns_effects_clear(&fx);
  MF_ASSERT_EQ(ns_tree_lookup(t, "/q")->sub_blocks, 3);
  counts_ok(t);
  replay_matches(t, log);
  done(t, log);
}

/* Begins a split of /kv's partition 0 at `at` with a new chain; returns it. */
static ns_partition_t begin_split(ns_tree_t *t, int64_t op, int64_t at) {
  ns_node_t *n = ns_tree_lookup(t, "/kv");
  const ns_partition_t *src = part(t, "/kv", 0);
  ns_partition_t target;
  MF_ASSERT_EQ(ns_tree_plan_append_why(t, n, at, src->hi, &target, why, sizeof why), 0);
  MF_ASSERT_EQ(ns_part_members(&target), ns_node_replicas(n));
  APPLY(t, NULL, .type = NS_REC_REPART_BEGIN, .path = "/kv", .op_id = op, .block = src->block,
        .block2 = target.block, .lo = at, .hi = src->hi, .parts = &target, .nparts = 1);
  return target;
}

static void test_splits_and_merges_of_chains(void) {
  GPtrArray *log;
  ns_tree_t *t = hosts_tree(4, &log);
  create(t, "/kv", NS_KIND_KV, 1, 2);
  ns_node_t *n = ns_tree_lookup(t, "/kv");
  /* Commit installs the new chain. */
  ns_partition_t target = begin_split(t, 1, 30000);
  MF_ASSERT_EQ(n->sub_blocks, 4);
  MF_ASSERT_EQ(ns_node_blocks_committed(n), 2);
  counts_ok(t);
  for (int m = 0; m < 2; m++) CU_ASSERT(is_taken(t, ns_part_member(&target, m)));
  /* The split's chain is not a partition yet. */
  MF_ASSERT_EQ(ns_node_find_block(n, &target.more[0], NULL, NULL), MAYFLY_ENOENT);
  APPLY(t, NULL, .type = NS_REC_REPART_END, .path = "/kv", .op_id = 1, .flags = NS_REC_COMMIT);
  MF_ASSERT_EQ(n->layout.parts->len, 2);
  ns_partition_t *np = part(t, "/kv", 1);
  MF_ASSERT_EQ(np->lo, 30000);
  MF_ASSERT_EQ(ns_part_members(np), 2);
  CU_ASSERT(np->more[0].server == target.more[0].server && np->more[0].index == target.more[0].index);
  MF_ASSERT_EQ(np->replicas, 2);
  int pi, mi;
  MF_ASSERT_EQ(ns_node_find_block(n, &target.more[0], &pi, &mi), 0);
  MF_ASSERT_EQ(pi, 1);
  MF_ASSERT_EQ(mi, 1);
  counts_ok(t);
  /* Rollback frees the whole new chain. */
  target = begin_split(t, 2, 10000);
  ns_effects_t fx;
  ns_effects_init(&fx);
  APPLY(t, &fx, .type = NS_REC_REPART_END, .path = "/kv", .op_id = 2);
  MF_ASSERT_EQ(fx.freed->len, 2);
  for (int m = 0; m < 2; m++) CU_ASSERT(has_block(fx.freed, ns_part_member(&target, m)));
  ns_effects_clear(&fx);
  MF_ASSERT_EQ(n->sub_blocks, 4);
  counts_ok(t);
  /* A split whose source head leaves its chain only rolls back. */
  target = begin_split(t, 3, 10000);
  ns_block_t head = part(t, "/kv", 0)->block;
  APPLY(t, NULL, .type = NS_REC_SERVER_STATE, .server_id = head.server, .up = 0);
  CU_ASSERT(ns_node_find_repart(n, 3)->lost);
  FAILS(t, MAYFLY_EMOVED, .type = NS_REC_REPART_END, .path = "/kv", .op_id = 3,
        .flags = NS_REC_COMMIT);
  /* (The snapshot keeps a lost split whose source is no head any more.) */
  GByteArray *e = g_byte_array_new();
  MF_ASSERT_EQ(ns_snap_encode(t, &(ns_snap_meta_t){.seq = 1}, e), 0);
  ns_tree_t *d = NULL;
  ns_snap_meta_t meta;
  MF_ASSERT_EQ(ns_snap_decode(e->data, e->len, LEASE_MS, GRACE_MS, NOW, &d, &meta, why,
                              sizeof why), 0);
  ns_tree_free(d);
  g_byte_array_free(e, TRUE);
  ns_effects_init(&fx);
  APPLY(t, &fx, .type = NS_REC_REPART_END, .path = "/kv", .op_id = 3);
  for (int m = 0; m < ns_part_members(&target); m++) {
    CU_ASSERT(!is_taken(t, ns_part_member(&target, m)));
  }
  ns_effects_clear(&fx);
  counts_ok(t);
  APPLY(t, NULL, .type = NS_REC_SERVER_STATE, .server_id = head.server, .up = 1);
  /* A member of the new chain going down also rolls the split back; a
   * member of the source chain that is not its head does not. */
  target = begin_split(t, 4, 20000);
  APPLY(t, NULL, .type = NS_REC_SERVER_STATE, .server_id = target.more[0].server, .up = 0);
  CU_ASSERT(ns_node_find_repart(n, 4)->lost);
  APPLY(t, NULL, .type = NS_REC_REPART_END, .path = "/kv", .op_id = 4);
  APPLY(t, NULL, .type = NS_REC_SERVER_STATE, .server_id = target.more[0].server, .up = 1);
  /* Back to two members: a new namespace, its split's chain away from the
   * source's hosts, then the source's tail goes down. */
  create(t, "/kv2", NS_KIND_KV, 1, 2);
  ns_node_t *n2 = ns_tree_lookup(t, "/kv2");
  const ns_partition_t *src = part(t, "/kv2", 0);
  int32_t avoid[] = {src->block.server, src->more[0].server};
  ns_block_t chain[2];
  MF_ASSERT_EQ(ns_alloc_pick_chain(t->alloc, 2, avoid, 2, chain), 0);
  ns_partition_t t2 = {.block = chain[0], .nmore = 1, .more = {chain[1]}};
  APPLY(t, NULL, .type = NS_REC_REPART_BEGIN, .path = "/kv2", .op_id = 5, .block = src->block,
        .block2 = chain[0], .lo = 100, .hi = src->hi, .parts = &t2, .nparts = 1);
  int32_t tail_server = src->more[0].server;
  APPLY(t, NULL, .type = NS_REC_SERVER_STATE, .server_id = tail_server, .up = 0);
  MF_ASSERT_EQ(ns_node_find_repart(n2, 5)->lost, 0);
  char want[32];
  snprintf(want, sizeof want, "%d", avoid[0]);
  ASSERT_CHAIN(part(t, "/kv2", 0), want);
  APPLY(t, NULL, .type = NS_REC_REPART_END, .path = "/kv2", .op_id = 5, .flags = NS_REC_COMMIT);
  MF_ASSERT_EQ(n2->layout.parts->len, 2);
  snprintf(want, sizeof want, "%d,%d", chain[0].server, chain[1].server);
  ASSERT_CHAIN(part(t, "/kv2", 1), want);
  APPLY(t, NULL, .type = NS_REC_SERVER_STATE, .server_id = tail_server, .up = 1);
  counts_ok(t);
  /* A merge frees the whole source chain. */
  guint before = n->layout.parts->len;
  const ns_partition_t *a = part(t, "/kv", before - 2), *b = part(t, "/kv", before - 1);
  int64_t gone = ns_part_members(b);
  APPLY(t, NULL, .type = NS_REC_REPART_BEGIN, .flags = NS_REC_MERGE, .path = "/kv", .op_id = 6,
        .block = b->block, .block2 = a->block, .lo = b->lo, .hi = b->hi);
  int64_t held = n->sub_blocks;
  ns_effects_init(&fx);
  APPLY(t, &fx, .type = NS_REC_REPART_END, .path = "/kv", .op_id = 6, .flags = NS_REC_COMMIT);
  MF_ASSERT_EQ(fx.freed->len, (guint)gone);
  MF_ASSERT_EQ(n->sub_blocks, held - gone);
  ns_effects_clear(&fx);
  counts_ok(t);
  /* Removing the namespace mid-split frees every block. */
  begin_split(t, 7, 40000);
  ns_effects_init(&fx);
  APPLY(t, &fx, .type = NS_REC_REMOVE, .path = "/kv");
  MF_ASSERT_EQ(t->alloc->blocks_used, n2->sub_blocks); /* only /kv2's are left */
  MF_ASSERT_EQ(n2->sub_blocks, 3);
  ns_effects_clear(&fx);
  counts_ok(t);
  replay_matches(t, log);
  done(t, log);
}

/* ---- codecs ------------------------------------------------------------------ */

/* A tree with zones, chains, a degraded chain with a copy, a lost
 * partition and a split of a chain under way. */
static ns_tree_t *rich_tree(GPtrArray **log) {
  ns_tree_t *t = new_tree(log);
  add_server(t, "127.0.0.2:7000", "z1", 16, 1);
  add_server(t, "127.0.0.3:7000", "z1", 16, 1);
  add_server(t, "127.0.0.4:7000", "z2", 16, 1);
  add_server(t, "[::1]:7000", "", 16, 1);
  add_server(t, "127.0.0.5:7000", NULL, 16, 1);
  create(t, "/a/kv", NS_KIND_KV, 2, 3);
  create(t, "/a/q", NS_KIND_QUEUE, 1, 2);
  create(t, "/one", NS_KIND_FILE, 2, 1);
  create(t, "/b/f", NS_KIND_FILE, 2, 2);
  APPLY(t, NULL, .type = NS_REC_SERVER_STATE, .server_id = 1, .up = 0);
  APPLY(t, NULL, .type = NS_REC_SERVER_STATE, .server_id = 1, .up = 1);
  ns_node_t *kv = ns_tree_lookup(t, "/a/kv");
  const ns_partition_t *p = &g_array_index(kv->layout.parts, ns_partition_t, 0);
  int32_t avoid[NS_CHAIN_MAX];
  for (int m = 0; m < ns_part_members(p); m++) avoid[m] = ns_part_member(p, m)->server;
  ns_block_t copy;
  MF_ASSERT_EQ(ns_alloc_pick_chain(t->alloc, 1, avoid, ns_part_members(p), &copy), 0);
  APPLY(t, NULL, .type = NS_REC_REPLICA_BEGIN, .path = "/a/kv", .lo = p->lo, .block = copy,
        .op_id = 9);
  const ns_partition_t *p1 = &g_array_index(kv->layout.parts, ns_partition_t, 1);
  ns_partition_t target;
  MF_ASSERT_EQ(ns_tree_plan_append_why(t, kv, p1->lo + 100, p1->hi, &target, why, sizeof why),
               0);
  APPLY(t, NULL, .type = NS_REC_REPART_BEGIN, .path = "/a/kv", .op_id = 10, .block = p1->block,
        .block2 = target.block, .lo = p1->lo + 100, .hi = p1->hi, .parts = &target,
        .nparts = 1);
  APPLY(t, NULL, .type = NS_REC_SERVER_ADD, .address = "127.0.0.5:7000", .blocks = 16,
        .block_size = 1024, .incarnation = 2);
  counts_ok(t);
  return t;
}

static void test_snapshot_round_trip_keeps_chains(void) {
  GPtrArray *log;
  ns_tree_t *t = rich_tree(&log);
  GByteArray *e = g_byte_array_new();
  MF_ASSERT_EQ(ns_snap_encode(t, &(ns_snap_meta_t){.seq = 3, .wall_ms = 4}, e), 0);
  MF_ASSERT_EQ(e->data[0], NS_SNAP_VERSION);
  ns_tree_t *d = NULL;
  ns_snap_meta_t meta;
  MF_ASSERT_EQ(ns_snap_decode(e->data, e->len, LEASE_MS, GRACE_MS, NOW, &d, &meta, why,
                              sizeof why), 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  char *a = tree_snapshot_untimed(t), *b = tree_snapshot_untimed(d);
  CU_ASSERT_STRING_EQUAL(a, b);
  CU_ASSERT(strstr(a, "copy#9") != NULL && strstr(a, "zone=z2") != NULL);
  CU_ASSERT(strstr(a, "host=::1") != NULL && strstr(a, "replicas=3") != NULL);
  g_free(a);
  g_free(b);
  GByteArray *again = g_byte_array_new();
  MF_ASSERT_EQ(ns_snap_encode(d, &meta, again), 0);
  CU_ASSERT(again->len == e->len && memcmp(again->data, e->data, e->len) == 0);
  /* The decoded tree behaves as the original: drop a member in both. */
  ns_effects_t fx1, fx2;
  ns_effects_init(&fx1);
  ns_effects_init(&fx2);
  APPLY(t, &fx1, .type = NS_REC_SERVER_STATE, .server_id = 3, .up = 0);
  APPLY(d, &fx2, .type = NS_REC_SERVER_STATE, .server_id = 3, .up = 0);
  MF_ASSERT_EQ(fx1.freed->len, fx2.freed->len);
  MF_ASSERT_EQ(fx1.rechain->len, fx2.rechain->len);
  CU_ASSERT(fx1.freed->len > 0);
  ns_effects_clear(&fx1);
  ns_effects_clear(&fx2);
  a = tree_snapshot_untimed(t);
  b = tree_snapshot_untimed(d);
  CU_ASSERT_STRING_EQUAL(a, b);
  g_free(a);
  g_free(b);
  ns_tree_free(d);
  g_byte_array_free(e, TRUE);
  g_byte_array_free(again, TRUE);
  replay_matches(t, log);
  done(t, log);
}

static void test_replay_of_records_rebuilds_the_same_chains(void) {
  GPtrArray *log;
  ns_tree_t *t = rich_tree(&log);
  /* Every kind of change of a chain, then replay. */
  ns_node_t *kv = ns_tree_lookup(t, "/a/kv");
  APPLY(t, NULL, .type = NS_REC_REPLICA_END, .path = "/a/kv", .op_id = 9, .flags = NS_REC_COMMIT);
  APPLY(t, NULL, .type = NS_REC_REPART_END, .path = "/a/kv", .op_id = 10,
        .flags = ns_node_find_repart(kv, 10)->lost ? 0 : NS_REC_COMMIT);
  APPLY(t, NULL, .type = NS_REC_SERVER_ADD, .address = "127.0.0.3:7000", .zone = "z3",
        .blocks = 16, .block_size = 1024, .incarnation = 77);
  APPLY(t, NULL, .type = NS_REC_SERVER_STATE, .server_id = 4, .up = 0);
  CU_ASSERT_STRING_EQUAL(ns_alloc_server(t->alloc, 2)->zone, "z3");
  counts_ok(t);
  MF_ASSERT_EQ(log->len, 18); /* the observer saw every record */
  replay_matches(t, log);
  /* Records of the new kinds round-trip through the codec exactly. */
  for (guint i = 0; i < log->len; i++) {
    GByteArray *e = g_ptr_array_index(log, i);
    ns_rec_buf_t b;
    ns_rec_buf_init(&b);
    MF_ASSERT_EQ(ns_rec_decode(e->data, e->len, &b, why, sizeof why), 0);
    GByteArray *again = g_byte_array_new();
    MF_ASSERT_EQ(ns_rec_encode(&b.rec, again), 0);
    CU_ASSERT(again->len == e->len && memcmp(again->data, e->data, e->len) == 0);
    g_byte_array_free(again, TRUE);
    ns_rec_buf_clear(&b);
  }
  done(t, log);
}

/* A version 1 CREATE record (before replication) of queue /old on block
 * (1, 0, 1), written field by field as docs/log-format.md lays it out. */
static GByteArray *v1_create_record(uint8_t type) {
  GByteArray *o = g_byte_array_new();
  ns_codec_put_u8(o, 1);    /* version */
  ns_codec_put_u8(o, type); /* type */
  ns_codec_put_u32(o, 0);   /* flags */
  ns_codec_put_u64(o, NOW); /* now_ms */
  ns_codec_put_u64(o, 5);   /* wall_ms */
  ns_codec_put_str(o, "/old", 100);
  ns_codec_put_u32(o, UINT32_MAX); /* path2 absent */
  ns_codec_put_u8(o, NS_KIND_QUEUE);
  ns_codec_put_u64(o, 0); /* lease */
  ns_codec_put_u32(o, 0); /* node flags */
  ns_codec_put_u32(o, 0); /* tags */
  ns_codec_put_u32(o, 1); /* partitions */
  ns_codec_put_u32(o, 1);
  ns_codec_put_u32(o, 0);
  ns_codec_put_u64(o, 1); /* block 1:0 generation 1 */
  ns_codec_put_u64(o, 0);
  ns_codec_put_u64(o, 1); /* [0, 1) */
  ns_codec_put_u8(o, 0);  /* live */
  ns_codec_put_u32(o, 0); /* part_index */
  ns_codec_put_u32(o, 0); /* paths */
  ns_codec_put_u32(o, UINT32_MAX); /* address absent */
  ns_codec_put_u32(o, 0);  /* blocks */
  ns_codec_put_u64(o, 0);  /* block_size */
  ns_codec_put_u32(o, 0);  /* server_id */
  ns_codec_put_u32(o, 0);  /* up */
  ns_codec_put_u64(o, 0);  /* gen_floor */
  ns_codec_put_u64(o, 0);  /* incarnation */
  for (int i = 0; i < 3; i++) ns_codec_put_u32(o, 0); /* max_blocks, watermarks */
  ns_codec_put_u64(o, 0);  /* op_id */
  for (int i = 0; i < 2; i++) {
    ns_codec_put_u32(o, 0);
    ns_codec_put_u32(o, 0);
    ns_codec_put_u64(o, 0); /* block, block2 */
  }
  ns_codec_put_u64(o, 0); /* lo */
  ns_codec_put_u64(o, 0); /* hi */
  return o;
}

static void test_version_1_records_still_decode_and_apply(void) {
  GByteArray *e = v1_create_record(NS_REC_CREATE);
  ns_rec_buf_t b;
  ns_rec_buf_init(&b);
  MF_ASSERT_EQ(ns_rec_decode(e->data, e->len, &b, why, sizeof why), 0);
  MF_ASSERT_EQ(b.version, 1);
  MF_ASSERT_EQ(b.rec.type, NS_REC_CREATE);
  MF_ASSERT_EQ(b.rec.replicas, 0);
  CU_ASSERT_PTR_NULL(b.rec.zone);
  MF_ASSERT_EQ(b.rec.nparts, 1);
  MF_ASSERT_EQ(b.rec.parts[0].nmore, 0);
  MF_ASSERT_EQ(b.rec.parts[0].copy.server, 0);
  GPtrArray *log;
  ns_tree_t *t = new_tree(&log);
  add_server(t, "ms1:7000", NULL, 2, 1);
  apply_ok(t, &b.rec, NULL, __LINE__);
  ns_node_t *n = ns_tree_lookup(t, "/old");
  MF_ASSERT_EQ(ns_node_replicas(n), 1);
  MF_ASSERT_EQ(part(t, "/old", 0)->replicas, 1);
  MF_ASSERT_EQ(part(t, "/old", 0)->chain_version, 1);
  counts_ok(t);
  /* It re-encodes as version 2, which decodes to the same record. */
  GByteArray *v2 = g_byte_array_new();
  MF_ASSERT_EQ(ns_rec_encode(&b.rec, v2), 0);
  MF_ASSERT_EQ(v2->data[0], NS_REC_VERSION);
  ns_rec_buf_t b2;
  ns_rec_buf_init(&b2);
  MF_ASSERT_EQ(ns_rec_decode(v2->data, v2->len, &b2, why, sizeof why), 0);
  MF_ASSERT_EQ(b2.rec.nparts, 1);
  CU_ASSERT(memcmp(&b2.rec.parts[0], &b.rec.parts[0], sizeof b.rec.parts[0]) == 0);
  CU_ASSERT_STRING_EQUAL(b2.rec.path, "/old");
  ns_rec_buf_clear(&b2);
  ns_rec_buf_clear(&b);
  g_byte_array_free(v2, TRUE);
  g_byte_array_free(e, TRUE);
  /* Version 1 knows no replica records. */
  e = v1_create_record(NS_REC_REPLICA_BEGIN);
  why[0] = '\0';
  MF_ASSERT_EQ(ns_rec_decode(e->data, e->len, &b, why, sizeof why), MAYFLY_EPROTO);
  CU_ASSERT(strstr(why, "unknown record type") != NULL);
  g_byte_array_free(e, TRUE);
  done(t, log);
}

/* A version 1 snapshot body: server ms1:7000 (2 blocks, block 0 in use),
 * queue /q on block (1, 0, 1), as docs/log-format.md lays it out. */
static GByteArray *v1_snapshot(void) {
  GByteArray *o = g_byte_array_new();
  ns_codec_put_u8(o, 1);  /* version */
  ns_codec_put_u64(o, 7); /* seq */
  ns_codec_put_u64(o, 8); /* wall_ms */
  ns_codec_put_u64(o, 0); /* n_expired */
  ns_codec_put_u64(o, 0); /* last_op_id */
  ns_codec_put_u32(o, 1); /* servers */
  ns_codec_put_u32(o, 1); /* id */
  ns_codec_put_str(o, "ms1:7000", 100);
  ns_codec_put_u32(o, 2);    /* nblocks */
  ns_codec_put_u64(o, 1024); /* block_size */
  ns_codec_put_u8(o, 1);     /* up */
  ns_codec_put_u64(o, 5);    /* incarnation */
  ns_codec_put_u32(o, 1);    /* used */
  ns_codec_put_u64(o, 1);
  ns_codec_put_u8(o, 1); /* block 0: generation 1, in use */
  ns_codec_put_u64(o, 1);
  ns_codec_put_u8(o, 0);  /* block 1: generation 1, free */
  ns_codec_put_u32(o, 1); /* free stack */
  ns_codec_put_u32(o, 1);
  ns_codec_put_u64(o, 2); /* blocks_total */
  ns_codec_put_u64(o, 1); /* blocks_used */
  ns_codec_put_u64(o, 0); /* n_dirs */
  ns_codec_put_u64(o, 1); /* n_leaves */
  ns_codec_put_u32(o, 0); /* parent: the root */
  ns_codec_put_str(o, "q", 100);
  ns_codec_put_u8(o, NS_KIND_QUEUE);
  ns_codec_put_u32(o, 0); /* flags */
  ns_codec_put_u64(o, 0); /* created */
  ns_codec_put_u64(o, 0); /* lease */
  ns_codec_put_u64(o, 1); /* layout version */
  ns_codec_put_u32(o, 0); /* max_blocks */
  ns_codec_put_u32(o, 1); /* initial_blocks */
  ns_codec_put_u32(o, 0);
  ns_codec_put_u32(o, 0); /* watermarks */
  ns_codec_put_u32(o, 0); /* tags */
  ns_codec_put_u32(o, 1); /* partitions */
  ns_codec_put_u32(o, 1);
  ns_codec_put_u32(o, 0);
  ns_codec_put_u64(o, 1);
  ns_codec_put_u64(o, 0);
  ns_codec_put_u64(o, 1);
  ns_codec_put_u8(o, 0);
  ns_codec_put_u32(o, 0); /* repartitions */
  return o;
}

static void test_version_1_snapshots_still_decode(void) {
  GByteArray *e = v1_snapshot();
  ns_tree_t *t = NULL;
  ns_snap_meta_t meta;
  why[0] = '\0';
  int rc = ns_snap_decode(e->data, e->len, LEASE_MS, GRACE_MS, NOW, &t, &meta, why, sizeof why);
  if (rc != 0) fprintf(stderr, "  %s\n", why);
  MF_ASSERT_EQ(rc, 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(t);
  MF_ASSERT_EQ(meta.seq, 7);
  ns_server_t *s = ns_alloc_server(t->alloc, 1);
  CU_ASSERT_STRING_EQUAL(s->host, "ms1");
  CU_ASSERT_STRING_EQUAL(s->zone, "");
  ns_node_t *n = ns_tree_lookup(t, "/q");
  CU_ASSERT_PTR_NOT_NULL_FATAL(n);
  MF_ASSERT_EQ(ns_node_replicas(n), 1);
  const ns_partition_t *p = part(t, "/q", 0);
  MF_ASSERT_EQ(p->nmore, 0);
  MF_ASSERT_EQ(p->replicas, 1);
  MF_ASSERT_EQ(p->chain_version, 1);
  MF_ASSERT_EQ(p->copy.server, 0);
  counts_ok(t);
  /* It encodes as version 2, canonical from then on. */
  GByteArray *v2 = g_byte_array_new();
  MF_ASSERT_EQ(ns_snap_encode(t, &meta, v2), 0);
  MF_ASSERT_EQ(v2->data[0], NS_SNAP_VERSION);
  ns_tree_t *d = NULL;
  MF_ASSERT_EQ(ns_snap_decode(v2->data, v2->len, LEASE_MS, GRACE_MS, NOW, &d, &meta, why,
                              sizeof why), 0);
  char *a = tree_snapshot_untimed(t), *b = tree_snapshot_untimed(d);
  CU_ASSERT_STRING_EQUAL(a, b);
  g_free(a);
  g_free(b);
  /* A partition that is lost in an old snapshot stays lost after a restart. */
  ns_effects_t fx;
  ns_effects_init(&fx);
  APPLY(d, &fx, .type = NS_REC_SERVER_ADD, .address = "ms1:7000", .blocks = 2,
        .block_size = 1024, .incarnation = 6);
  MF_ASSERT_EQ(fx.lost_parts, 1);
  ns_effects_clear(&fx);
  ns_tree_free(d);
  ns_tree_free(t);
  g_byte_array_free(v2, TRUE);
  g_byte_array_free(e, TRUE);
}

static const mf_test_t tests[] = {
    {"the host of an address", test_host_of_addresses},
    {"a chain goes on distinct hosts, new zones first, least used next",
     test_pick_chain_spreads_over_hosts_then_zones},
    {"planning places every partition's chain and names too few hosts",
     test_plan_chains_places_every_partition_and_names_too_few_hosts},
    {"create takes every member, and each block is found in its chain",
     test_create_takes_every_member_and_finds_each_block},
    {"down drops the head, a middle or the tail",
     test_down_drops_the_member_head_middle_or_tail},
    {"a new incarnation drops the head, a middle or the tail",
     test_new_incarnation_drops_the_member_head_middle_or_tail},
    {"a chain is lost only when its last member goes",
     test_a_chain_is_lost_only_when_its_last_member_goes},
    {"replica begin and end: commit appends at the tail, abort frees",
     test_replica_begin_and_end_commit_and_abort},
    {"a copy is cancelled when its server or the tail leaves",
     test_a_copy_is_cancelled_when_its_server_or_the_tail_leaves},
    {"truncate and remove_part free whole chains",
     test_truncate_and_remove_part_free_whole_chains},
    {"splits and merges of chains", test_splits_and_merges_of_chains},
    {"a snapshot round trip keeps chains, copies and zones",
     test_snapshot_round_trip_keeps_chains},
    {"replaying the records rebuilds the same chains",
     test_replay_of_records_rebuilds_the_same_chains},
    {"version 1 records still decode and apply", test_version_1_records_still_decode_and_apply},
    {"version 1 snapshots still decode", test_version_1_snapshots_still_decode},
    {NULL, NULL}};

int main(void) {
  return mf_test_run("namespaces/chains", NULL, NULL, tests);
}
