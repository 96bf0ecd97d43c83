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
#include <string.h>

#include "common/error.h"

enum { CT_STOP = 0, CT_TRUE = 1, CT_FALSE = 2 };

typedef struct {
  const uint8_t *p, *end;
} cursor_t;

/* One open struct or container. `spec` is its declared type (NULL when the
 * table does not describe it: then only its structure is checked); `arg`
 * and `name` are the argument it belongs to and its own field name, for
 * messages. */
typedef struct {
  uint8_t is_struct;
  uint8_t t1, t2;     /* list: element type; map: key and value types */
  uint8_t is_map;
  uint64_t remaining; /* values still to read (a map counts keys and values) */
  int last_id;        /* struct: the previous field id, for id deltas */
  uint64_t seen;      /* struct: declared field ids (below 64) already read */
  const mf_compact_type_t *spec;
  const char *arg, *name;
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

/* Whether wire type `wire` carries a value declared as `declared`. */
static int type_matches(uint8_t declared, uint8_t wire) {
  if (declared == MF_CT_BOOL) return wire == CT_TRUE || wire == CT_FALSE;
  return declared == wire;
}

static const mf_compact_field_t *find_field(const mf_compact_type_t *spec, int id) {
  if (spec == NULL || spec->type != MF_CT_STRUCT || spec->fields == NULL) return NULL;
  for (const mf_compact_field_t *f = spec->fields; f->id != 0; f++) {
    if (f->id == id) return f;
  }
  return NULL;
}

static const mf_compact_method_t *find_method(const mf_compact_method_t *methods,
                                              const char *name, size_t len) {
  for (const mf_compact_method_t *m = methods; m->name != NULL; m++) {
    if (strlen(m->name) == len && memcmp(m->name, name, len) == 0) return m;
  }
  return NULL;
}

/* A method name as a log line may quote it: at most 40 bytes, anything
 * unprintable as '?'. */
static void printable(char *out, size_t outlen, const char *s, size_t len) {
  size_t n = 0;
  for (; n < len && n < 40 && n + 1 < outlen; n++) {
    out[n] = (s[n] >= 0x20 && s[n] < 0x7f) ? s[n] : '?';
  }
  out[n] = '\0';
}

#define FAIL(...)                                        \
  do {                                                   \
    if (why != NULL) snprintf(why, whylen, __VA_ARGS__); \
    return MAYFLY_EPROTO;                                \
  } while (0)

/* "method: argument: " or "method: argument: field: " for a message. */
#define WHERE(f, leaf)                                                     \
  mname, (f)->arg != NULL ? (f)->arg : "?",                                \
      ((leaf) != NULL && (leaf) != (f)->arg) ? ": " : "",                  \
      ((leaf) != NULL && (leaf) != (f)->arg) ? (leaf) : ""

int mf_compact_scan(const uint8_t *buf, size_t len, int max_depth,
                    const mf_compact_method_t *methods, mf_compact_msg_t *msg, char *why,
                    size_t whylen) {
  cursor_t c = {buf, buf + len};
  frame_t stack[MF_COMPACT_MAX_DEPTH + 1];
  uint64_t v;
  if (max_depth > MF_COMPACT_MAX_DEPTH) max_depth = MF_COMPACT_MAX_DEPTH;

  if (len < 2 || buf[0] != 0x82 || (buf[1] & 0x1f) != 1) FAIL("not a compact-protocol message");
  int mtype = buf[1] >> 5;
  c.p += 2;
  if (read_varint(&c, &v) != 0) FAIL("bad sequence id");
  if (read_varint(&c, &v) != 0) FAIL("bad method name");
  const char *name = (const char *)c.p;
  if (skip_bytes(&c, v) != 0) FAIL("bad method name");
  size_t name_len = (size_t)v;
  char mname[48];
  printable(mname, sizeof mname, name, name_len);

  const mf_compact_method_t *method = NULL;
  mf_compact_type_t args = {.type = MF_CT_STRUCT};
  if (methods != NULL) {
    if (mtype != MF_COMPACT_CALL) FAIL("%s: not a call", mname);
    method = find_method(methods, name, name_len);
    if (method == NULL) FAIL("unknown method '%s'", mname);
    args.fields = method->args;
  }
  /* What the declared values cost decoded may not pass this. */
  size_t cost = MF_COMPACT_COST_STRUCT;
  const size_t cost_max = (size_t)MF_COMPACT_COST_RATIO * len + MF_COMPACT_COST_FLOOR;

  int depth = 0;
  stack[0] = (frame_t){.is_struct = 1, .spec = method != NULL ? &args : NULL};
  while (depth >= 0) {
    frame_t *f = &stack[depth];
    uint8_t type;
    const mf_compact_type_t *vspec = NULL; /* the declared type of the value read next */
    const char *arg = f->arg, *leaf = f->name;
    if (f->is_struct) {
      if (c.p >= c.end) FAIL("message ends inside a struct");
      uint8_t h = *c.p++;
      if (h == CT_STOP) {
        depth--;
        continue;
      }
      type = h & 0x0f;
      int id;
      if ((h >> 4) == 0) {
        if (read_varint(&c, &v) != 0) FAIL("bad field id");
        id = (int)(int16_t)(uint16_t)((v >> 1) ^ (~(v & 1) + 1));
      } else {
        id = f->last_id + (h >> 4);
      }
      f->last_id = id;
      const mf_compact_field_t *fd = find_field(f->spec, id);
      if (f->spec != NULL && fd == NULL) {
        frame_t at = {.arg = arg};
        if (depth == 0) FAIL("%s: argument %d is not declared", mname, id);
        FAIL("%s: %s%s%s: field %d is not declared", WHERE(&at, leaf), id);
      }
      if (fd != NULL) {
        if (depth == 0) arg = fd->name;
        leaf = fd->name;
        frame_t at = {.arg = arg};
        if (!type_matches(fd->type->type, type)) {
          FAIL("%s: %s%s%s: wire type %u, declared %u", WHERE(&at, leaf), type, fd->type->type);
        }
        if (id > 0 && id < 64) {
          if (f->seen & (UINT64_C(1) << id)) FAIL("%s: %s%s%s: sent twice", WHERE(&at, leaf));
          f->seen |= UINT64_C(1) << id;
        }
        vspec = fd->type;
      }
    } else {
      if (f->remaining == 0) {
        depth--;
        continue;
      }
      int is_key = f->is_map && (f->remaining & 1) == 0;
      type = is_key ? f->t1 : f->t2;
      if (f->spec != NULL) vspec = is_key ? f->spec->key : f->spec->elem;
      f->remaining--;
      /* A bool inside a container takes one byte, unlike a bool field. */
      if (type == CT_TRUE || type == CT_FALSE) {
        if (skip_bytes(&c, 1) != 0) FAIL("message ends inside a container");
        continue;
      }
    }
    frame_t where = {.arg = arg};
    switch (type) {
      case CT_TRUE:
      case CT_FALSE:
        break;
      case MF_CT_BYTE:
        if (skip_bytes(&c, 1) != 0) FAIL("truncated byte");
        break;
      case MF_CT_I16:
      case MF_CT_I32:
      case MF_CT_I64:
        if (read_varint(&c, &v) != 0) FAIL("truncated integer");
        break;
      case MF_CT_DOUBLE:
        if (skip_bytes(&c, 8) != 0) FAIL("truncated double");
        break;
      case MF_CT_STRING:
        if (read_varint(&c, &v) != 0 || skip_bytes(&c, v) != 0) {
          FAIL("string length exceeds the message");
        }
        if (vspec != NULL) {
          if (v > vspec->max) {
            FAIL("%s: %s%s%s: string of %llu bytes, at most %u", WHERE(&where, leaf),
                 (unsigned long long)v, vspec->max);
          }
          cost += MF_COMPACT_COST_STRING + (size_t)v;
        }
        break;
      case MF_CT_LIST:
      case MF_CT_SET:
      case MF_CT_MAP:
      case MF_CT_STRUCT: {
        if (depth + 1 > max_depth) FAIL("nesting deeper than %d", max_depth);
        frame_t nf = {.spec = vspec, .arg = arg, .name = leaf};
        if (type == MF_CT_STRUCT) {
          nf.is_struct = 1;
          if (vspec != NULL) cost += MF_COMPACT_COST_STRUCT;
        } else if (type == MF_CT_MAP) {
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
            ((nf.t2 == CT_STOP || nf.t2 > MF_CT_STRUCT) ||
             (nf.is_map && (nf.t1 == CT_STOP || nf.t1 > MF_CT_STRUCT)))) {
          FAIL("unknown element type");
        }
        if (vspec != NULL && !nf.is_struct) {
          uint64_t count = nf.is_map ? nf.remaining / 2 : nf.remaining;
          if (count > vspec->max) {
            FAIL("%s: %s%s%s: %llu elements, at most %u", WHERE(&where, leaf),
                 (unsigned long long)count, vspec->max);
          }
          if (count > 0 && ((vspec->elem != NULL && !type_matches(vspec->elem->type, nf.t2)) ||
                            (nf.is_map && vspec->key != NULL &&
                             !type_matches(vspec->key->type, nf.t1)))) {
            FAIL("%s: %s%s%s: elements of the wrong type", WHERE(&where, leaf));
          }
          cost += (size_t)nf.remaining * MF_COMPACT_COST_SLOT;
        }
        stack[++depth] = nf;
        break;
      }
      default:
        FAIL("unknown field type %u", type);
    }
    if (cost > cost_max) {
      FAIL("%s: decodes to more than %zu bytes, over %u times the %zu-byte message", mname,
           cost_max, MF_COMPACT_COST_RATIO, len);
    }
  }
  if (c.p != c.end) FAIL("%zu bytes after the end of the message", (size_t)(c.end - c.p));
  if (msg != NULL) *msg = (mf_compact_msg_t){mtype, name, name_len, method, cost};
  return 0;
}
