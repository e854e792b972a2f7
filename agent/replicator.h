/* The agent's replication worker: copies each shard its trainers write to
 * a buddy agent, so that a step survives the loss of this node, and every
 * few steps to disk, for the day every memory copy is gone.
 *
 * Trainers write their shard of step k into the node's store and then
 * report step k (tg_replicator_written). One worker thread pushes the
 * newest reported step of each slot to the buddy (the node at position
 * (p+1) % n of the world) and records it as replicated once the buddy
 * stored it; a slot that falls behind skips to its newest step. A step is
 * committed on this node when every local slot's shard of it is
 * replicated (tg_replicator_committed), which is what the agent's
 * heartbeats tell the coordinator. In a world of a single node there is
 * no second node to hold a copy: a written step counts as replicated at
 * once, and the disk copy is then the only one that outlives the node.
 *
 * Pushes carry a deadline; a failed one is retried every retry_ms while it
 * is pending (while the buddy is unreachable, the worker keeps waiting for
 * it to connect, retry_ms at a time) and logged at a limited rate;
 * training never waits for it. Of the files it persisted, the worker
 * keeps the newest two steps per slot and removes older ones; files an
 * earlier run of the agent wrote are left to the operator.
 * Not a public header: only agent.c and local_service.c use it. */
#ifndef TG_AGENT_REPLICATOR_H
#define TG_AGENT_REPLICATOR_H

#include <stddef.h>
#include <stdint.h>

#include "agent/ckpt/store.h"

typedef struct tg_replicator tg_replicator;

typedef struct {
  tg_ckpt_store *store;       /* the node's store (not owned) */
  const char *job_id;
  const char *node_id;        /* named as the source of pushed shards */
  int slots;                  /* local slots (ranks) */
  const char *ckpt_dir;       /* persist shards under it; NULL or "": never */
  int64_t persist_every;      /* persist steps that are multiples of this (with ckpt_dir) */
  int64_t push_deadline_ms;   /* one push; 0: 5000 */
  int64_t retry_ms;           /* between attempts of a failed push, and how long an
                                 attempt waits for the buddy to connect; 0: 100 */
  int64_t report_every_ms;    /* at most one persist error report per this; 0: 10000 */
  /* A persist failed (the worker thread, rate-limited); `detail` is one
   * line with the path and the OS error. May be NULL. */
  void (*on_persist_error)(const char *detail, void *user);
  void *user;
} tg_replicator_config;

/* NULL with a reason in err on bad configuration or no memory. */
tg_replicator *tg_replicator_new(const tg_replicator_config *cfg, char *err, size_t errlen);

/* Starts the worker thread; 0, or -1 with a reason in err. */
int tg_replicator_start(tg_replicator *r, char *err, size_t errlen);

/* The world this node is in now. */
typedef struct {
  uint64_t generation;
  uint32_t world_size;        /* ranks */
  int32_t position;           /* this node's, -1: a spare */
  uint32_t nodes;             /* world_size / slots per node */
  const char *buddy_address;  /* the agent at (position+1) % nodes; NULL or "": unknown */
} tg_replicator_world;

/* A new world: shards of older generations are no longer pushed, and
 * every slot starts again with nothing replicated in this generation. */
void tg_replicator_set_world(tg_replicator *r, const tg_replicator_world *w);

/* The trainer in `slot` wrote its shard of `step` in `generation` (the
 * world it joined) into the store. Ignored for another generation. */
void tg_replicator_written(tg_replicator *r, int slot, uint64_t generation, uint64_t step);

/* The newest step of slot's shard written in `generation` and replicated;
 * 0 if none, or if `generation` is not the current one. */
uint64_t tg_replicator_replicated(tg_replicator *r, int slot, uint64_t generation);

/* The newest step every local slot has replicated in the current
 * generation: the minimum over the slots; 0 when some slot has none or
 * this node is a spare. */
uint64_t tg_replicator_committed(tg_replicator *r);

/* Stops and joins the worker (a push in flight ends by its deadline).
 * Safe to call more than once, and on a replicator never started. */
void tg_replicator_stop(tg_replicator *r);

/* Stops and frees. NULL is ignored. */
void tg_replicator_free(tg_replicator *r);

#endif
