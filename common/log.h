/*
 * Logging: one macro, MF_LOG(level, fmt, ...), one line per event on stderr.
 *
 * Each line carries a UTC timestamp, the program name, the level and the
 * message; callers put the peer or namespace the event concerns in the
 * message ("peer 127.0.0.1:5123: frame of 9 MB exceeds limit"). The level
 * threshold is process-wide and set once at start-up.
 */
#ifndef MAYFLY_LOG_H
#define MAYFLY_LOG_H

typedef enum {
  MF_LOG_DEBUG = 0,
  MF_LOG_INFO = 1,
  MF_LOG_WARN = 2,
  MF_LOG_ERROR = 3,
  MF_LOG_OFF = 4
} mf_log_level_t;

extern mf_log_level_t mf_log_threshold;

/* Sets the program name printed on every line (not copied: pass a literal). */
void mf_log_init(const char *program, mf_log_level_t threshold);

/* Parses "debug", "info", "warn", "error" or "off"; returns 0 or MAYFLY_EINVAL. */
int mf_log_parse_level(const char *s, mf_log_level_t *out);

void mf_log_write(mf_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define MF_LOG(level, ...)                                     \
  do {                                                         \
    if ((level) >= mf_log_threshold) mf_log_write((level), __VA_ARGS__); \
  } while (0)

#define MF_DEBUG(...) MF_LOG(MF_LOG_DEBUG, __VA_ARGS__)
#define MF_INFO(...) MF_LOG(MF_LOG_INFO, __VA_ARGS__)
#define MF_WARN(...) MF_LOG(MF_LOG_WARN, __VA_ARGS__)
#define MF_ERROR(...) MF_LOG(MF_LOG_ERROR, __VA_ARGS__)

#endif /* MAYFLY_LOG_H */
