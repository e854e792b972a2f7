/* Simulated node agents; see simagent.h. A simulated agent is the real
 * agent's coordinator session (agent/session) with made-up heartbeat
 * contents: a health flag and a committed step the test sets. */
#include "tests/simagent/simagent.h"
#include "common/clock/clock.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/session/session.h"
#include "proto/tardigrade/v1/coordinator.pb-c.h"

struct tg_sim_agent {
  tg_session *session;
  pthread_mutex_t mu; /* guards the heartbeat contents */
  int healthy;
  uint64_t committed_step;
  Tardigrade__V1__HealthReport health; /* the session's thread reads it while sending */
  Tardigrade__V1__RankProgress progress, *progress_ptr; /* one rank's, once set */
  Tardigrade__V1__Fault active, *active_ptr;            /* one health fault, once set */
  char component[64];
};

int64_t tg_sim_mono_ms(void) { return tg_clock_mono_ms(); }

static void fill_heartbeat(Tardigrade__V1__HeartbeatRequest *hb, void *user) {
  tg_sim_agent *a = user;
  pthread_mutex_lock(&a->mu);
  tardigrade__v1__health_report__init(&a->health);
  a->health.healthy = a->healthy;
  hb->committed_step = a->committed_step;
  if (a->active_ptr) {
    a->health.n_active = 1;
    a->health.active = &a->active_ptr;
  }
  if (a->progress_ptr) {
    hb->n_progress = 1;
    hb->progress = &a->progress_ptr;
  }
  pthread_mutex_unlock(&a->mu);
  hb->health = &a->health;
}

tg_sim_agent *tg_sim_agent_start(const tg_sim_config *cfg, char *err, size_t errlen) {
  tg_sim_agent *a = calloc(1, sizeof *a);
  if (!a) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&a->mu, NULL);
  a->healthy = 1;
  char address[256];
  if (cfg->address)
    snprintf(address, sizeof address, "%s", cfg->address);
  else
    snprintf(address, sizeof address, "sim:%s", cfg->node_id);
  Tardigrade__V1__NodeInfo info = TARDIGRADE__V1__NODE_INFO__INIT;
  info.node_id = (char *)cfg->node_id;
  info.hostname = (char *)cfg->node_id;
  info.address = address;
  info.slots = cfg->slots ? cfg->slots : 1;
  info.agent_version = (char *)"simagent";
  tg_session_config sc = {.coordinators = cfg->coordinators,
                          .job_id = cfg->job_id,
                          .node = &info,
                          .fill_heartbeat = fill_heartbeat,
                          .user = a};
  a->session = tg_session_start(&sc, err, errlen);
  if (!a->session) {
    pthread_mutex_destroy(&a->mu);
    free(a);
    return NULL;
  }
  return a;
}

void tg_sim_agent_free(tg_sim_agent *a) {
  if (!a) return;
  tg_session_free(a->session);
  pthread_mutex_destroy(&a->mu);
  free(a);
}

void tg_sim_agent_silence(tg_sim_agent *a, int silent) { tg_session_silence(a->session, silent); }

void tg_sim_agent_set_healthy(tg_sim_agent *a, int healthy) {
  pthread_mutex_lock(&a->mu);
  a->healthy = healthy;
  pthread_mutex_unlock(&a->mu);
}

void tg_sim_agent_set_committed_step(tg_sim_agent *a, uint64_t step) {
  pthread_mutex_lock(&a->mu);
  a->committed_step = step;
  pthread_mutex_unlock(&a->mu);
}

void tg_sim_agent_set_progress(tg_sim_agent *a, int rank, uint64_t step, double loss) {
  pthread_mutex_lock(&a->mu);
  tardigrade__v1__rank_progress__init(&a->progress);
  a->progress.rank = rank;
  a->progress.step = step;
  a->progress.loss = loss;
  a->progress.step_time_ms = 10;
  a->progress_ptr = &a->progress;
  pthread_mutex_unlock(&a->mu);
}

void tg_sim_agent_set_health_fault(tg_sim_agent *a, int kind, int severity, const char *component) {
  pthread_mutex_lock(&a->mu);
  a->active_ptr = NULL;
  if (kind) {
    tardigrade__v1__fault__init(&a->active);
    a->active.kind = kind;
    a->active.severity = severity;
    snprintf(a->component, sizeof a->component, "%s", component);
    a->active.component = a->component;
    a->active.rank = -1;
    a->active_ptr = &a->active;
  }
  pthread_mutex_unlock(&a->mu);
}

tg_rpc_code tg_sim_agent_report_fault(tg_sim_agent *a, int kind, int severity, int rank,
                                      uint64_t generation, const char *detail, tg_rpc_status *st) {
  return tg_sim_agent_report_fault_since(a, kind, severity, rank, generation, detail, -1, st);
}

tg_rpc_code tg_sim_agent_report_fault_since(tg_sim_agent *a, int kind, int severity, int rank,
                                            uint64_t generation, const char *detail, int64_t since_ms,
                                            tg_rpc_status *st) {
  Tardigrade__V1__Fault f = TARDIGRADE__V1__FAULT__INIT;
  if (since_ms >= 0) {
    f.detected_unix_ms = tg_clock_unix_ms();
    f.occurred_unix_ms = f.detected_unix_ms - since_ms;
  }
  f.kind = kind;
  f.severity = severity;
  f.rank = rank;
  f.detail = (char *)(detail ? detail : "");
  return tg_session_report_fault(a->session, &f, generation, st);
}

tg_rpc_code tg_sim_agent_leave(tg_sim_agent *a, tg_rpc_status *st) {
  return tg_session_leave(a->session, "test: leaving", st);
}

void tg_sim_agent_state(tg_sim_agent *a, tg_sim_state *out) { tg_session_get_state(a->session, out); }

int tg_sim_agent_wait_generation(tg_sim_agent *a, uint64_t min_generation, int64_t timeout_ms) {
  return tg_session_wait_generation(a->session, min_generation, timeout_ms);
}

int tg_sim_agent_wait_registered(tg_sim_agent *a, int64_t timeout_ms) {
  return tg_session_wait_registered(a->session, timeout_ms);
}
