/* Hang and straggler detection; see progress.h for the rules.
 *
 * Per rank we keep its last counters and a ring of its last W step times,
 * with the ring's median and minimum recomputed on each new step (O(W),
 * W <= 64), so an update costs nothing that grows with the world. An
 * evaluation walks every rank once: the typical step time is a quickselect
 * over the per-rank medians in a scratch array allocated up front, and the
 * hang and straggler checks are one pass each. Nothing is allocated after
 * tg_progress_new. */
#include "agent/progress/progress.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  uint8_t active;       /* has reported since the last reset/forget */
  uint8_t straggling;   /* a STRAGGLER episode is open */
  uint16_t ring_len;    /* samples in the ring, <= window */
  uint16_t ring_next;   /* where the next sample goes */
  uint64_t steps_seen;  /* step-time samples since the rank (re)started */
  uint64_t step;
  uint64_t seq;
  int64_t updated_ms;   /* last report */
  int64_t progress_ms;  /* last report that advanced step or seq */
  uint32_t median_ms;   /* of the ring; 0 when empty */
  uint32_t window_min_ms; /* of the ring; 0 when empty */
  char op[TG_PROGRESS_OP_MAX];
} rank_state;

struct tg_progress {
  tg_progress_config cfg;
  int32_t window;        /* cfg.straggler_window_steps */
  int64_t min_history;   /* max(window, cfg.min_history_steps) */
  rank_state *ranks;     /* max_ranks */
  uint32_t *samples;     /* max_ranks x window step times */
  uint32_t *scratch;     /* max_ranks, for the median across ranks */
  int64_t last_now_ms;
  int evaluated;         /* last_now_ms is meaningful */
  int hang_open;         /* a HANG episode was reported and no progress since */
  int64_t hang_mark_ms;  /* the newest progress time when it was reported */
};

static void set_err(char *err, size_t errlen, const char *why) {
  if (err && errlen) snprintf(err, errlen, "%s", why);
}

static const char *config_problem(const tg_progress_config *c) {
  if (c->max_ranks < 1 || c->max_ranks > TG_PROGRESS_MAX_RANKS)
    return "max_ranks must be 1..65536";
  if (!(c->hang_factor > 0) || !isfinite(c->hang_factor))
    return "hang_factor must be a positive number";
  if (c->hang_floor_ms < 1) return "hang_floor_ms must be at least 1";
  if (c->hang_ceiling_ms < c->hang_floor_ms)
    return "hang_ceiling_ms must be at least hang_floor_ms";
  if (!(c->straggler_factor > 1) || !isfinite(c->straggler_factor))
    return "straggler_factor must be a number above 1";
  if (c->straggler_window_steps < 1 || c->straggler_window_steps > TG_PROGRESS_MAX_WINDOW)
    return "straggler_window_steps must be 1..64";
  if (c->min_history_steps < 0 || c->min_history_steps > 1000000)
    return "min_history_steps must be 0..1000000";
  return NULL;
}

tg_progress *tg_progress_new(const tg_progress_config *cfg, char *err, size_t errlen) {
  tg_progress *p = NULL;
  const char *why = cfg ? config_problem(cfg) : "no config";
  if (why) {
    set_err(err, errlen, why);
    return NULL;
  }
  p = calloc(1, sizeof *p);
  if (!p) goto nomem;
  p->cfg = *cfg;
  p->window = cfg->straggler_window_steps;
  p->min_history = cfg->min_history_steps > p->window ? cfg->min_history_steps : p->window;
  size_t n = (size_t)cfg->max_ranks;
  p->ranks = calloc(n, sizeof *p->ranks);
  p->samples = calloc(n * (size_t)p->window, sizeof *p->samples);
  p->scratch = calloc(n, sizeof *p->scratch);
  if (!p->ranks || !p->samples || !p->scratch) goto nomem;
  return p;
nomem:
  set_err(err, errlen, "out of memory");
  tg_progress_free(p);
  return NULL;
}

void tg_progress_free(tg_progress *p) {
  if (!p) return;
  free(p->ranks);
  free(p->samples);
  free(p->scratch);
  free(p);
}

static void clear_rank(tg_progress *p, int32_t rank) {
  memset(&p->ranks[rank], 0, sizeof p->ranks[rank]);
  memset(&p->samples[(size_t)rank * (size_t)p->window], 0, (size_t)p->window * sizeof(uint32_t));
}

void tg_progress_reset(tg_progress *p) {
  if (!p) return;
  for (int32_t r = 0; r < p->cfg.max_ranks; r++) clear_rank(p, r);
  p->hang_open = 0;
}

tg_progress_status tg_progress_forget(tg_progress *p, int32_t rank) {
  if (!p) return TG_PROGRESS_EINVAL;
  if (rank < 0 || rank >= p->cfg.max_ranks) return TG_PROGRESS_ERANK;
  clear_rank(p, rank);
  return TG_PROGRESS_OK;
}

static void sort_u32(uint32_t *v, size_t n) {
  for (size_t i = 1; i < n; i++) {
    uint32_t x = v[i];
    size_t j = i;
    for (; j > 0 && v[j - 1] > x; j--) v[j] = v[j - 1];
    v[j] = x;
  }
}

/* Adds one step time and refreshes the ring's median and minimum. */
static void add_sample(tg_progress *p, int32_t rank, uint32_t step_time_ms) {
  rank_state *r = &p->ranks[rank];
  uint32_t *ring = &p->samples[(size_t)rank * (size_t)p->window];
  ring[r->ring_next] = step_time_ms;
  r->ring_next = (uint16_t)((r->ring_next + 1) % p->window);
  if (r->ring_len < p->window) r->ring_len++;
  r->steps_seen++;
  uint32_t sorted[TG_PROGRESS_MAX_WINDOW];
  memcpy(sorted, ring, r->ring_len * sizeof *sorted);
  sort_u32(sorted, r->ring_len);
  r->median_ms = sorted[(r->ring_len - 1) / 2];
  r->window_min_ms = sorted[0];
}

tg_progress_status tg_progress_update(tg_progress *p, const tg_progress_record *rec) {
  if (!p || !rec) return TG_PROGRESS_EINVAL;
  if (rec->rank < 0 || rec->rank >= p->cfg.max_ranks) return TG_PROGRESS_ERANK;
  if (rec->updated_ms < 0) return TG_PROGRESS_EINVAL;
  rank_state *r = &p->ranks[rec->rank];
  if (r->active && rec->updated_ms < r->updated_ms) return TG_PROGRESS_ETIME;

  int restarted = r->active && (rec->step < r->step || rec->collective_seq < r->seq);
  if (restarted) clear_rank(p, rec->rank);
  int advanced = !r->active || rec->step > r->step || rec->collective_seq > r->seq;
  int new_step = !r->active || rec->step > r->step;
  if (advanced) r->progress_ms = rec->updated_ms;
  if (new_step && rec->step_time_ms > 0) add_sample(p, rec->rank, rec->step_time_ms);
  r->active = 1;
  r->step = rec->step;
  r->seq = rec->collective_seq;
  r->updated_ms = rec->updated_ms;
  size_t op_len = strnlen(rec->op, sizeof r->op - 1);
  memcpy(r->op, rec->op, op_len);
  r->op[op_len] = '\0';
  return TG_PROGRESS_OK;
}

/* The k-th smallest of v[0..n-1] (Hoare's selection; v is reordered). */
static uint32_t select_kth(uint32_t *v, size_t n, size_t k_) {
  long lo = 0, hi = (long)n - 1, k = (long)k_;
  while (lo < hi) {
    uint32_t pivot = v[lo + (hi - lo) / 2];
    long i = lo, j = hi;
    while (i <= j) {
      while (v[i] < pivot) i++;
      while (v[j] > pivot) j--;
      if (i <= j) {
        uint32_t t = v[i];
        v[i++] = v[j];
        v[j--] = t;
      }
    }
    if (k <= j)
      hi = j;
    else if (k >= i)
      lo = i;
    else
      break; /* v[j+1..i-1] all equal the pivot */
  }
  return v[k];
}

uint32_t tg_progress_typical_step_ms(tg_progress *p) {
  if (!p) return 0;
  size_t n = 0;
  for (int32_t i = 0; i < p->cfg.max_ranks; i++) {
    const rank_state *r = &p->ranks[i];
    if (r->active && r->ring_len > 0) p->scratch[n++] = r->median_ms;
  }
  if (n == 0) return 0;
  return select_kth(p->scratch, n, (n - 1) / 2);
}

static int64_t timeout_for(const tg_progress *p, uint32_t typical_ms) {
  if (typical_ms == 0) return p->cfg.hang_ceiling_ms;
  double t = p->cfg.hang_factor * (double)typical_ms;
  if (t >= (double)p->cfg.hang_ceiling_ms) return p->cfg.hang_ceiling_ms;
  if (t <= (double)p->cfg.hang_floor_ms) return p->cfg.hang_floor_ms;
  return (int64_t)t;
}

int64_t tg_progress_hang_timeout_ms(tg_progress *p) {
  if (!p) return -1;
  return timeout_for(p, tg_progress_typical_step_ms(p));
}

typedef struct {
  int32_t active;
  int64_t last_progress_ms;
  uint64_t min_seq, max_seq, min_step;
  int32_t max_seq_rank;
  int32_t culprits; /* ranks at min_seq */
} world_view;

static world_view look(const tg_progress *p) {
  world_view w = {0, INT64_MIN, UINT64_MAX, 0, UINT64_MAX, -1, 0};
  for (int32_t i = 0; i < p->cfg.max_ranks; i++) {
    const rank_state *r = &p->ranks[i];
    if (!r->active) continue;
    w.active++;
    if (r->progress_ms > w.last_progress_ms) w.last_progress_ms = r->progress_ms;
    if (r->seq < w.min_seq) {
      w.min_seq = r->seq;
      w.culprits = 0;
    }
    if (r->seq == w.min_seq) w.culprits++;
    if (w.max_seq_rank < 0 || r->seq > w.max_seq) {
      w.max_seq = r->seq;
      w.max_seq_rank = i;
    }
    if (r->step < w.min_step) w.min_step = r->step;
  }
  return w;
}

static void hang_event(const tg_progress *p, const world_view *w, int32_t rank, int64_t now_ms,
                       int64_t timeout_ms, uint32_t typical_ms, tg_progress_event *e) {
  memset(e, 0, sizeof *e);
  e->kind = TG_PROGRESS_HANG;
  e->rank = rank;
  e->seq = w->min_seq;
  e->peer_seq = w->max_seq;
  e->step = rank >= 0 ? p->ranks[rank].step : w->min_step;
  e->stalled_ms = now_ms - w->last_progress_ms;
  e->timeout_ms = timeout_ms;
  e->typical_step_ms = typical_ms;
  memcpy(e->op, p->ranks[w->max_seq_rank].op, sizeof e->op);
  const char *op = e->op[0] ? e->op : "?";
  if (rank < 0)
    snprintf(e->detail, sizeof e->detail,
             "hang, culprit unknown: all %d ranks are in collective seq %llu (%s) at step %llu; "
             "no progress for %lld ms (timeout %lld ms)",
             (int)w->active, (unsigned long long)w->min_seq, op, (unsigned long long)e->step,
             (long long)e->stalled_ms, (long long)timeout_ms);
  else
    snprintf(e->detail, sizeof e->detail,
             "hang: rank %d did not enter collective seq %llu (%s) at step %llu, last entered "
             "seq %llu; %d of %d ranks are behind; no progress for %lld ms (timeout %lld ms)",
             (int)rank, (unsigned long long)w->max_seq, op, (unsigned long long)e->step,
             (unsigned long long)w->min_seq, (int)w->culprits, (int)w->active,
             (long long)e->stalled_ms, (long long)timeout_ms);
}

static size_t check_hang(tg_progress *p, int64_t now_ms, uint32_t typical_ms,
                         tg_progress_event *events, size_t max_events) {
  world_view w = look(p);
  if (w.active == 0) return 0;
  if (p->hang_open && w.last_progress_ms > p->hang_mark_ms) p->hang_open = 0;
  int64_t timeout_ms = timeout_for(p, typical_ms);
  if (p->hang_open || now_ms - w.last_progress_ms <= timeout_ms) return 0;
  p->hang_open = 1;
  p->hang_mark_ms = w.last_progress_ms;
  size_t n = 0;
  if (w.min_seq == w.max_seq) {
    if (max_events > 0) hang_event(p, &w, -1, now_ms, timeout_ms, typical_ms, &events[n++]);
    return n;
  }
  for (int32_t i = 0; i < p->cfg.max_ranks && n < max_events; i++) {
    if (p->ranks[i].active && p->ranks[i].seq == w.min_seq)
      hang_event(p, &w, i, now_ms, timeout_ms, typical_ms, &events[n++]);
  }
  return n;
}

static size_t check_stragglers(tg_progress *p, uint32_t typical_ms, tg_progress_event *events,
                               size_t max_events) {
  size_t n = 0;
  double limit_ms = p->cfg.straggler_factor * (double)typical_ms;
  for (int32_t i = 0; i < p->cfg.max_ranks; i++) {
    rank_state *r = &p->ranks[i];
    if (!r->active) continue;
    int slow = typical_ms > 0 && r->steps_seen >= (uint64_t)p->min_history &&
               r->ring_len >= p->window && (double)r->window_min_ms > limit_ms;
    if (!slow) {
      r->straggling = 0;
      continue;
    }
    if (r->straggling || n >= max_events) continue; /* one that did not fit comes next time */
    r->straggling = 1;
    tg_progress_event *e = &events[n++];
    memset(e, 0, sizeof *e);
    e->kind = TG_PROGRESS_STRAGGLER;
    e->rank = i;
    e->seq = r->seq;
    e->step = r->step;
    e->step_time_ms = r->median_ms;
    e->typical_step_ms = typical_ms;
    snprintf(e->detail, sizeof e->detail,
             "straggler: rank %d took more than %.1fx the typical step time (%u ms) in each of "
             "its last %d steps (median %u ms, fastest %u ms) at step %llu",
             (int)i, p->cfg.straggler_factor, typical_ms, (int)p->window, r->median_ms,
             r->window_min_ms, (unsigned long long)r->step);
  }
  return n;
}

int tg_progress_evaluate(tg_progress *p, int64_t now_ms, tg_progress_event *events,
                         size_t max_events) {
  if (!p || (!events && max_events > 0)) return TG_PROGRESS_EINVAL;
  if (p->evaluated && now_ms < p->last_now_ms) return TG_PROGRESS_ETIME;
  p->evaluated = 1;
  p->last_now_ms = now_ms;
  uint32_t typical_ms = tg_progress_typical_step_ms(p);
  size_t n = check_hang(p, now_ms, typical_ms, events, max_events);
  n += check_stragglers(p, typical_ms, events ? events + n : NULL, max_events - n);
  return (int)n;
}

const char *tg_progress_status_text(tg_progress_status status) {
  switch (status) {
    case TG_PROGRESS_OK: return "ok";
    case TG_PROGRESS_EINVAL: return "invalid argument";
    case TG_PROGRESS_ERANK: return "rank out of range";
    case TG_PROGRESS_ETIME: return "time went backwards";
  }
  return "unknown status";
}
