/* Tests for hang and straggler detection: the adaptive timeout, naming the
 * rank that did not enter a collective (and never its waiting peers), one
 * report per episode, stragglers only after their window, and refusal of
 * bad input. Time is an input, so every scenario is exact and instant. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent/progress/progress.h"

#define MAX_EVENTS 16

static tg_progress_config base_config(void) {
  tg_progress_config c = {
      .max_ranks = 8,
      .hang_factor = 5.0,
      .hang_floor_ms = 1000,
      .hang_ceiling_ms = 60000,
      .straggler_factor = 1.5,
      .straggler_window_steps = 4,
      .min_history_steps = 4,
  };
  return c;
}

static tg_progress *make(const tg_progress_config *c) {
  char err[128] = "";
  tg_progress *p = tg_progress_new(c, err, sizeof err);
  if (!p) fail_msg("tg_progress_new: %s", err);
  return p;
}

static void report(tg_progress *p, int32_t rank, uint64_t step, uint64_t seq, uint32_t step_ms,
                   int64_t at_ms, const char *op) {
  tg_progress_record r;
  memset(&r, 0, sizeof r);
  r.rank = rank;
  r.step = step;
  r.collective_seq = seq;
  r.step_time_ms = step_ms;
  r.updated_ms = at_ms;
  snprintf(r.op, sizeof r.op, "%s", op);
  assert_int_equal(tg_progress_update(p, &r), TG_PROGRESS_OK);
}

/* `ranks` ranks run steps first..last, each taking step_ms, entering
 * seq = 2*step - 1 and 2*step (two collectives per step). Returns the time
 * after the last step. */
static int64_t run_steps(tg_progress *p, int ranks, uint64_t first, uint64_t last,
                         uint32_t step_ms, int64_t t) {
  for (uint64_t s = first; s <= last; s++) {
    t += step_ms;
    for (int r = 0; r < ranks; r++) report(p, r, s, 2 * s, step_ms, t, "allreduce");
  }
  return t;
}

static int evaluate(tg_progress *p, int64_t now, tg_progress_event *ev) {
  int n = tg_progress_evaluate(p, now, ev, MAX_EVENTS);
  assert_true(n >= 0);
  return n;
}

static void test_timeout_adapts_to_step_time(void **state) {
  tg_progress_config c = base_config();
  tg_progress *p = make(&c);
  assert_int_equal(tg_progress_hang_timeout_ms(p), 60000); /* nothing known: the ceiling */
  assert_int_equal(tg_progress_typical_step_ms(p), 0);
  run_steps(p, 4, 1, 5, 100, 0); /* fast: 5 x 100 ms is under the floor */
  assert_int_equal(tg_progress_typical_step_ms(p), 100);
  assert_int_equal(tg_progress_hang_timeout_ms(p), 1000);

  tg_progress_reset(p);
  run_steps(p, 4, 1, 5, 2000, 0);
  assert_int_equal(tg_progress_hang_timeout_ms(p), 10000);

  tg_progress_reset(p);
  run_steps(p, 4, 1, 5, 30000, 0); /* slow: 5 x 30 s is over the ceiling */
  assert_int_equal(tg_progress_hang_timeout_ms(p), 60000);

  /* One slow step does not move the median of a rank's recent steps. */
  tg_progress_reset(p);
  int64_t t = run_steps(p, 4, 1, 5, 2000, 0);
  run_steps(p, 4, 6, 6, 50000, t);
  assert_int_equal(tg_progress_typical_step_ms(p), 2000);
  tg_progress_free(p);
}

static void test_hang_detection_uses_adaptive_timeout(void **state) {
  tg_progress_config c = base_config();
  tg_progress *p = make(&c);
  tg_progress_event ev[MAX_EVENTS];
  int64_t t = run_steps(p, 4, 1, 10, 2000, 0); /* timeout 10 s */
  report(p, 0, 11, 21, 2000, t + 10, "allreduce");
  report(p, 1, 11, 21, 2000, t + 10, "allreduce");
  report(p, 2, 11, 21, 2000, t + 10, "allreduce"); /* rank 3 stays at 20 */
  int64_t last = t + 10;
  assert_int_equal(evaluate(p, last + 9999, ev), 0);
  assert_int_equal(evaluate(p, last + 10000, ev), 0);
  assert_int_equal(evaluate(p, last + 10001, ev), 1);
  assert_int_equal(ev[0].kind, TG_PROGRESS_HANG);
  assert_int_equal(ev[0].rank, 3);
  assert_int_equal(ev[0].timeout_ms, 10000);
  tg_progress_free(p);
}

/* The SIGSTOP scenario: rank 3 stops after entering collective 41; ranks
 * 0, 1 and 2 entered 42 and wait there for it. */
static void test_hang_names_the_rank_that_did_not_enter(void **state) {
  tg_progress_config c = base_config();
  tg_progress *p = make(&c);
  tg_progress_event ev[MAX_EVENTS];
  int64_t t = run_steps(p, 4, 1, 20, 100, 0); /* seq 40, timeout 1 s (floor) */
  report(p, 3, 21, 41, 100, t + 5, "allgather");
  for (int r = 0; r < 3; r++) report(p, r, 21, 41, 100, t + 5, "allgather");
  for (int r = 0; r < 3; r++) report(p, r, 21, 42, 100, t + 20, "allreduce");
  int64_t last = t + 20;
  assert_int_equal(evaluate(p, last + 500, ev), 0);
  /* Heartbeats with unchanged counters are not progress. */
  for (int r = 0; r < 4; r++) report(p, r, 21, r == 3 ? 41 : 42, 100, last + 800, r == 3 ? "allgather" : "allreduce");
  assert_int_equal(evaluate(p, last + 1001, ev), 1);
  assert_int_equal(ev[0].kind, TG_PROGRESS_HANG);
  assert_int_equal(ev[0].rank, 3);
  assert_int_equal(ev[0].seq, 41);
  assert_int_equal(ev[0].peer_seq, 42);
  assert_int_equal(ev[0].step, 21);
  assert_int_equal(ev[0].stalled_ms, 1001);
  assert_string_equal(ev[0].op, "allreduce");
  assert_non_null(strstr(ev[0].detail, "rank 3 did not enter collective seq 42 (allreduce)"));
  /* Once per episode, however long it lasts. */
  assert_int_equal(evaluate(p, last + 1002, ev), 0);
  assert_int_equal(evaluate(p, last + 60000, ev), 0);
  tg_progress_free(p);
}

static void test_hang_with_everyone_in_the_same_collective(void **state) {
  tg_progress_config c = base_config();
  tg_progress *p = make(&c);
  tg_progress_event ev[MAX_EVENTS];
  int64_t t = run_steps(p, 4, 1, 20, 100, 0);
  for (int r = 0; r < 4; r++) report(p, r, 21, 42, 100, t + 10, "allreduce");
  assert_int_equal(evaluate(p, t + 10 + 1001, ev), 1);
  assert_int_equal(ev[0].kind, TG_PROGRESS_HANG);
  assert_int_equal(ev[0].rank, -1);
  assert_int_equal(ev[0].seq, 42);
  assert_int_equal(ev[0].peer_seq, 42);
  assert_non_null(strstr(ev[0].detail, "culprit unknown"));
  assert_int_equal(evaluate(p, t + 20000, ev), 0);
  tg_progress_free(p);
}

static void test_several_culprits_and_no_room(void **state) {
  tg_progress_config c = base_config();
  tg_progress *p = make(&c);
  tg_progress_event ev[MAX_EVENTS];
  int64_t t = run_steps(p, 4, 1, 20, 100, 0);
  report(p, 0, 21, 42, 100, t + 10, "allreduce");
  report(p, 1, 21, 41, 100, t + 10, "allreduce");
  report(p, 2, 21, 42, 100, t + 10, "allreduce");
  report(p, 3, 21, 41, 100, t + 10, "allreduce");
  assert_int_equal(evaluate(p, t + 2000, ev), 2);
  assert_int_equal(ev[0].rank, 1);
  assert_int_equal(ev[1].rank, 3);
  assert_non_null(strstr(ev[0].detail, "2 of 4 ranks are behind"));

  /* With room for one event, the first culprit is named and the count told. */
  tg_progress_reset(p);
  t = run_steps(p, 4, 1, 20, 100, 0);
  report(p, 0, 21, 42, 100, t + 10, "allreduce");
  report(p, 1, 21, 41, 100, t + 10, "allreduce");
  report(p, 2, 21, 42, 100, t + 10, "allreduce");
  report(p, 3, 21, 41, 100, t + 10, "allreduce");
  assert_int_equal(tg_progress_evaluate(p, t + 2000, ev, 1), 1);
  assert_int_equal(ev[0].rank, 1);
  assert_int_equal(tg_progress_evaluate(p, t + 2001, ev, 0), 0);
  tg_progress_free(p);
}

static void test_progress_ends_the_episode(void **state) {
  tg_progress_config c = base_config();
  tg_progress *p = make(&c);
  tg_progress_event ev[MAX_EVENTS];
  int64_t t = run_steps(p, 4, 1, 20, 100, 0);
  for (int r = 0; r < 3; r++) report(p, r, 21, 42, 100, t + 10, "allreduce");
  assert_int_equal(evaluate(p, t + 1500, ev), 1);
  assert_int_equal(ev[0].rank, 3);
  /* SIGCONT: rank 3 enters 42, everyone finishes the step and goes on. */
  t = run_steps(p, 4, 21, 25, 100, t + 1600);
  assert_int_equal(evaluate(p, t, ev), 0);
  /* Later rank 2 stops: a new episode, reported again. */
  for (int r = 0; r < 4; r++)
    if (r != 2) report(p, r, 26, 52, 100, t + 10, "allreduce");
  assert_int_equal(evaluate(p, t + 500, ev), 0);
  assert_int_equal(evaluate(p, t + 1011, ev), 1);
  assert_int_equal(ev[0].rank, 2);
  assert_int_equal(ev[0].seq, 50);
  assert_int_equal(evaluate(p, t + 3000, ev), 0);
  /* A rank that restarts (counters go back) is progress too. */
  report(p, 2, 20, 0, 0, t + 3100, "");
  assert_int_equal(evaluate(p, t + 3200, ev), 0);
  tg_progress_free(p);
}

static int count_kind(const tg_progress_event *ev, int n, tg_progress_kind kind) {
  int k = 0;
  for (int i = 0; i < n; i++) k += ev[i].kind == kind;
  return k;
}

static void slow_step(tg_progress *p, uint64_t s, uint32_t rank3_ms, int64_t t) {
  for (int r = 0; r < 4; r++) report(p, r, s, 2 * s, r == 3 ? rank3_ms : 100, t, "allreduce");
}

static void test_straggler_after_window_not_before(void **state) {
  tg_progress_config c = base_config(); /* window 4, history 4, X 1.5 */
  tg_progress *p = make(&c);
  tg_progress_event ev[MAX_EVENTS];
  int64_t t = 0;
  for (uint64_t s = 1; s <= 3; s++) {
    t += 250;
    slow_step(p, s, 250, t);
    assert_int_equal(evaluate(p, t, ev), 0); /* not enough steps yet */
  }
  t += 250;
  slow_step(p, 4, 250, t);
  int n = evaluate(p, t, ev);
  assert_int_equal(n, 1);
  assert_int_equal(ev[0].kind, TG_PROGRESS_STRAGGLER);
  assert_int_equal(ev[0].rank, 3);
  assert_int_equal(ev[0].step_time_ms, 250);
  assert_int_equal(ev[0].typical_step_ms, 100);
  assert_non_null(strstr(ev[0].detail, "rank 3"));
  /* Once per episode. */
  for (uint64_t s = 5; s <= 8; s++) {
    t += 250;
    slow_step(p, s, 250, t);
    assert_int_equal(evaluate(p, t, ev), 0);
  }
  /* One normal step ends the episode; a full window of slow ones opens another. */
  t += 100;
  slow_step(p, 9, 100, t);
  assert_int_equal(evaluate(p, t, ev), 0);
  for (uint64_t s = 10; s <= 12; s++) {
    t += 250;
    slow_step(p, s, 250, t);
    assert_int_equal(evaluate(p, t, ev), 0);
  }
  t += 250;
  slow_step(p, 13, 250, t);
  n = evaluate(p, t, ev);
  assert_int_equal(count_kind(ev, n, TG_PROGRESS_STRAGGLER), 1);
  assert_int_equal(ev[0].rank, 3);
  /* Slow but within X (1.4 x < 1.5 x) is not straggling. */
  tg_progress_reset(p);
  for (uint64_t s = 1; s <= 10; s++) {
    t += 140;
    slow_step(p, s, 140, t);
    assert_int_equal(evaluate(p, t, ev), 0);
  }
  tg_progress_free(p);
}

static void test_intermittent_slowness_is_not_straggling(void **state) {
  tg_progress_config c = base_config();
  tg_progress *p = make(&c);
  tg_progress_event ev[MAX_EVENTS];
  int64_t t = 0;
  for (uint64_t s = 1; s <= 20; s++) {
    t += 300;
    slow_step(p, s, s % 3 == 0 ? 100 : 300, t); /* every third step is normal */
    assert_int_equal(evaluate(p, t, ev), 0);
  }
  tg_progress_free(p);
}

static void test_min_history(void **state) {
  tg_progress_config c = base_config();
  c.straggler_window_steps = 2;
  c.min_history_steps = 10;
  tg_progress *p = make(&c);
  tg_progress_event ev[MAX_EVENTS];
  int64_t t = 0;
  for (uint64_t s = 1; s <= 9; s++) {
    t += 300;
    slow_step(p, s, 300, t);
    assert_int_equal(evaluate(p, t, ev), 0);
  }
  t += 300;
  slow_step(p, 10, 300, t);
  assert_int_equal(evaluate(p, t, ev), 1);
  assert_int_equal(ev[0].kind, TG_PROGRESS_STRAGGLER);
  assert_int_equal(ev[0].rank, 3);
  tg_progress_free(p);
}

static void test_no_straggler_when_all_equally_slow(void **state) {
  tg_progress_config c = base_config();
  tg_progress *p = make(&c);
  tg_progress_event ev[MAX_EVENTS];
  int64_t t = 0;
  for (uint64_t s = 1; s <= 20; s++) {
    t += 5000;
    for (int r = 0; r < 4; r++) report(p, r, s, 2 * s, 5000, t, "allreduce");
    assert_int_equal(evaluate(p, t, ev), 0);
  }
  /* A single rank in the world is never slower than itself. */
  tg_progress_reset(p);
  for (uint64_t s = 1; s <= 20; s++) {
    t += 5000;
    report(p, 0, s, 2 * s, 5000, t, "allreduce");
    assert_int_equal(evaluate(p, t, ev), 0);
  }
  tg_progress_free(p);
}

static void test_invalid_input_refused(void **state) {
  char err[128] = "";
  tg_progress_config c = base_config();
  tg_progress_config bad;
  bad = c;
  bad.max_ranks = 0;
  assert_null(tg_progress_new(&bad, err, sizeof err));
  assert_non_null(strstr(err, "max_ranks"));
  bad = c;
  bad.max_ranks = TG_PROGRESS_MAX_RANKS + 1;
  assert_null(tg_progress_new(&bad, err, sizeof err));
  bad = c;
  bad.hang_factor = 0;
  assert_null(tg_progress_new(&bad, err, sizeof err));
  bad = c;
  bad.hang_factor = NAN;
  assert_null(tg_progress_new(&bad, err, sizeof err));
  bad = c;
  bad.hang_floor_ms = 0;
  assert_null(tg_progress_new(&bad, err, sizeof err));
  bad = c;
  bad.hang_ceiling_ms = c.hang_floor_ms - 1;
  assert_null(tg_progress_new(&bad, err, sizeof err));
  bad = c;
  bad.straggler_factor = 1.0;
  assert_null(tg_progress_new(&bad, err, sizeof err));
  bad = c;
  bad.straggler_window_steps = TG_PROGRESS_MAX_WINDOW + 1;
  assert_null(tg_progress_new(&bad, err, sizeof err));
  bad = c;
  bad.min_history_steps = -1;
  assert_null(tg_progress_new(&bad, err, sizeof err));
  assert_null(tg_progress_new(NULL, err, sizeof err));

  tg_progress *p = make(&c);
  tg_progress_event ev[MAX_EVENTS];
  tg_progress_record r;
  memset(&r, 0, sizeof r);
  r.rank = -1;
  assert_int_equal(tg_progress_update(p, &r), TG_PROGRESS_ERANK);
  r.rank = 8;
  assert_int_equal(tg_progress_update(p, &r), TG_PROGRESS_ERANK);
  r.rank = INT32_MAX;
  assert_int_equal(tg_progress_update(p, &r), TG_PROGRESS_ERANK);
  r.rank = 0;
  r.updated_ms = -5;
  assert_int_equal(tg_progress_update(p, &r), TG_PROGRESS_EINVAL);
  assert_int_equal(tg_progress_update(p, NULL), TG_PROGRESS_EINVAL);
  assert_int_equal(tg_progress_update(NULL, &r), TG_PROGRESS_EINVAL);

  /* Time going backwards for a rank is refused and changes nothing. */
  report(p, 0, 5, 10, 100, 1000, "allreduce");
  report(p, 1, 5, 10, 100, 1000, "allreduce");
  r.rank = 0;
  r.step = 6;
  r.collective_seq = 12;
  r.step_time_ms = 100;
  r.updated_ms = 999;
  assert_int_equal(tg_progress_update(p, &r), TG_PROGRESS_ETIME);
  /* An op name without its NUL is cut, not read past. */
  r.updated_ms = 1000;
  memset(r.op, 'x', sizeof r.op);
  assert_int_equal(tg_progress_update(p, &r), TG_PROGRESS_OK);

  assert_int_equal(tg_progress_evaluate(p, 2000, ev, MAX_EVENTS), 0);
  assert_int_equal(tg_progress_evaluate(p, 1999, ev, MAX_EVENTS), TG_PROGRESS_ETIME);
  assert_int_equal(tg_progress_evaluate(p, 2000, NULL, 1), TG_PROGRESS_EINVAL);
  assert_int_equal(tg_progress_evaluate(NULL, 2000, ev, 1), TG_PROGRESS_EINVAL);
  assert_int_equal(tg_progress_evaluate(p, 2000, NULL, 0), 0);
  assert_int_equal(tg_progress_forget(p, 8), TG_PROGRESS_ERANK);
  assert_int_equal(tg_progress_forget(p, 1), TG_PROGRESS_OK);
  assert_string_equal(tg_progress_status_text(TG_PROGRESS_ETIME), "time went backwards");
  /* A rank that re-appears lowest is named when everything stops. */
  for (int i = 0; i < 4; i++) report(p, 0, 7 + (uint64_t)i, 14 + 2 * (uint64_t)i, 100, 2000, "");
  report(p, 1, 1, 1, 100, 2000, "allreduce");
  int n = tg_progress_evaluate(p, 200000, ev, MAX_EVENTS);
  assert_int_equal(n, 1);
  assert_int_equal(ev[0].rank, 1);
  tg_progress_free(p);
  tg_progress_free(NULL);
}

static void test_large_world(void **state) {
  tg_progress_config c = base_config();
  c.max_ranks = TG_PROGRESS_MAX_RANKS;
  c.straggler_window_steps = TG_PROGRESS_MAX_WINDOW;
  tg_progress *p = make(&c);
  tg_progress_event ev[MAX_EVENTS];
  int64_t t = 0;
  for (uint64_t s = 1; s <= 3; s++) {
    t += 1000;
    for (int32_t r = 0; r < c.max_ranks; r++)
      report(p, r, s, 2 * s, r % 3 == 0 ? 900 : 1000, t, "allreduce");
  }
  assert_int_equal(tg_progress_typical_step_ms(p), 1000);
  assert_int_equal(tg_progress_hang_timeout_ms(p), 5000);
  for (int32_t r = 0; r < c.max_ranks; r++)
    if (r != 40000) report(p, r, 4, 7, 1000, t + 10, "reduce_scatter");
  assert_int_equal(evaluate(p, t + 10 + 5000, ev), 0);
  int n = evaluate(p, t + 10 + 5001, ev);
  assert_int_equal(n, 1);
  assert_int_equal(ev[0].rank, 40000);
  assert_int_equal(ev[0].seq, 6);
  assert_int_equal(ev[0].peer_seq, 7);
  assert_string_equal(ev[0].op, "reduce_scatter");
  tg_progress_free(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_timeout_adapts_to_step_time),
      cmocka_unit_test(test_hang_detection_uses_adaptive_timeout),
      cmocka_unit_test(test_hang_names_the_rank_that_did_not_enter),
      cmocka_unit_test(test_hang_with_everyone_in_the_same_collective),
      cmocka_unit_test(test_several_culprits_and_no_room),
      cmocka_unit_test(test_progress_ends_the_episode),
      cmocka_unit_test(test_straggler_after_window_not_before),
      cmocka_unit_test(test_intermittent_slowness_is_not_straggling),
      cmocka_unit_test(test_min_history),
      cmocka_unit_test(test_no_straggler_when_all_equally_slow),
      cmocka_unit_test(test_invalid_input_refused),
      cmocka_unit_test(test_large_world),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
