/* bench/recovery: what a trainer crash costs with tg-agent. One real etcd,
 * one tg-coordinator and one tg-agent supervising 2 trainers: tg-train
 * (--trainer tg-train: the real model, snapshots in the node's memory,
 * restore on resume) or the stand-in (--trainer worker: 50 ms steps and a
 * barrier, no state). Each round kills slot 0's trainer with SIGKILL and
 * measures:
 *   reported   kill -> the TRAINER_EXIT fault recorded by the coordinator
 *   restarted  kill -> the new trainer process joined a newer world
 *   resumed    kill -> both slots joined that world (with tg-train: and
 *              restored their state from memory; training goes on)
 *
 * Usage: bazel run -c opt //bench/recovery:trainer_crash -- --rounds 10 --trainer tg-train */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/config/config.h"
#include "common/log/log.h"
#include "tests/harness/etcd_cluster.h"
#include "tests/harness/proc.h"

static int64_t rounds = 10;
static char trainer[32] = "tg-train";
static char dir[512], sockdir[64], coordinator[64];

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t unix_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void die(const char *what) {
  fprintf(stderr, "trainer_crash_bench: %s\n", what);
  exit(1);
}

/* The generation of the newest join line in a slot's log (0: none yet):
 * tg-train writes "rank R of N (generation G): ...", the stand-in
 * "... in generation G"; the restore happens before tg-train's line. */
static uint64_t last_join(int slot) {
  char path[700], line[256];
  snprintf(path, sizeof path, "%s/trainers/slot-%d.log", dir, slot);
  uint64_t gen = 0;
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  while (fgets(line, sizeof line, f)) {
    const char *p = strstr(line, "generation ");
    if (p && strncmp(line, "rank ", 5) == 0) gen = strtoull(p + 11, NULL, 10);
    else if (p && strncmp(line, "worker ", 7) == 0) gen = strtoull(p + 11, NULL, 10);
  }
  fclose(f);
  return gen;
}

/* detected_unix_ms of the newest TRAINER_EXIT fault, 0 if none. */
static int64_t newest_exit_fault(void) {
  static char out[1 << 16];
  const char *argv[] = {"coordinator/tgctl", "--coordinator", coordinator, "--json", "faults", NULL};
  int status;
  if (tg_proc_run(argv, NULL, 5000, out, sizeof out, &status) != 0) return 0;
  cJSON *j = cJSON_Parse(out);
  int64_t t = 0;
  for (int i = 0; j && i < cJSON_GetArraySize(j) && !t; i++) {
    cJSON *f = cJSON_GetArrayItem(j, i);
    if (strcmp(cJSON_GetObjectItem(f, "kind")->valuestring, "TRAINER_EXIT") == 0)
      t = (int64_t)cJSON_GetObjectItem(f, "detected_unix_ms")->valuedouble;
  }
  cJSON_Delete(j);
  return t;
}

static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static void print_row(const char *name, int64_t *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp64);
  printf("%-10s median %5" PRId64 " ms   min %5" PRId64 " ms   max %5" PRId64 " ms\n", name, v[n / 2], v[0],
         v[n - 1]);
}

int main(int argc, char **argv) {
  const tg_option opts[] = {
      {"rounds", TG_OPT_INT, &rounds, 0, 1, 1000, "trainer crashes to measure"},
      {"trainer", TG_OPT_STRING, trainer, sizeof trainer, 0, 0, "tg-train (the real one) or worker (stand-in)"},
  };
  char err[512];
  switch (tg_config_parse(opts, 2, argc, argv,
                          "usage: trainer_crash_bench [--rounds N]\n\nMeasures recovery from trainer crashes.",
                          NULL, err, sizeof err)) {
  case TG_CONFIG_HELP: return 0;
  case TG_CONFIG_ERROR: fprintf(stderr, "%s\n", err); return 2;
  case TG_CONFIG_OK: break;
  }
  tg_log_init("trainer_crash_bench", TG_LOG_WARN);
  tg_etcd_cluster *etcd = tg_etcd_cluster_start(1, err, sizeof err);
  if (!etcd) die(err);
  if (tg_proc_temp_dir("trainer-crash", dir, sizeof dir) != 0) die("no temp dir");
  snprintf(sockdir, sizeof sockdir, "/tmp/tg-bench-XXXXXX");
  if (!mkdtemp(sockdir)) die("no socket dir");
  char path[700], barrier[700], sock[128], logdir[700], listen[64];
  snprintf(barrier, sizeof barrier, "TG_BARRIER_DIR=%s/barrier", dir);
  snprintf(path, sizeof path, "%s/barrier", dir);
  mkdir(path, 0755);
  snprintf(logdir, sizeof logdir, "%s/trainers", dir);
  mkdir(logdir, 0755);
  snprintf(sock, sizeof sock, "%s/agent.sock", sockdir);
  snprintf(listen, sizeof listen, "127.0.0.1:%d", tg_proc_free_port());
  snprintf(coordinator, sizeof coordinator, "%s", listen);
  const char *co[] = {"coordinator/tg-coordinator", "--job", "bench", "--listen", listen, "--http", "off",
                      "--etcd", tg_etcd_cluster_endpoints(etcd), "--min-nodes", "1", "--max-nodes", "1", "--slots", "2",
                      "--heartbeat-interval-ms", "100", "--heartbeat-timeout-ms", "1000",
                      "--quarantine-faults", "0", "--log-level", "warn", NULL};
  snprintf(path, sizeof path, "%s/coordinator.log", dir);
  tg_proc *coord = tg_proc_start(co, path, err, sizeof err);
  int real = strcmp(trainer, "tg-train") == 0;
  if (!real && strcmp(trainer, "worker") != 0) die("--trainer is tg-train or worker");
  const char *ag[] = {"/usr/bin/env", barrier, "agent/tg-agent", "--node", "n0", "--job", "bench",
                      "--coordinators", coordinator, "--socket", sock, "--slots", "2", "--log-dir", logdir,
                      "--restart-max", "64", "--ckpt-mib", "32", "--hang-floor-ms", "5000", "--log-level",
                      "warn", "--", real ? "trainer/tg-train" : "agent/test_worker", real ? "--steps" : "50",
                      real ? "100000000" : NULL, NULL};
  snprintf(path, sizeof path, "%s/agent.log", dir);
  tg_proc *agent = tg_proc_start(ag, path, err, sizeof err);
  if (!coord || !agent) die(err);

  struct utsname u;
  uname(&u);
  printf("# bench/recovery trainer crash: 1 node x 2 slots, trainer %s, %" PRId64 " rounds\n",
         real ? "tg-train (D=32, N=2: 34k parameters, snapshot every step)" : "stand-in (50 ms steps)",
         rounds);
  printf("# machine: %s %s, %ld cores\n# command:", u.nodename, u.release, sysconf(_SC_NPROCESSORS_ONLN));
  for (int i = 0; i < argc; i++) printf(" %s", argv[i]);
  printf("\n");

  int64_t *reported = calloc((size_t)rounds, 8), *restarted = calloc((size_t)rounds, 8),
          *resumed = calloc((size_t)rounds, 8);
  for (int64_t r = 0; r < rounds; r++) {
    uint64_t g0, g1;
    int pid0 = 0;
    int64_t deadline = mono_ms() + 30000;
    do { /* both trainers in the same, newest world */
      usleep(20000);
      g0 = last_join(0);
      g1 = last_join(1);
      pid0 = tg_proc_child_with_env(tg_proc_pid(agent), "TG_SLOT=0");
    } while ((pid0 == 0 || g0 == 0 || g0 != g1) && mono_ms() < deadline);
    if (pid0 == 0 || g0 != g1) die("the trainers never joined one world");
    usleep(500000); /* steady for a moment */
    int64_t before_fault = newest_exit_fault();
    int64_t t0 = mono_ms(), t0_unix = unix_ms();
    kill(pid0, SIGKILL);
    int64_t t_restart = 0, t_resume = 0;
    while ((!t_restart || !t_resume) && mono_ms() - t0 < 30000) {
      uint64_t h0 = last_join(0), h1 = last_join(1);
      if (!t_restart && h0 > g0) t_restart = mono_ms();
      if (t_restart && !t_resume && h1 >= h0) t_resume = mono_ms();
      usleep(1000);
    }
    if (!t_restart || !t_resume) die("no recovery within 30 s");
    int64_t fault = 0;
    for (int i = 0; i < 100 && (fault = newest_exit_fault()) == before_fault; i++) usleep(20000);
    reported[r] = fault - t0_unix;
    restarted[r] = t_restart - t0;
    resumed[r] = t_resume - t0;
    printf("round %2" PRId64 ": reported %4" PRId64 " ms, restarted %4" PRId64 " ms, resumed %4" PRId64 " ms\n",
           r + 1, reported[r], restarted[r], resumed[r]);
  }
  print_row("reported", reported, (int)rounds);
  print_row("restarted", restarted, (int)rounds);
  print_row("resumed", resumed, (int)rounds);
  tg_proc_stop(agent, 5000);
  tg_proc_free(agent);
  tg_proc_stop(coord, 3000);
  tg_proc_free(coord);
  tg_etcd_cluster_free(etcd);
  const char *rm[] = {"/bin/rm", "-rf", sockdir, NULL};
  int status;
  tg_proc_run(rm, NULL, 5000, NULL, 0, &status);
  return 0;
}
