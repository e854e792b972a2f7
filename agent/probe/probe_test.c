/* Tests of agent probes on loopback: real probe servers and a real prober
 * in one process. A stopped server is a partition of that peer only and
 * its restart clears it; RTT statistics fill in; a peer that answers late
 * is slow (against an absolute bound and against its own baseline); a peer
 * that loses most probes without K failures in a row is still a
 * partition; the wrong node at an address is not the peer; changing the
 * peer set keeps, drops and adds peers; bad input is refused. Peers with
 * controlled behaviour are test servers answering the same Probe method. */
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "agent/probe/probe.h"
#include "common/log/log.h"
#include "common/rpc/rpc.h"
#include "proto/tardigrade/v1/replication.pb-c.h"

/* ---------------------------------------------------------------- events */

#define MAX_EVENTS 256

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  tg_probe_event ev[MAX_EVENTS];
  int n;
} events;

static void on_event(const tg_probe_event *ev, void *user) {
  events *e = user;
  pthread_mutex_lock(&e->mu);
  if (e->n < MAX_EVENTS) e->ev[e->n++] = *ev;
  pthread_cond_broadcast(&e->cv);
  pthread_mutex_unlock(&e->mu);
}

static int count_events(events *e, const char *name, const char *peer) {
  int count = 0;
  pthread_mutex_lock(&e->mu);
  for (int i = 0; i < e->n; i++)
    count += strcmp(tg_probe_event_name(&e->ev[i]), name) == 0 && strcmp(e->ev[i].peer.node_id, peer) == 0;
  pthread_mutex_unlock(&e->mu);
  return count;
}

/* Waits for the first event `name` about `peer` at index >= from; copies
 * it to out and returns its index, or -1 after timeout_ms. */
static int wait_event(events *e, int from, const char *name, const char *peer, int64_t timeout_ms,
                      tg_probe_event *out) {
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += timeout_ms / 1000;
  deadline.tv_nsec += (timeout_ms % 1000) * 1000000;
  if (deadline.tv_nsec >= 1000000000) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000;
  }
  int found = -1;
  pthread_mutex_lock(&e->mu);
  for (;;) {
    for (int i = from; i < e->n && found < 0; i++)
      if (strcmp(tg_probe_event_name(&e->ev[i]), name) == 0 && strcmp(e->ev[i].peer.node_id, peer) == 0) found = i;
    if (found >= 0 || pthread_cond_timedwait(&e->cv, &e->mu, &deadline) != 0) break;
  }
  if (found < 0) /* one last look after the timeout */
    for (int i = from; i < e->n && found < 0; i++)
      if (strcmp(tg_probe_event_name(&e->ev[i]), name) == 0 && strcmp(e->ev[i].peer.node_id, peer) == 0) found = i;
  if (found >= 0 && out) *out = e->ev[found];
  pthread_mutex_unlock(&e->mu);
  return found;
}

/* ---------------------------------------------------------------- servers */

/* A real probe server (tg_probe_register_service). */
typedef struct {
  tg_rpc_server *srv;
  tg_probe_service *svc;
  int port;
  char address[64];
} probe_server;

static void server_start(probe_server *s, const char *node, int port) {
  char err[256], listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
  s->srv = tg_rpc_server_new(NULL, err, sizeof err);
  assert_non_null(s->srv);
  s->svc = tg_probe_register_service(s->srv, node, err, sizeof err);
  if (!s->svc) fail_msg("register: %s", err);
  s->port = tg_rpc_server_listen(s->srv, listen, NULL, err, sizeof err);
  if (s->port <= 0) fail_msg("listen %s: %s", listen, err);
  if (tg_rpc_server_start(s->srv, err, sizeof err) != 0) fail_msg("start: %s", err);
  snprintf(s->address, sizeof s->address, "127.0.0.1:%d", s->port);
}

static void server_stop(probe_server *s) {
  tg_rpc_server_free(s->srv, 0);
  tg_probe_service_free(s->svc);
  s->srv = NULL;
  s->svc = NULL;
}

/* A peer whose answers the test controls: late by delay_ms, or failing
 * `fail_of_3` of every 3 probes. */
typedef struct {
  tg_rpc_server *srv;
  tg_rpc_method method;
  char address[64];
  pthread_mutex_t mu;
  int delay_ms;
  int fail_of_3;
  int calls;
} fake_peer;

static void fake_on_probe(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  fake_peer *f = user;
  pthread_mutex_lock(&f->mu);
  int delay_ms = f->delay_ms, fail = f->calls++ % 3 < f->fail_of_3;
  pthread_mutex_unlock(&f->mu);
  if (delay_ms > 0) {
    struct timespec ts = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
  }
  if (fail) {
    tg_rpc_call_finish(call, TG_RPC_UNAVAILABLE, "test peer drops this probe", NULL);
    return;
  }
  const Tardigrade__V1__ProbeRequest *req = (const Tardigrade__V1__ProbeRequest *)msg;
  Tardigrade__V1__ProbeResponse resp = TARDIGRADE__V1__PROBE_RESPONSE__INIT;
  resp.node_id = "slowpoke";
  resp.sent_unix_us = req->sent_unix_us;
  tg_rpc_call_finish(call, TG_RPC_OK, NULL, &resp.base);
}

static fake_peer *fake_start(void) {
  char err[256];
  fake_peer *f = calloc(1, sizeof *f);
  assert_non_null(f);
  pthread_mutex_init(&f->mu, NULL);
  f->method = (tg_rpc_method){.path = "/tardigrade.v1.Replication/Probe",
                              .kind = TG_RPC_UNARY,
                              .request = &tardigrade__v1__probe_request__descriptor,
                              .response = &tardigrade__v1__probe_response__descriptor,
                              .on_message = fake_on_probe,
                              .user = f};
  tg_rpc_server_config sc = {.threads = 4};
  f->srv = tg_rpc_server_new(&sc, err, sizeof err);
  assert_non_null(f->srv);
  assert_int_equal(tg_rpc_server_register(f->srv, &f->method), 0);
  int port = tg_rpc_server_listen(f->srv, "127.0.0.1:0", NULL, err, sizeof err);
  if (port <= 0 || tg_rpc_server_start(f->srv, err, sizeof err) != 0) fail_msg("fake peer: %s", err);
  snprintf(f->address, sizeof f->address, "127.0.0.1:%d", port);
  return f;
}

static void fake_set(fake_peer *f, int delay_ms, int fail_of_3) {
  pthread_mutex_lock(&f->mu);
  f->delay_ms = delay_ms;
  f->fail_of_3 = fail_of_3;
  pthread_mutex_unlock(&f->mu);
}

static void fake_free(fake_peer *f) {
  if (!f) return;
  tg_rpc_server_free(f->srv, 0);
  pthread_mutex_destroy(&f->mu);
  free(f);
}

/* ---------------------------------------------------------------- fixture */

typedef struct {
  events ev;
  probe_server b, c;
  fake_peer *fake;
  tg_prober *prober;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (!f) return -1;
  pthread_mutex_init(&f->ev.mu, NULL);
  pthread_cond_init(&f->ev.cv, NULL);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  tg_prober_free(f->prober); /* first: it calls on_event with f->ev */
  if (f->b.srv) server_stop(&f->b);
  if (f->c.srv) server_stop(&f->c);
  fake_free(f->fake);
  pthread_mutex_destroy(&f->ev.mu);
  pthread_cond_destroy(&f->ev.cv);
  free(f);
  return 0;
}

/* Fast probes: every 50 ms, 10 in the window, 3 in a row. */
static tg_prober *new_prober(fixture *f, int64_t slow_rtt_ms, double slow_factor) {
  char err[256];
  tg_prober_config cfg = {.node_id = "a",
                          .period_ms = 50,
                          .timeout_ms = 300,
                          .window = 10,
                          .loss_threshold = 0.5,
                          .consecutive_failures = 3,
                          .slow_rtt_ms = slow_rtt_ms,
                          .slow_factor = slow_factor,
                          .on_event = on_event,
                          .user = &f->ev};
  tg_prober *p = tg_prober_new(&cfg, err, sizeof err);
  if (!p) fail_msg("tg_prober_new: %s", err);
  return p;
}

static void set_peers(tg_prober *p, const tg_probe_peer *peers, size_t n) {
  char err[256];
  if (tg_prober_set_peers(p, peers, n, err, sizeof err) != 0) fail_msg("set_peers: %s", err);
}

static const tg_probe_peer_stats *find_stats(const tg_probe_peer_stats *st, size_t n, const char *peer) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(st[i].node_id, peer) == 0) return &st[i];
  return NULL;
}

/* Waits until every peer has at least `probes` probes, none failing lately. */
static void wait_healthy(tg_prober *p, uint64_t probes, int64_t timeout_ms) {
  for (int64_t waited = 0;; waited += 20) {
    tg_probe_peer_stats st[8];
    size_t n = tg_prober_stats(p, st, 8), good = 0;
    for (size_t i = 0; i < n && i < 8; i++)
      good += st[i].probes_sent >= probes && st[i].consecutive_failures == 0 && !st[i].partitioned;
    if (good == n) return;
    if (waited >= timeout_ms) fail_msg("peers not healthy after %" PRId64 " ms", timeout_ms);
    struct timespec ts = {0, 20 * 1000000};
    nanosleep(&ts, NULL);
  }
}

/* ---------------------------------------------------------------- tests */

static void test_stopped_server_is_a_partition_of_that_peer_only(void **state) {
  fixture *f = *state;
  server_start(&f->b, "b", 0);
  server_start(&f->c, "c", 0);
  f->prober = new_prober(f, 0, 0);
  tg_probe_peer peers[] = {{"b", f->b.address}, {"c", f->c.address}};
  set_peers(f->prober, peers, 2);
  wait_healthy(f->prober, 5, 10000);

  tg_probe_peer_stats st[4];
  assert_int_equal(tg_prober_stats(f->prober, st, 4), 2);
  for (int i = 0; i < 2; i++) {
    assert_true(st[i].rtt_last_us > 0);
    assert_true(st[i].rtt_median_us > 0);
    assert_true(st[i].rtt_p99_us >= st[i].rtt_median_us);
    assert_true(st[i].rtt_baseline_us > 0);
    assert_true(st[i].window_probes >= 5 && st[i].window_probes <= 10);
    assert_true(st[i].last_ok_unix_ms > 0);
    assert_int_equal(st[i].probes_lost, 0);
  }
  assert_int_equal(count_events(&f->ev, "NETWORK_PARTITION", "b"), 0);

  int b_port = f->b.port;
  server_stop(&f->b);
  tg_probe_event ev;
  int at = wait_event(&f->ev, 0, "NETWORK_PARTITION", "b", 5000, &ev);
  assert_true(at >= 0);
  assert_int_equal(ev.kind, TARDIGRADE__V1__FAULT_KIND__FAULT_NETWORK_PARTITION);
  assert_int_equal(ev.severity, TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR);
  assert_false(ev.cleared);
  assert_string_equal(ev.node_id, "a");
  assert_string_equal(ev.peer.address, peers[0].address);
  assert_true(ev.peer.consecutive_failures >= 3);
  assert_non_null(strstr(ev.detail, "in a row failed"));
  char line[512];
  assert_non_null(strstr(tg_probe_event_format(&ev, line, sizeof line), "NETWORK_PARTITION node=a peer=b"));

  size_t n = tg_prober_stats(f->prober, st, 4);
  assert_true(find_stats(st, n, "b")->partitioned);
  assert_true(find_stats(st, n, "b")->last_error[0] != '\0');
  assert_false(find_stats(st, n, "c")->partitioned);
  assert_int_equal(find_stats(st, n, "c")->consecutive_failures, 0);

  /* The same node comes back on the same port. */
  server_start(&f->b, "b", b_port);
  assert_true(wait_event(&f->ev, at, "NETWORK_PARTITION_CLEARED", "b", 10000, &ev) > at);
  assert_int_equal(ev.kind, TARDIGRADE__V1__FAULT_KIND__FAULT_NETWORK_PARTITION);
  assert_true(ev.cleared);
  n = tg_prober_stats(f->prober, st, 4);
  assert_false(find_stats(st, n, "b")->partitioned);
  assert_true(find_stats(st, n, "b")->probes_lost >= 3);
  assert_int_equal(count_events(&f->ev, "NETWORK_PARTITION", "b"), 1);
  assert_int_equal(count_events(&f->ev, "NETWORK_PARTITION", "c"), 0);
  assert_int_equal(find_stats(st, n, "c")->probes_lost, 0);
}

static void test_late_answers_are_slow(void **state) {
  fixture *f = *state;
  f->fake = fake_start();
  /* Relative: no absolute bound, 5x the baseline (a fraction of a ms). */
  f->prober = new_prober(f, 0, 5);
  tg_probe_peer peer = {"slowpoke", f->fake->address};
  set_peers(f->prober, &peer, 1);
  wait_healthy(f->prober, 10, 10000);
  tg_probe_peer_stats st;
  assert_int_equal(tg_prober_stats(f->prober, &st, 1), 1);
  assert_true(st.rtt_baseline_us > 0 && st.rtt_baseline_us < 20000);
  /* The delay is relative to the baseline measured here: on a loaded machine
   * a loopback round trip takes milliseconds, and a fixed 40 ms would not be
   * 5x of it. At most 8 x 20 ms, well inside the 300 ms probe timeout. */
  int delay_ms = (int)(st.rtt_baseline_us * 8 / 1000);
  if (delay_ms < 40) delay_ms = 40;
  fake_set(f->fake, delay_ms, 0);
  tg_probe_event ev;
  int at = wait_event(&f->ev, 0, "NETWORK_SLOW", "slowpoke", 5000, &ev);
  assert_true(at >= 0);
  assert_int_equal(ev.kind, TARDIGRADE__V1__FAULT_KIND__FAULT_NETWORK_SLOW);
  assert_int_equal(ev.severity, TARDIGRADE__V1__SEVERITY__SEVERITY_WARNING);
  assert_non_null(strstr(ev.detail, "baseline"));
  assert_true(ev.peer.rtt_median_us > 5 * ev.peer.rtt_baseline_us);
  assert_true(ev.peer.rtt_p99_us >= delay_ms * 1000);
  assert_true(ev.peer.slow);
  assert_false(ev.peer.partitioned);
  fake_set(f->fake, 0, 0);
  assert_true(wait_event(&f->ev, at, "NETWORK_SLOW_CLEARED", "slowpoke", 5000, &ev) > at);
  assert_int_equal(count_events(&f->ev, "NETWORK_PARTITION", "slowpoke"), 0);
  tg_prober_free(f->prober);

  /* Absolute: a bound of 20 ms, however high the baseline. */
  f->ev.n = 0;
  f->prober = new_prober(f, 20, 1000);
  set_peers(f->prober, &peer, 1);
  wait_healthy(f->prober, 3, 10000);
  fake_set(f->fake, 40, 0);
  at = wait_event(&f->ev, 0, "NETWORK_SLOW", "slowpoke", 5000, &ev);
  assert_true(at >= 0);
  assert_non_null(strstr(ev.detail, "above the bound of 20 ms"));
  fake_set(f->fake, 0, 0);
  assert_true(wait_event(&f->ev, at, "NETWORK_SLOW_CLEARED", "slowpoke", 5000, NULL) > at);
}

static void test_loss_above_threshold_is_a_partition(void **state) {
  fixture *f = *state;
  f->fake = fake_start();
  fake_set(f->fake, 0, 2); /* two of every three lost: never three in a row */
  f->prober = new_prober(f, 0, 0);
  tg_probe_peer peer = {"slowpoke", f->fake->address};
  set_peers(f->prober, &peer, 1);
  tg_probe_event ev;
  int at = wait_event(&f->ev, 0, "NETWORK_PARTITION", "slowpoke", 5000, &ev);
  assert_true(at >= 0);
  assert_non_null(strstr(ev.detail, "of the last 10 probes"));
  assert_true(ev.peer.loss > 0.5);
  assert_true(ev.peer.consecutive_failures < 3);
  fake_set(f->fake, 0, 0);
  assert_true(wait_event(&f->ev, at, "NETWORK_PARTITION_CLEARED", "slowpoke", 5000, &ev) > at);
  assert_true(ev.peer.loss <= 0.5);
}

static void test_wrong_node_is_not_the_peer(void **state) {
  fixture *f = *state;
  server_start(&f->c, "c", 0);
  f->prober = new_prober(f, 0, 0);
  tg_probe_peer peer = {"b", f->c.address}; /* b's address now serves c */
  set_peers(f->prober, &peer, 1);
  tg_probe_event ev;
  assert_true(wait_event(&f->ev, 0, "NETWORK_PARTITION", "b", 5000, &ev) >= 0);
  assert_non_null(strstr(ev.peer.last_error, "answered by node 'c'"));
}

static void test_changing_peers(void **state) {
  fixture *f = *state;
  char err[256];
  server_start(&f->b, "b", 0);
  server_start(&f->c, "c", 0);
  f->prober = new_prober(f, 0, 0);
  int dead_port = f->c.port;
  server_stop(&f->c);
  char dead[64];
  snprintf(dead, sizeof dead, "127.0.0.1:%d", dead_port);
  tg_probe_peer two[] = {{"b", f->b.address}, {"d", dead}};
  set_peers(f->prober, two, 2);
  assert_true(wait_event(&f->ev, 0, "NETWORK_PARTITION", "d", 5000, NULL) >= 0);
  tg_probe_peer_stats st[4];
  uint64_t b_sent = find_stats(st, tg_prober_stats(f->prober, st, 4), "b")->probes_sent;
  assert_true(b_sent > 0);

  /* Bad sets are refused and change nothing. */
  tg_probe_peer dup[] = {{"b", f->b.address}, {"b", dead}};
  assert_int_equal(tg_prober_set_peers(f->prober, dup, 2, err, sizeof err), -1);
  assert_non_null(strstr(err, "twice"));
  tg_probe_peer empty[] = {{"b", ""}};
  assert_int_equal(tg_prober_set_peers(f->prober, empty, 1, err, sizeof err), -1);
  tg_probe_peer many[TG_PROBE_MAX_PEERS + 1];
  memset(many, 0, sizeof many);
  assert_int_equal(tg_prober_set_peers(f->prober, many, TG_PROBE_MAX_PEERS + 1, err, sizeof err), -1);
  assert_int_equal(tg_prober_stats(f->prober, st, 4), 2);

  /* The world changes: d is no longer a buddy (its partition is cleared),
   * b stays with its statistics, e is new. */
  server_start(&f->c, "e", 0);
  tg_probe_peer next[] = {{"e", f->c.address}, {"b", f->b.address}};
  set_peers(f->prober, next, 2);
  tg_probe_event ev;
  assert_true(wait_event(&f->ev, 0, "NETWORK_PARTITION_CLEARED", "d", 0, &ev) >= 0);
  assert_string_equal(ev.detail, "no longer a peer");
  size_t n = tg_prober_stats(f->prober, st, 4);
  assert_int_equal(n, 2);
  assert_null(find_stats(st, n, "d"));
  assert_true(find_stats(st, n, "b")->probes_sent >= b_sent);
  wait_healthy(f->prober, 3, 10000);
  assert_int_equal(count_events(&f->ev, "NETWORK_PARTITION", "e"), 0);

  set_peers(f->prober, NULL, 0);
  assert_int_equal(tg_prober_stats(f->prober, st, 4), 0);
}

static void test_bad_config(void **state) {
  char err[256];
  tg_prober_config ok = {.node_id = "a"};
  tg_prober *p = tg_prober_new(&ok, err, sizeof err);
  assert_non_null(p);
  tg_prober_free(p);
  tg_prober_free(NULL);
  assert_null(tg_prober_new(NULL, err, sizeof err));
  tg_prober_config bad[] = {
      {.node_id = ""},
      {.node_id = "a", .period_ms = 5},
      {.node_id = "a", .timeout_ms = -1},
      {.node_id = "a", .window = TG_PROBE_MAX_WINDOW + 1},
      {.node_id = "a", .loss_threshold = 1.5},
      {.node_id = "a", .loss_threshold = -0.1},
      {.node_id = "a", .slow_rtt_ms = -1},
      {.node_id = "a", .slow_factor = 0.5},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = '\0';
    assert_null(tg_prober_new(&bad[i], err, sizeof err));
    assert_non_null(strstr(err, "prober:"));
  }
}

static void test_service_answers_and_validates(void **state) {
  fixture *f = *state;
  char err[256];
  server_start(&f->b, "b", 0);
  /* Registered once per server; the server must not have started. */
  assert_null(tg_probe_register_service(f->b.srv, "b", err, sizeof err));
  assert_null(tg_probe_register_service(NULL, "b", err, sizeof err));
  tg_rpc_channel *ch = tg_rpc_channel_new(f->b.address, NULL, err, sizeof err);
  assert_non_null(ch);
  Tardigrade__V1__ProbeRequest req = TARDIGRADE__V1__PROBE_REQUEST__INIT;
  req.from_node_id = "tester";
  req.sent_unix_us = 1234567;
  ProtobufCMessage *resp = NULL;
  tg_rpc_call_opts opts = {.deadline_ms = 5000, .wait_for_ready = 1};
  tg_rpc_status st;
  assert_int_equal(tg_rpc_unary(ch, "/tardigrade.v1.Replication/Probe", &req.base,
                                &tardigrade__v1__probe_response__descriptor, &resp, &opts, &st),
                   TG_RPC_OK);
  const Tardigrade__V1__ProbeResponse *r = (const Tardigrade__V1__ProbeResponse *)resp;
  assert_string_equal(r->node_id, "b");
  assert_int_equal(r->sent_unix_us, 1234567);
  protobuf_c_message_free_unpacked(resp, NULL);
  char long_id[200];
  memset(long_id, 'x', sizeof long_id - 1);
  long_id[sizeof long_id - 1] = '\0';
  req.from_node_id = long_id;
  assert_int_equal(tg_rpc_unary(ch, "/tardigrade.v1.Replication/Probe", &req.base,
                                &tardigrade__v1__probe_response__descriptor, &resp, &opts, &st),
                   TG_RPC_INVALID_ARGUMENT);
  assert_null(resp);
  tg_rpc_channel_free(ch);
}

int main(void) {
  tg_log_init("probe_test", TG_LOG_WARN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_stopped_server_is_a_partition_of_that_peer_only, setup, teardown),
      cmocka_unit_test_setup_teardown(test_late_answers_are_slow, setup, teardown),
      cmocka_unit_test_setup_teardown(test_loss_above_threshold_is_a_partition, setup, teardown),
      cmocka_unit_test_setup_teardown(test_wrong_node_is_not_the_peer, setup, teardown),
      cmocka_unit_test_setup_teardown(test_changing_peers, setup, teardown),
      cmocka_unit_test(test_bad_config),
      cmocka_unit_test_setup_teardown(test_service_answers_and_validates, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
