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
 * When publishing fails (the directory is unreachable or does not know this
 * server), the events are dropped with a warning and the replies are sent
 * anyway: writes are never held for longer than one publish call's timeout
 * (MS_PUB_TIMEOUT_MS). The directory did not number those events, so no
 * watcher sees them; a listener learns of such a loss as a gap only if the
 * directory restarted (its epoch changes) or the watch lapsed (the directory
 * stops asking for data events after DIR_WATCH_WINDOW_MS without a watch,
 * and records a gap when it starts again).
 *
 * Thread use: add, done and take_id on the loop; the thread is internal.
 */
#ifndef MAYFLY_MS_PUBLISH_H
#define MAYFLY_MS_PUBLISH_H

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
/* How long one publish call may take before the replies go out anyway. */
#define MS_PUB_TIMEOUT_MS 2000

typedef struct ms_publisher ms_publisher_t;

/* Starts the thread. It publishes as the server `ctl` registered as (no
 * publishing while unregistered). on_done runs on the loop after
 * uv_async_send; `data` is for the caller (ms_publisher_data). */
ms_publisher_t *ms_publisher_start(uv_loop_t *loop, const char *directory, ms_control_t *ctl,
                                   uv_async_cb on_done, void *data);

/* Queues one event and returns its id (1, 2, ... in order). The key (may be
 * NULL) is copied, cut at MS_PUB_KEY_MAX bytes; for PUT and DELETE `length`
 * should be the whole key's length. */
uint64_t ms_publisher_add(ms_publisher_t *p, int32_t index, int64_t generation, int kind,
                          const void *key, size_t klen, int64_t offset, int64_t length);

/* The highest id whose publish call is over (published, or given up). */
uint64_t ms_publisher_done(ms_publisher_t *p);

void *ms_publisher_data(ms_publisher_t *p);

/* Stops the thread (waiting for a call in progress) and frees everything;
 * events not yet published are dropped. The async handle is closed: run the
 * loop once more afterwards. */
void ms_publisher_stop(ms_publisher_t *p);

#endif /* MAYFLY_MS_PUBLISH_H */
