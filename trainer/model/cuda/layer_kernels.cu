// The model's layers on the GPU (see layer_kernels.h): one kernel per
// layer pass, mirroring trainer/model/model.c. Matmuls are not here (cuBLAS
// in gpu_model.c). Row reductions use one warp per row with a butterfly
// shuffle, whose pairing is fixed, so every lane and every run gets the
// same bits; column reductions use one thread per column summing rows in
// ascending order, the CPU model's order.
#include "trainer/model/cuda/layer_kernels.h"

#include <cuda_runtime.h>
#include <math.h>

namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr size_t kMaxBlocks = 1 << 20;

// Blocks for a grid-stride loop over n items.
unsigned blocks_for(size_t n) {
  size_t b = (n + kThreads - 1) / kThreads;
  if (b == 0) b = 1;
  return (unsigned)(b < kMaxBlocks ? b : kMaxBlocks);
}

// Blocks for one warp per row.
unsigned warp_blocks_for(size_t rows) {
  size_t per_block = kThreads / kWarp;
  size_t b = (rows + per_block - 1) / per_block;
  return (unsigned)(b ? b : 1);
}

__device__ size_t global_index() { return (size_t)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ size_t global_stride() { return (size_t)gridDim.x * blockDim.x; }

__device__ float warp_sum(float v) {
  for (int k = kWarp / 2; k > 0; k /= 2) v += __shfl_xor_sync(0xffffffffu, v, k);
  return v;
}

__device__ float warp_max(float v) {
  for (int k = kWarp / 2; k > 0; k /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, k));
  return v;
}

__global__ void embed_forward_kernel(float *x, const uint8_t *tokens, const float *wte,
                                     const float *wpe, size_t rows, size_t T, size_t D) {
  for (size_t k = global_index(); k < rows * D; k += global_stride()) {
    size_t r = k / D, i = k % D;
    float v = wte[(size_t)tokens[r] * D + i];
    x[k] = v + (wpe ? wpe[(r % T) * D + i] : 0.0f);
  }
}

__global__ void embed_backward_wte_kernel(float *dwte, const float *dx, const int32_t *token_start,
                                          const int32_t *rows_by_token, size_t D, size_t vocab) {
  for (size_t k = global_index(); k < vocab * D; k += global_stride()) {
    size_t v = k / D, i = k % D;
    float s = 0.0f;
    for (int32_t j = token_start[v]; j < token_start[v + 1]; j++)
      s += dx[(size_t)rows_by_token[j] * D + i];
    dwte[k] = s;
  }
}

__global__ void embed_backward_wpe_kernel(float *dwpe, const float *dx, size_t batch, size_t T,
                                          size_t D) {
  for (size_t k = global_index(); k < T * D; k += global_stride()) {
    size_t t = k / D, i = k % D;
    float s = 0.0f;
    for (size_t b = 0; b < batch; b++) s += dx[(b * T + t) * D + i];
    dwpe[k] = s;
  }
}

__global__ void layernorm_forward_kernel(float *out, float *mean, float *rstd, const float *x,
                                         const float *w, const float *b, size_t rows, size_t D,
                                         float eps) {
  size_t r = global_index() / kWarp;
  int lane = threadIdx.x % kWarp;
  if (r >= rows) return;
  const float *xr = x + r * D;
  float sum = 0.0f;
  for (size_t i = lane; i < D; i += kWarp) sum += xr[i];
  float mu = warp_sum(sum) / (float)D;
  float sq = 0.0f;
  for (size_t i = lane; i < D; i += kWarp) sq += (xr[i] - mu) * (xr[i] - mu);
  float var = warp_sum(sq) / (float)D;
  float s = 1.0f / sqrtf(var + eps);
  for (size_t i = lane; i < D; i += kWarp) out[r * D + i] = (xr[i] - mu) * s * w[i] + b[i];
  if (lane == 0) {
    mean[r] = mu;
    rstd[r] = s;
  }
}

__global__ void layernorm_backward_dx_kernel(float *dx, const float *dout, const float *x,
                                             const float *w, const float *mean, const float *rstd,
                                             size_t rows, size_t D, int accumulate) {
  size_t r = global_index() / kWarp;
  int lane = threadIdx.x % kWarp;
  if (r >= rows) return;
  const float *xr = x + r * D, *dr = dout + r * D;
  float mr = mean[r], sr = rstd[r];
  float a = 0.0f, c = 0.0f;
  for (size_t i = lane; i < D; i += kWarp) {
    float norm = (xr[i] - mr) * sr;
    float dnorm = dr[i] * w[i];
    a += dnorm;
    c += dnorm * norm;
  }
  float mean_dnorm = warp_sum(a) / (float)D;
  float mean_dnorm_norm = warp_sum(c) / (float)D;
  for (size_t i = lane; i < D; i += kWarp) {
    float norm = (xr[i] - mr) * sr;
    float dnorm = dr[i] * w[i];
    float v = sr * (dnorm - mean_dnorm - norm * mean_dnorm_norm);
    dx[r * D + i] = accumulate ? dx[r * D + i] + v : v;
  }
}

__global__ void layernorm_backward_dw_kernel(float *dw, float *db, const float *dout,
                                             const float *x, const float *mean, const float *rstd,
                                             size_t rows, size_t D) {
  for (size_t i = global_index(); i < D; i += global_stride()) {
    float sw = 0.0f, sb = 0.0f;
    for (size_t r = 0; r < rows; r++) {
      float d = dout[r * D + i];
      float norm = (x[r * D + i] - mean[r]) * rstd[r];
      sw += d * norm;
      sb += d;
    }
    dw[i] = sw;
    db[i] = sb;
  }
}

__global__ void bias_fill_kernel(float *out, const float *b, const float *residual, size_t rows,
                                 size_t cols) {
  for (size_t k = global_index(); k < rows * cols; k += global_stride())
    out[k] = b[k % cols] + (residual ? residual[k] : 0.0f);
}

__global__ void column_sum_kernel(float *db, const float *dout, size_t rows, size_t cols) {
  for (size_t c = global_index(); c < cols; c += global_stride()) {
    float s = 0.0f;
    for (size_t r = 0; r < rows; r++) s += dout[r * cols + c];
    db[c] = s;
  }
}

// GELU, tanh approximation (GPT-2's), as in model.c.
constexpr float kGeluScale = 0.7978845608f;  // sqrt(2 / pi)
constexpr float kGeluCube = 0.044715f;

__global__ void gelu_forward_kernel(float *out, const float *x, size_t n) {
  for (size_t k = global_index(); k < n; k += global_stride()) {
    float v = x[k];
    out[k] = 0.5f * v * (1.0f + tanhf(kGeluScale * (v + kGeluCube * v * v * v)));
  }
}

__global__ void gelu_backward_kernel(float *dx, const float *x, const float *dout, size_t n) {
  for (size_t k = global_index(); k < n; k += global_stride()) {
    float v = x[k];
    float t = tanhf(kGeluScale * (v + kGeluCube * v * v * v));
    float du = kGeluScale * (1.0f + 3.0f * kGeluCube * v * v);
    float grad = 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du;
    dx[k] = grad * dout[k];
  }
}

__global__ void softmax_xent_forward_kernel(float *probs, double *row_loss,
                                            const uint8_t *targets, size_t rows, size_t vocab) {
  size_t r = global_index() / kWarp;
  int lane = threadIdx.x % kWarp;
  if (r >= rows) return;
  float *p = probs + r * vocab;
  float mx = -INFINITY;
  for (size_t i = lane; i < vocab; i += kWarp) mx = fmaxf(mx, p[i]);
  mx = warp_max(mx);
  float sum = 0.0f;
  for (size_t i = lane; i < vocab; i += kWarp) {
    float e = expf(p[i] - mx);
    p[i] = e;
    sum += e;
  }
  sum = warp_sum(sum);
  size_t target = targets[r];
  for (size_t i = lane; i < vocab; i += kWarp) {
    float q = p[i] / sum;
    p[i] = q;
    if (i == target) row_loss[r] = -log((double)q);
  }
}

// One block: strided partial sums, then a fixed halving tree.
__global__ void mean_loss_kernel(float *loss, const double *row_loss, size_t rows) {
  __shared__ double part[kThreads];
  double s = 0.0;
  for (size_t r = threadIdx.x; r < rows; r += kThreads) s += row_loss[r];
  part[threadIdx.x] = s;
  __syncthreads();
  for (int k = kThreads / 2; k > 0; k /= 2) {
    if ((int)threadIdx.x < k) part[threadIdx.x] += part[threadIdx.x + k];
    __syncthreads();
  }
  if (threadIdx.x == 0) *loss = (float)(part[0] / (double)rows);
}

__global__ void softmax_xent_backward_kernel(float *probs, const uint8_t *targets, size_t rows,
                                             size_t vocab, float inv_rows) {
  for (size_t k = global_index(); k < rows * vocab; k += global_stride()) {
    float p = probs[k];
    if (k % vocab == targets[k / vocab]) p -= 1.0f;
    probs[k] = p * inv_rows;
  }
}

int launched() { return (int)cudaGetLastError(); }

}  // namespace

extern "C" int tg_gpuk_embed_forward(void *stream, float *x, const uint8_t *tokens,
                                     const float *wte, const float *wpe, size_t rows, size_t T,
                                     size_t D) {
  embed_forward_kernel<<<blocks_for(rows * D), kThreads, 0, (cudaStream_t)stream>>>(
      x, tokens, wte, wpe, rows, T, D);
  return launched();
}

extern "C" int tg_gpuk_embed_backward(void *stream, float *dwte, float *dwpe, const float *dx,
                                      const int32_t *token_start, const int32_t *rows_by_token,
                                      size_t batch, size_t T, size_t D, size_t vocab) {
  cudaStream_t s = (cudaStream_t)stream;
  embed_backward_wte_kernel<<<blocks_for(vocab * D), kThreads, 0, s>>>(dwte, dx, token_start,
                                                                      rows_by_token, D, vocab);
  int e = launched();
  if (e == 0 && dwpe) {
    embed_backward_wpe_kernel<<<blocks_for(T * D), kThreads, 0, s>>>(dwpe, dx, batch, T, D);
    e = launched();
  }
  return e;
}

extern "C" int tg_gpuk_layernorm_forward(void *stream, float *out, float *mean, float *rstd,
                                         const float *x, const float *w, const float *b,
                                         size_t rows, size_t D, float eps) {
  layernorm_forward_kernel<<<warp_blocks_for(rows), kThreads, 0, (cudaStream_t)stream>>>(
      out, mean, rstd, x, w, b, rows, D, eps);
  return launched();
}

extern "C" int tg_gpuk_layernorm_backward(void *stream, float *dx, float *dw, float *db,
                                          const float *dout, const float *x, const float *w,
                                          const float *mean, const float *rstd, size_t rows,
                                          size_t D, int accumulate) {
  cudaStream_t s = (cudaStream_t)stream;
  layernorm_backward_dx_kernel<<<warp_blocks_for(rows), kThreads, 0, s>>>(
      dx, dout, x, w, mean, rstd, rows, D, accumulate);
  int e = launched();
  if (e == 0) {
    layernorm_backward_dw_kernel<<<blocks_for(D), kThreads, 0, s>>>(dw, db, dout, x, mean, rstd,
                                                                   rows, D);
    e = launched();
  }
  return e;
}

extern "C" int tg_gpuk_bias_fill(void *stream, float *out, const float *b, const float *residual,
                                 size_t rows, size_t cols) {
  bias_fill_kernel<<<blocks_for(rows * cols), kThreads, 0, (cudaStream_t)stream>>>(
      out, b, residual, rows, cols);
  return launched();
}

extern "C" int tg_gpuk_column_sum(void *stream, float *db, const float *dout, size_t rows,
                                  size_t cols) {
  column_sum_kernel<<<blocks_for(cols), kThreads, 0, (cudaStream_t)stream>>>(db, dout, rows,
                                                                             cols);
  return launched();
}

extern "C" int tg_gpuk_gelu_forward(void *stream, float *out, const float *x, size_t n) {
  gelu_forward_kernel<<<blocks_for(n), kThreads, 0, (cudaStream_t)stream>>>(out, x, n);
  return launched();
}

extern "C" int tg_gpuk_gelu_backward(void *stream, float *dx, const float *x, const float *dout,
                                     size_t n) {
  gelu_backward_kernel<<<blocks_for(n), kThreads, 0, (cudaStream_t)stream>>>(dx, x, dout, n);
  return launched();
}

extern "C" int tg_gpuk_softmax_xent_forward(void *stream, float *probs, double *row_loss,
                                            const uint8_t *targets, size_t rows, size_t vocab) {
  softmax_xent_forward_kernel<<<warp_blocks_for(rows), kThreads, 0, (cudaStream_t)stream>>>(
      probs, row_loss, targets, rows, vocab);
  return launched();
}

extern "C" int tg_gpuk_mean_loss(void *stream, float *loss, const double *row_loss, size_t rows) {
  mean_loss_kernel<<<1, kThreads, 0, (cudaStream_t)stream>>>(loss, row_loss, rows);
  return launched();
}

extern "C" int tg_gpuk_softmax_xent_backward(void *stream, float *probs, const uint8_t *targets,
                                             size_t rows, size_t vocab, float inv_rows) {
  softmax_xent_backward_kernel<<<blocks_for(rows * vocab), kThreads, 0, (cudaStream_t)stream>>>(
      probs, targets, rows, vocab, inv_rows);
  return launched();
}
