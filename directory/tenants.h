/*
 * Tenants of the directory (--tenants FILE): who may do what where, and how
 * many blocks each may hold.
 *
 * Without a tenants file the directory is open: every connection may read
 * and change every path, and counts as admin. With one, a control
 * connection logs in with a tenant's token (login); the session keeps the
 * tenant's name only, and every call resolves it again, so a reload
 * (SIGHUP) that removes a tenant or changes its prefixes applies at once.
 * A connection that passed the cluster handshake (a memory server) counts
 * as admin.
 *
 * The file (a GLib key file), one section per tenant:
 *
 *   [tenant alice]
 *   token-sha256 = <64 hex digits: SHA-256 of the token>   (or: token = <plain>)
 *   prefix = /alice;/shared/alice    subtrees it owns (reads and changes)
 *   read-prefix = /datasets          optional: subtrees it may only read
 *   max-blocks = 256                 optional: quota, 0 or absent = no limit
 *   admin = false                    optional: every path, servers, stats
 *
 * Permissions: a tenant may change a path inside one of its prefixes (the
 * prefix itself or below it), read inside its prefixes and read-prefixes,
 * and see (stat, list as a directory) the ancestors of both; listings show
 * only what it may see. The quota counts the blocks of every namespace
 * under the tenant's prefixes (namespaces/tree.h keeps subtree counts, so a
 * check is a lookup per prefix); a namespace under the prefixes of two
 * tenants counts for both.
 *
 * Everything runs on the directory's loop.
 */
#ifndef MAYFLY_DIR_TENANTS_H
#define MAYFLY_DIR_TENANTS_H

#include <stddef.h>
#include <stdint.h>

#include "directory/directory.h"

typedef struct dir_tenant {
  char *name;
  uint8_t token_hash[32]; /* SHA-256 of the token (mf_token_hash) */
  char **prefixes;        /* NULL-terminated; never empty */
  char **read_prefixes;   /* NULL-terminated; may be empty */
  int32_t max_blocks;     /* 0 = no limit */
  int admin;
  uint32_t id;            /* dir_tenant_id(name) */
} dir_tenant_t;

/* A loaded tenants file. */
typedef struct dir_tenants {
  GPtrArray *list;     /* dir_tenant_t *, in file order */
  GHashTable *by_name; /* name -> dir_tenant_t * (borrowed from list) */
} dir_tenants_t;

/* Parses a tenants file's text; `file` names it in messages. Returns 0 with
 * *out set, or MAYFLY_EINVAL with why naming the file, the section and the
 * key at fault (nothing allocated). Refused: a section not named
 * "tenant NAME", an unknown key, no token or both forms, a token-sha256
 * that is not 64 hex digits, an empty token, no prefix, a prefix that is
 * not a valid absolute path, a max-blocks below 0 or not a number, an admin
 * that is not a boolean, two tenants with the same token, no tenant. */
int dir_tenants_parse(const char *text, size_t len, const char *file, dir_tenants_t **out,
                      char *why, size_t whylen);

/* Reads and parses the file at path (as dir_tenants_parse; MAYFLY_EIO when
 * it cannot be read). */
int dir_tenants_load(const char *path, dir_tenants_t **out, char *why, size_t whylen);

void dir_tenants_free(dir_tenants_t *t); /* accepts NULL */

/* The tenant whose token this is (SHA-256 compared in constant time with
 * every tenant's), or NULL. */
const dir_tenant_t *dir_tenants_by_token(const dir_tenants_t *t, const char *token);

/* The id capabilities carry for a tenant: the first 4 bytes (little-endian)
 * of SHA-256 of its name, 1 if that is 0. */
uint32_t dir_tenant_id(const char *name);

/* (Re)loads d->cfg.tenants_file into d->tenants. On failure d->tenants is
 * kept as it was and the reason is in why. Returns 0, MAYFLY_EIO or
 * MAYFLY_EINVAL. */
int dir_tenants_reload(dir_t *d, char *why, size_t whylen);

/* What a call needs on a path. */
typedef enum {
  DIR_SEE,    /* stat or list it: readable, or an ancestor of what is */
  DIR_READ,   /* read its data or layout */
  DIR_CHANGE, /* create, remove, rename, grow, renew, truncate */
  DIR_ADMIN   /* servers, stats, other tenants (path ignored) */
} dir_access_t;

/* Whether the session may do `need` on path (NULL for DIR_ADMIN). Returns
 * 0, the path's own error (EBADPATH, ENAMETOOLONG) for an invalid path, or
 * MAYFLY_EPERM with why saying so: not logged in, a tenant no longer in the
 * file, a path outside the tenant's subtrees (named), admin needed. The one
 * check every client handler calls before it looks at the tree. */
int dir_tenants_check(const dir_t *d, const dir_session_t *s, dir_access_t need,
                      const char *path, char *why, size_t whylen);

/* The same as a yes/no, for filtering what a listing shows. */
int dir_tenants_may(const dir_t *d, const dir_session_t *s, dir_access_t need, const char *path);

/* The tenant the session is logged in as, resolved now (NULL: open
 * directory, not logged in, or the tenant is gone). */
const dir_tenant_t *dir_tenants_of(const dir_t *d, const dir_session_t *s);

/* Logs the session in with token. Without tenants: 0, the session open.
 * With tenants: 0 and the session's tenant set, or MAYFLY_EPERM ("unknown
 * token") with the session logged out. *tenant (may be NULL) receives the
 * tenant (NULL when open). */
int dir_tenants_login(dir_t *d, dir_session_t *s, const char *token, const dir_tenant_t **tenant,
                      char *why, size_t whylen);

/* Blocks held and namespaces under the tenant's prefixes (each namespace
 * once, even under two of its prefixes). O(prefixes * depth). */
void dir_tenants_usage(const dir_t *d, const dir_tenant_t *t, int64_t *blocks,
                       int64_t *namespaces);

/* Whether `blocks` more blocks for the namespace at path fit every quota
 * that covers it (each tenant with a prefix containing path). Returns 0, or
 * MAYFLY_EQUOTA with why naming the tenant, its limit and its use. Changes
 * nothing: called before a change that allocates is applied. */
int dir_tenants_charge(dir_t *d, const char *path, int blocks, char *why, size_t whylen);

/* The same for moving the subtree at old_path (its blocks) to new_path:
 * charged to the tenants covering new_path but not old_path. */
int dir_tenants_charge_move(dir_t *d, const char *old_path, const char *new_path, char *why,
                            size_t whylen);

/* The check at the start of repartition_begin: a split of block
 * (server_id, block_index) takes one more block (a chain of R for a namespace
 * of R replicas) for its namespace. 0 for a
 * merge or for a block no namespace holds (repartition_begin then says
 * what is wrong); else as dir_tenants_charge. */
int dir_tenants_charge_split(dir_t *d, int32_t server_id, int32_t block_index, int merge,
                             char *why, size_t whylen);

/* The rights (MF_RIGHT_READ | MF_RIGHT_WRITE, common/auth.h) the session
 * has on the data of the namespace at path, and the tenant id its
 * capabilities carry (0 for an open directory or a cluster session). */
uint8_t dir_tenants_rights(const dir_t *d, const dir_session_t *s, const char *path,
                           uint32_t *tenant_id);

/* Whether the session may see everything (servers, stats, every lease):
 * an open directory, a cluster session, an admin tenant. */
int dir_tenants_is_admin(const dir_t *d, const dir_session_t *s);

#endif /* MAYFLY_DIR_TENANTS_H */
