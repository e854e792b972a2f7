/* Tests for the corpus and its loader: the default file (or the fallback)
 * opens, sample i is a function of (seed, i) alone, whichever rank of
 * whichever world loads it and in whatever order, the generated fallback
 * is the same everywhere, and bad paths are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "trainer/model/corpus.h"
#include "trainer/model/shard.h"
#include "trainer/model/step.h"

enum { T = 16 };

static tg_corpus *open_or_fail(const char *path, uint32_t context, uint64_t seed) {
  char err[256] = "";
  tg_corpus *c = tg_corpus_open(path, context, seed, err, sizeof err);
  if (!c) fail_msg("tg_corpus_open: %s", err);
  return c;
}

static void test_default_corpus(void **state) {
  (void)state;
  tg_corpus *c = open_or_fail(NULL, T, 1);
  if (access(TG_CORPUS_DEFAULT_PATH, R_OK) == 0) {
    assert_int_equal(tg_corpus_source_of(c), TG_CORPUS_FILE);
    assert_true(tg_corpus_size(c) > 30000); /* the GPL v3 is ~35 KB */
    assert_non_null(memmem(tg_corpus_bytes(c), tg_corpus_size(c), "GNU GENERAL PUBLIC LICENSE", 26));
  } else {
    assert_int_equal(tg_corpus_source_of(c), TG_CORPUS_GENERATED);
  }
  tg_corpus_close(c);
}

static void test_generated_fallback(void **state) {
  (void)state;
  tg_corpus *a = open_or_fail("", T, 1), *b = open_or_fail("", T, 2);
  assert_int_equal(tg_corpus_source_of(a), TG_CORPUS_GENERATED);
  assert_int_equal(tg_corpus_size(a), TG_CORPUS_FALLBACK_BYTES);
  assert_memory_equal(tg_corpus_bytes(a), tg_corpus_bytes(b), TG_CORPUS_FALLBACK_BYTES);
  assert_int_equal(tg_corpus_checksum(a), tg_corpus_checksum(b));
  /* Text, not noise: lower-case letters, spaces, some sentence ends. */
  const uint8_t *p = tg_corpus_bytes(a);
  size_t spaces = 0, stops = 0;
  for (size_t i = 0; i < tg_corpus_size(a); i++) {
    assert_true((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') || p[i] == ' ' ||
                p[i] == '.' || p[i] == '\n');
    spaces += p[i] == ' ';
    stops += p[i] == '.';
  }
  assert_true(spaces > 5000 && stops > 500);
  tg_corpus_close(a);
  tg_corpus_close(b);
}

/* Sample i is the T+1 bytes at offset(seed, i), the same from any handle
 * and in any query order; another seed gives another order. */
static void test_sample_is_function_of_index(void **state) {
  (void)state;
  tg_corpus *a = open_or_fail(NULL, T, 7), *b = open_or_fail(NULL, T, 7);
  tg_corpus *other = open_or_fail(NULL, T, 8);
  uint8_t x[T + 1], y[T + 1];
  size_t differ = 0;
  for (uint64_t i = 0; i < 200; i++) {
    uint64_t j = 199 - i; /* b walks backwards */
    assert_int_equal(tg_corpus_sample(a, j, x), TG_MODEL_OK);
    assert_int_equal(tg_corpus_sample(b, j, y), TG_MODEL_OK);
    assert_memory_equal(x, y, sizeof x);
    size_t off = tg_corpus_offset(a, j);
    assert_true(off + T + 1 <= tg_corpus_size(a));
    assert_memory_equal(x, tg_corpus_bytes(a) + off, sizeof x);
    differ += tg_corpus_offset(other, j) != off;
  }
  assert_true(differ > 190);
  /* A batch is its samples, inputs and targets shifted by one byte. */
  uint8_t tok[3 * T], tgt[3 * T];
  assert_int_equal(tg_corpus_batch(a, 1000, 3, tok, tgt), TG_MODEL_OK);
  for (uint64_t s = 0; s < 3; s++) {
    tg_corpus_sample(a, 1000 + s, x);
    assert_memory_equal(tok + s * T, x, T);
    assert_memory_equal(tgt + s * T, x + 1, T);
  }
  assert_int_equal(tg_corpus_sample(a, 0, NULL), TG_MODEL_EINVAL);
  tg_corpus_close(a);
  tg_corpus_close(b);
  tg_corpus_close(other);
}

/* The samples a step trains on, gathered from the ranks of a world of W in
 * global chunk order, are the same for every W. */
static void test_samples_do_not_depend_on_world(void **state) {
  (void)state;
  tg_corpus *c = open_or_fail(NULL, T, 3);
  const tg_batch_plan plan = {.global_batch = 24, .micro_batch = 2};
  uint32_t chunks = tg_step_chunk_count(&plan);
  assert_int_equal(chunks, 12);
  static uint8_t ref[4][24][T + 1], got[4][24][T + 1];
  const uint32_t worlds[] = {1, 2, 3, 4, 5, 8, 12, 16};
  for (size_t w = 0; w < sizeof worlds / sizeof worlds[0]; w++) {
    memset(got, 0, sizeof got);
    for (uint64_t step = 0; step < 4; step++)
      for (uint32_t r = 0; r < worlds[w]; r++) {
        size_t cb, ce;
        assert_int_equal(tg_shard_range(chunks, worlds[w], r, &cb, &ce), TG_MODEL_OK);
        for (size_t k = cb; k < ce; k++)
          for (uint32_t s = 0; s < plan.micro_batch; s++) {
            uint64_t index = tg_step_first_sample(&plan, step, (uint32_t)k) + s;
            assert_int_equal(tg_corpus_sample(c, index, got[step][k * plan.micro_batch + s]),
                             TG_MODEL_OK);
          }
      }
    if (w == 0) memcpy(ref, got, sizeof ref);
    assert_memory_equal(got, ref, sizeof ref);
  }
  tg_corpus_close(c);
}

static void test_bad_paths(void **state) {
  (void)state;
  char err[256] = "";
  assert_null(tg_corpus_open("/nonexistent/corpus.txt", T, 1, err, sizeof err));
  assert_non_null(strstr(err, "/nonexistent/corpus.txt"));
  char path[] = "/tmp/tg_corpus_test_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "short", 5), 5);
  close(fd);
  assert_null(tg_corpus_open(path, T, 1, err, sizeof err));
  assert_non_null(strstr(err, "shorter"));
  tg_corpus *c = open_or_fail(path, 4, 1); /* 5 bytes hold one sample of 4 + 1 */
  assert_int_equal(tg_corpus_offset(c, 12345), 0);
  tg_corpus_close(c);
  unlink(path);
  assert_null(tg_corpus_open(NULL, 0, 1, err, sizeof err));
  assert_null(tg_corpus_open(NULL, TG_CORPUS_FALLBACK_BYTES, 1, err, sizeof err));
  tg_corpus_close(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_default_corpus),
      cmocka_unit_test(test_generated_fallback),
      cmocka_unit_test(test_sample_is_function_of_index),
      cmocka_unit_test(test_samples_do_not_depend_on_world),
      cmocka_unit_test(test_bad_paths),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
