/*
 * The check of a request's capability against its header (see capcheck.h).
 */
#include "memserver/capcheck.h"

#include <string.h>

#include "common/error.h"

int ms_capcheck_right(uint8_t op) {
  switch (op) {
    case WIRE_OP_PING:
      return 0;
    case WIRE_OP_BLOCK_STAT:
    case WIRE_OP_FILE_READ:
    case WIRE_OP_FILE_SIZE:
    case WIRE_OP_Q_PEEK:
    case WIRE_OP_Q_LEN:
    case WIRE_OP_KV_GET:
    case WIRE_OP_KV_EXISTS:
      return MF_RIGHT_READ;
    case WIRE_OP_FILE_WRITE:
    case WIRE_OP_FILE_TRUNCATE:
    case WIRE_OP_Q_PUSH:
    case WIRE_OP_Q_POP:
    case WIRE_OP_KV_PUT:
    case WIRE_OP_KV_DEL:
      return MF_RIGHT_WRITE;
    case WIRE_OP_KV_MIGRATE:
    case WIRE_OP_KV_MIGRATE_ABORT:
      return MF_RIGHT_MIGRATE;
    case WIRE_OP_SERVER_STAT:
      return MF_RIGHT_STAT;
    default:
      return -1;
  }
}

static int refuse(ms_capcheck_stats_t *stats) {
  if (stats != NULL) stats->refused++;
  return MAYFLY_EPERM;
}

/* The capability's fields against the request: server, block, generation,
 * the right, the expiry and, for a migration, the slots. */
static int grants(const mf_cap_t *cap, uint32_t server_id, int64_t now_ms, unsigned need,
                  const wire_hdr_t *h) {
  if (cap->server_id != server_id || (cap->rights & need) != need || now_ms >= cap->expiry_ms) {
    return 0;
  }
  if (need == MF_RIGHT_STAT) return cap->block_index == MF_CAP_ANY_BLOCK;
  if (cap->block_index != h->block_index || cap->generation != h->generation) return 0;
  if (need == MF_RIGHT_MIGRATE) {
    return h->arg0 <= h->arg1 && h->arg0 >= cap->lo && h->arg1 <= cap->hi;
  }
  return 1;
}

int ms_capcheck(const uint8_t key[MF_KEY_SIZE], uint32_t server_id, int64_t now_ms,
                ms_capcache_t *cache, ms_capcheck_stats_t *stats, const wire_hdr_t *h,
                const uint8_t *frame, size_t flen) {
  int right = ms_capcheck_right(h->opcode);
  if (right <= 0) return 0;
  unsigned need = (unsigned)right;
  int migrate = need == MF_RIGHT_MIGRATE;
  size_t area = migrate ? MF_FRAME_AUTH_SIZE : MF_CAP_SIZE;
  if (h->cap_len != area ||
      flen < (size_t)WIRE_HEADER_SIZE + h->cap_len + (size_t)h->payload_len) {
    return refuse(stats);
  }
  const uint8_t *bytes = frame + WIRE_HEADER_SIZE;
  mf_cap_t cap;
  ms_capcache_slot_t *slot =
      cache != NULL && !migrate ? &cache->slot[h->block_index % MS_CAPCACHE_SLOTS] : NULL;
  /* A hit is the very capability verified before. Its body says nothing
   * secret (a block, rights, an expiry: all in the request or the layout),
   * so a plain compare will do; the MAC, the part that cannot be guessed,
   * is compared in constant time (mf_mac_equal), so timing never tells an
   * attacker how much of a forged MAC was right. */
  if (slot != NULL && slot->valid && memcmp(slot->bytes, bytes, MF_CAP_BODY) == 0 &&
      mf_mac_equal(slot->bytes + MF_CAP_BODY, bytes + MF_CAP_BODY)) {
    cap = slot->cap;
    if (stats != NULL) stats->hits++;
  } else {
    if (stats != NULL) stats->verified++;
    if (mf_cap_verify(key, bytes, MF_CAP_SIZE, &cap) != 0) return refuse(stats);
    if (slot != NULL) {
      /* A verified capability replaces whatever the slot held. */
      memcpy(slot->bytes, bytes, MF_CAP_SIZE);
      slot->cap = cap;
      slot->valid = 1;
    }
  }
  if (!grants(&cap, server_id, now_ms, need, h)) return refuse(stats);
  if (migrate) {
    /* The sender's MAC over this very frame: a captured capability cannot
     * carry another payload or other slots. */
    uint8_t mac[MF_MAC_SIZE];
    mf_frame_mac(key, frame, bytes, MF_CAP_SIZE, bytes + MF_FRAME_AUTH_SIZE, h->payload_len,
                 mac);
    if (!mf_mac_equal(mac, bytes + MF_CAP_SIZE)) return refuse(stats);
  }
  return 0;
}
