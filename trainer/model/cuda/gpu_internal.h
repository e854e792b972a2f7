/* What the modules of trainer/model/cuda share beyond gpu.h: the context's
 * CUDA handles and the helpers that turn a failed CUDA or cuBLAS call into
 * TG_MODEL_EDEVICE with a one-line message. Only for this package's .c
 * files; nothing outside includes it. */
#ifndef TG_GPU_INTERNAL_H
#define TG_GPU_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "trainer/model/cuda/gpu.h"

#define TG_GPU_ERROR_MAX 256

/* Blocks of a two-pass reduction (the squared norm): the first pass
 * leaves one partial per block in scratch. */
#define TG_GPU_REDUCE_BLOCKS 1024

struct tg_gpu {
  int device;
  cudaStream_t compute;  /* kernels, cuBLAS, copies in program order */
  cudaStream_t copy;     /* snapshot copies, device to pinned host */
  cudaEvent_t compute_mark;  /* recorded where snapshot copies start */
  cudaEvent_t copy_done;     /* recorded after the last snapshot's copies */
  int copy_pending;          /* copy_done recorded and not waited for by the host */
  cublasHandle_t blas;
  int *flags;            /* device: TG_GPU_FLAG_* bits set by kernels */
  void *scratch;         /* device: TG_GPU_REDUCE_BLOCKS x 16 bytes */
  char error[TG_GPU_ERROR_MAX];
};

/* OK, or EDEVICE with "what: <CUDA's message>" as the last error. */
tg_model_status tg_gpu_cuda(tg_gpu *g, cudaError_t e, const char *what);
tg_model_status tg_gpu_cublas(tg_gpu *g, cublasStatus_t s, const char *what);

/* Makes the compute stream wait for the last snapshot's copies: called
 * before every write to memory a snapshot may be reading. */
tg_model_status tg_gpu_fence(tg_gpu *g);

#endif
