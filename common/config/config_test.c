/* Tests for flags and config files: precedence, validation, bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/config/config.h"

typedef struct {
  char address[64];
  int64_t timeout_ms;
  int verbose;
} settings;

static void table(settings *s, tg_option opts[3]) {
  snprintf(s->address, sizeof s->address, "127.0.0.1:7000");
  s->timeout_ms = 3000;
  s->verbose = 0;
  opts[0] = (tg_option){"address", TG_OPT_STRING, s->address, sizeof s->address, 0, 0, "listen here"};
  opts[1] = (tg_option){"timeout-ms", TG_OPT_INT, &s->timeout_ms, 0, 1, 60000, "a timeout"};
  opts[2] = (tg_option){"verbose", TG_OPT_BOOL, &s->verbose, 0, 0, 0, "log more"};
}

static char *write_file(const char *text) {
  static char path[256];
  const char *dir = getenv("TEST_TMPDIR");
  snprintf(path, sizeof path, "%s/tg-config-XXXXXX", dir ? dir : "/tmp");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  return path;
}

static tg_config_result parse(tg_option *opts, int argc, char **argv, int *n_args, char *err) {
  return tg_config_parse(opts, 3, argc, argv, "usage: t", n_args, err, 256);
}

static void test_defaults_and_flags(void **state) {
  settings s;
  tg_option opts[3];
  char err[256] = "";
  table(&s, opts);
  char *argv[] = {"t", "--address=unix:/tmp/x", "--timeout-ms", "42", "--verbose", "rest", NULL};
  int n = -1;
  assert_int_equal(parse(opts, 6, argv, &n, err), TG_CONFIG_OK);
  assert_string_equal(s.address, "unix:/tmp/x");
  assert_int_equal(s.timeout_ms, 42);
  assert_int_equal(s.verbose, 1);
  assert_int_equal(n, 1);
  assert_string_equal(argv[1], "rest");
}

static void test_file_then_flags(void **state) {
  settings s;
  tg_option opts[3];
  char err[256] = "";
  table(&s, opts);
  char *path = write_file("# comment\n  address = 10.0.0.1:9 \n\ntimeout-ms=500 # trailing\nverbose = yes\n");
  char *argv[] = {"t", "--config", path, "--timeout-ms=7", NULL};
  assert_int_equal(parse(opts, 4, argv, NULL, err), TG_CONFIG_OK);
  assert_string_equal(s.address, "10.0.0.1:9");
  assert_int_equal(s.timeout_ms, 7); /* the flag wins over the file */
  assert_int_equal(s.verbose, 1);
  unlink(path);
}

static void test_rejects_bad_values(void **state) {
  settings s;
  tg_option opts[3];
  char err[256] = "";
  table(&s, opts);
  char *a1[] = {"t", "--timeout-ms=0", NULL};
  assert_int_equal(parse(opts, 2, a1, NULL, err), TG_CONFIG_ERROR);
  assert_non_null(strstr(err, "out of range"));
  char *a2[] = {"t", "--timeout-ms=12abc", NULL};
  assert_int_equal(parse(opts, 2, a2, NULL, err), TG_CONFIG_ERROR);
  assert_non_null(strstr(err, "not an integer"));
  char *a3[] = {"t", "--verbose=maybe", NULL};
  assert_int_equal(parse(opts, 2, a3, NULL, err), TG_CONFIG_ERROR);
  char *a4[] = {"t", "--nope=1", NULL};
  assert_int_equal(parse(opts, 2, a4, NULL, err), TG_CONFIG_ERROR);
  assert_non_null(strstr(err, "unknown option 'nope'"));
  char *a5[] = {"t", "--timeout-ms", NULL};
  assert_int_equal(parse(opts, 2, a5, NULL, err), TG_CONFIG_ERROR);
  char *a6[] = {"t", "stray", NULL};
  assert_int_equal(parse(opts, 2, a6, NULL, err), TG_CONFIG_ERROR);
  char longv[200];
  memset(longv, 'x', sizeof longv - 1);
  longv[sizeof longv - 1] = '\0';
  assert_int_equal(tg_config_set(opts, 3, "address", longv, err, sizeof err), -1);
  assert_string_equal(s.address, "127.0.0.1:7000"); /* unchanged */
}

static void test_rejects_bad_files(void **state) {
  settings s;
  tg_option opts[3];
  char err[256] = "";
  table(&s, opts);
  char *path = write_file("address 1.2.3.4\n");
  assert_int_equal(tg_config_load_file(opts, 3, path, err, sizeof err), -1);
  assert_non_null(strstr(err, ":1: expected"));
  unlink(path);
  char *big = malloc(TG_CONFIG_MAX_LINE + 100);
  memset(big, 'a', TG_CONFIG_MAX_LINE + 99);
  big[TG_CONFIG_MAX_LINE + 99] = '\0';
  path = write_file(big);
  free(big);
  assert_int_equal(tg_config_load_file(opts, 3, path, err, sizeof err), -1);
  assert_non_null(strstr(err, "line longer"));
  unlink(path);
  assert_int_equal(tg_config_load_file(opts, 3, "/nonexistent/tg.conf", err, sizeof err), -1);
  assert_non_null(strstr(err, "No such file"));
}

static void test_help(void **state) {
  settings s;
  tg_option opts[3];
  char err[256] = "";
  table(&s, opts);
  char *argv[] = {"t", "--timeout-ms=5", "--help", NULL};
  assert_int_equal(parse(opts, 3, argv, NULL, err), TG_CONFIG_HELP);
  assert_int_equal(s.timeout_ms, 3000); /* --help applies nothing */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults_and_flags), cmocka_unit_test(test_file_then_flags),
      cmocka_unit_test(test_rejects_bad_values), cmocka_unit_test(test_rejects_bad_files),
      cmocka_unit_test(test_help),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
