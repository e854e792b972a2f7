/* Trainer supervision; see supervisor.h for the contract.
 *
 * One thread owns the children. It forks every one of them (so their
 * PR_SET_PDEATHSIG, which follows the forking thread, fires only when the
 * supervisor goes away), polls a pidfd per child plus an eventfd for
 * commands, and reaps with waitpid on exactly the pids it started, never -1,
 * so other parts of the agent may have children of their own. Public calls
 * that change what runs (start, stop, free) post a command to the thread and
 * wait for its answer with a deadline; queries and signals only take the
 * mutex that guards the slot table.
 *
 * When a child exits, the thread first peeks (waitid WNOWAIT), kills
 * whatever is left of the child's process group while the leader's pid is
 * still held by the zombie (so the group id cannot have been reused), then
 * reaps it under the mutex, so tg_supervisor_signal never signals a pid
 * that was already reaped.
 *
 * Between fork and exec the child only makes async-signal-safe calls on
 * data prepared before the fork (argv, the environment, paths); an exec
 * failure is reported back through a close-on-exec pipe. */
#include "agent/supervisor/supervisor.h"
#include "common/clock/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log/log.h"

extern char **environ;

#define EXEC_CHECK_MS 5000      /* how long a child may take to reach exec */
#define KILL_REAP_MS 5000       /* how long SIGKILLed children may take to be reaped */
#define NO_PIDFD_TICK_MS 20     /* poll period when pidfd_open is unavailable */
#define IDLE_TICK_MS 1000       /* the thread's longest sleep */
#define MAX_GRACE_MS 3600000
#define FREE_GRACE_MS 5000

typedef enum { CMD_NONE = 0, CMD_START, CMD_STOP, CMD_QUIT } command;

typedef struct {
  pid_t pid;          /* 0 when none */
  int pidfd;          /* -1 when none or unsupported */
  int running;
  int restart_pending;
  int64_t restart_due_ms;
  int gave_up;
  int restarts_total;
  int starts;
  int last_exit_code;
  int last_signal;
  int64_t restart_ms[TG_SUPERVISOR_MAX_RESTARTS]; /* times of recent restarts (a ring) */
  int restart_next;
  char **envp;        /* shared strings + this slot's TG_SLOT */
  char slot_env[32];  /* "TG_SLOT=N" */
  char *log_path;     /* NULL: inherit stdout/stderr */
} slot;

struct tg_supervisor {
  char **argv;             /* copies */
  char *exe;               /* resolved argv[0] */
  char *work_dir;
  char **env_strings;      /* inherited + configured, shared by every slot's envp */
  int slots;
  int max_restarts;
  int64_t restart_window_ms;
  int64_t restart_backoff_ms;
  tg_supervisor_start_fn on_start;
  tg_supervisor_exit_fn on_exit;
  void *user;

  int wake_fd;
  pthread_t thread;
  int thread_running;

  pthread_mutex_t mu;      /* guards everything below */
  pthread_cond_t cv;
  int mu_ready;
  command cmd;             /* the posted command; CMD_NONE when the mailbox is free */
  int64_t cmd_grace_ms;
  uint64_t cmd_serial;
  uint64_t done_serial;
  int cmd_result;
  char cmd_err[256];
  int started;             /* slots are meant to run (between start and stop) */
  int stopping;            /* a stop is in progress: no restarts */
  slot *slot;
};


static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* ---- configuration ---------------------------------------------------- */

static void free_strv(char **v) {
  if (!v) return;
  for (size_t i = 0; v[i]; i++) free(v[i]);
  free(v);
}

static char **copy_strv(const char *const *v) {
  size_t n = 0;
  while (v[n]) n++;
  char **out = calloc(n + 1, sizeof *out);
  if (!out) return NULL;
  for (size_t i = 0; i < n; i++) {
    out[i] = strdup(v[i]);
    if (!out[i]) {
      free_strv(out);
      return NULL;
    }
  }
  return out;
}

static int is_executable_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* argv[0] as an absolute path: relative paths from the current directory,
 * bare names from PATH, as execvp would, but decided before any fork. */
static char *resolve_command(const char *name, char *err, size_t errlen) {
  char path[PATH_MAX];
  if (strchr(name, '/')) {
    char cwd[PATH_MAX];
    if (name[0] == '/')
      snprintf(path, sizeof path, "%s", name);
    else if (!getcwd(cwd, sizeof cwd) ||
             snprintf(path, sizeof path, "%s/%s", cwd, name) >= (int)sizeof path) {
      set_err(err, errlen, "command %s: path too long", name);
      return NULL;
    }
    if (!is_executable_file(path)) {
      set_err(err, errlen, "command %s: not an executable file", path);
      return NULL;
    }
    return strdup(path);
  }
  const char *search = getenv("PATH");
  if (!search || !*search) search = "/usr/local/bin:/usr/bin:/bin";
  while (*search) {
    size_t len = strcspn(search, ":");
    if (len > 0 && (int)len < (int)sizeof path - 2 &&
        snprintf(path, sizeof path, "%.*s/%s", (int)len, search, name) < (int)sizeof path &&
        is_executable_file(path))
      return strdup(path);
    search += len;
    if (*search == ':') search++;
  }
  set_err(err, errlen, "command %s: not found in PATH", name);
  return NULL;
}

static int env_name_len(const char *entry) {
  const char *eq = strchr(entry, '=');
  return eq ? (int)(eq - entry) : -1;
}

static int same_name(const char *a, const char *b) {
  int n = env_name_len(a);
  return n > 0 && n == env_name_len(b) && strncmp(a, b, (size_t)n) == 0;
}

/* The environment every slot shares: the caller's, minus TG_SLOT and the
 * names configured, plus the configured entries. */
static char **build_env(const char *const *extra, char *err, size_t errlen) {
  size_t n_env = 0, n_extra = 0;
  while (environ && environ[n_env]) n_env++;
  while (extra && extra[n_extra]) {
    if (env_name_len(extra[n_extra]) <= 0) {
      set_err(err, errlen, "environment entry '%s' is not NAME=value", extra[n_extra]);
      return NULL;
    }
    n_extra++;
  }
  char **out = calloc(n_env + n_extra + 1, sizeof *out);
  if (!out) goto nomem;
  size_t k = 0;
  for (size_t i = 0; i < n_env; i++) {
    int replaced = env_name_len(environ[i]) <= 0 || same_name(environ[i], "TG_SLOT=");
    for (size_t j = 0; j < n_extra && !replaced; j++) replaced = same_name(environ[i], extra[j]);
    if (replaced) continue;
    if (!(out[k++] = strdup(environ[i]))) goto nomem;
  }
  for (size_t j = 0; j < n_extra; j++)
    if (!(out[k++] = strdup(extra[j]))) goto nomem;
  return out;
nomem:
  free_strv(out);
  set_err(err, errlen, "out of memory");
  return NULL;
}

static const char *config_problem(const tg_supervisor_config *c) {
  if (!c->argv || !c->argv[0] || !c->argv[0][0]) return "argv must name a command";
  if (c->slots < 1 || c->slots > TG_SUPERVISOR_MAX_SLOTS) return "slots must be 1..256";
  if (c->max_restarts < 0 || c->max_restarts > TG_SUPERVISOR_MAX_RESTARTS)
    return "max_restarts must be 0..64";
  if (c->restart_window_ms < 1) return "restart_window_ms must be at least 1";
  if (c->restart_backoff_ms < 0 || c->restart_backoff_ms > 60000)
    return "restart_backoff_ms must be 0..60000";
  return NULL;
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int init_slots(tg_supervisor *s, const char *log_dir, char *err, size_t errlen) {
  size_t n_env = 0;
  while (s->env_strings[n_env]) n_env++;
  for (int i = 0; i < s->slots; i++) {
    slot *sl = &s->slot[i];
    sl->pidfd = -1;
    sl->last_exit_code = -1;
    snprintf(sl->slot_env, sizeof sl->slot_env, "TG_SLOT=%d", i);
    sl->envp = calloc(n_env + 2, sizeof *sl->envp);
    if (!sl->envp) goto nomem;
    memcpy(sl->envp, s->env_strings, n_env * sizeof *sl->envp);
    sl->envp[n_env] = sl->slot_env;
    if (log_dir) {
      size_t len = strlen(log_dir) + 32;
      if (!(sl->log_path = malloc(len))) goto nomem;
      snprintf(sl->log_path, len, "%s/slot-%d.log", log_dir, i);
    }
  }
  return 0;
nomem:
  set_err(err, errlen, "out of memory");
  return -1;
}

static void *supervise(void *arg);

tg_supervisor *tg_supervisor_new(const tg_supervisor_config *cfg, char *err, size_t errlen) {
  tg_supervisor *s = NULL;
  const char *why = cfg ? config_problem(cfg) : "no config";
  if (why) {
    set_err(err, errlen, "%s", why);
    return NULL;
  }
  if (cfg->work_dir && !is_dir(cfg->work_dir)) {
    set_err(err, errlen, "work_dir %s: not a directory", cfg->work_dir);
    return NULL;
  }
  if (cfg->log_dir && !is_dir(cfg->log_dir)) {
    set_err(err, errlen, "log_dir %s: not a directory", cfg->log_dir);
    return NULL;
  }
  if (!(s = calloc(1, sizeof *s))) goto nomem;
  s->wake_fd = -1;
  s->slots = cfg->slots;
  s->max_restarts = cfg->max_restarts;
  s->restart_window_ms = cfg->restart_window_ms;
  s->restart_backoff_ms = cfg->restart_backoff_ms;
  s->on_start = cfg->on_start;
  s->on_exit = cfg->on_exit;
  s->user = cfg->user;
  if (!(s->exe = resolve_command(cfg->argv[0], err, errlen))) goto fail;
  if (!(s->argv = copy_strv(cfg->argv))) goto nomem;
  if (cfg->work_dir && !(s->work_dir = strdup(cfg->work_dir))) goto nomem;
  if (!(s->env_strings = build_env(cfg->env, err, errlen))) goto fail;
  if (!(s->slot = calloc((size_t)s->slots, sizeof *s->slot))) goto nomem;
  if (init_slots(s, cfg->log_dir, err, errlen) != 0) goto fail;
  if ((s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
    set_err(err, errlen, "eventfd: %s", strerror(errno));
    goto fail;
  }
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, &ca);
  pthread_condattr_destroy(&ca);
  s->mu_ready = 1;
  /* The thread takes no signals: they belong to whoever handles them in the
   * agent (children get an empty mask of their own). */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&s->thread, NULL, supervise, s);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    set_err(err, errlen, "pthread_create: %s", strerror(rc));
    goto fail;
  }
  s->thread_running = 1;
  return s;
nomem:
  set_err(err, errlen, "out of memory");
fail:
  tg_supervisor_free(s);
  return NULL;
}

/* ---- the children ------------------------------------------------------ */

typedef struct {
  int stage; /* what failed in the child */
  int err;   /* its errno */
} child_failure;

enum { STAGE_LOG = 1, STAGE_CHDIR, STAGE_EXEC, STAGE_PDEATHSIG };

static const char *stage_name(int stage) {
  switch (stage) {
    case STAGE_LOG: return "open log";
    case STAGE_CHDIR: return "chdir";
    case STAGE_EXEC: return "exec";
    case STAGE_PDEATHSIG: return "parent died before";
  }
  return "start";
}

static void child_fail(int fd, int stage, int err) {
  child_failure f = {stage, err};
  ssize_t w = write(fd, &f, sizeof f);
  (void)w;
  _exit(127);
}

/* Runs in the child between fork and exec: async-signal-safe calls only. */
static void child_exec(const tg_supervisor *s, const slot *sl, pid_t parent, int report_fd) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; sig++) sigaction(sig, &dfl, NULL); /* ignored ones survive exec */
  setpgid(0, 0);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) child_fail(report_fd, STAGE_PDEATHSIG, 0);
  int in = open("/dev/null", O_RDONLY);
  if (in >= 0 && in != STDIN_FILENO) {
    dup2(in, STDIN_FILENO);
    close(in);
  }
  if (sl->log_path) {
    int fd = open(sl->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) child_fail(report_fd, STAGE_LOG, errno);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
  }
  if (s->work_dir && chdir(s->work_dir) != 0) child_fail(report_fd, STAGE_CHDIR, errno);
  /* Nothing of the agent's (sockets, shared memory) leaks into a trainer. */
  syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
  execve(s->exe, s->argv, sl->envp);
  child_fail(report_fd, STAGE_EXEC, errno);
}

/* Reads the child's report: 0 if it exec'd, -1 with a reason if not. */
static int await_exec(int fd, pid_t pid, char *err, size_t errlen) {
  child_failure f;
  size_t got = 0;
  int64_t deadline = tg_clock_mono_ms() + EXEC_CHECK_MS;
  while (got < sizeof f) {
    int64_t left = deadline - tg_clock_mono_ms();
    if (left <= 0) {
      TG_WARN("supervisor: pid %d has not reached exec after %d ms; treating it as started",
              (int)pid, EXEC_CHECK_MS);
      return 0;
    }
    struct pollfd pfd = {fd, POLLIN, 0};
    int r = poll(&pfd, 1, (int)left);
    if (r < 0 && errno != EINTR) break;
    if (r <= 0) continue;
    ssize_t n = read(fd, (char *)&f + got, sizeof f - got);
    if (n == 0) return got == 0 ? 0 : -1; /* EOF: exec closed the pipe */
    if (n < 0 && errno != EINTR && errno != EAGAIN) break;
    if (n > 0) got += (size_t)n;
  }
  if (got < sizeof f) {
    set_err(err, errlen, "lost track of pid %d before exec", (int)pid);
    return -1;
  }
  set_err(err, errlen, "%s: %s", stage_name(f.stage), f.err ? strerror(f.err) : "failed");
  return -1;
}

static int restarts_in_window(const tg_supervisor *s, const slot *sl, int64_t now) {
  int n = 0;
  for (int i = 0; i < s->max_restarts; i++)
    if (sl->restart_ms[i] > 0 && now - sl->restart_ms[i] < s->restart_window_ms) n++;
  return n;
}

/* Starts one slot's process. On a fork failure the slot is handled as if it
 * had exited at once (so the restart budget still bounds retries). Returns
 * 0, or -1 with a reason when it could not start or exec. */
static int spawn(tg_supervisor *s, int i, char *err, size_t errlen) {
  slot *sl = &s->slot[i];
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) {
    set_err(err, errlen, "slot %d: pipe: %s", i, strerror(errno));
    return -1;
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) child_exec(s, sl, parent, pipefd[1]);
  close(pipefd[1]);
  if (pid < 0) {
    set_err(err, errlen, "slot %d: fork: %s", i, strerror(errno));
    close(pipefd[0]);
    return -1;
  }
  setpgid(pid, pid); /* also done in the child; whichever runs first wins */
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  char why[192] = "";
  int rc = await_exec(pipefd[0], pid, why, sizeof why);
  close(pipefd[0]);
  pthread_mutex_lock(&s->mu);
  sl->pid = pid;
  sl->pidfd = pidfd;
  sl->running = 1;
  sl->restart_pending = 0;
  sl->starts++;
  pthread_mutex_unlock(&s->mu);
  if (rc != 0) {
    /* It exits with 127 and is reaped like any other exit. */
    set_err(err, errlen, "slot %d: %s %s", i, s->exe, why);
    TG_ERROR("supervisor: slot %d could not start %s: %s; check the trainer command and "
             "directories", i, s->exe, why);
    return -1;
  }
  TG_INFO("supervisor: slot %d started pid %d", i, (int)pid);
  if (s->on_start) s->on_start(i, pid, s->user);
  return 0;
}

/* Bookkeeping after slot i's process `pid` ended with wait status `status`
 * (or never started: status -1), then the callback. */
static void handle_exit(tg_supervisor *s, int i, pid_t pid, int status) {
  slot *sl = &s->slot[i];
  int code = -1, sig = 0;
  if (status != -1 && WIFEXITED(status)) code = WEXITSTATUS(status);
  if (status != -1 && WIFSIGNALED(status)) sig = WTERMSIG(status);
  int64_t now = tg_clock_mono_ms();
  pthread_mutex_lock(&s->mu);
  int will_restart = 0, gave_up = 0;
  sl->restart_pending = 0;
  sl->last_exit_code = code;
  sl->last_signal = sig;
  /* Exit code 0: the trainer finished its work; nothing to restart. */
  if (s->started && !s->stopping && code != 0) {
    if (restarts_in_window(s, sl, now) < s->max_restarts) {
      will_restart = 1;
      sl->restart_pending = 1;
      sl->restart_due_ms = now + s->restart_backoff_ms;
      sl->restart_ms[sl->restart_next] = now;
      sl->restart_next = (sl->restart_next + 1) % s->max_restarts;
      sl->restarts_total++;
    } else {
      gave_up = sl->gave_up = 1;
    }
  }
  pthread_mutex_unlock(&s->mu);
  if (gave_up)
    TG_WARN("supervisor: slot %d pid %d exited (code %d, signal %d) and its restart budget "
            "(%d within %lld ms) is spent; leaving it down",
            i, (int)pid, code, sig, s->max_restarts, (long long)s->restart_window_ms);
  else
    TG_INFO("supervisor: slot %d pid %d exited (code %d, signal %d)%s", i, (int)pid, code, sig,
            will_restart ? "; restarting" : "");
  if (s->on_exit) s->on_exit(i, pid, code, sig, will_restart, s->user);
}

/* Reaps every child that has exited; returns how many are still running. */
static int reap_exited(tg_supervisor *s) {
  int running = 0;
  for (int i = 0; i < s->slots; i++) {
    slot *sl = &s->slot[i];
    if (!sl->running) continue; /* only this thread changes `running` and `pid` */
    pid_t pid = sl->pid;
    siginfo_t info;
    memset(&info, 0, sizeof info);
    int r = waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT);
    if (r == 0 && info.si_pid == 0) {
      running++;
      continue;
    }
    if (r == 0) kill(-pid, SIGKILL); /* what is left of its group */
    int status = -1;
    pthread_mutex_lock(&s->mu);
    if (r == 0 && waitpid(pid, &status, 0) != pid) status = -1;
    sl->running = 0;
    sl->pid = 0;
    if (sl->pidfd >= 0) close(sl->pidfd);
    sl->pidfd = -1;
    pthread_mutex_unlock(&s->mu);
    if (r != 0)
      TG_ERROR("supervisor: slot %d pid %d vanished (%s): something else reaped it", i,
               (int)pid, strerror(errno));
    handle_exit(s, i, pid, status);
  }
  return running;
}

/* Sleeps until a child exits, a command arrives or until `until_ms`. */
static void wait_for_events(tg_supervisor *s, int64_t until_ms) {
  struct pollfd pfd[TG_SUPERVISOR_MAX_SLOTS + 1];
  nfds_t n = 0;
  int64_t timeout = until_ms - tg_clock_mono_ms();
  pfd[n++] = (struct pollfd){s->wake_fd, POLLIN, 0};
  for (int i = 0; i < s->slots; i++) {
    if (!s->slot[i].running) continue;
    if (s->slot[i].pidfd >= 0)
      pfd[n++] = (struct pollfd){s->slot[i].pidfd, POLLIN, 0};
    else if (timeout > NO_PIDFD_TICK_MS)
      timeout = NO_PIDFD_TICK_MS;
  }
  if (timeout < 0) timeout = 0;
  if (poll(pfd, n, (int)timeout) > 0 && (pfd[0].revents & POLLIN)) {
    uint64_t v;
    ssize_t r = read(s->wake_fd, &v, sizeof v);
    (void)r;
  }
}

static void signal_groups(tg_supervisor *s, int sig) {
  pthread_mutex_lock(&s->mu);
  for (int i = 0; i < s->slots; i++) {
    pid_t pid = s->slot[i].pid;
    if (!s->slot[i].running || pid <= 0) continue;
    if (kill(-pid, sig) != 0) kill(pid, sig); /* its own group may not exist yet */
  }
  pthread_mutex_unlock(&s->mu);
}

static int reap_until(tg_supervisor *s, int64_t deadline_ms) {
  int running;
  while ((running = reap_exited(s)) > 0 && tg_clock_mono_ms() < deadline_ms)
    wait_for_events(s, deadline_ms);
  return running;
}

static int do_stop(tg_supervisor *s, int64_t grace_ms, char *err, size_t errlen) {
  pthread_mutex_lock(&s->mu);
  s->stopping = 1;
  s->started = 0;
  for (int i = 0; i < s->slots; i++) s->slot[i].restart_pending = 0;
  pthread_mutex_unlock(&s->mu);
  signal_groups(s, SIGTERM);
  signal_groups(s, SIGCONT); /* a stopped process cannot act on SIGTERM */
  int running = reap_until(s, tg_clock_mono_ms() + grace_ms);
  if (running > 0) {
    TG_WARN("supervisor: %d trainer(s) still running %lld ms after SIGTERM; sending SIGKILL",
            running, (long long)grace_ms);
    signal_groups(s, SIGKILL);
    running = reap_until(s, tg_clock_mono_ms() + KILL_REAP_MS);
  }
  pthread_mutex_lock(&s->mu);
  s->stopping = 0;
  pthread_mutex_unlock(&s->mu);
  if (running > 0) {
    set_err(err, errlen, "%d trainer(s) not reaped %d ms after SIGKILL", running, KILL_REAP_MS);
    TG_ERROR("supervisor: %s (stuck in the kernel?); they are reaped when they exit", err);
    return -1;
  }
  return 0;
}

static int do_start(tg_supervisor *s, char *err, size_t errlen) {
  pthread_mutex_lock(&s->mu);
  int busy = s->started;
  for (int i = 0; i < s->slots && !busy; i++) busy = s->slot[i].running;
  if (!busy) {
    s->started = 1;
    for (int i = 0; i < s->slots; i++) {
      slot *sl = &s->slot[i];
      sl->gave_up = sl->restarts_total = sl->starts = sl->restart_next = 0;
      sl->last_exit_code = -1;
      sl->last_signal = 0;
      memset(sl->restart_ms, 0, sizeof sl->restart_ms);
    }
  }
  pthread_mutex_unlock(&s->mu);
  if (busy) {
    set_err(err, errlen, "already started");
    return -1;
  }
  for (int i = 0; i < s->slots; i++) {
    if (spawn(s, i, err, errlen) != 0) {
      do_stop(s, 0, NULL, 0);
      return -1;
    }
  }
  return 0;
}

static void run_due_restarts(tg_supervisor *s) {
  int64_t now = tg_clock_mono_ms();
  for (int i = 0; i < s->slots; i++) {
    pthread_mutex_lock(&s->mu);
    int due = s->started && !s->stopping && s->slot[i].restart_pending &&
              s->slot[i].restart_due_ms <= now;
    pthread_mutex_unlock(&s->mu);
    if (!due) continue;
    char why[256];
    if (spawn(s, i, why, sizeof why) != 0 && !s->slot[i].running) {
      TG_ERROR("supervisor: %s", why);
      handle_exit(s, i, 0, -1); /* counts against the budget like an exit */
    }
  }
}

static int64_t next_wake_ms(tg_supervisor *s) {
  int64_t wake = tg_clock_mono_ms() + IDLE_TICK_MS;
  pthread_mutex_lock(&s->mu);
  for (int i = 0; i < s->slots; i++)
    if (s->slot[i].restart_pending && s->slot[i].restart_due_ms < wake)
      wake = s->slot[i].restart_due_ms;
  pthread_mutex_unlock(&s->mu);
  return wake;
}

static void *supervise(void *arg) {
  tg_supervisor *s = arg;
  for (;;) {
    wait_for_events(s, next_wake_ms(s));
    reap_exited(s);
    run_due_restarts(s);
    pthread_mutex_lock(&s->mu);
    command cmd = s->cmd;
    int64_t grace_ms = s->cmd_grace_ms;
    pthread_mutex_unlock(&s->mu);
    if (cmd == CMD_NONE) continue;
    char err[256] = "";
    int rc = cmd == CMD_START ? do_start(s, err, sizeof err)
                              : do_stop(s, grace_ms, err, sizeof err);
    pthread_mutex_lock(&s->mu);
    s->cmd_result = rc;
    snprintf(s->cmd_err, sizeof s->cmd_err, "%s", err);
    s->done_serial = s->cmd_serial;
    s->cmd = CMD_NONE;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (cmd == CMD_QUIT) break;
  }
  return NULL;
}

/* ---- the public calls -------------------------------------------------- */

static int timed_wait(tg_supervisor *s, int64_t deadline_ms) {
  struct timespec ts = {(time_t)(deadline_ms / 1000), (long)(deadline_ms % 1000) * 1000000};
  return pthread_cond_timedwait(&s->cv, &s->mu, &ts);
}

/* Posts a command to the thread and waits for its answer until wait_ms. */
static int run_command(tg_supervisor *s, command cmd, int64_t grace_ms, int64_t wait_ms,
                       char *err, size_t errlen) {
  if (pthread_equal(pthread_self(), s->thread)) {
    set_err(err, errlen, "not allowed from a supervisor callback");
    return -1;
  }
  int64_t deadline = tg_clock_mono_ms() + wait_ms;
  int rc = -1;
  pthread_mutex_lock(&s->mu);
  while (s->cmd != CMD_NONE && tg_clock_mono_ms() < deadline) timed_wait(s, deadline);
  if (s->cmd != CMD_NONE) {
    set_err(err, errlen, "supervisor busy with another command");
    goto out;
  }
  s->cmd = cmd;
  s->cmd_grace_ms = grace_ms;
  uint64_t serial = ++s->cmd_serial;
  uint64_t one = 1;
  ssize_t w = write(s->wake_fd, &one, sizeof one);
  (void)w;
  while (s->done_serial < serial && tg_clock_mono_ms() < deadline) timed_wait(s, deadline);
  if (s->done_serial < serial) {
    set_err(err, errlen, "no answer from the supervisor thread in %lld ms", (long long)wait_ms);
    goto out;
  }
  rc = s->cmd_result;
  if (rc != 0) set_err(err, errlen, "%s", s->cmd_err);
out:
  pthread_mutex_unlock(&s->mu);
  return rc;
}

int tg_supervisor_start(tg_supervisor *s, char *err, size_t errlen) {
  if (!s) return -1;
  int64_t wait_ms = (int64_t)s->slots * EXEC_CHECK_MS + KILL_REAP_MS + 10000;
  return run_command(s, CMD_START, 0, wait_ms, err, errlen);
}

static int64_t clamp_grace(int64_t grace_ms) {
  return grace_ms < 0 ? 0 : grace_ms > MAX_GRACE_MS ? MAX_GRACE_MS : grace_ms;
}

int tg_supervisor_stop(tg_supervisor *s, int64_t grace_ms) {
  if (!s) return -1;
  grace_ms = clamp_grace(grace_ms);
  char err[256];
  int rc = run_command(s, CMD_STOP, grace_ms, grace_ms + KILL_REAP_MS + 10000, err, sizeof err);
  if (rc != 0) TG_ERROR("supervisor: stop: %s", err);
  return rc;
}

int tg_supervisor_slot_state(tg_supervisor *s, int slot_index, tg_supervisor_slot *out) {
  if (!s || !out || slot_index < 0 || slot_index >= s->slots) return -1;
  int64_t now = tg_clock_mono_ms();
  pthread_mutex_lock(&s->mu);
  const slot *sl = &s->slot[slot_index];
  out->pid = sl->pid;
  out->running = sl->running;
  out->restart_pending = sl->restart_pending;
  out->gave_up = sl->gave_up;
  out->restarts = restarts_in_window(s, sl, now);
  out->restarts_total = sl->restarts_total;
  out->starts = sl->starts;
  out->last_exit_code = sl->last_exit_code;
  out->last_signal = sl->last_signal;
  pthread_mutex_unlock(&s->mu);
  return 0;
}

int tg_supervisor_signal(tg_supervisor *s, int slot_index, int sig) {
  if (!s || slot_index < 0 || slot_index >= s->slots || sig < 0 || sig >= NSIG) return -1;
  int rc = -1;
  pthread_mutex_lock(&s->mu);
  pid_t pid = s->slot[slot_index].pid;
  if (s->slot[slot_index].running && pid > 0) rc = kill(-pid, sig) == 0 ? 0 : kill(pid, sig);
  pthread_mutex_unlock(&s->mu);
  return rc;
}

void tg_supervisor_free(tg_supervisor *s) {
  if (!s) return;
  if (s->thread_running) {
    if (pthread_equal(pthread_self(), s->thread)) {
      TG_ERROR("supervisor: tg_supervisor_free called from a callback; leaking it");
      return;
    }
    char err[256];
    if (run_command(s, CMD_QUIT, FREE_GRACE_MS, FREE_GRACE_MS + KILL_REAP_MS + 10000, err,
                    sizeof err) != 0)
      TG_ERROR("supervisor: free: %s", err);
    pthread_join(s->thread, NULL); /* the thread ends after a bounded stop */
  }
  if (s->mu_ready) {
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
  }
  if (s->wake_fd >= 0) close(s->wake_fd);
  for (int i = 0; s->slot && i < s->slots; i++) {
    free(s->slot[i].envp);
    free(s->slot[i].log_path);
  }
  free(s->slot);
  free_strv(s->env_strings);
  free_strv(s->argv);
  free(s->exe);
  free(s->work_dir);
  free(s);
}
