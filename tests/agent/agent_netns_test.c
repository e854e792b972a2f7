/* tg-agents on separate hosts (network namespaces joined by a bridge): the
 * coordinator and etcd on host 0, an agent on each of hosts 1 and 2. When
 * the traffic between the two agents is dropped (the coordinator still
 * reaches both), each agent's probes report a NETWORK_PARTITION naming the
 * other, and the coordinator's fault log shows them. Needs root; skips
 * where network namespaces are unavailable unless TG_REQUIRE_NETNS=1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "tests/harness/netns.h"
#include "tests/harness/proc.h"

#define WAIT_MS 20000

static tg_netns *net;
static tg_proc *procs[8];
static int n_procs;
static char dir[512], sockdir[64];

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void start_on(int host, const char *name, const char *const *argv) {
  char log[700], err[256];
  snprintf(log, sizeof log, "%s/%s.log", dir, name);
  procs[n_procs] = tg_netns_start(net, host, argv, log, err, sizeof err);
  if (!procs[n_procs]) fail_msg("%s: %s", name, err);
  n_procs++;
}

/* tgctl on host 0, where the coordinator is. */
static int tgctl(char *out, size_t outlen, const char *a1, const char *a2) {
  char coord[64];
  snprintf(coord, sizeof coord, "%s:7070", tg_netns_addr(net, 0));
  const char *argv[] = {"coordinator/tgctl", "--coordinator", coord, a1, a2, NULL};
  int status = 0;
  if (tg_netns_exec(net, 0, argv, 10000, out, outlen, &status) != 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Whether the coordinator lists a NETWORK_PARTITION from `node` about `peer`. */
static int partition_reported(const char *node, const char *peer) {
  static char out[1 << 16];
  if (tgctl(out, sizeof out, "--json", "faults") != 0) return 0;
  cJSON *j = cJSON_Parse(out);
  int found = 0;
  for (int i = 0; j && i < cJSON_GetArraySize(j); i++) {
    cJSON *f = cJSON_GetArrayItem(j, i);
    found |= strcmp(cJSON_GetObjectItem(f, "kind")->valuestring, "NETWORK_PARTITION") == 0 &&
             strcmp(cJSON_GetObjectItem(f, "node_id")->valuestring, node) == 0 &&
             strcmp(cJSON_GetObjectItem(f, "component")->valuestring, peer) == 0;
  }
  cJSON_Delete(j);
  return found;
}

static void test_partition_between_agents_is_reported(void **state) {
  char why[256], err[256];
  if (!tg_netns_available(why, sizeof why)) {
    if (tg_netns_required()) fail_msg("network namespaces are required here: %s", why);
    fprintf(stderr, "skipped: %s\n", why);
    skip();
  }
  net = tg_netns_new(3, err, sizeof err);
  if (!net) fail_msg("%s", err);
  const char *h0 = tg_netns_addr(net, 0);
  char client[64], peer[64], cluster[80], etcd_ep[64], coord_listen[64], coord[64], data[600];
  snprintf(client, sizeof client, "http://%s:2379", h0);
  snprintf(peer, sizeof peer, "http://%s:2380", h0);
  snprintf(cluster, sizeof cluster, "e=%s", peer);
  snprintf(etcd_ep, sizeof etcd_ep, "%s:2379", h0);
  snprintf(coord_listen, sizeof coord_listen, "%s:7070", h0);
  snprintf(coord, sizeof coord, "%s:7070", h0);
  snprintf(data, sizeof data, "%s/etcd-data", dir);
  const char *etcd[] = {"etcd", "--name", "e", "--data-dir", data, "--listen-client-urls", client,
                        "--advertise-client-urls", client, "--listen-peer-urls", peer,
                        "--initial-advertise-peer-urls", peer, "--initial-cluster", cluster, NULL};
  start_on(0, "etcd", etcd);
  const char *co[] = {"coordinator/tg-coordinator", "--job", "netns", "--listen", coord_listen, "--http", "off", "--etcd",
                      etcd_ep, "--min-nodes", "2", "--max-nodes", "2", "--slots", "1",
                      "--heartbeat-interval-ms", "100", "--heartbeat-timeout-ms", "3000",
                      "--last-call-ms", "100", NULL};
  start_on(0, "coordinator", co);
  for (int h = 1; h <= 2; h++) {
    char node[16], listen[64], sock[128];
    snprintf(node, sizeof node, "node%d", h);
    snprintf(listen, sizeof listen, "%s:7100", tg_netns_addr(net, h));
    snprintf(sock, sizeof sock, "%s/%s.sock", sockdir, node);
    const char *ag[] = {"agent/tg-agent", "--node", node, "--job", "netns", "--coordinators", coord,
                        "--socket", sock, "--listen", listen, "--slots", "1", "--probe-period-ms", "200",
                        NULL};
    start_on(h, node, ag);
  }
  /* The world forms; then the agents probe each other (their buddies). */
  static char out[1 << 14];
  int64_t deadline = mono_ms() + WAIT_MS;
  while (!(tgctl(out, sizeof out, "status", NULL) == 0 && strstr(out, "generation   1")) &&
         mono_ms() < deadline)
    usleep(100000);
  if (!strstr(out, "generation   1")) fail_msg("no world formed: %s", out);
  usleep(1000000);
  assert_false(partition_reported("node1", "node2"));

  /* Drop everything between the two agents; both still reach host 0. */
  if (tg_netns_block(net, 1, 2, err, sizeof err) != 0) {
    /* Without nft, cut host 2 off entirely: node1 still sees node2 vanish. */
    if (tg_netns_cut(net, 2, err, sizeof err) != 0) fail_msg("cannot cut the link: %s", err);
  }
  deadline = mono_ms() + WAIT_MS;
  while (!partition_reported("node1", "node2") && mono_ms() < deadline) usleep(100000);
  assert_true(partition_reported("node1", "node2"));
}

static int teardown(void **state) {
  for (int i = n_procs - 1; i >= 0; i--) {
    tg_proc_stop(procs[i], 3000);
    tg_proc_free(procs[i]);
  }
  tg_netns_free(net);
  const char *argv[] = {"/bin/rm", "-rf", sockdir, NULL};
  int status;
  tg_proc_run(argv, NULL, 5000, NULL, 0, &status);
  return 0;
}

static int setup(void **state) {
  if (tg_proc_temp_dir("agent-netns", dir, sizeof dir) != 0) return -1;
  snprintf(sockdir, sizeof sockdir, "/tmp/tg-agent-netns-XXXXXX");
  return mkdtemp(sockdir) ? 0 : -1;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_partition_between_agents_is_reported),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
