/* Integration tests of tg-agent's checkpoint path: a real etcd, a real
 * tg-coordinator, real tg-agent processes, and stand-in trainers
 * (testdata/worker.c) that write a snapshot into their node's store every
 * step before they report it. Checked from the outside, the way an
 * operator or a trainer sees it: a shard written on one node shows up in
 * its buddy's store (read directly, and through ListShards on the buddy's
 * peer port), the local service reports the replicated step (Replicated,
 * and in every ReportProgress answer), the coordinator learns a committed
 * step, shards are persisted under --ckpt-dir and read back, and a disk
 * that cannot be written is reported as a DISK fault while training goes
 * on. Each test runs its own job; every wait has a deadline; processes and
 * shared memory are cleaned up even when a test fails. */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "agent/ckpt/disk.h"
#include "agent/ckpt/replicate.h"
#include "agent/ckpt/store.h"
#include "common/clock/clock.h"
#include "common/log/log.h"
#include "common/rpc/rpc.h"
#include "proto/tardigrade/v1/agent.pb-c.h"
#include "tests/harness/etcd_cluster.h"
#include "tests/harness/proc.h"

#define WAIT_MS 20000
#define NODES_MAX 2

static tg_etcd_cluster *etcd;
static char tmpdir[512];
static char sockdir[64]; /* unix socket paths must stay under 108 bytes */
static int jobs_started;

/* One test's job: a coordinator, its agents (one slot each) and workers. */
typedef struct {
  char job[48];
  char coordinator[64];
  tg_proc *coord;
  int nodes;
  char sock[NODES_MAX][160];
  char peer[NODES_MAX][64]; /* each agent's peer service (replication) */
  char store[NODES_MAX][128];
  tg_proc *agent[NODES_MAX];
  tg_proc *worker[NODES_MAX];
  char barrier[700];
  int done;
} job;

static job the_job; /* static: the teardown needs it after a failed assertion */

static void start_coordinator(job *j) {
  char listen[64], nodes[8], log[700];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", tg_proc_free_port());
  snprintf(j->coordinator, sizeof j->coordinator, "%s", listen);
  snprintf(nodes, sizeof nodes, "%d", j->nodes);
  snprintf(log, sizeof log, "%s/%s-coordinator.log", tmpdir, j->job);
  const char *argv[] = {"coordinator/tg-coordinator", "--job", j->job, "--id", "c0", "--listen", listen,
                        "--http", "off", "--etcd", tg_etcd_cluster_endpoints(etcd), "--min-nodes", nodes, "--max-nodes",
                        nodes, "--slots", "1", "--heartbeat-interval-ms", "100", "--heartbeat-timeout-ms",
                        "2000", "--leader-ttl-s", "1", "--quarantine-faults", "0", NULL};
  char err[256];
  j->coord = tg_proc_start(argv, log, err, sizeof err);
  if (!j->coord) fail_msg("coordinator: %s", err);
}

/* Agent i, with extra flags (NULL-terminated, may be NULL). */
static void start_agent(job *j, int i, const char *const *extra) {
  char node[16], log[700];
  snprintf(node, sizeof node, "node%d", i);
  snprintf(j->sock[i], sizeof j->sock[i], "%s/%s-%s.sock", sockdir, j->job, node);
  snprintf(j->peer[i], sizeof j->peer[i], "127.0.0.1:%d", tg_proc_free_port());
  snprintf(j->store[i], sizeof j->store[i], "/tg-ckpt-%s-%s", j->job, node);
  snprintf(log, sizeof log, "%s/%s-%s.log", tmpdir, j->job, node);
  const char *argv[32] = {"agent/tg-agent", "--node", node, "--job", j->job, "--coordinators",
                          j->coordinator, "--socket", j->sock[i], "--listen", j->peer[i], "--slots", "1",
                          "--ckpt-mib", "16", "--hang-floor-ms", "30000", "--probe-period-ms", "0",
                          "--log-level", "debug", NULL};
  int n = 0;
  while (argv[n]) n++;
  for (int k = 0; extra && extra[k] && n < 31; k++) argv[n++] = extra[k];
  argv[n] = NULL;
  char err[256];
  j->agent[i] = tg_proc_start(argv, log, err, sizeof err);
  if (!j->agent[i]) fail_msg("agent %d: %s", i, err);
}

static void start_worker(job *j, int i) {
  char env_sock[200], env_bar[800], log[700];
  snprintf(env_sock, sizeof env_sock, "TG_AGENT_SOCKET=%s", j->sock[i]);
  snprintf(env_bar, sizeof env_bar, "TG_BARRIER_DIR=%s", j->barrier);
  snprintf(log, sizeof log, "%s/%s-worker%d.log", tmpdir, j->job, i);
  const char *argv[] = {"/usr/bin/env", env_sock, "TG_SLOT=0", env_bar, "agent/test_worker", "50", "4096", NULL};
  char err[256];
  j->worker[i] = tg_proc_start(argv, log, err, sizeof err);
  if (!j->worker[i]) fail_msg("worker %d: %s", i, err);
}

/* A job of `nodes` agents, each with a worker in its one slot. */
static job *start_job(int nodes, const char *const *agent_flags) {
  job *j = &the_job;
  memset(j, 0, sizeof *j);
  /* Unique across concurrent runs: sandboxes have pid namespaces of their
   * own (every run may be pid 12), and /dev/shm, where stores are named
   * after the job, is shared. */
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  snprintf(j->job, sizeof j->job, "rjob%d-%d-%lx", jobs_started++, (int)getpid(),
           (unsigned long)ts.tv_sec * 1000000000UL + (unsigned long)ts.tv_nsec);
  j->nodes = nodes;
  snprintf(j->barrier, sizeof j->barrier, "%s/%s-barrier", tmpdir, j->job);
  assert_int_equal(mkdir(j->barrier, 0755), 0);
  start_coordinator(j);
  for (int i = 0; i < nodes; i++) start_agent(j, i, agent_flags);
  for (int i = 0; i < nodes; i++) start_worker(j, i);
  return j;
}

static void stop_job(int dump) {
  job *j = &the_job;
  if (j->done) return;
  j->done = 1;
  for (int i = 0; i < j->nodes; i++) {
    if (j->worker[i]) {
      if (dump) tg_proc_dump_log(j->worker[i], 2000);
      tg_proc_free(j->worker[i]);
    }
  }
  for (int i = 0; i < j->nodes; i++) {
    if (!j->agent[i]) continue;
    tg_proc_stop(j->agent[i], 5000);
    if (dump) tg_proc_dump_log(j->agent[i], 6000);
    tg_proc_free(j->agent[i]);
    tg_ckpt_store_unlink(j->store[i]); /* gone already unless the agent was killed */
  }
  if (j->coord) {
    tg_proc_stop(j->coord, 3000);
    if (dump) tg_proc_dump_log(j->coord, 3000);
    tg_proc_free(j->coord);
  }
}

static int teardown_job(void **state) {
  stop_job(1);
  return 0;
}

/* ------------------------------------------------------------ looking in */

/* From worker i's log: its pid, rank and generation once joined, and the
 * newest replicated step the agent reported to it (0 if none yet). */
typedef struct {
  int pid, rank;
  uint64_t generation, replicated;
} worker_view;

static worker_view read_worker(job *j, int i) {
  worker_view v = {0, -1, 0, 0};
  FILE *f = fopen(tg_proc_log_path(j->worker[i]), "r");
  if (!f) return v;
  char line[256];
  while (fgets(line, sizeof line, f)) {
    int pid, rank, size;
    unsigned long long g, step;
    if (sscanf(line, "worker pid %d slot 0: rank %d of %d in generation %llu", &pid, &rank, &size, &g) == 4) {
      v.pid = pid;
      v.rank = rank;
      v.generation = g;
      v.replicated = 0;
    } else if (sscanf(line, "worker slot 0: replicated step %llu in generation %llu", &step, &g) == 2 &&
               g == v.generation) {
      v.replicated = step;
    }
  }
  fclose(f);
  return v;
}

static worker_view wait_joined(job *j, int i) {
  int64_t deadline = tg_clock_mono_ms() + WAIT_MS;
  for (;;) {
    worker_view v = read_worker(j, i);
    if (v.rank >= 0) return v;
    if (tg_clock_mono_ms() > deadline) fail_msg("worker %d never joined a world", i);
    tg_clock_sleep_ms(20);
  }
}

/* A unary call to agent i's local service; the response in *resp (to free). */
static tg_rpc_code local_call(job *j, int i, const char *method, const ProtobufCMessage *req,
                              const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp,
                              tg_rpc_status *st) {
  char target[200], err[256], path[128];
  snprintf(target, sizeof target, "unix:%s", j->sock[i]);
  snprintf(path, sizeof path, "/tardigrade.v1.Agent/%s", method);
  tg_rpc_channel *ch = tg_rpc_channel_new(target, NULL, err, sizeof err);
  assert_non_null(ch);
  tg_rpc_call_opts o = {.deadline_ms = 3000};
  tg_rpc_code code = tg_rpc_unary(ch, path, req, desc, resp, &o, st);
  tg_rpc_channel_free(ch);
  return code;
}

static tg_rpc_code ask_replicated(job *j, int i, uint32_t slot, uint64_t generation,
                                  Tardigrade__V1__ReplicatedResponse *out) {
  Tardigrade__V1__ReplicatedRequest req = TARDIGRADE__V1__REPLICATED_REQUEST__INIT;
  req.slot = slot;
  req.generation = generation;
  ProtobufCMessage *m = NULL;
  tg_rpc_status st = {0};
  tg_rpc_code code =
      local_call(j, i, "Replicated", &req.base, &tardigrade__v1__replicated_response__descriptor, &m, &st);
  if (m) {
    *out = *(Tardigrade__V1__ReplicatedResponse *)m;
    protobuf_c_message_free_unpacked(m, NULL);
  }
  return code;
}

/* The coordinator's committed step (tgctl status --json). */
static uint64_t coordinator_committed(job *j) {
  static char out[1 << 14];
  const char *argv[] = {"coordinator/tgctl", "--coordinator", j->coordinator, "--json", "status", NULL};
  int status = 0;
  if (tg_proc_run(argv, NULL, 10000, out, sizeof out, &status) != 0 || !WIFEXITED(status) ||
      WEXITSTATUS(status) != 0)
    return 0;
  cJSON *js = cJSON_Parse(out);
  cJSON *c = js ? cJSON_GetObjectItem(js, "committed_step") : NULL;
  uint64_t step = c && cJSON_IsNumber(c) ? (uint64_t)c->valuedouble : 0;
  cJSON_Delete(js);
  return step;
}

static void wait_committed(job *j) {
  int64_t deadline = tg_clock_mono_ms() + WAIT_MS;
  while (coordinator_committed(j) == 0) {
    if (tg_clock_mono_ms() > deadline) fail_msg("the coordinator never saw a committed step");
    tg_clock_sleep_ms(100);
  }
}

/* The newest step of `shard` (generation gen) in the store named `name`, 0 if none. */
static uint64_t newest_in_store(const char *name, const char *jobid, int shard, uint64_t gen) {
  char err[256];
  tg_ckpt_store *s = tg_ckpt_store_open(name, err, sizeof err);
  if (!s) return 0;
  tg_ckpt_key keys[64];
  size_t n = tg_ckpt_store_list(s, jobid, keys, 64);
  uint64_t newest = 0;
  for (size_t i = 0; i < n && i < 64; i++)
    if (keys[i].shard == shard && keys[i].generation == gen && keys[i].step > newest) newest = keys[i].step;
  tg_ckpt_store_close(s);
  return newest;
}

/* Reads `key` from the store named `name`. */
static int read_from(const char *name, const tg_ckpt_key *key, void **bytes, size_t *len) {
  char err[256];
  tg_ckpt_store *s = tg_ckpt_store_open(name, err, sizeof err);
  if (!s) return TG_CKPT_SYSTEM;
  int rc = tg_ckpt_store_read_alloc(s, key, bytes, len, NULL);
  tg_ckpt_store_close(s);
  return rc;
}

/* A snapshot as libtardigrade lays it out: one buffer of 4096 bytes. */
static void assert_snapshot_layout(const void *bytes, size_t len) {
  uint64_t dir[2];
  assert_true(len >= sizeof dir);
  memcpy(dir, bytes, sizeof dir);
  assert_int_equal(dir[0], 1);
  assert_int_equal(dir[1], 4096);
  assert_int_equal(len, sizeof dir + 4096);
}

/* Joins slot 0 of agent i on behalf of its worker (same pid): the answer
 * tells where things are. */
static Tardigrade__V1__JoinResponse *join_as(job *j, int i, int pid) {
  Tardigrade__V1__JoinRequest req = TARDIGRADE__V1__JOIN_REQUEST__INIT;
  req.slot = 0;
  req.pid = pid;
  ProtobufCMessage *m = NULL;
  tg_rpc_status st = {0};
  if (local_call(j, i, "Join", &req.base, &tardigrade__v1__join_response__descriptor, &m, &st) != TG_RPC_OK)
    fail_msg("join: %s", st.message);
  return (Tardigrade__V1__JoinResponse *)m;
}

/* ---------------------------------------------------------------- tests */

static void test_shard_replicated_to_buddy_and_committed(void **state) {
  job *j = start_job(2, NULL);
  worker_view w0 = wait_joined(j, 0);
  wait_joined(j, 1);
  uint64_t gen = w0.generation;

  /* node0's shard shows up in node1's store, byte for byte node0's copy. */
  int64_t deadline = tg_clock_mono_ms() + WAIT_MS;
  int compared = 0;
  while (!compared) {
    if (tg_clock_mono_ms() > deadline) fail_msg("no shard of node0 reached node1's store");
    uint64_t step = newest_in_store(j->store[1], j->job, w0.rank, gen);
    tg_clock_sleep_ms(20);
    if (step == 0) continue;
    tg_ckpt_key key = {.generation = gen, .step = step, .shard = w0.rank, .world_size = 2};
    snprintf(key.job_id, sizeof key.job_id, "%s", j->job);
    void *mine = NULL, *replica = NULL;
    size_t mine_len = 0, replica_len = 0;
    int rc_replica = read_from(j->store[1], &key, &replica, &replica_len);
    int rc_mine = read_from(j->store[0], &key, &mine, &mine_len);
    if (rc_replica == TG_CKPT_OK && rc_mine == TG_CKPT_OK) {
      assert_snapshot_layout(replica, replica_len);
      assert_int_equal(mine_len, replica_len);
      assert_memory_equal(mine, replica, mine_len);
      compared = 1;
    }
    free(mine);
    free(replica);
  }

  /* ListShards on node1's peer port says the same. */
  char err[256];
  tg_rpc_channel *ch = tg_rpc_channel_new(j->peer[1], NULL, err, sizeof err);
  assert_non_null(ch);
  tg_ckpt_key keys[64];
  size_t n = 0;
  tg_rpc_status st = {0};
  tg_ckpt_repl_config rc = {.deadline_ms = 3000};
  assert_int_equal(tg_ckpt_list_remote(ch, j->job, keys, 64, &n, &rc, &st), TG_RPC_OK);
  int listed = 0;
  for (size_t i = 0; i < n && i < 64; i++) listed |= keys[i].shard == w0.rank && keys[i].generation == gen;
  assert_true(listed);
  tg_rpc_channel_free(ch);

  /* The local service reports the replicated step; node1 holds it. */
  Tardigrade__V1__ReplicatedResponse rr;
  assert_int_equal(ask_replicated(j, 0, 0, gen, &rr), TG_RPC_OK);
  assert_int_equal(rr.generation, gen);
  assert_true(rr.replicated_step > 0);
  assert_true(newest_in_store(j->store[1], j->job, w0.rank, gen) >= rr.replicated_step);
  assert_int_equal(ask_replicated(j, 0, 0, gen + 100, &rr), TG_RPC_OK);
  assert_int_equal(rr.replicated_step, 0);
  assert_int_equal(ask_replicated(j, 0, 5, gen, &rr), TG_RPC_INVALID_ARGUMENT);

  /* ... and so does every ReportProgress answer the worker gets. */
  deadline = tg_clock_mono_ms() + WAIT_MS;
  while (read_worker(j, 0).replicated == 0) {
    if (tg_clock_mono_ms() > deadline) fail_msg("the worker never learned a replicated step");
    tg_clock_sleep_ms(20);
  }
  /* Progress of another generation: told the current one, nothing replicated. */
  Tardigrade__V1__RankProgress p = TARDIGRADE__V1__RANK_PROGRESS__INIT;
  p.step = 1;
  Tardigrade__V1__ProgressRequest pr = TARDIGRADE__V1__PROGRESS_REQUEST__INIT;
  pr.slot = 0;
  pr.generation = gen + 100;
  pr.progress = &p;
  ProtobufCMessage *m = NULL;
  assert_int_equal(
      local_call(j, 0, "ReportProgress", &pr.base, &tardigrade__v1__progress_response__descriptor, &m, &st),
      TG_RPC_OK);
  assert_int_equal(((Tardigrade__V1__ProgressResponse *)m)->generation, gen);
  assert_int_equal(((Tardigrade__V1__ProgressResponse *)m)->replicated_step, 0);
  protobuf_c_message_free_unpacked(m, NULL);

  /* Join tells a trainer where things are. */
  Tardigrade__V1__JoinResponse *jr = join_as(j, 0, w0.pid);
  assert_string_equal(jr->agent_address, j->peer[0]);
  assert_string_equal(jr->node_id, "node0");
  assert_string_equal(jr->shm_name, j->store[0]);
  assert_string_equal(jr->ckpt_dir, "");
  protobuf_c_message_free_unpacked(&jr->base, NULL);

  /* Both nodes replicate: the coordinator has a committed step. */
  wait_committed(j);
  stop_job(0);
}

static void test_single_node_persists_to_disk(void **state) {
  char dir[700];
  snprintf(dir, sizeof dir, "%s/persist-%d", tmpdir, jobs_started);
  const char *flags[] = {"--ckpt-dir", dir, "--persist-every", "5", NULL};
  job *j = start_job(1, flags);
  worker_view w = wait_joined(j, 0);
  /* One node: no buddy, a written step is committed at once. */
  wait_committed(j);
  Tardigrade__V1__JoinResponse *jr = join_as(j, 0, w.pid);
  assert_string_equal(jr->ckpt_dir, dir);
  protobuf_c_message_free_unpacked(&jr->base, NULL);

  /* Persisted files appear, every 5th step, and read back intact. */
  tg_ckpt_key keys[8];
  size_t n = 0;
  int64_t deadline = tg_clock_mono_ms() + WAIT_MS;
  uint64_t newest = 0;
  while (newest < 15) {
    if (tg_clock_mono_ms() > deadline) fail_msg("persisted only up to step %" PRIu64, newest);
    tg_clock_sleep_ms(50);
    n = tg_ckpt_disk_list(dir, j->job, keys, 8);
    for (size_t i = 0; i < n && i < 8; i++) {
      assert_int_equal(keys[i].step % 5, 0);
      if (keys[i].step > newest) newest = keys[i].step;
    }
  }
  tg_ckpt_key key = {.step = newest, .shard = w.rank, .world_size = 1};
  snprintf(key.job_id, sizeof key.job_id, "%s", j->job);
  void *bytes = NULL;
  size_t len = 0;
  assert_int_equal(tg_ckpt_disk_read_alloc(dir, &key, &bytes, &len, NULL), TG_CKPT_OK);
  assert_snapshot_layout(bytes, len);
  free(bytes);
  /* Older persisted steps are retired: at most the newest two remain. */
  deadline = tg_clock_mono_ms() + WAIT_MS;
  while ((n = tg_ckpt_disk_list(dir, j->job, keys, 8)) > 2) {
    if (tg_clock_mono_ms() > deadline) fail_msg("%zu persisted steps kept, not 2", n);
    tg_clock_sleep_ms(20);
  }
  stop_job(0);
}

/* The first fault of `kind` the coordinator holds, as JSON (to delete), or NULL. */
static cJSON *find_fault(job *j, const char *kind, cJSON **all) {
  static char out[1 << 16];
  const char *argv[] = {"coordinator/tgctl", "--coordinator", j->coordinator, "--json", "faults", NULL};
  int status = 0;
  if (tg_proc_run(argv, NULL, 10000, out, sizeof out, &status) != 0 || !WIFEXITED(status) ||
      WEXITSTATUS(status) != 0)
    return NULL;
  cJSON *js = cJSON_Parse(out);
  for (int i = 0; js && i < cJSON_GetArraySize(js); i++) {
    cJSON *f = cJSON_GetArrayItem(js, i);
    cJSON *k = cJSON_GetObjectItem(f, "kind");
    if (k && cJSON_IsString(k) && strcmp(k->valuestring, kind) == 0) {
      *all = js;
      return f;
    }
  }
  cJSON_Delete(js);
  return NULL;
}

static void test_unwritable_disk_reported_training_goes_on(void **state) {
  char file[700], dir[760];
  snprintf(file, sizeof file, "%s/not-a-dir-%d", tmpdir, jobs_started);
  FILE *f = fopen(file, "w");
  assert_non_null(f);
  fclose(f);
  snprintf(dir, sizeof dir, "%s/ckpt", file);
  const char *flags[] = {"--ckpt-dir", dir, "--persist-every", "2", NULL};
  job *j = start_job(1, flags);
  wait_joined(j, 0);
  cJSON *all = NULL, *fault = NULL;
  int64_t deadline = tg_clock_mono_ms() + WAIT_MS;
  while (!(fault = find_fault(j, "DISK", &all))) {
    if (tg_clock_mono_ms() > deadline) fail_msg("no DISK fault reached the coordinator");
    tg_clock_sleep_ms(100);
  }
  assert_string_equal(cJSON_GetObjectItem(fault, "severity")->valuestring, "WARNING");
  assert_string_equal(cJSON_GetObjectItem(fault, "node_id")->valuestring, "node0");
  const char *detail = cJSON_GetObjectItem(fault, "detail")->valuestring;
  if (!strstr(detail, strerror(ENOTDIR))) fail_msg("unclear detail: %s", detail);
  cJSON_Delete(all);
  /* Training was not disturbed: steps keep being replicated and committed. */
  uint64_t before = read_worker(j, 0).replicated;
  deadline = tg_clock_mono_ms() + WAIT_MS;
  while (read_worker(j, 0).replicated <= before + 5) {
    if (tg_clock_mono_ms() > deadline) fail_msg("training stopped after the disk fault");
    tg_clock_sleep_ms(50);
  }
  assert_true(tg_proc_running(j->agent[0]));
  wait_committed(j);
  stop_job(0);
}

static int setup(void **state) {
  char err[256];
  tg_log_init("agent_test", TG_LOG_WARN);
  if (tg_proc_temp_dir("agent", tmpdir, sizeof tmpdir) != 0) return -1;
  snprintf(sockdir, sizeof sockdir, "/tmp/tg-ckpt-test-XXXXXX");
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
      cmocka_unit_test_teardown(test_shard_replicated_to_buddy_and_committed, teardown_job),
      cmocka_unit_test_teardown(test_single_node_persists_to_disk, teardown_job),
      cmocka_unit_test_teardown(test_unwritable_disk_reported_training_goes_on, teardown_job),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
