/* The store exchange NCCL's unique id goes through (store_bytes.h), against
 * a real etcd: rank 0 publishes, the other ranks (threads here) wait and
 * all read the same bytes, whichever arrives first; a second publish for
 * one key is refused and does not change the value; a missing value times
 * out at the deadline; a value of the wrong size is refused; a cancel
 * callback stops a wait; bad arguments fail cleanly. A list gathered in
 * one go waits for every entry and refuses entries it did not expect. */
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
#include "trainer/comm/store_bytes.h"

#define RANKS 8
#define ID_BYTES 128

static tg_etcd_cluster *cluster;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void unique_key(char *key, size_t len, const char *what) {
  static int n;
  snprintf(key, len, "/tardigrade/test/store-bytes/%d-%d/%s", (int)getpid(), ++n, what);
}

typedef struct {
  const char *key;
  uint8_t got[ID_BYTES];
  tg_comm_code code;
  tg_comm_status st;
} reader;

static void *read_main(void *arg) {
  reader *r = arg;
  r->code = tg_comm_store_await(tg_etcd_cluster_endpoints(cluster), r->key, r->got, sizeof r->got,
                                now_ms() + 10000, NULL, NULL, &r->st);
  return NULL;
}

static void test_readers_get_what_rank_0_published(void **state) {
  (void)state;
  char key[256];
  unique_key(key, sizeof key, "nccl-id");
  uint8_t id[ID_BYTES];
  for (int i = 0; i < ID_BYTES; i++) id[i] = (uint8_t)(i * 37 + 11);

  /* Readers first: they must wait for the value, not fail on its absence. */
  reader readers[RANKS - 1];
  pthread_t threads[RANKS - 1];
  for (int i = 0; i < RANKS - 1; i++) {
    memset(&readers[i], 0, sizeof readers[i]);
    readers[i].key = key;
    assert_int_equal(pthread_create(&threads[i], NULL, read_main, &readers[i]), 0);
  }
  usleep(100 * 1000);
  tg_comm_status st = {0};
  assert_int_equal(tg_comm_store_publish(tg_etcd_cluster_endpoints(cluster), key, id, sizeof id,
                                         now_ms() + 5000, &st),
                   TG_COMM_OK);
  for (int i = 0; i < RANKS - 1; i++) {
    pthread_join(threads[i], NULL);
    if (readers[i].code != TG_COMM_OK) fail_msg("reader %d: %s", i, readers[i].st.message);
    assert_memory_equal(readers[i].got, id, sizeof id);
  }

  /* A late reader gets it at once. */
  uint8_t late[ID_BYTES];
  assert_int_equal(tg_comm_store_await(tg_etcd_cluster_endpoints(cluster), key, late, sizeof late,
                                       now_ms() + 2000, NULL, NULL, &st),
                   TG_COMM_OK);
  assert_memory_equal(late, id, sizeof id);

  /* A second publisher for the same generation is refused; the value stays. */
  uint8_t other[ID_BYTES];
  memset(other, 0xab, sizeof other);
  assert_int_equal(tg_comm_store_publish(tg_etcd_cluster_endpoints(cluster), key, other, sizeof other,
                                         now_ms() + 5000, &st),
                   TG_COMM_ERROR);
  assert_non_null(strstr(st.message, "already there"));
  assert_int_equal(tg_comm_store_await(tg_etcd_cluster_endpoints(cluster), key, late, sizeof late,
                                       now_ms() + 2000, NULL, NULL, &st),
                   TG_COMM_OK);
  assert_memory_equal(late, id, sizeof id);
}

static void test_nothing_published_times_out(void **state) {
  (void)state;
  char key[256];
  unique_key(key, sizeof key, "nccl-id");
  uint8_t got[ID_BYTES];
  tg_comm_status st = {0};
  int64_t t0 = now_ms();
  assert_int_equal(tg_comm_store_await(tg_etcd_cluster_endpoints(cluster), key, got, sizeof got, t0 + 300,
                                       NULL, NULL, &st),
                   TG_COMM_TIMEOUT);
  assert_true(now_ms() - t0 >= 300);
  assert_non_null(strstr(st.message, "before the deadline"));
}

static int cancel_after_three(void *user) {
  int *calls = user;
  return ++*calls >= 3;
}

static void test_abort_stops_a_wait(void **state) {
  (void)state;
  char key[256];
  unique_key(key, sizeof key, "nccl-id");
  uint8_t got[ID_BYTES];
  tg_comm_status st = {0};
  int calls = 0;
  int64_t t0 = now_ms();
  assert_int_equal(tg_comm_store_await(tg_etcd_cluster_endpoints(cluster), key, got, sizeof got,
                                       now_ms() + 10000, cancel_after_three, &calls, &st),
                   TG_COMM_ABORTED);
  assert_int_equal(calls, 3);
  assert_true(now_ms() - t0 < 5000);
}

static void test_wrong_sizes_and_bad_arguments(void **state) {
  (void)state;
  const char *ep = tg_etcd_cluster_endpoints(cluster);
  char key[256];
  unique_key(key, sizeof key, "nccl-id");
  uint8_t small[16] = {1, 2, 3}, got[ID_BYTES];
  tg_comm_status st = {0};
  /* A value of another size (a corrupt or foreign key) is never taken. */
  assert_int_equal(tg_comm_store_publish(ep, key, small, sizeof small, now_ms() + 5000, &st), TG_COMM_OK);
  assert_int_equal(tg_comm_store_await(ep, key, got, sizeof got, now_ms() + 2000, NULL, NULL, &st), TG_COMM_ERROR);
  assert_non_null(strstr(st.message, "16 bytes, expected 128"));

  static uint8_t huge[TG_COMM_STORE_BYTES_MAX + 1];
  assert_int_equal(tg_comm_store_publish(ep, key, huge, sizeof huge, now_ms() + 1000, &st), TG_COMM_ERROR);
  assert_int_equal(tg_comm_store_publish(ep, key, got, 0, now_ms() + 1000, &st), TG_COMM_ERROR);
  assert_int_equal(tg_comm_store_publish(NULL, key, got, 1, now_ms() + 1000, &st), TG_COMM_ERROR);
  assert_int_equal(tg_comm_store_await(ep, "", got, 1, now_ms() + 1000, NULL, NULL, &st), TG_COMM_ERROR);
  assert_int_equal(tg_comm_store_await(ep, key, NULL, 1, now_ms() + 1000, NULL, NULL, &st), TG_COMM_ERROR);
  /* A deadline already passed: no store call at all. */
  assert_int_equal(tg_comm_store_publish(ep, key, got, 1, now_ms() - 1, &st), TG_COMM_TIMEOUT);
  /* No store there: an error or a timeout, bounded by the deadline. */
  int64_t t0 = now_ms();
  tg_comm_code code = tg_comm_store_await("127.0.0.1:1", key, got, sizeof got, t0 + 500, NULL, NULL, &st);
  assert_true(code == TG_COMM_TIMEOUT || code == TG_COMM_ERROR);
  assert_true(now_ms() - t0 < 6000);
}

typedef struct {
  char prefix[256];
  int index;
} entry_writer;

static void *write_entry_main(void *arg) {
  entry_writer *w = arg;
  char key[300];
  uint8_t value[8];
  memset(value, w->index, sizeof value);
  usleep((useconds_t)(w->index * 20 * 1000)); /* arriving one after another */
  tg_comm_status st = {0};
  if (tg_comm_store_indexed_key(key, sizeof key, w->prefix, w->index) == 0)
    tg_comm_store_publish(tg_etcd_cluster_endpoints(cluster), key, value, sizeof value, now_ms() + 5000, &st);
  return NULL;
}

/* A list published entry by entry, gathered in one go once all are there;
 * entries outside [first, first + n) do not count. */
static void test_gather_waits_for_every_entry(void **state) {
  (void)state;
  const char *ep = tg_etcd_cluster_endpoints(cluster);
  char prefix[256], key[300];
  unique_key(prefix, sizeof prefix, "votes/");
  uint8_t outsider[8] = {0};
  tg_comm_status st = {0};
  assert_int_equal(tg_comm_store_indexed_key(key, sizeof key, prefix, 0), 0);
  assert_int_equal(tg_comm_store_publish(ep, key, outsider, sizeof outsider, now_ms() + 5000, &st), TG_COMM_OK);
  entry_writer writers[RANKS];
  pthread_t threads[RANKS];
  for (int i = 1; i < RANKS; i++) {
    snprintf(writers[i].prefix, sizeof writers[i].prefix, "%s", prefix);
    writers[i].index = i;
    assert_int_equal(pthread_create(&threads[i], NULL, write_entry_main, &writers[i]), 0);
  }
  uint8_t got[(RANKS - 1) * 8];
  assert_int_equal(tg_comm_store_gather(ep, prefix, 1, RANKS - 1, 8, got, now_ms() + 10000, NULL, NULL, &st),
                   TG_COMM_OK);
  for (int i = 1; i < RANKS; i++) {
    pthread_join(threads[i], NULL);
    for (int b = 0; b < 8; b++) assert_int_equal(got[(i - 1) * 8 + b], i);
  }
  /* One entry missing: a timeout at the deadline, naming the list. */
  int64_t t0 = now_ms();
  assert_int_equal(tg_comm_store_gather(ep, prefix, 1, RANKS, 8, got, t0 + 300, NULL, NULL, &st), TG_COMM_TIMEOUT);
  assert_true(now_ms() - t0 >= 300);
  assert_non_null(strstr(st.message, prefix));
}

/* What other processes put in a list's range is checked, not trusted. */
static void test_gather_refuses_foreign_entries(void **state) {
  (void)state;
  const char *ep = tg_etcd_cluster_endpoints(cluster);
  char prefix[256], key[300];
  uint8_t value[8] = {0}, got[16];
  tg_comm_status st = {0};
  /* An entry of the wrong size. */
  unique_key(prefix, sizeof prefix, "votes/");
  for (int i = 0; i < 2; i++) {
    assert_int_equal(tg_comm_store_indexed_key(key, sizeof key, prefix, i), 0);
    assert_int_equal(tg_comm_store_publish(ep, key, value, i ? 4 : 8, now_ms() + 5000, &st), TG_COMM_OK);
  }
  assert_int_equal(tg_comm_store_gather(ep, prefix, 0, 2, 8, got, now_ms() + 2000, NULL, NULL, &st), TG_COMM_ERROR);
  assert_non_null(strstr(st.message, "4 bytes, expected 8"));
  /* A key inside the range that is not an entry ("00000001x" sorts among them). */
  unique_key(prefix, sizeof prefix, "votes/");
  snprintf(key, sizeof key, "%s00000001x", prefix);
  assert_int_equal(tg_comm_store_publish(ep, key, value, 8, now_ms() + 5000, &st), TG_COMM_OK);
  assert_int_equal(tg_comm_store_indexed_key(key, sizeof key, prefix, 0), 0);
  assert_int_equal(tg_comm_store_publish(ep, key, value, 8, now_ms() + 5000, &st), TG_COMM_OK);
  assert_int_equal(tg_comm_store_gather(ep, prefix, 0, 2, 8, got, now_ms() + 2000, NULL, NULL, &st), TG_COMM_ERROR);
  assert_non_null(strstr(st.message, "is not an entry"));
  /* Bad arguments. */
  assert_int_equal(tg_comm_store_gather(ep, prefix, -1, 2, 8, got, now_ms() + 1000, NULL, NULL, &st), TG_COMM_ERROR);
  assert_int_equal(tg_comm_store_gather(ep, prefix, 0, 0, 8, got, now_ms() + 1000, NULL, NULL, &st), TG_COMM_ERROR);
  assert_int_equal(tg_comm_store_gather(ep, prefix, 0, 2, 0, got, now_ms() + 1000, NULL, NULL, &st), TG_COMM_ERROR);
  assert_int_equal(tg_comm_store_indexed_key(key, sizeof key, prefix, 100000000), -1);
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
  tg_log_init("store_bytes_test", TG_LOG_WARN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_readers_get_what_rank_0_published),
      cmocka_unit_test(test_nothing_published_times_out),
      cmocka_unit_test(test_abort_stops_a_wait),
      cmocka_unit_test(test_wrong_sizes_and_bad_arguments),
      cmocka_unit_test(test_gather_waits_for_every_entry),
      cmocka_unit_test(test_gather_refuses_foreign_entries),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
