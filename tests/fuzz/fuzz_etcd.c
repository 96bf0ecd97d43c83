/*
 * Fuzz target for the etcd client's decoders (directory/etcd.c): the reply
 * of every request kind (dir_etcd_parse_reply) and the lines of a watch
 * stream (dir_etcd_parse_watch_line), fed arbitrary bytes as etcd's JSON
 * gateway would send them.
 *
 * The first byte chooses the decoder: byte % 9 < 8 is a reply to that
 * dir_etcd_op_t, 8 is a watch stream (the rest split at newlines, each line
 * decoded as the client does). A decoder answers 0, MAYFLY_EPROTO or (a
 * reply) MAYFLY_ETOOBIG and never reads past its input (the replay hands a
 * heap copy of exactly its length, for AddressSanitizer). An accepted
 * reply's kvs all have a key and a value; a refused one says why; an
 * accepted watch line's events all have a key and a value, and a canceled
 * one says why. Any wrong answer aborts; the counters tell the replay
 * driver which outcomes its inputs reached.
 */
#include <glib.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/error.h"
#include "directory/etcd.h"
#include "fz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

long fuzz_etcd_accepted, fuzz_etcd_refused, fuzz_etcd_kvs, fuzz_etcd_lines, fuzz_etcd_bad_lines,
    fuzz_etcd_events, fuzz_etcd_canceled;

static void check_kv(const dir_etcd_kv_t *kv) {
  FZ_CHECK(kv->key != NULL);
  FZ_CHECK(kv->value != NULL);
  gsize n = 0;
  const uint8_t *v = g_bytes_get_data(kv->value, &n);
  /* Touch every byte of the value: it must be ours to read. */
  unsigned sum = 0;
  for (gsize i = 0; i < n; i++) sum += v[i];
  (void)sum;
}

static void reply(dir_etcd_op_t op, const char *p, size_t len) {
  dir_etcd_result_t r;
  dir_etcd_result_init(&r);
  int retry = 0;
  int rc = dir_etcd_parse_reply(op, p, len, &r, &retry);
  FZ_CHECK(rc == r.rc);
  FZ_CHECK(rc == 0 || rc == MAYFLY_EPROTO || rc == MAYFLY_ETOOBIG);
  FZ_CHECK(memchr(r.why, '\0', sizeof r.why) != NULL);
  FZ_CHECK(r.kvs != NULL);
  if (rc == 0) {
    fuzz_etcd_accepted++;
    FZ_CHECK(r.why[0] == '\0');
    for (guint i = 0; i < r.kvs->len; i++) check_kv(g_ptr_array_index(r.kvs, i));
    fuzz_etcd_kvs += r.kvs->len;
  } else {
    fuzz_etcd_refused++;
    FZ_CHECK(r.why[0] != '\0');
    FZ_CHECK(!retry || rc == MAYFLY_EPROTO);
  }
  dir_etcd_result_clear(&r);
}

static void watch_stream(const char *p, size_t len) {
  size_t start = 0;
  while (start < len) {
    const char *nl = memchr(p + start, '\n', len - start);
    size_t n = nl != NULL ? (size_t)(nl - (p + start)) : len - start;
    /* Each line in a heap copy of its own length, as the client's buffer
     * would hand it (no terminator after it). */
    char *line = g_memdup2(p + start, n);
    dir_etcd_watch_msg_t m;
    dir_etcd_watch_msg_init(&m);
    int rc = dir_etcd_parse_watch_line(line, n, &m);
    FZ_CHECK(rc == 0 || rc == MAYFLY_EPROTO);
    FZ_CHECK(memchr(m.why, '\0', sizeof m.why) != NULL);
    if (rc == 0) {
      fuzz_etcd_lines++;
      for (guint i = 0; i < m.events->len; i++) check_kv(&g_array_index(m.events, dir_etcd_event_t, i).kv);
      fuzz_etcd_events += m.events->len;
      if (m.canceled) {
        fuzz_etcd_canceled++;
        FZ_CHECK(m.why[0] != '\0');
      }
    } else {
      fuzz_etcd_bad_lines++;
      FZ_CHECK(m.why[0] != '\0');
    }
    dir_etcd_watch_msg_clear(&m);
    g_free(line);
    start += n + 1;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  int which = data[0] % 9;
  const char *p = (const char *)data + 1;
  if (which < 8) {
    reply((dir_etcd_op_t)which, p, size - 1);
  } else {
    watch_stream(p, size - 1);
  }
  return 0;
}
