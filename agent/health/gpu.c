/* The backend-independent half of gpu.h: a handle around a vtable, and the
 * calls that check their arguments once for every backend. */
#include "agent/health/gpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

tg_gpu *tg_gpu_new(const tg_gpu_ops *ops, void *impl) {
  if (ops == NULL || ops->count == NULL || ops->status == NULL || ops->drain_xids == NULL)
    return NULL;
  tg_gpu *gpu = calloc(1, sizeof *gpu);
  if (gpu == NULL) return NULL;
  gpu->ops = ops;
  gpu->impl = impl;
  return gpu;
}

void tg_gpu_close(tg_gpu *gpu) {
  if (gpu == NULL) return;
  if (gpu->ops->close != NULL) gpu->ops->close(gpu->impl);
  free(gpu);
}

int tg_gpu_count(tg_gpu *gpu, uint32_t *n, char *err, size_t errlen) {
  *n = 0;
  return gpu->ops->count(gpu->impl, n, err, errlen);
}

int tg_gpu_query(tg_gpu *gpu, uint32_t index, tg_gpu_status *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  out->index = index;
  out->temperature_c = -1;
  return gpu->ops->status(gpu->impl, index, out, err, errlen);
}

int tg_gpu_drain_xids(tg_gpu *gpu, tg_gpu_xid *out, size_t cap, size_t *n, char *err,
                      size_t errlen) {
  *n = 0;
  if (cap == 0) return 0;
  return gpu->ops->drain_xids(gpu->impl, out, cap, n, err, errlen);
}
