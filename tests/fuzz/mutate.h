/*
 * The mutation engine the fuzz replay drivers share (prefix fz_): it replays
 * a fuzz target (LLVMFuzzerTestOneInput, linked in from the target's .c)
 * without libFuzzer, on the driver's seeds and on deterministic mutations of
 * them. A driver describes its edits as a table: generic byte edits of the
 * engine (bit flips, random bytes, truncations, duplicated and deleted
 * ranges, splices of another seed, zero and random tails) and edits of its
 * own that know the format (lengths that lie and the like). The PRNG is
 * GLib's, seeded with a fixed number per driver, so every run of a driver
 * sees the same inputs.
 */
#ifndef MAYFLY_TESTS_FUZZ_MUTATE_H
#define MAYFLY_TESTS_FUZZ_MUTATE_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

/* The fuzz target the driver is linked with. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct fz fz_t;

/* A driver's own edit of m; it draws what it needs from fz->rand. */
typedef void (*fz_edit_fn)(fz_t *fz, GByteArray *m);

typedef enum {
  FZ_FLIP,        /* flip one bit at `at` */
  FZ_BYTE,        /* a random byte at `at` */
  FZ_TRUNCATE,    /* cut m at `at` */
  FZ_DUPLICATE,   /* append a copy of 1 to max-1 bytes from `at` */
  FZ_DELETE,      /* delete 1 to max-1 bytes at `at` */
  FZ_APPEND_SEED, /* append a whole seed chosen at random */
  FZ_SPLICE_TAIL, /* cut m at `at` and append a random tail of a random seed */
  FZ_ZEROS,       /* append 1 to max-1 zero bytes */
  FZ_RANDOM_TAIL, /* append 1 to max-1 random bytes */
  FZ_OWN,         /* the driver's own edit, fn */
} fz_op_t;

/* One entry of a driver's edit table; each entry is drawn equally often.
 * Before the entry, every edit draws a random offset `at` in the input. */
typedef struct {
  fz_op_t op;
  guint max;     /* the exclusive bound of the length, where the op has one */
  fz_edit_fn fn; /* for FZ_OWN */
} fz_edit_t;

/* The first entries of every driver's table: a bit flip, a random byte, a
 * truncation, a duplicated range of up to dup_max-1 bytes and a deleted range
 * of up to 15. */
#define FZ_BASIC_EDITS(dup_max)                                                      \
  {.op = FZ_FLIP}, {.op = FZ_BYTE}, {.op = FZ_TRUNCATE},                              \
      {.op = FZ_DUPLICATE, .max = (dup_max)}, {.op = FZ_DELETE, .max = 16}

struct fz {
  /* Set by the driver before fz_start. */
  const char *name;         /* e.g. "fuzz_wire", for messages */
  const char *corpus_ext;   /* the corpus files' extension, e.g. ".wire" */
  guint32 seed;             /* the PRNG's fixed seed */
  const fz_edit_t *edits;   /* the edit table */
  guint nedits;
  int edits_max;            /* a round makes 1 edit, or (3 in 10) 2 to edits_max-1 */
  gboolean stop_when_empty; /* stop a round's edits once the input is empty */
  /* A round's own input, or NULL for the usual byte edits of a seed copy.
   * Optional; it may draw from fz->rand (and must, identically, to stay
   * deterministic). */
  GByteArray *(*round)(fz_t *fz, const GByteArray *seed);
  void *ud; /* the driver's, for its edits and round */
  /* Set by fz_start. */
  long rounds;        /* mutated inputs to run */
  const char *corpus; /* where fz_write_corpus writes the seeds, or NULL */
  GPtrArray *seeds;   /* GByteArray *, freed by fz_finish */
  GRand *rand;
};

/* Parses the command line every driver takes, [ROUNDS] [--corpus DIR] (a
 * bare number is the rounds, default_rounds when absent), and creates the
 * seed array and the seeded PRNG; call before adding seeds. */
void fz_start(fz_t *fz, int argc, char **argv, long default_rounds);

/* Frees the seeds and the PRNG. */
void fz_finish(fz_t *fz);

/* Adds a seed; the engine takes ownership of s. */
void fz_add_seed(fz_t *fz, GByteArray *s);

/* Returns seed i (i < fz->seeds->len). */
GByteArray *fz_seed(const fz_t *fz, guint i);

/* With --corpus DIR, writes every seed to DIR (created if missing) as
 * seed-N<corpus_ext>, to start a libFuzzer run. Returns 0 (also without
 * --corpus), or -1 after printing what failed. */
int fz_write_corpus(const fz_t *fz);

/* Runs the target on a heap copy of exactly len bytes, so that under
 * AddressSanitizer a read past the end is reported. */
void fz_run(const uint8_t *data, size_t len);

/* Writes the corpus when asked (fz_write_corpus), then runs the target on
 * every seed. Returns 0, or -1 when the corpus could not be written. */
int fz_run_seeds(const fz_t *fz);

/* Applies one edit drawn from the driver's table to m. */
void fz_mutate(fz_t *fz, GByteArray *m);

/* Runs fz->rounds mutated inputs: each picks a seed, then takes the
 * driver's round hook's input, or else a copy of the seed with 1 or more
 * edits. */
void fz_rounds(fz_t *fz);

/* Writes v as n little-endian bytes at p. */
void fz_put_le(uint8_t *p, uint64_t v, int n);

/* Writes one of the nlies values in lies, chosen at random, as n
 * little-endian bytes at p: a length or field that lies. */
void fz_put_lie(fz_t *fz, uint8_t *p, const uint64_t *lies, size_t nlies, int n);

/* One outcome a driver's inputs must reach, and how often they did. */
typedef struct {
  const char *what;
  long count;
} fz_outcome_t;

/* Returns 1 when fz->rounds is 0 or every outcome was reached; otherwise
 * prints the ones never reached and returns 0. */
int fz_outcomes_reached(const fz_t *fz, const fz_outcome_t *o, size_t n);

#endif
