/*
 * The smallest libmayfly application, built by tests/install/test_install.sh
 * against the installed header and library only (through pkg-config): it
 * connects to the directory named by its argument, mounts a kv namespace,
 * puts a key, gets it back and prints "KEY=VALUE".
 */
#include <mayfly.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: hello DIRECTORY-HOST:PORT\n");
    return 2;
  }
  mayfly_client_t *c = NULL;
  int rc = mayfly_connect(argv[1], NULL, &c);
  if (rc != 0) {
    fprintf(stderr, "hello: connect: %s (%s)\n", mayfly_strerror(rc), mayfly_last_error());
    return 1;
  }
  mayfly_ns_t *ns = NULL;
  rc = mayfly_mount(c, "/hello/kv", MAYFLY_KIND_KV, NULL, &ns);
  if (rc != 0) {
    fprintf(stderr, "hello: mount: %s (%s)\n", mayfly_err_name(rc), mayfly_last_error());
    mayfly_disconnect(c);
    return 1;
  }
  const char *key = "greeting", *val = "hello from libmayfly";
  void *got = NULL;
  size_t len = 0;
  rc = mayfly_kv_put(ns, key, strlen(key), val, strlen(val));
  if (rc == 0) rc = mayfly_kv_get(ns, key, strlen(key), &got, &len);
  if (rc == 0) {
    printf("%s=%.*s\n", key, (int)len, (const char *)got);
  } else {
    fprintf(stderr, "hello: kv: %s (%s)\n", mayfly_err_name(rc), mayfly_last_error());
  }
  mayfly_free(got);
  mayfly_unmount(ns);
  mayfly_disconnect(c);
  return rc == 0 ? 0 : 1;
}
