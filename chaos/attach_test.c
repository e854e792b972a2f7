/* tg-chaos attached to a job it did not start. The test starts the job
 * itself, the way an operator would (a real etcd, two tg-coordinators
 * "alpha" and "beta", three tg-agents "host-a".."host-c" with two
 * tg-train slots each, every process with its own flags and directories,
 * nothing named as tg-chaos names things), then runs the real
 * `tg-chaos run testdata/attach_small.json --attach ...` against it: a
 * trainer crash, the loss and return of host-b, the leading coordinator
 * killed, a hot GPU and a NaN loss. tg-chaos must find the processes,
 * inject every fault, see each detected and recovered, judge the two
 * invariants it can (and mark the final-parameters one not checked),
 * exit 0, and leave the job running: host-b's agent and the killed
 * coordinator started again by tg-chaos, training still going. Every
 * process of the job, including those tg-chaos restarted (not children
 * of this test), is killed at the end, also when the test fails. */
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
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "agent/health/gpu_fake.h"
#include "chaos/procs.h"
#include "chaos/test_report.h"
#include "agent/health/nic_fake.h"
#include "common/clock/clock.h"
#include "tests/harness/etcd_cluster.h"
#include "tests/harness/proc.h"

#define AGENTS 3
#define SLOTS 2
#define RUN_TIMEOUT_MS 300000
#define FIRST_STEP_TIMEOUT_MS 120000
#define OUTPUT_BYTES (256 << 10)

static const char *const coordinator_ids[2] = {"alpha", "beta"};
static const char *const node_ids[AGENTS] = {"host-a", "host-b", "host-c"};

typedef struct {
  char dir[256], job[64], coordinators[128];
  int ports[2];
  tg_etcd_cluster *etcd;
  tg_proc *coord[2];
  tg_proc *agent[AGENTS];
} job;

static char output[OUTPUT_BYTES];

/* Pids of the job's live processes (`--job ID`) running `program`; how many. */
static int job_processes(const job *j, const char *program, pid_t *out, int max) {
  static pid_t pids[65536];
  size_t n = tg_chaos_proc_list(pids, sizeof pids / sizeof pids[0]);
  int found = 0;
  for (size_t i = 0; i < n && found < max; i++) {
    tg_chaos_proc p;
    if (tg_chaos_proc_read(pids[i], &p) != 0) continue; /* gone, or a zombie */
    char id[64];
    if (strcmp(tg_chaos_proc_program(&p), program) == 0 && tg_chaos_proc_option(&p, "job", 0, id, sizeof id) &&
        strcmp(id, j->job) == 0)
      out[found++] = p.pid;
    tg_chaos_proc_clear(&p);
  }
  return found;
}

static void kill_job(job *j) {
  for (int round = 0; round < 3; round++) {
    pid_t pids[64];
    /* Trainers go with their agent (parent-death signal). */
    const char *programs[] = {"tg-agent", "tg-coordinator"};
    for (int p = 0; p < 2; p++) {
      int n = job_processes(j, programs[p], pids, 64);
      for (int i = 0; i < n; i++) kill(pids[i], SIGKILL);
    }
    tg_clock_sleep_ms(50);
  }
  for (int i = 0; i < AGENTS; i++) tg_proc_free(j->agent[i]);
  for (int i = 0; i < 2; i++) tg_proc_free(j->coord[i]);
  for (int i = 0; i < AGENTS; i++) {
    char name[160];
    snprintf(name, sizeof name, "/dev/shm/tg-ckpt-%s-%s", j->job, node_ids[i]);
    unlink(name);
    snprintf(name, sizeof name, "/dev/shm/tg-progress-%s-%s", j->job, node_ids[i]);
    unlink(name);
  }
}

static void start_coordinator(job *j, int i) {
  char listen[64], log[400], err[256];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", j->ports[i]);
  snprintf(log, sizeof log, "%s/%s.log", j->dir, coordinator_ids[i]);
  const char *argv[] = {"coordinator/tg-coordinator", "--id", coordinator_ids[i], "--job", j->job, "--listen", listen,
                        "--http", "127.0.0.1:0", "--etcd", tg_etcd_cluster_endpoints(j->etcd), "--min-nodes", "2",
                        "--max-nodes", "3", "--slots", "2", "--last-call-ms", "300", "--heartbeat-interval-ms", "100",
                        "--heartbeat-timeout-ms", "1000", "--leader-ttl-s", "1", "--quarantine-faults", "0", NULL};
  j->coord[i] = tg_proc_start(argv, log, err, sizeof err);
  if (!j->coord[i]) fail_msg("coordinator %s: %s", coordinator_ids[i], err);
}

static void start_agent(job *j, int i) {
  char sock[400], logs[400], log[400], dev[400], sys[420], ckpt[400], inject[400], out[400], err[256];
  const char *id = node_ids[i];
  snprintf(sock, sizeof sock, "%s/%s.sock", j->dir, id);
  snprintf(logs, sizeof logs, "%s/trainers-%s", j->dir, id);
  snprintf(log, sizeof log, "%s/%s-agent.log", j->dir, id);
  snprintf(dev, sizeof dev, "%s/devices-%s", j->dir, id);
  snprintf(sys, sizeof sys, "%s/sys", dev);
  snprintf(ckpt, sizeof ckpt, "%s/ckpt", j->dir);
  snprintf(inject, sizeof inject, "%s/requests", j->dir);
  snprintf(out, sizeof out, "%s/params", j->dir);
  mkdir(logs, 0755);
  mkdir(ckpt, 0755);
  mkdir(inject, 0755);
  if (tg_gpu_fake_create(dev, SLOTS) != 0 || tg_nic_fake_add_link(sys, "eth0") != 0) fail_msg("fake devices %s", dev);
  const char *argv[] = {"agent/tg-agent", "--node", id, "--job", j->job, "--coordinators", j->coordinators,
                        "--socket", sock, "--slots", "2", "--log-dir", logs, "--fake-devices", dev, "--ckpt-dir", ckpt,
                        "--persist-every", "20", "--ckpt-mib", "32", "--hang-floor-ms", "2000", "--restart-max", "64",
                        "--", "trainer/tg-train", "--steps", "1000000", "--inject-dir", inject, "--out", out, NULL};
  j->agent[i] = tg_proc_start(argv, log, err, sizeof err);
  if (!j->agent[i]) fail_msg("agent %s: %s", id, err);
}

static int tgctl(job *j, const char *what, char *out, size_t len) {
  const char *argv[] = {"coordinator/tgctl", "--coordinator", j->coordinators, "--json", what, NULL};
  int status;
  if (tg_proc_run(argv, NULL, 10000, out, len, &status) != 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The committed step (0 until one), or -1 when no leader answers. */
static int64_t committed_step(job *j) {
  char out[16384];
  if (tgctl(j, "status", out, sizeof out) != 0) return -1;
  cJSON *s = cJSON_Parse(out);
  const cJSON *c = s ? cJSON_GetObjectItemCaseSensitive(s, "committed_step") : NULL;
  int64_t v = cJSON_IsNumber(c) ? (int64_t)c->valuedouble : cJSON_IsString(c) ? atoll(c->valuestring) : 0;
  cJSON_Delete(s);
  return s ? v : -1;
}

static int64_t wait_committed_above(job *j, int64_t step, int64_t timeout_ms) {
  int64_t deadline = tg_clock_mono_ms() + timeout_ms, now = -1;
  while (tg_clock_mono_ms() < deadline) {
    now = committed_step(j);
    if (now > step) return now;
    tg_clock_sleep_ms(200);
  }
  return now;
}

static int setup(void **state) {
  job *j = calloc(1, sizeof *j);
  if (!j) return -1;
  *state = j;
  snprintf(j->job, sizeof j->job, "attach-%d", (int)getpid());
  /* Short: the agents' unix sockets live in it (Bazel's TEST_TMPDIR is too long). */
  snprintf(j->dir, sizeof j->dir, "/tmp/tg-attach-XXXXXX");
  if (!mkdtemp(j->dir)) return -1;
  char err[256];
  j->etcd = tg_etcd_cluster_start(1, err, sizeof err);
  if (!j->etcd) {
    fprintf(stderr, "etcd: %s\n", err);
    return -1;
  }
  for (int i = 0; i < 2; i++) j->ports[i] = tg_proc_free_port();
  snprintf(j->coordinators, sizeof j->coordinators, "127.0.0.1:%d,127.0.0.1:%d", j->ports[0], j->ports[1]);
  return 0;
}

static int teardown(void **state) {
  job *j = *state;
  kill_job(j);
  tg_etcd_cluster_free(j->etcd);
  const char *outputs = getenv("TEST_UNDECLARED_OUTPUTS_DIR");
  if (outputs && *outputs) { /* the logs, without the sockets (Bazel zips the outputs) */
    const char *rm_sockets[] = {"find", j->dir, "-type", "s", "-delete", NULL};
    const char *cp[] = {"cp", "-r", j->dir, outputs, NULL};
    int status;
    tg_proc_run(rm_sockets, NULL, 30000, output, sizeof output, &status);
    tg_proc_run(cp, NULL, 30000, output, sizeof output, &status);
  }
  const char *rm[] = {"rm", "-rf", j->dir, NULL};
  int status;
  tg_proc_run(rm, NULL, 30000, output, sizeof output, &status);
  free(j);
  return 0;
}

static const cJSON *get(const cJSON *o, const char *key) { return tg_chaos_test_get(o, key); }

static void test_attach(void **state) {
  job *j = *state;
  start_coordinator(j, 0);
  tg_clock_sleep_ms(500); /* alpha first, so it leads */
  start_coordinator(j, 1);
  for (int i = 0; i < AGENTS; i++) start_agent(j, i);
  int64_t committed = wait_committed_above(j, 0, FIRST_STEP_TIMEOUT_MS);
  if (committed <= 0) fail_msg("the job committed no step within %d s", FIRST_STEP_TIMEOUT_MS / 1000);

  char report[400];
  snprintf(report, sizeof report, "%s/report.json", j->dir);
  const char *argv[] = {"chaos/tg-chaos", "run", "chaos/testdata/attach_small.json", "--attach", j->coordinators,
                        "--out", report, NULL};
  int status;
  if (tg_proc_run(argv, NULL, RUN_TIMEOUT_MS, output, sizeof output, &status) != 0) fail_msg("tg-chaos did not end");
  int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  fprintf(stderr, "%s\n", output);
  if (rc != 0) fail_msg("tg-chaos --attach exited %d, expected 0", rc);
  cJSON *r = tg_chaos_test_read_report(report);

  /* What it found. */
  const cJSON *attach = get(r, "attach");
  assert_string_equal(get(attach, "coordinators")->valuestring, j->coordinators);
  const cJSON *nodes = get(attach, "nodes"), *ids = get(attach, "coordinator_ids");
  assert_int_equal(cJSON_GetArraySize(nodes), AGENTS);
  for (int i = 0; i < AGENTS; i++) assert_string_equal(cJSON_GetArrayItem(nodes, i)->valuestring, node_ids[i]);
  assert_int_equal(cJSON_GetArraySize(ids), 2);
  assert_string_equal(get(r, "job")->valuestring, j->job);
  assert_int_equal((int)get(get(r, "cluster"), "slots")->valuedouble, SLOTS);
  assert_int_equal((int)get(get(r, "cluster"), "min_nodes")->valuedouble, 2);

  /* Every fault injected, detected and recovered. */
  static const char *const kinds[] = {"trainer_crash", "host_loss", "host_return", "coordinator_crash",
                                      "gpu_thermal", "nan_loss"};
  const cJSON *faults = get(r, "faults");
  assert_int_equal(cJSON_GetArraySize(faults), 6);
  for (int i = 0; i < 6; i++) {
    const cJSON *fault = cJSON_GetArrayItem(faults, i);
    const cJSON *note = get(fault, "note");
    assert_string_equal(get(fault, "kind")->valuestring, kinds[i]);
    if (strcmp(get(fault, "outcome")->valuestring, "recovered") != 0)
      fail_msg("fault #%d %s: %s (%s)", i, kinds[i], get(fault, "outcome")->valuestring,
               cJSON_IsString(note) ? note->valuestring : "");
    const cJSON *det = get(fault, "detected");
    if (strcmp(kinds[i], "host_return") != 0 && !cJSON_IsObject(det))
      fail_msg("fault #%d %s: not detected", i, kinds[i]);
    if (cJSON_IsObject(det) && !cJSON_IsTrue(get(det, "culprit_ok")))
      fail_msg("fault #%d %s: the record did not name the target", i, kinds[i]);
  }
  assert_string_equal(get(get(cJSON_GetArrayItem(faults, 1), "target"), "node")->valuestring, "host-b");
  assert_int_equal((int)get(cJSON_GetArrayItem(faults, 1), "world_size_after")->valuedouble, 4);
  assert_int_equal((int)get(cJSON_GetArrayItem(faults, 2), "world_size_after")->valuedouble, 6);

  /* Two invariants judged and holding, the third marked not checked. */
  const cJSON *inv;
  int judged = 0, skipped = 0;
  cJSON_ArrayForEach(inv, get(r, "invariants")) {
    const char *name = get(inv, "name")->valuestring;
    if (strcmp(name, "final_parameters_match_reference") == 0) {
      assert_true(cJSON_IsNull(get(inv, "pass")));
      assert_true(cJSON_IsFalse(get(inv, "checked")));
      skipped++;
    } else {
      if (!cJSON_IsTrue(get(inv, "pass"))) fail_msg("%s failed: %s", name, get(inv, "detail")->valuestring);
      judged++;
    }
  }
  assert_int_equal(judged, 2);
  assert_int_equal(skipped, 1);
  assert_int_equal((int)get(get(r, "totals"), "invariants_not_checked")->valuedouble, 1);
  cJSON_Delete(r);

  /* The job goes on: every agent and both coordinators run (host-b's
   * agent and the killed leader started again by tg-chaos, so not the
   * processes this test started), and steps are still committed. */
  pid_t pids[16];
  assert_int_equal(job_processes(j, "tg-agent", pids, 16), AGENTS);
  assert_int_equal(job_processes(j, "tg-coordinator", pids, 16), 2);
  assert_false(tg_proc_running(j->agent[1]));
  int restarted_coordinators = !tg_proc_running(j->coord[0]) + !tg_proc_running(j->coord[1]);
  assert_int_equal(restarted_coordinators, 1);
  committed = committed_step(j);
  int64_t later = wait_committed_above(j, committed, 60000);
  if (later <= committed) fail_msg("no step committed after tg-chaos left (committed step %lld)", (long long)committed);
}

/* Nothing answers at the address: one line, exit 2, nothing started. */
static void test_attach_nothing_there(void **state) {
  (void)state;
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", tg_proc_free_port());
  const char *argv[] = {"chaos/tg-chaos", "run", "chaos/testdata/attach_small.json", "--attach", addr, NULL};
  int status;
  if (tg_proc_run(argv, NULL, RUN_TIMEOUT_MS, output, sizeof output, &status) != 0) fail_msg("tg-chaos did not end");
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 2);
  if (!strstr(output, "no coordinator answered")) fail_msg("unexpected output: %s", output);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_attach, setup, teardown),
      cmocka_unit_test(test_attach_nothing_there),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
