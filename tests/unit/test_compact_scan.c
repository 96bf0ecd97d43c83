/*
 * Unit tests for common/compact_scan.c with the directory's caps table
 * (directory/limits.c): every call the generated client writes passes, at
 * the caps; each cap accepts a value at the limit and refuses one past it
 * (lists, strings, maps and the fields of structs inside lists); a field sent twice, of the
 * wrong type or not declared is refused; and the frame the attack used, 4 MiB
 * of empty `publish` structs, is refused, as are its variants that stay under
 * the list cap (a repeated list, an undeclared argument, a few kilobytes
 * that would decode to half a megabyte).
 *
 * Messages are built byte by byte here, as an attacker would, except in the
 * first test, which uses the generated client.
 */
#include <glib.h>
#include <malloc.h>
#include <mayfly_directory.h>
#include <string.h>
#include <thrift/c_glib/protocol/thrift_compact_protocol.h>

#include "common/auth.h"
#include "common/compact_scan.h"
#include "common/error.h"
#include "common/frame_transport.h"
#include "directory/events.h"
#include "directory/limits.h"
#include "mf_test.h"
#include "namespaces/path.h"
#include "namespaces/tree.h"

/* --- a compact-protocol writer --- */

static void u8(GByteArray *b, uint8_t v) {
  g_byte_array_append(b, &v, 1);
}

static void varint(GByteArray *b, uint64_t v) {
  while (v >= 0x80) {
    u8(b, (uint8_t)(v | 0x80));
    v >>= 7;
  }
  u8(b, (uint8_t)v);
}

/* The header of a field `delta` ids after the previous one. */
static void field(GByteArray *b, int delta, uint8_t type) {
  u8(b, (uint8_t)(delta << 4 | type));
}

static void i32v(GByteArray *b, int32_t v) {
  varint(b, (uint32_t)((v << 1) ^ (v >> 31)));
}

static void str(GByteArray *b, const char *s, size_t n) {
  varint(b, n);
  g_byte_array_append(b, (const guint8 *)s, (guint)n);
}

/* A string of n copies of c. */
static void strn(GByteArray *b, char c, size_t n) {
  varint(b, n);
  guint at = b->len;
  g_byte_array_set_size(b, at + (guint)n);
  memset(b->data + at, c, n);
}

static void list_header(GByteArray *b, uint8_t elem, uint64_t n) {
  if (n < 15) {
    u8(b, (uint8_t)(n << 4 | elem));
  } else {
    u8(b, (uint8_t)(0xf0 | elem));
    varint(b, n);
  }
}

static GByteArray *call(const char *method) {
  GByteArray *b = g_byte_array_new();
  u8(b, 0x82);
  u8(b, 0x21); /* version 1, type call */
  u8(b, 0);    /* seqid */
  str(b, method, strlen(method));
  return b;
}

/* One data event as a memory server writes it: all six fields. */
static void data_event(GByteArray *b, size_t keylen) {
  field(b, 1, MF_CT_I32);
  i32v(b, 3);
  field(b, 1, MF_CT_I64);
  i32v(b, 7);
  field(b, 1, MF_CT_I32);
  i32v(b, DIR_EV_PUT);
  field(b, 1, MF_CT_STRING);
  strn(b, 'A', keylen);
  field(b, 1, MF_CT_I64);
  i32v(b, 0);
  field(b, 1, MF_CT_I64);
  i32v(b, 3);
  u8(b, 0);
}

/* publish(server_id 1, n events with keys of keylen). */
static GByteArray *publish(uint64_t n, size_t keylen) {
  GByteArray *b = call("publish");
  field(b, 1, MF_CT_I32);
  i32v(b, 1);
  field(b, 1, MF_CT_LIST);
  list_header(b, MF_CT_STRUCT, n);
  for (uint64_t i = 0; i < n; i++) data_event(b, keylen);
  u8(b, 0);
  return b;
}

/* publish(1, n empty structs): the attack. */
static GByteArray *publish_empty(uint64_t n) {
  GByteArray *b = call("publish");
  field(b, 1, MF_CT_I32);
  i32v(b, 1);
  field(b, 1, MF_CT_LIST);
  list_header(b, MF_CT_STRUCT, n);
  guint at = b->len;
  g_byte_array_set_size(b, at + (guint)n);
  memset(b->data + at, 0, n);
  u8(b, 0);
  return b;
}

static char why[256];

/* Scans b against the directory's table; frees b. */
static int scan(GByteArray *b) {
  why[0] = '\0';
  mf_compact_msg_t m;
  int rc = mf_compact_scan(b->data, b->len, MF_COMPACT_MAX_DEPTH, dir_limits, &m, why,
                           sizeof why);
  if (rc == 0) MF_ASSERT_EQ(m.cost <= MF_COMPACT_COST_RATIO * b->len + MF_COMPACT_COST_FLOOR, 1);
  g_byte_array_free(b, TRUE);
  return rc;
}

#define EXPECT_REFUSED(b, text)                                      \
  do {                                                               \
    MF_ASSERT_EQ(scan(b), MAYFLY_EPROTO);                            \
    if (strstr(why, (text)) == NULL) fprintf(stderr, "  why: %s\n", why); \
    CU_ASSERT_PTR_NOT_NULL(strstr(why, (text)));                     \
  } while (0)

/* --- the generated client's calls --- */

static MfFrameTransport *tr;
static int client_calls, client_passed;

/* Scans what the client just wrote (minus the frame length). */
static void scan_written(void) {
  size_t len;
  const uint8_t *f = mf_frame_transport_output(tr, &len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  char w[256] = "";
  int rc = mf_compact_scan(f + 4, len - 4, MF_COMPACT_MAX_DEPTH, dir_limits, NULL, w, sizeof w);
  if (rc != 0) fprintf(stderr, "  refused: %s\n", w);
  client_calls++;
  client_passed += rc == 0;
  mf_frame_transport_set_input(tr, NULL, 0);
}

static void test_every_call_the_generated_client_writes_passes_the_table(void) {
  tr = mf_frame_transport_new(-1, 0, 16 << 20);
  ThriftProtocol *p = g_object_new(THRIFT_TYPE_COMPACT_PROTOCOL, "transport", tr, NULL);
  MayflyDirectoryClient *cl = g_object_new(MAYFLY_TYPE_DIRECTORY_CLIENT, "input_protocol", p,
                                           "output_protocol", p, NULL);
  MayflyDirectoryIf *i = MAYFLY_DIRECTORY_IF(cl);
  GError *e = NULL;
  char *path = g_strnfill(2 * NS_PATH_MAX, 'p');
  path[0] = '/';
  MayflyCreateOptions *co = g_object_new(MAYFLY_TYPE_CREATE_OPTIONS, NULL);
  co->blocks = 2;
  for (int t = 0; t < 2 * NS_TAGS_MAX; t++) { /* at the caps, twice the tree's limits */
    char k[2 * NS_TAG_KEY_MAX + 1];
    g_snprintf(k, sizeof k, "%0*d", 2 * NS_TAG_KEY_MAX, t);
    g_hash_table_insert(co->tags, g_strdup(k), g_strnfill(2 * NS_TAG_VALUE_MAX, 'v'));
  }
  GPtrArray *paths = g_ptr_array_new_with_free_func(g_free);
  for (int k = 0; k < 1000; k++) g_ptr_array_add(paths, g_strdup_printf("/job/%d", k));
  GPtrArray *evs = g_ptr_array_new_with_free_func(g_object_unref);
  for (int k = 0; k < 1024; k++) { /* MS_PUB_BATCH_MAX, with the longest key */
    MayflyDataEvent *de = g_object_new(MAYFLY_TYPE_DATA_EVENT, NULL);
    de->kind = MAYFLY_EVENT_KIND_PUT;
    de->key = g_strnfill(DIR_EVENT_KEY_MAX, 'Q');
    g_ptr_array_add(evs, de);
  }
  mayfly_directory_client_send_mkdir(i, path, TRUE, 7, 8, &e), scan_written();
  mayfly_directory_client_send_create_ns(i, path, MAYFLY_NODE_KIND_KV, co, 7, 8, &e), scan_written();
  mayfly_directory_client_send_open_ns(i, path, &e), scan_written();
  mayfly_directory_client_send_open_or_create(i, path, MAYFLY_NODE_KIND_QUEUE, co, &e),
      scan_written();
  mayfly_directory_client_send_remove(i, path, TRUE, 7, 8, &e), scan_written();
  mayfly_directory_client_send_rename(i, path, path, 7, 8, &e), scan_written();
  mayfly_directory_client_send_exists(i, path, &e), scan_written();
  mayfly_directory_client_send_stat(i, path, &e), scan_written();
  mayfly_directory_client_send_list_children(i, path, &e), scan_written();
  mayfly_directory_client_send_renew(i, paths, &e), scan_written();
  mayfly_directory_client_send_get_layout(i, path, &e), scan_written();
  mayfly_directory_client_send_add_block(i, path, 1, 2, 7, 8, &e), scan_written();
  mayfly_directory_client_send_remove_block(i, path, 1, 7, 8, &e), scan_written();
  mayfly_directory_client_send_release_range(i, path, 1, &e), scan_written();
  mayfly_directory_client_send_register_server(i, "127.0.0.1:7001", 64, 4096, 9, 77, "", &e),
      scan_written();
  mayfly_directory_client_send_check_block(i, 1, 2, &e), scan_written();
  mayfly_directory_client_send_heartbeat(i, 1, 2, 3, &e), scan_written();
  mayfly_directory_client_send_servers(i, &e), scan_written();
  mayfly_directory_client_send_leases(i, path, &e), scan_written();
  mayfly_directory_client_send_stats(i, &e), scan_written();
  mayfly_directory_client_send_repartition_begin(i, 1, 2, 3, TRUE, 5, &e), scan_written();
  mayfly_directory_client_send_repartition_end(i, 1, 2, TRUE, 4, &e), scan_written();
  mayfly_directory_client_send_replica_end(i, 1, 2, TRUE, 4, &e), scan_written();
  mayfly_directory_client_send_truncate(i, path, 100, &e), scan_written();
  mayfly_directory_client_send_watch(i, path, 0, 1, 2, 3, 4, &e), scan_written();
  mayfly_directory_client_send_publish(i, 1, evs, 7, &e), scan_written();
  char *token = g_strnfill(DIR_TOKEN_MAX, 't');
  char *hex = g_strnfill(2 * MF_NONCE_SIZE, 'a');
  mayfly_directory_client_send_login(i, token, &e), scan_written();
  mayfly_directory_client_send_cluster_challenge(i, &e), scan_written();
  mayfly_directory_client_send_cluster_auth(i, hex, hex, &e), scan_written();
  mayfly_directory_client_send_tenants(i, &e), scan_written();
  mayfly_directory_client_send_cluster(i, &e), scan_written();
  g_free(token);
  g_free(hex);
  MF_ASSERT_EQ(client_calls, 31);
  MF_ASSERT_EQ(client_passed, client_calls);
  /* The table names each of the service's 31 methods once. */
  int n = 0;
  for (const mf_compact_method_t *m = dir_limits; m->name != NULL; m++, n++) {
    for (const mf_compact_method_t *o = dir_limits; o != m; o++) {
      CU_ASSERT(strcmp(o->name, m->name) != 0);
    }
  }
  MF_ASSERT_EQ(n, 31);
  g_ptr_array_free(evs, TRUE);
  g_ptr_array_free(paths, TRUE);
  g_object_unref(co);
  g_free(path);
  g_object_unref(cl);
  g_object_unref(p);
  g_object_unref(tr);
}

/* --- lists --- */

static void test_publish_takes_4096_events_and_refuses_4097(void) {
  MF_ASSERT_EQ(scan(publish(DIR_PUBLISH_MAX_EVENTS, 4)), 0);
  EXPECT_REFUSED(publish(DIR_PUBLISH_MAX_EVENTS + 1, 4),
                 "publish: events: 4097 elements, at most 4096");
}

static GByteArray *renew(uint64_t n) {
  GByteArray *b = call("renew");
  field(b, 1, MF_CT_LIST);
  list_header(b, MF_CT_STRING, n);
  for (uint64_t i = 0; i < n; i++) str(b, "/job", 4);
  u8(b, 0);
  return b;
}

static void test_renew_takes_100000_paths_and_refuses_100001(void) {
  MF_ASSERT_EQ(scan(renew(DIR_RENEW_MAX_PATHS)), 0);
  EXPECT_REFUSED(renew(DIR_RENEW_MAX_PATHS + 1), "renew: paths: 100001 elements, at most 100000");
}

/* --- strings --- */

static GByteArray *mkdir_of(size_t len) {
  GByteArray *b = call("mkdir");
  field(b, 1, MF_CT_STRING);
  strn(b, 'a', len);
  field(b, 1, MF_CT_BOOL); /* true */
  u8(b, 0);
  return b;
}

/* A path a person typed may be up to twice too long and still reach the
 * handler, whose error names the rule; past that it is refused unread. */
static void test_a_path_of_8192_bytes_reaches_the_handler_and_8193_is_refused(void) {
  MF_ASSERT_EQ(scan(mkdir_of(NS_PATH_MAX + 1)), 0);
  MF_ASSERT_EQ(scan(mkdir_of(2 * NS_PATH_MAX)), 0);
  EXPECT_REFUSED(mkdir_of(2 * NS_PATH_MAX + 1), "mkdir: path: string of 8193 bytes, at most 8192");
}

static void test_a_paths_element_and_an_address_are_held_to_their_caps(void) {
  GByteArray *b = call("renew");
  field(b, 1, MF_CT_LIST);
  list_header(b, MF_CT_STRING, 2);
  str(b, "/a", 2);
  strn(b, '/', 2 * NS_PATH_MAX + 1);
  u8(b, 0);
  EXPECT_REFUSED(b, "renew: paths: string of 8193 bytes, at most 8192");

  for (int over = 0; over <= 1; over++) {
    b = call("register_server");
    field(b, 1, MF_CT_STRING);
    strn(b, 'h', DIR_ADDRESS_MAX + over);
    field(b, 1, MF_CT_I32);
    i32v(b, 8);
    u8(b, 0);
    if (over) {
      EXPECT_REFUSED(b, "register_server: address: string of 264 bytes, at most 263");
    } else {
      MF_ASSERT_EQ(scan(b), 0);
    }
  }
}

/* --- nested structs --- */

/* create_ns("/kv", KV, {tags: ntags entries, the last value vlen bytes}). */
static GByteArray *create_with_tags(uint64_t ntags, size_t vlen) {
  GByteArray *b = call("create_ns");
  field(b, 1, MF_CT_STRING);
  str(b, "/kv", 3);
  field(b, 1, MF_CT_I32);
  i32v(b, 3);
  field(b, 1, MF_CT_STRUCT);
  field(b, 1, MF_CT_I32);
  i32v(b, 1);
  field(b, 3, MF_CT_MAP);
  varint(b, ntags);
  if (ntags > 0) u8(b, MF_CT_STRING << 4 | MF_CT_STRING);
  for (uint64_t i = 0; i < ntags; i++) {
    char k[16];
    int n = g_snprintf(k, sizeof k, "k%llu", (unsigned long long)i);
    str(b, k, (size_t)n);
    strn(b, 'v', i + 1 == ntags ? vlen : 1);
  }
  u8(b, 0); /* end of opts */
  u8(b, 0); /* end of the arguments */
  return b;
}

static void test_create_options_tags_are_held_to_64_entries_and_512_byte_values(void) {
  MF_ASSERT_EQ(scan(create_with_tags(2 * NS_TAGS_MAX, 2 * NS_TAG_VALUE_MAX)), 0);
  EXPECT_REFUSED(create_with_tags(2 * NS_TAGS_MAX + 1, 1),
                 "create_ns: opts: tags: 65 elements, at most 64");
  EXPECT_REFUSED(create_with_tags(1, 2 * NS_TAG_VALUE_MAX + 1),
                 "create_ns: opts: tags: string of 513 bytes, at most 512");
}

static void test_the_key_of_an_event_inside_the_list_is_held_to_1368_characters(void) {
  MF_ASSERT_EQ(scan(publish(3, DIR_EVENT_KEY_MAX)), 0);
  EXPECT_REFUSED(publish(3, DIR_EVENT_KEY_MAX + 1),
                 "publish: events: key: string of 1369 bytes, at most 1368");
}

/* --- what the table does not allow at all --- */

static void test_a_field_twice_of_the_wrong_type_or_undeclared_is_refused(void) {
  /* The generated reader would append the second list to the first. */
  GByteArray *b = call("publish");
  field(b, 2, MF_CT_LIST);
  list_header(b, MF_CT_STRUCT, 1);
  data_event(b, 4);
  field(b, 0, MF_CT_LIST);
  i32v(b, 2); /* explicit id 2 again (zigzag i16) */
  list_header(b, MF_CT_STRUCT, 1);
  data_event(b, 4);
  u8(b, 0);
  EXPECT_REFUSED(b, "publish: events: sent twice");

  b = call("publish");
  field(b, 2, MF_CT_STRING);
  str(b, "x", 1);
  u8(b, 0);
  EXPECT_REFUSED(b, "publish: events: wire type 8, declared 9");

  b = call("publish");
  field(b, 2, MF_CT_LIST);
  list_header(b, MF_CT_I32, 2);
  i32v(b, 1);
  i32v(b, 2);
  u8(b, 0);
  EXPECT_REFUSED(b, "publish: events: elements of the wrong type");

  b = call("publish");
  field(b, 4, MF_CT_I32);
  i32v(b, 1);
  u8(b, 0);
  EXPECT_REFUSED(b, "publish: argument 4 is not declared");

  b = call("publish");
  field(b, 2, MF_CT_LIST);
  list_header(b, MF_CT_STRUCT, 1);
  field(b, 9, MF_CT_I32);
  i32v(b, 1);
  u8(b, 0);
  u8(b, 0);
  EXPECT_REFUSED(b, "publish: events: field 9 is not declared");

  EXPECT_REFUSED(call("frobnicate"), "unknown method 'frobnicate'");
  b = call("stats");
  b->data[1] = 0x41; /* a reply, not a call */
  u8(b, 0);
  EXPECT_REFUSED(b, "stats: not a call");
}

/* --- the attack --- */

static void test_a_4_mib_frame_of_empty_publish_structs_is_refused_at_the_list_header(void) {
  const uint64_t n = (4u << 20) - 32;
  GByteArray *b = publish_empty(n);
  MF_ASSERT_EQ(b->len <= (4u << 20), 1);
  char want[96];
  g_snprintf(want, sizeof want, "publish: events: %llu elements, at most 4096",
             (unsigned long long)n);
  EXPECT_REFUSED(b, want);
}

static void test_the_attack_split_under_the_list_cap_is_refused_too(void) {
  /* 4096 empty structs, then the same list again and again. */
  GByteArray *b = call("publish");
  for (int k = 0; k < 1000; k++) {
    if (k == 0) {
      field(b, 2, MF_CT_LIST);
    } else {
      field(b, 0, MF_CT_LIST);
      i32v(b, 2);
    }
    list_header(b, MF_CT_STRUCT, DIR_PUBLISH_MAX_EVENTS);
    guint at = b->len;
    g_byte_array_set_size(b, at + DIR_PUBLISH_MAX_EVENTS);
    memset(b->data + at, 0, DIR_PUBLISH_MAX_EVENTS);
  }
  u8(b, 0);
  EXPECT_REFUSED(b, "publish: events: sent twice");

  /* Four million empty structs where Thrift would only skip them. */
  b = call("publish");
  field(b, 4, MF_CT_LIST);
  list_header(b, MF_CT_STRUCT, 4u << 20);
  g_byte_array_set_size(b, b->len + (4u << 20) + 1);
  EXPECT_REFUSED(b, "publish: argument 4 is not declared");

  /* At the cap but empty: 4 KiB that would decode to over half a megabyte
   * (136 bytes per event, measured). */
  EXPECT_REFUSED(publish_empty(DIR_PUBLISH_MAX_EVENTS), "publish: decodes to more than");
}

static void test_without_a_table_only_the_structure_is_checked(void) {
  GByteArray *b = publish_empty(1u << 20);
  MF_ASSERT_EQ(mf_compact_scan(b->data, b->len, MF_COMPACT_MAX_DEPTH, NULL, NULL, why, sizeof why), 0);
  b->len--; /* no end of the arguments */
  MF_ASSERT_EQ(mf_compact_scan(b->data, b->len, MF_COMPACT_MAX_DEPTH, NULL, NULL, why, sizeof why),
               MAYFLY_EPROTO);
  g_byte_array_free(b, TRUE);
}

/* --- what a maximal legal frame costs decoded --- */

static size_t heap_in_use(void) {
  struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

/* Decodes the arguments of the call in b (of type args_type) as the
 * processor would, and checks that what they hold in memory stays within
 * the scan's estimate, itself within the cost bound. Frees b. */
static void check_decoded_cost(const char *what, GType args_type, GByteArray *b) {
  mf_compact_msg_t m;
  why[0] = '\0';
  int rc = mf_compact_scan(b->data, b->len, MF_COMPACT_MAX_DEPTH, dir_limits, &m, why, sizeof why);
  if (rc != 0) fprintf(stderr, "  %s refused: %s\n", what, why);
  MF_ASSERT_EQ(rc, 0);
  MfFrameTransport *t = mf_frame_transport_new(-1, 0, 16 << 20);
  ThriftProtocol *p = g_object_new(THRIFT_TYPE_COMPACT_PROTOCOL, "transport", t, "string_limit",
                                   16 << 20, "container_limit", 16 << 20, NULL);
  mf_frame_transport_set_input(t, b->data, b->len);
  gchar *name = NULL;
  ThriftMessageType mt;
  gint32 seq;
  GError *e = NULL;
  MF_ASSERT_EQ(thrift_protocol_read_message_begin(p, &name, &mt, &seq, &e) > 0, 1);
  /* A first decode initialises the classes of the nested structs (their
   * property specs are allocated once per process, not per frame). */
  GObject *warm = g_object_new(args_type, NULL);
  MF_ASSERT_EQ(thrift_struct_read(THRIFT_STRUCT(warm), p, &e) > 0, 1);
  g_object_unref(warm);
  g_free(name);
  mf_frame_transport_set_input(t, b->data, b->len);
  MF_ASSERT_EQ(thrift_protocol_read_message_begin(p, &name, &mt, &seq, &e) > 0, 1);
  GObject *args = g_object_new(args_type, NULL);
  size_t before = heap_in_use();
  MF_ASSERT_EQ(thrift_struct_read(THRIFT_STRUCT(args), p, &e) > 0, 1);
  size_t decoded = heap_in_use() - before;
  fprintf(stderr, "  %s: %u-byte frame decodes to %zu bytes (%.2fx), estimated %zu\n", what,
          b->len, decoded, (double)decoded / b->len, m.cost);
  /* mallinfo2 says nothing under a sanitizer's allocator. */
  if (before > 0) CU_ASSERT(decoded > 0 && decoded <= m.cost);
  CU_ASSERT(m.cost <= (size_t)MF_COMPACT_COST_RATIO * b->len + MF_COMPACT_COST_FLOOR);
  g_clear_error(&e);
  g_object_unref(args);
  g_free(name);
  g_object_unref(p);
  g_object_unref(t);
  g_byte_array_free(b, TRUE);
}

static void test_a_maximal_legal_frame_decodes_within_the_estimate_and_the_bound(void) {
  /* The most events, the smallest real ones; and events with the longest
   * key, as many as fit in a 4 MiB frame. */
  check_decoded_cost("publish, 4096 events, empty keys", MAYFLY_TYPE_DIRECTORY_PUBLISH_ARGS,
                     publish(DIR_PUBLISH_MAX_EVENTS, 0));
  check_decoded_cost("publish, 2990 events, 1368-byte keys", MAYFLY_TYPE_DIRECTORY_PUBLISH_ARGS,
                     publish(2990, DIR_EVENT_KEY_MAX));
  check_decoded_cost("renew, 100000 paths of 4 bytes", MAYFLY_TYPE_DIRECTORY_RENEW_ARGS,
                     renew(DIR_RENEW_MAX_PATHS));
  check_decoded_cost("create_ns, 64 tags, a value of 512 bytes", MAYFLY_TYPE_DIRECTORY_CREATE_NS_ARGS,
                     create_with_tags(2 * NS_TAGS_MAX, 2 * NS_TAG_VALUE_MAX));
}

int main(void) {
  /* Every object straight from malloc, so that mallinfo2 sees what a
   * decoded frame holds (GLib 2.74 would otherwise serve GObjects from
   * slice magazines filled by earlier tests). */
  g_setenv("G_SLICE", "always-malloc", TRUE);
  static const mf_test_t tests[] = {
      {"a maximal legal frame decodes within the estimate and the bound",
       test_a_maximal_legal_frame_decodes_within_the_estimate_and_the_bound},
      {"every call the generated client writes passes the table",
       test_every_call_the_generated_client_writes_passes_the_table},
      {"publish takes 4096 events and refuses 4097", test_publish_takes_4096_events_and_refuses_4097},
      {"renew takes 100000 paths and refuses 100001", test_renew_takes_100000_paths_and_refuses_100001},
      {"a path of 8192 bytes reaches the handler and 8193 is refused",
       test_a_path_of_8192_bytes_reaches_the_handler_and_8193_is_refused},
      {"a paths element and an address are held to their caps",
       test_a_paths_element_and_an_address_are_held_to_their_caps},
      {"create options' tags are held to 64 entries and 512-byte values",
       test_create_options_tags_are_held_to_64_entries_and_512_byte_values},
      {"the key of an event inside the list is held to 1368 characters",
       test_the_key_of_an_event_inside_the_list_is_held_to_1368_characters},
      {"a field twice, of the wrong type or undeclared is refused",
       test_a_field_twice_of_the_wrong_type_or_undeclared_is_refused},
      {"a 4 MiB frame of empty publish structs is refused at the list header",
       test_a_4_mib_frame_of_empty_publish_structs_is_refused_at_the_list_header},
      {"the attack split under the list cap is refused too",
       test_the_attack_split_under_the_list_cap_is_refused_too},
      {"without a table only the structure is checked",
       test_without_a_table_only_the_structure_is_checked},
      {NULL, NULL}};
  return mf_test_run("compact_scan", NULL, NULL, tests);
}
