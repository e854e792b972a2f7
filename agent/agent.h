/* tg-agent as a library: one per node. It registers the node with the
 * coordinators and keeps its session (agent/session), serves the node's
 * trainer processes on a unix socket (join a world, report progress and
 * faults, ask how far replication got), supervises those processes, runs
 * the GPU/NIC health checks and the hang detector, probes its buddy
 * agents, and reports every fault to the coordinator. It owns the node's
 * checkpoint store, replicates each shard its trainers write to a buddy
 * agent (and serves the buddies' replicas), persists every persist_every-th
 * step under ckpt_dir, and tells the coordinator the newest step whose
 * local shards all have a copy on another node (the committed step). main.c
 * builds one from flags; tests build them too. */
#ifndef TG_AGENT_H
#define TG_AGENT_H

#include <stddef.h>
#include <stdint.h>

#include "common/rpc/rpc.h"

#define TG_AGENT_MAX_SLOTS 64

typedef struct {
  char node_id[64];
  char job_id[64];
  char coordinators[512];        /* comma-separated */
  char socket_path[256];         /* the trainers' local service (unix socket path) */
  char listen[256];              /* peer service (probes, shard replication): host:port */
  char advertise[256];           /* how other agents reach this one; "" = listen */
  int64_t slots;                 /* trainer processes (ranks) on this node */
  const char *const *trainer_argv; /* command run in each slot; NULL: no trainers (external) */
  char log_dir[256];             /* trainers' logs: DIR/slot-N.log */
  char fake_devices[256];        /* a fake GPU/NIC device directory ("" = NVML and /sys) */
  char nics[256];                /* NICs to watch, comma-separated ("" = all but loopback) */
  int64_t restart_max;           /* trainer restarts allowed per slot within the window */
  int64_t restart_window_ms;
  int64_t hang_factor;           /* hang timeout = factor x median step time, */
  int64_t hang_floor_ms;         /* at least this, */
  int64_t hang_ceiling_ms;       /* at most this */
  int64_t straggler_percent;     /* a rank slower than this % of the median is a straggler */
  int64_t probe_period_ms;       /* network probes to buddy agents; 0: off */
  int64_t health_period_ms;      /* GPU and NIC checks */
  int64_t ckpt_mib;              /* the node's in-memory checkpoint store, MiB */
  char ckpt_dir[512];            /* persist shards under it; "" = never (memory copies only) */
  int64_t persist_every;         /* persist steps that are multiples of this */
  const tg_rpc_tls *coordinator_tls;
} tg_agent_config;

void tg_agent_config_defaults(tg_agent_config *cfg);

typedef struct tg_agent tg_agent;

tg_agent *tg_agent_new(const tg_agent_config *cfg, char *err, size_t errlen);
int tg_agent_start(tg_agent *a, char *err, size_t errlen);

/* Drains: stops the trainers (SIGTERM, then SIGKILL after a grace), leaves
 * the job, stops serving. */
void tg_agent_drain(tg_agent *a);

/* Frees; without a drain first, this is an agent crash as far as the
 * coordinator knows (its trainers are stopped all the same). */
void tg_agent_free(tg_agent *a);

#endif
