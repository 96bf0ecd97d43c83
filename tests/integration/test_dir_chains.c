/*
 * Replication, the directory's side (issue 12), against a real
 * mayfly-directory with a cluster key and "memory servers" the test plays
 * itself through the control API (registered on distinct loopback hosts,
 * 127.0.0.2 and up; nothing listens there: the directory never calls a
 * memory server). The test heartbeats for them, stops heartbeating one to
 * make it fail, and ends re-replication copies as a chain's tail would.
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/ctl.h"
#include "common/error.h"
#include "harness.h"
#include "mf_test.h"

static char *scratch, *key_path;
static uint8_t key[MF_KEY_SIZE];

/* A memory server the test plays. */
typedef struct {
  char address[32];
  int id;
} fake_t;

#define CALL(ctl, expr)                       \
  ({                                          \
    MayflyDirectoryIf *i;                     \
    MayflyError *err = NULL;                  \
    GError *gerr = NULL;                      \
    int rc_ = mf_ctl_begin((ctl), &i);        \
    if (rc_ == 0) {                           \
      gboolean ok = (expr);                   \
      rc_ = mf_ctl_end((ctl), ok, err, gerr); \
    }                                         \
    rc_;                                      \
  })

/* A control connection that passed the cluster handshake (k: the key) or
 * not (NULL). */
static mf_ctl_t *ctl_of(const mf_daemon_t *d, const uint8_t *k) {
  mf_ctl_t *c = NULL;
  if (mf_ctl_open(d->address, 10000, 2000, &c) != 0) return NULL;
  if (k != NULL) mf_ctl_set_auth(c, NULL, k);
  return c;
}

static mf_daemon_t *start_dir(const char *replicas, const char *copy_timeout) {
  return mf_start_directory("--cluster-key-file", key_path, "--heartbeat-ms", "100",
                            "--heartbeat-timeout-ms", "1500", "--replicas", replicas,
                            "--copy-timeout", copy_timeout, NULL);
}

static int reg(mf_ctl_t *c, fake_t *f, const char *host, const char *zone, int64_t *timeout_ms) {
  snprintf(f->address, sizeof f->address, "%s:7001", host);
  MayflyRegisterReply *r = g_object_new(MAYFLY_TYPE_REGISTER_REPLY, NULL);
  int rc = CALL(c, mayfly_directory_if_register_server(i, &r, f->address, 8, 65536, 0, 0, zone,
                                                        &err, &gerr));
  if (rc == 0) {
    f->id = r->server_id;
    if (timeout_ms != NULL) *timeout_ms = r->__isset_heartbeat_timeout_ms ? r->heartbeat_timeout_ms : -1;
  }
  g_object_unref(r);
  return rc;
}

/* Registers n servers on hosts 127.0.0.2, .3, ... */
static void reg_hosts(mf_ctl_t *c, fake_t *f, int n) {
  for (int k = 0; k < n; k++) {
    char host[32];
    snprintf(host, sizeof host, "127.0.0.%d", k + 2);
    MF_ASSERT_EQ(reg(c, &f[k], host, "", NULL), 0);
  }
}

/* One heartbeat; the blocks it says to release and to check again are
 * appended (their indexes) to release and rechain (either may be NULL). */
static int hb(mf_ctl_t *c, const fake_t *f, GArray *release, GArray *rechain) {
  MayflyHeartbeatReply *r = g_object_new(MAYFLY_TYPE_HEARTBEAT_REPLY, NULL);
  int rc = CALL(c, mayfly_directory_if_heartbeat(i, &r, f->id, 0, 0, &err, &gerr));
  for (guint k = 0; rc == 0 && release != NULL && k < r->release->len; k++) {
    MayflyBlockRef *b = g_ptr_array_index(r->release, k);
    g_array_append_val(release, b->block_index);
  }
  for (guint k = 0; rc == 0 && rechain != NULL && k < r->rechain->len; k++) {
    MayflyBlockRef *b = g_ptr_array_index(r->rechain, k);
    g_array_append_val(rechain, b->block_index);
  }
  g_object_unref(r);
  return rc;
}

static int has_index(const GArray *a, int index) {
  for (guint k = 0; k < a->len; k++) {
    if (g_array_index(a, int, k) == index) return 1;
  }
  return 0;
}

static int create(mf_ctl_t *c, const char *path, MayflyNodeKind kind, int blocks, int replicas,
                  MayflyNodeInfo **out) {
  MayflyCreateOptions *o = g_object_new(MAYFLY_TYPE_CREATE_OPTIONS, NULL);
  o->blocks = blocks;
  if (replicas > 0) {
    o->replicas = replicas;
    o->__isset_replicas = TRUE;
  }
  MayflyNodeInfo *ni = g_object_new(MAYFLY_TYPE_NODE_INFO, NULL);
  int rc = CALL(c, mayfly_directory_if_create_ns(i, &ni, path, kind, o, 0, 0, &err, &gerr));
  g_object_unref(o);
  if (rc == 0 && out != NULL) {
    *out = ni;
  } else {
    g_object_unref(ni);
  }
  return rc;
}

static MayflyLayout *layout(mf_ctl_t *c, const char *path) {
  MayflyLayout *l = g_object_new(MAYFLY_TYPE_LAYOUT, NULL);
  if (CALL(c, mayfly_directory_if_get_layout(i, &l, path, &err, &gerr)) != 0) {
    g_object_unref(l);
    return NULL;
  }
  return l;
}

static MayflyBlockInfo *check(mf_ctl_t *c, int server, int index) {
  MayflyBlockInfo *bi = g_object_new(MAYFLY_TYPE_BLOCK_INFO, NULL);
  if (CALL(c, mayfly_directory_if_check_block(i, &bi, server, index, &err, &gerr)) != 0) {
    g_object_unref(bi);
    return NULL;
  }
  return bi;
}

static int replica_end(mf_ctl_t *c, int server, int64_t op, int commit, int64_t bytes,
                       MayflyLayout **out) {
  MayflyLayout *l = g_object_new(MAYFLY_TYPE_LAYOUT, NULL);
  int rc = CALL(c, mayfly_directory_if_replica_end(i, &l, server, op, commit, bytes, &err, &gerr));
  if (rc == 0 && out != NULL) {
    *out = l;
  } else {
    g_object_unref(l);
  }
  return rc;
}

static MayflyStats *stats(mf_ctl_t *c) {
  MayflyStats *s = g_object_new(MAYFLY_TYPE_STATS, NULL);
  if (CALL(c, mayfly_directory_if_stats(i, &s, &err, &gerr)) != 0) {
    g_object_unref(s);
    return NULL;
  }
  return s;
}

static MayflyPartition *part(MayflyLayout *l, guint k) {
  return g_ptr_array_index(l->partitions, k);
}

static MayflyReplica *member(GPtrArray *chain, guint k) { return g_ptr_array_index(chain, k); }

static const fake_t *fake_of(const fake_t *f, int n, int id) {
  for (int k = 0; k < n; k++) {
    if (f[k].id == id) return &f[k];
  }
  return NULL;
}

/* The host part of "host:port". */
static char *host_of(const char *address) {
  const char *colon = strrchr(address, ':');
  return g_strndup(address, colon ? (gsize)(colon - address) : strlen(address));
}

/* A replicated partition as every layout must show it: R members on R
 * distinct hosts, fields 1-4 and 9 repeating the head, every member with a
 * capability of its own. */
static void assert_chain_shape(const MayflyPartition *p, int r) {
  CU_ASSERT_FATAL(p->__isset_chain);
  MF_ASSERT_EQ(p->chain->len, r);
  MF_ASSERT_EQ(p->replicas, r);
  CU_ASSERT(p->__isset_chain_version);
  CU_ASSERT(p->__isset_state && strcmp(p->state, "ok") == 0);
  const MayflyReplica *head = member(p->chain, 0);
  MF_ASSERT_EQ(p->server_id, head->server_id);
  MF_ASSERT_EQ(p->block_index, head->block_index);
  MF_ASSERT_EQ(p->generation, head->generation);
  CU_ASSERT(strcmp(p->server_address, head->server_address) == 0);
  CU_ASSERT_FATAL(p->capability != NULL && head->capability != NULL);
  CU_ASSERT(strcmp(p->capability, head->capability) == 0);
  for (int a = 0; a < r; a++) {
    const MayflyReplica *ma = member(p->chain, (guint)a);
    CU_ASSERT(ma->capability != NULL && strlen(ma->capability) > 0);
    char *ha = host_of(ma->server_address);
    for (int b = a + 1; b < r; b++) {
      const MayflyReplica *mb = member(p->chain, (guint)b);
      char *hb_ = host_of(mb->server_address);
      CU_ASSERT(strcmp(ha, hb_) != 0); /* distinct hosts */
      CU_ASSERT(mb->capability == NULL || ma->capability == NULL ||
                strcmp(ma->capability, mb->capability) != 0);
      g_free(hb_);
    }
    g_free(ha);
  }
}

static void test_replicated_creates_put_chains_on_distinct_hosts_with_a_capability_per_member(
    void) {
  mf_daemon_t *d = start_dir("1", "30s");
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  mf_ctl_t *c = ctl_of(d, key);
  fake_t f[4];
  int64_t timeout = 0;
  MF_ASSERT_EQ(reg(c, &f[0], "127.0.0.2", "zone-a", &timeout), 0);
  MF_ASSERT_EQ(timeout, 1500); /* the memory servers' liveness guard */
  MF_ASSERT_EQ(reg(c, &f[1], "127.0.0.3", "zone-a", NULL), 0);
  MF_ASSERT_EQ(reg(c, &f[2], "127.0.0.4", "zone-b", NULL), 0);
  MF_ASSERT_EQ(reg(c, &f[3], "127.0.0.5", "", NULL), 0);

  MayflyNodeInfo *ni = NULL;
  MF_ASSERT_EQ(create(c, "/kv3", MAYFLY_NODE_KIND_KV, 2, 3, &ni), 0);
  CU_ASSERT_FATAL(ni != NULL);
  MF_ASSERT_EQ(ni->layout->partitions->len, 2);
  for (guint k = 0; k < ni->layout->partitions->len; k++) {
    MayflyPartition *p = part(ni->layout, k);
    assert_chain_shape(p, 3);
    /* Every member's server knows its place in the chain. */
    for (guint m = 0; m < p->chain->len; m++) {
      MayflyBlockInfo *bi = check(c, member(p->chain, m)->server_id, member(p->chain, m)->block_index);
      CU_ASSERT_FATAL(bi != NULL);
      CU_ASSERT(bi->allocated);
      CU_ASSERT(bi->__isset_chain && bi->__isset_chain_pos);
      MF_ASSERT_EQ(bi->chain_pos, m);
      MF_ASSERT_EQ(bi->chain->len, 3);
      MF_ASSERT_EQ(bi->chain_version, p->chain_version);
      CU_ASSERT(!bi->__isset_copy_to);
      g_object_unref(bi);
    }
  }
  g_object_unref(ni);

  ni = NULL;
  MF_ASSERT_EQ(create(c, "/q2", MAYFLY_NODE_KIND_QUEUE, 1, 2, &ni), 0);
  CU_ASSERT_FATAL(ni != NULL);
  assert_chain_shape(part(ni->layout, 0), 2);
  g_object_unref(ni);

  /* R = 1 (the directory's --replicas 1): a plain partition, as before. */
  ni = NULL;
  MF_ASSERT_EQ(create(c, "/plain", MAYFLY_NODE_KIND_FILE, 1, 0, &ni), 0);
  CU_ASSERT_FATAL(ni != NULL);
  CU_ASSERT(!part(ni->layout, 0)->__isset_chain);
  CU_ASSERT(!part(ni->layout, 0)->__isset_replicas);
  g_object_unref(ni);

  /* servers(): zone, host and the chains that depend on each server. */
  GPtrArray *srv = g_ptr_array_new_with_free_func(g_object_unref);
  MF_ASSERT_EQ(CALL(c, mayfly_directory_if_servers(i, &srv, &err, &gerr)), 0);
  MF_ASSERT_EQ(srv->len, 4);
  int chains = 0;
  for (guint k = 0; k < srv->len; k++) {
    MayflyServerInfo *si = g_ptr_array_index(srv, k);
    char *h = host_of(si->address);
    CU_ASSERT(si->__isset_host && strcmp(si->host, h) == 0);
    g_free(h);
    if (si->id == f[0].id) CU_ASSERT(strcmp(si->zone, "zone-a") == 0);
    if (si->id == f[3].id) CU_ASSERT(strcmp(si->zone, "") == 0);
    chains += si->chains;
  }
  MF_ASSERT_EQ(chains, 2 * 3 + 2); /* a member per replica of each chain */
  g_ptr_array_free(srv, TRUE);
  mf_ctl_close(c);
  MF_ASSERT_EQ(mf_stop(d), 0);
}

static void test_too_few_hosts_is_enohosts_and_the_directory_default_applies(void) {
  mf_daemon_t *d = start_dir("2", "30s");
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  mf_ctl_t *c = ctl_of(d, key);
  fake_t f[3];
  /* Two servers on one host, a third on another: two hosts. */
  MF_ASSERT_EQ(reg(c, &f[0], "127.0.0.2", "", NULL), 0);
  snprintf(f[1].address, sizeof f[1].address, "127.0.0.2:7002");
  MayflyRegisterReply *r = g_object_new(MAYFLY_TYPE_REGISTER_REPLY, NULL);
  MF_ASSERT_EQ(CALL(c, mayfly_directory_if_register_server(i, &r, f[1].address, 8, 65536, 0, 0,
                                                            "", &err, &gerr)),
               0);
  g_object_unref(r);
  MF_ASSERT_EQ(reg(c, &f[2], "127.0.0.3", "", NULL), 0);
  /* A zone name is checked. */
  fake_t bad;
  MF_ASSERT_EQ(reg(c, &bad, "127.0.0.9", "no spaces", NULL), MAYFLY_EINVAL);

  MF_ASSERT_EQ(create(c, "/three", MAYFLY_NODE_KIND_KV, 1, 3, NULL), MAYFLY_ENOHOSTS);
  const char *why = mf_last_error();
  CU_ASSERT(strstr(why, "3 replicas") != NULL && strstr(why, "2 hosts") != NULL);
  MF_ASSERT_EQ(create(c, "/six", MAYFLY_NODE_KIND_KV, 1, 6, NULL), MAYFLY_ENOHOSTS);
  MayflyStats *s = stats(c);
  CU_ASSERT_FATAL(s != NULL);
  MF_ASSERT_EQ(s->blocks_used, 0); /* nothing was taken */
  g_object_unref(s);

  /* The directory's --replicas 2 when the create does not say. */
  MayflyNodeInfo *ni = NULL;
  MF_ASSERT_EQ(create(c, "/two", MAYFLY_NODE_KIND_KV, 2, 0, &ni), 0);
  CU_ASSERT_FATAL(ni != NULL);
  for (guint k = 0; k < ni->layout->partitions->len; k++) assert_chain_shape(part(ni->layout, k), 2);
  g_object_unref(ni);
  mf_ctl_close(c);
  MF_ASSERT_EQ(mf_stop(d), 0);
}

/* Heartbeats every server in f but `silent` for about ms milliseconds,
 * collecting each one's rechain blocks in rechain[k]; stops early once
 * done(ud) says so. Returns whether it did. */
static int heartbeat_while(mf_ctl_t *c, const fake_t *f, int n, int silent, GArray **rechain,
                           int ms, int (*done)(mf_ctl_t *, void *), void *ud) {
  for (int waited = 0; waited < ms; waited += 50) {
    for (int k = 0; k < n; k++) {
      if (k != silent) MF_ASSERT_EQ(hb(c, &f[k], NULL, rechain[k]), 0);
    }
    if (done(c, ud)) return 1;
    mf_sleep_ms(50);
  }
  return 0;
}

typedef struct {
  const char *path;
  int members;   /* wait for a chain of this many */
  int copying;   /* or for a copy under way */
} wait_t;

static int chain_is(mf_ctl_t *c, void *ud) {
  const wait_t *w = ud;
  MayflyLayout *l = layout(c, w->path);
  if (l == NULL) return 0;
  const MayflyPartition *p = part(l, 0);
  int ok = w->copying ? strcmp(p->state, "copying") == 0 : (int)p->chain->len == w->members;
  g_object_unref(l);
  return ok;
}

static void test_a_silent_server_leaves_its_chains_and_a_copy_makes_them_whole_again(void) {
  mf_daemon_t *d = start_dir("1", "30s");
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  mf_ctl_t *c = ctl_of(d, key);
  enum { N = 4 };
  fake_t f[N];
  reg_hosts(c, f, N);
  MayflyNodeInfo *ni = NULL;
  MF_ASSERT_EQ(create(c, "/kv", MAYFLY_NODE_KIND_KV, 1, 3, &ni), 0);
  CU_ASSERT_FATAL(ni != NULL);
  MayflyPartition *p0 = part(ni->layout, 0);
  assert_chain_shape(p0, 3);
  int64_t version0 = ni->layout->version, chain_version0 = p0->chain_version;
  /* The head fails: its server stops heartbeating. */
  int head_srv = member(p0->chain, 0)->server_id, head_idx = member(p0->chain, 0)->block_index;
  int mid_srv = member(p0->chain, 1)->server_id, mid_idx = member(p0->chain, 1)->block_index;
  int tail_srv = member(p0->chain, 2)->server_id, tail_idx = member(p0->chain, 2)->block_index;
  int silent = -1, spare = -1;
  for (int k = 0; k < N; k++) {
    if (f[k].id == head_srv) silent = k;
    if (f[k].id != head_srv && f[k].id != mid_srv && f[k].id != tail_srv) spare = k;
  }
  CU_ASSERT_FATAL(silent >= 0 && spare >= 0);
  g_object_unref(ni);

  GArray *rechain[N];
  for (int k = 0; k < N; k++) rechain[k] = g_array_new(FALSE, FALSE, sizeof(int));
  wait_t w = {.path = "/kv", .members = 2};
  /* The heartbeat timeout is 1.5 s: well within 10 s. */
  CU_ASSERT_FATAL(heartbeat_while(c, f, N, silent, rechain, 10000, chain_is, &w));
  /* One more round: every survivor heartbeats after the change. */
  for (int k = 0; k < N; k++) {
    if (k != silent) MF_ASSERT_EQ(hb(c, &f[k], NULL, rechain[k]), 0);
  }
  MayflyLayout *l = layout(c, "/kv");
  CU_ASSERT_FATAL(l != NULL);
  MayflyPartition *p = part(l, 0);
  CU_ASSERT(l->version > version0);
  CU_ASSERT(p->chain_version > chain_version0);
  /* The head's successor is the head now. */
  MF_ASSERT_EQ(p->chain->len, 2);
  MF_ASSERT_EQ(member(p->chain, 0)->server_id, mid_srv);
  MF_ASSERT_EQ(member(p->chain, 1)->server_id, tail_srv);
  MF_ASSERT_EQ(p->server_id, mid_srv);
  MF_ASSERT_EQ(p->replicas, 3);
  CU_ASSERT(strcmp(p->state, "degraded") == 0 || strcmp(p->state, "copying") == 0);
  int64_t cv = p->chain_version;
  g_object_unref(l);
  MayflyBlockInfo *bi = check(c, mid_srv, mid_idx);
  CU_ASSERT_FATAL(bi != NULL);
  MF_ASSERT_EQ(bi->chain_pos, 0);
  MF_ASSERT_EQ(bi->chain->len, 2);
  CU_ASSERT(bi->chain_version >= cv);
  g_object_unref(bi);
  bi = check(c, head_srv, head_idx);
  CU_ASSERT_FATAL(bi != NULL);
  CU_ASSERT(!bi->allocated); /* the dropped member was freed */
  g_object_unref(bi);
  /* The survivors were told to look again. */
  for (int k = 0; k < N; k++) {
    if (f[k].id == mid_srv) CU_ASSERT(has_index(rechain[k], mid_idx));
    if (f[k].id == tail_srv) CU_ASSERT(has_index(rechain[k], tail_idx));
  }
  MayflyStats *s = stats(c);
  CU_ASSERT_FATAL(s != NULL);
  CU_ASSERT(s->chain_failovers >= 1);
  g_object_unref(s);

  /* Re-replication: a block on the spare host, filled from the tail. */
  w = (wait_t){.path = "/kv", .copying = 1};
  CU_ASSERT_FATAL(heartbeat_while(c, f, N, silent, rechain, 5000, chain_is, &w));
  bi = check(c, tail_srv, tail_idx);
  CU_ASSERT_FATAL(bi != NULL);
  CU_ASSERT_FATAL(bi->__isset_copy_to && bi->__isset_copy_op);
  MF_ASSERT_EQ(bi->copy_to->server_id, f[spare].id);
  int copy_idx = bi->copy_to->block_index;
  int64_t op = bi->copy_op;
  g_object_unref(bi);
  bi = check(c, f[spare].id, copy_idx);
  CU_ASSERT_FATAL(bi != NULL);
  CU_ASSERT(bi->allocated);
  MF_ASSERT_EQ(bi->chain_pos, -1); /* filled, not yet in the chain */
  g_object_unref(bi);
  /* The middle is not the tail: only the tail ends the copy. */
  MF_ASSERT_EQ(replica_end(c, mid_srv, op, 1, 10, NULL), MAYFLY_EPERM);
  MF_ASSERT_EQ(replica_end(c, tail_srv, op + 1000, 1, 10, NULL), MAYFLY_ENOENT);
  MayflyLayout *after = NULL;
  MF_ASSERT_EQ(replica_end(c, tail_srv, op, 1, 123456, &after), 0);
  CU_ASSERT_FATAL(after != NULL);
  p = part(after, 0);
  MF_ASSERT_EQ(p->chain->len, 3);
  MF_ASSERT_EQ(member(p->chain, 2)->server_id, f[spare].id);
  MF_ASSERT_EQ(member(p->chain, 2)->block_index, copy_idx);
  CU_ASSERT(strcmp(p->state, "ok") == 0);
  CU_ASSERT(p->chain_version > cv);
  g_object_unref(after);
  bi = check(c, f[spare].id, copy_idx);
  CU_ASSERT_FATAL(bi != NULL);
  MF_ASSERT_EQ(bi->chain_pos, 2);
  g_object_unref(bi);
  s = stats(c);
  CU_ASSERT_FATAL(s != NULL);
  MF_ASSERT_EQ(s->rereplications, 1);
  MF_ASSERT_EQ(s->rereplicated_bytes, 123456);
  MF_ASSERT_EQ(s->partitions_degraded, 0);
  g_object_unref(s);
  MF_ASSERT_EQ(mf_log_count(d, "re-replication"), 2); /* begun, committed */

  /* The silent server comes back: the block it lost is in its release list. */
  GArray *released = g_array_new(FALSE, FALSE, sizeof(int));
  MF_ASSERT_EQ(hb(c, &f[silent], released, NULL), 0);
  CU_ASSERT(has_index(released, head_idx));
  g_array_free(released, TRUE);
  for (int k = 0; k < N; k++) g_array_free(rechain[k], TRUE);
  mf_ctl_close(c);
  MF_ASSERT_EQ(mf_stop(d), 0);
}

/* The current copy of /kv's first partition, from its tail's check_block
 * (op 0: none). */
static int64_t copy_of(mf_ctl_t *c, int *copy_srv, int *copy_idx) {
  MayflyLayout *l = layout(c, "/kv");
  if (l == NULL) return 0;
  const MayflyPartition *p = part(l, 0);
  const MayflyReplica *tail = member(p->chain, p->chain->len - 1);
  MayflyBlockInfo *bi = check(c, tail->server_id, tail->block_index);
  g_object_unref(l);
  if (bi == NULL) return 0;
  int64_t op = bi->__isset_copy_op ? bi->copy_op : 0;
  if (op != 0) {
    *copy_srv = bi->copy_to->server_id;
    *copy_idx = bi->copy_to->block_index;
  }
  g_object_unref(bi);
  return op;
}

typedef struct {
  int64_t not_op; /* wait for a copy other than this one */
} copy_wait_t;

static int copy_other(mf_ctl_t *c, void *ud) {
  copy_wait_t *w = ud;
  int s, i;
  int64_t op = copy_of(c, &s, &i);
  return op != 0 && op != w->not_op;
}

static void test_an_aborted_or_timed_out_copy_frees_its_block_and_is_tried_again(void) {
  mf_daemon_t *d = start_dir("1", "1500ms");
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  mf_ctl_t *c = ctl_of(d, key);
  enum { N = 3 };
  fake_t f[N];
  reg_hosts(c, f, N);
  MayflyNodeInfo *ni = NULL;
  MF_ASSERT_EQ(create(c, "/kv", MAYFLY_NODE_KIND_KV, 1, 2, &ni), 0);
  CU_ASSERT_FATAL(ni != NULL);
  const MayflyPartition *p0 = part(ni->layout, 0);
  int tail_srv = member(p0->chain, 1)->server_id;
  int silent = -1;
  for (int k = 0; k < N; k++) {
    if (f[k].id == member(p0->chain, 0)->server_id) silent = k;
  }
  g_object_unref(ni);
  GArray *rechain[N];
  for (int k = 0; k < N; k++) rechain[k] = g_array_new(FALSE, FALSE, sizeof(int));

  copy_wait_t w = {.not_op = 0};
  CU_ASSERT_FATAL(heartbeat_while(c, f, N, silent, rechain, 10000, copy_other, &w));
  int copy_srv = 0, copy_idx = -1;
  int64_t op = copy_of(c, &copy_srv, &copy_idx);
  CU_ASSERT(copy_srv != f[silent].id && copy_srv != tail_srv);
  MayflyBlockInfo *bi = check(c, copy_srv, copy_idx);
  CU_ASSERT_FATAL(bi != NULL);
  CU_ASSERT(bi->allocated);
  int64_t copy_gen = bi->generation;
  g_object_unref(bi);
  MayflyStats *s = stats(c);
  CU_ASSERT_FATAL(s != NULL);
  MF_ASSERT_EQ(s->partitions_degraded, 1);
  g_object_unref(s);

  /* The tail gives up: the copy's block is freed (a next copy may take it
   * again, at a new generation) and its server told. */
  MF_ASSERT_EQ(replica_end(c, tail_srv, op, 0, 0, NULL), 0);
  bi = check(c, copy_srv, copy_idx);
  CU_ASSERT_FATAL(bi != NULL);
  CU_ASSERT(!bi->allocated || bi->generation != copy_gen);
  g_object_unref(bi);
  s = stats(c);
  CU_ASSERT_FATAL(s != NULL);
  MF_ASSERT_EQ(s->rereplications, 0);
  g_object_unref(s);
  GArray *released = g_array_new(FALSE, FALSE, sizeof(int));
  MF_ASSERT_EQ(hb(c, fake_of(f, N, copy_srv), released, NULL), 0);
  CU_ASSERT(has_index(released, copy_idx));
  g_array_free(released, TRUE);
  MF_ASSERT_EQ(replica_end(c, tail_srv, op, 1, 0, NULL), MAYFLY_ENOENT); /* ended */

  /* The next tick tries again; nobody ends that copy, and the directory
   * aborts it after --copy-timeout (1.5 s) and begins another. */
  w.not_op = op;
  CU_ASSERT_FATAL(heartbeat_while(c, f, N, silent, rechain, 5000, copy_other, &w));
  int64_t op2 = copy_of(c, &copy_srv, &copy_idx);
  w.not_op = op2;
  CU_ASSERT(heartbeat_while(c, f, N, silent, rechain, 10000, copy_other, &w));
  CU_ASSERT(mf_log_count(d, "--copy-timeout") >= 1);
  for (int k = 0; k < N; k++) g_array_free(rechain[k], TRUE);
  mf_ctl_close(c);
  MF_ASSERT_EQ(mf_stop(d), 0);
}

/* --- kv splits of a replicated namespace --- */

static int repart_begin(mf_ctl_t *c, int server, int index, int64_t gen, int64_t split_at,
                        MayflyRepartPlan **out) {
  MayflyRepartPlan *plan = g_object_new(MAYFLY_TYPE_REPART_PLAN, NULL);
  int rc = CALL(c, mayfly_directory_if_repartition_begin(i, &plan, server, index, gen, FALSE,
                                                          split_at, &err, &gerr));
  if (rc == 0 && out != NULL) {
    *out = plan;
  } else {
    g_object_unref(plan);
  }
  return rc;
}

static int partitions_are(mf_ctl_t *c, void *ud) {
  MayflyLayout *l = layout(c, "/kv");
  if (l == NULL) return 0;
  MayflyStats *s = stats(c);
  /* The split rolled back: the layout has one partition, no split pending
   * (every block back but the chain's own). */
  int ok = (int)l->partitions->len == *(int *)ud && s != NULL && s->rollbacks >= 1;
  if (s != NULL) g_object_unref(s);
  g_object_unref(l);
  return ok;
}

static void test_a_replicated_split_targets_a_whole_chain_and_rolls_back_when_its_head_leaves(
    void) {
  mf_daemon_t *d = start_dir("1", "30s");
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  mf_ctl_t *c = ctl_of(d, key);
  enum { N = 4 };
  fake_t f[N];
  reg_hosts(c, f, N);
  MayflyNodeInfo *ni = NULL;
  MF_ASSERT_EQ(create(c, "/kv", MAYFLY_NODE_KIND_KV, 1, 2, &ni), 0);
  CU_ASSERT_FATAL(ni != NULL);
  const MayflyPartition *p = part(ni->layout, 0);
  const MayflyReplica *head = member(p->chain, 0), *tail = member(p->chain, 1);
  int hs = head->server_id, hi = head->block_index, ts = tail->server_id, ti = tail->block_index;
  int64_t hg = head->generation, tg = tail->generation;
  g_object_unref(ni);

  /* Only the head asks for splits. */
  MF_ASSERT_EQ(repart_begin(c, ts, ti, tg, 32768, NULL), MAYFLY_EMOVED);
  CU_ASSERT(strstr(mf_last_error(), "head") != NULL);
  MayflyRepartPlan *plan = NULL;
  MF_ASSERT_EQ(repart_begin(c, hs, hi, hg, 32768, &plan), 0);
  CU_ASSERT_FATAL(plan != NULL);
  MF_ASSERT_EQ(plan->lo, 32768);
  CU_ASSERT(plan->migrate_capability != NULL);
  /* The target is the head of a new chain of 2 on distinct hosts; its
   * other member knows its place while the split is under way. */
  const MayflyPartition *t = plan->target;
  CU_ASSERT_FATAL(t->__isset_chain);
  MF_ASSERT_EQ(t->chain->len, 2);
  MF_ASSERT_EQ(t->server_id, member(t->chain, 0)->server_id);
  char *h0 = host_of(member(t->chain, 0)->server_address);
  char *h1 = host_of(member(t->chain, 1)->server_address);
  CU_ASSERT(strcmp(h0, h1) != 0);
  g_free(h0);
  g_free(h1);
  MayflyBlockInfo *bi =
      check(c, member(t->chain, 1)->server_id, member(t->chain, 1)->block_index);
  CU_ASSERT_FATAL(bi != NULL);
  MF_ASSERT_EQ(bi->range_lo, 32768);
  MF_ASSERT_EQ(bi->chain_pos, 1);
  g_object_unref(bi);
  int64_t op = plan->op_id;
  g_object_unref(plan);

  /* The source head fails: the split can never commit, and the directory
   * rolls it back without waiting for its 30 s timeout. */
  int silent = -1;
  for (int k = 0; k < N; k++) {
    if (f[k].id == hs) silent = k;
  }
  GArray *rechain[N];
  for (int k = 0; k < N; k++) rechain[k] = g_array_new(FALSE, FALSE, sizeof(int));
  int one = 1;
  CU_ASSERT(heartbeat_while(c, f, N, silent, rechain, 10000, partitions_are, &one));
  MayflyLayout *l = g_object_new(MAYFLY_TYPE_LAYOUT, NULL);
  MF_ASSERT_EQ(CALL(c, mayfly_directory_if_repartition_end(i, &l, hs, op, TRUE, 0, &err, &gerr)),
               MAYFLY_ENOENT); /* rolled back already */
  g_object_unref(l);
  MF_ASSERT_EQ(mf_log_count(d, "rolled back: a block it involves left its chain"), 1);
  for (int k = 0; k < N; k++) g_array_free(rechain[k], TRUE);
  mf_ctl_close(c);
  MF_ASSERT_EQ(mf_stop(d), 0);
}

static void test_replica_end_without_the_cluster_handshake_is_refused(void) {
  mf_daemon_t *d = start_dir("1", "30s");
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  mf_ctl_t *open = ctl_of(d, NULL);
  MF_ASSERT_EQ(replica_end(open, 1, 1, 1, 0, NULL), MAYFLY_EPERM);
  MF_ASSERT_EQ(mf_log_count(d, "replica_end refused"), 1);
  mf_ctl_close(open);
  mf_ctl_t *c = ctl_of(d, key);
  MF_ASSERT_EQ(replica_end(c, 1, 1, 1, 0, NULL), MAYFLY_ENOENT); /* past the gate */
  mf_ctl_close(c);
  MF_ASSERT_EQ(mf_stop(d), 0);
}

/* --- notifications: a data event is sequenced once per chain_seq --- */

static int watch(mf_ctl_t *c, const char *path, int64_t epoch, int64_t after,
                 MayflyWatchReply **out) {
  MayflyWatchReply *r = g_object_new(MAYFLY_TYPE_WATCH_REPLY, NULL);
  int rc = CALL(c, mayfly_directory_if_watch(i, &r, path, 0, epoch, after, 100, 0, &err, &gerr));
  if (rc == 0) {
    *out = r;
  } else {
    g_object_unref(r);
  }
  return rc;
}

static int publish(mf_ctl_t *c, int server, int block, int64_t gen, int64_t chain_seq) {
  GPtrArray *evs = g_ptr_array_new_with_free_func(g_object_unref);
  MayflyDataEvent *e = g_object_new(MAYFLY_TYPE_DATA_EVENT, NULL);
  e->block_index = block;
  e->generation = gen;
  e->kind = MAYFLY_EVENT_KIND_PUSH;
  e->length = 1;
  if (chain_seq > 0) {
    e->chain_seq = chain_seq;
    e->__isset_chain_seq = TRUE;
  }
  g_ptr_array_add(evs, e);
  int rc = CALL(c, mayfly_directory_if_publish(i, server, evs, 0, &err, &gerr));
  g_ptr_array_free(evs, TRUE);
  return rc;
}

static void test_a_data_event_already_sequenced_for_its_chain_is_dropped(void) {
  mf_daemon_t *d = start_dir("1", "30s");
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  mf_ctl_t *c = ctl_of(d, key);
  enum { N = 2 };
  fake_t f[N];
  reg_hosts(c, f, N);
  MayflyNodeInfo *ni = NULL;
  MF_ASSERT_EQ(create(c, "/q", MAYFLY_NODE_KIND_QUEUE, 1, 2, &ni), 0);
  CU_ASSERT_FATAL(ni != NULL);
  const MayflyPartition *p = part(ni->layout, 0);
  const MayflyReplica *head = member(p->chain, 0), *tail = member(p->chain, 1);
  int hs = head->server_id, hi = head->block_index, ts = tail->server_id, ti = tail->block_index;
  int64_t hg = head->generation, tg = tail->generation;
  g_object_unref(ni);
  MayflyWatchReply *r = NULL;
  MF_ASSERT_EQ(watch(c, "/q", 0, 0, &r), 0);
  CU_ASSERT_FATAL(r != NULL);
  int64_t epoch = r->epoch, start = r->last_seq;
  g_object_unref(r);
  /* The data watch is in force once every server applied it. */
  for (int round = 0; round < 2; round++) {
    for (int k = 0; k < N; k++) MF_ASSERT_EQ(hb(c, &f[k], NULL, NULL), 0);
  }
  /* The tail publishes 1 and 2; after a failover the new tail publishes
   * 2 again, then 3: the listener sees 1, 2, 3. Events without a
   * chain_seq are never dropped. */
  MF_ASSERT_EQ(publish(c, ts, ti, tg, 1), 0);
  MF_ASSERT_EQ(publish(c, ts, ti, tg, 2), 0);
  MF_ASSERT_EQ(publish(c, hs, hi, hg, 2), 0);
  MF_ASSERT_EQ(publish(c, hs, hi, hg, 1), 0);
  MF_ASSERT_EQ(publish(c, hs, hi, hg, 3), 0);
  MF_ASSERT_EQ(publish(c, hs, hi, hg, 0), 0);
  MF_ASSERT_EQ(publish(c, hs, hi, hg, 0), 0);
  r = NULL;
  MF_ASSERT_EQ(watch(c, "/q", epoch, start, &r), 0);
  CU_ASSERT_FATAL(r != NULL);
  MF_ASSERT_EQ(r->events->len, 5);
  MF_ASSERT_EQ(r->last_seq, start + 5);
  g_object_unref(r);
  mf_ctl_close(c);
  MF_ASSERT_EQ(mf_stop(d), 0);
}

static char *write_key(const char *name, const uint8_t *k) {
  char *path = g_build_filename(scratch, name, NULL);
  char hex[2 * MF_KEY_SIZE + 2];
  mf_hex_encode(k, MF_KEY_SIZE, hex);
  strcat(hex, "\n");
  if (!g_file_set_contents(path, hex, -1, NULL) || g_chmod(path, 0600) != 0) abort();
  return path;
}

static int setup(void) {
  if (mf_auth_init() != 0) return 1;
  scratch = g_dir_make_tmp("mayfly-chains-XXXXXX", NULL);
  if (scratch == NULL) return 1;
  mf_auth_random(key, sizeof key);
  key_path = write_key("cluster.key", key);
  return 0;
}

static int teardown(void) {
  g_unlink(key_path);
  g_rmdir(scratch);
  g_free(key_path);
  g_free(scratch);
  return 0;
}

static const mf_test_t tests[] = {
    {"replicated creates put chains on distinct hosts with a capability per member",
     test_replicated_creates_put_chains_on_distinct_hosts_with_a_capability_per_member},
    {"too few hosts is ENOHOSTS and the directory's --replicas applies",
     test_too_few_hosts_is_enohosts_and_the_directory_default_applies},
    {"a silent server leaves its chains and a copy makes them whole again",
     test_a_silent_server_leaves_its_chains_and_a_copy_makes_them_whole_again},
    {"an aborted or timed-out copy frees its block and is tried again",
     test_an_aborted_or_timed_out_copy_frees_its_block_and_is_tried_again},
    {"a replicated split targets a whole chain and rolls back when its head leaves",
     test_a_replicated_split_targets_a_whole_chain_and_rolls_back_when_its_head_leaves},
    {"replica_end without the cluster handshake is refused",
     test_replica_end_without_the_cluster_handshake_is_refused},
    {"a data event already sequenced for its chain is dropped",
     test_a_data_event_already_sequenced_for_its_chain_is_dropped},
    {NULL, NULL}};

int main(void) { return mf_test_run("dir_chains", setup, teardown, tests); }
