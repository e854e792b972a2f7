/* tg-train's GPU path (see train_gpu.h): one step of tg_train.c's recipe
 * with the numbers on the device. Only the communicator's buffers differ
 * between NCCL and gloo: NCCL takes the device arrays as they are, gloo
 * gets them through pinned host copies, and the step is the same either
 * way, so a GPU rank computes the same integers and parameters with
 * either backend. */
#include "trainer/train/train_gpu.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/model/cuda/gpu.h"
#include "trainer/model/cuda/gpu_adamw.h"
#include "trainer/model/cuda/gpu_model.h"
#include "trainer/model/cuda/gpu_step.h"
#include "trainer/model/fixed.h"
#include "trainer/model/shard.h"

struct train_gpu {
  tg_gpu *gpu;
  tg_gpu_model *model;
  tg_batch_plan plan;
  tg_adamw_config ac;
  int device_buffers; /* collectives take device pointers (NCCL) */
  size_t P;
  float *host_params; /* pinned, P */
  int64_t *acc;       /* device, P + 1: gradient sums and the loss sum */
  int64_t *host_acc;  /* pinned, P + 1, for gloo */
  int64_t *limbs;     /* device, the squared norm's limbs */

  /* The current world. */
  uint32_t world, rank;
  size_t begin, end, slice; /* this rank's slice; slice = the largest rank's */
  tg_gpu_adamw *opt;
  float *m_stage, *v_stage;          /* pinned, end - begin each */
  float *send, *gathered;            /* device: slice, world * slice */
  float *host_send, *host_gathered;  /* pinned, for gloo */
  char err[320];
};

static int fail(train_gpu *g, const char *what, tg_model_status st) {
  snprintf(g->err, sizeof g->err, "%s: %s%s%s", what, tg_model_status_text(st),
           st == TG_MODEL_EDEVICE ? ": " : "", st == TG_MODEL_EDEVICE ? tg_gpu_last_error(g->gpu) : "");
  return -1;
}

/* The device of this rank; -1 with err. */
static int pick_device(tg_trainer *t, char *err, size_t errlen) {
  if (tg_device_buffers(t)) return tg_cuda_device(t); /* the communicator's */
  const char *env = getenv("TG_CUDA_DEVICE");
  if (env && *env) {
    char *end;
    errno = 0;
    long d = strtol(env, &end, 10);
    if (errno || *end || d < 0 || d > 1 << 16) {
      snprintf(err, errlen, "TG_CUDA_DEVICE=%s is not a device number", env);
      return -1;
    }
    return (int)d;
  }
  int count = 0;
  if (tg_gpu_device_count(&count, err, errlen) != TG_MODEL_OK) return -1;
  if (count == 0) {
    snprintf(err, errlen, "no CUDA device");
    return -1;
  }
  const char *slot = getenv("TG_SLOT");
  long s = slot ? strtol(slot, NULL, 10) : 0;
  return (int)((s < 0 ? 0 : s) % count);
}

int train_gpu_built(char *err, size_t errlen) {
  (void)err, (void)errlen;
  return 1;
}

train_gpu *train_gpu_new(tg_trainer *t, const tg_model_config *mc, const tg_batch_plan *plan,
                         const tg_adamw_config *ac, char *err, size_t errlen) {
  int device = pick_device(t, err, errlen);
  if (device < 0) return NULL;
  train_gpu *g = calloc(1, sizeof *g);
  if (!g) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  g->plan = *plan;
  g->ac = *ac;
  g->device_buffers = tg_device_buffers(t);
  g->gpu = tg_gpu_open(device, err, errlen);
  if (!g->gpu) goto fail;
  g->model = tg_gpu_model_new(g->gpu, mc, plan->micro_batch, err, errlen);
  if (!g->model) goto fail;
  g->P = tg_gpu_model_num_params(g->model);
  g->host_params = tg_gpu_host_alloc(g->gpu, g->P * sizeof(float));
  g->acc = tg_gpu_alloc(g->gpu, (g->P + 1) * sizeof(int64_t));
  g->limbs = tg_gpu_alloc(g->gpu, TG_FIXED_SQNORM_LIMBS * sizeof(int64_t));
  if (!g->device_buffers) g->host_acc = tg_gpu_host_alloc(g->gpu, (g->P + 1) * sizeof(int64_t));
  if (!g->host_params || !g->acc || !g->limbs || (!g->device_buffers && !g->host_acc)) {
    snprintf(err, errlen, "%s", tg_gpu_last_error(g->gpu));
    goto fail;
  }
  return g;
fail:
  train_gpu_free(g);
  return NULL;
}

static void world_free(train_gpu *g) {
  tg_gpu_snapshot_wait(g->gpu); /* the copies may be reading the stages */
  tg_gpu_adamw_free(g->opt);
  tg_gpu_host_free(g->gpu, g->m_stage);
  tg_gpu_host_free(g->gpu, g->v_stage);
  tg_gpu_free(g->gpu, g->send);
  tg_gpu_free(g->gpu, g->gathered);
  tg_gpu_host_free(g->gpu, g->host_send);
  tg_gpu_host_free(g->gpu, g->host_gathered);
  g->opt = NULL;
  g->m_stage = g->v_stage = g->send = g->gathered = g->host_send = g->host_gathered = NULL;
}

void train_gpu_free(train_gpu *g) {
  if (!g) return;
  if (g->gpu) {
    world_free(g);
    tg_gpu_host_free(g->gpu, g->host_params);
    tg_gpu_host_free(g->gpu, g->host_acc);
    tg_gpu_free(g->gpu, g->acc);
    tg_gpu_free(g->gpu, g->limbs);
  }
  tg_gpu_model_free(g->model);
  tg_gpu_close(g->gpu);
  free(g);
}

const char *train_gpu_error(const train_gpu *g) { return g ? g->err : "no GPU"; }
int train_gpu_device(const train_gpu *g) { return g ? tg_gpu_device(g->gpu) : -1; }
const tg_model *train_gpu_layout(const train_gpu *g) {
  return g ? tg_gpu_model_layout(g->model) : NULL;
}
float *train_gpu_host_params(train_gpu *g) { return g ? g->host_params : NULL; }

int train_gpu_world(train_gpu *g, uint32_t W, uint32_t R, float **m_stage, float **v_stage) {
  world_free(g);
  if (tg_shard_range(g->P, W, R, &g->begin, &g->end) != TG_MODEL_OK)
    return fail(g, "rank outside the world", TG_MODEL_EINVAL);
  g->world = W;
  g->rank = R;
  g->slice = (g->P + W - 1) / W;
  size_t own = g->end - g->begin;
  char err[256] = "";
  g->opt = tg_gpu_adamw_new(g->gpu, &g->ac, tg_gpu_model_layout(g->model), g->begin, g->end, err,
                            sizeof err);
  if (!g->opt) {
    snprintf(g->err, sizeof g->err, "%s", err);
    return -1;
  }
  g->m_stage = tg_gpu_host_alloc(g->gpu, own * sizeof(float));
  g->v_stage = tg_gpu_host_alloc(g->gpu, own * sizeof(float));
  g->send = tg_gpu_alloc(g->gpu, g->slice * sizeof(float)); /* zero: pads the short slices */
  g->gathered = tg_gpu_alloc(g->gpu, (size_t)W * g->slice * sizeof(float));
  if (!g->device_buffers) {
    g->host_send = tg_gpu_host_alloc(g->gpu, g->slice * sizeof(float));
    g->host_gathered = tg_gpu_host_alloc(g->gpu, (size_t)W * g->slice * sizeof(float));
  }
  if (!g->m_stage || !g->v_stage || !g->send || !g->gathered ||
      (!g->device_buffers && (!g->host_send || !g->host_gathered)))
    return fail(g, "memory for the world's buffers", TG_MODEL_EDEVICE);
  *m_stage = g->m_stage;
  *v_stage = g->v_stage;
  return 0;
}

int train_gpu_load(train_gpu *g, uint64_t step) {
  tg_model_status st = tg_gpu_snapshot_wait(g->gpu);
  if (st == TG_MODEL_OK)
    st = tg_gpu_upload(g->gpu, tg_gpu_model_params(g->model), g->host_params, g->P * sizeof(float));
  if (st == TG_MODEL_OK) st = tg_gpu_adamw_load(g->opt, g->m_stage, g->v_stage, step);
  return st == TG_MODEL_OK ? 0 : fail(g, "loading the state onto the GPU", st);
}

int train_gpu_init(train_gpu *g, uint64_t seed) {
  tg_model_status st = tg_gpu_snapshot_wait(g->gpu);
  if (st != TG_MODEL_OK) return fail(g, "waiting for a snapshot copy", st);
  tg_model_init_params_at(tg_gpu_model_layout(g->model), g->host_params, seed);
  st = tg_gpu_upload(g->gpu, tg_gpu_model_params(g->model), g->host_params, g->P * sizeof(float));
  return st == TG_MODEL_OK ? 0 : fail(g, "uploading the initial parameters", st);
}

int train_gpu_compute(train_gpu *g, const tg_corpus *c, uint64_t step, uint32_t chunk_begin,
                      uint32_t chunk_end) {
  tg_model_status st = tg_gpu_zero(g->gpu, g->acc, (g->P + 1) * sizeof(int64_t));
  if (st == TG_MODEL_OK)
    st = tg_gpu_step_accumulate(g->model, c, &g->plan, step, chunk_begin, chunk_end, g->acc);
  return st == TG_MODEL_OK ? 0 : fail(g, "enqueueing the step", st);
}

/* Waits for the GPU; what its kernels found is a diverged run. */
static int finish(train_gpu *g, const char *what) {
  tg_model_status st = tg_gpu_finish(g->gpu);
  if (st == TG_MODEL_ENONFINITE || st == TG_MODEL_ERANGE || st == TG_MODEL_EOVERFLOW)
    return fail(g, "the loss diverged", st);
  return st == TG_MODEL_OK ? 0 : fail(g, what, st);
}

/* An exact int64 sum of n entries at dev across the world: in place with
 * device buffers, else through host (pinned or not). The GPU is idle when
 * it returns. */
static int all_reduce_i64(train_gpu *g, tg_trainer *t, int64_t *dev, int64_t *host, size_t n,
                          tg_result *r) {
  if (finish(g, "before an all-reduce") != 0) return -1;
  if (g->device_buffers) {
    *r = tg_all_reduce(t, dev, n, TG_INT64);
    return 0;
  }
  tg_model_status st = tg_gpu_download(g->gpu, host, dev, n * sizeof(int64_t));
  if (st != TG_MODEL_OK) return fail(g, "staging an all-reduce", st);
  *r = tg_all_reduce(t, host, n, TG_INT64);
  if (*r != TG_OK) return 0;
  st = tg_gpu_upload(g->gpu, dev, host, n * sizeof(int64_t));
  return st == TG_MODEL_OK ? 0 : fail(g, "staging an all-reduce", st);
}

/* Every rank's parameter slice into every rank's parameters. */
static int gather_params(train_gpu *g, tg_trainer *t, tg_result *r) {
  float *params = tg_gpu_model_params(g->model);
  size_t own = g->end - g->begin, bytes = g->slice * sizeof(float);
  tg_model_status st = tg_gpu_copy_device(g->gpu, g->send, params + g->begin, own * sizeof(float));
  if (st == TG_MODEL_OK && !g->device_buffers)
    st = tg_gpu_download(g->gpu, g->host_send, g->send, bytes);
  if (st == TG_MODEL_OK && g->device_buffers && finish(g, "before the all-gather") != 0) return -1;
  if (st != TG_MODEL_OK) return fail(g, "staging the all-gather", st);
  if (g->device_buffers) {
    *r = tg_all_gather(t, g->send, g->gathered, bytes);
  } else {
    *r = tg_all_gather(t, g->host_send, g->host_gathered, bytes);
    if (*r == TG_OK)
      st = tg_gpu_upload(g->gpu, g->gathered, g->host_gathered, (size_t)g->world * bytes);
  }
  for (uint32_t q = 0; *r == TG_OK && st == TG_MODEL_OK && q < g->world; q++) {
    size_t b, e;
    tg_shard_range(g->P, g->world, q, &b, &e);
    st = tg_gpu_copy_device(g->gpu, params + b, g->gathered + (size_t)q * g->slice,
                            (e - b) * sizeof(float));
  }
  return st == TG_MODEL_OK ? 0 : fail(g, "placing the gathered parameters", st);
}

int train_gpu_update(train_gpu *g, tg_trainer *t, tg_result *r, float *loss) {
  int64_t limbs[TG_FIXED_SQNORM_LIMBS];
  *r = TG_OK;
  if (all_reduce_i64(g, t, g->acc, g->host_acc, g->P + 1, r) != 0 || *r != TG_OK)
    return *r == TG_OK ? -1 : 0;
  tg_model_status st = tg_gpu_step_mean(g->model, &g->plan, g->acc, loss);
  if (st == TG_MODEL_OK)
    st = tg_gpu_fixed_sqnorm(g->gpu, tg_gpu_model_grads(g->model), g->begin, g->end, g->limbs);
  if (st != TG_MODEL_OK) return fail(g, "the mean gradient and its norm", st);
  if (all_reduce_i64(g, t, g->limbs, limbs, TG_FIXED_SQNORM_LIMBS, r) != 0 || *r != TG_OK)
    return *r == TG_OK ? -1 : 0;
  if (g->device_buffers) st = tg_gpu_download(g->gpu, limbs, g->limbs, sizeof limbs);
  if (st == TG_MODEL_OK)
    st = tg_gpu_adamw_update(g->opt, tg_gpu_model_params(g->model), tg_gpu_model_grads(g->model),
                             tg_fixed_sqnorm_to_norm(limbs));
  if (st != TG_MODEL_OK) return fail(g, "the AdamW update", st);
  return gather_params(g, t, r);
}

int train_gpu_copy_out(train_gpu *g) {
  size_t own = (g->end - g->begin) * sizeof(float);
  tg_gpu_copy copies[3] = {
      {g->host_params, tg_gpu_model_params(g->model), g->P * sizeof(float)},
      {g->m_stage, tg_gpu_adamw_m(g->opt), own},
      {g->v_stage, tg_gpu_adamw_v(g->opt), own},
  };
  tg_model_status st = tg_gpu_snapshot_copy(g->gpu, copies, 3);
  return st == TG_MODEL_OK ? 0 : fail(g, "starting the snapshot copy", st);
}

int train_gpu_copy_wait(train_gpu *g) {
  tg_model_status st = tg_gpu_snapshot_wait(g->gpu);
  return st == TG_MODEL_OK ? 0 : fail(g, "the snapshot copy", st);
}
