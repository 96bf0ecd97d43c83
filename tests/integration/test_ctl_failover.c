/*
 * Integration tests of the callers' side of a replicated directory service
 * (issue 14), without etcd: the control connection (common/ctl.c) given a
 * list of directory addresses, its leader following and failover, the
 * request ids of the mutating calls, and what the CLI and the memory server
 * make of a list.
 *
 * A directory that is not the leader is emulated two ways: a dead address
 * (a loopback port nobody listens on), and a scripted fake "standby" of the
 * test's own (a thread on a loopback port) that answers every call with
 * MAYFLY_ENOTLEADER naming a leader, or forwards every call to a real
 * directory, recording the request ids of each frame it sees. The real
 * directories are mayfly-directory daemons on free ports
 * (tests/integration/harness.h).
 */
#include <arpa/inet.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <thrift/c_glib/protocol/thrift_compact_protocol.h>

#include "client/mayfly.h"
#include "common/ctl.h"
#include "common/frame_transport.h"
#include "harness.h"
#include "mf_test.h"

/* --- helpers --- */

static int64_t now_ms(void) {
  return g_get_monotonic_time() / 1000;
}

/* A loopback port nobody listens on: bound by the kernel's choice, then
 * closed, so a connect to it is refused. */
static int dead_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  int port = -1;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0) {
    port = ntohs(a.sin_port);
  }
  close(fd);
  return port;
}

static char *dead_address(void) {
  return g_strdup_printf("127.0.0.1:%d", dead_port());
}

static mayfly_client_t *client_at(const char *list, int timeout_ms) {
  mayfly_options_t o = {.timeout_ms = timeout_ms};
  mayfly_client_t *c = NULL;
  int rc = mayfly_connect(list, &o, &c);
  if (rc != 0) fprintf(stderr, "  connect %s: %s\n", list, mayfly_last_error());
  MF_ASSERT_EQ(rc, 0);
  return c;
}

/* --- the fake directory --- */

/* One call frame the fake saw. */
typedef struct {
  char method[32];
  int64_t client_id, request_seq; /* of mkdir and create_ns (0 otherwise) */
} seen_t;

typedef struct {
  int listen_fd;
  int port;
  char address[64];
  /* Answers ENOTLEADER naming `leader` ("" none) when upstream is NULL;
   * forwards every frame to `upstream` otherwise. */
  char leader[64];
  const char *upstream;
  GThread *thread;
  GPtrArray *conns; /* GThread *, one per connection (the accept thread's) */
  gint stop;
  GMutex lock;
  GArray *seen; /* seen_t */
} fake_t;

/* Reads one frame (length prefix + payload) unless stopped; NULL at the end. */
static uint8_t *read_frame(fake_t *f, int fd, uint32_t *len) {
  for (;;) {
    if (g_atomic_int_get(&f->stop)) return NULL;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 100) == 1) break;
  }
  uint8_t hdr[4];
  if (mf_recv_all(fd, hdr, 4) != 0) return NULL;
  *len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
  if (*len > (1u << 20)) return NULL;
  uint8_t *buf = g_malloc(*len + 4);
  memcpy(buf, hdr, 4);
  if (mf_recv_all(fd, buf + 4, *len) != 0) {
    g_free(buf);
    return NULL;
  }
  return buf;
}

/* Decodes a call's method, seqid and (for mkdir and create_ns) request id. */
static void decode(const uint8_t *payload, uint32_t len, seen_t *s, gint32 *seqid) {
  MfFrameTransport *t = mf_frame_transport_new(-1, 0, 1u << 20);
  mf_frame_transport_set_input(t, payload, len);
  ThriftProtocol *p = g_object_new(THRIFT_TYPE_COMPACT_PROTOCOL, "transport", t, NULL);
  gchar *name = NULL;
  ThriftMessageType type;
  GError *err = NULL;
  memset(s, 0, sizeof *s);
  if (thrift_protocol_read_message_begin(p, &name, &type, seqid, &err) >= 0) {
    g_strlcpy(s->method, name, sizeof s->method);
    if (strcmp(name, "create_ns") == 0) {
      MayflyDirectoryCreateNsArgs *a = g_object_new(MAYFLY_TYPE_DIRECTORY_CREATE_NS_ARGS, NULL);
      if (thrift_struct_read(THRIFT_STRUCT(a), p, &err) >= 0) {
        s->client_id = a->client_id;
        s->request_seq = a->request_seq;
      }
      g_object_unref(a);
    } else if (strcmp(name, "mkdir") == 0) {
      MayflyDirectoryMkdirArgs *a = g_object_new(MAYFLY_TYPE_DIRECTORY_MKDIR_ARGS, NULL);
      if (thrift_struct_read(THRIFT_STRUCT(a), p, &err) >= 0) {
        s->client_id = a->client_id;
        s->request_seq = a->request_seq;
      }
      g_object_unref(a);
    }
  }
  if (err != NULL) g_error_free(err);
  g_free(name);
  g_object_unref(p);
  g_object_unref(t);
}

/* The reply "not the leader" to a call of `method`: every method's result
 * struct has its Error as field 1, so one struct serves them all. */
static int send_not_leader(int fd, const char *method, gint32 seqid, const char *leader) {
  MfFrameTransport *t = mf_frame_transport_new(-1, 0, 1u << 20);
  mf_frame_transport_set_input(t, NULL, 0);
  ThriftProtocol *p = g_object_new(THRIFT_TYPE_COMPACT_PROTOCOL, "transport", t, NULL);
  MayflyDirectoryMkdirResult *res = g_object_new(MAYFLY_TYPE_DIRECTORY_MKDIR_RESULT, NULL);
  MayflyError *e = g_object_new(MAYFLY_TYPE_ERROR, NULL);
  e->code = MAYFLY_ENOTLEADER;
  e->__isset_code = TRUE;
  g_free(e->message);
  e->message = leader[0] != '\0' ? g_strdup_printf("not the leader: the leader is %s", leader)
                                 : g_strdup("not the leader: no leader is elected yet");
  e->__isset_message = TRUE;
  if (leader[0] != '\0') {
    g_free(e->leader);
    e->leader = g_strdup(leader);
    e->__isset_leader = TRUE;
  }
  res->err = e;
  res->__isset_err = TRUE;
  GError *err = NULL;
  int rc = -1;
  if (thrift_protocol_write_message_begin(p, method, T_REPLY, seqid, &err) >= 0 &&
      thrift_struct_write(THRIFT_STRUCT(res), p, &err) >= 0 &&
      thrift_protocol_write_message_end(p, &err) >= 0) {
    size_t len = 0;
    const uint8_t *out = mf_frame_transport_output(t, &len);
    rc = out != NULL ? mf_send_all(fd, out, len) : -1;
  }
  if (err != NULL) g_error_free(err);
  g_object_unref(res);
  g_object_unref(p);
  g_object_unref(t);
  return rc;
}

/* Serves one connection until it closes. */
static void fake_serve(fake_t *f, int fd) {
  int up = -1;
  if (f->upstream != NULL) up = mf_raw_connect_to(f->upstream, 10);
  uint32_t len;
  uint8_t *frame;
  while ((frame = read_frame(f, fd, &len)) != NULL) {
    seen_t s;
    gint32 seqid = 0;
    decode(frame + 4, len, &s, &seqid);
    g_mutex_lock(&f->lock);
    g_array_append_val(f->seen, s);
    g_mutex_unlock(&f->lock);
    int ok;
    if (f->upstream == NULL) {
      ok = send_not_leader(fd, s.method, seqid, f->leader) == 0;
    } else {
      uint32_t rlen;
      ok = up >= 0 && mf_send_all(up, frame, len + 4) == 0;
      uint8_t *reply = ok ? read_frame(f, up, &rlen) : NULL;
      ok = reply != NULL && mf_send_all(fd, reply, rlen + 4) == 0;
      g_free(reply);
    }
    g_free(frame);
    if (!ok) break;
  }
  if (up >= 0) close(up);
  close(fd);
}

typedef struct {
  fake_t *f;
  int fd;
} conn_t;

static gpointer conn_run(gpointer data) {
  conn_t *k = data;
  fake_serve(k->f, k->fd);
  g_free(k);
  return NULL;
}

/* Accepts connections, each served by a thread of its own, until stopped. */
static gpointer fake_run(gpointer data) {
  fake_t *f = data;
  while (!g_atomic_int_get(&f->stop)) {
    struct pollfd p = {.fd = f->listen_fd, .events = POLLIN};
    if (poll(&p, 1, 100) != 1) continue;
    int fd = accept(f->listen_fd, NULL, NULL);
    if (fd < 0) continue;
    conn_t *k = g_new0(conn_t, 1);
    k->f = f;
    k->fd = fd;
    g_ptr_array_add(f->conns, g_thread_new("fake-conn", conn_run, k));
  }
  for (guint i = 0; i < f->conns->len; i++) g_thread_join(g_ptr_array_index(f->conns, i));
  return NULL;
}

/* Starts a fake on a free loopback port: a standby naming `leader` (NULL:
 * none), or with upstream set, a proxy of that directory. */
static fake_t *fake_start(const char *leader, const char *upstream) {
  fake_t *f = g_new0(fake_t, 1);
  f->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  int ok = bind(f->listen_fd, (struct sockaddr *)&a, sizeof a) == 0 &&
           listen(f->listen_fd, 16) == 0 &&
           getsockname(f->listen_fd, (struct sockaddr *)&a, &alen) == 0;
  CU_ASSERT_FATAL(ok);
  f->port = ntohs(a.sin_port);
  snprintf(f->address, sizeof f->address, "127.0.0.1:%d", f->port);
  g_strlcpy(f->leader, leader != NULL ? leader : "", sizeof f->leader);
  f->upstream = upstream;
  g_mutex_init(&f->lock);
  f->seen = g_array_new(FALSE, TRUE, sizeof(seen_t));
  f->conns = g_ptr_array_new();
  f->thread = g_thread_new("fake-directory", fake_run, f);
  return f;
}

static void fake_stop(fake_t *f) {
  g_atomic_int_set(&f->stop, 1);
  g_thread_join(f->thread);
  close(f->listen_fd);
  g_ptr_array_free(f->conns, TRUE);
  g_array_free(f->seen, TRUE);
  g_mutex_clear(&f->lock);
  g_free(f);
}

/* The frames of `method` the fake saw so far, copied into out (up to max). */
static int fake_seen(fake_t *f, const char *method, seen_t *out, int max) {
  int n = 0;
  g_mutex_lock(&f->lock);
  for (guint i = 0; i < f->seen->len; i++) {
    seen_t *s = &g_array_index(f->seen, seen_t, i);
    if (strcmp(s->method, method) == 0 && n < max) out[n++] = *s;
  }
  g_mutex_unlock(&f->lock);
  return n;
}

static int fake_calls(fake_t *f) {
  g_mutex_lock(&f->lock);
  int n = (int)f->seen->len;
  g_mutex_unlock(&f->lock);
  return n;
}

/* --- address lists --- */

static void test_a_dead_address_first_then_the_directory_every_call_works(void) {
  mf_daemon_t *d = mf_start_directory(NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  char *dead = dead_address();
  char *list = g_strdup_printf("%s,%s", dead, d->address);
  mayfly_client_t *c = client_at(list, 5000);
  if (c != NULL) {
    MF_ASSERT_EQ(mayfly_mkdir(c, "/jobs", 0), 0);
    MF_ASSERT_EQ(mayfly_mkdir(c, "/jobs/q", 0), 0);
    MF_ASSERT_EQ(mayfly_rename(c, "/jobs/q", "/jobs/r"), 0);
    MF_ASSERT_EQ(mayfly_exists(c, "/jobs/r"), 1);
    mayfly_stat_t *st = NULL;
    MF_ASSERT_EQ(mayfly_stat(c, "/jobs", &st), 0);
    mayfly_stat_free(st);
    MF_ASSERT_EQ(mayfly_remove(c, "/jobs", 1), 0);
    MF_ASSERT_EQ(mayfly_exists(c, "/jobs"), 0);
    mayfly_dir_stats_t ds;
    MF_ASSERT_EQ(mayfly_dir_stats(c, &ds), 0);
    mayfly_cluster_t ci;
    MF_ASSERT_EQ(mayfly_cluster(c, &ci), 0);
    MF_ASSERT_EQ(ci.nmembers, 1);
    if (ci.nmembers == 1) CU_ASSERT_STRING_EQUAL(ci.members[0].role, "single");
    CU_ASSERT_STRING_EQUAL(ci.answered_by, d->address);
    mayfly_cluster_clear(&ci);
    mayfly_disconnect(c);
  }
  /* The ctl itself says where it went and keeps the whole list. */
  mf_ctl_t *ctl = NULL;
  MF_ASSERT_EQ(mf_ctl_open(list, 5000, 2000, &ctl), 0);
  if (ctl != NULL) {
    char buf[512];
    mf_ctl_address(ctl, buf, sizeof buf);
    CU_ASSERT_STRING_EQUAL(buf, d->address);
    mf_ctl_addresses(ctl, buf, sizeof buf);
    char *want = g_strdup_printf("%s,%s", d->address, dead);
    CU_ASSERT_STRING_EQUAL(buf, want);
    g_free(want);
    mf_ctl_close(ctl);
  }
  g_free(list);
  g_free(dead);
  mf_stop(d);
}

static void test_no_address_of_a_list_answering_fails_naming_each(void) {
  char *a = dead_address(), *b = dead_address();
  char *list = g_strdup_printf("%s, %s", a, b);
  mayfly_client_t *c = NULL;
  MF_ASSERT_EQ(mayfly_connect(list, NULL, &c), MAYFLY_ECONNREFUSED);
  CU_ASSERT(strstr(mayfly_last_error(), a) != NULL && strstr(mayfly_last_error(), b) != NULL);
  g_free(list);
  g_free(a);
  g_free(b);
}

static void test_lists_parse_with_spaces_ipv6_brackets_and_repeats_and_name_a_bad_element(void) {
  mf_daemon_t *d = mf_start_directory(NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  mf_ctl_t *ctl = NULL;
  char buf[512];
  /* A bad element fails the whole list, named in the message. */
  char *bad = g_strdup_printf("%s, nonsense", d->address);
  MF_ASSERT_EQ(mf_ctl_open(bad, 5000, 2000, &ctl), MAYFLY_EINVAL);
  CU_ASSERT(strstr(mf_last_error(), "'nonsense'") != NULL);
  g_free(bad);
  char *empty = g_strdup_printf("%s,,%s", d->address, d->address);
  MF_ASSERT_EQ(mf_ctl_open(empty, 5000, 2000, &ctl), MAYFLY_EINVAL);
  g_free(empty);
  MF_ASSERT_EQ(mf_ctl_open("[::1:9090", 5000, 2000, &ctl), MAYFLY_EINVAL);
  MF_ASSERT_EQ(mf_ctl_open("127.0.0.1:0", 5000, 2000, &ctl), MAYFLY_EINVAL);
  /* Spaces around commas are ignored and a repeated address counts once. */
  char *dup = g_strdup_printf("  %s , %s,%s ", d->address, d->address, d->address);
  MF_ASSERT_EQ(mf_ctl_open(dup, 5000, 2000, &ctl), 0);
  if (ctl != NULL) {
    mf_ctl_addresses(ctl, buf, sizeof buf);
    CU_ASSERT_STRING_EQUAL(buf, d->address);
    mf_ctl_close(ctl);
    ctl = NULL;
  }
  g_free(dup);
  /* IPv6 in brackets: a directory on ::1 reached through a list. */
  mf_daemon_t *d6 = mf_start_directory("--host", "::1", NULL);
  if (d6 == NULL) {
    fprintf(stderr, "  (no IPv6 loopback here: the [::1] part is skipped)\n");
  } else {
    char *dead = dead_address();
    char *list = g_strdup_printf("%s , %s", dead, d6->address);
    MF_ASSERT_EQ(mf_ctl_open(list, 5000, 2000, &ctl), 0);
    if (ctl != NULL) {
      mf_ctl_address(ctl, buf, sizeof buf);
      CU_ASSERT_STRING_EQUAL(buf, d6->address);
      CU_ASSERT(buf[0] == '[');
      mf_ctl_close(ctl);
      ctl = NULL;
    }
    mayfly_client_t *c = client_at(list, 5000);
    if (c != NULL) {
      MF_ASSERT_EQ(mayfly_mkdir(c, "/six", 0), 0);
      mayfly_disconnect(c);
    }
    g_free(list);
    g_free(dead);
    mf_stop(d6);
  }
  mf_stop(d);
}

/* --- failover within the call's timeout --- */

/* A call made on another thread while the main one restarts the directory
 * (the harness's daemons die with the thread that started them). */
typedef struct {
  mayfly_client_t *c;
  const char *path;
  int rc;
  int64_t took_ms;
  char why[1024];
} call_t;

static gpointer mkdir_call(gpointer data) {
  call_t *k = data;
  int64_t t0 = now_ms();
  k->rc = mayfly_mkdir(k->c, k->path, 0);
  k->took_ms = now_ms() - t0;
  g_strlcpy(k->why, mayfly_last_error(), sizeof k->why);
  return NULL;
}

static void test_a_directory_killed_and_restarted_within_the_timeout_costs_a_list_no_error(void) {
  char *data = g_dir_make_tmp("mf-failover-XXXXXX", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(data);
  mf_daemon_t *d = mf_start_directory("--data-dir", data, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  char port[16];
  snprintf(port, sizeof port, "%d", d->port);
  char *dead = dead_address();
  char *list = g_strdup_printf("%s,%s", d->address, dead);
  const int timeout = 8000;
  mayfly_client_t *c = client_at(list, timeout);
  mayfly_client_t *one = client_at(d->address, timeout);
  CU_ASSERT_PTR_NOT_NULL_FATAL(c);
  CU_ASSERT_PTR_NOT_NULL_FATAL(one);
  MF_ASSERT_EQ(mayfly_mkdir(c, "/before", 0), 0);
  MF_ASSERT_EQ(mayfly_exists(one, "/before"), 1);

  mf_kill(d);
  /* One address, as before lists: a call to a dead directory fails at once
   * rather than waiting for it to come back. */
  int rc = mayfly_mkdir(one, "/one", 0);
  CU_ASSERT(rc == MAYFLY_ECONNREFUSED || rc == MAYFLY_EIO);
  /* A list keeps trying until the directory is back. */
  call_t k = {.c = c, .path = "/after"};
  GThread *t = g_thread_new("call", mkdir_call, &k);
  mf_sleep_ms(700);
  mf_daemon_t *back = mf_start_directory("--port", port, "--data-dir", data, NULL);
  g_thread_join(t);
  CU_ASSERT_PTR_NOT_NULL_FATAL(back);
  if (k.rc != 0) fprintf(stderr, "  mkdir /after: %s\n", k.why);
  MF_ASSERT_EQ(k.rc, 0);
  CU_ASSERT(k.took_ms <= timeout + 2000);
  MF_ASSERT_EQ(mayfly_exists(c, "/before"), 1); /* the durable directory kept it */
  MF_ASSERT_EQ(mayfly_exists(c, "/after"), 1);
  MF_ASSERT_EQ(mayfly_exists(c, "/one"), 0);

  /* With nothing back in time, the call fails within its timeout and says
   * which directories it tried. */
  mayfly_client_t *quick = client_at(list, 600);
  CU_ASSERT_PTR_NOT_NULL_FATAL(quick);
  mf_kill(back);
  int64_t t0 = now_ms();
  rc = mayfly_mkdir(quick, "/never", 0);
  int64_t took = now_ms() - t0;
  CU_ASSERT(rc == MAYFLY_ECONNREFUSED || rc == MAYFLY_ETIMEDOUT || rc == MAYFLY_EIO);
  CU_ASSERT(took <= 600 + 2000);
  CU_ASSERT(strstr(mayfly_last_error(), "directories tried") != NULL);
  CU_ASSERT(strstr(mayfly_last_error(), dead) != NULL);
  mayfly_disconnect(quick);
  mayfly_disconnect(one);
  mayfly_disconnect(c);
  g_free(list);
  g_free(dead);
  char *cmd = g_strdup_printf("rm -rf '%s'", data);
  CU_ASSERT(system(cmd) == 0);
  g_free(cmd);
  g_free(data);
}

/* --- leader following --- */

static void test_a_standby_first_in_a_one_address_ctl_is_followed_to_the_leader_it_names(void) {
  mf_daemon_t *d = mf_start_directory(NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  mf_daemon_t *ms = mf_start_memserver(d, 4, "64KiB", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ms);
  fake_t *standby = fake_start(d->address, NULL);
  mayfly_client_t *c = client_at(standby->address, 5000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(c);
  MF_ASSERT_EQ(mayfly_create(c, "/led", MAYFLY_KIND_KV, NULL, NULL), 0);
  /* The standby saw the call once and the leader executed it; later calls
   * go to the leader directly. */
  seen_t s[4];
  MF_ASSERT_EQ(fake_seen(standby, "create_ns", s, 4), 1);
  MF_ASSERT_EQ(mayfly_exists(c, "/led"), 1);
  MF_ASSERT_EQ(fake_calls(standby), 1);
  mayfly_client_t *direct = client_at(d->address, 5000);
  MF_ASSERT_EQ(mayfly_exists(direct, "/led"), 1);
  mayfly_disconnect(direct);
  mayfly_disconnect(c);
  fake_stop(standby);
  mf_stop(ms);
  mf_stop(d);
}

static void test_a_standby_that_names_no_leader_fails_the_call_at_its_timeout_without_spinning(void) {
  fake_t *standby = fake_start(NULL, NULL);
  const int timeout = 600;
  mayfly_client_t *c = client_at(standby->address, timeout);
  CU_ASSERT_PTR_NOT_NULL_FATAL(c);
  int64_t t0 = now_ms();
  int rc = mayfly_mkdir(c, "/x", 0);
  int64_t took = now_ms() - t0;
  MF_ASSERT_EQ(rc, MAYFLY_ENOTLEADER);
  CU_ASSERT(took <= timeout + 2000);
  CU_ASSERT(strstr(mayfly_last_error(), "directories tried") != NULL);
  /* Asked again and again, with pauses between rounds: more than once,
   * far fewer than a busy loop would. */
  int n = fake_calls(standby);
  CU_ASSERT(n >= 2);
  CU_ASSERT(n <= 40);
  mayfly_disconnect(c);
  fake_stop(standby);
}

/* --- request ids --- */

static void test_request_ids_rise_per_mutating_call_and_repeat_on_every_resend(void) {
  mf_daemon_t *d = mf_start_directory(NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  /* standby -> proxy -> directory: the standby sees the first attempt of
   * a call, the proxy its resend and every later call. */
  mf_daemon_t *ms = mf_start_memserver(d, 4, "64KiB", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ms);
  fake_t *proxy = fake_start(NULL, d->address);
  fake_t *standby = fake_start(proxy->address, NULL);
  mayfly_client_t *c = client_at(standby->address, 5000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(c);
  MF_ASSERT_EQ(mayfly_create(c, "/same", MAYFLY_KIND_QUEUE, NULL, NULL), 0);
  MF_ASSERT_EQ(mayfly_create(c, "/same", MAYFLY_KIND_QUEUE, NULL, NULL), MAYFLY_EEXIST);
  MF_ASSERT_EQ(mayfly_mkdir(c, "/other", 0), 0);
  MF_ASSERT_EQ(mayfly_exists(c, "/same"), 1);
  seen_t first[4], creates[4], mkdirs[4];
  MF_ASSERT_EQ(fake_seen(standby, "create_ns", first, 4), 1);
  MF_ASSERT_EQ(fake_seen(proxy, "create_ns", creates, 4), 2);
  MF_ASSERT_EQ(fake_seen(proxy, "mkdir", mkdirs, 4), 1);
  int64_t cid = first[0].client_id;
  CU_ASSERT(cid != 0);
  CU_ASSERT(first[0].request_seq > 0);
  /* The resend carries the pair of the first attempt. */
  MF_ASSERT_EQ(creates[0].client_id, cid);
  MF_ASSERT_EQ(creates[0].request_seq, first[0].request_seq);
  /* Each later mutating call takes the next seq of the same client. */
  MF_ASSERT_EQ(creates[1].client_id, cid);
  MF_ASSERT_EQ(creates[1].request_seq, first[0].request_seq + 1);
  MF_ASSERT_EQ(mkdirs[0].client_id, cid);
  MF_ASSERT_EQ(mkdirs[0].request_seq, first[0].request_seq + 2);
  /* Another client draws another id. */
  mayfly_client_t *c2 = client_at(proxy->address, 5000);
  MF_ASSERT_EQ(mayfly_mkdir(c2, "/third", 0), 0);
  MF_ASSERT_EQ(fake_seen(proxy, "mkdir", mkdirs, 4), 2);
  CU_ASSERT(mkdirs[1].client_id != 0 && mkdirs[1].client_id != cid);
  mayfly_disconnect(c2);
  mayfly_disconnect(c);
  fake_stop(standby);
  fake_stop(proxy);
  mf_stop(ms);
  mf_stop(d);
}

/* --- the CLI and the memory server --- */

/* Makes d stand for the list "first,second" (as the harness passes
 * d->address to --directory). */
static void set_address(mf_daemon_t *d, const char *first, const char *second) {
  char *list = g_strdup_printf("%s,%s", first, second);
  CU_ASSERT(strlen(list) < sizeof d->address);
  g_strlcpy(d->address, list, sizeof d->address);
  g_free(list);
}

static JsonNode *cli_json(const mf_daemon_t *d, const char *a, const char *b, const char *e) {
  char *out = NULL, *err = NULL;
  int status = mf_cli(d, &out, &err, a, b, e, NULL);
  if (status != 0) fprintf(stderr, "  mayfly %s %s: %d: %s\n", a, b, status, err ? err : "");
  MF_ASSERT_EQ(status, 0);
  JsonParser *p = json_parser_new();
  JsonNode *root = NULL;
  if (status == 0 && out != NULL && json_parser_load_from_data(p, out, -1, NULL)) {
    root = json_node_copy(json_parser_get_root(p));
  }
  g_object_unref(p);
  g_free(out);
  g_free(err);
  return root;
}

/* The single member of a directories array: role "single" at address. */
static void expect_single(JsonObject *o, const char *member, const char *address) {
  CU_ASSERT_FATAL(o != NULL && json_object_has_member(o, member));
  JsonArray *a = json_object_get_array_member(o, member);
  MF_ASSERT_EQ(json_array_get_length(a), 1);
  if (json_array_get_length(a) != 1) return;
  JsonObject *m = json_array_get_object_element(a, 0);
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(m, "role"), "single");
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(m, "address"), address);
  MF_ASSERT_EQ(json_object_get_int_member(m, "lag"), 0);
}

static void test_cli_cluster_and_the_directories_of_servers_and_stats_on_a_plain_directory(void) {
  mf_daemon_t *d = mf_start_directory(NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  /* Through a list whose first address is dead: --directory passes the
   * list through to the library. */
  char *dead = dead_address();
  mf_daemon_t via = *d;
  set_address(&via, dead, d->address);
  mf_daemon_t *ms = mf_start_memserver(&via, 4, "64KiB", NULL);
  CU_ASSERT_PTR_NOT_NULL(ms);

  char *out = NULL;
  MF_ASSERT_EQ(mf_cli(&via, &out, NULL, "cluster", NULL), 0);
  CU_ASSERT(out != NULL && strstr(out, "single") != NULL && strstr(out, d->address) != NULL &&
            strstr(out, "records/txn") != NULL && strstr(out, "committed seq") != NULL);
  g_free(out);
  JsonNode *n = cli_json(&via, "cluster", "--json", NULL);
  JsonObject *o = n ? json_node_get_object(n) : NULL;
  expect_single(o, "members", d->address);
  if (o != NULL) {
    CU_ASSERT_STRING_EQUAL(json_object_get_string_member(o, "leader"), d->address);
    CU_ASSERT_STRING_EQUAL(json_object_get_string_member(o, "etcd"), "");
    CU_ASSERT(json_object_has_member(o, "term") && json_object_has_member(o, "committed_seq") &&
              json_object_has_member(o, "snapshot_seq") && json_object_has_member(o, "txns") &&
              json_object_has_member(o, "records_per_txn"));
  }
  if (n) json_node_unref(n);

  n = cli_json(&via, "--json", "servers", NULL);
  o = n ? json_node_get_object(n) : NULL;
  expect_single(o, "directories", d->address);
  if (o != NULL && ms != NULL) {
    JsonArray *s = json_object_get_array_member(o, "servers");
    MF_ASSERT_EQ(json_array_get_length(s), 1);
    CU_ASSERT_STRING_EQUAL(
        json_object_get_string_member(json_array_get_object_element(s, 0), "address"),
        ms->address);
  }
  if (n) json_node_unref(n);
  n = cli_json(&via, "--json", "stats", NULL);
  o = n ? json_node_get_object(n) : NULL;
  expect_single(o, "directory_replicas", d->address);
  if (o != NULL) MF_ASSERT_EQ(json_object_get_int_member(o, "directories"), 0);
  if (n) json_node_unref(n);
  MF_ASSERT_EQ(mf_cli(&via, &out, NULL, "servers", NULL), 0);
  CU_ASSERT(out != NULL && strstr(out, "DIRECTORY") != NULL && strstr(out, "single") != NULL);
  g_free(out);
  MF_ASSERT_EQ(mf_cli(&via, &out, NULL, "stats", NULL), 0);
  CU_ASSERT(out != NULL && strstr(out, "single") != NULL);
  g_free(out);
  if (ms != NULL) mf_stop(ms);
  g_free(dead);
  mf_stop(d);
}

/* Whether `dir` lists the memory server at `address` as up. */
static int listed_up(const mf_daemon_t *dir, const char *address) {
  mayfly_client_t *c = NULL;
  if (mayfly_connect(dir->address, NULL, &c) != 0) return 0;
  mayfly_server_t *s = NULL;
  size_t n = 0;
  int up = 0;
  if (mayfly_servers(c, &s, &n) == 0) {
    for (size_t i = 0; i < n; i++) up |= s[i].up && strcmp(s[i].address, address) == 0;
    mayfly_servers_free(s, n);
  }
  mayfly_disconnect(c);
  return up;
}

static void test_a_memory_server_of_a_list_registers_again_with_the_next_directory(void) {
  mf_daemon_t *a = mf_start_directory("--heartbeat-ms", "100", NULL);
  mf_daemon_t *b = mf_start_directory("--heartbeat-ms", "100", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  mf_daemon_t via = *a;
  set_address(&via, a->address, b->address);
  mf_daemon_t *ms = mf_start_memserver(&via, 4, "64KiB", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ms);
  CU_ASSERT(listed_up(a, ms->address));
  CU_ASSERT(!listed_up(b, ms->address));
  /* The first directory dies: the next heartbeat goes to the second, which
   * does not know the server (MAYFLY_ESERVER), and it registers there. */
  mf_kill(a);
  int up = 0;
  for (int64_t until = now_ms() + 10000; !up && now_ms() < until; mf_sleep_ms(50)) {
    up = listed_up(b, ms->address);
  }
  CU_ASSERT(up);
  CU_ASSERT(mf_log_count(ms, "registered with the directory") >= 2);
  mf_stop(ms);
  mf_stop(b);
}

int main(void) {
  g_unsetenv("MAYFLY_DIRECTORY");
  g_unsetenv("MAYFLY_TOKEN");
  static const mf_test_t tests[] = {
      {"a dead address first, then the directory: every call works",
       test_a_dead_address_first_then_the_directory_every_call_works},
      {"no address of a list answering fails naming each",
       test_no_address_of_a_list_answering_fails_naming_each},
      {"lists parse with spaces, IPv6 brackets and repeats, and name a bad element",
       test_lists_parse_with_spaces_ipv6_brackets_and_repeats_and_name_a_bad_element},
      {"a directory killed and restarted within the timeout costs a list no error",
       test_a_directory_killed_and_restarted_within_the_timeout_costs_a_list_no_error},
      {"a standby first in a one-address ctl is followed to the leader it names",
       test_a_standby_first_in_a_one_address_ctl_is_followed_to_the_leader_it_names},
      {"a standby that names no leader fails the call at its timeout without spinning",
       test_a_standby_that_names_no_leader_fails_the_call_at_its_timeout_without_spinning},
      {"request ids rise per mutating call and repeat on every resend",
       test_request_ids_rise_per_mutating_call_and_repeat_on_every_resend},
      {"cli cluster and the directories of servers and stats on a plain directory",
       test_cli_cluster_and_the_directories_of_servers_and_stats_on_a_plain_directory},
      {"a memory server of a list registers again with the next directory",
       test_a_memory_server_of_a_list_registers_again_with_the_next_directory},
      {NULL, NULL}};
  return mf_test_run("ctl_failover", NULL, NULL, tests);
}
