/* The GPU model against the CPU one (trainer/model), on the tests' tiny
 * model: forward and backward agree to float tolerance; the fixed-point
 * conversion, the mean and the squared norm give the CPU's integers and
 * floats exactly; AdamW agrees with the CPU's update; two GPU training
 * runs end bitwise equal; a snapshot copied to pinned host memory while
 * compute goes on holds the state it was taken of, restores into a fresh
 * GPU model and optimizer that then continue bitwise like the original,
 * and means the same to the CPU model. Without a GPU (CI, the build
 * machine) every test prints "no GPU: skipped" and skips, as
 * trainer/comm/comm_nccl_test.c does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "trainer/model/adamw.h"
#include "trainer/model/corpus.h"
#include "trainer/model/cuda/gpu.h"
#include "trainer/model/cuda/gpu_adamw.h"
#include "trainer/model/cuda/gpu_model.h"
#include "trainer/model/cuda/gpu_step.h"
#include "trainer/model/fixed.h"
#include "trainer/model/model.h"
#include "trainer/model/shard.h"
#include "trainer/model/step.h"

static const tg_model_config tiny = {.context = 16, .width = 32, .depth = 2, .use_position = 1};
static const tg_adamw_config opt_cfg = {.lr = 1e-2f, .lr_min = 1e-3f, .warmup_steps = 2,
                                        .decay_steps = 10, .beta1 = 0.9f, .beta2 = 0.95f,
                                        .eps = 1e-8f, .weight_decay = 0.1f, .grad_clip = 0.5f};
static const tg_batch_plan plan = {.global_batch = 8, .micro_batch = 4};

/* The GPU of this test ($TG_CUDA_DEVICE, else 0), or a skip. */
static tg_gpu *open_gpu_or_skip(void) {
  int count = 0;
  char err[256] = "";
  if (tg_gpu_device_count(&count, err, sizeof err) != TG_MODEL_OK || count == 0) {
    printf("no GPU: skipped\n");
    skip();
  }
  const char *env = getenv("TG_CUDA_DEVICE");
  tg_gpu *g = tg_gpu_open(env ? atoi(env) : 0, err, sizeof err);
  if (!g) fail_msg("tg_gpu_open: %s", err);
  return g;
}

static tg_gpu_model *gpu_model(tg_gpu *g, const tg_model_config *cfg, uint32_t max_batch) {
  char err[256] = "";
  tg_gpu_model *m = tg_gpu_model_new(g, cfg, max_batch, err, sizeof err);
  if (!m) fail_msg("tg_gpu_model_new: %s", err);
  return m;
}

static tg_model *cpu_model(const tg_model_config *cfg, uint32_t max_batch) {
  char err[256] = "";
  tg_model *m = tg_model_new(cfg, max_batch, err, sizeof err);
  if (!m) fail_msg("tg_model_new: %s", err);
  return m;
}

static void random_bytes(uint8_t *p, size_t n, uint32_t seed) {
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1664525u + 1013904223u;
    p[i] = (uint8_t)(seed >> 24);
  }
}

static void random_floats(float *p, size_t n, uint32_t seed, float scale) {
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1664525u + 1013904223u;
    p[i] = ((float)(seed >> 8) / 16777216.0f - 0.5f) * scale;
  }
}

static void *device_copy_of(tg_gpu *g, const void *host, size_t bytes) {
  void *d = tg_gpu_alloc(g, bytes);
  assert_non_null(d);
  assert_int_equal(tg_gpu_upload(g, d, host, bytes), TG_MODEL_OK);
  return d;
}

static void *host_copy_of(tg_gpu *g, const void *dev, size_t bytes) {
  void *h = malloc(bytes);
  assert_non_null(h);
  assert_int_equal(tg_gpu_download(g, h, dev, bytes), TG_MODEL_OK);
  return h;
}

/* Every element within rtol of the larger magnitude, plus atol. */
static void assert_close(const float *got, const float *want, size_t n, double rtol, double atol,
                         const char *what) {
  double worst = 0.0;
  for (size_t i = 0; i < n; i++) {
    double mag = fmax(fabs(got[i]), fabs(want[i]));
    double err = fabs((double)got[i] - want[i]) / (atol + rtol * mag);
    if (err > worst) worst = err;
    if (err > 1.0) fail_msg("%s[%zu]: GPU %.9g CPU %.9g", what, i, got[i], want[i]);
  }
  print_message("%s: %zu values, worst error %.3f of the tolerance\n", what, n, worst);
}

static size_t bitwise_differences(const float *a, const float *b, size_t n) {
  size_t d = 0;
  for (size_t i = 0; i < n; i++) d += memcmp(&a[i], &b[i], sizeof(float)) != 0;
  return d;
}

/* Forward loss and every gradient against the CPU model, with parameters
 * perturbed so that every gradient is well above float noise; and both
 * without positions and with a custom hidden width. */
static void test_forward_backward_match_cpu(void **state) {
  (void)state;
  tg_gpu *g = open_gpu_or_skip();
  tg_model_config cfgs[2] = {tiny, {.context = 5, .width = 24, .hidden = 40, .depth = 3}};
  for (int c = 0; c < 2; c++) {
    const uint32_t batch = 3;
    tg_model *cm = cpu_model(&cfgs[c], batch);
    tg_gpu_model *gm = gpu_model(g, &cfgs[c], batch);
    size_t P = tg_model_num_params(cm), rows = batch * cfgs[c].context;
    assert_int_equal(tg_gpu_model_num_params(gm), P);
    float *noise = malloc(P * sizeof(float));
    tg_model_init_params(cm, 3);
    random_floats(noise, P, 5, 0.6f);
    for (size_t i = 0; i < P; i++) tg_model_params(cm)[i] += noise[i];
    assert_int_equal(tg_gpu_upload(g, tg_gpu_model_params(gm), tg_model_params(cm), P * 4),
                     TG_MODEL_OK);
    uint8_t *tok = malloc(rows), *tgt = malloc(rows);
    random_bytes(tok, rows, 7);
    random_bytes(tgt, rows, 8);
    tok[0] = tok[1] = tok[rows - 1]; /* a token on several rows: the sorted sum */
    float cpu_loss, gpu_loss;
    assert_int_equal(tg_model_forward(cm, tok, tgt, batch, &cpu_loss), TG_MODEL_OK);
    assert_int_equal(tg_gpu_model_forward(gm, tok, tgt, batch, &gpu_loss), TG_MODEL_OK);
    assert_close(&gpu_loss, &cpu_loss, 1, 1e-4, 0.0, "loss");
    assert_int_equal(tg_model_backward(cm), TG_MODEL_OK);
    assert_int_equal(tg_gpu_model_backward(gm), TG_MODEL_OK);
    assert_int_equal(tg_gpu_finish(g), TG_MODEL_OK);
    float *grads = host_copy_of(g, tg_gpu_model_grads(gm), P * 4);
    double max_grad = 0.0;
    for (size_t i = 0; i < P; i++) max_grad = fmax(max_grad, fabs(tg_model_grads(cm)[i]));
    assert_true(max_grad > 1e-3);
    /* Other summation orders and other tanhf/expf: last bits differ, and
     * through 2-3 blocks a few more; a wrong layout or index is O(1). */
    assert_close(grads, tg_model_grads(cm), P, 1e-3, 1e-4 * max_grad, "gradients");
    free(grads);
    free(noise);
    free(tok);
    free(tgt);
    tg_gpu_model_free(gm);
    tg_model_free(cm);
  }
  tg_gpu_close(g);
}

/* Fixed point: the same float gradients give the CPU's integers, means
 * and squared-norm limbs bit for bit; out-of-range and NaN values are
 * reported by tg_gpu_finish as the CPU reports them. */
static void test_fixed_point_equals_cpu(void **state) {
  (void)state;
  tg_gpu *g = open_gpu_or_skip();
  tg_gpu_model *gm = gpu_model(g, &tiny, 1);
  size_t P = tg_gpu_model_num_params(gm);
  float *a = malloc(P * 4), *b = malloc(P * 4);
  random_floats(a, P, 11, 3.0f);
  random_floats(b, P, 12, 1e-4f);
  a[0] = 0.5f * 0x1p-32f; /* a tie: rounds to even (0) */
  a[1] = 1.5f * 0x1p-32f; /* a tie: rounds to even (2) */
  a[2] = -32768.0f;       /* the largest allowed term */
  a[3] = 1e-30f;          /* below the resolution */
  int64_t *cpu_acc = calloc(P + 1, 8);
  assert_int_equal(tg_fixed_accumulate(cpu_acc, a, P, NULL), TG_MODEL_OK);
  assert_int_equal(tg_fixed_accumulate(cpu_acc, b, P, NULL), TG_MODEL_OK);
  int64_t *acc = tg_gpu_alloc(g, (P + 1) * 8);
  float *da = device_copy_of(g, a, P * 4), *db = device_copy_of(g, b, P * 4);
  assert_int_equal(tg_gpu_fixed_accumulate(g, acc, da, P), TG_MODEL_OK);
  assert_int_equal(tg_gpu_fixed_accumulate(g, acc, db, P), TG_MODEL_OK);
  assert_int_equal(tg_gpu_finish(g), TG_MODEL_OK);
  int64_t *gpu_acc = host_copy_of(g, acc, P * 8);
  assert_memory_equal(gpu_acc, cpu_acc, P * 8);

  /* The mean over 2 terms, and a loss sum in the last entry. */
  cpu_acc[P] = 7 * (INT64_C(1) << 31) + 3;
  assert_int_equal(tg_gpu_upload(g, acc, cpu_acc, (P + 1) * 8), TG_MODEL_OK);
  tg_batch_plan two = {.global_batch = 2, .micro_batch = 1};
  float gpu_loss;
  assert_int_equal(tg_gpu_step_mean(gm, &two, acc, &gpu_loss), TG_MODEL_OK);
  float *cpu_mean = malloc(P * 4);
  assert_int_equal(tg_fixed_to_float(cpu_mean, cpu_acc, P, 2), TG_MODEL_OK);
  float *gpu_mean = host_copy_of(g, tg_gpu_model_grads(gm), P * 4);
  assert_memory_equal(gpu_mean, cpu_mean, P * 4);
  assert_true(gpu_loss == (float)tg_fixed_to_scalar(cpu_acc[P], 2));

  /* The squared norm of a slice and of the whole. */
  size_t slices[3][2] = {{0, P}, {1000, 20001}, {5, 5}};
  int64_t *limbs = tg_gpu_alloc(g, TG_FIXED_SQNORM_LIMBS * 8);
  for (int s = 0; s < 3; s++) {
    int64_t want[TG_FIXED_SQNORM_LIMBS], got[TG_FIXED_SQNORM_LIMBS];
    assert_int_equal(tg_fixed_sqnorm(a, slices[s][0], slices[s][1], want), TG_MODEL_OK);
    assert_int_equal(tg_gpu_fixed_sqnorm(g, da, slices[s][0], slices[s][1], limbs), TG_MODEL_OK);
    assert_int_equal(tg_gpu_download(g, got, limbs, sizeof got), TG_MODEL_OK);
    assert_memory_equal(got, want, sizeof want);
  }
  assert_int_equal(tg_gpu_finish(g), TG_MODEL_OK);

  /* What the CPU refuses, the kernels flag. */
  float bad[3] = {1.0f, 40000.0f, 2.0f};
  float *dbad = device_copy_of(g, bad, sizeof bad);
  assert_int_equal(tg_gpu_fixed_accumulate(g, acc, dbad, 3), TG_MODEL_OK);
  assert_int_equal(tg_gpu_finish(g), TG_MODEL_ERANGE);
  bad[1] = NAN;
  assert_int_equal(tg_gpu_upload(g, dbad, bad, sizeof bad), TG_MODEL_OK);
  assert_int_equal(tg_gpu_fixed_sqnorm(g, dbad, 0, 3, limbs), TG_MODEL_OK);
  assert_int_equal(tg_gpu_finish(g), TG_MODEL_ENONFINITE);
  assert_int_equal(tg_gpu_finish(g), TG_MODEL_OK); /* flags cleared */
  int64_t near_max = INT64_MAX - 1;
  bad[0] = 1.0f;
  assert_int_equal(tg_gpu_upload(g, acc, &near_max, 8), TG_MODEL_OK);
  assert_int_equal(tg_gpu_upload(g, dbad, bad, 4), TG_MODEL_OK);
  assert_int_equal(tg_gpu_fixed_accumulate(g, acc, dbad, 1), TG_MODEL_OK);
  assert_int_equal(tg_gpu_finish(g), TG_MODEL_EOVERFLOW);

  tg_gpu_free(g, dbad);
  tg_gpu_free(g, limbs);
  tg_gpu_free(g, da);
  tg_gpu_free(g, db);
  tg_gpu_free(g, acc);
  free(a);
  free(b);
  free(cpu_acc);
  free(gpu_acc);
  free(cpu_mean);
  free(gpu_mean);
  tg_gpu_model_free(gm);
  tg_gpu_close(g);
}

/* AdamW on rank 1 of 3's slice, three steps, clipped: the parameters
 * (inside the slice and, untouched, outside it) and the moments agree
 * with the CPU optimizer's. Equal bits are expected (same expression,
 * no fused multiply-add); the tolerance only keeps the test about the
 * contract, and the count of differing values is printed. */
static void test_adamw_matches_cpu(void **state) {
  (void)state;
  tg_gpu *g = open_gpu_or_skip();
  tg_model *cm = cpu_model(&tiny, 1);
  tg_gpu_model *gm = gpu_model(g, &tiny, 1);
  size_t P = tg_model_num_params(cm), begin, end;
  char err[256] = "";
  assert_int_equal(tg_shard_range(P, 3, 1, &begin, &end), TG_MODEL_OK);
  tg_adamw *co = tg_step_optimizer_new(cm, &opt_cfg, 3, 1, err, sizeof err);
  tg_gpu_adamw *go = tg_gpu_adamw_new(g, &opt_cfg, tg_gpu_model_layout(gm), begin, end, err,
                                      sizeof err);
  if (!co || !go) fail_msg("optimizer: %s", err);
  tg_model_init_params(cm, 9);
  float *params = tg_gpu_model_params(gm), *grads = tg_gpu_model_grads(gm);
  assert_int_equal(tg_gpu_upload(g, params, tg_model_params(cm), P * 4), TG_MODEL_OK);
  float *gr = malloc(P * 4);
  for (int s = 0; s < 3; s++) {
    random_floats(gr, P, 20 + (uint32_t)s, 0.1f);
    assert_int_equal(tg_gpu_upload(g, grads, gr, P * 4), TG_MODEL_OK);
    double norm = 2.0 + s; /* above the clip of 0.5 */
    assert_int_equal(tg_adamw_update(co, tg_model_params(cm), gr, norm), TG_MODEL_OK);
    assert_int_equal(tg_gpu_adamw_update(go, params, grads, norm), TG_MODEL_OK);
  }
  assert_int_equal(tg_gpu_adamw_step(go), 3);
  assert_int_equal(tg_gpu_adamw_update(go, params, grads, NAN), TG_MODEL_EINVAL);
  float *p = host_copy_of(g, params, P * 4);
  float *m = host_copy_of(g, tg_gpu_adamw_m(go), (end - begin) * 4);
  float *v = host_copy_of(g, tg_gpu_adamw_v(go), (end - begin) * 4);
  assert_memory_equal(p, tg_model_params(cm), begin * 4); /* outside: untouched */
  assert_memory_equal(p + end, tg_model_params(cm) + end, (P - end) * 4);
  assert_close(p, tg_model_params(cm), P, 1e-6, 1e-12, "AdamW params");
  assert_close(m, tg_adamw_m(co), end - begin, 1e-6, 1e-20, "AdamW m");
  assert_close(v, tg_adamw_v(co), end - begin, 1e-6, 1e-20, "AdamW v");
  print_message("AdamW: %zu of %zu parameters differ from the CPU's bits\n",
                bitwise_differences(p, tg_model_params(cm), P), P);
  free(p);
  free(m);
  free(v);
  free(gr);
  tg_adamw_free(co);
  tg_gpu_adamw_free(go);
  tg_gpu_model_free(gm);
  tg_model_free(cm);
  tg_gpu_close(g);
}

/* A one-rank GPU trainer: a model, its optimizer, and the step recipe of
 * gpu_step.h (without a communicator). */
typedef struct {
  tg_gpu *g;
  tg_gpu_model *model;
  tg_gpu_adamw *opt;
  int64_t *acc, *limbs;
} gpu_run;

static gpu_run run_new(tg_gpu *g, uint64_t seed) {
  gpu_run r = {.g = g, .model = gpu_model(g, &tiny, plan.micro_batch)};
  size_t P = tg_gpu_model_num_params(r.model);
  char err[256] = "";
  r.opt = tg_gpu_adamw_new(g, &opt_cfg, tg_gpu_model_layout(r.model), 0, P, err, sizeof err);
  if (!r.opt) fail_msg("tg_gpu_adamw_new: %s", err);
  r.acc = tg_gpu_alloc(g, (P + 1) * 8);
  r.limbs = tg_gpu_alloc(g, TG_FIXED_SQNORM_LIMBS * 8);
  assert_true(r.acc && r.limbs);
  float *init = malloc(P * 4);
  tg_model_init_params_at(tg_gpu_model_layout(r.model), init, seed);
  assert_int_equal(tg_gpu_upload(g, tg_gpu_model_params(r.model), init, P * 4), TG_MODEL_OK);
  free(init);
  return r;
}

static void run_free(gpu_run *r) {
  tg_gpu_free(r->g, r->acc);
  tg_gpu_free(r->g, r->limbs);
  tg_gpu_adamw_free(r->opt);
  tg_gpu_model_free(r->model);
}

static float run_step(gpu_run *r, const tg_corpus *c) {
  size_t P = tg_gpu_model_num_params(r->model);
  uint64_t step = tg_gpu_adamw_step(r->opt);
  int64_t limbs[TG_FIXED_SQNORM_LIMBS];
  float loss;
  assert_int_equal(tg_gpu_zero(r->g, r->acc, (P + 1) * 8), TG_MODEL_OK);
  assert_int_equal(tg_gpu_step_accumulate(r->model, c, &plan, step, 0, tg_step_chunk_count(&plan),
                                          r->acc),
                   TG_MODEL_OK);
  assert_int_equal(tg_gpu_finish(r->g), TG_MODEL_OK);
  assert_int_equal(tg_gpu_step_mean(r->model, &plan, r->acc, &loss), TG_MODEL_OK);
  assert_int_equal(tg_gpu_fixed_sqnorm(r->g, tg_gpu_model_grads(r->model), 0, P, r->limbs),
                   TG_MODEL_OK);
  assert_int_equal(tg_gpu_download(r->g, limbs, r->limbs, sizeof limbs), TG_MODEL_OK);
  assert_int_equal(tg_gpu_adamw_update(r->opt, tg_gpu_model_params(r->model),
                                       tg_gpu_model_grads(r->model),
                                       tg_fixed_sqnorm_to_norm(limbs)),
                   TG_MODEL_OK);
  return loss;
}

/* The same CPU step (step.h's recipe on one rank), for the losses. */
static float cpu_step(tg_model *m, tg_adamw *opt, const tg_corpus *c, int64_t *acc) {
  size_t P = tg_model_num_params(m);
  int64_t limbs[TG_FIXED_SQNORM_LIMBS];
  float loss;
  memset(acc, 0, (P + 1) * 8);
  assert_int_equal(tg_step_accumulate(m, c, &plan, tg_adamw_step(opt), 0,
                                      tg_step_chunk_count(&plan), acc),
                   TG_MODEL_OK);
  assert_int_equal(tg_step_mean(m, &plan, acc, &loss), TG_MODEL_OK);
  assert_int_equal(tg_fixed_sqnorm(tg_model_grads(m), 0, P, limbs), TG_MODEL_OK);
  assert_int_equal(tg_adamw_update(opt, tg_model_params(m), tg_model_grads(m),
                                   tg_fixed_sqnorm_to_norm(limbs)),
                   TG_MODEL_OK);
  return loss;
}

static tg_corpus *corpus(void) {
  char err[256] = "";
  tg_corpus *c = tg_corpus_open(NULL, tiny.context, 42, err, sizeof err);
  if (!c) fail_msg("tg_corpus_open: %s", err);
  return c;
}

enum { STEPS = 5 };

/* Two GPU runs from the same seed end with the same bits in parameters
 * and moments; their losses follow the CPU's. */
static void test_training_is_deterministic(void **state) {
  (void)state;
  tg_gpu *g = open_gpu_or_skip();
  tg_corpus *c = corpus();
  gpu_run a = run_new(g, 1), b = run_new(g, 1);
  tg_model *cm = cpu_model(&tiny, plan.micro_batch);
  char err[256] = "";
  tg_adamw *co = tg_step_optimizer_new(cm, &opt_cfg, 1, 0, err, sizeof err);
  assert_non_null(co);
  tg_model_init_params(cm, 1);
  int64_t *cpu_acc = malloc((tg_model_num_params(cm) + 1) * 8);
  float loss_a[STEPS], loss_b[STEPS], loss_cpu[STEPS];
  for (int s = 0; s < STEPS; s++) loss_a[s] = run_step(&a, c);
  for (int s = 0; s < STEPS; s++) loss_b[s] = run_step(&b, c);
  for (int s = 0; s < STEPS; s++) loss_cpu[s] = cpu_step(cm, co, c, cpu_acc);
  assert_memory_equal(loss_a, loss_b, sizeof loss_a);
  assert_close(loss_a, loss_cpu, STEPS, 1e-3, 0.0, "losses");
  assert_true(loss_a[STEPS - 1] < loss_a[0]);
  size_t P = tg_gpu_model_num_params(a.model);
  float *pa = host_copy_of(g, tg_gpu_model_params(a.model), P * 4);
  float *pb = host_copy_of(g, tg_gpu_model_params(b.model), P * 4);
  float *ma = host_copy_of(g, tg_gpu_adamw_m(a.opt), P * 4);
  float *mb = host_copy_of(g, tg_gpu_adamw_m(b.opt), P * 4);
  float *va = host_copy_of(g, tg_gpu_adamw_v(a.opt), P * 4);
  float *vb = host_copy_of(g, tg_gpu_adamw_v(b.opt), P * 4);
  assert_memory_equal(pa, pb, P * 4);
  assert_memory_equal(ma, mb, P * 4);
  assert_memory_equal(va, vb, P * 4);
  free(pa);
  free(pb);
  free(ma);
  free(mb);
  free(va);
  free(vb);
  free(cpu_acc);
  tg_adamw_free(co);
  tg_model_free(cm);
  run_free(&a);
  run_free(&b);
  tg_corpus_close(c);
  tg_gpu_close(g);
}

/* Snapshot and restore: the copy into pinned memory overlaps the next
 * step's compute yet holds the state it was taken of; restored into a
 * fresh model and optimizer, that state continues bitwise like the
 * original; and the CPU model reads the same parameters as the same
 * function. */
static void test_snapshot_round_trip(void **state) {
  (void)state;
  tg_gpu *g = open_gpu_or_skip();
  tg_corpus *c = corpus();
  gpu_run a = run_new(g, 3);
  for (int s = 0; s < 2; s++) run_step(&a, c);
  size_t P = tg_gpu_model_num_params(a.model);
  float *before = host_copy_of(g, tg_gpu_model_params(a.model), P * 4);
  float *hp = tg_gpu_host_alloc(g, P * 4), *hm = tg_gpu_host_alloc(g, P * 4),
        *hv = tg_gpu_host_alloc(g, P * 4);
  assert_true(hp && hm && hv);
  tg_gpu_copy copies[3] = {{hp, tg_gpu_model_params(a.model), P * 4},
                           {hm, tg_gpu_adamw_m(a.opt), P * 4},
                           {hv, tg_gpu_adamw_v(a.opt), P * 4}};
  assert_int_equal(tg_gpu_snapshot_copy(g, copies, 3), TG_MODEL_OK);
  uint64_t saved_step = tg_gpu_adamw_step(a.opt);
  float next_loss = run_step(&a, c); /* writes params, m, v after the copies */
  assert_int_equal(tg_gpu_snapshot_wait(g), TG_MODEL_OK);
  assert_memory_equal(hp, before, P * 4);

  gpu_run b = run_new(g, 99); /* other parameters, overwritten below */
  assert_int_equal(tg_gpu_upload(g, tg_gpu_model_params(b.model), hp, P * 4), TG_MODEL_OK);
  assert_int_equal(tg_gpu_adamw_load(b.opt, hm, hv, saved_step), TG_MODEL_OK);
  float restored_loss = run_step(&b, c);
  assert_true(restored_loss == next_loss);
  float *pa = host_copy_of(g, tg_gpu_model_params(a.model), P * 4);
  float *pb = host_copy_of(g, tg_gpu_model_params(b.model), P * 4);
  assert_memory_equal(pa, pb, P * 4);

  /* The CPU model with the snapshot's parameters: the same loss. */
  tg_model *cm = cpu_model(&tiny, plan.micro_batch);
  memcpy(tg_model_params(cm), hp, P * 4);
  assert_int_equal(tg_gpu_upload(g, tg_gpu_model_params(b.model), hp, P * 4), TG_MODEL_OK);
  uint8_t tok[64], tgt[64];
  assert_int_equal(tg_corpus_batch(c, 1000, plan.micro_batch, tok, tgt), TG_MODEL_OK);
  float cpu_loss, gpu_loss;
  assert_int_equal(tg_model_forward(cm, tok, tgt, plan.micro_batch, &cpu_loss), TG_MODEL_OK);
  assert_int_equal(tg_gpu_model_forward(b.model, tok, tgt, plan.micro_batch, &gpu_loss),
                   TG_MODEL_OK);
  assert_close(&gpu_loss, &cpu_loss, 1, 1e-4, 0.0, "loss of the snapshot");

  free(before);
  free(pa);
  free(pb);
  tg_gpu_host_free(g, hp);
  tg_gpu_host_free(g, hm);
  tg_gpu_host_free(g, hv);
  tg_model_free(cm);
  run_free(&a);
  run_free(&b);
  tg_corpus_close(c);
  tg_gpu_close(g);
}

static void test_bad_input(void **state) {
  (void)state;
  tg_gpu *g = open_gpu_or_skip();
  char err[256] = "";
  assert_null(tg_gpu_open(-1, err, sizeof err));
  assert_true(strlen(err) > 0);
  assert_null(tg_gpu_model_new(g, &tiny, 0, err, sizeof err));
  tg_model_config bad = tiny;
  bad.width = 0;
  assert_null(tg_gpu_model_new(g, &bad, 1, err, sizeof err));
  tg_gpu_model *m = gpu_model(g, &tiny, 2);
  uint8_t tok[48] = {0};
  float loss;
  assert_int_equal(tg_gpu_model_backward(m), TG_MODEL_EINVAL); /* no forward yet */
  assert_int_equal(tg_gpu_model_forward(m, tok, tok, 3, &loss), TG_MODEL_EINVAL);
  assert_int_equal(tg_gpu_model_forward(m, tok, tok, 0, &loss), TG_MODEL_EINVAL);
  /* Zero parameters: uniform prediction, loss ln 256. */
  assert_int_equal(tg_gpu_model_forward(m, tok, tok, 1, &loss), TG_MODEL_OK);
  assert_float_equal(loss, logf(256.0f), 1e-5);
  assert_int_equal(tg_gpu_model_backward(m), TG_MODEL_OK);
  assert_int_equal(tg_gpu_model_backward(m), TG_MODEL_EINVAL); /* consumed */
  tg_adamw_config badopt = opt_cfg;
  badopt.beta1 = 1.0f;
  assert_null(tg_gpu_adamw_new(g, &badopt, tg_gpu_model_layout(m), 0, 1, err, sizeof err));
  assert_null(tg_gpu_adamw_new(g, &opt_cfg, tg_gpu_model_layout(m), 0,
                               tg_gpu_model_num_params(m) + 1, err, sizeof err));
  tg_gpu_model_free(m);
  tg_gpu_close(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_forward_backward_match_cpu),
      cmocka_unit_test(test_fixed_point_equals_cpu),
      cmocka_unit_test(test_adamw_matches_cpu),
      cmocka_unit_test(test_training_is_deterministic),
      cmocka_unit_test(test_snapshot_round_trip),
      cmocka_unit_test(test_bad_input),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
