/*
 * Allocator statistics (see allocstats.h). The allocator is looked up by
 * symbol at run time: jemalloc exports mallctl when it is linked, the
 * sanitizer runtimes export __sanitizer_get_current_allocated_bytes, and
 * glibc always has mallinfo2.
 */
#define _GNU_SOURCE
#include "memserver/allocstats.h"

#include <dlfcn.h>
#include <malloc.h>
#include <stddef.h>

#include "common/wire.h"

typedef int (*mallctl_fn)(const char *, void *, size_t *, void *, size_t);
typedef size_t (*size_fn)(void);

static void *symbol(const char *name) {
  return dlsym(RTLD_DEFAULT, name);
}

static int from_jemalloc(uint64_t *allocated, uint64_t *resident) {
  mallctl_fn mallctl;
  *(void **)&mallctl = symbol("mallctl");
  if (mallctl == NULL) return 0;
  /* The statistics are a snapshot taken at the last epoch: refresh it. */
  uint64_t epoch = 1;
  size_t len = sizeof epoch;
  if (mallctl("epoch", &epoch, &len, &epoch, len) != 0) return 0;
  size_t a = 0, r = 0;
  len = sizeof a;
  if (mallctl("stats.allocated", &a, &len, NULL, 0) != 0) return 0;
  len = sizeof r;
  if (mallctl("stats.resident", &r, &len, NULL, 0) != 0) return 0;
  *allocated = a;
  *resident = r;
  return 1;
}

static int from_sanitizer(uint64_t *allocated, uint64_t *resident) {
  size_fn current, heap;
  *(void **)&current = symbol("__sanitizer_get_current_allocated_bytes");
  *(void **)&heap = symbol("__sanitizer_get_heap_size");
  if (current == NULL || heap == NULL) return 0;
  *allocated = current();
  *resident = heap();
  return 1;
}

int ms_alloc_stats(uint64_t *allocated, uint64_t *resident) {
  *allocated = *resident = 0;
  if (from_jemalloc(allocated, resident)) return WIRE_ALLOC_STATS_JEMALLOC;
  if (from_sanitizer(allocated, resident)) return WIRE_ALLOC_STATS_SANITIZER;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  struct mallinfo2 mi = mallinfo2();
  *allocated = mi.uordblks + mi.hblkhd;
  *resident = mi.arena + mi.hblkhd;
  return WIRE_ALLOC_STATS_GLIBC;
#else
  return WIRE_ALLOC_STATS_NONE;
#endif
}
