/* tg-chaos end to end: the real binary runs small scenarios on real
 * processes (etcd, tg-coordinator, tg-agents, tg-train), and its exit
 * status and JSON report are checked. A trainer killed must be detected
 * with the culprit named and recovered with at most one step lost; faults
 * in the fake devices must take their nodes out of the world; and one
 * scenario must fail on purpose (every memory copy of a shard lost: the
 * job resumes from disk and the "no committed step lost" invariant reports
 * the loss), which shows the checks can fail. With `--scenario PATH
 * --expect-exit N` it runs one shipped scenario instead (BUILD.bazel's
 * scenario_<name>_test targets); `--netns` after them marks a scenario
 * whose nodes run in network namespaces: skipped where those cannot be
 * made (not root), unless TG_REQUIRE_NETNS=1; `--root` one that mounts a
 * filesystem (disk_full): skipped when not root, on the same terms. Logs of each run are kept in
 * $TEST_UNDECLARED_OUTPUTS_DIR when Bazel provides it. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "chaos/procs.h"
#include "chaos/test_report.h"
#include "tests/harness/netns.h"
#include "tests/harness/proc.h"

#define RUN_TIMEOUT_MS 300000
#define SHIPPED_TIMEOUT_MS 840000 /* a shipped scenario; Bazel's large timeout is 900 s */
#define OUTPUT_BYTES (256 << 10)

static char tmp[512];
static char output[OUTPUT_BYTES];

static int64_t run_timeout_ms = RUN_TIMEOUT_MS;

/* Runs tg-chaos with args; returns its exit status (-1 if it did not end). */
static int tg_chaos(const char *const *args) {
  const char *argv[16] = {"chaos/tg-chaos"};
  int n = 1;
  for (int i = 0; args[i] && n < 15; i++) argv[n++] = args[i];
  argv[n] = NULL;
  int status;
  if (tg_proc_run(argv, NULL, run_timeout_ms, output, sizeof output, &status) != 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Runs a scenario file and returns its parsed report. */
static cJSON *run_scenario_file(const char *scenario, const char *name, int want_exit) {
  char report[700], logs[700];
  snprintf(report, sizeof report, "%s/%s-report.json", tmp, name);
  const char *outputs = getenv("TEST_UNDECLARED_OUTPUTS_DIR");
  snprintf(logs, sizeof logs, "%s/%s-logs", outputs && *outputs ? outputs : tmp, name);
  const char *args[] = {"run", scenario, "--out", report, "--keep-logs", logs, NULL};
  int rc = tg_chaos(args);
  if (rc != want_exit) {
    fprintf(stderr, "%s\n", output);
    fail_msg("tg-chaos run %s exited %d, expected %d", name, rc, want_exit);
  }
  return tg_chaos_test_read_report(report);
}

/* Runs a scenario of testdata/ and returns its parsed report. */
static cJSON *run_scenario(const char *name, int want_exit) {
  char scenario[256];
  snprintf(scenario, sizeof scenario, "chaos/testdata/%s.json", name);
  return run_scenario_file(scenario, name, want_exit);
}

static const cJSON *get(const cJSON *o, const char *key) { return tg_chaos_test_get(o, key); }

static const cJSON *invariant(const cJSON *report, const char *name) {
  const cJSON *inv;
  cJSON_ArrayForEach(inv, get(report, "invariants")) {
    if (strcmp(get(inv, "name")->valuestring, name) == 0) return inv;
  }
  fail_msg("no invariant %s in the report", name);
  return NULL;
}

/* A trainer SIGKILLed on 2 agents x 2 slots: detected by the coordinator
 * with the culprit named, recovered from memory, at most one step lost,
 * and every invariant holds. */
/* Every invariant of the report passed and the exit code says so. */
static void expect_all_invariants(const cJSON *r) {
  const cJSON *inv;
  cJSON_ArrayForEach(inv, get(r, "invariants")) {
    if (!cJSON_IsTrue(get(inv, "pass")))
      fail_msg("%s failed: %s", get(inv, "name")->valuestring, get(inv, "detail")->valuestring);
  }
  assert_int_equal((int)get(r, "exit_code")->valuedouble, 0);
}

/* A run directory as a tg-chaos SIGKILLed long ago leaves it (owner: a
 * pid with a start time no live process has) or as a live one has it
 * (owner: this test), each with a job whose shared memory segment exists.
 * Returns the directory in dir. */
static void plant_run_dir(const char *job, int live, char *dir, size_t len) {
  struct stat ns;
  if (stat("/proc/self/ns/pid", &ns) != 0) fail_msg("no /proc/self/ns/pid");
  unsigned long long start = 1; /* no process started at tick 1 is still here */
  if (live) {
    tg_chaos_proc self;
    if (tg_chaos_proc_read(getpid(), &self) != 0) fail_msg("cannot read this process in /proc");
    start = self.start_ticks;
    tg_chaos_proc_clear(&self);
  }
  snprintf(dir, len, "/tmp/tg-chaos-XXXXXX");
  if (!mkdtemp(dir)) fail_msg("mkdtemp");
  char path[600], shm[128];
  snprintf(path, sizeof path, "%s/owner", dir);
  FILE *f = fopen(path, "w");
  if (!f) fail_msg("cannot write %s", path);
  fprintf(f, "%d %llu %llu\njob %s\n", (int)getpid(), start, (unsigned long long)ns.st_ino, job);
  fclose(f);
  snprintf(shm, sizeof shm, "/tg-ckpt-%s-n0", job);
  int fd = shm_open(shm, O_CREAT | O_RDWR, 0600);
  if (fd < 0) fail_msg("shm_open %s", shm);
  close(fd);
}

static int shm_exists(const char *job) {
  char path[160];
  snprintf(path, sizeof path, "/dev/shm/tg-ckpt-%s-n0", job);
  return access(path, F_OK) == 0;
}

/* Also: what a SIGKILLed tg-chaos left is removed by the next run, and
 * what a live one has is not. */
static void test_trainer_crash(void **state) {
  (void)state;
  char dead_job[64], live_job[64], dead_dir[64], live_dir[64];
  snprintf(dead_job, sizeof dead_job, "chaos-dead-%d", (int)getpid());
  snprintf(live_job, sizeof live_job, "chaos-live-%d", (int)getpid());
  plant_run_dir(dead_job, 0, dead_dir, sizeof dead_dir);
  plant_run_dir(live_job, 1, live_dir, sizeof live_dir);
  cJSON *r = run_scenario("trainer_crash_small", 0);
  int dead_dir_left = access(dead_dir, F_OK) == 0, dead_shm_left = shm_exists(dead_job);
  int live_dir_left = access(live_dir, F_OK) == 0, live_shm_left = shm_exists(live_job);
  char rm[128];
  snprintf(rm, sizeof rm, "/tg-ckpt-%s-n0", live_job);
  shm_unlink(rm);
  snprintf(rm, sizeof rm, "/tg-ckpt-%s-n0", dead_job);
  shm_unlink(rm);
  const char *rm_dirs[] = {"rm", "-rf", dead_dir, live_dir, NULL};
  int status;
  tg_proc_run(rm_dirs, NULL, 10000, output, 256, &status);
  assert_false(dead_dir_left);
  assert_false(dead_shm_left);
  assert_true(live_dir_left);
  assert_true(live_shm_left);
  const cJSON *faults = get(r, "faults");
  assert_int_equal(cJSON_GetArraySize(faults), 1);
  const cJSON *f = cJSON_GetArrayItem(faults, 0);
  assert_string_equal(get(f, "kind")->valuestring, "trainer_crash");
  assert_string_equal(get(f, "outcome")->valuestring, "recovered");
  const cJSON *det = get(f, "detected"), *rec = get(f, "recovered");
  if (!cJSON_IsObject(det) || !cJSON_IsObject(rec)) fail_msg("no detection or recovery recorded");
  double injected = get(f, "injected_unix_ms")->valuedouble;
  assert_true(get(det, "unix_ms")->valuedouble >= injected - 50);
  assert_true(get(rec, "unix_ms")->valuedouble >= get(det, "unix_ms")->valuedouble);
  assert_string_equal(get(det, "source")->valuestring, "fault_log");
  assert_string_equal(get(det, "kind")->valuestring, "TRAINER_EXIT");
  assert_string_equal(get(det, "node")->valuestring, "n1");
  assert_true(cJSON_IsTrue(get(det, "culprit_ok")));
  assert_true(get(f, "steps_lost")->valuedouble <= 1);
  assert_true(get(f, "generation_after")->valuedouble > get(f, "generation_before")->valuedouble);
  assert_int_equal((int)get(f, "world_size_after")->valuedouble, 4);
  expect_all_invariants(r);
  cJSON_Delete(r);
}

/* The nodes at ring positions 1 and 2 lost at once on 4 agents x 2: the
 * job resumes from disk, and the report says the committed steps lost. */
static void test_lose_all_copies_fails_the_invariant(void **state) {
  (void)state;
  cJSON *r = run_scenario("lose_all_copies_small", 1);
  const cJSON *f = cJSON_GetArrayItem(get(r, "faults"), 0);
  assert_non_null(f);
  assert_string_equal(get(f, "outcome")->valuestring, "recovered");
  assert_true(cJSON_IsTrue(get(f, "resumed_from_disk")));
  assert_true(get(f, "committed_steps_lost")->valuedouble > 0);
  const cJSON *inv = invariant(r, "no_committed_step_lost");
  assert_false(cJSON_IsTrue(get(inv, "pass")));
  if (!strstr(get(inv, "detail")->valuestring, "resumed from disk"))
    fail_msg("detail: %s", get(inv, "detail")->valuestring);
  assert_true(cJSON_IsTrue(get(invariant(r, "final_parameters_match_reference"), "pass")));
  assert_true(cJSON_IsTrue(get(invariant(r, "one_world_per_generation"), "pass")));
  cJSON_Delete(r);
}

/* Faults written into the agents' fake devices: each is reported by the
 * node's health checks, naming the node, and the world re-forms without
 * it (first onto the spare, then smaller). */
static void test_device_faults(void **state) {
  (void)state;
  cJSON *r = run_scenario("device_faults_small", 0);
  const cJSON *faults = get(r, "faults");
  assert_int_equal(cJSON_GetArraySize(faults), 2);
  const char *kinds[] = {"GPU_XID", "NIC_DOWN"}, *nodes[] = {"n1", "n2"};
  const int worlds[] = {6, 4};
  for (int i = 0; i < 2; i++) {
    const cJSON *f = cJSON_GetArrayItem(faults, i), *det = get(f, "detected");
    assert_string_equal(get(f, "outcome")->valuestring, "recovered");
    if (!cJSON_IsObject(det)) fail_msg("fault %d: no detection recorded", i);
    assert_string_equal(get(det, "kind")->valuestring, kinds[i]);
    assert_string_equal(get(det, "node")->valuestring, nodes[i]);
    assert_true(cJSON_IsTrue(get(det, "culprit_ok")));
    assert_int_equal((int)get(f, "world_size_after")->valuedouble, worlds[i]);
  }
  expect_all_invariants(r);
  cJSON_Delete(r);
}

static void test_help_and_bad_input(void **state) {
  (void)state;
  const char *help[] = {"--help", NULL};
  assert_int_equal(tg_chaos(help), 0);
  assert_non_null(strstr(output, "usage: tg-chaos run SCENARIO.json"));
  const char *none[] = {NULL};
  assert_int_equal(tg_chaos(none), 2);
  char path[700];
  snprintf(path, sizeof path, "%s/bad.json", tmp);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs("{\"name\": \"bad\", \"cluster\": {\"agents\": 2}, \"training\": {\"steps\": 50},"
        " \"faults\": [{\"at_step\": 5, \"kind\": \"network_partition\"}]}", f);
  fclose(f);
  const char *bad[] = {"run", path, NULL};
  assert_int_equal(tg_chaos(bad), 2);
  assert_non_null(strstr(output, "faults[0]: network_partition needs cluster.network \"namespaces\""));
  const char *check[] = {"check", "chaos/testdata/trainer_crash_small.json", NULL};
  assert_int_equal(tg_chaos(check), 0);
}

/* A shipped scenario (chaos/scenarios/), as `--scenario PATH
 * --expect-exit N`: tg-chaos exits N, and every fault it lists was
 * injected and recovered. */
static const char *shipped_path;
static int shipped_exit;

static void test_shipped_scenario(void **state) {
  (void)state;
  const char *slash = strrchr(shipped_path, '/');
  cJSON *r = run_scenario_file(shipped_path, slash ? slash + 1 : shipped_path, shipped_exit);
  const cJSON *f;
  cJSON_ArrayForEach(f, get(r, "faults")) {
    const char *outcome = get(f, "outcome")->valuestring;
    if (strcmp(outcome, "recovered") != 0)
      fail_msg("fault %d (%s): %s: %s", (int)get(f, "index")->valuedouble, get(f, "kind")->valuestring, outcome,
               cJSON_IsString(get(f, "note")) ? get(f, "note")->valuestring : "");
  }
  cJSON_Delete(r);
}

/* Removes the temporary directory; returns rc. */
static int run_and_clean(int rc) {
  const char *rm[] = {"rm", "-rf", tmp, NULL};
  int status;
  tg_proc_run(rm, NULL, 10000, NULL, 0, &status);
  return rc;
}

int main(int argc, char **argv) {
  if (tg_proc_temp_dir("chaos", tmp, sizeof tmp) != 0) return 1;
  int netns = argc == 6 && strcmp(argv[5], "--netns") == 0, root = argc == 6 && strcmp(argv[5], "--root") == 0;
  if ((argc == 5 || netns || root) && strcmp(argv[1], "--scenario") == 0 && strcmp(argv[3], "--expect-exit") == 0) {
#if defined(__SANITIZE_ADDRESS__)
    /* Whole scenarios take two to three times longer under the
     * sanitizers; chaos_test covers tg-chaos there. */
    printf("%s: skipped in the sanitizer build (run in the plain one)\n", argv[2]);
    return 0;
#endif
    /* What this machine lacks for the scenario: skipped, or a failure
     * where TG_REQUIRE_NETNS=1 says root tests must run. */
    char why[512] = "";
    int lacking = netns ? !tg_netns_available(why, sizeof why) : 0;
    if (root && geteuid() != 0) {
      lacking = 1;
      snprintf(why, sizeof why, "it mounts a filesystem, which needs root");
    }
    if (lacking) {
      if (tg_netns_required()) {
        fprintf(stderr, "%s: required here (TG_REQUIRE_NETNS=1), but: %s\n", argv[2], why);
        return run_and_clean(1);
      }
      printf("%s: skipped: %s\n", argv[2], why);
      return run_and_clean(0);
    }
    shipped_path = argv[2];
    run_timeout_ms = SHIPPED_TIMEOUT_MS;
    shipped_exit = atoi(argv[4]);
    const struct CMUnitTest one[] = {cmocka_unit_test(test_shipped_scenario)};
    return run_and_clean(cmocka_run_group_tests(one, NULL, NULL));
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_help_and_bad_input),
      cmocka_unit_test(test_trainer_crash),
      cmocka_unit_test(test_lose_all_copies_fails_the_invariant),
      cmocka_unit_test(test_device_faults),
  };
  return run_and_clean(cmocka_run_group_tests(tests, NULL, NULL));
}
