/*
 * Replays the etcd decoders' fuzz target (fuzz_etcd.c) without libFuzzer.
 * The seeds are replies etcd 3.4's JSON gateway really sent (captured from
 * one), one per request kind - a range with kvs and more, a put, a delete, a
 * txn that failed with its range responses, a compaction, a lease grant, a
 * keepalive (a stream line), a revoke, etcd errors (compacted, too large,
 * lease not found, unavailable) - and watch streams (created, events with a
 * DELETE, a progress notification, a compacted cancel, a stream error). Each
 * is mutated deterministically: the engine's byte edits, and edits that know
 * JSON (a value replaced by another type, an int64 string that lies, a
 * quote or brace dropped). The target aborts on any wrong answer; this
 * program exits 0 only when every input passed and every outcome was
 * reached.
 *
 * Usage: fuzz_etcd_replay [ROUNDS] [--corpus DIR]; with --corpus the seeds
 * are also written to DIR (seed-N.etcd), to start a libFuzzer run.
 */
#include <glib.h>
#include <stdio.h>
#include <string.h>

#include "mutate.h"

extern long fuzz_etcd_accepted, fuzz_etcd_refused, fuzz_etcd_kvs, fuzz_etcd_lines, fuzz_etcd_bad_lines,
    fuzz_etcd_events, fuzz_etcd_canceled;

static fz_t fz;

#define HDR "\"header\":{\"cluster_id\":\"13455796455940752355\",\"member_id\":\"443629905751424238\"," \
            "\"revision\":\"3\",\"raft_term\":\"2\"}"

static void seed(int which, const char *json) {
  GByteArray *s = g_byte_array_new();
  guint8 b = (guint8)which;
  g_byte_array_append(s, &b, 1);
  g_byte_array_append(s, (const guint8 *)json, (guint)strlen(json));
  fz_add_seed(&fz, s);
}

static void make_seeds(void) {
  seed(0, "{" HDR ",\"kvs\":[{\"key\":\"L3QvcmFuZ2UvMQ==\",\"create_revision\":\"2\",\"mod_revision\":\"9\","
          "\"version\":\"3\",\"value\":\"bmV3\"},{\"key\":\"L3QvcmFuZ2UvMg==\",\"create_revision\":\"3\","
          "\"mod_revision\":\"3\",\"version\":\"1\",\"value\":\"AAECAP8=\",\"lease\":\"4390625028792886278\"}],"
          "\"more\":true,\"count\":\"5\"}");
  seed(0, "{\"error\":\"etcdserver: mvcc: required revision has been compacted\",\"message\":\"etcdserver: mvcc: "
          "required revision has been compacted\",\"code\":11}");
  seed(1, "{" HDR "}");
  seed(1, "{\"error\":\"etcdserver: request is too large\",\"message\":\"etcdserver: request is too large\",\"code\":3}");
  seed(1, "{\"error\":\"etcdserver: leader changed\",\"message\":\"etcdserver: leader changed\",\"code\":14}");
  seed(2, "{" HDR ",\"deleted\":\"1\"}");
  seed(3, "{" HDR ",\"responses\":[{\"response_range\":{\"header\":{\"revision\":\"2\"},\"kvs\":[{\"key\":\"Zm9v\","
          "\"create_revision\":\"2\",\"mod_revision\":\"2\",\"version\":\"1\",\"value\":\"YmFy\"}],\"count\":\"1\"}}]}");
  seed(3, "{" HDR ",\"succeeded\":true,\"responses\":[{\"response_put\":{\"header\":{\"revision\":\"4\"}}},"
          "{\"response_delete_range\":{\"header\":{\"revision\":\"4\"},\"deleted\":\"1\"}}]}");
  seed(4, "{" HDR "}");
  seed(5, "{" HDR ",\"ID\":\"4390625028792886278\",\"TTL\":\"5\"}");
  seed(5, "{" HDR ",\"ID\":7,\"TTL\":5,\"error\":\"\"}");
  seed(6, "{\"result\":{" HDR ",\"ID\":\"4390625028792886280\",\"TTL\":\"5\"}}\n");
  seed(6, "{\"result\":{" HDR ",\"ID\":\"123\"}}");
  seed(7, "{" HDR "}");
  seed(7, "{\"error\":\"etcdserver: requested lease not found\",\"message\":\"etcdserver: requested lease not found\","
          "\"code\":5}");
  seed(8, "{\"result\":{" HDR ",\"created\":true}}\n"
          "{\"result\":{" HDR ",\"events\":[{\"kv\":{\"key\":\"Zm9v\",\"create_revision\":\"2\",\"mod_revision\":\"2\","
          "\"version\":\"1\",\"value\":\"YmFy\"}},{\"type\":\"DELETE\",\"kv\":{\"key\":\"Zm9v\",\"mod_revision\":\"3\"}}]}}\n"
          "{\"result\":{" HDR "}}\n");
  seed(8, "{\"result\":{" HDR ",\"created\":true}}\n"
          "{\"result\":{\"header\":{\"cluster_id\":\"1\",\"raft_term\":\"2\"},\"canceled\":true,\"compact_revision\":\"2\"}}\n");
  seed(8, "{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: no leader\",\"http_status\":"
          "\"Service Unavailable\"}}\n");
}

/* JSON pieces an edit puts in place of a value. */
static const char *const tokens[] = {"null", "{}", "[]", "\"\"", "\"x\"", "true", "1e999", "-1", "0",
                                     "\"-9223372036854775809\"", "\"9223372036854775808\"", "\"12abc\"",
                                     "9223372036854775807", "\"=\"", "\"////\"", "[{}]", "{\"kv\":null}"};

/* Replaces the value after a random ':' with a token of another type. */
static void edit_value(fz_t *f, GByteArray *m) {
  if (m->len < 2) return;
  guint at = g_rand_int_range(f->rand, 1, (gint32)m->len);
  const guint8 *colon = memchr(m->data + at, ':', m->len - at);
  if (colon == NULL) return;
  guint from = (guint)(colon - m->data) + 1, to = from;
  int depth = 0, in_str = 0;
  for (; to < m->len; to++) {
    guint8 c = m->data[to];
    if (in_str) {
      if (c == '\\') to++;
      else if (c == '"') in_str = 0;
      continue;
    }
    if (c == '"') in_str = 1;
    else if (c == '{' || c == '[') depth++;
    else if (c == '}' || c == ']') {
      if (depth == 0) break;
      depth--;
    } else if (c == ',' && depth == 0) break;
  }
  if (to > m->len) to = m->len;
  const char *t = tokens[g_rand_int_range(f->rand, 0, G_N_ELEMENTS(tokens))];
  g_byte_array_remove_range(m, from, to - from);
  GByteArray *tail = g_byte_array_new();
  g_byte_array_append(tail, m->data + from, m->len - from);
  g_byte_array_set_size(m, from);
  g_byte_array_append(m, (const guint8 *)t, (guint)strlen(t));
  g_byte_array_append(m, tail->data, tail->len);
  g_byte_array_free(tail, TRUE);
}

/* Drops one structural character (a quote, brace, bracket or newline). */
static void edit_drop(fz_t *f, GByteArray *m) {
  if (m->len < 2) return;
  guint at = g_rand_int_range(f->rand, 1, (gint32)m->len);
  for (guint i = at; i < m->len; i++) {
    if (strchr("\"{}[]\n:,", m->data[i]) != NULL) {
      g_byte_array_remove_index(m, i);
      return;
    }
  }
}

/* Changes the decoder (the first byte). */
static void edit_kind(fz_t *f, GByteArray *m) {
  if (m->len > 0) m->data[0] = (guint8)g_rand_int_range(f->rand, 0, 9);
}

static const fz_edit_t edits[] = {
    FZ_BASIC_EDITS(64),
    {.op = FZ_SPLICE_TAIL},
    {.op = FZ_RANDOM_TAIL, .max = 16},
    {.op = FZ_OWN, .fn = edit_value},
    {.op = FZ_OWN, .fn = edit_value},
    {.op = FZ_OWN, .fn = edit_drop},
    {.op = FZ_OWN, .fn = edit_kind},
};

int main(int argc, char **argv) {
  fz = (fz_t){.name = "fuzz_etcd", .corpus_ext = ".etcd", .seed = 20261214,
              .edits = edits, .nedits = G_N_ELEMENTS(edits), .edits_max = 4};
  fz_start(&fz, argc, argv, 100000);
  /* json-glib's and GLib's own checks (a critical) count as failures. */
  g_log_set_always_fatal(G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING);
  make_seeds();
  if (fz_run_seeds(&fz) != 0) return 1;
  long seeds_accepted = fuzz_etcd_accepted;
  int ok = 1;
  /* Every seed reply that is not an etcd error decodes. */
  if (seeds_accepted < 11) {
    fprintf(stderr, "fuzz_etcd: only %ld seed replies decoded\n", seeds_accepted);
    ok = 0;
  }
  fz_rounds(&fz);
  printf("fuzz_etcd: %u seeds and %ld mutations passed every check: %ld replies accepted (%ld kvs), %ld "
         "refused; %ld watch lines decoded (%ld events, %ld canceled), %ld refused\n",
         fz.seeds->len, fz.rounds, fuzz_etcd_accepted, fuzz_etcd_kvs, fuzz_etcd_refused, fuzz_etcd_lines,
         fuzz_etcd_events, fuzz_etcd_canceled, fuzz_etcd_bad_lines);
  const fz_outcome_t outcomes[] = {{"mutant reply accepted", fuzz_etcd_accepted - seeds_accepted},
                                   {"reply refused", fuzz_etcd_refused},
                                   {"watch line with events", fuzz_etcd_events},
                                   {"watch line canceled", fuzz_etcd_canceled},
                                   {"watch line refused", fuzz_etcd_bad_lines}};
  if (!fz_outcomes_reached(&fz, outcomes, G_N_ELEMENTS(outcomes))) ok = 0;
  fz_finish(&fz);
  return ok ? 0 : 1;
}
