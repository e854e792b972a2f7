/* Making faults happen: one function per kind, each resolving its target
 * against the job as it is now (a random target is drawn from the run's
 * seeded generator among the nodes that can take it) and then doing what
 * the kind says, as close to the real failure as a local process allows:
 * a signal, a killed agent, an operator's drain, bytes flipped in a node's
 * shared memory. */
#ifndef TG_CHAOS_INJECT_H
#define TG_CHAOS_INJECT_H

#include "chaos/record.h"

/* Injects f (its spec filled in, its "at injection" fields too). On
 * success f->injected_* and the target are set and 0 is returned; -1
 * means it could not be injected now, with the reason in f->note. */
int tg_chaos_inject(tg_chaos_ctx *ctx, tg_chaos_fault *f);

/* 1 if a fault of `kind` with a random target can be injected now and
 * the job can survive it (for the soak, which must not, say, shrink the
 * world below min_nodes or return a host that was never lost). */
int tg_chaos_feasible(tg_chaos_ctx *ctx, tg_chaos_kind kind);

/* Undoes a warning kind's write to the node's fake GPU (f->gpu); 0 when
 * the fault wrote no GPU or is one that stays. 0, or -errno. */
int tg_chaos_device_heal(tg_chaos_ctx *ctx, const tg_chaos_fault *f);

/* disk_full's filler file in the checkpoint directory. */
void tg_chaos_fill_path(tg_chaos_ctx *ctx, char *out, size_t len);

/* A uniform draw in [0, n) from the run's generator (n > 0). */
uint32_t tg_chaos_draw(tg_chaos_ctx *ctx, uint32_t n);

#endif
