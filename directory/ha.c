/*
 * High availability on etcd (see ha.h): the election, the fenced log, the
 * standby's follower, snapshots in etcd, and the members' reports.
 */
#include "directory/ha.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/check.h"
#include "common/config.h"
#include "common/error.h"
#include "common/le.h"
#include "common/log.h"
#include "directory/etcd.h"
#include "directory/limits.h"
#include "directory/wal.h"
#include "namespaces/record.h"
#include "namespaces/snapshot.h"

/* A log value: magic, version, 3 bytes of zeros, u64 first seq, u32 count,
 * then count frames of u32 length + record (little-endian). */
#define LOG_MAGIC "MFLG"
#define LOG_VERSION 1
#define LOG_HEADER 20
/* Largest seq a log value may start at: far past any log, and no sum of a
 * seq and a count overflows below it. */
#define LOG_SEQ_MAX (INT64_C(1) << 62)
/* A batch is sealed (one key, one transaction) past this many bytes, well
 * under etcd's default request limit (1.5 MiB). */
#define LOG_VALUE_MAX (512 * 1024)
/* A snapshot chunk, one per transaction. */
#define SNAP_CHUNK (512 * 1024)
/* The snapshot pointer: magic, version, 3 zeros, u64 seq, u32 chunks,
 * u64 bytes, u32 CRC32C of the body. */
#define SNAP_MAGIC "MFSP"
#define SNAP_PTR_SIZE 32
/* Keys read per range request while loading or catching up. */
#define RANGE_PAGE 64
/* How often a directory reports its role and position (members/). */
#define MEMBER_REPORT_MS 1000

typedef enum {
  HA_LOADING,   /* reading the snapshot and the log */
  HA_STANDBY,   /* following; campaigns when no leader holds the key */
  HA_PROMOTING, /* won: reading the rest of the log */
  HA_LEADER,
  HA_DEPOSED,   /* lost the key: about to re-execute */
  HA_STOPPING
} ha_role_t;

/* As cluster() and the member reports name them: a loading directory is
 * not a hot standby yet. */
static const char *const role_names[] = {"loading", "standby", "standby",
                                         "leader",  "standby", "standby"};

/* A sealed run of records: one log key, one fenced transaction. */
typedef struct batch {
  dir_ha_t *ha;
  int64_t first;
  uint32_t count;
  GByteArray *value; /* header + frames */
  int sent, done;
} batch_t;

/* What a directory last reported of itself (members/). */
typedef struct member {
  char *address;
  char *role;
  int64_t applied, time_ms;
  int64_t txns, txn_records; /* a leader's log transactions and their records */
} member_t;

struct dir_ha {
  dir_t *d;
  dir_ha_config_t cfg;
  char *endpoints, *cluster, *advertise;
  char **argv;
  dir_etcd_t *etcd;
  char *prefix, *prefix_end;
  char *k_leader, *k_snapshot, *k_member, *p_log, *p_snap, *p_members;
  ha_role_t role;

  /* The lease: valid for sure until lease_until (monotonic ms): the send
   * time of the last keepalive etcd answered, plus the TTL it granted. */
  int64_t lease_id, lease_ttl_ms, lease_until;
  int keepalive_busy;
  int64_t keepalive_sent;
  uv_timer_t tick; /* keepalive, lease check, campaign, member report */
  int64_t last_report;

  /* Who leads: the leader key's value and creation revision (the term). */
  char *leader;
  int64_t leader_rev;
  int64_t term; /* ours while leading */
  int campaigning;

  /* The follower (standby): its tree, the records applied to it, log
   * values come in out of order (first seq -> batch value bytes). */
  ns_tree_t *follow;
  int64_t applied;
  GTree *pending;
  int64_t seen_seq; /* the newest record seen in the log */
  int64_t watch_rev;
  int64_t watch_heard; /* monotonic ms the watch last delivered anything */
  int64_t last_check;  /* of the leader key, by a range (tick) */
  int checking;
  dir_etcd_watch_t *watch;
  int64_t load_rev;  /* the revision a load reads at */
  int64_t snapshot_seq, snapshot_chunks;
  GByteArray *snap_body;
  int64_t snap_bytes;
  uint32_t snap_crc;
  int64_t snap_next; /* next chunk to read */
  char *range_from;  /* next key of a paged log range */
  uv_timer_t retry;  /* a failed step runs again after a pause */
  void (*retry_fn)(dir_ha_t *);

  /* The leader's log. */
  batch_t *open;
  GQueue batches; /* batch_t *: sealed, in seq order, sent or waiting */
  int64_t committed;
  uv_check_t check;
  void (*durable_cb)(void *, int64_t);
  void *durable_ud;
  int64_t txns, txn_records;
  int64_t since_records, since_bytes;

  /* A snapshot being written (leader). */
  int snap_running;
  GByteArray *snap_out;
  int64_t snap_out_seq, snap_out_chunk, snap_out_chunks;

  GHashTable *members; /* address -> member_t * */
  uv_timer_t stepdown; /* re-executes outside the call that found the key lost */
};

static void campaign(dir_ha_t *ha);
static void load_start(dir_ha_t *ha);
static void watch_start(dir_ha_t *ha, int64_t from);
static void step_down(dir_ha_t *ha, const char *why);
static void submit(dir_ha_t *ha);
static void observe(const ns_record_t *rec, void *ud);

static void check_cb(uv_check_t *h) {
  submit(h->data);
}

/* ---- little helpers --------------------------------------------------- */

static char *log_key(const dir_ha_t *ha, int64_t seq) {
  return g_strdup_printf("%s%016" PRIx64, ha->p_log, (uint64_t)seq);
}

static void member_free(gpointer p) {
  member_t *m = p;
  g_free(m->address);
  g_free(m->role);
  g_free(m);
}

static int64_t key_seq(const char *key, const char *prefix) {
  size_t n = strlen(prefix);
  if (strncmp(key, prefix, n) != 0 || strlen(key + n) != 16) return -1;
  char *end = NULL;
  guint64 v = g_ascii_strtoull(key + n, &end, 16);
  return end != NULL && *end == '\0' && v > 0 && v < (guint64)INT64_MAX ? (int64_t)v : -1;
}

static void retry_cb(uv_timer_t *t) {
  dir_ha_t *ha = t->data;
  void (*fn)(dir_ha_t *) = ha->retry_fn;
  ha->retry_fn = NULL;
  if (fn != NULL && ha->role != HA_STOPPING) fn(ha);
}

/* Runs fn after ms (a damaged snapshot: an operator may repair etcd). */
static void retry_in(dir_ha_t *ha, void (*fn)(dir_ha_t *), uint64_t ms) {
  ha->retry_fn = fn;
  uv_timer_start(&ha->retry, retry_cb, ms, 0);
}

/* Runs fn again in a moment (etcd did not answer, or a load raced a
 * compaction). */
static void retry_later(dir_ha_t *ha, void (*fn)(dir_ha_t *), const char *what,
                        const dir_etcd_result_t *r) {
  MF_WARN("etcd: %s failed (%s): trying again", what, r != NULL ? r->why : "");
  retry_in(ha, fn, 200);
}

/* ---- log values ------------------------------------------------------- */

static batch_t *batch_new(dir_ha_t *ha, int64_t first) {
  batch_t *b = g_new0(batch_t, 1);
  b->ha = ha;
  b->first = first;
  b->value = g_byte_array_sized_new(4096);
  uint8_t h[LOG_HEADER] = {0};
  memcpy(h, LOG_MAGIC, 4);
  h[4] = LOG_VERSION;
  g_byte_array_append(b->value, h, sizeof h);
  return b;
}

static void batch_free(batch_t *b) {
  if (b == NULL) return;
  g_byte_array_free(b->value, TRUE);
  g_free(b);
}

/* Fills the header's seq and count once the batch is sealed. */
static void batch_seal(batch_t *b) {
  mf_le_put64(b->value->data + 8, (uint64_t)b->first);
  mf_le_put32(b->value->data + 16, b->count);
}

/* Calls cb for each record of a log value; checks every length. Returns 0
 * with *first and *count, or MAYFLY_EPROTO with why. */
int dir_ha_log_value_scan(const uint8_t *p, size_t len, int64_t *first, uint32_t *count,
                          dir_ha_rec_cb cb, void *ud, char *why, size_t whylen) {
  if (len < LOG_HEADER || memcmp(p, LOG_MAGIC, 4) != 0 || p[4] != LOG_VERSION || p[5] != 0 ||
      p[6] != 0 || p[7] != 0) {
    g_snprintf(why, whylen, "a log value of %zu bytes without a version %d header", len,
               LOG_VERSION);
    return MAYFLY_EPROTO;
  }
  *first = (int64_t)mf_le_get64(p + 8);
  *count = mf_le_get32(p + 16);
  if (*first < 1 || *first > LOG_SEQ_MAX || *count == 0 || *count > len) {
    g_snprintf(why, whylen, "a log value with first seq %lld and %u records in %zu bytes",
               (long long)*first, *count, len);
    return MAYFLY_EPROTO;
  }
  size_t off = LOG_HEADER;
  for (uint32_t i = 0; i < *count; i++) {
    if (len - off < 4) {
      g_snprintf(why, whylen, "log value at seq %lld: record %u truncated", (long long)*first, i);
      return MAYFLY_EPROTO;
    }
    uint32_t n = mf_le_get32(p + off);
    off += 4;
    if (n == 0 || n > NS_REC_SIZE_MAX || n > len - off) {
      g_snprintf(why, whylen, "log value at seq %lld: record %u of %u bytes past the end",
                 (long long)*first, i, n);
      return MAYFLY_EPROTO;
    }
    if (cb != NULL) {
      int rc = cb(p + off, n, *first + i, ud);
      if (rc != 0) return rc;
    }
    off += n;
  }
  if (off != len) {
    g_snprintf(why, whylen, "log value at seq %lld: %zu bytes left over", (long long)*first,
               len - off);
    return MAYFLY_EPROTO;
  }
  return 0;
}

void dir_ha_log_value_build(GByteArray *out, int64_t first, const GByteArray *const *recs,
                            size_t n) {
  uint8_t h[LOG_HEADER] = {0};
  memcpy(h, LOG_MAGIC, 4);
  h[4] = LOG_VERSION;
  mf_le_put64(h + 8, (uint64_t)first);
  mf_le_put32(h + 16, (uint32_t)n);
  g_byte_array_append(out, h, sizeof h);
  for (size_t i = 0; i < n; i++) {
    uint8_t l[4];
    mf_le_put32(l, recs[i]->len);
    g_byte_array_append(out, l, 4);
    g_byte_array_append(out, recs[i]->data, recs[i]->len);
  }
}

/* ---- the follower ----------------------------------------------------- */

typedef struct {
  ns_tree_t *tree;
  int64_t applied;
  char why[512];
} replay_t;

static int replay_one(const uint8_t *data, uint32_t len, int64_t seq, void *ud) {
  replay_t *r = ud;
  if (seq <= r->applied) return 0; /* in the snapshot, or applied already */
  if (seq != r->applied + 1) {
    g_snprintf(r->why, sizeof r->why, "record %lld follows %lld", (long long)seq,
               (long long)r->applied);
    return MAYFLY_EPROTO;
  }
  ns_rec_buf_t b;
  ns_rec_buf_init(&b);
  char reason[256] = "";
  int rc = ns_rec_decode(data, len, &b, reason, sizeof reason);
  if (rc != 0) {
    g_snprintf(r->why, sizeof r->why, "record %lld does not decode (%s)", (long long)seq, reason);
  } else {
    rc = ns_tree_apply(r->tree, &b.rec, NULL, reason, sizeof reason);
    if (rc != 0) {
      g_snprintf(r->why, sizeof r->why, "record %lld does not apply (%s: %s)", (long long)seq,
                 mayfly_strerror(rc), reason);
      rc = MAYFLY_EPROTO;
    }
  }
  ns_rec_buf_clear(&b);
  if (rc == 0) r->applied = seq;
  return rc;
}

/* Applies the pending values that continue the follower's tree, in order;
 * drops those wholly applied. Returns 0, or MAYFLY_EPROTO for a value that
 * does not apply (a damaged log: the caller starts over from etcd). */
static int follow_apply(dir_ha_t *ha) {
  for (;;) {
    GTreeNode *n = g_tree_node_first(ha->pending);
    if (n == NULL) return 0;
    int64_t first = *(int64_t *)g_tree_node_key(n);
    GBytes *v = g_tree_node_value(n);
    if (first > ha->applied + 1) return 0; /* a gap: wait for the rest */
    gsize len;
    const uint8_t *p = g_bytes_get_data(v, &len);
    replay_t r = {.tree = ha->follow, .applied = ha->applied};
    int64_t f;
    uint32_t count;
    int rc = dir_ha_log_value_scan(p, len, &f, &count, replay_one, &r, r.why, sizeof r.why);
    ha->applied = r.applied;
    g_tree_remove(ha->pending, &first);
    if (rc != 0) {
      MF_ERROR("etcd: the log at seq %lld is damaged (%s)", (long long)first, r.why);
      return rc;
    }
  }
}

/* The key right after `key` in etcd's order, for the next page of a range
 * (no log key continues a name with a byte below 0x01). */
static char *key_after(const char *key) {
  return g_strconcat(key, "\x01", NULL);
}

static gint cmp_i64(gconstpointer a, gconstpointer b, gpointer ud) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

/* A log value seen (load, watch, catch-up): kept until it applies. */
static void follow_add(dir_ha_t *ha, const dir_etcd_kv_t *kv) {
  gsize len;
  const uint8_t *p = g_bytes_get_data(kv->value, &len);
  int64_t first;
  uint32_t count;
  char why[256];
  if (dir_ha_log_value_scan(p, len, &first, &count, NULL, NULL, why, sizeof why) != 0 ||
      first != key_seq(kv->key, ha->p_log)) {
    MF_ERROR("etcd: %s is not a log value of this build (%s): ignored", kv->key, why);
    return;
  }
  if (first + count - 1 > ha->seen_seq) ha->seen_seq = first + count - 1;
  if (first + count - 1 <= ha->applied) return;
  int64_t *k = g_new(int64_t, 1);
  *k = first;
  g_tree_replace(ha->pending, k, g_bytes_ref(kv->value));
}

/* ---- members ---------------------------------------------------------- */

static void member_seen(dir_ha_t *ha, const dir_etcd_kv_t *kv, int deleted) {
  const char *addr = kv->key + strlen(ha->p_members);
  if (deleted) {
    g_hash_table_remove(ha->members, addr);
    return;
  }
  gsize len;
  const char *p = g_bytes_get_data(kv->value, &len);
  JsonParser *jp = json_parser_new();
  if (len > 4096 || !json_parser_load_from_data(jp, p, (gssize)len, NULL) ||
      !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(jp))) {
    g_object_unref(jp);
    return;
  }
  JsonObject *o = json_node_get_object(json_parser_get_root(jp));
  member_t *m = g_new0(member_t, 1);
  m->address = g_strdup(addr);
  m->role = g_strdup(json_object_get_string_member_with_default(o, "role", "standby"));
  m->applied = json_object_get_int_member_with_default(o, "applied", 0);
  m->time_ms = json_object_get_int_member_with_default(o, "time_ms", 0);
  m->txns = json_object_get_int_member_with_default(o, "txns", 0);
  m->txn_records = json_object_get_int_member_with_default(o, "txn_records", 0);
  g_hash_table_replace(ha->members, m->address, m);
  g_object_unref(jp);
}

static void report_done(const dir_etcd_result_t *r, void *ud) {
  (void)r;
  (void)ud;
}

/* Puts members/<advertise> with this directory's role and position, bound
 * to its lease (it vanishes when the directory does). */
static void report(dir_ha_t *ha) {
  if (ha->lease_id == 0) return;
  char *v = g_strdup_printf("{\"role\": \"%s\", \"applied\": %lld, \"time_ms\": %lld, "
                            "\"txns\": %lld, \"txn_records\": %lld}",
                            role_names[ha->role],
                            (long long)(ha->role == HA_LEADER ? ha->committed : ha->applied),
                            (long long)mf_wall_ms(), (long long)ha->txns,
                            (long long)ha->txn_records);
  dir_etcd_put(ha->etcd, ha->k_member, v, strlen(v), ha->lease_id, report_done, ha);
  g_free(v);
  ha->last_report = mf_now_ms();
}

/* ---- the watch -------------------------------------------------------- */

/* Notes who leads from the leader key (NULL: none). */
static void set_leader(dir_ha_t *ha, const dir_etcd_kv_t *kv) {
  g_free(ha->leader);
  ha->leader = NULL;
  ha->leader_rev = 0;
  if (kv == NULL) return;
  gsize len;
  const char *p = g_bytes_get_data(kv->value, &len);
  ha->leader = len <= DIR_ADDRESS_MAX ? g_strndup(p, len) : NULL;
  ha->leader_rev = kv->create_revision;
}

static void leader_seen(dir_ha_t *ha, const dir_etcd_kv_t *kv, int deleted) {
  set_leader(ha, deleted ? NULL : kv);
  if (ha->role == HA_LEADER || ha->role == HA_PROMOTING) {
    if (deleted || kv->create_revision != ha->term) {
      step_down(ha, deleted ? "the leader key was deleted (the lease expired)"
                            : "another directory holds the leader key");
    }
    return;
  }
  if (deleted && ha->role == HA_STANDBY) campaign(ha);
}

static void watch_cb(const dir_etcd_event_t *ev, size_t n, int64_t revision, int rc,
                     const dir_etcd_result_t *why, void *ud) {
  dir_ha_t *ha = ud;
  if (rc != 0) {
    dir_etcd_watch_cancel(ha->watch);
    ha->watch = NULL;
    if (ha->role == HA_STOPPING || ha->role == HA_DEPOSED) return;
    if (why != NULL && why->compacted && ha->role != HA_LEADER && ha->role != HA_PROMOTING) {
      MF_WARN("etcd: the log this standby follows was compacted past revision %lld: loading the "
              "snapshot again",
              (long long)ha->watch_rev);
      load_start(ha);
      return;
    }
    /* A leader watches only for its key and the members: from now on. */
    int64_t from = why != NULL && why->compacted ? why->compact_revision : ha->watch_rev + 1;
    MF_WARN("etcd: the watch ended (%s): watching again from revision %lld",
            why != NULL ? why->why : "", (long long)from);
    watch_start(ha, from);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    const dir_etcd_kv_t *kv = &ev[i].kv;
    if (strcmp(kv->key, ha->k_leader) == 0) {
      leader_seen(ha, kv, ev[i].deleted);
    } else if (g_str_has_prefix(kv->key, ha->p_log)) {
      if (!ev[i].deleted && ha->role != HA_LEADER) follow_add(ha, kv);
      if (ev[i].deleted && ha->role != HA_LEADER) {
        int64_t seq = key_seq(kv->key, ha->p_log);
        g_tree_remove(ha->pending, &seq);
      }
    } else if (g_str_has_prefix(kv->key, ha->p_members)) {
      member_seen(ha, kv, ev[i].deleted);
    } else if (strcmp(kv->key, ha->k_snapshot) == 0 && !ev[i].deleted) {
      gsize len;
      const uint8_t *p = g_bytes_get_data(kv->value, &len);
      if (len == SNAP_PTR_SIZE && memcmp(p, SNAP_MAGIC, 4) == 0) {
        ha->snapshot_seq = (int64_t)mf_le_get64(p + 8);
      }
    }
    if (ha->role == HA_DEPOSED || ha->role == HA_STOPPING) return;
  }
  if (revision > ha->watch_rev) ha->watch_rev = revision;
  ha->watch_heard = mf_now_ms();
  if (ha->role == HA_STANDBY && follow_apply(ha) != 0) load_start(ha);
}

static void watch_start(dir_ha_t *ha, int64_t from) {
  if (ha->watch != NULL) dir_etcd_watch_cancel(ha->watch);
  ha->watch_rev = from - 1;
  ha->watch_heard = mf_now_ms();
  ha->watch = dir_etcd_watch(ha->etcd, ha->prefix, ha->prefix_end, from, watch_cb, ha);
}

/* ---- loading ---------------------------------------------------------- */

static void load_log_page(dir_ha_t *ha);

/* Takes one page of a range over the log into the pending values; returns
 * 1 when another page follows (range_from is then its first key). */
static int log_page_take(dir_ha_t *ha, const dir_etcd_result_t *r) {
  for (guint i = 0; i < r->kvs->len; i++) {
    const dir_etcd_kv_t *kv = g_ptr_array_index(r->kvs, i);
    if (key_seq(kv->key, ha->p_log) > 0) follow_add(ha, kv);
  }
  if (!r->more || r->kvs->len == 0) return 0;
  const dir_etcd_kv_t *last = g_ptr_array_index(r->kvs, r->kvs->len - 1);
  g_free(ha->range_from);
  ha->range_from = key_after(last->key);
  return 1;
}

/* Reads a page of the log from range_from, at revision rev (0: the newest). */
static void log_page_read(dir_ha_t *ha, int64_t rev, dir_etcd_cb cb) {
  char *end = dir_etcd_prefix_end(ha->p_log);
  dir_etcd_range(ha->etcd, ha->range_from, end, rev, RANGE_PAGE, cb, ha);
  g_free(end);
}

static void load_done(dir_ha_t *ha) {
  if (follow_apply(ha) != 0) {
    retry_in(ha, load_start, 1000);
    return;
  }
  ha->role = HA_STANDBY;
  MF_INFO("etcd: standby of cluster %s at record %lld (%lld namespaces); following from "
          "revision %lld",
          ha->cluster, (long long)ha->applied, (long long)ha->follow->n_leaves,
          (long long)ha->load_rev + 1);
  watch_start(ha, ha->load_rev + 1);
  report(ha);
  campaign(ha);
}

static void log_page_done(const dir_etcd_result_t *r, void *ud) {
  dir_ha_t *ha = ud;
  if (ha->role != HA_LOADING) return;
  if (r->rc != 0) {
    if (r->compacted) {
      load_start(ha);
      return;
    }
    retry_later(ha, load_log_page, "reading the log", r);
    return;
  }
  if (log_page_take(ha, r)) {
    load_log_page(ha);
    return;
  }
  load_done(ha);
}

static void load_log_page(dir_ha_t *ha) {
  log_page_read(ha, ha->load_rev, log_page_done);
}

static void load_log(dir_ha_t *ha) {
  g_free(ha->range_from);
  ha->range_from = log_key(ha, ha->applied + 1);
  load_log_page(ha);
}

static void snap_chunk_next(dir_ha_t *ha);

static void snap_chunk_done(const dir_etcd_result_t *r, void *ud) {
  dir_ha_t *ha = ud;
  if (ha->role != HA_LOADING) return;
  if (r->rc != 0 || r->kvs->len != 1) {
    if (r->rc == 0 || r->compacted) {
      MF_WARN("etcd: snapshot %lld changed while loading: starting over",
              (long long)ha->snapshot_seq);
      load_start(ha);
      return;
    }
    retry_later(ha, snap_chunk_next, "reading a snapshot chunk", r);
    return;
  }
  const dir_etcd_kv_t *kv = g_ptr_array_index(r->kvs, 0);
  gsize len;
  const uint8_t *p = g_bytes_get_data(kv->value, &len);
  if (len > (uint64_t)(ha->snap_bytes - ha->snap_body->len)) {
    MF_ERROR("etcd: snapshot %lld: chunk %lld runs past the size the pointer gives",
             (long long)ha->snapshot_seq, (long long)ha->snap_next);
    load_start(ha);
    return;
  }
  g_byte_array_append(ha->snap_body, p, (guint)len);
  ha->snap_next++;
  snap_chunk_next(ha);
}

static void snap_chunk_next(dir_ha_t *ha) {
  if (ha->snap_next < ha->snapshot_chunks) {
    char *key = g_strdup_printf("%s%016" PRIx64 "/%08" PRIx64, ha->p_snap,
                                (uint64_t)ha->snapshot_seq, (uint64_t)ha->snap_next);
    dir_etcd_range(ha->etcd, key, NULL, ha->load_rev, 1, snap_chunk_done, ha);
    g_free(key);
    return;
  }
  char why[512] = "";
  int rc = MAYFLY_EPROTO;
  ns_tree_t *t = NULL;
  ns_snap_meta_t meta = {0, 0};
  if ((int64_t)ha->snap_body->len != ha->snap_bytes ||
      dir_wal_crc32c(0, ha->snap_body->data, ha->snap_body->len) != ha->snap_crc) {
    g_snprintf(why, sizeof why, "its checksum or size does not match its pointer");
  } else {
    rc = ns_snap_decode(ha->snap_body->data, ha->snap_body->len, ha->d->cfg.lease_ms,
                        ha->d->cfg.grace_ms, mf_now_ms(), &t, &meta, why, sizeof why);
    if (rc == 0 && meta.seq != ha->snapshot_seq) {
      g_snprintf(why, sizeof why, "it covers record %lld, its pointer says %lld",
                 (long long)meta.seq, (long long)ha->snapshot_seq);
      ns_tree_free(t);
      t = NULL;
      rc = MAYFLY_EPROTO;
    }
  }
  g_byte_array_set_size(ha->snap_body, 0);
  if (rc != 0) {
    /* Nothing older is kept: the service cannot start from a damaged
     * snapshot without losing what it held. Say so, and keep trying (an
     * operator may repair etcd). */
    MF_ERROR("etcd: snapshot %lld of cluster %s is damaged: %s", (long long)ha->snapshot_seq,
             ha->cluster, why);
    retry_in(ha, load_start, 5000);
    return;
  }
  ns_tree_free(ha->follow);
  ha->follow = t;
  ha->applied = meta.seq;
  MF_INFO("etcd: snapshot %lld loaded (%lld bytes, %lld namespaces)", (long long)meta.seq,
          (long long)ha->snap_bytes, (long long)t->n_leaves);
  load_log(ha);
}

static void snapshot_ptr_done(const dir_etcd_result_t *r, void *ud) {
  dir_ha_t *ha = ud;
  if (ha->role != HA_LOADING) return;
  if (r->rc != 0) {
    retry_later(ha, load_start, "reading the snapshot pointer", r);
    return;
  }
  ha->load_rev = r->revision;
  ns_tree_free(ha->follow);
  ha->follow = ns_tree_new(ha->d->cfg.lease_ms, ha->d->cfg.grace_ms);
  ha->applied = 0;
  if (r->kvs->len == 0) {
    ha->snapshot_seq = 0;
    load_log(ha);
    return;
  }
  const dir_etcd_kv_t *kv = g_ptr_array_index(r->kvs, 0);
  gsize len;
  const uint8_t *p = g_bytes_get_data(kv->value, &len);
  if (len != SNAP_PTR_SIZE || memcmp(p, SNAP_MAGIC, 4) != 0 || p[4] != 1 || p[5] != 0 ||
      p[6] != 0 || p[7] != 0) {
    MF_ERROR("etcd: %s is not a snapshot pointer of this build: retrying in 5 s", ha->k_snapshot);
    retry_in(ha, load_start, 5000);
    return;
  }
  ha->snapshot_seq = (int64_t)mf_le_get64(p + 8);
  ha->snapshot_chunks = mf_le_get32(p + 16);
  ha->snap_bytes = (int64_t)mf_le_get64(p + 20);
  ha->snap_crc = mf_le_get32(p + 28);
  /* The body grows chunk by chunk as it arrives, never past the size the
   * pointer gives (checked per chunk). */
  if (ha->snap_bytes > ((int64_t)ha->snapshot_chunks) * SNAP_CHUNK ||
      ha->snapshot_chunks > (1 << 20)) {
    MF_ERROR("etcd: snapshot pointer %s: %lld bytes in %lld chunks is impossible",
             ha->k_snapshot, (long long)ha->snap_bytes, (long long)ha->snapshot_chunks);
    retry_in(ha, load_start, 5000);
    return;
  }
  ha->snap_next = 0;
  g_byte_array_set_size(ha->snap_body, 0);
  snap_chunk_next(ha);
}

/* The leader key as the load found it; then the snapshot pointer. */
static void leader_read_done(const dir_etcd_result_t *r, void *ud) {
  dir_ha_t *ha = ud;
  if (ha->role != HA_LOADING) return;
  if (r->rc != 0) {
    retry_later(ha, load_start, "reading the leader key", r);
    return;
  }
  set_leader(ha, r->kvs != NULL && r->kvs->len == 1 ? g_ptr_array_index(r->kvs, 0) : NULL);
  dir_etcd_range(ha->etcd, ha->k_snapshot, NULL, 0, 1, snapshot_ptr_done, ha);
}

/* (Re)builds the follower's tree from etcd: the snapshot, then the log
 * after it, all at one revision; then watches from the next. */
static void load_start(dir_ha_t *ha) {
  if (ha->role == HA_STOPPING || ha->role == HA_DEPOSED) return;
  ha->role = HA_LOADING;
  if (ha->watch != NULL) dir_etcd_watch_cancel(ha->watch);
  ha->watch = NULL;
  /* Pending values are dropped: the load reads them again. */
  g_tree_destroy(ha->pending);
  ha->pending = g_tree_new_full(cmp_i64, NULL, g_free, (GDestroyNotify)g_bytes_unref);
  /* Who leads first, so that calls meanwhile are sent there. */
  dir_etcd_range(ha->etcd, ha->k_leader, NULL, 0, 1, leader_read_done, ha);
}

/* ---- the election ----------------------------------------------------- */

static void promote_page(dir_ha_t *ha);

/* Deletes what follows a gap in the log (records whose replies never went
 * out: a batch before them was never committed), then serves. */
static void orphans_done(const dir_etcd_result_t *r, void *ud) {
  dir_ha_t *ha = ud;
  if (ha->role != HA_PROMOTING) return;
  if (r->rc != 0 || !r->succeeded) {
    step_down(ha, r->rc != 0 ? r->why : "the leader key changed while taking over");
    return;
  }
  dir_t *d = ha->d;
  ns_tree_t *t = ha->follow;
  ha->follow = NULL;
  dir_adopt_tree(d, t);
  ha->committed = ha->applied;
  ha->open = batch_new(ha, ha->applied + 1);
  ns_tree_set_observer(d->tree, observe, ha);
  ha->role = HA_LEADER;
  uv_check_start(&ha->check, check_cb);
  MF_INFO("etcd: leading cluster %s (term %lld) at record %lld: %lld namespaces, %u memory "
          "servers (they register again); every lease restarts in full",
          ha->cluster, (long long)ha->term, (long long)ha->applied, (long long)t->n_leaves,
          t->alloc->servers->len);
  report(ha);
}

static void promote_finish(dir_ha_t *ha) {
  g_tree_destroy(ha->pending);
  ha->pending = g_tree_new_full(cmp_i64, NULL, g_free, (GDestroyNotify)g_bytes_unref);
  dir_etcd_txn_t *t = dir_etcd_txn_new();
  dir_etcd_txn_cmp_create(t, ha->k_leader, ha->term);
  char *from = log_key(ha, ha->applied + 1), *end = dir_etcd_prefix_end(ha->p_log);
  dir_etcd_txn_delete(t, 0, from, end);
  g_free(from);
  g_free(end);
  dir_etcd_txn(ha->etcd, t, orphans_done, ha);
}

static void promote_page_done(const dir_etcd_result_t *r, void *ud) {
  dir_ha_t *ha = ud;
  if (ha->role != HA_PROMOTING) return;
  if (r->rc != 0) {
    retry_later(ha, promote_page, "reading the rest of the log", r);
    return;
  }
  int more = log_page_take(ha, r);
  if (follow_apply(ha) != 0) {
    /* Leading from a log that does not apply would serve a wrong tree. */
    step_down(ha, "the log does not apply");
    return;
  }
  if (more) {
    promote_page(ha);
    return;
  }
  promote_finish(ha);
}

static void promote_page(dir_ha_t *ha) {
  log_page_read(ha, 0, promote_page_done);
}

static void campaign_done(const dir_etcd_result_t *r, void *ud) {
  dir_ha_t *ha = ud;
  ha->campaigning = 0;
  if (ha->role != HA_STANDBY) return;
  if (r->rc != 0) {
    MF_WARN("etcd: campaign failed (%s)", r->why);
    return; /* the tick tries again */
  }
  if (!r->succeeded) {
    if (r->kvs != NULL && r->kvs->len > 0) {
      const dir_etcd_kv_t *kv = g_ptr_array_index(r->kvs, 0);
      leader_seen(ha, kv, 0);
    }
    return;
  }
  ha->term = r->revision;
  ha->leader_rev = r->revision;
  g_free(ha->leader);
  ha->leader = g_strdup(ha->advertise);
  ha->role = HA_PROMOTING;
  MF_INFO("etcd: won the election of cluster %s (term %lld): catching up from record %lld",
          ha->cluster, (long long)ha->term, (long long)ha->applied + 1);
  g_free(ha->range_from);
  ha->range_from = log_key(ha, ha->applied + 1);
  promote_page(ha);
}

/* Tries to create the leader key with this directory's lease. */
static void campaign(dir_ha_t *ha) {
  if (ha->role != HA_STANDBY || ha->campaigning || ha->lease_id == 0) return;
  if (mf_now_ms() >= ha->lease_until) return; /* our lease may be gone: renew first */
  ha->campaigning = 1;
  dir_etcd_txn_t *t = dir_etcd_txn_new();
  dir_etcd_txn_cmp_create(t, ha->k_leader, 0);
  dir_etcd_txn_put(t, 0, ha->k_leader, ha->advertise, strlen(ha->advertise), ha->lease_id);
  dir_etcd_txn_get(t, 1, ha->k_leader);
  dir_etcd_txn(ha->etcd, t, campaign_done, ha);
}

/* ---- stepping down ---------------------------------------------------- */

/* Re-executes this program with the same arguments (and the bound port),
 * so that it starts over as a standby with a tree rebuilt from etcd. Every
 * descriptor but the standard three is closed on exec. */
static void reexec(uv_timer_t *t) {
  dir_ha_t *ha = t->data;
  DIR *dir = opendir("/proc/self/fd");
  if (dir != NULL) {
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
      int fd = atoi(e->d_name);
      if (fd > 2 && fd != dirfd(dir)) fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    closedir(dir);
  }
  GPtrArray *av = g_ptr_array_new();
  for (char **a = ha->argv; *a != NULL; a++) g_ptr_array_add(av, *a);
  char port[32];
  g_snprintf(port, sizeof port, "--port=%d", ha->cfg.port);
  g_ptr_array_add(av, port);
  g_ptr_array_add(av, NULL);
  MF_WARN("etcd: re-executing as a standby of cluster %s", ha->cluster);
  execv("/proc/self/exe", (char **)av->pdata);
  MF_ERROR("cannot re-execute (%s): exiting; a supervisor restarts it", g_strerror(errno));
  _exit(1);
}

static void step_down(dir_ha_t *ha, const char *why) {
  if (ha->role == HA_DEPOSED || ha->role == HA_STOPPING) return;
  int was_leading = ha->role == HA_LEADER;
  ha->role = HA_DEPOSED;
  MF_WARN("etcd: %s: stepping down%s", why,
          was_leading ? "; replies not committed yet are dropped unsent" : "");
  uv_timer_start(&ha->stepdown, reexec, 0, 0);
}

/* ---- the lease -------------------------------------------------------- */

static void keepalive_done(const dir_etcd_result_t *r, void *ud) {
  dir_ha_t *ha = ud;
  ha->keepalive_busy = 0;
  if (ha->role == HA_STOPPING || ha->role == HA_DEPOSED) return;
  if (r->rc != 0) {
    MF_WARN("etcd: lease keepalive failed (%s)", r->why);
    return;
  }
  if (r->ttl <= 0) {
    if (ha->role == HA_LEADER || ha->role == HA_PROMOTING) {
      step_down(ha, "the lease expired");
      return;
    }
    /* A standby only needs a new lease. */
    MF_WARN("etcd: lease %llx expired: granting a new one", (unsigned long long)ha->lease_id);
    ha->lease_id = 0;
    return;
  }
  ha->lease_until = ha->keepalive_sent + r->ttl * 1000;
}

static void grant_done(const dir_etcd_result_t *r, void *ud) {
  dir_ha_t *ha = ud;
  ha->keepalive_busy = 0;
  if (ha->role == HA_STOPPING || ha->role == HA_DEPOSED) return;
  if (r->rc != 0 || r->lease_id == 0 || r->ttl <= 0) {
    MF_WARN("etcd: cannot grant a lease (%s)", r->rc != 0 ? r->why : "no lease in the answer");
    return;
  }
  ha->lease_id = r->lease_id;
  ha->lease_ttl_ms = r->ttl * 1000;
  ha->lease_until = ha->keepalive_sent + ha->lease_ttl_ms;
  report(ha);
  campaign(ha);
}

static void check_done(const dir_etcd_result_t *r, void *ud) {
  dir_ha_t *ha = ud;
  ha->checking = 0;
  if (ha->role != HA_STANDBY || r->rc != 0) return;
  const dir_etcd_kv_t *kv = r->kvs != NULL && r->kvs->len == 1 ? g_ptr_array_index(r->kvs, 0)
                                                                 : NULL;
  set_leader(ha, kv);
  /* Every directory reports itself each second, so a watch that delivered
   * nothing for a lease while etcd moved on is stuck (its member stopped
   * without closing the stream): watch again, through another member. */
  if (r->revision > ha->watch_rev &&
      mf_now_ms() - ha->watch_heard > ha->cfg.leader_ttl_ms + 2 * MEMBER_REPORT_MS) {
    MF_WARN("etcd: the watch delivered nothing for %lld ms while etcd is at revision %lld: "
            "watching again from %lld",
            (long long)(mf_now_ms() - ha->watch_heard), (long long)r->revision,
            (long long)ha->watch_rev + 1);
    watch_start(ha, ha->watch_rev + 1);
  }
  if (kv == NULL) campaign(ha);
}

/* A standby looks at the leader key itself every half lease too, so that it
 * campaigns even when its watch missed the key's deletion. */
static void check_leader(dir_ha_t *ha) {
  int64_t now = mf_now_ms();
  if (ha->checking || now - ha->last_check < ha->cfg.leader_ttl_ms / 2) return;
  ha->checking = 1;
  ha->last_check = now;
  dir_etcd_range(ha->etcd, ha->k_leader, NULL, 0, 1, check_done, ha);
}

static void tick(uv_timer_t *t) {
  dir_ha_t *ha = t->data;
  if (ha->role == HA_STOPPING || ha->role == HA_DEPOSED) return;
  int64_t now = mf_now_ms();
  if ((ha->role == HA_LEADER || ha->role == HA_PROMOTING) && now >= ha->lease_until) {
    step_down(ha, "the lease may have expired (etcd did not confirm it in time)");
    return;
  }
  if (!ha->keepalive_busy) {
    ha->keepalive_busy = 1;
    ha->keepalive_sent = now;
    if (ha->lease_id == 0) {
      dir_etcd_lease_grant(ha->etcd, (ha->cfg.leader_ttl_ms + 999) / 1000, grant_done, ha);
    } else if (now - (ha->lease_until - ha->lease_ttl_ms) >= ha->lease_ttl_ms / 3) {
      dir_etcd_lease_keepalive(ha->etcd, ha->lease_id, keepalive_done, ha);
    } else {
      ha->keepalive_busy = 0;
    }
  }
  if (ha->role == HA_STANDBY && ha->leader == NULL) campaign(ha);
  if (ha->role == HA_STANDBY) check_leader(ha);
  if (now - ha->last_report >= MEMBER_REPORT_MS) report(ha);
}

/* ---- the leader's log ------------------------------------------------- */

static void maybe_snapshot(dir_ha_t *ha);
static void snap_final(dir_ha_t *ha);

/* Advances the committed prefix over the batches done, in order. */
static void advance(dir_ha_t *ha) {
  int64_t before = ha->committed;
  batch_t *b;
  while ((b = g_queue_peek_head(&ha->batches)) != NULL && b->done) {
    g_queue_pop_head(&ha->batches);
    ha->committed = b->first + b->count - 1;
    batch_free(b);
  }
  if (ha->committed > before && ha->durable_cb != NULL) {
    ha->durable_cb(ha->durable_ud, ha->committed);
  }
  if (ha->snap_running && ha->snap_out_chunk == ha->snap_out_chunks &&
      ha->committed >= ha->snap_out_seq) {
    snap_final(ha);
  }
}

static void txn_done(const dir_etcd_result_t *r, void *ud) {
  batch_t *b = ud;
  dir_ha_t *ha = b->ha;
  if (ha->role != HA_LEADER) return; /* stepping down: nothing more is answered */
  if (r->rc != 0) {
    /* Whether it committed is unknown, and every later one waits on it. */
    step_down(ha, r->why);
    return;
  }
  if (!r->succeeded) {
    step_down(ha, "a log transaction was refused: another directory leads");
    return;
  }
  b->done = 1;
  ha->txns++;
  ha->txn_records += b->count;
  ha->since_records += b->count;
  ha->since_bytes += (int64_t)b->value->len;
  advance(ha);
  submit(ha);
  maybe_snapshot(ha);
}

/* Sends log transactions while fewer than --etcd-inflight are in flight:
 * first the batches sealed because they grew past LOG_VALUE_MAX, then the
 * open one. Records wait in the open batch while every slot is taken, so
 * the records of all the loop iterations a transaction's round trip spans
 * go out together (group commit); the check handle calls this at the end of
 * every iteration and each commit calls it again. */
static void submit(dir_ha_t *ha) {
  if (ha->role != HA_LEADER) return;
  int inflight = 0;
  for (GList *l = ha->batches.head; l != NULL; l = l->next) {
    batch_t *b = l->data;
    if (b->sent && !b->done) inflight++;
  }
  for (;;) {
    if (inflight >= ha->cfg.inflight) return;
    batch_t *b = NULL;
    for (GList *l = ha->batches.head; l != NULL && b == NULL; l = l->next) {
      if (!((batch_t *)l->data)->sent) b = l->data;
    }
    if (b == NULL) {
      if (ha->open->count == 0) return;
      b = ha->open;
      batch_seal(b);
      g_queue_push_tail(&ha->batches, b);
      ha->open = batch_new(ha, ha->applied + 1);
    }
    dir_etcd_txn_t *t = dir_etcd_txn_new();
    dir_etcd_txn_cmp_create(t, ha->k_leader, ha->term);
    char *key = log_key(ha, b->first);
    dir_etcd_txn_put(t, 0, key, b->value->data, b->value->len, 0);
    g_free(key);
    b->sent = 1;
    inflight++;
    dir_etcd_txn(ha->etcd, t, txn_done, b);
  }
}

/* The tree's observer while leading: every applied record but renewals
 * joins the open batch. */
static void observe(const ns_record_t *rec, void *ud) {
  dir_ha_t *ha = ud;
  if (rec->type == NS_REC_RENEW) return; /* leases are soft state */
  batch_t *b = ha->open;
  guint at = b->value->len;
  uint8_t len[4] = {0};
  g_byte_array_append(b->value, len, 4);
  int rc = ns_rec_encode(rec, b->value);
  MF_CHECK(rc == 0); /* the tree's limits keep every record within the codec's */
  mf_le_put32(b->value->data + at, b->value->len - at - 4);
  b->count++;
  ha->applied++;
  if (b->value->len >= LOG_VALUE_MAX) {
    batch_seal(b);
    g_queue_push_tail(&ha->batches, b);
    ha->open = batch_new(ha, ha->applied + 1);
  }
}

/* ---- snapshots (leader) ----------------------------------------------- */

static void snap_abort(dir_ha_t *ha, const char *why) {
  MF_WARN("etcd: snapshot at record %lld not written (%s); the log is kept whole",
          (long long)ha->snap_out_seq, why);
  ha->snap_running = 0;
  g_byte_array_free(ha->snap_out, TRUE);
  ha->snap_out = NULL;
}

static void compact_done(const dir_etcd_result_t *r, void *ud) {
  if (r->rc != 0) MF_WARN("etcd: compaction failed (%s)", r->why);
}

static void snap_final_done(const dir_etcd_result_t *r, void *ud) {
  dir_ha_t *ha = ud;
  if (ha->role != HA_LEADER) return;
  if (r->rc != 0 || !r->succeeded) {
    snap_abort(ha, r->rc != 0 ? r->why : "another directory leads");
    if (r->rc == 0) step_down(ha, "a snapshot transaction was refused: another directory leads");
    return;
  }
  MF_INFO("etcd: snapshot at record %lld: %u bytes in %lld chunks; the log before it deleted, "
          "history compacted at revision %lld",
          (long long)ha->snap_out_seq, ha->snap_out->len, (long long)ha->snap_out_chunks,
          (long long)r->revision);
  ha->snapshot_seq = ha->snap_out_seq;
  ha->snap_running = 0;
  g_byte_array_free(ha->snap_out, TRUE);
  ha->snap_out = NULL;
  dir_etcd_compact(ha->etcd, r->revision, compact_done, ha);
}

/* Points `snapshot` at the new one and deletes the log and the chunks it
 * makes useless, in one fenced transaction (once the log up to it is
 * committed, so no batch of it can land after the delete). */
static void snap_final(dir_ha_t *ha) {
  uint8_t ptr[SNAP_PTR_SIZE] = {0};
  memcpy(ptr, SNAP_MAGIC, 4);
  ptr[4] = 1;
  mf_le_put64(ptr + 8, (uint64_t)ha->snap_out_seq);
  mf_le_put32(ptr + 16, (uint32_t)ha->snap_out_chunks);
  mf_le_put64(ptr + 20, ha->snap_out->len);
  mf_le_put32(ptr + 28, dir_wal_crc32c(0, ha->snap_out->data, ha->snap_out->len));
  ha->snap_out_chunk++; /* past the chunks: the final step is under way */
  dir_etcd_txn_t *t = dir_etcd_txn_new();
  dir_etcd_txn_cmp_create(t, ha->k_leader, ha->term);
  dir_etcd_txn_put(t, 0, ha->k_snapshot, ptr, sizeof ptr, 0);
  char *end = log_key(ha, ha->snap_out_seq + 1);
  dir_etcd_txn_delete(t, 0, ha->p_log, end);
  g_free(end);
  /* Older snapshots: every chunk under snap/ below this one's seq. */
  char *snap_end = g_strdup_printf("%s%016" PRIx64, ha->p_snap, (uint64_t)ha->snap_out_seq);
  dir_etcd_txn_delete(t, 0, ha->p_snap, snap_end);
  g_free(snap_end);
  dir_etcd_txn(ha->etcd, t, snap_final_done, ha);
}

static void snap_chunk_put(dir_ha_t *ha);

static void snap_chunk_put_done(const dir_etcd_result_t *r, void *ud) {
  dir_ha_t *ha = ud;
  if (ha->role != HA_LEADER) return;
  if (r->rc != 0 || !r->succeeded) {
    snap_abort(ha, r->rc != 0 ? r->why : "another directory leads");
    if (r->rc == 0) step_down(ha, "a snapshot transaction was refused: another directory leads");
    return;
  }
  ha->snap_out_chunk++;
  snap_chunk_put(ha);
}

static void snap_chunk_put(dir_ha_t *ha) {
  if (ha->snap_out_chunk == ha->snap_out_chunks) {
    if (ha->committed >= ha->snap_out_seq) snap_final(ha); /* else advance() does it */
    return;
  }
  int64_t off = ha->snap_out_chunk * SNAP_CHUNK;
  int64_t n = MIN((int64_t)SNAP_CHUNK, (int64_t)ha->snap_out->len - off);
  char *key = g_strdup_printf("%s%016" PRIx64 "/%08" PRIx64, ha->p_snap,
                              (uint64_t)ha->snap_out_seq, (uint64_t)ha->snap_out_chunk);
  dir_etcd_txn_t *t = dir_etcd_txn_new();
  dir_etcd_txn_cmp_create(t, ha->k_leader, ha->term);
  dir_etcd_txn_put(t, 0, key, ha->snap_out->data + off, (size_t)n, 0);
  g_free(key);
  dir_etcd_txn(ha->etcd, t, snap_chunk_put_done, ha);
}

/* After --snapshot-records records or --snapshot-bytes bytes of log since
 * the last snapshot, encodes the tree as of the newest applied record and
 * writes it to etcd in chunks. */
static void maybe_snapshot(dir_ha_t *ha) {
  if (ha->snap_running || ha->role != HA_LEADER) return;
  if (ha->since_records < ha->cfg.snapshot_records &&
      (uint64_t)ha->since_bytes < ha->cfg.snapshot_bytes) {
    return;
  }
  /* The snapshot covers every record applied so far: seal them, so the
   * log keys split there. */
  if (ha->open->count > 0) {
    batch_seal(ha->open);
    g_queue_push_tail(&ha->batches, ha->open);
    ha->open = batch_new(ha, ha->applied + 1);
  }
  ha->since_records = ha->since_bytes = 0;
  ha->snap_out = g_byte_array_new();
  ns_snap_meta_t meta = {.seq = ha->applied, .wall_ms = mf_wall_ms()};
  int64_t t0 = g_get_monotonic_time();
  int rc = ns_snap_encode(ha->d->tree, &meta, ha->snap_out);
  if (rc != 0) {
    ha->snap_out_seq = ha->applied;
    snap_abort(ha, mayfly_strerror(rc));
    return;
  }
  MF_DEBUG("etcd: snapshot at record %lld encoded in %lld us", (long long)ha->applied,
           (long long)(g_get_monotonic_time() - t0));
  ha->snap_running = 1;
  ha->snap_out_seq = ha->applied;
  ha->snap_out_chunk = 0;
  ha->snap_out_chunks = ((int64_t)ha->snap_out->len + SNAP_CHUNK - 1) / SNAP_CHUNK;
  if (ha->snap_out_chunks == 0) ha->snap_out_chunks = 1;
  submit(ha);
  snap_chunk_put(ha);
}

/* ---- the interface ---------------------------------------------------- */

int dir_ha_start(dir_t *d, const dir_ha_config_t *cfg, char *why, size_t whylen) {
  dir_ha_t *ha = g_new0(dir_ha_t, 1);
  ha->d = d;
  ha->cfg = *cfg;
  ha->endpoints = g_strdup(cfg->endpoints);
  ha->cluster = g_strdup(cfg->cluster);
  ha->advertise = g_strdup(cfg->advertise);
  ha->argv = g_strdupv(cfg->argv);
  ha->cfg.endpoints = ha->endpoints;
  ha->cfg.cluster = ha->cluster;
  ha->cfg.advertise = ha->advertise;
  if (ha->cfg.inflight < 1) ha->cfg.inflight = 1;
  if (ha->cfg.snapshot_records <= 0) ha->cfg.snapshot_records = INT64_MAX;
  if (ha->cfg.snapshot_bytes == 0) ha->cfg.snapshot_bytes = UINT64_MAX;
  int rc = dir_etcd_new(d->loop, cfg->endpoints, cfg->etcd_timeout_ms, &ha->etcd, why, whylen);
  if (rc != 0) {
    g_free(ha->endpoints);
    g_free(ha->cluster);
    g_free(ha->advertise);
    g_strfreev(ha->argv);
    g_free(ha);
    return rc;
  }
  ha->prefix = g_strdup_printf("/mayfly/%s/", cfg->cluster);
  ha->prefix_end = dir_etcd_prefix_end(ha->prefix);
  ha->k_leader = g_strconcat(ha->prefix, "leader", NULL);
  ha->k_snapshot = g_strconcat(ha->prefix, "snapshot", NULL);
  ha->p_log = g_strconcat(ha->prefix, "log/", NULL);
  ha->p_snap = g_strconcat(ha->prefix, "snap/", NULL);
  ha->p_members = g_strconcat(ha->prefix, "members/", NULL);
  ha->k_member = g_strconcat(ha->p_members, cfg->advertise, NULL);
  ha->pending = g_tree_new_full(cmp_i64, NULL, g_free, (GDestroyNotify)g_bytes_unref);
  ha->snap_body = g_byte_array_new();
  ha->members = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, member_free);
  g_queue_init(&ha->batches);
  ha->role = HA_LOADING;
  uv_timer_init(d->loop, &ha->tick);
  ha->tick.data = ha;
  uv_timer_init(d->loop, &ha->retry);
  ha->retry.data = ha;
  uv_timer_init(d->loop, &ha->stepdown);
  ha->stepdown.data = ha;
  uv_check_init(d->loop, &ha->check);
  ha->check.data = ha;
  /* The tick keeps the lease: often enough that a keepalive goes out well
   * within a third of the TTL. */
  uint64_t every = (uint64_t)MAX(50, cfg->leader_ttl_ms / 10);
  uv_timer_start(&ha->tick, tick, 0, every);
  d->ha = ha;
  MF_INFO("etcd: cluster %s on %s as %s (leader TTL %lld ms): loading", ha->cluster,
          ha->endpoints, ha->advertise, (long long)cfg->leader_ttl_ms);
  load_start(ha);
  return 0;
}

int dir_ha_serving(dir_ha_t *ha) {
  if (ha->role != HA_LEADER) return 0;
  if (mf_now_ms() >= ha->lease_until) {
    /* Stopped or cut off past the lease: another directory may lead. */
    step_down(ha, "the lease may have expired (etcd did not confirm it in time)");
    return 0;
  }
  return 1;
}

const char *dir_ha_leader(const dir_ha_t *ha) {
  if (ha->role == HA_LEADER) return ha->advertise;
  if (ha->leader != NULL && strcmp(ha->leader, ha->advertise) == 0) return NULL;
  return ha->leader;
}

int64_t dir_ha_unsynced(const dir_ha_t *ha) {
  return ha->role == HA_LEADER && ha->applied > ha->committed ? ha->applied : 0;
}

void dir_ha_set_durable_cb(dir_ha_t *ha, void (*cb)(void *ud, int64_t seq), void *ud) {
  ha->durable_cb = cb;
  ha->durable_ud = ud;
}

void dir_ha_cluster(dir_ha_t *ha, MayflyClusterInfo *o) {
  g_free(o->name);
  o->name = g_strdup(ha->cluster);
  g_free(o->etcd);
  o->etcd = g_strdup(ha->endpoints);
  g_free(o->leader);
  const char *leader = ha->role == HA_LEADER ? ha->advertise : ha->leader;
  o->leader = g_strdup(leader != NULL ? leader : "");
  o->term = ha->role == HA_LEADER ? ha->term : ha->leader_rev;
  o->committed_seq = ha->role == HA_LEADER ? ha->committed : MAX(ha->seen_seq, ha->applied);
  o->snapshot_seq = ha->snapshot_seq;
  o->txns = ha->txns;
  o->txn_records = ha->txn_records;
  /* This directory as it is now; the others as they last reported. */
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, ha->members);
  GPtrArray *list = g_ptr_array_new();
  while (g_hash_table_iter_next(&it, NULL, &v)) g_ptr_array_add(list, v);
  member_t self = {.address = ha->advertise,
                   .role = (char *)role_names[ha->role],
                   .applied = ha->role == HA_LEADER ? ha->committed : ha->applied,
                   .time_ms = mf_wall_ms()};
  int have_self = 0;
  for (guint i = 0; i < list->len; i++) {
    member_t *m = g_ptr_array_index(list, i);
    if (strcmp(m->address, ha->advertise) == 0) {
      g_ptr_array_index(list, i) = &self;
      have_self = 1;
    }
  }
  if (!have_self) g_ptr_array_add(list, &self);
  for (guint i = 0; i < list->len; i++) {
    const member_t *m = g_ptr_array_index(list, i);
    MayflyDirectoryMember *dm = g_object_new(MAYFLY_TYPE_DIRECTORY_MEMBER, NULL);
    g_free(dm->address);
    dm->address = g_strdup(m->address);
    g_free(dm->role);
    /* A report says "leader" only while that directory holds the key. */
    int leads = leader != NULL && strcmp(m->address, leader) == 0;
    dm->role = g_strdup(leads                               ? "leader"
                        : strcmp(m->role, "leader") == 0    ? "standby"
                                                            : m->role);
    /* A leader has applied everything committed, whatever its last report
     * (a second old at most) says. */
    dm->applied_seq = leads ? MAX(m->applied, o->committed_seq) : m->applied;
    dm->updated_ms = m->time_ms;
    if (leads && m != &self) {
      /* The log counters are the leader's, as it last reported them. */
      o->txns = m->txns;
      o->txn_records = m->txn_records;
    }
    g_ptr_array_add(o->members, dm);
  }
  g_ptr_array_free(list, TRUE);
}

static void revoke_done(const dir_etcd_result_t *r, void *ud) {
  dir_ha_t *ha = ud;
  if (r->rc != 0) MF_WARN("etcd: cannot revoke the lease (%s): it expires on its own", r->why);
  dir_etcd_free(ha->etcd);
  ha->etcd = NULL;
}

void dir_ha_stop(dir_ha_t *ha) {
  if (ha == NULL || ha->role == HA_STOPPING) return;
  int was_leading = ha->role == HA_LEADER;
  ha->role = HA_STOPPING;
  if (ha->watch != NULL) dir_etcd_watch_cancel(ha->watch);
  ha->watch = NULL;
  uv_timer_stop(&ha->tick);
  uv_timer_stop(&ha->retry);
  uv_timer_stop(&ha->stepdown);
  uv_check_stop(&ha->check);
  uv_close((uv_handle_t *)&ha->tick, NULL);
  uv_close((uv_handle_t *)&ha->retry, NULL);
  uv_close((uv_handle_t *)&ha->stepdown, NULL);
  uv_close((uv_handle_t *)&ha->check, NULL);
  /* Revoking the lease deletes the leader key at once, so a standby takes
   * over without waiting for the TTL. Records not committed yet were never
   * answered. */
  if (ha->lease_id != 0) {
    if (was_leading) MF_INFO("etcd: stepping down (stopping): revoking the lease");
    dir_etcd_lease_revoke(ha->etcd, ha->lease_id, revoke_done, ha);
  } else {
    dir_etcd_free(ha->etcd);
    ha->etcd = NULL;
  }
}

void dir_ha_free(dir_ha_t *ha) {
  if (ha == NULL) return;
  dir_etcd_free(ha->etcd);
  if (ha->d->tree != NULL) ns_tree_set_observer(ha->d->tree, NULL, NULL);
  ns_tree_free(ha->follow);
  g_tree_destroy(ha->pending);
  g_byte_array_free(ha->snap_body, TRUE);
  if (ha->snap_out != NULL) g_byte_array_free(ha->snap_out, TRUE);
  batch_free(ha->open);
  batch_t *b;
  while ((b = g_queue_pop_head(&ha->batches)) != NULL) batch_free(b);
  g_hash_table_destroy(ha->members);
  g_free(ha->leader);
  g_free(ha->range_from);
  g_free(ha->prefix);
  g_free(ha->prefix_end);
  g_free(ha->k_leader);
  g_free(ha->k_snapshot);
  g_free(ha->k_member);
  g_free(ha->p_log);
  g_free(ha->p_snap);
  g_free(ha->p_members);
  g_free(ha->endpoints);
  g_free(ha->cluster);
  g_free(ha->advertise);
  g_strfreev(ha->argv);
  g_free(ha);
}
