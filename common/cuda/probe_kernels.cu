// The GPU probe's kernel; see probe_kernels.h.
#include "common/cuda/probe_kernels.h"

#include <cuda_runtime.h>

static __global__ void saxpy_kernel(int n, float a, const float *x, float *y) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

extern "C" int tg_probe_saxpy(int n, float a, const float *x_dev, float *y_dev) {
  int threads = 256;
  int blocks = (n + threads - 1) / threads;
  saxpy_kernel<<<blocks, threads>>>(n, a, x_dev, y_dev);
  return (int)cudaGetLastError();
}
