/*
 * Integration tests of the directory's tenants (--tenants FILE): a real
 * directory and memory server, driven over the control connection
 * (common/ctl.h) with each tenant's token. Two tenants (alice on /alice,
 * bob on /bob, small max-blocks), an admin, and a reader of /alice.
 *
 * libmayfly does not send tokens yet, so every call here goes through
 * mf_ctl_set_auth and the generated client; the kv split's quota is driven
 * by calling repartition_begin as the memory server would (the directory
 * has no cluster key, so that method is open).
 */
#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>

#include "common/auth.h"
#include "common/ctl.h"
#include "common/error.h"
#include "harness.h"
#include "mf_test.h"

/* One call through the ctl, following the leader (common/ctl.h). */
#define CALL(ctl, method, ...) MF_CTL_CALL((ctl), method, __VA_ARGS__)

/* The tenants file, before any reload. ops's token is given by its hash. */
static const char *const tenants_v1 =
    "[tenant alice]\n"
    "token = alice-token\n"
    "prefix = /alice\n"
    "max-blocks = 4\n"
    "\n"
    "[tenant bob]\n"
    "token = bob-token\n"
    "prefix = /bob\n"
    "max-blocks = 3\n"
    "\n"
    "[tenant ops]\n"
    "token-sha256 = %s\n"
    "prefix = /ops\n"
    "admin = true\n"
    "\n"
    "[tenant reader]\n"
    "token = reader-token\n"
    "prefix = /reader\n"
    "read-prefix = /alice\n";

static mf_daemon_t *dir, *mem;

/* A tenant's id in capabilities, as ISSUE 11 defines it: the first 4 bytes
 * (little-endian) of SHA-256 of the name, 1 if that is 0. */
static uint32_t dir_tenant_id_for_test(const char *name) {
  uint8_t h[32];
  mf_token_hash(name, h);
  uint32_t id = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
  return id != 0 ? id : 1;
}
static char *tenants_path;
static char *scratch;

static void write_tenants(const char *text) {
  char *tmp = g_strdup_printf("%s.tmp", tenants_path);
  CU_ASSERT_FATAL(g_file_set_contents(tmp, text, -1, NULL));
  CU_ASSERT_FATAL(rename(tmp, tenants_path) == 0);
  g_free(tmp);
}

static char *tenants_text_v1(void) {
  uint8_t h[32];
  char hex[65];
  mf_token_hash("ops-token", h);
  mf_hex_encode(h, 32, hex);
  return g_strdup_printf(tenants_v1, hex);
}

/* A control connection to d that logs in with token (NULL: none). */
static mf_ctl_t *as_at(const mf_daemon_t *d, const char *token) {
  mf_ctl_t *ctl = NULL;
  MF_ASSERT_EQ(mf_ctl_open(d->address, 5000, 2000, &ctl), 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ctl);
  if (token != NULL) mf_ctl_set_auth(ctl, token, NULL);
  return ctl;
}

static mf_ctl_t *as(const char *token) {
  return as_at(dir, token);
}

static int t_create(mf_ctl_t *c, const char *path, MayflyNodeKind kind, int blocks) {
  MayflyNodeInfo *ni = g_object_new(MAYFLY_TYPE_NODE_INFO, NULL);
  MayflyCreateOptions *o = g_object_new(MAYFLY_TYPE_CREATE_OPTIONS, NULL);
  o->blocks = blocks;
  int rc = CALL(c, create_ns, &ni, path, kind, o, 0, 0);
  g_object_unref(o);
  g_object_unref(ni);
  return rc;
}

static int t_open_or_create(mf_ctl_t *c, const char *path, MayflyNodeKind kind) {
  MayflyNodeInfo *ni = g_object_new(MAYFLY_TYPE_NODE_INFO, NULL);
  MayflyCreateOptions *o = g_object_new(MAYFLY_TYPE_CREATE_OPTIONS, NULL);
  int rc = CALL(c, open_or_create, &ni, path, kind, o);
  g_object_unref(o);
  g_object_unref(ni);
  return rc;
}

static int t_stat(mf_ctl_t *c, const char *path, int *children) {
  MayflyNodeInfo *ni = g_object_new(MAYFLY_TYPE_NODE_INFO, NULL);
  int rc = CALL(c, stat, &ni, path);
  if (rc == 0 && children != NULL) *children = ni->children;
  g_object_unref(ni);
  return rc;
}

static int t_exists(mf_ctl_t *c, const char *path) {
  gboolean yes = FALSE;
  int rc = CALL(c, exists, &yes, path);
  return rc == 0 ? (int)yes : rc;
}

static int t_remove(mf_ctl_t *c, const char *path) {
  return CALL(c, remove, path, TRUE, 0, 0);
}

static int t_rename(mf_ctl_t *c, const char *from, const char *to) {
  return CALL(c, rename, from, to, 0, 0);
}

static int t_mkdir(mf_ctl_t *c, const char *path) {
  return CALL(c, mkdir, path, TRUE, 0, 0);
}

/* The paths list_children returns, joined by spaces, or NULL on error. */
static char *t_list(mf_ctl_t *c, const char *path, int *rc) {
  GPtrArray *arr = g_ptr_array_new_with_free_func(g_object_unref);
  *rc = CALL(c, list_children, &arr, path);
  GString *s = g_string_new(NULL);
  for (guint i = 0; *rc == 0 && i < arr->len; i++) {
    MayflyNodeInfo *ni = g_ptr_array_index(arr, i);
    g_string_append_printf(s, "%s%s", i ? " " : "", ni->path);
  }
  g_ptr_array_unref(arr);
  return *rc == 0 ? g_string_free(s, FALSE) : (g_string_free(s, TRUE), NULL);
}

/* The paths leases returns, joined by spaces, or NULL on error. */
static char *t_leases(mf_ctl_t *c, const char *path, int *rc) {
  GPtrArray *arr = g_ptr_array_new_with_free_func(g_object_unref);
  *rc = CALL(c, leases, &arr, path);
  GString *s = g_string_new(NULL);
  for (guint i = 0; *rc == 0 && i < arr->len; i++) {
    MayflyLeaseInfo *li = g_ptr_array_index(arr, i);
    g_string_append_printf(s, "%s%s", i ? " " : "", li->path);
  }
  g_ptr_array_unref(arr);
  return *rc == 0 ? g_string_free(s, FALSE) : (g_string_free(s, TRUE), NULL);
}

static int t_renew(mf_ctl_t *c, const char *p1, const char *p2) {
  GPtrArray *paths = g_ptr_array_new();
  g_ptr_array_add(paths, (gpointer)p1);
  if (p2 != NULL) g_ptr_array_add(paths, (gpointer)p2);
  MayflyRenewReply *r = g_object_new(MAYFLY_TYPE_RENEW_REPLY, NULL);
  int rc = CALL(c, renew, &r, paths);
  g_object_unref(r);
  g_ptr_array_free(paths, TRUE);
  return rc;
}

/* get_layout; *parts (may be NULL) receives the partition count. */
static int t_layout(mf_ctl_t *c, const char *path, int *parts) {
  MayflyLayout *l = g_object_new(MAYFLY_TYPE_LAYOUT, NULL);
  int rc = CALL(c, get_layout, &l, path);
  if (rc == 0 && parts != NULL) *parts = (int)l->partitions->len;
  g_object_unref(l);
  return rc;
}

/* Grows a queue by its next segment. */
static int t_add_block(mf_ctl_t *c, const char *path) {
  MayflyLayout *l = g_object_new(MAYFLY_TYPE_LAYOUT, NULL);
  int rc = CALL(c, add_block, &l, path, 0, 0, 0, 0);
  g_object_unref(l);
  return rc;
}

static int t_watch(mf_ctl_t *c, const char *path) {
  MayflyWatchReply *w = g_object_new(MAYFLY_TYPE_WATCH_REPLY, NULL);
  int rc = CALL(c, watch, &w, path, 0, 0, 0, 10, 0);
  g_object_unref(w);
  return rc;
}

static int t_servers(mf_ctl_t *c, int *up) {
  GPtrArray *arr = g_ptr_array_new_with_free_func(g_object_unref);
  int rc = CALL(c, servers, &arr);
  if (up != NULL) *up = 0;
  for (guint i = 0; rc == 0 && up != NULL && i < arr->len; i++) {
    *up += ((MayflyServerInfo *)g_ptr_array_index(arr, i))->up;
  }
  g_ptr_array_unref(arr);
  return rc;
}

/* The blocks a tenant uses, as tenants() tells `c`; -1 when not listed. */
static int64_t tenant_blocks(GPtrArray *infos, const char *name) {
  for (guint i = 0; i < infos->len; i++) {
    MayflyTenantInfo *ti = g_ptr_array_index(infos, i);
    if (strcmp(ti->name, name) == 0) return ti->blocks_used;
  }
  return -1;
}

/* Asserts that rc is EPERM and the last error names `needle`. */
#define EXPECT_EPERM(expr, needle)                                                  \
  do {                                                                              \
    int rc_e_ = (expr);                                                             \
    MF_ASSERT_EQ(rc_e_, MAYFLY_EPERM);                                              \
    if (strstr(mf_last_error(), (needle)) == NULL) {                                \
      fprintf(stderr, "  line %d: \"%s\" lacks \"%s\"\n", __LINE__, mf_last_error(), \
              (needle));                                                            \
    }                                                                               \
    CU_ASSERT_PTR_NOT_NULL(strstr(mf_last_error(), (needle)));                      \
  } while (0)

/* Starts a memory server for d (extra arguments NULL-terminated) and waits
 * until the directory lists it as up, asking as its admin: mf_start_memserver
 * asks `mayfly servers`, which would need an admin token. */
static mf_daemon_t *start_memserver_for(const mf_daemon_t *d, const char *key_file) {
  mf_daemon_t *m =
      key_file != NULL
          ? mf_start_in_netns(NULL, "127.0.0.1", "memserver/mayfly-memserver", "--directory",
                              d->address, "--blocks", "32", "--block-size", "64KiB",
                              "--cluster-key-file", key_file, NULL)
          : mf_start_in_netns(NULL, "127.0.0.1", "memserver/mayfly-memserver", "--directory",
                              d->address, "--blocks", "32", "--block-size", "64KiB", NULL);
  if (m == NULL) return NULL;
  mf_ctl_t *ops = NULL;
  if (mf_ctl_open(d->address, 5000, 2000, &ops) != 0) return m;
  mf_ctl_set_auth(ops, "ops-token", NULL);
  int up = 0;
  for (int waited = 0; waited < 10000 && up == 0; waited += 20) {
    if (t_servers(ops, &up) != 0 || up == 0) mf_sleep_ms(20);
  }
  mf_ctl_close(ops);
  if (up == 0) fprintf(stderr, "memory server %s did not register\n", m->address);
  return m;
}

static int suite_init(void) {
  scratch = g_dir_make_tmp("mayfly-tenants-XXXXXX", NULL);
  if (scratch == NULL) return 1;
  tenants_path = g_build_filename(scratch, "tenants.ini", NULL);
  char *text = tenants_text_v1();
  int ok = g_file_set_contents(tenants_path, text, -1, NULL);
  g_free(text);
  if (!ok) return 1;
  dir = mf_start_directory("--tenants", tenants_path, "--heartbeat-timeout-ms", "60000", NULL);
  if (dir == NULL) return 1;
  mem = start_memserver_for(dir, NULL);
  return mem != NULL ? 0 : 1;
}

static int suite_cleanup(void) {
  if (mem != NULL) mf_stop(mem);
  if (dir != NULL) mf_stop(dir);
  if (tenants_path != NULL) g_unlink(tenants_path);
  if (scratch != NULL) g_rmdir(scratch);
  g_free(tenants_path);
  g_free(scratch);
  return 0;
}

/* ---- authentication ------------------------------------------------------- */

static void test_without_a_token_every_client_call_is_refused(void) {
  mf_ctl_t *c = as(NULL);
  const char *msg = "log in with a tenant token (MAYFLY_TOKEN or --token)";
  EXPECT_EPERM(t_stat(c, "/", NULL), msg);
  EXPECT_EPERM(t_create(c, "/alice/x", MAYFLY_NODE_KIND_KV, 1), msg);
  EXPECT_EPERM(t_mkdir(c, "/free"), msg);
  EXPECT_EPERM(t_servers(c, NULL), msg);
  int rc;
  char *l = t_leases(c, "/", &rc);
  CU_ASSERT_PTR_NULL(l);
  MF_ASSERT_EQ(rc, MAYFLY_EPERM);
  GPtrArray *arr = g_ptr_array_new_with_free_func(g_object_unref);
  EXPECT_EPERM(CALL(c, tenants, &arr), msg);
  g_ptr_array_unref(arr);
  mf_ctl_close(c);

  /* A wrong token is refused at login, and nothing passes after it. */
  c = as("not-a-token");
  EXPECT_EPERM(t_stat(c, "/", NULL), "unknown token");
  EXPECT_EPERM(t_stat(c, "/", NULL), "unknown token");
  mf_ctl_close(c);
  /* The same on a connection that logs in by hand: a failed login logs out. */
  c = as(NULL);
  MayflySession *s = g_object_new(MAYFLY_TYPE_SESSION, NULL);
  MF_ASSERT_EQ(CALL(c, login, &s, "alice-token"), 0);
  MF_ASSERT_EQ(t_exists(c, "/alice") >= 0, 1);
  EXPECT_EPERM(CALL(c, login, &s, "bad"), "unknown token");
  EXPECT_EPERM(t_exists(c, "/alice"), msg);
  g_object_unref(s);
  mf_ctl_close(c);
  MF_ASSERT_EQ(mf_log_count(dir, "without --tenants"), 0);
}

static void test_login_answers_who_the_session_is(void) {
  mf_ctl_t *c = as(NULL);
  MayflySession *s = g_object_new(MAYFLY_TYPE_SESSION, NULL);
  MF_ASSERT_EQ(CALL(c, login, &s, "reader-token"), 0);
  MF_ASSERT_EQ(s->open, 0);
  MF_ASSERT_EQ(s->admin, 0);
  CU_ASSERT_STRING_EQUAL(s->tenant, "reader");
  MF_ASSERT_EQ(s->prefixes->len, 1);
  CU_ASSERT_STRING_EQUAL(g_ptr_array_index(s->prefixes, 0), "/reader");
  MF_ASSERT_EQ(s->read_prefixes->len, 1);
  CU_ASSERT_STRING_EQUAL(g_ptr_array_index(s->read_prefixes, 0), "/alice");
  g_object_unref(s);
  s = g_object_new(MAYFLY_TYPE_SESSION, NULL);
  MF_ASSERT_EQ(CALL(c, login, &s, "ops-token"), 0);
  MF_ASSERT_EQ(s->admin, 1);
  CU_ASSERT_STRING_EQUAL(s->tenant, "ops");
  g_object_unref(s);
  mf_ctl_close(c);
}

/* ---- each tenant in its own subtree --------------------------------------- */

static void test_each_tenant_sees_and_changes_only_its_subtree(void) {
  mf_ctl_t *a = as("alice-token"), *b = as("bob-token"), *ops = as("ops-token");
  MF_ASSERT_EQ(t_create(a, "/alice/kv", MAYFLY_NODE_KIND_KV, 1), 0);
  MF_ASSERT_EQ(t_create(a, "/alice/tmp/q", MAYFLY_NODE_KIND_QUEUE, 1), 0);
  MF_ASSERT_EQ(t_create(b, "/bob/kv", MAYFLY_NODE_KIND_KV, 1), 0);
  MF_ASSERT_EQ(t_mkdir(ops, "/ops/logs"), 0);

  /* alice on bob's paths: refused, naming the path, whatever the call. */
  EXPECT_EPERM(t_create(a, "/bob/x", MAYFLY_NODE_KIND_KV, 1), "/bob/x");
  EXPECT_EPERM(t_open_or_create(a, "/bob/kv", MAYFLY_NODE_KIND_KV), "/bob/kv");
  EXPECT_EPERM(t_stat(a, "/bob/kv", NULL), "/bob/kv");
  EXPECT_EPERM(t_stat(a, "/bob", NULL), "/bob");
  EXPECT_EPERM(t_exists(a, "/bob/kv"), "/bob/kv");
  EXPECT_EPERM(t_exists(a, "/bob/nothing"), "/bob/nothing"); /* says nothing of existence */
  int rc;
  CU_ASSERT_PTR_NULL(t_list(a, "/bob", &rc));
  MF_ASSERT_EQ(rc, MAYFLY_EPERM);
  EXPECT_EPERM(t_remove(a, "/bob/kv"), "/bob/kv");
  EXPECT_EPERM(t_remove(a, "/bob"), "/bob");
  EXPECT_EPERM(t_rename(a, "/alice/kv", "/bob/kv2"), "/bob/kv2");
  EXPECT_EPERM(t_rename(a, "/bob/kv", "/alice/kv2"), "/bob/kv");
  EXPECT_EPERM(t_renew(a, "/alice", "/bob"), "/bob"); /* the whole batch */
  EXPECT_EPERM(t_renew(a, "/", NULL), "/");
  EXPECT_EPERM(t_layout(a, "/bob/kv", NULL), "/bob/kv");
  EXPECT_EPERM(t_add_block(a, "/bob/kv"), "/bob/kv");
  EXPECT_EPERM(t_watch(a, "/bob/kv"), "/bob/kv");
  EXPECT_EPERM(t_watch(a, "/"), "/");
  EXPECT_EPERM(t_mkdir(a, "/elsewhere"), "/elsewhere");
  CU_ASSERT_PTR_NULL(t_leases(a, "/bob", &rc));
  MF_ASSERT_EQ(rc, MAYFLY_EPERM);
  /* servers and stats need an admin; tenants() shows only its own. */
  EXPECT_EPERM(t_servers(a, NULL), "not an admin");
  MayflyStats *st = g_object_new(MAYFLY_TYPE_STATS, NULL);
  EXPECT_EPERM(CALL(a, stats, &st), "not an admin");
  g_object_unref(st);
  GPtrArray *ti = g_ptr_array_new_with_free_func(g_object_unref);
  MF_ASSERT_EQ(CALL(a, tenants, &ti), 0);
  MF_ASSERT_EQ(ti->len, 1);
  CU_ASSERT_STRING_EQUAL(((MayflyTenantInfo *)g_ptr_array_index(ti, 0))->name, "alice");
  g_ptr_array_unref(ti);
  /* And bob's namespace is still there, untouched. */
  MF_ASSERT_EQ(t_layout(b, "/bob/kv", NULL), 0);

  /* alice in her own subtree: everything. */
  MF_ASSERT_EQ(t_layout(a, "/alice/kv", NULL), 0);
  MF_ASSERT_EQ(t_exists(a, "/alice/kv"), 1);
  MF_ASSERT_EQ(t_exists(a, "/alice/none"), 0);
  MF_ASSERT_EQ(t_renew(a, "/alice", "/alice/kv"), 0);
  MF_ASSERT_EQ(t_watch(a, "/alice/kv"), 0);
  MF_ASSERT_EQ(t_rename(a, "/alice/kv", "/alice/kv2"), 0);
  MF_ASSERT_EQ(t_rename(a, "/alice/kv2", "/alice/kv"), 0);
  MF_ASSERT_EQ(t_open_or_create(a, "/alice/kv", MAYFLY_NODE_KIND_KV), 0);
  char *l = t_list(a, "/alice", &rc);
  CU_ASSERT_STRING_EQUAL(l, "/alice/kv /alice/tmp");
  g_free(l);

  /* `ls /`: each sees only its own; ancestors show as directories with
   * only what the tenant may see counted. */
  l = t_list(a, "/", &rc);
  CU_ASSERT_STRING_EQUAL(l, "/alice");
  g_free(l);
  l = t_list(b, "/", &rc);
  CU_ASSERT_STRING_EQUAL(l, "/bob");
  g_free(l);
  int children = -1;
  MF_ASSERT_EQ(t_stat(b, "/", &children), 0);
  MF_ASSERT_EQ(children, 1);
  l = t_leases(a, "/", &rc);
  CU_ASSERT_STRING_EQUAL(l, "/ /alice /alice/kv /alice/tmp /alice/tmp/q");
  g_free(l);
  l = t_leases(b, "", &rc);
  CU_ASSERT_STRING_EQUAL(l, "/ /bob /bob/kv");
  g_free(l);

  /* The admin sees and may do everything. */
  l = t_list(ops, "/", &rc);
  CU_ASSERT_STRING_EQUAL(l, "/alice /bob /ops");
  g_free(l);
  MF_ASSERT_EQ(t_stat(ops, "/", &children), 0);
  MF_ASSERT_EQ(children, 3);
  l = t_leases(ops, "/", &rc);
  CU_ASSERT_STRING_EQUAL(l, "/ /alice /alice/kv /alice/tmp /alice/tmp/q /bob /bob/kv /ops "
                            "/ops/logs");
  g_free(l);
  MF_ASSERT_EQ(t_layout(ops, "/bob/kv", NULL), 0);
  int up = 0;
  MF_ASSERT_EQ(t_servers(ops, &up), 0);
  MF_ASSERT_EQ(up, 1);
  ti = g_ptr_array_new_with_free_func(g_object_unref);
  MF_ASSERT_EQ(CALL(ops, tenants, &ti), 0);
  MF_ASSERT_EQ(ti->len, 4);
  MF_ASSERT_EQ(tenant_blocks(ti, "alice"), 2);
  MF_ASSERT_EQ(tenant_blocks(ti, "bob"), 1);
  g_ptr_array_unref(ti);
  st = g_object_new(MAYFLY_TYPE_STATS, NULL);
  MF_ASSERT_EQ(CALL(ops, stats, &st), 0);
  MF_ASSERT_EQ(st->__isset_tenants, 1);
  MF_ASSERT_EQ(st->tenants->len, 4);
  MF_ASSERT_EQ(tenant_blocks(st->tenants, "alice"), 2);
  MF_ASSERT_EQ(st->blocks_used, 3);
  g_object_unref(st);

  /* alice removes what is hers. */
  MF_ASSERT_EQ(t_remove(a, "/alice/tmp"), 0);
  MF_ASSERT_EQ(t_exists(a, "/alice/tmp"), 0);
  mf_ctl_close(a);
  mf_ctl_close(b);
  mf_ctl_close(ops);
}

static void test_a_reader_reads_but_never_changes(void) {
  mf_ctl_t *r = as("reader-token");
  int parts = 0;
  MF_ASSERT_EQ(t_stat(r, "/alice/kv", NULL), 0);
  MF_ASSERT_EQ(t_layout(r, "/alice/kv", &parts), 0);
  MF_ASSERT_EQ(parts, 1);
  MF_ASSERT_EQ(t_watch(r, "/alice/kv"), 0);
  MF_ASSERT_EQ(t_open_or_create(r, "/alice/kv", MAYFLY_NODE_KIND_KV), 0); /* opens */
  int rc;
  char *l = t_list(r, "/alice", &rc);
  CU_ASSERT_STRING_EQUAL(l, "/alice/kv");
  g_free(l);
  l = t_list(r, "/", &rc);
  CU_ASSERT_STRING_EQUAL(l, "/alice");
  g_free(l);
  EXPECT_EPERM(t_create(r, "/alice/x", MAYFLY_NODE_KIND_KV, 1), "may change");
  EXPECT_EPERM(t_open_or_create(r, "/alice/y", MAYFLY_NODE_KIND_KV), "/alice/y");
  EXPECT_EPERM(t_remove(r, "/alice/kv"), "/alice/kv");
  EXPECT_EPERM(t_add_block(r, "/alice/kv"), "/alice/kv");
  EXPECT_EPERM(t_renew(r, "/alice/kv", NULL), "/alice/kv");
  EXPECT_EPERM(t_rename(r, "/alice/kv", "/reader/kv"), "/alice/kv");
  EXPECT_EPERM(t_stat(r, "/bob/kv", NULL), "/bob/kv");
  MF_ASSERT_EQ(t_exists(r, "/alice/kv"), 1);
  /* In its own prefix it creates. */
  MF_ASSERT_EQ(t_create(r, "/reader/q", MAYFLY_NODE_KIND_QUEUE, 1), 0);
  MF_ASSERT_EQ(t_remove(r, "/reader/q"), 0);
  mf_ctl_close(r);
}

/* ---- quotas ----------------------------------------------------------------- */

static void test_a_tenant_at_its_quota_gets_equota_and_keeps_working(void) {
  mf_ctl_t *a = as("alice-token"), *b = as("bob-token"), *ops = as("ops-token");
  /* alice holds /alice/kv (1 block) of her 4. */
  MF_ASSERT_EQ(t_create(a, "/alice/q", MAYFLY_NODE_KIND_QUEUE, 1), 0);
  MF_ASSERT_EQ(t_create(a, "/alice/big", MAYFLY_NODE_KIND_KV, 3), MAYFLY_EQUOTA);
  CU_ASSERT_PTR_NOT_NULL(strstr(mf_last_error(), "tenant alice"));
  CU_ASSERT_PTR_NOT_NULL(strstr(mf_last_error(), "max-blocks 4"));
  MF_ASSERT_EQ(t_exists(a, "/alice/big"), 0); /* nothing was created */
  MF_ASSERT_EQ(t_create(a, "/alice/f", MAYFLY_NODE_KIND_FILE, 2), 0);
  /* Now at 4: no create, no queue growth, and nothing changed by trying. */
  MF_ASSERT_EQ(t_create(a, "/alice/one", MAYFLY_NODE_KIND_KV, 1), MAYFLY_EQUOTA);
  MF_ASSERT_EQ(t_open_or_create(a, "/alice/two", MAYFLY_NODE_KIND_KV), MAYFLY_EQUOTA);
  int parts = 0;
  MF_ASSERT_EQ(t_add_block(a, "/alice/q"), MAYFLY_EQUOTA);
  CU_ASSERT_PTR_NOT_NULL(strstr(mf_last_error(), "tenant alice"));
  MF_ASSERT_EQ(t_layout(a, "/alice/q", &parts), 0);
  MF_ASSERT_EQ(parts, 1);
  /* Her namespaces stay usable. */
  MF_ASSERT_EQ(t_renew(a, "/alice", NULL), 0);
  MF_ASSERT_EQ(t_layout(a, "/alice/kv", NULL), 0);
  MF_ASSERT_EQ(t_open_or_create(a, "/alice/q", MAYFLY_NODE_KIND_QUEUE), 0);
  /* Not even the admin puts more under her prefix. */
  MF_ASSERT_EQ(t_create(ops, "/alice/by-ops", MAYFLY_NODE_KIND_KV, 1), MAYFLY_EQUOTA);
  /* bob is unaffected. */
  MF_ASSERT_EQ(t_create(b, "/bob/q", MAYFLY_NODE_KIND_QUEUE, 1), 0);
  MF_ASSERT_EQ(t_add_block(b, "/bob/q"), 0);
  MF_ASSERT_EQ(t_add_block(b, "/bob/q"), MAYFLY_EQUOTA); /* bob's own limit: 3 */
  CU_ASSERT_PTR_NOT_NULL(strstr(mf_last_error(), "tenant bob"));
  /* Freeing a block makes room again. */
  MF_ASSERT_EQ(t_remove(a, "/alice/f"), 0);
  MF_ASSERT_EQ(t_add_block(a, "/alice/q"), 0);
  MF_ASSERT_EQ(t_layout(a, "/alice/q", &parts), 0);
  MF_ASSERT_EQ(parts, 2);
  GPtrArray *ti = g_ptr_array_new_with_free_func(g_object_unref);
  MF_ASSERT_EQ(CALL(ops, tenants, &ti), 0);
  MF_ASSERT_EQ(tenant_blocks(ti, "alice"), 3);
  MF_ASSERT_EQ(tenant_blocks(ti, "bob"), 3);
  g_ptr_array_unref(ti);
  /* A rename into a full tenant's subtree brings its blocks: refused. */
  MF_ASSERT_EQ(t_create(ops, "/ops/kv2", MAYFLY_NODE_KIND_KV, 2), 0);
  MF_ASSERT_EQ(t_rename(ops, "/ops/kv2", "/alice/kv2"), MAYFLY_EQUOTA);
  MF_ASSERT_EQ(t_exists(ops, "/ops/kv2"), 1);
  MF_ASSERT_EQ(t_remove(ops, "/ops/kv2"), 0);
  MF_ASSERT_EQ(t_remove(b, "/bob/q"), 0);
  mf_ctl_close(a);
  mf_ctl_close(b);
  mf_ctl_close(ops);
}

/* A split begins as the memory server begins one: repartition_begin for
 * the kv block. At bob's limit it is EQUOTA before anything is taken. */
static void test_a_split_past_the_quota_is_refused(void) {
  mf_ctl_t *b = as("bob-token"), *ops = as("ops-token"), *srv = as(NULL);
  /* bob: /bob/kv (1 block) + a queue of 1 = 2 of 3. */
  MF_ASSERT_EQ(t_create(b, "/bob/q", MAYFLY_NODE_KIND_QUEUE, 1), 0);
  MayflyLayout *l = g_object_new(MAYFLY_TYPE_LAYOUT, NULL);
  MF_ASSERT_EQ(CALL(b, get_layout, &l, "/bob/kv"), 0);
  CU_ASSERT_FATAL(l->partitions->len == 1);
  MayflyPartition *p = g_ptr_array_index(l->partitions, 0);
  gint64 mid = p->range_lo + (p->range_hi - p->range_lo) / 2;

  /* Under the limit the split begins (and is rolled back here). */
  MayflyRepartPlan *plan = g_object_new(MAYFLY_TYPE_REPART_PLAN, NULL);
  MF_ASSERT_EQ(CALL(srv, repartition_begin, &plan, p->server_id, p->block_index, p->generation,
                    FALSE, mid),
               0);
  MayflyStats *st = g_object_new(MAYFLY_TYPE_STATS, NULL);
  MF_ASSERT_EQ(CALL(ops, stats, &st), 0);
  MF_ASSERT_EQ(tenant_blocks(st->tenants, "bob"), 3); /* the new block counts from begin */
  g_object_unref(st);
  /* At the limit now: a second split is refused (the queue cannot grow either). */
  MayflyRepartPlan *plan2 = g_object_new(MAYFLY_TYPE_REPART_PLAN, NULL);
  MF_ASSERT_EQ(CALL(srv, repartition_begin, &plan2, p->server_id, p->block_index, p->generation,
                    FALSE, mid / 2),
               MAYFLY_EQUOTA);
  CU_ASSERT_PTR_NOT_NULL(strstr(mf_last_error(), "tenant bob"));
  g_object_unref(plan2);
  MF_ASSERT_EQ(t_add_block(b, "/bob/q"), MAYFLY_EQUOTA);
  MayflyLayout *l2 = g_object_new(MAYFLY_TYPE_LAYOUT, NULL);
  MF_ASSERT_EQ(CALL(srv, repartition_end, &l2, p->server_id, plan->op_id, FALSE, 0), 0);
  g_object_unref(l2);
  g_object_unref(plan);
  /* Rolled back: the block is bob's to use again. */
  MF_ASSERT_EQ(t_add_block(b, "/bob/q"), 0);
  MF_ASSERT_EQ(t_remove(b, "/bob/q"), 0);
  g_object_unref(l);
  mf_ctl_close(b);
  mf_ctl_close(ops);
  mf_ctl_close(srv);
}

/* ---- reloading -------------------------------------------------------------- */

/* Sends SIGHUP and waits for the log line that says how it went. */
static void hup_and_wait(const char *needle) {
  int before = mf_log_count(dir, needle);
  CU_ASSERT_FATAL(kill(dir->pid, SIGHUP) == 0);
  for (int waited = 0; waited < 10000 && mf_log_count(dir, needle) == before; waited += 20) {
    mf_sleep_ms(20);
  }
  MF_ASSERT_EQ(mf_log_count(dir, needle), before + 1);
}

static void test_sighup_reloads_and_a_broken_file_keeps_the_old_tenants(void) {
  mf_ctl_t *a = as("alice-token"), *b = as("bob-token");
  MF_ASSERT_EQ(t_stat(a, "/alice", NULL), 0);
  MF_ASSERT_EQ(t_stat(b, "/bob", NULL), 0);

  /* A broken file: the old tenants stay, and the log says why. */
  write_tenants("[tenant alice]\ntoken = alice-token\nprefix = /alice\nquota = 3\n");
  hup_and_wait("was not reloaded");
  MF_ASSERT_EQ(mf_log_count(dir, "quota: unknown key"), 1);
  MF_ASSERT_EQ(t_stat(b, "/bob", NULL), 0);
  mf_ctl_t *b2 = as("bob-token"); /* a new login works too */
  MF_ASSERT_EQ(t_stat(b2, "/bob/kv", NULL), 0);
  mf_ctl_close(b2);

  /* A changed file applies at once: bob is gone (his open session too), and
   * alice owns a second prefix. */
  write_tenants("[tenant alice]\ntoken = alice-token\nprefix = /alice;/alice2\n"
                "[tenant ops]\ntoken = ops-token\nprefix = /ops\nadmin = true\n");
  hup_and_wait("reloaded 2 tenants");
  EXPECT_EPERM(t_stat(b, "/bob", NULL), "bob is no longer configured");
  b2 = as("bob-token");
  EXPECT_EPERM(t_stat(b2, "/bob", NULL), "unknown token");
  mf_ctl_close(b2);
  MF_ASSERT_EQ(t_create(a, "/alice2/kv", MAYFLY_NODE_KIND_KV, 1), 0); /* the old session */
  int rc;
  char *l = t_list(a, "/", &rc);
  CU_ASSERT_STRING_EQUAL(l, "/alice /alice2");
  g_free(l);
  /* No max-blocks any more: alice may grow past her old limit of 4. */
  MF_ASSERT_EQ(t_create(a, "/alice2/big", MAYFLY_NODE_KIND_KV, 4), 0);
  mf_ctl_close(a);
  mf_ctl_close(b);
}

/* ---- with a cluster key ------------------------------------------------------ */

/* The rights and tenant of the capability of the first partition of path's
 * layout as `c` gets it; -1 rights when it carries none. */
static void cap_of(mf_ctl_t *c, const char *path, int *rights, uint32_t *tenant) {
  *rights = -1;
  *tenant = 0;
  MayflyLayout *l = g_object_new(MAYFLY_TYPE_LAYOUT, NULL);
  MF_ASSERT_EQ(CALL(c, get_layout, &l, path), 0);
  if (l->partitions->len > 0) {
    MayflyPartition *p = g_ptr_array_index(l->partitions, 0);
    uint8_t raw[MF_CAP_SIZE];
    mf_cap_t cap;
    if (p->capability != NULL && mf_hex_decode(p->capability, raw, sizeof raw) == 0 &&
        mf_cap_decode(raw, sizeof raw, &cap) == 0) {
      *rights = cap.rights;
      *tenant = cap.tenant;
    }
  }
  g_object_unref(l);
}

static void test_with_a_cluster_key_capabilities_carry_the_tenant_and_its_rights(void) {
  /* Without a key, the tenants directory said the data plane is open. */
  MF_ASSERT_EQ(mf_log_count(dir, "the data plane is open"), 1);
  uint8_t key[MF_KEY_SIZE];
  MF_ASSERT_EQ(mf_auth_init(), 0);
  mf_auth_random(key, sizeof key);
  char hex[2 * MF_KEY_SIZE + 1];
  mf_hex_encode(key, MF_KEY_SIZE, hex);
  char *key_path = g_build_filename(scratch, "cluster.key", NULL);
  char *file = g_build_filename(scratch, "tenants-keyed.ini", NULL);
  char *text = tenants_text_v1();
  CU_ASSERT_FATAL(g_file_set_contents(key_path, hex, -1, NULL) && g_chmod(key_path, 0600) == 0);
  CU_ASSERT_FATAL(g_file_set_contents(file, text, -1, NULL));
  g_free(text);
  mf_daemon_t *kd = mf_start_directory("--tenants", file, "--cluster-key-file", key_path, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(kd);
  MF_ASSERT_EQ(mf_log_count(kd, "the data plane is open"), 0);
  mf_daemon_t *km = start_memserver_for(kd, key_path);
  CU_ASSERT_PTR_NOT_NULL_FATAL(km);
  mf_ctl_t *a = as_at(kd, "alice-token"), *r = as_at(kd, "reader-token");
  MF_ASSERT_EQ(t_create(a, "/alice/kv", MAYFLY_NODE_KIND_KV, 1), 0);
  int rights;
  uint32_t tenant;
  cap_of(a, "/alice/kv", &rights, &tenant);
  MF_ASSERT_EQ(rights, MF_RIGHT_READ | MF_RIGHT_WRITE);
  MF_ASSERT_EQ(tenant, dir_tenant_id_for_test("alice"));
  cap_of(r, "/alice/kv", &rights, &tenant);
  MF_ASSERT_EQ(rights, MF_RIGHT_READ); /* a read-prefix: read only */
  MF_ASSERT_EQ(tenant, dir_tenant_id_for_test("reader"));
  mf_ctl_close(a);
  mf_ctl_close(r);
  MF_ASSERT_EQ(mf_stop(km), 0);
  MF_ASSERT_EQ(mf_stop(kd), 0);
  g_unlink(key_path);
  g_unlink(file);
  g_free(key_path);
  g_free(file);
}

/* ---- the open directory and bad start-up files ----------------------------- */

static void test_without_tenants_the_directory_is_open(void) {
  mf_daemon_t *open = mf_start_directory(NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(open);
  mf_ctl_t *c = NULL;
  MF_ASSERT_EQ(mf_ctl_open(open->address, 5000, 2000, &c), 0);
  MayflySession *s = g_object_new(MAYFLY_TYPE_SESSION, NULL);
  MF_ASSERT_EQ(CALL(c, login, &s, "anything"), 0);
  MF_ASSERT_EQ(s->open, 1);
  MF_ASSERT_EQ(s->admin, 1);
  g_object_unref(s);
  MF_ASSERT_EQ(t_mkdir(c, "/any/where"), 0);
  MF_ASSERT_EQ(t_servers(c, NULL), 0);
  GPtrArray *ti = g_ptr_array_new_with_free_func(g_object_unref);
  MF_ASSERT_EQ(CALL(c, tenants, &ti), 0);
  MF_ASSERT_EQ(ti->len, 0);
  g_ptr_array_unref(ti);
  mf_ctl_close(c);
  /* On loopback it does not warn. */
  MF_ASSERT_EQ(mf_log_count(open, "without --tenants"), 0);
  MF_ASSERT_EQ(mf_stop(open), 0);

  /* A broken tenants file at start: the directory refuses to start. */
  char *bad = g_build_filename(scratch, "bad.ini", NULL);
  CU_ASSERT_FATAL(g_file_set_contents(bad, "[tenant x]\nprefix = relative\ntoken = t\n", -1,
                                      NULL));
  fprintf(stderr, "  (a directory refusing a bad tenants file; its log follows)\n");
  mf_daemon_t *refused = mf_start_directory("--tenants", bad, NULL);
  CU_ASSERT_PTR_NULL(refused);
  if (refused != NULL) mf_stop(refused);
  g_unlink(bad);
  g_free(bad);
}

static const mf_test_t tests[] = {
    {"without a token every client call is refused", test_without_a_token_every_client_call_is_refused},
    {"login answers who the session is", test_login_answers_who_the_session_is},
    {"each tenant sees and changes only its subtree; the admin sees all",
     test_each_tenant_sees_and_changes_only_its_subtree},
    {"a reader reads but never changes", test_a_reader_reads_but_never_changes},
    {"a tenant at its quota gets EQUOTA on create and growth and keeps working",
     test_a_tenant_at_its_quota_gets_equota_and_keeps_working},
    {"a split past the quota is refused", test_a_split_past_the_quota_is_refused},
    {"SIGHUP reloads; a broken file keeps the old tenants",
     test_sighup_reloads_and_a_broken_file_keeps_the_old_tenants},
    {"with a cluster key, capabilities carry the tenant and its rights",
     test_with_a_cluster_key_capabilities_carry_the_tenant_and_its_rights},
    {"without --tenants the directory is open; a bad file stops the start",
     test_without_tenants_the_directory_is_open},
    {NULL, NULL}};

int main(void) {
  return mf_test_run("tenants", suite_init, suite_cleanup, tests);
}
