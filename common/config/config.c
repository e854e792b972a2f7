/* Flags and config files; see config.h. The parser is deliberately small:
 * no sections, no quoting beyond trimming whitespace, no includes. Input is
 * bounded (file size, line length, option value length) because config
 * files and flags come from operators and scripts, and a daemon must refuse
 * bad input with one clear line rather than start half-configured. */
#include "common/config/config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void fail(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static const tg_option *find(const tg_option *opts, size_t n, const char *name, size_t len) {
  for (size_t i = 0; i < n; i++)
    if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0) return &opts[i];
  return NULL;
}

static int parse_bool(const char *text, int *out) {
  static const char *const yes[] = {"true", "yes", "on", "1"};
  static const char *const no[] = {"false", "no", "off", "0"};
  for (int i = 0; i < 4; i++) {
    if (strcasecmp(text, yes[i]) == 0) return *out = 1, 0;
    if (strcasecmp(text, no[i]) == 0) return *out = 0, 0;
  }
  return -1;
}

static int set_option(const tg_option *o, const char *text, char *err, size_t errlen) {
  switch (o->type) {
  case TG_OPT_STRING: {
    size_t len = strlen(text);
    if (len + 1 > o->size) {
      fail(err, errlen, "option %s: value is %zu bytes, at most %zu allowed", o->name, len,
           o->size - 1);
      return -1;
    }
    memcpy(o->value, text, len + 1);
    return 0;
  }
  case TG_OPT_INT: {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0') {
      fail(err, errlen, "option %s: '%s' is not an integer", o->name, text);
      return -1;
    }
    if ((o->min != 0 || o->max != 0) && (v < o->min || v > o->max)) {
      fail(err, errlen, "option %s: %lld is out of range [%" PRId64 ", %" PRId64 "]", o->name, v,
           o->min, o->max);
      return -1;
    }
    *(int64_t *)o->value = v;
    return 0;
  }
  case TG_OPT_BOOL:
    if (parse_bool(text, (int *)o->value) != 0) {
      fail(err, errlen, "option %s: '%s' is not a boolean (true/false, yes/no, on/off, 1/0)",
           o->name, text);
      return -1;
    }
    return 0;
  }
  fail(err, errlen, "option %s: bad option table entry", o->name);
  return -1;
}

int tg_config_set(const tg_option *opts, size_t n_opts, const char *name, const char *text, char *err,
                  size_t errlen) {
  const tg_option *o = find(opts, n_opts, name, strlen(name));
  if (!o) {
    fail(err, errlen, "unknown option '%s' (see --help)", name);
    return -1;
  }
  return set_option(o, text, err, errlen);
}

static char *trim(char *s) {
  while (isspace((unsigned char)*s)) s++;
  char *end = s + strlen(s);
  while (end > s && isspace((unsigned char)end[-1])) *--end = '\0';
  return s;
}

int tg_config_load_file(const tg_option *opts, size_t n_opts, const char *path, char *err,
                        size_t errlen) {
  char line[TG_CONFIG_MAX_LINE + 2];
  int lineno = 0, rc = -1;
  size_t total = 0;
  FILE *f = fopen(path, "r");
  if (!f) {
    fail(err, errlen, "config file %s: %s", path, strerror(errno));
    return -1;
  }
  while (fgets(line, sizeof line, f)) {
    lineno++;
    size_t len = strlen(line);
    total += len;
    if (total > TG_CONFIG_MAX_FILE_BYTES) {
      fail(err, errlen, "config file %s: larger than %d bytes", path, TG_CONFIG_MAX_FILE_BYTES);
      goto out;
    }
    if (len > TG_CONFIG_MAX_LINE && line[len - 1] != '\n') {
      fail(err, errlen, "%s:%d: line longer than %d bytes", path, lineno, TG_CONFIG_MAX_LINE);
      goto out;
    }
    char *hash = strchr(line, '#');
    if (hash) *hash = '\0';
    char *s = trim(line);
    if (*s == '\0') continue;
    char *eq = strchr(s, '=');
    if (!eq) {
      fail(err, errlen, "%s:%d: expected 'name = value'", path, lineno);
      goto out;
    }
    *eq = '\0';
    char *name = trim(s), *value = trim(eq + 1);
    char why[512];
    if (tg_config_set(opts, n_opts, name, value, why, sizeof why) != 0) {
      fail(err, errlen, "%s:%d: %s", path, lineno, why);
      goto out;
    }
  }
  if (ferror(f)) {
    fail(err, errlen, "config file %s: read error", path);
    goto out;
  }
  rc = 0;
out:
  fclose(f);
  return rc;
}

void tg_config_usage(const tg_option *opts, size_t n_opts, const char *usage, void *out) {
  FILE *f = out;
  if (usage) fprintf(f, "%s\n", usage);
  fprintf(f, "\nOptions (also accepted as 'name = value' lines in a --config file):\n");
  fprintf(f, "  --config FILE\n      read options from FILE; flags given on the command line win\n");
  for (size_t i = 0; i < n_opts; i++) {
    const tg_option *o = &opts[i];
    switch (o->type) {
    case TG_OPT_STRING:
      fprintf(f, "  --%s=TEXT\n      %s (default: \"%s\")\n", o->name, o->help,
              (const char *)o->value);
      break;
    case TG_OPT_INT:
      fprintf(f, "  --%s=N\n      %s (default: %" PRId64, o->name, o->help, *(int64_t *)o->value);
      if (o->min != 0 || o->max != 0) fprintf(f, "; %" PRId64 "..%" PRId64, o->min, o->max);
      fprintf(f, ")\n");
      break;
    case TG_OPT_BOOL:
      fprintf(f, "  --%s[=true|false]\n      %s (default: %s)\n", o->name, o->help,
              *(int *)o->value ? "true" : "false");
      break;
    }
  }
  fprintf(f, "  --help\n      print this help and exit\n");
}

/* Finds --config in argv first, so the file applies before the flags. */
static int load_config_flag(const tg_option *opts, size_t n_opts, int argc, char **argv, char *err,
                            size_t errlen) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) break;
    const char *path = NULL;
    if (strcmp(argv[i], "--config") == 0) {
      if (i + 1 >= argc) {
        fail(err, errlen, "--config needs a file name");
        return -1;
      }
      path = argv[i + 1];
    } else if (strncmp(argv[i], "--config=", 9) == 0) {
      path = argv[i] + 9;
    }
    if (path && tg_config_load_file(opts, n_opts, path, err, errlen) != 0) return -1;
  }
  return 0;
}

tg_config_result tg_config_parse(const tg_option *opts, size_t n_opts, int argc, char **argv,
                                 const char *usage, int *n_args, char *err, size_t errlen) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) break;
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      tg_config_usage(opts, n_opts, usage, stdout);
      return TG_CONFIG_HELP;
    }
  }
  if (load_config_flag(opts, n_opts, argc, argv, err, errlen) != 0) return TG_CONFIG_ERROR;

  int kept = 0;
  for (int i = 1; i < argc; i++) {
    char *a = argv[i];
    if (strcmp(a, "--") == 0) {
      while (++i < argc) argv[1 + kept++] = argv[i];
      break;
    }
    if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
      argv[1 + kept++] = a;
      continue;
    }
    const char *name = a + 2, *eq = strchr(name, '=');
    size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
    if (name_len == 6 && strncmp(name, "config", 6) == 0) {
      if (!eq) i++; /* already applied */
      continue;
    }
    const tg_option *o = find(opts, n_opts, name, name_len);
    if (!o) {
      fail(err, errlen, "unknown option '%.*s' (see --help)", (int)name_len, name);
      return TG_CONFIG_ERROR;
    }
    const char *value = eq ? eq + 1 : NULL;
    if (!value && o->type == TG_OPT_BOOL) value = "true";
    if (!value) {
      if (i + 1 >= argc) {
        fail(err, errlen, "option --%s needs a value", o->name);
        return TG_CONFIG_ERROR;
      }
      value = argv[++i];
    }
    if (set_option(o, value, err, errlen) != 0) return TG_CONFIG_ERROR;
  }
  if (kept > 0 && !n_args) {
    fail(err, errlen, "unexpected argument '%s' (see --help)", argv[1]);
    return TG_CONFIG_ERROR;
  }
  if (n_args) *n_args = kept;
  return TG_CONFIG_OK;
}
