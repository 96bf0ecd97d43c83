/*
 * Unit tests for namespaces/path.c: the rules every namespace path follows.
 *
 * A path is absolute and '/'-separated; each rejection names its own reason in
 * the caller's buffer. basename, parent and is_within are the helpers the tree
 * and the rename checks are built on.
 */
#include <glib.h>
#include <string.h>

#include "common/error.h"
#include "mf_test.h"
#include "namespaces/path.h"

/* Returns a newly allocated valid path of exactly `total` bytes made of
 * components of `comp` bytes (the last one shorter). Free with g_free. */
static char *path_of_length(size_t total, size_t comp) {
  GString *s = g_string_new(NULL);
  while (s->len < total) {
    g_string_append_c(s, '/');
    for (size_t i = 0; i < comp && s->len < total; i++) g_string_append_c(s, 'a' + (char)(i % 26));
  }
  return g_string_free(s, FALSE);
}

/* Checks a path expected to be rejected with `want`, and that the reason is a
 * non-empty sentence. Returns the reason in `why`. */
static void expect_rejected(const char *path, int want, char *why, size_t whylen) {
  why[0] = '\0';
  MF_ASSERT_EQ(ns_path_check(path, why, whylen), want);
  CU_ASSERT(strlen(why) > 0);
}

static void test_root_is_valid(void) {
  char why[128] = "";
  MF_ASSERT_EQ(ns_path_check("/", why, sizeof why), 0);
  MF_ASSERT_EQ(ns_path_check("/", NULL, 0), 0);
}

static void test_absolute_paths_are_valid(void) {
  const char *ok[] = {"/job42",
                      "/job42/stage1/shuffle-3",
                      "/a",
                      "/.hidden",
                      "/...",
                      "/a..b/..c/c..",
                      "/with space/and_under-score",
                      "/caf\xc3\xa9/\xe2\x82\xac", /* UTF-8 bytes >= 0x80 are not control chars */
                      NULL};
  for (const char **p = ok; *p != NULL; p++) {
    char why[128] = "";
    int rc = ns_path_check(*p, why, sizeof why);
    if (rc != 0) fprintf(stderr, "  %s rejected: %s\n", *p, why);
    MF_ASSERT_EQ(rc, 0);
  }
}

static void test_empty_path_is_rejected(void) {
  char why[128];
  expect_rejected("", MAYFLY_EBADPATH, why, sizeof why);
  expect_rejected(NULL, MAYFLY_EBADPATH, why, sizeof why);
}

static void test_relative_path_is_rejected(void) {
  char why[128];
  expect_rejected("job42", MAYFLY_EBADPATH, why, sizeof why);
  expect_rejected("job42/stage1", MAYFLY_EBADPATH, why, sizeof why);
  expect_rejected("./job42", MAYFLY_EBADPATH, why, sizeof why);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "absolute"));
}

static void test_empty_component_is_rejected(void) {
  char why[128];
  expect_rejected("//", MAYFLY_EBADPATH, why, sizeof why);
  expect_rejected("//a", MAYFLY_EBADPATH, why, sizeof why);
  expect_rejected("/a//b", MAYFLY_EBADPATH, why, sizeof why);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "empty component"));
}

static void test_trailing_slash_is_rejected_except_for_root(void) {
  char why[128];
  expect_rejected("/a/", MAYFLY_EBADPATH, why, sizeof why);
  expect_rejected("/a/b/", MAYFLY_EBADPATH, why, sizeof why);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "end with '/'"));
  MF_ASSERT_EQ(ns_path_check("/", NULL, 0), 0);
}

static void test_dot_and_dotdot_components_are_rejected(void) {
  const char *bad[] = {"/.", "/..", "/a/.", "/a/..", "/a/./b", "/a/../b", "/./a", NULL};
  for (const char **p = bad; *p != NULL; p++) {
    char why[128];
    expect_rejected(*p, MAYFLY_EBADPATH, why, sizeof why);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "'.'"));
  }
}

static void test_control_characters_are_rejected_in_any_component(void) {
  /* Every byte below 0x20 (except NUL, which ends the string) and DEL. */
  for (int b = 1; b <= 0x7f; b++) {
    if (b >= 0x20 && b != 0x7f) continue;
    char first[8], middle[16], last[16];
    snprintf(first, sizeof first, "/%c", b);
    snprintf(middle, sizeof middle, "/a/x%cy/b", b);
    snprintf(last, sizeof last, "/a/b%c", b);
    char why[128];
    expect_rejected(first, MAYFLY_EBADPATH, why, sizeof why);
    expect_rejected(middle, MAYFLY_EBADPATH, why, sizeof why);
    expect_rejected(last, MAYFLY_EBADPATH, why, sizeof why);
    char hex[8];
    snprintf(hex, sizeof hex, "0x%02x", b);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, hex)); /* the reason names the byte */
  }
}

static void test_name_of_255_bytes_is_accepted_and_256_is_too_long(void) {
  char name255[1 + 255 + 1], name256[1 + 256 + 1], nested[3 + 256 + 1];
  name255[0] = '/';
  memset(name255 + 1, 'n', 255);
  name255[256] = '\0';
  name256[0] = '/';
  memset(name256 + 1, 'n', 256);
  name256[257] = '\0';
  memcpy(nested, "/a/", 3);
  memset(nested + 3, 'n', 256);
  nested[259] = '\0';

  MF_ASSERT_EQ(ns_path_check(name255, NULL, 0), 0);
  char why[128];
  expect_rejected(name256, MAYFLY_ENAMETOOLONG, why, sizeof why);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "255"));
  expect_rejected(nested, MAYFLY_ENAMETOOLONG, why, sizeof why);
}

static void test_path_of_4096_bytes_is_accepted_and_4097_is_too_long(void) {
  char *at_max = path_of_length(NS_PATH_MAX, 100);
  char *over = path_of_length(NS_PATH_MAX + 1, 100);
  char *way_over = path_of_length(3 * NS_PATH_MAX, 200);
  MF_ASSERT_EQ(strlen(at_max), NS_PATH_MAX);
  MF_ASSERT_EQ(strlen(over), NS_PATH_MAX + 1);

  char why[128] = "";
  int rc = ns_path_check(at_max, why, sizeof why);
  if (rc != 0) fprintf(stderr, "  4096-byte path rejected: %s\n", why);
  MF_ASSERT_EQ(rc, 0);
  expect_rejected(over, MAYFLY_ENAMETOOLONG, why, sizeof why);
  CU_ASSERT_PTR_NOT_NULL(strstr(why, "4096"));
  expect_rejected(way_over, MAYFLY_ENAMETOOLONG, why, sizeof why);
  g_free(at_max);
  g_free(over);
  g_free(way_over);
}

static void test_each_rule_has_its_own_reason(void) {
  char name256[1 + 256 + 1];
  name256[0] = '/';
  memset(name256 + 1, 'n', 256);
  name256[257] = '\0';
  char *long_path = path_of_length(NS_PATH_MAX + 1, 100);
  const char *bad[] = {"", "rel", "/a//b", "/a/", "/..", "/a\tb", name256, long_path};
  enum { N = sizeof bad / sizeof bad[0] };
  char why[N][128];
  for (int i = 0; i < N; i++) {
    why[i][0] = '\0';
    CU_ASSERT(ns_path_check(bad[i], why[i], sizeof why[i]) != 0);
    CU_ASSERT(strlen(why[i]) > 0);
  }
  for (int i = 0; i < N; i++) {
    for (int j = i + 1; j < N; j++) {
      if (strcmp(why[i], why[j]) == 0) fprintf(stderr, "  same reason for #%d and #%d\n", i, j);
      CU_ASSERT(strcmp(why[i], why[j]) != 0);
    }
  }
  g_free(long_path);
}

static void test_reason_is_truncated_to_the_buffer_and_optional(void) {
  char why[8];
  memset(why, 'X', sizeof why);
  MF_ASSERT_EQ(ns_path_check("rel", why, sizeof why), MAYFLY_EBADPATH);
  MF_ASSERT_EQ(strnlen(why, sizeof why), sizeof why - 1); /* NUL-terminated inside */
  /* No buffer at all still gives the error. */
  MF_ASSERT_EQ(ns_path_check("rel", NULL, 0), MAYFLY_EBADPATH);
  MF_ASSERT_EQ(ns_path_check("/a/..", NULL, 0), MAYFLY_EBADPATH);
}

static void test_basename_is_the_last_component(void) {
  CU_ASSERT_STRING_EQUAL(ns_path_basename("/job42/stage1/shuffle-3"), "shuffle-3");
  CU_ASSERT_STRING_EQUAL(ns_path_basename("/job42"), "job42");
  CU_ASSERT_STRING_EQUAL(ns_path_basename("/"), "");
  const char *p = "/a/bc";
  CU_ASSERT_PTR_EQUAL(ns_path_basename(p), p + 3); /* points into the path */
}

static void test_parent_of_a_path(void) {
  struct {
    const char *path, *parent;
  } cases[] = {{"/job42/stage1/shuffle-3", "/job42/stage1"},
               {"/job42/stage1", "/job42"},
               {"/job42", "/"},
               {"/", "/"}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *p = ns_path_parent(cases[i].path);
    CU_ASSERT_STRING_EQUAL(p, cases[i].parent);
    g_free(p);
  }
}

static void test_is_within_means_equal_or_below(void) {
  MF_ASSERT_EQ(ns_path_is_within("/a", "/a"), 1);
  MF_ASSERT_EQ(ns_path_is_within("/a/b", "/a"), 1);
  MF_ASSERT_EQ(ns_path_is_within("/a/b/c", "/a"), 1);
  MF_ASSERT_EQ(ns_path_is_within("/a/b/c", "/a/b"), 1);
  /* A sibling that shares a prefix is not inside. */
  MF_ASSERT_EQ(ns_path_is_within("/ab", "/a"), 0);
  MF_ASSERT_EQ(ns_path_is_within("/ab/c", "/a"), 0);
  MF_ASSERT_EQ(ns_path_is_within("/a/bc", "/a/b"), 0);
  /* An ancestor is not within its descendant; unrelated paths are not. */
  MF_ASSERT_EQ(ns_path_is_within("/a", "/a/b"), 0);
  MF_ASSERT_EQ(ns_path_is_within("/b", "/a"), 0);
  /* Everything lies within the root, the root included. */
  MF_ASSERT_EQ(ns_path_is_within("/", "/"), 1);
  MF_ASSERT_EQ(ns_path_is_within("/a", "/"), 1);
  MF_ASSERT_EQ(ns_path_is_within("/a/b/c", "/"), 1);
  MF_ASSERT_EQ(ns_path_is_within("/", "/a"), 0);
}

static const mf_test_t tests[] = {
    {"the root \"/\" is a valid path", test_root_is_valid},
    {"absolute paths of one or more components are valid", test_absolute_paths_are_valid},
    {"an empty or NULL path is rejected", test_empty_path_is_rejected},
    {"a relative path is rejected", test_relative_path_is_rejected},
    {"an empty component ('//') is rejected", test_empty_component_is_rejected},
    {"a trailing '/' is rejected except for the root",
     test_trailing_slash_is_rejected_except_for_root},
    {"'.' and '..' components are rejected", test_dot_and_dotdot_components_are_rejected},
    {"control characters, DEL included, are rejected in any component",
     test_control_characters_are_rejected_in_any_component},
    {"a 255-byte name is accepted and a 256-byte name is ENAMETOOLONG",
     test_name_of_255_bytes_is_accepted_and_256_is_too_long},
    {"a 4096-byte path is accepted and a 4097-byte path is ENAMETOOLONG",
     test_path_of_4096_bytes_is_accepted_and_4097_is_too_long},
    {"each rejected rule gives its own reason", test_each_rule_has_its_own_reason},
    {"the reason fits the caller's buffer and the buffer is optional",
     test_reason_is_truncated_to_the_buffer_and_optional},
    {"basename is the last component, empty for the root", test_basename_is_the_last_component},
    {"parent drops the last component; top-level nodes and the root have parent \"/\"",
     test_parent_of_a_path},
    {"is_within holds for the path itself and what lies below, not for prefix siblings",
     test_is_within_means_equal_or_below},
    {NULL, NULL}};

int main(void) {
  return mf_test_run("namespaces/path", NULL, NULL, tests);
}
