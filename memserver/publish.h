/*
 * Data events of a memory server: a thread of its own, with its own control
 * connection, that reports the writes made on watched blocks to the
 * directory (the `publish` call), which numbers them (directory/events.h).
 *
 * The loop queues one event per successful write on a watched block
 * (ms_publisher_add, which copies at most MS_PUB_KEY_MAX bytes of a key) and
 * holds the writer's reply; the thread takes every queued event at once (up
 * to MS_PUB_BATCH_MAX), base64-encodes keys, calls publish, and tells the
 * loop through uv_async_send that events up to some id are done
 * (ms_publisher_done). The loop then sends the held replies. So a writer
 * that sees its ack knows its event is numbered, and the events of one
 * writer keep its order even across partitions on different servers.
 *
 * A write is never acknowledged without its event. When a publish call
 * fails (the directory is stopped, dead, restarting, or does not know this
 * server any more), the batch is kept and tried again, with a back-off from
 * MS_PUB_RETRY_MIN_MS to MS_PUB_RETRY_MAX_MS, until the directory takes it;
 * the replies stay held meanwhile (a client whose call times out first
 * gets MAYFLY_ETIMEDOUT: its write was applied and its event comes once the
 * directory is back). A directory that answers MAYFLY_ESERVER restarted and
 * does not know this server: the publisher asks the control thread to
 * register again (ms_control_reregister) and publishes once it has. While
 * the publisher knows the directory is unreachable (its last call failed
 * and none succeeded since, or the server is not registered), it refuses:
 * ms_publisher_refusing() says so, and the loop answers new writes to
 * watched blocks MAYFLY_EDIRDOWN before applying them (never after: the
 * caller would retry and apply the write twice). Held replies and their
 * queued events are bounded by the connections' reply-backlog caps (the
 * loop reserves both there, defer.c). A batch whose call timed out may have
 * been numbered by a directory that was only slow (SIGSTOP): sending it
 * again can deliver those events twice, never zero times.
 *
 * Thread use: add, done, refusing and take_id on the loop; the thread is
 * internal.
 */
#ifndef MAYFLY_MS_PUBLISH_H
#define MAYFLY_MS_PUBLISH_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "memserver/control.h"

/* Event kinds: the IDL's EventKind values (common/control.thrift). */
#define MS_EV_KIND_PUT 1
#define MS_EV_KIND_DELETE 2
#define MS_EV_KIND_PUSH 3
#define MS_EV_KIND_POP 4
#define MS_EV_KIND_WRITE 5

/* Most key bytes an event carries (the directory's DIR_EVENT_KEY_RAW_MAX). */
#define MS_PUB_KEY_MAX 1024
/* Most events in one publish call (the directory takes up to 4096). */
#define MS_PUB_BATCH_MAX 1024
/* How long one publish call may take before it counts as failed. */
#define MS_PUB_TIMEOUT_MS 2000
/* Back-off between attempts to publish a batch the directory did not take. */
#define MS_PUB_RETRY_MIN_MS 50
#define MS_PUB_RETRY_MAX_MS 1000

typedef struct ms_publisher ms_publisher_t;

/* Starts the thread. It publishes as the server `ctl` registered as (no
 * publishing while unregistered), over a control connection that passes
 * the cluster handshake with `key` (MF_KEY_SIZE bytes, copied; NULL: no
 * key). on_done runs on the loop after uv_async_send; `data` is for the
 * caller (ms_publisher_data). */
ms_publisher_t *ms_publisher_start(uv_loop_t *loop, const char *directory, ms_control_t *ctl,
                                   const uint8_t *key, uv_async_cb on_done, void *data);

/* Queues one event and returns its id (1, 2, ... in order). The key (may be
 * NULL) is copied, cut at MS_PUB_KEY_MAX bytes; for PUT and DELETE `length`
 * should be the whole key's length. */
uint64_t ms_publisher_add(ms_publisher_t *p, int32_t index, int64_t generation, int kind,
                          const void *key, size_t klen, int64_t offset, int64_t length);

/* The same for a write on a replicated block: the event carries the
 * write's chain sequence number (DataEvent.chain_seq; 0: none), by which
 * the directory drops an event a new tail publishes again after a
 * failover. */
uint64_t ms_publisher_add_seq(ms_publisher_t *p, int32_t index, int64_t generation, int kind,
                              const void *key, size_t klen, int64_t offset, int64_t length,
                              uint64_t chain_seq);

/* The memory an event queued with a key of klen bytes takes until it is
 * published (for the caller's caps). */
size_t ms_publisher_event_size(size_t klen);

/* The highest id whose events the directory took (every event up to it). */
uint64_t ms_publisher_done(ms_publisher_t *p);

/* 1 while the directory is known to be unreachable (the last publish call
 * failed and none succeeded since, or the server is not registered): new
 * writes to watched blocks are then refused (MAYFLY_EDIRDOWN). Any thread. */
int ms_publisher_refusing(ms_publisher_t *p);

void *ms_publisher_data(ms_publisher_t *p);

/* Stops the thread (waiting for a call in progress) and frees everything;
 * events not yet published are dropped (their writers' replies must not be
 * sent: ms__drop_published). The async handle is closed: run the loop once
 * more afterwards. */
void ms_publisher_stop(ms_publisher_t *p);

#endif /* MAYFLY_MS_PUBLISH_H */
