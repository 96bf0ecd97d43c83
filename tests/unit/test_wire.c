/*
 * Unit tests for common/wire.c: the data-plane frame codec.
 *
 * What clients and the memory server rely on: every header field survives
 * wire_encode -> wire_parse bit for bit; wire_parse answers "need more"
 * (MAYFLY_EAGAIN), "frame ready" (0, with the frame's exact length) or
 * "error" (MAYFLY_EPROTO, MAYFLY_ETOOBIG) and says "error" as early as it
 * can, so that a server never allocates for, nor waits on, a frame it would
 * refuse; it never reads past the bytes it was given, whatever the lengths in
 * the header claim; and wire_kv_slot is the documented FNV-1a hash, the same
 * in every process, spreading keys evenly over the 65536 slots. Migration
 * records (wire_kv_entry_*) read back exactly as written, and a record whose
 * lengths claim more than the buffer holds is a protocol error, never a read
 * past the end.
 *
 * Every parse in this file goes through parse_exact(), which hands wire_parse
 * a heap copy of exactly `len` bytes, so that under AddressSanitizer any read
 * past `len` is reported.
 */
#include <glib.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/wire.h"
#include "mf_test.h"

#define FRAME_LEN_UNSET ((size_t)0xdeadbeef)

/* A header with a different, recognisable value in every field. */
static wire_hdr_t sample_header(void) {
  wire_hdr_t h = {.opcode = WIRE_OP_KV_PUT,
                  .flags = WIRE_F_REPLY | WIRE_F_SEALED,
                  .cap_len = 0,
                  .payload_len = 11,
                  .request_id = 0x0102030405060708ULL,
                  .block_index = 0x0a0b0c0d,
                  .generation = 0x1112131415161718ULL,
                  .arg0 = 0x2122232425262728ULL,
                  .arg1 = 0x3132333435363738ULL,
                  .status = MAYFLY_EFULL,
                  .arg2 = 0x41424344};
  return h;
}

/* Parses buf[0..len) from a heap copy of exactly len bytes (so ASan sees
 * any overread) and returns wire_parse's code. *frame_len is preset to
 * FRAME_LEN_UNSET so a test can tell whether it was written. */
static int parse_exact(const uint8_t *buf, size_t len, uint32_t max_payload, wire_hdr_t *h,
                       size_t *frame_len) {
  uint8_t *copy = malloc(len > 0 ? len : 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(copy);
  if (len > 0) memcpy(copy, buf, len);
  *frame_len = FRAME_LEN_UNSET;
  int rc = wire_parse(copy, len, max_payload, h, frame_len);
  free(copy);
  return rc;
}

/* Builds a whole frame for h: the encoded header, h->cap_len capability bytes
 * (0xca) and h->payload_len payload bytes (counting up from 0). Returns a
 * GByteArray the caller frees. */
static GByteArray *frame_of(const wire_hdr_t *h) {
  GByteArray *f = g_byte_array_sized_new(WIRE_HEADER_SIZE + h->cap_len + h->payload_len);
  uint8_t hdr[WIRE_HEADER_SIZE];
  wire_encode(h, hdr);
  g_byte_array_append(f, hdr, WIRE_HEADER_SIZE);
  for (uint32_t i = 0; i < h->cap_len; i++) g_byte_array_append(f, (const uint8_t[]){0xca}, 1);
  for (uint32_t i = 0; i < h->payload_len; i++) {
    uint8_t b = (uint8_t)i;
    g_byte_array_append(f, &b, 1);
  }
  return f;
}

/* Asserts that every field of got equals want. */
static void assert_same_header(const wire_hdr_t *got, const wire_hdr_t *want) {
  MF_ASSERT_EQ(got->opcode, want->opcode);
  MF_ASSERT_EQ(got->flags, want->flags);
  MF_ASSERT_EQ(got->cap_len, want->cap_len);
  MF_ASSERT_EQ(got->payload_len, want->payload_len);
  CU_ASSERT_EQUAL(got->request_id, want->request_id);
  MF_ASSERT_EQ(got->block_index, want->block_index);
  CU_ASSERT_EQUAL(got->generation, want->generation);
  CU_ASSERT_EQUAL(got->arg0, want->arg0);
  CU_ASSERT_EQUAL(got->arg1, want->arg1);
  MF_ASSERT_EQ(got->status, want->status);
  MF_ASSERT_EQ(got->arg2, want->arg2);
}

/* A valid 56-byte header with no capability and no payload. */
static void valid_header_bytes(uint8_t out[WIRE_HEADER_SIZE]) {
  wire_hdr_t h = sample_header();
  h.payload_len = 0;
  wire_encode(&h, out);
}

/* --- encoding and round trips --- */

static void test_every_field_round_trips(void) {
  wire_hdr_t want = sample_header();
  GByteArray *f = frame_of(&want);
  wire_hdr_t got;
  memset(&got, 0x55, sizeof got);
  size_t flen;
  MF_ASSERT_EQ(parse_exact(f->data, f->len, 1 << 20, &got, &flen), 0);
  assert_same_header(&got, &want);
  MF_ASSERT_EQ(flen, WIRE_HEADER_SIZE + 11);
  g_byte_array_free(f, TRUE);
}

static void test_negative_status_round_trips(void) {
  /* Replies carry 0 or a negative MAYFLY_E* code: the sign must survive. */
  const int32_t statuses[] = {0, -1, MAYFLY_EMOVED, MAYFLY_EFULL, MAYFLY_ERRNO_MIN, INT32_MIN,
                              INT32_MAX};
  for (size_t i = 0; i < G_N_ELEMENTS(statuses); i++) {
    wire_hdr_t want = sample_header();
    want.payload_len = 0;
    want.status = statuses[i];
    uint8_t buf[WIRE_HEADER_SIZE];
    wire_encode(&want, buf);
    wire_hdr_t got;
    size_t flen;
    MF_ASSERT_EQ(parse_exact(buf, sizeof buf, 0, &got, &flen), 0);
    MF_ASSERT_EQ(got.status, statuses[i]);
    assert_same_header(&got, &want);
  }
}

static void test_maximum_values_round_trip(void) {
  /* Every field at its maximum, with the two lengths at the largest values
   * the parser accepts: the header parses (EAGAIN: the frame is ~4 GiB) and
   * reports every field and the full frame length. */
  wire_hdr_t want = {.opcode = 0xff,
                     .flags = 0xffff,
                     .cap_len = WIRE_CAP_MAX,
                     .payload_len = UINT32_MAX,
                     .request_id = UINT64_MAX,
                     .block_index = UINT32_MAX,
                     .generation = UINT64_MAX,
                     .arg0 = UINT64_MAX,
                     .arg1 = UINT64_MAX,
                     .status = INT32_MIN,
                     .arg2 = UINT32_MAX};
  uint8_t buf[WIRE_HEADER_SIZE];
  wire_encode(&want, buf);
  wire_hdr_t got;
  size_t flen;
  MF_ASSERT_EQ(parse_exact(buf, sizeof buf, UINT32_MAX, &got, &flen), MAYFLY_EAGAIN);
  assert_same_header(&got, &want);
  CU_ASSERT_EQUAL(flen, (size_t)WIRE_HEADER_SIZE + WIRE_CAP_MAX + (size_t)UINT32_MAX);

  want.status = INT32_MAX;
  wire_encode(&want, buf);
  MF_ASSERT_EQ(parse_exact(buf, sizeof buf, UINT32_MAX, &got, &flen), MAYFLY_EAGAIN);
  assert_same_header(&got, &want);
}

static void test_zero_header_round_trips(void) {
  wire_hdr_t want;
  memset(&want, 0, sizeof want);
  uint8_t buf[WIRE_HEADER_SIZE];
  wire_encode(&want, buf);
  wire_hdr_t got;
  memset(&got, 0xff, sizeof got);
  size_t flen;
  MF_ASSERT_EQ(parse_exact(buf, sizeof buf, 0, &got, &flen), 0);
  assert_same_header(&got, &want);
  MF_ASSERT_EQ(flen, WIRE_HEADER_SIZE);
}

static void test_encoding_is_little_endian_at_fixed_offsets(void) {
  /* The byte layout is the protocol other implementations speak: magic "MF",
   * version, opcode, then little-endian fields at fixed offsets. */
  wire_hdr_t h = sample_header();
  h.cap_len = 0xfedc;
  uint8_t b[WIRE_HEADER_SIZE];
  memset(b, 0xee, sizeof b);
  wire_encode(&h, b);
  MF_ASSERT_EQ(b[0], 'M');
  MF_ASSERT_EQ(b[1], 'F');
  MF_ASSERT_EQ(b[2], WIRE_VERSION);
  MF_ASSERT_EQ(b[3], WIRE_OP_KV_PUT);
  const uint8_t payload_len[] = {11, 0, 0, 0};
  const uint8_t request_id[] = {8, 7, 6, 5, 4, 3, 2, 1};
  const uint8_t block_index[] = {0x0d, 0x0c, 0x0b, 0x0a};
  const uint8_t flags[] = {0x03, 0x00};
  const uint8_t cap_len[] = {0xdc, 0xfe};
  const uint8_t generation[] = {0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11};
  const uint8_t arg0[] = {0x28, 0x27, 0x26, 0x25, 0x24, 0x23, 0x22, 0x21};
  const uint8_t arg1[] = {0x38, 0x37, 0x36, 0x35, 0x34, 0x33, 0x32, 0x31};
  const uint8_t status[] = {(uint8_t)MAYFLY_EFULL, 0xff, 0xff, 0xff};
  const uint8_t arg2[] = {0x44, 0x43, 0x42, 0x41};
  CU_ASSERT(memcmp(b + 4, payload_len, 4) == 0);
  CU_ASSERT(memcmp(b + 8, request_id, 8) == 0);
  CU_ASSERT(memcmp(b + 16, block_index, 4) == 0);
  CU_ASSERT(memcmp(b + 20, flags, 2) == 0);
  CU_ASSERT(memcmp(b + 22, cap_len, 2) == 0);
  CU_ASSERT(memcmp(b + 24, generation, 8) == 0);
  CU_ASSERT(memcmp(b + 32, arg0, 8) == 0);
  CU_ASSERT(memcmp(b + 40, arg1, 8) == 0);
  CU_ASSERT(memcmp(b + 48, status, 4) == 0);
  CU_ASSERT(memcmp(b + 52, arg2, 4) == 0);
}

static void test_parse_then_encode_reproduces_the_bytes(void) {
  /* Any header the parser accepts re-encodes to the same 56 bytes: no field
   * is dropped or normalised. */
  GRand *r = g_rand_new_with_seed(56);
  for (int k = 0; k < 1000; k++) {
    uint8_t b[WIRE_HEADER_SIZE];
    for (int i = 0; i < WIRE_HEADER_SIZE; i++) b[i] = (uint8_t)g_rand_int(r);
    b[0] = 'M';
    b[1] = 'F';
    b[2] = WIRE_VERSION;
    b[23] &= 0x03; /* cap_len <= 1023 */
    wire_hdr_t h;
    size_t flen;
    int rc = parse_exact(b, sizeof b, UINT32_MAX, &h, &flen);
    CU_ASSERT(rc == 0 || rc == MAYFLY_EAGAIN);
    uint8_t again[WIRE_HEADER_SIZE];
    wire_encode(&h, again);
    CU_ASSERT(memcmp(again, b, sizeof b) == 0);
  }
  g_rand_free(r);
}

/* --- need more bytes --- */

static void test_truncated_header_needs_more_at_every_length(void) {
  uint8_t b[WIRE_HEADER_SIZE];
  valid_header_bytes(b);
  for (size_t len = 0; len < WIRE_HEADER_SIZE; len++) {
    wire_hdr_t h;
    size_t flen;
    int rc = parse_exact(b, len, 1 << 20, &h, &flen);
    if (rc != MAYFLY_EAGAIN) fprintf(stderr, "  header prefix of %zu bytes\n", len);
    MF_ASSERT_EQ(rc, MAYFLY_EAGAIN);
  }
}

static void test_partial_payload_needs_more_and_tells_the_frame_size(void) {
  wire_hdr_t want = sample_header();
  want.cap_len = 7;
  want.payload_len = 300;
  GByteArray *f = frame_of(&want);
  const size_t total = WIRE_HEADER_SIZE + 7 + 300;
  MF_ASSERT_EQ(f->len, total);
  for (size_t len = WIRE_HEADER_SIZE; len < total; len++) {
    wire_hdr_t got;
    memset(&got, 0, sizeof got);
    size_t flen;
    MF_ASSERT_EQ(parse_exact(f->data, len, 1 << 20, &got, &flen), MAYFLY_EAGAIN);
    /* The header is already decoded, so a server can see the opcode and
     * size the buffer for the whole frame before the payload arrives. */
    MF_ASSERT_EQ(flen, total);
    assert_same_header(&got, &want);
  }
  g_byte_array_free(f, TRUE);
}

static void test_exactly_complete_frame_is_ready(void) {
  wire_hdr_t want = sample_header();
  want.cap_len = 3;
  want.payload_len = 5;
  GByteArray *f = frame_of(&want);
  wire_hdr_t got;
  size_t flen;
  MF_ASSERT_EQ(parse_exact(f->data, f->len, 5, &got, &flen), 0);
  MF_ASSERT_EQ(flen, WIRE_HEADER_SIZE + 3 + 5);
  assert_same_header(&got, &want);

  /* Extra bytes after the frame belong to the next one: the length stays
   * that of this frame. */
  g_byte_array_append(f, (const uint8_t *)"MF", 2);
  MF_ASSERT_EQ(parse_exact(f->data, f->len, 5, &got, &flen), 0);
  MF_ASSERT_EQ(flen, WIRE_HEADER_SIZE + 3 + 5);
  g_byte_array_free(f, TRUE);
}

static void test_two_frames_back_to_back_parse_one_at_a_time(void) {
  wire_hdr_t a = sample_header();
  a.opcode = WIRE_OP_FILE_WRITE;
  a.request_id = 1;
  a.payload_len = 9;
  wire_hdr_t b = sample_header();
  b.opcode = WIRE_OP_Q_POP;
  b.request_id = 2;
  b.payload_len = 0;
  b.cap_len = 4;
  GByteArray *fa = frame_of(&a), *fb = frame_of(&b);
  GByteArray *stream = g_byte_array_new();
  g_byte_array_append(stream, fa->data, fa->len);
  g_byte_array_append(stream, fb->data, fb->len);

  wire_hdr_t got;
  size_t flen;
  MF_ASSERT_EQ(parse_exact(stream->data, stream->len, 1 << 20, &got, &flen), 0);
  MF_ASSERT_EQ(flen, fa->len);
  assert_same_header(&got, &a);
  /* The first frame's payload is where the frame says it is. */
  CU_ASSERT(memcmp(stream->data + WIRE_HEADER_SIZE, fa->data + WIRE_HEADER_SIZE, 9) == 0);

  size_t pos = flen;
  MF_ASSERT_EQ(parse_exact(stream->data + pos, stream->len - pos, 1 << 20, &got, &flen), 0);
  MF_ASSERT_EQ(flen, fb->len);
  assert_same_header(&got, &b);
  pos += flen;
  MF_ASSERT_EQ(pos, stream->len);
  MF_ASSERT_EQ(parse_exact(stream->data + pos, stream->len - pos, 1 << 20, &got, &flen),
               MAYFLY_EAGAIN);

  /* Delivered one byte at a time, the stream still yields exactly the two
   * frames, each as soon as its last byte is in. */
  size_t start = 0;
  int frames = 0;
  for (size_t end = 1; end <= stream->len; end++) {
    int rc = parse_exact(stream->data + start, end - start, 1 << 20, &got, &flen);
    if (rc == 0) {
      MF_ASSERT_EQ(end, frames == 0 ? fa->len : fa->len + fb->len);
      MF_ASSERT_EQ(got.request_id, frames == 0 ? 1 : 2);
      start += flen;
      frames++;
    } else {
      MF_ASSERT_EQ(rc, MAYFLY_EAGAIN);
    }
  }
  MF_ASSERT_EQ(frames, 2);
  MF_ASSERT_EQ(start, stream->len);

  g_byte_array_free(stream, TRUE);
  g_byte_array_free(fa, TRUE);
  g_byte_array_free(fb, TRUE);
}

/* --- errors --- */

static void test_wrong_leading_byte_is_refused_as_soon_as_it_arrives(void) {
  /* A connection that does not speak the protocol is refused on its first
   * wrong byte, without waiting for a whole header. */
  for (int pos = 0; pos < 3; pos++) {
    uint8_t b[WIRE_HEADER_SIZE];
    valid_header_bytes(b);
    b[pos] ^= 0x20;
    for (size_t len = (size_t)pos + 1; len <= WIRE_HEADER_SIZE; len++) {
      wire_hdr_t h;
      size_t flen;
      int rc = parse_exact(b, len, 1 << 20, &h, &flen);
      if (rc != MAYFLY_EPROTO) fprintf(stderr, "  byte %d wrong, %zu bytes in\n", pos, len);
      MF_ASSERT_EQ(rc, MAYFLY_EPROTO);
    }
    /* Before the wrong byte arrives, the prefix is still plausible. */
    wire_hdr_t h;
    size_t flen;
    MF_ASSERT_EQ(parse_exact(b, (size_t)pos, 1 << 20, &h, &flen), MAYFLY_EAGAIN);
  }
}

static void test_bad_magic_is_a_protocol_error(void) {
  const uint8_t magics[][2] = {{'F', 'M'}, {0, 0}, {'m', 'f'}, {0xff, 0xff}, {'M', 0}, {0, 'F'}};
  for (size_t i = 0; i < G_N_ELEMENTS(magics); i++) {
    uint8_t b[WIRE_HEADER_SIZE];
    valid_header_bytes(b);
    b[0] = magics[i][0];
    b[1] = magics[i][1];
    wire_hdr_t h;
    size_t flen;
    MF_ASSERT_EQ(parse_exact(b, sizeof b, 1 << 20, &h, &flen), MAYFLY_EPROTO);
    CU_ASSERT_EQUAL(flen, FRAME_LEN_UNSET);
  }
}

static void test_bad_version_is_a_protocol_error(void) {
  const uint8_t versions[] = {0, WIRE_VERSION + 1, 0x80, 0xff};
  for (size_t i = 0; i < G_N_ELEMENTS(versions); i++) {
    uint8_t b[WIRE_HEADER_SIZE];
    valid_header_bytes(b);
    b[2] = versions[i];
    wire_hdr_t h;
    size_t flen;
    MF_ASSERT_EQ(parse_exact(b, sizeof b, 1 << 20, &h, &flen), MAYFLY_EPROTO);
    MF_ASSERT_EQ(parse_exact(b, 3, 1 << 20, &h, &flen), MAYFLY_EPROTO);
  }
}

static void test_payload_over_the_limit_is_refused_before_it_arrives(void) {
  wire_hdr_t want = sample_header();
  uint8_t b[WIRE_HEADER_SIZE];
  const uint32_t limit = 4096;
  wire_hdr_t h;
  size_t flen;

  want.payload_len = limit + 1;
  wire_encode(&want, b);
  MF_ASSERT_EQ(parse_exact(b, sizeof b, limit, &h, &flen), MAYFLY_ETOOBIG);

  want.payload_len = UINT32_MAX;
  wire_encode(&want, b);
  MF_ASSERT_EQ(parse_exact(b, sizeof b, limit, &h, &flen), MAYFLY_ETOOBIG);

  /* A limit of 0 allows header-only frames and nothing more. */
  want.payload_len = 1;
  wire_encode(&want, b);
  MF_ASSERT_EQ(parse_exact(b, sizeof b, 0, &h, &flen), MAYFLY_ETOOBIG);

  /* The limit itself is allowed: the parser waits for the payload. */
  want.payload_len = limit;
  wire_encode(&want, b);
  MF_ASSERT_EQ(parse_exact(b, sizeof b, limit, &h, &flen), MAYFLY_EAGAIN);
  MF_ASSERT_EQ(flen, WIRE_HEADER_SIZE + limit);
}

static void test_capability_over_the_limit_is_refused_before_it_arrives(void) {
  wire_hdr_t want = sample_header();
  want.payload_len = 0;
  uint8_t b[WIRE_HEADER_SIZE];
  wire_hdr_t h;
  size_t flen;

  const uint16_t too_big[] = {WIRE_CAP_MAX + 1, 0x8000, 0xffff};
  for (size_t i = 0; i < G_N_ELEMENTS(too_big); i++) {
    want.cap_len = too_big[i];
    wire_encode(&want, b);
    MF_ASSERT_EQ(parse_exact(b, sizeof b, UINT32_MAX, &h, &flen), MAYFLY_ETOOBIG);
  }

  want.cap_len = WIRE_CAP_MAX;
  wire_encode(&want, b);
  MF_ASSERT_EQ(parse_exact(b, sizeof b, UINT32_MAX, &h, &flen), MAYFLY_EAGAIN);
  MF_ASSERT_EQ(flen, WIRE_HEADER_SIZE + WIRE_CAP_MAX);

  GByteArray *f = frame_of(&want);
  MF_ASSERT_EQ(parse_exact(f->data, f->len, 0, &h, &flen), 0);
  MF_ASSERT_EQ(flen, WIRE_HEADER_SIZE + WIRE_CAP_MAX);
  g_byte_array_free(f, TRUE);
}

static void test_lengths_that_lie_never_read_past_the_buffer(void) {
  /* The header claims more than follows; the parser must only wait. Under
   * ASan, parse_exact's exact-size copies turn any overread into a report. */
  GRand *r = g_rand_new_with_seed(7);
  for (int k = 0; k < 2000; k++) {
    wire_hdr_t want = sample_header();
    want.cap_len = (uint16_t)g_rand_int_range(r, 0, WIRE_CAP_MAX + 1);
    want.payload_len = g_rand_int(r);
    uint8_t b[WIRE_HEADER_SIZE + 64];
    wire_encode(&want, b);
    memset(b + WIRE_HEADER_SIZE, 0xab, 64);
    size_t follows = (size_t)g_rand_int_range(r, 0, 65);
    size_t total = WIRE_HEADER_SIZE + (size_t)want.cap_len + want.payload_len;
    wire_hdr_t h;
    size_t flen;
    int rc = parse_exact(b, WIRE_HEADER_SIZE + follows, UINT32_MAX, &h, &flen);
    if (WIRE_HEADER_SIZE + follows >= total) {
      MF_ASSERT_EQ(rc, 0);
    } else {
      MF_ASSERT_EQ(rc, MAYFLY_EAGAIN);
    }
    MF_ASSERT_EQ(flen, total);
  }
  g_rand_free(r);
}

/* --- the kv hash --- */

static void test_kv_slot_is_fnv1a_of_the_key(void) {
  /* Reference values of 64-bit FNV-1a (offset basis 0xcbf29ce484222325,
   * prime 0x100000001b3), reduced mod 65536: clients in any language must
   * find the same slot. */
  MF_ASSERT_EQ(wire_kv_slot("", 0), 0xcbf29ce484222325ULL % 65536);
  MF_ASSERT_EQ(wire_kv_slot("a", 1), 0xaf63dc4c8601ec8cULL % 65536);
  MF_ASSERT_EQ(wire_kv_slot("foobar", 6), 0x85944171f73967e8ULL % 65536);
  /* The hash itself, which servers keep with each entry, and the slot of it. */
  MF_ASSERT_EQ(wire_kv_hash("", 0), 0xcbf29ce484222325ULL);
  MF_ASSERT_EQ(wire_kv_hash("a", 1), 0xaf63dc4c8601ec8cULL);
  MF_ASSERT_EQ(wire_kv_hash("foobar", 6), 0x85944171f73967e8ULL);
  MF_ASSERT_EQ(wire_kv_slot_of(0x85944171f73967e8ULL), wire_kv_slot("foobar", 6));
}

static void test_server_stat_payload_round_trips(void) {
  wire_server_stat_t in = {.source = WIRE_ALLOC_STATS_JEMALLOC,
                           .allocated = 0x0102030405060708ULL,
                           .resident = 1ULL << 40,
                           .charged = 12345,
                           .kv_entries = 1000000,
                           .blocks_in_use = 7,
                           .cap_refused = 3},
                     out;
  uint8_t buf[WIRE_SERVER_STAT_SIZE + 8];
  memset(buf, 0xee, sizeof buf);
  wire_server_stat_put(buf, &in);
  /* Little-endian u64 fields in the documented order. */
  MF_ASSERT_EQ(buf[0], WIRE_ALLOC_STATS_JEMALLOC);
  MF_ASSERT_EQ(buf[8], 0x08);
  MF_ASSERT_EQ(buf[15], 0x01);
  MF_ASSERT_EQ(buf[48], 3);
  MF_ASSERT_EQ(buf[WIRE_SERVER_STAT_SIZE], 0xee); /* nothing written past the size */
  MF_ASSERT_EQ(wire_server_stat_get(buf, WIRE_SERVER_STAT_SIZE, &out), 0);
  CU_ASSERT(memcmp(&in, &out, sizeof in) == 0);
  /* A longer payload (a later version's) still reads; a short one does not. */
  MF_ASSERT_EQ(wire_server_stat_get(buf, sizeof buf, &out), 0);
  MF_ASSERT_EQ(wire_server_stat_get(buf, WIRE_SERVER_STAT_SIZE - 1, &out), MAYFLY_EPROTO);
}

static void test_kv_slot_is_deterministic_and_in_range(void) {
  GRand *r = g_rand_new_with_seed(65536);
  for (int k = 0; k < 10000; k++) {
    uint8_t key[40];
    size_t len = (size_t)g_rand_int_range(r, 0, (gint32)sizeof key + 1);
    for (size_t i = 0; i < len; i++) key[i] = (uint8_t)g_rand_int(r);
    uint32_t slot = wire_kv_slot(key, len);
    CU_ASSERT(slot < 65536);
    /* The same bytes at another address give the same slot. */
    uint8_t copy[40];
    memcpy(copy, key, len);
    MF_ASSERT_EQ(wire_kv_slot(copy, len), slot);
  }
  g_rand_free(r);
  /* Binary keys: every byte counts, embedded NULs included. */
  CU_ASSERT(wire_kv_slot("a\0b", 3) != wire_kv_slot("a", 1));
  CU_ASSERT(wire_kv_slot("a\0b", 3) != wire_kv_slot("a\0c", 3));
}

/* Counts n keys made by make_key into 4 ranges of 16384 slots and checks each
 * holds 25% +-10% of them (22.5%..27.5%). */
static void check_spread(int n, size_t (*make_key)(int, uint8_t *)) {
  int ranges[4] = {0};
  for (int i = 0; i < n; i++) {
    uint8_t key[32];
    size_t len = make_key(i, key);
    ranges[wire_kv_slot(key, len) / 16384]++;
  }
  for (int q = 0; q < 4; q++) {
    if (ranges[q] < n * 225 / 1000 || ranges[q] > n * 275 / 1000) {
      fprintf(stderr, "  range %d holds %d of %d keys\n", q, ranges[q], n);
    }
    CU_ASSERT(ranges[q] >= n * 225 / 1000);
    CU_ASSERT(ranges[q] <= n * 275 / 1000);
  }
}

static size_t text_key(int i, uint8_t *out) {
  return (size_t)g_snprintf((char *)out, 32, "user:%d", i);
}

static size_t binary_key(int i, uint8_t *out) {
  uint32_t v = (uint32_t)i;
  memcpy(out, &v, sizeof v);
  return sizeof v;
}

static void test_kv_slot_spreads_keys_over_ranges(void) {
  check_spread(100000, text_key);
  check_spread(100000, binary_key);
}

/* --- migration records --- */

/* A heap copy of exactly len bytes (at least one byte is allocated), so that
 * under AddressSanitizer a read past len is reported. Free with free(). */
static uint8_t *exact_copy(const void *buf, size_t len) {
  uint8_t *copy = malloc(len > 0 ? len : 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(copy);
  if (len > 0) memcpy(copy, buf, len);
  return copy;
}

/* Writes a record header claiming klen and vlen. */
static void entry_header(uint8_t out[WIRE_KV_ENTRY_HEADER], uint32_t klen, uint32_t vlen) {
  for (int i = 0; i < 4; i++) {
    out[i] = (uint8_t)(klen >> (8 * i));
    out[4 + i] = (uint8_t)(vlen >> (8 * i));
  }
}

static void test_kv_entry_is_two_little_endian_lengths_then_key_then_value(void) {
  uint8_t out[WIRE_KV_ENTRY_HEADER + 5];
  wire_kv_entry_put(out, "ab", 2, "xyz", 3);
  const uint8_t want[] = {2, 0, 0, 0, 3, 0, 0, 0, 'a', 'b', 'x', 'y', 'z'};
  CU_ASSERT(memcmp(out, want, sizeof want) == 0);
  /* Lengths of more than one byte, little-endian: 0x0102 and 0x010000. */
  uint8_t *key = g_malloc0(0x0102), *val = g_malloc0(0x010000);
  uint8_t *big = g_malloc(WIRE_KV_ENTRY_HEADER + 0x0102 + 0x010000);
  key[0] = 'K';
  val[0x010000 - 1] = 'V';
  wire_kv_entry_put(big, key, 0x0102, val, 0x010000);
  const uint8_t lens[] = {0x02, 0x01, 0, 0, 0, 0, 0x01, 0};
  CU_ASSERT(memcmp(big, lens, sizeof lens) == 0);
  MF_ASSERT_EQ(big[WIRE_KV_ENTRY_HEADER], 'K');
  MF_ASSERT_EQ(big[WIRE_KV_ENTRY_HEADER + 0x0102 + 0x010000 - 1], 'V');
  /* Empty key and value: the header alone. */
  uint8_t empty[WIRE_KV_ENTRY_HEADER];
  memset(empty, 0xee, sizeof empty);
  wire_kv_entry_put(empty, NULL, 0, NULL, 0);
  const uint8_t zeros[WIRE_KV_ENTRY_HEADER] = {0};
  CU_ASSERT(memcmp(empty, zeros, sizeof zeros) == 0);
  g_free(key);
  g_free(val);
  g_free(big);
}

static void test_kv_entries_read_back_in_order(void) {
  const struct {
    const char *key;
    uint32_t klen;
    const char *val;
    uint32_t vlen;
  } want[] = {{"alpha", 5, "one", 3},     {"", 0, "empty key", 9}, {"k\0x", 3, "", 0},
              {"", 0, "", 0},             {"b\0", 2, "\0\1\2", 3}, {"last", 4, "z", 1}};
  GByteArray *buf = g_byte_array_new();
  size_t offsets[G_N_ELEMENTS(want)];
  for (size_t i = 0; i < G_N_ELEMENTS(want); i++) {
    offsets[i] = buf->len;
    g_byte_array_set_size(buf, buf->len + WIRE_KV_ENTRY_HEADER + want[i].klen + want[i].vlen);
    wire_kv_entry_put(buf->data + offsets[i], want[i].key, want[i].klen, want[i].val,
                      want[i].vlen);
  }
  uint8_t *b = exact_copy(buf->data, buf->len);
  size_t pos = 0;
  for (size_t i = 0; i < G_N_ELEMENTS(want); i++) {
    const uint8_t *key = NULL, *val = NULL;
    uint32_t klen = 99, vlen = 99;
    MF_ASSERT_EQ(pos, offsets[i]);
    MF_ASSERT_EQ(wire_kv_entry_next(b, buf->len, &pos, &key, &klen, &val, &vlen), 1);
    /* The key and the value point into the buffer, right after the header. */
    CU_ASSERT_PTR_EQUAL(key, b + offsets[i] + WIRE_KV_ENTRY_HEADER);
    CU_ASSERT_PTR_EQUAL(val, key + klen);
    MF_ASSERT_EQ(klen, want[i].klen);
    MF_ASSERT_EQ(vlen, want[i].vlen);
    if (klen > 0) CU_ASSERT(memcmp(key, want[i].key, klen) == 0);
    if (vlen > 0) CU_ASSERT(memcmp(val, want[i].val, vlen) == 0);
    MF_ASSERT_EQ(pos, offsets[i] + WIRE_KV_ENTRY_HEADER + klen + vlen);
  }
  /* At the end: 0, and it stays there. */
  const uint8_t *key, *val;
  uint32_t klen, vlen;
  MF_ASSERT_EQ(wire_kv_entry_next(b, buf->len, &pos, &key, &klen, &val, &vlen), 0);
  MF_ASSERT_EQ(pos, buf->len);
  MF_ASSERT_EQ(wire_kv_entry_next(b, buf->len, &pos, &key, &klen, &val, &vlen), 0);
  MF_ASSERT_EQ(pos, buf->len);
  free(b);
  g_byte_array_free(buf, TRUE);

  /* An empty buffer has no records. */
  b = exact_copy(NULL, 0);
  pos = 0;
  MF_ASSERT_EQ(wire_kv_entry_next(b, 0, &pos, &key, &klen, &val, &vlen), 0);
  MF_ASSERT_EQ(pos, 0);
  free(b);
}

static void test_kv_entry_cut_short_is_a_protocol_error_at_every_length(void) {
  /* A whole record first, then one cut at every length: in its header, in
   * its key, in its value. The first still reads; the cut one is EPROTO and
   * leaves pos where the record starts. */
  uint8_t rec[2 * WIRE_KV_ENTRY_HEADER + 3 + 4 + 5 + 6];
  wire_kv_entry_put(rec, "abc", 3, "defg", 4);
  const size_t first = WIRE_KV_ENTRY_HEADER + 3 + 4;
  wire_kv_entry_put(rec + first, "hijkl", 5, "mnopqr", 6);
  for (size_t len = first + 1; len < sizeof rec; len++) {
    uint8_t *b = exact_copy(rec, len);
    size_t pos = 0;
    const uint8_t *key, *val;
    uint32_t klen, vlen;
    MF_ASSERT_EQ(wire_kv_entry_next(b, len, &pos, &key, &klen, &val, &vlen), 1);
    MF_ASSERT_EQ(pos, first);
    MF_ASSERT_EQ(wire_kv_entry_next(b, len, &pos, &key, &klen, &val, &vlen), MAYFLY_EPROTO);
    MF_ASSERT_EQ(pos, first);
    free(b);
  }
  /* The whole of it reads to the end. */
  uint8_t *b = exact_copy(rec, sizeof rec);
  size_t pos = 0, n = 0;
  const uint8_t *key, *val;
  uint32_t klen, vlen;
  int rc;
  while ((rc = wire_kv_entry_next(b, sizeof rec, &pos, &key, &klen, &val, &vlen)) == 1) n++;
  MF_ASSERT_EQ(rc, 0);
  MF_ASSERT_EQ(n, 2);
  MF_ASSERT_EQ(pos, sizeof rec);
  free(b);
}

static void test_kv_entry_lengths_near_uint32_max_never_read_past_the_buffer(void) {
  /* Lengths that claim more than follows, including ones whose 32-bit sum
   * wraps around to something small, or to exactly what follows. Each is
   * handed over in an exact-size copy: under ASan any overread is reported. */
  const size_t follows = 16;
  const struct {
    uint32_t klen, vlen;
  } lies[] = {
      {UINT32_MAX, 0},
      {0, UINT32_MAX},
      {UINT32_MAX, UINT32_MAX},
      {0x80000000u, 0x80000000u},             /* sums to 0 in 32 bits */
      {UINT32_MAX, 1},                        /* sums to 0 in 32 bits */
      {UINT32_MAX - 14, 31},                  /* sums to follows in 32 bits */
      {2, UINT32_MAX},                        /* sums to 1 in 32 bits */
      {(uint32_t)follows + 1, 0},             /* the key alone runs past the end */
      {(uint32_t)follows, 1},                 /* the value runs one byte past */
      {0, (uint32_t)follows + 1},
      {8, 9},
  };
  uint8_t raw[WIRE_KV_ENTRY_HEADER + 16];
  memset(raw + WIRE_KV_ENTRY_HEADER, 0x5a, follows);
  for (size_t i = 0; i < G_N_ELEMENTS(lies); i++) {
    entry_header(raw, lies[i].klen, lies[i].vlen);
    for (size_t len = WIRE_KV_ENTRY_HEADER; len <= sizeof raw; len++) {
      uint8_t *b = exact_copy(raw, len);
      size_t pos = 0;
      const uint8_t *key = NULL, *val = NULL;
      uint32_t klen = 0, vlen = 0;
      int rc = wire_kv_entry_next(b, len, &pos, &key, &klen, &val, &vlen);
      if (rc != MAYFLY_EPROTO) fprintf(stderr, "  lie %zu at length %zu\n", i, len);
      MF_ASSERT_EQ(rc, MAYFLY_EPROTO);
      MF_ASSERT_EQ(pos, 0);
      free(b);
    }
  }
  /* The largest lengths that do fit are accepted, exactly. */
  const struct {
    uint32_t klen, vlen;
  } fits[] = {{16, 0}, {0, 16}, {7, 9}, {15, 1}};
  for (size_t i = 0; i < G_N_ELEMENTS(fits); i++) {
    entry_header(raw, fits[i].klen, fits[i].vlen);
    uint8_t *b = exact_copy(raw, sizeof raw);
    size_t pos = 0;
    const uint8_t *key = NULL, *val = NULL;
    uint32_t klen = 0, vlen = 0;
    MF_ASSERT_EQ(wire_kv_entry_next(b, sizeof raw, &pos, &key, &klen, &val, &vlen), 1);
    MF_ASSERT_EQ(klen, fits[i].klen);
    MF_ASSERT_EQ(vlen, fits[i].vlen);
    MF_ASSERT_EQ(pos, sizeof raw);
    CU_ASSERT(val + vlen == b + sizeof raw);
    free(b);
  }
}

static void test_kv_entry_walk_of_damaged_records_stays_inside_the_buffer(void) {
  /* Valid records with one byte changed or the tail cut: every record read
   * lies inside the buffer, pos only grows, and the walk ends in 0 exactly at
   * the end or in EPROTO where the damage is. */
  GRand *r = g_rand_new_with_seed(11);
  int ends = 0, errors = 0;
  for (int k = 0; k < 20000; k++) {
    uint8_t raw[96];
    size_t len = 0;
    for (;;) {
      uint32_t kl = (uint32_t)g_rand_int_range(r, 0, 10);
      uint32_t vl = (uint32_t)g_rand_int_range(r, 0, 10);
      if (len + WIRE_KV_ENTRY_HEADER + kl + vl > sizeof raw) break;
      uint8_t data[20];
      for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)g_rand_int(r);
      wire_kv_entry_put(raw + len, data, kl, data + 10, vl);
      len += WIRE_KV_ENTRY_HEADER + kl + vl;
    }
    switch (g_rand_int_range(r, 0, 3)) {
      case 0:
        raw[g_rand_int_range(r, 0, (gint32)len)] = (uint8_t)g_rand_int(r);
        break;
      case 1:
        len = (size_t)g_rand_int_range(r, 0, (gint32)len + 1);
        break;
      default:
        break; /* intact */
    }
    uint8_t *b = exact_copy(raw, len);
    size_t pos = 0;
    int rc;
    for (;;) {
      const uint8_t *key = NULL, *val = NULL;
      uint32_t klen = 0, vlen = 0;
      size_t before = pos;
      rc = wire_kv_entry_next(b, len, &pos, &key, &klen, &val, &vlen);
      if (rc != 1) {
        MF_ASSERT_EQ(pos, before);
        break;
      }
      MF_ASSERT_EQ(pos - before, WIRE_KV_ENTRY_HEADER + (size_t)klen + vlen);
      CU_ASSERT(key == b + before + WIRE_KV_ENTRY_HEADER && val == key + klen);
      CU_ASSERT(pos <= len);
    }
    if (rc == 0) {
      MF_ASSERT_EQ(pos, len);
      ends++;
    } else {
      MF_ASSERT_EQ(rc, MAYFLY_EPROTO);
      errors++;
    }
    free(b);
  }
  /* Both endings were reached many times. */
  CU_ASSERT(ends > 5000);
  CU_ASSERT(errors > 2000);
  g_rand_free(r);
}

int main(void) {
  static const mf_test_t tests[] = {
      {"every header field round-trips", test_every_field_round_trips},
      {"a negative status round-trips", test_negative_status_round_trips},
      {"maximum values round-trip", test_maximum_values_round_trip},
      {"an all-zero header round-trips", test_zero_header_round_trips},
      {"the encoding is little-endian at fixed offsets",
       test_encoding_is_little_endian_at_fixed_offsets},
      {"parse then encode reproduces the bytes", test_parse_then_encode_reproduces_the_bytes},
      {"a truncated header needs more at every length",
       test_truncated_header_needs_more_at_every_length},
      {"a partial payload needs more and tells the frame size",
       test_partial_payload_needs_more_and_tells_the_frame_size},
      {"an exactly complete frame is ready", test_exactly_complete_frame_is_ready},
      {"two frames back to back parse one at a time",
       test_two_frames_back_to_back_parse_one_at_a_time},
      {"a wrong leading byte is refused as soon as it arrives",
       test_wrong_leading_byte_is_refused_as_soon_as_it_arrives},
      {"a bad magic is a protocol error", test_bad_magic_is_a_protocol_error},
      {"a bad version is a protocol error", test_bad_version_is_a_protocol_error},
      {"a payload over the limit is refused before it arrives",
       test_payload_over_the_limit_is_refused_before_it_arrives},
      {"a capability over the limit is refused before it arrives",
       test_capability_over_the_limit_is_refused_before_it_arrives},
      {"lengths that lie never read past the buffer",
       test_lengths_that_lie_never_read_past_the_buffer},
      {"the kv slot is FNV-1a of the key", test_kv_slot_is_fnv1a_of_the_key},
      {"the server stat payload round-trips", test_server_stat_payload_round_trips},
      {"the kv slot is deterministic and in range", test_kv_slot_is_deterministic_and_in_range},
      {"the kv slot spreads keys over ranges", test_kv_slot_spreads_keys_over_ranges},
      {"a migration record is two little-endian lengths, then key, then value",
       test_kv_entry_is_two_little_endian_lengths_then_key_then_value},
      {"migration records read back in order", test_kv_entries_read_back_in_order},
      {"a migration record cut short is a protocol error at every length",
       test_kv_entry_cut_short_is_a_protocol_error_at_every_length},
      {"migration record lengths near UINT32_MAX never read past the buffer",
       test_kv_entry_lengths_near_uint32_max_never_read_past_the_buffer},
      {"a walk of damaged migration records stays inside the buffer",
       test_kv_entry_walk_of_damaged_records_stays_inside_the_buffer},
      {NULL, NULL}};
  return mf_test_run("wire", NULL, NULL, tests);
}
