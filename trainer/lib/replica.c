/* The replica check: silent data corruption caught before a step is
 * committed. In data parallelism every rank holds a copy of the
 * parameters that must be identical, bit for bit, to every other rank's
 * (the trainer gathers them from the ranks' slices each step). A bit
 * flipped in one rank's copy (a bad HBM cell, a mercurial core) changes
 * nothing visible: the loss stays plausible, and the flipped copy would be
 * snapshotted, committed and restored from. So before tg_snapshot writes a
 * step, every rank hashes its replicated buffers (tg_register_replica) and
 * the ranks all-gather the 64-bit hashes (with each rank's time outside
 * collectives, which names a straggler): 16 bytes per rank, one small
 * collective. Equal: go on. Otherwise the step is not written, and the
 * ranks that differ from a strict majority name themselves culprits
 * (FATAL: their node leaves the world and is quarantined); without a
 * majority rank 0 asks for a roll back of the same nodes (ERROR). Every
 * rank then re-joins and resumes from the last committed step.
 *
 * Non-finite losses and gradients (tg_report_nonfinite) are here too:
 * the other way a step must be refused before it is committed. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock/clock.h"
#include "proto/tardigrade/v1/common.pb-c.h"
#include "trainer/lib/checksum.h"
#include "trainer/lib/internal.h"

uint64_t tg_lib_replica_checksum(const tg_trainer *t) {
  tg_checksum c;
  tg_checksum_init(&c);
  for (size_t b = 0; b < t->n_buffers; b++) {
    if (!t->buffers[b].replica) continue;
    uint64_t len = t->buffers[b].bytes;
    tg_checksum_update(&c, &len, sizeof len);
    tg_checksum_update(&c, t->buffers[b].data, t->buffers[b].bytes);
  }
  return tg_checksum_final(&c);
}

/* The value held by more than half of the ranks (Boyer-Moore vote, then
 * a count); 0 in *found when none is. */
static uint64_t majority(const uint64_t *h, int n, int *found) {
  uint64_t cand = 0;
  int votes = 0;
  for (int i = 0; i < n; i++) {
    if (votes == 0) cand = h[i];
    votes += h[i] == cand ? 1 : -1;
  }
  int count = 0;
  for (int i = 0; i < n; i++) count += h[i] == cand;
  *found = 2 * count > n;
  return cand;
}

/* "ranks 3, 5" (at most 8 named, then "and N more"). */
static void name_ranks(char *out, size_t len, const uint64_t *h, int n, uint64_t good) {
  size_t used = 0;
  int named = 0, more = 0;
  out[0] = 0;
  for (int i = 0; i < n; i++) {
    if (h[i] == good) continue;
    if (named == 8) {
      more++;
      continue;
    }
    int w = snprintf(out + used, len - used, "%s%d", named ? ", " : "", i);
    if (w < 0 || (size_t)w >= len - used) break;
    used += (size_t)w;
    named++;
  }
  if (more) snprintf(out + used, len - used, " and %d more", more);
}

static int check_due(const tg_trainer *t, uint64_t step) {
  if (t->replica_check_steps <= 0 || t->world.world_size < 2) return 0;
  if (step % (uint64_t)t->replica_check_steps != 0) return 0;
  for (size_t b = 0; b < t->n_buffers; b++)
    if (t->buffers[b].replica) return 1;
  return 0;
}

/* What each rank contributes to a check. */
typedef struct {
  uint64_t checksum;
  int64_t busy_ms; /* outside collectives since the last check; -1: not known */
} check_entry;

static int by_value(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* The straggler: in a synchronous step every rank waits inside the
 * collectives for the slowest one, so every rank's step takes as long
 * and step times name no one. Time outside collectives does: the slow
 * rank's is long, its peers' short. This rank names itself (WARNING: the
 * world stands; the operator or the policy decides) when its busy time
 * was more than TG_LIB_STRAGGLER_FACTOR x the median, and at least
 * TG_LIB_STRAGGLER_MIN_MS more, at TG_LIB_STRAGGLER_CHECKS checks in a
 * row; once per episode. */
#define TG_LIB_STRAGGLER_FACTOR 3
#define TG_LIB_STRAGGLER_MIN_MS 50
#define TG_LIB_STRAGGLER_CHECKS 3

static void look_for_straggler(tg_trainer *t, uint64_t step, const check_entry *all, int n) {
  int64_t *busy = malloc((size_t)n * sizeof *busy);
  int known = 0;
  for (int i = 0; busy && i < n; i++)
    if (all[i].busy_ms >= 0) busy[known++] = all[i].busy_ms;
  int64_t mine = all[t->world.rank].busy_ms;
  if (!busy || known < n || mine < 0) { /* a new world: its first check timed the restore */
    free(busy);
    t->slow_checks = 0;
    return;
  }
  qsort(busy, (size_t)known, sizeof *busy, by_value);
  int64_t median = busy[(known - 1) / 2];
  free(busy);
  int slow = mine > TG_LIB_STRAGGLER_FACTOR * median && mine - median >= TG_LIB_STRAGGLER_MIN_MS;
  t->slow_checks = slow ? t->slow_checks + 1 : 0;
  if (t->slow_checks != TG_LIB_STRAGGLER_CHECKS) return;
  char detail[256];
  snprintf(detail, sizeof detail,
           "straggler: %" PRId64 " ms outside collectives per checked step against a median of %" PRId64
           " ms over the %d ranks, %d checks in a row up to step %" PRIu64 "; every rank waits for it",
           mine, median, n, TG_LIB_STRAGGLER_CHECKS, step);
  tg_lib_report(t, TARDIGRADE__V1__FAULT_KIND__FAULT_STRAGGLER, TARDIGRADE__V1__SEVERITY__SEVERITY_WARNING, detail);
}

/* The checksums alone, for the vote. */
static uint64_t *checksums(const check_entry *all, int n) {
  uint64_t *h = malloc((size_t)n * sizeof *h);
  for (int i = 0; h && i < n; i++) h[i] = all[i].checksum;
  return h;
}

tg_result tg_lib_check_replicas(tg_trainer *t, uint64_t step) {
  if (!check_due(t, step)) return TG_OK;
  int n = t->world.world_size, me = t->world.rank;
  check_entry *all = calloc((size_t)n, sizeof *all);
  if (!all) return tg_lib_fail(t, "replica check of step %" PRIu64 ": out of memory", step);
  int64_t now = tg_clock_mono_ms();
  check_entry mine = {.checksum = tg_lib_replica_checksum(t),
                      .busy_ms = t->check_mark_ms ? now - t->check_mark_ms - t->collective_ms : -1};
  if (mine.busy_ms < -1) mine.busy_ms = 0;
  tg_result r = tg_lib_all_gather_host(t, &mine, all, sizeof mine);
  t->check_mark_ms = tg_clock_mono_ms();
  t->collective_ms = 0;
  uint64_t *h = r == TG_OK ? checksums(all, n) : NULL;
  if (r != TG_OK || !h) {
    free(all);
    return r != TG_OK ? r : tg_lib_fail(t, "replica check of step %" PRIu64 ": out of memory", step);
  }
  int differ = 0;
  for (int i = 0; i < n; i++) differ |= h[i] != mine.checksum;
  if (!differ) {
    look_for_straggler(t, step, all, n);
    free(h);
    free(all);
    return TG_OK;
  }
  int found = 0;
  uint64_t good = majority(h, n, &found);
  char ranks[128], detail[512];
  name_ranks(ranks, sizeof ranks, h, n, good);
  if (found && mine.checksum != good) {
    snprintf(detail, sizeof detail,
             "replica check of step %" PRIu64 ": this rank's parameters differ from the majority's "
             "(checksum %016" PRIx64 ", %016" PRIx64 " on the majority; differing: rank %s of %d); "
             "step not committed, this node must leave the world",
             step, mine.checksum, good, ranks, n);
    tg_lib_report(t, TARDIGRADE__V1__FAULT_KIND__FAULT_SILENT_DATA_CORRUPTION,
                  TARDIGRADE__V1__SEVERITY__SEVERITY_FATAL, detail);
  } else if (!found && me == 0) {
    snprintf(detail, sizeof detail,
             "replica check of step %" PRIu64 ": the ranks' parameters differ and no majority agrees "
             "(%d ranks), so no culprit can be named; step not committed, rolling back",
             step, n);
    tg_lib_report(t, TARDIGRADE__V1__FAULT_KIND__FAULT_SILENT_DATA_CORRUPTION,
                  TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR, detail);
  }
  snprintf(t->error, sizeof t->error,
           "replica check of step %" PRIu64 ": parameters differ between ranks (%s %s); step not committed",
           step, found ? "culprit: rank" : "no majority among", found ? ranks : "the ranks");
  free(h);
  free(all);
  return TG_WORLD_CHANGED;
}

tg_result tg_report_nonfinite(tg_trainer *t, uint64_t step, const char *what) {
  char detail[256];
  snprintf(detail, sizeof detail,
           "step %" PRIu64 ": the %s is not finite (NaN or infinite); step not committed, rolling back "
           "to the last committed step", step, what && *what ? what : "loss");
  tg_lib_report(t, TARDIGRADE__V1__FAULT_KIND__FAULT_NAN_LOSS, TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR, detail);
  snprintf(t->error, sizeof t->error, "%s", detail);
  return TG_WORLD_CHANGED;
}
