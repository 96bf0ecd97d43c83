/*
 * Trust between Mayfly's parts (docs/security.md): the cluster key, signed
 * block capabilities, the cluster handshake and the MAC of server-to-server
 * frames. Built on libsodium: keyed BLAKE2b (crypto_generichash) for every
 * MAC, crypto_verify_32 to compare them in constant time, SHA-256 for tenant
 * tokens.
 *
 * The cluster key is 32 random bytes shared by the directory and its memory
 * servers (--cluster-key-file). It never travels: the directory proves it
 * holds the key by signing capabilities, the memory servers by answering the
 * directory's challenge.
 *
 * A capability (MF_CAP_SIZE bytes, in the data-plane header) is the
 * directory's word that its holder may use one block of one memory server
 * with some rights until a time:
 *
 *   offset size field
 *        0    1 version (MF_CAP_VERSION)
 *        1    1 rights (MF_RIGHT_* bits)
 *        2    2 reserved, 0
 *        4    4 server_id
 *        8    4 block_index (MF_CAP_ANY_BLOCK for a server-wide right)
 *       12    4 tenant (the tenant's id; 0 for an open directory)
 *       16    8 generation
 *       24    8 expiry_ms (wall clock, ms since the epoch)
 *       32    8 lo     \  MF_RIGHT_MIGRATE: the slots [lo, hi) of repartition
 *       40    8 hi      > op_id; 0 otherwise
 *       48    8 op_id  /
 *       56   32 MAC: keyed BLAKE2b-256 of "mayfly-cap-1" and bytes 0..55
 *
 * Integers are little-endian. Pure functions apart from mf_auth_init (which
 * initialises libsodium once, thread-safe) and mf_auth_key_load (a file).
 */
#ifndef MAYFLY_AUTH_H
#define MAYFLY_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define MF_KEY_SIZE 32
#define MF_MAC_SIZE 32
#define MF_NONCE_SIZE 32
#define MF_CAP_BODY 56
#define MF_CAP_SIZE (MF_CAP_BODY + MF_MAC_SIZE)
#define MF_CAP_VERSION 1
#define MF_CAP_ANY_BLOCK UINT32_MAX
/* A server-to-server frame's capability area: the directory's capability,
 * then the sender's MAC over the frame (mf_frame_mac). */
#define MF_FRAME_AUTH_SIZE (MF_CAP_SIZE + MF_MAC_SIZE)

/* Rights a capability grants. */
#define MF_RIGHT_READ 0x01u    /* reads, lengths, sizes, BLOCK_STAT */
#define MF_RIGHT_WRITE 0x02u   /* writes, deletes, pops, truncation */
#define MF_RIGHT_MIGRATE 0x04u /* KV_MIGRATE/KV_MIGRATE_ABORT of one repartition */
#define MF_RIGHT_STAT 0x08u    /* SERVER_STAT (block MF_CAP_ANY_BLOCK) */
#define MF_RIGHTS_ALL 0x0fu

typedef struct mf_cap {
  uint8_t rights;
  uint32_t server_id;
  uint32_t block_index;
  uint32_t tenant;
  uint64_t generation;
  int64_t expiry_ms;
  uint64_t lo, hi, op_id;
} mf_cap_t;

/* Initialises libsodium (idempotent, thread-safe). Returns 0, or
 * MAYFLY_EIO when libsodium cannot start (no randomness source). */
int mf_auth_init(void);

/*
 * Reads a cluster key file: exactly 32 bytes, or 64 hexadecimal digits
 * (surrounding white space allowed). Returns 0, or MAYFLY_EIO (cannot read)
 * or MAYFLY_EINVAL (not a key) with the reason in why. A file that others
 * than its owner may read is accepted with *world_readable set, so the
 * caller can warn.
 */
int mf_auth_key_load(const char *path, uint8_t key[MF_KEY_SIZE], int *world_readable,
                     char *why, size_t whylen);

/* Signs c under key into out. */
void mf_cap_sign(const uint8_t key[MF_KEY_SIZE], const mf_cap_t *c, uint8_t out[MF_CAP_SIZE]);

/* Decodes a capability's fields without checking its MAC (the client reads
 * its expiry). Returns 0, or MAYFLY_EPROTO when len is not MF_CAP_SIZE, the
 * version is unknown or a reserved field is set. Fuzzed. */
int mf_cap_decode(const uint8_t *buf, size_t len, mf_cap_t *c);

/* Checks the MAC of the capability in buf[0..len) in constant time and
 * decodes it. Returns 0, or MAYFLY_EPERM (wrong length, unknown version or a
 * MAC that does not match). Says nothing about expiry or rights: the caller
 * compares them with the request. */
int mf_cap_verify(const uint8_t key[MF_KEY_SIZE], const uint8_t *buf, size_t len,
                  mf_cap_t *c);

/* The cluster handshake. The directory draws a nonce; the memory server
 * draws its own and answers with proof(CLIENT); the directory checks it and
 * answers proof(DIRECTORY), which the memory server checks in turn. Each
 * proof is a keyed BLAKE2b of the role and both nonces, so neither side
 * sends the key and neither proof can be replayed on another connection. */
typedef enum { MF_PROOF_CLIENT = 1, MF_PROOF_DIRECTORY = 2 } mf_proof_role_t;
void mf_auth_proof(const uint8_t key[MF_KEY_SIZE], mf_proof_role_t role,
                   const uint8_t server_nonce[MF_NONCE_SIZE],
                   const uint8_t client_nonce[MF_NONCE_SIZE], uint8_t out[MF_MAC_SIZE]);

/* Zeroes a secret in a way the compiler keeps. */
void mf_auth_wipe(void *p, size_t n);

/* Fills buf with n random bytes. */
void mf_auth_random(void *buf, size_t n);

/* The MAC of a server-to-server frame: keyed BLAKE2b-256 over the 56-byte
 * header as sent, the capability that precedes the MAC, and the payload. */
void mf_frame_mac(const uint8_t key[MF_KEY_SIZE], const uint8_t *header, const uint8_t *cap,
                  size_t cap_len, const uint8_t *payload, size_t payload_len,
                  uint8_t out[MF_MAC_SIZE]);

/* Constant-time comparison of two MACs: 1 when equal. */
int mf_mac_equal(const uint8_t a[MF_MAC_SIZE], const uint8_t b[MF_MAC_SIZE]);

/* Lowercase hexadecimal of bin[0..n) into hex (2n + 1 bytes). */
void mf_hex_encode(const uint8_t *bin, size_t n, char *hex);
/* Decodes exactly n bytes from a string of 2n hex digits. Returns 0 or
 * MAYFLY_EINVAL. */
int mf_hex_decode(const char *hex, uint8_t *bin, size_t n);

/* SHA-256 of a tenant token, the form a tenants file stores. */
void mf_token_hash(const char *token, uint8_t out[32]);

#endif /* MAYFLY_AUTH_H */
