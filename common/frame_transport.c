/*
 * MfFrameTransport (see frame_transport.h).
 */
#include "common/frame_transport.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct _MfFrameTransport {
  ThriftTransport parent;
  int fd;
  int timeout_ms;
  int64_t deadline_us; /* socket mode: the call in progress ends here */
  uint32_t max_frame;
  int timed_out;
  int got_reply;        /* socket mode: a whole reply frame arrived since the last send */
  GByteArray *out;      /* 4 bytes reserved for the length, then the message */
  const uint8_t *in;    /* current frame payload */
  size_t in_len, in_pos;
  GByteArray *in_owned; /* socket mode: storage of the received frame */
};

G_DEFINE_TYPE(MfFrameTransport, mf_frame_transport, THRIFT_TYPE_TRANSPORT)

static void reset_output(MfFrameTransport *t) {
  static const uint8_t zero[4] = {0, 0, 0, 0};
  g_byte_array_set_size(t->out, 0);
  g_byte_array_append(t->out, zero, 4);
}

/* Waits until fd is ready for `events`, at most until the call's deadline
 * (none when timeout_ms < 0). */
static int wait_fd(MfFrameTransport *t, short events) {
  struct pollfd pfd = {.fd = t->fd, .events = events};
  for (;;) {
    int ms = -1;
    if (t->timeout_ms >= 0) {
      int64_t left = t->deadline_us - g_get_monotonic_time();
      ms = left <= 0 ? 0 : (int)MIN((left + 999) / 1000, (int64_t)INT_MAX);
    }
    int r = poll(&pfd, 1, ms);
    if (r > 0) return 0;
    if (r == 0) {
      t->timed_out = 1;
      return -1;
    }
    if (errno != EINTR) return -1;
  }
}

static int recv_all(MfFrameTransport *t, uint8_t *buf, size_t len, GError **error) {
  size_t got = 0;
  while (got < len) {
    if (wait_fd(t, POLLIN) != 0) {
      g_set_error(error, THRIFT_TRANSPORT_ERROR, THRIFT_TRANSPORT_ERROR_RECEIVE,
                  t->timed_out ? "timed out waiting for a reply" : "poll failed: %s",
                  g_strerror(errno));
      return -1;
    }
    ssize_t r = recv(t->fd, buf + got, len - got, 0);
    if (r > 0) {
      got += (size_t)r;
    } else if (r == 0) {
      g_set_error(error, THRIFT_TRANSPORT_ERROR, THRIFT_TRANSPORT_ERROR_RECEIVE,
                  "connection closed by peer");
      return -1;
    } else if (errno != EINTR && errno != EAGAIN) {
      g_set_error(error, THRIFT_TRANSPORT_ERROR, THRIFT_TRANSPORT_ERROR_RECEIVE, "recv: %s",
                  g_strerror(errno));
      return -1;
    }
  }
  return 0;
}

/* Storage for a frame grows with the bytes that arrive, from this size up
 * (doubling), so a length prefix alone never reserves the whole frame. */
#define FRAME_CHUNK (64u << 10)

/* Socket mode: receives one whole frame into in_owned. */
static gboolean load_frame(MfFrameTransport *t, GError **error) {
  uint8_t hdr[4];
  if (recv_all(t, hdr, 4, error) != 0) return FALSE;
  uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
  if (len > t->max_frame) {
    g_set_error(error, THRIFT_TRANSPORT_ERROR, THRIFT_TRANSPORT_ERROR_MAX_MESSAGE_SIZE_REACHED,
                "frame of %u bytes exceeds the limit of %u", len, t->max_frame);
    return FALSE;
  }
  for (size_t got = 0; got < len;) {
    size_t want = MIN((size_t)len - got, MAX((size_t)FRAME_CHUNK, got));
    g_byte_array_set_size(t->in_owned, (guint)(got + want));
    if (recv_all(t, t->in_owned->data + got, want, error) != 0) return FALSE;
    got += want;
  }
  g_byte_array_set_size(t->in_owned, len);
  t->got_reply = 1;
  t->in = t->in_owned->data;
  t->in_len = len;
  t->in_pos = 0;
  return TRUE;
}

static gboolean ft_is_open(ThriftTransport *transport) {
  return TRUE;
}

static gboolean ft_open(ThriftTransport *transport, GError **error) {
  return TRUE;
}

static gboolean ft_close(ThriftTransport *transport, GError **error) {
  return TRUE;
}

static gint32 ft_read(ThriftTransport *transport, gpointer buf, guint32 len, GError **error) {
  MfFrameTransport *t = MF_FRAME_TRANSPORT(transport);
  if (t->in_pos == t->in_len && t->fd >= 0 && len > 0) {
    if (!load_frame(t, error)) return -1;
  }
  if (len > t->in_len - t->in_pos) {
    g_set_error(error, THRIFT_TRANSPORT_ERROR, THRIFT_TRANSPORT_ERROR_RECEIVE,
                "message is truncated: %u bytes wanted, %zu left in the frame", len,
                t->in_len - t->in_pos);
    return -1;
  }
  memcpy(buf, t->in + t->in_pos, len);
  t->in_pos += len;
  return (gint32)len;
}

static gint32 ft_read_all(ThriftTransport *transport, gpointer buf, guint32 len,
                          GError **error) {
  return ft_read(transport, buf, len, error);
}

static gboolean ft_read_end(ThriftTransport *transport, GError **error) {
  MfFrameTransport *t = MF_FRAME_TRANSPORT(transport);
  t->in_pos = t->in_len; /* whatever is left of this frame is not ours */
  return TRUE;
}

static gboolean ft_write(ThriftTransport *transport, const gpointer buf, const guint32 len,
                         GError **error) {
  MfFrameTransport *t = MF_FRAME_TRANSPORT(transport);
  if (t->out->len - 4 + (size_t)len > t->max_frame) {
    g_set_error(error, THRIFT_TRANSPORT_ERROR, THRIFT_TRANSPORT_ERROR_MAX_MESSAGE_SIZE_REACHED,
                "message exceeds the frame limit of %u bytes", t->max_frame);
    return FALSE;
  }
  g_byte_array_append(t->out, buf, len);
  return TRUE;
}

static gboolean ft_write_end(ThriftTransport *transport, GError **error) {
  return TRUE;
}

static void fill_length(MfFrameTransport *t) {
  uint32_t n = t->out->len - 4;
  t->out->data[0] = (uint8_t)(n >> 24);
  t->out->data[1] = (uint8_t)(n >> 16);
  t->out->data[2] = (uint8_t)(n >> 8);
  t->out->data[3] = (uint8_t)n;
}

static gboolean ft_flush(ThriftTransport *transport, GError **error) {
  MfFrameTransport *t = MF_FRAME_TRANSPORT(transport);
  if (t->fd < 0) return TRUE; /* memory mode: the owner takes the output */
  fill_length(t);
  /* A request starts a call: its send and its reply share one deadline. */
  t->deadline_us = g_get_monotonic_time() + (int64_t)t->timeout_ms * 1000;
  t->got_reply = 0;
  size_t sent = 0;
  while (sent < t->out->len) {
    if (wait_fd(t, POLLOUT) != 0) {
      g_set_error(error, THRIFT_TRANSPORT_ERROR, THRIFT_TRANSPORT_ERROR_SEND,
                  t->timed_out ? "timed out sending a request" : "poll failed");
      reset_output(t);
      return FALSE;
    }
    ssize_t w = send(t->fd, t->out->data + sent, t->out->len - sent, MSG_NOSIGNAL);
    if (w > 0) {
      sent += (size_t)w;
    } else if (w < 0 && errno != EINTR && errno != EAGAIN) {
      g_set_error(error, THRIFT_TRANSPORT_ERROR, THRIFT_TRANSPORT_ERROR_SEND, "send: %s",
                  g_strerror(errno));
      reset_output(t);
      return FALSE;
    }
  }
  reset_output(t);
  /* A new request: any unread rest of the previous reply is stale. */
  t->in_pos = t->in_len;
  return TRUE;
}

static gboolean ft_check_available(ThriftTransport *transport, glong n, GError **error) {
  MfFrameTransport *t = MF_FRAME_TRANSPORT(transport);
  size_t avail = t->in_pos < t->in_len ? t->in_len - t->in_pos : t->max_frame;
  if (n < 0 || (size_t)n > avail) {
    g_set_error(error, THRIFT_TRANSPORT_ERROR, THRIFT_TRANSPORT_ERROR_MAX_MESSAGE_SIZE_REACHED,
                "message claims %ld bytes but the frame holds %zu", n, avail);
    return FALSE;
  }
  return TRUE;
}

static gboolean ft_size_ok(ThriftTransport *transport, glong size, GError **error) {
  return TRUE;
}

static void mf_frame_transport_finalize(GObject *object) {
  MfFrameTransport *t = MF_FRAME_TRANSPORT(object);
  g_byte_array_free(t->out, TRUE);
  g_byte_array_free(t->in_owned, TRUE);
  G_OBJECT_CLASS(mf_frame_transport_parent_class)->finalize(object);
}

static void mf_frame_transport_class_init(MfFrameTransportClass *cls) {
  ThriftTransportClass *tc = THRIFT_TRANSPORT_CLASS(cls);
  G_OBJECT_CLASS(cls)->finalize = mf_frame_transport_finalize;
  tc->is_open = ft_is_open;
  tc->open = ft_open;
  tc->close = ft_close;
  tc->read = ft_read;
  tc->read_all = ft_read_all;
  tc->read_end = ft_read_end;
  tc->write = ft_write;
  tc->write_end = ft_write_end;
  tc->flush = ft_flush;
  tc->checkReadBytesAvailable = ft_check_available;
  tc->updateKnownMessageSize = ft_size_ok;
  tc->resetConsumedMessageSize = ft_size_ok;
  tc->countConsumedMessageBytes = ft_size_ok;
}

static void mf_frame_transport_init(MfFrameTransport *t) {
  t->fd = -1;
  t->out = g_byte_array_new();
  t->in_owned = g_byte_array_new();
  reset_output(t);
}

MfFrameTransport *mf_frame_transport_new(int fd, int timeout_ms, uint32_t max_frame) {
  MfFrameTransport *t = g_object_new(MF_TYPE_FRAME_TRANSPORT, NULL);
  t->fd = fd;
  t->timeout_ms = timeout_ms;
  t->max_frame = max_frame ? max_frame : MF_FRAME_MAX_DEFAULT;
  return t;
}

void mf_frame_transport_set_input(MfFrameTransport *t, const uint8_t *data, size_t len) {
  t->in = data;
  t->in_len = len;
  t->in_pos = 0;
  reset_output(t);
}

const uint8_t *mf_frame_transport_output(MfFrameTransport *t, size_t *len) {
  if (t->out->len <= 4) {
    *len = 0;
    return NULL;
  }
  fill_length(t);
  *len = t->out->len;
  return t->out->data;
}

int mf_frame_transport_timed_out(const MfFrameTransport *t) {
  return t->timed_out;
}

void mf_frame_transport_set_timeout(MfFrameTransport *t, int timeout_ms) {
  t->timeout_ms = timeout_ms;
}

int mf_frame_transport_got_reply(const MfFrameTransport *t) {
  return t->got_reply;
}
