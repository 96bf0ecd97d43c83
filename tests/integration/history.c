/*
 * The HA tests' workload and history checker (see history.h).
 */
#include "history.h"

#include <glib.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"
#include "ha.h"

#define MAX_LEAVES 8  /* leaf slots per namespace thread */
#define WRITER_KEYS 48 /* keys each data thread overwrites */
#define SHOW 10       /* violations printed per kind */

typedef enum { OP_MKDIR, OP_CREATE_KV, OP_REMOVE, OP_PUT } opkind_t;

typedef struct {
  opkind_t kind;
  int rc;
  int64_t t0, t1;
  char *path;  /* the node, or the kv namespace of a put */
  char *key;   /* puts */
  char *value; /* puts */
} op_t;

/* One thread's operations, in the order it made them. Only its thread
 * appends; the checker reads it while every thread is parked or joined. */
typedef struct {
  GArray *ops; /* op_t */
} hlog_t;

typedef struct {
  int64_t from, to;
} window_t;

struct mf_hist {
  GMutex lock;    /* logs and windows (the arrays, not a log's contents) */
  GPtrArray *logs; /* hlog_t * */
  GArray *windows; /* window_t */
  int nwriters;
};

static void op_clear(gpointer p) {
  op_t *o = p;
  g_free(o->path);
  g_free(o->key);
  g_free(o->value);
}

static void hlog_free(gpointer p) {
  hlog_t *l = p;
  g_array_free(l->ops, TRUE);
  g_free(l);
}

mf_hist_t *mf_hist_new(void) {
  mf_hist_t *h = g_new0(mf_hist_t, 1);
  g_mutex_init(&h->lock);
  h->logs = g_ptr_array_new_with_free_func(hlog_free);
  h->windows = g_array_new(FALSE, FALSE, sizeof(window_t));
  return h;
}

void mf_hist_free(mf_hist_t *h) {
  if (h == NULL) return;
  g_ptr_array_free(h->logs, TRUE);
  g_array_free(h->windows, TRUE);
  g_mutex_clear(&h->lock);
  g_free(h);
}

static hlog_t *hist_log(mf_hist_t *h) {
  hlog_t *l = g_new0(hlog_t, 1);
  l->ops = g_array_new(FALSE, TRUE, sizeof(op_t));
  g_array_set_clear_func(l->ops, op_clear);
  g_mutex_lock(&h->lock);
  g_ptr_array_add(h->logs, l);
  g_mutex_unlock(&h->lock);
  return l;
}

static void log_op(hlog_t *l, opkind_t kind, int rc, int64_t t0, const char *path,
                   const char *key, const char *value) {
  op_t o = {.kind = kind,
            .rc = rc,
            .t0 = t0,
            .t1 = mf_ha_now_ms(),
            .path = g_strdup(path),
            .key = g_strdup(key),
            .value = g_strdup(value)};
  g_array_append_val(l->ops, o);
}

void mf_hist_allow_errors(mf_hist_t *h, int64_t from_ms, int64_t to_ms) {
  window_t w = {from_ms, to_ms};
  g_mutex_lock(&h->lock);
  g_array_append_val(h->windows, w);
  g_mutex_unlock(&h->lock);
}

static int in_window(mf_hist_t *h, int64_t t) {
  for (guint i = 0; i < h->windows->len; i++) {
    window_t *w = &g_array_index(h->windows, window_t, i);
    if (t >= w->from && t <= w->to) return 1;
  }
  return 0;
}

/* --- replay --- */

typedef enum { S_ABSENT, S_PRESENT, S_UNKNOWN } state_t;

static const char *state_name(state_t s) {
  return s == S_ABSENT ? "absent" : s == S_PRESENT ? "present" : "unknown";
}

static const char *op_name(opkind_t k) {
  return k == OP_MKDIR ? "mkdir" : k == OP_CREATE_KV ? "create kv" : k == OP_REMOVE ? "remove" : "put";
}

typedef struct {
  state_t state;
  int kv; /* created as kv (present or unknown) */
} node_t;

/* Whether op o (a create or remove) is a definite answer that is not an
 * error: EEXIST / ENOENT resolving an unknown state. */
static int definite(const op_t *o, state_t before) {
  if (before != S_UNKNOWN) return 0;
  return (o->kind != OP_REMOVE && o->rc == MAYFLY_EEXIST) ||
         (o->kind == OP_REMOVE && o->rc == MAYFLY_ENOENT);
}

/* Replays every create and remove into path -> node_t (g_free'd values);
 * returns the violations seen on the way (printed). */
static int replay_tree(mf_hist_t *h, GHashTable *nodes) {
  int bad = 0;
  for (guint li = 0; li < h->logs->len; li++) {
    hlog_t *l = g_ptr_array_index(h->logs, li);
    for (guint k = 0; k < l->ops->len; k++) {
      op_t *o = &g_array_index(l->ops, op_t, k);
      if (o->kind == OP_PUT) continue;
      node_t *n = g_hash_table_lookup(nodes, o->path);
      if (n == NULL) {
        n = g_new0(node_t, 1);
        n->state = S_ABSENT;
        g_hash_table_insert(nodes, g_strdup(o->path), n);
      }
      state_t before = n->state;
      const char *wrong = NULL;
      if (o->kind == OP_REMOVE) {
        if (o->rc == 0) {
          if (before == S_ABSENT) wrong = "a remove succeeded on a path acknowledged absent (phantom)";
          n->state = S_ABSENT;
        } else if (o->rc == MAYFLY_ENOENT) {
          if (before == S_PRESENT) wrong = "ENOENT on a path acknowledged present (a lost create)";
          n->state = S_ABSENT;
        } else {
          n->state = S_UNKNOWN;
        }
      } else {
        if (o->rc == 0) {
          if (before == S_PRESENT) wrong = "a create succeeded on a path acknowledged present";
          n->state = S_PRESENT;
          n->kv = o->kind == OP_CREATE_KV;
        } else if (o->rc == MAYFLY_EEXIST) {
          if (before == S_ABSENT) wrong = "EEXIST on a path acknowledged absent (phantom or lost remove)";
          n->state = S_PRESENT;
        } else {
          n->state = S_UNKNOWN;
          n->kv = o->kind == OP_CREATE_KV;
        }
      }
      if (wrong != NULL) {
        if (bad++ < SHOW) {
          fprintf(stderr, "  history: %s %s (rc %s, t %lld..%lld ms, was %s): %s\n", op_name(o->kind),
                  o->path, mayfly_err_name(o->rc), (long long)o->t0, (long long)o->t1,
                  state_name(before), wrong);
        }
      }
    }
  }
  return bad;
}

int mf_hist_check_errors(mf_hist_t *h) {
  int bad = 0;
  GHashTable *nodes = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  for (guint li = 0; li < h->logs->len; li++) {
    hlog_t *l = g_ptr_array_index(h->logs, li);
    for (guint k = 0; k < l->ops->len; k++) {
      op_t *o = &g_array_index(l->ops, op_t, k);
      state_t before = S_ABSENT;
      if (o->kind != OP_PUT) {
        node_t *n = g_hash_table_lookup(nodes, o->path);
        if (n == NULL) {
          n = g_new0(node_t, 1);
          g_hash_table_insert(nodes, g_strdup(o->path), n);
        }
        before = n->state;
        n->state = o->rc == 0 || definite(o, before)
                       ? (o->kind == OP_REMOVE ? S_ABSENT : S_PRESENT)
                       : (o->rc == MAYFLY_EEXIST ? S_PRESENT
                                                 : o->rc == MAYFLY_ENOENT ? S_ABSENT : S_UNKNOWN);
      }
      if (o->rc == 0 || (o->kind != OP_PUT && definite(o, before))) continue;
      if (in_window(h, o->t1)) continue;
      if (bad++ < SHOW) {
        fprintf(stderr, "  history: %s %s%s%s failed with %s at %lld ms (started %lld), outside every fault window\n",
                op_name(o->kind), o->path, o->key ? " key " : "", o->key ? o->key : "",
                mayfly_err_name(o->rc), (long long)o->t1, (long long)o->t0);
      }
    }
  }
  g_hash_table_destroy(nodes);
  if (bad > 0) {
    for (guint i = 0; i < h->windows->len; i++) {
      window_t *w = &g_array_index(h->windows, window_t, i);
      fprintf(stderr, "  history: fault window %lld..%lld ms\n", (long long)w->from, (long long)w->to);
    }
    fprintf(stderr, "  history: %d failed calls outside the fault windows\n", bad);
  }
  return bad;
}

/* Lists `path` recursively through c into seen (path -> kind + 1). */
static int walk(mayfly_client_t *c, const char *path, GHashTable *seen) {
  mayfly_stat_t **kids = NULL;
  size_t n = 0;
  int rc = mayfly_list(c, path, &kids, &n);
  if (rc != 0) {
    fprintf(stderr, "  history: list %s: %s (%s)\n", path, mayfly_err_name(rc), mayfly_last_error());
    return 1;
  }
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    g_hash_table_insert(seen, g_strdup(kids[i]->path), GINT_TO_POINTER((int)kids[i]->kind + 1));
    if (kids[i]->kind == MAYFLY_KIND_DIRECTORY && kids[i]->children > 0) {
      bad += walk(c, kids[i]->path, seen);
    }
  }
  mayfly_stat_list_free(kids, n);
  return bad;
}

int mf_hist_check_tree(mf_hist_t *h, mayfly_client_t *c) {
  GHashTable *nodes = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  int bad = replay_tree(h, nodes);
  GHashTable *seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  g_hash_table_insert(seen, g_strdup("/h"), GINT_TO_POINTER(MAYFLY_KIND_DIRECTORY + 1));
  bad += walk(c, "/h", seen);
  int lost = 0, phantom = 0, present = 0;
  GHashTableIter it;
  gpointer k, v;
  /* Every path acknowledged present is listed (and stat finds it); none
   * acknowledged absent is. */
  g_hash_table_iter_init(&it, nodes);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    node_t *n = v;
    int listed = g_hash_table_contains(seen, k);
    if (n->state == S_PRESENT) {
      present++;
      mayfly_stat_t *st = NULL;
      int rc = mayfly_stat(c, k, &st);
      if (!listed || rc != 0) {
        if (lost++ < SHOW) {
          fprintf(stderr, "  history: %s was acknowledged created and not removed, but is %s (stat: %s)\n",
                  (char *)k, listed ? "listed" : "not listed", mayfly_err_name(rc));
        }
      } else if (n->kv && st->kind != MAYFLY_KIND_KV) {
        if (lost++ < SHOW) fprintf(stderr, "  history: %s was created as kv but is %s\n", (char *)k, mayfly_kind_name(st->kind));
      }
      mayfly_stat_free(st);
    } else if (n->state == S_ABSENT && listed) {
      if (phantom++ < SHOW) {
        fprintf(stderr, "  history: %s is listed, but its last acknowledged operation removed it (phantom)\n",
                (char *)k);
      }
    }
  }
  /* Nothing listed that no thread created. */
  g_hash_table_iter_init(&it, seen);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    if (!g_hash_table_contains(nodes, k)) {
      if (phantom++ < SHOW) fprintf(stderr, "  history: %s is listed, but no client created it (phantom)\n", (char *)k);
    }
  }
  if (lost + phantom > 0) {
    fprintf(stderr, "  history: tree: %d paths acknowledged present, %d listed, %d lost, %d phantoms\n",
            present, g_hash_table_size(seen), lost, phantom);
  }
  g_hash_table_destroy(seen);
  g_hash_table_destroy(nodes);
  return bad + lost + phantom;
}

/* --- data --- */

typedef struct {
  char *acked;     /* last acknowledged value (NULL none) */
  GPtrArray *unknown; /* failed puts after it (char *) */
} kstate_t;

static void kstate_free(gpointer p) {
  kstate_t *s = p;
  g_free(s->acked);
  g_ptr_array_free(s->unknown, TRUE);
  g_free(s);
}

int mf_hist_check_data(mf_hist_t *h, mayfly_client_t *c) {
  /* ns path -> (key -> kstate_t) */
  GHashTable *spaces = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)g_hash_table_destroy);
  for (guint li = 0; li < h->logs->len; li++) {
    hlog_t *l = g_ptr_array_index(h->logs, li);
    for (guint k = 0; k < l->ops->len; k++) {
      op_t *o = &g_array_index(l->ops, op_t, k);
      if (o->kind != OP_PUT) continue;
      GHashTable *keys = g_hash_table_lookup(spaces, o->path);
      if (keys == NULL) {
        keys = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, kstate_free);
        g_hash_table_insert(spaces, g_strdup(o->path), keys);
      }
      kstate_t *s = g_hash_table_lookup(keys, o->key);
      if (s == NULL) {
        s = g_new0(kstate_t, 1);
        s->unknown = g_ptr_array_new_with_free_func(g_free);
        g_hash_table_insert(keys, g_strdup(o->key), s);
      }
      if (o->rc == 0) {
        g_free(s->acked);
        s->acked = g_strdup(o->value);
        g_ptr_array_set_size(s->unknown, 0);
      } else {
        g_ptr_array_add(s->unknown, g_strdup(o->value));
      }
    }
  }
  int bad = 0, checked = 0;
  GHashTableIter it;
  gpointer path, keys;
  g_hash_table_iter_init(&it, spaces);
  while (g_hash_table_iter_next(&it, &path, &keys)) {
    mayfly_ns_t *ns = NULL;
    int rc = mayfly_mount(c, path, MAYFLY_KIND_KV, NULL, &ns);
    if (rc != 0) {
      fprintf(stderr, "  history: mount %s: %s (%s)\n", (char *)path, mayfly_err_name(rc), mayfly_last_error());
      bad++;
      continue;
    }
    GHashTableIter kit;
    gpointer key, sp;
    g_hash_table_iter_init(&kit, keys);
    while (g_hash_table_iter_next(&kit, &key, &sp)) {
      kstate_t *s = sp;
      void *val = NULL;
      size_t vlen = 0;
      rc = mayfly_kv_get(ns, key, strlen(key), &val, &vlen);
      checked++;
      char *got = rc == 0 ? g_strndup(val, vlen) : NULL;
      mayfly_free(val);
      int ok = 0;
      if (rc == 0) {
        ok = s->acked != NULL && strcmp(got, s->acked) == 0;
        for (guint u = 0; !ok && u < s->unknown->len; u++) ok = strcmp(got, g_ptr_array_index(s->unknown, u)) == 0;
      } else if (rc == MAYFLY_ENOKEY) {
        ok = s->acked == NULL;
      }
      if (!ok && bad++ < SHOW) {
        fprintf(stderr, "  history: %s key %s: read %s%s%s, last acknowledged put %s (%u failed puts after)\n",
                (char *)path, (char *)key, rc == 0 ? "\"" : mayfly_err_name(rc), rc == 0 ? got : "",
                rc == 0 ? "\"" : "", s->acked ? s->acked : "(none)", s->unknown->len);
      }
      g_free(got);
    }
    mayfly_unmount(ns);
  }
  if (bad > 0) fprintf(stderr, "  history: data: %d of %d keys wrong\n", bad, checked);
  g_hash_table_destroy(spaces);
  return bad;
}

void mf_hist_counts(mf_hist_t *h, int64_t *creates, int64_t *removes, int64_t *puts,
                    int64_t *errors) {
  int64_t c = 0, r = 0, p = 0, e = 0;
  for (guint li = 0; li < h->logs->len; li++) {
    hlog_t *l = g_ptr_array_index(h->logs, li);
    for (guint k = 0; k < l->ops->len; k++) {
      op_t *o = &g_array_index(l->ops, op_t, k);
      if (o->rc != 0) {
        e++;
      } else if (o->kind == OP_PUT) {
        p++;
      } else if (o->kind == OP_REMOVE) {
        r++;
      } else {
        c++;
      }
    }
  }
  if (creates) *creates = c;
  if (removes) *removes = r;
  if (puts) *puts = p;
  if (errors) *errors = e;
}

/* --- the workload --- */

typedef struct worker {
  struct mf_load *load;
  int index, writer;
  mayfly_client_t *c;
  hlog_t *log;
  GThread *thread;
  int parked;
  int done; /* returned early (a writer that could not mount) */
} worker_t;

struct mf_load {
  mf_hist_t *hist;
  GMutex lock;
  GCond cond;
  int pause, stop, nparked;
  int nworkers;
  worker_t *w;
  gint ops;
};

/* Parks while asked to; returns 0 once the run is over. */
static int gate(worker_t *w) {
  mf_load_t *l = w->load;
  g_mutex_lock(&l->lock);
  while (!l->stop && l->pause) {
    if (!w->parked) {
      w->parked = 1;
      l->nparked++;
      g_cond_broadcast(&l->cond);
    }
    g_cond_wait(&l->cond, &l->lock);
  }
  if (w->parked) {
    w->parked = 0;
    l->nparked--;
  }
  int go = !l->stop;
  g_mutex_unlock(&l->lock);
  return go;
}

static gpointer tree_main(gpointer p) {
  worker_t *w = p;
  GRand *rnd = g_rand_new_with_seed((guint32)(w->index * 7919 + 1));
  state_t st[MAX_LEAVES] = {0};
  while (gate(w)) {
    int k = g_rand_int_range(rnd, 0, MAX_LEAVES);
    char path[64];
    snprintf(path, sizeof path, "/h/t%d/n%d", w->index, k);
    int64_t t0 = mf_ha_now_ms();
    int rc;
    if (st[k] == S_ABSENT) {
      if (k % 2 == 0) {
        rc = mayfly_mkdir(w->c, path, 0);
        log_op(w->log, OP_MKDIR, rc, t0, path, NULL, NULL);
      } else {
        mayfly_create_options_t o = {.blocks = 1, .pinned = 1};
        rc = mayfly_create(w->c, path, MAYFLY_KIND_KV, &o, NULL);
        log_op(w->log, OP_CREATE_KV, rc, t0, path, NULL, NULL);
      }
      st[k] = rc == 0 || rc == MAYFLY_EEXIST ? S_PRESENT : S_UNKNOWN;
    } else {
      /* Present, or unknown: a remove settles it either way. */
      rc = mayfly_remove(w->c, path, 0);
      log_op(w->log, OP_REMOVE, rc, t0, path, NULL, NULL);
      st[k] = rc == 0 || rc == MAYFLY_ENOENT ? S_ABSENT : S_UNKNOWN;
    }
    g_atomic_int_inc(&w->load->ops);
    /* A breath between calls: the machine is shared, and the directories'
     * lease keepalives must not starve. */
    g_usleep(1000);
  }
  g_rand_free(rnd);
  return NULL;
}

static gpointer writer_main(gpointer p) {
  worker_t *w = p;
  char path[32];
  snprintf(path, sizeof path, "/h/w%d", w->index);
  mayfly_ns_t *ns = NULL;
  int rc = mayfly_mount(w->c, path, MAYFLY_KIND_KV, NULL, &ns);
  int64_t t0 = mf_ha_now_ms();
  if (rc != 0) {
    /* Logged as a failed put, so the error check reports it. */
    fprintf(stderr, "  history: writer %d: mount %s: %s (%s)\n", w->index, path, mayfly_err_name(rc),
            mayfly_last_error());
    log_op(w->log, OP_PUT, rc, t0, path, "mount", "");
    g_mutex_lock(&w->load->lock);
    w->done = 1;
    g_cond_broadcast(&w->load->cond);
    g_mutex_unlock(&w->load->lock);
    return NULL;
  }
  for (int seq = 0; gate(w); seq++) {
    char key[16], value[64];
    snprintf(key, sizeof key, "k%d", seq % WRITER_KEYS);
    snprintf(value, sizeof value, "w%d-%s-v%d", w->index, key, seq);
    t0 = mf_ha_now_ms();
    rc = mayfly_kv_put(ns, key, strlen(key), value, strlen(value));
    log_op(w->log, OP_PUT, rc, t0, path, key, value);
    g_atomic_int_inc(&w->load->ops);
    g_usleep(1000);
  }
  mayfly_unmount(ns);
  return NULL;
}

mf_load_t *mf_load_start(mf_hist_t *h, const char *directory, int ntree, int nwriters,
                         int prefill, int timeout_ms) {
  mayfly_options_t o = {.timeout_ms = timeout_ms, .connect_timeout_ms = 1000, .token = ""};
  mayfly_client_t *c = NULL;
  int rc = mayfly_connect(directory, &o, &c);
  if (rc != 0) {
    fprintf(stderr, "history: mayfly_connect(%s): %s (%s)\n", directory, mayfly_err_name(rc),
            mayfly_last_error());
    return NULL;
  }
  /* The setup's own log: /h, the subtrees, the data namespaces and the
   * data put before the run, checked like the rest. */
  hlog_t *setup = hist_log(h);
  int64_t t0 = mf_ha_now_ms();
  rc = mayfly_mkdir(c, "/h", 0);
  log_op(setup, OP_MKDIR, rc, t0, "/h", NULL, NULL);
  for (int i = 0; rc == 0 && i < ntree; i++) {
    char path[32];
    snprintf(path, sizeof path, "/h/t%d", i);
    t0 = mf_ha_now_ms();
    rc = mayfly_mkdir(c, path, 0);
    log_op(setup, OP_MKDIR, rc, t0, path, NULL, NULL);
  }
  for (int i = 0; rc == 0 && i < nwriters; i++) {
    char path[32];
    snprintf(path, sizeof path, "/h/w%d", i);
    mayfly_create_options_t co = {.blocks = 1, .pinned = 1};
    t0 = mf_ha_now_ms();
    rc = mayfly_create(c, path, MAYFLY_KIND_KV, &co, NULL);
    log_op(setup, OP_CREATE_KV, rc, t0, path, NULL, NULL);
    mayfly_ns_t *ns = NULL;
    if (rc == 0) rc = mayfly_mount(c, path, MAYFLY_KIND_KV, NULL, &ns);
    for (int k = 0; rc == 0 && k < prefill; k++) {
      char key[16], value[64];
      snprintf(key, sizeof key, "pre%d", k);
      snprintf(value, sizeof value, "w%d-%s-before", i, key);
      t0 = mf_ha_now_ms();
      rc = mayfly_kv_put(ns, key, strlen(key), value, strlen(value));
      log_op(setup, OP_PUT, rc, t0, path, key, value);
    }
    mayfly_unmount(ns);
  }
  if (rc != 0) {
    fprintf(stderr, "history: setup: %s (%s)\n", mayfly_err_name(rc), mayfly_last_error());
    mayfly_disconnect(c);
    return NULL;
  }
  mayfly_disconnect(c);

  mf_load_t *l = g_new0(mf_load_t, 1);
  l->hist = h;
  h->nwriters = nwriters;
  g_mutex_init(&l->lock);
  g_cond_init(&l->cond);
  l->nworkers = ntree + nwriters;
  l->w = g_new0(worker_t, l->nworkers);
  for (int i = 0; i < l->nworkers; i++) {
    worker_t *w = &l->w[i];
    w->load = l;
    w->writer = i >= ntree;
    w->index = w->writer ? i - ntree : i;
    w->log = hist_log(h);
    rc = mayfly_connect(directory, &o, &w->c);
    if (rc != 0) {
      fprintf(stderr, "history: mayfly_connect(%s): %s (%s)\n", directory, mayfly_err_name(rc),
              mayfly_last_error());
      l->nworkers = i;
      mf_load_stop(l);
      return NULL;
    }
  }
  for (int i = 0; i < l->nworkers; i++) {
    worker_t *w = &l->w[i];
    w->thread = g_thread_new(w->writer ? "writer" : "tree", w->writer ? writer_main : tree_main, w);
  }
  return l;
}

int mf_load_pause(mf_load_t *l) {
  g_mutex_lock(&l->lock);
  l->pause = 1;
  g_cond_broadcast(&l->cond);
  gint64 until = g_get_monotonic_time() + 30 * G_TIME_SPAN_SECOND;
  int running = 0;
  for (;;) {
    running = 0;
    for (int i = 0; i < l->nworkers; i++) {
      /* A writer that could not mount has returned: it counts as parked. */
      if (!l->w[i].parked && !l->w[i].done) running++;
    }
    if (running == 0 || !g_cond_wait_until(&l->cond, &l->lock, until)) break;
  }
  g_mutex_unlock(&l->lock);
  if (running > 0) fprintf(stderr, "history: %d threads did not park within 30 s\n", running);
  return running == 0 ? 0 : -1;
}

void mf_load_resume(mf_load_t *l) {
  g_mutex_lock(&l->lock);
  l->pause = 0;
  g_cond_broadcast(&l->cond);
  g_mutex_unlock(&l->lock);
}

int64_t mf_load_ops(mf_load_t *l) {
  return g_atomic_int_get(&l->ops);
}

void mf_load_stop(mf_load_t *l) {
  if (l == NULL) return;
  g_mutex_lock(&l->lock);
  l->stop = 1;
  g_cond_broadcast(&l->cond);
  g_mutex_unlock(&l->lock);
  for (int i = 0; i < l->nworkers; i++) {
    if (l->w[i].thread != NULL) g_thread_join(l->w[i].thread);
    mayfly_disconnect(l->w[i].c);
  }
  g_free(l->w);
  g_cond_clear(&l->cond);
  g_mutex_clear(&l->lock);
  g_free(l);
}
