/* tg-agent: the node agent daemon. Parses flags and an optional config
 * file, builds the agent (agent.h) and runs until SIGTERM/SIGINT, when it
 * drains: stops its trainers, stops replicating and leaves the job. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent.h"
#include "common/config/config.h"
#include "common/daemon/daemon.h"
#include "common/log/log.h"

static const char usage[] =
    "usage: tg-agent --node ID --socket PATH [options] [-- TRAINER COMMAND...]\n"
    "\n"
    "The Tardigrade node agent: registers this node with the job's coordinators,\n"
    "serves the node's trainer processes on a unix socket, starts and supervises\n"
    "them (one per slot, when a trainer command follows --), checks GPU and NIC\n"
    "health, detects hung and straggling ranks, and reports every fault.\n"
    "Each shard the trainers write to the node's in-memory checkpoint store is\n"
    "pushed to a buddy agent (the next node of the world); a step is committed\n"
    "once every shard of it is held by two nodes. With --ckpt-dir, every\n"
    "--persist-every-th step is also written to disk, off the trainers' path.\n"
    "Trainers find the socket in $TG_AGENT_SOCKET, their slot in $TG_SLOT and the\n"
    "node's checkpoint store in $TG_CKPT_SHM.";

int main(int argc, char **argv) {
  tg_agent_config cfg;
  tg_agent_config_defaults(&cfg);
  char log_level[16] = "info", tls_ca[512] = "", tls_cert[512] = "", tls_key[512] = "";
  const tg_option opts[] = {
      {"node", TG_OPT_STRING, cfg.node_id, sizeof cfg.node_id, 0, 0,
       "this node's id, stable across agent restarts (1..63 of [A-Za-z0-9._-])"},
      {"job", TG_OPT_STRING, cfg.job_id, sizeof cfg.job_id, 0, 0, "job id"},
      {"coordinators", TG_OPT_STRING, cfg.coordinators, sizeof cfg.coordinators, 0, 0,
       "coordinator addresses, comma-separated; the leader is found among them"},
      {"socket", TG_OPT_STRING, cfg.socket_path, sizeof cfg.socket_path, 0, 0,
       "unix socket path of the trainers' local service"},
      {"listen", TG_OPT_STRING, cfg.listen, sizeof cfg.listen, 0, 0,
       "host:port of the peer service (probes and shard replication from other agents)"},
      {"advertise", TG_OPT_STRING, cfg.advertise, sizeof cfg.advertise, 0, 0,
       "address other agents use to reach this one; empty: --listen"},
      {"slots", TG_OPT_INT, &cfg.slots, 0, 1, 64, "trainer processes (ranks) on this node"},
      {"log-dir", TG_OPT_STRING, cfg.log_dir, sizeof cfg.log_dir, 0, 0,
       "directory for the trainers' logs (slot-N.log)"},
      {"fake-devices", TG_OPT_STRING, cfg.fake_devices, sizeof cfg.fake_devices, 0, 0,
       "use fake GPUs/NICs from this directory (tests, tg-chaos); empty: NVML and /sys"},
      {"nics", TG_OPT_STRING, cfg.nics, sizeof cfg.nics, 0, 0,
       "NICs to watch, comma-separated; empty: all but loopback"},
      {"restart-max", TG_OPT_INT, &cfg.restart_max, 0, 0, 64,
       "trainer restarts allowed per slot within the window"},
      {"restart-window-ms", TG_OPT_INT, &cfg.restart_window_ms, 0, 1, INT64_MAX / 4,
       "window for counting restarts"},
      {"hang-factor", TG_OPT_INT, &cfg.hang_factor, 0, 1, 1000,
       "a rank is hung after this many typical step times without progress"},
      {"hang-floor-ms", TG_OPT_INT, &cfg.hang_floor_ms, 0, 1, INT64_MAX / 4, "shortest hang timeout"},
      {"hang-ceiling-ms", TG_OPT_INT, &cfg.hang_ceiling_ms, 0, 1, INT64_MAX / 4, "longest hang timeout"},
      {"straggler-percent", TG_OPT_INT, &cfg.straggler_percent, 0, 101, 100000,
       "a rank whose step time stays above this % of the typical one is a straggler"},
      {"probe-period-ms", TG_OPT_INT, &cfg.probe_period_ms, 0, 0, 600000,
       "how often to probe buddy agents; 0: never"},
      {"health-period-ms", TG_OPT_INT, &cfg.health_period_ms, 0, 100, 600000,
       "how often to check GPUs and NICs"},
      {"ckpt-mib", TG_OPT_INT, &cfg.ckpt_mib, 0, 1, 1 << 20,
       "size of the node's in-memory checkpoint store (POSIX shared memory), MiB"},
      {"ckpt-dir", TG_OPT_STRING, cfg.ckpt_dir, sizeof cfg.ckpt_dir, 0, 0,
       "persist checkpoint shards under this directory (DIR/<job>/<step>/); empty: never, "
       "memory copies only"},
      {"persist-every", TG_OPT_INT, &cfg.persist_every, 0, 1, INT64_MAX / 4,
       "with --ckpt-dir: persist steps that are multiples of this (the newest 2 are kept)"},
      {"tls-ca", TG_OPT_STRING, tls_ca, sizeof tls_ca, 0, 0,
       "PEM CA that verifies the coordinators (enables TLS)"},
      {"tls-cert", TG_OPT_STRING, tls_cert, sizeof tls_cert, 0, 0, "PEM client certificate"},
      {"tls-key", TG_OPT_STRING, tls_key, sizeof tls_key, 0, 0, "PEM client key"},
      {"log-level", TG_OPT_STRING, log_level, sizeof log_level, 0, 0, "debug, info, warn or error"},
  };
  char err[512];
  int n_args = 0;
  switch (tg_config_parse(opts, sizeof opts / sizeof opts[0], argc, argv, usage, &n_args, err,
                          sizeof err)) {
  case TG_CONFIG_HELP: return 0;
  case TG_CONFIG_ERROR: fprintf(stderr, "tg-agent: %s\n", err); return 2;
  case TG_CONFIG_OK: break;
  }
  if (!cfg.node_id[0] || !cfg.socket_path[0]) {
    fprintf(stderr, "tg-agent: --node and --socket are required (see --help)\n");
    return 2;
  }
  if (tg_daemon_logging("tg-agent", log_level) != 0) return 2;
  /* What follows -- is the trainer command; the parser moved it to argv[1..]. */
  if (n_args > 0) {
    argv[1 + n_args] = NULL;
    cfg.trainer_argv = (const char *const *)&argv[1];
  }
  tg_rpc_tls tls = {tls_ca, tls_cert[0] ? tls_cert : NULL, tls_key[0] ? tls_key : NULL, 0, NULL};
  if (tls_ca[0]) cfg.coordinator_tls = &tls;

  tg_daemon_prepare();

  tg_agent *a = tg_agent_new(&cfg, err, sizeof err);
  if (!a || tg_agent_start(a, err, sizeof err) != 0) {
    TG_ERROR("cannot start: %s", err);
    tg_agent_free(a);
    return 1;
  }
  int sig = tg_daemon_wait();
  TG_INFO("signal %d: draining", sig);
  tg_agent_drain(a);
  tg_agent_free(a);
  return 0;
}
