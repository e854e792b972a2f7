/* The reference model of tg-train: a byte-level language model in plain C.
 *
 * tg-train exists to exercise Tardigrade with a real training job whose
 * state is large, flat and easy to check, so the model is chosen for that,
 * not for quality. Each of the T positions of a context predicts the next
 * byte:
 *
 *   x_0     = wte[token] + wpe[position]          (wpe only if use_position)
 *   x_{l+1} = x_l + W2_l gelu(W1_l layernorm_l(x_l) + b1_l) + b2_l   l < N
 *   logits  = Wout layernorm_f(x_N) + bout;  loss = cross-entropy(softmax)
 *
 * with vocabulary V = 256, width D, hidden width H (default 4D) and depth N.
 * There is no attention, so a position sees only its own byte (and
 * position): it learns byte bigram statistics, which is enough for a loss
 * that visibly falls and for arbitrarily many parameters.
 *
 * Every parameter lives in ONE contiguous float array and every gradient in
 * another with the same layout, so snapshots, ZeRO shards and all-reduce
 * see flat buffers. Layout, in order: wte[V][D], wpe[T][D], then per block
 * ln_w[D], ln_b[D], w1[H][D], b1[H], w2[D][H], b2[D], then lnf_w[D],
 * lnf_b[D], wout[V][D], bout[V]. The parameter count is
 *
 *   P = 2VD + V + [use_position] TD + N (2HD + H + 3D) + 2D
 *     = 512 D + 256 + [pos] T D + N (8 D^2 + 7 D) + 2 D       for H = 4D.
 *
 * D=32, N=2, T=16 (the tests' model) has 34,048; D=2048, N=30, T=1024 with
 * positions has 1,010,213,120 (just over 1B; 4 GB of float32 each for
 * parameters, gradients, and with AdamW's m and v 16 GB in all).
 *
 * Forward and backward are written by hand, side by side, single-threaded
 * and in a fixed order, so a micro-batch's gradient is the same bits on any
 * rank of any world. backward() yields the gradient of the MEAN loss over
 * the batch's B*T predictions. */
#ifndef TG_MODEL_H
#define TG_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/model/status.h"

#define TG_MODEL_VOCAB 256
#define TG_MODEL_MAX_WIDTH 65536     /* D and H */
#define TG_MODEL_MAX_DEPTH 4096      /* N */
#define TG_MODEL_MAX_CONTEXT 1048576 /* T */

typedef struct tg_model tg_model;

typedef struct {
  uint32_t context;      /* T: positions (bytes) per sample; 1..TG_MODEL_MAX_CONTEXT */
  uint32_t width;        /* D: residual width; 1..TG_MODEL_MAX_WIDTH */
  uint32_t hidden;       /* H: MLP hidden width; 0 means 4 D */
  uint32_t depth;        /* N: residual MLP blocks; 0..TG_MODEL_MAX_DEPTH */
  int use_position;      /* nonzero: learned position embedding wpe */
} tg_model_config;

/* One named tensor of the flat layout. The 2-D tensors (embeddings and
 * matrices) take AdamW weight decay; biases and layernorm gains do not. */
typedef struct {
  const char *name;      /* "wte", "blocks.3.w1", ...; owned by the model */
  size_t offset;         /* first element in the flat array */
  size_t count;          /* elements */
  int decay;             /* 1: AdamW applies weight decay to it */
} tg_model_tensor;

/* P for a config, without allocating anything; 0 for an invalid config. */
size_t tg_model_param_count(const tg_model_config *cfg);

/* Allocates parameters, gradients and the activations of up to max_batch
 * samples (each T tokens). Parameters start at zero: call
 * tg_model_init_params or load a snapshot. NULL with the reason in err on a
 * bad config or no memory. */
tg_model *tg_model_new(const tg_model_config *cfg, uint32_t max_batch, char *err, size_t errlen);
void tg_model_free(tg_model *m);

/* The layout alone: config, parameter count and tensor table, with no
 * parameters, gradients or activations (tg_model_params and
 * tg_model_grads return NULL; forward and backward refuse with EINVAL).
 * For implementations that keep the arrays elsewhere, in the same layout:
 * the GPU model (trainer/model/cuda). */
tg_model *tg_model_layout_new(const tg_model_config *cfg, char *err, size_t errlen);

const tg_model_config *tg_model_config_of(const tg_model *m);
size_t tg_model_num_params(const tg_model *m);
float *tg_model_params(tg_model *m); /* P floats, the layout above */
float *tg_model_grads(tg_model *m);  /* P floats, filled by backward */

/* Number of tensors, and tensor i (0 <= i < count) of the layout. */
size_t tg_model_tensor_count(const tg_model *m);
tg_model_status tg_model_tensor_at(const tg_model *m, size_t i, tg_model_tensor *out);

/* Deterministic initialisation from seed alone: embeddings and matrices
 * uniform with std 0.02 (W2 scaled by 1/sqrt(2N) as in GPT-2), layernorm
 * gains 1, biases 0. */
void tg_model_init_params(tg_model *m, uint64_t seed);

/* The same initialisation written into params (P floats in m's layout):
 * for a layout-only model whose parameters live elsewhere. */
void tg_model_init_params_at(const tg_model *m, float *params, uint64_t seed);

/* Forward pass over `batch` samples: tokens and targets are batch*T bytes,
 * sample-major. Writes the mean cross-entropy loss (nats) to *loss and
 * keeps the activations for backward. EINVAL for batch 0 or above
 * max_batch; ENONFINITE if the loss is not finite. */
tg_model_status tg_model_forward(tg_model *m, const uint8_t *tokens, const uint8_t *targets,
                                 uint32_t batch, float *loss);

/* Overwrites the gradient array with d(mean loss)/d(params) of the last
 * forward. Consumes that forward's activations: EINVAL unless a forward
 * came first. */
tg_model_status tg_model_backward(tg_model *m);

#endif
