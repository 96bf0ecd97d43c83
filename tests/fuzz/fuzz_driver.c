/*
 * Replays the control-API fuzz target without libFuzzer: encodes one valid
 * request of every method with the generated client (the seeds), runs each,
 * then runs deterministic mutations of them (bit flips, truncations,
 * duplicated and deleted ranges, splices, random lengths). Under the
 * sanitizer build this is where memory errors in decoding would show.
 * Exits 0 when every seed reached the handlers (two are at the caps of
 * directory/limits.h) and every input was served without a crash.
 *
 * The mutations come from the shared engine (mutate.c); the edits that know
 * the format are this file's. Usage: fuzz_control_replay [ROUNDS] [--corpus DIR];
 * with --corpus the seeds are also written to DIR (seed-N.thrift), to start a
 * libFuzzer run.
 */
#include <glib.h>
#include <mayfly_directory.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <thrift/c_glib/protocol/thrift_compact_protocol.h>

#include "common/frame_transport.h"
#include "directory/events.h"
#include "mutate.h"
#include "namespaces/path.h"
#include "namespaces/tree.h"

extern long fuzz_control_processed;

static fz_t fz;

/* The client writes one call into a memory-mode transport; its frame minus
 * the 4-byte length is a seed. */
static MfFrameTransport *tr;
static MayflyDirectoryClient *cl;

static void take_seed(void) {
  size_t len;
  const uint8_t *f = mf_frame_transport_output(tr, &len);
  if (f != NULL) {
    GByteArray *s = g_byte_array_new();
    g_byte_array_append(s, f + 4, (guint)(len - 4));
    fz_add_seed(&fz, s);
  }
  mf_frame_transport_set_input(tr, NULL, 0);
}

static void make_seeds(void) {
  tr = mf_frame_transport_new(-1, 0, 1 << 20);
  ThriftProtocol *p = g_object_new(THRIFT_TYPE_COMPACT_PROTOCOL, "transport", tr, NULL);
  cl = g_object_new(MAYFLY_TYPE_DIRECTORY_CLIENT, "input_protocol", p, "output_protocol", p, NULL);
  MayflyDirectoryIf *i = MAYFLY_DIRECTORY_IF(cl);
  MayflyCreateOptions *co = g_object_new(MAYFLY_TYPE_CREATE_OPTIONS, NULL);
  co->blocks = 2;
  g_hash_table_insert(co->tags, g_strdup("owner"), g_strdup("fuzz"));
  GPtrArray *paths = g_ptr_array_new();
  g_ptr_array_add(paths, "/a");
  g_ptr_array_add(paths, "/a/b");
  GError *e = NULL;
  mayfly_directory_client_send_register_server(i, "127.0.0.1:7001", 64, 4096, 0, 0, "", &e);
  take_seed();
  mayfly_directory_client_send_mkdir(i, "/a/b", TRUE, 1, 1, &e);
  take_seed();
  mayfly_directory_client_send_create_ns(i, "/a/b/kv", MAYFLY_NODE_KIND_KV, co, 1, 2, &e);
  take_seed();
  mayfly_directory_client_send_open_or_create(i, "/a/q", MAYFLY_NODE_KIND_QUEUE, co, &e);
  take_seed();
  mayfly_directory_client_send_renew(i, paths, &e);
  take_seed();
  mayfly_directory_client_send_stat(i, "/a/b/kv", &e);
  take_seed();
  mayfly_directory_client_send_list_children(i, "/a", &e);
  take_seed();
  mayfly_directory_client_send_add_block(i, "/a/q", 0, 0, 1, 3, &e);
  take_seed();
  mayfly_directory_client_send_remove_block(i, "/a/q", 0, 1, 4, &e);
  take_seed();
  mayfly_directory_client_send_rename(i, "/a/q", "/a/r", 1, 5, &e);
  take_seed();
  mayfly_directory_client_send_heartbeat(i, 1, 3, 5, &e);
  take_seed();
  mayfly_directory_client_send_check_block(i, 1, 0, &e);
  take_seed();
  mayfly_directory_client_send_release_range(i, "/a/r", 0, &e);
  take_seed();
  mayfly_directory_client_send_leases(i, "/", &e);
  take_seed();
  mayfly_directory_client_send_servers(i, &e);
  take_seed();
  mayfly_directory_client_send_stats(i, &e);
  take_seed();
  mayfly_directory_client_send_watch(i, "/a/b/kv", 0, 0, 0, 16, 0, &e);
  take_seed();
  mayfly_directory_client_send_watch(i, "/a", 1 << MAYFLY_EVENT_KIND_CHILD_CREATED, 1, 3, 1 << 30,
                                     50, &e);
  take_seed();
  GPtrArray *evs = g_ptr_array_new_with_free_func(g_object_unref);
  MayflyDataEvent *de = g_object_new(MAYFLY_TYPE_DATA_EVENT, NULL);
  de->block_index = 0;
  de->generation = 1;
  de->kind = MAYFLY_EVENT_KIND_PUT;
  g_free(de->key);
  de->key = g_strdup("a2V5");
  de->length = 3;
  g_ptr_array_add(evs, de);
  de = g_object_new(MAYFLY_TYPE_DATA_EVENT, NULL);
  de->block_index = 1;
  de->generation = 1;
  de->kind = MAYFLY_EVENT_KIND_WRITE;
  de->offset = 4096;
  de->length = 100;
  g_ptr_array_add(evs, de);
  mayfly_directory_client_send_publish(i, 1, evs, 0, &e);
  take_seed();
  g_ptr_array_free(evs, TRUE);
  /* Calls at the caps of directory/limits.h: the longest path and tags the
   * scan lets through (twice the tree's limits, so the handler refuses
   * them), a full publish batch with the longest key. */
  char *longest = g_strnfill(2 * NS_PATH_MAX, 'x');
  memcpy(longest, "/a/", 3);
  MayflyCreateOptions *full = g_object_new(MAYFLY_TYPE_CREATE_OPTIONS, NULL);
  for (int t = 0; t < 2 * NS_TAGS_MAX; t++) {
    char k[2 * NS_TAG_KEY_MAX + 1];
    g_snprintf(k, sizeof k, "%0*d", 2 * NS_TAG_KEY_MAX, t);
    g_hash_table_insert(full->tags, g_strdup(k), g_strnfill(2 * NS_TAG_VALUE_MAX, 'v'));
  }
  mayfly_directory_client_send_create_ns(i, longest, MAYFLY_NODE_KIND_KV, full, 1, 6, &e);
  take_seed();
  g_object_unref(full);
  g_free(longest);
  evs = g_ptr_array_new_with_free_func(g_object_unref);
  for (int k = 0; k < DIR_PUBLISH_MAX_EVENTS; k++) {
    de = g_object_new(MAYFLY_TYPE_DATA_EVENT, NULL);
    de->block_index = k % 4;
    de->generation = 1;
    de->kind = MAYFLY_EVENT_KIND_DELETE;
    de->key = g_strdup(k == 0 ? "" : "a2V5");
    if (k == 0) {
      g_free(de->key);
      de->key = g_strnfill(DIR_EVENT_KEY_MAX, 'A');
    }
    g_ptr_array_add(evs, de);
  }
  mayfly_directory_client_send_publish(i, 1, evs, 0, &e);
  take_seed();
  g_ptr_array_free(evs, TRUE);
  mayfly_directory_client_send_remove(i, "/a", TRUE, 1, 7, &e);
  take_seed();
  g_ptr_array_free(paths, TRUE);
  g_object_unref(co);
  g_object_unref(cl);
  g_object_unref(p);
  g_object_unref(tr);
}

/* Thrift reports rejected messages with g_warning: expected here, so they
 * are counted, not printed. A GLib critical means a broken invariant. */
static long warnings, criticals;

static void count_log(const gchar *domain, GLogLevelFlags level, const gchar *msg, gpointer ud) {
  if (level & (G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_ERROR)) {
    criticals++;
    fprintf(stderr, "critical: %s: %s\n", domain ? domain : "", msg);
  } else {
    warnings++;
  }
}

/* A large varint where a length may be. */
static void big_varint(fz_t *f, GByteArray *m) {
  (void)f;
  const uint8_t big[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
  g_byte_array_append(m, big, sizeof big);
}

/* The engine's byte edits and the varint above; a round stops editing once
 * its input is empty. */
static const fz_edit_t byte_edits[] = {
    FZ_BASIC_EDITS(32),
    {.op = FZ_OWN, .fn = big_varint},
};

int main(int argc, char **argv) {
  g_log_set_default_handler(count_log, NULL);
  fz = (fz_t){.name = "fuzz_control", .corpus_ext = ".thrift", .seed = 20261121,
              .edits = byte_edits, .nedits = G_N_ELEMENTS(byte_edits), .edits_max = 5,
              .stop_when_empty = TRUE};
  fz_start(&fz, argc, argv, 20000);
  make_seeds();
  int ok = fz_write_corpus(&fz) == 0;
  for (guint s = 0; s < fz.seeds->len; s++) {
    GByteArray *seed = fz_seed(&fz, s);
    long before = fuzz_control_processed;
    fz_run(seed->data, seed->len);
    /* Every seed is a legal call, the ones at the caps included. */
    if (fuzz_control_processed == before) {
      fprintf(stderr, "seed %u (%u bytes) was refused before the handlers\n", s, seed->len);
      ok = 0;
    }
  }
  fz_rounds(&fz);
  printf("fuzz_control: %u seeds and %ld mutations served without a crash "
         "(%ld reached the handlers, %ld rejected with a warning, %ld criticals)\n",
         fz.seeds->len, fz.rounds, fuzz_control_processed, warnings, criticals);
  fz_finish(&fz);
  return criticals == 0 && ok ? 0 : 1;
}
