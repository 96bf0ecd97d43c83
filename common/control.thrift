/*
 * Mayfly control-plane API, served by mayfly-directory.
 *
 * Compact protocol, framed transport (4-byte big-endian length + message).
 * Every failure the caller can act on is a MayflyError carrying a negative
 * MAYFLY_E* code (common/error.h) and a human-readable message.
 * No `binary` fields: Thrift c_glib 0.17 mishandles them (THRIFT_C_GLIB.md).
 */
namespace c_glib Mayfly

enum NodeKind {
  DIRECTORY = 0,
  FILE = 1,
  QUEUE = 2,
  KV = 3
}

exception Error {
  1: i32 code,
  2: string message
}

/* One block-backed partition of a namespace. */
struct Partition {
  1: i32 server_id,
  2: string server_address,   /* data-plane host:port of the memory server */
  3: i32 block_index,
  4: i64 generation,
  5: i64 block_size,
  6: i64 range_lo,            /* kv: first slot; file: first byte; queue: sequence */
  7: i64 range_hi             /* exclusive */
}

struct Layout {
  1: i64 version,
  2: list<Partition> partitions
}

struct NodeInfo {
  1: string path,
  2: NodeKind kind,
  3: i64 created_ms,          /* wall clock, ms since the epoch */
  4: i64 lease_ms,
  5: i64 remaining_ms,        /* time left before expiry (lease + grace); -1 if pinned */
  6: bool pinned,
  7: map<string, string> tags,
  8: Layout layout,
  9: i32 children
}

struct CreateOptions {
  1: i32 blocks,              /* initial blocks; 0 = one for data kinds */
  2: i64 lease_ms,            /* 0 = the directory's default */
  3: bool pinned,
  4: map<string, string> tags
}

struct LeaseInfo {
  1: string path,
  2: NodeKind kind,
  3: i64 lease_ms,
  4: i64 remaining_ms,
  5: bool pinned
}

struct ServerInfo {
  1: i32 id,
  2: string address,
  3: bool up,
  4: i32 blocks_used,
  5: i32 blocks_total,
  6: i64 block_size,
  7: i64 heartbeat_age_ms
}

struct BlockRef {
  1: i32 block_index,
  2: i64 generation
}

struct RegisterReply {
  1: i32 server_id,
  2: i64 heartbeat_ms,        /* how often the server should heartbeat */
  3: list<BlockRef> allocated /* blocks the directory believes are in use there */
}

/* What the directory says of one block of a memory server. */
struct BlockInfo {
  1: bool allocated,
  2: i64 generation,          /* the current (or next) owner's generation */
  3: NodeKind kind,
  4: i64 range_lo,
  5: i64 range_hi,
  6: string path
}

struct HeartbeatReply {
  1: list<BlockRef> release   /* blocks freed since the last heartbeat */
}

struct RenewReply {
  1: i64 lease_ms,            /* the directory's default lease: renew well within it */
  2: list<string> missing     /* paths that do not exist */
}

struct Stats {
  1: i64 nodes,
  2: i64 directories,
  3: i64 namespaces,
  4: i32 servers,
  5: i32 servers_up,
  6: i64 blocks_total,
  7: i64 blocks_used,
  8: i64 expired_total,
  9: i64 uptime_ms,
  10: i64 connections,
  11: i64 requests,
  12: i64 lease_ms,
  13: i64 grace_ms
}

service Directory {
  void mkdir(1: string path, 2: bool parents) throws (1: Error err),
  NodeInfo create_ns(1: string path, 2: NodeKind kind, 3: CreateOptions opts)
      throws (1: Error err),
  NodeInfo open_ns(1: string path) throws (1: Error err),
  NodeInfo open_or_create(1: string path, 2: NodeKind kind, 3: CreateOptions opts)
      throws (1: Error err),
  void remove(1: string path, 2: bool recursive) throws (1: Error err),
  void rename(1: string old_path, 2: string new_path) throws (1: Error err),
  bool exists(1: string path) throws (1: Error err),
  NodeInfo stat(1: string path) throws (1: Error err),
  list<NodeInfo> list_children(1: string path) throws (1: Error err),
  /* Renews every path, its ancestors and its subtree. Paths that do not
     exist are listed in the reply; the others are renewed regardless. */
  RenewReply renew(1: list<string> paths) throws (1: Error err),
  Layout get_layout(1: string path) throws (1: Error err),
  Layout add_block(1: string path, 2: i64 range_lo, 3: i64 range_hi)
      throws (1: Error err),
  Layout remove_block(1: string path, 2: i32 partition) throws (1: Error err),
  /* Removes the partition whose range starts at range_lo, if it is still
     there (idempotent: racing clients release it once), e.g. a drained queue
     segment; its block returns to the pool. */
  Layout release_range(1: string path, 2: i64 range_lo) throws (1: Error err),
  /* gen_floor: the highest block generation the server has seen, so a
     restarted directory never reuses a generation a stale client may hold. */
  RegisterReply register_server(1: string address, 2: i32 blocks, 3: i64 block_size,
                                4: i64 gen_floor) throws (1: Error err),
  /* Lets a memory server check a block reference it has not seen yet. */
  BlockInfo check_block(1: i32 server_id, 2: i32 block_index) throws (1: Error err),
  HeartbeatReply heartbeat(1: i32 server_id, 2: i32 blocks_used)
      throws (1: Error err),
  list<ServerInfo> servers() throws (1: Error err),
  list<LeaseInfo> leases(1: string path) throws (1: Error err),
  Stats stats() throws (1: Error err)
}
