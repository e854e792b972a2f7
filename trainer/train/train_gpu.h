/* tg-train's GPU path (--device cuda): the model, its gradients and this
 * rank's optimizer slice live on a GPU (trainer/model/cuda); tg_train.c
 * keeps the world loop and calls these for what happens on the device.
 *
 * Collectives take device pointers when the communicator is NCCL
 * (tg_device_buffers) and go through pinned host buffers with gloo.
 * Snapshots always take host buffers: the parameters and the optimizer
 * slice are copied into pinned memory on a copy stream after each step
 * (train_gpu_copy_out) while the next step's forward and backward run,
 * and the trainer waits for the copy (train_gpu_copy_wait) just before
 * tg_snapshot. A build without CUDA has only train_gpu_none.c, whose
 * train_gpu_new says so. Functions returning int give 0, or -1 with the
 * reason in train_gpu_error. */
#ifndef TG_TRAIN_GPU_H
#define TG_TRAIN_GPU_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/include/tardigrade.h"
#include "trainer/model/adamw.h"
#include "trainer/model/corpus.h"
#include "trainer/model/model.h"
#include "trainer/model/step.h"

typedef struct train_gpu train_gpu;

/* 1 when this binary has the GPU path; 0, with err saying so, when it was
 * built without CUDA. Needs no GPU and no agent: tg-train asks first. */
int train_gpu_built(char *err, size_t errlen);

/* Opens the GPU: with NCCL collectives the communicator's
 * (tg_cuda_device), else $TG_CUDA_DEVICE, else $TG_SLOT modulo the
 * device count; allocates the model for plan's micro-batch and pinned
 * host parameters. NULL with the reason in err. */
train_gpu *train_gpu_new(tg_trainer *t, const tg_model_config *mc, const tg_batch_plan *plan,
                         const tg_adamw_config *ac, char *err, size_t errlen);
void train_gpu_free(train_gpu *g);
const char *train_gpu_error(const train_gpu *g);
int train_gpu_device(const train_gpu *g);

/* The layout (P, tensors) and the host copy of the parameters (P floats,
 * pinned): what snapshots hold, restores fill and --out writes. */
const tg_model *train_gpu_layout(const train_gpu *g);
float *train_gpu_host_params(train_gpu *g);

/* A new world: rank R of W owns the parameter slice [begin, end). Sets
 * up its optimizer (zero moments) and returns its pinned staging buffers
 * for the moments (end - begin floats each), which the caller registers
 * for snapshots. Waits for any snapshot copy still in flight first. */
int train_gpu_world(train_gpu *g, uint32_t W, uint32_t R, float **m_stage, float **v_stage);

/* Copies the host state to the device: the parameters, the moments from
 * the staging buffers, and the optimizer's step. After a restore, or
 * after train_gpu_init. */
int train_gpu_load(train_gpu *g, uint64_t step);

/* Fresh parameters from the seed (tg_model_init_params's) into the host
 * parameters and the device. */
int train_gpu_init(train_gpu *g, uint64_t seed);

/* Enqueues the forward, backward and fixed-point sums of this rank's
 * chunks [chunk_begin, chunk_end) of `step`, and returns while the GPU
 * works. */
int train_gpu_compute(train_gpu *g, const tg_corpus *c, uint64_t step, uint32_t chunk_begin,
                      uint32_t chunk_end);

/* The rest of the step: waits for the compute (a diverged loss is an
 * error), all-reduces the gradient sums and the norm, updates this rank's
 * slice and all-gathers the parameters. *r is the collectives' result;
 * when it is not TG_OK the step stopped there (and 0 is returned). */
int train_gpu_update(train_gpu *g, tg_trainer *t, tg_result *r, float *loss);

/* Starts copying the parameters and the optimizer slice into the host
 * buffers; train_gpu_copy_wait returns once they are there. */
int train_gpu_copy_out(train_gpu *g);
int train_gpu_copy_wait(train_gpu *g);

#endif
