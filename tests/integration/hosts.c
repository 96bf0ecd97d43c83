/*
 * Emulated hosts for the replication tests (see hosts.h): loopback aliases,
 * or a network namespace per host on a bridge in the test's own namespace.
 */
#define _GNU_SOURCE /* setns */
#include "hosts.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client/mayfly.h"
#include "common/error.h"

/* Namespaces this process made and has not deleted yet (names, g_free). The
 * test's own is the first once made. */
static GPtrArray *made;
static char test_ns[32];
static int subnet; /* X of 10.211.X.0/24 */
static int cleanup_armed;

int64_t mf_hosts_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs a shell command (output discarded); returns its exit status or -1. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *cmd = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  char *full = g_strdup_printf("%s >/dev/null 2>&1", cmd);
  int st = system(full);
  g_free(full);
  g_free(cmd);
  return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void ns_delete(const char *name) {
  sh("ip netns del %s", name);
}

/* Kills the daemons first (a daemon inside a namespace keeps it alive), then
 * deletes every namespace still listed. */
static void cleanup_all(void) {
  mf_kill_all();
  if (made == NULL) return;
  for (guint i = 0; i < made->len; i++) ns_delete(g_ptr_array_index(made, i));
  g_ptr_array_set_size(made, 0);
}

static void on_fatal_signal(int sig) {
  cleanup_all();
  signal(sig, SIG_DFL);
  raise(sig);
}

static void arm_cleanup(void) {
  if (cleanup_armed) return;
  cleanup_armed = 1;
  made = g_ptr_array_new_with_free_func(g_free);
  atexit(cleanup_all);
  struct sigaction sa = {.sa_handler = on_fatal_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGABRT, &sa, NULL);
}

static void forget_ns(const char *name) {
  for (guint i = 0; made != NULL && i < made->len; i++) {
    if (strcmp(g_ptr_array_index(made, i), name) == 0) {
      g_ptr_array_remove_index(made, i);
      return;
    }
  }
}

/* Deletes the namespaces of earlier runs that died before cleaning up (their
 * PID no longer exists). */
static void sweep(void) {
  GDir *d = g_dir_open("/var/run/netns", 0, NULL);
  if (d == NULL) return;
  const char *name;
  GPtrArray *stale = g_ptr_array_new_with_free_func(g_free);
  while ((name = g_dir_read_name(d)) != NULL) {
    int pid = 0, host = 0, end = 0;
    size_t len = strlen(name);
    int ours = (sscanf(name, "mf%dh%d%n", &pid, &host, &end) == 2 && (size_t)end == len) ||
               (sscanf(name, "mf%dt%n", &pid, &end) == 1 && (size_t)end == len);
    if (ours && pid > 0 && kill(pid, 0) != 0 && errno == ESRCH) {
      g_ptr_array_add(stale, g_strdup(name));
    }
  }
  g_dir_close(d);
  for (guint i = 0; i < stale->len; i++) ns_delete(g_ptr_array_index(stale, i));
  g_ptr_array_free(stale, TRUE);
}

int mf_hosts_enter_netns(char *why, size_t len) {
  if (test_ns[0] != '\0') return 0;
  if (geteuid() != 0) {
    snprintf(why, len, "network namespaces need root (euid %d)", (int)geteuid());
    return -1;
  }
  if (sh("ip -V") != 0) {
    snprintf(why, len, "the `ip` command (iproute2) is not available");
    return -1;
  }
  arm_cleanup();
  sweep();
  int pid = (int)getpid();
  char name[32];
  snprintf(name, sizeof name, "mf%dt", pid);
  if (sh("ip netns add %s", name) != 0) {
    snprintf(why, len, "`ip netns add %s` failed (no network namespaces here?)", name);
    return -1;
  }
  g_ptr_array_add(made, g_strdup(name));
  char *path = g_strdup_printf("/var/run/netns/%s", name);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  g_free(path);
  if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
    snprintf(why, len, "cannot move into the namespace %s: %s", name, strerror(errno));
    if (fd >= 0) close(fd);
    return -1;
  }
  close(fd);
  /* From here on every `ip` the test runs acts on its own namespace. */
  subnet = 20 + pid % 200;
  int rc = sh("ip link set lo up");
  rc |= sh("ip link add mfbr type bridge");
  rc |= sh("ip addr add 10.211.%d.1/24 dev mfbr", subnet);
  rc |= sh("ip link set mfbr up");
  if (rc != 0) {
    snprintf(why, len, "cannot create the bridge in the namespace %s", name);
    return -1;
  }
  snprintf(test_ns, sizeof test_ns, "%s", name);
  return 0;
}

/* Creates host i's namespace and its link to the bridge. */
static int host_up(mf_hosts_t *h, int i, char *why, size_t len) {
  int pid = (int)getpid();
  snprintf(h->netns[i], sizeof h->netns[i], "mf%dh%d", pid, i + 1);
  snprintf(h->veth[i], sizeof h->veth[i], "vh%d", i + 1);
  snprintf(h->ip[i], sizeof h->ip[i], "10.211.%d.%d", subnet, i + 11);
  if (sh("ip netns add %s", h->netns[i]) != 0) {
    snprintf(why, len, "`ip netns add %s` failed", h->netns[i]);
    return -1;
  }
  g_ptr_array_add(made, g_strdup(h->netns[i]));
  int rc = sh("ip -n %s link set lo up", h->netns[i]);
  /* The veth of an earlier host of this test, whose namespace was deleted:
   * the kernel tears such a namespace down asynchronously, so its pair can
   * outlive it for a while. Deleting one end deletes both at once. */
  sh("ip link del %s", h->veth[i]);
  rc |= sh("ip link add %s type veth peer name eth0 netns %s", h->veth[i], h->netns[i]);
  rc |= sh("ip link set %s master mfbr", h->veth[i]);
  rc |= sh("ip link set %s up", h->veth[i]);
  rc |= sh("ip -n %s addr add %s/24 dev eth0", h->netns[i], h->ip[i]);
  rc |= sh("ip -n %s link set eth0 up", h->netns[i]);
  if (rc != 0) {
    snprintf(why, len, "cannot link the namespace %s to the bridge", h->netns[i]);
    return -1;
  }
  return 0;
}

mf_hosts_t *mf_hosts_new(mf_hosts_mode_t mode, int n, char *why, size_t len) {
  if (n < 1 || n > MF_HOSTS_MAX) {
    snprintf(why, len, "%d hosts: the harness makes 1 to %d", n, MF_HOSTS_MAX);
    return NULL;
  }
  if (mode == MF_HOSTS_NETNS && mf_hosts_enter_netns(why, len) != 0) return NULL;
  arm_cleanup();
  mf_hosts_t *h = g_new0(mf_hosts_t, 1);
  h->mode = mode;
  h->n = n;
  if (mode == MF_HOSTS_LOOPBACK) {
    snprintf(h->dir_ip, sizeof h->dir_ip, "127.0.0.1");
    for (int i = 0; i < n; i++) snprintf(h->ip[i], sizeof h->ip[i], "127.0.0.%d", i + 2);
    return h;
  }
  snprintf(h->dir_ip, sizeof h->dir_ip, "10.211.%d.1", subnet);
  for (int i = 0; i < n; i++) {
    if (host_up(h, i, why, len) != 0) {
      mf_hosts_free(h);
      return NULL;
    }
  }
  return h;
}

void mf_hosts_free(mf_hosts_t *h) {
  if (h == NULL) return;
  for (int i = 0; i < h->n; i++) mf_hosts_kill(h, i);
  if (h->dir != NULL) mf_kill(h->dir);
  for (int i = 0; i < h->n; i++) {
    if (h->netns[i][0] == '\0') continue;
    ns_delete(h->netns[i]);
    forget_ns(h->netns[i]);
  }
  g_free(h);
}

int mf_hosts_start_directory(mf_hosts_t *h, const char *arg, ...) {
  GPtrArray *args = g_ptr_array_new();
  va_list ap;
  va_start(ap, arg);
  for (const char *a = arg; a != NULL; a = va_arg(ap, const char *)) g_ptr_array_add(args, (gpointer)a);
  va_end(ap);
  g_ptr_array_add(args, NULL);
  h->dir = mf_start_in_netns_v(NULL, h->dir_ip, "directory/mayfly-directory",
                               (const char *const *)args->pdata);
  g_ptr_array_free(args, TRUE);
  return h->dir != NULL ? 0 : -1;
}

int mf_hosts_start_server(mf_hosts_t *h, int i, int blocks, const char *block_size,
                          const char *arg, ...) {
  if (i < 0 || i >= h->n || h->dir == NULL || h->ms[i] != NULL) {
    fprintf(stderr, "hosts: cannot start a server on host %d\n", i);
    return -1;
  }
  GPtrArray *args = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(args, g_strdup("--directory"));
  g_ptr_array_add(args, g_strdup(h->dir->address));
  g_ptr_array_add(args, g_strdup("--blocks"));
  g_ptr_array_add(args, g_strdup_printf("%d", blocks));
  g_ptr_array_add(args, g_strdup("--block-size"));
  g_ptr_array_add(args, g_strdup(block_size));
  if (h->port[i] > 0) {
    /* A later --port overrides the harness's --port 0. */
    g_ptr_array_add(args, g_strdup("--port"));
    g_ptr_array_add(args, g_strdup_printf("%d", h->port[i]));
  }
  va_list ap;
  va_start(ap, arg);
  for (const char *a = arg; a != NULL; a = va_arg(ap, const char *)) g_ptr_array_add(args, g_strdup(a));
  va_end(ap);
  g_ptr_array_add(args, NULL);
  mf_daemon_t *d = mf_start_in_netns_v(h->mode == MF_HOSTS_NETNS ? h->netns[i] : NULL, h->ip[i],
                                       "memserver/mayfly-memserver",
                                       (const char *const *)args->pdata);
  g_ptr_array_free(args, TRUE);
  if (d == NULL) return -1;
  h->ms[i] = d;
  h->port[i] = d->port;
  /* Registered when it says so (a restart on the address of a server the
   * directory still lists as up must not pass for registered), then listed
   * as up. */
  for (int waited = 0; waited < 10000 && mf_log_count(d, "registered with the directory") == 0;
       waited += 20) {
    mf_sleep_ms(20);
  }
  if (mf_hosts_wait_up(h, i, 1, 10000) != 0) {
    fprintf(stderr, "hosts: the server of host %d (%s) did not register within 10 s\n", i,
            d->address);
    mf_hosts_kill(h, i);
    return -1;
  }
  return 0;
}

const char *mf_hosts_address(const mf_hosts_t *h, int i) {
  static char buf[MF_HOSTS_MAX][64];
  if (i < 0 || i >= h->n || h->port[i] <= 0) return "";
  snprintf(buf[i], sizeof buf[i], "%s:%d", h->ip[i], h->port[i]);
  return buf[i];
}

int mf_hosts_find(const mf_hosts_t *h, const char *address) {
  for (int i = 0; address != NULL && i < h->n; i++) {
    if (h->port[i] > 0 && strcmp(mf_hosts_address(h, i), address) == 0) return i;
  }
  return -1;
}

void mf_hosts_kill(mf_hosts_t *h, int i) {
  if (i < 0 || i >= h->n || h->ms[i] == NULL) return;
  mf_kill(h->ms[i]);
  h->ms[i] = NULL;
}

void mf_hosts_pause(mf_hosts_t *h, int i) {
  if (i >= 0 && i < h->n && h->ms[i] != NULL) mf_pause(h->ms[i]);
}

void mf_hosts_resume(mf_hosts_t *h, int i) {
  if (i >= 0 && i < h->n && h->ms[i] != NULL) mf_resume(h->ms[i]);
}

int mf_hosts_cut(mf_hosts_t *h, int i) {
  if (h->mode != MF_HOSTS_NETNS || i < 0 || i >= h->n) return -1;
  return sh("ip link set %s down", h->veth[i]) == 0 ? 0 : -1;
}

int mf_hosts_restore(mf_hosts_t *h, int i) {
  if (h->mode != MF_HOSTS_NETNS || i < 0 || i >= h->n) return -1;
  return sh("ip link set %s up", h->veth[i]) == 0 ? 0 : -1;
}

int mf_hosts_slow(mf_hosts_t *h, int i, int delay_ms) {
  if (h->mode != MF_HOSTS_NETNS || i < 0 || i >= h->n) return -1;
  if (delay_ms <= 0) return sh("tc qdisc del dev %s root", h->veth[i]) == 0 ? 0 : -1;
  return sh("tc qdisc replace dev %s root netem delay %dms", h->veth[i], delay_ms) == 0 ? 0 : -1;
}

int mf_hosts_server_state(const mf_hosts_t *h, int i, int *up, int64_t *heartbeat_age_ms) {
  if (h->dir == NULL || i < 0 || i >= h->n) return MAYFLY_EINVAL;
  mayfly_options_t o = {.timeout_ms = 3000, .connect_timeout_ms = 2000};
  mayfly_client_t *c = NULL;
  int rc = mayfly_connect(h->dir->address, &o, &c);
  if (rc != 0) return rc;
  mayfly_server_t *s = NULL;
  size_t n = 0;
  rc = mayfly_servers(c, &s, &n);
  if (rc == 0) {
    rc = MAYFLY_ENOENT;
    const char *want = mf_hosts_address(h, i);
    for (size_t k = 0; k < n; k++) {
      if (strcmp(s[k].address, want) != 0) continue;
      if (up != NULL) *up = s[k].up;
      if (heartbeat_age_ms != NULL) *heartbeat_age_ms = s[k].heartbeat_age_ms;
      rc = 0;
    }
    mayfly_servers_free(s, n);
  }
  mayfly_disconnect(c);
  return rc;
}

int mf_hosts_wait_up(const mf_hosts_t *h, int i, int up, int timeout_ms) {
  int64_t end = mf_hosts_now_ms() + timeout_ms;
  do {
    int is_up = -1;
    if (mf_hosts_server_state(h, i, &is_up, NULL) == 0 && is_up == up) return 0;
    mf_sleep_ms(50);
  } while (mf_hosts_now_ms() < end);
  return -1;
}
