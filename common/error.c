/*
 * Mayfly error codes: names and messages, generated from MAYFLY_ERRNO_MAP so the
 * enum, the messages and the names cannot drift apart.
 */
#include "common/error.h"

const char *mayfly_strerror(int err) {
  switch (err) {
    case MAYFLY_OK:
      return "success";
#define MAYFLY__ERR_MSG(name, value, msg) \
  case MAYFLY_##name:                     \
    return msg;
      MAYFLY_ERRNO_MAP(MAYFLY__ERR_MSG)
#undef MAYFLY__ERR_MSG
    default:
      return "unknown error";
  }
}

const char *mayfly_err_name(int err) {
  switch (err) {
    case MAYFLY_OK:
      return "MAYFLY_OK";
#define MAYFLY__ERR_NAME(name, value, msg) \
  case MAYFLY_##name:                      \
    return "MAYFLY_" #name;
      MAYFLY_ERRNO_MAP(MAYFLY__ERR_NAME)
#undef MAYFLY__ERR_NAME
    default:
      return "UNKNOWN";
  }
}
