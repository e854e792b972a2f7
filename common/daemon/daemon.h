/* What every Tardigrade daemon does around its main loop, once: start
 * logging at a level given as text, get ready for signals (SIGINT/SIGTERM
 * end the wait, SIGPIPE is ignored, the descriptor limit is raised for
 * thousands of connections), and wait for the signal to stop. */
#ifndef TG_DAEMON_H
#define TG_DAEMON_H

/* Starts logging as `name` at `level` ("debug", "info", "warn", "error");
 * returns 0, or -1 after printing a one-line error to stderr. */
int tg_daemon_logging(const char *name, const char *level);

/* Installs the signal handlers and raises RLIMIT_NOFILE to its hard limit.
 * Call before starting threads. */
void tg_daemon_prepare(void);

/* Blocks until SIGINT or SIGTERM; returns the signal. */
int tg_daemon_wait(void);

#endif
