/* A small cluster of "hosts" on one machine, for tests that need a real
 * network between processes: partitions, slow or lost links, addresses
 * that are not 127.0.0.1.
 *
 * Each host is a Linux network namespace with loopback up and one veth
 * link "eth0" whose other end is a port of a bridge. The bridge lives in a
 * namespace of its own (the "switch"), so the machine's own network is
 * never touched (but for an uplink a test asks for, tg_netns_uplink) and two tests running at once never see each other: every
 * name carries the test's pid and a counter, and the hosts share a private
 * 10.77.X.0/24 (X from the pid), host i being 10.77.X.(i+1).
 *
 * Tests start processes on a host (tg_netns_start, a tg_proc from
 * tests/harness/proc.h that dies with the test), run short commands there
 * (tg_netns_exec), cut a host off the switch and heal it (both ends of its
 * link go down or up), and where nft exists drop the traffic between two
 * hosts only. tg_netns_free removes everything; so does an atexit handler
 * for clusters a failing test left behind, and tg_netns_new removes what
 * a test killed by a signal left (names whose pid is no longer running).
 *
 * Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and the `ip` binary; a test
 * calls tg_netns_available first and skips when it says no. Bazel tests
 * using this must run outside the sandbox: tags = ["no-sandbox",
 * "exclusive"]. */
#ifndef TG_TEST_NETNS_H
#define TG_TEST_NETNS_H

#include <stddef.h>
#include <stdint.h>

#include "tests/harness/proc.h"

/* Hosts in one cluster. */
#define TG_NETNS_MAX_HOSTS 16

typedef struct tg_netns tg_netns;

/* 1 if this machine can build clusters (root, `ip`, a namespace can be
 * created and removed); else 0 with the reason in why. */
int tg_netns_available(char *why, size_t whylen);

/* 1 when TG_REQUIRE_NETNS=1 is in the environment: a machine that must
 * run the multi-host tests (CI as root; `bazel test
 * --test_env=TG_REQUIRE_NETNS=1`), where a test fails instead of skipping
 * when tg_netns_available says no. */
int tg_netns_required(void);

/* Creates n_hosts hosts (1..TG_NETNS_MAX_HOSTS) joined by one switch, all
 * links up. NULL with a reason on failure (nothing is left behind). */
tg_netns *tg_netns_new(int n_hosts, char *err, size_t errlen);

/* Stops nothing (tg_procs are the caller's), removes the namespaces, the
 * bridge and the links. Processes still running in a host lose their
 * network when the namespace goes. NULL is fine. */
void tg_netns_free(tg_netns *n);

int tg_netns_size(const tg_netns *n);

/* Host i's namespace name (for `ip netns exec`) and IPv4 address
 * ("10.77.X.Y"); NULL for an i out of range. */
const char *tg_netns_name(const tg_netns *n, int host);
const char *tg_netns_addr(const tg_netns *n, int host);

/* Joins the namespace this process runs in (normally the machine's own)
 * to the switch as one more port: a veth named "tgup-<pid>-<k>" with
 * address 10.77.X.254/24, so processes started here without
 * tg_netns_start (an etcd, coordinators, the test itself) reach every
 * host and every host reaches them at that address. The only change to
 * this namespace; the link dies with the switch (tg_netns_free, or a
 * later tg_netns_new removing a killed test's namespaces). Cutting a host
 * cuts it off from this address too. Returns the address (idempotent),
 * or NULL with a reason. */
const char *tg_netns_uplink(tg_netns *n, char *err, size_t errlen);

/* tg_proc_start inside host i. */
tg_proc *tg_netns_start(tg_netns *n, int host, const char *const *argv, const char *log_path,
                        char *err, size_t errlen);

/* tg_proc_run inside host i (through `ip netns exec`). */
int tg_netns_exec(tg_netns *n, int host, const char *const *argv, int64_t timeout_ms, char *out,
                  size_t outlen, int *status);

/* Takes both ends of host i's link down (its packets go nowhere, nobody
 * reaches it), or up again. 0, or -1 with a reason. */
int tg_netns_cut(tg_netns *n, int host, char *err, size_t errlen);
int tg_netns_heal(tg_netns *n, int host, char *err, size_t errlen);

/* Drops every packet between hosts a and b, both ways, in the switch (an
 * nft rule; the links stay up and other hosts are unaffected), or removes
 * that drop. -1 with a reason where nft is missing or fails. */
int tg_netns_block(tg_netns *n, int a, int b, char *err, size_t errlen);
int tg_netns_unblock(tg_netns *n, int a, int b, char *err, size_t errlen);

#endif
