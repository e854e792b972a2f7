/* bench/rendezvous: how fast one coordinator forms and re-forms a world at
 * scale. N simulated agents (threads of this process, speaking the real
 * API) with S slots each register with one real tg-coordinator process
 * backed by one real etcd, on this machine.
 *
 * Printed figures:
 *   first world      from starting the agents to every agent holding generation 1
 *   re-form (fault)  from a ReportFault that takes a node out to the new world
 *                    delivered to every survivor
 *   re-form (death)  from a node's last heartbeat to the new world delivered to
 *                    every survivor (includes the heartbeat timeout), and the
 *                    part after the timeout
 *   coordinator CPU and RSS in steady state; etcd writes per second in steady
 *   state (revisions of the store per second) and per fault.
 *
 * Usage: bazel run -c opt //bench/rendezvous -- --nodes 2048 --slots 8 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "common/config/config.h"
#include "common/etcd/etcd.h"
#include "common/log/log.h"
#include "proto/tardigrade/v1/common.pb-c.h"
#include "tests/harness/etcd_cluster.h"
#include "tests/harness/proc.h"
#include "tests/simagent/simagent.h"

static int64_t nodes = 256, slots = 8, heartbeat_ms = 500, timeout_ms = 2000, settle_ms = 5000;
static char coordinator_bin[512] = "coordinator/tg-coordinator";

static void die(const char *what) {
  fprintf(stderr, "rendezvous_bench: %s\n", what);
  exit(1);
}

static int64_t revision(tg_etcd *e) {
  tg_etcd_range_result r = {0};
  tg_etcd_range_opts o = {.count_only = 1};
  tg_rpc_status st = {0};
  if (tg_etcd_get(e, "/", &o, &r, &st) != TG_RPC_OK) return -1;
  int64_t rev = r.revision;
  tg_etcd_range_result_free(&r);
  return rev;
}

/* utime+stime in ms and RSS in KiB of a process, from /proc. */
static void proc_usage(pid_t pid, int64_t *cpu_ms, int64_t *rss_kib) {
  char path[64], buf[4096];
  *cpu_ms = *rss_kib = -1;
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (f) {
    if (fgets(buf, sizeof buf, f)) {
      char *p = strrchr(buf, ')');
      unsigned long ut = 0, stt = 0;
      /* fields after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
      if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &stt) == 2)
        *cpu_ms = (int64_t)(ut + stt) * 1000 / sysconf(_SC_CLK_TCK);
    }
    fclose(f);
  }
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  f = fopen(path, "r");
  if (f) {
    while (fgets(buf, sizeof buf, f))
      if (strncmp(buf, "VmRSS:", 6) == 0) *rss_kib = strtoll(buf + 6, NULL, 10);
    fclose(f);
  }
}

/* Waits until every agent but `skip` has generation >= gen; returns the
 * latest arrival time (monotonic ms), or -1 on timeout. */
static int64_t wait_delivered(tg_sim_agent **a, int64_t n, int64_t skip, uint64_t gen, int64_t limit_ms) {
  int64_t latest = 0;
  for (int64_t i = 0; i < n; i++) {
    if (i == skip) continue;
    if (tg_sim_agent_wait_generation(a[i], gen, limit_ms) != 0) return -1;
    tg_sim_state s;
    tg_sim_agent_state(a[i], &s);
    if (s.world_received_ms > latest) latest = s.world_received_ms;
  }
  return latest;
}

static uint64_t generation_of(tg_sim_agent *a) {
  tg_sim_state s;
  tg_sim_agent_state(a, &s);
  return s.generation;
}

int main(int argc, char **argv) {
  const tg_option opts[] = {
      {"nodes", TG_OPT_INT, &nodes, 0, 2, 16384, "simulated nodes"},
      {"slots", TG_OPT_INT, &slots, 0, 1, 64, "ranks per node"},
      {"heartbeat-interval-ms", TG_OPT_INT, &heartbeat_ms, 0, 10, 60000, "agents' heartbeat interval"},
      {"heartbeat-timeout-ms", TG_OPT_INT, &timeout_ms, 0, 20, 600000, "coordinator's heartbeat timeout"},
      {"settle-ms", TG_OPT_INT, &settle_ms, 0, 100, 600000, "steady-state window measured"},
      {"coordinator", TG_OPT_STRING, coordinator_bin, sizeof coordinator_bin, 0, 0,
       "path of tg-coordinator (default: the runfiles copy)"},
  };
  char err[512];
  switch (tg_config_parse(opts, sizeof opts / sizeof opts[0], argc, argv,
                          "usage: rendezvous_bench [--nodes N] [--slots S] ...\n\n"
                          "Measures world formation with N simulated agents against one coordinator.",
                          NULL, err, sizeof err)) {
  case TG_CONFIG_HELP: return 0;
  case TG_CONFIG_ERROR: fprintf(stderr, "rendezvous_bench: %s\n", err); return 2;
  case TG_CONFIG_OK: break;
  }
  tg_log_init("rendezvous_bench", TG_LOG_WARN);
  signal(SIGPIPE, SIG_IGN);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }

  tg_etcd_cluster *etcd = tg_etcd_cluster_start(1, err, sizeof err);
  if (!etcd) die(err);
  char dir[512], log[600], listen[64], endpoints[64], nbuf[24], sbuf[24], hb[24], to[24];
  if (tg_proc_temp_dir("rendezvous-bench", dir, sizeof dir) != 0) die("no temp dir");
  int port = tg_proc_free_port();
  snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
  snprintf(endpoints, sizeof endpoints, "127.0.0.1:%d", port);
  snprintf(log, sizeof log, "%s/coordinator.log", dir);
  snprintf(nbuf, sizeof nbuf, "%" PRId64, nodes);
  snprintf(sbuf, sizeof sbuf, "%" PRId64, slots);
  snprintf(hb, sizeof hb, "%" PRId64, heartbeat_ms);
  snprintf(to, sizeof to, "%" PRId64, timeout_ms);
  /* max = nodes - 1: one node is a spare, so a lost node is replaced. */
  char maxbuf[24];
  snprintf(maxbuf, sizeof maxbuf, "%" PRId64, nodes - 1);
  const char *argv_c[] = {coordinator_bin, "--job", "bench", "--listen", listen, "--http", "off",
                          "--etcd", tg_etcd_cluster_endpoints(etcd), "--min-nodes", maxbuf, "--max-nodes", maxbuf,
                          "--slots", sbuf, "--last-call-ms", "0", "--heartbeat-interval-ms", hb,
                          "--heartbeat-timeout-ms", to, "--quarantine-faults", "0", "--log-level", "warn",
                          NULL};
  tg_proc *coord = tg_proc_start(argv_c, log, err, sizeof err);
  if (!coord) die(err);
  usleep(500000);

  struct utsname u;
  uname(&u);
  printf("# bench/rendezvous: %" PRId64 " nodes x %" PRId64 " slots = %" PRId64 " ranks (one spare node)\n",
         nodes, slots, (nodes - 1) * slots);
  printf("# machine: %s %s, %ld cores; heartbeat %" PRId64 " ms, timeout %" PRId64 " ms\n", u.nodename,
         u.release, sysconf(_SC_NPROCESSORS_ONLN), heartbeat_ms, timeout_ms);
  printf("# command:");
  for (int i = 0; i < argc; i++) printf(" %s", argv[i]);
  printf("\n");

  tg_sim_agent **a = calloc((size_t)nodes, sizeof *a);
  int64_t cpu_start, rss_start;
  proc_usage(tg_proc_pid(coord), &cpu_start, &rss_start);
  int64_t t0 = tg_sim_mono_ms();
  for (int64_t i = 0; i < nodes; i++) {
    char id[32];
    snprintf(id, sizeof id, "node-%05" PRId64, i);
    tg_sim_config cfg = {.coordinators = endpoints, .job_id = "bench", .node_id = id, .slots = (uint32_t)slots};
    a[i] = tg_sim_agent_start(&cfg, err, sizeof err);
    if (!a[i]) die(err);
  }
  int64_t registered = t0;
  for (int64_t i = 0; i < nodes; i++) {
    if (tg_sim_agent_wait_registered(a[i], 120000) != 0) die("an agent never registered");
    tg_sim_state s;
    tg_sim_agent_state(a[i], &s);
    (void)s;
  }
  registered = tg_sim_mono_ms();
  int64_t first = wait_delivered(a, nodes, -1, 1, 120000);
  if (first < 0) {
    tg_proc_dump_log(coord, 4000);
    die("the first world never reached every agent");
  }
  int64_t cpu_first, rss_first;
  proc_usage(tg_proc_pid(coord), &cpu_first, &rss_first);
  printf("first world:            %8.3f s  (%" PRId64 " agents started to all holding generation 1; "
         "the coordinator used %.3f s of CPU in that time, the rest is the agents' side)\n",
         (double)(first - t0) / 1000.0, nodes, (double)(cpu_first - cpu_start) / 1000.0);
  printf("  of which registration:%8.3f s  (until every agent had registered and opened its streams)\n",
         (double)(registered - t0) / 1000.0);

  /* Steady state: CPU, RSS and etcd writes over settle_ms with no faults. */
  tg_rpc_status st = {0};
  tg_etcd_config ec = {.endpoints = tg_etcd_cluster_endpoints(etcd)};
  tg_etcd *e = tg_etcd_open(&ec, &st);
  if (!e) die(st.message);
  usleep(1000000);
  int64_t cpu0, cpu1, rss;
  proc_usage(tg_proc_pid(coord), &cpu0, &rss);
  int64_t rev0 = revision(e), s0 = tg_sim_mono_ms();
  usleep((useconds_t)settle_ms * 1000);
  int64_t rev1 = revision(e), s1 = tg_sim_mono_ms();
  proc_usage(tg_proc_pid(coord), &cpu1, &rss);
  double secs = (double)(s1 - s0) / 1000.0;
  printf("steady state:           coordinator CPU %5.1f %% of one core, RSS %.1f MiB; etcd %.2f writes/s "
         "(%" PRId64 " heartbeats/s not written)\n",
         100.0 * (double)(cpu1 - cpu0) / (double)(s1 - s0), (double)rss / 1024.0,
         (double)(rev1 - rev0) / secs, nodes * 1000 / heartbeat_ms);

  /* Re-form after a fault report: a fatal GPU fault takes a member out; the
   * spare replaces it. */
  int64_t victim = 0;
  for (int64_t i = 0; i < nodes; i++) {
    tg_sim_state s;
    tg_sim_agent_state(a[i], &s);
    if (s.position >= 0) {
      victim = i;
      break;
    }
  }
  uint64_t g = generation_of(a[(victim + 1) % nodes]);
  int64_t rev_before = revision(e);
  int64_t tf = tg_sim_mono_ms();
  if (tg_sim_agent_report_fault(a[victim], TARDIGRADE__V1__FAULT_KIND__FAULT_GPU_LOST,
                                TARDIGRADE__V1__SEVERITY__SEVERITY_FATAL, -1, g, "bench: GPU lost",
                                &st) != TG_RPC_OK)
    die(st.message);
  int64_t delivered = wait_delivered(a, nodes, victim, g + 1, 60000);
  if (delivered < 0) die("the world after the fault never reached every survivor");
  printf("re-form after a fault:  %8.3f s  (ReportFault to the new world at all %" PRId64 " survivors)\n",
         (double)(delivered - tf) / 1000.0, nodes - 1);
  usleep(500000);
  printf("etcd revisions per fault: %" PRId64 " (one batch with the fault and node records, one world)\n",
         revision(e) - rev_before);

  /* Re-form after a node's heartbeats stop: detection by timeout. */
  int64_t victim2 = -1;
  for (int64_t i = 0; i < nodes; i++) {
    tg_sim_state s;
    tg_sim_agent_state(a[i], &s);
    if (i != victim && s.position >= 0) {
      victim2 = i;
      break;
    }
  }
  g += 1; /* the world formed after the fault */
  tg_sim_agent_silence(a[victim2], 1);
  usleep(10000); /* a heartbeat being sent right now still counts */
  tg_sim_state dead;
  tg_sim_agent_state(a[victim2], &dead);
  int64_t td = dead.last_heartbeat_ms;
  int64_t delivered2 = -1;
  for (int64_t i = 0; i < nodes; i++) {
    if (i == victim2 || i == victim) continue; /* the dead node and the faulty one */
    if (tg_sim_agent_wait_generation(a[i], g + 1, 60000) != 0) die("no world after the node died");
    tg_sim_state s;
    tg_sim_agent_state(a[i], &s);
    if (s.world_received_ms > delivered2) delivered2 = s.world_received_ms;
  }
  printf("re-form after a death:  %8.3f s  (last heartbeat to the new world at every survivor; "
         "%.3f s after the %" PRId64 " ms timeout)\n",
         (double)(delivered2 - td) / 1000.0, (double)(delivered2 - td - timeout_ms) / 1000.0, timeout_ms);

  for (int64_t i = 0; i < nodes; i++) tg_sim_agent_free(a[i]);
  free(a);
  tg_etcd_close(e);
  tg_proc_stop(coord, 3000);
  tg_proc_free(coord);
  tg_etcd_cluster_free(etcd);
  return 0;
}
