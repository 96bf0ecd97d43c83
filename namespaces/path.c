/*
 * Namespace path rules (see path.h). Pure functions, no allocation except
 * ns_path_parent.
 */
#include "namespaces/path.h"

#include <glib.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"

#define WHY(...)                                   \
  do {                                             \
    if (why != NULL) snprintf(why, whylen, __VA_ARGS__); \
  } while (0)

int ns_path_check(const char *path, char *why, size_t whylen) {
  if (path == NULL || path[0] == '\0') {
    WHY("path is empty");
    return MAYFLY_EBADPATH;
  }
  if (path[0] != '/') {
    WHY("path must be absolute (start with '/')");
    return MAYFLY_EBADPATH;
  }
  size_t len = strnlen(path, NS_PATH_MAX + 1);
  if (len > NS_PATH_MAX) {
    WHY("path is longer than %d bytes", NS_PATH_MAX);
    return MAYFLY_ENAMETOOLONG;
  }
  if (len == 1) return 0; /* the root */
  const char *c = path + 1;
  while (1) {
    const char *end = strchr(c, '/');
    size_t n = end ? (size_t)(end - c) : strlen(c);
    if (n == 0) {
      WHY(end ? "path has an empty component ('//')" : "path must not end with '/'");
      return MAYFLY_EBADPATH;
    }
    if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.')) {
      WHY("path components '.' and '..' are not allowed");
      return MAYFLY_EBADPATH;
    }
    if (n > NS_NAME_MAX) {
      WHY("path component is longer than %d bytes", NS_NAME_MAX);
      return MAYFLY_ENAMETOOLONG;
    }
    for (size_t i = 0; i < n; i++) {
      unsigned char b = (unsigned char)c[i];
      if (b < 0x20 || b == 0x7f) {
        WHY("path contains a control character (byte 0x%02x)", b);
        return MAYFLY_EBADPATH;
      }
    }
    if (end == NULL) break;
    c = end + 1;
  }
  return 0;
}

const char *ns_path_basename(const char *path) {
  const char *slash = strrchr(path, '/');
  return slash ? slash + 1 : path;
}

char *ns_path_parent(const char *path) {
  const char *slash = strrchr(path, '/');
  if (slash == NULL || slash == path) return g_strdup("/");
  return g_strndup(path, (gsize)(slash - path));
}

int ns_path_is_within(const char *path, const char *ancestor) {
  size_t n = strlen(ancestor);
  if (n == 1 && ancestor[0] == '/') return path[0] == '/';
  if (strncmp(path, ancestor, n) != 0) return 0;
  return path[n] == '\0' || path[n] == '/';
}
