/*
 * Bounded compact-protocol message checker (see compact_scan.h).
 *
 * Compact protocol recap: a message is 0x82, a byte holding version (low 5
 * bits, must be 1) and type (high 3 bits), a varint seqid and the method name
 * (varint length + bytes), followed by a struct. A struct is a sequence of
 * field headers (high nibble: field id delta, 0 meaning a zigzag varint i16
 * follows; low nibble: type) ending with a 0 byte. Lists and sets start with
 * a byte (high nibble: size, 15 meaning a varint size follows; low nibble:
 * element type); maps with a varint size and, when non-empty, a byte of key
 * and value types.
 */
#include "common/compact_scan.h"

#include <stdio.h>

#include "common/error.h"

enum {
  CT_STOP = 0,
  CT_TRUE = 1,
  CT_FALSE = 2,
  CT_BYTE = 3,
  CT_I16 = 4,
  CT_I32 = 5,
  CT_I64 = 6,
  CT_DOUBLE = 7,
  CT_BINARY = 8,
  CT_LIST = 9,
  CT_SET = 10,
  CT_MAP = 11,
  CT_STRUCT = 12
};

typedef struct {
  const uint8_t *p, *end;
} cursor_t;

typedef struct {
  uint8_t is_struct;
  uint8_t t1, t2;     /* list: element type; map: key and value types */
  uint8_t is_map;
  uint64_t remaining; /* values still to read (a map counts keys and values) */
} frame_t;

static int read_varint(cursor_t *c, uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (c->p >= c->end) return -1;
    uint8_t b = *c->p++;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return -1;
}

static int skip_bytes(cursor_t *c, uint64_t n) {
  if (n > (uint64_t)(c->end - c->p)) return -1;
  c->p += n;
  return 0;
}

#define FAIL(...)                                        \
  do {                                                   \
    if (why != NULL) snprintf(why, whylen, __VA_ARGS__); \
    return MAYFLY_EPROTO;                                \
  } while (0)

int mf_compact_scan(const uint8_t *buf, size_t len, int max_depth, mf_compact_msg_t *msg,
                    char *why, size_t whylen) {
  cursor_t c = {buf, buf + len};
  frame_t stack[MF_COMPACT_MAX_DEPTH + 1];
  uint64_t v;
  if (max_depth > MF_COMPACT_MAX_DEPTH) max_depth = MF_COMPACT_MAX_DEPTH;

  if (len < 2 || buf[0] != 0x82 || (buf[1] & 0x1f) != 1) FAIL("not a compact-protocol message");
  c.p += 2;
  if (read_varint(&c, &v) != 0) FAIL("bad sequence id");
  if (read_varint(&c, &v) != 0) FAIL("bad method name");
  const char *name = (const char *)c.p;
  if (skip_bytes(&c, v) != 0) FAIL("bad method name");
  if (msg != NULL) *msg = (mf_compact_msg_t){buf[1] >> 5, name, (size_t)v};

  int depth = 0;
  stack[0] = (frame_t){.is_struct = 1};
  while (depth >= 0) {
    frame_t *f = &stack[depth];
    uint8_t type;
    if (f->is_struct) {
      if (c.p >= c.end) FAIL("message ends inside a struct");
      uint8_t h = *c.p++;
      if (h == CT_STOP) {
        depth--;
        continue;
      }
      type = h & 0x0f;
      if ((h >> 4) == 0 && read_varint(&c, &v) != 0) FAIL("bad field id");
    } else {
      if (f->remaining == 0) {
        depth--;
        continue;
      }
      type = (f->is_map && (f->remaining & 1) == 0) ? f->t1 : f->t2;
      f->remaining--;
      /* A bool inside a container takes one byte, unlike a bool field. */
      if (type == CT_TRUE || type == CT_FALSE) {
        if (skip_bytes(&c, 1) != 0) FAIL("message ends inside a container");
        continue;
      }
    }
    switch (type) {
      case CT_TRUE:
      case CT_FALSE:
        break;
      case CT_BYTE:
        if (skip_bytes(&c, 1) != 0) FAIL("truncated byte");
        break;
      case CT_I16:
      case CT_I32:
      case CT_I64:
        if (read_varint(&c, &v) != 0) FAIL("truncated integer");
        break;
      case CT_DOUBLE:
        if (skip_bytes(&c, 8) != 0) FAIL("truncated double");
        break;
      case CT_BINARY:
        if (read_varint(&c, &v) != 0 || skip_bytes(&c, v) != 0) {
          FAIL("string length exceeds the message");
        }
        break;
      case CT_LIST:
      case CT_SET:
      case CT_MAP:
      case CT_STRUCT: {
        if (depth + 1 > max_depth) FAIL("nesting deeper than %d", max_depth);
        frame_t nf = {0};
        if (type == CT_STRUCT) {
          nf.is_struct = 1;
        } else if (type == CT_MAP) {
          if (read_varint(&c, &v) != 0) FAIL("bad map size");
          nf.is_map = 1;
          if (v > 0) {
            if (c.p >= c.end) FAIL("truncated map header");
            nf.t1 = *c.p >> 4;
            nf.t2 = *c.p & 0x0f;
            c.p++;
          }
          /* Every key and value takes at least one byte. */
          if (v > (uint64_t)(c.end - c.p) / 2) FAIL("map size exceeds the message");
          nf.remaining = v * 2;
        } else {
          if (c.p >= c.end) FAIL("truncated list header");
          uint8_t h = *c.p++;
          v = h >> 4;
          nf.t2 = h & 0x0f;
          if (v == 15 && read_varint(&c, &v) != 0) FAIL("bad list size");
          /* Every element takes at least one byte. */
          if (v > (uint64_t)(c.end - c.p)) FAIL("list size exceeds the message");
          nf.remaining = v;
        }
        if (!nf.is_struct && nf.remaining > 0 &&
            ((nf.t2 == CT_STOP || nf.t2 > CT_STRUCT) ||
             (nf.is_map && (nf.t1 == CT_STOP || nf.t1 > CT_STRUCT)))) {
          FAIL("unknown element type");
        }
        stack[++depth] = nf;
        break;
      }
      default:
        FAIL("unknown field type %u", type);
    }
  }
  if (c.p != c.end) FAIL("%zu bytes after the end of the message", (size_t)(c.end - c.p));
  return 0;
}
