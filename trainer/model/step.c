/* Chunked gradient accumulation in fixed point (see step.h). */
#include "trainer/model/step.h"

#include <stdio.h>
#include <stdlib.h>

#include "trainer/model/fixed.h"
#include "trainer/model/shard.h"

uint32_t tg_step_chunk_count(const tg_batch_plan *plan) {
  if (!plan || plan->global_batch == 0 || plan->micro_batch == 0 ||
      plan->global_batch % plan->micro_batch != 0)
    return 0;
  uint32_t chunks = plan->global_batch / plan->micro_batch;
  return chunks <= TG_FIXED_MAX_TERMS ? chunks : 0;
}

uint64_t tg_step_first_sample(const tg_batch_plan *plan, uint64_t step, uint32_t chunk) {
  if (!plan) return 0;
  return step * plan->global_batch + (uint64_t)chunk * plan->micro_batch;
}

size_t tg_step_acc_len(const tg_model *m) { return tg_model_num_params(m) + 1; }

tg_model_status tg_step_accumulate(tg_model *m, const tg_corpus *c, const tg_batch_plan *plan,
                                   uint64_t step, uint32_t chunk_begin, uint32_t chunk_end,
                                   int64_t *acc) {
  uint32_t chunks = tg_step_chunk_count(plan);
  if (!m || !c || !acc || chunks == 0 || chunk_begin > chunk_end || chunk_end > chunks)
    return TG_MODEL_EINVAL;
  const tg_model_config *cfg = tg_model_config_of(m);
  size_t n = (size_t)plan->micro_batch * cfg->context;
  size_t P = tg_model_num_params(m);
  tg_model_status st = TG_MODEL_OK;
  uint8_t *tokens = malloc(n), *targets = malloc(n);
  if (!tokens || !targets) st = TG_MODEL_ENOMEM;
  for (uint32_t k = chunk_begin; st == TG_MODEL_OK && k < chunk_end; k++) {
    float loss;
    int64_t loss_q;
    st = tg_corpus_batch(c, tg_step_first_sample(plan, step, k), plan->micro_batch, tokens,
                         targets);
    if (st == TG_MODEL_OK) st = tg_model_forward(m, tokens, targets, plan->micro_batch, &loss);
    if (st == TG_MODEL_OK) st = tg_model_backward(m);
    if (st == TG_MODEL_OK) st = tg_fixed_accumulate(acc, tg_model_grads(m), P, NULL);
    if (st == TG_MODEL_OK) st = tg_fixed_from_scalar(loss, &loss_q);
    if (st == TG_MODEL_OK) st = tg_fixed_add(acc + P, &loss_q, 1);
  }
  free(tokens);
  free(targets);
  return st;
}

tg_model_status tg_step_mean(tg_model *m, const tg_batch_plan *plan, const int64_t *acc,
                             float *loss) {
  uint32_t chunks = tg_step_chunk_count(plan);
  if (!m || !acc || chunks == 0) return TG_MODEL_EINVAL;
  size_t P = tg_model_num_params(m);
  tg_model_status st = tg_fixed_to_float(tg_model_grads(m), acc, P, chunks);
  if (st == TG_MODEL_OK && loss) *loss = (float)tg_fixed_to_scalar(acc[P], chunks);
  return st;
}

tg_adamw *tg_step_optimizer_new(const tg_model *m, const tg_adamw_config *cfg, uint32_t world,
                                uint32_t rank, char *err, size_t errlen) {
  size_t begin, end, P = tg_model_num_params(m), n = tg_model_tensor_count(m);
  if (!m || tg_shard_range(P, world, rank, &begin, &end) != TG_MODEL_OK) {
    if (err && errlen) snprintf(err, errlen, "no model, or rank %u outside a world of %u", rank,
                                world);
    return NULL;
  }
  tg_adamw_span *spans = calloc(n, sizeof *spans);
  if (!spans) {
    if (err && errlen) snprintf(err, errlen, "out of memory for the decay spans");
    return NULL;
  }
  size_t count = 0;
  for (size_t i = 0; i < n; i++) {
    tg_model_tensor t;
    tg_model_tensor_at(m, i, &t);
    if (t.decay) spans[count++] = (tg_adamw_span){t.offset, t.offset + t.count};
  }
  tg_adamw *opt = tg_adamw_new(cfg, P, begin, end, spans, count, err, errlen);
  free(spans);
  return opt;
}
