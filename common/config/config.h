/* Command-line flags and config files, one table for both.
 *
 * Every Tardigrade binary describes its options once, as a table of
 * tg_option. The same table parses `--name=value` / `--name value` flags,
 * a config file of `name = value` lines (given with --config FILE), and
 * prints --help. Flags override the file; the file overrides defaults.
 * Values are validated against the table (integer ranges, booleans), and
 * every error is one line that names the option and what is wrong. */
#ifndef TG_CONFIG_H
#define TG_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
  TG_OPT_STRING = 0, /* char buffer of `size` bytes at `value` */
  TG_OPT_INT = 1,    /* int64_t at `value`, within [min, max] */
  TG_OPT_BOOL = 2,   /* int at `value`: true/false, yes/no, on/off, 1/0; a bare --flag sets it */
} tg_opt_type;

typedef struct {
  const char *name; /* without dashes: "heartbeat-timeout-ms" */
  tg_opt_type type;
  void *value;      /* holds the default on entry */
  size_t size;      /* TG_OPT_STRING: buffer size including the NUL */
  int64_t min, max; /* TG_OPT_INT: inclusive range (both 0: any value) */
  const char *help; /* one line */
} tg_option;

/* Longest config file accepted, and longest line in it. */
#define TG_CONFIG_MAX_FILE_BYTES (1 << 20)
#define TG_CONFIG_MAX_LINE 4096

typedef enum {
  TG_CONFIG_OK = 0,
  TG_CONFIG_HELP = 1,  /* --help was given; usage was printed to stdout */
  TG_CONFIG_ERROR = 2, /* a reason is in err */
} tg_config_result;

/* Parses argv (argv[0] is the program). Handles --config FILE and --help.
 * Non-option arguments are moved to the front of argv after argv[0] and
 * counted in *n_args (NULL: none are allowed). `usage` is the first lines of
 * --help (what the program does and its synopsis). */
tg_config_result tg_config_parse(const tg_option *opts, size_t n_opts, int argc, char **argv,
                                 const char *usage, int *n_args, char *err, size_t errlen);

/* Applies a config file's `name = value` lines (# starts a comment). */
int tg_config_load_file(const tg_option *opts, size_t n_opts, const char *path, char *err,
                        size_t errlen);

/* Sets one option from text; returns 0 or -1 with a reason in err. */
int tg_config_set(const tg_option *opts, size_t n_opts, const char *name, const char *text, char *err,
                  size_t errlen);

/* Writes --help text for the table to `out` (a FILE *). */
void tg_config_usage(const tg_option *opts, size_t n_opts, const char *usage, void *out);

#endif
