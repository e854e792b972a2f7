/* The timeline of a run; see run.h. The main thread does everything that
 * starts or signals a process (the harness's parent-death signal follows
 * the forking thread), in one loop: read the logs, follow the fault in
 * flight, fire the next one when its trigger comes. Faults go one at a
 * time: the next trigger is looked at only once the previous fault has
 * recovered or timed out, so each measurement belongs to one fault. */
#include "chaos/run.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chaos/inject.h"
#include "chaos/measure.h"
#include "chaos/procs.h"
#include "common/clock/clock.h"
#include "common/log/log.h"
#include "tests/harness/etcd_cluster.h"
#include "tests/harness/proc.h"

#define POLL_MS 20
#define STATUS_PERIOD_MS 100
#define LEADER_TIMEOUT_MS 30000
#define ATTACH_TIMEOUT_MS 10000 /* for a running job's leader to answer */
#define FIRST_STEP_TIMEOUT_MS 180000
#define SPARES_TIMEOUT_MS 30000
#define MAX_RUN_FAULTS 10000

typedef struct {
  const tg_chaos_run_options *o;
  tg_chaos_result *res;
  char dir[256];
  tg_etcd_cluster *etcd;
  tg_netns *net;    /* namespace mode: one host per node, and the uplink */
  const char *host; /* where etcd and the coordinators listen: 127.0.0.1 or the uplink */
} run_state;

static int stopping(const run_state *r) { return r->o->stop && *r->o->stop; }

static int setup_error(run_state *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int setup_error(run_state *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->res->error, sizeof r->res->error, fmt, ap);
  va_end(ap);
  TG_ERROR("%s", r->res->error);
  return -1;
}

static tg_chaos_fault *add_fault(tg_chaos_result *res, const tg_chaos_fault_spec *spec, int soak) {
  if (res->n_faults == res->cap_faults) {
    size_t cap = res->cap_faults ? res->cap_faults * 2 : 16;
    if (cap > MAX_RUN_FAULTS) return NULL;
    tg_chaos_fault *faults = realloc(res->faults, cap * sizeof *faults);
    if (!faults) return NULL;
    res->faults = faults;
    res->cap_faults = cap;
  }
  tg_chaos_fault *f = &res->faults[res->n_faults++];
  memset(f, 0, sizeof *f);
  f->spec = *spec;
  f->soak = soak;
  f->slot = f->rank = f->detect_rank = -1;
  f->committed_at_injection = f->resume_step = f->lib_lost = -1;
  return f;
}

static int copy_file(const char *from, const char *to) {
  FILE *a = fopen(from, "rb"), *b = a ? fopen(to, "wb") : NULL;
  int ok = a && b;
  char buf[65536];
  size_t n;
  while (ok && (n = fread(buf, 1, sizeof buf, a)) > 0) ok = fwrite(buf, 1, n, b) == n;
  if (a) fclose(a);
  if (b && fclose(b) != 0) ok = 0;
  return ok ? 0 : -1;
}

static int run_command(const char *const *argv) {
  int status;
  char out[512];
  return tg_proc_run(argv, NULL, 60000, out, sizeof out, &status) == 0 && status == 0 ? 0 : -1;
}

/* ------------------------------------------------------------ leftovers */

/* A run killed with SIGKILL cleans nothing up: its directory (and the
 * checkpoint tmpfs mounted there) and its jobs' shared memory stay. Each
 * run directory has an "owner" file: the pid, start time (procs.h) and
 * pid namespace of the tg-chaos that made it, then a "job ID" line per job
 * it starts. The next run removes the directories whose owner is gone,
 * with their jobs' shared memory. An owner in another pid namespace (a
 * run in another Bazel sandbox) cannot be judged and is left alone. */
#define OWNER_FILE "owner"

static unsigned long long pid_namespace(void) {
  struct stat st;
  return stat("/proc/self/ns/pid", &st) == 0 ? (unsigned long long)st.st_ino : 0;
}

static void owner_line(const char *dir, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void owner_line(const char *dir, const char *fmt, ...) {
  char path[320];
  snprintf(path, sizeof path, "%s/" OWNER_FILE, dir);
  FILE *f = fopen(path, "a");
  if (!f) return;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(f, fmt, ap);
  va_end(ap);
  fclose(f);
}

static void write_owner(const char *dir) {
  tg_chaos_proc self;
  if (tg_chaos_proc_read(getpid(), &self) != 0) return;
  owner_line(dir, "%d %llu %llu\n", (int)self.pid, self.start_ticks, pid_namespace());
  tg_chaos_proc_clear(&self);
}

/* Unlinks every shared memory segment of job (its nodes' stores and counters). */
static void unlink_job_shm(const char *job) {
  char prefixes[2][96];
  snprintf(prefixes[0], sizeof prefixes[0], "tg-ckpt-%s-", job);
  snprintf(prefixes[1], sizeof prefixes[1], "tg-progress-%s-", job);
  DIR *d = opendir("/dev/shm");
  struct dirent *e;
  while (d && (e = readdir(d)))
    for (int i = 0; i < 2; i++)
      if (strncmp(e->d_name, prefixes[i], strlen(prefixes[i])) == 0) {
        char name[300];
        snprintf(name, sizeof name, "/%s", e->d_name);
        shm_unlink(name);
      }
  if (d) closedir(d);
}

/* If dir's owner is gone: its jobs' shared memory unlinked; 1. */
static int reap_if_gone(const char *dir) {
  char path[600], line[160];
  snprintf(path, sizeof path, "%s/" OWNER_FILE, dir);
  FILE *f = fopen(path, "r");
  if (!f) return 0; /* not one of ours, or still being made */
  tg_chaos_proc owner = {.netns_fd = -1};
  int pid = 0;
  unsigned long long ns = 0;
  int gone = fgets(line, sizeof line, f) && sscanf(line, "%d %llu %llu", &pid, &owner.start_ticks, &ns) == 3 &&
             pid > 0 && ns == pid_namespace();
  owner.pid = pid;
  gone = gone && !tg_chaos_proc_alive(&owner);
  while (gone && fgets(line, sizeof line, f)) {
    char job[96];
    if (sscanf(line, "job %95s", job) == 1) unlink_job_shm(job);
  }
  fclose(f);
  return gone;
}

static void remove_leftovers(void) {
  DIR *d = opendir("/tmp");
  struct dirent *e;
  while (d && (e = readdir(d))) {
    char dir[300], ckpt[320];
    if (strncmp(e->d_name, "tg-chaos-", 9) != 0) continue;
    snprintf(dir, sizeof dir, "/tmp/%s", e->d_name);
    if (!reap_if_gone(dir)) continue;
    snprintf(ckpt, sizeof ckpt, "%s/ckpt", dir);
    umount2(ckpt, MNT_DETACH); /* disk_full's tmpfs, if it was mounted */
    const char *rm[] = {"rm", "-rf", dir, NULL};
    if (run_command(rm) == 0) TG_INFO("removed %s and its jobs' shared memory, left by a tg-chaos that is gone", dir);
  }
  if (d) closedir(d);
}

/* ------------------------------------------------------------ clusters */

/* The checkpoint filesystem's size when a disk_full fault will fill it:
 * room for the few persisted steps of a scenario's small model. */
#define DISK_FULL_FS_MIB 64

/* Whether the scenario lists a fault of `kind`, or its soak may draw one. */
static int uses_kind(const tg_chaos_scenario *s, tg_chaos_kind kind) {
  for (size_t i = 0; i < s->n_faults; i++)
    if (s->faults[i].kind == kind) return 1;
  for (size_t i = 0; i < s->n_soak_kinds; i++)
    if (s->soak_kinds[i] == kind) return 1;
  return 0;
}

static tg_chaos_cluster *new_cluster(run_state *r, const char *job, const char *dir, int nodes, int max_nodes,
                                     int coordinators, int persist, int ckpt_fs_mib, const tg_chaos_cluster_spec *spec,
                                     const char *params, tg_netns *net) {
  char err[512];
  if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
    setup_error(r, "%s: %s", dir, strerror(errno));
    return NULL;
  }
  tg_chaos_cluster_config cfg = {.job = job, .dir = dir, .etcd_endpoints = tg_etcd_cluster_endpoints(r->etcd),
                                 .bins = r->o->bins, .nodes = nodes, .max_nodes = max_nodes,
                                 .coordinators = coordinators, .persist = persist, .ckpt_fs_mib = ckpt_fs_mib,
                                 .spec = spec, .training = &r->o->scenario->training, .params_out = params, .net = net,
                                 .host = r->host,
                                 /* the faulted job (the one that persists), not the reference */
                                 .slow_links = persist && uses_kind(r->o->scenario, TG_CHAOS_SLOW_LINK)};
  tg_chaos_cluster *c = tg_chaos_cluster_new(&cfg, err, sizeof err);
  if (!c) setup_error(r, "%s", err);
  return c;
}

/* Namespace mode: a host per node, joined by a bridge, and an uplink
 * from this namespace, where etcd, the coordinators and tg-chaos itself
 * stay. Refused with the reason where namespaces cannot be made. */
static int start_network(run_state *r) {
  const tg_chaos_scenario *s = r->o->scenario;
  char why[512];
  if (!tg_netns_available(why, sizeof why))
    return setup_error(r, "cluster.network \"namespaces\": %s", why);
  r->net = tg_netns_new(s->cluster.agents + s->cluster.spares, why, sizeof why);
  if (!r->net) return setup_error(r, "cluster.network \"namespaces\": %s", why);
  r->host = tg_netns_uplink(r->net, why, sizeof why);
  if (!r->host) return setup_error(r, "cluster.network \"namespaces\": uplink: %s", why);
  TG_INFO("network: %d hosts %s..%s, etcd and coordinators on %s", tg_netns_size(r->net), tg_netns_addr(r->net, 0),
          tg_netns_addr(r->net, tg_netns_size(r->net) - 1), r->host);
  return 0;
}

/* Waits until cond(arg) holds; 0, or -1 past timeout_ms or on a stop. */
static int wait_until(run_state *r, tg_chaos_watch *w, int (*cond)(void *), void *arg, int64_t timeout_ms) {
  int64_t deadline = tg_clock_mono_ms() + timeout_ms;
  while (!stopping(r) && tg_clock_mono_ms() < deadline) {
    if (w) tg_chaos_watch_poll(w);
    if (cond(arg)) return 0;
    if (w && tg_chaos_watch_gave_up(w)) return -1;
    tg_clock_sleep_ms(POLL_MS * 5);
  }
  return -1;
}

typedef struct {
  tg_chaos_watch *watch;
  int64_t steps;
} done_arg;

static int training_done(void *arg) {
  done_arg *d = arg;
  return tg_chaos_watch_done_steps(d->watch) >= d->steps;
}

/* The same training without faults, on one node: the parameters every
 * run must end with (the trainer is deterministic across world sizes). */
static int run_reference(run_state *r) {
  const tg_chaos_scenario *s = r->o->scenario;
  tg_chaos_result *res = r->res;
  if (r->o->reference && access(r->o->reference, R_OK) == 0) {
    snprintf(res->reference_params, sizeof res->reference_params, "%s", r->o->reference);
    TG_INFO("reference: reusing %s", r->o->reference);
    return 0;
  }
  char job[64], dir[320];
  snprintf(job, sizeof job, "chaosref-%d-%lld", (int)getpid(), (long long)(tg_clock_unix_ms() % 1000000000));
  owner_line(r->dir, "job %s\n", job);
  snprintf(dir, sizeof dir, "%s/reference", r->dir);
  snprintf(res->reference_params, sizeof res->reference_params, "%s/reference.params", r->dir);
  tg_chaos_cluster_spec spec = s->cluster;
  spec.min_nodes = 1;
  int64_t t0 = tg_clock_mono_ms();
  /* Local processes whatever the mode: the parameters do not depend on
   * where the ranks run. */
  tg_chaos_cluster *c = new_cluster(r, job, dir, 1, 1, 1, 0, 0, &spec, res->reference_params, NULL);
  if (!c) return -1;
  TG_INFO("reference: training %lld steps without faults on 1 node x %d slots (job %s)",
          (long long)s->training.steps, s->cluster.slots, job);
  char err[256];
  tg_chaos_watch *w = tg_chaos_watch_new(c);
  int rc = -1;
  if (!w) {
    setup_error(r, "out of memory");
  } else if (tg_chaos_cluster_start_coordinator(c, 0, err, sizeof err) != 0 ||
             tg_chaos_cluster_start_agent(c, 0, err, sizeof err) != 0) {
    setup_error(r, "reference run: %s", err);
  } else {
    done_arg d = {w, s->training.steps};
    if (wait_until(r, w, training_done, &d, s->deadline_s * 1000) != 0)
      setup_error(r, "reference run: %s after step %lld of %lld", stopping(r) ? "stopped by a signal"
                  : tg_chaos_watch_gave_up(w) ? tg_chaos_watch_gave_up(w)
                  : "did not finish within deadline_s (keep the logs with --keep-logs)",
                  (long long)tg_chaos_watch_max_step(w), (long long)s->training.steps);
    else if (access(res->reference_params, R_OK) != 0)
      setup_error(r, "reference run: finished but wrote no %s", res->reference_params);
    else
      rc = 0;
  }
  tg_chaos_watch_free(w);
  tg_chaos_cluster_free(c);
  res->reference_ms = tg_clock_mono_ms() - t0;
  res->reference_ran = 1;
  if (rc == 0 && r->o->reference) {
    if (copy_file(res->reference_params, r->o->reference) != 0)
      TG_WARN("reference: cannot write %s; using the copy in the run directory", r->o->reference);
    else
      snprintf(res->reference_params, sizeof res->reference_params, "%s", r->o->reference);
  }
  if (rc == 0) TG_INFO("reference: done in %.1f s", (double)res->reference_ms / 1000.0);
  return rc;
}

typedef struct {
  tg_chaos_poller *poller;
  const char *leader;
  uint32_t spares;
} status_arg;

static int leader_is(void *arg) {
  status_arg *a = arg;
  tg_chaos_status st;
  tg_chaos_poller_get(a->poller, &st);
  return st.ok && strcmp(st.leader, a->leader) == 0;
}

static int spares_in(void *arg) {
  status_arg *a = arg;
  tg_chaos_status st;
  tg_chaos_poller_get(a->poller, &st);
  return st.ok && st.nodes_spare >= a->spares;
}

static int first_step(void *arg) { return tg_chaos_watch_max_step(arg) > 0; }

/* Coordinators (c0 first, so it leads), the agents, then once the first
 * world trains, the spares (registered after it formed: spares). */
static int start_job(run_state *r, tg_chaos_ctx *ctx) {
  const tg_chaos_scenario *s = r->o->scenario;
  char err[256];
  status_arg sa = {ctx->poller, "c0", (uint32_t)s->cluster.spares};
  if (tg_chaos_cluster_start_coordinator(ctx->cluster, 0, err, sizeof err) != 0)
    return setup_error(r, "coordinator c0: %s", err);
  if (wait_until(r, NULL, leader_is, &sa, LEADER_TIMEOUT_MS) != 0)
    return setup_error(r, "coordinator c0 did not answer as leader within %d s", LEADER_TIMEOUT_MS / 1000);
  for (int i = 1; i < s->cluster.coordinators; i++)
    if (tg_chaos_cluster_start_coordinator(ctx->cluster, i, err, sizeof err) != 0)
      return setup_error(r, "coordinator c%d: %s", i, err);
  for (int i = 0; i < s->cluster.agents; i++)
    if (tg_chaos_cluster_start_agent(ctx->cluster, i, err, sizeof err) != 0) return setup_error(r, "agent n%d: %s", i, err);
  if (wait_until(r, ctx->watch, first_step, ctx->watch, FIRST_STEP_TIMEOUT_MS) != 0)
    return stopping(r) ? setup_error(r, "stopped by a signal before the job trained")
           : tg_chaos_watch_gave_up(ctx->watch) ? setup_error(r, "%s", tg_chaos_watch_gave_up(ctx->watch))
                       : setup_error(r, "the job did not start: no training step logged within %d s (keep the logs "
                                     "with --keep-logs)", FIRST_STEP_TIMEOUT_MS / 1000);
  r->res->training_started_unix_ms = tg_chaos_watch_first_step_unix_ms(ctx->watch);
  for (int i = s->cluster.agents; i < s->cluster.agents + s->cluster.spares; i++)
    if (tg_chaos_cluster_start_agent(ctx->cluster, i, err, sizeof err) != 0) return setup_error(r, "spare n%d: %s", i, err);
  if (s->cluster.spares && wait_until(r, NULL, spares_in, &sa, SPARES_TIMEOUT_MS) != 0 && !stopping(r))
    TG_WARN("the coordinators do not count %d spares after %d s; going on", s->cluster.spares, SPARES_TIMEOUT_MS / 1000);
  TG_INFO("job %s: training (generation %llu)%s", r->res->job,
          (unsigned long long)tg_chaos_watch_newest_generation(ctx->watch), s->cluster.spares ? "; spares started" : "");
  return stopping(r) ? -1 : 0;
}

/* A leader answered, naming its job (arg: the poller). */
static int answered(void *arg) {
  tg_chaos_status st;
  tg_chaos_poller_get(arg, &st);
  return st.ok && st.job[0];
}

/* A running job: its coordinators answer, its processes are found on
 * this machine, and the scenario gets the job's shape (what the faults'
 * targets and feasibility are judged against). */
static int attach_job(run_state *r, tg_chaos_ctx *ctx) {
  tg_chaos_result *res = r->res;
  char err[512];
  ctx->poller = tg_chaos_poller_start(r->o->attach, STATUS_PERIOD_MS, err, sizeof err);
  if (!ctx->poller) return setup_error(r, "status poller: %s", err);
  if (wait_until(r, NULL, answered, ctx->poller, ATTACH_TIMEOUT_MS) != 0)
    return stopping(r) ? -1
                       : setup_error(r, "--attach %s: no coordinator answered Status within %d s (are the "
                                     "addresses those of the coordinators' --listen?)", r->o->attach,
                                     ATTACH_TIMEOUT_MS / 1000);
  tg_chaos_status st;
  tg_chaos_poller_get(ctx->poller, &st);
  snprintf(res->job, sizeof res->job, "%s", st.job);
  tg_chaos_scenario *shaped = &res->attached_scenario;
  *shaped = *r->o->scenario;
  int64_t steps = 0;
  tg_chaos_attach_config ac = {.coordinators = r->o->attach, .job = st.job, .bins = r->o->bins};
  ctx->cluster = tg_chaos_cluster_attach(&ac, &shaped->cluster, &steps, err, sizeof err);
  if (!ctx->cluster) return setup_error(r, "--attach %s: %s", r->o->attach, err);
  /* Recovery is read from every rank's log: the world must be here. */
  tg_chaos_poller_get(ctx->poller, &st);
  for (size_t i = 0; i < st.n_nodes; i++)
    if (tg_chaos_cluster_node_index(ctx->cluster, st.nodes[i]) < 0)
      return setup_error(r, "--attach %s: node %s of the job's world (generation %llu) has no agent on this machine; "
                         "tg-chaos reads every rank's log, so every node of the world must run here", r->o->attach,
                         st.nodes[i], (unsigned long long)st.generation);
  shaped->training.steps = steps > 0 ? steps : TG_CHAOS_ATTACH_MAX_STEP;
  ctx->s = shaped;
  res->scenario = shaped;
  res->n_attached_nodes = tg_chaos_cluster_nodes(ctx->cluster);
  for (int i = 0; i < res->n_attached_nodes; i++)
    snprintf(res->attached_nodes[i], sizeof res->attached_nodes[i], "%s", tg_chaos_cluster_node_id(ctx->cluster, i));
  res->n_attached_coordinators = tg_chaos_cluster_coordinator_count(ctx->cluster);
  char coords[256] = "";
  for (int i = 0; i < res->n_attached_coordinators; i++) {
    tg_chaos_cluster_coordinator_id(ctx->cluster, i, res->attached_coordinators[i],
                                    sizeof res->attached_coordinators[i]);
    snprintf(coords + strlen(coords), sizeof coords - strlen(coords), " %s", res->attached_coordinators[i]);
  }
  ctx->watch = tg_chaos_watch_new(ctx->cluster);
  if (!ctx->watch) return setup_error(r, "out of memory");
  if (wait_until(r, ctx->watch, first_step, ctx->watch, FIRST_STEP_TIMEOUT_MS) != 0)
    return stopping(r) ? -1
                       : setup_error(r, "job %s: no training step in its trainers' logs within %d s", res->job,
                                     FIRST_STEP_TIMEOUT_MS / 1000);
  /* at_ms counts from here. */
  res->training_started_unix_ms = tg_clock_unix_ms();
  TG_INFO("attached to job %s (leader %s): %d agents here, %d of them spares by --max-nodes, %d slots; "
          "coordinators here:%s; generation %llu, step %lld%s", res->job, st.leader, res->n_attached_nodes,
          shaped->cluster.spares, shaped->cluster.slots, coords[0] ? coords : " none",
          (unsigned long long)tg_chaos_watch_newest_generation(ctx->watch),
          (long long)tg_chaos_watch_max_step(ctx->watch), steps > 0 ? "" : "; the trainers' --steps is unknown");
  return stopping(r) ? -1 : 0;
}

/* ------------------------------------------------------------ the timeline */

static void before_injection(tg_chaos_ctx *ctx, tg_chaos_fault *f) {
  tg_chaos_watch_poll(ctx->watch);
  tg_chaos_status st;
  tg_chaos_poller_get(ctx->poller, &st);
  f->step_at_injection = tg_chaos_watch_max_step(ctx->watch);
  f->committed_at_injection = st.ok ? (int64_t)st.committed_step : -1;
  f->generation_before = tg_chaos_watch_newest_generation(ctx->watch);
  const tg_chaos_generation *g = tg_chaos_watch_generation(ctx->watch, f->generation_before);
  f->world_before = g && g->world_size != UINT32_MAX ? g->world_size : st.world_size;
  f->nodes_before = st.n_nodes;
}

static void describe_target(const tg_chaos_fault *f, char *buf, size_t len) {
  if (f->slot >= 0)
    snprintf(buf, len, "%s slot %d (rank %d)", f->node, f->slot, f->rank);
  else if (f->node2[0])
    snprintf(buf, len, "%s and %s", f->node, f->node2);
  else if (f->coordinator[0])
    snprintf(buf, len, "leader %s", f->coordinator);
  else
    snprintf(buf, len, "%s", f->node[0] ? f->node : "-");
}

static void fire(tg_chaos_ctx *ctx, tg_chaos_result *res, tg_chaos_fault *f, tg_chaos_fault **inflight) {
  size_t i = (size_t)(f - res->faults);
  before_injection(ctx, f);
  char target[160];
  if (tg_chaos_inject(ctx, f) != 0) {
    f->state = TG_CHAOS_SKIPPED;
    TG_WARN("fault #%zu %s: skipped at step %lld: %s", i, tg_chaos_kind_name(f->spec.kind),
            (long long)f->step_at_injection, f->note);
    return;
  }
  f->state = TG_CHAOS_IN_FLIGHT;
  *inflight = f;
  describe_target(f, target, sizeof target);
  TG_INFO("fault #%zu %s%s: injected into %s at step %lld (generation %llu, committed step %lld)", i,
          tg_chaos_kind_name(f->spec.kind), f->soak ? " (soak)" : "", target, (long long)f->step_at_injection,
          (unsigned long long)f->generation_before, (long long)f->committed_at_injection);
}

static void finished(tg_chaos_ctx *ctx, tg_chaos_result *res, tg_chaos_fault *f) {
  size_t i = (size_t)(f - res->faults);
  tg_chaos_match_fault_log(ctx, res->faults, res->n_faults);
  if (f->state == TG_CHAOS_RECOVERED && f->resumed)
    TG_INFO("fault #%zu %s: recovered in %lld ms (generation %llu -> %llu, %u -> %u ranks, resumed at step %lld, "
            "%lld steps lost)%s%s", i, tg_chaos_kind_name(f->spec.kind),
            (long long)(f->recovered_unix_ms - f->injected_unix_ms), (unsigned long long)f->generation_before,
            (unsigned long long)f->generation_after, f->world_before, f->world_after, (long long)f->resume_step,
            (long long)f->steps_lost, f->note[0] ? ": " : "", f->note);
  else if (f->state == TG_CHAOS_RECOVERED)
    TG_INFO("fault #%zu %s: recovered in %lld ms without a new world (generation %llu)%s%s", i,
            tg_chaos_kind_name(f->spec.kind), (long long)(f->recovered_unix_ms - f->injected_unix_ms),
            (unsigned long long)f->generation_after, f->note[0] ? ": " : "", f->note);
  else
    TG_WARN("fault #%zu %s: not recovered: %s", i, tg_chaos_kind_name(f->spec.kind), f->note);
}

static int triggered(const tg_chaos_fault_spec *spec, tg_chaos_ctx *ctx, int64_t training_started) {
  if (spec->at_step >= 0) return tg_chaos_watch_max_step(ctx->watch) >= spec->at_step;
  return tg_clock_unix_ms() - training_started >= spec->at_ms;
}

/* The soak's next fault: a kind drawn among those the job can take now. */
static tg_chaos_fault *soak_fault(tg_chaos_ctx *ctx, tg_chaos_result *res, int64_t at_step) {
  const tg_chaos_scenario *s = ctx->s;
  tg_chaos_kind feasible[TG_CHAOS_KIND_COUNT];
  uint32_t n = 0;
  for (size_t i = 0; i < s->n_soak_kinds; i++)
    if (tg_chaos_feasible(ctx, s->soak_kinds[i])) feasible[n++] = s->soak_kinds[i];
  if (n == 0) return NULL;
  tg_chaos_fault_spec spec = {.kind = feasible[tg_chaos_draw(ctx, n)], .at_step = at_step, .at_ms = -1,
                              .random_target = 1, .slot = -1, .delay_ms = -1};
  return add_fault(res, &spec, 1);
}

static void timeline(run_state *r, tg_chaos_ctx *ctx) {
  const tg_chaos_scenario *s = ctx->s;
  tg_chaos_result *res = r->res;
  size_t next = 0;
  tg_chaos_fault *inflight = NULL;
  int64_t deadline = tg_clock_mono_ms() + s->deadline_s * 1000, soak_until = 0, soak_next = -1;
  const char *ended = NULL;
  for (;;) {
    if (stopping(r)) {
      res->interrupted = 1;
      ended = "stopped by a signal";
      break;
    }
    if (tg_clock_mono_ms() > deadline) {
      ended = "the run's deadline passed";
      TG_WARN("deadline_s (%lld) passed; stopping", (long long)s->deadline_s);
      break;
    }
    tg_chaos_watch_poll(ctx->watch);
    if (tg_chaos_watch_gave_up(ctx->watch)) {
      ended = tg_chaos_watch_gave_up(ctx->watch);
      TG_WARN("%s; stopping", ended);
      break;
    }
    if (inflight && tg_chaos_track(ctx, inflight)) {
      finished(ctx, res, inflight);
      inflight = NULL;
      soak_next = tg_chaos_watch_max_step(ctx->watch) + s->soak_every_steps;
    }
    int done = tg_chaos_watch_done_steps(ctx->watch) >= s->training.steps;
    if (done) {
      ended = "training ended first";
      break;
    }
    /* Attached, the run is the faults: the job goes on without us. */
    if (r->o->attach && !inflight && next >= s->n_faults &&
        (!s->has_soak || (soak_until && tg_clock_mono_ms() >= soak_until)))
      break;
    if (!inflight && next < s->n_faults) {
      if (triggered(&s->faults[next], ctx, res->training_started_unix_ms)) {
        tg_chaos_fault *f = add_fault(res, &s->faults[next++], 0);
        if (f) fire(ctx, res, f, &inflight);
      }
    } else if (!inflight && s->has_soak) {
      if (!soak_until) {
        soak_until = tg_clock_mono_ms() + s->soak_ms;
        res->soak_started_unix_ms = tg_clock_unix_ms();
        soak_next = tg_chaos_watch_max_step(ctx->watch) + s->soak_every_steps;
        TG_INFO("soak: a fault every %lld steps for %.1f min", (long long)s->soak_every_steps,
                (double)s->soak_ms / 60000.0);
      }
      if (tg_clock_mono_ms() < soak_until && soak_next < s->training.steps &&
          tg_chaos_watch_max_step(ctx->watch) >= soak_next) {
        tg_chaos_fault *f = soak_fault(ctx, res, soak_next);
        if (f) fire(ctx, res, f, &inflight);
        if (!inflight) soak_next += s->soak_every_steps; /* nothing fired: try again later */
      }
    }
    tg_clock_sleep_ms(POLL_MS);
  }
  if (res->soak_started_unix_ms) {
    int64_t end = res->soak_started_unix_ms + s->soak_ms;
    res->soak_ended_unix_ms = tg_clock_unix_ms() < end ? tg_clock_unix_ms() : end;
  }
  /* One last look before giving up on a fault in flight. */
  tg_chaos_watch_poll(ctx->watch);
  if (inflight && tg_chaos_track(ctx, inflight)) {
    finished(ctx, res, inflight);
    inflight = NULL;
  }
  if (inflight) {
    tg_chaos_abandon(ctx, inflight, ended);
    finished(ctx, res, inflight);
  }
  for (; next < s->n_faults; next++) {
    tg_chaos_fault *f = add_fault(res, &s->faults[next], 0);
    if (!f) break;
    f->state = TG_CHAOS_SKIPPED;
    snprintf(f->note, sizeof f->note, "never triggered: %s", ended);
  }
}

/* ------------------------------------------------------------ the run */

static void keep_logs(run_state *r) {
  const char *to = r->o->keep_logs;
  if (!to) return;
  char logs[320], ref[320], ref_to[1100];
  snprintf(logs, sizeof logs, "%s/logs/.", r->dir);
  snprintf(ref, sizeof ref, "%s/reference/logs/.", r->dir);
  snprintf(ref_to, sizeof ref_to, "%s/reference", to);
  const char *mk[] = {"mkdir", "-p", to, ref_to, NULL};
  const char *cp[] = {"cp", "-r", logs, to, NULL};
  const char *cp_ref[] = {"cp", "-r", ref, ref_to, NULL};
  if (run_command(mk) != 0 || (access(logs, F_OK) == 0 && run_command(cp) != 0)) {
    TG_WARN("cannot copy the logs to %s", to);
    return;
  }
  if (access(ref, F_OK) == 0) run_command(cp_ref);
  /* The parameter files too, for a look at what differed. */
  char path[1100];
  snprintf(path, sizeof path, "%s/chaos.params", to);
  if (access(r->res->params, R_OK) == 0) copy_file(r->res->params, path);
  snprintf(path, sizeof path, "%s/reference.params", to);
  if (access(r->res->reference_params, R_OK) == 0 && strncmp(r->res->reference_params, r->dir, strlen(r->dir)) == 0)
    copy_file(r->res->reference_params, path);
  snprintf(r->res->logs_kept, sizeof r->res->logs_kept, "%s", to);
}

/* Where the job ended up, as its logs tell: the totals' last line. */
static void final_state(tg_chaos_ctx *ctx, tg_chaos_result *res) {
  if (!ctx->watch) return;
  tg_chaos_watch_poll(ctx->watch);
  res->final_step = tg_chaos_watch_max_step(ctx->watch);
  res->done_steps = tg_chaos_watch_done_steps(ctx->watch);
  res->final_generation = tg_chaos_watch_newest_generation(ctx->watch);
  const tg_chaos_generation *g = tg_chaos_watch_generation(ctx->watch, res->final_generation);
  res->final_world = g && g->world_size != UINT32_MAX ? g->world_size : 0;
  const tg_chaos_generation *gens;
  res->generations = tg_chaos_watch_generations(ctx->watch, &gens);
}

/* Attached: the timeline against the running job, then the judgement. */
static int run_attached(run_state *r) {
  tg_chaos_result *res = r->res;
  tg_chaos_ctx ctx = {.s = r->o->scenario, .rng = r->o->scenario->seed};
  snprintf(res->attach, sizeof res->attach, "%s", r->o->attach);
  int ran = 0;
  if (attach_job(r, &ctx) == 0) {
    ran = 1;
    timeline(r, &ctx);
    tg_chaos_match_fault_log(&ctx, res->faults, res->n_faults);
  }
  if (stopping(r)) res->interrupted = 1;
  final_state(&ctx, res);
  tg_chaos_poller_stop(ctx.poller);
  if (ran && !res->interrupted) tg_chaos_check_invariants(&ctx, res, NULL, NULL);
  tg_chaos_cluster_free(ctx.cluster); /* leaves the job running */
  tg_chaos_watch_free(ctx.watch);
  if (r->o->keep_logs) TG_INFO("--keep-logs: attached, the job's logs stay where the job keeps them");
  return 0;
}

static int exit_code(const tg_chaos_result *res) {
  if (res->interrupted) return 130;
  if (res->error[0] || !res->invariants_checked) return 2;
  for (int i = 0; i < TG_CHAOS_INVARIANTS; i++)
    if (!res->invariants[i].pass && !res->invariants[i].not_checked) return 1;
  return 0;
}

int tg_chaos_run(const tg_chaos_run_options *o, tg_chaos_result *res) {
  const tg_chaos_scenario *s = o->scenario;
  memset(res, 0, sizeof *res);
  res->scenario = s;
  snprintf(res->scenario_path, sizeof res->scenario_path, "%s", o->scenario_path);
  res->started_unix_ms = tg_clock_unix_ms();
  if (o->attach) {
    run_state ra = {.o = o, .res = res, .host = "127.0.0.1"};
    run_attached(&ra);
    res->finished_unix_ms = tg_clock_unix_ms();
    return res->exit_code = exit_code(res);
  }
  snprintf(res->job, sizeof res->job, "chaos-%d-%lld", (int)getpid(), (long long)(res->started_unix_ms % 1000000000));
  run_state r = {.o = o, .res = res, .host = "127.0.0.1"};
  tg_chaos_ctx ctx = {.s = s, .rng = s->seed};
  char err[512];
  int ran = 0;

  remove_leftovers();
  /* Short: agents' unix sockets live below it. */
  snprintf(r.dir, sizeof r.dir, "/tmp/tg-chaos-XXXXXX");
  if (!mkdtemp(r.dir)) {
    r.dir[0] = '\0';
    setup_error(&r, "cannot make a directory under /tmp: %s", strerror(errno));
    goto out;
  }
  write_owner(r.dir);
  owner_line(r.dir, "job %s\n", res->job);
  TG_INFO("scenario %s: run directory %s", s->name, r.dir);
  if (s->cluster.namespaces && start_network(&r) != 0) goto out;
  tg_etcd_cluster_opts eo = {.members = s->cluster.etcd_members, .client_host = r.host};
  r.etcd = tg_etcd_cluster_start_opts(&eo, err, sizeof err);
  if (!r.etcd) {
    setup_error(&r, "etcd: %s", err);
    goto out;
  }
  if (run_reference(&r) != 0) goto out;

  snprintf(res->params, sizeof res->params, "%s/chaos.params", r.dir);
  ctx.cluster = new_cluster(&r, res->job, r.dir, s->cluster.agents + s->cluster.spares, s->cluster.agents,
                            s->cluster.coordinators, 1, uses_kind(s, TG_CHAOS_DISK_FULL) ? DISK_FULL_FS_MIB : 0,
                            &s->cluster, res->params, r.net);
  if (!ctx.cluster) goto out;
  ctx.etcd = r.etcd;
  ctx.watch = tg_chaos_watch_new(ctx.cluster);
  ctx.poller = ctx.watch ? tg_chaos_poller_start(tg_chaos_cluster_coordinators(ctx.cluster), STATUS_PERIOD_MS, err,
                                                 sizeof err)
                         : NULL;
  if (!ctx.poller) {
    setup_error(&r, "status poller: %s", ctx.watch ? err : "out of memory");
    goto out;
  }
  TG_INFO("job %s: %d agents x %d slots, %d spare(s), %d coordinator(s); %lld steps", res->job, s->cluster.agents,
          s->cluster.slots, s->cluster.spares, s->cluster.coordinators, (long long)s->training.steps);
  if (start_job(&r, &ctx) != 0) {
    if (stopping(&r)) res->interrupted = 1;
    goto out;
  }
  ran = 1;
  timeline(&r, &ctx);
  tg_chaos_match_fault_log(&ctx, res->faults, res->n_faults);

out:
  if (stopping(&r)) res->interrupted = 1;
  final_state(&ctx, res);
  tg_chaos_poller_stop(ctx.poller);
  tg_chaos_cluster_free(ctx.cluster);
  tg_netns_free(r.net); /* after the processes that ran there */
  if (ran && !res->interrupted)
    tg_chaos_check_invariants(&ctx, res, res->params, res->reference_params);
  tg_chaos_watch_free(ctx.watch);
  tg_etcd_cluster_free(r.etcd);
  if (r.dir[0]) {
    keep_logs(&r);
    const char *rm[] = {"rm", "-rf", r.dir, NULL};
    run_command(rm);
    /* What lived in the run directory is gone now. */
    if (strncmp(res->reference_params, r.dir, strlen(r.dir)) == 0) res->reference_params[0] = '\0';
    res->params[0] = '\0';
  }
  res->finished_unix_ms = tg_clock_unix_ms();
  return res->exit_code = exit_code(res);
}

void tg_chaos_result_free(tg_chaos_result *res) {
  if (!res) return;
  free(res->faults);
  res->faults = NULL;
  res->n_faults = res->cap_faults = 0;
}
