/* A stand-in for a trainer process, for the supervisor's tests: it does
 * exactly one thing the test asks for (run, exit with a code, ignore
 * SIGTERM, start a helper process, describe its environment), writes
 * "ready" once it is set up, and never lives longer than two minutes, so a
 * broken test cannot leave it behind for long.
 *
 *   fake_trainer run                 wait to be signalled
 *   fake_trainer exit CODE [DELAY_MS] exit with CODE (after DELAY_MS)
 *   fake_trainer ignore-term         ignore SIGTERM, wait
 *   fake_trainer fork                start a child of its own (same group), wait
 *   fake_trainer env                 print its slot, environment, directory and
 *                                    open descriptors, then wait */
#include <dirent.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LIFETIME_MS 120000

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void wait_a_while(void) {
  for (long waited = 0; waited < LIFETIME_MS; waited += 50) sleep_ms(50);
}

static const char *env_or(const char *name) {
  const char *v = getenv(name);
  return v ? v : "(unset)";
}

/* Descriptors open beyond stdin, stdout and stderr (not counting the one
 * used to list them). */
static int extra_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    int fd = atoi(e->d_name);
    if (e->d_name[0] != '.' && fd > 2 && fd != dirfd(d)) n++;
  }
  closedir(d);
  return n;
}

static void describe(void) {
  char cwd[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd)) snprintf(cwd, sizeof cwd, "?");
  sigset_t mask;
  sigprocmask(SIG_SETMASK, NULL, &mask);
  struct sigaction pipe_action;
  sigaction(SIGPIPE, NULL, &pipe_action);
  printf("TG_SLOT=%s\n", env_or("TG_SLOT"));
  printf("TG_JOB=%s\n", env_or("TG_JOB"));
  printf("TG_NODE_ID=%s\n", env_or("TG_NODE_ID"));
  printf("TG_AGENT_SOCKET=%s\n", env_or("TG_AGENT_SOCKET"));
  printf("INHERITED=%s\n", env_or("TG_TEST_INHERITED"));
  printf("cwd=%s\n", cwd);
  printf("extra_fds=%d\n", extra_fds());
  printf("sigterm_blocked=%d\n", sigismember(&mask, SIGTERM));
  printf("sigpipe_ignored=%d\n", pipe_action.sa_handler == SIG_IGN);
  fprintf(stderr, "to stderr from slot %s\n", env_or("TG_SLOT"));
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "run";
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (strcmp(mode, "exit") == 0) {
    int code = argc > 2 ? atoi(argv[2]) : 1;
    if (argc > 3) sleep_ms(atol(argv[3]));
    return code;
  }
  if (strcmp(mode, "ignore-term") == 0) signal(SIGTERM, SIG_IGN);
  if (strcmp(mode, "env") == 0) describe();
  if (strcmp(mode, "fork") == 0) {
    pid_t child = fork();
    if (child == 0) {
      wait_a_while();
      _exit(0);
    }
    printf("helper=%d\n", (int)child);
  }
  printf("ready pid=%d\n", (int)getpid());
  wait_a_while();
  return 0;
}
