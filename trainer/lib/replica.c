/* The replica check: silent data corruption caught before a step is
 * committed. In data parallelism every rank holds a copy of the
 * parameters that must be identical, bit for bit, to every other rank's
 * (the trainer gathers them from the ranks' slices each step). A bit
 * flipped in one rank's copy (a bad HBM cell, a mercurial core) changes
 * nothing visible: the loss stays plausible, and the flipped copy would be
 * snapshotted, committed and restored from. So before tg_snapshot writes a
 * step, every rank hashes its replicated buffers (tg_register_replica) and
 * the ranks all-gather the 64-bit hashes: 8 bytes per rank, one small
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

tg_result tg_lib_check_replicas(tg_trainer *t, uint64_t step) {
  if (!check_due(t, step)) return TG_OK;
  int n = t->world.world_size, me = t->world.rank;
  uint64_t *all = calloc((size_t)n, sizeof *all);
  if (!all) return tg_lib_fail(t, "replica check of step %" PRIu64 ": out of memory", step);
  uint64_t mine = tg_lib_replica_checksum(t);
  tg_result r = tg_lib_all_gather_host(t, &mine, all, sizeof mine);
  if (r != TG_OK) {
    free(all);
    return r;
  }
  int differ = 0;
  for (int i = 0; i < n; i++) differ |= all[i] != mine;
  if (!differ) {
    free(all);
    return TG_OK;
  }
  int found = 0;
  uint64_t good = majority(all, n, &found);
  char ranks[128], detail[512];
  name_ranks(ranks, sizeof ranks, all, n, good);
  if (found && mine != good) {
    snprintf(detail, sizeof detail,
             "replica check of step %" PRIu64 ": this rank's parameters differ from the majority's "
             "(checksum %016" PRIx64 ", %016" PRIx64 " on the majority; differing: rank %s of %d); "
             "step not committed, this node must leave the world",
             step, mine, good, ranks, n);
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
