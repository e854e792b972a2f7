/* tg-train end to end: a real etcd, tg-coordinator and tg-agent, which
 * starts two tg-train processes (2 ranks, gloo on CPU). A run in which one
 * trainer is killed with SIGKILL mid-training must end with parameters
 * bitwise equal to a fault-free run of the same length: the killed trainer
 * is restarted, both ranks resume from the node's in-memory snapshots, and
 * at most one step is redone. */
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

#include "common/log/log.h"
#include "tests/harness/etcd_cluster.h"
#include "tests/harness/proc.h"

#define STEPS "300"
#define WAIT_MS 90000

static tg_etcd_cluster *etcd;
static char dir[512], sockdir[64];
static tg_proc *procs[4];

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int grep_file(const char *path, const char *needle) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  char line[512];
  int found = 0;
  while (!found && fgets(line, sizeof line, f)) found = strstr(line, needle) != NULL;
  fclose(f);
  return found;
}

static void stop_all(int dump) {
  for (int i = 3; i >= 0; i--) {
    if (!procs[i]) continue;
    tg_proc_stop(procs[i], 5000);
    if (dump) tg_proc_dump_log(procs[i], 3000);
    tg_proc_free(procs[i]);
    procs[i] = NULL;
  }
}

/* Trains `job` to the end; with kill_at_step, SIGKILLs rank 1's trainer
 * once rank 0 logged that step. Returns the path of the final parameters. */
static void train(const char *job, int kill_at_step, char *params, size_t len) {
  char listen[64], logs[700], sock[128], log[700], err[256];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", tg_proc_free_port());
  snprintf(logs, sizeof logs, "%s/%s-trainers", dir, job);
  mkdir(logs, 0755);
  snprintf(sock, sizeof sock, "%s/%s.sock", sockdir, job);
  snprintf(params, len, "%s/%s.params", dir, job);
  const char *co[] = {"coordinator/tg-coordinator", "--job", job, "--listen", listen, "--etcd",
                      tg_etcd_cluster_endpoints(etcd), "--min-nodes", "1", "--max-nodes", "1", "--slots", "2",
                      "--heartbeat-interval-ms", "100", "--heartbeat-timeout-ms", "1000",
                      "--quarantine-faults", "0", NULL};
  snprintf(log, sizeof log, "%s/%s-coordinator.log", dir, job);
  procs[0] = tg_proc_start(co, log, err, sizeof err);
  const char *ag[] = {"agent/tg-agent", "--node", "n0", "--job", job, "--coordinators", listen, "--socket", sock,
                      "--slots", "2", "--log-dir", logs, "--ckpt-mib", "16", "--hang-floor-ms", "5000", "--",
                      "trainer/tg-train", "--steps", STEPS, "--out", params, NULL};
  snprintf(log, sizeof log, "%s/%s-agent.log", dir, job);
  procs[1] = tg_proc_start(ag, log, err, sizeof err);
  assert_non_null(procs[0]);
  assert_non_null(procs[1]);
  char slot0[800], slot1[800], at[32];
  snprintf(slot0, sizeof slot0, "%s/slot-0.log", logs);
  snprintf(slot1, sizeof slot1, "%s/slot-1.log", logs);
  int64_t deadline = mono_ms() + WAIT_MS;
  if (kill_at_step) {
    snprintf(at, sizeof at, "step %d loss", kill_at_step);
    while (!grep_file(slot0, at) && mono_ms() < deadline) usleep(10000);
    int victim = tg_proc_child_with_env(tg_proc_pid(procs[1]), "TG_SLOT=1");
    if (!victim) fail_msg("no trainer in slot 1 to kill");
    assert_int_equal(kill(victim, SIGKILL), 0);
  }
  while (!(grep_file(slot0, "done after " STEPS) && grep_file(slot1, "done after " STEPS)) &&
         mono_ms() < deadline)
    usleep(50000);
  if (!grep_file(slot0, "done after " STEPS)) {
    stop_all(1);
    tg_proc_dump_file(slot0, 2000);
    tg_proc_dump_file(slot1, 2000);
    fail_msg("training %s did not finish", job);
  }
  if (kill_at_step) {
    /* Both ranks resumed from memory, at most one step before the kill. */
    assert_true(grep_file(slot1, "(generation 2): resuming at step"));
    assert_true(grep_file(slot0, "(generation 2): resuming at step"));
    /* The coordinator's world carried a resume step from the agent's
     * committed-step reports: not 0, and not after where the ranks resumed. */
    char out[4096];
    const char *st[] = {"coordinator/tgctl", "--coordinator", listen, "--json", "status", NULL};
    int status;
    assert_int_equal(tg_proc_run(st, NULL, 10000, out, sizeof out, &status), 0);
    const char *rs = strstr(out, "\"resume_step\":");
    assert_non_null(rs);
    long coordinator_resume = strtol(rs + 14, NULL, 10);
    long resumed = -1;
    FILE *f = fopen(slot0, "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
      const char *p = strstr(line, "(generation 2): resuming at step ");
      if (p) resumed = strtol(p + 33, NULL, 10);
    }
    if (f) fclose(f);
    if (coordinator_resume <= 0 || coordinator_resume > resumed)
      fail_msg("coordinator resume_step %ld, ranks resumed at %ld", coordinator_resume, resumed);
  }
  stop_all(0);
}

static int same_bytes(const char *a, const char *b) {
  FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
  int same = fa && fb;
  while (same) {
    int ca = fgetc(fa), cb = fgetc(fb);
    if (ca != cb) same = 0;
    if (ca == EOF || cb == EOF) break;
  }
  if (fa) fclose(fa);
  if (fb) fclose(fb);
  return same;
}

static void test_kill9_trainer_resumes_bitwise(void **state) {
  char clean[600], faulty[600];
  train("clean", 0, clean, sizeof clean);
  train("faulty", 120, faulty, sizeof faulty);
  if (!same_bytes(clean, faulty)) fail_msg("final parameters differ: %s vs %s", clean, faulty);
}

static int teardown(void **state) {
  stop_all(1);
  tg_etcd_cluster_free(etcd);
  const char *rm[] = {"/bin/rm", "-rf", sockdir, NULL};
  int status;
  tg_proc_run(rm, NULL, 5000, NULL, 0, &status);
  return 0;
}

static int setup(void **state) {
  char err[256];
  tg_log_init("train_test", TG_LOG_WARN);
  if (tg_proc_temp_dir("train", dir, sizeof dir) != 0) return -1;
  snprintf(sockdir, sizeof sockdir, "/tmp/tg-train-test-XXXXXX");
  if (!mkdtemp(sockdir)) return -1;
  etcd = tg_etcd_cluster_start(1, err, sizeof err);
  return etcd ? 0 : -1;
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_kill9_trainer_resumes_bitwise)};
  return cmocka_run_group_tests(tests, setup, teardown);
}
