/*
 * The HA test rig: etcd, directories of one cluster, memory servers (see
 * ha.h).
 */
#include "ha.h"
#include "history.h"
#include "mf_test.h"

#include <arpa/inet.h>
#include <glib.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/ctl.h"
#include "common/error.h"

int64_t mf_ha_now_ms(void) {
  return g_get_monotonic_time() / 1000;
}

/* A loopback port nobody listens on right now. The directory binds it a
 * moment later (SO_REUSEADDR), so another process could take it meanwhile:
 * mf_ha_restart retries on a fresh port when a first start fails. */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  socklen_t len = sizeof a;
  int port = -1;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0) {
    port = ntohs(a.sin_port);
  }
  close(fd);
  return port;
}

int mf_ha_start_etcd(mf_ha_t *h, int members) {
  if (h->leader_ttl == NULL) h->leader_ttl = "2s";
  snprintf(h->cluster, sizeof h->cluster, "t%d", (int)getpid());
  int rc = mf_etcd_proc_start(members, &h->etcd);
  if (rc == MF_ETCD_SKIP) fprintf(stderr, "ha: etcd is not installed: skipped\n");
  return rc;
}

static void set_address(mf_ha_t *h, int i, int port) {
  h->port[i] = port;
  snprintf(h->address[i], sizeof h->address[i], "127.0.0.1:%d", port);
}

static void build_list(mf_ha_t *h) {
  h->list[0] = '\0';
  for (int i = 0; i < h->ndirs; i++) {
    if (i > 0) g_strlcat(h->list, ",", sizeof h->list);
    g_strlcat(h->list, h->address[i], sizeof h->list);
  }
  memset(&h->all, 0, sizeof h->all);
  g_strlcpy(h->all.address, h->list, sizeof h->all.address);
}

int mf_ha_plan_dirs(mf_ha_t *h, int n) {
  if (n < 1 || n > MF_HA_MAX_DIRS) return -1;
  if (h->leader_ttl == NULL) h->leader_ttl = "2s";
  h->ndirs = n;
  for (int i = 0; i < n; i++) {
    int port = free_port();
    if (port <= 0) return -1;
    set_address(h, i, port);
  }
  build_list(h);
  return 0;
}

/* Starts directory i on h->port[i]; NULL when it did not come up. */
static mf_daemon_t *start_dir(mf_ha_t *h, int i) {
  char port[16];
  snprintf(port, sizeof port, "%d", h->port[i]);
  /* The harness puts --port 0 first; the later --port wins. */
  const char *argv[16 + MF_HA_MAX_ARGS + 1] = {
      "--etcd",   h->etcd.endpoints, "--cluster",   h->cluster,      "--leader-ttl", h->leader_ttl,
      "--port",   port,              "--advertise", h->address[i],
  };
  int n = 10;
  for (int k = 0; h->extra[k] != NULL && k < MF_HA_MAX_ARGS; k++) argv[n++] = h->extra[k];
  argv[n] = NULL;
  return mf_start_in_netns_v(NULL, "127.0.0.1", "directory/mayfly-directory", argv);
}

int mf_ha_restart(mf_ha_t *h, int i) {
  if (i < 0 || i >= h->ndirs || h->dir[i] != NULL) return -1;
  h->dir[i] = start_dir(h, i);
  h->stopped[i] = 0;
  if (h->dir[i] == NULL) {
    fprintf(stderr, "ha: directory %d (%s) did not start\n", i, h->address[i]);
    return -1;
  }
  return 0;
}

int mf_ha_start_dirs(mf_ha_t *h, int n) {
  if (mf_ha_plan_dirs(h, n) != 0) return -1;
  for (int i = 0; i < n; i++) {
    h->dir[i] = start_dir(h, i);
    /* A port taken between free_port() and the bind: once more on another.
     * Only before the list is handed to anyone (no memory server yet). */
    for (int attempt = 0; h->dir[i] == NULL && attempt < 2; attempt++) {
      int port = free_port();
      if (port <= 0) break;
      set_address(h, i, port);
      build_list(h);
      h->dir[i] = start_dir(h, i);
    }
    if (h->dir[i] == NULL) {
      fprintf(stderr, "ha: directory %d did not start\n", i);
      return -1;
    }
  }
  return 0;
}

int mf_ha_start_memservers(mf_ha_t *h, int n, int blocks, const char *block_size) {
  for (int i = 0; i < n && i < MF_HA_MAX_MS; i++) {
    h->ms[i] = mf_start_memserver(&h->all, blocks, block_size, NULL);
    if (h->ms[i] == NULL) {
      fprintf(stderr, "ha: memory server %d did not register with %s\n", i, h->list);
      return -1;
    }
    h->nms = i + 1;
  }
  return 0;
}

int mf_ha_cluster(const char *address, int timeout_ms, MayflyClusterInfo **out) {
  mf_ctl_t *ctl;
  int rc = mf_ctl_open(address, timeout_ms, timeout_ms, &ctl);
  if (rc != 0) return rc;
  MayflyDirectoryIf *iface;
  rc = mf_ctl_begin(ctl, &iface);
  if (rc == 0) {
    MayflyClusterInfo *ci = g_object_new(MAYFLY_TYPE_CLUSTER_INFO, NULL);
    MayflyError *err = NULL;
    GError *gerr = NULL;
    gboolean ok = mayfly_directory_if_cluster(iface, &ci, &err, &gerr);
    rc = mf_ctl_end(ctl, ok, err, gerr);
    if (rc == 0) {
      *out = ci;
    } else {
      g_object_unref(ci);
    }
  }
  mf_ctl_close(ctl);
  return rc;
}

int mf_ha_view(mf_ha_t *h, int i, int timeout_ms, mf_ha_view_t *v) {
  memset(v, 0, sizeof *v);
  v->applied = -1;
  if (h->dir[i] == NULL) return MAYFLY_ECONNREFUSED;
  MayflyClusterInfo *ci = NULL;
  int rc = mf_ha_cluster(h->address[i], timeout_ms, &ci);
  if (rc != 0) return rc;
  for (guint k = 0; ci->members != NULL && k < ci->members->len; k++) {
    MayflyDirectoryMember *m = g_ptr_array_index(ci->members, k);
    if (m->address != NULL && strcmp(m->address, h->address[i]) == 0) {
      g_strlcpy(v->role, m->role ? m->role : "", sizeof v->role);
      v->applied = m->applied_seq;
    }
  }
  g_strlcpy(v->leader, ci->leader ? ci->leader : "", sizeof v->leader);
  v->committed = ci->committed_seq;
  v->snapshot = ci->snapshot_seq;
  v->term = ci->term;
  g_object_unref(ci);
  return 0;
}

/* Whether directory i names itself the leader in its own answer. */
static int leads(mf_ha_t *h, int i) {
  mf_ha_view_t v;
  return mf_ha_view(h, i, 500, &v) == 0 && strcmp(v.leader, h->address[i]) == 0;
}

int mf_ha_wait_leader(mf_ha_t *h, unsigned exclude, int timeout_ms) {
  int64_t until = mf_ha_now_ms() + timeout_ms;
  do {
    for (int i = 0; i < h->ndirs; i++) {
      if (h->dir[i] == NULL || h->stopped[i] || (exclude & (1u << i))) continue;
      if (leads(h, i)) return i;
    }
    mf_sleep_ms(20);
  } while (mf_ha_now_ms() < until);
  return -1;
}

void mf_ha_signal(mf_ha_t *h, int i, int sig) {
  if (h->dir[i] == NULL) return;
  if (sig == SIGKILL) {
    mf_kill(h->dir[i]);
    h->dir[i] = NULL;
    h->stopped[i] = 0;
    return;
  }
  kill(h->dir[i]->pid, sig);
  if (sig == SIGSTOP) h->stopped[i] = 1;
  if (sig == SIGCONT) h->stopped[i] = 0;
}

void mf_ha_kill(mf_ha_t *h, int i) {
  mf_ha_signal(h, i, SIGKILL);
}

int mf_ha_pid(const mf_ha_t *h, int i) {
  return h->dir[i] != NULL ? (int)h->dir[i]->pid : 0;
}

mayfly_client_t *mf_ha_client(const mf_ha_t *h, int timeout_ms) {
  mayfly_options_t o = {.timeout_ms = timeout_ms, .connect_timeout_ms = 1000, .token = ""};
  mayfly_client_t *c = NULL;
  int rc = mayfly_connect(h->list, &o, &c);
  if (rc != 0) {
    fprintf(stderr, "ha: mayfly_connect(%s): %s (%s)\n", h->list, mayfly_err_name(rc),
            mayfly_last_error());
    return NULL;
  }
  return c;
}

int64_t mf_ha_wait_serving(const mf_ha_t *h, int probe_ms, int timeout_ms) {
  static int probe;
  int64_t until = mf_ha_now_ms() + timeout_ms;
  /* The probe asks the directories that are not stopped: a stopped one
   * accepts connections (the kernel does) and would take each short probe
   * call whole, which measures the probe, not the failover. The workload's
   * clients, which use the whole list, are what shows how callers fare. */
  char list[sizeof h->list] = "";
  for (int i = 0; i < h->ndirs; i++) {
    if (h->stopped[i]) continue;
    if (list[0] != '\0') g_strlcat(list, ",", sizeof list);
    g_strlcat(list, h->address[i], sizeof list);
  }
  mayfly_options_t o = {.timeout_ms = probe_ms, .connect_timeout_ms = probe_ms, .token = ""};
  int64_t acked = -1;
  while (acked < 0 && mf_ha_now_ms() < until) {
    mayfly_client_t *c = NULL;
    if (mayfly_connect(list, &o, &c) != 0) {
      mf_sleep_ms(50);
      continue;
    }
    char path[64];
    snprintf(path, sizeof path, "/probe/%d-%d", (int)getpid(),
             __atomic_add_fetch(&probe, 1, __ATOMIC_RELAXED));
    if (mayfly_mkdir(c, path, 1) == 0) acked = mf_ha_now_ms();
    /* A new client for the next probe: none sticks to a directory that
     * died under it. */
    mayfly_disconnect(c);
  }
  return acked;
}

typedef struct {
  const mf_ha_t *h;
  int timeout_ms;
  int64_t acked;
} probe_t;

static gpointer probe_main(gpointer p) {
  probe_t *pr = p;
  pr->acked = mf_ha_wait_serving(pr->h, 300, pr->timeout_ms);
  return NULL;
}

int mf_ha_failover(mf_ha_t *h, int victim, int timeout_ms, int64_t *t_kill, int64_t *t_lead,
                   int64_t *t_serve) {
  *t_kill = mf_ha_now_ms();
  mf_ha_kill(h, victim);
  /* The first acknowledged write is probed on a thread of its own from the
   * kill on, so that polling cluster() meanwhile does not delay it. */
  probe_t pr = {h, timeout_ms, -1};
  GThread *probe = g_thread_new("probe", probe_main, &pr);
  int next = mf_ha_wait_leader(h, 1u << victim, timeout_ms);
  *t_lead = next >= 0 ? mf_ha_now_ms() : -1;
  g_thread_join(probe);
  *t_serve = pr.acked;
  fprintf(stderr, "ha: killed directory %d (%s); directory %d named itself leader after %lld ms, "
                  "the first write was acknowledged after %lld ms (leader-ttl %s)\n",
          victim, h->address[victim], next, next >= 0 ? (long long)(*t_lead - *t_kill) : -1LL,
          *t_serve >= 0 ? (long long)(*t_serve - *t_kill) : -1LL, h->leader_ttl);
  return next;
}

/* The unsigned integer after "name": in text ("" when absent). */
static char *json_uint(const char *text, const char *name) {
  char *pattern = g_strdup_printf("\"%s\"\\s*:\\s*([0-9]+)", name);
  GRegex *re = g_regex_new(pattern, 0, 0, NULL);
  GMatchInfo *mi = NULL;
  char *v = g_regex_match(re, text, 0, &mi) ? g_match_info_fetch(mi, 1) : g_strdup("");
  g_match_info_free(mi);
  g_regex_unref(re);
  g_free(pattern);
  return v;
}

int mf_ha_etcd_leader(mf_ha_t *h) {
  for (int i = 0; i < h->etcd.members; i++) {
    if (h->etcd.pids[i] == 0) continue;
    char *ep = g_strdup_printf("--endpoints=%s", mf_etcd_proc_endpoint(&h->etcd, i));
    const char *argv[] = {"etcdctl", ep, "--command-timeout=2s", "endpoint", "status", "-w", "json", NULL};
    char *out = NULL;
    int status = -1;
    gboolean ok = g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDERR_TO_DEV_NULL,
                               NULL, NULL, &out, NULL, &status, NULL);
    g_free(ep);
    int found = 0;
    if (ok && out != NULL) {
      /* Member ids are 64-bit unsigned: compared as text. */
      char *self = json_uint(out, "member_id"), *leader = json_uint(out, "leader");
      found = self[0] != '\0' && strcmp(self, leader) == 0;
      g_free(self);
      g_free(leader);
    }
    g_free(out);
    if (found) return i;
  }
  return -1;
}

void mf_ha_stop(mf_ha_t *h) {
  for (int i = 0; i < h->nms; i++) {
    if (h->ms[i] != NULL) mf_kill(h->ms[i]);
    h->ms[i] = NULL;
  }
  h->nms = 0;
  for (int i = 0; i < h->ndirs; i++) {
    if (h->dir[i] != NULL) {
      if (h->stopped[i]) kill(h->dir[i]->pid, SIGCONT);
      mf_kill(h->dir[i]);
    }
    h->dir[i] = NULL;
    h->stopped[i] = 0;
  }
  mf_etcd_proc_stop(&h->etcd);
}

void mf_ha_check_all(mf_ha_t *h, mf_hist_t *hist, mf_load_t *load, const char *test,
                     const char *when) {
  CU_ASSERT_EQUAL_FATAL(mf_load_pause(load), 0);
  mayfly_client_t *c = mf_ha_client(h, 10000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(c);
  int64_t creates, removes, puts, errors;
  mf_hist_counts(hist, &creates, &removes, &puts, &errors);
  fprintf(stderr, "%s: %s: %lld creates, %lld removes, %lld puts acknowledged, %lld failed calls\n",
          test, when, (long long)creates, (long long)removes, (long long)puts, (long long)errors);
  CU_ASSERT(creates > 0);
  CU_ASSERT(puts > 0);
  MF_ASSERT_EQ(mf_hist_check_tree(hist, c), 0);
  MF_ASSERT_EQ(mf_hist_check_data(hist, c), 0);
  MF_ASSERT_EQ(mf_hist_check_errors(hist), 0);
  mayfly_disconnect(c);
  mf_load_resume(load);
}
