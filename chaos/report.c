/* The JSON report and the summary table; see report.h. A value that was
 * not measured is null in JSON and "-" in the table, never a made-up 0. */
#include "chaos/report.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static const char *outcome(tg_chaos_fault_state s) {
  switch (s) {
  case TG_CHAOS_PENDING: return "pending";
  case TG_CHAOS_IN_FLIGHT: return "in_flight";
  case TG_CHAOS_RECOVERED: return "recovered";
  case TG_CHAOS_NOT_RECOVERED: return "not_recovered";
  case TG_CHAOS_SKIPPED: return "skipped";
  }
  return "?";
}

static void add_num_or_null(cJSON *o, const char *key, int have, double v) {
  if (have)
    cJSON_AddNumberToObject(o, key, v);
  else
    cJSON_AddNullToObject(o, key);
}

static void add_str_or_null(cJSON *o, const char *key, const char *v) {
  if (v && *v)
    cJSON_AddStringToObject(o, key, v);
  else
    cJSON_AddNullToObject(o, key);
}

static int injected(const tg_chaos_fault *f) {
  return f->state == TG_CHAOS_IN_FLIGHT || f->state == TG_CHAOS_RECOVERED || f->state == TG_CHAOS_NOT_RECOVERED;
}

static cJSON *target_json(const tg_chaos_fault *f) {
  cJSON *t = cJSON_CreateObject();
  cJSON_AddBoolToObject(t, "random", f->spec.random_target);
  const char *node = f->node[0] ? f->node : f->spec.node;
  add_str_or_null(t, "node", node);
  int slot = f->slot >= 0 ? f->slot : f->spec.slot;
  add_num_or_null(t, "slot", slot >= 0, slot);
  add_num_or_null(t, "rank", f->rank >= 0, f->rank);
  if (f->node2[0]) {
    cJSON *nodes = cJSON_AddArrayToObject(t, "nodes");
    cJSON_AddItemToArray(nodes, cJSON_CreateString(f->node));
    cJSON_AddItemToArray(nodes, cJSON_CreateString(f->node2));
  }
  add_str_or_null(t, "coordinator", f->coordinator);
  return t;
}

static cJSON *fault_json(const tg_chaos_fault *f, size_t i) {
  cJSON *o = cJSON_CreateObject();
  int inj = injected(f);
  cJSON_AddNumberToObject(o, "index", (double)i);
  cJSON_AddStringToObject(o, "kind", tg_chaos_kind_name(f->spec.kind));
  cJSON_AddBoolToObject(o, "soak", f->soak);
  cJSON *trigger = cJSON_AddObjectToObject(o, "trigger");
  if (f->spec.at_step >= 0)
    cJSON_AddNumberToObject(trigger, "at_step", (double)f->spec.at_step);
  else
    cJSON_AddNumberToObject(trigger, "at_ms", (double)f->spec.at_ms);
  cJSON_AddItemToObject(o, "target", target_json(f));
  cJSON_AddStringToObject(o, "outcome", outcome(f->state));
  add_str_or_null(o, "note", f->note);
  add_num_or_null(o, "injected_unix_ms", inj, (double)f->injected_unix_ms);
  add_num_or_null(o, "step_at_injection", inj, (double)f->step_at_injection);
  add_num_or_null(o, "committed_step_at_injection", inj && f->committed_at_injection >= 0,
                  (double)f->committed_at_injection);
  if (f->detected) {
    cJSON *d = cJSON_AddObjectToObject(o, "detected");
    cJSON_AddNumberToObject(d, "unix_ms", (double)f->detected_unix_ms);
    cJSON_AddNumberToObject(d, "after_ms", (double)(f->detected_unix_ms - f->injected_unix_ms));
    cJSON_AddStringToObject(d, "source", f->detect_source);
    add_str_or_null(d, "kind", f->detect_kind);
    add_str_or_null(d, "node", f->detect_node);
    add_num_or_null(d, "rank", f->detect_rank >= 0, f->detect_rank);
    add_str_or_null(d, "fault_id", f->fault_id);
    cJSON_AddBoolToObject(d, "culprit_ok", f->culprit_ok);
  } else {
    cJSON_AddNullToObject(o, "detected");
  }
  if (f->state == TG_CHAOS_RECOVERED) {
    cJSON *r = cJSON_AddObjectToObject(o, "recovered");
    cJSON_AddNumberToObject(r, "unix_ms", (double)f->recovered_unix_ms);
    cJSON_AddNumberToObject(r, "after_ms", (double)(f->recovered_unix_ms - f->injected_unix_ms));
  } else {
    cJSON_AddNullToObject(o, "recovered");
  }
  int rec = f->state == TG_CHAOS_RECOVERED;
  add_num_or_null(o, "generation_before", inj, (double)f->generation_before);
  add_num_or_null(o, "generation_after", rec, (double)f->generation_after);
  add_num_or_null(o, "world_size_before", inj, f->world_before);
  add_num_or_null(o, "world_size_after", rec, f->world_after);
  add_num_or_null(o, "last_step_before", rec, (double)f->last_step_before);
  add_num_or_null(o, "resume_step", f->resumed, (double)f->resume_step);
  add_num_or_null(o, "steps_lost", rec, (double)f->steps_lost);
  cJSON_AddBoolToObject(o, "resumed_from_disk", f->from_disk);
  add_num_or_null(o, "committed_steps_lost", f->resumed && f->committed_at_injection >= 0, (double)f->committed_lost);
  add_num_or_null(o, "library_reported_lost", f->lib_lost >= 0, (double)f->lib_lost);
  return o;
}

typedef struct {
  size_t injected, skipped, detected, recovered, not_recovered, culprits_ok;
  int64_t steps_lost, committed_lost;
  int64_t detect_sum, detect_max, recover_sum, recover_max;
  int passed, failed, not_checked;
} totals;

static totals count(const tg_chaos_result *res) {
  totals t;
  memset(&t, 0, sizeof t);
  for (size_t i = 0; i < res->n_faults; i++) {
    const tg_chaos_fault *f = &res->faults[i];
    t.injected += injected(f);
    t.skipped += f->state == TG_CHAOS_SKIPPED;
    t.not_recovered += f->state == TG_CHAOS_NOT_RECOVERED;
    if (f->detected) {
      int64_t ms = f->detected_unix_ms - f->injected_unix_ms;
      t.detected++;
      t.culprits_ok += f->culprit_ok;
      t.detect_sum += ms;
      if (ms > t.detect_max) t.detect_max = ms;
    }
    if (f->state == TG_CHAOS_RECOVERED) {
      int64_t ms = f->recovered_unix_ms - f->injected_unix_ms;
      t.recovered++;
      t.recover_sum += ms;
      if (ms > t.recover_max) t.recover_max = ms;
      t.steps_lost += f->steps_lost;
      t.committed_lost += f->committed_lost;
    }
  }
  for (int i = 0; res->invariants_checked && i < TG_CHAOS_INVARIANTS; i++) {
    if (res->invariants[i].not_checked) {
      t.not_checked++;
      continue;
    }
    t.passed += res->invariants[i].pass;
    t.failed += !res->invariants[i].pass;
  }
  return t;
}

static cJSON *totals_json(const tg_chaos_result *res) {
  totals t = count(res);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "faults", (double)res->n_faults);
  cJSON_AddNumberToObject(o, "injected", (double)t.injected);
  cJSON_AddNumberToObject(o, "skipped", (double)t.skipped);
  cJSON_AddNumberToObject(o, "detected", (double)t.detected);
  cJSON_AddNumberToObject(o, "culprit_named", (double)t.culprits_ok);
  cJSON_AddNumberToObject(o, "recovered", (double)t.recovered);
  cJSON_AddNumberToObject(o, "not_recovered", (double)t.not_recovered);
  cJSON_AddNumberToObject(o, "steps_lost", (double)t.steps_lost);
  cJSON_AddNumberToObject(o, "committed_steps_lost", (double)t.committed_lost);
  add_num_or_null(o, "detect_ms_mean", t.detected > 0, t.detected ? (double)t.detect_sum / (double)t.detected : 0);
  add_num_or_null(o, "detect_ms_max", t.detected > 0, (double)t.detect_max);
  add_num_or_null(o, "recover_ms_mean", t.recovered > 0, t.recovered ? (double)t.recover_sum / (double)t.recovered : 0);
  add_num_or_null(o, "recover_ms_max", t.recovered > 0, (double)t.recover_max);
  cJSON_AddNumberToObject(o, "generations", (double)res->generations);
  cJSON_AddNumberToObject(o, "final_generation", (double)res->final_generation);
  cJSON_AddNumberToObject(o, "final_world_size", res->final_world);
  cJSON_AddNumberToObject(o, "final_step", (double)res->final_step);
  cJSON_AddNumberToObject(o, "invariants_passed", t.passed);
  cJSON_AddNumberToObject(o, "invariants_failed", t.failed);
  cJSON_AddNumberToObject(o, "invariants_not_checked", t.not_checked);
  return o;
}

char *tg_chaos_report_json(const tg_chaos_result *res) {
  const tg_chaos_scenario *s = res->scenario;
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  cJSON_AddStringToObject(o, "tool", "tg-chaos");
  cJSON_AddNumberToObject(o, "report_version", 1);
  cJSON_AddStringToObject(o, "scenario", s->name);
  cJSON_AddStringToObject(o, "scenario_file", res->scenario_path);
  add_str_or_null(o, "description", s->description);
  cJSON_AddNumberToObject(o, "seed", (double)s->seed);
  cJSON_AddStringToObject(o, "job", res->job);
  cJSON_AddNumberToObject(o, "started_unix_ms", (double)res->started_unix_ms);
  add_num_or_null(o, "training_started_unix_ms", res->training_started_unix_ms > 0,
                  (double)res->training_started_unix_ms);
  cJSON_AddNumberToObject(o, "finished_unix_ms", (double)res->finished_unix_ms);
  cJSON_AddNumberToObject(o, "wall_ms", (double)(res->finished_unix_ms - res->started_unix_ms));
  if (res->attach[0]) {
    cJSON *a = cJSON_AddObjectToObject(o, "attach");
    cJSON_AddStringToObject(a, "coordinators", res->attach);
    cJSON *nodes = cJSON_AddArrayToObject(a, "nodes");
    for (int i = 0; i < res->n_attached_nodes; i++)
      cJSON_AddItemToArray(nodes, cJSON_CreateString(res->attached_nodes[i]));
    cJSON *ids = cJSON_AddArrayToObject(a, "coordinator_ids");
    for (int i = 0; i < res->n_attached_coordinators; i++)
      cJSON_AddItemToArray(ids, cJSON_CreateString(res->attached_coordinators[i]));
  } else {
    cJSON_AddNullToObject(o, "attach");
  }
  cJSON *c = cJSON_AddObjectToObject(o, "cluster");
  cJSON_AddNumberToObject(c, "agents", s->cluster.agents);
  cJSON_AddNumberToObject(c, "slots", s->cluster.slots);
  cJSON_AddNumberToObject(c, "spares", s->cluster.spares);
  cJSON_AddNumberToObject(c, "coordinators", s->cluster.coordinators);
  cJSON_AddNumberToObject(c, "min_nodes", s->cluster.min_nodes);
  cJSON_AddNumberToObject(c, "heartbeat_timeout_ms", (double)s->cluster.heartbeat_timeout_ms);
  cJSON_AddNumberToObject(c, "persist_every", (double)s->cluster.persist_every);
  cJSON_AddNumberToObject(c, "hang_floor_ms", (double)s->cluster.hang_floor_ms);
  cJSON_AddNumberToObject(c, "ckpt_mib", (double)s->cluster.ckpt_mib);
  add_num_or_null(c, "etcd_members", !res->attach[0], s->cluster.etcd_members);
  cJSON *t = cJSON_AddObjectToObject(o, "training");
  if (res->attach[0]) { /* the job's own: only its trainers' --steps is known */
    add_num_or_null(t, "steps", s->training.steps < TG_CHAOS_ATTACH_MAX_STEP, (double)s->training.steps);
  } else {
    cJSON_AddNumberToObject(t, "steps", (double)s->training.steps);
    cJSON_AddNumberToObject(t, "width", (double)s->training.width);
    cJSON_AddNumberToObject(t, "depth", (double)s->training.depth);
    cJSON_AddNumberToObject(t, "context", (double)s->training.context);
    cJSON_AddNumberToObject(t, "batch", (double)s->training.batch);
    cJSON_AddNumberToObject(t, "micro", (double)s->training.micro);
    cJSON_AddNumberToObject(t, "seed", (double)s->training.seed);
    add_str_or_null(t, "corpus", s->training.corpus);
    cJSON_AddStringToObject(t, "device", s->training.device);
    cJSON_AddStringToObject(t, "backend", s->training.backend);
  }
  cJSON *ref = cJSON_AddObjectToObject(o, "reference");
  cJSON_AddBoolToObject(ref, "ran", res->reference_ran);
  add_num_or_null(ref, "duration_ms", res->reference_ran, (double)res->reference_ms);
  add_str_or_null(ref, "params", res->reference_params);
  add_str_or_null(o, "error", res->error);
  cJSON_AddBoolToObject(o, "interrupted", res->interrupted);
  if (s->has_soak) {
    cJSON *soak = cJSON_AddObjectToObject(o, "soak");
    cJSON_AddNumberToObject(soak, "minutes", (double)s->soak_ms / 60000.0);
    cJSON_AddNumberToObject(soak, "every_steps", (double)s->soak_every_steps);
    cJSON *kinds = cJSON_AddArrayToObject(soak, "kinds");
    for (size_t i = 0; i < s->n_soak_kinds; i++)
      cJSON_AddItemToArray(kinds, cJSON_CreateString(tg_chaos_kind_name(s->soak_kinds[i])));
    int ran = res->soak_started_unix_ms > 0;
    add_num_or_null(soak, "started_unix_ms", ran, (double)res->soak_started_unix_ms);
    add_num_or_null(soak, "ran_ms", ran, (double)(res->soak_ended_unix_ms - res->soak_started_unix_ms));
    size_t drawn = 0;
    for (size_t i = 0; i < res->n_faults; i++) drawn += res->faults[i].soak;
    cJSON_AddNumberToObject(soak, "faults", (double)drawn);
  } else {
    cJSON_AddNullToObject(o, "soak");
  }
  cJSON *faults = cJSON_AddArrayToObject(o, "faults");
  for (size_t i = 0; i < res->n_faults; i++) cJSON_AddItemToArray(faults, fault_json(&res->faults[i], i));
  cJSON *invs = cJSON_AddArrayToObject(o, "invariants");
  for (int i = 0; res->invariants_checked && i < TG_CHAOS_INVARIANTS; i++) {
    cJSON *inv = cJSON_CreateObject();
    cJSON_AddStringToObject(inv, "name", res->invariants[i].name);
    if (res->invariants[i].not_checked)
      cJSON_AddNullToObject(inv, "pass");
    else
      cJSON_AddBoolToObject(inv, "pass", res->invariants[i].pass);
    cJSON_AddBoolToObject(inv, "checked", !res->invariants[i].not_checked);
    cJSON_AddStringToObject(inv, "detail", res->invariants[i].detail);
    cJSON_AddItemToArray(invs, inv);
  }
  cJSON_AddItemToObject(o, "totals", totals_json(res));
  add_str_or_null(o, "logs", res->logs_kept);
  cJSON_AddNumberToObject(o, "exit_code", res->exit_code);
  char *text = cJSON_Print(o);
  cJSON_Delete(o);
  return text;
}

/* ------------------------------------------------------------ the table */

static const char *ms_or_dash(int have, int64_t ms, char *buf, size_t len) {
  if (!have) return "-";
  snprintf(buf, len, "%lld", (long long)ms);
  return buf;
}

static void target_text(const tg_chaos_fault *f, char *buf, size_t len) {
  const char *node = f->node[0] ? f->node : f->spec.node[0] ? f->spec.node : "";
  if (f->node2[0])
    snprintf(buf, len, "%s+%s", f->node, f->node2);
  else if (f->coordinator[0])
    snprintf(buf, len, "%s", f->coordinator);
  else if (f->slot >= 0 && f->rank >= 0)
    snprintf(buf, len, "%s/%d r%d", node, f->slot, f->rank);
  else if (f->slot >= 0)
    snprintf(buf, len, "%s/%d", node, f->slot);
  else
    snprintf(buf, len, "%s", *node ? node : f->spec.random_target ? "random" : "-");
}

static void detected_text(const tg_chaos_fault *f, char *buf, size_t len) {
  if (!f->detected)
    snprintf(buf, len, "-");
  else if (strcmp(f->detect_source, "fault_log") == 0 && f->detect_rank >= 0)
    snprintf(buf, len, "%s %s r%d%s", f->detect_kind, f->detect_node, f->detect_rank, f->culprit_ok ? "" : " (!)");
  else if (strcmp(f->detect_source, "fault_log") == 0)
    snprintf(buf, len, "%s %s%s", f->detect_kind, f->detect_node, f->culprit_ok ? "" : " (!)");
  else if (strcmp(f->detect_source, "leader") == 0)
    snprintf(buf, len, "new leader %s", f->detect_node);
  else
    snprintf(buf, len, "new world");
}

void tg_chaos_report_table(const tg_chaos_result *res, FILE *out) {
  const tg_chaos_scenario *s = res->scenario;
  fprintf(out, "tg-chaos: scenario %s (seed %llu), job %s\n", s->name, (unsigned long long)s->seed, res->job);
  if (res->attach[0])
    fprintf(out, "attached: %s; %d agents here (%d spare(s) by --max-nodes) x %d slots, %d coordinator(s) here, "
            "min %d nodes\n", res->attach, res->n_attached_nodes, s->cluster.spares, s->cluster.slots,
            res->n_attached_coordinators, s->cluster.min_nodes);
  else
    fprintf(out, "cluster:  %d agents x %d slots, %d spare(s), %d coordinator(s), min %d nodes; %lld steps "
            "(width %lld, depth %lld)\n", s->cluster.agents, s->cluster.slots, s->cluster.spares,
            s->cluster.coordinators, s->cluster.min_nodes, (long long)s->training.steps, (long long)s->training.width,
            (long long)s->training.depth);
  if (res->error[0]) fprintf(out, "error:    %s\n", res->error);
  fprintf(out, "\n %3s  %-22s %-11s %5s  %-30s %7s %8s %5s %7s %7s  %s\n", "#", "kind", "target", "step", "detected as",
          "det ms", "recov ms", "lost", "world", "gen", "outcome");
  for (size_t i = 0; i < res->n_faults; i++) {
    const tg_chaos_fault *f = &res->faults[i];
    char target[64], det[96], dms[24], rms[24], lost[24], world[24], gen[48], step[24];
    target_text(f, target, sizeof target);
    detected_text(f, det, sizeof det);
    int inj = injected(f), rec = f->state == TG_CHAOS_RECOVERED;
    snprintf(step, sizeof step, "%lld", (long long)(inj ? f->step_at_injection : f->spec.at_step));
    if (!inj && f->spec.at_step < 0) snprintf(step, sizeof step, "-");
    if (rec) {
      snprintf(lost, sizeof lost, "%lld", (long long)f->steps_lost);
      snprintf(world, sizeof world, "%u->%u", f->world_before, f->world_after);
      snprintf(gen, sizeof gen, "%llu->%llu", (unsigned long long)f->generation_before,
               (unsigned long long)f->generation_after);
    } else if (inj) {
      snprintf(lost, sizeof lost, "-");
      snprintf(world, sizeof world, "%u->?", f->world_before);
      snprintf(gen, sizeof gen, "%llu->?", (unsigned long long)f->generation_before);
    } else {
      snprintf(lost, sizeof lost, "-");
      snprintf(world, sizeof world, "-");
      snprintf(gen, sizeof gen, "-");
    }
    fprintf(out, " %3zu  %-22s %-11s %5s  %-30s %7s %8s %5s %7s %7s  %s%s%s\n", i, tg_chaos_kind_name(f->spec.kind),
            target, step, det, ms_or_dash(f->detected, f->detected_unix_ms - f->injected_unix_ms, dms, sizeof dms),
            ms_or_dash(rec, f->recovered_unix_ms - f->injected_unix_ms, rms, sizeof rms), lost, world, gen,
            outcome(f->state), f->from_disk ? " (from disk)" : "", f->soak ? " (soak)" : "");
  }
  if (res->n_faults == 0) fprintf(out, "      (no faults)\n");
  int notes = 0;
  for (size_t i = 0; i < res->n_faults; i++)
    if (res->faults[i].note[0]) fprintf(out, "%s #%zu: %s\n", notes++ ? "" : "\nnotes:\n", i, res->faults[i].note);
  if (res->invariants_checked) {
    fprintf(out, "\ninvariants:\n");
    for (int i = 0; i < TG_CHAOS_INVARIANTS; i++)
      fprintf(out, "  %s  %-33s %s\n",
              res->invariants[i].not_checked ? "SKIP" : res->invariants[i].pass ? "PASS" : "FAIL",
              res->invariants[i].name,
              res->invariants[i].detail);
  }
  totals t = count(res);
  fprintf(out, "\ntotals:   %zu faults: %zu injected, %zu skipped, %zu detected (%zu naming the culprit), %zu recovered; "
          "%lld steps lost", res->n_faults, t.injected, t.skipped, t.detected, t.culprits_ok, t.recovered,
          (long long)t.steps_lost);
  if (t.detected) fprintf(out, "; detection mean %lld ms (max %lld)", (long long)(t.detect_sum / (int64_t)t.detected),
                          (long long)t.detect_max);
  if (t.recovered) fprintf(out, "; recovery mean %lld ms (max %lld)", (long long)(t.recover_sum / (int64_t)t.recovered),
                           (long long)t.recover_max);
  if (s->training.steps < TG_CHAOS_ATTACH_MAX_STEP)
    fprintf(out, "\n          %zu generations, final world %u ranks, final step %lld of %lld\n", res->generations,
            res->final_world, (long long)res->final_step, (long long)s->training.steps);
  else
    fprintf(out, "\n          %zu generations, final world %u ranks, final step %lld\n", res->generations,
            res->final_world, (long long)res->final_step);
  if (res->soak_started_unix_ms)
    fprintf(out, "soak:     %.1f of %.1f min\n", (double)(res->soak_ended_unix_ms - res->soak_started_unix_ms) / 60000.0,
            (double)s->soak_ms / 60000.0);
  const char *verdict = res->exit_code == 0 && t.not_checked ? "every invariant checked holds"
                        : res->exit_code == 0   ? "every invariant holds"
                        : res->exit_code == 1 ? "an invariant is violated"
                        : res->exit_code == 130 ? "stopped by a signal"
                                                : "the run could not be set up";
  fprintf(out, "result:   %s (exit %d)\n", verdict, res->exit_code);
}
