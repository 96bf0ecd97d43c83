/*
 * Unit tests for common/auth.c: the cluster key, capabilities, handshake
 * proofs and frame MACs.
 *
 * What the directory and the memory servers rely on: a capability signed
 * under the key verifies and decodes to exactly the fields signed; changing
 * any one of its 88 bytes, or the key, makes it fail; the decoder refuses
 * every length but MF_CAP_SIZE, unknown versions and set reserved bits or
 * rights; the two proofs of the handshake differ by role and by each nonce
 * (so neither can stand in for the other, nor be replayed under another
 * nonce); a frame MAC changes with any byte of the header, the capability or
 * the payload; hex round-trips and refuses what is not exactly 2n hex
 * digits; and a key file is 32 raw bytes or 64 hex digits (white space
 * around allowed), anything else refused with a reason, a missing file too,
 * and a file others may read is flagged.
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/auth.h"
#include "common/error.h"
#include "mf_test.h"

static uint8_t key[MF_KEY_SIZE];
static uint8_t other_key[MF_KEY_SIZE];

/* A capability with a different value in every field. */
static mf_cap_t sample_cap(void) {
  return (mf_cap_t){.rights = MF_RIGHT_READ | MF_RIGHT_WRITE,
                    .server_id = 0x01020304,
                    .block_index = 0x0a0b0c0d,
                    .tenant = 0x11121314,
                    .generation = 0x2122232425262728ULL,
                    .expiry_ms = 0x0000313233343536LL,
                    .lo = 0x4142434445464748ULL,
                    .hi = 0x5152535455565758ULL,
                    .op_id = 0x6162636465666768ULL};
}

static void assert_same_cap(const mf_cap_t *a, const mf_cap_t *b) {
  MF_ASSERT_EQ(a->rights, b->rights);
  MF_ASSERT_EQ(a->server_id, b->server_id);
  MF_ASSERT_EQ(a->block_index, b->block_index);
  MF_ASSERT_EQ(a->tenant, b->tenant);
  CU_ASSERT_EQUAL(a->generation, b->generation);
  CU_ASSERT_EQUAL(a->expiry_ms, b->expiry_ms);
  CU_ASSERT_EQUAL(a->lo, b->lo);
  CU_ASSERT_EQUAL(a->hi, b->hi);
  CU_ASSERT_EQUAL(a->op_id, b->op_id);
}

static void test_sign_verify_round_trip(void) {
  mf_cap_t c = sample_cap(), got;
  uint8_t buf[MF_CAP_SIZE];
  mf_cap_sign(key, &c, buf);
  memset(&got, 0xee, sizeof got);
  MF_ASSERT_EQ(mf_cap_verify(key, buf, sizeof buf, &got), 0);
  assert_same_cap(&got, &c);
  /* The decoder reads the same fields without the key. */
  memset(&got, 0xee, sizeof got);
  MF_ASSERT_EQ(mf_cap_decode(buf, sizeof buf, &got), 0);
  assert_same_cap(&got, &c);
  /* The layout of auth.h: version first, little-endian fields. */
  MF_ASSERT_EQ(buf[0], MF_CAP_VERSION);
  MF_ASSERT_EQ(buf[1], MF_RIGHT_READ | MF_RIGHT_WRITE);
  MF_ASSERT_EQ(buf[4], 0x04);
  MF_ASSERT_EQ(buf[8], 0x0d);
  MF_ASSERT_EQ(buf[16], 0x28);
  /* Signing is deterministic: the same fields give the same bytes. */
  uint8_t again[MF_CAP_SIZE];
  mf_cap_sign(key, &c, again);
  CU_ASSERT(memcmp(buf, again, sizeof buf) == 0);
}

static void test_every_byte_flipped_is_refused(void) {
  mf_cap_t c = sample_cap(), got;
  uint8_t buf[MF_CAP_SIZE];
  mf_cap_sign(key, &c, buf);
  int refused = 0;
  for (size_t i = 0; i < MF_CAP_SIZE; i++) {
    for (int bit = 0; bit < 8; bit++) {
      uint8_t bad[MF_CAP_SIZE];
      memcpy(bad, buf, sizeof bad);
      bad[i] ^= (uint8_t)(1u << bit);
      if (mf_cap_verify(key, bad, sizeof bad, &got) == MAYFLY_EPERM) refused++;
    }
  }
  MF_ASSERT_EQ(refused, MF_CAP_SIZE * 8);
  /* The original still verifies (the loop worked on copies). */
  MF_ASSERT_EQ(mf_cap_verify(key, buf, sizeof buf, &got), 0);
}

static void test_wrong_key_refused(void) {
  mf_cap_t c = sample_cap(), got;
  uint8_t buf[MF_CAP_SIZE];
  mf_cap_sign(key, &c, buf);
  MF_ASSERT_EQ(mf_cap_verify(other_key, buf, sizeof buf, &got), MAYFLY_EPERM);
  /* A key differing in one bit only. */
  uint8_t near[MF_KEY_SIZE];
  memcpy(near, key, sizeof near);
  near[MF_KEY_SIZE - 1] ^= 0x80;
  MF_ASSERT_EQ(mf_cap_verify(near, buf, sizeof buf, &got), MAYFLY_EPERM);
  /* An all-zero capability is no capability. */
  uint8_t zero[MF_CAP_SIZE] = {0};
  MF_ASSERT_EQ(mf_cap_verify(key, zero, sizeof zero, &got), MAYFLY_EPERM);
}

static void test_decode_refuses_malformed(void) {
  mf_cap_t c = sample_cap(), got;
  uint8_t buf[MF_CAP_SIZE + 8];
  mf_cap_sign(key, &c, buf);
  /* Every other length, shorter and longer. */
  for (size_t len = 0; len < sizeof buf; len++) {
    if (len == MF_CAP_SIZE) continue;
    MF_ASSERT_EQ(mf_cap_decode(buf, len, &got), MAYFLY_EPROTO);
    MF_ASSERT_EQ(mf_cap_verify(key, buf, len, &got), MAYFLY_EPERM);
  }
  /* Unknown versions. */
  for (int v = 0; v < 256; v++) {
    if (v == MF_CAP_VERSION) continue;
    uint8_t bad[MF_CAP_SIZE];
    memcpy(bad, buf, sizeof bad);
    bad[0] = (uint8_t)v;
    MF_ASSERT_EQ(mf_cap_decode(bad, sizeof bad, &got), MAYFLY_EPROTO);
  }
  /* Reserved bytes and unknown rights bits, even under a valid MAC: the
   * decoder refuses them, so verify does too. */
  static const size_t reserved_byte[] = {2, 3};
  for (size_t k = 0; k < 2; k++) {
    for (int bit = 0; bit < 8; bit++) {
      uint8_t bad[MF_CAP_SIZE];
      memcpy(bad, buf, sizeof bad);
      bad[reserved_byte[k]] |= (uint8_t)(1u << bit);
      MF_ASSERT_EQ(mf_cap_decode(bad, sizeof bad, &got), MAYFLY_EPROTO);
    }
  }
  for (int bit = 4; bit < 8; bit++) {
    uint8_t bad[MF_CAP_SIZE];
    memcpy(bad, buf, sizeof bad);
    bad[1] |= (uint8_t)(1u << bit);
    MF_ASSERT_EQ(mf_cap_decode(bad, sizeof bad, &got), MAYFLY_EPROTO);
  }
  /* Every right that exists decodes. */
  for (unsigned r = 0; r <= MF_RIGHTS_ALL; r++) {
    mf_cap_t cr = sample_cap();
    cr.rights = (uint8_t)r;
    uint8_t ok[MF_CAP_SIZE];
    mf_cap_sign(key, &cr, ok);
    MF_ASSERT_EQ(mf_cap_verify(key, ok, sizeof ok, &got), 0);
    MF_ASSERT_EQ(got.rights, r);
  }
}

static void test_proofs_differ_by_role_and_nonce(void) {
  uint8_t sn[MF_NONCE_SIZE], cn[MF_NONCE_SIZE], sn2[MF_NONCE_SIZE], cn2[MF_NONCE_SIZE];
  mf_auth_random(sn, sizeof sn);
  mf_auth_random(cn, sizeof cn);
  memcpy(sn2, sn, sizeof sn2);
  sn2[0] ^= 1;
  memcpy(cn2, cn, sizeof cn2);
  cn2[MF_NONCE_SIZE - 1] ^= 1;
  uint8_t client[MF_MAC_SIZE], dir[MF_MAC_SIZE], p[MF_MAC_SIZE];
  mf_auth_proof(key, MF_PROOF_CLIENT, sn, cn, client);
  mf_auth_proof(key, MF_PROOF_DIRECTORY, sn, cn, dir);
  CU_ASSERT(!mf_mac_equal(client, dir));
  /* The same inputs give the same proof (the other side recomputes it). */
  mf_auth_proof(key, MF_PROOF_CLIENT, sn, cn, p);
  CU_ASSERT(mf_mac_equal(client, p));
  mf_auth_proof(key, MF_PROOF_CLIENT, sn2, cn, p);
  CU_ASSERT(!mf_mac_equal(client, p));
  mf_auth_proof(key, MF_PROOF_CLIENT, sn, cn2, p);
  CU_ASSERT(!mf_mac_equal(client, p));
  /* Swapping the nonces is another proof. */
  mf_auth_proof(key, MF_PROOF_CLIENT, cn, sn, p);
  CU_ASSERT(!mf_mac_equal(client, p));
  mf_auth_proof(other_key, MF_PROOF_CLIENT, sn, cn, p);
  CU_ASSERT(!mf_mac_equal(client, p));
  /* mf_mac_equal looks at every byte. */
  for (size_t i = 0; i < MF_MAC_SIZE; i++) {
    memcpy(p, client, sizeof p);
    p[i] ^= 0x01;
    CU_ASSERT(!mf_mac_equal(client, p));
  }
}

static void test_frame_mac_covers_everything(void) {
  uint8_t header[56], cap[MF_CAP_SIZE], payload[100];
  for (size_t i = 0; i < sizeof header; i++) header[i] = (uint8_t)i;
  for (size_t i = 0; i < sizeof cap; i++) cap[i] = (uint8_t)(0x40 + i);
  for (size_t i = 0; i < sizeof payload; i++) payload[i] = (uint8_t)(0x80 + i);
  uint8_t mac[MF_MAC_SIZE], m[MF_MAC_SIZE];
  mf_frame_mac(key, header, cap, sizeof cap, payload, sizeof payload, mac);
  mf_frame_mac(key, header, cap, sizeof cap, payload, sizeof payload, m);
  CU_ASSERT(mf_mac_equal(mac, m));
  int changed = 0, tried = 0;
  for (size_t i = 0; i < sizeof header; i++, tried++) {
    header[i] ^= 0x10;
    mf_frame_mac(key, header, cap, sizeof cap, payload, sizeof payload, m);
    changed += !mf_mac_equal(mac, m);
    header[i] ^= 0x10;
  }
  for (size_t i = 0; i < sizeof cap; i++, tried++) {
    cap[i] ^= 0x10;
    mf_frame_mac(key, header, cap, sizeof cap, payload, sizeof payload, m);
    changed += !mf_mac_equal(mac, m);
    cap[i] ^= 0x10;
  }
  for (size_t i = 0; i < sizeof payload; i++, tried++) {
    payload[i] ^= 0x10;
    mf_frame_mac(key, header, cap, sizeof cap, payload, sizeof payload, m);
    changed += !mf_mac_equal(mac, m);
    payload[i] ^= 0x10;
  }
  MF_ASSERT_EQ(changed, tried);
  /* A shorter payload, another key. */
  mf_frame_mac(key, header, cap, sizeof cap, payload, sizeof payload - 1, m);
  CU_ASSERT(!mf_mac_equal(mac, m));
  mf_frame_mac(other_key, header, cap, sizeof cap, payload, sizeof payload, m);
  CU_ASSERT(!mf_mac_equal(mac, m));
  /* No capability and no payload is a MAC too, unlike the one with them. */
  mf_frame_mac(key, header, NULL, 0, NULL, 0, m);
  CU_ASSERT(!mf_mac_equal(mac, m));
  /* A frame MAC never passes for a capability's MAC over the same bytes:
   * the domains differ. */
  mf_cap_t c = sample_cap();
  uint8_t signed_cap[MF_CAP_SIZE];
  mf_cap_sign(key, &c, signed_cap);
  mf_frame_mac(key, signed_cap, NULL, 0, NULL, 0, m);
  CU_ASSERT(!mf_mac_equal(signed_cap + MF_CAP_BODY, m));
}

static void test_hex_round_trip_and_bad_hex(void) {
  uint8_t bin[MF_CAP_SIZE], back[MF_CAP_SIZE];
  for (size_t i = 0; i < sizeof bin; i++) bin[i] = (uint8_t)(i * 37 + 11);
  char hex[2 * MF_CAP_SIZE + 1];
  mf_hex_encode(bin, sizeof bin, hex);
  MF_ASSERT_EQ(strlen(hex), 2 * MF_CAP_SIZE);
  for (size_t i = 0; hex[i]; i++) CU_ASSERT(g_ascii_isxdigit(hex[i]) && !g_ascii_isupper(hex[i]));
  MF_ASSERT_EQ(mf_hex_decode(hex, back, sizeof back), 0);
  CU_ASSERT(memcmp(bin, back, sizeof bin) == 0);
  /* Upper case decodes too. */
  char upper[2 * MF_CAP_SIZE + 1];
  for (size_t i = 0; i <= 2 * MF_CAP_SIZE; i++) upper[i] = g_ascii_toupper(hex[i]);
  MF_ASSERT_EQ(mf_hex_decode(upper, back, sizeof back), 0);
  CU_ASSERT(memcmp(bin, back, sizeof bin) == 0);
  uint8_t four[4];
  MF_ASSERT_EQ(mf_hex_decode("0102030", four, 4), MAYFLY_EINVAL);   /* short */
  MF_ASSERT_EQ(mf_hex_decode("010203040", four, 4), MAYFLY_EINVAL); /* long */
  MF_ASSERT_EQ(mf_hex_decode("0102030g", four, 4), MAYFLY_EINVAL);  /* not hex */
  MF_ASSERT_EQ(mf_hex_decode("01 20304", four, 4), MAYFLY_EINVAL);  /* a space */
  MF_ASSERT_EQ(mf_hex_decode("", four, 4), MAYFLY_EINVAL);
  MF_ASSERT_EQ(mf_hex_decode(NULL, four, 4), MAYFLY_EINVAL);
  MF_ASSERT_EQ(mf_hex_decode("deadBEEF", four, 4), 0);
  MF_ASSERT_EQ(four[0], 0xde);
  MF_ASSERT_EQ(four[3], 0xef);
}

/* Writes a key file in a scratch directory with the given mode. */
static char *write_file(const char *dir, const char *name, const void *data, size_t len,
                        int mode) {
  char *path = g_build_filename(dir, name, NULL);
  CU_ASSERT_FATAL(g_file_set_contents(path, data, (gssize)len, NULL));
  CU_ASSERT_FATAL(g_chmod(path, mode) == 0);
  return path;
}

static void test_key_file_loading(void) {
  char *dir = g_dir_make_tmp("mayfly-auth-XXXXXX", NULL);
  CU_ASSERT_FATAL(dir != NULL);
  uint8_t raw[MF_KEY_SIZE], got[MF_KEY_SIZE];
  mf_auth_random(raw, sizeof raw);
  char hex[2 * MF_KEY_SIZE + 1];
  mf_hex_encode(raw, sizeof raw, hex);
  char why[512];
  int wr = -1;

  /* 32 raw bytes. */
  char *p = write_file(dir, "raw", raw, sizeof raw, 0600);
  MF_ASSERT_EQ(mf_auth_key_load(p, got, &wr, why, sizeof why), 0);
  CU_ASSERT(memcmp(raw, got, sizeof raw) == 0);
  MF_ASSERT_EQ(wr, 0);
  g_unlink(p);
  g_free(p);

  /* 64 hex digits and a newline (what `xxd -p -c 64` writes), and with
   * white space around. */
  char *text = g_strdup_printf("%s\n", hex);
  p = write_file(dir, "hex", text, strlen(text), 0400);
  memset(got, 0, sizeof got);
  MF_ASSERT_EQ(mf_auth_key_load(p, got, &wr, why, sizeof why), 0);
  CU_ASSERT(memcmp(raw, got, sizeof raw) == 0);
  g_unlink(p);
  g_free(p);
  g_free(text);
  text = g_strdup_printf("  \t%s \r\n\n", hex);
  p = write_file(dir, "hexspace", text, strlen(text), 0600);
  memset(got, 0, sizeof got);
  MF_ASSERT_EQ(mf_auth_key_load(p, got, &wr, why, sizeof why), 0);
  CU_ASSERT(memcmp(raw, got, sizeof raw) == 0);
  g_unlink(p);
  g_free(p);
  g_free(text);

  /* Too short, too long (raw and hex), not hex: refused with a reason. */
  struct {
    const char *name;
    const char *data;
    size_t len;
  } bad[] = {{"empty", "", 0},
             {"short-raw", (const char *)raw, 31},
             {"long-raw", NULL, 33},
             {"short-hex", hex, 63},
             {"long-hex", NULL, 65},
             {"not-hex", NULL, 64},
             {"huge", NULL, 4096}};
  char long_raw[33], long_hex[65], not_hex[64], huge[4096];
  memcpy(long_raw, raw, 32);
  long_raw[32] = 'x';
  memcpy(long_hex, hex, 64);
  long_hex[64] = 'a';
  memcpy(not_hex, hex, 64);
  not_hex[10] = 'z';
  memset(huge, 'a', sizeof huge);
  bad[2].data = long_raw;
  bad[4].data = long_hex;
  bad[5].data = not_hex;
  bad[6].data = huge;
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    p = write_file(dir, bad[i].name, bad[i].data, bad[i].len, 0600);
    why[0] = '\0';
    int rc = mf_auth_key_load(p, got, &wr, why, sizeof why);
    if (rc != MAYFLY_EINVAL) fprintf(stderr, "  key file %s: rc %d\n", bad[i].name, rc);
    MF_ASSERT_EQ(rc, MAYFLY_EINVAL);
    CU_ASSERT(strstr(why, "not a cluster key") != NULL);
    g_unlink(p);
    g_free(p);
  }

  /* A missing file, and a directory. */
  p = g_build_filename(dir, "missing", NULL);
  why[0] = '\0';
  MF_ASSERT_EQ(mf_auth_key_load(p, got, &wr, why, sizeof why), MAYFLY_EIO);
  CU_ASSERT(strstr(why, "missing") != NULL);
  g_free(p);
  MF_ASSERT_EQ(mf_auth_key_load(dir, got, &wr, why, sizeof why), MAYFLY_EINVAL);

  /* Readable by group or others: accepted, flagged. */
  static const int modes[] = {0640, 0604, 0644};
  for (size_t i = 0; i < G_N_ELEMENTS(modes); i++) {
    p = write_file(dir, "shared", raw, sizeof raw, modes[i]);
    wr = 0;
    memset(got, 0, sizeof got);
    MF_ASSERT_EQ(mf_auth_key_load(p, got, &wr, why, sizeof why), 0);
    MF_ASSERT_EQ(wr, 1);
    CU_ASSERT(memcmp(raw, got, sizeof raw) == 0);
    g_unlink(p);
    g_free(p);
  }
  g_rmdir(dir);
  g_free(dir);
}

static void test_token_hash_is_sha256(void) {
  uint8_t h[32];
  char hex[65];
  mf_token_hash("abc", h);
  mf_hex_encode(h, sizeof h, hex);
  CU_ASSERT_STRING_EQUAL(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static int init(void) {
  if (mf_auth_init() != 0) return 1;
  mf_auth_random(key, sizeof key);
  do {
    mf_auth_random(other_key, sizeof other_key);
  } while (memcmp(key, other_key, sizeof key) == 0);
  return 0;
}

static const mf_test_t tests[] = {
    {"a signed capability verifies and decodes to its fields", test_sign_verify_round_trip},
    {"every bit of a capability flipped is refused", test_every_byte_flipped_is_refused},
    {"a capability under another key is refused", test_wrong_key_refused},
    {"decode refuses wrong lengths, versions, reserved bits", test_decode_refuses_malformed},
    {"handshake proofs differ by role, nonce and key", test_proofs_differ_by_role_and_nonce},
    {"a frame MAC covers header, capability and payload", test_frame_mac_covers_everything},
    {"hex round-trips; bad hex is refused", test_hex_round_trip_and_bad_hex},
    {"key files: raw, hex, bad, missing, world-readable", test_key_file_loading},
    {"a token hash is SHA-256", test_token_hash_is_sha256},
    {NULL, NULL}};

int main(void) { return mf_test_run("auth", init, NULL, tests); }
