/*
 * The authenticated cluster (issue 11), against real daemons: a directory
 * and memory servers started with --cluster-key-file.
 *
 * What an operator relies on: a memory server with the directory's key
 * registers and serves (a namespace is created and used through libmayfly),
 * and the layouts the directory hands out carry capabilities that verify
 * under the key for each partition's server, block and generation with
 * read and write rights; a memory server with another key, or with none,
 * cannot register: it says why and exits non-zero, and the directory lists
 * no server for it; a peer without the key (no handshake, or a wrong key)
 * calling any server-only method gets MAYFLY_EPERM and changes nothing: the
 * server list, the tree and the layouts read the same afterwards, and a
 * block released before a forged heartbeat still reaches its real server
 * (it stops serving the block, which a data-plane BLOCK_STAT shows
 * exactly); and a handshake proof captured on one connection is refused on
 * another.
 */
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/mayfly.h"
#include "common/auth.h"
#include "common/ctl.h"
#include "common/error.h"
#include "common/wire.h"
#include "harness.h"
#include "mf_test.h"

static char *scratch;
static char *key_path, *wrong_path;
static uint8_t key[MF_KEY_SIZE], wrong_key[MF_KEY_SIZE];
static mf_daemon_t *dir;
static mf_daemon_t *ms;  /* the memory server with the right key */
static int ms_id;

static char *write_key(const char *name, const uint8_t *k) {
  char *path = g_build_filename(scratch, name, NULL);
  char hex[2 * MF_KEY_SIZE + 2];
  mf_hex_encode(k, MF_KEY_SIZE, hex);
  strcat(hex, "\n");
  if (!g_file_set_contents(path, hex, -1, NULL) || g_chmod(path, 0600) != 0) abort();
  return path;
}

/* Waits up to ms milliseconds for the daemon to exit, leaving it to be
 * reaped by mf_stop (which then returns its status). */
static int exits_within(const mf_daemon_t *d, int ms_max) {
  for (int waited = 0; waited < ms_max; waited += 20) {
    siginfo_t si = {0};
    if (waitid(P_PID, (id_t)d->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == d->pid) {
      return 1;
    }
    mf_sleep_ms(20);
  }
  return 0;
}

/* --- raw control calls (no handshake unless set) --- */

static mf_ctl_t *raw_ctl(const uint8_t *k) {
  mf_ctl_t *c = NULL;
  if (mf_ctl_open(dir->address, 5000, 2000, &c) != 0) return NULL;
  if (k != NULL) mf_ctl_set_auth(c, NULL, k);
  return c;
}

#define CALL(ctl, expr)                                \
  ({                                                   \
    MayflyDirectoryIf *i;                              \
    MayflyError *err = NULL;                           \
    GError *gerr = NULL;                               \
    int rc_ = mf_ctl_begin((ctl), &i);                 \
    if (rc_ == 0) {                                    \
      gboolean ok = (expr);                            \
      rc_ = mf_ctl_end((ctl), ok, err, gerr);          \
    }                                                  \
    rc_;                                               \
  })

static int do_register(mf_ctl_t *c, const char *address) {
  MayflyRegisterReply *r = g_object_new(MAYFLY_TYPE_REGISTER_REPLY, NULL);
  int rc = CALL(c, mayfly_directory_if_register_server(i, &r, address, 16, 65536, 0, 99, "", &err,
                                                        &gerr));
  g_object_unref(r);
  return rc;
}

static int do_heartbeat(mf_ctl_t *c, int id, int *released) {
  MayflyHeartbeatReply *r = g_object_new(MAYFLY_TYPE_HEARTBEAT_REPLY, NULL);
  int rc = CALL(c, mayfly_directory_if_heartbeat(i, &r, id, 0, 0, &err, &gerr));
  if (rc == 0 && released != NULL) *released = (int)r->release->len;
  g_object_unref(r);
  return rc;
}

static int do_check_block(mf_ctl_t *c, int id, int index) {
  MayflyBlockInfo *bi = g_object_new(MAYFLY_TYPE_BLOCK_INFO, NULL);
  int rc = CALL(c, mayfly_directory_if_check_block(i, &bi, id, index, &err, &gerr));
  g_object_unref(bi);
  return rc;
}

static int do_publish(mf_ctl_t *c, int id, int index, int64_t generation) {
  GPtrArray *events = g_ptr_array_new_with_free_func(g_object_unref);
  MayflyDataEvent *e = g_object_new(MAYFLY_TYPE_DATA_EVENT, NULL);
  e->block_index = index;
  e->generation = generation;
  e->kind = MAYFLY_EVENT_KIND_PUT;
  g_free(e->key);
  e->key = g_base64_encode((const guchar *)"k", 1);
  g_ptr_array_add(events, e);
  int rc = CALL(c, mayfly_directory_if_publish(i, id, events, 0, &err, &gerr));
  g_ptr_array_free(events, TRUE);
  return rc;
}

static int do_repart_begin(mf_ctl_t *c, int id, int index, int64_t generation, int64_t split_at,
                           int64_t *op_id) {
  MayflyRepartPlan *p = g_object_new(MAYFLY_TYPE_REPART_PLAN, NULL);
  int rc = CALL(c, mayfly_directory_if_repartition_begin(i, &p, id, index, generation, FALSE,
                                                          split_at, &err, &gerr));
  if (rc == 0 && op_id != NULL) *op_id = p->op_id;
  g_object_unref(p);
  return rc;
}

static int do_repart_end(mf_ctl_t *c, int id, int64_t op_id, int commit) {
  MayflyLayout *l = g_object_new(MAYFLY_TYPE_LAYOUT, NULL);
  int rc = CALL(c, mayfly_directory_if_repartition_end(i, &l, id, op_id, commit, 0, &err,
                                                        &gerr));
  g_object_unref(l);
  return rc;
}

static int do_stat(mf_ctl_t *c, const char *path, MayflyNodeInfo **out) {
  *out = g_object_new(MAYFLY_TYPE_NODE_INFO, NULL);
  return CALL(c, mayfly_directory_if_stat(i, out, path, &err, &gerr));
}

/* Everything a forged server-only call could change, as text: the server
 * list (but for heartbeat ages), the tree's children of "/" and each one's
 * layout (version and partitions, with their lost flags). */
static char *world(mf_ctl_t *c) {
  GString *s = g_string_new("");
  GPtrArray *servers = g_ptr_array_new_with_free_func(g_object_unref);
  int rc = CALL(c, mayfly_directory_if_servers(i, &servers, &err, &gerr));
  g_string_append_printf(s, "servers rc %d\n", rc);
  for (guint k = 0; k < servers->len; k++) {
    MayflyServerInfo *si = g_ptr_array_index(servers, k);
    g_string_append_printf(s, "server %d %s up %d used %d total %d size %lld lost %d\n", si->id,
                           si->address, si->up, si->blocks_used, si->blocks_total,
                           (long long)si->block_size, si->blocks_lost);
  }
  g_ptr_array_free(servers, TRUE);
  GPtrArray *kids = g_ptr_array_new_with_free_func(g_object_unref);
  rc = CALL(c, mayfly_directory_if_list_children(i, &kids, "/", &err, &gerr));
  g_string_append_printf(s, "list rc %d\n", rc);
  for (guint k = 0; k < kids->len; k++) {
    MayflyNodeInfo *ni = g_ptr_array_index(kids, k);
    g_string_append_printf(s, "node %s kind %d version %lld\n", ni->path, ni->kind,
                           (long long)ni->layout->version);
    for (guint p = 0; p < ni->layout->partitions->len; p++) {
      MayflyPartition *mp = g_ptr_array_index(ni->layout->partitions, p);
      g_string_append_printf(s, "  part %d:%d gen %lld [%lld, %lld) lost %d\n", mp->server_id,
                             mp->block_index, (long long)mp->generation, (long long)mp->range_lo,
                             (long long)mp->range_hi, mp->__isset_lost && mp->lost);
    }
  }
  g_ptr_array_free(kids, TRUE);
  return g_string_free(s, FALSE);
}

/* --- the data plane: one BLOCK_STAT with a capability the test signs --- */

static int port_of(const char *address) {
  const char *colon = strrchr(address, ':');
  return colon ? atoi(colon + 1) : -1;
}

/* BLOCK_STAT of (index, generation) on the memory server at `address`,
 * carrying a READ capability for it. Returns the reply's status, or 1 when
 * no reply came. */
static int block_stat(const char *address, int server_id, int index, int64_t generation) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port_of(address))};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  struct timeval tv = {.tv_sec = 3};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return 1;
  }
  mf_cap_t c = {.rights = MF_RIGHT_READ,
                .server_id = (uint32_t)server_id,
                .block_index = (uint32_t)index,
                .generation = (uint64_t)generation,
                .expiry_ms = (int64_t)(g_get_real_time() / 1000) + 60000};
  uint8_t frame[WIRE_HEADER_SIZE + MF_CAP_SIZE];
  wire_hdr_t h = {.opcode = WIRE_OP_BLOCK_STAT,
                  .cap_len = MF_CAP_SIZE,
                  .request_id = 1,
                  .block_index = (uint32_t)index,
                  .generation = (uint64_t)generation};
  wire_encode(&h, frame);
  mf_cap_sign(key, &c, frame + WIRE_HEADER_SIZE);
  int status = 1;
  uint8_t rep[WIRE_HEADER_SIZE];
  size_t got = 0;
  if (send(fd, frame, sizeof frame, MSG_NOSIGNAL) == (ssize_t)sizeof frame) {
    while (got < sizeof rep) {
      ssize_t r = recv(fd, rep + got, sizeof rep - got, 0);
      if (r <= 0) break;
      got += (size_t)r;
    }
  }
  if (got == sizeof rep) {
    status = (int32_t)((uint32_t)rep[48] | (uint32_t)rep[49] << 8 | (uint32_t)rep[50] << 16 |
                       (uint32_t)rep[51] << 24);
  }
  close(fd);
  return status;
}

/* --- tests --- */

static int count_servers(void) {
  mayfly_client_t *c = NULL;
  if (mayfly_connect(dir->address, NULL, &c) != 0) return -1;
  mayfly_server_t *list = NULL;
  size_t n = 0;
  int rc = mayfly_servers(c, &list, &n);
  mayfly_servers_free(list, n);
  mayfly_disconnect(c);
  return rc == 0 ? (int)n : -1;
}

static void refused_memserver(const char *key_file, const char *says) {
  mf_daemon_t *m =
      key_file != NULL
          ? mf_start_in_netns(NULL, "127.0.0.1", "memserver/mayfly-memserver", "--directory",
                              dir->address, "--blocks", "4", "--block-size", "64KiB",
                              "--cluster-key-file", key_file, NULL)
          : mf_start_in_netns(NULL, "127.0.0.1", "memserver/mayfly-memserver", "--directory",
                              dir->address, "--blocks", "4", "--block-size", "64KiB", NULL);
  CU_ASSERT_FATAL(m != NULL);
  CU_ASSERT(exits_within(m, 10000));
  MF_ASSERT_EQ(mf_log_count(m, says), 1);
  int status = mf_stop(m);
  CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 1);
  MF_ASSERT_EQ(count_servers(), 0);
}

static void test_a_memory_server_with_a_wrong_key_cannot_register(void) {
  refused_memserver(wrong_path,
                    "cannot register with the directory: the cluster handshake failed");
  MF_ASSERT_EQ(mf_log_count(dir, "cluster handshake refused: wrong proof"), 1);
}

static void test_a_memory_server_without_the_key_cannot_register(void) {
  refused_memserver(NULL, "cannot register with the directory: the directory requires the "
                          "cluster handshake");
}

static void test_the_same_key_works_and_layouts_carry_capabilities(void) {
  ms = mf_start_memserver(dir, 16, "64KiB", "--cluster-key-file", key_path, NULL);
  CU_ASSERT_FATAL(ms != NULL);
  MF_ASSERT_EQ(count_servers(), 1);
  mayfly_client_t *c = NULL;
  MF_ASSERT_EQ(mayfly_connect(dir->address, NULL, &c), 0);
  mayfly_create_options_t o = {.blocks = 4, .pinned = 1};
  mayfly_ns_t *ns = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, "/kv", MAYFLY_KIND_KV, &o, &ns), 0);
  CU_ASSERT_FATAL(ns != NULL);
  for (int k = 0; k < 50; k++) {
    char kb[16], vb[16];
    snprintf(kb, sizeof kb, "key%d", k);
    snprintf(vb, sizeof vb, "value%d", k);
    MF_ASSERT_EQ(mayfly_kv_put(ns, kb, strlen(kb), vb, strlen(vb)), 0);
  }
  int same = 0;
  for (int k = 0; k < 50; k++) {
    char kb[16], vb[16];
    snprintf(kb, sizeof kb, "key%d", k);
    snprintf(vb, sizeof vb, "value%d", k);
    void *v = NULL;
    size_t vl = 0;
    if (mayfly_kv_get(ns, kb, strlen(kb), &v, &vl) == 0 && vl == strlen(vb) &&
        memcmp(v, vb, vl) == 0) {
      same++;
    }
    mayfly_free(v);
  }
  MF_ASSERT_EQ(same, 50);
  mayfly_unmount(ns);
  mayfly_disconnect(c);

  mf_ctl_t *raw = raw_ctl(NULL);
  CU_ASSERT_FATAL(raw != NULL);
  MayflyNodeInfo *ni = NULL;
  MF_ASSERT_EQ(do_stat(raw, "/kv", &ni), 0);
  MF_ASSERT_EQ(ni->layout->partitions->len, 4);
  int64_t now = g_get_real_time() / 1000;
  int good = 0;
  for (guint p = 0; p < ni->layout->partitions->len; p++) {
    MayflyPartition *mp = g_ptr_array_index(ni->layout->partitions, p);
    ms_id = mp->server_id;
    uint8_t bin[MF_CAP_SIZE];
    mf_cap_t cap;
    if (mp->__isset_capability && mf_hex_decode(mp->capability, bin, sizeof bin) == 0 &&
        mf_cap_verify(key, bin, sizeof bin, &cap) == 0 &&
        cap.server_id == (uint32_t)mp->server_id &&
        cap.block_index == (uint32_t)mp->block_index &&
        cap.generation == (uint64_t)mp->generation &&
        cap.rights == (MF_RIGHT_READ | MF_RIGHT_WRITE) && cap.tenant == 0 &&
        cap.expiry_ms > now + 9 * 60000 && cap.expiry_ms <= now + 11 * 60000) {
      good++;
    }
    /* Not under another key. */
    if (mp->__isset_capability) CU_ASSERT(mf_cap_verify(wrong_key, bin, sizeof bin, &cap) != 0);
  }
  MF_ASSERT_EQ(good, 4);
  g_object_unref(ni);
  mf_ctl_close(raw);
}

/* Every server-only method from a peer that did not pass the handshake
 * (ctl; its calls reach the handlers) is refused and changes nothing. */
static void forge_all(mf_ctl_t *forger, mf_ctl_t *reader, int64_t expect) {
  MayflyNodeInfo *ni = NULL;
  MF_ASSERT_EQ(do_stat(reader, "/kv", &ni), 0);
  MayflyPartition *mp = g_ptr_array_index(ni->layout->partitions, 0);
  int index = mp->block_index;
  int64_t gen = mp->generation;
  int64_t mid = mp->range_lo + (mp->range_hi - mp->range_lo) / 2;
  g_object_unref(ni);
  char *before = world(reader);
  MF_ASSERT_EQ(do_register(forger, "127.0.0.1:1"), expect);
  MF_ASSERT_EQ(do_register(forger, ms->address), expect);
  MF_ASSERT_EQ(do_heartbeat(forger, ms_id, NULL), expect);
  MF_ASSERT_EQ(do_check_block(forger, ms_id, index), expect);
  MF_ASSERT_EQ(do_publish(forger, ms_id, index, gen), expect);
  int64_t op = 0;
  MF_ASSERT_EQ(do_repart_begin(forger, ms_id, index, gen, mid, &op), expect);
  MF_ASSERT_EQ(do_repart_end(forger, ms_id, 1, 1), expect);
  MF_ASSERT_EQ(do_repart_end(forger, ms_id, 1, 0), expect);
  char *after = world(reader);
  CU_ASSERT_STRING_EQUAL(after, before);
  if (strcmp(after, before) != 0) fprintf(stderr, "before:\n%safter:\n%s", before, after);
  g_free(before);
  g_free(after);
}

static void test_a_peer_without_the_key_changes_nothing(void) {
  CU_ASSERT_FATAL(ms != NULL);
  mf_ctl_t *reader = raw_ctl(NULL);
  mf_ctl_t *forger = raw_ctl(NULL);
  CU_ASSERT_FATAL(reader != NULL && forger != NULL);
  int warned = mf_log_count(dir, "did not pass the cluster handshake");
  forge_all(forger, reader, MAYFLY_EPERM);
  MF_ASSERT_EQ(do_heartbeat(forger, ms_id, NULL), MAYFLY_EPERM);
  CU_ASSERT(strstr(mf_last_error(), "cluster authentication required") != NULL);
  /* Each refusal was logged naming the peer. */
  MF_ASSERT_EQ(mf_log_count(dir, "did not pass the cluster handshake") - warned, 9);
  mf_ctl_close(forger);
  /* A peer with a wrong key fails the handshake itself, on every call. */
  mf_ctl_t *wrong = raw_ctl(wrong_key);
  CU_ASSERT_FATAL(wrong != NULL);
  forge_all(wrong, reader, MAYFLY_EPERM);
  MF_ASSERT_EQ(do_heartbeat(wrong, ms_id, NULL), MAYFLY_EPERM);
  CU_ASSERT(strstr(mf_last_error(), "wrong proof") != NULL);
  mf_ctl_close(wrong);
  mf_ctl_close(reader);
}

static void test_a_forged_heartbeat_does_not_steal_releases(void) {
  CU_ASSERT_FATAL(ms != NULL);
  mayfly_client_t *c = NULL;
  MF_ASSERT_EQ(mayfly_connect(dir->address, NULL, &c), 0);
  mayfly_create_options_t o = {.blocks = 1, .pinned = 1};
  mayfly_ns_t *ns = NULL;
  MF_ASSERT_EQ(mayfly_mount(c, "/gone", MAYFLY_KIND_KV, &o, &ns), 0);
  CU_ASSERT_FATAL(ns != NULL);
  MF_ASSERT_EQ(mayfly_kv_put(ns, "a", 1, "b", 1), 0);
  mayfly_unmount(ns);
  mf_ctl_t *raw = raw_ctl(NULL);
  MayflyNodeInfo *ni = NULL;
  MF_ASSERT_EQ(do_stat(raw, "/gone", &ni), 0);
  MayflyPartition *mp = g_ptr_array_index(ni->layout->partitions, 0);
  int index = mp->block_index;
  int64_t gen = mp->generation;
  g_object_unref(ni);
  /* The memory server holds the block. */
  MF_ASSERT_EQ(block_stat(ms->address, ms_id, index, gen), 0);
  /* Paused, it cannot heartbeat: the release waits at the directory until
   * a heartbeat takes it, and the forged one comes first. */
  mf_pause(ms);
  MF_ASSERT_EQ(mayfly_remove(c, "/gone", 0), 0);
  int released = -1;
  MF_ASSERT_EQ(do_heartbeat(raw, ms_id, &released), MAYFLY_EPERM);
  MF_ASSERT_EQ(released, -1);
  mf_resume(ms);
  /* The real server's next heartbeat (every 200 ms) takes the release: it
   * stops serving that generation. */
  int status = 0;
  for (int waited = 0; waited < 5000; waited += 50) {
    status = block_stat(ms->address, ms_id, index, gen);
    if (status == MAYFLY_EMOVED) break;
    mf_sleep_ms(50);
  }
  MF_ASSERT_EQ(status, MAYFLY_EMOVED);
  mf_ctl_close(raw);
  mayfly_disconnect(c);
}

/* A captured cluster_auth (client nonce and proof) replayed: on another
 * connection (another challenge) and on the same one (its nonce is spent). */
static void test_a_replayed_handshake_is_refused(void) {
  mf_ctl_t *a = raw_ctl(NULL), *b = raw_ctl(NULL);
  CU_ASSERT_FATAL(a != NULL && b != NULL);
  gchar *challenge = NULL;
  MF_ASSERT_EQ(CALL(a, mayfly_directory_if_cluster_challenge(i, &challenge, &err, &gerr)), 0);
  uint8_t sn[MF_NONCE_SIZE], cn[MF_NONCE_SIZE], proof[MF_MAC_SIZE];
  CU_ASSERT_FATAL(challenge != NULL && mf_hex_decode(challenge, sn, sizeof sn) == 0);
  g_free(challenge);
  mf_auth_random(cn, sizeof cn);
  mf_auth_proof(key, MF_PROOF_CLIENT, sn, cn, proof);
  char cn_hex[2 * MF_NONCE_SIZE + 1], proof_hex[2 * MF_MAC_SIZE + 1];
  mf_hex_encode(cn, sizeof cn, cn_hex);
  mf_hex_encode(proof, sizeof proof, proof_hex);
  gchar *answer = NULL;
  MF_ASSERT_EQ(
      CALL(a, mayfly_directory_if_cluster_auth(i, &answer, cn_hex, proof_hex, &err, &gerr)), 0);
  /* The directory proved the key in turn. */
  uint8_t theirs[MF_MAC_SIZE], want[MF_MAC_SIZE];
  CU_ASSERT_FATAL(answer != NULL && mf_hex_decode(answer, theirs, sizeof theirs) == 0);
  mf_auth_proof(key, MF_PROOF_DIRECTORY, sn, cn, want);
  CU_ASSERT(mf_mac_equal(theirs, want));
  g_free(answer);
  answer = NULL;
  /* Passed: a server-only call is served on a. */
  MF_ASSERT_EQ(do_check_block(a, ms_id, 0), 0);

  /* b draws its own challenge; a's answer does not fit it. */
  challenge = NULL;
  MF_ASSERT_EQ(CALL(b, mayfly_directory_if_cluster_challenge(i, &challenge, &err, &gerr)), 0);
  g_free(challenge);
  MF_ASSERT_EQ(
      CALL(b, mayfly_directory_if_cluster_auth(i, &answer, cn_hex, proof_hex, &err, &gerr)),
      MAYFLY_EPERM);
  g_free(answer);
  answer = NULL;
  MF_ASSERT_EQ(do_check_block(b, ms_id, 0), MAYFLY_EPERM);
  /* Nor without a challenge, nor twice on a. */
  MF_ASSERT_EQ(
      CALL(b, mayfly_directory_if_cluster_auth(i, &answer, cn_hex, proof_hex, &err, &gerr)),
      MAYFLY_EPERM);
  g_free(answer);
  answer = NULL;
  MF_ASSERT_EQ(
      CALL(a, mayfly_directory_if_cluster_auth(i, &answer, cn_hex, proof_hex, &err, &gerr)),
      MAYFLY_EPERM);
  g_free(answer);
  MF_ASSERT_EQ(do_check_block(b, ms_id, 0), MAYFLY_EPERM);
  mf_ctl_close(a);
  mf_ctl_close(b);
  MF_ASSERT_EQ(count_servers(), 1);
}

static int setup(void) {
  if (mf_auth_init() != 0) return 1;
  scratch = g_dir_make_tmp("mayfly-cluster-XXXXXX", NULL);
  if (scratch == NULL) return 1;
  mf_auth_random(key, sizeof key);
  do {
    mf_auth_random(wrong_key, sizeof wrong_key);
  } while (memcmp(key, wrong_key, sizeof key) == 0);
  key_path = write_key("cluster.key", key);
  wrong_path = write_key("wrong.key", wrong_key);
  dir = mf_start_directory("--cluster-key-file", key_path, "--heartbeat-ms", "200", NULL);
  return dir == NULL;
}

static int teardown(void) {
  if (ms != NULL) mf_stop(ms);
  if (dir != NULL) mf_stop(dir);
  g_unlink(key_path);
  g_unlink(wrong_path);
  g_rmdir(scratch);
  g_free(key_path);
  g_free(wrong_path);
  g_free(scratch);
  return 0;
}

static const mf_test_t tests[] = {
    {"a memory server with a wrong key cannot register",
     test_a_memory_server_with_a_wrong_key_cannot_register},
    {"a memory server without the key cannot register",
     test_a_memory_server_without_the_key_cannot_register},
    {"the same key works and layouts carry capabilities",
     test_the_same_key_works_and_layouts_carry_capabilities},
    {"a peer without the key is refused every server-only method, nothing changes",
     test_a_peer_without_the_key_changes_nothing},
    {"a forged heartbeat does not steal a server's releases",
     test_a_forged_heartbeat_does_not_steal_releases},
    {"a replayed cluster handshake is refused", test_a_replayed_handshake_is_refused},
    {NULL, NULL}};

int main(void) { return mf_test_run("cluster_auth", setup, teardown, tests); }
