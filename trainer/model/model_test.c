/* Tests for the reference model: the parameter-count formula (up to the
 * 1B configuration, without allocating it), the flat layout, gradients
 * against finite differences, refusal of bad input, and that training on
 * the real corpus lowers the loss. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "trainer/model/model.h"
#include "trainer/model/sim_world.h"

static const tg_model_config tiny = {.context = 16, .width = 32, .depth = 2, .use_position = 1};

static tg_model *make(const tg_model_config *cfg, uint32_t max_batch) {
  char err[128] = "";
  tg_model *m = tg_model_new(cfg, max_batch, err, sizeof err);
  if (!m) fail_msg("tg_model_new: %s", err);
  return m;
}

/* The formula of model.h, written independently of model.c. */
static uint64_t formula(uint64_t T, uint64_t D, uint64_t N, int pos) {
  return 512 * D + 256 + (pos ? T * D : 0) + N * (8 * D * D + 7 * D) + 2 * D;
}

static void test_param_count(void **state) {
  (void)state;
  assert_int_equal(tg_model_param_count(&tiny), 34048);
  assert_int_equal(tg_model_param_count(&tiny), formula(16, 32, 2, 1));
  tg_model_config big = {.context = 1024, .width = 2048, .depth = 30, .use_position = 1};
  assert_int_equal(tg_model_param_count(&big), 1010213120ull);
  assert_int_equal(tg_model_param_count(&big), formula(1024, 2048, 30, 1));
  assert_true(tg_model_param_count(&big) > 1000000000ull);
  tg_model_config nopos = {.context = 7, .width = 5, .depth = 3, .use_position = 0};
  assert_int_equal(tg_model_param_count(&nopos), formula(7, 5, 3, 0));
  tg_model_config custom = {.context = 4, .width = 6, .hidden = 10, .depth = 2};
  assert_int_equal(tg_model_param_count(&custom), 2 * 256 * 6 + 256 + 2 * (2 * 10 * 6 + 10 + 18) + 12);
  tg_model_config bad = tiny;
  bad.width = 0;
  assert_int_equal(tg_model_param_count(&bad), 0);
  bad = tiny;
  bad.context = 0;
  assert_int_equal(tg_model_param_count(&bad), 0);
  assert_int_equal(tg_model_param_count(NULL), 0);
  char err[128] = "";
  assert_null(tg_model_new(&bad, 1, err, sizeof err));
  assert_true(strlen(err) > 0);
  assert_null(tg_model_new(&tiny, 0, err, sizeof err));
}

/* The tensors tile [0, P) in order; decay exactly on the 2-D ones. */
static void test_layout(void **state) {
  (void)state;
  tg_model *m = make(&tiny, 1);
  size_t at = 0, n = tg_model_tensor_count(m);
  assert_int_equal(n, 2 + 6 * 2 + 4);
  for (size_t i = 0; i < n; i++) {
    tg_model_tensor t;
    assert_int_equal(tg_model_tensor_at(m, i, &t), TG_MODEL_OK);
    assert_int_equal(t.offset, at);
    int two_d = t.count == 256 * 32 || t.count == 16 * 32 || t.count == 128 * 32;
    assert_int_equal(t.decay, two_d);
    at += t.count;
  }
  assert_int_equal(at, tg_model_num_params(m));
  tg_model_tensor t;
  assert_int_equal(tg_model_tensor_at(m, n, &t), TG_MODEL_EINVAL);
  assert_int_equal(tg_model_tensor_at(m, 4, &t), TG_MODEL_OK);
  assert_string_equal(t.name, "blocks.0.w1");
  tg_model_free(m);
}

/* A layout-only model has the same table and initialisation as a full one,
 * and no arrays to compute with. */
static void test_layout_only(void **state) {
  (void)state;
  tg_model *full = make(&tiny, 2);
  char err[128] = "";
  tg_model *lay = tg_model_layout_new(&tiny, err, sizeof err);
  assert_non_null(lay);
  assert_int_equal(tg_model_num_params(lay), tg_model_num_params(full));
  assert_int_equal(tg_model_tensor_count(lay), tg_model_tensor_count(full));
  for (size_t i = 0; i < tg_model_tensor_count(lay); i++) {
    tg_model_tensor a, b;
    assert_int_equal(tg_model_tensor_at(lay, i, &a), TG_MODEL_OK);
    assert_int_equal(tg_model_tensor_at(full, i, &b), TG_MODEL_OK);
    assert_string_equal(a.name, b.name);
    assert_int_equal(a.offset, b.offset);
    assert_int_equal(a.count, b.count);
    assert_int_equal(a.decay, b.decay);
  }
  assert_null(tg_model_params(lay));
  assert_null(tg_model_grads(lay));
  size_t P = tg_model_num_params(lay);
  float *p = malloc(P * sizeof(float));
  assert_non_null(p);
  tg_model_init_params(full, 7);
  tg_model_init_params_at(lay, p, 7);
  assert_memory_equal(p, tg_model_params(full), P * sizeof(float));
  uint8_t tok[16] = {0};
  float loss;
  assert_int_equal(tg_model_forward(lay, tok, tok, 1, &loss), TG_MODEL_EINVAL);
  assert_int_equal(tg_model_backward(lay), TG_MODEL_EINVAL);
  tg_model_config bad = tiny;
  bad.width = 0;
  assert_null(tg_model_layout_new(&bad, err, sizeof err));
  free(p);
  tg_model_free(lay);
  tg_model_free(full);
}

static void random_bytes(uint8_t *p, size_t n, uint32_t seed) {
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1664525u + 1013904223u;
    p[i] = (uint8_t)(seed >> 24);
  }
}

/* Larger, varied parameters than the init so that every gradient is
 * far above float noise in the finite differences. */
static void perturb_params(tg_model *m, uint32_t seed) {
  float *p = tg_model_params(m);
  for (size_t i = 0; i < tg_model_num_params(m); i++) {
    seed = seed * 1664525u + 1013904223u;
    p[i] += ((float)(seed >> 8) / 16777216.0f - 0.5f) * 0.6f;
  }
}

static float loss_of(tg_model *m, const uint8_t *tok, const uint8_t *tgt, uint32_t batch) {
  float loss;
  assert_int_equal(tg_model_forward(m, tok, tgt, batch, &loss), TG_MODEL_OK);
  return loss;
}

/* Checks d loss / d p[i] by central differences for the given indices
 * (all of them if idx is NULL). */
static void gradcheck(tg_model *m, const uint8_t *tok, const uint8_t *tgt, uint32_t batch,
                      const size_t *idx, size_t count, float h) {
  size_t P = tg_model_num_params(m);
  float *grads = malloc(P * sizeof(float));
  assert_non_null(grads);
  loss_of(m, tok, tgt, batch);
  assert_int_equal(tg_model_backward(m), TG_MODEL_OK);
  memcpy(grads, tg_model_grads(m), P * sizeof(float));
  float *p = tg_model_params(m);
  size_t checked = 0, nonzero = 0;
  double worst = 0.0;
  for (size_t k = 0; k < count; k++) {
    size_t i = idx ? idx[k] : k;
    float saved = p[i];
    p[i] = saved + h;
    double up = loss_of(m, tok, tgt, batch);
    p[i] = saved - h;
    double down = loss_of(m, tok, tgt, batch);
    p[i] = saved;
    double numeric = (up - down) / (2.0 * (double)h);
    /* Float rounding in the loss (~1e-7 relative) becomes up to ~1e-4 in
     * the difference quotient: allow that, plus 2 % of the magnitude. */
    double mag = fabs(numeric) > fabs(grads[i]) ? fabs(numeric) : fabs(grads[i]);
    double err = fabs(numeric - grads[i]) / (1e-4 + 2e-2 * mag);
    if (err > worst) worst = err;
    if (err > 1.0)
      fail_msg("param %zu: analytic %.6g numeric %.6g (rel err %.3g)", i, grads[i], numeric, err);
    checked++;
    nonzero += fabs(grads[i]) > 1e-3;
  }
  print_message("gradcheck: %zu params, %zu with |g| > 1e-3, worst error %.2f of the tolerance\n", checked,
                nonzero, worst);
  assert_true(nonzero * 4 > checked); /* not a vacuous pass on zeros */
  free(grads);
}

/* Every parameter of a micro model, with and without positions. */
static void test_gradcheck_micro(void **state) {
  (void)state;
  for (int pos = 0; pos <= 1; pos++) {
    tg_model_config cfg = {.context = 3, .width = 4, .depth = 2, .use_position = pos};
    tg_model *m = make(&cfg, 2);
    tg_model_init_params(m, 7);
    perturb_params(m, 11);
    uint8_t tok[6], tgt[6];
    random_bytes(tok, sizeof tok, 1);
    random_bytes(tgt, sizeof tgt, 2);
    /* Only the rows of wte for tokens that occur get gradient; check the
     * whole array anyway (zeros must match zeros), but count the rest. */
    size_t P = tg_model_num_params(m);
    size_t *idx = malloc(P * sizeof *idx), n = 0;
    for (size_t i = 0; i < P; i++) {
      int wte_row_used = 0;
      if (i < 256 * 4)
        for (size_t k = 0; k < 6; k++) wte_row_used |= tok[k] == i / 4;
      if (i >= 256 * 4 || wte_row_used) idx[n++] = i;
    }
    gradcheck(m, tok, tgt, 2, idx, n, 1e-2f);
    free(idx);
    tg_model_free(m);
  }
}

/* The tests' model (D=32, N=2, T=16): a sample of every tensor. */
static void test_gradcheck_tiny(void **state) {
  (void)state;
  tg_model *m = make(&tiny, 2);
  tg_model_init_params(m, 3);
  perturb_params(m, 5);
  uint8_t tok[32], tgt[32];
  random_bytes(tok, sizeof tok, 3);
  random_bytes(tgt, sizeof tgt, 4);
  size_t idx[16 * 18], n = 0;
  for (size_t t = 0; t < tg_model_tensor_count(m); t++) {
    tg_model_tensor info;
    tg_model_tensor_at(m, t, &info);
    for (size_t k = 0; k < 16; k++) {
      size_t i = info.offset + (k * 7919) % info.count;
      if (t == 0) i = (size_t)tok[k % 32] * 32 + k; /* a used row of wte */
      idx[n++] = i;
    }
  }
  gradcheck(m, tok, tgt, 2, idx, n, 1e-2f);
  tg_model_free(m);
}

static void test_bad_input(void **state) {
  (void)state;
  tg_model *m = make(&tiny, 2);
  uint8_t tok[48] = {0};
  float loss;
  assert_int_equal(tg_model_backward(m), TG_MODEL_EINVAL); /* no forward yet */
  assert_int_equal(tg_model_forward(m, tok, tok, 3, &loss), TG_MODEL_EINVAL);
  assert_int_equal(tg_model_forward(m, tok, tok, 0, &loss), TG_MODEL_EINVAL);
  assert_int_equal(tg_model_forward(m, NULL, tok, 1, &loss), TG_MODEL_EINVAL);
  assert_int_equal(tg_model_forward(NULL, tok, tok, 1, &loss), TG_MODEL_EINVAL);
  /* Zero parameters: uniform prediction, loss ln 256. */
  assert_int_equal(tg_model_forward(m, tok, tok, 1, &loss), TG_MODEL_OK);
  assert_float_equal(loss, logf(256.0f), 1e-5);
  assert_int_equal(tg_model_backward(m), TG_MODEL_OK);
  assert_int_equal(tg_model_backward(m), TG_MODEL_EINVAL); /* consumed */
  tg_model_free(m);
  tg_model_free(NULL);
}

/* ~150 steps on the real corpus (GPL-3, or the generated fallback): the
 * loss on held-out samples falls far below its start. */
static void test_loss_goes_down(void **state) {
  (void)state;
  char err[128] = "";
  tg_corpus *c = tg_corpus_open(NULL, tiny.context, 42, err, sizeof err);
  if (!c) fail_msg("tg_corpus_open: %s", err);
  tg_adamw_config opt = {.lr = 1e-2f, .lr_min = 1e-3f, .warmup_steps = 10, .decay_steps = 150,
                         .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.01f,
                         .grad_clip = 1.0f};
  tg_batch_plan plan = {.global_batch = 8, .micro_batch = 4};
  sim_world *w = sim_world_new(&tiny, 1, &opt, &plan, c, 2);
  assert_non_null(w);
  tg_model *m = sim_world_model(w);
  /* Held-out: sample indices far beyond any the run trains on. */
  uint8_t tok[4 * 16], tgt[4 * 16];
  assert_int_equal(tg_corpus_batch(c, 1u << 30, 4, tok, tgt), TG_MODEL_OK);
  float before = loss_of(m, tok, tgt, 4), first = 0, last = 0;
  for (int s = 0; s < 150; s++) {
    assert_int_equal(sim_world_step(w, &last), TG_MODEL_OK);
    if (s == 0) first = last;
  }
  float after = loss_of(m, tok, tgt, 4);
  print_message("corpus %s: train loss %.3f -> %.3f, held-out %.3f -> %.3f\n",
                tg_corpus_source_of(c) == TG_CORPUS_FILE ? "file" : "generated", first, last,
                before, after);
  assert_true(before > 5.0f);
  assert_true(after < before - 1.5f);
  assert_true(last < first - 1.5f);
  sim_world_free(w);
  tg_corpus_close(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_param_count),     cmocka_unit_test(test_layout),
      cmocka_unit_test(test_gradcheck_micro), cmocka_unit_test(test_gradcheck_tiny),
      cmocka_unit_test(test_bad_input),       cmocka_unit_test(test_loss_goes_down),
      cmocka_unit_test(test_layout_only),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
