/* See test_report.h. */
#include "chaos/test_report.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

cJSON *tg_chaos_test_read_report(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) fail_msg("no report %s", path);
  static char text[1 << 20];
  size_t len = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[len] = '\0';
  cJSON *j = cJSON_Parse(text);
  if (!j) fail_msg("the report is not JSON: %.500s", text);
  return j;
}

const cJSON *tg_chaos_test_get(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!v) fail_msg("the report has no \"%s\"", key);
  return v;
}
