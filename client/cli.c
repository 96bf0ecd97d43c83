/*
 * mayfly: the admin and scripting CLI, built on libmayfly.
 *
 *   mayfly [--directory HOST:PORT[,HOST:PORT...]] [--token TOKEN] [--json] [--timeout MS]
 *          COMMAND [ARGS...]
 *
 * Human-readable aligned tables by default; --json prints JSON (json-glib)
 * whose field names are documented in the README and kept stable. Errors go
 * to stderr as "mayfly: <command>: <path>: <reason>" with exit status 1
 * (2 for usage errors).
 */
#include <glib.h>
#include <json-glib/json-glib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/mayfly.h"
#include "common/config.h"

typedef struct {
  const char *directory;
  const char *token; /* NULL: libmayfly takes $MAYFLY_TOKEN */
  int json;
  int timeout_ms;
  mayfly_client_t *client;
  const char *command;
} cli_t;

typedef struct {
  const char *name;
  const char *args;
  const char *summary;
  int (*run)(cli_t *cli, int argc, char **argv);
} command_t;

/* Reports a failed call as "mayfly: <command>: <path>: <reason>". The
 * directory's messages already start with the path. */
static int report(cli_t *cli, const char *path, int rc) {
  const char *msg = mayfly_last_error();
  if (msg[0] == '\0') msg = mayfly_strerror(rc);
  size_t pl = path ? strlen(path) : 0;
  if (path != NULL && strncmp(msg, path, pl) == 0 && msg[pl] == ':') {
    fprintf(stderr, "mayfly: %s: %s\n", cli->command, msg);
  } else if (path != NULL) {
    fprintf(stderr, "mayfly: %s: %s: %s\n", cli->command, path, msg);
  } else {
    fprintf(stderr, "mayfly: %s: %s\n", cli->command, msg);
  }
  return 1;
}

static int usage_error(cli_t *cli, const char *msg) {
  fprintf(stderr, "mayfly: %s: %s (see mayfly %s --help)\n", cli->command, msg, cli->command);
  return 2;
}

/* A usage error about one path: "mayfly: <command>: <path>: <reason>". */
static int usage_error_path(cli_t *cli, const char *path, const char *msg) {
  fprintf(stderr, "mayfly: %s: %s: %s (see mayfly %s --help)\n", cli->command, path, msg,
          cli->command);
  return 2;
}

static int connect_client(cli_t *cli, const char *path) {
  mayfly_options_t o = {
      .timeout_ms = cli->timeout_ms, .connect_timeout_ms = 2000, .token = cli->token};
  int rc = mayfly_connect(cli->directory, &o, &cli->client);
  return rc == 0 ? 0 : report(cli, path, rc);
}

/* Parses a command's flags; prints its --help. Returns 0, or the exit code. */
static int parse_flags(cli_t *cli, const char *args, const char *summary, GOptionEntry *entries,
                       int *argc, char ***argv, int min_args, int max_args) {
  char *param = g_strdup_printf("%s %s", cli->command, args);
  GOptionContext *ctx = g_option_context_new(param);
  g_option_context_set_summary(ctx, summary);
  if (entries != NULL) g_option_context_add_main_entries(ctx, entries, NULL);
  GError *err = NULL;
  int rc = 0;
  if (!g_option_context_parse(ctx, argc, argv, &err)) {
    rc = usage_error(cli, err->message);
    g_error_free(err);
  } else if (*argc - 1 < min_args || (max_args >= 0 && *argc - 1 > max_args)) {
    rc = usage_error(cli, *argc - 1 < min_args ? "missing argument" : "too many arguments");
  }
  g_option_context_free(ctx);
  g_free(param);
  return rc;
}

/* --- output helpers --- */

/* One member of the JSON object being built. */
static void json_int(JsonBuilder *b, const char *name, gint64 v) {
  json_builder_set_member_name(b, name);
  json_builder_add_int_value(b, v);
}

static void json_str(JsonBuilder *b, const char *name, const char *v) {
  json_builder_set_member_name(b, name);
  json_builder_add_string_value(b, v);
}

static void json_bool(JsonBuilder *b, const char *name, gboolean v) {
  json_builder_set_member_name(b, name);
  json_builder_add_boolean_value(b, v);
}

static void print_json(JsonBuilder *b) {
  JsonGenerator *gen = json_generator_new();
  JsonNode *root = json_builder_get_root(b);
  json_generator_set_root(gen, root);
  json_generator_set_pretty(gen, TRUE);
  char *s = json_generator_to_data(gen, NULL);
  printf("%s\n", s);
  g_free(s);
  json_node_unref(root);
  g_object_unref(gen);
  g_object_unref(b);
}

/* An aligned table: rows of g_strdup'd cells; the last column is not padded. */
typedef struct {
  GPtrArray *rows;
  guint ncols;
} table_t;

static void table_init(table_t *t, guint ncols, ...) {
  t->rows = g_ptr_array_new_with_free_func((GDestroyNotify)g_strfreev);
  t->ncols = ncols;
  char **hdr = g_new0(char *, ncols + 1);
  va_list ap;
  va_start(ap, ncols);
  for (guint i = 0; i < ncols; i++) hdr[i] = g_strdup(va_arg(ap, const char *));
  va_end(ap);
  g_ptr_array_add(t->rows, hdr);
}

/* Adds a row; takes ownership of the g_strdup'd / g_strdup_printf'd cells. */
static void table_row(table_t *t, ...) {
  char **row = g_new0(char *, t->ncols + 1);
  va_list ap;
  va_start(ap, t);
  for (guint i = 0; i < t->ncols; i++) row[i] = va_arg(ap, char *);
  va_end(ap);
  g_ptr_array_add(t->rows, row);
}

static void table_print(table_t *t) {
  size_t *w = g_new0(size_t, t->ncols);
  for (guint r = 0; r < t->rows->len; r++) {
    char **row = g_ptr_array_index(t->rows, r);
    for (guint i = 0; i < t->ncols; i++) w[i] = MAX(w[i], strlen(row[i]));
  }
  for (guint r = 0; r < t->rows->len; r++) {
    char **row = g_ptr_array_index(t->rows, r);
    for (guint i = 0; i < t->ncols; i++) {
      if (i + 1 < t->ncols) {
        printf("%-*s  ", (int)w[i], row[i]);
      } else {
        printf("%s\n", row[i]);
      }
    }
  }
  g_free(w);
  g_ptr_array_free(t->rows, TRUE);
}

static char *fmt_ms(int64_t ms) {
  if (ms < 0) return g_strdup("-");
  if (ms < 1000) return g_strdup_printf("%lldms", (long long)ms);
  if (ms < 600000) return g_strdup_printf("%.1fs", ms / 1000.0);
  if (ms < 7200000) return g_strdup_printf("%.1fm", ms / 60000.0);
  return g_strdup_printf("%.1fh", ms / 3600000.0);
}

static char *fmt_size(int64_t b) {
  if (b >= (1LL << 30) && b % (1LL << 30) == 0) return g_strdup_printf("%lldGiB", (long long)(b >> 30));
  if (b >= (1LL << 20) && b % (1LL << 20) == 0) return g_strdup_printf("%lldMiB", (long long)(b >> 20));
  if (b >= (1LL << 10) && b % (1LL << 10) == 0) return g_strdup_printf("%lldKiB", (long long)(b >> 10));
  return g_strdup_printf("%lldB", (long long)b);
}

/* How many partitions of st are lost (their memory server restarted). */
static size_t lost_parts(const mayfly_stat_t *st) {
  size_t n = 0;
  for (size_t i = 0; i < st->npartitions; i++) n += st->partitions[i].lost != 0;
  return n;
}

/* The namespace's R: its partitions' (1 for a namespace without replicas,
 * or one with no partition). */
static int replicas_of(const mayfly_stat_t *st) {
  int r = 1;
  for (size_t i = 0; i < st->npartitions; i++) r = MAX(r, st->partitions[i].replicas);
  return r;
}

/* A chain as "server:block" per member, head first, and the members'
 * addresses in the same order (both g_strdup'd). */
static void fmt_chain(const mayfly_partition_t *p, char **chain, char **addresses) {
  GString *c = g_string_new(NULL), *a = g_string_new(NULL);
  for (size_t k = 0; k < p->nchain; k++) {
    const mayfly_replica_t *m = &p->chain[k];
    g_string_append_printf(c, "%s%d:%d", k > 0 ? " " : "", m->server_id, m->block_index);
    g_string_append_printf(a, "%s%s", k > 0 ? " " : "", m->server_address);
  }
  if (p->nchain == 0) g_string_append(c, "-");
  *chain = g_string_free(c, FALSE);
  *addresses = g_string_free(a, FALSE);
}

/* use (may be NULL) adds each partition's bytes_used where its server
 * answered (bytes_used >= 0), and their total when every live partition's
 * server did (lost partitions hold nothing and count for nothing). */
static void json_stat(JsonBuilder *b, const mayfly_stat_t *st, const mayfly_usage_t *use) {
  json_builder_begin_object(b);
  json_str(b, "path", st->path);
  json_str(b, "kind", mayfly_kind_name(st->kind));
  json_int(b, "created_ms", st->created_ms);
  json_int(b, "lease_ms", st->lease_ms);
  json_int(b, "remaining_ms", st->remaining_ms);
  json_bool(b, "pinned", st->pinned);
  json_int(b, "children", st->children);
  json_int(b, "layout_version", st->layout_version);
  json_int(b, "max_blocks", st->max_blocks);
  if (st->kind == MAYFLY_KIND_KV) {
    json_int(b, "high_watermark", st->high_watermark);
    json_int(b, "low_watermark", st->low_watermark);
  }
  json_builder_set_member_name(b, "partitions");
  json_builder_begin_array(b);
  for (size_t i = 0; i < st->npartitions; i++) {
    const mayfly_partition_t *p = &st->partitions[i];
    json_builder_begin_object(b);
    json_int(b, "server_id", p->server_id);
    json_str(b, "server", p->server_address);
    json_int(b, "block", p->block_index);
    json_int(b, "generation", p->generation);
    json_int(b, "block_size", p->block_size);
    json_int(b, "range_lo", p->range_lo);
    json_int(b, "range_hi", p->range_hi);
    /* R = 1 keeps its two states; a chain says how it is. */
    json_str(b, "state", p->nchain > 0 || p->replicas > 1 ? p->state : p->lost ? "lost" : "live");
    json_int(b, "replicas", p->replicas);
    if (p->nchain > 0) {
      json_int(b, "chain_version", p->chain_version);
      json_builder_set_member_name(b, "chain");
      json_builder_begin_array(b);
      for (size_t k = 0; k < p->nchain; k++) {
        const mayfly_replica_t *m = &p->chain[k];
        json_builder_begin_object(b);
        json_int(b, "server_id", m->server_id);
        json_str(b, "server", m->server_address);
        json_int(b, "block", m->block_index);
        json_int(b, "generation", m->generation);
        json_str(b, "zone", m->zone);
        json_builder_end_object(b);
      }
      json_builder_end_array(b);
    }
    if (use != NULL && !p->lost && use[i].bytes_used >= 0) {
      json_int(b, "bytes_used", use[i].bytes_used);
      json_int(b, "fill_pct", p->block_size > 0 ? use[i].bytes_used * 100 / p->block_size : 0);
    }
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  if (use != NULL) {
    int64_t total = 0;
    size_t unknown = 0;
    for (size_t i = 0; i < st->npartitions; i++) {
      if (st->partitions[i].lost) continue;
      if (use[i].bytes_used >= 0) {
        total += use[i].bytes_used;
      } else {
        unknown++;
      }
    }
    if (unknown == 0) json_int(b, "bytes_used", total);
  }
  if (st->kind != MAYFLY_KIND_DIRECTORY) {
    json_int(b, "lost_partitions", lost_parts(st));
    json_int(b, "replicas", replicas_of(st));
  }
  json_builder_set_member_name(b, "tags");
  json_builder_begin_object(b);
  for (size_t i = 0; i < st->ntags; i++) {
    json_str(b, st->tag_keys[i], st->tag_values[i]);
  }
  json_builder_end_object(b);
  json_builder_end_object(b);
}

static int print_ok(cli_t *cli, const char *what, const char *path) {
  if (cli->json) {
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_bool(b, "ok", TRUE);
    json_str(b, what, path);
    json_builder_end_object(b);
    print_json(b);
  }
  return 0;
}

/* --- commands --- */

static int cmd_mkdir(cli_t *cli, int argc, char **argv) {
  gboolean parents = FALSE;
  GOptionEntry e[] = {{"parents", 'p', 0, G_OPTION_ARG_NONE, &parents,
                       "Create missing parents; an existing directory is not an error", NULL},
                      {NULL}};
  int rc = parse_flags(cli, "PATH", "Create a directory.", e, &argc, &argv, 1, 1);
  if (rc != 0 || (rc = connect_client(cli, argv[1])) != 0) return rc;
  rc = mayfly_mkdir(cli->client, argv[1], parents);
  return rc != 0 ? report(cli, argv[1], rc) : print_ok(cli, "created", argv[1]);
}

/* The partitions table of a namespace without replicas. */
static void print_parts(const mayfly_stat_t *st, const mayfly_usage_t *use) {
  table_t t;
  table_init(&t, 9, "  #", "SERVER", "BLOCK", "GEN", "SIZE", "USED", "FILL",
             st->kind == MAYFLY_KIND_KV      ? "SLOTS"
             : st->kind == MAYFLY_KIND_FILE ? "BYTES"
                                            : "SEGMENT",
             "STATE");
  for (size_t i = 0; i < st->npartitions; i++) {
    const mayfly_partition_t *p = &st->partitions[i];
    table_row(&t, g_strdup_printf("  %zu", i), g_strdup(p->server_address),
              g_strdup_printf("%d", p->block_index), g_strdup_printf("%lld", (long long)p->generation),
              fmt_size(p->block_size),
              p->lost                  ? g_strdup("-")
              : use[i].bytes_used >= 0 ? g_strdup_printf("%lld", (long long)use[i].bytes_used)
                                       : g_strdup("?"),
              !p->lost && use[i].bytes_used >= 0 && p->block_size > 0
                  ? g_strdup_printf("%.0f%%", 100.0 * (double)use[i].bytes_used /
                                                  (double)p->block_size)
                  : g_strdup(p->lost ? "-" : "?"),
              st->kind == MAYFLY_KIND_QUEUE
                  ? g_strdup_printf("%lld", (long long)p->range_lo)
                  : g_strdup_printf("[%lld, %lld)", (long long)p->range_lo, (long long)p->range_hi),
              g_strdup(p->lost ? "lost" : "live"));
  }
  table_print(&t);
}

/* The partitions table of a replicated namespace: each partition's chain
 * (server:block per member, head first), its state and R, and the members'
 * addresses. */
static void print_chains(const mayfly_stat_t *st, const mayfly_usage_t *use) {
  table_t t;
  table_init(&t, 9, "  #", "CHAIN", "R", "STATE", "SIZE", "USED", "FILL",
             st->kind == MAYFLY_KIND_KV     ? "SLOTS"
             : st->kind == MAYFLY_KIND_FILE ? "BYTES"
                                            : "SEGMENT",
             "ADDRESSES");
  for (size_t i = 0; i < st->npartitions; i++) {
    const mayfly_partition_t *p = &st->partitions[i];
    char *chain, *addresses;
    fmt_chain(p, &chain, &addresses);
    int known = !p->lost && use[i].bytes_used >= 0;
    table_row(&t, g_strdup_printf("  %zu", i), chain,
              g_strdup_printf("%d/%d", (int)p->nchain, p->replicas), g_strdup(p->state),
              fmt_size(p->block_size),
              known ? g_strdup_printf("%lld", (long long)use[i].bytes_used) : g_strdup(p->lost ? "-" : "?"),
              known && p->block_size > 0
                  ? g_strdup_printf("%.0f%%", 100.0 * (double)use[i].bytes_used / (double)p->block_size)
                  : g_strdup(p->lost ? "-" : "?"),
              st->kind == MAYFLY_KIND_QUEUE
                  ? g_strdup_printf("%lld", (long long)p->range_lo)
                  : g_strdup_printf("[%lld, %lld)", (long long)p->range_lo, (long long)p->range_hi),
              addresses);
  }
  table_print(&t);
}

static void print_stat(cli_t *cli, const mayfly_stat_t *st) {
  if (cli->json) {
    JsonBuilder *b = json_builder_new();
    mayfly_usage_t *use = g_new0(mayfly_usage_t, st->npartitions + 1);
    /* Each partition on its own: a server that is down leaves only its
     * partitions unknown. */
    int have_use = st->kind != MAYFLY_KIND_DIRECTORY && cli->client != NULL;
    if (have_use) mayfly_usage(cli->client, st, use);
    json_stat(b, st, have_use ? use : NULL);
    g_free(use);
    print_json(b);
    return;
  }
  char *lease = fmt_ms(st->lease_ms), *left = fmt_ms(st->remaining_ms);
  GDateTime *dt = g_date_time_new_from_unix_utc(st->created_ms / 1000);
  char *created = dt ? g_date_time_format_iso8601(dt) : g_strdup("?");
  printf("path:            %s\nkind:            %s\ncreated:         %s\n"
         "lease:           %s\ntime left:       %s\npinned:          %s\n",
         st->path, mayfly_kind_name(st->kind), created, lease, st->pinned ? "-" : left,
         st->pinned ? "yes" : "no");
  if (st->kind == MAYFLY_KIND_DIRECTORY) printf("children:        %d\n", st->children);
  for (size_t i = 0; i < st->ntags; i++) {
    printf("tag:             %s=%s\n", st->tag_keys[i], st->tag_values[i]);
  }
  if (st->kind != MAYFLY_KIND_DIRECTORY) {
    int64_t bytes = 0;
    for (size_t i = 0; i < st->npartitions; i++) bytes += st->partitions[i].block_size;
    char *cap = fmt_size(bytes);
    mayfly_usage_t *use = g_new0(mayfly_usage_t, st->npartitions + 1);
    for (size_t i = 0; i < st->npartitions; i++) use[i].bytes_used = -1;
    if (cli->client != NULL) mayfly_usage(cli->client, st, use);
    int64_t used = 0;
    size_t unknown = 0, live = st->npartitions - lost_parts(st);
    for (size_t i = 0; i < st->npartitions; i++) {
      if (st->partitions[i].lost) continue;
      if (use[i].bytes_used >= 0) {
        used += use[i].bytes_used;
      } else {
        unknown++;
      }
    }
    char *u = unknown == 0 ? g_strdup_printf("%lld", (long long)used)
              : unknown == live
                  ? g_strdup("unknown")
                  : g_strdup_printf("at least %lld (%zu of %zu partitions unknown)",
                                    (long long)used, unknown, st->npartitions);
    printf("layout version:  %lld\nblocks:          %zu (%s)\nbytes used:      %s\n",
           (long long)st->layout_version, st->npartitions, cap, u);
    if (st->max_blocks > 0) printf("max blocks:      %d\n", st->max_blocks);
    int replicas = replicas_of(st);
    printf("replicas:        %d\n", replicas);
    size_t nlost = lost_parts(st);
    if (nlost > 0) {
      printf("state:           lost (%zu of %zu partitions: a memory server restarted and "
             "their data is gone; remove the namespace to free them)\n",
             nlost, st->npartitions);
    }
    if (st->kind == MAYFLY_KIND_KV) {
      printf("watermarks:      split above %d%%, merge under %d%%\n", st->high_watermark,
             st->low_watermark);
    }
    printf("partitions:\n");
    g_free(u);
    g_free(cap);
    if (replicas > 1) {
      print_chains(st, use);
    } else {
      print_parts(st, use);
    }
    g_free(use);
  }
  if (dt) g_date_time_unref(dt);
  g_free(created);
  g_free(lease);
  g_free(left);
}

static int cmd_create(cli_t *cli, int argc, char **argv) {
  char *kind = NULL, *lease = NULL;
  gint blocks = 0, max_blocks = 0, high_wm = 0, low_wm = 0, replicas = 0;
  gboolean pinned = FALSE;
  GOptionEntry e[] = {
      {"kind", 'k', 0, G_OPTION_ARG_STRING, &kind, "file, queue or kv (required)", "KIND"},
      {"blocks", 'b', 0, G_OPTION_ARG_INT, &blocks, "Initial blocks (default 1)", "N"},
      {"lease-ms", 'l', 0, G_OPTION_ARG_STRING, &lease,
       "Lease duration (default: the directory's)", "DURATION"},
      {"pinned", 0, 0, G_OPTION_ARG_NONE, &pinned, "Never expire", NULL},
      {"max-blocks", 0, 0, G_OPTION_ARG_INT, &max_blocks,
       "Most blocks the namespace may grow to (default: no limit)", "N"},
      {"high-watermark", 0, 0, G_OPTION_ARG_INT, &high_wm,
       "kv: split a partition fuller than this % of its block (default 90)", "PCT"},
      {"low-watermark", 0, 0, G_OPTION_ARG_INT, &low_wm,
       "kv: merge neighbours together under this % (default 25)", "PCT"},
      {"replicas", 'r', 0, G_OPTION_ARG_INT, &replicas,
       "Blocks per partition, on distinct hosts (default: the directory's --replicas)", "R"},
      {NULL}};
  int rc = parse_flags(cli, "PATH --kind file|queue|kv",
                       "Create a data namespace (missing parent directories are created).", e,
                       &argc, &argv, 1, 1);
  mayfly_create_options_t o = {.blocks = blocks,
                               .pinned = pinned,
                               .max_blocks = max_blocks,
                               .high_watermark = high_wm,
                               .low_watermark = low_wm,
                               .replicas = replicas};
  mayfly_kind_t k;
  if (rc == 0 && (kind == NULL || mayfly_kind_parse(kind, &k) != 0 || k == MAYFLY_KIND_DIRECTORY)) {
    rc = usage_error_path(cli, argv[1], "--kind must be file, queue or kv");
  }
  if (rc == 0 && blocks < 0) rc = usage_error_path(cli, argv[1], "--blocks must be positive");
  if (rc == 0 && max_blocks < 0) {
    rc = usage_error_path(cli, argv[1], "--max-blocks must be positive");
  }
  if (rc == 0 && replicas < 0) rc = usage_error_path(cli, argv[1], "--replicas must be positive");
  if (rc == 0 && (high_wm < 0 || high_wm > 100 || low_wm < 0 || low_wm > 100)) {
    rc = usage_error_path(cli, argv[1], "watermarks are percentages from 1 to 100");
  }
  if (rc == 0 && lease != NULL && mf_parse_duration_ms(lease, &o.lease_ms) != 0) {
    rc = usage_error_path(cli, argv[1], "--lease-ms takes a duration such as 5000, 500ms or 30s");
  }
  g_free(kind);
  g_free(lease);
  if (rc != 0 || (rc = connect_client(cli, argv[1])) != 0) return rc;
  mayfly_stat_t *st = NULL;
  rc = mayfly_create(cli->client, argv[1], k, &o, &st);
  if (rc != 0) return report(cli, argv[1], rc);
  if (cli->json) print_stat(cli, st);
  mayfly_stat_free(st);
  return 0;
}

static int cmd_ls(cli_t *cli, int argc, char **argv) {
  gboolean lng = FALSE;
  GOptionEntry e[] = {
      {"long", 'l', 0, G_OPTION_ARG_NONE, &lng, "Kind, blocks, lease and time left", NULL},
      {NULL}};
  int rc = parse_flags(cli, "[PATH]", "List a directory (default /).", e, &argc, &argv, 0, 1);
  const char *path = argc > 1 ? argv[1] : "/";
  if (rc != 0 || (rc = connect_client(cli, path)) != 0) return rc;
  mayfly_stat_t **list = NULL;
  size_t n = 0;
  rc = mayfly_list(cli->client, path, &list, &n);
  if (rc != 0) return report(cli, path, rc);
  if (cli->json) {
    JsonBuilder *b = json_builder_new();
    json_builder_begin_array(b);
    for (size_t i = 0; i < n; i++) json_stat(b, list[i], NULL);
    json_builder_end_array(b);
    print_json(b);
  } else if (lng) {
    table_t t;
    table_init(&t, 6, "KIND", "BLOCKS", "LEASE", "LEFT", "PINNED", "NAME");
    for (size_t i = 0; i < n; i++) {
      const mayfly_stat_t *st = list[i];
      const char *name = strrchr(st->path, '/') + 1;
      table_row(&t, g_strdup(mayfly_kind_name(st->kind)),
                st->kind == MAYFLY_KIND_DIRECTORY ? g_strdup("-")
                                                  : g_strdup_printf("%zu", st->npartitions),
                fmt_ms(st->lease_ms), fmt_ms(st->remaining_ms),
                g_strdup(st->pinned ? "yes" : "no"),
                st->kind == MAYFLY_KIND_DIRECTORY ? g_strdup_printf("%s/", name) : g_strdup(name));
    }
    table_print(&t);
  } else {
    for (size_t i = 0; i < n; i++) {
      const char *name = strrchr(list[i]->path, '/') + 1;
      printf("%s%s\n", name, list[i]->kind == MAYFLY_KIND_DIRECTORY ? "/" : "");
    }
  }
  mayfly_stat_list_free(list, n);
  return 0;
}

static int depth_of(const char *path) {
  int d = 0;
  for (const char *p = path; *p; p++) d += *p == '/';
  return strcmp(path, "/") == 0 ? 0 : d;
}

static int cmd_tree(cli_t *cli, int argc, char **argv) {
  int rc = parse_flags(cli, "[PATH]", "Show a subtree (default /).", NULL, &argc, &argv, 0, 1);
  const char *path = argc > 1 ? argv[1] : "/";
  if (rc != 0 || (rc = connect_client(cli, path)) != 0) return rc;
  /* One call: the lease listing holds every node of the subtree in tree order. */
  mayfly_lease_t *l = NULL;
  size_t n = 0;
  rc = mayfly_leases(cli->client, path, &l, &n);
  if (rc != 0) return report(cli, path, rc);
  int base = depth_of(path);
  /* The listing starts with the subtree's root; the tree's root "/" is
   * printed as the heading, its children at depth 0. */
  size_t from = n > 0 && strcmp(l[0].path, "/") == 0 ? 1 : 0;
  if (cli->json) {
    /* Nested objects: {"path", "kind", "children": [...]}. */
    JsonBuilder *b = json_builder_new();
    int open = 0;
    if (strcmp(path, "/") == 0 || n == 0 || strcmp(l[0].path, path) != 0) {
      json_builder_begin_object(b);
      json_str(b, "path", path);
      json_str(b, "kind", "directory");
      json_builder_set_member_name(b, "children");
      json_builder_begin_array(b);
      open = 1;
      base++;
    }
    int depth = base - 1;
    for (size_t i = from; i < n; i++) {
      int d = depth_of(l[i].path);
      for (; depth >= d; depth--) {
        json_builder_end_array(b);
        json_builder_end_object(b);
      }
      json_builder_begin_object(b);
      json_str(b, "path", l[i].path);
      json_str(b, "kind", mayfly_kind_name(l[i].kind));
      json_builder_set_member_name(b, "children");
      json_builder_begin_array(b);
      depth = d;
    }
    for (; depth >= base; depth--) {
      json_builder_end_array(b);
      json_builder_end_object(b);
    }
    if (open) {
      json_builder_end_array(b);
      json_builder_end_object(b);
    }
    print_json(b);
  } else {
    if (from == 1 || n == 0 || strcmp(l[0].path, path) != 0) {
      printf("%s\n", path);
      base++;
    }
    for (size_t i = from; i < n; i++) {
      int d = depth_of(l[i].path) - base;
      const char *name = d == 0 ? l[i].path : strrchr(l[i].path, '/') + 1;
      printf("%*s%s%s", 2 * d, "", name, l[i].kind == MAYFLY_KIND_DIRECTORY ? "/" : "");
      if (l[i].kind != MAYFLY_KIND_DIRECTORY) printf("  [%s]", mayfly_kind_name(l[i].kind));
      printf("\n");
    }
  }
  mayfly_leases_free(l, n);
  return 0;
}

static int cmd_stat(cli_t *cli, int argc, char **argv) {
  int rc = parse_flags(cli, "PATH", "Describe a node: kind, lease, layout.", NULL, &argc, &argv,
                       1, 1);
  if (rc != 0 || (rc = connect_client(cli, argv[1])) != 0) return rc;
  mayfly_stat_t *st = NULL;
  rc = mayfly_stat(cli->client, argv[1], &st);
  if (rc != 0) return report(cli, argv[1], rc);
  print_stat(cli, st);
  mayfly_stat_free(st);
  return 0;
}

static int cmd_rm(cli_t *cli, int argc, char **argv) {
  gboolean recursive = FALSE;
  GOptionEntry e[] = {{"recursive", 'r', 0, G_OPTION_ARG_NONE, &recursive,
                       "Remove a directory and everything under it", NULL},
                      {NULL}};
  int rc = parse_flags(cli, "PATH", "Remove a node; its blocks return to the pool.", e, &argc,
                       &argv, 1, 1);
  if (rc != 0 || (rc = connect_client(cli, argv[1])) != 0) return rc;
  rc = mayfly_remove(cli->client, argv[1], recursive);
  return rc != 0 ? report(cli, argv[1], rc) : print_ok(cli, "removed", argv[1]);
}

static int cmd_mv(cli_t *cli, int argc, char **argv) {
  int rc = parse_flags(cli, "OLD NEW", "Move a node and its subtree.", NULL, &argc, &argv, 2, 2);
  if (rc != 0 || (rc = connect_client(cli, argv[1])) != 0) return rc;
  rc = mayfly_rename(cli->client, argv[1], argv[2]);
  return rc != 0 ? report(cli, argv[1], rc) : print_ok(cli, "moved", argv[2]);
}

static int cmd_renew(cli_t *cli, int argc, char **argv) {
  int rc = parse_flags(cli, "PATH...", "Renew leases: each path, its ancestors and its subtree.",
                       NULL, &argc, &argv, 1, -1);
  if (rc != 0 || (rc = connect_client(cli, argv[1])) != 0) return rc;
  char **missing = NULL;
  size_t nmissing = 0;
  int64_t lease = 0;
  rc = mayfly_renew(cli->client, (const char *const *)argv + 1, (size_t)argc - 1, &lease,
                    &missing, &nmissing);
  if (rc != 0) return report(cli, argv[1], rc);
  for (size_t i = 0; i < nmissing; i++) {
    fprintf(stderr, "mayfly: renew: %s: %s\n", missing[i], mayfly_strerror(MAYFLY_ENOENT));
  }
  if (cli->json) {
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_int(b, "renewed", (gint64)((size_t)argc - 1 - nmissing));
    json_builder_set_member_name(b, "missing");
    json_builder_begin_array(b);
    for (size_t i = 0; i < nmissing; i++) json_builder_add_string_value(b, missing[i]);
    json_builder_end_array(b);
    json_builder_end_object(b);
    print_json(b);
  }
  mayfly_strv_free(missing, nmissing);
  return nmissing > 0 ? 1 : 0;
}

static int cmd_leases(cli_t *cli, int argc, char **argv) {
  int rc = parse_flags(cli, "[PATH]", "One row per node at or under PATH (default /).", NULL,
                       &argc, &argv, 0, 1);
  const char *path = argc > 1 ? argv[1] : "/";
  if (rc != 0 || (rc = connect_client(cli, path)) != 0) return rc;
  mayfly_lease_t *l = NULL;
  size_t n = 0;
  rc = mayfly_leases(cli->client, path, &l, &n);
  if (rc != 0) return report(cli, path, rc);
  if (cli->json) {
    JsonBuilder *b = json_builder_new();
    json_builder_begin_array(b);
    for (size_t i = 0; i < n; i++) {
      json_builder_begin_object(b);
      json_str(b, "path", l[i].path);
      json_str(b, "kind", mayfly_kind_name(l[i].kind));
      json_int(b, "lease_ms", l[i].lease_ms);
      json_int(b, "remaining_ms", l[i].remaining_ms);
      json_bool(b, "pinned", l[i].pinned);
      json_builder_end_object(b);
    }
    json_builder_end_array(b);
    print_json(b);
  } else {
    table_t t;
    table_init(&t, 5, "PATH", "KIND", "LEASE", "LEFT", "PINNED");
    for (size_t i = 0; i < n; i++) {
      table_row(&t, g_strdup(l[i].path), g_strdup(mayfly_kind_name(l[i].kind)),
                fmt_ms(l[i].lease_ms), fmt_ms(l[i].remaining_ms),
                g_strdup(l[i].pinned ? "yes" : "no"));
    }
    table_print(&t);
  }
  mayfly_leases_free(l, n);
  return 0;
}

/* The directory service's members as a JSON array (the value of a member
 * being built). now_ms: the wall clock their report ages are taken from. */
static void json_members(JsonBuilder *b, const mayfly_cluster_t *ci, int64_t now_ms) {
  json_builder_begin_array(b);
  for (size_t i = 0; i < ci->nmembers; i++) {
    const mayfly_dir_member_t *m = &ci->members[i];
    json_builder_begin_object(b);
    json_str(b, "address", m->address);
    json_str(b, "role", m->role);
    json_int(b, "applied_seq", m->applied_seq);
    json_int(b, "lag", ci->committed_seq - m->applied_seq);
    json_int(b, "updated_ms", m->updated_ms);
    json_int(b, "age_ms", m->updated_ms > 0 ? MAX(now_ms - m->updated_ms, 0) : -1);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
}

/* The directory service's members as a table: one row each, with its role,
 * how far it applied the log and how old that report is. */
static void print_members(const mayfly_cluster_t *ci, int64_t now_ms) {
  table_t t;
  table_init(&t, 5, "DIRECTORY", "ROLE", "APPLIED", "LAG", "REPORTED");
  for (size_t i = 0; i < ci->nmembers; i++) {
    const mayfly_dir_member_t *m = &ci->members[i];
    char *age = fmt_ms(m->updated_ms > 0 ? MAX(now_ms - m->updated_ms, 0) : -1);
    table_row(&t, g_strdup(m->address[0] != '\0' ? m->address : "-"), g_strdup(m->role),
              g_strdup_printf("%lld", (long long)m->applied_seq),
              g_strdup_printf("%lld", (long long)(ci->committed_seq - m->applied_seq)),
              m->updated_ms > 0 ? g_strdup_printf("%s ago", age) : g_strdup("-"));
    g_free(age);
  }
  table_print(&t);
}

/* The directories section of servers and stats: the members of the
 * directory service (nothing when the directory cannot say), as the JSON
 * member `name` of the object b builds, or as a table (b NULL). */
static void directories_section(cli_t *cli, JsonBuilder *b, const char *name) {
  mayfly_cluster_t ci = {0};
  if (mayfly_cluster(cli->client, &ci) != 0) return;
  int64_t now = mf_wall_ms();
  if (b != NULL) {
    json_builder_set_member_name(b, name);
    json_members(b, &ci, now);
  } else {
    printf("\n");
    print_members(&ci, now);
  }
  mayfly_cluster_clear(&ci);
}

static int cmd_servers(cli_t *cli, int argc, char **argv) {
  int rc = parse_flags(cli, "",
                       "One row per registered memory server, then one per directory of the "
                       "directory service with its role. With --json, an object: \"servers\" "
                       "and \"directories\", arrays of those rows.",
                       NULL, &argc, &argv, 0, 0);
  if (rc != 0 || (rc = connect_client(cli, NULL)) != 0) return rc;
  mayfly_server_t *s = NULL;
  size_t n = 0;
  rc = mayfly_servers(cli->client, &s, &n);
  if (rc != 0) return report(cli, NULL, rc);
  if (cli->json) {
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "servers");
    json_builder_begin_array(b);
    for (size_t i = 0; i < n; i++) {
      json_builder_begin_object(b);
      json_int(b, "id", s[i].id);
      json_str(b, "address", s[i].address);
      json_str(b, "state", s[i].up ? "up" : "down");
      json_int(b, "blocks_used", s[i].blocks_used);
      json_int(b, "blocks_total", s[i].blocks_total);
      json_int(b, "block_size", s[i].block_size);
      json_int(b, "heartbeat_age_ms", s[i].heartbeat_age_ms);
      json_int(b, "blocks_lost", s[i].blocks_lost);
      json_str(b, "zone", s[i].zone);
      json_str(b, "host", s[i].host);
      json_int(b, "chains", s[i].chains);
      json_builder_end_object(b);
    }
    json_builder_end_array(b);
    directories_section(cli, b, "directories");
    json_builder_end_object(b);
    print_json(b);
  } else {
    table_t t;
    table_init(&t, 9, "ADDRESS", "STATE", "BLOCKS", "LOST", "BLOCK SIZE", "ZONE", "HOST",
               "CHAINS", "HEARTBEAT");
    for (size_t i = 0; i < n; i++) {
      char *age = fmt_ms(s[i].heartbeat_age_ms);
      table_row(&t, g_strdup(s[i].address), g_strdup(s[i].up ? "up" : "down"),
                g_strdup_printf("%d/%d", s[i].blocks_used, s[i].blocks_total),
                g_strdup_printf("%d", s[i].blocks_lost), fmt_size(s[i].block_size),
                g_strdup(s[i].zone[0] != '\0' ? s[i].zone : "-"),
                g_strdup(s[i].host[0] != '\0' ? s[i].host : "-"),
                g_strdup_printf("%d", s[i].chains), g_strdup_printf("%s ago", age));
      g_free(age);
    }
    table_print(&t);
    directories_section(cli, NULL, NULL);
  }
  mayfly_servers_free(s, n);
  return 0;
}

static int cmd_cluster(cli_t *cli, int argc, char **argv) {
  gboolean json = FALSE;
  GOptionEntry e[] = {{"json", 'j', 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL}, {NULL}};
  int rc = parse_flags(cli, "",
                       "The directory service: its name, etcd endpoints, leader and term, the "
                       "log's committed and snapshot positions, log transactions and records "
                       "per transaction, then one row per directory (address, role, applied "
                       "seq, lag behind the committed seq, age of its report). Any directory "
                       "answers, leader or not.",
                       e, &argc, &argv, 0, 0);
  if (rc != 0 || (rc = connect_client(cli, NULL)) != 0) return rc;
  if (json) cli->json = 1;
  mayfly_cluster_t ci = {0};
  rc = mayfly_cluster(cli->client, &ci);
  if (rc != 0) return report(cli, NULL, rc);
  int64_t now = mf_wall_ms();
  double per_txn = ci.txns > 0 ? (double)ci.txn_records / (double)ci.txns : 0.0;
  if (cli->json) {
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_str(b, "name", ci.name);
    json_str(b, "etcd", ci.etcd);
    json_str(b, "leader", ci.leader);
    json_str(b, "answered_by", ci.answered_by);
    json_int(b, "term", ci.term);
    json_int(b, "committed_seq", ci.committed_seq);
    json_int(b, "snapshot_seq", ci.snapshot_seq);
    json_int(b, "txns", ci.txns);
    json_int(b, "txn_records", ci.txn_records);
    json_builder_set_member_name(b, "records_per_txn");
    json_builder_add_double_value(b, per_txn);
    json_builder_set_member_name(b, "members");
    json_members(b, &ci, now);
    json_builder_end_object(b);
    print_json(b);
  } else {
    printf("%-16s %s\n", "name", ci.name[0] != '\0' ? ci.name : "-");
    printf("%-16s %s\n", "etcd", ci.etcd[0] != '\0' ? ci.etcd : "- (no etcd)");
    printf("%-16s %s\n", "leader", ci.leader[0] != '\0' ? ci.leader : "- (none known)");
    printf("%-16s %s\n", "answered by", ci.answered_by[0] != '\0' ? ci.answered_by : "-");
    printf("%-16s %lld\n", "term", (long long)ci.term);
    printf("%-16s %lld\n", "committed seq", (long long)ci.committed_seq);
    printf("%-16s %lld\n", "snapshot seq", (long long)ci.snapshot_seq);
    printf("%-16s %lld\n", "txns", (long long)ci.txns);
    printf("%-16s %.1f\n", "records/txn", per_txn);
    printf("\n");
    print_members(&ci, now);
  }
  mayfly_cluster_clear(&ci);
  return 0;
}

static void json_strv(JsonBuilder *b, const char *name, char **v, size_t n) {
  json_builder_set_member_name(b, name);
  json_builder_begin_array(b);
  for (size_t i = 0; i < n; i++) json_builder_add_string_value(b, v[i]);
  json_builder_end_array(b);
}

/* The tenants as a JSON array (the value of a member being built). */
static void json_tenants(JsonBuilder *b, const mayfly_tenant_t *t, size_t n) {
  json_builder_begin_array(b);
  for (size_t i = 0; i < n; i++) {
    json_builder_begin_object(b);
    json_str(b, "name", t[i].name);
    json_strv(b, "prefixes", t[i].prefixes, t[i].nprefixes);
    json_strv(b, "read_prefixes", t[i].read_prefixes, t[i].nread_prefixes);
    json_int(b, "max_blocks", t[i].max_blocks);
    json_int(b, "blocks_used", t[i].blocks_used);
    json_int(b, "namespaces", t[i].namespaces);
    json_bool(b, "admin", t[i].admin);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
}

/* The tenants as a table. */
static void print_tenants(const mayfly_tenant_t *t, size_t n) {
  table_t tb;
  table_init(&tb, 7, "TENANT", "PREFIXES", "READ PREFIXES", "MAX BLOCKS", "BLOCKS", "NAMESPACES",
             "ADMIN");
  for (size_t i = 0; i < n; i++) {
    char *rp = t[i].nread_prefixes > 0 ? g_strjoinv(";", t[i].read_prefixes) : g_strdup("-");
    table_row(&tb, g_strdup(t[i].name), g_strjoinv(";", t[i].prefixes), rp,
              t[i].max_blocks > 0 ? g_strdup_printf("%d", t[i].max_blocks) : g_strdup("-"),
              g_strdup_printf("%lld", (long long)t[i].blocks_used),
              g_strdup_printf("%lld", (long long)t[i].namespaces),
              g_strdup(t[i].admin ? "yes" : "no"));
  }
  table_print(&tb);
}

static int cmd_tenants(cli_t *cli, int argc, char **argv) {
  int rc = parse_flags(cli, "",
                       "One row per tenant of the directory (--tenants) and what it uses: every "
                       "tenant for an admin, your own for anyone else.",
                       NULL, &argc, &argv, 0, 0);
  if (rc != 0 || (rc = connect_client(cli, NULL)) != 0) return rc;
  mayfly_tenant_t *t = NULL;
  size_t n = 0;
  rc = mayfly_tenants(cli->client, &t, &n);
  if (rc != 0) return report(cli, NULL, rc);
  if (cli->json) {
    JsonBuilder *b = json_builder_new();
    json_tenants(b, t, n);
    print_json(b);
  } else {
    print_tenants(t, n);
  }
  mayfly_tenants_free(t, n);
  return 0;
}

static int cmd_whoami(cli_t *cli, int argc, char **argv) {
  int rc = parse_flags(cli, "", "The tenant your token logs in as, and what it may touch.", NULL,
                       &argc, &argv, 0, 0);
  if (rc != 0 || (rc = connect_client(cli, NULL)) != 0) return rc;
  mayfly_session_t s;
  rc = mayfly_whoami(cli->client, &s);
  if (rc != 0) return report(cli, NULL, rc);
  if (cli->json) {
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_bool(b, "open", s.open);
    json_str(b, "tenant", s.tenant);
    json_bool(b, "admin", s.admin);
    json_strv(b, "prefixes", s.prefixes, s.nprefixes);
    json_strv(b, "read_prefixes", s.read_prefixes, s.nread_prefixes);
    json_builder_end_object(b);
    print_json(b);
  } else if (s.open) {
    printf("open directory (no tenants): every path\n");
  } else {
    char *p = g_strjoinv(";", s.prefixes), *rp = g_strjoinv(";", s.read_prefixes);
    printf("%-14s %s\n%-14s %s\n%-14s %s\n%-14s %s\n", "tenant", s.tenant, "admin",
           s.admin ? "yes" : "no", "prefixes", p, "read-prefixes", s.nread_prefixes ? rp : "-");
    g_free(p);
    g_free(rp);
  }
  mayfly_session_clear(&s);
  return 0;
}

static int cmd_stats(cli_t *cli, int argc, char **argv) {
  int rc = parse_flags(cli, "",
                       "Directory-wide counters, each tenant's use (--tenants), then one row per "
                       "directory of the directory service with its role (in --json: "
                       "\"directory_replicas\").",
                       NULL, &argc, &argv, 0, 0);
  if (rc != 0 || (rc = connect_client(cli, NULL)) != 0) return rc;
  mayfly_dir_stats_t s;
  rc = mayfly_dir_stats(cli->client, &s);
  if (rc != 0) return report(cli, NULL, rc);
  const struct {
    const char *name;
    int64_t v;
  } f[] = {{"nodes", s.nodes},
           {"directories", s.directories},
           {"namespaces", s.namespaces},
           {"servers", s.servers},
           {"servers_up", s.servers_up},
           {"blocks_total", s.blocks_total},
           {"blocks_used", s.blocks_used},
           {"expired_total", s.expired_total},
           {"uptime_ms", s.uptime_ms},
           {"connections", s.connections},
           {"requests", s.requests},
           {"lease_ms", s.lease_ms},
           {"grace_ms", s.grace_ms},
           {"splits", s.splits},
           {"merges", s.merges},
           {"rollbacks", s.rollbacks},
           {"bytes_moved", s.bytes_moved},
           {"move_ms", s.move_ms},
           {"move_ms_max", s.move_ms_max},
           {"durable", s.durable},
           {"log_records", s.log_records},
           {"log_bytes", s.log_bytes},
           {"log_fsyncs", s.log_fsyncs},
           {"snapshots", s.snapshots},
           {"last_snapshot_ms", s.last_snapshot_ms},
           {"recovery_ms", s.recovery_ms},
           {"recovered_records", s.recovered_records},
           {"log_seq", s.log_seq},
           {"chain_failovers", s.chain_failovers},
           {"rereplications", s.rereplications},
           {"rereplicated_bytes", s.rereplicated_bytes},
           {"partitions_degraded", s.partitions_degraded}};
  JsonBuilder *b = cli->json ? json_builder_new() : NULL;
  if (b) json_builder_begin_object(b);
  for (size_t i = 0; i < G_N_ELEMENTS(f); i++) {
    if (b) {
      json_int(b, f[i].name, f[i].v);
    } else {
      printf("%-18s %lld\n", f[i].name, (long long)f[i].v);
    }
  }
  if (!b && s.durable && s.log_fsyncs > 0) {
    printf("%-18s %.1f\n", "records_per_fsync", (double)s.log_records / (double)s.log_fsyncs);
  }
  /* A directory with tenants also says what each of them uses. */
  mayfly_tenant_t *t = NULL;
  size_t nt = 0;
  if (mayfly_tenants(cli->client, &t, &nt) == 0 && nt > 0) {
    if (b) {
      json_builder_set_member_name(b, "tenants");
      json_tenants(b, t, nt);
    } else {
      printf("\n");
      print_tenants(t, nt);
    }
  }
  mayfly_tenants_free(t, nt);
  /* And the directory service's members, the leader among them
   * ("directories" is taken by the count of directory nodes). */
  directories_section(cli, b, "directory_replicas");
  if (b) {
    json_builder_end_object(b);
    print_json(b);
  }
  return 0;
}

/* --- data commands --- */

/* Reads all of a file or stdin; NULL (and a message) on error. */
static GBytes *slurp(cli_t *cli, const char *file) {
  GError *err = NULL;
  char *data = NULL;
  gsize len = 0;
  if (file != NULL) {
    if (!g_file_get_contents(file, &data, &len, &err)) {
      fprintf(stderr, "mayfly: %s: %s\n", cli->command, err->message);
      g_error_free(err);
      return NULL;
    }
    return g_bytes_new_take(data, len);
  }
  GByteArray *a = g_byte_array_new();
  uint8_t buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) g_byte_array_append(a, buf, (guint)n);
  return g_byte_array_free_to_bytes(a);
}

/* The value of put and push: the VALUE argument at argv[at], or the contents
 * of --file (- for stdin); exactly one of the two. */
static int value_arg(cli_t *cli, const char *path, const char *file, int argc, char **argv,
                     int at, GBytes **out) {
  if ((argc > at) == (file != NULL)) return usage_error_path(cli, path, "give VALUE or --file, not both");
  if (file == NULL) {
    *out = g_bytes_new(argv[at], strlen(argv[at]));
    return 0;
  }
  *out = slurp(cli, strcmp(file, "-") == 0 ? NULL : file);
  return *out != NULL ? 0 : 1;
}

static int mount_ns(cli_t *cli, const char *path, mayfly_kind_t kind, mayfly_ns_t **ns) {
  int rc = connect_client(cli, path);
  if (rc != 0) return rc;
  /* Mount an existing namespace only: the CLI never creates one implicitly. */
  mayfly_stat_t *st = NULL;
  rc = mayfly_stat(cli->client, path, &st);
  if (rc == 0 && st->kind != kind) {
    fprintf(stderr, "mayfly: %s: %s: is a %s namespace, not %s\n", cli->command, path,
            mayfly_kind_name(st->kind), mayfly_kind_name(kind));
    mayfly_stat_free(st);
    return 1;
  }
  mayfly_stat_free(st);
  if (rc == 0) rc = mayfly_mount(cli->client, path, kind, NULL, ns);
  return rc != 0 ? report(cli, path, rc) : 0;
}

static void print_value(cli_t *cli, const void *v, size_t len) {
  if (cli->json) {
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "value");
    if (g_utf8_validate(v, (gssize)len, NULL) && memchr(v, 0, len) == NULL) {
      char *s = g_strndup(v, len);
      json_builder_add_string_value(b, s);
      g_free(s);
    } else {
      char *b64 = g_base64_encode(v, len);
      json_builder_add_string_value(b, b64);
      json_str(b, "encoding", "base64");
      g_free(b64);
    }
    json_builder_end_object(b);
    print_json(b);
  } else {
    fwrite(v, 1, len, stdout);
    if (isatty(STDOUT_FILENO) && (len == 0 || ((const char *)v)[len - 1] != '\n')) putchar('\n');
  }
}

/* Prints a fetched value, or says why there is none: `absent` is the code
 * meaning "nothing there" (reported as `what`, after `item` if given).
 * Frees the value. Returns the exit status. */
static int show_value(cli_t *cli, const char *path, int rc, int absent, const char *item,
                      const char *what, void *v, size_t vlen) {
  if (rc == absent) {
    fprintf(stderr, "mayfly: %s: %s: %s%s%s\n", cli->command, path, item ? item : "",
            item ? ": " : "", what);
    rc = 1;
  } else if (rc != 0) {
    rc = report(cli, path, rc);
  } else {
    print_value(cli, v, vlen);
  }
  mayfly_free(v);
  return rc;
}

static int cmd_put(cli_t *cli, int argc, char **argv) {
  char *file = NULL;
  GOptionEntry e[] = {{"file", 'f', 0, G_OPTION_ARG_FILENAME, &file,
                       "Take the value from FILE ('-' for stdin)", "FILE"},
                      {NULL}};
  int rc = parse_flags(cli, "PATH KEY [VALUE]", "Store a value under a key of a kv namespace.", e,
                       &argc, &argv, 2, 3);
  mayfly_ns_t *ns = NULL;
  GBytes *val = NULL;
  if (rc == 0) rc = value_arg(cli, argv[1], file, argc, argv, 3, &val);
  if (rc == 0) rc = mount_ns(cli, argv[1], MAYFLY_KIND_KV, &ns);
  if (rc == 0) {
    gsize vlen;
    const void *v = g_bytes_get_data(val, &vlen);
    rc = mayfly_kv_put(ns, argv[2], strlen(argv[2]), v, vlen);
    rc = rc != 0 ? report(cli, argv[1], rc) : print_ok(cli, "put", argv[2]);
  }
  mayfly_unmount(ns);
  if (val) g_bytes_unref(val);
  g_free(file);
  return rc;
}

static int cmd_get(cli_t *cli, int argc, char **argv) {
  int rc = parse_flags(cli, "PATH KEY", "Print the value of a key.", NULL, &argc, &argv, 2, 2);
  mayfly_ns_t *ns = NULL;
  if (rc == 0) rc = mount_ns(cli, argv[1], MAYFLY_KIND_KV, &ns);
  if (rc == 0) {
    void *v = NULL;
    size_t vlen = 0;
    rc = mayfly_kv_get(ns, argv[2], strlen(argv[2]), &v, &vlen);
    rc = show_value(cli, argv[1], rc, MAYFLY_ENOKEY, argv[2], "no such key", v, vlen);
  }
  mayfly_unmount(ns);
  return rc;
}

static int cmd_del(cli_t *cli, int argc, char **argv) {
  int rc = parse_flags(cli, "PATH KEY", "Delete a key.", NULL, &argc, &argv, 2, 2);
  mayfly_ns_t *ns = NULL;
  if (rc == 0) rc = mount_ns(cli, argv[1], MAYFLY_KIND_KV, &ns);
  if (rc == 0) {
    rc = mayfly_kv_delete(ns, argv[2], strlen(argv[2]));
    if (rc == MAYFLY_ENOKEY) {
      fprintf(stderr, "mayfly: del: %s: %s: no such key\n", argv[1], argv[2]);
      rc = 1;
    } else {
      rc = rc != 0 ? report(cli, argv[1], rc) : print_ok(cli, "deleted", argv[2]);
    }
  }
  mayfly_unmount(ns);
  return rc;
}

static int cmd_push(cli_t *cli, int argc, char **argv) {
  char *file = NULL;
  GOptionEntry e[] = {{"file", 'f', 0, G_OPTION_ARG_FILENAME, &file,
                       "Take the item from FILE ('-' for stdin)", "FILE"},
                      {NULL}};
  int rc = parse_flags(cli, "PATH [VALUE]", "Push an item onto a queue.", e, &argc, &argv, 1, 2);
  GBytes *val = NULL;
  mayfly_ns_t *ns = NULL;
  if (rc == 0) rc = value_arg(cli, argv[1], file, argc, argv, 2, &val);
  if (rc == 0) rc = mount_ns(cli, argv[1], MAYFLY_KIND_QUEUE, &ns);
  if (rc == 0) {
    gsize vlen;
    const void *v = g_bytes_get_data(val, &vlen);
    rc = mayfly_queue_push(ns, v, vlen);
    rc = rc != 0 ? report(cli, argv[1], rc) : print_ok(cli, "pushed", argv[1]);
  }
  mayfly_unmount(ns);
  if (val) g_bytes_unref(val);
  g_free(file);
  return rc;
}

static int cmd_pop(cli_t *cli, int argc, char **argv) {
  gint timeout = 0;
  GOptionEntry e[] = {{"timeout", 't', 0, G_OPTION_ARG_INT, &timeout,
                       "Wait up to MS for an item (default: do not wait)", "MS"},
                      {NULL}};
  int rc = parse_flags(cli, "PATH", "Take the item at the head of a queue.", e, &argc, &argv, 1, 1);
  if (rc == 0 && timeout < 0) rc = usage_error_path(cli, argv[1], "--timeout must be positive");
  mayfly_ns_t *ns = NULL;
  if (rc == 0) rc = mount_ns(cli, argv[1], MAYFLY_KIND_QUEUE, &ns);
  if (rc == 0) {
    void *v = NULL;
    size_t vlen = 0;
    rc = mayfly_queue_pop(ns, &v, &vlen, timeout);
    rc = show_value(cli, argv[1], rc, MAYFLY_EAGAIN, NULL, "queue is empty", v, vlen);
  }
  mayfly_unmount(ns);
  return rc;
}

static int cmd_write(cli_t *cli, int argc, char **argv) {
  char *file = NULL;
  gint64 offset = 0;
  gboolean append = FALSE;
  GOptionEntry e[] = {
      {"file", 'f', 0, G_OPTION_ARG_FILENAME, &file, "Read from FILE instead of stdin", "FILE"},
      {"offset", 'o', 0, G_OPTION_ARG_INT64, &offset, "Write at this byte offset (default 0)",
       "BYTES"},
      {"append", 'a', 0, G_OPTION_ARG_NONE, &append, "Append at the end", NULL},
      {NULL}};
  int rc = parse_flags(cli, "PATH", "Write stdin (or --file) into a file namespace.", e, &argc,
                       &argv, 1, 1);
  if (rc == 0 && offset < 0) rc = usage_error_path(cli, argv[1], "--offset must be positive");
  GBytes *val = NULL;
  mayfly_ns_t *ns = NULL;
  if (rc == 0) {
    val = slurp(cli, file);
    if (val == NULL) rc = 1;
  }
  if (rc == 0) rc = mount_ns(cli, argv[1], MAYFLY_KIND_FILE, &ns);
  if (rc == 0) {
    gsize vlen;
    const void *v = g_bytes_get_data(val, &vlen);
    rc = append ? mayfly_file_append(ns, v, vlen, NULL)
                : mayfly_file_write(ns, (uint64_t)offset, v, vlen);
    rc = rc != 0 ? report(cli, argv[1], rc) : print_ok(cli, "written", argv[1]);
  }
  mayfly_unmount(ns);
  if (val) g_bytes_unref(val);
  g_free(file);
  return rc;
}

static int cmd_cat(cli_t *cli, int argc, char **argv) {
  int rc = parse_flags(cli, "PATH", "Write a file namespace's bytes to stdout.", NULL, &argc,
                       &argv, 1, 1);
  mayfly_ns_t *ns = NULL;
  if (rc == 0) rc = mount_ns(cli, argv[1], MAYFLY_KIND_FILE, &ns);
  if (rc == 0) {
    size_t chunk = 4u << 20;
    void *buf = g_malloc(chunk);
    for (uint64_t off = 0;;) {
      int64_t n = mayfly_file_read(ns, off, buf, chunk);
      if (n < 0) {
        rc = report(cli, argv[1], (int)n);
        break;
      }
      if (n == 0) break;
      fwrite(buf, 1, (size_t)n, stdout);
      off += (uint64_t)n;
    }
    g_free(buf);
  }
  mayfly_unmount(ns);
  return rc;
}

static int cmd_truncate(cli_t *cli, int argc, char **argv) {
  int rc = parse_flags(cli, "PATH SIZE",
                       "Shrink a file namespace to SIZE bytes (e.g. 0, 1500, 4MiB); the blocks "
                       "past it return to the pool.",
                       NULL, &argc, &argv, 2, 2);
  uint64_t size = 0;
  if (rc == 0 && mf_parse_size(argv[2], &size) != 0) {
    rc = usage_error_path(cli, argv[1], "SIZE takes a byte count such as 1500 or 4MiB");
  }
  mayfly_ns_t *ns = NULL;
  if (rc == 0) rc = mount_ns(cli, argv[1], MAYFLY_KIND_FILE, &ns);
  if (rc == 0) {
    rc = mayfly_file_truncate(ns, size);
    if (rc == MAYFLY_EINVAL) {
      rc = usage_error_path(cli, argv[1], "SIZE lies past the end of the file");
    } else if (rc != 0) {
      rc = report(cli, argv[1], rc);
    } else {
      print_ok(cli, "truncated", argv[1]);
    }
  }
  mayfly_unmount(ns);
  return rc;
}

/* --- watch --- */

static volatile sig_atomic_t watch_stop;

static void on_watch_signal(int sig) {
  watch_stop = 1;
}

/* A key for the one-line form: as it is when it is plain text, quoted with
 * C escapes when it has spaces or quotes, base64 (key64=) when binary. */
static char *fmt_key(const uint8_t *k, size_t len) {
  int text = g_utf8_validate((const char *)k, (gssize)len, NULL);
  int plain = text && len > 0;
  for (size_t i = 0; text && i < len; i++) {
    if (k[i] < 0x20 || k[i] == 0x7f) text = plain = 0;
    if (k[i] == ' ' || k[i] == '"' || k[i] == '\\') plain = 0;
  }
  if (plain) return g_strdup_printf("key=%.*s", (int)len, (const char *)k);
  if (text) {
    char *raw = g_strndup((const char *)k, len), *esc = g_strescape(raw, NULL);
    char *out = g_strdup_printf("key=\"%s\"", esc);
    g_free(raw);
    g_free(esc);
    return out;
  }
  char *b64 = g_base64_encode(k, len);
  char *out = g_strdup_printf("key64=%s", b64);
  g_free(b64);
  return out;
}

static void print_event(cli_t *cli, const mayfly_event_t *ev) {
  int has_key = ev->kind == MAYFLY_EV_PUT || ev->kind == MAYFLY_EV_DELETE;
  int has_offset = ev->kind == MAYFLY_EV_WRITE || ev->kind == MAYFLY_EV_GAP;
  int has_length = ev->kind == MAYFLY_EV_WRITE || ev->kind == MAYFLY_EV_PUSH ||
                   ev->kind == MAYFLY_EV_POP || ev->kind == MAYFLY_EV_GAP;
  int has_lost = ev->kind == MAYFLY_EV_LOST;
  if (cli->json) {
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_int(b, "seq", ev->seq);
    json_str(b, "kind", mayfly_event_kind_name(ev->kind));
    json_str(b, "path", ev->path);
    if (has_key) {
      const char *k = (const char *)ev->key;
      if (ev->key_len == 0 || (g_utf8_validate(k, (gssize)ev->key_len, NULL) &&
                               memchr(k, 0, ev->key_len) == NULL)) {
        char *s = g_strndup(k ? k : "", ev->key_len);
        json_str(b, "key", s);
        g_free(s);
      } else {
        char *b64 = g_base64_encode(ev->key, ev->key_len);
        json_str(b, "key", b64);
        json_str(b, "encoding", "base64");
        g_free(b64);
      }
    }
    if (has_offset) json_int(b, "offset", ev->offset);
    if (has_length) json_int(b, "length", ev->length);
    if (has_lost) json_int(b, "lost_partitions", ev->length);
    json_int(b, "time_ms", ev->time_ms);
    json_builder_end_object(b);
    JsonGenerator *gen = json_generator_new();
    JsonNode *root = json_builder_get_root(b);
    json_generator_set_root(gen, root);
    char *line = json_generator_to_data(gen, NULL);
    printf("%s\n", line);
    g_free(line);
    json_node_unref(root);
    g_object_unref(gen);
    g_object_unref(b);
  } else {
    GString *line = g_string_new(NULL);
    g_string_printf(line, "%lld %s %s", (long long)ev->seq, mayfly_event_kind_name(ev->kind),
                    ev->path);
    if (has_key) {
      char *k = fmt_key(ev->key, ev->key_len);
      g_string_append_printf(line, " %s", k);
      g_free(k);
    }
    if (ev->kind == MAYFLY_EV_GAP) {
      if (ev->length < 0) {
        g_string_append(line, " missed=unknown");
      } else {
        g_string_append_printf(line, " first=%lld missed=%lld", (long long)ev->offset,
                               (long long)ev->length);
      }
    } else {
      if (has_offset) g_string_append_printf(line, " offset=%lld", (long long)ev->offset);
      if (has_length) g_string_append_printf(line, " length=%lld", (long long)ev->length);
      if (has_lost) g_string_append_printf(line, " partitions=%lld", (long long)ev->length);
    }
    printf("%s\n", line->str);
    g_string_free(line, TRUE);
  }
  fflush(stdout);
}

static int cmd_watch(cli_t *cli, int argc, char **argv) {
  char *events = NULL, *timeout = NULL;
  gint count = 0;
  GOptionEntry e[] = {
      {"events", 'e', 0, G_OPTION_ARG_STRING, &events,
       "Kinds to print, comma-separated (default: all): put, delete, push, pop, write, "
       "child-created, child-removed, lease-expired, removed, lost; or the groups data, namespace, all",
       "LIST"},
      {"count", 'n', 0, G_OPTION_ARG_INT, &count, "Exit after N events", "N"},
      {"timeout", 't', 0, G_OPTION_ARG_STRING, &timeout,
       "Exit after DURATION (with --count, status 1 when fewer events came)", "DURATION"},
      {NULL}};
  int rc = parse_flags(
      cli, "PATH [--events LIST] [--count N] [--timeout DURATION]",
      "Print the events of a namespace as they happen, one per line: SEQ KIND PATH and the "
      "details (key=K, or key64=BASE64 for a binary key; offset=N length=N; a gap says "
      "first=SEQ missed=N). With --json, one JSON object per line. A directory reports its "
      "children's namespace events. Runs until interrupted (SIGINT or SIGTERM: status 0), "
      "--count events, --timeout, or the namespace's removal (status 0).",
      e, &argc, &argv, 1, 1);
  uint32_t mask = 0;
  int64_t limit_ms = -1;
  if (rc == 0 && count < 0) rc = usage_error_path(cli, argv[1], "--count must be positive");
  if (rc == 0 && timeout != NULL &&
      (mf_parse_duration_ms(timeout, &limit_ms) != 0 || limit_ms < 0)) {
    rc = usage_error_path(cli, argv[1], "--timeout takes a duration such as 5000, 500ms or 30s");
  }
  if (rc == 0 && events != NULL && mayfly_event_mask_parse(events, &mask) != 0) {
    char *msg = g_strdup_printf("--events: %s", mayfly_last_error());
    rc = usage_error_path(cli, argv[1], msg);
    g_free(msg);
  }
  g_free(events);
  g_free(timeout);
  if (rc != 0 || (rc = connect_client(cli, argv[1])) != 0) return rc;
  const char *path = argv[1];
  mayfly_listener_t *l = NULL;
  rc = mayfly_listen(cli->client, path, mask, &l);
  if (rc != 0) return report(cli, path, rc);
  /* Events from here on are printed: say so where scripts can wait for it. */
  fprintf(stderr, "mayfly: watch: %s: watching\n", path);
  struct sigaction sa = {0};
  sa.sa_handler = on_watch_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  int64_t deadline = limit_ms >= 0 ? g_get_monotonic_time() / 1000 + limit_ms : -1;
  int printed = 0;
  rc = 0;
  while (!watch_stop) {
    int slice = 200;
    if (deadline >= 0) {
      int64_t left = deadline - g_get_monotonic_time() / 1000;
      if (left <= 0) {
        if (count > 0) {
          fprintf(stderr, "mayfly: watch: %s: timed out after %d of %d events\n", path, printed,
                  count);
          rc = 1;
        }
        break;
      }
      if (left < slice) slice = (int)left;
    }
    mayfly_event_t *ev = NULL;
    int nrc = mayfly_listener_next(l, &ev, slice);
    if (nrc == MAYFLY_EAGAIN) continue;
    if (nrc == MAYFLY_ENOENT) {
      if (count > 0 && printed < count) {
        fprintf(stderr, "mayfly: watch: %s: removed after %d of %d events\n", path, printed,
                count);
        rc = 1;
      }
      break;
    }
    if (nrc != 0) {
      rc = report(cli, path, nrc);
      break;
    }
    print_event(cli, ev);
    mayfly_event_free(ev);
    if (count > 0 && ++printed >= count) break;
  }
  mayfly_listener_close(l);
  return rc;
}

static const command_t commands[] = {
    {"mkdir", "[-p] PATH", "Create a directory", cmd_mkdir},
    {"create",
     "PATH --kind file|queue|kv [--blocks N] [--lease-ms MS] [--pinned] [--max-blocks N] "
     "[--high-watermark PCT] [--low-watermark PCT]",
     "Create a data namespace", cmd_create},
    {"ls", "[-l] [PATH]", "List a directory", cmd_ls},
    {"tree", "[PATH]", "Show a subtree", cmd_tree},
    {"stat", "PATH", "Describe a node and its layout", cmd_stat},
    {"rm", "[-r] PATH", "Remove a node", cmd_rm},
    {"mv", "OLD NEW", "Move a node", cmd_mv},
    {"renew", "PATH...", "Renew leases", cmd_renew},
    {"leases", "[PATH]", "List leases and time left", cmd_leases},
    {"servers", "", "List memory servers (and the directories)", cmd_servers},
    {"put", "PATH KEY [VALUE] [--file F]", "Store a value in a kv namespace", cmd_put},
    {"get", "PATH KEY", "Print a value of a kv namespace", cmd_get},
    {"del", "PATH KEY", "Delete a key of a kv namespace", cmd_del},
    {"push", "PATH [VALUE] [--file F]", "Push an item onto a queue", cmd_push},
    {"pop", "PATH [--timeout MS]", "Pop the head item of a queue", cmd_pop},
    {"write", "PATH [--offset N] [--append]", "Write stdin into a file namespace", cmd_write},
    {"cat", "PATH", "Print a file namespace", cmd_cat},
    {"truncate", "PATH SIZE", "Shrink a file namespace", cmd_truncate},
    {"watch", "PATH [--events LIST] [--count N]", "Print events as they happen", cmd_watch},
    {"stats", "", "Directory counters (each tenant's use, the directories)", cmd_stats},
    {"cluster", "[--json]", "The directory replicas, the leader, log positions (admin)",
     cmd_cluster},
    {"tenants", "", "List tenants and their use (admin: all)", cmd_tenants},
    {"whoami", "", "Show the tenant your token logs in as", cmd_whoami},
    {NULL, NULL, NULL, NULL}};

static char *commands_help(void) {
  GString *s = g_string_new("Commands (each takes --help):\n");
  for (const command_t *c = commands; c->name; c++) {
    g_string_append_printf(s, "  %-8s %-36s %s\n", c->name, c->args, c->summary);
  }
  g_string_append(s,
                  "\nThe directory is --directory, else $MAYFLY_DIRECTORY, else 127.0.0.1:9090:\n"
                  "one HOST:PORT, or the comma-separated list of a replicated directory\n"
                  "service (a:9090,b:9090,c:9090; IPv6 hosts in brackets), whose leader the\n"
                  "CLI finds.\n"
                  "The tenant token is --token, else $MAYFLY_TOKEN (a directory started with\n"
                  "--tenants refuses clients without one). Other users can read a --token in\n"
                  "ps: on a shared machine prefer MAYFLY_TOKEN.");
  return g_string_free(s, FALSE);
}

int main(int argc, char **argv) {
  cli_t cli = {.timeout_ms = 5000};
  gchar *directory = NULL, *token = NULL;
  gboolean json = FALSE;
  gint timeout = 5000;
  GOptionEntry e[] = {
      {"directory", 'd', 0, G_OPTION_ARG_STRING, &directory,
       "Directory address, or a comma-separated list of the replicas (default "
       "$MAYFLY_DIRECTORY, else 127.0.0.1:9090)",
       "HOST:PORT[,...]"},
      {"token", 'T', 0, G_OPTION_ARG_STRING, &token,
       "Tenant token to log in with (default $MAYFLY_TOKEN)", "TOKEN"},
      {"json", 'j', 0, G_OPTION_ARG_NONE, &json, "Print JSON instead of tables", NULL},
      {"timeout", 't', 0, G_OPTION_ARG_INT, &timeout, "Per-call timeout in ms (default 5000)",
       "MS"},
      {NULL}};
  GOptionContext *ctx = g_option_context_new("COMMAND [ARGS...]");
  g_option_context_set_summary(ctx, "Administer a Mayfly cluster: namespaces, leases, servers.");
  char *help = commands_help();
  g_option_context_set_description(ctx, help);
  g_option_context_add_main_entries(ctx, e, NULL);
  /* Stop at the command: what follows belongs to it. */
  g_option_context_set_strict_posix(ctx, TRUE);
  GError *err = NULL;
  int rc = 2;
  if (!g_option_context_parse(ctx, &argc, &argv, &err)) {
    fprintf(stderr, "mayfly: %s\n", err->message);
    g_error_free(err);
  } else if (argc < 2) {
    char *h = g_option_context_get_help(ctx, TRUE, NULL);
    fputs(h, stderr);
    g_free(h);
  } else {
    cli.directory = directory;
    cli.token = token;
    cli.json = json;
    cli.timeout_ms = timeout > 0 ? timeout : 5000;
    cli.command = argv[1];
    const command_t *c;
    for (c = commands; c->name && strcmp(c->name, argv[1]) != 0; c++) {
    }
    if (c->name != NULL) {
      rc = c->run(&cli, argc - 1, argv + 1);
      mayfly_disconnect(cli.client);
    } else {
      fprintf(stderr, "mayfly: unknown command '%s' (see mayfly --help)\n", argv[1]);
    }
  }
  g_option_context_free(ctx);
  g_free(help);
  g_free(directory);
  g_free(token);
  return rc;
}
