/*
 * Fencing a deposed leader (issue 14): one etcd, three directories
 * (--leader-ttl 2s), three memory servers, a few threads creating and
 * removing namespaces through the address list (history.h).
 *
 * The leader is stopped (SIGSTOP) until another directory leads. While it
 * is stopped, raw one-address clients (the generated Thrift client over a
 * socket of their own: no leader following, no resend) send mkdirs to it;
 * they wait in its sockets. Then it continues (SIGCONT). The test asserts:
 * none of those mkdirs is acknowledged (each gets an error or a closed
 * connection) and none of their paths exists on the new leader; the old
 * leader steps down (its cluster() says standby, same PID: it re-executed
 * itself); everything the service acknowledged, before and after, is there
 * (the history check), and no call of the service's clients failed outside
 * the window from the stop to the new leader's first acknowledged write.
 *
 * Exits 77 (skipped) when etcd is not installed.
 */
#include <glib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thrift/c_glib/protocol/thrift_compact_protocol.h>

#include "common/frame_transport.h"
#include "ha.h"
#include "history.h"
#include "mf_test.h"

#define NRAW 6       /* raw clients: half connected before the stop, half after */
#define RAW_MS 20000 /* a raw call's send and reply together */

static mf_ha_t H;

/* One control connection of the test's own, to one address. */
typedef struct {
  int fd;
  MfFrameTransport *transport;
  ThriftProtocol *protocol;
  MayflyDirectoryClient *client;
} raw_t;

static int raw_open(raw_t *r, int port) {
  memset(r, 0, sizeof *r);
  r->fd = mf_raw_connect(port, 0);
  if (r->fd < 0) return -1;
  r->transport = mf_frame_transport_new(r->fd, RAW_MS, MF_FRAME_MAX_DEFAULT);
  r->protocol = g_object_new(THRIFT_TYPE_COMPACT_PROTOCOL, "transport", r->transport, NULL);
  r->client = g_object_new(MAYFLY_TYPE_DIRECTORY_CLIENT, "input_protocol", r->protocol,
                           "output_protocol", r->protocol, NULL);
  return 0;
}

static void raw_close(raw_t *r) {
  if (r->client) g_object_unref(r->client);
  if (r->protocol) g_object_unref(r->protocol);
  if (r->transport) g_object_unref(r->transport);
  if (r->fd >= 0) close(r->fd);
  memset(r, 0, sizeof *r);
  r->fd = -1;
}

/* Sends mkdir(path) without waiting for the reply. 0 or -1. */
static int raw_send_mkdir(raw_t *r, const char *path, int64_t client_id, int64_t seq) {
  GError *gerr = NULL;
  gboolean ok = mayfly_directory_client_send_mkdir(MAYFLY_DIRECTORY_IF(r->client), path, FALSE,
                                                   client_id, seq, &gerr);
  if (gerr != NULL) {
    fprintf(stderr, "ha_fencing: send mkdir %s: %s\n", path, gerr->message);
    g_error_free(gerr);
  }
  return ok ? 0 : -1;
}

/* The reply to a mkdir sent: 0 when acknowledged, the directory's error
 * code, or MAYFLY_EIO when the connection failed or closed. */
static int raw_recv_mkdir(raw_t *r, char *why, size_t len) {
  MayflyError *err = NULL;
  GError *gerr = NULL;
  gboolean ok = mayfly_directory_client_recv_mkdir(MAYFLY_DIRECTORY_IF(r->client), &err, &gerr);
  int rc = 0;
  if (err != NULL) {
    rc = err->code < 0 ? err->code : MAYFLY_EPROTO;
    snprintf(why, len, "%s", err->message ? err->message : "");
    g_object_unref(err);
  } else if (!ok || gerr != NULL) {
    rc = MAYFLY_EIO;
    snprintf(why, len, "%s", gerr ? gerr->message : "failed");
  } else {
    snprintf(why, len, "acknowledged");
  }
  if (gerr != NULL) g_error_free(gerr);
  return rc;
}

static void test_fencing(void) {
  CU_ASSERT_EQUAL_FATAL(mf_ha_start_dirs(&H, 3), 0);
  int old = mf_ha_wait_leader(&H, 0, 20000);
  CU_ASSERT_FATAL(old >= 0);
  int old_pid = mf_ha_pid(&H, old);
  fprintf(stderr, "ha_fencing: directory %d (%s, pid %d) leads\n", old, H.address[old], old_pid);
  CU_ASSERT_EQUAL_FATAL(mf_ha_start_memservers(&H, 3, 64, "64KiB"), 0);

  mf_hist_t *hist = mf_hist_new();
  mf_load_t *load = mf_load_start(hist, H.list, 4, 1, 20, 10000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(load);
  mf_sleep_ms(2000);

  raw_t raw[NRAW];
  for (int k = 0; k < NRAW / 2; k++) CU_ASSERT_EQUAL_FATAL(raw_open(&raw[k], H.port[old]), 0);

  /* Stopped until another directory leads (its lease runs out in etcd). */
  int64_t t_stop = mf_ha_now_ms();
  mf_ha_signal(&H, old, SIGSTOP);
  int next = mf_ha_wait_leader(&H, 1u << old, 20000);
  int64_t t_lead = mf_ha_now_ms();
  CU_ASSERT_FATAL(next >= 0);
  fprintf(stderr, "ha_fencing: directory %d leads %lld ms after the stop\n", next,
          (long long)(t_lead - t_stop));
  int64_t t_serve = mf_ha_wait_serving(&H, 300, 15000);
  CU_ASSERT_FATAL(t_serve >= 0);
  mf_hist_allow_errors(hist, t_stop, t_serve);

  /* Writes to the stopped old leader only: the kernel queues them. */
  for (int k = NRAW / 2; k < NRAW; k++) CU_ASSERT_EQUAL_FATAL(raw_open(&raw[k], H.port[old]), 0);
  int64_t client_id = 0x7e57000000000000LL | getpid();
  char paths[NRAW][64];
  for (int k = 0; k < NRAW; k++) {
    snprintf(paths[k], sizeof paths[k], "/fenced-%d", k);
    CU_ASSERT_EQUAL(raw_send_mkdir(&raw[k], paths[k], client_id, k + 1), 0);
  }
  mf_sleep_ms(300);
  mf_ha_signal(&H, old, SIGCONT);
  int64_t t_cont = mf_ha_now_ms();

  /* Each is refused or its connection dropped; none is acknowledged. */
  for (int k = 0; k < NRAW; k++) {
    char why[256];
    int rc = raw_recv_mkdir(&raw[k], why, sizeof why);
    fprintf(stderr, "ha_fencing: mkdir %s sent to the deposed leader: %s (%s) after %lld ms\n", paths[k],
            mayfly_err_name(rc), why, (long long)(mf_ha_now_ms() - t_cont));
    CU_ASSERT(rc != 0);
    raw_close(&raw[k]);
  }

  /* It steps down: same PID, a standby in its own cluster() answer. */
  mf_ha_view_t v = {0};
  int standby = 0;
  for (int64_t until = mf_ha_now_ms() + 15000; !standby && mf_ha_now_ms() < until; mf_sleep_ms(100)) {
    standby = mf_ha_view(&H, old, 500, &v) == 0 && strcmp(v.role, "standby") == 0;
  }
  fprintf(stderr, "ha_fencing: the old leader says role \"%s\", leader %s\n", v.role, v.leader);
  CU_ASSERT(standby);
  CU_ASSERT_STRING_EQUAL(v.leader, H.address[next]);
  MF_ASSERT_EQ(mf_ha_pid(&H, old), old_pid);
  CU_ASSERT(kill(old_pid, 0) == 0 && mf_alive(H.dir[old]));

  /* A raw write to it now: refused with ENOTLEADER naming the new leader. */
  raw_t r;
  if (raw_open(&r, H.port[old]) == 0) {
    char why[256];
    CU_ASSERT_EQUAL(raw_send_mkdir(&r, "/fenced-late", client_id, NRAW + 1), 0);
    int rc = raw_recv_mkdir(&r, why, sizeof why);
    fprintf(stderr, "ha_fencing: mkdir to the standby: %s (%s)\n", mayfly_err_name(rc), why);
    MF_ASSERT_EQ(rc, MAYFLY_ENOTLEADER);
    CU_ASSERT(strstr(why, H.address[next]) != NULL);
    raw_close(&r);
  } else {
    CU_FAIL("cannot connect to the old leader after it continued");
  }

  /* None of the fenced writes is in the service's tree, and the history
   * holds. */
  mf_sleep_ms(1000);
  CU_ASSERT_EQUAL_FATAL(mf_load_pause(load), 0);
  mayfly_client_t *c = mf_ha_client(&H, 10000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(c);
  for (int k = 0; k < NRAW; k++) {
    int e = mayfly_exists(c, paths[k]);
    if (e != 0) fprintf(stderr, "ha_fencing: %s: exists says %d\n", paths[k], e);
    MF_ASSERT_EQ(e, 0);
  }
  MF_ASSERT_EQ(mayfly_exists(c, "/fenced-late"), 0);
  MF_ASSERT_EQ(mf_hist_check_tree(hist, c), 0);
  MF_ASSERT_EQ(mf_hist_check_data(hist, c), 0);
  MF_ASSERT_EQ(mf_hist_check_errors(hist), 0);
  int64_t creates, removes, puts, errors;
  mf_hist_counts(hist, &creates, &removes, &puts, &errors);
  fprintf(stderr, "ha_fencing: %lld creates, %lld removes, %lld puts acknowledged, %lld failed calls\n",
          (long long)creates, (long long)removes, (long long)puts, (long long)errors);
  CU_ASSERT(creates > 0);
  mayfly_disconnect(c);

  /* The deposed leader, a standby now, follows the log again. */
  mf_ha_view_t lv;
  int caught = 0;
  if (mf_ha_view(&H, next, 1000, &lv) == 0) {
    for (int64_t until = mf_ha_now_ms() + 10000; !caught && mf_ha_now_ms() < until; mf_sleep_ms(100)) {
      caught = mf_ha_view(&H, old, 500, &v) == 0 && v.applied >= lv.committed;
    }
    fprintf(stderr, "ha_fencing: the old leader applied %lld, the leader committed %lld\n",
            (long long)v.applied, (long long)lv.committed);
  }
  CU_ASSERT(caught);

  mf_load_stop(load);
  mf_hist_free(hist);
  mf_ha_stop(&H);
}

static const mf_test_t tests[] = {
    {"a stopped leader is fenced: its queued writes refused, it steps down", test_fencing},
    {NULL, NULL}};

int main(void) {
  int rc = mf_ha_start_etcd(&H, 1);
  if (rc == MF_ETCD_SKIP) return 77;
  if (rc != 0) {
    fprintf(stderr, "ha_fencing: etcd did not start\n");
    return 1;
  }
  return mf_test_run("ha_fencing", NULL, NULL, tests);
}
