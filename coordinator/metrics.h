/* Prometheus text exposition for the coordinator: a growable text buffer,
 * metric headers (HELP and TYPE), samples with labels, and a fixed-bucket
 * histogram of durations in seconds.
 *
 * Kept apart from what is measured (dashboard.c) so the format's rules
 * live in one place: label values escaped, one HELP/TYPE per family,
 * histogram buckets cumulative with le in increasing order and a final
 * +Inf bucket equal to _count. */
#ifndef TG_COORDINATOR_METRICS_H
#define TG_COORDINATOR_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* Upper bounds in seconds, for fault detection and recovery times. */
#define TG_HIST_BUCKETS 14
extern const double tg_hist_bounds[TG_HIST_BUCKETS];

typedef struct {
  uint64_t counts[TG_HIST_BUCKETS + 1]; /* per bucket (not cumulative); the last is +Inf */
  uint64_t count;
  double sum;
} tg_histogram;

void tg_histogram_observe(tg_histogram *h, double seconds);

/* Text that grows as it is written; `failed` once an allocation failed
 * (the text is then incomplete and should not be served). */
typedef struct {
  char *buf;
  size_t len, cap;
  int failed;
} tg_text;

void tg_text_printf(tg_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tg_text_free(tg_text *t);

/* "# HELP name help" and "# TYPE name type". */
void tg_prom_family(tg_text *t, const char *name, const char *type, const char *help);
/* One sample: name{label="value",...} value. labels: NULL, or pairs of
 * name and value ended by NULL; values are escaped here. */
void tg_prom_sample(tg_text *t, const char *name, const char *const *labels, double value);
/* A histogram's _bucket, _sum and _count lines (the family written first). */
void tg_prom_histogram(tg_text *t, const char *name, const tg_histogram *h);

#endif
