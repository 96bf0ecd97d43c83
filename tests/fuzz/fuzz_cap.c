/*
 * Fuzz target for signed capabilities: the decoder and verifier
 * (mf_cap_decode, mf_cap_verify in common/auth.c) and the memory server's
 * check of a request's capability area (ms_capcheck, memserver/capcheck.c),
 * all with one fixed key. Every input is read three ways:
 *
 *   - as a capability: mf_cap_decode accepts exactly the MF_CAP_SIZE-byte
 *     inputs with the known version, zero reserved bytes and known rights,
 *     and then signing the decoded fields gives back the same 56-byte body
 *     (the encoding is canonical);
 *   - as a capability to verify: mf_cap_verify accepts only bytes equal to
 *     one of the signed seeds (fuzz_cap_seed) - nothing made by mutating
 *     one passes, since its MAC would have to be forged - and what it
 *     accepts decodes to the seed's fields;
 *   - as a data-plane frame (wire_parse first, as the server does): the
 *     verdict of ms_capcheck equals an oracle written from the protocol's
 *     rules (rights per opcode, server, block, generation, expiry, migrate
 *     slots and frame MAC), an accepted capability area is a signed seed and
 *     an accepted migration carries the right frame MAC; asked again with
 *     the same cache the answer is the same and no MAC is computed again
 *     for a client request.
 *
 * A failed check aborts. Built as a libFuzzer target with clang
 * (-DMAYFLY_FUZZ=ON); with any compiler it is also linked with
 * fuzz_cap_driver.c into a CTest that replays seeds and their deterministic
 * mutations.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/auth.h"
#include "common/error.h"
#include "common/wire.h"
#include "fz_check.h"
#include "memserver/capcheck.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Seed capability i signed under the key (the driver's seeds too);
 * returns 0 past the last. */
int fuzz_cap_seed(size_t i, uint8_t out[MF_CAP_SIZE]);

/* The key, this server's id and the wall clock every check uses. */
const uint8_t fuzz_cap_key[MF_KEY_SIZE] = {0x6d, 0x61, 0x79, 0x66, 0x6c, 0x79, 0x2d, 0x66,
                                           0x75, 0x7a, 0x7a, 0x2d, 0x6b, 0x65, 0x79, 1,
                                           2,    3,    4,    5,    6,    7,    8,    9,
                                           10,   11,   12,   13,   14,   15,   16,   17};
#define SERVER 5u
#define NOW 1800000000000LL

long fuzz_cap_decoded, fuzz_cap_undecoded, fuzz_cap_verified, fuzz_cap_forged;
long fuzz_cap_frames_ok, fuzz_cap_frames_refused, fuzz_cap_migrations_ok;

/* The signed seeds: a good capability for each right, block 3 generation
 * 9 (the server-wide one for STAT; slots [100, 200) for MIGRATE), and
 * capabilities that fail one check each: expired, another server, another
 * generation, read only. */
#define NSEEDS 9
static mf_cap_t seed_fields(size_t i) {
  mf_cap_t c = {.rights = MF_RIGHT_READ | MF_RIGHT_WRITE,
                .server_id = SERVER,
                .block_index = 3,
                .tenant = 0x11223344,
                .generation = 9,
                .expiry_ms = NOW + 600000};
  switch (i) {
    case 1:
      c.rights = MF_RIGHT_READ;
      break;
    case 2:
      c.rights = MF_RIGHT_MIGRATE;
      c.lo = 100;
      c.hi = 200;
      c.op_id = 77;
      break;
    case 3:
      c.rights = MF_RIGHT_STAT;
      c.block_index = MF_CAP_ANY_BLOCK;
      c.generation = 0;
      break;
    case 4:
      c.expiry_ms = NOW - 1;
      break;
    case 5:
      c.server_id = SERVER + 1;
      break;
    case 6:
      c.generation = 10;
      break;
    case 7:
      c.rights = MF_RIGHTS_ALL;
      c.block_index = 4;
      c.lo = 0;
      c.hi = WIRE_KV_SLOTS;
      break;
    case 8:
      c.expiry_ms = NOW; /* expires exactly now */
      break;
    default:
      break;
  }
  return c;
}

int fuzz_cap_seed(size_t i, uint8_t out[MF_CAP_SIZE]) {
  if (i >= NSEEDS) return 0;
  mf_cap_t c = seed_fields(i);
  mf_cap_sign(fuzz_cap_key, &c, out);
  return 1;
}

/* The seed the bytes equal, or -1. */
static int seed_of(const uint8_t *p) {
  uint8_t s[MF_CAP_SIZE];
  for (size_t i = 0; fuzz_cap_seed(i, s); i++) {
    if (memcmp(s, p, MF_CAP_SIZE) == 0) return (int)i;
  }
  return -1;
}

static void as_capability(const uint8_t *data, size_t size) {
  mf_cap_t c;
  memset(&c, 0xa5, sizeof c);
  int rc = mf_cap_decode(data, size, &c);
  int valid = size == MF_CAP_SIZE && data[0] == MF_CAP_VERSION && data[2] == 0 && data[3] == 0 &&
              (data[1] & ~MF_RIGHTS_ALL) == 0;
  FZ_CHECK((rc == 0) == valid);
  if (rc != 0) {
    FZ_CHECK(rc == MAYFLY_EPROTO);
    fuzz_cap_undecoded++;
  } else {
    uint8_t again[MF_CAP_SIZE];
    mf_cap_sign(fuzz_cap_key, &c, again);
    FZ_CHECK(memcmp(again, data, MF_CAP_BODY) == 0);
    fuzz_cap_decoded++;
  }
  rc = mf_cap_verify(fuzz_cap_key, data, size, &c);
  if (rc == 0) {
    FZ_CHECK(size == MF_CAP_SIZE);
    int s = seed_of(data);
    FZ_CHECK(s >= 0);
    mf_cap_t want = seed_fields((size_t)s);
    FZ_CHECK(c.rights == want.rights && c.server_id == want.server_id &&
             c.block_index == want.block_index && c.tenant == want.tenant &&
             c.generation == want.generation && c.expiry_ms == want.expiry_ms &&
             c.lo == want.lo && c.hi == want.hi && c.op_id == want.op_id);
    fuzz_cap_verified++;
  } else {
    FZ_CHECK(rc == MAYFLY_EPERM);
    FZ_CHECK(size != MF_CAP_SIZE || seed_of(data) < 0);
    fuzz_cap_forged++;
  }
}

/* What the protocol says about the frame h of frame[0..flen), written
 * without looking at capcheck.c. */
static int oracle(const wire_hdr_t *h, const uint8_t *frame) {
  unsigned need;
  switch (h->opcode) {
    case WIRE_OP_BLOCK_STAT: case WIRE_OP_FILE_READ: case WIRE_OP_FILE_SIZE:
    case WIRE_OP_Q_PEEK: case WIRE_OP_Q_LEN: case WIRE_OP_KV_GET: case WIRE_OP_KV_EXISTS:
      need = MF_RIGHT_READ;
      break;
    case WIRE_OP_FILE_WRITE: case WIRE_OP_FILE_TRUNCATE: case WIRE_OP_Q_PUSH:
    case WIRE_OP_Q_POP: case WIRE_OP_KV_PUT: case WIRE_OP_KV_DEL:
      need = MF_RIGHT_WRITE;
      break;
    case WIRE_OP_KV_MIGRATE: case WIRE_OP_KV_MIGRATE_ABORT:
      need = MF_RIGHT_MIGRATE;
      break;
    case WIRE_OP_SERVER_STAT:
      need = MF_RIGHT_STAT;
      break;
    default:
      return 1; /* PING, and opcodes that do not exist */
  }
  size_t area = need == MF_RIGHT_MIGRATE ? MF_FRAME_AUTH_SIZE : MF_CAP_SIZE;
  if (h->cap_len != area) return 0;
  const uint8_t *cap = frame + WIRE_HEADER_SIZE;
  int s = seed_of(cap);
  if (s < 0) return 0; /* only the seeds are signed */
  mf_cap_t c = seed_fields((size_t)s);
  if (c.server_id != SERVER || !(c.rights & need) || NOW >= c.expiry_ms) return 0;
  if (need == MF_RIGHT_STAT) return c.block_index == MF_CAP_ANY_BLOCK;
  if (c.block_index != h->block_index || c.generation != h->generation) return 0;
  if (need != MF_RIGHT_MIGRATE) return 1;
  if (h->arg0 > h->arg1 || h->arg0 < c.lo || h->arg1 > c.hi) return 0;
  uint8_t mac[MF_MAC_SIZE];
  mf_frame_mac(fuzz_cap_key, frame, cap, MF_CAP_SIZE, frame + WIRE_HEADER_SIZE + area,
               h->payload_len, mac);
  return memcmp(mac, cap + MF_CAP_SIZE, MF_MAC_SIZE) == 0;
}

static void as_frames(const uint8_t *data, size_t size) {
  ms_capcache_t cache;
  memset(&cache, 0, sizeof cache);
  size_t pos = 0;
  wire_hdr_t h;
  size_t flen = 0;
  while (pos < size && wire_parse(data + pos, size - pos, 1u << 20, &h, &flen) == 0) {
    const uint8_t *f = data + pos;
    ms_capcheck_stats_t st = {0};
    int rc = ms_capcheck(fuzz_cap_key, SERVER, NOW, &cache, &st, &h, f, flen);
    FZ_CHECK(rc == 0 || rc == MAYFLY_EPERM);
    FZ_CHECK((rc == 0) == oracle(&h, f));
    FZ_CHECK(st.refused == (rc != 0));
    /* A frame cut short of its header's lengths is never accepted. */
    if (ms_capcheck_right(h.opcode) > 0) {
      ms_capcheck_stats_t cut = {0};
      FZ_CHECK(ms_capcheck(fuzz_cap_key, SERVER, NOW, NULL, &cut, &h, f, flen - 1) ==
               MAYFLY_EPERM);
    }
    /* Again with what the cache now holds: the same answer, and a client
     * request's capability that verified is not verified again. */
    ms_capcheck_stats_t again = {0};
    FZ_CHECK(ms_capcheck(fuzz_cap_key, SERVER, NOW, &cache, &again, &h, f, flen) == rc);
    int migrate = h.opcode == WIRE_OP_KV_MIGRATE || h.opcode == WIRE_OP_KV_MIGRATE_ABORT;
    if (!migrate && st.verified == 1 && h.cap_len == MF_CAP_SIZE &&
        seed_of(f + WIRE_HEADER_SIZE) >= 0) {
      FZ_CHECK(again.verified == 0 && again.hits == 1);
    }
    if (rc == 0) {
      fuzz_cap_frames_ok++;
      if (migrate) fuzz_cap_migrations_ok++;
    } else {
      fuzz_cap_frames_refused++;
    }
    pos += flen;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const uint8_t nothing[1];
  if (data == NULL) data = nothing; /* no arithmetic on a null pointer */
  as_capability(data, size);
  as_frames(data, size);
  return 0;
}
