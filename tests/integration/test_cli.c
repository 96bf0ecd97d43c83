/*
 * Integration tests of the `mayfly` CLI against a real mayfly-directory.
 *
 * Every test starts its own directory on a free port (tests/integration/
 * harness.c), registers "memory servers" through the same control-API call a
 * real mayfly-memserver makes when the test needs blocks, runs the real CLI
 * binary and checks what a user or a script relies on: exit status, the text
 * on stdout, the "mayfly: <command>: <path>: <reason>" line on stderr, the
 * stable --json field names and their values, and the effect of each command
 * as seen through another command. Daemons die with the test: the harness
 * kills what is still running at exit, and each daemon has PR_SET_PDEATHSIG.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "mf_test.h"

#define BLOCK_SIZE 65536
#define SERVER_BLOCKS 8

static const char *const server_addr[] = {"127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"};

/* --- assertions that report the caller's line --- */

static void check_at(int ok, const char *file, int line, const char *what) {
  CU_assertImplementation(ok ? CU_TRUE : CU_FALSE, (unsigned)line, what, file, "", CU_FALSE);
}

static void expect_str_at(const char *actual, const char *expected, const char *expr,
                          const char *file, int line) {
  int ok = actual != NULL && expected != NULL && strcmp(actual, expected) == 0;
  if (!ok) {
    fprintf(stderr, "  %s:%d: %s == \"%s\", expected \"%s\"\n", file, line, expr,
            actual ? actual : "(null)", expected ? expected : "(null)");
  }
  check_at(ok, file, line, expr);
}
#define EXPECT_STR(actual, expected) expect_str_at((actual), (expected), #actual, __FILE__, __LINE__)

static void expect_contains_at(const char *hay, const char *needle, int want, const char *expr,
                               const char *file, int line) {
  int has = hay != NULL && needle != NULL && strstr(hay, needle) != NULL;
  if (has != want) {
    fprintf(stderr, "  %s:%d: %s %s \"%s\"; it is:\n%s\n", file, line, expr,
            want ? "does not contain" : "contains", needle, hay ? hay : "(null)");
  }
  check_at(has == want, file, line, expr);
}
#define EXPECT_CONTAINS(hay, needle) \
  expect_contains_at((hay), (needle), 1, #hay, __FILE__, __LINE__)

/* --- running the CLI --- */

typedef struct {
  int status; /* exit status, -1 if it could not run or was killed */
  char *out;  /* never NULL after RUN */
  char *err;  /* never NULL after RUN */
} run_t;

static void run_clear(run_t *r) {
  g_free(r->out);
  g_free(r->err);
  r->out = r->err = NULL;
  r->status = -1;
}

static int run_fix(run_t *r) {
  if (r->out == NULL) r->out = g_strdup("");
  if (r->err == NULL) r->err = g_strdup("");
  return r->status;
}

/* Runs `mayfly --directory <d> ARGS...`, replacing what r held. */
#define RUN(r, d, ...) \
  (run_clear(r), (r)->status = mf_cli((d), &(r)->out, &(r)->err, __VA_ARGS__, NULL), run_fix(r))

/* A copy of s for a failure report, with the middle of a long run of text
 * (such as a 4 KiB path) elided. g_free. */
static char *abbrev(const char *s) {
  if (s == NULL) return g_strdup("(null)");
  size_t n = strlen(s);
  if (n <= 400) return g_strdup(s);
  return g_strdup_printf("%.150s[...%zu bytes...]%s", s, n - 300, s + n - 150);
}

static void run_dump(const run_t *r, const char *file, int line, const char *what) {
  char *w = abbrev(what), *o = abbrev(r->out), *e = abbrev(r->err);
  fprintf(stderr, "  %s:%d: %s\n    exit status: %d\n    stdout: %s\n    stderr: %s\n", file,
          line, w, r->status, o, e);
  g_free(w);
  g_free(o);
  g_free(e);
}

static void expect_success_at(const run_t *r, const char *file, int line) {
  if (r->status != 0) run_dump(r, file, line, "expected exit status 0");
  check_at(r->status == 0, file, line, "command succeeds (exit status 0)");
}
#define EXPECT_SUCCESS(r) expect_success_at((r), __FILE__, __LINE__)

static int count_lines(const char *s) {
  int n = 0;
  for (; *s; s++) n += *s == '\n';
  return n;
}

/* The command exited with `status`, printed nothing on stdout and exactly one
 * line on stderr that starts with `prefix` and contains `reason`. */
static void expect_failure_at(const run_t *r, int status, const char *prefix, const char *reason,
                              const char *file, int line) {
  int ok = r->status == status && r->out[0] == '\0' && g_str_has_prefix(r->err, prefix) &&
           strstr(r->err, reason) != NULL && count_lines(r->err) == 1 &&
           g_str_has_suffix(r->err, "\n");
  if (!ok) {
    char *what = g_strdup_printf(
        "expected exit status %d, empty stdout and one stderr line \"%s...\" containing \"%s\"",
        status, prefix, reason);
    run_dump(r, file, line, what);
    g_free(what);
  }
  check_at(ok, file, line, "command fails with the documented status and message");
}
#define EXPECT_FAILURE(r, status, prefix, reason) \
  expect_failure_at((r), (status), (prefix), (reason), __FILE__, __LINE__)

/* Returns the first line of stdout that starts with `start`, or "" (g_free). */
static char *line_starting(const char *text, const char *start) {
  char **lines = g_strsplit(text, "\n", -1);
  char *found = NULL;
  for (char **l = lines; *l != NULL && found == NULL; l++) {
    if (g_str_has_prefix(*l, start)) found = g_strdup(*l);
  }
  g_strfreev(lines);
  return found ? found : g_strdup("");
}

/* --- JSON: json-glib, exactly as a script would read the output --- */

static JsonArray *empty_array(void) {
  static JsonArray *a;
  if (a == NULL) a = json_array_new();
  return a;
}

static JsonObject *empty_object(void) {
  static JsonObject *o;
  if (o == NULL) o = json_object_new();
  return o;
}

/* Parses text whose root must be of type `want`; returns the root node (a
 * copy, json_node_unref) or NULL after reporting why. */
static JsonNode *parse_at(const char *text, JsonNodeType want, const char *file, int line) {
  JsonParser *p = json_parser_new();
  GError *e = NULL;
  JsonNode *root = NULL;
  if (!json_parser_load_from_data(p, text, -1, &e)) {
    fprintf(stderr, "  %s:%d: output is not JSON (%s):\n%s\n", file, line, e->message, text);
    g_error_free(e);
  } else if (json_parser_get_root(p) == NULL ||
             JSON_NODE_TYPE(json_parser_get_root(p)) != want) {
    fprintf(stderr, "  %s:%d: JSON root is not an %s:\n%s\n", file, line,
            want == JSON_NODE_ARRAY ? "array" : "object", text);
  } else {
    root = json_node_copy(json_parser_get_root(p));
  }
  g_object_unref(p);
  check_at(root != NULL, file, line, "--json output parses with json-glib");
  return root;
}

/* Returns the array at the root of text (json_array_unref); an empty array on
 * failure, so the checks that follow fail instead of crashing. */
static JsonArray *parse_array_at(const char *text, const char *file, int line) {
  JsonNode *n = parse_at(text, JSON_NODE_ARRAY, file, line);
  JsonArray *a = n ? json_array_ref(json_node_get_array(n)) : json_array_new();
  if (n) json_node_unref(n);
  return a;
}
#define PARSE_ARRAY(text) parse_array_at((text), __FILE__, __LINE__)

static JsonObject *parse_object_at(const char *text, const char *file, int line) {
  JsonNode *n = parse_at(text, JSON_NODE_OBJECT, file, line);
  JsonObject *o = n ? json_object_ref(json_node_get_object(n)) : json_object_new();
  if (n) json_node_unref(n);
  return o;
}
#define PARSE_OBJECT(text) parse_object_at((text), __FILE__, __LINE__)

static JsonNode *member(JsonObject *o, const char *name, GType type) {
  JsonNode *n = json_object_has_member(o, name) ? json_object_get_member(o, name) : NULL;
  if (n == NULL) {
    fprintf(stderr, "  JSON member \"%s\" is missing\n", name);
    return NULL;
  }
  if (type == G_TYPE_NONE) return n;
  if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != type) {
    fprintf(stderr, "  JSON member \"%s\" is not of type %s\n", name, g_type_name(type));
    return NULL;
  }
  return n;
}

/* The integer member `name`, or G_MININT64 if it is missing or not an integer. */
static gint64 jint(JsonObject *o, const char *name) {
  JsonNode *n = member(o, name, G_TYPE_INT64);
  return n ? json_node_get_int(n) : G_MININT64;
}

/* The string member `name`, or "<missing>". */
static const char *jstr(JsonObject *o, const char *name) {
  JsonNode *n = member(o, name, G_TYPE_STRING);
  return n ? json_node_get_string(n) : "<missing>";
}

/* The boolean member `name` as 0/1, or -1. */
static int jbool(JsonObject *o, const char *name) {
  JsonNode *n = member(o, name, G_TYPE_BOOLEAN);
  return n ? (json_node_get_boolean(n) ? 1 : 0) : -1;
}

/* The array member `name` (borrowed), or an empty array. */
static JsonArray *jarr(JsonObject *o, const char *name) {
  JsonNode *n = member(o, name, G_TYPE_NONE);
  if (n == NULL || !JSON_NODE_HOLDS_ARRAY(n)) {
    if (n != NULL) fprintf(stderr, "  JSON member \"%s\" is not an array\n", name);
    return empty_array();
  }
  return json_node_get_array(n);
}

static gint64 jlen(JsonArray *a) {
  return (gint64)json_array_get_length(a);
}

/* Element i of a as an object (borrowed), or an empty object. */
static JsonObject *jat(JsonArray *a, guint i) {
  if (i >= json_array_get_length(a)) {
    fprintf(stderr, "  JSON array has no element %u\n", i);
    return empty_object();
  }
  JsonNode *n = json_array_get_element(a, i);
  return JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : empty_object();
}

/* The row of a whose string member `key` is `value` (borrowed), or an empty object. */
static JsonObject *row_where(JsonArray *a, const char *key, const char *value) {
  for (guint i = 0; i < json_array_get_length(a); i++) {
    JsonNode *n = json_array_get_element(a, i);
    if (!JSON_NODE_HOLDS_OBJECT(n)) continue;
    JsonObject *o = json_node_get_object(n);
    JsonNode *m = json_object_has_member(o, key) ? json_object_get_member(o, key) : NULL;
    if (m && JSON_NODE_HOLDS_VALUE(m) && json_node_get_value_type(m) == G_TYPE_STRING &&
        strcmp(json_node_get_string(m), value) == 0) {
      return o;
    }
  }
  fprintf(stderr, "  no JSON row with %s = \"%s\"\n", key, value);
  return empty_object();
}

/* Runs `mayfly --json CMD [ARG]`, checks it succeeds and parses its output. */
static JsonArray *json_array_cmd_at(const mf_daemon_t *d, const char *cmd, const char *arg,
                                    const char *file, int line) {
  run_t r = {0};
  RUN(&r, d, "--json", cmd, arg);
  expect_success_at(&r, file, line);
  JsonArray *a = parse_array_at(r.out, file, line);
  run_clear(&r);
  return a;
}

static JsonObject *json_object_cmd_at(const mf_daemon_t *d, const char *cmd, const char *arg,
                                      const char *file, int line) {
  run_t r = {0};
  RUN(&r, d, "--json", cmd, arg);
  expect_success_at(&r, file, line);
  JsonObject *o = parse_object_at(r.out, file, line);
  run_clear(&r);
  return o;
}
/* `mayfly --json servers`: its "servers" array (a reference). */
static JsonArray *servers_json_at(const mf_daemon_t *d, const char *file, int line) {
  JsonObject *o = json_object_cmd_at(d, "servers", NULL, file, line);
  JsonArray *a = json_object_has_member(o, "servers")
                     ? json_array_ref(json_object_get_array_member(o, "servers"))
                     : json_array_new();
  json_object_unref(o);
  return a;
}
#define SERVERS_JSON(d) servers_json_at((d), __FILE__, __LINE__)
#define LEASES_JSON(d, path) json_array_cmd_at((d), "leases", (path), __FILE__, __LINE__)
#define STAT_JSON(d, path) json_object_cmd_at((d), "stat", (path), __FILE__, __LINE__)
#define STATS_JSON(d) json_object_cmd_at((d), "stats", NULL, __FILE__, __LINE__)

/* Sum of blocks_used over every server in `mayfly --json servers`. */
static gint64 blocks_used_at(const mf_daemon_t *d, const char *file, int line) {
  JsonArray *s = servers_json_at(d, file, line);
  gint64 sum = 0;
  for (guint i = 0; i < json_array_get_length(s); i++) sum += jint(jat(s, i), "blocks_used");
  json_array_unref(s);
  return sum;
}
#define BLOCKS_USED(d) blocks_used_at((d), __FILE__, __LINE__)

/* --- directories --- */

/* Starts a directory whose registered servers stay up for the whole test. */
static mf_daemon_t *start_dir(void) {
  mf_daemon_t *d = mf_start_directory("--heartbeat-timeout-ms", "60000", NULL);
  CU_ASSERT_PTR_NOT_NULL(d);
  return d;
}

/* Starts a directory and registers n memory servers (server_addr[0..n-1])
 * with SERVER_BLOCKS blocks of BLOCK_SIZE bytes; their ids go to ids[]. */
static mf_daemon_t *start_dir_with_servers(int n, int *ids) {
  mf_daemon_t *d = start_dir();
  if (d == NULL) return NULL;
  for (int i = 0; i < n; i++) {
    int id = 0;
    MF_ASSERT_EQ(mf_register_blocks(d, server_addr[i], SERVER_BLOCKS, BLOCK_SIZE, &id), 0);
    if (ids != NULL) ids[i] = id;
  }
  return d;
}

/* Checks the directory is still serving after what the test did, then stops it. */
static void finish(mf_daemon_t *d) {
  if (d == NULL) return;
  CU_ASSERT(mf_alive(d));
  run_t r = {0};
  RUN(&r, d, "stats");
  EXPECT_SUCCESS(&r);
  run_clear(&r);
  mf_stop(d);
}

/* A daemon record for running the CLI against an address no daemon owns. */
static mf_daemon_t fake_daemon(const char *address) {
  mf_daemon_t f;
  memset(&f, 0, sizeof f);
  g_strlcpy(f.address, address, sizeof f.address);
  return f;
}

/*
 * Runs mayfly-directory with args (NULL-terminated) and waits up to
 * timeout_ms for it to exit on its own; if it is still running then, it is
 * killed and -1 returned. Otherwise returns the wait status. *output receives
 * what it printed on stdout and stderr (g_free). Nothing is left running.
 */
static int run_directory_to_exit(const char *const *args, int timeout_ms, char **output) {
  char *log = NULL;
  *output = NULL;
  int fd = g_file_open_tmp("mayfly-cli-XXXXXX.log", &log, NULL);
  if (fd < 0) {
    *output = g_strdup("");
    return -1;
  }
  char *bin = g_strdup(mf_bin("directory/mayfly-directory"));
  GPtrArray *argv = g_ptr_array_new();
  g_ptr_array_add(argv, bin);
  for (const char *const *a = args; *a != NULL; a++) g_ptr_array_add(argv, (gpointer)*a);
  g_ptr_array_add(argv, NULL);
  int status = -1;
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
    execv(bin, (char **)argv->pdata);
    _exit(127);
  }
  close(fd);
  if (pid > 0) {
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    for (;;) {
      pid_t w = waitpid(pid, &status, WNOHANG);
      if (w == pid) break;
      if (w < 0 && errno != EINTR) {
        status = -1;
        break;
      }
      if (g_get_monotonic_time() > deadline) {
        fprintf(stderr, "  mayfly-directory still running after %d ms; killing it\n", timeout_ms);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        status = -1;
        break;
      }
      mf_sleep_ms(10);
    }
  }
  if (!g_file_get_contents(log, output, NULL, NULL)) *output = g_strdup("");
  g_unlink(log);
  g_free(log);
  g_ptr_array_free(argv, TRUE);
  g_free(bin);
  return status;
}

/* Starts a directory with NAME=VALUE in its environment (the harness hands
 * the test's environment to the daemon), plus an optional flag and value. */
static mf_daemon_t *start_dir_with_env(const char *name, const char *value, const char *flag,
                                       const char *flag_value) {
  g_setenv(name, value, TRUE);
  mf_daemon_t *d =
      mf_start_directory("--heartbeat-timeout-ms", "60000", flag, flag_value, NULL);
  g_unsetenv(name);
  CU_ASSERT_PTR_NOT_NULL(d);
  return d;
}

/* Writes an INI file; returns its path (g_free; the caller unlinks it). */
static char *write_config(const char *contents) {
  char *path = NULL;
  GError *e = NULL;
  int fd = g_file_open_tmp("mayfly-cli-XXXXXX.ini", &path, &e);
  if (fd < 0) {
    fprintf(stderr, "  cannot create a config file: %s\n", e->message);
    g_error_free(e);
    return NULL;
  }
  close(fd);
  if (!g_file_set_contents(path, contents, -1, NULL)) {
    g_unlink(path);
    g_free(path);
    return NULL;
  }
  return path;
}

static gint64 stats_lease_ms_at(const mf_daemon_t *d, const char *file, int line) {
  if (d == NULL) return G_MININT64;
  JsonObject *o = json_object_cmd_at(d, "stats", NULL, file, line);
  gint64 v = jint(o, "lease_ms");
  json_object_unref(o);
  return v;
}
#define STATS_LEASE_MS(d) stats_lease_ms_at((d), __FILE__, __LINE__)

/* ===================================================================== */
/* Commands round-trip                                                    */
/* ===================================================================== */

static void test_mkdir_creates_a_directory_that_ls_and_stat_show(void) {
  mf_daemon_t *d = start_dir();
  if (d == NULL) return;
  run_t r = {0};

  RUN(&r, d, "mkdir", "/jobs");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "");

  RUN(&r, d, "ls", "/");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "jobs/\n");
  RUN(&r, d, "ls");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "jobs/\n");

  RUN(&r, d, "stat", "/jobs");
  EXPECT_SUCCESS(&r);
  EXPECT_CONTAINS(r.out, "path:            /jobs\n");
  EXPECT_CONTAINS(r.out, "kind:            directory\n");
  EXPECT_CONTAINS(r.out, "children:        0\n");
  EXPECT_CONTAINS(r.out, "pinned:          no\n");

  JsonObject *st = STAT_JSON(d, "/jobs");
  EXPECT_STR(jstr(st, "path"), "/jobs");
  EXPECT_STR(jstr(st, "kind"), "directory");
  MF_ASSERT_EQ(jint(st, "layout_version"), 0);
  MF_ASSERT_EQ(jlen(jarr(st, "partitions")), 0);
  MF_ASSERT_EQ(jint(st, "children"), 0);
  MF_ASSERT_EQ(jint(st, "lease_ms"), 10000);
  MF_ASSERT_EQ(jbool(st, "pinned"), 0);
  /* created_ms is wall-clock milliseconds since the epoch. */
  gint64 now_ms = g_get_real_time() / 1000;
  gint64 created = jint(st, "created_ms");
  CU_ASSERT(created > now_ms - 60000 && created <= now_ms + 1000);
  JsonNode *tags = member(st, "tags", G_TYPE_NONE);
  CU_ASSERT(tags != NULL && JSON_NODE_HOLDS_OBJECT(tags));
  json_object_unref(st);

  /* --json mkdir reports what it created. */
  RUN(&r, d, "--json", "mkdir", "/jobs/j1");
  EXPECT_SUCCESS(&r);
  JsonObject *ok = PARSE_OBJECT(r.out);
  MF_ASSERT_EQ(jbool(ok, "ok"), 1);
  EXPECT_STR(jstr(ok, "created"), "/jobs/j1");
  json_object_unref(ok);
  st = STAT_JSON(d, "/jobs");
  MF_ASSERT_EQ(jint(st, "children"), 1);
  json_object_unref(st);

  run_clear(&r);
  finish(d);
}

static void test_mkdir_needs_the_parent_unless_p_which_also_accepts_an_existing_directory(void) {
  mf_daemon_t *d = start_dir();
  if (d == NULL) return;
  run_t r = {0};

  RUN(&r, d, "mkdir", "/a/b/c");
  EXPECT_FAILURE(&r, 1, "mayfly: mkdir: /a/b/c: ", "parent directory does not exist");
  RUN(&r, d, "ls", "/");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "");

  RUN(&r, d, "mkdir", "-p", "/a/b/c");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "");
  JsonObject *st = STAT_JSON(d, "/a/b/c");
  EXPECT_STR(jstr(st, "kind"), "directory");
  json_object_unref(st);
  st = STAT_JSON(d, "/a/b");
  EXPECT_STR(jstr(st, "kind"), "directory");
  json_object_unref(st);

  RUN(&r, d, "mkdir", "-p", "/a/b/c");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "mkdir", "--parents", "/a/b");
  EXPECT_SUCCESS(&r);

  RUN(&r, d, "mkdir", "/a/b/c");
  EXPECT_FAILURE(&r, 1, "mayfly: mkdir: /a/b/c: ", "already exists");

  run_clear(&r);
  finish(d);
}

static void test_create_makes_a_file_a_queue_and_a_kv_namespace_of_one_block(void) {
  int ids[1];
  mf_daemon_t *d = start_dir_with_servers(1, ids);
  if (d == NULL) return;
  run_t r = {0};
  const char *kinds[] = {"file", "queue", "kv"};

  for (int i = 0; i < 3; i++) {
    char *path = g_strdup_printf("/job/%s-ns", kinds[i]);
    RUN(&r, d, "create", path, "--kind", kinds[i]);
    EXPECT_SUCCESS(&r);
    EXPECT_STR(r.out, "");

    JsonObject *st = STAT_JSON(d, path);
    EXPECT_STR(jstr(st, "path"), path);
    EXPECT_STR(jstr(st, "kind"), kinds[i]);
    MF_ASSERT_EQ(jint(st, "layout_version"), 1);
    JsonArray *parts = jarr(st, "partitions");
    MF_ASSERT_EQ(jlen(parts), 1);
    JsonObject *p = jat(parts, 0);
    EXPECT_STR(jstr(p, "server"), server_addr[0]);
    MF_ASSERT_EQ(jint(p, "server_id"), ids[0]);
    MF_ASSERT_EQ(jint(p, "block_size"), BLOCK_SIZE);
    MF_ASSERT_EQ(jint(p, "range_lo"), 0);
    if (strcmp(kinds[i], "file") == 0) MF_ASSERT_EQ(jint(p, "range_hi"), BLOCK_SIZE);
    if (strcmp(kinds[i], "queue") == 0) MF_ASSERT_EQ(jint(p, "range_hi"), 1);
    if (strcmp(kinds[i], "kv") == 0) CU_ASSERT(jint(p, "range_hi") > 0);
    json_object_unref(st);

    RUN(&r, d, "stat", path);
    EXPECT_SUCCESS(&r);
    char *kind_line = g_strdup_printf("kind:            %s\n", kinds[i]);
    EXPECT_CONTAINS(r.out, kind_line);
    EXPECT_CONTAINS(r.out, "layout version:  1\n");
    EXPECT_CONTAINS(r.out, "blocks:          1 (64KiB)\n");
    EXPECT_CONTAINS(r.out, server_addr[0]);
    g_free(kind_line);
    g_free(path);
  }

  /* The missing parent was created as a directory. */
  JsonObject *st = STAT_JSON(d, "/job");
  EXPECT_STR(jstr(st, "kind"), "directory");
  MF_ASSERT_EQ(jint(st, "children"), 3);
  json_object_unref(st);
  MF_ASSERT_EQ(BLOCKS_USED(d), 3);

  run_clear(&r);
  finish(d);
}

/* Issue 12: --replicas goes through to the directory (R = 1 here: the
 * directory of this build places no chains); a namespace without replicas
 * says so in stat (text and JSON) and keeps its partitions' table, and
 * servers show zone, host and chains columns. */
static void test_create_replicas_1_and_stat_say_r_1_without_a_chain(void) {
  int ids[1];
  mf_daemon_t *d = start_dir_with_servers(1, ids);
  if (d == NULL) return;
  run_t r = {0};
  RUN(&r, d, "create", "/rep/kv", "--kind", "kv", "--replicas", "1", "--blocks", "2");
  EXPECT_SUCCESS(&r);
  JsonObject *st = STAT_JSON(d, "/rep/kv");
  MF_ASSERT_EQ(jint(st, "replicas"), 1);
  JsonArray *parts = jarr(st, "partitions");
  MF_ASSERT_EQ(jlen(parts), 2);
  for (guint i = 0; i < 2; i++) {
    JsonObject *p = jat(parts, i);
    MF_ASSERT_EQ(jint(p, "replicas"), 1);
    EXPECT_STR(jstr(p, "state"), "live"); /* R = 1 keeps its states */
    CU_ASSERT(!json_object_has_member(p, "chain"));
  }
  json_object_unref(st);
  RUN(&r, d, "stat", "/rep/kv");
  EXPECT_SUCCESS(&r);
  EXPECT_CONTAINS(r.out, "replicas:        1\n");
  char *header = line_starting(r.out, "  #");
  EXPECT_CONTAINS(header, "SERVER");
  EXPECT_CONTAINS(header, "GEN");
  g_free(header);

  RUN(&r, d, "create", "/rep/bad", "--kind", "kv", "--replicas", "-2");
  EXPECT_FAILURE(&r, 2, "mayfly: create: ", "--replicas must be positive");

  JsonArray *s = SERVERS_JSON(d);
  JsonObject *row = jat(s, 0);
  MF_ASSERT_EQ(jint(row, "chains"), 0);
  CU_ASSERT(json_object_has_member(row, "zone") && json_object_has_member(row, "host"));
  json_array_unref(s);
  RUN(&r, d, "servers");
  EXPECT_SUCCESS(&r);
  header = line_starting(r.out, "ADDRESS");
  EXPECT_CONTAINS(header, "ZONE");
  EXPECT_CONTAINS(header, "HOST");
  EXPECT_CONTAINS(header, "CHAINS");
  g_free(header);
  run_clear(&r);
  finish(d);
}

static void test_create_blocks_3_spreads_partitions_over_3_servers_and_rm_returns_them(void) {
  int ids[3];
  mf_daemon_t *d = start_dir_with_servers(3, ids);
  if (d == NULL) return;
  run_t r = {0};

  MF_ASSERT_EQ(BLOCKS_USED(d), 0);

  /* create --json prints the new namespace's stat. */
  RUN(&r, d, "--json", "create", "/job/shuffle", "--kind", "kv", "--blocks", "3");
  EXPECT_SUCCESS(&r);
  JsonObject *created = PARSE_OBJECT(r.out);
  EXPECT_STR(jstr(created, "path"), "/job/shuffle");
  MF_ASSERT_EQ(jlen(jarr(created, "partitions")), 3);
  json_object_unref(created);

  JsonObject *st = STAT_JSON(d, "/job/shuffle");
  EXPECT_STR(jstr(st, "kind"), "kv");
  MF_ASSERT_EQ(jint(st, "layout_version"), 1);
  JsonArray *parts = jarr(st, "partitions");
  MF_ASSERT_EQ(jlen(parts), 3);
  int seen[3] = {0, 0, 0};
  gint64 next_lo = 0;
  for (guint i = 0; i < 3; i++) {
    JsonObject *p = jat(parts, i);
    const char *server = jstr(p, "server");
    int which = -1;
    for (int k = 0; k < 3; k++) {
      if (strcmp(server, server_addr[k]) == 0) which = k;
    }
    CU_ASSERT(which >= 0);
    if (which >= 0) {
      seen[which]++;
      MF_ASSERT_EQ(jint(p, "server_id"), ids[which]);
    }
    MF_ASSERT_EQ(jint(p, "block_size"), BLOCK_SIZE);
    CU_ASSERT(jint(p, "generation") >= 1);
    /* Slot ranges are contiguous and start at 0. */
    MF_ASSERT_EQ(jint(p, "range_lo"), next_lo);
    CU_ASSERT(jint(p, "range_hi") > jint(p, "range_lo"));
    next_lo = jint(p, "range_hi");
  }
  MF_ASSERT_EQ(seen[0], 1);
  MF_ASSERT_EQ(seen[1], 1);
  MF_ASSERT_EQ(seen[2], 1);
  json_object_unref(st);

  RUN(&r, d, "stat", "/job/shuffle");
  EXPECT_SUCCESS(&r);
  EXPECT_CONTAINS(r.out, "blocks:          3 (192KiB)\n");
  for (int k = 0; k < 3; k++) EXPECT_CONTAINS(r.out, server_addr[k]);

  JsonArray *servers = SERVERS_JSON(d);
  MF_ASSERT_EQ(jlen(servers), 3);
  for (int k = 0; k < 3; k++) MF_ASSERT_EQ(jint(row_where(servers, "address", server_addr[k]), "blocks_used"), 1);
  json_array_unref(servers);
  JsonObject *stats = STATS_JSON(d);
  MF_ASSERT_EQ(jint(stats, "blocks_used"), 3);
  MF_ASSERT_EQ(jint(stats, "namespaces"), 1);
  json_object_unref(stats);

  /* A file's partitions cover consecutive byte ranges, one block each. */
  RUN(&r, d, "create", "/job/out", "--kind", "file", "--blocks", "2");
  EXPECT_SUCCESS(&r);
  st = STAT_JSON(d, "/job/out");
  parts = jarr(st, "partitions");
  MF_ASSERT_EQ(jlen(parts), 2);
  MF_ASSERT_EQ(jint(jat(parts, 0), "range_lo"), 0);
  MF_ASSERT_EQ(jint(jat(parts, 0), "range_hi"), BLOCK_SIZE);
  MF_ASSERT_EQ(jint(jat(parts, 1), "range_lo"), BLOCK_SIZE);
  MF_ASSERT_EQ(jint(jat(parts, 1), "range_hi"), 2 * BLOCK_SIZE);
  json_object_unref(st);
  MF_ASSERT_EQ(BLOCKS_USED(d), 5);

  RUN(&r, d, "rm", "/job/shuffle");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "");
  MF_ASSERT_EQ(BLOCKS_USED(d), 2);
  RUN(&r, d, "rm", "/job/out");
  EXPECT_SUCCESS(&r);
  MF_ASSERT_EQ(BLOCKS_USED(d), 0);
  stats = STATS_JSON(d);
  MF_ASSERT_EQ(jint(stats, "blocks_used"), 0);
  MF_ASSERT_EQ(jint(stats, "namespaces"), 0);
  json_object_unref(stats);

  run_clear(&r);
  finish(d);
}

static void test_create_records_lease_ms_and_pinned(void) {
  mf_daemon_t *d = start_dir_with_servers(1, NULL);
  if (d == NULL) return;
  run_t r = {0};

  RUN(&r, d, "create", "/l/short", "--kind", "file", "--lease-ms", "5000");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "create", "/l/words", "--kind", "kv", "--lease-ms", "30s");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "create", "/l/pin", "--kind", "queue", "--pinned");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "create", "/l/default", "--kind", "queue");
  EXPECT_SUCCESS(&r);

  /* The directory runs with the default lease (10 s) and grace (10 s). */
  JsonObject *st = STAT_JSON(d, "/l/short");
  MF_ASSERT_EQ(jint(st, "lease_ms"), 5000);
  CU_ASSERT(jint(st, "remaining_ms") > 10000 && jint(st, "remaining_ms") <= 15000);
  MF_ASSERT_EQ(jbool(st, "pinned"), 0);
  json_object_unref(st);

  st = STAT_JSON(d, "/l/words");
  MF_ASSERT_EQ(jint(st, "lease_ms"), 30000);
  json_object_unref(st);

  st = STAT_JSON(d, "/l/pin");
  MF_ASSERT_EQ(jbool(st, "pinned"), 1);
  MF_ASSERT_EQ(jint(st, "remaining_ms"), -1);
  json_object_unref(st);

  st = STAT_JSON(d, "/l/default");
  MF_ASSERT_EQ(jint(st, "lease_ms"), 10000);
  MF_ASSERT_EQ(jbool(st, "pinned"), 0);
  json_object_unref(st);

  JsonArray *leases = LEASES_JSON(d, "/l");
  MF_ASSERT_EQ(jbool(row_where(leases, "path", "/l/pin"), "pinned"), 1);
  MF_ASSERT_EQ(jint(row_where(leases, "path", "/l/short"), "lease_ms"), 5000);
  json_array_unref(leases);

  RUN(&r, d, "stat", "/l/pin");
  EXPECT_SUCCESS(&r);
  EXPECT_CONTAINS(r.out, "pinned:          yes\n");
  RUN(&r, d, "stat", "/l/short");
  EXPECT_SUCCESS(&r);
  EXPECT_CONTAINS(r.out, "lease:           5.0s\n");

  run_clear(&r);
  finish(d);
}

static void test_ls_lists_children_sorted_and_ls_l_shows_kind_blocks_and_lease(void) {
  mf_daemon_t *d = start_dir_with_servers(2, NULL);
  if (d == NULL) return;
  run_t r = {0};

  RUN(&r, d, "mkdir", "/d");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "create", "/d/zeta", "--kind", "kv", "--blocks", "2");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "create", "/d/alpha", "--kind", "file");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "mkdir", "/d/mid");
  EXPECT_SUCCESS(&r);

  RUN(&r, d, "ls", "/d");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "alpha\nmid/\nzeta\n");

  /* A leaf lists itself, like ls(1) on a file. */
  RUN(&r, d, "ls", "/d/zeta");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "zeta\n");

  RUN(&r, d, "ls", "-l", "/d");
  EXPECT_SUCCESS(&r);
  MF_ASSERT_EQ(count_lines(r.out), 4);
  char *header = line_starting(r.out, "KIND");
  EXPECT_CONTAINS(header, "BLOCKS");
  EXPECT_CONTAINS(header, "LEASE");
  EXPECT_CONTAINS(header, "LEFT");
  EXPECT_CONTAINS(header, "PINNED");
  EXPECT_CONTAINS(header, "NAME");
  g_free(header);
  char *zeta = line_starting(r.out, "kv ");
  EXPECT_CONTAINS(zeta, " 2 ");
  EXPECT_CONTAINS(zeta, "10.0s");
  CU_ASSERT(g_str_has_suffix(zeta, "zeta"));
  g_free(zeta);
  char *alpha = line_starting(r.out, "file ");
  EXPECT_CONTAINS(alpha, " 1 ");
  CU_ASSERT(g_str_has_suffix(alpha, "alpha"));
  g_free(alpha);
  char *mid = line_starting(r.out, "directory ");
  CU_ASSERT(g_str_has_suffix(mid, "mid/"));
  g_free(mid);

  RUN(&r, d, "--json", "ls", "/d");
  EXPECT_SUCCESS(&r);
  JsonArray *a = PARSE_ARRAY(r.out);
  MF_ASSERT_EQ(jlen(a), 3);
  EXPECT_STR(jstr(jat(a, 0), "path"), "/d/alpha");
  EXPECT_STR(jstr(jat(a, 1), "path"), "/d/mid");
  EXPECT_STR(jstr(jat(a, 1), "kind"), "directory");
  EXPECT_STR(jstr(jat(a, 2), "path"), "/d/zeta");
  MF_ASSERT_EQ(jlen(jarr(jat(a, 2), "partitions")), 2);
  json_array_unref(a);

  run_clear(&r);
  finish(d);
}

static void test_tree_shows_the_subtree_indented_by_depth(void) {
  mf_daemon_t *d = start_dir_with_servers(1, NULL);
  if (d == NULL) return;
  run_t r = {0};

  RUN(&r, d, "create", "/t/a/x", "--kind", "file");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "mkdir", "/t/b");
  EXPECT_SUCCESS(&r);

  RUN(&r, d, "tree");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "/\n/t/\n  a/\n    x  [file]\n  b/\n");

  RUN(&r, d, "tree", "/t/a");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "/t/a/\n  x  [file]\n");

  RUN(&r, d, "--json", "tree");
  EXPECT_SUCCESS(&r);
  JsonObject *root = PARSE_OBJECT(r.out);
  EXPECT_STR(jstr(root, "path"), "/");
  JsonArray *top = jarr(root, "children");
  MF_ASSERT_EQ(jlen(top), 1);
  JsonObject *t = jat(top, 0);
  EXPECT_STR(jstr(t, "path"), "/t");
  EXPECT_STR(jstr(t, "kind"), "directory");
  JsonArray *tk = jarr(t, "children");
  MF_ASSERT_EQ(jlen(tk), 2);
  EXPECT_STR(jstr(jat(tk, 0), "path"), "/t/a");
  EXPECT_STR(jstr(jat(tk, 1), "path"), "/t/b");
  JsonArray *ak = jarr(jat(tk, 0), "children");
  MF_ASSERT_EQ(jlen(ak), 1);
  EXPECT_STR(jstr(jat(ak, 0), "path"), "/t/a/x");
  EXPECT_STR(jstr(jat(ak, 0), "kind"), "file");
  MF_ASSERT_EQ(jlen(jarr(jat(tk, 1), "children")), 0);
  json_object_unref(root);

  run_clear(&r);
  finish(d);
}

static void test_rm_removes_a_leaf_and_rm_r_a_whole_subtree_returning_its_blocks(void) {
  mf_daemon_t *d = start_dir_with_servers(2, NULL);
  if (d == NULL) return;
  run_t r = {0};

  RUN(&r, d, "create", "/r/stage/ns", "--kind", "kv", "--blocks", "2");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "create", "/r/out", "--kind", "file");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "create", "/keep", "--kind", "queue");
  EXPECT_SUCCESS(&r);
  MF_ASSERT_EQ(BLOCKS_USED(d), 4);

  RUN(&r, d, "--json", "rm", "/r/out");
  EXPECT_SUCCESS(&r);
  JsonObject *ok = PARSE_OBJECT(r.out);
  MF_ASSERT_EQ(jbool(ok, "ok"), 1);
  EXPECT_STR(jstr(ok, "removed"), "/r/out");
  json_object_unref(ok);
  RUN(&r, d, "ls", "/r");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "stage/\n");
  MF_ASSERT_EQ(BLOCKS_USED(d), 3);

  RUN(&r, d, "rm", "-r", "/r");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "");
  RUN(&r, d, "ls", "/");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "keep\n");
  RUN(&r, d, "stat", "/r/stage/ns");
  EXPECT_FAILURE(&r, 1, "mayfly: stat: /r/stage/ns: ", "no such namespace");
  MF_ASSERT_EQ(BLOCKS_USED(d), 1);
  JsonObject *stats = STATS_JSON(d);
  MF_ASSERT_EQ(jint(stats, "namespaces"), 1);
  MF_ASSERT_EQ(jint(stats, "directories"), 0);
  json_object_unref(stats);

  run_clear(&r);
  finish(d);
}

static void test_mv_moves_a_subtree_the_old_path_is_gone_and_the_layout_is_kept(void) {
  mf_daemon_t *d = start_dir_with_servers(2, NULL);
  if (d == NULL) return;
  run_t r = {0};

  RUN(&r, d, "create", "/m/src/ns", "--kind", "kv", "--blocks", "2");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "mkdir", "/dst");
  EXPECT_SUCCESS(&r);
  JsonObject *before = STAT_JSON(d, "/m/src/ns");

  RUN(&r, d, "mv", "/m/src", "/dst/moved");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "");

  RUN(&r, d, "stat", "/m/src");
  EXPECT_FAILURE(&r, 1, "mayfly: stat: /m/src: ", "no such namespace");
  RUN(&r, d, "stat", "/m/src/ns");
  EXPECT_FAILURE(&r, 1, "mayfly: stat: /m/src/ns: ", "no such namespace");
  RUN(&r, d, "ls", "/m");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "");

  JsonObject *after = STAT_JSON(d, "/dst/moved/ns");
  EXPECT_STR(jstr(after, "path"), "/dst/moved/ns");
  EXPECT_STR(jstr(after, "kind"), "kv");
  JsonArray *pb = jarr(before, "partitions"), *pa = jarr(after, "partitions");
  MF_ASSERT_EQ(jlen(pa), 2);
  MF_ASSERT_EQ(jlen(pa), jlen(pb));
  for (guint i = 0; i < json_array_get_length(pa) && i < json_array_get_length(pb); i++) {
    EXPECT_STR(jstr(jat(pa, i), "server"), jstr(jat(pb, i), "server"));
    MF_ASSERT_EQ(jint(jat(pa, i), "block"), jint(jat(pb, i), "block"));
    MF_ASSERT_EQ(jint(jat(pa, i), "generation"), jint(jat(pb, i), "generation"));
  }
  json_object_unref(before);
  json_object_unref(after);
  MF_ASSERT_EQ(BLOCKS_USED(d), 2);

  /* A leaf can be renamed in place too; --json reports the new path. */
  RUN(&r, d, "--json", "mv", "/dst/moved/ns", "/dst/moved/renamed");
  EXPECT_SUCCESS(&r);
  JsonObject *ok = PARSE_OBJECT(r.out);
  MF_ASSERT_EQ(jbool(ok, "ok"), 1);
  EXPECT_STR(jstr(ok, "moved"), "/dst/moved/renamed");
  json_object_unref(ok);
  RUN(&r, d, "ls", "/dst/moved");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "renamed\n");

  run_clear(&r);
  finish(d);
}

static void test_renew_extends_a_path_its_ancestors_and_subtree_and_reports_missing_paths(void) {
  /* Short leases so the time left visibly drops between creation and renewal. */
  mf_daemon_t *d = mf_start_directory("--heartbeat-timeout-ms", "60000", "--lease-ms", "3000",
                                      "--grace-ms", "1000", NULL);
  CU_ASSERT_PTR_NOT_NULL(d);
  if (d == NULL) return;
  run_t r = {0};

  RUN(&r, d, "mkdir", "-p", "/rn/a/leaf");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "mkdir", "/rn/b");
  EXPECT_SUCCESS(&r);
  mf_sleep_ms(1000);

  RUN(&r, d, "renew", "/rn/a");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "");
  EXPECT_STR(r.err, "");

  JsonArray *l = LEASES_JSON(d, "/rn");
  MF_ASSERT_EQ(jlen(l), 4);
  /* Renewed: the path, its ancestor /rn and its subtree (lease 3 s + grace 1 s). */
  const char *renewed[] = {"/rn", "/rn/a", "/rn/a/leaf"};
  for (int i = 0; i < 3; i++) {
    gint64 left = jint(row_where(l, "path", renewed[i]), "remaining_ms");
    if (left <= 3500) fprintf(stderr, "  %s: %lld ms left after renew\n", renewed[i], (long long)left);
    CU_ASSERT(left > 3500 && left <= 4000);
  }
  /* Not renewed: a sibling subtree, a second or more into its 4 s. */
  gint64 b_left = jint(row_where(l, "path", "/rn/b"), "remaining_ms");
  if (b_left > 3050) fprintf(stderr, "  /rn/b: %lld ms left without renew\n", (long long)b_left);
  CU_ASSERT(b_left >= 0 && b_left <= 3050);
  json_array_unref(l);

  /* A missing path is reported on stderr and in the exit status; the others
   * are renewed regardless. */
  mf_sleep_ms(300);
  RUN(&r, d, "renew", "/rn/b", "/nope");
  EXPECT_FAILURE(&r, 1, "mayfly: renew: /nope: ", "no such namespace");
  l = LEASES_JSON(d, "/rn/b");
  MF_ASSERT_EQ(jlen(l), 1);
  CU_ASSERT(jint(jat(l, 0), "remaining_ms") > 3500);
  json_array_unref(l);

  RUN(&r, d, "--json", "renew", "/rn", "/nope", "/gone");
  MF_ASSERT_EQ(r.status, 1);
  JsonObject *o = PARSE_OBJECT(r.out);
  MF_ASSERT_EQ(jint(o, "renewed"), 1);
  JsonArray *missing = jarr(o, "missing");
  MF_ASSERT_EQ(jlen(missing), 2);
  if (jlen(missing) == 2) {
    EXPECT_STR(json_array_get_string_element(missing, 0), "/nope");
    EXPECT_STR(json_array_get_string_element(missing, 1), "/gone");
  }
  json_object_unref(o);

  run_clear(&r);
  finish(d);
}

static void test_a_namespace_that_is_not_renewed_expires_and_its_blocks_return(void) {
  mf_daemon_t *d = mf_start_directory("--heartbeat-timeout-ms", "60000", "--grace-ms", "0",
                                      "--reap-interval-ms", "50", NULL);
  CU_ASSERT_PTR_NOT_NULL(d);
  if (d == NULL) return;
  MF_ASSERT_EQ(mf_register_blocks(d, server_addr[0], SERVER_BLOCKS, BLOCK_SIZE, &(int){0}), 0);
  run_t r = {0};

  RUN(&r, d, "create", "/left", "--kind", "kv", "--lease-ms", "300", "--blocks", "2");
  EXPECT_SUCCESS(&r);
  /* /kept's lease is ten times /left's, so that renewing it through the
   * CLI keeps it alive even when a loaded machine makes each CLI run slow. */
  RUN(&r, d, "create", "/kept", "--kind", "queue", "--lease-ms", "3000");
  EXPECT_SUCCESS(&r);
  MF_ASSERT_EQ(BLOCKS_USED(d), 3);

  /* Keep renewing /kept while /left runs out. */
  int gone = 0;
  for (int waited = 0; waited < 10000 && !gone; waited += 100) {
    mf_sleep_ms(100);
    RUN(&r, d, "renew", "/kept");
    EXPECT_SUCCESS(&r);
    RUN(&r, d, "ls", "/");
    gone = r.status == 0 && strcmp(r.out, "kept\n") == 0;
  }
  EXPECT_STR(r.out, "kept\n");
  RUN(&r, d, "stat", "/left");
  EXPECT_FAILURE(&r, 1, "mayfly: stat: /left: ", "no such namespace");
  MF_ASSERT_EQ(BLOCKS_USED(d), 1);
  JsonObject *o = STATS_JSON(d);
  MF_ASSERT_EQ(jint(o, "namespaces"), 1);
  CU_ASSERT(jint(o, "expired_total") >= 1);
  json_object_unref(o);

  run_clear(&r);
  finish(d);
}

static void test_leases_lists_every_node_under_a_path_in_tree_order_with_time_left(void) {
  mf_daemon_t *d = start_dir_with_servers(1, NULL);
  if (d == NULL) return;
  run_t r = {0};

  RUN(&r, d, "create", "/job/b-ns", "--kind", "kv", "--lease-ms", "4000");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "create", "/job/a-ns", "--kind", "queue", "--pinned");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "mkdir", "/other");
  EXPECT_SUCCESS(&r);

  JsonArray *l = LEASES_JSON(d, "/job");
  MF_ASSERT_EQ(jlen(l), 3);
  EXPECT_STR(jstr(jat(l, 0), "path"), "/job");
  EXPECT_STR(jstr(jat(l, 1), "path"), "/job/a-ns");
  EXPECT_STR(jstr(jat(l, 2), "path"), "/job/b-ns");
  JsonObject *job = jat(l, 0), *a = jat(l, 1), *b = jat(l, 2);
  EXPECT_STR(jstr(job, "kind"), "directory");
  MF_ASSERT_EQ(jint(job, "lease_ms"), 10000);
  CU_ASSERT(jint(job, "remaining_ms") > 15000 && jint(job, "remaining_ms") <= 20000);
  MF_ASSERT_EQ(jbool(job, "pinned"), 0);
  EXPECT_STR(jstr(a, "kind"), "queue");
  MF_ASSERT_EQ(jbool(a, "pinned"), 1);
  MF_ASSERT_EQ(jint(a, "remaining_ms"), -1);
  EXPECT_STR(jstr(b, "kind"), "kv");
  MF_ASSERT_EQ(jint(b, "lease_ms"), 4000);
  CU_ASSERT(jint(b, "remaining_ms") > 10000 && jint(b, "remaining_ms") <= 14000);
  json_array_unref(l);

  /* Without a path: every node, the root first (pinned: it never expires). */
  RUN(&r, d, "--json", "leases");
  EXPECT_SUCCESS(&r);
  l = PARSE_ARRAY(r.out);
  MF_ASSERT_EQ(jlen(l), 5);
  EXPECT_STR(jstr(jat(l, 0), "path"), "/");
  EXPECT_STR(jstr(jat(l, 4), "path"), "/other");
  json_array_unref(l);

  RUN(&r, d, "leases", "/job");
  EXPECT_SUCCESS(&r);
  MF_ASSERT_EQ(count_lines(r.out), 4);
  char *header = line_starting(r.out, "PATH");
  EXPECT_CONTAINS(header, "KIND");
  EXPECT_CONTAINS(header, "LEASE");
  EXPECT_CONTAINS(header, "LEFT");
  EXPECT_CONTAINS(header, "PINNED");
  g_free(header);
  char *pin = line_starting(r.out, "/job/a-ns ");
  EXPECT_CONTAINS(pin, "queue");
  CU_ASSERT(g_str_has_suffix(pin, "yes"));
  g_free(pin);
  char *bl = line_starting(r.out, "/job/b-ns ");
  EXPECT_CONTAINS(bl, "4.0s");
  CU_ASSERT(g_str_has_suffix(bl, "no"));
  g_free(bl);

  run_clear(&r);
  finish(d);
}

/* Regression: `mayfly leases /` had no row for / while `mayfly tree /`
 * showed it. The leases of a subtree start with its root, whatever it is. */
static void test_leases_of_a_subtree_include_its_root_the_tree_root_too(void) {
  mf_daemon_t *d = start_dir_with_servers(1, NULL);
  if (d == NULL) return;
  run_t r = {0};
  RUN(&r, d, "create", "/j/q", "--kind", "queue");
  EXPECT_SUCCESS(&r);

  RUN(&r, d, "leases", "/");
  EXPECT_SUCCESS(&r);
  MF_ASSERT_EQ(count_lines(r.out), 4); /* the heading, /, /j, /j/q */
  char *root = line_starting(r.out, "/ ");
  EXPECT_CONTAINS(root, "directory");
  CU_ASSERT(root != NULL && g_str_has_suffix(root, "yes"));
  g_free(root);

  JsonArray *l = LEASES_JSON(d, "/");
  MF_ASSERT_EQ(jlen(l), 3);
  JsonObject *o = jat(l, 0);
  EXPECT_STR(jstr(o, "path"), "/");
  EXPECT_STR(jstr(o, "kind"), "directory");
  MF_ASSERT_EQ(jbool(o, "pinned"), 1);
  MF_ASSERT_EQ(jint(o, "remaining_ms"), -1);
  json_array_unref(l);

  /* A directory below the root and a leaf: their own row comes first. */
  l = LEASES_JSON(d, "/j");
  MF_ASSERT_EQ(jlen(l), 2);
  EXPECT_STR(jstr(jat(l, 0), "path"), "/j");
  EXPECT_STR(jstr(jat(l, 1), "path"), "/j/q");
  json_array_unref(l);
  l = LEASES_JSON(d, "/j/q");
  MF_ASSERT_EQ(jlen(l), 1);
  EXPECT_STR(jstr(jat(l, 0), "path"), "/j/q");
  EXPECT_STR(jstr(jat(l, 0), "kind"), "queue");
  json_array_unref(l);

  /* The tree shows the root once, as before. */
  RUN(&r, d, "tree", "/");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "/\n/j/\n  q  [queue]\n");

  run_clear(&r);
  finish(d);
}

/* Regression: with one memory server down, `mayfly stat` showed usage
 * unknown for every partition, those on live servers included. */
static void test_stat_with_one_memory_server_down_leaves_only_its_partitions_unknown(void) {
  mf_daemon_t *d = start_dir();
  if (d == NULL) return;
  mf_daemon_t *a = mf_start_memserver(d, 4, "64KiB", NULL);
  mf_daemon_t *b = mf_start_memserver(d, 4, "64KiB", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  run_t r = {0};
  RUN(&r, d, "create", "/kv", "--kind", "kv", "--blocks", "2");
  EXPECT_SUCCESS(&r);
  for (int i = 0; i < 20; i++) {
    char key[16];
    g_snprintf(key, sizeof key, "key-%d", i);
    RUN(&r, d, "put", "/kv", key, "some value");
    EXPECT_SUCCESS(&r);
  }
  JsonObject *st = STAT_JSON(d, "/kv");
  JsonArray *parts = jarr(st, "partitions");
  MF_ASSERT_EQ(jlen(parts), 2);
  /* Both servers answer: every partition and the total are known. */
  CU_ASSERT(json_object_has_member(st, "bytes_used") && jint(st, "bytes_used") > 0);
  for (guint i = 0; i < jlen(parts); i++) {
    CU_ASSERT(json_object_has_member(jat(parts, i), "bytes_used"));
  }
  int on_b = row_where(parts, "server", b->address) != NULL;
  CU_ASSERT(on_b && row_where(parts, "server", a->address) != NULL);
  json_object_unref(st);

  char *b_address = g_strdup(b->address);
  mf_kill(b);
  st = STAT_JSON(d, "/kv");
  parts = jarr(st, "partitions");
  JsonObject *pa = row_where(parts, "server", a->address);
  JsonObject *pb = row_where(parts, "server", b_address);
  CU_ASSERT_FATAL(pa != NULL && pb != NULL);
  CU_ASSERT(json_object_has_member(pa, "bytes_used") && jint(pa, "bytes_used") > 0);
  CU_ASSERT(json_object_has_member(pa, "fill_pct"));
  CU_ASSERT_FALSE(json_object_has_member(pb, "bytes_used"));
  CU_ASSERT_FALSE(json_object_has_member(st, "bytes_used")); /* the total is not known */
  json_object_unref(st);

  RUN(&r, d, "stat", "/kv");
  EXPECT_SUCCESS(&r);
  char *line = line_starting(r.out, "bytes used:");
  EXPECT_CONTAINS(line, "at least ");
  EXPECT_CONTAINS(line, "(1 of 2 partitions unknown)");
  g_free(line);
  /* The live server's row has figures, the dead one's question marks. */
  char *row_b = NULL, *row_a = NULL;
  gchar **lines = g_strsplit(r.out, "\n", -1);
  for (int i = 0; lines[i] != NULL; i++) {
    if (strstr(lines[i], b_address) != NULL) row_b = g_strdup(lines[i]);
    if (strstr(lines[i], a->address) != NULL) row_a = g_strdup(lines[i]);
  }
  g_strfreev(lines);
  EXPECT_CONTAINS(row_b, " ? ");
  CU_ASSERT(row_a != NULL && strstr(row_a, "?") == NULL && strstr(row_a, "%") != NULL);
  g_free(row_a);
  g_free(row_b);
  g_free(b_address);

  run_clear(&r);
  mf_stop(a);
  finish(d);
}

static void test_servers_reports_each_memory_server_with_the_stable_json_fields(void) {
  mf_daemon_t *d = start_dir();
  if (d == NULL) return;
  run_t r = {0};
  int id1 = 0, id2 = 0;
  MF_ASSERT_EQ(mf_register_blocks(d, "127.0.0.1:7001", 8, 65536, &id1), 0);
  MF_ASSERT_EQ(mf_register_blocks(d, "127.0.0.1:7002", 4, 131072, &id2), 0);
  CU_ASSERT(id1 != id2);

  JsonArray *s = SERVERS_JSON(d);
  MF_ASSERT_EQ(jlen(s), 2);
  JsonObject *a = row_where(s, "address", "127.0.0.1:7001");
  MF_ASSERT_EQ(jint(a, "id"), id1);
  EXPECT_STR(jstr(a, "state"), "up");
  MF_ASSERT_EQ(jint(a, "blocks_used"), 0);
  MF_ASSERT_EQ(jint(a, "blocks_total"), 8);
  MF_ASSERT_EQ(jint(a, "block_size"), 65536);
  CU_ASSERT(jint(a, "heartbeat_age_ms") >= 0 && jint(a, "heartbeat_age_ms") < 60000);
  JsonObject *b = row_where(s, "address", "127.0.0.1:7002");
  MF_ASSERT_EQ(jint(b, "id"), id2);
  EXPECT_STR(jstr(b, "state"), "up");
  MF_ASSERT_EQ(jint(b, "blocks_total"), 4);
  MF_ASSERT_EQ(jint(b, "block_size"), 131072);
  CU_ASSERT(jint(b, "heartbeat_age_ms") >= 0 && jint(b, "heartbeat_age_ms") < 60000);
  json_array_unref(s);

  /* The allocator fills the emptier server first: one block each. */
  RUN(&r, d, "create", "/x", "--kind", "kv", "--blocks", "2");
  EXPECT_SUCCESS(&r);
  s = SERVERS_JSON(d);
  MF_ASSERT_EQ(jint(row_where(s, "address", "127.0.0.1:7001"), "blocks_used"), 1);
  MF_ASSERT_EQ(jint(row_where(s, "address", "127.0.0.1:7002"), "blocks_used"), 1);
  json_array_unref(s);

  RUN(&r, d, "servers");
  EXPECT_SUCCESS(&r);
  /* Header and two servers, a blank line, then the directories: a header
   * and this directory alone (role single). */
  MF_ASSERT_EQ(count_lines(r.out), 6);
  char *dirs = line_starting(r.out, "DIRECTORY");
  EXPECT_CONTAINS(dirs, "ROLE");
  g_free(dirs);
  char *self = line_starting(r.out, d->address);
  EXPECT_CONTAINS(self, " single ");
  g_free(self);
  char *header = line_starting(r.out, "ADDRESS");
  EXPECT_CONTAINS(header, "STATE");
  EXPECT_CONTAINS(header, "BLOCKS");
  EXPECT_CONTAINS(header, "BLOCK SIZE");
  EXPECT_CONTAINS(header, "HEARTBEAT");
  g_free(header);
  char *row1 = line_starting(r.out, "127.0.0.1:7001 ");
  EXPECT_CONTAINS(row1, " up ");
  EXPECT_CONTAINS(row1, " 1/8 ");
  EXPECT_CONTAINS(row1, " 64KiB ");
  CU_ASSERT(g_str_has_suffix(row1, " ago"));
  g_free(row1);
  char *row2 = line_starting(r.out, "127.0.0.1:7002 ");
  EXPECT_CONTAINS(row2, " 1/4 ");
  EXPECT_CONTAINS(row2, " 128KiB ");
  g_free(row2);

  run_clear(&r);
  finish(d);
}

static void test_stats_reports_directory_wide_counters(void) {
  mf_daemon_t *d = start_dir_with_servers(2, NULL);
  if (d == NULL) return;
  run_t r = {0};

  RUN(&r, d, "create", "/s/kv", "--kind", "kv", "--blocks", "3");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "create", "/s/q", "--kind", "queue");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "mkdir", "/s/empty");
  EXPECT_SUCCESS(&r);

  JsonObject *o = STATS_JSON(d);
  MF_ASSERT_EQ(jint(o, "nodes"), 4);
  MF_ASSERT_EQ(jint(o, "directories"), 2);
  MF_ASSERT_EQ(jint(o, "namespaces"), 2);
  MF_ASSERT_EQ(jint(o, "servers"), 2);
  MF_ASSERT_EQ(jint(o, "servers_up"), 2);
  MF_ASSERT_EQ(jint(o, "blocks_total"), 2 * SERVER_BLOCKS);
  MF_ASSERT_EQ(jint(o, "blocks_used"), 4);
  MF_ASSERT_EQ(jint(o, "expired_total"), 0);
  CU_ASSERT(jint(o, "uptime_ms") >= 0);
  CU_ASSERT(jint(o, "requests") >= 5);
  CU_ASSERT(jint(o, "connections") >= 1);
  MF_ASSERT_EQ(jint(o, "lease_ms"), 10000);
  MF_ASSERT_EQ(jint(o, "grace_ms"), 10000);
  json_object_unref(o);

  RUN(&r, d, "stats");
  EXPECT_SUCCESS(&r);
  char *line = line_starting(r.out, "blocks_used ");
  CU_ASSERT(g_str_has_suffix(line, " 4"));
  g_free(line);
  line = line_starting(r.out, "lease_ms ");
  CU_ASSERT(g_str_has_suffix(line, " 10000"));
  g_free(line);
  line = line_starting(r.out, "namespaces ");
  CU_ASSERT(g_str_has_suffix(line, " 2"));
  g_free(line);

  run_clear(&r);
  finish(d);
}

/* ===================================================================== */
/* Memory servers: blocks need them                                       */
/* ===================================================================== */

static void test_create_with_no_memory_servers_fails_and_leaves_nothing_behind(void) {
  mf_daemon_t *d = start_dir();
  if (d == NULL) return;
  run_t r = {0};
  const char *kinds[] = {"file", "queue", "kv"};

  for (int i = 0; i < 3; i++) {
    RUN(&r, d, "create", "/job/x", "--kind", kinds[i]);
    EXPECT_FAILURE(&r, 1, "mayfly: create: /job/x: ", "no memory servers registered");
  }
  /* The missing parent was not left behind by the failed create. */
  RUN(&r, d, "ls", "/");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "");
  JsonObject *o = STATS_JSON(d);
  MF_ASSERT_EQ(jint(o, "nodes"), 0);
  json_object_unref(o);

  run_clear(&r);
  finish(d);
}

static void test_a_create_that_does_not_fit_in_the_pool_fails_and_allocates_nothing(void) {
  mf_daemon_t *d = start_dir_with_servers(1, NULL);
  if (d == NULL) return;
  run_t r = {0};

  RUN(&r, d, "create", "/big", "--kind", "kv", "--blocks", "9");
  EXPECT_FAILURE(&r, 1, "mayfly: create: /big: ", "block pool exhausted");
  MF_ASSERT_EQ(BLOCKS_USED(d), 0);
  RUN(&r, d, "stat", "/big");
  EXPECT_FAILURE(&r, 1, "mayfly: stat: /big: ", "no such namespace");

  RUN(&r, d, "create", "/fits", "--kind", "kv", "--blocks", "8");
  EXPECT_SUCCESS(&r);
  MF_ASSERT_EQ(BLOCKS_USED(d), 8);
  RUN(&r, d, "create", "/one-more", "--kind", "file");
  EXPECT_FAILURE(&r, 1, "mayfly: create: /one-more: ", "block pool exhausted");

  run_clear(&r);
  finish(d);
}

static void test_a_server_that_stops_heartbeating_is_marked_down_and_create_says_why(void) {
  mf_daemon_t *d = mf_start_directory("--heartbeat-timeout-ms", "300", NULL);
  CU_ASSERT_PTR_NOT_NULL(d);
  if (d == NULL) return;
  run_t r = {0};
  int id = 0;
  MF_ASSERT_EQ(mf_register_blocks(d, "127.0.0.1:7001", 8, 65536, &id), 0);
  MF_ASSERT_EQ(mf_heartbeat(d, id, NULL), 0);

  JsonArray *s = SERVERS_JSON(d);
  EXPECT_STR(jstr(row_where(s, "address", "127.0.0.1:7001"), "state"), "up");
  json_array_unref(s);

  /* No more heartbeats: within a few timeouts the server is marked down. */
  gint64 age = -1;
  char *last = NULL;
  for (int waited = 0; waited < 5000; waited += 100) {
    mf_sleep_ms(100);
    s = SERVERS_JSON(d);
    JsonObject *row = row_where(s, "address", "127.0.0.1:7001");
    g_free(last);
    last = g_strdup(jstr(row, "state"));
    age = jint(row, "heartbeat_age_ms");
    json_array_unref(s);
    if (strcmp(last, "down") == 0) break;
  }
  EXPECT_STR(last, "down");
  CU_ASSERT(age >= 300);
  g_free(last);

  JsonObject *o = STATS_JSON(d);
  MF_ASSERT_EQ(jint(o, "servers"), 1);
  MF_ASSERT_EQ(jint(o, "servers_up"), 0);
  json_object_unref(o);

  RUN(&r, d, "create", "/late", "--kind", "kv");
  EXPECT_FAILURE(&r, 1, "mayfly: create: /late: ", "no memory server is up");
  RUN(&r, d, "ls", "/");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "");

  /* A heartbeat brings it back, and blocks can be had again. */
  MF_ASSERT_EQ(mf_heartbeat(d, id, NULL), 0);
  RUN(&r, d, "create", "/back", "--kind", "kv");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "ls", "/");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "back\n");

  run_clear(&r);
  finish(d);
}

/* ===================================================================== */
/* Errors                                                                 */
/* ===================================================================== */

static void test_invalid_paths_are_refused_naming_the_path_and_the_rule(void) {
  mf_daemon_t *d = start_dir_with_servers(1, NULL);
  if (d == NULL) return;
  run_t r = {0};

  GString *long_name = g_string_new("/");
  for (int i = 0; i < 256; i++) g_string_append_c(long_name, 'n');
  GString *long_path = g_string_new(NULL);
  while (long_path->len <= 4096) {
    g_string_append_c(long_path, '/');
    for (int i = 0; i < 200; i++) g_string_append_c(long_path, 'p');
  }
  const struct {
    const char *path;
    const char *reason;
  } bad[] = {
      {"relative/path", "path must be absolute"},
      {"/a//b", "empty component"},
      {"/a/../b", "'.' and '..' are not allowed"},
      {"/a/./b", "'.' and '..' are not allowed"},
      {"/a/", "must not end with '/'"},
      {long_name->str, "path component is longer than 255 bytes"},
      {long_path->str, "path is longer than 4096 bytes"},
  };

  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    const char *p = bad[i].path;
    char *prefix;

    prefix = g_strdup_printf("mayfly: stat: %s: ", p);
    RUN(&r, d, "stat", p);
    EXPECT_FAILURE(&r, 1, prefix, bad[i].reason);
    g_free(prefix);

    prefix = g_strdup_printf("mayfly: mkdir: %s: ", p);
    RUN(&r, d, "mkdir", "-p", p);
    EXPECT_FAILURE(&r, 1, prefix, bad[i].reason);
    g_free(prefix);

    prefix = g_strdup_printf("mayfly: create: %s: ", p);
    RUN(&r, d, "create", p, "--kind", "kv");
    EXPECT_FAILURE(&r, 1, prefix, bad[i].reason);
    g_free(prefix);

    prefix = g_strdup_printf("mayfly: rm: %s: ", p);
    RUN(&r, d, "rm", "-r", p);
    EXPECT_FAILURE(&r, 1, prefix, bad[i].reason);
    g_free(prefix);

    prefix = g_strdup_printf("mayfly: ls: %s: ", p);
    RUN(&r, d, "ls", p);
    EXPECT_FAILURE(&r, 1, prefix, bad[i].reason);
    g_free(prefix);
  }

  /* mv names the bad new path. */
  RUN(&r, d, "mkdir", "/ok");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "mv", "/ok", "/x//y");
  EXPECT_FAILURE(&r, 1, "mayfly: mv: ", "/x//y: path has an empty component");
  RUN(&r, d, "mv", "/ok", "relative");
  EXPECT_FAILURE(&r, 1, "mayfly: mv: ", "relative: path must be absolute");

  /* Nothing was created or allocated, and the directory is still serving. */
  RUN(&r, d, "ls", "/");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "ok/\n");
  MF_ASSERT_EQ(BLOCKS_USED(d), 0);

  g_string_free(long_name, TRUE);
  g_string_free(long_path, TRUE);
  run_clear(&r);
  finish(d);
}

static void test_an_error_about_a_long_valid_path_still_carries_its_reason(void) {
  /* Paths may be up to 4096 bytes; the reason must survive a long one. */
  mf_daemon_t *d = start_dir();
  if (d == NULL) return;
  run_t r = {0};
  GString *p = g_string_new(NULL);
  while (p->len < 1000) {
    g_string_append_c(p, '/');
    for (int i = 0; i < 99; i++) g_string_append_c(p, 'q');
  }
  char *prefix = g_strdup_printf("mayfly: stat: %s: ", p->str);
  RUN(&r, d, "stat", p->str);
  EXPECT_FAILURE(&r, 1, prefix, "no such namespace");
  g_free(prefix);

  /* The same path is fine once it exists. */
  RUN(&r, d, "mkdir", "-p", p->str);
  EXPECT_SUCCESS(&r);
  JsonObject *st = STAT_JSON(d, p->str);
  EXPECT_STR(jstr(st, "path"), p->str);
  json_object_unref(st);

  g_string_free(p, TRUE);
  run_clear(&r);
  finish(d);
}

static void test_an_unknown_path_is_no_such_namespace_for_every_command(void) {
  mf_daemon_t *d = start_dir();
  if (d == NULL) return;
  run_t r = {0};

  RUN(&r, d, "stat", "/nope");
  EXPECT_FAILURE(&r, 1, "mayfly: stat: /nope: ", "no such namespace");
  RUN(&r, d, "ls", "/nope");
  EXPECT_FAILURE(&r, 1, "mayfly: ls: /nope: ", "no such namespace");
  RUN(&r, d, "tree", "/nope");
  EXPECT_FAILURE(&r, 1, "mayfly: tree: /nope: ", "no such namespace");
  RUN(&r, d, "leases", "/nope");
  EXPECT_FAILURE(&r, 1, "mayfly: leases: /nope: ", "no such namespace");
  RUN(&r, d, "rm", "/nope");
  EXPECT_FAILURE(&r, 1, "mayfly: rm: /nope: ", "no such namespace");
  RUN(&r, d, "rm", "-r", "/nope");
  EXPECT_FAILURE(&r, 1, "mayfly: rm: /nope: ", "no such namespace");
  RUN(&r, d, "mv", "/nope", "/other");
  EXPECT_FAILURE(&r, 1, "mayfly: mv: /nope: ", "no such namespace");
  RUN(&r, d, "renew", "/nope");
  EXPECT_FAILURE(&r, 1, "mayfly: renew: /nope: ", "no such namespace");
  RUN(&r, d, "stat", "/nope/deeper");
  EXPECT_FAILURE(&r, 1, "mayfly: stat: /nope/deeper: ", "no such namespace");

  /* mv did not create its target. */
  RUN(&r, d, "ls", "/");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "");

  run_clear(&r);
  finish(d);
}

static void test_creating_an_existing_path_fails_and_leaves_the_original_untouched(void) {
  mf_daemon_t *d = start_dir_with_servers(2, NULL);
  if (d == NULL) return;
  run_t r = {0};

  RUN(&r, d, "create", "/dup", "--kind", "kv", "--blocks", "2");
  EXPECT_SUCCESS(&r);
  JsonObject *before = STAT_JSON(d, "/dup");

  RUN(&r, d, "create", "/dup", "--kind", "file");
  EXPECT_FAILURE(&r, 1, "mayfly: create: /dup: ", "already exists");
  RUN(&r, d, "create", "/dup", "--kind", "kv", "--blocks", "2");
  EXPECT_FAILURE(&r, 1, "mayfly: create: /dup: ", "already exists");
  RUN(&r, d, "mkdir", "/dup");
  EXPECT_FAILURE(&r, 1, "mayfly: mkdir: /dup: ", "already exists");
  RUN(&r, d, "mkdir", "-p", "/dup");
  EXPECT_FAILURE(&r, 1, "mayfly: mkdir: /dup: ", "already exists");

  JsonObject *after = STAT_JSON(d, "/dup");
  EXPECT_STR(jstr(after, "kind"), "kv");
  MF_ASSERT_EQ(jint(after, "layout_version"), jint(before, "layout_version"));
  MF_ASSERT_EQ(jlen(jarr(after, "partitions")), 2);
  MF_ASSERT_EQ(jint(after, "created_ms"), jint(before, "created_ms"));
  json_object_unref(before);
  json_object_unref(after);
  MF_ASSERT_EQ(BLOCKS_USED(d), 2);

  /* A directory cannot be replaced by a namespace either. */
  RUN(&r, d, "mkdir", "/dir");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "create", "/dir", "--kind", "queue");
  EXPECT_FAILURE(&r, 1, "mayfly: create: /dir: ", "already exists");
  JsonObject *st = STAT_JSON(d, "/dir");
  EXPECT_STR(jstr(st, "kind"), "directory");
  json_object_unref(st);

  /* A namespace has no children. */
  RUN(&r, d, "create", "/dup/child", "--kind", "kv");
  EXPECT_FAILURE(&r, 1, "mayfly: create: /dup/child: ", "not a directory");
  RUN(&r, d, "mkdir", "/dup/child");
  EXPECT_FAILURE(&r, 1, "mayfly: mkdir: /dup/child: ", "not a directory");
  MF_ASSERT_EQ(BLOCKS_USED(d), 2);

  run_clear(&r);
  finish(d);
}

static void test_rm_of_a_non_empty_directory_without_r_fails_and_removes_nothing(void) {
  mf_daemon_t *d = start_dir_with_servers(1, NULL);
  if (d == NULL) return;
  run_t r = {0};

  RUN(&r, d, "create", "/job/stage/ns", "--kind", "kv");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "rm", "/job");
  EXPECT_FAILURE(&r, 1, "mayfly: rm: /job: ", "not empty");
  RUN(&r, d, "rm", "/job/stage");
  EXPECT_FAILURE(&r, 1, "mayfly: rm: /job/stage: ", "not empty");

  JsonObject *st = STAT_JSON(d, "/job/stage/ns");
  EXPECT_STR(jstr(st, "kind"), "kv");
  json_object_unref(st);
  RUN(&r, d, "ls", "/");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "job/\n");
  MF_ASSERT_EQ(BLOCKS_USED(d), 1);

  /* An empty directory goes without -r; the root never goes. */
  RUN(&r, d, "mkdir", "/empty");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "rm", "/empty");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "rm", "-r", "/");
  EXPECT_FAILURE(&r, 1, "mayfly: rm: /: ", "root");
  RUN(&r, d, "ls", "/");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "job/\n");

  run_clear(&r);
  finish(d);
}

static void test_mv_into_its_own_subtree_or_onto_an_existing_path_is_refused(void) {
  mf_daemon_t *d = start_dir();
  if (d == NULL) return;
  run_t r = {0};

  RUN(&r, d, "mkdir", "-p", "/a/b");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "mkdir", "/c");
  EXPECT_SUCCESS(&r);

  RUN(&r, d, "mv", "/a", "/a/b/inside");
  EXPECT_FAILURE(&r, 1, "mayfly: mv: /a: ", "/a/b/inside lies inside /a");
  RUN(&r, d, "mv", "/a", "/a/inside");
  EXPECT_FAILURE(&r, 1, "mayfly: mv: /a: ", "lies inside /a");
  RUN(&r, d, "mv", "/a", "/c");
  EXPECT_FAILURE(&r, 1, "mayfly: mv: /a: ", "/c already exists");

  RUN(&r, d, "tree");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "/\n/a/\n  b/\n/c/\n");

  run_clear(&r);
  finish(d);
}

static void test_create_with_a_bad_kind_or_flag_is_a_usage_error_and_creates_nothing(void) {
  mf_daemon_t *d = start_dir_with_servers(1, NULL);
  if (d == NULL) return;
  run_t r = {0};

  RUN(&r, d, "create", "/k", "--kind", "blob");
  EXPECT_FAILURE(&r, 2, "mayfly: create: ", "--kind must be file, queue or kv");
  RUN(&r, d, "create", "/k", "--kind", "directory");
  EXPECT_FAILURE(&r, 2, "mayfly: create: ", "--kind must be file, queue or kv");
  RUN(&r, d, "create", "/k");
  EXPECT_FAILURE(&r, 2, "mayfly: create: ", "--kind must be file, queue or kv");
  RUN(&r, d, "create", "/k", "--kind", "kv", "--blocks", "-1");
  EXPECT_FAILURE(&r, 2, "mayfly: create: ", "--blocks");
  RUN(&r, d, "create", "/k", "--kind", "kv", "--lease-ms", "soon");
  EXPECT_FAILURE(&r, 2, "mayfly: create: ", "--lease-ms");
  RUN(&r, d, "create", "/k", "--kind", "kv", "--no-such-flag");
  EXPECT_FAILURE(&r, 2, "mayfly: create: ", "--no-such-flag");
  RUN(&r, d, "frobnicate", "/k");
  EXPECT_FAILURE(&r, 2, "mayfly: ", "unknown command 'frobnicate'");
  RUN(&r, d, "stat");
  EXPECT_FAILURE(&r, 2, "mayfly: stat: ", "missing argument");

  RUN(&r, d, "ls", "/");
  EXPECT_SUCCESS(&r);
  EXPECT_STR(r.out, "");
  MF_ASSERT_EQ(BLOCKS_USED(d), 0);

  run_clear(&r);
  finish(d);
}

static void test_a_create_usage_error_names_the_path_it_was_about(void) {
  /* The documented error line is "mayfly: <command>: <path>: <reason>"; a
   * script creating many namespaces needs to know which one was refused. */
  mf_daemon_t *d = start_dir_with_servers(1, NULL);
  if (d == NULL) return;
  run_t r = {0};

  RUN(&r, d, "create", "/job/k", "--kind", "blob");
  EXPECT_FAILURE(&r, 2, "mayfly: create: /job/k: ", "--kind must be file, queue or kv");
  RUN(&r, d, "create", "/job/k", "--kind", "kv", "--blocks", "-1");
  EXPECT_FAILURE(&r, 2, "mayfly: create: /job/k: ", "--blocks");

  run_clear(&r);
  finish(d);
}

/* ===================================================================== */
/* An unreachable directory                                               */
/* ===================================================================== */

static void test_a_directory_nobody_listens_for_is_reported_within_seconds(void) {
  mf_daemon_t *d = mf_start_directory(NULL, NULL);
  CU_ASSERT_PTR_NOT_NULL(d);
  if (d == NULL) return;
  mf_daemon_t dead = fake_daemon(d->address);
  MF_ASSERT_EQ(mf_stop(d), 0);
  run_t r = {0};

  char *prefix = g_strdup_printf("mayfly: ls: /: cannot connect to %s", dead.address);
  gint64 t0 = g_get_monotonic_time();
  RUN(&r, &dead, "ls", "/");
  gint64 took_ms = (g_get_monotonic_time() - t0) / 1000;
  EXPECT_FAILURE(&r, 1, prefix, "refused");
  if (took_ms >= 5000) fprintf(stderr, "  ls took %lld ms\n", (long long)took_ms);
  CU_ASSERT(took_ms < 5000);
  g_free(prefix);

  t0 = g_get_monotonic_time();
  RUN(&r, &dead, "servers");
  took_ms = (g_get_monotonic_time() - t0) / 1000;
  EXPECT_FAILURE(&r, 1, "mayfly: servers: ", "cannot connect");
  CU_ASSERT(took_ms < 5000);

  run_clear(&r);
}

static void test_a_directory_that_accepts_but_never_answers_times_out(void) {
  /* A listening socket nobody accepts on: the kernel completes the
   * handshake, so the CLI connects and then waits for a reply in vain. */
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CU_ASSERT(fd >= 0);
  if (fd < 0) return;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 16) == 0 &&
           getsockname(fd, (struct sockaddr *)&a, &len) == 0;
  CU_ASSERT(ok);
  if (!ok) {
    close(fd);
    return;
  }
  char address[64];
  g_snprintf(address, sizeof address, "127.0.0.1:%d", ntohs(a.sin_port));
  mf_daemon_t silent = fake_daemon(address);
  run_t r = {0};

  gint64 t0 = g_get_monotonic_time();
  RUN(&r, &silent, "--timeout", "1000", "ls", "/");
  gint64 took_ms = (g_get_monotonic_time() - t0) / 1000;
  EXPECT_FAILURE(&r, 1, "mayfly: ls: /: ", "timed out");
  if (took_ms < 900 || took_ms >= 5000) fprintf(stderr, "  ls took %lld ms\n", (long long)took_ms);
  CU_ASSERT(took_ms >= 900 && took_ms < 5000);

  run_clear(&r);
  close(fd);
}

/* ===================================================================== */
/* Help                                                                   */
/* ===================================================================== */

static void test_help_of_the_cli_and_of_each_command_exits_0_and_lists_the_flags(void) {
  /* --help never contacts the directory. */
  mf_daemon_t none = fake_daemon("127.0.0.1:1");
  run_t r = {0};

  RUN(&r, &none, "--help");
  EXPECT_SUCCESS(&r);
  const char *global[] = {"--directory", "--json", "--timeout", "mkdir", "create", "ls", "tree",
                          "stat", "rm", "mv", "renew", "leases", "servers", "stats", "cluster",
                          "comma-separated list"};
  for (size_t i = 0; i < G_N_ELEMENTS(global); i++) EXPECT_CONTAINS(r.out, global[i]);

  const struct {
    const char *command;
    const char *flags[5];
  } cmds[] = {
      {"mkdir", {"--parents", "-p", NULL}},
      {"create", {"--kind", "--blocks", "--lease-ms", "--pinned", NULL}},
      {"ls", {"--long", "-l", NULL}},
      {"tree", {NULL}},
      {"stat", {NULL}},
      {"rm", {"--recursive", "-r", NULL}},
      {"mv", {NULL}},
      {"renew", {NULL}},
      {"leases", {NULL}},
      {"servers", {NULL}},
      {"stats", {NULL}},
      {"cluster", {"--json", NULL}},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cmds); i++) {
    RUN(&r, &none, cmds[i].command, "--help");
    EXPECT_SUCCESS(&r);
    EXPECT_CONTAINS(r.out, "Usage:");
    EXPECT_CONTAINS(r.out, cmds[i].command);
    for (int f = 0; cmds[i].flags[f] != NULL; f++) EXPECT_CONTAINS(r.out, cmds[i].flags[f]);
  }
  run_clear(&r);
}

static void test_directory_help_lists_its_options(void) {
  const char *args[] = {"--help", NULL};
  char *out = NULL;
  int status = run_directory_to_exit(args, 5000, &out);
  CU_ASSERT(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  const char *opts[] = {"--host", "--port", "--lease-ms", "--grace-ms", "--config", "--log-level",
                        "--heartbeat-timeout-ms"};
  for (size_t i = 0; i < G_N_ELEMENTS(opts); i++) EXPECT_CONTAINS(out, opts[i]);
  g_free(out);
}

/* ===================================================================== */
/* Directory configuration                                                */
/* ===================================================================== */

static void test_mayfly_lease_ms_in_the_environment_sets_the_default_lease(void) {
  mf_daemon_t *d = start_dir_with_env("MAYFLY_LEASE_MS", "1234", NULL, NULL);
  if (d == NULL) return;
  run_t r = {0};
  MF_ASSERT_EQ(STATS_LEASE_MS(d), 1234);
  RUN(&r, d, "mkdir", "/e");
  EXPECT_SUCCESS(&r);
  JsonArray *l = LEASES_JSON(d, "/e");
  MF_ASSERT_EQ(jint(jat(l, 0), "lease_ms"), 1234);
  json_array_unref(l);
  run_clear(&r);
  finish(d);
}

static void test_a_config_file_lease_ms_is_honoured(void) {
  char *ini = write_config("[directory]\nlease-ms=2345\ngrace-ms=3456\n");
  CU_ASSERT_PTR_NOT_NULL(ini);
  if (ini == NULL) return;
  mf_daemon_t *d = mf_start_directory("--config", ini, NULL);
  CU_ASSERT_PTR_NOT_NULL(d);
  if (d != NULL) {
    JsonObject *o = STATS_JSON(d);
    MF_ASSERT_EQ(jint(o, "lease_ms"), 2345);
    MF_ASSERT_EQ(jint(o, "grace_ms"), 3456);
    json_object_unref(o);
    finish(d);
  }
  /* MAYFLY_CONFIG names the file too. */
  d = start_dir_with_env("MAYFLY_CONFIG", ini, NULL, NULL);
  if (d != NULL) {
    MF_ASSERT_EQ(STATS_LEASE_MS(d), 2345);
    finish(d);
  }
  g_unlink(ini);
  g_free(ini);
}

static void test_flags_override_the_environment_which_overrides_the_config_file(void) {
  char *ini = write_config("[directory]\nlease-ms=2345\n");
  CU_ASSERT_PTR_NOT_NULL(ini);
  if (ini == NULL) return;

  mf_daemon_t *d = start_dir_with_env("MAYFLY_LEASE_MS", "1234", "--lease-ms", "999");
  if (d != NULL) {
    MF_ASSERT_EQ(STATS_LEASE_MS(d), 999);
    finish(d);
  }
  d = start_dir_with_env("MAYFLY_LEASE_MS", "1234", "--config", ini);
  if (d != NULL) {
    MF_ASSERT_EQ(STATS_LEASE_MS(d), 1234);
    finish(d);
  }
  d = mf_start_directory("--config", ini, "--lease-ms", "777", NULL);
  CU_ASSERT_PTR_NOT_NULL(d);
  if (d != NULL) {
    MF_ASSERT_EQ(STATS_LEASE_MS(d), 777);
    finish(d);
  }
  g_unlink(ini);
  g_free(ini);
}

static void test_an_unknown_key_in_the_config_file_stops_the_directory_with_a_message(void) {
  char *ini = write_config("[directory]\nleas-ms=5000\n");
  CU_ASSERT_PTR_NOT_NULL(ini);
  if (ini == NULL) return;
  const char *args[] = {"--host", "127.0.0.1", "--port", "0", "--config", ini, NULL};
  char *out = NULL;
  int status = run_directory_to_exit(args, 5000, &out);
  CU_ASSERT(status != -1);
  CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) != 0);
  EXPECT_CONTAINS(out, "mayfly-directory: ");
  EXPECT_CONTAINS(out, "unknown key 'leas-ms'");
  EXPECT_CONTAINS(out, ini);
  g_free(out);
  g_unlink(ini);
  g_free(ini);

  /* A value out of range is refused the same way, naming the option. */
  ini = write_config("[directory]\nlease-ms=0\n");
  CU_ASSERT_PTR_NOT_NULL(ini);
  if (ini == NULL) return;
  const char *args2[] = {"--host", "127.0.0.1", "--port", "0", "--config", ini, NULL};
  status = run_directory_to_exit(args2, 5000, &out);
  CU_ASSERT(status != -1);
  CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) != 0);
  EXPECT_CONTAINS(out, "--lease-ms");
  EXPECT_CONTAINS(out, "out of range");
  g_free(out);
  g_unlink(ini);
  g_free(ini);
}

/* ===================================================================== */
/* Shutdown                                                               */
/* ===================================================================== */

static void test_sigterm_shuts_the_directory_down_cleanly_even_with_a_client_connected(void) {
  mf_daemon_t *d = start_dir_with_servers(2, NULL);
  if (d == NULL) return;
  run_t r = {0};
  RUN(&r, d, "create", "/job/kv", "--kind", "kv", "--blocks", "3");
  EXPECT_SUCCESS(&r);
  RUN(&r, d, "create", "/job/q", "--kind", "queue", "--pinned");
  EXPECT_SUCCESS(&r);

  /* An idle client connection, as a function holding libmayfly open has. */
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)d->port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CU_ASSERT(fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0);

  mf_daemon_t gone = fake_daemon(d->address);
  gint64 t0 = g_get_monotonic_time();
  int status = mf_stop(d);
  gint64 took_ms = (g_get_monotonic_time() - t0) / 1000;
  CU_ASSERT(WIFEXITED(status));
  MF_ASSERT_EQ(status, 0);
  CU_ASSERT(took_ms < 5000);

  /* It no longer serves. */
  RUN(&r, &gone, "ls", "/");
  EXPECT_FAILURE(&r, 1, "mayfly: ls: /: ", "cannot connect");
  if (fd >= 0) close(fd);
  run_clear(&r);
}

/* The test defines the daemons' environment: drop MAYFLY_* settings that
 * happen to be set where the tests run (except the harness's own). */
static void clear_mayfly_environment(void) {
  char **names = g_listenv();
  for (char **n = names; *n != NULL; n++) {
    if (g_str_has_prefix(*n, "MAYFLY_") && strcmp(*n, "MAYFLY_BIN_DIR") != 0 &&
        strcmp(*n, "MAYFLY_KEEP_LOGS") != 0) {
      g_unsetenv(*n);
    }
  }
  g_strfreev(names);
}

int main(void) {
  clear_mayfly_environment();
  static const mf_test_t tests[] = {
      {"mkdir creates a directory that ls and stat show",
       test_mkdir_creates_a_directory_that_ls_and_stat_show},
      {"mkdir needs the parent unless -p, which also accepts an existing directory",
       test_mkdir_needs_the_parent_unless_p_which_also_accepts_an_existing_directory},
      {"create makes a file, a queue and a kv namespace of one block",
       test_create_makes_a_file_a_queue_and_a_kv_namespace_of_one_block},
      {"create --replicas 1 and stat say R = 1 without a chain",
       test_create_replicas_1_and_stat_say_r_1_without_a_chain},
      {"create --blocks 3 spreads partitions over 3 servers and rm returns them",
       test_create_blocks_3_spreads_partitions_over_3_servers_and_rm_returns_them},
      {"create records --lease-ms and --pinned", test_create_records_lease_ms_and_pinned},
      {"ls lists children sorted; ls -l shows kind, blocks and lease",
       test_ls_lists_children_sorted_and_ls_l_shows_kind_blocks_and_lease},
      {"tree shows the subtree indented by depth", test_tree_shows_the_subtree_indented_by_depth},
      {"rm removes a leaf and rm -r a whole subtree, returning its blocks",
       test_rm_removes_a_leaf_and_rm_r_a_whole_subtree_returning_its_blocks},
      {"mv moves a subtree: the old path is gone and the layout is kept",
       test_mv_moves_a_subtree_the_old_path_is_gone_and_the_layout_is_kept},
      {"renew extends a path, its ancestors and subtree, and reports missing paths",
       test_renew_extends_a_path_its_ancestors_and_subtree_and_reports_missing_paths},
      {"a namespace that is not renewed expires and its blocks return",
       test_a_namespace_that_is_not_renewed_expires_and_its_blocks_return},
      {"leases lists every node under a path in tree order with time left",
       test_leases_lists_every_node_under_a_path_in_tree_order_with_time_left},
      {"leases of a subtree include its root, the tree's root too",
       test_leases_of_a_subtree_include_its_root_the_tree_root_too},
      {"stat with one memory server down leaves only its partitions unknown",
       test_stat_with_one_memory_server_down_leaves_only_its_partitions_unknown},
      {"servers reports each memory server with the stable JSON fields",
       test_servers_reports_each_memory_server_with_the_stable_json_fields},
      {"stats reports directory-wide counters", test_stats_reports_directory_wide_counters},
      {"create with no memory servers fails and leaves nothing behind",
       test_create_with_no_memory_servers_fails_and_leaves_nothing_behind},
      {"a create that does not fit in the pool fails and allocates nothing",
       test_a_create_that_does_not_fit_in_the_pool_fails_and_allocates_nothing},
      {"a server that stops heartbeating is marked down and create says why",
       test_a_server_that_stops_heartbeating_is_marked_down_and_create_says_why},
      {"invalid paths are refused naming the path and the rule",
       test_invalid_paths_are_refused_naming_the_path_and_the_rule},
      {"an error about a long valid path still carries its reason",
       test_an_error_about_a_long_valid_path_still_carries_its_reason},
      {"an unknown path is 'no such namespace' for every command",
       test_an_unknown_path_is_no_such_namespace_for_every_command},
      {"creating an existing path fails and leaves the original untouched",
       test_creating_an_existing_path_fails_and_leaves_the_original_untouched},
      {"rm of a non-empty directory without -r fails and removes nothing",
       test_rm_of_a_non_empty_directory_without_r_fails_and_removes_nothing},
      {"mv into its own subtree or onto an existing path is refused",
       test_mv_into_its_own_subtree_or_onto_an_existing_path_is_refused},
      {"create with a bad --kind or flag is a usage error and creates nothing",
       test_create_with_a_bad_kind_or_flag_is_a_usage_error_and_creates_nothing},
      {"a create usage error names the path it was about",
       test_a_create_usage_error_names_the_path_it_was_about},
      {"a directory nobody listens for is reported within seconds",
       test_a_directory_nobody_listens_for_is_reported_within_seconds},
      {"a directory that accepts but never answers times out",
       test_a_directory_that_accepts_but_never_answers_times_out},
      {"--help of the CLI and of each command exits 0 and lists the flags",
       test_help_of_the_cli_and_of_each_command_exits_0_and_lists_the_flags},
      {"mayfly-directory --help lists its options", test_directory_help_lists_its_options},
      {"MAYFLY_LEASE_MS in the environment sets the default lease",
       test_mayfly_lease_ms_in_the_environment_sets_the_default_lease},
      {"a config file's lease-ms is honoured", test_a_config_file_lease_ms_is_honoured},
      {"flags override the environment, which overrides the config file",
       test_flags_override_the_environment_which_overrides_the_config_file},
      {"an unknown key in the config file stops the directory with a message",
       test_an_unknown_key_in_the_config_file_stops_the_directory_with_a_message},
      {"SIGTERM shuts the directory down cleanly, even with a client connected",
       test_sigterm_shuts_the_directory_down_cleanly_even_with_a_client_connected},
      {NULL, NULL}};
  return mf_test_run("mayfly CLI", NULL, NULL, tests);
}
