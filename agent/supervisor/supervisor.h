/* Supervision of the local trainer processes, one per slot.
 *
 * The node agent hands this module a command and a slot count; it starts
 * one trainer per slot, notices the moment one exits (a pidfd per child,
 * polled by the supervisor's own thread; only its own children are ever
 * waited for), restarts a crashed slot after a short backoff so it can
 * re-join the job at the next generation, and gives up on a slot that
 * keeps crashing (more than max_restarts within restart_window_ms): that
 * slot is left down and reported, which is the agent's cue to report a
 * fault instead of looping. On drain or shutdown it stops everything:
 * SIGTERM to each trainer's process group, up to a grace period, then
 * SIGKILL, and every process is reaped.
 *
 * Children never outlive the agent: each runs in its own process group and
 * with PR_SET_PDEATHSIG(SIGKILL), armed from the supervisor's thread
 * (which forks every child and lives until tg_supervisor_free, since the
 * death signal follows the forking thread). A child starts with the
 * environment the process had at tg_supervisor_new, plus the configured
 * entries, plus TG_SLOT=<slot>; stdin on /dev/null, stdout and stderr
 * appended to <log_dir>/slot-<N>.log; default signal dispositions, an empty
 * signal mask and no inherited file descriptors beyond 0, 1 and 2. When a trainer exits, whatever is left of
 * its process group (data loader workers, helpers) is killed with it.
 *
 * Callbacks run on the supervisor's thread, one at a time, with no lock
 * held: they may call tg_supervisor_slot_state and tg_supervisor_signal,
 * but not tg_supervisor_start, _stop or _free (those return an error, or
 * would wait for themselves). Keep them short: while one runs, no other
 * exit is reported. Every other function is thread-safe. */
#ifndef TG_SUPERVISOR_H
#define TG_SUPERVISOR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TG_SUPERVISOR_MAX_SLOTS 256
#define TG_SUPERVISOR_MAX_RESTARTS 64 /* max_restarts upper bound */

typedef struct tg_supervisor tg_supervisor;

/* A slot's process started (first start or a restart). */
typedef void (*tg_supervisor_start_fn)(int slot, pid_t pid, void *user);

/* A slot's process exited: exit_code (0..255) or -1 if a signal ended it,
 * signal (0 if it exited). A process that could not exec the command exits
 * with 127 and gets on_exit without on_start; a restart that could not even
 * fork is reported with pid 0, exit_code -1 and signal 0. will_restart is 1 when a restart is scheduled, 0
 * when the slot stays down: stopping, or its restart budget is spent (then
 * tg_supervisor_slot_state reports gave_up). */
/* A process that exits with code 0 has finished its work and is not
 * restarted; any other end (a code, a signal) is restarted within the budget. */
typedef void (*tg_supervisor_exit_fn)(int slot, pid_t pid, int exit_code, int signal,
                                      int will_restart, void *user);

typedef struct {
  const char *const *argv;    /* the trainer command, NULL-terminated. argv[0]: a path
                               * (relative to the caller's directory at tg_supervisor_new) or
                               * a name found in PATH */
  int slots;                  /* 1..TG_SUPERVISOR_MAX_SLOTS */
  const char *const *env;     /* extra "NAME=value" for every slot, NULL-terminated, or NULL;
                               * they replace inherited ones of the same name */
  const char *work_dir;       /* children start here; NULL: the caller's directory */
  const char *log_dir;        /* slot N appends to <log_dir>/slot-N.log; NULL: children
                               * share the supervisor's stdout and stderr */
  int max_restarts;           /* per slot within restart_window_ms; 0..64 (0: never) */
  int64_t restart_window_ms;  /* >= 1 */
  int64_t restart_backoff_ms; /* delay before a restart; 0..60000 */
  tg_supervisor_start_fn on_start; /* may be NULL */
  tg_supervisor_exit_fn on_exit;   /* may be NULL */
  void *user;                      /* passed to the callbacks */
} tg_supervisor_config;

typedef struct {
  pid_t pid;             /* the current process; 0 when the slot has none */
  int running;           /* a process is alive (or exited and not yet seen) */
  int restart_pending;   /* exited; a restart is due after the backoff */
  int gave_up;           /* the restart budget is spent; the slot stays down */
  int restarts;          /* restarts within the current window (the budget used) */
  int restarts_total;    /* restarts since tg_supervisor_start */
  int starts;            /* processes started since tg_supervisor_start */
  int last_exit_code;    /* of the last exit: 0..255, or -1 (signal, or no exit yet) */
  int last_signal;       /* of the last exit: the signal, or 0 */
} tg_supervisor_slot;

/* Checks and copies cfg (nothing is started yet) and starts the
 * supervisor's thread. NULL with a reason in err on a bad config (unknown
 * command, bad numbers) or a system failure. */
tg_supervisor *tg_supervisor_new(const tg_supervisor_config *cfg, char *err, size_t errlen);

/* Starts every slot and waits (bounded) until each one has exec'd. 0, or -1
 * with a reason (cannot open a log, chdir or exec failed): then nothing is
 * left running. Also -1 while slots are already started. After a stop it
 * starts afresh, with full restart budgets. */
int tg_supervisor_start(tg_supervisor *s, char *err, size_t errlen);

/* Stops every slot: no more restarts, SIGCONT + SIGTERM to each process
 * group, up to grace_ms for them to exit, then SIGKILL to the groups that
 * remain; reaps all. Returns 0 once every process is reaped, -1 if one
 * could not be (it is still reaped later, in the background) or when called
 * from a callback. Idempotent. */
int tg_supervisor_stop(tg_supervisor *s, int64_t grace_ms);

/* A copy of one slot's state; 0, or -1 for a slot out of range. */
int tg_supervisor_slot_state(tg_supervisor *s, int slot, tg_supervisor_slot *out);

/* Sends sig to the slot's process group (the trainer and what it started):
 * SIGSTOP/SIGCONT to freeze it, SIGKILL to crash it. 0, or -1 when the slot
 * is out of range or has no live process. A stop is not an exit. */
int tg_supervisor_signal(tg_supervisor *s, int slot, int sig);

/* Stops (grace 5 s), ends the thread and frees. NULL is fine. */
void tg_supervisor_free(tg_supervisor *s);

#endif
