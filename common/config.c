/*
 * Layered configuration: flags over environment over INI file over defaults,
 * all driven by one mf_option_t table (see config.h).
 */
#include "common/config.h"

#include <ctype.h>
#include <errno.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/error.h"

int64_t mf_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t mf_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Parses a non-negative decimal number followed by a unit; returns the unit. */
static int parse_number(const char *s, uint64_t *num, const char **unit) {
  if (s == NULL || !isdigit((unsigned char)*s)) return MAYFLY_EINVAL;
  errno = 0;
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0) return MAYFLY_EINVAL;
  while (*end == ' ') end++;
  *num = v;
  *unit = end;
  return 0;
}

int mf_parse_size(const char *s, uint64_t *out) {
  uint64_t v;
  const char *unit;
  if (parse_number(s, &v, &unit) != 0) return MAYFLY_EINVAL;
  static const struct {
    const char *suffix;
    unsigned shift;
  } units[] = {{"", 0},    {"B", 0},   {"k", 10},  {"K", 10},   {"KB", 10}, {"KiB", 10},
               {"m", 20},  {"M", 20},  {"MB", 20}, {"MiB", 20}, {"g", 30},  {"G", 30},
               {"GB", 30}, {"GiB", 30}, {"T", 40}, {"TiB", 40}};
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (strcmp(unit, units[i].suffix) == 0) {
      if (units[i].shift && v > (UINT64_MAX >> units[i].shift)) return MAYFLY_EINVAL;
      *out = v << units[i].shift;
      return 0;
    }
  }
  return MAYFLY_EINVAL;
}

int mf_parse_duration_ms(const char *s, int64_t *out) {
  uint64_t v;
  const char *unit;
  if (parse_number(s, &v, &unit) != 0) return MAYFLY_EINVAL;
  uint64_t mult;
  if (*unit == '\0' || strcmp(unit, "ms") == 0) {
    mult = 1;
  } else if (strcmp(unit, "s") == 0) {
    mult = 1000;
  } else if (strcmp(unit, "m") == 0 || strcmp(unit, "min") == 0) {
    mult = 60000;
  } else {
    return MAYFLY_EINVAL;
  }
  if (v > (uint64_t)INT64_MAX / mult) return MAYFLY_EINVAL;
  *out = (int64_t)(v * mult);
  return 0;
}

int mf_parse_hostport(const char *s, const char *default_host, char *host, size_t hostlen,
                      int *port) {
  if (s == NULL || *s == '\0') return MAYFLY_EINVAL;
  const char *h = default_host, *p = s;
  size_t hl = default_host ? strlen(default_host) : 0;
  if (s[0] == '[') {
    const char *close = strchr(s, ']');
    if (close == NULL || close[1] != ':') return MAYFLY_EINVAL;
    h = s + 1;
    hl = (size_t)(close - h);
    p = close + 2;
  } else {
    const char *colon = strrchr(s, ':');
    if (colon != NULL) {
      if (colon != s) {
        h = s;
        hl = (size_t)(colon - s);
      }
      p = colon + 1;
    }
  }
  if (h == NULL || hl == 0 || hl >= hostlen) return MAYFLY_EINVAL;
  char *end;
  errno = 0;
  long v = strtol(p, &end, 10);
  if (errno != 0 || end == p || *end != '\0' || v < 1 || v > 65535) return MAYFLY_EINVAL;
  memcpy(host, h, hl);
  host[hl] = '\0';
  *port = (int)v;
  return 0;
}

static char *env_name(const char *name) {
  char *e = g_strdup_printf("MAYFLY_%s", name);
  for (char *c = e; *c; c++) *c = *c == '-' ? '_' : (char)toupper((unsigned char)*c);
  return e;
}

static int parse_bool(const char *s, int *out) {
  if (g_ascii_strcasecmp(s, "true") == 0 || strcmp(s, "1") == 0 ||
      g_ascii_strcasecmp(s, "yes") == 0) {
    *out = 1;
  } else if (g_ascii_strcasecmp(s, "false") == 0 || strcmp(s, "0") == 0 ||
             g_ascii_strcasecmp(s, "no") == 0) {
    *out = 0;
  } else {
    return MAYFLY_EINVAL;
  }
  return 0;
}

/* Converts one textual value into the option's target, checking bounds. */
static int apply_value(const mf_option_t *o, const char *val, const char *origin, char *err,
                       size_t errlen) {
  int64_t iv = 0;
  int rc = 0;
  switch (o->type) {
    case MF_OPT_STRING: {
      char **t = o->target;
      g_free(*t);
      *t = g_strdup(val);
      return 0;
    }
    case MF_OPT_BOOL:
      rc = parse_bool(val, o->target);
      break;
    case MF_OPT_INT: {
      char *end;
      errno = 0;
      long long v = strtoll(val, &end, 10);
      if (errno != 0 || end == val || *end != '\0') rc = MAYFLY_EINVAL;
      iv = v;
      break;
    }
    case MF_OPT_SIZE: {
      uint64_t v;
      rc = mf_parse_size(val, &v);
      if (rc == 0 && v > (uint64_t)INT64_MAX) rc = MAYFLY_EINVAL;
      iv = (int64_t)v;
      break;
    }
    case MF_OPT_DURATION:
      rc = mf_parse_duration_ms(val, &iv);
      break;
  }
  if (rc == 0 && o->type != MF_OPT_BOOL && (o->min != 0 || o->max != 0) &&
      (iv < o->min || iv > o->max)) {
    snprintf(err, errlen, "--%s (from %s): %s is out of range [%lld, %lld]", o->name, origin,
             val, (long long)o->min, (long long)o->max);
    return MAYFLY_EINVAL;
  }
  if (rc != 0) {
    static const char *const expect[] = {"text", "an integer", "a size such as 64MiB",
                                         "a duration such as 250ms or 10s", "true or false"};
    snprintf(err, errlen, "--%s (from %s): cannot parse '%s': expected %s", o->name, origin, val,
             expect[o->type]);
    return MAYFLY_EINVAL;
  }
  if (o->type == MF_OPT_INT || o->type == MF_OPT_DURATION) {
    *(int64_t *)o->target = iv;
  } else if (o->type == MF_OPT_SIZE) {
    *(uint64_t *)o->target = (uint64_t)iv;
  }
  return 0;
}

int mf_config_load(const char *section, const char *summary, mf_option_t *opts, int *argc,
                   char ***argv, char *err, size_t errlen) {
  size_t n = 0;
  while (opts[n].name != NULL) n++;

  char **flag_str = g_new0(char *, n);
  gboolean *flag_bool = g_new0(gboolean, n);
  char *config_path = NULL;
  GOptionEntry *entries = g_new0(GOptionEntry, n + 2);
  /* --help shows each option's default. */
  char **helps = g_new0(char *, n);
  for (size_t i = 0; i < n; i++) {
    GOptionEntry *e = &entries[i];
    e->long_name = opts[i].name;
    if (opts[i].defval != NULL && opts[i].type != MF_OPT_BOOL) {
      helps[i] = g_strdup_printf("%s (default %s)", opts[i].help, opts[i].defval);
    }
    e->description = helps[i] != NULL ? helps[i] : opts[i].help;
    e->arg_description = opts[i].arg;
    if (opts[i].type == MF_OPT_BOOL) {
      e->arg = G_OPTION_ARG_NONE;
      e->arg_data = &flag_bool[i];
    } else {
      e->arg = G_OPTION_ARG_STRING;
      e->arg_data = &flag_str[i];
    }
  }
  entries[n] = (GOptionEntry){"config", 'c', 0, G_OPTION_ARG_FILENAME, &config_path,
                              "INI file with defaults (env MAYFLY_CONFIG)", "FILE"};

  int rc = 0;
  GError *gerr = NULL;
  GKeyFile *kf = NULL;
  GOptionContext *ctx = g_option_context_new(NULL);
  g_option_context_set_summary(ctx, summary);
  char *desc = g_strdup_printf(
      "Every option can also be set as an environment variable MAYFLY_<OPTION> (dashes as\n"
      "underscores) or as a key in the [%s] section of the --config file.\n"
      "Precedence: flag, then environment, then file, then default.",
      section);
  g_option_context_set_description(ctx, desc);
  g_option_context_add_main_entries(ctx, entries, NULL);
  if (!g_option_context_parse(ctx, argc, argv, &gerr)) {
    snprintf(err, errlen, "%s", gerr->message);
    rc = MAYFLY_EINVAL;
    goto out;
  }

  if (config_path == NULL && g_getenv("MAYFLY_CONFIG") != NULL) {
    config_path = g_strdup(g_getenv("MAYFLY_CONFIG"));
  }
  if (config_path != NULL) {
    kf = g_key_file_new();
    if (!g_key_file_load_from_file(kf, config_path, G_KEY_FILE_NONE, &gerr)) {
      snprintf(err, errlen, "config file %s: %s", config_path, gerr->message);
      rc = MAYFLY_EINVAL;
      goto out;
    }
    /* An unknown key is most likely a typo: refuse it rather than ignore it. */
    gsize nkeys = 0;
    char **keys = g_key_file_get_keys(kf, section, &nkeys, NULL);
    for (gsize k = 0; keys != NULL && k < nkeys && rc == 0; k++) {
      size_t i;
      for (i = 0; i < n && strcmp(opts[i].name, keys[k]) != 0; i++) {
      }
      if (i == n) {
        snprintf(err, errlen, "config file %s: unknown key '%s' in [%s]", config_path, keys[k],
                 section);
        rc = MAYFLY_EINVAL;
      }
    }
    g_strfreev(keys);
    if (rc != 0) goto out;
  }

  for (size_t i = 0; i < n && rc == 0; i++) {
    const mf_option_t *o = &opts[i];
    char *ename = env_name(o->name);
    const char *env = g_getenv(ename);
    char *fileval = kf ? g_key_file_get_string(kf, section, o->name, NULL) : NULL;
    if (fileval != NULL) g_strstrip(fileval);
    if (o->defval != NULL) rc = apply_value(o, o->defval, "default", err, errlen);
    if (rc == 0 && fileval != NULL) rc = apply_value(o, fileval, config_path, err, errlen);
    if (rc == 0 && env != NULL) rc = apply_value(o, env, ename, err, errlen);
    if (rc == 0 && o->type == MF_OPT_BOOL && flag_bool[i]) *(int *)o->target = 1;
    if (rc == 0 && flag_str[i] != NULL) rc = apply_value(o, flag_str[i], "flag", err, errlen);
    g_free(fileval);
    g_free(ename);
  }

out:
  if (gerr) g_error_free(gerr);
  if (kf) g_key_file_free(kf);
  g_option_context_free(ctx);
  g_free(desc);
  for (size_t i = 0; i < n; i++) {
    g_free(flag_str[i]);
    g_free(helps[i]);
  }
  g_free(helps);
  g_free(flag_str);
  g_free(flag_bool);
  g_free(entries);
  g_free(config_path);
  return rc;
}
