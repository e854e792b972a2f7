/* AdamW with its state sharded across ranks (ZeRO stage 1).
 *
 * Every rank holds the whole parameter array and, after the gradient
 * all-reduce, the whole mean gradient; but the moments m and v (twice the
 * model's size) exist only for the slice [begin, end) the rank owns, from
 * tg_shard_range(P, world, rank). tg_adamw_update changes only that slice
 * of the parameters; the trainer then all-gathers the slices. Each element's
 * update depends on that element alone plus values every rank shares (the
 * step, the learning rate, the clip factor), so W shards give bitwise the
 * parameters of one unsharded update. The library is compiled with
 * -ffp-contract=off so no compiler fuses a*b+c differently in vectorised
 * and scalar code.
 *
 * Gradient clipping needs the GLOBAL gradient norm, a sum over all shards:
 * the caller computes it (tg_fixed_sqnorm on its slice, an int64 all-reduce
 * of the limbs, tg_fixed_sqnorm_to_norm) and passes it in, so this module
 * never talks to the communicator and the norm is the same bits whatever
 * the world size.
 *
 * State for a snapshot: m and v of the slice and the step counter. When the
 * world size changes, tg_adamw_load_shards builds a new rank's slice from
 * the old world's shards. */
#ifndef TG_ADAMW_H
#define TG_ADAMW_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/model/status.h"

typedef struct tg_adamw tg_adamw;

typedef struct {
  float lr;             /* peak learning rate; > 0 */
  float lr_min;         /* floor the cosine decays to; 0 <= lr_min <= lr */
  uint64_t warmup_steps;/* linear warmup from lr / warmup to lr */
  uint64_t decay_steps; /* cosine from lr (at the end of warmup) to lr_min at
                         * this step; 0: constant lr after warmup */
  float beta1, beta2;   /* in [0, 1) */
  float eps;            /* > 0 */
  float weight_decay;   /* decoupled, applied to spans marked decay; >= 0 */
  float grad_clip;      /* clip the global norm to this; 0: no clipping */
} tg_adamw_config;

/* A span [begin, end) of the flat parameter array that takes weight decay
 * (tg_model_tensor entries with decay set). */
typedef struct {
  size_t begin, end;
} tg_adamw_span;

/* AdamW over the slice [begin, end) of `num_params` parameters, with zero
 * moments at step 0. decay_spans (sorted or not, any slice) say which
 * parameters decay; only their overlap with the slice is kept. NULL with
 * the reason in err on a bad config or range, or no memory. */
tg_adamw *tg_adamw_new(const tg_adamw_config *cfg, size_t num_params, size_t begin, size_t end,
                       const tg_adamw_span *decay_spans, size_t span_count, char *err,
                       size_t errlen);
void tg_adamw_free(tg_adamw *opt);

/* The learning rate at step (0-based): warmup then cosine. */
float tg_adamw_lr(const tg_adamw_config *cfg, uint64_t step);

/* The scalars every element's update of one step shares. An update
 * implemented elsewhere (the GPU one, trainer/model/cuda) takes them from
 * here so that its elements see the same bits as tg_adamw_update's. */
typedef struct {
  float lr;          /* tg_adamw_lr at the step */
  float bias1;       /* 1 - beta1^(step + 1) */
  float bias2;       /* 1 - beta2^(step + 1) */
  float clip_scale;  /* min(1, grad_clip / grad_norm); 1 without clipping */
} tg_adamw_scalars;

/* The scalars of the update that takes the counter from step to step + 1.
 * EINVAL for an invalid config or a negative or NaN grad_norm, ENONFINITE
 * for an infinite one. */
tg_model_status tg_adamw_scalars_at(const tg_adamw_config *cfg, uint64_t step, double grad_norm,
                                    tg_adamw_scalars *out);

/* One step on the owned slice: params[i] for begin <= i < end, from
 * grads[i] (both arrays indexed like the flat layout, full length P),
 * scaled by min(1, grad_clip / grad_norm). Increments the step counter.
 * EINVAL for NULL arrays or a negative or NaN grad_norm. */
tg_model_status tg_adamw_update(tg_adamw *opt, float *params, const float *grads,
                                double grad_norm);

uint64_t tg_adamw_step(const tg_adamw *opt);     /* steps taken so far */
size_t tg_adamw_begin(const tg_adamw *opt);
size_t tg_adamw_end(const tg_adamw *opt);
float *tg_adamw_m(tg_adamw *opt);                /* end - begin floats */
float *tg_adamw_v(tg_adamw *opt);                /* end - begin floats */

/* Restores this rank's slice from the `old_world` shards of a snapshot
 * (old_m[r], old_v[r] hold old rank r's slice of the same P parameters)
 * and sets the step counter: what a rank does when the world re-forms at
 * another size. */
tg_model_status tg_adamw_load_shards(tg_adamw *opt, uint32_t old_world,
                                     const float *const *old_m, const float *const *old_v,
                                     uint64_t step);

#endif
