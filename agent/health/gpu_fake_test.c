/* Tests for the file-driven fake GPU backend (gpu_fake.h): the directory
 * format as a tester or tg-chaos writes it, XIDs delivered exactly once,
 * hostile file contents, and the bounded reads underneath (textfile.h). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/health/gpu_fake.h"
#include "agent/health/health_testing.h"
#include "agent/health/textfile.h"

typedef struct {
  char *dir;
  tg_gpu *gpu;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  char err[256];
  if (f == NULL || (f->dir = health_testing_tmpdir("gpu_fake")) == NULL) return -1;
  if (tg_gpu_fake_create(f->dir, 2) != 0) return -1;
  f->gpu = tg_gpu_fake_open(f->dir, err, sizeof err);
  if (f->gpu == NULL) return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  tg_gpu_close(f->gpu);
  health_testing_rmtree(f->dir);
  free(f->dir);
  free(f);
  return 0;
}

static tg_gpu_status query(fixture *f, uint32_t index) {
  tg_gpu_status st;
  char err[256];
  assert_int_equal(tg_gpu_query(f->gpu, index, &st, err, sizeof err), 0);
  return st;
}

static size_t drain(fixture *f, tg_gpu_xid *out, size_t cap) {
  size_t n = 99;
  char err[256];
  assert_int_equal(tg_gpu_drain_xids(f->gpu, out, cap, &n, err, sizeof err), 0);
  return n;
}

static void test_created_devices_are_healthy(void **state) {
  fixture *f = *state;
  uint32_t n = 0;
  char err[256];
  assert_int_equal(tg_gpu_count(f->gpu, &n, err, sizeof err), 0);
  assert_int_equal(n, 2);
  tg_gpu_status st = query(f, 1);
  assert_int_equal(st.index, 1);
  assert_string_equal(st.uuid, "GPU-fake-0000-0000-0000-000000000001");
  assert_string_equal(st.name, "Tardigrade fake GPU");
  assert_int_equal(st.temperature_c, 40);
  assert_int_equal(st.throttle, 0);
  assert_int_equal(st.ecc_uncorrectable, 0);
  assert_int_equal(st.row_remap_failure, 0);
  assert_int_equal(st.row_remap_pending, 0);
  assert_int_equal(st.pcie_width, 16);
  assert_int_equal(st.pcie_width_max, 16);
  assert_int_equal(st.pcie_gen, 5);
  assert_int_equal(st.pcie_gen_max, 5);
  assert_int_equal(st.lost, 0);
  assert_int_equal(drain(f, (tg_gpu_xid[4]){{0}}, 4), 0);
  assert_int_equal(tg_gpu_query(f->gpu, 2, &st, err, sizeof err), -1);
  assert_non_null(strstr(err, "no fake GPU 2"));
}

static void test_setters_show_at_next_query(void **state) {
  fixture *f = *state;
  assert_int_equal(tg_gpu_fake_set_temperature(f->dir, 0, 93), 0);
  assert_int_equal(tg_gpu_fake_set_ecc(f->dir, 0, 7), 0);
  assert_int_equal(tg_gpu_fake_set_lost(f->dir, 1, 1), 0);
  assert_int_equal(tg_gpu_fake_set(f->dir, 0, "row_remap_failure", "1"), 0);
  assert_int_equal(tg_gpu_fake_set(f->dir, 0, "pcie_width", "8"), 0);
  tg_gpu_status st = query(f, 0);
  assert_int_equal(st.temperature_c, 93);
  assert_int_equal(st.ecc_uncorrectable, 7);
  assert_int_equal(st.row_remap_failure, 1);
  assert_int_equal(st.pcie_width, 8);
  assert_int_equal(st.lost, 0);
  assert_int_equal(query(f, 1).lost, 1);
  assert_int_equal(tg_gpu_fake_set_lost(f->dir, 1, 0), 0);
  assert_int_equal(query(f, 1).lost, 0);
}

static void test_throttle_names_and_bits(void **state) {
  fixture *f = *state;
  assert_int_equal(tg_gpu_fake_set(f->dir, 0, "throttle", "thermal, hw_slowdown"), 0);
  assert_int_equal(query(f, 0).throttle, TG_GPU_THROTTLE_THERMAL | TG_GPU_THROTTLE_HW_SLOWDOWN);
  assert_int_equal(tg_gpu_fake_set(f->dir, 0, "throttle", "power|bogus"), 0);
  assert_int_equal(query(f, 0).throttle, TG_GPU_THROTTLE_POWER);
  assert_int_equal(tg_gpu_fake_set(f->dir, 0, "throttle", "0x3"), 0);
  assert_int_equal(query(f, 0).throttle, TG_GPU_THROTTLE_THERMAL | TG_GPU_THROTTLE_POWER);
  assert_int_equal(tg_gpu_fake_set(f->dir, 0, "throttle", "none"), 0);
  assert_int_equal(query(f, 0).throttle, 0);
}

static void test_missing_or_bad_files_mean_healthy(void **state) {
  fixture *f = *state;
  char dev[4096], path[4096];
  snprintf(dev, sizeof dev, "%s/gpu0", f->dir);
  assert_int_equal(unlink(health_testing_join(path, sizeof path, dev, "temperature_c")), 0);
  assert_int_equal(unlink(health_testing_join(path, sizeof path, dev, "pcie_width")), 0);
  assert_int_equal(tg_gpu_fake_set(f->dir, 0, "ecc_uncorrectable", "lots"), 0);
  assert_int_equal(tg_gpu_fake_set(f->dir, 0, "lost", "-1"), 0);
  tg_gpu_status st = query(f, 0);
  assert_int_equal(st.temperature_c, 40);
  assert_int_equal(st.pcie_width, 16);
  assert_int_equal(st.ecc_uncorrectable, 0);
  assert_int_equal(st.lost, 0);
}

/* A file far larger than any value: read up to the bound, then rejected. */
static void test_huge_file_is_read_bounded(void **state) {
  fixture *f = *state;
  char path[4096];
  snprintf(path, sizeof path, "%s/gpu0/ecc_uncorrectable", f->dir);
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  for (int i = 0; i < 100000; i++) fputc('9', fp);
  fclose(fp);
  assert_int_equal(query(f, 0).ecc_uncorrectable, 0); /* does not parse: default */

  char small[8];
  assert_int_equal(tg_textfile_read(path, small, sizeof small), 0);
  assert_string_equal(small, "9999999");
  uint64_t v = 1;
  assert_int_equal(tg_textfile_read_u64(path, &v), -EINVAL);
  assert_int_equal(tg_textfile_parse_u64(" 0x10 ", &v), 0);
  assert_int_equal(v, 16);
  assert_int_equal(tg_textfile_parse_u64("-1", &v), -EINVAL);
  assert_int_equal(tg_textfile_parse_u64("99999999999999999999999", &v), -EINVAL);
  assert_int_equal(tg_textfile_read("/nonexistent/x", small, sizeof small), -ENOENT);
}

static void test_removed_device_dir_reads_lost(void **state) {
  fixture *f = *state;
  char dev[4096];
  snprintf(dev, sizeof dev, "%s/gpu1", f->dir);
  assert_int_equal(health_testing_rmtree(dev), 0);
  assert_int_equal(query(f, 1).lost, 1);
  assert_int_equal(query(f, 0).lost, 0);
}

static void test_xids_are_delivered_once(void **state) {
  fixture *f = *state;
  tg_gpu_xid x[8];
  assert_int_equal(tg_gpu_fake_inject_xid(f->dir, 1, 79), 0);
  assert_int_equal(tg_gpu_fake_inject_xid(f->dir, 0, 13), 0);
  assert_int_equal(tg_gpu_fake_inject_xid(f->dir, 1, 48), 0);
  assert_int_equal(drain(f, x, 8), 3);
  assert_int_equal(x[0].xid, 13);
  assert_int_equal(x[0].device_index, 0);
  assert_int_equal(x[1].xid, 79);
  assert_int_equal(x[1].device_index, 1);
  assert_int_equal(x[2].xid, 48);
  assert_int_equal(x[2].device_index, 1);
  assert_int_equal(drain(f, x, 8), 0);
}

static void test_xid_partial_and_malformed_lines(void **state) {
  fixture *f = *state;
  char path[4096];
  tg_gpu_xid x[8];
  snprintf(path, sizeof path, "%s/gpu0/xid", f->dir);
  assert_int_equal(tg_textfile_append(path, "bogus\n\n  63  \n9999999999999\n9"), 0);
  assert_int_equal(drain(f, x, 8), 1);
  assert_int_equal(x[0].xid, 63);
  assert_int_equal(drain(f, x, 8), 0); /* "9" has no newline yet */
  assert_int_equal(tg_textfile_append(path, "4\n"), 0);
  assert_int_equal(drain(f, x, 8), 1);
  assert_int_equal(x[0].xid, 94);
}

static void test_xid_cap_leaves_the_rest_queued(void **state) {
  fixture *f = *state;
  tg_gpu_xid x[2];
  for (uint32_t i = 0; i < 5; i++) assert_int_equal(tg_gpu_fake_inject_xid(f->dir, 0, 100 + i), 0);
  assert_int_equal(drain(f, x, 2), 2);
  assert_int_equal(x[0].xid, 100);
  assert_int_equal(x[1].xid, 101);
  assert_int_equal(drain(f, x, 2), 2);
  assert_int_equal(x[0].xid, 102);
  assert_int_equal(drain(f, x, 2), 1);
  assert_int_equal(x[0].xid, 104);
}

static void test_xid_garbage_without_newlines_is_skipped(void **state) {
  fixture *f = *state;
  char path[4096];
  char junk[10000];
  tg_gpu_xid x[4];
  memset(junk, 'x', sizeof junk - 1);
  junk[sizeof junk - 1] = '\0';
  snprintf(path, sizeof path, "%s/gpu0/xid", f->dir);
  assert_int_equal(tg_textfile_append(path, junk), 0);
  assert_int_equal(tg_textfile_append(path, "\n31\n"), 0);
  size_t n = drain(f, x, 4);
  assert_int_equal(n, 1);
  assert_int_equal(x[0].xid, 31);
}

static void test_old_xids_and_truncation(void **state) {
  fixture *f = *state;
  char path[4096], err[256];
  tg_gpu_xid x[4];
  /* Written before the backend opened: not news. */
  assert_int_equal(tg_gpu_fake_inject_xid(f->dir, 0, 79), 0);
  tg_gpu *fresh = tg_gpu_fake_open(f->dir, err, sizeof err);
  assert_non_null(fresh);
  size_t n = 9;
  assert_int_equal(tg_gpu_drain_xids(fresh, x, 4, &n, err, sizeof err), 0);
  assert_int_equal(n, 0);
  /* Truncated and rewritten: read from the start again. */
  snprintf(path, sizeof path, "%s/gpu0/xid", f->dir);
  assert_int_equal(tg_textfile_write(path, ""), 0);
  assert_int_equal(tg_gpu_drain_xids(fresh, x, 4, &n, err, sizeof err), 0);
  assert_int_equal(tg_gpu_fake_inject_xid(f->dir, 0, 74), 0);
  assert_int_equal(tg_gpu_drain_xids(fresh, x, 4, &n, err, sizeof err), 0);
  assert_int_equal(n, 1);
  assert_int_equal(x[0].xid, 74);
  tg_gpu_close(fresh);
}

static void test_hang_blocks_and_is_released(void **state) {
  fixture *f = *state;
  assert_int_equal(tg_gpu_fake_set(f->dir, 0, "hang_ms", "80"), 0);
  int64_t t0 = health_testing_now_ms();
  query(f, 0);
  int64_t took = health_testing_now_ms() - t0;
  assert_true(took >= 80);
  assert_true(took < 2000);
  assert_int_equal(tg_gpu_fake_set(f->dir, 0, "hang_ms", "0"), 0);
  t0 = health_testing_now_ms();
  query(f, 0);
  assert_true(health_testing_now_ms() - t0 < 1000);
}

static void test_bad_names_and_dirs(void **state) {
  fixture *f = *state;
  char err[256] = "";
  assert_int_equal(tg_gpu_fake_set(f->dir, 0, "../escape", "1"), -EINVAL);
  assert_int_equal(tg_gpu_fake_set(f->dir, 0, "", "1"), -EINVAL);
  assert_int_equal(tg_gpu_fake_set(f->dir, 0, "..", "1"), -EINVAL);
  assert_null(tg_gpu_fake_open("/nonexistent/fake-gpus", err, sizeof err));
  assert_non_null(strstr(err, "not a directory"));
}

/* Without DIR/count the devices are the consecutive gpuN directories. */
static void test_count_from_directories(void **state) {
  fixture *f = *state;
  char path[4096], err[256];
  assert_int_equal(unlink(health_testing_join(path, sizeof path, f->dir, "count")), 0);
  assert_int_equal(mkdir(health_testing_join(path, sizeof path, f->dir, "gpu2"), 0755), 0);
  assert_int_equal(mkdir(health_testing_join(path, sizeof path, f->dir, "gpu4"), 0755), 0);
  tg_gpu *g = tg_gpu_fake_open(f->dir, err, sizeof err);
  assert_non_null(g);
  uint32_t n = 0;
  assert_int_equal(tg_gpu_count(g, &n, err, sizeof err), 0);
  assert_int_equal(n, 3);
  tg_gpu_status st;
  assert_int_equal(tg_gpu_query(g, 2, &st, err, sizeof err), 0);
  assert_int_equal(st.temperature_c, 40); /* an empty device directory is healthy */
  tg_gpu_close(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_created_devices_are_healthy, setup, teardown),
      cmocka_unit_test_setup_teardown(test_setters_show_at_next_query, setup, teardown),
      cmocka_unit_test_setup_teardown(test_throttle_names_and_bits, setup, teardown),
      cmocka_unit_test_setup_teardown(test_missing_or_bad_files_mean_healthy, setup, teardown),
      cmocka_unit_test_setup_teardown(test_huge_file_is_read_bounded, setup, teardown),
      cmocka_unit_test_setup_teardown(test_removed_device_dir_reads_lost, setup, teardown),
      cmocka_unit_test_setup_teardown(test_xids_are_delivered_once, setup, teardown),
      cmocka_unit_test_setup_teardown(test_xid_partial_and_malformed_lines, setup, teardown),
      cmocka_unit_test_setup_teardown(test_xid_cap_leaves_the_rest_queued, setup, teardown),
      cmocka_unit_test_setup_teardown(test_xid_garbage_without_newlines_is_skipped, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_old_xids_and_truncation, setup, teardown),
      cmocka_unit_test_setup_teardown(test_hang_blocks_and_is_released, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_names_and_dirs, setup, teardown),
      cmocka_unit_test_setup_teardown(test_count_from_directories, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
