/* Simulated node agents for coordinator tests and benchmarks.
 *
 * A simulated agent is tg-agent's own coordinator session (register,
 * heartbeat stream, world stream, faults, leave, follow the leader,
 * re-register after a broken stream) with no trainers and no hardware, so
 * one test process can be a whole cluster. Each agent runs on a thread of
 * its own. Tests make nodes "die" by silencing them or stopping them
 * without a Leave. */
#ifndef TG_SIMAGENT_H
#define TG_SIMAGENT_H

#include <stddef.h>
#include <stdint.h>

#include "agent/session/session.h"
#include "common/rpc/rpc.h"

typedef struct tg_sim_agent tg_sim_agent;

typedef struct {
  const char *coordinators; /* "host:port,host:port" */
  const char *job_id;
  const char *node_id;
  uint32_t slots;
  const char *address;      /* advertised agent address (default "sim:NODE") */
} tg_sim_config;

/* Starts the agent's thread; it registers in the background. */
tg_sim_agent *tg_sim_agent_start(const tg_sim_config *cfg, char *err, size_t errlen);

/* Stops abruptly: streams cancelled, no Leave (a crashed or lost node). */
void tg_sim_agent_free(tg_sim_agent *a);

/* Silences (1) or resumes (0) the node: no heartbeats, and no new
 * registration if its streams break (a dead or cut-off node); streams
 * already open stay open. */
void tg_sim_agent_silence(tg_sim_agent *a, int silent);

/* Marks the node unhealthy (0) or healthy (1) in its next heartbeats. */
void tg_sim_agent_set_healthy(tg_sim_agent *a, int healthy);

/* Reports the node's committed step in its heartbeats. */
void tg_sim_agent_set_committed_step(tg_sim_agent *a, uint64_t step);

/* Reports a fault for this node (rank -1: node-level) against `generation`
 * (0: the newest this agent has seen). Returns the RPC code. */
tg_rpc_code tg_sim_agent_report_fault(tg_sim_agent *a, int kind, int severity, int rank,
                                      uint64_t generation, const char *detail, tg_rpc_status *st);
/* The same, detected now and occurred since_ms earlier (as a real agent
 * stamps it; since_ms < 0: no times, as above). */
tg_rpc_code tg_sim_agent_report_fault_since(tg_sim_agent *a, int kind, int severity, int rank,
                                            uint64_t generation, const char *detail, int64_t since_ms,
                                            tg_rpc_status *st);
/* Reports one rank's progress (step, loss) in its heartbeats. */
void tg_sim_agent_set_progress(tg_sim_agent *a, int rank, uint64_t step, double loss);
/* Reports one active health fault (a GPU or NIC kind, severity, component
 * such as "gpu0" or "eth0") in its heartbeats; kind 0 clears it. */
void tg_sim_agent_set_health_fault(tg_sim_agent *a, int kind, int severity, const char *component);

/* Leaves the job gracefully, then stops. */
tg_rpc_code tg_sim_agent_leave(tg_sim_agent *a, tg_rpc_status *st);

/* What the agent knows: the session's state (agent/session/session.h). */
typedef tg_session_state tg_sim_state;

void tg_sim_agent_state(tg_sim_agent *a, tg_sim_state *out);

/* Waits until the agent has a world with generation >= min_generation;
 * returns 0, or -1 after timeout_ms. */
int tg_sim_agent_wait_generation(tg_sim_agent *a, uint64_t min_generation, int64_t timeout_ms);

/* Waits until registered (again); 0 or -1 after timeout_ms. */
int tg_sim_agent_wait_registered(tg_sim_agent *a, int64_t timeout_ms);

int64_t tg_sim_mono_ms(void);

#endif
