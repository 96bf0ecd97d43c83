/*
 * The check the fuzz targets use for the answers they verify. It aborts (so
 * libFuzzer keeps the input and the replay driver's test fails) and, unlike
 * assert, stays on in every build type. Header only, so the targets build
 * alone as libFuzzer binaries.
 */
#ifndef MAYFLY_TESTS_FUZZ_FZ_CHECK_H
#define MAYFLY_TESTS_FUZZ_FZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

/* Aborts with the file, line and condition when cond is false. */
#define FZ_CHECK(cond)                                                              \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);     \
      abort();                                                                      \
    }                                                                               \
  } while (0)

#endif
