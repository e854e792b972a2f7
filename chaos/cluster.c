/* The local cluster tg-chaos drives; see cluster.h. Command lines are
 * built here once, so a restarted agent or coordinator is started exactly
 * as the first time (same node id, ports, directories): that is what makes
 * it "the same node" or "the same coordinator" to the rest of the job. */
#include "chaos/cluster.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/ckpt/store.h"
#include "agent/health/gpu_fake.h"
#include "agent/health/nic_fake.h"
#include "chaos/procs.h"
#include "chaos/proxy.h"
#include "coordinator/coordinator.h"
#include "tests/harness/proc.h"

#define MAX_ARGV 64
#define STOP_MS 5000
#define AGENT_PORT 7100 /* namespace mode: every host has its own ports */

struct tg_chaos_cluster {
  tg_chaos_cluster_config cfg;
  tg_chaos_cluster_spec spec;
  tg_chaos_training_spec training;
  tg_chaos_bins bins;
  char job[TG_CKPT_JOB_ID_MAX];
  char dir[512], etcd[256], params[768], host[48];
  char coordinators[TG_CHAOS_MAX_COORDINATORS * 32];
  int ports[TG_CHAOS_MAX_COORDINATORS];
  tg_proc *coord[TG_CHAOS_MAX_COORDINATORS];
  tg_proc *agent[TG_CHAOS_MAX_NODES];
  char node_ids[TG_CHAOS_MAX_NODES][TG_CHAOS_NAME_MAX];
  /* Attached (tg_chaos_cluster_attach): the job's own processes, found
   * in /proc, and where each agent keeps what tg-chaos needs. */
  int attached;
  tg_chaos_proc found_coord[TG_CHAOS_MAX_COORDINATORS];
  tg_chaos_proc found_agent[TG_CHAOS_MAX_NODES];
  char coord_ids[TG_CHAOS_MAX_COORDINATORS][TG_CHAOS_NAME_MAX];
  char log_dir[TG_CHAOS_MAX_NODES][512];
  char fake_dir[TG_CHAOS_MAX_NODES][512];
  char inject_dir[TG_CHAOS_MAX_NODES][512];
  char ckpt_dir[512];
  int ckpt_mounted;
  /* With slow links: each node's own route to every coordinator. */
  tg_chaos_proxy *proxy;
  int routes[TG_CHAOS_MAX_NODES][TG_CHAOS_MAX_COORDINATORS];
  char node_coordinators[TG_CHAOS_MAX_NODES][TG_CHAOS_MAX_COORDINATORS * 32];
};

static int make_dir(const char *path, char *err, size_t errlen) {
  if (mkdir(path, 0755) == 0 || errno == EEXIST) return 0;
  snprintf(err, errlen, "%s: %s", path, strerror(errno));
  return -1;
}

/* A route per (node, coordinator); node i's agent is given its own
 * routes' addresses instead of the coordinators'. */
static int start_proxy(tg_chaos_cluster *c, char *err, size_t errlen) {
  c->proxy = tg_chaos_proxy_new(err, errlen);
  if (!c->proxy) return -1;
  for (int i = 0; i < c->cfg.nodes; i++) {
    char *list = c->node_coordinators[i];
    for (int j = 0; j < c->cfg.coordinators; j++) {
      int port;
      c->routes[i][j] = tg_chaos_proxy_add(c->proxy, c->host, c->host, c->ports[j], &port, err, errlen);
      if (c->routes[i][j] < 0) return -1;
      snprintf(list + strlen(list), sizeof c->node_coordinators[i] - strlen(list), "%s%s:%d", j ? "," : "", c->host,
               port);
    }
  }
  return tg_chaos_proxy_start(c->proxy, err, errlen);
}

tg_chaos_cluster *tg_chaos_cluster_new(const tg_chaos_cluster_config *cfg, char *err, size_t errlen) {
  if (cfg->nodes < 1 || cfg->nodes > TG_CHAOS_MAX_NODES || cfg->coordinators < 1 ||
      cfg->coordinators > TG_CHAOS_MAX_COORDINATORS) {
    snprintf(err, errlen, "cluster: %d nodes and %d coordinators are out of range", cfg->nodes, cfg->coordinators);
    return NULL;
  }
  tg_chaos_cluster *c = calloc(1, sizeof *c);
  if (!c) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  c->cfg = *cfg;
  c->spec = *cfg->spec;
  c->training = *cfg->training;
  c->bins = *cfg->bins;
  snprintf(c->job, sizeof c->job, "%s", cfg->job);
  snprintf(c->dir, sizeof c->dir, "%s", cfg->dir);
  snprintf(c->etcd, sizeof c->etcd, "%s", cfg->etcd_endpoints);
  snprintf(c->params, sizeof c->params, "%s", cfg->params_out);
  snprintf(c->host, sizeof c->host, "%s", cfg->host ? cfg->host : "127.0.0.1");
  c->cfg.host = c->host;
  if (cfg->net && tg_netns_size(cfg->net) < cfg->nodes) {
    snprintf(err, errlen, "cluster: %d hosts for %d nodes", tg_netns_size(cfg->net), cfg->nodes);
    goto err;
  }
  c->cfg.job = c->job;
  c->cfg.dir = c->dir;
  c->cfg.etcd_endpoints = c->etcd;
  c->cfg.params_out = c->params;
  c->cfg.spec = &c->spec;
  c->cfg.training = &c->training;
  c->cfg.bins = &c->bins;
  for (int i = 0; i < cfg->nodes; i++) snprintf(c->node_ids[i], sizeof c->node_ids[i], "n%d", i);
  /* Agents pass their environment on to their trainers. */
  if (setenv("TG_COMM_BACKEND", c->training.backend, 1) != 0) {
    snprintf(err, errlen, "setenv TG_COMM_BACKEND: %s", strerror(errno));
    goto err;
  }
  char path[700];
  const char *sub[] = {"logs", "sock", "ckpt", "devices", "inject"};
  for (size_t i = 0; i < sizeof sub / sizeof sub[0]; i++) {
    snprintf(path, sizeof path, "%s/%s", c->dir, sub[i]);
    if (make_dir(path, err, errlen) != 0) goto err;
  }
  for (int i = 0; i < cfg->nodes; i++) {
    char dev[800], sys[820];
    tg_chaos_cluster_fake_devices(c, i, dev, sizeof dev);
    snprintf(sys, sizeof sys, "%s/sys", dev);
    int rc = tg_gpu_fake_create(dev, (uint32_t)c->spec.slots);
    if (rc == 0) rc = tg_nic_fake_add_link(sys, "eth0");
    if (rc != 0) {
      snprintf(err, errlen, "fake devices in %s: %s", dev, strerror(rc < 0 ? -rc : rc));
      goto err;
    }
  }
  /* A unix socket path has 108 bytes at most. */
  snprintf(path, sizeof path, "%s/sock/n%d.sock", c->dir, cfg->nodes - 1);
  if (strlen(path) >= 100) {
    snprintf(err, errlen, "%s: too long for a unix socket; use a shorter temporary directory", path);
    goto err;
  }
  for (int i = 0; i < cfg->coordinators; i++) {
    c->ports[i] = tg_proc_free_port();
    if (c->ports[i] <= 0) {
      snprintf(err, errlen, "no free port for coordinator %d", i);
      goto err;
    }
    snprintf(c->coordinators + strlen(c->coordinators), sizeof c->coordinators - strlen(c->coordinators),
             "%s%s:%d", i ? "," : "", c->host, c->ports[i]);
  }
  if (cfg->slow_links && start_proxy(c, err, errlen) != 0) goto err;
  /* Last: nothing after it can fail and leave the mount behind. */
  if (cfg->ckpt_fs_mib > 0) {
    char opts[32];
    tg_chaos_cluster_ckpt_dir(c, path, sizeof path);
    snprintf(opts, sizeof opts, "size=%dm,mode=0755", cfg->ckpt_fs_mib);
    if (mount("tg-chaos-ckpt", path, "tmpfs", MS_NOSUID | MS_NODEV, opts) != 0) {
      snprintf(err, errlen, "mounting a %d MiB tmpfs on %s (disk_full needs root): %s", cfg->ckpt_fs_mib, path,
               strerror(errno));
      goto err;
    }
    c->ckpt_mounted = 1;
  }
  return c;
err:
  tg_chaos_proxy_free(c->proxy);
  free(c);
  return NULL;
}

static void stop_all(tg_proc **procs, int n) {
  for (int i = 0; i < n; i++)
    if (procs[i] && tg_proc_running(procs[i])) {
      tg_proc_signal(procs[i], SIGCONT);
      tg_proc_signal(procs[i], SIGTERM);
    }
  for (int i = 0; i < n; i++) {
    if (!procs[i]) continue;
    tg_proc_stop(procs[i], STOP_MS);
    tg_proc_free(procs[i]);
    procs[i] = NULL;
  }
}

void tg_chaos_cluster_free(tg_chaos_cluster *c) {
  if (!c) return;
  if (c->attached) { /* the job is not ours: it goes on */
    for (int i = 0; i < c->cfg.coordinators; i++) tg_chaos_proc_clear(&c->found_coord[i]);
    for (int i = 0; i < c->cfg.nodes; i++) tg_chaos_proc_clear(&c->found_agent[i]);
    free(c);
    return;
  }
  stop_all(c->agent, c->cfg.nodes);
  stop_all(c->coord, c->cfg.coordinators);
  tg_chaos_proxy_free(c->proxy);
  /* Agents killed on purpose (and trainers) leave their regions behind. */
  for (int i = 0; i < c->cfg.nodes; i++) {
    char name[160];
    tg_chaos_cluster_store_name(c, i, name, sizeof name);
    tg_ckpt_store_unlink(name);
    snprintf(name, sizeof name, "/tg-progress-%s-%s", c->job, c->node_ids[i]);
    shm_unlink(name);
  }
  if (c->ckpt_mounted) {
    char path[700];
    tg_chaos_cluster_ckpt_dir(c, path, sizeof path);
    umount2(path, MNT_DETACH); /* lazily: a process may still hold a file there */
  }
  free(c);
}

void tg_chaos_cluster_ckpt_dir(const tg_chaos_cluster *c, char *out, size_t len) {
  if (c->attached)
    snprintf(out, len, "%s", c->ckpt_dir);
  else
    snprintf(out, len, "%s/ckpt", c->dir);
}

/* ------------------------------------------------------------ coordinators */

int tg_chaos_cluster_start_coordinator(tg_chaos_cluster *c, int i, char *err, size_t errlen) {
  if (i < 0 || i >= c->cfg.coordinators) {
    snprintf(err, errlen, "no coordinator %d", i);
    return -1;
  }
  if (c->attached)
    return tg_chaos_proc_alive(&c->found_coord[i]) ? 0 : tg_chaos_proc_respawn(&c->found_coord[i], err, errlen);
  if (c->coord[i] && tg_proc_running(c->coord[i])) return 0;
  char id[16], listen[64], min[16], max[16], slots[16], hb_interval[24], hb_timeout[24], log[700];
  snprintf(id, sizeof id, "c%d", i);
  snprintf(listen, sizeof listen, "%s:%d", c->host, c->ports[i]);
  snprintf(min, sizeof min, "%d", c->spec.min_nodes < c->cfg.max_nodes ? c->spec.min_nodes : c->cfg.max_nodes);
  snprintf(max, sizeof max, "%d", c->cfg.max_nodes);
  snprintf(slots, sizeof slots, "%d", c->spec.slots);
  int64_t interval = c->spec.heartbeat_timeout_ms / 10;
  snprintf(hb_interval, sizeof hb_interval, "%lld", (long long)(interval < 20 ? 20 : interval > 1000 ? 1000 : interval));
  snprintf(hb_timeout, sizeof hb_timeout, "%lld", (long long)c->spec.heartbeat_timeout_ms);
  snprintf(log, sizeof log, "%s/logs/%s.log", c->dir, id);
  const char *argv[] = {c->bins.coordinator, "--id", id, "--job", c->job, "--listen", listen, "--http", "127.0.0.1:0", "--etcd", c->etcd,
                        "--min-nodes", min, "--max-nodes", max, "--slots", slots, "--last-call-ms", "300",
                        "--heartbeat-interval-ms", hb_interval, "--heartbeat-timeout-ms", hb_timeout,
                        "--leader-ttl-s", "1", "--quarantine-faults", "0", NULL};
  tg_proc_free(c->coord[i]);
  c->coord[i] = tg_proc_start(argv, log, err, errlen);
  return c->coord[i] ? 0 : -1;
}

int tg_chaos_cluster_coordinator_running(tg_chaos_cluster *c, int i) {
  if (i < 0 || i >= c->cfg.coordinators) return 0;
  return c->attached ? tg_chaos_proc_alive(&c->found_coord[i]) : c->coord[i] && tg_proc_running(c->coord[i]);
}

int tg_chaos_cluster_coordinator_index(const tg_chaos_cluster *c, const char *id) {
  for (int i = 0; i < c->cfg.coordinators; i++) {
    char name[16];
    snprintf(name, sizeof name, "c%d", i);
    if (strcmp(c->attached ? c->coord_ids[i] : name, id) == 0) return i;
  }
  return -1;
}

int tg_chaos_cluster_coordinator_count(const tg_chaos_cluster *c) { return c->cfg.coordinators; }

void tg_chaos_cluster_coordinator_id(const tg_chaos_cluster *c, int i, char *out, size_t len) {
  if (c->attached)
    snprintf(out, len, "%s", i >= 0 && i < c->cfg.coordinators ? c->coord_ids[i] : "?");
  else
    snprintf(out, len, "c%d", i);
}

int tg_chaos_cluster_kill_coordinator(tg_chaos_cluster *c, int i) {
  if (!tg_chaos_cluster_coordinator_running(c, i)) return -1;
  if (c->attached) return tg_chaos_proc_kill(&c->found_coord[i], STOP_MS);
  tg_proc_signal(c->coord[i], SIGKILL);
  tg_proc_wait(c->coord[i], STOP_MS, NULL);
  return 0;
}

const char *tg_chaos_cluster_coordinators(const tg_chaos_cluster *c) { return c->coordinators; }

/* ------------------------------------------------------------ agents */

int tg_chaos_cluster_start_agent(tg_chaos_cluster *c, int node, char *err, size_t errlen) {
  if (node < 0 || node >= c->cfg.nodes) {
    snprintf(err, errlen, "no node %d", node);
    return -1;
  }
  if (c->attached)
    return tg_chaos_proc_alive(&c->found_agent[node]) ? 0 : tg_chaos_proc_respawn(&c->found_agent[node], err, errlen);
  if (c->agent[node] && tg_proc_running(c->agent[node])) return 0;
  char logs[700], sock[700], log[700], ckpt[700], inject[700], slots[16], mib[24], hang[24], persist[24];
  char steps[24], width[24], depth[24], context[24], batch[24], micro[24], seed[24];
  const char *id = c->node_ids[node];
  snprintf(logs, sizeof logs, "%s/logs/%s", c->dir, id);
  if (make_dir(logs, err, errlen) != 0) return -1;
  snprintf(sock, sizeof sock, "%s/sock/%s.sock", c->dir, id);
  snprintf(log, sizeof log, "%s/logs/%s-agent.log", c->dir, id);
  tg_chaos_cluster_ckpt_dir(c, ckpt, sizeof ckpt);
  snprintf(inject, sizeof inject, "%s/inject", c->dir);
  snprintf(slots, sizeof slots, "%d", c->spec.slots);
  snprintf(mib, sizeof mib, "%lld", (long long)c->spec.ckpt_mib);
  snprintf(hang, sizeof hang, "%lld", (long long)c->spec.hang_floor_ms);
  snprintf(persist, sizeof persist, "%lld", (long long)c->spec.persist_every);
  const tg_chaos_training_spec *t = &c->training;
  snprintf(steps, sizeof steps, "%lld", (long long)t->steps);
  snprintf(width, sizeof width, "%lld", (long long)t->width);
  snprintf(depth, sizeof depth, "%lld", (long long)t->depth);
  snprintf(context, sizeof context, "%lld", (long long)t->context);
  snprintf(batch, sizeof batch, "%lld", (long long)t->batch);
  snprintf(micro, sizeof micro, "%lld", (long long)t->micro);
  snprintf(seed, sizeof seed, "%lld", (long long)t->seed);
  const char *coordinators = c->proxy ? c->node_coordinators[node] : c->coordinators;
  const char *argv[MAX_ARGV] = {c->bins.agent, "--node", id, "--job", c->job, "--coordinators", coordinators,
                                "--socket", sock, "--slots", slots, "--log-dir", logs, "--ckpt-mib", mib,
                                "--hang-floor-ms", hang, "--restart-max", "64", "--log-level", "info"};
  char fake[800];
  tg_chaos_cluster_fake_devices(c, node, fake, sizeof fake);
  argv[21] = "--fake-devices";
  argv[22] = fake;
  int n = 23;
  char peer[64];
  if (c->cfg.net) { /* the host's own address, where other agents reach it */
    snprintf(peer, sizeof peer, "%s:%d", tg_netns_addr(c->cfg.net, node), AGENT_PORT);
    argv[n++] = "--listen";
    argv[n++] = peer;
  }
  if (c->cfg.persist) {
    argv[n++] = "--ckpt-dir";
    argv[n++] = ckpt;
    argv[n++] = "--persist-every";
    argv[n++] = persist;
  }
  int cuda = strcmp(t->device, "cuda") == 0;
  if (cuda && !c->bins.trainer_cuda[0]) {
    snprintf(err, errlen, "training.device \"cuda\": no trainer/tg-train-cuda beside tg-train (it is built only "
             "where CUDA is installed)");
    return -1;
  }
  const char *train[] = {"--", cuda ? c->bins.trainer_cuda : c->bins.trainer, "--steps", steps, "--width", width, "--depth", depth,
                         "--context", context, "--batch", batch, "--micro", micro, "--seed", seed,
                         "--out", c->params, "--inject-dir", inject, NULL};
  for (size_t i = 0; train[i]; i++) argv[n++] = train[i];
  if (t->corpus[0]) {
    argv[n++] = "--corpus";
    argv[n++] = t->corpus;
  }
  if (cuda) {
    argv[n++] = "--device";
    argv[n++] = "cuda";
  }
  argv[n] = NULL;
  tg_proc_free(c->agent[node]);
  c->agent[node] = c->cfg.net ? tg_netns_start(c->cfg.net, node, argv, log, err, errlen)
                              : tg_proc_start(argv, log, err, errlen);
  return c->agent[node] ? 0 : -1;
}

void tg_chaos_cluster_inject_path(const tg_chaos_cluster *c, int node, int slot, char *out, size_t len) {
  int known = node >= 0 && node < c->cfg.nodes;
  if (c->attached && (!known || !c->inject_dir[node][0]))
    out[0] = '\0';
  else if (c->attached)
    snprintf(out, len, "%s/%s.%d", c->inject_dir[node], c->node_ids[node], slot);
  else
    snprintf(out, len, "%s/inject/%s.%d", c->dir, known ? c->node_ids[node] : "none", slot);
}

void tg_chaos_cluster_fake_devices(const tg_chaos_cluster *c, int node, char *out, size_t len) {
  int known = node >= 0 && node < c->cfg.nodes;
  if (c->attached)
    snprintf(out, len, "%s", known ? c->fake_dir[node] : "");
  else
    snprintf(out, len, "%s/devices/%s", c->dir, known ? c->node_ids[node] : "none");
}

int tg_chaos_cluster_agent_running(tg_chaos_cluster *c, int node) {
  if (node < 0 || node >= c->cfg.nodes) return 0;
  return c->attached ? tg_chaos_proc_alive(&c->found_agent[node]) : c->agent[node] && tg_proc_running(c->agent[node]);
}

static pid_t agent_pid(tg_chaos_cluster *c, int node) {
  return c->attached ? c->found_agent[node].pid : tg_proc_pid(c->agent[node]);
}

pid_t tg_chaos_cluster_trainer_pid(tg_chaos_cluster *c, int node, int slot) {
  if (!tg_chaos_cluster_agent_running(c, node)) return 0;
  char entry[32];
  snprintf(entry, sizeof entry, "TG_SLOT=%d", slot);
  return tg_proc_child_with_env(agent_pid(c, node), entry);
}

int tg_chaos_cluster_kill_agent(tg_chaos_cluster *c, int node) {
  if (!tg_chaos_cluster_agent_running(c, node)) return -1;
  /* The trainers die with their agent (parent-death signal); killing them
   * by pid as well makes the host's loss immediate whatever the agent
   * set up. Their pids are read before the agent goes. */
  pid_t trainers[TG_CHAOS_MAX_SLOTS] = {0};
  for (int s = 0; s < c->spec.slots && s < TG_CHAOS_MAX_SLOTS; s++) trainers[s] = tg_chaos_cluster_trainer_pid(c, node, s);
  if (c->attached)
    kill(c->found_agent[node].pid, SIGKILL);
  else
    tg_proc_signal(c->agent[node], SIGKILL);
  for (int s = 0; s < TG_CHAOS_MAX_SLOTS; s++)
    if (trainers[s] > 0) kill(trainers[s], SIGKILL);
  if (c->attached)
    tg_chaos_proc_wait_gone(&c->found_agent[node], STOP_MS);
  else
    tg_proc_wait(c->agent[node], STOP_MS, NULL);
  return 0;
}

static int set_link(tg_chaos_cluster *c, int node, int up, char *err, size_t errlen) {
  if (!c->cfg.net) {
    snprintf(err, errlen, "local processes share one network: only cluster.network \"namespaces\" has links");
    return -1;
  }
  if (node < 0 || node >= c->cfg.nodes) {
    snprintf(err, errlen, "no node %d", node);
    return -1;
  }
  return up ? tg_netns_heal(c->cfg.net, node, err, errlen) : tg_netns_cut(c->cfg.net, node, err, errlen);
}

int tg_chaos_cluster_slow_link(tg_chaos_cluster *c, int node, int64_t delay_ms, char *err, size_t errlen) {
  if (!c->proxy) {
    snprintf(err, errlen, "the agents were started without the slow-link proxy");
    return -1;
  }
  if (node < 0 || node >= c->cfg.nodes) {
    snprintf(err, errlen, "no node %d", node);
    return -1;
  }
  for (int j = 0; j < c->cfg.coordinators; j++) tg_chaos_proxy_set_delay(c->proxy, c->routes[node][j], delay_ms);
  return 0;
}

int tg_chaos_cluster_cut(tg_chaos_cluster *c, int node, char *err, size_t errlen) {
  return set_link(c, node, 0, err, errlen);
}

int tg_chaos_cluster_heal(tg_chaos_cluster *c, int node, char *err, size_t errlen) {
  return set_link(c, node, 1, err, errlen);
}

/* ------------------------------------------------------------ names */

const char *tg_chaos_cluster_node_id(const tg_chaos_cluster *c, int node) {
  return node >= 0 && node < c->cfg.nodes ? c->node_ids[node] : "?";
}

int tg_chaos_cluster_node_index(const tg_chaos_cluster *c, const char *id) {
  for (int i = 0; id && i < c->cfg.nodes; i++)
    if (strcmp(c->node_ids[i], id) == 0) return i;
  return -1;
}

int tg_chaos_cluster_attached(const tg_chaos_cluster *c) { return c->attached; }
int tg_chaos_cluster_nodes(const tg_chaos_cluster *c) { return c->cfg.nodes; }
int tg_chaos_cluster_slots(const tg_chaos_cluster *c) { return c->spec.slots; }
const char *tg_chaos_cluster_job(const tg_chaos_cluster *c) { return c->job; }

void tg_chaos_cluster_slot_log(const tg_chaos_cluster *c, int node, int slot, char *out, size_t len) {
  if (c->attached)
    snprintf(out, len, "%s/slot-%d.log", c->log_dir[node], slot);
  else
    snprintf(out, len, "%s/logs/%s/slot-%d.log", c->dir, c->node_ids[node], slot);
}

void tg_chaos_cluster_agent_log(const tg_chaos_cluster *c, int node, char *out, size_t len) {
  if (c->attached) /* where its stderr goes, if that is a file; "" otherwise */
    snprintf(out, len, "%s", c->found_agent[node].err[0] ? c->found_agent[node].err : c->found_agent[node].out);
  else
    snprintf(out, len, "%s/logs/%s-agent.log", c->dir, c->node_ids[node]);
}

void tg_chaos_cluster_store_name(const tg_chaos_cluster *c, int node, char *out, size_t len) {
  snprintf(out, len, "/tg-ckpt-%s-%s", c->job, c->node_ids[node]);
}

int tg_chaos_cluster_tgctl(tg_chaos_cluster *c, const char *const *args, char *out, size_t outlen,
                           int64_t timeout_ms) {
  char timeout[24];
  snprintf(timeout, sizeof timeout, "%lld", (long long)(timeout_ms > 200 ? timeout_ms - 100 : 100));
  const char *argv[MAX_ARGV] = {c->bins.tgctl, "--coordinator", c->coordinators, "--timeout-ms", timeout, "--json"};
  int n = 6;
  for (size_t i = 0; args[i] && n < MAX_ARGV - 1; i++) argv[n++] = args[i];
  argv[n] = NULL;
  int status;
  if (tg_proc_run(argv, NULL, timeout_ms, out, outlen, &status) != 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ------------------------------------------------------------ attaching */

/* 1 if "host:port" is one of the comma-separated addresses in list; a
 * coordinator listening on every address (0.0.0.0, [::]) matches any
 * host with its port. */
static int listed(const char *list, const char *addr) {
  const char *colon = strrchr(addr, ':');
  if (!colon) return 0;
  size_t host_len = (size_t)(colon - addr);
  int any = (host_len == 7 && strncmp(addr, "0.0.0.0", 7) == 0) || (host_len == 4 && strncmp(addr, "[::]", 4) == 0);
  char copy[1024];
  snprintf(copy, sizeof copy, "%s", list);
  char *save = NULL;
  for (char *a = strtok_r(copy, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
    if (strcmp(a, addr) == 0) return 1;
    const char *c = strrchr(a, ':');
    if (any && c && strcmp(c, colon) == 0) return 1;
  }
  return 0;
}

/* 1 if the two address lists share an address. */
static int overlap(const char *a, const char *b) {
  char copy[1024];
  snprintf(copy, sizeof copy, "%s", a);
  char *save = NULL;
  for (char *x = strtok_r(copy, ",", &save); x; x = strtok_r(NULL, ",", &save))
    if (listed(b, x)) return 1;
  return 0;
}

static int64_t int_option(const tg_chaos_proc *p, const char *name, int trainer, int64_t dflt) {
  char v[64];
  if (!tg_chaos_proc_option(p, name, trainer, v, sizeof v)) return dflt;
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  return errno || end == v || *end ? dflt : (int64_t)x;
}

/* An agent found in /proc, with its node id for sorting. */
typedef struct {
  tg_chaos_proc proc;
  char node[TG_CHAOS_NAME_MAX];
} found_agent;

static int found_cmp(const void *a, const void *b) {
  return strcmp(((const found_agent *)a)->node, ((const found_agent *)b)->node);
}

tg_chaos_cluster *tg_chaos_cluster_attach(const tg_chaos_attach_config *cfg, tg_chaos_cluster_spec *shape,
                                          int64_t *steps, char *err, size_t errlen) {
  tg_chaos_cluster *c = calloc(1, sizeof *c);
  found_agent *agents = calloc(TG_CHAOS_MAX_NODES + 1, sizeof *agents);
  pid_t *pids = malloc(65536 * sizeof *pids);
  int n_agents = 0;
  if (!c || !agents || !pids) {
    snprintf(err, errlen, "out of memory");
    goto err;
  }
  c->attached = 1;
  c->bins = *cfg->bins;
  c->cfg.bins = &c->bins;
  c->cfg.job = c->job;
  c->cfg.dir = c->dir;
  c->cfg.spec = &c->spec;
  c->cfg.training = &c->training;
  snprintf(c->job, sizeof c->job, "%s", cfg->job);
  snprintf(c->coordinators, sizeof c->coordinators, "%s", cfg->coordinators);
  /* What a flag not given means: the daemons' own defaults. */
  tg_coord_config coord_dflt;
  tg_agent_config agent_dflt;
  tg_coord_config_defaults(&coord_dflt);
  tg_agent_config_defaults(&agent_dflt);
  size_t n = tg_chaos_proc_list(pids, 65536);
  for (size_t i = 0; i < n; i++) {
    if (pids[i] == getpid()) continue;
    tg_chaos_proc p;
    if (tg_chaos_proc_read(pids[i], &p) != 0) continue;
    const char *prog = tg_chaos_proc_program(&p);
    int is_coord = strcmp(prog, "tg-coordinator") == 0, is_agent = strcmp(prog, "tg-agent") == 0;
    char job[TG_CKPT_JOB_ID_MAX], addr[1024];
    snprintf(job, sizeof job, "%s", is_coord ? coord_dflt.job_id : agent_dflt.job_id);
    tg_chaos_proc_option(&p, "job", 0, job, sizeof job);
    if ((!is_coord && !is_agent) || strcmp(job, c->job) != 0) {
      tg_chaos_proc_clear(&p);
      continue;
    }
    if (is_coord) {
      if (!tg_chaos_proc_option(&p, "listen", 0, addr, sizeof addr)) snprintf(addr, sizeof addr, "%s", coord_dflt.listen);
      if (!listed(c->coordinators, addr)) {
        tg_chaos_proc_clear(&p);
        continue;
      }
      if (c->cfg.coordinators == TG_CHAOS_MAX_COORDINATORS) {
        tg_chaos_proc_clear(&p);
        snprintf(err, errlen, "job %s: more than %d tg-coordinator processes listen at %s", c->job,
                 TG_CHAOS_MAX_COORDINATORS, c->coordinators);
        goto err;
      }
      int k = c->cfg.coordinators++;
      if (!tg_chaos_proc_option(&p, "id", 0, c->coord_ids[k], sizeof c->coord_ids[k]))
        snprintf(c->coord_ids[k], sizeof c->coord_ids[k], "pid-%d", (int)p.pid);
      shape->min_nodes = (int)int_option(&p, "min-nodes", 0, coord_dflt.policy.min_nodes);
      c->cfg.max_nodes = (int)int_option(&p, "max-nodes", 0, coord_dflt.policy.max_nodes);
      shape->slots = (int)int_option(&p, "slots", 0, coord_dflt.policy.slots_per_node);
      shape->heartbeat_timeout_ms = int_option(&p, "heartbeat-timeout-ms", 0, coord_dflt.heartbeat_timeout_ms);
      c->found_coord[k] = p;
      continue;
    }
    if (!tg_chaos_proc_option(&p, "coordinators", 0, addr, sizeof addr))
      snprintf(addr, sizeof addr, "%s", agent_dflt.coordinators);
    if (!overlap(addr, c->coordinators)) { /* an agent of another job with the same id */
      tg_chaos_proc_clear(&p);
      continue;
    }
    if (n_agents == TG_CHAOS_MAX_NODES) {
      tg_chaos_proc_clear(&p);
      snprintf(err, errlen, "job %s: more than %d agents on this machine; tg-chaos drives at most %d", c->job,
               TG_CHAOS_MAX_NODES, TG_CHAOS_MAX_NODES);
      goto err;
    }
    found_agent *a = &agents[n_agents++];
    a->proc = p;
    if (!tg_chaos_proc_option(&p, "node", 0, a->node, sizeof a->node)) {
      snprintf(err, errlen, "agent pid %d of job %s has no --node", (int)p.pid, c->job);
      goto err;
    }
  }
  if (n_agents == 0) {
    snprintf(err, errlen, "no tg-agent of job %s (coordinators %s) runs on this machine (or none this user may "
             "read in /proc)", c->job, c->coordinators);
    goto err;
  }
  qsort(agents, (size_t)n_agents, sizeof *agents, found_cmp);
  int slots = 0;
  for (int i = 0; i < n_agents; i++) {
    found_agent *a = &agents[i];
    if (i > 0 && strcmp(a->node, agents[i - 1].node) == 0) {
      snprintf(err, errlen, "two agents of job %s claim node %s (pids %d and %d)", c->job, a->node,
               (int)agents[i - 1].proc.pid, (int)a->proc.pid);
      goto err;
    }
    if (!tg_chaos_proc_option(&a->proc, "log-dir", 0, c->log_dir[i], sizeof c->log_dir[i])) {
      snprintf(err, errlen, "agent %s (pid %d) runs without --log-dir: tg-chaos reads its trainers' logs to see "
               "when they train again", a->node, (int)a->proc.pid);
      goto err;
    }
    if (c->log_dir[i][0] != '/') { /* relative to the agent's directory */
      char rel[512];
      snprintf(rel, sizeof rel, "%s", c->log_dir[i]);
      snprintf(c->log_dir[i], sizeof c->log_dir[i], "%.250s/%.250s", a->proc.cwd, rel);
    }
    tg_chaos_proc_option(&a->proc, "fake-devices", 0, c->fake_dir[i], sizeof c->fake_dir[i]);
    tg_chaos_proc_option(&a->proc, "inject-dir", 1, c->inject_dir[i], sizeof c->inject_dir[i]);
    if (i == 0) {
      tg_chaos_proc_option(&a->proc, "ckpt-dir", 0, c->ckpt_dir, sizeof c->ckpt_dir);
      shape->persist_every = int_option(&a->proc, "persist-every", 0, agent_dflt.persist_every);
      shape->hang_floor_ms = int_option(&a->proc, "hang-floor-ms", 0, agent_dflt.hang_floor_ms);
      shape->ckpt_mib = int_option(&a->proc, "ckpt-mib", 0, agent_dflt.ckpt_mib);
      *steps = int_option(&a->proc, "steps", 1, 0);
    }
    int s = (int)int_option(&a->proc, "slots", 0, agent_dflt.slots);
    if (s > slots) slots = s;
    snprintf(c->node_ids[i], sizeof c->node_ids[i], "%s", a->node);
    c->found_agent[i] = a->proc;
    memset(&a->proc, 0, sizeof a->proc); /* owned by c now */
    a->proc.netns_fd = -1;
    c->cfg.nodes = i + 1;
  }
  if (slots > TG_CHAOS_MAX_SLOTS) {
    snprintf(err, errlen, "job %s: agents with %d slots; tg-chaos drives at most %d per node", c->job, slots,
             TG_CHAOS_MAX_SLOTS);
    goto err;
  }
  if (!c->cfg.coordinators) { /* none here: what the agents tell */
    shape->min_nodes = 1; /* the least it could be */
    c->cfg.max_nodes = n_agents;
    shape->heartbeat_timeout_ms = coord_dflt.heartbeat_timeout_ms;
    shape->slots = slots;
  } else if (shape->slots < slots) {
    shape->slots = slots;
  }
  shape->agents = c->cfg.max_nodes < n_agents ? c->cfg.max_nodes : n_agents;
  shape->spares = n_agents - shape->agents;
  if (shape->min_nodes > shape->agents) shape->min_nodes = shape->agents;
  shape->coordinators = c->cfg.coordinators;
  shape->etcd_members = 0;
  c->spec = *shape;
  free(pids);
  free(agents);
  return c;
err:
  for (int i = 0; agents && i < n_agents; i++) tg_chaos_proc_clear(&agents[i].proc);
  free(pids);
  free(agents);
  if (c) tg_chaos_cluster_free(c);
  return NULL;
}
