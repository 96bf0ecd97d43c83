/*
 * Control API handler (see handler.h). Ownership, per THRIFT_C_GLIB.md:
 * arguments belong to the processor; struct and list results arrive
 * pre-created and are filled in place; declared errors are stored in *err
 * with FALSE returned, and the processor sends and frees them.
 */
#include "directory/handler.h"

#include <string.h>

#include "common/auth.h"
#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "directory/caps.h"
#include "directory/chains.h"
#include "directory/ha.h"
#include "directory/limits.h"
#include "directory/repart.h"
#include "directory/tenants.h"
#include "namespaces/path.h"

typedef struct {
  MayflyDirectoryHandler parent;
  dir_t *dir;
} DirHandler;

typedef struct {
  MayflyDirectoryHandlerClass parent;
} DirHandlerClass;

static GType dir_handler_get_type(void);
G_DEFINE_TYPE(DirHandler, dir_handler, MAYFLY_TYPE_DIRECTORY_HANDLER)

#define DIR_OF(iface) (((DirHandler *)(iface))->dir)

/* Room for a reason that quotes two paths of the longest legal length. */
#define WHY_MAX (2 * NS_PATH_MAX + 256)

static gboolean fail(MayflyError **err, int code, const char *why) {
  *err = g_object_new(MAYFLY_TYPE_ERROR, "code", code, "message",
                      (why != NULL && why[0] != '\0') ? why : mayfly_strerror(code), NULL);
  return FALSE;
}

static gboolean fail_path(MayflyError **err, int code, const char *path, const char *why) {
  char *msg = g_strdup_printf("%s: %s", path ? path : "(null)",
                              (why && why[0]) ? why : mayfly_strerror(code));
  fail(err, code, msg);
  g_free(msg);
  return FALSE;
}

/* The gate of every call but the handshakes and cluster(): with --etcd
 * only the leader answers (ha.h), a standby says who leads. */
static gboolean leading(dir_t *d, MayflyError **err) {
  if (d->ha == NULL || dir_ha_serving(d->ha)) return TRUE;
  const char *leader = dir_ha_leader(d->ha);
  char why[DIR_ADDRESS_MAX + 64];
  if (leader != NULL) {
    g_snprintf(why, sizeof why, "not the leader: the leader is %s", leader);
  } else {
    g_snprintf(why, sizeof why, "not the leader: no leader is elected yet");
  }
  fail(err, MAYFLY_ENOTLEADER, why);
  if (leader != NULL) {
    g_object_set(*err, "leader", leader, NULL);
  }
  return FALSE;
}

/* Notes the request id of a mutating call (the records it applies carry it,
 * dir_apply) and says whether the call was applied already: a retry after a
 * failover, to be answered from the state the first one left. */
static int repeated(dir_t *d, gint64 client_id, gint64 request_seq) {
  if (client_id == 0) return 0;
  d->call.req_client = (uint64_t)client_id;
  d->call.req_seq = (uint64_t)request_seq;
  if (!ns_tree_request_done(d->tree, (uint64_t)client_id, (uint64_t)request_seq)) return 0;
  MF_INFO("peer %s: request %llx/%lld was applied already: answered from the state it left",
          d->call.session->peer ? d->call.session->peer : "(local)",
          (unsigned long long)client_id, (long long)request_seq);
  return 1;
}

/* The permission check of every client call (tenants.h), before it looks
 * at the tree: TRUE, or FALSE with the error in *err. */
static gboolean allow(dir_t *d, dir_access_t need, const char *path, MayflyError **err) {
  char why[WHY_MAX];
  why[0] = '\0';
  int rc = dir_tenants_check(d, d->call.session, need, path, why, sizeof why);
  return rc == 0 ? TRUE : fail(err, rc, why);
}

/* Whether the caller may see the node at path (for filtering listings). */
static int visible(dir_t *d, const char *path) {
  return dir_tenants_may(d, d->call.session, DIR_SEE, path);
}

/* Children of directory n the caller may see: all of them when it may read
 * n itself (everything below a readable path is readable). */
static gint32 visible_children(dir_t *d, const ns_node_t *n, const char *path) {
  if (n->children == NULL) return 0;
  if (dir_tenants_may(d, d->call.session, DIR_READ, path)) {
    return (gint32)g_hash_table_size(n->children);
  }
  gint32 count = 0;
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, n->children);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    char *cp = ns_node_path(v);
    count += visible(d, cp);
    g_free(cp);
  }
  return count;
}

/* What the capabilities of one layout grant (caps.h): worked out once per
 * layout, for the caller's session and the namespace's path. */
typedef struct {
  uint8_t rights; /* 0: no capabilities (no cluster key, or no right at all) */
  uint32_t tenant;
  int64_t expiry_ms;
} cap_grant_t;

static void grant_for(dir_t *d, const ns_node_t *n, cap_grant_t *g) {
  *g = (cap_grant_t){0};
  if (!dir_caps_enabled(d)) return;
  char *path = ns_node_path(n);
  g->rights = dir_tenants_rights(d, d->call.session, path, &g->tenant) &
              (MF_RIGHT_READ | MF_RIGHT_WRITE);
  g_free(path);
  g->expiry_ms = dir_caps_expiry(d);
}

/* Fills one chain member (or copy block) b; with a grant (may be NULL)
 * that has rights, it carries the block's own capability. */
static void fill_replica(dir_t *d, MayflyReplica *r, const ns_block_t *b, const cap_grant_t *g) {
  const ns_server_t *s = ns_alloc_server(d->tree->alloc, b->server);
  r->server_id = b->server;
  g_free(r->server_address);
  r->server_address = g_strdup(s ? s->address : "");
  r->block_index = b->index;
  r->generation = b->generation;
  g_free(r->zone);
  r->zone = g_strdup(s && s->zone ? s->zone : "");
  r->__isset_zone = TRUE;
  g_free(r->capability);
  r->capability = g != NULL ? dir_caps_block(d, b, g->rights, g->tenant, g->expiry_ms) : NULL;
  r->__isset_capability = r->capability != NULL;
}

/* A partition's chain, head first, into out (a GPtrArray of MayflyReplica). */
static void fill_chain(dir_t *d, GPtrArray *out, const ns_partition_t *p, const cap_grant_t *g) {
  for (int i = 0; i < ns_part_members(p); i++) {
    MayflyReplica *r = g_object_new(MAYFLY_TYPE_REPLICA, NULL);
    fill_replica(d, r, ns_part_member(p, i), g);
    g_ptr_array_add(out, r);
  }
}

/* Fills one partition; with a grant (may be NULL) that has rights, a
 * partition that is not lost carries its block's capability, and each
 * member of a replicated one its own. Fields 1-4 and 9 are the head's. */
static void fill_partition(dir_t *d, MayflyPartition *mp, const ns_partition_t *p,
                           const cap_grant_t *g) {
  const ns_server_t *s = ns_alloc_server(d->tree->alloc, p->block.server);
  mp->server_id = p->block.server;
  g_free(mp->server_address);
  mp->server_address = g_strdup(s ? s->address : "");
  mp->block_index = p->block.index;
  mp->generation = p->block.generation;
  mp->block_size = s ? s->block_size : 0;
  mp->range_lo = p->lo;
  mp->range_hi = p->hi;
  mp->lost = p->state == NS_PART_LOST;
  mp->__isset_lost = mp->lost;
  g_free(mp->capability);
  mp->capability = NULL;
  if (g != NULL && !mp->lost) {
    mp->capability = dir_caps_block(d, &p->block, g->rights, g->tenant, g->expiry_ms);
  }
  mp->__isset_capability = mp->capability != NULL;
  g_ptr_array_set_size(mp->chain, 0);
  int replicated = p->replicas > 1;
  mp->__isset_chain = mp->__isset_replicas = mp->__isset_state = replicated;
  mp->__isset_chain_version = replicated;
  if (!replicated) return;
  fill_chain(d, mp->chain, p, mp->lost ? NULL : g);
  mp->replicas = p->replicas;
  g_free(mp->state);
  mp->state = g_strdup(ns_part_chain_state(p));
  mp->chain_version = p->chain_version;
}

static void fill_layout(dir_t *d, MayflyLayout *out, const ns_node_t *n) {
  out->version = n->layout.version;
  g_ptr_array_set_size(out->partitions, 0);
  if (n->layout.parts == NULL) return;
  cap_grant_t g;
  grant_for(d, n, &g);
  for (guint i = 0; i < n->layout.parts->len; i++) {
    MayflyPartition *mp = g_object_new(MAYFLY_TYPE_PARTITION, NULL);
    fill_partition(d, mp, &g_array_index(n->layout.parts, ns_partition_t, i), &g);
    g_ptr_array_add(out->partitions, mp);
  }
}

static void fill_node(dir_t *d, MayflyNodeInfo *out, const ns_node_t *n) {
  int64_t now = mf_now_ms();
  g_free(out->path);
  out->path = ns_node_path(n);
  out->kind = (MayflyNodeKind)n->kind;
  out->created_ms = n->created_wall_ms;
  out->lease_ms = ns_node_lease_ms(d->tree, n);
  out->remaining_ms = ns_node_remaining_ms(d->tree, n, now);
  out->pinned = (n->flags & NS_FLAG_PINNED) != 0;
  g_hash_table_remove_all(out->tags);
  if (n->tags != NULL) {
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, n->tags);
    while (g_hash_table_iter_next(&it, &k, &v)) {
      g_hash_table_insert(out->tags, g_strdup(k), g_strdup(v));
    }
  }
  fill_layout(d, out->layout, n);
  out->children = visible_children(d, n, out->path);
  out->max_blocks = n->max_blocks;
  out->high_watermark = n->kind == NS_KIND_KV ? (n->high_wm ? n->high_wm : NS_HIGH_WM_DEFAULT) : 0;
  out->low_watermark = n->kind == NS_KIND_KV ? (n->low_wm ? n->low_wm : NS_LOW_WM_DEFAULT) : 0;
}

static ns_node_t *lookup(dir_t *d, const gchar *path, MayflyError **err) {
  char why[WHY_MAX];
  why[0] = '\0';
  int rc = ns_path_check(path, why, sizeof why);
  if (rc != 0) {
    fail_path(err, rc, path, why);
    return NULL;
  }
  ns_node_t *n = ns_tree_lookup(d->tree, path);
  if (n == NULL) fail_path(err, MAYFLY_ENOENT, path, NULL);
  return n;
}

/* lookup() for a caller that needs `need` on path. A namespace a tenant
 * sees only as the ancestor of one of its subtrees shows no data: seeing a
 * leaf takes the right to read it. */
static ns_node_t *lookup_as(dir_t *d, dir_access_t need, const gchar *path, MayflyError **err) {
  if (!allow(d, need, path, err)) return NULL;
  ns_node_t *n = lookup(d, path, err);
  if (n != NULL && need == DIR_SEE && n->kind != NS_KIND_DIRECTORY &&
      !allow(d, DIR_READ, path, err)) {
    return NULL;
  }
  return n;
}

/* The gate of the server-only methods (caps.h): FALSE, with the error set,
 * for a session that may not call them; checked before anything else. */
static gboolean cluster_only(dir_t *d, const char *method, MayflyError **err) {
  char why[128];
  if (dir_caps_require_cluster(d, d->call.session, method, why, sizeof why) == 0) return TRUE;
  return fail(err, MAYFLY_EPERM, why);
}

static gboolean h_mkdir(MayflyDirectoryIf *iface, const gchar *path, const gboolean parents,
                        const gint64 client_id, const gint64 request_seq, MayflyError **err,
                        GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  if (!allow(DIR_OF(iface), DIR_CHANGE, path, err)) return FALSE;
  if (repeated(DIR_OF(iface), client_id, request_seq)) return TRUE;
  char why[WHY_MAX];
  why[0] = '\0';
  ns_record_t rec = {.type = NS_REC_MKDIR, .path = path, .flags = parents ? NS_REC_PARENTS : 0};
  int rc = dir_apply(DIR_OF(iface), &rec, NULL, why, sizeof why);
  return rc == 0 ? TRUE : fail_path(err, rc, path, why);
}

/* Creates a data namespace: chooses its blocks, then applies the record. */
static int create_node(dir_t *d, const gchar *path, MayflyNodeKind kind,
                       const MayflyCreateOptions *opts, char *why, size_t whylen) {
  int rc = ns_path_check(path, why, whylen);
  if (rc != 0) return rc;
  if (ns_tree_lookup(d->tree, path) != NULL) {
    g_snprintf(why, whylen, "already exists");
    return MAYFLY_EEXIST;
  }
  if (kind != MAYFLY_NODE_KIND_FILE && kind != MAYFLY_NODE_KIND_QUEUE &&
      kind != MAYFLY_NODE_KIND_KV) {
    g_snprintf(why, whylen, "kind must be file, queue or kv (use mkdir for directories)");
    return MAYFLY_EINVAL;
  }
  int nblocks = opts->blocks > 0 ? opts->blocks : 1;
  if (opts->blocks < 0 || nblocks > NS_CREATE_BLOCKS_MAX) {
    g_snprintf(why, whylen, "blocks must be between 1 and %d", NS_CREATE_BLOCKS_MAX);
    return MAYFLY_EINVAL;
  }
  int32_t replicas = 1;
  rc = dir_chains_replicas(d, opts->__isset_replicas ? opts->replicas : 0, &replicas, why,
                           whylen);
  if (rc != 0) return rc;
  /* Quotas count blocks: every member of every chain. */
  rc = dir_tenants_charge(d, path, nblocks * replicas, why, whylen);
  if (rc != 0) return rc;
  ns_partition_t *parts = g_new0(ns_partition_t, (gsize)nblocks);
  why[0] = '\0';
  rc = ns_tree_plan_chains(d->tree, (ns_kind_t)kind, nblocks, replicas, parts, why, whylen);
  if (rc == MAYFLY_ENOHOSTS) {
    if (why[0] == '\0') {
      g_snprintf(why, whylen, "cannot place %d replicas per partition on distinct hosts",
                 replicas);
    }
  } else if (rc == MAYFLY_ENOSERVERS) {
    g_snprintf(why, whylen, "cannot allocate blocks: %s",
               d->tree->alloc->servers->len == 0 ? "no memory servers registered"
                                                 : "no memory server is up");
  } else if (rc == MAYFLY_ENOSPC) {
    g_snprintf(why, whylen,
               "cannot allocate %d blocks: block pool exhausted (%lld of %lld blocks in use)",
               nblocks * replicas, (long long)d->tree->alloc->blocks_used,
               (long long)d->tree->alloc->blocks_total);
  } else if (rc == 0) {
    ns_record_t rec = {.type = NS_REC_CREATE,
                       .path = path,
                       .kind = (ns_kind_t)kind,
                       .lease_ms = opts->lease_ms,
                       .node_flags = opts->pinned ? NS_FLAG_PINNED : 0,
                       .tags = opts->tags,
                       .max_blocks = opts->max_blocks,
                       .high_wm = opts->high_watermark,
                       .low_wm = opts->low_watermark,
                       .replicas = replicas,
                       .parts = parts,
                       .nparts = (size_t)nblocks};
    rc = dir_apply(d, &rec, NULL, why, whylen);
    if (rc == 0) {
      MF_DEBUG("namespace %s: created (%s, %d blocks, %d replicas)", path,
               ns_kind_name((ns_kind_t)kind), nblocks, replicas);
    }
  }
  g_free(parts);
  return rc;
}

static gboolean h_create_ns(MayflyDirectoryIf *iface, MayflyNodeInfo **_return,
                            const gchar *path, const MayflyNodeKind kind,
                            const MayflyCreateOptions *opts, const gint64 client_id,
                            const gint64 request_seq, MayflyError **err, GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  dir_t *d = DIR_OF(iface);
  if (!allow(d, DIR_CHANGE, path, err)) return FALSE;
  char why[WHY_MAX];
  why[0] = '\0';
  if (repeated(d, client_id, request_seq)) {
    ns_node_t *n = ns_path_check(path, NULL, 0) == 0 ? ns_tree_lookup(d->tree, path) : NULL;
    if (n == NULL) return fail_path(err, MAYFLY_ENOENT, path, "created, then removed since");
    fill_node(d, *_return, n);
    return TRUE;
  }
  int rc = create_node(d, path, kind, opts, why, sizeof why);
  if (rc != 0) return fail_path(err, rc, path, why);
  fill_node(d, *_return, ns_tree_lookup(d->tree, path));
  return TRUE;
}

static gboolean h_open_ns(MayflyDirectoryIf *iface, MayflyNodeInfo **_return, const gchar *path,
                          MayflyError **err, GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  dir_t *d = DIR_OF(iface);
  ns_node_t *n = lookup_as(d, DIR_SEE, path, err);
  if (n == NULL) return FALSE;
  fill_node(d, *_return, n);
  return TRUE;
}

static gboolean h_open_or_create(MayflyDirectoryIf *iface, MayflyNodeInfo **_return,
                                 const gchar *path, const MayflyNodeKind kind,
                                 const MayflyCreateOptions *opts, MayflyError **err,
                                 GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  dir_t *d = DIR_OF(iface);
  char why[WHY_MAX];
  why[0] = '\0';
  ns_node_t *n = ns_path_check(path, NULL, 0) == 0 ? ns_tree_lookup(d->tree, path) : NULL;
  /* Opening takes the right to read, creating the right to change; one
   * who has neither hears only of the latter (not whether it exists). */
  int opens = n != NULL && dir_tenants_may(d, d->call.session, DIR_READ, path);
  if (!allow(d, opens ? DIR_READ : DIR_CHANGE, path, err)) return FALSE;
  if (n == NULL) {
    int rc = create_node(d, path, kind, opts, why, sizeof why);
    if (rc != 0) return fail_path(err, rc, path, why);
    n = ns_tree_lookup(d->tree, path);
  } else if ((MayflyNodeKind)n->kind != kind) {
    g_snprintf(why, sizeof why, "exists as a %s namespace, not %s", ns_kind_name(n->kind),
               ns_kind_name((ns_kind_t)kind));
    return fail_path(err, MAYFLY_EKIND, path, why);
  }
  fill_node(d, *_return, n);
  return TRUE;
}

static gboolean h_remove(MayflyDirectoryIf *iface, const gchar *path, const gboolean recursive,
                         const gint64 client_id, const gint64 request_seq, MayflyError **err,
                         GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  if (!allow(DIR_OF(iface), DIR_CHANGE, path, err)) return FALSE;
  if (repeated(DIR_OF(iface), client_id, request_seq)) return TRUE;
  char why[WHY_MAX];
  why[0] = '\0';
  ns_record_t rec = {
      .type = NS_REC_REMOVE, .path = path, .flags = recursive ? NS_REC_RECURSIVE : 0};
  int rc = dir_apply(DIR_OF(iface), &rec, NULL, why, sizeof why);
  return rc == 0 ? TRUE : fail_path(err, rc, path, why);
}

static gboolean h_rename(MayflyDirectoryIf *iface, const gchar *old_path, const gchar *new_path,
                         const gint64 client_id, const gint64 request_seq, MayflyError **err,
                         GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  dir_t *d = DIR_OF(iface);
  if (!allow(d, DIR_CHANGE, old_path, err) || !allow(d, DIR_CHANGE, new_path, err)) return FALSE;
  if (repeated(d, client_id, request_seq)) return TRUE;
  char why[WHY_MAX];
  why[0] = '\0';
  int rc = ns_path_check(new_path, why, sizeof why);
  if (rc != 0) return fail_path(err, rc, new_path, why);
  /* A subtree moved under another tenant's prefixes brings its blocks. */
  rc = dir_tenants_charge_move(d, old_path, new_path, why, sizeof why);
  if (rc != 0) return fail_path(err, rc, new_path, why);
  ns_record_t rec = {.type = NS_REC_RENAME, .path = old_path, .path2 = new_path};
  rc = dir_apply(d, &rec, NULL, why, sizeof why);
  return rc == 0 ? TRUE : fail_path(err, rc, old_path, why);
}

static gboolean h_exists(MayflyDirectoryIf *iface, gboolean *_return, const gchar *path,
                         MayflyError **err, GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  if (!allow(DIR_OF(iface), DIR_SEE, path, err)) return FALSE;
  char why[WHY_MAX];
  why[0] = '\0';
  int rc = ns_path_check(path, why, sizeof why);
  if (rc != 0) return fail_path(err, rc, path, why);
  *_return = ns_tree_lookup(DIR_OF(iface)->tree, path) != NULL;
  return TRUE;
}

static gboolean h_stat(MayflyDirectoryIf *iface, MayflyNodeInfo **_return, const gchar *path,
                       MayflyError **err, GError **error) {
  return h_open_ns(iface, _return, path, err, error);
}

static gboolean h_list_children(MayflyDirectoryIf *iface, GPtrArray **_return, const gchar *path,
                                MayflyError **err, GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  dir_t *d = DIR_OF(iface);
  ns_node_t *n = lookup_as(d, DIR_SEE, path, err);
  if (n == NULL) return FALSE;
  GPtrArray *kids = ns_node_sorted_children(n);
  if (kids == NULL) {
    /* Like ls(1) on a file: the listing of a leaf is the leaf itself. */
    MayflyNodeInfo *ni = g_object_new(MAYFLY_TYPE_NODE_INFO, NULL);
    fill_node(d, ni, n);
    g_ptr_array_add(*_return, ni);
    return TRUE;
  }
  int all = dir_tenants_may(d, d->call.session, DIR_READ, path);
  for (guint i = 0; i < kids->len; i++) {
    const ns_node_t *kid = g_ptr_array_index(kids, i);
    if (!all) {
      char *kp = ns_node_path(kid);
      int shown = visible(d, kp);
      g_free(kp);
      if (!shown) continue; /* another tenant's */
    }
    MayflyNodeInfo *ni = g_object_new(MAYFLY_TYPE_NODE_INFO, NULL);
    fill_node(d, ni, kid);
    g_ptr_array_add(*_return, ni);
  }
  g_ptr_array_free(kids, TRUE);
  return TRUE;
}

static gboolean h_renew(MayflyDirectoryIf *iface, MayflyRenewReply **_return,
                        const GPtrArray *paths, MayflyError **err, GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  dir_t *d = DIR_OF(iface);
  /* The caps (limits.h) refuse a longer list before it is decoded; the
   * check stays for callers that do not go through the scan. */
  if (paths->len > DIR_RENEW_MAX_PATHS) {
    char why[128];
    g_snprintf(why, sizeof why, "renew takes at most %d paths per call", DIR_RENEW_MAX_PATHS);
    return fail(err, MAYFLY_ETOOBIG, why);
  }
  /* An invalid path in a batch is a caller's bug: refuse the batch, naming it. */
  for (guint i = 0; i < paths->len; i++) {
    const char *p = g_ptr_array_index(paths, i);
    char why[WHY_MAX];
    why[0] = '\0';
    int rc = ns_path_check(p, why, sizeof why);
    if (rc != 0) return fail_path(err, rc, p, why);
    /* A renewal keeps a whole subtree alive: it is a change of it. */
    if (!allow(d, DIR_CHANGE, p, err)) return FALSE;
  }
  ns_effects_t fx;
  ns_effects_init(&fx);
  ns_record_t rec = {.type = NS_REC_RENEW,
                     .paths = (const char *const *)paths->pdata,
                     .npaths = paths->len};
  dir_apply(d, &rec, &fx, NULL, 0);
  (*_return)->lease_ms = d->cfg.lease_ms;
  for (guint i = 0; i < fx.missing->len; i++) {
    g_ptr_array_add((*_return)->missing, g_strdup(g_ptr_array_index(fx.missing, i)));
  }
  ns_effects_clear(&fx);
  return TRUE;
}

static ns_node_t *data_node(dir_t *d, dir_access_t need, const gchar *path, MayflyError **err) {
  ns_node_t *n = lookup_as(d, need, path, err);
  if (n != NULL && n->kind == NS_KIND_DIRECTORY) {
    fail_path(err, MAYFLY_EISDIR, path, "a directory has no blocks");
    return NULL;
  }
  return n;
}

/* Applies a change of a namespace's partitions and answers with the new
 * layout, or with the error. */
static gboolean change_layout(dir_t *d, ns_node_t *n, ns_record_t *rec, MayflyLayout *out,
                              MayflyError **err) {
  char why[WHY_MAX];
  why[0] = '\0';
  int rc = dir_apply(d, rec, NULL, why, sizeof why);
  if (rc != 0) return fail_path(err, rc, rec->path, why);
  fill_layout(d, out, n);
  return TRUE;
}

static gboolean h_get_layout(MayflyDirectoryIf *iface, MayflyLayout **_return, const gchar *path,
                             MayflyError **err, GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  dir_t *d = DIR_OF(iface);
  ns_node_t *n = data_node(d, DIR_READ, path, err);
  if (n == NULL) return FALSE;
  fill_layout(d, *_return, n);
  return TRUE;
}

static gboolean h_add_block(MayflyDirectoryIf *iface, MayflyLayout **_return, const gchar *path,
                            const gint64 range_lo, const gint64 range_hi,
                            const gint64 client_id, const gint64 request_seq, MayflyError **err,
                            GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  dir_t *d = DIR_OF(iface);
  ns_node_t *n = data_node(d, DIR_CHANGE, path, err);
  if (n == NULL) return FALSE;
  if (repeated(d, client_id, request_seq)) {
    fill_layout(d, *_return, n);
    return TRUE;
  }
  /* Adding a given range is idempotent: when several clients see the same
   * full segment and ask for the next one, only the first adds a block. */
  if (range_lo != 0 || range_hi != 0) {
    for (guint i = 0; i < n->layout.parts->len; i++) {
      const ns_partition_t *p = &g_array_index(n->layout.parts, ns_partition_t, i);
      if (p->lo == range_lo && p->hi == range_hi) {
        fill_layout(d, *_return, n);
        return TRUE;
      }
    }
  }
  char why[WHY_MAX];
  why[0] = '\0';
  int rc = dir_tenants_charge(d, path, ns_node_replicas(n), why, sizeof why);
  if (rc != 0) return fail_path(err, rc, path, why);
  ns_partition_t part = {0};
  char pwhy[WHY_MAX] = "";
  rc = ns_tree_plan_append_why(d->tree, n, range_lo, range_hi, &part, pwhy, sizeof pwhy);
  if (rc != 0) {
    g_snprintf(why, sizeof why, "cannot grow: %s",
               pwhy[0]                   ? pwhy
               : rc == MAYFLY_ENOSPC     ? "block pool exhausted"
               : rc == MAYFLY_ENOSERVERS ? "no memory server is up"
               : rc == MAYFLY_ENOHOSTS   ? "too few hosts for the namespace's replicas"
                                         : "invalid range");
    return fail_path(err, rc, path, why);
  }
  ns_record_t rec = {.type = NS_REC_ADD_PART, .path = path, .parts = &part, .nparts = 1};
  gboolean ok = change_layout(d, n, &rec, *_return, err);
  if (ok) {
    MF_INFO("namespace %s: grew by block %d:%d for [%lld, %lld): %u blocks, layout version %lld",
            path, part.block.server, part.block.index, (long long)part.lo, (long long)part.hi,
            n->layout.parts->len, (long long)n->layout.version);
  }
  return ok;
}

static gboolean h_remove_block(MayflyDirectoryIf *iface, MayflyLayout **_return,
                               const gchar *path, const gint32 partition,
                               const gint64 client_id, const gint64 request_seq,
                               MayflyError **err, GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  dir_t *d = DIR_OF(iface);
  ns_node_t *n = data_node(d, DIR_CHANGE, path, err);
  if (n == NULL) return FALSE;
  if (repeated(d, client_id, request_seq)) {
    fill_layout(d, *_return, n);
    return TRUE;
  }
  ns_record_t rec = {.type = NS_REC_REMOVE_PART, .path = path, .part_index = partition};
  return change_layout(d, n, &rec, *_return, err);
}

static gboolean h_release_range(MayflyDirectoryIf *iface, MayflyLayout **_return,
                                const gchar *path, const gint64 range_lo, MayflyError **err,
                                GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  dir_t *d = DIR_OF(iface);
  ns_node_t *n = data_node(d, DIR_CHANGE, path, err);
  if (n == NULL) return FALSE;
  for (guint i = 0; i < n->layout.parts->len; i++) {
    if (g_array_index(n->layout.parts, ns_partition_t, i).lo != range_lo) continue;
    if (n->layout.parts->len == 1) break; /* a namespace keeps at least one block */
    ns_record_t rec = {.type = NS_REC_REMOVE_PART, .path = path, .part_index = (int32_t)i};
    gboolean ok = change_layout(d, n, &rec, *_return, err);
    if (ok) {
      MF_INFO("namespace %s: shrank: the block of [%lld, ...) returned to the pool: %u blocks, "
              "layout version %lld",
              path, (long long)range_lo, n->layout.parts->len, (long long)n->layout.version);
    }
    return ok;
  }
  fill_layout(d, *_return, n);
  return TRUE;
}

static gboolean h_register_server(MayflyDirectoryIf *iface, MayflyRegisterReply **_return,
                                  const gchar *address, const gint32 blocks,
                                  const gint64 block_size, const gint64 gen_floor,
                                  const gint64 incarnation, const gchar *zone,
                                  MayflyError **err, GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  dir_t *d = DIR_OF(iface);
  if (!cluster_only(d, "register_server", err)) return FALSE;
  char host[DIR_HOST_MAX + 1], why[256] = "";
  int port;
  if (address == NULL || mf_parse_hostport(address, NULL, host, sizeof host, &port) != 0) {
    return fail(err, MAYFLY_EINVAL, "server address must be HOST:PORT");
  }
  if (dir_chains_check_zone(zone, why, sizeof why) != 0) return fail(err, MAYFLY_EINVAL, why);
  /* Servers in total are bounded; each one's blocks are too, by the tree
   * (NS_ALLOC_MAX_BLOCKS, 21 bytes of directory memory per block). */
  if (ns_alloc_server_by_address(d->tree->alloc, address) == NULL &&
      (int64_t)d->tree->alloc->servers->len >= d->cfg.max_servers) {
    g_snprintf(why, sizeof why,
               "cannot register %s: %u memory servers are registered, the most this directory "
               "takes (--max-servers)",
               address, d->tree->alloc->servers->len);
    MF_WARN("%s", why);
    return fail(err, MAYFLY_EQUOTA, why);
  }
  ns_effects_t fx;
  ns_effects_init(&fx);
  ns_record_t rec = {.type = NS_REC_SERVER_ADD,
                     .address = address,
                     .zone = zone != NULL ? zone : "",
                     .blocks = blocks,
                     .block_size = block_size,
                     .gen_floor = gen_floor > 0 ? gen_floor : 0,
                     .incarnation = (uint64_t)incarnation};
  int rc = dir_apply(d, &rec, &fx, why, sizeof why);
  int32_t id = fx.server_id;
  for (guint i = 0; rc == 0 && i < fx.lost->len; i++) {
    MF_WARN("namespace %s: memory server %s restarted (new incarnation %016llx): its partitions "
            "there are lost",
            (char *)g_ptr_array_index(fx.lost, i), address, (unsigned long long)incarnation);
  }
  int32_t lost_parts = fx.lost_parts;
  ns_effects_clear(&fx);
  if (rc != 0) return fail(err, rc, why);
  ns_server_t *s = ns_alloc_server(d->tree->alloc, id);
  dir_server_rt_t *rt = dir_server_rt(d, id);
  rt->last_heartbeat_ms = mf_now_ms();
  rt->needs_register = 0;
  /* The list of allocated blocks supersedes any release still queued. */
  g_array_set_size(rt->pending_release, 0);
  /* A server that registers (again) knows of no data watch yet. */
  rt->watch_sent = rt->watch_acked = 0;
  (*_return)->server_id = id;
  (*_return)->heartbeat_ms = d->cfg.heartbeat_ms;
  /* Silent this long, the server may have been dropped from its chains. */
  (*_return)->heartbeat_timeout_ms = d->cfg.heartbeat_timeout_ms;
  (*_return)->__isset_heartbeat_timeout_ms = TRUE;
  /* A lost block is not the server's to keep: its data died with an earlier
   * incarnation, and adopting it would serve it empty. */
  int32_t lost_blocks = 0;
  for (int32_t i = 0; i < s->nblocks; i++) {
    if (!s->in_use[i]) continue;
    if (ns_tree_block_lost(d->tree, id, i)) {
      lost_blocks++;
      continue;
    }
    MayflyBlockRef *br = g_object_new(MAYFLY_TYPE_BLOCK_REF, NULL);
    br->block_index = i;
    br->generation = s->generation[i];
    g_ptr_array_add((*_return)->allocated, br);
  }
  MF_INFO("memory server %s registered as id %d (zone %s): %d blocks of %lld bytes; %d of its "
          "blocks are lost (%d partitions just now)",
          address, id, zone != NULL && zone[0] ? zone : "none", blocks, (long long)block_size,
          lost_blocks, lost_parts);
  return TRUE;
}

/* The chain part of a replicated block's BlockInfo: the chain, the block's
 * place in it (-1: the copy being filled), and for the tail the copy it
 * is to fill. Members carry no capability: server-to-server frames are
 * signed with the cluster key. */
static void fill_block_chain(dir_t *d, MayflyBlockInfo *bi, const ns_partition_t *p,
                             int member) {
  fill_chain(d, bi->chain, p, NULL);
  bi->__isset_chain = TRUE;
  bi->chain_pos = member;
  bi->__isset_chain_pos = TRUE;
  bi->chain_version = p->chain_version;
  bi->__isset_chain_version = TRUE;
  if (member == p->nmore && p->copy.server != 0) {
    fill_replica(d, bi->copy_to, &p->copy, NULL);
    bi->__isset_copy_to = TRUE;
  }
  /* The tail fills the copy under copy_op, and the copy's own server takes
   * REPLICA_COPY frames of that op only. */
  if ((member == p->nmore || member == -1) && p->copy.server != 0) {
    bi->copy_op = p->copy_op;
    bi->__isset_copy_op = TRUE;
  }
}

static gboolean h_check_block(MayflyDirectoryIf *iface, MayflyBlockInfo **_return,
                              const gint32 server_id, const gint32 block_index, MayflyError **err,
                              GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  dir_t *d = DIR_OF(iface);
  if (!cluster_only(d, "check_block", err)) return FALSE;
  ns_server_t *s = ns_alloc_server(d->tree->alloc, server_id);
  if (s == NULL) return fail(err, MAYFLY_ESERVER, "unknown memory server: register again");
  if (block_index < 0 || block_index >= s->nblocks) {
    return fail(err, MAYFLY_EINVAL, "no such block index on that server");
  }
  MayflyBlockInfo *bi = *_return;
  bi->allocated = s->in_use[block_index] != 0;
  bi->generation = s->generation[block_index];
  const ns_node_t *n = s->owner[block_index];
  /* Lost: the server must answer MAYFLY_ELOST, never adopt it empty. */
  bi->lost = bi->allocated && ns_tree_block_lost(d->tree, server_id, block_index);
  bi->__isset_lost = bi->lost;
  if (bi->allocated && n != NULL) {
    bi->kind = (MayflyNodeKind)n->kind;
    g_free(bi->path);
    bi->path = ns_node_path(n);
    /* A block owned by a watched namespace (a split's new block or growth
     * included) publishes from its first request. */
    dir_evlog_t *log = dir_events_find(d->events, bi->path);
    bi->watched = log != NULL && dir_events_data_watched(log, mf_now_ms());
    ns_block_t b = {server_id, block_index, s->generation[block_index]};
    int pi = -1, member = -1;
    if (ns_node_find_block(n, &b, &pi, &member) == 0) {
      const ns_partition_t *p = &g_array_index(n->layout.parts, ns_partition_t, pi);
      bi->range_lo = p->lo;
      bi->range_hi = p->hi;
      if (p->replicas > 1) fill_block_chain(d, bi, p, member);
    }
    /* The new block of a split under way holds the slots being moved; in
     * a replicated namespace it heads the new partition's chain, whose
     * other members learn their place here too. */
    for (guint i = 0; pi < 0 && n->reparts != NULL && i < n->reparts->len; i++) {
      const ns_repart_t *r = &g_array_index(n->reparts, ns_repart_t, i);
      if (r->merge) continue;
      ns_partition_t target = {.block = r->dst,
                               .lo = r->lo,
                               .hi = r->hi,
                               .replicas = ns_node_replicas(n),
                               .nmore = r->dst_nmore};
      memcpy(target.more, r->dst_more, sizeof target.more[0] * (size_t)r->dst_nmore);
      for (int m = 0; m < ns_part_members(&target); m++) {
        const ns_block_t *tb = ns_part_member(&target, m);
        if (tb->server != server_id || tb->index != block_index) continue;
        bi->range_lo = r->lo;
        bi->range_hi = r->hi;
        if (target.replicas > 1) fill_block_chain(d, bi, &target, m);
      }
    }
    bi->high_watermark = n->high_wm;
    bi->low_watermark = n->low_wm;
  }
  return TRUE;
}

/* The data-watch check of the event-log module (events.h). */
static int armed(void *ud, dir_evlog_t *log) {
  return dir_data_armed(ud, log);
}

/* Every block of server `server_id` whose data events are wanted, as the
 * heartbeat reply lists them. */
static void add_watched_blocks(dir_t *d, int32_t server_id, GPtrArray *out) {
  GArray *blocks = g_array_new(FALSE, FALSE, sizeof(ns_block_t));
  dir_events_watched_blocks(d->events, d->tree, server_id, mf_now_ms(), blocks);
  for (guint i = 0; i < blocks->len; i++) {
    const ns_block_t *b = &g_array_index(blocks, ns_block_t, i);
    MayflyBlockRef *br = g_object_new(MAYFLY_TYPE_BLOCK_REF, NULL);
    br->block_index = b->index;
    br->generation = b->generation;
    g_ptr_array_add(out, br);
  }
  g_array_free(blocks, TRUE);
}

/* Whether a server-only call names the server's id with the incarnation
 * that registered it (0: the caller does not say). An in-memory directory
 * that restarted hands ids out afresh, so an old id may now be another
 * server's: such a caller must register again. */
static int same_incarnation(const ns_server_t *s, gint64 incarnation) {
  return incarnation == 0 || s->incarnation == 0 || s->incarnation == (uint64_t)incarnation;
}

static gboolean h_heartbeat(MayflyDirectoryIf *iface, MayflyHeartbeatReply **_return,
                            const gint32 server_id, const gint32 blocks_used,
                            const gint64 incarnation, MayflyError **err, GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  dir_t *d = DIR_OF(iface);
  if (!cluster_only(d, "heartbeat", err)) return FALSE;
  ns_server_t *s = ns_alloc_server(d->tree->alloc, server_id);
  if (s == NULL || !same_incarnation(s, incarnation)) {
    return fail(err, MAYFLY_ESERVER, "unknown memory server: register again");
  }
  dir_server_rt_t *rt = dir_server_rt(d, server_id);
  if (rt->needs_register) {
    /* Registering again reconciles the server's blocks with the recovered
     * layout: it keeps those listed and releases the rest. */
    return fail(err, MAYFLY_ESERVER, "the directory restarted: register again");
  }
  rt->last_heartbeat_ms = mf_now_ms();
  rt->blocks_used_reported = blocks_used;
  if (!s->up) {
    ns_record_t rec = {.type = NS_REC_SERVER_STATE, .server_id = server_id, .up = 1};
    dir_apply(d, &rec, NULL, NULL, 0);
    MF_INFO("memory server %s (id %d): heartbeat again, marked up", s->address, server_id);
  }
  for (guint i = 0; i < rt->pending_release->len; i++) {
    ns_block_t *b = &g_array_index(rt->pending_release, ns_block_t, i);
    MayflyBlockRef *br = g_object_new(MAYFLY_TYPE_BLOCK_REF, NULL);
    br->block_index = b->index;
    br->generation = b->generation;
    g_ptr_array_add((*_return)->release, br);
  }
  g_array_set_size(rt->pending_release, 0);
  dir_chains_take_rechain(d, server_id, (*_return)->rechain);
  (*_return)->__isset_rechain = (*_return)->rechain->len > 0;
  add_watched_blocks(d, server_id, (*_return)->watched);
  /* The server applied the previous reply before sending this heartbeat:
   * data watches begun before that reply are now in force there. */
  rt->watch_acked = rt->watch_sent;
  rt->watch_sent = d->events->data_version;
  dir_events_wake_armed(d->events, armed, d);
  return TRUE;
}

static gboolean h_servers(MayflyDirectoryIf *iface, GPtrArray **_return, MayflyError **err,
                          GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  dir_t *d = DIR_OF(iface);
  if (!allow(d, DIR_ADMIN, NULL, err)) return FALSE;
  int64_t now = mf_now_ms();
  ns_alloc_t *a = d->tree->alloc;
  for (guint i = 0; i < a->servers->len; i++) {
    ns_server_t *s = g_ptr_array_index(a->servers, i);
    MayflyServerInfo *si = g_object_new(MAYFLY_TYPE_SERVER_INFO, NULL);
    si->id = s->id;
    si->address = g_strdup(s->address);
    si->up = s->up != 0;
    si->blocks_used = s->used;
    si->blocks_total = s->nblocks;
    si->block_size = s->block_size;
    si->heartbeat_age_ms = now - dir_server_rt(d, s->id)->last_heartbeat_ms;
    si->blocks_lost = ns_tree_server_lost_blocks(d->tree, s->id);
    si->__isset_blocks_lost = TRUE;
    g_free(si->zone);
    si->zone = g_strdup(s->zone != NULL ? s->zone : "");
    g_free(si->host);
    si->host = g_strdup(s->host != NULL ? s->host : "");
    si->chains = ns_tree_server_chains(d->tree, s->id);
    si->__isset_zone = si->__isset_host = si->__isset_chains = TRUE;
    if (dir_caps_enabled(d) && dir_tenants_is_admin(d, d->call.session)) {
      uint32_t tenant = 0;
      dir_tenants_rights(d, d->call.session, "/", &tenant);
      si->stat_capability = dir_caps_stat(d, s->id, tenant);
      si->__isset_stat_capability = TRUE;
    }
    g_ptr_array_add(*_return, si);
  }
  return TRUE;
}

typedef struct {
  dir_t *dir;
  GPtrArray *out;
  int64_t now;
} lease_walk_t;

/* One row per node of the subtree, its root included, that the caller may
 * see: a node it may not see hides its whole subtree (what a tenant sees
 * is closed under taking parents), so the walk skips it. The tree's root
 * never expires: it reads as pinned, with no time left to count (-1). */
static void add_leases(ns_node_t *n, char *path, lease_walk_t *w) {
  if (!visible(w->dir, path)) {
    g_free(path);
    return;
  }
  MayflyLeaseInfo *li = g_object_new(MAYFLY_TYPE_LEASE_INFO, NULL);
  li->path = path;
  li->kind = (MayflyNodeKind)n->kind;
  li->lease_ms = ns_node_lease_ms(w->dir->tree, n);
  li->remaining_ms = ns_node_remaining_ms(w->dir->tree, n, w->now);
  li->pinned = n->parent == NULL || (n->flags & NS_FLAG_PINNED) != 0;
  g_ptr_array_add(w->out, li);
  GPtrArray *kids = ns_node_sorted_children(n);
  for (guint i = 0; kids != NULL && i < kids->len; i++) {
    ns_node_t *c = g_ptr_array_index(kids, i);
    add_leases(c, ns_node_path(c), w);
  }
  if (kids != NULL) g_ptr_array_free(kids, TRUE);
}

static gboolean h_leases(MayflyDirectoryIf *iface, GPtrArray **_return, const gchar *path,
                         MayflyError **err, GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  dir_t *d = DIR_OF(iface);
  const char *at = (path == NULL || path[0] == '\0') ? "/" : path;
  ns_node_t *n = lookup_as(d, DIR_SEE, at, err);
  if (n == NULL) return FALSE;
  lease_walk_t w = {d, *_return, mf_now_ms()};
  add_leases(n, ns_node_path(n), &w);
  return TRUE;
}

static void add_strings(GPtrArray *out, char *const *v) {
  for (; *v != NULL; v++) g_ptr_array_add(out, g_strdup(*v));
}

/* TenantInfo of every tenant (only, when not NULL, of `only`). */
static void add_tenants(dir_t *d, GPtrArray *out, const dir_tenant_t *only) {
  for (guint i = 0; i < d->tenants->list->len; i++) {
    const dir_tenant_t *t = g_ptr_array_index(d->tenants->list, i);
    if (only != NULL && t != only) continue;
    MayflyTenantInfo *ti = g_object_new(MAYFLY_TYPE_TENANT_INFO, NULL);
    ti->name = g_strdup(t->name);
    add_strings(ti->prefixes, t->prefixes);
    add_strings(ti->read_prefixes, t->read_prefixes);
    ti->max_blocks = t->max_blocks;
    dir_tenants_usage(d, t, &ti->blocks_used, &ti->namespaces);
    ti->admin = t->admin != 0;
    g_ptr_array_add(out, ti);
  }
}

static gboolean h_stats(MayflyDirectoryIf *iface, MayflyStats **_return, MayflyError **err,
                        GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  dir_t *d = DIR_OF(iface);
  if (!allow(d, DIR_ADMIN, NULL, err)) return FALSE;
  MayflyStats *s = *_return;
  ns_alloc_t *a = d->tree->alloc;
  s->nodes = ns_tree_count(d->tree);
  s->directories = d->tree->n_dirs;
  s->namespaces = d->tree->n_leaves;
  s->servers = (gint32)a->servers->len;
  s->servers_up = 0;
  for (guint i = 0; i < a->servers->len; i++) {
    s->servers_up += ((ns_server_t *)g_ptr_array_index(a->servers, i))->up;
  }
  s->blocks_total = a->blocks_total;
  s->blocks_used = a->blocks_used;
  s->expired_total = d->tree->n_expired;
  s->uptime_ms = mf_now_ms() - d->started_ms;
  s->connections = (gint64)d->connections_open;
  s->requests = (gint64)d->requests;
  s->lease_ms = d->cfg.lease_ms;
  s->grace_ms = d->cfg.grace_ms;
  s->splits = d->splits;
  s->merges = d->merges;
  s->rollbacks = d->rollbacks;
  s->bytes_moved = d->bytes_moved;
  s->move_ms = d->move_ms;
  s->move_ms_max = d->move_ms_max;
  s->chain_failovers = d->chain_failovers;
  s->rereplications = d->rereplications;
  s->rereplicated_bytes = d->rereplicated_bytes;
  s->partitions_degraded = dir_chains_degraded(d);
  s->__isset_chain_failovers = s->__isset_rereplications = TRUE;
  s->__isset_rereplicated_bytes = s->__isset_partitions_degraded = TRUE;
  if (d->store != NULL) {
    dir_store_stats_t st;
    dir_store_stats(d->store, &st);
    s->durable = TRUE;
    s->log_records = st.log_records;
    s->log_bytes = st.log_bytes;
    s->log_fsyncs = st.log_fsyncs;
    s->snapshots = st.snapshots;
    s->last_snapshot_ms = st.last_snapshot_ms;
    s->recovery_ms = st.recovery_ms;
    s->recovered_records = st.recovered_records;
    s->log_seq = st.seq;
    s->__isset_durable = s->__isset_log_records = s->__isset_log_bytes = TRUE;
    s->__isset_log_fsyncs = s->__isset_snapshots = s->__isset_last_snapshot_ms = TRUE;
    s->__isset_recovery_ms = s->__isset_recovered_records = s->__isset_log_seq = TRUE;
  }
  if (d->tenants != NULL) {
    add_tenants(d, s->tenants, NULL);
    s->__isset_tenants = TRUE;
  }
  return TRUE;
}


static gboolean h_repartition_begin(MayflyDirectoryIf *iface, MayflyRepartPlan **_return,
                                    const gint32 server_id, const gint32 block_index,
                                    const gint64 generation, const gboolean merge,
                                    const gint64 split_at, MayflyError **err, GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  dir_t *d = DIR_OF(iface);
  if (!cluster_only(d, "repartition_begin", err)) return FALSE;
  char why[WHY_MAX];
  why[0] = '\0';
  if (dir_tenants_charge_split(d, server_id, block_index, merge, why, sizeof why) != 0) {
    return fail(err, MAYFLY_EQUOTA, why); /* a split takes a block: tenant quotas (tenants.h) */
  }
  dir_repart_plan_t plan;
  int rc = dir_repart_begin(d, server_id, block_index, generation, merge, split_at, &plan, why,
                            sizeof why);
  if (rc != 0) return fail(err, rc, why);
  (*_return)->op_id = plan.op_id;
  (*_return)->lo = plan.lo;
  (*_return)->hi = plan.hi;
  /* The target's partition carries no capability: the asking server moves
   * the slots with the migrate capability, which covers only them. */
  fill_partition(d, (*_return)->target, &plan.target, NULL);
  (*_return)->migrate_capability =
      dir_caps_migrate(d, &plan.target.block, plan.lo, plan.hi, plan.op_id);
  (*_return)->__isset_migrate_capability = (*_return)->migrate_capability != NULL;
  return TRUE;
}

static gboolean h_repartition_end(MayflyDirectoryIf *iface, MayflyLayout **_return,
                                  const gint32 server_id, const gint64 op_id,
                                  const gboolean commit, const gint64 bytes_moved,
                                  MayflyError **err, GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  dir_t *d = DIR_OF(iface);
  if (!cluster_only(d, "repartition_end", err)) return FALSE;
  char why[WHY_MAX];
  why[0] = '\0';
  ns_node_t *n = NULL;
  int rc = dir_repart_end(d, server_id, op_id, commit, bytes_moved, &n, why, sizeof why);
  if (rc != 0) return fail(err, rc, why);
  fill_layout(d, *_return, n);
  return TRUE;
}

static gboolean h_replica_end(MayflyDirectoryIf *iface, MayflyLayout **_return,
                              const gint32 server_id, const gint64 op_id, const gboolean commit,
                              const gint64 bytes, MayflyError **err, GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  dir_t *d = DIR_OF(iface);
  if (!cluster_only(d, "replica_end", err)) return FALSE;
  char why[WHY_MAX];
  why[0] = '\0';
  ns_node_t *n = NULL;
  int rc = dir_chains_replica_end(d, server_id, op_id, commit, bytes, &n, why, sizeof why);
  if (rc != 0) return fail(err, rc, why);
  fill_layout(d, *_return, n);
  return TRUE;
}

static gboolean h_truncate(MayflyDirectoryIf *iface, MayflyLayout **_return, const gchar *path,
                           const gint64 size, MayflyError **err, GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  dir_t *d = DIR_OF(iface);
  ns_node_t *n = data_node(d, DIR_CHANGE, path, err);
  if (n == NULL) return FALSE;
  ns_effects_t fx;
  ns_effects_init(&fx);
  char why[WHY_MAX];
  why[0] = '\0';
  ns_record_t rec = {.type = NS_REC_TRUNCATE, .path = path, .lo = size};
  int rc = dir_apply(d, &rec, &fx, why, sizeof why);
  if (rc == 0 && fx.freed->len > 0) {
    MF_INFO("namespace %s: truncated to %lld bytes, %u blocks returned to the pool", path,
            (long long)size, fx.freed->len);
  }
  ns_effects_clear(&fx);
  if (rc != 0) return fail_path(err, rc, path, why);
  fill_layout(d, *_return, n);
  return TRUE;
}

/* --- notifications: the event-log module (directory/events.h) decides --- */

static void add_event(GPtrArray *out, const dir_event_t *e) {
  MayflyEvent *me = g_object_new(MAYFLY_TYPE_EVENT, NULL);
  me->seq = e->seq;
  g_free(me->path);
  me->path = g_strdup(e->path);
  me->kind = (MayflyEventKind)e->kind;
  if (e->key != NULL) {
    g_free(me->key);
    me->key = g_strdup(e->key);
  }
  me->offset = e->offset;
  me->length = e->length;
  me->time_ms = e->time_ms;
  g_ptr_array_add(out, me);
}

static gboolean h_watch(MayflyDirectoryIf *iface, MayflyWatchReply **_return, const gchar *path,
                        const gint32 mask, const gint64 epoch, const gint64 after_seq,
                        const gint32 max, const gint32 timeout_ms, MayflyError **err,
                        GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  dir_t *d = DIR_OF(iface);
  if (!allow(d, DIR_READ, path, err)) return FALSE;
  char why[WHY_MAX];
  why[0] = '\0';
  dir_watch_req_t req = {.path = path,
                         .mask = (uint32_t)mask,
                         .epoch = epoch,
                         .after_seq = after_seq,
                         .max = max,
                         .timeout_ms = timeout_ms,
                         .can_defer = d->call.can_defer && !d->call.last_chance,
                         .armed = armed,
                         .armed_ud = d};
  dir_watch_res_t res = {.events = g_array_new(FALSE, FALSE, sizeof(dir_event_t))};
  int rc = dir_events_watch(d->events, d->tree, &req, mf_now_ms(), &res, why, sizeof why);
  if (rc == 0 && res.defer_log != NULL) {
    /* No answer now: the server runs the request again (dir_call_t). */
    d->call.defer_log = res.defer_log;
    d->call.defer_ms = res.defer_ms;
  } else if (rc == 0) {
    (*_return)->epoch = res.epoch;
    (*_return)->last_seq = res.last_seq;
    for (guint i = 0; i < res.events->len; i++) {
      add_event((*_return)->events, &g_array_index(res.events, dir_event_t, i));
    }
  }
  g_array_free(res.events, TRUE);
  return rc == 0 ? TRUE : fail_path(err, rc, path, why);
}

static gboolean h_publish(MayflyDirectoryIf *iface, const gint32 server_id,
                          const GPtrArray *events, const gint64 incarnation, MayflyError **err,
                          GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  dir_t *d = DIR_OF(iface);
  if (!cluster_only(d, "publish", err)) return FALSE;
  const ns_server_t *srv = ns_alloc_server(d->tree->alloc, server_id);
  if (srv != NULL && !same_incarnation(srv, incarnation)) {
    return fail(err, MAYFLY_ESERVER, "unknown memory server: register again");
  }
  char why[160];
  why[0] = '\0';
  dir_data_event_t *evs = g_new(dir_data_event_t, events->len ? events->len : 1);
  for (guint i = 0; i < events->len; i++) {
    const MayflyDataEvent *e = g_ptr_array_index(events, i);
    evs[i] = (dir_data_event_t){.block_index = e->block_index,
                                .generation = e->generation,
                                .kind = (int)e->kind,
                                .key = e->key,
                                .offset = e->offset,
                                .length = e->length,
                                .chain_seq = e->__isset_chain_seq ? e->chain_seq : 0};
  }
  int rc = dir_events_publish(d->events, d->tree->alloc, server_id, evs, events->len,
                              mf_wall_ms(), why, sizeof why);
  g_free(evs);
  return rc == 0 ? TRUE : fail(err, rc, why);
}

/* Authentication (tenants.h). Without --tenants the directory is open:
 * every connection may do everything, and a login says so. */
static gboolean h_login(MayflyDirectoryIf *iface, MayflySession **_return, const gchar *token,
                        MayflyError **err, GError **error) {
  dir_t *d = DIR_OF(iface);
  char why[WHY_MAX];
  why[0] = '\0';
  const dir_tenant_t *t = NULL;
  int rc = dir_tenants_login(d, d->call.session, token, &t, why, sizeof why);
  if (rc != 0) return fail(err, rc, why);
  MayflySession *s = *_return;
  s->open = t == NULL;
  s->admin = t == NULL || t->admin;
  g_free(s->tenant);
  s->tenant = g_strdup(t != NULL ? t->name : "");
  if (t != NULL) {
    add_strings(s->prefixes, t->prefixes);
    add_strings(s->read_prefixes, t->read_prefixes);
  }
  return TRUE;
}

/* The cluster handshake (caps.h). */
static gboolean h_cluster_challenge(MayflyDirectoryIf *iface, gchar **_return,
                                    MayflyError **err, GError **error) {
  dir_t *d = DIR_OF(iface);
  char why[128] = "";
  gchar *hex = NULL;
  int rc = dir_caps_challenge(d, d->call.session, &hex, why, sizeof why);
  if (rc != 0) return fail(err, rc, why);
  g_free(*_return);
  *_return = hex;
  return TRUE;
}

static gboolean h_cluster_auth(MayflyDirectoryIf *iface, gchar **_return,
                               const gchar *client_nonce, const gchar *proof,
                               MayflyError **err, GError **error) {
  dir_t *d = DIR_OF(iface);
  char why[128] = "";
  gchar *hex = NULL;
  int rc = dir_caps_auth(d, d->call.session, client_nonce, proof, &hex, why, sizeof why);
  if (rc != 0) return fail(err, rc, why);
  g_free(*_return);
  *_return = hex;
  return TRUE;
}

/* Admins see every tenant, others their own; without --tenants there are
 * none to list. */
static gboolean h_tenants(MayflyDirectoryIf *iface, GPtrArray **_return, MayflyError **err,
                          GError **error) {
  if (!leading(DIR_OF(iface), err)) return FALSE;
  dir_t *d = DIR_OF(iface);
  if (d->tenants == NULL) return TRUE;
  if (!allow(d, DIR_SEE, "/", err)) return FALSE; /* logged in as a tenant still configured */
  add_tenants(d, *_return,
              dir_tenants_is_admin(d, d->call.session) ? NULL
                                                       : dir_tenants_of(d, d->call.session));
  return TRUE;
}

/* The directory service's replicas: without --etcd, this directory alone. */
static gboolean h_cluster(MayflyDirectoryIf *iface, MayflyClusterInfo **_return,
                          MayflyError **err, GError **error) {
  dir_t *d = DIR_OF(iface);
  MayflyClusterInfo *o = *_return;
  const char *self = d->advertise != NULL ? d->advertise : "";
  g_free(o->answered_by);
  o->answered_by = g_strdup(self);
  if (d->ha != NULL) {
    dir_ha_cluster(d->ha, o);
    return TRUE;
  }
  g_free(o->leader);
  o->leader = g_strdup(self);
  MayflyDirectoryMember *m = g_object_new(MAYFLY_TYPE_DIRECTORY_MEMBER, NULL);
  g_free(m->address);
  m->address = g_strdup(self);
  g_free(m->role);
  m->role = g_strdup("single");
  dir_store_stats_t st = {0};
  if (d->store != NULL) dir_store_stats(d->store, &st);
  m->applied_seq = st.seq;
  m->updated_ms = mf_wall_ms();
  g_ptr_array_add(o->members, m);
  o->committed_seq = st.seq;
  return TRUE;
}

static void dir_handler_class_init(DirHandlerClass *cls) {
  MayflyDirectoryHandlerClass *h = MAYFLY_DIRECTORY_HANDLER_CLASS(cls);
  h->mkdir = h_mkdir;
  h->create_ns = h_create_ns;
  h->open_ns = h_open_ns;
  h->open_or_create = h_open_or_create;
  h->remove = h_remove;
  h->rename = h_rename;
  h->exists = h_exists;
  h->stat = h_stat;
  h->list_children = h_list_children;
  h->renew = h_renew;
  h->get_layout = h_get_layout;
  h->add_block = h_add_block;
  h->remove_block = h_remove_block;
  h->register_server = h_register_server;
  h->heartbeat = h_heartbeat;
  h->check_block = h_check_block;
  h->release_range = h_release_range;
  h->servers = h_servers;
  h->leases = h_leases;
  h->stats = h_stats;
  h->repartition_begin = h_repartition_begin;
  h->repartition_end = h_repartition_end;
  h->replica_end = h_replica_end;
  h->truncate = h_truncate;
  h->watch = h_watch;
  h->publish = h_publish;
  h->login = h_login;
  h->cluster_challenge = h_cluster_challenge;
  h->cluster_auth = h_cluster_auth;
  h->tenants = h_tenants;
  h->cluster = h_cluster;
}

static void dir_handler_init(DirHandler *self) {
}

MayflyDirectoryHandler *dir_handler_new(dir_t *d) {
  DirHandler *h = g_object_new(dir_handler_get_type(), NULL);
  h->dir = d;
  return MAYFLY_DIRECTORY_HANDLER(h);
}
