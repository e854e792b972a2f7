/* One-line log records for every Tardigrade process.
 *
 * Daemons and tests log through this so that every line reads the same:
 *   2026-11-22T08:30:01.123Z INFO  tg-coordinator rpc.c:212 message
 * The level and the process name are set once at start-up; logging is
 * thread-safe (one write(2) per line, so lines never interleave). */
#ifndef TG_LOG_H
#define TG_LOG_H

#include <stdarg.h>

typedef enum {
  TG_LOG_DEBUG = 0,
  TG_LOG_INFO = 1,
  TG_LOG_WARN = 2,
  TG_LOG_ERROR = 3,
} tg_log_level;

/* Process-wide settings; call before starting threads. `name` is copied. */
void tg_log_init(const char *name, tg_log_level level);
void tg_log_set_level(tg_log_level level);
tg_log_level tg_log_get_level(void);

/* Parses "debug", "info", "warn" or "error"; returns -1 for anything else. */
int tg_log_parse_level(const char *text);

void tg_log_write(tg_log_level level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define TG_DEBUG(...) tg_log_write(TG_LOG_DEBUG, __FILE__, __LINE__, __VA_ARGS__)
#define TG_INFO(...) tg_log_write(TG_LOG_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define TG_WARN(...) tg_log_write(TG_LOG_WARN, __FILE__, __LINE__, __VA_ARGS__)
#define TG_ERROR(...) tg_log_write(TG_LOG_ERROR, __FILE__, __LINE__, __VA_ARGS__)

#endif
