/* Shrink or fresh (reform.h): the decision from every rank's vote, then the
 * agreement through a real etcd with the ranks as threads: a world that
 * only lost ranks is shrunk, excluding exactly those; any rank without the
 * old communicator, out of order or of another generation makes it fresh,
 * with one unique id made once by rank 0 and read by all; rank 0 without
 * an old communicator decides at once; a missing vote times out at the
 * deadline, a cancel stops the wait; a plan that does not decode is
 * refused. No GPU: this is the part of the NCCL path every machine runs. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log/log.h"
#include "tests/harness/etcd_cluster.h"
#include "trainer/comm/reform.h"
#include "trainer/comm/store_bytes.h"

#define MAX_RANKS 8

static tg_etcd_cluster *cluster;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void unique_prefix(char *prefix, size_t len) {
  static int n;
  snprintf(prefix, len, "/tardigrade/test/reform/%d-%d/", (int)getpid(), ++n);
}

static void test_decide_shrinks_only_a_world_that_lost_ranks(void **state) {
  (void)state;
  tg_comm_plan plan;
  /* 8 ranks of generation 4; the node holding old ranks 4 and 5 is gone. */
  tg_comm_vote votes[6] = {{4, 0, 8}, {4, 1, 8}, {4, 2, 8}, {4, 3, 8}, {4, 6, 8}, {4, 7, 8}};
  tg_comm_reform_decide(votes, 6, &plan);
  assert_int_equal(plan.shrink, 1);
  assert_int_equal(plan.parent_generation, 4);
  assert_int_equal(plan.parent_size, 8);
  assert_int_equal(plan.n_excluded, 2);
  assert_int_equal(plan.excluded[0], 4);
  assert_int_equal(plan.excluded[1], 5);

  /* A restarted process holds nothing: fresh, saying who. */
  votes[3] = (tg_comm_vote){0, 0, 0};
  tg_comm_reform_decide(votes, 6, &plan);
  assert_int_equal(plan.shrink, 0);
  assert_non_null(strstr(plan.why, "rank 3 holds no communicator"));
  votes[3] = (tg_comm_vote){4, 3, 8};

  /* Another generation, another size, out of order, out of range. */
  votes[2].parent_generation = 3;
  tg_comm_reform_decide(votes, 6, &plan);
  assert_int_equal(plan.shrink, 0);
  assert_non_null(strstr(plan.why, "rank 2 holds generation 3"));
  votes[2] = (tg_comm_vote){4, 2, 8};
  votes[5].parent_size = 9;
  tg_comm_reform_decide(votes, 6, &plan);
  assert_int_equal(plan.shrink, 0);
  votes[5] = (tg_comm_vote){4, 7, 8};
  votes[4].parent_rank = 1;
  tg_comm_reform_decide(votes, 6, &plan);
  assert_int_equal(plan.shrink, 0);
  assert_non_null(strstr(plan.why, "not in order"));
  votes[4].parent_rank = 8;
  tg_comm_reform_decide(votes, 6, &plan);
  assert_int_equal(plan.shrink, 0);
  votes[4].parent_rank = -1;
  tg_comm_reform_decide(votes, 6, &plan);
  assert_int_equal(plan.shrink, 0);

  /* The same ranks as before (a re-formed world after a hang that was
   * spared): not a shrink. */
  tg_comm_vote same[4] = {{2, 0, 4}, {2, 1, 4}, {2, 2, 4}, {2, 3, 4}};
  tg_comm_reform_decide(same, 4, &plan);
  assert_int_equal(plan.shrink, 0);
  assert_non_null(strstr(plan.why, "did not shrink"));

  /* More ranks gone than a plan holds. */
  tg_comm_vote few[1] = {{5, 0, TG_COMM_REFORM_MAX_EXCLUDED + 2}};
  tg_comm_reform_decide(few, 1, &plan);
  assert_int_equal(plan.shrink, 0);
  assert_non_null(strstr(plan.why, "more than a plan holds"));
  few[0].parent_size = TG_COMM_REFORM_MAX_EXCLUDED + 1;
  tg_comm_reform_decide(few, 1, &plan);
  assert_int_equal(plan.shrink, 1);
  assert_int_equal(plan.n_excluded, TG_COMM_REFORM_MAX_EXCLUDED);
  assert_int_equal(plan.excluded[TG_COMM_REFORM_MAX_EXCLUDED - 1], TG_COMM_REFORM_MAX_EXCLUDED);
}

typedef struct {
  const char *prefix;
  int rank, world_size;
  tg_comm_vote vote;
  int64_t deadline_ms;
  int cancel;
  tg_comm_plan plan;
  tg_comm_code code;
  tg_comm_status st;
} rank_ctx;

static int ids_made;
static pthread_mutex_t ids_mu = PTHREAD_MUTEX_INITIALIZER;

static int make_id(uint8_t id[TG_COMM_NCCL_ID_BYTES], void *user, char *err, size_t errlen) {
  (void)user;
  (void)err;
  (void)errlen;
  pthread_mutex_lock(&ids_mu);
  int n = ++ids_made;
  pthread_mutex_unlock(&ids_mu);
  for (int i = 0; i < TG_COMM_NCCL_ID_BYTES; i++) id[i] = (uint8_t)(i * 7 + n);
  return 0;
}

static int cancelled(void *user) { return ((rank_ctx *)user)->cancel; }

static void *rank_main(void *arg) {
  rank_ctx *r = arg;
  tg_comm_config cfg = {.backend = TG_COMM_NCCL,
                        .rank = r->rank,
                        .world_size = r->world_size,
                        .generation = 9,
                        .store_address = tg_etcd_cluster_endpoints(cluster),
                        .store_prefix = r->prefix,
                        .cancelled = cancelled,
                        .cancel_user = r};
  r->code = tg_comm_reform_agree(&cfg, &r->vote, make_id, NULL, r->deadline_ms, &r->plan, &r->st);
  return NULL;
}

/* Runs ranks [0, n) of a world of world_size as threads; votes[i] is rank i's. */
static void run_ranks(rank_ctx *ranks, int n, int world_size, const tg_comm_vote *votes, int64_t timeout_ms) {
  static char prefix[256];
  unique_prefix(prefix, sizeof prefix);
  pthread_t threads[MAX_RANKS];
  for (int i = 0; i < n; i++) {
    ranks[i] = (rank_ctx){.prefix = prefix, .rank = i, .world_size = world_size, .vote = votes[i],
                          .deadline_ms = now_ms() + timeout_ms};
    assert_int_equal(pthread_create(&threads[i], NULL, rank_main, &ranks[i]), 0);
  }
  for (int i = 0; i < n; i++) pthread_join(threads[i], NULL);
}

static void test_every_rank_follows_one_plan(void **state) {
  (void)state;
  rank_ctx ranks[MAX_RANKS];
  /* A node of two ranks lost: shrink, everywhere the same. */
  tg_comm_vote shrink[6] = {{4, 0, 8}, {4, 1, 8}, {4, 4, 8}, {4, 5, 8}, {4, 6, 8}, {4, 7, 8}};
  ids_made = 0;
  run_ranks(ranks, 6, 6, shrink, 10000);
  for (int i = 0; i < 6; i++) {
    if (ranks[i].code != TG_COMM_OK) fail_msg("rank %d: %s", i, ranks[i].st.message);
    assert_int_equal(ranks[i].plan.shrink, 1);
    assert_int_equal(ranks[i].plan.parent_generation, 4);
    assert_int_equal(ranks[i].plan.n_excluded, 2);
    assert_int_equal(ranks[i].plan.excluded[0], 2);
    assert_int_equal(ranks[i].plan.excluded[1], 3);
  }
  assert_int_equal(ids_made, 0);

  /* Rank 4 is a restarted process: fresh, one id, made once, read by all. */
  shrink[4] = (tg_comm_vote){0, 0, 0};
  ids_made = 0;
  run_ranks(ranks, 6, 6, shrink, 10000);
  for (int i = 0; i < 6; i++) {
    if (ranks[i].code != TG_COMM_OK) fail_msg("rank %d: %s", i, ranks[i].st.message);
    assert_int_equal(ranks[i].plan.shrink, 0);
    assert_memory_equal(ranks[i].plan.nccl_id, ranks[0].plan.nccl_id, TG_COMM_NCCL_ID_BYTES);
    assert_non_null(strstr(ranks[i].plan.why, "rank 4 holds no communicator"));
  }
  assert_int_equal(ids_made, 1);
}

/* Rank 0 without an old communicator needs nobody's vote. */
static void test_rank_0_without_a_parent_decides_at_once(void **state) {
  (void)state;
  rank_ctx ranks[1];
  tg_comm_vote none[1] = {{0, 0, 0}};
  ids_made = 0;
  int64_t t0 = now_ms();
  run_ranks(ranks, 1, 4, none, 10000); /* ranks 1..3 never come */
  if (ranks[0].code != TG_COMM_OK) fail_msg("rank 0: %s", ranks[0].st.message);
  assert_int_equal(ranks[0].plan.shrink, 0);
  assert_int_equal(ids_made, 1);
  assert_true(now_ms() - t0 < 5000);
}

static void test_missing_votes_time_out_and_cancel_stops(void **state) {
  (void)state;
  rank_ctx ranks[3];
  tg_comm_vote votes[3] = {{4, 0, 8}, {4, 1, 8}, {4, 2, 8}};
  int64_t t0 = now_ms();
  run_ranks(ranks, 3, 4, votes, 400); /* rank 3 never votes */
  for (int i = 0; i < 3; i++) assert_int_equal(ranks[i].code, TG_COMM_TIMEOUT);
  assert_true(now_ms() - t0 >= 400);

  static char prefix[256];
  unique_prefix(prefix, sizeof prefix);
  rank_ctx r0 = {.prefix = prefix, .rank = 0, .world_size = 4, .vote = votes[0],
                 .deadline_ms = now_ms() + 20000, .cancel = 1};
  t0 = now_ms();
  rank_main(&r0);
  assert_int_equal(r0.code, TG_COMM_ABORTED);
  assert_true(now_ms() - t0 < 5000);
}

/* A plan that another process wrote badly is refused, not followed. */
static void test_a_plan_that_does_not_decode_is_refused(void **state) {
  (void)state;
  static char prefix[256];
  unique_prefix(prefix, sizeof prefix);
  char key[300];
  snprintf(key, sizeof key, "%snccl-plan", prefix);
  static uint8_t junk[TG_COMM_REFORM_PLAN_BYTES];
  memset(junk, 0x5a, sizeof junk);
  tg_comm_status st = {0};
  assert_int_equal(tg_comm_store_publish(tg_etcd_cluster_endpoints(cluster), key, junk, sizeof junk,
                                         now_ms() + 5000, &st),
                   TG_COMM_OK);
  rank_ctx r1 = {.prefix = prefix, .rank = 1, .world_size = 2, .vote = {3, 1, 3}, .deadline_ms = now_ms() + 5000};
  rank_main(&r1);
  assert_int_equal(r1.code, TG_COMM_ERROR);
  assert_non_null(strstr(r1.st.message, "does not decode"));
}

static int group_setup(void **state) {
  (void)state;
  char err[256];
  cluster = tg_etcd_cluster_start(1, err, sizeof err);
  if (!cluster) fprintf(stderr, "etcd: %s\n", err);
  return cluster ? 0 : -1;
}

static int group_teardown(void **state) {
  (void)state;
  tg_etcd_cluster_free(cluster);
  cluster = NULL;
  return 0;
}

int main(void) {
  tg_log_init("reform_test", TG_LOG_WARN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_decide_shrinks_only_a_world_that_lost_ranks),
      cmocka_unit_test(test_every_rank_follows_one_plan),
      cmocka_unit_test(test_rank_0_without_a_parent_decides_at_once),
      cmocka_unit_test(test_missing_votes_time_out_and_cancel_stops),
      cmocka_unit_test(test_a_plan_that_does_not_decode_is_refused),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
