/*
 * Emulated hosts for the replication tests (issue 12): each memory server
 * runs as a host of its own, so that placement puts a chain's replicas on
 * distinct hosts and a test can fail one host.
 *
 * Two modes:
 *  - MF_HOSTS_LOOPBACK: memory server i (0-based) listens on 127.0.0.(i+2)
 *    (all of 127/8 is loopback), the directory on 127.0.0.1. Any user can
 *    run it; a host fails by kill -9 or SIGSTOP only.
 *  - MF_HOSTS_NETNS (root): the test process moves into a network namespace
 *    of its own, "mf<pid>t", with a bridge "mfbr" at 10.211.X.1/24 (X from
 *    the PID); host i gets the namespace "mf<pid>h<i+1>" with a veth pair to
 *    the bridge ("vh<i+1>" on the bridge's side, "eth0" inside) and the
 *    address 10.211.X.(i+11). The directory and the clients run in the
 *    test's namespace (the directory on the bridge address), each memory
 *    server in its host's namespace. A host's link can be cut, restored and
 *    slowed. No packet leaves these namespaces.
 *
 * Everything the harness makes is removed at exit, even when the test fails:
 * an atexit handler and handlers for SIGINT, SIGTERM and SIGABRT kill the
 * daemons by PID (harness.h) and then delete the namespaces; namespaces left
 * by a test that was killed with SIGKILL are swept by the next run (their
 * PID is gone). Daemons also die with the test (PR_SET_PDEATHSIG).
 */
#ifndef MAYFLY_TEST_HOSTS_H
#define MAYFLY_TEST_HOSTS_H

#include <stddef.h>
#include <stdint.h>

#include "harness.h"

/* The exit code of a test that cannot run here (no root, no `ip`): CTest's
 * SKIP_RETURN_CODE counts it as skipped, never as passed. */
#define MF_HOSTS_SKIP 77
#define MF_HOSTS_MAX 8

typedef enum { MF_HOSTS_LOOPBACK = 0, MF_HOSTS_NETNS = 1 } mf_hosts_mode_t;

typedef struct mf_hosts {
  mf_hosts_mode_t mode;
  int n;                                /* hosts */
  mf_daemon_t *dir;                     /* NULL until mf_hosts_start_directory */
  mf_daemon_t *ms[MF_HOSTS_MAX];        /* host i's memory server; NULL when none runs */
  int port[MF_HOSTS_MAX];               /* its last data port (to restart it there) */
  char ip[MF_HOSTS_MAX][32];            /* host i's address */
  char netns[MF_HOSTS_MAX][32];         /* netns mode: host i's namespace */
  char veth[MF_HOSTS_MAX][16];          /* netns mode: its link on the bridge's side */
  char dir_ip[32];                      /* the directory's address */
} mf_hosts_t;

/* Moves the calling process into a network namespace of its own with the
 * bridge (netns mode). Must be called before any thread starts (setns moves
 * the calling thread only); later calls return 0 at once. Returns 0, or -1
 * with a sentence in why (not root, no `ip`, the kernel refused). */
int mf_hosts_enter_netns(char *why, size_t len);

/* Prepares n hosts (at most MF_HOSTS_MAX) in `mode`; netns mode enters the
 * test's namespace first (mf_hosts_enter_netns) and creates the host
 * namespaces. Returns NULL with a sentence in why when it cannot. Free with
 * mf_hosts_free. */
mf_hosts_t *mf_hosts_new(mf_hosts_mode_t mode, int n, char *why, size_t len);

/* Stops every daemon (SIGKILL, by PID), deletes the host namespaces and
 * frees h. The test's own namespace stays until the process exits. */
void mf_hosts_free(mf_hosts_t *h);

/* Starts the directory on the directory's address with extra arguments
 * (NULL-terminated). Returns 0 or -1 (printed why). */
int mf_hosts_start_directory(mf_hosts_t *h, const char *arg, ...);

/* Starts host i's memory server with `blocks` blocks of `block_size` and
 * extra arguments (NULL-terminated), on its old port when it ran before
 * (a restart: a new incarnation on the same address), and waits until the
 * directory lists it as up. Returns 0 or -1 (printed why). */
int mf_hosts_start_server(mf_hosts_t *h, int i, int blocks, const char *block_size,
                          const char *arg, ...);

/* Host i's server's data address "IP:PORT" (static storage per host; "" when
 * it never ran). */
const char *mf_hosts_address(const mf_hosts_t *h, int i);

/* The host (0..n-1) whose server advertises `address`, or -1. */
int mf_hosts_find(const mf_hosts_t *h, const char *address);

/* kill -9 host i's server (nothing when none runs). */
void mf_hosts_kill(mf_hosts_t *h, int i);

/* SIGSTOP / SIGCONT host i's server (a hung host that keeps its sockets). */
void mf_hosts_pause(mf_hosts_t *h, int i);
void mf_hosts_resume(mf_hosts_t *h, int i);

/* Netns mode: takes host i's link down (`ip link set vhN down`: the host
 * reaches nobody and nobody reaches it, connections stall without a reset)
 * and back up. Returns 0, or -1 (loopback mode, or `ip` failed). */
int mf_hosts_cut(mf_hosts_t *h, int i);
int mf_hosts_restore(mf_hosts_t *h, int i);

/* Netns mode: delays every packet towards host i by delay_ms (tc netem on
 * the bridge's side of its link); 0 removes the delay. Returns 0, or -1
 * when the kernel has no netem (the caller says so and skips that part). */
int mf_hosts_slow(mf_hosts_t *h, int i, int delay_ms);

/* What the directory says of host i's server: up (1/0) and the age of its
 * last heartbeat. Returns 0, or a MAYFLY_E* code (MAYFLY_ENOENT: not listed). */
int mf_hosts_server_state(const mf_hosts_t *h, int i, int *up, int64_t *heartbeat_age_ms);

/* Waits up to timeout_ms until the directory lists host i's server as `up`.
 * Returns 0, or -1 on timeout. */
int mf_hosts_wait_up(const mf_hosts_t *h, int i, int up, int timeout_ms);

/* Monotonic milliseconds. */
int64_t mf_hosts_now_ms(void);

#endif /* MAYFLY_TEST_HOSTS_H */
