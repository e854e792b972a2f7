/* Test child processes; see proc.h. A fixed table of live children lets
 * the atexit handler kill everything a failing test left behind. */
#include "tests/harness/proc.h"
#include "common/clock/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_LIVE 256

extern char **environ;

struct tg_proc {
  pid_t pid;
  int exited;
  int status;
  char log_path[512];
};

static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static pid_t live[MAX_LIVE];
static pthread_once_t atexit_once = PTHREAD_ONCE_INIT;

static void kill_live(void) {
  pthread_mutex_lock(&live_mu);
  for (int i = 0; i < MAX_LIVE; i++) {
    if (live[i] > 0) {
      kill(live[i], SIGKILL);
      waitpid(live[i], NULL, 0);
      live[i] = 0;
    }
  }
  pthread_mutex_unlock(&live_mu);
}

static void register_atexit(void) { atexit(kill_live); }

static void track(pid_t pid, int add) {
  pthread_mutex_lock(&live_mu);
  for (int i = 0; i < MAX_LIVE; i++) {
    if (add && live[i] == 0) {
      live[i] = pid;
      break;
    }
    if (!add && live[i] == pid) {
      live[i] = 0;
      break;
    }
  }
  pthread_mutex_unlock(&live_mu);
}


/* Starts a child; netns_fd >= 0 makes it join that network namespace
 * before exec (see tg_proc_start_in_netns). */
static tg_proc *start_child(const char *const *argv, const char *log_path, int netns_fd, char *err,
                            size_t errlen) {
  pthread_once(&atexit_once, register_atexit);
  tg_proc *p = calloc(1, sizeof *p);
  if (!p) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  snprintf(p->log_path, sizeof p->log_path, "%s", log_path);
  int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    snprintf(err, errlen, "%s: %s", log_path, strerror(errno));
    free(p);
    return NULL;
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    snprintf(err, errlen, "fork: %s", strerror(errno));
    close(fd);
    free(p);
    return NULL;
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127); /* the parent died before prctl */
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    setpgid(0, 0);
    if (netns_fd >= 0 && setns(netns_fd, CLONE_NEWNET) != 0) {
      dprintf(STDERR_FILENO, "setns: %s\n", strerror(errno));
      _exit(127);
    }
    execvp(argv[0], (char *const *)argv);
    dprintf(STDERR_FILENO, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  close(fd);
  p->pid = pid;
  track(pid, 1);
  return p;
}

tg_proc *tg_proc_start(const char *const *argv, const char *log_path, char *err, size_t errlen) {
  return start_child(argv, log_path, -1, err, errlen);
}

static int open_netns(const char *netns, char *err, size_t errlen);

tg_proc *tg_proc_start_in_netns(const char *netns, const char *const *argv, const char *log_path,
                                char *err, size_t errlen) {
  int ns = open_netns(netns, err, errlen);
  if (ns < 0) return NULL;
  tg_proc *p = start_child(argv, log_path, ns, err, errlen);
  close(ns);
  return p;
}

pid_t tg_proc_pid(const tg_proc *p) { return p->pid; }
const char *tg_proc_log_path(const tg_proc *p) { return p->log_path; }

static void reaped(tg_proc *p, int status) {
  p->exited = 1;
  p->status = status;
  track(p->pid, 0);
}

int tg_proc_running(tg_proc *p) {
  if (p->exited) return 0;
  int status;
  pid_t r = waitpid(p->pid, &status, WNOHANG);
  if (r == p->pid) reaped(p, status);
  return !p->exited;
}

const char *tg_proc_describe_exit(tg_proc *p, char *buf, size_t len) {
  if (tg_proc_running(p))
    snprintf(buf, len, "is running");
  else if (WIFEXITED(p->status))
    snprintf(buf, len, "exited with status %d", WEXITSTATUS(p->status));
  else if (WIFSIGNALED(p->status))
    snprintf(buf, len, "killed by signal %d", WTERMSIG(p->status));
  else
    snprintf(buf, len, "ended");
  return buf;
}

int tg_proc_signal(tg_proc *p, int sig) {
  if (!tg_proc_running(p)) return -1;
  return kill(p->pid, sig);
}

int tg_proc_wait(tg_proc *p, int64_t timeout_ms, int *status) {
  int64_t deadline = tg_clock_mono_ms() + timeout_ms;
  while (tg_proc_running(p)) {
    if (tg_clock_mono_ms() >= deadline) return -1;
    struct timespec ts = {0, 5 * 1000000};
    nanosleep(&ts, NULL);
  }
  if (status) *status = p->status;
  return 0;
}

void tg_proc_stop(tg_proc *p, int64_t timeout_ms) {
  if (!tg_proc_running(p)) return;
  kill(p->pid, SIGCONT); /* a stopped process cannot handle SIGTERM */
  kill(p->pid, SIGTERM);
  if (tg_proc_wait(p, timeout_ms, NULL) == 0) return;
  kill(p->pid, SIGKILL);
  int status;
  if (waitpid(p->pid, &status, 0) == p->pid) reaped(p, status);
}

void tg_proc_free(tg_proc *p) {
  if (!p) return;
  if (tg_proc_running(p)) {
    kill(p->pid, SIGKILL);
    int status;
    if (waitpid(p->pid, &status, 0) == p->pid) reaped(p, status);
  }
  free(p);
}

void tg_proc_dump_file(const char *path, size_t max_bytes) {
  FILE *f = fopen(path, "r");
  if (!f) return;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  long from = size > (long)max_bytes ? size - (long)max_bytes : 0;
  fseek(f, from, SEEK_SET);
  fprintf(stderr, "----- %s (last %ld bytes) -----\n", path, size - from);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stderr);
  fprintf(stderr, "----- end of %s -----\n", path);
  fclose(f);
}

void tg_proc_dump_log(const tg_proc *p, size_t max_bytes) { tg_proc_dump_file(p->log_path, max_bytes); }

/* The environment for a child, built before fork (the child may only exec). */
static const char **child_env(const char *const *extra) {
  size_t n_env = 0, n_extra = 0;
  while (environ[n_env]) n_env++;
  while (extra && extra[n_extra]) n_extra++;
  const char **env = calloc(n_env + n_extra + 1, sizeof *env);
  if (!env) return NULL;
  size_t e = 0;
  for (size_t k = 0; k < n_env; k++) {
    int replaced = 0;
    for (size_t x = 0; x < n_extra && !replaced; x++) {
      size_t name = strcspn(extra[x], "=");
      replaced = strncmp(environ[k], extra[x], name + 1) == 0;
    }
    if (!replaced) env[e++] = environ[k];
  }
  for (size_t x = 0; x < n_extra; x++) env[e++] = extra[x];
  env[e] = NULL;
  return env;
}

/* The netns file of a name ("NAME" means /var/run/netns/NAME), or -1. */
static int open_netns(const char *netns, char *err, size_t errlen) {
  char path[512];
  if (strchr(netns, '/'))
    snprintf(path, sizeof path, "%s", netns);
  else
    snprintf(path, sizeof path, "/var/run/netns/%s", netns);
  int ns = open(path, O_RDONLY | O_CLOEXEC);
  if (ns < 0 && err) snprintf(err, errlen, "network namespace %s: %s", path, strerror(errno));
  return ns;
}

static int run_child(const char *const *argv, const char *const *env_extra, int netns_fd,
                     int64_t timeout_ms, char *out, size_t outlen, int *status);

int tg_proc_run(const char *const *argv, const char *const *env_extra, int64_t timeout_ms, char *out,
                size_t outlen, int *status) {
  return run_child(argv, env_extra, -1, timeout_ms, out, outlen, status);
}

int tg_proc_run_in_netns(const char *netns, const char *const *argv, int64_t timeout_ms, char *out,
                         size_t outlen, int *status) {
  int ns = open_netns(netns, out, outlen);
  if (ns < 0) return -1;
  int rc = run_child(argv, NULL, ns, timeout_ms, out, outlen, status);
  close(ns);
  return rc;
}

/* Runs argv to completion (in network namespace netns_fd when >= 0),
 * capturing its output; see tg_proc_run. */
static int run_child(const char *const *argv, const char *const *env_extra, int netns_fd,
                     int64_t timeout_ms, char *out, size_t outlen, int *status) {
  int pipefd[2] = {-1, -1}, rc = -1;
  size_t len = 0;
  const char **env = child_env(env_extra);
  if (!env || pipe2(pipefd, O_CLOEXEC) != 0) goto out;
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) goto out;
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    dup2(pipefd[1], STDOUT_FILENO);
    dup2(pipefd[1], STDERR_FILENO);
    if (netns_fd >= 0 && setns(netns_fd, CLONE_NEWNET) != 0) {
      dprintf(STDERR_FILENO, "setns: %s\n", strerror(errno));
      _exit(127);
    }
    execvpe(argv[0], (char *const *)argv, (char *const *)env);
    dprintf(STDERR_FILENO, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  track(pid, 1);
  close(pipefd[1]);
  pipefd[1] = -1;
  int64_t deadline = tg_clock_mono_ms() + timeout_ms;
  char sink[1024];
  for (;;) {
    int64_t left = deadline - tg_clock_mono_ms();
    if (left <= 0) break;
    struct pollfd p = {.fd = pipefd[0], .events = POLLIN};
    int pr = poll(&p, 1, (int)left);
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) break;
    char *dst = sink;
    size_t room = sizeof sink;
    if (out && len + 1 < outlen) {
      dst = out + len;
      room = outlen - 1 - len;
    }
    ssize_t r = read(pipefd[0], dst, room);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break; /* end of output: the command is done or closed it */
    if (dst != sink) len += (size_t)r;
  }
  /* Reap within what is left of the deadline, else kill. */
  int st = 0;
  pid_t r;
  while ((r = waitpid(pid, &st, WNOHANG)) == 0 && tg_clock_mono_ms() < deadline) {
    struct timespec ts = {0, 5 * 1000000};
    nanosleep(&ts, NULL);
  }
  if (r != pid) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
  } else {
    if (status) *status = st;
    rc = 0;
  }
  track(pid, 0);
out:
  if (out && outlen) out[len < outlen ? len : outlen - 1] = '\0';
  if (pipefd[0] >= 0) close(pipefd[0]);
  if (pipefd[1] >= 0) close(pipefd[1]);
  free(env);
  return rc;
}

pid_t tg_proc_child_with_env(pid_t parent, const char *entry) {
  char pids[1024], ppid[16];
  snprintf(ppid, sizeof ppid, "%d", (int)parent);
  const char *pg[] = {"pgrep", "-P", ppid, NULL};
  int status;
  if (tg_proc_run(pg, NULL, 5000, pids, sizeof pids, &status) != 0) return 0;
  char *save = NULL;
  for (char *tok = strtok_r(pids, "\n", &save); tok; tok = strtok_r(NULL, "\n", &save)) {
    char path[64], env[8192];
    snprintf(path, sizeof path, "/proc/%s/environ", tok);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    size_t got = fread(env, 1, sizeof env - 1, f);
    fclose(f);
    env[got] = '\0';
    for (size_t k = 0; k < got; k += strlen(env + k) + 1)
      if (strcmp(env + k, entry) == 0) return (pid_t)atoi(tok);
  }
  return 0;
}

int tg_proc_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  int port = -1;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

int tg_proc_temp_dir(const char *prefix, char *out, size_t outlen) {
  const char *base = getenv("TEST_TMPDIR");
  if (!base || !*base) base = "/tmp";
  if ((size_t)snprintf(out, outlen, "%s/%s-XXXXXX", base, prefix) >= outlen) return -1;
  return mkdtemp(out) ? 0 : -1;
}
