/* Shared by agent.c (lifecycle, session, monitor) and local_service.c (the
 * trainers' service). Not a public header.
 *
 * Locking: tg_agent.mu guards the world, the slots and the pending joins.
 * Calls to the coordinator (tg_session_*) are made without it. The
 * replicator has a lock of its own, taken after mu when both are held and
 * never the other way round. */
#ifndef TG_AGENT_INTERNAL_H
#define TG_AGENT_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "agent/agent.h"
#include "agent/ckpt/replicate.h"
#include "agent/ckpt/store.h"
#include "agent/health/checker.h"
#include "agent/probe/probe.h"
#include "agent/supervisor/supervisor.h"
#include "agent/progress/counters.h"
#include "agent/progress/progress.h"
#include "agent/replicator.h"
#include "agent/session/session.h"
#include "proto/tardigrade/v1/agent.pb-c.h"
#include "proto/tardigrade/v1/coordinator.pb-c.h"

#define TG_AGENT_HB_HEALTH 16 /* active health faults carried per heartbeat */

typedef struct {
  int pid;                        /* of the trainer that joined in this slot, 0: none */
  uint64_t generation;            /* it joined */
  int rank;                       /* in that generation, -1: none */
  int has_progress;
  Tardigrade__V1__RankProgress progress;
} tg_agent_slot;

/* A Join waiting for a world in which this node holds ranks. */
typedef struct tg_pending_join {
  tg_rpc_call *call;
  uint32_t slot;
  uint64_t known_generation;
  struct tg_pending_join *next;
} tg_pending_join;

struct tg_agent {
  tg_agent_config cfg;
  char advertise[256];
  tg_session *session;
  tg_rpc_server *local;           /* the trainers' unix socket */
  tg_rpc_method local_methods[4];
  tg_rpc_server *peer;            /* other agents: probes and replication (TCP, cfg.listen) */
  tg_probe_service *probe_service;
  tg_ckpt_repl_server *repl_server; /* serves the store to buddies: PushShard, FetchShard, ListShards */
  tg_replicator *replicator;      /* pushes local shards to the buddy, persists some to disk */
  tg_prober *prober;              /* probes the buddies of the current world */
  tg_supervisor *supervisor;      /* the trainer processes, when the agent starts them */
  tg_gpu *gpu;                    /* NVML, a fake, or NULL (no GPU checks) */
  tg_nic *nic;
  tg_health_checker *health;
  tg_ckpt_store *ckpt;            /* trainers' snapshots; outlives them (and a crashed agent) */
  char ckpt_name[160];
  tg_counters *counters;          /* the collective each trainer entered last (shared memory) */
  char counters_name[160];
  uint64_t seen_seq[TG_AGENT_MAX_SLOTS]; /* as last fed to the detector */
  uint64_t seen_alive[TG_AGENT_MAX_SLOTS];   /* the trainers' alive counters, */
  int64_t alive_changed_ms[TG_AGENT_MAX_SLOTS]; /* and when each last moved */
  int stop_reported[TG_AGENT_MAX_SLOTS];        /* a stopped trainer was reported (until it moves) */
  int drained;                    /* a clean stop: the store goes too */
  char *nic_names[16];            /* parsed from cfg.nics */
  size_t n_nic_names;

  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stopping;
  Tardigrade__V1__WorldUpdate *update; /* newest world for this node (owned), NULL before one */
  tg_agent_slot slots[TG_AGENT_MAX_SLOTS];
  tg_pending_join *pending;

  tg_progress *detector;          /* hang and straggler detection over the local ranks */
  pthread_t monitor;
  int monitor_started;

  /* Heartbeat contents, rebuilt by the session thread before each send. */
  Tardigrade__V1__HealthReport hb_health;
  Tardigrade__V1__RankProgress hb_progress[TG_AGENT_MAX_SLOTS];
  Tardigrade__V1__RankProgress *hb_progress_ptrs[TG_AGENT_MAX_SLOTS];
  tg_health_fault hb_active[TG_AGENT_HB_HEALTH];  /* the checker's active faults, */
  Tardigrade__V1__Fault hb_active_msgs[TG_AGENT_HB_HEALTH]; /* as the coordinator sees them */
  Tardigrade__V1__Fault *hb_active_ptrs[TG_AGENT_HB_HEALTH];
};

/* local_service.c */
int tg_agent_local_register(tg_agent *a, char *err, size_t errlen);
/* Answers the pending joins that the current world satisfies (mu held). */
void tg_agent_answer_joins(tg_agent *a);
/* Ends every pending join (mu held), e.g. on shutdown. */
void tg_agent_end_joins(tg_agent *a, tg_rpc_code code, const char *why);

/* agent.c */
/* Reports a fault to the coordinator (mu not held); logs it either way.
 * It was detected now and occurred since_ms earlier (0: just now). */
void tg_agent_report(tg_agent *a, int kind, int severity, int rank, const char *detail,
                     uint64_t collective_seq, const char *op, const char *component, int64_t since_ms);

#endif
