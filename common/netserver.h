/*
 * The libuv TCP server layer both daemons use (prefix mf_net_): binding
 * host:port (IPv4 or IPv6), accepting up to a connection limit, reading into
 * a per-connection frame buffer, framing through the protocol's callback,
 * reply output with back-pressure, idle and partial-frame timeouts, and the
 * reference count that keeps a connection's struct alive while requests
 * deferred by the protocol still point at it. The protocol (the memory
 * server's wire handlers, the directory's Thrift dispatch) sees only whole
 * frames and answers through mf_net_send*.
 *
 * Every resource a peer can make the server hold is bounded here:
 *   - the reply backlog (replies not yet taken by the socket, and replies
 *     the protocol reserved room for with mf_net_reserve) of a connection is
 *     checked before each frame is served: at or over reply_backlog, or
 *     while the total over all connections is at or over reply_backlog_total
 *     and this connection has a backlog of its own, the frame stays buffered
 *     and the connection stops reading until its writes drain. A protocol
 *     whose reply size is known before serving asks mf_net_fits() and
 *     answers MF_NET_RETRY to keep the frame. A reply of at most
 *     MF_NET_SMALL_REPLY bytes always goes out when the connection's backlog
 *     is empty; a larger one also needs room under reply_backlog_total, and
 *     its frame waits (the connection stops reading) until there is some. So
 *     all connections together hold at most
 *     reply_backlog_total + max_connections x MF_NET_SMALL_REPLY;
 *   - a connection whose queued replies make no progress (no byte taken by
 *     the socket) for send_timeout_ms is closed, so clients that never read
 *     hold the total only that long;
 *   - read buffers start at read_buffer bytes, grow only as bytes arrive (at
 *     most doubling, never past the frame being received, whatever its
 *     header announces) and shrink back to read_buffer once the connection
 *     goes quiet for a sweep period (at once when another connection waits
 *     for input_total). Growth beyond read_buffer counts against input_total, over
 *     all connections; past it a connection that needs to grow stops
 *     reading until some buffer shrinks;
 *   - a frame whose first bytes arrived must be complete within
 *     frame_timeout_ms, and a connection with nothing outstanding (no byte
 *     received or taken by the socket, no reference but its own) is closed
 *     after idle_timeout_ms; a peer that stops reading its replies is idle
 *     too, so its backlog is given back then.
 * So the layer's memory is at most
 *   max_connections x read_buffer + input_total
 *   + min(max_connections x (reply_backlog + R),
 *         reply_backlog_total + max_connections x MF_NET_SMALL_REPLY)
 * where R is the protocol's largest reply (replies produced without asking
 * mf_net_fits must be at most MF_NET_SMALL_REPLY, and R at most
 * reply_backlog_total).
 *
 * Everything runs on the loop thread. Replies produced while serving one
 * read's frames go out together at the end of it: first uv_try_write, and
 * only what the socket does not take is queued in one uv_write.
 */
#ifndef MAYFLY_NETSERVER_H
#define MAYFLY_NETSERVER_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct mf_net_server mf_net_server_t;
typedef struct mf_net_conn mf_net_conn_t;

/* What serve() returns besides 0 (served) and a negative MAYFLY_E* code
 * (close the connection): the frame was not served and stays first in the
 * buffer. It is served again when the connection's backlog has drained
 * (mf_net_fits said no) or, if the protocol called mf_net_conn_hold(),
 * once it calls mf_net_conn_release(). */
#define MF_NET_RETRY 1

/* A reply this small goes out on an empty backlog whatever the total. */
#define MF_NET_SMALL_REPLY (64u << 10)

/* A connection. The protocol's connection struct starts with this one
 * (mf_net_proto_t.conn_size); the fields are read-only outside the layer. */
struct mf_net_conn {
  uv_tcp_t tcp;
  mf_net_server_t *srv;
  char peer[80];        /* "ip:port" of the peer, for log lines */
  int refs;             /* the open socket + each reference the protocol took */
  int closing;          /* the socket is closing: replies are dropped */
  int held;             /* mf_net_conn_hold(): no frame is served until released */
  size_t backlog;       /* reply bytes not yet taken by the socket, and reserved ones */
  size_t reserved;      /* of which reserved (mf_net_reserve), not yet sent */
  /* Private to the layer. */
  uint8_t *buf;
  size_t len, cap;
  size_t need;          /* length of the incomplete first frame, when known */
  uint8_t *out;         /* replies not yet handed to the socket: out_len bytes, */
  size_t out_len, out_cap; /* reused from reply to reply (NULL until the first) */
  int reading, processing, wait_backlog, stalled, scheduled;
  int wait_total;       /* in srv->total_wait: a large reply waits for room in the total */
  int sending;          /* in srv->sending: replies queued for the socket */
  size_t want;          /* the reply size mf_net_fits last refused */
  uint64_t queued;      /* reply bytes ever queued, to tell progress of a write in flight */
  uint64_t taken_mark;  /* bytes taken by the socket at the last progress */
  int64_t active_ms, partial_ms, progress_ms;
  GList conn_link, idle_link, partial_link, stall_link, ready_link, big_link, total_link,
      send_link;
};

typedef struct mf_net_proto {
  size_t conn_size; /* sizeof the protocol's connection struct, >= sizeof(mf_net_conn_t) */
  /* Framing: returns 0 with *flen set when buf starts with a complete
   * frame of *flen bytes; MAYFLY_EAGAIN when more bytes are needed, with
   * *flen the whole frame's length when the header already says it (else
   * 0); any other negative MAYFLY_E* when the stream is not a valid one
   * (the connection is closed). Must check the length against the
   * protocol's maximum before returning it. */
  int (*frame)(mf_net_conn_t *c, const uint8_t *buf, size_t len, size_t *flen);
  /* Serves one complete frame (valid only during the call): 0, MF_NET_RETRY
   * or a negative MAYFLY_E* code to close the connection. */
  int (*serve)(mf_net_conn_t *c, const uint8_t *frame, size_t flen);
  /* Called when a connection struct is created (zeroed past the layer's
   * part), before it is accepted: every later callback may rely on it. May
   * be NULL. */
  void (*on_open)(mf_net_conn_t *c);
  /* Called once when a connection starts closing (peer gone, error,
   * timeout, stop): the protocol drops what it holds for it. May be NULL. */
  void (*on_close)(mf_net_conn_t *c);
  /* Called when the last reference is gone, before the layer frees the
   * struct. May be NULL. */
  void (*on_free)(mf_net_conn_t *c);
  /* Called once after mf_net_server_stop() when the listener and every
   * connection are freed. May be NULL. */
  void (*on_stopped)(void *ud);
} mf_net_proto_t;

typedef struct mf_net_config {
  const char *host;            /* IPv4 or IPv6 literal */
  int port;                    /* 0 picks a free one */
  int64_t max_connections;
  uint64_t read_buffer;        /* a connection's read buffer to start with and when idle */
  uint64_t input_total;        /* read buffer growth past read_buffer, all connections */
  uint64_t reply_backlog;      /* per connection */
  uint64_t reply_backlog_total;
  int64_t frame_timeout_ms;    /* a started frame must complete within this (0: never) */
  int64_t idle_timeout_ms;     /* closes connections idle this long (0: never) */
  int64_t send_timeout_ms;     /* closes connections whose replies make no progress this long (0: never) */
} mf_net_config_t;

/* Binds cfg->host:cfg->port and starts accepting on `loop`; `ud` is passed
 * to proto->on_stopped and available as mf_net_server_data(). proto must
 * outlive the server. On success *out is the server and *bound_port the
 * port in use. Returns 0, or MAYFLY_EINVAL (host is not an address) or
 * MAYFLY_EIO (cannot bind or listen) with a message in why. */
int mf_net_server_start(uv_loop_t *loop, const mf_net_config_t *cfg, const mf_net_proto_t *proto,
                        void *ud, mf_net_server_t **out, int *bound_port, char *why,
                        size_t whylen);

/* Stops accepting and closes every connection; proto->on_stopped runs once
 * the loop has closed them all and the last reference is gone. */
void mf_net_server_stop(mf_net_server_t *s);

/* The ud given to mf_net_server_start. */
void *mf_net_server_data(const mf_net_server_t *s);

/* Connections open now. */
int64_t mf_net_connections(const mf_net_server_t *s);

/* Takes and drops a reference on a connection; the last one frees it
 * (proto->on_free, then the layer's buffers). */
void mf_net_conn_ref(mf_net_conn_t *c);
void mf_net_conn_unref(mf_net_conn_t *c);

/* Closes the connection (idempotent): on_close runs now, the struct lives on
 * while references remain. */
void mf_net_conn_close(mf_net_conn_t *c);

/* Stops serving c's frames after the current one (they stay buffered, and
 * reading goes on only into the buffer's free space, to notice the peer
 * closing); mf_net_conn_release() serves them again from the loop (never
 * from inside the caller). */
void mf_net_conn_hold(mf_net_conn_t *c);
void mf_net_conn_release(mf_net_conn_t *c);

/* Whether a reply of n bytes may be produced now: when c's backlog is empty,
 * if n is at most MF_NET_SMALL_REPLY or stays within reply_backlog_total;
 * else when it stays within both reply backlog limits. A refusal is
 * remembered: a serve() that then answers MF_NET_RETRY waits for c's
 * backlog to drain, or (empty backlog) for n bytes of room in the total. */
int mf_net_fits(mf_net_conn_t *c, size_t n);

/* Counts n bytes of a reply that will be sent later (mf_net_send after
 * mf_net_unreserve) in c's backlog and the total now, so the caps see it. */
void mf_net_reserve(mf_net_conn_t *c, size_t n);
/* Takes back a reservation of n bytes (before sending them, or when they
 * will never be sent). */
void mf_net_unreserve(mf_net_conn_t *c, size_t n);

/* A payload at least this large goes to the socket straight from its
 * memory when the socket takes it at once (mf_net_send_zc). */
#define MF_NET_ZERO_COPY_MIN (64u << 10)

/* Queues reply bytes (copied). Dropped when the connection is closing. */
void mf_net_send(mf_net_conn_t *c, const void *data, size_t len);

/* Queues a reply of len bytes that the caller writes in place: returns where
 * to write them (valid until the next call on c that sends or flushes), or
 * NULL when the connection is closing (the reply is dropped). Counts against
 * the backlog at once, as mf_net_send does; for replies built piece by piece
 * without an intermediate copy. */
uint8_t *mf_net_send_buf(mf_net_conn_t *c, size_t len);

/* Queues a reply head and a large payload: when nothing is queued in the
 * socket, both go to it at once straight from `payload` (no copy) and only
 * what it does not take is copied. Nothing points at payload afterwards. */
void mf_net_send_zc(mf_net_conn_t *c, const void *head, size_t hlen, const void *payload,
                    size_t plen);

/* Hands the queued replies to the socket now: uv_try_write, then one
 * uv_write for the rest. The layer flushes after each read; call this for
 * replies produced outside serve(). */
void mf_net_flush(mf_net_conn_t *c);

/* Raises RLIMIT_NOFILE's soft limit (to the hard limit at most) when it is
 * below what `max_connections` connections plus `spare` other descriptors
 * need, and logs what it did. Returns 0, or MAYFLY_EINVAL when the hard
 * limit is too low too (logged; the daemon runs with fewer connections). */
int mf_net_raise_nofile(int64_t max_connections, int64_t spare);

#endif /* MAYFLY_NETSERVER_H */
