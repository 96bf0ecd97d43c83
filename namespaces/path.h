/*
 * Namespace path rules.
 *
 * A path is absolute and '/'-separated: "/", "/job42", "/job42/stage1/shuffle-3".
 * Rejected, each with its own message: a path that does not start with '/', an
 * empty component ("//", or a trailing '/' except the root), "." and "..",
 * control characters (bytes below 0x20 and 0x7f), a component longer than
 * NS_NAME_MAX bytes and a path longer than NS_PATH_MAX bytes.
 */
#ifndef MAYFLY_NS_PATH_H
#define MAYFLY_NS_PATH_H

#include <stddef.h>

#define NS_NAME_MAX 255
#define NS_PATH_MAX 4096

/* Checks a path. Returns 0, MAYFLY_EBADPATH or MAYFLY_ENAMETOOLONG; when `why`
 * is not NULL it receives a sentence saying what is wrong. */
int ns_path_check(const char *path, char *why, size_t whylen);

/* Returns the last component of a valid path ("" for "/"); points into path. */
const char *ns_path_basename(const char *path);

/* Returns a newly allocated copy of the parent of a valid path ("/" for a
 * top-level node and for "/" itself). Free with g_free. */
char *ns_path_parent(const char *path);

/* Returns 1 if `path` equals `ancestor` or lies below it, else 0. */
int ns_path_is_within(const char *path, const char *ancestor);

#endif /* MAYFLY_NS_PATH_H */
