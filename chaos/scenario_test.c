/* Scenario files: every shipped scenario parses, and bad input gets one
 * line naming the field and what is wrong. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "chaos/scenario.h"

#define BASE                                                                      \
  "\"name\": \"t\", \"cluster\": {\"agents\": 4, \"slots\": 2, \"coordinators\": 2}, " \
  "\"training\": {\"steps\": 100}"

/* Parses text; expects failure with `needle` in the message (NULL: success). */
static void expect(const char *text, const char *needle) {
  char err[512] = "";
  tg_chaos_scenario *s = tg_chaos_scenario_parse(text, strlen(text), 0, err, sizeof err);
  if (!needle) {
    if (!s) fail_msg("%s: %s", text, err);
  } else {
    if (s) fail_msg("accepted: %s", text);
    if (!strstr(err, needle)) fail_msg("%s: error \"%s\" lacks \"%s\"", text, err, needle);
  }
  tg_chaos_scenario_free(s);
}

static void test_shipped_scenarios_parse(void **state) {
  (void)state;
  const char *names[] = {"trainer_crash", "trainer_segv", "hang", "host_loss", "host_return", "drain",
                         "coordinator_crash", "corrupt_replica", "lose_all_copies", "mixed", "soak",
                         "device_faults", "etcd_member_crash", "gpu/trainer_crash_gloo", "gpu/trainer_crash_nccl",
                         "network_partition", "slow_link", "disk_full", "gpu_xid", "gpu_ecc", "gpu_lost",
                         "nic_down", "gpu_thermal", "gpu_pcie", "gpu_row_remap", "nic_flap", "nic_errors",
                         "silent_data_corruption", "nan_loss", "straggler"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char path[256], err[512];
    snprintf(path, sizeof path, "chaos/scenarios/%s.json", names[i]);
    tg_chaos_scenario *s = tg_chaos_scenario_load(path, 0, err, sizeof err);
    if (!s) fail_msg("%s", err);
    tg_chaos_scenario_free(s);
  }
}

static void test_good_scenario(void **state) {
  (void)state;
  const char *text = "{" BASE ", \"seed\": 9, \"faults\": ["
                     "{\"at_step\": 10, \"kind\": \"trainer_crash\", \"target\": {\"node\": \"n2\", \"slot\": 1}},"
                     "{\"at_ms\": 500, \"kind\": \"hang\", \"target\": \"random\"},"
                     "{\"at_step\": 30, \"kind\": \"host_loss\"},"
                     "{\"at_step\": 40, \"kind\": \"host_return\", \"target\": \"random\"},"
                     "{\"at_step\": 50, \"kind\": \"coordinator_crash\"}]}";
  char err[512];
  tg_chaos_scenario *s = tg_chaos_scenario_parse(text, strlen(text), 0, err, sizeof err);
  if (!s) fail_msg("%s", err);
  assert_int_equal(s->n_faults, 5);
  assert_int_equal(s->seed, 9);
  assert_int_equal(s->cluster.min_nodes, 4);
  assert_int_equal(s->cluster.slots, 2);
  assert_int_equal(s->training.width, 32);
  assert_string_equal(s->faults[0].node, "n2");
  assert_int_equal(s->faults[0].slot, 1);
  assert_int_equal(s->faults[0].random_target, 0);
  assert_int_equal(s->faults[1].at_ms, 500);
  assert_int_equal(s->faults[1].at_step, -1);
  assert_int_equal(s->faults[2].random_target, 1);
  assert_int_equal(tg_chaos_node_index(s, "n3"), 3);
  assert_int_equal(tg_chaos_node_index(s, "n4"), -1);
  assert_int_equal(tg_chaos_node_index(s, "n03"), -1);
  tg_chaos_scenario_free(s);
}

/* The kinds injected through tg-train --inject-dir, and a straggler's fields. */
static void test_trainer_number_faults(void **state) {
  (void)state;
  const char *text = "{\"name\": \"t\", \"cluster\": {\"agents\": 3, \"spares\": 1}, "
                     "\"training\": {\"steps\": 100}, \"faults\": ["
                     "{\"at_step\": 10, \"kind\": \"silent_data_corruption\", \"target\": {\"node\": \"n1\", \"slot\": 0}},"
                     "{\"at_step\": 20, \"kind\": \"nan_loss\"},"
                     "{\"at_step\": 30, \"kind\": \"straggler\", \"delay_ms\": 50, \"for_steps\": 5},"
                     "{\"at_step\": 60, \"kind\": \"straggler\"}]}";
  char err[512];
  tg_chaos_scenario *s = tg_chaos_scenario_parse(text, strlen(text), 0, err, sizeof err);
  if (!s) fail_msg("%s", err);
  assert_int_equal(s->faults[0].kind, TG_CHAOS_SILENT_DATA_CORRUPTION);
  assert_int_equal(tg_chaos_kind_target(s->faults[1].kind), TG_CHAOS_TARGET_TRAINER);
  assert_int_equal(s->faults[2].delay_ms, 50);
  assert_int_equal(s->faults[2].for_steps, 5);
  assert_int_equal(s->faults[3].delay_ms, TG_CHAOS_STRAGGLER_DELAY_MS);
  assert_int_equal(s->faults[3].for_steps, TG_CHAOS_STRAGGLER_STEPS);
  tg_chaos_scenario_free(s);

  expect("{" BASE ", \"faults\": [{\"at_step\": 5, \"kind\": \"nan_loss\", \"delay_ms\": 5}]}",
         "faults[0].delay_ms: only slow_link and straggler take a delay");
  expect("{" BASE ", \"faults\": [{\"at_step\": 5, \"kind\": \"nan_loss\", \"for_steps\": 5}]}",
         "faults[0].for_steps: only straggler takes a number of steps");
  expect("{" BASE ", \"faults\": [{\"at_step\": 5, \"kind\": \"straggler\", \"delay_ms\": 0}]}",
         "faults[0].delay_ms: must be");
  expect("{" BASE ", \"faults\": [{\"at_step\": 5, \"kind\": \"straggler\", \"for_steps\": -1}]}",
         "faults[0].for_steps: must be");
  expect("{" BASE ", \"faults\": [{\"at_step\": 80, \"kind\": \"straggler\", \"for_steps\": 10}]}",
         "must be below training.steps");
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 1}, \"training\": {\"steps\": 50}, "
         "\"faults\": [{\"at_step\": 5, \"kind\": \"silent_data_corruption\"}]}",
         "needs at least 3 ranks");
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 3}, \"training\": {\"steps\": 50}, "
         "\"faults\": [{\"at_step\": 5, \"kind\": \"silent_data_corruption\"}]}",
         "takes the culprit's node out");
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 2}, \"training\": {\"steps\": 50, \"device\": \"cuda\"}, "
         "\"faults\": [{\"at_step\": 5, \"kind\": \"nan_loss\"}]}",
         "CPU trainer's numbers only");
}

static void test_bad_input(void **state) {
  (void)state;
  expect("{" BASE "", "not valid JSON");
  expect("[]", "must be an object");
  expect("{" BASE ", \"sed\": 1}", "sed: unknown field");
  expect("{" BASE ", \"seed\": 1, \"seed\": 2}", "seed: given twice");
  expect("{\"name\": \"a b\", \"cluster\": {\"agents\": 1}, \"training\": {\"steps\": 5}}", "name: must be");
  expect("{\"name\": \"t\", \"training\": {\"steps\": 5}}", "cluster: missing");
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 0}, \"training\": {\"steps\": 5}}",
         "cluster.agents: must be an integer in 1..16, got 0");
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 2, \"agnets\": 2}, \"training\": {\"steps\": 5}}",
         "cluster.agnets: unknown field");
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 2, \"min_nodes\": 3}, \"training\": {\"steps\": 5}}",
         "cluster.min_nodes: must be an integer in 1..2");
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 2}, \"training\": {\"steps\": 5.5}}", "training.steps");
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 2}, \"training\": {\"steps\": 5, \"micro\": 5}}",
         "training.micro: must divide");
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 2}, \"training\": {\"steps\": 5}, "
         "\"faults\": [{\"at_step\": 2, \"kind\": \"etcd_member_crash\"}]}",
         "needs cluster.etcd_members >= 3");
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 2, \"etcd_members\": 6}, \"training\": {\"steps\": 5}}",
         "cluster.etcd_members");
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 2, \"persist_every\": 10}, \"training\": {\"steps\": 30}, "
         "\"faults\": [{\"at_step\": 2, \"kind\": \"disk_full\"}]}",
         "disk_full needs training.steps above 3 x cluster.persist_every");
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 2}, \"training\": {\"steps\": 100}, "
         "\"faults\": [{\"at_step\": 2, \"kind\": \"disk_full\", \"target\": {\"node\": \"n0\"}}]}",
         "faults[0].target");
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 2}, \"training\": {\"steps\": 5, \"device\": \"tpu\"}}",
         "training.device: expected");
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 2}, \"training\": {\"steps\": 5, \"backend\": \"mpi\"}}",
         "training.backend: expected");
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 2}, \"training\": {\"steps\": 5, \"backend\": \"nccl\"}}",
         "needs \"device\": \"cuda\"");
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 2}, \"training\": {\"steps\": 5, \"device\": \"cuda\", "
         "\"backend\": \"nccl\"}}",
         NULL);
  expect("{" BASE ", \"faults\": {}}", "faults: must be a list");
  expect("{" BASE ", \"faults\": [{\"at_step\": 5}]}", "faults[0].kind: missing");
  expect("{" BASE ", \"faults\": [{\"at_step\": 5, \"kind\": \"meteor\"}]}", "unknown kind");
  expect("{" BASE ", \"faults\": [{\"kind\": \"hang\"}]}", "exactly one of at_step and at_ms");
  expect("{" BASE ", \"faults\": [{\"at_step\": 100, \"kind\": \"hang\"}]}", "faults[0].at_step: must be");
  expect("{" BASE ", \"faults\": [{\"at_step\": 5, \"kind\": \"hang\", \"target\": {\"node\": \"n9\", \"slot\": 0}}]}",
         "no node \"n9\"");
  expect("{" BASE ", \"faults\": [{\"at_step\": 5, \"kind\": \"hang\", \"target\": {\"node\": \"n1\", \"slot\": 2}}]}",
         "faults[0].target.slot: must be an integer in 0..1");
  expect("{" BASE ", \"faults\": [{\"at_step\": 5, \"kind\": \"hang\", \"target\": {\"node\": \"n1\"}}]}",
         "target.slot: missing");
  expect("{" BASE ", \"faults\": [{\"at_step\": 5, \"kind\": \"drain\", \"target\": {\"node\": \"n1\", \"slot\": 0}}]}",
         "target.slot: unknown field");
  expect("{" BASE ", \"faults\": [{\"at_step\": 5, \"kind\": \"coordinator_crash\", \"target\": \"random\"}]}",
         "takes no target");
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 2}, \"training\": {\"steps\": 50}, "
         "\"faults\": [{\"at_step\": 5, \"kind\": \"coordinator_crash\"}]}",
         "needs cluster.coordinators >= 2");
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 2}, \"training\": {\"steps\": 50}, "
         "\"faults\": [{\"at_step\": 25, \"kind\": \"lose_all_copies\"}]}",
         "needs cluster.agents >= 3");
  expect("{" BASE ", \"faults\": [{\"at_step\": 5, \"kind\": \"lose_all_copies\"}]}", "leaves 2 nodes");
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 4, \"min_nodes\": 2}, \"training\": {\"steps\": 50}, "
         "\"faults\": [{\"at_step\": 15, \"kind\": \"lose_all_copies\"}]}",
         "must exceed cluster.persist_every");
  expect("{" BASE ", \"faults\": [{\"at_step\": 5, \"kind\": \"host_return\"}]}", "needs an earlier host_loss");
  expect("{" BASE ", \"soak\": {\"minutes\": 0, \"every_steps\": 5, \"kinds\": [\"hang\"]}}", "soak.minutes");
  expect("{" BASE ", \"soak\": {\"minutes\": 1, \"every_steps\": 5, \"kinds\": []}}", "soak.kinds: must be");
  expect("{" BASE ", \"soak\": {\"minutes\": 1, \"every_steps\": 5, \"kinds\": [\"hang\", \"hang\"]}}",
         "listed twice");
  expect("{" BASE ", \"soak\": {\"minutes\": 1, \"every_steps\": 5, \"kinds\": [\"meteor\"]}}",
         "unknown kind");
}

/* cluster.network and the kinds that need a network of their own. */
static void test_network(void **state) {
  (void)state;
  char err[512];
  const char *ns = "{\"name\": \"t\", \"cluster\": {\"agents\": 3, \"spares\": 1, \"network\": \"namespaces\"}, "
                   "\"training\": {\"steps\": 50}, \"faults\": ["
                   "{\"at_step\": 5, \"kind\": \"network_partition\", \"target\": {\"node\": \"n1\"}},"
                   "{\"at_step\": 9, \"kind\": \"nic_flap\"},"
                   "{\"at_step\": 12, \"kind\": \"nic_errors\", \"target\": {\"node\": \"n3\"}}]}";
  tg_chaos_scenario *s = tg_chaos_scenario_parse(ns, strlen(ns), 0, err, sizeof err);
  if (!s) fail_msg("%s", err);
  assert_int_equal(s->cluster.namespaces, 1);
  assert_int_equal(s->faults[0].kind, TG_CHAOS_NETWORK_PARTITION);
  assert_string_equal(s->faults[0].node, "n1");
  assert_int_equal(s->faults[1].kind, TG_CHAOS_NIC_FLAP);
  assert_int_equal(s->faults[1].random_target, 1);
  assert_int_equal(s->faults[2].kind, TG_CHAOS_NIC_ERRORS);
  tg_chaos_scenario_free(s);
  const char *local = "{" BASE "}";
  s = tg_chaos_scenario_parse(local, strlen(local), 0, err, sizeof err);
  if (!s) fail_msg("%s", err);
  assert_int_equal(s->cluster.namespaces, 0);
  tg_chaos_scenario_free(s);
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 2, \"network\": \"local\"}, \"training\": {\"steps\": 5}}",
         NULL);
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 2, \"network\": \"vlan\"}, \"training\": {\"steps\": 5}}",
         "cluster.network: expected \"local\" or \"namespaces\", got \"vlan\"");
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 2, \"network\": 1}, \"training\": {\"steps\": 5}}",
         "cluster.network: must be a string");
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 2, \"network\": \"namespacesnamespaces\"}, "
         "\"training\": {\"steps\": 5}}",
         "cluster.network: longer than");
  expect("{\"name\": \"t\", \"cluster\": {\"agents\": 16, \"spares\": 1, \"network\": \"namespaces\"}, "
         "\"training\": {\"steps\": 5}}",
         "cluster.network: \"namespaces\" puts every node on a host of its own, at most 16 (agents + spares), got 17");
  /* Local processes share one network: a partition is refused by name. */
  expect("{" BASE ", \"faults\": [{\"at_step\": 5, \"kind\": \"network_partition\"}]}",
         "faults[0]: network_partition needs cluster.network \"namespaces\"");
  expect("{" BASE ", \"soak\": {\"minutes\": 1, \"every_steps\": 5, \"kinds\": [\"network_partition\"]}}",
         "soak.kinds[0]: network_partition needs cluster.network \"namespaces\"");
  expect("{" BASE ", \"faults\": [{\"at_step\": 5, \"kind\": \"nic_flap\", \"target\": {\"node\": \"n1\", "
         "\"slot\": 0}}]}",
         "target.slot: unknown field");
  expect("{" BASE ", \"faults\": [{\"at_step\": 5, \"kind\": \"nic_errors\", \"target\": {\"node\": \"n7\"}}]}",
         "no node \"n7\"");
  /* slow_link: works in either mode, with a delay of its own. */
  const char *slow = "{" BASE ", \"faults\": [{\"at_step\": 5, \"kind\": \"slow_link\", \"delay_ms\": 250},"
                     "{\"at_step\": 6, \"kind\": \"hang\"}]}";
  s = tg_chaos_scenario_parse(slow, strlen(slow), 0, err, sizeof err);
  if (!s) fail_msg("%s", err);
  assert_int_equal(s->faults[0].kind, TG_CHAOS_SLOW_LINK);
  assert_int_equal(s->faults[0].delay_ms, 250);
  assert_int_equal(s->faults[0].random_target, 1);
  assert_int_equal(s->faults[1].delay_ms, -1);
  tg_chaos_scenario_free(s);
  expect("{" BASE ", \"faults\": [{\"at_step\": 5, \"kind\": \"slow_link\"}]}",
         "faults[0].delay_ms: missing (slow_link: an integer in 1..600000");
  expect("{" BASE ", \"faults\": [{\"at_step\": 5, \"kind\": \"slow_link\", \"delay_ms\": 0}]}",
         "faults[0].delay_ms: must be an integer in 1..600000, got 0");
  expect("{" BASE ", \"faults\": [{\"at_step\": 5, \"kind\": \"slow_link\", \"delay_ms\": \"1s\"}]}",
         "faults[0].delay_ms: must be an integer");
  expect("{" BASE ", \"faults\": [{\"at_step\": 5, \"kind\": \"slow_link\", \"delay_ms\": 1e12}]}",
         "faults[0].delay_ms: must be an integer in 1..600000");
  expect("{" BASE ", \"faults\": [{\"at_step\": 5, \"kind\": \"hang\", \"delay_ms\": 5}]}",
         "faults[0].delay_ms: only slow_link and straggler take a delay");
  expect("{" BASE ", \"soak\": {\"minutes\": 1, \"every_steps\": 5, \"kinds\": [\"slow_link\"]}}",
         "soak.kinds[0]: slow_link needs a delay_ms");
}

/* Scenarios for a running job (run --attach): no cluster or training
 * block needed (nor read), any node id, the kinds that need tg-chaos's own
 * cluster refused by name; every shipped scenario but those parses so. */
static void test_attached(void **state) {
  (void)state;
  char err[512];
  tg_chaos_scenario *s = tg_chaos_scenario_load("chaos/scenarios/attach.json", 1, err, sizeof err);
  if (!s) fail_msg("%s", err);
  assert_int_equal(s->attach, 1);
  assert_true(s->n_faults >= 6);
  tg_chaos_scenario_free(s);
  assert_null(tg_chaos_scenario_load("chaos/scenarios/attach.json", 0, err, sizeof err));
  assert_non_null(strstr(err, "cluster"));
  const char *text = "{\"name\": \"a\", \"faults\": ["
                     "{\"at_step\": 5000000, \"kind\": \"trainer_crash\", \"target\": {\"node\": \"gpu-node-17.rack3\", \"slot\": 7}},"
                     "{\"at_ms\": 0, \"kind\": \"host_loss\", \"target\": {\"node\": \"gpu-node-17.rack3\"}},"
                     "{\"at_ms\": 0, \"kind\": \"host_return\", \"target\": \"random\"},"
                     "{\"at_ms\": 0, \"kind\": \"lose_all_copies\"}]}";
  s = tg_chaos_scenario_parse(text, strlen(text), 1, err, sizeof err);
  if (!s) fail_msg("%s", err);
  assert_string_equal(s->faults[0].node, "gpu-node-17.rack3");
  assert_int_equal(s->faults[0].slot, 7);
  assert_int_equal(s->faults[0].at_step, 5000000);
  tg_chaos_scenario_free(s);
  /* The same file is refused for a cluster tg-chaos starts (no cluster block). */
  assert_null(tg_chaos_scenario_parse(text, strlen(text), 0, err, sizeof err));
  static const char *const refused[][2] = {
      {"network_partition", "namespace hosts"}, {"slow_link", "proxy"},
      {"disk_full", "checkpoint filesystem"}, {"etcd_member_crash", "etcd members"}};
  for (size_t i = 0; i < 4; i++) {
    char bad[256];
    snprintf(bad, sizeof bad, "{\"name\": \"a\", \"faults\": [{\"at_ms\": 0, \"kind\": \"%s\"%s}]}",
             refused[i][0], strcmp(refused[i][0], "slow_link") == 0 ? ", \"delay_ms\": 5" : "");
    assert_null(tg_chaos_scenario_parse(bad, strlen(bad), 1, err, sizeof err));
    if (!strstr(err, "cannot be injected into a running job (--attach)") || !strstr(err, refused[i][1]))
      fail_msg("%s: %s", refused[i][0], err);
  }
  const char *bad_node = "{\"name\": \"a\", \"faults\": [{\"at_ms\": 0, \"kind\": \"drain\", "
                         "\"target\": {\"node\": \"a b\"}}]}";
  assert_null(tg_chaos_scenario_parse(bad_node, strlen(bad_node), 1, err, sizeof err));
  assert_non_null(strstr(err, "faults[0].target.node: must be a node id"));
  const char *bad_slot = "{\"name\": \"a\", \"faults\": [{\"at_ms\": 0, \"kind\": \"hang\", "
                         "\"target\": {\"node\": \"x\", \"slot\": 8}}]}";
  assert_null(tg_chaos_scenario_parse(bad_slot, strlen(bad_slot), 1, err, sizeof err));
  assert_non_null(strstr(err, "slot: must be an integer in 0..7"));
  static const char *const shipped[] = {"trainer_crash", "trainer_segv", "hang", "host_loss", "host_return", "drain",
                                        "coordinator_crash", "corrupt_replica", "lose_all_copies", "mixed",
                                        "device_faults", "gpu_xid", "gpu_ecc", "gpu_lost", "nic_down",
                                        "gpu_thermal", "gpu_pcie", "gpu_row_remap", "nic_flap", "nic_errors",
                                        "silent_data_corruption",
                                        "nan_loss", "straggler"};
  for (size_t i = 0; i < sizeof shipped / sizeof shipped[0]; i++) {
    char path[256];
    snprintf(path, sizeof path, "chaos/scenarios/%s.json", shipped[i]);
    s = tg_chaos_scenario_load(path, 1, err, sizeof err);
    if (!s) fail_msg("attached: %s", err);
    tg_chaos_scenario_free(s);
  }
}

static void test_size_bound(void **state) {
  (void)state;
  char err[256];
  size_t len = TG_CHAOS_MAX_FILE_BYTES + 1;
  char *big = malloc(len);
  assert_non_null(big);
  memset(big, ' ', len);
  assert_null(tg_chaos_scenario_parse(big, len, 0, err, sizeof err));
  assert_non_null(strstr(err, "larger than"));
  free(big);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_shipped_scenarios_parse),
      cmocka_unit_test(test_good_scenario),
      cmocka_unit_test(test_trainer_number_faults),
      cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_network),
      cmocka_unit_test(test_attached),
      cmocka_unit_test(test_size_bound),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
