/* Faults a tester asks one running trainer for (tg-chaos's
 * silent_data_corruption, nan_loss and straggler): off unless tg-train
 * was started with --inject-dir DIR, so a production run cannot be
 * perturbed by accident. Each step the trainer looks for the file
 * DIR/<TG_NODE_ID>.<TG_SLOT> (one stat); a request is one line, read once
 * and removed:
 *
 *   sdc                        flip the lowest bit of one parameter in this
 *                              rank's replica, outside its own slice, after
 *                              the step's gather (the replica check must
 *                              catch it before the step is committed)
 *   nan                        this rank's next step ends as a NaN in its
 *                              loss or gradient does (the fixed-point sums
 *                              refuse it: TG_MODEL_ENONFINITE); the values
 *                              themselves are left alone
 *   straggler DELAY_MS STEPS   sleep DELAY_MS in each of the next STEPS steps
 *
 * A malformed request is refused with one line on stderr and removed.
 * sdc and nan act on the CPU step only (on a GPU they are read and never
 * applied: tg-chaos refuses them for "device": "cuda"). */
#ifndef TG_TRAIN_INJECT_H
#define TG_TRAIN_INJECT_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  char path[600];            /* the request file; "" when injection is off */
  int sdc;                   /* pending: flip a bit before the next snapshot */
  int nan;                   /* pending: poison the next step's loss */
  int64_t straggle_ms;       /* delay per step ... */
  int64_t straggle_steps;    /* ... for this many more steps */
} tg_inject;

/* Off when dir is empty; node and slot come from the agent's environment. */
void tg_inject_init(tg_inject *in, const char *dir);

/* Reads a pending request, if any (called once per step). */
void tg_inject_poll(tg_inject *in);

/* The straggler's delay for this step (then counts the step). */
void tg_inject_straggle(tg_inject *in);

/* A pending sdc request: flips the lowest mantissa bit of params[index]
 * (and clears the request). Returns 1 when it flipped one. */
int tg_inject_sdc(tg_inject *in, float *params, size_t index);

#endif
