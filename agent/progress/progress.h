/* Hang and straggler detection from progress counters.
 *
 * Every rank reports where it is: the step it is on, the sequence number of
 * the last collective it ENTERED, how long its last step took and when it
 * reported. From those alone this module decides two things:
 *
 *  - HANG: no rank has advanced (step or collective sequence) for longer than
 *    an adaptive timeout, k x the typical step time, clamped to
 *    [floor, ceiling]; fast jobs are caught in seconds, slow ones are not
 *    falsely accused. The culprit is the rank (or ranks) with the LOWEST
 *    last-entered collective sequence number: it never entered the
 *    collective its peers are blocked in. The waiting peers are never named.
 *    When every rank sits at the same sequence number the culprit is
 *    unknown and the event carries rank -1. One report per episode: the
 *    episode ends when any rank advances again.
 *  - STRAGGLER: a rank whose step time stayed above X x the typical step
 *    time for each of its last `straggler_window_steps` steps. A warning,
 *    not a fault; reported once per episode (the episode ends when the
 *    condition stops holding).
 *
 * It is pure logic: no threads, no I/O, no clock of its own (the caller
 * passes the time, in one clock for records and evaluations, e.g. the
 * receiver's monotonic milliseconds), so the agent can run it over its local
 * ranks and the coordinator over the whole world. Memory is fixed at
 * tg_progress_new: O(max_ranks x straggler_window_steps). A tg_progress is
 * not thread-safe; its owner serialises calls.
 *
 * Definitions:
 *  - Only ranks that have reported take part. To have a rank that never
 *    reports at all named as a culprit, register it when the world forms
 *    with a record {step = resume step, collective_seq = 0}.
 *  - The typical step time is the lower median, over the participating
 *    ranks, of each rank's median step time over its last
 *    straggler_window_steps steps. With no step time known yet the hang
 *    timeout is the ceiling.
 *  - A record whose step or collective_seq is LOWER than the rank's previous
 *    one means the rank restarted (a new world, a restore): its history is
 *    cleared and the record counts as progress. tg_progress_reset forgets
 *    every rank (the owner calls it when a new generation starts). */
#ifndef TG_PROGRESS_H
#define TG_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

#define TG_PROGRESS_MAX_RANKS 65536
#define TG_PROGRESS_MAX_WINDOW 64 /* straggler_window_steps upper bound */
#define TG_PROGRESS_OP_MAX 24     /* collective op name, including the NUL */
#define TG_PROGRESS_DETAIL_MAX 256

typedef struct tg_progress tg_progress;

typedef struct {
  int32_t max_ranks;              /* ranks are 0..max_ranks-1; 1..TG_PROGRESS_MAX_RANKS */
  double hang_factor;             /* k: hang timeout = k x typical step time; > 0 */
  int64_t hang_floor_ms;          /* the timeout is never shorter; >= 1 */
  int64_t hang_ceiling_ms;        /* ... nor longer (and is this before any step time); >= floor */
  double straggler_factor;        /* X: slower than X x typical is straggling; > 1 */
  int32_t straggler_window_steps; /* every one of the last N steps must be slow; 1..64 */
  int32_t min_history_steps;      /* steps a rank must have reported before it can be called a
                                   * straggler (warm-up); 0..1000000; the window applies if
                                   * it is larger */
} tg_progress_config;

typedef struct {
  int32_t rank;
  uint64_t step;
  uint64_t collective_seq;      /* sequence number of the last collective entered */
  uint32_t step_time_ms;        /* duration of the last completed step; 0: unknown */
  int64_t updated_ms;           /* when the rank reported this; must not go backwards per rank */
  char op[TG_PROGRESS_OP_MAX];  /* name of that collective ("allreduce"); may be empty */
} tg_progress_record;

typedef enum {
  TG_PROGRESS_OK = 0,
  TG_PROGRESS_EINVAL = -1,         /* NULL argument or a malformed value */
  TG_PROGRESS_ERANK = -2,          /* rank outside 0..max_ranks-1 */
  TG_PROGRESS_ETIME = -3,          /* time went backwards (per rank, or between evaluations) */
} tg_progress_status;

typedef enum {
  TG_PROGRESS_HANG = 1,       /* severity ERROR: the world is stuck; rank -1: culprit unknown */
  TG_PROGRESS_STRAGGLER = 2,  /* severity WARNING */
} tg_progress_kind;

typedef struct {
  tg_progress_kind kind;
  int32_t rank;                /* the culprit or the straggler; -1 for a hang with no culprit */
  uint64_t seq;                /* HANG: the culprit's last-entered collective (or everyone's) */
  uint64_t peer_seq;           /* HANG: highest sequence entered by any rank */
  uint64_t step;               /* the rank's step (for rank -1: the lowest step) */
  int64_t stalled_ms;          /* HANG: time since the last progress of any rank */
  int64_t timeout_ms;          /* HANG: the adaptive timeout that was exceeded */
  uint32_t step_time_ms;       /* STRAGGLER: the rank's median step time over the window */
  uint32_t typical_step_ms;    /* the typical step time it was compared with (0: unknown) */
  char op[TG_PROGRESS_OP_MAX]; /* HANG: the op the peers are blocked in, if reported */
  char detail[TG_PROGRESS_DETAIL_MAX]; /* one human-readable line */
} tg_progress_event;

/* Checks cfg and allocates everything the detector will ever use. NULL on
 * a bad config or no memory, with the reason in err. */
tg_progress *tg_progress_new(const tg_progress_config *cfg, char *err, size_t errlen);
void tg_progress_free(tg_progress *p);

/* Records one rank's progress. TG_PROGRESS_OK, or an error status with the
 * detector unchanged. */
tg_progress_status tg_progress_update(tg_progress *p, const tg_progress_record *rec);

/* Forgets one rank (it left the world) or every rank (a new generation). */
tg_progress_status tg_progress_forget(tg_progress *p, int32_t rank);
void tg_progress_reset(tg_progress *p);

/* Decides at now_ms. Writes at most max_events new events (hangs first,
 * culprits in rank order, then stragglers in rank order) and returns how
 * many, or a negative tg_progress_status. Hang culprits that did not fit
 * are not reported later (every HANG event's detail gives the culprit
 * count); stragglers that did not fit come at the next evaluation. O(ranks). */
int tg_progress_evaluate(tg_progress *p, int64_t now_ms, tg_progress_event *events,
                         size_t max_events);

/* The current adaptive hang timeout and the typical step time it comes
 * from (0 when no step time is known yet). O(ranks). */
int64_t tg_progress_hang_timeout_ms(tg_progress *p);
uint32_t tg_progress_typical_step_ms(tg_progress *p);

const char *tg_progress_status_text(tg_progress_status status);

#endif
