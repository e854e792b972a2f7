/* A simulated data-parallel world for the tests (see sim_world.h). */
#include "trainer/model/sim_world.h"

#include <stdlib.h>
#include <string.h>

#include "trainer/model/fixed.h"
#include "trainer/model/shard.h"

struct sim_world {
  tg_model *model;
  const tg_corpus *corpus;
  tg_adamw_config opt_cfg;
  tg_batch_plan plan;
  uint32_t world;
  tg_adamw **opts;  /* one per rank */
  int64_t **acc;    /* one accumulator per rank */
  int64_t *total;   /* the all-reduced accumulator */
};

static void free_ranks(tg_adamw **opts, int64_t **acc, uint32_t world) {
  for (uint32_t r = 0; r < world; r++) {
    if (opts) tg_adamw_free(opts[r]);
    if (acc) free(acc[r]);
  }
  free(opts);
  free(acc);
}

/* Optimizers and accumulators for `world` ranks; 0 on failure. */
static int make_ranks(sim_world *s, uint32_t world, tg_adamw ***opts_out, int64_t ***acc_out) {
  size_t len = tg_step_acc_len(s->model);
  tg_adamw **opts = calloc(world, sizeof *opts);
  int64_t **acc = calloc(world, sizeof *acc);
  int ok = opts && acc;
  for (uint32_t r = 0; ok && r < world; r++) {
    opts[r] = tg_step_optimizer_new(s->model, &s->opt_cfg, world, r, NULL, 0);
    acc[r] = calloc(len, sizeof(int64_t));
    ok = opts[r] && acc[r];
  }
  if (!ok) {
    free_ranks(opts, acc, world);
    return 0;
  }
  *opts_out = opts;
  *acc_out = acc;
  return 1;
}

sim_world *sim_world_new(const tg_model_config *cfg, uint64_t init_seed,
                         const tg_adamw_config *opt_cfg, const tg_batch_plan *plan,
                         const tg_corpus *corpus, uint32_t world) {
  sim_world *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->corpus = corpus;
  s->opt_cfg = *opt_cfg;
  s->plan = *plan;
  s->model = tg_model_new(cfg, plan->micro_batch, NULL, 0);
  if (!s->model) goto err;
  tg_model_init_params(s->model, init_seed);
  s->total = calloc(tg_step_acc_len(s->model), sizeof(int64_t));
  if (!s->total || !make_ranks(s, world, &s->opts, &s->acc)) goto err;
  s->world = world;
  return s;
err:
  sim_world_free(s);
  return NULL;
}

void sim_world_free(sim_world *s) {
  if (!s) return;
  free_ranks(s->opts, s->acc, s->world);
  free(s->total);
  tg_model_free(s->model);
  free(s);
}

tg_model *sim_world_model(sim_world *s) { return s->model; }
uint64_t sim_world_steps_done(const sim_world *s) { return tg_adamw_step(s->opts[0]); }

tg_model_status sim_world_step(sim_world *s, float *loss) {
  size_t len = tg_step_acc_len(s->model);
  uint32_t chunks = tg_step_chunk_count(&s->plan);
  uint64_t step = sim_world_steps_done(s);
  tg_model_status st = TG_MODEL_OK;
  /* Each rank accumulates its chunks. */
  for (uint32_t r = 0; st == TG_MODEL_OK && r < s->world; r++) {
    size_t cb, ce;
    tg_shard_range(chunks, s->world, r, &cb, &ce);
    memset(s->acc[r], 0, len * sizeof(int64_t));
    st = tg_step_accumulate(s->model, s->corpus, &s->plan, step, (uint32_t)cb, (uint32_t)ce,
                            s->acc[r]);
  }
  /* All-reduce (sum), in reverse rank order. */
  memset(s->total, 0, len * sizeof(int64_t));
  for (uint32_t r = s->world; st == TG_MODEL_OK && r-- > 0;)
    st = tg_fixed_add(s->total, s->acc[r], len);
  if (st == TG_MODEL_OK) st = tg_step_mean(s->model, &s->plan, s->total, loss);
  /* Global norm from per-shard limbs, then each rank updates its slice. */
  float *params = tg_model_params(s->model), *grads = tg_model_grads(s->model);
  int64_t limbs[TG_FIXED_SQNORM_LIMBS] = {0};
  for (uint32_t r = 0; st == TG_MODEL_OK && r < s->world; r++) {
    int64_t mine[TG_FIXED_SQNORM_LIMBS];
    size_t b = tg_adamw_begin(s->opts[r]), e = tg_adamw_end(s->opts[r]);
    st = tg_fixed_sqnorm(grads, b, e, mine);
    if (st == TG_MODEL_OK) st = tg_fixed_add(limbs, mine, TG_FIXED_SQNORM_LIMBS);
  }
  double norm = tg_fixed_sqnorm_to_norm(limbs);
  for (uint32_t r = 0; st == TG_MODEL_OK && r < s->world; r++)
    st = tg_adamw_update(s->opts[r], params, grads, norm);
  return st;
}

/* The per-rank m (or v) pointers of the current world. */
static const float **moment_shards(sim_world *s, int want_v) {
  const float **shards = calloc(s->world, sizeof *shards);
  for (uint32_t r = 0; shards && r < s->world; r++)
    shards[r] = want_v ? tg_adamw_v(s->opts[r]) : tg_adamw_m(s->opts[r]);
  return shards;
}

tg_model_status sim_world_resize(sim_world *s, uint32_t new_world) {
  tg_adamw **opts = NULL;
  int64_t **acc = NULL;
  const float **old_m = moment_shards(s, 0), **old_v = moment_shards(s, 1);
  tg_model_status st = (old_m && old_v) ? TG_MODEL_OK : TG_MODEL_ENOMEM;
  if (st == TG_MODEL_OK && !make_ranks(s, new_world, &opts, &acc)) st = TG_MODEL_ENOMEM;
  uint64_t step = sim_world_steps_done(s);
  for (uint32_t r = 0; st == TG_MODEL_OK && r < new_world; r++)
    st = tg_adamw_load_shards(opts[r], s->world, old_m, old_v, step);
  free(old_m);
  free(old_v);
  if (st != TG_MODEL_OK) {
    if (opts) free_ranks(opts, acc, new_world);
    return st;
  }
  free_ranks(s->opts, s->acc, s->world);
  s->opts = opts;
  s->acc = acc;
  s->world = new_world;
  return TG_MODEL_OK;
}

tg_model_status sim_world_gather_moments(sim_world *s, float *m_out, float *v_out) {
  size_t P = tg_model_num_params(s->model);
  const float **m = moment_shards(s, 0), **v = moment_shards(s, 1);
  tg_model_status st = (m && v) ? TG_MODEL_OK : TG_MODEL_ENOMEM;
  if (st == TG_MODEL_OK) st = tg_shard_copy(P, s->world, m, 0, P, m_out);
  if (st == TG_MODEL_OK) st = tg_shard_copy(P, s->world, v, 0, P, v_out);
  free(m);
  free(v);
  return st;
}
