/*
 * Minimal RESP2 client (see resp.h).
 */
#include "bench/resp.h"

#include <arpa/inet.h>
#include <glib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct resp {
  int fd;
  GByteArray *out;
  uint8_t *in;
  size_t cap, len, pos;
};

resp_t *resp_connect(const char *host, int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, host, &a.sin_addr);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    if (fd >= 0) close(fd);
    return NULL;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  resp_t *r = g_new0(resp_t, 1);
  r->fd = fd;
  r->out = g_byte_array_new();
  r->cap = 1 << 20;
  r->in = g_malloc(r->cap);
  return r;
}

void resp_close(resp_t *r) {
  if (r == NULL) return;
  close(r->fd);
  g_byte_array_free(r->out, TRUE);
  g_free(r->in);
  g_free(r);
}

void resp_cmd(resp_t *r, int argc, const char *const *argv, const size_t *lens) {
  char hdr[32];
  int n = snprintf(hdr, sizeof hdr, "*%d\r\n", argc);
  g_byte_array_append(r->out, (const uint8_t *)hdr, (guint)n);
  for (int i = 0; i < argc; i++) {
    n = snprintf(hdr, sizeof hdr, "$%zu\r\n", lens[i]);
    g_byte_array_append(r->out, (const uint8_t *)hdr, (guint)n);
    g_byte_array_append(r->out, (const uint8_t *)argv[i], (guint)lens[i]);
    g_byte_array_append(r->out, (const uint8_t *)"\r\n", 2);
  }
}

int resp_flush(resp_t *r) {
  size_t sent = 0;
  while (sent < r->out->len) {
    ssize_t w = send(r->fd, r->out->data + sent, r->out->len - sent, MSG_NOSIGNAL);
    if (w <= 0) return -1;
    sent += (size_t)w;
  }
  g_byte_array_set_size(r->out, 0);
  return 0;
}

/* Makes sure `need` bytes from pos are buffered. */
static int fill(resp_t *r, size_t need) {
  if (r->pos + need <= r->len) return 0;
  memmove(r->in, r->in + r->pos, r->len - r->pos);
  r->len -= r->pos;
  r->pos = 0;
  if (need > r->cap) {
    r->cap = need;
    r->in = g_realloc(r->in, r->cap);
  }
  while (r->len < need) {
    ssize_t got = recv(r->fd, r->in + r->len, r->cap - r->len, 0);
    if (got <= 0) return -1;
    r->len += (size_t)got;
  }
  return 0;
}

/* Reads a line ending in CRLF; returns its length without the CRLF. */
static int64_t line(resp_t *r) {
  for (size_t want = 1;; want++) {
    if (fill(r, want) != 0) return -1;
    if (want >= 2 && r->in[r->pos + want - 2] == '\r' && r->in[r->pos + want - 1] == '\n') {
      return (int64_t)want - 2;
    }
  }
}

int resp_read(resp_t *r, const uint8_t **data, int64_t *len) {
  int64_t n = line(r);
  if (n < 1) return -1;
  int type = r->in[r->pos];
  char num[32];
  size_t m = (size_t)MIN(n - 1, (int64_t)sizeof num - 1);
  memcpy(num, r->in + r->pos + 1, m);
  num[m] = '\0';
  *data = r->in + r->pos + 1;
  *len = n - 1;
  r->pos += (size_t)n + 2;
  if (type == '$') {
    int64_t blen = atoll(num);
    *len = blen;
    if (blen < 0) return type;
    if (fill(r, (size_t)blen + 2) != 0) return -1;
    *data = r->in + r->pos;
    r->pos += (size_t)blen + 2;
  } else if (type == '*') {
    *len = atoll(num);
  }
  return type;
}
