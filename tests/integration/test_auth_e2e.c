/*
 * End-to-end tests of authentication as clients see it (issue 11): a real
 * directory started with --tenants and --cluster-key-file, memory servers
 * with the same key, and tenants working through libmayfly and the mayfly
 * CLI. Each tenant works in its own subtree and is refused (MAYFLY_EPERM)
 * on the other's; a client without a token is refused; the admin sees all;
 * capabilities are refreshed before they expire without the caller seeing
 * it; a tenant at its max-blocks gets MAYFLY_EQUOTA on growth and keeps its
 * data. The first test checks the data-connection side on its own: the
 * capability area and the MAC of a signed frame as a receiver gets them.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client/mayfly.h"
#include "common/auth.h"
#include "common/conn.h"
#include "common/wire.h"
#include "harness.h"
#include "mf_test.h"

#define BLOCK "64KiB"
#define BLOCK_BYTES (64 * 1024)
/* carol's quota: her kv namespace and her queue, one block each. */
#define CAROL_MAX_BLOCKS 2

static char *scratch, *key_file, *tenants_file;
static mf_daemon_t *dir, *ms;

static const char *const tenants_text =
    "[tenant alice]\n"
    "token = alice-token\n"
    "prefix = /alice\n"
    "\n"
    "[tenant bob]\n"
    "token-sha256 = %s\n" /* the hash of bob-token: both forms of the file */
    "prefix = /bob\n"
    "\n"
    "[tenant carol]\n"
    "token = carol-token\n"
    "prefix = /carol\n"
    "max-blocks = %d\n"
    "\n"
    "[tenant ops]\n"
    "token = ops-token\n"
    "prefix = /\n"
    "admin = true\n";

static char *write_file(const char *name, const char *text) {
  char *path = g_build_filename(scratch, name, NULL);
  g_assert(g_file_set_contents(path, text, -1, NULL));
  g_chmod(path, 0600);
  return path;
}

/* A memory server with the cluster key, registered with d. The harness
 * waits for it with `mayfly servers`, an admin's command: it runs as ops. */
static mf_daemon_t *start_memserver(mf_daemon_t *d, int blocks) {
  g_setenv("MAYFLY_TOKEN", "ops-token", TRUE);
  mf_daemon_t *m = mf_start_memserver(d, blocks, BLOCK, "--cluster-key-file", key_file, NULL);
  g_unsetenv("MAYFLY_TOKEN");
  return m;
}

static int setup(void) {
  scratch = g_dir_make_tmp("mayfly-auth-e2e-XXXXXX", NULL);
  uint8_t key[MF_KEY_SIZE];
  mf_auth_init();
  mf_auth_random(key, sizeof key);
  char hex[2 * MF_KEY_SIZE + 1];
  mf_hex_encode(key, sizeof key, hex);
  key_file = write_file("cluster.key", hex);
  uint8_t h[32];
  char bob_hash[65];
  mf_token_hash("bob-token", h);
  mf_hex_encode(h, sizeof h, bob_hash);
  char *text = g_strdup_printf(tenants_text, bob_hash, CAROL_MAX_BLOCKS);
  tenants_file = write_file("tenants.ini", text);
  g_free(text);
  dir = mf_start_directory("--tenants", tenants_file, "--cluster-key-file", key_file,
                           "--heartbeat-timeout-ms", "60000", NULL);
  if (dir == NULL) return 1;
  ms = start_memserver(dir, 256);
  return ms == NULL;
}

static int teardown(void) {
  if (ms) mf_stop(ms);
  if (dir) mf_stop(dir);
  g_unlink(key_file);
  g_unlink(tenants_file);
  g_rmdir(scratch);
  g_free(key_file);
  g_free(tenants_file);
  g_free(scratch);
  return 0;
}

static mayfly_client_t *connect_as(const mf_daemon_t *d, const char *token) {
  mayfly_options_t o = {.timeout_ms = 5000, .connect_timeout_ms = 2000, .token = token};
  mayfly_client_t *c = NULL;
  MF_ASSERT_EQ(mayfly_connect(d->address, &o, &c), 0);
  return c;
}

/* ---- the data connection: capability area and signed frames ---- */

typedef struct {
  int fd;
  wire_hdr_t hdr[2];
  uint8_t raw_hdr[2][WIRE_HEADER_SIZE];
  uint8_t cap[2][WIRE_CAP_MAX];
  uint8_t payload[2][64];
} peer_t;

static int read_full(int fd, void *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = recv(fd, (uint8_t *)buf + got, n - got, 0);
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

/* Accepts one connection, takes two frames and answers each with status 0. */
static gpointer peer_main(gpointer data) {
  peer_t *p = data;
  int c = accept(p->fd, NULL, NULL);
  for (int i = 0; i < 2 && c >= 0; i++) {
    size_t flen;
    if (read_full(c, p->raw_hdr[i], WIRE_HEADER_SIZE) != 0) break;
    wire_parse(p->raw_hdr[i], WIRE_HEADER_SIZE, 1 << 20, &p->hdr[i], &flen);
    if (p->hdr[i].cap_len > WIRE_CAP_MAX || p->hdr[i].payload_len > sizeof p->payload[i]) break;
    if (read_full(c, p->cap[i], p->hdr[i].cap_len) != 0 ||
        read_full(c, p->payload[i], p->hdr[i].payload_len) != 0) {
      break;
    }
    wire_hdr_t rep = {.opcode = p->hdr[i].opcode, .flags = WIRE_F_REPLY,
                      .request_id = p->hdr[i].request_id};
    uint8_t out[WIRE_HEADER_SIZE];
    wire_encode(&rep, out);
    if (send(c, out, sizeof out, MSG_NOSIGNAL) != (ssize_t)sizeof out) break;
  }
  if (c >= 0) close(c);
  return NULL;
}

static void test_requests_carry_the_capability_and_signed_frames_a_mac_of_what_was_sent(void) {
  peer_t p = {0};
  p.fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  CU_ASSERT_EQUAL(bind(p.fd, (struct sockaddr *)&a, sizeof a), 0);
  CU_ASSERT_EQUAL(listen(p.fd, 1), 0);
  getsockname(p.fd, (struct sockaddr *)&a, &al);
  char address[64];
  snprintf(address, sizeof address, "127.0.0.1:%d", ntohs(a.sin_port));
  GThread *t = g_thread_new("peer", peer_main, &p);

  uint8_t key[MF_KEY_SIZE], cap[MF_CAP_SIZE];
  mf_auth_random(key, sizeof key);
  mf_cap_t c = {.rights = MF_RIGHT_READ, .server_id = 3, .block_index = 7, .generation = 11,
                .expiry_ms = g_get_real_time() / 1000 + 60000};
  mf_cap_sign(key, &c, cap);
  mf_pool_t *pool = mf_pool_new(2000);
  /* A client request: the capability alone. */
  mf_call_t get = {0};
  get.req.opcode = WIRE_OP_KV_GET;
  get.req.block_index = 7;
  get.req.generation = 11;
  get.cap = cap;
  get.cap_len = MF_CAP_SIZE;
  get.p1 = "key";
  get.l1 = 3;
  int64_t deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
  mf_call_start(pool, address, &get, deadline);
  MF_ASSERT_EQ(mf_call_wait(&get, deadline), 0);
  /* A server-to-server frame: the capability, then the MAC of the frame. */
  mf_call_t mig = {0};
  mig.req.opcode = WIRE_OP_KV_MIGRATE;
  mig.req.arg0 = 10;
  mig.req.arg1 = 20;
  mig.cap = cap;
  mig.cap_len = MF_CAP_SIZE;
  mig.frame_key = key;
  mig.p1 = "abcdefg";
  mig.l1 = 7;
  mf_call_start(pool, address, &mig, deadline);
  MF_ASSERT_EQ(mf_call_wait(&mig, deadline), 0);
  g_thread_join(t);
  close(p.fd);
  mf_pool_free(pool);

  MF_ASSERT_EQ(p.hdr[0].cap_len, MF_CAP_SIZE);
  MF_ASSERT_EQ(p.hdr[0].payload_len, 3);
  CU_ASSERT_EQUAL(memcmp(p.cap[0], cap, MF_CAP_SIZE), 0);
  CU_ASSERT_EQUAL(memcmp(p.payload[0], "key", 3), 0);
  mf_cap_t got;
  MF_ASSERT_EQ(mf_cap_verify(key, p.cap[0], p.hdr[0].cap_len, &got), 0);
  MF_ASSERT_EQ(got.block_index, 7);

  MF_ASSERT_EQ(p.hdr[1].cap_len, MF_FRAME_AUTH_SIZE);
  MF_ASSERT_EQ(p.hdr[1].payload_len, 7);
  CU_ASSERT_EQUAL(memcmp(p.cap[1], cap, MF_CAP_SIZE), 0);
  uint8_t mac[MF_MAC_SIZE];
  mf_frame_mac(key, p.raw_hdr[1], p.cap[1], MF_CAP_SIZE, p.payload[1], 7, mac);
  CU_ASSERT_TRUE(mf_mac_equal(mac, p.cap[1] + MF_CAP_SIZE));
  CU_ASSERT_EQUAL(memcmp(p.payload[1], "abcdefg", 7), 0);
  /* Another key does not give that MAC: it is keyed. */
  uint8_t other[MF_KEY_SIZE];
  mf_auth_random(other, sizeof other);
  mf_frame_mac(other, p.raw_hdr[1], p.cap[1], MF_CAP_SIZE, p.payload[1], 7, mac);
  CU_ASSERT_FALSE(mf_mac_equal(mac, p.cap[1] + MF_CAP_SIZE));
}

/* ---- two tenants through libmayfly ---- */

typedef struct {
  mayfly_ns_t *kv, *q, *f;
} tenant_ns_t;

/* Everything a tenant does in its own subtree, all of which must work. */
static void work_in_own_subtree(mayfly_client_t *c, const char *root, tenant_ns_t *out) {
  char path[128];
  MF_ASSERT_EQ(mayfly_mkdir(c, root, 0), 0);
  mayfly_create_options_t co = {.blocks = 1, .lease_ms = 60000};
  snprintf(path, sizeof path, "%s/kv", root);
  MF_ASSERT_EQ(mayfly_mount(c, path, MAYFLY_KIND_KV, &co, &out->kv), 0);
  snprintf(path, sizeof path, "%s/q", root);
  MF_ASSERT_EQ(mayfly_mount(c, path, MAYFLY_KIND_QUEUE, &co, &out->q), 0);
  snprintf(path, sizeof path, "%s/f", root);
  MF_ASSERT_EQ(mayfly_mount(c, path, MAYFLY_KIND_FILE, &co, &out->f), 0);

  /* A listener on the kv namespace sees the put below. */
  mayfly_listener_t *l = NULL;
  snprintf(path, sizeof path, "%s/kv", root);
  MF_ASSERT_EQ(mayfly_listen(c, path, MAYFLY_EV_BIT(MAYFLY_EV_PUT), &l), 0);

  MF_ASSERT_EQ(mayfly_kv_put(out->kv, "k", 1, root, strlen(root)), 0);
  void *v = NULL;
  size_t vl = 0;
  MF_ASSERT_EQ(mayfly_kv_get(out->kv, "k", 1, &v, &vl), 0);
  MF_ASSERT_EQ(vl, strlen(root));
  CU_ASSERT_EQUAL(memcmp(v, root, vl), 0);
  mayfly_free(v);
  MF_ASSERT_EQ(mayfly_queue_push(out->q, "item", 4), 0);
  MF_ASSERT_EQ(mayfly_queue_pop(out->q, &v, &vl, 1000), 0);
  MF_ASSERT_EQ(vl, 4);
  mayfly_free(v);
  MF_ASSERT_EQ(mayfly_file_write(out->f, 0, "file bytes", 10), 0);
  char buf[16] = {0};
  MF_ASSERT_EQ(mayfly_file_read(out->f, 0, buf, 10), 10);
  CU_ASSERT_STRING_EQUAL(buf, "file bytes");

  mayfly_event_t *ev = NULL;
  MF_ASSERT_EQ(mayfly_listener_next(l, &ev, 5000), 0);
  if (ev != NULL) {
    MF_ASSERT_EQ(ev->kind, MAYFLY_EV_PUT);
    mayfly_event_free(ev);
  }
  mayfly_listener_close(l);

  mayfly_stat_t **list = NULL;
  size_t n = 0;
  MF_ASSERT_EQ(mayfly_list(c, root, &list, &n), 0);
  MF_ASSERT_EQ(n, 3);
  mayfly_stat_list_free(list, n);
  mayfly_stat_t *st = NULL;
  snprintf(path, sizeof path, "%s/kv", root);
  MF_ASSERT_EQ(mayfly_stat(c, path, &st), 0);
  MF_ASSERT_EQ(st->kind, MAYFLY_KIND_KV);
  mayfly_stat_free(st);

  /* rename, renew and remove of a namespace of its own. */
  char from[128], to[128];
  snprintf(from, sizeof from, "%s/tmp", root);
  snprintf(to, sizeof to, "%s/tmp2", root);
  MF_ASSERT_EQ(mayfly_create(c, from, MAYFLY_KIND_KV, &co, NULL), 0);
  MF_ASSERT_EQ(mayfly_rename(c, from, to), 0);
  const char *paths[] = {to};
  char **missing = NULL;
  size_t nmissing = 0;
  MF_ASSERT_EQ(mayfly_renew(c, paths, 1, NULL, &missing, &nmissing), 0);
  MF_ASSERT_EQ(nmissing, 0);
  mayfly_strv_free(missing, nmissing);
  MF_ASSERT_EQ(mayfly_remove(c, to, 0), 0);
  MF_ASSERT_EQ(mayfly_exists(c, to), 0);
}

/* Everything a tenant tries in the other's subtree, all of which must be
 * refused with MAYFLY_EPERM (a message naming the path), changing nothing. */
static void refused_in_other_subtree(mayfly_client_t *c, const char *other) {
  char path[128], mine[128];
  snprintf(path, sizeof path, "%s/kv", other);
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(c, path, &st), MAYFLY_EPERM);
  CU_ASSERT_PTR_NOT_NULL(strstr(mayfly_last_error(), other));
  mayfly_stat_t **list = NULL;
  size_t n = 0;
  MF_ASSERT_EQ(mayfly_list(c, other, &list, &n), MAYFLY_EPERM);
  mayfly_ns_t *ns = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, path, MAYFLY_KIND_KV, NULL, &ns), MAYFLY_EPERM);
  snprintf(mine, sizeof mine, "%s/new", other);
  MF_ASSERT_EQ(mayfly_create(c, mine, MAYFLY_KIND_KV, NULL, NULL), MAYFLY_EPERM);
  MF_ASSERT_EQ(mayfly_mkdir(c, mine, 0), MAYFLY_EPERM);
  MF_ASSERT_EQ(mayfly_remove(c, path, 0), MAYFLY_EPERM);
  MF_ASSERT_EQ(mayfly_remove(c, other, 1), MAYFLY_EPERM);
  snprintf(mine, sizeof mine, "%s/moved", other);
  MF_ASSERT_EQ(mayfly_rename(c, path, mine), MAYFLY_EPERM);
  mayfly_listener_t *l = NULL;
  MF_ASSERT_EQ(mayfly_listen(c, path, MAYFLY_EV_MASK_DATA, &l), MAYFLY_EPERM);
  const char *paths[] = {path};
  char **missing = NULL;
  size_t nmissing = 0;
  MF_ASSERT_EQ(mayfly_renew(c, paths, 1, NULL, &missing, &nmissing), MAYFLY_EPERM);
  mayfly_lease_t *leases = NULL;
  MF_ASSERT_EQ(mayfly_leases(c, other, &leases, &n), MAYFLY_EPERM);
  mayfly_server_t *servers = NULL;
  MF_ASSERT_EQ(mayfly_servers(c, &servers, &n), MAYFLY_EPERM);
  mayfly_dir_stats_t ds;
  MF_ASSERT_EQ(mayfly_dir_stats(c, &ds), MAYFLY_EPERM);
}

static int has_path(const mayfly_lease_t *l, size_t n, const char *prefix) {
  for (size_t i = 0; i < n; i++) {
    if (g_str_has_prefix(l[i].path, prefix)) return 1;
  }
  return 0;
}

static void test_two_tenants_work_in_their_own_subtrees_and_are_refused_on_the_others(void) {
  mayfly_client_t *alice = connect_as(dir, "alice-token");
  mayfly_client_t *bob = connect_as(dir, "bob-token");
  tenant_ns_t a = {0}, b = {0};
  work_in_own_subtree(alice, "/alice", &a);
  work_in_own_subtree(bob, "/bob", &b);
  refused_in_other_subtree(alice, "/bob");
  refused_in_other_subtree(bob, "/alice");

  /* Listings show only what each may see: the root lists its own subtree. */
  mayfly_stat_t **list = NULL;
  size_t n = 0;
  MF_ASSERT_EQ(mayfly_list(alice, "/", &list, &n), 0);
  MF_ASSERT_EQ(n, 1);
  if (n == 1) CU_ASSERT_STRING_EQUAL(list[0]->path, "/alice");
  mayfly_stat_list_free(list, n);
  mayfly_lease_t *l = NULL;
  MF_ASSERT_EQ(mayfly_leases(alice, "/", &l, &n), 0);
  CU_ASSERT_TRUE(has_path(l, n, "/alice/kv"));
  CU_ASSERT_FALSE(has_path(l, n, "/bob"));
  mayfly_leases_free(l, n);

  /* bob's data is untouched by alice's attempts. */
  void *v = NULL;
  size_t vl = 0;
  MF_ASSERT_EQ(mayfly_kv_get(b.kv, "k", 1, &v, &vl), 0);
  MF_ASSERT_EQ(vl, 4);
  mayfly_free(v);
  MF_ASSERT_EQ(mayfly_exists(bob, "/bob/kv"), 1);

  /* A non-admin's tenants() is its own entry. */
  mayfly_tenant_t *t = NULL;
  MF_ASSERT_EQ(mayfly_tenants(alice, &t, &n), 0);
  MF_ASSERT_EQ(n, 1);
  if (n == 1) {
    CU_ASSERT_STRING_EQUAL(t[0].name, "alice");
    MF_ASSERT_EQ(t[0].nprefixes, 1);
    CU_ASSERT_STRING_EQUAL(t[0].prefixes[0], "/alice");
    MF_ASSERT_EQ(t[0].blocks_used, 3); /* kv, queue, file: one block each */
    MF_ASSERT_EQ(t[0].admin, 0);
  }
  mayfly_tenants_free(t, n);
  mayfly_session_t s;
  MF_ASSERT_EQ(mayfly_whoami(bob, &s), 0);
  CU_ASSERT_STRING_EQUAL(s.tenant, "bob");
  MF_ASSERT_EQ(s.open, 0);
  mayfly_session_clear(&s);

  mayfly_unmount(a.kv);
  mayfly_unmount(a.q);
  mayfly_unmount(a.f);
  mayfly_unmount(b.kv);
  mayfly_unmount(b.q);
  mayfly_unmount(b.f);
  mayfly_disconnect(alice);
  mayfly_disconnect(bob);
}

static void test_no_token_or_a_wrong_one_is_refused_with_a_clear_message(void) {
  g_unsetenv("MAYFLY_TOKEN");
  mayfly_client_t *none = connect_as(dir, NULL);
  MF_ASSERT_EQ(mayfly_exists(none, "/alice"), MAYFLY_EPERM);
  CU_ASSERT_PTR_NOT_NULL(strstr(mayfly_last_error(), "permission denied"));
  MF_ASSERT_EQ(mayfly_mkdir(none, "/anon", 0), MAYFLY_EPERM);
  mayfly_disconnect(none);
  mayfly_client_t *wrong = connect_as(dir, "not-a-token");
  MF_ASSERT_EQ(mayfly_exists(wrong, "/alice"), MAYFLY_EPERM);
  CU_ASSERT_PTR_NOT_NULL(strstr(mayfly_last_error(), "permission denied"));
  mayfly_disconnect(wrong);
  /* MAYFLY_TOKEN is the fallback when the options give none. */
  g_setenv("MAYFLY_TOKEN", "alice-token", TRUE);
  mayfly_client_t *env = connect_as(dir, NULL);
  g_unsetenv("MAYFLY_TOKEN");
  MF_ASSERT_EQ(mayfly_exists(env, "/alice"), 1);
  MF_ASSERT_EQ(mayfly_exists(env, "/bob/kv"), MAYFLY_EPERM);
  mayfly_disconnect(env);
}

static void test_the_admin_sees_every_tenant_and_every_path(void) {
  mayfly_client_t *ops = connect_as(dir, "ops-token");
  mayfly_stat_t **list = NULL;
  size_t n = 0;
  MF_ASSERT_EQ(mayfly_list(ops, "/", &list, &n), 0);
  int alice = 0, bob = 0;
  for (size_t i = 0; i < n; i++) {
    alice |= strcmp(list[i]->path, "/alice") == 0;
    bob |= strcmp(list[i]->path, "/bob") == 0;
  }
  CU_ASSERT_TRUE(alice && bob);
  mayfly_stat_list_free(list, n);
  mayfly_stat_t *st = NULL;
  MF_ASSERT_EQ(mayfly_stat(ops, "/bob/kv", &st), 0);
  mayfly_stat_free(st);
  mayfly_tenant_t *t = NULL;
  MF_ASSERT_EQ(mayfly_tenants(ops, &t, &n), 0);
  MF_ASSERT_EQ(n, 4);
  mayfly_tenants_free(t, n);
  mayfly_server_t *s = NULL;
  MF_ASSERT_EQ(mayfly_servers(ops, &s, &n), 0);
  MF_ASSERT_EQ(n, 1);
  mayfly_servers_free(s, n);
  mayfly_lease_t *l = NULL;
  MF_ASSERT_EQ(mayfly_leases(ops, "/", &l, &n), 0);
  CU_ASSERT_TRUE(has_path(l, n, "/alice/kv") && has_path(l, n, "/bob/kv"));
  mayfly_leases_free(l, n);
  mayfly_disconnect(ops);
}

/* ---- the CLI ---- */

static void test_the_cli_with_a_token_shows_only_what_the_tenant_may_see(void) {
  char *out = NULL, *err = NULL;
  MF_ASSERT_EQ(mf_cli(dir, &out, &err, "--token", "alice-token", "ls", "/", NULL), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "alice"));
  CU_ASSERT_PTR_NULL(strstr(out, "bob"));
  g_free(out);
  g_free(err);
  MF_ASSERT_EQ(mf_cli(dir, &out, &err, "--token", "alice-token", "stat", "/alice/kv", NULL), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "kv"));
  g_free(out);
  g_free(err);
  MF_ASSERT_EQ(mf_cli(dir, &out, &err, "--token", "alice-token", "stat", "/bob/kv", NULL), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "permission denied"));
  g_free(out);
  g_free(err);
  MF_ASSERT_EQ(mf_cli(dir, &out, &err, "--token", "alice-token", "--json", "tenants", NULL), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"alice\""));
  CU_ASSERT_PTR_NULL(strstr(out, "\"bob\""));
  g_free(out);
  g_free(err);
  MF_ASSERT_EQ(mf_cli(dir, &out, &err, "--token", "ops-token", "tenants", NULL), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "alice"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "bob"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "carol"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "/alice"));
  g_free(out);
  g_free(err);
  MF_ASSERT_EQ(mf_cli(dir, &out, &err, "--token", "ops-token", "stats", NULL), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "TENANT"));
  g_free(out);
  g_free(err);
  MF_ASSERT_EQ(mf_cli(dir, &out, &err, "--token", "bob-token", "whoami", NULL), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "bob"));
  g_free(out);
  g_free(err);
  /* Without a token (and without MAYFLY_TOKEN): refused. */
  g_unsetenv("MAYFLY_TOKEN");
  MF_ASSERT_EQ(mf_cli(dir, &out, &err, "ls", "/", NULL), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "permission denied"));
  g_free(out);
  g_free(err);
  /* MAYFLY_TOKEN does what --token does. */
  g_setenv("MAYFLY_TOKEN", "bob-token", TRUE);
  MF_ASSERT_EQ(mf_cli(dir, &out, &err, "ls", "/", NULL), 0);
  g_unsetenv("MAYFLY_TOKEN");
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "bob"));
  CU_ASSERT_PTR_NULL(strstr(out, "alice"));
  g_free(out);
  g_free(err);
}

/* ---- capabilities are refreshed before they expire ---- */

static void test_a_client_keeps_working_past_many_capability_lifetimes(void) {
  mf_daemon_t *d = mf_start_directory("--tenants", tenants_file, "--cluster-key-file", key_file,
                                      "--capability-ttl", "2s", "--heartbeat-timeout-ms",
                                      "60000", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  mf_daemon_t *m = start_memserver(d, 16);
  CU_ASSERT_PTR_NOT_NULL_FATAL(m);
  mayfly_client_t *c = connect_as(d, "alice-token");
  MF_ASSERT_EQ(mayfly_mkdir(c, "/alice", 0), 0);
  mayfly_create_options_t co = {.blocks = 2, .lease_ms = 60000};
  mayfly_ns_t *kv = NULL, *f = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, "/alice/kv", MAYFLY_KIND_KV, &co, &kv), 0);
  MF_ASSERT_EQ(mayfly_mount(c, "/alice/f", MAYFLY_KIND_FILE, &co, &f), 0);
  /* Three lifetimes of 2 s, a request every 10 ms: every one succeeds. */
  int64_t end = g_get_monotonic_time() + 6 * G_USEC_PER_SEC;
  int ops = 0, failures = 0, last = 0;
  for (int i = 0; g_get_monotonic_time() < end; i++) {
    char key[32];
    int kl = snprintf(key, sizeof key, "k%d", i % 100);
    int rc = mayfly_kv_put(kv, key, (size_t)kl, key, (size_t)kl);
    void *v = NULL;
    size_t vl = 0;
    if (rc == 0) rc = mayfly_kv_get(kv, key, (size_t)kl, &v, &vl);
    mayfly_free(v);
    if (rc == 0) rc = mayfly_file_write(f, 0, key, (size_t)kl);
    ops++;
    if (rc != 0) {
      failures++;
      last = rc;
    }
    mf_sleep_ms(10);
  }
  if (failures > 0) fprintf(stderr, "  %d of %d failed, last %d: %s\n", failures, ops, last,
                            mayfly_last_error());
  MF_ASSERT_EQ(failures, 0);
  CU_ASSERT_TRUE(ops > 100);
  mayfly_unmount(kv);
  mayfly_unmount(f);
  mayfly_disconnect(c);
  mf_stop(m);
  mf_stop(d);
}

/* ---- quota ---- */

static void test_a_tenant_at_its_quota_gets_equota_on_growth_and_keeps_its_data(void) {
  mayfly_client_t *c = connect_as(dir, "carol-token");
  MF_ASSERT_EQ(mayfly_mkdir(c, "/carol", 0), 0);
  mayfly_create_options_t co = {.blocks = 1, .lease_ms = 60000};
  mayfly_ns_t *kv = NULL, *q = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, "/carol/kv", MAYFLY_KIND_KV, &co, &kv), 0);
  MF_ASSERT_EQ(mayfly_mount(c, "/carol/q", MAYFLY_KIND_QUEUE, &co, &q), 0);
  /* At max-blocks: another namespace is refused, naming the tenant. */
  MF_ASSERT_EQ(mayfly_create(c, "/carol/more", MAYFLY_KIND_KV, &co, NULL), MAYFLY_EQUOTA);
  CU_ASSERT_PTR_NOT_NULL(strstr(mayfly_last_error(), "carol"));

  /* kv: puts until the block is full. The split that would make room is
   * refused at the directory (EQUOTA), so the memory server answers the put
   * that does not fit with the reason the split was refused: EQUOTA. */
  char value[1024];
  memset(value, 'v', sizeof value);
  int stored = 0, rc = 0;
  for (int i = 0; i < 4 * BLOCK_BYTES / (int)sizeof value; i++) {
    char key[32];
    int kl = snprintf(key, sizeof key, "key%04d", i);
    rc = mayfly_kv_put(kv, key, (size_t)kl, value, sizeof value);
    if (rc != 0) break;
    stored++;
  }
  MF_ASSERT_EQ(rc, MAYFLY_EQUOTA);
  CU_ASSERT_TRUE(stored > 10);
  /* Everything stored stays readable, and writable where it fits. */
  int readable = 0;
  for (int i = 0; i < stored; i++) {
    char key[32];
    int kl = snprintf(key, sizeof key, "key%04d", i);
    void *v = NULL;
    size_t vl = 0;
    if (mayfly_kv_get(kv, key, (size_t)kl, &v, &vl) == 0 && vl == sizeof value) readable++;
    mayfly_free(v);
  }
  MF_ASSERT_EQ(readable, stored);
  value[0] = 'w';
  MF_ASSERT_EQ(mayfly_kv_put(kv, "key0000", 7, value, sizeof value), 0);
  MF_ASSERT_EQ(mayfly_kv_delete(kv, "key0001", 7), 0);
  MF_ASSERT_EQ(mayfly_kv_put(kv, "key0001", 7, value, sizeof value), 0);

  /* queue: pushes until the segment is full; the next segment is refused. */
  int pushed = 0;
  for (int i = 0; i < 4 * BLOCK_BYTES / (int)sizeof value; i++) {
    rc = mayfly_queue_push(q, value, sizeof value);
    if (rc != 0) break;
    pushed++;
  }
  MF_ASSERT_EQ(rc, MAYFLY_EQUOTA);
  CU_ASSERT_TRUE(pushed > 10);
  void *item = NULL;
  size_t il = 0;
  MF_ASSERT_EQ(mayfly_queue_pop(q, &item, &il, 1000), 0);
  MF_ASSERT_EQ(il, sizeof value);
  mayfly_free(item);

  mayfly_tenant_t *t = NULL;
  size_t n = 0;
  MF_ASSERT_EQ(mayfly_tenants(c, &t, &n), 0);
  if (n == 1) {
    MF_ASSERT_EQ(t[0].blocks_used, CAROL_MAX_BLOCKS);
    MF_ASSERT_EQ(t[0].max_blocks, CAROL_MAX_BLOCKS);
  }
  mayfly_tenants_free(t, n);

  /* Another tenant is not affected by carol's quota. */
  mayfly_client_t *bob = connect_as(dir, "bob-token");
  MF_ASSERT_EQ(mayfly_create(bob, "/bob/after-carol", MAYFLY_KIND_KV, &co, NULL), 0);
  MF_ASSERT_EQ(mayfly_remove(bob, "/bob/after-carol", 0), 0);
  mayfly_disconnect(bob);

  mayfly_unmount(kv);
  mayfly_unmount(q);
  MF_ASSERT_EQ(mayfly_remove(c, "/carol", 1), 0);
  mayfly_disconnect(c);
}

static const mf_test_t conn_tests[] = {
    {"requests carry the capability and signed frames a MAC of what was sent",
     test_requests_carry_the_capability_and_signed_frames_a_mac_of_what_was_sent},
    {NULL, NULL}};

static const mf_test_t tests[] = {
    {"two tenants work in their own subtrees and are refused on the other's",
     test_two_tenants_work_in_their_own_subtrees_and_are_refused_on_the_others},
    {"no token or a wrong one is refused with a clear message",
     test_no_token_or_a_wrong_one_is_refused_with_a_clear_message},
    {"the admin sees every tenant and every path", test_the_admin_sees_every_tenant_and_every_path},
    {"the CLI with a token shows only what the tenant may see",
     test_the_cli_with_a_token_shows_only_what_the_tenant_may_see},
    {"a client keeps working past many capability lifetimes",
     test_a_client_keeps_working_past_many_capability_lifetimes},
    {"a tenant at its quota gets EQUOTA on growth and keeps its data",
     test_a_tenant_at_its_quota_gets_equota_on_growth_and_keeps_its_data},
    {NULL, NULL}};

int main(int argc, char **argv) {
  /* `test_auth_e2e conn` needs no daemon: the data connection alone. */
  if (argc > 1 && strcmp(argv[1], "conn") == 0) {
    mf_auth_init();
    return mf_test_run("auth e2e (conn)", NULL, NULL, conn_tests);
  }
  return mf_test_run("auth e2e", setup, teardown, tests);
}
