/*
 * Replicated namespaces (issue 12) through libmayfly's and the CLI's own
 * view of them, on three loopback hosts: mayfly_create_options_t.replicas,
 * the chain of each mayfly_partition_t (nchain, chain[], state, replicas,
 * chain_version) checked against the directory's layout (repl.h), the
 * servers' host and chain counts, the replication counters of
 * mayfly_dir_stats, `mayfly create --replicas` and `mayfly stat`, through a
 * kill -9 of a tail and its re-replication.
 */
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/mayfly.h"
#include "common/error.h"
#include "hosts.h"
#include "mf_test.h"
#include "repl.h"

#define HB_TIMEOUT "1500"
#define CALL_TIMEOUT_MS 10000
#define RESTORE_TIMEOUT_MS 30000

/* Asserts st's chains agree with the directory's layout of the same path
 * and are r members on distinct hosts, none at `gone`. */
static void check_stat(mf_hosts_t *h, const mayfly_stat_t *st, int r, const char *gone) {
  mf_repl_layout_t l;
  MF_ASSERT_EQ(mf_repl_layout(h->dir->address, st->path, &l), 0);
  MF_ASSERT_EQ(st->npartitions, l.n);
  for (size_t i = 0; i < st->npartitions && i < l.n; i++) {
    const mayfly_partition_t *p = &st->partitions[i];
    MF_ASSERT_EQ(p->replicas, r);
    MF_ASSERT_EQ(p->nchain, (size_t)r);
    CU_ASSERT(p->state != NULL && strcmp(p->state, "ok") == 0);
    MF_ASSERT_EQ(p->chain_version, l.p[i].chain_version);
    if (p->nchain == 0 || p->chain == NULL) continue;
    /* The partition's own fields repeat the head. */
    CU_ASSERT_STRING_EQUAL(p->server_address, p->chain[0].server_address);
    MF_ASSERT_EQ(p->block_index, p->chain[0].block_index);
    for (size_t k = 0; k < p->nchain && (int)k < l.p[i].n; k++) {
      CU_ASSERT_STRING_EQUAL(p->chain[k].server_address, l.p[i].m[k].address);
      MF_ASSERT_EQ(p->chain[k].server_id, l.p[i].m[k].server_id);
      MF_ASSERT_EQ(p->chain[k].block_index, l.p[i].m[k].block_index);
      CU_ASSERT(mf_hosts_find(h, p->chain[k].server_address) >= 0);
      if (gone != NULL) CU_ASSERT_STRING_NOT_EQUAL(p->chain[k].server_address, gone);
      for (size_t j = 0; j < k; j++) {
        CU_ASSERT(mf_hosts_find(h, p->chain[j].server_address) !=
                  mf_hosts_find(h, p->chain[k].server_address));
      }
    }
  }
  mf_repl_layout_clear(&l);
}

/* The `replicas:` figure of `mayfly stat PATH`, or -1. */
static int cli_replicas(mf_hosts_t *h, const char *path, char **out_text) {
  char *out = NULL;
  if (mf_cli(h->dir, &out, NULL, "stat", path, NULL) != 0 || out == NULL) {
    g_free(out);
    return -1;
  }
  int r = -1;
  const char *at = strstr(out, "replicas:");
  if (at != NULL) r = atoi(at + strlen("replicas:"));
  if (out_text != NULL) *out_text = out; else g_free(out);
  return r;
}

static void test_client_view(void) {
  char why[256] = "";
  mf_hosts_t *h = mf_hosts_new(MF_HOSTS_LOOPBACK, 3, why, sizeof why);
  CU_ASSERT_FATAL(h != NULL);
  MF_ASSERT_EQ(mf_hosts_start_directory(h, "--heartbeat-ms", "200", "--heartbeat-timeout-ms",
                                        HB_TIMEOUT, NULL),
               0);
  CU_ASSERT_FATAL(h->dir != NULL);
  for (int i = 0; i < 3; i++) MF_ASSERT_EQ(mf_hosts_start_server(h, i, 16, "1MiB", NULL), 0);
  mayfly_options_t o = {.timeout_ms = CALL_TIMEOUT_MS};
  mayfly_client_t *c = NULL;
  MF_ASSERT_EQ(mayfly_connect(h->dir->address, &o, &c), 0);
  CU_ASSERT_FATAL(c != NULL);

  /* Too many replicas for the hosts: refused, nothing created. */
  mayfly_create_options_t three = {.blocks = 1, .replicas = 4};
  MF_ASSERT_EQ(mayfly_create(c, "/api/four", MAYFLY_KIND_KV, &three, NULL), MAYFLY_ENOHOSTS);
  MF_ASSERT_EQ(mayfly_exists(c, "/api/four"), 0);

  mayfly_create_options_t two = {.blocks = 2, .replicas = 2};
  mayfly_ns_t *kv = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, "/api/kv", MAYFLY_KIND_KV, &two, &kv), 0);
  CU_ASSERT_FATAL(kv != NULL);
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(c, "/api/kv", &st), 0);
  CU_ASSERT_FATAL(st != NULL);
  MF_ASSERT_EQ(st->npartitions, 2);
  check_stat(h, st, 2, NULL);
  for (int k = 0; k < 200; k++) {
    char key[16];
    snprintf(key, sizeof key, "k%d", k);
    MF_ASSERT_EQ(mayfly_kv_put(kv, key, strlen(key), key, strlen(key)), 0);
  }

  /* The servers: their hosts, and 4 chain memberships over the three. */
  mayfly_server_t *sv = NULL;
  size_t nsv = 0;
  MF_ASSERT_EQ(mayfly_servers(c, &sv, &nsv), 0);
  MF_ASSERT_EQ(nsv, 3);
  int memberships = 0;
  for (size_t i = 0; i < nsv; i++) {
    int host = mf_hosts_find(h, sv[i].address);
    CU_ASSERT(host >= 0);
    if (host >= 0) CU_ASSERT_STRING_EQUAL(sv[i].host, h->ip[host]);
    memberships += sv[i].chains;
  }
  MF_ASSERT_EQ(memberships, 4);
  mayfly_servers_free(sv, nsv);

  /* The CLI: create --replicas, stat says R and each chain's state. */
  MF_ASSERT_EQ(mf_cli(h->dir, NULL, NULL, "create", "/api/cli-q", "--kind", "queue",
                      "--replicas", "3", NULL),
               0);
  char *text = NULL;
  MF_ASSERT_EQ(cli_replicas(h, "/api/cli-q", &text), 3);
  CU_ASSERT(text != NULL && strstr(text, "ok") != NULL);
  g_free(text);
  mayfly_stat_t *qst = NULL;
  MF_ASSERT_EQ(mayfly_stat(c, "/api/cli-q", &qst), 0);
  if (qst != NULL) check_stat(h, qst, 3, NULL);
  mayfly_stat_free(qst);

  /* The tail of kv's first partition dies: the client's calls go on, the
   * views show the chain degraded and then whole again elsewhere. */
  const mayfly_partition_t *p0 = &st->partitions[0];
  int victim = mf_hosts_find(h, p0->chain[p0->nchain - 1].server_address);
  CU_ASSERT_FATAL(victim >= 0);
  char gone[64];
  snprintf(gone, sizeof gone, "%s", mf_hosts_address(h, victim));
  int64_t version0 = p0->chain_version;
  mayfly_stat_free(st);
  st = NULL;
  mayfly_dir_stats_t ds0;
  MF_ASSERT_EQ(mayfly_dir_stats(c, &ds0), 0);
  MF_ASSERT_EQ(ds0.partitions_degraded, 0);
  mf_hosts_kill(h, victim);
  for (int k = 0; k < 200; k++) {
    char key[16];
    snprintf(key, sizeof key, "k%d", k);
    void *v = NULL;
    size_t vl = 0;
    MF_ASSERT_EQ(mayfly_kv_get(kv, key, strlen(key), &v, &vl), 0);
    CU_ASSERT(vl == strlen(key) && v != NULL && memcmp(v, key, vl) == 0);
    mayfly_free(v);
  }
  /* Two live hosts are left: the chain of 3 cannot be whole again, and a
   * new R = 3 namespace is refused. */
  MF_ASSERT_EQ(mf_hosts_wait_up(h, victim, 0, 1500 + 5000), 0);
  mayfly_create_options_t r3 = {.replicas = 3};
  MF_ASSERT_EQ(mayfly_create(c, "/api/three", MAYFLY_KIND_FILE, &r3, NULL), MAYFLY_ENOHOSTS);
  /* R = 2 comes back over the two hosts left. */
  int whole = 0;
  for (int64_t end = mf_hosts_now_ms() + RESTORE_TIMEOUT_MS; !whole && mf_hosts_now_ms() < end;
       mf_sleep_ms(100)) {
    MF_ASSERT_EQ(mayfly_stat(c, "/api/kv", &st), 0);
    whole = 1;
    for (size_t i = 0; st != NULL && i < st->npartitions; i++) {
      const mayfly_partition_t *p = &st->partitions[i];
      whole &= p->nchain == 2 && p->state != NULL && strcmp(p->state, "ok") == 0;
      for (size_t k = 0; k < p->nchain; k++) whole &= strcmp(p->chain[k].server_address, gone) != 0;
    }
    if (!whole) {
      mayfly_stat_free(st);
      st = NULL;
    }
  }
  CU_ASSERT_FATAL(whole);
  check_stat(h, st, 2, gone);
  CU_ASSERT(st->partitions[0].chain_version > version0);
  mayfly_stat_free(st);
  mayfly_dir_stats_t ds;
  MF_ASSERT_EQ(mayfly_dir_stats(c, &ds), 0);
  fprintf(stderr, "  stats: chain failovers %lld, re-replications %lld (%lld bytes), degraded %lld\n",
          (long long)ds.chain_failovers, (long long)ds.rereplications,
          (long long)ds.rereplicated_bytes, (long long)ds.partitions_degraded);
  CU_ASSERT(ds.chain_failovers > ds0.chain_failovers);
  CU_ASSERT(ds.rereplications > ds0.rereplications);
  CU_ASSERT(ds.rereplicated_bytes > ds0.rereplicated_bytes);
  /* The queue's chain of 3 stays degraded with two hosts. */
  MF_ASSERT_EQ(ds.partitions_degraded, 1);
  mayfly_unmount(kv);
  mayfly_disconnect(c);
  mf_hosts_free(h);
}

static const mf_test_t all[] = {{"the client's view of chains", test_client_view},
                                {NULL, NULL}};

int main(void) {
  return mf_test_run("replication (client API)", NULL, NULL, all);
}
