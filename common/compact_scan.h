/*
 * A bounded pre-check of one Thrift compact-protocol message.
 *
 * Thrift c_glib skips unknown fields recursively without a depth limit, so a
 * few megabytes of nested structs overflow the stack (THRIFT_C_GLIB.md,
 * defect 3), and it decodes every element of a list before any handler can
 * look at the count: a 4 MiB frame of empty structs becomes four million
 * GObjects (about 136 bytes each, over 500 MB, seconds of CPU). Before a
 * frame reaches the generated processor, the directory walks it here with an
 * explicit, bounded stack: the message header, then the argument struct,
 * checking that every length and element count fits in the bytes that
 * remain and that nesting stays within max_depth. Linear time, no
 * allocation.
 *
 * Caps. Given a table of methods (mf_compact_method_t), the scan also
 * refuses a call of a method not in the table and holds each argument to
 * what the table declares: its wire type, the most elements of a list or
 * map, the longest string, and the same for the fields of structs inside
 * (list elements included). A field that comes twice in one struct is
 * refused too (the generated reader appends the second list to the first),
 * and so is a field the table does not declare: Thrift would skip it
 * without keeping anything, but skipping four million empty structs still
 * takes half a second of the loop.
 *
 * Cost. For the values Thrift will decode (the declared ones) the scan adds
 * up what they cost once decoded, with the per-object figures below
 * (measured on Thrift c_glib 0.17, GLib 2.74, glibc), and refuses a message
 * whose cost exceeds MF_COMPACT_COST_RATIO times its own size plus
 * MF_COMPACT_COST_FLOOR. So no frame costs more than a small multiple of
 * itself, whatever the table says: a thousand empty structs in a few
 * kilobytes are refused even under a list's cap.
 */
#ifndef MAYFLY_COMPACT_SCAN_H
#define MAYFLY_COMPACT_SCAN_H

#include <stddef.h>
#include <stdint.h>

#define MF_COMPACT_MAX_DEPTH 32

/* Message types of the Thrift message header. */
#define MF_COMPACT_CALL 1
#define MF_COMPACT_ONEWAY 4

/* Compact-protocol wire types, as the caps table names them. A bool field
 * is MF_CT_BOOL in the table and matches either wire type 1 or 2. */
enum {
  MF_CT_BOOL = 1,
  MF_CT_BYTE = 3,
  MF_CT_I16 = 4,
  MF_CT_I32 = 5,
  MF_CT_I64 = 6,
  MF_CT_DOUBLE = 7,
  MF_CT_STRING = 8,
  MF_CT_LIST = 9,
  MF_CT_SET = 10,
  MF_CT_MAP = 11,
  MF_CT_STRUCT = 12
};

/* What one decoded value costs (bytes), for the cost bound: a struct
 * (GObject instance and its slice, measured 136-157 bytes), a string
 * (malloc chunk; plus its length), an element slot of a list or map. */
#define MF_COMPACT_COST_STRUCT 160
#define MF_COMPACT_COST_STRING 48
#define MF_COMPACT_COST_SLOT 8
/* A message may cost this many times its size, plus the floor. */
#define MF_COMPACT_COST_RATIO 16
#define MF_COMPACT_COST_FLOOR (256u << 10)

typedef struct mf_compact_field mf_compact_field_t;

/* The declared type of a value and its caps. */
typedef struct mf_compact_type {
  uint8_t type;                        /* MF_CT_* */
  uint32_t max;                        /* string: most bytes; list, map: most elements */
  const struct mf_compact_type *elem;  /* list: its elements; map: its values */
  const struct mf_compact_type *key;   /* map: its keys */
  const mf_compact_field_t *fields;    /* struct: its fields, ended by id 0 */
} mf_compact_type_t;

struct mf_compact_field {
  int16_t id;
  const char *name;
  const mf_compact_type_t *type;
};

/* One method of a service and its argument struct. A table of methods ends
 * with name NULL. */
typedef struct mf_compact_method {
  const char *name;
  const mf_compact_field_t *args; /* ended by id 0 */
} mf_compact_method_t;

/* What the header of a scanned message says. */
typedef struct mf_compact_msg {
  int type;            /* MF_COMPACT_CALL, ... */
  const char *name;    /* method name, not NUL-terminated, points into buf */
  size_t name_len;
  const mf_compact_method_t *method; /* its entry in the table, or NULL without one */
  size_t cost;         /* estimated bytes the declared values cost decoded */
} mf_compact_msg_t;

/*
 * Returns 0 if buf[0..len) is one well-formed compact message whose nesting
 * is at most max_depth and, when methods is not NULL, a call of one of
 * those methods within the caps and the cost bound; else MAYFLY_EPROTO, and
 * `why` (may be NULL) says what is wrong, naming the method and the
 * argument ("publish: events: 4194304 elements, at most 4096"). Trailing
 * bytes after the message are an error. On success *msg (may be NULL)
 * describes the header. Time linear in len, whatever the input.
 */
int mf_compact_scan(const uint8_t *buf, size_t len, int max_depth,
                    const mf_compact_method_t *methods, mf_compact_msg_t *msg, char *why,
                    size_t whylen);

#endif /* MAYFLY_COMPACT_SCAN_H */
