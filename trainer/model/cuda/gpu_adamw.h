/* AdamW with ZeRO-1 sharded state on the GPU: trainer/model/adamw.h with
 * the moments of this rank's slice [begin, end) in device memory.
 *
 * The update of each element is adamw.c's expression with the scalars of
 * tg_adamw_scalars_at, so the same parameters, gradients and moments give
 * the CPU's bits. Weight decay applies to the layout's 2-D tensors, as
 * tg_step_optimizer_new sets it up on the CPU. For snapshots and restores
 * the moments travel through host buffers: tg_gpu_adamw_m/v are device
 * pointers to copy from, tg_gpu_adamw_load copies host moments in (after
 * tg_restore, or after cutting them from an old world's shards with
 * tg_shard_copy). */
#ifndef TG_GPU_ADAMW_H
#define TG_GPU_ADAMW_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/model/adamw.h"
#include "trainer/model/cuda/gpu.h"
#include "trainer/model/model.h"

typedef struct tg_gpu_adamw tg_gpu_adamw;

/* AdamW over [begin, end) of layout's P parameters, zero moments at step
 * 0. NULL with the reason in err. The context and layout must outlive it. */
tg_gpu_adamw *tg_gpu_adamw_new(tg_gpu *g, const tg_adamw_config *cfg, const tg_model *layout,
                               size_t begin, size_t end, char *err, size_t errlen);
void tg_gpu_adamw_free(tg_gpu_adamw *opt);

/* Enqueues one step on the slice: params_dev[i], begin <= i < end, from
 * grads_dev[i] (both full-length device arrays), clipped by grad_norm, and
 * increments the step. EINVAL / ENONFINITE as tg_adamw_update. */
tg_model_status tg_gpu_adamw_update(tg_gpu_adamw *opt, float *params_dev, const float *grads_dev,
                                    double grad_norm);

uint64_t tg_gpu_adamw_step(const tg_gpu_adamw *opt);
size_t tg_gpu_adamw_begin(const tg_gpu_adamw *opt);
size_t tg_gpu_adamw_end(const tg_gpu_adamw *opt);
float *tg_gpu_adamw_m(tg_gpu_adamw *opt); /* device, end - begin floats */
float *tg_gpu_adamw_v(tg_gpu_adamw *opt); /* device, end - begin floats */

/* Copies the slice's moments from host memory (end - begin floats each)
 * and sets the step counter; returns when done. */
tg_model_status tg_gpu_adamw_load(tg_gpu_adamw *opt, const float *m_host, const float *v_host,
                                  uint64_t step);

#endif
