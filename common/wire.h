/*
 * The data-plane wire format: Mayfly's own binary protocol between clients
 * and memory servers (documented in docs/data-protocol.md).
 *
 * A frame is a fixed 56-byte header, then `cap_len` bytes of capability
 * (the directory's signed capability for the block, common/auth.h, when the
 * cluster has a key; empty otherwise), then `payload_len` bytes of payload. All integers are little-endian. Requests carry a request id;
 * replies carry the same id, so many requests can be in flight on one
 * connection and replies may come back in any order.
 *
 * wire_parse() is the decoder: given the bytes received so far it says
 * "need more", "frame ready" (with its total length) or "error", checking
 * magic, version and every length against the limits before the caller
 * allocates anything. Pure functions, no allocation; fuzzed.
 */
#ifndef MAYFLY_WIRE_H
#define MAYFLY_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define WIRE_MAGIC 0x464d /* "MF" as little-endian bytes 'M','F' */
#define WIRE_VERSION 1
#define WIRE_HEADER_SIZE 56
#define WIRE_CAP_MAX 1024
/* The slots of a kv namespace: keys hash to one of them (wire_kv_slot). */
#define WIRE_KV_SLOTS 65536
/* The longest kv key. */
#define WIRE_KEY_MAX (64u << 10)

typedef enum {
  WIRE_OP_PING = 0x01,
  WIRE_OP_BLOCK_STAT = 0x02, /* reply: arg0 = bytes used, arg1 = items/keys, arg2 = kind */
  /* The memory server as a whole (block_index and generation ignored):
   * reply payload = WIRE_SERVER_STAT_SIZE bytes, see wire_server_stat_t. */
  WIRE_OP_SERVER_STAT = 0x03,

  WIRE_OP_FILE_WRITE = 0x10, /* arg0 = offset in block; payload = data; reply arg0 = size */
  WIRE_OP_FILE_READ = 0x11,  /* arg0 = offset, arg1 = length; reply payload = data */
  WIRE_OP_FILE_SIZE = 0x12,  /* reply arg0 = bytes written up to (segment size) */
  WIRE_OP_FILE_TRUNCATE = 0x13, /* arg0 = new segment size (only shrinks); reply arg0 = size */

  WIRE_OP_Q_PUSH = 0x20, /* payload = item; ENOSPC + WIRE_F_SEALED when full */
  WIRE_OP_Q_POP = 0x21,  /* arg0 = wait ms; reply payload = item; EAGAIN empty;
                            EMOVED + WIRE_F_SEALED when drained for good */
  WIRE_OP_Q_PEEK = 0x22,
  WIRE_OP_Q_LEN = 0x23, /* reply arg0 = items, flags WIRE_F_SEALED */

  WIRE_OP_KV_PUT = 0x30,    /* arg1 = slot, arg2 = key length; payload = key, value */
  WIRE_OP_KV_GET = 0x31,    /* arg1 = slot; payload = key; reply payload = value */
  WIRE_OP_KV_DEL = 0x32,    /* arg1 = slot; payload = key */
  WIRE_OP_KV_EXISTS = 0x33, /* arg1 = slot; payload = key; reply arg0 = 0 or 1 */
  /* Server to server, during a repartition: entries of the slots [arg0, arg1)
   * for the target block (payload: wire_kv_entry_* records; may be empty).
   * A target whose range is adjacent to [arg0, arg1) extends it (a merge).
   * Reply arg0 = entries stored. */
  WIRE_OP_KV_MIGRATE = 0x34,
  /* Rolls a merge back: the target drops the entries of [arg0, arg1) and
   * gives the slots up again. */
  WIRE_OP_KV_MIGRATE_ABORT = 0x35,
  /* Only inside WIRE_OP_CHAIN_FWD: a replicated kv partition's head gave the
   * slots [arg0, arg1) away (a committed split or merge); members drop them. */
  WIRE_OP_KV_DROP_RANGE = 0x36,

  /* Replication (issue 12), server to server only. The metadata section
   * (cap_len bytes) is the sender's frame MAC (MF_MAC_SIZE bytes, mf_frame_mac
   * with the cluster key and no capability) when the cluster has a key, else
   * empty.
   *
   * CHAIN_FWD: a member passes a write it applied to its successor.
   * block_index/generation name the successor's block; arg0 = the chain
   * sequence number (assigned by the head, one per applied write, the same
   * at every member); arg1 = the sender's chain_version; payload = the
   * client's request frame as the head received it (header, metadata with its
   * sequence record, payload) or an internal one (KV_DROP_RANGE). The reply
   * (status 0) is the acknowledgement: every member from the successor to the
   * tail holds the write. A member skips applying a cseq it already has, but
   * still forwards and acknowledges it. */
  WIRE_OP_CHAIN_FWD = 0x40,
  /* REPLICA_COPY: the tail fills a block joining the chain. arg0 = copy op
   * (BlockInfo.copy_op), arg1 = offset of this chunk in the snapshot stream,
   * arg2 = 1 on the last chunk; payload = a chunk of the stream (format:
   * docs/data-protocol.md). CHAIN_FWD frames with a higher cseq follow on
   * the same connection. */
  WIRE_OP_REPLICA_COPY = 0x41,
} wire_op_t;

/* Flags. */
#define WIRE_F_REPLY 0x0001u
#define WIRE_F_SEALED 0x0002u /* queue segment accepts no more pushes */
/* Requests to a replicated partition: the metadata section (cap_len bytes)
 * ends with a WIRE_SEQ_SIZE sequence record (wire_seq_t); the capability,
 * if any, is the bytes before it. */
#define WIRE_F_SEQ 0x0004u

/* The sequence record of a write to a replicated partition: the client's
 * random id (not 0), the write's sequence number (from 1, one per write of
 * that client, never reused, retries keep theirs) and `acked`: every seq of
 * this client below it has its reply, so servers may forget those replies.
 * Little-endian u64s in this order. */
#define WIRE_SEQ_SIZE 24
typedef struct wire_seq {
  uint64_t client_id;
  uint64_t seq;
  uint64_t acked;
} wire_seq_t;
void wire_seq_put(uint8_t out[WIRE_SEQ_SIZE], const wire_seq_t *s);
/* What a replicated partition's head serves (and carries a sequence
 * record): FILE_WRITE, FILE_TRUNCATE, Q_PUSH, Q_POP, KV_PUT, KV_DEL. */
int wire_op_is_write(uint8_t opcode);
/* What only its tail serves: FILE_READ, FILE_SIZE, Q_PEEK, Q_LEN, KV_GET,
 * KV_EXISTS. Every other opcode is neither. */
int wire_op_is_read(uint8_t opcode);
void wire_seq_get(const uint8_t in[WIRE_SEQ_SIZE], wire_seq_t *s);

/* A queue item on a memory server is one allocation of a 4-byte head and
 * the item's bytes, and one link of its segment's list (a GList node: three
 * pointers, allocated on its own). */
#define WIRE_QUEUE_ITEM_HEAD 4
#define WIRE_QUEUE_LINK_SIZE 24

/* A kv entry on a memory server is one allocation of a 16-byte head, the key
 * and the value, and one slot of its partition's hash table. */
#define WIRE_KV_ENTRY_HEAD 16
/* The table's cost per entry at its emptiest: a GHashTable keeps a 4-byte
 * hash and an 8-byte key per slot and shrinks once under a quarter full, so
 * up to 4 slots of 12 bytes per entry. */
#define WIRE_KV_SLOT_CHARGE 48

/*
 * The most memory malloc may take for one allocation of n bytes, for either
 * allocator a memory server runs on (x86_64, 4 KiB pages):
 * - jemalloc 5 rounds n up to its size class: 16-byte steps up to 128, then
 *   four classes per doubling (160, 192, 224, 256, 320, ...); classes from
 *   16 KiB up are page runs with one more page (cache-oblivious placement);
 * - glibc takes n + 8 rounded up to 16 (at least 32) from its heap, or one
 *   16 bytes larger (it never splits off a remainder under its 32-byte
 *   minimum chunk), or n + 16 rounded up to a page when it maps the chunk
 *   (128 KiB and more).
 * The result is the larger of the two, so it is never below what either
 * uses: up to 14 KiB, max(jemalloc class, round16(n + 24)); above, the
 * jemalloc class plus a page (which also covers glibc's mapped chunk).
 * Saturates at UINT64_MAX for n above 2^62. Deterministic arithmetic, so
 * clients and tests compute what a server charges.
 */
uint64_t wire_alloc_size(uint64_t n);

/* What a memory server charges its block for a kv entry of klen key and vlen
 * value bytes: wire_alloc_size(WIRE_KV_ENTRY_HEAD + klen + vlen) +
 * WIRE_KV_SLOT_CHARGE. Non-decreasing in each argument; UINT64_MAX when the
 * sum would pass 2^62. A client refuses a value whose charge exceeds the
 * block size (it can never fit); tests/unit/test_store.c checks the charge
 * against real allocations. */
uint64_t wire_kv_charge(uint64_t klen, uint64_t vlen);

/* What a memory server charges its block for a queue item of len bytes:
 * wire_alloc_size(WIRE_QUEUE_ITEM_HEAD + len) +
 * wire_alloc_size(WIRE_QUEUE_LINK_SIZE). Non-decreasing; UINT64_MAX when
 * len passes 2^61. Clients refuse an item whose charge exceeds the block
 * size; tests/unit/test_store.c checks it against real allocations. */
uint64_t wire_queue_charge(uint64_t len);

typedef struct wire_hdr {
  uint8_t opcode;
  uint16_t flags;
  uint16_t cap_len;
  uint32_t payload_len;
  uint64_t request_id;
  uint32_t block_index;
  uint64_t generation;
  uint64_t arg0;
  uint64_t arg1;
  int32_t status; /* replies: 0 or a negative MAYFLY_E* code */
  uint32_t arg2;
} wire_hdr_t;

/* Writes the 56-byte encoding of h into out (magic and version included). */
void wire_encode(const wire_hdr_t *h, uint8_t out[WIRE_HEADER_SIZE]);

/*
 * Decodes the frame at the start of buf[0..len).
 * Returns 0 when a whole frame is there (*h filled, *frame_len its size),
 * MAYFLY_EAGAIN when more bytes are needed (*h is filled once the header is
 * complete, so a server can see the opcode and the payload size early),
 * MAYFLY_EPROTO for a bad magic or version, MAYFLY_ETOOBIG when the
 * payload exceeds max_payload or the capability WIRE_CAP_MAX.
 */
int wire_parse(const uint8_t *buf, size_t len, uint32_t max_payload, wire_hdr_t *h,
               size_t *frame_len);

/* The kv hash: FNV-1a 64 of the key. A key's slot is the hash reduced to
 * one of WIRE_KV_SLOTS slots (wire_kv_slot_of); a server hashes each key
 * once and uses the hash for both the slot and its table. */
uint64_t wire_kv_hash(const void *key, size_t len);
static inline uint32_t wire_kv_slot_of(uint64_t hash) {
  return (uint32_t)(hash % WIRE_KV_SLOTS);
}
/* wire_kv_slot_of(wire_kv_hash(key, len)). */
uint32_t wire_kv_slot(const void *key, size_t len);

/* The reply payload of WIRE_OP_SERVER_STAT: little-endian u64 fields in this
 * order. `source` says where allocated/resident come from
 * (WIRE_ALLOC_STATS_*); with NONE both are 0 (not known, never made up). */
#define WIRE_ALLOC_STATS_NONE 0
#define WIRE_ALLOC_STATS_JEMALLOC 1 /* mallctl stats.allocated, stats.resident */
#define WIRE_ALLOC_STATS_GLIBC 2    /* mallinfo2: uordblks + hblkhd, arena + hblkhd */
#define WIRE_ALLOC_STATS_SANITIZER 3 /* sanitizer builds: the sanitizer's allocator */
typedef struct wire_server_stat {
  uint64_t source;
  uint64_t allocated;  /* bytes the application holds, as the allocator counts them */
  uint64_t resident;   /* bytes of the allocator's pages that are resident */
  uint64_t charged;    /* bytes charged to the store's blocks (their `used`) */
  uint64_t kv_entries; /* kv entries over every block */
  uint64_t blocks_in_use;
  uint64_t cap_refused; /* requests refused for their capability (MAYFLY_EPERM) */
} wire_server_stat_t;
#define WIRE_SERVER_STAT_SIZE 56
void wire_server_stat_put(uint8_t out[WIRE_SERVER_STAT_SIZE], const wire_server_stat_t *st);
/* Returns 0, or MAYFLY_EPROTO when len is short of WIRE_SERVER_STAT_SIZE
 * (longer payloads are fine: later versions may add fields). */
int wire_server_stat_get(const uint8_t *buf, size_t len, wire_server_stat_t *st);

/* Migration records: u32 key length, u32 value length (little-endian), key,
 * value. */
#define WIRE_KV_ENTRY_HEADER 8
void wire_kv_entry_put(uint8_t *out, const void *key, uint32_t klen, const void *val,
                       uint32_t vlen);
/* Reads the record at *pos of buf[0..len): returns 1 (and advances *pos), 0
 * at the end, MAYFLY_EPROTO when a length runs past the buffer. */
int wire_kv_entry_next(const uint8_t *buf, size_t len, size_t *pos, const uint8_t **key,
                       uint32_t *klen, const uint8_t **val, uint32_t *vlen);

#endif /* MAYFLY_WIRE_H */
