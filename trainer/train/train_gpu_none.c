/* tg-train's GPU path where there is none (see train_gpu.h): the CPU
 * binary tg-train, which does not load cuBLAS (its start costs ~0.4 s),
 * so --device cuda can only say where the GPU path is: tg-train-cuda,
 * built where CUDA is installed (bazel/cuda.bzl). */
#include "trainer/train/train_gpu.h"

#include <stdio.h>

int train_gpu_built(char *err, size_t errlen) {
  if (err && errlen)
    snprintf(err, errlen,
             "this is the CPU build of tg-train; run tg-train-cuda (//trainer:tg-train-cuda, "
             "built where /usr/local/cuda or $TG_CUDA_PATH exists), or use --device cpu");
  return 0;
}

train_gpu *train_gpu_new(tg_trainer *t, const tg_model_config *mc, const tg_batch_plan *plan,
                         const tg_adamw_config *ac, char *err, size_t errlen) {
  (void)t, (void)mc, (void)plan, (void)ac;
  train_gpu_built(err, errlen);
  return NULL;
}

/* Never reached: there is no train_gpu without CUDA. */
void train_gpu_free(train_gpu *g) { (void)g; }
const char *train_gpu_error(const train_gpu *g) { (void)g; return "built without CUDA"; }
int train_gpu_device(const train_gpu *g) { (void)g; return -1; }
const tg_model *train_gpu_layout(const train_gpu *g) { (void)g; return NULL; }
float *train_gpu_host_params(train_gpu *g) { (void)g; return NULL; }
int train_gpu_world(train_gpu *g, uint32_t W, uint32_t R, float **m_stage, float **v_stage) {
  (void)g, (void)W, (void)R, (void)m_stage, (void)v_stage;
  return -1;
}
int train_gpu_load(train_gpu *g, uint64_t step) { (void)g, (void)step; return -1; }
int train_gpu_init(train_gpu *g, uint64_t seed) { (void)g, (void)seed; return -1; }
int train_gpu_compute(train_gpu *g, const tg_corpus *c, uint64_t step, uint32_t chunk_begin,
                      uint32_t chunk_end) {
  (void)g, (void)c, (void)step, (void)chunk_begin, (void)chunk_end;
  return -1;
}
int train_gpu_update(train_gpu *g, tg_trainer *t, tg_result *r, float *loss) {
  (void)g, (void)t, (void)r, (void)loss;
  return -1;
}
int train_gpu_copy_out(train_gpu *g) { (void)g; return -1; }
int train_gpu_copy_wait(train_gpu *g) { (void)g; return -1; }
