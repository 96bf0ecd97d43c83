/*
 * mayfly-wordcount: a word count done the serverless way, on Mayfly.
 *
 * The driver puts the input text into a file namespace, then runs a map
 * stage and a reduce stage as separate processes, which share nothing but
 * Mayfly:
 *   mapper i    reads its slice of /wordcount/<run>/input, counts words, stores
 *               the counts in the kv namespace /wordcount/<run>/map-<i>, and
 *               pushes each distinct word onto the queue /wordcount/<run>/keys-<r>
 *               of the reducer r that owns it (hash of the word mod reducers);
 *   reducer r   pops its words, sums each word's count over every mapper's kv
 *               namespace, and pushes "count word" onto /wordcount/<run>/results.
 * The driver pops the results, prints the top words, checks them against a
 * count of its own, and removes /wordcount/<run>.
 */
#include <ctype.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/mayfly.h"
#include "common/wire.h"

typedef struct {
  char *directory;
  int mappers, reducers, words, top;
  char *input;
  char run[64];
} wc_t;

static void die(const char *what, const char *path, int rc) {
  fprintf(stderr, "mayfly-wordcount: %s %s: %s (%s)\n", what, path ? path : "",
          mayfly_strerror(rc), mayfly_last_error());
  exit(1);
}

static mayfly_client_t *client(const wc_t *w) {
  mayfly_client_t *c = NULL;
  int rc = mayfly_connect(w->directory, NULL, &c);
  if (rc != 0) die("connect", w->directory, rc);
  return c;
}

static mayfly_ns_t *mount(mayfly_client_t *c, const char *path, mayfly_kind_t kind, int blocks) {
  mayfly_create_options_t o = {.blocks = blocks};
  mayfly_ns_t *ns = NULL;
  int rc = mayfly_mount(c, path, kind, &o, &ns);
  if (rc != 0) die("mount", path, rc);
  return ns;
}

/* A made-up text: words from a vocabulary of syllables, Zipf-distributed so
 * the top of the count means something. */
static GString *make_text(int nwords) {
  static const char *const syl[] = {"ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo",
                                    "ze", "pa", "qui", "do", "fe", "gu", "ha", "jo"};
  enum { VOCAB = 3000 };
  char *vocab[VOCAB];
  double cum[VOCAB], total = 0;
  for (int i = 0; i < VOCAB; i++) {
    GString *wd = g_string_new(NULL);
    int x = i + 1;
    do {
      g_string_append(wd, syl[x % 16]);
      x /= 16;
    } while (x > 0);
    vocab[i] = g_string_free(wd, FALSE);
    total += 1.0 / (i + 1);
    cum[i] = total;
  }
  GString *text = g_string_new(NULL);
  GRand *r = g_rand_new_with_seed(42);
  for (int n = 0; n < nwords; n++) {
    double u = g_rand_double(r) * total;
    int lo = 0, hi = VOCAB - 1;
    while (lo < hi) {
      int mid = (lo + hi) / 2;
      if (cum[mid] < u) lo = mid + 1; else hi = mid;
    }
    g_string_append(text, vocab[lo]);
    g_string_append_c(text, (n + 1) % 12 == 0 ? '\n' : ' ');
  }
  g_rand_free(r);
  for (int i = 0; i < VOCAB; i++) g_free(vocab[i]);
  return text;
}

static void count_words(const char *s, size_t len, GHashTable *counts) {
  size_t i = 0;
  while (i < len) {
    while (i < len && !isalnum((unsigned char)s[i])) i++;
    size_t start = i;
    while (i < len && isalnum((unsigned char)s[i])) i++;
    if (i > start) {
      char *wd = g_ascii_strdown(s + start, (gssize)(i - start));
      gpointer old = g_hash_table_lookup(counts, wd);
      g_hash_table_replace(counts, wd, GSIZE_TO_POINTER(GPOINTER_TO_SIZE(old) + 1));
    }
  }
}

static void mapper(const wc_t *w, int i) {
  mayfly_client_t *c = client(w);
  char path[256];
  snprintf(path, sizeof path, "/wordcount/%s/input", w->run);
  mayfly_ns_t *in = mount(c, path, MAYFLY_KIND_FILE, 1);
  int64_t size = mayfly_file_size(in);
  if (size < 0) die("size", path, (int)size);
  /* My slice, widened to whole words: start after the first separator at
   * or after my start (unless at 0) and run to the first one at or after my
   * end. */
  int64_t from = size * i / w->mappers, to = size * (i + 1) / w->mappers;
  int64_t pad = 256;
  int64_t rfrom = from > 0 ? from - 1 : 0, rto = MIN(size, to + pad);
  char *buf = g_malloc((size_t)(rto - rfrom) + 1);
  int64_t got = mayfly_file_read(in, (uint64_t)rfrom, buf, (size_t)(rto - rfrom));
  if (got < 0) die("read", path, (int)got);
  int64_t s = 0;
  if (from > 0) {
    while (s < got && isalnum((unsigned char)buf[s])) s++; /* the word before me is not mine */
  }
  int64_t e = to - rfrom;
  while (e < got && isalnum((unsigned char)buf[e])) e++;
  GHashTable *counts = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  if (e > s) count_words(buf + s, (size_t)(e - s), counts);
  g_free(buf);
  mayfly_unmount(in);

  snprintf(path, sizeof path, "/wordcount/%s/map-%d", w->run, i);
  mayfly_ns_t *kv = mount(c, path, MAYFLY_KIND_KV, 2);
  mayfly_ns_t **keys = g_new(mayfly_ns_t *, w->reducers);
  for (int r = 0; r < w->reducers; r++) {
    snprintf(path, sizeof path, "/wordcount/%s/keys-%d", w->run, r);
    keys[r] = mount(c, path, MAYFLY_KIND_QUEUE, 1);
  }
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, counts);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    char num[32];
    int n = snprintf(num, sizeof num, "%zu", GPOINTER_TO_SIZE(v));
    int rc = mayfly_kv_put(kv, k, strlen(k), num, (size_t)n);
    if (rc != 0) die("put", k, rc);
    rc = mayfly_queue_push(keys[wire_kv_slot(k, strlen(k)) % w->reducers], k, strlen(k));
    if (rc != 0) die("push", k, rc);
  }
  printf("  mapper %d: bytes [%lld, %lld), %u distinct words\n", i, (long long)from, (long long)to,
         g_hash_table_size(counts));
  fflush(stdout);
  for (int r = 0; r < w->reducers; r++) mayfly_unmount(keys[r]);
  g_free(keys);
  mayfly_unmount(kv);
  g_hash_table_destroy(counts);
  mayfly_disconnect(c);
}

static void reducer(const wc_t *w, int r) {
  mayfly_client_t *c = client(w);
  char path[256];
  snprintf(path, sizeof path, "/wordcount/%s/keys-%d", w->run, r);
  mayfly_ns_t *keys = mount(c, path, MAYFLY_KIND_QUEUE, 1);
  snprintf(path, sizeof path, "/wordcount/%s/results", w->run);
  mayfly_ns_t *results = mount(c, path, MAYFLY_KIND_QUEUE, 1);
  mayfly_ns_t **maps = g_new(mayfly_ns_t *, w->mappers);
  for (int i = 0; i < w->mappers; i++) {
    snprintf(path, sizeof path, "/wordcount/%s/map-%d", w->run, i);
    maps[i] = mount(c, path, MAYFLY_KIND_KV, 2);
  }
  GHashTable *seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  for (;;) {
    void *wd = NULL;
    size_t len = 0;
    int rc = mayfly_queue_pop(keys, &wd, &len, 0);
    if (rc == MAYFLY_EAGAIN) break; /* the map stage is over: empty means done */
    if (rc != 0) die("pop", "keys", rc);
    char *word = g_strndup(wd, len);
    mayfly_free(wd);
    if (!g_hash_table_add(seen, word)) continue;
    long long total = 0;
    for (int i = 0; i < w->mappers; i++) {
      void *v = NULL;
      size_t vlen = 0;
      rc = mayfly_kv_get(maps[i], word, strlen(word), &v, &vlen);
      if (rc == 0) {
        char *num = g_strndup(v, vlen);
        total += atoll(num);
        g_free(num);
      } else if (rc != MAYFLY_ENOKEY) {
        die("get", word, rc);
      }
      mayfly_free(v);
    }
    char line[512];
    int n = snprintf(line, sizeof line, "%lld %s", total, word);
    if ((rc = mayfly_queue_push(results, line, (size_t)n)) != 0) die("push", "results", rc);
  }
  printf("  reducer %d: %u words\n", r, g_hash_table_size(seen));
  fflush(stdout);
  g_hash_table_destroy(seen);
  for (int i = 0; i < w->mappers; i++) mayfly_unmount(maps[i]);
  g_free(maps);
  mayfly_unmount(keys);
  mayfly_unmount(results);
  mayfly_disconnect(c);
}

/* Runs fn(i) in n child processes and waits for them; exits on a failure. */
static void stage(const wc_t *w, const char *name, int n, void (*fn)(const wc_t *, int)) {
  pid_t *pids = g_new(pid_t, n);
  for (int i = 0; i < n; i++) {
    fflush(stdout);
    pids[i] = fork();
    if (pids[i] == 0) {
      fn(w, i);
      _exit(0);
    }
  }
  int failed = 0;
  for (int i = 0; i < n; i++) {
    int st;
    waitpid(pids[i], &st, 0);
    failed |= !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  }
  g_free(pids);
  if (failed) {
    fprintf(stderr, "mayfly-wordcount: a %s process failed\n", name);
    exit(1);
  }
}

typedef struct {
  long long n;
  char *word;
} entry_t;

static int cmp_entry(const void *a, const void *b) {
  const entry_t *x = a, *y = b;
  if (x->n != y->n) return x->n < y->n ? 1 : -1;
  return strcmp(x->word, y->word);
}

int main(int argc, char **argv) {
  wc_t w = {.mappers = 4, .reducers = 2, .words = 200000, .top = 10};
  GOptionEntry e[] = {
      {"directory", 'd', 0, G_OPTION_ARG_STRING, &w.directory, "Directory (default $MAYFLY_DIRECTORY)", "HOST:PORT"},
      {"mappers", 'm', 0, G_OPTION_ARG_INT, &w.mappers, "Mapper processes (default 4)", "N"},
      {"reducers", 'r', 0, G_OPTION_ARG_INT, &w.reducers, "Reducer processes (default 2)", "N"},
      {"words", 'w', 0, G_OPTION_ARG_INT, &w.words, "Words of generated text (default 200000)", "N"},
      {"input", 'i', 0, G_OPTION_ARG_FILENAME, &w.input, "Count this file instead", "FILE"},
      {"top", 't', 0, G_OPTION_ARG_INT, &w.top, "How many top words to print (default 10)", "N"},
      {NULL}};
  GOptionContext *ctx = g_option_context_new(NULL);
  g_option_context_set_summary(ctx, "A serverless-style word count on Mayfly.");
  g_option_context_add_main_entries(ctx, e, NULL);
  GError *err = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &err) || w.mappers < 1 || w.reducers < 1 ||
      w.words < 1 || w.top < 1) {
    fprintf(stderr, "mayfly-wordcount: %s\n", err ? err->message : "counts must be positive");
    return 2;
  }
  g_option_context_free(ctx);
  snprintf(w.run, sizeof w.run, "run-%d", (int)getpid());

  GString *text;
  if (w.input != NULL) {
    char *data;
    gsize len;
    if (!g_file_get_contents(w.input, &data, &len, &err)) {
      fprintf(stderr, "mayfly-wordcount: %s\n", err->message);
      return 1;
    }
    text = g_string_new_len(data, (gssize)len);
    g_free(data);
  } else {
    text = make_text(w.words);
  }

  mayfly_client_t *c = client(&w);
  char path[256];
  snprintf(path, sizeof path, "/wordcount/%s/input", w.run);
  mayfly_ns_t *in = mount(c, path, MAYFLY_KIND_FILE, 1);
  int rc = mayfly_file_write(in, 0, text->str, text->len);
  if (rc != 0) die("write", path, rc);
  mayfly_stat_t *st = NULL;
  if (mayfly_stat(c, path, &st) == 0) {
    printf("word count %s: %zu bytes of input in %s over %zu blocks\n", w.run, text->len, path,
           st->npartitions);
    mayfly_stat_free(st);
  }
  printf("map stage: %d processes\n", w.mappers);
  stage(&w, "mapper", w.mappers, mapper);
  printf("reduce stage: %d processes\n", w.reducers);
  stage(&w, "reducer", w.reducers, reducer);

  snprintf(path, sizeof path, "/wordcount/%s/results", w.run);
  mayfly_ns_t *results = mount(c, path, MAYFLY_KIND_QUEUE, 1);
  GArray *all = g_array_new(FALSE, FALSE, sizeof(entry_t));
  for (;;) {
    void *v = NULL;
    size_t len = 0;
    rc = mayfly_queue_pop(results, &v, &len, 0);
    if (rc == MAYFLY_EAGAIN) break;
    if (rc != 0) die("pop", path, rc);
    char *line = g_strndup(v, len);
    mayfly_free(v);
    char *sp = strchr(line, ' ');
    entry_t en = {atoll(line), g_strdup(sp ? sp + 1 : "")};
    g_array_append_val(all, en);
    g_free(line);
  }
  g_array_sort(all, cmp_entry);

  /* Check against a count of our own. */
  GHashTable *local = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  count_words(text->str, text->len, local);
  int mismatches = all->len == g_hash_table_size(local) ? 0 : 1;
  for (guint i = 0; i < all->len; i++) {
    entry_t *en = &g_array_index(all, entry_t, i);
    if ((long long)GPOINTER_TO_SIZE(g_hash_table_lookup(local, en->word)) != en->n) mismatches++;
  }
  printf("top %d words of %u distinct:\n", w.top, all->len);
  for (guint i = 0; i < all->len && i < (guint)w.top; i++) {
    entry_t *en = &g_array_index(all, entry_t, i);
    printf("  %8lld  %s\n", en->n, en->word);
  }
  printf(mismatches == 0 ? "verified: every count matches a local count of the input\n"
                         : "MISMATCH: %d words differ from a local count\n",
         mismatches);
  mayfly_unmount(results);
  mayfly_unmount(in);
  snprintf(path, sizeof path, "/wordcount/%s", w.run);
  rc = mayfly_remove(c, path, 1);
  if (rc != 0) die("remove", path, rc);
  printf("removed %s\n", path);
  for (guint i = 0; i < all->len; i++) g_free(g_array_index(all, entry_t, i).word);
  g_array_free(all, TRUE);
  g_hash_table_destroy(local);
  g_string_free(text, TRUE);
  mayfly_disconnect(c);
  g_free(w.directory);
  g_free(w.input);
  return mismatches == 0 ? 0 : 1;
}
