/* One tg-chaos run, start to end: a fresh directory (and in namespace
 * mode a host per node), a fresh etcd, the fault-free reference training,
 * the cluster, the timeline of faults (then the soak), and the
 * judgement. Attached to a running job: the job's processes found, the
 * timeline, the judgement, and the job left running. Everything it starts is stopped and everything it made is
 * removed on every path out, including a stop request (SIGINT/SIGTERM set
 * *stop; every wait checks it). */
#ifndef TG_CHAOS_RUN_H
#define TG_CHAOS_RUN_H

#include <signal.h>

#include "chaos/cluster.h"
#include "chaos/record.h"
#include "chaos/scenario.h"

typedef struct {
  const tg_chaos_scenario *scenario;
  const char *scenario_path;
  const tg_chaos_bins *bins;
  const char *reference; /* parameters of a fault-free run to reuse, or to write when missing; NULL: run one */
  const char *keep_logs; /* copy every log here at the end; NULL: remove them */
  /* "host:port,...": attach to the running job these coordinators lead
   * instead of starting one (no etcd, no reference run, nothing stopped at
   * the end; the final-parameters invariant is not checked). NULL: start one. */
  const char *attach;
  volatile sig_atomic_t *stop;
} tg_chaos_run_options;

/* Runs the scenario, fills *res (free with tg_chaos_result_free) and
 * returns the exit code: 0 every invariant holds, 1 one is violated,
 * 2 the run could not be set up, 130 stopped by a signal. */
int tg_chaos_run(const tg_chaos_run_options *o, tg_chaos_result *res);

void tg_chaos_result_free(tg_chaos_result *res);

#endif
