/* The Operator service: what tgctl and operators call. Read-only views
 * (status, nodes, faults) and the decisions only a person makes: drain a
 * node (take it out of the world now), cordon it (keep it out of new
 * worlds, leave the current one alone), uncordon, clear a quarantine.
 * Decisions are persisted with the node's record by the ticker. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log/log.h"
#include "common/clock/clock.h"
#include "coordinator/coordinator_internal.h"

#define DEFAULT_FAULTS 100

/* Takes mu if this coordinator leads and returns 1; otherwise refuses the
 * call (UNAVAILABLE with the leader's address) and returns 0 unlocked. */
static int lock_leader(tg_coord *c, tg_rpc_call *call) {
  tg_rpc_status st = {0};
  pthread_mutex_lock(&c->mu);
  if (c->leader) return 1;
  tg_coord_refuse_standby(c, &st);
  pthread_mutex_unlock(&c->mu);
  tg_rpc_call_finish(call, st.code, st.message, NULL);
  return 0;
}

static void on_status(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  tg_coord *c = user;
  if (!lock_leader(c, call)) return;
  Tardigrade__V1__StatusResponse r = TARDIGRADE__V1__STATUS_RESPONSE__INIT;
  r.job_id = c->cfg.job_id;
  r.world = c->world;
  r.leader_id = c->cfg.coordinator_id;
  r.nodes_total = (uint32_t)c->n_nodes;
  for (size_t i = 0; i < c->n_nodes; i++) {
    tg_node *n = c->nodes[i];
    Tardigrade__V1__NodeState s = tg_coord_node_state(c, n);
    if (s == TARDIGRADE__V1__NODE_STATE__NODE_ACTIVE) {
      r.nodes_active++;
    } else if (s == TARDIGRADE__V1__NODE_STATE__NODE_SPARE) {
      r.nodes_spare++;
    } else if (s != TARDIGRADE__V1__NODE_STATE__NODE_LEFT && s != TARDIGRADE__V1__NODE_STATE__NODE_JOINING) {
      r.nodes_unhealthy++;
    }
  }
  r.committed_step = tg_coord_committed(c);
  tg_rpc_call_finish(call, TG_RPC_OK, NULL, &r.base);
  pthread_mutex_unlock(&c->mu);
}

static void on_list_nodes(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  tg_coord *c = user;
  if (!lock_leader(c, call)) return;
  size_t n = c->n_nodes;
  Tardigrade__V1__NodeStatus *ns = calloc(n + 1, sizeof *ns);
  Tardigrade__V1__NodeStatus **nsp = calloc(n + 1, sizeof *nsp);
  Tardigrade__V1__HealthReport *health = calloc(n + 1, sizeof *health);
  Tardigrade__V1__RankProgress **prog = calloc(n * TG_MAX_PROGRESS + 1, sizeof *prog);
  if (!ns || !nsp || !health || !prog) {
    pthread_mutex_unlock(&c->mu);
    tg_rpc_call_finish(call, TG_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
    goto out;
  }
  int64_t mono = tg_clock_mono_ms(), unix_now = tg_clock_unix_ms();
  for (size_t i = 0; i < n; i++) {
    tg_node *nd = c->nodes[i];
    tardigrade__v1__node_status__init(&ns[i]);
    tardigrade__v1__health_report__init(&health[i]);
    health[i].healthy = nd->healthy;
    ns[i].info = nd->info;
    ns[i].state = tg_coord_node_state(c, nd);
    ns[i].health = &health[i];
    ns[i].last_heartbeat_unix_ms = unix_now - (mono - nd->last_heartbeat_ms);
    ns[i].fault_count = nd->fault_count;
    ns[i].quarantined_until_unix_ms = nd->quarantined_until_unix_ms;
    ns[i].n_progress = nd->n_progress;
    ns[i].progress = &prog[i * TG_MAX_PROGRESS];
    for (size_t k = 0; k < nd->n_progress; k++) prog[i * TG_MAX_PROGRESS + k] = &nd->progress[k];
    nsp[i] = &ns[i];
  }
  Tardigrade__V1__ListNodesResponse r = TARDIGRADE__V1__LIST_NODES_RESPONSE__INIT;
  r.n_nodes = n;
  r.nodes = nsp;
  tg_rpc_call_finish(call, TG_RPC_OK, NULL, &r.base);
  pthread_mutex_unlock(&c->mu);
out:
  free(ns);
  free(nsp);
  free(health);
  free(prog);
}

static void on_list_faults(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  tg_coord *c = user;
  const Tardigrade__V1__ListFaultsRequest *req = (const Tardigrade__V1__ListFaultsRequest *)msg;
  size_t limit = req->limit ? req->limit : DEFAULT_FAULTS;
  if (limit > TG_FAULT_LOG) limit = TG_FAULT_LOG;
  Tardigrade__V1__Fault **list = calloc(limit + 1, sizeof *list);
  if (!list) {
    tg_rpc_call_finish(call, TG_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
    return;
  }
  if (!lock_leader(c, call)) {
    free(list);
    return;
  }
  size_t k = 0;
  for (; k < limit && k < c->n_faults; k++)
    list[k] = c->faults[(c->faults_head - 1 - k) % TG_FAULT_LOG];
  Tardigrade__V1__ListFaultsResponse r = TARDIGRADE__V1__LIST_FAULTS_RESPONSE__INIT;
  r.n_faults = k;
  r.faults = list;
  tg_rpc_call_finish(call, TG_RPC_OK, NULL, &r.base);
  pthread_mutex_unlock(&c->mu);
  free(list);
}

typedef enum { OP_DRAIN, OP_CORDON, OP_UNCORDON, OP_CLEAR_QUARANTINE } node_op;

static void node_decision(tg_rpc_call *call, const ProtobufCMessage *msg, tg_coord *c, node_op op) {
  const Tardigrade__V1__NodeRequest *req = (const Tardigrade__V1__NodeRequest *)msg;
  tg_rpc_status st = {0};
  if (!tg_valid_node_id(req->node_id) || strlen(req->reason) >= 1024) {
    tg_rpc_call_finish(call, TG_RPC_INVALID_ARGUMENT,
                       "node_id must be 1..63 bytes of [A-Za-z0-9._-], reason under 1024 bytes", NULL);
    return;
  }
  pthread_mutex_lock(&c->mu);
  if (!c->leader) {
    tg_coord_refuse_standby(c, &st);
    goto refuse;
  }
  tg_node *n = tg_coord_find_node(c, req->node_id);
  if (!n) {
    tg_rpc_status_set(&st, TG_RPC_NOT_FOUND, "no node %s in job %s", req->node_id, c->cfg.job_id);
    goto refuse;
  }
  static const char *const names[] = {"drain", "cordon", "uncordon", "clear quarantine"};
  switch (op) {
  case OP_DRAIN: n->admin = TG_ADMIN_DRAINING; break;
  case OP_CORDON: n->admin = TG_ADMIN_CORDONED; break;
  case OP_UNCORDON: n->admin = TG_ADMIN_NONE; break;
  case OP_CLEAR_QUARANTINE:
    n->quarantined_until_unix_ms = 0;
    n->n_recent_faults = 0;
    break;
  }
  n->dirty = 1;
  tg_coord_poke(c);
  TG_INFO("operator: %s node %s%s%s", names[op], n->id, req->reason[0] ? ": " : "", req->reason);
  Tardigrade__V1__NodeResponse r = TARDIGRADE__V1__NODE_RESPONSE__INIT;
  r.state = tg_coord_node_state(c, n);
  tg_rpc_call_finish(call, TG_RPC_OK, NULL, &r.base);
  pthread_mutex_unlock(&c->mu);
  return;
refuse:
  pthread_mutex_unlock(&c->mu);
  tg_rpc_call_finish(call, st.code, st.message, NULL);
}

static void on_drain(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  node_decision(call, msg, user, OP_DRAIN);
}
static void on_cordon(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  node_decision(call, msg, user, OP_CORDON);
}
static void on_uncordon(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  node_decision(call, msg, user, OP_UNCORDON);
}
static void on_clear_quarantine(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  node_decision(call, msg, user, OP_CLEAR_QUARANTINE);
}

#define OPS "/tardigrade.v1.Operator/"
#define NODE_OP(name, fn)                                                                  \
  {.path = OPS name, .kind = TG_RPC_UNARY, .request = &tardigrade__v1__node_request__descriptor, \
   .response = &tardigrade__v1__node_response__descriptor, .max_request_bytes = 4 << 10,    \
   .on_message = fn}

const tg_rpc_method tg_coord_operator_methods[] = {
    {.path = OPS "Status", .kind = TG_RPC_UNARY, .request = &tardigrade__v1__status_request__descriptor,
     .response = &tardigrade__v1__status_response__descriptor, .max_request_bytes = 1 << 10,
     .on_message = on_status},
    {.path = OPS "ListNodes", .kind = TG_RPC_UNARY,
     .request = &tardigrade__v1__list_nodes_request__descriptor,
     .response = &tardigrade__v1__list_nodes_response__descriptor, .max_request_bytes = 1 << 10,
     .on_message = on_list_nodes},
    {.path = OPS "ListFaults", .kind = TG_RPC_UNARY,
     .request = &tardigrade__v1__list_faults_request__descriptor,
     .response = &tardigrade__v1__list_faults_response__descriptor, .max_request_bytes = 1 << 10,
     .on_message = on_list_faults},
    NODE_OP("Drain", on_drain),
    NODE_OP("Cordon", on_cordon),
    NODE_OP("Uncordon", on_uncordon),
    NODE_OP("ClearQuarantine", on_clear_quarantine),
};
const size_t tg_coord_operator_n_methods =
    sizeof tg_coord_operator_methods / sizeof tg_coord_operator_methods[0];
