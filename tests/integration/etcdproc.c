/*
 * A real etcd cluster for integration tests (see etcdproc.h).
 */
#include "etcdproc.h"

#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* The harness's handle of each member we run, by PID (mf_kill frees it). */
static struct {
  pid_t pid;
  mf_daemon_t *d;
} adopted[64];

static void on_fatal_signal(int sig) {
  mf_kill_all();
  signal(sig, SIG_DFL);
  raise(sig);
}

/* Installs our cleanup on SIGINT/SIGTERM/SIGABRT unless the test (or
 * hosts.c) already handles the signal: its handler kills the daemons too. */
static void arm_signals(void) {
  static int armed;
  if (armed) return;
  armed = 1;
  const int sigs[] = {SIGINT, SIGTERM, SIGABRT};
  for (size_t i = 0; i < G_N_ELEMENTS(sigs); i++) {
    struct sigaction old;
    if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_DFL) {
      struct sigaction sa = {.sa_handler = on_fatal_signal};
      sigemptyset(&sa.sa_mask);
      sigaction(sigs[i], &sa, NULL);
    }
  }
}

static const char *etcd_binary(void) {
  static char *path;
  if (path == NULL) {
    const char *env = getenv("MAYFLY_ETCD");
    path = env != NULL && *env ? g_strdup(env) : g_find_program_in_path("etcd");
  }
  return path != NULL && g_file_test(path, G_FILE_TEST_IS_EXECUTABLE) ? path : NULL;
}

/* Picks n distinct free loopback ports: all are bound at once (port 0), so
 * the kernel gives distinct ones, then released for etcd to bind. Another
 * process could take one in between; the caller retries then. */
static int free_ports(int *ports, int n) {
  int fds[2 * MF_ETCD_MAX];
  int rc = 0;
  for (int i = 0; i < n; i++) fds[i] = -1;
  for (int i = 0; i < n && rc == 0; i++) {
    fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    socklen_t len = sizeof a;
    if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fds[i], (struct sockaddr *)&a, &len) != 0) {
      rc = -1;
    } else {
      ports[i] = ntohs(a.sin_port);
    }
  }
  for (int i = 0; i < n; i++) {
    if (fds[i] >= 0) close(fds[i]);
  }
  return rc;
}

static char *member_log(const mf_etcd_proc_t *p, int i) {
  return g_strdup_printf("%s/m%d.log", p->dir, i);
}

static void dump_member_log(const mf_etcd_proc_t *p, int i) {
  char *path = member_log(p, i);
  char *log = NULL;
  gsize len = 0;
  if (g_file_get_contents(path, &log, &len, NULL)) {
    /* The tail is what explains a failure; etcd logs a lot at start-up. */
    const char *from = len > 8192 ? log + len - 8192 : log;
    fprintf(stderr, "---- %s (tail) ----\n%s-----------\n", path, from);
    g_free(log);
  }
  g_free(path);
}

static void spawn_member(mf_etcd_proc_t *p, int i, const char *state) {
  GString *cluster = g_string_new(NULL);
  for (int k = 0; k < p->members; k++) {
    g_string_append_printf(cluster, "%sm%d=http://127.0.0.1:%d", k ? "," : "", k, p->peer_port[k]);
  }
  char *name = g_strdup_printf("m%d", i);
  char *data = g_strdup_printf("%s/m%d", p->dir, i);
  char *client = g_strdup_printf("http://127.0.0.1:%d", p->client_port[i]);
  char *peer = g_strdup_printf("http://127.0.0.1:%d", p->peer_port[i]);
  char *token = g_strdup_printf("mayfly-test-%d-%s", (int)getpid(), p->dir + strlen(p->dir) - 6);
  char *log = member_log(p, i);
  const char *bin = etcd_binary();
  const char *argv[] = {bin, "--name", name, "--data-dir", data, "--listen-client-urls", client,
                        "--advertise-client-urls", client, "--listen-peer-urls", peer,
                        "--initial-advertise-peer-urls", peer, "--initial-cluster", cluster->str,
                        "--initial-cluster-token", token, "--initial-cluster-state", state,
                        "--heartbeat-interval", "100", "--election-timeout", "1000",
                        "--logger", "zap", "--log-level", "warn", NULL};
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, STDERR_FILENO);
      dup2(fd, STDOUT_FILENO);
      close(fd);
    }
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    execv(bin, (char **)argv);
    fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
    _exit(127);
  }
  p->pids[i] = pid;
  if (pid > 0) {
    for (size_t k = 0; k < G_N_ELEMENTS(adopted); k++) {
      if (adopted[k].pid == 0) {
        adopted[k].pid = pid;
        adopted[k].d = mf_adopt(pid, log);
        break;
      }
    }
  }
  g_string_free(cluster, TRUE);
  g_free(name);
  g_free(data);
  g_free(client);
  g_free(peer);
  g_free(token);
  g_free(log);
}

/* One GET /health on member i: 1 when it says {"health":"true"}. */
static int healthy(const mf_etcd_proc_t *p, int i) {
  int fd = mf_raw_connect(p->client_port[i], 1);
  if (fd < 0) return 0;
  static const char req[] = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  char buf[2048];
  size_t got = 0;
  if (mf_send_all(fd, req, sizeof req - 1) == 0) {
    ssize_t n;
    while (got < sizeof buf - 1 && (n = recv(fd, buf + got, sizeof buf - 1 - got, 0)) > 0) got += (size_t)n;
  }
  close(fd);
  buf[got] = '\0';
  return strstr(buf, "\"health\":\"true\"") != NULL;
}

/* Waits until member i answers healthy, up to ms; 0, or -1 (it exited or
 * did not become healthy). */
static int wait_healthy(mf_etcd_proc_t *p, int i, int ms) {
  for (int waited = 0; waited < ms; waited += 50) {
    if (healthy(p, i)) return 0;
    int status;
    if (p->pids[i] > 0 && waitpid(p->pids[i], &status, WNOHANG) == p->pids[i]) {
      fprintf(stderr, "etcdproc: member %d exited during start-up (status %d)\n", i, status);
      /* Reaped already: the harness must not wait for it again. */
      for (size_t k = 0; k < G_N_ELEMENTS(adopted); k++) {
        if (adopted[k].pid == p->pids[i]) {
          mf_kill(adopted[k].d); /* kill of a reaped PID fails harmlessly; frees the handle */
          adopted[k].pid = 0;
          adopted[k].d = NULL;
        }
      }
      p->pids[i] = 0;
      return -1;
    }
    mf_sleep_ms(50);
  }
  fprintf(stderr, "etcdproc: member %d not healthy within %d ms\n", i, ms);
  return -1;
}

void mf_etcd_proc_kill(mf_etcd_proc_t *p, int i, int sig) {
  if (i < 0 || i >= p->members || p->pids[i] <= 0) return;
  pid_t pid = p->pids[i];
  if (sig != SIGKILL && sig != SIGTERM) {
    kill(pid, sig);
    return;
  }
  for (size_t k = 0; k < G_N_ELEMENTS(adopted); k++) {
    if (adopted[k].pid != pid) continue;
    if (sig == SIGTERM) {
      kill(pid, SIGCONT); /* a stopped member cannot act on SIGTERM */
      mf_stop(adopted[k].d);
    } else {
      mf_kill(adopted[k].d);
    }
    adopted[k].pid = 0;
    adopted[k].d = NULL;
  }
  p->pids[i] = 0;
}

static void remove_tree(const char *path) {
  GDir *d = g_dir_open(path, 0, NULL);
  if (d != NULL) {
    const char *name;
    while ((name = g_dir_read_name(d)) != NULL) {
      char *sub = g_build_filename(path, name, NULL);
      if (g_file_test(sub, G_FILE_TEST_IS_DIR) && !g_file_test(sub, G_FILE_TEST_IS_SYMLINK)) {
        remove_tree(sub);
      } else {
        g_unlink(sub);
      }
      g_free(sub);
    }
    g_dir_close(d);
  }
  g_rmdir(path);
}

void mf_etcd_proc_stop(mf_etcd_proc_t *p) {
  for (int i = 0; i < p->members; i++) mf_etcd_proc_kill(p, i, SIGKILL);
  if (p->dir[0] != '\0' && getenv("MAYFLY_KEEP_LOGS") == NULL) remove_tree(p->dir);
  p->dir[0] = '\0';
}

int mf_etcd_proc_start(int members, mf_etcd_proc_t *out) {
  memset(out, 0, sizeof *out);
  if (members < 1 || members > MF_ETCD_MAX) return -1;
  if (etcd_binary() == NULL) {
    fprintf(stderr, "etcdproc: no etcd executable on PATH (install etcd-server, or set MAYFLY_ETCD)\n");
    return MF_ETCD_SKIP;
  }
  arm_signals();
  /* A port taken by someone else between free_ports and etcd's bind makes
   * a member exit at once: try again with new ports. */
  for (int attempt = 0; attempt < 3; attempt++) {
    memset(out, 0, sizeof *out);
    out->members = members;
    char *dir = g_dir_make_tmp("mayfly-etcd-XXXXXX", NULL);
    if (dir == NULL || strlen(dir) >= sizeof out->dir) {
      g_free(dir);
      return -1;
    }
    g_strlcpy(out->dir, dir, sizeof out->dir);
    g_free(dir);
    int ports[2 * MF_ETCD_MAX];
    if (free_ports(ports, 2 * members) != 0) {
      mf_etcd_proc_stop(out);
      return -1;
    }
    GString *ep = g_string_new(NULL);
    for (int i = 0; i < members; i++) {
      out->client_port[i] = ports[2 * i];
      out->peer_port[i] = ports[2 * i + 1];
      g_string_append_printf(ep, "%shttp://127.0.0.1:%d", i ? "," : "", out->client_port[i]);
    }
    g_strlcpy(out->endpoints, ep->str, sizeof out->endpoints);
    g_string_free(ep, TRUE);
    for (int i = 0; i < members; i++) spawn_member(out, i, "new");
    int ok = 1;
    for (int i = 0; i < members && ok; i++) ok = wait_healthy(out, i, 20000) == 0;
    if (ok) return 0;
    for (int i = 0; i < members; i++) dump_member_log(out, i);
    mf_etcd_proc_stop(out);
  }
  fprintf(stderr, "etcdproc: could not start %d etcd member(s)\n", members);
  return -1;
}

int mf_etcd_proc_restart(mf_etcd_proc_t *p, int i) {
  if (i < 0 || i >= p->members) return -1;
  mf_etcd_proc_kill(p, i, SIGKILL);
  /* The data directory exists: etcd ignores --initial-cluster-state then
   * and rejoins with its old identity. */
  spawn_member(p, i, "new");
  if (wait_healthy(p, i, 20000) != 0) {
    dump_member_log(p, i);
    return -1;
  }
  return 0;
}

const char *mf_etcd_proc_endpoint(const mf_etcd_proc_t *p, int i) {
  static char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d", i >= 0 && i < p->members ? p->client_port[i] : 0);
  return url;
}
