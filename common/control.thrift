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
  2: string message,
  /* MAYFLY_ENOTLEADER (a standby of an --etcd cluster): the leader's address
     as clients reach it ("host:port"), absent or "" when none is known. */
  3: optional string leader
}

/* One member of a replicated partition's chain (issue 12). */
struct Replica {
  1: i32 server_id,
  2: string server_address,   /* data-plane host:port */
  3: i32 block_index,
  4: i64 generation,
  5: optional string capability, /* as Partition.capability, for this member's block */
  6: optional string zone        /* the member's server's --zone ("" when none) */
}

/* One block-backed partition of a namespace. */
struct Partition {
  1: i32 server_id,
  2: string server_address,   /* data-plane host:port of the memory server */
  3: i32 block_index,
  4: i64 generation,
  5: i64 block_size,
  6: i64 range_lo,            /* kv: first slot; file: first byte; queue: sequence */
  7: i64 range_hi,            /* exclusive */
  8: optional bool lost,      /* its memory server restarted: the data is gone (MAYFLY_ELOST) */
  /* The directory's signed capability for this block (common/auth.h), in
     hexadecimal: set when the directory has a cluster key. The client sends
     its bytes in the data-plane header of every request for the block. */
  9: optional string capability,
  /* Replication (issue 12). A partition of a namespace created with R > 1
     replicas is a chain of blocks on distinct hosts: `chain` lists every
     member, head first; fields 1-4 and 9 repeat the head. Writes go to the
     head, reads to the tail (the chain's last member). Absent when R = 1. */
  10: optional list<Replica> chain,
  11: optional i32 replicas,     /* R wanted */
  12: optional string state,     /* "ok", "degraded" (fewer than R members), "copying"
                                    (a new member is being filled), "lost" */
  13: optional i64 chain_version /* bumped at every change of the chain */
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
  9: i32 children,
  10: i32 max_blocks,
  11: i32 high_watermark,
  12: i32 low_watermark
}

struct CreateOptions {
  1: i32 blocks,              /* initial blocks; 0 = one for data kinds */
  2: i64 lease_ms,            /* 0 = the directory's default */
  3: bool pinned,
  4: map<string, string> tags,
  5: i32 max_blocks,          /* most blocks the namespace may hold; 0 = no limit */
  6: i32 high_watermark,      /* kv: split a partition above this % of its block; 0 = 90 */
  7: i32 low_watermark,       /* kv: merge neighbours whose joint use is under this %; 0 = 25 */
  8: optional i32 replicas    /* blocks per partition, on distinct hosts; 0 = the directory's
                                 --replicas */
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
  7: i64 heartbeat_age_ms,
  8: optional i32 blocks_lost, /* in use by partitions lost when the server restarted */
  9: optional string stat_capability, /* admins, with a cluster key: a capability for
                                          the server's SERVER_STAT (hexadecimal) */
  10: optional string zone,     /* --zone of the server ("" when none) */
  11: optional string host,     /* host part of the address: replicas go on distinct hosts */
  12: optional i32 chains       /* replicated partitions with a member (or a copy) here */
}

struct BlockRef {
  1: i32 block_index,
  2: i64 generation
}

struct RegisterReply {
  1: i32 server_id,
  2: i64 heartbeat_ms,        /* how often the server should heartbeat */
  3: list<BlockRef> allocated, /* blocks the directory believes are in use there */
  /* A server that has not heard from the directory for this long may have
     been dropped from its chains: it stops serving replicated blocks until
     a heartbeat succeeds again. */
  4: optional i64 heartbeat_timeout_ms
}

/* What the directory says of one block of a memory server. */
struct BlockInfo {
  1: bool allocated,
  2: i64 generation,          /* the current (or next) owner's generation */
  3: NodeKind kind,
  4: i64 range_lo,
  5: i64 range_hi,
  6: string path,
  7: i32 high_watermark,      /* kv: % of the block; see CreateOptions */
  8: i32 low_watermark,
  9: bool watched,            /* data events of this block are wanted (publish them) */
  10: optional bool lost,     /* its data died with a previous incarnation of the server:
                                 do not adopt it, answer MAYFLY_ELOST */
  /* Replicated blocks (issue 12): the chain, head first, as of
     chain_version; chain_pos is this block's place in it, or -1 when the
     block is a new member being filled (copy_op) and not yet in the chain. */
  11: optional list<Replica> chain,
  12: optional i32 chain_pos,
  13: optional i64 chain_version,
  /* The tail only: a block joining the chain, to be filled from this one
     (WIRE_OP_REPLICA_COPY) under copy_op, then reported with replica_end. */
  14: optional Replica copy_to,
  15: optional i64 copy_op
}

struct HeartbeatReply {
  1: list<BlockRef> release,  /* blocks freed since the last heartbeat */
  2: list<BlockRef> watched,  /* every block of this server whose data events are wanted */
  /* Blocks of this server whose chain changed since the last heartbeat:
     ask check_block again for their chain. */
  3: optional list<BlockRef> rechain
}

/* A repartition the directory agreed to: move the slots [lo, hi) of the
   asking block to `target`. Split: target is a new block. Merge: target is
   the neighbour that takes over the whole range of the asking block. */
struct RepartPlan {
  1: i64 op_id,
  2: Partition target,
  3: i64 lo,
  4: i64 hi,
  /* With a cluster key: the directory's capability for the target block with
     the migrate right over [lo, hi) of op_id (hexadecimal), which the asking
     server sends with its KV_MIGRATE and KV_MIGRATE_ABORT frames. */
  5: optional string migrate_capability
}

enum EventKind {
  PUT = 1,
  DELETE = 2,
  PUSH = 3,
  POP = 4,
  WRITE = 5,
  CHILD_CREATED = 6,
  CHILD_REMOVED = 7,
  LEASE_EXPIRED = 8,
  REMOVED = 9,
  GAP = 10,
  LOST = 11                   /* partitions of the namespace lost (memory server restarted);
                                 length: how many of its partitions are lost now */
}

/* One event of a namespace, numbered by the directory per namespace. */
struct Event {
  1: i64 seq,
  2: string path,             /* the namespace the event is about */
  3: EventKind kind,
  4: string key,              /* PUT/DELETE: the key, base64 */
  5: i64 offset,              /* WRITE: offset; GAP: first missing seq */
  6: i64 length,              /* WRITE: bytes; PUSH/POP: item bytes; GAP: events missed */
  7: i64 time_ms              /* wall clock when the directory sequenced it */
}

struct WatchReply {
  1: i64 epoch,               /* changes when the directory restarts: sequences restart */
  2: i64 last_seq,            /* pass as after_seq to the next watch() */
  3: list<Event> events
}

/* A data event a memory server reports for one of its blocks. */
struct DataEvent {
  1: i32 block_index,
  2: i64 generation,
  3: EventKind kind,
  4: string key,
  5: i64 offset,
  6: i64 length,
  /* Replicated blocks: the chain sequence number of the write (assigned by
     the head, the same at every member). The directory drops an event whose
     chain_seq is not above the last it sequenced for the partition, so a
     failover never delivers one twice. */
  7: optional i64 chain_seq
}

struct RenewReply {
  1: i64 lease_ms,            /* the directory's default lease: renew well within it */
  2: list<string> missing     /* paths that do not exist */
}

/* A tenant of the directory (--tenants) and its use of the pool. */
struct TenantInfo {
  1: string name,
  2: list<string> prefixes,      /* subtrees it owns */
  3: list<string> read_prefixes, /* subtrees it may read but not change */
  4: i32 max_blocks,             /* quota over all its namespaces; 0 = no limit */
  5: i64 blocks_used,
  6: i64 namespaces,
  7: bool admin
}

/* Who a connection is, after login. */
struct Session {
  1: bool open,                  /* the directory runs without --tenants: all may do all */
  2: string tenant,              /* "" when open */
  3: bool admin,
  4: list<string> prefixes,
  5: list<string> read_prefixes
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
  13: i64 grace_ms,
  14: i64 splits,             /* kv repartitions committed since start */
  15: i64 merges,
  16: i64 rollbacks,
  17: i64 bytes_moved,        /* by committed repartitions */
  18: i64 move_ms,            /* their total duration, begin to commit */
  19: i64 move_ms_max,
  /* The durable directory (--data-dir); absent or false: state in memory only. */
  20: optional bool durable,
  21: optional i64 log_records,       /* records appended to the log since start */
  22: optional i64 log_bytes,         /* framed bytes appended since start */
  23: optional i64 log_fsyncs,        /* fdatasync calls, one per group commit */
  24: optional i64 snapshots,         /* snapshots written since start */
  25: optional i64 last_snapshot_ms,  /* wall-clock ms of the newest snapshot; 0: none */
  26: optional i64 recovery_ms,       /* time the start spent loading snapshot and log */
  27: optional i64 recovered_records, /* log records replayed at start, after the snapshot */
  28: optional i64 log_seq,           /* sequence number of the newest record applied */
  /* With --tenants: every tenant and what it uses. */
  29: optional list<TenantInfo> tenants,
  /* Replication (issue 12). */
  30: optional i64 chain_failovers,      /* members dropped from chains since start */
  31: optional i64 rereplications,       /* new members that joined a chain */
  32: optional i64 rereplicated_bytes,
  33: optional i64 partitions_degraded   /* now: chains shorter than their R */
}

/* One directory of an --etcd cluster (issue 14), as it last reported
   itself in etcd. */
struct DirectoryMember {
  1: string address,          /* its --advertise address, where clients reach it */
  2: string role,             /* "leader", "standby", "loading" (reading the log from etcd,
                                 not a hot standby yet), or "single" without --etcd */
  3: i64 applied_seq,         /* newest log record applied to its tree */
  4: i64 updated_ms           /* wall clock of that report */
}

/* The directory service's replicas (cluster()). */
struct ClusterInfo {
  1: string name,             /* --cluster; "" without --etcd */
  2: string leader,           /* the leader's address; "" none known */
  3: list<DirectoryMember> members,
  4: i64 committed_seq,       /* newest record committed to the log (as this directory knows) */
  5: i64 snapshot_seq,        /* the newest snapshot covers records up to this; 0 none */
  6: string etcd,             /* the etcd endpoints; "" without --etcd */
  7: i64 term,                /* the leader key's creation revision: changes at every election */
  8: i64 txns,                /* log transactions this directory committed as leader */
  9: i64 txn_records,         /* records they carried (records per transaction = 9 / 8) */
  10: string answered_by      /* the address of the directory that answered */
}

service Directory {
  /* Authenticates the connection as a tenant (the token of a section of
     --tenants). With tenants configured, every other client call of a
     connection that has not logged in fails with MAYFLY_EPERM. An open
     directory accepts any token (and none) and answers open = true. */
  Session login(1: string token) throws (1: Error err),
  /* The cluster handshake (common/auth.h): the directory's nonce, in
     hexadecimal. */
  string cluster_challenge() throws (1: Error err),
  /* The memory server's nonce and its proof of the cluster key over both
     nonces (hexadecimal); answers the directory's proof. Afterwards the
     connection may call the server-only methods (register_server,
     check_block, heartbeat, publish, repartition_begin, repartition_end).
     MAYFLY_EPERM for a wrong proof, or without a challenge first;
     MAYFLY_EINVAL when the directory has no cluster key. */
  string cluster_auth(1: string client_nonce, 2: string proof) throws (1: Error err),
  /* With --tenants: admins see every tenant, others their own. */
  list<TenantInfo> tenants() throws (1: Error err),
  /* Request ids. The mutating calls below carry the caller's client_id (a
     random nonzero id per control connection object) and request_seq (rising
     by one per call of that id); 0, 0 for none. A call retried after a
     failover with the same pair is applied once: the directory logs the pair
     with the call's records, and a repeat answers from the state the first
     one left (mkdir, remove, rename: success; create_ns: the node;
     add_block, remove_block: the layout). */
  void mkdir(1: string path, 2: bool parents, 3: i64 client_id, 4: i64 request_seq) throws (1: Error err),
  NodeInfo create_ns(1: string path, 2: NodeKind kind, 3: CreateOptions opts, 4: i64 client_id,
                     5: i64 request_seq)
      throws (1: Error err),
  NodeInfo open_ns(1: string path) throws (1: Error err),
  NodeInfo open_or_create(1: string path, 2: NodeKind kind, 3: CreateOptions opts)
      throws (1: Error err),
  void remove(1: string path, 2: bool recursive, 3: i64 client_id, 4: i64 request_seq) throws (1: Error err),
  void rename(1: string old_path, 2: string new_path, 3: i64 client_id, 4: i64 request_seq)
      throws (1: Error err),
  bool exists(1: string path) throws (1: Error err),
  NodeInfo stat(1: string path) throws (1: Error err),
  list<NodeInfo> list_children(1: string path) throws (1: Error err),
  /* Renews every path, its ancestors and its subtree. Paths that do not
     exist are listed in the reply; the others are renewed regardless. */
  RenewReply renew(1: list<string> paths) throws (1: Error err),
  Layout get_layout(1: string path) throws (1: Error err),
  Layout add_block(1: string path, 2: i64 range_lo, 3: i64 range_hi, 4: i64 client_id,
                   5: i64 request_seq)
      throws (1: Error err),
  Layout remove_block(1: string path, 2: i32 partition, 3: i64 client_id, 4: i64 request_seq)
      throws (1: Error err),
  /* Removes the partition whose range starts at range_lo, if it is still
     there (idempotent: racing clients release it once), e.g. a drained queue
     segment; its block returns to the pool. */
  Layout release_range(1: string path, 2: i64 range_lo) throws (1: Error err),
  /* gen_floor: the highest block generation the server has seen, so a
     restarted directory never reuses a generation a stale client may hold.
     incarnation: a random id the server draws at every start (0 = none).
     A known address that registers with another incarnation lost its blocks:
     the directory marks their partitions lost and leaves them out of
     `allocated`. */
  RegisterReply register_server(1: string address, 2: i32 blocks, 3: i64 block_size,
                                4: i64 gen_floor, 5: i64 incarnation, 6: string zone)
      throws (1: Error err),
  /* Lets a memory server check a block reference it has not seen yet. */
  BlockInfo check_block(1: i32 server_id, 2: i32 block_index) throws (1: Error err),
  HeartbeatReply heartbeat(1: i32 server_id, 2: i32 blocks_used, 3: i64 incarnation)
      throws (1: Error err),
  list<ServerInfo> servers() throws (1: Error err),
  list<LeaseInfo> leases(1: string path) throws (1: Error err),
  Stats stats() throws (1: Error err),
  /* Elasticity (memory servers): a kv block asks to split at slot split_at
     (merge = false) or to merge into a neighbour (merge = true). EAGAIN while
     another repartition holds the partitions, EQUOTA past max_blocks. */
  RepartPlan repartition_begin(1: i32 server_id, 2: i32 block_index, 3: i64 generation,
                               4: bool merge, 5: i64 split_at) throws (1: Error err),
  /* Commits (the data is at the target) or rolls back a begun repartition. */
  Layout repartition_end(1: i32 server_id, 2: i64 op_id, 3: bool commit, 4: i64 bytes_moved)
      throws (1: Error err),
  /* Replication: the tail reports that the block it was told to fill
     (BlockInfo.copy_to, copy_op) holds the partition (commit: it joins the
     chain at the tail) or that the copy failed (its block is released). */
  Layout replica_end(1: i32 server_id, 2: i64 op_id, 3: bool commit, 4: i64 bytes)
      throws (1: Error err),
  /* Files: drops the blocks wholly past `size`. */
  Layout truncate(1: string path, 2: i64 size) throws (1: Error err),
  /* Notifications: events of `path` (and of its children for a directory)
     with seq > after_seq, waiting up to timeout_ms for the first one. mask:
     bit (1 << EventKind) per kind wanted; 0 = all. epoch 0 or a stale epoch
     starts from now (after_seq ignored). */
  WatchReply watch(1: string path, 2: i32 mask, 3: i64 epoch, 4: i64 after_seq, 5: i32 max,
                   6: i32 timeout_ms) throws (1: Error err),
  /* Memory servers report data events of watched blocks. */
  void publish(1: i32 server_id, 2: list<DataEvent> events, 3: i64 incarnation) throws (1: Error err),
  /* The directory service's replicas and log positions (every directory
     answers, standbys too; without --etcd one member, "single"). */
  ClusterInfo cluster() throws (1: Error err)
}
