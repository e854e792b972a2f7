/* Daemon plumbing; see daemon.h. */
#include "common/daemon/daemon.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/log/log.h"

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) { stop_signal = sig; }

int tg_daemon_logging(const char *name, const char *level) {
  int l = tg_log_parse_level(level);
  if (l < 0) {
    fprintf(stderr, "%s: --log-level must be debug, info, warn or error, not '%s'\n", name, level);
    return -1;
  }
  tg_log_init(name, (tg_log_level)l);
  return 0;
}

void tg_daemon_prepare(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  /* Every agent (or trainer) holds a connection: thousands of them need
   * more than the default 1,024 descriptors. */
  struct rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
}

int tg_daemon_wait(void) {
  while (!stop_signal) pause();
  return (int)stop_signal;
}
