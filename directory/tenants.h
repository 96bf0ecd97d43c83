/*
 * Tenants of the directory (--tenants FILE): who may do what where.
 *
 * Without a tenants file the directory is open: every connection may read
 * and change every path, and counts as admin. The functions below answer
 * for the session of a control connection (directory.h) and are what the
 * handlers and the capability signer ask.
 */
#ifndef MAYFLY_DIR_TENANTS_H
#define MAYFLY_DIR_TENANTS_H

#include <stdint.h>

#include "directory/directory.h"

/* The rights (MF_RIGHT_READ | MF_RIGHT_WRITE, common/auth.h) the session
 * has on the data of the namespace at path, and the tenant id its
 * capabilities carry (0 for an open directory). */
uint8_t dir_tenants_rights(const dir_t *d, const dir_session_t *s, const char *path,
                           uint32_t *tenant_id);

/* Whether the session may see everything (servers, stats, every lease). */
int dir_tenants_is_admin(const dir_t *d, const dir_session_t *s);

#endif /* MAYFLY_DIR_TENANTS_H */
