/*
 * The crash test of the durable directory (issue 10): a real
 * mayfly-directory with --data-dir and three real memory servers of small
 * blocks, 16 client threads creating, renaming and removing namespaces in
 * subtrees of their own and 4 writer threads writing kv, queue and file data
 * through mounted handles, while the directory is killed with SIGKILL at
 * random moments (one round in three while a kv split is under way) and
 * started again on the same port and data directory.
 *
 * Every thread records exactly what was acknowledged. A call that failed in
 * a way that leaves its effect unknown (the connection broke after the
 * request went out, a timeout) is "unknown": the thread leaves the paths it
 * touched alone until the end of the round, when the test looks at them and
 * accepts either outcome (and nothing else). After each round, with every
 * thread parked, the test checks: every acknowledged create is present and
 * every acknowledged remove absent, every layout is the one acknowledged
 * (stat), `mayfly --json tree /` (the CLI binary) is exactly the tree the
 * acknowledgements make, and every kv value, queue item and file byte
 * acknowledged is readable through the handles that wrote it.
 *
 * CUnit is not thread-safe: threads report failures with fail(), and the
 * main thread turns them into one assertion per round.
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/mayfly.h"
#include "harness.h"
#include "mf_test.h"

#define NTREE 16          /* namespace clients */
#define NWRITERS 4        /* data writers */
#define NMS 3             /* memory servers */
#define MS_BLOCKS 320     /* blocks per memory server */
#define BLOCK_SIZE "64KiB"
#define ROUNDS 10

#define MAX_LEAVES 10 /* live leaves per namespace client */
#define MAX_DIRS 4    /* live directories per namespace client */

#define SPLIT_KEYS 600  /* keys W0 puts into each round's kv namespace */
#define SPLIT_VLEN 1000 /* ~55 values fill a 64 KiB block to its 90 % watermark */
#define KV_KEYS 200     /* keys W1 overwrites */
#define KV_VLEN 160
#define MAX_UNK 16      /* unknown versions remembered per key or chunk */
#define FILE_CHUNKS 96  /* W3 rewrites chunks [0, 96) of 4 KiB in turn */
#define CHUNK 4096

static int64_t now_ms(void) {
  return g_get_monotonic_time() / 1000;
}

/* --- failures from any thread --- */

static GMutex fail_lock;
static int fail_count;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_mutex_lock(&fail_lock);
  if (fail_count++ < 40) fprintf(stderr, "  FAIL: %s\n", msg);
  g_mutex_unlock(&fail_lock);
  g_free(msg);
}

static int failures(void) {
  g_mutex_lock(&fail_lock);
  int n = fail_count;
  g_mutex_unlock(&fail_lock);
  return n;
}

/* What a failed call says about its effect. */
typedef enum { OUT_APPLIED, OUT_NOT_APPLIED, OUT_UNKNOWN } outcome_t;

/* ECONNREFUSED comes from connecting, before anything was sent; the
 * directory's own refusals for want of servers or blocks (after a restart,
 * before the memory servers registered again) change nothing. A broken
 * connection or a timeout after the request went out may or may not have
 * been applied. Anything else is wrong for an operation the model says is
 * valid: reported, and then treated as unknown so the run goes on. */
static outcome_t outcome_of(int rc, const char *what) {
  switch (rc) {
  case 0:
    return OUT_APPLIED;
  case MAYFLY_ECONNREFUSED:
  case MAYFLY_ENOSERVERS:
  case MAYFLY_ENOSPC:
  case MAYFLY_EAGAIN:
  case MAYFLY_ESERVERDOWN:
    return OUT_NOT_APPLIED;
  case MAYFLY_EIO:
  case MAYFLY_ETIMEDOUT:
  case MAYFLY_EPROTO:
  case MAYFLY_EINTERNAL:
    return OUT_UNKNOWN;
  default:
    fail("%s: unexpected %s (%s)", what, mayfly_err_name(rc), mayfly_last_error());
    return OUT_UNKNOWN;
  }
}

/* --- parking threads between rounds --- */

typedef struct {
  GMutex lock;
  GCond cond;
  int pause;    /* every worker parks */
  int quiet;    /* the quietable workers park (a split round's detection window) */
  int stop;
  int nparked;
  int split_go; /* W0 may fill this round's kv namespace */
  int round;
} gate_t;

static gate_t G;

typedef struct {
  int quietable;
  int parked;
} worker_t;

/* Parks while the main thread asks; returns 0 once the run is over. */
static int gate(worker_t *w) {
  g_mutex_lock(&G.lock);
  while (!G.stop && (G.pause || (G.quiet && w->quietable))) {
    if (!w->parked) {
      w->parked = 1;
      G.nparked++;
      g_cond_broadcast(&G.cond);
    }
    g_cond_wait(&G.cond, &G.lock);
  }
  if (w->parked) {
    w->parked = 0;
    G.nparked--;
  }
  int go = !G.stop;
  g_mutex_unlock(&G.lock);
  return go;
}

static void gate_set(int pause, int quiet) {
  g_mutex_lock(&G.lock);
  G.pause = pause;
  G.quiet = quiet;
  g_cond_broadcast(&G.cond);
  g_mutex_unlock(&G.lock);
}

/* Waits until n workers are parked; 0, or -1 after 30 s. */
static int wait_parked(int n) {
  gint64 until = g_get_monotonic_time() + 30 * G_TIME_SPAN_SECOND;
  g_mutex_lock(&G.lock);
  while (G.nparked < n) {
    if (!g_cond_wait_until(&G.cond, &G.lock, until)) break;
  }
  int ok = G.nparked >= n;
  g_mutex_unlock(&G.lock);
  return ok ? 0 : -1;
}

/* --- the namespace clients' model --- */

typedef struct {
  int32_t server_id, block_index;
  int64_t generation, lo, hi;
} part_t;

typedef struct {
  mayfly_kind_t kind;
  int pinned, max_blocks, hwm, lwm;
  int has_layout; /* the layout below was acknowledged (or observed after an unknown create) */
  size_t nparts;
  part_t *parts;
} ent_t;

static ent_t *ent_new(mayfly_kind_t kind) {
  ent_t *e = g_new0(ent_t, 1);
  e->kind = kind;
  return e;
}

static ent_t *ent_copy(const ent_t *e) {
  ent_t *c = g_memdup2(e, sizeof *e);
  c->parts = e->nparts ? g_memdup2(e->parts, e->nparts * sizeof *e->parts) : NULL;
  return c;
}

static void ent_free(gpointer p) {
  ent_t *e = p;
  g_free(e->parts);
  g_free(e);
}

static void ent_set_layout(ent_t *e, const mayfly_stat_t *st) {
  g_free(e->parts);
  e->nparts = st->npartitions;
  e->parts = g_new0(part_t, st->npartitions + 1);
  for (size_t i = 0; i < st->npartitions; i++) {
    const mayfly_partition_t *p = &st->partitions[i];
    e->parts[i] = (part_t){p->server_id, p->block_index, p->generation, p->range_lo, p->range_hi};
  }
  e->has_layout = 1;
}

static GHashTable *model_new(void) {
  return g_hash_table_new_full(g_str_hash, g_str_equal, g_free, ent_free);
}

/* path is p, or under p. */
static int under(const char *path, const char *p) {
  size_t n = strlen(p);
  return strncmp(path, p, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* The entries of m at or under any of the units, copied. */
static GHashTable *model_subset(GHashTable *m, char *const *units, int nunits) {
  GHashTable *s = model_new();
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, m);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    for (int i = 0; i < nunits; i++) {
      if (under(k, units[i])) {
        g_hash_table_insert(s, g_strdup(k), ent_copy(v));
        break;
      }
    }
  }
  return s;
}

static void model_drop_under(GHashTable *m, const char *p) {
  GHashTableIter it;
  gpointer k;
  g_hash_table_iter_init(&it, m);
  while (g_hash_table_iter_next(&it, &k, NULL)) {
    if (under(k, p)) g_hash_table_iter_remove(&it);
  }
}

typedef enum { OP_MKDIR, OP_CREATE, OP_RENAME, OP_REMOVE } op_type_t;

typedef struct {
  op_type_t type;
  char path[128], path2[128];
  mayfly_kind_t kind;
  mayfly_create_options_t opts;
} op_t;

/* Applies an acknowledged (or supposed) op to m; st is create's answer. */
static void model_apply(GHashTable *m, const op_t *op, const mayfly_stat_t *st) {
  switch (op->type) {
  case OP_MKDIR:
    g_hash_table_insert(m, g_strdup(op->path), ent_new(MAYFLY_KIND_DIRECTORY));
    break;
  case OP_CREATE: {
    ent_t *e = ent_new(op->kind);
    e->pinned = op->opts.pinned;
    e->max_blocks = op->opts.max_blocks;
    e->hwm = op->kind == MAYFLY_KIND_KV ? (op->opts.high_watermark ? op->opts.high_watermark : 90) : 0;
    e->lwm = op->kind == MAYFLY_KIND_KV ? (op->opts.low_watermark ? op->opts.low_watermark : 25) : 0;
    if (st != NULL) ent_set_layout(e, st);
    g_hash_table_insert(m, g_strdup(op->path), e);
    break;
  }
  case OP_RENAME: {
    GPtrArray *keys = g_ptr_array_new_with_free_func(g_free);
    GHashTableIter it;
    gpointer k;
    g_hash_table_iter_init(&it, m);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
      if (under(k, op->path)) g_ptr_array_add(keys, g_strdup(k));
    }
    for (guint i = 0; i < keys->len; i++) {
      const char *old = keys->pdata[i];
      gpointer okey, val;
      g_hash_table_steal_extended(m, old, &okey, &val);
      g_hash_table_insert(m, g_strconcat(op->path2, old + strlen(op->path), NULL), val);
      g_free(okey);
    }
    g_ptr_array_free(keys, TRUE);
    break;
  }
  case OP_REMOVE:
    model_drop_under(m, op->path);
    break;
  }
}

/* An operation whose effect is unknown, with the two states its units may be in. */
typedef struct {
  char *units[2];
  int nunits;
  GHashTable *before, *after;
  char *desc;
  char *created; /* a create's path: its layout is learnt when it turns out applied */
} unknown_t;

static void unknown_free(gpointer p) {
  unknown_t *u = p;
  for (int i = 0; i < u->nunits; i++) g_free(u->units[i]);
  g_hash_table_destroy(u->before);
  g_hash_table_destroy(u->after);
  g_free(u->desc);
  g_free(u->created);
  g_free(u);
}

typedef struct {
  worker_t w;
  int id;
  char root[32];
  mayfly_client_t *c;
  GRand *rand;
  GHashTable *model;   /* path -> ent_t: what the acknowledgements say, under root */
  GHashTable *tainted; /* unit paths some unknown op touched (set) */
  GPtrArray *unknowns; /* unknown_t */
  int counter;         /* for fresh names */
  /* this round's figures */
  int acked[4], refused, unknown;
} tree_client_t;

static tree_client_t tree[NTREE];

/* The unit of a path under root: root/<first component>. */
static char *unit_of(const tree_client_t *t, const char *path) {
  size_t n = strlen(t->root);
  const char *rest = path + n + 1;
  const char *slash = strchr(rest, '/');
  return slash ? g_strndup(path, (gsize)(slash - path)) : g_strdup(path);
}

/* Untainted leaves and directories of the model, in a random but
 * reproducible order per call. */
static void pick_lists(tree_client_t *t, GPtrArray *leaves, GPtrArray *dirs) {
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, t->model);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    char *u = unit_of(t, k);
    int ok = !g_hash_table_contains(t->tainted, u);
    g_free(u);
    if (!ok) continue;
    if (((ent_t *)v)->kind == MAYFLY_KIND_DIRECTORY) {
      g_ptr_array_add(dirs, k);
    } else {
      g_ptr_array_add(leaves, k);
    }
  }
}

static const char *op_name(op_type_t t) {
  static const char *n[] = {"mkdir", "create", "rename", "remove"};
  return n[t];
}

/* Chooses the next operation; returns 0 when there is nothing to do. */
static int choose_op(tree_client_t *t, op_t *op) {
  GPtrArray *leaves = g_ptr_array_new(), *dirs = g_ptr_array_new();
  pick_lists(t, leaves, dirs);
  int r = g_rand_int_range(t->rand, 0, 100);
  memset(op, 0, sizeof *op);
  int ok = 1;
  if (r < 10 && dirs->len < MAX_DIRS) {
    op->type = OP_MKDIR;
    snprintf(op->path, sizeof op->path, "%s/d%d", t->root, t->counter++);
  } else if (r < 50 && leaves->len < MAX_LEAVES) {
    op->type = OP_CREATE;
    const char *parent = t->root;
    if (dirs->len > 0 && g_rand_boolean(t->rand)) {
      parent = dirs->pdata[g_rand_int_range(t->rand, 0, (gint32)dirs->len)];
    }
    snprintf(op->path, sizeof op->path, "%s/n%d", parent, t->counter++);
    static const mayfly_kind_t kinds[] = {MAYFLY_KIND_FILE, MAYFLY_KIND_QUEUE, MAYFLY_KIND_KV};
    op->kind = kinds[g_rand_int_range(t->rand, 0, 3)];
    op->opts.blocks = op->kind == MAYFLY_KIND_FILE ? g_rand_int_range(t->rand, 1, 3) : 1;
    op->opts.pinned = g_rand_int_range(t->rand, 0, 4) == 0;
    op->opts.max_blocks = g_rand_boolean(t->rand) ? 4 : 0;
    if (op->kind == MAYFLY_KIND_KV && g_rand_boolean(t->rand)) {
      op->opts.high_watermark = 80;
      op->opts.low_watermark = 20;
    }
  } else if (r < 75 && (leaves->len > 0 || dirs->len > 0)) {
    op->type = OP_RENAME;
    int dir = dirs->len > 0 && (leaves->len == 0 || g_rand_int_range(t->rand, 0, 4) == 0);
    if (dir) {
      snprintf(op->path, sizeof op->path, "%s",
               (char *)dirs->pdata[g_rand_int_range(t->rand, 0, (gint32)dirs->len)]);
      snprintf(op->path2, sizeof op->path2, "%s/d%d", t->root, t->counter++);
    } else {
      snprintf(op->path, sizeof op->path, "%s",
               (char *)leaves->pdata[g_rand_int_range(t->rand, 0, (gint32)leaves->len)]);
      const char *parent = t->root;
      if (dirs->len > 0 && g_rand_boolean(t->rand)) {
        parent = dirs->pdata[g_rand_int_range(t->rand, 0, (gint32)dirs->len)];
      }
      snprintf(op->path2, sizeof op->path2, "%s/n%d", parent, t->counter++);
    }
  } else if (leaves->len > 0 || dirs->len > 0) {
    op->type = OP_REMOVE;
    int dir = dirs->len > 0 && (leaves->len == 0 || g_rand_int_range(t->rand, 0, 4) == 0);
    GPtrArray *from = dir ? dirs : leaves;
    snprintf(op->path, sizeof op->path, "%s",
             (char *)from->pdata[g_rand_int_range(t->rand, 0, (gint32)from->len)]);
  } else {
    ok = 0;
  }
  g_ptr_array_free(leaves, TRUE);
  g_ptr_array_free(dirs, TRUE);
  return ok;
}

static void tree_do(tree_client_t *t, const op_t *op) {
  mayfly_stat_t *st = NULL;
  int rc;
  switch (op->type) {
  case OP_MKDIR:
    rc = mayfly_mkdir(t->c, op->path, 0);
    break;
  case OP_CREATE:
    rc = mayfly_create(t->c, op->path, op->kind, &op->opts, &st);
    break;
  case OP_RENAME:
    rc = mayfly_rename(t->c, op->path, op->path2);
    break;
  default:
    rc = mayfly_remove(t->c, op->path, 1);
    break;
  }
  char what[320];
  snprintf(what, sizeof what, "client %d: %s %s%s%s", t->id, op_name(op->type), op->path,
           op->type == OP_RENAME ? " -> " : "", op->type == OP_RENAME ? op->path2 : "");
  outcome_t out = outcome_of(rc, what);
  if (out == OUT_APPLIED) {
    model_apply(t->model, op, st);
    t->acked[op->type]++;
  } else if (out == OUT_NOT_APPLIED) {
    t->refused++;
  } else {
    unknown_t *u = g_new0(unknown_t, 1);
    u->units[u->nunits++] = unit_of(t, op->path);
    if (op->type == OP_RENAME) {
      char *u2 = unit_of(t, op->path2);
      if (strcmp(u2, u->units[0]) != 0) {
        u->units[u->nunits++] = u2;
      } else {
        g_free(u2);
      }
    }
    u->before = model_subset(t->model, u->units, u->nunits);
    u->after = model_subset(t->model, u->units, u->nunits);
    model_apply(u->after, op, NULL);
    u->desc = g_strdup(what);
    if (op->type == OP_CREATE) u->created = g_strdup(op->path);
    for (int i = 0; i < u->nunits; i++) g_hash_table_add(t->tainted, g_strdup(u->units[i]));
    g_ptr_array_add(t->unknowns, u);
    t->unknown++;
  }
  mayfly_stat_free(st);
  /* While the directory is down every call fails at once: do not spin. */
  if (out != OUT_APPLIED) mf_sleep_ms(10);
}

static gpointer tree_thread(gpointer p) {
  tree_client_t *t = p;
  while (gate(&t->w)) {
    op_t op;
    if (choose_op(t, &op)) tree_do(t, &op);
    mf_sleep_ms(4);
  }
  return NULL;
}

/* --- writers --- */

static void fill_value(char *v, size_t len, const char *key, int64_t ver) {
  int n = snprintf(v, len, "%s@%lld:", key, (long long)ver);
  for (size_t i = (size_t)n; i < len; i++) v[i] = (char)('a' + (i * 13 + (size_t)ver * 7) % 26);
}

/* W0: one kv namespace per round, filled with SPLIT_KEYS values of
 * SPLIT_VLEN bytes, so it splits again and again. */
typedef struct {
  worker_t w;
  mayfly_client_t *c;
  mayfly_ns_t *ns[ROUNDS];
  uint8_t *state[ROUNDS]; /* per key: 0 never tried, 1 acknowledged, 2 unknown */
  int next[ROUNDS];       /* next key to put */
  int puts, errors;
} split_writer_t;

/* W1: KV_KEYS keys of /w/kv overwritten in turn with growing versions. */
typedef struct {
  worker_t w;
  mayfly_client_t *c;
  mayfly_ns_t *ns;
  int64_t acked[KV_KEYS]; /* -1: none */
  int64_t unk[KV_KEYS][MAX_UNK];
  int nunk[KV_KEYS];
  int64_t ver[KV_KEYS];
  int64_t cursor;
  int puts, errors;
} kv_writer_t;

/* W2: items of /w/q, numbered; the check pops the older half. */
typedef struct {
  worker_t w;
  mayfly_client_t *c;
  mayfly_ns_t *ns;
  GByteArray *state; /* per seq: 1 acknowledged, 2 unknown */
  int64_t next_pop;  /* every seq below was popped or skipped as unknown */
  int pushes, errors, popped;
} queue_writer_t;

/* W3: chunks of /w/f rewritten in turn, generation = pass over the file. */
typedef struct {
  worker_t w;
  mayfly_client_t *c;
  mayfly_ns_t *ns;
  int64_t acked[FILE_CHUNKS];
  int64_t unk[FILE_CHUNKS][MAX_UNK];
  int nunk[FILE_CHUNKS];
  int64_t cursor;
  int writes, errors;
} file_writer_t;

static split_writer_t w0;
static kv_writer_t w1;
static queue_writer_t w2;
static file_writer_t w3;

static void split_key(int round, int i, char *key, size_t len) {
  snprintf(key, len, "s%d-%05d", round, i);
}

static gpointer split_thread(gpointer p) {
  (void)p;
  char key[32], *val = g_malloc(SPLIT_VLEN);
  while (gate(&w0.w)) {
    g_mutex_lock(&G.lock);
    int r = G.round, go = G.split_go;
    g_mutex_unlock(&G.lock);
    if (!go || w0.ns[r] == NULL || w0.next[r] >= SPLIT_KEYS) {
      mf_sleep_ms(5);
      continue;
    }
    int i = w0.next[r]++;
    split_key(r, i, key, sizeof key);
    fill_value(val, SPLIT_VLEN, key, 0);
    int rc = mayfly_kv_put(w0.ns[r], key, strlen(key), val, SPLIT_VLEN);
    w0.puts++;
    w0.state[r][i] = rc == 0 ? 1 : 2;
    if (rc != 0) {
      w0.errors++;
      mf_sleep_ms(5);
    }
  }
  g_free(val);
  return NULL;
}

static void unk_add(int64_t *unk, int *n, int64_t v) {
  if (*n < MAX_UNK) {
    unk[(*n)++] = v;
  } else {
    memmove(unk, unk + 1, (MAX_UNK - 1) * sizeof *unk);
    unk[MAX_UNK - 1] = v;
  }
}

static gpointer kv_thread(gpointer p) {
  (void)p;
  char key[32], val[KV_VLEN];
  while (gate(&w1.w)) {
    int k = (int)(w1.cursor++ % KV_KEYS);
    int64_t v = ++w1.ver[k];
    snprintf(key, sizeof key, "key-%04d", k);
    fill_value(val, sizeof val, key, v);
    int rc = mayfly_kv_put(w1.ns, key, strlen(key), val, sizeof val);
    w1.puts++;
    if (rc == 0) {
      w1.acked[k] = v;
      w1.nunk[k] = 0;
    } else {
      unk_add(w1.unk[k], &w1.nunk[k], v);
      w1.errors++;
      mf_sleep_ms(5);
    }
    mf_sleep_ms(1);
  }
  return NULL;
}

static size_t item_len(int64_t seq) {
  return 48 + (size_t)(seq * 37 % 200);
}

static void fill_item(char *buf, int64_t seq) {
  size_t len = item_len(seq);
  int n = snprintf(buf, len, "q%010lld|", (long long)seq);
  for (size_t i = (size_t)n; i < len; i++) buf[i] = (char)('A' + (i + (size_t)seq) % 26);
}

static gpointer queue_thread(gpointer p) {
  (void)p;
  char item[512];
  while (gate(&w2.w)) {
    int64_t seq = (int64_t)w2.state->len;
    fill_item(item, seq);
    int rc = mayfly_queue_push(w2.ns, item, item_len(seq));
    uint8_t s = rc == 0 ? 1 : 2;
    g_byte_array_append(w2.state, &s, 1);
    w2.pushes++;
    if (rc != 0) {
      w2.errors++;
      mf_sleep_ms(5);
    }
    mf_sleep_ms(1);
  }
  return NULL;
}

static void fill_chunk(uint8_t *buf, int k, int64_t gen) {
  int n = snprintf((char *)buf, CHUNK, "chunk %d gen %lld|", k, (long long)gen);
  for (size_t i = (size_t)n; i < CHUNK; i++) buf[i] = (uint8_t)(i * 7 + (size_t)k * 31 + (size_t)gen);
}

static gpointer file_thread(gpointer p) {
  (void)p;
  uint8_t *buf = g_malloc(CHUNK);
  while (gate(&w3.w)) {
    int k = (int)(w3.cursor % FILE_CHUNKS);
    int64_t gen = w3.cursor / FILE_CHUNKS;
    w3.cursor++;
    fill_chunk(buf, k, gen);
    int rc = mayfly_file_write(w3.ns, (uint64_t)k * CHUNK, buf, CHUNK);
    w3.writes++;
    if (rc == 0) {
      w3.acked[k] = gen;
      w3.nunk[k] = 0;
    } else {
      unk_add(w3.unk[k], &w3.nunk[k], gen);
      w3.errors++;
      mf_sleep_ms(5);
    }
    mf_sleep_ms(2);
  }
  g_free(buf);
  return NULL;
}

/* --- the cluster --- */

static mf_daemon_t *dir, *ms[NMS];
static char data_dir[256], port_arg[16];
static mayfly_client_t *admin;

static mf_daemon_t *start_directory(const char *port) {
  return mf_start_directory("--port", port, "--data-dir", data_dir, "--lease-ms", "600s",
                            "--heartbeat-ms", "100", "--heartbeat-timeout-ms", "3000",
                            "--snapshot-records", "1000", NULL);
}

static mayfly_client_t *connect_client(void) {
  mayfly_options_t o = {.timeout_ms = 3000, .connect_timeout_ms = 1000};
  mayfly_client_t *c = NULL;
  int rc = mayfly_connect(dir->address, &o, &c);
  if (rc != 0) fail("connect: %s", mayfly_strerror(rc));
  return c;
}

/* Waits until the directory answers and lists every memory server up. */
static int wait_servers_up(int timeout_ms) {
  for (int64_t until = now_ms() + timeout_ms; now_ms() < until; mf_sleep_ms(20)) {
    mayfly_dir_stats_t s;
    if (mayfly_dir_stats(admin, &s) == 0 && s.servers_up == NMS) return 0;
  }
  return -1;
}

/* Blocks the directory has handed out on all servers, minus the partitions
 * of `path`: constant while only that namespace takes blocks, one more while
 * one of its splits has taken its new block and not committed. */
static int blocks_minus_parts(const char *path, int *out) {
  mayfly_server_t *s = NULL;
  size_t n = 0;
  if (mayfly_servers(admin, &s, &n) != 0) return -1;
  int used = 0;
  for (size_t i = 0; i < n; i++) used += s[i].blocks_used;
  mayfly_servers_free(s, n);
  mayfly_stat_t *st = NULL;
  if (mayfly_stat(admin, path, &st) != 0) return -1;
  *out = used - (int)st->npartitions;
  mayfly_stat_free(st);
  return 0;
}

/* --- checks --- */

/* `mayfly --json tree /` flattened: path -> kind name, without "/". */
static void flatten(JsonObject *o, GHashTable *out) {
  const char *path = json_object_get_string_member(o, "path");
  if (strcmp(path, "/") != 0) {
    g_hash_table_insert(out, g_strdup(path), g_strdup(json_object_get_string_member(o, "kind")));
  }
  if (!json_object_has_member(o, "children")) return;
  JsonArray *a = json_object_get_array_member(o, "children");
  for (guint i = 0; i < json_array_get_length(a); i++) flatten(json_array_get_object_element(a, i), out);
}

static GHashTable *cli_tree(void) {
  char *out = NULL, *err = NULL;
  int rc = mf_cli(dir, &out, &err, "--json", "tree", "/", NULL);
  GHashTable *t = NULL;
  if (rc != 0) {
    fail("mayfly --json tree / exited %d: %s", rc, err ? err : "");
  } else {
    JsonParser *p = json_parser_new();
    if (json_parser_load_from_data(p, out, -1, NULL) && json_parser_get_root(p) != NULL &&
        JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p))) {
      t = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
      flatten(json_node_get_object(json_parser_get_root(p)), t);
    } else {
      fail("mayfly --json tree / printed no JSON object: %.200s", out ? out : "");
    }
    g_object_unref(p);
  }
  g_free(out);
  g_free(err);
  return t;
}

/* Settles each client's unknown operations by looking: the units each one
 * touched must be exactly as before it or exactly as after it. */
static int resolve_unknowns(tree_client_t *t) {
  if (t->unknowns->len == 0) return 0;
  mayfly_lease_t *l = NULL;
  size_t n = 0;
  int rc = mayfly_leases(admin, t->root, &l, &n);
  if (rc != 0) {
    fail("leases %s: %s", t->root, mayfly_strerror(rc));
    return 0;
  }
  int resolved = 0;
  for (guint i = 0; i < t->unknowns->len; i++) {
    unknown_t *u = t->unknowns->pdata[i];
    GHashTable *seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    for (size_t j = 0; j < n; j++) {
      for (int k = 0; k < u->nunits; k++) {
        if (under(l[j].path, u->units[k])) {
          g_hash_table_insert(seen, g_strdup(l[j].path), GINT_TO_POINTER(l[j].kind + 1));
        }
      }
    }
    GHashTable *match = NULL;
    GHashTable *cand[2] = {u->before, u->after};
    for (int c = 0; c < 2 && match == NULL; c++) {
      if (g_hash_table_size(cand[c]) != g_hash_table_size(seen)) continue;
      int same = 1;
      GHashTableIter it;
      gpointer k, v;
      g_hash_table_iter_init(&it, cand[c]);
      while (same && g_hash_table_iter_next(&it, &k, &v)) {
        gpointer kind = g_hash_table_lookup(seen, k);
        same = kind != NULL && GPOINTER_TO_INT(kind) - 1 == (int)((ent_t *)v)->kind;
      }
      if (same) match = cand[c];
    }
    for (int k = 0; k < u->nunits; k++) model_drop_under(t->model, u->units[k]);
    if (match == NULL) {
      fail("%s (unknown outcome): the tree under %s%s%s is neither the state before it nor "
           "after it (%u nodes seen, %u before, %u after)",
           u->desc, u->units[0], u->nunits > 1 ? " and " : "", u->nunits > 1 ? u->units[1] : "",
           g_hash_table_size(seen), g_hash_table_size(u->before), g_hash_table_size(u->after));
      /* Go on from what is there, so later rounds check something. */
      GHashTableIter it;
      gpointer k, v;
      g_hash_table_iter_init(&it, seen);
      while (g_hash_table_iter_next(&it, &k, &v)) {
        g_hash_table_insert(t->model, g_strdup(k), ent_new((mayfly_kind_t)(GPOINTER_TO_INT(v) - 1)));
      }
    } else {
      GHashTableIter it;
      gpointer k, v;
      g_hash_table_iter_init(&it, match);
      while (g_hash_table_iter_next(&it, &k, &v)) {
        g_hash_table_insert(t->model, g_strdup(k), ent_copy(v));
      }
    }
    /* A create that turned out applied (or a node found instead): learn its layout. */
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, t->model);
    while (g_hash_table_iter_next(&it, &k, &v)) {
      ent_t *e = v;
      if (e->kind == MAYFLY_KIND_DIRECTORY || e->has_layout) continue;
      mayfly_stat_t *st = NULL;
      if (mayfly_stat(admin, k, &st) == 0) {
        ent_set_layout(e, st);
        e->pinned = st->pinned;
        e->max_blocks = st->max_blocks;
        e->hwm = st->high_watermark;
        e->lwm = st->low_watermark;
        mayfly_stat_free(st);
      } else {
        fail("stat %s after an unknown create: %s", (char *)k, mayfly_last_error());
      }
    }
    g_hash_table_destroy(seen);
    resolved++;
  }
  mayfly_leases_free(l, n);
  g_ptr_array_set_size(t->unknowns, 0);
  g_hash_table_remove_all(t->tainted);
  return resolved;
}

/* Every leaf of the model as acknowledged: kind, pin, quota, watermarks and
 * the exact layout. Returns how many nodes were checked. */
static int check_layouts(tree_client_t *t) {
  int checked = 0;
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, t->model);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    const ent_t *e = v;
    mayfly_stat_t *st = NULL;
    int rc = mayfly_stat(admin, k, &st);
    checked++;
    if (rc != 0) {
      fail("acknowledged %s %s: stat: %s", mayfly_kind_name(e->kind), (char *)k, mayfly_strerror(rc));
      continue;
    }
    if (st->kind != e->kind) {
      fail("%s: kind %s, acknowledged %s", (char *)k, mayfly_kind_name(st->kind),
           mayfly_kind_name(e->kind));
    } else if (e->kind != MAYFLY_KIND_DIRECTORY) {
      if (st->pinned != e->pinned || st->max_blocks != e->max_blocks ||
          (e->kind == MAYFLY_KIND_KV && (st->high_watermark != e->hwm || st->low_watermark != e->lwm))) {
        fail("%s: pinned %d max_blocks %d watermarks %d/%d, acknowledged %d %d %d/%d", (char *)k,
             st->pinned, st->max_blocks, st->high_watermark, st->low_watermark, e->pinned,
             e->max_blocks, e->hwm, e->lwm);
      }
      int same = e->has_layout && st->npartitions == e->nparts;
      for (size_t i = 0; same && i < e->nparts; i++) {
        const mayfly_partition_t *p = &st->partitions[i];
        const part_t *q = &e->parts[i];
        same = p->server_id == q->server_id && p->block_index == q->block_index &&
               p->generation == q->generation && p->range_lo == q->lo && p->range_hi == q->hi &&
               !p->lost;
      }
      if (!same) {
        fail("%s: layout (%zu partitions, first server %d block %d gen %lld%s) differs from the "
             "acknowledged one (%zu partitions, first server %d block %d gen %lld)",
             (char *)k, st->npartitions, st->npartitions ? st->partitions[0].server_id : -1,
             st->npartitions ? st->partitions[0].block_index : -1,
             st->npartitions ? (long long)st->partitions[0].generation : -1LL,
             st->npartitions && st->partitions[0].lost ? ", lost" : "", e->nparts,
             e->nparts ? e->parts[0].server_id : -1, e->nparts ? e->parts[0].block_index : -1,
             e->nparts ? (long long)e->parts[0].generation : -1LL);
      }
    }
    mayfly_stat_free(st);
  }
  return checked;
}

/* The tree the acknowledgements make, beside the namespace clients' subtrees. */
static void expected_fixed(GHashTable *want, int rounds) {
  g_hash_table_insert(want, g_strdup("/t"), g_strdup("directory"));
  g_hash_table_insert(want, g_strdup("/w"), g_strdup("directory"));
  g_hash_table_insert(want, g_strdup("/w/kv"), g_strdup("kv"));
  g_hash_table_insert(want, g_strdup("/w/q"), g_strdup("queue"));
  g_hash_table_insert(want, g_strdup("/w/f"), g_strdup("file"));
  for (int r = 0; r <= rounds; r++) {
    g_hash_table_insert(want, g_strdup_printf("/w/split%d", r), g_strdup("kv"));
  }
}

static void check_tree(int round) {
  GHashTable *want = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  expected_fixed(want, round);
  for (int i = 0; i < NTREE; i++) {
    g_hash_table_insert(want, g_strdup(tree[i].root), g_strdup("directory"));
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, tree[i].model);
    while (g_hash_table_iter_next(&it, &k, &v)) {
      g_hash_table_insert(want, g_strdup(k), g_strdup(mayfly_kind_name(((ent_t *)v)->kind)));
    }
  }
  GHashTable *got = cli_tree();
  if (got != NULL) {
    int diffs = 0;
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, want);
    while (g_hash_table_iter_next(&it, &k, &v)) {
      const char *kind = g_hash_table_lookup(got, k);
      if (kind == NULL || strcmp(kind, v) != 0) {
        if (diffs++ < 10) fail("round %d: tree: %s should be a %s, is %s", round, (char *)k, (char *)v, kind ? kind : "absent");
      }
    }
    g_hash_table_iter_init(&it, got);
    while (g_hash_table_iter_next(&it, &k, &v)) {
      if (!g_hash_table_contains(want, k)) {
        if (diffs++ < 10) fail("round %d: tree: %s (%s) is there but nothing acknowledged it", round, (char *)k, (char *)v);
      }
    }
    if (diffs > 0) fail("round %d: mayfly --json tree / differs from the acknowledged tree in %d nodes", round, diffs);
    g_hash_table_destroy(got);
  }
  g_hash_table_destroy(want);
}

static int check_split_data(int rounds) {
  int checked = 0;
  enum { B = 64 };
  char keys[B][32];
  const void *kp[B];
  size_t kl[B];
  void *vals[B];
  size_t vl[B];
  int rcs[B];
  char *want = g_malloc(SPLIT_VLEN);
  for (int r = 0; r <= rounds; r++) {
    if (w0.ns[r] == NULL) continue;
    /* The keys tried, and one past them that must be absent. */
    int upto = MIN(w0.next[r] + 1, SPLIT_KEYS);
    for (int from = 0; from < upto; from += B) {
      int n = MIN(B, upto - from);
      for (int i = 0; i < n; i++) {
        split_key(r, from + i, keys[i], sizeof keys[i]);
        kp[i] = keys[i];
        kl[i] = strlen(keys[i]);
      }
      mayfly_kv_get_batch(w0.ns[r], (size_t)n, kp, kl, vals, vl, rcs);
      for (int i = 0; i < n; i++) {
        int s = w0.state[r][from + i];
        fill_value(want, SPLIT_VLEN, keys[i], 0);
        int good = rcs[i] == 0 && vl[i] == SPLIT_VLEN && memcmp(vals[i], want, SPLIT_VLEN) == 0;
        if (s == 1 && !good) {
          fail("/w/split%d: acknowledged key %s reads %s", r, keys[i],
               rcs[i] == 0 ? "a wrong value" : mayfly_err_name(rcs[i]));
        } else if (s == 2 && !good && rcs[i] != MAYFLY_ENOKEY) {
          fail("/w/split%d: key %s (put unknown) reads %s", r, keys[i],
               rcs[i] == 0 ? "a wrong value" : mayfly_err_name(rcs[i]));
        } else if (s == 0 && rcs[i] != MAYFLY_ENOKEY) {
          fail("/w/split%d: key %s, never put, reads %s", r, keys[i], mayfly_err_name(rcs[i]));
        }
        if (vals[i] != NULL) mayfly_free(vals[i]);
        checked++;
      }
    }
  }
  g_free(want);
  return checked;
}

static int check_kv_data(void) {
  char key[32], want[KV_VLEN];
  int checked = 0;
  for (int k = 0; k < KV_KEYS; k++) {
    snprintf(key, sizeof key, "key-%04d", k);
    void *v = NULL;
    size_t vlen = 0;
    int rc = mayfly_kv_get(w1.ns, key, strlen(key), &v, &vlen);
    int ok = 0;
    if (rc == 0 && vlen == KV_VLEN) {
      if (w1.acked[k] >= 0) {
        fill_value(want, sizeof want, key, w1.acked[k]);
        ok = memcmp(v, want, KV_VLEN) == 0;
      }
      for (int i = 0; !ok && i < w1.nunk[k]; i++) {
        fill_value(want, sizeof want, key, w1.unk[k][i]);
        ok = memcmp(v, want, KV_VLEN) == 0;
      }
    } else if (rc == MAYFLY_ENOKEY) {
      ok = w1.acked[k] < 0;
    }
    if (!ok) {
      fail("/w/kv: %s reads %s (%.24s), acknowledged version %lld, %d unknown after it", key,
           rc == 0 ? "a value" : mayfly_err_name(rc), rc == 0 ? (char *)v : "",
           (long long)w1.acked[k], w1.nunk[k]);
    }
    if (rc == 0 && w1.acked[k] >= 0) checked++;
    mayfly_free(v);
  }
  return checked;
}

/* Checks one queue item against the record: its seq comes after next_pop,
 * and every acknowledged seq it skips is a lost item. */
static int check_item(const void *buf, size_t len, int64_t *seq_out) {
  char want[512], head[16] = "";
  long long seq = -1;
  /* The item is not NUL-terminated: parse a terminated copy of its head. */
  memcpy(head, buf, MIN(len, sizeof head - 1));
  if (len < 12 || sscanf(head, "q%10lld|", &seq) != 1 || seq < w2.next_pop ||
      seq >= (long long)w2.state->len) {
    fail("/w/q: item %.12s (%zu bytes) was never pushed or comes out of order (next %lld)",
         head, len, (long long)w2.next_pop);
    return -1;
  }
  fill_item(want, seq);
  if (len != item_len(seq) || memcmp(buf, want, len) != 0) {
    fail("/w/q: item %lld has the wrong contents", seq);
    return -1;
  }
  for (int64_t s = w2.next_pop; s < seq; s++) {
    if (w2.state->data[s] == 1) fail("/w/q: acknowledged item %lld is gone (next is %lld)", (long long)s, seq);
  }
  *seq_out = seq;
  return 0;
}

/* Pops the items pushed before the half-way point of what is unchecked, the
 * newer ones staying for later rounds (and later kills). */
static int check_queue_data(void) {
  int64_t total = (int64_t)w2.state->len;
  int64_t acked = 0, unknown = 0;
  for (int64_t s = w2.next_pop; s < total; s++) {
    acked += w2.state->data[s] == 1;
    unknown += w2.state->data[s] == 2;
  }
  int64_t len = mayfly_queue_length(w2.ns);
  if (len < acked || len > acked + unknown) {
    fail("/w/q: length %lld, acknowledged and not popped %lld (+%lld unknown)", (long long)len,
         (long long)acked, (long long)unknown);
  }
  int64_t cutoff = w2.next_pop + (total - w2.next_pop) / 2;
  int popped = 0;
  while (w2.next_pop < total) {
    void *item = NULL;
    size_t ilen = 0;
    int rc = mayfly_queue_peek(w2.ns, &item, &ilen);
    if (rc == MAYFLY_EAGAIN || rc == MAYFLY_ENOKEY) {
      for (int64_t s = w2.next_pop; s < total; s++) {
        if (w2.state->data[s] == 1) {
          fail("/w/q: empty, but acknowledged item %lld was never popped", (long long)s);
          break;
        }
      }
      break;
    }
    if (rc != 0) {
      fail("/w/q: peek: %s", mayfly_err_name(rc));
      break;
    }
    int64_t seq;
    int bad = check_item(item, ilen, &seq);
    mayfly_free(item);
    if (bad) break;
    w2.next_pop = seq;
    if (seq >= cutoff) break;
    rc = mayfly_queue_pop(w2.ns, &item, &ilen, 0);
    if (rc != 0) {
      fail("/w/q: pop: %s", mayfly_err_name(rc));
      break;
    }
    int64_t seq2 = -1;
    bad = check_item(item, ilen, &seq2);
    mayfly_free(item);
    if (bad || seq2 != seq) {
      if (!bad) fail("/w/q: popped %lld after peeking %lld", (long long)seq2, (long long)seq);
      break;
    }
    w2.next_pop = seq + 1;
    popped++;
  }
  w2.popped += popped;
  return popped;
}

static int check_file_data(void) {
  size_t len = (size_t)FILE_CHUNKS * CHUNK;
  uint8_t *buf = g_malloc0(len), *want = g_malloc(CHUNK);
  int64_t got = mayfly_file_read(w3.ns, 0, buf, len);
  int checked = 0;
  if (got < 0) {
    fail("/w/f: read: %s", mayfly_err_name((int)got));
  } else {
    for (int k = 0; k < FILE_CHUNKS; k++) {
      const uint8_t *c = buf + (size_t)k * CHUNK;
      int present = (int64_t)(k + 1) * CHUNK <= got;
      int ok = 0;
      if (present && w3.acked[k] >= 0) {
        fill_chunk(want, k, w3.acked[k]);
        ok = memcmp(c, want, CHUNK) == 0;
      }
      for (int i = 0; present && !ok && i < w3.nunk[k]; i++) {
        fill_chunk(want, k, w3.unk[k][i]);
        ok = memcmp(c, want, CHUNK) == 0;
      }
      if (!ok && w3.acked[k] < 0) {
        /* Never written for sure: absent, zeros, or one of the unknown writes. */
        ok = 1;
        for (size_t i = 0; present && i < CHUNK; i++) ok &= c[i] == 0;
      }
      if (!ok) {
        fail("/w/f: chunk %d (%s) is not generation %lld (%d unknown after it): %.20s", k,
             present ? "present" : "past the end", (long long)w3.acked[k], w3.nunk[k],
             present ? (const char *)c : "");
      }
      checked += w3.acked[k] >= 0;
    }
  }
  g_free(buf);
  g_free(want);
  return checked;
}

/* The writers' namespaces: kv partitions tile the slot space, nothing is
 * lost (the memory servers kept their blocks across the restart). */
static void check_writer_layout(const char *path) {
  mayfly_stat_t *st = NULL;
  int rc = mayfly_stat(admin, path, &st);
  if (rc != 0) {
    fail("stat %s: %s", path, mayfly_strerror(rc));
    return;
  }
  int64_t next = 0;
  for (size_t i = 0; i < st->npartitions; i++) {
    const mayfly_partition_t *p = &st->partitions[i];
    if (p->lost) fail("%s: partition %zu (server %d block %d) is lost", path, i, p->server_id, p->block_index);
    if (st->kind == MAYFLY_KIND_KV) {
      if (p->range_lo != next) fail("%s: partition %zu starts at slot %lld, not %lld", path, i, (long long)p->range_lo, (long long)next);
      next = p->range_hi;
    }
  }
  if (st->kind == MAYFLY_KIND_KV && next != 65536) fail("%s: the partitions end at slot %lld", path, (long long)next);
  mayfly_stat_free(st);
}

/* Lines of the daemon's log containing both a and b. */
static int log_lines_with(const mf_daemon_t *d, const char *a, const char *b) {
  char *log = NULL;
  if (!g_file_get_contents(d->log_path, &log, NULL, NULL)) return 0;
  char **lines = g_strsplit(log, "\n", -1);
  int n = 0;
  for (char **l = lines; *l; l++) n += strstr(*l, a) != NULL && strstr(*l, b) != NULL;
  g_strfreev(lines);
  g_free(log);
  return n;
}

/* --- the test --- */

static void test_kill9_loses_nothing_acknowledged(void) {
  int64_t t_start = now_ms();
  /* MAYFLY_SEED=N replays a run's choices (not its timing). */
  guint32 seed = (guint32)(getenv("MAYFLY_SEED") ? atoi(getenv("MAYFLY_SEED")) : time(NULL));
  printf("\n  seed %u (MAYFLY_SEED)", seed);
  GRand *rand = g_rand_new_with_seed(seed);
  char *tmp = g_dir_make_tmp("mayfly-durable-XXXXXX", NULL);
  snprintf(data_dir, sizeof data_dir, "%s/data", tmp);
  dir = start_directory("0");
  CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
  snprintf(port_arg, sizeof port_arg, "%d", dir->port);
  for (int i = 0; i < NMS; i++) {
    ms[i] = mf_start_memserver(dir, MS_BLOCKS, BLOCK_SIZE, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ms[i]);
  }
  admin = connect_client();
  CU_ASSERT_PTR_NOT_NULL_FATAL(admin);
  mayfly_dir_stats_t s0;
  MF_ASSERT_EQ(mayfly_dir_stats(admin, &s0), 0);
  MF_ASSERT_EQ(s0.durable, 1);
  MF_ASSERT_EQ(mayfly_mkdir(admin, "/t", 0), 0);
  MF_ASSERT_EQ(mayfly_mkdir(admin, "/w", 0), 0);

  /* Workers. */
  g_mutex_init(&G.lock);
  g_cond_init(&G.cond);
  G.pause = 1;
  GThread *threads[NTREE + NWRITERS];
  for (int i = 0; i < NTREE; i++) {
    tree_client_t *t = &tree[i];
    t->id = i;
    t->w.quietable = 1;
    snprintf(t->root, sizeof t->root, "/t/c%02d", i);
    MF_ASSERT_EQ(mayfly_mkdir(admin, t->root, 0), 0);
    t->c = connect_client();
    t->rand = g_rand_new_with_seed(g_rand_int(rand));
    t->model = model_new();
    t->tainted = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    t->unknowns = g_ptr_array_new_with_free_func(unknown_free);
    threads[i] = g_thread_new("tree", tree_thread, t);
  }
  mayfly_create_options_t kvo = {.blocks = 1};
  w0.c = connect_client();
  w1.c = connect_client();
  w2.c = connect_client();
  w3.c = connect_client();
  w1.w.quietable = w2.w.quietable = w3.w.quietable = 1;
  MF_ASSERT_EQ(mayfly_mount(w1.c, "/w/kv", MAYFLY_KIND_KV, &kvo, &w1.ns), 0);
  MF_ASSERT_EQ(mayfly_mount(w2.c, "/w/q", MAYFLY_KIND_QUEUE, &kvo, &w2.ns), 0);
  MF_ASSERT_EQ(mayfly_mount(w3.c, "/w/f", MAYFLY_KIND_FILE, &kvo, &w3.ns), 0);
  CU_ASSERT_FATAL(w1.ns != NULL && w2.ns != NULL && w3.ns != NULL);
  for (int k = 0; k < KV_KEYS; k++) w1.acked[k] = -1;
  for (int k = 0; k < FILE_CHUNKS; k++) w3.acked[k] = -1;
  w2.state = g_byte_array_new();
  threads[NTREE + 0] = g_thread_new("w0", split_thread, NULL);
  threads[NTREE + 1] = g_thread_new("w1", kv_thread, NULL);
  threads[NTREE + 2] = g_thread_new("w2", queue_thread, NULL);
  threads[NTREE + 3] = g_thread_new("w3", file_thread, NULL);
  const int nworkers = NTREE + NWRITERS, nquiet = NTREE + 3;
  CU_ASSERT_FATAL(wait_parked(nworkers) == 0);

  int64_t prev_seq = 0;
  int splits_caught = 0, splits_recovered = 0, total_unknown = 0;
  printf("\n  %-5s %-6s %5s %6s %5s %8s %9s %8s %8s %5s %5s %5s %5s %6s %6s %6s\n", "round",
         "kill", "begun", "run_ms", "down", "recov_ms", "recovered", "log_seq", "records", "snaps", "ops",
         "unk", "nodes", "kvput", "qpush", "fwrite");
  for (int r = 0; r < ROUNDS; r++) {
    int split_round = r % 3 == 1;
    /* This round's kv namespace, mounted while the directory is up. */
    char path[64];
    snprintf(path, sizeof path, "/w/split%d", r);
    mayfly_create_options_t so = {.blocks = 1};
    int rc = mayfly_mount(w0.c, path, MAYFLY_KIND_KV, &so, &w0.ns[r]);
    MF_ASSERT_EQ(rc, 0);
    if (rc != 0) break;
    w0.state[r] = g_malloc0(SPLIT_KEYS);
    int ops0 = 0;
    for (int i = 0; i < NTREE; i++) ops0 += tree[i].acked[0] + tree[i].acked[1] + tree[i].acked[2] + tree[i].acked[3];
    int kv0 = w0.puts + w1.puts, q0 = w2.pushes, f0 = w3.writes;

    g_mutex_lock(&G.lock);
    G.round = r;
    G.split_go = !split_round;
    g_mutex_unlock(&G.lock);
    int64_t t0 = now_ms();
    const char *kill_kind = "random";
    if (split_round) {
      /* Only W0 runs until the kill, so a block the directory handed out and
       * no partition holds yet is a split begun and not committed. */
      gate_set(0, 1);
      CU_ASSERT_FATAL(wait_parked(nquiet) == 0);
      int base = INT32_MAX, b;
      for (int i = 0; i < 3; i++) {
        if (blocks_minus_parts(path, &b) == 0 && b < base) base = b;
      }
      g_mutex_lock(&G.lock);
      G.split_go = 1;
      g_mutex_unlock(&G.lock);
      kill_kind = "split?";
      for (int64_t until = now_ms() + 3000; now_ms() < until;) {
        if (blocks_minus_parts(path, &b) == 0 && b > base) {
          kill_kind = "split";
          splits_caught++;
          break;
        }
      }
    } else {
      gate_set(0, 0);
      mf_sleep_ms(g_rand_int_range(rand, 200, 1200));
    }
    int64_t run_ms = now_ms() - t0;
    mf_kill(dir);
    dir = NULL;
    if (split_round) gate_set(0, 0);
    int down = g_rand_int_range(rand, 20, 300);
    mf_sleep_ms(down);
    dir = start_directory(port_arg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
    MF_ASSERT_EQ(dir->port, atoi(port_arg));
    /* The directory's own word that it recovered a split of this round's
     * namespace begun and not ended. */
    char ns_word[96];
    snprintf(ns_word, sizeof ns_word, "namespace %s: split", path);
    int begun = log_lines_with(dir, ns_word, "under way before the restart");
    if (begun > 0) splits_recovered++;
    /* The clients go on against the new process for a while. */
    mf_sleep_ms(g_rand_int_range(rand, 300, 700));
    gate_set(1, 0);
    CU_ASSERT_FATAL(wait_parked(nworkers) == 0);
    if (wait_servers_up(10000) != 0) fail("round %d: the memory servers are not all up again", r);

    /* Checks, with every thread parked. */
    int unk = 0, nodes = 0, ops = -ops0;
    for (int i = 0; i < NTREE; i++) unk += resolve_unknowns(&tree[i]);
    for (int i = 0; i < NTREE; i++) ops += tree[i].acked[0] + tree[i].acked[1] + tree[i].acked[2] + tree[i].acked[3];
    total_unknown += unk;
    check_tree(r);
    for (int i = 0; i < NTREE; i++) nodes += check_layouts(&tree[i]);
    check_split_data(r);
    for (int k = 0; k <= r; k++) {
      snprintf(path, sizeof path, "/w/split%d", k);
      check_writer_layout(path);
    }
    check_writer_layout("/w/kv");
    check_writer_layout("/w/q");
    check_writer_layout("/w/f");
    check_kv_data();
    check_queue_data();
    check_file_data();
    mayfly_dir_stats_t s;
    MF_ASSERT_EQ(mayfly_dir_stats(admin, &s), 0);
    MF_ASSERT_EQ(s.durable, 1);
    /* Nothing acknowledged before the last check can be missing from the log. */
    if (s.log_seq < prev_seq) fail("round %d: log_seq %lld went back from %lld", r, (long long)s.log_seq, (long long)prev_seq);
    prev_seq = s.log_seq;
    printf("  %-5d %-6s %5d %6lld %5d %8lld %9lld %8lld %8lld %5lld %5d %5d %5d %6d %6d %6d\n", r,
           kill_kind, begun, (long long)run_ms, down, (long long)s.recovery_ms,
           (long long)s.recovered_records, (long long)s.log_seq, (long long)s.log_records,
           (long long)s.snapshots, ops, unk, nodes, w0.puts + w1.puts - kv0, w2.pushes - q0,
           w3.writes - f0);
    fflush(stdout);
    int nf = failures();
    MF_ASSERT_EQ(nf, 0);
    if (nf > 0) break;
  }
  int acked[4] = {0};
  for (int i = 0; i < NTREE; i++) {
    for (int k = 0; k < 4; k++) acked[k] += tree[i].acked[k];
  }
  printf("  %d rounds in %lld ms; namespace operations acknowledged: %d mkdir, %d create, %d "
         "rename, %d remove\n",
         ROUNDS, (long long)(now_ms() - t_start), acked[0], acked[1], acked[2], acked[3]);
  printf("  kills while a split was under way: %d seen by the test, %d recovered as begun by the "
         "directory; unknown outcomes "
         "settled: %d; kv puts %d (%d failed), queue pushes %d (%d failed, %d popped and "
         "checked), file writes %d (%d failed)\n",
         splits_caught, splits_recovered, total_unknown, w0.puts + w1.puts,
         w0.errors + w1.errors, w2.pushes, w2.errors, w2.popped, w3.writes, w3.errors);
  /* At least one kill landed while a split was under way: the test saw its
   * block taken and not committed, and the directory recovered it begun. */
  CU_ASSERT(splits_caught >= 1);
  CU_ASSERT(splits_recovered >= 1);

  g_mutex_lock(&G.lock);
  G.stop = 1;
  g_cond_broadcast(&G.cond);
  g_mutex_unlock(&G.lock);
  for (int i = 0; i < NTREE + NWRITERS; i++) g_thread_join(threads[i]);
  for (int r = 0; r < ROUNDS; r++) {
    mayfly_unmount(w0.ns[r]);
    g_free(w0.state[r]);
  }
  mayfly_unmount(w1.ns);
  mayfly_unmount(w2.ns);
  mayfly_unmount(w3.ns);
  mayfly_disconnect(w0.c);
  mayfly_disconnect(w1.c);
  mayfly_disconnect(w2.c);
  mayfly_disconnect(w3.c);
  g_byte_array_free(w2.state, TRUE);
  for (int i = 0; i < NTREE; i++) {
    mayfly_disconnect(tree[i].c);
    g_hash_table_destroy(tree[i].model);
    g_hash_table_destroy(tree[i].tainted);
    g_ptr_array_free(tree[i].unknowns, TRUE);
    g_rand_free(tree[i].rand);
  }
  mayfly_disconnect(admin);
  for (int i = 0; i < NMS; i++) MF_ASSERT_EQ(mf_stop(ms[i]), 0);
  MF_ASSERT_EQ(mf_stop(dir), 0);
  g_rand_free(rand);
  char *rm[] = {"rm", "-rf", tmp, NULL};
  g_spawn_sync(NULL, rm, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL, NULL);
  g_free(tmp);
}

static const mf_test_t tests[] = {
    {"kill -9 of the directory loses nothing acknowledged", test_kill9_loses_nothing_acknowledged},
    {NULL, NULL}};

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  return mf_test_run("durable", NULL, NULL, tests);
}
