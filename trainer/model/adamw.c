/* AdamW on one rank's slice of the flat parameters (see adamw.h). The
 * per-element update reads only shared scalars, so where the slice
 * boundaries fall cannot change a bit of the result. */
#include "trainer/model/adamw.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/model/shard.h"

struct tg_adamw {
  tg_adamw_config cfg;
  size_t num_params, begin, end;
  uint64_t step;
  float *m, *v;             /* end - begin each */
  tg_adamw_span *decay;     /* spans clipped to [begin, end), sorted */
  size_t decay_count;
};

static void set_err(char *err, size_t errlen, const char *why) {
  if (err && errlen) snprintf(err, errlen, "%s", why);
}

static int config_valid(const tg_adamw_config *c) {
  return c && c->lr > 0.0f && isfinite(c->lr) && c->lr_min >= 0.0f && c->lr_min <= c->lr &&
         c->beta1 >= 0.0f && c->beta1 < 1.0f && c->beta2 >= 0.0f && c->beta2 < 1.0f &&
         c->eps > 0.0f && c->weight_decay >= 0.0f && isfinite(c->weight_decay) &&
         c->grad_clip >= 0.0f && isfinite(c->grad_clip);
}

static int span_cmp(const void *a, const void *b) {
  const tg_adamw_span *x = a, *y = b;
  return x->begin < y->begin ? -1 : x->begin > y->begin;
}

tg_adamw *tg_adamw_new(const tg_adamw_config *cfg, size_t num_params, size_t begin, size_t end,
                       const tg_adamw_span *decay_spans, size_t span_count, char *err,
                       size_t errlen) {
  if (!config_valid(cfg)) {
    set_err(err, errlen, "invalid AdamW config (lr, betas, eps, weight decay or clip)");
    return NULL;
  }
  if (begin > end || end > num_params || (span_count && !decay_spans)) {
    set_err(err, errlen, "slice or decay spans outside the parameter array");
    return NULL;
  }
  tg_adamw *opt = calloc(1, sizeof *opt);
  if (!opt) goto nomem;
  opt->cfg = *cfg;
  opt->num_params = num_params;
  opt->begin = begin;
  opt->end = end;
  size_t n = end - begin;
  opt->m = calloc(n ? n : 1, sizeof(float));
  opt->v = calloc(n ? n : 1, sizeof(float));
  opt->decay = calloc(span_count ? span_count : 1, sizeof *opt->decay);
  if (!opt->m || !opt->v || !opt->decay) goto nomem;
  for (size_t k = 0; k < span_count; k++) {
    const tg_adamw_span *s = &decay_spans[k];
    if (s->begin > s->end || s->end > num_params) {
      set_err(err, errlen, "a decay span lies outside the parameter array");
      tg_adamw_free(opt);
      return NULL;
    }
    size_t lo = s->begin > begin ? s->begin : begin, hi = s->end < end ? s->end : end;
    if (lo < hi) opt->decay[opt->decay_count++] = (tg_adamw_span){lo, hi};
  }
  qsort(opt->decay, opt->decay_count, sizeof *opt->decay, span_cmp);
  return opt;
nomem:
  set_err(err, errlen, "out of memory for the AdamW moments");
  tg_adamw_free(opt);
  return NULL;
}

void tg_adamw_free(tg_adamw *opt) {
  if (!opt) return;
  free(opt->m);
  free(opt->v);
  free(opt->decay);
  free(opt);
}

float tg_adamw_lr(const tg_adamw_config *cfg, uint64_t step) {
  if (!cfg) return 0.0f;
  if (step < cfg->warmup_steps) return cfg->lr * (float)(step + 1) / (float)cfg->warmup_steps;
  if (cfg->decay_steps == 0) return cfg->lr;
  if (step >= cfg->decay_steps) return cfg->lr_min;
  double span = (double)(cfg->decay_steps - cfg->warmup_steps);
  double progress = (double)(step - cfg->warmup_steps) / span;
  double cosine = 0.5 * (1.0 + cos(M_PI * progress));
  return (float)(cfg->lr_min + (cfg->lr - cfg->lr_min) * cosine);
}

tg_model_status tg_adamw_scalars_at(const tg_adamw_config *cfg, uint64_t step, double grad_norm,
                                    tg_adamw_scalars *out) {
  if (!config_valid(cfg) || !out || !(grad_norm >= 0.0)) return TG_MODEL_EINVAL;
  if (!isfinite(grad_norm)) return TG_MODEL_ENONFINITE;
  uint64_t t = step + 1;
  out->lr = tg_adamw_lr(cfg, step);
  out->bias1 = (float)(1.0 - pow(cfg->beta1, (double)t));
  out->bias2 = (float)(1.0 - pow(cfg->beta2, (double)t));
  out->clip_scale = 1.0f;
  if (cfg->grad_clip > 0.0f && grad_norm > cfg->grad_clip)
    out->clip_scale = (float)(cfg->grad_clip / grad_norm);
  return TG_MODEL_OK;
}

/* params[lo, hi) <- AdamW with decay factor wd (0 or the configured one). */
static void update_range(tg_adamw *opt, float *params, const float *grads, size_t lo, size_t hi,
                         const tg_adamw_scalars *s, float wd) {
  const float b1 = opt->cfg.beta1, b2 = opt->cfg.beta2, eps = opt->cfg.eps;
  const float lr = s->lr, clip_scale = s->clip_scale, bias1 = s->bias1, bias2 = s->bias2;
  for (size_t i = lo; i < hi; i++) {
    size_t k = i - opt->begin;
    float g = grads[i] * clip_scale;
    float m = b1 * opt->m[k] + (1.0f - b1) * g;
    float v = b2 * opt->v[k] + (1.0f - b2) * g * g;
    opt->m[k] = m;
    opt->v[k] = v;
    float mhat = m / bias1, vhat = v / bias2;
    params[i] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * params[i]);
  }
}

tg_model_status tg_adamw_update(tg_adamw *opt, float *params, const float *grads,
                                double grad_norm) {
  if (!opt || !params || !grads) return TG_MODEL_EINVAL;
  tg_adamw_scalars s;
  tg_model_status st = tg_adamw_scalars_at(&opt->cfg, opt->step, grad_norm, &s);
  if (st != TG_MODEL_OK) return st;
  /* Walk the slice as alternating runs without and with decay. */
  size_t at = opt->begin;
  for (size_t k = 0; k <= opt->decay_count; k++) {
    size_t run_end = k < opt->decay_count ? opt->decay[k].begin : opt->end;
    if (run_end > at) update_range(opt, params, grads, at, run_end, &s, 0.0f);
    if (k == opt->decay_count) break;
    size_t lo = opt->decay[k].begin > at ? opt->decay[k].begin : at;
    if (opt->decay[k].end > lo)
      update_range(opt, params, grads, lo, opt->decay[k].end, &s, opt->cfg.weight_decay);
    if (opt->decay[k].end > at) at = opt->decay[k].end;
  }
  opt->step++;
  return TG_MODEL_OK;
}

uint64_t tg_adamw_step(const tg_adamw *opt) { return opt ? opt->step : 0; }
size_t tg_adamw_begin(const tg_adamw *opt) { return opt ? opt->begin : 0; }
size_t tg_adamw_end(const tg_adamw *opt) { return opt ? opt->end : 0; }
float *tg_adamw_m(tg_adamw *opt) { return opt ? opt->m : NULL; }
float *tg_adamw_v(tg_adamw *opt) { return opt ? opt->v : NULL; }

tg_model_status tg_adamw_load_shards(tg_adamw *opt, uint32_t old_world,
                                     const float *const *old_m, const float *const *old_v,
                                     uint64_t step) {
  if (!opt || !old_m || !old_v) return TG_MODEL_EINVAL;
  tg_model_status st =
      tg_shard_copy(opt->num_params, old_world, old_m, opt->begin, opt->end, opt->m);
  if (st == TG_MODEL_OK)
    st = tg_shard_copy(opt->num_params, old_world, old_v, opt->begin, opt->end, opt->v);
  if (st == TG_MODEL_OK) opt->step = step;
  return st;
}
