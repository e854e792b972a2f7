/* Collective counters: what a trainer stores, the agent reads; a region
 * that is not one is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "agent/progress/counters.h"

static char name[64];

static void test_enter_then_read(void **state) {
  (void)state;
  char err[256];
  tg_counters *agent = tg_counters_create(name, 4, err, sizeof err);
  assert_non_null(agent);
  tg_counters *trainer = tg_counters_open(name, err, sizeof err);
  assert_non_null(trainer);
  assert_int_equal(tg_counters_slots(trainer), 4);
  uint64_t gen = 9, seq = 9;
  assert_int_equal(tg_counters_read(agent, 2, &gen, &seq), 0);
  assert_true(gen == 0 && seq == 0);
  tg_counters_enter(trainer, 2, 7, 181);
  tg_counters_enter(trainer, 4, 7, 1); /* out of range: ignored */
  assert_int_equal(tg_counters_read(agent, 2, &gen, &seq), 0);
  assert_true(gen == 7 && seq == 181);
  assert_int_equal(tg_counters_read(agent, 4, &gen, &seq), -1);
  uint64_t alive = 9;
  assert_int_equal(tg_counters_read_alive(agent, 1, &alive), 0);
  assert_true(alive == 0);
  tg_counters_alive(trainer, 1);
  tg_counters_alive(trainer, 1);
  assert_int_equal(tg_counters_read_alive(agent, 1, &alive), 0);
  assert_true(alive == 2);
  /* Inside or outside the collective entered last. */
  assert_int_equal(tg_counters_inside(agent, 3), 0); /* none entered yet */
  tg_counters_enter(trainer, 3, 7, 5);
  assert_int_equal(tg_counters_inside(agent, 3), 1);
  tg_counters_done(trainer, 3, 7, 5);
  assert_int_equal(tg_counters_inside(agent, 3), 0);
  tg_counters_enter(trainer, 3, 8, 1); /* a new world: the old done does not count */
  assert_int_equal(tg_counters_inside(agent, 3), 1);
  assert_int_equal(tg_counters_inside(agent, 9), -1);
  assert_int_equal(tg_counters_restoring(agent, 2), 0);
  tg_counters_set_restoring(trainer, 2, 1);
  assert_int_equal(tg_counters_restoring(agent, 2), 1);
  tg_counters_set_restoring(trainer, 2, 0);
  assert_int_equal(tg_counters_restoring(agent, 2), 0);
  assert_int_equal(tg_counters_restoring(agent, 4), -1);
  /* The agent's newest world, as the trainer sees it. */
  assert_true(tg_counters_world(trainer) == 0);
  tg_counters_set_world(agent, 12);
  assert_true(tg_counters_world(trainer) == 12);
  assert_true(tg_counters_world(NULL) == 0);
  tg_counters_close(trainer);
  tg_counters_close(agent);
  assert_int_equal(tg_counters_unlink(name), 0);
}

static void test_not_a_region_refused(void **state) {
  (void)state;
  char err[256];
  int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
  assert_true(fd >= 0);
  assert_int_equal(ftruncate(fd, 4096), 0); /* zeros: no magic */
  close(fd);
  assert_null(tg_counters_open(name, err, sizeof err));
  assert_null(tg_counters_open("no-slash", err, sizeof err));
  assert_null(tg_counters_create(name, 0, err, sizeof err));
  tg_counters_unlink(name);
  assert_null(tg_counters_open(name, err, sizeof err));
}

int main(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  snprintf(name, sizeof name, "/tg-counters-test-%d-%ld", (int)getpid(), (long)ts.tv_nsec);
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_enter_then_read),
                                     cmocka_unit_test(test_not_a_region_refused)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
