/* Launchers of the fixed-point kernels (fixed_kernels.cu): the device side
 * of trainer/model/fixed.h, element for element the same integers as the
 * CPU functions. Each enqueues on `stream` (a cudaStream_t) and returns the
 * launch's cudaError_t as an int; what the CPU functions return as a
 * status, the kernels report by setting TG_GPU_FLAG_* bits in *flags
 * (device memory), which tg_gpu_finish reads. */
#ifndef TG_FIXED_KERNELS_H
#define TG_FIXED_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TG_GPU_FLAG_NONFINITE 1
#define TG_GPU_FLAG_RANGE 2
#define TG_GPU_FLAG_OVERFLOW 4

/* acc[i] += round_half_even(g[i] * 2^32): tg_fixed_accumulate. */
int tg_gpuk_fixed_accumulate(void *stream, int64_t *acc, const float *g, size_t n, int *flags);

/* *acc += the fixed-point term of the scalar *value (device float):
 * tg_fixed_from_scalar then tg_fixed_add. */
int tg_gpuk_fixed_add_scalar(void *stream, int64_t *acc, const float *value, int *flags);

/* out[i] = (float)(acc[i] * 2^-32 * inv_terms): tg_fixed_to_float with
 * inv_terms = 1.0 / terms computed by the caller as the CPU does. */
int tg_gpuk_fixed_to_float(void *stream, float *out, const int64_t *acc, size_t n,
                           double inv_terms);

/* limbs[0..4) = the squared norm of g[0, n) as tg_fixed_sqnorm writes it.
 * scratch holds TG_GPU_REDUCE_BLOCKS 16-byte partial sums. n < 2^34, so
 * the 128-bit sum cannot wrap. */
int tg_gpuk_fixed_sqnorm(void *stream, int64_t *limbs, const float *g, size_t n, void *scratch,
                         unsigned scratch_blocks, int *flags);

#ifdef __cplusplus
}
#endif

#endif
