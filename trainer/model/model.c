/* The reference model: forward and backward of a byte-level residual-MLP
 * language model over one flat parameter array (see model.h for the math
 * and the layout).
 *
 * Read it top to bottom: the layout (where each tensor sits in the flat
 * array), then each layer's forward next to its backward, then the model's
 * forward and backward that chain them. Loops are plain and in a fixed
 * order on purpose: the same inputs give the same bits on every rank, which
 * the exact gradient sums of fixed.h rely on. Activations for max_batch
 * samples are allocated once, in one arena, at tg_model_new. */
#include "trainer/model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define V TG_MODEL_VOCAB
#define LN_EPS 1e-5f
#define INIT_STD 0.02f
#define TENSOR_NAME_MAX 32
#define TENSORS_PER_BLOCK 6

/* ---------------------------------------------------------------------- */
/* Layout: offsets of every tensor in the flat arrays.                     */

typedef struct {
  float *ln_w, *ln_b, *w1, *b1, *w2, *b2;
} block_view;

typedef struct {
  float *wte, *wpe, *lnf_w, *lnf_b, *wout, *bout;
} edge_view; /* the tensors outside the blocks */

struct tg_model {
  tg_model_config cfg; /* hidden resolved: never 0 here */
  uint32_t max_batch;
  size_t num_params;
  size_t blocks_offset, block_size, tail_offset;
  float *params, *grads;

  tg_model_tensor *tensors;
  size_t tensor_count;
  char *tensor_names;

  /* Activations of the last forward, for max_batch * T rows. */
  float *arena;
  float *x;         /* (N+1) x rows x D: the residual stream, x_0 .. x_N */
  float *ln;        /* N x rows x D: layernorm_l(x_l) */
  float *ln_mean;   /* N x rows */
  float *ln_rstd;   /* N x rows */
  float *h;         /* N x rows x H: W1 ln + b1 */
  float *a;         /* N x rows x H: gelu(h) */
  float *lnf;       /* rows x D */
  float *lnf_mean;  /* rows */
  float *lnf_rstd;  /* rows */
  float *probs;     /* rows x V; backward turns it into dlogits in place */
  float *dres;      /* rows x D: gradient of the residual stream */
  float *dln;       /* rows x D */
  float *dh;        /* rows x H */
  uint8_t *tokens, *targets; /* rows */
  uint32_t batch;   /* of the last forward; 0: none to run backward on */
};

static void set_err(char *err, size_t errlen, const char *why) {
  if (err && errlen) snprintf(err, errlen, "%s", why);
}

/* a * b + c without wrapping; 0 on overflow. */
static int size_mad(size_t a, size_t b, size_t c, size_t *out) {
  size_t p;
  if (__builtin_mul_overflow(a, b, &p) || __builtin_add_overflow(p, c, out)) return 0;
  return 1;
}

static int config_valid(const tg_model_config *c) {
  return c && c->context >= 1 && c->context <= TG_MODEL_MAX_CONTEXT && c->width >= 1 &&
         c->width <= TG_MODEL_MAX_WIDTH && c->hidden <= TG_MODEL_MAX_WIDTH &&
         c->depth <= TG_MODEL_MAX_DEPTH;
}

static uint32_t hidden_of(const tg_model_config *c) {
  return c->hidden ? c->hidden : 4 * c->width;
}

/* The layout arithmetic, shared by tg_model_param_count and tg_model_new. */
static int layout(const tg_model_config *c, size_t *blocks_offset, size_t *block_size,
                  size_t *tail_offset, size_t *total) {
  if (!config_valid(c)) return 0;
  size_t D = c->width, H = hidden_of(c), T = c->context, N = c->depth;
  if (H > TG_MODEL_MAX_WIDTH) return 0;
  size_t head = V * D + (c->use_position ? T * D : 0);
  size_t bsize = 2 * H * D + H + 3 * D; /* < 2^34: no overflow */
  size_t tail_at, tail = 2 * D + V * D + V;
  if (!size_mad(N, bsize, head, &tail_at)) return 0;
  if (__builtin_add_overflow(tail_at, tail, total)) return 0;
  *blocks_offset = head;
  *block_size = bsize;
  *tail_offset = tail_at;
  return 1;
}

size_t tg_model_param_count(const tg_model_config *cfg) {
  size_t b, s, t, total;
  return layout(cfg, &b, &s, &t, &total) ? total : 0;
}

static block_view block_at(const tg_model *m, float *base, uint32_t l) {
  size_t D = m->cfg.width, H = m->cfg.hidden;
  block_view v;
  v.ln_w = base + m->blocks_offset + (size_t)l * m->block_size;
  v.ln_b = v.ln_w + D;
  v.w1 = v.ln_b + D;
  v.b1 = v.w1 + H * D;
  v.w2 = v.b1 + H;
  v.b2 = v.w2 + D * H;
  return v;
}

static edge_view edges_at(const tg_model *m, float *base) {
  size_t D = m->cfg.width;
  edge_view v;
  v.wte = base;
  v.wpe = m->cfg.use_position ? base + V * D : NULL;
  v.lnf_w = base + m->tail_offset;
  v.lnf_b = v.lnf_w + D;
  v.wout = v.lnf_b + D;
  v.bout = v.wout + V * D;
  return v;
}

/* The tensor table (names, offsets, decay), built once. The tensors tile
 * [0, P) in layout order, so each starts where the previous one ended;
 * block_at and edges_at agree with it (the model test checks both). */
static int build_tensors(tg_model *m) {
  size_t n = 2 + (m->cfg.use_position ? 1 : 0) + 4 + (size_t)TENSORS_PER_BLOCK * m->cfg.depth;
  m->tensors = calloc(n, sizeof *m->tensors);
  m->tensor_names = calloc(n, TENSOR_NAME_MAX);
  if (!m->tensors || !m->tensor_names) return 0;
  size_t D = m->cfg.width, H = m->cfg.hidden, T = m->cfg.context;
  size_t k = 0, at = 0;
#define ADD(cnt, dec, ...)                                               \
  do {                                                                   \
    char *nm = m->tensor_names + k * TENSOR_NAME_MAX;                    \
    snprintf(nm, TENSOR_NAME_MAX, __VA_ARGS__);                          \
    m->tensors[k++] = (tg_model_tensor){nm, at, (cnt), (dec)};           \
    at += (cnt);                                                         \
  } while (0)
  ADD(V * D, 1, "wte");
  if (m->cfg.use_position) ADD(T * D, 1, "wpe");
  for (uint32_t l = 0; l < m->cfg.depth; l++) {
    ADD(D, 0, "blocks.%u.ln_w", l);
    ADD(D, 0, "blocks.%u.ln_b", l);
    ADD(H * D, 1, "blocks.%u.w1", l);
    ADD(H, 0, "blocks.%u.b1", l);
    ADD(D * H, 1, "blocks.%u.w2", l);
    ADD(D, 0, "blocks.%u.b2", l);
  }
  ADD(D, 0, "lnf_w");
  ADD(D, 0, "lnf_b");
  ADD(V * D, 1, "wout");
  ADD((size_t)V, 0, "bout");
#undef ADD
  m->tensor_count = k;
  return at == m->num_params;
}

/* Carves the activation arena; returns 0 if its size overflows or it
 * cannot be allocated. */
static int alloc_activations(tg_model *m) {
  size_t D = m->cfg.width, H = m->cfg.hidden, N = m->cfg.depth;
  size_t rows;
  if (!size_mad(m->max_batch, m->cfg.context, 0, &rows)) return 0;
  /* Floats per row: x (N+1)D, ln ND, ln stats 2N, h and a 2NH, lnf D + 2,
   * probs V, scratch dres D, dln D, dh H. */
  size_t per_row = 0, total;
  if (!size_mad(N + 1, D, 0, &per_row) || !size_mad(N, D + 2 + 2 * H, per_row, &per_row) ||
      !size_mad(1, 3 * D + 2 + V + H, per_row, &per_row) || !size_mad(rows, per_row, 0, &total) ||
      !size_mad(total, sizeof(float), 0, &total))
    return 0;
  m->arena = malloc(total);
  m->tokens = malloc(rows);
  m->targets = malloc(rows);
  if (!m->arena || !m->tokens || !m->targets) return 0;
  float *p = m->arena;
  m->x = p, p += (N + 1) * rows * D;
  m->ln = p, p += N * rows * D;
  m->ln_mean = p, p += N * rows;
  m->ln_rstd = p, p += N * rows;
  m->h = p, p += N * rows * H;
  m->a = p, p += N * rows * H;
  m->lnf = p, p += rows * D;
  m->lnf_mean = p, p += rows;
  m->lnf_rstd = p, p += rows;
  m->probs = p, p += rows * V;
  m->dres = p, p += rows * D;
  m->dln = p, p += rows * D;
  m->dh = p;
  return 1;
}

/* The config, the layout and the tensor table: what every model has,
 * whether or not its arrays live in host memory. */
static tg_model *layout_new(const tg_model_config *cfg, char *err, size_t errlen) {
  size_t blocks_offset, block_size, tail_offset, total;
  if (!layout(cfg, &blocks_offset, &block_size, &tail_offset, &total)) {
    set_err(err, errlen, "invalid model config (context, width, hidden or depth out of range)");
    return NULL;
  }
  tg_model *m = calloc(1, sizeof *m);
  if (!m) goto nomem;
  m->cfg = *cfg;
  m->cfg.hidden = hidden_of(cfg);
  m->num_params = total;
  m->blocks_offset = blocks_offset;
  m->block_size = block_size;
  m->tail_offset = tail_offset;
  if (!build_tensors(m)) goto nomem;
  return m;
nomem:
  set_err(err, errlen, "out of memory for the model's tensor table");
  tg_model_free(m);
  return NULL;
}

tg_model *tg_model_layout_new(const tg_model_config *cfg, char *err, size_t errlen) {
  return layout_new(cfg, err, errlen);
}

tg_model *tg_model_new(const tg_model_config *cfg, uint32_t max_batch, char *err, size_t errlen) {
  tg_model *m = layout_new(cfg, err, errlen);
  if (!m) return NULL;
  if (max_batch == 0) {
    set_err(err, errlen, "max_batch must be at least 1");
    tg_model_free(m);
    return NULL;
  }
  m->max_batch = max_batch;
  m->params = calloc(m->num_params, sizeof(float));
  m->grads = calloc(m->num_params, sizeof(float));
  if (!m->params || !m->grads || !alloc_activations(m)) {
    set_err(err, errlen, "out of memory for the model's parameters, gradients or activations");
    tg_model_free(m);
    return NULL;
  }
  return m;
}

void tg_model_free(tg_model *m) {
  if (!m) return;
  free(m->params);
  free(m->grads);
  free(m->tensors);
  free(m->tensor_names);
  free(m->arena);
  free(m->tokens);
  free(m->targets);
  free(m);
}

const tg_model_config *tg_model_config_of(const tg_model *m) { return m ? &m->cfg : NULL; }
size_t tg_model_num_params(const tg_model *m) { return m ? m->num_params : 0; }
float *tg_model_params(tg_model *m) { return m ? m->params : NULL; }
float *tg_model_grads(tg_model *m) { return m ? m->grads : NULL; }
size_t tg_model_tensor_count(const tg_model *m) { return m ? m->tensor_count : 0; }

tg_model_status tg_model_tensor_at(const tg_model *m, size_t i, tg_model_tensor *out) {
  if (!m || !out || i >= m->tensor_count) return TG_MODEL_EINVAL;
  *out = m->tensors[i];
  return TG_MODEL_OK;
}

/* ---------------------------------------------------------------------- */
/* Initialisation: a splitmix64 stream, so it is the same on every machine. */

static uint64_t splitmix64(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Uniform in [-a, a) with a = std * sqrt(3), so its std is `std`. */
static void fill_uniform(float *p, size_t n, float std, uint64_t *state) {
  float a = std * 1.7320508f;
  for (size_t i = 0; i < n; i++) {
    float u = (float)(splitmix64(state) >> 40) * (1.0f / 16777216.0f); /* [0, 1) */
    p[i] = (2.0f * u - 1.0f) * a;
  }
}

void tg_model_init_params_at(const tg_model *m, float *params, uint64_t seed) {
  if (!m || !params) return;
  uint64_t state = seed;
  float residual_std = INIT_STD / sqrtf(2.0f * (float)(m->cfg.depth ? m->cfg.depth : 1));
  memset(params, 0, m->num_params * sizeof(float));
  for (size_t k = 0; k < m->tensor_count; k++) {
    const tg_model_tensor *t = &m->tensors[k];
    float *p = params + t->offset;
    const char *leaf = strrchr(t->name, '.');
    leaf = leaf ? leaf + 1 : t->name;
    if (t->decay)
      fill_uniform(p, t->count, strcmp(leaf, "w2") == 0 ? residual_std : INIT_STD, &state);
    else if (strcmp(leaf, "ln_w") == 0 || strcmp(leaf, "lnf_w") == 0)
      for (size_t i = 0; i < t->count; i++) p[i] = 1.0f;
  }
}

void tg_model_init_params(tg_model *m, uint64_t seed) {
  if (m) tg_model_init_params_at(m, m->params, seed);
}

/* ---------------------------------------------------------------------- */
/* Layers, each forward beside its backward. Backward functions ADD into
 * their gradient outputs (the caller zeroes them), as several paths meet. */

/* x[r] = wte[token[r]] + wpe[r % T] */
static void embed_forward(float *x, const uint8_t *tokens, const float *wte, const float *wpe,
                          size_t rows, size_t T, size_t D) {
  for (size_t r = 0; r < rows; r++) {
    const float *te = wte + (size_t)tokens[r] * D;
    const float *pe = wpe ? wpe + (r % T) * D : NULL;
    for (size_t i = 0; i < D; i++) x[r * D + i] = te[i] + (pe ? pe[i] : 0.0f);
  }
}

static void embed_backward(float *dwte, float *dwpe, const float *dx, const uint8_t *tokens,
                           size_t rows, size_t T, size_t D) {
  for (size_t r = 0; r < rows; r++) {
    float *dte = dwte + (size_t)tokens[r] * D;
    float *dpe = dwpe ? dwpe + (r % T) * D : NULL;
    for (size_t i = 0; i < D; i++) {
      dte[i] += dx[r * D + i];
      if (dpe) dpe[i] += dx[r * D + i];
    }
  }
}

/* out = (x - mean) / sqrt(var + eps) * w + b, per row of D. */
static void layernorm_forward(float *out, float *mean, float *rstd, const float *x,
                              const float *w, const float *b, size_t rows, size_t D) {
  for (size_t r = 0; r < rows; r++) {
    const float *xr = x + r * D;
    float mu = 0.0f, var = 0.0f;
    for (size_t i = 0; i < D; i++) mu += xr[i];
    mu /= (float)D;
    for (size_t i = 0; i < D; i++) var += (xr[i] - mu) * (xr[i] - mu);
    var /= (float)D;
    float s = 1.0f / sqrtf(var + LN_EPS);
    for (size_t i = 0; i < D; i++) out[r * D + i] = (xr[i] - mu) * s * w[i] + b[i];
    mean[r] = mu;
    rstd[r] = s;
  }
}

static void layernorm_backward(float *dx, float *dw, float *db, const float *dout,
                               const float *x, const float *w, const float *mean,
                               const float *rstd, size_t rows, size_t D) {
  for (size_t r = 0; r < rows; r++) {
    const float *xr = x + r * D, *dr = dout + r * D;
    float mean_dnorm = 0.0f, mean_dnorm_norm = 0.0f;
    for (size_t i = 0; i < D; i++) {
      float norm = (xr[i] - mean[r]) * rstd[r];
      float dnorm = dr[i] * w[i];
      mean_dnorm += dnorm;
      mean_dnorm_norm += dnorm * norm;
    }
    mean_dnorm /= (float)D;
    mean_dnorm_norm /= (float)D;
    for (size_t i = 0; i < D; i++) {
      float norm = (xr[i] - mean[r]) * rstd[r];
      float dnorm = dr[i] * w[i];
      dw[i] += dr[i] * norm;
      db[i] += dr[i];
      dx[r * D + i] += rstd[r] * (dnorm - mean_dnorm - norm * mean_dnorm_norm);
    }
  }
}

/* out[r][o] = b[o] + sum_i in[r][i] w[o][i]: w is [out][in], row-major. */
static void matmul_forward(float *out, const float *in, const float *w, const float *b,
                           size_t rows, size_t in_dim, size_t out_dim) {
  for (size_t r = 0; r < rows; r++) {
    const float *ir = in + r * in_dim;
    for (size_t o = 0; o < out_dim; o++) {
      const float *wo = w + o * in_dim;
      float s = b[o];
      for (size_t i = 0; i < in_dim; i++) s += ir[i] * wo[i];
      out[r * out_dim + o] = s;
    }
  }
}

static void matmul_backward(float *din, float *dw, float *db, const float *dout,
                            const float *in, const float *w, size_t rows, size_t in_dim,
                            size_t out_dim) {
  for (size_t r = 0; r < rows; r++) {
    float *dr = din + r * in_dim;
    for (size_t o = 0; o < out_dim; o++) {
      float d = dout[r * out_dim + o];
      const float *wo = w + o * in_dim;
      for (size_t i = 0; i < in_dim; i++) dr[i] += d * wo[i];
    }
  }
  for (size_t o = 0; o < out_dim; o++) {
    float *dwo = dw + o * in_dim;
    for (size_t r = 0; r < rows; r++) {
      float d = dout[r * out_dim + o];
      const float *ir = in + r * in_dim;
      db[o] += d;
      for (size_t i = 0; i < in_dim; i++) dwo[i] += d * ir[i];
    }
  }
}

/* GELU, tanh approximation (GPT-2's). */
#define GELU_SCALE 0.7978845608f /* sqrt(2 / pi) */
#define GELU_CUBE 0.044715f

static void gelu_forward(float *out, const float *x, size_t n) {
  for (size_t i = 0; i < n; i++) {
    float v = x[i];
    out[i] = 0.5f * v * (1.0f + tanhf(GELU_SCALE * (v + GELU_CUBE * v * v * v)));
  }
}

/* dx[i] = gelu'(x[i]) * dout[i]; dx may alias dout. */
static void gelu_backward(float *dx, const float *x, const float *dout, size_t n) {
  for (size_t i = 0; i < n; i++) {
    float v = x[i];
    float t = tanhf(GELU_SCALE * (v + GELU_CUBE * v * v * v));
    float du = GELU_SCALE * (1.0f + 3.0f * GELU_CUBE * v * v);
    float grad = 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du;
    dx[i] = grad * dout[i];
  }
}

/* probs = softmax(logits) in place per row; returns the summed
 * cross-entropy -log probs[target] over the rows (in double). */
static double softmax_xent_forward(float *probs, const uint8_t *targets, size_t rows) {
  double loss = 0.0;
  for (size_t r = 0; r < rows; r++) {
    float *p = probs + r * V;
    float mx = p[0];
    for (size_t i = 1; i < V; i++) mx = p[i] > mx ? p[i] : mx;
    float sum = 0.0f;
    for (size_t i = 0; i < V; i++) {
      p[i] = expf(p[i] - mx);
      sum += p[i];
    }
    for (size_t i = 0; i < V; i++) p[i] /= sum;
    loss -= log((double)p[targets[r]]);
  }
  return loss;
}

/* dlogits = (probs - onehot(target)) / rows, in place: the gradient of the
 * mean loss. */
static void softmax_xent_backward(float *probs, const uint8_t *targets, size_t rows) {
  float inv = 1.0f / (float)rows;
  for (size_t r = 0; r < rows; r++) {
    float *p = probs + r * V;
    p[targets[r]] -= 1.0f;
    for (size_t i = 0; i < V; i++) p[i] *= inv;
  }
}

/* ---------------------------------------------------------------------- */
/* The model: forward chains the layers up, backward chains them down.      */

tg_model_status tg_model_forward(tg_model *m, const uint8_t *tokens, const uint8_t *targets,
                                 uint32_t batch, float *loss) {
  if (!m || !m->params || !tokens || !targets || !loss || batch == 0 || batch > m->max_batch)
    return TG_MODEL_EINVAL;
  size_t T = m->cfg.context, D = m->cfg.width, H = m->cfg.hidden, N = m->cfg.depth;
  size_t rows = (size_t)batch * T;
  edge_view e = edges_at(m, m->params);
  m->batch = 0;
  memcpy(m->tokens, tokens, rows);
  memcpy(m->targets, targets, rows);

  embed_forward(m->x, tokens, e.wte, e.wpe, rows, T, D);
  for (size_t l = 0; l < N; l++) {
    block_view b = block_at(m, m->params, (uint32_t)l);
    const float *x = m->x + l * rows * D;
    float *x_next = m->x + (l + 1) * rows * D;
    float *ln = m->ln + l * rows * D, *h = m->h + l * rows * H, *a = m->a + l * rows * H;
    layernorm_forward(ln, m->ln_mean + l * rows, m->ln_rstd + l * rows, x, b.ln_w, b.ln_b, rows,
                      D);
    matmul_forward(h, ln, b.w1, b.b1, rows, D, H);
    gelu_forward(a, h, rows * H);
    matmul_forward(x_next, a, b.w2, b.b2, rows, H, D);
    for (size_t i = 0; i < rows * D; i++) x_next[i] += x[i]; /* the residual */
  }
  layernorm_forward(m->lnf, m->lnf_mean, m->lnf_rstd, m->x + N * rows * D, e.lnf_w, e.lnf_b,
                    rows, D);
  matmul_forward(m->probs, m->lnf, e.wout, e.bout, rows, D, V);
  double mean_loss = softmax_xent_forward(m->probs, targets, rows) / (double)rows;
  *loss = (float)mean_loss;
  if (!isfinite(*loss)) return TG_MODEL_ENONFINITE;
  m->batch = batch;
  return TG_MODEL_OK;
}

tg_model_status tg_model_backward(tg_model *m) {
  if (!m || m->batch == 0) return TG_MODEL_EINVAL;
  size_t T = m->cfg.context, D = m->cfg.width, H = m->cfg.hidden, N = m->cfg.depth;
  size_t rows = (size_t)m->batch * T;
  edge_view e = edges_at(m, m->params), de = edges_at(m, m->grads);
  memset(m->grads, 0, m->num_params * sizeof(float));
  m->batch = 0; /* the activations are consumed below */

  float *dlogits = m->probs;
  softmax_xent_backward(dlogits, m->targets, rows);
  memset(m->dln, 0, rows * D * sizeof(float)); /* here: d lnf */
  matmul_backward(m->dln, de.wout, de.bout, dlogits, m->lnf, e.wout, rows, D, V);
  memset(m->dres, 0, rows * D * sizeof(float));
  layernorm_backward(m->dres, de.lnf_w, de.lnf_b, m->dln, m->x + N * rows * D, e.lnf_w,
                     m->lnf_mean, m->lnf_rstd, rows, D);
  for (size_t l = N; l-- > 0;) {
    block_view b = block_at(m, m->params, (uint32_t)l), db = block_at(m, m->grads, (uint32_t)l);
    float *ln = m->ln + l * rows * D, *h = m->h + l * rows * H, *a = m->a + l * rows * H;
    /* dres is d x_{l+1}; it flows unchanged into d x_l (the residual) and
     * through the block, whose contribution is added at the end. */
    memset(m->dh, 0, rows * H * sizeof(float));
    matmul_backward(m->dh, db.w2, db.b2, m->dres, a, b.w2, rows, H, D);
    gelu_backward(m->dh, h, m->dh, rows * H);
    memset(m->dln, 0, rows * D * sizeof(float));
    matmul_backward(m->dln, db.w1, db.b1, m->dh, ln, b.w1, rows, D, H);
    layernorm_backward(m->dres, db.ln_w, db.ln_b, m->dln, m->x + l * rows * D, b.ln_w,
                       m->ln_mean + l * rows, m->ln_rstd + l * rows, rows, D);
  }
  embed_backward(de.wte, de.wpe, m->dres, m->tokens, rows, T, D);
  return TG_MODEL_OK;
}
