/*
 * Data-plane connections (see conn.h).
 */
#include "common/conn.h"

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
#include <limits.h>
#include <unistd.h>

#include "common/ctl.h"
#include "common/config.h"
#include "common/error.h"

/* Replies larger than this are a broken stream (a block is at most 4 GiB,
 * and no reply carries more than one read of one block). */
#define REPLY_PAYLOAD_MAX 0xfff00000u

struct mf_conn {
  gint refs;      /* the pool, the reader thread, each call in flight */
  int fd;
  char address[300];
  GMutex lock;    /* pending, dead, the calls' completion, and the socket's send side */
  GHashTable *pending; /* request id -> mf_call_t * */
  int dead;
  int leader;     /* a waiting thread is reading replies for everyone */
  uint8_t *rbuf;  /* bytes received and not yet dispatched (the leader's) */
  size_t rlen;
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
  g_free(c->rbuf);
  g_hash_table_destroy(c->pending);
  g_mutex_clear(&c->lock);
  g_free(c);
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
    g_cond_signal(&call->cond);
  }
  g_hash_table_remove_all(c->pending);
}

/* Completes a call (lock held). */
static void complete(mf_call_t *call, int status) {
  call->status = status;
  call->done = 1;
  g_cond_signal(&call->cond);
}

#define READ_BUF (256u << 10)
#ifndef IOV_MAX
#define IOV_MAX 1024 /* POSIX minimum is 16; Linux allows 1024 */
#endif
/* How long a payload already announced may take to arrive in full. */
#define PAYLOAD_TIMEOUT_MS 30000

/* Sockets have a short receive timeout (RECV_SLICE_MS), so a blocking recv
 * returns now and then and the reader can check its deadline: one system
 * call per receive instead of a poll before each. */
#define RECV_SLICE_MS 50

/* Receives into dst: >0 bytes, 0 when the deadline passed, -1 when the
 * stream is closed or broken. */
static ssize_t recv_by(int fd, uint8_t *dst, size_t len, int64_t deadline_us) {
  for (;;) {
    ssize_t r = recv(fd, dst, len, 0);
    if (r > 0) return r;
    if (r == 0) return -1;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (g_get_monotonic_time() >= deadline_us) return 0;
    } else if (errno != EINTR) {
      return -1;
    }
  }
}

static int recv_until(int fd, uint8_t *dst, size_t len) {
  int64_t deadline = g_get_monotonic_time() + (int64_t)PAYLOAD_TIMEOUT_MS * 1000;
  for (size_t got = 0; got < len;) {
    ssize_t r = recv_by(fd, dst + got, len - got, deadline);
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

/*
 * Reads and dispatches replies on behalf of every caller of the connection
 * (leader/follower: the thread that waits is the one that reads, so a reply
 * reaches its caller without a hop through another thread). Returns when
 * `mine` is done (0), when the deadline passes (MAYFLY_ETIMEDOUT) or when the
 * stream breaks (MAYFLY_EIO). Called without the lock; c->leader is ours.
 * Replies already received for other calls stay buffered for the next leader.
 */
static int pump(mf_conn_t *c, mf_call_t *mine, int64_t deadline_us) {
  for (;;) {
    wire_hdr_t h;
    size_t flen = 0;
    int rc = c->rlen >= WIRE_HEADER_SIZE
                 ? wire_parse(c->rbuf, c->rlen, REPLY_PAYLOAD_MAX, &h, &flen)
                 : MAYFLY_EAGAIN;
    if (rc != 0 && rc != MAYFLY_EAGAIN) return MAYFLY_EIO;
    if (c->rlen < WIRE_HEADER_SIZE) {
      g_mutex_lock(&c->lock);
      int done = mine->done;
      g_mutex_unlock(&c->lock);
      if (done) return 0;
      ssize_t r = recv_by(c->fd, c->rbuf + c->rlen, READ_BUF - c->rlen, deadline_us);
      if (r == 0) return MAYFLY_ETIMEDOUT;
      if (r < 0) return MAYFLY_EIO;
      c->rlen += (size_t)r;
      continue;
    }
    if (!(h.flags & WIRE_F_REPLY) || h.cap_len != 0) return MAYFLY_EIO;
    g_mutex_lock(&c->lock);
    mf_call_t *call = g_hash_table_lookup(c->pending, &h.request_id);
    if (call != NULL) {
      g_hash_table_remove(c->pending, &h.request_id);
      call->receiving = 1; /* its waiter keeps waiting until the payload is in */
    }
    g_mutex_unlock(&c->lock);
    uint8_t *dst = NULL;
    if (call != NULL && h.payload_len > 0) {
      dst = (call->into != NULL && h.payload_len <= call->into_cap) ? call->into
                                                                    : g_malloc(h.payload_len);
    }
    /* Take what is buffered, then receive the rest directly. */
    size_t inbuf = MIN(c->rlen - WIRE_HEADER_SIZE, (size_t)h.payload_len);
    if (dst != NULL) memcpy(dst, c->rbuf + WIRE_HEADER_SIZE, inbuf);
    size_t used = WIRE_HEADER_SIZE + inbuf;
    memmove(c->rbuf, c->rbuf + used, c->rlen - used);
    c->rlen -= used;
    int broken = 0;
    size_t left = h.payload_len - inbuf;
    if (dst != NULL && left > 0) {
      broken = recv_until(c->fd, dst + inbuf, left) != 0;
    } else {
      while (left > 0 && !broken) { /* a reply nobody waits for any more */
        size_t n = MIN(left, (size_t)READ_BUF);
        broken = recv_until(c->fd, c->rbuf, n) != 0;
        left -= n;
      }
    }
    if (call != NULL) {
      g_mutex_lock(&c->lock);
      call->rep = h;
      call->plen = h.payload_len;
      call->payload = (dst != NULL && dst != call->into) ? dst : NULL;
      complete(call, broken ? MAYFLY_EIO : h.status);
      g_mutex_unlock(&c->lock);
    }
    if (broken) return MAYFLY_EIO;
  }
}

/* Wakes one waiting call so that it takes over reading (lock held). */
static void promote_one(mf_conn_t *c) {
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, c->pending);
  if (g_hash_table_iter_next(&it, NULL, &v)) g_cond_signal(&((mf_call_t *)v)->cond);
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
  struct timeval slice = {0, RECV_SLICE_MS * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &slice, sizeof slice);
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
  if (c != NULL) {
    g_mutex_lock(&c->lock);
    int dead = c->dead;
    g_mutex_unlock(&c->lock);
    if (dead) {
      g_hash_table_remove(p->conns, address);
      conn_unref(c);
      c = NULL;
    }
  }
  if (c == NULL) {
    int fd = dial(address, p->connect_timeout_ms);
    if (fd < 0) {
      g_mutex_unlock(&p->lock);
      return fd;
    }
    c = g_new0(mf_conn_t, 1);
    c->fd = fd;
    c->refs = 1; /* the pool */
    c->rbuf = g_malloc(READ_BUF);
    snprintf(c->address, sizeof c->address, "%s", address);
    g_mutex_init(&c->lock);
    c->pending = g_hash_table_new(g_int64_hash, g_int64_equal);
    g_hash_table_insert(p->conns, g_strdup(address), c);
  }
  g_atomic_int_inc(&c->refs);
  g_mutex_unlock(&p->lock);
  *out = c;
  return 0;
}

/* Sends iov[0..n) completely. Returns 0 or -1. */
static int send_all(int fd, struct iovec *iov, size_t n) {
  while (n > 0) {
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = MIN(n, (size_t)IOV_MAX)};
    ssize_t w = sendmsg(fd, &m, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    /* Advance past what was sent. */
    while (n > 0 && (size_t)w >= iov->iov_len) {
      w -= (ssize_t)iov->iov_len;
      iov++;
      n--;
    }
    if (n > 0) {
      iov->iov_base = (uint8_t *)iov->iov_base + w;
      iov->iov_len -= (size_t)w;
    }
  }
  return 0;
}

static void fail_call(mf_call_t *call, int rc) {
  g_cond_clear(&call->cond);
  call->status = rc;
  call->done = 1;
  call->conn = NULL;
}

int mf_calls_start(mf_pool_t *p, const char *address, mf_call_t *const *calls, size_t n) {
  for (size_t i = 0; i < n; i++) {
    mf_call_t *call = calls[i];
    call->done = 0;
    call->receiving = 0;
    g_cond_init(&call->cond);
    call->payload = NULL;
    call->plen = 0;
    call->conn = NULL;
  }
  if (n == 0) return 0;
  mf_conn_t *c;
  int rc = get_conn(p, address, &c);
  if (rc != 0) {
    for (size_t i = 0; i < n; i++) fail_call(calls[i], rc);
    return rc;
  }
  /* One header and up to two payload pieces per call, all in one sendmsg. */
  uint8_t stack_hdrs[16][WIRE_HEADER_SIZE];
  struct iovec stack_iov[48];
  uint8_t (*hdrs)[WIRE_HEADER_SIZE] = n <= 16 ? stack_hdrs : g_malloc(n * WIRE_HEADER_SIZE);
  struct iovec *iov = n <= 16 ? stack_iov : g_new(struct iovec, 3 * n);
  size_t niov = 0;
  for (size_t i = 0; i < n; i++) {
    mf_call_t *call = calls[i];
    call->req.request_id = (uint64_t)g_atomic_pointer_add(&p->next_id, 1) + 1;
    call->req.payload_len = (uint32_t)(call->l1 + call->l2);
    call->req.cap_len = 0;
    wire_encode(&call->req, hdrs[i]);
    iov[niov++] = (struct iovec){hdrs[i], WIRE_HEADER_SIZE};
    if (call->l1 > 0) iov[niov++] = (struct iovec){(void *)call->p1, call->l1};
    if (call->l2 > 0) iov[niov++] = (struct iovec){(void *)call->p2, call->l2};
  }
  g_mutex_lock(&c->lock);
  if (c->dead) {
    rc = MAYFLY_EIO;
  } else {
    for (size_t i = 0; i < n; i++) {
      g_hash_table_insert(c->pending, &calls[i]->req.request_id, calls[i]);
    }
    if (send_all(c->fd, iov, niov) != 0) {
      rc = MAYFLY_EIO;
      for (size_t i = 0; i < n; i++) {
        g_hash_table_remove(c->pending, &calls[i]->req.request_id);
      }
      do_kill(c);
    }
  }
  g_mutex_unlock(&c->lock);
  if (hdrs != stack_hdrs) g_free(hdrs);
  if (iov != stack_iov) g_free(iov);
  if (rc != 0) {
    mf_set_last_error("memory server %s: connection lost", address);
    for (size_t i = 0; i < n; i++) fail_call(calls[i], rc);
    conn_unref(c);
    return rc;
  }
  /* Each call holds a reference until its wait. */
  for (size_t i = 1; i < n; i++) g_atomic_int_inc(&c->refs);
  for (size_t i = 0; i < n; i++) calls[i]->conn = c;
  return 0;
}

int mf_call_start(mf_pool_t *p, const char *address, mf_call_t *call) {
  return mf_calls_start(p, address, &call, 1);
}

int mf_call_wait(mf_call_t *call, int64_t deadline_us) {
  mf_conn_t *c = call->conn;
  if (c == NULL) return call->status; /* failed at start */
  g_mutex_lock(&c->lock);
  while (!call->done) {
    if (!c->leader && !c->dead) {
      c->leader = 1;
      g_mutex_unlock(&c->lock);
      int rc = pump(c, call, deadline_us);
      g_mutex_lock(&c->lock);
      c->leader = 0;
      if (rc == MAYFLY_EIO) do_kill(c); /* completes every pending call, ours too */
      promote_one(c);
      if (rc == MAYFLY_ETIMEDOUT && !call->done) {
        g_hash_table_remove(c->pending, &call->req.request_id);
        complete(call, MAYFLY_ETIMEDOUT);
        mf_set_last_error("memory server %s: no reply in time", c->address);
      }
      continue;
    }
    if (call->receiving) {
      g_cond_wait(&call->cond, &c->lock);
    } else if (!g_cond_wait_until(&call->cond, &c->lock, deadline_us)) {
      if (call->done) break;
      if (call->receiving) continue;
      /* Too late: forget the call so a late reply is discarded. */
      g_hash_table_remove(c->pending, &call->req.request_id);
      complete(call, MAYFLY_ETIMEDOUT);
      mf_set_last_error("memory server %s: no reply in time", c->address);
    }
  }
  g_mutex_unlock(&c->lock);
  g_cond_clear(&call->cond);
  if (call->status == MAYFLY_EIO) {
    mf_set_last_error("memory server %s: connection lost", c->address);
  }
  call->conn = NULL;
  conn_unref(c);
  return call->status;
}
