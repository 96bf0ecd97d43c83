/*
 * A minimal blocking Redis (RESP2) client for the comparison benchmark: it
 * queues commands, sends them in one write, and reads the replies back, so a
 * pipeline of D commands costs one round trip, as with redis-benchmark -P D.
 */
#ifndef MAYFLY_BENCH_RESP_H
#define MAYFLY_BENCH_RESP_H

#include <stddef.h>
#include <stdint.h>

typedef struct resp resp_t;

/* Connects to host:port; NULL on failure. */
resp_t *resp_connect(const char *host, int port);
void resp_close(resp_t *r);

/* Queues one command of argc arguments (binary-safe). */
void resp_cmd(resp_t *r, int argc, const char *const *argv, const size_t *lens);

/* Sends every queued command. Returns 0 or -1. */
int resp_flush(resp_t *r);

/* Reads one reply. Returns its type ('+', '-', ':', '$' with *len = -1 for
 * nil, '*') and points *data at bulk or status bytes valid until the next
 * read, or -1 on a broken stream. */
int resp_read(resp_t *r, const uint8_t **data, int64_t *len);

#endif /* MAYFLY_BENCH_RESP_H */
