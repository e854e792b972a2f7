/* Reading and restarting processes through /proc; see procs.h. */
#include "chaos/procs.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock/clock.h"

#define CONFIG_MAX (64 * 1024)

/* Reads a whole /proc file (at most max bytes); the length, or -1. */
static ssize_t read_all(const char *path, char *buf, size_t max) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  size_t got = 0;
  while (got < max) {
    ssize_t n = read(fd, buf + got, max - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += (size_t)n;
  }
  close(fd);
  return (ssize_t)got;
}

/* The state letter and start time from /proc/PID/stat; -1 if it is gone.
 * The command name (field 2) may hold spaces and parentheses: the fields
 * after it start at the last ')'. */
static int read_stat(pid_t pid, char *state, unsigned long long *start) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  ssize_t n = read_all(path, buf, sizeof buf - 1);
  if (n <= 0) return -1;
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  if (!p || p[1] != ' ') return -1;
  p += 2;
  *state = *p;
  /* Fields 3.. follow; the start time is field 22. */
  for (int field = 3; field < 22; field++) {
    p = strchr(p, ' ');
    if (!p) return -1;
    p++;
  }
  char *end;
  errno = 0;
  *start = strtoull(p, &end, 10);
  return errno || end == p ? -1 : 0;
}

/* readlink of /proc/PID/<what>, without a " (deleted)" suffix (*deleted
 * says whether there was one). */
static int read_link(pid_t pid, const char *what, char *out, size_t len, int *deleted) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, what);
  ssize_t n = readlink(path, out, len - 1);
  if (n <= 0) return -1;
  out[n] = '\0';
  static const char suffix[] = " (deleted)";
  size_t l = (size_t)n, s = sizeof suffix - 1;
  *deleted = l > s && strcmp(out + l - s, suffix) == 0;
  if (*deleted) out[l - s] = '\0';
  return 0;
}

/* The regular file fd `fd` writes to, or "" (a pipe, a terminal, gone). */
static void output_file(pid_t pid, int fd, char *out, size_t len) {
  char what[16], path[64];
  int deleted;
  snprintf(what, sizeof what, "fd/%d", fd);
  snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)pid, fd);
  struct stat st;
  if (read_link(pid, what, out, len, &deleted) != 0 || deleted || out[0] != '/' || stat(path, &st) != 0 ||
      !S_ISREG(st.st_mode))
    out[0] = '\0';
}

static int other_netns(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/ns/net", (int)pid);
  struct stat mine, theirs;
  if (stat("/proc/self/ns/net", &mine) != 0 || stat(path, &theirs) != 0) return -1;
  if (mine.st_ino == theirs.st_ino && mine.st_dev == theirs.st_dev) return -1;
  return open(path, O_RDONLY | O_CLOEXEC);
}

void tg_chaos_proc_clear(tg_chaos_proc *p) {
  if (!p) return;
  free(p->args);
  free(p->env);
  if (p->netns_fd >= 0) close(p->netns_fd);
  memset(p, 0, sizeof *p);
  p->netns_fd = -1;
}

int tg_chaos_proc_read(pid_t pid, tg_chaos_proc *p) {
  memset(p, 0, sizeof *p);
  p->netns_fd = -1;
  char state, path[64];
  int deleted;
  if (read_stat(pid, &state, &p->start_ticks) != 0 || state == 'Z') return -1;
  p->pid = pid;
  p->args = malloc(TG_CHAOS_PROC_ARGS_MAX);
  p->env = malloc(TG_CHAOS_PROC_ARGS_MAX);
  if (!p->args || !p->env) goto err;
  snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
  ssize_t n = read_all(path, p->args, TG_CHAOS_PROC_ARGS_MAX - 1);
  if (n <= 0) goto err; /* a kernel thread, or gone */
  p->args_len = (size_t)n;
  if (p->args[n - 1] != '\0') p->args[p->args_len++] = '\0'; /* cut at the bound */
  for (size_t i = 0; i < p->args_len; i += strlen(p->args + i) + 1) p->n_args++;
  snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
  n = read_all(path, p->env, TG_CHAOS_PROC_ARGS_MAX - 1);
  if (n < 0) goto err;
  p->env_len = (size_t)n;
  if (n > 0 && p->env[n - 1] != '\0') p->env[p->env_len++] = '\0';
  if (read_link(pid, "exe", p->exe, sizeof p->exe, &deleted) != 0 ||
      read_link(pid, "cwd", p->cwd, sizeof p->cwd, &deleted) != 0)
    goto err;
  output_file(pid, 1, p->out, sizeof p->out);
  output_file(pid, 2, p->err, sizeof p->err);
  p->netns_fd = other_netns(pid);
  return 0;
err:
  tg_chaos_proc_clear(p);
  return -1;
}

const char *tg_chaos_proc_program(const tg_chaos_proc *p) {
  const char *slash = strrchr(p->exe, '/');
  return slash ? slash + 1 : p->exe;
}

int tg_chaos_proc_alive(const tg_chaos_proc *p) {
  char state;
  unsigned long long start;
  return p->pid > 0 && read_stat(p->pid, &state, &start) == 0 && start == p->start_ticks && state != 'Z';
}

/* The n-th argument (n < n_args). */
static const char *arg(const tg_chaos_proc *p, size_t n) {
  const char *a = p->args;
  for (size_t i = 0; i < n; i++) a += strlen(a) + 1;
  return a;
}

/* `name = value` in a config file (tg_config's format: # comments). */
static int config_value(const char *file, const char *name, char *out, size_t len) {
  char *text = malloc(CONFIG_MAX + 1);
  ssize_t n = text ? read_all(file, text, CONFIG_MAX) : -1;
  int found = 0;
  if (n > 0) {
    text[n] = '\0';
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line && !found; line = strtok_r(NULL, "\n", &save)) {
      char *hash = strchr(line, '#'), *eq = strchr(line, '=');
      if (hash) *hash = '\0';
      if (!eq || (hash && hash < eq)) continue;
      char *k = line, *v = eq + 1, *e = eq;
      while (isspace((unsigned char)*k)) k++;
      while (e > k && isspace((unsigned char)e[-1])) e--;
      *e = '\0';
      while (isspace((unsigned char)*v)) v++;
      for (char *t = v + strlen(v); t > v && isspace((unsigned char)t[-1]); t--) t[-1] = '\0';
      if (strcmp(k, name) == 0) {
        snprintf(out, len, "%s", v);
        found = 1;
      }
    }
  }
  free(text);
  return found;
}

int tg_chaos_proc_option(const tg_chaos_proc *p, const char *name, int trainer, char *out, size_t len) {
  size_t i = 1, name_len = strlen(name);
  if (trainer) {
    while (i < p->n_args && strcmp(arg(p, i), "--") != 0) i++;
    if (i++ >= p->n_args) return 0;
  }
  char config[1024] = "";
  for (; i < p->n_args; i++) {
    const char *a = arg(p, i);
    if (!trainer && strcmp(a, "--") == 0) break;
    if (strncmp(a, "--", 2) != 0 || strncmp(a + 2, name, name_len) != 0) {
      if (!trainer && strncmp(a, "--config", 8) == 0 && (a[8] == '=' || (a[8] == '\0' && i + 1 < p->n_args)))
        snprintf(config, sizeof config, "%s", a[8] == '=' ? a + 9 : arg(p, i + 1));
      continue;
    }
    const char *rest = a + 2 + name_len;
    if (*rest == '=') {
      snprintf(out, len, "%s", rest + 1);
      return 1;
    }
    if (*rest == '\0' && i + 1 < p->n_args) {
      snprintf(out, len, "%s", arg(p, i + 1));
      return 1;
    }
  }
  if (!config[0]) return 0;
  /* Relative to the process's working directory. */
  char path[2100];
  if (config[0] == '/')
    snprintf(path, sizeof path, "%s", config);
  else
    snprintf(path, sizeof path, "%s/%s", p->cwd, config);
  return config_value(path, name, out, len);
}

size_t tg_chaos_proc_list(pid_t *out, size_t max) {
  DIR *d = opendir("/proc");
  if (!d) return 0;
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < max) {
    char *end;
    long v = strtol(e->d_name, &end, 10);
    if (*end == '\0' && v > 0) out[n++] = (pid_t)v;
  }
  closedir(d);
  return n;
}

/* NULL-terminated pointers into a NUL-separated blob. */
static char **split(char *blob, size_t len) {
  size_t n = 0;
  for (size_t i = 0; i < len; i += strlen(blob + i) + 1) n++;
  char **v = calloc(n + 1, sizeof *v);
  if (!v) return NULL;
  n = 0;
  for (size_t i = 0; i < len; i += strlen(blob + i) + 1) v[n++] = blob + i;
  return v;
}

static int open_output(const char *path) {
  return open(path[0] ? path : "/dev/null", O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

/* The grandchild: into the namespace and directory, outputs reopened,
 * signals as for a fresh process, then exec. Writes errno to `report`
 * (close-on-exec) if any of it fails. */
static void exec_child(const tg_chaos_proc *p, char **argv, char **envp, int report) {
  int e = 0;
  sigset_t all;
  sigemptyset(&all);
  sigprocmask(SIG_SETMASK, &all, NULL);
  for (int sig = 1; sig < NSIG; sig++) signal(sig, SIG_DFL);
  if (p->netns_fd >= 0 && setns(p->netns_fd, CLONE_NEWNET) != 0) e = errno;
  /* Nothing of tg-chaos's (sockets, files) is passed on. */
  for (int fd = 3; fd < 4096; fd++) fcntl(fd, F_SETFD, FD_CLOEXEC);
  int in = open("/dev/null", O_RDONLY | O_CLOEXEC), out = open_output(p->out), err = open_output(p->err);
  if (!e && (chdir(p->cwd) != 0 || in < 0 || out < 0 || err < 0)) e = errno;
  if (!e && (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)) e = errno;
  if (!e) {
    execve(p->exe, argv, envp);
    e = errno;
  }
  ssize_t w = write(report, &e, sizeof e);
  (void)w;
  _exit(127);
}

int tg_chaos_proc_respawn(tg_chaos_proc *p, char *err, size_t errlen) {
  if (access(p->exe, X_OK) != 0) {
    snprintf(err, errlen, "cannot run %s again: %s (was it rebuilt or removed?)", p->exe, strerror(errno));
    return -1;
  }
  char **argv = split(p->args, p->args_len), **envp = split(p->env, p->env_len);
  int report[2] = {-1, -1}, pidpipe[2] = {-1, -1}, rc = -1;
  if (!argv || !envp || pipe2(report, O_CLOEXEC) != 0 || pipe2(pidpipe, O_CLOEXEC) != 0) {
    snprintf(err, errlen, "cannot start %s: %s", p->exe, strerror(errno ? errno : ENOMEM));
    goto out;
  }
  pid_t child = fork();
  if (child < 0) {
    snprintf(err, errlen, "fork: %s", strerror(errno));
    goto out;
  }
  if (child == 0) {
    /* A session of its own, then a grandchild that init (or the nearest
     * subreaper) adopts once this child exits: not tg-chaos's. */
    setsid();
    pid_t g = fork();
    if (g == 0) exec_child(p, argv, envp, report[1]);
    ssize_t w = write(pidpipe[1], &g, sizeof g);
    (void)w;
    _exit(g < 0 ? 1 : 0);
  }
  close(report[1]);
  close(pidpipe[1]);
  report[1] = pidpipe[1] = -1;
  pid_t g = -1;
  int status, e = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (read(pidpipe[0], &g, sizeof g) != (ssize_t)sizeof g || g <= 0) {
    snprintf(err, errlen, "cannot start %s: fork failed", p->exe);
    goto out;
  }
  /* EOF: the exec happened (the pipe closed with it). */
  ssize_t n;
  while ((n = read(report[0], &e, sizeof e)) < 0 && errno == EINTR) {
  }
  if (n == (ssize_t)sizeof e) {
    snprintf(err, errlen, "cannot start %s: %s", p->exe, strerror(e));
    goto out;
  }
  char state;
  unsigned long long start;
  if (read_stat(g, &state, &start) != 0) {
    snprintf(err, errlen, "%s (pid %d) exited at once", p->exe, (int)g);
    goto out;
  }
  p->pid = g;
  p->start_ticks = start;
  rc = 0;
out:
  for (int i = 0; i < 2; i++) {
    if (report[i] >= 0) close(report[i]);
    if (pidpipe[i] >= 0) close(pidpipe[i]);
  }
  free(argv);
  free(envp);
  return rc;
}

int tg_chaos_proc_wait_gone(const tg_chaos_proc *p, int64_t timeout_ms) {
  int64_t deadline = tg_clock_mono_ms() + timeout_ms;
  while (tg_chaos_proc_alive(p)) {
    if (tg_clock_mono_ms() > deadline) return -1;
    tg_clock_sleep_ms(10);
  }
  return 0;
}

int tg_chaos_proc_kill(const tg_chaos_proc *p, int64_t timeout_ms) {
  if (!tg_chaos_proc_alive(p) || kill(p->pid, SIGKILL) != 0) return -1;
  return tg_chaos_proc_wait_gone(p, timeout_ms);
}
