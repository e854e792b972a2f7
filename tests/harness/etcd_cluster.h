/* A real etcd cluster (1 or 3 members) for integration tests.
 *
 * Tardigrade's durable state lives in etcd, so its tests talk to the real
 * server rather than a mock: this harness starts `etcd` members as child
 * processes on free loopback ports, with their data and logs under
 * $TEST_TMPDIR (or a fresh directory under /tmp), and lets a test break them
 * on purpose: SIGKILL a member, stop it, restart it with the same data
 * directory and ports, find the leader, wait until the cluster is healthy.
 *
 * Members can never outlive the test: each is started with
 * PR_SET_PDEATHSIG(SIGKILL) and an atexit hook kills whatever is left.
 * Health and leadership are read over plain HTTP from a per-member metrics
 * port (/health and etcd_server_is_leader in /metrics), so they work the
 * same when the client port speaks TLS.
 *
 * Start, stop and restart the cluster from one long-lived thread (normally
 * the test's main thread): Linux delivers the parent-death signal when the
 * thread that forked exits. Every wait here has a deadline. */
#ifndef TG_TESTS_HARNESS_ETCD_CLUSTER_H
#define TG_TESTS_HARNESS_ETCD_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

typedef struct tg_etcd_cluster tg_etcd_cluster;

#define TG_ETCD_CLUSTER_MAX_MEMBERS 5

typedef struct {
  int members;                   /* 1 or 3 (up to TG_ETCD_CLUSTER_MAX_MEMBERS) */
  const char *client_scheme;     /* "http" (NULL) or "https" for the client URLs */
  const char *const *extra_args; /* NULL-terminated extra etcd flags, e.g. TLS files */
  int64_t start_timeout_ms;      /* until every member is healthy; 0: 15000 */
  const char *client_host;       /* an IPv4 address of this machine the client URLs listen on and
                                    advertise (e.g. a network-namespace bridge's, netns.h); NULL:
                                    127.0.0.1. Peer and metrics URLs stay on loopback. */
} tg_etcd_cluster_opts;

/* Starts a cluster of `members` plain-HTTP members and waits until it is
 * healthy. Returns NULL with a reason (and the tail of a failing member's
 * log on stderr) on failure. */
tg_etcd_cluster *tg_etcd_cluster_start(int members, char *err, size_t errlen);
tg_etcd_cluster *tg_etcd_cluster_start_opts(const tg_etcd_cluster_opts *opts, char *err,
                                            size_t errlen);

/* Kills every member (SIGKILL), reaps them and removes the data area. NULL is fine. */
void tg_etcd_cluster_free(tg_etcd_cluster *c);

int tg_etcd_cluster_size(const tg_etcd_cluster *c);

/* "127.0.0.1:A,127.0.0.1:B,..." (client ports, no scheme; client_host instead of
 * 127.0.0.1 where one was given). */
const char *tg_etcd_cluster_endpoints(const tg_etcd_cluster *c);
/* "127.0.0.1:A" for member i, or NULL if i is out of range. */
const char *tg_etcd_cluster_endpoint(const tg_etcd_cluster *c, int i);
/* "http://127.0.0.1:A" or "https://..." for member i (what etcdctl wants). */
const char *tg_etcd_cluster_url(const tg_etcd_cluster *c, int i);
/* The cluster's data area (member dirs and logs live below it); tests may
 * put their own files (certificates, ...) here. */
const char *tg_etcd_cluster_dir(const tg_etcd_cluster *c);
const char *tg_etcd_cluster_log_path(const tg_etcd_cluster *c, int i);

/* 1 if member i's process is running. */
int tg_etcd_cluster_running(const tg_etcd_cluster *c, int i);

/* SIGKILLs member i and reaps it. Returns 0, or -1 if i is bad or not running. */
int tg_etcd_cluster_kill(tg_etcd_cluster *c, int i);
/* SIGTERMs member i and waits for it to exit (SIGKILL after timeout_ms; 0: 5000). */
int tg_etcd_cluster_stop(tg_etcd_cluster *c, int i, int64_t timeout_ms);
/* Starts a stopped member again with its data directory and ports, and waits
 * (at most timeout_ms; 0: 15000) until its /health answers true. */
int tg_etcd_cluster_restart(tg_etcd_cluster *c, int i, int64_t timeout_ms, char *err,
                            size_t errlen);

/* Waits until every running member reports healthy (it has a leader).
 * Returns 0, or -1 with a reason after timeout_ms. */
int tg_etcd_cluster_wait_healthy(tg_etcd_cluster *c, int64_t timeout_ms, char *err,
                                 size_t errlen);

/* Index of the member that is leader now, waiting up to timeout_ms for one
 * to emerge among the running members; -1 if none did. */
int tg_etcd_cluster_leader(tg_etcd_cluster *c, int64_t timeout_ms);

/* Runs `etcdctl --endpoints=<all urls> ARGS...` (args NULL-terminated) with
 * ETCDCTL_API=3, waiting at most timeout_ms (0: 10000). Its combined output
 * goes to out (NUL-terminated, truncated to outlen) when out is not NULL.
 * Returns the exit status, or -1 if it could not run or timed out. */
int tg_etcd_cluster_ctl(tg_etcd_cluster *c, const char *const *args, char *out, size_t outlen,
                        int64_t timeout_ms);

/* Writes the last `max_bytes` of member i's log to stderr. */
void tg_etcd_cluster_dump_log(const tg_etcd_cluster *c, int i, size_t max_bytes);

#endif
