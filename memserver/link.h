/*
 * A memory server's link to another memory server (issue 12): one async
 * libuv TCP connection from this server's loop to a peer's data port, for
 * the server-to-server frames of replication (WIRE_OP_CHAIN_FWD to a
 * chain's successor, WIRE_OP_REPLICA_COPY to a joining copy).
 *
 * Frames are pipelined: ms_link_send queues a frame and returns at once;
 * the link gives each frame a request id of its own and calls the frame's
 * callback when the reply with that id arrives, in any order. Frames go out
 * in the order they were sent. When the cluster has a key, the link puts
 * the sender's frame MAC (mf_frame_mac with the key, no capability:
 * MF_MAC_SIZE bytes of metadata) on every frame and checks the MAC of every
 * reply; a reply with a bad MAC drops the connection.
 *
 * Failure. When the connection cannot be made (refused, or not within
 * connect_timeout_ms), drops, or a frame waits for its reply longer than
 * reply_timeout_ms, every frame not yet answered is failed: its callback
 * runs with MAYFLY_EIO (MAYFLY_ETIMEDOUT for a connection not made in
 * time) and the connection is closed. Nothing is resent by the link (the
 * caller knows what may be resent: chain.c resends its pending queue). The
 * next ms_link_send connects again.
 *
 * Memory. The bytes of frames queued and not yet written to the socket,
 * plus those written and not yet answered, are bounded by max_queued: a
 * send past it is refused with MAYFLY_EAGAIN (nothing queued, the callback
 * is not called); the caller tries again from its on_drain callback, called
 * once the bytes in the link fell to half the bound after a refusal.
 *
 * Everything runs on the loop thread the link was made on. Callbacks may
 * call ms_link_send and ms_link_close on the same link.
 */
#ifndef MAYFLY_MS_LINK_H
#define MAYFLY_MS_LINK_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/auth.h"
#include "common/wire.h"

typedef struct ms_link ms_link_t;

/* A frame's outcome. status 0: the peer replied, `reply` is its header
 * (reply->status is the peer's answer, 0 or a MAYFLY_E* code) and
 * payload[0..reply->payload_len) its payload (borrowed: valid during the
 * call only). status < 0: no reply will come (MAYFLY_EIO, MAYFLY_ETIMEDOUT,
 * or MAYFLY_ECONNREFUSED for a connection refused; MAYFLY_EIO too when the
 * link is closed by ms_link_close); reply and payload are NULL. Called
 * exactly once per frame ms_link_send accepted. */
typedef void (*ms_link_reply_cb)(void *ud, int status, const wire_hdr_t *reply,
                                 const uint8_t *payload);

typedef struct ms_link_config {
  /* The cluster key (MF_KEY_SIZE bytes, copied), or NULL: frames carry no
   * metadata and replies are not checked. */
  const uint8_t *key;
  int64_t connect_timeout_ms; /* 0: 2000 */
  int64_t reply_timeout_ms;   /* a frame unanswered this long drops the connection; 0: never */
  uint64_t max_queued;        /* bytes in the link (queued + unanswered); 0: 64 MiB */
  uint32_t max_payload;       /* largest reply payload accepted; 0: 16 MiB */
  /* Called (may be NULL) after a send was refused with MAYFLY_EAGAIN, once
   * the bytes in the link fell to max_queued / 2 or the connection failed. */
  void (*on_drain)(void *ud);
  void *ud;
} ms_link_config_t;

/* A link to the memory server at `address` ("host:port" or "[v6]:port").
 * Connects on the first send. Never fails (a bad address fails each send's
 * callback with MAYFLY_ECONNREFUSED). */
ms_link_t *ms_link_new(uv_loop_t *loop, const char *address, const ms_link_config_t *cfg);

/* The address the link was made for. */
const char *ms_link_address(const ms_link_t *l);

/*
 * Queues one frame: header h (opcode, flags, block_index, generation,
 * arg0, arg1, arg2 as given; request_id, cap_len, payload_len and status
 * are set by the link), then payload[0..plen) (copied). Returns 0 (cb will
 * be called exactly once, never from within this call), MAYFLY_EAGAIN (the
 * link holds max_queued bytes: nothing queued, cb not called; see
 * on_drain), MAYFLY_ETOOBIG (plen over UINT32_MAX) or MAYFLY_EIO (the link
 * is being closed: a callback run by ms_link_close sent on it).
 */
int ms_link_send(ms_link_t *l, const wire_hdr_t *h, const void *payload, size_t plen,
                 ms_link_reply_cb cb, void *ud);

/* Bytes in the link now (queued and unanswered frames). */
uint64_t ms_link_queued(const ms_link_t *l);
/* Frames sent and not yet answered or failed. */
unsigned ms_link_pending(const ms_link_t *l);
/* Whether the connection is up now (connected, not failed). */
int ms_link_connected(const ms_link_t *l);

/* Fails every frame not yet answered with MAYFLY_EIO (their callbacks run
 * now), closes the connection and frees the link once libuv has closed its
 * handles. l may be NULL. The link must not be used afterwards. */
void ms_link_close(ms_link_t *l);

/*
 * Server side of the same frames (used by chain.c and the copy receiver):
 * whether the metadata section of a server-to-server frame
 * frame[0..WIRE_HEADER_SIZE + h->cap_len + h->payload_len) is what the
 * sender must put there: the frame MAC with `key`, or nothing when key is
 * NULL. Returns 0 or MAYFLY_EPERM.
 */
int ms_link_check_mac(const uint8_t *key, const wire_hdr_t *h, const uint8_t *frame);

/* Builds the encoded header and metadata of a server-to-server frame h
 * (cap_len is set here: MF_MAC_SIZE with a key, else 0) whose payload is
 * payload[0..h->payload_len): writes WIRE_HEADER_SIZE + cap_len bytes to
 * out (room for WIRE_HEADER_SIZE + MF_MAC_SIZE) and returns that count.
 * The replies to such frames are built with it too. */
size_t ms_link_frame_head(const uint8_t *key, wire_hdr_t *h, const uint8_t *payload,
                          uint8_t out[WIRE_HEADER_SIZE + MF_MAC_SIZE]);

#endif /* MAYFLY_MS_LINK_H */
