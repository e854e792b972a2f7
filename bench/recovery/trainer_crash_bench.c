/* bench/recovery: what a trainer crash costs with tg-agent. One real etcd,
 * one tg-coordinator and one tg-agent supervising 2 stand-in trainers
 * (agent/testdata/worker.c: 50 ms steps, a barrier per step like a
 * collective). Each round kills slot 0's trainer with SIGKILL and measures:
 *   reported   kill -> the TRAINER_EXIT fault recorded by the coordinator
 *   restarted  kill -> the new trainer process joined a newer world
 *   resumed    kill -> both slots joined that world (training can go on)
 * The trainer library's restore from memory (issue 5) is not in these
 * figures yet: the stand-in has no state to restore.
 *
 * Usage: bazel run -c opt //bench/recovery:trainer_crash -- --rounds 10 */
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
#include <unistd.h>

#include "common/config/config.h"
#include "common/log/log.h"
#include "tests/harness/etcd_cluster.h"
#include "tests/harness/proc.h"

static int64_t rounds = 10;
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

/* The newest "worker pid P slot S: rank R of N in generation G" line of a
 * slot's log: pid and generation (0 when none yet). */
static void last_join(int slot, int *pid, uint64_t *gen) {
  char path[700], line[256];
  snprintf(path, sizeof path, "%s/trainers/slot-%d.log", dir, slot);
  *pid = 0;
  *gen = 0;
  FILE *f = fopen(path, "r");
  if (!f) return;
  while (fgets(line, sizeof line, f)) {
    int p, r, n;
    unsigned s;
    unsigned long long g;
    if (sscanf(line, "worker pid %d slot %u: rank %d of %d in generation %llu", &p, &s, &r, &n, &g) == 5) {
      *pid = p;
      *gen = g;
    }
  }
  fclose(f);
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
  const tg_option opts[] = {{"rounds", TG_OPT_INT, &rounds, 0, 1, 1000, "trainer crashes to measure"}};
  char err[512];
  switch (tg_config_parse(opts, 1, argc, argv,
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
  const char *co[] = {"coordinator/tg-coordinator", "--job", "bench", "--listen", listen, "--etcd",
                      tg_etcd_cluster_endpoints(etcd), "--min-nodes", "1", "--max-nodes", "1", "--slots", "2",
                      "--heartbeat-interval-ms", "100", "--heartbeat-timeout-ms", "1000",
                      "--quarantine-faults", "0", "--log-level", "warn", NULL};
  snprintf(path, sizeof path, "%s/coordinator.log", dir);
  tg_proc *coord = tg_proc_start(co, path, err, sizeof err);
  const char *ag[] = {"/usr/bin/env", barrier, "agent/tg-agent", "--node", "n0", "--job", "bench",
                      "--coordinators", coordinator, "--socket", sock, "--slots", "2", "--log-dir", logdir,
                      "--restart-max", "64", "--log-level", "warn", "--", "agent/test_worker", "50", NULL};
  snprintf(path, sizeof path, "%s/agent.log", dir);
  tg_proc *agent = tg_proc_start(ag, path, err, sizeof err);
  if (!coord || !agent) die(err);

  struct utsname u;
  uname(&u);
  printf("# bench/recovery trainer crash: 1 node x 2 slots, 50 ms steps, %" PRId64 " rounds\n", rounds);
  printf("# machine: %s %s, %ld cores\n# command:", u.nodename, u.release, sysconf(_SC_NPROCESSORS_ONLN));
  for (int i = 0; i < argc; i++) printf(" %s", argv[i]);
  printf("\n");

  int64_t *reported = calloc((size_t)rounds, 8), *restarted = calloc((size_t)rounds, 8),
          *resumed = calloc((size_t)rounds, 8);
  for (int64_t r = 0; r < rounds; r++) {
    int pid0, pid1;
    uint64_t g0, g1;
    int64_t deadline = mono_ms() + 30000;
    do { /* both trainers in the same, newest world */
      usleep(20000);
      last_join(0, &pid0, &g0);
      last_join(1, &pid1, &g1);
    } while ((pid0 == 0 || g0 != g1) && mono_ms() < deadline);
    if (pid0 == 0 || g0 != g1) die("the trainers never joined one world");
    usleep(500000); /* steady for a moment */
    int64_t before_fault = newest_exit_fault();
    int64_t t0 = mono_ms(), t0_unix = unix_ms();
    kill(pid0, SIGKILL);
    int64_t t_restart = 0, t_resume = 0;
    while ((!t_restart || !t_resume) && mono_ms() - t0 < 30000) {
      int p0, p1;
      uint64_t h0, h1;
      last_join(0, &p0, &h0);
      last_join(1, &p1, &h1);
      if (!t_restart && p0 != pid0 && p0 && h0 > g0) t_restart = mono_ms();
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
