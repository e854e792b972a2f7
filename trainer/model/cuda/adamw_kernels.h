/* Launcher of the AdamW element update (adamw_kernels.cu), for
 * gpu_adamw.c. Enqueues on `stream` (a cudaStream_t); returns the launch's
 * cudaError_t as an int. */
#ifndef TG_ADAMW_KERNELS_H
#define TG_ADAMW_KERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The scalars of one update (tg_adamw_scalars plus the config's). */
typedef struct {
  float lr, bias1, bias2, clip_scale;
  float beta1, beta2, eps;
  float weight_decay; /* 0 for a run of parameters that does not decay */
} tg_gpuk_adamw_args;

/* For i in [lo, hi): params[i] and the moments m[i - begin], v[i - begin]
 * take one AdamW step from grads[i], as adamw.c's update_range. */
int tg_gpuk_adamw_update(void *stream, float *params, const float *grads, float *m, float *v,
                         size_t lo, size_t hi, size_t begin, const tg_gpuk_adamw_args *args);

#ifdef __cplusplus
}
#endif

#endif
