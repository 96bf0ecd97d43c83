/*
 * Tenants: the tenants file, logins, the permission check every client
 * handler calls, and per-tenant quotas (see tenants.h).
 */
#include "directory/tenants.h"

#include <stdio.h>
#include <string.h>

#include "common/auth.h"
#include "common/error.h"
#include "common/log.h"
#include "namespaces/path.h"

#define SECTION_PREFIX "tenant "
#define NAME_MAX_LEN 64

static const char *const login_needed =
    "permission denied: log in with a tenant token (MAYFLY_TOKEN or --token)";

/* ---- the file ------------------------------------------------------------- */

static void tenant_free(dir_tenant_t *t) {
  if (t == NULL) return;
  g_free(t->name);
  g_strfreev(t->prefixes);
  g_strfreev(t->read_prefixes);
  mf_auth_wipe(t->token_hash, sizeof t->token_hash);
  g_free(t);
}

void dir_tenants_free(dir_tenants_t *t) {
  if (t == NULL) return;
  g_hash_table_destroy(t->by_name);
  g_ptr_array_free(t->list, TRUE);
  g_free(t);
}

uint32_t dir_tenant_id(const char *name) {
  uint8_t h[32];
  mf_token_hash(name, h);
  uint32_t id = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
  return id != 0 ? id : 1;
}

static int name_ok(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || n > NAME_MAX_LEN) return 0;
  for (const char *c = name; *c; c++) {
    if (!g_ascii_isalnum(*c) && *c != '-' && *c != '_' && *c != '.') return 0;
  }
  return 1;
}

/* Reads a ';'-separated list of paths (white space around each allowed,
 * empty items skipped). NULL with why set when one is not a valid path. */
static char **get_paths(GKeyFile *kf, const char *file, const char *group, const char *key,
                        char *why, size_t whylen) {
  gsize n = 0;
  char **raw = g_key_file_get_string_list(kf, group, key, &n, NULL);
  GPtrArray *out = g_ptr_array_new();
  for (gsize i = 0; raw != NULL && i < n; i++) {
    char *p = g_strstrip(raw[i]);
    if (p[0] == '\0') continue;
    char pwhy[256] = "";
    if (ns_path_check(p, pwhy, sizeof pwhy) != 0) {
      g_snprintf(why, whylen, "%s: [%s] %s: '%s' is not a valid absolute path (%s)", file, group,
                 key, p, pwhy);
      g_strfreev(raw);
      g_ptr_array_free(out, TRUE);
      return NULL;
    }
    g_ptr_array_add(out, g_strdup(p));
  }
  g_strfreev(raw);
  g_ptr_array_add(out, NULL);
  return (char **)g_ptr_array_free(out, FALSE);
}

/* Parses one [tenant NAME] section into *out. */
static int parse_tenant(GKeyFile *kf, const char *file, const char *group, dir_tenant_t **out,
                        char *why, size_t whylen) {
  static const char *const known[] = {"token", "token-sha256", "prefix", "read-prefix",
                                      "max-blocks", "admin", NULL};
  int named = g_str_has_prefix(group, SECTION_PREFIX);
  const char *name = named ? group + strlen(SECTION_PREFIX) : "";
  if (!named || !name_ok(name)) {
    g_snprintf(why, whylen,
               "%s: [%s]: a section must be named \"tenant NAME\" (NAME: 1-%d letters, digits, "
               "'-', '_' or '.')",
               file, group, NAME_MAX_LEN);
    return MAYFLY_EINVAL;
  }
  char **keys = g_key_file_get_keys(kf, group, NULL, NULL);
  for (char **k = keys; k != NULL && *k != NULL; k++) {
    if (!g_strv_contains(known, *k)) {
      g_snprintf(why, whylen,
                 "%s: [%s] %s: unknown key (known: token, token-sha256, prefix, read-prefix, "
                 "max-blocks, admin)",
                 file, group, *k);
      g_strfreev(keys);
      return MAYFLY_EINVAL;
    }
  }
  g_strfreev(keys);
  dir_tenant_t *t = g_new0(dir_tenant_t, 1);
  t->name = g_strdup(name);
  t->id = dir_tenant_id(name);
  int has_plain = g_key_file_has_key(kf, group, "token", NULL);
  int has_hash = g_key_file_has_key(kf, group, "token-sha256", NULL);
  GError *ge = NULL;
  int rc = MAYFLY_EINVAL;
  if (has_plain == has_hash) {
    g_snprintf(why, whylen, "%s: [%s]: give exactly one of token-sha256 and token", file, group);
    goto fail;
  }
  if (has_plain) {
    char *tok = g_key_file_get_string(kf, group, "token", NULL);
    if (tok == NULL || tok[0] == '\0') {
      g_snprintf(why, whylen, "%s: [%s] token: empty", file, group);
      g_free(tok);
      goto fail;
    }
    mf_token_hash(tok, t->token_hash);
    mf_auth_wipe(tok, strlen(tok));
    g_free(tok);
  } else {
    char *hex = g_key_file_get_string(kf, group, "token-sha256", NULL);
    if (hex != NULL) g_strstrip(hex);
    if (hex == NULL || strlen(hex) != 64 || mf_hex_decode(hex, t->token_hash, 32) != 0) {
      g_snprintf(why, whylen, "%s: [%s] token-sha256: not 64 hexadecimal digits", file, group);
      g_free(hex);
      goto fail;
    }
    g_free(hex);
  }
  t->prefixes = get_paths(kf, file, group, "prefix", why, whylen);
  if (t->prefixes == NULL) goto fail;
  if (t->prefixes[0] == NULL) {
    g_snprintf(why, whylen, "%s: [%s] prefix: missing (at least one subtree the tenant owns)",
               file, group);
    goto fail;
  }
  t->read_prefixes = get_paths(kf, file, group, "read-prefix", why, whylen);
  if (t->read_prefixes == NULL) goto fail;
  if (g_key_file_has_key(kf, group, "max-blocks", NULL)) {
    gint64 mb = g_key_file_get_int64(kf, group, "max-blocks", &ge);
    if (ge != NULL || mb < 0 || mb > INT32_MAX) {
      g_snprintf(why, whylen, "%s: [%s] max-blocks: must be a number from 0 (no limit) to %d",
                 file, group, INT32_MAX);
      goto fail;
    }
    t->max_blocks = (int32_t)mb;
  }
  if (g_key_file_has_key(kf, group, "admin", NULL)) {
    t->admin = g_key_file_get_boolean(kf, group, "admin", &ge);
    if (ge != NULL) {
      g_snprintf(why, whylen, "%s: [%s] admin: must be true or false", file, group);
      goto fail;
    }
  }
  *out = t;
  return 0;
fail:
  if (ge != NULL) g_error_free(ge);
  tenant_free(t);
  return rc;
}

/* GKeyFile merges two sections of one name into one, so a tenant written
 * twice would silently take keys from both: find such a repeat in the text
 * first. Returns 0, or MAYFLY_EINVAL with why naming it. */
static int repeated_section(const char *text, size_t len, const char *file, char *why,
                            size_t whylen) {
  char *copy = g_strndup(text, len);
  char **lines = g_strsplit(copy, "\n", -1);
  GHashTable *seen = g_hash_table_new(g_str_hash, g_str_equal);
  int rc = 0;
  for (char **l = lines; rc == 0 && *l != NULL; l++) {
    char *line = g_strstrip(*l);
    size_t n = strlen(line);
    if (n < 2 || line[0] != '[' || line[n - 1] != ']') continue;
    if (!g_hash_table_add(seen, line)) {
      g_snprintf(why, whylen, "%s: %s: a second section of that name", file, line);
      rc = MAYFLY_EINVAL;
    }
  }
  g_hash_table_destroy(seen);
  g_strfreev(lines);
  g_free(copy);
  return rc;
}

int dir_tenants_parse(const char *text, size_t len, const char *file, dir_tenants_t **out,
                      char *why, size_t whylen) {
  *out = NULL;
  int rc = repeated_section(text, len, file, why, whylen);
  if (rc != 0) return rc;
  GKeyFile *kf = g_key_file_new();
  GError *ge = NULL;
  /* Translations (key[locale]) are kept so that they show up as unknown keys
   * instead of being dropped unseen. */
  if (!g_key_file_load_from_data(kf, text, len, G_KEY_FILE_KEEP_TRANSLATIONS, &ge)) {
    g_snprintf(why, whylen, "%s: %s", file, ge->message);
    g_error_free(ge);
    g_key_file_free(kf);
    return MAYFLY_EINVAL;
  }
  dir_tenants_t *ts = g_new0(dir_tenants_t, 1);
  ts->list = g_ptr_array_new_with_free_func((GDestroyNotify)tenant_free);
  ts->by_name = g_hash_table_new(g_str_hash, g_str_equal);
  char **groups = g_key_file_get_groups(kf, NULL);
  for (char **g = groups; rc == 0 && *g != NULL; g++) {
    dir_tenant_t *t = NULL;
    rc = parse_tenant(kf, file, *g, &t, why, whylen);
    if (rc != 0) break;
    g_ptr_array_add(ts->list, t);
    g_hash_table_insert(ts->by_name, t->name, t); /* names are unique: repeated_section() */
    for (guint i = 0; i + 1 < ts->list->len; i++) {
      const dir_tenant_t *o = g_ptr_array_index(ts->list, i);
      if (mf_mac_equal(o->token_hash, t->token_hash)) {
        g_snprintf(why, whylen, "%s: [%s]: the same token as tenant %s (tokens must differ)",
                   file, *g, o->name);
        rc = MAYFLY_EINVAL;
        break;
      }
    }
  }
  if (rc == 0 && ts->list->len == 0) {
    g_snprintf(why, whylen, "%s: no [tenant NAME] section", file);
    rc = MAYFLY_EINVAL;
  }
  g_strfreev(groups);
  g_key_file_free(kf);
  if (rc != 0) {
    dir_tenants_free(ts);
    return rc;
  }
  *out = ts;
  return 0;
}

int dir_tenants_load(const char *path, dir_tenants_t **out, char *why, size_t whylen) {
  char *text = NULL;
  gsize len = 0;
  GError *ge = NULL;
  *out = NULL;
  if (!g_file_get_contents(path, &text, &len, &ge)) {
    g_snprintf(why, whylen, "%s", ge->message);
    g_error_free(ge);
    return MAYFLY_EIO;
  }
  int rc = dir_tenants_parse(text, len, path, out, why, whylen);
  mf_auth_wipe(text, len); /* it may hold plain tokens */
  g_free(text);
  return rc;
}

int dir_tenants_reload(dir_t *d, char *why, size_t whylen) {
  dir_tenants_t *fresh = NULL;
  int rc = dir_tenants_load(d->cfg.tenants_file, &fresh, why, whylen);
  if (rc != 0) return rc;
  dir_tenants_free(d->tenants);
  d->tenants = fresh;
  return 0;
}

const dir_tenant_t *dir_tenants_by_token(const dir_tenants_t *t, const char *token) {
  if (t == NULL || token == NULL || token[0] == '\0') return NULL;
  uint8_t h[32];
  mf_token_hash(token, h);
  /* Every tenant is compared, in constant time each, so the time taken
   * says nothing about which hash matched or how far. */
  const dir_tenant_t *found = NULL;
  for (guint i = 0; i < t->list->len; i++) {
    const dir_tenant_t *c = g_ptr_array_index(t->list, i);
    if (mf_mac_equal(c->token_hash, h)) found = c;
  }
  mf_auth_wipe(h, sizeof h);
  return found;
}

/* ---- who, and what they may do ------------------------------------------- */

/* The session's standing: 0 with *t NULL when it may do everything (open
 * directory, cluster session), 0 with *t its tenant, or MAYFLY_EPERM. */
static int who(const dir_t *d, const dir_session_t *s, const dir_tenant_t **t, char *why,
               size_t whylen) {
  *t = NULL;
  if (d->tenants == NULL || s->cluster) return 0;
  if (s->tenant == NULL) {
    if (why != NULL) g_snprintf(why, whylen, "%s", login_needed);
    return MAYFLY_EPERM;
  }
  *t = g_hash_table_lookup(d->tenants->by_name, s->tenant);
  if (*t == NULL) {
    if (why != NULL) {
      g_snprintf(why, whylen,
                 "permission denied: tenant %s is no longer configured; log in with a tenant "
                 "token (MAYFLY_TOKEN or --token)",
                 s->tenant);
    }
    return MAYFLY_EPERM;
  }
  return 0;
}

const dir_tenant_t *dir_tenants_of(const dir_t *d, const dir_session_t *s) {
  const dir_tenant_t *t = NULL;
  return who(d, s, &t, NULL, 0) == 0 ? t : NULL;
}

/* Whether path lies inside one of the subtrees. */
static int inside(char *const *prefixes, const char *path) {
  for (; *prefixes != NULL; prefixes++) {
    if (ns_path_is_within(path, *prefixes)) return 1;
  }
  return 0;
}

/* Whether path is a proper ancestor of one of the subtrees. */
static int above(char *const *prefixes, const char *path) {
  for (; *prefixes != NULL; prefixes++) {
    if (strcmp(*prefixes, path) != 0 && ns_path_is_within(*prefixes, path)) return 1;
  }
  return 0;
}

static int allowed(const dir_tenant_t *t, dir_access_t need, const char *path) {
  if (t->admin) return 1;
  switch (need) {
    case DIR_CHANGE:
      return inside(t->prefixes, path);
    case DIR_READ:
      return inside(t->prefixes, path) || inside(t->read_prefixes, path);
    case DIR_SEE:
      return inside(t->prefixes, path) || inside(t->read_prefixes, path) ||
             above(t->prefixes, path) || above(t->read_prefixes, path);
    case DIR_ADMIN:
      return 0;
  }
  return 0;
}

int dir_tenants_check(const dir_t *d, const dir_session_t *s, dir_access_t need,
                      const char *path, char *why, size_t whylen) {
  const dir_tenant_t *t;
  int rc = who(d, s, &t, why, whylen);
  if (rc != 0 || t == NULL) return rc;
  if (need != DIR_ADMIN) {
    rc = ns_path_check(path, why, whylen);
    if (rc != 0) return rc;
  }
  if (allowed(t, need, path)) return 0;
  if (need == DIR_ADMIN) {
    g_snprintf(why, whylen, "permission denied: tenant %s is not an admin", t->name);
  } else {
    g_snprintf(why, whylen, "permission denied: %s is outside what tenant %s may %s", path,
               t->name,
               need == DIR_CHANGE ? "change" : need == DIR_READ ? "read" : "see");
  }
  return MAYFLY_EPERM;
}

int dir_tenants_may(const dir_t *d, const dir_session_t *s, dir_access_t need, const char *path) {
  const dir_tenant_t *t;
  if (who(d, s, &t, NULL, 0) != 0) return 0;
  return t == NULL || allowed(t, need, path);
}

int dir_tenants_is_admin(const dir_t *d, const dir_session_t *s) {
  return dir_tenants_may(d, s, DIR_ADMIN, NULL);
}

uint8_t dir_tenants_rights(const dir_t *d, const dir_session_t *s, const char *path,
                           uint32_t *tenant_id) {
  const dir_tenant_t *t;
  *tenant_id = 0;
  if (who(d, s, &t, NULL, 0) != 0) return 0;
  if (t == NULL) return MF_RIGHT_READ | MF_RIGHT_WRITE;
  *tenant_id = t->id;
  if (allowed(t, DIR_CHANGE, path)) return MF_RIGHT_READ | MF_RIGHT_WRITE;
  return allowed(t, DIR_READ, path) ? MF_RIGHT_READ : 0;
}

int dir_tenants_login(dir_t *d, dir_session_t *s, const char *token, const dir_tenant_t **tenant,
                      char *why, size_t whylen) {
  g_free(s->tenant);
  s->tenant = NULL;
  if (tenant != NULL) *tenant = NULL;
  if (d->tenants == NULL) return 0;
  const dir_tenant_t *t = dir_tenants_by_token(d->tenants, token);
  if (t == NULL) {
    g_snprintf(why, whylen, "permission denied: unknown token");
    MF_DEBUG("login refused: unknown token");
    return MAYFLY_EPERM;
  }
  s->tenant = g_strdup(t->name);
  if (tenant != NULL) *tenant = t;
  MF_DEBUG("login as tenant %s", t->name);
  return 0;
}

/* ---- quotas ---------------------------------------------------------------- */

void dir_tenants_usage(const dir_t *d, const dir_tenant_t *t, int64_t *blocks,
                       int64_t *namespaces) {
  *blocks = 0;
  *namespaces = 0;
  for (guint i = 0; t->prefixes[i] != NULL; i++) {
    /* A prefix inside another of the tenant's (or repeated) is counted
     * with that one. */
    int covered = 0;
    for (guint j = 0; t->prefixes[j] != NULL && !covered; j++) {
      if (j == i || !ns_path_is_within(t->prefixes[i], t->prefixes[j])) continue;
      covered = strcmp(t->prefixes[i], t->prefixes[j]) != 0 || j < i;
    }
    if (covered) continue;
    const ns_node_t *n = ns_tree_lookup(d->tree, t->prefixes[i]);
    if (n == NULL) continue;
    *blocks += n->sub_blocks;
    *namespaces += n->sub_leaves;
  }
}

/* Refuses `blocks` more for tenants covering path (and, when not NULL, not
 * covering except). */
static int charge(dir_t *d, const char *path, const char *except, int64_t blocks, char *why,
                  size_t whylen) {
  if (d->tenants == NULL || blocks <= 0) return 0;
  for (guint i = 0; i < d->tenants->list->len; i++) {
    const dir_tenant_t *t = g_ptr_array_index(d->tenants->list, i);
    if (t->max_blocks == 0 || !inside(t->prefixes, path)) continue;
    if (except != NULL && inside(t->prefixes, except)) continue;
    int64_t used, nss;
    dir_tenants_usage(d, t, &used, &nss);
    if (used + blocks > t->max_blocks) {
      g_snprintf(why, whylen,
                 "quota: tenant %s holds %lld of its max-blocks %d; %lld more would exceed it",
                 t->name, (long long)used, t->max_blocks, (long long)blocks);
      return MAYFLY_EQUOTA;
    }
  }
  return 0;
}

int dir_tenants_charge(dir_t *d, const char *path, int blocks, char *why, size_t whylen) {
  return charge(d, path, NULL, blocks, why, whylen);
}

int dir_tenants_charge_move(dir_t *d, const char *old_path, const char *new_path, char *why,
                            size_t whylen) {
  if (d->tenants == NULL) return 0;
  const ns_node_t *n = ns_tree_lookup(d->tree, old_path);
  if (n == NULL) return 0; /* the rename reports it */
  return charge(d, new_path, old_path, n->sub_blocks, why, whylen);
}

int dir_tenants_charge_split(dir_t *d, int32_t server_id, int32_t block_index, int merge,
                             char *why, size_t whylen) {
  if (d->tenants == NULL || merge) return 0;
  const ns_server_t *s = ns_alloc_server(d->tree->alloc, server_id);
  if (s == NULL || block_index < 0 || block_index >= s->nblocks || !s->in_use[block_index] ||
      s->owner[block_index] == NULL) {
    return 0;
  }
  char *path = ns_node_path(s->owner[block_index]);
  /* The new partition of a replicated namespace is a whole chain. */
  int rc = charge(d, path, NULL, ns_node_replicas(s->owner[block_index]), why, whylen);
  g_free(path);
  return rc;
}
