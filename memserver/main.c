/*
 * mayfly-memserver: a data-plane daemon. Owns a fixed pool of blocks, serves
 * the data operations on them over Mayfly's wire protocol, registers with the
 * directory and heartbeats, and releases the blocks the directory frees. One
 * libuv loop owns the data; a control thread talks to the directory.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "common/auth.h"
#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "common/netserver.h"
#include "common/wire.h"
#include "memserver/server.h"
#include "memserver/store.h"

typedef struct {
  ms_server_t *server;
  uv_signal_t sigint, sigterm;
  int rc; /* the exit status */
} daemon_t;

static void stop(daemon_t *dm) {
  ms_server_stop(dm->server);
  uv_close((uv_handle_t *)&dm->sigint, NULL);
  uv_close((uv_handle_t *)&dm->sigterm, NULL);
}

static void on_signal(uv_signal_t *h, int signum) {
  daemon_t *dm = h->data;
  MF_INFO("received %s, shutting down", signum == SIGINT ? "SIGINT" : "SIGTERM");
  stop(dm);
}

/* The server cannot go on (it logged why): stop and exit non-zero. */
static void on_fatal(void *ud) {
  daemon_t *dm = ud;
  dm->rc = 1;
  stop(dm);
}

int main(int argc, char **argv) {
  char *host = NULL, *directory = NULL, *advertise = NULL, *log_level = NULL, *port_file = NULL;
  char *key_file = NULL, *zone = NULL;
  uint8_t key[MF_KEY_SIZE];
  int64_t port = 0, blocks = 0;
  uint64_t block_size = 0;
  ms_server_config_t cfg = {0};
  mf_net_config_t *net = &cfg.net;
  mf_option_t opts[] = {
      {"host", MF_OPT_STRING, &host, "127.0.0.1", 0, 0, "Address to listen on (IPv4 or IPv6)",
       "HOST"},
      {"port", MF_OPT_INT, &port, "9100", 0, 65535, "Data-plane port (0 picks a free one)",
       "PORT"},
      {"port-file", MF_OPT_STRING, &port_file, NULL, 0, 0,
       "Write the port in use to FILE once listening", "FILE"},
      {"advertise", MF_OPT_STRING, &advertise, NULL, 0, 0,
       "Address clients use to reach this server (default HOST:PORT)", "HOST:PORT"},
      {"directory", MF_OPT_STRING, &directory, "127.0.0.1:9090", 0, 0,
       "The directory, or a comma-separated list of the replicas of a replicated directory "
       "service (the server registers with whichever leads, and again when that changes)",
       "HOST:PORT[,...]"},
      {"blocks", MF_OPT_INT, &blocks, "64", 1, 1 << 24, "Blocks in the pool", "N"},
      {"block-size", MF_OPT_SIZE, &block_size, "64MiB", 4096, 1LL << 32,
       "Size of one block", "SIZE"},
      {"max-connections", MF_OPT_INT, &net->max_connections, "10000", 1, 1000000,
       "Connections served at once", "N"},
      {"read-buffer", MF_OPT_SIZE, &net->read_buffer, "16KiB", 8192, 64 << 20,
       "Read buffer of a connection to start with and when idle", "SIZE"},
      {"max-input-total", MF_OPT_SIZE, &net->input_total, "256MiB", 1 << 20, 1LL << 40,
       "Read buffer growth past --read-buffer, all connections (at least one largest frame)",
       "SIZE"},
      {"max-reply-backlog", MF_OPT_SIZE, &net->reply_backlog, "8MiB", 4096, 1LL << 40,
       "Replies a connection may have unsent before its requests wait", "SIZE"},
      {"max-reply-backlog-total", MF_OPT_SIZE, &net->reply_backlog_total, "256MiB", 4096,
       1LL << 40,
       "Unsent replies, all connections (at least one largest reply; a connection with none "
       "always gets a reply of up to 64 KiB)",
       "SIZE"},
      {"frame-timeout", MF_OPT_DURATION, &net->frame_timeout_ms, "10s", 0, 3600000,
       "A frame that has started must complete within this (0: no limit)", "DURATION"},
      {"idle-timeout", MF_OPT_DURATION, &net->idle_timeout_ms, "600s", 0, 86400000,
       "Closes connections idle this long (0: never)", "DURATION"},
      {"send-timeout", MF_OPT_DURATION, &net->send_timeout_ms, "30s", 0, 86400000,
       "Closes a connection whose queued replies make no progress this long (0: never)",
       "DURATION"},
      {"max-deferred", MF_OPT_SIZE, &cfg.deferred_max, "8MiB", 1, 1LL << 40,
       "Parked and held request bytes of a connection before its requests wait", "SIZE"},
      {"max-deferred-total", MF_OPT_SIZE, &cfg.deferred_total_max, "256MiB", 1, 1LL << 40,
       "Parked and held request bytes, all connections", "SIZE"},
      {"max-waiting-pops", MF_OPT_INT, &cfg.pops_max, "1024", 0, 1 << 30,
       "Waiting pops of a connection; past it a pop answers 'try again' at once", "N"},
      {"max-waiting-pops-total", MF_OPT_INT, &cfg.pops_total_max, "65536", 0, 1 << 30,
       "Waiting pops, all connections", "N"},
      {"cluster-key-file", MF_OPT_STRING, &key_file, NULL, 0, 0,
       "The directory's cluster key (32 bytes, or 64 hexadecimal digits): the control "
       "connections pass the cluster handshake with it and every data request must carry a "
       "capability the directory signed; without it neither (the directory must have none "
       "either)",
       "FILE"},
      {"zone", MF_OPT_STRING, &zone, NULL, 0, 0,
       "Failure zone of this server (a rack, a room): replicas of a partition go to distinct "
       "zones first",
       "NAME"},
      {"dedup-max", MF_OPT_INT, &cfg.dedup_max, "65536", 16, 1 << 30,
       "Write replies a replicated block remembers so a retried write is applied once", "N"},
      {"dedup-bytes", MF_OPT_SIZE, &cfg.dedup_bytes, "64MiB", 0, 1LL << 40,
       "Payload bytes of remembered write replies (pops' items), all blocks", "SIZE"},
      {"log-level", MF_OPT_STRING, &log_level, "info", 0, 0, "debug, info, warn, error or off",
       "LEVEL"},
      {NULL, 0, NULL, NULL, 0, 0, NULL, NULL}};
  char err[512];
  mf_log_level_t level = MF_LOG_INFO;
  int rc = 2;
  store_t store = {0};
  if (mf_config_load("memserver", "A Mayfly memory server: a pool of blocks serving data.", opts,
                     &argc, &argv, err, sizeof err) != 0) {
    fprintf(stderr, "mayfly-memserver: %s\n", err);
  } else if (argc > 1) {
    fprintf(stderr, "mayfly-memserver: unexpected argument '%s' (see --help)\n", argv[1]);
  } else if (mf_log_parse_level(log_level, &level) != 0) {
    fprintf(stderr, "mayfly-memserver: --log-level: '%s' is not debug, info, warn, error or off\n",
            log_level);
  } else if (block_size % (uint64_t)sysconf(_SC_PAGESIZE) != 0) {
    fprintf(stderr,
            "mayfly-memserver: --block-size %llu is not a multiple of the page size (%ld bytes): "
            "blocks give their pages back one by one\n",
            (unsigned long long)block_size, sysconf(_SC_PAGESIZE));
  } else if (net->input_total < block_size + WIRE_KEY_MAX + WIRE_HEADER_SIZE + WIRE_CAP_MAX) {
    fprintf(stderr,
            "mayfly-memserver: --max-input-total %llu is smaller than one largest frame (a block "
            "and a key)\n",
            (unsigned long long)net->input_total);
  } else if (net->reply_backlog_total < block_size + WIRE_KEY_MAX + WIRE_HEADER_SIZE) {
    fprintf(stderr,
            "mayfly-memserver: --max-reply-backlog-total %llu is smaller than one largest reply "
            "(a block and a key)\n",
            (unsigned long long)net->reply_backlog_total);
  } else if ((uint64_t)blocks * block_size / block_size != (uint64_t)blocks ||
             store_init(&store, (int32_t)blocks, block_size) != 0) {
    fprintf(stderr, "mayfly-memserver: cannot reserve %lld blocks of %llu bytes\n",
            (long long)blocks, (unsigned long long)block_size);
    rc = 1;
  } else {
    rc = 0;
  }
  if (rc != 0) goto out;
  mf_log_init("mayfly-memserver", level);
  signal(SIGPIPE, SIG_IGN);
  char why[1024];
  if (mf_auth_init() != 0) {
    MF_ERROR("cannot start: libsodium cannot initialise (no randomness source?)");
    rc = 1;
    goto out;
  }
  if (key_file != NULL) {
    int world_readable = 0;
    if (mf_auth_key_load(key_file, key, &world_readable, why, sizeof why) != 0) {
      MF_ERROR("cannot start: --cluster-key-file: %s", why);
      rc = 1;
      goto out;
    }
    if (world_readable) {
      MF_WARN("cluster key file %s is readable by its group or others: anyone who reads it can "
              "act as a memory server or sign capabilities (chmod 600 %s)",
              key_file, key_file);
    }
    cfg.cluster_key = key;
    MF_INFO("cluster key from %s: the directory must hold the same key; data requests need its "
            "capabilities",
            key_file);
  }

  uv_loop_t *loop = uv_default_loop();
  daemon_t dm = {0};
  net->host = host;
  net->port = (int)port;
  cfg.directory = directory;
  cfg.advertise = advertise;
  cfg.zone = zone;
  cfg.on_fatal = on_fatal;
  cfg.fatal_ud = &dm;
  /* Connections, the control and publisher threads' sockets, the pool to
   * other memory servers, the loop's own descriptors. */
  mf_net_raise_nofile(net->max_connections, 64);
  int bound = 0;
  if (ms_server_start(loop, &store, &cfg, &dm.server, &bound, why, sizeof why) != 0) {
    MF_ERROR("%s", why);
    rc = 1;
    goto out;
  }
  MF_INFO("serving %lld blocks of %llu bytes on %s:%d (directory %s)", (long long)blocks,
          (unsigned long long)block_size, host, bound, directory);
  if (port_file != NULL) {
    char *tmp = g_strdup_printf("%s.tmp", port_file);
    char buf[16];
    snprintf(buf, sizeof buf, "%d\n", bound);
    if (!g_file_set_contents(tmp, buf, -1, NULL) || rename(tmp, port_file) != 0) {
      MF_ERROR("cannot write port file %s", port_file);
    }
    g_free(tmp);
  }
  uv_signal_init(loop, &dm.sigint);
  uv_signal_init(loop, &dm.sigterm);
  dm.sigint.data = dm.sigterm.data = &dm;
  uv_signal_start(&dm.sigint, on_signal, SIGINT);
  uv_signal_start(&dm.sigterm, on_signal, SIGTERM);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  rc = dm.rc;
  MF_INFO(rc == 0 ? "stopped" : "stopped: cannot serve");

out:
  mf_auth_wipe(key, sizeof key);
  store_free(&store);
  g_free(key_file);
  g_free(host);
  g_free(directory);
  g_free(advertise);
  g_free(zone);
  g_free(log_level);
  g_free(port_file);
  return rc;
}
