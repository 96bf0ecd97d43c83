/*
 * Fuzz target for the data-plane frame decoder (common/wire.c): arbitrary
 * bytes are parsed as a connection's receive buffer is, frame after frame,
 * advancing by each frame's length until the parser asks for more bytes or
 * refuses the stream. Each answer is checked against the raw bytes:
 *
 *   - a ready frame (0) lies wholly inside the input, its length is
 *     header + capability + payload within the limits, and its header
 *     re-encodes (wire_encode) to the very bytes it was parsed from; no
 *     shorter prefix of it is ready;
 *   - "need more" (MAYFLY_EAGAIN) with a whole header reports a frame length
 *     beyond the bytes present; with less than a header, every byte present
 *     agrees with the magic and version;
 *   - MAYFLY_EPROTO only for a wrong magic or version byte, MAYFLY_ETOOBIG
 *     only for a complete header whose lengths exceed the limits.
 *
 * The payload of every ready frame, and the raw input itself, are also read
 * as a SERVER_STAT reply payload (wire_server_stat_get), and
 * as a sequence of kv migration records (wire_kv_entry_next, the payload of
 * WIRE_OP_KV_MIGRATE), each from an exact-size copy: every record read lies
 * inside the buffer with the lengths its header states and re-encodes to its
 * bytes, pos only grows and never passes the end, the walk ends in 0 exactly
 * at the end, and MAYFLY_EPROTO only where the header is cut short or its
 * lengths claim more than follows.
 *
 * A failed check aborts, which libFuzzer and the replay driver both report.
 * Each input is parsed twice: with a 1 MiB payload limit and with a 64-byte
 * one, so that small inputs also reach the "too big" path.
 *
 * Built as a libFuzzer target with clang (-DMAYFLY_FUZZ=ON); with any
 * compiler it is also linked with fuzz_wire_driver.c into a CTest that
 * replays seeds and their deterministic mutations.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/wire.h"
#include "fz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Outcomes seen, for the driver's report (a run that never reaches one of
 * them tests less than it seems). */
long fuzz_wire_frames, fuzz_wire_again, fuzz_wire_proto, fuzz_wire_toobig;
long fuzz_wire_kv_records, fuzz_wire_kv_ends, fuzz_wire_kv_proto;

static uint32_t raw32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The raw lengths, read independently of wire_parse. */
static uint32_t raw_payload_len(const uint8_t *p) {
  return raw32(p + 4);
}

static uint16_t raw_cap_len(const uint8_t *p) {
  return (uint16_t)(p[22] | p[23] << 8);
}

/* Whether the first min(len, 3) bytes agree with magic and version. */
static int prefix_ok(const uint8_t *p, size_t len) {
  const uint8_t want[3] = {WIRE_MAGIC & 0xff, WIRE_MAGIC >> 8, WIRE_VERSION};
  for (size_t i = 0; i < len && i < 3; i++) {
    if (p[i] != want[i]) return 0;
  }
  return 1;
}

/* A header the parser filled re-encodes to the bytes it came from. */
static void check_round_trip(const wire_hdr_t *h, const uint8_t *p) {
  uint8_t again[WIRE_HEADER_SIZE];
  wire_encode(h, again);
  FZ_CHECK(memcmp(again, p, WIRE_HEADER_SIZE) == 0);
}

/* A ready frame of flen bytes is not ready one byte earlier (nor at a few
 * shorter lengths), so a receiver never serves a frame before it is whole. */
static void check_not_ready_earlier(const uint8_t *p, size_t flen, uint32_t max_payload) {
  const size_t probes[] = {0, 1, 2, 3, 4, WIRE_HEADER_SIZE - 1, WIRE_HEADER_SIZE, flen - 1};
  for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
    if (probes[i] >= flen) continue;
    wire_hdr_t h;
    size_t fl = 0;
    FZ_CHECK(wire_parse(p, probes[i], max_payload, &h, &fl) == MAYFLY_EAGAIN);
    if (probes[i] >= WIRE_HEADER_SIZE) FZ_CHECK(fl == flen);
  }
}

/* Walks buf[0..len) as migration records, checking every answer of
 * wire_kv_entry_next against the raw bytes. buf must be an exact-size
 * allocation (at least one byte) so that ASan sees any overread. */
static void walk_kv_entries(const uint8_t *buf, size_t len) {
  size_t pos = 0;
  for (;;) {
    const uint8_t *key = NULL, *val = NULL;
    uint32_t klen = 0, vlen = 0;
    size_t before = pos;
    int rc = wire_kv_entry_next(buf, len, &pos, &key, &klen, &val, &vlen);
    if (rc == 1) {
      FZ_CHECK(before < len && len - before >= WIRE_KV_ENTRY_HEADER);
      const uint8_t *p = buf + before;
      FZ_CHECK(klen == raw32(p) && vlen == raw32(p + 4));
      FZ_CHECK(key == p + WIRE_KV_ENTRY_HEADER && val == key + klen);
      FZ_CHECK(pos > before && pos <= len);
      FZ_CHECK(pos - before == WIRE_KV_ENTRY_HEADER + (size_t)klen + vlen);
      /* The record re-encodes to the very bytes it was read from. */
      uint8_t *again = malloc(pos - before);
      FZ_CHECK(again != NULL);
      wire_kv_entry_put(again, key, klen, val, vlen);
      FZ_CHECK(memcmp(again, p, pos - before) == 0);
      free(again);
      fuzz_wire_kv_records++;
      continue;
    }
    FZ_CHECK(pos == before); /* an end or an error does not move */
    if (rc == 0) {
      FZ_CHECK(pos == len);
      fuzz_wire_kv_ends++;
      return;
    }
    FZ_CHECK(rc == MAYFLY_EPROTO);
    size_t left = len - pos;
    FZ_CHECK(left > 0);
    FZ_CHECK(left < WIRE_KV_ENTRY_HEADER ||
               (uint64_t)raw32(buf + pos) + raw32(buf + pos + 4) > left - WIRE_KV_ENTRY_HEADER);
    fuzz_wire_kv_proto++;
    return;
  }
}

/* Walks len bytes at p as migration records, from an exact-size copy. */
static void walk_kv_entries_copy(const uint8_t *p, size_t len) {
  uint8_t *copy = malloc(len > 0 ? len : 1);
  FZ_CHECK(copy != NULL);
  if (len > 0) memcpy(copy, p, len);
  walk_kv_entries(copy, len);
  free(copy);
}

/* Decodes len bytes at p as a SERVER_STAT reply payload from an exact-size
 * copy: short payloads are refused, longer ones decode their first fields
 * and re-encode to the same bytes. */
static void check_server_stat(const uint8_t *p, size_t len) {
  uint8_t *copy = calloc(len > 0 ? len : 1, 1);
  FZ_CHECK(copy != NULL);
  if (len > 0) memcpy(copy, p, len);
  wire_server_stat_t st;
  int rc = wire_server_stat_get(copy, len, &st);
  if (len < WIRE_SERVER_STAT_SIZE) {
    FZ_CHECK(rc == MAYFLY_EPROTO);
  } else {
    FZ_CHECK(rc == 0);
    uint8_t again[WIRE_SERVER_STAT_SIZE];
    wire_server_stat_put(again, &st);
    FZ_CHECK(memcmp(again, copy, WIRE_SERVER_STAT_SIZE) == 0);
  }
  free(copy);
}

static void parse_stream(const uint8_t *data, size_t size, uint32_t max_payload) {
  size_t pos = 0;
  for (;;) {
    const uint8_t *p = data + pos;
    size_t left = size - pos;
    wire_hdr_t h;
    memset(&h, 0, sizeof h);
    size_t flen = SIZE_MAX;
    int rc = wire_parse(p, left, max_payload, &h, &flen);
    if (rc == 0) {
      FZ_CHECK(left >= WIRE_HEADER_SIZE);
      FZ_CHECK(flen >= WIRE_HEADER_SIZE && flen <= left);
      FZ_CHECK(prefix_ok(p, 3));
      FZ_CHECK(h.cap_len == raw_cap_len(p) && h.payload_len == raw_payload_len(p));
      FZ_CHECK(h.cap_len <= WIRE_CAP_MAX && h.payload_len <= max_payload);
      FZ_CHECK(flen == WIRE_HEADER_SIZE + (size_t)h.cap_len + h.payload_len);
      check_round_trip(&h, p);
      check_not_ready_earlier(p, flen, max_payload);
      walk_kv_entries_copy(p + WIRE_HEADER_SIZE + h.cap_len, h.payload_len);
      check_server_stat(p + WIRE_HEADER_SIZE + h.cap_len, h.payload_len);
      fuzz_wire_frames++;
      pos += flen;
      FZ_CHECK(pos <= size);
      continue;
    }
    if (rc == MAYFLY_EAGAIN) {
      FZ_CHECK(prefix_ok(p, left));
      if (left >= WIRE_HEADER_SIZE) {
        FZ_CHECK(h.cap_len <= WIRE_CAP_MAX && h.payload_len <= max_payload);
        FZ_CHECK(flen == WIRE_HEADER_SIZE + (size_t)h.cap_len + h.payload_len);
        FZ_CHECK(flen > left);
        check_round_trip(&h, p);
      }
      fuzz_wire_again++;
      return;
    }
    if (rc == MAYFLY_EPROTO) {
      FZ_CHECK(left > 0 && !prefix_ok(p, left));
      fuzz_wire_proto++;
      return;
    }
    FZ_CHECK(rc == MAYFLY_ETOOBIG);
    FZ_CHECK(left >= WIRE_HEADER_SIZE && prefix_ok(p, 3));
    FZ_CHECK(raw_cap_len(p) > WIRE_CAP_MAX || raw_payload_len(p) > max_payload);
    fuzz_wire_toobig++;
    return;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const uint8_t nothing[1];
  if (data == NULL) data = nothing; /* no arithmetic on a null pointer */
  parse_stream(data, size, 1u << 20);
  parse_stream(data, size, 64);
  walk_kv_entries_copy(data, size);
  check_server_stat(data, size);
  return 0;
}
