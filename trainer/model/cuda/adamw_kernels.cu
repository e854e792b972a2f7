// The AdamW element update on the GPU (see adamw_kernels.h). The
// expression is adamw.c's, operation for operation; compiled with
// --fmad=false and IEEE division and square root (nvcc's defaults without
// --use_fast_math), each operation rounds as the CPU's does, so the same
// inputs give the CPU's bits.
#include "trainer/model/cuda/adamw_kernels.h"

#include <cuda_runtime.h>
#include <math.h>

namespace {

constexpr int kThreads = 256;
constexpr size_t kMaxBlocks = 1 << 20;

__global__ void adamw_kernel(float *params, const float *grads, float *mom1, float *mom2,
                             size_t lo, size_t hi, size_t begin, tg_gpuk_adamw_args a) {
  size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = lo + (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < hi; i += stride) {
    size_t k = i - begin;
    float g = grads[i] * a.clip_scale;
    float m = a.beta1 * mom1[k] + (1.0f - a.beta1) * g;
    float v = a.beta2 * mom2[k] + (1.0f - a.beta2) * g * g;
    mom1[k] = m;
    mom2[k] = v;
    float mhat = m / a.bias1, vhat = v / a.bias2;
    params[i] -= a.lr * (mhat / (sqrtf(vhat) + a.eps) + a.weight_decay * params[i]);
  }
}

}  // namespace

extern "C" int tg_gpuk_adamw_update(void *stream, float *params, const float *grads, float *m,
                                    float *v, size_t lo, size_t hi, size_t begin,
                                    const tg_gpuk_adamw_args *args) {
  if (hi <= lo) return 0;
  size_t blocks = (hi - lo + kThreads - 1) / kThreads;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  adamw_kernel<<<(unsigned)blocks, kThreads, 0, (cudaStream_t)stream>>>(params, grads, m, v, lo,
                                                                         hi, begin, *args);
  return (int)cudaGetLastError();
}
