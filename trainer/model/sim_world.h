/* Test support: a data-parallel world of W ranks simulated in one process.
 *
 * It runs a step exactly as tg-train will (step.h's recipe), with the
 * communicator replaced by loops: the int64 all-reduce is a sum over the
 * ranks' accumulators (taken in reverse rank order, to show the grouping
 * does not matter), and the all-gather is free because every rank's AdamW
 * updates its slice of one shared parameter array. sim_world_resize
 * re-forms the world at another size the way a restore does: new shards,
 * optimizer state cut from the old ones. */
#ifndef TG_SIM_WORLD_H
#define TG_SIM_WORLD_H

#include <stdint.h>

#include "trainer/model/step.h"

typedef struct sim_world sim_world;

/* A model from cfg initialised with init_seed, a world of `world` ranks.
 * The corpus is borrowed. NULL on any failure. */
sim_world *sim_world_new(const tg_model_config *cfg, uint64_t init_seed,
                         const tg_adamw_config *opt_cfg, const tg_batch_plan *plan,
                         const tg_corpus *corpus, uint32_t world);
void sim_world_free(sim_world *s);

/* One training step at the optimizer's current step number; the step's
 * mean loss into *loss (may be NULL). */
tg_model_status sim_world_step(sim_world *s, float *loss);

/* Re-forms the world with new_world ranks, carrying the optimizer state. */
tg_model_status sim_world_resize(sim_world *s, uint32_t new_world);

tg_model *sim_world_model(sim_world *s);
uint64_t sim_world_steps_done(const sim_world *s);

/* The whole m (or v) gathered from the shards into out[P]. */
tg_model_status sim_world_gather_moments(sim_world *s, float *m_out, float *v_out);

#endif
