/*
 * Fixed-width little-endian loads and stores, shared by the codecs of the
 * data plane (wire.c) and of capabilities (auth.c). On a little-endian host
 * each is one memcpy of the whole field, which the compiler turns into a
 * single (unaligned) load or store; elsewhere the bytes are assembled one by
 * one.
 */
#ifndef MAYFLY_LE_H
#define MAYFLY_LE_H

#include <stdint.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define MF_HOST_LE 1
#else
#define MF_HOST_LE 0
#endif

static inline void mf_le_put16(uint8_t *p, uint16_t v) {
#if MF_HOST_LE
  memcpy(p, &v, sizeof v);
#else
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
#endif
}

static inline void mf_le_put32(uint8_t *p, uint32_t v) {
#if MF_HOST_LE
  memcpy(p, &v, sizeof v);
#else
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
#endif
}

static inline void mf_le_put64(uint8_t *p, uint64_t v) {
#if MF_HOST_LE
  memcpy(p, &v, sizeof v);
#else
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
#endif
}

static inline uint16_t mf_le_get16(const uint8_t *p) {
#if MF_HOST_LE
  uint16_t v;
  memcpy(&v, p, sizeof v);
  return v;
#else
  return (uint16_t)(p[0] | p[1] << 8);
#endif
}

static inline uint32_t mf_le_get32(const uint8_t *p) {
#if MF_HOST_LE
  uint32_t v;
  memcpy(&v, p, sizeof v);
  return v;
#else
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
#endif
}

static inline uint64_t mf_le_get64(const uint8_t *p) {
#if MF_HOST_LE
  uint64_t v;
  memcpy(&v, p, sizeof v);
  return v;
#else
  return (uint64_t)mf_le_get32(p) | (uint64_t)mf_le_get32(p + 4) << 32;
#endif
}

#endif /* MAYFLY_LE_H */
