/*
 * Notifications: the directory numbers the events of every watched node.
 *
 * The directory is the sequencer. Each node that has ever been watched has a
 * log keyed by its path: a counter (the seq of its newest event; the first
 * event is 1) and, while someone watches it, a bounded ring of its most
 * recent events (DIR_EVLOG_MAX). Namespace events come from the tree
 * (dir_events_before/after around every applied record); data events come
 * from the memory servers (the publish call), mapped from a block to its
 * namespace through the allocator's owner pointers, whatever the layout. So
 * order and gaps are real, and splits, merges, growth and shrink change
 * nothing for a listener.
 *
 * A watcher asks for the events after the last seq it saw (dir_events_collect);
 * when it fell behind the ring, or the counter moved while nobody watched
 * (events are counted but not kept then), it gets a GAP event that says
 * which seqs it missed. The log's numbers are valid within one `epoch` (the
 * directory's start time); a restarted directory starts new logs, and a
 * watcher of an earlier epoch starts afresh with a GAP of unknown count, or,
 * when its node does not exist any more, a GAP then REMOVED.
 *
 * Lifetime. A log is created by the first watch of its path and lives as long
 * as the node; when the node goes, its log becomes a tombstone (removed = 1)
 * while a watcher may still want the REMOVED event (watched within the last
 * DIR_WATCH_WINDOW_MS, or a watch waiting on it), and is dropped by the
 * sweep after that. A node created again at a tombstone's path takes the log
 * back, so numbers of a path never go backwards within an epoch.
 *
 * Memory bound: DIR_EVLOG_MAX events per watched node, each at most about
 * 1.5 KiB (a path of up to 4 KiB only in CHILD_* events of directories, a
 * key of at most DIR_EVENT_KEY_MAX base64 characters), so at most about
 * 6 MiB per watched namespace and usually a few hundred KiB; a node nobody
 * watches keeps only its counter (about 150 bytes).
 *
 * Owned by the directory's loop; nothing here locks. No GObject.
 */
#ifndef MAYFLY_DIR_EVENTS_H
#define MAYFLY_DIR_EVENTS_H

#include <glib.h>
#include <stdint.h>

#include "namespaces/tree.h"

/* Events a log keeps while watched. */
#define DIR_EVLOG_MAX 4096
/* A node counts as watched (and data-watched) this long after a watch call.
 * Listeners long-poll with timeouts well under it. */
#define DIR_WATCH_WINDOW_MS 30000
/* Longest key of an event, base64: the first 1024 bytes of the key. */
#define DIR_EVENT_KEY_RAW_MAX 1024
#define DIR_EVENT_KEY_MAX (4 * ((DIR_EVENT_KEY_RAW_MAX + 2) / 3))

/* The IDL's EventKind values (common/control.thrift). */
typedef enum {
  DIR_EV_PUT = 1,
  DIR_EV_DELETE = 2,
  DIR_EV_PUSH = 3,
  DIR_EV_POP = 4,
  DIR_EV_WRITE = 5,
  DIR_EV_CHILD_CREATED = 6,
  DIR_EV_CHILD_REMOVED = 7,
  DIR_EV_LEASE_EXPIRED = 8,
  DIR_EV_REMOVED = 9,
  DIR_EV_GAP = 10,
  DIR_EV_LOST = 11 /* length: partitions of the node lost now */
} dir_ev_kind_t;

#define DIR_EV_BIT(k) (1u << (k))
#define DIR_EV_DATA_MASK                                                             \
  (DIR_EV_BIT(DIR_EV_PUT) | DIR_EV_BIT(DIR_EV_DELETE) | DIR_EV_BIT(DIR_EV_PUSH) |   \
   DIR_EV_BIT(DIR_EV_POP) | DIR_EV_BIT(DIR_EV_WRITE))
#define DIR_EV_ALL_MASK (DIR_EV_DATA_MASK | 0xfc0u) /* bits 1..11 */

typedef struct dir_event {
  int64_t seq;
  dir_ev_kind_t kind;
  char *path;      /* the node concerned (a child's path for CHILD_*); NULL: the log's path */
  char *key;       /* PUT/DELETE: the key, base64; else NULL */
  int64_t offset;  /* WRITE: file offset; GAP: first missing seq (0: unknown) */
  int64_t length;  /* WRITE: bytes; PUSH/POP: item bytes; PUT/DELETE: key bytes;
                      GAP: events missed (-1: unknown) */
  int64_t time_ms; /* wall clock when sequenced */
} dir_event_t;

/* Called when an event is appended to a log a watch waits on. It runs inside
 * whatever appended the event (a request handler, the reaper), so it must
 * only schedule work (the server restarts a timer), never re-enter the
 * request path or change the log's waiters. */
typedef void (*dir_wake_cb)(void *waiter);

typedef struct dir_evlog {
  char *path;
  int64_t last_seq;      /* seq of the newest event, 0 before the first */
  dir_event_t *ring;     /* the last `len` events, oldest at `head` */
  guint cap, head, len;
  int64_t watched_until; /* monotonic ms: events are kept until then */
  int64_t data_until;    /* monotonic ms: data events are published until then */
  uint64_t data_version; /* when this data watch began (dir_events_t.data_version) */
  int armed;             /* every memory server holding the node knows of the data watch */
  int removed;           /* tombstone: the node is gone */
  GArray *waiters;       /* dir_waiter_t: watches deferred until an event comes */
  /* Replicated partitions (issue 12): the highest chain_seq sequenced per
   * partition, keyed by the partition's range lo (gint64 -> gint64, both
   * owned); NULL until a data event carries one. Soft state: forgotten when
   * a layout change makes a new partition start at that lo. */
  GHashTable *chain_seqs;
} dir_evlog_t;

typedef struct dir_events {
  int64_t epoch;         /* wall-clock ms at start: numbers are valid within it */
  GHashTable *retired;   /* "server:index:generation" -> dir_retired_t *: blocks a layout
                            change freed while their events may still be on their way */
  GHashTable *logs;      /* path -> dir_evlog_t * (owned) */
  GHashTable *hot;       /* logs the sweep looks at: a ring, a tombstone, a data watch */
  GHashTable *data;      /* logs whose data events are wanted now (a set) */
  uint64_t data_version; /* bumped each time a log starts being data-watched */
  uint64_t sequenced;    /* events numbered since start */
} dir_events_t;

/* What dir_events_before() saw of the tree, for dir_events_after(). */
typedef struct dir_events_pre {
  GPtrArray *missing; /* MKDIR/CREATE: paths on the way that did not exist, top down */
} dir_events_pre_t;

dir_events_t *dir_events_new(int64_t epoch);
void dir_events_free(dir_events_t *ev); /* accepts NULL; no waiter may remain */

/* The log of `path`, or NULL when it was never watched. */
dir_evlog_t *dir_events_find(dir_events_t *ev, const char *path);

/* The log of `path`, created (last_seq 0) when absent. */
dir_evlog_t *dir_events_open(dir_events_t *ev, const char *path);

/*
 * Numbers one event of `log` and keeps it if the log is watched (else the
 * ring is emptied: numbers stay, contents go, and a returning watcher sees a
 * GAP). Strings are copied. Wakes the log's waiters. Returns the seq.
 */
int64_t dir_events_append(dir_events_t *ev, dir_evlog_t *log, dir_ev_kind_t kind,
                          const char *path, const char *key, int64_t offset, int64_t length,
                          int64_t wall_ms);

/*
 * Records a watch of `log` at monotonic time now: keeps its events for the
 * next DIR_WATCH_WINDOW_MS, and with `data` set its data events too. A data
 * watch that had lapsed since the last one leaves a GAP (unknown count) in
 * the log, since the memory servers stopped publishing meanwhile. Returns 1
 * when a new data watch began (the memory servers must learn of it: the log
 * is not armed), else 0.
 */
int dir_events_touch(dir_events_t *ev, dir_evlog_t *log, int64_t now, int data);

/* Whether data events of `log` are wanted at monotonic time now. */
int dir_events_data_watched(const dir_evlog_t *log, int64_t now);

/*
 * Collects what a watcher that saw everything up to after_seq gets next: a
 * GAP first when seqs after after_seq are no longer kept, then the kept
 * events matching mask (bit 1 << kind; 0 = all; GAP always passes), at most
 * max of them and about `budget` bytes. Appends shallow copies (strings
 * borrowed from the log, valid until it changes) to out, a GArray of
 * dir_event_t, with `path` filled in. Returns the seq to continue after:
 * past the events skipped by the mask, not past those left out by max or
 * budget.
 */
int64_t dir_events_collect(const dir_evlog_t *log, int64_t after_seq, uint32_t mask, guint max,
                           size_t budget, GArray *out);

/* Adds a waiter to a log (woken through cb at the next append), and removes
 * it. A waiter is removed exactly once, before its memory goes. */
void dir_events_wake(dir_evlog_t *log); /* wakes the waiters without an event */
void dir_events_wait(dir_evlog_t *log, dir_wake_cb cb, void *waiter);
void dir_events_unwait(dir_evlog_t *log, void *waiter);

/*
 * Tree hooks, around ns_tree_apply(): before() notes what the record will
 * create; after() (only when the record applied) numbers the namespace
 * events it caused: CHILD_CREATED on the parent of each node created;
 * REMOVED on each removed node (effects' `removed` from removed_from on) and
 * CHILD_REMOVED on its parent, preceded by LEASE_EXPIRED on both when the
 * record is flagged NS_REC_EXPIRED; a rename as the removal of the old path
 * (and of everything under it) and the creation of the new one; LOST on each
 * namespace whose partitions a memory server's restart lost (effects'
 * `lost`, dir_events_lost). Nothing is done for paths whose logs do not
 * exist: nobody ever watched them. before() also forgets the chain_seq of
 * the partitions a record is about to create or move (CREATE, ADD_PART,
 * REPART_END), whose numbering starts afresh.
 */
void dir_events_before(dir_events_t *ev, const ns_tree_t *t, const ns_record_t *rec,
                       dir_events_pre_t *pre);
void dir_events_after(dir_events_t *ev, const ns_tree_t *t, const ns_record_t *rec,
                      const ns_effects_t *fx, guint removed_from, dir_events_pre_t *pre);
void dir_events_pre_clear(dir_events_pre_t *pre);

/* Appends a LOST event to the log of namespace `path` (if it has one): its
 * memory server restarted and `nlost` of its partitions are lost now. */
void dir_events_lost(dir_events_t *ev, const char *path, int32_t nlost, int64_t wall_ms);

/*
 * Blocks freed by a change of layout (a merge, a drained queue segment, a
 * truncate) while their namespace lives on: a memory server may still be
 * publishing events of writes made there just before (its publisher runs
 * apart from its repartitions), and those must not be lost because the
 * block changed hands. retire() remembers that (server, index, generation)
 * belonged to `path` for DIR_RETIRED_MS (longer than a publish call may
 * take); retired_path() answers for a block the allocator no longer maps,
 * or NULL. Only paths that have a log are remembered.
 */
#define DIR_RETIRED_MS 10000
void dir_events_retire(dir_events_t *ev, int32_t server, int32_t index, int64_t generation,
                       const char *path, int64_t now);
const char *dir_events_retired_path(dir_events_t *ev, int32_t server, int32_t index,
                                    int64_t generation);

/* Forgets what is no longer watched at monotonic time now: empties rings,
 * drops tombstones nobody waits on, ends lapsed data watches, forgets
 * retired blocks. */
void dir_events_sweep(dir_events_t *ev, int64_t now);

/* --- the watch and publish calls (the handlers convert, these decide) --- */

/* Most events in one watch reply, and about how many bytes: a reply stays
 * small (Thrift decodes large frames slowly) and the caller asks again. */
#define DIR_WATCH_MAX_EVENTS 1024
#define DIR_WATCH_REPLY_BUDGET (256u << 10)
/* Longest a watch waits for its first event. */
#define DIR_WATCH_MAX_WAIT_MS 30000
/* Most data events in one publish call (memory servers send at most
 * MS_PUB_BATCH_MAX, 1024). */
#define DIR_PUBLISH_MAX_EVENTS 4096

/* Whether every memory server that is up publishes the data events of `log`
 * (dir_data_armed, directory.h); a callback, since this module does not
 * know the servers. */
typedef int (*dir_armed_cb)(void *ud, dir_evlog_t *log);

/* A watch call as the handler received it. */
typedef struct dir_watch_req {
  const char *path;
  uint32_t mask;       /* 1 << kind per kind wanted; 0 = all */
  int64_t epoch;       /* 0 or another epoch: start from now */
  int64_t after_seq;
  int32_t max;         /* 0 = DIR_WATCH_MAX_EVENTS; more is capped */
  int32_t timeout_ms;  /* longest wait for a first event (capped at DIR_WATCH_MAX_WAIT_MS) */
  int can_defer;       /* the caller can hold the request and run it again later */
  dir_armed_cb armed;
  void *armed_ud;
} dir_watch_req_t;

/* Its answer: either defer_log is set (no answer now: run the request again
 * after an event comes to that log or defer_ms pass), or epoch, last_seq
 * and events are. `events` is a GArray of dir_event_t the caller created;
 * what is appended is a shallow copy, its strings borrowed from the log
 * (valid until the log changes). */
typedef struct dir_watch_res {
  int64_t epoch;
  int64_t last_seq;    /* the after_seq of the next watch */
  GArray *events;
  dir_evlog_t *defer_log;
  int64_t defer_ms;
} dir_watch_res_t;

/*
 * Serves a watch at monotonic time now: checks the request, opens the log
 * of an existing node (a removed node's watcher still gets what it has not
 * seen, REMOVED last), records the watch (dir_events_touch), and collects
 * the events after after_seq. Starting afresh (epoch 0 or stale, or a seq
 * from another life of the log) answers last_seq only, with a GAP unless
 * epoch was 0, and waits first, when it can, until the data watch is in
 * force on every memory server. A watch from another epoch (epoch neither
 * 0 nor ev->epoch: the directory restarted since) of a path that does not
 * exist answers a GAP (unknown count) then REMOVED (when the mask takes
 * it), with the new epoch and last_seq 0 (the path's tombstone's seq if it
 * has one), never MAYFLY_ENOENT: a listener whose node went with the
 * restart is told, not left to end silently. A watch with nothing to
 * report defers when it can. Returns 0, MAYFLY_EBADPATH or another
 * ns_path_check error,
 * MAYFLY_EINVAL (mask, epoch, after_seq, max or timeout_ms out of range:
 * `why` says which) or MAYFLY_ENOENT.
 */
int dir_events_watch(dir_events_t *ev, const ns_tree_t *t, const dir_watch_req_t *req,
                     int64_t now, dir_watch_res_t *res, char *why, size_t whylen);

/* A data event a memory server reports (the publish call). */
typedef struct dir_data_event {
  int32_t block_index;
  int64_t generation;
  int kind;         /* dir_ev_kind_t, data kinds only */
  const char *key;  /* PUT/DELETE: base64 (borrowed); may be NULL */
  int64_t offset;
  int64_t length;
  int64_t chain_seq; /* a replicated block's write: its chain sequence number; 0: none */
} dir_data_event_t;

/*
 * Numbers a batch of data events of server `server_id`: each goes to the
 * log of the namespace owning its block now (whatever the layout), or, for
 * a block a layout change freed a moment ago, of the namespace it belonged
 * to (dir_events_retire); events of blocks nobody owns, or of namespaces
 * never watched, are dropped. An event with a chain_seq of a block that is
 * a member of a replicated partition is dropped when its chain_seq is not
 * above the highest already sequenced for that partition: after a failover
 * the new tail publishes again what the old one may have published. The
 * whole batch is checked first, so a bad
 * one numbers nothing. Returns 0, MAYFLY_ESERVER (no such server),
 * MAYFLY_ETOOBIG (more than DIR_PUBLISH_MAX_EVENTS) or MAYFLY_EINVAL (a
 * kind, block, key, offset or length that cannot be: `why` names the
 * event).
 */
int dir_events_publish(dir_events_t *ev, ns_alloc_t *alloc, int32_t server_id,
                       const dir_data_event_t *events, size_t n, int64_t wall_ms, char *why,
                       size_t whylen);

/* Wakes the watches waiting for their data watch to be in force on every
 * memory server, once `armed` says it is (after a heartbeat). */
void dir_events_wake_armed(dir_events_t *ev, dir_armed_cb armed, void *ud);

/* Appends to out (a GArray of ns_block_t) every block of server
 * `server_id` owned by a namespace whose data events are wanted at
 * monotonic time now. Ownership, not the layout, decides: a block a split
 * is filling belongs to its namespace before it joins the layout. */
void dir_events_watched_blocks(dir_events_t *ev, const ns_tree_t *t, int32_t server_id,
                               int64_t now, GArray *out);

#endif /* MAYFLY_DIR_EVENTS_H */
