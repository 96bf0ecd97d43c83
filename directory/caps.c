/*
 * The cluster handshake and the capabilities the directory signs (see
 * caps.h).
 */
#include "directory/caps.h"

#include <string.h>

#include "common/auth.h"
#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "directory/repart.h"

int dir_caps_enabled(const dir_t *d) { return d->cfg.cluster_key != NULL; }

static const char *peer_of(const dir_session_t *s) {
  return s->peer != NULL ? s->peer : "(in-process)";
}

int dir_caps_require_cluster(const dir_t *d, const dir_session_t *s, const char *method,
                             char *why, size_t whylen) {
  if (!dir_caps_enabled(d) || s->cluster) return 0;
  g_snprintf(why, whylen, "cluster authentication required");
  MF_WARN("peer %s: %s refused: it did not pass the cluster handshake (a memory server "
          "without this directory's --cluster-key-file?)",
          peer_of(s), method);
  return MAYFLY_EPERM;
}

int dir_caps_challenge(const dir_t *d, dir_session_t *s, gchar **hex, char *why,
                       size_t whylen) {
  if (!dir_caps_enabled(d)) {
    g_snprintf(why, whylen, "this directory has no cluster key (--cluster-key-file)");
    return MAYFLY_EINVAL;
  }
  mf_auth_random(s->nonce, sizeof s->nonce);
  s->challenged = 1;
  *hex = g_malloc(2 * sizeof s->nonce + 1);
  mf_hex_encode(s->nonce, sizeof s->nonce, *hex);
  return 0;
}

int dir_caps_auth(const dir_t *d, dir_session_t *s, const char *client_nonce,
                  const char *proof, gchar **hex, char *why, size_t whylen) {
  if (!dir_caps_enabled(d)) {
    g_snprintf(why, whylen, "this directory has no cluster key (--cluster-key-file)");
    return MAYFLY_EINVAL;
  }
  if (!s->challenged) {
    g_snprintf(why, whylen, "call cluster_challenge first");
    MF_WARN("peer %s: cluster handshake refused: no challenge drawn on this connection "
            "(a replayed proof?)",
            peer_of(s));
    return MAYFLY_EPERM;
  }
  /* The nonce serves this one attempt, whatever its outcome. */
  uint8_t snonce[MF_NONCE_SIZE];
  memcpy(snonce, s->nonce, sizeof snonce);
  mf_auth_wipe(s->nonce, sizeof s->nonce);
  s->challenged = 0;
  uint8_t cnonce[MF_NONCE_SIZE], theirs[MF_MAC_SIZE], ours[MF_MAC_SIZE];
  int rc = 0;
  if (mf_hex_decode(client_nonce, cnonce, sizeof cnonce) != 0 ||
      mf_hex_decode(proof, theirs, sizeof theirs) != 0) {
    g_snprintf(why, whylen, "a nonce and a proof are 64 hexadecimal digits");
    MF_WARN("peer %s: cluster handshake refused: a malformed nonce or proof", peer_of(s));
    rc = MAYFLY_EPERM;
  } else {
    mf_auth_proof(d->cfg.cluster_key, MF_PROOF_CLIENT, snonce, cnonce, ours);
    if (!mf_mac_equal(ours, theirs)) {
      g_snprintf(why, whylen, "wrong proof (not this cluster's key)");
      MF_WARN("peer %s: cluster handshake refused: wrong proof (a memory server with another "
              "--cluster-key-file?)",
              peer_of(s));
      rc = MAYFLY_EPERM;
    }
  }
  if (rc == 0) {
    s->cluster = 1;
    mf_auth_proof(d->cfg.cluster_key, MF_PROOF_DIRECTORY, snonce, cnonce, ours);
    *hex = g_malloc(2 * MF_MAC_SIZE + 1);
    mf_hex_encode(ours, MF_MAC_SIZE, *hex);
    MF_DEBUG("peer %s: passed the cluster handshake", peer_of(s));
  }
  mf_auth_wipe(snonce, sizeof snonce);
  mf_auth_wipe(ours, sizeof ours);
  return rc;
}

int64_t dir_caps_expiry(const dir_t *d) { return mf_wall_ms() + d->cfg.capability_ttl_ms; }

/* Signs c and answers its hexadecimal form. */
static gchar *sign_hex(const dir_t *d, const mf_cap_t *c) {
  uint8_t bin[MF_CAP_SIZE];
  mf_cap_sign(d->cfg.cluster_key, c, bin);
  gchar *hex = g_malloc(2 * MF_CAP_SIZE + 1);
  mf_hex_encode(bin, sizeof bin, hex);
  return hex;
}

gchar *dir_caps_block(const dir_t *d, const ns_block_t *b, uint8_t rights, uint32_t tenant,
                      int64_t expiry_ms) {
  if (!dir_caps_enabled(d) || rights == 0) return NULL;
  mf_cap_t c = {.rights = rights,
                .server_id = (uint32_t)b->server,
                .block_index = (uint32_t)b->index,
                .tenant = tenant,
                .generation = (uint64_t)b->generation,
                .expiry_ms = expiry_ms};
  return sign_hex(d, &c);
}

gchar *dir_caps_stat(const dir_t *d, int32_t server_id, uint32_t tenant) {
  if (!dir_caps_enabled(d)) return NULL;
  mf_cap_t c = {.rights = MF_RIGHT_STAT,
                .server_id = (uint32_t)server_id,
                .block_index = MF_CAP_ANY_BLOCK,
                .tenant = tenant,
                .expiry_ms = dir_caps_expiry(d)};
  return sign_hex(d, &c);
}

gchar *dir_caps_migrate(const dir_t *d, const ns_block_t *target, int64_t lo, int64_t hi,
                        int64_t op_id) {
  if (!dir_caps_enabled(d)) return NULL;
  mf_cap_t c = {.rights = MF_RIGHT_MIGRATE,
                .server_id = (uint32_t)target->server,
                .block_index = (uint32_t)target->index,
                .generation = (uint64_t)target->generation,
                .expiry_ms = mf_wall_ms() + MAX(d->cfg.capability_ttl_ms, DIR_REPART_TIMEOUT_MS),
                .lo = (uint64_t)lo,
                .hi = (uint64_t)hi,
                .op_id = (uint64_t)op_id};
  return sign_hex(d, &c);
}
