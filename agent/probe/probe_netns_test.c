/* Probes across a real network: two hosts (network namespaces on one
 * bridge, tests/harness/netns.h), a probe_host on each serving probes and
 * probing the other. Cutting B's link must make A report
 * NETWORK_PARTITION for B (and B for A: its link is down both ways), and
 * healing it must clear both, read from each process's own output.
 * Needs root; skips where namespaces cannot be made (unless
 * TG_REQUIRE_NETNS=1, then it fails). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include "tests/harness/netns.h"
#include "tests/harness/proc.h"

#define PORT "7411"

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until a whole line after byte `*from` of the file holds every
 * needle (a NULL-terminated list); moves *from past that line. 0, or -1
 * after timeout_ms. */
static int wait_line(const char *path, long *from, const char *const *needles, int64_t timeout_ms) {
  int64_t deadline = now_ms() + timeout_ms;
  char line[1024];
  do {
    FILE *f = fopen(path, "r");
    if (f && fseek(f, *from, SEEK_SET) == 0) {
      long pos = *from;
      while (fgets(line, sizeof line, f) && strchr(line, '\n')) {
        pos += (long)strlen(line);
        int all = 1;
        for (int i = 0; needles[i] && all; i++) all = strstr(line, needles[i]) != NULL;
        if (all) {
          *from = pos;
          fclose(f);
          return 0;
        }
      }
    }
    if (f) fclose(f);
    struct timespec ts = {0, 20 * 1000000};
    nanosleep(&ts, NULL);
  } while (now_ms() < deadline);
  return -1;
}

typedef struct {
  tg_netns *net;
  tg_proc *host[2];
  char log[2][600];
  char dir[512];
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  *state = f;
  return f && tg_proc_temp_dir("probe-netns", f->dir, sizeof f->dir) == 0 ? 0 : -1;
}

static int teardown(void **state) {
  fixture *f = *state;
  for (int i = 0; i < 2; i++) tg_proc_free(f->host[i]);
  tg_netns_free(f->net);
  free(f);
  return 0;
}

static void dump_logs(fixture *f) {
  for (int i = 0; i < 2; i++)
    if (f->host[i]) tg_proc_dump_log(f->host[i], 8192);
}

static void start_host(fixture *f, int i, const char *node, const char *peer_node) {
  char listen[64], peers[96], err[256];
  snprintf(listen, sizeof listen, "%s:%s", tg_netns_addr(f->net, i), PORT);
  snprintf(peers, sizeof peers, "%s=%s:%s", peer_node, tg_netns_addr(f->net, 1 - i), PORT);
  snprintf(f->log[i], sizeof f->log[i], "%s/%s.log", f->dir, node);
  const char *argv[] = {"agent/probe/probe_host", "--node", node, "--listen", listen, "--peers", peers,
                        "--period-ms", "100", "--timeout-ms", "300", "--window", "10",
                        "--consecutive-failures", "3", "--stats-ms", "200", "--run-ms", "120000", NULL};
  f->host[i] = tg_netns_start(f->net, i, argv, f->log[i], err, sizeof err);
  if (!f->host[i]) fail_msg("start %s: %s", node, err);
}

static void expect(fixture *f, int host, long *from, const char *const *needles, int64_t timeout_ms,
                   const char *what) {
  if (wait_line(f->log[host], from, needles, timeout_ms) == 0) return;
  dump_logs(f);
  fail_msg("no %s within %lld ms", what, (long long)timeout_ms);
}

static void test_cut_link_is_a_partition(void **state) {
  fixture *f = *state;
  char why[512], err[256];
  if (!tg_netns_available(why, sizeof why)) {
    if (tg_netns_required()) fail_msg("TG_REQUIRE_NETNS=1 but %s", why);
    print_message("SKIP: network namespaces unavailable: %s\n", why);
    skip();
  }
  f->net = tg_netns_new(2, err, sizeof err);
  if (!f->net) fail_msg("tg_netns_new: %s", err);
  start_host(f, 0, "a", "b");
  start_host(f, 1, "b", "a");

  /* Both up and probing each other (a probe before the other side
   * listened may have failed: only the state after that counts). */
  long at[2] = {0, 0};
  expect(f, 0, &at[0], (const char *const[]){"stats node=a peer=b", "reachable=1", "partitioned=0", NULL}, 15000,
         "healthy stats from a");
  expect(f, 1, &at[1], (const char *const[]){"stats node=b peer=a", "reachable=1", "partitioned=0", NULL}, 15000,
         "healthy stats from b");

  int64_t cut_at = now_ms();
  if (tg_netns_cut(f->net, 1, err, sizeof err) != 0) fail_msg("cut: %s", err);
  expect(f, 0, &at[0], (const char *const[]){"event NETWORK_PARTITION node=a peer=b", NULL}, 10000,
         "NETWORK_PARTITION for b from a");
  print_message("a reported b partitioned %lld ms after the cut\n", (long long)(now_ms() - cut_at));
  expect(f, 1, &at[1], (const char *const[]){"event NETWORK_PARTITION node=b peer=a", NULL}, 10000,
         "NETWORK_PARTITION for a from b");
  assert_true(tg_proc_running(f->host[0]));
  assert_true(tg_proc_running(f->host[1]));

  int64_t heal_at = now_ms();
  if (tg_netns_heal(f->net, 1, err, sizeof err) != 0) fail_msg("heal: %s", err);
  expect(f, 0, &at[0], (const char *const[]){"event NETWORK_PARTITION_CLEARED node=a peer=b", NULL}, 20000,
         "NETWORK_PARTITION_CLEARED for b from a");
  print_message("a cleared b %lld ms after the heal\n", (long long)(now_ms() - heal_at));
  expect(f, 1, &at[1], (const char *const[]){"event NETWORK_PARTITION_CLEARED node=b peer=a", NULL}, 20000,
         "NETWORK_PARTITION_CLEARED for a from b");

  /* Both exit cleanly on SIGTERM (under ASan: without leaks). */
  for (int i = 0; i < 2; i++) {
    tg_proc_stop(f->host[i], 5000);
    char how[64];
    if (strcmp(tg_proc_describe_exit(f->host[i], how, sizeof how), "exited with status 0") != 0) {
      dump_logs(f);
      fail_msg("probe_host %d %s", i, how);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_cut_link_is_a_partition, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
