/*
 * An asynchronous client of etcd v3's JSON gateway (/v3/kv/range, put, txn,
 * deleterange, compaction, /v3/lease/grant, keepalive, revoke, /v3/watch),
 * for the directory's log on etcd (directory/ha.c).
 *
 * It runs on one libuv loop: libcurl's multi interface is driven by that
 * loop (a uv_poll_t per socket curl uses, one uv_timer_t for curl's
 * timeouts), JSON bodies are built and parsed with json-glib, keys and
 * values travel base64-encoded as the gateway wants. Connections are kept
 * alive (curl's connection cache) with TCP_NODELAY. Not thread-safe: every
 * call and every callback happens on the loop given to dir_etcd_new.
 *
 * Requests. Every request has a deadline (timeout_ms of dir_etcd_new from
 * the call). A transport failure (refused, reset, a member that does not
 * answer in its share of the deadline) or an HTTP 5xx / gRPC "unavailable"
 * answer (no leader, leader changed) sends it again to the next endpoint,
 * after a short back-off once every endpoint failed, until the deadline: all
 * of the directory's requests are idempotent (appends are fenced). A
 * request's callback is called exactly once, on the loop, never from inside
 * the call that made it; never after dir_etcd_free.
 *
 * Results. The dir_etcd_result_t given to a callback, and everything it
 * points to (kvs and their keys and values), belongs to the client and is
 * valid only during the callback: take a reference (g_bytes_ref) or copy.
 *
 * Every length from the network is checked before it is kept: a reply larger
 * than DIR_ETCD_MAX_REPLY fails with MAYFLY_EPROTO, a watch message longer
 * than that ends the watch. The decoders are exposed (dir_etcd_parse_*) for
 * the fuzz target tests/fuzz/fuzz_etcd.c.
 */
#ifndef MAYFLY_DIR_ETCD_H
#define MAYFLY_DIR_ETCD_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* The largest reply body (and watch message) accepted: 64 MiB. */
#define DIR_ETCD_MAX_REPLY ((size_t)64 << 20)

typedef struct dir_etcd dir_etcd_t;
typedef struct dir_etcd_txn dir_etcd_txn_t;
typedef struct dir_etcd_watch dir_etcd_watch_t;

typedef struct dir_etcd_kv {
  char *key;
  GBytes *value; /* never NULL (empty when etcd omits it) */
  int64_t create_revision, mod_revision, version, lease;
} dir_etcd_kv_t;

typedef struct dir_etcd_result {
  int rc;            /* 0; MAYFLY_EIO no endpoint answered / transport; MAYFLY_ETIMEDOUT; MAYFLY_EPROTO bad
                        reply or an etcd error (why has etcd's message); MAYFLY_ETOOBIG request too large */
  char why[512];     /* "" when rc == 0 */
  int64_t revision;  /* header.revision */
  int succeeded;     /* txn: the compares held */
  GPtrArray *kvs;    /* dir_etcd_kv_t *: range results (txn: of its range ops, in order); never NULL */
  int more;          /* range: more keys past the limit */
  int compacted;     /* the requested revision is compacted (range, compaction or watch) */
  int64_t compact_revision; /* watch: the oldest revision left, when etcd says it */
  int64_t lease_id, ttl; /* grant / keepalive (ttl <= 0: the lease is gone) */
  int64_t deleted;   /* deleterange: keys deleted */
} dir_etcd_result_t;

typedef void (*dir_etcd_cb)(const dir_etcd_result_t *r, void *ud);

/* Makes a client of the comma-separated endpoints ("http://127.0.0.1:2379,
 * http://127.0.0.1:22379"; http:// or https://, at most 16) on `loop`, each
 * request with a deadline of timeout_ms (>= 1). Returns 0, or MAYFLY_EINVAL
 * with why (bad endpoints), MAYFLY_ENOMEM (curl would not start). Nothing is
 * sent until the first request. */
int dir_etcd_new(uv_loop_t *loop, const char *endpoints, int64_t timeout_ms, dir_etcd_t **out,
                 char *why, size_t whylen);

/* Cancels every request and watch (their callbacks are not called), frees
 * them and closes the client's handles; the client's last memory is released
 * in the handles' close callbacks, so the loop must run once more (as for
 * any libuv handle). May be called from inside one of the client's
 * callbacks. NULL is a no-op. */
void dir_etcd_free(dir_etcd_t *e);

/* The deadline of each request, as given to dir_etcd_new. */
int64_t dir_etcd_timeout_ms(const dir_etcd_t *e);

/* A transaction under construction: compares, then the operations of the
 * success branch (on_failure == 0) and of the failure branch. */
dir_etcd_txn_t *dir_etcd_txn_new(void);
/* Compare: the key's create revision == create_revision (0: the key does
 * not exist). */
void dir_etcd_txn_cmp_create(dir_etcd_txn_t *t, const char *key, int64_t create_revision);
/* Compare: the key's mod revision == mod_revision (0: absent). */
void dir_etcd_txn_cmp_mod(dir_etcd_txn_t *t, const char *key, int64_t mod_revision);
/* Put key = val[0..len) (any bytes), bound to `lease` (0: none). */
void dir_etcd_txn_put(dir_etcd_txn_t *t, int on_failure, const char *key, const void *val, size_t len,
                      int64_t lease);
/* Delete key, or every key in [key, range_end) (NULL: key only). */
void dir_etcd_txn_delete(dir_etcd_txn_t *t, int on_failure, const char *key, const char *range_end);
/* Read key; its kv (if it exists) comes in the result's kvs. */
void dir_etcd_txn_get(dir_etcd_txn_t *t, int on_failure, const char *key);
/* Read [key, range_end) (NULL: key only), at most limit keys (0: all). */
void dir_etcd_txn_get_range(dir_etcd_txn_t *t, int on_failure, const char *key, const char *range_end,
                            int64_t limit);
void dir_etcd_txn_free(dir_etcd_txn_t *t); /* NULL is a no-op */
/* Bytes of keys and values added so far (before base64), to keep a
 * transaction under etcd's request limit (--max-request-bytes, 1.5 MiB by
 * default; the base64 encoding adds a third). */
size_t dir_etcd_txn_size(const dir_etcd_txn_t *t);
/* Sends t (taken: freed by the client). r->succeeded says which branch ran;
 * r->kvs has the kvs of that branch's reads, in order. */
void dir_etcd_txn(dir_etcd_t *e, dir_etcd_txn_t *t, dir_etcd_cb cb, void *ud);

/* Reads key, or [key, range_end) (NULL: key only), at `revision` (0: the
 * newest), at most `limit` keys (0: all; r->more says whether more follow).
 * A compacted revision gives MAYFLY_EPROTO with r->compacted set. */
void dir_etcd_range(dir_etcd_t *e, const char *key, const char *range_end, int64_t revision,
                    int64_t limit, dir_etcd_cb cb, void *ud);
void dir_etcd_put(dir_etcd_t *e, const char *key, const void *val, size_t len, int64_t lease,
                  dir_etcd_cb cb, void *ud);
/* Deletes key, or [key, range_end) (NULL: key only); r->deleted counts. */
void dir_etcd_delete(dir_etcd_t *e, const char *key, const char *range_end, dir_etcd_cb cb, void *ud);
/* Compacts etcd's history before `revision` (an already compacted revision
 * gives MAYFLY_EPROTO with r->compacted set). */
void dir_etcd_compact(dir_etcd_t *e, int64_t revision, dir_etcd_cb cb, void *ud);
/* A new lease of ttl_s seconds: r->lease_id, r->ttl. */
void dir_etcd_lease_grant(dir_etcd_t *e, int64_t ttl_s, dir_etcd_cb cb, void *ud);
/* One keepalive: r->ttl is the lease's new TTL, <= 0 when the lease is gone
 * (rc is 0 then). */
void dir_etcd_lease_keepalive(dir_etcd_t *e, int64_t lease_id, dir_etcd_cb cb, void *ud);
/* Revokes the lease (its keys are deleted); an unknown lease gives
 * MAYFLY_EPROTO ("etcdserver: requested lease not found"). */
void dir_etcd_lease_revoke(dir_etcd_t *e, int64_t lease_id, dir_etcd_cb cb, void *ud);

/* The range_end for "every key starting with prefix" (etcd's rule: the
 * prefix with its last byte below 0xff incremented, bytes after it dropped;
 * "\0" when there is none: every key). g_free. */
char *dir_etcd_prefix_end(const char *prefix);

typedef struct dir_etcd_event {
  int deleted;      /* a DELETE (kv has key and mod_revision only) */
  dir_etcd_kv_t kv;
} dir_etcd_event_t;

/* Events in revision order (n > 0), or n == 0: a progress notification that
 * every event up to `revision` was delivered. rc != 0 ends the watch
 * (MAYFLY_EIO: the stream was lost and could not be opened again within
 * timeout_ms; MAYFLY_EPROTO: etcd canceled it, why->compacted set when the
 * start revision was compacted, with why->compact_revision); the caller
 * then calls dir_etcd_watch_cancel (required, it frees the watch) and may
 * watch again. `why` is NULL when rc == 0. Events are valid during the
 * callback only. */
typedef void (*dir_etcd_watch_cb)(const dir_etcd_event_t *ev, size_t n, int64_t revision, int rc,
                                  const dir_etcd_result_t *why, void *ud);

/* Watches key, or [key, range_end) (NULL: key only), from start_revision (0:
 * from now). A lost stream (member killed) is opened again on the next
 * endpoint from the revision after the last event delivered, so no event is
 * lost or repeated. Never NULL. */
dir_etcd_watch_t *dir_etcd_watch(dir_etcd_t *e, const char *key, const char *range_end,
                                 int64_t start_revision, dir_etcd_watch_cb cb, void *ud);
/* Stops and frees the watch: no callback after this (also from inside its
 * own callback). NULL is a no-op. */
void dir_etcd_watch_cancel(dir_etcd_watch_t *w);

/* The decoders (exposed for the fuzz target and tests). */
typedef enum {
  DIR_ETCD_OP_RANGE,
  DIR_ETCD_OP_PUT,
  DIR_ETCD_OP_DELETE,
  DIR_ETCD_OP_TXN,
  DIR_ETCD_OP_COMPACT,
  DIR_ETCD_OP_GRANT,
  DIR_ETCD_OP_KEEPALIVE,
  DIR_ETCD_OP_REVOKE,
} dir_etcd_op_t;

/* Initialises r (empty kvs) before a parse; dir_etcd_result_clear frees what
 * a parse put in it. */
void dir_etcd_result_init(dir_etcd_result_t *r);
void dir_etcd_result_clear(dir_etcd_result_t *r);

/* Decodes the body of a reply to `op` (keepalive: its first line) into r
 * (initialised): returns r->rc, 0 or MAYFLY_EPROTO (not JSON, a field of the
 * wrong type, an etcd error; why says which) or MAYFLY_ETOOBIG (etcd said the
 * request is too large). *retry is set when the error is worth sending to
 * another member (gRPC unavailable). Never reads past data[len). */
int dir_etcd_parse_reply(dir_etcd_op_t op, const char *data, size_t len, dir_etcd_result_t *r,
                         int *retry);

/* One message of a watch stream. */
typedef struct dir_etcd_watch_msg {
  GArray *events;   /* dir_etcd_event_t */
  int64_t revision; /* header.revision */
  int created, canceled, compacted;
  int retry;        /* canceled by a stream error worth reopening elsewhere (unavailable) */
  int64_t compact_revision;
  char why[512];
} dir_etcd_watch_msg_t;
void dir_etcd_watch_msg_init(dir_etcd_watch_msg_t *m);
void dir_etcd_watch_msg_clear(dir_etcd_watch_msg_t *m);
/* Decodes one line of a watch stream into m (initialised): 0, or
 * MAYFLY_EPROTO (why says what). A stream error message ({"error": ...})
 * decodes as canceled with why. */
int dir_etcd_parse_watch_line(const char *line, size_t len, dir_etcd_watch_msg_t *m);

#endif /* MAYFLY_DIR_ETCD_H */
