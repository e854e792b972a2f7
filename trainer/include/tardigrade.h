/* tardigrade.h: the whole contract between a training program and
 * Tardigrade.
 *
 * A trainer process is started by tg-agent (one per slot) with its
 * environment set: TG_AGENT_SOCKET, TG_SLOT, TG_NODE_ID, TG_JOB, TG_CKPT_SHM.
 * It calls tg_init once, then loops:
 *
 *   tg_join        wait for a world; learn rank and size; build the
 *                  communicator (gloo on CPU) for this generation
 *   tg_resume_step the newest step every rank has a snapshot of (0: start)
 *   tg_restore     read this rank's snapshot of that step back into the
 *                  registered buffers
 *   per step:  collectives (tg_all_reduce, tg_all_gather, ...) ...
 *              tg_snapshot(step)   this rank's buffers into the node's memory
 *              tg_step_done(step)  report progress
 *
 * Every call returns TG_OK, or TG_WORLD_CHANGED when the world this rank
 * was in is gone (a peer failed, a collective timed out, the coordinator
 * formed a new generation): the survivor does not exit; it calls tg_join
 * again and restores. TG_ERROR means this process cannot go on (bad
 * arguments, no agent); a message says why.
 *
 * Snapshots hold the buffers registered with tg_register, in registration
 * order, each with its byte length; they are written to the agent's shared
 * memory, which outlives this process, with a checksum that is verified on
 * restore. A restarted trainer therefore resumes from its node's memory. */
#ifndef TARDIGRADE_H
#define TARDIGRADE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  TG_OK = 0,
  TG_WORLD_CHANGED = 1, /* re-join, restore, go on */
  TG_ERROR = -1,        /* give up: tg_last_error() says why */
} tg_result;

typedef enum { TG_FLOAT32 = 0, TG_INT64 = 1 } tg_dtype;

typedef struct tg_trainer tg_trainer;

typedef struct {
  uint64_t generation;
  int rank;
  int world_size;
  int previous_world_size;  /* 0 before the first world */
  uint64_t coordinator_resume_step; /* the coordinator's view; see tg_resume_step */
} tg_world;

/* From the agent's environment. NULL (with a message on stderr) when the
 * environment is incomplete or the agent cannot be reached. */
tg_trainer *tg_init(void);
void tg_free(tg_trainer *t);

/* The last error of this trainer, one line. */
const char *tg_last_error(const tg_trainer *t);

/* Waits (up to timeout_ms) until the agent has a world for this slot that
 * is newer than the last one joined, then builds the communicator. */
tg_result tg_join(tg_trainer *t, tg_world *world, int64_t timeout_ms);

/* Registers a buffer to snapshot and restore. The trainer keeps the
 * pointer; registering a name again replaces it (in a world of another
 * size a rank's slices have other sizes). Returns TG_OK or TG_ERROR. */
tg_result tg_register(tg_trainer *t, const char *name, void *data, size_t bytes);

/* The newest step for which every rank of the current world holds a
 * snapshot in its node's memory (agreed through the communicator), or 0
 * when there is none (a new job). */
tg_result tg_resume_step(tg_trainer *t, uint64_t *step);

/* Reads this rank's snapshot of `step` into the registered buffers. The
 * world must have the size it had when the snapshot was taken. */
tg_result tg_restore(tg_trainer *t, uint64_t step);

/* Writes the registered buffers as this rank's snapshot of `step`. */
tg_result tg_snapshot(tg_trainer *t, uint64_t step);

/* Reports that `step` is done (for the hang detector and the heartbeats);
 * TG_WORLD_CHANGED if a newer generation exists. */
tg_result tg_step_done(tg_trainer *t, uint64_t step, float loss, uint32_t step_time_ms);

/* Collectives among the ranks of the current world. Sums are exact for
 * TG_INT64. */
tg_result tg_all_reduce(tg_trainer *t, void *buf, size_t count, tg_dtype type);
tg_result tg_all_gather(tg_trainer *t, const void *send, void *recv, size_t bytes_per_rank);
tg_result tg_broadcast(tg_trainer *t, void *buf, size_t bytes, int root);

#ifdef __cplusplus
}
#endif

#endif
