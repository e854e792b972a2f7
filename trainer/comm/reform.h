/* How a new world's NCCL communicator is made: shrunk from the previous
 * world's, or built fresh from a unique id. Private to trainer/comm; plain
 * C over the generation's store, so it is built and tested everywhere.
 *
 * When a node is lost and no spare takes its place, the next world is the
 * old one minus the lost ranks, in the same order. ncclCommShrink builds
 * it from the old communicator without a bootstrap (no unique id, no
 * all-to-all connection setup among the survivors), which is what NCCL
 * offers for exactly this case. It is only correct if every rank of the
 * new world still holds the old communicator, was rank k of it with k
 * increasing with its new rank, and the old one only lost ranks. A rank
 * knows only its own side, so the ranks agree through the store:
 *   - every rank but 0 publishes its vote: the generation, size and its
 *     rank of the communicator it still holds (or "none": a restarted
 *     process, a spare that joined, a backend that cannot shrink);
 *   - rank 0 decides (tg_comm_reform_decide) from its own vote and the
 *     others' and publishes the plan: "shrink, excluding these old ranks",
 *     or "fresh, with this unique id";
 *   - every rank follows the plan. One decision, made once per generation
 *     (the plan is create-only), so no two ranks can take different paths.
 * Rank 0 reads the votes only when it has an old communicator itself;
 * otherwise the plan is "fresh" at once. */
#ifndef TG_TRAINER_COMM_REFORM_H
#define TG_TRAINER_COMM_REFORM_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/comm/comm.h"

/* What one rank still holds. parent_generation 0: nothing to shrink from. */
typedef struct {
  int64_t parent_generation;
  int32_t parent_rank;
  int32_t parent_size;
} tg_comm_vote;

/* The most old ranks a shrink can exclude (the plan fits one store value);
 * a world that lost more is built fresh. */
#define TG_COMM_REFORM_MAX_EXCLUDED 900

/* The plan's size in the store (a fixed-size record). */
#define TG_COMM_REFORM_PLAN_BYTES (312 + 4 * TG_COMM_REFORM_MAX_EXCLUDED)

typedef struct {
  int shrink;                /* 1: ncclCommShrink the parent; 0: a new communicator from nccl_id */
  int64_t parent_generation; /* shrink: the generation every rank's parent belongs to */
  int32_t parent_size;
  int32_t n_excluded;        /* shrink: the parent's ranks not in the new world, ascending */
  int32_t excluded[TG_COMM_REFORM_MAX_EXCLUDED];
  uint8_t nccl_id[TG_COMM_NCCL_ID_BYTES]; /* fresh: the unique id */
  char why[160];             /* fresh: why not shrunk (every rank gets it, for its log) */
} tg_comm_plan;

/* From the votes of every rank of the new world (votes[r] is rank r's),
 * whether the world can be shrunk from the old one: every rank holds the
 * same old generation of the same size, old ranks valid and strictly
 * increasing with new rank, fewer ranks than before, at most
 * TG_COMM_REFORM_MAX_EXCLUDED gone. Fills plan's shrink fields, or
 * plan->shrink = 0 with the reason in plan->why. Never fails. */
void tg_comm_reform_decide(const tg_comm_vote *votes, int world_size, tg_comm_plan *plan);

/* Makes a fresh communicator's unique id (rank 0 only): 0, or -1 with a
 * reason. */
typedef int (*tg_comm_make_id_fn)(uint8_t id[TG_COMM_NCCL_ID_BYTES], void *user, char *err, size_t errlen);

/* The agreement above, for the world cfg describes (store_address and
 * store_prefix required): publishes `mine`, and on rank 0 decides and
 * publishes the plan (calling make_id when it is "fresh"); every rank
 * returns the plan. Waits until deadline_ms (CLOCK_MONOTONIC ms) and
 * stops when cfg->cancelled says so. */
tg_comm_code tg_comm_reform_agree(const tg_comm_config *cfg, const tg_comm_vote *mine, tg_comm_make_id_fn make_id,
                                  void *make_id_user, int64_t deadline_ms, tg_comm_plan *plan, tg_comm_status *st);

#endif
