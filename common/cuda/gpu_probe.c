/* tg-gpu-probe: proves that the CUDA path of this build works on this
 * machine. It is built only where /usr/local/cuda exists, and it exits 0
 * with a "skip" line where there is no usable GPU, so it can run in CI.
 *
 * With a GPU it checks, in order: a kernel compiled by nvcc runs and gives
 * the right answer; cuBLAS computes a small GEMM; NCCL at world size 1
 * initialises a communicator, all-reduces, and is aborted and re-created
 * (the recovery path's abort/re-init). Any wrong result exits 1. */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cuda/probe_kernels.h"

#define N 4096

static int check_cuda(cudaError_t e, const char *what) {
  if (e == cudaSuccess) return 0;
  fprintf(stderr, "gpu-probe: %s: %s\n", what, cudaGetErrorString(e));
  return -1;
}

static int check_kernel(void) {
  static float x[N], y[N];
  float *dx = NULL, *dy = NULL;
  int rc = -1;
  for (int i = 0; i < N; i++) {
    x[i] = (float)i;
    y[i] = 1.0f;
  }
  if (check_cuda(cudaMalloc((void **)&dx, sizeof x), "cudaMalloc") ||
      check_cuda(cudaMalloc((void **)&dy, sizeof y), "cudaMalloc") ||
      check_cuda(cudaMemcpy(dx, x, sizeof x, cudaMemcpyHostToDevice), "copy x") ||
      check_cuda(cudaMemcpy(dy, y, sizeof y, cudaMemcpyHostToDevice), "copy y") ||
      check_cuda((cudaError_t)tg_probe_saxpy(N, 2.0f, dx, dy), "saxpy launch") ||
      check_cuda(cudaMemcpy(y, dy, sizeof y, cudaMemcpyDeviceToHost), "copy back"))
    goto out;
  for (int i = 0; i < N; i++) {
    if (y[i] != 2.0f * (float)i + 1.0f) {
      fprintf(stderr, "gpu-probe: saxpy wrong at %d: %f\n", i, (double)y[i]);
      goto out;
    }
  }
  printf("gpu-probe: kernel ok (saxpy over %d floats)\n", N);
  rc = 0;
out:
  cudaFree(dx);
  cudaFree(dy);
  return rc;
}

static int check_cublas(void) {
  /* C = A * B with 2x2 column-major matrices. */
  const float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8}, want[4] = {23, 34, 31, 46};
  float c[4] = {0}, *da = NULL, *db = NULL, *dc = NULL;
  const float one = 1.0f, zero = 0.0f;
  cublasHandle_t h = NULL;
  int rc = -1;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) {
    fprintf(stderr, "gpu-probe: cublasCreate failed\n");
    return -1;
  }
  if (check_cuda(cudaMalloc((void **)&da, sizeof a), "cudaMalloc") ||
      check_cuda(cudaMalloc((void **)&db, sizeof b), "cudaMalloc") ||
      check_cuda(cudaMalloc((void **)&dc, sizeof c), "cudaMalloc") ||
      check_cuda(cudaMemcpy(da, a, sizeof a, cudaMemcpyHostToDevice), "copy a") ||
      check_cuda(cudaMemcpy(db, b, sizeof b, cudaMemcpyHostToDevice), "copy b"))
    goto out;
  if (cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, da, 2, db, 2, &zero, dc, 2) !=
      CUBLAS_STATUS_SUCCESS) {
    fprintf(stderr, "gpu-probe: cublasSgemm failed\n");
    goto out;
  }
  if (check_cuda(cudaMemcpy(c, dc, sizeof c, cudaMemcpyDeviceToHost), "copy c")) goto out;
  for (int i = 0; i < 4; i++) {
    if (fabsf(c[i] - want[i]) > 1e-5f) {
      fprintf(stderr, "gpu-probe: sgemm wrong at %d: %f\n", i, (double)c[i]);
      goto out;
    }
  }
  printf("gpu-probe: cuBLAS ok (2x2 sgemm)\n");
  rc = 0;
out:
  cudaFree(da);
  cudaFree(db);
  cudaFree(dc);
  cublasDestroy(h);
  return rc;
}

/* One communicator of one rank: all-reduce, abort, then a fresh one. */
static int check_nccl(void) {
  float *buf = NULL, host = 3.0f;
  int rc = -1;
  if (check_cuda(cudaMalloc((void **)&buf, sizeof host), "cudaMalloc") ||
      check_cuda(cudaMemcpy(buf, &host, sizeof host, cudaMemcpyHostToDevice), "copy"))
    goto out;
  for (int round = 0; round < 2; round++) {
    ncclUniqueId id;
    ncclComm_t comm;
    ncclResult_t r = ncclGetUniqueId(&id);
    if (r == ncclSuccess) r = ncclCommInitRank(&comm, 1, id, 0);
    if (r != ncclSuccess) {
      fprintf(stderr, "gpu-probe: NCCL init (round %d): %s\n", round, ncclGetErrorString(r));
      goto out;
    }
    r = ncclAllReduce(buf, buf, 1, ncclFloat, ncclSum, comm, 0);
    if (r == ncclSuccess && check_cuda(cudaStreamSynchronize(0), "sync")) r = ncclInternalError;
    ncclResult_t a = ncclCommAbort(comm);
    if (r != ncclSuccess || a != ncclSuccess) {
      fprintf(stderr, "gpu-probe: NCCL all-reduce/abort (round %d) failed\n", round);
      goto out;
    }
  }
  if (check_cuda(cudaMemcpy(&host, buf, sizeof host, cudaMemcpyDeviceToHost), "copy back")) goto out;
  if (host != 3.0f) {
    fprintf(stderr, "gpu-probe: all-reduce of one rank changed the value: %f\n", (double)host);
    goto out;
  }
  int version = 0;
  ncclGetVersion(&version);
  printf("gpu-probe: NCCL %d ok (world size 1, all-reduce, abort, re-init)\n", version);
  rc = 0;
out:
  cudaFree(buf);
  return rc;
}

int main(void) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    printf("gpu-probe: skip: no usable CUDA device (%s)\n",
           e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    return 0;
  }
  struct cudaDeviceProp prop;
  if (check_cuda(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties")) return 1;
  printf("gpu-probe: %d device(s); device 0: %s, %.1f GiB\n", count, prop.name,
         (double)prop.totalGlobalMem / (1 << 30));
  if (check_kernel() || check_cublas() || check_nccl()) return 1;
  printf("gpu-probe: all checks passed\n");
  return 0;
}
