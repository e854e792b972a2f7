/* The etcd client against a real 3-member cluster: the client keeps
 * working when the member it talks to (the leader) is SIGKILLed, and a
 * watch whose member dies moves to another member without missing the
 * events written while its member was down, nor repeating any after it
 * came back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/etcd/etcd.h"
#include "common/etcd/etcd_testing.h"
#include "common/log/log.h"
#include "tests/harness/etcd_cluster.h"

/* Fixture, per-test setup and teardown: etcd_testing.h. */
typedef etcd_testing_fixture fixture;

static int group_setup(void **state) { return etcd_testing_start(3); }


/* "first,others..." so that the client prefers member `first`. */
static void endpoints_starting_at(int first, int skip, char *buf, size_t len) {
  size_t used = 0;
  buf[0] = '\0';
  int n = tg_etcd_cluster_size(etcd_testing_cluster);
  for (int k = 0; k < n; k++) {
    int i = (first + k) % n;
    if (i == skip) continue;
    used += (size_t)snprintf(buf + used, len - used, "%s%s", used ? "," : "",
                             tg_etcd_cluster_endpoint(etcd_testing_cluster, i));
  }
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_leader_loss_failover(void **state) {
  fixture *f = *state;
  tg_rpc_status st = {0};
  int leader = tg_etcd_cluster_leader(etcd_testing_cluster, 5000);
  assert_in_range(leader, 0, 2);
  char eps[256];
  endpoints_starting_at(leader, -1, eps, sizeof eps);
  f->c = etcd_testing_client(eps, 10000);
  etcd_testing_put(f->c, "/fo/before", "1");
  int64_t kept = 0;
  assert_int_equal(tg_etcd_lease_grant(f->c, 3, &kept, &st), TG_RPC_OK);
  tg_etcd_put_opts leased = {.lease = kept};
  assert_int_equal(tg_etcd_put(f->c, "/fo/leased", "x", 1, &leased, NULL, &st), TG_RPC_OK);
  f->ka = tg_etcd_keepalive_start(f->c, kept, NULL, NULL, &st);
  if (!f->ka) fail_msg("keepalive: %s", st.message);

  assert_int_equal(tg_etcd_cluster_kill(etcd_testing_cluster, leader), 0);
  int64_t t0 = now_ms();
  etcd_testing_put(f->c, "/fo/after", "2");
  TG_INFO("first put after killing the leader took %lld ms", (long long)(now_ms() - t0));
  char buf[16];
  assert_true(etcd_testing_get(f->c, "/fo/before", buf, sizeof buf));
  assert_string_equal(buf, "1");
  assert_true(etcd_testing_get(f->c, "/fo/after", buf, sizeof buf));
  assert_string_equal(buf, "2");

  /* Transactions and leases work on the new leader too. */
  tg_etcd_txn *t = tg_etcd_txn_new();
  tg_etcd_txn_cmp_value(t, "/fo/after", TG_ETCD_EQ, "2", 1);
  tg_etcd_txn_put(t, TG_ETCD_THEN, "/fo/after", "3", 1, 0);
  tg_etcd_txn_result tr;
  assert_int_equal(tg_etcd_txn_commit(f->c, t, &tr, &st), TG_RPC_OK);
  tg_etcd_txn_free(t);
  assert_true(tr.succeeded);
  tg_etcd_txn_result_free(&tr);
  int64_t lease = 0;
  assert_int_equal(tg_etcd_lease_grant(f->c, 5, &lease, &st), TG_RPC_OK);
  assert_int_equal(tg_etcd_lease_revoke(f->c, lease, &st), TG_RPC_OK);

  int next = tg_etcd_cluster_leader(etcd_testing_cluster, 10000);
  assert_in_range(next, 0, 2);
  assert_int_not_equal(next, leader);

  /* The keep-alive moved to a live member: the key outlives its 3 s TTL. */
  while (now_ms() < t0 + 4500) usleep(100 * 1000);
  assert_false(tg_etcd_keepalive_lost(f->ka));
  assert_true(etcd_testing_get(f->c, "/fo/leased", buf, sizeof buf));
}

static void test_watch_moves_when_its_member_dies(void **state) {
  fixture *f = *state;
  tg_rpc_status st = {0};
  char err[256];
  /* The watcher prefers a follower; the writer never talks to it. */
  int leader = tg_etcd_cluster_leader(etcd_testing_cluster, 5000);
  assert_in_range(leader, 0, 2);
  int victim = (leader + 1) % 3;
  char watch_eps[256], write_eps[256];
  endpoints_starting_at(victim, -1, watch_eps, sizeof watch_eps);
  endpoints_starting_at(leader, victim, write_eps, sizeof write_eps);
  f->c = etcd_testing_client(watch_eps, 5000);
  f->writer = etcd_testing_client(write_eps, 10000);

  tg_etcd_watch_opts wo = {.prefix = 1, .prev_kv = 1};
  f->w = tg_etcd_watch_open(f->c, "/fw/", &wo, &st);
  if (!f->w) fail_msg("watch: %s", st.message);
  etcd_testing_put(f->writer, "/fw/1", "a");
  etcd_testing_expect_event(f->w, TG_ETCD_EVENT_PUT, "/fw/1", "a", 3000);

  /* Its member dies; events keep coming while it is down. */
  assert_int_equal(tg_etcd_cluster_kill(etcd_testing_cluster, victim), 0);
  etcd_testing_put(f->writer, "/fw/2", "b");
  etcd_testing_put(f->writer, "/fw/3", "c");
  etcd_testing_expect_event(f->w, TG_ETCD_EVENT_PUT, "/fw/2", "b", 8000);
  etcd_testing_expect_event(f->w, TG_ETCD_EVENT_PUT, "/fw/3", "c", 3000);
  etcd_testing_put(f->writer, "/fw/4", "d");
  etcd_testing_expect_event(f->w, TG_ETCD_EVENT_PUT, "/fw/4", "d", 3000);

  /* Back again: no repeats, and new events flow. */
  if (tg_etcd_cluster_restart(etcd_testing_cluster, victim, 15000, err, sizeof err) != 0) fail_msg("%s", err);
  int64_t deleted = 0;
  assert_int_equal(tg_etcd_delete(f->writer, "/fw/1", 0, &deleted, NULL, &st), TG_RPC_OK);
  tg_etcd_event ev;
  assert_int_equal(tg_etcd_watch_next(f->w, &ev, 5000, &st), TG_ETCD_WATCH_EVENT);
  assert_int_equal(ev.type, TG_ETCD_EVENT_DELETE);
  assert_string_equal(ev.kv.key, "/fw/1");
  assert_true(ev.has_prev);
  assert_string_equal(ev.prev.value, "a");
  tg_etcd_event_clear(&ev);
  etcd_testing_expect_no_event(f->w, 300);

  /* Now the member the watch moved to dies too (the victim is back). */
  int64_t t0 = now_ms();
  int leader2 = tg_etcd_cluster_leader(etcd_testing_cluster, 5000);
  assert_int_equal(tg_etcd_cluster_kill(etcd_testing_cluster, leader2), 0);
  etcd_testing_put(f->writer, "/fw/5", "e");
  TG_INFO("put after killing leader %d took %lld ms", leader2, (long long)(now_ms() - t0));
  etcd_testing_expect_event(f->w, TG_ETCD_EVENT_PUT, "/fw/5", "e", 10000);
  etcd_testing_expect_no_event(f->w, 300);
}

int main(void) {
  tg_log_init("etcd_failover_test", TG_LOG_INFO);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_leader_loss_failover, etcd_testing_setup, etcd_testing_teardown),
      cmocka_unit_test_setup_teardown(test_watch_moves_when_its_member_dies, etcd_testing_setup, etcd_testing_teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, etcd_testing_stop);
}
