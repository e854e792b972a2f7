/* Scratch directories for the health-check tests.
 *
 * The tests build fake GPU directories and fake sysfs trees on disk, as
 * tg-chaos would, so each test needs a fresh directory that is removed even
 * when the test fails (cmocka's teardown calls health_testing_rmtree). */
#ifndef TG_HEALTH_TESTING_H
#define TG_HEALTH_TESTING_H

#include <stddef.h>
#include <stdint.h>

/* A new empty directory under $TEST_TMPDIR (or /tmp), as a malloc'd path;
 * NULL on failure. */
char *health_testing_tmpdir(const char *prefix);

/* Removes path and everything below it (not following symlinks); NULL is
 * ignored. Returns 0 or -1. */
int health_testing_rmtree(const char *path);

/* Writes dir/name into buf and returns it; aborts on overflow (a test bug). */
const char *health_testing_join(char *buf, size_t cap, const char *dir, const char *name);

/* Monotonic milliseconds; sleeping. */
int64_t health_testing_now_ms(void);
void health_testing_sleep_ms(int64_t ms);

#endif
