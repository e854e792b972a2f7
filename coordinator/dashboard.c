/* What operators see over HTTP: Prometheus metrics, the JSON API and the
 * live dashboard page, rendered from the coordinator's state and handed
 * to the HTTP server (httpd.h), which serves them on threads of its own.
 *
 * The ticker calls tg_dash_tick every round. With mu held it resolves
 * recoveries and builds each document (cJSON trees and the metrics text);
 * it then drops mu to print and publish them, at most every PUBLISH_MS, or
 * sooner (MIN_GAP_MS) after a fault or a new world, so a browser sees a
 * fault within a fraction of a second. The page itself is a single HTML
 * file embedded in the binary at build time (dashboard.html).
 *
 * What the coordinator measures here, beyond the job's state:
 *   - detection time of a fault: when its agent detected it minus when it
 *     occurred as the agent knows it (both on the agent's clock), e.g. the
 *     last progress of a hung rank; unknown when the agent gave no time;
 *   - recovery time of a fault that interrupted training (ERROR or FATAL,
 *     about a rank or a node holding ranks): from when it occurred to the
 *     first step committed in a world formed after it. Written into the
 *     fault's record in etcd, so it outlives this leader;
 *   - goodput: wall time since the first committed step this leader saw,
 *     less the time training stood interrupted (from an interrupting
 *     fault to training resumed, overlapping faults counted once), over
 *     that wall time.
 * Histograms, goodput and the world history live in this process: a new
 * leader starts them afresh. */
#include "coordinator/coordinator_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/clock/clock.h"
#include "common/log/log.h"
#include "coordinator/names.h"

#define PUBLISH_MS 500
#define STANDBY_PUBLISH_MS 1000
/* The node list of a large job (a few hundred bytes a node) is rendered
 * and pushed less often, unless a fault or a world made it dirty. */
#define LARGE_JOB_NODES 256
#define LARGE_NODES_PUBLISH_MS 5000
#define MIN_GAP_MS 50
#define FAULTS_SHOWN 200

/* The page, embedded by the genrule in BUILD.bazel. */
extern const unsigned char tg_dashboard_html[];
extern const unsigned long tg_dashboard_html_len;

enum { DOC_PAGE, DOC_METRICS, DOC_STATE, DOC_NODES, DOC_FAULTS, DOC_GENERATIONS, N_DOCS };

static const tg_httpd_doc docs[N_DOCS] = {
    [DOC_PAGE] = {"/", "text/html; charset=utf-8", NULL},
    [DOC_METRICS] = {"/metrics", "text/plain; version=0.0.4; charset=utf-8", NULL},
    [DOC_STATE] = {"/api/v1/state", "application/json", "state"},
    [DOC_NODES] = {"/api/v1/nodes", "application/json", "nodes"},
    [DOC_FAULTS] = {"/api/v1/faults", "application/json", "faults"},
    [DOC_GENERATIONS] = {"/api/v1/generations", "application/json", "generations"},
};

/* ------------------------------------------------------------- names */

/* Lower case, for metric labels. */
static void lower(char *out, size_t len, const char *in) {
  size_t i = 0;
  for (; in[i] && i + 1 < len; i++) out[i] = (char)(in[i] >= 'A' && in[i] <= 'Z' ? in[i] + 32 : in[i]);
  out[i] = '\0';
}

/* ----------------------------------------------------- health per node */

static int gpu_kind(int kind) {
  return kind >= TARDIGRADE__V1__FAULT_KIND__FAULT_GPU_XID && kind <= TARDIGRADE__V1__FAULT_KIND__FAULT_GPU_LOST;
}
static int nic_kind(int kind) {
  return kind >= TARDIGRADE__V1__FAULT_KIND__FAULT_NIC_DOWN && kind <= TARDIGRADE__V1__FAULT_KIND__FAULT_NIC_ERRORS;
}

void tg_dash_node_health(tg_node *n, const Tardigrade__V1__HealthReport *h) {
  n->n_health_faults = 0;
  for (size_t i = 0; i < h->n_active && n->n_health_faults < TG_HEALTH_FAULTS; i++) {
    const Tardigrade__V1__Fault *f = h->active[i];
    if (!f || !(gpu_kind(f->kind) || nic_kind(f->kind)) ||
        f->severity < TARDIGRADE__V1__SEVERITY__SEVERITY_INFO ||
        f->severity > TARDIGRADE__V1__SEVERITY__SEVERITY_FATAL || !f->component ||
        strlen(f->component) >= TG_COMPONENT_MAX)
      continue;
    tg_health_item *it = &n->health_faults[n->n_health_faults++];
    it->kind = f->kind;
    it->severity = f->severity;
    snprintf(it->component, sizeof it->component, "%s", f->component);
  }
}

/* "ok", or the worst severity among the node's active faults of a class. */
static const char *class_status(const tg_node *n, int (*is_class)(int)) {
  int worst = 0;
  for (size_t i = 0; i < n->n_health_faults; i++)
    if (is_class(n->health_faults[i].kind) && n->health_faults[i].severity > worst)
      worst = n->health_faults[i].severity;
  return worst ? tg_severity_name(worst) : "OK";
}

/* ------------------------------------------------------------- hooks */

static void entry_of(const Tardigrade__V1__World *w, tg_generation_entry *e) {
  memset(e, 0, sizeof *e);
  e->generation = w->generation;
  e->world_size = w->world_size;
  e->n_nodes = (uint32_t)w->n_nodes;
  e->resume_step = w->resume_step;
  e->formed_unix_ms = w->formed_unix_ms;
  snprintf(e->reason, sizeof e->reason, "%s", w->reason ? w->reason : "");
}

static void append_generation(tg_dash_state *d, const Tardigrade__V1__World *w) {
  entry_of(w, &d->generations[d->gen_head % TG_GENERATION_LOG]);
  d->gen_head++;
  if (d->n_generations < TG_GENERATION_LOG) d->n_generations++;
  d->dirty = 1;
}

void tg_dash_world_formed(tg_coord *c, const Tardigrade__V1__World *w) {
  append_generation(&c->dash, w);
  c->dash.worlds_formed++;
}

/* The history starts again with the world this leader found in etcd. */
void tg_dash_taken_over(tg_coord *c) {
  tg_dash_state *d = &c->dash;
  d->gen_head = d->n_generations = 0;
  d->n_pending = 0;
  d->goodput_start_unix_ms = d->down_ms = d->down_since_unix_ms = 0;
  d->last_committed = c->committed_step;
  if (c->world) append_generation(d, c->world);
  d->dirty = 1;
}

static int64_t fault_since(const Tardigrade__V1__Fault *f) {
  return f->occurred_unix_ms > 0 ? f->occurred_unix_ms : f->detected_unix_ms;
}

void tg_dash_fault_recorded(tg_coord *c, const Tardigrade__V1__Fault *f, int interrupts) {
  tg_dash_state *d = &c->dash;
  if (f->kind >= 0 && f->kind < 32 && f->severity >= 0 && f->severity < 5) d->faults_by_kind[f->kind][f->severity]++;
  if (f->occurred_unix_ms > 0 && f->detected_unix_ms >= f->occurred_unix_ms)
    tg_histogram_observe(&d->detection, (double)(f->detected_unix_ms - f->occurred_unix_ms) / 1000.0);
  d->dirty = 1;
  if (!interrupts) return;
  if (d->n_pending == TG_PENDING_RECOVERIES) { /* the oldest goes unmeasured */
    memmove(d->pending, d->pending + 1, (TG_PENDING_RECOVERIES - 1) * sizeof *d->pending);
    d->n_pending--;
  }
  tg_pending_recovery *p = &d->pending[d->n_pending++];
  snprintf(p->fault_id, sizeof p->fault_id, "%s", f->fault_id);
  p->generation = c->generation;
  p->since_unix_ms = fault_since(f);
  if (d->goodput_start_unix_ms && !d->down_since_unix_ms) {
    /* Down from when it occurred, but never before training was seen up. */
    int64_t since = p->since_unix_ms, now = tg_clock_unix_ms();
    d->down_since_unix_ms = since < d->goodput_start_unix_ms ? d->goodput_start_unix_ms : since > now ? now : since;
  }
}

static Tardigrade__V1__Fault *find_fault(tg_coord *c, const char *id) {
  for (size_t k = 0; k < c->n_faults; k++) {
    Tardigrade__V1__Fault *f = c->faults[(c->faults_head - 1 - k) % TG_FAULT_LOG];
    if (f && strcmp(f->fault_id, id) == 0) return f;
  }
  return NULL;
}

/* Training resumed once a step is committed in a world formed after a
 * pending fault: each such fault gets its recovery time (mu held). */
static void resolve_recoveries(tg_coord *c) {
  tg_dash_state *d = &c->dash;
  uint64_t committed = tg_coord_committed(c);
  int64_t now = tg_clock_unix_ms();
  if (committed > d->last_committed && !d->goodput_start_unix_ms) d->goodput_start_unix_ms = now;
  d->last_committed = committed;
  if (!d->n_pending || !c->world || c->world->n_nodes == 0 || committed <= c->world->resume_step) return;
  size_t kept = 0, before = d->n_pending;
  for (size_t i = 0; i < d->n_pending; i++) {
    tg_pending_recovery *p = &d->pending[i];
    if (p->generation >= c->world->generation) {
      d->pending[kept++] = *p;
      continue;
    }
    tg_histogram_observe(&d->recovery, (double)(now - p->since_unix_ms) / 1000.0);
    Tardigrade__V1__Fault *f = find_fault(c, p->fault_id);
    if (f) {
      f->recovered_unix_ms = now;
      tg_coord_save_fault(c, f);
    }
  }
  d->n_pending = kept;
  if (!kept && d->down_since_unix_ms) {
    d->down_ms += now - d->down_since_unix_ms;
    d->down_since_unix_ms = 0;
  }
  if (kept < before) d->dirty = 1;
}

/* ------------------------------------------------------------- JSON */

static void add_int(cJSON *o, const char *k, int64_t v) { cJSON_AddNumberToObject(o, k, (double)v); }

static void add_number_or_null(cJSON *o, const char *k, double v, int known) {
  if (known && isfinite(v)) cJSON_AddNumberToObject(o, k, v);
  else cJSON_AddNullToObject(o, k);
}

/* The newest step a rank of the node reported, and that rank's loss. */
static const Tardigrade__V1__RankProgress *newest_progress(const tg_node *n) {
  const Tardigrade__V1__RankProgress *best = NULL;
  for (size_t i = 0; i < n->n_progress; i++)
    if (!best || n->progress[i].step > best->step ||
        (n->progress[i].step == best->step && n->progress[i].rank < best->rank))
      best = &n->progress[i];
  return best;
}

static double goodput_ratio(const tg_dash_state *d, int64_t now, double *wall_s, double *down_s) {
  *wall_s = d->goodput_start_unix_ms ? (double)(now - d->goodput_start_unix_ms) / 1000.0 : 0;
  *down_s = (double)(d->down_ms + (d->down_since_unix_ms ? now - d->down_since_unix_ms : 0)) / 1000.0;
  if (*wall_s <= 0) return NAN;
  double r = (*wall_s - *down_s) / *wall_s;
  return r < 0 ? 0 : r > 1 ? 1 : r;
}

/* What a world and an entry of the world history share. */
static cJSON *entry_json(const tg_generation_entry *e) {
  cJSON *o = cJSON_CreateObject();
  add_int(o, "generation", (int64_t)e->generation);
  add_int(o, "world_size", e->world_size);
  add_int(o, "resume_step", (int64_t)e->resume_step);
  add_int(o, "formed_unix_ms", e->formed_unix_ms);
  cJSON_AddStringToObject(o, "reason", e->reason);
  return o;
}

static cJSON *world_json(const Tardigrade__V1__World *w) {
  tg_generation_entry e;
  entry_of(w, &e);
  cJSON *o = entry_json(&e);
  add_int(o, "slots_per_node", w->slots_per_node);
  cJSON *nodes = cJSON_AddArrayToObject(o, "nodes");
  for (size_t i = 0; i < w->n_nodes; i++) cJSON_AddItemToArray(nodes, cJSON_CreateString(w->nodes[i]->node_id));
  return o;
}

static cJSON *state_json(tg_coord *c, int64_t now) {
  tg_dash_state *d = &c->dash;
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "role", c->leader ? "leader" : "standby");
  cJSON_AddStringToObject(o, "coordinator_id", c->cfg.coordinator_id);
  cJSON_AddStringToObject(o, "job_id", c->cfg.job_id);
  add_int(o, "now_unix_ms", now);
  cJSON *leader = cJSON_AddObjectToObject(o, "leader");
  cJSON_AddStringToObject(leader, "id", c->leader_id);
  cJSON_AddStringToObject(leader, "address", c->leader_hint);
  cJSON_AddStringToObject(leader, "http_address", c->leader_http);
  int lead = c->leader;
  if (lead && c->world) cJSON_AddItemToObject(o, "world", world_json(c->world));
  else cJSON_AddNullToObject(o, "world");
  add_int(o, "committed_step", lead ? (int64_t)tg_coord_committed(c) : 0);

  /* Step and loss: the newest step any rank of the world reported; loss
   * from the lowest rank at that step. */
  const Tardigrade__V1__RankProgress *best = NULL;
  cJSON *counts = cJSON_CreateObject();
  size_t by_state[16] = {0};
  for (size_t i = 0; lead && i < c->n_nodes; i++) {
    tg_node *n = c->nodes[i];
    int s = tg_coord_node_state(c, n);
    if (s >= 0 && s < 16) by_state[s]++;
    const Tardigrade__V1__RankProgress *p = n->position >= 0 ? newest_progress(n) : NULL;
    if (p && (!best || p->step > best->step || (p->step == best->step && p->rank < best->rank))) best = p;
  }
  for (int s = TARDIGRADE__V1__NODE_STATE__NODE_JOINING; s <= TARDIGRADE__V1__NODE_STATE__NODE_LEFT; s++)
    add_int(counts, tg_node_state_name(s), (int64_t)by_state[s]);
  add_int(o, "step", best ? (int64_t)best->step : 0);
  add_number_or_null(o, "loss", best ? best->loss : 0, best != NULL);
  cJSON_AddItemToObject(o, "nodes", counts);
  add_int(o, "nodes_total", lead ? (int64_t)c->n_nodes : 0);
  double wall_s, down_s, ratio = goodput_ratio(d, now, &wall_s, &down_s);
  cJSON *g = cJSON_AddObjectToObject(o, "goodput");
  add_number_or_null(g, "ratio", ratio, lead);
  cJSON_AddNumberToObject(g, "wall_seconds", lead ? wall_s : 0);
  cJSON_AddNumberToObject(g, "down_seconds", lead ? down_s : 0);
  cJSON_AddBoolToObject(o, "recovering", lead && d->n_pending > 0);
  return o;
}

static cJSON *node_json(tg_coord *c, const tg_node *n, int64_t mono, int64_t unix_now) {
  cJSON *o = cJSON_CreateObject();
  const Tardigrade__V1__NodeInfo *info = n->info;
  cJSON_AddStringToObject(o, "id", n->id);
  cJSON_AddStringToObject(o, "hostname", info && info->hostname ? info->hostname : "");
  cJSON_AddStringToObject(o, "address", info && info->address ? info->address : "");
  cJSON_AddStringToObject(o, "state", tg_node_state_name(tg_coord_node_state(c, n)));
  add_int(o, "position", n->position);
  cJSON_AddBoolToObject(o, "healthy", n->healthy);
  add_int(o, "last_heartbeat_unix_ms", unix_now - (mono - n->last_heartbeat_ms));
  add_int(o, "fault_count", n->fault_count);
  add_int(o, "quarantined_until_unix_ms", n->quarantined_until_unix_ms);
  add_int(o, "committed_step", (int64_t)n->committed_step);
  const Tardigrade__V1__RankProgress *p = newest_progress(n);
  add_int(o, "step", p ? (int64_t)p->step : 0);
  add_number_or_null(o, "loss", p ? p->loss : 0, p != NULL);
  cJSON *gpu = cJSON_AddObjectToObject(o, "gpu");
  add_int(gpu, "count", info ? (int64_t)info->n_gpus : 0);
  cJSON_AddStringToObject(gpu, "status", class_status(n, gpu_kind));
  cJSON *nic = cJSON_AddObjectToObject(o, "nic");
  add_int(nic, "count", info ? (int64_t)info->n_nics : 0);
  cJSON_AddStringToObject(nic, "status", class_status(n, nic_kind));
  cJSON *hf = cJSON_AddArrayToObject(o, "health_faults");
  for (size_t i = 0; i < n->n_health_faults; i++) {
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "kind", tg_fault_kind_name(n->health_faults[i].kind));
    cJSON_AddStringToObject(f, "severity", tg_severity_name(n->health_faults[i].severity));
    cJSON_AddStringToObject(f, "component", n->health_faults[i].component);
    cJSON_AddItemToArray(hf, f);
  }
  cJSON *ranks = cJSON_AddArrayToObject(o, "ranks");
  for (size_t i = 0; i < n->n_progress; i++) {
    cJSON *r = cJSON_CreateObject();
    add_int(r, "rank", n->progress[i].rank);
    add_int(r, "step", (int64_t)n->progress[i].step);
    add_number_or_null(r, "loss", n->progress[i].loss, 1);
    add_int(r, "step_time_ms", n->progress[i].step_time_ms);
    cJSON_AddItemToArray(ranks, r);
  }
  return o;
}

static cJSON *nodes_json(tg_coord *c) {
  cJSON *o = cJSON_CreateObject();
  cJSON *list = cJSON_AddArrayToObject(o, "nodes");
  int64_t mono = tg_clock_mono_ms(), unix_now = tg_clock_unix_ms();
  for (size_t i = 0; c->leader && i < c->n_nodes; i++)
    cJSON_AddItemToArray(list, node_json(c, c->nodes[i], mono, unix_now));
  return o;
}

static cJSON *fault_json(const Tardigrade__V1__Fault *f) {
  cJSON *o = cJSON_CreateObject();
  char culprit[TG_NODE_ID_MAX + 32];
  if (f->rank >= 0) snprintf(culprit, sizeof culprit, "%s rank %d", f->node_id, f->rank);
  else if (f->component && f->component[0]) snprintf(culprit, sizeof culprit, "%s %s", f->node_id, f->component);
  else snprintf(culprit, sizeof culprit, "%s", f->node_id);
  cJSON_AddStringToObject(o, "id", f->fault_id);
  cJSON_AddStringToObject(o, "kind", tg_fault_kind_name(f->kind));
  cJSON_AddStringToObject(o, "severity", tg_severity_name(f->severity));
  cJSON_AddStringToObject(o, "node_id", f->node_id);
  add_int(o, "rank", f->rank);
  cJSON_AddStringToObject(o, "culprit", culprit);
  add_int(o, "generation", (int64_t)f->generation);
  cJSON_AddStringToObject(o, "detail", f->detail);
  add_int(o, "occurred_unix_ms", f->occurred_unix_ms);
  add_int(o, "detected_unix_ms", f->detected_unix_ms);
  add_number_or_null(o, "detection_ms", (double)(f->detected_unix_ms - f->occurred_unix_ms),
                     f->occurred_unix_ms > 0 && f->detected_unix_ms >= f->occurred_unix_ms);
  add_int(o, "recovered_unix_ms", f->recovered_unix_ms);
  add_number_or_null(o, "recovery_ms", (double)(f->recovered_unix_ms - fault_since(f)),
                     f->recovered_unix_ms > 0 && f->recovered_unix_ms >= fault_since(f));
  add_int(o, "collective_seq", (int64_t)f->collective_seq);
  cJSON_AddStringToObject(o, "collective_op", f->collective_op);
  add_int(o, "exit_code", f->exit_code);
  add_int(o, "signal", f->signal);
  cJSON_AddStringToObject(o, "component", f->component);
  return o;
}

static cJSON *faults_json(tg_coord *c) {
  cJSON *o = cJSON_CreateObject();
  cJSON *list = cJSON_AddArrayToObject(o, "faults");
  for (size_t k = 0; c->leader && k < c->n_faults && k < FAULTS_SHOWN; k++) {
    const Tardigrade__V1__Fault *f = c->faults[(c->faults_head - 1 - k) % TG_FAULT_LOG];
    if (f) cJSON_AddItemToArray(list, fault_json(f));
  }
  return o;
}

static cJSON *generations_json(tg_coord *c) {
  tg_dash_state *d = &c->dash;
  cJSON *o = cJSON_CreateObject();
  cJSON *list = cJSON_AddArrayToObject(o, "generations");
  for (size_t k = d->n_generations; c->leader && k > 0; k--) {
    const tg_generation_entry *e = &d->generations[(d->gen_head - k) % TG_GENERATION_LOG];
    cJSON *g = entry_json(e);
    add_int(g, "nodes", e->n_nodes);
    cJSON_AddItemToArray(list, g);
  }
  return o;
}

/* ---------------------------------------------------------- metrics */

static void gauge(tg_text *t, const char *name, const char *help, double v) {
  tg_prom_family(t, name, "gauge", help);
  tg_prom_sample(t, name, NULL, v);
}

static void metrics_text(tg_coord *c, tg_text *t, int64_t now) {
  tg_dash_state *d = &c->dash;
  gauge(t, "tardigrade_coordinator_leader", "1 when this coordinator leads the job, 0 on a standby",
        c->leader);
  if (!c->leader) return; /* the job's figures come from its leader only */
  const Tardigrade__V1__World *w = c->world;
  gauge(t, "tardigrade_world_size", "ranks in the current world (0: none or suspended)", w ? w->world_size : 0);
  gauge(t, "tardigrade_world_nodes", "nodes in the current world", w ? (double)w->n_nodes : 0);
  gauge(t, "tardigrade_generation", "generation of the current world", w ? (double)w->generation : 0);
  tg_prom_family(t, "tardigrade_worlds_formed_total", "counter", "worlds this coordinator formed as leader");
  tg_prom_sample(t, "tardigrade_worlds_formed_total", NULL, (double)d->worlds_formed);
  gauge(t, "tardigrade_committed_step", "newest step whose shards are all on two nodes",
        (double)tg_coord_committed(c));

  size_t by_state[16] = {0};
  const Tardigrade__V1__RankProgress *best = NULL;
  size_t degraded_gpu = 0, degraded_nic = 0;
  for (size_t i = 0; i < c->n_nodes; i++) {
    tg_node *n = c->nodes[i];
    int s = tg_coord_node_state(c, n);
    if (s >= 0 && s < 16) by_state[s]++;
    const Tardigrade__V1__RankProgress *p = n->position >= 0 ? newest_progress(n) : NULL;
    if (p && (!best || p->step > best->step || (p->step == best->step && p->rank < best->rank))) best = p;
    degraded_gpu += strcmp(class_status(n, gpu_kind), "OK") != 0;
    degraded_nic += strcmp(class_status(n, nic_kind), "OK") != 0;
  }
  gauge(t, "tardigrade_step", "newest training step a rank of the world reported", best ? (double)best->step : 0);
  if (best && isfinite(best->loss)) gauge(t, "tardigrade_loss", "training loss at that step", best->loss);

  tg_prom_family(t, "tardigrade_nodes", "gauge", "registered nodes by state");
  for (int s = TARDIGRADE__V1__NODE_STATE__NODE_JOINING; s <= TARDIGRADE__V1__NODE_STATE__NODE_LEFT; s++) {
    char name[32];
    lower(name, sizeof name, tg_node_state_name(s));
    const char *labels[] = {"state", name, NULL};
    tg_prom_sample(t, "tardigrade_nodes", labels, (double)by_state[s]);
  }
  tg_prom_family(t, "tardigrade_nodes_degraded", "gauge", "nodes with an active GPU or NIC fault");
  const char *gpu_l[] = {"component", "gpu", NULL}, *nic_l[] = {"component", "nic", NULL};
  tg_prom_sample(t, "tardigrade_nodes_degraded", gpu_l, (double)degraded_gpu);
  tg_prom_sample(t, "tardigrade_nodes_degraded", nic_l, (double)degraded_nic);

  tg_prom_family(t, "tardigrade_faults_total", "counter", "faults recorded by this coordinator, by kind and severity");
  for (int k = 1; k < 32; k++) {
    for (int s = 1; s < 5; s++) {
      if (!d->faults_by_kind[k][s]) continue;
      char kind[40], sev[16];
      lower(kind, sizeof kind, tg_fault_kind_name(k));
      lower(sev, sizeof sev, tg_severity_name(s));
      const char *labels[] = {"kind", kind, "severity", sev, NULL};
      tg_prom_sample(t, "tardigrade_faults_total", labels, (double)d->faults_by_kind[k][s]);
    }
  }
  tg_prom_family(t, "tardigrade_fault_detection_seconds", "histogram",
                 "from a fault occurring to its agent detecting it");
  tg_prom_histogram(t, "tardigrade_fault_detection_seconds", &d->detection);
  tg_prom_family(t, "tardigrade_fault_recovery_seconds", "histogram",
                 "from a fault occurring to the first step committed in a new world");
  tg_prom_histogram(t, "tardigrade_fault_recovery_seconds", &d->recovery);
  gauge(t, "tardigrade_recovering", "1 while a fault has interrupted training", d->n_pending > 0);

  double wall_s, down_s, ratio = goodput_ratio(d, now, &wall_s, &down_s);
  if (!isnan(ratio)) gauge(t, "tardigrade_goodput_ratio", "useful training time over wall time", ratio);
  gauge(t, "tardigrade_goodput_wall_seconds", "wall time since training was first seen by this leader", wall_s);
  tg_prom_family(t, "tardigrade_downtime_seconds_total", "counter", "time training stood interrupted by faults");
  tg_prom_sample(t, "tardigrade_downtime_seconds_total", NULL, down_s);
}

/* ---------------------------------------------------------- publish */

/* Prints and publishes o (NULL: nothing to publish) and frees it. */
static void publish_json(tg_httpd *h, size_t doc, cJSON *o) {
  char *s = o ? cJSON_PrintUnformatted(o) : NULL;
  if (s) tg_httpd_publish(h, doc, s, strlen(s));
  free(s);
  cJSON_Delete(o);
}

void tg_dash_tick(tg_coord *c) {
  tg_dash_state *d = &c->dash;
  if (c->leader) resolve_recoveries(c);
  if (!d->httpd) return;
  int64_t mono = tg_clock_mono_ms(), since = mono - d->last_publish_ms;
  int64_t period = c->leader ? PUBLISH_MS : STANDBY_PUBLISH_MS;
  if (d->last_publish_ms && since < period && !(d->dirty && since >= MIN_GAP_MS)) return;
  int nodes_due = c->n_nodes <= LARGE_JOB_NODES || d->dirty ||
                  mono - d->last_nodes_publish_ms >= LARGE_NODES_PUBLISH_MS;
  d->last_publish_ms = mono;
  if (nodes_due) d->last_nodes_publish_ms = mono;
  d->dirty = 0;
  int64_t now = tg_clock_unix_ms();
  cJSON *state = state_json(c, now), *nodes = nodes_due ? nodes_json(c) : NULL, *faults = faults_json(c);
  cJSON *gens = generations_json(c);
  tg_text metrics = {0};
  metrics_text(c, &metrics, now);
  tg_httpd *h = d->httpd;
  pthread_mutex_unlock(&c->mu);
  /* Faults first, so a browser never sees a world without its cause. */
  publish_json(h, DOC_FAULTS, faults);
  publish_json(h, DOC_GENERATIONS, gens);
  publish_json(h, DOC_NODES, nodes);
  publish_json(h, DOC_STATE, state);
  if (!metrics.failed) tg_httpd_publish(h, DOC_METRICS, metrics.buf, metrics.len);
  tg_text_free(&metrics);
  pthread_mutex_lock(&c->mu);
}

/* ---------------------------------------------------------- lifecycle */

int tg_dash_start(tg_coord *c, char *err, size_t errlen) {
  const char *listen = c->cfg.http_listen;
  if (!listen[0] || strcmp(listen, "off") == 0) return 0;
  tg_httpd_config hc = {.listen = listen, .docs = docs, .n_docs = N_DOCS, .events_path = "/api/v1/events"};
  c->dash.httpd = tg_httpd_start(&hc, err, errlen);
  if (!c->dash.httpd) return -1;
  int port = tg_httpd_port(c->dash.httpd);
  const char *colon = strrchr(listen, ':');
  snprintf(c->dash.http_address, sizeof c->dash.http_address, "%.*s:%d", (int)(colon - listen), listen, port);
  tg_httpd_publish(c->dash.httpd, DOC_PAGE, (const char *)tg_dashboard_html, tg_dashboard_html_len);
  TG_INFO("dashboard on http://%s/ (metrics at /metrics, API under /api/v1/)", c->dash.http_address);
  return 0;
}

void tg_dash_stop(tg_coord *c) {
  tg_httpd_free(c->dash.httpd);
  c->dash.httpd = NULL;
}
