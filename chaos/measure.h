/* Measuring what a fault did, and judging the run.
 *
 * Detection is what the job's own machinery said: the coordinator's fault
 * log (`tgctl --json faults`: its kind, node and rank are the culprit
 * named), or, for kinds that leave no fault record, the new leader
 * answering (coordinator_crash) or the new world being formed (drain).
 * Recovery is read from the trainers' logs: the first world newer than
 * the one the fault hit in which every rank printed its "rank R of W"
 * line and rank 0 logged a training step (a step needs every rank, so
 * that is every rank training again). The invariants are in measure.c. */
#ifndef TG_CHAOS_MEASURE_H
#define TG_CHAOS_MEASURE_H

#include "chaos/record.h"

/* Follows an in-flight fault; returns 1 once it is finished (recovered,
 * or not within the scenario's recovery_timeout_s). */
int tg_chaos_track(tg_chaos_ctx *ctx, tg_chaos_fault *f);

/* Ends an in-flight fault when the run stops before it recovered;
 * attached, puts back what it broke that can be (the warning's fake GPU,
 * a killed coordinator). */
void tg_chaos_abandon(tg_chaos_ctx *ctx, tg_chaos_fault *f, const char *why);

/* Reads the fault log (tgctl --json faults) and fills in the detection of
 * every injected fault that expects a record and has none yet. */
void tg_chaos_match_fault_log(tg_chaos_ctx *ctx, tg_chaos_fault *faults, size_t n);

/* Judges the run: fills res->invariants. `params` and `reference` are the
 * final parameter files (missing: not written). Needs ctx's watch, not its
 * cluster (which may be freed by then). */
void tg_chaos_check_invariants(tg_chaos_ctx *ctx, tg_chaos_result *res, const char *params, const char *reference);

#endif
