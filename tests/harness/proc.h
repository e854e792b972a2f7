/* Child processes for integration tests: start a real binary (etcd,
 * tg-coordinator, tg-agent, a trainer), send it signals, stop it, and make
 * sure it never outlives the test.
 *
 * Every child is started with PR_SET_PDEATHSIG(SIGKILL), so it dies when
 * the test process dies, however that happens, and is also killed by an
 * atexit handler. Its stdout and stderr go to a log file the test can
 * print when something fails. */
#ifndef TG_TEST_PROC_H
#define TG_TEST_PROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct tg_proc tg_proc;

/* Starts argv[0] (a path, or a name looked up in PATH) with argv (NULL-
 * terminated), output appended to log_path. NULL with a reason on failure. */
tg_proc *tg_proc_start(const char *const *argv, const char *log_path, char *err, size_t errlen);

/* The same, but the child joins network namespace `netns` before exec: a
 * name made by `ip netns add` (looked up under /var/run/netns) or a path to
 * a namespace file. Needs CAP_SYS_ADMIN (root). See tests/harness/netns.h. */
tg_proc *tg_proc_start_in_netns(const char *netns, const char *const *argv, const char *log_path,
                                char *err, size_t errlen);

pid_t tg_proc_pid(const tg_proc *p);
const char *tg_proc_log_path(const tg_proc *p);

/* 1 while the process has not exited (reaps it once it has). */
int tg_proc_running(tg_proc *p);

/* How it ended: "exited with status N", "killed by signal N", or "is
 * running". Returns buf. */
const char *tg_proc_describe_exit(tg_proc *p, char *buf, size_t len);

/* Sends a signal (SIGKILL, SIGSTOP, SIGCONT, ...); 0 or -1. */
int tg_proc_signal(tg_proc *p, int sig);

/* Waits up to timeout_ms for it to exit; 0 with its wait status, or -1. */
int tg_proc_wait(tg_proc *p, int64_t timeout_ms, int *status);

/* SIGTERM, wait up to timeout_ms, then SIGKILL; always reaps. */
void tg_proc_stop(tg_proc *p, int64_t timeout_ms);

/* Kills (SIGKILL) if still running, reaps and frees. */
void tg_proc_free(tg_proc *p);

/* Writes the last max_bytes of the log to stderr, framed by its path. */
void tg_proc_dump_log(const tg_proc *p, size_t max_bytes);
/* The same for any file. */
void tg_proc_dump_file(const char *path, size_t max_bytes);

/* Runs a command to completion: argv as for tg_proc_start, env_extra a
 * NULL-terminated list of "NAME=value" added to the environment (NULL:
 * none; a name given replaces the inherited one). Its stdout and stderr
 * are captured into out (NUL-terminated, truncated to outlen - 1).
 * Returns 0 with the wait status in *status, or -1 if it could not start
 * or ran past timeout_ms (then it is killed). */
int tg_proc_run(const char *const *argv, const char *const *env_extra, int64_t timeout_ms, char *out,
                size_t outlen, int *status);

/* tg_proc_run inside a network namespace (a name under /var/run/netns, or
 * a path), joined with setns() in the child: unlike `ip netns exec` it
 * needs no mount namespace, so it also works in a chroot. */
int tg_proc_run_in_netns(const char *netns, const char *const *argv, int64_t timeout_ms, char *out,
                         size_t outlen, int *status);

/* The pid of a child of `parent` whose environment holds `entry` exactly
 * ("TG_SLOT=1": the trainer an agent started in slot 1), or 0 if none. */
pid_t tg_proc_child_with_env(pid_t parent, const char *entry);

/* A TCP port on 127.0.0.1 that was free a moment ago; -1 on error. */
int tg_proc_free_port(void);

/* A fresh directory under $TEST_TMPDIR (or /tmp): "<tmp>/<prefix>-XXXXXX". */
int tg_proc_temp_dir(const char *prefix, char *out, size_t outlen);

#endif
