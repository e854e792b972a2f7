/* The project invariant, end to end on the CPU path: training the tests'
 * model for several steps with the global batch split over 1, 2, 3, 4 and
 * 8 simulated ranks, and through world-size changes mid-run (8 -> 6 -> 3
 * -> 8, optimizer state resharded each time), ends with parameters and
 * AdamW moments BITWISE equal to the single-rank run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "trainer/model/sim_world.h"

enum { STEPS = 6 };

static const tg_model_config model_cfg = {.context = 16, .width = 32, .depth = 2,
                                          .use_position = 1};
static const tg_adamw_config opt_cfg = {.lr = 1e-2f, .lr_min = 1e-3f, .warmup_steps = 2,
                                        .decay_steps = 10, .beta1 = 0.9f, .beta2 = 0.95f,
                                        .eps = 1e-8f, .weight_decay = 0.1f, .grad_clip = 0.5f};
/* 24 samples per step in chunks of 1: every world size above divides the
 * work differently (W = 3: 8 chunks each; W = 8: 3 each). */
static const tg_batch_plan plan = {.global_batch = 24, .micro_batch = 1};

typedef struct {
  size_t P;
  float *params, *m, *v;
  float last_loss;
} result;

/* Runs STEPS steps, changing the world size to sizes[i] before step i. */
static result train(const tg_corpus *c, const uint32_t sizes[STEPS]) {
  sim_world *w = sim_world_new(&model_cfg, 99, &opt_cfg, &plan, c, sizes[0]);
  assert_non_null(w);
  result r;
  for (int s = 0; s < STEPS; s++) {
    if (s > 0 && sizes[s] != sizes[s - 1])
      assert_int_equal(sim_world_resize(w, sizes[s]), TG_MODEL_OK);
    assert_int_equal(sim_world_step(w, &r.last_loss), TG_MODEL_OK);
  }
  assert_int_equal(sim_world_steps_done(w), STEPS);
  tg_model *m = sim_world_model(w);
  r.P = tg_model_num_params(m);
  r.params = malloc(r.P * sizeof(float));
  r.m = malloc(r.P * sizeof(float));
  r.v = malloc(r.P * sizeof(float));
  assert_true(r.params && r.m && r.v);
  memcpy(r.params, tg_model_params(m), r.P * sizeof(float));
  assert_int_equal(sim_world_gather_moments(w, r.m, r.v), TG_MODEL_OK);
  sim_world_free(w);
  return r;
}

static void assert_same(const result *a, const result *b) {
  assert_int_equal(a->P, b->P);
  assert_memory_equal(a->params, b->params, a->P * sizeof(float));
  assert_memory_equal(a->m, b->m, a->P * sizeof(float));
  assert_memory_equal(a->v, b->v, a->P * sizeof(float));
  assert_memory_equal(&a->last_loss, &b->last_loss, sizeof(float));
}

static void free_result(result *r) {
  free(r->params);
  free(r->m);
  free(r->v);
}

static tg_corpus *corpus;

static int setup(void **state) {
  (void)state;
  corpus = tg_corpus_open(NULL, model_cfg.context, 5, NULL, 0);
  return corpus ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  tg_corpus_close(corpus);
  return 0;
}

static void test_world_sizes(void **state) {
  (void)state;
  const uint32_t one[STEPS] = {1, 1, 1, 1, 1, 1};
  result ref = train(corpus, one);
  const uint32_t worlds[] = {2, 3, 4, 8};
  for (size_t k = 0; k < 4; k++) {
    uint32_t sizes[STEPS];
    for (int s = 0; s < STEPS; s++) sizes[s] = worlds[k];
    result got = train(corpus, sizes);
    assert_same(&got, &ref);
    free_result(&got);
  }
  /* The parameters did move: the test compares trained states. */
  tg_model *fresh = tg_model_new(&model_cfg, 1, NULL, 0);
  assert_non_null(fresh);
  tg_model_init_params(fresh, 99);
  assert_true(memcmp(tg_model_params(fresh), ref.params, ref.P * sizeof(float)) != 0);
  tg_model_free(fresh);
  free_result(&ref);
}

/* Failures: the world shrinks 8 -> 6 -> 3 and grows back to 8. */
static void test_world_changes_mid_run(void **state) {
  (void)state;
  const uint32_t steady[STEPS] = {8, 8, 8, 8, 8, 8};
  const uint32_t faulty[STEPS] = {8, 6, 6, 3, 8, 8};
  result ref = train(corpus, steady), got = train(corpus, faulty);
  assert_same(&got, &ref);
  free_result(&ref);
  free_result(&got);
}

/* Why the int64 sums: the same 24 chunk gradients summed in float, once in
 * order (one rank) and once as 8 ranks of 3 then the 8 partial sums, do
 * not give the same bits; the fixed-point path above does. */
static void test_float_sums_would_differ(void **state) {
  (void)state;
  tg_model *m = tg_model_new(&model_cfg, 1, NULL, 0);
  assert_non_null(m);
  tg_model_init_params(m, 99);
  size_t P = tg_model_num_params(m);
  float *chunk = calloc(24 * P, sizeof(float)), *one = calloc(P, sizeof(float));
  float *eight = calloc(P, sizeof(float)), *part = calloc(P, sizeof(float));
  assert_true(chunk && one && eight && part);
  uint8_t tok[16], tgt[16];
  for (uint32_t k = 0; k < 24; k++) {
    float loss;
    assert_int_equal(tg_corpus_batch(corpus, k, 1, tok, tgt), TG_MODEL_OK);
    assert_int_equal(tg_model_forward(m, tok, tgt, 1, &loss), TG_MODEL_OK);
    assert_int_equal(tg_model_backward(m), TG_MODEL_OK);
    memcpy(chunk + k * P, tg_model_grads(m), P * sizeof(float));
  }
  for (uint32_t k = 0; k < 24; k++)
    for (size_t i = 0; i < P; i++) one[i] += chunk[k * P + i];
  for (uint32_t r = 0; r < 8; r++) {
    memset(part, 0, P * sizeof(float));
    for (uint32_t k = 3 * r; k < 3 * r + 3; k++)
      for (size_t i = 0; i < P; i++) part[i] += chunk[k * P + i];
    for (size_t i = 0; i < P; i++) eight[i] += part[i];
  }
  assert_true(memcmp(one, eight, P * sizeof(float)) != 0);
  free(chunk);
  free(one);
  free(eight);
  free(part);
  tg_model_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_world_sizes),
      cmocka_unit_test(test_world_changes_mid_run),
      cmocka_unit_test(test_float_sums_would_differ),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
