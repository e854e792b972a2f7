/* A Tardigrade job on this machine, as tg-chaos runs it: tg-coordinators
 * (one leads, the others stand by, all against one etcd) and tg-agents
 * "n0".."nK", each starting one tg-train per slot. It owns the processes
 * and the places they write to, and offers the verbs faults are made of:
 * start or restart an agent or a coordinator, find a slot's trainer, kill.
 *
 * Processes are tests/harness/proc children (PR_SET_PDEATHSIG, killed at
 * exit), so none outlives tg-chaos however it ends; tg_chaos_cluster_free
 * also unlinks the shared memory every node of the job may have left
 * behind (an agent killed with SIGKILL cannot). Start processes from the
 * main thread only: the parent-death signal follows the forking thread.
 *
 * In namespace mode (cfg.net) every node's agent runs on a host of its
 * own and the coordinators on the uplink address; see chaos/README.md.
 *
 * Layout under `dir`: logs/<node>/slot-<s>.log (trainers),
 * logs/<node>-agent.log, logs/<coordinator>.log, sock/<node>.sock,
 * ckpt/ (the agents' --ckpt-dir). */
#ifndef TG_CHAOS_CLUSTER_H
#define TG_CHAOS_CLUSTER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "chaos/scenario.h"
#include "tests/harness/netns.h"

/* The binaries a cluster runs. */
typedef struct {
  char coordinator[1024], agent[1024], trainer[1024], tgctl[1024];
  char trainer_cuda[1024]; /* tg-train-cuda, "" where it was not built */
} tg_chaos_bins;

typedef struct {
  const char *job;            /* job id, unique per run */
  const char *dir;            /* the run's directory (see above); must exist */
  const char *etcd_endpoints; /* host:port,... */
  const tg_chaos_bins *bins;
  int nodes;                  /* agents that may ever run: n0..n<nodes-1> */
  int max_nodes;              /* the coordinators' --max-nodes (the rest are spares) */
  int coordinators;
  int persist;                /* 1: give agents --ckpt-dir */
  int ckpt_fs_mib;            /* > 0: that directory is a tmpfs of this size, mounted here (root) */
  const tg_chaos_cluster_spec *spec;
  const tg_chaos_training_spec *training;
  const char *params_out;     /* tg-train --out */
  /* Namespace mode: node i's agent (and so its trainers) runs on host i
   * of net and listens on that host's address; coordinators listen on
   * `host`, net's uplink, where etcd is too. NULL: local processes on
   * 127.0.0.1. The caller owns net and frees it after the cluster. */
  tg_netns *net;
  const char *host;           /* the coordinators' address; NULL: 127.0.0.1 */
  /* 1: every agent reaches each coordinator through a route of a slow-link
   * proxy (chaos/proxy.h), fast until tg_chaos_cluster_slow_link. */
  int slow_links;
} tg_chaos_cluster_config;

typedef struct tg_chaos_cluster tg_chaos_cluster;

/* A job tg-chaos did not start (`tg-chaos run --attach`). */
typedef struct {
  const char *coordinators;  /* host:port,... as given */
  const char *job;           /* the job id the coordinators answer with */
  const tg_chaos_bins *bins; /* tgctl */
} tg_chaos_attach_config;

/* Finds the job's processes on this machine (chaos/procs.h): the
 * tg-coordinators of `job` listening at one of the addresses, and the
 * tg-agents of `job` whose --coordinators share one (at least one, each
 * with --log-dir, node ids unique). Nodes are indexed in node id order.
 * *shape gets what their options say (agents: the coordinators'
 * --max-nodes, the rest spares; min_nodes, slots, heartbeat timeout;
 * persist_every, hang floor, store size from the first agent) and *steps
 * the trainers' --steps (0: not given). The verbs below then act on those
 * processes: a killed one is started again from its /proc record,
 * detached, and tg_chaos_cluster_free leaves every process running. NULL
 * with a reason. */
tg_chaos_cluster *tg_chaos_cluster_attach(const tg_chaos_attach_config *cfg, tg_chaos_cluster_spec *shape,
                                          int64_t *steps, char *err, size_t errlen);
/* 1 for a cluster made by tg_chaos_cluster_attach. */
int tg_chaos_cluster_attached(const tg_chaos_cluster *c);

/* Makes the directories; starts nothing. NULL with a reason on failure. */
tg_chaos_cluster *tg_chaos_cluster_new(const tg_chaos_cluster_config *cfg, char *err, size_t errlen);

/* Stops every process (agents first, SIGTERM then SIGKILL), kills any
 * trainer of the job still alive, and unlinks every node's shared memory.
 * NULL is fine. */
void tg_chaos_cluster_free(tg_chaos_cluster *c);

/* Coordinator i ("c<i>"), on a port fixed at its first start so a restart
 * listens where agents look. 0 or -1 with a reason. */
int tg_chaos_cluster_start_coordinator(tg_chaos_cluster *c, int i, char *err, size_t errlen);
int tg_chaos_cluster_coordinator_running(tg_chaos_cluster *c, int i);
/* The index of the coordinator with id "c<i>" (attached: its --id), or -1. */
int tg_chaos_cluster_coordinator_index(const tg_chaos_cluster *c, const char *id);
int tg_chaos_cluster_coordinator_count(const tg_chaos_cluster *c);
void tg_chaos_cluster_coordinator_id(const tg_chaos_cluster *c, int i, char *out, size_t len);
/* SIGKILLs coordinator i and reaps it. 0 or -1 if it is not running. */
int tg_chaos_cluster_kill_coordinator(tg_chaos_cluster *c, int i);
/* "127.0.0.1:A,127.0.0.1:B,..." for agents and tgctl (the uplink's
 * address in namespace mode). */
const char *tg_chaos_cluster_coordinators(const tg_chaos_cluster *c);

/* Starts (or restarts, with the same node id and memory) agent `node`. */
int tg_chaos_cluster_start_agent(tg_chaos_cluster *c, int node, char *err, size_t errlen);
int tg_chaos_cluster_agent_running(tg_chaos_cluster *c, int node);
/* The node's fake device directory (its agent's --fake-devices; attached:
 * "" when it has none): GPUs
 * gpu0..gpu<slots-1> (agent/health/gpu_fake.h) and a NIC eth0 under sys/
 * (nic_fake.h), all healthy until a fault is written there. */
void tg_chaos_cluster_fake_devices(const tg_chaos_cluster *c, int node, char *out, size_t len);
/* Where tg-train (started with --inject-dir RUN_DIR/inject) looks for a
 * fault request for the trainer of (node, slot): trainer/train/inject.h.
 * Attached: "" when the node's trainers run without --inject-dir. */
void tg_chaos_cluster_inject_path(const tg_chaos_cluster *c, int node, int slot, char *out, size_t len);

/* The agents' --ckpt-dir (shared by every node, like a cluster's shared
 * filesystem): DIR/ckpt; a tmpfs of ckpt_fs_mib when that is set.
 * Attached: the first agent's, "" when it persists nothing. */
void tg_chaos_cluster_ckpt_dir(const tg_chaos_cluster *c, char *out, size_t len);
/* Namespace mode: takes the link of the node's host down (nobody reaches
 * it, it reaches nobody), or up again. -1 with a reason (also in local
 * mode). */
int tg_chaos_cluster_cut(tg_chaos_cluster *c, int node, char *err, size_t errlen);
int tg_chaos_cluster_heal(tg_chaos_cluster *c, int node, char *err, size_t errlen);

/* With cfg.slow_links: holds every byte between the node's agent and the
 * coordinators for delay_ms (0: fast again). -1 with a reason. */
int tg_chaos_cluster_slow_link(tg_chaos_cluster *c, int node, int64_t delay_ms, char *err, size_t errlen);

/* SIGKILLs the agent and then its trainers, as when a host dies. */
int tg_chaos_cluster_kill_agent(tg_chaos_cluster *c, int node);
/* The pid of the trainer in (node, slot), or 0 when there is none. */
pid_t tg_chaos_cluster_trainer_pid(tg_chaos_cluster *c, int node, int slot);

/* "n<node>" (attached: the agent's --node). */
const char *tg_chaos_cluster_node_id(const tg_chaos_cluster *c, int node);
/* The index of node `id`, or -1. */
int tg_chaos_cluster_node_index(const tg_chaos_cluster *c, const char *id);
int tg_chaos_cluster_nodes(const tg_chaos_cluster *c);
int tg_chaos_cluster_slots(const tg_chaos_cluster *c);
const char *tg_chaos_cluster_job(const tg_chaos_cluster *c);
/* Log paths (see the layout above). */
void tg_chaos_cluster_slot_log(const tg_chaos_cluster *c, int node, int slot, char *out, size_t len);
void tg_chaos_cluster_agent_log(const tg_chaos_cluster *c, int node, char *out, size_t len);
/* "/tg-ckpt-<job>-<node>": the node's checkpoint store. */
void tg_chaos_cluster_store_name(const tg_chaos_cluster *c, int node, char *out, size_t len);

/* Runs tgctl against the coordinators with args (NULL-terminated, after
 * --coordinator and --json), output in out. Returns the exit status, or -1
 * if it could not run within timeout_ms. */
int tg_chaos_cluster_tgctl(tg_chaos_cluster *c, const char *const *args, char *out, size_t outlen,
                           int64_t timeout_ms);

#endif
