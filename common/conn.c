/*
 * Data-plane connections (see conn.h for the model and the lock order).
 *
 * Functions named do_* expect the caller to hold the connection's lock.
 */
#define _GNU_SOURCE /* POLLRDHUP */
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
#include <stdatomic.h>
#include <unistd.h>

#include "common/check.h"
#include "common/config.h"
#include "common/ctl.h"
#include "common/error.h"

/* Replies nobody waits for any more (late replies) are discarded without
 * being stored; past this size the stream is taken as broken (no reply
 * carries more than one read of one block). */
#define REPLY_PAYLOAD_MAX 0xfff00000u

#define READ_BUF (256u << 10)
/* A payload at least this long goes straight from the socket to its
 * destination instead of through the read buffer. */
#define DIRECT_MIN (READ_BUF / 4)
/* A reply payload at most this long that is all in the read buffer is
 * copied and its call completed under one hold of the lock (take_header). */
#define FUSED_MAX (16u << 10)
#ifndef IOV_MAX
#define IOV_MAX 1024 /* POSIX minimum is 16; Linux allows 1024 */
#endif

/* Sockets have a short receive timeout, so a blocking recv returns now and
 * then and the leader can check deadlines: one system call per receive
 * instead of a poll before each. Sends never block (MSG_DONTWAIT). */
#define RECV_SLICE_MS 50

/* A connection with no request sent for this long is checked for a peer
 * close before its next use (a server closes idle connections). */
#define IDLE_CHECK_US G_USEC_PER_SEC

struct mf_conn {
  gint refs; /* the pool, each call in flight */
  int fd;
  char address[300];
  GMutex lock;
  /* The calls sent or being sent: the first one in `solo` when the table
   * is empty (the common case of one call in flight costs no hashing), any
   * more by request id in `pending`. */
  mf_call_t *solo;
  GHashTable *pending; /* request id -> mf_call_t * */
  GQueue waiters;      /* followers in mf_call_wait, oldest first */
  GCond send_cond;     /* the send token was released or the connection died */
  int sending;         /* the send token: a writer owns the send side */
  int send_waiters;    /* writers waiting for the token */
  int dead;            /* written under lock, read with g_atomic */
  int leader;          /* a waiting thread owns the receive side */
  _Atomic int64_t last_send_us; /* when the last request went out */
  /* The receive side, owned by the leader (or, when nobody leads, by
   * whoever holds the lock). */
  uint8_t *rbuf; /* received bytes rbuf[rpos..rlen) not yet dispatched */
  size_t rpos, rlen;
  int in_reply;     /* a reply header was taken; rleft payload bytes to come */
  wire_hdr_t rhdr;
  size_t rleft, rgot;
  mf_call_t *rcall; /* whose reply it is (NULL: discard the bytes); lock */
  uint8_t *rdst;    /* where its payload goes (rcall->into or g_malloc) */
};

/* One address of the pool: its connection, or a dial in progress. */
typedef struct mf_slot {
  mf_conn_t *conn; /* the pool's ref; NULL when none */
  int dialing;     /* a thread is dialing; others wait on pool->dialed */
  unsigned dials;  /* dials finished, so a waiter sees that one ended */
  int dial_rc;     /* how the last failed dial failed */
} mf_slot_t;

struct mf_pool {
  GMutex lock;
  GCond dialed;      /* some dial finished */
  GHashTable *slots; /* address -> mf_slot_t *; a slot lives as long as the pool */
  /* The slot used last and its address (the table's key): a client talking
   * to one server finds it with a string compare instead of a hash. */
  const char *last_address;
  mf_slot_t *last_slot;
  int connect_timeout_ms;
  gint64 next_id;
};

/* The pending calls (see struct mf_conn): add, find, remove, count. */
static void do_pending_add(mf_conn_t *c, mf_call_t *call) {
  if (c->solo == NULL && g_hash_table_size(c->pending) == 0) {
    c->solo = call;
  } else {
    g_hash_table_insert(c->pending, &call->req.request_id, call);
  }
}

static mf_call_t *do_pending_find(mf_conn_t *c, uint64_t id) {
  if (c->solo != NULL && c->solo->req.request_id == id) return c->solo;
  return g_hash_table_size(c->pending) == 0 ? NULL : g_hash_table_lookup(c->pending, &id);
}

/* Returns whether the call was pending. */
static int do_pending_remove(mf_conn_t *c, mf_call_t *call) {
  if (c->solo == call) {
    c->solo = NULL;
    return 1;
  }
  return g_hash_table_size(c->pending) > 0 &&
         g_hash_table_remove(c->pending, &call->req.request_id);
}

static size_t do_pending_count(const mf_conn_t *c) {
  return (c->solo != NULL) + g_hash_table_size(c->pending);
}

static void conn_unref(mf_conn_t *c) {
  if (!g_atomic_int_dec_and_test(&c->refs)) return;
  MF_CHECK(do_pending_count(c) == 0);
  close(c->fd);
  g_free(c->rbuf);
  if (c->rdst != NULL && (c->rcall == NULL || c->rdst != c->rcall->into)) g_free(c->rdst);
  g_hash_table_destroy(c->pending);
  g_cond_clear(&c->send_cond);
  g_mutex_clear(&c->lock);
  g_free(c);
}

/* Completes a call. Only a follower sleeps on its condition: a leader
 * completing its own call saves the wake-up (a system call). */
static void do_complete(mf_call_t *call, int status) {
  call->status = status;
  g_atomic_int_set(&call->done, 1); /* the leader reads it without the lock */
  if (call->waiting) g_cond_signal(&call->cond);
}

/* Gives up the reply whose payload is arriving: its call completes with
 * `status` and the rest of its bytes will be discarded. The caller holds the
 * leader role, or nobody leads. */
static void do_drop_reply(mf_conn_t *c, int status) {
  if (c->rcall != NULL) {
    if (c->rdst != NULL && c->rdst != c->rcall->into) g_free(c->rdst);
    do_complete(c->rcall, status);
    c->rcall = NULL;
  }
  c->rdst = NULL;
}

/* Marks the connection dead and fails every call in flight with MAYFLY_EIO
 * (a call completed before keeps its status). The next call dials anew. */
static void do_kill(mf_conn_t *c) {
  if (c->dead) return;
  g_atomic_int_set(&c->dead, 1);
  shutdown(c->fd, SHUT_RDWR); /* wakes a leader blocked in recv */
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, c->pending);
  while (g_hash_table_iter_next(&it, NULL, &v)) do_complete(v, MAYFLY_EIO);
  g_hash_table_remove_all(c->pending);
  if (c->solo != NULL) do_complete(c->solo, MAYFLY_EIO);
  c->solo = NULL;
  if (!c->leader) do_drop_reply(c, MAYFLY_EIO); /* else the leader does */
  g_cond_broadcast(&c->send_cond);
}

/* Wakes the oldest follower so that it takes over reading. */
static void do_promote(mf_conn_t *c) {
  if (!c->leader && c->waiters.head != NULL) {
    g_cond_signal(&((mf_call_t *)c->waiters.head->data)->cond);
  }
}

/* One receive of at most RECV_SLICE_MS: >0 bytes, 0 when nothing came in
 * the slice, -1 when the stream is closed or broken. */
static ssize_t recv_slice(int fd, uint8_t *dst, size_t len) {
  ssize_t r = recv(fd, dst, len, 0);
  if (r > 0) return r;
  if (r == 0) return -1;
  return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
}

/* Takes the reply header at rbuf[rpos]: finds its call and where its payload
 * goes. Returns 0, or MAYFLY_EPROTO for a stream that cannot go on (the
 * call, if any, is completed with it). Leader only. */
static int take_header(mf_conn_t *c) {
  wire_hdr_t h;
  size_t flen;
  int rc = wire_parse(c->rbuf + c->rpos, c->rlen - c->rpos, REPLY_PAYLOAD_MAX, &h, &flen);
  if ((rc != 0 && rc != MAYFLY_EAGAIN) || !(h.flags & WIRE_F_REPLY) || h.cap_len != 0) {
    return MAYFLY_EPROTO;
  }
  g_mutex_lock(&c->lock);
  mf_call_t *call = do_pending_find(c, h.request_id);
  if (call != NULL) {
    do_pending_remove(c, call);
    if (h.payload_len > call->reply_max) {
      do_complete(call, MAYFLY_EPROTO);
      g_mutex_unlock(&c->lock);
      return MAYFLY_EPROTO;
    }
  }
  if (h.payload_len <= FUSED_MAX && h.payload_len <= c->rlen - c->rpos - WIRE_HEADER_SIZE) {
    /* All of it is buffered (a small reply): completed here, in the same
     * hold of the lock, with no reply state kept. */
    if (call != NULL) {
      const uint8_t *src = c->rbuf + c->rpos + WIRE_HEADER_SIZE;
      call->rep = h;
      call->plen = h.payload_len;
      call->payload = NULL;
      if (h.payload_len > 0 && call->into != NULL && h.payload_len <= call->into_cap) {
        memcpy(call->into, src, h.payload_len);
      } else if (h.payload_len > 0) {
        call->payload = g_memdup2(src, h.payload_len);
      }
      do_complete(call, h.status);
    }
    g_mutex_unlock(&c->lock);
    c->rpos += WIRE_HEADER_SIZE + h.payload_len;
    return 0;
  }
  c->rcall = call;
  g_mutex_unlock(&c->lock);
  c->rpos += WIRE_HEADER_SIZE;
  c->rhdr = h;
  c->rleft = h.payload_len;
  c->rgot = 0;
  c->in_reply = 1;
  c->rdst = NULL;
  if (call != NULL && h.payload_len > 0) {
    c->rdst = call->into != NULL && h.payload_len <= call->into_cap ? call->into
                                                                      : g_malloc(h.payload_len);
  }
  return 0;
}

/* Moves the reply in progress on: takes what is buffered, completes its call
 * when the payload is in, else receives one slice more. Returns 0 (call again
 * or move on), 1 when the leader should stop (its own call is done),
 * MAYFLY_ETIMEDOUT when the leader's deadline passed, MAYFLY_EIO when the
 * stream broke. Leader only. */
static int pump_payload(mf_conn_t *c, mf_call_t *mine, int64_t deadline_us) {
  size_t n = MIN(c->rlen - c->rpos, c->rleft);
  if (n > 0) {
    if (c->rdst != NULL) memcpy(c->rdst + c->rgot, c->rbuf + c->rpos, n);
    c->rpos += n;
    c->rgot += n;
    c->rleft -= n;
  }
  if (c->rleft == 0) {
    g_mutex_lock(&c->lock);
    mf_call_t *call = c->rcall;
    if (call != NULL) {
      call->rep = c->rhdr;
      call->plen = c->rhdr.payload_len;
      call->payload = c->rdst != call->into ? c->rdst : NULL;
      do_complete(call, c->rhdr.status);
    }
    c->rcall = NULL;
    c->rdst = NULL;
    c->in_reply = 0;
    g_mutex_unlock(&c->lock);
    return 0;
  }
  /* More to come. Let go of a call whose waiter gave up (the caller may free
   * its buffer as soon as it returns), and of the role when the leader's own
   * call is done: the follower whose payload this is can take it. */
  int64_t now = g_get_monotonic_time();
  g_mutex_lock(&c->lock);
  mf_call_t *call = c->rcall;
  if (call != NULL && ((call->waiting && now >= call->wait_deadline) ||
                       (call == mine && now >= deadline_us))) {
    do_drop_reply(c, MAYFLY_ETIMEDOUT);
  }
  int stop = mine->done;
  g_mutex_unlock(&c->lock);
  if (stop) return 1;
  if (now >= deadline_us) return MAYFLY_ETIMEDOUT;
  ssize_t r;
  if (c->rdst != NULL && c->rleft >= DIRECT_MIN) {
    r = recv_slice(c->fd, c->rdst + c->rgot, c->rleft);
    if (r > 0) {
      c->rgot += (size_t)r;
      c->rleft -= (size_t)r;
    }
  } else {
    c->rpos = c->rlen = 0; /* the buffer is empty: everything was taken */
    r = recv_slice(c->fd, c->rbuf, READ_BUF);
    if (r > 0) c->rlen = (size_t)r;
  }
  return r < 0 ? MAYFLY_EIO : 0;
}

/*
 * Reads and dispatches replies on behalf of every caller of the connection
 * until `mine` is done (0), the deadline passes (MAYFLY_ETIMEDOUT) or the
 * stream breaks (MAYFLY_EIO, MAYFLY_EPROTO). Called without the lock; the
 * leader role is ours. Every reply already buffered is dispatched before it
 * returns; the read buffer is trimmed once per receive, not per reply.
 */
static int pump(mf_conn_t *c, mf_call_t *mine, int64_t deadline_us) {
  /* The first receive goes out without reading the clock: the call was
   * just started (or its waiter just woke) by its deadline, and a receive
   * lasts at most RECV_SLICE_MS, after which the deadline is checked. */
  int first = 1;
  for (;;) {
    if (c->in_reply) {
      int rc = pump_payload(c, mine, deadline_us);
      if (rc == 1) return 0;
      if (rc != 0) return rc;
      continue;
    }
    size_t have = c->rlen - c->rpos;
    if (have >= WIRE_HEADER_SIZE) {
      int rc = take_header(c);
      if (rc != 0) return rc;
      continue;
    }
    if (g_atomic_int_get(&mine->done)) return 0;
    if (!first && g_get_monotonic_time() >= deadline_us) return MAYFLY_ETIMEDOUT;
    first = 0;
    if (c->rpos > 0) {
      memmove(c->rbuf, c->rbuf + c->rpos, have); /* at most one header's worth */
      c->rpos = 0;
      c->rlen = have;
    }
    ssize_t r = recv_slice(c->fd, c->rbuf + c->rlen, READ_BUF - c->rlen);
    if (r < 0) return MAYFLY_EIO;
    c->rlen += (size_t)r;
  }
}

/* Connects within timeout_ms; returns the socket (blocking, TCP_NODELAY,
 * a receive slice) or a negative MAYFLY_E* code. */
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
      int err = 0, pr;
      socklen_t sl = sizeof err;
      int64_t end = g_get_monotonic_time() + (int64_t)timeout_ms * 1000;
      do {
        int64_t left = end - g_get_monotonic_time();
        pr = left <= 0 ? 0 : poll(&p, 1, (int)((left + 999) / 1000));
      } while (pr < 0 && errno == EINTR);
      if (pr != 1) {
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

static mf_conn_t *conn_new(int fd, const char *address) {
  mf_conn_t *c = g_new0(mf_conn_t, 1);
  c->fd = fd;
  c->refs = 1; /* the pool */
  c->rbuf = g_malloc(READ_BUF);
  snprintf(c->address, sizeof c->address, "%s", address);
  g_mutex_init(&c->lock);
  g_cond_init(&c->send_cond);
  g_queue_init(&c->waiters);
  c->pending = g_hash_table_new(g_int64_hash, g_int64_equal);
  c->last_send_us = g_get_monotonic_time();
  return c;
}

/* Whether the server closed an idle connection: nothing in flight and a
 * hang-up or error on the socket. Takes the connection's lock. */
static int peer_closed(mf_conn_t *c) {
  g_mutex_lock(&c->lock);
  int closed = 0;
  if (!c->dead && !c->sending && !c->leader && do_pending_count(c) == 0) {
    struct pollfd p = {.fd = c->fd, .events = POLLIN | POLLRDHUP};
    closed = poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
    if (closed) do_kill(c);
  }
  g_mutex_unlock(&c->lock);
  return closed;
}

mf_pool_t *mf_pool_new(int connect_timeout_ms) {
  mf_pool_t *p = g_new0(mf_pool_t, 1);
  g_mutex_init(&p->lock);
  g_cond_init(&p->dialed);
  p->slots = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  p->connect_timeout_ms = connect_timeout_ms;
  return p;
}

void mf_pool_free(mf_pool_t *p) {
  if (p == NULL) return;
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, p->slots);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    mf_slot_t *s = v;
    MF_CHECK(!s->dialing);
    if (s->conn == NULL) continue;
    g_mutex_lock(&s->conn->lock);
    do_kill(s->conn);
    g_mutex_unlock(&s->conn->lock);
    conn_unref(s->conn);
  }
  g_hash_table_destroy(p->slots);
  g_cond_clear(&p->dialed);
  g_mutex_clear(&p->lock);
  g_free(p);
}

/* Returns a live connection to `address` with a ref for the caller, dialing
 * (outside the pool lock) or waiting for another caller's dial by the
 * deadline. */
static int get_conn(mf_pool_t *p, const char *address, int64_t now, int64_t deadline_us,
                    mf_conn_t **out) {
  g_mutex_lock(&p->lock);
  mf_slot_t *s = NULL;
  if (p->last_address != NULL && strcmp(p->last_address, address) == 0) {
    s = p->last_slot;
  } else {
    gpointer key = NULL, value = NULL;
    if (g_hash_table_lookup_extended(p->slots, address, &key, &value)) {
      s = value;
    } else {
      s = g_new0(mf_slot_t, 1);
      key = g_strdup(address);
      g_hash_table_insert(p->slots, key, s);
    }
    p->last_address = key;
    p->last_slot = s;
  }
  for (;;) {
    mf_conn_t *c = s->conn;
    if (c != NULL) {
      if (g_atomic_int_get(&c->dead) ||
          (now - atomic_load_explicit(&c->last_send_us, memory_order_relaxed) >
               IDLE_CHECK_US &&
           peer_closed(c))) {
        s->conn = NULL;
        conn_unref(c);
        continue;
      }
      g_atomic_int_inc(&c->refs);
      g_mutex_unlock(&p->lock);
      *out = c;
      return 0;
    }
    if (s->dialing) {
      unsigned seen = s->dials;
      gboolean woke = g_cond_wait_until(&p->dialed, &p->lock, deadline_us);
      if (s->conn == NULL && s->dials != seen) {
        int rc = s->dial_rc;
        g_mutex_unlock(&p->lock);
        mf_set_last_error("memory server %s: %s", address, mayfly_strerror(rc));
        return rc;
      }
      if (!woke && s->conn == NULL) {
        g_mutex_unlock(&p->lock);
        mf_set_last_error("memory server %s: connecting timed out", address);
        return MAYFLY_ETIMEDOUT;
      }
      continue;
    }
    int64_t left_ms = (deadline_us - g_get_monotonic_time()) / 1000;
    if (left_ms <= 0) {
      g_mutex_unlock(&p->lock);
      mf_set_last_error("memory server %s: connecting timed out", address);
      return MAYFLY_ETIMEDOUT;
    }
    s->dialing = 1;
    g_mutex_unlock(&p->lock);
    int fd = dial(address, (int)MIN(left_ms, (int64_t)p->connect_timeout_ms));
    g_mutex_lock(&p->lock);
    s->dialing = 0;
    s->dials++;
    g_cond_broadcast(&p->dialed);
    if (fd < 0) {
      s->dial_rc = fd;
      g_mutex_unlock(&p->lock);
      return fd;
    }
    s->conn = conn_new(fd, address);
  }
}

/* Sends iov[0..n) completely by the deadline: sendmsg first, a poll for room
 * only when the socket is full. Returns 0, MAYFLY_ETIMEDOUT or MAYFLY_EIO;
 * *sent tells whether any byte went out. */
static int send_by(int fd, struct iovec *iov, size_t n, int64_t deadline_us, int *sent) {
  while (n > 0) {
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = MIN(n, (size_t)IOV_MAX)};
    ssize_t w = sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return MAYFLY_EIO;
      int64_t left = deadline_us - g_get_monotonic_time();
      if (left <= 0) return MAYFLY_ETIMEDOUT;
      struct pollfd p = {.fd = fd, .events = POLLOUT};
      if (poll(&p, 1, (int)((left + 999) / 1000)) < 0 && errno != EINTR) return MAYFLY_EIO;
      continue;
    }
    *sent = 1;
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
  if (!call->done) call->status = rc;
  call->done = 1;
  call->conn = NULL;
}

/* Takes the send token of c by the deadline and registers the calls as
 * pending. Returns 0, MAYFLY_ETIMEDOUT, or MAYFLY_EIO when c died first
 * (nothing was sent: the caller may try a new connection). */
static int take_send(mf_conn_t *c, mf_call_t *const *calls, size_t n, int64_t deadline_us) {
  g_mutex_lock(&c->lock);
  while (c->sending && !c->dead) {
    c->send_waiters++;
    gboolean woke = g_cond_wait_until(&c->send_cond, &c->lock, deadline_us);
    c->send_waiters--;
    if (!woke && c->sending && !c->dead) {
      g_mutex_unlock(&c->lock);
      return MAYFLY_ETIMEDOUT;
    }
  }
  if (c->dead) {
    g_mutex_unlock(&c->lock);
    return MAYFLY_EIO;
  }
  c->sending = 1;
  for (size_t i = 0; i < n; i++) do_pending_add(c, calls[i]);
  g_mutex_unlock(&c->lock);
  return 0;
}

/* Releases the send token after a send that returned rc. On failure, fails
 * the calls not already answered with rc and, when the stream is torn (a
 * frame went out in part) or broken, kills the connection. */
static void give_send(mf_conn_t *c, mf_call_t *const *calls, size_t n, int rc, int sent) {
  g_mutex_lock(&c->lock);
  c->sending = 0;
  if (c->send_waiters > 0) g_cond_signal(&c->send_cond);
  if (rc != 0) {
    for (size_t i = 0; i < n; i++) {
      if (do_pending_remove(c, calls[i])) do_complete(calls[i], rc);
    }
    if (sent || rc != MAYFLY_ETIMEDOUT) do_kill(c);
  }
  g_mutex_unlock(&c->lock);
}

int mf_calls_start_at(mf_pool_t *p, const char *address, mf_call_t *const *calls, size_t n,
                      int64_t now, int64_t deadline_us) {
  for (size_t i = 0; i < n; i++) {
    mf_call_t *call = calls[i];
    call->done = 0;
    call->waiting = 0;
    call->wait_link = (GList){.data = call};
    g_cond_init(&call->cond);
    call->payload = NULL;
    call->plen = 0;
    call->conn = NULL;
  }
  if (n == 0) return 0;
  /* One header, a capability area (with its frame MAC or its sequence
   * record: never both) and up to two payload pieces per call, all in one
   * sendmsg. */
  uint8_t stack_hdrs[16][WIRE_HEADER_SIZE];
  struct iovec stack_iov[16 * 5];
  uint8_t (*hdrs)[WIRE_HEADER_SIZE] = n <= 16 ? stack_hdrs : g_malloc(n * WIRE_HEADER_SIZE);
  struct iovec *iov = n <= 16 ? stack_iov : g_new(struct iovec, 5 * n);
  size_t niov = 0;
  for (size_t i = 0; i < n; i++) {
    mf_call_t *call = calls[i];
    call->req.request_id = (uint64_t)g_atomic_pointer_add(&p->next_id, 1) + 1;
    call->req.payload_len = (uint32_t)(call->l1 + call->l2);
    size_t mac = call->frame_key != NULL ? MF_MAC_SIZE : 0;
    size_t seq = call->has_seq ? WIRE_SEQ_SIZE : 0;
    MF_CHECK(call->cap_len + mac + seq <= WIRE_CAP_MAX && (mac == 0 || call->l2 == 0) &&
             (mac == 0 || seq == 0));
    call->req.cap_len = (uint16_t)(call->cap_len + seq + mac);
    if (seq > 0) call->req.flags |= WIRE_F_SEQ;
    wire_encode(&call->req, hdrs[i]);
    iov[niov++] = (struct iovec){hdrs[i], WIRE_HEADER_SIZE};
    if (call->cap_len > 0) iov[niov++] = (struct iovec){(void *)call->cap, call->cap_len};
    if (seq > 0) iov[niov++] = (struct iovec){call->seq, WIRE_SEQ_SIZE};
    if (mac > 0) {
      mf_frame_mac(call->frame_key, hdrs[i], call->cap, call->cap_len, call->p1, call->l1,
                   call->frame_mac);
      iov[niov++] = (struct iovec){call->frame_mac, MF_MAC_SIZE};
    }
    if (call->l1 > 0) iov[niov++] = (struct iovec){(void *)call->p1, call->l1};
    if (call->l2 > 0) iov[niov++] = (struct iovec){(void *)call->p2, call->l2};
  }
  mf_conn_t *c = NULL;
  int rc = MAYFLY_EIO, registered = 0;
  /* A connection that dies before our first byte went out is replaced:
   * nothing of these calls reached the server. */
  for (int attempt = 0; attempt < 3 && rc == MAYFLY_EIO; attempt++) {
    if (c != NULL) conn_unref(c);
    c = NULL;
    if ((rc = get_conn(p, address, now, deadline_us, &c)) != 0) break;
    rc = take_send(c, calls, n, deadline_us);
  }
  if (rc == 0) {
    int sent = 0;
    registered = 1;
    rc = send_by(c->fd, iov, niov, deadline_us, &sent);
    atomic_store_explicit(&c->last_send_us, now, memory_order_relaxed);
    give_send(c, calls, n, rc, sent);
  }
  if (hdrs != stack_hdrs) g_free(hdrs);
  if (iov != stack_iov) g_free(iov);
  if (rc != 0 && !registered) {
    /* Nobody else ever saw these calls. */
    if (c != NULL) conn_unref(c);
    for (size_t i = 0; i < n; i++) fail_call(calls[i], rc);
    return rc;
  }
  if (rc != 0) {
    /* A failed send already completed every call still pending; one whose
     * reply a leader is reading (a batch sent in part) completes when the
     * leader lets go of it, so each call stays attached for its wait. */
    mf_set_last_error("memory server %s: %s", address,
                      rc == MAYFLY_ETIMEDOUT ? "could not send in time" : "connection lost");
  }
  /* Each call holds a reference until its wait. */
  for (size_t i = 1; i < n; i++) g_atomic_int_inc(&c->refs);
  for (size_t i = 0; i < n; i++) calls[i]->conn = c;
  return rc;
}

int mf_calls_start(mf_pool_t *p, const char *address, mf_call_t *const *calls, size_t n,
                   int64_t deadline_us) {
  return mf_calls_start_at(p, address, calls, n, g_get_monotonic_time(), deadline_us);
}

int mf_call_start(mf_pool_t *p, const char *address, mf_call_t *call, int64_t deadline_us) {
  return mf_calls_start_at(p, address, &call, 1, g_get_monotonic_time(), deadline_us);
}

/* Gives up a call at its deadline (a late reply will be discarded). */
static void do_time_out(mf_conn_t *c, mf_call_t *call) {
  do_pending_remove(c, call);
  do_complete(call, MAYFLY_ETIMEDOUT);
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
      if (rc == MAYFLY_EIO || rc == MAYFLY_EPROTO) do_kill(c); /* ours too, if pending */
      if (c->dead) do_drop_reply(c, MAYFLY_EIO);
      if (rc == MAYFLY_ETIMEDOUT && !call->done) do_time_out(c, call);
      continue;
    }
    if (c->dead && !c->leader) {
      /* Killed while nobody read: our reply, if half in, is nobody's now. */
      if (c->rcall == call) do_drop_reply(c, MAYFLY_EIO);
      if (!call->done) do_complete(call, MAYFLY_EIO);
      continue;
    }
    /* Follow: the leader completes us, or hands us the role. */
    call->waiting = 1;
    call->wait_deadline = deadline_us;
    g_queue_push_tail_link(&c->waiters, &call->wait_link);
    int64_t until = deadline_us;
    /* Our payload is arriving: the leader lets go of it at our deadline. */
    if (c->rcall == call) until = MAX(until, g_get_monotonic_time() + RECV_SLICE_MS * 1000);
    gboolean woke = g_cond_wait_until(&call->cond, &c->lock, until);
    g_queue_unlink(&c->waiters, &call->wait_link);
    call->waiting = 0;
    if (!woke && !call->done && c->rcall != call && g_get_monotonic_time() >= deadline_us) {
      do_time_out(c, call);
    }
  }
  do_promote(c); /* if nobody leads now, a follower should */
  g_mutex_unlock(&c->lock);
  g_cond_clear(&call->cond);
  switch (call->status) {
    case MAYFLY_ETIMEDOUT:
      mf_set_last_error("memory server %s: no reply in time", c->address);
      break;
    case MAYFLY_EIO:
      mf_set_last_error("memory server %s: connection lost", c->address);
      break;
    case MAYFLY_EPROTO:
      mf_set_last_error("memory server %s: malformed or oversized reply", c->address);
      break;
    case MAYFLY_EPERM:
      mf_set_last_error("memory server %s: permission denied (the request's capability was "
                        "refused)",
                        c->address);
      break;
    default:
      break;
  }
  call->conn = NULL;
  conn_unref(c);
  return call->status;
}
