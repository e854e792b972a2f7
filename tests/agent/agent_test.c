/* Integration tests for tg-agent: a real etcd, real tg-coordinator and
 * tg-agent processes, and small worker processes that speak the agent's
 * local service (agent/testdata/worker.c) and wait for each other in a
 * barrier the way ranks wait in a collective. Each test uses its own job. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "agent/health/gpu_fake.h"
#include "agent/health/nic_fake.h"
#include "common/log/log.h"
#include "common/rpc/rpc.h"
#include "proto/tardigrade/v1/agent.pb-c.h"
#include "tests/harness/etcd_cluster.h"
#include "tests/harness/proc.h"

#define WAIT_MS 20000
#define MAX_AGENTS 4
#define MAX_WORKERS 8

static tg_etcd_cluster *etcd;
static char tmpdir[512];
static char sockdir[64]; /* unix socket paths must stay under 108 bytes */
static int job_counter;

typedef struct {
  char job[32];
  tg_proc *coord[2];
  int coord_port[2];
  int n_coords;
  char coordinators[128];
  tg_proc *agent[MAX_AGENTS];
  char sock[MAX_AGENTS][600];
  int slots;
  tg_proc *worker[MAX_WORKERS];
  char barrier[600];
  int stopped;
} cluster;

static cluster the_cluster; /* static: teardown needs it after a failed assertion */

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void start_coordinator(cluster *c, int i, int min, int max) {
  char listen[64], id[16], log[700], smin[8], smax[8], slots[8];
  if (!c->coord_port[i]) c->coord_port[i] = tg_proc_free_port();
  snprintf(listen, sizeof listen, "127.0.0.1:%d", c->coord_port[i]);
  snprintf(id, sizeof id, "c%d", i);
  snprintf(log, sizeof log, "%s/%s-%s.log", tmpdir, c->job, id);
  snprintf(smin, sizeof smin, "%d", min);
  snprintf(smax, sizeof smax, "%d", max);
  snprintf(slots, sizeof slots, "%d", c->slots);
  const char *argv[] = {"coordinator/tg-coordinator", "--job", c->job, "--id", id, "--listen", listen,
                        "--http", "off", "--etcd", tg_etcd_cluster_endpoints(etcd), "--min-nodes", smin, "--max-nodes",
                        smax, "--slots", slots, "--heartbeat-interval-ms", "100",
                        "--heartbeat-timeout-ms", "1000", "--leader-ttl-s", "1", "--last-call-ms", "200",
                        "--quarantine-faults", "0", NULL};
  char err[256];
  c->coord[i] = tg_proc_start(argv, log, err, sizeof err);
  assert_non_null(c->coord[i]);
}

static cluster *start_cluster(int n_coords, int min, int max, int slots) {
  cluster *c = &the_cluster;
  memset(c, 0, sizeof *c);
  snprintf(c->job, sizeof c->job, "ajob%d-%d", job_counter++, (int)getpid());
  c->slots = slots;
  c->n_coords = n_coords;
  for (int i = 0; i < n_coords; i++) start_coordinator(c, i, min, max);
  if (n_coords == 1)
    snprintf(c->coordinators, sizeof c->coordinators, "127.0.0.1:%d", c->coord_port[0]);
  else
    snprintf(c->coordinators, sizeof c->coordinators, "127.0.0.1:%d,127.0.0.1:%d", c->coord_port[0],
             c->coord_port[1]);
  snprintf(c->barrier, sizeof c->barrier, "%s/%s-barrier", tmpdir, c->job);
  assert_int_equal(mkdir(c->barrier, 0755), 0);
  return c;
}

/* tgctl against the job; output in out, exit code returned. */
static int tgctl(cluster *c, char *out, size_t outlen, const char *a1, const char *a2) {
  const char *argv[] = {"coordinator/tgctl", "--coordinator", c->coordinators, a1, a2, NULL};
  int status = 0;
  assert_int_equal(tg_proc_run(argv, NULL, 10000, out, outlen, &status), 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* An agent; with `supervised`, it starts the workers itself (one per slot);
 * with `fake_devices`, its GPUs and NICs are the fake ones in that dir. */
static void start_agent_full(cluster *c, int i, int supervised, const char *fake_devices) {
  char node[16], log[700], slots[8], env_bar[700], logdir[700];
  snprintf(node, sizeof node, "node%d", i);
  snprintf(c->sock[i], sizeof c->sock[i], "%s/%s-%s.sock", sockdir, c->job, node);
  snprintf(log, sizeof log, "%s/%s-%s.log", tmpdir, c->job, node);
  snprintf(slots, sizeof slots, "%d", c->slots);
  snprintf(env_bar, sizeof env_bar, "TG_BARRIER_DIR=%s", c->barrier);
  snprintf(logdir, sizeof logdir, "%s/%s-%s-trainers", tmpdir, c->job, node);
  mkdir(logdir, 0755);
  const char *argv[40] = {"/usr/bin/env", env_bar, "agent/tg-agent", "--node", node, "--job", c->job,
                          "--coordinators", c->coordinators, "--socket", c->sock[i], "--slots", slots,
                          "--hang-factor", "5", "--hang-floor-ms", "500", "--hang-ceiling-ms", "3000",
                          "--log-dir", logdir, "--log-level", "debug", NULL};
  int n = 0;
  while (argv[n]) n++;
  if (fake_devices) {
    argv[n++] = "--fake-devices";
    argv[n++] = fake_devices;
    argv[n++] = "--nics";
    argv[n++] = "eth0";
    argv[n++] = "--health-period-ms";
    argv[n++] = "100";
    argv[n] = NULL;
  }
  if (supervised) {
    argv[n++] = "--";
    argv[n++] = "agent/test_worker";
    argv[n++] = "50";
    argv[n] = NULL;
  }
  char err[256];
  c->agent[i] = tg_proc_start(argv, log, err, sizeof err);
  assert_non_null(c->agent[i]);
}

static void start_agent_opts(cluster *c, int i, int supervised) { start_agent_full(c, i, supervised, NULL); }
static void start_agent(cluster *c, int i) { start_agent_opts(c, i, 0); }

/* The pid of the newest worker that joined in `slot` of agent i (from the
 * trainers' log the agent writes), or 0. */
static int supervised_pid(cluster *c, int i, int slot) {
  char path[800];
  snprintf(path, sizeof path, "%s/%s-node%d-trainers/slot-%d.log", tmpdir, c->job, i, slot);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  char line[256];
  int pid = 0;
  while (fgets(line, sizeof line, f)) {
    int p;
    if (sscanf(line, "worker pid %d", &p) == 1) pid = p;
  }
  fclose(f);
  return pid;
}

static int wait_supervised_pid(cluster *c, int i, int slot, int not_pid) {
  int64_t deadline = mono_ms() + WAIT_MS;
  while (mono_ms() < deadline) {
    int pid = supervised_pid(c, i, slot);
    if (pid > 0 && pid != not_pid) return pid;
    usleep(20000);
  }
  fail_msg("no worker (other than pid %d) joined in slot %d of node%d", not_pid, slot, i);
  return 0;
}

/* The first fault of `kind` in the leader's log (tgctl --json), waited for. */
static cJSON *wait_fault(cluster *c, const char *kind, cJSON **all) {
  static char out[1 << 16];
  int64_t deadline = mono_ms() + WAIT_MS;
  while (mono_ms() < deadline) {
    if (tgctl(c, out, sizeof out, "--json", "faults") == 0) {
      cJSON *j = cJSON_Parse(out);
      for (int i = 0; j && i < cJSON_GetArraySize(j); i++) {
        cJSON *f = cJSON_GetArrayItem(j, i);
        if (strcmp(cJSON_GetObjectItem(f, "kind")->valuestring, kind) == 0) {
          *all = j;
          return f;
        }
      }
      cJSON_Delete(j);
    }
    usleep(100000);
  }
  fail_msg("no %s fault reached the coordinator", kind);
  return NULL;
}

/* Worker w runs in slot w % slots of agent w / slots, step_ms per step. */
static void start_worker_ms(cluster *c, int w, const char *step_ms) {
  char env_sock[700], env_slot[32], env_bar[700], log[700];
  snprintf(env_sock, sizeof env_sock, "TG_AGENT_SOCKET=%s", c->sock[w / c->slots]);
  snprintf(env_slot, sizeof env_slot, "TG_SLOT=%d", w % c->slots);
  snprintf(env_bar, sizeof env_bar, "TG_BARRIER_DIR=%s", c->barrier);
  snprintf(log, sizeof log, "%s/%s-worker%d.log", tmpdir, c->job, w);
  const char *argv[] = {"/usr/bin/env", env_sock, env_slot, env_bar, "agent/test_worker", step_ms, NULL};
  char err[256];
  c->worker[w] = tg_proc_start(argv, log, err, sizeof err);
  assert_non_null(c->worker[w]);
}

static void start_worker(cluster *c, int w) { start_worker_ms(c, w, "50"); }

/* The rank worker w holds in generation >= gen (from its log), or -1. */
static int worker_rank(cluster *c, int w, uint64_t gen) {
  FILE *f = fopen(tg_proc_log_path(c->worker[w]), "r");
  if (!f) return -1;
  char line[256];
  int rank = -1;
  while (fgets(line, sizeof line, f)) {
    int r, size;
    unsigned long long g;
    const char *p = strstr(line, ": rank ");
    if (p && sscanf(p, ": rank %d of %d in generation %llu", &r, &size, &g) == 3 && g >= gen) rank = r;
  }
  fclose(f);
  return rank;
}

static void wait_worker_ranks(cluster *c, int n, uint64_t gen) {
  int64_t deadline = mono_ms() + WAIT_MS;
  for (int w = 0; w < n; w++) {
    while (worker_rank(c, w, gen) < 0) {
      if (mono_ms() > deadline) fail_msg("worker %d never joined generation %llu", w, (unsigned long long)gen);
      usleep(20000);
    }
  }
}

/* Ranks named by HANG faults, as a bitmask; waits until at least one. */
static unsigned hang_ranks(cluster *c, int64_t wait_ms) {
  static char out[1 << 16];
  int64_t deadline = mono_ms() + wait_ms;
  unsigned ranks = 0;
  do {
    if (tgctl(c, out, sizeof out, "--json", "faults") == 0) {
      cJSON *j = cJSON_Parse(out);
      for (int i = 0; j && i < cJSON_GetArraySize(j); i++) {
        cJSON *f = cJSON_GetArrayItem(j, i);
        if (strcmp(cJSON_GetObjectItem(f, "kind")->valuestring, "HANG") != 0) continue;
        int r = (int)cJSON_GetObjectItem(f, "rank")->valuedouble;
        ranks |= r >= 0 && r < 31 ? 1u << r : 1u << 31;
      }
      cJSON_Delete(j);
    }
    if (ranks) return ranks;
    usleep(100000);
  } while (mono_ms() < deadline);
  return ranks;
}

/* Stops everything the test started; dumps the daemons' logs when the
 * test failed (teardown_cluster runs after a failed assertion). */
static void stop_cluster(int dump) {
  cluster *c = &the_cluster;
  if (c->stopped) return;
  c->stopped = 1;
  for (int w = 0; w < MAX_WORKERS; w++) {
    if (!c->worker[w]) continue;
    tg_proc_signal(c->worker[w], SIGKILL);
    tg_proc_free(c->worker[w]);
  }
  for (int i = 0; i < MAX_AGENTS; i++) {
    if (!c->agent[i]) continue;
    tg_proc_stop(c->agent[i], 3000);
    if (dump) tg_proc_dump_log(c->agent[i], 3000);
    tg_proc_free(c->agent[i]);
  }
  for (int i = 0; i < c->n_coords; i++) {
    if (!c->coord[i]) continue;
    tg_proc_stop(c->coord[i], 3000);
    if (dump) tg_proc_dump_log(c->coord[i], 3000);
    tg_proc_free(c->coord[i]);
  }
}

static int teardown_cluster(void **state) {
  stop_cluster(1);
  return 0;
}

/* ------------------------------------------------------------- tests */

static void test_sigstop_names_the_culprit(void **state) {
  cluster *c = start_cluster(1, 2, 2, 2);
  start_agent(c, 0);
  start_agent(c, 1);
  for (int w = 0; w < 4; w++) start_worker(c, w);
  wait_worker_ranks(c, 4, 1);
  usleep(1500000); /* a few dozen steps: the detector learns the step time */
  assert_int_equal(hang_ranks(c, 0), 0);
  int culprit = worker_rank(c, 1, 1);
  tg_proc_signal(c->worker[1], SIGSTOP);
  unsigned named = hang_ranks(c, WAIT_MS);
  tg_proc_signal(c->worker[1], SIGCONT);
  if (named != 1u << culprit)
    fail_msg("HANG faults named ranks 0x%x; expected only rank %d (the stopped worker)", named, culprit);
  stop_cluster(0);
}

static void test_kill9_trainer_reported_and_restarted(void **state) {
  cluster *c = start_cluster(1, 1, 1, 2);
  start_agent_opts(c, 0, 1);
  int pid = wait_supervised_pid(c, 0, 0, 0);
  wait_supervised_pid(c, 0, 1, 0);
  usleep(500000);
  assert_int_equal(kill(pid, SIGKILL), 0);
  cJSON *all = NULL;
  cJSON *f = wait_fault(c, "TRAINER_EXIT", &all);
  assert_int_equal((int)cJSON_GetObjectItem(f, "signal")->valuedouble, 9);
  assert_int_equal((int)cJSON_GetObjectItem(f, "rank")->valuedouble, 0);
  assert_non_null(strstr(cJSON_GetObjectItem(f, "detail")->valuestring, "killed by signal 9"));
  cJSON_Delete(all);
  /* Restarted by the agent, and joined again (a later generation). */
  int again = wait_supervised_pid(c, 0, 0, pid);
  assert_int_not_equal(again, pid);
  stop_cluster(0);
}

static void test_hung_trainer_named_killed_restarted(void **state) {
  cluster *c = start_cluster(1, 1, 1, 2);
  start_agent_opts(c, 0, 1);
  wait_supervised_pid(c, 0, 0, 0);
  int pid = wait_supervised_pid(c, 0, 1, 0);
  usleep(1500000); /* the detector learns the step time */
  assert_int_equal(kill(pid, SIGSTOP), 0);
  unsigned named = hang_ranks(c, WAIT_MS);
  if (named != 1u << 1) fail_msg("HANG named ranks 0x%x; expected only rank 1", named);
  /* The agent killed the hung trainer; the supervisor started a new one. */
  assert_int_not_equal(wait_supervised_pid(c, 0, 1, pid), pid);
  stop_cluster(0);
}

/* node0's state and health in tgctl nodes --json. */
static int node0_unhealthy(cluster *c) {
  static char out[1 << 14];
  if (tgctl(c, out, sizeof out, "--json", "nodes") != 0) return 0;
  cJSON *j = cJSON_Parse(out);
  int bad = 0;
  for (int i = 0; j && i < cJSON_GetArraySize(j); i++) {
    cJSON *n = cJSON_GetArrayItem(j, i);
    if (strcmp(cJSON_GetObjectItem(n, "node_id")->valuestring, "node0") == 0)
      bad = !cJSON_IsTrue(cJSON_GetObjectItem(n, "healthy")) &&
            strcmp(cJSON_GetObjectItem(n, "state")->valuestring, "UNHEALTHY") == 0;
  }
  cJSON_Delete(j);
  return bad;
}

static void wait_node0_unhealthy(cluster *c, const char *after) {
  int64_t deadline = mono_ms() + WAIT_MS;
  while (!node0_unhealthy(c) && mono_ms() < deadline) usleep(100000);
  if (!node0_unhealthy(c)) fail_msg("node0 not marked unhealthy after %s", after);
}

static void test_injected_device_faults_reported(void **state) {
  cluster *c = start_cluster(1, 1, 2, 1);
  char devices[700], sys[760], err[8] = "";
  snprintf(devices, sizeof devices, "%s/%s-devices", tmpdir, c->job);
  snprintf(sys, sizeof sys, "%s/sys", devices);
  assert_int_equal(tg_gpu_fake_create(devices, 2), 0);
  assert_int_equal(tg_nic_fake_add_link(sys, "eth0"), 0);
  (void)err;
  start_agent_full(c, 0, 0, devices);
  start_agent(c, 1);
  start_worker(c, 0);
  start_worker(c, 1);
  wait_worker_ranks(c, 2, 1);
  usleep(500000);
  assert_false(node0_unhealthy(c));
  cJSON *all = NULL, *f;

  /* An uncorrectable ECC error on GPU 1. */
  assert_int_equal(tg_gpu_fake_set_ecc(devices, 1, 3), 0);
  f = wait_fault(c, "GPU_ECC", &all);
  assert_string_equal(cJSON_GetObjectItem(f, "node_id")->valuestring, "node0");
  assert_string_equal(cJSON_GetObjectItem(f, "severity")->valuestring, "ERROR");
  cJSON_Delete(all);
  wait_node0_unhealthy(c, "an ECC error");

  /* XID 79: the GPU fell off the bus. */
  assert_int_equal(tg_gpu_fake_inject_xid(devices, 0, 79), 0);
  f = wait_fault(c, "GPU_XID", &all);
  assert_string_equal(cJSON_GetObjectItem(f, "severity")->valuestring, "FATAL");
  cJSON_Delete(all);

  /* The NIC loses its carrier. */
  assert_int_equal(tg_nic_fake_set(sys, "eth0", "carrier", "0"), 0);
  f = wait_fault(c, "NIC_DOWN", &all);
  assert_non_null(strstr(cJSON_GetObjectItem(f, "component")->valuestring, "eth0"));
  cJSON_Delete(all);
  wait_node0_unhealthy(c, "NIC down");
  stop_cluster(0);
}

/* A unary call to agent i's local service. */
static tg_rpc_code local_call(cluster *c, int i, const char *method, const ProtobufCMessage *req,
                              const ProtobufCMessageDescriptor *resp, tg_rpc_status *st) {
  char target[700], err[256];
  snprintf(target, sizeof target, "unix:%s", c->sock[i]);
  tg_rpc_channel *ch = tg_rpc_channel_new(target, NULL, err, sizeof err);
  assert_non_null(ch);
  char path[128];
  snprintf(path, sizeof path, "/tardigrade.v1.Agent/%s", method);
  ProtobufCMessage *m = NULL;
  tg_rpc_call_opts o = {.deadline_ms = 3000};
  tg_rpc_code code = tg_rpc_unary(ch, path, req, resp, &m, &o, st);
  if (m) protobuf_c_message_free_unpacked(m, NULL);
  tg_rpc_channel_free(ch);
  return code;
}

static void test_trainer_faults_and_bad_requests(void **state) {
  cluster *c = start_cluster(1, 1, 1, 2);
  start_agent(c, 0);
  start_worker(c, 0);
  start_worker(c, 1);
  wait_worker_ranks(c, 2, 1);
  tg_rpc_status st = {0};
  /* A trainer reports a collective timeout: it reaches the coordinator
   * with the slot's rank, the op and the sequence number. */
  Tardigrade__V1__Fault f = TARDIGRADE__V1__FAULT__INIT;
  f.kind = TARDIGRADE__V1__FAULT_KIND__FAULT_COLLECTIVE_TIMEOUT;
  f.severity = TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR;
  f.detail = (char *)"allreduce did not complete within 30 s";
  f.collective_op = (char *)"allreduce";
  f.collective_seq = 1234;
  Tardigrade__V1__TrainerFaultRequest tf = TARDIGRADE__V1__TRAINER_FAULT_REQUEST__INIT;
  tf.slot = 1;
  tf.fault = &f;
  assert_int_equal(local_call(c, 0, "ReportFault", &tf.base,
                              &tardigrade__v1__trainer_fault_response__descriptor, &st),
                   TG_RPC_OK);
  cJSON *all = NULL;
  cJSON *j = wait_fault(c, "COLLECTIVE_TIMEOUT", &all);
  assert_int_equal((int)cJSON_GetObjectItem(j, "rank")->valuedouble, 1);
  assert_int_equal((int)cJSON_GetObjectItem(j, "collective_seq")->valuedouble, 1234);
  cJSON_Delete(all);

  /* Bad requests are refused with a status; the agent keeps serving. */
  tf.slot = 7; /* this node has 2 slots */
  assert_int_equal(local_call(c, 0, "ReportFault", &tf.base,
                              &tardigrade__v1__trainer_fault_response__descriptor, &st),
                   TG_RPC_INVALID_ARGUMENT);
  tf.slot = 0;
  f.kind = 4242;
  assert_int_equal(local_call(c, 0, "ReportFault", &tf.base,
                              &tardigrade__v1__trainer_fault_response__descriptor, &st),
                   TG_RPC_INVALID_ARGUMENT);
  Tardigrade__V1__JoinRequest jr = TARDIGRADE__V1__JOIN_REQUEST__INIT;
  jr.slot = 99;
  jr.pid = 1;
  assert_int_equal(local_call(c, 0, "Join", &jr.base, &tardigrade__v1__join_response__descriptor, &st),
                   TG_RPC_INVALID_ARGUMENT);
  Tardigrade__V1__ProgressRequest pr = TARDIGRADE__V1__PROGRESS_REQUEST__INIT;
  pr.slot = 0; /* no progress message */
  assert_int_equal(local_call(c, 0, "ReportProgress", &pr.base,
                              &tardigrade__v1__progress_response__descriptor, &st),
                   TG_RPC_INVALID_ARGUMENT);
  assert_true(tg_proc_running(c->agent[0]));
  /* A Join for a world that has not come yet waits, and its deadline ends it. */
  jr.slot = 0;
  jr.pid = getpid();
  jr.known_generation = 1000000;
  char target[700], err[256];
  snprintf(target, sizeof target, "unix:%s", c->sock[0]);
  tg_rpc_channel *ch = tg_rpc_channel_new(target, NULL, err, sizeof err);
  ProtobufCMessage *m = NULL;
  tg_rpc_call_opts o = {.deadline_ms = 300};
  assert_int_equal(tg_rpc_unary(ch, "/tardigrade.v1.Agent/Join", &jr.base,
                                &tardigrade__v1__join_response__descriptor, &m, &o, &st),
                   TG_RPC_DEADLINE_EXCEEDED);
  tg_rpc_channel_free(ch);
  stop_cluster(0);
}

static void test_straggler_reported(void **state) {
  cluster *c = start_cluster(1, 1, 1, 3);
  start_agent(c, 0);
  start_worker(c, 0);
  start_worker_ms(c, 1, "200"); /* its own compute takes 4x its peers' */
  start_worker(c, 2);
  wait_worker_ranks(c, 3, 1);
  cJSON *all = NULL;
  cJSON *f = wait_fault(c, "STRAGGLER", &all);
  assert_int_equal((int)cJSON_GetObjectItem(f, "rank")->valuedouble, worker_rank(c, 1, 1));
  assert_string_equal(cJSON_GetObjectItem(f, "severity")->valuestring, "WARNING");
  cJSON_Delete(all);
  stop_cluster(0);
}

static void test_agent_restart_rejoins_as_same_node(void **state) {
  cluster *c = start_cluster(1, 1, 2, 1);
  start_agent(c, 0);
  start_agent(c, 1);
  start_worker(c, 0);
  start_worker(c, 1);
  wait_worker_ranks(c, 2, 1);
  /* kill -9 the agent of node1 and start it again under the same id. */
  tg_proc_signal(c->agent[1], SIGKILL);
  tg_proc_wait(c->agent[1], 5000, NULL);
  tg_proc_free(c->agent[1]);
  start_agent(c, 1);
  static char out[1 << 14];
  int64_t deadline = mono_ms() + WAIT_MS;
  int ok = 0;
  while (!ok && mono_ms() < deadline) {
    usleep(200000);
    if (tgctl(c, out, sizeof out, "--json", "nodes") != 0) continue;
    cJSON *j = cJSON_Parse(out);
    int active = 0, n = j ? cJSON_GetArraySize(j) : 0;
    for (int i = 0; i < n; i++)
      active += strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(j, i), "state")->valuestring, "ACTIVE") == 0;
    cJSON_Delete(j);
    assert_true(n <= 2); /* the same node, never a second one */
    ok = n == 2 && active == 2;
  }
  if (!ok) fail_msg("node1 did not come back as the same node: %s", out);
  stop_cluster(0);
}

static void test_agent_follows_coordinator_failover(void **state) {
  cluster *c = start_cluster(2, 2, 2, 1);
  start_agent(c, 0);
  start_agent(c, 1);
  start_worker(c, 0);
  start_worker(c, 1);
  wait_worker_ranks(c, 2, 1);
  static char out[1 << 14];
  assert_int_equal(tgctl(c, out, sizeof out, "status", NULL), 0);
  int leader = strstr(out, "leader       c0") ? 0 : 1;
  tg_proc_signal(c->coord[leader], SIGKILL);
  tg_proc_wait(c->coord[leader], 5000, NULL);
  /* The standby leads; both agents found it: two live nodes. */
  int64_t deadline = mono_ms() + WAIT_MS;
  int ok = 0;
  while (!ok && mono_ms() < deadline) {
    usleep(200000);
    if (tgctl(c, out, sizeof out, "--json", "nodes") != 0) continue;
    cJSON *j = cJSON_Parse(out);
    int active = 0;
    for (int i = 0; j && i < cJSON_GetArraySize(j); i++) {
      cJSON *n = cJSON_GetArrayItem(j, i);
      active += strcmp(cJSON_GetObjectItem(n, "state")->valuestring, "ACTIVE") == 0;
    }
    cJSON_Delete(j);
    ok = active == 2;
  }
  /* Stay a while: heartbeats keep reaching the new leader (no node is lost). */
  usleep(1500000);
  assert_int_equal(tgctl(c, out, sizeof out, "status", NULL), 0);
  if (!ok || !strstr(out, "2 active")) fail_msg("agents did not follow the new leader: %s", out);
  stop_cluster(0);
}

static int setup(void **state) {
  char err[256];
  tg_log_init("agent_test", TG_LOG_WARN);
  if (tg_proc_temp_dir("agent", tmpdir, sizeof tmpdir) != 0) return -1;
  snprintf(sockdir, sizeof sockdir, "/tmp/tg-agent-test-XXXXXX");
  if (!mkdtemp(sockdir)) return -1;
  etcd = tg_etcd_cluster_start(1, err, sizeof err);
  if (!etcd) {
    fprintf(stderr, "etcd: %s\n", err);
    return -1;
  }
  return 0;
}

static int teardown(void **state) {
  tg_etcd_cluster_free(etcd);
  const char *argv[] = {"/bin/rm", "-rf", sockdir, NULL};
  int status;
  tg_proc_run(argv, NULL, 5000, NULL, 0, &status);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_sigstop_names_the_culprit, teardown_cluster),
      cmocka_unit_test_teardown(test_kill9_trainer_reported_and_restarted, teardown_cluster),
      cmocka_unit_test_teardown(test_hung_trainer_named_killed_restarted, teardown_cluster),
      cmocka_unit_test_teardown(test_injected_device_faults_reported, teardown_cluster),
      cmocka_unit_test_teardown(test_trainer_faults_and_bad_requests, teardown_cluster),
      cmocka_unit_test_teardown(test_straggler_reported, teardown_cluster),
      cmocka_unit_test_teardown(test_agent_restart_rejoins_as_same_node, teardown_cluster),
      cmocka_unit_test_teardown(test_agent_follows_coordinator_failover, teardown_cluster),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
