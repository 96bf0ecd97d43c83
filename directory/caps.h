/*
 * The directory's uses of the cluster key (--cluster-key-file, common/auth.h):
 * the cluster handshake that lets a control connection call the server-only
 * methods, and the capabilities it signs for the blocks of the layouts it
 * hands out.
 *
 * Without a key (d->cfg.cluster_key NULL) the directory is open to memory
 * servers as before: the server-only methods need no handshake, the
 * handshake itself answers MAYFLY_EINVAL, and no capability is issued (the
 * functions that sign return NULL).
 *
 * The handshake (auth.h): cluster_challenge draws a nonce into the session;
 * cluster_auth checks the peer's proof over that nonce and the peer's own,
 * forgets the nonce whatever the outcome (a nonce serves one attempt, so a
 * proof seen on one connection never passes on another or twice), and on
 * success marks the session `cluster` and answers the directory's proof.
 *
 * Capabilities expire capability_ttl_ms after they are signed (wall clock:
 * the memory servers compare with theirs). Every function runs on the
 * directory's loop; returned strings are the caller's (g_free).
 */
#ifndef MAYFLY_DIR_CAPS_H
#define MAYFLY_DIR_CAPS_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

#include "directory/directory.h"
#include "namespaces/alloc.h"

/* Whether the directory has a cluster key. */
int dir_caps_enabled(const dir_t *d);

/* The gate of every server-only method: 0 when the session may call them
 * (no cluster key, or it passed the handshake), else MAYFLY_EPERM with the
 * reason in why (and a warning naming the peer and the method). */
int dir_caps_require_cluster(const dir_t *d, const dir_session_t *s, const char *method,
                             char *why, size_t whylen);

/* cluster_challenge: draws a nonce into the session (replacing any earlier
 * one) and sets *hex to it. Returns 0, or MAYFLY_EINVAL without a key. */
int dir_caps_challenge(const dir_t *d, dir_session_t *s, gchar **hex, char *why, size_t whylen);

/* cluster_auth: checks the peer's proof (hex) of the cluster key over the
 * session's nonce and client_nonce (hex), and clears the nonce. On success
 * marks the session `cluster` and sets *hex to the directory's proof.
 * Returns 0, MAYFLY_EINVAL (no key), or MAYFLY_EPERM (no challenge drawn,
 * a malformed nonce or proof, or a wrong proof: logged with the peer). */
int dir_caps_auth(const dir_t *d, dir_session_t *s, const char *client_nonce,
                  const char *proof, gchar **hex, char *why, size_t whylen);

/* The wall-clock expiry of a capability signed now (ms since the epoch). */
int64_t dir_caps_expiry(const dir_t *d);

/* A capability (hex) for block b with `rights` (MF_RIGHT_READ/WRITE) for
 * `tenant`, valid until expiry_ms; NULL without a key or with no rights. */
gchar *dir_caps_block(const dir_t *d, const ns_block_t *b, uint8_t rights, uint32_t tenant,
                      int64_t expiry_ms);

/* The capability of server_id's SERVER_STAT (rights MF_RIGHT_STAT, block
 * MF_CAP_ANY_BLOCK, generation 0) for `tenant` (an admin's); NULL without a
 * key. */
gchar *dir_caps_stat(const dir_t *d, int32_t server_id, uint32_t tenant);

/* The migrate capability of repartition op_id: rights MF_RIGHT_MIGRATE on
 * the target block over the slots [lo, hi), valid as long as the
 * repartition may last (at least DIR_REPART_TIMEOUT_MS, repart.h); NULL
 * without a key. */
gchar *dir_caps_migrate(const dir_t *d, const ns_block_t *target, int64_t lo, int64_t hi,
                        int64_t op_id);

#endif /* MAYFLY_DIR_CAPS_H */
