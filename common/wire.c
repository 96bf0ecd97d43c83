/*
 * Data-plane wire format (see wire.h).
 */
#include "common/wire.h"

#include <string.h>

#include "common/error.h"
#include "common/le.h"

/* Layout: magic 0, version 2, opcode 3, payload_len 4, request_id 8,
 * block_index 16, flags 20, cap_len 22, generation 24, arg0 32, arg1 40,
 * status 48, arg2 52. */
void wire_encode(const wire_hdr_t *h, uint8_t out[WIRE_HEADER_SIZE]) {
  mf_le_put16(out, WIRE_MAGIC);
  out[2] = WIRE_VERSION;
  out[3] = h->opcode;
  mf_le_put32(out + 4, h->payload_len);
  mf_le_put64(out + 8, h->request_id);
  mf_le_put32(out + 16, h->block_index);
  mf_le_put16(out + 20, h->flags);
  mf_le_put16(out + 22, h->cap_len);
  mf_le_put64(out + 24, h->generation);
  mf_le_put64(out + 32, h->arg0);
  mf_le_put64(out + 40, h->arg1);
  mf_le_put32(out + 48, (uint32_t)h->status);
  mf_le_put32(out + 52, h->arg2);
}

int wire_parse(const uint8_t *buf, size_t len, uint32_t max_payload, wire_hdr_t *h,
               size_t *frame_len) {
  if (len < 4) {
    /* Reject a bad magic as soon as its bytes are in. */
    if ((len >= 1 && buf[0] != (WIRE_MAGIC & 0xff)) ||
        (len >= 2 && buf[1] != (WIRE_MAGIC >> 8)) || (len >= 3 && buf[2] != WIRE_VERSION)) {
      return MAYFLY_EPROTO;
    }
    return MAYFLY_EAGAIN;
  }
  if (mf_le_get16(buf) != WIRE_MAGIC || buf[2] != WIRE_VERSION) return MAYFLY_EPROTO;
  if (len < WIRE_HEADER_SIZE) return MAYFLY_EAGAIN;
  h->opcode = buf[3];
  h->payload_len = mf_le_get32(buf + 4);
  h->request_id = mf_le_get64(buf + 8);
  h->block_index = mf_le_get32(buf + 16);
  h->flags = mf_le_get16(buf + 20);
  h->cap_len = mf_le_get16(buf + 22);
  h->generation = mf_le_get64(buf + 24);
  h->arg0 = mf_le_get64(buf + 32);
  h->arg1 = mf_le_get64(buf + 40);
  h->status = (int32_t)mf_le_get32(buf + 48);
  h->arg2 = mf_le_get32(buf + 52);
  if (h->cap_len > WIRE_CAP_MAX || h->payload_len > max_payload) return MAYFLY_ETOOBIG;
  size_t total = WIRE_HEADER_SIZE + (size_t)h->cap_len + h->payload_len;
  *frame_len = total;
  return len >= total ? 0 : MAYFLY_EAGAIN;
}

uint64_t wire_kv_hash(const void *key, size_t len) {
  const uint8_t *p = key;
  uint64_t x = 0xcbf29ce484222325ULL;
  size_t i = 0;
  /* Four bytes per turn: the same FNV-1a, with a quarter of the loop's
   * compares and branches (it runs once per kv request). */
  for (; i + 4 <= len; i += 4) {
    x = (x ^ p[i]) * 0x100000001b3ULL;
    x = (x ^ p[i + 1]) * 0x100000001b3ULL;
    x = (x ^ p[i + 2]) * 0x100000001b3ULL;
    x = (x ^ p[i + 3]) * 0x100000001b3ULL;
  }
  for (; i < len; i++) x = (x ^ p[i]) * 0x100000001b3ULL;
  return x;
}

uint32_t wire_kv_slot(const void *key, size_t len) {
  return wire_kv_slot_of(wire_kv_hash(key, len));
}

void wire_server_stat_put(uint8_t out[WIRE_SERVER_STAT_SIZE], const wire_server_stat_t *st) {
  mf_le_put64(out, st->source);
  mf_le_put64(out + 8, st->allocated);
  mf_le_put64(out + 16, st->resident);
  mf_le_put64(out + 24, st->charged);
  mf_le_put64(out + 32, st->kv_entries);
  mf_le_put64(out + 40, st->blocks_in_use);
  mf_le_put64(out + 48, st->cap_refused);
}

int wire_server_stat_get(const uint8_t *buf, size_t len, wire_server_stat_t *st) {
  if (len < WIRE_SERVER_STAT_SIZE) return MAYFLY_EPROTO;
  st->source = mf_le_get64(buf);
  st->allocated = mf_le_get64(buf + 8);
  st->resident = mf_le_get64(buf + 16);
  st->charged = mf_le_get64(buf + 24);
  st->kv_entries = mf_le_get64(buf + 32);
  st->blocks_in_use = mf_le_get64(buf + 40);
  st->cap_refused = mf_le_get64(buf + 48);
  return 0;
}

void wire_kv_entry_put(uint8_t *out, const void *key, uint32_t klen, const void *val,
                       uint32_t vlen) {
  mf_le_put32(out, klen);
  mf_le_put32(out + 4, vlen);
  if (klen > 0) memcpy(out + WIRE_KV_ENTRY_HEADER, key, klen);
  if (vlen > 0) memcpy(out + WIRE_KV_ENTRY_HEADER + klen, val, vlen);
}

int wire_kv_entry_next(const uint8_t *buf, size_t len, size_t *pos, const uint8_t **key,
                       uint32_t *klen, const uint8_t **val, uint32_t *vlen) {
  if (*pos >= len) return 0;
  if (len - *pos < WIRE_KV_ENTRY_HEADER) return MAYFLY_EPROTO;
  const uint8_t *p = buf + *pos;
  uint32_t k = mf_le_get32(p), v = mf_le_get32(p + 4);
  size_t left = len - *pos - WIRE_KV_ENTRY_HEADER;
  if (k > left || v > left - k) return MAYFLY_EPROTO; /* no sum that could wrap */
  *key = p + WIRE_KV_ENTRY_HEADER;
  *klen = k;
  *val = *key + k;
  *vlen = v;
  *pos += WIRE_KV_ENTRY_HEADER + (size_t)k + v;
  return 1;
}

/* jemalloc's size class of n >= 1: 16-byte steps up to 128, then four
 * classes between each power of two and the next. */
static uint64_t jemalloc_class(uint64_t n) {
  if (n <= 128) return (n + 15) & ~(uint64_t)15;
  int lg = 63 - __builtin_clzll(n - 1); /* 2^lg < n <= 2^(lg + 1) */
  uint64_t step = (uint64_t)1 << (lg - 2);
  return (n + step - 1) & ~(step - 1);
}

#define ALLOC_SMALL_MAX 14336u /* jemalloc's largest small class (4 KiB pages) */
#define ALLOC_PAGE 4096u

uint64_t wire_alloc_size(uint64_t n) {
  if (n > ((uint64_t)1 << 62)) return UINT64_MAX;
  if (n == 0) n = 1; /* malloc(0) still takes the smallest chunk */
  uint64_t j = jemalloc_class(n);
  if (n > ALLOC_SMALL_MAX) return j + ALLOC_PAGE;
  /* glibc's chunk is n + 8 rounded up to 16, but it never splits off less
   * than its 32-byte minimum chunk, so a free chunk 16 bytes larger than
   * that may be handed out whole (measured: 8,169 bytes given 8,208). */
  uint64_t glibc = (n + 8 + 16 + 15) & ~(uint64_t)15;
  return j > glibc ? j : glibc;
}

uint64_t wire_queue_charge(uint64_t len) {
  if (len > (uint64_t)1 << 61) return UINT64_MAX;
  uint64_t a = wire_alloc_size(WIRE_QUEUE_ITEM_HEAD + len);
  return a == UINT64_MAX ? UINT64_MAX : a + wire_alloc_size(WIRE_QUEUE_LINK_SIZE);
}

uint64_t wire_kv_charge(uint64_t klen, uint64_t vlen) {
  const uint64_t limit = (uint64_t)1 << 61;
  if (klen > limit || vlen > limit) return UINT64_MAX;
  uint64_t a = wire_alloc_size(WIRE_KV_ENTRY_HEAD + klen + vlen);
  return a == UINT64_MAX ? UINT64_MAX : a + WIRE_KV_SLOT_CHARGE;
}

void wire_seq_put(uint8_t out[WIRE_SEQ_SIZE], const wire_seq_t *s) {
  mf_le_put64(out, s->client_id);
  mf_le_put64(out + 8, s->seq);
  mf_le_put64(out + 16, s->acked);
}

void wire_seq_get(const uint8_t in[WIRE_SEQ_SIZE], wire_seq_t *s) {
  s->client_id = mf_le_get64(in);
  s->seq = mf_le_get64(in + 8);
  s->acked = mf_le_get64(in + 16);
}

int wire_op_is_write(uint8_t opcode) {
  switch (opcode) {
    case WIRE_OP_FILE_WRITE:
    case WIRE_OP_FILE_TRUNCATE:
    case WIRE_OP_Q_PUSH:
    case WIRE_OP_Q_POP:
    case WIRE_OP_KV_PUT:
    case WIRE_OP_KV_DEL:
      return 1;
    default:
      return 0;
  }
}

int wire_op_is_read(uint8_t opcode) {
  switch (opcode) {
    case WIRE_OP_FILE_READ:
    case WIRE_OP_FILE_SIZE:
    case WIRE_OP_Q_PEEK:
    case WIRE_OP_Q_LEN:
    case WIRE_OP_KV_GET:
    case WIRE_OP_KV_EXISTS:
      return 1;
    default:
      return 0;
  }
}
