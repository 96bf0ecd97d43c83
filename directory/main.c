/*
 * mayfly-directory: the control-plane daemon. Owns the namespace tree, serves
 * the Thrift control API on a libuv loop, tracks memory servers by heartbeat
 * and runs the lease reaper. Single-threaded: the loop owns all state.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "common/auth.h"
#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "common/netserver.h"
#include "directory/directory.h"
#include "directory/ha.h"
#include "directory/server.h"
#include "directory/tenants.h"

typedef struct {
  uv_loop_t *loop;
  dir_t dir;
  dir_server_t *server;
  uv_signal_t sigint, sigterm, sighup;
} daemon_t;

static void on_signal(uv_signal_t *h, int signum) {
  daemon_t *dm = h->data;
  MF_INFO("received %s, shutting down", signum == SIGINT ? "SIGINT" : "SIGTERM");
  dir_server_stop(dm->server);
  dir_stop(&dm->dir);
  uv_close((uv_handle_t *)&dm->sigint, NULL);
  uv_close((uv_handle_t *)&dm->sigterm, NULL);
  uv_close((uv_handle_t *)&dm->sighup, NULL);
}

/* SIGHUP: reads the tenants file again. A file that does not load keeps the
 * tenants in force; sessions resolve their tenant on every call, so the new
 * file applies to connections already logged in. */
static void on_sighup(uv_signal_t *h, int signum) {
  daemon_t *dm = h->data;
  if (dm->dir.cfg.tenants_file == NULL) {
    MF_INFO("received SIGHUP: no --tenants file to reload");
    return;
  }
  char why[1024];
  if (dir_tenants_reload(&dm->dir, why, sizeof why) != 0) {
    MF_WARN("received SIGHUP: the tenants file was not reloaded, the %u tenants loaded before "
            "stay in force: %s",
            dm->dir.tenants->list->len, why);
    return;
  }
  MF_INFO("received SIGHUP: reloaded %u tenants from %s", dm->dir.tenants->list->len,
          dm->dir.cfg.tenants_file);
}

/* Whether host names a loopback address only (127.0.0.0/8, ::1,
 * localhost). */
static int is_loopback(const char *host) {
  if (g_ascii_strcasecmp(host, "localhost") == 0) return 1;
  unsigned char a[16];
  if (uv_inet_pton(AF_INET, host, a) == 0) return a[0] == 127;
  static const unsigned char v6_lo[16] = {[15] = 1};
  return uv_inet_pton(AF_INET6, host, a) == 0 && memcmp(a, v6_lo, 16) == 0;
}

static int write_port_file(const char *path, int port) {
  char *tmp = g_strdup_printf("%s.tmp", path);
  char buf[16];
  snprintf(buf, sizeof buf, "%d\n", port);
  int ok = g_file_set_contents(tmp, buf, -1, NULL) && rename(tmp, path) == 0;
  g_free(tmp);
  return ok ? 0 : -1;
}

/* Frees the strings the option parser allocated. */
static void free_options(dir_config_t *cfg, char *port_file, char *key_file, char **args) {
  g_strfreev(args);
  g_free(cfg->host);
  g_free(cfg->etcd);
  g_free(cfg->cluster);
  g_free(cfg->advertise);
  g_free(cfg->log_level);
  g_free(cfg->data_dir);
  g_free(cfg->tenants_file);
  g_free(port_file);
  g_free(key_file);
}

/* A start that fails once listening: closes everything again (exit status 1). */
static int stop_early(daemon_t *dm, dir_config_t *cfg, char *port_file, char *key_file,
                      char **args) {
  dir_server_stop(dm->server);
  dir_stop(&dm->dir);
  uv_run(dm->loop, UV_RUN_DEFAULT);
  dir_free(&dm->dir);
  uv_loop_close(dm->loop);
  free_options(cfg, port_file, key_file, args);
  return 1;
}

/* Whether host is an unspecified address (0.0.0.0, ::), which clients
 * cannot be told to reach. */
static int is_any(const char *host) {
  return strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0 || host[0] == '\0';
}

int main(int argc, char **argv) {
  dir_config_t cfg = {0};
  /* The arguments as given, to re-execute with on stepping down (ha.h). */
  char **args = g_strdupv(argv);
  char *port_file = NULL, *key_file = NULL;
  mf_option_t opts[] = {
      {"host", MF_OPT_STRING, &cfg.host, "127.0.0.1", 0, 0, "Address to listen on", "HOST"},
      {"port", MF_OPT_INT, &cfg.port, "9090", 0, 65535, "Port to listen on (0 picks a free one)",
       "PORT"},
      {"port-file", MF_OPT_STRING, &port_file, NULL, 0, 0,
       "Write the port in use to FILE once listening", "FILE"},
      {"lease-ms", MF_OPT_DURATION, &cfg.lease_ms, "10000", 1, NS_LEASE_MAX_MS,
       "Default lease duration of a namespace", "DURATION"},
      {"grace-ms", MF_OPT_DURATION, &cfg.grace_ms, "10000", 0, NS_LEASE_MAX_MS,
       "Grace period after a lease runs out before the node expires", "DURATION"},
      {"heartbeat-ms", MF_OPT_DURATION, &cfg.heartbeat_ms, "1000", 10, 600000,
       "How often memory servers heartbeat", "DURATION"},
      {"heartbeat-timeout-ms", MF_OPT_DURATION, &cfg.heartbeat_timeout_ms, "5000", 20, 3600000,
       "Silence after which a memory server is marked down", "DURATION"},
      {"reap-interval-ms", MF_OPT_DURATION, &cfg.reap_interval_ms, "0", 0, 600000,
       "Lease reaper period (0: a tenth of lease + grace, within 20 ms..1 s)", "DURATION"},
      {"max-frame", MF_OPT_SIZE, &cfg.max_frame, "4MiB", 1024, 64 << 20,
       "Largest control-plane frame accepted", "SIZE"},
      {"max-connections", MF_OPT_INT, &cfg.max_connections, "10000", 1, 1000000,
       "Connections served at once", "N"},
      {"read-buffer", MF_OPT_SIZE, &cfg.read_buffer, "16KiB", 8192, 64 << 20,
       "Read buffer of a connection to start with and when idle", "SIZE"},
      {"max-input-total", MF_OPT_SIZE, &cfg.input_total, "64MiB", 1 << 20, 1LL << 40,
       "Read buffer growth past --read-buffer, all connections (at least --max-frame)", "SIZE"},
      {"max-reply-backlog", MF_OPT_SIZE, &cfg.reply_backlog, "1MiB", 4096, 1LL << 40,
       "Replies a connection may have unsent before its requests wait", "SIZE"},
      {"max-reply-backlog-total", MF_OPT_SIZE, &cfg.reply_backlog_total, "64MiB", 4096,
       1LL << 40,
       "Unsent replies, all connections (at least --max-frame; a request is served when "
       "there is room for a --max-frame reply)",
       "SIZE"},
      {"frame-timeout", MF_OPT_DURATION, &cfg.frame_timeout_ms, "10s", 0, 3600000,
       "A frame that has started must complete within this (0: no limit)", "DURATION"},
      {"idle-timeout", MF_OPT_DURATION, &cfg.idle_timeout_ms, "600s", 0, 86400000,
       "Closes connections idle this long (0: never)", "DURATION"},
      {"send-timeout", MF_OPT_DURATION, &cfg.send_timeout_ms, "30s", 0, 86400000,
       "Closes a connection whose queued replies make no progress this long (0: never)",
       "DURATION"},
      {"data-dir", MF_OPT_STRING, &cfg.data_dir, NULL, 0, 0,
       "Keep the tree durable in DIR (write-ahead log and snapshots); without it the "
       "directory keeps everything in memory and a restart loses it",
       "DIR"},
      {"recover-truncate", MF_OPT_BOOL, &cfg.recover_truncate, "false", 0, 0,
       "At start, cut the log at a corrupt record (losing it and what follows) instead of "
       "refusing to start",
       NULL},
      {"snapshot-records", MF_OPT_INT, &cfg.snapshot_records, "100000", 1, INT64_MAX,
       "With --data-dir or --etcd: write a snapshot (and drop the log before it) after this many log "
       "records",
       "N"},
      {"snapshot-bytes", MF_OPT_SIZE, &cfg.snapshot_bytes, "64MiB", 4096, 1LL << 40,
       "With --data-dir or --etcd: or after this many bytes of log, whichever comes first", "SIZE"},
      {"tenants", MF_OPT_STRING, &cfg.tenants_file, NULL, 0, 0,
       "Tenants file (INI: [tenant NAME] sections with token-sha256 or token, prefix, "
       "read-prefix, max-blocks, admin); SIGHUP reloads it. Without it the directory is open: "
       "every client may do everything",
       "FILE"},
      {"cluster-key-file", MF_OPT_STRING, &key_file, NULL, 0, 0,
       "The cluster key shared with the memory servers (32 random bytes, or 64 hexadecimal "
       "digits; make one with head -c 32 /dev/urandom): the server-only methods then need the "
       "cluster handshake and every layout carries signed capabilities. Without it both are "
       "open, as for a trusted network",
       "FILE"},
      {"capability-ttl", MF_OPT_DURATION, &cfg.capability_ttl_ms, "10min", 1000, 86400000,
       "With --cluster-key-file: how long a capability the directory signs stays valid "
       "(clients refresh theirs before)",
       "DURATION"},
      {"max-servers", MF_OPT_INT, &cfg.max_servers, "4096", 1, 1000000,
       "Memory servers that may register; a new address past it is refused (MAYFLY_EQUOTA)",
       "N"},
      {"replicas", MF_OPT_INT, &cfg.replicas, "1", 1, NS_CHAIN_MAX,
       "Blocks per partition, on distinct hosts, of a namespace whose create does not say "
       "(1: unreplicated)",
       "R"},
      {"copy-timeout", MF_OPT_DURATION, &cfg.copy_timeout_ms, "30s", 100, 3600000,
       "A re-replication copy not ended by its memory server within this is aborted (its "
       "block freed) and tried again",
       "DURATION"},
      {"etcd", MF_OPT_STRING, &cfg.etcd, NULL, 0, 0,
       "Keep the log and snapshots in etcd (comma-separated endpoints, e.g. "
       "http://10.0.0.1:2379,http://10.0.0.2:2379) instead of --data-dir: directories started "
       "with the same --cluster form one service, one leader and hot standbys",
       "URLS"},
      {"cluster", MF_OPT_STRING, &cfg.cluster, "mayfly", 0, 0,
       "With --etcd: the service's name; its keys live under /mayfly/NAME/", "NAME"},
      {"leader-ttl", MF_OPT_DURATION, &cfg.leader_ttl_ms, "3s", 1000, 60000,
       "With --etcd: the leader's lease; a dead leader is replaced within about this", "DURATION"},
      {"advertise", MF_OPT_STRING, &cfg.advertise, NULL, 0, 0,
       "With --etcd: this directory's address as clients reach it, which standbys name as the "
       "leader (default --host and the port in use)",
       "HOST:PORT"},
      {"etcd-timeout", MF_OPT_DURATION, &cfg.etcd_timeout_ms, "2s", 100, 60000,
       "With --etcd: how long one etcd request may take, over every endpoint; a leader whose log "
       "transaction fails steps down",
       "DURATION"},
      {"etcd-inflight", MF_OPT_INT, &cfg.etcd_inflight, "4", 1, 64,
       "With --etcd: log transactions in flight at once (each the records of one loop iteration)",
       "N"},
      {"log-level", MF_OPT_STRING, &cfg.log_level, "info", 0, 0,
       "debug, info, warn, error or off", "LEVEL"},
      {NULL, 0, NULL, NULL, 0, 0, NULL, NULL}};
  char err[512];
  mf_log_level_t level = MF_LOG_INFO;
  int bad = 0;
  if (mf_config_load("directory", "The Mayfly directory: namespaces, leases and block allocation.",
                     opts, &argc, &argv, err, sizeof err) != 0) {
    fprintf(stderr, "mayfly-directory: %s\n", err);
    bad = 1;
  } else if (argc > 1) {
    fprintf(stderr, "mayfly-directory: unexpected argument '%s' (see --help)\n", argv[1]);
    bad = 1;
  } else if (mf_log_parse_level(cfg.log_level, &level) != 0) {
    fprintf(stderr, "mayfly-directory: --log-level: '%s' is not debug, info, warn, error or off\n",
            cfg.log_level);
    bad = 1;
  } else if (cfg.input_total < cfg.max_frame + 4) {
    fprintf(stderr, "mayfly-directory: --max-input-total is smaller than --max-frame\n");
    bad = 1;
  } else if (cfg.reply_backlog_total < cfg.max_frame + 4) {
    fprintf(stderr, "mayfly-directory: --max-reply-backlog-total is smaller than --max-frame\n");
    bad = 1;
  } else if (cfg.etcd != NULL && cfg.data_dir != NULL) {
    fprintf(stderr, "mayfly-directory: --etcd and --data-dir exclude each other (the log is in "
                    "etcd or on disk)\n");
    bad = 1;
  } else if (cfg.etcd != NULL && cfg.advertise == NULL && is_any(cfg.host)) {
    fprintf(stderr, "mayfly-directory: --etcd with --host %s needs --advertise HOST:PORT (the "
                    "address clients are sent to)\n",
            cfg.host);
    bad = 1;
  } else if (cfg.etcd != NULL &&
             (cfg.cluster[0] == '\0' || strpbrk(cfg.cluster, "/ \t") != NULL ||
              strlen(cfg.cluster) > 128)) {
    fprintf(stderr, "mayfly-directory: --cluster '%s': a name of 1 to 128 characters without "
                    "'/' or spaces\n",
            cfg.cluster);
    bad = 1;
  }
  if (bad) {
    free_options(&cfg, port_file, key_file, args);
    return 2;
  }
  mf_log_init("mayfly-directory", level);
  signal(SIGPIPE, SIG_IGN);
  uint8_t key[MF_KEY_SIZE];
  char why[1024];
  if (mf_auth_init() != 0) {
    MF_ERROR("cannot start: libsodium cannot initialise (no randomness source?)");
    bad = 1;
  } else if (key_file != NULL) {
    int world_readable = 0;
    if (mf_auth_key_load(key_file, key, &world_readable, why, sizeof why) != 0) {
      MF_ERROR("cannot start: --cluster-key-file: %s", why);
      bad = 1;
    } else {
      if (world_readable) {
        MF_WARN("cluster key file %s is readable by its group or others: anyone who reads it "
                "can act as a memory server (chmod 600 %s)",
                key_file, key_file);
      }
      cfg.cluster_key = key;
      MF_INFO("cluster key from %s: memory servers must pass the cluster handshake, layouts "
              "carry capabilities valid %lld ms",
              key_file, (long long)cfg.capability_ttl_ms);
    }
  } else {
    MF_INFO("no --cluster-key-file: any peer may call the memory servers' methods and no "
            "capabilities are issued (a trusted network only)");
  }
  if (bad) {
    free_options(&cfg, port_file, key_file, args);
    return 1;
  }

  daemon_t dm = {0};
  dm.loop = uv_default_loop();
  dir_tenants_t *tenants = NULL;
  if (cfg.tenants_file != NULL) {
    if (dir_tenants_load(cfg.tenants_file, &tenants, why, sizeof why) != 0) {
      MF_ERROR("cannot start: --tenants: %s", why);
      free_options(&cfg, port_file, key_file, args);
      return 1;
    }
    MF_INFO("tenants: %u loaded from %s (SIGHUP reloads it)", tenants->list->len,
            cfg.tenants_file);
  }
  dir_store_t *store = NULL;
  ns_tree_t *tree = NULL;
  if (cfg.etcd != NULL) {
    MF_INFO("highly available: the log is in etcd (%s), cluster %s", cfg.etcd, cfg.cluster);
  } else if (cfg.data_dir == NULL) {
    MF_INFO("in memory: no --data-dir, so the tree, layouts and leases are lost when the "
            "directory stops");
  } else {
    dir_store_config_t sc = {.data_dir = cfg.data_dir,
                             .recover_truncate = cfg.recover_truncate,
                             .snapshot_records = cfg.snapshot_records,
                             .snapshot_bytes = cfg.snapshot_bytes};
    MF_INFO("durable: recovering from %s", cfg.data_dir);
    if (dir_store_open(dm.loop, &sc, cfg.lease_ms, cfg.grace_ms, &store, &tree, why,
                       sizeof why) != 0) {
      MF_ERROR("cannot start: %s", why);
      dir_tenants_free(tenants);
      free_options(&cfg, port_file, key_file, args);
      return 1;
    }
    dir_store_stats_t st;
    dir_store_stats(store, &st);
    MF_INFO("recovered %lld nodes (%lld namespaces, %u memory servers) from %s in %lld ms: "
            "%lld log records replayed, next record %lld; every lease restarts in full",
            (long long)st.recovered_nodes, (long long)tree->n_leaves, tree->alloc->servers->len,
            cfg.data_dir, (long long)st.recovery_ms, (long long)st.recovered_records,
            (long long)st.seq + 1);
  }
  dir_init(&dm.dir, dm.loop, &cfg, store, tree);
  dm.dir.tenants = tenants;
  mf_net_raise_nofile(cfg.max_connections, 64);
  int port = 0;
  int rc = dir_server_start(&dm.dir, cfg.host, (int)cfg.port, &dm.server, &port, why, sizeof why);
  if (rc != 0) {
    MF_ERROR("%s", why);
    dir_stop(&dm.dir);
    uv_run(dm.loop, UV_RUN_DEFAULT);
    dir_free(&dm.dir);
    free_options(&cfg, port_file, key_file, args);
    return 1;
  }
  MF_INFO("listening on %s:%d (lease %lld ms, grace %lld ms)", cfg.host, port,
          (long long)cfg.lease_ms, (long long)cfg.grace_ms);
  dm.dir.advertise = cfg.advertise != NULL
                         ? g_strdup(cfg.advertise)
                         : strchr(cfg.host, ':') != NULL ? g_strdup_printf("[%s]:%d", cfg.host, port)
                                                         : g_strdup_printf("%s:%d", cfg.host, port);
  if (cfg.etcd != NULL) {
    dir_ha_config_t hc = {.endpoints = cfg.etcd,
                          .cluster = cfg.cluster,
                          .advertise = dm.dir.advertise,
                          .leader_ttl_ms = cfg.leader_ttl_ms,
                          .etcd_timeout_ms = cfg.etcd_timeout_ms,
                          .inflight = cfg.etcd_inflight,
                          .snapshot_records = cfg.snapshot_records,
                          .snapshot_bytes = cfg.snapshot_bytes,
                          .argv = args,
                          .port = port};
    if (dir_ha_start(&dm.dir, &hc, why, sizeof why) != 0) {
      MF_ERROR("cannot start: --etcd: %s", why);
      return stop_early(&dm, &cfg, port_file, key_file, args);
    }
    dir_server_bind_ha(dm.server);
  }
  if (tenants == NULL && !is_loopback(cfg.host)) {
    MF_WARN("listening on %s without --tenants: anyone who reaches this address may read, "
            "change and remove every namespace",
            cfg.host);
  }
  if (tenants != NULL && cfg.cluster_key == NULL) {
    MF_WARN("--tenants without --cluster-key-file: the data plane is open, so anyone who "
            "reaches a memory server may read and change any block whatever its tenant");
  }
  if (port_file != NULL && write_port_file(port_file, port) != 0) {
    MF_ERROR("cannot write port file %s", port_file);
    return stop_early(&dm, &cfg, port_file, key_file, args);
  }
  uv_signal_init(dm.loop, &dm.sigint);
  uv_signal_init(dm.loop, &dm.sigterm);
  dm.sigint.data = dm.sigterm.data = &dm;
  uv_signal_start(&dm.sigint, on_signal, SIGINT);
  uv_signal_start(&dm.sigterm, on_signal, SIGTERM);
  uv_signal_init(dm.loop, &dm.sighup);
  dm.sighup.data = &dm;
  uv_signal_start(&dm.sighup, on_sighup, SIGHUP);

  uv_run(dm.loop, UV_RUN_DEFAULT);

  dir_free(&dm.dir);
  mf_auth_wipe(key, sizeof key);
  uv_loop_close(dm.loop);
  free_options(&cfg, port_file, key_file, args);
  MF_INFO("stopped");
  return 0;
}
