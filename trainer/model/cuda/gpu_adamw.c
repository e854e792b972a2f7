/* AdamW on one rank's slice, on the GPU (see gpu_adamw.h). The slice is
 * walked tensor by tensor of the layout: each tensor that overlaps it is
 * one launch, with the configured weight decay if the tensor decays and
 * none otherwise, which is the rule tg_step_optimizer_new gives the CPU
 * optimizer through its decay spans. */
#include "trainer/model/cuda/gpu_adamw.h"

#include <stdio.h>
#include <stdlib.h>

#include "trainer/model/cuda/adamw_kernels.h"
#include "trainer/model/cuda/gpu_internal.h"

struct tg_gpu_adamw {
  tg_gpu *gpu;
  tg_adamw_config cfg;
  const tg_model *layout;
  size_t begin, end;
  uint64_t step;
  float *m, *v; /* device */
};

tg_gpu_adamw *tg_gpu_adamw_new(tg_gpu *g, const tg_adamw_config *cfg, const tg_model *layout,
                               size_t begin, size_t end, char *err, size_t errlen) {
  tg_adamw_scalars probe;
  const char *why = NULL;
  if (!g || !layout) why = "no GPU context or model layout";
  else if (tg_adamw_scalars_at(cfg, 0, 0.0, &probe) != TG_MODEL_OK)
    why = "invalid AdamW config (lr, betas, eps, weight decay or clip)";
  else if (begin > end || end > tg_model_num_params(layout))
    why = "slice outside the parameter array";
  if (why) {
    if (err && errlen) snprintf(err, errlen, "%s", why);
    return NULL;
  }
  tg_gpu_adamw *opt = calloc(1, sizeof *opt);
  if (!opt) {
    if (err && errlen) snprintf(err, errlen, "out of memory for the GPU AdamW");
    return NULL;
  }
  opt->gpu = g;
  opt->cfg = *cfg;
  opt->layout = layout;
  opt->begin = begin;
  opt->end = end;
  opt->m = tg_gpu_alloc(g, (end - begin) * sizeof(float));
  opt->v = opt->m ? tg_gpu_alloc(g, (end - begin) * sizeof(float)) : NULL;
  if (!opt->v) {
    if (err && errlen) snprintf(err, errlen, "%s", tg_gpu_last_error(g));
    tg_gpu_adamw_free(opt);
    return NULL;
  }
  return opt;
}

void tg_gpu_adamw_free(tg_gpu_adamw *opt) {
  if (!opt) return;
  tg_gpu_free(opt->gpu, opt->m);
  tg_gpu_free(opt->gpu, opt->v);
  free(opt);
}

tg_model_status tg_gpu_adamw_update(tg_gpu_adamw *opt, float *params_dev, const float *grads_dev,
                                    double grad_norm) {
  if (!opt || !params_dev || !grads_dev) return TG_MODEL_EINVAL;
  tg_adamw_scalars s;
  tg_model_status st = tg_adamw_scalars_at(&opt->cfg, opt->step, grad_norm, &s);
  if (st != TG_MODEL_OK) return st;
  tg_gpu *g = opt->gpu;
  st = tg_gpu_fence(g); /* a snapshot may still be reading params, m or v */
  tg_gpuk_adamw_args a = {.lr = s.lr,
                          .bias1 = s.bias1,
                          .bias2 = s.bias2,
                          .clip_scale = s.clip_scale,
                          .beta1 = opt->cfg.beta1,
                          .beta2 = opt->cfg.beta2,
                          .eps = opt->cfg.eps};
  for (size_t k = 0; st == TG_MODEL_OK && k < tg_model_tensor_count(opt->layout); k++) {
    tg_model_tensor t;
    tg_model_tensor_at(opt->layout, k, &t);
    size_t lo = t.offset > opt->begin ? t.offset : opt->begin;
    size_t hi = t.offset + t.count < opt->end ? t.offset + t.count : opt->end;
    if (lo >= hi) continue;
    a.weight_decay = t.decay ? opt->cfg.weight_decay : 0.0f;
    st = tg_gpu_cuda(g,
                     (cudaError_t)tg_gpuk_adamw_update(g->compute, params_dev, grads_dev, opt->m,
                                                       opt->v, lo, hi, opt->begin, &a),
                     "AdamW update");
  }
  if (st == TG_MODEL_OK) opt->step++;
  return st;
}

uint64_t tg_gpu_adamw_step(const tg_gpu_adamw *opt) { return opt ? opt->step : 0; }
size_t tg_gpu_adamw_begin(const tg_gpu_adamw *opt) { return opt ? opt->begin : 0; }
size_t tg_gpu_adamw_end(const tg_gpu_adamw *opt) { return opt ? opt->end : 0; }
float *tg_gpu_adamw_m(tg_gpu_adamw *opt) { return opt ? opt->m : NULL; }
float *tg_gpu_adamw_v(tg_gpu_adamw *opt) { return opt ? opt->v : NULL; }

tg_model_status tg_gpu_adamw_load(tg_gpu_adamw *opt, const float *m_host, const float *v_host,
                                  uint64_t step) {
  if (!opt || !m_host || !v_host) return TG_MODEL_EINVAL;
  size_t bytes = (opt->end - opt->begin) * sizeof(float);
  tg_model_status st = tg_gpu_upload(opt->gpu, opt->m, m_host, bytes);
  if (st == TG_MODEL_OK) st = tg_gpu_upload(opt->gpu, opt->v, v_host, bytes);
  if (st == TG_MODEL_OK) opt->step = step;
  return st;
}
