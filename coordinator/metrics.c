/* Prometheus text format writer (see metrics.h). */
#include "coordinator/metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double tg_hist_bounds[TG_HIST_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                1,     2.5,  5,     10,   30,  60,  300};

void tg_histogram_observe(tg_histogram *h, double seconds) {
  if (!(seconds >= 0)) seconds = 0; /* NaN and clock steps backwards count as 0 */
  size_t b = 0;
  while (b < TG_HIST_BUCKETS && seconds > tg_hist_bounds[b]) b++;
  h->counts[b]++;
  h->count++;
  h->sum += seconds;
}

void tg_text_printf(tg_text *t, const char *fmt, ...) {
  if (t->failed) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = t->cap - t->len;
    int n = vsnprintf(t->buf ? t->buf + t->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
      t->failed = 1;
      return;
    }
    if ((size_t)n < room) {
      t->len += (size_t)n;
      return;
    }
    size_t cap = t->cap ? t->cap * 2 : 4096;
    while (cap - t->len <= (size_t)n) cap *= 2;
    char *grown = realloc(t->buf, cap);
    if (!grown) {
      t->failed = 1;
      return;
    }
    t->buf = grown;
    t->cap = cap;
  }
}

void tg_text_free(tg_text *t) {
  free(t->buf);
  memset(t, 0, sizeof *t);
}

void tg_prom_family(tg_text *t, const char *name, const char *type, const char *help) {
  tg_text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Label values escape backslash, double quote and newline. */
static void label_value(tg_text *t, const char *v) {
  for (; *v; v++) {
    if (*v == '\\') tg_text_printf(t, "\\\\");
    else if (*v == '"') tg_text_printf(t, "\\\"");
    else if (*v == '\n') tg_text_printf(t, "\\n");
    else tg_text_printf(t, "%c", *v);
  }
}

static void value(tg_text *t, double v) {
  if (isnan(v)) tg_text_printf(t, "NaN\n");
  else if (isinf(v)) tg_text_printf(t, v > 0 ? "+Inf\n" : "-Inf\n");
  else if (v == (double)(int64_t)v && fabs(v) < 9e15) tg_text_printf(t, "%lld\n", (long long)v);
  else tg_text_printf(t, "%.9g\n", v);
}

void tg_prom_sample(tg_text *t, const char *name, const char *const *labels, double v) {
  tg_text_printf(t, "%s", name);
  if (labels && labels[0]) {
    tg_text_printf(t, "{");
    for (size_t i = 0; labels[i] && labels[i + 1]; i += 2) {
      tg_text_printf(t, "%s%s=\"", i ? "," : "", labels[i]);
      label_value(t, labels[i + 1]);
      tg_text_printf(t, "\"");
    }
    tg_text_printf(t, "}");
  }
  tg_text_printf(t, " ");
  value(t, v);
}

void tg_prom_histogram(tg_text *t, const char *name, const tg_histogram *h) {
  char series[160], le[32];
  uint64_t cumulative = 0;
  snprintf(series, sizeof series, "%s_bucket", name);
  for (size_t b = 0; b <= TG_HIST_BUCKETS; b++) {
    cumulative += h->counts[b];
    if (b < TG_HIST_BUCKETS) snprintf(le, sizeof le, "%g", tg_hist_bounds[b]);
    else snprintf(le, sizeof le, "+Inf");
    const char *labels[] = {"le", le, NULL};
    tg_prom_sample(t, series, labels, (double)cumulative);
  }
  snprintf(series, sizeof series, "%s_sum", name);
  tg_prom_sample(t, series, NULL, h->sum);
  snprintf(series, sizeof series, "%s_count", name);
  tg_prom_sample(t, series, NULL, (double)h->count);
}
