/* A run's results for machines (the JSON report, schema in
 * chaos/README.md) and for people (a table on stdout). Both are made from
 * the same tg_chaos_result, so they never disagree. */
#ifndef TG_CHAOS_REPORT_H
#define TG_CHAOS_REPORT_H

#include <stdio.h>

#include "chaos/record.h"

/* The report as JSON text (free with free), or NULL when out of memory. */
char *tg_chaos_report_json(const tg_chaos_result *res);

/* The summary table. */
void tg_chaos_report_table(const tg_chaos_result *res, FILE *out);

#endif
