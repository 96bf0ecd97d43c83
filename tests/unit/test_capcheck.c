/*
 * Unit tests for memserver/capcheck.c: the memory server's check of the
 * capability a data-plane request carries.
 *
 * For every opcode: a request with no capability, one signed with another
 * key, one for another server, block or generation, an expired one and one
 * lacking the opcode's right is refused with MAYFLY_EPERM; a good one is
 * accepted; PING and opcodes that do not exist need none. Migration frames
 * also need the frame MAC over the frame as sent and slots inside the
 * capability's. The per-connection cache verifies a capability once (the
 * counters say how many MACs were computed), replaces a block's entry when a
 * different capability comes, and still checks expiry and every field on a
 * hit. Frames are built with wire_encode and decoded with wire_parse, as the
 * server does.
 */
#include <glib.h>
#include <string.h>

#include "common/auth.h"
#include "common/error.h"
#include "common/wire.h"
#include "memserver/capcheck.h"
#include "mf_test.h"

#define SERVER 7u
#define BLOCK 3u
#define GEN 42u
#define NOW 1800000000000LL /* the wall clock the tests pass, ms */

static const uint8_t KEY[MF_KEY_SIZE] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                         17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30,
                                         31, 32};
static const uint8_t OTHER_KEY[MF_KEY_SIZE] = {99};

static const uint8_t OPS[] = {
    WIRE_OP_PING,      WIRE_OP_BLOCK_STAT, WIRE_OP_SERVER_STAT,  WIRE_OP_FILE_WRITE,
    WIRE_OP_FILE_READ, WIRE_OP_FILE_SIZE,  WIRE_OP_FILE_TRUNCATE, WIRE_OP_Q_PUSH,
    WIRE_OP_Q_POP,     WIRE_OP_Q_PEEK,     WIRE_OP_Q_LEN,        WIRE_OP_KV_PUT,
    WIRE_OP_KV_GET,    WIRE_OP_KV_DEL,     WIRE_OP_KV_EXISTS,    WIRE_OP_KV_MIGRATE,
    WIRE_OP_KV_MIGRATE_ABORT};

static int is_migrate(uint8_t op) {
  return op == WIRE_OP_KV_MIGRATE || op == WIRE_OP_KV_MIGRATE_ABORT;
}

/* The capability a good request of op carries. */
static mf_cap_t good_cap(uint8_t op) {
  mf_cap_t c = {.rights = (uint8_t)ms_capcheck_right(op),
                .server_id = SERVER,
                .block_index = BLOCK,
                .tenant = 5,
                .generation = GEN,
                .expiry_ms = NOW + 60000};
  if (op == WIRE_OP_SERVER_STAT) {
    c.block_index = MF_CAP_ANY_BLOCK;
    c.generation = 0;
  }
  if (is_migrate(op)) {
    c.lo = 100;
    c.hi = 200;
    c.op_id = 9;
  }
  return c;
}

typedef struct {
  uint8_t buf[WIRE_HEADER_SIZE + MF_FRAME_AUTH_SIZE + 16];
  size_t len;
  wire_hdr_t h;
} frame_t;

/* Builds a request of op for (block, gen) with slots [a0, a1), carrying
 * cap (signed under sign_key) when sign_key is not NULL, and for a migration
 * a frame MAC under mac_key (none when mac_key is NULL), then decodes it. */
static void build(frame_t *f, uint8_t op, uint32_t block, uint64_t gen, uint64_t a0, uint64_t a1,
                  const mf_cap_t *cap, const uint8_t *sign_key, const uint8_t *mac_key) {
  static const uint8_t payload[16] = "payload-bytes-16";
  wire_hdr_t h = {.opcode = op,
                  .request_id = 77,
                  .block_index = block,
                  .generation = gen,
                  .arg0 = a0,
                  .arg1 = a1,
                  .payload_len = sizeof payload};
  uint8_t area[MF_FRAME_AUTH_SIZE];
  size_t n = 0;
  if (sign_key != NULL) {
    mf_cap_sign(sign_key, cap, area);
    n = MF_CAP_SIZE;
    if (is_migrate(op) && mac_key != NULL) n = MF_FRAME_AUTH_SIZE;
  }
  h.cap_len = (uint16_t)n;
  wire_encode(&h, f->buf);
  memcpy(f->buf + WIRE_HEADER_SIZE, area, n);
  memcpy(f->buf + WIRE_HEADER_SIZE + n, payload, sizeof payload);
  f->len = WIRE_HEADER_SIZE + n + sizeof payload;
  if (n == MF_FRAME_AUTH_SIZE) {
    mf_frame_mac(mac_key, f->buf, f->buf + WIRE_HEADER_SIZE, MF_CAP_SIZE,
                 f->buf + WIRE_HEADER_SIZE + n, sizeof payload,
                 f->buf + WIRE_HEADER_SIZE + MF_CAP_SIZE);
  }
  size_t flen = 0;
  CU_ASSERT_FATAL(wire_parse(f->buf, f->len, 1 << 20, &f->h, &flen) == 0);
  CU_ASSERT_FATAL(flen == f->len);
}

static int check(const frame_t *f, ms_capcache_t *cache, ms_capcheck_stats_t *st, int64_t now) {
  return ms_capcheck(KEY, SERVER, now, cache, st, &f->h, f->buf, f->len);
}

/* One request of op with capability c (signed under KEY, MAC under KEY). */
static int one(uint8_t op, const mf_cap_t *c) {
  frame_t f;
  build(&f, op, BLOCK, GEN, 100, 200, c, KEY, KEY);
  return check(&f, NULL, NULL, NOW);
}

static void test_rights_per_opcode_are_the_documented_ones(void) {
  MF_ASSERT_EQ(ms_capcheck_right(WIRE_OP_PING), 0);
  const uint8_t reads[] = {WIRE_OP_BLOCK_STAT, WIRE_OP_FILE_READ, WIRE_OP_FILE_SIZE,
                           WIRE_OP_Q_PEEK,     WIRE_OP_Q_LEN,     WIRE_OP_KV_GET,
                           WIRE_OP_KV_EXISTS};
  const uint8_t writes[] = {WIRE_OP_FILE_WRITE, WIRE_OP_FILE_TRUNCATE, WIRE_OP_Q_PUSH,
                            WIRE_OP_Q_POP,      WIRE_OP_KV_PUT,        WIRE_OP_KV_DEL};
  for (size_t i = 0; i < sizeof reads; i++) MF_ASSERT_EQ(ms_capcheck_right(reads[i]), MF_RIGHT_READ);
  for (size_t i = 0; i < sizeof writes; i++) {
    MF_ASSERT_EQ(ms_capcheck_right(writes[i]), MF_RIGHT_WRITE);
  }
  MF_ASSERT_EQ(ms_capcheck_right(WIRE_OP_KV_MIGRATE), MF_RIGHT_MIGRATE);
  MF_ASSERT_EQ(ms_capcheck_right(WIRE_OP_KV_MIGRATE_ABORT), MF_RIGHT_MIGRATE);
  MF_ASSERT_EQ(ms_capcheck_right(WIRE_OP_SERVER_STAT), MF_RIGHT_STAT);
  MF_ASSERT_EQ(ms_capcheck_right(0x7f), -1);
  MF_ASSERT_EQ(ms_capcheck_right(0x00), -1);
}

static void test_every_opcode_with_a_good_capability_is_accepted(void) {
  for (size_t i = 0; i < sizeof OPS; i++) {
    mf_cap_t c = good_cap(OPS[i]);
    MF_ASSERT_EQ(one(OPS[i], &c), 0);
  }
}

static void test_every_opcode_without_a_capability_is_refused_but_ping(void) {
  for (size_t i = 0; i < sizeof OPS; i++) {
    frame_t f;
    build(&f, OPS[i], BLOCK, GEN, 100, 200, NULL, NULL, NULL);
    ms_capcheck_stats_t st = {0};
    int want = OPS[i] == WIRE_OP_PING ? 0 : MAYFLY_EPERM;
    MF_ASSERT_EQ(check(&f, NULL, &st, NOW), want);
    MF_ASSERT_EQ(st.refused, want != 0);
  }
}

static void test_an_unknown_opcode_needs_no_capability(void) {
  frame_t f;
  build(&f, 0x7f, BLOCK, GEN, 0, 0, NULL, NULL, NULL);
  MF_ASSERT_EQ(check(&f, NULL, NULL, NOW), 0);
}

static void test_every_opcode_with_a_forged_capability_is_refused(void) {
  for (size_t i = 0; i < sizeof OPS; i++) {
    if (OPS[i] == WIRE_OP_PING) continue;
    mf_cap_t c = good_cap(OPS[i]);
    frame_t f;
    build(&f, OPS[i], BLOCK, GEN, 100, 200, &c, OTHER_KEY, KEY);
    MF_ASSERT_EQ(check(&f, NULL, NULL, NOW), MAYFLY_EPERM);
    /* A good capability with one byte of its body changed. */
    build(&f, OPS[i], BLOCK, GEN, 100, 200, &c, KEY, KEY);
    f.buf[WIRE_HEADER_SIZE + 12] ^= 1; /* the tenant */
    MF_ASSERT_EQ(check(&f, NULL, NULL, NOW), MAYFLY_EPERM);
  }
}

static void test_every_opcode_for_another_server_block_or_generation_is_refused(void) {
  for (size_t i = 0; i < sizeof OPS; i++) {
    uint8_t op = OPS[i];
    if (op == WIRE_OP_PING) continue;
    mf_cap_t c = good_cap(op);
    c.server_id = SERVER + 1;
    MF_ASSERT_EQ(one(op, &c), MAYFLY_EPERM);
    c = good_cap(op);
    /* SERVER_STAT needs the server-wide block; others their own. */
    c.block_index = op == WIRE_OP_SERVER_STAT ? BLOCK : BLOCK + 1;
    MF_ASSERT_EQ(one(op, &c), MAYFLY_EPERM);
    if (op != WIRE_OP_SERVER_STAT) {
      c = good_cap(op);
      c.generation = GEN + 1;
      MF_ASSERT_EQ(one(op, &c), MAYFLY_EPERM);
      /* The right capability, the header naming another block or generation. */
      c = good_cap(op);
      frame_t f;
      build(&f, op, BLOCK + 1, GEN, 100, 200, &c, KEY, KEY);
      MF_ASSERT_EQ(check(&f, NULL, NULL, NOW), MAYFLY_EPERM);
      build(&f, op, BLOCK, GEN - 1, 100, 200, &c, KEY, KEY);
      MF_ASSERT_EQ(check(&f, NULL, NULL, NOW), MAYFLY_EPERM);
    }
  }
}

static void test_every_opcode_with_an_expired_capability_is_refused(void) {
  for (size_t i = 0; i < sizeof OPS; i++) {
    if (OPS[i] == WIRE_OP_PING) continue;
    mf_cap_t c = good_cap(OPS[i]);
    c.expiry_ms = NOW; /* expires at NOW: refused from then on */
    MF_ASSERT_EQ(one(OPS[i], &c), MAYFLY_EPERM);
    c.expiry_ms = NOW - 3600000;
    MF_ASSERT_EQ(one(OPS[i], &c), MAYFLY_EPERM);
    c.expiry_ms = NOW + 1;
    MF_ASSERT_EQ(one(OPS[i], &c), 0);
  }
}

static void test_every_opcode_without_its_right_is_refused(void) {
  for (size_t i = 0; i < sizeof OPS; i++) {
    uint8_t op = OPS[i];
    if (op == WIRE_OP_PING) continue;
    mf_cap_t c = good_cap(op);
    /* Every right but the one needed. */
    c.rights = (uint8_t)(MF_RIGHTS_ALL & ~(unsigned)ms_capcheck_right(op));
    MF_ASSERT_EQ(one(op, &c), MAYFLY_EPERM);
    if (ms_capcheck_right(op) == MF_RIGHT_WRITE) {
      c.rights = MF_RIGHT_READ; /* the read-only capability a read-prefix gets */
      MF_ASSERT_EQ(one(op, &c), MAYFLY_EPERM);
      c.rights = MF_RIGHT_READ | MF_RIGHT_WRITE;
      MF_ASSERT_EQ(one(op, &c), 0);
    }
  }
}

static void test_a_migration_needs_its_frame_mac_and_its_slots(void) {
  const uint8_t ops[] = {WIRE_OP_KV_MIGRATE, WIRE_OP_KV_MIGRATE_ABORT};
  for (size_t i = 0; i < sizeof ops; i++) {
    mf_cap_t c = good_cap(ops[i]);
    frame_t f;
    /* No MAC: the capability alone (a client's area). */
    build(&f, ops[i], BLOCK, GEN, 100, 200, &c, KEY, NULL);
    MF_ASSERT_EQ(f.h.cap_len, MF_CAP_SIZE);
    MF_ASSERT_EQ(check(&f, NULL, NULL, NOW), MAYFLY_EPERM);
    /* A MAC under another key. */
    build(&f, ops[i], BLOCK, GEN, 100, 200, &c, KEY, OTHER_KEY);
    MF_ASSERT_EQ(check(&f, NULL, NULL, NOW), MAYFLY_EPERM);
    /* A good frame whose payload, or header, changed after the MAC. */
    build(&f, ops[i], BLOCK, GEN, 100, 200, &c, KEY, KEY);
    MF_ASSERT_EQ(check(&f, NULL, NULL, NOW), 0);
    f.buf[f.len - 1] ^= 1;
    MF_ASSERT_EQ(check(&f, NULL, NULL, NOW), MAYFLY_EPERM);
    build(&f, ops[i], BLOCK, GEN, 100, 200, &c, KEY, KEY);
    f.buf[8] ^= 1; /* request_id: wire_parse does not care, the MAC does */
    MF_ASSERT_EQ(check(&f, NULL, NULL, NOW), MAYFLY_EPERM);
    /* Slots inside [lo, hi) are fine; any outside are not. */
    build(&f, ops[i], BLOCK, GEN, 120, 150, &c, KEY, KEY);
    MF_ASSERT_EQ(check(&f, NULL, NULL, NOW), 0);
    build(&f, ops[i], BLOCK, GEN, 99, 200, &c, KEY, KEY);
    MF_ASSERT_EQ(check(&f, NULL, NULL, NOW), MAYFLY_EPERM);
    build(&f, ops[i], BLOCK, GEN, 100, 201, &c, KEY, KEY);
    MF_ASSERT_EQ(check(&f, NULL, NULL, NOW), MAYFLY_EPERM);
    build(&f, ops[i], BLOCK, GEN, 0, 65536, &c, KEY, KEY);
    MF_ASSERT_EQ(check(&f, NULL, NULL, NOW), MAYFLY_EPERM);
    build(&f, ops[i], BLOCK, GEN, 150, 120, &c, KEY, KEY);
    MF_ASSERT_EQ(check(&f, NULL, NULL, NOW), MAYFLY_EPERM);
    /* A client's capability (read and write) is no migrate capability. */
    c.rights = MF_RIGHT_READ | MF_RIGHT_WRITE;
    build(&f, ops[i], BLOCK, GEN, 100, 200, &c, KEY, KEY);
    MF_ASSERT_EQ(check(&f, NULL, NULL, NOW), MAYFLY_EPERM);
  }
}

static void test_a_client_area_of_the_wrong_size_is_refused(void) {
  mf_cap_t c = good_cap(WIRE_OP_KV_GET);
  frame_t f;
  /* A client request carrying a migration-sized area. */
  build(&f, WIRE_OP_KV_MIGRATE, BLOCK, GEN, 100, 200, &c, KEY, KEY);
  f.buf[3] = WIRE_OP_KV_GET;
  size_t flen;
  CU_ASSERT_FATAL(wire_parse(f.buf, f.len, 1 << 20, &f.h, &flen) == 0);
  MF_ASSERT_EQ(check(&f, NULL, NULL, NOW), MAYFLY_EPERM);
}

static void test_a_frame_shorter_than_its_header_says_is_refused(void) {
  mf_cap_t c = good_cap(WIRE_OP_KV_GET);
  frame_t f;
  build(&f, WIRE_OP_KV_GET, BLOCK, GEN, 0, 0, &c, KEY, KEY);
  MF_ASSERT_EQ(ms_capcheck(KEY, SERVER, NOW, NULL, NULL, &f.h, f.buf, f.len), 0);
  MF_ASSERT_EQ(ms_capcheck(KEY, SERVER, NOW, NULL, NULL, &f.h, f.buf, f.len - 1), MAYFLY_EPERM);
}

static void test_the_cache_verifies_a_capability_once(void) {
  ms_capcache_t *cache = g_new0(ms_capcache_t, 1);
  ms_capcheck_stats_t st = {0};
  mf_cap_t c = good_cap(WIRE_OP_KV_GET);
  c.rights = MF_RIGHT_READ | MF_RIGHT_WRITE;
  frame_t get, put;
  build(&get, WIRE_OP_KV_GET, BLOCK, GEN, 0, 0, &c, KEY, KEY);
  build(&put, WIRE_OP_KV_PUT, BLOCK, GEN, 0, 0, &c, KEY, KEY);
  MF_ASSERT_EQ(check(&get, cache, &st, NOW), 0);
  MF_ASSERT_EQ(st.verified, 1);
  for (int i = 0; i < 100; i++) {
    MF_ASSERT_EQ(check(&get, cache, &st, NOW), 0);
    MF_ASSERT_EQ(check(&put, cache, &st, NOW), 0);
  }
  MF_ASSERT_EQ(st.verified, 1);
  MF_ASSERT_EQ(st.hits, 200);
  MF_ASSERT_EQ(st.refused, 0);
  /* A second block has a slot of its own: both stay cached. */
  mf_cap_t c2 = c;
  c2.block_index = BLOCK + 1;
  frame_t get2;
  build(&get2, WIRE_OP_KV_GET, BLOCK + 1, GEN, 0, 0, &c2, KEY, KEY);
  MF_ASSERT_EQ(check(&get2, cache, &st, NOW), 0);
  MF_ASSERT_EQ(check(&get, cache, &st, NOW), 0);
  MF_ASSERT_EQ(check(&get2, cache, &st, NOW), 0);
  MF_ASSERT_EQ(st.verified, 2);
  g_free(cache);
}

static void test_a_new_capability_for_a_block_replaces_its_entry(void) {
  ms_capcache_t *cache = g_new0(ms_capcache_t, 1);
  ms_capcheck_stats_t st = {0};
  mf_cap_t a = good_cap(WIRE_OP_KV_GET), b = a;
  b.expiry_ms += 1000; /* the refreshed layout's capability */
  frame_t fa, fb;
  build(&fa, WIRE_OP_KV_GET, BLOCK, GEN, 0, 0, &a, KEY, KEY);
  build(&fb, WIRE_OP_KV_GET, BLOCK, GEN, 0, 0, &b, KEY, KEY);
  MF_ASSERT_EQ(check(&fa, cache, &st, NOW), 0);
  MF_ASSERT_EQ(check(&fb, cache, &st, NOW), 0);
  MF_ASSERT_EQ(st.verified, 2);
  MF_ASSERT_EQ(check(&fb, cache, &st, NOW), 0);
  MF_ASSERT_EQ(st.verified, 2);
  MF_ASSERT_EQ(check(&fa, cache, &st, NOW), 0); /* a's entry was replaced: verified again */
  MF_ASSERT_EQ(st.verified, 3);
  /* A block whose index maps to the same slot replaces it too. */
  mf_cap_t far = a;
  far.block_index = BLOCK + MS_CAPCACHE_SLOTS;
  frame_t ff;
  build(&ff, WIRE_OP_KV_GET, BLOCK + MS_CAPCACHE_SLOTS, GEN, 0, 0, &far, KEY, KEY);
  MF_ASSERT_EQ(check(&ff, cache, &st, NOW), 0);
  MF_ASSERT_EQ(check(&fa, cache, &st, NOW), 0);
  MF_ASSERT_EQ(st.verified, 5);
  g_free(cache);
}

static void test_the_cache_honours_expiry_and_every_field(void) {
  ms_capcache_t *cache = g_new0(ms_capcache_t, 1);
  ms_capcheck_stats_t st = {0};
  mf_cap_t c = good_cap(WIRE_OP_KV_GET); /* read only */
  c.expiry_ms = NOW + 10;
  frame_t get, put;
  build(&get, WIRE_OP_KV_GET, BLOCK, GEN, 0, 0, &c, KEY, KEY);
  build(&put, WIRE_OP_KV_PUT, BLOCK, GEN, 0, 0, &c, KEY, KEY);
  MF_ASSERT_EQ(check(&get, cache, &st, NOW), 0);
  MF_ASSERT_EQ(check(&get, cache, &st, NOW + 9), 0);
  MF_ASSERT_EQ(check(&get, cache, &st, NOW + 10), MAYFLY_EPERM); /* expired, from the cache */
  MF_ASSERT_EQ(check(&put, cache, &st, NOW), MAYFLY_EPERM);      /* read only, from the cache */
  MF_ASSERT_EQ(st.verified, 1);
  MF_ASSERT_EQ(st.hits, 3);
  MF_ASSERT_EQ(st.refused, 2);
  /* The same cached bytes on another server are still another server's. */
  MF_ASSERT_EQ(ms_capcheck(KEY, SERVER + 1, NOW, cache, &st, &get.h, get.buf, get.len),
               MAYFLY_EPERM);
  /* A forged capability never enters the cache: verified every time. */
  frame_t forged;
  build(&forged, WIRE_OP_KV_GET, BLOCK, GEN, 0, 0, &c, OTHER_KEY, KEY);
  MF_ASSERT_EQ(check(&forged, cache, &st, NOW), MAYFLY_EPERM);
  MF_ASSERT_EQ(check(&forged, cache, &st, NOW), MAYFLY_EPERM);
  MF_ASSERT_EQ(st.verified, 3);
  MF_ASSERT_EQ(check(&get, cache, &st, NOW), 0); /* and the good one is still there */
  MF_ASSERT_EQ(st.verified, 3);
  g_free(cache);
}

/* docs/memory-bound.md counts 2.4 KiB per connection for the table. */
static void test_a_connections_cache_is_bounded(void) {
  CU_ASSERT(sizeof(ms_capcache_t) <= 2432);
  MF_ASSERT_EQ(MS_CAPCACHE_SLOTS & (MS_CAPCACHE_SLOTS - 1), 0);
}

static void test_migration_frames_are_verified_every_time(void) {
  ms_capcache_t *cache = g_new0(ms_capcache_t, 1);
  ms_capcheck_stats_t st = {0};
  mf_cap_t c = good_cap(WIRE_OP_KV_MIGRATE);
  frame_t f;
  build(&f, WIRE_OP_KV_MIGRATE, BLOCK, GEN, 100, 200, &c, KEY, KEY);
  MF_ASSERT_EQ(check(&f, cache, &st, NOW), 0);
  MF_ASSERT_EQ(check(&f, cache, &st, NOW), 0);
  MF_ASSERT_EQ(st.verified, 2);
  MF_ASSERT_EQ(st.hits, 0);
  g_free(cache);
}

int main(void) {
  if (mf_auth_init() != 0) return 2;
  static const mf_test_t tests[] = {
      {"rights per opcode are the documented ones", test_rights_per_opcode_are_the_documented_ones},
      {"every opcode with a good capability is accepted",
       test_every_opcode_with_a_good_capability_is_accepted},
      {"every opcode without a capability is refused but PING",
       test_every_opcode_without_a_capability_is_refused_but_ping},
      {"an unknown opcode needs no capability", test_an_unknown_opcode_needs_no_capability},
      {"every opcode with a forged capability is refused",
       test_every_opcode_with_a_forged_capability_is_refused},
      {"every opcode for another server, block or generation is refused",
       test_every_opcode_for_another_server_block_or_generation_is_refused},
      {"every opcode with an expired capability is refused",
       test_every_opcode_with_an_expired_capability_is_refused},
      {"every opcode without its right is refused", test_every_opcode_without_its_right_is_refused},
      {"a migration needs its frame MAC and its slots",
       test_a_migration_needs_its_frame_mac_and_its_slots},
      {"a client area of the wrong size is refused", test_a_client_area_of_the_wrong_size_is_refused},
      {"a frame shorter than its header says is refused",
       test_a_frame_shorter_than_its_header_says_is_refused},
      {"the cache verifies a capability once", test_the_cache_verifies_a_capability_once},
      {"a new capability for a block replaces its entry",
       test_a_new_capability_for_a_block_replaces_its_entry},
      {"the cache honours expiry and every field", test_the_cache_honours_expiry_and_every_field},
      {"migration frames are verified every time", test_migration_frames_are_verified_every_time},
      {"a connection's cache is bounded", test_a_connections_cache_is_bounded},
      {NULL, NULL}};
  return mf_test_run("capcheck", NULL, NULL, tests);
}
