/*
 * Cluster key, capabilities, handshake proofs and frame MACs (see auth.h).
 */
#include "common/auth.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <sodium.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/le.h"

/* Domain separation: a MAC made for one purpose never passes for another. */
static const char CAP_DOMAIN[] = "mayfly-cap-1";
static const char FRAME_DOMAIN[] = "mayfly-frame-1";
static const char PROOF_DOMAIN[] = "mayfly-proof-1";

int mf_auth_init(void) {
  static gsize done = 0;
  static int rc = 0;
  if (g_once_init_enter(&done)) {
    rc = sodium_init() < 0 ? MAYFLY_EIO : 0;
    g_once_init_leave(&done, 1);
  }
  return rc;
}

int mf_auth_key_load(const char *path, uint8_t key[MF_KEY_SIZE], int *world_readable,
                     char *why, size_t whylen) {
  *world_readable = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    g_snprintf(why, whylen, "cannot open %s: %s", path, g_strerror(errno));
    return MAYFLY_EIO;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    g_snprintf(why, whylen, "%s is not a regular file", path);
    close(fd);
    return MAYFLY_EINVAL;
  }
  *world_readable = (st.st_mode & (S_IRGRP | S_IROTH)) != 0;
  /* A key file is at most 64 hex digits and some white space: read a little
   * more than that, so a longer file is refused without reading it all. */
  char buf[256];
  size_t n = 0;
  while (n < sizeof buf) {
    ssize_t r = read(fd, buf + n, sizeof buf - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      g_snprintf(why, whylen, "cannot read %s: %s", path, g_strerror(errno));
      close(fd);
      return MAYFLY_EIO;
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  close(fd);
  int rc = 0;
  if (n == MF_KEY_SIZE) {
    memcpy(key, buf, MF_KEY_SIZE);
  } else {
    size_t lo = 0, hi = n;
    while (lo < hi && g_ascii_isspace(buf[lo])) lo++;
    while (hi > lo && g_ascii_isspace(buf[hi - 1])) hi--;
    char hex[2 * MF_KEY_SIZE + 1];
    if (hi - lo == 2 * MF_KEY_SIZE) {
      memcpy(hex, buf + lo, 2 * MF_KEY_SIZE);
      hex[2 * MF_KEY_SIZE] = '\0';
      rc = mf_hex_decode(hex, key, MF_KEY_SIZE);
    } else {
      rc = MAYFLY_EINVAL;
    }
    sodium_memzero(hex, sizeof hex);
    if (rc != 0) {
      g_snprintf(why, whylen,
                 "%s is not a cluster key: it must hold 32 bytes, or 64 hexadecimal digits "
                 "(make one with: head -c 32 /dev/urandom > %s)",
                 path, path);
    }
  }
  sodium_memzero(buf, sizeof buf);
  return rc;
}

static void cap_body(const mf_cap_t *c, uint8_t b[MF_CAP_BODY]) {
  b[0] = MF_CAP_VERSION;
  b[1] = c->rights;
  b[2] = b[3] = 0;
  mf_le_put32(b + 4, c->server_id);
  mf_le_put32(b + 8, c->block_index);
  mf_le_put32(b + 12, c->tenant);
  mf_le_put64(b + 16, c->generation);
  mf_le_put64(b + 24, (uint64_t)c->expiry_ms);
  mf_le_put64(b + 32, c->lo);
  mf_le_put64(b + 40, c->hi);
  mf_le_put64(b + 48, c->op_id);
}

static void cap_mac(const uint8_t key[MF_KEY_SIZE], const uint8_t body[MF_CAP_BODY],
                    uint8_t out[MF_MAC_SIZE]) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, key, MF_KEY_SIZE, MF_MAC_SIZE);
  crypto_generichash_update(&st, (const unsigned char *)CAP_DOMAIN, sizeof CAP_DOMAIN);
  crypto_generichash_update(&st, body, MF_CAP_BODY);
  crypto_generichash_final(&st, out, MF_MAC_SIZE);
}

void mf_cap_sign(const uint8_t key[MF_KEY_SIZE], const mf_cap_t *c, uint8_t out[MF_CAP_SIZE]) {
  cap_body(c, out);
  cap_mac(key, out, out + MF_CAP_BODY);
}

int mf_cap_decode(const uint8_t *buf, size_t len, mf_cap_t *c) {
  if (len != MF_CAP_SIZE || buf[0] != MF_CAP_VERSION || buf[2] != 0 || buf[3] != 0 ||
      (buf[1] & ~MF_RIGHTS_ALL) != 0) {
    return MAYFLY_EPROTO;
  }
  c->rights = buf[1];
  c->server_id = mf_le_get32(buf + 4);
  c->block_index = mf_le_get32(buf + 8);
  c->tenant = mf_le_get32(buf + 12);
  c->generation = mf_le_get64(buf + 16);
  c->expiry_ms = (int64_t)mf_le_get64(buf + 24);
  c->lo = mf_le_get64(buf + 32);
  c->hi = mf_le_get64(buf + 40);
  c->op_id = mf_le_get64(buf + 48);
  return 0;
}

int mf_cap_verify(const uint8_t key[MF_KEY_SIZE], const uint8_t *buf, size_t len,
                  mf_cap_t *c) {
  if (len != MF_CAP_SIZE) return MAYFLY_EPERM;
  uint8_t mac[MF_MAC_SIZE];
  cap_mac(key, buf, mac);
  if (crypto_verify_32(mac, buf + MF_CAP_BODY) != 0) return MAYFLY_EPERM;
  return mf_cap_decode(buf, len, c) == 0 ? 0 : MAYFLY_EPERM;
}

void mf_auth_proof(const uint8_t key[MF_KEY_SIZE], mf_proof_role_t role,
                   const uint8_t server_nonce[MF_NONCE_SIZE],
                   const uint8_t client_nonce[MF_NONCE_SIZE], uint8_t out[MF_MAC_SIZE]) {
  uint8_t r = (uint8_t)role;
  crypto_generichash_state st;
  crypto_generichash_init(&st, key, MF_KEY_SIZE, MF_MAC_SIZE);
  crypto_generichash_update(&st, (const unsigned char *)PROOF_DOMAIN, sizeof PROOF_DOMAIN);
  crypto_generichash_update(&st, &r, 1);
  crypto_generichash_update(&st, server_nonce, MF_NONCE_SIZE);
  crypto_generichash_update(&st, client_nonce, MF_NONCE_SIZE);
  crypto_generichash_final(&st, out, MF_MAC_SIZE);
}

void mf_auth_random(void *buf, size_t n) { randombytes_buf(buf, n); }

void mf_auth_wipe(void *p, size_t n) { sodium_memzero(p, n); }

void mf_frame_mac(const uint8_t key[MF_KEY_SIZE], const uint8_t *header, const uint8_t *cap,
                  size_t cap_len, const uint8_t *payload, size_t payload_len,
                  uint8_t out[MF_MAC_SIZE]) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, key, MF_KEY_SIZE, MF_MAC_SIZE);
  crypto_generichash_update(&st, (const unsigned char *)FRAME_DOMAIN, sizeof FRAME_DOMAIN);
  crypto_generichash_update(&st, header, 56);
  if (cap_len > 0) crypto_generichash_update(&st, cap, cap_len);
  if (payload_len > 0) crypto_generichash_update(&st, payload, payload_len);
  crypto_generichash_final(&st, out, MF_MAC_SIZE);
}

int mf_mac_equal(const uint8_t a[MF_MAC_SIZE], const uint8_t b[MF_MAC_SIZE]) {
  return crypto_verify_32(a, b) == 0;
}

void mf_hex_encode(const uint8_t *bin, size_t n, char *hex) {
  sodium_bin2hex(hex, 2 * n + 1, bin, n);
}

int mf_hex_decode(const char *hex, uint8_t *bin, size_t n) {
  size_t got = 0;
  const char *end = NULL;
  if (hex == NULL || strlen(hex) != 2 * n) return MAYFLY_EINVAL;
  if (sodium_hex2bin(bin, n, hex, 2 * n, NULL, &got, &end) != 0 || got != n ||
      *end != '\0') {
    return MAYFLY_EINVAL;
  }
  return 0;
}

void mf_token_hash(const char *token, uint8_t out[32]) {
  crypto_hash_sha256(out, (const unsigned char *)token, strlen(token));
}
