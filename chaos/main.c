/* tg-chaos: injects failures into a local Tardigrade job and measures
 * what happened. Parses the command line, finds the binaries it runs
 * (next to itself in Bazel's runfiles or output tree, or --bin-dir),
 * turns SIGINT/SIGTERM into an orderly stop, runs the scenario (run.h)
 * and writes the report (report.h). */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chaos/report.h"
#include "chaos/run.h"
#include "chaos/scenario.h"
#include "common/config/config.h"
#include "common/log/log.h"

static const char usage[] =
    "usage: tg-chaos run SCENARIO.json [--out REPORT.json] [--keep-logs DIR] [options]\n"
    "       tg-chaos run SCENARIO.json --attach HOST:PORT[,HOST:PORT...] [--out REPORT.json]\n"
    "       tg-chaos check SCENARIO.json [--attach ...]\n"
    "\n"
    "Starts a Tardigrade job on this machine (one etcd, tg-coordinators, tg-agents\n"
    "running tg-train; local processes, or with \"network\": \"namespaces\" every node\n"
    "on a network namespace host of its own, as root), injects the scenario's faults while it trains, measures\n"
    "detection, recovery and lost steps for each, and checks the invariants: no\n"
    "committed step lost, never two worlds with one generation, final parameters\n"
    "bitwise equal to a fault-free run's. Prints a summary table; --out also writes\n"
    "the JSON report (schema in chaos/README.md). `check` only validates the file.\n"
    "\n"
    "With --attach, nothing is started: the faults go into the running job whose\n"
    "coordinators listen at those addresses (its agents, with --log-dir, on this\n"
    "machine), the scenario's cluster and training blocks are not read, a killed\n"
    "process is started again as it was, the job is left running at the end, and\n"
    "the final-parameters invariant is not checked.\n"
    "\n"
    "Exit status: 0 every invariant holds, 1 an invariant is violated, 2 bad usage,\n"
    "a bad scenario or a run that could not be set up, 130 stopped by a signal.";

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

static void install_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
}

/* Under `bazel run` the working directory is the runfiles tree; paths the
 * user typed are relative to where they typed them. */
static void user_path(const char *in, char *out, size_t len) {
  const char *cwd = getenv("BUILD_WORKING_DIRECTORY");
  if (in[0] != '/' && cwd && *cwd)
    snprintf(out, len, "%s/%s", cwd, in);
  else
    snprintf(out, len, "%s", in);
}

static int all_found(const char *root, tg_chaos_bins *b) {
  static const char *const rel[] = {"coordinator/tg-coordinator", "agent/tg-agent", "trainer/tg-train",
                                    "coordinator/tgctl"};
  char *dst[] = {b->coordinator, b->agent, b->trainer, b->tgctl};
  for (size_t i = 0; i < 4; i++) {
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", root, rel[i]);
    if (access(path, X_OK) != 0 || !realpath(path, dst[i])) return 0;
  }
  /* Only where CUDA was installed at build time; a scenario with
   * "device": "cuda" needs it. */
  char path[PATH_MAX + 64];
  snprintf(path, sizeof path, "%s/trainer/tg-train-cuda", root);
  if (access(path, X_OK) != 0 || !realpath(path, b->trainer_cuda)) b->trainer_cuda[0] = '\0';
  return 1;
}

/* The binaries: --bin-dir, else runfiles, else the output tree beside us. */
static int find_bins(const char *bin_dir, tg_chaos_bins *b, char *err, size_t errlen) {
  if (bin_dir[0]) {
    if (all_found(bin_dir, b)) return 0;
    snprintf(err, errlen, "--bin-dir %s: no coordinator/tg-coordinator, agent/tg-agent, trainer/tg-train and "
             "coordinator/tgctl below it", bin_dir);
    return -1;
  }
  char exe[PATH_MAX] = "", root[PATH_MAX + 64];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) exe[n] = '\0';
  const char *env[] = {getenv("RUNFILES_DIR"), getenv("TEST_SRCDIR")};
  for (size_t i = 0; i < 2; i++) {
    if (!env[i] || !*env[i]) continue;
    snprintf(root, sizeof root, "%s/tardigrade", env[i]);
    if (all_found(root, b)) return 0;
  }
  if (exe[0]) {
    snprintf(root, sizeof root, "%s.runfiles/tardigrade", exe);
    if (all_found(root, b)) return 0;
    snprintf(root, sizeof root, "%s/..", dirname(exe));
    if (all_found(root, b)) return 0;
  }
  snprintf(err, errlen, "cannot find tg-coordinator, tg-agent, tg-train and tgctl (build them with bazel build "
           "//chaos:tg-chaos, or give --bin-dir bazel-bin)");
  return -1;
}

static int write_report(const char *path, const char *text) {
  char tmp[PATH_MAX + 16];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  int ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
  if (f && fclose(f) != 0) ok = 0;
  if (ok && rename(tmp, path) != 0) ok = 0;
  if (!ok) {
    fprintf(stderr, "tg-chaos: cannot write %s: %s\n", path, strerror(errno));
    unlink(tmp);
  }
  return ok ? 0 : -1;
}

static void describe(const tg_chaos_scenario *s) {
  if (s->attach)
    printf("scenario %s: valid for a running job; %zu fault(s)%s\n", s->name, s->n_faults,
           s->has_soak ? " then a soak" : "");
  else
    printf("scenario %s: valid; %d agents x %d slots, %d spare(s), %d coordinator(s); %lld steps; %zu fault(s)%s\n",
           s->name, s->cluster.agents, s->cluster.slots, s->cluster.spares, s->cluster.coordinators,
           (long long)s->training.steps, s->n_faults, s->has_soak ? " then a soak" : "");
  for (size_t i = 0; i < s->n_faults; i++) {
    const tg_chaos_fault_spec *f = &s->faults[i];
    char target[96];
    if (f->random_target)
      snprintf(target, sizeof target, "random");
    else if (f->slot >= 0)
      snprintf(target, sizeof target, "%s slot %d", f->node, f->slot);
    else
      snprintf(target, sizeof target, "%s", f->node[0] ? f->node : "-");
    printf("  #%zu %-17s at %s %-8lld target %s\n", i, tg_chaos_kind_name(f->kind), f->at_step >= 0 ? "step" : "ms  ",
           (long long)(f->at_step >= 0 ? f->at_step : f->at_ms), target);
  }
  if (s->has_soak) {
    printf("  soak: every %lld steps for %.1f min, kinds:", (long long)s->soak_every_steps,
           (double)s->soak_ms / 60000.0);
    for (size_t i = 0; i < s->n_soak_kinds; i++) printf(" %s", tg_chaos_kind_name(s->soak_kinds[i]));
    printf("\n");
  }
}

int main(int argc, char **argv) {
  char out[PATH_MAX] = "", keep[PATH_MAX] = "", reference[PATH_MAX] = "", bin_dir[PATH_MAX] = "";
  char log_level[16] = "info", attach[1024] = "";
  const tg_option opts[] = {
      {"out", TG_OPT_STRING, out, sizeof out, 0, 0, "write the JSON report here"},
      {"keep-logs", TG_OPT_STRING, keep, sizeof keep, 0, 0,
       "copy every log (and the parameter files) to this directory; default: removed with the run"},
      {"reference", TG_OPT_STRING, reference, sizeof reference, 0, 0,
       "parameters of a fault-free run of the same training: reused if the file exists, else written there; "
       "default: a reference run every time"},
      {"bin-dir", TG_OPT_STRING, bin_dir, sizeof bin_dir, 0, 0,
       "where coordinator/tg-coordinator, agent/tg-agent, trainer/tg-train, coordinator/tgctl are (bazel-bin); "
       "default: beside tg-chaos"},
      {"log-level", TG_OPT_STRING, log_level, sizeof log_level, 0, 0, "progress on stderr: debug, info, warn or error"},
      {"attach", TG_OPT_STRING, attach, sizeof attach, 0, 0,
       "inject into the running job led by the coordinators at these host:port addresses (comma-separated) "
       "instead of starting one"},
  };
  char err[1024];
  int n_args = 0;
  switch (tg_config_parse(opts, sizeof opts / sizeof opts[0], argc, argv, usage, &n_args, err, sizeof err)) {
  case TG_CONFIG_HELP: return 0;
  case TG_CONFIG_ERROR: fprintf(stderr, "tg-chaos: %s\n", err); return 2;
  case TG_CONFIG_OK: break;
  }
  if (n_args != 2 || (strcmp(argv[1], "run") != 0 && strcmp(argv[1], "check") != 0)) {
    fprintf(stderr, "tg-chaos: expected `run SCENARIO.json` or `check SCENARIO.json` (see --help)\n");
    return 2;
  }
  int level = tg_log_parse_level(log_level);
  if (level < 0) {
    fprintf(stderr, "tg-chaos: --log-level: expected debug, info, warn or error, got %s\n", log_level);
    return 2;
  }
  tg_log_init("tg-chaos", (tg_log_level)level);
  char scenario_path[PATH_MAX];
  user_path(argv[2], scenario_path, sizeof scenario_path);
  if (attach[0] && reference[0]) {
    fprintf(stderr, "tg-chaos: --reference has no use with --attach (the final parameters are not checked)\n");
    return 2;
  }
  tg_chaos_scenario *s = tg_chaos_scenario_load(scenario_path, attach[0] != '\0', err, sizeof err);
  if (!s) {
    fprintf(stderr, "tg-chaos: %s\n", err);
    return 2;
  }
  if (strcmp(argv[1], "check") == 0) {
    describe(s);
    tg_chaos_scenario_free(s);
    return 0;
  }
  char paths[4][PATH_MAX];
  user_path(out, paths[0], sizeof paths[0]);
  user_path(keep, paths[1], sizeof paths[1]);
  user_path(reference, paths[2], sizeof paths[2]);
  user_path(bin_dir, paths[3], sizeof paths[3]);
  tg_chaos_bins bins;
  if (find_bins(bin_dir[0] ? paths[3] : "", &bins, err, sizeof err) != 0) {
    fprintf(stderr, "tg-chaos: %s\n", err);
    tg_chaos_scenario_free(s);
    return 2;
  }
  install_signals();
  tg_chaos_run_options o = {.scenario = s, .scenario_path = scenario_path, .bins = &bins,
                            .reference = reference[0] ? paths[2] : NULL, .keep_logs = keep[0] ? paths[1] : NULL,
                            .stop = &stop_requested, .attach = attach[0] ? attach : NULL};
  tg_chaos_result res;
  int rc = tg_chaos_run(&o, &res);
  char *json = tg_chaos_report_json(&res);
  if (out[0] && (!json || write_report(paths[0], json) != 0) && rc == 0) rc = 2;
  res.exit_code = rc;
  tg_chaos_report_table(&res, stdout);
  free(json);
  tg_chaos_result_free(&res);
  tg_chaos_scenario_free(s);
  return rc;
}
