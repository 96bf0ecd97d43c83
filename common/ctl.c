/*
 * The control connection (see ctl.h).
 */
#define _GNU_SOURCE /* POLLRDHUP */
#include "common/ctl.h"

#include <errno.h>
#include <fcntl.h>
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

struct mf_ctl {
  GMutex lock;
  char host[256];
  int port;
  int timeout_ms;
  int connect_timeout_ms;
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

static int reconnect(mf_ctl_t *ctl) {
  disconnect(ctl);
  if (g_atomic_int_get(&ctl->interrupted)) {
    mf_set_last_error("directory %s:%d: connection closed", ctl->host, ctl->port);
    return MAYFLY_EIO;
  }
  int fd = dial(ctl->host, ctl->port, ctl->connect_timeout_ms);
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

int mf_ctl_open(const char *address, int timeout_ms, int connect_timeout_ms, mf_ctl_t **out) {
  register_types();
  mf_auth_init();
  mf_ctl_t *ctl = g_new0(mf_ctl_t, 1);
  ctl->fd = -1;
  if (mf_parse_hostport(address, "127.0.0.1", ctl->host, sizeof ctl->host, &ctl->port) != 0) {
    mf_set_last_error("'%s' is not a HOST:PORT address", address ? address : "");
    g_free(ctl);
    return MAYFLY_EINVAL;
  }
  ctl->timeout_ms = timeout_ms;
  ctl->connect_timeout_ms = connect_timeout_ms;
  g_mutex_init(&ctl->lock);
  g_mutex_init(&ctl->fd_lock);
  int rc = reconnect(ctl);
  if (rc != 0) {
    mf_ctl_close(ctl);
    return rc;
  }
  *out = ctl;
  return 0;
}

void mf_ctl_close(mf_ctl_t *ctl) {
  if (ctl == NULL) return;
  disconnect(ctl);
  if (ctl->token != NULL) mf_auth_wipe(ctl->token, strlen(ctl->token));
  g_free(ctl->token);
  mf_auth_wipe(ctl->key, sizeof ctl->key);
  g_mutex_clear(&ctl->lock);
  g_mutex_clear(&ctl->fd_lock);
  g_free(ctl);
}

void mf_ctl_interrupt(mf_ctl_t *ctl) {
  g_mutex_lock(&ctl->fd_lock);
  g_atomic_int_set(&ctl->interrupted, 1);
  if (ctl->fd >= 0) shutdown(ctl->fd, SHUT_RDWR);
  g_mutex_unlock(&ctl->fd_lock);
}

void mf_ctl_address(const mf_ctl_t *ctl, char *buf, size_t len) {
  if (strchr(ctl->host, ':') != NULL) {
    snprintf(buf, len, "[%s]:%d", ctl->host, ctl->port);
  } else {
    snprintf(buf, len, "%s:%d", ctl->host, ctl->port);
  }
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

int mf_ctl_begin(mf_ctl_t *ctl, MayflyDirectoryIf **iface) {
  g_mutex_lock(&ctl->lock);
  /* Nothing of this call was sent yet, so replacing a connection found
   * closed is safe: the request goes out once, on the new one. */
  if (ctl->client == NULL || stale(ctl)) {
    int rc = reconnect(ctl);
    if (rc != 0) {
      g_mutex_unlock(&ctl->lock);
      return rc;
    }
  }
  if (!ctl->greeted && (ctl->has_key || ctl->token != NULL)) {
    int rc = greet(ctl);
    if (rc != 0) {
      g_mutex_unlock(&ctl->lock);
      return rc;
    }
  }
  *iface = MAYFLY_DIRECTORY_IF(ctl->client);
  last_error[0] = '\0';
  return 0;
}

int mf_ctl_end(mf_ctl_t *ctl, gboolean ok, MayflyError *err, GError *gerr) {
  int rc = 0;
  if (err != NULL) {
    rc = err->code < 0 && err->code >= MAYFLY_ERRNO_MIN ? err->code : MAYFLY_EPROTO;
    mf_set_last_error("%s", err->message ? err->message : mayfly_strerror(rc));
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

int mf_ctl_register(mf_ctl_t *ctl, const char *address, int32_t blocks, int64_t block_size,
                    int64_t gen_floor, uint64_t incarnation, const char *zone,
                    MayflyRegisterReply **reply) {
  MayflyDirectoryIf *i;
  int rc = mf_ctl_begin(ctl, &i);
  if (rc != 0) return rc;
  MayflyRegisterReply *r = g_object_new(MAYFLY_TYPE_REGISTER_REPLY, NULL);
  MayflyError *err = NULL;
  GError *gerr = NULL;
  gboolean ok = mayfly_directory_if_register_server(i, &r, address, blocks, block_size,
                                                    gen_floor, (gint64)incarnation,
                                                    zone != NULL ? zone : "", &err, &gerr);
  rc = mf_ctl_end(ctl, ok, err, gerr);
  if (rc == 0 && reply != NULL) {
    *reply = r;
  } else {
    g_object_unref(r);
  }
  return rc;
}
