/* Tests for exact fixed-point gradient sums: rounding and the round trip,
 * the range, non-finite and overflow checks, order-independence of the
 * integer sum (where the float sum is not), and a squared norm that is the
 * same bits however the array is split into shards. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "trainer/model/fixed.h"

static void test_round_trip(void **state) {
  (void)state;
  /* Multiples of 2^-32 within range are exact both ways. */
  const float exact[] = {0.0f, 1.0f, -1.0f, 0.5f, 32768.0f, -32768.0f, 0x1p-32f, 3.0f * 0x1p-20f};
  size_t n = sizeof exact / sizeof exact[0];
  int64_t acc[8] = {0};
  float back[8];
  assert_int_equal(tg_fixed_accumulate(acc, exact, n, NULL), TG_MODEL_OK);
  assert_int_equal(acc[1], 1ll << 32);
  assert_int_equal(acc[5], -(1ll << 47));
  assert_int_equal(acc[6], 1);
  assert_int_equal(tg_fixed_to_float(back, acc, n, 1), TG_MODEL_OK);
  assert_memory_equal(back, exact, n * sizeof(float));
  /* Rounding: to nearest, ties to even. */
  const float ties[] = {0x1p-33f, 3.0f * 0x1p-33f, -0x1p-33f, 0x1p-34f};
  int64_t r[4] = {0};
  assert_int_equal(tg_fixed_accumulate(r, ties, 4, NULL), TG_MODEL_OK);
  assert_int_equal(r[0], 0);
  assert_int_equal(r[1], 2);
  assert_int_equal(r[2], 0);
  assert_int_equal(r[3], 0);
  /* The mean divides by the term count. */
  int64_t two = 3ll << 32;
  float mean;
  assert_int_equal(tg_fixed_to_float(&mean, &two, 1, 2), TG_MODEL_OK);
  assert_true(mean == 1.5f);
  assert_int_equal(tg_fixed_to_float(&mean, &two, 1, 0), TG_MODEL_EINVAL);
  /* Scalars (the loss) use the same scale. */
  int64_t q;
  assert_int_equal(tg_fixed_from_scalar(2.25, &q), TG_MODEL_OK);
  assert_true(tg_fixed_to_scalar(q, 1) == 2.25);
  assert_true(tg_fixed_to_scalar(2 * q, 2) == 2.25);
}

static void test_bad_values(void **state) {
  (void)state;
  int64_t acc[4] = {0};
  size_t bad = 99;
  float nan_at_2[] = {1.0f, 2.0f, NAN, 4.0f};
  assert_int_equal(tg_fixed_accumulate(acc, nan_at_2, 4, &bad), TG_MODEL_ENONFINITE);
  assert_int_equal(bad, 2);
  float inf[] = {INFINITY};
  assert_int_equal(tg_fixed_accumulate(acc, inf, 1, &bad), TG_MODEL_ENONFINITE);
  float big[] = {0.0f, -32769.0f};
  assert_int_equal(tg_fixed_accumulate(acc, big, 2, &bad), TG_MODEL_ERANGE);
  assert_int_equal(bad, 1);
  /* 2^16 - 1 terms at the range limit fit; one more overflows. */
  int64_t sum = 0;
  float limit = TG_FIXED_MAX_ABS;
  tg_model_status st = TG_MODEL_OK;
  uint32_t k;
  for (k = 0; k < TG_FIXED_MAX_TERMS && st == TG_MODEL_OK; k++)
    st = tg_fixed_accumulate(&sum, &limit, 1, NULL);
  assert_int_equal(st, TG_MODEL_OK);
  assert_int_equal(tg_fixed_accumulate(&sum, &limit, 1, NULL), TG_MODEL_EOVERFLOW);
  int64_t a = INT64_MAX, b = 1;
  assert_int_equal(tg_fixed_add(&a, &b, 1), TG_MODEL_EOVERFLOW);
  assert_int_equal(tg_fixed_accumulate(NULL, big, 1, NULL), TG_MODEL_EINVAL);
}

static float rnd(uint64_t *s) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  float u = (float)(*s >> 40) / 16777216.0f;
  return (u - 0.5f) * powf(10.0f, (float)((*s >> 20) % 8) - 6.0f); /* 1e-6 .. 10 */
}

/* Summing 64 gradient vectors in several orders and groupings: the int64
 * sums are equal; the float sums are not (in general). */
static void test_order_independent(void **state) {
  (void)state;
  enum { TERMS = 64, N = 256 };
  static float g[TERMS][N];
  uint64_t s = 1;
  for (int t = 0; t < TERMS; t++)
    for (int i = 0; i < N; i++) g[t][i] = rnd(&s);
  int64_t forward[N] = {0}, backward[N] = {0}, tree[N] = {0};
  float fsum_forward[N] = {0}, fsum_backward[N] = {0};
  for (int t = 0; t < TERMS; t++) {
    assert_int_equal(tg_fixed_accumulate(forward, g[t], N, NULL), TG_MODEL_OK);
    assert_int_equal(tg_fixed_accumulate(backward, g[TERMS - 1 - t], N, NULL), TG_MODEL_OK);
    for (int i = 0; i < N; i++) {
      fsum_forward[i] += g[t][i];
      fsum_backward[i] += g[TERMS - 1 - t][i];
    }
  }
  /* A tree: 8 "ranks" of 8 terms each, then the ranks summed. */
  for (int r = 0; r < 8; r++) {
    int64_t part[N] = {0};
    for (int t = 0; t < 8; t++)
      assert_int_equal(tg_fixed_accumulate(part, g[r * 8 + t], N, NULL), TG_MODEL_OK);
    assert_int_equal(tg_fixed_add(tree, part, N), TG_MODEL_OK);
  }
  assert_memory_equal(forward, backward, sizeof forward);
  assert_memory_equal(forward, tree, sizeof forward);
  assert_true(memcmp(fsum_forward, fsum_backward, sizeof fsum_forward) != 0);
}

/* The squared norm: exact splits, close to the double computation. */
static void test_sqnorm(void **state) {
  (void)state;
  enum { N = 10007 };
  float *g = malloc(N * sizeof(float));
  assert_non_null(g);
  uint64_t s = 7;
  double ref = 0.0;
  for (int i = 0; i < N; i++) {
    g[i] = rnd(&s);
    ref += (double)g[i] * g[i];
  }
  ref = sqrt(ref);
  int64_t whole[TG_FIXED_SQNORM_LIMBS];
  assert_int_equal(tg_fixed_sqnorm(g, 0, N, whole), TG_MODEL_OK);
  double norm_whole = tg_fixed_sqnorm_to_norm(whole);
  assert_true(fabs(norm_whole - ref) <= 1e-12 * ref);
  const uint32_t worlds[] = {2, 3, 7, 64};
  for (size_t w = 0; w < 4; w++) {
    int64_t sum[TG_FIXED_SQNORM_LIMBS] = {0};
    for (uint32_t r = 0; r < worlds[w]; r++) {
      size_t b = (size_t)N * r / worlds[w], e = (size_t)N * (r + 1) / worlds[w];
      int64_t part[TG_FIXED_SQNORM_LIMBS];
      assert_int_equal(tg_fixed_sqnorm(g, b, e, part), TG_MODEL_OK);
      assert_int_equal(tg_fixed_add(sum, part, TG_FIXED_SQNORM_LIMBS), TG_MODEL_OK);
    }
    double norm = tg_fixed_sqnorm_to_norm(sum);
    assert_memory_equal(&norm, &norm_whole, sizeof norm);
  }
  int64_t limbs[TG_FIXED_SQNORM_LIMBS];
  assert_int_equal(tg_fixed_sqnorm(g, 0, 0, limbs), TG_MODEL_OK);
  assert_true(tg_fixed_sqnorm_to_norm(limbs) == 0.0);
  g[5] = NAN;
  assert_int_equal(tg_fixed_sqnorm(g, 0, N, limbs), TG_MODEL_ENONFINITE);
  assert_int_equal(tg_fixed_sqnorm(g, 6, 5, limbs), TG_MODEL_EINVAL);
  int64_t negative[TG_FIXED_SQNORM_LIMBS] = {-1, 0, 0, 0};
  assert_true(isnan(tg_fixed_sqnorm_to_norm(negative)));
  free(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_bad_values),
      cmocka_unit_test(test_order_independent),
      cmocka_unit_test(test_sqnorm),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
