/* Tests for the NVML backend where there is no NVIDIA driver (CI, this
 * machine): opening fails with a reason instead of crashing or linking
 * NVML. On a machine with a driver the default open succeeds, and the test
 * then reads every device once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "agent/health/gpu.h"

static void test_missing_library_fails_cleanly(void **state) {
  char err[512] = "";
  assert_null(tg_gpu_nvml_open("/nonexistent/libnvidia-ml.so.1", err, sizeof err));
  assert_non_null(strstr(err, "cannot load NVML"));
  assert_non_null(strstr(err, "/nonexistent/libnvidia-ml.so.1"));
}

/* A library that loads but is not NVML. */
static void test_library_without_nvml_fails_cleanly(void **state) {
  char err[512] = "";
  assert_null(tg_gpu_nvml_open("libc.so.6", err, sizeof err));
  assert_non_null(strstr(err, "lacks nvmlInit_v2"));
}

static void test_default_open(void **state) {
  char err[512] = "";
  tg_gpu *gpu = tg_gpu_nvml_open(NULL, err, sizeof err);
  if (gpu == NULL) {
    print_message("no NVML here: %s\n", err);
    assert_true(strlen(err) > 0);
    return;
  }
  uint32_t n = 0;
  assert_int_equal(tg_gpu_count(gpu, &n, err, sizeof err), 0);
  for (uint32_t i = 0; i < n; i++) {
    tg_gpu_status st;
    assert_int_equal(tg_gpu_query(gpu, i, &st, err, sizeof err), 0);
    print_message("gpu%u %s %s: %d C, ecc %llu, pcie x%u/x%u gen %u/%u, lost %d\n", i, st.uuid,
                  st.name, st.temperature_c, (unsigned long long)st.ecc_uncorrectable,
                  st.pcie_width, st.pcie_width_max, st.pcie_gen, st.pcie_gen_max, st.lost);
  }
  tg_gpu_xid xids[16];
  size_t k = 0;
  assert_int_equal(tg_gpu_drain_xids(gpu, xids, 16, &k, err, sizeof err), 0);
  tg_gpu_close(gpu);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_missing_library_fails_cleanly),
      cmocka_unit_test(test_library_without_nvml_fails_cleanly),
      cmocka_unit_test(test_default_open),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
