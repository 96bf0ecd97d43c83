/*
 * An asynchronous client of etcd v3's JSON gateway on a libuv loop (see
 * etcd.h).
 *
 * libcurl's multi interface runs on the loop in the classic way: curl tells
 * us which sockets to watch (CURLMOPT_SOCKETFUNCTION: a uv_poll_t each) and
 * when to call it back (CURLMOPT_TIMERFUNCTION: one uv_timer_t); both call
 * curl_multi_socket_action, then dispatch() acts on what finished. User
 * callbacks run only from dispatch(), never from inside a curl callback
 * (curl forbids calling the multi from there) and never from the call that
 * made the request; a callback may make requests, cancel watches or free the
 * client.
 *
 * An op is one request (or one watch) with its deadline; each attempt is one
 * curl easy handle to one endpoint. Ops waiting to be (re)sent sit in
 * `waiting`, ordered by due time, under one timer; finished ops go to `done`
 * and are delivered by dispatch().
 */
#include "directory/etcd.h"

#include <curl/curl.h>
#include <errno.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "common/error.h"

#define MAX_ENDPOINTS 16

typedef enum { OP_WAITING, OP_RUNNING, OP_DONE } op_state_t;

typedef struct op {
  dir_etcd_t *e;
  dir_etcd_op_t kind;
  int watch;          /* a dir_etcd_watch_t (struct dir_etcd_watch begins with this) */
  op_state_t state;
  const char *path;   /* "/v3/kv/range" */
  char *body;         /* JSON request body */
  size_t body_len;
  CURL *easy;         /* while running */
  GByteArray *resp;   /* the reply so far (watch: the unparsed tail) */
  int too_big;        /* the reply passed DIR_ETCD_MAX_REPLY */
  int first_line;     /* keepalive: stopped after its first answer */
  int64_t deadline;   /* ms, now_ms() */
  int64_t due;        /* when waiting: when to send */
  int ep;             /* the endpoint of the current (or next) attempt */
  int tried;          /* attempts so far */
  int last_rc;        /* why the last attempt failed (MAYFLY_EIO / ETIMEDOUT) */
  char last_why[256];
  dir_etcd_result_t res; /* the final result (when done) */
  dir_etcd_cb cb;
  void *ud;
} op_t;

struct dir_etcd_watch {
  op_t op;
  char *key, *range_end;
  int64_t next_rev;    /* the revision to resume from (0: now) */
  int created;         /* the current stream said created */
  int64_t lost_at;     /* when the stream was lost (0: it is up) */
  int canceled;        /* by the caller: free at the end of dispatch */
  int ended;           /* rc != 0 delivered: nothing more */
  int pending;         /* complete lines in op.resp to deliver */
  dir_etcd_watch_cb wcb;
  void *wud;
};

typedef struct sock {
  uv_poll_t poll;
  curl_socket_t fd;
  dir_etcd_t *e;
} sock_t;

struct dir_etcd {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t curl_timer; /* curl's timeout */
  uv_timer_t wait_timer; /* the first op of `waiting` */
  GPtrArray *endpoints;  /* char *, without a trailing '/' */
  int cur;               /* the endpoint that answered last */
  int64_t timeout_ms;
  GList *ops;            /* every op (requests and watches) not yet freed */
  GQueue waiting;        /* op_t *, by due */
  GQueue done;           /* op_t *, to deliver */
  GList *socks;          /* sock_t * */
  GPtrArray *idle;       /* CURL * easy handles to reuse */
  struct curl_slist *headers;
  int depth;             /* dispatch() nesting */
  int dead;              /* dir_etcd_free was called */
  int open_handles;      /* timers not closed yet */
};

static void dispatch(dir_etcd_t *e);
static void start_attempt(op_t *op);

/* ---- small helpers ---------------------------------------------------- */

/* The clock of deadlines: the real monotonic time, not the loop's cached
 * uv_now(), which is stale after the loop was blocked (a request made then
 * would start with its deadline already spent). Timers take differences. */
static int64_t now_ms(dir_etcd_t *e) {
  return (int64_t)(uv_hrtime() / 1000000);
}

static void set_why(char *why, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_why(char *why, size_t len, const char *fmt, ...) {
  if (why == NULL || len == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, len, fmt, ap);
  va_end(ap);
}

static void kv_free(gpointer p) {
  dir_etcd_kv_t *kv = p;
  g_free(kv->key);
  if (kv->value != NULL) g_bytes_unref(kv->value);
  g_free(kv);
}

void dir_etcd_result_init(dir_etcd_result_t *r) {
  memset(r, 0, sizeof *r);
  r->kvs = g_ptr_array_new_with_free_func(kv_free);
}

void dir_etcd_result_clear(dir_etcd_result_t *r) {
  if (r->kvs != NULL) g_ptr_array_free(r->kvs, TRUE);
  r->kvs = NULL;
}

static char *b64(const void *data, size_t len) {
  return g_base64_encode(data, len);
}

char *dir_etcd_prefix_end(const char *prefix) {
  size_t n = strlen(prefix);
  char *end = g_strdup(prefix);
  for (size_t i = n; i > 0; i--) {
    unsigned char c = (unsigned char)end[i - 1];
    if (c < 0xff) {
      end[i - 1] = (char)(c + 1);
      end[i] = '\0';
      return end;
    }
  }
  /* Every byte is 0xff (or the prefix is empty): etcd's "\0" means all keys
   * from key on. */
  g_free(end);
  return g_strdup("");
}

/* Adds "name": base64(s) to o; a range_end of "" means "\0" (every key). */
static void add_b64(JsonObject *o, const char *name, const void *data, size_t len) {
  if (len == 0 && strcmp(name, "range_end") == 0) {
    static const char zero = '\0';
    data = &zero;
    len = 1;
  }
  char *s = b64(data, len);
  json_object_set_string_member(o, name, s);
  g_free(s);
}

/* int64 members go as strings, as the gateway writes them. */
static void add_i64(JsonObject *o, const char *name, int64_t v) {
  char buf[32];
  snprintf(buf, sizeof buf, "%" G_GINT64_FORMAT, (gint64)v);
  json_object_set_string_member(o, name, buf);
}

static char *to_json(JsonObject *o, size_t *len) {
  JsonNode *root = json_node_new(JSON_NODE_OBJECT);
  json_node_take_object(root, o);
  JsonGenerator *g = json_generator_new();
  json_generator_set_root(g, root);
  gsize n = 0;
  char *s = json_generator_to_data(g, &n);
  g_object_unref(g);
  json_node_unref(root);
  *len = n;
  return s;
}

/* ---- decoding ----------------------------------------------------------- */

/* The member `name` of o as an int64: absent is 0; the gateway writes int64
 * as a string, but a number is accepted too. 0 or -1 (another type, junk). */
static int get_i64(JsonObject *o, const char *name, int64_t *out) {
  *out = 0;
  JsonNode *n = json_object_get_member(o, name);
  if (n == NULL || JSON_NODE_HOLDS_NULL(n)) return 0;
  if (!JSON_NODE_HOLDS_VALUE(n)) return -1;
  GType t = json_node_get_value_type(n);
  if (t == G_TYPE_INT64) {
    *out = json_node_get_int(n);
    return 0;
  }
  if (t != G_TYPE_STRING) return -1;
  const char *s = json_node_get_string(n);
  char *endp = NULL;
  if (s == NULL || *s == '\0') return -1;
  errno = 0;
  gint64 v = g_ascii_strtoll(s, &endp, 10);
  if (errno != 0 || *endp != '\0') return -1;
  *out = v;
  return 0;
}

static int get_bool(JsonObject *o, const char *name, int *out) {
  *out = 0;
  JsonNode *n = json_object_get_member(o, name);
  if (n == NULL || JSON_NODE_HOLDS_NULL(n)) return 0;
  if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_BOOLEAN) return -1;
  *out = json_node_get_boolean(n) ? 1 : 0;
  return 0;
}

/* The member as a string (NULL when absent); -1 when of another type. */
static int get_str(JsonObject *o, const char *name, const char **out) {
  *out = NULL;
  JsonNode *n = json_object_get_member(o, name);
  if (n == NULL || JSON_NODE_HOLDS_NULL(n)) return 0;
  if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING) return -1;
  *out = json_node_get_string(n);
  return 0;
}

/* The member as an object / array (NULL when absent); -1 on another type. */
static int get_obj(JsonObject *o, const char *name, JsonObject **out) {
  *out = NULL;
  JsonNode *n = json_object_get_member(o, name);
  if (n == NULL || JSON_NODE_HOLDS_NULL(n)) return 0;
  if (!JSON_NODE_HOLDS_OBJECT(n)) return -1;
  *out = json_node_get_object(n);
  return 0;
}

static int get_arr(JsonObject *o, const char *name, JsonArray **out) {
  *out = NULL;
  JsonNode *n = json_object_get_member(o, name);
  if (n == NULL || JSON_NODE_HOLDS_NULL(n)) return 0;
  if (!JSON_NODE_HOLDS_ARRAY(n)) return -1;
  *out = json_node_get_array(n);
  return 0;
}

/* A base64 member decoded (absent: empty). -1 on another type. The input
 * was bounded by the reply cap, and base64 only shrinks. */
static int get_b64(JsonObject *o, const char *name, GBytes **out) {
  const char *s;
  *out = NULL;
  if (get_str(o, name, &s) != 0) return -1;
  if (s == NULL || *s == '\0') {
    *out = g_bytes_new(NULL, 0);
    return 0;
  }
  gsize n = 0;
  guchar *raw = g_base64_decode(s, &n);
  *out = g_bytes_new_take(raw, n);
  return 0;
}

static dir_etcd_kv_t *parse_kv(JsonObject *o) {
  GBytes *key = NULL, *value = NULL;
  dir_etcd_kv_t *kv = g_new0(dir_etcd_kv_t, 1);
  if (get_b64(o, "key", &key) != 0 || get_b64(o, "value", &value) != 0 ||
      get_i64(o, "create_revision", &kv->create_revision) != 0 ||
      get_i64(o, "mod_revision", &kv->mod_revision) != 0 || get_i64(o, "version", &kv->version) != 0 ||
      get_i64(o, "lease", &kv->lease) != 0) {
    if (key != NULL) g_bytes_unref(key);
    if (value != NULL) g_bytes_unref(value);
    g_free(kv);
    return NULL;
  }
  gsize klen = 0;
  const char *k = g_bytes_get_data(key, &klen);
  kv->key = g_strndup(k != NULL ? k : "", klen);
  g_bytes_unref(key);
  kv->value = value;
  return kv;
}

/* Appends the kvs array of o to out; -1 on a malformed one. */
static int parse_kvs(JsonObject *o, GPtrArray *out) {
  JsonArray *a;
  if (get_arr(o, "kvs", &a) != 0) return -1;
  for (guint i = 0; a != NULL && i < json_array_get_length(a); i++) {
    JsonNode *n = json_array_get_element(a, i);
    if (!JSON_NODE_HOLDS_OBJECT(n)) return -1;
    dir_etcd_kv_t *kv = parse_kv(json_node_get_object(n));
    if (kv == NULL) return -1;
    g_ptr_array_add(out, kv);
  }
  return 0;
}

static int header_revision(JsonObject *o, int64_t *rev) {
  JsonObject *h;
  *rev = 0;
  if (get_obj(o, "header", &h) != 0) return -1;
  return h != NULL ? get_i64(h, "revision", rev) : 0;
}

/* An etcd error object ({"error": "...", "code": N, "message": "..."} or a
 * stream's {"error": {"grpc_code": N, "message": "..."}}) into r. */
static int etcd_error(JsonObject *o, dir_etcd_result_t *r, int *retry) {
  const char *msg = NULL;
  int64_t code = 0;
  JsonObject *eo = NULL;
  if (get_obj(o, "error", &eo) == 0 && eo != NULL) {
    get_str(eo, "message", &msg);
    get_i64(eo, "grpc_code", &code);
  } else {
    get_str(o, "message", &msg);
    if (msg == NULL) get_str(o, "error", &msg);
    get_i64(o, "code", &code);
  }
  if (msg == NULL) msg = "unknown etcd error";
  set_why(r->why, sizeof r->why, "etcd: %s (code %" G_GINT64_FORMAT ")", msg, (gint64)code);
  r->rc = MAYFLY_EPROTO;
  if (strstr(msg, "request is too large") != NULL || strstr(msg, "larger than max") != NULL) {
    r->rc = MAYFLY_ETOOBIG;
  }
  if (strstr(msg, "required revision has been compacted") != NULL) r->compacted = 1;
  /* gRPC 14 (unavailable: no leader, leader changed, stopping) and 4
   * (deadline exceeded inside etcd) may succeed on another member. */
  if (retry != NULL && (code == 14 || code == 4) && r->rc == MAYFLY_EPROTO) *retry = 1;
  return r->rc;
}

/* Parses data[0..len) as one JSON object into *parser; the root or NULL. */
static JsonObject *parse_object(JsonParser *parser, const char *data, size_t len, dir_etcd_result_t *r) {
  GError *err = NULL;
  if (len == 0 || data == NULL) {
    set_why(r->why, sizeof r->why, "etcd: empty reply");
    return NULL;
  }
  if (len > DIR_ETCD_MAX_REPLY || !json_parser_load_from_data(parser, data, (gssize)len, &err)) {
    set_why(r->why, sizeof r->why, "etcd: reply is not JSON: %s", err != NULL ? err->message : "too long");
    if (err != NULL) g_error_free(err);
    return NULL;
  }
  JsonNode *root = json_parser_get_root(parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT(root)) {
    set_why(r->why, sizeof r->why, "etcd: reply is not a JSON object");
    return NULL;
  }
  return json_node_get_object(root);
}

/* The "responses" of a txn: the kvs of its range responses, in order. */
static int parse_txn_responses(JsonObject *o, dir_etcd_result_t *r) {
  JsonArray *a;
  if (get_bool(o, "succeeded", &r->succeeded) != 0 || get_arr(o, "responses", &a) != 0) return -1;
  for (guint i = 0; a != NULL && i < json_array_get_length(a); i++) {
    JsonNode *n = json_array_get_element(a, i);
    if (!JSON_NODE_HOLDS_OBJECT(n)) return -1;
    JsonObject *rr;
    if (get_obj(json_node_get_object(n), "response_range", &rr) != 0) return -1;
    if (rr != NULL && parse_kvs(rr, r->kvs) != 0) return -1;
  }
  return 0;
}

int dir_etcd_parse_reply(dir_etcd_op_t op, const char *data, size_t len, dir_etcd_result_t *r,
                         int *retry) {
  if (retry != NULL) *retry = 0;
  r->rc = MAYFLY_EPROTO;
  if (op == DIR_ETCD_OP_KEEPALIVE) {
    /* A stream: its first line is the answer. */
    const char *nl = len > 0 ? memchr(data, '\n', len) : NULL;
    if (nl != NULL) len = (size_t)(nl - data);
  }
  JsonParser *parser = json_parser_new();
  JsonObject *o = parse_object(parser, data, len, r);
  if (o == NULL) goto out;
  /* An error reply has "error" and "code" (a LeaseGrantResponse may carry an
   * empty "error" of its own beside its header). */
  if (json_object_has_member(o, "code") ||
      (json_object_has_member(o, "error") && !json_object_has_member(o, "header") &&
       !json_object_has_member(o, "result"))) {
    etcd_error(o, r, retry);
    goto out;
  }
  if (op == DIR_ETCD_OP_KEEPALIVE) {
    JsonObject *res;
    if (get_obj(o, "result", &res) != 0 || res == NULL) {
      set_why(r->why, sizeof r->why, "etcd: keepalive reply without a result");
      goto out;
    }
    o = res;
  }
  int bad = header_revision(o, &r->revision) != 0;
  switch (op) {
  case DIR_ETCD_OP_RANGE:
    bad = bad || parse_kvs(o, r->kvs) != 0 || get_bool(o, "more", &r->more) != 0;
    break;
  case DIR_ETCD_OP_TXN:
    bad = bad || parse_txn_responses(o, r) != 0;
    break;
  case DIR_ETCD_OP_DELETE:
    bad = bad || get_i64(o, "deleted", &r->deleted) != 0;
    break;
  case DIR_ETCD_OP_GRANT:
  case DIR_ETCD_OP_KEEPALIVE:
    bad = bad || get_i64(o, "ID", &r->lease_id) != 0 || get_i64(o, "TTL", &r->ttl) != 0;
    if (!bad && op == DIR_ETCD_OP_GRANT) {
      const char *err = NULL;
      if (get_str(o, "error", &err) == 0 && err != NULL && *err != '\0') {
        set_why(r->why, sizeof r->why, "etcd: %s", err);
        goto out;
      }
    }
    break;
  case DIR_ETCD_OP_PUT:
  case DIR_ETCD_OP_COMPACT:
  case DIR_ETCD_OP_REVOKE:
    break;
  }
  if (bad) {
    set_why(r->why, sizeof r->why, "etcd: malformed reply");
    goto out;
  }
  r->rc = 0;
  r->why[0] = '\0';
out:
  g_object_unref(parser);
  return r->rc;
}

static void event_clear(gpointer p) {
  dir_etcd_event_t *ev = p;
  g_free(ev->kv.key);
  if (ev->kv.value != NULL) g_bytes_unref(ev->kv.value);
}

void dir_etcd_watch_msg_init(dir_etcd_watch_msg_t *m) {
  memset(m, 0, sizeof *m);
  m->events = g_array_new(FALSE, TRUE, sizeof(dir_etcd_event_t));
  g_array_set_clear_func(m->events, event_clear);
}

void dir_etcd_watch_msg_clear(dir_etcd_watch_msg_t *m) {
  if (m->events != NULL) g_array_free(m->events, TRUE);
  m->events = NULL;
}

int dir_etcd_parse_watch_line(const char *line, size_t len, dir_etcd_watch_msg_t *m) {
  dir_etcd_result_t r;
  memset(&r, 0, sizeof r);
  int rc = MAYFLY_EPROTO;
  JsonParser *parser = json_parser_new();
  JsonObject *o = parse_object(parser, line, len, &r);
  JsonObject *res = NULL, *eo = NULL;
  if (o == NULL) {
    g_strlcpy(m->why, r.why, sizeof m->why);
    goto out;
  }
  if (get_obj(o, "error", &eo) != 0 || eo != NULL || json_object_has_member(o, "code")) {
    /* The stream failed: {"error": {...}}. */
    etcd_error(o, &r, &m->retry);
    g_strlcpy(m->why, r.why, sizeof m->why);
    m->canceled = 1;
    m->compacted = r.compacted;
    rc = 0;
    goto out;
  }
  const char *reason = NULL;
  JsonArray *evs = NULL;
  if (get_obj(o, "result", &res) != 0 || res == NULL || header_revision(res, &m->revision) != 0 ||
      get_bool(res, "created", &m->created) != 0 || get_bool(res, "canceled", &m->canceled) != 0 ||
      get_i64(res, "compact_revision", &m->compact_revision) != 0 ||
      get_str(res, "cancel_reason", &reason) != 0 || get_arr(res, "events", &evs) != 0) {
    g_strlcpy(m->why, "etcd: malformed watch message", sizeof m->why);
    goto out;
  }
  if (m->compact_revision > 0) m->compacted = 1;
  if (m->canceled) {
    if (m->compacted) {
      snprintf(m->why, sizeof m->why, "etcd: watch start revision compacted (oldest is %" G_GINT64_FORMAT ")",
               (gint64)m->compact_revision);
    } else {
      snprintf(m->why, sizeof m->why, "etcd: watch canceled: %s", reason != NULL ? reason : "no reason given");
    }
  }
  for (guint i = 0; evs != NULL && i < json_array_get_length(evs); i++) {
    JsonNode *n = json_array_get_element(evs, i);
    JsonObject *eobj, *kvo;
    const char *type = NULL;
    if (!JSON_NODE_HOLDS_OBJECT(n) || get_obj((eobj = json_node_get_object(n)), "kv", &kvo) != 0 ||
        kvo == NULL || get_str(eobj, "type", &type) != 0) {
      g_strlcpy(m->why, "etcd: malformed watch event", sizeof m->why);
      goto out;
    }
    dir_etcd_kv_t *kv = parse_kv(kvo);
    if (kv == NULL) {
      g_strlcpy(m->why, "etcd: malformed watch event", sizeof m->why);
      goto out;
    }
    dir_etcd_event_t ev = {.deleted = type != NULL && strcmp(type, "DELETE") == 0, .kv = *kv};
    g_free(kv); /* its members moved into ev */
    g_array_append_val(m->events, ev);
  }
  rc = 0;
out:
  g_object_unref(parser);
  return rc;
}

/* ---- libcurl on the loop ------------------------------------------------ */

static void sock_closed(uv_handle_t *h) {
  g_free(h->data);
}

static void sock_drop(dir_etcd_t *e, sock_t *s) {
  uv_poll_stop(&s->poll);
  e->socks = g_list_remove(e->socks, s);
  uv_close((uv_handle_t *)&s->poll, sock_closed);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  sock_t *s = h->data;
  dir_etcd_t *e = s->e;
  int flags = 0;
  if (status < 0) {
    flags = CURL_CSELECT_ERR;
  } else {
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  }
  int running = 0;
  curl_multi_socket_action(e->multi, s->fd, flags, &running);
  dispatch(e);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  dir_etcd_t *e = userp;
  sock_t *s = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (s != NULL) {
      sock_drop(e, s);
      curl_multi_assign(e->multi, fd, NULL);
    }
    return 0;
  }
  if (s == NULL) {
    s = g_new0(sock_t, 1);
    s->fd = fd;
    s->e = e;
    if (uv_poll_init_socket(e->loop, &s->poll, fd) != 0) {
      g_free(s);
      return -1;
    }
    s->poll.data = s;
    e->socks = g_list_prepend(e->socks, s);
    curl_multi_assign(e->multi, fd, s);
  }
  int ev = 0;
  if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) ev |= UV_READABLE;
  if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) ev |= UV_WRITABLE;
  uv_poll_start(&s->poll, ev, on_poll);
  return 0;
}

static void on_curl_timer_fire(uv_timer_t *t) {
  dir_etcd_t *e = t->data;
  int running = 0;
  curl_multi_socket_action(e->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  dispatch(e);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
  dir_etcd_t *e = userp;
  if (e->dead) return 0;
  if (timeout_ms < 0) {
    uv_timer_stop(&e->curl_timer);
  } else {
    /* 0 means "as soon as possible": the next loop iteration (curl must not
     * be called back from inside its own callback). */
    uv_timer_start(&e->curl_timer, on_curl_timer_fire, (uint64_t)timeout_ms, 0);
  }
  return 0;
}

/* ---- ops ------------------------------------------------------------------ */

static void release_easy(dir_etcd_t *e, op_t *op) {
  if (op->easy == NULL) return;
  curl_multi_remove_handle(e->multi, op->easy);
  /* A handle that took part in an aborted transfer is reset before reuse;
   * the connection cache belongs to the multi, so nothing is lost. */
  if (!e->dead && e->idle->len < 64) {
    curl_easy_reset(op->easy);
    g_ptr_array_add(e->idle, op->easy);
  } else {
    curl_easy_cleanup(op->easy);
  }
  op->easy = NULL;
}

static void op_free(op_t *op) {
  dir_etcd_t *e = op->e;
  release_easy(e, op);
  e->ops = g_list_remove(e->ops, op);
  g_free(op->body);
  if (op->resp != NULL) g_byte_array_free(op->resp, TRUE);
  dir_etcd_result_clear(&op->res);
  if (op->watch) {
    dir_etcd_watch_t *w = (dir_etcd_watch_t *)op;
    g_free(w->key);
    g_free(w->range_end);
  }
  g_free(op);
}

static gint by_due(gconstpointer a, gconstpointer b, gpointer ud) {
  const op_t *x = a, *y = b;
  return x->due < y->due ? -1 : x->due > y->due;
}

static void on_wait_timer(uv_timer_t *t);

static void arm_wait_timer(dir_etcd_t *e) {
  op_t *first = g_queue_peek_head(&e->waiting);
  if (first == NULL) {
    uv_timer_stop(&e->wait_timer);
    return;
  }
  int64_t d = first->due - now_ms(e);
  uv_timer_start(&e->wait_timer, on_wait_timer, d > 0 ? (uint64_t)d : 0, 0);
}

/* Puts op in `waiting` to be sent after delay_ms. */
static void op_wait(op_t *op, int64_t delay_ms) {
  dir_etcd_t *e = op->e;
  op->state = OP_WAITING;
  op->due = now_ms(e) + delay_ms;
  g_queue_insert_sorted(&e->waiting, op, by_due, NULL);
  arm_wait_timer(e);
}

/* Finishes op with its result in op->res (delivered by dispatch). */
static void op_finish(op_t *op) {
  release_easy(op->e, op);
  op->state = OP_DONE;
  g_queue_push_tail(&op->e->done, op);
}

static void op_fail(op_t *op, int rc, const char *why) {
  op->res.rc = rc;
  g_strlcpy(op->res.why, why, sizeof op->res.why);
  op_finish(op);
}

static void on_wait_timer(uv_timer_t *t) {
  dir_etcd_t *e = t->data;
  int64_t now = now_ms(e);
  op_t *op;
  while ((op = g_queue_peek_head(&e->waiting)) != NULL && op->due <= now) {
    g_queue_pop_head(&e->waiting);
    start_attempt(op);
  }
  arm_wait_timer(e);
  dispatch(e);
}

/* Decides after a failed attempt: the next endpoint now, the first again
 * after a back-off once every endpoint failed this round, or the final error
 * once the deadline passed. rc/why describe the failure. */
static void op_retry(op_t *op, int rc, const char *why) {
  dir_etcd_t *e = op->e;
  release_easy(e, op);
  op->last_rc = rc;
  g_strlcpy(op->last_why, why, sizeof op->last_why);
  int n = (int)e->endpoints->len;
  op->ep = (op->ep + 1) % n;
  e->cur = op->ep;
  int64_t left = op->deadline - now_ms(e);
  int64_t delay = 0;
  if (op->tried % n == 0) {
    int round = op->tried / n;
    delay = round >= 4 ? 500 : 50 << (round - 1);
  }
  if (left <= delay) {
    char msg[512];
    snprintf(msg, sizeof msg, "etcd: no endpoint answered within %" G_GINT64_FORMAT " ms (%d attempts; last: %s)",
             (gint64)e->timeout_ms, op->tried, op->last_why);
    op_fail(op, op->last_rc != 0 ? op->last_rc : MAYFLY_ETIMEDOUT, msg);
    return;
  }
  op_wait(op, delay);
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ud) {
  op_t *op = ud;
  size_t n = size * nmemb;
  if (op->first_line) return 0;
  if (n > DIR_ETCD_MAX_REPLY || op->resp->len > DIR_ETCD_MAX_REPLY - n) {
    /* A watch keeps only its unparsed tail here, so for it this is one
     * message longer than the cap. */
    op->too_big = 1;
    return 0;
  }
  g_byte_array_append(op->resp, (const guint8 *)ptr, (guint)n);
  if (op->watch) {
    if (memchr(ptr, '\n', n) != NULL) ((dir_etcd_watch_t *)op)->pending = 1;
  } else if (op->kind == DIR_ETCD_OP_KEEPALIVE && memchr(ptr, '\n', n) != NULL) {
    /* Should the gateway keep the keepalive stream open, its first answer
     * is all we asked for: end the transfer here. */
    op->first_line = 1;
    return 0;
  }
  return n;
}

/* A watch's stream gets no answer at all (a stopped member): give up on
 * it when it has not said "created" within its share of the deadline. */
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
  op_t *op = ud;
  dir_etcd_watch_t *w = (dir_etcd_watch_t *)op;
  return op->watch && !w->created && now_ms(op->e) > op->due ? 1 : 0;
}

static void start_attempt(op_t *op) {
  dir_etcd_t *e = op->e;
  int64_t now = now_ms(e);
  int64_t left = op->deadline - now;
  if (op->watch) left = e->timeout_ms; /* each stream gets the full deadline to open */
  if (left <= 0) {
    op_fail(op, op->last_rc != 0 ? op->last_rc : MAYFLY_ETIMEDOUT, "etcd: deadline passed");
    return;
  }
  /* With other endpoints to try, one attempt gets half of what is left (at
   * least 250 ms), so that a member that accepts but never answers does not
   * eat the whole deadline. */
  int64_t attempt = left;
  if (e->endpoints->len > 1 && left > 500) attempt = MAX(left / 2, 250);
  CURL *easy = e->idle->len > 0 ? g_ptr_array_steal_index_fast(e->idle, e->idle->len - 1) : curl_easy_init();
  if (easy == NULL) {
    op_fail(op, MAYFLY_ENOMEM, "etcd: curl_easy_init failed");
    return;
  }
  op->easy = easy;
  op->tried++;
  op->state = OP_RUNNING;
  op->too_big = 0;
  op->first_line = 0;
  g_byte_array_set_size(op->resp, 0);
  char url[512];
  snprintf(url, sizeof url, "%s%s", (const char *)g_ptr_array_index(e->endpoints, op->ep), op->path);
  curl_easy_setopt(easy, CURLOPT_URL, url);
  curl_easy_setopt(easy, CURLOPT_PRIVATE, op);
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, e->headers);
  curl_easy_setopt(easy, CURLOPT_POST, 1L);
  curl_easy_setopt(easy, CURLOPT_POSTFIELDS, op->body);
  curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)op->body_len);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, op);
  curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long)MIN(attempt, 1000));
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  if (op->watch) {
    op->due = now + attempt; /* the time "created" must come by */
    ((dir_etcd_watch_t *)op)->created = 0;
    curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(easy, CURLOPT_XFERINFODATA, op);
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
  } else {
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)attempt);
  }
  CURLMcode mc = curl_multi_add_handle(e->multi, easy);
  if (mc != CURLM_OK) {
    op->easy = NULL;
    curl_easy_cleanup(easy);
    op_fail(op, MAYFLY_EIO, curl_multi_strerror(mc));
  }
}

static op_t *op_new(dir_etcd_t *e, dir_etcd_op_t kind, const char *path, JsonObject *body, dir_etcd_cb cb,
                    void *ud, size_t size) {
  op_t *op = g_malloc0(size);
  op->e = e;
  op->kind = kind;
  op->path = path;
  op->body = to_json(body, &op->body_len);
  op->resp = g_byte_array_new();
  op->cb = cb;
  op->ud = ud;
  op->ep = e->cur;
  op->deadline = now_ms(e) + e->timeout_ms;
  dir_etcd_result_init(&op->res);
  e->ops = g_list_prepend(e->ops, op);
  return op;
}

/* Sends a request. Never calls cb before returning: even a request that
 * cannot start waits for the loop. */
static void submit(dir_etcd_t *e, dir_etcd_op_t kind, const char *path, JsonObject *body, dir_etcd_cb cb,
                   void *ud) {
  op_t *op = op_new(e, kind, path, body, cb, ud, sizeof(op_t));
  op_wait(op, 0);
}

/* A finished transfer of a request: its result, or another attempt. */
static void request_done(op_t *op, CURLcode cc) {
  long status = 0;
  curl_easy_getinfo(op->easy, CURLINFO_RESPONSE_CODE, &status);
  if (op->too_big) {
    op_fail(op, MAYFLY_EPROTO, "etcd: reply larger than the 64 MiB cap");
    return;
  }
  if (cc != CURLE_OK && !(op->first_line && cc == CURLE_WRITE_ERROR)) {
    char why[256];
    snprintf(why, sizeof why, "%s: %s", (const char *)g_ptr_array_index(op->e->endpoints, op->ep),
             curl_easy_strerror(cc));
    op_retry(op, cc == CURLE_OPERATION_TIMEDOUT ? MAYFLY_ETIMEDOUT : MAYFLY_EIO, why);
    return;
  }
  int retry = 0;
  dir_etcd_result_clear(&op->res);
  dir_etcd_result_init(&op->res);
  int rc = dir_etcd_parse_reply(op->kind, (const char *)op->resp->data, op->resp->len, &op->res, &retry);
  if ((rc != 0 && retry) || (rc != 0 && status >= 500 && op->res.rc != MAYFLY_ETOOBIG)) {
    char why[512];
    snprintf(why, sizeof why, "%s: HTTP %ld: %.300s", (const char *)g_ptr_array_index(op->e->endpoints, op->ep),
             status, op->res.why);
    op_retry(op, MAYFLY_EIO, why);
    return;
  }
  op->e->cur = op->ep;
  op_finish(op);
}

/* ---- watches ------------------------------------------------------------ */

static JsonObject *watch_body(dir_etcd_watch_t *w) {
  JsonObject *cr = json_object_new();
  add_b64(cr, "key", w->key, strlen(w->key));
  if (w->range_end != NULL) add_b64(cr, "range_end", w->range_end, strlen(w->range_end));
  if (w->next_rev > 0) add_i64(cr, "start_revision", w->next_rev);
  json_object_set_boolean_member(cr, "progress_notify", TRUE);
  JsonObject *o = json_object_new();
  json_object_set_object_member(o, "create_request", cr);
  return o;
}

/* Ends the watch with rc: its callback is told once, then nothing more. */
static void watch_end(dir_etcd_watch_t *w, int rc, const dir_etcd_result_t *why) {
  release_easy(w->op.e, &w->op);
  w->ended = 1;
  w->pending = 0;
  if (!w->canceled) w->wcb(NULL, 0, 0, rc, why, w->wud);
}

/* The stream broke or ended: open it again (next endpoint, from the
 * revision after the last delivered) or, past the deadline, end the watch. */
static void watch_lost(dir_etcd_watch_t *w, const char *why) {
  dir_etcd_t *e = w->op.e;
  op_t *op = &w->op;
  release_easy(e, op);
  int64_t now = now_ms(e);
  if (w->lost_at == 0) {
    w->lost_at = now;
    op->tried = 0;
  }
  g_strlcpy(op->last_why, why, sizeof op->last_why);
  int n = (int)e->endpoints->len;
  op->ep = (op->ep + 1) % n;
  int64_t delay = 0;
  if (op->tried > 0 && op->tried % n == 0) delay = MIN(50 << MIN(op->tried / n - 1, 3), 500);
  if (now + delay - w->lost_at >= e->timeout_ms) {
    dir_etcd_result_t r;
    dir_etcd_result_init(&r);
    r.rc = MAYFLY_EIO;
    snprintf(r.why, sizeof r.why, "etcd: watch stream lost and not reopened within %" G_GINT64_FORMAT " ms: %s",
             (gint64)e->timeout_ms, why);
    watch_end(w, MAYFLY_EIO, &r);
    dir_etcd_result_clear(&r);
    return;
  }
  g_free(op->body);
  JsonObject *body = watch_body(w);
  op->body = to_json(body, &op->body_len);
  op_wait(op, delay);
}

/* Delivers the complete lines buffered for w; stops when the caller cancels
 * the watch or frees the client. Returns 1 when a line said the member is
 * unavailable and the stream was dropped to be reopened elsewhere. */
static int watch_deliver(dir_etcd_watch_t *w) {
  dir_etcd_t *e = w->op.e;
  GByteArray *buf = w->op.resp;
  w->pending = 0;
  size_t start = 0;
  char lost[512] = "";
  while (!w->canceled && !w->ended && !e->dead && lost[0] == '\0') {
    if (start >= buf->len) break;
    const guint8 *nl = memchr(buf->data + start, '\n', buf->len - start);
    if (nl == NULL) break;
    size_t len = (size_t)(nl - (buf->data + start));
    const char *line = (const char *)buf->data + start;
    start += len + 1;
    if (len == 0 || (len == 1 && line[0] == '\r')) continue;
    dir_etcd_watch_msg_t m;
    dir_etcd_watch_msg_init(&m);
    int rc = dir_etcd_parse_watch_line(line, len, &m);
    dir_etcd_result_t r;
    dir_etcd_result_init(&r);
    if (rc == 0 && m.canceled && m.retry) {
      g_strlcpy(lost, m.why, sizeof lost);
    } else if (rc != 0 || m.canceled) {
      r.rc = MAYFLY_EPROTO;
      r.compacted = m.compacted;
      r.compact_revision = m.compact_revision;
      r.revision = m.revision;
      g_strlcpy(r.why, m.why, sizeof r.why);
      watch_end(w, MAYFLY_EPROTO, &r);
    } else {
      w->lost_at = 0;
      if (m.created) w->created = 1;
      if (m.events->len > 0) {
        dir_etcd_event_t *last = &g_array_index(m.events, dir_etcd_event_t, m.events->len - 1);
        if (last->kv.mod_revision >= w->next_rev) w->next_rev = last->kv.mod_revision + 1;
        w->wcb((dir_etcd_event_t *)(void *)m.events->data, m.events->len, m.revision, 0, NULL, w->wud);
      } else if (!m.created && m.revision > 0) {
        /* A progress notification: everything up to m.revision was sent. */
        if (m.revision >= w->next_rev) w->next_rev = m.revision + 1;
        w->wcb(NULL, 0, m.revision, 0, NULL, w->wud);
      }
    }
    dir_etcd_result_clear(&r);
    dir_etcd_watch_msg_clear(&m);
  }
  if (!e->dead && !w->canceled) g_byte_array_remove_range(buf, 0, (guint)MIN(start, buf->len));
  if (lost[0] != '\0' && !e->dead && !w->canceled && !w->ended) {
    watch_lost(w, lost);
    return 1;
  }
  return 0;
}

static void watch_done(dir_etcd_watch_t *w, CURLcode cc) {
  /* Lines that came before the end count first; so does a last object
   * without its newline (an error reply such as {"error": ..., "code": 3}
   * ends the watch rather than being retried). */
  if (!w->op.too_big && w->op.resp->len > 0 && w->op.resp->data[w->op.resp->len - 1] != '\n') {
    g_byte_array_append(w->op.resp, (const guint8 *)"\n", 1);
  }
  if (watch_deliver(w)) return;
  if (w->canceled || w->ended || w->op.e->dead) return;
  if (w->op.too_big) {
    dir_etcd_result_t r;
    dir_etcd_result_init(&r);
    r.rc = MAYFLY_EPROTO;
    g_strlcpy(r.why, "etcd: watch message larger than the 64 MiB cap", sizeof r.why);
    watch_end(w, MAYFLY_EPROTO, &r);
    dir_etcd_result_clear(&r);
    return;
  }
  char why[256];
  snprintf(why, sizeof why, "%s: %s", (const char *)g_ptr_array_index(w->op.e->endpoints, w->op.ep),
           cc == CURLE_OK ? "the stream ended" : curl_easy_strerror(cc));
  watch_lost(w, why);
}

dir_etcd_watch_t *dir_etcd_watch(dir_etcd_t *e, const char *key, const char *range_end,
                                 int64_t start_revision, dir_etcd_watch_cb cb, void *ud) {
  JsonObject *placeholder = json_object_new();
  dir_etcd_watch_t *w = (dir_etcd_watch_t *)op_new(e, DIR_ETCD_OP_RANGE, "/v3/watch", placeholder, NULL, NULL,
                                                   sizeof(dir_etcd_watch_t));
  w->op.watch = 1;
  w->key = g_strdup(key);
  w->range_end = range_end != NULL ? g_strdup(range_end) : NULL;
  w->next_rev = start_revision;
  w->wcb = cb;
  w->wud = ud;
  g_free(w->op.body);
  w->op.body = to_json(watch_body(w), &w->op.body_len);
  op_wait(&w->op, 0);
  return w;
}

void dir_etcd_watch_cancel(dir_etcd_watch_t *w) {
  if (w == NULL || w->canceled) return;
  dir_etcd_t *e = w->op.e;
  w->canceled = 1;
  release_easy(e, &w->op);
  if (w->op.state == OP_WAITING) g_queue_remove(&e->waiting, w);
  if (w->op.state == OP_DONE) g_queue_remove(&e->done, w);
  w->op.state = OP_DONE;
  /* Inside dispatch the watch may be on the stack: free it at its end. */
  if (e->depth == 0) op_free(&w->op);
}

/* ---- dispatch ------------------------------------------------------------- */

static void teardown(dir_etcd_t *e);

static void dispatch(dir_etcd_t *e) {
  if (e->dead) return;
  e->depth++;
  CURLMsg *msg;
  int left;
  while (!e->dead && (msg = curl_multi_info_read(e->multi, &left)) != NULL) {
    if (msg->msg != CURLMSG_DONE) continue;
    op_t *op = NULL;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&op);
    CURLcode cc = msg->data.result;
    if (op == NULL || op->easy != msg->easy_handle) continue;
    if (op->watch) {
      watch_done((dir_etcd_watch_t *)op, cc);
    } else {
      request_done(op, cc);
    }
  }
  /* Lines that arrived on streams still open. */
  for (GList *l = e->ops; l != NULL && !e->dead; l = l->next) {
    op_t *op = l->data;
    if (op->watch && ((dir_etcd_watch_t *)op)->pending) watch_deliver((dir_etcd_watch_t *)op);
  }
  op_t *op;
  while (!e->dead && (op = g_queue_pop_head(&e->done)) != NULL) {
    if (op->watch) {
      /* A watch whose stream could not even be set up. */
      watch_end((dir_etcd_watch_t *)op, op->res.rc, &op->res);
    } else {
      op->cb(&op->res, op->ud);
      op_free(op);
    }
  }
  e->depth--;
  if (e->depth == 0) {
    if (e->dead) {
      teardown(e);
      return;
    }
    /* Watches canceled from inside their callbacks. */
    for (GList *l = e->ops, *next; l != NULL; l = next) {
      next = l->next;
      op_t *o = l->data;
      if (o->watch && ((dir_etcd_watch_t *)o)->canceled) op_free(o);
    }
  }
}

/* ---- the client ----------------------------------------------------------- */

static gpointer curl_init_once(gpointer unused) {
  return GINT_TO_POINTER(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 1 : 2);
}

int dir_etcd_new(uv_loop_t *loop, const char *endpoints, int64_t timeout_ms, dir_etcd_t **out, char *why,
                 size_t whylen) {
  static GOnce once = G_ONCE_INIT;
  *out = NULL;
  if (timeout_ms < 1) {
    set_why(why, whylen, "etcd timeout must be at least 1 ms");
    return MAYFLY_EINVAL;
  }
  GPtrArray *eps = g_ptr_array_new_with_free_func(g_free);
  char **parts = g_strsplit(endpoints != NULL ? endpoints : "", ",", -1);
  for (char **p = parts; *p != NULL; p++) {
    char *u = g_strstrip(g_strdup(*p));
    size_t n = strlen(u);
    while (n > 0 && u[n - 1] == '/') u[--n] = '\0';
    const char *host = g_str_has_prefix(u, "http://") ? u + 7 : g_str_has_prefix(u, "https://") ? u + 8 : NULL;
    if (host == NULL || *host == '\0' || strchr(host, '/') != NULL || n > 256) {
      set_why(why, whylen, "bad etcd endpoint \"%s\" (want http://HOST:PORT)", *p);
      g_free(u);
      g_strfreev(parts);
      g_ptr_array_free(eps, TRUE);
      return MAYFLY_EINVAL;
    }
    g_ptr_array_add(eps, u);
  }
  g_strfreev(parts);
  if (eps->len == 0 || eps->len > MAX_ENDPOINTS) {
    set_why(why, whylen, "want 1 to %d etcd endpoints, got %u", MAX_ENDPOINTS, eps->len);
    g_ptr_array_free(eps, TRUE);
    return MAYFLY_EINVAL;
  }
  if (GPOINTER_TO_INT(g_once(&once, curl_init_once, NULL)) != 1) {
    set_why(why, whylen, "curl_global_init failed");
    g_ptr_array_free(eps, TRUE);
    return MAYFLY_ENOMEM;
  }
  dir_etcd_t *e = g_new0(dir_etcd_t, 1);
  e->loop = loop;
  e->endpoints = eps;
  e->timeout_ms = timeout_ms;
  e->multi = curl_multi_init();
  if (e->multi == NULL) {
    set_why(why, whylen, "curl_multi_init failed");
    g_ptr_array_free(eps, TRUE);
    g_free(e);
    return MAYFLY_ENOMEM;
  }
  g_queue_init(&e->waiting);
  g_queue_init(&e->done);
  e->idle = g_ptr_array_new();
  /* No "Expect: 100-continue" wait before large bodies. */
  e->headers = curl_slist_append(NULL, "Content-Type: application/json");
  e->headers = curl_slist_append(e->headers, "Expect:");
  curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
  curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, e);
  curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, e);
  /* Enough kept-alive connections for the log's transactions in flight and
   * the watches and keepalives beside them. */
  curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, 64L);
  uv_timer_init(loop, &e->curl_timer);
  uv_timer_init(loop, &e->wait_timer);
  e->curl_timer.data = e;
  e->wait_timer.data = e;
  e->open_handles = 2;
  *out = e;
  return 0;
}

int64_t dir_etcd_timeout_ms(const dir_etcd_t *e) {
  return e->timeout_ms;
}

static void timer_closed(uv_handle_t *h) {
  dir_etcd_t *e = h->data;
  if (--e->open_handles == 0) g_free(e);
}

static void teardown(dir_etcd_t *e) {
  while (e->ops != NULL) op_free(e->ops->data);
  g_queue_clear(&e->waiting);
  g_queue_clear(&e->done);
  for (guint i = 0; i < e->idle->len; i++) curl_easy_cleanup(g_ptr_array_index(e->idle, i));
  g_ptr_array_free(e->idle, TRUE);
  /* The multi's cleanup closes the cached connections and may tell us to
   * drop their sockets first. */
  curl_multi_cleanup(e->multi);
  while (e->socks != NULL) sock_drop(e, e->socks->data);
  curl_slist_free_all(e->headers);
  g_ptr_array_free(e->endpoints, TRUE);
  uv_close((uv_handle_t *)&e->curl_timer, timer_closed);
  uv_close((uv_handle_t *)&e->wait_timer, timer_closed);
}

void dir_etcd_free(dir_etcd_t *e) {
  if (e == NULL || e->dead) return;
  e->dead = 1;
  if (e->depth == 0) teardown(e);
}

/* ---- requests --------------------------------------------------------------- */

struct dir_etcd_txn {
  JsonArray *compare, *success, *failure;
  size_t size;
};

dir_etcd_txn_t *dir_etcd_txn_new(void) {
  dir_etcd_txn_t *t = g_new0(dir_etcd_txn_t, 1);
  t->compare = json_array_new();
  t->success = json_array_new();
  t->failure = json_array_new();
  return t;
}

void dir_etcd_txn_free(dir_etcd_txn_t *t) {
  if (t == NULL) return;
  if (t->compare != NULL) json_array_unref(t->compare);
  if (t->success != NULL) json_array_unref(t->success);
  if (t->failure != NULL) json_array_unref(t->failure);
  g_free(t);
}

size_t dir_etcd_txn_size(const dir_etcd_txn_t *t) {
  return t->size;
}

static void txn_cmp(dir_etcd_txn_t *t, const char *key, const char *target, const char *field, int64_t rev) {
  JsonObject *c = json_object_new();
  add_b64(c, "key", key, strlen(key));
  json_object_set_string_member(c, "target", target);
  json_object_set_string_member(c, "result", "EQUAL");
  add_i64(c, field, rev);
  json_array_add_object_element(t->compare, c);
  t->size += strlen(key);
}

void dir_etcd_txn_cmp_create(dir_etcd_txn_t *t, const char *key, int64_t create_revision) {
  txn_cmp(t, key, "CREATE", "create_revision", create_revision);
}

void dir_etcd_txn_cmp_mod(dir_etcd_txn_t *t, const char *key, int64_t mod_revision) {
  txn_cmp(t, key, "MOD", "mod_revision", mod_revision);
}

static void txn_op(dir_etcd_txn_t *t, int on_failure, const char *name, JsonObject *req) {
  JsonObject *o = json_object_new();
  json_object_set_object_member(o, name, req);
  json_array_add_object_element(on_failure ? t->failure : t->success, o);
}

static JsonObject *put_body(const char *key, const void *val, size_t len, int64_t lease) {
  JsonObject *p = json_object_new();
  add_b64(p, "key", key, strlen(key));
  add_b64(p, "value", val, len);
  if (lease != 0) add_i64(p, "lease", lease);
  return p;
}

static JsonObject *range_body(const char *key, const char *range_end, int64_t revision, int64_t limit) {
  JsonObject *r = json_object_new();
  add_b64(r, "key", key, strlen(key));
  if (range_end != NULL) add_b64(r, "range_end", range_end, strlen(range_end));
  if (revision > 0) add_i64(r, "revision", revision);
  if (limit > 0) add_i64(r, "limit", limit);
  return r;
}

static JsonObject *delete_body(const char *key, const char *range_end) {
  JsonObject *d = json_object_new();
  add_b64(d, "key", key, strlen(key));
  if (range_end != NULL) add_b64(d, "range_end", range_end, strlen(range_end));
  return d;
}

void dir_etcd_txn_put(dir_etcd_txn_t *t, int on_failure, const char *key, const void *val, size_t len,
                      int64_t lease) {
  txn_op(t, on_failure, "request_put", put_body(key, val, len, lease));
  t->size += strlen(key) + len;
}

void dir_etcd_txn_delete(dir_etcd_txn_t *t, int on_failure, const char *key, const char *range_end) {
  txn_op(t, on_failure, "request_delete_range", delete_body(key, range_end));
  t->size += strlen(key) + (range_end != NULL ? strlen(range_end) : 0);
}

void dir_etcd_txn_get_range(dir_etcd_txn_t *t, int on_failure, const char *key, const char *range_end,
                            int64_t limit) {
  txn_op(t, on_failure, "request_range", range_body(key, range_end, 0, limit));
  t->size += strlen(key) + (range_end != NULL ? strlen(range_end) : 0);
}

void dir_etcd_txn_get(dir_etcd_txn_t *t, int on_failure, const char *key) {
  dir_etcd_txn_get_range(t, on_failure, key, NULL, 0);
}

void dir_etcd_txn(dir_etcd_t *e, dir_etcd_txn_t *t, dir_etcd_cb cb, void *ud) {
  JsonObject *o = json_object_new();
  json_object_set_array_member(o, "compare", t->compare);
  json_object_set_array_member(o, "success", t->success);
  json_object_set_array_member(o, "failure", t->failure);
  t->compare = t->success = t->failure = NULL; /* moved into o */
  dir_etcd_txn_free(t);
  submit(e, DIR_ETCD_OP_TXN, "/v3/kv/txn", o, cb, ud);
}

void dir_etcd_range(dir_etcd_t *e, const char *key, const char *range_end, int64_t revision, int64_t limit,
                    dir_etcd_cb cb, void *ud) {
  submit(e, DIR_ETCD_OP_RANGE, "/v3/kv/range", range_body(key, range_end, revision, limit), cb, ud);
}

void dir_etcd_put(dir_etcd_t *e, const char *key, const void *val, size_t len, int64_t lease, dir_etcd_cb cb,
                  void *ud) {
  submit(e, DIR_ETCD_OP_PUT, "/v3/kv/put", put_body(key, val, len, lease), cb, ud);
}

void dir_etcd_delete(dir_etcd_t *e, const char *key, const char *range_end, dir_etcd_cb cb, void *ud) {
  submit(e, DIR_ETCD_OP_DELETE, "/v3/kv/deleterange", delete_body(key, range_end), cb, ud);
}

void dir_etcd_compact(dir_etcd_t *e, int64_t revision, dir_etcd_cb cb, void *ud) {
  JsonObject *o = json_object_new();
  add_i64(o, "revision", revision);
  submit(e, DIR_ETCD_OP_COMPACT, "/v3/kv/compaction", o, cb, ud);
}

void dir_etcd_lease_grant(dir_etcd_t *e, int64_t ttl_s, dir_etcd_cb cb, void *ud) {
  JsonObject *o = json_object_new();
  add_i64(o, "TTL", ttl_s);
  submit(e, DIR_ETCD_OP_GRANT, "/v3/lease/grant", o, cb, ud);
}

void dir_etcd_lease_keepalive(dir_etcd_t *e, int64_t lease_id, dir_etcd_cb cb, void *ud) {
  JsonObject *o = json_object_new();
  add_i64(o, "ID", lease_id);
  submit(e, DIR_ETCD_OP_KEEPALIVE, "/v3/lease/keepalive", o, cb, ud);
}

void dir_etcd_lease_revoke(dir_etcd_t *e, int64_t lease_id, dir_etcd_cb cb, void *ud) {
  JsonObject *o = json_object_new();
  add_i64(o, "ID", lease_id);
  submit(e, DIR_ETCD_OP_REVOKE, "/v3/lease/revoke", o, cb, ud);
}
