/* The coordinator's state machine: node table, liveness, decisions, worlds.
 *
 * One thread, the ticker, does everything that takes time or talks to
 * etcd: it campaigns until this coordinator leads, loads the job's state
 * from etcd on taking over, then loops: declare nodes whose heartbeats
 * stopped dead, expire quarantines, ask the placement policy for a
 * decision when something changed, commit a new world under the next
 * generation, push it to every node, and write changed node records and
 * new faults to etcd in batches. RPC handlers (service.c, operator.c) only
 * change memory under the lock and wake the ticker, so a fault reported by
 * an agent reaches a decision within one wake-up, not one tick.
 *
 * etcd writes grow with events (registrations, state changes, faults,
 * worlds), never with heartbeats: liveness lives in this process, and a
 * coordinator that takes over gives every known node a full heartbeat
 * timeout to find it. */
#include "coordinator/coordinator_internal.h"
#include "common/clock/clock.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log/log.h"

#define TICK_MS 20
/* Decisions are coalesced: a burst of registrations (thousands of nodes
 * starting at once) costs one policy run per DECIDE_MIN_GAP_MS, not one
 * per node. */
#define DECIDE_MIN_GAP_MS 5
#define CAMPAIGN_WAIT_MS 500



int tg_valid_node_id(const char *id) {
  size_t n = id ? strlen(id) : 0;
  if (n == 0 || n >= TG_NODE_ID_MAX) return 0;
  for (size_t i = 0; i < n; i++) {
    char ch = id[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
          ch == '.' || ch == '_' || ch == '-'))
      return 0;
  }
  return 1;
}

void tg_coord_config_defaults(tg_coord_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  snprintf(cfg->job_id, sizeof cfg->job_id, "default");
  snprintf(cfg->listen, sizeof cfg->listen, "127.0.0.1:7070");
  snprintf(cfg->etcd_endpoints, sizeof cfg->etcd_endpoints, "127.0.0.1:2379");
  cfg->policy = (tg_policy_spec){.min_nodes = 1, .max_nodes = 1, .slots_per_node = 1,
                                 .granularity = 1, .last_call_ms = 1000};
  cfg->heartbeat_interval_ms = 500;
  cfg->heartbeat_timeout_ms = 2000;
  cfg->leader_ttl_s = 2;
  cfg->quarantine_faults = 3;
  cfg->quarantine_window_ms = 600000;
  cfg->quarantine_cooldown_ms = 300000;
  cfg->threads = 4;
  snprintf(cfg->http_listen, sizeof cfg->http_listen, "127.0.0.1:8080");
}

/* ------------------------------------------------------------ node table */

/* Position of id in the current world by a scan (used once per registration). */
static int world_position_scan(tg_coord *c, const char *id) {
  for (size_t p = 0; c->world && p < c->world->n_nodes; p++)
    if (strcmp(c->world->nodes[p]->node_id, id) == 0) return (int)p;
  return -1;
}

static size_t hash_id(const char *id) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  for (; *id; id++) h = (h ^ (uint8_t)*id) * 1099511628211ULL;
  return (size_t)h;
}

tg_node *tg_coord_find_node(tg_coord *c, const char *id) {
  size_t mask = c->index_cap - 1;
  for (size_t h = hash_id(id) & mask;; h = (h + 1) & mask) {
    size_t v = c->index[h];
    if (v == 0) return NULL;
    if (strcmp(c->nodes[v - 1]->id, id) == 0) return c->nodes[v - 1];
  }
}

tg_node *tg_coord_add_node(tg_coord *c, const char *id) {
  if (c->n_nodes == c->cap_nodes) return NULL;
  tg_node *n = calloc(1, sizeof *n);
  if (!n) return NULL;
  snprintf(n->id, sizeof n->id, "%s", id);
  n->slot = c->n_nodes;
  n->position = world_position_scan(c, id);
  c->nodes[c->n_nodes++] = n;
  size_t mask = c->index_cap - 1, h = hash_id(id) & mask;
  while (c->index[h]) h = (h + 1) & mask;
  c->index[h] = n->slot + 1;
  return n;
}

void tg_coord_poke(tg_coord *c) {
  c->decide_needed = 1;
  pthread_cond_signal(&c->wake);
}

/* Recomputes every node's position after the world changed (mu held). */
static void set_positions(tg_coord *c) {
  for (size_t i = 0; i < c->n_nodes; i++) c->nodes[i]->position = -1;
  for (size_t p = 0; c->world && p < c->world->n_nodes; p++) {
    tg_node *n = tg_coord_find_node(c, c->world->nodes[p]->node_id);
    if (n) n->position = (int)p;
  }
}

static int quarantined(const tg_node *n) { return n->quarantined_until_unix_ms > tg_clock_unix_ms(); }

/* Whether the node may hold ranks: alive, healthy, not out by decision.
 * A cordoned node keeps its place in the current world but takes no new one. */
static int eligible(tg_coord *c, const tg_node *n, int in_world) {
  if (!n->alive || !n->healthy || n->left || quarantined(n)) return 0;
  if (n->admin == TG_ADMIN_DRAINING) return 0;
  if (n->admin == TG_ADMIN_CORDONED && !in_world) return 0;
  (void)c;
  return 1;
}

Tardigrade__V1__NodeState tg_coord_node_state(tg_coord *c, const tg_node *n) {
  if (n->left) return TARDIGRADE__V1__NODE_STATE__NODE_LEFT;
  if (!n->alive) return TARDIGRADE__V1__NODE_STATE__NODE_DEAD;
  if (quarantined(n)) return TARDIGRADE__V1__NODE_STATE__NODE_QUARANTINED;
  if (n->admin == TG_ADMIN_DRAINING) return TARDIGRADE__V1__NODE_STATE__NODE_DRAINING;
  if (!n->healthy) return TARDIGRADE__V1__NODE_STATE__NODE_UNHEALTHY;
  if (n->position >= 0) return TARDIGRADE__V1__NODE_STATE__NODE_ACTIVE;
  if (n->admin == TG_ADMIN_CORDONED) return TARDIGRADE__V1__NODE_STATE__NODE_CORDONED;
  return c->world ? TARDIGRADE__V1__NODE_STATE__NODE_SPARE : TARDIGRADE__V1__NODE_STATE__NODE_JOINING;
}

tg_rpc_code tg_coord_refuse_standby(tg_coord *c, tg_rpc_status *st) {
  if (c->leader_hint[0])
    return tg_rpc_status_set(st, TG_RPC_UNAVAILABLE, "standby; leader at %s", c->leader_hint);
  return tg_rpc_status_set(st, TG_RPC_UNAVAILABLE, "standby; no leader elected yet");
}

static void node_free(tg_node *n) {
  if (!n) return;
  if (n->info) protobuf_c_message_free_unpacked(&n->info->base, NULL);
  free(n);
}

static void clear_nodes(tg_coord *c) {
  for (size_t i = 0; i < c->n_nodes; i++) node_free(c->nodes[i]);
  c->n_nodes = 0;
  if (c->index) memset(c->index, 0, c->index_cap * sizeof *c->index);
}

/* ---------------------------------------------------------------- faults */

static Tardigrade__V1__Fault *copy_fault(const Tardigrade__V1__Fault *f) {
  size_t len = protobuf_c_message_get_packed_size(&f->base);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) return NULL;
  protobuf_c_message_pack(&f->base, buf);
  Tardigrade__V1__Fault *copy = tardigrade__v1__fault__unpack(NULL, len, buf);
  free(buf);
  return copy;
}

void tg_coord_record_fault(tg_coord *c, const Tardigrade__V1__Fault *f) {
  Tardigrade__V1__Fault *copy = copy_fault(f);
  if (!copy) return;
  char id[32];
  snprintf(id, sizeof id, "%020" PRIu64, ++c->fault_seq);
  free(copy->fault_id == protobuf_c_empty_string ? NULL : copy->fault_id);
  copy->fault_id = strdup(id);
  if (!copy->fault_id) copy->fault_id = (char *)protobuf_c_empty_string;
  if (copy->detected_unix_ms == 0) copy->detected_unix_ms = tg_clock_unix_ms();

  TG_WARN("fault %s: %s on %s rank %d gen %" PRIu64 ": %s", copy->fault_id,
          protobuf_c_enum_descriptor_get_value(&tardigrade__v1__fault_kind__descriptor, copy->kind)
              ? protobuf_c_enum_descriptor_get_value(&tardigrade__v1__fault_kind__descriptor,
                                                     copy->kind)->name
              : "?",
          copy->node_id, copy->rank, copy->generation, copy->detail);

  /* Count toward quarantine. */
  tg_node *n = tg_coord_find_node(c, copy->node_id);
  /* Training stops for an error about a rank or about a node holding ranks. */
  int interrupts = copy->severity >= TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR &&
                   (copy->rank >= 0 || (n && n->position >= 0));
  if (n && copy->severity >= TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR) {
    int64_t now = tg_clock_unix_ms();
    n->fault_count++;
    size_t k = 0;
    for (size_t i = 0; i < n->n_recent_faults; i++)
      if (now - n->recent_faults_unix_ms[i] < c->cfg.quarantine_window_ms)
        n->recent_faults_unix_ms[k++] = n->recent_faults_unix_ms[i];
    if (k == TG_RECENT_FAULTS) memmove(n->recent_faults_unix_ms, n->recent_faults_unix_ms + 1, --k * 8);
    n->recent_faults_unix_ms[k++] = now;
    n->n_recent_faults = k;
    if (c->cfg.quarantine_faults > 0 && (int64_t)k >= c->cfg.quarantine_faults && !quarantined(n)) {
      n->quarantined_until_unix_ms = now + c->cfg.quarantine_cooldown_ms;
      TG_WARN("node %s quarantined for %" PRId64 " ms after %zu faults in %" PRId64 " ms", n->id,
              c->cfg.quarantine_cooldown_ms, k, c->cfg.quarantine_window_ms);
    }
    n->dirty = 1;
  }

  /* The in-memory log, for ListFaults. */
  size_t slot = c->faults_head % TG_FAULT_LOG;
  Tardigrade__V1__Fault *old = c->faults[slot];
  c->faults[slot] = copy;
  c->faults_head++;
  if (c->n_faults < TG_FAULT_LOG) c->n_faults++;

  tg_coord_save_fault(c, copy);
  tg_dash_fault_recorded(c, copy, interrupts);
  if (old) protobuf_c_message_free_unpacked(&old->base, NULL);
  tg_coord_poke(c);
}

/* A copy: the ring may drop its own first. */
void tg_coord_save_fault(tg_coord *c, const Tardigrade__V1__Fault *f) {
  if (c->n_unsaved_faults == c->cap_unsaved_faults) {
    size_t cap = c->cap_unsaved_faults ? c->cap_unsaved_faults * 2 : 16;
    Tardigrade__V1__Fault **grown = realloc(c->unsaved_faults, cap * sizeof *grown);
    if (grown) {
      c->unsaved_faults = grown;
      c->cap_unsaved_faults = cap;
    }
  }
  if (c->n_unsaved_faults < c->cap_unsaved_faults) {
    Tardigrade__V1__Fault *queued = copy_fault(f);
    if (queued) c->unsaved_faults[c->n_unsaved_faults++] = queued;
  }
}

/* ---------------------------------------------------------------- worlds */

uint64_t tg_coord_committed(tg_coord *c) {
  if (!c->world || c->world->n_nodes == 0) return c->committed_step;
  uint64_t lowest = UINT64_MAX;
  for (size_t i = 0; i < c->world->n_nodes; i++) {
    tg_node *n = tg_coord_find_node(c, c->world->nodes[i]->node_id);
    if (!n || n->committed_generation != c->world->generation) return c->committed_step;
    if (n->committed_step < lowest) lowest = n->committed_step;
  }
  if (lowest != UINT64_MAX && lowest > c->committed_step) c->committed_step = lowest;
  return c->committed_step;
}

/* Builds and packs the next world; returns an owned, unpacked copy. */
static Tardigrade__V1__World *make_world(tg_coord *c, tg_node **members, size_t n, const char *reason) {
  Tardigrade__V1__World w = TARDIGRADE__V1__WORLD__INIT;
  Tardigrade__V1__WorldNode *wn = calloc(n + 1, sizeof *wn);
  Tardigrade__V1__WorldNode **wnp = calloc(n + 1, sizeof *wnp);
  char prefix[160];
  uint8_t *buf = NULL;
  Tardigrade__V1__World *out = NULL;
  /* Where the shards of the nodes that left can be fetched: each node's
   * agent copies its ranks' shards to the next node of the ring. */
  size_t old_n = c->world ? c->world->n_nodes : 0, old_slots = c->world ? c->world->slots_per_node : 0;
  size_t n_src = 0;
  Tardigrade__V1__ShardSource *src = calloc(old_n * old_slots + 1, sizeof *src);
  Tardigrade__V1__ShardSource **srcp = calloc(old_n * old_slots + 1, sizeof *srcp);
  char *member = calloc(c->n_nodes + 1, 1); /* by node slot: in the new world */
  if (!wn || !wnp || !src || !srcp || !member) goto out;
  for (size_t i = 0; i < n; i++) member[members[i]->slot] = 1;
  for (size_t p = 0; p < old_n && old_n > 1; p++) {
    const Tardigrade__V1__WorldNode *next = c->world->nodes[(p + 1) % old_n];
    tg_node *gone = tg_coord_find_node(c, c->world->nodes[p]->node_id);
    tg_node *holder = tg_coord_find_node(c, next->node_id);
    if ((gone && member[gone->slot]) || !holder || !member[holder->slot]) continue;
    for (size_t s = 0; s < old_slots; s++) {
      tardigrade__v1__shard_source__init(&src[n_src]);
      src[n_src].shard = (int32_t)(p * old_slots + s);
      src[n_src].step = c->committed_step;
      src[n_src].node_id = next->node_id;
      src[n_src].agent_address = next->address;
      srcp[n_src] = &src[n_src];
      n_src++;
    }
  }
  for (size_t i = 0; i < n; i++) {
    tardigrade__v1__world_node__init(&wn[i]);
    wn[i].node_id = members[i]->id;
    wn[i].position = (uint32_t)i;
    wn[i].address = members[i]->info && members[i]->info->address ? members[i]->info->address
                                                                   : (char *)"";
    wnp[i] = &wn[i];
  }
  w.job_id = c->cfg.job_id;
  w.generation = c->generation + 1;
  w.slots_per_node = c->cfg.policy.slots_per_node;
  w.world_size = (uint32_t)(n * c->cfg.policy.slots_per_node);
  w.n_nodes = n;
  w.nodes = wnp;
  /* The trainers' rendezvous store: etcd itself unless configured. */
  w.store_address = c->cfg.store_address[0] ? c->cfg.store_address : c->cfg.etcd_endpoints;
  snprintf(prefix, sizeof prefix, "/tardigrade/jobs/%s/gen/%" PRIu64 "/", c->cfg.job_id, w.generation);
  w.store_prefix = prefix;
  w.resume_step = tg_coord_committed(c);
  for (size_t i = 0; i < n_src; i++) srcp[i]->step = w.resume_step;
  w.n_shard_sources = n_src;
  w.shard_sources = srcp;
  w.previous_world_size = c->world ? c->world->world_size : 0;
  w.formed_unix_ms = tg_clock_unix_ms();
  w.reason = (char *)reason;
  size_t len = tardigrade__v1__world__get_packed_size(&w);
  buf = malloc(len ? len : 1);
  if (!buf) goto out;
  tardigrade__v1__world__pack(&w, buf);
  out = tardigrade__v1__world__unpack(NULL, len, buf);
out:
  free(buf);
  free(wn);
  free(wnp);
  free(src);
  free(srcp);
  free(member);
  return out;
}

/* Tells each node's heartbeat stream about a new generation or a changed
 * state (mu held). */
static void notify_heartbeats(tg_coord *c) {
  for (size_t i = 0; i < c->n_nodes; i++) {
    tg_node *n = c->nodes[i];
    Tardigrade__V1__NodeState state = tg_coord_node_state(c, n);
    if (!n->heartbeat_call || (n->notified_generation == c->generation && n->told_state == state))
      continue;
    Tardigrade__V1__HeartbeatResponse r = TARDIGRADE__V1__HEARTBEAT_RESPONSE__INIT;
    r.generation = c->generation;
    r.node_state = state;
    if (tg_rpc_call_send(n->heartbeat_call, &r.base) == 0) {
      n->notified_generation = c->generation;
      n->told_state = state;
    }
  }
}

/* Runs the policy and, if it says so, commits and publishes a new world.
 * Called by the ticker with mu held; drops it around the etcd write.
 * Returns the time to decide again (0: on the next change), or -1 when
 * leadership was lost. */
static int64_t decide(tg_coord *c) {
  size_t n = c->n_nodes;
  tg_policy_node *pn = calloc(n + 1, sizeof *pn);
  size_t n_cur = c->world ? c->world->n_nodes : 0;
  size_t *cur = calloc(n_cur + 1, sizeof *cur);
  tg_node **members = NULL;
  tg_policy_plan plan = {0};
  int64_t wake = 0;
  if (!pn || !cur) goto out;

  int64_t now = tg_clock_mono_ms();
  size_t n_eligible = 0;
  for (size_t i = 0; i < n; i++) {
    tg_node *nd = c->nodes[i];
    int e = eligible(c, nd, nd->position >= 0);
    if (e && !nd->was_eligible) nd->eligible_since_ms = now;
    nd->was_eligible = e;
    n_eligible += e != 0;
    pn[i] = (tg_policy_node){nd->id, e, nd->eligible_since_ms};
  }
  /* No world and too few nodes to form one: nothing for the policy to do. */
  if (n_cur == 0 && n_eligible < c->cfg.policy.min_nodes) goto out;
  for (size_t p = 0; p < n_cur; p++) {
    tg_node *m = tg_coord_find_node(c, c->world->nodes[p]->node_id);
    cur[p] = m ? m->slot : TG_POLICY_GONE;
  }
  int had_world = c->had_world && n_cur == 0;
  if (tg_policy_decide(&c->cfg.policy, cur, n_cur, had_world, pn, n, now, &plan) != 0) goto out;

  const char *reason = tg_policy_reason_name(plan.reason);
  if (plan.action == TG_POLICY_KEEP && c->restart_requested && n_cur > 0) {
    /* A rank failed but its node stays: same members, new generation, so
     * the restarted trainer and the survivors rebuild their communicator. */
    plan.action = TG_POLICY_FORM;
    plan.positions = malloc(n_cur * sizeof *plan.positions);
    if (!plan.positions) goto out;
    memcpy(plan.positions, cur, n_cur * sizeof *cur);
    plan.n_nodes = n_cur;
    reason = "restart";
  }
  if (plan.action == TG_POLICY_WAIT) wake = plan.wake_at_ms;
  if (plan.action != TG_POLICY_FORM && plan.action != TG_POLICY_SUSPEND) goto out;

  members = calloc(plan.n_nodes + 1, sizeof *members);
  if (!members) goto out;
  for (size_t k = 0; k < plan.n_nodes; k++) members[k] = c->nodes[plan.positions[k]];
  if (plan.action == TG_POLICY_SUSPEND) reason = "suspended";
  Tardigrade__V1__World *w = make_world(c, members, plan.n_nodes, reason);
  if (!w) goto out;

  /* Commit with the lock dropped; only this thread forms worlds. */
  int64_t expected = c->world_mod_revision, committed_rev = 0;
  pthread_mutex_unlock(&c->mu);
  tg_rpc_status st = {0};
  tg_rpc_code code = tg_store_commit_world(c->store, &w->base, expected, &committed_rev, &st);
  pthread_mutex_lock(&c->mu);
  if (code != TG_RPC_OK) {
    protobuf_c_message_free_unpacked(&w->base, NULL);
    if (code == TG_RPC_ABORTED) {
      TG_ERROR("world generation %" PRIu64 " not committed: %s; stepping down", c->generation + 1,
               st.message);
      wake = -1;
    } else {
      TG_WARN("world generation %" PRIu64 " not committed (%s: %s); retrying",
              c->generation + 1, tg_rpc_code_name(code), st.message);
      wake = now + 200;
    }
    goto out;
  }
  if (c->world) protobuf_c_message_free_unpacked(&c->world->base, NULL);
  c->world = w;
  c->world_mod_revision = committed_rev;
  c->generation = w->generation;
  c->had_world = 1;
  c->restart_requested = 0;
  set_positions(c);
  tg_dash_world_formed(c, w);
  TG_INFO("world generation %" PRIu64 ": %u ranks on %zu nodes (%s)", w->generation, w->world_size,
          w->n_nodes, w->reason);
  tg_coord_broadcast_world(c);
  notify_heartbeats(c);
out:
  free(pn);
  free(cur);
  free(members);
  free(plan.positions);
  return wake;
}

/* ------------------------------------------------------------ etcd sync */

static void node_record(tg_node *n, Tardigrade__V1__NodeRecord *r) {
  tardigrade__v1__node_record__init(r);
  r->info = n->info;
  r->state = n->left ? TARDIGRADE__V1__NODE_STATE__NODE_LEFT
             : n->admin == TG_ADMIN_DRAINING ? TARDIGRADE__V1__NODE_STATE__NODE_DRAINING
             : n->admin == TG_ADMIN_CORDONED ? TARDIGRADE__V1__NODE_STATE__NODE_CORDONED
                                             : TARDIGRADE__V1__NODE_STATE__NODE_JOINING;
  r->incarnation = n->incarnation;
  r->registered_unix_ms = n->registered_unix_ms;
  r->quarantined_until_unix_ms = n->quarantined_until_unix_ms;
  r->n_recent_fault_unix_ms = n->n_recent_faults;
  r->recent_fault_unix_ms = n->recent_faults_unix_ms;
  r->fault_count = n->fault_count;
  r->dead = !n->alive && !n->left;
}

/* Writes dirty node records and new faults (mu held; dropped for etcd).
 * Returns -1 when fenced out. */
static int flush(tg_coord *c) {
  size_t n_dirty = 0;
  for (size_t i = 0; i < c->n_nodes; i++) n_dirty += c->nodes[i]->dirty != 0;
  size_t n_faults = c->n_unsaved_faults;
  if (n_dirty + n_faults == 0) return 0;

  size_t total = n_dirty + n_faults;
  char **keys = calloc(total, sizeof *keys);
  ProtobufCMessage **msgs = calloc(total, sizeof *msgs);
  uint8_t **packed = calloc(total, sizeof *packed);
  size_t *lens = calloc(total, sizeof *lens);
  size_t k = 0;
  int rc = 0;
  if (!keys || !msgs || !packed || !lens) goto out;

  /* Pack under the lock (records point into node memory), unpack after. */
  for (size_t i = 0; i < c->n_nodes; i++) {
    tg_node *n = c->nodes[i];
    if (!n->dirty) continue;
    Tardigrade__V1__NodeRecord r;
    node_record(n, &r);
    lens[k] = protobuf_c_message_get_packed_size(&r.base);
    packed[k] = malloc(lens[k] ? lens[k] : 1);
    keys[k] = malloc(TG_NODE_ID_MAX + 8);
    if (!packed[k] || !keys[k]) goto out;
    protobuf_c_message_pack(&r.base, packed[k]);
    snprintf(keys[k], TG_NODE_ID_MAX + 8, "nodes/%s", n->id);
    msgs[k] = protobuf_c_message_unpack(&tardigrade__v1__node_record__descriptor, NULL, lens[k],
                                        packed[k]);
    n->dirty = 0;
    k++;
  }
  for (size_t i = 0; i < n_faults; i++) {
    keys[k] = malloc(48);
    if (!keys[k]) goto out;
    snprintf(keys[k], 48, "faults/%s", c->unsaved_faults[i]->fault_id);
    msgs[k++] = &c->unsaved_faults[i]->base;
  }
  c->n_unsaved_faults = 0;

  pthread_mutex_unlock(&c->mu);
  tg_rpc_status st = {0};
  tg_rpc_code code = tg_store_put_batch(c->store, (const char *const *)keys,
                                        (const ProtobufCMessage *const *)msgs, k, &st);
  /* Keep the fault log in etcd to its newest TG_ETCD_FAULT_LOG entries;
   * trim in steps of 100 so the count query is rare. */
  c->faults_in_etcd += (int64_t)n_faults;
  if (code == TG_RPC_OK && c->faults_in_etcd > TG_ETCD_FAULT_LOG + 100)
    code = tg_store_trim(c->store, "faults/", TG_ETCD_FAULT_LOG, &c->faults_in_etcd, &st);
  pthread_mutex_lock(&c->mu);
  if (code == TG_RPC_ABORTED) {
    TG_ERROR("etcd write fenced: %s; stepping down", st.message);
    rc = -1;
  } else if (code != TG_RPC_OK) {
    TG_WARN("etcd write failed (%s: %s); will retry", tg_rpc_code_name(code), st.message);
    for (size_t i = 0; i < n_dirty && i < k; i++) {
      tg_node *n = tg_coord_find_node(c, keys[i] + 6);
      if (n) n->dirty = 1;
    }
  }
out:
  for (size_t i = 0; i < total; i++) {
    free(keys ? keys[i] : NULL);
    if (packed && packed[i]) free(packed[i]);
    if (msgs && msgs[i]) protobuf_c_message_free_unpacked(msgs[i], NULL);
  }
  free(keys);
  free(msgs);
  free(packed);
  free(lens);
  return rc;
}

/* ------------------------------------------------------- taking over */

static void load_node(const char *key, ProtobufCMessage *msg, void *user) {
  tg_coord *c = user;
  Tardigrade__V1__NodeRecord *r = (Tardigrade__V1__NodeRecord *)msg;
  const char *id = strrchr(key, '/') ? strrchr(key, '/') + 1 : key;
  tg_node *n;
  if (!tg_valid_node_id(id) || !r->info || tg_coord_find_node(c, id)) goto skip;
  n = tg_coord_add_node(c, id);
  if (!n) goto skip;
  /* Steal the info sub-message: unpack allocated it with the default allocator. */
  n->info = r->info;
  r->info = NULL;
  n->incarnation = r->incarnation;
  n->registered_unix_ms = r->registered_unix_ms;
  n->left = r->state == TARDIGRADE__V1__NODE_STATE__NODE_LEFT;
  n->admin = r->state == TARDIGRADE__V1__NODE_STATE__NODE_DRAINING   ? TG_ADMIN_DRAINING
             : r->state == TARDIGRADE__V1__NODE_STATE__NODE_CORDONED ? TG_ADMIN_CORDONED
                                                                     : TG_ADMIN_NONE;
  n->quarantined_until_unix_ms = r->quarantined_until_unix_ms;
  for (size_t i = 0; i < r->n_recent_fault_unix_ms && i < TG_RECENT_FAULTS; i++)
    n->recent_faults_unix_ms[n->n_recent_faults++] = r->recent_fault_unix_ms[i];
  n->fault_count = r->fault_count;
  /* Grace: every node alive at the last leader gets a full timeout to
   * reach the new one; a node already declared dead stays dead until it
   * registers or heartbeats again. */
  n->alive = !n->left && !r->dead;
  n->healthy = 1;
  n->last_heartbeat_ms = tg_clock_mono_ms();
skip:
  protobuf_c_message_free_unpacked(msg, NULL);
}

/* Faults come in key (= sequence) order: the ring ends with the newest,
 * so ListFaults shows the job's history across leader changes. */
static void load_fault(const char *key, ProtobufCMessage *msg, void *user) {
  tg_coord *c = user;
  const char *seq = strrchr(key, '/');
  uint64_t s = seq ? strtoull(seq + 1, NULL, 10) : 0;
  if (s > c->fault_seq) c->fault_seq = s;
  c->faults_in_etcd++;
  size_t slot = c->faults_head % TG_FAULT_LOG;
  if (c->faults[slot]) protobuf_c_message_free_unpacked(&c->faults[slot]->base, NULL);
  c->faults[slot] = (Tardigrade__V1__Fault *)msg;
  c->faults_head++;
  if (c->n_faults < TG_FAULT_LOG) c->n_faults++;
}

/* Loads the job from etcd after winning the election (mu not held). */
static int take_over(tg_coord *c) {
  tg_rpc_status st = {0};
  Tardigrade__V1__JobSpec spec = TARDIGRADE__V1__JOB_SPEC__INIT;
  spec.job_id = c->cfg.job_id;
  spec.min_nodes = c->cfg.policy.min_nodes;
  spec.max_nodes = c->cfg.policy.max_nodes;
  spec.slots_per_node = c->cfg.policy.slots_per_node;
  spec.granularity = c->cfg.policy.granularity;
  spec.last_call_ms = (uint32_t)c->cfg.policy.last_call_ms;
  spec.heartbeat_interval_ms = (uint32_t)c->cfg.heartbeat_interval_ms;
  spec.heartbeat_timeout_ms = (uint32_t)c->cfg.heartbeat_timeout_ms;
  spec.quarantine_faults = (uint32_t)c->cfg.quarantine_faults;
  spec.quarantine_window_ms = (uint32_t)c->cfg.quarantine_window_ms;
  spec.quarantine_cooldown_ms = (uint32_t)c->cfg.quarantine_cooldown_ms;
  if (tg_store_put(c->store, "spec", &spec.base, &st) != TG_RPC_OK) goto fail;

  ProtobufCMessage *wm = NULL;
  int64_t world_rev = 0;
  tg_rpc_code code =
      tg_store_get(c->store, "world", &tardigrade__v1__world__descriptor, &wm, &world_rev, &st);
  if (code != TG_RPC_OK && code != TG_RPC_NOT_FOUND) goto fail;

  pthread_mutex_lock(&c->mu);
  clear_nodes(c);
  if (c->world) protobuf_c_message_free_unpacked(&c->world->base, NULL);
  c->world = (Tardigrade__V1__World *)wm;
  c->world_mod_revision = wm ? world_rev : 0;
  c->generation = wm ? c->world->generation : 0;
  c->committed_step = wm ? c->world->resume_step : 0;
  c->had_world = wm != NULL;
  c->restart_requested = 0;
  c->fault_seq = 0;
  c->faults_in_etcd = 0;
  for (size_t i = 0; i < TG_FAULT_LOG; i++) {
    if (c->faults[i]) protobuf_c_message_free_unpacked(&c->faults[i]->base, NULL);
    c->faults[i] = NULL;
  }
  c->faults_head = c->n_faults = 0;
  pthread_mutex_unlock(&c->mu);

  /* Load nodes and the fault sequence (store_list calls back without mu;
   * no RPC handler touches the table while leader == 0). */
  if (tg_store_list(c->store, "nodes/", &tardigrade__v1__node_record__descriptor, load_node, c, NULL,
                    &st) != TG_RPC_OK)
    goto fail;
  if (tg_store_list(c->store, "faults/", &tardigrade__v1__fault__descriptor, load_fault, c, NULL,
                    &st) != TG_RPC_OK)
    goto fail;
  if (c->fault_seq < (uint64_t)tg_clock_unix_ms() * 1000) c->fault_seq = (uint64_t)tg_clock_unix_ms() * 1000;
  pthread_mutex_lock(&c->mu);
  set_positions(c);
  c->decide_needed = 1;
  tg_dash_taken_over(c);
  pthread_mutex_unlock(&c->mu);
  TG_INFO("leader of job %s: generation %" PRIu64 ", %zu nodes known", c->cfg.job_id, c->generation,
          c->n_nodes);
  return 0;
fail:
  TG_WARN("taking over job %s failed: %s: %s", c->cfg.job_id, tg_rpc_code_name(st.code), st.message);
  return -1;
}

/* Stops acting as leader (mu held): streams end, memory is dropped. */
static void step_down(tg_coord *c, const char *why) {
  if (!c->leader) return;
  TG_WARN("stepping down as leader of job %s: %s", c->cfg.job_id, why);
  c->leader = 0;
  c->leader_hint[0] = '\0';
  tg_coord_end_streams(c, TG_RPC_UNAVAILABLE, "coordinator stepped down; find the new leader");
  clear_nodes(c);
  pthread_mutex_unlock(&c->mu);
  tg_election_resign(c->election);
  pthread_mutex_lock(&c->mu);
}

/* --------------------------------------------------------------- ticker */

static void check_liveness(tg_coord *c, int64_t now) {
  for (size_t i = 0; i < c->n_nodes; i++) {
    tg_node *n = c->nodes[i];
    if (!n->alive || n->left || now - n->last_heartbeat_ms <= c->cfg.heartbeat_timeout_ms) continue;
    n->alive = 0;
    n->dirty = 1;
    c->decide_needed = 1;
    Tardigrade__V1__Fault f = TARDIGRADE__V1__FAULT__INIT;
    char detail[160];
    snprintf(detail, sizeof detail, "no heartbeat for %" PRId64 " ms (timeout %" PRId64 " ms)",
             now - n->last_heartbeat_ms, c->cfg.heartbeat_timeout_ms);
    f.kind = TARDIGRADE__V1__FAULT_KIND__FAULT_NODE_LOST;
    f.severity = TARDIGRADE__V1__SEVERITY__SEVERITY_FATAL;
    f.node_id = n->id;
    f.rank = -1;
    f.generation = c->generation;
    f.detail = detail;
    f.occurred_unix_ms = tg_clock_unix_ms() - (now - n->last_heartbeat_ms);
    tg_coord_record_fault(c, &f);
  }
}

/* A quarantine that ended changes eligibility (mu held). */
static void check_quarantines(tg_coord *c) {
  int64_t now = tg_clock_unix_ms();
  for (size_t i = 0; i < c->n_nodes; i++) {
    tg_node *n = c->nodes[i];
    if (n->quarantined_until_unix_ms && n->quarantined_until_unix_ms <= now) {
      n->quarantined_until_unix_ms = 0;
      n->n_recent_faults = 0;
      n->dirty = 1;
      c->decide_needed = 1;
      TG_INFO("node %s: quarantine over", n->id);
    }
  }
}

static void campaign(tg_coord *c) {
  uint8_t holder[1024];
  size_t holder_len = sizeof holder;
  tg_rpc_status st = {0};
  int won = tg_election_campaign(c->election, CAMPAIGN_WAIT_MS, holder, &holder_len, &st);
  if (won < 0) {
    TG_WARN("election: %s: %s", tg_rpc_code_name(st.code), st.message);
    struct timespec ts = {0, 200 * 1000000};
    nanosleep(&ts, NULL);
    return;
  }
  if (won == 0) {
    Tardigrade__V1__LeaderRecord *r =
        holder_len ? tardigrade__v1__leader_record__unpack(NULL, holder_len, holder) : NULL;
    pthread_mutex_lock(&c->mu);
    if (r && (strcmp(c->leader_id, r->coordinator_id) != 0 || strcmp(c->leader_hint, r->address) != 0))
      c->dash.dirty = 1; /* a new leader: say so on the dashboard now */
    if (r) {
      snprintf(c->leader_hint, sizeof c->leader_hint, "%s", r->address);
      snprintf(c->leader_id, sizeof c->leader_id, "%s", r->coordinator_id);
      snprintf(c->leader_http, sizeof c->leader_http, "%s", r->http_address);
    }
    pthread_mutex_unlock(&c->mu);
    if (r) tardigrade__v1__leader_record__free_unpacked(r, NULL);
    return;
  }
  tg_store_set_leader_revision(c->store, tg_election_revision(c->election));
  if (take_over(c) != 0) {
    tg_election_resign(c->election);
    return;
  }
  pthread_mutex_lock(&c->mu);
  c->leader = 1;
  snprintf(c->leader_hint, sizeof c->leader_hint, "%s",
           c->cfg.advertise[0] ? c->cfg.advertise : c->cfg.listen);
  snprintf(c->leader_id, sizeof c->leader_id, "%s", c->cfg.coordinator_id);
  snprintf(c->leader_http, sizeof c->leader_http, "%s", c->dash.http_address);
  pthread_mutex_unlock(&c->mu);
}

static void *ticker_main(void *arg) {
  tg_coord *c = arg;
  int64_t wake_at = 0, last_decide_ms = 0;
  pthread_mutex_lock(&c->mu);
  while (!c->stopping) {
    tg_dash_tick(c);
    if (!c->leader) {
      pthread_mutex_unlock(&c->mu);
      campaign(c);
      pthread_mutex_lock(&c->mu);
      wake_at = 0;
      continue;
    }
    if (tg_election_lost(c->election)) {
      step_down(c, "election lease lost");
      continue;
    }
    int64_t now = tg_clock_mono_ms();
    check_liveness(c, now);
    check_quarantines(c);
    int64_t next = 0;
    int due = c->decide_needed || (wake_at && now >= wake_at);
    if (due && now - last_decide_ms >= DECIDE_MIN_GAP_MS) {
      c->decide_needed = 0;
      wake_at = 0;
      last_decide_ms = now;
      next = decide(c);
      if (next > 0) wake_at = next;
    }
    if (next < 0 || (c->leader && flush(c) < 0)) {
      step_down(c, "fenced out of etcd");
      continue;
    }

    /* Sleep one tick, or less if the policy wants to look again sooner;
     * handlers signal `wake` when something changes. */
    int64_t sleep_ms = TICK_MS;
    if (wake_at && wake_at - now < sleep_ms) sleep_ms = wake_at - now > 0 ? wake_at - now : 0;
    if (c->decide_needed) { /* decide again as soon as the gap is over */
      int64_t gap = last_decide_ms + DECIDE_MIN_GAP_MS - now;
      if (gap < sleep_ms) sleep_ms = gap > 0 ? gap : 0;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)sleep_ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&c->wake, &c->mu, &ts);
  }
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

/* ------------------------------------------------------------ lifecycle */

static int add_methods(tg_coord *c, const tg_rpc_method *table, size_t n, char *err, size_t errlen) {
  for (size_t i = 0; i < n; i++) {
    if (c->n_methods == sizeof c->methods / sizeof c->methods[0]) {
      snprintf(err, errlen, "too many methods");
      return -1;
    }
    tg_rpc_method *m = &c->methods[c->n_methods++];
    *m = table[i];
    m->user = c;
    if (tg_rpc_server_register(c->server, m) != 0) {
      snprintf(err, errlen, "cannot register %s", m->path);
      return -1;
    }
  }
  return 0;
}

tg_coord *tg_coord_new(const tg_coord_config *cfg, char *err, size_t errlen) {
  tg_coord *c = calloc(1, sizeof *c);
  tg_rpc_status st = {0};
  if (!c) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  c->cfg = *cfg;
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->wake, NULL);
  if (!c->cfg.coordinator_id[0])
    snprintf(c->cfg.coordinator_id, sizeof c->cfg.coordinator_id, "coordinator-%ld",
             (long)getpid());
  if (tg_policy_spec_check(&c->cfg.policy, err, errlen) != 0) goto fail;
  if (c->cfg.heartbeat_interval_ms < 10 || c->cfg.heartbeat_timeout_ms <= c->cfg.heartbeat_interval_ms) {
    snprintf(err, errlen, "heartbeat timeout must exceed the interval, and the interval be >= 10 ms");
    goto fail;
  }
  c->cap_nodes = (size_t)c->cfg.policy.max_nodes * 4 + 64;
  if (c->cap_nodes > 100000) c->cap_nodes = 100000;
  c->nodes = calloc(c->cap_nodes, sizeof *c->nodes);
  for (c->index_cap = 64; c->index_cap < 2 * c->cap_nodes + 1;) c->index_cap *= 2;
  c->index = calloc(c->index_cap, sizeof *c->index);
  if (!c->nodes || !c->index) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }

  tg_etcd_config ec = {.endpoints = c->cfg.etcd_endpoints,
                       .tls = c->cfg.etcd_tls,
                       .username = c->cfg.etcd_user[0] ? c->cfg.etcd_user : NULL,
                       .password = c->cfg.etcd_password,
                       .request_timeout_ms = 3000};
  c->etcd = tg_etcd_open(&ec, &st);
  if (!c->etcd) {
    snprintf(err, errlen, "etcd %s: %s", c->cfg.etcd_endpoints, st.message);
    goto fail;
  }
  c->store = tg_store_new(c->etcd, c->cfg.job_id);
  if (!c->store) {
    snprintf(err, errlen, "invalid job id '%s' (1..63 of [A-Za-z0-9._-])", c->cfg.job_id);
    goto fail;
  }

  tg_rpc_server_config sc = {.threads = c->cfg.threads};
  c->server = tg_rpc_server_new(&sc, err, errlen);
  if (!c->server) goto fail;
  if (add_methods(c, tg_coord_service_methods, tg_coord_service_n_methods, err, errlen) != 0 ||
      add_methods(c, tg_coord_operator_methods, tg_coord_operator_n_methods, err, errlen) != 0)
    goto fail;
  c->port = tg_rpc_server_listen(c->server, c->cfg.listen, c->cfg.tls, err, errlen);
  if (c->port < 0) goto fail;
  /* With port 0, advertise the port actually bound. */
  if (!c->cfg.advertise[0]) {
    const char *colon = strrchr(c->cfg.listen, ':');
    if (strncmp(c->cfg.listen, "unix:", 5) != 0 && colon && strcmp(colon, ":0") == 0)
      snprintf(c->cfg.advertise, sizeof c->cfg.advertise, "%.*s:%d",
               (int)(colon - c->cfg.listen), c->cfg.listen, c->port);
    else
      snprintf(c->cfg.advertise, sizeof c->cfg.advertise, "%s", c->cfg.listen);
  }

  if (tg_dash_start(c, err, errlen) != 0) goto fail;

  Tardigrade__V1__LeaderRecord lr = TARDIGRADE__V1__LEADER_RECORD__INIT;
  lr.coordinator_id = c->cfg.coordinator_id;
  lr.address = c->cfg.advertise;
  lr.http_address = c->dash.http_address;
  lr.since_unix_ms = tg_clock_unix_ms();
  c->leader_value_len = tardigrade__v1__leader_record__get_packed_size(&lr);
  c->leader_value = malloc(c->leader_value_len + 1);
  if (!c->leader_value) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  tardigrade__v1__leader_record__pack(&lr, c->leader_value);
  char key[TG_STORE_KEY_MAX];
  tg_store_key(c->store, "leader", key, sizeof key);
  c->election = tg_election_new(c->etcd, key, c->leader_value, c->leader_value_len, c->cfg.leader_ttl_s);
  if (!c->election) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  return c;
fail:
  tg_coord_free(c);
  return NULL;
}

int tg_coord_start(tg_coord *c, char *err, size_t errlen) {
  if (tg_rpc_server_start(c->server, err, errlen) != 0) return -1;
  if (pthread_create(&c->ticker, NULL, ticker_main, c) != 0) {
    snprintf(err, errlen, "cannot start the ticker thread: %s", strerror(errno));
    return -1;
  }
  c->ticker_started = 1;
  TG_INFO("coordinator %s for job %s serving on %s (etcd %s)", c->cfg.coordinator_id, c->cfg.job_id,
          c->cfg.advertise, c->cfg.etcd_endpoints);
  return 0;
}

int tg_coord_port(const tg_coord *c) { return c->port; }

int tg_coord_http_port(const tg_coord *c) { return c->dash.httpd ? tg_httpd_port(c->dash.httpd) : 0; }

int tg_coord_is_leader(tg_coord *c) {
  pthread_mutex_lock(&c->mu);
  int l = c->leader;
  pthread_mutex_unlock(&c->mu);
  return l;
}

void tg_coord_free(tg_coord *c) {
  if (!c) return;
  pthread_mutex_lock(&c->mu);
  c->stopping = 1;
  pthread_cond_broadcast(&c->wake);
  pthread_mutex_unlock(&c->mu);
  if (c->ticker_started) pthread_join(c->ticker, NULL);
  tg_dash_stop(c); /* the ticker published to it */
  if (c->server) {
    pthread_mutex_lock(&c->mu);
    c->leader = 0;
    tg_coord_end_streams(c, TG_RPC_UNAVAILABLE, "coordinator shutting down");
    pthread_mutex_unlock(&c->mu);
    tg_rpc_server_free(c->server, 1000);
  }
  if (c->election) tg_election_free(c->election); /* resigns: a standby takes over now */
  tg_store_free(c->store);
  if (c->etcd) tg_etcd_close(c->etcd);
  clear_nodes(c);
  free(c->nodes);
  free(c->index);
  if (c->world) protobuf_c_message_free_unpacked(&c->world->base, NULL);
  for (size_t i = 0; i < TG_FAULT_LOG; i++)
    if (c->faults[i]) protobuf_c_message_free_unpacked(&c->faults[i]->base, NULL);
  for (size_t i = 0; i < c->n_unsaved_faults; i++)
    protobuf_c_message_free_unpacked(&c->unsaved_faults[i]->base, NULL);
  free(c->unsaved_faults);
  free(c->leader_value);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->wake);
  free(c);
}
