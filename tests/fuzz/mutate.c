/*
 * The mutation engine of the fuzz replay drivers (see mutate.h): seeds, the
 * seeded PRNG, the generic byte edits, the rounds loop, the corpus writer
 * and the check that the inputs reached every outcome.
 */
#include "mutate.h"

#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fz_start(fz_t *fz, int argc, char **argv, long default_rounds) {
  fz->rounds = default_rounds;
  fz->corpus = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--corpus") == 0 && i + 1 < argc) {
      fz->corpus = argv[++i];
    } else {
      fz->rounds = atol(argv[i]);
    }
  }
  fz->seeds = g_ptr_array_new_with_free_func((GDestroyNotify)g_byte_array_unref);
  fz->rand = g_rand_new_with_seed(fz->seed);
}

void fz_finish(fz_t *fz) {
  g_ptr_array_free(fz->seeds, TRUE);
  g_rand_free(fz->rand);
  fz->seeds = NULL;
  fz->rand = NULL;
}

void fz_add_seed(fz_t *fz, GByteArray *s) { g_ptr_array_add(fz->seeds, s); }

GByteArray *fz_seed(const fz_t *fz, guint i) { return g_ptr_array_index(fz->seeds, i); }

int fz_write_corpus(const fz_t *fz) {
  const char *dir = fz->corpus;
  int rc = 0;
  if (dir == NULL) return 0;
  if (g_mkdir_with_parents(dir, 0755) != 0) {
    fprintf(stderr, "%s: cannot create %s\n", fz->name, dir);
    return -1;
  }
  for (guint i = 0; i < fz->seeds->len; i++) {
    GByteArray *e = fz_seed(fz, i);
    char *file = g_strdup_printf("%s/seed-%u%s", dir, i, fz->corpus_ext);
    GError *err = NULL;
    if (!g_file_set_contents(file, (const gchar *)e->data, e->len, &err)) {
      fprintf(stderr, "%s: %s\n", fz->name, err->message);
      g_error_free(err);
      rc = -1;
    }
    g_free(file);
  }
  return rc;
}

void fz_run(const uint8_t *data, size_t len) {
  uint8_t *copy = malloc(len > 0 ? len : 1);
  if (copy == NULL) abort();
  if (len > 0) memcpy(copy, data, len);
  LLVMFuzzerTestOneInput(copy, len);
  free(copy);
}

int fz_run_seeds(const fz_t *fz) {
  int rc = fz_write_corpus(fz);
  for (guint s = 0; s < fz->seeds->len; s++) {
    GByteArray *seed = fz_seed(fz, s);
    fz_run(seed->data, seed->len);
  }
  return rc;
}

void fz_put_le(uint8_t *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

void fz_put_lie(fz_t *fz, uint8_t *p, const uint64_t *lies, size_t nlies, int n) {
  fz_put_le(p, lies[g_rand_int_range(fz->rand, 0, (gint32)nlies)], n);
}

/* A seed chosen at random. */
static GByteArray *random_seed(fz_t *fz) {
  return fz_seed(fz, (guint)g_rand_int_range(fz->rand, 0, (gint32)fz->seeds->len));
}

void fz_mutate(fz_t *fz, GByteArray *m) {
  GRand *r = fz->rand;
  guint at = m->len > 0 ? (guint)g_rand_int_range(r, 0, (gint32)m->len) : 0;
  const fz_edit_t *e = &fz->edits[g_rand_int_range(r, 0, (gint32)fz->nedits)];
  switch (e->op) {
    case FZ_FLIP:
      if (m->len > 0) m->data[at] ^= (uint8_t)(1u << g_rand_int_range(r, 0, 8));
      break;
    case FZ_BYTE:
      if (m->len > 0) m->data[at] = (uint8_t)g_rand_int(r);
      break;
    case FZ_TRUNCATE:
      g_byte_array_set_size(m, at);
      break;
    case FZ_DUPLICATE: {
      /* Through a copy: appending may move m's data. */
      guint len = (guint)g_rand_int_range(r, 1, (gint32)e->max);
      if (len > m->len - at) len = m->len - at;
      GByteArray *copy = g_byte_array_new();
      g_byte_array_append(copy, m->data + at, len);
      g_byte_array_append(m, copy->data, copy->len);
      g_byte_array_free(copy, TRUE);
      break;
    }
    case FZ_DELETE: {
      guint len = (guint)g_rand_int_range(r, 1, (gint32)e->max);
      if (m->len > 0) g_byte_array_remove_range(m, at, MIN(len, m->len - at));
      break;
    }
    case FZ_APPEND_SEED: {
      GByteArray *o = random_seed(fz);
      g_byte_array_append(m, o->data, o->len);
      break;
    }
    case FZ_SPLICE_TAIL: {
      GByteArray *o = random_seed(fz);
      guint from = o->len > 0 ? (guint)g_rand_int_range(r, 0, (gint32)o->len) : 0;
      g_byte_array_set_size(m, at);
      g_byte_array_append(m, o->data + from, o->len - from);
      break;
    }
    case FZ_ZEROS: {
      guint len = (guint)g_rand_int_range(r, 1, (gint32)e->max);
      guint old = m->len;
      g_byte_array_set_size(m, old + len);
      memset(m->data + old, 0, len);
      break;
    }
    case FZ_RANDOM_TAIL: {
      guint len = (guint)g_rand_int_range(r, 1, (gint32)e->max);
      for (guint i = 0; i < len; i++) {
        uint8_t b = (uint8_t)g_rand_int(r);
        g_byte_array_append(m, &b, 1);
      }
      break;
    }
    case FZ_OWN:
      e->fn(fz, m);
      break;
  }
}

void fz_rounds(fz_t *fz) {
  GRand *r = fz->rand;
  for (long k = 0; k < fz->rounds; k++) {
    GByteArray *seed = random_seed(fz);
    GByteArray *m = fz->round != NULL ? fz->round(fz, seed) : NULL;
    if (m == NULL) {
      m = g_byte_array_new();
      g_byte_array_append(m, seed->data, seed->len);
      int edits = g_rand_int_range(r, 0, 10) < 7 ? 1 : g_rand_int_range(r, 2, fz->edits_max);
      for (int e = 0; e < edits && !(fz->stop_when_empty && m->len == 0); e++) fz_mutate(fz, m);
    }
    fz_run(m->data, m->len);
    g_byte_array_free(m, TRUE);
  }
}

int fz_outcomes_reached(const fz_t *fz, const fz_outcome_t *o, size_t n) {
  int ok = 1;
  for (size_t i = 0; fz->rounds > 0 && i < n; i++) {
    if (o[i].count == 0) {
      fprintf(stderr, "%s: no input reached the outcome \"%s\"\n", fz->name, o[i].what);
      ok = 0;
    }
  }
  if (!ok) {
    fprintf(stderr, "%s: an outcome was never reached; the mutations test too little\n",
            fz->name);
  }
  return ok;
}
