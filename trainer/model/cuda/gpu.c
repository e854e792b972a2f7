/* The GPU context (see gpu.h): device selection, the two streams, the
 * cuBLAS handle fixed to deterministic FP32 settings, memory helpers and
 * the error line every module of the package reports through.
 *
 * Why these cuBLAS settings: cuBLAS promises bitwise identical results run
 * to run for the same toolkit, GPU architecture and SM count when one
 * stream is used and atomics are off. Default math mode keeps SGEMM in
 * IEEE FP32 (TF32 tensor cores would need CUBLAS_TF32_TENSOR_OP_MATH, and
 * reduced-precision reductions are disallowed explicitly), atomics are set
 * to "not allowed" explicitly rather than trusted as the default, and the
 * handle is bound to the compute stream for its whole life. */
#include "trainer/model/cuda/gpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/model/cuda/fixed_kernels.h"
#include "trainer/model/cuda/gpu_internal.h"

static void set_err(char *err, size_t errlen, const char *why) {
  if (err && errlen) snprintf(err, errlen, "%s", why);
}

tg_model_status tg_gpu_cuda(tg_gpu *g, cudaError_t e, const char *what) {
  if (e == cudaSuccess) return TG_MODEL_OK;
  if (g)
    snprintf(g->error, sizeof g->error, "%s: %s (%s)", what, cudaGetErrorString(e),
             cudaGetErrorName(e));
  return TG_MODEL_EDEVICE;
}

tg_model_status tg_gpu_cublas(tg_gpu *g, cublasStatus_t s, const char *what) {
  if (s == CUBLAS_STATUS_SUCCESS) return TG_MODEL_OK;
  if (g) snprintf(g->error, sizeof g->error, "%s: cuBLAS status %d", what, (int)s);
  return TG_MODEL_EDEVICE;
}

tg_model_status tg_gpu_device_count(int *count, char *err, size_t errlen) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (err && errlen)
      snprintf(err, errlen, "cudaGetDeviceCount: %s (%s)", cudaGetErrorString(e),
               cudaGetErrorName(e));
    return TG_MODEL_EDEVICE;
  }
  if (count) *count = n;
  return TG_MODEL_OK;
}

tg_gpu *tg_gpu_open(int device, char *err, size_t errlen) {
  int count = 0;
  if (tg_gpu_device_count(&count, err, errlen) != TG_MODEL_OK) return NULL;
  if (device < 0 || device >= count) {
    if (err && errlen)
      snprintf(err, errlen, "CUDA device %d does not exist (%d visible)", device, count);
    return NULL;
  }
  tg_gpu *g = calloc(1, sizeof *g);
  if (!g) {
    set_err(err, errlen, "out of memory for the GPU context");
    return NULL;
  }
  g->device = device;
  tg_model_status st = tg_gpu_cuda(g, cudaSetDevice(device), "cudaSetDevice");
  if (st == TG_MODEL_OK)
    st = tg_gpu_cuda(g, cudaStreamCreateWithFlags(&g->compute, cudaStreamNonBlocking),
                     "cudaStreamCreate (compute)");
  if (st == TG_MODEL_OK)
    st = tg_gpu_cuda(g, cudaStreamCreateWithFlags(&g->copy, cudaStreamNonBlocking),
                     "cudaStreamCreate (copy)");
  if (st == TG_MODEL_OK)
    st = tg_gpu_cuda(g, cudaEventCreateWithFlags(&g->compute_mark, cudaEventDisableTiming),
                     "cudaEventCreate");
  if (st == TG_MODEL_OK)
    st = tg_gpu_cuda(g, cudaEventCreateWithFlags(&g->copy_done, cudaEventDisableTiming),
                     "cudaEventCreate");
  if (st == TG_MODEL_OK) st = tg_gpu_cublas(g, cublasCreate(&g->blas), "cublasCreate");
  if (st == TG_MODEL_OK)
    st = tg_gpu_cublas(g, cublasSetStream(g->blas, g->compute), "cublasSetStream");
  if (st == TG_MODEL_OK)
    st = tg_gpu_cublas(g,
                       cublasSetMathMode(g->blas, (cublasMath_t)(
                           CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)),
                       "cublasSetMathMode");
  if (st == TG_MODEL_OK)
    st = tg_gpu_cublas(g, cublasSetAtomicsMode(g->blas, CUBLAS_ATOMICS_NOT_ALLOWED),
                       "cublasSetAtomicsMode");
  if (st == TG_MODEL_OK)
    st = tg_gpu_cublas(g, cublasSetPointerMode(g->blas, CUBLAS_POINTER_MODE_HOST),
                       "cublasSetPointerMode");
  if (st == TG_MODEL_OK && !(g->flags = tg_gpu_alloc(g, sizeof(int)))) st = TG_MODEL_EDEVICE;
  if (st == TG_MODEL_OK && !(g->scratch = tg_gpu_alloc(g, (size_t)TG_GPU_REDUCE_BLOCKS * 16)))
    st = TG_MODEL_EDEVICE;
  if (st != TG_MODEL_OK) {
    set_err(err, errlen, g->error);
    tg_gpu_close(g);
    return NULL;
  }
  return g;
}

void tg_gpu_close(tg_gpu *g) {
  if (!g) return;
  cudaSetDevice(g->device);
  if (g->compute) cudaStreamSynchronize(g->compute);
  if (g->copy) cudaStreamSynchronize(g->copy);
  if (g->flags) cudaFree(g->flags);
  if (g->scratch) cudaFree(g->scratch);
  if (g->blas) cublasDestroy(g->blas);
  if (g->compute_mark) cudaEventDestroy(g->compute_mark);
  if (g->copy_done) cudaEventDestroy(g->copy_done);
  if (g->compute) cudaStreamDestroy(g->compute);
  if (g->copy) cudaStreamDestroy(g->copy);
  free(g);
}

int tg_gpu_device(const tg_gpu *g) { return g ? g->device : -1; }
const char *tg_gpu_last_error(const tg_gpu *g) { return g ? g->error : "no GPU context"; }

void *tg_gpu_alloc(tg_gpu *g, size_t bytes) {
  void *p = NULL;
  if (tg_gpu_cuda(g, cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc") != TG_MODEL_OK) return NULL;
  /* Cleared on the compute stream and waited for: a plain cudaMemset
   * would run on the legacy default stream, which non-blocking streams
   * do not wait for. */
  tg_model_status st =
      tg_gpu_cuda(g, cudaMemsetAsync(p, 0, bytes ? bytes : 1, g->compute), "cudaMemsetAsync");
  if (st == TG_MODEL_OK)
    st = tg_gpu_cuda(g, cudaStreamSynchronize(g->compute), "cudaStreamSynchronize (alloc)");
  if (st != TG_MODEL_OK) {
    cudaFree(p);
    return NULL;
  }
  return p;
}

void tg_gpu_free(tg_gpu *g, void *dev) {
  if (!dev) return;
  /* Work still queued may read it. */
  if (g) cudaStreamSynchronize(g->compute);
  if (g) cudaStreamSynchronize(g->copy);
  cudaFree(dev);
}

void *tg_gpu_host_alloc(tg_gpu *g, size_t bytes) {
  void *p = NULL;
  if (tg_gpu_cuda(g, cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault),
                  "cudaHostAlloc") != TG_MODEL_OK)
    return NULL;
  memset(p, 0, bytes ? bytes : 1);
  return p;
}

void tg_gpu_host_free(tg_gpu *g, void *host) {
  if (!host) return;
  if (g) cudaStreamSynchronize(g->compute);
  if (g) cudaStreamSynchronize(g->copy);
  cudaFreeHost(host);
}

tg_model_status tg_gpu_fence(tg_gpu *g) {
  if (!g->copy_pending) return TG_MODEL_OK;
  return tg_gpu_cuda(g, cudaStreamWaitEvent(g->compute, g->copy_done, 0), "cudaStreamWaitEvent");
}

tg_model_status tg_gpu_upload(tg_gpu *g, void *dev, const void *host, size_t bytes) {
  if (!g || (bytes && (!dev || !host))) return TG_MODEL_EINVAL;
  tg_model_status st = tg_gpu_fence(g);
  if (st == TG_MODEL_OK && bytes)
    st = tg_gpu_cuda(g, cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, g->compute),
                     "cudaMemcpyAsync (upload)");
  if (st == TG_MODEL_OK)
    st = tg_gpu_cuda(g, cudaStreamSynchronize(g->compute), "cudaStreamSynchronize (upload)");
  return st;
}

tg_model_status tg_gpu_download(tg_gpu *g, void *host, const void *dev, size_t bytes) {
  if (!g || (bytes && (!dev || !host))) return TG_MODEL_EINVAL;
  tg_model_status st = TG_MODEL_OK;
  if (bytes)
    st = tg_gpu_cuda(g, cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, g->compute),
                     "cudaMemcpyAsync (download)");
  if (st == TG_MODEL_OK)
    st = tg_gpu_cuda(g, cudaStreamSynchronize(g->compute), "cudaStreamSynchronize (download)");
  return st;
}

tg_model_status tg_gpu_copy_device(tg_gpu *g, void *dst_dev, const void *src_dev, size_t bytes) {
  if (!g || (bytes && (!dst_dev || !src_dev))) return TG_MODEL_EINVAL;
  tg_model_status st = tg_gpu_fence(g);
  if (st == TG_MODEL_OK && bytes)
    st = tg_gpu_cuda(g,
                     cudaMemcpyAsync(dst_dev, src_dev, bytes, cudaMemcpyDeviceToDevice, g->compute),
                     "cudaMemcpyAsync (device)");
  return st;
}

tg_model_status tg_gpu_zero(tg_gpu *g, void *dev, size_t bytes) {
  if (!g || (bytes && !dev)) return TG_MODEL_EINVAL;
  if (!bytes) return TG_MODEL_OK;
  return tg_gpu_cuda(g, cudaMemsetAsync(dev, 0, bytes, g->compute), "cudaMemsetAsync");
}

tg_model_status tg_gpu_finish(tg_gpu *g) {
  if (!g) return TG_MODEL_EINVAL;
  int flags = 0;
  tg_model_status st = tg_gpu_cuda(g, cudaGetLastError(), "kernel launch");
  if (st == TG_MODEL_OK)
    st = tg_gpu_cuda(g, cudaMemcpyAsync(&flags, g->flags, sizeof flags, cudaMemcpyDeviceToHost,
                                        g->compute),
                     "cudaMemcpyAsync (flags)");
  if (st == TG_MODEL_OK)
    st = tg_gpu_cuda(g, cudaMemsetAsync(g->flags, 0, sizeof(int), g->compute), "cudaMemsetAsync");
  if (st == TG_MODEL_OK)
    st = tg_gpu_cuda(g, cudaStreamSynchronize(g->compute), "cudaStreamSynchronize (compute)");
  if (st != TG_MODEL_OK) return st;
  if (flags & TG_GPU_FLAG_NONFINITE) return TG_MODEL_ENONFINITE;
  if (flags & TG_GPU_FLAG_RANGE) return TG_MODEL_ERANGE;
  if (flags & TG_GPU_FLAG_OVERFLOW) return TG_MODEL_EOVERFLOW;
  return TG_MODEL_OK;
}

tg_model_status tg_gpu_snapshot_copy(tg_gpu *g, const tg_gpu_copy *copies, size_t count) {
  if (!g || (count && !copies)) return TG_MODEL_EINVAL;
  /* The previous copies finish before these start: one snapshot at a time. */
  tg_model_status st = tg_gpu_cuda(g, cudaEventRecord(g->compute_mark, g->compute),
                                   "cudaEventRecord (snapshot start)");
  if (st == TG_MODEL_OK)
    st = tg_gpu_cuda(g, cudaStreamWaitEvent(g->copy, g->compute_mark, 0), "cudaStreamWaitEvent");
  for (size_t i = 0; st == TG_MODEL_OK && i < count; i++)
    if (copies[i].bytes)
      st = tg_gpu_cuda(g,
                       cudaMemcpyAsync(copies[i].host, copies[i].dev, copies[i].bytes,
                                       cudaMemcpyDeviceToHost, g->copy),
                       "cudaMemcpyAsync (snapshot)");
  if (st == TG_MODEL_OK)
    st = tg_gpu_cuda(g, cudaEventRecord(g->copy_done, g->copy), "cudaEventRecord (snapshot done)");
  if (st == TG_MODEL_OK) g->copy_pending = 1;
  return st;
}

tg_model_status tg_gpu_snapshot_wait(tg_gpu *g) {
  if (!g) return TG_MODEL_EINVAL;
  if (!g->copy_pending) return TG_MODEL_OK;
  tg_model_status st = tg_gpu_cuda(g, cudaEventSynchronize(g->copy_done), "cudaEventSynchronize");
  if (st == TG_MODEL_OK) g->copy_pending = 0;
  return st;
}
