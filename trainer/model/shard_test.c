/* Tests for shard ranges and shard-to-shard copies: ranges tile the array
 * and are balanced for every world size, any range can be cut from any
 * sharding, and resharding 8 -> 6 -> 8 gives back the same shards. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "trainer/model/shard.h"

static void test_ranges(void **state) {
  (void)state;
  const size_t counts[] = {0, 1, 5, 8, 34048, 1010213120};
  for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++)
    for (uint32_t world = 1; world <= 17; world++) {
      size_t at = 0;
      for (uint32_t r = 0; r < world; r++) {
        size_t b, e;
        assert_int_equal(tg_shard_range(counts[c], world, r, &b, &e), TG_MODEL_OK);
        assert_int_equal(b, at);
        size_t len = e - b, base = counts[c] / world;
        assert_true(len == base || len == base + 1);
        at = e;
      }
      assert_int_equal(at, counts[c]);
    }
  size_t b, e;
  assert_int_equal(tg_shard_range(10, 0, 0, &b, &e), TG_MODEL_EINVAL);
  assert_int_equal(tg_shard_range(10, 4, 4, &b, &e), TG_MODEL_EINVAL);
  assert_int_equal(tg_shard_range(10, 4, 0, NULL, &e), TG_MODEL_EINVAL);
}

/* Cuts the flat array into `world` freshly allocated shards. */
static float **split(const float *flat, size_t count, uint32_t world) {
  float **shards = calloc(world, sizeof *shards);
  assert_non_null(shards);
  for (uint32_t r = 0; r < world; r++) {
    size_t b, e;
    tg_shard_range(count, world, r, &b, &e);
    shards[r] = malloc((e - b + 1) * sizeof(float));
    assert_non_null(shards[r]);
    memcpy(shards[r], flat + b, (e - b) * sizeof(float));
  }
  return shards;
}

/* New shards for new_world, each cut from the old shards with tg_shard_copy. */
static float **reshard(float **old, size_t count, uint32_t old_world, uint32_t new_world) {
  float **shards = calloc(new_world, sizeof *shards);
  assert_non_null(shards);
  for (uint32_t r = 0; r < new_world; r++) {
    size_t b, e;
    tg_shard_range(count, new_world, r, &b, &e);
    shards[r] = malloc((e - b + 1) * sizeof(float));
    assert_non_null(shards[r]);
    assert_int_equal(tg_shard_copy(count, old_world, (const float *const *)old, b, e, shards[r]),
                     TG_MODEL_OK);
  }
  return shards;
}

static void free_shards(float **shards, uint32_t world) {
  for (uint32_t r = 0; r < world; r++) free(shards[r]);
  free(shards);
}

static void test_reshard_8_6_8(void **state) {
  (void)state;
  enum { COUNT = 1003 };
  float flat[COUNT], gathered[COUNT];
  for (int i = 0; i < COUNT; i++) flat[i] = (float)i * 0.25f - 7.0f;
  float **w8 = split(flat, COUNT, 8);
  float **w6 = reshard(w8, COUNT, 8, 6);
  float **w8b = reshard(w6, COUNT, 6, 8);
  float **w1 = reshard(w8b, COUNT, 8, 1);
  assert_memory_equal(w1[0], flat, sizeof flat);
  assert_int_equal(tg_shard_copy(COUNT, 6, (const float *const *)w6, 0, COUNT, gathered),
                   TG_MODEL_OK);
  assert_memory_equal(gathered, flat, sizeof flat);
  for (uint32_t r = 0; r < 8; r++) {
    size_t b, e;
    tg_shard_range(COUNT, 8, r, &b, &e);
    assert_memory_equal(w8b[r], w8[r], (e - b) * sizeof(float));
  }
  /* An arbitrary window straddling shard boundaries; unused shards may be NULL. */
  float window[100];
  const float *only[6] = {NULL};
  only[1] = w6[1];
  only[2] = w6[2];
  size_t b1, e1;
  tg_shard_range(COUNT, 6, 1, &b1, &e1);
  assert_int_equal(tg_shard_copy(COUNT, 6, only, e1 - 50, e1 + 50, window), TG_MODEL_OK);
  assert_memory_equal(window, flat + e1 - 50, sizeof window);
  assert_int_equal(tg_shard_copy(COUNT, 6, only, 0, 10, window), TG_MODEL_EINVAL);
  assert_int_equal(tg_shard_copy(COUNT, 6, only, 10, 5, window), TG_MODEL_EINVAL);
  assert_int_equal(tg_shard_copy(COUNT, 6, only, 0, COUNT + 1, window), TG_MODEL_EINVAL);
  free_shards(w8, 8);
  free_shards(w6, 6);
  free_shards(w8b, 8);
  free_shards(w1, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ranges),
      cmocka_unit_test(test_reshard_8_6_8),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
