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
  fx->removed = g_ptr_array_new_with_free_func(g_free);
  fx->missing = g_ptr_array_new_with_free_func(g_free);
  fx->lost = g_ptr_array_new_with_free_func(g_free);
  fx->server_id = 0;
  fx->lost_parts = 0;
}

void ns_effects_clear(ns_effects_t *fx) {
  if (fx == NULL) return;
  if (fx->freed) g_array_free(fx->freed, TRUE);
  if (fx->removed) g_ptr_array_free(fx->removed, TRUE);
  if (fx->missing) g_ptr_array_free(fx->missing, TRUE);
  if (fx->lost) g_ptr_array_free(fx->lost, TRUE);
  fx->freed = NULL;
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
  return t;
}

void ns_tree_free(ns_tree_t *t) {
  if (t == NULL) return;
  node_free(t->root);
  ns_alloc_free(t->alloc);
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

/* Takes every block of parts, undoing the ones taken if one fails. */
static int take_parts(ns_tree_t *t, const ns_partition_t *parts, size_t n, char *why,
                      size_t whylen) {
  for (size_t i = 0; i < n; i++) {
    int rc = ns_alloc_take(t->alloc, &parts[i].block);
    if (rc != 0) {
      /* Undo in reverse so the free stacks end up exactly as they were. */
      for (size_t j = i; j-- > 0;) ns__alloc_untake(t->alloc, &parts[j].block);
      WHY("block %d:%d (generation %lld) cannot be taken: %s", parts[i].block.server,
          parts[i].block.index, (long long)parts[i].block.generation, mayfly_strerror(rc));
      return rc;
    }
  }
  return 0;
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
    g_array_index(n->layout.parts, ns_partition_t, i).state = NS_PART_LIVE;
    ns_alloc_set_owner(t->alloc, &rec->parts[i].block, n);
  }
  n->layout.version = 1;
  n->sub_blocks = (int64_t)rec->nparts;
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
      ns_partition_t *p = &g_array_index(n->layout.parts, ns_partition_t, i);
      if (ns_alloc_release(t->alloc, &p->block) == 0 && fx != NULL) {
        g_array_append_val(fx->freed, p->block);
      }
    }
    g_array_set_size(n->layout.parts, 0);
  }
  /* A split begun and never ended holds its new block: free it too. */
  for (guint i = 0; n->reparts != NULL && i < n->reparts->len; i++) {
    ns_repart_t *r = &g_array_index(n->reparts, ns_repart_t, i);
    if (!r->merge && ns_alloc_release(t->alloc, &r->dst) == 0 && fx != NULL) {
      g_array_append_val(fx->freed, r->dst);
    }
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
  rc = take_parts(t, rec->parts, 1, why, whylen);
  if (rc != 0) return rc;
  g_array_append_vals(n->layout.parts, rec->parts, 1);
  g_array_index(n->layout.parts, ns_partition_t, n->layout.parts->len - 1).state = NS_PART_LIVE;
  ns_alloc_set_owner(t->alloc, &rec->parts[0].block, n);
  add_up(n, 1, 0);
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
  if (ns_alloc_release(t->alloc, &p.block) == 0 && fx != NULL) {
    g_array_append_val(fx->freed, p.block);
  }
  g_array_remove_index(n->layout.parts, (guint)rec->part_index);
  add_up(n, -1, 0);
  n->layout.version++;
  return 0;
}

/* Sets n's subtree counts from its children's (recounted first) and its own
 * blocks; with check, compares instead and stops at the first difference. */
static int recount(ns_node_t *n, int check, char *why, size_t whylen) {
  int64_t blocks = ns_node_blocks_committed(n), leaves = n->kind != NS_KIND_DIRECTORY;
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
  const ns_partition_t *p = ns_node_part_of(n, server, index);
  if (p != NULL) return p->state == NS_PART_LOST;
  for (guint i = 0; n->reparts != NULL && i < n->reparts->len; i++) {
    const ns_repart_t *r = &g_array_index(n->reparts, ns_repart_t, i);
    if (!r->merge && r->lost && r->dst.server == server && r->dst.index == index) return 1;
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

int32_t ns_tree_server_lost_blocks(const ns_tree_t *t, int32_t id) {
  const ns_server_t *s = ns_alloc_server(t->alloc, id);
  if (s == NULL || s->used == 0) return 0;
  /* Once per namespace holding blocks there, not once per block: a block
   * by block lookup would scan a namespace's layout for each of its blocks. */
  GHashTable *seen = g_hash_table_new(g_direct_hash, g_direct_equal);
  int32_t count = 0;
  for (int32_t i = 0; i < s->nblocks; i++) {
    const ns_node_t *n = s->owner[i];
    if (!s->in_use[i] || n == NULL || !g_hash_table_add(seen, (gpointer)n)) continue;
    for (guint k = 0; k < n->layout.parts->len; k++) {
      const ns_partition_t *p = &g_array_index(n->layout.parts, ns_partition_t, k);
      count += p->block.server == id && p->state == NS_PART_LOST;
    }
    for (guint k = 0; n->reparts != NULL && k < n->reparts->len; k++) {
      const ns_repart_t *r = &g_array_index(n->reparts, ns_repart_t, k);
      count += !r->merge && r->lost && r->dst.server == id;
    }
  }
  g_hash_table_destroy(seen);
  return count;
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
    rc = take_parts(t, &p, 1, why, whylen);
    if (rc != 0) return rc;
    ns_alloc_set_owner(t->alloc, &rec->block2, n);
    add_up(n, 1, 0);
  }
  if (n->reparts == NULL) n->reparts = g_array_new(FALSE, FALSE, sizeof(ns_repart_t));
  ns_repart_t r = {.id = rec->op_id,
                   .merge = merge,
                   .src = rec->block,
                   .dst = rec->block2,
                   .lo = rec->lo,
                   .hi = rec->hi,
                   .started_ms = rec->now_ms};
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
    if (!r.merge && ns_alloc_release(t->alloc, &r.dst) == 0 && fx != NULL) {
      g_array_append_val(fx->freed, r.dst);
    }
    if (!r.merge) add_up(n, -1, 0); /* the split's new block goes back */
    return 0;
  }
  ns_partition_t *src = &g_array_index(n->layout.parts, ns_partition_t, si);
  if (r.merge) {
    ns_partition_t *dst = &g_array_index(n->layout.parts, ns_partition_t, di);
    dst->lo = MIN(dst->lo, src->lo);
    dst->hi = MAX(dst->hi, src->hi);
    if (ns_alloc_release(t->alloc, &src->block) == 0 && fx != NULL) {
      g_array_append_val(fx->freed, src->block);
    }
    g_array_remove_index(n->layout.parts, (guint)si);
    add_up(n, -1, 0);
  } else {
    src->hi = r.lo;
    ns_partition_t p = {.block = r.dst, .lo = r.lo, .hi = r.hi};
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
    if (ns_alloc_release(t->alloc, &p.block) == 0 && fx != NULL) {
      g_array_append_val(fx->freed, p.block);
    }
    g_array_remove_index(n->layout.parts, i);
    add_up(n, -1, 0);
    changed = 1;
  }
  if (changed) n->layout.version++;
  return 0;
}

/* Marks lost every partition of namespace n on server s, and every begun
 * repartition of n that copies to or from s. Returns how many partitions
 * changed state; the layout gets a new version when any did. */
static int32_t mark_node_lost(ns_node_t *n, const ns_server_t *s) {
  int32_t count = 0;
  for (guint i = 0; i < n->layout.parts->len; i++) {
    ns_partition_t *p = &g_array_index(n->layout.parts, ns_partition_t, i);
    if (p->block.server == s->id && p->state == NS_PART_LIVE) {
      p->state = NS_PART_LOST;
      count++;
    }
  }
  for (guint i = 0; n->reparts != NULL && i < n->reparts->len; i++) {
    ns_repart_t *r = &g_array_index(n->reparts, ns_repart_t, i);
    if (r->src.server == s->id || r->dst.server == s->id) r->lost = 1;
  }
  if (count > 0) n->layout.version++;
  return count;
}

/* Registers a memory server (or registers it again). A known address that
 * comes back with another incarnation restarted and its blocks are empty:
 * every partition on them becomes lost, in one step, so no request ever
 * reads one as empty. The blocks stay taken (see ns_partition_t). */
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
  ns_alloc_raise_generations(t->alloc, id, rec->gen_floor);
  ns_server_t *s = ns_alloc_server(t->alloc, id);
  if (rec->incarnation != 0 && s->incarnation != 0 && s->incarnation != rec->incarnation) {
    GHashTable *seen = g_hash_table_new(g_direct_hash, g_direct_equal);
    for (int32_t i = 0; i < s->nblocks; i++) {
      ns_node_t *n = s->owner[i];
      if (!s->in_use[i] || n == NULL || !g_hash_table_add(seen, n)) continue;
      int32_t count = mark_node_lost(n, s);
      if (count > 0 && fx != NULL) {
        fx->lost_parts += count;
        g_ptr_array_add(fx->lost, ns_node_path(n));
      }
    }
    g_hash_table_destroy(seen);
  }
  if (rec->incarnation != 0) s->incarnation = rec->incarnation;
  if (fx != NULL) fx->server_id = id;
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
      if (rc != 0) WHY("no memory server with id %d", rec->server_id);
      return rc;
    }
  }
  WHY("unknown record type %d", (int)rec->type);
  return MAYFLY_EINVAL;
}

int ns_tree_apply(ns_tree_t *t, const ns_record_t *rec, ns_effects_t *fx, char *why,
                  size_t whylen) {
  int rc = apply_one(t, rec, fx, why, whylen);
  if (rc == 0 && t->observer != NULL) t->observer(rec, t->observer_ud);
  return rc;
}

void ns_tree_set_observer(ns_tree_t *t, ns_tree_observer_cb cb, void *ud) {
  t->observer = cb;
  t->observer_ud = ud;
}

int ns_tree_plan_parts(const ns_tree_t *t, ns_kind_t kind, int n, ns_partition_t *out) {
  if (n < 0 || n > NS_CREATE_BLOCKS_MAX) return MAYFLY_EINVAL;
  ns_block_t *blocks = g_new(ns_block_t, n > 0 ? (gsize)n : 1);
  int rc = ns_alloc_pick(t->alloc, n, blocks);
  int64_t offset = 0;
  for (int i = 0; rc == 0 && i < n; i++) {
    ns_partition_t *p = &out[i];
    p->block = blocks[i];
    p->state = NS_PART_LIVE;
    switch (kind) {
      case NS_KIND_KV:
        p->lo = (int64_t)NS_KV_SLOTS * i / n;
        p->hi = (int64_t)NS_KV_SLOTS * (i + 1) / n;
        break;
      case NS_KIND_FILE: {
        const ns_server_t *s = ns_alloc_server(t->alloc, blocks[i].server);
        p->lo = offset;
        p->hi = offset += s->block_size;
        break;
      }
      default:
        p->lo = i;
        p->hi = i + 1;
        break;
    }
  }
  g_free(blocks);
  return rc;
}

int ns_tree_plan_append(const ns_tree_t *t, const ns_node_t *n, int64_t lo, int64_t hi,
                        ns_partition_t *out) {
  if (hi < lo || lo < 0) return MAYFLY_EINVAL;
  if (n->layout.parts == NULL) return MAYFLY_EISDIR;
  int rc = ns_alloc_pick(t->alloc, 1, &out->block);
  if (rc != 0) return rc;
  out->state = NS_PART_LIVE;
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
    out->hi = out->lo + ns_alloc_server(t->alloc, out->block.server)->block_size;
  } else {
    out->lo = last ? last->hi : 0;
    out->hi = out->lo + 1;
  }
  return 0;
}
