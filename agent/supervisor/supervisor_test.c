/* Tests for the trainer supervisor, against real processes: fake_trainer
 * (built beside this test) stands in for a trainer. A crash (kill -9) is
 * reported at once and restarted with a new pid; exit codes are reported;
 * the restart budget stops a crash loop; stop escalates to SIGKILL for a
 * trainer that ignores SIGTERM and continues a stopped one; environment and
 * per-slot logs are right; nothing is left behind (no zombie, no orphaned
 * helper). Every wait has a deadline. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/supervisor/supervisor.h"

#define TRAINER "agent/supervisor/fake_trainer"
#define WAIT_MS 10000 /* generous: sanitizer builds on a busy machine */

enum { EV_START = 1, EV_EXIT = 2 };

typedef struct {
  int kind;
  int slot;
  pid_t pid;
  int exit_code;
  int signal;
  int will_restart;
} event;

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  event ev[512];
  int n;
} recorder;

static recorder rec;
static char tmp_dir[512];
static char log_dir[600];

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void record(event e) {
  pthread_mutex_lock(&rec.mu);
  if (rec.n < (int)(sizeof rec.ev / sizeof rec.ev[0])) rec.ev[rec.n++] = e;
  pthread_cond_broadcast(&rec.cv);
  pthread_mutex_unlock(&rec.mu);
}

/* Callbacks run on the supervisor's thread: they record, the test asserts. */
static void on_start(int slot, pid_t pid, void *user) {
  record((event){EV_START, slot, pid, 0, 0, 0});
}

static void on_exit_cb(int slot, pid_t pid, int exit_code, int sig, int will_restart, void *user) {
  record((event){EV_EXIT, slot, pid, exit_code, sig, will_restart});
}

/* The index of the first event of `kind` for `slot` at or after `from`,
 * waiting up to timeout_ms; -1 if none came. */
static int wait_event(int kind, int slot, int from, int64_t timeout_ms) {
  int64_t deadline = mono_ms() + timeout_ms;
  int found = -1;
  pthread_mutex_lock(&rec.mu);
  for (;;) {
    for (int i = from; i < rec.n && found < 0; i++)
      if (rec.ev[i].kind == kind && rec.ev[i].slot == slot) found = i;
    int64_t now = mono_ms();
    if (found >= 0 || now >= deadline) break;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = ts.tv_nsec + (deadline - now < 50 ? deadline - now : 50) * 1000000;
    ts.tv_sec += ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    pthread_cond_timedwait(&rec.cv, &rec.mu, &ts);
  }
  pthread_mutex_unlock(&rec.mu);
  return found;
}

static event event_at(int i) {
  pthread_mutex_lock(&rec.mu);
  event e = rec.ev[i];
  pthread_mutex_unlock(&rec.mu);
  return e;
}

static int count_events(int kind, int slot) {
  int n = 0;
  pthread_mutex_lock(&rec.mu);
  for (int i = 0; i < rec.n; i++) n += rec.ev[i].kind == kind && rec.ev[i].slot == slot;
  pthread_mutex_unlock(&rec.mu);
  return n;
}

static void read_file(const char *path, char *buf, size_t len) {
  buf[0] = '\0';
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ssize_t n = read(fd, buf, len - 1);
  buf[n > 0 ? n : 0] = '\0';
  close(fd);
}

static void slot_log(int slot, char *path, size_t len) {
  snprintf(path, len, "%s/slot-%d.log", log_dir, slot);
}

/* Waits until slot's log contains `needle`; fails the test if it does not. */
static void wait_log(int slot, const char *needle) {
  char path[700], buf[8192];
  slot_log(slot, path, sizeof path);
  int64_t deadline = mono_ms() + WAIT_MS;
  for (;;) {
    read_file(path, buf, sizeof buf);
    if (strstr(buf, needle)) return;
    if (mono_ms() >= deadline) fail_msg("%s never showed '%s'; it has:\n%s", path, needle, buf);
    sleep_ms(10);
  }
}

/* 1 while pid exists and is not a zombie. */
static int alive(pid_t pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  read_file(path, buf, sizeof buf);
  const char *paren = strrchr(buf, ')');
  return paren && paren[1] == ' ' && paren[2] != 'Z' && paren[2] != 'X';
}

static int wait_dead(pid_t pid) {
  int64_t deadline = mono_ms() + WAIT_MS;
  while (alive(pid) && mono_ms() < deadline) sleep_ms(10);
  return !alive(pid);
}

/* Processes (zombies included) whose parent is this test process. */
static int children_of_this_process(void) {
  DIR *d = opendir("/proc");
  assert_non_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    char path[300], buf[512];
    snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    read_file(path, buf, sizeof buf);
    const char *paren = strrchr(buf, ')');
    int ppid = 0;
    char state;
    if (paren && sscanf(paren + 1, " %c %d", &state, &ppid) == 2 && ppid == (int)getpid()) n++;
  }
  closedir(d);
  return n;
}

static void assert_nothing_left(void) {
  assert_int_equal(children_of_this_process(), 0);
  errno = 0;
  assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
  assert_int_equal(errno, ECHILD);
}

static int setup(void **state) {
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_mutex_init(&rec.mu, NULL);
  pthread_cond_init(&rec.cv, &ca);
  pthread_condattr_destroy(&ca);
  rec.n = 0;
  const char *base = getenv("TEST_TMPDIR");
  snprintf(tmp_dir, sizeof tmp_dir, "%s/supervisor-XXXXXX", base ? base : "/tmp");
  if (!mkdtemp(tmp_dir)) return -1;
  snprintf(log_dir, sizeof log_dir, "%s/logs", tmp_dir);
  return mkdir(log_dir, 0755);
}

static int teardown(void **state) {
  pthread_mutex_destroy(&rec.mu);
  pthread_cond_destroy(&rec.cv);
  return 0;
}

static tg_supervisor_config base_config(const char *const *argv, int slots) {
  tg_supervisor_config c = {
      .argv = argv,
      .slots = slots,
      .work_dir = NULL,
      .log_dir = log_dir,
      .max_restarts = 3,
      .restart_window_ms = 60000,
      .restart_backoff_ms = 20,
      .on_start = on_start,
      .on_exit = on_exit_cb,
      .user = &rec,
  };
  return c;
}

static tg_supervisor *start(const tg_supervisor_config *c) {
  char err[256] = "";
  tg_supervisor *s = tg_supervisor_new(c, err, sizeof err);
  if (!s) fail_msg("tg_supervisor_new: %s", err);
  if (tg_supervisor_start(s, err, sizeof err) != 0) fail_msg("tg_supervisor_start: %s", err);
  return s;
}

static tg_supervisor_slot state_of(tg_supervisor *s, int slot) {
  tg_supervisor_slot st;
  assert_int_equal(tg_supervisor_slot_state(s, slot, &st), 0);
  return st;
}

static void test_environment_and_logs(void **state) {
  const char *argv[] = {TRAINER, "env", NULL};
  const char *env[] = {"TG_AGENT_SOCKET=/run/tg/agent.sock", "TG_NODE_ID=node-7",
                       "TG_JOB=job-1", NULL};
  /* Things a child must not inherit: a stray descriptor, the agent's
   * signal mask and ignored signals, a TG_SLOT of the agent's own. */
  int stray = open("/dev/null", O_RDONLY);
  assert_true(stray >= 0);
  signal(SIGPIPE, SIG_IGN);
  sigset_t term, old;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &term, &old);
  setenv("TG_TEST_INHERITED", "yes", 1);
  setenv("TG_SLOT", "99", 1);
  setenv("TG_JOB", "not-this-one", 1);
  char path[700];
  slot_log(1, path, sizeof path);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs("earlier line\n", f);
  fclose(f);

  tg_supervisor_config c = base_config(argv, 2);
  c.env = env;
  c.work_dir = tmp_dir;
  tg_supervisor *s = start(&c);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  signal(SIGPIPE, SIG_DFL);
  unsetenv("TG_TEST_INHERITED");
  unsetenv("TG_SLOT");
  unsetenv("TG_JOB");
  close(stray);

  assert_true(wait_event(EV_START, 0, 0, WAIT_MS) >= 0);
  assert_true(wait_event(EV_START, 1, 0, WAIT_MS) >= 0);
  wait_log(0, "ready");
  wait_log(1, "ready");
  for (int slot = 0; slot < 2; slot++) {
    char buf[8192], want[700];
    slot_log(slot, path, sizeof path);
    read_file(path, buf, sizeof buf);
    snprintf(want, sizeof want, "TG_SLOT=%d\n", slot);
    assert_non_null(strstr(buf, want));
    assert_non_null(strstr(buf, "TG_JOB=job-1\n"));
    assert_non_null(strstr(buf, "TG_NODE_ID=node-7\n"));
    assert_non_null(strstr(buf, "TG_AGENT_SOCKET=/run/tg/agent.sock\n"));
    assert_non_null(strstr(buf, "INHERITED=yes\n"));
    snprintf(want, sizeof want, "cwd=%s\n", tmp_dir);
    assert_non_null(strstr(buf, want));
    assert_non_null(strstr(buf, "extra_fds=0\n"));
    assert_non_null(strstr(buf, "sigterm_blocked=0\n"));
    assert_non_null(strstr(buf, "sigpipe_ignored=0\n"));
    snprintf(want, sizeof want, "to stderr from slot %d\n", slot);
    assert_non_null(strstr(buf, want));
    if (slot == 1) assert_memory_equal(buf, "earlier line\n", 13); /* appended */
    tg_supervisor_slot st = state_of(s, slot);
    assert_true(st.running);
    assert_true(st.pid > 0);
    assert_int_equal(st.starts, 1);
    assert_int_equal(st.restarts, 0);
    assert_int_equal(st.last_exit_code, -1);
  }
  assert_int_equal(tg_supervisor_stop(s, 5000), 0);
  tg_supervisor_free(s);
  assert_nothing_left();
}

static void test_kill9_reported_and_restarted(void **state) {
  const char *argv[] = {TRAINER, "run", NULL};
  tg_supervisor_config c = base_config(argv, 2);
  tg_supervisor *s = start(&c);
  int i = wait_event(EV_START, 1, 0, WAIT_MS);
  assert_true(i >= 0);
  pid_t first = event_at(i).pid;
  assert_int_equal(state_of(s, 1).pid, first);

  /* kill -9 from outside. */
  int mark = rec.n;
  assert_int_equal(kill(first, SIGKILL), 0);
  i = wait_event(EV_EXIT, 1, mark, WAIT_MS);
  assert_true(i >= 0);
  event e = event_at(i);
  assert_int_equal(e.pid, first);
  assert_int_equal(e.signal, SIGKILL);
  assert_int_equal(e.exit_code, -1);
  assert_int_equal(e.will_restart, 1);
  i = wait_event(EV_START, 1, i, WAIT_MS);
  assert_true(i >= 0);
  pid_t second = event_at(i).pid;
  assert_true(second != first);
  tg_supervisor_slot st = state_of(s, 1);
  assert_int_equal(st.pid, second);
  assert_true(st.running);
  assert_int_equal(st.restarts, 1);
  assert_int_equal(st.starts, 2);
  assert_int_equal(st.last_signal, SIGKILL);
  assert_int_equal(st.last_exit_code, -1);

  /* The same through the supervisor. */
  mark = rec.n;
  assert_int_equal(tg_supervisor_signal(s, 1, SIGKILL), 0);
  i = wait_event(EV_EXIT, 1, mark, WAIT_MS);
  assert_true(i >= 0);
  assert_int_equal(event_at(i).pid, second);
  assert_int_equal(event_at(i).signal, SIGKILL);
  assert_true(wait_event(EV_START, 1, i, WAIT_MS) >= 0);
  assert_int_equal(state_of(s, 1).restarts, 2);

  /* Slot 0 was never touched. */
  assert_int_equal(count_events(EV_START, 0), 1);
  assert_int_equal(count_events(EV_EXIT, 0), 0);
  assert_int_equal(tg_supervisor_stop(s, 5000), 0);
  tg_supervisor_free(s);
  assert_nothing_left();
}

static void test_exit_code_reported(void **state) {
  const char *argv[] = {TRAINER, "exit", "7", NULL};
  tg_supervisor_config c = base_config(argv, 1);
  c.max_restarts = 0;
  tg_supervisor *s = start(&c);
  int i = wait_event(EV_EXIT, 0, 0, WAIT_MS);
  assert_true(i >= 0);
  event e = event_at(i);
  assert_int_equal(e.exit_code, 7);
  assert_int_equal(e.signal, 0);
  assert_int_equal(e.will_restart, 0);
  tg_supervisor_slot st = state_of(s, 0);
  assert_false(st.running);
  assert_int_equal(st.pid, 0);
  assert_true(st.gave_up);
  assert_int_equal(st.last_exit_code, 7);
  assert_int_equal(st.last_signal, 0);
  assert_int_equal(tg_supervisor_signal(s, 0, SIGTERM), -1); /* nothing to signal */
  tg_supervisor_free(s);
  assert_nothing_left();
}

static void test_restart_budget(void **state) {
  const char *argv[] = {TRAINER, "exit", "3", NULL};
  tg_supervisor_config c = base_config(argv, 1);
  c.max_restarts = 2;
  tg_supervisor *s = start(&c);
  int from = 0;
  for (int k = 0; k < 3; k++) {
    int i = wait_event(EV_EXIT, 0, from, WAIT_MS);
    assert_true(i >= 0);
    event e = event_at(i);
    assert_int_equal(e.exit_code, 3);
    assert_int_equal(e.will_restart, k < 2); /* the third exit is one too many */
    from = i + 1;
  }
  /* Left down: no fourth start comes. */
  assert_int_equal(wait_event(EV_START, 0, from, 300), -1);
  assert_int_equal(count_events(EV_START, 0), 3);
  tg_supervisor_slot st = state_of(s, 0);
  assert_true(st.gave_up);
  assert_false(st.running);
  assert_false(st.restart_pending);
  assert_int_equal(st.restarts, 2);
  assert_int_equal(st.restarts_total, 2);
  assert_int_equal(st.starts, 3);

  /* Start again after a stop: a fresh budget. */
  char err[256];
  assert_int_equal(tg_supervisor_start(s, err, sizeof err), -1); /* still started */
  assert_int_equal(tg_supervisor_stop(s, 1000), 0);
  int mark = rec.n;
  assert_int_equal(tg_supervisor_start(s, err, sizeof err), 0);
  assert_true(wait_event(EV_START, 0, mark, WAIT_MS) >= 0);
  int i = wait_event(EV_EXIT, 0, mark, WAIT_MS);
  assert_true(i >= 0);
  assert_int_equal(event_at(i).will_restart, 1);
  tg_supervisor_free(s);
  assert_nothing_left();
}

static void test_budget_window_slides(void **state) {
  /* One restart allowed per 200 ms, and each run lasts longer than that:
   * the slot keeps being restarted. */
  const char *argv[] = {TRAINER, "exit", "4", "300", NULL};
  tg_supervisor_config c = base_config(argv, 1);
  c.max_restarts = 1;
  c.restart_window_ms = 200;
  tg_supervisor *s = start(&c);
  int from = 0;
  for (int k = 0; k < 3; k++) {
    int i = wait_event(EV_EXIT, 0, from, WAIT_MS);
    assert_true(i >= 0);
    assert_int_equal(event_at(i).exit_code, 4);
    assert_int_equal(event_at(i).will_restart, 1);
    from = i + 1;
  }
  assert_false(state_of(s, 0).gave_up);
  assert_int_equal(tg_supervisor_stop(s, 1000), 0);
  tg_supervisor_free(s);
  assert_nothing_left();
}

static void test_stop_escalates_to_sigkill(void **state) {
  const char *argv[] = {TRAINER, "ignore-term", NULL};
  const char *argv_run[] = {TRAINER, "run", NULL};
  tg_supervisor_config c = base_config(argv, 1);
  tg_supervisor *stubborn = start(&c);
  tg_supervisor_config c2 = base_config(argv_run, 2);
  c2.log_dir = NULL; /* shares the test's stdout; slot-0.log is the stubborn one */
  tg_supervisor *polite = start(&c2);
  wait_log(0, "ready"); /* SIGTERM is ignored from here on */
  int64_t t0 = mono_ms();
  assert_int_equal(tg_supervisor_stop(stubborn, 300), 0);
  assert_true(mono_ms() - t0 >= 300);
  int i = wait_event(EV_EXIT, 0, 0, 0);
  assert_true(i >= 0);
  assert_int_equal(event_at(i).signal, SIGKILL);
  assert_int_equal(event_at(i).will_restart, 0);
  assert_false(state_of(stubborn, 0).running);
  tg_supervisor_free(stubborn);

  pthread_mutex_lock(&rec.mu);
  rec.n = 0;
  pthread_mutex_unlock(&rec.mu);
  /* A trainer that honours SIGTERM ends with it, well before the grace. */
  assert_int_equal(tg_supervisor_stop(polite, 10000), 0);
  for (int slot = 0; slot < 2; slot++) {
    i = wait_event(EV_EXIT, slot, 0, 0);
    assert_true(i >= 0);
    assert_int_equal(event_at(i).signal, SIGTERM);
    assert_int_equal(event_at(i).will_restart, 0);
  }
  assert_int_equal(tg_supervisor_stop(polite, 10000), 0); /* idempotent */
  tg_supervisor_free(polite);
  assert_nothing_left();
}

static void test_stopped_trainer(void **state) {
  const char *argv[] = {TRAINER, "run", NULL};
  tg_supervisor_config c = base_config(argv, 1);
  tg_supervisor *s = start(&c);
  wait_log(0, "ready");
  pid_t pid = state_of(s, 0).pid;
  assert_int_equal(tg_supervisor_signal(s, 0, SIGSTOP), 0);
  /* Stopped is not exited. */
  assert_int_equal(wait_event(EV_EXIT, 0, 0, 200), -1);
  assert_true(state_of(s, 0).running);
  assert_int_equal(state_of(s, 0).pid, pid);
  assert_int_equal(tg_supervisor_stop(s, 5000), 0);
  int i = wait_event(EV_EXIT, 0, 0, 0);
  assert_true(i >= 0);
  assert_int_equal(event_at(i).signal, SIGTERM); /* continued, then it obeyed SIGTERM */
  tg_supervisor_free(s);
  assert_nothing_left();
}

static pid_t helper_of(int slot) {
  char path[700], buf[8192];
  slot_log(slot, path, sizeof path);
  wait_log(slot, "ready");
  read_file(path, buf, sizeof buf);
  const char *h = strstr(buf, "helper=");
  assert_non_null(h);
  return (pid_t)atoi(h + 7);
}

static void test_nothing_left_behind(void **state) {
  const char *argv[] = {TRAINER, "fork", NULL};
  tg_supervisor_config c = base_config(argv, 2);
  tg_supervisor *s = start(&c);
  pid_t helper0 = helper_of(0), helper1 = helper_of(1);
  assert_true(alive(helper0));
  assert_true(alive(helper1));

  /* A crashed trainer's helpers go with it. */
  pid_t trainer0 = state_of(s, 0).pid;
  assert_int_equal(kill(trainer0, SIGKILL), 0);
  int i = wait_event(EV_EXIT, 0, 0, WAIT_MS);
  assert_true(i >= 0);
  assert_true(wait_dead(helper0));
  assert_true(wait_event(EV_START, 0, i, WAIT_MS) >= 0);

  /* Free without an explicit stop: everything goes. */
  pid_t trainer1 = state_of(s, 1).pid;
  tg_supervisor_free(s);
  assert_true(wait_dead(helper1));
  assert_false(alive(trainer1));
  assert_nothing_left();
}

/* The agent dies without stopping anything (kill -9, a crash): its
 * trainers must not live on. The "agent" here is a forked copy of this test
 * process that starts a supervisor and exits at once. */
static void test_trainers_die_with_the_agent(void **state) {
  const char *argv[] = {TRAINER, "run", NULL};
  int pfd[2];
  assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
  pid_t agent = fork();
  assert_true(agent >= 0);
  if (agent == 0) {
    tg_supervisor_config c = base_config(argv, 2);
    c.on_start = NULL;
    c.on_exit = NULL;
    tg_supervisor *s = tg_supervisor_new(&c, NULL, 0);
    if (!s || tg_supervisor_start(s, NULL, 0) != 0) _exit(1);
    pid_t pids[2];
    tg_supervisor_slot st;
    for (int i = 0; i < 2; i++) pids[i] = tg_supervisor_slot_state(s, i, &st) == 0 ? st.pid : 0;
    _exit(write(pfd[1], pids, sizeof pids) == (ssize_t)sizeof pids ? 0 : 1);
  }
  close(pfd[1]);
  pid_t pids[2] = {0, 0};
  struct pollfd p = {pfd[0], POLLIN, 0};
  assert_int_equal(poll(&p, 1, WAIT_MS), 1);
  assert_int_equal(read(pfd[0], pids, sizeof pids), (ssize_t)sizeof pids);
  close(pfd[0]);
  int status = -1;
  int64_t deadline = mono_ms() + WAIT_MS;
  while (waitpid(agent, &status, WNOHANG) == 0 && mono_ms() < deadline) sleep_ms(10);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  assert_true(pids[0] > 0 && pids[1] > 0);
  assert_true(wait_dead(pids[0]));
  assert_true(wait_dead(pids[1]));
  assert_nothing_left();
}

static void test_bad_config_refused(void **state) {
  char err[256] = "";
  const char *argv[] = {TRAINER, "run", NULL};
  tg_supervisor_config c = base_config(argv, 1);
  tg_supervisor_config bad;

  assert_null(tg_supervisor_new(NULL, err, sizeof err));
  bad = c;
  bad.argv = NULL;
  assert_null(tg_supervisor_new(&bad, err, sizeof err));
  bad = c;
  bad.slots = 0;
  assert_null(tg_supervisor_new(&bad, err, sizeof err));
  assert_non_null(strstr(err, "slots"));
  bad = c;
  bad.slots = TG_SUPERVISOR_MAX_SLOTS + 1;
  assert_null(tg_supervisor_new(&bad, err, sizeof err));
  bad = c;
  bad.max_restarts = -1;
  assert_null(tg_supervisor_new(&bad, err, sizeof err));
  bad = c;
  bad.restart_window_ms = 0;
  assert_null(tg_supervisor_new(&bad, err, sizeof err));
  bad = c;
  bad.restart_backoff_ms = -1;
  assert_null(tg_supervisor_new(&bad, err, sizeof err));
  bad = c;
  bad.work_dir = "/nonexistent/dir";
  assert_null(tg_supervisor_new(&bad, err, sizeof err));
  assert_non_null(strstr(err, "work_dir"));
  bad = c;
  bad.log_dir = "/nonexistent/logs";
  assert_null(tg_supervisor_new(&bad, err, sizeof err));
  const char *missing[] = {"agent/supervisor/no-such-trainer", NULL};
  bad = c;
  bad.argv = missing;
  assert_null(tg_supervisor_new(&bad, err, sizeof err));
  assert_non_null(strstr(err, "no-such-trainer"));
  const char *unknown[] = {"tg-no-such-command-anywhere", NULL};
  bad.argv = unknown;
  assert_null(tg_supervisor_new(&bad, err, sizeof err));
  assert_non_null(strstr(err, "not found in PATH"));
  const char *bad_env[] = {"NOEQUALS", NULL};
  bad = c;
  bad.env = bad_env;
  assert_null(tg_supervisor_new(&bad, err, sizeof err));

  /* A command found in PATH works. */
  const char *true_cmd[] = {"true", NULL};
  bad = c;
  bad.argv = true_cmd;
  bad.max_restarts = 0;
  tg_supervisor *s = start(&bad);
  int i = wait_event(EV_EXIT, 0, 0, WAIT_MS);
  assert_true(i >= 0);
  assert_int_equal(event_at(i).exit_code, 0);
  tg_supervisor_free(s);

  /* Failures in the child are reported by start, with nothing left running:
   * a file that cannot be executed, and a log that cannot be opened. */
  char script[700];
  snprintf(script, sizeof script, "%s/not-a-program", tmp_dir);
  int fd = open(script, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "\x01\x02garbage", 9), 9);
  close(fd);
  const char *not_program[] = {script, NULL};
  bad = c;
  bad.argv = not_program;
  bad.slots = 2;
  s = tg_supervisor_new(&bad, err, sizeof err);
  assert_non_null(s);
  assert_int_equal(tg_supervisor_start(s, err, sizeof err), -1);
  assert_non_null(strstr(err, "exec"));
  assert_false(state_of(s, 0).running);
  assert_false(state_of(s, 1).running);
  tg_supervisor_free(s);

  char path[700];
  slot_log(0, path, sizeof path);
  unlink(path);
  assert_int_equal(mkdir(path, 0755), 0); /* slot-0.log is a directory */
  s = tg_supervisor_new(&c, err, sizeof err);
  assert_non_null(s);
  assert_int_equal(tg_supervisor_start(s, err, sizeof err), -1);
  assert_non_null(strstr(err, "open log"));
  tg_supervisor_free(s);
  rmdir(path);

  /* Bad arguments to the other calls. */
  s = tg_supervisor_new(&c, err, sizeof err);
  assert_non_null(s);
  tg_supervisor_slot st;
  assert_int_equal(tg_supervisor_slot_state(s, -1, &st), -1);
  assert_int_equal(tg_supervisor_slot_state(s, 1, &st), -1);
  assert_int_equal(tg_supervisor_slot_state(s, 0, NULL), -1);
  assert_int_equal(tg_supervisor_signal(s, 0, SIGKILL), -1); /* not started */
  assert_int_equal(tg_supervisor_signal(s, 5, SIGKILL), -1);
  assert_int_equal(tg_supervisor_stop(s, 100), 0); /* nothing to stop */
  tg_supervisor_free(s);
  tg_supervisor_free(NULL);
  assert_nothing_left();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_environment_and_logs, setup, teardown),
      cmocka_unit_test_setup_teardown(test_kill9_reported_and_restarted, setup, teardown),
      cmocka_unit_test_setup_teardown(test_exit_code_reported, setup, teardown),
      cmocka_unit_test_setup_teardown(test_restart_budget, setup, teardown),
      cmocka_unit_test_setup_teardown(test_budget_window_slides, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stop_escalates_to_sigkill, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stopped_trainer, setup, teardown),
      cmocka_unit_test_setup_teardown(test_nothing_left_behind, setup, teardown),
      cmocka_unit_test_setup_teardown(test_trainers_die_with_the_agent, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_config_refused, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
