/* Chunked gradient accumulation in fixed point on the GPU (see
 * gpu_step.h): step.c's loop with the forward, backward and integer sums
 * enqueued on the compute stream, so the host only loads samples while
 * the GPU works through the chunks. */
#include "trainer/model/cuda/gpu_step.h"

#include <stdlib.h>

#include "trainer/model/cuda/fixed_kernels.h"
#include "trainer/model/cuda/gpu_internal.h"

#define SQNORM_MAX_TERMS ((size_t)1 << 34) /* terms < 2^94: their sum stays below 2^128 */

tg_model_status tg_gpu_fixed_accumulate(tg_gpu *g, int64_t *acc_dev, const float *g_dev,
                                        size_t n) {
  if (!g || (n && (!acc_dev || !g_dev))) return TG_MODEL_EINVAL;
  return tg_gpu_cuda(g,
                     (cudaError_t)tg_gpuk_fixed_accumulate(g->compute, acc_dev, g_dev, n, g->flags),
                     "fixed-point accumulate");
}

tg_model_status tg_gpu_step_accumulate(tg_gpu_model *m, const tg_corpus *c,
                                       const tg_batch_plan *plan, uint64_t step,
                                       uint32_t chunk_begin, uint32_t chunk_end,
                                       int64_t *acc_dev) {
  uint32_t chunks = tg_step_chunk_count(plan);
  if (!m || !c || !acc_dev || chunks == 0 || chunk_begin > chunk_end || chunk_end > chunks)
    return TG_MODEL_EINVAL;
  tg_gpu *g = tg_gpu_model_gpu(m);
  const tg_model_config *cfg = tg_model_config_of(tg_gpu_model_layout(m));
  size_t n = (size_t)plan->micro_batch * cfg->context;
  size_t P = tg_gpu_model_num_params(m);
  tg_model_status st = TG_MODEL_OK;
  uint8_t *tokens = malloc(n), *targets = malloc(n);
  if (!tokens || !targets) st = TG_MODEL_ENOMEM;
  for (uint32_t k = chunk_begin; st == TG_MODEL_OK && k < chunk_end; k++) {
    st = tg_corpus_batch(c, tg_step_first_sample(plan, step, k), plan->micro_batch, tokens,
                         targets);
    if (st == TG_MODEL_OK) st = tg_gpu_model_forward(m, tokens, targets, plan->micro_batch, NULL);
    if (st == TG_MODEL_OK) st = tg_gpu_model_backward(m);
    if (st == TG_MODEL_OK) st = tg_gpu_fixed_accumulate(g, acc_dev, tg_gpu_model_grads(m), P);
    if (st == TG_MODEL_OK)
      st = tg_gpu_cuda(g,
                       (cudaError_t)tg_gpuk_fixed_add_scalar(g->compute, acc_dev + P,
                                                             tg_gpu_model_loss(m), g->flags),
                       "fixed-point loss");
  }
  free(tokens);
  free(targets);
  return st;
}

tg_model_status tg_gpu_step_mean(tg_gpu_model *m, const tg_batch_plan *plan,
                                 const int64_t *acc_dev, float *loss) {
  uint32_t chunks = tg_step_chunk_count(plan);
  if (!m || !acc_dev || chunks == 0) return TG_MODEL_EINVAL;
  tg_gpu *g = tg_gpu_model_gpu(m);
  size_t P = tg_gpu_model_num_params(m);
  double inv_terms = 1.0 / (double)chunks; /* as tg_fixed_to_float computes it */
  tg_model_status st = tg_gpu_cuda(
      g,
      (cudaError_t)tg_gpuk_fixed_to_float(g->compute, tg_gpu_model_grads(m), acc_dev, P,
                                          inv_terms),
      "fixed-point mean");
  if (st == TG_MODEL_OK && loss) {
    int64_t loss_sum;
    st = tg_gpu_download(g, &loss_sum, acc_dev + P, sizeof loss_sum);
    if (st == TG_MODEL_OK) *loss = (float)tg_fixed_to_scalar(loss_sum, chunks);
  }
  return st;
}

tg_model_status tg_gpu_fixed_sqnorm(tg_gpu *g, const float *g_dev, size_t begin, size_t end,
                                    int64_t *limbs_dev) {
  if (!g || !limbs_dev || begin > end || end - begin >= SQNORM_MAX_TERMS ||
      (!g_dev && end > begin))
    return TG_MODEL_EINVAL;
  return tg_gpu_cuda(g,
                     (cudaError_t)tg_gpuk_fixed_sqnorm(g->compute, limbs_dev, g_dev ? g_dev + begin : NULL,
                                                       end - begin, g->scratch,
                                                       TG_GPU_REDUCE_BLOCKS, g->flags),
                     "fixed-point squared norm");
}
