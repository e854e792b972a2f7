/* The dashboard in headless Chromium against a training cluster: a real
 * etcd, a tg-coordinator serving the dashboard, and two tg-agents with two
 * tg-train trainers each (on fake GPUs, one of them running hot).
 * browser.js (playwright-core driving Debian's /usr/bin/chromium) opens the
 * page, sees the hot GPU, kills a trainer, and must see the fault, then its
 * recovery, appear on the page without a reload; its
 * screenshots land in $TEST_UNDECLARED_OUTPUTS_DIR (bazel-testlogs/
 * tests/dashboard/browser_test/test.outputs/).
 *
 * Chromium, node and playwright-core are installed by scripts/setup; when
 * one is missing this test fails and says so, it never passes silently.
 * Every process it starts is stopped at the end, pass or fail. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/clock/clock.h"
#include "tests/harness/etcd_cluster.h"
#include "tests/harness/proc.h"

#define NODES 2
#define WAIT_MS 60000
#define BROWSER_MS 240000

static tg_etcd_cluster *etcd;
static char dir[512], sockdir[64];
static tg_proc *coordinator, *agents[NODES], *browser;

/* Where node finds playwright-core: beside browser.js in the source tree
 * (the runfile is a link to it), where scripts/setup ran npm ci. */
static int find_browser_script(char *script, size_t len, char *why, size_t whylen) {
  char *real = realpath("tests/dashboard/browser.js", NULL);
  if (!real) {
    snprintf(why, whylen, "tests/dashboard/browser.js is not in the runfiles");
    return -1;
  }
  snprintf(script, len, "%s", real);
  free(real);
  char modules[700];
  snprintf(modules, sizeof modules, "%.*s/node_modules/playwright-core/package.json",
           (int)(strrchr(script, '/') - script), script);
  if (access("/usr/bin/chromium", X_OK) != 0) {
    snprintf(why, whylen, "no /usr/bin/chromium: run scripts/setup (it installs Debian's chromium)");
    return -1;
  }
  int status = 0;
  const char *node_version[] = {"node", "--version", NULL};
  if (tg_proc_run(node_version, NULL, 10000, NULL, 0, &status) != 0 || status != 0) {
    snprintf(why, whylen, "no node on PATH: run scripts/setup (it installs nodejs and npm)");
    return -1;
  }
  if (access(modules, R_OK) != 0) {
    snprintf(why, whylen, "no %s: run scripts/setup (npm ci in tests/dashboard)", modules);
    return -1;
  }
  return 0;
}

static void start_cluster(int http_port, const char *out) {
  char listen[32], http[32], log[700], err[256];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", tg_proc_free_port());
  snprintf(http, sizeof http, "127.0.0.1:%d", http_port);
  snprintf(log, sizeof log, "%s/coordinator.log", dir);
  const char *co[] = {"coordinator/tg-coordinator", "--job", "browser", "--listen", listen, "--http", http,
                      "--etcd", tg_etcd_cluster_endpoints(etcd), "--min-nodes", "2", "--max-nodes", "2",
                      "--slots", "2", "--last-call-ms", "300", "--heartbeat-interval-ms", "100",
                      "--heartbeat-timeout-ms", "1500", "--quarantine-faults", "0", NULL};
  coordinator = tg_proc_start(co, log, err, sizeof err);
  if (!coordinator) fail_msg("coordinator: %s", err);
  for (int i = 0; i < NODES; i++) {
    char id[8], sock[128], logs[700];
    snprintf(id, sizeof id, "n%d", i);
    snprintf(sock, sizeof sock, "%s/n%d.sock", sockdir, i);
    snprintf(logs, sizeof logs, "%s/n%d", dir, i);
    snprintf(log, sizeof log, "%s/n%d-agent.log", dir, i);
    mkdir(logs, 0755);
    /* n1 has two fake GPUs, the second one hot: a GPU warning on the page. */
    char fake[700], gpu[760];
    snprintf(fake, sizeof fake, "%s/n%d-devices", dir, i);
    for (int g = 0; g < 2; g++) {
      snprintf(gpu, sizeof gpu, "%s/gpu%d", fake, g);
      mkdir(fake, 0755);
      mkdir(gpu, 0755);
    }
    snprintf(gpu, sizeof gpu, "%s/sys", fake); /* no NICs to check: an empty sysfs */
    mkdir(gpu, 0755);
    snprintf(gpu, sizeof gpu, "%s/sys/class", fake);
    mkdir(gpu, 0755);
    snprintf(gpu, sizeof gpu, "%s/sys/class/net", fake);
    mkdir(gpu, 0755);
    snprintf(gpu, sizeof gpu, "%s/gpu1/temperature_c", fake);
    FILE *hot = i == 1 ? fopen(gpu, "w") : NULL;
    if (hot) {
      fputs("97\n", hot);
      fclose(hot);
    }
    const char *ag[] = {"agent/tg-agent", "--node", id, "--job", "browser", "--coordinators", listen, "--socket",
                        sock, "--slots", "2", "--log-dir", logs, "--ckpt-mib", "16", "--hang-floor-ms", "3000",
                        "--fake-devices", fake, "--health-period-ms", "500",
                        "--", "trainer/tg-train", "--steps", "1000000", "--out", out, NULL};
    agents[i] = tg_proc_start(ag, log, err, sizeof err);
    if (!agents[i]) fail_msg("agent n%d: %s", i, err);
  }
}

static void stop_all(int dump) {
  if (browser) {
    tg_proc_stop(browser, 5000);
    if (dump) tg_proc_dump_log(browser, 6000);
    tg_proc_free(browser);
    browser = NULL;
  }
  for (int i = NODES - 1; i >= 0; i--) {
    if (!agents[i]) continue;
    tg_proc_stop(agents[i], 5000);
    if (dump) tg_proc_dump_log(agents[i], 2000);
    tg_proc_free(agents[i]);
    agents[i] = NULL;
  }
  if (coordinator) {
    tg_proc_stop(coordinator, 5000);
    if (dump) tg_proc_dump_log(coordinator, 4000);
    tg_proc_free(coordinator);
    coordinator = NULL;
  }
}

static void test_fault_appears_without_reload(void **state) {
  char script[600], why[300];
  if (find_browser_script(script, sizeof script, why, sizeof why) != 0) fail_msg("%s", why);
  const char *outputs = getenv("TEST_UNDECLARED_OUTPUTS_DIR");
  char out[700], url[64], pid[16], log[700];
  snprintf(out, sizeof out, "%s/params", dir);
  int http_port = tg_proc_free_port();
  start_cluster(http_port, out);

  /* The victim: n0's slot 0 trainer, once its agent started it. */
  pid_t victim = 0;
  int64_t deadline = tg_clock_mono_ms() + WAIT_MS;
  while (!victim && tg_clock_mono_ms() < deadline) {
    victim = tg_proc_child_with_env(tg_proc_pid(agents[0]), "TG_SLOT=0");
    if (!victim) tg_clock_sleep_ms(50);
  }
  if (!victim) fail_msg("n0 never started a trainer in slot 0");

  snprintf(url, sizeof url, "http://127.0.0.1:%d/", http_port);
  snprintf(pid, sizeof pid, "%d", (int)victim);
  snprintf(log, sizeof log, "%s/browser.log", dir);
  const char *argv[] = {"node", script, url, pid, outputs && outputs[0] ? outputs : dir, NULL};
  char err[256];
  browser = tg_proc_start(argv, log, err, sizeof err);
  if (!browser) fail_msg("node: %s", err);
  int status = 0;
  if (tg_proc_wait(browser, BROWSER_MS, &status) != 0) fail_msg("browser.js did not finish in %d s", BROWSER_MS / 1000);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) fail_msg("browser.js failed (its log is above)");
  tg_proc_dump_log(browser, 2000);
  stop_all(0);
}

static int teardown(void **state) {
  stop_all(1);
  return 0;
}

static int setup_group(void **state) {
  char err[256];
  if (tg_proc_temp_dir("browser", dir, sizeof dir) != 0) return -1;
  snprintf(sockdir, sizeof sockdir, "/tmp/tg-dash-XXXXXX");
  if (!mkdtemp(sockdir)) return -1;
  etcd = tg_etcd_cluster_start(1, err, sizeof err);
  if (!etcd) {
    fprintf(stderr, "etcd: %s\n", err);
    return -1;
  }
  return 0;
}

static int teardown_group(void **state) {
  tg_etcd_cluster_free(etcd);
  const char *rm[] = {"/bin/rm", "-rf", sockdir, NULL};
  tg_proc_run(rm, NULL, 10000, NULL, 0, NULL);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_fault_appears_without_reload, teardown),
  };
  return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
