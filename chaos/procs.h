/* Processes tg-chaos did not start, read from /proc: what `tg-chaos run
 * --attach` needs to find a running job's coordinators, agents and
 * trainers, to signal them, and to start a killed one again exactly as it
 * was started (its executable, arguments, environment, working directory,
 * the files its output went to, its network namespace).
 *
 * A pid alone can be reused, so a process is (pid, start time in clock
 * ticks since boot): alive means that pair still names a running process
 * (a zombie is dead). Options are read the way tg_config_parse reads
 * them: `--name value` or `--name=value` before a bare `--` (after it:
 * the command an agent runs for its trainers), else a `name = value` line
 * of the `--config FILE` given. */
#ifndef TG_CHAOS_PROCS_H
#define TG_CHAOS_PROCS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TG_CHAOS_PROC_ARGS_MAX (64 * 1024) /* bytes of argv or environment kept */

typedef struct {
  pid_t pid;
  unsigned long long start_ticks;
  char exe[1024];      /* the executable (/proc/PID/exe) */
  char cwd[1024];
  char out[1024];      /* the regular files fds 1 and 2 write to; "" otherwise (a pipe, a terminal) */
  char err[1024];
  char *args;          /* argv, NUL-separated, n_args of them */
  size_t args_len, n_args;
  char *env;           /* environment, NUL-separated */
  size_t env_len;
  int netns_fd;        /* an open /proc/PID/ns/net when not tg-chaos's own namespace; -1 otherwise */
} tg_chaos_proc;

/* Fills p from /proc/PID. 0, or -1 (gone, or not ours to read). */
int tg_chaos_proc_read(pid_t pid, tg_chaos_proc *p);
void tg_chaos_proc_clear(tg_chaos_proc *p);

/* The basename of its executable ("tg-agent"). */
const char *tg_chaos_proc_program(const tg_chaos_proc *p);

/* 1 if (pid, start time) still names a live process. */
int tg_chaos_proc_alive(const tg_chaos_proc *p);

/* The value of option `name` (without dashes): 1 with it in out, 0 when
 * it is not given. `trainer` 0: the process's own options; 1: those after
 * its bare `--` (no config file there). */
int tg_chaos_proc_option(const tg_chaos_proc *p, const char *name, int trainer, char *out, size_t len);

/* Every pid in /proc, at most max; returns how many. */
size_t tg_chaos_proc_list(pid_t *out, size_t max);

/* Starts the process again as p describes it, detached (a session of its
 * own, not tg-chaos's child, so it outlives tg-chaos as the original
 * would have), and points p at the new one. 0, or -1 with a reason. */
int tg_chaos_proc_respawn(tg_chaos_proc *p, char *err, size_t errlen);

/* Waits up to timeout_ms for it to be gone (it is not tg-chaos's child,
 * so "gone" includes a zombie its parent has yet to reap). 0, or -1 if it
 * is still there. */
int tg_chaos_proc_wait_gone(const tg_chaos_proc *p, int64_t timeout_ms);

/* SIGKILLs it and waits as above. 0, or -1 if it was not alive or did
 * not go. */
int tg_chaos_proc_kill(const tg_chaos_proc *p, int64_t timeout_ms);

#endif
