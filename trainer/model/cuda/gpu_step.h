/* One training step's compute on the GPU: trainer/model/step.h and the
 * fixed-point sums of fixed.h with the accumulator, the gradients and the
 * norm's limbs in device memory.
 *
 * The recipe is step.h's; only where the numbers live changes:
 *
 *   zero acc (device, tg_step_acc_len entries)
 *   tg_gpu_step_accumulate(my chunks)         -> acc, enqueued
 *   tg_gpu_finish                             -> divergence found by kernels
 *   all-reduce(acc, int64 sum)                (communicator; device or staged)
 *   tg_gpu_step_mean                          -> mean gradient (device), mean loss
 *   tg_gpu_fixed_sqnorm(grads, my slice)      -> limbs (device)
 *   all-reduce(limbs, int64 sum)              (communicator)
 *   tg_gpu_adamw_update                       -> my slice of the parameters
 *   all-gather(parameter slices)              (communicator)
 *
 * The fixed-point conversion of a gradient element and the mean are the
 * CPU's integers and floats bit for bit (fixed_kernels.cu says why), so
 * the exact-sum argument of fixed.h holds between CPU and GPU ranks too;
 * the gradients themselves differ from the CPU's in their last bits. */
#ifndef TG_GPU_STEP_H
#define TG_GPU_STEP_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/model/corpus.h"
#include "trainer/model/cuda/gpu.h"
#include "trainer/model/cuda/gpu_model.h"
#include "trainer/model/fixed.h"
#include "trainer/model/step.h"

/* For each chunk in [chunk_begin, chunk_end) of `step`: loads its samples
 * (host), enqueues forward and backward and the fixed-point addition of
 * gradient and loss to acc_dev (P + 1 int64 on the device). Returns once
 * enqueued: a diverged chunk (ENONFINITE, ERANGE, EOVERFLOW) shows at the
 * next tg_gpu_finish, and acc is then unusable for this step. */
tg_model_status tg_gpu_step_accumulate(tg_gpu_model *m, const tg_corpus *c,
                                       const tg_batch_plan *plan, uint64_t step,
                                       uint32_t chunk_begin, uint32_t chunk_end,
                                       int64_t *acc_dev);

/* From the all-reduced accumulator (device): the mean gradient over the
 * step's chunks into tg_gpu_model_grads and the mean loss into *loss (may
 * be NULL; reading it waits for the GPU). */
tg_model_status tg_gpu_step_mean(tg_gpu_model *m, const tg_batch_plan *plan,
                                 const int64_t *acc_dev, float *loss);

/* acc_dev[i] += the fixed-point term of g_dev[i], i < n: tg_fixed_accumulate
 * on the device (errors at tg_gpu_finish). */
tg_model_status tg_gpu_fixed_accumulate(tg_gpu *g, int64_t *acc_dev, const float *g_dev,
                                        size_t n);

/* limbs_dev (TG_FIXED_SQNORM_LIMBS int64 on the device) = the squared norm
 * of g_dev[begin, end): tg_fixed_sqnorm's limbs, enqueued (ERANGE or
 * ENONFINITE at tg_gpu_finish). EINVAL for a slice of 2^34 or more. */
tg_model_status tg_gpu_fixed_sqnorm(tg_gpu *g, const float *g_dev, size_t begin, size_t end,
                                    int64_t *limbs_dev);

#endif
