/*
 * Unit tests for directory/caps.c and the handlers that use it, in-process:
 * requests encoded by the generated client go through the directory's
 * request path (dir_rpc_call, as a connection's frames do) with a session
 * of their own.
 *
 * What memory servers and clients rely on: with a cluster key, a session
 * that did not pass the handshake is refused every server-only method
 * (MAYFLY_EPERM) and changes nothing; the handshake passes with the key's
 * proof, refuses a wrong one, and a nonce serves one attempt (a proof
 * replayed on the same or another session is refused); every partition of
 * a layout carries a capability that verifies under the key for its own
 * server, block and generation with READ|WRITE, expiring --capability-ttl
 * from now; a repartition plan carries a migrate capability for its target
 * and slots; servers() gives admins a STAT capability; without a key
 * nothing carries one. --max-servers refuses a new address past it
 * (MAYFLY_EQUOTA) but not a known one.
 *
 * It also prints what a 1,000-partition layout costs to hand out with and
 * without signing (a figure for the report, never asserted).
 */
#include <glib.h>
#include <string.h>
#include <thrift/c_glib/protocol/thrift_compact_protocol.h>
#include <mayfly_directory.h>

#include "common/auth.h"
#include "common/config.h"
#include "common/error.h"
#include "common/frame_transport.h"
#include "common/log.h"
#include "directory/caps.h"
#include "directory/directory.h"
#include "directory/server.h"
#include "mf_test.h"

#define TTL_MS 600000
#define PARTS 1000

static uint8_t key[MF_KEY_SIZE];

/* One in-process directory and a client that talks to it through memory. */
typedef struct {
  uv_loop_t loop;
  dir_t d;
  dir_rpc_t *rpc;
  MfFrameTransport *t;
  ThriftProtocol *proto;
  MayflyDirectoryClient *client;
  GByteArray *reply;
} fixture_t;

static void fixture_init(fixture_t *f, const uint8_t *k, int64_t max_servers) {
  dir_config_t cfg = {.lease_ms = 10000,
                      .grace_ms = 10000,
                      .heartbeat_ms = 1000,
                      .heartbeat_timeout_ms = 5000,
                      .max_frame = 16 << 20,
                      .max_connections = 10,
                      .cluster_key = k,
                      .capability_ttl_ms = TTL_MS,
                      .max_servers = max_servers};
  memset(f, 0, sizeof *f);
  uv_loop_init(&f->loop);
  dir_init(&f->d, &f->loop, &cfg, NULL, NULL);
  f->rpc = dir_rpc_new(&f->d);
  f->t = mf_frame_transport_new(-1, 0, 16 << 20);
  f->proto = g_object_new(THRIFT_TYPE_COMPACT_PROTOCOL, "transport", f->t, NULL);
  f->client = g_object_new(MAYFLY_TYPE_DIRECTORY_CLIENT, "input_protocol", f->proto,
                           "output_protocol", f->proto, NULL);
  f->reply = g_byte_array_new();
  mf_frame_transport_set_input(f->t, NULL, 0);
}

static void fixture_free(fixture_t *f) {
  g_object_unref(f->client);
  g_object_unref(f->proto);
  g_object_unref(f->t);
  g_byte_array_free(f->reply, TRUE);
  dir_rpc_free(f->rpc);
  dir_stop(&f->d);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  dir_free(&f->d);
  uv_loop_close(&f->loop);
}

#define IF(f) MAYFLY_DIRECTORY_IF((f)->client)

/* Runs the request the client just wrote through the directory for session
 * s; its reply is then the client's to read. */
static void roundtrip(fixture_t *f, dir_session_t *s) {
  size_t len = 0;
  const uint8_t *req = mf_frame_transport_output(f->t, &len);
  CU_ASSERT_FATAL(req != NULL && len > 4);
  GByteArray *copy = g_byte_array_new();
  g_byte_array_append(copy, req + 4, (guint)(len - 4));
  g_byte_array_set_size(f->reply, 0);
  char why[160] = "";
  int rc = dir_rpc_call(f->rpc, s, copy->data, copy->len, 0, f->reply, NULL, NULL, why,
                        sizeof why);
  g_byte_array_free(copy, TRUE);
  MF_ASSERT_EQ(rc, 0);
  CU_ASSERT_FATAL(f->reply->len > 4);
  mf_frame_transport_set_input(f->t, f->reply->data + 4, f->reply->len - 4);
}

/* The code of a call's outcome: 0, or the declared error's code. */
static int outcome(fixture_t *f, gboolean ok, MayflyError *err, GError *gerr) {
  int rc = 0;
  if (err != NULL) {
    rc = err->code;
    g_object_unref(err);
  } else if (!ok || gerr != NULL) {
    rc = MAYFLY_EPROTO;
  }
  if (gerr != NULL) g_error_free(gerr);
  mf_frame_transport_set_input(f->t, NULL, 0); /* the next request starts afresh */
  return rc;
}

/* Each call: write the request, run it, read the reply. */
static int call_register(fixture_t *f, dir_session_t *s, const char *address, int blocks,
                         int32_t *id) {
  MayflyError *err = NULL;
  GError *gerr = NULL;
  mayfly_directory_client_send_register_server(IF(f), address, blocks, 65536, 0, 7, "", &gerr);
  roundtrip(f, s);
  MayflyRegisterReply *r = g_object_new(MAYFLY_TYPE_REGISTER_REPLY, NULL);
  gboolean ok = mayfly_directory_client_recv_register_server(IF(f), &r, &err, &gerr);
  if (ok && err == NULL && id != NULL) *id = r->server_id;
  g_object_unref(r);
  return outcome(f, ok, err, gerr);
}

static int call_servers(fixture_t *f, dir_session_t *s, GPtrArray **out) {
  MayflyError *err = NULL;
  GError *gerr = NULL;
  mayfly_directory_client_send_servers(IF(f), &gerr);
  roundtrip(f, s);
  *out = g_ptr_array_new_with_free_func(g_object_unref);
  gboolean ok = mayfly_directory_client_recv_servers(IF(f), out, &err, &gerr);
  return outcome(f, ok, err, gerr);
}

static int call_create(fixture_t *f, dir_session_t *s, const char *path, int blocks) {
  MayflyError *err = NULL;
  GError *gerr = NULL;
  MayflyCreateOptions *o = g_object_new(MAYFLY_TYPE_CREATE_OPTIONS, NULL);
  o->blocks = blocks;
  o->__isset_blocks = TRUE;
  mayfly_directory_client_send_create_ns(IF(f), path, MAYFLY_NODE_KIND_KV, o, 0, 0, &gerr);
  g_object_unref(o);
  roundtrip(f, s);
  MayflyNodeInfo *ni = g_object_new(MAYFLY_TYPE_NODE_INFO, NULL);
  gboolean ok = mayfly_directory_client_recv_create_ns(IF(f), &ni, &err, &gerr);
  g_object_unref(ni);
  return outcome(f, ok, err, gerr);
}

static int call_get_layout(fixture_t *f, dir_session_t *s, const char *path,
                           MayflyLayout **out) {
  MayflyError *err = NULL;
  GError *gerr = NULL;
  mayfly_directory_client_send_get_layout(IF(f), path, &gerr);
  roundtrip(f, s);
  *out = g_object_new(MAYFLY_TYPE_LAYOUT, NULL);
  gboolean ok = mayfly_directory_client_recv_get_layout(IF(f), out, &err, &gerr);
  return outcome(f, ok, err, gerr);
}

static int call_challenge(fixture_t *f, dir_session_t *s, uint8_t nonce[MF_NONCE_SIZE]) {
  MayflyError *err = NULL;
  GError *gerr = NULL;
  mayfly_directory_client_send_cluster_challenge(IF(f), &gerr);
  roundtrip(f, s);
  gchar *hex = NULL;
  gboolean ok = mayfly_directory_client_recv_cluster_challenge(IF(f), &hex, &err, &gerr);
  int rc = outcome(f, ok, err, gerr);
  if (rc == 0) MF_ASSERT_EQ(mf_hex_decode(hex, nonce, MF_NONCE_SIZE), 0);
  g_free(hex);
  return rc;
}

/* cluster_auth with the given client nonce and proof; *answer (may be
 * NULL) receives the directory's proof. */
static int call_auth(fixture_t *f, dir_session_t *s, const uint8_t cnonce[MF_NONCE_SIZE],
                     const uint8_t proof[MF_MAC_SIZE], uint8_t *answer) {
  char cn[2 * MF_NONCE_SIZE + 1], pr[2 * MF_MAC_SIZE + 1];
  mf_hex_encode(cnonce, MF_NONCE_SIZE, cn);
  mf_hex_encode(proof, MF_MAC_SIZE, pr);
  MayflyError *err = NULL;
  GError *gerr = NULL;
  mayfly_directory_client_send_cluster_auth(IF(f), cn, pr, &gerr);
  roundtrip(f, s);
  gchar *hex = NULL;
  gboolean ok = mayfly_directory_client_recv_cluster_auth(IF(f), &hex, &err, &gerr);
  int rc = outcome(f, ok, err, gerr);
  if (rc == 0 && answer != NULL) MF_ASSERT_EQ(mf_hex_decode(hex, answer, MF_MAC_SIZE), 0);
  g_free(hex);
  return rc;
}

/* The whole handshake with key k; returns cluster_auth's outcome. */
static int handshake(fixture_t *f, dir_session_t *s, const uint8_t *k) {
  uint8_t sn[MF_NONCE_SIZE], cn[MF_NONCE_SIZE], proof[MF_MAC_SIZE], answer[MF_MAC_SIZE];
  if (call_challenge(f, s, sn) != 0) return -1;
  mf_auth_random(cn, sizeof cn);
  mf_auth_proof(k, MF_PROOF_CLIENT, sn, cn, proof);
  int rc = call_auth(f, s, cn, proof, answer);
  if (rc == 0) {
    /* The directory proves it holds the key too. */
    uint8_t want[MF_MAC_SIZE];
    mf_auth_proof(k, MF_PROOF_DIRECTORY, sn, cn, want);
    CU_ASSERT(mf_mac_equal(want, answer));
  }
  return rc;
}

static void test_server_methods_need_the_handshake(void) {
  fixture_t f;
  fixture_init(&f, key, 4096);
  dir_session_t anon = {0}, srv = {0};
  MF_ASSERT_EQ(call_register(&f, &anon, "127.0.0.1:7001", 8, NULL), MAYFLY_EPERM);
  CU_ASSERT(srv.cluster == 0);
  /* A wrong key's proof is refused, and so is the right key's on a nonce
   * already used. */
  uint8_t wrong[MF_KEY_SIZE];
  memcpy(wrong, key, sizeof wrong);
  wrong[0] ^= 1;
  MF_ASSERT_EQ(handshake(&f, &srv, wrong), MAYFLY_EPERM);
  CU_ASSERT(srv.cluster == 0);
  MF_ASSERT_EQ(call_register(&f, &srv, "127.0.0.1:7001", 8, NULL), MAYFLY_EPERM);
  GPtrArray *list = NULL;
  MF_ASSERT_EQ(call_servers(&f, &anon, &list), 0);
  MF_ASSERT_EQ(list->len, 0);
  g_ptr_array_free(list, TRUE);

  uint8_t sn[MF_NONCE_SIZE], cn[MF_NONCE_SIZE], proof[MF_MAC_SIZE];
  MF_ASSERT_EQ(call_challenge(&f, &srv, sn), 0);
  mf_auth_random(cn, sizeof cn);
  mf_auth_proof(key, MF_PROOF_CLIENT, sn, cn, proof);
  MF_ASSERT_EQ(call_auth(&f, &srv, cn, proof, NULL), 0);
  CU_ASSERT(srv.cluster == 1);
  int32_t id = 0;
  MF_ASSERT_EQ(call_register(&f, &srv, "127.0.0.1:7001", 8, &id), 0);
  MF_ASSERT_EQ(id, 1);
  /* The proof replayed: on the same session (its nonce is spent) and on
   * another one (whose nonce differs) it is refused. */
  MF_ASSERT_EQ(call_auth(&f, &srv, cn, proof, NULL), MAYFLY_EPERM);
  dir_session_t other = {0};
  uint8_t sn2[MF_NONCE_SIZE];
  MF_ASSERT_EQ(call_challenge(&f, &other, sn2), 0);
  MF_ASSERT_EQ(call_auth(&f, &other, cn, proof, NULL), MAYFLY_EPERM);
  CU_ASSERT(other.cluster == 0);
  MF_ASSERT_EQ(call_register(&f, &other, "127.0.0.1:7002", 8, NULL), MAYFLY_EPERM);
  MF_ASSERT_EQ(call_servers(&f, &anon, &list), 0);
  MF_ASSERT_EQ(list->len, 1);
  g_ptr_array_free(list, TRUE);
  dir_session_clear(&anon);
  dir_session_clear(&srv);
  dir_session_clear(&other);
  fixture_free(&f);
}

static void test_without_key_handshake_is_einval(void) {
  fixture_t f;
  fixture_init(&f, NULL, 4096);
  dir_session_t s = {0};
  uint8_t sn[MF_NONCE_SIZE];
  MF_ASSERT_EQ(call_challenge(&f, &s, sn), MAYFLY_EINVAL);
  /* Open to memory servers, as before. */
  MF_ASSERT_EQ(call_register(&f, &s, "127.0.0.1:7001", PARTS, NULL), 0);
  MF_ASSERT_EQ(call_create(&f, &s, "/kv", 4), 0);
  MayflyLayout *l = NULL;
  MF_ASSERT_EQ(call_get_layout(&f, &s, "/kv", &l), 0);
  MF_ASSERT_EQ(l->partitions->len, 4);
  for (guint i = 0; i < l->partitions->len; i++) {
    MayflyPartition *p = g_ptr_array_index(l->partitions, i);
    CU_ASSERT(!p->__isset_capability);
  }
  g_object_unref(l);
  GPtrArray *list = NULL;
  MF_ASSERT_EQ(call_servers(&f, &s, &list), 0);
  CU_ASSERT(!((MayflyServerInfo *)g_ptr_array_index(list, 0))->__isset_stat_capability);
  g_ptr_array_free(list, TRUE);
  fixture_free(&f);
}

static void test_layouts_carry_capabilities(void) {
  fixture_t f;
  fixture_init(&f, key, 4096);
  dir_session_t srv = {0}, cli = {0};
  MF_ASSERT_EQ(handshake(&f, &srv, key), 0);
  int32_t id = 0;
  MF_ASSERT_EQ(call_register(&f, &srv, "127.0.0.1:7001", PARTS + 24, &id), 0);
  MF_ASSERT_EQ(call_create(&f, &cli, "/big", PARTS), 0);
  MayflyLayout *l = NULL;
  int64_t before = mf_wall_ms();
  MF_ASSERT_EQ(call_get_layout(&f, &cli, "/big", &l), 0);
  int64_t after = mf_wall_ms();
  MF_ASSERT_EQ(l->partitions->len, PARTS);
  int good = 0;
  GHashTable *blocks = g_hash_table_new(g_direct_hash, g_direct_equal);
  for (guint i = 0; i < l->partitions->len; i++) {
    MayflyPartition *p = g_ptr_array_index(l->partitions, i);
    uint8_t bin[MF_CAP_SIZE];
    mf_cap_t c;
    if (!p->__isset_capability || mf_hex_decode(p->capability, bin, sizeof bin) != 0 ||
        mf_cap_verify(key, bin, sizeof bin, &c) != 0) {
      continue;
    }
    if (c.server_id == (uint32_t)p->server_id && c.block_index == (uint32_t)p->block_index &&
        c.generation == (uint64_t)p->generation &&
        c.rights == (MF_RIGHT_READ | MF_RIGHT_WRITE) && c.tenant == 0 &&
        c.expiry_ms >= before + TTL_MS && c.expiry_ms <= after + TTL_MS && c.lo == 0 &&
        c.hi == 0 && c.op_id == 0) {
      good++;
    }
    g_hash_table_add(blocks, GINT_TO_POINTER(p->block_index));
  }
  MF_ASSERT_EQ(good, PARTS);
  MF_ASSERT_EQ(g_hash_table_size(blocks), PARTS);
  g_hash_table_destroy(blocks);
  g_object_unref(l);

  /* Admins (an open directory's clients are) get the STAT capability. */
  GPtrArray *list = NULL;
  MF_ASSERT_EQ(call_servers(&f, &cli, &list), 0);
  MF_ASSERT_EQ(list->len, 1);
  MayflyServerInfo *si = g_ptr_array_index(list, 0);
  CU_ASSERT_FATAL(si->__isset_stat_capability);
  uint8_t bin[MF_CAP_SIZE];
  mf_cap_t c;
  MF_ASSERT_EQ(mf_hex_decode(si->stat_capability, bin, sizeof bin), 0);
  MF_ASSERT_EQ(mf_cap_verify(key, bin, sizeof bin, &c), 0);
  MF_ASSERT_EQ(c.rights, MF_RIGHT_STAT);
  MF_ASSERT_EQ(c.server_id, id);
  CU_ASSERT(c.block_index == MF_CAP_ANY_BLOCK);
  CU_ASSERT(c.generation == 0);
  g_ptr_array_free(list, TRUE);

  /* A migrate capability covers the plan's target and slots only. */
  ns_block_t target = {.server = id, .index = 5, .generation = 9};
  gchar *hex = dir_caps_migrate(&f.d, &target, 100, 200, 42);
  CU_ASSERT_FATAL(hex != NULL);
  MF_ASSERT_EQ(mf_hex_decode(hex, bin, sizeof bin), 0);
  MF_ASSERT_EQ(mf_cap_verify(key, bin, sizeof bin, &c), 0);
  MF_ASSERT_EQ(c.rights, MF_RIGHT_MIGRATE);
  MF_ASSERT_EQ(c.block_index, 5);
  CU_ASSERT(c.generation == 9 && c.lo == 100 && c.hi == 200 && c.op_id == 42);
  g_free(hex);

  /* What handing out the layout costs: the whole get_layout request
   * (fill_layout and encoding the reply), signed and not; and signing
   * alone. A figure for the report, not asserted. */
  const int rounds = 50;
  double us[2];
  for (int signing = 1; signing >= 0; signing--) {
    f.d.cfg.cluster_key = signing ? key : NULL;
    mf_frame_transport_set_input(f.t, NULL, 0);
    mayfly_directory_client_send_get_layout(IF(&f), "/big", NULL);
    size_t len = 0;
    const uint8_t *req = mf_frame_transport_output(f.t, &len);
    GByteArray *msg = g_byte_array_new();
    g_byte_array_append(msg, req + 4, (guint)(len - 4));
    int64_t t0 = g_get_monotonic_time();
    for (int r = 0; r < rounds; r++) {
      g_byte_array_set_size(f.reply, 0);
      char why[160];
      dir_rpc_call(f.rpc, &cli, msg->data, msg->len, 0, f.reply, NULL, NULL, why, sizeof why);
    }
    us[signing] = (double)(g_get_monotonic_time() - t0) / rounds;
    g_byte_array_free(msg, TRUE);
  }
  f.d.cfg.cluster_key = key;
  int64_t t0 = g_get_monotonic_time();
  int64_t exp = dir_caps_expiry(&f.d);
  for (int r = 0; r < rounds; r++) {
    for (int i = 0; i < PARTS; i++) {
      ns_block_t b = {.server = 1, .index = i, .generation = 1};
      g_free(dir_caps_block(&f.d, &b, MF_RIGHT_READ | MF_RIGHT_WRITE, 0, exp));
    }
  }
  double sign_us = (double)(g_get_monotonic_time() - t0) / rounds;
  printf("\n  get_layout of %d partitions: %.0f us signed, %.0f us unsigned (+%.0f%%); "
         "signing %d capabilities alone: %.0f us (%.2f us each)\n",
         PARTS, us[1], us[0], us[0] > 0 ? 100.0 * (us[1] - us[0]) / us[0] : 0.0, PARTS,
         sign_us, sign_us / PARTS);
  dir_session_clear(&srv);
  dir_session_clear(&cli);
  fixture_free(&f);
}

static void test_max_servers(void) {
  fixture_t f;
  fixture_init(&f, NULL, 2);
  dir_session_t s = {0};
  MF_ASSERT_EQ(call_register(&f, &s, "127.0.0.1:7001", 4, NULL), 0);
  MF_ASSERT_EQ(call_register(&f, &s, "127.0.0.1:7002", 4, NULL), 0);
  MF_ASSERT_EQ(call_register(&f, &s, "127.0.0.1:7003", 4, NULL), MAYFLY_EQUOTA);
  /* A server already known registers again (a restart). */
  int32_t id = 0;
  MF_ASSERT_EQ(call_register(&f, &s, "127.0.0.1:7002", 4, &id), 0);
  MF_ASSERT_EQ(id, 2);
  GPtrArray *list = NULL;
  MF_ASSERT_EQ(call_servers(&f, &s, &list), 0);
  MF_ASSERT_EQ(list->len, 2);
  g_ptr_array_free(list, TRUE);
  fixture_free(&f);
}

static int init(void) {
  mf_log_init("test_caps", MF_LOG_OFF);
  if (mf_auth_init() != 0) return 1;
  mf_auth_random(key, sizeof key);
  return 0;
}

static const mf_test_t tests[] = {
    {"server-only methods need the cluster handshake; nonces serve once",
     test_server_methods_need_the_handshake},
    {"without a key: handshake EINVAL, no capabilities", test_without_key_handshake_is_einval},
    {"every partition of a layout carries a valid capability", test_layouts_carry_capabilities},
    {"--max-servers refuses a new address past it", test_max_servers},
    {NULL, NULL}};

int main(void) { return mf_test_run("caps", init, NULL, tests); }
