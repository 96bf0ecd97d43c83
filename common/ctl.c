/*
 * The control connection (see ctl.h): the address list, the attempt loop
 * that follows the leader and fails over, the handshakes of a new
 * connection, and the mapping of outcomes to MAYFLY_E* codes.
 */
#define _GNU_SOURCE /* POLLRDHUP */
#include "common/ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <thrift/c_glib/protocol/thrift_compact_protocol.h>
#include <thrift/c_glib/thrift_application_exception.h>

#include "common/auth.h"
#include "common/config.h"
#include "common/error.h"
#include "common/frame_transport.h"

#define PAUSE_FIRST_MS 50
#define PAUSE_MAX_MS 200

typedef struct ctl_addr {
  char host[256];
  int port;
} ctl_addr_t;

struct mf_ctl {
  GMutex lock;
  ctl_addr_t *addrs; /* the list given to mf_ctl_open, without repeats */
  int naddrs;
  int idx;           /* the entry of the list last aimed at */
  /* The target: addrs[idx], or a leader a directory named (which need not be
   * in the list). Written under lock and fd_lock, read under either. */
  char host[256];
  int port;
  int timeout_ms;
  int connect_timeout_ms;
  int64_t client_id;   /* the request ids' client (mf_ctl_request_id) */
  int64_t request_seq; /* the last sequence number handed out (atomic) */
  mf_ctl_try_t *cur;   /* the attempt in progress, between attempt and end (lock) */
  GMutex fd_lock;  /* fd and interrupted, for mf_ctl_interrupt from another thread */
  int interrupted;
  int fd;
  MfFrameTransport *transport;
  ThriftProtocol *protocol;
  MayflyDirectoryClient *client;
  /* What every new connection presents before its first call (mf_ctl_set_auth). */
  char *token;
  uint8_t key[MF_KEY_SIZE];
  int has_key;
  int greeted; /* this connection has logged in and passed the handshake */
};

/* Large enough for a reason that quotes two paths of the longest legal length
 * (4096 bytes each). */
static __thread char last_error[2 * 4096 + 512];

void mf_set_last_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
}

const char *mf_last_error(void) {
  return last_error;
}

/* Generated *_get_type() functions are not thread-safe on first use: register
 * every type the client touches once, before any call. */
static void register_types(void) {
  static gsize done = 0;
  if (g_once_init_enter(&done)) {
    g_type_ensure(MAYFLY_TYPE_DIRECTORY_CLIENT);
    g_type_ensure(THRIFT_TYPE_COMPACT_PROTOCOL);
    g_type_ensure(MF_TYPE_FRAME_TRANSPORT);
    g_type_ensure(MAYFLY_TYPE_ERROR);
    g_type_ensure(MAYFLY_TYPE_NODE_INFO);
    g_type_ensure(MAYFLY_TYPE_LAYOUT);
    g_type_ensure(MAYFLY_TYPE_PARTITION);
    g_type_ensure(MAYFLY_TYPE_LEASE_INFO);
    g_type_ensure(MAYFLY_TYPE_SERVER_INFO);
    g_type_ensure(MAYFLY_TYPE_STATS);
    g_type_ensure(MAYFLY_TYPE_RENEW_REPLY);
    g_type_ensure(MAYFLY_TYPE_REGISTER_REPLY);
    g_type_ensure(MAYFLY_TYPE_HEARTBEAT_REPLY);
    g_type_ensure(MAYFLY_TYPE_BLOCK_REF);
    g_type_ensure(MAYFLY_TYPE_CREATE_OPTIONS);
    g_type_ensure(MAYFLY_TYPE_BLOCK_INFO);
    g_type_ensure(MAYFLY_TYPE_DATA_EVENT);
    g_type_ensure(MAYFLY_TYPE_EVENT);
    g_type_ensure(MAYFLY_TYPE_WATCH_REPLY);
    g_type_ensure(MAYFLY_TYPE_REPART_PLAN); /* memory servers plan repartitions in threads */
    g_type_ensure(MAYFLY_TYPE_SESSION);
    g_type_ensure(MAYFLY_TYPE_TENANT_INFO);
    g_type_ensure(MAYFLY_TYPE_CLUSTER_INFO);
    g_type_ensure(MAYFLY_TYPE_DIRECTORY_MEMBER);
    g_type_ensure(THRIFT_TYPE_APPLICATION_EXCEPTION);
    g_once_init_leave(&done, 1);
  }
}

/* Connects with a timeout; returns the socket or a negative MAYFLY_E* code. */
static int dial(const char *host, int port, int timeout_ms) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
  char portstr[16];
  snprintf(portstr, sizeof portstr, "%d", port);
  int gai = getaddrinfo(host, portstr, &hints, &res);
  if (gai != 0) {
    mf_set_last_error("cannot resolve %s: %s", host, gai_strerror(gai));
    return MAYFLY_ECONNREFUSED;
  }
  int rc = MAYFLY_ECONNREFUSED;
  for (ai = res; ai != NULL; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    ai->ai_protocol);
    if (fd < 0) continue;
    int r = connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (r != 0 && errno == EINPROGRESS) {
      struct pollfd pfd = {.fd = fd, .events = POLLOUT};
      int pr;
      do {
        pr = poll(&pfd, 1, timeout_ms);
      } while (pr < 0 && errno == EINTR);
      if (pr == 0) {
        close(fd);
        rc = MAYFLY_ETIMEDOUT;
        mf_set_last_error("cannot connect to %s:%d: timed out after %d ms", host, port,
                          timeout_ms);
        continue;
      }
      int soerr = 0;
      socklen_t sl = sizeof soerr;
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
      r = soerr == 0 ? 0 : -1;
      errno = soerr;
    }
    if (r != 0) {
      mf_set_last_error("cannot connect to %s:%d: %s", host, port, strerror(errno));
      close(fd);
      continue;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    freeaddrinfo(res);
    return fd;
  }
  freeaddrinfo(res);
  return rc;
}

static void disconnect(mf_ctl_t *ctl) {
  if (ctl->client) g_object_unref(ctl->client);
  if (ctl->protocol) g_object_unref(ctl->protocol);
  if (ctl->transport) g_object_unref(ctl->transport);
  g_mutex_lock(&ctl->fd_lock);
  if (ctl->fd >= 0) close(ctl->fd);
  ctl->fd = -1;
  g_mutex_unlock(&ctl->fd_lock);
  ctl->client = NULL;
  ctl->protocol = NULL;
  ctl->transport = NULL;
  ctl->greeted = 0;
}

/* Connects to the target, its connect taking at most connect_ms. */
static int reconnect(mf_ctl_t *ctl, int connect_ms) {
  disconnect(ctl);
  if (g_atomic_int_get(&ctl->interrupted)) {
    mf_set_last_error("directory %s:%d: connection closed", ctl->host, ctl->port);
    return MAYFLY_EIO;
  }
  int fd = dial(ctl->host, ctl->port, connect_ms);
  if (fd < 0) return fd;
  g_mutex_lock(&ctl->fd_lock);
  ctl->fd = fd;
  if (ctl->interrupted) shutdown(fd, SHUT_RDWR);
  g_mutex_unlock(&ctl->fd_lock);
  ctl->transport = mf_frame_transport_new(fd, ctl->timeout_ms, MF_FRAME_MAX_DEFAULT * 16);
  ctl->protocol = g_object_new(THRIFT_TYPE_COMPACT_PROTOCOL, "transport", ctl->transport, NULL);
  ctl->client = g_object_new(MAYFLY_TYPE_DIRECTORY_CLIENT, "input_protocol", ctl->protocol,
                             "output_protocol", ctl->protocol, NULL);
  return 0;
}

/* Formats an address as "host:port" (brackets around an IPv6 host). */
static void format_addr(const char *host, int port, char *buf, size_t len) {
  snprintf(buf, len, strchr(host, ':') != NULL ? "[%s]:%d" : "%s:%d", host, port);
}

/* Aims the ctl at host:port, dropping the connection to another one.
 * ctl->lock held (or the ctl not shared yet). */
static void set_target(mf_ctl_t *ctl, const char *host, int port) {
  if (strcmp(ctl->host, host) == 0 && ctl->port == port) return;
  disconnect(ctl);
  g_mutex_lock(&ctl->fd_lock);
  g_strlcpy(ctl->host, host, sizeof ctl->host);
  ctl->port = port;
  g_mutex_unlock(&ctl->fd_lock);
  for (int k = 0; k < ctl->naddrs; k++) {
    if (strcmp(ctl->addrs[k].host, host) == 0 && ctl->addrs[k].port == port) ctl->idx = k;
  }
}

/* Aims the ctl at the list's entry after the last one aimed at. ctl->lock held. */
static void next_target(mf_ctl_t *ctl) {
  ctl->idx = (ctl->idx + 1) % ctl->naddrs;
  set_target(ctl, ctl->addrs[ctl->idx].host, ctl->addrs[ctl->idx].port);
}

/* Splits and parses an address list into ctl->addrs, dropping repeats.
 * Returns 0 or MAYFLY_EINVAL (with the bad element in mf_last_error()). */
static int parse_list(mf_ctl_t *ctl, const char *list) {
  gchar **parts = g_strsplit(list != NULL ? list : "", ",", -1);
  guint n = g_strv_length(parts);
  ctl->addrs = g_new0(ctl_addr_t, MAX(n, 1));
  int rc = 0;
  for (guint k = 0; k < n && rc == 0; k++) {
    char *e = g_strstrip(parts[k]);
    ctl_addr_t a;
    if (mf_parse_hostport(e, "127.0.0.1", a.host, sizeof a.host, &a.port) != 0) {
      if (n == 1) {
        mf_set_last_error("'%s' is not a HOST:PORT address", e);
      } else {
        mf_set_last_error("'%s' in the directory list '%s' is not a HOST:PORT address", e,
                          list);
      }
      rc = MAYFLY_EINVAL;
      break;
    }
    int seen = 0;
    for (int j = 0; j < ctl->naddrs; j++) {
      seen |= strcmp(ctl->addrs[j].host, a.host) == 0 && ctl->addrs[j].port == a.port;
    }
    if (!seen) ctl->addrs[ctl->naddrs++] = a;
  }
  g_strfreev(parts);
  return rc;
}

int mf_ctl_open(const char *addresses, int timeout_ms, int connect_timeout_ms, mf_ctl_t **out) {
  register_types();
  mf_auth_init();
  mf_ctl_t *ctl = g_new0(mf_ctl_t, 1);
  ctl->fd = -1;
  g_mutex_init(&ctl->lock);
  g_mutex_init(&ctl->fd_lock);
  if (parse_list(ctl, addresses) != 0) {
    mf_ctl_close(ctl);
    return MAYFLY_EINVAL;
  }
  ctl->timeout_ms = timeout_ms;
  ctl->connect_timeout_ms = connect_timeout_ms;
  do {
    mf_auth_random(&ctl->client_id, sizeof ctl->client_id);
    ctl->client_id &= INT64_MAX; /* positive: printed the same everywhere */
  } while (ctl->client_id == 0);
  /* The first that answers; the calls find the leader from there. */
  char why[sizeof last_error];
  why[0] = '\0';
  int rc = MAYFLY_ECONNREFUSED;
  for (int k = 0; k < ctl->naddrs; k++) {
    ctl->idx = k;
    g_strlcpy(ctl->host, ctl->addrs[k].host, sizeof ctl->host);
    ctl->port = ctl->addrs[k].port;
    rc = reconnect(ctl, connect_timeout_ms);
    if (rc == 0) break;
    if (ctl->naddrs > 1) {
      size_t used = strlen(why);
      snprintf(why + used, sizeof why - used, "%s%s", used > 0 ? "; " : "", mf_last_error());
    }
  }
  if (rc != 0) {
    if (ctl->naddrs > 1) mf_set_last_error("no directory answered: %s", why);
    mf_ctl_close(ctl);
    return rc;
  }
  *out = ctl;
  return 0;
}

void mf_ctl_request_id(mf_ctl_t *ctl, int64_t *client_id, int64_t *seq) {
  *client_id = ctl->client_id;
  *seq = __atomic_add_fetch(&ctl->request_seq, 1, __ATOMIC_RELAXED);
}

void mf_ctl_close(mf_ctl_t *ctl) {
  if (ctl == NULL) return;
  disconnect(ctl);
  if (ctl->token != NULL) mf_auth_wipe(ctl->token, strlen(ctl->token));
  g_free(ctl->token);
  mf_auth_wipe(ctl->key, sizeof ctl->key);
  g_mutex_clear(&ctl->lock);
  g_mutex_clear(&ctl->fd_lock);
  g_free(ctl->addrs);
  g_free(ctl);
}

void mf_ctl_interrupt(mf_ctl_t *ctl) {
  g_mutex_lock(&ctl->fd_lock);
  g_atomic_int_set(&ctl->interrupted, 1);
  if (ctl->fd >= 0) shutdown(ctl->fd, SHUT_RDWR);
  g_mutex_unlock(&ctl->fd_lock);
}

void mf_ctl_address(mf_ctl_t *ctl, char *buf, size_t len) {
  g_mutex_lock(&ctl->fd_lock);
  format_addr(ctl->host, ctl->port, buf, len);
  g_mutex_unlock(&ctl->fd_lock);
}

void mf_ctl_addresses(mf_ctl_t *ctl, char *buf, size_t len) {
  GString *s = g_string_new(NULL);
  char a[300];
  g_mutex_lock(&ctl->fd_lock);
  format_addr(ctl->host, ctl->port, a, sizeof a);
  g_string_append(s, a);
  for (int k = 0; k < ctl->naddrs; k++) {
    if (strcmp(ctl->addrs[k].host, ctl->host) == 0 && ctl->addrs[k].port == ctl->port) continue;
    format_addr(ctl->addrs[k].host, ctl->addrs[k].port, a, sizeof a);
    g_string_append_printf(s, ",%s", a);
  }
  g_mutex_unlock(&ctl->fd_lock);
  g_strlcpy(buf, s->str, len);
  g_string_free(s, TRUE);
}

/* Whether the connection is unusable before a request goes out: the
 * directory closed it (an idle timeout, a restart) or it holds bytes nobody
 * asked for. A blocking client has nothing in flight between calls, so any
 * readiness means the stream is over or out of step. ctl->lock held. */
static int stale(mf_ctl_t *ctl) {
  struct pollfd p = {.fd = ctl->fd, .events = POLLIN | POLLRDHUP};
  return poll(&p, 1, 0) == 1 && p.revents != 0;
}

void mf_ctl_set_auth(mf_ctl_t *ctl, const char *token, const uint8_t *key) {
  g_mutex_lock(&ctl->lock);
  if (ctl->token != NULL) mf_auth_wipe(ctl->token, strlen(ctl->token));
  g_free(ctl->token);
  ctl->token = token != NULL && token[0] != '\0' ? g_strdup(token) : NULL;
  ctl->has_key = key != NULL;
  if (key != NULL) memcpy(ctl->key, key, MF_KEY_SIZE);
  ctl->greeted = 0;
  g_mutex_unlock(&ctl->lock);
}

/* Maps a failed handshake call to a code and a message naming the step. */
static int greet_failed(mf_ctl_t *ctl, const char *step, gboolean ok, MayflyError *err,
                        GError *gerr) {
  int rc = MAYFLY_EPROTO;
  if (err != NULL) {
    rc = err->code < 0 && err->code >= MAYFLY_ERRNO_MIN ? err->code : MAYFLY_EPROTO;
    mf_set_last_error("directory %s:%d: %s: %s", ctl->host, ctl->port, step,
                      err->message ? err->message : mayfly_strerror(rc));
    g_object_unref(err);
  } else {
    int timed_out = ctl->transport && mf_frame_transport_timed_out(ctl->transport);
    rc = timed_out ? MAYFLY_ETIMEDOUT
                   : gerr != NULL && gerr->domain == THRIFT_TRANSPORT_ERROR ? MAYFLY_EIO
                                                                             : MAYFLY_EPROTO;
    mf_set_last_error("directory %s:%d: %s: %s", ctl->host, ctl->port, step,
                      gerr ? gerr->message : mayfly_strerror(rc));
  }
  if (gerr != NULL) g_error_free(gerr);
  (void)ok;
  return rc;
}

/* The cluster handshake (auth.h): proves this side holds the cluster key
 * and checks that the directory does too. ctl->lock held, connected. */
static int greet_cluster(mf_ctl_t *ctl) {
  MayflyDirectoryIf *i = MAYFLY_DIRECTORY_IF(ctl->client);
  MayflyError *err = NULL;
  GError *gerr = NULL;
  gchar *challenge = NULL;
  gboolean ok = mayfly_directory_if_cluster_challenge(i, &challenge, &err, &gerr);
  if (!ok || err != NULL || gerr != NULL) {
    g_free(challenge);
    return greet_failed(ctl, "cluster handshake", ok, err, gerr);
  }
  uint8_t snonce[MF_NONCE_SIZE], cnonce[MF_NONCE_SIZE], proof[MF_MAC_SIZE];
  int rc = mf_hex_decode(challenge, snonce, sizeof snonce);
  g_free(challenge);
  if (rc != 0) {
    mf_set_last_error("directory %s:%d: cluster handshake: a malformed challenge", ctl->host,
                      ctl->port);
    return MAYFLY_EPROTO;
  }
  mf_auth_random(cnonce, sizeof cnonce);
  mf_auth_proof(ctl->key, MF_PROOF_CLIENT, snonce, cnonce, proof);
  char cnonce_hex[2 * MF_NONCE_SIZE + 1], proof_hex[2 * MF_MAC_SIZE + 1];
  mf_hex_encode(cnonce, sizeof cnonce, cnonce_hex);
  mf_hex_encode(proof, sizeof proof, proof_hex);
  gchar *answer = NULL;
  ok = mayfly_directory_if_cluster_auth(i, &answer, cnonce_hex, proof_hex, &err, &gerr);
  if (!ok || err != NULL || gerr != NULL) {
    g_free(answer);
    return greet_failed(ctl, "cluster handshake", ok, err, gerr);
  }
  uint8_t theirs[MF_MAC_SIZE];
  rc = mf_hex_decode(answer, theirs, sizeof theirs);
  g_free(answer);
  mf_auth_proof(ctl->key, MF_PROOF_DIRECTORY, snonce, cnonce, proof);
  if (rc != 0 || !mf_mac_equal(proof, theirs)) {
    mf_set_last_error("directory %s:%d: cluster handshake: the directory does not hold this "
                      "cluster key",
                      ctl->host, ctl->port);
    return MAYFLY_EPERM;
  }
  return 0;
}

/* Logs the connection in as the tenant of ctl->token. ctl->lock held. */
static int greet_tenant(mf_ctl_t *ctl) {
  MayflyDirectoryIf *i = MAYFLY_DIRECTORY_IF(ctl->client);
  MayflyError *err = NULL;
  GError *gerr = NULL;
  MayflySession *session = g_object_new(MAYFLY_TYPE_SESSION, NULL);
  gboolean ok = mayfly_directory_if_login(i, &session, ctl->token, &err, &gerr);
  g_object_unref(session);
  if (!ok || err != NULL || gerr != NULL) return greet_failed(ctl, "login", ok, err, gerr);
  return 0;
}

/* Runs what a new connection presents before its first call. A failure
 * drops the connection, so the next call starts over. ctl->lock held. */
static int greet(mf_ctl_t *ctl) {
  int rc = 0;
  if (ctl->has_key) rc = greet_cluster(ctl);
  if (rc == 0 && ctl->token != NULL) rc = greet_tenant(ctl);
  if (rc != 0) {
    disconnect(ctl);
    return rc;
  }
  ctl->greeted = 1;
  return 0;
}

/* Milliseconds left before the call's deadline (at least 0). */
static int ms_left(const mf_ctl_try_t *t) {
  int64_t left = t->deadline_us - g_get_monotonic_time();
  return left <= 0 ? 0 : (int)MIN((left + 999) / 1000, (int64_t)INT_MAX);
}

int mf_ctl_attempt(mf_ctl_t *ctl, mf_ctl_try_t *t, MayflyDirectoryIf **iface) {
  if (t != NULL && t->deadline_us == 0) {
    t->deadline_us = g_get_monotonic_time() + (int64_t)ctl->timeout_ms * 1000;
    t->pause_ms = PAUSE_FIRST_MS;
  }
  g_mutex_lock(&ctl->lock);
  int budget = t != NULL ? ms_left(t) : ctl->timeout_ms;
  if (t != NULL) {
    t->attempts++;
    t->sent = t->replied = 0;
    format_addr(ctl->host, ctl->port, t->target, sizeof t->target);
  }
  if (t != NULL && budget == 0) {
    mf_set_last_error("directory %s:%d: timed out after %d ms", ctl->host, ctl->port,
                      ctl->timeout_ms);
    g_mutex_unlock(&ctl->lock);
    return MAYFLY_ETIMEDOUT;
  }
  int rc = 0;
  /* Nothing of this call was sent yet, so replacing a connection found
   * closed is safe: the request goes out once, on the new one. */
  if (ctl->client == NULL || stale(ctl)) {
    rc = reconnect(ctl, t != NULL ? MIN(ctl->connect_timeout_ms, budget) : ctl->connect_timeout_ms);
  }
  if (rc == 0) mf_frame_transport_set_timeout(ctl->transport, budget);
  if (rc == 0 && !ctl->greeted && (ctl->has_key || ctl->token != NULL)) rc = greet(ctl);
  if (rc == 0 && t != NULL) mf_frame_transport_set_timeout(ctl->transport, MAX(ms_left(t), 1));
  if (rc != 0) {
    /* A target that does not answer: the next attempt (or call) goes to the
     * next entry of the list; a one-address ctl stays where it is, or goes
     * back to its address from a leader it was told of. A refused key or
     * token is the same everywhere: stay. */
    if (rc != MAYFLY_EPERM && rc != MAYFLY_EINVAL) next_target(ctl);
    g_mutex_unlock(&ctl->lock);
    return rc;
  }
  ctl->cur = t;
  *iface = MAYFLY_DIRECTORY_IF(ctl->client);
  last_error[0] = '\0';
  return 0;
}

int mf_ctl_begin(mf_ctl_t *ctl, MayflyDirectoryIf **iface) {
  return mf_ctl_attempt(ctl, NULL, iface);
}

/* A MAYFLY_ENOTLEADER: aims the ctl at the leader the directory named, or
 * at the next address when it named none (or itself). ctl->lock held. */
static void follow_leader(mf_ctl_t *ctl, const MayflyError *err) {
  char host[256];
  int port;
  if (err->__isset_leader && err->leader != NULL &&
      mf_parse_hostport(err->leader, NULL, host, sizeof host, &port) == 0 &&
      !(strcmp(host, ctl->host) == 0 && port == ctl->port)) {
    set_target(ctl, host, port);
  } else {
    next_target(ctl);
  }
}

int mf_ctl_end(mf_ctl_t *ctl, gboolean ok, MayflyError *err, GError *gerr) {
  int rc = 0;
  mf_ctl_try_t *t = ctl->cur;
  ctl->cur = NULL;
  if (t != NULL) {
    t->sent = 1;
    t->replied = ctl->transport != NULL && mf_frame_transport_got_reply(ctl->transport);
  }
  if (err != NULL) {
    rc = err->code < 0 && err->code >= MAYFLY_ERRNO_MIN ? err->code : MAYFLY_EPROTO;
    mf_set_last_error("%s", err->message ? err->message : mayfly_strerror(rc));
    if (rc == MAYFLY_ENOTLEADER) follow_leader(ctl, err);
    g_object_unref(err);
  } else if (!ok || gerr != NULL) {
    int timed_out = ctl->transport && mf_frame_transport_timed_out(ctl->transport);
    if (timed_out) {
      rc = MAYFLY_ETIMEDOUT;
    } else if (gerr != NULL && gerr->domain == THRIFT_TRANSPORT_ERROR) {
      rc = MAYFLY_EIO;
    } else {
      rc = MAYFLY_EPROTO;
    }
    mf_set_last_error("directory %s:%d: %s", ctl->host, ctl->port,
                      gerr ? gerr->message : mayfly_strerror(rc));
    /* The stream is out of step or gone: start afresh on the next call. */
    disconnect(ctl);
  }
  if (gerr != NULL) g_error_free(gerr);
  g_mutex_unlock(&ctl->lock);
  return rc;
}

/* Appends "target (why)" to the list of directories a call tried, once
 * per directory (the first reason; the last one is the call's message). */
static void note_tried(mf_ctl_try_t *t, int rc) {
  char key[300];
  snprintf(key, sizeof key, "%s (", t->target);
  if (strstr(t->tried, key) != NULL) return;
  size_t used = strlen(t->tried);
  if (used + 4 >= sizeof t->tried) return;
  snprintf(t->tried + used, sizeof t->tried - used, "%s%s (%s)", used > 0 ? ", " : "",
           t->target, mayfly_strerror(rc));
}

int mf_ctl_retry(mf_ctl_t *ctl, mf_ctl_try_t *t, int rc) {
  if (rc == 0) return 0;
  int transport = rc == MAYFLY_EIO || rc == MAYFLY_ETIMEDOUT || rc == MAYFLY_ECONNREFUSED;
  if (rc == MAYFLY_ENOTLEADER) t->followed = 1;
  /* Another address to go to: the list has several, or a leader was named. */
  int others = ctl->naddrs > 1 || t->followed;
  int again;
  if (rc == MAYFLY_ENOTLEADER) {
    again = 1; /* not executed: always safe to send elsewhere */
  } else if (!t->sent) {
    again = others && transport;
  } else {
    again = others && !t->replied && (rc == MAYFLY_EIO || rc == MAYFLY_ETIMEDOUT);
  }
  if (rc == MAYFLY_ENOTLEADER || transport) note_tried(t, rc);
  if (g_atomic_int_get(&ctl->interrupted)) again = 0;
  if (again && t->sent && rc != MAYFLY_ENOTLEADER) {
    /* The directory went away mid-call: resend to the next one. */
    g_mutex_lock(&ctl->lock);
    next_target(ctl);
    g_mutex_unlock(&ctl->lock);
  }
  if (again && ++t->failures >= ctl->naddrs + (t->followed ? 1 : 0)) {
    /* A whole round failed: no leader yet, or all of them restarting. */
    int ms = MIN(t->pause_ms, ms_left(t));
    if (ms > 0) g_usleep((gulong)ms * 1000);
    t->pause_ms = MIN(t->pause_ms * 2, PAUSE_MAX_MS);
    t->failures = 0;
  }
  if (again && ms_left(t) > 0) return 1;
  if (t->attempts > 1 && (rc == MAYFLY_ENOTLEADER || transport)) {
    char last[1024];
    g_strlcpy(last, mf_last_error(), sizeof last);
    mf_set_last_error("%s (after %d attempts in %d ms; directories tried: %s)", last,
                      t->attempts, ctl->timeout_ms - ms_left(t), t->tried);
  }
  return 0;
}

int mf_ctl_register(mf_ctl_t *ctl, const char *address, int32_t blocks, int64_t block_size,
                    int64_t gen_floor, uint64_t incarnation, const char *zone,
                    MayflyRegisterReply **reply) {
  MayflyRegisterReply *r = g_object_new(MAYFLY_TYPE_REGISTER_REPLY, NULL);
  int rc = MF_CTL_CALL(ctl, register_server, &r, address, blocks, block_size, gen_floor,
                       (gint64)incarnation, zone != NULL ? zone : "");
  if (rc == 0 && reply != NULL) {
    *reply = r;
  } else {
    g_object_unref(r);
  }
  return rc;
}
