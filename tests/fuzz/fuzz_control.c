/*
 * Fuzz target for the directory's request path: arbitrary bytes as one
 * frame's payload go through the bounded compact-protocol check, the Thrift
 * processor and the handlers, exactly as a connection's frames do. The
 * directory state persists across inputs, so sequences of valid calls build
 * up a tree for later inputs to hit.
 *
 * Built as a libFuzzer target with clang (-DMAYFLY_FUZZ=ON); with any
 * compiler it is also linked with fuzz_driver.c into a CTest that replays
 * seeds and their deterministic mutations.
 */
#include <stddef.h>
#include <stdint.h>

#include "common/log.h"
#include "directory/directory.h"
#include "directory/server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Inputs that got past the frame check into the processor (for the driver's
 * report: a fuzz run that never reaches the handlers tests little). */
long fuzz_control_processed;

static dir_t dir;
static dir_rpc_t *rpc;
static uv_loop_t loop;

static void setup(void) {
  dir_config_t cfg = {.lease_ms = 10000,
                      .grace_ms = 10000,
                      .heartbeat_ms = 1000,
                      .heartbeat_timeout_ms = 5000,
                      .max_frame = 1 << 20,
                      .max_connections = 10};
  mf_log_init("fuzz", MF_LOG_OFF);
  uv_loop_init(&loop);
  dir_init(&dir, &loop, &cfg, NULL, NULL);
  rpc = dir_rpc_new(&dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (rpc == NULL) setup();
  if (size > (1u << 20)) return 0;
  GByteArray *out = g_byte_array_new();
  char why[160];
  /* Deferral allowed: a watch that would wait returns 1 and holds nothing
   * (the server, not the handler, would keep the request). */
  dir_evlog_t *wait_log = NULL;
  int64_t wait_ms = 0;
  /* One session for every input, as one connection would have (the
   * directory runs open, so every method is reached). */
  static dir_session_t session;
  if (dir_rpc_call(rpc, &session, data, (uint32_t)size, DIR_RPC_CAN_DEFER, out, &wait_log,
                   &wait_ms, why, sizeof why) >= 0) {
    fuzz_control_processed++;
  }
  g_byte_array_free(out, TRUE);
  return 0;
}
