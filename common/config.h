/*
 * Configuration for Mayfly's daemons and tools.
 *
 * One declarative table of mf_option_t drives everything: command-line flags
 * (GOptionContext, so --help documents every option), environment variables
 * (MAYFLY_<NAME>, dashes as underscores), an INI file (GKeyFile, one section
 * per program) and the defaults. Precedence: flag > environment > file >
 * default. Values are parsed by type: sizes take suffixes (64KiB, 1MiB, 2GiB,
 * 4k), durations take ms and s (250ms, 10s; a bare number is milliseconds).
 */
#ifndef MAYFLY_CONFIG_H
#define MAYFLY_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
  MF_OPT_STRING,   /* target: char ** (g_malloc'd, caller frees with g_free) */
  MF_OPT_INT,      /* target: int64_t * */
  MF_OPT_SIZE,     /* target: uint64_t *, bytes */
  MF_OPT_DURATION, /* target: int64_t *, milliseconds */
  MF_OPT_BOOL      /* target: int * (a flag without argument; "true"/"false" in env/file) */
} mf_opt_type_t;

typedef struct {
  const char *name;    /* long flag name, also the env and INI key */
  mf_opt_type_t type;
  void *target;
  const char *defval;  /* default as text; NULL means unset (strings stay NULL) */
  int64_t min, max;    /* inclusive bounds for INT, SIZE, DURATION (0,0 = none) */
  const char *help;
  const char *arg;     /* argument description for --help */
} mf_option_t;

/*
 * Fills every option's target from flags, environment, the INI file named by
 * --config / MAYFLY_CONFIG (section `section`), and defaults. `opts` ends with
 * an entry whose name is NULL. Consumes the recognised flags from argc/argv.
 * On error returns MAYFLY_EINVAL and writes a message for a human into err.
 * --help prints usage and exits the process with status 0.
 */
int mf_config_load(const char *section, const char *summary, mf_option_t *opts, int *argc,
                   char ***argv, char *err, size_t errlen);

/* Parses a size with an optional suffix (B, k/K/KB/KiB, M/MB/MiB, G/GB/GiB; all
 * binary multiples). Returns 0 or MAYFLY_EINVAL (also on overflow). */
int mf_parse_size(const char *s, uint64_t *out);

/* Parses a duration: "250ms", "10s", "2m" or a bare number of milliseconds. */
int mf_parse_duration_ms(const char *s, int64_t *out);

/* Splits "host:port" (or "[v6]:port", or ":port" / "port" with default_host).
 * Writes the host into host (NUL-terminated). Returns 0 or MAYFLY_EINVAL. */
int mf_parse_hostport(const char *s, const char *default_host, char *host, size_t hostlen,
                      int *port);

/* Monotonic clock in milliseconds, and wall clock in ms since the epoch. */
int64_t mf_now_ms(void);
int64_t mf_wall_ms(void);

#endif /* MAYFLY_CONFIG_H */
