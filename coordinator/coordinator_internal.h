/* Shared by coordinator.c (state, ticker, worlds), service.c (the agents'
 * service) and operator.c (the operators' service). Not a public header.
 *
 * Locking: one mutex, tg_coord.mu, guards every field below that is not
 * marked otherwise. etcd is never called with mu held: the ticker copies
 * what it must write, drops the lock, writes, and takes it again. RPC
 * sends (tg_rpc_call_send/finish) are made with mu held; the RPC layer
 * never runs a callback from inside them, and on_done handlers take mu
 * before forgetting a call, so a call seen under mu is always valid. */
#ifndef TG_COORDINATOR_INTERNAL_H
#define TG_COORDINATOR_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "common/etcd/etcd.h"
#include "coordinator/coordinator.h"
#include "coordinator/election.h"
#include "coordinator/httpd.h"
#include "coordinator/metrics.h"
#include "coordinator/store.h"
#include "proto/tardigrade/v1/coordinator.pb-c.h"
#include "proto/tardigrade/v1/store.pb-c.h"

#define TG_FAULT_LOG 512          /* faults kept in memory for ListFaults */
#define TG_ETCD_FAULT_LOG 1000    /* faults kept in etcd */
#define TG_RECENT_FAULTS 32       /* per node, for quarantine */
#define TG_MAX_PROGRESS 64        /* rank progress entries kept per node */
#define TG_HEALTH_FAULTS 16       /* active health faults kept per node, from heartbeats */
#define TG_GENERATION_LOG 256     /* worlds kept in memory for the dashboard */
#define TG_PENDING_RECOVERIES 64  /* faults awaiting training to resume */
#define TG_COMPONENT_MAX 64

/* A GPU or NIC fault the node's agent still sees (from its heartbeats). */
typedef struct {
  int kind;                      /* Tardigrade__V1__FaultKind */
  int severity;                  /* Tardigrade__V1__Severity */
  char component[TG_COMPONENT_MAX];
} tg_health_item;

/* Operator decisions that outlive a node's connection. */
typedef enum { TG_ADMIN_NONE = 0, TG_ADMIN_CORDONED = 1, TG_ADMIN_DRAINING = 2 } tg_admin;

typedef struct tg_node {
  char id[TG_NODE_ID_MAX];
  size_t slot;                   /* index in tg_coord.nodes */
  int position;                  /* in the current world, -1 if not a member */
  Tardigrade__V1__NodeInfo *info; /* owned (unpacked copy) */
  uint64_t incarnation;
  int64_t registered_unix_ms;
  tg_admin admin;
  int left;                      /* said Leave; out until it registers again */
  int alive;                     /* heartbeats within the timeout */
  int healthy;                   /* last health report (and fault reports) */
  int64_t unhealthy_since_ms;    /* monotonic; a later healthy heartbeat clears it */
  int64_t last_heartbeat_ms;     /* monotonic */
  int64_t eligible_since_ms;     /* monotonic */
  int was_eligible;
  int64_t quarantined_until_unix_ms;
  int64_t recent_faults_unix_ms[TG_RECENT_FAULTS];
  size_t n_recent_faults;
  uint32_t fault_count;
  uint64_t committed_step;        /* as its last heartbeat said, */
  uint64_t committed_generation;  /* about the world of this generation */
  Tardigrade__V1__RankProgress progress[TG_MAX_PROGRESS];
  size_t n_progress;
  tg_health_item health_faults[TG_HEALTH_FAULTS];
  size_t n_health_faults;
  int dirty;                     /* record must be written to etcd */
  tg_rpc_call *heartbeat_call;   /* current heartbeat stream, if any */
  uint64_t notified_generation;  /* last generation told over heartbeat */
  Tardigrade__V1__NodeState told_state;
} tg_node;

/* What the dashboard shows beyond the job's state (dashboard.c). Kept in
 * this process only: a new leader starts its histograms, goodput and
 * world history afresh (the fault log, with recovery times, is in etcd). */
typedef struct {
  uint64_t generation;
  uint32_t world_size, n_nodes;
  uint64_t resume_step;
  int64_t formed_unix_ms;
  char reason[24];
} tg_generation_entry;

typedef struct {
  char fault_id[32];
  uint64_t generation;           /* the world it interrupted */
  int64_t since_unix_ms;         /* when it occurred (or was detected) */
} tg_pending_recovery;

typedef struct {
  tg_httpd *httpd;               /* NULL: --http off */
  char http_address[TG_ADDR_MAX]; /* host:port bound */
  int64_t last_publish_ms;       /* monotonic */
  int64_t last_nodes_publish_ms;
  int dirty;                     /* publish soon: a fault, a world */
  tg_generation_entry generations[TG_GENERATION_LOG]; /* ring, newest at gen_head - 1 */
  size_t gen_head, n_generations;
  tg_pending_recovery pending[TG_PENDING_RECOVERIES];
  size_t n_pending;
  uint64_t faults_by_kind[32][5]; /* recorded by this process: [kind][severity] */
  uint64_t worlds_formed;
  tg_histogram detection, recovery;
  /* Goodput: wall time from the first committed step this leader saw,
   * less the time from each interrupting fault to training resumed. */
  int64_t goodput_start_unix_ms; /* 0: training not seen yet */
  int64_t down_ms;
  int64_t down_since_unix_ms;    /* 0: training is not interrupted */
  uint64_t last_committed;
} tg_dash_state;

/* A WatchWorld subscriber. */
typedef struct tg_watcher {
  tg_rpc_call *call;
  char node_id[TG_NODE_ID_MAX];
  struct tg_watcher *next;
} tg_watcher;

struct tg_coord {
  tg_coord_config cfg;
  tg_etcd *etcd;
  tg_store *store;
  tg_election *election;
  tg_rpc_server *server;
  tg_rpc_method methods[16];     /* the service tables with user = this */
  size_t n_methods;
  int port;
  uint8_t *leader_value;         /* packed LeaderRecord of this coordinator */
  size_t leader_value_len;

  pthread_t ticker;              /* election, liveness, decisions, etcd writes */
  int ticker_started;

  pthread_mutex_t mu;
  pthread_cond_t wake;           /* something changed: decide now */
  int stopping;
  int leader;                    /* serving as leader */
  char leader_hint[TG_ADDR_MAX]; /* the leader's address, as last seen */
  char leader_id[64];
  char leader_http[TG_ADDR_MAX];  /* the leader's dashboard, as last seen */

  tg_node **nodes;               /* registered nodes, in registration order */
  size_t n_nodes, cap_nodes;
  size_t *index;                 /* open-addressing hash of node ids: slot + 1, 0 = empty */
  size_t index_cap;              /* a power of two, > 2 * cap_nodes */
  int decide_needed;             /* an input of the policy changed */
  tg_watcher *watchers;

  Tardigrade__V1__World *world;  /* current world (owned), NULL before the first */
  int64_t world_mod_revision;    /* etcd revision of the world key */
  uint64_t generation;           /* newest generation allocated */
  uint64_t committed_step;       /* the job's newest committed step (see tg_coord_committed) */
  int had_world;
  int restart_requested;         /* a rank fault: re-form the same members */

  Tardigrade__V1__Fault *faults[TG_FAULT_LOG]; /* ring, newest at faults_head - 1 */
  size_t faults_head, n_faults;
  Tardigrade__V1__Fault **unsaved_faults;      /* to write to etcd */
  size_t n_unsaved_faults, cap_unsaved_faults;
  uint64_t fault_seq;
  int64_t faults_in_etcd;                      /* records under faults/, as last counted */

  tg_dash_state dash;
};

/* coordinator.c */
tg_node *tg_coord_find_node(tg_coord *c, const char *id);
/* The job's newest committed step (mu held): a step is committed once
 * every member of the world that wrote it reports it replicated, and it
 * never goes back, whoever joins or dies later. */
uint64_t tg_coord_committed(tg_coord *c);
/* Adds a node to the table (mu held); NULL when the table is full. */
tg_node *tg_coord_add_node(tg_coord *c, const char *id);
/* Something the policy looks at changed: decide soon (mu held). */
void tg_coord_poke(tg_coord *c);
int tg_valid_node_id(const char *id);
/* Derived state of a node (mu held). */
Tardigrade__V1__NodeState tg_coord_node_state(tg_coord *c, const tg_node *n);
/* Records a fault: logs it, counts it toward quarantine, queues it for etcd (mu held). */
void tg_coord_record_fault(tg_coord *c, const Tardigrade__V1__Fault *f);
/* Queues a copy of a fault record for etcd (written, or rewritten, by the ticker; mu held). */
void tg_coord_save_fault(tg_coord *c, const Tardigrade__V1__Fault *f);
/* A status line for refusing requests at a standby. */
tg_rpc_code tg_coord_refuse_standby(tg_coord *c, tg_rpc_status *st);

/* service.c */
extern const tg_rpc_method tg_coord_service_methods[];
extern const size_t tg_coord_service_n_methods;
/* Sends the current world to every watcher (mu held). */
void tg_coord_broadcast_world(tg_coord *c);
/* Ends every agent stream (mu held): used when stepping down. */
void tg_coord_end_streams(tg_coord *c, tg_rpc_code code, const char *why);

/* dashboard.c: the HTTP documents (metrics, JSON API, page) and what
 * only they need. Hooks run with mu held. */
int tg_dash_start(tg_coord *c, char *err, size_t errlen);  /* binds cfg.http_listen, unless off */
void tg_dash_stop(tg_coord *c);
void tg_dash_taken_over(tg_coord *c);                     /* leadership began: history afresh */
void tg_dash_world_formed(tg_coord *c, const Tardigrade__V1__World *w);
void tg_dash_fault_recorded(tg_coord *c, const Tardigrade__V1__Fault *f, int interrupts);
/* Every ticker round, leader or standby: resolves recoveries, publishes
 * when due. May drop and retake mu. */
void tg_dash_tick(tg_coord *c);
/* Copies a heartbeat's health faults into the node (validated, bounded). */
void tg_dash_node_health(tg_node *n, const Tardigrade__V1__HealthReport *h);

/* operator.c */
extern const tg_rpc_method tg_coord_operator_methods[];
extern const size_t tg_coord_operator_n_methods;

#endif
