/* Tests of the agent's replication worker (replicator.h) against a real
 * buddy: a gRPC server on 127.0.0.1 serving a second store. Covered: the
 * newest step pushed and older ones skipped, replicated and committed
 * steps, a world of one node, retries until the buddy appears, a new
 * world, persistence every N steps keeping the newest two, a disk that
 * fails (reported once per interval), and a stop that a silent buddy
 * cannot hold up. Every wait has a deadline; shm names
 * are unique per process and unlinked at exit. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/ckpt/disk.h"
#include "agent/ckpt/replicate.h"
#include "agent/ckpt/store.h"
#include "agent/ckpt/testdata/test_names.h"
#include "agent/replicator.h"
#include "common/clock/clock.h"
#include "common/log/log.h"
#include "common/rpc/rpc.h"

#define JOB "job-r"
#define WAIT_MS 5000
#define SLOTS 2

typedef struct {
  char local_name[96], buddy_name[96];
  tg_ckpt_store *local, *buddy;
  tg_rpc_server *srv;
  tg_ckpt_repl_server *repl;
  char buddy_address[64];
  tg_replicator *r;
  _Atomic int persist_errors; /* counted on the worker thread, after the detail */
  char persist_detail[1024];
} fixture;

static char tmp_root[512];
static int dir_counter;

/* Starts a buddy serving f->buddy at address ("127.0.0.1:0" picks a port). */
static void start_buddy(fixture *f, const char *address) {
  char err[256];
  f->srv = tg_rpc_server_new(NULL, err, sizeof(err));
  assert_non_null(f->srv);
  f->repl = tg_ckpt_repl_server_new(f->buddy, NULL);
  assert_int_equal(tg_ckpt_repl_server_register(f->repl, f->srv), 0);
  int port = tg_rpc_server_listen(f->srv, address, NULL, err, sizeof(err));
  if (port <= 0) fail_msg("listen %s: %s", address, err);
  assert_int_equal(tg_rpc_server_start(f->srv, err, sizeof(err)), 0);
  snprintf(f->buddy_address, sizeof(f->buddy_address), "127.0.0.1:%d", port);
}

/* A port that was free a moment ago. */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(sa);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  close(fd);
  return ntohs(sa.sin_port);
}

static void on_persist_error(const char *detail, void *user) {
  fixture *f = user;
  f->persist_errors++;
  snprintf(f->persist_detail, sizeof(f->persist_detail), "%s", detail);
}

static void new_replicator(fixture *f, const char *ckpt_dir, int64_t persist_every,
                           int64_t deadline_ms) {
  char err[256];
  tg_replicator_config cfg = {.store = f->local,
                              .job_id = JOB,
                              .node_id = "node-a",
                              .slots = SLOTS,
                              .ckpt_dir = ckpt_dir,
                              .persist_every = persist_every,
                              .push_deadline_ms = deadline_ms,
                              .retry_ms = 20,
                              .report_every_ms = 60000,
                              .on_persist_error = on_persist_error,
                              .user = f};
  f->r = tg_replicator_new(&cfg, err, sizeof(err));
  if (f->r == NULL) fail_msg("replicator: %s", err);
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  char err[256] = "";
  tg_ckpt_test_name("repl-local", f->local_name, sizeof(f->local_name));
  tg_ckpt_test_name("repl-buddy", f->buddy_name, sizeof(f->buddy_name));
  f->local = tg_ckpt_store_create(f->local_name, 4 << 20, 24, 4, err, sizeof(err));
  f->buddy = tg_ckpt_store_create(f->buddy_name, 4 << 20, 24, 4, err, sizeof(err));
  if (f->local == NULL || f->buddy == NULL) fail_msg("stores: %s", err);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  tg_replicator_free(f->r);
  if (f->srv != NULL) tg_rpc_server_free(f->srv, 1000);
  tg_ckpt_repl_server_free(f->repl);
  tg_ckpt_store_close(f->local);
  tg_ckpt_store_close(f->buddy);
  free(f);
  return 0;
}

static tg_ckpt_key key_of(uint64_t generation, uint64_t step, int32_t shard, uint32_t world) {
  tg_ckpt_key k;
  memset(&k, 0, sizeof(k));
  snprintf(k.job_id, sizeof(k.job_id), "%s", JOB);
  k.generation = generation;
  k.step = step;
  k.shard = shard;
  k.world_size = world;
  return k;
}

/* What a trainer does each step: write the shard, then report the step. */
static void trainer_step(fixture *f, int slot, uint64_t generation, uint64_t step, int32_t rank,
                         uint32_t world) {
  unsigned char bytes[3000];
  for (size_t i = 0; i < sizeof(bytes); i++) bytes[i] = (unsigned char)(step * 13 + (uint64_t)rank + i);
  tg_ckpt_key k = key_of(generation, step, rank, world);
  assert_int_equal(tg_ckpt_store_write(f->local, &k, bytes, sizeof(bytes)), TG_CKPT_OK);
  tg_replicator_written(f->r, slot, generation, step);
}

static void wait_replicated(fixture *f, int slot, uint64_t generation, uint64_t step) {
  int64_t deadline = tg_clock_mono_ms() + WAIT_MS;
  while (tg_replicator_replicated(f->r, slot, generation) < step) {
    if (tg_clock_mono_ms() > deadline)
      fail_msg("slot %d: replicated step %llu, not %llu", slot,
               (unsigned long long)tg_replicator_replicated(f->r, slot, generation),
               (unsigned long long)step);
    tg_clock_sleep_ms(5);
  }
}

static int in_buddy(fixture *f, const tg_ckpt_key *k) {
  size_t len = 0;
  int rc = tg_ckpt_store_read(f->buddy, k, NULL, 0, &len, NULL);
  return rc == TG_CKPT_OK || rc == TG_CKPT_TOO_LARGE;
}

static void test_newest_step_pushed_older_skipped(void **state) {
  fixture *f = *state;
  start_buddy(f, "127.0.0.1:0");
  new_replicator(f, NULL, 0, WAIT_MS);
  /* Node at position 1 of 2 nodes x 2 slots: ranks 2 and 3. */
  tg_replicator_world w = {.generation = 3, .world_size = 4, .position = 1, .nodes = 2,
                           .buddy_address = f->buddy_address};
  tg_replicator_set_world(f->r, &w);
  /* Three steps before the worker runs: it is behind, and pushes step 3. */
  for (uint64_t step = 1; step <= 3; step++) {
    trainer_step(f, 0, 3, step, 2, 4);
    trainer_step(f, 1, 3, step, 3, 4);
  }
  assert_int_equal(tg_replicator_committed(f->r), 0);
  char err[256];
  assert_int_equal(tg_replicator_start(f->r, err, sizeof(err)), 0);
  wait_replicated(f, 0, 3, 3);
  wait_replicated(f, 1, 3, 3);
  assert_int_equal(tg_replicator_committed(f->r), 3);
  tg_ckpt_key k = key_of(3, 3, 2, 4), old = key_of(3, 1, 2, 4);
  assert_true(in_buddy(f, &k));
  assert_false(in_buddy(f, &old));
  /* Byte for byte the local copy. */
  void *a = NULL, *b = NULL;
  size_t la = 0, lb = 0;
  assert_int_equal(tg_ckpt_store_read_alloc(f->local, &k, &a, &la, NULL), TG_CKPT_OK);
  assert_int_equal(tg_ckpt_store_read_alloc(f->buddy, &k, &b, &lb, NULL), TG_CKPT_OK);
  assert_int_equal(la, lb);
  assert_memory_equal(a, b, la);
  free(a);
  free(b);
  /* One slot ahead: the committed step is the slower slot's. */
  trainer_step(f, 0, 3, 4, 2, 4);
  wait_replicated(f, 0, 3, 4);
  assert_int_equal(tg_replicator_committed(f->r), 3);
  /* Another generation's question, a bad slot, a step reported twice. */
  assert_int_equal(tg_replicator_replicated(f->r, 0, 2), 0);
  assert_int_equal(tg_replicator_replicated(f->r, 7, 3), 0);
  tg_replicator_written(f->r, 0, 3, 4);
  assert_int_equal(tg_replicator_replicated(f->r, 0, 3), 4);
}

static void test_alone_written_counts_at_once(void **state) {
  fixture *f = *state;
  new_replicator(f, NULL, 0, WAIT_MS); /* not even started: no worker needed */
  tg_replicator_world w = {.generation = 1, .world_size = 2, .position = 0, .nodes = 1};
  tg_replicator_set_world(f->r, &w);
  trainer_step(f, 0, 1, 5, 0, 2);
  assert_int_equal(tg_replicator_replicated(f->r, 0, 1), 5);
  assert_int_equal(tg_replicator_committed(f->r), 0); /* slot 1 has nothing yet */
  trainer_step(f, 1, 1, 5, 1, 2);
  assert_int_equal(tg_replicator_committed(f->r), 5);
  /* A step reported without its shard in the store does not count. */
  tg_replicator_written(f->r, 0, 1, 6);
  assert_int_equal(tg_replicator_replicated(f->r, 0, 1), 5);
}

static void test_retries_until_the_buddy_appears(void **state) {
  fixture *f = *state;
  char address[64];
  snprintf(address, sizeof(address), "127.0.0.1:%d", free_port());
  new_replicator(f, NULL, 0, 1000);
  tg_replicator_world w = {.generation = 2, .world_size = 4, .position = 0, .nodes = 2,
                           .buddy_address = address};
  tg_replicator_set_world(f->r, &w);
  char err[256];
  assert_int_equal(tg_replicator_start(f->r, err, sizeof(err)), 0);
  trainer_step(f, 0, 2, 1, 0, 4);
  tg_clock_sleep_ms(300); /* several attempts fail meanwhile */
  assert_int_equal(tg_replicator_replicated(f->r, 0, 2), 0);
  start_buddy(f, address);
  wait_replicated(f, 0, 2, 1);
  tg_ckpt_key k = key_of(2, 1, 0, 4);
  assert_true(in_buddy(f, &k));
}

static void test_new_world_starts_over(void **state) {
  fixture *f = *state;
  new_replicator(f, NULL, 0, WAIT_MS);
  tg_replicator_world w = {.generation = 1, .world_size = 2, .position = 0, .nodes = 1};
  tg_replicator_set_world(f->r, &w);
  trainer_step(f, 0, 1, 9, 0, 2);
  trainer_step(f, 1, 1, 9, 1, 2);
  assert_int_equal(tg_replicator_committed(f->r), 9);
  w.generation = 2;
  tg_replicator_set_world(f->r, &w);
  assert_int_equal(tg_replicator_committed(f->r), 0);
  assert_int_equal(tg_replicator_replicated(f->r, 0, 1), 0);
  assert_int_equal(tg_replicator_replicated(f->r, 0, 2), 0);
  trainer_step(f, 0, 1, 10, 0, 2); /* a trainer still in the old world */
  assert_int_equal(tg_replicator_replicated(f->r, 0, 2), 0);
  /* A spare holds no ranks: nothing is committed on it. */
  w.generation = 3;
  w.position = -1;
  tg_replicator_set_world(f->r, &w);
  tg_replicator_written(f->r, 0, 3, 1);
  assert_int_equal(tg_replicator_committed(f->r), 0);
}

static void new_dir(char *out, size_t len) { snprintf(out, len, "%s/d%d", tmp_root, dir_counter++); }

static void test_persists_every_nth_keeping_two(void **state) {
  fixture *f = *state;
  char dir[600];
  new_dir(dir, sizeof(dir));
  new_replicator(f, dir, 2, WAIT_MS);
  tg_replicator_world w = {.generation = 1, .world_size = 2, .position = 0, .nodes = 1};
  tg_replicator_set_world(f->r, &w);
  char err[256];
  assert_int_equal(tg_replicator_start(f->r, err, sizeof(err)), 0);
  for (uint64_t step = 1; step <= 8; step++) {
    trainer_step(f, 0, 1, step, 0, 2);
    if (step % 2 != 0) continue;
    tg_ckpt_key k = key_of(0, step, 0, 2);
    void *bytes = NULL;
    size_t len = 0;
    int64_t deadline = tg_clock_mono_ms() + WAIT_MS;
    while (tg_ckpt_disk_read_alloc(dir, &k, &bytes, &len, NULL) != TG_CKPT_OK) {
      if (tg_clock_mono_ms() > deadline) fail_msg("step %llu never persisted", (unsigned long long)step);
      tg_clock_sleep_ms(5);
    }
    /* The file holds what the store holds. */
    tg_ckpt_key in_mem = key_of(1, step, 0, 2);
    void *mem = NULL;
    size_t mem_len = 0;
    assert_int_equal(tg_ckpt_store_read_alloc(f->local, &in_mem, &mem, &mem_len, NULL), TG_CKPT_OK);
    assert_int_equal(len, mem_len);
    assert_memory_equal(bytes, mem, len);
    free(bytes);
    free(mem);
  }
  /* Only the newest two persisted steps are left (the removal follows the
   * write on the worker, so it may lag a moment). */
  tg_ckpt_key keys[8];
  int64_t deadline = tg_clock_mono_ms() + WAIT_MS;
  size_t n;
  while ((n = tg_ckpt_disk_list(dir, JOB, keys, 8)) != 2 && tg_clock_mono_ms() < deadline)
    tg_clock_sleep_ms(5);
  assert_int_equal(n, 2);
  for (size_t i = 0; i < n; i++) {
    assert_true(keys[i].step == 6 || keys[i].step == 8);
    assert_int_equal(keys[i].generation, 1);
  }
  assert_int_equal(f->persist_errors, 0);
}

static void test_failing_disk_reported_once_per_interval(void **state) {
  fixture *f = *state;
  char dir[600], below[700];
  new_dir(dir, sizeof(dir));
  FILE *file = fopen(dir, "w"); /* a file where the directory should be */
  assert_non_null(file);
  fclose(file);
  snprintf(below, sizeof(below), "%s/ckpt", dir);
  new_replicator(f, below, 1, WAIT_MS);
  tg_replicator_world w = {.generation = 1, .world_size = 2, .position = 0, .nodes = 1};
  tg_replicator_set_world(f->r, &w);
  char err[256];
  assert_int_equal(tg_replicator_start(f->r, err, sizeof(err)), 0);
  trainer_step(f, 0, 1, 1, 0, 2);
  int64_t deadline = tg_clock_mono_ms() + WAIT_MS;
  while (f->persist_errors == 0 && tg_clock_mono_ms() < deadline) tg_clock_sleep_ms(5);
  assert_int_equal(f->persist_errors, 1);
  if (strstr(f->persist_detail, strerror(ENOTDIR)) == NULL) fail_msg("unclear: %s", f->persist_detail);
  /* Training goes on: later steps replicate, and failures are not
   * reported again within the interval. */
  for (uint64_t step = 2; step <= 5; step++) trainer_step(f, 0, 1, step, 0, 2);
  assert_int_equal(tg_replicator_replicated(f->r, 0, 1), 5);
  tg_clock_sleep_ms(200);
  assert_int_equal(f->persist_errors, 1);
}

/* A "buddy" that accepts connections and never speaks: each attempt waits
 * at most retry_ms for it, so a stop is never held up for long. */
static void test_stop_is_bounded_with_a_silent_buddy(void **state) {
  fixture *f = *state;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(sa);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(listen(fd, 16), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  char address[64];
  snprintf(address, sizeof(address), "127.0.0.1:%d", ntohs(sa.sin_port));
  new_replicator(f, NULL, 0, 500);
  tg_replicator_world w = {.generation = 1, .world_size = 4, .position = 0, .nodes = 2,
                           .buddy_address = address};
  tg_replicator_set_world(f->r, &w);
  char err[256];
  assert_int_equal(tg_replicator_start(f->r, err, sizeof(err)), 0);
  trainer_step(f, 0, 1, 1, 0, 4);
  tg_clock_sleep_ms(300); /* attempts are under way */
  int64_t t0 = tg_clock_mono_ms();
  tg_replicator_stop(f->r);
  int64_t took = tg_clock_mono_ms() - t0;
  if (took > 1000) fail_msg("stop took %lld ms with retry_ms 20", (long long)took);
  assert_int_equal(tg_replicator_replicated(f->r, 0, 1), 0);
  tg_replicator_stop(f->r); /* again: harmless */
  close(fd);
}

int main(void) {
  tg_log_init("replicator_test", TG_LOG_ERROR);
  const char *tmp = getenv("TEST_TMPDIR");
  snprintf(tmp_root, sizeof(tmp_root), "%s/replicator-XXXXXX", tmp != NULL && tmp[0] ? tmp : "/tmp");
  if (mkdtemp(tmp_root) == NULL) {
    fprintf(stderr, "mkdtemp %s: %s\n", tmp_root, strerror(errno));
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_newest_step_pushed_older_skipped, setup, teardown),
      cmocka_unit_test_setup_teardown(test_alone_written_counts_at_once, setup, teardown),
      cmocka_unit_test_setup_teardown(test_retries_until_the_buddy_appears, setup, teardown),
      cmocka_unit_test_setup_teardown(test_new_world_starts_over, setup, teardown),
      cmocka_unit_test_setup_teardown(test_persists_every_nth_keeping_two, setup, teardown),
      cmocka_unit_test_setup_teardown(test_failing_disk_reported_once_per_interval, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stop_is_bounded_with_a_silent_buddy, setup, teardown),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  char cmd[600];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_root);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_root);
  return failed;
}
