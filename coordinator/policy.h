/* The placement policy: given the job's limits, the current world and what
 * is known about every node, decide whether a new world must be formed and
 * which nodes hold which ranks in it.
 *
 * It is a pure function of its inputs (the time is one of them), so the
 * coordinator's state machine stays small and every rule here is tested on
 * its own: last call batching, spares replacing lost nodes with the same
 * ranks, shrinking to a multiple of the granularity, growing back.
 *
 * Ranks: every node in a job has the same number of slots S; the node at
 * position p of a world holds ranks p*S .. p*S+S-1. A spare that replaces a
 * lost node takes its position, so every other rank keeps its number. */
#ifndef TG_POLICY_H
#define TG_POLICY_H

#include <stddef.h>
#include <stdint.h>

#define TG_NODE_ID_MAX 64 /* bytes, including the NUL */

typedef struct {
  uint32_t min_nodes;
  uint32_t max_nodes;
  uint32_t slots_per_node;
  uint32_t granularity;   /* world size (ranks) is kept a multiple of this */
  int64_t last_call_ms;   /* after min is reached, wait this long for more joiners */
} tg_policy_spec;

typedef struct {
  const char *node_id;
  int eligible;            /* alive, healthy, not cordoned, draining or quarantined */
  int64_t eligible_since_ms; /* when it last became eligible */
} tg_policy_node;

typedef enum {
  TG_POLICY_KEEP = 0,    /* the current world stands */
  TG_POLICY_WAIT = 1,    /* nothing to do before wake_at_ms (or a change of inputs) */
  TG_POLICY_FORM = 2,    /* form the world in the plan */
  TG_POLICY_SUSPEND = 3, /* the world lost nodes and fewer than min remain: no world */
} tg_policy_action;

typedef enum {
  TG_REASON_NONE = 0,
  TG_REASON_FIRST = 1,    /* the first world of the job */
  TG_REASON_REPLACE = 2,  /* spares took the place of lost nodes; size unchanged */
  TG_REASON_SHRINK = 3,   /* lost nodes, not enough spares */
  TG_REASON_GROW = 4,     /* nodes returned or joined */
  TG_REASON_RESUME = 5,   /* enough nodes again after a suspension */
} tg_policy_reason;

typedef struct {
  tg_policy_action action;
  tg_policy_reason reason;
  int64_t wake_at_ms;      /* TG_POLICY_WAIT: when to ask again (0: on the next input change) */
  size_t n_nodes;          /* TG_POLICY_FORM: nodes in the new world, in position order */
  size_t *positions;       /* indexes into the `nodes` array, n_nodes of them (caller frees) */
  uint32_t world_size;     /* n_nodes * slots_per_node */
} tg_policy_plan;

/* Checks a spec; returns 0, or -1 with a reason. */
int tg_policy_spec_check(const tg_policy_spec *spec, char *err, size_t errlen);

/* Nodes per world must be a multiple of this so the rank count is a
 * multiple of the granularity. */
uint32_t tg_policy_node_step(const tg_policy_spec *spec);

/* Decides. `current` lists the current world in position order as indexes
 * into `nodes`, or TG_POLICY_GONE for a member no longer registered
 * (n_current 0: no world yet, or suspended: then set `had_world`).
 * `nodes` are all registered nodes, members or not. Runs in O(n log n).
 * Returns 0, or -1 on allocation failure. plan->positions is malloc'ed
 * when action is FORM. */
#define TG_POLICY_GONE ((size_t)-1)
int tg_policy_decide(const tg_policy_spec *spec, const size_t *current, size_t n_current,
                     int had_world, const tg_policy_node *nodes, size_t n_nodes, int64_t now_ms,
                     tg_policy_plan *plan);

const char *tg_policy_reason_name(tg_policy_reason reason);

#endif
