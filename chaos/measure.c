/* Detection, recovery and the invariants; see measure.h for the
 * definitions. The numbers come from three places that do not depend on
 * each other: the coordinator's fault log (what the job detected and
 * whom it blamed), the status poller (leader, committed step) and the
 * logs (when training resumed, where, and what every process believed
 * each generation was). */
#include "chaos/measure.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/ckpt/disk.h"
#include "chaos/inject.h"
#include "common/clock/clock.h"

#define FAULT_LOG_BYTES (4 << 20)
/* Slack for "after the injection" (the same clock, but a record's time is
 * taken on another thread). */
#define CLOCK_SLACK_MS 20
/* How often a warning's fault record is looked for (a tgctl call each). */
#define WARNING_LOG_PERIOD_MS 500
/* Training went on: this many steps logged after a warning was seen in
 * the fault log, or after a tolerated slow link began. */
#define WARNING_STEPS 3
/* A healed node's agent reaches the coordinator within a heartbeat or
 * two; this bounds the wait for it to say so. */
#define REJOIN_TIMEOUT_MS 20000
/* How long a slow link below the heartbeat timeout must last, in
 * heartbeat timeouts, before it counts as tolerated. */
#define TOLERATED_HEARTBEATS 5

static void add_note(tg_chaos_fault *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_note(tg_chaos_fault *f, const char *fmt, ...) {
  size_t used = strlen(f->note);
  if (used && used + 2 < sizeof f->note) used += (size_t)snprintf(f->note + used, sizeof f->note - used, "; ");
  if (used >= sizeof f->note) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(f->note + used, sizeof f->note - used, fmt, ap);
  va_end(ap);
}

/* The fault-log kind a fault of `kind` should produce; NULL: none. */
static const char *expected_record(tg_chaos_kind kind) {
  switch (kind) {
  case TG_CHAOS_TRAINER_CRASH:
  case TG_CHAOS_TRAINER_SEGV: return "TRAINER_EXIT";
  case TG_CHAOS_HANG: return "HANG";
  case TG_CHAOS_HOST_LOSS:
  case TG_CHAOS_LOSE_ALL_COPIES:
  case TG_CHAOS_NETWORK_PARTITION:
  case TG_CHAOS_SLOW_LINK: return "NODE_LOST"; /* when slower than the heartbeat timeout */
  case TG_CHAOS_CORRUPT_REPLICA: return "CHECKPOINT_CORRUPT";
  case TG_CHAOS_GPU_XID: return "GPU_XID";
  case TG_CHAOS_GPU_ECC: return "GPU_ECC";
  case TG_CHAOS_GPU_LOST: return "GPU_LOST";
  case TG_CHAOS_NIC_DOWN: return "NIC_DOWN";
  case TG_CHAOS_NIC_FLAP: return "NIC_FLAP";
  case TG_CHAOS_NIC_ERRORS: return "NIC_ERRORS";
  case TG_CHAOS_DISK_FULL: return "DISK";
  case TG_CHAOS_GPU_THERMAL: return "GPU_THERMAL";
  case TG_CHAOS_GPU_PCIE: return "GPU_PCIE";
  case TG_CHAOS_GPU_ROW_REMAP: return "GPU_ROW_REMAP";
  case TG_CHAOS_SILENT_DATA_CORRUPTION: return "SILENT_DATA_CORRUPTION";
  case TG_CHAOS_NAN_LOSS: return "NAN_LOSS";
  case TG_CHAOS_STRAGGLER: return "STRAGGLER";
  default: return NULL;
  }
}

/* ------------------------------------------------------------ recovery */

static int trained_again(const tg_chaos_generation *g) {
  return g->world_size != UINT32_MAX && g->world_size > 0 && g->ranks_joined >= g->world_size &&
         g->first_step_unix_ms > 0;
}

static const tg_chaos_generation *recovered_world(tg_chaos_ctx *ctx, const tg_chaos_fault *f) {
  const tg_chaos_generation *gens;
  size_t n = tg_chaos_watch_generations(ctx->watch, &gens);
  for (size_t i = 0; i < n; i++)
    if (gens[i].generation > f->generation_before && trained_again(&gens[i])) return &gens[i];
  return NULL;
}

static void resumed_in(tg_chaos_ctx *ctx, tg_chaos_fault *f, const tg_chaos_generation *g) {
  f->recovered_unix_ms = g->joined_unix_ms > g->first_step_unix_ms ? g->joined_unix_ms : g->first_step_unix_ms;
  f->resumed = 1;
  f->generation_after = g->generation;
  f->world_after = g->world_size;
  f->resume_step = g->resume_step;
  f->from_disk = g->from_disk;
  f->lib_lost = g->lib_lost_steps;
  /* The last step the old world completed: what its rank 0 logged, or
   * where it resumed if it logged none. */
  const tg_chaos_generation *b = tg_chaos_watch_generation(ctx->watch, f->generation_before);
  int64_t last = b ? (b->max_step > b->resume_step ? b->max_step : b->resume_step) : -1;
  f->last_step_before = last >= 0 ? last : f->step_at_injection;
  f->steps_lost = f->last_step_before > f->resume_step ? f->last_step_before - f->resume_step : 0;
  f->committed_lost = f->committed_at_injection > f->resume_step ? f->committed_at_injection - f->resume_step : 0;
  f->state = TG_CHAOS_RECOVERED;
}

/* Recovered without a new world (a standby took over, a spare came back). */
static void kept_world(tg_chaos_fault *f, int64_t at) {
  f->recovered_unix_ms = at;
  f->generation_after = f->generation_before;
  f->world_after = f->world_before;
  f->last_step_before = f->step_at_injection;
  f->resume_step = -1;
  f->state = TG_CHAOS_RECOVERED;
}

static void new_leader(tg_chaos_ctx *ctx, tg_chaos_fault *f, const tg_chaos_status *st) {
  f->detected = 1;
  f->detected_unix_ms = st->answered_unix_ms;
  snprintf(f->detect_source, sizeof f->detect_source, "leader");
  snprintf(f->detect_node, sizeof f->detect_node, "%s", st->leader);
  f->detect_rank = -1;
  f->culprit_ok = 1;
  add_note(f, "%s took over from %s", st->leader, f->coordinator);
  /* Back as a standby, so later faults still have one. */
  char err[256];
  int idx = tg_chaos_cluster_coordinator_index(ctx->cluster, f->coordinator);
  if (tg_chaos_cluster_start_coordinator(ctx->cluster, idx, err, sizeof err) == 0)
    add_note(f, "%s restarted as a standby", f->coordinator);
  else
    add_note(f, "cannot restart %s: %s", f->coordinator, err);
}

static void world_formed(tg_chaos_ctx *ctx, tg_chaos_fault *f) {
  const tg_chaos_generation *gens;
  size_t n = tg_chaos_watch_generations(ctx->watch, &gens);
  for (size_t i = 0; i < n; i++) {
    if (gens[i].generation <= f->generation_before || gens[i].formed_unix_ms <= 0) continue;
    f->detected = 1;
    f->detected_unix_ms = gens[i].formed_unix_ms;
    snprintf(f->detect_source, sizeof f->detect_source, "world");
    f->detect_rank = -1;
    f->culprit_ok = 1;
    return;
  }
}

/* A partitioned or slowed node's link is made whole once the job has
 * recovered without it (or gave up): its agent's next heartbeat reaches
 * the coordinator, which no longer counts the node; the agent registers
 * again and waits as a spare, or holds ranks in the next world that
 * grows. Its trainers, stuck in the old world, are aborted by the newer
 * generation and rejoin with their agent. `wait_rejoin` 0: the node never
 * left (a tolerated slow link), nothing to wait for. */
static void heal(tg_chaos_ctx *ctx, tg_chaos_fault *f, int wait_rejoin) {
  if ((f->spec.kind != TG_CHAOS_NETWORK_PARTITION && f->spec.kind != TG_CHAOS_SLOW_LINK) || f->healed) return;
  int idx = tg_chaos_cluster_node_index(ctx->cluster, f->node);
  char err[256];
  f->healed = 1;
  int rc = f->spec.kind == TG_CHAOS_SLOW_LINK ? tg_chaos_cluster_slow_link(ctx->cluster, idx, 0, err, sizeof err)
                                              : tg_chaos_cluster_heal(ctx->cluster, idx, err, sizeof err);
  if (rc != 0) {
    add_note(f, "cannot make %s's link whole: %s", f->node, err);
    return;
  }
  ctx->cut[idx] = 0;
  add_note(f, "%s", f->spec.kind == TG_CHAOS_SLOW_LINK ? "fast again" : "healed");
  if (!wait_rejoin) return;
  f->agent_lines_before = tg_chaos_watch_agent_lines(ctx->watch, idx);
  f->healed_mono_ms = tg_clock_mono_ms();
}

/* A slow link below the heartbeat timeout must be tolerated: no node
 * lost, no new world. It counts as such once it has been slow for
 * TOLERATED_HEARTBEATS heartbeat timeouts and training went on; a newer
 * world before that is caught as a recovery (and noted). */
static int tolerated(tg_chaos_ctx *ctx, tg_chaos_fault *f) {
  int64_t timeout = ctx->s->cluster.heartbeat_timeout_ms;
  if (f->spec.kind != TG_CHAOS_SLOW_LINK || f->spec.delay_ms >= timeout) return 0;
  return tg_clock_mono_ms() - f->injected_mono_ms >= TOLERATED_HEARTBEATS * timeout &&
         tg_chaos_watch_max_step(ctx->watch) >= f->step_at_injection + WARNING_STEPS;
}

/* 1 once f's node's agent logged a world after f->agent_lines_before
 * lines (it came back: as a spare or holding ranks, said in the note), with
 * that line's time in *at. */
static int agent_logged_world(tg_chaos_ctx *ctx, tg_chaos_fault *f, int64_t *at) {
  int idx = tg_chaos_cluster_node_index(ctx->cluster, f->node);
  if (tg_chaos_watch_agent_lines(ctx->watch, idx) <= f->agent_lines_before) return 0;
  uint64_t gen;
  int holds;
  int64_t when;
  tg_chaos_watch_agent_last(ctx->watch, idx, &gen, &holds, &when);
  add_note(f, "%s rejoined generation %llu %s", f->node, (unsigned long long)gen, holds ? "holding ranks" : "as a spare");
  if (at) *at = when;
  return 1;
}

/* After the heal, the fault stays in flight (already recovered) until
 * the node's agent logs the world it came back to, so the next fault
 * meets a settled job and the report says how the node returned. */
static int rejoined(tg_chaos_ctx *ctx, tg_chaos_fault *f) {
  if (agent_logged_world(ctx, f, NULL)) return 1;
  if (tg_clock_mono_ms() - f->healed_mono_ms > REJOIN_TIMEOUT_MS) {
    add_note(f, "%s logged no world within %d s of the heal", f->node, REJOIN_TIMEOUT_MS / 1000);
    return 1;
  }
  return 0;
}

/* The newest step of which some shard is persisted in dir; -1: none. */
static int64_t newest_persisted(const char *dir, const char *job) {
  tg_ckpt_key keys[256];
  size_t n = tg_ckpt_disk_list(dir, job, keys, sizeof keys / sizeof keys[0]);
  int64_t newest = -1;
  for (size_t i = 0; i < n && i < sizeof keys / sizeof keys[0]; i++)
    if ((int64_t)keys[i].step > newest) newest = (int64_t)keys[i].step;
  return newest;
}

/* A full disk must not stop training: once the trainers went a persist
 * interval past the fault (so a persist had to fail), the space is freed;
 * it is over when a step after that is on disk again. The world never
 * changes. */
static int disk_full_over(tg_chaos_ctx *ctx, tg_chaos_fault *f) {
  int64_t step = tg_chaos_watch_max_step(ctx->watch);
  if (f->freed_at_step < 0) {
    if (step <= f->step_at_injection + ctx->s->cluster.persist_every + 1) return 0;
    char path[760];
    tg_chaos_fill_path(ctx, path, sizeof path);
    if (unlink(path) != 0) add_note(f, "cannot remove %s: %s", path, strerror(errno));
    f->freed_at_step = step;
    add_note(f, "training went on to step %lld; space freed", (long long)step);
    return 0;
  }
  int64_t persisted = newest_persisted(f->component, tg_chaos_cluster_job(ctx->cluster));
  if (persisted <= f->freed_at_step) return 0;
  add_note(f, "step %lld persisted after that", (long long)persisted);
  kept_world(f, tg_clock_unix_ms());
  return 1;
}

/* A WARNING (a hot GPU, a narrow PCIe link, a pending row remap, a
 * flapping NIC, NIC errors) must be reported, naming the node, and must
 * change nothing: the node keeps its ranks and training goes on in the
 * same world. Over once the record is in the fault log (read every
 * WARNING_LOG_PERIOD_MS) and WARNING_STEPS more steps were logged; a fake
 * GPU is then healed, so later faults find it healthy. A newer world
 * means the job acted on a warning: not recovered. */
static int warning_over(tg_chaos_ctx *ctx, tg_chaos_fault *f) {
  const tg_chaos_generation *gens;
  size_t n = tg_chaos_watch_generations(ctx->watch, &gens);
  for (size_t i = 0; i < n; i++)
    if (gens[i].generation > f->generation_before) {
      f->state = TG_CHAOS_NOT_RECOVERED;
      add_note(f, "generation %llu formed: the job acted on a warning", (unsigned long long)gens[i].generation);
      tg_chaos_device_heal(ctx, f);
      return 1;
    }
  int64_t step = tg_chaos_watch_max_step(ctx->watch), now = tg_clock_mono_ms();
  if (!f->detected) {
    if (now < f->next_log_read_mono_ms) return 0;
    f->next_log_read_mono_ms = now + WARNING_LOG_PERIOD_MS;
    tg_chaos_match_fault_log(ctx, f, 1);
    if (!f->detected) return 0;
    f->step_at_detection = step;
  }
  if (step < f->step_at_detection + WARNING_STEPS) return 0;
  int rc = tg_chaos_device_heal(ctx, f);
  if (rc != 0) add_note(f, "cannot heal the fake GPU: %s", strerror(-rc));
  add_note(f, "a WARNING: reported, training went on to step %lld in the same world", (long long)step);
  kept_world(f, tg_clock_unix_ms());
  return 1;
}

/* What a fault that did not recover broke is put back, for the faults
 * after it and, attached, for the job tg-chaos leaves running: the link,
 * the warning's fake GPU, the killed coordinator (a standby again). */
static void mend(tg_chaos_ctx *ctx, tg_chaos_fault *f) {
  heal(ctx, f, 0);
  tg_chaos_device_heal(ctx, f);
  int idx = f->spec.kind == TG_CHAOS_COORDINATOR_CRASH && f->coordinator[0]
                ? tg_chaos_cluster_coordinator_index(ctx->cluster, f->coordinator)
                : -1;
  if (idx < 0 || tg_chaos_cluster_coordinator_running(ctx->cluster, idx)) return;
  char err[256];
  if (tg_chaos_cluster_start_coordinator(ctx->cluster, idx, err, sizeof err) == 0)
    add_note(f, "%s restarted", f->coordinator);
  else
    add_note(f, "cannot restart %s: %s", f->coordinator, err);
}

/* 1 (and not recovered) once the fault's recovery_timeout_s has passed. */
static int timed_out(tg_chaos_ctx *ctx, tg_chaos_fault *f) {
  if (tg_clock_mono_ms() - f->injected_mono_ms <= ctx->s->recovery_timeout_s * 1000) return 0;
  f->state = TG_CHAOS_NOT_RECOVERED;
  add_note(f, "no recovery within %llds", (long long)ctx->s->recovery_timeout_s);
  mend(ctx, f);
  return 1;
}

/* A straggler re-forms nothing (a WARNING: every rank waits for it in
 * each collective, and the world stands): what is measured besides its
 * record is that training went on through its slow steps, and how much
 * they stretched. Recovered once as many steps again
 * ran after them; the note compares the two stretches' ms per step. 1
 * when recovered. */
static int straggled(tg_chaos_ctx *ctx, tg_chaos_fault *f) {
  int64_t step = tg_chaos_watch_max_step(ctx->watch), now = tg_clock_unix_ms();
  int64_t n = f->spec.for_steps > 0 ? f->spec.for_steps : 1;
  if (!f->slow_end_unix_ms && step >= f->step_at_injection + n) f->slow_end_unix_ms = now;
  if (!f->slow_end_unix_ms || step < f->step_at_injection + 2 * n) return 0;
  double slow = (double)(f->slow_end_unix_ms - f->injected_unix_ms) / (double)n;
  double after = (double)(now - f->slow_end_unix_ms) / (double)n;
  add_note(f, "steps %lld..%lld took %.0f ms each, the %lld after them %.0f ms (x%.1f); training went on in "
           "the same world", (long long)f->step_at_injection + 1, (long long)(f->step_at_injection + n), slow,
           (long long)n, after, after > 0 ? slow / after : 0.0);
  kept_world(f, now);
  return 1;
}

int tg_chaos_track(tg_chaos_ctx *ctx, tg_chaos_fault *f) {
  if (f->healed && f->healed_mono_ms) return rejoined(ctx, f);
  if (f->state != TG_CHAOS_IN_FLIGHT) return 1;
  if (tg_chaos_kind_is_warning(f->spec.kind)) return warning_over(ctx, f) || timed_out(ctx, f);
  tg_chaos_status st;
  tg_chaos_poller_get(ctx->poller, &st);
  if (f->spec.kind == TG_CHAOS_COORDINATOR_CRASH && !f->detected && st.ok &&
      st.answered_unix_ms > f->injected_unix_ms && st.leader[0] && strcmp(st.leader, f->coordinator) != 0)
    new_leader(ctx, f, &st);
  if (f->spec.kind == TG_CHAOS_DRAIN && !f->detected) world_formed(ctx, f);

  if (f->spec.kind == TG_CHAOS_STRAGGLER && straggled(ctx, f)) return 1;
  const tg_chaos_generation *g = recovered_world(ctx, f);
  if (g) {
    resumed_in(ctx, f, g);
    if (f->spec.kind == TG_CHAOS_SLOW_LINK && f->spec.delay_ms < ctx->s->cluster.heartbeat_timeout_ms)
      add_note(f, "a new world although the delay was below the heartbeat timeout");
    heal(ctx, f, 1);
    return !f->healed_mono_ms;
  }
  if (tolerated(ctx, f)) {
    kept_world(f, tg_clock_unix_ms());
    add_note(f, "tolerated: no node lost, training never stopped");
    heal(ctx, f, 0);
    return 1;
  }
  if (f->spec.kind == TG_CHAOS_COORDINATOR_CRASH && f->detected &&
      tg_chaos_watch_max_step(ctx->watch) > f->step_at_injection) {
    kept_world(f, tg_clock_unix_ms());
    return 1;
  }
  /* etcd's remaining members elect a leader on their own; what matters is
   * that the job notices nothing: a leading coordinator still answers and
   * training goes on. Then the member comes back, for later faults. */
  if (f->spec.kind == TG_CHAOS_ETCD_MEMBER_CRASH && st.ok && st.answered_unix_ms > f->injected_unix_ms &&
      tg_chaos_watch_max_step(ctx->watch) > f->step_at_injection + 2) {
    kept_world(f, tg_clock_unix_ms());
    char err[256];
    if (tg_etcd_cluster_restart(ctx->etcd, f->etcd_member, 20000, err, sizeof err) == 0)
      add_note(f, "member %d restarted", f->etcd_member);
    else
      add_note(f, "cannot restart etcd member %d: %s", f->etcd_member, err);
    return 1;
  }
  if (f->spec.kind == TG_CHAOS_DISK_FULL && disk_full_over(ctx, f)) return 1;
  int64_t at;
  if (f->spec.kind == TG_CHAOS_HOST_RETURN && !f->expect_new_world && agent_logged_world(ctx, f, &at)) {
    kept_world(f, at);
    return 1;
  }
  return timed_out(ctx, f);
}

void tg_chaos_abandon(tg_chaos_ctx *ctx, tg_chaos_fault *f, const char *why) {
  if (f->state != TG_CHAOS_IN_FLIGHT) return;
  f->state = TG_CHAOS_NOT_RECOVERED;
  add_note(f, "%s", why);
  /* Attached, the job goes on after tg-chaos: leave it whole. (Its own
   * cluster is torn down anyway.) */
  if (tg_chaos_cluster_attached(ctx->cluster)) mend(ctx, f);
}

/* ------------------------------------------------------------ fault log */

static int64_t num(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

static const char *str(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return cJSON_IsString(v) ? v->valuestring : "";
}

static int id_used(const tg_chaos_fault *faults, size_t n, const char *id) {
  for (size_t i = 0; i < n; i++)
    if (faults[i].fault_id[0] && strcmp(faults[i].fault_id, id) == 0) return 1;
  return 0;
}

static void match_one(tg_chaos_fault *faults, size_t n, size_t i, const cJSON *records) {
  tg_chaos_fault *f = &faults[i];
  const char *want = expected_record(f->spec.kind);
  int64_t lo = f->injected_unix_ms - CLOCK_SLACK_MS, hi = INT64_MAX;
  if (f->recovered_unix_ms) hi = f->recovered_unix_ms + 500;
  else if (i + 1 < n && faults[i + 1].injected_unix_ms) hi = faults[i + 1].injected_unix_ms;
  const cJSON *best = NULL, *named = NULL;
  const cJSON *r;
  cJSON_ArrayForEach(r, records) {
    int64_t at = num(r, "detected_unix_ms");
    if (strcmp(str(r, "kind"), want) != 0 || at < lo || at > hi || id_used(faults, n, str(r, "fault_id"))) continue;
    const char *node = str(r, "node_id");
    int is_target = strcmp(node, f->node) == 0 || (f->node2[0] && strcmp(node, f->node2) == 0);
    if (is_target && (!named || at < num(named, "detected_unix_ms"))) named = r;
    if (!best || at < num(best, "detected_unix_ms")) best = r;
  }
  const cJSON *m = named ? named : best;
  if (!m) return;
  f->detected = 1;
  f->detected_unix_ms = num(m, "detected_unix_ms");
  snprintf(f->detect_source, sizeof f->detect_source, "fault_log");
  snprintf(f->detect_kind, sizeof f->detect_kind, "%s", str(m, "kind"));
  snprintf(f->detect_node, sizeof f->detect_node, "%s", str(m, "node_id"));
  snprintf(f->fault_id, sizeof f->fault_id, "%s", str(m, "fault_id"));
  f->detect_rank = (int)num(m, "rank");
  f->detect_signal = (int)num(m, "signal");
  /* A trainer's fault must name its rank too; a corrupt copy is reported
   * by whichever rank read it, so only the node counts there. */
  int rank_counts = tg_chaos_kind_target(f->spec.kind) == TG_CHAOS_TARGET_TRAINER &&
                    f->spec.kind != TG_CHAOS_CORRUPT_REPLICA && f->rank >= 0;
  f->culprit_ok = m == named && (!rank_counts || f->detect_rank == f->rank);
  /* A full disk is no node's fault: the record must name the directory. */
  if (f->spec.kind == TG_CHAOS_DISK_FULL) f->culprit_ok = strcmp(str(m, "component"), f->component) == 0;
  if (!f->culprit_ok)
    add_note(f, "the fault log blamed %s rank %d, not the target", f->detect_node, f->detect_rank);
  if (f->spec.kind == TG_CHAOS_TRAINER_SEGV && f->detect_signal != 11)
    add_note(f, "the record says signal %d, not 11", f->detect_signal);
}

void tg_chaos_match_fault_log(tg_chaos_ctx *ctx, tg_chaos_fault *faults, size_t n) {
  int pending = 0;
  for (size_t i = 0; i < n; i++)
    pending |= !faults[i].detected && faults[i].injected_unix_ms && expected_record(faults[i].spec.kind);
  if (!pending) return;
  char *out = malloc(FAULT_LOG_BYTES);
  if (!out) return;
  const char *args[] = {"faults", "--limit", "512", NULL};
  cJSON *records = NULL;
  if (tg_chaos_cluster_tgctl(ctx->cluster, args, out, FAULT_LOG_BYTES, 10000) == 0) records = cJSON_Parse(out);
  if (cJSON_IsArray(records))
    for (size_t i = 0; i < n; i++)
      if (!faults[i].detected && faults[i].injected_unix_ms && expected_record(faults[i].spec.kind))
        match_one(faults, n, i, records);
  cJSON_Delete(records);
  free(out);
}

/* ------------------------------------------------------------ invariants */

static void appendf(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void appendf(char *buf, size_t len, const char *fmt, ...) {
  size_t used = strlen(buf);
  if (used + 1 >= len) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf + used, len - used, fmt, ap);
  va_end(ap);
}

/* (1) Every resume started at or after the committed step at its fault. */
static void no_committed_step_lost(const tg_chaos_result *res, tg_chaos_invariant *inv) {
  size_t checked = 0, violated = 0, unknown = 0;
  char notes[768] = "";
  for (size_t i = 0; i < res->n_faults; i++) {
    const tg_chaos_fault *f = &res->faults[i];
    if (!f->resumed) continue;
    if (f->committed_at_injection < 0) {
      unknown++;
      continue;
    }
    checked++;
    const char *kind = tg_chaos_kind_name(f->spec.kind);
    if (f->from_disk) {
      violated += f->committed_lost > 0;
      appendf(notes, sizeof notes, "%sfault #%zu (%s): resumed from disk, %lld committed steps lost (resumed at step "
              "%lld; the committed step was %lld at the fault)", notes[0] ? "; " : "", i, kind,
              (long long)f->committed_lost, (long long)f->resume_step, (long long)f->committed_at_injection);
    } else if (f->committed_lost > 0) {
      violated++;
      appendf(notes, sizeof notes, "%sfault #%zu (%s): resumed at step %lld, %lld committed steps lost (the committed "
              "step was %lld at the fault)", notes[0] ? "; " : "", i, kind, (long long)f->resume_step,
              (long long)f->committed_lost, (long long)f->committed_at_injection);
    }
  }
  inv->name = "no_committed_step_lost";
  inv->pass = violated == 0;
  if (violated)
    snprintf(inv->detail, sizeof inv->detail, "%s", notes);
  else if (checked == 0)
    snprintf(inv->detail, sizeof inv->detail, "no fault made the job resume from a checkpoint%s",
             unknown ? " with a known committed step" : "");
  else
    snprintf(inv->detail, sizeof inv->detail, "%s %zu resume%s started at or after the job's committed step at %s "
             "fault%s%s", checked == 1 ? "the" : "all", checked, checked == 1 ? "" : "s", checked == 1 ? "its" : "their",
             notes[0] ? "; " : "", notes);
  if (unknown) appendf(inv->detail, sizeof inv->detail, " (%zu resumes unchecked: no committed step known)", unknown);
}

/* (2) One world per generation, in every process's view. */
static void one_world_per_generation(tg_chaos_ctx *ctx, tg_chaos_invariant *inv) {
  char detail[900];
  size_t conflicts = tg_chaos_watch_conflicts(ctx->watch, detail, sizeof detail);
  const tg_chaos_generation *gens;
  size_t n = tg_chaos_watch_generations(ctx->watch, &gens);
  inv->name = "one_world_per_generation";
  inv->pass = conflicts == 0;
  if (conflicts)
    snprintf(inv->detail, sizeof inv->detail, "%zu lines contradict another about the same generation: %s", conflicts,
             detail);
  else
    snprintf(inv->detail, sizeof inv->detail, "%zu generation%s; every agent and trainer line about each agrees on "
             "its world size and reason", n, n == 1 ? "" : "s");
}

/* (3) Final parameters bitwise equal to the fault-free run's; not checked
 * when attached (no such run). Reads the result only: an owned cluster is
 * freed before the invariants are judged. */
static void same_parameters(const tg_chaos_result *res, const char *params, const char *reference,
                            tg_chaos_invariant *inv) {
  inv->name = "final_parameters_match_reference";
  inv->pass = 0;
  if (res->attach[0]) {
    inv->not_checked = 1;
    snprintf(inv->detail, sizeof inv->detail, "not checked: attached to a running job, so there is no fault-free "
             "run of the same training to compare with");
    return;
  }
  FILE *a = params ? fopen(params, "rb") : NULL, *b = reference ? fopen(reference, "rb") : NULL;
  if (!b) {
    snprintf(inv->detail, sizeof inv->detail, "no reference parameters to compare with");
  } else if (!a) {
    snprintf(inv->detail, sizeof inv->detail, "no final parameters: training stopped at step %lld of %lld",
             (long long)res->final_step, (long long)res->scenario->training.steps);
  } else {
    long long at = 0;
    int ca, cb;
    do {
      ca = fgetc(a);
      cb = fgetc(b);
      at++;
    } while (ca == cb && ca != EOF);
    if (ca == cb)
      snprintf(inv->detail, sizeof inv->detail, "bitwise equal to the fault-free reference run (%lld bytes)", at - 1);
    else if (ca == EOF || cb == EOF)
      snprintf(inv->detail, sizeof inv->detail, "the parameter files differ in length (at byte %lld one ends)", at - 1);
    else
      snprintf(inv->detail, sizeof inv->detail, "the parameters differ from the reference run's, first at byte %lld",
               at - 1);
    inv->pass = ca == cb;
  }
  if (a) fclose(a);
  if (b) fclose(b);
}

void tg_chaos_check_invariants(tg_chaos_ctx *ctx, tg_chaos_result *res, const char *params, const char *reference) {
  no_committed_step_lost(res, &res->invariants[0]);
  one_world_per_generation(ctx, &res->invariants[1]);
  same_parameters(res, params, reference, &res->invariants[2]);
  res->invariants_checked = 1;
}
