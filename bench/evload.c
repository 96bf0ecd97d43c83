/*
 * The event-driven loader of mayfly-bench compare (see evload.h): one
 * thread, one epoll set, N non-blocking connections. Each connection sends a
 * batch of `pipeline` requests with one write (small values: the batch laid
 * out in one buffer; large ones: a writev of headers and one shared value
 * buffer, so a 1 MiB value is never copied on this side), reads the replies
 * as they come (one recv per readiness unless the buffer filled), and sends
 * its next batch when the last reply of this one is in: the shape of
 * redis-benchmark -P.
 */
#define _GNU_SOURCE
#include "bench/evload.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/error.h"
#include "common/wire.h"

#define EVL_MAX_PIPE 64
#define EVL_PREFIX 160 /* a request's header and key (keys are short here) */
#define EVL_READ_MIN (64u << 10)
/* Values up to this size are copied into one contiguous batch buffer (one
 * iovec, as redis-benchmark writes its preformatted pipeline); larger ones
 * are sent from the shared value buffer. */
#define EVL_COPY_MAX (16u << 10)

typedef struct conn {
  int fd, idx;
  int done;           /* sends no more batches */
  long long next;     /* key counter of the next request */
  int batch;          /* requests in the batch under way */
  int inflight;       /* its replies still awaited */
  double sent_at;
  int want_out;       /* EPOLLOUT armed: a batch did not fit the socket */
  uint8_t prefix[EVL_MAX_PIPE][EVL_PREFIX];
  uint8_t *flat; /* small values: the whole batch, contiguous */
  struct iovec iov[3 * EVL_MAX_PIPE];
  int niov, iov_at;
  uint8_t *in;
  size_t cap, len, pos;
} conn_t;

typedef struct loader {
  const evl_spec_t *s;
  int ep;
  conn_t *c;
  uint8_t *val;
  int fill;        /* putting the keys of a get run */
  int put;         /* this phase's operation */
  double deadline; /* measured phase: no batch starts after it */
  int active;      /* connections not done */
  uint64_t req_id;
  evl_result_t *r;
} loader_t;

static const char crlf[] = "\r\n";

char *evl_key(char *buf, size_t len, size_t vsize, int conn, long long j, int keys) {
  snprintf(buf, len, "%s:%d:%lld", vsize >= (1u << 20) ? "big" : "k", conn, j % keys);
  return buf;
}

/* Lays out the next batch of n requests in c->iov: a single iovec over
 * c->flat for small values, else headers and the shared value buffer. */
static void encode(loader_t *L, conn_t *c, int n) {
  const evl_spec_t *s = L->s;
  size_t flat = 0;
  c->niov = c->iov_at = 0;
  for (int i = 0; i < n; i++) {
    char key[64];
    evl_key(key, sizeof key, s->vsize, c->idx, c->next + i, s->keys);
    size_t klen = strlen(key);
    uint8_t *p = c->prefix[i];
    size_t plen;
    if (s->proto == EVL_MAYFLY) {
      wire_hdr_t h = {.opcode = L->put ? WIRE_OP_KV_PUT : WIRE_OP_KV_GET,
                      .payload_len = (uint32_t)(klen + (L->put ? s->vsize : 0)),
                      .request_id = ++L->req_id,
                      .block_index = s->block_index,
                      .generation = s->generation,
                      .arg1 = wire_kv_slot(key, klen),
                      .arg2 = (uint32_t)klen};
      wire_encode(&h, p);
      memcpy(p + WIRE_HEADER_SIZE, key, klen);
      plen = WIRE_HEADER_SIZE + klen;
    } else if (L->put) {
      plen = (size_t)snprintf((char *)p, EVL_PREFIX, "*3\r\n$3\r\nSET\r\n$%zu\r\n%s\r\n$%zu\r\n",
                              klen, key, s->vsize);
    } else {
      plen = (size_t)snprintf((char *)p, EVL_PREFIX, "*2\r\n$3\r\nGET\r\n$%zu\r\n%s\r\n", klen,
                              key);
    }
    size_t vlen = L->put ? s->vsize : 0, tail = L->put && s->proto == EVL_REDIS ? 2 : 0;
    if (c->flat != NULL) {
      memcpy(c->flat + flat, p, plen);
      memcpy(c->flat + flat + plen, L->val, vlen);
      memcpy(c->flat + flat + plen + vlen, crlf, tail);
      flat += plen + vlen + tail;
      continue;
    }
    c->iov[c->niov++] = (struct iovec){p, plen};
    if (vlen > 0) c->iov[c->niov++] = (struct iovec){L->val, vlen};
    if (tail > 0) c->iov[c->niov++] = (struct iovec){(void *)crlf, tail};
  }
  if (c->flat != NULL) c->iov[c->niov++] = (struct iovec){c->flat, flat};
  c->next += n;
  c->batch = c->inflight = n;
}

static int arm(loader_t *L, conn_t *c, int out) {
  if (c->want_out == out) return 0;
  struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
  c->want_out = out;
  return epoll_ctl(L->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Writes what is left of the batch; arms EPOLLOUT when the socket is full. */
static int flush_out(loader_t *L, conn_t *c) {
  while (c->iov_at < c->niov) {
    ssize_t w = writev(c->fd, c->iov + c->iov_at, c->niov - c->iov_at);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return arm(L, c, 1);
      return -1;
    }
    while (w > 0 && c->iov_at < c->niov) {
      struct iovec *v = &c->iov[c->iov_at];
      if ((size_t)w >= v->iov_len) {
        w -= (ssize_t)v->iov_len;
        c->iov_at++;
      } else {
        v->iov_base = (uint8_t *)v->iov_base + w;
        v->iov_len -= (size_t)w;
        w = 0;
      }
    }
  }
  return arm(L, c, 0);
}

static int start_batch(loader_t *L, conn_t *c) {
  int n = L->s->pipeline;
  if (L->fill && c->next + n > L->s->keys) n = (int)(L->s->keys - c->next);
  encode(L, c, n);
  c->sent_at = bench_now_us();
  return flush_out(L, c);
}

/* The last reply of a batch is in: count it, then send the next one. */
static int batch_done(loader_t *L, conn_t *c) {
  double now = bench_now_us();
  if (!L->fill) {
    double lat = now - c->sent_at;
    for (int i = 0; i < c->batch; i++) bench_lat_add(&L->r->lat, lat);
    L->r->ops += c->batch;
    if (now > L->r->t1) L->r->t1 = now;
  }
  int over = L->fill             ? c->next >= L->s->keys
             : L->s->batches > 0 ? c->next >= L->s->batches * L->s->pipeline
                                 : now >= L->deadline;
  if (over) {
    c->done = 1;
    L->active--;
    return 0;
  }
  return start_batch(L, c);
}

static void compact(conn_t *c) {
  if (c->pos == 0) return;
  memmove(c->in, c->in + c->pos, c->len - c->pos);
  c->len -= c->pos;
  c->pos = 0;
}

static void grow(conn_t *c, size_t cap) {
  c->cap = MAX(cap, c->cap * 2);
  c->in = g_realloc(c->in, c->cap);
}

/* Makes sure a frame of `need` bytes starting at c->pos fits the buffer. */
static void fit_frame(conn_t *c, size_t need) {
  if (c->cap - c->pos >= need) return;
  compact(c);
  if (c->cap < need) grow(c, need);
}

/* Makes sure at least EVL_READ_MIN bytes can be received after c->len. */
static void read_room(conn_t *c) {
  if (c->cap - c->len >= EVL_READ_MIN) return;
  compact(c);
  if (c->cap - c->len < EVL_READ_MIN) grow(c, c->len + EVL_READ_MIN);
}

/* One RESP reply at b[0..n): returns 1 (*used its size, *ok whether it is
 * the expected one), 0 when incomplete (*need: its size when known). */
static int resp_reply(const uint8_t *b, size_t n, int put, size_t vsize, size_t *used,
                      size_t *need, int *ok) {
  const uint8_t *nl = memchr(b, '\n', n);
  if (nl == NULL) return 0;
  size_t line = (size_t)(nl - b) + 1;
  *used = line;
  *ok = 0;
  if (b[0] == '+') {
    *ok = put;
  } else if (b[0] == '$') {
    long long blen = strtoll((const char *)b + 1, NULL, 10);
    if (blen >= 0) {
      size_t total = line + (size_t)blen + 2;
      if (n < total) {
        *need = total;
        return 0;
      }
      *used = total;
      *ok = !put && (size_t)blen == vsize;
    }
  }
  return 1;
}

/* Consumes every complete reply buffered. Returns 0 or -1 (a bad reply). */
static int parse(loader_t *L, conn_t *c) {
  const evl_spec_t *s = L->s;
  while (c->inflight > 0 && c->pos < c->len) {
    const uint8_t *b = c->in + c->pos;
    size_t avail = c->len - c->pos, used = 0, need = 0;
    int ok = 0;
    if (s->proto == EVL_MAYFLY) {
      wire_hdr_t h;
      int rc = wire_parse(b, avail, (uint32_t)(s->vsize + (64u << 10)), &h, &used);
      if (rc == MAYFLY_EAGAIN) {
        if (avail >= WIRE_HEADER_SIZE) need = WIRE_HEADER_SIZE + h.cap_len + (size_t)h.payload_len;
      } else if (rc != 0) {
        fprintf(stderr, "mayfly-bench: event loader: bad frame from the memory server (%s)\n",
                mayfly_err_name(rc));
        return -1;
      } else {
        ok = (h.flags & WIRE_F_REPLY) && h.status == 0 && (L->put || h.payload_len == s->vsize);
        if (!ok) {
          fprintf(stderr, "mayfly-bench: event loader: kv %s answered %s\n",
                  L->put ? "put" : "get", mayfly_err_name(h.status));
        }
      }
      if (rc == MAYFLY_EAGAIN) {
        if (need > 0) fit_frame(c, need);
        break;
      }
    } else if (resp_reply(b, avail, L->put, s->vsize, &used, &need, &ok) == 0) {
      if (need > 0) fit_frame(c, need);
      break;
    } else if (!ok) {
      fprintf(stderr, "mayfly-bench: event loader: Redis answered %.*s\n",
              (int)strcspn((const char *)b, "\r"), (const char *)b);
    }
    if (!ok) return -1;
    c->pos += used;
    if (--c->inflight == 0 && batch_done(L, c) != 0) return -1;
  }
  if (c->pos == c->len) c->pos = c->len = 0;
  return 0;
}

static int on_readable(loader_t *L, conn_t *c) {
  for (;;) {
    read_room(c);
    size_t room = c->cap - c->len;
    ssize_t got = recv(c->fd, c->in + c->len, room, 0);
    if (got == 0) return -1;
    if (got < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    }
    c->len += (size_t)got;
    if (parse(L, c) != 0) return -1;
    if ((size_t)got < room) return 0; /* the socket is drained */
  }
}

static int connect_to(const evl_spec_t *s) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port)};
  if (fd < 0 || inet_pton(AF_INET, s->host, &a.sin_addr) != 1 ||
      connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

static void conn_fail(loader_t *L, conn_t *c) {
  if (c->done) return;
  c->done = 1;
  L->active--;
  L->r->errors++;
  epoll_ctl(L->ep, EPOLL_CTL_DEL, c->fd, NULL);
}

/* Runs one phase (fill or measure) until every connection is done. */
static void phase(loader_t *L, int fill, int put) {
  const evl_spec_t *s = L->s;
  L->fill = fill;
  L->put = put;
  L->active = 0;
  double start = bench_now_us();
  L->deadline = start + s->seconds * 1e6;
  double give_up = s->batches > 0 ? 1e300 : L->deadline + 30e6;
  if (!fill) L->r->t0 = L->r->t1 = start;
  for (int i = 0; i < s->conns; i++) {
    conn_t *c = &L->c[i];
    if (c->fd < 0) continue;
    c->done = 0;
    c->next = 0;
    L->active++;
    if (start_batch(L, c) != 0) conn_fail(L, c);
  }
  struct epoll_event ev[256];
  while (L->active > 0) {
    int n = epoll_wait(L->ep, ev, 256, 1000);
    if (n < 0 && errno != EINTR) break;
    for (int i = 0; i < n; i++) {
      conn_t *c = ev[i].data.ptr;
      if (c->done) continue;
      int bad = (ev[i].events & EPOLLERR) != 0;
      if (!bad && (ev[i].events & EPOLLOUT)) bad = flush_out(L, c) != 0;
      if (!bad && (ev[i].events & (EPOLLIN | EPOLLHUP))) bad = on_readable(L, c) != 0;
      if (bad) conn_fail(L, c);
    }
    if (bench_now_us() > give_up) {
      fprintf(stderr, "mayfly-bench: event loader: %d connections got no answer for 30 s\n",
              L->active);
      for (int i = 0; i < s->conns; i++) conn_fail(L, &L->c[i]);
    }
  }
}

int evl_run(const evl_spec_t *s, evl_result_t *r) {
  memset(r, 0, sizeof *r);
  bench_lat_init(&r->lat);
  if (s->conns < 1 || s->pipeline < 1 || s->pipeline > EVL_MAX_PIPE || s->keys < 1) {
    r->errors = 1;
    return -1;
  }
  loader_t L = {.s = s, .ep = epoll_create1(EPOLL_CLOEXEC), .r = r};
  L.val = g_malloc(s->vsize > 0 ? s->vsize : 1);
  memset(L.val, 'v', s->vsize);
  L.c = g_new0(conn_t, s->conns);
  for (int i = 0; i < s->conns; i++) {
    conn_t *c = &L.c[i];
    c->idx = i;
    c->cap = EVL_READ_MIN * 4;
    c->in = g_malloc(c->cap);
    if (s->vsize <= EVL_COPY_MAX) c->flat = g_malloc((size_t)s->pipeline * (EVL_PREFIX + s->vsize + 2));
    c->fd = connect_to(s);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (c->fd < 0 || epoll_ctl(L.ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
      fprintf(stderr, "mayfly-bench: event loader: cannot connect to %s:%d\n", s->host, s->port);
      r->errors++;
    }
  }
  if (r->errors == 0 && !s->put) phase(&L, 1, 1);
  if (r->errors == 0) phase(&L, 0, s->put);
  for (int i = 0; i < s->conns; i++) {
    if (L.c[i].fd >= 0) close(L.c[i].fd);
    g_free(L.c[i].in);
    g_free(L.c[i].flat);
  }
  close(L.ep);
  g_free(L.c);
  g_free(L.val);
  return r->errors ? -1 : 0;
}
