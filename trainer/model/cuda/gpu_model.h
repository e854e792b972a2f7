/* The reference model on a GPU: trainer/model/model.h's byte-level
 * residual-MLP language model with its parameters, gradients and
 * activations in device memory.
 *
 * Same math and the same flat parameter layout as the CPU model (the
 * tensor table of tg_gpu_model_layout is the CPU's), so parameters copied
 * from one to the other mean the same thing and a snapshot taken on either
 * restores on both. The matmuls are cuBLAS SGEMM, the rest small kernels
 * (layer_kernels.h). Results are not the CPU's bits (other summation
 * orders, other tanhf and expf), but every reduction has a fixed order and
 * nothing uses float atomics, so two runs on the same GPU give the same
 * bits. */
#ifndef TG_GPU_MODEL_H
#define TG_GPU_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/model/cuda/gpu.h"
#include "trainer/model/model.h"

typedef struct tg_gpu_model tg_gpu_model;

/* Allocates parameters (zero), gradients and the activations of up to
 * max_batch samples on g's device. NULL with the reason in err. The
 * context must outlive the model. */
tg_gpu_model *tg_gpu_model_new(tg_gpu *g, const tg_model_config *cfg, uint32_t max_batch,
                               char *err, size_t errlen);
void tg_gpu_model_free(tg_gpu_model *m);

tg_gpu *tg_gpu_model_gpu(const tg_gpu_model *m);
/* The layout: config, P, tensor table (a model without arrays). */
const tg_model *tg_gpu_model_layout(const tg_gpu_model *m);
size_t tg_gpu_model_num_params(const tg_gpu_model *m);
float *tg_gpu_model_params(tg_gpu_model *m); /* device, P floats */
float *tg_gpu_model_grads(tg_gpu_model *m);  /* device, P floats */

/* Forward pass over `batch` samples; tokens and targets are host bytes,
 * batch*T each, as for tg_model_forward. With loss non-NULL it waits for
 * the GPU and returns the mean loss (ENONFINITE if it is not finite);
 * with loss NULL it only enqueues, and the mean loss stays on the device
 * at tg_gpu_model_loss. */
tg_model_status tg_gpu_model_forward(tg_gpu_model *m, const uint8_t *tokens,
                                     const uint8_t *targets, uint32_t batch, float *loss);

/* Device float: the last forward's mean loss. */
const float *tg_gpu_model_loss(const tg_gpu_model *m);

/* Enqueues the gradient of the last forward's mean loss into
 * tg_gpu_model_grads, overwriting it. EINVAL unless a forward came first. */
tg_model_status tg_gpu_model_backward(tg_gpu_model *m);

#endif
