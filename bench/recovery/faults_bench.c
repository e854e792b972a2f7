/* bench/recovery: time from a fault to training resumed, for each kind of
 * fault, on the local cluster tests/train/train_test.c runs: one real
 * etcd, one tg-coordinator, 4 tg-agents with 2 slots each running tg-train
 * (the default tiny model, gloo on CPU), plus a spare agent where the kind
 * needs one. Every round starts a fresh cluster (a job of its own), lets
 * it train to --fault-step, injects the fault and measures, from that
 * instant:
 *   detected   the fault noticed by its detector (detected_unix_ms in
 *              tgctl faults --json), whose kind and culprit (node, rank)
 *              are checked against the fault injected
 *   recorded   the coordinator recorded it (its "fault ..." log line)
 *   new world  the coordinator committed the first generation after the
 *              fault (its "world generation G" log line), and the one
 *              training resumed in (later when a world was superseded)
 *   joined     every rank of the world that resumed logged its "rank R of
 *              N (generation G): resuming at step S" line: it re-joined,
 *              rebuilt its communicator and restored its state
 *   resumed    rank 0 logged a step in that world; every rank took part
 *              in the step's collectives, so each has completed it
 *   caught up  rank 0 completed the step after the newest one completed
 *              before the fault: the steps redone are done again
 * and the steps redone: the newest step completed before the fault minus
 * the step resumed at.
 *
 * Kinds (victims chosen by ring position, which follows registration):
 *   trainer_crash     SIGKILL the trainer of rank 3 (position 1, slot 1)
 *   node_loss_spare   SIGKILL the agent at position 1 and its trainers; a
 *                     spare registered beforehand takes its ranks
 *   node_loss_shrink  the same with no spare: the world shrinks to 6
 *                     ranks; then the agent starts again (same node id,
 *                     its memory kept) and the grow back to 8 ranks is
 *                     measured from that instant ("grow: ..." figures)
 *   hang              SIGSTOP the trainer of rank 3; every HANG fault must
 *                     name rank 3
 *   disk              SIGKILL the agents (and trainers) at positions 1 and
 *                     2: position 2 held the only other copy of position
 *                     1's shards, so the world of 4 ranks resumes from the
 *                     checkpoint persisted every --persist-every steps
 *   goodput           (not in "all") one cluster, no spare, faults on a
 *                     clock: --baseline-s of fault-free training, then
 *                     every --fault-every-s one of trainer_crash, hang,
 *                     node_loss_shrink in turn (each measured as above; a
 *                     lost node starts again once training resumed, if
 *                     more faults follow); goodput = progress over the
 *                     window of --goodput-faults faults x the fault-free
 *                     step time (the median step gap in it) / the window.
 *                     This is
 *                     the Tardigrade half of bench/torchrun (the same
 *                     protocol as bench/torchrun/torchrun_bench.py)
 *
 * --json FILE appends one line per fault measured and per goodput round,
 * for bench/torchrun/report.py.
 *
 * Trainer logs carry no timestamps, so the bench reads them as they grow,
 * every 2 ms; the coordinator's log lines carry wall-clock milliseconds.
 * Every wait has a deadline (--timeout-s). A round that does not recover
 * is reported with the relevant log lines, and the logs are kept. Every
 * process started is stopped on every exit path: the cluster is stopped
 * at the end of each round, at exit (atexit) and on SIGINT/SIGTERM, and
 * tests/harness/proc kills whatever is left (parent-death signal).
 *
 * Usage: bazel run -c opt //bench/recovery:faults -- --rounds 3 [--kinds hang,disk] */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "common/clock/clock.h"
#include "common/config/config.h"
#include "common/log/log.h"
#include "tests/harness/etcd_cluster.h"
#include "tests/harness/proc.h"

#define NODES 4        /* in the world at the start */
#define MAX_AGENTS 5   /* and a spare */
#define SLOTS 2
#define RANKS (NODES * SLOTS)
#define MAX_GENS 64
#define MAX_ROUNDS 100
#define MAX_FAULTS 64
#define POLL_MS 2
#define GOODPUT_STEPS 1000000 /* tg-train --steps of the goodput kind: it stops on a clock */

/* ------------------------------------------------------------ options */

static char kinds_arg[256] = "all";
static int64_t rounds = 3, steps = 3000, fault_step = 50, timeout_s = 180;
static int64_t heartbeat_interval_ms = 100, heartbeat_timeout_ms = 1000, hang_floor_ms = 2000;
static int64_t last_call_ms = 300, persist_every = 20;
static int64_t fault_every_s = 90, goodput_faults = 3, baseline_s = 15;
static int keep_logs;
static char json_path[512];
static FILE *json_out; /* --json: one line per fault measured and per goodput run */
static char agent_log_level[16] = "info";

/* ------------------------------------------------------------ kinds */

typedef enum { TRAINER_CRASH, NODE_LOSS_SPARE, NODE_LOSS_SHRINK, HANG, DISK, GOODPUT, N_KINDS } kind_id;

typedef struct {
  const char *name;
  const char *fault;    /* the kind tgctl names for the fault injected */
  int min_nodes;        /* the coordinator's --min-nodes */
  int spare;            /* a fifth agent registered before the fault */
  int persist;          /* --ckpt-dir and --persist-every */
  int nodes_lost;       /* 0: one trainer; else agents at positions 1.. */
  int size_after;       /* ranks in the world that resumes */
  const char *what;
} kind_spec;

static const kind_spec kinds[N_KINDS] = {
    {"trainer_crash", "TRAINER_EXIT", 4, 0, 0, 0, 8,
     "SIGKILL the trainer of rank 3 (ring position 1, slot 1); its agent restarts it"},
    {"node_loss_spare", "NODE_LOST", 4, 1, 0, 1, 8,
     "SIGKILL the agent at ring position 1 and its 2 trainers; the spare takes ranks 2-3"},
    {"node_loss_shrink", "NODE_LOST", 3, 0, 0, 1, 6,
     "SIGKILL the agent at ring position 1 and its 2 trainers, no spare: 8 -> 6 ranks; "
     "then start that agent again: 6 -> 8 ranks"},
    {"hang", "HANG", 4, 0, 0, 0, 8, "SIGSTOP the trainer of rank 3 (ring position 1, slot 1)"},
    {"disk", "NODE_LOST", 2, 0, 1, 2, 4,
     "SIGKILL the agents (and trainers) at ring positions 1 and 2: no memory copy of ranks 2-3's "
     "shards is left; resume from the persisted checkpoint"},
    {"goodput", "-", 3, 0, 0, 0, 8,
     "one cluster, no spare: after --baseline-s of fault-free training, a fault every --fault-every-s "
     "(trainer_crash, hang, node_loss_shrink in turn; a lost node is started again once training resumed, "
     "when more faults follow), each measured as in its own kind; goodput over the faults' window"},
};

/* ------------------------------------------------------------ figures */

typedef enum {
  F_DETECTED, F_RECORDED, F_NEW_WORLD, F_FINAL_WORLD, F_JOINED, F_RESUMED, F_CAUGHT_UP,
  F_LAST_STEP, F_RESUME_STEP, F_STEPS_LOST, F_WORLD_BEFORE, F_WORLD_AFTER, F_GENERATIONS,
  F_GROW_REGISTERED, F_GROW_NEW_WORLD, F_GROW_JOINED, F_GROW_RESUMED, F_GROW_STEPS_LOST, F_GROW_WORLD,
  F_IDEAL_STEP, F_PROGRESS, F_GOODPUT,
  N_FIGS
} fig_id;

static const struct {
  const char *name, *unit;
} figs[N_FIGS] = {
    {"detected: fault noticed (detected_unix_ms)", "ms"},
    {"recorded: in the coordinator's fault log", "ms"},
    {"new world: next generation committed", "ms"},
    {"the generation that resumed committed", "ms"},
    {"joined: every rank re-joined and restored", "ms"},
    {"resumed: a step completed in the new world", "ms"},
    {"caught up: the step after the last one before the fault completed", "ms"},
    {"last step completed before the fault", ""},
    {"step resumed at", ""},
    {"steps lost (redone)", ""},
    {"world size before", ""},
    {"world size after", ""},
    {"generations until the one that resumed", ""},
    {"grow: node registered again", "ms"},
    {"grow: next generation committed", "ms"},
    {"grow: every rank joined and restored", "ms"},
    {"grow: a step completed in the grown world", "ms"},
    {"grow: steps lost (redone)", ""},
    {"grow: world size after", ""},
    {"goodput: fault-free step time (median gap in the window)", "us"},
    {"goodput: steps of progress over the faults' window", ""},
    {"goodput: progress / fault-free progress in that time", "%"},
};

typedef struct {
  int64_t v[N_FIGS][MAX_ROUNDS];
  int n[N_FIGS];
  int ok, failed, culprit_wrong;
  int64_t wall_ms;
} kind_result;

static void add_fig(kind_result *r, fig_id f, int64_t v) {
  if (r->n[f] < MAX_ROUNDS) r->v[f][r->n[f]++] = v;
}

/* ------------------------------------------------------------ the cluster */

/* What the logs told about one generation. */
typedef struct {
  uint64_t generation;
  int world_size;         /* from the join lines; 0: none seen */
  uint64_t joined_mask;   /* ranks that logged their join line */
  int64_t joined_ms;      /* mono ms when the last of them did */
  uint64_t resume_step;   /* from the join lines */
  int resume_differs;     /* the ranks named different steps */
  int from_disk;          /* join lines saying "from the persisted checkpoint" */
  uint64_t last_step;     /* newest step rank 0 logged in it */
  int64_t first_step_ms;  /* mono ms of its first step line; 0: none */
  int64_t formed_unix_ms; /* the coordinator's log; 0: not seen */
  char reason[96];
} gen_info;

/* A trainer log read as it grows. */
typedef struct {
  int fd;
  char buf[2048];
  size_t len;          /* bytes of a line not finished yet */
  uint64_t generation; /* of its newest join line */
  int rank;
} trainer_log;

typedef struct {
  char id[32], kind[48], node[64], detail[256];
  int rank;
  int64_t detected_unix_ms, recorded_unix_ms;
} fault;

typedef struct {
  const kind_spec *spec;
  char job[48], listen[64], ckpt_dir[700], coordinator_log[700];
  tg_proc *coordinator, *agents[MAX_AGENTS];
  trainer_log logs[MAX_AGENTS][SLOTS];
  gen_info gens[MAX_GENS];
  int n_gens;
  int done;      /* a trainer logged "done after": training ended */
  uint64_t latest_step;  /* of the newest step line read (rank 0's), and when */
  int64_t latest_step_ms;
  int64_t *step_ms;      /* when each step line was read, for goodput */
  size_t n_step_ms, cap_step_ms;
  int killed[MAX_AGENTS]; /* agents the bench killed on purpose */
  pid_t stopped; /* a trainer SIGSTOPped by the bench, and its agent */
  pid_t stopped_parent;
  char failure[1024];
} cluster;

static tg_etcd_cluster *etcd;
static char dir[512], sockdir[64];
static cluster *current; /* stopped at exit */
static int keep_dir;     /* a round failed: keep the logs */
static volatile sig_atomic_t interrupted;

static void on_signal(int sig) {
  (void)sig;
  interrupted = 1;
}

static void node_id(int node, char *out, size_t len) { snprintf(out, len, "n%d", node); }

static void slot_log_path(const cluster *c, int node, int slot, char *out, size_t len) {
  snprintf(out, len, "%s/%s-n%d/slot-%d.log", dir, c->job, node, slot);
}

static void agent_log_path(const cluster *c, int node, char *out, size_t len) {
  snprintf(out, len, "%s/%s-n%d-agent.log", dir, c->job, node);
}

static gen_info *gen_get(cluster *c, uint64_t generation) {
  for (int i = 0; i < c->n_gens; i++)
    if (c->gens[i].generation == generation) return &c->gens[i];
  if (c->n_gens == MAX_GENS) return NULL;
  gen_info *g = &c->gens[c->n_gens++];
  memset(g, 0, sizeof *g);
  g->generation = generation;
  return g;
}

static int joined_all(const gen_info *g) {
  return g->world_size > 0 && __builtin_popcountll(g->joined_mask) == g->world_size;
}

/* One line of a trainer log: tg-train's join line, rank 0's step line,
 * the last line. */
static void parse_trainer_line(cluster *c, trainer_log *l, const char *line, int64_t now) {
  unsigned rank, size;
  unsigned long long gen, step;
  char verb[16];
  if (sscanf(line, "rank %u of %u (generation %llu): %15s at step %llu", &rank, &size, &gen, verb, &step) == 5) {
    gen_info *g = gen_get(c, gen);
    l->generation = gen;
    l->rank = (int)rank;
    if (!g || rank >= 64) return;
    if (!g->world_size) g->world_size = (int)size;
    if (!g->joined_mask) g->resume_step = step;
    else if (g->resume_step != step) g->resume_differs = 1;
    g->joined_mask |= 1ull << rank;
    if (strstr(line, "from the persisted checkpoint")) g->from_disk++;
    if (!g->joined_ms && joined_all(g)) g->joined_ms = now;
  } else if (sscanf(line, "step %llu loss", &step) == 1) {
    gen_info *g = gen_get(c, l->generation);
    if (!g) return;
    if (!g->first_step_ms) g->first_step_ms = now;
    if (step > g->last_step) g->last_step = step;
    c->latest_step = step;
    c->latest_step_ms = now;
    if (c->n_step_ms == c->cap_step_ms) {
      size_t cap = c->cap_step_ms ? 2 * c->cap_step_ms : 4096;
      int64_t *grown = realloc(c->step_ms, cap * sizeof *grown);
      if (!grown) return; /* goodput then sees fewer steps: it says how many */
      c->step_ms = grown;
      c->cap_step_ms = cap;
    }
    c->step_ms[c->n_step_ms++] = now;
  } else if (strncmp(line, "rank ", 5) == 0 && strstr(line, " done after ")) {
    c->done = 1;
  }
}

/* Reads what the trainers wrote since the last call. */
static void poll_logs(cluster *c) {
  int64_t now = tg_clock_mono_ms();
  for (int node = 0; node < MAX_AGENTS; node++)
    for (int s = 0; s < SLOTS; s++) {
      trainer_log *l = &c->logs[node][s];
      if (l->fd < 0) {
        char path[800];
        slot_log_path(c, node, s, path, sizeof path);
        l->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (l->fd < 0) continue;
      }
      ssize_t got;
      while ((got = read(l->fd, l->buf + l->len, sizeof l->buf - 1 - l->len)) > 0) {
        l->len += (size_t)got;
        char *start = l->buf, *nl;
        while ((nl = memchr(start, '\n', (size_t)(l->buf + l->len - start)))) {
          *nl = '\0';
          parse_trainer_line(c, l, start, now);
          start = nl + 1;
        }
        size_t rest = (size_t)(l->buf + l->len - start);
        if (rest == sizeof l->buf - 1) rest = 0; /* a line this long is none of ours */
        memmove(l->buf, start, rest);
        l->len = rest;
      }
    }
}

/* 2026-11-22T08:30:01.123Z at the start of a log line -> unix ms; 0 if not. */
static int64_t log_stamp_unix_ms(const char *line) {
  struct tm tm = {0};
  int ms;
  if (sscanf(line, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
             &tm.tm_sec, &ms) != 7)
    return 0;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return (int64_t)timegm(&tm) * 1000 + ms;
}

/* Reads the coordinator's log: when each generation was committed, when
 * each fault was recorded, and when `node` (if any) first registered at
 * or after since_unix_ms. */
static void read_coordinator_log(cluster *c, fault *faults, int n_faults, const char *node, int64_t since_unix_ms,
                                 int64_t *registered_unix_ms) {
  FILE *f = fopen(c->coordinator_log, "r");
  char line[2048], pattern[96];
  snprintf(pattern, sizeof pattern, " node %s registered", node ? node : "");
  while (f && fgets(line, sizeof line, f)) {
    int64_t at = log_stamp_unix_ms(line);
    const char *p;
    unsigned long long gen;
    int size;
    char id[32];
    if (!at) continue;
    if ((p = strstr(line, " world generation ")) && sscanf(p, " world generation %llu: %d ranks", &gen, &size) == 2) {
      gen_info *g = gen_get(c, gen);
      const char *open_paren = strrchr(p, '(');
      if (g && !g->formed_unix_ms) {
        g->formed_unix_ms = at;
        if (open_paren) snprintf(g->reason, sizeof g->reason, "%.*s", (int)strcspn(open_paren + 1, ")\n"),
                                 open_paren + 1);
      }
    } else if ((p = strstr(line, " fault ")) && sscanf(p, " fault %31[0-9]:", id) == 1) {
      for (int i = 0; i < n_faults; i++)
        if (strcmp(faults[i].id, id) == 0 && !faults[i].recorded_unix_ms) faults[i].recorded_unix_ms = at;
    } else if (node && registered_unix_ms && !*registered_unix_ms && at >= since_unix_ms && strstr(line, pattern)) {
      *registered_unix_ms = at;
    }
  }
  if (f) fclose(f);
}

/* tgctl --json COMMAND against the cluster's coordinator; NULL if it failed. */
static cJSON *tgctl_json(const cluster *c, const char *command) {
  static char out[1 << 18];
  const char *argv[] = {"coordinator/tgctl", "--coordinator", c->listen, "--json", command, NULL};
  int status;
  if (tg_proc_run(argv, NULL, 10000, out, sizeof out, &status) != 0 || status != 0) return NULL;
  return cJSON_Parse(out);
}

static const char *json_string(const cJSON *o, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  return cJSON_IsString(v) ? v->valuestring : "";
}

static double json_number(const cJSON *o, const char *name) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* The faults recorded with an id above after_id (ids are zero-padded
 * sequence numbers), oldest first; -1 if tgctl failed. */
static int list_faults(const cluster *c, const char *after_id, fault *out, int max) {
  cJSON *j = tgctl_json(c, "faults");
  if (!cJSON_IsArray(j)) {
    cJSON_Delete(j);
    return -1;
  }
  int n = 0;
  for (int i = cJSON_GetArraySize(j) - 1; i >= 0 && n < max; i--) {
    const cJSON *f = cJSON_GetArrayItem(j, i);
    if (strcmp(json_string(f, "fault_id"), after_id) <= 0) continue;
    fault *x = &out[n++];
    memset(x, 0, sizeof *x);
    snprintf(x->id, sizeof x->id, "%s", json_string(f, "fault_id"));
    snprintf(x->kind, sizeof x->kind, "%s", json_string(f, "kind"));
    snprintf(x->node, sizeof x->node, "%s", json_string(f, "node_id"));
    snprintf(x->detail, sizeof x->detail, "%s", json_string(f, "detail"));
    x->rank = (int)json_number(f, "rank");
    x->detected_unix_ms = (int64_t)json_number(f, "detected_unix_ms");
  }
  cJSON_Delete(j);
  return n;
}

static void start_coordinator(cluster *c, char *err, size_t errlen) {
  char min[16], interval[24], timeout[24], last_call[24];
  snprintf(c->listen, sizeof c->listen, "127.0.0.1:%d", tg_proc_free_port());
  snprintf(min, sizeof min, "%d", c->spec->min_nodes);
  snprintf(interval, sizeof interval, "%" PRId64, heartbeat_interval_ms);
  snprintf(timeout, sizeof timeout, "%" PRId64, heartbeat_timeout_ms);
  snprintf(last_call, sizeof last_call, "%" PRId64, last_call_ms);
  const char *argv[] = {"coordinator/tg-coordinator", "--job", c->job, "--listen", c->listen, "--http", "off",
                        "--etcd", tg_etcd_cluster_endpoints(etcd), "--min-nodes", min, "--max-nodes", "4", "--slots", "2",
                        "--last-call-ms", last_call, "--heartbeat-interval-ms", interval,
                        "--heartbeat-timeout-ms", timeout, "--quarantine-faults", "0", "--log-level", "info",
                        NULL};
  snprintf(c->coordinator_log, sizeof c->coordinator_log, "%s/%s-coordinator.log", dir, c->job);
  c->coordinator = tg_proc_start(argv, c->coordinator_log, err, errlen);
}

/* Starts (or starts again, same node id and memory) agent `node`. */
static int start_agent(cluster *c, int node, char *err, size_t errlen) {
  char id[16], logs[800], sock[128], log[800], floor_ms[24], every[24], steps_text[24];
  node_id(node, id, sizeof id);
  snprintf(logs, sizeof logs, "%s/%s-n%d", dir, c->job, node);
  mkdir(logs, 0755);
  snprintf(sock, sizeof sock, "%s/%s-n%d.sock", sockdir, c->job, node);
  snprintf(floor_ms, sizeof floor_ms, "%" PRId64, hang_floor_ms);
  snprintf(every, sizeof every, "%" PRId64, persist_every);
  snprintf(steps_text, sizeof steps_text, "%" PRId64, c->spec == &kinds[GOODPUT] ? GOODPUT_STEPS : steps);
  const char *argv[32] = {"agent/tg-agent", "--node", id, "--job", c->job, "--coordinators", c->listen,
                          "--socket", sock, "--slots", "2", "--log-dir", logs, "--ckpt-mib", "16",
                          "--hang-floor-ms", floor_ms, "--log-level", agent_log_level};
  int n = 19;
  if (c->spec->persist) {
    argv[n++] = "--ckpt-dir";
    argv[n++] = c->ckpt_dir;
    argv[n++] = "--persist-every";
    argv[n++] = every;
  }
  argv[n++] = "--";
  argv[n++] = "trainer/tg-train";
  argv[n++] = "--steps";
  argv[n++] = steps_text;
  argv[n] = NULL;
  agent_log_path(c, node, log, sizeof log);
  tg_proc_free(c->agents[node]);
  c->agents[node] = tg_proc_start(argv, log, err, errlen);
  return c->agents[node] ? 0 : -1;
}

static void cleanup(void);

static cluster *cluster_new(const kind_spec *k, int round, char *err, size_t errlen) {
  static int atexit_registered;
  cluster *c = calloc(1, sizeof *c);
  if (!c) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  current = c;
  c->spec = k;
  for (int i = 0; i < MAX_AGENTS; i++)
    for (int s = 0; s < SLOTS; s++) {
      c->logs[i][s].fd = -1;
      c->logs[i][s].rank = -1;
    }
  /* Unique: shared memory outlives a killed agent. */
  snprintf(c->job, sizeof c->job, "fb-%d-%s-%d", (int)getpid(), k->name, round);
  if (k->persist) {
    snprintf(c->ckpt_dir, sizeof c->ckpt_dir, "%s/%s-ckpt", dir, c->job);
    mkdir(c->ckpt_dir, 0755);
  }
  start_coordinator(c, err, errlen);
  if (!c->coordinator) return NULL;
  /* After tg_proc's own atexit hook, so that this one runs first. */
  if (!atexit_registered++) atexit(cleanup);
  for (int i = 0; i < NODES; i++)
    if (start_agent(c, i, err, errlen) != 0) return NULL;
  return c;
}

/* The parent of pid, from /proc; 0 if gone. */
static pid_t parent_of(pid_t pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *p = strrchr(buf, ')'); /* the name may hold spaces */
  int ppid = 0;
  if (!p || sscanf(p + 1, " %*c %d", &ppid) != 1) return 0;
  return (pid_t)ppid;
}

static void rm_rf(const char *path) {
  const char *rm[] = {"/bin/rm", "-rf", path, NULL};
  int status;
  tg_proc_run(rm, NULL, 30000, NULL, 0, &status);
}

/* Stops every process of the cluster and removes what it left. */
static void cluster_free(cluster *c) {
  if (!c) return;
  /* A trainer the bench stopped dies at once, not after its agent's
   * SIGTERM grace; only if it is still that agent's child. */
  if (c->stopped > 0 && parent_of(c->stopped) == c->stopped_parent) kill(c->stopped, SIGKILL);
  for (int i = 0; i < MAX_AGENTS; i++)
    if (c->agents[i]) tg_proc_signal(c->agents[i], SIGTERM); /* all drain at once */
  for (int i = 0; i < MAX_AGENTS; i++) {
    if (!c->agents[i]) continue;
    tg_proc_stop(c->agents[i], 5000);
    tg_proc_free(c->agents[i]);
  }
  if (c->coordinator) {
    tg_proc_stop(c->coordinator, 5000);
    tg_proc_free(c->coordinator);
  }
  for (int i = 0; i < MAX_AGENTS; i++) {
    char shm[128];
    snprintf(shm, sizeof shm, "/tg-ckpt-%s-n%d", c->job, i);
    shm_unlink(shm);
    snprintf(shm, sizeof shm, "/tg-progress-%s-n%d", c->job, i);
    shm_unlink(shm);
    for (int s = 0; s < SLOTS; s++)
      if (c->logs[i][s].fd >= 0) close(c->logs[i][s].fd);
  }
  if (c->ckpt_dir[0] && !keep_dir && !keep_logs) rm_rf(c->ckpt_dir);
  if (current == c) current = NULL;
  free(c->step_ms);
  free(c);
}

static void cleanup(void) {
  cluster_free(current);
  tg_etcd_cluster_free(etcd);
  etcd = NULL;
  if (sockdir[0]) rm_rf(sockdir);
  sockdir[0] = '\0';
  if (dir[0] && !keep_dir && !keep_logs) rm_rf(dir);
  else if (dir[0]) fprintf(stderr, "faults_bench: logs kept under %s\n", dir);
  dir[0] = '\0';
}

/* ------------------------------------------------------------ waiting */

typedef int (*ready_fn)(cluster *c, void *arg);

/* 0 while the coordinator and every agent not killed on purpose run;
 * else -1 with c->failure set. */
static int daemons_running(cluster *c) {
  char how[64];
  if (c->coordinator && !tg_proc_running(c->coordinator)) {
    snprintf(c->failure, sizeof c->failure, "tg-coordinator %s (see %s)",
             tg_proc_describe_exit(c->coordinator, how, sizeof how), c->coordinator_log);
    return -1;
  }
  for (int i = 0; i < MAX_AGENTS; i++)
    if (c->agents[i] && !c->killed[i] && !tg_proc_running(c->agents[i])) {
      snprintf(c->failure, sizeof c->failure, "tg-agent n%d %s (see %s)", i,
               tg_proc_describe_exit(c->agents[i], how, sizeof how), tg_proc_log_path(c->agents[i]));
      return -1;
    }
  return 0;
}

/* Reads the logs until ready() holds; -1 with c->failure set past the
 * deadline, when training ended, or on SIGINT/SIGTERM. */
static int wait_until(cluster *c, ready_fn ready, void *arg, int64_t deadline_ms, const char *what) {
  for (;;) {
    poll_logs(c);
    if (ready(c, arg)) return 0;
    if (daemons_running(c) != 0) return -1;
    if (interrupted) {
      snprintf(c->failure, sizeof c->failure, "interrupted while waiting for %s", what);
      return -1;
    }
    if (c->done) {
      snprintf(c->failure, sizeof c->failure, "training ended (--steps %" PRId64 ") before %s", steps, what);
      return -1;
    }
    if (tg_clock_mono_ms() > deadline_ms) {
      snprintf(c->failure, sizeof c->failure, "no %s within %" PRId64 " s", what, timeout_s);
      return -1;
    }
    tg_clock_sleep_ms(POLL_MS);
  }
}

static gen_info *newest_gen(cluster *c) {
  gen_info *best = NULL;
  for (int i = 0; i < c->n_gens; i++)
    if (c->gens[i].world_size && (!best || c->gens[i].generation > best->generation)) best = &c->gens[i];
  return best;
}

typedef struct {
  int world_size;
  uint64_t step;
} training_arg;

/* The newest world has world_size ranks, all joined, and rank 0 logged step. */
static int training_at(cluster *c, void *arg) {
  const training_arg *a = arg;
  const gen_info *g = newest_gen(c);
  return g && g->world_size == a->world_size && joined_all(g) && g->first_step_ms && g->last_step >= a->step;
}

typedef struct {
  uint64_t after; /* generation */
  int world_size;
} resumed_arg;

/* The first generation after a->after, of a->world_size ranks, in which
 * every rank joined and a step completed. */
static gen_info *resumed_gen(cluster *c, const resumed_arg *a) {
  gen_info *best = NULL;
  for (int i = 0; i < c->n_gens; i++) {
    gen_info *g = &c->gens[i];
    if (g->generation <= a->after || g->world_size != a->world_size || !joined_all(g) || !g->first_step_ms) continue;
    if (!best || g->generation < best->generation) best = g;
  }
  return best;
}

static int resumed(cluster *c, void *arg) { return resumed_gen(c, arg) != NULL; }

typedef struct {
  uint64_t from; /* generation */
  uint64_t step;
  int64_t at_ms; /* set when seen */
} caught_up_arg;

/* Rank 0 completed a step past a->step in generation a->from or later. */
static int caught_up(cluster *c, void *arg) {
  caught_up_arg *a = arg;
  for (int i = 0; i < c->n_gens && !a->at_ms; i++)
    if (c->gens[i].generation >= a->from && c->gens[i].last_step > a->step) a->at_ms = tg_clock_mono_ms();
  return a->at_ms != 0;
}

/* The first generation after `after` that the coordinator committed (from its log). */
static const gen_info *first_formed_after(const cluster *c, uint64_t after) {
  const gen_info *best = NULL;
  for (int i = 0; i < c->n_gens; i++) {
    const gen_info *g = &c->gens[i];
    if (g->generation > after && g->formed_unix_ms && (!best || g->generation < best->generation)) best = g;
  }
  return best;
}

/* The newest step completed in generations from..to-1. */
static uint64_t last_step_between(const cluster *c, uint64_t from, uint64_t to) {
  uint64_t last = 0;
  for (int i = 0; i < c->n_gens; i++)
    if (c->gens[i].generation >= from && c->gens[i].generation < to && c->gens[i].last_step > last)
      last = c->gens[i].last_step;
  return last;
}

/* The node index at each ring position of generation gen, from the ranks
 * the trainers logged (rank = position * 2 + slot); -1 if not found. */
static int positions(cluster *c, uint64_t gen, int at[MAX_AGENTS]) {
  for (int p = 0; p < MAX_AGENTS; p++) at[p] = -1;
  for (int node = 0; node < MAX_AGENTS; node++) {
    const trainer_log *l = &c->logs[node][0];
    if (l->generation == gen && l->rank >= 0 && l->rank / SLOTS < MAX_AGENTS) at[l->rank / SLOTS] = node;
  }
  for (int p = 0; p < NODES; p++)
    if (at[p] < 0) return -1;
  return 0;
}

/* Waits (reading the logs meanwhile) until the coordinator counts a spare. */
static int wait_spare(cluster *c, int64_t deadline_ms) {
  while (tg_clock_mono_ms() < deadline_ms && !interrupted) {
    poll_logs(c);
    cJSON *j = tgctl_json(c, "status");
    int spares = (int)json_number(j, "nodes_spare");
    cJSON_Delete(j);
    if (spares >= 1) return 0;
    tg_clock_sleep_ms(100);
  }
  snprintf(c->failure, sizeof c->failure, "the fifth agent was not counted as a spare within %" PRId64 " s",
           timeout_s);
  return -1;
}

/* The newest fault id recorded so far ("" if none); tgctl lists the
 * newest first. */
static int newest_fault_id(const cluster *c, char *out, size_t len) {
  cJSON *j = tgctl_json(c, "faults");
  if (!cJSON_IsArray(j)) {
    cJSON_Delete(j);
    return -1;
  }
  snprintf(out, len, "%s", cJSON_GetArraySize(j) ? json_string(cJSON_GetArrayItem(j, 0), "fault_id") : "");
  cJSON_Delete(j);
  return 0;
}

/* ------------------------------------------------------------ --json */

/* Writes o as one line of --json, with the system named; frees o. */
static void json_line(cJSON *o) {
  cJSON_AddStringToObject(o, "system", "tardigrade");
  char *text = json_out ? cJSON_PrintUnformatted(o) : NULL;
  if (text) {
    fprintf(json_out, "%s\n", text);
    fflush(json_out);
  }
  cJSON_free(text);
  cJSON_Delete(o);
}

static void json_number_if(cJSON *o, const char *name, int64_t v) {
  if (v >= 0) cJSON_AddNumberToObject(o, name, (double)v);
}

/* One fault measured: times in ms from the injection (-1: not seen). */
typedef struct {
  int recovered;
  int64_t detected_ms, resumed_ms, last_step, resume_step;
  int size_before, size_after;
} fault_line;

static void json_fault(const cluster *c, const kind_spec *k, int round, const fault_line *f) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "kind", k->name);
  cJSON_AddStringToObject(o, "run", c->spec == &kinds[GOODPUT] ? "timeline" : "fresh");
  cJSON_AddNumberToObject(o, "round", round);
  cJSON_AddNumberToObject(o, "hang_floor_ms", (double)hang_floor_ms);
  cJSON_AddNumberToObject(o, "heartbeat_timeout_ms", (double)heartbeat_timeout_ms);
  cJSON_AddBoolToObject(o, "recovered", f->recovered);
  json_number_if(o, "detected_ms", f->detected_ms);
  json_number_if(o, "resumed_ms", f->resumed_ms);
  json_number_if(o, "last_step", f->last_step);
  json_number_if(o, "resume_step", f->resume_step);
  if (f->recovered) cJSON_AddNumberToObject(o, "steps_lost", (double)(f->last_step - f->resume_step));
  json_number_if(o, "world_before", f->size_before);
  json_number_if(o, "world_after", f->size_after);
  json_line(o);
}

/* ------------------------------------------------------------ one round */

typedef struct {
  int nodes[2];   /* node indices of the culprits expected */
  int n_nodes;
  int rank;       /* the rank expected, -1 for a node */
} culprit;

/* Checks the faults recorded after the injection against the culprit:
 * sets *first (the fault of the expected kind naming it; for two lost
 * nodes, the later of the two) and returns the number of faults of the
 * expected kind that name someone else. */
static int check_culprit(const kind_spec *k, const culprit *who, const fault *faults, int n, const fault **first) {
  int wrong = 0, named[2] = {0, 0};
  *first = NULL;
  for (int i = 0; i < n; i++) {
    const fault *f = &faults[i];
    if (strcmp(f->kind, k->fault) != 0) continue;
    int match = -1;
    for (int j = 0; j < who->n_nodes; j++) {
      char id[16];
      node_id(who->nodes[j], id, sizeof id);
      if (strcmp(f->node, id) == 0 && (who->rank < 0 || f->rank == who->rank)) match = j;
    }
    if (match < 0) {
      wrong++;
      continue;
    }
    if (named[match]) continue;
    named[match] = 1;
    if (!*first || f->detected_unix_ms > (*first)->detected_unix_ms) *first = f;
  }
  for (int j = 0; j < who->n_nodes; j++)
    if (!named[j]) *first = NULL;
  return wrong;
}

static void print_faults(const fault *faults, int n, int64_t t0_unix) {
  for (int i = 0; i < n; i++)
    printf("    fault %s %s on %s rank %d: detected +%" PRId64 " ms, recorded +%" PRId64 " ms: %s\n", faults[i].id,
           faults[i].kind, faults[i].node, faults[i].rank, faults[i].detected_unix_ms - t0_unix,
           faults[i].recorded_unix_ms ? faults[i].recorded_unix_ms - t0_unix : -1, faults[i].detail);
}

/* What the bench saw, for a failed round. */
static void report_failure(cluster *c, const char *kind, int round) {
  keep_dir = 1;
  fflush(stdout);
  fprintf(stderr, "\nfaults_bench: %s round %d FAILED: %s\n", kind, round, c->failure);
  fprintf(stderr, "faults_bench: logs of job %s kept under %s\n", c->job, dir);
  read_coordinator_log(c, NULL, 0, NULL, 0, NULL);
  for (int i = 0; i < c->n_gens; i++) {
    const gen_info *g = &c->gens[i];
    fprintf(stderr,
            "  generation %" PRIu64 ": %d ranks, %d joined, resume step %" PRIu64 ", last step %" PRIu64
            ", committed %s (%s)\n",
            g->generation, g->world_size, __builtin_popcountll(g->joined_mask), g->resume_step, g->last_step,
            g->formed_unix_ms ? "yes" : "not seen", g->reason);
  }
  fault faults[MAX_FAULTS];
  int n = list_faults(c, "", faults, MAX_FAULTS);
  for (int i = 0; i < n; i++)
    fprintf(stderr, "  fault %s %s on %s rank %d: %s\n", faults[i].id, faults[i].kind, faults[i].node, faults[i].rank,
            faults[i].detail);
  tg_proc_dump_file(c->coordinator_log, 4000);
  for (int i = 0; i < MAX_AGENTS; i++) {
    char path[800];
    if (!c->agents[i]) continue;
    agent_log_path(c, i, path, sizeof path);
    tg_proc_dump_file(path, 1500);
    for (int s = 0; s < SLOTS; s++) {
      slot_log_path(c, i, s, path, sizeof path);
      tg_proc_dump_file(path, 800);
    }
  }
}

/* Lets the world train a few steps after gen resumed, so that the next
 * measurement does not overlap this one. */
static int train_on(cluster *c, const gen_info *g, uint64_t more, int64_t deadline_ms) {
  training_arg a = {.world_size = g->world_size, .step = g->last_step + more};
  return wait_until(c, training_at, &a, deadline_ms, "steady training after the recovery");
}

/* The grow back of node_loss_shrink: the lost agent starts again. */
static int grow_back(cluster *c, int node, const gen_info *shrunk, kind_result *res, char *line, size_t len) {
  char err[256], id[16];
  uint64_t g_shrunk = shrunk->generation;
  node_id(node, id, sizeof id);
  if (train_on(c, shrunk, 5, tg_clock_mono_ms() + timeout_s * 1000) != 0) return -1;
  int64_t t1 = tg_clock_mono_ms(), t1_unix = tg_clock_unix_ms();
  if (start_agent(c, node, err, sizeof err) != 0) {
    snprintf(c->failure, sizeof c->failure, "agent %s: %s", id, err);
    return -1;
  }
  c->killed[node] = 0;
  resumed_arg r = {.after = g_shrunk, .world_size = RANKS};
  if (wait_until(c, resumed, &r, t1 + timeout_s * 1000, "world of 8 ranks training after the node returned") != 0)
    return -1;
  poll_logs(c);
  gen_info *g = resumed_gen(c, &r);
  int64_t registered = 0;
  read_coordinator_log(c, NULL, 0, id, t1_unix, &registered);
  const gen_info *formed = first_formed_after(c, g_shrunk);
  uint64_t last = last_step_between(c, g_shrunk, g->generation);
  if (registered) add_fig(res, F_GROW_REGISTERED, registered - t1_unix);
  if (formed) add_fig(res, F_GROW_NEW_WORLD, formed->formed_unix_ms - t1_unix);
  add_fig(res, F_GROW_JOINED, g->joined_ms - t1);
  add_fig(res, F_GROW_RESUMED, g->first_step_ms - t1);
  add_fig(res, F_GROW_STEPS_LOST, (int64_t)last - (int64_t)g->resume_step);
  add_fig(res, F_GROW_WORLD, g->world_size);
  snprintf(line, len,
           "    grow back: %s started again: registered %" PRId64 " ms, new world %" PRId64 " ms, joined %" PRId64
           " ms, resumed %" PRId64 " ms; generation %" PRIu64 " -> %" PRIu64 ", %d -> %d ranks, step %" PRIu64
           " -> resumed at %" PRIu64 "%s\n",
           id, registered ? registered - t1_unix : -1, formed ? formed->formed_unix_ms - t1_unix : -1,
           g->joined_ms - t1, g->first_step_ms - t1, g_shrunk, g->generation, shrunk->world_size, g->world_size,
           last, g->resume_step, g->resume_differs ? " (ranks named different resume steps!)" : "");
  return 0;
}

/* Injects fault k into the running cluster c and measures it (see the
 * file's header), adding the figures to res and one JSON line to --json;
 * -1 with c->failure set when training did not resume or catch up. */
static int inject_and_measure(cluster *c, const kind_spec *k, int round, kind_result *res, int *victim,
                              gen_info **resumed_in) {
  /* The victims, by ring position. */
  gen_info *before = newest_gen(c);
  uint64_t g_before = before->generation;
  int at[MAX_AGENTS];
  if (positions(c, g_before, at) != 0) {
    snprintf(c->failure, sizeof c->failure, "cannot tell the ring positions from the trainers' logs");
    return -1;
  }
  culprit who = {.nodes = {at[1], at[2]}, .n_nodes = k->nodes_lost ? k->nodes_lost : 1, .rank = -1};
  *victim = at[1];
  pid_t pids[2][SLOTS] = {{0}};
  for (int j = 0; j < who.n_nodes; j++)
    for (int s = 0; s < SLOTS; s++) {
      char entry[32];
      snprintf(entry, sizeof entry, "TG_SLOT=%d", s);
      pids[j][s] = tg_proc_child_with_env(tg_proc_pid(c->agents[who.nodes[j]]), entry);
    }
  if (!k->nodes_lost) {
    const trainer_log *l = &c->logs[at[1]][1]; /* slot 1 of position 1: rank 3 */
    who.rank = l->generation == g_before ? l->rank : -1;
    if (pids[0][1] <= 0 || who.rank != SLOTS + 1) {
      snprintf(c->failure, sizeof c->failure, "no trainer of rank 3 found (node n%d slot 1: pid %d rank %d)", at[1],
               (int)pids[0][1], who.rank);
      return -1;
    }
  }
  char newest_id[32];
  if (newest_fault_id(c, newest_id, sizeof newest_id) != 0) {
    snprintf(c->failure, sizeof c->failure, "tgctl faults failed before the fault");
    return -1;
  }
  poll_logs(c);

  /* The fault. */
  int64_t t0 = tg_clock_mono_ms(), t0_unix = tg_clock_unix_ms();
  if (k->nodes_lost) {
    for (int j = 0; j < who.n_nodes; j++) {
      c->killed[who.nodes[j]] = 1;
      tg_proc_signal(c->agents[who.nodes[j]], SIGKILL);
      for (int s = 0; s < SLOTS; s++)
        if (pids[j][s] > 0) kill(pids[j][s], SIGKILL);
    }
  } else if (k == &kinds[HANG]) {
    kill(pids[0][1], SIGSTOP);
    c->stopped = pids[0][1];
    c->stopped_parent = tg_proc_pid(c->agents[at[1]]);
  } else {
    kill(pids[0][1], SIGKILL);
  }

  resumed_arg r = {.after = g_before, .world_size = k->size_after};
  int recovered = wait_until(c, resumed, &r, t0 + timeout_s * 1000, "training resumed after the fault") == 0;

  /* The fault as the coordinator recorded it: also when training did not
   * resume, where who was named is the first thing to know. */
  fault faults[MAX_FAULTS];
  const fault *named = NULL;
  int n_faults = 0, wrong = 0;
  for (int64_t until = tg_clock_mono_ms() + (recovered ? 5000 : 0); !interrupted;) {
    n_faults = list_faults(c, newest_id, faults, MAX_FAULTS);
    if (n_faults < 0) n_faults = 0;
    wrong = check_culprit(k, &who, faults, n_faults, &named);
    if (named || tg_clock_mono_ms() >= until) break;
    tg_clock_sleep_ms(100);
  }
  read_coordinator_log(c, faults, n_faults, NULL, 0, NULL);
  wrong = check_culprit(k, &who, faults, n_faults, &named);
  if (!named || wrong) res->culprit_wrong++;
  char culprit_text[128];
  if (who.n_nodes == 2)
    snprintf(culprit_text, sizeof culprit_text, "nodes n%d and n%d", who.nodes[0], who.nodes[1]);
  else if (who.rank >= 0)
    snprintf(culprit_text, sizeof culprit_text, "n%d rank %d", who.nodes[0], who.rank);
  else
    snprintf(culprit_text, sizeof culprit_text, "node n%d", who.nodes[0]);
  if (!recovered) {
    printf("  round %d: %s %s: %s%s; NOT RECOVERED: %s\n", round, k->fault, culprit_text,
           named ? "named" : "NOT NAMED", wrong ? " (another culprit named: WRONG)" : "", c->failure);
    print_faults(faults, n_faults, t0_unix);
    json_fault(c, k, round, &(fault_line){.detected_ms = named ? named->detected_unix_ms - t0_unix : -1,
                                          .resumed_ms = -1, .last_step = -1, .resume_step = -1,
                                          .size_before = before->world_size, .size_after = -1});
    return -1;
  }
  poll_logs(c);
  gen_info *g = resumed_gen(c, &r);
  uint64_t last = last_step_between(c, g_before, g->generation);
  const gen_info *formed = first_formed_after(c, g_before);
  *resumed_in = g;

  if (named) {
    add_fig(res, F_DETECTED, named->detected_unix_ms - t0_unix);
    if (named->recorded_unix_ms) add_fig(res, F_RECORDED, named->recorded_unix_ms - t0_unix);
  }
  if (formed) add_fig(res, F_NEW_WORLD, formed->formed_unix_ms - t0_unix);
  if (g->formed_unix_ms) add_fig(res, F_FINAL_WORLD, g->formed_unix_ms - t0_unix);
  add_fig(res, F_JOINED, g->joined_ms - t0);
  add_fig(res, F_RESUMED, g->first_step_ms - t0);
  /* Training is back where it was once the steps redone are done again. */
  caught_up_arg cu = {.from = g->generation, .step = last};
  int caught = wait_until(c, caught_up, &cu, t0 + timeout_s * 1000, "catching up with the step before the fault");
  if (caught == 0) add_fig(res, F_CAUGHT_UP, cu.at_ms - t0);
  add_fig(res, F_LAST_STEP, (int64_t)last);
  add_fig(res, F_RESUME_STEP, (int64_t)g->resume_step);
  add_fig(res, F_STEPS_LOST, (int64_t)last - (int64_t)g->resume_step);
  add_fig(res, F_WORLD_BEFORE, before->world_size);
  add_fig(res, F_WORLD_AFTER, g->world_size);
  add_fig(res, F_GENERATIONS, (int64_t)(g->generation - g_before));

  printf("  round %d: %s %s: %s%s; detected %" PRId64 " ms, recorded %" PRId64 " ms, new world %" PRId64
         " ms, joined %" PRId64 " ms, resumed %" PRId64 " ms, caught up %" PRId64 " ms\n",
         round, k->fault, culprit_text, named ? "named" : "NOT NAMED",
         wrong ? " (another culprit named: WRONG)" : "",
         named ? named->detected_unix_ms - t0_unix : -1,
         named && named->recorded_unix_ms ? named->recorded_unix_ms - t0_unix : -1,
         formed ? formed->formed_unix_ms - t0_unix : -1, g->joined_ms - t0, g->first_step_ms - t0,
         caught == 0 ? cu.at_ms - t0 : -1);
  printf("    generation %" PRIu64 " -> %" PRIu64 " (%s), %d -> %d ranks, last step %" PRIu64
         ", resumed at %" PRIu64 " (%" PRId64 " lost)%s%s\n",
         g_before, g->generation, formed ? formed->reason : "?", before->world_size, g->world_size, last,
         g->resume_step, (int64_t)last - (int64_t)g->resume_step,
         g->from_disk ? ", from the persisted checkpoint" : "",
         g->resume_differs ? " (ranks named different resume steps!)" : "");
  print_faults(faults, n_faults, t0_unix);
  json_fault(c, k, round,
             &(fault_line){1, named ? named->detected_unix_ms - t0_unix : -1, g->first_step_ms - t0, (int64_t)last,
                           (int64_t)g->resume_step, before->world_size, g->world_size});
  if (caught != 0) return -1; /* c->failure says why */
  if (k->persist && g->from_disk != g->world_size) {
    snprintf(c->failure, sizeof c->failure, "%d of %d ranks said they resumed from the persisted checkpoint",
             g->from_disk, g->world_size);
    return -1;
  }
  return 0;
}

/* A fresh cluster for a round of kind k; NULL (said on stderr) if it
 * cannot start. */
static cluster *round_cluster(const kind_spec *k, int round) {
  char err[256];
  cluster *c = cluster_new(k, round, err, sizeof err);
  if (!c) {
    fprintf(stderr, "faults_bench: %s round %d: cannot start the cluster: %s\n", k->name, round, err);
    keep_dir = 1;
    cluster_free(current);
  }
  return c;
}

/* The end of a round: what the bench saw if it failed (rc != 0), then
 * the cluster stopped. Returns rc. */
static int round_end(cluster *c, const kind_spec *k, int round, int rc) {
  fflush(stdout);
  if (rc != 0) report_failure(c, k->name, round);
  cluster_free(c);
  return rc;
}

static int run_round(const kind_spec *k, int round, kind_result *res) {
  char err[256], grow_line[512] = "";
  int rc = -1;
  cluster *c = round_cluster(k, round);
  if (!c) return -1;
  int64_t deadline = tg_clock_mono_ms() + timeout_s * 1000;
  training_arg a = {.world_size = RANKS, .step = 1};
  if (wait_until(c, training_at, &a, deadline, "first world of 8 ranks training") != 0) goto out;
  if (k->spare) {
    if (start_agent(c, NODES, err, sizeof err) != 0) {
      snprintf(c->failure, sizeof c->failure, "spare agent: %s", err);
      goto out;
    }
    if (wait_spare(c, deadline) != 0) goto out;
  }
  a.step = (uint64_t)fault_step;
  if (wait_until(c, training_at, &a, deadline, "training to reach --fault-step") != 0) goto out;

  int victim;
  gen_info *g;
  if (inject_and_measure(c, k, round, res, &victim, &g) != 0) goto out;
  if (k == &kinds[NODE_LOSS_SHRINK]) {
    if (grow_back(c, victim, g, res, grow_line, sizeof grow_line) != 0) goto out;
    fputs(grow_line, stdout);
  }
  rc = 0;
out:
  return round_end(c, k, round, rc);
}

/* ------------------------------------------------------------ goodput */

static int time_reached(cluster *c, void *arg) {
  (void)c;
  return tg_clock_mono_ms() >= *(const int64_t *)arg;
}

/* Reads the logs until the monotonic clock reaches at_ms. */
static int train_until(cluster *c, int64_t at_ms) {
  return wait_until(c, time_reached, &at_ms, at_ms + 1000, "the next instant on the goodput clock");
}

static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

/* The median of the gaps between the step lines first..n-1. */
static double median_gap_ms(const cluster *c, size_t first) {
  size_t n = c->n_step_ms > first + 1 ? c->n_step_ms - first - 1 : 0;
  int64_t *gaps = n ? malloc(n * sizeof *gaps) : NULL;
  if (!gaps) return 0;
  for (size_t i = 0; i < n; i++) gaps[i] = c->step_ms[first + i + 1] - c->step_ms[first + i];
  qsort(gaps, n, sizeof *gaps, cmp64);
  double median = n % 2 ? (double)gaps[n / 2] : ((double)gaps[n / 2 - 1] + (double)gaps[n / 2]) / 2;
  free(gaps);
  return median;
}

/* The goodput kind (see kinds[GOODPUT]). Goodput = steps of progress in
 * the window from the first fault to --goodput-faults x --fault-every-s
 * later (the newest step logged at its end minus that at its start: steps
 * redone are not progress) x the fault-free step time / the window. The
 * fault-free step time is the median gap between step lines in the window
 * itself (the faults' few long gaps do not move it), so it is taken under
 * the same load as the faults; the baseline's rate before the window is
 * reported beside it. Each fault's figures go to per_kind, as if measured
 * in a round of its own kind. */
static int run_goodput(const kind_spec *k, int round, kind_result *res, kind_result *per_kind) {
  static const kind_id rotation[] = {TRAINER_CRASH, HANG, NODE_LOSS_SHRINK};
  int rc = -1;
  cluster *c = round_cluster(k, round);
  if (!c) return -1;
  training_arg a = {.world_size = RANKS, .step = (uint64_t)fault_step};
  if (wait_until(c, training_at, &a, tg_clock_mono_ms() + timeout_s * 1000, "training to reach --fault-step") != 0)
    goto out;
  uint64_t s_a = c->latest_step;
  int64_t t_a = c->latest_step_ms;
  if (train_until(c, tg_clock_mono_ms() + baseline_s * 1000) != 0) goto out;
  if (c->latest_step <= s_a) {
    snprintf(c->failure, sizeof c->failure, "no progress in the %" PRId64 " s baseline", baseline_s);
    goto out;
  }
  double ideal_ms = (double)(c->latest_step_ms - t_a) / (double)(c->latest_step - s_a);
  int64_t w0 = tg_clock_mono_ms(), w1 = w0 + goodput_faults * fault_every_s * 1000;
  uint64_t s_w0 = c->latest_step;
  size_t first_step_line = c->n_step_ms;
  printf("  round %d: baseline %" PRIu64 " steps in %" PRId64 " ms: %.1f ms a step\n", round, c->latest_step - s_a,
         c->latest_step_ms - t_a, ideal_ms);
  for (int i = 0; i < goodput_faults; i++) {
    if (train_until(c, w0 + i * fault_every_s * 1000) != 0) goto out;
    const kind_spec *f = &kinds[rotation[i % 3]];
    kind_result *fr = &per_kind[f - kinds];
    int victim;
    gen_info *g;
    printf("  fault %d of round %d at +%.1f s: %s\n", i + 1, round, (double)(tg_clock_mono_ms() - w0) / 1000,
           f->name);
    if (inject_and_measure(c, f, round, fr, &victim, &g) != 0) {
      fr->failed++;
      goto out;
    }
    fr->ok++;
    if (f == &kinds[NODE_LOSS_SHRINK] && i + 1 < goodput_faults) {
      char line[512];
      if (grow_back(c, victim, g, fr, line, sizeof line) != 0) goto out;
      fputs(line, stdout);
    }
  }
  if (train_until(c, w1) != 0) goto out;
  uint64_t progress = c->latest_step > s_w0 ? c->latest_step - s_w0 : 0;
  double baseline_ms = ideal_ms;
  ideal_ms = median_gap_ms(c, first_step_line);
  double goodput = (double)progress * ideal_ms / (double)(w1 - w0);
  add_fig(res, F_IDEAL_STEP, (int64_t)(ideal_ms * 1000));
  add_fig(res, F_PROGRESS, (int64_t)progress);
  add_fig(res, F_GOODPUT, (int64_t)(goodput * 100 + 0.5));
  printf("  round %d: %" PRIu64 " steps of progress in %" PRId64 " s (step %" PRIu64 " -> %" PRIu64
         "); fault-free: %.0f; goodput %.1f %%\n",
         round, progress, (w1 - w0) / 1000, s_w0, c->latest_step, (double)(w1 - w0) / ideal_ms, goodput * 100);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "kind", "goodput");
  cJSON_AddNumberToObject(o, "round", round);
  cJSON_AddNumberToObject(o, "faults", (double)goodput_faults);
  cJSON_AddNumberToObject(o, "fault_every_s", (double)fault_every_s);
  cJSON_AddNumberToObject(o, "ideal_step_ms", ideal_ms);
  cJSON_AddNumberToObject(o, "baseline_step_ms", baseline_ms);
  cJSON_AddNumberToObject(o, "window_ms", (double)(w1 - w0));
  cJSON_AddNumberToObject(o, "progress_steps", (double)progress);
  cJSON_AddNumberToObject(o, "goodput", goodput);
  json_line(o);
  rc = 0;
out:
  return round_end(c, k, round, rc);
}

/* ------------------------------------------------------------ output */

static void print_table(const kind_spec *k, kind_result *r, const char *command) {
  printf("\n### %s\n\n%s.\n\nCommand: `%s`\n\n", k->name, k->what, command);
  printf("%d of %d rounds recovered%s; wall time %.1f s\n\n", r->ok, r->ok + r->failed,
         r->culprit_wrong ? " (culprit not named or wrong in some: see the rounds)" : "", (double)r->wall_ms / 1000);
  printf("| figure | median | min | max |\n| --- | ---: | ---: | ---: |\n");
  for (int f = 0; f < N_FIGS; f++) {
    int n = r->n[f];
    if (!n) continue;
    int64_t *v = r->v[f];
    qsort(v, (size_t)n, sizeof *v, cmp64);
    double median = n % 2 ? (double)v[n / 2] : ((double)v[n / 2 - 1] + (double)v[n / 2]) / 2;
    char u[8] = "";
    if (figs[f].unit[0]) snprintf(u, sizeof u, " %s", figs[f].unit);
    printf("| %s | %.0f%s | %" PRId64 "%s | %" PRId64 "%s |\n", figs[f].name, median, u, v[0], u, v[n - 1], u);
  }
  fflush(stdout);
}

/* The daemons are found relative to the runfiles tree, which `bazel run`
 * makes the working directory; run by hand, the binary's own tree is used. */
static int find_binaries(const char *argv0) {
  static const char *const names[] = {"tardigrade", "_main"};
  if (access("coordinator/tg-coordinator", X_OK) == 0) return 0;
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char path[1024];
    snprintf(path, sizeof path, "%s.runfiles/%s", argv0, names[i]);
    if (chdir(path) == 0 && access("coordinator/tg-coordinator", X_OK) == 0) return 0;
  }
  fprintf(stderr, "faults_bench: coordinator/tg-coordinator not found; run it with "
                  "bazel run -c opt //bench/recovery:faults -- ...\n");
  return -1;
}

static int parse_kinds(int selected[N_KINDS]) {
  if (strcmp(kinds_arg, "all") == 0) {
    for (int i = 0; i < N_KINDS; i++) selected[i] = i != GOODPUT;
    return 0;
  }
  char copy[sizeof kinds_arg], *save = NULL;
  snprintf(copy, sizeof copy, "%s", kinds_arg);
  for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    int found = 0;
    for (int i = 0; i < N_KINDS; i++)
      if (strcmp(t, kinds[i].name) == 0) selected[i] = found = 1;
    if (!found) {
      fprintf(stderr, "faults_bench: unknown kind %s (trainer_crash, node_loss_spare, node_loss_shrink, hang, disk, goodput)\n",
              t);
      return -1;
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  const tg_option opts[] = {
      {"kinds", TG_OPT_STRING, kinds_arg, sizeof kinds_arg, 0, 0,
       "comma-separated: trainer_crash, node_loss_spare, node_loss_shrink, hang, disk (all: these five), goodput"},
      {"rounds", TG_OPT_INT, &rounds, 0, 1, MAX_ROUNDS, "rounds per kind (a fresh cluster each)"},
      {"steps", TG_OPT_INT, &steps, 0, 10, 100000000, "tg-train --steps: the length of each round's run"},
      {"fault-step", TG_OPT_INT, &fault_step, 0, 1, 100000000, "inject once rank 0 completed this step"},
      {"timeout-s", TG_OPT_INT, &timeout_s, 0, 5, 3600, "deadline of every wait"},
      {"heartbeat-interval-ms", TG_OPT_INT, &heartbeat_interval_ms, 0, 10, 60000, "tg-coordinator's"},
      {"heartbeat-timeout-ms", TG_OPT_INT, &heartbeat_timeout_ms, 0, 20, 600000,
       "tg-coordinator's: a node silent this long is lost"},
      {"last-call-ms", TG_OPT_INT, &last_call_ms, 0, 0, 600000, "tg-coordinator's: wait for more nodes"},
      {"hang-floor-ms", TG_OPT_INT, &hang_floor_ms, 0, 1, 600000, "tg-agent's: shortest hang timeout"},
      {"persist-every", TG_OPT_INT, &persist_every, 0, 1, 100000, "tg-agent's, for the disk kind"},
      {"agent-log-level", TG_OPT_STRING, agent_log_level, sizeof agent_log_level, 0, 0,
       "tg-agent's --log-level (debug shows replication and persistence)"},
      {"fault-every-s", TG_OPT_INT, &fault_every_s, 0, 1, 86400, "goodput: seconds between faults"},
      {"goodput-faults", TG_OPT_INT, &goodput_faults, 0, 1, 1000, "goodput: faults in the window (kinds in turn)"},
      {"baseline-s", TG_OPT_INT, &baseline_s, 0, 1, 3600, "goodput: fault-free training that sets the ideal rate"},
      {"json", TG_OPT_STRING, json_path, sizeof json_path, 0, 0,
       "append one JSON line per fault measured and per goodput round to this file"},
      {"keep-logs", TG_OPT_BOOL, &keep_logs, 0, 0, 0, "keep the logs even when every round recovered"},
  };
  char err[512];
  switch (tg_config_parse(opts, sizeof opts / sizeof opts[0], argc, argv,
                          "usage: faults [--kinds a,b] [--rounds N] [--steps N]\n\n"
                          "Time from a fault to training resumed, per kind of fault, on a local cluster of\n"
                          "4 tg-agents x 2 tg-train slots (one real etcd, one tg-coordinator).\n"
                          "Run it with: bazel run -c opt //bench/recovery:faults -- --rounds 3",
                          NULL, err, sizeof err)) {
  case TG_CONFIG_HELP: return 0;
  case TG_CONFIG_ERROR: fprintf(stderr, "faults_bench: %s\n", err); return 2;
  case TG_CONFIG_OK: break;
  }
  int selected[N_KINDS] = {0};
  if (parse_kinds(selected) != 0) return 2;
  if (find_binaries(argv[0]) != 0) return 2;
  if (fault_step + 100 > steps) {
    fprintf(stderr, "faults_bench: --steps must leave room after --fault-step (at least 100 more)\n");
    return 2;
  }
  if (json_path[0] && !(json_out = fopen(json_path, "a"))) {
    fprintf(stderr, "faults_bench: --json %s: cannot open for appending\n", json_path);
    return 2;
  }
  tg_log_init("faults_bench", TG_LOG_WARN);
  struct sigaction sa = {.sa_handler = on_signal};
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);

  if (tg_proc_temp_dir("faults-bench", dir, sizeof dir) != 0) {
    fprintf(stderr, "faults_bench: no temp dir\n");
    return 1;
  }
  snprintf(sockdir, sizeof sockdir, "/tmp/tg-faults-XXXXXX");
  if (!mkdtemp(sockdir)) {
    fprintf(stderr, "faults_bench: no socket dir\n");
    sockdir[0] = '\0';
    cleanup();
    return 1;
  }
  etcd = tg_etcd_cluster_start(1, err, sizeof err);
  if (!etcd) {
    fprintf(stderr, "faults_bench: etcd: %s\n", err);
    keep_dir = 1;
    cleanup();
    return 1;
  }

  /* The machine, the date and the command. */
  struct utsname u;
  uname(&u);
  char date[64], load[128] = "?";
  time_t now = time(NULL);
  strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S UTC", gmtime(&now));
  FILE *lf = fopen("/proc/loadavg", "r");
  if (lf && fgets(load, sizeof load, lf)) load[strcspn(load, "\n")] = '\0';
  if (lf) fclose(lf);
  char command[1024];
  int off = snprintf(command, sizeof command, "bazel run -c opt //bench/recovery:faults --");
  for (int i = 1; i < argc && off < (int)sizeof command; i++)
    off += snprintf(command + off, sizeof command - (size_t)off, " %s", argv[i]);
  printf("# bench/recovery faults: 4 nodes x 2 slots of tg-train (D=32, N=2, 34k parameters, gloo on CPU)\n");
  printf("# date: %s\n# machine: %s %s %s %s, %ld cores, load average at start %s\n", date, u.sysname, u.nodename,
         u.release, u.machine, sysconf(_SC_NPROCESSORS_ONLN), load);
  printf("# command: %s\n", command);
  printf("# tg-coordinator: --heartbeat-interval-ms %" PRId64 " --heartbeat-timeout-ms %" PRId64
         " --last-call-ms %" PRId64 "; tg-agent: --hang-floor-ms %" PRId64 " (hang factor 10 x step time)"
         ", --persist-every %" PRId64 " (disk); tg-train --steps %" PRId64 ", fault once rank 0 completed step %" PRId64
         "\n# logs: %s\n",
         heartbeat_interval_ms, heartbeat_timeout_ms, last_call_ms, hang_floor_ms, persist_every, steps, fault_step,
         dir);
  fflush(stdout);

  static kind_result results[N_KINDS];
  int failed = 0, wrong = 0;
  for (int k = 0; k < N_KINDS && !interrupted; k++) {
    if (!selected[k]) continue;
    char kind_load[128] = "?";
    FILE *klf = fopen("/proc/loadavg", "r");
    if (klf && fgets(kind_load, sizeof kind_load, klf)) kind_load[strcspn(kind_load, "\n")] = '\0';
    if (klf) fclose(klf);
    printf("\n%s: %s (load average %s)\n", kinds[k].name, kinds[k].what, kind_load);
    int64_t started = tg_clock_mono_ms();
    for (int r = 1; r <= rounds && !interrupted; r++) {
      int rc = k == GOODPUT ? run_goodput(&kinds[k], r, &results[k], results) : run_round(&kinds[k], r, &results[k]);
      if (rc == 0) results[k].ok++;
      else results[k].failed++;
    }
    results[k].wall_ms = tg_clock_mono_ms() - started;
    failed += results[k].failed;
    wrong += results[k].culprit_wrong;
  }
  printf("\n## Results\n");
  for (int k = 0; k < N_KINDS; k++)
    if (results[k].ok + results[k].failed > 0) print_table(&kinds[k], &results[k], command);
  now = time(NULL);
  strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S UTC", gmtime(&now));
  lf = fopen("/proc/loadavg", "r");
  if (lf && fgets(load, sizeof load, lf)) load[strcspn(load, "\n")] = '\0';
  if (lf) fclose(lf);
  printf("\n# finished %s, load average %s; %d round(s) failed, %d with the culprit not named or wrong\n", date,
         load, failed, wrong);
  fflush(stdout);
  if (interrupted) keep_dir = 1;
  if (json_out) fclose(json_out);
  cleanup();
  return interrupted ? 130 : failed || wrong ? 1 : 0;
}
