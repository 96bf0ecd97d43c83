/*
 * Unit tests for directory/tenants.c: the tenants file parser (every kind of
 * bad file refused with a message naming file, section and key), token
 * lookup, the permission rules and the quota arithmetic, on a tree built in
 * process.
 */
#include <string.h>

#include "common/auth.h"
#include "common/error.h"
#include "directory/tenants.h"
#include "mf_test.h"

static char why[1024];

static dir_tenants_t *parse(const char *text, int *rc) {
  dir_tenants_t *t = NULL;
  why[0] = '\0';
  *rc = dir_tenants_parse(text, strlen(text), "t.ini", &t, why, sizeof why);
  return t;
}

#define GOOD_HASH "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" /* "test" */

static const char *const good =
    "# a comment\n"
    "[tenant alice]\n"
    "token = alice-secret\n"
    "prefix = /alice ; /shared/alice;\n"
    "read-prefix = /datasets\n"
    "max-blocks = 8\n"
    "[tenant ops]\n"
    "token-sha256 = " GOOD_HASH "\n"
    "prefix = /ops\n"
    "admin = true\n";

static void test_a_good_file_is_read_whole(void) {
  int rc;
  dir_tenants_t *ts = parse(good, &rc);
  MF_ASSERT_EQ(rc, 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ts);
  MF_ASSERT_EQ(ts->list->len, 2);
  const dir_tenant_t *a = g_ptr_array_index(ts->list, 0);
  CU_ASSERT_STRING_EQUAL(a->name, "alice");
  MF_ASSERT_EQ(g_strv_length(a->prefixes), 2);
  CU_ASSERT_STRING_EQUAL(a->prefixes[0], "/alice");
  CU_ASSERT_STRING_EQUAL(a->prefixes[1], "/shared/alice");
  MF_ASSERT_EQ(g_strv_length(a->read_prefixes), 1);
  CU_ASSERT_STRING_EQUAL(a->read_prefixes[0], "/datasets");
  MF_ASSERT_EQ(a->max_blocks, 8);
  MF_ASSERT_EQ(a->admin, 0);
  MF_ASSERT_EQ(a->id, dir_tenant_id("alice"));
  CU_ASSERT(a->id != 0);
  const dir_tenant_t *o = g_ptr_array_index(ts->list, 1);
  MF_ASSERT_EQ(o->admin, 1);
  MF_ASSERT_EQ(o->max_blocks, 0);
  MF_ASSERT_EQ(g_strv_length(o->read_prefixes), 0);
  /* Tokens: the plain one hashed, the hash as given; anything else none. */
  CU_ASSERT(dir_tenants_by_token(ts, "alice-secret") == a);
  CU_ASSERT(dir_tenants_by_token(ts, "test") == o);
  CU_ASSERT_PTR_NULL(dir_tenants_by_token(ts, "alice-secret "));
  CU_ASSERT_PTR_NULL(dir_tenants_by_token(ts, ""));
  CU_ASSERT_PTR_NULL(dir_tenants_by_token(ts, NULL));
  CU_ASSERT_PTR_NULL(dir_tenants_by_token(ts, GOOD_HASH)); /* the hash is not the token */
  dir_tenants_free(ts);
}

/* A bad file, and words its message must hold. */
typedef struct {
  const char *what;
  const char *text;
  const char *must[3];
} bad_t;

static const bad_t bad[] = {
    {"not a key file", "[tenant a\nprefix=/a\n", {"t.ini", NULL}},
    {"a section of another name", "[alice]\ntoken=x\nprefix=/a\n", {"t.ini", "[alice]", "tenant NAME"}},
    {"a tenant without a name", "[tenant ]\ntoken=x\nprefix=/a\n", {"t.ini", "tenant NAME", NULL}},
    {"a name with a space", "[tenant a b]\ntoken=x\nprefix=/a\n", {"[tenant a b]", NULL}},
    {"an unknown key", "[tenant a]\ntoken=x\nprefix=/a\nprefixes=/b\n",
     {"t.ini", "[tenant a]", "prefixes: unknown key"}},
    {"a localised key", "[tenant a]\ntoken=x\nprefix=/a\nprefix[de]=/b\n",
     {"[tenant a]", "prefix[de]", "unknown key"}},
    {"no token", "[tenant a]\nprefix=/a\n", {"[tenant a]", "token", NULL}},
    {"both token forms", "[tenant a]\ntoken=x\ntoken-sha256=" GOOD_HASH "\nprefix=/a\n",
     {"[tenant a]", "exactly one", NULL}},
    {"a short hash", "[tenant a]\ntoken-sha256=abc\nprefix=/a\n",
     {"[tenant a]", "token-sha256", "64 hexadecimal"}},
    {"a hash that is not hex",
     "[tenant a]\ntoken-sha256=zz86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n"
     "prefix=/a\n",
     {"token-sha256", "64 hexadecimal", NULL}},
    {"an empty token", "[tenant a]\ntoken=\nprefix=/a\n", {"[tenant a]", "token", "empty"}},
    {"no prefix", "[tenant a]\ntoken=x\n", {"[tenant a]", "prefix", "missing"}},
    {"an empty prefix list", "[tenant a]\ntoken=x\nprefix= ; \n", {"prefix", "missing", NULL}},
    {"a relative prefix", "[tenant a]\ntoken=x\nprefix=alice\n",
     {"[tenant a]", "prefix", "'alice' is not a valid absolute path"}},
    {"a prefix with an empty component", "[tenant a]\ntoken=x\nprefix=/a//b\n",
     {"prefix", "'/a//b'", NULL}},
    {"a read-prefix with ..", "[tenant a]\ntoken=x\nprefix=/a\nread-prefix=/b/..\n",
     {"read-prefix", "'/b/..'", NULL}},
    {"a negative max-blocks", "[tenant a]\ntoken=x\nprefix=/a\nmax-blocks=-1\n",
     {"[tenant a]", "max-blocks", NULL}},
    {"a max-blocks that is no number", "[tenant a]\ntoken=x\nprefix=/a\nmax-blocks=many\n",
     {"max-blocks", NULL}},
    {"a max-blocks too large", "[tenant a]\ntoken=x\nprefix=/a\nmax-blocks=99999999999\n",
     {"max-blocks", NULL}},
    {"an admin that is no boolean", "[tenant a]\ntoken=x\nprefix=/a\nadmin=maybe\n",
     {"[tenant a]", "admin", "true or false"}},
    {"two tenants with one token",
     "[tenant a]\ntoken=test\nprefix=/a\n[tenant b]\ntoken-sha256=" GOOD_HASH "\nprefix=/b\n",
     {"[tenant b]", "same token", "tenant a"}},
    {"no tenant at all", "# nothing\n", {"t.ini", "no [tenant NAME]", NULL}},
    {"a tenant written twice",
     "[tenant a]\ntoken=x\nprefix=/a\n[tenant b]\ntoken=y\nprefix=/b\n[tenant a]\nadmin=true\n",
     {"t.ini", "[tenant a]", "a second section"}},
    {NULL, NULL, {NULL}}};

static void test_every_kind_of_bad_file_is_refused_with_a_message(void) {
  for (const bad_t *b = bad; b->what != NULL; b++) {
    int rc;
    dir_tenants_t *ts = parse(b->text, &rc);
    if (rc != MAYFLY_EINVAL) fprintf(stderr, "  %s: accepted (rc %d)\n", b->what, rc);
    MF_ASSERT_EQ(rc, MAYFLY_EINVAL);
    CU_ASSERT_PTR_NULL(ts);
    dir_tenants_free(ts);
    for (int i = 0; i < 3 && b->must[i] != NULL; i++) {
      if (strstr(why, b->must[i]) == NULL) {
        fprintf(stderr, "  %s: message \"%s\" lacks \"%s\"\n", b->what, why, b->must[i]);
      }
      CU_ASSERT_PTR_NOT_NULL(strstr(why, b->must[i]));
    }
  }
}

static void test_a_missing_file_is_eio_naming_it(void) {
  dir_tenants_t *ts = NULL;
  why[0] = '\0';
  MF_ASSERT_EQ(dir_tenants_load("/nonexistent/tenants.ini", &ts, why, sizeof why), MAYFLY_EIO);
  CU_ASSERT_PTR_NULL(ts);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "/nonexistent/tenants.ini"));
}

/* ---- permissions and quotas on a tree in process -------------------------- */

static const char *const rules =
    "[tenant alice]\ntoken=a\nprefix=/t/alice;/t/alice/sub;/x\nmax-blocks=5\n"
    "[tenant bob]\ntoken=b\nprefix=/t/bob\nmax-blocks=3\n"
    "[tenant reader]\ntoken=r\nprefix=/r\nread-prefix=/t/alice\n"
    "[tenant nested]\ntoken=n\nprefix=/t/alice/deep\nmax-blocks=2\n"
    "[tenant root]\ntoken=z\nprefix=/ops\nadmin=true\n";

typedef struct {
  dir_t d;
  dir_session_t s;
} fixture_t;

static void setup(fixture_t *f) {
  memset(f, 0, sizeof *f);
  f->d.tree = ns_tree_new(1000, 100);
  int32_t id;
  MF_ASSERT_EQ(ns_alloc_add_server(f->d.tree->alloc, "ms:1", 64, 1024, &id), 0);
  int rc;
  f->d.tenants = parse(rules, &rc);
  MF_ASSERT_EQ(rc, 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f->d.tenants);
}

static void teardown(fixture_t *f) {
  dir_session_clear(&f->s);
  dir_tenants_free(f->d.tenants);
  ns_tree_free(f->d.tree);
}

static void login(fixture_t *f, const char *token) {
  MF_ASSERT_EQ(dir_tenants_login(&f->d, &f->s, token, NULL, why, sizeof why), 0);
}

static int check(fixture_t *f, dir_access_t need, const char *path) {
  why[0] = '\0';
  return dir_tenants_check(&f->d, &f->s, need, path, why, sizeof why);
}

static void create(fixture_t *f, const char *path, int blocks) {
  ns_partition_t parts[8];
  MF_ASSERT_EQ(ns_tree_plan_parts(f->d.tree, NS_KIND_KV, blocks, parts), 0);
  ns_record_t rec = {.type = NS_REC_CREATE,
                     .path = path,
                     .kind = NS_KIND_KV,
                     .parts = parts,
                     .nparts = (size_t)blocks};
  MF_ASSERT_EQ(ns_tree_apply(f->d.tree, &rec, NULL, why, sizeof why), 0);
}

static void test_each_right_follows_the_prefixes(void) {
  fixture_t f;
  setup(&f);
  /* Not logged in: nothing, with the message that says how. */
  MF_ASSERT_EQ(check(&f, DIR_SEE, "/"), MAYFLY_EPERM);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "log in with a tenant token (MAYFLY_TOKEN or --token)"));
  /* A bad token logs out. */
  login(&f, "a");
  MF_ASSERT_EQ(dir_tenants_login(&f.d, &f.s, "nope", NULL, why, sizeof why), MAYFLY_EPERM);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "unknown token"));
  CU_ASSERT_PTR_NULL(f.s.tenant);
  MF_ASSERT_EQ(check(&f, DIR_SEE, "/t/alice"), MAYFLY_EPERM);

  login(&f, "a");
  MF_ASSERT_EQ(check(&f, DIR_CHANGE, "/t/alice"), 0);
  MF_ASSERT_EQ(check(&f, DIR_CHANGE, "/t/alice/x/y"), 0);
  MF_ASSERT_EQ(check(&f, DIR_CHANGE, "/t/alicex"), MAYFLY_EPERM); /* a prefix of the name only */
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "/t/alicex"));
  MF_ASSERT_EQ(check(&f, DIR_CHANGE, "/t/bob/q"), MAYFLY_EPERM);
  MF_ASSERT_EQ(check(&f, DIR_READ, "/t/bob/q"), MAYFLY_EPERM);
  MF_ASSERT_EQ(check(&f, DIR_SEE, "/t/bob"), MAYFLY_EPERM);
  /* Ancestors are seen, not read or changed. */
  MF_ASSERT_EQ(check(&f, DIR_SEE, "/"), 0);
  MF_ASSERT_EQ(check(&f, DIR_SEE, "/t"), 0);
  MF_ASSERT_EQ(check(&f, DIR_READ, "/t"), MAYFLY_EPERM);
  MF_ASSERT_EQ(check(&f, DIR_CHANGE, "/t"), MAYFLY_EPERM);
  MF_ASSERT_EQ(check(&f, DIR_ADMIN, NULL), MAYFLY_EPERM);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "not an admin"));
  /* An invalid path is its own error. */
  MF_ASSERT_EQ(check(&f, DIR_SEE, "t/alice"), MAYFLY_EBADPATH);
  uint32_t id = 0;
  MF_ASSERT_EQ(dir_tenants_rights(&f.d, &f.s, "/t/alice/kv", &id), MF_RIGHT_READ | MF_RIGHT_WRITE);
  MF_ASSERT_EQ(id, dir_tenant_id("alice"));
  MF_ASSERT_EQ(dir_tenants_rights(&f.d, &f.s, "/t/bob/kv", &id), 0);

  /* The reader reads /t/alice but changes only /r. */
  login(&f, "r");
  MF_ASSERT_EQ(check(&f, DIR_READ, "/t/alice/kv"), 0);
  MF_ASSERT_EQ(check(&f, DIR_SEE, "/t/alice/kv"), 0);
  MF_ASSERT_EQ(check(&f, DIR_CHANGE, "/t/alice/kv"), MAYFLY_EPERM);
  MF_ASSERT_EQ(check(&f, DIR_SEE, "/t"), 0);
  MF_ASSERT_EQ(check(&f, DIR_SEE, "/t/bob"), MAYFLY_EPERM);
  MF_ASSERT_EQ(dir_tenants_rights(&f.d, &f.s, "/t/alice/kv", &id), MF_RIGHT_READ);

  /* The admin: everything. */
  login(&f, "z");
  MF_ASSERT_EQ(check(&f, DIR_CHANGE, "/t/bob/q"), 0);
  MF_ASSERT_EQ(check(&f, DIR_ADMIN, NULL), 0);
  MF_ASSERT_EQ(dir_tenants_is_admin(&f.d, &f.s), 1);

  /* A cluster session (a memory server) may do everything too. */
  dir_session_clear(&f.s);
  f.s.cluster = 1;
  MF_ASSERT_EQ(check(&f, DIR_CHANGE, "/t/bob/q"), 0);
  dir_session_clear(&f.s);

  /* A tenant removed by a reload loses access at once. */
  login(&f, "b");
  MF_ASSERT_EQ(check(&f, DIR_CHANGE, "/t/bob/q"), 0);
  g_hash_table_remove(f.d.tenants->by_name, "bob");
  MF_ASSERT_EQ(check(&f, DIR_CHANGE, "/t/bob/q"), MAYFLY_EPERM);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "bob is no longer configured"));
  teardown(&f);

  /* Open: everything, for everyone. */
  dir_t open = {0};
  dir_session_t s = {0};
  MF_ASSERT_EQ(dir_tenants_check(&open, &s, DIR_ADMIN, NULL, why, sizeof why), 0);
  MF_ASSERT_EQ(dir_tenants_check(&open, &s, DIR_CHANGE, "/any", why, sizeof why), 0);
  MF_ASSERT_EQ(dir_tenants_rights(&open, &s, "/any", &id), MF_RIGHT_READ | MF_RIGHT_WRITE);
  MF_ASSERT_EQ(id, 0);
}

static void test_quotas_count_every_namespace_under_the_prefixes(void) {
  fixture_t f;
  setup(&f);
  create(&f, "/t/alice/a", 2);
  create(&f, "/t/alice/sub/b", 1); /* under two of alice's prefixes: counted once */
  create(&f, "/x/c", 1);
  create(&f, "/t/bob/d", 3);
  int64_t blocks, nss;
  const dir_tenant_t *alice = g_hash_table_lookup(f.d.tenants->by_name, "alice");
  dir_tenants_usage(&f.d, alice, &blocks, &nss);
  MF_ASSERT_EQ(blocks, 4);
  MF_ASSERT_EQ(nss, 3);

  /* alice: 4 of 5. One more fits, two do not; bob is full. */
  MF_ASSERT_EQ(dir_tenants_charge(&f.d, "/t/alice/new", 1, why, sizeof why), 0);
  MF_ASSERT_EQ(dir_tenants_charge(&f.d, "/x/new", 2, why, sizeof why), MAYFLY_EQUOTA);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "tenant alice"));
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "max-blocks 5"));
  MF_ASSERT_EQ(dir_tenants_charge(&f.d, "/t/bob/d", 1, why, sizeof why), MAYFLY_EQUOTA);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "tenant bob"));
  /* Outside every quota: no limit. */
  MF_ASSERT_EQ(dir_tenants_charge(&f.d, "/elsewhere", 100, why, sizeof why), 0);

  /* A namespace under nested prefixes of two tenants counts for both. */
  create(&f, "/t/alice/deep/e", 1);
  const dir_tenant_t *nested = g_hash_table_lookup(f.d.tenants->by_name, "nested");
  dir_tenants_usage(&f.d, nested, &blocks, &nss);
  MF_ASSERT_EQ(blocks, 1);
  dir_tenants_usage(&f.d, alice, &blocks, &nss);
  MF_ASSERT_EQ(blocks, 5);
  MF_ASSERT_EQ(dir_tenants_charge(&f.d, "/t/alice/deep/e", 1, why, sizeof why), MAYFLY_EQUOTA);

  /* A split of a block of bob's is refused; a merge never is. */
  const ns_node_t *d = ns_tree_lookup(f.d.tree, "/t/bob/d");
  const ns_partition_t *p = &g_array_index(d->layout.parts, ns_partition_t, 0);
  MF_ASSERT_EQ(dir_tenants_charge_split(&f.d, p->block.server, p->block.index, 0, why, sizeof why),
               MAYFLY_EQUOTA);
  MF_ASSERT_EQ(dir_tenants_charge_split(&f.d, p->block.server, p->block.index, 1, why, sizeof why),
               0);
  MF_ASSERT_EQ(dir_tenants_charge_split(&f.d, 99, 0, 0, why, sizeof why), 0);

  /* Moving bob's namespace into alice's subtree brings its 3 blocks. */
  MF_ASSERT_EQ(dir_tenants_charge_move(&f.d, "/t/bob/d", "/t/alice/d", why, sizeof why),
               MAYFLY_EQUOTA);
  /* Within alice's own subtree nothing is added. */
  MF_ASSERT_EQ(dir_tenants_charge_move(&f.d, "/t/alice/a", "/x/a", why, sizeof why), 0);
  teardown(&f);
}

static const mf_test_t tests[] = {
    {"a good tenants file is read whole", test_a_good_file_is_read_whole},
    {"every kind of bad file is refused with a message naming file, section and key",
     test_every_kind_of_bad_file_is_refused_with_a_message},
    {"a missing file is EIO naming it", test_a_missing_file_is_eio_naming_it},
    {"each right follows the prefixes, the session and the reload",
     test_each_right_follows_the_prefixes},
    {"quotas count every namespace under the prefixes", test_quotas_count_every_namespace_under_the_prefixes},
    {NULL, NULL}};

int main(void) {
  return mf_test_run("directory/tenants", NULL, NULL, tests);
}
