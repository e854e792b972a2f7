/* The compute half of one data-parallel training step, without the
 * communication: which samples a rank processes and how their gradients
 * become an exact, world-size-independent sum.
 *
 * The global batch B of a step is cut into B / M chunks of M samples
 * (micro_batch M is fixed for the run, like B); chunk c of step s holds the
 * samples s*B + c*M .. s*B + c*M + M-1. A world of W ranks splits the chunks
 * with tg_shard_range(B / M, W, rank); a rank runs its chunks one after the
 * other (gradient accumulation absorbs a smaller world). Each chunk's float
 * gradient is computed the same way on any rank and added to an int64
 * accumulator in fixed point (fixed.h), so after the communicator's int64
 * all-reduce every world size holds the same integers. A step of the
 * trainer then reads:
 *
 *   zero acc (tg_step_acc_len entries)
 *   tg_step_accumulate(my chunks)          -> acc
 *   all-reduce(acc, int64 sum)             (communicator)
 *   tg_step_mean                           -> mean gradient, mean loss
 *   tg_fixed_sqnorm(grads, my slice)       -> limbs
 *   all-reduce(limbs, int64 sum)           (communicator)
 *   tg_adamw_update(norm from the limbs)   -> my slice of the parameters
 *   all-gather(parameter slices)           (communicator)
 *
 * The accumulator holds the P gradient sums followed by one loss sum, so a
 * single all-reduce carries both. */
#ifndef TG_STEP_H
#define TG_STEP_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/model/adamw.h"
#include "trainer/model/corpus.h"
#include "trainer/model/model.h"
#include "trainer/model/status.h"

typedef struct {
  uint32_t global_batch; /* B: samples per step, fixed for the run; >= 1 */
  uint32_t micro_batch;  /* M: samples per chunk; divides B; <= the model's max_batch */
} tg_batch_plan;

/* B / M, or 0 if the plan is invalid. At most TG_FIXED_MAX_TERMS. */
uint32_t tg_step_chunk_count(const tg_batch_plan *plan);

/* First global sample index of chunk `chunk` of step `step`. */
uint64_t tg_step_first_sample(const tg_batch_plan *plan, uint64_t step, uint32_t chunk);

/* int64 entries of a step accumulator for model m: P + 1. */
size_t tg_step_acc_len(const tg_model *m);

/* For each chunk in [chunk_begin, chunk_end) of `step`: loads its samples,
 * runs forward and backward and adds gradient and loss in fixed point to
 * acc. Errors of any of those are passed up (ENONFINITE / ERANGE: the run
 * diverged); acc is then unusable for this step. */
tg_model_status tg_step_accumulate(tg_model *m, const tg_corpus *c, const tg_batch_plan *plan,
                                   uint64_t step, uint32_t chunk_begin, uint32_t chunk_end,
                                   int64_t *acc);

/* From the all-reduced accumulator: the mean gradient over the step's
 * chunks into tg_model_grads(m) and the mean loss into *loss (may be NULL). */
tg_model_status tg_step_mean(tg_model *m, const tg_batch_plan *plan, const int64_t *acc,
                             float *loss);

/* The AdamW of rank `rank` of `world`: its ZeRO-1 slice of m's parameters
 * (tg_shard_range) with weight decay on the model's 2-D tensors. NULL with
 * the reason in err. */
tg_adamw *tg_step_optimizer_new(const tg_model *m, const tg_adamw_config *cfg, uint32_t world,
                                uint32_t rank, char *err, size_t errlen);

#endif
