/*
 * The memory server's allocator statistics, for WIRE_OP_SERVER_STAT: what
 * the allocator that serves this process says it holds. Which allocator that
 * is depends on the build (jemalloc in release builds, the sanitizer's in
 * sanitizer builds, glibc otherwise) and is found at run time, so the
 * figures always come from the allocator actually in use, never from what
 * the code thinks it allocated.
 */
#ifndef MAYFLY_MS_ALLOCSTATS_H
#define MAYFLY_MS_ALLOCSTATS_H

#include <stdint.h>

/* Fills *allocated (bytes handed to the program and not freed) and *resident
 * (bytes of the allocator's memory that are resident, its bookkeeping
 * included) and returns where they come from: WIRE_ALLOC_STATS_JEMALLOC
 * (mallctl "stats.allocated" / "stats.resident" after an "epoch" refresh),
 * WIRE_ALLOC_STATS_SANITIZER (the sanitizer allocator's current allocated
 * bytes and heap size), WIRE_ALLOC_STATS_GLIBC (mallinfo2: in-use bytes,
 * and arena plus mmapped bytes) or WIRE_ALLOC_STATS_NONE with both 0.
 * Any thread; costs a few microseconds (jemalloc merges its arenas' stats). */
int ms_alloc_stats(uint64_t *allocated, uint64_t *resident);

#endif /* MAYFLY_MS_ALLOCSTATS_H */
