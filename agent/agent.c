/* The agent's lifecycle and its glue: the coordinator session's callbacks
 * (a new world answers waiting trainers, resets the hang detector and
 * points replication at the new buddy; each heartbeat carries the node's
 * health, its ranks' progress and its committed step), the monitor thread
 * that runs the hang and straggler detector over the local ranks, and
 * fault reporting. The node's checkpoint store is sized and opened here,
 * and served to buddy agents on the peer port next to the probes. The
 * pieces themselves live in their own modules: session/, progress/,
 * supervisor/, health/, probe/, ckpt/ and replicator.c. */
#include "agent/agent.h"
#include "common/clock/clock.h"

#include <errno.h>
#include <signal.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent_internal.h"
#include "agent/health/gpu_fake.h"
#include "common/log/log.h"

#define MONITOR_MS 100
/* A trainer whose alive counter stood still this long is stopped. */
#define ALIVE_STALL_MS 1000
/* Newest committed steps the store keeps per shard. */
#define CKPT_KEEP_STEPS 4
/* A push to a buddy that takes longer than this is given up and retried. */
#define PUSH_DEADLINE_MS 5000


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
  cfg->health_period_ms = 2000;
  cfg->ckpt_mib = 256;
  cfg->persist_every = 50;
}

void tg_agent_report(tg_agent *a, int kind, int severity, int rank, const char *detail,
                     uint64_t collective_seq, const char *op, const char *component, int64_t since_ms) {
  Tardigrade__V1__Fault f = TARDIGRADE__V1__FAULT__INIT;
  f.detected_unix_ms = tg_clock_unix_ms();
  f.occurred_unix_ms = f.detected_unix_ms - (since_ms > 0 ? since_ms : 0);
  f.kind = kind;
  f.severity = severity;
  f.rank = rank;
  f.detail = (char *)(detail ? detail : "");
  f.collective_seq = collective_seq;
  f.collective_op = (char *)(op ? op : "");
  f.component = (char *)(component ? component : "");
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

/* The buddies of the new world are the peers to probe (session thread). */
static void probe_buddies(tg_agent *a, const Tardigrade__V1__WorldUpdate *u) {
  if (!a->prober) return;
  tg_probe_peer peers[8];
  size_t n = 0;
  for (size_t i = 0; u->world && i < u->world->n_nodes && n < 8; i++) {
    const Tardigrade__V1__WorldNode *wn = u->world->nodes[i];
    if (strcmp(wn->node_id, a->cfg.node_id) == 0 || !wn->address[0]) continue;
    peers[n].node_id = wn->node_id;
    peers[n].address = wn->address;
    n++;
  }
  char err[256];
  if (tg_prober_set_peers(a->prober, peers, n, err, sizeof err) != 0)
    TG_WARN("cannot probe the new buddies: %s", err);
}

/* A probe verdict about a buddy: evidence against the peer or the link,
 * not against this node, so it is reported as a warning naming the peer
 * (the coordinator's heartbeats decide whether the peer is gone). */
static void on_probe_event(const tg_probe_event *ev, void *user) {
  tg_agent *a = user;
  char line[400];
  tg_probe_event_format(ev, line, sizeof line);
  if (ev->cleared) {
    TG_INFO("%s", line);
    return;
  }
  tg_agent_report(a, ev->kind, TARDIGRADE__V1__SEVERITY__SEVERITY_WARNING, -1, line, 0, NULL,
                  ev->peer.node_id, 0);
}

/* Shards go to the buddy at position (p+1) % n, where n is the number of
 * nodes in the world (mu held). */
static void replicate_to_buddy(tg_agent *a, const Tardigrade__V1__WorldUpdate *u) {
  const Tardigrade__V1__World *w = u->world;
  uint32_t per_node = w->slots_per_node ? w->slots_per_node : (uint32_t)a->cfg.slots;
  tg_replicator_world rw = {.generation = w->generation,
                            .world_size = w->world_size,
                            .position = u->position,
                            .nodes = w->world_size / per_node,
                            .buddy_address = ""};
  if (u->position >= 0 && rw.nodes > 1) {
    uint32_t buddy = ((uint32_t)u->position + 1) % rw.nodes;
    for (size_t i = 0; i < w->n_nodes; i++)
      if (w->nodes[i]->position == buddy) rw.buddy_address = w->nodes[i]->address;
  }
  tg_replicator_set_world(a->replicator, &rw);
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
    a->seen_seq[s] = 0;
    if (u->position < 0 || u->world->world_size == 0) continue;
    tg_progress_record start = {.rank = (int32_t)s, .updated_ms = tg_clock_mono_ms()};
    tg_progress_update(a->detector, &start);
  }
  replicate_to_buddy(a, u);
  /* Trainers still in (or building) an older world's communicator see
   * this and abandon it at once. */
  tg_counters_set_world(a->counters, u->world->generation);
  tg_agent_answer_joins(a);
  pthread_cond_broadcast(&a->cv);
  pthread_mutex_unlock(&a->mu);
  probe_buddies(a, u);
}

/* The newest step of the current world for which every local rank's shard
 * is in this node's memory and in its buddy's (in a world of one node: in
 * this node's), 0 if some rank has none yet or the node is a spare. The
 * coordinator's resume_step is the minimum of this over the members. */
static uint64_t committed_step(tg_agent *a) { return tg_replicator_committed(a->replicator); }

/* Runs on the session thread: the heartbeat carries the ranks' progress
 * and the node's committed step, stamped with the generation it belongs
 * to (the session's newest, which on_world has already applied: both run
 * on this thread). */
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
  hb->committed_step = committed_step(a);
  if (a->update && a->update->world) hb->generation = a->update->world->generation;
  pthread_mutex_unlock(&a->mu);
  tardigrade__v1__health_report__init(&a->hb_health);
  a->hb_health.healthy = a->health ? tg_health_checker_healthy(a->health) : 1;
  /* What is wrong now, for the operators' view of the node. */
  size_t n_active = a->health ? tg_health_checker_active(a->health, a->hb_active, TG_AGENT_HB_HEALTH) : 0;
  if (n_active > TG_AGENT_HB_HEALTH) n_active = TG_AGENT_HB_HEALTH;
  for (size_t i = 0; i < n_active; i++) {
    tg_health_fault_to_proto(&a->hb_active[i], &a->hb_active_msgs[i]);
    a->hb_active_ptrs[i] = &a->hb_active_msgs[i];
  }
  a->hb_health.n_active = n_active;
  a->hb_health.active = a->hb_active_ptrs;
  hb->health = &a->hb_health;
  hb->n_progress = n;
  hb->progress = a->hb_progress_ptrs;
}

/* A persisted copy could not be written (replication thread, rate-limited
 * there): the disk is full or gone. Training is not disturbed, so it is a
 * warning about the node, naming the directory. */
static void on_persist_error(const char *detail, void *user) {
  tg_agent *a = user;
  tg_agent_report(a, TARDIGRADE__V1__FAULT_KIND__FAULT_DISK, TARDIGRADE__V1__SEVERITY__SEVERITY_WARNING, -1,
                  detail, 0, NULL, a->cfg.ckpt_dir, 0);
}

/* --------------------------------------------------------------- health */

/* A health check saw a fault appear or clear (checker thread). Node-level
 * faults are reported at once; ERROR and FATAL ones make the node
 * unhealthy in its heartbeats until they clear. */
static void on_health(void *arg, tg_health_event event, const tg_health_fault *hf) {
  tg_agent *a = arg;
  if (event == TG_HEALTH_CLEARED) {
    TG_INFO("health: %s cleared: %s", hf->component, hf->detail);
    return;
  }
  Tardigrade__V1__Fault f = TARDIGRADE__V1__FAULT__INIT;
  tg_health_fault_to_proto(hf, &f);
  f.rank = -1;
  TG_WARN("health: %s: %s", hf->component, hf->detail);
  tg_rpc_status st = {0};
  if (tg_session_report_fault(a->session, &f, 0, &st) != TG_RPC_OK)
    TG_WARN("could not report it to the coordinator: %s", st.message);
}

/* GPU checks through NVML, or a fake device directory (DIR/gpuN for GPUs,
 * DIR/sys as the sysfs root for NICs); NICs through sysfs. */
static int start_health(tg_agent *a, char *err, size_t errlen) {
  char sysfs[300] = "/sys", why[256];
  if (a->cfg.fake_devices[0]) {
    snprintf(sysfs, sizeof sysfs, "%s/sys", a->cfg.fake_devices);
    a->gpu = tg_gpu_fake_open(a->cfg.fake_devices, err, errlen);
    if (!a->gpu) return -1;
  } else {
    a->gpu = tg_gpu_nvml_open(NULL, why, sizeof why);
    if (!a->gpu) TG_INFO("no GPU checks: %s", why);
  }
  char *list = strdup(a->cfg.nics), *save = NULL;
  for (char *t = list ? strtok_r(list, ",", &save) : NULL; t && a->n_nic_names < 16; t = strtok_r(NULL, ",", &save))
    a->nic_names[a->n_nic_names++] = strdup(t);
  free(list);
  tg_nic_config nc = {.sysfs_root = sysfs,
                      .interfaces = (const char *const *)a->nic_names,
                      .n_interfaces = a->n_nic_names};
  a->nic = tg_nic_new(&nc, err, errlen);
  if (!a->nic) return -1;
  tg_health_config hc = {.gpu = a->gpu,
                         .gpu_period_ms = (uint32_t)a->cfg.health_period_ms,
                         .nic = a->nic,
                         .nic_period_ms = (uint32_t)a->cfg.health_period_ms,
                         .on_event = on_health,
                         .cb_arg = a};
  a->health = tg_health_checker_new(&hc, err, errlen);
  if (!a->health) return -1;
  if (tg_health_checker_start(a->health) != 0) {
    snprintf(err, errlen, "cannot start the health checks");
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------- trainers */

/* The rank a slot holds in the current world, -1 if none (mu held). */
static int slot_rank(const tg_agent *a, int slot) {
  if (slot < 0 || slot >= a->cfg.slots || !a->update || a->update->position < 0 ||
      !a->update->world || a->update->world->world_size == 0)
    return -1;
  return a->update->position * (int)a->cfg.slots + slot;
}

/* A trainer exited (supervisor thread): report it at once, with how. */
static void on_trainer_exit(int slot, pid_t pid, int exit_code, int sig, int will_restart, void *user) {
  tg_agent *a = user;
  if (exit_code == 0) {
    /* Finished its work: no fault, and no longer watched for hangs. */
    TG_INFO("trainer pid %d in slot %d finished", (int)pid, slot);
    pthread_mutex_lock(&a->mu);
    tg_progress_forget(a->detector, slot);
    a->slots[slot].has_progress = 0;
    a->stop_reported[slot] = 1; /* its alive counter stops: not a hang */
    pthread_mutex_unlock(&a->mu);
    return;
  }
  pthread_mutex_lock(&a->mu);
  int rank = slot_rank(a, slot);
  a->slots[slot].pid = 0;
  a->stop_reported[slot] = 1; /* until a restarted trainer counts again */
  pthread_mutex_unlock(&a->mu);
  char detail[200];
  if (sig)
    snprintf(detail, sizeof detail, "trainer pid %d in slot %d killed by signal %d (%s)%s", (int)pid, slot, sig,
             strsignal(sig), will_restart ? "; restarting it" : "; restart budget spent");
  else
    snprintf(detail, sizeof detail, "trainer pid %d in slot %d exited with code %d%s", (int)pid, slot,
             exit_code, will_restart ? "; restarting it" : "; restart budget spent");
  Tardigrade__V1__Fault f = TARDIGRADE__V1__FAULT__INIT;
  f.kind = TARDIGRADE__V1__FAULT_KIND__FAULT_TRAINER_EXIT;
  f.severity = TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR;
  f.rank = rank;
  f.detail = detail;
  f.exit_code = exit_code;
  f.signal = sig;
  f.detected_unix_ms = f.occurred_unix_ms = tg_clock_unix_ms(); /* waitid sees an exit at once */
  TG_WARN("%s", detail);
  tg_rpc_status st = {0};
  if (tg_session_report_fault(a->session, &f, 0, &st) != TG_RPC_OK)
    TG_WARN("could not report it to the coordinator: %s", st.message);
}

/* ----------------------------------------------------------- the monitor */

/* Feeds the collective each joined local trainer entered last (from the
 * shared counters) to the detector: a rank stopped before a collective
 * its peers entered keeps the lower number (mu held). */
static void read_counters(tg_agent *a) {
  int64_t now = tg_clock_mono_ms();
  uint64_t world = a->update && a->update->world ? a->update->world->generation : 0;
  if (tg_counters_world(a->counters) != world) tg_counters_set_world(a->counters, world);
  for (int64_t s = 0; s < a->cfg.slots; s++) {
    uint64_t gen = 0, seq = 0, alive = 0;
    if (tg_counters_read_alive(a->counters, (int)s, &alive) == 0 && alive != a->seen_alive[s]) {
      a->seen_alive[s] = alive;
      a->alive_changed_ms[s] = now;
      a->stop_reported[s] = 0;
    }
    if (a->slots[s].rank < 0 || tg_counters_read(a->counters, (int)s, &gen, &seq) != 0) continue;
    if (gen != a->slots[s].generation || seq <= a->seen_seq[s]) continue;
    a->seen_seq[s] = seq;
    tg_progress_record rec = {.rank = (int32_t)s,
                              .step = a->slots[s].has_progress ? a->slots[s].progress.step : 0,
                              .collective_seq = seq,
                              .updated_ms = now};
    tg_progress_update(a->detector, &rec);
  }
}

/* Whether the alive counter of `slot` has not moved for stall_ms (mu held). */
static int alive_stalled(const tg_agent *a, int slot, int64_t now, int64_t stall_ms) {
  return a->seen_alive[slot] > 0 && now - a->alive_changed_ms[slot] > stall_ms;
}

/* A local trainer in the current world whose alive counter stopped
 * moving while its process still exists: stopped inside a collective its
 * peers entered too. -1 if none (mu held). */
static int stopped_slot(tg_agent *a) {
  int64_t now = tg_clock_mono_ms();
  for (int64_t s = 0; s < a->cfg.slots; s++)
    if (a->slots[s].rank >= 0 && alive_stalled(a, (int)s, now, ALIVE_STALL_MS)) return (int)s;
  return -1;
}

/* A slot of the current world whose alive counter missed several beats
 * and was not reported yet, or -1 (mu held). */
static int stalling_slot(const tg_agent *a, int64_t now) {
  for (int s = 0; s < (int)a->cfg.slots; s++)
    if (slot_rank(a, s) >= 0 && !a->stop_reported[s] &&
        alive_stalled(a, s, now, 4 * TG_COUNTERS_ALIVE_MS))
      return s;
  return -1;
}

/* A trainer of the current world that stopped altogether (its alive
 * counter still for the hang floor) is a hang whether or not its peers
 * have noticed yet: it may not have joined the world at all, and then no
 * collective waits on it here, while the others wait for it to join.
 * Reported and killed once per stop (mu held; released around the report). */
static void report_stopped(tg_agent *a, int64_t now) {
  for (int s = 0; s < (int)a->cfg.slots; s++) {
    int rank = slot_rank(a, s);
    if (rank < 0 || a->stop_reported[s] || !alive_stalled(a, s, now, a->cfg.hang_floor_ms)) continue;
    a->stop_reported[s] = 1;
    char detail[256];
    int64_t stalled_ms = now - a->alive_changed_ms[s];
    snprintf(detail, sizeof detail, "slot %d (rank %d) stopped: its alive counter has not moved for %" PRId64 " ms",
             s, rank, stalled_ms);
    pthread_mutex_unlock(&a->mu);
    tg_agent_report(a, TARDIGRADE__V1__FAULT_KIND__FAULT_HANG, TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR, rank,
                    detail, 0, "", NULL, stalled_ms);
    if (a->supervisor) tg_supervisor_signal(a->supervisor, s, SIGKILL);
    pthread_mutex_lock(&a->mu);
  }
}

/* Every MONITOR_MS: run the hang and straggler detector over local ranks. */
static void *monitor_main(void *arg) {
  tg_agent *a = arg;
  pthread_mutex_lock(&a->mu);
  while (!a->stopping) {
    read_counters(a);
    tg_progress_event ev[TG_AGENT_MAX_SLOTS];
    int64_t now_ms = tg_clock_mono_ms();
    int n = tg_progress_evaluate(a->detector, now_ms, ev, TG_AGENT_MAX_SLOTS);
    report_stopped(a, now_ms);
    int whole_world = a->update && a->update->world &&
                      (int64_t)a->update->world->world_size == a->cfg.slots;
    for (int i = 0; i < n; i++) {
      int slot = ev[i].rank;
      int hang = ev[i].kind == TG_PROGRESS_HANG;
      /* The rank the detector finds behind may be waiting inside an
       * earlier collective that a stopped peer elsewhere holds up (a ring
       * finishes a collective at different times on different ranks), or
       * still restoring its state in the new world (reading shards between
       * collectives takes as long as they are large): alive, it is a
       * victim, not the culprit. */
      if (hang && slot >= 0 && !alive_stalled(a, slot, now_ms, ALIVE_STALL_MS) &&
          (tg_counters_inside(a->counters, slot) == 1 || tg_counters_restoring(a->counters, slot) == 1))
        slot = -1;
      int stopped = 0;
      if (hang && slot < 0) stopped = (slot = stopped_slot(a)) >= 0;
      /* No culprit yet, but a local trainer's alive counter has begun to
       * stall: report_stopped names it when the stall reaches the hang
       * floor, rather than a "culprit unknown" now. */
      if (hang && slot < 0 && stalling_slot(a, now_ms) >= 0) continue;
      int rank = slot_rank(a, slot); /* in the current world, joined or not */
      if (hang && slot < 0 && !whole_world) {
        /* Every local rank waits in the same collective: they are victims
         * of a rank elsewhere, whose agent names it. */
        TG_INFO("local ranks wait in collective %" PRIu64 " for a rank on another node", ev[i].seq);
        continue;
      }
      /* The detector counts local slots as its "ranks": say which world
       * rank the culprit is, and how it was found. */
      char detail[TG_PROGRESS_DETAIL_MAX + 128];
      if (slot < 0)
        snprintf(detail, sizeof detail, "culprit unknown: %s", ev[i].detail);
      else if (stopped)
        snprintf(detail, sizeof detail, "slot %d (rank %d) stopped inside collective %" PRIu64 " (alive counter still); %s",
                 slot, rank, ev[i].seq, ev[i].detail);
      else
        snprintf(detail, sizeof detail, "slot %d (rank %d): %s", slot, rank, ev[i].detail);
      pthread_mutex_unlock(&a->mu);
      tg_agent_report(a,
                      hang ? TARDIGRADE__V1__FAULT_KIND__FAULT_HANG
                           : TARDIGRADE__V1__FAULT_KIND__FAULT_STRAGGLER,
                      hang ? TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR
                           : TARDIGRADE__V1__SEVERITY__SEVERITY_WARNING,
                      rank, detail, ev[i].seq, ev[i].op, NULL, hang ? ev[i].stalled_ms : 0);
      /* A hung trainer this agent supervises is killed, so that it is
       * restarted and re-joins the next generation. */
      if (hang && slot >= 0 && a->supervisor) tg_supervisor_signal(a->supervisor, slot, SIGKILL);
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

  /* The node's checkpoint store: trainers write their snapshots into it
   * and a restarted trainer reads them back; buddies push their replicas
   * into it. After an agent crash the region is still there, with its
   * snapshots: it is opened, not replaced. Slots: each local shard's kept
   * steps plus the one being written, three times over (own shards,
   * buddies' replicas, shards fetched for a restore), and a few spare. */
  snprintf(a->ckpt_name, sizeof a->ckpt_name, "/tg-ckpt-%s-%s", cfg->job_id, cfg->node_id);
  a->ckpt = tg_ckpt_store_open(a->ckpt_name, err, errlen);
  if (!a->ckpt)
    a->ckpt = tg_ckpt_store_create(a->ckpt_name, (uint64_t)cfg->ckpt_mib << 20,
                                   (uint32_t)(cfg->slots * (CKPT_KEEP_STEPS + 1) * 3 + 8), CKPT_KEEP_STEPS,
                                   err, errlen);
  if (!a->ckpt) goto fail;
  /* Collective counters: trainers store the collective they enter, the
   * monitor reads them (the hang detector's culprit). */
  snprintf(a->counters_name, sizeof a->counters_name, "/tg-progress-%s-%s", cfg->job_id, cfg->node_id);
  a->counters = tg_counters_create(a->counters_name, (int)cfg->slots, err, errlen);
  if (!a->counters) goto fail;
  tg_replicator_config rc = {.store = a->ckpt,
                             .job_id = cfg->job_id,
                             .node_id = cfg->node_id,
                             .slots = (int)cfg->slots,
                             .ckpt_dir = cfg->ckpt_dir,
                             .persist_every = cfg->persist_every,
                             .push_deadline_ms = PUSH_DEADLINE_MS,
                             .on_persist_error = on_persist_error,
                             .user = a};
  a->replicator = tg_replicator_new(&rc, err, errlen);
  if (!a->replicator) goto fail;

  /* The peer service for other agents (probes, replication), on TCP. Its
   * send queue holds a whole shard's chunks, so FetchShard can serve any
   * shard a slot holds. */
  tg_ckpt_repl_config repl = {.node_id = cfg->node_id};
  tg_rpc_server_config peer_cfg = {.max_queued_sends = tg_ckpt_repl_queued_sends(a->ckpt, &repl)};
  a->peer = tg_rpc_server_new(&peer_cfg, err, errlen);
  if (!a->peer) goto fail;
  a->probe_service = tg_probe_register_service(a->peer, cfg->node_id, err, errlen);
  if (!a->probe_service) goto fail;
  a->repl_server = tg_ckpt_repl_server_new(a->ckpt, &repl);
  if (!a->repl_server || tg_ckpt_repl_server_register(a->repl_server, a->peer) != 0) {
    snprintf(err, errlen, "cannot serve the checkpoint store to buddies (Replication service)");
    goto fail;
  }
  int port = tg_rpc_server_listen(a->peer, cfg->listen, NULL, err, errlen);
  if (port < 0) goto fail;
  if (!cfg->advertise[0]) { /* with port 0, tell the others the port bound */
    const char *colon = strrchr(cfg->listen, ':');
    snprintf(a->advertise, sizeof a->advertise, "%.*s:%d", colon ? (int)(colon - cfg->listen) : 0,
             cfg->listen, port);
  }

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

/* One trainer per slot, told where the agent is through the environment. */
static int start_trainers(tg_agent *a, char *err, size_t errlen) {
  char sock[300], node[100], job[100], shm[200], counters[200];
  snprintf(sock, sizeof sock, "TG_AGENT_SOCKET=%s", a->cfg.socket_path);
  snprintf(node, sizeof node, "TG_NODE_ID=%s", a->cfg.node_id);
  snprintf(job, sizeof job, "TG_JOB=%s", a->cfg.job_id);
  snprintf(shm, sizeof shm, "TG_CKPT_SHM=%s", a->ckpt_name);
  snprintf(counters, sizeof counters, "TG_PROGRESS_SHM=%s", a->counters_name);
  const char *env[] = {sock, node, job, shm, counters, NULL};
  tg_supervisor_config sc = {.argv = a->cfg.trainer_argv,
                             .slots = (int)a->cfg.slots,
                             .env = env,
                             .log_dir = a->cfg.log_dir[0] ? a->cfg.log_dir : NULL,
                             .max_restarts = (int)a->cfg.restart_max,
                             .restart_window_ms = a->cfg.restart_window_ms,
                             .restart_backoff_ms = 20,
                             .on_exit = on_trainer_exit,
                             .user = a};
  a->supervisor = tg_supervisor_new(&sc, err, errlen);
  if (!a->supervisor) return -1;
  return tg_supervisor_start(a->supervisor, err, errlen);
}

int tg_agent_start(tg_agent *a, char *err, size_t errlen) {
  if (tg_rpc_server_start(a->local, err, errlen) != 0 || tg_rpc_server_start(a->peer, err, errlen) != 0)
    return -1;
  if (a->cfg.probe_period_ms > 0) {
    tg_prober_config pc = {.node_id = a->cfg.node_id,
                           .period_ms = a->cfg.probe_period_ms,
                           .timeout_ms = a->cfg.probe_period_ms / 2 > 50 ? a->cfg.probe_period_ms / 2 : 50,
                           .on_event = on_probe_event,
                           .user = a};
    a->prober = tg_prober_new(&pc, err, errlen);
    if (!a->prober) return -1;
  }
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
  if (tg_replicator_start(a->replicator, err, errlen) != 0) return -1;
  if (pthread_create(&a->monitor, NULL, monitor_main, a) != 0) {
    snprintf(err, errlen, "cannot start the monitor thread: %s", strerror(errno));
    return -1;
  }
  a->monitor_started = 1;
  if (start_health(a, err, errlen) != 0) return -1;
  if (a->cfg.trainer_argv && start_trainers(a, err, errlen) != 0) return -1;
  TG_INFO("agent for node %s (job %s): trainers' socket %s, peers reach it at %s, coordinators %s, "
          "checkpoints in %s (%u slots of %" PRIu64 " bytes), persisted %s%s",
          a->cfg.node_id, a->cfg.job_id, a->cfg.socket_path, a->advertise, a->cfg.coordinators, a->ckpt_name,
          tg_ckpt_store_slots(a->ckpt), tg_ckpt_store_slot_bytes(a->ckpt),
          a->cfg.ckpt_dir[0] ? "under " : "nowhere", a->cfg.ckpt_dir);
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
  if (a->supervisor) tg_supervisor_stop(a->supervisor, 5000);
  a->drained = 1;
  stop_threads(a);
  tg_replicator_stop(a->replicator);
  if (a->session) {
    tg_rpc_status st = {0};
    tg_session_leave(a->session, "drained", &st);
  }
}

void tg_agent_free(tg_agent *a) {
  if (!a) return;
  if (a->supervisor) tg_supervisor_free(a->supervisor); /* stops the trainers */
  /* Threads that report through the session stop first (the health
   * checker, the monitor, the replicator's worker); then the session's
   * own thread, whose heartbeats and world updates call into the checker,
   * the replicator, the detector and the prober; then the prober, which
   * reports through the session too; only then is anything freed. */
  int stuck = a->health ? tg_health_checker_stop(a->health) : 0;
  stop_threads(a);
  tg_replicator_stop(a->replicator);
  tg_session_stop(a->session);
  if (a->prober) tg_prober_free(a->prober);
  if (a->session) tg_session_free(a->session);
  if (a->health) tg_health_checker_free(a->health);
  tg_replicator_free(a->replicator);
  if (a->local) tg_rpc_server_free(a->local, 1000);
  if (a->peer) tg_rpc_server_free(a->peer, 1000);
  tg_probe_service_free(a->probe_service); /* after its server */
  tg_ckpt_repl_server_free(a->repl_server);
  if (a->cfg.socket_path[0]) unlink(a->cfg.socket_path);
  tg_progress_free(a->detector);
  /* A check still stuck in a backend call (a hung NVML) frees the checker
   * when it returns; its backends must outlive it, so they are left. */
  if (!stuck) {
    tg_nic_free(a->nic);
    if (a->gpu) tg_gpu_close(a->gpu);
  } else {
    TG_WARN("%d health checks still stuck at exit; their devices are left open", stuck);
  }
  for (size_t i = 0; i < a->n_nic_names; i++) free(a->nic_names[i]);
  tg_ckpt_store_close(a->ckpt);
  tg_counters_close(a->counters);
  if (a->counters_name[0]) tg_counters_unlink(a->counters_name);
  if (a->drained && a->ckpt_name[0]) tg_ckpt_store_unlink(a->ckpt_name); /* a crash keeps it */
  if (a->update) tardigrade__v1__world_update__free_unpacked(a->update, NULL);
  pthread_mutex_destroy(&a->mu);
  pthread_cond_destroy(&a->cv);
  free(a);
}
