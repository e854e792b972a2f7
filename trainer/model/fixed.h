/* Exact gradient sums in int64 fixed point.
 *
 * The project's invariant is that a run with failures and world-size
 * changes ends with parameters bitwise equal to a fault-free run. The data
 * order and the global batch are fixed, but a float sum depends on the order
 * and grouping of its terms: 8 ranks summing 8 micro-batch gradients in a
 * tree and 6 ranks doing it with accumulation give different last bits, and
 * AdamW amplifies them. So gradients are summed as integers, which is exact
 * and associative:
 *
 *   q = round_to_nearest_even(g * 2^TG_FIXED_FRAC_BITS)     (int64, per element)
 *
 * The rounding of each term depends only on the term itself (one
 * micro-batch's float gradient, computed the same way on any rank), so any
 * grouping of the integer sum, locally or in the communicator's int64
 * all-reduce, gives the same integers, and tg_fixed_to_float turns them
 * into the same mean gradient floats whatever the world size was.
 *
 * Scale and range: 32 fractional bits (resolution 2^-32 = 2.3e-10, finer
 * than float's precision for gradients above ~1e-3 and far finer than
 * AdamW cares about below). A term must satisfy |g| <= TG_FIXED_MAX_ABS =
 * 2^15, i.e. |q| <= 2^47; then any sum of up to TG_FIXED_MAX_TERMS =
 * 2^16 - 1 terms fits in int64 (below 2^63) whichever order it is added in.
 * A larger gradient element means the run has diverged: ERANGE, as NaN/Inf
 * give ENONFINITE; the trainer drops or retries the step on every rank.
 *
 * The global gradient norm for clipping has the same problem (a sum of
 * squares over shards) and the same cure: each element's square is exact in
 * double, scaled by 2^64 it is an exact 128-bit integer, and the shard's
 * sum is exported as TG_FIXED_SQNORM_LIMBS base-2^32 limbs held in int64,
 * which the communicator all-reduces like any int64 buffer (no carries are
 * needed until up to 2^31 shards have been added). */
#ifndef TG_FIXED_H
#define TG_FIXED_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/model/status.h"

#define TG_FIXED_FRAC_BITS 32
#define TG_FIXED_MAX_ABS 32768.0f     /* 2^15: largest |g| one term may hold */
#define TG_FIXED_MAX_TERMS 65535u     /* 2^16 - 1: terms a sum may have without overflow */
#define TG_FIXED_SQNORM_LIMBS 4       /* 128-bit squared norm as 4 x 32-bit limbs */
#define TG_FIXED_SQNORM_FRAC_BITS 64

/* acc[i] += round(g[i] * 2^32) for i < n. Fails on the first element that
 * is not finite (ENONFINITE), above TG_FIXED_MAX_ABS (ERANGE), or whose
 * addition would overflow int64 (EOVERFLOW); then *bad_index (if not NULL)
 * is that element and acc is partly updated: the step must be discarded. */
tg_model_status tg_fixed_accumulate(int64_t *acc, const float *g, size_t n, size_t *bad_index);

/* acc[i] += add[i]: the reduction the communicator performs, checked for
 * overflow (EOVERFLOW, acc partly updated). */
tg_model_status tg_fixed_add(int64_t *acc, const int64_t *add, size_t n);

/* out[i] = acc[i] * 2^-32 / terms, rounded to float: the mean of `terms`
 * accumulated gradients. A function of the integers alone. terms >= 1. */
tg_model_status tg_fixed_to_float(float *out, const int64_t *acc, size_t n, uint64_t terms);

/* One scalar (a loss) as one fixed-point term, and back; same scale. */
tg_model_status tg_fixed_from_scalar(double value, int64_t *out);
double tg_fixed_to_scalar(int64_t value, uint64_t terms);

/* The squared L2 norm of g[begin, end) as limbs (limbs[0] least
 * significant), exact at 2^-64 resolution per element. Sum the limbs of all
 * shards with tg_fixed_add (or an int64 all-reduce), then
 * tg_fixed_sqnorm_to_norm gives the global norm, the same whatever the
 * split. ERANGE/ENONFINITE as tg_fixed_accumulate. */
tg_model_status tg_fixed_sqnorm(const float *g, size_t begin, size_t end,
                                int64_t limbs[TG_FIXED_SQNORM_LIMBS]);
double tg_fixed_sqnorm_to_norm(const int64_t limbs[TG_FIXED_SQNORM_LIMBS]);

#endif
