/*
 * Integration-test harness: starts real Mayfly daemons on free ports, runs the
 * real CLI against them, and makes sure every daemon dies with the test.
 *
 * Daemons are started with --port 0 --port-file, so the kernel picks a free
 * port and there is no race between choosing a port and binding it. Each
 * daemon gets PR_SET_PDEATHSIG(SIGKILL), so it dies even if the test process
 * is killed (CTest timeout, crash); an atexit handler stops the ones still
 * running when the test exits normally. Binaries are found through
 * $MAYFLY_BIN_DIR (set by CTest to the build directory).
 */
#ifndef MAYFLY_TEST_HARNESS_H
#define MAYFLY_TEST_HARNESS_H

#include <sys/types.h>

#include "common/wire.h"

typedef struct mf_daemon {
  pid_t pid;
  int port;
  char address[64]; /* "127.0.0.1:PORT", or "HOST:PORT" of the last --host given ("[::1]:PORT") */
  char *dir;        /* scratch directory (port file, log) */
  char *log_path;   /* the daemon's stderr */
} mf_daemon_t;

/* Path of a built binary, e.g. mf_bin("directory/mayfly-directory"); static
 * storage, valid until the next call. */
const char *mf_bin(const char *rel);

/* Starts mayfly-directory with extra arguments (NULL-terminated list) and
 * waits until it listens. Returns NULL (and prints why) on failure. */
mf_daemon_t *mf_start_directory(const char *arg, ...);

/* Starts mayfly-memserver registered with `dir`, with `blocks` blocks of
 * `block_size` (e.g. "64KiB"), plus extra arguments (NULL-terminated), and
 * waits until it says it registered and the directory lists it as up. Pass
 * "--port", "N" to restart a killed server on its old address. */
mf_daemon_t *mf_start_memserver(const mf_daemon_t *dir, int blocks, const char *block_size,
                                const char *arg, ...);

/* Starts a daemon (rel as for mf_bin) listening on `host`, inside the
 * network namespace `netns` (a name from `ip netns add`) unless it is NULL,
 * with the given arguments (NULL-terminated); waits until it listens. For
 * tests that build their own network. */
mf_daemon_t *mf_start_in_netns(const char *netns, const char *host, const char *rel,
                               const char *arg, ...) __attribute__((sentinel));

/* The same with the arguments in a NULL-terminated array (for callers that
 * build the list at run time). */
mf_daemon_t *mf_start_in_netns_v(const char *netns, const char *host, const char *rel,
                                 const char *const *argv);

/* Kills (SIGKILL) and reaps every daemon still running; runs at exit on its
 * own, and may be called earlier (a signal handler cleaning up). The
 * mf_daemon_t handles stay allocated but must not be used afterwards. */
void mf_kill_all(void);

/* Takes a process the caller forked (with PR_SET_PDEATHSIG set in the
 * child) into the list mf_kill_all kills, so that a daemon that is not a
 * Mayfly binary (etcd, tests/integration/etcdproc.h) dies with the test too.
 * `log_path` (may be NULL) is the file its output goes to (dumped on
 * failures, never deleted here). Stop it with mf_kill or mf_stop. */
mf_daemon_t *mf_adopt(pid_t pid, const char *log_path);

/* Sends SIGSTOP / SIGCONT (a server that hangs without closing its sockets). */
void mf_pause(const mf_daemon_t *d);
void mf_resume(const mf_daemon_t *d);

/* Sends SIGTERM and waits up to 5 s (then SIGKILL). Returns the exit status
 * as waitpid reports it, and frees d. */
int mf_stop(mf_daemon_t *d);

/* Kills with SIGKILL without waiting for a clean exit; frees d. */
void mf_kill(mf_daemon_t *d);

/* How many lines of the daemon's log so far contain `needle`. */
int mf_log_count(const mf_daemon_t *d, const char *needle);

/* Returns 1 if the daemon process is still running. */
int mf_alive(const mf_daemon_t *d);

/* Runs the mayfly CLI against `d` with the given arguments (NULL-terminated);
 * stdout and stderr are returned in *out / *err (g_free; may pass NULL).
 * Returns the exit status (0..255), or -1 if it could not run. */
int mf_cli(const mf_daemon_t *d, char **out, char **err, const char *arg, ...)
    __attribute__((sentinel));

/* Sleeps for ms milliseconds. */
void mf_sleep_ms(int ms);

/* A raw TCP connection to 127.0.0.1:port for tests that speak a protocol
 * by hand (hostile frames): receives time out after timeout_s seconds (0:
 * never). Returns the socket or -1. */
int mf_raw_connect(int port, int timeout_s);
/* Sends or receives exactly len bytes; 0, or -1 when the connection closed,
 * failed or the receive timed out. */
int mf_send_all(int fd, const void *buf, size_t len);
int mf_recv_all(int fd, void *buf, size_t len);

/* The same to an IPv4 HOST:PORT (the data-plane address of a memory server
 * on a loopback alias). */
int mf_raw_connect_to(const char *address, int timeout_s);

/* One data-plane reply read by hand: its header and up to 4 KiB of
 * metadata and payload. */
typedef struct mf_raw_reply {
  wire_hdr_t h;
  uint8_t payload[4096];
} mf_raw_reply_t;
/* Sends one frame: h (its request id, cap_len and payload_len set here,
 * the id from a counter of the process), metadata meta[0..mlen) and the
 * payload. 0 or -1. */
int mf_raw_send(int fd, wire_hdr_t *h, const void *meta, size_t mlen, const void *payload,
                size_t plen);
/* Reads one reply and checks it answers request `id`: 0, or -1 (connection
 * trouble, a bad frame, a reply too long or to another request). */
int mf_raw_recv(int fd, uint64_t id, mf_raw_reply_t *r);
/* mf_raw_send then mf_raw_recv. */
int mf_raw_roundtrip(int fd, wire_hdr_t h, const void *meta, size_t mlen, const void *payload,
                     size_t plen, mf_raw_reply_t *r);

#endif /* MAYFLY_TEST_HARNESS_H */

/* Registers a memory server's blocks with the directory through the control
 * API, as mayfly-memserver does at start-up (used by control-plane tests that
 * need blocks to allocate, before any data is served). Returns 0 or a
 * MAYFLY_E* code; *id receives the server id. */
int mf_register_blocks(const mf_daemon_t *dir, const char *address, int blocks,
                       long long block_size, int *id);

/* Sends one heartbeat for server `id`; *released (may be NULL) receives how
 * many blocks the directory asked the server to release. */
int mf_heartbeat(const mf_daemon_t *dir, int id, int *released);
/* The same, the caller naming the incarnation it registered with (0: none
 * said); mf_register_as registers with one. */
int mf_heartbeat_as(const mf_daemon_t *dir, int id, int64_t incarnation, int *released);

/* Control calls over a connection the test holds (common/ctl.h; the
 * generated types are from mayfly_directory.h). */
struct mf_ctl;
struct _MayflyPartition;

/* Creates a one-block namespace of `kind` (a MayflyNodeKind) with
 * `replicas` (0: the directory's default). Returns 0 or a MAYFLY_E* code. */
int mf_ctl_create(struct mf_ctl *ctl, const char *path, int kind, int replicas);

/* The first partition of path's layout (unref it), or NULL. */
struct _MayflyPartition *mf_ctl_first_part(struct mf_ctl *ctl, const char *path);
int mf_register_as(const mf_daemon_t *dir, const char *address, int blocks, long long block_size,
                   int64_t incarnation, int *id);
