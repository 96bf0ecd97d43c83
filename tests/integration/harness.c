/*
 * Integration-test harness (see harness.h).
 */
#define _GNU_SOURCE /* setns */
#include "harness.h"

#include "common/error.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <glib.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static GPtrArray *running; /* mf_daemon_t * still alive */

void mf_sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

const char *mf_bin(const char *rel) {
  static char path[4096];
  const char *base = getenv("MAYFLY_BIN_DIR");
  snprintf(path, sizeof path, "%s/%s", base ? base : ".", rel);
  return path;
}

void mf_kill_all(void) {
  if (running == NULL) return;
  for (guint i = 0; i < running->len; i++) {
    mf_daemon_t *d = g_ptr_array_index(running, i);
    kill(d->pid, SIGKILL);
    waitpid(d->pid, NULL, 0);
  }
  g_ptr_array_set_size(running, 0);
}

static void forget(mf_daemon_t *d) {
  if (running != NULL) g_ptr_array_remove(running, d);
}

static void daemon_free(mf_daemon_t *d) {
  if (d->dir != NULL) {
    char *pf = g_build_filename(d->dir, "port", NULL);
    unlink(pf);
    g_free(pf);
    /* Keep the log next to the test's output only when asked. */
    if (getenv("MAYFLY_KEEP_LOGS") == NULL) {
      unlink(d->log_path);
      rmdir(d->dir);
    }
  }
  g_free(d->dir);
  g_free(d->log_path);
  g_free(d);
}

static void dump_log(const mf_daemon_t *d) {
  char *log = NULL;
  if (g_file_get_contents(d->log_path, &log, NULL, NULL)) {
    fprintf(stderr, "---- %s ----\n%s-----------\n", d->log_path, log);
    g_free(log);
  }
}

/* Starts binary with --host `host`, inside the network namespace `netns`
 * (a name under /var/run/netns) unless it is NULL. */
static mf_daemon_t *start_at(const char *netns, const char *host, const char *binary,
                             GPtrArray *args) {
  if (running == NULL) {
    running = g_ptr_array_new();
    atexit(mf_kill_all);
  }
  mf_daemon_t *d = g_new0(mf_daemon_t, 1);
  d->dir = g_dir_make_tmp("mayfly-test-XXXXXX", NULL);
  d->log_path = g_build_filename(d->dir, "daemon.log", NULL);
  char *port_file = g_build_filename(d->dir, "port", NULL);
  GPtrArray *argv = g_ptr_array_new();
  g_ptr_array_add(argv, (gpointer)binary);
  g_ptr_array_add(argv, "--host");
  g_ptr_array_add(argv, (gpointer)host);
  g_ptr_array_add(argv, "--port");
  g_ptr_array_add(argv, "0");
  g_ptr_array_add(argv, "--port-file");
  g_ptr_array_add(argv, port_file);
  for (guint i = 0; i < args->len; i++) g_ptr_array_add(argv, g_ptr_array_index(args, i));
  g_ptr_array_add(argv, NULL);

  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    if (netns != NULL) {
      char *nspath = g_strdup_printf("/var/run/netns/%s", netns);
      int nsfd = open(nspath, O_RDONLY | O_CLOEXEC);
      if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) != 0) _exit(126);
      close(nsfd);
    }
    int fd = open(d->log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, STDERR_FILENO);
      dup2(fd, STDOUT_FILENO);
      close(fd);
    }
    execv(binary, (char **)argv->pdata);
    fprintf(stderr, "exec %s: %s\n", binary, strerror(errno));
    _exit(127);
  }
  g_ptr_array_free(argv, TRUE);
  d->pid = pid;
  g_ptr_array_add(running, d);
  /* Wait for the port file (written once the daemon listens). */
  for (int waited = 0; waited < 10000; waited += 10) {
    char *txt = NULL;
    if (g_file_get_contents(port_file, &txt, NULL, NULL)) {
      d->port = atoi(txt);
      g_free(txt);
      break;
    }
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      fprintf(stderr, "harness: %s exited during start-up (status %d)\n", binary, status);
      dump_log(d);
      forget(d);
      daemon_free(d);
      g_free(port_file);
      return NULL;
    }
    mf_sleep_ms(10);
  }
  g_free(port_file);
  if (d->port <= 0) {
    fprintf(stderr, "harness: %s did not start listening within 10 s\n", binary);
    dump_log(d);
    mf_kill(d);
    return NULL;
  }
  /* The address it listens on: the last --host given (IPv6 in brackets). */
  for (guint i = 0; i + 1 < args->len; i++) {
    if (strcmp(g_ptr_array_index(args, i), "--host") == 0) host = g_ptr_array_index(args, i + 1);
  }
  snprintf(d->address, sizeof d->address, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, d->port);
  return d;
}

mf_daemon_t *mf_adopt(pid_t pid, const char *log_path) {
  if (running == NULL) {
    running = g_ptr_array_new();
    atexit(mf_kill_all);
  }
  mf_daemon_t *d = g_new0(mf_daemon_t, 1);
  d->pid = pid;
  d->log_path = g_strdup(log_path != NULL ? log_path : "/dev/null");
  g_ptr_array_add(running, d);
  return d;
}

static mf_daemon_t *start(const char *binary, GPtrArray *args) {
  return start_at(NULL, "127.0.0.1", binary, args);
}

mf_daemon_t *mf_start_in_netns(const char *netns, const char *host, const char *rel,
                               const char *arg, ...) {
  GPtrArray *args = g_ptr_array_new();
  va_list ap;
  va_start(ap, arg);
  for (const char *a = arg; a != NULL; a = va_arg(ap, const char *)) g_ptr_array_add(args, (gpointer)a);
  va_end(ap);
  char *bin = g_strdup(mf_bin(rel));
  mf_daemon_t *d = start_at(netns, host, bin, args);
  g_free(bin);
  g_ptr_array_free(args, TRUE);
  return d;
}

mf_daemon_t *mf_start_in_netns_v(const char *netns, const char *host, const char *rel,
                                 const char *const *argv) {
  GPtrArray *args = g_ptr_array_new();
  for (const char *const *a = argv; *a != NULL; a++) g_ptr_array_add(args, (gpointer)*a);
  char *bin = g_strdup(mf_bin(rel));
  mf_daemon_t *d = start_at(netns, host, bin, args);
  g_free(bin);
  g_ptr_array_free(args, TRUE);
  return d;
}

mf_daemon_t *mf_start_directory(const char *arg, ...) {
  GPtrArray *args = g_ptr_array_new();
  va_list ap;
  va_start(ap, arg);
  for (const char *a = arg; a != NULL; a = va_arg(ap, const char *)) g_ptr_array_add(args, (gpointer)a);
  va_end(ap);
  char *bin = g_strdup(mf_bin("directory/mayfly-directory"));
  mf_daemon_t *d = start(bin, args);
  g_free(bin);
  g_ptr_array_free(args, TRUE);
  return d;
}

mf_daemon_t *mf_start_memserver(const mf_daemon_t *dir, int blocks, const char *block_size,
                                const char *arg, ...) {
  GPtrArray *args = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(args, g_strdup("--directory"));
  g_ptr_array_add(args, g_strdup(dir->address));
  g_ptr_array_add(args, g_strdup("--blocks"));
  g_ptr_array_add(args, g_strdup_printf("%d", blocks));
  g_ptr_array_add(args, g_strdup("--block-size"));
  g_ptr_array_add(args, g_strdup(block_size));
  va_list ap;
  va_start(ap, arg);
  for (const char *a = arg; a != NULL; a = va_arg(ap, const char *)) g_ptr_array_add(args, g_strdup(a));
  va_end(ap);
  char *bin = g_strdup(mf_bin("memserver/mayfly-memserver"));
  mf_daemon_t *d = start(bin, args);
  g_free(bin);
  g_ptr_array_free(args, TRUE);
  if (d == NULL) return NULL;
  /* Registered when it says so (a server restarted on the address of one
   * the directory still lists as up must not pass for registered) and
   * `mayfly servers` lists its address as up. */
  for (int waited = 0; waited < 10000 && mf_log_count(d, "registered with the directory") == 0;
       waited += 20) {
    mf_sleep_ms(20);
  }
  for (int waited = 0; waited < 10000; waited += 20) {
    char *out = NULL;
    if (mf_cli(dir, &out, NULL, "servers", NULL) == 0 && out != NULL) {
      char *line = strstr(out, d->address);
      int up = line != NULL && strncmp(line + strlen(d->address), "  up", 4) == 0;
      g_free(out);
      if (up) return d;
    } else {
      g_free(out);
    }
    mf_sleep_ms(20);
  }
  fprintf(stderr, "harness: memory server %s did not register within 10 s\n", d->address);
  dump_log(d);
  mf_kill(d);
  return NULL;
}

int mf_log_count(const mf_daemon_t *d, const char *needle) {
  char *log = NULL;
  if (!g_file_get_contents(d->log_path, &log, NULL, NULL)) return 0;
  int n = 0;
  for (const char *p = log; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
  g_free(log);
  return n;
}

void mf_pause(const mf_daemon_t *d) {
  kill(d->pid, SIGSTOP);
}

void mf_resume(const mf_daemon_t *d) {
  kill(d->pid, SIGCONT);
}

int mf_alive(const mf_daemon_t *d) {
  int status;
  return waitpid(d->pid, &status, WNOHANG) == 0;
}

int mf_stop(mf_daemon_t *d) {
  int status = -1;
  kill(d->pid, SIGTERM);
  for (int waited = 0; waited < 5000; waited += 10) {
    if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
      if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) dump_log(d);
      forget(d);
      daemon_free(d);
      return status;
    }
    mf_sleep_ms(10);
  }
  fprintf(stderr, "harness: pid %d ignored SIGTERM for 5 s; killing it\n", (int)d->pid);
  dump_log(d);
  kill(d->pid, SIGKILL);
  waitpid(d->pid, &status, 0);
  forget(d);
  daemon_free(d);
  return status;
}

void mf_kill(mf_daemon_t *d) {
  kill(d->pid, SIGKILL);
  waitpid(d->pid, NULL, 0);
  forget(d);
  daemon_free(d);
}

int mf_cli(const mf_daemon_t *d, char **out, char **err, const char *arg, ...) {
  GPtrArray *argv = g_ptr_array_new();
  char *bin = g_strdup(mf_bin("client/mayfly"));
  g_ptr_array_add(argv, bin);
  g_ptr_array_add(argv, "--directory");
  g_ptr_array_add(argv, (gpointer)d->address);
  va_list ap;
  va_start(ap, arg);
  for (const char *a = arg; a != NULL; a = va_arg(ap, const char *)) g_ptr_array_add(argv, (gpointer)a);
  va_end(ap);
  g_ptr_array_add(argv, NULL);
  char *o = NULL, *e = NULL;
  int status = -1;
  GError *gerr = NULL;
  gboolean ok = g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_DEFAULT, NULL, NULL, &o,
                             &e, &status, &gerr);
  g_ptr_array_free(argv, TRUE);
  g_free(bin);
  if (!ok) {
    fprintf(stderr, "harness: cannot run mayfly: %s\n", gerr->message);
    g_error_free(gerr);
    return -1;
  }
  if (out) *out = o; else g_free(o);
  if (err) *err = e; else g_free(e);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int mf_raw_connect(int port, int timeout_s) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  if (timeout_s > 0) {
    struct timeval tv = {.tv_sec = timeout_s};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  return fd;
}

int mf_raw_connect_to(const char *address, int timeout_s) {
  char host[64];
  const char *colon = strrchr(address, ':');
  if (colon == NULL || (size_t)(colon - address) >= sizeof host) return -1;
  memcpy(host, address, (size_t)(colon - address));
  host[colon - address] = '\0';
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
  if (inet_pton(AF_INET, host, &a.sin_addr) != 1) return -1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  if (timeout_s > 0) {
    struct timeval tv = {.tv_sec = timeout_s};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  return fd;
}

int mf_raw_send(int fd, wire_hdr_t *h, const void *meta, size_t mlen, const void *payload,
                size_t plen) {
  static uint64_t next_request = 1;
  h->request_id = __atomic_fetch_add(&next_request, 1, __ATOMIC_RELAXED);
  h->cap_len = (uint16_t)mlen;
  h->payload_len = (uint32_t)plen;
  uint8_t *buf = g_malloc(WIRE_HEADER_SIZE + mlen + plen);
  wire_encode(h, buf);
  if (mlen > 0) memcpy(buf + WIRE_HEADER_SIZE, meta, mlen);
  if (plen > 0) memcpy(buf + WIRE_HEADER_SIZE + mlen, payload, plen);
  int rc = mf_send_all(fd, buf, WIRE_HEADER_SIZE + mlen + plen);
  g_free(buf);
  return rc;
}

int mf_raw_recv(int fd, uint64_t id, mf_raw_reply_t *r) {
  uint8_t hdr[WIRE_HEADER_SIZE];
  if (mf_recv_all(fd, hdr, sizeof hdr) != 0) return -1;
  size_t flen;
  int pr = wire_parse(hdr, sizeof hdr, UINT32_MAX, &r->h, &flen);
  if (pr != 0 && pr != MAYFLY_EAGAIN) return -1;
  size_t rest = (size_t)r->h.cap_len + r->h.payload_len;
  if (rest > sizeof r->payload) return -1;
  if (rest > 0 && mf_recv_all(fd, r->payload, rest) != 0) return -1;
  return r->h.request_id == id ? 0 : -1;
}

int mf_raw_roundtrip(int fd, wire_hdr_t h, const void *meta, size_t mlen, const void *payload,
                     size_t plen, mf_raw_reply_t *r) {
  if (mf_raw_send(fd, &h, meta, mlen, payload, plen) != 0) return -1;
  return mf_raw_recv(fd, h.request_id, r);
}

int mf_send_all(int fd, const void *buf, size_t len) {
  const uint8_t *p = buf;
  while (len > 0) {
    ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
    if (w <= 0) return -1;
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

int mf_recv_all(int fd, void *buf, size_t len) {
  uint8_t *p = buf;
  while (len > 0) {
    ssize_t r = recv(fd, p, len, 0);
    if (r <= 0) return -1;
    p += r;
    len -= (size_t)r;
  }
  return 0;
}
