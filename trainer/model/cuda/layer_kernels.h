/* Launchers of the model's layer kernels (layer_kernels.cu), for
 * gpu_model.c. Each enqueues on `stream` (a cudaStream_t) and returns the
 * launch's cudaError_t as an int. Arrays are device memory in the CPU
 * model's layouts (row-major, rows = batch * T). Every reduction runs in a
 * fixed order, so the same inputs give the same bits on every run. */
#ifndef TG_LAYER_KERNELS_H
#define TG_LAYER_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* x[r] = wte[tokens[r]] + wpe[r % T] (wpe may be NULL). */
int tg_gpuk_embed_forward(void *stream, float *x, const uint8_t *tokens, const float *wte,
                          const float *wpe, size_t rows, size_t T, size_t D);

/* dwte[v] = sum of dx[r] over the rows whose token is v, taken in row
 * order (rows_by_token[token_start[v] .. token_start[v+1]) lists them
 * ascending); dwpe[t] = sum over samples b of dx[b T + t], b ascending.
 * Writes every element (no atomics). dwpe may be NULL. */
int tg_gpuk_embed_backward(void *stream, float *dwte, float *dwpe, const float *dx,
                           const int32_t *token_start, const int32_t *rows_by_token,
                           size_t batch, size_t T, size_t D, size_t vocab);

/* out = (x - mean) * rstd * w + b per row; keeps mean and rstd. */
int tg_gpuk_layernorm_forward(void *stream, float *out, float *mean, float *rstd, const float *x,
                              const float *w, const float *b, size_t rows, size_t D, float eps);

/* dx (+)= the input gradient (added to dx when accumulate, else written);
 * dw, db = the gain and bias gradients, written. */
int tg_gpuk_layernorm_backward(void *stream, float *dx, float *dw, float *db, const float *dout,
                               const float *x, const float *w, const float *mean,
                               const float *rstd, size_t rows, size_t D, int accumulate);

/* out[r][c] = b[c] + (residual ? residual[r][c] : 0): the start of a
 * linear layer's output, to which the matmul is then added. */
int tg_gpuk_bias_fill(void *stream, float *out, const float *b, const float *residual,
                      size_t rows, size_t cols);

/* db[c] = sum over r of dout[r][c], r ascending. */
int tg_gpuk_column_sum(void *stream, float *db, const float *dout, size_t rows, size_t cols);

/* GELU (tanh approximation) and its backward dx = gelu'(x) dout (dx may
 * alias dout). */
int tg_gpuk_gelu_forward(void *stream, float *out, const float *x, size_t n);
int tg_gpuk_gelu_backward(void *stream, float *dx, const float *x, const float *dout, size_t n);

/* probs = softmax(logits) in place per row of `vocab`; row_loss[r] =
 * -log(probs[r][targets[r]]) in double. */
int tg_gpuk_softmax_xent_forward(void *stream, float *probs, double *row_loss,
                                 const uint8_t *targets, size_t rows, size_t vocab);

/* *loss = (float)(sum of row_loss / rows), summed in a fixed tree. */
int tg_gpuk_mean_loss(void *stream, float *loss, const double *row_loss, size_t rows);

/* probs <- (probs - onehot(target)) * inv_rows in place. */
int tg_gpuk_softmax_xent_backward(void *stream, float *probs, const uint8_t *targets,
                                  size_t rows, size_t vocab, float inv_rows);

#ifdef __cplusplus
}
#endif

#endif
