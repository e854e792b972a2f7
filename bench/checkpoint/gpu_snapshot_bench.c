/* bench/checkpoint:gpu_snapshot: what a GPU rank's per-step snapshot
 * costs, against the host-device copy limit.
 *
 * A GPU rank of tg-train-cuda copies its state of step s (all parameters,
 * and its slice of AdamW's m and v) from device memory into pinned host
 * buffers on a copy stream while step s+1's forward and backward run on
 * the compute stream (trainer/model/cuda/README.md, "Snapshots overlap
 * compute"); the host then writes the pinned copy into the node's store
 * (tg_snapshot: a memcpy and a CRC-64, measured on CPU by
 * //bench/checkpoint). For each model (width D, depth N, hidden 4D, context
 * T, a micro-batch of M samples) and a world of W ranks, this program
 * measures on one GPU, with the real model code (cuBLAS FP32, the
 * project's kernels):
 *
 *   D2H limit   tg_gpu_download of the parameters (4P bytes) into pinned
 *               memory, the GPU idle: what this machine's link gives;
 *   H2D         tg_gpu_upload of the same bytes: a restore's upload;
 *   copy        the snapshot alone (params + m + v slices, 4P + 8P/W
 *               bytes), tg_gpu_snapshot_copy then tg_gpu_snapshot_wait,
 *               the GPU otherwise idle, and its rate over the D2H limit's;
 *   compute     one chunk's forward and backward, tg_gpu_finish;
 *   overlapped  the snapshot copy enqueued, then the chunk's forward and
 *               backward, then tg_gpu_finish and tg_gpu_snapshot_wait:
 *               stall = overlapped - compute, what the snapshot adds to a
 *               step that has one chunk (a step of k chunks hides k times
 *               more copy).
 *
 * Each is run once untimed, then --rounds times (median, in ms, measured
 * with CLOCK_MONOTONIC around calls that wait for the GPU). Parameters are
 * small pseudo-random values; tokens pseudo-random bytes.
 *
 * Usage: gpu_snapshot [--models 512x4,1024x8,2048x8,4096x8] [--context 256]
 *        [--micro 8] [--world 8] [--rounds 5] [--device 0] */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock/clock.h"
#include "common/config/config.h"
#include "trainer/model/cuda/gpu.h"
#include "trainer/model/cuda/gpu_model.h"
#include "trainer/model/model.h"

#define MAX_ROUNDS 101
#define MAX_MODELS 16

typedef struct {
  uint32_t width, depth;
} model_size;

static int parse_models(const char *s, model_size *out, int max) {
  int n = 0;
  while (*s) {
    char *end;
    unsigned long d = strtoul(s, &end, 10);
    if (end == s || *end != 'x' || d < 1 || d > TG_MODEL_MAX_WIDTH) return -1;
    s = end + 1;
    unsigned long l = strtoul(s, &end, 10);
    if (end == s || l > TG_MODEL_MAX_DEPTH || n == max) return -1;
    out[n++] = (model_size){(uint32_t)d, (uint32_t)l};
    s = end;
    if (*s == ',') s++;
    else if (*s) return -1;
  }
  return n;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static double median_ms(int64_t *us, int n) {
  qsort(us, (size_t)n, sizeof *us, cmp_i64);
  return (n % 2 ? (double)us[n / 2] : ((double)us[n / 2 - 1] + (double)us[n / 2]) / 2) / 1000.0;
}

typedef enum { OP_D2H, OP_H2D, OP_COPY, OP_COMPUTE, OP_OVERLAPPED } op;

typedef struct {
  tg_gpu *gpu;
  tg_gpu_model *model;
  uint32_t micro;
  const uint8_t *tokens, *targets;
  float *host; /* pinned, 4P + 8P/W bytes */
  float *m, *v; /* device, the rank's slice each */
  size_t P, slice;
} bench;

static int compute(bench *b) {
  if (tg_gpu_model_forward(b->model, b->tokens, b->targets, b->micro, NULL) != TG_MODEL_OK) return -1;
  if (tg_gpu_model_backward(b->model) != TG_MODEL_OK) return -1;
  return tg_gpu_finish(b->gpu) == TG_MODEL_OK ? 0 : -1;
}

static int snapshot(bench *b) {
  tg_gpu_copy c[3] = {
      {b->host, tg_gpu_model_params(b->model), b->P * sizeof(float)},
      {b->host + b->P, b->m, b->slice * sizeof(float)},
      {b->host + b->P + b->slice, b->v, b->slice * sizeof(float)},
  };
  return tg_gpu_snapshot_copy(b->gpu, c, 3) == TG_MODEL_OK ? 0 : -1;
}

static int run_op(bench *b, op o) {
  switch (o) {
  case OP_D2H:
    return tg_gpu_download(b->gpu, b->host, tg_gpu_model_params(b->model), b->P * sizeof(float)) == TG_MODEL_OK
               ? 0 : -1;
  case OP_H2D:
    return tg_gpu_upload(b->gpu, tg_gpu_model_params(b->model), b->host, b->P * sizeof(float)) == TG_MODEL_OK
               ? 0 : -1;
  case OP_COPY:
    return snapshot(b) == 0 && tg_gpu_snapshot_wait(b->gpu) == TG_MODEL_OK ? 0 : -1;
  case OP_COMPUTE:
    return compute(b);
  case OP_OVERLAPPED:
    return snapshot(b) == 0 && compute(b) == 0 && tg_gpu_snapshot_wait(b->gpu) == TG_MODEL_OK ? 0 : -1;
  }
  return -1;
}

static int time_op(bench *b, op o, int rounds, double *ms) {
  int64_t us[MAX_ROUNDS];
  if (run_op(b, o) != 0) return -1;
  for (int r = 0; r < rounds; r++) {
    int64_t t0 = tg_clock_mono_us();
    if (run_op(b, o) != 0) return -1;
    us[r] = tg_clock_mono_us() - t0;
  }
  *ms = median_ms(us, rounds);
  return 0;
}

static int bench_model(tg_gpu *gpu, model_size ms, uint32_t context, uint32_t micro, uint32_t world, int rounds) {
  tg_model_config cfg = {.context = context, .width = ms.width, .depth = ms.depth, .use_position = 1};
  char err[320];
  bench b = {.gpu = gpu, .micro = micro};
  int rc = -1;
  uint8_t *tok = malloc((size_t)micro * context * 2);
  b.model = tg_gpu_model_new(gpu, &cfg, micro, err, sizeof err);
  if (!tok || !b.model) {
    fprintf(stderr, "gpu_snapshot: model %ux%u: %s\n", ms.width, ms.depth, tok ? err : "out of memory");
    goto out;
  }
  for (size_t i = 0; i < (size_t)micro * context * 2; i++) tok[i] = (uint8_t)rng();
  b.tokens = tok;
  b.targets = tok + (size_t)micro * context;
  b.P = tg_gpu_model_num_params(b.model);
  b.slice = (b.P + world - 1) / world;
  size_t bytes = (b.P + 2 * b.slice) * sizeof(float);
  b.host = tg_gpu_host_alloc(gpu, bytes);
  b.m = tg_gpu_alloc(gpu, b.slice * sizeof(float));
  b.v = tg_gpu_alloc(gpu, b.slice * sizeof(float));
  if (!b.host || !b.m || !b.v) {
    fprintf(stderr, "gpu_snapshot: model %ux%u (%zu params): %s\n", ms.width, ms.depth, b.P,
            tg_gpu_last_error(gpu));
    goto out;
  }
  for (size_t i = 0; i < b.P; i++) b.host[i] = (float)((int64_t)(rng() % 2001) - 1000) * 2e-5f;
  if (tg_gpu_upload(gpu, tg_gpu_model_params(b.model), b.host, b.P * sizeof(float)) != TG_MODEL_OK) goto gpu_err;

  double t[5];
  for (op o = OP_D2H; o <= OP_OVERLAPPED; o++)
    if (time_op(&b, o, rounds, &t[o]) != 0) goto gpu_err;
  double params_gb = (double)b.P * 4 / 1e9, snap_gb = (double)bytes / 1e9;
  double d2h = params_gb / (t[OP_D2H] / 1e3), h2d = params_gb / (t[OP_H2D] / 1e3);
  double copy = snap_gb / (t[OP_COPY] / 1e3);
  double stall = t[OP_OVERLAPPED] - t[OP_COMPUTE];
  printf("| %ux%u | %.1f | %.0f | %.1f | %.1f | %.2f | %.1f (%.0f%%) | %.2f | %.2f | %.2f |\n", ms.width, ms.depth,
         (double)b.P / 1e6, (double)bytes / (1 << 20), d2h, h2d, t[OP_COPY], copy, 100 * copy / d2h, t[OP_COMPUTE],
         t[OP_OVERLAPPED], stall);
  fflush(stdout);
  rc = 0;
  goto out;
gpu_err:
  fprintf(stderr, "gpu_snapshot: model %ux%u: %s\n", ms.width, ms.depth, tg_gpu_last_error(gpu));
out:
  tg_gpu_snapshot_wait(gpu);
  tg_gpu_free(gpu, b.m);
  tg_gpu_free(gpu, b.v);
  tg_gpu_host_free(gpu, b.host);
  tg_gpu_model_free(b.model);
  free(tok);
  return rc;
}

int main(int argc, char **argv) {
  char models[256] = "512x4,1024x8,2048x8,4096x8";
  int64_t context = 256, micro = 8, world = 8, rounds = 5, device = 0;
  tg_option opts[] = {
      {"models", TG_OPT_STRING, models, sizeof models, 0, 0, "models to measure, WIDTHxDEPTH,..."},
      {"context", TG_OPT_INT, &context, 0, 1, 65536, "bytes per sample T"},
      {"micro", TG_OPT_INT, &micro, 0, 1, 4096, "samples in the chunk computed beside the copy"},
      {"world", TG_OPT_INT, &world, 0, 1, 1 << 20, "ranks: each holds 1/world of AdamW's m and v"},
      {"rounds", TG_OPT_INT, &rounds, 0, 1, MAX_ROUNDS, "timed runs of each operation (median)"},
      {"device", TG_OPT_INT, &device, 0, 0, 1 << 16, "CUDA device"},
  };
  char err[320];
  switch (tg_config_parse(opts, sizeof opts / sizeof opts[0], argc, argv,
                          "usage: gpu_snapshot [--models 512x4,1024x8] [--rounds 5]\n\n"
                          "A GPU rank's per-step snapshot (device -> pinned host, overlapped with compute)\n"
                          "against the host-device copy limit, on the real model.",
                          NULL, err, sizeof err)) {
  case TG_CONFIG_OK: break;
  case TG_CONFIG_HELP: return 0;
  default: fprintf(stderr, "gpu_snapshot: %s\n", err); return 2;
  }
  model_size ms[MAX_MODELS];
  int n = parse_models(models, ms, MAX_MODELS);
  if (n <= 0) {
    fprintf(stderr, "gpu_snapshot: --models %s: expected WIDTHxDEPTH[,WIDTHxDEPTH...]\n", models);
    return 2;
  }
  tg_gpu *gpu = tg_gpu_open((int)device, err, sizeof err);
  if (!gpu) {
    fprintf(stderr, "gpu_snapshot: %s\n", err);
    return 1;
  }
  printf("gpu_snapshot --models %s --context %" PRId64 " --micro %" PRId64 " --world %" PRId64
         " --rounds %" PRId64 "\n\n",
         models, context, micro, world, rounds);
  printf("| model DxN | params M | snapshot MiB | D2H limit GB/s | H2D GB/s | copy ms | copy GB/s (of limit) | "
         "compute ms | overlapped ms | stall ms |\n|---|---|---|---|---|---|---|---|---|---|\n");
  int failed = 0;
  for (int i = 0; i < n; i++)
    failed += bench_model(gpu, ms[i], (uint32_t)context, (uint32_t)micro, (uint32_t)world, (int)rounds) != 0;
  tg_gpu_close(gpu);
  return failed ? 1 : 0;
}
