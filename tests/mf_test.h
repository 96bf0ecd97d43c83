/*
 * Shared CUnit scaffolding for Mayfly's test executables.
 *
 * CUnit's basic runner returns 0 even when assertions fail, so every test
 * executable ends with mf_test_run(), whose exit status comes from the failure
 * counts: 0 only when every test ran and no assertion failed.
 *
 * Usage:
 *   static void test_x(void) { CU_ASSERT_EQUAL(f(), 0); }
 *   static const mf_test_t tests[] = {{"x does y", test_x}, {NULL, NULL}};
 *   int main(void) { return mf_test_run("suite", NULL, NULL, tests); }
 */
#ifndef MAYFLY_TEST_H
#define MAYFLY_TEST_H

#include <CUnit/Basic.h>
#include <stdio.h>

typedef struct {
  const char *name;
  void (*fn)(void);
} mf_test_t;

/* Prints both values when an integer comparison fails, like libuv's ASSERT_EQ. */
#define MF_ASSERT_EQ(a, b)                                                           \
  do {                                                                               \
    long long mf_a_ = (long long)(a), mf_b_ = (long long)(b);                        \
    if (mf_a_ != mf_b_)                                                              \
      fprintf(stderr, "  %s:%d: %s == %lld, expected %s == %lld\n", __FILE__, __LINE__, \
              #a, mf_a_, #b, mf_b_);                                                 \
    CU_ASSERT_EQUAL(mf_a_, mf_b_);                                                   \
  } while (0)

static inline int mf_test_run(const char *suite_name, int (*init)(void), int (*cleanup)(void),
                              const mf_test_t *tests) {
  if (CU_initialize_registry() != CUE_SUCCESS) return 2;
  CU_pSuite suite = CU_add_suite(suite_name, init, cleanup);
  if (suite == NULL) return 2;
  for (const mf_test_t *t = tests; t->name != NULL; t++) {
    if (CU_add_test(suite, t->name, t->fn) == NULL) return 2;
  }
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                    CU_get_number_of_suites_failed();
  unsigned ran = CU_get_number_of_tests_run();
  CU_cleanup_registry();
  if (ran == 0) {
    fprintf(stderr, "%s: no test ran\n", suite_name);
    return 1;
  }
  return failed == 0 ? 0 : 1;
}

#endif /* MAYFLY_TEST_H */
