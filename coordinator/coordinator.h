/* tg-coordinator as a library: the rendezvous state machine, its gRPC
 * services and its leader election, in one object that main.c (and tests)
 * configure, start and free.
 *
 * What it does: nodes register and heartbeat; the leader keeps their
 * liveness in memory, decides worlds with the placement policy
 * (policy.h), commits each world to etcd under a new generation (store.h)
 * and pushes it to every node's world stream. Every coordinator of a job
 * campaigns for leadership (election.h); standbys answer agents with
 * UNAVAILABLE and the leader's address, and take over, reloading state
 * from etcd, when the leader's lease lapses. */
#ifndef TG_COORDINATOR_H
#define TG_COORDINATOR_H

#include <stddef.h>
#include <stdint.h>

#include "common/rpc/rpc.h"
#include "coordinator/policy.h"

#define TG_ADDR_MAX 256

typedef struct {
  char coordinator_id[64];       /* unique among the job's coordinators */
  char job_id[64];
  char listen[TG_ADDR_MAX];      /* gRPC for agents and operators: host:port or unix:/path */
  char advertise[TG_ADDR_MAX];   /* how agents reach this coordinator; "" = listen */
  char etcd_endpoints[1024];     /* comma-separated */
  const tg_rpc_tls *etcd_tls;    /* NULL: plaintext */
  char etcd_user[64];
  char etcd_password[128];
  const tg_rpc_tls *tls;         /* server TLS for agents; NULL: plaintext */
  tg_policy_spec policy;
  int64_t heartbeat_interval_ms;
  int64_t heartbeat_timeout_ms;
  int64_t leader_ttl_s;          /* the election lease */
  int64_t quarantine_faults;     /* faults within the window that quarantine a node; 0: never */
  int64_t quarantine_window_ms;
  int64_t quarantine_cooldown_ms;
  char store_address[TG_ADDR_MAX]; /* handed out in worlds for the gloo store ("" = none) */
  int threads;                   /* RPC handler threads */
  char http_listen[TG_ADDR_MAX]; /* dashboard, /metrics, JSON API: host:port; "" or "off": none */
} tg_coord_config;

/* Fills cfg with defaults (see main.c --help for what they are). */
void tg_coord_config_defaults(tg_coord_config *cfg);

typedef struct tg_coord tg_coord;

/* Validates the config, connects to etcd and binds the listen address.
 * NULL with a reason in err on failure. */
tg_coord *tg_coord_new(const tg_coord_config *cfg, char *err, size_t errlen);

/* Starts serving and campaigning. */
int tg_coord_start(tg_coord *c, char *err, size_t errlen);

/* The TCP port bound (useful with listen "127.0.0.1:0"); 0 for unix sockets. */
int tg_coord_port(const tg_coord *c);

/* The dashboard's TCP port (the chosen one with port 0); 0 when --http off. */
int tg_coord_http_port(const tg_coord *c);

/* 1 while this coordinator is the job's leader. */
int tg_coord_is_leader(tg_coord *c);

/* Resigns leadership (if held), stops serving and frees. */
void tg_coord_free(tg_coord *c);

#endif
