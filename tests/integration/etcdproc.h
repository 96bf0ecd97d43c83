/*
 * A real etcd cluster for integration tests: 1..5 members on free loopback
 * ports, each with a temporary data directory and its own log file, started
 * with a quick heartbeat (100 ms) and election timeout (1 s) so that a
 * killed member's loss is noticed within about a second.
 *
 * Every member is forked with PR_SET_PDEATHSIG(SIGKILL) and handed to the
 * harness (mf_adopt, harness.h), so it is killed by PID at exit, by
 * mf_kill_all, and (handlers installed here unless the test has its own) on
 * SIGINT, SIGTERM and SIGABRT, even when a test fails.
 *
 * Set MAYFLY_KEEP_LOGS to keep the data directories and logs after stop.
 */
#ifndef MAYFLY_TEST_ETCDPROC_H
#define MAYFLY_TEST_ETCDPROC_H

/* What mf_etcd_proc_start returns when no etcd binary is installed: a test
 * prints why and exits 77 (CTest's SKIP_RETURN_CODE). */
#define MF_ETCD_SKIP (-77)
#define MF_ETCD_MAX 5

typedef struct mf_etcd_proc {
  int members;
  int pids[MF_ETCD_MAX];        /* 0: the member is not running */
  int client_port[MF_ETCD_MAX], peer_port[MF_ETCD_MAX];
  char endpoints[512];          /* "http://127.0.0.1:P1,http://127.0.0.1:P2,..." (client URLs) */
  char dir[256];                /* scratch: member i's data in DIR/m<i>, its log in DIR/m<i>.log */
} mf_etcd_proc_t;

/* Starts a new cluster of `members` (1..5) members on free loopback ports and
 * waits (up to 20 s) until every member answers GET /health with
 * {"health":"true"}. Returns 0, MF_ETCD_SKIP when `etcd` is not on PATH (or
 * $MAYFLY_ETCD does not name an executable), or -1 (printed why, the
 * members' logs dumped, everything started stopped). */
int mf_etcd_proc_start(int members, mf_etcd_proc_t *out);

/* Sends `sig` to member i by PID. SIGKILL and SIGTERM also wait for it to
 * exit (so its ports are free again) and mark it stopped (pids[i] = 0);
 * other signals (SIGSTOP, SIGCONT) leave it listed. No-op when stopped. */
void mf_etcd_proc_kill(mf_etcd_proc_t *p, int i, int sig);

/* Starts member i again on its old ports and data directory (kills it first
 * if it still runs) and waits until it is healthy. 0 or -1. */
int mf_etcd_proc_restart(mf_etcd_proc_t *p, int i);

/* Returns the client URL of member i alone ("http://127.0.0.1:P"), static
 * storage valid until the next call. */
const char *mf_etcd_proc_endpoint(const mf_etcd_proc_t *p, int i);

/* Kills every member (SIGKILL, by PID), waits for them and removes the data
 * directories. Also happens at exit and on signals through the harness
 * (without removing the directories). Safe to call twice. */
void mf_etcd_proc_stop(mf_etcd_proc_t *p);

#endif /* MAYFLY_TEST_ETCDPROC_H */
