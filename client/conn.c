/*
 * Data-plane connections (see conn.h).
 */
#include "client/conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "client/ctl.h"
#include "common/config.h"
#include "common/error.h"

/* Replies larger than this are a broken stream (a block is at most 4 GiB,
 * and no reply carries more than one read of one block). */
#define REPLY_PAYLOAD_MAX 0xfff00000u

struct mf_conn {
  gint refs;      /* the pool, the reader thread, each call in flight */
  int fd;
  char address[300];
  GMutex lock;    /* pending, dead, and the socket's send side */
  GCond cond;     /* broadcast when a call completes or the connection dies */
  GHashTable *pending; /* request id -> mf_call_t * */
  int dead;
  GThread *reader;
};

struct mf_pool {
  GMutex lock;
  GHashTable *conns; /* address -> mf_conn_t * (the pool's ref) */
  int connect_timeout_ms;
  gint64 next_id;
};

static void conn_unref(mf_conn_t *c) {
  if (!g_atomic_int_dec_and_test(&c->refs)) return;
  close(c->fd);
  g_hash_table_destroy(c->pending);
  g_mutex_clear(&c->lock);
  g_cond_clear(&c->cond);
  g_free(c);
}

static int read_full(int fd, void *buf, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t r = recv(fd, (uint8_t *)buf + got, len - got, 0);
    if (r > 0) {
      got += (size_t)r;
    } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
      return -1;
    }
  }
  return 0;
}

/* Marks the connection dead and fails every call in flight. Lock held. */
static void do_kill(mf_conn_t *c) {
  if (c->dead) return;
  c->dead = 1;
  shutdown(c->fd, SHUT_RDWR);
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, c->pending);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    mf_call_t *call = v;
    call->status = MAYFLY_EIO;
    call->done = 1;
  }
  g_hash_table_remove_all(c->pending);
  g_cond_broadcast(&c->cond);
}

static gpointer reader(gpointer data) {
  mf_conn_t *c = data;
  uint8_t hdr[WIRE_HEADER_SIZE];
  uint8_t scratch[65536];
  for (;;) {
    wire_hdr_t h;
    size_t flen;
    if (read_full(c->fd, hdr, sizeof hdr) != 0) break;
    int rc = wire_parse(hdr, sizeof hdr, REPLY_PAYLOAD_MAX, &h, &flen);
    if (rc != 0 && rc != MAYFLY_EAGAIN) break;
    if (!(h.flags & WIRE_F_REPLY) || h.cap_len != 0) break;
    g_mutex_lock(&c->lock);
    mf_call_t *call = g_hash_table_lookup(c->pending, &h.request_id);
    if (call != NULL) {
      g_hash_table_remove(c->pending, &h.request_id);
      call->receiving = 1; /* its waiter keeps waiting until the payload is in */
    }
    g_mutex_unlock(&c->lock);
    /* The payload goes straight to its destination, outside the lock. */
    uint8_t *dst = NULL;
    if (call != NULL && h.payload_len > 0) {
      dst = (call->into != NULL && h.payload_len <= call->into_cap) ? call->into
                                                                    : g_malloc(h.payload_len);
    }
    int broken = 0;
    if (dst != NULL) {
      broken = read_full(c->fd, dst, h.payload_len) != 0;
    } else {
      for (uint32_t left = h.payload_len; left > 0 && !broken;) {
        uint32_t n = left < sizeof scratch ? left : (uint32_t)sizeof scratch;
        broken = read_full(c->fd, scratch, n) != 0;
        left -= n;
      }
    }
    if (call != NULL) {
      g_mutex_lock(&c->lock);
      call->rep = h;
      call->plen = h.payload_len;
      call->payload = (dst != NULL && dst != call->into) ? dst : NULL;
      call->status = broken ? MAYFLY_EIO : h.status;
      call->done = 1;
      g_cond_broadcast(&c->cond);
      g_mutex_unlock(&c->lock);
    }
    if (broken) break;
  }
  g_mutex_lock(&c->lock);
  do_kill(c);
  g_mutex_unlock(&c->lock);
  conn_unref(c);
  return NULL;
}

static int dial(const char *address, int timeout_ms) {
  char host[256];
  int port;
  if (mf_parse_hostport(address, NULL, host, sizeof host, &port) != 0) return MAYFLY_EINVAL;
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
  char ps[16];
  snprintf(ps, sizeof ps, "%d", port);
  if (getaddrinfo(host, ps, &hints, &res) != 0) return MAYFLY_ECONNREFUSED;
  int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  int rc = fd < 0 ? MAYFLY_ECONNREFUSED : 0;
  if (rc == 0 && connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
    if (errno != EINPROGRESS) {
      rc = MAYFLY_ECONNREFUSED;
    } else {
      struct pollfd p = {.fd = fd, .events = POLLOUT};
      int err = 0;
      socklen_t sl = sizeof err;
      if (poll(&p, 1, timeout_ms) != 1) {
        rc = MAYFLY_ETIMEDOUT;
      } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) != 0 || err != 0) {
        rc = MAYFLY_ECONNREFUSED;
      }
    }
  }
  freeaddrinfo(res);
  if (rc != 0) {
    if (fd >= 0) close(fd);
    mf_set_last_error("memory server %s: %s", address, mayfly_strerror(rc));
    return rc;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

mf_pool_t *mf_pool_new(int connect_timeout_ms) {
  mf_pool_t *p = g_new0(mf_pool_t, 1);
  g_mutex_init(&p->lock);
  p->conns = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  p->connect_timeout_ms = connect_timeout_ms;
  return p;
}

void mf_pool_free(mf_pool_t *p) {
  if (p == NULL) return;
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, p->conns);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    mf_conn_t *c = v;
    g_mutex_lock(&c->lock);
    do_kill(c);
    g_mutex_unlock(&c->lock);
    GThread *t = c->reader;
    g_thread_join(t); /* the reader drops its ref on the way out */
    conn_unref(c);
  }
  g_hash_table_destroy(p->conns);
  g_mutex_clear(&p->lock);
  g_free(p);
}

/* Returns a live connection to `address` with a ref for the caller. */
static int get_conn(mf_pool_t *p, const char *address, mf_conn_t **out) {
  g_mutex_lock(&p->lock);
  mf_conn_t *c = g_hash_table_lookup(p->conns, address);
  if (c != NULL && g_atomic_int_get(&c->dead)) {
    g_hash_table_remove(p->conns, address);
    g_thread_join(c->reader);
    conn_unref(c);
    c = NULL;
  }
  if (c == NULL) {
    int fd = dial(address, p->connect_timeout_ms);
    if (fd < 0) {
      g_mutex_unlock(&p->lock);
      return fd;
    }
    c = g_new0(mf_conn_t, 1);
    c->fd = fd;
    c->refs = 2; /* the pool and the reader */
    snprintf(c->address, sizeof c->address, "%s", address);
    g_mutex_init(&c->lock);
    g_cond_init(&c->cond);
    c->pending = g_hash_table_new(g_int64_hash, g_int64_equal);
    c->reader = g_thread_new("mayfly-conn", reader, c);
    g_hash_table_insert(p->conns, g_strdup(address), c);
  }
  g_atomic_int_inc(&c->refs);
  g_mutex_unlock(&p->lock);
  *out = c;
  return 0;
}

int mf_call_start(mf_pool_t *p, const char *address, mf_call_t *call) {
  call->done = 0;
  call->receiving = 0;
  call->payload = NULL;
  call->plen = 0;
  call->conn = NULL;
  mf_conn_t *c;
  int rc = get_conn(p, address, &c);
  if (rc != 0) {
    call->status = rc;
    call->done = 1;
    return rc;
  }
  call->req.request_id = (uint64_t)g_atomic_pointer_add(&p->next_id, 1) + 1;
  call->req.payload_len = (uint32_t)(call->l1 + call->l2);
  call->req.cap_len = 0;
  uint8_t hdr[WIRE_HEADER_SIZE];
  wire_encode(&call->req, hdr);
  struct iovec iov[3] = {{hdr, sizeof hdr},
                         {(void *)call->p1, call->l1},
                         {(void *)call->p2, call->l2}};
  g_mutex_lock(&c->lock);
  if (c->dead) {
    rc = MAYFLY_EIO;
  } else {
    g_hash_table_insert(c->pending, &call->req.request_id, call);
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = 3};
    size_t left = sizeof hdr + call->l1 + call->l2;
    while (left > 0) {
      ssize_t w = sendmsg(c->fd, &m, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EINTR) continue;
        rc = MAYFLY_EIO;
        break;
      }
      left -= (size_t)w;
      /* Advance the iovecs past what was sent. */
      while (w > 0 && m.msg_iovlen > 0) {
        if ((size_t)w >= m.msg_iov[0].iov_len) {
          w -= (ssize_t)m.msg_iov[0].iov_len;
          m.msg_iov++;
          m.msg_iovlen--;
        } else {
          m.msg_iov[0].iov_base = (uint8_t *)m.msg_iov[0].iov_base + w;
          m.msg_iov[0].iov_len -= (size_t)w;
          w = 0;
        }
      }
    }
    if (rc != 0) {
      g_hash_table_remove(c->pending, &call->req.request_id);
      do_kill(c);
    }
  }
  g_mutex_unlock(&c->lock);
  if (rc != 0) {
    mf_set_last_error("memory server %s: connection lost", address);
    call->status = rc;
    call->done = 1;
    conn_unref(c);
    return rc;
  }
  call->conn = c;
  return 0;
}

int mf_call_wait(mf_call_t *call, int64_t deadline_us) {
  mf_conn_t *c = call->conn;
  if (c == NULL) return call->status; /* failed at start */
  g_mutex_lock(&c->lock);
  while (!call->done) {
    if (call->receiving) {
      g_cond_wait(&c->cond, &c->lock);
    } else if (!g_cond_wait_until(&c->cond, &c->lock, deadline_us)) {
      if (call->done) break;
      if (call->receiving) continue;
      /* Too late: forget the call so a late reply is discarded. */
      g_hash_table_remove(c->pending, &call->req.request_id);
      call->status = MAYFLY_ETIMEDOUT;
      call->done = 1;
      mf_set_last_error("memory server %s: no reply in time", c->address);
      break;
    }
  }
  g_mutex_unlock(&c->lock);
  if (call->status == MAYFLY_EIO) {
    mf_set_last_error("memory server %s: connection lost", c->address);
  }
  call->conn = NULL;
  conn_unref(c);
  return call->status;
}
