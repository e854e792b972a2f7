/* tg-coordinator: the daemon. Parses flags and an optional config file,
 * builds the coordinator (coordinator.h) and runs until SIGINT/SIGTERM,
 * when it resigns leadership so a standby takes over at once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config/config.h"
#include "common/daemon/daemon.h"
#include "common/log/log.h"
#include "coordinator/coordinator.h"

static const char usage[] =
    "usage: tg-coordinator [--config FILE] [options]\n"
    "\n"
    "Keeps a Tardigrade job's rendezvous and membership in etcd: node agents\n"
    "register and heartbeat here, and every new world (generation, ranks) is\n"
    "committed to etcd and pushed to them. Run two or more against the same\n"
    "etcd and job: one leads, the others stand by and take over if it dies.";

int main(int argc, char **argv) {
  tg_coord_config cfg;
  tg_coord_config_defaults(&cfg);
  char log_level[16] = "info", tls_ca[512] = "", tls_cert[512] = "", tls_key[512] = "";
  char etcd_ca[512] = "", etcd_cert[512] = "", etcd_key[512] = "";
  int64_t min_nodes = cfg.policy.min_nodes, max_nodes = cfg.policy.max_nodes;
  int64_t slots = cfg.policy.slots_per_node, granularity = cfg.policy.granularity;
  int64_t last_call_ms = cfg.policy.last_call_ms, threads = cfg.threads;
  int tls_mutual = 0;
  const tg_option opts[] = {
      {"id", TG_OPT_STRING, cfg.coordinator_id, sizeof cfg.coordinator_id, 0, 0,
       "this coordinator's name among the job's coordinators; empty: coordinator-PID"},
      {"job", TG_OPT_STRING, cfg.job_id, sizeof cfg.job_id, 0, 0, "job id (1..63 of [A-Za-z0-9._-])"},
      {"listen", TG_OPT_STRING, cfg.listen, sizeof cfg.listen, 0, 0,
       "gRPC address for agents and tgctl: host:port or unix:/path"},
      {"advertise", TG_OPT_STRING, cfg.advertise, sizeof cfg.advertise, 0, 0,
       "address agents use to reach this coordinator; empty: --listen"},
      {"etcd", TG_OPT_STRING, cfg.etcd_endpoints, sizeof cfg.etcd_endpoints, 0, 0,
       "etcd endpoints, comma-separated host:port"},
      {"etcd-user", TG_OPT_STRING, cfg.etcd_user, sizeof cfg.etcd_user, 0, 0, "etcd user (auth)"},
      {"etcd-password", TG_OPT_STRING, cfg.etcd_password, sizeof cfg.etcd_password, 0, 0,
       "etcd password (prefer a config file readable only by its owner)"},
      {"etcd-ca", TG_OPT_STRING, etcd_ca, sizeof etcd_ca, 0, 0, "PEM CA that verifies etcd (enables TLS)"},
      {"etcd-cert", TG_OPT_STRING, etcd_cert, sizeof etcd_cert, 0, 0, "PEM client certificate for etcd"},
      {"etcd-key", TG_OPT_STRING, etcd_key, sizeof etcd_key, 0, 0, "PEM client key for etcd"},
      {"tls-cert", TG_OPT_STRING, tls_cert, sizeof tls_cert, 0, 0,
       "PEM server certificate for agents (enables TLS)"},
      {"tls-key", TG_OPT_STRING, tls_key, sizeof tls_key, 0, 0, "PEM server key"},
      {"tls-ca", TG_OPT_STRING, tls_ca, sizeof tls_ca, 0, 0, "PEM CA that verifies agents' certificates"},
      {"tls-mutual", TG_OPT_BOOL, &tls_mutual, 0, 0, 0, "require client certificates (mutual TLS)"},
      {"min-nodes", TG_OPT_INT, &min_nodes, 0, 1, 65536, "smallest world, in nodes"},
      {"max-nodes", TG_OPT_INT, &max_nodes, 0, 1, 65536, "largest world; more nodes wait as spares"},
      {"slots", TG_OPT_INT, &slots, 0, 1, 1024, "trainer slots (ranks) per node"},
      {"granularity", TG_OPT_INT, &granularity, 0, 1, 1 << 20,
       "world size (ranks) is kept a multiple of this (tensor x pipeline group)"},
      {"last-call-ms", TG_OPT_INT, &last_call_ms, 0, 0, 600000,
       "after min is reached, wait this long for more nodes before forming a world"},
      {"heartbeat-interval-ms", TG_OPT_INT, &cfg.heartbeat_interval_ms, 0, 10, 60000,
       "how often agents heartbeat"},
      {"heartbeat-timeout-ms", TG_OPT_INT, &cfg.heartbeat_timeout_ms, 0, 20, 600000,
       "a node silent this long is dead"},
      {"leader-ttl-s", TG_OPT_INT, &cfg.leader_ttl_s, 0, 1, 60,
       "leader lease; a standby takes over within about this long"},
      {"quarantine-faults", TG_OPT_INT, &cfg.quarantine_faults, 0, 0, 1000,
       "faults within the window that quarantine a node (0: never)"},
      {"quarantine-window-ms", TG_OPT_INT, &cfg.quarantine_window_ms, 0, 1, INT64_MAX / 4,
       "window for counting faults"},
      {"quarantine-cooldown-ms", TG_OPT_INT, &cfg.quarantine_cooldown_ms, 0, 1, INT64_MAX / 4,
       "how long a quarantined node stays out"},
      {"store-address", TG_OPT_STRING, cfg.store_address, sizeof cfg.store_address, 0, 0,
       "where trainers rendezvous (gloo store): etcd endpoints; empty: --etcd"},
      {"threads", TG_OPT_INT, &threads, 0, 1, 64, "RPC handler threads"},
      {"http", TG_OPT_STRING, cfg.http_listen, sizeof cfg.http_listen, 0, 0,
       "dashboard, /metrics and JSON API: host:port (port 0: any free one, logged), or off"},
      {"log-level", TG_OPT_STRING, log_level, sizeof log_level, 0, 0, "debug, info, warn or error"},
  };
  char err[512];
  switch (tg_config_parse(opts, sizeof opts / sizeof opts[0], argc, argv, usage, NULL, err, sizeof err)) {
  case TG_CONFIG_HELP: return 0;
  case TG_CONFIG_ERROR: fprintf(stderr, "tg-coordinator: %s\n", err); return 2;
  case TG_CONFIG_OK: break;
  }
  if (tg_daemon_logging("tg-coordinator", log_level) != 0) return 2;
  cfg.policy.min_nodes = (uint32_t)min_nodes;
  cfg.policy.max_nodes = (uint32_t)max_nodes;
  cfg.policy.slots_per_node = (uint32_t)slots;
  cfg.policy.granularity = (uint32_t)granularity;
  cfg.policy.last_call_ms = last_call_ms;
  cfg.threads = (int)threads;

  tg_rpc_tls tls = {tls_ca[0] ? tls_ca : NULL, tls_cert, tls_key, tls_mutual, NULL};
  tg_rpc_tls etcd_tls = {etcd_ca, etcd_cert[0] ? etcd_cert : NULL, etcd_key[0] ? etcd_key : NULL, 0, NULL};
  if (tls_cert[0] || tls_key[0]) {
    if (!tls_cert[0] || !tls_key[0] || (tls_mutual && !tls_ca[0])) {
      fprintf(stderr, "tg-coordinator: TLS needs --tls-cert and --tls-key (and --tls-ca with --tls-mutual)\n");
      return 2;
    }
    cfg.tls = &tls;
  }
  if (etcd_ca[0]) cfg.etcd_tls = &etcd_tls;

  tg_daemon_prepare();

  tg_coord *c = tg_coord_new(&cfg, err, sizeof err);
  if (!c || tg_coord_start(c, err, sizeof err) != 0) {
    TG_ERROR("cannot start: %s", err);
    tg_coord_free(c);
    return 1;
  }
  int sig = tg_daemon_wait();
  TG_INFO("signal %d: resigning and stopping", sig);
  tg_coord_free(c);
  return 0;
}
