/* Self-test of the etcd harness: the harness is what every integration test
 * trusts, so it is checked against the real server here: one member comes
 * up healthy and leads, three members elect a leader, killing the leader
 * yields a new one, and a stopped member comes back on its old data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log/log.h"
#include "tests/harness/etcd_cluster.h"

static int teardown_cluster(void **state) {
  tg_etcd_cluster_free(*state);
  *state = NULL;
  return 0;
}

static void test_single_member(void **state) {
  char err[256] = "";
  tg_etcd_cluster *c = tg_etcd_cluster_start(1, err, sizeof err);
  *state = c;
  assert_non_null(c);
  assert_int_equal(tg_etcd_cluster_size(c), 1);
  assert_string_equal(tg_etcd_cluster_endpoints(c), tg_etcd_cluster_endpoint(c, 0));
  assert_int_equal(strncmp(tg_etcd_cluster_url(c, 0), "http://127.0.0.1:", 17), 0);
  assert_true(tg_etcd_cluster_running(c, 0));
  assert_int_equal(tg_etcd_cluster_leader(c, 5000), 0);

  char out[4096];
  const char *put[] = {"put", "harness-key", "v1", NULL};
  assert_int_equal(tg_etcd_cluster_ctl(c, put, out, sizeof out, 10000), 0);
  /* Stop, restart on the same data dir: the key survives. */
  assert_int_equal(tg_etcd_cluster_stop(c, 0, 5000), 0);
  assert_false(tg_etcd_cluster_running(c, 0));
  assert_int_equal(tg_etcd_cluster_restart(c, 0, 15000, err, sizeof err), 0);
  const char *get[] = {"get", "harness-key", "--print-value-only", NULL};
  assert_int_equal(tg_etcd_cluster_ctl(c, get, out, sizeof out, 10000), 0);
  assert_non_null(strstr(out, "v1"));
  /* Same after SIGKILL. */
  assert_int_equal(tg_etcd_cluster_kill(c, 0), 0);
  assert_int_equal(tg_etcd_cluster_kill(c, 0), -1);
  assert_int_equal(tg_etcd_cluster_restart(c, 0, 15000, err, sizeof err), 0);
  assert_int_equal(tg_etcd_cluster_ctl(c, get, out, sizeof out, 10000), 0);
  assert_non_null(strstr(out, "v1"));
}

static void test_three_members_leader_failover(void **state) {
  char err[256] = "";
  tg_etcd_cluster *c = tg_etcd_cluster_start(3, err, sizeof err);
  *state = c;
  if (!c) fail_msg("start: %s", err);
  assert_int_equal(tg_etcd_cluster_size(c), 3);
  int leader = tg_etcd_cluster_leader(c, 5000);
  assert_in_range(leader, 0, 2);
  assert_int_equal(tg_etcd_cluster_kill(c, leader), 0);
  int next = tg_etcd_cluster_leader(c, 10000);
  assert_in_range(next, 0, 2);
  assert_int_not_equal(next, leader);
  if (tg_etcd_cluster_wait_healthy(c, 10000, err, sizeof err) != 0) fail_msg("healthy: %s", err);
  /* The old leader rejoins as a follower. */
  if (tg_etcd_cluster_restart(c, leader, 15000, err, sizeof err) != 0)
    fail_msg("restart: %s", err);
  if (tg_etcd_cluster_wait_healthy(c, 10000, err, sizeof err) != 0) fail_msg("healthy: %s", err);
  assert_in_range(tg_etcd_cluster_leader(c, 5000), 0, 2);
}

static void test_bad_arguments(void **state) {
  char err[256] = "";
  assert_null(tg_etcd_cluster_start(0, err, sizeof err));
  assert_true(strlen(err) > 0);
  tg_etcd_cluster_opts o = {.members = 1, .client_scheme = "ftp"};
  assert_null(tg_etcd_cluster_start_opts(&o, err, sizeof err));
  const char *bad[] = {"--no-such-flag", NULL};
  tg_etcd_cluster_opts o2 = {.members = 1, .extra_args = bad, .start_timeout_ms = 5000};
  assert_null(tg_etcd_cluster_start_opts(&o2, err, sizeof err));
  assert_non_null(strstr(err, "exited"));
  tg_etcd_cluster_free(NULL);
}

int main(void) {
  tg_log_init("etcd_cluster_test", TG_LOG_INFO);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_single_member, teardown_cluster),
      cmocka_unit_test_teardown(test_three_members_leader_failover, teardown_cluster),
      cmocka_unit_test(test_bad_arguments),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
