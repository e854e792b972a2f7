/* The agent's lifecycle and its glue: the coordinator session's callbacks
 * (a new world answers waiting trainers and resets the hang detector; each
 * heartbeat carries the node's health and its ranks' progress), the
 * monitor thread that runs the hang and straggler detector over the local
 * ranks, and fault reporting. The pieces themselves live in their own
 * modules: session/, progress/, supervisor/, health/, probe/. */
#include "agent/agent.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent_internal.h"
#include "common/log/log.h"

#define MONITOR_MS 100

int64_t tg_agent_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void tg_agent_config_defaults(tg_agent_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  snprintf(cfg->job_id, sizeof cfg->job_id, "default");
  snprintf(cfg->coordinators, sizeof cfg->coordinators, "127.0.0.1:7070");
  snprintf(cfg->listen, sizeof cfg->listen, "127.0.0.1:0");
  cfg->slots = 1;
  cfg->restart_max = 5;
  cfg->restart_window_ms = 600000;
  cfg->hang_factor = 10;
  cfg->hang_floor_ms = 2000;
  cfg->hang_ceiling_ms = 600000;
  cfg->straggler_percent = 150;
  cfg->probe_period_ms = 1000;
}

void tg_agent_report(tg_agent *a, int kind, int severity, int rank, const char *detail,
                     uint64_t collective_seq, const char *op) {
  Tardigrade__V1__Fault f = TARDIGRADE__V1__FAULT__INIT;
  f.kind = kind;
  f.severity = severity;
  f.rank = rank;
  f.detail = (char *)(detail ? detail : "");
  f.collective_seq = collective_seq;
  f.collective_op = (char *)(op ? op : "");
  f.detected_unix_ms = 0;
  const ProtobufCEnumValue *k = protobuf_c_enum_descriptor_get_value(&tardigrade__v1__fault_kind__descriptor, kind);
  TG_WARN("fault %s on rank %d: %s", k ? k->name : "?", rank, f.detail);
  tg_rpc_status st = {0};
  tg_rpc_code code = tg_session_report_fault(a->session, &f, 0, &st);
  if (code != TG_RPC_OK)
    TG_WARN("could not report it to the coordinator: %s: %s", tg_rpc_code_name(code), st.message);
}

/* ---------------------------------------------------------- session hooks */

static Tardigrade__V1__WorldUpdate *copy_update(const Tardigrade__V1__WorldUpdate *u) {
  size_t len = tardigrade__v1__world_update__get_packed_size(u);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) return NULL;
  tardigrade__v1__world_update__pack(u, buf);
  Tardigrade__V1__WorldUpdate *copy = tardigrade__v1__world_update__unpack(NULL, len, buf);
  free(buf);
  return copy;
}

static void on_world(const Tardigrade__V1__WorldUpdate *u, void *user) {
  tg_agent *a = user;
  Tardigrade__V1__WorldUpdate *copy = copy_update(u);
  if (!copy) return;
  TG_INFO("generation %" PRIu64 " (%s): %u ranks, this node %s", u->world->generation, u->world->reason,
          u->world->world_size, u->position >= 0 ? "holds ranks" : "is a spare");
  pthread_mutex_lock(&a->mu);
  if (a->update) tardigrade__v1__world_update__free_unpacked(a->update, NULL);
  a->update = copy;
  /* Ranks of the old world no longer count; trainers re-join. Every local
   * slot of the new world starts at collective 0, so a trainer that never
   * reports (it is stopped, or stuck before joining) is the one named. */
  tg_progress_reset(a->detector);
  for (int64_t s = 0; s < a->cfg.slots; s++) {
    a->slots[s].rank = -1;
    if (u->position < 0 || u->world->world_size == 0) continue;
    tg_progress_record start = {.rank = (int32_t)s, .updated_ms = tg_agent_mono_ms()};
    tg_progress_update(a->detector, &start);
  }
  tg_agent_answer_joins(a);
  pthread_cond_broadcast(&a->cv);
  pthread_mutex_unlock(&a->mu);
}

/* Runs on the session thread: the heartbeat carries the ranks' progress. */
static void fill_heartbeat(Tardigrade__V1__HeartbeatRequest *hb, void *user) {
  tg_agent *a = user;
  size_t n = 0;
  pthread_mutex_lock(&a->mu);
  for (int64_t s = 0; s < a->cfg.slots; s++) {
    if (!a->slots[s].has_progress || a->slots[s].rank < 0) continue;
    a->hb_progress[n] = a->slots[s].progress;
    a->hb_progress_ptrs[n] = &a->hb_progress[n];
    n++;
  }
  pthread_mutex_unlock(&a->mu);
  tardigrade__v1__health_report__init(&a->hb_health);
  a->hb_health.healthy = 1;
  hb->health = &a->hb_health;
  hb->n_progress = n;
  hb->progress = a->hb_progress_ptrs;
}

/* ----------------------------------------------------------- the monitor */

/* Every MONITOR_MS: run the hang and straggler detector over local ranks. */
static void *monitor_main(void *arg) {
  tg_agent *a = arg;
  pthread_mutex_lock(&a->mu);
  while (!a->stopping) {
    tg_progress_event ev[TG_AGENT_MAX_SLOTS];
    int n = tg_progress_evaluate(a->detector, tg_agent_mono_ms(), ev, TG_AGENT_MAX_SLOTS);
    int whole_world = a->update && a->update->world &&
                      (int64_t)a->update->world->world_size == a->cfg.slots;
    for (int i = 0; i < n; i++) {
      int slot = ev[i].rank;
      /* The slot's rank in the current world, joined or not. */
      int rank = slot >= 0 && slot < a->cfg.slots && a->update && a->update->position >= 0
                     ? a->update->position * (int)a->cfg.slots + slot
                     : -1;
      int hang = ev[i].kind == TG_PROGRESS_HANG;
      if (hang && slot < 0 && !whole_world) {
        /* Every local rank waits in the same collective: they are victims
         * of a rank elsewhere, whose agent names it. */
        TG_INFO("local ranks wait in collective %" PRIu64 " for a rank on another node", ev[i].seq);
        continue;
      }
      char detail[TG_PROGRESS_DETAIL_MAX + 64];
      snprintf(detail, sizeof detail, "%s%s", slot >= 0 ? "" : "culprit unknown: ", ev[i].detail);
      pthread_mutex_unlock(&a->mu);
      tg_agent_report(a,
                      hang ? TARDIGRADE__V1__FAULT_KIND__FAULT_HANG
                           : TARDIGRADE__V1__FAULT_KIND__FAULT_STRAGGLER,
                      hang ? TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR
                           : TARDIGRADE__V1__SEVERITY__SEVERITY_WARNING,
                      rank, detail, ev[i].seq, ev[i].op);
      pthread_mutex_lock(&a->mu);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += MONITOR_MS * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&a->cv, &a->mu, &ts);
  }
  pthread_mutex_unlock(&a->mu);
  return NULL;
}

/* ------------------------------------------------------------ lifecycle */

tg_agent *tg_agent_new(const tg_agent_config *cfg, char *err, size_t errlen) {
  if (cfg->slots < 1 || cfg->slots > TG_AGENT_MAX_SLOTS) {
    snprintf(err, errlen, "slots must be 1..%d", TG_AGENT_MAX_SLOTS);
    return NULL;
  }
  if (!cfg->node_id[0] || !cfg->socket_path[0]) {
    snprintf(err, errlen, "a node id and a socket path are required");
    return NULL;
  }
  if (strlen(cfg->socket_path) > 107) { /* sockaddr_un.sun_path */
    snprintf(err, errlen, "socket path is %zu bytes; unix sockets allow at most 107: choose a shorter one",
             strlen(cfg->socket_path));
    return NULL;
  }
  tg_agent *a = calloc(1, sizeof *a);
  if (!a) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  a->cfg = *cfg;
  pthread_mutex_init(&a->mu, NULL);
  pthread_cond_init(&a->cv, NULL);
  for (int i = 0; i < TG_AGENT_MAX_SLOTS; i++) a->slots[i].rank = -1;
  snprintf(a->advertise, sizeof a->advertise, "%s", cfg->advertise[0] ? cfg->advertise : cfg->listen);

  tg_progress_config pc = {.max_ranks = (int32_t)cfg->slots,
                           .hang_factor = (double)cfg->hang_factor,
                           .hang_floor_ms = cfg->hang_floor_ms,
                           .hang_ceiling_ms = cfg->hang_ceiling_ms,
                           .straggler_factor = (double)cfg->straggler_percent / 100.0,
                           .straggler_window_steps = 8,
                           .min_history_steps = 8};
  a->detector = tg_progress_new(&pc, err, errlen);
  if (!a->detector) goto fail;

  /* The trainers' socket: a stale file from a crashed agent is replaced. */
  char address[300];
  snprintf(address, sizeof address, "unix:%s", cfg->socket_path);
  unlink(cfg->socket_path);
  a->local = tg_rpc_server_new(NULL, err, errlen);
  if (!a->local || tg_agent_local_register(a, err, errlen) != 0 ||
      tg_rpc_server_listen(a->local, address, NULL, err, errlen) < 0)
    goto fail;
  return a;
fail:
  tg_agent_free(a);
  return NULL;
}

int tg_agent_start(tg_agent *a, char *err, size_t errlen) {
  if (tg_rpc_server_start(a->local, err, errlen) != 0) return -1;
  Tardigrade__V1__NodeInfo info = TARDIGRADE__V1__NODE_INFO__INIT;
  char hostname[256] = "";
  gethostname(hostname, sizeof hostname - 1);
  info.node_id = a->cfg.node_id;
  info.hostname = hostname;
  info.address = a->advertise;
  info.slots = (uint32_t)a->cfg.slots;
  info.agent_version = (char *)"tg-agent 0.1";
  tg_session_config sc = {.coordinators = a->cfg.coordinators,
                          .tls = a->cfg.coordinator_tls,
                          .job_id = a->cfg.job_id,
                          .node = &info,
                          .fill_heartbeat = fill_heartbeat,
                          .on_world = on_world,
                          .user = a};
  a->session = tg_session_start(&sc, err, errlen);
  if (!a->session) return -1;
  if (pthread_create(&a->monitor, NULL, monitor_main, a) != 0) {
    snprintf(err, errlen, "cannot start the monitor thread: %s", strerror(errno));
    return -1;
  }
  a->monitor_started = 1;
  TG_INFO("agent for node %s (job %s): trainers' socket %s, coordinators %s", a->cfg.node_id,
          a->cfg.job_id, a->cfg.socket_path, a->cfg.coordinators);
  return 0;
}

static void stop_threads(tg_agent *a) {
  pthread_mutex_lock(&a->mu);
  a->stopping = 1;
  tg_agent_end_joins(a, TG_RPC_UNAVAILABLE, "the agent is stopping");
  pthread_cond_broadcast(&a->cv);
  pthread_mutex_unlock(&a->mu);
  if (a->monitor_started) pthread_join(a->monitor, NULL);
  a->monitor_started = 0;
}

void tg_agent_drain(tg_agent *a) {
  stop_threads(a);
  if (a->session) {
    tg_rpc_status st = {0};
    tg_session_leave(a->session, "drained", &st);
  }
}

void tg_agent_free(tg_agent *a) {
  if (!a) return;
  stop_threads(a);
  if (a->session) tg_session_free(a->session);
  if (a->local) tg_rpc_server_free(a->local, 1000);
  if (a->cfg.socket_path[0]) unlink(a->cfg.socket_path);
  tg_progress_free(a->detector);
  if (a->update) tardigrade__v1__world_update__free_unpacked(a->update, NULL);
  pthread_mutex_destroy(&a->mu);
  pthread_cond_destroy(&a->cv);
  free(a);
}
