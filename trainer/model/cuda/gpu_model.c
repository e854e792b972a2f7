/* The reference model on the GPU (see gpu_model.h): model.c's forward and
 * backward, layer for layer, with cuBLAS SGEMM for the matmuls and the
 * kernels of layer_kernels.cu for the rest.
 *
 * Row-major matrices are what cuBLAS, being column-major, sees as their
 * transposes, so each linear layer out = in W^T + b (W is [out][in]) is
 * out^T = W in^T: SGEMM with op(A) = T on the stored W. Its backward is
 * din^T = W^T dout^T and dW^T = in^T dout, and db a column sum.
 *
 * Every gradient element is written exactly once by the backward (the
 * embedding's rows for absent tokens are written as zero), so the
 * gradient array needs no clearing; the residual stream's gradient starts
 * with the final layernorm's, written, and each block adds to it.
 *
 * The embedding backward is the one place a GPU would naturally scatter
 * with atomics: instead the host, which has the tokens anyway, sorts each
 * batch's rows by token (a counting sort, rows ascending within a token),
 * uploads that list with the tokens, and one thread per (token, column)
 * sums its rows in order. Inputs go through two pinned slots, so the host
 * fills the next chunk's while the GPU works on the last. */
#include "trainer/model/cuda/gpu_model.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/model/cuda/gpu_internal.h"
#include "trainer/model/cuda/layer_kernels.h"

#define V TG_MODEL_VOCAB
#define LN_EPS 1e-5f /* model.c's */

/* A block's tensors, in model.h's layout order. */
enum { BLOCK_LN_W, BLOCK_LN_B, BLOCK_W1, BLOCK_B1, BLOCK_W2, BLOCK_B2, BLOCK_TENSORS };

/* One pinned staging area for a chunk's inputs, and the event after
 * which the GPU has read it. */
typedef struct {
  uint8_t *host;
  cudaEvent_t uploaded;
  int used;
} input_slot;

struct tg_gpu_model {
  tg_gpu *gpu;
  tg_model *layout;
  size_t P, T, D, H, N, first_block;
  uint32_t max_batch;
  float *params, *grads;

  /* Activations of the last forward, as in model.c. */
  float *x, *ln, *ln_mean, *ln_rstd, *h, *a, *lnf, *lnf_mean, *lnf_rstd, *probs;
  float *dres, *dln, *dh; /* backward scratch */
  double *row_loss;
  float *loss;

  /* Inputs of the last forward on the device: tokens, targets, then the
   * rows sorted by token (token_start[V + 1], rows_by_token[rows]). */
  uint8_t *inputs;
  size_t inputs_bytes, targets_at, token_start_at, rows_by_token_at;
  input_slot slots[2];
  int next_slot;
  uint32_t batch; /* of the last forward; 0: none to run backward on */
};

static void set_err(char *err, size_t errlen, const char *why) {
  if (err && errlen) snprintf(err, errlen, "%s", why);
}

/* A kernel launcher's result as a status. */
static tg_model_status launch(tg_gpu *g, int cuda_error, const char *what) {
  return tg_gpu_cuda(g, (cudaError_t)cuda_error, what);
}

/* Tensor k of the layout inside the flat array at base. */
static float *tensor(const tg_gpu_model *m, float *base, size_t k) {
  tg_model_tensor t;
  tg_model_tensor_at(m->layout, k, &t);
  return base + t.offset;
}

static float *block_tensor(const tg_gpu_model *m, float *base, size_t l, int which) {
  return tensor(m, base, m->first_block + l * BLOCK_TENSORS + (size_t)which);
}

/* lnf_w, lnf_b, wout, bout follow the blocks. */
static float *tail_tensor(const tg_gpu_model *m, float *base, size_t which) {
  return tensor(m, base, m->first_block + m->N * BLOCK_TENSORS + which);
}

/* Allocates n floats (n = a * b * c, checked) on the device. */
static float *alloc_floats(tg_gpu *g, size_t a, size_t b, size_t c) {
  size_t n;
  if (__builtin_mul_overflow(a, b, &n) || __builtin_mul_overflow(n, c, &n) ||
      __builtin_mul_overflow(n, sizeof(float), &n)) {
    snprintf(g->error, sizeof g->error, "activation size overflows");
    return NULL;
  }
  return tg_gpu_alloc(g, n);
}

static int alloc_activations(tg_gpu_model *m, size_t rows) {
  tg_gpu *g = m->gpu;
  size_t N = m->N, D = m->D, H = m->H;
  m->x = alloc_floats(g, N + 1, rows, D);
  m->ln = alloc_floats(g, N ? N : 1, rows, D);
  m->ln_mean = alloc_floats(g, N ? N : 1, rows, 1);
  m->ln_rstd = alloc_floats(g, N ? N : 1, rows, 1);
  m->h = alloc_floats(g, N ? N : 1, rows, H);
  m->a = alloc_floats(g, N ? N : 1, rows, H);
  m->lnf = alloc_floats(g, rows, D, 1);
  m->lnf_mean = alloc_floats(g, rows, 1, 1);
  m->lnf_rstd = alloc_floats(g, rows, 1, 1);
  m->probs = alloc_floats(g, rows, V, 1);
  m->dres = alloc_floats(g, rows, D, 1);
  m->dln = alloc_floats(g, rows, D, 1);
  m->dh = alloc_floats(g, rows, H, 1);
  m->row_loss = tg_gpu_alloc(g, rows * sizeof(double));
  m->loss = tg_gpu_alloc(g, sizeof(float));
  return m->x && m->ln && m->ln_mean && m->ln_rstd && m->h && m->a && m->lnf && m->lnf_mean &&
         m->lnf_rstd && m->probs && m->dres && m->dln && m->dh && m->row_loss && m->loss;
}

static int alloc_inputs(tg_gpu_model *m, size_t rows) {
  tg_gpu *g = m->gpu;
  m->targets_at = rows;
  m->token_start_at = (2 * rows + 3) / 4 * 4; /* int32 aligned */
  m->rows_by_token_at = m->token_start_at + (V + 1) * sizeof(int32_t);
  m->inputs_bytes = m->rows_by_token_at + rows * sizeof(int32_t);
  m->inputs = tg_gpu_alloc(g, m->inputs_bytes);
  if (!m->inputs) return 0;
  for (int s = 0; s < 2; s++) {
    m->slots[s].host = tg_gpu_host_alloc(g, m->inputs_bytes);
    if (!m->slots[s].host ||
        tg_gpu_cuda(g, cudaEventCreateWithFlags(&m->slots[s].uploaded, cudaEventDisableTiming),
                    "cudaEventCreate (inputs)") != TG_MODEL_OK)
      return 0;
  }
  return 1;
}

tg_gpu_model *tg_gpu_model_new(tg_gpu *g, const tg_model_config *cfg, uint32_t max_batch,
                               char *err, size_t errlen) {
  if (!g || max_batch == 0) {
    set_err(err, errlen, "no GPU context, or max_batch 0");
    return NULL;
  }
  tg_gpu_model *m = calloc(1, sizeof *m);
  if (!m) {
    set_err(err, errlen, "out of memory for the GPU model");
    return NULL;
  }
  m->gpu = g;
  m->layout = tg_model_layout_new(cfg, err, errlen);
  if (!m->layout) goto fail;
  const tg_model_config *c = tg_model_config_of(m->layout);
  m->P = tg_model_num_params(m->layout);
  m->T = c->context;
  m->D = c->width;
  m->H = c->hidden;
  m->N = c->depth;
  m->first_block = c->use_position ? 2 : 1;
  m->max_batch = max_batch;
  size_t rows = (size_t)max_batch * m->T;
  /* cuBLAS dimensions and the row lists are int. */
  if (rows > INT_MAX) {
    set_err(err, errlen, "max_batch * context exceeds what one cuBLAS call can take (2^31 rows)");
    goto fail;
  }
  m->params = tg_gpu_alloc(g, m->P * sizeof(float));
  m->grads = m->params ? tg_gpu_alloc(g, m->P * sizeof(float)) : NULL;
  if (!m->grads || !alloc_activations(m, rows) || !alloc_inputs(m, rows)) {
    set_err(err, errlen, tg_gpu_last_error(g));
    goto fail;
  }
  return m;
fail:
  tg_gpu_model_free(m);
  return NULL;
}

void tg_gpu_model_free(tg_gpu_model *m) {
  if (!m) return;
  tg_gpu *g = m->gpu;
  float *arrays[] = {m->params, m->grads, m->x,        m->ln,       m->ln_mean,
                     m->ln_rstd, m->h,    m->a,        m->lnf,      m->lnf_mean,
                     m->lnf_rstd, m->probs, m->dres,   m->dln,      m->dh,
                     m->loss};
  for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++) tg_gpu_free(g, arrays[i]);
  tg_gpu_free(g, m->row_loss);
  tg_gpu_free(g, m->inputs);
  for (int s = 0; s < 2; s++) {
    tg_gpu_host_free(g, m->slots[s].host);
    if (m->slots[s].uploaded) cudaEventDestroy(m->slots[s].uploaded);
  }
  tg_model_free(m->layout);
  free(m);
}

tg_gpu *tg_gpu_model_gpu(const tg_gpu_model *m) { return m ? m->gpu : NULL; }
const tg_model *tg_gpu_model_layout(const tg_gpu_model *m) { return m ? m->layout : NULL; }
size_t tg_gpu_model_num_params(const tg_gpu_model *m) { return m ? m->P : 0; }
float *tg_gpu_model_params(tg_gpu_model *m) { return m ? m->params : NULL; }
float *tg_gpu_model_grads(tg_gpu_model *m) { return m ? m->grads : NULL; }
const float *tg_gpu_model_loss(const tg_gpu_model *m) { return m ? m->loss : NULL; }

/* Fills the next pinned slot with tokens, targets and the rows sorted by
 * token, and enqueues its upload. */
static tg_model_status upload_inputs(tg_gpu_model *m, const uint8_t *tokens,
                                     const uint8_t *targets, size_t rows) {
  tg_gpu *g = m->gpu;
  input_slot *slot = &m->slots[m->next_slot];
  m->next_slot ^= 1;
  if (slot->used) {
    tg_model_status st =
        tg_gpu_cuda(g, cudaEventSynchronize(slot->uploaded), "cudaEventSynchronize (inputs)");
    if (st != TG_MODEL_OK) return st;
  }
  uint8_t *h = slot->host;
  int32_t *start = (int32_t *)(h + m->token_start_at);
  int32_t *by_token = (int32_t *)(h + m->rows_by_token_at);
  memcpy(h, tokens, rows);
  memcpy(h + m->targets_at, targets, rows);
  memset(start, 0, (V + 1) * sizeof(int32_t));
  for (size_t r = 0; r < rows; r++) start[tokens[r] + 1]++;
  for (int v = 0; v < V; v++) start[v + 1] += start[v];
  int32_t fill[V];
  memcpy(fill, start, sizeof fill);
  for (size_t r = 0; r < rows; r++) by_token[fill[tokens[r]]++] = (int32_t)r;
  tg_model_status st = tg_gpu_cuda(
      g, cudaMemcpyAsync(m->inputs, h, m->inputs_bytes, cudaMemcpyHostToDevice, g->compute),
      "cudaMemcpyAsync (inputs)");
  if (st == TG_MODEL_OK)
    st = tg_gpu_cuda(g, cudaEventRecord(slot->uploaded, g->compute), "cudaEventRecord (inputs)");
  if (st == TG_MODEL_OK) slot->used = 1;
  return st;
}

/* out = in W^T + b (+ residual): rows x out_dim, W is [out_dim][in_dim]. */
static tg_model_status linear_forward(tg_gpu_model *m, float *out, const float *in,
                                      const float *w, const float *b, const float *residual,
                                      size_t rows, size_t in_dim, size_t out_dim) {
  tg_gpu *g = m->gpu;
  const float one = 1.0f;
  tg_model_status st =
      launch(g, tg_gpuk_bias_fill(g->compute, out, b, residual, rows, out_dim), "bias fill");
  if (st == TG_MODEL_OK)
    st = tg_gpu_cublas(g,
                       cublasSgemm(g->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)out_dim, (int)rows,
                                   (int)in_dim, &one, w, (int)in_dim, in, (int)in_dim, &one, out,
                                   (int)out_dim),
                       "cublasSgemm (linear forward)");
  return st;
}

/* din = dout W, dW = dout^T in, db = column sums of dout; all written. */
static tg_model_status linear_backward(tg_gpu_model *m, float *din, float *dw, float *db,
                                       const float *dout, const float *in, const float *w,
                                       size_t rows, size_t in_dim, size_t out_dim) {
  tg_gpu *g = m->gpu;
  const float one = 1.0f, zero = 0.0f;
  tg_model_status st = tg_gpu_cublas(
      g,
      cublasSgemm(g->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)in_dim, (int)rows, (int)out_dim, &one,
                  w, (int)in_dim, dout, (int)out_dim, &zero, din, (int)in_dim),
      "cublasSgemm (linear backward, input)");
  if (st == TG_MODEL_OK)
    st = tg_gpu_cublas(
        g,
        cublasSgemm(g->blas, CUBLAS_OP_N, CUBLAS_OP_T, (int)in_dim, (int)out_dim, (int)rows, &one,
                    in, (int)in_dim, dout, (int)out_dim, &zero, dw, (int)in_dim),
        "cublasSgemm (linear backward, weight)");
  if (st == TG_MODEL_OK)
    st = launch(g, tg_gpuk_column_sum(g->compute, db, dout, rows, out_dim), "bias gradient");
  return st;
}

tg_model_status tg_gpu_model_forward(tg_gpu_model *m, const uint8_t *tokens,
                                     const uint8_t *targets, uint32_t batch, float *loss) {
  if (!m || !tokens || !targets || batch == 0 || batch > m->max_batch) return TG_MODEL_EINVAL;
  tg_gpu *g = m->gpu;
  void *s = g->compute;
  size_t T = m->T, D = m->D, H = m->H, N = m->N, rows = (size_t)batch * T;
  float *p = m->params;
  uint8_t *tok = m->inputs, *tgt = m->inputs + m->targets_at;
  m->batch = 0;

  tg_model_status st = upload_inputs(m, tokens, targets, rows);
  if (st == TG_MODEL_OK)
    st = launch(g,
                tg_gpuk_embed_forward(s, m->x, tok, tensor(m, p, 0),
                                      m->first_block == 2 ? tensor(m, p, 1) : NULL, rows, T, D),
                "embedding forward");
  for (size_t l = 0; st == TG_MODEL_OK && l < N; l++) {
    const float *x = m->x + l * rows * D;
    float *x_next = m->x + (l + 1) * rows * D;
    float *ln = m->ln + l * rows * D, *h = m->h + l * rows * H, *a = m->a + l * rows * H;
    st = launch(g,
                tg_gpuk_layernorm_forward(s, ln, m->ln_mean + l * rows, m->ln_rstd + l * rows, x,
                                          block_tensor(m, p, l, BLOCK_LN_W),
                                          block_tensor(m, p, l, BLOCK_LN_B), rows, D, LN_EPS),
                "layernorm forward");
    if (st == TG_MODEL_OK)
      st = linear_forward(m, h, ln, block_tensor(m, p, l, BLOCK_W1),
                          block_tensor(m, p, l, BLOCK_B1), NULL, rows, D, H);
    if (st == TG_MODEL_OK) st = launch(g, tg_gpuk_gelu_forward(s, a, h, rows * H), "gelu forward");
    if (st == TG_MODEL_OK) /* the residual enters as the output's starting value */
      st = linear_forward(m, x_next, a, block_tensor(m, p, l, BLOCK_W2),
                          block_tensor(m, p, l, BLOCK_B2), x, rows, H, D);
  }
  if (st == TG_MODEL_OK)
    st = launch(g,
                tg_gpuk_layernorm_forward(s, m->lnf, m->lnf_mean, m->lnf_rstd, m->x + N * rows * D,
                                          tail_tensor(m, p, 0), tail_tensor(m, p, 1), rows, D,
                                          LN_EPS),
                "final layernorm forward");
  if (st == TG_MODEL_OK)
    st = linear_forward(m, m->probs, m->lnf, tail_tensor(m, p, 2), tail_tensor(m, p, 3), NULL,
                        rows, D, V);
  if (st == TG_MODEL_OK)
    st = launch(g, tg_gpuk_softmax_xent_forward(s, m->probs, m->row_loss, tgt, rows, V),
                "softmax cross-entropy forward");
  if (st == TG_MODEL_OK)
    st = launch(g, tg_gpuk_mean_loss(s, m->loss, m->row_loss, rows), "mean loss");
  if (st != TG_MODEL_OK) return st;
  m->batch = batch;
  if (!loss) return TG_MODEL_OK;
  st = tg_gpu_download(g, loss, m->loss, sizeof *loss);
  if (st == TG_MODEL_OK && !isfinite(*loss)) st = TG_MODEL_ENONFINITE;
  return st;
}

tg_model_status tg_gpu_model_backward(tg_gpu_model *m) {
  if (!m || m->batch == 0) return TG_MODEL_EINVAL;
  tg_gpu *g = m->gpu;
  void *s = g->compute;
  size_t T = m->T, D = m->D, H = m->H, N = m->N, rows = (size_t)m->batch * T;
  float *p = m->params, *dp = m->grads;
  const uint8_t *tgt = m->inputs + m->targets_at;
  const int32_t *start = (const int32_t *)(m->inputs + m->token_start_at);
  const int32_t *by_token = (const int32_t *)(m->inputs + m->rows_by_token_at);
  uint32_t batch = m->batch;
  m->batch = 0; /* the activations are consumed below */

  float *dlogits = m->probs;
  tg_model_status st =
      launch(g, tg_gpuk_softmax_xent_backward(s, dlogits, tgt, rows, V, 1.0f / (float)rows),
             "softmax cross-entropy backward");
  if (st == TG_MODEL_OK) /* dln is d lnf here */
    st = linear_backward(m, m->dln, tail_tensor(m, dp, 2), tail_tensor(m, dp, 3), dlogits, m->lnf,
                         tail_tensor(m, p, 2), rows, D, V);
  if (st == TG_MODEL_OK)
    st = launch(g,
                tg_gpuk_layernorm_backward(s, m->dres, tail_tensor(m, dp, 0),
                                           tail_tensor(m, dp, 1), m->dln, m->x + N * rows * D,
                                           tail_tensor(m, p, 0), m->lnf_mean, m->lnf_rstd, rows,
                                           D, 0),
                "final layernorm backward");
  for (size_t l = N; st == TG_MODEL_OK && l-- > 0;) {
    float *ln = m->ln + l * rows * D, *h = m->h + l * rows * H, *a = m->a + l * rows * H;
    /* dres is d x_{l+1}; it flows unchanged into d x_l (the residual) and
     * through the block, whose contribution is added at the end. */
    st = linear_backward(m, m->dh, block_tensor(m, dp, l, BLOCK_W2),
                         block_tensor(m, dp, l, BLOCK_B2), m->dres, a,
                         block_tensor(m, p, l, BLOCK_W2), rows, H, D);
    if (st == TG_MODEL_OK)
      st = launch(g, tg_gpuk_gelu_backward(s, m->dh, h, m->dh, rows * H), "gelu backward");
    if (st == TG_MODEL_OK)
      st = linear_backward(m, m->dln, block_tensor(m, dp, l, BLOCK_W1),
                           block_tensor(m, dp, l, BLOCK_B1), m->dh, ln,
                           block_tensor(m, p, l, BLOCK_W1), rows, D, H);
    if (st == TG_MODEL_OK)
      st = launch(g,
                  tg_gpuk_layernorm_backward(s, m->dres, block_tensor(m, dp, l, BLOCK_LN_W),
                                             block_tensor(m, dp, l, BLOCK_LN_B), m->dln,
                                             m->x + l * rows * D, block_tensor(m, p, l, BLOCK_LN_W),
                                             m->ln_mean + l * rows, m->ln_rstd + l * rows, rows,
                                             D, 1),
                  "layernorm backward");
  }
  if (st == TG_MODEL_OK)
    st = launch(g,
                tg_gpuk_embed_backward(s, tensor(m, dp, 0),
                                       m->first_block == 2 ? tensor(m, dp, 1) : NULL, m->dres,
                                       start, by_token, batch, T, D, V),
                "embedding backward");
  return st;
}
