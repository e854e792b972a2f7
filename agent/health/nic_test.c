/* Tests for the NIC checks (nic.h) on a fake sysfs tree (nic_fake.h), with
 * the clock passed in so that windows are exact: link down, carrier flaps,
 * rising error and drop counters, RDMA ports, and hostile sysfs content. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/health/health_testing.h"
#include "agent/health/nic.h"
#include "agent/health/nic_fake.h"

typedef struct {
  char *root;
  tg_nic_report report;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  char path[4096];
  if (f == NULL || (f->root = health_testing_tmpdir("nic")) == NULL) return -1;
  if (tg_nic_fake_add_link(f->root, "eth0") != 0 || tg_nic_fake_add_link(f->root, "eth1") != 0)
    return -1;
  /* Virtual interfaces: no device/ entry. */
  snprintf(path, sizeof path, "%s/class/net/lo", f->root);
  if (mkdir(path, 0755) != 0) return -1;
  snprintf(path, sizeof path, "%s/class/net/veth9", f->root);
  if (mkdir(path, 0755) != 0) return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  health_testing_rmtree(f->root);
  free(f->root);
  free(f);
  return 0;
}

static tg_nic *open_nic(fixture *f, const char *const *names, size_t n) {
  tg_nic_config cfg = {0};
  char err[256];
  cfg.sysfs_root = f->root;
  cfg.interfaces = names;
  cfg.n_interfaces = n;
  cfg.window_ms = 10000;
  cfg.flap_changes = 4;
  cfg.errors_per_window = 10;
  cfg.drops_per_window = 100;
  tg_nic *nic = tg_nic_new(&cfg, err, sizeof err);
  assert_non_null(nic);
  return nic;
}

static const tg_nic_link *check(fixture *f, tg_nic *nic, int64_t now_ms, const char *name) {
  char err[256];
  assert_int_equal(tg_nic_check(nic, now_ms, &f->report, err, sizeof err), 0);
  for (size_t i = 0; i < f->report.n_links; i++)
    if (strcmp(f->report.links[i].name, name) == 0) return &f->report.links[i];
  fail_msg("no link %s in the report", name);
  return NULL;
}

static void test_discovers_physical_links_only(void **state) {
  fixture *f = *state;
  tg_nic *nic = open_nic(f, NULL, 0);
  const tg_nic_link *l = check(f, nic, 0, "eth0");
  assert_int_equal(f->report.n_links, 2);
  assert_int_equal(l->present, 1);
  assert_int_equal(l->carrier, 1);
  assert_string_equal(l->operstate, "up");
  assert_int_equal(l->down, 0);
  assert_int_equal(l->flapping, 0);
  assert_int_equal(l->errors_rising, 0);
  assert_int_equal(f->report.n_ports, 0);
  tg_nic_free(nic);
}

static void test_carrier_down(void **state) {
  fixture *f = *state;
  tg_nic *nic = open_nic(f, NULL, 0);
  assert_int_equal(tg_nic_fake_set(f->root, "eth1", "carrier", "0"), 0);
  assert_int_equal(tg_nic_fake_set(f->root, "eth1", "operstate", "lowerlayerdown"), 0);
  const tg_nic_link *l = check(f, nic, 0, "eth1");
  assert_int_equal(l->carrier, 0);
  assert_int_equal(l->down, 1);
  assert_int_equal(check(f, nic, 0, "eth0")->down, 0);
  assert_int_equal(tg_nic_fake_set(f->root, "eth1", "carrier", "1"), 0);
  assert_int_equal(tg_nic_fake_set(f->root, "eth1", "operstate", "up"), 0);
  assert_int_equal(check(f, nic, 1000, "eth1")->down, 0);
  tg_nic_free(nic);
}

/* An administratively down link: carrier cannot be read, operstate says so. */
static void test_admin_down_without_carrier(void **state) {
  fixture *f = *state;
  char path[4096];
  tg_nic *nic = open_nic(f, NULL, 0);
  snprintf(path, sizeof path, "%s/class/net/eth0/carrier", f->root);
  assert_int_equal(unlink(path), 0);
  assert_int_equal(tg_nic_fake_set(f->root, "eth0", "operstate", "down"), 0);
  const tg_nic_link *l = check(f, nic, 0, "eth0");
  assert_int_equal(l->carrier, -1);
  assert_int_equal(l->down, 1);
  tg_nic_free(nic);
}

static void test_configured_missing_and_vanished_links(void **state) {
  fixture *f = *state;
  char path[4096];
  const char *names[] = {"eth0", "ib9"};
  tg_nic *nic = open_nic(f, names, 2);
  const tg_nic_link *l = check(f, nic, 0, "ib9");
  assert_int_equal(f->report.n_links, 2); /* only the configured ones */
  assert_int_equal(l->present, 0);
  assert_int_equal(l->down, 1);
  tg_nic_free(nic);

  /* Discovered, then gone: reported, not forgotten. */
  nic = open_nic(f, NULL, 0);
  assert_int_equal(check(f, nic, 0, "eth1")->down, 0);
  snprintf(path, sizeof path, "%s/class/net/eth1", f->root);
  assert_int_equal(health_testing_rmtree(path), 0);
  l = check(f, nic, 1000, "eth1");
  assert_int_equal(l->present, 0);
  assert_int_equal(l->down, 1);
  tg_nic_free(nic);
}

static void test_flaps_within_the_window(void **state) {
  fixture *f = *state;
  tg_nic *nic = open_nic(f, NULL, 0);
  assert_int_equal(check(f, nic, 0, "eth0")->flapping, 0);
  assert_int_equal(tg_nic_fake_set_u64(f->root, "eth0", "carrier_changes", 2), 0);
  assert_int_equal(check(f, nic, 1000, "eth0")->flapping, 0); /* one down-up: not a flap */
  assert_int_equal(tg_nic_fake_set_u64(f->root, "eth0", "carrier_changes", 4), 0);
  const tg_nic_link *l = check(f, nic, 2000, "eth0");
  assert_int_equal(l->flapping, 1);
  assert_int_equal(l->carrier_changes_in_window, 4);
  assert_int_equal(check(f, nic, 9000, "eth0")->flapping, 1);
  /* Quiet for a whole window: the flap is over. */
  assert_int_equal(check(f, nic, 20000, "eth0")->flapping, 0);
  /* Slow changes, spread wider than the window, are no flap. */
  for (int i = 1; i <= 6; i++) {
    assert_int_equal(tg_nic_fake_set_u64(f->root, "eth0", "carrier_changes", 4 + (uint64_t)i), 0);
    assert_int_equal(check(f, nic, 20000 + i * 4000, "eth0")->flapping, 0);
  }
  tg_nic_free(nic);
}

static void test_errors_and_drops_rising(void **state) {
  fixture *f = *state;
  tg_nic *nic = open_nic(f, NULL, 0);
  check(f, nic, 0, "eth0");
  assert_int_equal(tg_nic_fake_set_u64(f->root, "eth0", "statistics/rx_errors", 6), 0);
  assert_int_equal(check(f, nic, 1000, "eth0")->errors_rising, 0);
  assert_int_equal(tg_nic_fake_set_u64(f->root, "eth0", "statistics/tx_errors", 4), 0);
  const tg_nic_link *l = check(f, nic, 2000, "eth0");
  assert_int_equal(l->errors_rising, 1);
  assert_int_equal(l->errors_in_window, 10);
  /* Drops have their own, higher threshold (the window restarts at 30 s). */
  assert_int_equal(tg_nic_fake_set_u64(f->root, "eth1", "statistics/rx_dropped", 50), 0);
  assert_int_equal(check(f, nic, 30000, "eth0")->errors_rising, 0);
  assert_int_equal(tg_nic_fake_set_u64(f->root, "eth1", "statistics/tx_dropped", 99), 0);
  assert_int_equal(check(f, nic, 31000, "eth1")->errors_rising, 0);
  assert_int_equal(tg_nic_fake_set_u64(f->root, "eth1", "statistics/tx_dropped", 150), 0);
  l = check(f, nic, 32000, "eth1");
  assert_int_equal(l->errors_rising, 1);
  assert_int_equal(l->drops_in_window, 150);
  tg_nic_free(nic);
}

/* A counter that goes back (driver reload) restarts the history. */
static void test_counters_going_back(void **state) {
  fixture *f = *state;
  tg_nic *nic = open_nic(f, NULL, 0);
  assert_int_equal(tg_nic_fake_set_u64(f->root, "eth0", "statistics/rx_errors", 1000000), 0);
  check(f, nic, 0, "eth0");
  assert_int_equal(tg_nic_fake_set_u64(f->root, "eth0", "statistics/rx_errors", 3), 0);
  const tg_nic_link *l = check(f, nic, 1000, "eth0");
  assert_int_equal(l->errors_in_window, 0);
  assert_int_equal(l->errors_rising, 0);
  tg_nic_free(nic);
}

static void test_rdma_ports(void **state) {
  fixture *f = *state;
  char err[256];
  assert_int_equal(tg_nic_fake_set_rdma_port(f->root, "mlx5_0", 1, "4: ACTIVE"), 0);
  assert_int_equal(tg_nic_fake_set_rdma_port(f->root, "mlx5_1", 1, "1: DOWN"), 0);
  tg_nic *nic = open_nic(f, NULL, 0);
  assert_int_equal(tg_nic_check(nic, 0, &f->report, err, sizeof err), 0);
  assert_int_equal(f->report.n_ports, 2);
  int seen = 0;
  for (size_t i = 0; i < f->report.n_ports; i++) {
    const tg_nic_port *p = &f->report.ports[i];
    assert_int_equal(p->port, 1);
    if (strcmp(p->device, "mlx5_0") == 0) {
      assert_int_equal(p->active, 1);
      assert_string_equal(p->state, "4: ACTIVE");
      assert_string_equal(p->phys_state, "5: LinkUp");
      seen |= 1;
    } else {
      assert_string_equal(p->device, "mlx5_1");
      assert_int_equal(p->active, 0);
      assert_string_equal(p->phys_state, "3: Disabled");
      seen |= 2;
    }
  }
  assert_int_equal(seen, 3);
  tg_nic_free(nic);

  tg_nic_config cfg = {0};
  cfg.sysfs_root = f->root;
  cfg.skip_rdma = 1;
  nic = tg_nic_new(&cfg, err, sizeof err);
  assert_non_null(nic);
  assert_int_equal(tg_nic_check(nic, 0, &f->report, err, sizeof err), 0);
  assert_int_equal(f->report.n_ports, 0);
  tg_nic_free(nic);
}

static void test_hostile_sysfs(void **state) {
  fixture *f = *state;
  char path[4096];
  snprintf(path, sizeof path, "%s/class/net/eth0/operstate", f->root);
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  for (int i = 0; i < 200000; i++) fputc('u', fp);
  fclose(fp);
  assert_int_equal(tg_nic_fake_set(f->root, "eth0", "carrier_changes", "many"), 0);
  assert_int_equal(tg_nic_fake_set(f->root, "eth0", "statistics/rx_errors", "-5"), 0);
  tg_nic *nic = open_nic(f, NULL, 0);
  const tg_nic_link *l = check(f, nic, 0, "eth0");
  assert_int_equal(strlen(l->operstate), sizeof l->operstate - 1);
  assert_int_equal(l->carrier_changes, 0);
  assert_int_equal(l->rx_errors, 0);
  assert_int_equal(l->down, 0);
  tg_nic_free(nic);
}

static void test_bad_config_and_missing_sysfs(void **state) {
  fixture *f = *state;
  char err[256] = "";
  tg_nic_config cfg = {0};
  const char *bad[] = {"../etc"};
  cfg.sysfs_root = f->root;
  cfg.interfaces = bad;
  cfg.n_interfaces = 1;
  assert_null(tg_nic_new(&cfg, err, sizeof err));
  assert_non_null(strstr(err, "bad interface name"));

  cfg.interfaces = NULL;
  cfg.n_interfaces = 0;
  cfg.sysfs_root = "/nonexistent/sys";
  tg_nic *nic = tg_nic_new(&cfg, err, sizeof err);
  assert_non_null(nic);
  assert_int_equal(tg_nic_check(nic, 0, &f->report, err, sizeof err), -1);
  assert_non_null(strstr(err, "/nonexistent/sys/class/net"));
  tg_nic_free(nic);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_discovers_physical_links_only, setup, teardown),
      cmocka_unit_test_setup_teardown(test_carrier_down, setup, teardown),
      cmocka_unit_test_setup_teardown(test_admin_down_without_carrier, setup, teardown),
      cmocka_unit_test_setup_teardown(test_configured_missing_and_vanished_links, setup, teardown),
      cmocka_unit_test_setup_teardown(test_flaps_within_the_window, setup, teardown),
      cmocka_unit_test_setup_teardown(test_errors_and_drops_rising, setup, teardown),
      cmocka_unit_test_setup_teardown(test_counters_going_back, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rdma_ports, setup, teardown),
      cmocka_unit_test_setup_teardown(test_hostile_sysfs, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_config_and_missing_sysfs, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
