/* The Coordinator service: what agents call. Register, heartbeat stream,
 * world stream, fault reports, leave (protocol in coordinator.proto).
 *
 * Every request is validated before it touches state: a node id must be a
 * short identifier, a request must come from the node's current
 * incarnation, strings and repeated fields are bounded, and a fault about
 * a rank must name the current generation (fencing). Refusals carry a
 * status and one line that says what to do. Handlers only change memory
 * under the lock and poke the ticker, which does the slow work. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log/log.h"
#include "common/clock/clock.h"
#include "coordinator/coordinator_internal.h"

#define MAX_TEXT 256      /* hostnames, addresses, names */
#define MAX_DETAIL 1024   /* fault details */
#define MAX_GPUS 64
#define MAX_NICS 64
#define MAX_CAPS 32

static int text_ok(const char *s, size_t max) { return s && strlen(s) < max; }

/* Checks a NodeInfo from the wire; returns NULL or what is wrong. */
static const char *check_node_info(const tg_coord *c, const Tardigrade__V1__NodeInfo *n) {
  if (!n) return "node is missing";
  if (!tg_valid_node_id(n->node_id)) return "node_id must be 1..63 bytes of [A-Za-z0-9._-]";
  if (n->slots != c->cfg.policy.slots_per_node) return "slots differ from the job's slots per node";
  if (!text_ok(n->hostname, MAX_TEXT) || !text_ok(n->address, MAX_TEXT) ||
      !text_ok(n->agent_version, MAX_TEXT))
    return "hostname, address and agent_version must be under 256 bytes";
  if (n->n_gpus > MAX_GPUS || n->n_nics > MAX_NICS || n->n_capabilities > MAX_CAPS)
    return "too many gpus (64), nics (64) or capabilities (32)";
  for (size_t i = 0; i < n->n_gpus; i++)
    if (!n->gpus[i] || !text_ok(n->gpus[i]->uuid, MAX_TEXT) || !text_ok(n->gpus[i]->name, MAX_TEXT))
      return "gpu uuid and name must be under 256 bytes";
  for (size_t i = 0; i < n->n_nics; i++)
    if (!n->nics[i] || !text_ok(n->nics[i]->name, MAX_TEXT) || !text_ok(n->nics[i]->address, MAX_TEXT))
      return "nic name and address must be under 256 bytes";
  for (size_t i = 0; i < n->n_capabilities; i++)
    if (!text_ok(n->capabilities[i], MAX_TEXT)) return "capabilities must be under 256 bytes";
  return NULL;
}

static Tardigrade__V1__NodeInfo *copy_info(const Tardigrade__V1__NodeInfo *info) {
  size_t len = tardigrade__v1__node_info__get_packed_size(info);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) return NULL;
  tardigrade__v1__node_info__pack(info, buf);
  Tardigrade__V1__NodeInfo *copy = tardigrade__v1__node_info__unpack(NULL, len, buf);
  free(buf);
  return copy;
}

/* The node a request names, if it is known and the incarnation is current
 * (mu held); otherwise sets st and returns NULL. */
static tg_node *current_node(tg_coord *c, const char *node_id, uint64_t incarnation,
                             tg_rpc_status *st) {
  if (!tg_valid_node_id(node_id)) {
    tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "node_id must be 1..63 bytes of [A-Za-z0-9._-]");
    return NULL;
  }
  tg_node *n = tg_coord_find_node(c, node_id);
  if (!n) {
    tg_rpc_status_set(st, TG_RPC_NOT_FOUND, "unknown node %s; register again", node_id);
    return NULL;
  }
  if (n->incarnation != incarnation) {
    tg_rpc_status_set(st, TG_RPC_FAILED_PRECONDITION,
                      "node %s: incarnation %" PRIu64 " is not the current %" PRIu64 "; register again",
                      node_id, incarnation, n->incarnation);
    return NULL;
  }
  return n;
}

/* Takes mu and returns the node a request names, or NULL with st set when
 * this coordinator is a standby or the node is unknown or stale. Either
 * way the caller unlocks. */
static tg_node *lock_current_node(tg_coord *c, const char *node_id, uint64_t incarnation,
                                  tg_rpc_status *st) {
  pthread_mutex_lock(&c->mu);
  if (!c->leader) {
    tg_coord_refuse_standby(c, st);
    return NULL;
  }
  return current_node(c, node_id, incarnation, st);
}

static void finish_status(tg_rpc_call *call, const tg_rpc_status *st) {
  tg_rpc_call_finish(call, st->code, st->message, NULL);
}

/* ---------------------------------------------------------------- Register */

static void on_register(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  tg_coord *c = user;
  const Tardigrade__V1__RegisterRequest *req = (const Tardigrade__V1__RegisterRequest *)msg;
  tg_rpc_status st = {0};
  const char *bad = check_node_info(c, req->node);
  if (bad) {
    tg_rpc_call_finish(call, TG_RPC_INVALID_ARGUMENT, bad, NULL);
    return;
  }
  if (strcmp(req->job_id, c->cfg.job_id) != 0) {
    tg_rpc_status_set(&st, TG_RPC_FAILED_PRECONDITION, "this coordinator serves job '%s', not '%s'",
                      c->cfg.job_id, req->job_id);
    finish_status(call, &st);
    return;
  }
  Tardigrade__V1__NodeInfo *info = copy_info(req->node);
  if (!info) {
    tg_rpc_call_finish(call, TG_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
    return;
  }
  pthread_mutex_lock(&c->mu);
  if (!c->leader) {
    tg_coord_refuse_standby(c, &st);
    goto refuse;
  }
  tg_node *n = tg_coord_find_node(c, info->node_id);
  int is_new = n == NULL;
  if (!n) n = tg_coord_add_node(c, info->node_id);
  if (!n) {
    tg_rpc_status_set(&st, TG_RPC_RESOURCE_EXHAUSTED, "node table full (%zu nodes)", c->cap_nodes);
    goto refuse;
  }
  if (n->info) protobuf_c_message_free_unpacked(&n->info->base, NULL);
  n->info = info;
  info = NULL;
  uint64_t base = n->incarnation > req->previous_incarnation ? n->incarnation : req->previous_incarnation;
  n->incarnation = base + 1;
  if (is_new) n->registered_unix_ms = tg_clock_unix_ms();
  n->left = 0;
  n->alive = 1;
  n->healthy = 1;
  n->unhealthy_since_ms = 0;
  n->last_heartbeat_ms = tg_clock_mono_ms();
  n->dirty = 1;
  if (n->heartbeat_call) {
    tg_rpc_call_finish(n->heartbeat_call, TG_RPC_FAILED_PRECONDITION,
                       "superseded: the node registered again", NULL);
    n->heartbeat_call = NULL;
  }
  tg_coord_poke(c);
  TG_INFO("node %s registered (incarnation %" PRIu64 ", %s)", n->id, n->incarnation,
          is_new ? "new" : "known");

  Tardigrade__V1__RegisterResponse r = TARDIGRADE__V1__REGISTER_RESPONSE__INIT;
  r.incarnation = n->incarnation;
  r.generation = c->generation;
  r.heartbeat_interval_ms = (uint32_t)c->cfg.heartbeat_interval_ms;
  r.heartbeat_timeout_ms = (uint32_t)c->cfg.heartbeat_timeout_ms;
  r.leader_address = c->leader_hint;
  tg_rpc_call_finish(call, TG_RPC_OK, NULL, &r.base);
  pthread_mutex_unlock(&c->mu);
  return;
refuse:
  pthread_mutex_unlock(&c->mu);
  if (info) protobuf_c_message_free_unpacked(&info->base, NULL);
  finish_status(call, &st);
}

/* --------------------------------------------------------------- Heartbeat */

/* The heartbeat call's data is a copy of its node id (the node itself may
 * be freed when this coordinator steps down). */
static void on_heartbeat(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  tg_coord *c = user;
  const Tardigrade__V1__HeartbeatRequest *req = (const Tardigrade__V1__HeartbeatRequest *)msg;
  tg_rpc_status st = {0};
  char *bound = tg_rpc_call_data(call);
  pthread_mutex_lock(&c->mu);
  if (!c->leader) {
    tg_coord_refuse_standby(c, &st);
    goto refuse;
  }
  if (bound && strcmp(bound, req->node_id) != 0) {
    tg_rpc_status_set(&st, TG_RPC_INVALID_ARGUMENT, "a heartbeat stream carries one node (%s)", bound);
    goto refuse;
  }
  tg_node *n = current_node(c, req->node_id, req->incarnation, &st);
  if (!n) {
    Tardigrade__V1__HeartbeatResponse r = TARDIGRADE__V1__HEARTBEAT_RESPONSE__INIT;
    r.rejoin = 1;
    r.generation = c->generation;
    tg_rpc_call_send(call, &r.base);
    goto refuse;
  }
  if (!bound) {
    bound = strdup(n->id);
    if (!bound) {
      tg_rpc_status_set(&st, TG_RPC_RESOURCE_EXHAUSTED, "out of memory");
      goto refuse;
    }
    tg_rpc_call_set_data(call, bound);
    if (n->heartbeat_call && n->heartbeat_call != call)
      tg_rpc_call_finish(n->heartbeat_call, TG_RPC_FAILED_PRECONDITION,
                         "superseded by a newer heartbeat stream", NULL);
    n->heartbeat_call = call;
    n->notified_generation = 0;
  }
  int64_t now = tg_clock_mono_ms();
  n->last_heartbeat_ms = now;
  if (!n->alive) {
    n->alive = 1;
    n->dirty = 1; /* no longer dead in etcd either */
    tg_coord_poke(c);
  }
  if (req->health) {
    tg_dash_node_health(n, req->health);
    if (!req->health->healthy && n->healthy) {
      n->healthy = 0;
      n->unhealthy_since_ms = now;
      tg_coord_poke(c);
    } else if (req->health->healthy && !n->healthy &&
               now - n->unhealthy_since_ms >= c->cfg.heartbeat_interval_ms) {
      n->healthy = 1;
      n->unhealthy_since_ms = 0;
      tg_coord_poke(c);
    }
  }
  n->n_progress = 0;
  for (size_t i = 0; i < req->n_progress && i < TG_MAX_PROGRESS; i++) {
    if (!req->progress[i]) continue;
    n->progress[n->n_progress] = *req->progress[i];
    n->progress[n->n_progress].base.descriptor = &tardigrade__v1__rank_progress__descriptor;
    n->n_progress++;
  }
  n->committed_step = req->committed_step;
  n->committed_generation = req->generation;
  if (req->generation < c->generation && n->notified_generation < c->generation) {
    Tardigrade__V1__HeartbeatResponse r = TARDIGRADE__V1__HEARTBEAT_RESPONSE__INIT;
    r.generation = c->generation;
    r.node_state = tg_coord_node_state(c, n);
    if (tg_rpc_call_send(call, &r.base) == 0) {
      n->notified_generation = c->generation;
      n->told_state = r.node_state;
    }
  }
  pthread_mutex_unlock(&c->mu);
  return;
refuse:
  pthread_mutex_unlock(&c->mu);
  finish_status(call, &st);
}

static void on_heartbeat_half_close(tg_rpc_call *call, void *user) {
  tg_rpc_call_finish(call, TG_RPC_OK, "heartbeats ended by the agent", NULL);
}

static void on_heartbeat_done(tg_rpc_call *call, int cancelled, void *user) {
  tg_coord *c = user;
  char *bound = tg_rpc_call_data(call);
  pthread_mutex_lock(&c->mu);
  tg_node *n = bound ? tg_coord_find_node(c, bound) : NULL;
  if (n && n->heartbeat_call == call) n->heartbeat_call = NULL;
  pthread_mutex_unlock(&c->mu);
  free(bound);
}

/* -------------------------------------------------------------- WatchWorld */

/* Sends the current world to one watcher (mu held). A node gets its own
 * short update: the header, its position and its ring neighbours; an
 * observer gets the full world, from `full` when the caller serialized it
 * once for all observers. */
static void send_world(tg_coord *c, tg_watcher *w, tg_rpc_payload *full) {
  Tardigrade__V1__WorldUpdate u = TARDIGRADE__V1__WORLD_UPDATE__INIT;
  if (!w->node_id[0]) {
    if (full) {
      tg_rpc_call_send_payload(w->call, full);
      return;
    }
    u.world = c->world;
    u.full = 1;
    u.position = -1;
    tg_rpc_call_send(w->call, &u.base);
    return;
  }
  tg_node *n = tg_coord_find_node(c, w->node_id);
  int p = n ? n->position : -1;
  size_t total = c->world->n_nodes;
  Tardigrade__V1__WorldNode *buddies[2];
  size_t n_buddies = 0;
  if (p >= 0 && total > 1) buddies[n_buddies++] = c->world->nodes[((size_t)p + 1) % total];
  if (p >= 0 && total > 2) buddies[n_buddies++] = c->world->nodes[((size_t)p + total - 1) % total];
  Tardigrade__V1__World header = *c->world; /* shallow: only packed, never freed */
  header.nodes = buddies;
  header.n_nodes = n_buddies;
  u.world = &header;
  u.position = p;
  tg_rpc_call_send(w->call, &u.base);
}

void tg_coord_broadcast_world(tg_coord *c) {
  if (!c->world) return;
  /* Observers share one serialization of the full world (~60 KB at 2,048
   * nodes); nodes get updates of a few hundred bytes each. */
  tg_rpc_payload *full = NULL;
  for (tg_watcher *w = c->watchers; w && !full; w = w->next) {
    if (w->node_id[0]) continue;
    Tardigrade__V1__WorldUpdate u = TARDIGRADE__V1__WORLD_UPDATE__INIT;
    u.world = c->world;
    u.full = 1;
    u.position = -1;
    full = tg_rpc_payload_new(&u.base);
  }
  for (tg_watcher *w = c->watchers; w; w = w->next) send_world(c, w, full);
  tg_rpc_payload_free(full);
}

static void on_watch_world(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  tg_coord *c = user;
  const Tardigrade__V1__WatchWorldRequest *req = (const Tardigrade__V1__WatchWorldRequest *)msg;
  tg_rpc_status st = {0};
  tg_watcher *w = calloc(1, sizeof *w);
  if (!w) {
    tg_rpc_call_finish(call, TG_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
    return;
  }
  pthread_mutex_lock(&c->mu);
  if (!c->leader) {
    tg_coord_refuse_standby(c, &st);
    goto refuse;
  }
  /* An empty node id is an observer (tgctl, dashboards). */
  if (req->node_id[0] && !current_node(c, req->node_id, req->incarnation, &st)) goto refuse;
  w->call = call;
  snprintf(w->node_id, sizeof w->node_id, "%s", req->node_id);
  w->next = c->watchers;
  c->watchers = w;
  tg_rpc_call_set_data(call, w);
  if (c->world && c->world->generation > req->known_generation) send_world(c, w, NULL);
  pthread_mutex_unlock(&c->mu);
  return;
refuse:
  pthread_mutex_unlock(&c->mu);
  free(w);
  finish_status(call, &st);
}

static void on_watch_world_done(tg_rpc_call *call, int cancelled, void *user) {
  tg_coord *c = user;
  pthread_mutex_lock(&c->mu);
  for (tg_watcher **p = &c->watchers; *p; p = &(*p)->next) {
    if ((*p)->call == call) {
      tg_watcher *w = *p;
      *p = w->next;
      free(w);
      break;
    }
  }
  pthread_mutex_unlock(&c->mu);
}

void tg_coord_end_streams(tg_coord *c, tg_rpc_code code, const char *why) {
  while (c->watchers) {
    tg_watcher *w = c->watchers;
    c->watchers = w->next;
    tg_rpc_call_finish(w->call, code, why, NULL);
    free(w);
  }
  for (size_t i = 0; i < c->n_nodes; i++) {
    if (!c->nodes[i]->heartbeat_call) continue;
    tg_rpc_call_finish(c->nodes[i]->heartbeat_call, code, why, NULL);
    c->nodes[i]->heartbeat_call = NULL;
  }
}

/* ------------------------------------------------------------- ReportFault */

static void on_report_fault(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  tg_coord *c = user;
  const Tardigrade__V1__ReportFaultRequest *req = (const Tardigrade__V1__ReportFaultRequest *)msg;
  tg_rpc_status st = {0};
  const Tardigrade__V1__Fault *f = req->fault;
  if (!f || !text_ok(f->detail, MAX_DETAIL) || !text_ok(f->collective_op, MAX_TEXT) ||
      !text_ok(f->component, MAX_TEXT) || f->rank < -1 ||
      f->severity < TARDIGRADE__V1__SEVERITY__SEVERITY_INFO ||
      f->severity > TARDIGRADE__V1__SEVERITY__SEVERITY_FATAL ||
      !protobuf_c_enum_descriptor_get_value(&tardigrade__v1__fault_kind__descriptor, f->kind) ||
      f->kind == TARDIGRADE__V1__FAULT_KIND__FAULT_KIND_UNSPECIFIED) {
    tg_rpc_call_finish(call, TG_RPC_INVALID_ARGUMENT,
                       "fault needs a known kind, a severity, rank >= -1 and detail under 1024 bytes",
                       NULL);
    return;
  }
  tg_node *n = lock_current_node(c, req->node_id, req->incarnation, &st);
  if (!n) goto refuse;
  if (req->generation > c->generation) {
    tg_rpc_status_set(&st, TG_RPC_FAILED_PRECONDITION,
                      "generation %" PRIu64 " is newer than the current %" PRIu64, req->generation,
                      c->generation);
    goto refuse;
  }
  if (f->rank >= 0 && req->generation != c->generation) {
    tg_rpc_status_set(&st, TG_RPC_FAILED_PRECONDITION,
                      "stale generation %" PRIu64 " (current %" PRIu64 "); re-join", req->generation,
                      c->generation);
    goto refuse;
  }
  if (f->rank >= 0 && (!c->world || (uint32_t)f->rank >= c->world->world_size)) {
    tg_rpc_status_set(&st, TG_RPC_INVALID_ARGUMENT, "rank %d is not in generation %" PRIu64, f->rank,
                      c->generation);
    goto refuse;
  }
  /* The fault is recorded against the node that reported it. */
  Tardigrade__V1__Fault copy = *f;
  copy.node_id = n->id;
  copy.generation = req->generation;
  copy.fault_id = (char *)"";
  tg_coord_record_fault(c, &copy);
  if (f->severity >= TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR) {
    if (f->rank >= 0 && n->position >= 0 && f->severity < TARDIGRADE__V1__SEVERITY__SEVERITY_FATAL) {
      c->restart_requested = 1;
    } else {
      n->healthy = 0;
      n->unhealthy_since_ms = tg_clock_mono_ms();
      /* A node whose replica of the parameters was corrupted passes every
       * health check (nothing it can see is wrong), so its next healthy
       * heartbeat would bring it straight back: keep it out for the
       * cooldown, as after repeated faults (an operator may clear it). */
      if (f->kind == TARDIGRADE__V1__FAULT_KIND__FAULT_SILENT_DATA_CORRUPTION && c->cfg.quarantine_cooldown_ms > 0) {
        n->quarantined_until_unix_ms = tg_clock_unix_ms() + c->cfg.quarantine_cooldown_ms;
        n->dirty = 1;
        TG_WARN("node %s quarantined for %" PRId64 " ms: silent data corruption in its replica", n->id,
                c->cfg.quarantine_cooldown_ms);
      }
    }
    tg_coord_poke(c);
  }
  Tardigrade__V1__ReportFaultResponse r = TARDIGRADE__V1__REPORT_FAULT_RESPONSE__INIT;
  Tardigrade__V1__Fault *logged = c->faults[(c->faults_head - 1) % TG_FAULT_LOG];
  r.fault_id = logged ? logged->fault_id : (char *)"";
  tg_rpc_call_finish(call, TG_RPC_OK, NULL, &r.base);
  pthread_mutex_unlock(&c->mu);
  return;
refuse:
  pthread_mutex_unlock(&c->mu);
  finish_status(call, &st);
}

/* ------------------------------------------------------------------- Leave */

static void on_leave(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  tg_coord *c = user;
  const Tardigrade__V1__LeaveRequest *req = (const Tardigrade__V1__LeaveRequest *)msg;
  tg_rpc_status st = {0};
  if (!text_ok(req->reason, MAX_DETAIL)) {
    tg_rpc_call_finish(call, TG_RPC_INVALID_ARGUMENT, "reason must be under 1024 bytes", NULL);
    return;
  }
  tg_node *n = lock_current_node(c, req->node_id, req->incarnation, &st);
  if (!n) goto refuse;
  n->left = 1;
  n->dirty = 1;
  if (n->heartbeat_call) {
    tg_rpc_call_finish(n->heartbeat_call, TG_RPC_OK, "node left", NULL);
    n->heartbeat_call = NULL;
  }
  TG_INFO("node %s left: %s", n->id, req->reason[0] ? req->reason : "(no reason)");
  tg_coord_poke(c);
  Tardigrade__V1__LeaveResponse r = TARDIGRADE__V1__LEAVE_RESPONSE__INIT;
  tg_rpc_call_finish(call, TG_RPC_OK, NULL, &r.base);
  pthread_mutex_unlock(&c->mu);
  return;
refuse:
  pthread_mutex_unlock(&c->mu);
  finish_status(call, &st);
}

/* ------------------------------------------------------------------- table */

#define SVC "/tardigrade.v1.Coordinator/"
const tg_rpc_method tg_coord_service_methods[] = {
    {.path = SVC "RegisterNode", .kind = TG_RPC_UNARY,
     .request = &tardigrade__v1__register_request__descriptor,
     .response = &tardigrade__v1__register_response__descriptor, .max_request_bytes = 64 << 10,
     .on_message = on_register},
    {.path = SVC "Heartbeat", .kind = TG_RPC_BIDI_STREAM,
     .request = &tardigrade__v1__heartbeat_request__descriptor,
     .response = &tardigrade__v1__heartbeat_response__descriptor, .max_request_bytes = 64 << 10,
     .on_message = on_heartbeat, .on_half_close = on_heartbeat_half_close,
     .on_done = on_heartbeat_done},
    {.path = SVC "ReportFault", .kind = TG_RPC_UNARY,
     .request = &tardigrade__v1__report_fault_request__descriptor,
     .response = &tardigrade__v1__report_fault_response__descriptor, .max_request_bytes = 16 << 10,
     .on_message = on_report_fault},
    {.path = SVC "WatchWorld", .kind = TG_RPC_SERVER_STREAM,
     .request = &tardigrade__v1__watch_world_request__descriptor,
     .response = &tardigrade__v1__world_update__descriptor, .max_request_bytes = 4 << 10,
     .on_message = on_watch_world, .on_done = on_watch_world_done},
    {.path = SVC "Leave", .kind = TG_RPC_UNARY, .request = &tardigrade__v1__leave_request__descriptor,
     .response = &tardigrade__v1__leave_response__descriptor, .max_request_bytes = 4 << 10,
     .on_message = on_leave},
};
const size_t tg_coord_service_n_methods = sizeof tg_coord_service_methods / sizeof tg_coord_service_methods[0];
