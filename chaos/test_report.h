/* For the tests that run the real tg-chaos: its JSON report read back,
 * failing the running cmocka test (with the reason) when it cannot be. */
#ifndef TG_CHAOS_TEST_REPORT_H
#define TG_CHAOS_TEST_REPORT_H

#include <cjson/cJSON.h>

/* The report at path, parsed (free with cJSON_Delete). */
cJSON *tg_chaos_test_read_report(const char *path);

/* o's member key; fails the test when there is none. */
const cJSON *tg_chaos_test_get(const cJSON *o, const char *key);

#endif
