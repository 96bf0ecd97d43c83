/*
 * libmayfly's control-plane API (see mayfly.h): each call converts its
 * arguments to the generated Thrift types, makes one call over the client's
 * control connection, and converts the reply into plain C structs owned by
 * the caller. GObject never crosses the public header.
 */
#include <string.h>

#include "client/internal.h"

#define DEFAULT_DIRECTORY "127.0.0.1:9090"

const char *mayfly_last_error(void) {
  return mf_last_error();
}

int mayfly_connect(const char *directory, const mayfly_options_t *opts, mayfly_client_t **out) {
  if (out == NULL) return MAYFLY_EINVAL;
  if (directory == NULL) directory = g_getenv("MAYFLY_DIRECTORY");
  if (directory == NULL || directory[0] == '\0') directory = DEFAULT_DIRECTORY;
  int timeout = opts && opts->timeout_ms > 0 ? opts->timeout_ms : 5000;
  int ctimeout = opts && opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 2000;
  const char *token = opts != NULL && opts->token != NULL ? opts->token : g_getenv("MAYFLY_TOKEN");
  mayfly_client_t *c = g_new0(mayfly_client_t, 1);
  int rc = mf_ctl_open(directory, timeout, ctimeout, &c->ctl);
  if (rc != 0) {
    g_free(c);
    return rc;
  }
  /* The login happens at the first call, on this connection and on every
   * one the client opens later (a reconnect, a listener's). */
  c->token = token != NULL && token[0] != '\0' ? g_strdup(token) : NULL;
  mf_ctl_set_auth(c->ctl, c->token, NULL);
  c->timeout_ms = timeout;
  c->pool = mf_pool_new(ctimeout);
  g_mutex_init(&c->lock);
  g_cond_init(&c->renew_cond);
  c->mounted = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  mf_seqs_init(&c->seqs);
  *out = c;
  return 0;
}

void mayfly_disconnect(mayfly_client_t *c) {
  if (c == NULL) return;
  g_mutex_lock(&c->lock);
  c->stopping = 1;
  g_cond_broadcast(&c->renew_cond);
  GThread *t = c->renewer;
  g_mutex_unlock(&c->lock);
  if (t != NULL) g_thread_join(t);
  mf_pool_free(c->pool);
  mf_ctl_close(c->ctl);
  if (c->token != NULL) mf_auth_wipe(c->token, strlen(c->token));
  g_free(c->token);
  g_hash_table_destroy(c->mounted);
  mf_seqs_clear(&c->seqs);
  g_mutex_clear(&c->lock);
  g_cond_clear(&c->renew_cond);
  g_free(c);
}

static const char *const kind_names[] = {"directory", "file", "queue", "kv"};

const char *mayfly_kind_name(mayfly_kind_t k) {
  return (unsigned)k < 4 ? kind_names[k] : "unknown";
}

int mayfly_kind_parse(const char *s, mayfly_kind_t *out) {
  for (int i = 0; i < 4; i++) {
    if (s != NULL && strcmp(s, kind_names[i]) == 0) {
      *out = (mayfly_kind_t)i;
      return 0;
    }
  }
  return MAYFLY_EINVAL;
}

/* One generated call with leader following and failover (MF_CTL_CALL):
 * CALL(c, method, args...) with the trailing &err, &gerr added, evaluating
 * to the MAYFLY_E* result. */
#define CALL(c, method, ...) MF_CTL_CALL((c)->ctl, method, __VA_ARGS__)

/* The request id of one mutating call (mf_ctl_request_id): declares cid_
 * and seq_, the same on every resend of the call. */
#define REQUEST_ID(c)    \
  int64_t cid_, seq_; \
  mf_ctl_request_id((c)->ctl, &cid_, &seq_)

/* A capability in hexadecimal (NULL: none) as bytes. One that is not a
 * capability (a directory bug) is dropped: the memory server then refuses
 * the block's requests, which says what is wrong. */
static void cap_from(const char *hex, uint8_t **out, size_t *len) {
  uint8_t cap[MF_CAP_SIZE];
  *out = NULL;
  *len = 0;
  if (hex != NULL && strlen(hex) == 2 * MF_CAP_SIZE && mf_hex_decode(hex, cap, sizeof cap) == 0) {
    *out = g_memdup2(cap, sizeof cap);
    *len = sizeof cap;
  }
}

/* The replication fields of a partition: a namespace without replicas has
 * no chain, R = 1 and state "ok" (or "lost"). */
static void chain_from(const MayflyPartition *p, mayfly_partition_t *o) {
  o->replicas = p->__isset_replicas && p->replicas > 0 ? p->replicas : 1;
  o->chain_version = p->__isset_chain_version ? p->chain_version : 0;
  const char *state = p->__isset_state && p->state != NULL && p->state[0] != '\0' ? p->state
                      : o->lost                                                     ? "lost"
                                                                                    : "ok";
  o->state = g_strdup(state);
  if (strcmp(state, "lost") == 0) o->lost = 1;
  guint n = p->__isset_chain && p->chain != NULL ? p->chain->len : 0;
  o->nchain = n;
  o->chain = n > 0 ? g_new0(mayfly_replica_t, n) : NULL;
  for (guint k = 0; k < n; k++) {
    const MayflyReplica *r = g_ptr_array_index(p->chain, k);
    mayfly_replica_t *m = &o->chain[k];
    m->server_id = r->server_id;
    m->server_address = g_strdup(r->server_address != NULL ? r->server_address : "");
    m->block_index = r->block_index;
    m->generation = r->generation;
    cap_from(r->__isset_capability ? r->capability : NULL, &m->capability, &m->capability_len);
    m->zone = g_strdup(r->__isset_zone && r->zone != NULL ? r->zone : "");
  }
}

static mayfly_stat_t *stat_from(const MayflyNodeInfo *ni) {
  mayfly_stat_t *st = g_new0(mayfly_stat_t, 1);
  st->path = g_strdup(ni->path);
  st->kind = (mayfly_kind_t)ni->kind;
  st->created_ms = ni->created_ms;
  st->lease_ms = ni->lease_ms;
  st->remaining_ms = ni->remaining_ms;
  st->pinned = ni->pinned;
  st->children = ni->children;
  st->max_blocks = ni->max_blocks;
  st->high_watermark = ni->high_watermark;
  st->low_watermark = ni->low_watermark;
  st->layout_version = ni->layout ? ni->layout->version : 0;
  GPtrArray *parts = ni->layout ? ni->layout->partitions : NULL;
  st->npartitions = parts ? parts->len : 0;
  st->partitions = g_new0(mayfly_partition_t, st->npartitions ? st->npartitions : 1);
  for (size_t i = 0; i < st->npartitions; i++) {
    const MayflyPartition *p = g_ptr_array_index(parts, i);
    mayfly_partition_t *o = &st->partitions[i];
    *o = (mayfly_partition_t){.server_id = p->server_id,
                              .server_address = g_strdup(p->server_address),
                              .block_index = p->block_index,
                              .generation = p->generation,
                              .block_size = p->block_size,
                              .range_lo = p->range_lo,
                              .range_hi = p->range_hi,
                              .lost = p->__isset_lost && p->lost};
    cap_from(p->__isset_capability ? p->capability : NULL, &o->capability, &o->capability_len);
    chain_from(p, o);
  }
  st->ntags = ni->tags ? g_hash_table_size(ni->tags) : 0;
  st->tag_keys = g_new0(char *, st->ntags + 1);
  st->tag_values = g_new0(char *, st->ntags + 1);
  if (st->ntags > 0) {
    GList *keys = g_list_sort(g_hash_table_get_keys(ni->tags), (GCompareFunc)strcmp);
    size_t i = 0;
    for (GList *k = keys; k != NULL; k = k->next, i++) {
      st->tag_keys[i] = g_strdup(k->data);
      st->tag_values[i] = g_strdup(g_hash_table_lookup(ni->tags, k->data));
    }
    g_list_free(keys);
  }
  return st;
}

void mayfly_stat_free(mayfly_stat_t *st) {
  if (st == NULL) return;
  for (size_t i = 0; i < st->npartitions; i++) {
    mayfly_partition_t *p = &st->partitions[i];
    g_free(p->server_address);
    g_free(p->capability);
    g_free(p->state);
    for (size_t k = 0; k < p->nchain; k++) {
      g_free(p->chain[k].server_address);
      g_free(p->chain[k].capability);
      g_free(p->chain[k].zone);
    }
    g_free(p->chain);
  }
  g_free(st->partitions);
  g_strfreev(st->tag_keys);
  g_strfreev(st->tag_values);
  g_free(st->path);
  g_free(st);
}

void mayfly_stat_list_free(mayfly_stat_t **list, size_t n) {
  if (list == NULL) return;
  for (size_t i = 0; i < n; i++) mayfly_stat_free(list[i]);
  g_free(list);
}

void mayfly_strv_free(char **v, size_t n) {
  if (v == NULL) return;
  for (size_t i = 0; i < n; i++) g_free(v[i]);
  g_free(v);
}

int mayfly_mkdir(mayfly_client_t *c, const char *path, int parents) {
  REQUEST_ID(c);
  return CALL(c, mkdir, path, parents != 0, cid_, seq_);
}

static MayflyCreateOptions *create_opts(const mayfly_create_options_t *o) {
  MayflyCreateOptions *co = g_object_new(MAYFLY_TYPE_CREATE_OPTIONS, NULL);
  if (o != NULL) {
    co->blocks = o->blocks;
    co->lease_ms = o->lease_ms;
    co->pinned = o->pinned != 0;
    co->max_blocks = o->max_blocks;
    co->high_watermark = o->high_watermark;
    co->low_watermark = o->low_watermark;
    /* Left unset for 0, so a request without replicas is what it was. */
    if (o->replicas > 0) {
      co->replicas = o->replicas;
      co->__isset_replicas = TRUE;
    }
  }
  return co;
}

/* Shared by create and open_or_create, which differ only in the method. */
static int create_call(mayfly_client_t *c, int or_open, const char *path, mayfly_kind_t kind,
                       const mayfly_create_options_t *opts, mayfly_stat_t **out) {
  MayflyCreateOptions *co = create_opts(opts);
  MayflyNodeInfo *ni = g_object_new(MAYFLY_TYPE_NODE_INFO, NULL);
  REQUEST_ID(c);
  int rc = or_open ? CALL(c, open_or_create, &ni, path, (MayflyNodeKind)kind, co)
                   : CALL(c, create_ns, &ni, path, (MayflyNodeKind)kind, co, cid_, seq_);
  if (rc == 0 && out != NULL) *out = stat_from(ni);
  g_object_unref(ni);
  g_object_unref(co);
  return rc;
}

int mayfly_create(mayfly_client_t *c, const char *path, mayfly_kind_t kind,
                  const mayfly_create_options_t *opts, mayfly_stat_t **out) {
  return create_call(c, 0, path, kind, opts, out);
}

int mayfly_open_or_create(mayfly_client_t *c, const char *path, mayfly_kind_t kind,
                          const mayfly_create_options_t *opts, mayfly_stat_t **out) {
  return create_call(c, 1, path, kind, opts, out);
}

int mayfly_remove(mayfly_client_t *c, const char *path, int recursive) {
  REQUEST_ID(c);
  int rc = CALL(c, remove, path, recursive != 0, cid_, seq_);
  if (rc == 0 || rc == MAYFLY_ENOENT) {
    /* Stop renewing what is gone: the path and, if recursive, below it. */
    g_mutex_lock(&c->lock);
    GHashTableIter it;
    gpointer k;
    g_hash_table_iter_init(&it, c->mounted);
    size_t n = strlen(path);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
      const char *m = k;
      if (strcmp(m, path) == 0 || (strncmp(m, path, n) == 0 && (m[n] == '/' || n == 1))) {
        g_hash_table_iter_remove(&it);
      }
    }
    g_mutex_unlock(&c->lock);
  }
  return rc;
}

/* Layout calls return the layout inside a mayfly_stat_t (partitions and
 * layout_version only), so one conversion serves both. */
static int layout_call(mayfly_client_t *c, const char *path, int op, int64_t lo, int64_t hi,
                       mayfly_stat_t **out) {
  MayflyNodeInfo *ni = g_object_new(MAYFLY_TYPE_NODE_INFO, NULL);
  MayflyLayout *l = ni->layout;
  int64_t cid_ = 0, seq_ = 0;
  if (op == 1) mf_ctl_request_id(c->ctl, &cid_, &seq_);
  int rc = op == 1   ? CALL(c, add_block, &l, path, lo, hi, cid_, seq_)
           : op == 2 ? CALL(c, release_range, &l, path, lo)
           : op == 3 ? CALL(c, truncate, &l, path, lo)
                     : CALL(c, get_layout, &l, path);
  if (rc == 0) {
    g_free(ni->path);
    ni->path = g_strdup(path);
    *out = stat_from(ni);
  }
  g_object_unref(ni);
  return rc;
}

int mf_get_layout(mayfly_client_t *c, const char *path, mayfly_stat_t **out) {
  return layout_call(c, path, 0, 0, 0, out);
}

int mf_add_block(mayfly_client_t *c, const char *path, int64_t lo, int64_t hi,
                 mayfly_stat_t **out) {
  return layout_call(c, path, 1, lo, hi, out);
}

int mf_release_range(mayfly_client_t *c, const char *path, int64_t lo, mayfly_stat_t **out) {
  return layout_call(c, path, 2, lo, 0, out);
}

int mf_truncate(mayfly_client_t *c, const char *path, int64_t size, mayfly_stat_t **out) {
  return layout_call(c, path, 3, size, 0, out);
}

int mayfly_rename(mayfly_client_t *c, const char *old_path, const char *new_path) {
  REQUEST_ID(c);
  return CALL(c, rename, old_path, new_path, cid_, seq_);
}

int mayfly_exists(mayfly_client_t *c, const char *path) {
  gboolean yes = FALSE;
  int rc = CALL(c, exists, &yes, path);
  return rc != 0 ? rc : (yes ? 1 : 0);
}

int mayfly_stat(mayfly_client_t *c, const char *path, mayfly_stat_t **out) {
  MayflyNodeInfo *ni = g_object_new(MAYFLY_TYPE_NODE_INFO, NULL);
  int rc = CALL(c, stat, &ni, path);
  if (rc == 0) *out = stat_from(ni);
  g_object_unref(ni);
  return rc;
}

int mayfly_list(mayfly_client_t *c, const char *path, mayfly_stat_t ***out, size_t *n) {
  GPtrArray *arr = g_ptr_array_new_with_free_func(g_object_unref);
  int rc = CALL(c, list_children, &arr, path);
  if (rc == 0) {
    *n = arr->len;
    *out = g_new0(mayfly_stat_t *, arr->len + 1);
    for (guint i = 0; i < arr->len; i++) (*out)[i] = stat_from(g_ptr_array_index(arr, i));
  }
  g_ptr_array_unref(arr);
  return rc;
}

int mayfly_renew(mayfly_client_t *c, const char *const *paths, size_t n, int64_t *lease_ms,
                 char ***missing, size_t *nmissing) {
  GPtrArray *arr = g_ptr_array_sized_new((guint)n);
  for (size_t i = 0; i < n; i++) g_ptr_array_add(arr, (gpointer)paths[i]);
  MayflyRenewReply *rr = g_object_new(MAYFLY_TYPE_RENEW_REPLY, NULL);
  int rc = CALL(c, renew, &rr, arr);
  if (rc == 0) {
    if (lease_ms != NULL) *lease_ms = rr->lease_ms;
    if (missing != NULL) {
      *nmissing = rr->missing->len;
      *missing = g_new0(char *, rr->missing->len + 1);
      for (guint i = 0; i < rr->missing->len; i++) {
        (*missing)[i] = g_strdup(g_ptr_array_index(rr->missing, i));
      }
    }
  }
  g_object_unref(rr);
  g_ptr_array_free(arr, TRUE);
  return rc;
}

int mayfly_leases(mayfly_client_t *c, const char *path, mayfly_lease_t **out, size_t *n) {
  GPtrArray *arr = g_ptr_array_new_with_free_func(g_object_unref);
  int rc = CALL(c, leases, &arr, path ? path : "/");
  if (rc == 0) {
    *n = arr->len;
    *out = g_new0(mayfly_lease_t, arr->len + 1);
    for (guint i = 0; i < arr->len; i++) {
      const MayflyLeaseInfo *li = g_ptr_array_index(arr, i);
      (*out)[i] = (mayfly_lease_t){g_strdup(li->path), (mayfly_kind_t)li->kind, li->lease_ms,
                                   li->remaining_ms, li->pinned};
    }
  }
  g_ptr_array_unref(arr);
  return rc;
}

void mayfly_leases_free(mayfly_lease_t *l, size_t n) {
  if (l == NULL) return;
  for (size_t i = 0; i < n; i++) g_free(l[i].path);
  g_free(l);
}

int mayfly_servers(mayfly_client_t *c, mayfly_server_t **out, size_t *n) {
  GPtrArray *arr = g_ptr_array_new_with_free_func(g_object_unref);
  int rc = CALL(c, servers, &arr);
  if (rc == 0) {
    *n = arr->len;
    *out = g_new0(mayfly_server_t, arr->len + 1);
    for (guint i = 0; i < arr->len; i++) {
      const MayflyServerInfo *si = g_ptr_array_index(arr, i);
      (*out)[i] = (mayfly_server_t){.id = si->id,
                                    .address = g_strdup(si->address),
                                    .up = si->up,
                                    .blocks_used = si->blocks_used,
                                    .blocks_total = si->blocks_total,
                                    .block_size = si->block_size,
                                    .heartbeat_age_ms = si->heartbeat_age_ms,
                                    .blocks_lost = si->__isset_blocks_lost ? si->blocks_lost : 0};
      (*out)[i].zone = g_strdup(si->__isset_zone && si->zone != NULL ? si->zone : "");
      (*out)[i].host = g_strdup(si->__isset_host && si->host != NULL ? si->host : "");
      (*out)[i].chains = si->__isset_chains ? si->chains : 0;
    }
  }
  g_ptr_array_unref(arr);
  return rc;
}

void mayfly_servers_free(mayfly_server_t *s, size_t n) {
  if (s == NULL) return;
  for (size_t i = 0; i < n; i++) {
    g_free(s[i].address);
    g_free(s[i].zone);
    g_free(s[i].host);
  }
  g_free(s);
}

int mayfly_dir_stats(mayfly_client_t *c, mayfly_dir_stats_t *out) {
  MayflyStats *s = g_object_new(MAYFLY_TYPE_STATS, NULL);
  int rc = CALL(c, stats, &s);
  if (rc == 0) {
    *out = (mayfly_dir_stats_t){.nodes = s->nodes,
                                .directories = s->directories,
                                .namespaces = s->namespaces,
                                .servers = s->servers,
                                .servers_up = s->servers_up,
                                .blocks_total = s->blocks_total,
                                .blocks_used = s->blocks_used,
                                .expired_total = s->expired_total,
                                .uptime_ms = s->uptime_ms,
                                .connections = s->connections,
                                .requests = s->requests,
                                .lease_ms = s->lease_ms,
                                .grace_ms = s->grace_ms,
                                .splits = s->splits,
                                .merges = s->merges,
                                .rollbacks = s->rollbacks,
                                .bytes_moved = s->bytes_moved,
                                .move_ms = s->move_ms,
                                .move_ms_max = s->move_ms_max};
    if (s->__isset_durable && s->durable) {
      out->durable = 1;
      out->log_records = s->log_records;
      out->log_bytes = s->log_bytes;
      out->log_fsyncs = s->log_fsyncs;
      out->snapshots = s->snapshots;
      out->last_snapshot_ms = s->last_snapshot_ms;
      out->recovery_ms = s->recovery_ms;
      out->recovered_records = s->recovered_records;
      out->log_seq = s->log_seq;
    }
    out->chain_failovers = s->__isset_chain_failovers ? s->chain_failovers : 0;
    out->rereplications = s->__isset_rereplications ? s->rereplications : 0;
    out->rereplicated_bytes = s->__isset_rereplicated_bytes ? s->rereplicated_bytes : 0;
    out->partitions_degraded = s->__isset_partitions_degraded ? s->partitions_degraded : 0;
  }
  g_object_unref(s);
  return rc;
}

static char *str_or_empty(const char *s) {
  return g_strdup(s != NULL ? s : "");
}

int mayfly_cluster(mayfly_client_t *c, mayfly_cluster_t *out) {
  MayflyClusterInfo *ci = g_object_new(MAYFLY_TYPE_CLUSTER_INFO, NULL);
  int rc = CALL(c, cluster, &ci);
  if (rc == 0) {
    *out = (mayfly_cluster_t){.name = str_or_empty(ci->name),
                              .etcd = str_or_empty(ci->etcd),
                              .leader = str_or_empty(ci->leader),
                              .answered_by = str_or_empty(ci->answered_by),
                              .term = ci->term,
                              .committed_seq = ci->committed_seq,
                              .snapshot_seq = ci->snapshot_seq,
                              .txns = ci->txns,
                              .txn_records = ci->txn_records};
    guint n = ci->members != NULL ? ci->members->len : 0;
    out->nmembers = n;
    out->members = g_new0(mayfly_dir_member_t, n + 1);
    for (guint i = 0; i < n; i++) {
      const MayflyDirectoryMember *m = g_ptr_array_index(ci->members, i);
      out->members[i] = (mayfly_dir_member_t){.address = str_or_empty(m->address),
                                              .role = str_or_empty(m->role),
                                              .applied_seq = m->applied_seq,
                                              .updated_ms = m->updated_ms};
    }
  }
  g_object_unref(ci);
  /* A directory without --advertise (no HA) may not know its own address:
   * it is the one this client reached. */
  if (rc == 0 && out->answered_by[0] == '\0') {
    char self[300];
    mf_ctl_address(c->ctl, self, sizeof self);
    g_free(out->answered_by);
    out->answered_by = g_strdup(self);
    if (out->nmembers == 1 && strcmp(out->members[0].role, "single") == 0) {
      if (out->members[0].address[0] == '\0') {
        g_free(out->members[0].address);
        out->members[0].address = g_strdup(self);
      }
      if (out->leader[0] == '\0') {
        g_free(out->leader);
        out->leader = g_strdup(self);
      }
    }
  }
  return rc;
}

void mayfly_cluster_clear(mayfly_cluster_t *ci) {
  if (ci == NULL) return;
  for (size_t i = 0; i < ci->nmembers; i++) {
    g_free(ci->members[i].address);
    g_free(ci->members[i].role);
  }
  g_free(ci->members);
  g_free(ci->name);
  g_free(ci->etcd);
  g_free(ci->leader);
  g_free(ci->answered_by);
  *ci = (mayfly_cluster_t){0};
}

/* A copy of a Thrift list of strings as a NULL-terminated vector. */
static char **strv_from(const GPtrArray *a, size_t *n) {
  *n = a != NULL ? a->len : 0;
  char **v = g_new0(char *, *n + 1);
  for (size_t i = 0; i < *n; i++) v[i] = g_strdup(g_ptr_array_index(a, i));
  return v;
}

int mayfly_tenants(mayfly_client_t *c, mayfly_tenant_t **out, size_t *n) {
  GPtrArray *arr = g_ptr_array_new_with_free_func(g_object_unref);
  int rc = CALL(c, tenants, &arr);
  if (rc == 0) {
    *n = arr->len;
    *out = g_new0(mayfly_tenant_t, arr->len + 1);
    for (guint i = 0; i < arr->len; i++) {
      const MayflyTenantInfo *ti = g_ptr_array_index(arr, i);
      mayfly_tenant_t *t = &(*out)[i];
      t->name = g_strdup(ti->name);
      t->prefixes = strv_from(ti->prefixes, &t->nprefixes);
      t->read_prefixes = strv_from(ti->read_prefixes, &t->nread_prefixes);
      t->max_blocks = ti->max_blocks;
      t->blocks_used = ti->blocks_used;
      t->namespaces = ti->namespaces;
      t->admin = ti->admin;
    }
  }
  g_ptr_array_unref(arr);
  return rc;
}

void mayfly_tenants_free(mayfly_tenant_t *t, size_t n) {
  if (t == NULL) return;
  for (size_t i = 0; i < n; i++) {
    g_free(t[i].name);
    g_strfreev(t[i].prefixes);
    g_strfreev(t[i].read_prefixes);
  }
  g_free(t);
}

int mayfly_whoami(mayfly_client_t *c, mayfly_session_t *out) {
  MayflySession *s = g_object_new(MAYFLY_TYPE_SESSION, NULL);
  int rc = CALL(c, login, &s, c->token != NULL ? c->token : "");
  if (rc == 0) {
    *out = (mayfly_session_t){.open = s->open, .admin = s->admin};
    out->tenant = g_strdup(s->tenant != NULL ? s->tenant : "");
    out->prefixes = strv_from(s->prefixes, &out->nprefixes);
    out->read_prefixes = strv_from(s->read_prefixes, &out->nread_prefixes);
  }
  g_object_unref(s);
  return rc;
}

void mayfly_session_clear(mayfly_session_t *s) {
  if (s == NULL) return;
  g_free(s->tenant);
  g_strfreev(s->prefixes);
  g_strfreev(s->read_prefixes);
  *s = (mayfly_session_t){0};
}
