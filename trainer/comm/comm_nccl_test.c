/* The NCCL communicator on one GPU (world size 1: NCCL refuses two ranks
 * on one device): create from a unique id, every collective, abort, and a
 * new communicator after the abort; the unique id shared through the
 * generation's store (a real etcd); host-buffer collectives staged through
 * the device; a previous world's communicator offered as the parent of the
 * next. Without a GPU (CI, this build machine) it skips, as
 * common/cuda/gpu_probe.c does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include "tests/harness/etcd_cluster.h"
#include "trainer/comm/comm.h"

static int have_gpu(void) {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

static tg_comm *open_world_of_one(tg_comm_status *st) {
  ncclUniqueId id;
  if (ncclGetUniqueId(&id) != ncclSuccess) return NULL;
  tg_comm_config cfg = {
      .backend = TG_COMM_NCCL,
      .rank = 0,
      .world_size = 1,
      .generation = 1,
      .nccl_id = (const uint8_t *)id.internal,
      .cuda_device = 0,
      .connect_timeout_ms = 20000,
  };
  return tg_comm_create(&cfg, st);
}

static void test_world_of_one(void **state) {
  if (!have_gpu()) {
    printf("no GPU: skipped\n");
    skip();
  }
  tg_comm_status st = {0};
  tg_comm *c = open_world_of_one(&st);
  if (!c) fail_msg("create: %s", st.message);

  int64_t host[4] = {1, -2, 3000000000000LL, 4}, back[4];
  int64_t *dev = NULL;
  assert_int_equal(cudaMalloc((void **)&dev, sizeof host), cudaSuccess);
  assert_int_equal(cudaMemcpy(dev, host, sizeof host, cudaMemcpyHostToDevice), cudaSuccess);
  assert_int_equal(tg_comm_all_reduce(c, dev, 4, TG_COMM_INT64, 10000, &st), TG_COMM_OK);
  assert_int_equal(tg_comm_broadcast(c, dev, sizeof host, 0, 10000, &st), TG_COMM_OK);
  assert_int_equal(tg_comm_barrier(c, 10000, &st), TG_COMM_OK);
  assert_int_equal(cudaMemcpy(back, dev, sizeof back, cudaMemcpyDeviceToHost), cudaSuccess);
  assert_memory_equal(host, back, sizeof host);

  tg_comm_abort(c);
  assert_int_equal(tg_comm_barrier(c, 10000, &st), TG_COMM_ABORTED);
  tg_comm_free(c);

  /* The next generation's communicator on the same GPU. */
  c = open_world_of_one(&st);
  if (!c) fail_msg("re-create after abort: %s", st.message);
  assert_int_equal(tg_comm_all_reduce(c, dev, 4, TG_COMM_INT64, 10000, &st), TG_COMM_OK);
  tg_comm_free(c);
  cudaFree(dev);
}

/* nccl_id NULL: rank 0 makes the id and publishes it under the prefix;
 * then the next generation with this one as its parent. */
static void test_unique_id_through_the_store(void **state) {
  if (!have_gpu()) {
    printf("no GPU: skipped\n");
    skip();
  }
  char err[256];
  tg_etcd_cluster *cluster = tg_etcd_cluster_start(1, err, sizeof err);
  if (!cluster) fail_msg("etcd: %s", err);
  tg_comm_status st = {0};
  tg_comm_config cfg = {
      .backend = TG_COMM_NCCL,
      .rank = 0,
      .world_size = 1,
      .generation = 7,
      .store_address = tg_etcd_cluster_endpoints(cluster),
      .store_prefix = "/tardigrade/jobs/nccl-test/gen/7/",
      .cuda_device = 0,
      .connect_timeout_ms = 20000,
  };
  tg_comm *c = tg_comm_create(&cfg, &st);
  if (!c) {
    tg_etcd_cluster_free(cluster);
    fail_msg("create through the store: %s", st.message);
  }
  assert_true(tg_comm_device_buffers(c));
  /* Host buffers are staged through the device. */
  int64_t v[3] = {5, -6, 7}, gathered[3];
  assert_int_equal(tg_comm_all_reduce_host(c, v, 3, TG_COMM_INT64, 10000, &st), TG_COMM_OK);
  assert_int_equal(v[0], 5);
  assert_int_equal(tg_comm_all_gather_host(c, v, gathered, sizeof v, 10000, &st), TG_COMM_OK);
  assert_memory_equal(v, gathered, sizeof v);

  /* The next generation with this one offered as its parent: the old one
   * is revoked (where the library can) or aborted once its collective was
   * aborted; a world of one is built fresh beside it (nothing to shrink;
   * the shrink itself needs two GPUs); freeing the parent after is clean. */
  tg_comm_abort(c);
  assert_int_equal(tg_comm_barrier(c, 10000, &st), TG_COMM_ABORTED);
  tg_comm_config next = cfg;
  next.generation = 8;
  next.store_prefix = "/tardigrade/jobs/nccl-test/gen/8/";
  next.parent = c;
  tg_comm *c8 = tg_comm_create(&next, &st);
  tg_comm_free(c);
  if (!c8) {
    tg_etcd_cluster_free(cluster);
    fail_msg("create generation 8 with a parent: %s", st.message);
  }
  assert_int_equal(tg_comm_all_reduce_host(c8, v, 3, TG_COMM_INT64, 10000, &st), TG_COMM_OK);
  assert_int_equal(v[2], 7);
  tg_comm_free(c8);

  /* The same generation cannot publish a second id. */
  c = tg_comm_create(&cfg, &st);
  assert_null(c);
  assert_non_null(strstr(st.message, "already there"));
  tg_etcd_cluster_free(cluster);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_world_of_one),
                                     cmocka_unit_test(test_unique_id_through_the_store)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
