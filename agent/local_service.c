/* The trainers' local service, on a unix socket: Join (wait for a world in
 * which this node holds ranks, and learn this slot's rank, the node's
 * checkpoint store, where buddies reach this agent and where shards are
 * persisted), ReportProgress (step, last collective entered, step time:
 * what the hang detector and the coordinator's heartbeats are made of; a
 * reported step also means its shard is in the store, so it is handed to
 * the replicator, and the answer says how far replication of the slot
 * got), Replicated (just that answer) and ReportFault (a collective
 * timeout, a CUDA error, a NaN loss, forwarded to the coordinator with the
 * rank filled in). Requests are validated like any other daemon's: the
 * socket is local, but a trainer is arbitrary user code. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent_internal.h"
#include "common/clock/clock.h"
#include "common/log/log.h"

#define MAX_TEXT 1024

/* The world a trainer in `slot` gets, or NULL if it must wait (mu held). */
static const Tardigrade__V1__WorldUpdate *usable_world(tg_agent *a, uint64_t known_generation) {
  const Tardigrade__V1__WorldUpdate *u = a->update;
  if (!u || !u->world || u->world->generation <= known_generation) return NULL;
  if (u->position < 0 || u->world->world_size == 0) return NULL; /* a spare, or suspended */
  return u;
}

/* Answers one join with the current world (mu held). */
static void answer_join(tg_agent *a, tg_rpc_call *call, uint32_t slot) {
  const Tardigrade__V1__WorldUpdate *u = a->update;
  Tardigrade__V1__JoinResponse r = TARDIGRADE__V1__JOIN_RESPONSE__INIT;
  r.world = u->world;
  r.rank = u->position * (int32_t)a->cfg.slots + (int32_t)slot;
  r.shm_name = a->ckpt_name;
  r.agent_address = a->advertise;
  r.node_id = a->cfg.node_id;
  r.ckpt_dir = a->cfg.ckpt_dir;
  a->slots[slot].generation = u->world->generation;
  a->slots[slot].rank = r.rank;
  a->slots[slot].has_progress = 0;
  a->seen_seq[slot] = 0; /* a new process counts its collectives from 1 */
  tg_rpc_call_finish(call, TG_RPC_OK, NULL, &r.base);
}

void tg_agent_answer_joins(tg_agent *a) {
  tg_pending_join **p = &a->pending;
  while (*p) {
    tg_pending_join *j = *p;
    if (usable_world(a, j->known_generation)) {
      answer_join(a, j->call, j->slot);
      *p = j->next;
      free(j);
    } else {
      p = &j->next;
    }
  }
}

void tg_agent_end_joins(tg_agent *a, tg_rpc_code code, const char *why) {
  while (a->pending) {
    tg_pending_join *j = a->pending;
    a->pending = j->next;
    tg_rpc_call_finish(j->call, code, why, NULL);
    free(j);
  }
}

static void on_join(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  tg_agent *a = user;
  const Tardigrade__V1__JoinRequest *req = (const Tardigrade__V1__JoinRequest *)msg;
  if (req->slot >= (uint32_t)a->cfg.slots || req->pid <= 0) {
    char why[96];
    snprintf(why, sizeof why, "slot must be 0..%" PRId64 " and pid positive", a->cfg.slots - 1);
    tg_rpc_call_finish(call, TG_RPC_INVALID_ARGUMENT, why, NULL);
    return;
  }
  tg_pending_join *j = calloc(1, sizeof *j);
  if (!j) {
    tg_rpc_call_finish(call, TG_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
    return;
  }
  pthread_mutex_lock(&a->mu);
  a->slots[req->slot].pid = req->pid;
  a->slots[req->slot].rank = -1;
  if (a->stopping) {
    pthread_mutex_unlock(&a->mu);
    free(j);
    tg_rpc_call_finish(call, TG_RPC_UNAVAILABLE, "the agent is draining", NULL);
    return;
  }
  if (usable_world(a, req->known_generation)) {
    answer_join(a, call, req->slot);
    pthread_mutex_unlock(&a->mu);
    free(j);
    return;
  }
  /* Wait for the world; the call's deadline bounds the wait. */
  j->call = call;
  j->slot = req->slot;
  j->known_generation = req->known_generation;
  j->next = a->pending;
  a->pending = j;
  pthread_mutex_unlock(&a->mu);
}

static void on_join_done(tg_rpc_call *call, int cancelled, void *user) {
  tg_agent *a = user;
  pthread_mutex_lock(&a->mu);
  for (tg_pending_join **p = &a->pending; *p; p = &(*p)->next) {
    if ((*p)->call == call) {
      tg_pending_join *j = *p;
      *p = j->next;
      free(j);
      break;
    }
  }
  pthread_mutex_unlock(&a->mu);
}

static void on_progress(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  tg_agent *a = user;
  const Tardigrade__V1__ProgressRequest *req = (const Tardigrade__V1__ProgressRequest *)msg;
  if (req->slot >= (uint32_t)a->cfg.slots || !req->progress) {
    tg_rpc_call_finish(call, TG_RPC_INVALID_ARGUMENT, "needs a slot of this node and progress", NULL);
    return;
  }
  Tardigrade__V1__ProgressResponse r = TARDIGRADE__V1__PROGRESS_RESPONSE__INIT;
  pthread_mutex_lock(&a->mu);
  tg_agent_slot *s = &a->slots[req->slot];
  uint64_t current = a->update && a->update->world ? a->update->world->generation : 0;
  r.generation = current;
  if (s->rank < 0 || req->generation != s->generation) {
    /* Progress from a world this slot is not in (any more): the trainer
     * learns the current generation and must re-join. */
    pthread_mutex_unlock(&a->mu);
    r.replicated_step = tg_replicator_replicated(a->replicator, (int)req->slot, req->generation);
    tg_rpc_call_finish(call, TG_RPC_OK, NULL, &r.base);
    return;
  }
  s->progress = *req->progress;
  s->progress.base.descriptor = &tardigrade__v1__rank_progress__descriptor;
  s->progress.rank = s->rank;
  s->progress.updated_unix_ms = tg_clock_mono_ms();
  s->has_progress = 1;
  tg_progress_record rec = {.rank = req->slot,
                            .step = s->progress.step,
                            .collective_seq = s->progress.collective_seq,
                            .step_time_ms = s->progress.step_time_ms,
                            .updated_ms = tg_clock_mono_ms()};
  tg_progress_status ps = tg_progress_update(a->detector, &rec);
  pthread_mutex_unlock(&a->mu);
  if (ps != TG_PROGRESS_OK) {
    tg_rpc_call_finish(call, TG_RPC_INVALID_ARGUMENT, tg_progress_status_text(ps), NULL);
    return;
  }
  tg_replicator_written(a->replicator, (int)req->slot, req->generation, req->progress->step);
  r.replicated_step = tg_replicator_replicated(a->replicator, (int)req->slot, req->generation);
  tg_rpc_call_finish(call, TG_RPC_OK, NULL, &r.base);
}

static void on_replicated(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  tg_agent *a = user;
  const Tardigrade__V1__ReplicatedRequest *req = (const Tardigrade__V1__ReplicatedRequest *)msg;
  if (req->slot >= (uint32_t)a->cfg.slots) {
    char why[64];
    snprintf(why, sizeof why, "slot must be 0..%" PRId64, a->cfg.slots - 1);
    tg_rpc_call_finish(call, TG_RPC_INVALID_ARGUMENT, why, NULL);
    return;
  }
  Tardigrade__V1__ReplicatedResponse r = TARDIGRADE__V1__REPLICATED_RESPONSE__INIT;
  pthread_mutex_lock(&a->mu);
  r.generation = a->update && a->update->world ? a->update->world->generation : 0;
  pthread_mutex_unlock(&a->mu);
  r.replicated_step = tg_replicator_replicated(a->replicator, (int)req->slot, req->generation);
  tg_rpc_call_finish(call, TG_RPC_OK, NULL, &r.base);
}

static void on_trainer_fault(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  tg_agent *a = user;
  const Tardigrade__V1__TrainerFaultRequest *req = (const Tardigrade__V1__TrainerFaultRequest *)msg;
  const Tardigrade__V1__Fault *f = req->fault;
  if (req->slot >= (uint32_t)a->cfg.slots || !f || strlen(f->detail) >= MAX_TEXT ||
      strlen(f->collective_op) >= 64 || strlen(f->component) >= 256 ||
      !protobuf_c_enum_descriptor_get_value(&tardigrade__v1__fault_kind__descriptor, f->kind) ||
      f->severity < TARDIGRADE__V1__SEVERITY__SEVERITY_INFO ||
      f->severity > TARDIGRADE__V1__SEVERITY__SEVERITY_FATAL) {
    tg_rpc_call_finish(call, TG_RPC_INVALID_ARGUMENT,
                       "needs a slot of this node, a known fault kind and severity, detail under 1024 bytes",
                       NULL);
    return;
  }
  pthread_mutex_lock(&a->mu);
  int rank = a->slots[req->slot].rank;
  pthread_mutex_unlock(&a->mu);
  tg_agent_report(a, f->kind, f->severity, rank, f->detail, f->collective_seq, f->collective_op,
                  f->component, 0);
  Tardigrade__V1__TrainerFaultResponse r = TARDIGRADE__V1__TRAINER_FAULT_RESPONSE__INIT;
  tg_rpc_call_finish(call, TG_RPC_OK, NULL, &r.base);
}

#define SVC "/tardigrade.v1.Agent/"
static const tg_rpc_method local_methods[] = {
    {.path = SVC "Join", .kind = TG_RPC_UNARY, .request = &tardigrade__v1__join_request__descriptor,
     .response = &tardigrade__v1__join_response__descriptor, .max_request_bytes = 1 << 10,
     .on_message = on_join, .on_done = on_join_done},
    {.path = SVC "ReportProgress", .kind = TG_RPC_UNARY,
     .request = &tardigrade__v1__progress_request__descriptor,
     .response = &tardigrade__v1__progress_response__descriptor, .max_request_bytes = 4 << 10,
     .on_message = on_progress},
    {.path = SVC "ReportFault", .kind = TG_RPC_UNARY,
     .request = &tardigrade__v1__trainer_fault_request__descriptor,
     .response = &tardigrade__v1__trainer_fault_response__descriptor, .max_request_bytes = 8 << 10,
     .on_message = on_trainer_fault},
    {.path = SVC "Replicated", .kind = TG_RPC_UNARY, .request = &tardigrade__v1__replicated_request__descriptor,
     .response = &tardigrade__v1__replicated_response__descriptor, .max_request_bytes = 1 << 10,
     .on_message = on_replicated},
};

_Static_assert(sizeof local_methods / sizeof local_methods[0] ==
                   sizeof ((tg_agent *)0)->local_methods / sizeof ((tg_agent *)0)->local_methods[0],
               "tg_agent.local_methods holds every method of the local service");

int tg_agent_local_register(tg_agent *a, char *err, size_t errlen) {
  for (size_t i = 0; i < sizeof local_methods / sizeof local_methods[0]; i++) {
    a->local_methods[i] = local_methods[i];
    a->local_methods[i].user = a;
    if (tg_rpc_server_register(a->local, &a->local_methods[i]) != 0) {
      snprintf(err, errlen, "cannot register %s", local_methods[i].path);
      return -1;
    }
  }
  return 0;
}
