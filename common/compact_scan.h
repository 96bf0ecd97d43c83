/*
 * A bounded pre-check of one Thrift compact-protocol message.
 *
 * Thrift c_glib skips unknown fields recursively without a depth limit, so a
 * few megabytes of nested structs overflow the stack (THRIFT_C_GLIB.md,
 * defect 3). Before a frame reaches the generated processor, the directory
 * walks it here with an explicit, bounded stack: the message header, then the
 * argument struct, checking that every length and element count fits in the
 * bytes that remain and that nesting stays within max_depth. Linear time, no
 * allocation.
 */
#ifndef MAYFLY_COMPACT_SCAN_H
#define MAYFLY_COMPACT_SCAN_H

#include <stddef.h>
#include <stdint.h>

#define MF_COMPACT_MAX_DEPTH 32

/* Message types of the Thrift message header. */
#define MF_COMPACT_CALL 1
#define MF_COMPACT_ONEWAY 4

/* What the header of a scanned message says. */
typedef struct mf_compact_msg {
  int type;            /* MF_COMPACT_CALL, ... */
  const char *name;    /* method name, not NUL-terminated, points into buf */
  size_t name_len;
} mf_compact_msg_t;

/* Returns 0 if buf[0..len) is one well-formed compact message whose nesting
 * is at most max_depth, else MAYFLY_EPROTO; `why` (may be NULL) says what is
 * wrong. Trailing bytes after the message are an error. On success *msg (may
 * be NULL) describes the header. */
int mf_compact_scan(const uint8_t *buf, size_t len, int max_depth, mf_compact_msg_t *msg,
                    char *why, size_t whylen);

#endif /* MAYFLY_COMPACT_SCAN_H */
