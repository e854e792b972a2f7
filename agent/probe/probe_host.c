/* probe_host: one node's probe server and prober in a process of its own,
 * so that a multi-host test can run one per network namespace and break
 * the network between them (probe_netns_test.c), and so a person can try
 * probes between two machines by hand.
 *
 * It serves Replication.Probe on --listen as node --node, probes every
 * peer in --peers ("id=host:port,..."), and prints one line per event
 * ("event NETWORK_PARTITION node=a peer=b ...") and, every --stats-ms, one
 * per peer ("stats node=a peer=b sent=... reachable=1 partitioned=0 ...")
 * on stdout, until SIGINT/SIGTERM or --run-ms. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "agent/probe/probe.h"
#include "common/config/config.h"
#include "common/log/log.h"
#include "common/rpc/rpc.h"

static volatile sig_atomic_t stop;
static void on_signal(int sig) { stop = sig; }

static void print_event(const tg_probe_event *ev, void *user) {
  char line[512];
  printf("event %s\n", tg_probe_event_format(ev, line, sizeof line));
}

static void print_stats(tg_prober *p, const char *node) {
  tg_probe_peer_stats st[TG_PROBE_MAX_PEERS];
  size_t n = tg_prober_stats(p, st, TG_PROBE_MAX_PEERS);
  for (size_t i = 0; i < n && i < TG_PROBE_MAX_PEERS; i++)
    printf("stats node=%s peer=%s sent=%" PRIu64 " lost=%" PRIu64 " loss=%.2f rtt_median_us=%" PRId64
           " rtt_p99_us=%" PRId64 " reachable=%d partitioned=%d slow=%d\n",
           node, st[i].node_id, st[i].probes_sent, st[i].probes_lost, st[i].loss, st[i].rtt_median_us,
           st[i].rtt_p99_us, st[i].probes_sent > 0 && st[i].consecutive_failures == 0, st[i].partitioned,
           st[i].slow);
}

/* Splits "id=addr,id=addr" in place into peers; -1 on a malformed list. */
static int parse_peers(char *text, tg_probe_peer *peers, size_t *n) {
  *n = 0;
  char *save = NULL;
  for (char *item = strtok_r(text, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(item, '=');
    if (!eq || eq == item || !eq[1] || *n == TG_PROBE_MAX_PEERS) return -1;
    *eq = '\0';
    peers[*n].node_id = item;
    peers[*n].address = eq + 1;
    (*n)++;
  }
  return 0;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv) {
  char node[TG_PROBE_NODE_ID_MAX] = "", listen[TG_PROBE_ADDRESS_MAX] = "", peer_list[4096] = "";
  int64_t period_ms = 1000, timeout_ms = 500, window = 20, failures = 3, loss_percent = 50, slow_rtt_ms = 0,
          stats_ms = 0, run_ms = 0;
  const tg_option opts[] = {
      {"node", TG_OPT_STRING, node, sizeof node, 0, 0, "this node's id (required)"},
      {"listen", TG_OPT_STRING, listen, sizeof listen, 0, 0, "host:port to serve probes on (required)"},
      {"peers", TG_OPT_STRING, peer_list, sizeof peer_list, 0, 0, "peers to probe: id=host:port,..."},
      {"period-ms", TG_OPT_INT, &period_ms, 0, 10, 3600000, "between probes to one peer"},
      {"timeout-ms", TG_OPT_INT, &timeout_ms, 0, 1, 600000, "deadline of one probe"},
      {"window", TG_OPT_INT, &window, 0, 1, TG_PROBE_MAX_WINDOW, "probes kept for loss and RTT"},
      {"consecutive-failures", TG_OPT_INT, &failures, 0, 1, TG_PROBE_MAX_WINDOW,
       "failed probes in a row that are a partition"},
      {"loss-percent", TG_OPT_INT, &loss_percent, 0, 1, 100, "window loss above this is a partition"},
      {"slow-rtt-ms", TG_OPT_INT, &slow_rtt_ms, 0, 0, 3600000, "median RTT above this is slow; 0: none"},
      {"stats-ms", TG_OPT_INT, &stats_ms, 0, 0, 3600000, "print peer statistics this often; 0: never"},
      {"run-ms", TG_OPT_INT, &run_ms, 0, 0, INT64_MAX, "exit after this long; 0: until a signal"},
  };
  char err[256];
  switch (tg_config_parse(opts, sizeof opts / sizeof opts[0], argc, argv,
                          "usage: probe_host --node ID --listen HOST:PORT [--peers ID=HOST:PORT,...] ...\n\n"
                          "Serves and sends Replication.Probe; prints events and statistics.",
                          NULL, err, sizeof err)) {
  case TG_CONFIG_HELP: return 0;
  case TG_CONFIG_ERROR: fprintf(stderr, "probe_host: %s\n", err); return 2;
  case TG_CONFIG_OK: break;
  }
  tg_probe_peer peers[TG_PROBE_MAX_PEERS];
  size_t n_peers = 0;
  if (!node[0] || !listen[0] || parse_peers(peer_list, peers, &n_peers) != 0) {
    fprintf(stderr, "probe_host: need --node, --listen and --peers as id=host:port,...\n");
    return 2;
  }
  tg_log_init("probe_host", TG_LOG_INFO);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGPIPE, SIG_IGN);
  setvbuf(stdout, NULL, _IOLBF, 0);

  int rc = 1;
  tg_probe_service *svc = NULL;
  tg_prober *prober = NULL;
  tg_rpc_server *srv = tg_rpc_server_new(NULL, err, sizeof err);
  if (!srv || !(svc = tg_probe_register_service(srv, node, err, sizeof err))) goto out;
  int port = tg_rpc_server_listen(srv, listen, NULL, err, sizeof err);
  if (port < 0 || tg_rpc_server_start(srv, err, sizeof err) != 0) goto out;
  tg_prober_config cfg = {
      .node_id = node,
      .period_ms = period_ms,
      .timeout_ms = timeout_ms,
      .window = (uint32_t)window,
      .loss_threshold = (double)loss_percent / 100,
      .consecutive_failures = (uint32_t)failures,
      .slow_rtt_ms = slow_rtt_ms,
      .on_event = print_event,
  };
  if (!(prober = tg_prober_new(&cfg, err, sizeof err)) ||
      tg_prober_set_peers(prober, peers, n_peers, err, sizeof err) != 0)
    goto out;
  printf("ready node=%s listen=%s port=%d peers=%zu\n", node, listen, port, n_peers);
  int64_t start = mono_ms(), next_stats = start + stats_ms;
  while (!stop && (run_ms == 0 || mono_ms() - start < run_ms)) {
    struct timespec ts = {0, 20 * 1000000};
    nanosleep(&ts, NULL);
    if (stats_ms > 0 && mono_ms() >= next_stats) {
      print_stats(prober, node);
      next_stats += stats_ms;
    }
  }
  rc = 0;
out:
  if (rc != 0) fprintf(stderr, "probe_host: %s\n", err);
  tg_prober_free(prober);
  tg_rpc_server_free(srv, 0);
  tg_probe_service_free(svc);
  return rc;
}
