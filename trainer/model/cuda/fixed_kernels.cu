// Fixed-point gradient sums on the GPU (see fixed_kernels.h and
// trainer/model/fixed.h). Every value is a pure function of one element,
// computed with operations that round exactly as the CPU's do (conversions
// to and from int64 round to nearest even, scaling by powers of two is
// exact), so the integers equal the CPU's bit for bit; integer sums are
// associative, so the squared norm's reduction tree does not matter either.
#include "trainer/model/cuda/fixed_kernels.h"

#include <cuda_runtime.h>
#include <math.h>

namespace {

constexpr int kThreads = 256;
constexpr size_t kMaxBlocks = 1 << 20;
constexpr double kMaxAbs = 32768.0;            // TG_FIXED_MAX_ABS
constexpr double kScale = 4294967296.0;        // 2^TG_FIXED_FRAC_BITS
constexpr double kInvScale = 1.0 / 4294967296.0;
constexpr double kTwo64 = 18446744073709551616.0;  // 2^64

typedef unsigned __int128 u128;

unsigned blocks_for(size_t n) {
  size_t b = (n + kThreads - 1) / kThreads;
  if (b == 0) b = 1;
  return (unsigned)(b < kMaxBlocks ? b : kMaxBlocks);
}

__device__ size_t global_index() { return (size_t)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ size_t global_stride() { return (size_t)gridDim.x * blockDim.x; }

// One term, as fixed.c's to_fixed: 0 and *q set, or the flag to raise.
__device__ int to_fixed(double g, long long *q) {
  if (!isfinite(g)) return TG_GPU_FLAG_NONFINITE;
  if (fabs(g) > kMaxAbs) return TG_GPU_FLAG_RANGE;
  *q = __double2ll_rn(g * kScale);
  return 0;
}

// *acc += q, or the overflow flag (acc then holds the wrapped sum, like
// the CPU's partly updated accumulator: the step is discarded).
__device__ int add_checked(long long *acc, long long q) {
  long long a = *acc;
  long long s = (long long)((unsigned long long)a + (unsigned long long)q);
  *acc = s;
  return ((a ^ s) & (q ^ s)) < 0 ? TG_GPU_FLAG_OVERFLOW : 0;
}

__global__ void accumulate_kernel(long long *acc, const float *g, size_t n, int *flags) {
  for (size_t i = global_index(); i < n; i += global_stride()) {
    long long q;
    int bad = to_fixed((double)g[i], &q);
    if (!bad) bad = add_checked(&acc[i], q);
    if (bad) atomicOr(flags, bad);
  }
}

__global__ void add_scalar_kernel(long long *acc, const float *value, int *flags) {
  long long q;
  int bad = to_fixed((double)*value, &q);
  if (!bad) bad = add_checked(acc, q);
  if (bad) atomicOr(flags, bad);
}

__global__ void to_float_kernel(float *out, const long long *acc, size_t n, double inv_terms) {
  for (size_t i = global_index(); i < n; i += global_stride())
    out[i] = (float)(((double)acc[i] * kInvScale) * inv_terms);
}

// trunc(x * x * 2^64) as fixed.c's (unsigned __int128)ldexp(x * x, 64):
// x * x is exact in double and below 2^30; its integer part and its
// fraction (exact) scaled by 2^64 (exact, below 2^64) are the two halves.
__device__ u128 square_term(double x) {
  double y = x * x;
  unsigned long long hi = __double2ull_rz(y);
  double frac = y - (double)hi;
  unsigned long long lo = __double2ull_rz(frac * kTwo64);
  return ((u128)hi << 64) | lo;
}

__global__ void sqnorm_partial_kernel(u128 *partial, const float *g, size_t n, int *flags) {
  __shared__ u128 part[kThreads];
  u128 s = 0;
  int bad = 0;
  for (size_t i = global_index(); i < n; i += global_stride()) {
    double x = (double)g[i];
    if (!isfinite(x)) bad |= TG_GPU_FLAG_NONFINITE;
    else if (fabs(x) > kMaxAbs) bad |= TG_GPU_FLAG_RANGE;
    else s += square_term(x);
  }
  if (bad) atomicOr(flags, bad);
  part[threadIdx.x] = s;
  __syncthreads();
  for (int k = kThreads / 2; k > 0; k /= 2) {
    if ((int)threadIdx.x < k) part[threadIdx.x] += part[threadIdx.x + k];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = part[0];
}

__global__ void sqnorm_limbs_kernel(long long *limbs, const u128 *partial, unsigned blocks) {
  u128 s = 0;
  for (unsigned b = 0; b < blocks; b++) s += partial[b];
  for (int k = 0; k < 4; k++) {  // TG_FIXED_SQNORM_LIMBS base-2^32 limbs
    limbs[k] = (long long)(unsigned long long)(s & 0xffffffffu);
    s >>= 32;
  }
}

int launched() { return (int)cudaGetLastError(); }

}  // namespace

extern "C" int tg_gpuk_fixed_accumulate(void *stream, int64_t *acc, const float *g, size_t n,
                                        int *flags) {
  if (n == 0) return 0;
  accumulate_kernel<<<blocks_for(n), kThreads, 0, (cudaStream_t)stream>>>((long long *)acc, g, n,
                                                                          flags);
  return launched();
}

extern "C" int tg_gpuk_fixed_add_scalar(void *stream, int64_t *acc, const float *value,
                                        int *flags) {
  add_scalar_kernel<<<1, 1, 0, (cudaStream_t)stream>>>((long long *)acc, value, flags);
  return launched();
}

extern "C" int tg_gpuk_fixed_to_float(void *stream, float *out, const int64_t *acc, size_t n,
                                      double inv_terms) {
  if (n == 0) return 0;
  to_float_kernel<<<blocks_for(n), kThreads, 0, (cudaStream_t)stream>>>(
      out, (const long long *)acc, n, inv_terms);
  return launched();
}

extern "C" int tg_gpuk_fixed_sqnorm(void *stream, int64_t *limbs, const float *g, size_t n,
                                    void *scratch, unsigned scratch_blocks, int *flags) {
  cudaStream_t s = (cudaStream_t)stream;
  unsigned blocks = blocks_for(n);
  if (blocks > scratch_blocks) blocks = scratch_blocks;
  sqnorm_partial_kernel<<<blocks, kThreads, 0, s>>>((u128 *)scratch, g, n, flags);
  int e = launched();
  if (e == 0) {
    sqnorm_limbs_kernel<<<1, 1, 0, s>>>((long long *)limbs, (const u128 *)scratch, blocks);
    e = launched();
  }
  return e;
}
