/*
 * The namespace tree and its single mutation entry point, ns_tree_apply()
 * (see tree.h). Lease queries and the reaper are in lease.c.
 */
#include "namespaces/tree.h"

#include <stdio.h>
#include <string.h>

#include "common/error.h"
#include "namespaces/path.h"

#define WHY(...)                                         \
  do {                                                   \
    if (why != NULL) snprintf(why, whylen, __VA_ARGS__); \
  } while (0)

static const char *const kind_names[] = {"directory", "file", "queue", "kv"};

const char *ns_kind_name(ns_kind_t k) {
  return (unsigned)k < 4 ? kind_names[k] : "unknown";
}

int ns_kind_parse(const char *s, ns_kind_t *out) {
  for (int i = 0; i < 4; i++) {
    if (s != NULL && strcmp(s, kind_names[i]) == 0) {
      *out = (ns_kind_t)i;
      return 0;
    }
  }
  return MAYFLY_EINVAL;
}

void ns_effects_init(ns_effects_t *fx) {
  fx->freed = g_array_new(FALSE, FALSE, sizeof(ns_block_t));
  fx->rechain = g_array_new(FALSE, FALSE, sizeof(ns_block_t));
  fx->removed = g_ptr_array_new_with_free_func(g_free);
  fx->missing = g_ptr_array_new_with_free_func(g_free);
  fx->lost = g_ptr_array_new_with_free_func(g_free);
  fx->server_id = 0;
  fx->lost_parts = 0;
}

void ns_effects_clear(ns_effects_t *fx) {
  if (fx == NULL) return;
  if (fx->freed) g_array_free(fx->freed, TRUE);
  if (fx->rechain) g_array_free(fx->rechain, TRUE);
  if (fx->removed) g_ptr_array_free(fx->removed, TRUE);
  if (fx->missing) g_ptr_array_free(fx->missing, TRUE);
  if (fx->lost) g_ptr_array_free(fx->lost, TRUE);
  fx->freed = NULL;
  fx->rechain = NULL;
  fx->removed = NULL;
  fx->missing = NULL;
  fx->lost = NULL;
}

static void node_free(ns_node_t *n);

static ns_node_t *node_new(const char *name, ns_kind_t kind, int64_t now_ms, int64_t wall_ms) {
  ns_node_t *n = g_new0(ns_node_t, 1);
  n->name = g_strdup(name);
  n->kind = kind;
  n->created_wall_ms = wall_ms;
  n->renewed_ms = now_ms;
  n->subtree_ms = now_ms;
  if (kind == NS_KIND_DIRECTORY) {
    n->children = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, (GDestroyNotify)node_free);
  } else {
    n->layout.parts = g_array_new(FALSE, FALSE, sizeof(ns_partition_t));
  }
  return n;
}

ns_node_t *ns__node_new(const char *name, ns_kind_t kind, int64_t now_ms, int64_t wall_ms) {
  return node_new(name, kind, now_ms, wall_ms);
}

/* Frees a node and its subtree. Blocks must have been released already. */
static void node_free(ns_node_t *n) {
  if (n == NULL) return;
  if (n->children) g_hash_table_destroy(n->children);
  if (n->tags) g_hash_table_destroy(n->tags);
  if (n->layout.parts) g_array_free(n->layout.parts, TRUE);
  if (n->reparts) g_array_free(n->reparts, TRUE);
  g_free(n->name);
  g_free(n);
}

ns_tree_t *ns_tree_new(int64_t default_lease_ms, int64_t grace_ms) {
  ns_tree_t *t = g_new0(ns_tree_t, 1);
  t->root = node_new("", NS_KIND_DIRECTORY, 0, 0);
  t->root->flags = NS_FLAG_PINNED;
  t->alloc = ns_alloc_new();
  t->default_lease_ms = default_lease_ms;
  t->grace_ms = grace_ms;
  t->requests = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, g_free);
  return t;
}

void ns_tree_free(ns_tree_t *t) {
  if (t == NULL) return;
  node_free(t->root);
  ns_alloc_free(t->alloc);
  g_hash_table_destroy(t->requests);
  g_free(t);
}

/* Walks a valid path; returns the node, or NULL with *fail set to the first
 * component that does not exist (ENOENT) or is not a directory (ENOTDIR). */
static ns_node_t *walk(const ns_tree_t *t, const char *path, int *fail) {
  ns_node_t *n = t->root;
  const char *c = path + 1;
  char name[NS_NAME_MAX + 1];
  *fail = 0;
  while (*c != '\0') {
    const char *end = strchr(c, '/');
    size_t len = end ? (size_t)(end - c) : strlen(c);
    if (n->kind != NS_KIND_DIRECTORY) {
      *fail = MAYFLY_ENOTDIR;
      return NULL;
    }
    memcpy(name, c, len);
    name[len] = '\0';
    n = g_hash_table_lookup(n->children, name);
    if (n == NULL) {
      *fail = MAYFLY_ENOENT;
      return NULL;
    }
    if (end == NULL) break;
    c = end + 1;
  }
  return n;
}

ns_node_t *ns_tree_lookup(const ns_tree_t *t, const char *path) {
  int fail;
  if (ns_path_check(path, NULL, 0) != 0) return NULL;
  return walk(t, path, &fail);
}

char *ns_node_path(const ns_node_t *n) {
  if (n->parent == NULL) return g_strdup("/");
  GPtrArray *parts = g_ptr_array_new();
  for (const ns_node_t *p = n; p->parent != NULL; p = p->parent) g_ptr_array_add(parts, p->name);
  GString *s = g_string_new(NULL);
  for (guint i = parts->len; i-- > 0;) {
    g_string_append_c(s, '/');
    g_string_append(s, g_ptr_array_index(parts, i));
  }
  g_ptr_array_free(parts, TRUE);
  return g_string_free(s, FALSE);
}

static gint cmp_node_name(gconstpointer a, gconstpointer b) {
  const ns_node_t *x = *(ns_node_t *const *)a, *y = *(ns_node_t *const *)b;
  return strcmp(x->name, y->name);
}

GPtrArray *ns_node_sorted_children(const ns_node_t *n) {
  if (n->children == NULL) return NULL;
  GPtrArray *out = g_ptr_array_sized_new(g_hash_table_size(n->children));
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, n->children);
  while (g_hash_table_iter_next(&it, NULL, &v)) g_ptr_array_add(out, v);
  g_ptr_array_sort(out, cmp_node_name);
  return out;
}

void ns_tree_walk(ns_node_t *n, ns_walk_cb cb, void *ud) {
  cb(n, ud);
  GPtrArray *kids = ns_node_sorted_children(n);
  if (kids == NULL) return;
  for (guint i = 0; i < kids->len; i++) ns_tree_walk(g_ptr_array_index(kids, i), cb, ud);
  g_ptr_array_free(kids, TRUE);
}

int64_t ns_tree_count(const ns_tree_t *t) {
  return t->n_dirs + t->n_leaves;
}

static void count_node(ns_tree_t *t, const ns_node_t *n, int delta) {
  if (n->kind == NS_KIND_DIRECTORY) {
    t->n_dirs += delta;
  } else {
    t->n_leaves += delta;
  }
}

/* Validates the path of a record and finds its parent directory. */
static int parent_of(ns_tree_t *t, const char *path, ns_node_t **parent, char *why,
                     size_t whylen) {
  int rc = ns_path_check(path, why, whylen);
  if (rc != 0) return rc;
  if (strcmp(path, "/") == 0) {
    WHY("the root cannot be changed");
    return MAYFLY_EPERM;
  }
  char *pp = ns_path_parent(path);
  int fail;
  *parent = walk(t, pp, &fail);
  if (*parent == NULL) {
    WHY(fail == MAYFLY_ENOTDIR ? "%s: a component is not a directory"
                               : "%s: parent directory does not exist",
        pp);
    g_free(pp);
    return fail;
  }
  g_free(pp);
  if ((*parent)->kind != NS_KIND_DIRECTORY) {
    WHY("parent is a %s namespace, not a directory", ns_kind_name((*parent)->kind));
    return MAYFLY_ENOTDIR;
  }
  return 0;
}

/* Adds to the subtree counts of n and of every ancestor. */
static void add_up(ns_node_t *n, int64_t blocks, int64_t leaves) {
  for (; n != NULL; n = n->parent) {
    n->sub_blocks += blocks;
    n->sub_leaves += leaves;
  }
}

static ns_node_t *link_child(ns_tree_t *t, ns_node_t *parent, ns_node_t *child) {
  child->parent = parent;
  g_hash_table_insert(parent->children, child->name, child);
  count_node(t, child, 1);
  add_up(parent, child->sub_blocks, child->sub_leaves);
  return child;
}

/* Creates every missing directory on the way to `path`'s parent. */
static int make_parents(ns_tree_t *t, const char *path, const ns_record_t *rec, char *why,
                        size_t whylen) {
  ns_node_t *n = t->root;
  const char *c = path + 1;
  char name[NS_NAME_MAX + 1];
  for (const char *end; (end = strchr(c, '/')) != NULL; c = end + 1) {
    size_t len = (size_t)(end - c);
    memcpy(name, c, len);
    name[len] = '\0';
    ns_node_t *next = g_hash_table_lookup(n->children, name);
    if (next == NULL) {
      next = link_child(t, n, node_new(name, NS_KIND_DIRECTORY, rec->now_ms, rec->wall_ms));
    } else if (next->kind != NS_KIND_DIRECTORY) {
      WHY("%s is a %s namespace, not a directory", name, ns_kind_name(next->kind));
      return MAYFLY_ENOTDIR;
    }
    n = next;
  }
  return 0;
}

static int apply_mkdir(ns_tree_t *t, const ns_record_t *rec, char *why, size_t whylen) {
  int rc = ns_path_check(rec->path, why, whylen);
  if (rc != 0) return rc;
  ns_node_t *existing = ns_tree_lookup(t, rec->path);
  if (existing != NULL) {
    if ((rec->flags & NS_REC_PARENTS) && existing->kind == NS_KIND_DIRECTORY) return 0;
    WHY("%s already exists", existing->kind == NS_KIND_DIRECTORY ? "directory" : "a namespace");
    return MAYFLY_EEXIST;
  }
  if (rec->flags & NS_REC_PARENTS) {
    rc = make_parents(t, rec->path, rec, why, whylen);
    if (rc != 0) return rc;
  }
  ns_node_t *parent;
  rc = parent_of(t, rec->path, &parent, why, whylen);
  if (rc != 0) return rc;
  link_child(t, parent,
             node_new(ns_path_basename(rec->path), NS_KIND_DIRECTORY, rec->now_ms, rec->wall_ms));
  return 0;
}

static int check_tags(GHashTable *tags, char *why, size_t whylen) {
  if (tags == NULL) return 0;
  if (g_hash_table_size(tags) > NS_TAGS_MAX) {
    WHY("more than %d tags", NS_TAGS_MAX);
    return MAYFLY_EINVAL;
  }
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, tags);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    if (k == NULL || v == NULL || strlen(k) == 0 || strlen(k) > NS_TAG_KEY_MAX ||
        strlen(v) > NS_TAG_VALUE_MAX) {
      WHY("tag keys must be 1-%d bytes and values at most %d bytes", NS_TAG_KEY_MAX,
          NS_TAG_VALUE_MAX);
      return MAYFLY_EINVAL;
    }
  }
  return 0;
}

int32_t ns_node_replicas(const ns_node_t *n) {
  return n->replicas > 0 ? n->replicas : 1;
}

/* Blocks a partition holds: its members and its copy. */
static int64_t part_blocks(const ns_partition_t *p) {
  return ns_part_members(p) + (p->copy.server != 0);
}

/* Checks the chain of a partition a record brings for a namespace of
 * `replicas`: 1 to replicas members. */
static int check_chain(const ns_partition_t *p, int32_t replicas, char *why, size_t whylen) {
  if (p->nmore < 0 || p->nmore + 1 > replicas) {
    WHY("a partition of a namespace with %d replicas has 1 to %d blocks, not %d", replicas,
        replicas, p->nmore + 1);
    return MAYFLY_EINVAL;
  }
  return 0;
}

/* Takes every member block of the chains of parts (a record's copy blocks
 * are ignored), undoing the ones taken if one fails. */
static int take_parts(ns_tree_t *t, const ns_partition_t *parts, size_t n, char *why,
                      size_t whylen) {
  for (size_t i = 0; i < n; i++) {
    for (int m = 0; m < ns_part_members(&parts[i]); m++) {
      const ns_block_t *b = ns_part_member(&parts[i], m);
      int rc = ns_alloc_take(t->alloc, b);
      if (rc == 0) continue;
      /* Undo in reverse so the free stacks end up exactly as they were. */
      for (int k = m; k-- > 0;) ns__alloc_untake(t->alloc, ns_part_member(&parts[i], k));
      for (size_t j = i; j-- > 0;) {
        for (int k = ns_part_members(&parts[j]); k-- > 0;) {
          ns__alloc_untake(t->alloc, ns_part_member(&parts[j], k));
        }
      }
      WHY("block %d:%d (generation %lld) cannot be taken: %s", b->server, b->index,
          (long long)b->generation, mayfly_strerror(rc));
      return rc;
    }
  }
  return 0;
}

/* Records n as the holder of every block of p (members and copy). */
static void own_part(ns_tree_t *t, const ns_partition_t *p, ns_node_t *n) {
  for (int m = 0; m < ns_part_members(p); m++) ns_alloc_set_owner(t->alloc, ns_part_member(p, m), n);
  if (p->copy.server != 0) ns_alloc_set_owner(t->alloc, &p->copy, n);
}

/* Frees one block into fx->freed. */
static void free_block(ns_tree_t *t, const ns_block_t *b, ns_effects_t *fx) {
  if (ns_alloc_release(t->alloc, b) == 0 && fx != NULL) g_array_append_val(fx->freed, *b);
}

/* Frees every block of p: its members and its copy. */
static void free_part(ns_tree_t *t, const ns_partition_t *p, ns_effects_t *fx) {
  for (int m = 0; m < ns_part_members(p); m++) free_block(t, ns_part_member(p, m), fx);
  if (p->copy.server != 0) free_block(t, &p->copy, fx);
}

/* Tells fx that p's chain changed: every member and the copy block. */
static void rechain_part(const ns_partition_t *p, ns_effects_t *fx) {
  if (fx == NULL) return;
  for (int m = 0; m < ns_part_members(p); m++) g_array_append_val(fx->rechain, *ns_part_member(p, m));
  if (p->copy.server != 0) g_array_append_val(fx->rechain, p->copy);
}

/* A partition as a record brings it, as the layout keeps it: live, the
 * namespace's replicas, chain version 1, no copy. */
static void settle_part(ns_partition_t *p, int32_t replicas) {
  p->state = NS_PART_LIVE;
  p->replicas = replicas;
  p->chain_version = 1;
  p->copy = (ns_block_t){0};
  p->copy_op = 0;
  for (int m = p->nmore; m < NS_CHAIN_MAX - 1; m++) p->more[m] = (ns_block_t){0};
}

static int apply_create(ns_tree_t *t, const ns_record_t *rec, char *why, size_t whylen) {
  int rc = ns_path_check(rec->path, why, whylen);
  if (rc != 0) return rc;
  if (rec->kind == NS_KIND_DIRECTORY || (unsigned)rec->kind > NS_KIND_KV) {
    WHY("create makes file, queue or kv namespaces; use mkdir for directories");
    return MAYFLY_EINVAL;
  }
  if (rec->lease_ms < 0 || rec->lease_ms > NS_LEASE_MAX_MS) {
    WHY("lease must be between 0 (the default) and %lld ms", (long long)NS_LEASE_MAX_MS);
    return MAYFLY_EINVAL;
  }
  if (rec->nparts > NS_CREATE_BLOCKS_MAX) {
    WHY("at most %d blocks at creation", NS_CREATE_BLOCKS_MAX);
    return MAYFLY_EINVAL;
  }
  if (rec->max_blocks < 0 || (rec->max_blocks > 0 && rec->nparts > (size_t)rec->max_blocks)) {
    WHY("max_blocks must be 0 (no limit) or at least the initial blocks (%zu)", rec->nparts);
    return MAYFLY_EINVAL;
  }
  int32_t high = rec->high_wm > 0 ? rec->high_wm : NS_HIGH_WM_DEFAULT;
  int32_t low = rec->low_wm > 0 ? rec->low_wm : NS_LOW_WM_DEFAULT;
  if (rec->high_wm < 0 || rec->high_wm > 100 || rec->low_wm < 0 || rec->low_wm > 100 ||
      low * 2 > high) {
    WHY("watermarks are %% of a block (1-100, 0 = default) and the low one at most half the high");
    return MAYFLY_EINVAL;
  }
  rc = check_tags(rec->tags, why, whylen);
  if (rc != 0) return rc;
  if (rec->replicas < 0 || rec->replicas > NS_CHAIN_MAX) {
    WHY("replicas must be 1 to %d (0 = 1)", NS_CHAIN_MAX);
    return MAYFLY_EINVAL;
  }
  int32_t replicas = rec->replicas > 0 ? rec->replicas : 1;
  for (size_t i = 0; i < rec->nparts; i++) {
    if ((rc = check_chain(&rec->parts[i], replicas, why, whylen)) != 0) return rc;
  }
  if (ns_tree_lookup(t, rec->path) != NULL) {
    WHY("already exists");
    return MAYFLY_EEXIST;
  }
  /* Check everything that can fail before changing anything. */
  ns_node_t *parent = NULL;
  rc = parent_of(t, rec->path, &parent, NULL, 0);
  if (rc == MAYFLY_ENOENT) {
    /* Missing parents are created (like mkdir -p); check the way is clear. */
    char *pp = ns_path_parent(rec->path);
    for (ns_node_t *n = NULL; n == NULL && strcmp(pp, "/") != 0;) {
      n = ns_tree_lookup(t, pp);
      if (n != NULL && n->kind != NS_KIND_DIRECTORY) {
        WHY("%s is a %s namespace, not a directory", pp, ns_kind_name(n->kind));
        g_free(pp);
        return MAYFLY_ENOTDIR;
      }
      char *up = ns_path_parent(pp);
      g_free(pp);
      pp = up;
    }
    g_free(pp);
  } else if (rc != 0) {
    return parent_of(t, rec->path, &parent, why, whylen);
  }
  rc = take_parts(t, rec->parts, rec->nparts, why, whylen);
  if (rc != 0) return rc;
  if (parent == NULL) {
    make_parents(t, rec->path, rec, NULL, 0);
    parent_of(t, rec->path, &parent, NULL, 0);
  }
  ns_node_t *n = node_new(ns_path_basename(rec->path), rec->kind, rec->now_ms, rec->wall_ms);
  n->lease_ms = rec->lease_ms;
  n->flags = rec->node_flags & NS_FLAG_PINNED;
  n->max_blocks = rec->max_blocks;
  n->initial_blocks = (int32_t)rec->nparts;
  n->high_wm = rec->high_wm;
  n->low_wm = rec->low_wm;
  n->replicas = replicas;
  if (rec->tags != NULL && g_hash_table_size(rec->tags) > 0) {
    n->tags = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, rec->tags);
    while (g_hash_table_iter_next(&it, &k, &v)) {
      g_hash_table_insert(n->tags, g_strdup(k), g_strdup(v));
    }
  }
  g_array_append_vals(n->layout.parts, rec->parts, (guint)rec->nparts);
  for (size_t i = 0; i < rec->nparts; i++) {
    /* A new partition is live whatever the record's copy says. */
    ns_partition_t *p = &g_array_index(n->layout.parts, ns_partition_t, i);
    settle_part(p, replicas);
    own_part(t, p, n);
  }
  n->layout.version = 1;
  n->sub_blocks = ns_node_blocks_held(n);
  n->sub_leaves = 1;
  link_child(t, parent, n);
  return 0;
}

/* Releases the blocks of a subtree and records what goes, children first. */
static void release_subtree(ns_tree_t *t, ns_node_t *n, ns_effects_t *fx) {
  if (n->children != NULL) {
    GPtrArray *kids = ns_node_sorted_children(n);
    for (guint i = 0; i < kids->len; i++) release_subtree(t, g_ptr_array_index(kids, i), fx);
    g_ptr_array_free(kids, TRUE);
  }
  if (n->layout.parts != NULL) {
    for (guint i = 0; i < n->layout.parts->len; i++) {
      free_part(t, &g_array_index(n->layout.parts, ns_partition_t, i), fx);
    }
    g_array_set_size(n->layout.parts, 0);
  }
  /* A split begun and never ended holds its new chain: free it too. */
  for (guint i = 0; n->reparts != NULL && i < n->reparts->len; i++) {
    ns_repart_t *r = &g_array_index(n->reparts, ns_repart_t, i);
    if (r->merge) continue;
    free_block(t, &r->dst, fx);
    for (int32_t m = 0; m < r->dst_nmore; m++) free_block(t, &r->dst_more[m], fx);
  }
  if (n->reparts != NULL) g_array_set_size(n->reparts, 0);
  count_node(t, n, -1);
  if (fx != NULL) g_ptr_array_add(fx->removed, ns_node_path(n));
}

static int apply_remove(ns_tree_t *t, const ns_record_t *rec, ns_effects_t *fx, char *why,
                        size_t whylen) {
  ns_node_t *parent;
  int rc = parent_of(t, rec->path, &parent, why, whylen);
  if (rc != 0) return rc;
  ns_node_t *n = g_hash_table_lookup(parent->children, ns_path_basename(rec->path));
  if (n == NULL) {
    WHY("no such namespace");
    return MAYFLY_ENOENT;
  }
  if (n->children != NULL && g_hash_table_size(n->children) > 0 &&
      !(rec->flags & NS_REC_RECURSIVE)) {
    WHY("directory is not empty (%u children); remove it recursively", g_hash_table_size(n->children));
    return MAYFLY_ENOTEMPTY;
  }
  if (rec->flags & NS_REC_EXPIRED) t->n_expired++;
  add_up(parent, -n->sub_blocks, -n->sub_leaves);
  release_subtree(t, n, fx);
  g_hash_table_remove(parent->children, n->name);
  return 0;
}

static int apply_rename(ns_tree_t *t, const ns_record_t *rec, char *why, size_t whylen) {
  ns_node_t *oldp, *newp;
  int rc = parent_of(t, rec->path, &oldp, why, whylen);
  if (rc != 0) return rc;
  ns_node_t *n = g_hash_table_lookup(oldp->children, ns_path_basename(rec->path));
  if (n == NULL) {
    WHY("no such namespace");
    return MAYFLY_ENOENT;
  }
  rc = parent_of(t, rec->path2, &newp, why, whylen);
  if (rc != 0) return rc;
  if (ns_path_is_within(rec->path2, rec->path)) {
    WHY("%s lies inside %s", rec->path2, rec->path);
    return MAYFLY_ESUBTREE;
  }
  if (g_hash_table_lookup(newp->children, ns_path_basename(rec->path2)) != NULL) {
    WHY("%s already exists", rec->path2);
    return MAYFLY_EEXIST;
  }
  g_hash_table_steal(oldp->children, n->name);
  add_up(oldp, -n->sub_blocks, -n->sub_leaves);
  g_free(n->name);
  n->name = g_strdup(ns_path_basename(rec->path2));
  n->parent = newp;
  g_hash_table_insert(newp->children, n->name, n);
  add_up(newp, n->sub_blocks, n->sub_leaves);
  return 0;
}

static int apply_renew(ns_tree_t *t, const ns_record_t *rec, ns_effects_t *fx) {
  for (size_t i = 0; i < rec->npaths; i++) {
    ns_node_t *n = ns_tree_lookup(t, rec->paths[i]);
    if (n == NULL) {
      if (fx != NULL) g_ptr_array_add(fx->missing, g_strdup(rec->paths[i]));
      continue;
    }
    n->subtree_ms = rec->now_ms;
    for (; n != NULL; n = n->parent) n->renewed_ms = rec->now_ms;
  }
  return 0;
}

static ns_node_t *data_node(ns_tree_t *t, const char *path, char *why, size_t whylen, int *rc) {
  *rc = ns_path_check(path, why, whylen);
  if (*rc != 0) return NULL;
  ns_node_t *n = ns_tree_lookup(t, path);
  if (n == NULL) {
    WHY("no such namespace");
    *rc = MAYFLY_ENOENT;
  } else if (n->kind == NS_KIND_DIRECTORY) {
    WHY("a directory has no blocks");
    *rc = MAYFLY_EISDIR;
    n = NULL;
  }
  return n;
}

static int apply_add_part(ns_tree_t *t, const ns_record_t *rec, char *why, size_t whylen) {
  int rc;
  ns_node_t *n = data_node(t, rec->path, why, whylen, &rc);
  if (n == NULL) return rc;
  if (rec->nparts != 1) {
    WHY("a partition is added one at a time");
    return MAYFLY_EINVAL;
  }
  if (n->max_blocks > 0 && ns_node_blocks_committed(n) >= n->max_blocks) {
    WHY("quota: the namespace holds its max_blocks (%d)", n->max_blocks);
    return MAYFLY_EQUOTA;
  }
  if ((rc = check_chain(&rec->parts[0], ns_node_replicas(n), why, whylen)) != 0) return rc;
  rc = take_parts(t, rec->parts, 1, why, whylen);
  if (rc != 0) return rc;
  g_array_append_vals(n->layout.parts, rec->parts, 1);
  ns_partition_t *p = &g_array_index(n->layout.parts, ns_partition_t, n->layout.parts->len - 1);
  settle_part(p, ns_node_replicas(n));
  own_part(t, p, n);
  add_up(n, ns_part_members(p), 0);
  n->layout.version++;
  return 0;
}

static int apply_remove_part(ns_tree_t *t, const ns_record_t *rec, ns_effects_t *fx, char *why,
                             size_t whylen) {
  int rc;
  ns_node_t *n = data_node(t, rec->path, why, whylen, &rc);
  if (n == NULL) return rc;
  if (rec->part_index < 0 || (guint)rec->part_index >= n->layout.parts->len) {
    WHY("partition %d does not exist (the namespace has %u)", rec->part_index,
        n->layout.parts->len);
    return MAYFLY_EINVAL;
  }
  ns_partition_t p = g_array_index(n->layout.parts, ns_partition_t, rec->part_index);
  if (p.state == NS_PART_LOST) {
    WHY("partition %d is lost: its block stays taken until the namespace is removed",
        rec->part_index);
    return MAYFLY_ELOST;
  }
  if (ns_node_block_busy(n, p.block.server, p.block.index)) {
    WHY("partition %d is being repartitioned", rec->part_index);
    return MAYFLY_EAGAIN;
  }
  free_part(t, &p, fx);
  g_array_remove_index(n->layout.parts, (guint)rec->part_index);
  add_up(n, -part_blocks(&p), 0);
  n->layout.version++;
  return 0;
}

/* Sets n's subtree counts from its children's (recounted first) and its own
 * blocks; with check, compares instead and stops at the first difference. */
static int recount(ns_node_t *n, int check, char *why, size_t whylen) {
  int64_t blocks = ns_node_blocks_held(n), leaves = n->kind != NS_KIND_DIRECTORY;
  if (n->children != NULL) {
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, n->children);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
      ns_node_t *c = v;
      int rc = recount(c, check, why, whylen);
      if (rc != 0) return rc;
      blocks += c->sub_blocks;
      leaves += c->sub_leaves;
    }
  }
  if (check && (blocks != n->sub_blocks || leaves != n->sub_leaves)) {
    char *path = ns_node_path(n);
    WHY("%s: the subtree holds %lld blocks and %lld namespaces, its counts say %lld and %lld",
        path, (long long)blocks, (long long)leaves, (long long)n->sub_blocks,
        (long long)n->sub_leaves);
    g_free(path);
    return MAYFLY_EINVAL;
  }
  if (!check) {
    n->sub_blocks = blocks;
    n->sub_leaves = leaves;
  }
  return 0;
}

int ns_tree_check_counts(const ns_tree_t *t, char *why, size_t whylen) {
  return recount(t->root, 1, why, whylen); /* with check set it changes nothing */
}

void ns__tree_recount(ns_tree_t *t) {
  recount(t->root, 0, NULL, 0);
}

int ns_node_find_part(const ns_node_t *n, int32_t server, int32_t index) {
  for (guint i = 0; n->layout.parts != NULL && i < n->layout.parts->len; i++) {
    const ns_partition_t *p = &g_array_index(n->layout.parts, ns_partition_t, i);
    if (p->block.server == server && p->block.index == index) return (int)i;
  }
  return -1;
}

const ns_partition_t *ns_node_part_of(const ns_node_t *n, int32_t server, int32_t index) {
  int i = ns_node_find_part(n, server, index);
  return i < 0 ? NULL : &g_array_index(n->layout.parts, ns_partition_t, i);
}

int ns_tree_block_lost(const ns_tree_t *t, int32_t server, int32_t index) {
  const ns_server_t *s = ns_alloc_server(t->alloc, server);
  if (s == NULL || index < 0 || index >= s->nblocks || !s->in_use[index]) return 0;
  const ns_node_t *n = s->owner[index];
  if (n == NULL) return 0;
  int pi;
  ns_block_t b = {server, index, s->generation[index]};
  if (ns_node_find_block(n, &b, &pi, NULL) == 0) {
    return g_array_index(n->layout.parts, ns_partition_t, pi).state == NS_PART_LOST;
  }
  for (guint i = 0; n->reparts != NULL && i < n->reparts->len; i++) {
    const ns_repart_t *r = &g_array_index(n->reparts, ns_repart_t, i);
    if (r->merge || !r->lost) continue;
    if (r->dst.server == server && r->dst.index == index) return 1;
    for (int32_t m = 0; m < r->dst_nmore; m++) {
      if (r->dst_more[m].server == server && r->dst_more[m].index == index) return 1;
    }
  }
  return 0;
}

int32_t ns_node_lost_parts(const ns_node_t *n) {
  int32_t count = 0;
  for (guint i = 0; n->layout.parts != NULL && i < n->layout.parts->len; i++) {
    if (g_array_index(n->layout.parts, ns_partition_t, i).state == NS_PART_LOST) count++;
  }
  return count;
}

/* The namespaces holding blocks of server `id`, each once (a new array of
 * borrowed nodes; NULL when there are none): what is counted per server is
 * then found by one pass over each namespace's layout, not one per block. */
static GPtrArray *server_namespaces(const ns_tree_t *t, int32_t id) {
  const ns_server_t *s = ns_alloc_server(t->alloc, id);
  if (s == NULL || s->used == 0) return NULL;
  GHashTable *seen = g_hash_table_new(g_direct_hash, g_direct_equal);
  GPtrArray *out = g_ptr_array_new();
  for (int32_t i = 0; i < s->nblocks; i++) {
    ns_node_t *n = s->owner[i];
    if (!s->in_use[i] || n == NULL || n->layout.parts == NULL) continue;
    if (g_hash_table_add(seen, n)) g_ptr_array_add(out, n);
  }
  g_hash_table_destroy(seen);
  return out;
}

int32_t ns_tree_server_lost_blocks(const ns_tree_t *t, int32_t id) {
  GPtrArray *nodes = server_namespaces(t, id);
  int32_t count = 0;
  for (guint i = 0; nodes != NULL && i < nodes->len; i++) {
    const ns_node_t *n = g_ptr_array_index(nodes, i);
    for (guint k = 0; k < n->layout.parts->len; k++) {
      const ns_partition_t *p = &g_array_index(n->layout.parts, ns_partition_t, k);
      if (p->state != NS_PART_LOST) continue;
      for (int m = 0; m < ns_part_members(p); m++) count += ns_part_member(p, m)->server == id;
    }
    for (guint k = 0; n->reparts != NULL && k < n->reparts->len; k++) {
      const ns_repart_t *r = &g_array_index(n->reparts, ns_repart_t, k);
      if (r->merge || !r->lost) continue;
      count += r->dst.server == id;
      for (int32_t m = 0; m < r->dst_nmore; m++) count += r->dst_more[m].server == id;
    }
  }
  if (nodes != NULL) g_ptr_array_free(nodes, TRUE);
  return count;
}

int32_t ns_tree_server_chains(const ns_tree_t *t, int32_t id) {
  GPtrArray *nodes = server_namespaces(t, id);
  int32_t count = 0;
  for (guint i = 0; nodes != NULL && i < nodes->len; i++) {
    const ns_node_t *n = g_ptr_array_index(nodes, i);
    for (guint k = 0; k < n->layout.parts->len; k++) {
      const ns_partition_t *p = &g_array_index(n->layout.parts, ns_partition_t, k);
      if (p->replicas <= 1) continue;
      int on = p->copy.server == id;
      for (int m = 0; m < ns_part_members(p) && !on; m++) on = ns_part_member(p, m)->server == id;
      count += on;
    }
  }
  if (nodes != NULL) g_ptr_array_free(nodes, TRUE);
  return count;
}

const char *ns_part_chain_state(const ns_partition_t *p) {
  if (p->state == NS_PART_LOST) return "lost";
  if (p->copy.server != 0) return "copying";
  if (ns_part_members(p) < (p->replicas > 0 ? p->replicas : 1)) return "degraded";
  return "ok";
}

ns_repart_t *ns_node_find_repart(const ns_node_t *n, int64_t op_id) {
  for (guint i = 0; n->reparts != NULL && i < n->reparts->len; i++) {
    ns_repart_t *r = &g_array_index(n->reparts, ns_repart_t, i);
    if (r->id == op_id) return r;
  }
  return NULL;
}

int ns_node_block_busy(const ns_node_t *n, int32_t server, int32_t index) {
  for (guint i = 0; n->reparts != NULL && i < n->reparts->len; i++) {
    const ns_repart_t *r = &g_array_index(n->reparts, ns_repart_t, i);
    if ((r->src.server == server && r->src.index == index) ||
        (r->dst.server == server && r->dst.index == index)) {
      return 1;
    }
  }
  return 0;
}

int ns_node_find_block(const ns_node_t *n, const ns_block_t *b, int *part, int *member) {
  if (part != NULL) *part = -1;
  if (member != NULL) *member = -1;
  for (guint i = 0; n->layout.parts != NULL && i < n->layout.parts->len; i++) {
    const ns_partition_t *p = &g_array_index(n->layout.parts, ns_partition_t, i);
    int found = -2;
    for (int m = 0; m < ns_part_members(p) && found == -2; m++) {
      const ns_block_t *x = ns_part_member(p, m);
      if (x->server == b->server && x->index == b->index) found = m;
    }
    if (found == -2 && p->copy.server != 0 && p->copy.server == b->server &&
        p->copy.index == b->index) {
      found = -1;
    }
    if (found == -2) continue;
    if (part != NULL) *part = (int)i;
    if (member != NULL) *member = found;
    return 0;
  }
  return MAYFLY_ENOENT;
}

int64_t ns_node_blocks_held(const ns_node_t *n) {
  int64_t count = 0;
  for (guint i = 0; n->layout.parts != NULL && i < n->layout.parts->len; i++) {
    count += part_blocks(&g_array_index(n->layout.parts, ns_partition_t, i));
  }
  for (guint i = 0; n->reparts != NULL && i < n->reparts->len; i++) {
    const ns_repart_t *r = &g_array_index(n->reparts, ns_repart_t, i);
    if (!r->merge) count += 1 + r->dst_nmore;
  }
  return count;
}

int32_t ns_node_blocks_committed(const ns_node_t *n) {
  int32_t count = n->layout.parts != NULL ? (int32_t)n->layout.parts->len : 0;
  for (guint i = 0; n->reparts != NULL && i < n->reparts->len; i++) {
    if (!g_array_index(n->reparts, ns_repart_t, i).merge) count++;
  }
  return count;
}

static int same_block(const ns_block_t *a, const ns_block_t *b) {
  return a->server == b->server && a->index == b->index && a->generation == b->generation;
}

/* Begins a split (a new block takes the upper slots [lo, hi) of src) or a
 * merge (the adjacent partition dst takes over the whole of src). */
static int apply_repart_begin(ns_tree_t *t, const ns_record_t *rec, char *why, size_t whylen) {
  int rc;
  ns_node_t *n = data_node(t, rec->path, why, whylen, &rc);
  if (n == NULL) return rc;
  int merge = (rec->flags & NS_REC_MERGE) != 0;
  if (n->kind != NS_KIND_KV) {
    WHY("only kv namespaces are repartitioned");
    return MAYFLY_EKIND;
  }
  int si = ns_node_find_part(n, rec->block.server, rec->block.index);
  const ns_partition_t *src = si < 0 ? NULL : &g_array_index(n->layout.parts, ns_partition_t, si);
  if (src == NULL || !same_block(&src->block, &rec->block)) {
    WHY("block %d:%d is not a partition of the namespace", rec->block.server, rec->block.index);
    return MAYFLY_EMOVED;
  }
  if (src->state == NS_PART_LOST) {
    WHY("partition of block %d:%d is lost: it is never repartitioned", rec->block.server,
        rec->block.index);
    return MAYFLY_ELOST;
  }
  if (rec->op_id <= 0 || ns_node_find_repart(n, rec->op_id) != NULL) {
    WHY("repartition id %lld invalid or in use", (long long)rec->op_id);
    return MAYFLY_EINVAL;
  }
  if (ns_node_block_busy(n, rec->block.server, rec->block.index) ||
      ns_node_block_busy(n, rec->block2.server, rec->block2.index)) {
    WHY("a repartition of these partitions is under way");
    return MAYFLY_EAGAIN;
  }
  if (merge) {
    int di = ns_node_find_part(n, rec->block2.server, rec->block2.index);
    const ns_partition_t *dst =
        di < 0 ? NULL : &g_array_index(n->layout.parts, ns_partition_t, di);
    if (dst == NULL || di == si || !same_block(&dst->block, &rec->block2) ||
        (dst->hi != src->lo && dst->lo != src->hi) || rec->lo != src->lo || rec->hi != src->hi) {
      WHY("a merge moves a whole partition into an adjacent one");
      return MAYFLY_EINVAL;
    }
    if (dst->state == NS_PART_LOST) {
      WHY("partition of block %d:%d is lost: nothing merges into it", rec->block2.server,
          rec->block2.index);
      return MAYFLY_ELOST;
    }
  } else {
    if (rec->lo <= src->lo || rec->hi != src->hi || rec->lo >= rec->hi) {
      WHY("a split moves the upper part [lo, %lld) of a partition", (long long)src->hi);
      return MAYFLY_EINVAL;
    }
    if (n->max_blocks > 0 && ns_node_blocks_committed(n) >= n->max_blocks) {
      WHY("quota: the namespace holds its max_blocks (%d)", n->max_blocks);
      return MAYFLY_EQUOTA;
    }
    ns_partition_t p = {.block = rec->block2, .lo = rec->lo, .hi = rec->hi};
    if (rec->nparts > 1 || (rec->nparts == 1 && !same_block(&rec->parts[0].block, &rec->block2))) {
      WHY("a split brings at most one new partition, whose head is block2");
      return MAYFLY_EINVAL;
    }
    if (rec->nparts == 1) {
      if ((rc = check_chain(&rec->parts[0], ns_node_replicas(n), why, whylen)) != 0) return rc;
      p.nmore = rec->parts[0].nmore;
      memcpy(p.more, rec->parts[0].more, sizeof p.more[0] * (size_t)p.nmore);
    }
    rc = take_parts(t, &p, 1, why, whylen);
    if (rc != 0) return rc;
    own_part(t, &p, n);
    add_up(n, ns_part_members(&p), 0);
  }
  if (n->reparts == NULL) n->reparts = g_array_new(FALSE, FALSE, sizeof(ns_repart_t));
  ns_repart_t r = {.id = rec->op_id,
                   .merge = merge,
                   .src = rec->block,
                   .dst = rec->block2,
                   .lo = rec->lo,
                   .hi = rec->hi,
                   .started_ms = rec->now_ms};
  if (!merge && rec->nparts == 1) {
    r.dst_nmore = rec->parts[0].nmore;
    memcpy(r.dst_more, rec->parts[0].more, sizeof r.dst_more[0] * (size_t)r.dst_nmore);
  }
  g_array_append_val(n->reparts, r);
  if (rec->op_id > t->last_op_id) t->last_op_id = rec->op_id;
  return 0;
}

static int cmp_part_lo(gconstpointer a, gconstpointer b) {
  const ns_partition_t *x = a, *y = b;
  return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Ends a begun repartition: commit changes the layout (one new version),
 * rollback leaves it as it was and frees a split's new block. */
static int apply_repart_end(ns_tree_t *t, const ns_record_t *rec, ns_effects_t *fx, char *why,
                            size_t whylen) {
  int rc;
  ns_node_t *n = data_node(t, rec->path, why, whylen, &rc);
  if (n == NULL) return rc;
  ns_repart_t *rp = ns_node_find_repart(n, rec->op_id);
  if (rp == NULL) {
    WHY("no repartition %lld under way", (long long)rec->op_id);
    return MAYFLY_ENOENT;
  }
  ns_repart_t r = *rp;
  int si = ns_node_find_part(n, r.src.server, r.src.index);
  int di = r.merge ? ns_node_find_part(n, r.dst.server, r.dst.index) : 0;
  if ((rec->flags & NS_REC_COMMIT) && (si < 0 || di < 0 || r.lost)) {
    /* Busy partitions stay put, so this is a bug elsewhere, or a memory
     * server restarted under the repartition (what was copied to or from it
     * is gone): roll back instead. */
    WHY("the partitions of repartition %lld changed%s; it can only be rolled back",
        (long long)r.id, r.lost ? " (a memory server restarted)" : "");
    return MAYFLY_EMOVED;
  }
  g_array_remove_index(n->reparts, (guint)(rp - &g_array_index(n->reparts, ns_repart_t, 0)));
  if (!(rec->flags & NS_REC_COMMIT)) {
    if (!r.merge) {
      /* The split's new chain goes back. */
      free_block(t, &r.dst, fx);
      for (int32_t m = 0; m < r.dst_nmore; m++) free_block(t, &r.dst_more[m], fx);
      add_up(n, -(1 + r.dst_nmore), 0);
    }
    return 0;
  }
  ns_partition_t *src = &g_array_index(n->layout.parts, ns_partition_t, si);
  if (r.merge) {
    ns_partition_t *dst = &g_array_index(n->layout.parts, ns_partition_t, di);
    dst->lo = MIN(dst->lo, src->lo);
    dst->hi = MAX(dst->hi, src->hi);
    int64_t gone = part_blocks(src);
    free_part(t, src, fx);
    g_array_remove_index(n->layout.parts, (guint)si);
    add_up(n, -gone, 0);
  } else {
    src->hi = r.lo;
    ns_partition_t p = {.block = r.dst, .lo = r.lo, .hi = r.hi, .nmore = r.dst_nmore};
    memcpy(p.more, r.dst_more, sizeof p.more[0] * (size_t)r.dst_nmore);
    settle_part(&p, ns_node_replicas(n));
    g_array_append_val(n->layout.parts, p);
  }
  g_array_sort(n->layout.parts, cmp_part_lo);
  n->layout.version++;
  return 0;
}

/* Drops the partitions of a file that start at or past `lo` (keeping the
 * first block: a file always has one). */
static int apply_truncate(ns_tree_t *t, const ns_record_t *rec, ns_effects_t *fx, char *why,
                          size_t whylen) {
  int rc;
  ns_node_t *n = data_node(t, rec->path, why, whylen, &rc);
  if (n == NULL) return rc;
  if (n->kind != NS_KIND_FILE) {
    WHY("only files are truncated");
    return MAYFLY_EKIND;
  }
  if (rec->lo < 0) {
    WHY("size must not be negative");
    return MAYFLY_EINVAL;
  }
  for (guint i = 0; i < n->layout.parts->len; i++) {
    const ns_partition_t *p = &g_array_index(n->layout.parts, ns_partition_t, i);
    if (p->lo >= rec->lo && p->lo != 0 && p->state == NS_PART_LOST) {
      WHY("the block of bytes [%lld, %lld) is lost: it stays until the file is removed",
          (long long)p->lo, (long long)p->hi);
      return MAYFLY_ELOST;
    }
  }
  int changed = 0;
  for (guint i = n->layout.parts->len; i-- > 0;) {
    ns_partition_t p = g_array_index(n->layout.parts, ns_partition_t, i);
    if (p.lo < rec->lo || p.lo == 0) continue;
    free_part(t, &p, fx);
    g_array_remove_index(n->layout.parts, i);
    add_up(n, -part_blocks(&p), 0);
    changed = 1;
  }
  if (changed) n->layout.version++;
  return 0;
}

/* 1 when block b is on server s. */
static int on_server(const ns_block_t *b, const ns_server_t *s) {
  return b->server == s->id;
}

/* Members of p on server s. */
static int members_on(const ns_partition_t *p, const ns_server_t *s) {
  int count = 0;
  for (int m = 0; m < ns_part_members(p); m++) count += on_server(ns_part_member(p, m), s);
  return count;
}

/* The partition of n whose head is block b at its generation, or NULL. */
static ns_partition_t *part_by_head(ns_node_t *n, const ns_block_t *b) {
  int i = ns_node_find_part(n, b->server, b->index);
  ns_partition_t *p = i < 0 ? NULL : &g_array_index(n->layout.parts, ns_partition_t, i);
  return p != NULL && same_block(&p->block, b) ? p : NULL;
}

/* 1 when the head b of a partition of n leaves its chain as server s goes:
 * it is on s and another member remains. */
static int head_leaves(ns_node_t *n, const ns_block_t *b, const ns_server_t *s) {
  ns_partition_t *p = part_by_head(n, b);
  return p != NULL && on_server(b, s) && members_on(p, s) < ns_part_members(p);
}

/*
 * Server s went down (restarted 0) or came back as a new incarnation
 * (restarted 1): its blocks leave every chain of namespace n that keeps
 * another member (freed, their successors move up: the head's successor
 * becomes the head), and a copy on s, or whose chain lost its tail, is
 * cancelled (freed). A chain whose every member is on s keeps today's
 * behaviour: nothing when down, lost when restarted (its copy cancelled).
 * Begun repartitions that can no longer commit are marked lost: a source or
 * merge target whose head leaves, any block of a replicated split's new
 * chain on s, and (restarted) any repartition copying to or from s. Returns
 * how many partitions became lost; the layout gets a new version when any
 * partition changed.
 */
static int32_t drop_server_in_node(ns_tree_t *t, ns_node_t *n, const ns_server_t *s,
                                   int restarted, ns_effects_t *fx) {
  /* Repartitions first, while the heads are where they were. */
  for (guint i = 0; n->reparts != NULL && i < n->reparts->len; i++) {
    ns_repart_t *r = &g_array_index(n->reparts, ns_repart_t, i);
    int lost = head_leaves(n, &r->src, s) || (r->merge && head_leaves(n, &r->dst, s));
    if (!r->merge && r->dst_nmore > 0) {
      lost |= on_server(&r->dst, s);
      for (int32_t m = 0; m < r->dst_nmore; m++) lost |= on_server(&r->dst_more[m], s);
    }
    if (restarted) {
      lost |= on_server(&r->src, s) || on_server(&r->dst, s);
      for (int32_t m = 0; !r->merge && m < r->dst_nmore; m++) lost |= on_server(&r->dst_more[m], s);
    }
    if (lost) r->lost = 1;
  }
  int32_t lost_parts = 0;
  int changed_any = 0;
  for (guint i = 0; i < n->layout.parts->len; i++) {
    ns_partition_t *p = &g_array_index(n->layout.parts, ns_partition_t, i);
    int on = members_on(p, s), members = ns_part_members(p);
    int changed = 0, gone = 0;
    if (on > 0 && on < members) {
      int tail_left = on_server(ns_part_tail(p), s);
      ns_block_t keep[NS_CHAIN_MAX];
      int nkeep = 0;
      for (int m = 0; m < members; m++) {
        const ns_block_t *b = ns_part_member(p, m);
        if (on_server(b, s)) {
          free_block(t, b, fx);
          gone++;
        } else {
          keep[nkeep++] = *b;
        }
      }
      p->block = keep[0];
      p->nmore = nkeep - 1;
      for (int m = 0; m < NS_CHAIN_MAX - 1; m++) {
        p->more[m] = m + 1 < nkeep ? keep[m + 1] : (ns_block_t){0};
      }
      /* The copy was filled by the tail that left: it cannot join. */
      if (tail_left && p->copy.server != 0 && !on_server(&p->copy, s)) {
        free_block(t, &p->copy, fx);
        p->copy = (ns_block_t){0};
        p->copy_op = 0;
        gone++;
      }
      changed = 1;
    } else if (on == members && restarted && p->state == NS_PART_LIVE) {
      p->state = NS_PART_LOST;
      lost_parts++;
      if (p->copy.server != 0 && !on_server(&p->copy, s)) {
        free_block(t, &p->copy, fx);
        p->copy = (ns_block_t){0};
        p->copy_op = 0;
        gone++;
      }
      changed_any = 1;
    }
    if (p->copy.server != 0 && on_server(&p->copy, s)) {
      free_block(t, &p->copy, fx);
      p->copy = (ns_block_t){0};
      p->copy_op = 0;
      gone++;
      changed = 1;
    }
    if (gone > 0) add_up(n, -gone, 0);
    if (changed) {
      p->chain_version++;
      if (p->state == NS_PART_LIVE) rechain_part(p, fx);
      changed_any = 1;
    }
  }
  if (changed_any) n->layout.version++;
  return lost_parts;
}

/* Applies drop_server_in_node() to every namespace holding a block of s,
 * in the order of s's blocks (so that replaying the record repeats it). */
static void drop_server(ns_tree_t *t, ns_server_t *s, int restarted, ns_effects_t *fx) {
  GHashTable *seen = g_hash_table_new(g_direct_hash, g_direct_equal);
  GPtrArray *nodes = g_ptr_array_new();
  for (int32_t i = 0; i < s->nblocks; i++) {
    ns_node_t *n = s->owner[i];
    if (s->in_use[i] && n != NULL && g_hash_table_add(seen, n)) g_ptr_array_add(nodes, n);
  }
  for (guint i = 0; i < nodes->len; i++) {
    ns_node_t *n = g_ptr_array_index(nodes, i);
    int32_t count = drop_server_in_node(t, n, s, restarted, fx);
    if (count > 0 && fx != NULL) {
      fx->lost_parts += count;
      g_ptr_array_add(fx->lost, ns_node_path(n));
    }
  }
  g_ptr_array_free(nodes, TRUE);
  g_hash_table_destroy(seen);
}

/* Registers a memory server (or registers it again). A known address that
 * comes back with another incarnation restarted and its blocks are empty:
 * it leaves every chain that has another member (drop_server_in_node) and
 * every other partition on it becomes lost, in one step, so no request ever
 * reads one as empty. A lost partition's block stays taken (see
 * ns_partition_t). */
static int apply_server_add(ns_tree_t *t, const ns_record_t *rec, ns_effects_t *fx, char *why,
                            size_t whylen) {
  int32_t id = 0;
  int rc = ns_alloc_add_server(t->alloc, rec->address, rec->blocks, rec->block_size, &id);
  if (rc == MAYFLY_EPERM) {
    WHY("server %s re-registered with a different geometry while its blocks are in use",
        rec->address);
    return rc;
  }
  if (rc != 0) {
    WHY("a server needs an address, 1-%d blocks and a block size of 1 byte to 1 PiB",
        NS_ALLOC_MAX_BLOCKS);
    return rc;
  }
  ns_server_t *s = ns_alloc_server(t->alloc, id);
  ns_alloc_set_zone(t->alloc, id, rec->zone);
  if (rec->incarnation != 0 && s->incarnation != 0 && s->incarnation != rec->incarnation) {
    drop_server(t, s, 1, fx);
  }
  /* After the drop, so that the blocks it freed are raised too. */
  ns_alloc_raise_generations(t->alloc, id, rec->gen_floor);
  if (rec->incarnation != 0) s->incarnation = rec->incarnation;
  if (fx != NULL) fx->server_id = id;
  return 0;
}

/* Begins a copy that is to join a degraded chain at its tail: the partition
 * of the namespace starting at rec->lo takes rec->block as its copy. */
static int apply_replica_begin(ns_tree_t *t, const ns_record_t *rec, ns_effects_t *fx, char *why,
                               size_t whylen) {
  int rc;
  ns_node_t *n = data_node(t, rec->path, why, whylen, &rc);
  if (n == NULL) return rc;
  ns_partition_t *p = NULL;
  for (guint i = 0; i < n->layout.parts->len && p == NULL; i++) {
    ns_partition_t *x = &g_array_index(n->layout.parts, ns_partition_t, i);
    if (x->lo == rec->lo) p = x;
  }
  if (p == NULL) {
    WHY("the namespace has no partition starting at %lld", (long long)rec->lo);
    return MAYFLY_ENOENT;
  }
  if (p->state == NS_PART_LOST) {
    WHY("the partition at %lld is lost: there is nothing to copy", (long long)rec->lo);
    return MAYFLY_EINVAL;
  }
  if (ns_part_members(p) >= ns_node_replicas(n) || ns_part_members(p) >= NS_CHAIN_MAX) {
    WHY("the partition at %lld has its %d replicas: it is not degraded", (long long)rec->lo,
        ns_node_replicas(n));
    return MAYFLY_EINVAL;
  }
  if (p->copy.server != 0) {
    WHY("the partition at %lld already has a copy pending (op %lld)", (long long)rec->lo,
        (long long)p->copy_op);
    return MAYFLY_EINVAL;
  }
  if (rec->op_id <= 0) {
    WHY("a copy needs an op id above 0");
    return MAYFLY_EINVAL;
  }
  const ns_server_t *cs = ns_alloc_server(t->alloc, rec->block.server);
  if (cs == NULL) {
    WHY("no memory server with id %d", rec->block.server);
    return MAYFLY_ESERVER;
  }
  for (int m = 0; m < ns_part_members(p); m++) {
    const ns_server_t *ms = ns_alloc_server(t->alloc, ns_part_member(p, m)->server);
    if (ms != NULL && strcmp(ms->host, cs->host) == 0) {
      WHY("block %d:%d is on host %s, which already holds a member of the chain",
          rec->block.server, rec->block.index, cs->host);
      return MAYFLY_EINVAL;
    }
  }
  rc = ns_alloc_take(t->alloc, &rec->block);
  if (rc != 0) {
    WHY("block %d:%d (generation %lld) cannot be taken: %s", rec->block.server, rec->block.index,
        (long long)rec->block.generation, mayfly_strerror(rc));
    return rc;
  }
  ns_alloc_set_owner(t->alloc, &rec->block, n);
  p->copy = rec->block;
  p->copy_op = rec->op_id;
  add_up(n, 1, 0);
  if (rec->op_id > t->last_op_id) t->last_op_id = rec->op_id;
  n->layout.version++;
  rechain_part(p, fx);
  return 0;
}

/* Ends a copy: commit appends the copy block at the chain's tail (a new
 * chain version), abort frees it. */
static int apply_replica_end(ns_tree_t *t, const ns_record_t *rec, ns_effects_t *fx, char *why,
                             size_t whylen) {
  int rc;
  ns_node_t *n = data_node(t, rec->path, why, whylen, &rc);
  if (n == NULL) return rc;
  ns_partition_t *p = NULL;
  for (guint i = 0; i < n->layout.parts->len && p == NULL; i++) {
    ns_partition_t *x = &g_array_index(n->layout.parts, ns_partition_t, i);
    if (x->copy.server != 0 && x->copy_op == rec->op_id) p = x;
  }
  if (p == NULL) {
    WHY("no copy %lld is pending in the namespace", (long long)rec->op_id);
    return MAYFLY_ENOENT;
  }
  if (rec->flags & NS_REC_COMMIT) {
    if (p->nmore + 1 >= NS_CHAIN_MAX) {
      WHY("the chain has %d members already", NS_CHAIN_MAX);
      return MAYFLY_EINVAL;
    }
    p->more[p->nmore++] = p->copy;
    p->chain_version++;
  } else {
    free_block(t, &p->copy, fx);
    add_up(n, -1, 0);
  }
  p->copy = (ns_block_t){0};
  p->copy_op = 0;
  n->layout.version++;
  rechain_part(p, fx);
  return 0;
}

static int apply_one(ns_tree_t *t, const ns_record_t *rec, ns_effects_t *fx, char *why,
                     size_t whylen) {
  switch (rec->type) {
    case NS_REC_MKDIR:
      return apply_mkdir(t, rec, why, whylen);
    case NS_REC_CREATE:
      return apply_create(t, rec, why, whylen);
    case NS_REC_REMOVE:
      return apply_remove(t, rec, fx, why, whylen);
    case NS_REC_RENAME:
      return apply_rename(t, rec, why, whylen);
    case NS_REC_RENEW:
      return apply_renew(t, rec, fx);
    case NS_REC_ADD_PART:
      return apply_add_part(t, rec, why, whylen);
    case NS_REC_REMOVE_PART:
      return apply_remove_part(t, rec, fx, why, whylen);
    case NS_REC_SERVER_ADD:
      return apply_server_add(t, rec, fx, why, whylen);
    case NS_REC_REPART_BEGIN:
      return apply_repart_begin(t, rec, why, whylen);
    case NS_REC_REPART_END:
      return apply_repart_end(t, rec, fx, why, whylen);
    case NS_REC_TRUNCATE:
      return apply_truncate(t, rec, fx, why, whylen);
    case NS_REC_SERVER_STATE: {
      int rc = ns_alloc_set_up(t->alloc, rec->server_id, rec->up);
      if (rc != 0) {
        WHY("no memory server with id %d", rec->server_id);
        return rc;
      }
      if (!rec->up) drop_server(t, ns_alloc_server(t->alloc, rec->server_id), 0, fx);
      return 0;
    }
    case NS_REC_REPLICA_BEGIN:
      return apply_replica_begin(t, rec, fx, why, whylen);
    case NS_REC_REPLICA_END:
      return apply_replica_end(t, rec, fx, why, whylen);
  }
  WHY("unknown record type %d", (int)rec->type);
  return MAYFLY_EINVAL;
}

int ns_tree_apply(ns_tree_t *t, const ns_record_t *rec, ns_effects_t *fx, char *why,
                  size_t whylen) {
  int rc = apply_one(t, rec, fx, why, whylen);
  if (rc == 0 && rec->req_client != 0) {
    ns_tree_request_note(t, rec->req_client, rec->req_seq, rec->wall_ms);
  }
  if (rc == 0 && t->observer != NULL) t->observer(rec, t->observer_ud);
  return rc;
}

static void restart_node_times(ns_node_t *n, void *ud) {
  int64_t now = *(const int64_t *)ud;
  n->renewed_ms = n->subtree_ms = now;
  for (guint i = 0; n->reparts != NULL && i < n->reparts->len; i++) {
    g_array_index(n->reparts, ns_repart_t, i).started_ms = now;
  }
}

void ns_tree_restart_times(ns_tree_t *t, int64_t now_ms) {
  ns_tree_walk(t->root, restart_node_times, &now_ms);
}

int ns_tree_request_done(const ns_tree_t *t, uint64_t client, uint64_t seq) {
  if (client == 0) return 0;
  const ns_request_t *r = g_hash_table_lookup(t->requests, &client);
  if (r == NULL || seq > r->seq) return 0;
  uint64_t back = r->seq - seq;
  return back >= NS_REQUEST_WINDOW || (r->window >> back & 1) != 0;
}

static gint cmp_request_age(gconstpointer a, gconstpointer b) {
  const ns_request_t *x = *(ns_request_t *const *)a, *y = *(ns_request_t *const *)b;
  if (x->wall_ms != y->wall_ms) return x->wall_ms < y->wall_ms ? -1 : 1;
  return x->client < y->client ? -1 : x->client > y->client;
}

/* Forgets the clients heard of longest ago, down to three quarters of the
 * bound. The order depends on the records alone (their wall clock, then the
 * id), so every replica of the log forgets the same ones. */
static void prune_requests(ns_tree_t *t) {
  GPtrArray *all = g_ptr_array_sized_new(g_hash_table_size(t->requests));
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, t->requests);
  while (g_hash_table_iter_next(&it, NULL, &v)) g_ptr_array_add(all, v);
  g_ptr_array_sort(all, cmp_request_age);
  guint drop = all->len - NS_REQUESTS_MAX * 3 / 4;
  for (guint i = 0; i < drop; i++) {
    ns_request_t *r = g_ptr_array_index(all, i);
    g_hash_table_remove(t->requests, &r->client);
  }
  g_ptr_array_free(all, TRUE);
}

static ns_request_t *request_of(ns_tree_t *t, uint64_t client) {
  ns_request_t *r = g_hash_table_lookup(t->requests, &client);
  if (r == NULL) {
    r = g_new0(ns_request_t, 1);
    r->client = client;
    g_hash_table_insert(t->requests, &r->client, r);
  }
  return r;
}

void ns_tree_request_note(ns_tree_t *t, uint64_t client, uint64_t seq, int64_t wall_ms) {
  if (client == 0) return;
  ns_request_t *r = request_of(t, client);
  if (seq > r->seq) {
    uint64_t up = seq - r->seq;
    r->window = up >= NS_REQUEST_WINDOW ? 1 : r->window << up | 1;
    r->seq = seq;
  } else if (r->seq - seq < NS_REQUEST_WINDOW) {
    r->window |= UINT64_C(1) << (r->seq - seq);
  }
  r->wall_ms = wall_ms;
  if (g_hash_table_size(t->requests) > NS_REQUESTS_MAX) prune_requests(t);
}

void ns_tree_request_set(ns_tree_t *t, uint64_t client, uint64_t seq, uint64_t window,
                         int64_t wall_ms) {
  ns_request_t *r = request_of(t, client);
  r->seq = seq;
  r->window = window;
  r->wall_ms = wall_ms;
  if (g_hash_table_size(t->requests) > NS_REQUESTS_MAX) prune_requests(t);
}

void ns_tree_set_observer(ns_tree_t *t, ns_tree_observer_cb cb, void *ud) {
  t->observer = cb;
  t->observer_ud = ud;
}

/* The smallest block size among the members of p (a file range must fit in
 * every replica). */
static int64_t chain_block_size(const ns_tree_t *t, const ns_partition_t *p) {
  int64_t size = INT64_MAX;
  for (int m = 0; m < ns_part_members(p); m++) {
    const ns_server_t *s = ns_alloc_server(t->alloc, ns_part_member(p, m)->server);
    if (s->block_size < size) size = s->block_size;
  }
  return size;
}

/* Fills p with the chain blocks[0..r) and nothing else. */
static void chain_part(ns_partition_t *p, const ns_block_t *blocks, int r) {
  memset(p, 0, sizeof *p);
  p->block = blocks[0];
  p->nmore = r - 1;
  for (int m = 1; m < r; m++) p->more[m - 1] = blocks[m];
  p->state = NS_PART_LIVE;
  p->replicas = r;
  p->chain_version = 1;
}

/* A reason for a failed pick of r-block chains. */
static void plan_why(const ns_tree_t *t, int rc, int r, char *why, size_t whylen) {
  if (rc == MAYFLY_ENOHOSTS && r > NS_CHAIN_MAX) {
    WHY("%d replicas asked for; a chain has at most %d", r, NS_CHAIN_MAX);
  } else if (rc == MAYFLY_ENOHOSTS) {
    WHY("%d replicas need memory servers on %d distinct hosts; %d hosts have a server up", r, r,
        ns_alloc_hosts_up(t->alloc, NULL, 0));
  } else if (rc == MAYFLY_ENOSPC) {
    WHY("not enough free blocks on the memory servers that are up");
  } else if (rc == MAYFLY_ENOSERVERS) {
    WHY("no memory server is up");
  }
}

int ns_tree_plan_chains(const ns_tree_t *t, ns_kind_t kind, int n, int replicas,
                        ns_partition_t *out, char *why, size_t whylen) {
  if (n < 0 || n > NS_CREATE_BLOCKS_MAX || replicas < 0) {
    WHY("1 to %d blocks and 1 to %d replicas", NS_CREATE_BLOCKS_MAX, NS_CHAIN_MAX);
    return MAYFLY_EINVAL;
  }
  int r = replicas > 0 ? replicas : 1;
  ns_block_t *blocks = g_new(ns_block_t, n > 0 ? (gsize)n * (gsize)r : 1);
  int rc;
  if (r == 1) {
    rc = ns_alloc_pick(t->alloc, n, blocks);
  } else if (n == 0) {
    /* Nothing to place, but the request must still be placeable. */
    rc = ns_alloc_hosts_up(t->alloc, NULL, 0) < r || r > NS_CHAIN_MAX ? MAYFLY_ENOHOSTS : 0;
  } else {
    int32_t *extra = g_new0(int32_t, t->alloc->servers->len ? t->alloc->servers->len : 1);
    rc = 0;
    for (int i = 0; rc == 0 && i < n; i++) {
      rc = ns__alloc_pick_chain_x(t->alloc, r, NULL, 0, extra, &blocks[(gsize)i * (gsize)r]);
    }
    g_free(extra);
  }
  int64_t offset = 0;
  for (int i = 0; rc == 0 && i < n; i++) {
    ns_partition_t *p = &out[i];
    chain_part(p, &blocks[(gsize)i * (gsize)r], r);
    switch (kind) {
      case NS_KIND_KV:
        p->lo = (int64_t)NS_KV_SLOTS * i / n;
        p->hi = (int64_t)NS_KV_SLOTS * (i + 1) / n;
        break;
      case NS_KIND_FILE:
        p->lo = offset;
        p->hi = offset += chain_block_size(t, p);
        break;
      default:
        p->lo = i;
        p->hi = i + 1;
        break;
    }
  }
  g_free(blocks);
  if (rc != 0) plan_why(t, rc, r, why, whylen);
  return rc;
}

int ns_tree_plan_parts(const ns_tree_t *t, ns_kind_t kind, int n, ns_partition_t *out) {
  return ns_tree_plan_chains(t, kind, n, 1, out, NULL, 0);
}

int ns_tree_plan_append_why(const ns_tree_t *t, const ns_node_t *n, int64_t lo, int64_t hi,
                            ns_partition_t *out, char *why, size_t whylen) {
  if (hi < lo || lo < 0) {
    WHY("a range [lo, hi) needs 0 <= lo <= hi");
    return MAYFLY_EINVAL;
  }
  if (n->layout.parts == NULL) {
    WHY("a directory has no blocks");
    return MAYFLY_EISDIR;
  }
  int r = ns_node_replicas(n);
  ns_block_t blocks[NS_CHAIN_MAX];
  int rc = r == 1 ? ns_alloc_pick(t->alloc, 1, blocks)
                  : ns_alloc_pick_chain(t->alloc, r, NULL, 0, blocks);
  if (rc != 0) {
    plan_why(t, rc, r, why, whylen);
    return rc;
  }
  chain_part(out, blocks, r);
  if (lo != 0 || hi != 0) {
    out->lo = lo;
    out->hi = hi;
    return 0;
  }
  const ns_partition_t *last = NULL;
  for (guint i = 0; i < n->layout.parts->len; i++) {
    const ns_partition_t *p = &g_array_index(n->layout.parts, ns_partition_t, i);
    if (last == NULL || p->hi > last->hi) last = p;
  }
  if (n->kind == NS_KIND_FILE) {
    out->lo = last ? last->hi : 0;
    out->hi = out->lo + chain_block_size(t, out);
  } else {
    out->lo = last ? last->hi : 0;
    out->hi = out->lo + 1;
  }
  return 0;
}

int ns_tree_plan_append(const ns_tree_t *t, const ns_node_t *n, int64_t lo, int64_t hi,
                        ns_partition_t *out) {
  return ns_tree_plan_append_why(t, n, lo, hi, out, NULL, 0);
}
