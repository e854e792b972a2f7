/* A node's session with its job's coordinators.
 *
 * Everything an agent does toward the coordinator lives here, once: find
 * the leader among the coordinator addresses, register the node (a node id
 * registered again is the same node: the previous incarnation is sent
 * along), keep a heartbeat stream and a world stream open, and when either
 * breaks, or the coordinator asks, register again and reopen them (this is
 * how an agent follows a coordinator failover, and how it re-joins after
 * its own restart). Faults and a graceful leave go through it too.
 *
 * tg-agent fills the heartbeats with its real health and rank progress;
 * the simulated agents of tests and benchmarks use the same session with
 * made-up contents. Each session runs one thread. */
#ifndef TG_SESSION_H
#define TG_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "common/rpc/rpc.h"
#include "proto/tardigrade/v1/coordinator.pb-c.h"

typedef struct tg_session tg_session;

typedef struct {
  const char *coordinators;            /* "host:port,host:port" */
  const tg_rpc_tls *tls;               /* NULL: plaintext */
  const char *job_id;
  const Tardigrade__V1__NodeInfo *node;/* node_id, address, slots, GPUs, NICs... (copied) */
  uint64_t previous_incarnation;       /* after an agent restart: what it had (0: unknown) */

  /* Called on the session thread before each heartbeat is sent: set
   * hb->health, hb->progress/n_progress and hb->committed_step (node_id,
   * incarnation and generation are already set). Pointers must stay valid
   * until the next call. NULL: an empty, healthy heartbeat. */
  void (*fill_heartbeat)(Tardigrade__V1__HeartbeatRequest *hb, void *user);
  /* Called on the session thread for each newer world (freed after return). */
  void (*on_world)(const Tardigrade__V1__WorldUpdate *update, void *user);
  /* Called on the session thread after each (re-)registration. */
  void (*on_registered)(uint64_t incarnation, const char *coordinator, void *user);
  void *user;
} tg_session_config;

/* Starts the session's thread; it registers in the background. */
tg_session *tg_session_start(const tg_session_config *cfg, char *err, size_t errlen);

/* Stops the session's thread at once: streams cancelled, no Leave (as a
 * crashed agent would). No callback runs after it returns; reporting a
 * fault still works until tg_session_free. Idempotent; one thread only. */
void tg_session_stop(tg_session *s);

/* tg_session_stop, then frees. */
void tg_session_free(tg_session *s);

/* Leaves the job gracefully (the session stays, silent); returns the code. */
tg_rpc_code tg_session_leave(tg_session *s, const char *reason, tg_rpc_status *st);

/* Reports a fault against `generation` (0: the newest this session has
 * seen); node_id and incarnation are filled in. Returns the code. */
tg_rpc_code tg_session_report_fault(tg_session *s, const Tardigrade__V1__Fault *fault,
                                    uint64_t generation, tg_rpc_status *st);

/* Cuts the node off (1) or back on (0): no heartbeats and no new
 * registration while cut off; streams already open stay open. Tests use it
 * to make a node look dead or partitioned. */
void tg_session_silence(tg_session *s, int silent);

typedef struct {
  int registered;
  uint64_t incarnation;
  uint64_t generation;       /* of the newest world received */
  uint32_t world_size;
  int position;              /* in that world, -1 if not a member (spare) */
  int64_t world_received_ms; /* monotonic time it arrived */
  uint64_t worlds_received;
  uint64_t registrations;    /* how many times it (re-)registered */
  int64_t last_heartbeat_ms; /* monotonic time the last heartbeat was sent */
  int node_state;            /* tardigrade.v1.NodeState as last told, 0 if never */
  char reason[32];           /* the newest world's reason */
  char coordinator[256];     /* the coordinator it talks to */
} tg_session_state;

void tg_session_get_state(tg_session *s, tg_session_state *out);

/* Waits until the session has a world with generation >= min_generation;
 * 0, or -1 after timeout_ms. */
int tg_session_wait_generation(tg_session *s, uint64_t min_generation, int64_t timeout_ms);

/* Waits until registered (again); 0 or -1 after timeout_ms. */
int tg_session_wait_registered(tg_session *s, int64_t timeout_ms);


#endif
