/*
 * The memory server's link to the directory: a thread of its own that owns a
 * blocking control connection, registers the server (again after a directory
 * restart), heartbeats (passing on which blocks are watched: MS_EV_WATCHED),
 * and checks block references on request. It registers with an incarnation
 * id drawn at start, the same for every registration of this process, so the
 * directory can tell a restart of the server (its old blocks are lost) from
 * a restart of the directory (they are kept). A heartbeat that fails (the
 * directory is unreachable, or it restarted and answers MAYFLY_ESERVER)
 * makes the thread register again at once, and again every 500 ms until it
 * can; each registration's reply lists the blocks the directory holds here
 * (MS_EV_RECONCILE: the loop keeps those at the same generation and
 * releases the rest). The watched list stays what the directory last said
 * across such an outage.
 *
 * With a cluster key every control connection passes the cluster
 * handshake (common/auth.h) before its first call. When the directory
 * refuses the first registration for the cluster key (its key differs, it
 * has none, or it wants one this server lacks) the thread logs why and
 * posts MS_EV_FATAL: the server cannot serve the cluster. A refusal at a
 * later registration (a directory restarted with another key) is logged
 * and retried, so data already held stays served. The loop
 * never blocks on the directory: it posts requests (ms_control_verify) and
 * receives results through a locked queue and uv_async_send, drained whole
 * on the loop (ms_control_take).
 */
#ifndef MAYFLY_MS_CONTROL_H
#define MAYFLY_MS_CONTROL_H

#include <glib.h>
#include <stdint.h>
#include <uv.h>

typedef enum {
  MS_EV_RECONCILE, /* registered: `blocks` lists every block the directory has allocated here */
  MS_EV_RELEASE,   /* the directory freed (index, generation) */
  MS_EV_VERIFIED,  /* answer to ms_control_verify */
  MS_EV_WATCHED,   /* `blocks` lists every block whose data events are wanted; acknowledge
                      with ms_control_applied(ticket) once the flags are set */
  MS_EV_FATAL,     /* the directory refused the first registration's cluster handshake
                      (logged): the server must stop */
  MS_EV_REPLICA_END, /* answer to ms_control_replica_end: `op_id`, `commit`, `status` (0 or
                        the directory's error, logged) */
  MS_EV_LIVE,      /* a registration or heartbeat succeeded (posted after the events its
                      reply caused, rechain checks included); `timeout_ms` is the
                      directory's heartbeat timeout (0: not known), `sent_us` the
                      g_get_monotonic_time() at which that call was sent */
} ms_event_type_t;

/* One chain member as check_block gave it (issue 12). */
typedef struct ms_event_member {
  int32_t server_id;
  char *address; /* owned */
  int32_t block_index;
  int64_t generation;
} ms_event_member_t;

#define MS_EVENT_CHAIN_MAX 5

typedef struct ms_event {
  ms_event_type_t type;
  int32_t index;
  int64_t generation;
  int status;    /* VERIFIED: 0, or the error that prevented the check */
  int allocated; /* VERIFIED */
  int kind;      /* VERIFIED: 1 file, 2 queue, 3 kv */
  int64_t lo, hi;
  int high_wm, low_wm; /* VERIFIED: kv watermarks, % of the block */
  int watched;         /* VERIFIED: data events of the block are wanted */
  int lost;            /* VERIFIED: the block's data died with an earlier incarnation of
                          this server: never adopt it, answer MAYFLY_ELOST */
  /* VERIFIED, replicated blocks: the chain (head first), this block's
   * place in it (-1: a copy being filled) and its version; the tail's
   * copy_to/copy_op (has_copy). chain_n 0: not replicated. */
  int chain_n;
  ms_event_member_t chain[MS_EVENT_CHAIN_MAX];
  int chain_pos;
  int joining; /* chain_pos -1 and no chain given: a copy being filled */
  int64_t chain_version;
  int has_copy;
  ms_event_member_t copy_to;
  int64_t copy_op;
  int rechain; /* VERIFIED asked for by a heartbeat's rechain list, not by the loop */
  int64_t timeout_ms; /* LIVE */
  int64_t sent_us;    /* LIVE */
  GArray *blocks; /* RECONCILE, WATCHED: int64 pairs (index, generation) */
  uint64_t ticket; /* WATCHED */
  int64_t op_id;   /* REPLICA_END */
  int commit;      /* REPLICA_END */
} ms_event_t;

typedef struct ms_control ms_control_t;

/* Starts the thread. `advertise` is the data-plane address clients use;
 * `zone` its --zone (NULL: none), `key` (MF_KEY_SIZE bytes, copied; NULL:
 * none) the cluster key. on_event
 * runs on the loop after uv_async_send; drain with ms_control_take. */
ms_control_t *ms_control_start(uv_loop_t *loop, const char *directory, const char *advertise,
                               const char *zone, int32_t nblocks, uint64_t block_size,
                               const uint8_t *key,
                               uv_async_cb on_event, void *data);

/* Asks the directory about block `index` (answer: an MS_EV_VERIFIED event). */
void ms_control_verify(ms_control_t *c, int32_t index);

/* Tells the directory that the copy of op_id (BlockInfo.copy_op) this
 * server's tail streamed is complete (commit 1, `bytes` sent) or failed
 * (commit 0): replica_end, called on the control thread in the order
 * posted; the answer comes back as an MS_EV_REPLICA_END event. Called on
 * the loop; never blocks. */
void ms_control_replica_end(ms_control_t *c, int64_t op_id, int commit, int64_t bytes);

/* Publishes what the next heartbeat reports (called on the loop). */
void ms_control_set_stats(ms_control_t *c, int32_t blocks_used, int64_t max_generation);

/* Says the loop set the watched flags of MS_EV_WATCHED event `ticket`. The
 * control thread waits for it before its next heartbeat, so the directory
 * knows that a data watch its previous reply carried is in force here once
 * the next heartbeat comes (directory/events.h: armed). Called on the loop. */
void ms_control_applied(ms_control_t *c, uint64_t ticket);


/* Moves every pending event to `out` (a queue of ms_event_t *, caller frees
 * each with ms_event_free). Called on the loop. */
void ms_control_take(ms_control_t *c, GQueue *out);
void ms_event_free(ms_event_t *e);

/* The id the directory gave this server; 0 while not registered. Any thread. */
int32_t ms_control_server_id(ms_control_t *c);

/* How many times the server registered so far (any thread): a
 * registration a caller saw fail is told apart from a newer one. */
uint32_t ms_control_registration(ms_control_t *c);

/* This process's incarnation (fixed at start; any thread). */
uint64_t ms_control_incarnation(const ms_control_t *c);

/* Says the directory refused this server's id (MAYFLY_ESERVER: it
 * restarted) while ms_control_registration() was `registration`: the
 * thread registers again at once, unless it did since. Any thread. */
void ms_control_reregister(ms_control_t *c, uint32_t registration);

/* The opaque pointer given at start. */
void *ms_control_data(ms_control_t *c);

/* Stops the thread and frees everything; the async handle is closed, so run
 * the loop once more afterwards. */
void ms_control_stop(ms_control_t *c);

#endif /* MAYFLY_MS_CONTROL_H */
