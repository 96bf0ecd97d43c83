/*
 * Logging to stderr. A line is formatted into a local buffer and written with a
 * single write(2), so lines from several threads never interleave.
 */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/check.h"
#include "common/error.h"

mf_log_level_t mf_log_threshold = MF_LOG_INFO;
static const char *log_program = "mayfly";

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void mf_log_init(const char *program, mf_log_level_t threshold) {
  log_program = program;
  mf_log_threshold = threshold;
}

int mf_log_parse_level(const char *s, mf_log_level_t *out) {
  static const char *const names[] = {"debug", "info", "warn", "error", "off"};
  for (int i = 0; i <= MF_LOG_OFF; i++) {
    if (strcmp(s, names[i]) == 0) {
      *out = (mf_log_level_t)i;
      return 0;
    }
  }
  return MAYFLY_EINVAL;
}

void mf_log_write(mf_log_level_t level, const char *fmt, ...) {
  char line[2048];
  struct timeval tv;
  struct tm tm;
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s ",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                   tm.tm_sec, (long)(tv.tv_usec / 1000), log_program,
                   level_names[level < MF_LOG_OFF ? level : MF_LOG_ERROR]);
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  va_end(ap);
  size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
  if (len > sizeof line - 2) len = sizeof line - 2;
  line[len++] = '\n';
  ssize_t w = write(STDERR_FILENO, line, len);
  (void)w;
}

void mf_check_failed(const char *cond, const char *file, int line, const char *func) {
  mf_log_write(MF_LOG_ERROR, "invariant broken at %s:%d (%s): %s; aborting", file, line, func,
               cond);
  abort();
}
