/*
 * The HA test rig (issue 14): a real etcd (tests/integration/etcdproc.h),
 * several real mayfly-directory processes of one --cluster on it, each on a
 * loopback port of its own that it keeps across restarts and re-executions,
 * and real memory servers whose --directory is the comma list of all of
 * them. Helpers find the leader through cluster() (asked of each directory
 * over a one-address control connection, which cluster() never redirects),
 * stop, continue, kill and restart directories by PID.
 *
 * Every process is started through the harness (harness.h) or etcdproc, so
 * it is killed at exit even when a test fails. Nothing here asserts: the
 * helpers return codes and print why, the tests assert.
 */
#ifndef MAYFLY_TEST_HA_H
#define MAYFLY_TEST_HA_H

#include <stdint.h>

#include <mayfly_directory.h>

#include "client/mayfly.h"
#include "etcdproc.h"
#include "harness.h"

#define MF_HA_MAX_DIRS 5
#define MF_HA_MAX_MS 5
#define MF_HA_MAX_ARGS 16

typedef struct mf_ha {
  mf_etcd_proc_t etcd;
  char cluster[32];                      /* --cluster */
  const char *leader_ttl;                /* --leader-ttl, "2s" unless set before mf_ha_start_dirs */
  int ndirs;
  int port[MF_HA_MAX_DIRS];              /* each directory's --port, kept across restarts */
  char address[MF_HA_MAX_DIRS][64];      /* its --advertise, "127.0.0.1:PORT" */
  mf_daemon_t *dir[MF_HA_MAX_DIRS];      /* NULL while killed */
  int stopped[MF_HA_MAX_DIRS];           /* SIGSTOPped by mf_ha_signal */
  const char *extra[MF_HA_MAX_ARGS + 1]; /* more directory flags (NULL-terminated) */
  char list[MF_HA_MAX_DIRS * 64];        /* "a,b,c": every directory's address */
  mf_daemon_t all;                       /* .address = list, for mf_start_memserver and mf_cli */
  int nms;
  mf_daemon_t *ms[MF_HA_MAX_MS];
} mf_ha_t;

/* Monotonic clock in milliseconds (the history's clock too). */
int64_t mf_ha_now_ms(void);

/* Starts an etcd of `members` members (0, MF_ETCD_SKIP when etcd is not
 * installed, or -1) and names the cluster uniquely for this process. */
int mf_ha_start_etcd(mf_ha_t *h, int members);

/* Starts n directories (n <= MF_HA_MAX_DIRS) on free ports with --etcd,
 * --cluster, --leader-ttl, --port, --advertise and h->extra; the address list
 * covers all n. Returns 0 or -1 (printed why). */
int mf_ha_start_dirs(mf_ha_t *h, int n);

/* Declares n directories (fills ports, addresses and the list) without
 * starting any: for a test that starts one of them later (mf_ha_restart). */
int mf_ha_plan_dirs(mf_ha_t *h, int n);

/* (Re)starts directory i on its port with its flags (after mf_ha_kill, or
 * the first time after mf_ha_plan_dirs). 0 or -1. */
int mf_ha_restart(mf_ha_t *h, int i);

/* Starts n memory servers (blocks of block_size) with --directory = the
 * address list; each must register with whichever directory leads. 0 or -1. */
int mf_ha_start_memservers(mf_ha_t *h, int n, int blocks, const char *block_size);

/* cluster() asked of one directory (no redirection). Returns 0 and *out
 * (g_object_unref), or a MAYFLY_E* code. */
int mf_ha_cluster(const char *address, int timeout_ms, MayflyClusterInfo **out);

/* What directory i says in its own cluster() answer. */
typedef struct mf_ha_view {
  char role[16];      /* its own member entry's role ("leader", "standby", "single"); "" not listed */
  char leader[64];    /* the leader it names ("" none) */
  int64_t applied;    /* its own member entry's applied_seq (-1 not listed) */
  int64_t committed;  /* committed_seq */
  int64_t snapshot;   /* snapshot_seq */
  int64_t term;
} mf_ha_view_t;

/* Asks directory i (0, or a MAYFLY_E* code when it did not answer or is
 * killed). */
int mf_ha_view(mf_ha_t *h, int i, int timeout_ms, mf_ha_view_t *v);

/* Index of the directory that leads now: the one, among those running and
 * not stopped and not in `exclude` (a bit mask of indexes), whose own
 * cluster() answer names itself leader. Polls until timeout_ms; -1 when
 * none did. */
int mf_ha_wait_leader(mf_ha_t *h, unsigned exclude, int timeout_ms);

/* Sends sig to directory i by PID: SIGKILL also reaps it (dir[i] = NULL);
 * SIGSTOP / SIGCONT keep h->stopped[i] current. */
void mf_ha_signal(mf_ha_t *h, int i, int sig);

/* Kills (SIGKILL) directory i. */
void mf_ha_kill(mf_ha_t *h, int i);

/* PID of directory i (0 when killed). */
int mf_ha_pid(const mf_ha_t *h, int i);

/* A libmayfly client of the whole service (the address list), with this call
 * timeout. Returns NULL (printed why) on failure. */
mayfly_client_t *mf_ha_client(const mf_ha_t *h, int timeout_ms);

/* The first mutating call that succeeds through a client of the list:
 * mkdirs /.probe/<n> with calls of probe_ms each until one is acknowledged
 * or timeout_ms passed. Returns the time it was acknowledged (mf_ha_now_ms)
 * or -1. */
int64_t mf_ha_wait_serving(const mf_ha_t *h, int probe_ms, int timeout_ms);

/* Kills (SIGKILL) directory `victim` and measures the failover: *t_kill
 * when it died, *t_lead when another directory first named itself leader,
 * *t_serve when a mutating call through the list was first acknowledged
 * (mf_ha_now_ms; -1 when not within timeout_ms). Prints the figures.
 * Returns the new leader's index, or -1. */
int mf_ha_failover(mf_ha_t *h, int victim, int timeout_ms, int64_t *t_kill, int64_t *t_lead,
                   int64_t *t_serve);

/* Index of the etcd member that is etcd's raft leader now (asked of each
 * running member with `etcdctl endpoint status`), or -1. */
int mf_ha_etcd_leader(mf_ha_t *h);

/* Stops everything this rig started (also done at exit). */
void mf_ha_stop(mf_ha_t *h);

/* Pauses the load, checks the history through a fresh client of the list
 * (the tree and the data hold exactly the acknowledged operations, and no
 * call failed outside an allowed window), prints the counts with `test` and
 * `when`, and resumes the load. CUnit assertions. */
struct mf_hist;
struct mf_load;
void mf_ha_check_all(mf_ha_t *h, struct mf_hist *hist, struct mf_load *load, const char *test,
                     const char *when);

#endif /* MAYFLY_TEST_HA_H */
