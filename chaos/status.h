/* The job as its coordinators see it, polled in the background.
 *
 * The committed step moves every heartbeat, and the invariant "no
 * committed step lost" needs its value just before each fault, so a
 * thread asks the leader (the same Operator Status call `tgctl --json
 * status` makes, through the same leader-finding client) every period_ms
 * and keeps the newest answer. Doing it in-process costs nothing next to
 * starting tgctl ten times a second on a busy machine, and it keeps the
 * main loop, which reads logs and injects faults, free of RPC waits while
 * a coordinator fails over. */
#ifndef TG_CHAOS_STATUS_H
#define TG_CHAOS_STATUS_H

#include <stddef.h>
#include <stdint.h>

#include "chaos/scenario.h"

typedef struct {
  int ok;                   /* at least one answer so far */
  int64_t answered_unix_ms; /* when the newest answer arrived */
  char leader[64];          /* the answering leader's id */
  char job[64];             /* the job it coordinates */
  uint64_t generation;      /* 0: no world yet */
  uint32_t world_size;
  uint64_t committed_step;
  uint32_t nodes_total, nodes_active, nodes_spare;
  size_t n_nodes;                                  /* the world's nodes, in position order */
  char nodes[TG_CHAOS_MAX_NODES][TG_CHAOS_NAME_MAX];
  uint64_t polls, failures;
} tg_chaos_status;

typedef struct tg_chaos_poller tg_chaos_poller;

/* Starts polling `coordinators` ("host:port,...") every period_ms. */
tg_chaos_poller *tg_chaos_poller_start(const char *coordinators, int64_t period_ms, char *err, size_t errlen);

/* The newest answer (all zero before the first). */
void tg_chaos_poller_get(tg_chaos_poller *p, tg_chaos_status *out);

/* Stops the thread and frees. NULL is fine. */
void tg_chaos_poller_stop(tg_chaos_poller *p);

#endif
