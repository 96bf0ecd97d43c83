/*
 * The block allocator (see alloc.h).
 */
#include "namespaces/alloc.h"

#include <string.h>

#include "common/error.h"

static void server_free(ns_server_t *s) {
  if (s == NULL) return;
  g_free(s->address);
  g_free(s->host);
  g_free(s->zone);
  g_free(s->generation);
  g_free(s->in_use);
  g_free(s->owner);
  if (s->free_stack) g_array_free(s->free_stack, TRUE);
  g_free(s);
}

/* Sets a server's geometry: every block free. Generations continue above the
 * highest one the server has used, so no reference taken under the old
 * geometry names a block of the new one. The free stack holds indices in
 * reverse so block 0 is handed out first. */
static void server_reset(ns_server_t *s, int32_t nblocks, int64_t block_size) {
  int64_t next_gen = 1;
  for (int32_t i = 0; s->generation != NULL && i < s->nblocks; i++) {
    if (s->generation[i] >= next_gen) next_gen = s->generation[i] + 1;
  }
  g_free(s->generation);
  g_free(s->in_use);
  g_free(s->owner);
  if (s->free_stack) g_array_free(s->free_stack, TRUE);
  s->nblocks = nblocks;
  s->block_size = block_size;
  s->used = 0;
  s->generation = g_new(int64_t, (gsize)nblocks);
  s->in_use = g_new0(uint8_t, (gsize)nblocks);
  s->owner = g_new0(void *, (gsize)nblocks);
  s->free_stack = g_array_sized_new(FALSE, FALSE, sizeof(int32_t), (guint)nblocks);
  for (int32_t i = 0; i < nblocks; i++) {
    int32_t idx = nblocks - 1 - i;
    s->generation[i] = next_gen;
    g_array_append_val(s->free_stack, idx);
  }
}

ns_alloc_t *ns_alloc_new(void) {
  ns_alloc_t *a = g_new0(ns_alloc_t, 1);
  a->servers = g_ptr_array_new_with_free_func((GDestroyNotify)server_free);
  return a;
}

void ns_alloc_free(ns_alloc_t *a) {
  if (a == NULL) return;
  g_ptr_array_free(a->servers, TRUE);
  g_free(a);
}

ns_server_t *ns_alloc_server(ns_alloc_t *a, int32_t id) {
  if (id < 1 || (guint)id > a->servers->len) return NULL;
  return g_ptr_array_index(a->servers, (guint)id - 1);
}

ns_server_t *ns_alloc_server_by_address(ns_alloc_t *a, const char *address) {
  for (guint i = 0; i < a->servers->len; i++) {
    ns_server_t *s = g_ptr_array_index(a->servers, i);
    if (strcmp(s->address, address) == 0) return s;
  }
  return NULL;
}

int ns_alloc_add_server(ns_alloc_t *a, const char *address, int32_t nblocks,
                        int64_t block_size, int32_t *id) {
  if (address == NULL || address[0] == '\0' || nblocks < 1 || nblocks > NS_ALLOC_MAX_BLOCKS ||
      block_size < 1 || block_size > NS_ALLOC_MAX_BLOCK_SIZE) {
    return MAYFLY_EINVAL;
  }
  ns_server_t *s = ns_alloc_server_by_address(a, address);
  if (s != NULL) {
    if (s->nblocks != nblocks || s->block_size != block_size) {
      if (s->used > 0) return MAYFLY_EPERM;
      a->blocks_total += nblocks - s->nblocks;
      server_reset(s, nblocks, block_size);
    }
    s->up = 1;
    *id = s->id;
    return 0;
  }
  s = g_new0(ns_server_t, 1);
  s->id = (int32_t)a->servers->len + 1;
  s->address = g_strdup(address);
  s->host = ns_alloc_host_of(address);
  s->zone = g_strdup("");
  s->up = 1;
  server_reset(s, nblocks, block_size);
  g_ptr_array_add(a->servers, s);
  a->blocks_total += nblocks;
  *id = s->id;
  return 0;
}

char *ns_alloc_host_of(const char *address) {
  const char *colon = strrchr(address, ':');
  if (address[0] == '[') {
    const char *close = strchr(address, ']');
    if (close != NULL) return g_strndup(address + 1, (gsize)(close - address - 1));
  }
  /* A bare IPv6 address (more than one ':') has no port to cut. */
  if (colon == NULL || strchr(address, ':') != colon) return g_strdup(address);
  return g_strndup(address, (gsize)(colon - address));
}

int ns_alloc_set_zone(ns_alloc_t *a, int32_t id, const char *zone) {
  ns_server_t *s = ns_alloc_server(a, id);
  if (s == NULL) return MAYFLY_ESERVER;
  g_free(s->zone);
  s->zone = g_strdup(zone != NULL ? zone : "");
  return 0;
}

int ns_alloc_set_up(ns_alloc_t *a, int32_t id, int up) {
  ns_server_t *s = ns_alloc_server(a, id);
  if (s == NULL) return MAYFLY_ESERVER;
  s->up = up ? 1 : 0;
  return 0;
}

int ns_alloc_pick(const ns_alloc_t *a, int n, ns_block_t *out) {
  guint ns = a->servers->len;
  if (n < 0) return MAYFLY_EINVAL;
  int any_up = 0;
  for (guint i = 0; i < ns; i++) {
    any_up |= ((ns_server_t *)g_ptr_array_index(a->servers, i))->up;
  }
  if (!any_up) return MAYFLY_ENOSERVERS;
  /* Tentative use per server, so each pick sees the ones before it. */
  int32_t *extra = g_new0(int32_t, ns ? ns : 1);
  int rc = 0;
  for (int k = 0; k < n; k++) {
    ns_server_t *best = NULL;
    double best_fill = 2.0;
    for (guint i = 0; i < ns; i++) {
      ns_server_t *s = g_ptr_array_index(a->servers, i);
      int32_t used = s->used + extra[i];
      if (!s->up || used >= s->nblocks) continue;
      double fill = (double)used / (double)s->nblocks;
      if (fill < best_fill) {
        best_fill = fill;
        best = s;
      }
    }
    if (best == NULL) {
      rc = MAYFLY_ENOSPC;
      break;
    }
    guint top = best->free_stack->len - 1 - (guint)extra[best->id - 1];
    int32_t idx = g_array_index(best->free_stack, int32_t, top);
    out[k] = (ns_block_t){best->id, idx, best->generation[idx]};
    extra[best->id - 1]++;
  }
  g_free(extra);
  return rc;
}

int ns_alloc_take(ns_alloc_t *a, const ns_block_t *b) {
  ns_server_t *s = ns_alloc_server(a, b->server);
  if (s == NULL) return MAYFLY_ESERVER;
  if (b->index < 0 || b->index >= s->nblocks) return MAYFLY_EINVAL;
  if (s->in_use[b->index] || s->generation[b->index] != b->generation) return MAYFLY_EMOVED;
  /* The block is normally at the top of the free stack (pick hands out the
   * top); search from there. */
  GArray *fs = s->free_stack;
  for (guint i = fs->len; i-- > 0;) {
    if (g_array_index(fs, int32_t, i) == b->index) {
      g_array_remove_index(fs, i);
      break;
    }
  }
  s->in_use[b->index] = 1;
  s->used++;
  a->blocks_used++;
  return 0;
}

void ns_alloc_set_owner(ns_alloc_t *a, const ns_block_t *b, void *owner) {
  ns_server_t *s = ns_alloc_server(a, b->server);
  if (s != NULL && b->index >= 0 && b->index < s->nblocks) s->owner[b->index] = owner;
}

void ns_alloc_raise_generations(ns_alloc_t *a, int32_t id, int64_t floor) {
  ns_server_t *s = ns_alloc_server(a, id);
  if (s == NULL) return;
  for (int32_t i = 0; i < s->nblocks; i++) {
    if (!s->in_use[i] && s->generation[i] <= floor) s->generation[i] = floor + 1;
  }
}

int ns__alloc_untake(ns_alloc_t *a, const ns_block_t *b) {
  ns_server_t *s = ns_alloc_server(a, b->server);
  if (s == NULL) return MAYFLY_ESERVER;
  if (b->index < 0 || b->index >= s->nblocks) return MAYFLY_EINVAL;
  if (!s->in_use[b->index] || s->generation[b->index] != b->generation) return MAYFLY_EMOVED;
  s->in_use[b->index] = 0;
  s->owner[b->index] = NULL;
  s->used--;
  a->blocks_used--;
  g_array_append_val(s->free_stack, b->index);
  return 0;
}

int ns_alloc_release(ns_alloc_t *a, const ns_block_t *b) {
  ns_server_t *s = ns_alloc_server(a, b->server);
  if (s == NULL) return MAYFLY_ESERVER;
  if (b->index < 0 || b->index >= s->nblocks) return MAYFLY_EINVAL;
  if (!s->in_use[b->index] || s->generation[b->index] != b->generation) return MAYFLY_EMOVED;
  s->in_use[b->index] = 0;
  s->owner[b->index] = NULL;
  s->generation[b->index]++;
  s->used--;
  a->blocks_used--;
  g_array_append_val(s->free_stack, b->index);
  return 0;
}

/* 1 when server s shares a host with a server of ids[0..n). */
static int host_in(const ns_alloc_t *a, const ns_server_t *s, const int32_t *ids, int n) {
  for (int i = 0; i < n; i++) {
    const ns_server_t *o = ns_alloc_server((ns_alloc_t *)a, ids[i]);
    if (o != NULL && strcmp(o->host, s->host) == 0) return 1;
  }
  return 0;
}

/* 1 when server s has a zone that a server of ids[0..n) has too. */
static int zone_in(const ns_alloc_t *a, const ns_server_t *s, const int32_t *ids, int n) {
  if (s->zone[0] == '\0') return 0;
  for (int i = 0; i < n; i++) {
    const ns_server_t *o = ns_alloc_server((ns_alloc_t *)a, ids[i]);
    if (o != NULL && strcmp(o->zone, s->zone) == 0) return 1;
  }
  return 0;
}

int ns_alloc_hosts_up(const ns_alloc_t *a, const int32_t *avoid, int navoid) {
  GHashTable *hosts = g_hash_table_new(g_str_hash, g_str_equal);
  for (guint i = 0; i < a->servers->len; i++) {
    const ns_server_t *s = g_ptr_array_index(a->servers, i);
    if (s->up && !host_in(a, s, avoid, navoid)) g_hash_table_add(hosts, s->host);
  }
  int n = (int)g_hash_table_size(hosts);
  g_hash_table_destroy(hosts);
  return n;
}

int ns__alloc_pick_chain_x(const ns_alloc_t *a, int r, const int32_t *avoid, int navoid,
                           int32_t *extra, ns_block_t *out) {
  if (r < 1 || navoid < 0 || (navoid > 0 && avoid == NULL)) return MAYFLY_EINVAL;
  int any_up = 0;
  for (guint i = 0; i < a->servers->len; i++) {
    any_up |= ((ns_server_t *)g_ptr_array_index(a->servers, i))->up;
  }
  if (!any_up) return MAYFLY_ENOSERVERS;
  if (r > NS_CHAIN_MAX || ns_alloc_hosts_up(a, avoid, navoid) < r) return MAYFLY_ENOHOSTS;
  /* The servers the chain must stay away from: avoid[] then each pick. */
  int32_t *used = g_new(int32_t, (gsize)navoid + (gsize)r);
  if (navoid > 0) memcpy(used, avoid, sizeof *used * (size_t)navoid);
  int nused = navoid;
  int rc = 0;
  for (int k = 0; k < r; k++) {
    ns_server_t *best = NULL;
    int best_new_zone = 0;
    double best_fill = 2.0;
    for (guint i = 0; i < a->servers->len; i++) {
      ns_server_t *s = g_ptr_array_index(a->servers, i);
      int32_t u = s->used + extra[i];
      if (!s->up || u >= s->nblocks || host_in(a, s, used, nused)) continue;
      int new_zone = s->zone[0] != '\0' && !zone_in(a, s, used, nused);
      double fill = (double)u / (double)s->nblocks;
      if (best == NULL || new_zone > best_new_zone ||
          (new_zone == best_new_zone && fill < best_fill)) {
        best = s;
        best_new_zone = new_zone;
        best_fill = fill;
      }
    }
    if (best == NULL) {
      rc = MAYFLY_ENOSPC;
      break;
    }
    guint top = best->free_stack->len - 1 - (guint)extra[best->id - 1];
    int32_t idx = g_array_index(best->free_stack, int32_t, top);
    out[k] = (ns_block_t){best->id, idx, best->generation[idx]};
    extra[best->id - 1]++;
    used[nused++] = best->id;
  }
  g_free(used);
  return rc;
}

int ns_alloc_pick_chain(const ns_alloc_t *a, int r, const int32_t *avoid, int navoid,
                        ns_block_t *out) {
  int32_t *extra = g_new0(int32_t, a->servers->len ? a->servers->len : 1);
  int rc = ns__alloc_pick_chain_x(a, r, avoid, navoid, extra, out);
  g_free(extra);
  return rc;
}
