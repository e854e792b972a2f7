/* The GPU a trainer computes on: one device, its streams and its memory.
 *
 * trainer/model/cuda is the GPU implementation of trainer/model: the same
 * model, fixed-point sums and AdamW, with every array in device memory.
 * This header is its context, the handle the model, the step and the
 * optimizer modules share: the device, a compute stream on which every
 * kernel and cuBLAS call of the package runs in order, a copy stream for
 * the device-to-host copies of snapshots, and the last error as one line.
 *
 * The headers of this package hold no CUDA types, so C code that links no
 * CUDA (tg-train, a test) calls them like any C library; pointers said to
 * be "device" point to GPU memory and must not be dereferenced on the
 * host. Every call returns a tg_model_status; TG_MODEL_EDEVICE means a
 * CUDA or cuBLAS call failed and tg_gpu_last_error says which and why.
 * Nothing here aborts or prints.
 *
 * Snapshots overlap compute: tg_gpu_snapshot_copy enqueues device-to-host
 * copies into pinned memory on the copy stream, behind the compute
 * stream's work so far, and returns; kernels enqueued after it run
 * alongside the copies. What writes a snapshot's sources, the AdamW
 * update, uploads and device-to-device copies, first waits for those
 * copies on the device, so a snapshot always holds the state it was taken
 * of; forward, backward and the gradient sums do not wait, and that is
 * the overlap. tg_gpu_zero does not wait either: it is for scratch such
 * as accumulators. The host waits with tg_gpu_snapshot_wait before it
 * reads the host buffers. */
#ifndef TG_GPU_H
#define TG_GPU_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/model/status.h"

typedef struct tg_gpu tg_gpu;

/* Devices this process can use. EDEVICE, with the reason in err, when
 * there is no driver or no device (cudaGetDeviceCount fails on machines
 * without a GPU). */
tg_model_status tg_gpu_device_count(int *count, char *err, size_t errlen);

/* Opens `device`: streams, cuBLAS handle (FP32 math, no TF32, no
 * atomics), scratch. NULL with the reason in err. */
tg_gpu *tg_gpu_open(int device, char *err, size_t errlen);
void tg_gpu_close(tg_gpu *g);

int tg_gpu_device(const tg_gpu *g);
const char *tg_gpu_last_error(const tg_gpu *g);

/* Device memory, zeroed; NULL (and the last error set) on failure. */
void *tg_gpu_alloc(tg_gpu *g, size_t bytes);
void tg_gpu_free(tg_gpu *g, void *dev);

/* Pinned host memory (page-locked, for asynchronous copies), zeroed. */
void *tg_gpu_host_alloc(tg_gpu *g, size_t bytes);
void tg_gpu_host_free(tg_gpu *g, void *host);

/* Copies in compute-stream order. upload and download return when the
 * copy is done; copy_device and zero are enqueued and return at once.
 * zero does not wait for snapshot copies (see above). */
tg_model_status tg_gpu_upload(tg_gpu *g, void *dev, const void *host, size_t bytes);
tg_model_status tg_gpu_download(tg_gpu *g, void *host, const void *dev, size_t bytes);
tg_model_status tg_gpu_copy_device(tg_gpu *g, void *dst_dev, const void *src_dev, size_t bytes);
tg_model_status tg_gpu_zero(tg_gpu *g, void *dev, size_t bytes);

/* Waits for everything enqueued on the compute stream and reports what
 * its kernels found since the last call: ENONFINITE (a NaN or infinite
 * gradient or loss), ERANGE (a gradient too large for fixed point),
 * EOVERFLOW (an int64 sum overflowed), in that order of precedence; or
 * EDEVICE when a kernel or copy failed. */
tg_model_status tg_gpu_finish(tg_gpu *g);

/* One device-to-host copy of a snapshot. */
typedef struct {
  void *host;      /* pinned (tg_gpu_host_alloc) */
  const void *dev;
  size_t bytes;
} tg_gpu_copy;

/* Enqueues the copies on the copy stream after the compute stream's work
 * so far, and returns. */
tg_model_status tg_gpu_snapshot_copy(tg_gpu *g, const tg_gpu_copy *copies, size_t count);

/* Waits until the last tg_gpu_snapshot_copy's copies are in host memory
 * (at once if there were none). */
tg_model_status tg_gpu_snapshot_wait(tg_gpu *g);

#endif
