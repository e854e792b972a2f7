/* Line-oriented logging to stderr. A record is formatted into one buffer and
 * written with a single write(2), so concurrent threads and processes that
 * share a log file never interleave within a line. Overlong records are
 * truncated and end with "...". */
#include "common/log/log.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static char log_name[64] = "tardigrade";
static volatile int log_level = TG_LOG_INFO;

static const char *const level_names[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};

void tg_log_init(const char *name, tg_log_level level) {
  if (name) snprintf(log_name, sizeof log_name, "%s", name);
  log_level = level;
}

void tg_log_set_level(tg_log_level level) { log_level = level; }

tg_log_level tg_log_get_level(void) { return (tg_log_level)log_level; }

int tg_log_parse_level(const char *text) {
  static const char *const words[] = {"debug", "info", "warn", "error"};
  if (!text) return -1;
  for (int i = 0; i < 4; i++)
    if (strcasecmp(text, words[i]) == 0) return i;
  return -1;
}

void tg_log_write(tg_log_level level, const char *file, int line, const char *fmt, ...) {
  if ((int)level < log_level) return;
  if (level < TG_LOG_DEBUG || level > TG_LOG_ERROR) level = TG_LOG_ERROR;
  char buf[2048];
  struct timespec now;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &now);
  gmtime_r(&now.tv_sec, &tm);
  const char *base = strrchr(file, '/');
  base = base ? base + 1 : file;
  int n = snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s %s:%d ",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                   tm.tm_sec, now.tv_nsec / 1000000, level_names[level], log_name, base, line);
  if (n < 0) return;
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
  va_end(ap);
  size_t len;
  if (m < 0) {
    len = (size_t)n;
  } else if ((size_t)(n + m) >= sizeof buf - 1) {
    len = sizeof buf - 1;
    memcpy(buf + len - 4, "...", 3);
    len--;
  } else {
    len = (size_t)(n + m);
  }
  buf[len++] = '\n';
  ssize_t w = write(STDERR_FILENO, buf, len);
  (void)w;
}
