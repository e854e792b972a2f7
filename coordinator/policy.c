/* The placement policy; see policy.h for the rules. Everything here is
 * arithmetic over small arrays: O(n log n) in the number of nodes, no I/O,
 * no clock of its own. Ties between nodes that became eligible at the same
 * millisecond are broken by node id so the outcome never depends on the
 * order of the input. */
#include "coordinator/policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tg_policy_spec_check(const tg_policy_spec *spec, char *err, size_t errlen) {
  const char *why = NULL;
  if (spec->slots_per_node == 0 || spec->slots_per_node > 1024)
    why = "slots_per_node must be 1..1024";
  else if (spec->min_nodes == 0)
    why = "min_nodes must be at least 1";
  else if (spec->max_nodes < spec->min_nodes)
    why = "max_nodes must be at least min_nodes";
  else if (spec->max_nodes > 65536)
    why = "max_nodes must be at most 65536";
  else if (spec->last_call_ms < 0)
    why = "last_call_ms must not be negative";
  else if (spec->granularity > 1 &&
           (uint64_t)spec->max_nodes * spec->slots_per_node < spec->granularity)
    why = "granularity is larger than the largest world";
  if (why) {
    if (err && errlen) snprintf(err, errlen, "%s", why);
    return -1;
  }
  uint32_t step = tg_policy_node_step(spec);
  if (spec->max_nodes / step * step < spec->min_nodes) {
    if (err && errlen)
      snprintf(err, errlen,
               "no node count in [%u, %u] gives a world size that is a multiple of %u",
               spec->min_nodes, spec->max_nodes, spec->granularity);
    return -1;
  }
  return 0;
}

static uint32_t gcd(uint32_t a, uint32_t b) {
  while (b) {
    uint32_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

uint32_t tg_policy_node_step(const tg_policy_spec *spec) {
  if (spec->granularity <= 1 || spec->slots_per_node == 0) return 1;
  return spec->granularity / gcd(spec->granularity, spec->slots_per_node);
}

const char *tg_policy_reason_name(tg_policy_reason reason) {
  switch (reason) {
  case TG_REASON_NONE: return "none";
  case TG_REASON_FIRST: return "first";
  case TG_REASON_REPLACE: return "replace";
  case TG_REASON_SHRINK: return "shrink";
  case TG_REASON_GROW: return "grow";
  case TG_REASON_RESUME: return "resume";
  }
  return "unknown";
}

/* qsort has no context argument: the node array travels in a static
 * per-thread pointer for the duration of one sort. */
static __thread const tg_policy_node *sort_nodes;

static int by_eligible_since(const void *a, const void *b) {
  const tg_policy_node *x = &sort_nodes[*(const size_t *)a], *y = &sort_nodes[*(const size_t *)b];
  if (x->eligible_since_ms != y->eligible_since_ms)
    return x->eligible_since_ms < y->eligible_since_ms ? -1 : 1;
  return strcmp(x->node_id, y->node_id);
}

static size_t round_down(size_t n, uint32_t step) { return n - n % step; }

static void plan_wait(tg_policy_plan *plan, int64_t wake_at_ms) {
  plan->action = TG_POLICY_WAIT;
  plan->wake_at_ms = wake_at_ms;
}

/* A world of the first `count` entries of `order`. Takes ownership of order. */
static void plan_form(tg_policy_plan *plan, tg_policy_reason reason, size_t *order, size_t count,
                      const tg_policy_spec *spec) {
  plan->action = TG_POLICY_FORM;
  plan->reason = reason;
  plan->positions = order;
  plan->n_nodes = count;
  plan->world_size = (uint32_t)(count * spec->slots_per_node);
}

int tg_policy_decide(const tg_policy_spec *spec, const size_t *current, size_t n_current,
                     int had_world, const tg_policy_node *nodes, size_t n_nodes, int64_t now_ms,
                     tg_policy_plan *plan) {
  memset(plan, 0, sizeof *plan);
  const uint32_t step = tg_policy_node_step(spec);
  size_t *member = NULL, *extra = NULL, *order = NULL;
  char *in_world = NULL;
  size_t n_extra = 0, n_lost = 0;
  int rc = -1;

  member = calloc(n_current + 1, sizeof *member);
  extra = calloc(n_nodes + 1, sizeof *extra);
  order = calloc(n_nodes + n_current + 1, sizeof *order);
  in_world = calloc(n_nodes + 1, 1);
  if (!member || !extra || !order || !in_world) goto out;

  /* Members by position (TG_POLICY_GONE when gone or no longer eligible). */
  for (size_t p = 0; p < n_current; p++) {
    size_t i = current[p];
    if (i < n_nodes) in_world[i] = 1;
    member[p] = (i < n_nodes && nodes[i].eligible) ? i : TG_POLICY_GONE;
    if (member[p] == TG_POLICY_GONE) n_lost++;
  }
  /* Eligible nodes outside the world, earliest first. */
  for (size_t i = 0; i < n_nodes; i++)
    if (nodes[i].eligible && !in_world[i]) extra[n_extra++] = i;
  sort_nodes = nodes;
  qsort(extra, n_extra, sizeof *extra, by_eligible_since);

  if (n_current == 0) {
    /* No world: form one once min is reached and the last call is over. */
    size_t cap = round_down(n_extra < spec->max_nodes ? n_extra : spec->max_nodes, step);
    if (n_extra < spec->min_nodes || cap < spec->min_nodes) {
      plan_wait(plan, 0);
      rc = 0;
      goto out;
    }
    int64_t call_ends = nodes[extra[spec->min_nodes - 1]].eligible_since_ms + spec->last_call_ms;
    if (n_extra < spec->max_nodes && now_ms < call_ends) {
      plan_wait(plan, call_ends);
      rc = 0;
      goto out;
    }
    memcpy(order, extra, cap * sizeof *order);
    plan_form(plan, had_world ? TG_REASON_RESUME : TG_REASON_FIRST, order, cap, spec);
    order = NULL;
    rc = 0;
    goto out;
  }

  if (n_lost > 0 && n_extra >= n_lost) {
    /* Spares step into the lost positions; every other rank stays put. */
    size_t next = 0;
    for (size_t p = 0; p < n_current; p++) order[p] = member[p] != TG_POLICY_GONE ? member[p] : extra[next++];
    plan_form(plan, TG_REASON_REPLACE, order, n_current, spec);
    order = NULL;
    rc = 0;
    goto out;
  }

  if (n_lost > 0) {
    /* Shrink: survivors keep their relative order, spares fill in behind. */
    size_t n = 0;
    for (size_t p = 0; p < n_current; p++)
      if (member[p] != TG_POLICY_GONE) order[n++] = member[p];
    for (size_t k = 0; k < n_extra; k++) order[n++] = extra[k];
    size_t cap = round_down(n < spec->max_nodes ? n : spec->max_nodes, step);
    if (cap < spec->min_nodes) {
      plan->action = TG_POLICY_SUSPEND;
      plan->reason = TG_REASON_SHRINK;
      rc = 0;
      goto out;
    }
    plan_form(plan, TG_REASON_SHRINK, order, cap, spec);
    order = NULL;
    rc = 0;
    goto out;
  }

  /* Nothing lost: grow when nodes wait outside and the world is below max. */
  size_t room = spec->max_nodes > n_current ? spec->max_nodes - n_current : 0;
  size_t cap = round_down(n_current + (n_extra < room ? n_extra : room), step);
  if (cap <= n_current) {
    plan->action = TG_POLICY_KEEP;
    rc = 0;
    goto out;
  }
  size_t needed = step - (n_current % step); /* extras for the smallest growth */
  if (needed > n_extra) needed = n_extra;
  int64_t call_ends = nodes[extra[needed - 1]].eligible_since_ms + spec->last_call_ms;
  if (cap < spec->max_nodes && now_ms < call_ends) {
    plan_wait(plan, call_ends);
    rc = 0;
    goto out;
  }
  for (size_t p = 0; p < n_current; p++) order[p] = member[p];
  for (size_t k = 0; n_current + k < cap; k++) order[n_current + k] = extra[k];
  plan_form(plan, TG_REASON_GROW, order, cap, spec);
  order = NULL;
  rc = 0;
out:
  free(member);
  free(extra);
  free(order);
  free(in_world);
  return rc;
}
