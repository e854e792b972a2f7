/* The etcd client against one real etcd member (started by the harness):
 * KV round trips, transactions and CAS conflicts, lease expiry and
 * keep-alive seen through a watch, compaction reported to a watch, and a
 * watch that survives a SIGKILL + restart of its member without missing
 * or repeating an event.
 *
 * One member serves the whole group (each test uses its own key prefix);
 * what a test opens lives in a fixture that teardown releases even when
 * an assertion fails. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/etcd/etcd.h"
#include "common/etcd/etcd_testing.h"
#include "common/log/log.h"
#include "tests/harness/etcd_cluster.h"

/* Fixture, per-test setup and teardown: etcd_testing.h. */
typedef etcd_testing_fixture fixture;

static int group_setup(void **state) { return etcd_testing_start(1); }


/* ------------------------------------------------------------------ KV */

static void test_put_get_delete(void **state) {
  fixture *f = *state;
  tg_rpc_status st = {0};
  f->c = etcd_testing_client(tg_etcd_cluster_endpoints(etcd_testing_cluster), 5000);

  int64_t rev1 = etcd_testing_put(f->c, "/kv/a", "1");
  assert_true(rev1 > 0);
  tg_etcd_range_result r;
  assert_int_equal(tg_etcd_get(f->c, "/kv/a", NULL, &r, &st), TG_RPC_OK);
  assert_int_equal(r.n_kvs, 1);
  assert_string_equal(r.kvs[0].key, "/kv/a");
  assert_string_equal(r.kvs[0].value, "1");
  assert_int_equal(r.kvs[0].version, 1);
  assert_int_equal(r.kvs[0].mod_revision, rev1);
  assert_int_equal(r.revision, rev1);
  tg_etcd_range_result_free(&r);

  /* Binary value, previous value returned. */
  const char bin[3] = {'x', '\0', 'y'};
  tg_etcd_put_opts po = {.prev_kv = 1};
  tg_etcd_put_result pr;
  assert_int_equal(tg_etcd_put(f->c, "/kv/a", bin, sizeof bin, &po, &pr, &st), TG_RPC_OK);
  assert_true(pr.has_prev);
  assert_string_equal(pr.prev.value, "1");
  assert_true(pr.revision > rev1);
  tg_etcd_put_result_free(&pr);
  assert_int_equal(tg_etcd_get(f->c, "/kv/a", NULL, &r, &st), TG_RPC_OK);
  assert_int_equal(r.kvs[0].value_len, 3);
  assert_memory_equal(r.kvs[0].value, bin, 3);
  assert_int_equal(r.kvs[0].version, 2);
  tg_etcd_range_result_free(&r);

  /* Reading the past. */
  tg_etcd_range_opts at = {.revision = rev1};
  assert_int_equal(tg_etcd_get(f->c, "/kv/a", &at, &r, &st), TG_RPC_OK);
  assert_string_equal(r.kvs[0].value, "1");
  tg_etcd_range_result_free(&r);

  etcd_testing_put(f->c, "/kv/b", "2");
  etcd_testing_put(f->c, "/kv/c", "3");
  etcd_testing_put(f->c, "/kv0", "outside the prefix");

  tg_etcd_range_opts prefix = {.prefix = 1};
  assert_int_equal(tg_etcd_get(f->c, "/kv/", &prefix, &r, &st), TG_RPC_OK);
  assert_int_equal(r.n_kvs, 3);
  assert_int_equal(r.count, 3);
  assert_false(r.more);
  assert_string_equal(r.kvs[1].key, "/kv/b");
  tg_etcd_range_result_free(&r);

  tg_etcd_range_opts limited = {.prefix = 1, .limit = 2};
  assert_int_equal(tg_etcd_get(f->c, "/kv/", &limited, &r, &st), TG_RPC_OK);
  assert_int_equal(r.n_kvs, 2);
  assert_true(r.more);
  assert_int_equal(r.count, 3);
  tg_etcd_range_result_free(&r);

  tg_etcd_range_opts count = {.prefix = 1, .count_only = 1};
  assert_int_equal(tg_etcd_get(f->c, "/kv/", &count, &r, &st), TG_RPC_OK);
  assert_int_equal(r.n_kvs, 0);
  assert_int_equal(r.count, 3);
  tg_etcd_range_result_free(&r);

  tg_etcd_range_opts keys = {.prefix = 1, .keys_only = 1};
  assert_int_equal(tg_etcd_get(f->c, "/kv/", &keys, &r, &st), TG_RPC_OK);
  assert_int_equal(r.n_kvs, 3);
  assert_int_equal(r.kvs[2].value_len, 0);
  assert_string_equal(r.kvs[2].key, "/kv/c");
  tg_etcd_range_result_free(&r);

  tg_etcd_range_opts range = {.range_end = "/kv/c"};
  assert_int_equal(tg_etcd_get(f->c, "/kv/a", &range, &r, &st), TG_RPC_OK);
  assert_int_equal(r.n_kvs, 2);
  tg_etcd_range_result_free(&r);

  int64_t deleted = -1, drev = 0;
  assert_int_equal(tg_etcd_delete(f->c, "/kv/a", 0, &deleted, &drev, &st), TG_RPC_OK);
  assert_int_equal(deleted, 1);
  assert_true(drev > rev1);
  assert_int_equal(tg_etcd_get(f->c, "/kv/a", NULL, &r, &st), TG_RPC_OK);
  assert_int_equal(r.n_kvs, 0);
  tg_etcd_range_result_free(&r);
  assert_int_equal(tg_etcd_delete(f->c, "/kv/", 1, &deleted, NULL, &st), TG_RPC_OK);
  assert_int_equal(deleted, 2);
  assert_int_equal(tg_etcd_delete(f->c, "/kv/", 1, &deleted, NULL, &st), TG_RPC_OK);
  assert_int_equal(deleted, 0);
  char buf[64];
  assert_true(etcd_testing_get(f->c, "/kv0", buf, sizeof buf));

  /* Bad input is an error value, not a crash. */
  assert_int_equal(tg_etcd_get(f->c, NULL, NULL, &r, &st), TG_RPC_INVALID_ARGUMENT);
  assert_int_equal(tg_etcd_compact(f->c, -1, 0, &st), TG_RPC_INVALID_ARGUMENT);
  tg_etcd_config none = {.endpoints = " , "};
  assert_null(tg_etcd_open(&none, &st));
  assert_int_equal(st.code, TG_RPC_INVALID_ARGUMENT);
}

/* ---------------------------------------------------------- transactions */

static void test_txn_and_cas_conflict(void **state) {
  fixture *f = *state;
  tg_rpc_status st = {0};
  tg_etcd_txn_result tr;
  f->c = etcd_testing_client(tg_etcd_cluster_endpoints(etcd_testing_cluster), 5000);

  /* Create-if-absent: the first wins, the second sees the winner. */
  for (int round = 0; round < 2; round++) {
    tg_etcd_txn *t = tg_etcd_txn_new();
    assert_non_null(t);
    assert_int_equal(tg_etcd_txn_cmp_create_revision(t, "/txn/leader", TG_ETCD_EQ, 0), 0);
    const char *me = round == 0 ? "first" : "second";
    assert_int_equal(tg_etcd_txn_put(t, TG_ETCD_THEN, "/txn/leader", me, strlen(me), 0), 0);
    assert_int_equal(tg_etcd_txn_get(t, TG_ETCD_ELSE, "/txn/leader", NULL), 0);
    assert_int_equal(tg_etcd_txn_commit(f->c, t, &tr, &st), TG_RPC_OK);
    tg_etcd_txn_free(t);
    assert_int_equal(tr.succeeded, round == 0);
    assert_int_equal(tr.n_responses, 1);
    if (round == 0) {
      assert_int_equal(tr.responses[0].type, TG_ETCD_OP_PUT);
    } else {
      assert_int_equal(tr.responses[0].type, TG_ETCD_OP_RANGE);
      assert_int_equal(tr.responses[0].range.n_kvs, 1);
      assert_string_equal(tr.responses[0].range.kvs[0].value, "first");
    }
    tg_etcd_txn_result_free(&tr);
  }

  /* Compare-and-swap on the value: the stale writer's txn fails, no error. */
  tg_etcd_txn *t = tg_etcd_txn_new();
  tg_etcd_txn_cmp_value(t, "/txn/leader", TG_ETCD_EQ, "first", 5);
  tg_etcd_txn_put(t, TG_ETCD_THEN, "/txn/leader", "swapped", 7, 0);
  assert_int_equal(tg_etcd_txn_commit(f->c, t, &tr, &st), TG_RPC_OK);
  assert_true(tr.succeeded);
  tg_etcd_txn_result_free(&tr);
  assert_int_equal(tg_etcd_txn_commit(f->c, t, &tr, &st), TG_RPC_OK);
  assert_false(tr.succeeded); /* the conflict */
  assert_int_equal(tr.n_responses, 0);
  tg_etcd_txn_result_free(&tr);
  tg_etcd_txn_free(t);

  /* Generation counter: compare mod revision, bump, delete in one txn. */
  tg_etcd_range_result r;
  assert_int_equal(tg_etcd_get(f->c, "/txn/leader", NULL, &r, &st), TG_RPC_OK);
  int64_t mod = r.kvs[0].mod_revision, version = r.kvs[0].version;
  tg_etcd_range_result_free(&r);
  etcd_testing_put(f->c, "/txn/tmp/1", "x");
  etcd_testing_put(f->c, "/txn/tmp/2", "y");
  t = tg_etcd_txn_new();
  tg_etcd_txn_cmp_mod_revision(t, "/txn/leader", TG_ETCD_EQ, mod);
  tg_etcd_txn_cmp_mod_revision(t, "/txn/leader", TG_ETCD_LT, mod + 1);
  tg_etcd_txn_cmp_mod_revision(t, "/txn/leader", TG_ETCD_GT, mod - 1);
  tg_etcd_txn_cmp_version(t, "/txn/leader", TG_ETCD_NE, version + 1);
  tg_etcd_txn_cmp_create_revision(t, "/txn/leader", TG_ETCD_GT, 0);
  tg_etcd_txn_cmp_value(t, "/txn/leader", TG_ETCD_NE, "other", 5);
  tg_etcd_txn_put(t, TG_ETCD_THEN, "/txn/gen", "2", 1, 0);
  tg_etcd_txn_delete(t, TG_ETCD_THEN, "/txn/tmp/", 1);
  tg_etcd_range_opts prefix = {.prefix = 1, .count_only = 1};
  tg_etcd_txn_get(t, TG_ETCD_THEN, "/txn/", &prefix);
  assert_int_equal(tg_etcd_txn_commit(f->c, t, &tr, &st), TG_RPC_OK);
  tg_etcd_txn_free(t);
  assert_true(tr.succeeded);
  assert_int_equal(tr.n_responses, 3);
  assert_int_equal(tr.responses[1].type, TG_ETCD_OP_DELETE);
  assert_int_equal(tr.responses[1].deleted, 2);
  assert_int_equal(tr.responses[2].type, TG_ETCD_OP_RANGE);
  assert_int_equal(tr.responses[2].range.count, 2); /* /txn/gen and /txn/leader */
  tg_etcd_txn_result_free(&tr);

  /* A builder mistake is reported by commit. */
  t = tg_etcd_txn_new();
  assert_int_equal(tg_etcd_txn_cmp_version(t, "", TG_ETCD_EQ, 0), -1);
  tg_etcd_txn_put(t, TG_ETCD_THEN, "/txn/never", "v", 1, 0);
  assert_int_equal(tg_etcd_txn_commit(f->c, t, &tr, &st), TG_RPC_INVALID_ARGUMENT);
  assert_non_null(strstr(st.message, "empty key"));
  tg_etcd_txn_free(t);
}

/* --------------------------------------------------------------- leases */

static volatile int lost_calls;
static int64_t lost_id;

static void on_lost(int64_t lease_id, void *user) {
  lost_id = lease_id;
  __atomic_add_fetch(&lost_calls, 1, __ATOMIC_SEQ_CST);
}

static void test_lease_expiry_and_keepalive(void **state) {
  fixture *f = *state;
  tg_rpc_status st = {0};
  f->c = etcd_testing_client(tg_etcd_cluster_endpoints(etcd_testing_cluster), 5000);
  int64_t short_lease = 0, kept_lease = 0;
  assert_int_equal(tg_etcd_lease_grant(f->c, 2, &short_lease, &st), TG_RPC_OK);
  assert_int_equal(tg_etcd_lease_grant(f->c, 2, &kept_lease, &st), TG_RPC_OK);
  assert_int_not_equal(short_lease, kept_lease);
  tg_etcd_put_opts on_short = {.lease = short_lease}, on_kept = {.lease = kept_lease};
  assert_int_equal(tg_etcd_put(f->c, "/lease/short", "s", 1, &on_short, NULL, &st), TG_RPC_OK);
  assert_int_equal(tg_etcd_put(f->c, "/lease/kept", "k", 1, &on_kept, NULL, &st), TG_RPC_OK);
  int64_t ttl = 0, granted = 0;
  assert_int_equal(tg_etcd_lease_ttl(f->c, short_lease, &ttl, &granted, &st), TG_RPC_OK);
  assert_int_equal(granted, 2);
  assert_in_range(ttl, 0, 2);

  tg_etcd_watch_opts wo = {.prefix = 1, .prev_kv = 1};
  f->w = tg_etcd_watch_open(f->c, "/lease/", &wo, &st);
  if (!f->w) fail_msg("watch: %s", st.message);
  lost_calls = 0;
  f->ka = tg_etcd_keepalive_start(f->c, kept_lease, on_lost, NULL, &st);
  if (!f->ka) fail_msg("keepalive: %s", st.message);

  /* The short lease expires (etcd checks expiry every 500 ms): DELETE. */
  tg_etcd_event ev;
  assert_int_equal(tg_etcd_watch_next(f->w, &ev, 6000, &st), TG_ETCD_WATCH_EVENT);
  assert_int_equal(ev.type, TG_ETCD_EVENT_DELETE);
  assert_string_equal(ev.kv.key, "/lease/short");
  assert_true(ev.has_prev);
  assert_string_equal(ev.prev.value, "s");
  assert_int_equal(ev.prev.lease, short_lease);
  tg_etcd_event_clear(&ev);
  assert_int_equal(tg_etcd_lease_ttl(f->c, short_lease, &ttl, NULL, &st), TG_RPC_OK);
  assert_int_equal(ttl, -1);

  /* The kept key outlives its TTL by far. */
  sleep(3);
  char buf[16];
  assert_true(etcd_testing_get(f->c, "/lease/kept", buf, sizeof buf));
  assert_false(tg_etcd_keepalive_lost(f->ka));
  assert_int_equal(tg_etcd_keepalive_ttl(f->ka), 2);
  assert_int_equal(lost_calls, 0);
  etcd_testing_expect_no_event(f->w, 200);

  /* Revoked behind the keep-alive's back: the key goes, the loss is reported. */
  assert_int_equal(tg_etcd_lease_revoke(f->c, kept_lease, &st), TG_RPC_OK);
  etcd_testing_expect_event(f->w, TG_ETCD_EVENT_DELETE, "/lease/kept", NULL, 3000);
  for (int i = 0; i < 60 && !tg_etcd_keepalive_lost(f->ka); i++) usleep(50 * 1000);
  assert_true(tg_etcd_keepalive_lost(f->ka));
  assert_int_equal(lost_calls, 1);
  assert_int_equal(lost_id, kept_lease);

  /* A keep-alive for a lease that does not exist is refused. */
  assert_null(tg_etcd_keepalive_start(f->c, short_lease, NULL, NULL, &st));
  assert_int_equal(st.code, TG_RPC_NOT_FOUND);
}

/* ------------------------------------------------------------ compaction */

static void test_compaction_is_reported(void **state) {
  fixture *f = *state;
  tg_rpc_status st = {0};
  f->c = etcd_testing_client(tg_etcd_cluster_endpoints(etcd_testing_cluster), 5000);
  int64_t first = etcd_testing_put(f->c, "/compact/k", "1");
  etcd_testing_put(f->c, "/compact/k", "2");
  int64_t last = etcd_testing_put(f->c, "/compact/k", "3");
  assert_int_equal(tg_etcd_compact(f->c, last, 1, &st), TG_RPC_OK);

  tg_etcd_watch_opts wo = {.start_revision = first};
  f->w = tg_etcd_watch_open(f->c, "/compact/k", &wo, &st);
  if (!f->w) fail_msg("watch: %s", st.message);
  tg_etcd_event ev;
  assert_int_equal(tg_etcd_watch_next(f->w, &ev, 3000, &st), TG_ETCD_WATCH_EVENT);
  assert_int_equal(ev.type, TG_ETCD_EVENT_COMPACTED);
  assert_int_equal(ev.compact_revision, last);
  tg_etcd_event_clear(&ev);
  assert_int_equal(tg_etcd_watch_next(f->w, &ev, 100, &st), TG_ETCD_WATCH_CLOSED);
  assert_int_equal(st.code, TG_RPC_OUT_OF_RANGE);
  tg_etcd_watch_close(f->w);

  /* From the compact revision on, history is there. */
  wo.start_revision = last;
  f->w = tg_etcd_watch_open(f->c, "/compact/k", &wo, &st);
  if (!f->w) fail_msg("watch: %s", st.message);
  etcd_testing_expect_event(f->w, TG_ETCD_EVENT_PUT, "/compact/k", "3", 3000);
  /* Reading below the compact revision is an error value. */
  tg_etcd_range_result r;
  tg_etcd_range_opts old = {.revision = first};
  assert_int_equal(tg_etcd_get(f->c, "/compact/k", &old, &r, &st), TG_RPC_OUT_OF_RANGE);
  assert_non_null(strstr(st.message, "compacted"));
}

/* ---------------------------------------------------- watch and restarts */

static void test_watch_survives_restart(void **state) {
  fixture *f = *state;
  tg_rpc_status st = {0};
  char err[256];
  f->c = etcd_testing_client(tg_etcd_cluster_endpoints(etcd_testing_cluster), 5000);
  f->writer = etcd_testing_client(tg_etcd_cluster_endpoints(etcd_testing_cluster), 8000);
  tg_etcd_watch_opts wo = {.prefix = 1};
  f->w = tg_etcd_watch_open(f->c, "/w/", &wo, &st);
  if (!f->w) fail_msg("watch: %s", st.message);

  /* A keep-alive rides through the restarts too (etcd renews leases when
   * a member becomes leader, so the TTL covers the downtime). The client
   * counts a lease lost once it went a whole TTL without a refresh: 10 s
   * covers both restarts and the reconnections between them on a loaded
   * machine (5 s did not: two restarts of 2.3 and 1.4 s, 0.3 s apart). */
  int64_t lease = 0;
  assert_int_equal(tg_etcd_lease_grant(f->c, 10, &lease, &st), TG_RPC_OK);
  tg_etcd_put_opts leased = {.lease = lease};
  assert_int_equal(tg_etcd_put(f->c, "/wl/alive", "1", 1, &leased, NULL, &st), TG_RPC_OK);
  f->ka = tg_etcd_keepalive_start(f->c, lease, NULL, NULL, &st);
  if (!f->ka) fail_msg("keepalive: %s", st.message);

  etcd_testing_put(f->writer, "/w/1", "a");
  etcd_testing_put(f->writer, "/w/2", "b");
  etcd_testing_expect_event(f->w, TG_ETCD_EVENT_PUT, "/w/1", "a", 3000);
  int64_t rev2 = etcd_testing_expect_event(f->w, TG_ETCD_EVENT_PUT, "/w/2", "b", 3000);
  assert_int_equal(tg_etcd_watch_revision(f->w), rev2);

  /* SIGKILL: the watcher keeps trying, and says "nothing yet" meanwhile. */
  assert_int_equal(tg_etcd_cluster_kill(etcd_testing_cluster, 0), 0);
  etcd_testing_expect_no_event(f->w, 300);
  if (tg_etcd_cluster_restart(etcd_testing_cluster, 0, 15000, err, sizeof err) != 0) fail_msg("%s", err);
  /* Written right after the restart, before the watcher resubscribes
   * (it only does so inside next). */
  etcd_testing_put(f->writer, "/w/3", "c");
  int64_t deleted = 0;
  assert_int_equal(tg_etcd_delete(f->writer, "/w/1", 0, &deleted, NULL, &st), TG_RPC_OK);
  assert_int_equal(deleted, 1);
  etcd_testing_expect_event(f->w, TG_ETCD_EVENT_PUT, "/w/3", "c", 10000);
  etcd_testing_expect_event(f->w, TG_ETCD_EVENT_DELETE, "/w/1", NULL, 3000);

  /* Second round: killed while the watcher waits in next. */
  assert_int_equal(tg_etcd_cluster_kill(etcd_testing_cluster, 0), 0);
  etcd_testing_expect_no_event(f->w, 200);
  if (tg_etcd_cluster_restart(etcd_testing_cluster, 0, 15000, err, sizeof err) != 0) fail_msg("%s", err);
  etcd_testing_put(f->writer, "/w/4", "d");
  etcd_testing_expect_event(f->w, TG_ETCD_EVENT_PUT, "/w/4", "d", 10000);
  etcd_testing_expect_no_event(f->w, 300); /* and nothing repeated */
  sleep(2);
  char buf[8];
  assert_false(tg_etcd_keepalive_lost(f->ka));
  assert_true(etcd_testing_get(f->c, "/wl/alive", buf, sizeof buf));
  int64_t ttl = 0;
  assert_int_equal(tg_etcd_lease_ttl(f->c, lease, &ttl, NULL, &st), TG_RPC_OK);
  assert_true(ttl > 0);

  /* A watch from an old revision replays history in order. */
  tg_etcd_watch_close(f->w);
  wo.start_revision = rev2;
  f->w = tg_etcd_watch_open(f->c, "/w/", &wo, &st);
  if (!f->w) fail_msg("watch: %s", st.message);
  etcd_testing_expect_event(f->w, TG_ETCD_EVENT_PUT, "/w/2", "b", 3000);
  etcd_testing_expect_event(f->w, TG_ETCD_EVENT_PUT, "/w/3", "c", 3000);
  etcd_testing_expect_event(f->w, TG_ETCD_EVENT_DELETE, "/w/1", NULL, 3000);
  etcd_testing_expect_event(f->w, TG_ETCD_EVENT_PUT, "/w/4", "d", 3000);
}

/* A clear failure within the deadline: UNAVAILABLE once gRPC saw the
 * refusal, or DEADLINE_EXCEEDED when the 800 ms ran out while the channel
 * was still connecting or backing off between attempts (seen under ASan on
 * a loaded machine, for the read and for the watch). */
static void expect_failed_in_time(const char *what, const tg_rpc_status *st) {
  if (st->code == TG_RPC_UNAVAILABLE) {
    if (!strstr(st->message, "no endpoint answered")) fail_msg("%s: UNAVAILABLE but \"%s\"", what, st->message);
  } else if (st->code != TG_RPC_DEADLINE_EXCEEDED) {
    fail_msg("%s on an unreachable endpoint: code %d (%s)", what, (int)st->code, st->message);
  }
}

static void test_unreachable_endpoint_fails_in_time(void **state) {
  fixture *f = *state;
  tg_rpc_status st = {0};
  /* Port 1 on loopback: nothing listens there. */
  f->c = etcd_testing_client("127.0.0.1:1", 800);
  tg_etcd_range_result r;
  tg_rpc_code rc = tg_etcd_get(f->c, "/x", NULL, &r, &st);
  assert_int_equal(rc, st.code);
  expect_failed_in_time("get", &st);
  tg_etcd_watch_opts wo = {0};
  memset(&st, 0, sizeof st);
  assert_null(tg_etcd_watch_open(f->c, "/x", &wo, &st));
  if (st.code == TG_RPC_UNAVAILABLE) return; /* the watch's message is its own */
  expect_failed_in_time("watch", &st);
}

int main(void) {
  tg_log_init("etcd_test", TG_LOG_INFO);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_put_get_delete, etcd_testing_setup, etcd_testing_teardown),
      cmocka_unit_test_setup_teardown(test_txn_and_cas_conflict, etcd_testing_setup, etcd_testing_teardown),
      cmocka_unit_test_setup_teardown(test_lease_expiry_and_keepalive, etcd_testing_setup, etcd_testing_teardown),
      cmocka_unit_test_setup_teardown(test_compaction_is_reported, etcd_testing_setup, etcd_testing_teardown),
      cmocka_unit_test_setup_teardown(test_watch_survives_restart, etcd_testing_setup, etcd_testing_teardown),
      cmocka_unit_test_setup_teardown(test_unreachable_endpoint_fails_in_time, etcd_testing_setup, etcd_testing_teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, etcd_testing_stop);
}
