/* tg-simagent: one simulated node agent as a process of its own, for the
 * demo and for trying a coordinator by hand. It registers, heartbeats and
 * prints every world it is given, until SIGINT/SIGTERM (then it leaves
 * gracefully) or SIGKILL (a lost node, as far as the coordinator knows). */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/config/config.h"
#include "common/log/log.h"
#include "tests/simagent/simagent.h"

static volatile sig_atomic_t stop;
static void on_signal(int sig) { stop = sig; }

int main(int argc, char **argv) {
  char coordinators[512] = "127.0.0.1:7070", job[64] = "default", node[64] = "";
  int64_t slots = 1;
  const tg_option opts[] = {
      {"coordinators", TG_OPT_STRING, coordinators, sizeof coordinators, 0, 0,
       "coordinator addresses, comma-separated"},
      {"job", TG_OPT_STRING, job, sizeof job, 0, 0, "job id"},
      {"node", TG_OPT_STRING, node, sizeof node, 0, 0, "this node's id (required)"},
      {"slots", TG_OPT_INT, &slots, 0, 1, 1024, "ranks this node offers"},
  };
  char err[256];
  switch (tg_config_parse(opts, 4, argc, argv,
                          "usage: tg-simagent --node ID [--coordinators A,B] [--job J] [--slots N]\n\n"
                          "A simulated node agent: speaks the coordinator's API, runs no trainers.",
                          NULL, err, sizeof err)) {
  case TG_CONFIG_HELP: return 0;
  case TG_CONFIG_ERROR: fprintf(stderr, "tg-simagent: %s\n", err); return 2;
  case TG_CONFIG_OK: break;
  }
  if (!node[0]) {
    fprintf(stderr, "tg-simagent: --node is required\n");
    return 2;
  }
  tg_log_init("tg-simagent", TG_LOG_WARN);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGPIPE, SIG_IGN);
  setvbuf(stdout, NULL, _IOLBF, 0);
  tg_sim_config cfg = {.coordinators = coordinators, .job_id = job, .node_id = node, .slots = (uint32_t)slots};
  tg_sim_agent *a = tg_sim_agent_start(&cfg, err, sizeof err);
  if (!a) {
    fprintf(stderr, "tg-simagent: %s\n", err);
    return 1;
  }
  uint64_t seen = 0, registrations = 0;
  while (!stop) {
    tg_sim_agent_wait_generation(a, seen + 1, 200);
    tg_sim_state s;
    tg_sim_agent_state(a, &s);
    if (s.registrations != registrations) {
      registrations = s.registrations;
      printf("%s: registered with %s (incarnation %" PRIu64 ")\n", node, s.coordinator, s.incarnation);
    }
    if (s.generation > seen) {
      seen = s.generation;
      if (s.position >= 0)
        printf("%s: generation %" PRIu64 " (%s): %u ranks, this node holds ranks %" PRId64 "-%" PRId64 "\n",
               node, s.generation, s.reason, s.world_size, (int64_t)s.position * slots,
               (int64_t)s.position * slots + slots - 1);
      else
        printf("%s: generation %" PRIu64 " (%s): %u ranks, this node is a spare\n", node, s.generation,
               s.reason, s.world_size);
    }
  }
  tg_rpc_status st = {0};
  tg_sim_agent_leave(a, &st);
  tg_sim_agent_free(a);
  return 0;
}
