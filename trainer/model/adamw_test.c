/* Tests for ZeRO-1 AdamW: the learning-rate schedule, clipping by a global
 * norm passed in, W shards giving bitwise the parameters of one unsharded
 * optimizer, optimizer state carried through 8 -> 6 -> 8 resharding
 * with every bit preserved, and the per-step scalars it shares. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "trainer/model/adamw.h"
#include "trainer/model/shard.h"

enum { P = 1001, STEPS = 7 };

static const tg_adamw_config cfg = {.lr = 1e-2f, .lr_min = 1e-3f, .warmup_steps = 3,
                                    .decay_steps = 19, .beta1 = 0.9f, .beta2 = 0.95f,
                                    .eps = 1e-8f, .weight_decay = 0.1f, .grad_clip = 1.0f};
/* Decay on two spans, one straddling several shard boundaries. */
static const tg_adamw_span spans[] = {{600, 1001}, {10, 400}};

static void gradient(float *g, int step) {
  uint32_t s = 12345u + (uint32_t)step * 77u;
  for (int i = 0; i < P; i++) {
    s = s * 1664525u + 1013904223u;
    g[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 0.2f;
  }
}

static double norm_of(const float *g) {
  double s = 0.0;
  for (int i = 0; i < P; i++) s += (double)g[i] * g[i];
  return sqrt(s);
}

static tg_adamw **make_world(uint32_t world) {
  tg_adamw **opts = calloc(world, sizeof *opts);
  assert_non_null(opts);
  for (uint32_t r = 0; r < world; r++) {
    size_t b, e;
    assert_int_equal(tg_shard_range(P, world, r, &b, &e), TG_MODEL_OK);
    char err[128] = "";
    opts[r] = tg_adamw_new(&cfg, P, b, e, spans, 2, err, sizeof err);
    if (!opts[r]) fail_msg("tg_adamw_new: %s", err);
  }
  return opts;
}

static void free_world(tg_adamw **opts, uint32_t world) {
  for (uint32_t r = 0; r < world; r++) tg_adamw_free(opts[r]);
  free(opts);
}

/* Steps [from, to) of every rank of a world on params. */
static void run(tg_adamw **opts, uint32_t world, float *params, int from, int to) {
  float g[P];
  for (int s = from; s < to; s++) {
    gradient(g, s);
    double norm = norm_of(g);
    for (uint32_t r = 0; r < world; r++)
      assert_int_equal(tg_adamw_update(opts[r], params, g, norm), TG_MODEL_OK);
  }
}

static void init_params(float *p) {
  for (int i = 0; i < P; i++) p[i] = (float)(i % 13) * 0.1f - 0.6f;
}

/* A world re-formed at new_world, its state cut from the old one's shards. */
static tg_adamw **reshard(tg_adamw **old, uint32_t old_world, uint32_t new_world) {
  const float **m = calloc(old_world, sizeof *m), **v = calloc(old_world, sizeof *v);
  assert_true(m && v);
  for (uint32_t r = 0; r < old_world; r++) {
    m[r] = tg_adamw_m(old[r]);
    v[r] = tg_adamw_v(old[r]);
  }
  tg_adamw **opts = make_world(new_world);
  for (uint32_t r = 0; r < new_world; r++)
    assert_int_equal(tg_adamw_load_shards(opts[r], old_world, m, v, tg_adamw_step(old[0])),
                     TG_MODEL_OK);
  free(m);
  free(v);
  return opts;
}

static void test_lr_schedule(void **state) {
  (void)state;
  assert_float_equal(tg_adamw_lr(&cfg, 0), 1e-2f / 3, 1e-9);
  assert_float_equal(tg_adamw_lr(&cfg, 2), 1e-2f, 1e-9);
  assert_float_equal(tg_adamw_lr(&cfg, 3), 1e-2f, 1e-9);             /* cosine starts at peak */
  assert_float_equal(tg_adamw_lr(&cfg, 11), (1e-2f + 1e-3f) / 2, 1e-6); /* half-way: mean */
  assert_float_equal(tg_adamw_lr(&cfg, 19), 1e-3f, 1e-9);
  assert_float_equal(tg_adamw_lr(&cfg, 1000), 1e-3f, 1e-9);
  for (uint64_t s = 3; s < 19; s++) assert_true(tg_adamw_lr(&cfg, s + 1) <= tg_adamw_lr(&cfg, s));
  tg_adamw_config flat = cfg;
  flat.warmup_steps = 0;
  flat.decay_steps = 0;
  assert_true(tg_adamw_lr(&flat, 12345) == flat.lr);
}

static void test_sharded_equals_unsharded(void **state) {
  (void)state;
  float ref[P], got[P];
  init_params(ref);
  tg_adamw **one = make_world(1);
  run(one, 1, ref, 0, STEPS);
  const uint32_t worlds[] = {2, 3, 8, 13};
  for (size_t w = 0; w < 4; w++) {
    init_params(got);
    tg_adamw **opts = make_world(worlds[w]);
    run(opts, worlds[w], got, 0, STEPS);
    assert_memory_equal(got, ref, sizeof ref);
    assert_int_equal(tg_adamw_step(opts[0]), STEPS);
    free_world(opts, worlds[w]);
  }
  free_world(one, 1);
}

static void test_reshard_8_6_8(void **state) {
  (void)state;
  float ref[P], got[P];
  init_params(ref);
  tg_adamw **one = make_world(1);
  run(one, 1, ref, 0, 3 * STEPS);

  init_params(got);
  tg_adamw **w8 = make_world(8);
  run(w8, 8, got, 0, STEPS);
  tg_adamw **w6 = reshard(w8, 8, 6);
  run(w6, 6, got, STEPS, 2 * STEPS);
  tg_adamw **w8b = reshard(w6, 6, 8);
  /* 8 -> 6 -> 8 with no step between would give the same shards back. */
  tg_adamw **w6b = reshard(w8b, 8, 6);
  tg_adamw **w8c = reshard(w6b, 6, 8);
  for (uint32_t r = 0; r < 8; r++) {
    size_t n = tg_adamw_end(w8b[r]) - tg_adamw_begin(w8b[r]);
    assert_memory_equal(tg_adamw_m(w8c[r]), tg_adamw_m(w8b[r]), n * sizeof(float));
    assert_memory_equal(tg_adamw_v(w8c[r]), tg_adamw_v(w8b[r]), n * sizeof(float));
    assert_int_equal(tg_adamw_step(w8c[r]), 2 * STEPS);
  }
  run(w8c, 8, got, 2 * STEPS, 3 * STEPS);
  assert_memory_equal(got, ref, sizeof ref);
  /* And the moments match the unsharded optimizer's. */
  float m[P];
  const float *mshards[8];
  for (uint32_t r = 0; r < 8; r++) mshards[r] = tg_adamw_m(w8c[r]);
  assert_int_equal(tg_shard_copy(P, 8, mshards, 0, P, m), TG_MODEL_OK);
  assert_memory_equal(m, tg_adamw_m(one[0]), sizeof m);
  free_world(one, 1);
  free_world(w8, 8);
  free_world(w6, 6);
  free_world(w8b, 8);
  free_world(w6b, 6);
  free_world(w8c, 8);
}

/* Clipping: a norm above grad_clip scales the gradient by clip / norm. */
static void test_clip_and_decay(void **state) {
  (void)state;
  tg_adamw_config c = cfg;
  c.weight_decay = 0.0f;
  tg_adamw *a = tg_adamw_new(&c, P, 0, P, NULL, 0, NULL, 0);
  tg_adamw *b = tg_adamw_new(&c, P, 0, P, NULL, 0, NULL, 0);
  assert_true(a && b);
  float g[P], scaled[P], pa[P], pb[P];
  gradient(g, 0);
  for (int i = 0; i < P; i++) scaled[i] = g[i] * (float)(1.0 / 4.0);
  init_params(pa);
  init_params(pb);
  assert_int_equal(tg_adamw_update(a, pa, g, 4.0), TG_MODEL_OK);        /* clipped by 1/4 */
  assert_int_equal(tg_adamw_update(b, pb, scaled, 0.5), TG_MODEL_OK);   /* below the clip */
  assert_memory_equal(pa, pb, sizeof pa);
  assert_int_equal(tg_adamw_update(a, pa, g, NAN), TG_MODEL_EINVAL);
  assert_int_equal(tg_adamw_update(a, pa, g, -1.0), TG_MODEL_EINVAL);
  assert_int_equal(tg_adamw_update(a, pa, g, INFINITY), TG_MODEL_ENONFINITE);
  tg_adamw_free(a);
  tg_adamw_free(b);
  /* Decay only inside the spans: with a zero gradient, parameters outside
   * stay put and those inside shrink. */
  tg_adamw *d = tg_adamw_new(&cfg, P, 0, P, spans, 2, NULL, 0);
  assert_non_null(d);
  float zero[P] = {0}, p[P];
  for (int i = 0; i < P; i++) p[i] = 1.0f;
  assert_int_equal(tg_adamw_update(d, p, zero, 0.0), TG_MODEL_OK);
  assert_true(p[5] == 1.0f && p[400] == 1.0f && p[599] == 1.0f);
  assert_true(p[10] < 1.0f && p[399] < 1.0f && p[600] < 1.0f && p[1000] < 1.0f);
  tg_adamw_free(d);
}

/* The shared scalars: what an update elsewhere (the GPU) takes from here. */
static void test_scalars(void **state) {
  (void)state;
  tg_adamw_scalars s;
  assert_int_equal(tg_adamw_scalars_at(&cfg, 0, 4.0, &s), TG_MODEL_OK);
  assert_true(s.lr == tg_adamw_lr(&cfg, 0));
  assert_true(s.bias1 == (float)(1.0 - pow(cfg.beta1, 1.0)));
  assert_true(s.bias2 == (float)(1.0 - pow(cfg.beta2, 1.0)));
  assert_true(s.clip_scale == 0.25f);
  assert_int_equal(tg_adamw_scalars_at(&cfg, 5, 0.5, &s), TG_MODEL_OK);
  assert_true(s.clip_scale == 1.0f && s.lr == tg_adamw_lr(&cfg, 5));
  assert_int_equal(tg_adamw_scalars_at(&cfg, 0, NAN, &s), TG_MODEL_EINVAL);
  assert_int_equal(tg_adamw_scalars_at(&cfg, 0, INFINITY, &s), TG_MODEL_ENONFINITE);
  tg_adamw_config bad = cfg;
  bad.eps = 0.0f;
  assert_int_equal(tg_adamw_scalars_at(&bad, 0, 0.0, &s), TG_MODEL_EINVAL);
}

static void test_bad_config(void **state) {
  (void)state;
  char err[128] = "";
  tg_adamw_config c = cfg;
  c.beta2 = 1.0f;
  assert_null(tg_adamw_new(&c, P, 0, P, NULL, 0, err, sizeof err));
  assert_true(strlen(err) > 0);
  c = cfg;
  c.lr = 0.0f;
  assert_null(tg_adamw_new(&c, P, 0, P, NULL, 0, err, sizeof err));
  assert_null(tg_adamw_new(&cfg, P, 5, 4, NULL, 0, err, sizeof err));
  assert_null(tg_adamw_new(&cfg, P, 0, P + 1, NULL, 0, err, sizeof err));
  tg_adamw_span outside = {0, P + 1};
  assert_null(tg_adamw_new(&cfg, P, 0, P, &outside, 1, err, sizeof err));
  assert_null(tg_adamw_new(NULL, P, 0, P, NULL, 0, err, sizeof err));
  /* An empty slice (more ranks than parameters) is valid and a no-op. */
  tg_adamw *empty = tg_adamw_new(&cfg, P, 7, 7, spans, 2, err, sizeof err);
  assert_non_null(empty);
  float p[P], g[P] = {0};
  init_params(p);
  assert_int_equal(tg_adamw_update(empty, p, g, 0.0), TG_MODEL_OK);
  tg_adamw_free(empty);
  tg_adamw_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lr_schedule),   cmocka_unit_test(test_sharded_equals_unsharded),
      cmocka_unit_test(test_reshard_8_6_8), cmocka_unit_test(test_clip_and_decay),
      cmocka_unit_test(test_bad_config),    cmocka_unit_test(test_scalars),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
