/* Self-test of the network-namespace harness: every multi-host test trusts
 * it, so it is checked with real traffic. This binary is also its own
 * helper: run as `netns_test serve ADDR PORT` it answers TCP connections,
 * as `netns_test connect ADDR PORT TIMEOUT_MS` it makes one; the tests run
 * those inside the hosts and look at what got through: hosts reach each
 * other, nothing leaks into the machine's own namespace, a cut host is
 * unreachable until healed, an nft drop separates exactly two hosts, and
 * nothing is left behind (not even by a test killed with SIGKILL). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/harness/netns.h"
#include "tests/harness/proc.h"

#define PORT "7411"

static char self_exe[512];

/* ---------------------------------------------------------------- helpers run inside hosts */

static int serve(const char *addr, const char *port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  if (fd < 0 || inet_pton(AF_INET, addr, &a.sin_addr) != 1) return 2;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0) {
    fprintf(stderr, "serve %s:%s: %s\n", addr, port, strerror(errno));
    return 2;
  }
  for (;;) { /* until the test kills it */
    int c = accept(fd, NULL, NULL);
    if (c < 0) continue;
    char reply[64];
    int len = snprintf(reply, sizeof reply, "pong from %s\n", addr);
    if (write(c, reply, (size_t)len) != len) fprintf(stderr, "short write\n");
    close(c);
  }
}

/* One connection with a deadline; prints the reply. 0 on success. */
static int connect_once(const char *addr, const char *port, const char *timeout_text) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), timeout_ms = atoi(timeout_text);
  if (fd < 0 || inet_pton(AF_INET, addr, &a.sin_addr) != 1) return 2;
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
    printf("connect: %s\n", strerror(errno));
    return 1;
  }
  struct pollfd p = {.fd = fd, .events = POLLIN};
  char reply[64] = "";
  if (poll(&p, 1, timeout_ms) != 1) {
    printf("no reply within %d ms\n", timeout_ms);
    return 1;
  }
  ssize_t n = read(fd, reply, sizeof reply - 1);
  if (n <= 0) {
    printf("read: %s\n", n < 0 ? strerror(errno) : "closed");
    return 1;
  }
  reply[n] = '\0';
  printf("%s", reply);
  return 0;
}

/* ---------------------------------------------------------------- test side */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* 0 when the test should skip; fails it where TG_REQUIRE_NETNS=1. */
static int cluster_possible_or_skip(void) {
  char why[512];
  if (tg_netns_available(why, sizeof why)) return 1;
  if (tg_netns_required()) fail_msg("TG_REQUIRE_NETNS=1 but %s", why);
  print_message("SKIP: network namespaces unavailable: %s\n", why);
  return 0;
}

static tg_netns *cluster_or_skip(int hosts) {
  if (!cluster_possible_or_skip()) return NULL;
  char err[512];
  tg_netns *n = tg_netns_new(hosts, err, sizeof err);
  if (!n) fail_msg("tg_netns_new: %s", err);
  return n;
}

/* Whether host `from` reaches the server on host `to`; tries until one
 * connection succeeds or deadline_ms passes (the server may be starting). */
static int reaches(tg_netns *n, int from, int to, int64_t deadline_ms) {
  int64_t end = now_ms() + deadline_ms;
  do {
    const char *argv[] = {self_exe, "connect", tg_netns_addr(n, to), PORT, "500", NULL};
    char out[256];
    int status = 0;
    if (tg_netns_exec(n, from, argv, 5000, out, sizeof out, &status) == 0 && WIFEXITED(status) &&
        WEXITSTATUS(status) == 0) {
      assert_non_null(strstr(out, tg_netns_addr(n, to)));
      return 1;
    }
    struct timespec ts = {0, 50 * 1000000};
    nanosleep(&ts, NULL);
  } while (now_ms() < end);
  return 0;
}

typedef struct {
  tg_netns *net;
  tg_proc *server;
  char dir[512];
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  *state = f;
  return f && tg_proc_temp_dir("netns", f->dir, sizeof f->dir) == 0 ? 0 : -1;
}

static int teardown(void **state) {
  fixture *f = *state;
  tg_proc_free(f->server);
  tg_netns_free(f->net);
  free(f);
  return 0;
}

static void start_server(fixture *f, int host) {
  char log[600], err[256];
  snprintf(log, sizeof log, "%s/server.log", f->dir);
  const char *argv[] = {self_exe, "serve", tg_netns_addr(f->net, host), PORT, NULL};
  f->server = tg_netns_start(f->net, host, argv, log, err, sizeof err);
  if (!f->server) fail_msg("start server: %s", err);
}

static int root_namespace_has(const char *text) {
  const char *argv[] = {"/bin/sh", "-c", "ip -o addr; ip -o link", NULL};
  static char out[1 << 16];
  int status;
  assert_int_equal(tg_proc_run(argv, (const char *const[]){"PATH=/usr/sbin:/sbin:/usr/bin:/bin", NULL},
                               5000, out, sizeof out, &status),
                   0);
  return strstr(out, text) != NULL;
}

static void test_hosts_reach_each_other(void **state) {
  fixture *f = *state;
  if (!(f->net = cluster_or_skip(3))) skip();
  char pid[32];
  snprintf(pid, sizeof pid, "-%d-", (int)getpid());
  assert_int_equal(tg_netns_size(f->net), 3);
  for (int i = 0; i < 3; i++) {
    assert_non_null(strstr(tg_netns_name(f->net, i), pid));
    assert_int_equal(strncmp(tg_netns_addr(f->net, i), "10.77.", 6), 0);
    for (int j = 0; j < i; j++) assert_string_not_equal(tg_netns_addr(f->net, i), tg_netns_addr(f->net, j));
  }
  assert_null(tg_netns_name(f->net, 3));
  assert_null(tg_netns_addr(f->net, -1));
  start_server(f, 1);
  assert_true(reaches(f->net, 0, 1, 5000));
  assert_true(reaches(f->net, 2, 1, 5000));
  /* The hosts' addresses and links exist only inside the cluster. */
  char subnet[32];
  snprintf(subnet, sizeof subnet, "%.*s", (int)(strrchr(tg_netns_addr(f->net, 0), '.') - tg_netns_addr(f->net, 0)) + 1,
           tg_netns_addr(f->net, 0));
  assert_false(root_namespace_has(subnet));
}

static void test_cut_and_heal(void **state) {
  fixture *f = *state;
  if (!(f->net = cluster_or_skip(2))) skip();
  char err[256];
  start_server(f, 1);
  assert_true(reaches(f->net, 0, 1, 5000));
  if (tg_netns_cut(f->net, 1, err, sizeof err) != 0) fail_msg("cut: %s", err);
  assert_false(reaches(f->net, 0, 1, 0));
  if (tg_netns_heal(f->net, 1, err, sizeof err) != 0) fail_msg("heal: %s", err);
  assert_true(reaches(f->net, 0, 1, 5000));
  assert_int_equal(tg_netns_cut(f->net, 7, err, sizeof err), -1);
}

static void test_block_between_two_hosts(void **state) {
  fixture *f = *state;
  if (!(f->net = cluster_or_skip(3))) skip();
  char err[256];
  start_server(f, 1);
  assert_true(reaches(f->net, 0, 1, 5000));
  if (tg_netns_block(f->net, 0, 1, err, sizeof err) != 0) {
    if (strstr(err, "no nft binary")) {
      print_message("SKIP: %s\n", err);
      skip();
    }
    fail_msg("block: %s", err);
  }
  assert_false(reaches(f->net, 0, 1, 0));
  assert_true(reaches(f->net, 2, 1, 2000));
  if (tg_netns_unblock(f->net, 0, 1, err, sizeof err) != 0) fail_msg("unblock: %s", err);
  assert_true(reaches(f->net, 0, 1, 5000));
}

static void test_nothing_left_behind(void **state) {
  char err[256];
  if (!cluster_possible_or_skip()) skip();
  /* What a test killed by SIGKILL leaves: a namespace named for a pid
   * that no longer runs. The next cluster removes it. */
  pid_t dead = fork();
  if (dead == 0) _exit(0);
  assert_true(dead > 0);
  waitpid(dead, NULL, 0);
  char stale[64];
  snprintf(stale, sizeof stale, "tgns-%d-0-h0", (int)dead);
  const char *add[] = {"/bin/sh", "-c", "PATH=/usr/sbin:/sbin:$PATH ip netns add \"$0\"", stale, NULL};
  int status;
  assert_int_equal(tg_proc_run(add, NULL, 5000, NULL, 0, &status), 0);
  assert_int_equal(status, 0);

  tg_netns *n = tg_netns_new(2, err, sizeof err);
  if (!n) fail_msg("tg_netns_new: %s", err);
  char names[3][64];
  snprintf(names[0], sizeof names[0], "%s", tg_netns_name(n, 0));
  snprintf(names[1], sizeof names[1], "%s", tg_netns_name(n, 1));
  snprintf(names[2], sizeof names[2], "%.*s-sw", (int)(strrchr(names[0], '-') - names[0]), names[0]);
  const char *list[] = {"/bin/sh", "-c", "PATH=/usr/sbin:/sbin:$PATH ip netns list", NULL};
  char out[8192];
  assert_int_equal(tg_proc_run(list, NULL, 5000, out, sizeof out, &status), 0);
  assert_null(strstr(out, stale));
  for (int i = 0; i < 3; i++) assert_non_null(strstr(out, names[i]));
  tg_netns_free(n);
  assert_int_equal(tg_proc_run(list, NULL, 5000, out, sizeof out, &status), 0);
  for (int i = 0; i < 3; i++) assert_null(strstr(out, names[i]));
}

static void test_bad_arguments(void **state) {
  char err[256] = "";
  assert_null(tg_netns_new(0, err, sizeof err));
  assert_true(strlen(err) > 0);
  assert_null(tg_netns_new(TG_NETNS_MAX_HOSTS + 1, err, sizeof err));
  assert_null(tg_proc_start_in_netns("tgns-no-such-namespace", (const char *const[]){"true", NULL}, "/dev/null",
                                     err, sizeof err));
  assert_non_null(strstr(err, "tgns-no-such-namespace"));
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "serve") == 0) return serve(argv[2], argv[3]);
  if (argc == 5 && strcmp(argv[1], "connect") == 0) return connect_once(argv[2], argv[3], argv[4]);
  ssize_t len = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
  if (len <= 0) return 1;
  self_exe[len] = '\0';
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_hosts_reach_each_other, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cut_and_heal, setup, teardown),
      cmocka_unit_test_setup_teardown(test_block_between_two_hosts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_nothing_left_behind, setup, teardown),
      cmocka_unit_test(test_bad_arguments),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
