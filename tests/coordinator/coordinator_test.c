/* Integration tests for tg-coordinator: a real etcd, real coordinator
 * processes (the binary built by Bazel), and simulated agents that speak
 * the real API. Each test uses its own job id, so one etcd serves all.
 *
 * Timings are shortened (100 ms heartbeats, 600 ms timeout, 1 s leader
 * lease) so faults resolve quickly; every wait has a deadline well above
 * them, and no test asserts how fast anything happened (bench/ measures). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>
#include <sys/wait.h>

#include "common/etcd/etcd.h"
#include "common/log/log.h"
#include "common/rpc/rpc.h"
#include "proto/tardigrade/v1/coordinator.pb-c.h"
#include "proto/tardigrade/v1/store.pb-c.h"
#include "tests/harness/certs.h"
#include "tests/harness/etcd_cluster.h"
#include "tests/harness/proc.h"
#include "tests/simagent/simagent.h"

#define WAIT_MS 15000
#define MAX_AGENTS 8
#define MAX_COORDS 3

static tg_etcd_cluster *etcd;
static struct cluster *current; /* stopped by teardown_cluster, pass or fail */
static struct cluster *new_cluster(void);
static char tmpdir[512];
static int job_counter;

typedef struct cluster {
  char job[32];
  tg_proc *coord[MAX_COORDS];
  int port[MAX_COORDS];
  int n_coords;
  char endpoints[256];
  tg_sim_agent *agent[MAX_AGENTS];
  int n_agents;
  int stopped;
} cluster;

/* ------------------------------------------------------------ helpers */

static void start_coordinator(cluster *c, int i, const char *const *extra) {
  char log[600], listen[64], id[32];
  if (c->port[i] == 0) c->port[i] = tg_proc_free_port(); /* a restart keeps its port */
  assert_true(c->port[i] > 0);
  snprintf(listen, sizeof listen, "127.0.0.1:%d", c->port[i]);
  snprintf(id, sizeof id, "c%d", i);
  snprintf(log, sizeof log, "%s/%s-%s.log", tmpdir, c->job, id);
  const char *argv[48] = {"coordinator/tg-coordinator", "--job", c->job, "--id", id, "--listen",
                          listen, "--http", "off", "--etcd", tg_etcd_cluster_endpoints(etcd),
                          "--heartbeat-interval-ms", "100", "--heartbeat-timeout-ms", "600",
                          "--leader-ttl-s", "1", "--last-call-ms", "300", "--log-level", "debug"};
  int n = 0;
  while (argv[n]) n++;
  for (int k = 0; extra && extra[k] && n < 46; k++) argv[n++] = extra[k];
  argv[n] = NULL;
  char err[256];
  c->coord[i] = tg_proc_start(argv, log, err, sizeof err);
  assert_non_null(c->coord[i]);
}

/* The one cluster of the running test, in static storage: a failed
 * assertion leaves the test function, and teardown_cluster still needs it. */
static cluster the_cluster;
static cluster *new_cluster(void) { return &the_cluster; }

/* A job with n_coords coordinators sharing the extra flags. */
static cluster *start_cluster(int n_coords, const char *const *extra) {
  cluster *c = new_cluster();
  memset(c, 0, sizeof *c);
  current = c;
  snprintf(c->job, sizeof c->job, "job%d-%d", job_counter++, (int)getpid());
  c->n_coords = n_coords;
  for (int i = 0; i < n_coords; i++) start_coordinator(c, i, extra);
  size_t off = 0;
  for (int i = 0; i < n_coords; i++)
    off += (size_t)snprintf(c->endpoints + off, sizeof c->endpoints - off, "%s127.0.0.1:%d",
                            i ? "," : "", c->port[i]);
  return c;
}

static tg_sim_agent *add_agent(cluster *c, const char *node, uint32_t slots) {
  char err[256];
  tg_sim_config cfg = {.coordinators = c->endpoints, .job_id = c->job, .node_id = node, .slots = slots};
  tg_sim_agent *a = tg_sim_agent_start(&cfg, err, sizeof err);
  assert_non_null(a);
  c->agent[c->n_agents++] = a;
  return a;
}

/* Stops everything the test started; with dump, prints the coordinators'
 * logs first (the test failed). */
/* Agents "n0".."n{count-1}" with `slots` slots each, into out[]. */
static void add_agents(cluster *c, tg_sim_agent **out, int count, uint32_t slots) {
  for (int i = 0; i < count; i++) {
    char id[16];
    snprintf(id, sizeof id, "n%d", i);
    out[i] = add_agent(c, id, slots);
  }
}

static void stop_cluster_dump(cluster *c, int dump) {
  if (c->stopped) return;
  c->stopped = 1;
  for (int i = 0; i < c->n_agents; i++) tg_sim_agent_free(c->agent[i]);
  for (int i = 0; i < c->n_coords; i++) {
    if (!c->coord[i]) continue;
    tg_proc_stop(c->coord[i], 3000);
    if (dump) tg_proc_dump_log(c->coord[i], 6000);
    tg_proc_free(c->coord[i]);
  }
}

static void stop_cluster(cluster *c) { stop_cluster_dump(c, 0); }

/* cmocka runs this after every test, also after a failed assertion (which
 * leaves the test function before its own stop_cluster). */
static int teardown_cluster(void **state) {
  if (current && !current->stopped) stop_cluster_dump(current, 1);
  current = NULL;
  return 0;
}

static tg_sim_state state_of(tg_sim_agent *a) {
  tg_sim_state s;
  tg_sim_agent_state(a, &s);
  return s;
}

/* Waits until every listed agent has a world with generation >= gen. */
static void wait_all(cluster *c, tg_sim_agent **as, int n, uint64_t gen) {
  for (int i = 0; i < n; i++) {
    if (tg_sim_agent_wait_generation(as[i], gen, WAIT_MS) != 0) {
      fail_msg("agent %d never saw generation %llu (has %llu)", i, (unsigned long long)gen,
               (unsigned long long)state_of(as[i]).generation);
    }
  }
}

/* Waits until the agent's newest world satisfies size and position rules. */
static void wait_world_size(cluster *c, tg_sim_agent *a, uint32_t size) {
  int64_t deadline = tg_sim_mono_ms() + WAIT_MS;
  while (tg_sim_mono_ms() < deadline) {
    tg_sim_state s = state_of(a);
    if (s.generation > 0 && s.world_size == size) return;
    usleep(10000);
  }
  fail_msg("world size never became %u (is %u at generation %llu)", size, state_of(a).world_size,
           (unsigned long long)state_of(a).generation);
}

static int leader_index(cluster *c) {
  /* The leader answers Status; standbys answer UNAVAILABLE. */
  for (int i = 0; i < c->n_coords; i++) {
    if (!c->coord[i] || !tg_proc_running(c->coord[i])) continue;
    char target[64], err[128];
    snprintf(target, sizeof target, "127.0.0.1:%d", c->port[i]);
    tg_rpc_channel *ch = tg_rpc_channel_new(target, NULL, err, sizeof err);
    Tardigrade__V1__StatusRequest req = TARDIGRADE__V1__STATUS_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    tg_rpc_call_opts o = {.deadline_ms = 1000};
    tg_rpc_code code = tg_rpc_unary(ch, "/tardigrade.v1.Operator/Status", &req.base,
                                    &tardigrade__v1__status_response__descriptor, &m, &o, NULL);
    if (m) protobuf_c_message_free_unpacked(m, NULL);
    tg_rpc_channel_free(ch);
    if (code == TG_RPC_OK) return i;
  }
  return -1;
}

static int wait_leader(cluster *c) {
  int64_t deadline = tg_sim_mono_ms() + WAIT_MS;
  while (tg_sim_mono_ms() < deadline) {
    int i = leader_index(c);
    if (i >= 0) return i;
    usleep(20000);
  }
  fail_msg("no coordinator became leader");
  return -1;
}

/* Every world ever committed for the job, read back from etcd's history:
 * generations must be strictly increasing, so no two worlds share one. */
static void check_generations_unique(cluster *c, uint64_t *last) {
  tg_rpc_status st = {0};
  tg_etcd_config ec = {.endpoints = tg_etcd_cluster_endpoints(etcd)};
  tg_etcd *e = tg_etcd_open(&ec, &st);
  assert_non_null(e);
  char key[128];
  snprintf(key, sizeof key, "/tardigrade/jobs/%s/world", c->job);
  tg_etcd_range_result now = {0};
  assert_int_equal(tg_etcd_get(e, key, NULL, &now, &st), TG_RPC_OK);
  tg_etcd_watch_opts wo = {.start_revision = 1};
  tg_etcd_watch *w = tg_etcd_watch_open(e, key, &wo, &st);
  assert_non_null(w);
  uint64_t prev = 0;
  int n = 0;
  while (tg_etcd_watch_revision(w) < now.revision) {
    tg_etcd_event ev = {0};
    if (tg_etcd_watch_next(w, &ev, 2000, &st) != TG_ETCD_WATCH_EVENT) break;
    if (ev.type == TG_ETCD_EVENT_PUT) {
      Tardigrade__V1__World *world =
          tardigrade__v1__world__unpack(NULL, ev.kv.value_len, (const uint8_t *)ev.kv.value);
      assert_non_null(world);
      if (world->generation <= prev) {
          fail_msg("generation %llu committed after %llu", (unsigned long long)world->generation,
                 (unsigned long long)prev);
      }
      prev = world->generation;
      n++;
      tardigrade__v1__world__free_unpacked(world, NULL);
    }
    tg_etcd_event_clear(&ev);
  }
  assert_true(n > 0);
  if (last) *last = prev;
  tg_etcd_watch_close(w);
  tg_etcd_range_result_free(&now);
  tg_etcd_close(e);
}

/* Runs tgctl against the cluster; returns its exit code, output in out. */
static int tgctl(cluster *c, char *out, size_t outlen, const char *a1, const char *a2, const char *a3) {
  const char *argv[] = {"coordinator/tgctl", "--coordinator", c->endpoints, a1, a2, a3, NULL};
  int status = 0;
  assert_int_equal(tg_proc_run(argv, NULL, 10000, out, outlen, &status), 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* How many faults of `kind` about `node` the leader lists (tgctl --json). */
static int count_faults(cluster *c, const char *kind, const char *node) {
  static char out[65536];
  assert_int_equal(tgctl(c, out, sizeof out, "--json", "faults", NULL), 0);
  cJSON *j = cJSON_Parse(out);
  assert_non_null(j);
  int n = 0;
  for (int i = 0; i < cJSON_GetArraySize(j); i++) {
    cJSON *f = cJSON_GetArrayItem(j, i);
    if (strcmp(cJSON_GetObjectItem(f, "kind")->valuestring, kind) == 0 &&
        strcmp(cJSON_GetObjectItem(f, "node_id")->valuestring, node) == 0)
      n++;
  }
  cJSON_Delete(j);
  return n;
}

/* ------------------------------------------------------------- tests */

static const char *const small[] = {"--min-nodes", "2", "--max-nodes", "3", "--slots", "2", NULL};

static void test_join_min_then_max_with_last_call(void **state) {
  cluster *c = start_cluster(1, small);
  tg_sim_agent *a = add_agent(c, "n0", 2);
  assert_int_equal(tg_sim_agent_wait_registered(a, WAIT_MS), 0);
  usleep(500000); /* alone, below min: no world */
  assert_int_equal(state_of(a).generation, 0);
  tg_sim_agent *b = add_agent(c, "n1", 2);
  tg_sim_agent *late = add_agent(c, "n2", 2); /* joins within the last call */
  tg_sim_agent *all[] = {a, b, late};
  wait_all(c, all, 3, 1);
  /* The last call batched the late joiner into the first world. */
  assert_int_equal(state_of(a).generation, 1);
  assert_int_equal(state_of(late).world_size, 6);
  assert_string_equal(state_of(a).reason, "first");
  /* A fourth node beyond max is a spare. */
  tg_sim_agent *spare = add_agent(c, "n3", 2);
  assert_int_equal(tg_sim_agent_wait_generation(spare, 1, WAIT_MS), 0);
  assert_int_equal(state_of(spare).position, -1);
  assert_int_equal(state_of(a).generation, 1);
  check_generations_unique(c, NULL);
  stop_cluster(c);
}

/* Opens WatchWorld as `node` (NULL: an observer) and returns the first update. */
static Tardigrade__V1__WorldUpdate *first_update(cluster *c, const char *node, uint64_t incarnation) {
  char target[64], err[128];
  snprintf(target, sizeof target, "127.0.0.1:%d", c->port[wait_leader(c)]);
  tg_rpc_channel *ch = tg_rpc_channel_new(target, NULL, err, sizeof err);
  tg_rpc_status st = {0};
  tg_rpc_call_opts o = {.deadline_ms = 5000};
  tg_rpc_stream *s = tg_rpc_stream_open(ch, "/tardigrade.v1.Coordinator/WatchWorld",
                                        &tardigrade__v1__world_update__descriptor, &o, &st);
  assert_non_null(s);
  Tardigrade__V1__WatchWorldRequest req = TARDIGRADE__V1__WATCH_WORLD_REQUEST__INIT;
  req.node_id = (char *)(node ? node : "");
  req.incarnation = incarnation;
  assert_int_equal(tg_rpc_stream_send(s, &req.base, 2000), 0);
  ProtobufCMessage *m = NULL;
  assert_int_equal(tg_rpc_stream_recv(s, &m, 5000, &st), TG_RPC_RECV_MESSAGE);
  tg_rpc_stream_free(s);
  tg_rpc_channel_free(ch);
  return (Tardigrade__V1__WorldUpdate *)m;
}

static void test_world_updates_observer_and_node(void **state) {
  cluster *c = start_cluster(1, small);
  tg_sim_agent *n[3];
  add_agents(c, n, 3, 2);
  wait_all(c, n, 3, 1);
  /* An observer gets the whole membership in position order. */
  Tardigrade__V1__WorldUpdate *u = first_update(c, NULL, 0);
  assert_true(u->full);
  assert_int_equal(u->world->n_nodes, 3);
  for (size_t p = 0; p < 3; p++) assert_int_equal(u->world->nodes[p]->position, p);
  tardigrade__v1__world_update__free_unpacked(u, NULL);
  /* A node gets its position and its two ring neighbours only. */
  tg_sim_state s1 = state_of(n[1]);
  u = first_update(c, "n1", s1.incarnation);
  assert_false(u->full);
  assert_int_equal(u->position, s1.position);
  assert_int_equal(u->world->world_size, 6);
  assert_int_equal(u->world->n_nodes, 2);
  assert_int_equal(u->world->nodes[0]->position, (uint32_t)(s1.position + 1) % 3);
  assert_int_equal(u->world->nodes[1]->position, (uint32_t)(s1.position + 2) % 3);
  tardigrade__v1__world_update__free_unpacked(u, NULL);
  stop_cluster(c);
}

static void test_spare_replaces_dead_node(void **state) {
  cluster *c = start_cluster(1, small);
  tg_sim_agent *n[4];
  add_agents(c, n, 3, 2);
  wait_all(c, n, 3, 1);
  n[3] = add_agent(c, "spare", 2);
  assert_int_equal(tg_sim_agent_wait_registered(n[3], WAIT_MS), 0);
  int lost_position = state_of(n[1]).position;
  /* The lost node's shards are copied to the next node of the ring. */
  Tardigrade__V1__WorldUpdate *before = first_update(c, NULL, 0);
  const Tardigrade__V1__WorldNode *next = before->world->nodes[(lost_position + 1) % 3];
  char next_id[64], next_address[256];
  snprintf(next_id, sizeof next_id, "%s", next->node_id);
  snprintf(next_address, sizeof next_address, "%s", next->address);
  tardigrade__v1__world_update__free_unpacked(before, NULL);
  tg_sim_agent_silence(n[1], 1); /* heartbeats stop: the node is lost */
  tg_sim_agent *survivors[] = {n[0], n[2], n[3]};
  wait_all(c, survivors, 3, 2);
  assert_string_equal(state_of(n[0]).reason, "replace");
  assert_int_equal(state_of(n[0]).world_size, 6);           /* size kept */
  assert_int_equal(state_of(n[3]).position, lost_position); /* the spare took its ranks */
  /* The new world says where the lost ranks' shards can be fetched. */
  Tardigrade__V1__WorldUpdate *u = first_update(c, NULL, 0);
  assert_int_equal(u->world->n_shard_sources, 2);
  for (size_t i = 0; i < 2; i++) {
    assert_int_equal(u->world->shard_sources[i]->shard, lost_position * 2 + (int)i);
    assert_string_equal(u->world->shard_sources[i]->node_id, next_id);
    assert_string_equal(u->world->shard_sources[i]->agent_address, next_address);
  }
  tardigrade__v1__world_update__free_unpacked(u, NULL);
  check_generations_unique(c, NULL);
  stop_cluster(c);
}

static void test_shrink_keeps_granularity_then_grows_back(void **state) {
  /* 2 slots per node, world size a multiple of 4: nodes come in pairs. */
  const char *const gran[] = {"--min-nodes", "2", "--max-nodes", "4", "--slots", "2",
                              "--granularity", "4", NULL};
  cluster *c = start_cluster(1, gran);
  tg_sim_agent *n[4];
  add_agents(c, n, 4, 2);
  wait_all(c, n, 4, 1);
  assert_int_equal(state_of(n[0]).world_size, 8);
  tg_sim_agent_free(n[3]); /* node lost, no spare */
  c->agent[3] = NULL;
  c->n_agents = 3;
  wait_world_size(c, n[0], 4); /* 3 survivors, rounded down to 2 nodes */
  assert_string_equal(state_of(n[0]).reason, "shrink");
  /* The node comes back: after the last call the world grows to 8 again. */
  n[3] = add_agent(c, "n3", 2);
  wait_world_size(c, n[0], 8);
  assert_string_equal(state_of(n[0]).reason, "grow");
  check_generations_unique(c, NULL);
  stop_cluster(c);
}

static void test_leader_killed_mid_rendezvous(void **state) {
  /* A long last call keeps the leader deciding while it is killed. */
  const char *const slow[] = {"--min-nodes", "2", "--max-nodes", "3", "--slots", "2",
                              "--last-call-ms", "3000", NULL};
  cluster *c = start_cluster(2, slow);
  int leader = wait_leader(c);
  tg_sim_agent *n[2];
  n[0] = add_agent(c, "n0", 2);
  n[1] = add_agent(c, "n1", 2);
  assert_int_equal(tg_sim_agent_wait_registered(n[0], WAIT_MS), 0);
  assert_int_equal(tg_sim_agent_wait_registered(n[1], WAIT_MS), 0);
  usleep(300000); /* the registrations reach etcd; the last call is still open */
  assert_int_equal(state_of(n[0]).generation, 0);
  tg_proc_signal(c->coord[leader], SIGKILL);
  tg_proc_wait(c->coord[leader], 2000, NULL);
  /* The standby takes over and finishes the rendezvous. */
  wait_all(c, n, 2, 1);
  assert_int_equal(state_of(n[0]).world_size, 4);
  assert_int_not_equal(wait_leader(c), leader);
  check_generations_unique(c, NULL);
  stop_cluster(c);
}

static void test_leader_killed_mid_run(void **state) {
  cluster *c = start_cluster(2, small);
  int leader = wait_leader(c);
  tg_sim_agent *n[3];
  n[0] = add_agent(c, "n0", 2);
  n[1] = add_agent(c, "n1", 2);
  wait_all(c, n, 2, 1);
  uint64_t before = state_of(n[0]).generation;
  tg_rpc_status st = {0};
  assert_int_equal(tg_sim_agent_report_fault(n[0], TARDIGRADE__V1__FAULT_KIND__FAULT_NIC_FLAP,
                                             TARDIGRADE__V1__SEVERITY__SEVERITY_WARNING, -1, before,
                                             "eth1 flapped", &st),
                   TG_RPC_OK);
  usleep(200000); /* written to etcd within a tick */

  /* The leader dies; the standby takes over and the job goes on: a node
   * that joins afterwards grows the world under the next generation. */
  tg_proc_signal(c->coord[leader], SIGKILL);
  tg_proc_wait(c->coord[leader], 2000, NULL);
  tg_proc_free(c->coord[leader]);
  c->coord[leader] = NULL;
  int next = wait_leader(c);
  assert_int_not_equal(next, leader);
  n[2] = add_agent(c, "n2", 2);
  wait_all(c, n, 3, before + 1);
  wait_world_size(c, n[0], 6);

  /* The first coordinator comes back as a standby; a node is lost and the
   * world shrinks; then the second leader dies and the first takes over. */
  start_coordinator(c, leader, small);
  usleep(300000);
  tg_sim_agent_silence(n[2], 1);
  wait_world_size(c, n[0], 4);
  tg_proc_signal(c->coord[next], SIGKILL);
  tg_proc_wait(c->coord[next], 2000, NULL);
  assert_int_equal(wait_leader(c), leader);
  /* The fault log survived two leader changes, and the lost node is
   * reported once, not again by the new leader after its grace period. */
  assert_int_equal(count_faults(c, "NIC_FLAP", "n0"), 1);
  usleep(1500000); /* longer than a heartbeat timeout after the takeover */
  assert_int_equal(count_faults(c, "NODE_LOST", "n2"), 1);
  assert_int_equal(state_of(n[0]).world_size, 4);
  uint64_t last = 0;
  check_generations_unique(c, &last);
  assert_true(last >= state_of(n[0]).generation);
  stop_cluster(c);
}

static void test_etcd_restart_recovers(void **state) {
  cluster *c = start_cluster(1, small);
  tg_sim_agent *n[3];
  n[0] = add_agent(c, "n0", 2);
  n[1] = add_agent(c, "n1", 2);
  wait_all(c, n, 2, 1);
  char err[256];
  assert_int_equal(tg_etcd_cluster_kill(etcd, 0), 0);
  usleep(300000);
  assert_int_equal(tg_etcd_cluster_restart(etcd, 0, WAIT_MS, err, sizeof err), 0);
  /* After etcd is back, the coordinator still forms worlds. */
  n[2] = add_agent(c, "n2", 2);
  wait_world_size(c, n[0], 6);
  assert_true(wait_leader(c) >= 0);
  check_generations_unique(c, NULL);
  stop_cluster(c);
}

static void test_stale_generation_refused(void **state) {
  cluster *c = start_cluster(1, small);
  tg_sim_agent *n[3];
  add_agents(c, n, 3, 2);
  wait_all(c, n, 3, 1);
  tg_rpc_status st = {0};
  /* A rank fault against the current generation is accepted and forms a
   * new one with the same members... */
  assert_int_equal(tg_sim_agent_report_fault(n[0], TARDIGRADE__V1__FAULT_KIND__FAULT_TRAINER_EXIT,
                                             TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR, 1, 1,
                                             "trainer killed by signal 9", &st),
                   TG_RPC_OK);
  wait_all(c, n, 3, 2);
  assert_string_equal(state_of(n[1]).reason, "restart");
  /* ...and the same report against generation 1 is now stale. */
  assert_int_equal(tg_sim_agent_report_fault(n[0], TARDIGRADE__V1__FAULT_KIND__FAULT_TRAINER_EXIT,
                                             TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR, 1, 1,
                                             "late report", &st),
                   TG_RPC_FAILED_PRECONDITION);
  assert_non_null(strstr(st.message, "stale generation"));
  /* From the future: refused too. */
  assert_int_equal(tg_sim_agent_report_fault(n[0], TARDIGRADE__V1__FAULT_KIND__FAULT_GPU_XID,
                                             TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR, -1, 99, "xid", &st),
                   TG_RPC_FAILED_PRECONDITION);
  stop_cluster(c);
}

/* Raw calls with hand-made requests, as a hostile or broken client would. */
static tg_rpc_code raw_call(cluster *c, const char *path, const ProtobufCMessage *req,
                            const ProtobufCMessageDescriptor *resp_desc, tg_rpc_status *st) {
  char target[64], err[128];
  snprintf(target, sizeof target, "127.0.0.1:%d", c->port[0]);
  tg_rpc_channel *ch = tg_rpc_channel_new(target, NULL, err, sizeof err);
  ProtobufCMessage *m = NULL;
  tg_rpc_call_opts o = {.deadline_ms = 3000};
  tg_rpc_code code = tg_rpc_unary(ch, path, req, resp_desc, &m, &o, st);
  if (m) protobuf_c_message_free_unpacked(m, NULL);
  tg_rpc_channel_free(ch);
  return code;
}

static void test_hostile_requests_refused(void **state) {
  cluster *c = start_cluster(1, small);
  wait_leader(c);
  tg_rpc_status st = {0};
  const char *reg = "/tardigrade.v1.Coordinator/RegisterNode";
  const ProtobufCMessageDescriptor *rd = &tardigrade__v1__register_response__descriptor;
  Tardigrade__V1__NodeInfo info = TARDIGRADE__V1__NODE_INFO__INIT;
  Tardigrade__V1__RegisterRequest req = TARDIGRADE__V1__REGISTER_REQUEST__INIT;
  req.job_id = c->job;
  req.node = &info;
  info.slots = 2;
  info.address = (char *)"127.0.0.1:1";

  info.node_id = (char *)"../../etc/passwd"; /* not an identifier */
  assert_int_equal(raw_call(c, reg, &req.base, rd, &st), TG_RPC_INVALID_ARGUMENT);
  info.node_id = (char *)"";
  assert_int_equal(raw_call(c, reg, &req.base, rd, &st), TG_RPC_INVALID_ARGUMENT);
  req.node = NULL;
  assert_int_equal(raw_call(c, reg, &req.base, rd, &st), TG_RPC_INVALID_ARGUMENT);
  req.node = &info;
  info.node_id = (char *)"ok-node";
  info.slots = 3; /* the job has 2 slots per node */
  assert_int_equal(raw_call(c, reg, &req.base, rd, &st), TG_RPC_INVALID_ARGUMENT);
  info.slots = 2;
  char big[600];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  info.hostname = big;
  assert_int_equal(raw_call(c, reg, &req.base, rd, &st), TG_RPC_INVALID_ARGUMENT);
  info.hostname = (char *)"";
  req.job_id = (char *)"another-job";
  assert_int_equal(raw_call(c, reg, &req.base, rd, &st), TG_RPC_FAILED_PRECONDITION);
  req.job_id = c->job;
  /* Oversized: a 100 KB capability list against a 64 KB bound. */
  static char huge[100 << 10];
  memset(huge, 'y', sizeof huge - 1);
  char *caps[] = {huge};
  info.n_capabilities = 1;
  info.capabilities = caps;
  assert_int_equal(raw_call(c, reg, &req.base, rd, &st), TG_RPC_RESOURCE_EXHAUSTED);
  info.n_capabilities = 0;

  /* Unknown node, wrong incarnation, bad fault. */
  Tardigrade__V1__Fault f = TARDIGRADE__V1__FAULT__INIT;
  f.kind = TARDIGRADE__V1__FAULT_KIND__FAULT_GPU_XID;
  f.severity = TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR;
  f.rank = -1;
  Tardigrade__V1__ReportFaultRequest fr = TARDIGRADE__V1__REPORT_FAULT_REQUEST__INIT;
  fr.node_id = (char *)"nobody";
  fr.fault = &f;
  const char *rf = "/tardigrade.v1.Coordinator/ReportFault";
  const ProtobufCMessageDescriptor *fd = &tardigrade__v1__report_fault_response__descriptor;
  assert_int_equal(raw_call(c, rf, &fr.base, fd, &st), TG_RPC_NOT_FOUND);
  assert_int_equal(raw_call(c, reg, &req.base, rd, &st), TG_RPC_OK); /* ok-node registers */
  fr.node_id = (char *)"ok-node";
  fr.incarnation = 12345;
  assert_int_equal(raw_call(c, rf, &fr.base, fd, &st), TG_RPC_FAILED_PRECONDITION);
  fr.incarnation = 1;
  f.kind = 999; /* unknown kind */
  assert_int_equal(raw_call(c, rf, &fr.base, fd, &st), TG_RPC_INVALID_ARGUMENT);
  f.kind = TARDIGRADE__V1__FAULT_KIND__FAULT_GPU_XID;
  f.rank = -7;
  assert_int_equal(raw_call(c, rf, &fr.base, fd, &st), TG_RPC_INVALID_ARGUMENT);
  f.rank = 5; /* no world yet: no rank 5 */
  assert_int_equal(raw_call(c, rf, &fr.base, fd, &st), TG_RPC_INVALID_ARGUMENT);

  /* Operator calls with bad ids. */
  Tardigrade__V1__NodeRequest nr = TARDIGRADE__V1__NODE_REQUEST__INIT;
  nr.node_id = (char *)"no such node";
  assert_int_equal(raw_call(c, "/tardigrade.v1.Operator/Drain", &nr.base,
                            &tardigrade__v1__node_response__descriptor, &st),
                   TG_RPC_INVALID_ARGUMENT);
  nr.node_id = (char *)"ghost";
  assert_int_equal(raw_call(c, "/tardigrade.v1.Operator/Drain", &nr.base,
                            &tardigrade__v1__node_response__descriptor, &st),
                   TG_RPC_NOT_FOUND);

  /* After all that the coordinator still serves, and etcd holds only the
   * one valid node under the job. */
  assert_true(tg_proc_running(c->coord[0]));
  assert_int_equal(leader_index(c), 0);
  tg_etcd_config ec = {.endpoints = tg_etcd_cluster_endpoints(etcd)};
  tg_etcd *e = tg_etcd_open(&ec, &st);
  char prefix[128];
  snprintf(prefix, sizeof prefix, "/tardigrade/jobs/%s/nodes/", c->job);
  tg_etcd_range_opts ro = {.prefix = 1};
  tg_etcd_range_result rr = {0};
  for (int i = 0; i < 100 && rr.n_kvs == 0; i++) { /* the ticker writes within a tick */
    tg_etcd_range_result_free(&rr);
    memset(&rr, 0, sizeof rr);
    assert_int_equal(tg_etcd_get(e, prefix, &ro, &rr, &st), TG_RPC_OK);
    if (rr.n_kvs == 0) usleep(20000);
  }
  assert_int_equal(rr.n_kvs, 1);
  assert_non_null(strstr(rr.kvs[0].key, "/nodes/ok-node"));
  tg_etcd_range_result_free(&rr);
  tg_etcd_close(e);
  stop_cluster(c);
}

static void test_drain_and_quarantine(void **state) {
  const char *const q[] = {"--min-nodes", "2", "--max-nodes", "3", "--slots", "2",
                           "--quarantine-faults", "2", NULL};
  cluster *c = start_cluster(1, q);
  tg_sim_agent *n[3];
  add_agents(c, n, 3, 2);
  wait_all(c, n, 3, 1);
  /* Drain n2 through the Operator API: it leaves the world. */
  tg_rpc_status st = {0};
  Tardigrade__V1__NodeRequest nr = TARDIGRADE__V1__NODE_REQUEST__INIT;
  nr.node_id = (char *)"n2";
  nr.reason = (char *)"test";
  assert_int_equal(raw_call(c, "/tardigrade.v1.Operator/Drain", &nr.base,
                            &tardigrade__v1__node_response__descriptor, &st),
                   TG_RPC_OK);
  wait_world_size(c, n[0], 4);
  assert_int_equal(tg_sim_agent_wait_generation(n[2], 2, WAIT_MS), 0);
  assert_int_equal(state_of(n[2]).position, -1);
  /* Two node faults on n1 quarantine it; n0 alone is below min: suspended. */
  uint64_t g = state_of(n[1]).generation;
  for (int k = 0; k < 2; k++)
    assert_int_equal(tg_sim_agent_report_fault(n[1], TARDIGRADE__V1__FAULT_KIND__FAULT_GPU_ECC,
                                               TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR, -1, g,
                                               "uncorrectable ECC error", &st),
                     TG_RPC_OK);
  wait_world_size(c, n[0], 0);
  assert_string_equal(state_of(n[0]).reason, "suspended");
  /* Uncordon n2: the world resumes with n0 and n2, n1 stays out. */
  assert_int_equal(raw_call(c, "/tardigrade.v1.Operator/Uncordon", &nr.base,
                            &tardigrade__v1__node_response__descriptor, &st),
                   TG_RPC_OK);
  wait_world_size(c, n[0], 4);
  assert_int_equal(tg_sim_agent_wait_generation(n[1], state_of(n[0]).generation, WAIT_MS), 0);
  assert_int_equal(state_of(n[1]).position, -1);
  assert_true(state_of(n[2]).position >= 0);
  /* Clear the quarantine: n1 is healthy again and the world grows. */
  nr.node_id = (char *)"n1";
  assert_int_equal(raw_call(c, "/tardigrade.v1.Operator/ClearQuarantine", &nr.base,
                            &tardigrade__v1__node_response__descriptor, &st),
                   TG_RPC_OK);
  wait_world_size(c, n[0], 6);
  check_generations_unique(c, NULL);
  stop_cluster(c);
}

/* A rank's replica of the parameters was corrupted (silent data
 * corruption, FATAL): one report takes its node out and quarantines it,
 * although its heartbeats stay healthy (nothing on the node can see the
 * fault), so it does not come straight back; clearing the quarantine
 * does. */
static void test_silent_data_corruption_quarantines(void **state) {
  cluster *c = start_cluster(1, small);
  tg_sim_agent *n[3];
  add_agents(c, n, 3, 2);
  wait_all(c, n, 3, 1);
  tg_rpc_status st = {0};
  int rank = state_of(n[1]).position * 2 + 1;
  assert_int_equal(tg_sim_agent_report_fault(n[1], TARDIGRADE__V1__FAULT_KIND__FAULT_SILENT_DATA_CORRUPTION,
                                             TARDIGRADE__V1__SEVERITY__SEVERITY_FATAL, rank,
                                             state_of(n[1]).generation, "replica check of step 7", &st),
                   TG_RPC_OK);
  wait_world_size(c, n[0], 4);
  assert_int_equal(tg_sim_agent_wait_generation(n[1], state_of(n[0]).generation, WAIT_MS), 0);
  assert_int_equal(state_of(n[1]).position, -1);
  static char out[16384];
  assert_int_equal(tgctl(c, out, sizeof out, "--json", "nodes", NULL), 0);
  cJSON *j = cJSON_Parse(out);
  assert_non_null(j);
  int quarantined = 0;
  for (int i = 0; i < cJSON_GetArraySize(j); i++) {
    const cJSON *node = cJSON_GetArrayItem(j, i);
    if (strcmp(cJSON_GetObjectItem(node, "node_id")->valuestring, "n1") == 0)
      quarantined = strcmp(cJSON_GetObjectItem(node, "state")->valuestring, "QUARANTINED") == 0;
  }
  cJSON_Delete(j);
  if (!quarantined) fail_msg("n1 is not quarantined: %s", out);
  assert_int_equal(tgctl(c, out, sizeof out, "quarantine", "clear", "n1"), 0);
  wait_world_size(c, n[0], 6);
  check_generations_unique(c, NULL);
  stop_cluster(c);
}

static void test_tgctl(void **state) {
  cluster *c = start_cluster(2, small); /* tgctl must find the leader of two */
  tg_sim_agent *n[2];
  n[0] = add_agent(c, "n0", 2);
  n[1] = add_agent(c, "n1", 2);
  wait_all(c, n, 2, 1);
  static char out[16384];

  assert_int_equal(tgctl(c, out, sizeof out, "status", NULL, NULL), 0);
  assert_non_null(strstr(out, "generation   1 (first)"));
  assert_non_null(strstr(out, "4 ranks on 2 nodes"));

  assert_int_equal(tgctl(c, out, sizeof out, "--json", "status", NULL), 0);
  cJSON *j = cJSON_Parse(out);
  assert_non_null(j);
  cJSON *world = cJSON_GetObjectItem(j, "world");
  assert_int_equal(cJSON_GetObjectItem(world, "generation")->valuedouble, 1);
  assert_int_equal(cJSON_GetObjectItem(world, "world_size")->valuedouble, 4);
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(world, "nodes")), 2);
  assert_string_equal(cJSON_GetObjectItem(j, "job_id")->valuestring, c->job);
  cJSON_Delete(j);

  assert_int_equal(tgctl(c, out, sizeof out, "--json", "nodes", NULL), 0);
  j = cJSON_Parse(out);
  assert_non_null(j);
  assert_int_equal(cJSON_GetArraySize(j), 2);
  assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(j, 0), "state")->valuestring, "ACTIVE");
  cJSON_Delete(j);

  assert_int_equal(tgctl(c, out, sizeof out, "cordon", "n1", NULL), 0);
  assert_non_null(strstr(out, "n1: cordoned"));
  assert_int_equal(tgctl(c, out, sizeof out, "uncordon", "n1", NULL), 0);
  assert_int_equal(tgctl(c, out, sizeof out, "quarantine", "clear", "n1"), 0);
  assert_int_equal(tgctl(c, out, sizeof out, "drain", "nobody", NULL), 1);
  assert_non_null(strstr(out, "NOT_FOUND"));
  assert_int_equal(tgctl(c, out, sizeof out, "frobnicate", NULL, NULL), 2);
  assert_int_equal(tgctl(c, out, sizeof out, "--help", NULL, NULL), 0);
  assert_non_null(strstr(out, "usage: tgctl"));

  /* A node fault shows up in the fault log. */
  tg_rpc_status st = {0};
  assert_int_equal(tg_sim_agent_report_fault(n[1], TARDIGRADE__V1__FAULT_KIND__FAULT_NIC_DOWN,
                                             TARDIGRADE__V1__SEVERITY__SEVERITY_WARNING, -1, 1,
                                             "eth0 carrier lost", &st),
                   TG_RPC_OK);
  assert_int_equal(tgctl(c, out, sizeof out, "--json", "faults", NULL), 0);
  j = cJSON_Parse(out);
  assert_non_null(j);
  assert_true(cJSON_GetArraySize(j) >= 1);
  cJSON *f = cJSON_GetArrayItem(j, 0);
  assert_string_equal(cJSON_GetObjectItem(f, "kind")->valuestring, "NIC_DOWN");
  assert_string_equal(cJSON_GetObjectItem(f, "node_id")->valuestring, "n1");
  assert_string_equal(cJSON_GetObjectItem(f, "detail")->valuestring, "eth0 carrier lost");
  cJSON_Delete(j);
  stop_cluster(c);
}

static void test_mutual_tls(void **state) {
  tg_test_certs tls;
  char err[512];
  if (tg_test_make_certs(&tls, err, sizeof err) != 0) fail_msg("%s", err);
  const char *const secure[] = {"--min-nodes", "1", "--max-nodes", "1", "--tls-cert", tls.server_cert,
                                "--tls-key", tls.server_key, "--tls-ca", tls.ca, "--tls-mutual", NULL};
  cluster *c = start_cluster(1, secure);
  static char out[8192];
  int status = 0;
  /* With a client certificate signed by the CA: served. */
  const char *with_cert[] = {"coordinator/tgctl", "--coordinator", c->endpoints, "--timeout-ms", "10000",
                             "--tls-ca", tls.ca, "--tls-cert", tls.client_cert, "--tls-key",
                             tls.client_key, "status", NULL};
  int64_t deadline = tg_sim_mono_ms() + WAIT_MS;
  do {
    assert_int_equal(tg_proc_run(with_cert, NULL, 15000, out, sizeof out, &status), 0);
  } while (WEXITSTATUS(status) != 0 && tg_sim_mono_ms() < deadline);
  assert_int_equal(WEXITSTATUS(status), 0);
  assert_non_null(strstr(out, "leader       c0"));
  /* Without one, or in plaintext: refused. */
  const char *no_cert[] = {"coordinator/tgctl", "--coordinator", c->endpoints, "--timeout-ms", "1500",
                           "--tls-ca", tls.ca, "status", NULL};
  assert_int_equal(tg_proc_run(no_cert, NULL, 15000, out, sizeof out, &status), 0);
  assert_int_equal(WEXITSTATUS(status), 1);
  const char *plain[] = {"coordinator/tgctl", "--coordinator", c->endpoints, "--timeout-ms", "1500",
                         "status", NULL};
  assert_int_equal(tg_proc_run(plain, NULL, 15000, out, sizeof out, &status), 0);
  assert_int_equal(WEXITSTATUS(status), 1);
  stop_cluster(c);
}

static int setup(void **state) {
  char err[256];
  tg_log_init("coordinator_test", TG_LOG_WARN);
  if (tg_proc_temp_dir("coord", tmpdir, sizeof tmpdir) != 0) return -1;
  etcd = tg_etcd_cluster_start(1, err, sizeof err);
  if (!etcd) {
    fprintf(stderr, "etcd: %s\n", err);
    return -1;
  }
  return 0;
}

static int teardown(void **state) {
  tg_etcd_cluster_free(etcd);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_join_min_then_max_with_last_call, teardown_cluster),
      cmocka_unit_test_teardown(test_world_updates_observer_and_node, teardown_cluster),
      cmocka_unit_test_teardown(test_spare_replaces_dead_node, teardown_cluster),
      cmocka_unit_test_teardown(test_shrink_keeps_granularity_then_grows_back, teardown_cluster),
      cmocka_unit_test_teardown(test_stale_generation_refused, teardown_cluster),
      cmocka_unit_test_teardown(test_hostile_requests_refused, teardown_cluster),
      cmocka_unit_test_teardown(test_drain_and_quarantine, teardown_cluster),
      cmocka_unit_test_teardown(test_silent_data_corruption_quarantines, teardown_cluster),
      cmocka_unit_test_teardown(test_tgctl, teardown_cluster),
      cmocka_unit_test_teardown(test_mutual_tls, teardown_cluster),
      cmocka_unit_test_teardown(test_leader_killed_mid_rendezvous, teardown_cluster),
      cmocka_unit_test_teardown(test_leader_killed_mid_run, teardown_cluster),
      cmocka_unit_test_teardown(test_etcd_restart_recovers, teardown_cluster),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
