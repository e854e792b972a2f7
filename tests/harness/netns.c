/* Test clusters of network namespaces; see netns.h.
 *
 * Everything is done with the `ip` binary (and `nft` for drops) through
 * tg_proc_run, so what a test does can be replayed by hand. The links are
 * created from inside the switch namespace (`ip -n SW link add pI type
 * veth peer name eth0 netns HOST`), so no interface ever appears in the
 * machine's own namespace, even for a moment. Names are
 * "tgns-<pid>-<k>-sw" and "tgns-<pid>-<k>-h<i>"; the pid lets a later test
 * find and remove what a killed test left behind. A table of live
 * clusters lets the atexit handler remove them when a test fails. */
#include "tests/harness/netns.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NAME_MAX_LEN 48
#define CMD_TIMEOUT_MS 10000
#define MAX_LIVE 32
#define MAX_ARGS 64

struct tg_netns {
  int n_hosts;
  int subnet; /* X of 10.77.X.0/24 */
  int switch_made;
  int nft_ready; /* the drop table exists in the switch */
  int host_made[TG_NETNS_MAX_HOSTS];
  char switch_name[NAME_MAX_LEN];
  char host_name[TG_NETNS_MAX_HOSTS][NAME_MAX_LEN];
  char addr[TG_NETNS_MAX_HOSTS][20];
  char uplink_name[16]; /* the uplink's end in this process's namespace */
  char uplink_addr[20]; /* "" until tg_netns_uplink */
};

static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static tg_netns *live[MAX_LIVE];
static int next_cluster;
static pthread_once_t atexit_once = PTHREAD_ONCE_INIT;

static void free_live(void) {
  for (;;) {
    tg_netns *n = NULL;
    pthread_mutex_lock(&live_mu);
    for (int i = 0; i < MAX_LIVE && !n; i++) n = live[i];
    pthread_mutex_unlock(&live_mu);
    if (!n) return;
    tg_netns_free(n); /* takes it out of the table */
  }
}

static void register_atexit(void) { atexit(free_live); }

static int track(tg_netns *n, int add) {
  int rc = -1;
  pthread_mutex_lock(&live_mu);
  for (int i = 0; i < MAX_LIVE && rc != 0; i++) {
    if (add && live[i] == NULL) {
      live[i] = n;
      rc = 0;
    } else if (!add && live[i] == n) {
      live[i] = NULL;
      rc = 0;
    }
  }
  pthread_mutex_unlock(&live_mu);
  return rc;
}

/* Finds a tool by absolute path (a Bazel test's PATH often lacks
 * /usr/sbin); 0, or -1 if it is not installed. */
static int find_tool(const char *name, char *path, size_t len) {
  static const char *const dirs[] = {"/usr/sbin", "/sbin", "/usr/bin", "/bin"};
  for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
    snprintf(path, len, "%s/%s", dirs[i], name);
    if (access(path, X_OK) == 0) return 0;
  }
  return -1;
}

/* Runs argv (inside namespace ns when not NULL); 0 if it exited with
 * status 0, else -1 with the command and its output in err. */
static int run(const char *ns, const char *const *argv, char *err, size_t errlen) {
  char out[1024];
  int status = 0;
  int rc = ns ? tg_proc_run_in_netns(ns, argv, CMD_TIMEOUT_MS, out, sizeof out, &status)
              : tg_proc_run(argv, NULL, CMD_TIMEOUT_MS, out, sizeof out, &status);
  if (rc == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
  if (err && errlen) {
    size_t len = 0;
    err[0] = '\0';
    for (int i = 0; argv[i] && len < errlen; i++)
      len += (size_t)snprintf(err + len, errlen - len, "%s%s", i ? " " : "", argv[i]);
    out[strcspn(out, "\n")] = '\0';
    if (len < errlen) snprintf(err + len, errlen - len, ": %s", out[0] ? out : "failed or timed out");
  }
  return -1;
}

/* `ip args...`, inside namespace ns when not NULL (args NULL-terminated,
 * at most MAX_ARGS - 2). The namespace is joined with setns, not `ip -n`,
 * which needs a private mount namespace (and fails in a chroot). */
static int ip_in(const char *ns, char *err, size_t errlen, const char *const *args) {
  char ipbin[64];
  if (find_tool("ip", ipbin, sizeof ipbin) != 0) {
    snprintf(err, errlen, "no ip binary in /usr/sbin, /sbin, /usr/bin or /bin");
    return -1;
  }
  const char *argv[MAX_ARGS];
  int k = 0;
  argv[k++] = ipbin;
  for (int i = 0; args[i] && k < MAX_ARGS - 1; i++) argv[k++] = args[i];
  argv[k] = NULL;
  return run(ns, argv, err, errlen);
}

#define IP(ns, err, errlen, ...) ip_in((ns), (err), (errlen), (const char *const[]){__VA_ARGS__, NULL})

/* Removes namespaces named by this module for a process that is gone. */
static void remove_stale(void) {
  char ipbin[64], out[8192], *save = NULL;
  if (find_tool("ip", ipbin, sizeof ipbin) != 0) return;
  int status;
  const char *argv[] = {ipbin, "netns", "list", NULL};
  if (tg_proc_run(argv, NULL, CMD_TIMEOUT_MS, out, sizeof out, &status) != 0) return;
  for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    char name[NAME_MAX_LEN];
    int pid = 0;
    if (sscanf(line, "%47s", name) != 1 || sscanf(name, "tgns-%d-", &pid) != 1 || pid <= 0) continue;
    if (kill(pid, 0) == 0 || errno != ESRCH) continue;
    IP(NULL, NULL, 0, "netns", "delete", name);
  }
}

int tg_netns_available(char *why, size_t whylen) {
  if (geteuid() != 0) {
    snprintf(why, whylen, "needs root to create network namespaces (running as uid %d)", (int)geteuid());
    return 0;
  }
  char ipbin[64];
  if (find_tool("ip", ipbin, sizeof ipbin) != 0) {
    snprintf(why, whylen, "no ip binary (Debian package iproute2)");
    return 0;
  }
  char name[NAME_MAX_LEN], err[512];
  pthread_mutex_lock(&live_mu);
  int k = next_cluster++;
  pthread_mutex_unlock(&live_mu);
  snprintf(name, sizeof name, "tgns-%d-%d-check", (int)getpid(), k);
  if (IP(NULL, err, sizeof err, "netns", "add", name) != 0) {
    snprintf(why, whylen,
             "cannot create a network namespace (in a Bazel sandbox? tag the test "
             "\"no-sandbox\"): %s",
             err);
    return 0;
  }
  if (IP(NULL, err, sizeof err, "netns", "delete", name) != 0) {
    snprintf(why, whylen, "cannot remove a network namespace: %s", err);
    return 0;
  }
  return 1;
}

int tg_netns_required(void) {
  const char *v = getenv("TG_REQUIRE_NETNS");
  return v && strcmp(v, "1") == 0;
}

static int add_host(tg_netns *n, int i, char *err, size_t errlen) {
  char port[16], cidr[32];
  snprintf(port, sizeof port, "p%d", i);
  snprintf(cidr, sizeof cidr, "%s/24", n->addr[i]);
  const char *h = n->host_name[i];
  if (IP(NULL, err, errlen, "netns", "add", h) != 0) return -1;
  n->host_made[i] = 1;
  if (IP(n->switch_name, err, errlen, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns",
         h) != 0 ||
      IP(n->switch_name, err, errlen, "link", "set", port, "master", "br0", "up") != 0 ||
      IP(h, err, errlen, "link", "set", "lo", "up") != 0 ||
      IP(h, err, errlen, "addr", "add", cidr, "dev", "eth0") != 0 ||
      IP(h, err, errlen, "link", "set", "eth0", "up") != 0)
    return -1;
  return 0;
}

tg_netns *tg_netns_new(int n_hosts, char *err, size_t errlen) {
  if (n_hosts < 1 || n_hosts > TG_NETNS_MAX_HOSTS) {
    snprintf(err, errlen, "hosts must be 1..%d, not %d", TG_NETNS_MAX_HOSTS, n_hosts);
    return NULL;
  }
  pthread_once(&atexit_once, register_atexit);
  remove_stale();
  tg_netns *n = calloc(1, sizeof *n);
  if (!n) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  if (track(n, 1) != 0) {
    snprintf(err, errlen, "more than %d clusters at once", MAX_LIVE);
    free(n);
    return NULL;
  }
  pthread_mutex_lock(&live_mu);
  int k = next_cluster++;
  pthread_mutex_unlock(&live_mu);
  int pid = (int)getpid();
  n->n_hosts = n_hosts;
  n->subnet = (pid + k) % 254 + 1;
  snprintf(n->switch_name, sizeof n->switch_name, "tgns-%d-%d-sw", pid, k);
  snprintf(n->uplink_name, sizeof n->uplink_name, "tgup-%d-%d", pid, k % 100); /* IFNAMSIZ: 15 */
  for (int i = 0; i < n_hosts; i++) {
    snprintf(n->host_name[i], sizeof n->host_name[i], "tgns-%d-%d-h%d", pid, k, i);
    snprintf(n->addr[i], sizeof n->addr[i], "10.77.%d.%d", n->subnet, i + 1);
  }
  if (IP(NULL, err, errlen, "netns", "add", n->switch_name) != 0) goto fail;
  n->switch_made = 1;
  if (IP(n->switch_name, err, errlen, "link", "add", "br0", "type", "bridge") != 0 ||
      IP(n->switch_name, err, errlen, "link", "set", "br0", "up") != 0)
    goto fail;
  for (int i = 0; i < n_hosts; i++)
    if (add_host(n, i, err, errlen) != 0) goto fail;
  return n;
fail:
  tg_netns_free(n);
  return NULL;
}

void tg_netns_free(tg_netns *n) {
  if (!n) return;
  track(n, 0);
  /* Removing a namespace takes its end of each veth with it, and a veth
   * pair dies with either end; the bridge and the nft table go with the
   * switch. */
  for (int i = 0; i < n->n_hosts; i++)
    if (n->host_made[i]) IP(NULL, NULL, 0, "netns", "delete", n->host_name[i]);
  if (n->switch_made) IP(NULL, NULL, 0, "netns", "delete", n->switch_name);
  /* The uplink's end here dies with its peer in the switch; should the
   * kernel still be tearing the pair down, delete it by name. */
  if (n->uplink_addr[0]) IP(NULL, NULL, 0, "link", "delete", n->uplink_name);
  free(n);
}

int tg_netns_size(const tg_netns *n) { return n->n_hosts; }

const char *tg_netns_uplink(tg_netns *n, char *err, size_t errlen) {
  if (n->uplink_addr[0]) return n->uplink_addr;
  char pid[16], cidr[32], addr[20];
  snprintf(pid, sizeof pid, "%d", (int)getpid());
  snprintf(addr, sizeof addr, "10.77.%d.254", n->subnet);
  snprintf(cidr, sizeof cidr, "%s/24", addr);
  /* Made from inside the switch, as the hosts' links are: "netns PID"
   * puts the far end in this process's namespace. */
  if (IP(n->switch_name, err, errlen, "link", "add", "up0", "type", "veth", "peer", "name", n->uplink_name,
         "netns", pid) != 0 ||
      IP(n->switch_name, err, errlen, "link", "set", "up0", "master", "br0", "up") != 0 ||
      IP(NULL, err, errlen, "addr", "add", cidr, "dev", n->uplink_name) != 0 ||
      IP(NULL, err, errlen, "link", "set", n->uplink_name, "up") != 0)
    return NULL;
  snprintf(n->uplink_addr, sizeof n->uplink_addr, "%s", addr);
  return n->uplink_addr;
}

static int valid_host(const tg_netns *n, int host) { return n && host >= 0 && host < n->n_hosts; }

const char *tg_netns_name(const tg_netns *n, int host) {
  return valid_host(n, host) ? n->host_name[host] : NULL;
}

const char *tg_netns_addr(const tg_netns *n, int host) { return valid_host(n, host) ? n->addr[host] : NULL; }

tg_proc *tg_netns_start(tg_netns *n, int host, const char *const *argv, const char *log_path, char *err,
                        size_t errlen) {
  if (!valid_host(n, host)) {
    snprintf(err, errlen, "no host %d", host);
    return NULL;
  }
  return tg_proc_start_in_netns(n->host_name[host], argv, log_path, err, errlen);
}


int tg_netns_exec(tg_netns *n, int host, const char *const *argv, int64_t timeout_ms, char *out,
                  size_t outlen, int *status) {
  if (!valid_host(n, host)) return -1;
  return tg_proc_run_in_netns(n->host_name[host], argv, timeout_ms, out, outlen, status);
}

static int set_link(tg_netns *n, int host, const char *state, char *err, size_t errlen) {
  if (!valid_host(n, host)) {
    snprintf(err, errlen, "no host %d", host);
    return -1;
  }
  char port[16];
  snprintf(port, sizeof port, "p%d", host);
  if (IP(n->switch_name, err, errlen, "link", "set", port, state) != 0 ||
      IP(n->host_name[host], err, errlen, "link", "set", "eth0", state) != 0)
    return -1;
  return 0;
}

int tg_netns_cut(tg_netns *n, int host, char *err, size_t errlen) {
  return set_link(n, host, "down", err, errlen);
}

int tg_netns_heal(tg_netns *n, int host, char *err, size_t errlen) {
  return set_link(n, host, "up", err, errlen);
}

/* Runs one nft command (a single argument of nft syntax) in the switch. */
static int nft(tg_netns *n, const char *command, char *err, size_t errlen) {
  char nftbin[64];
  if (find_tool("nft", nftbin, sizeof nftbin) != 0) {
    snprintf(err, errlen, "no nft binary (Debian package nftables)");
    return -1;
  }
  const char *argv[] = {nftbin, command, NULL};
  char out[1024];
  int status = 0;
  if (tg_proc_run_in_netns(n->switch_name, argv, CMD_TIMEOUT_MS, out, sizeof out, &status) == 0 && WIFEXITED(status) &&
      WEXITSTATUS(status) == 0)
    return 0;
  out[strcspn(out, "\n")] = '\0';
  snprintf(err, errlen, "nft '%s' in %s: %s", command, n->switch_name, out[0] ? out : "failed");
  return -1;
}

/* A set of (source, destination) pairs that the bridge drops. */
static int nft_prepare(tg_netns *n, char *err, size_t errlen) {
  if (n->nft_ready) return 0;
  if (nft(n, "add table bridge tg", err, errlen) != 0 ||
      nft(n, "add set bridge tg blocked { type ipv4_addr . ipv4_addr; }", err, errlen) != 0 ||
      nft(n, "add chain bridge tg forward { type filter hook forward priority 0; policy accept; }", err,
          errlen) != 0 ||
      nft(n, "add rule bridge tg forward ip saddr . ip daddr @blocked drop", err, errlen) != 0)
    return -1;
  n->nft_ready = 1;
  return 0;
}

static int set_block(tg_netns *n, int a, int b, const char *verb, char *err, size_t errlen) {
  if (!valid_host(n, a) || !valid_host(n, b) || a == b) {
    snprintf(err, errlen, "hosts %d and %d: need two distinct hosts", a, b);
    return -1;
  }
  if (nft_prepare(n, err, errlen) != 0) return -1;
  char command[160];
  snprintf(command, sizeof command, "%s element bridge tg blocked { %s . %s, %s . %s }", verb, n->addr[a],
           n->addr[b], n->addr[b], n->addr[a]);
  return nft(n, command, err, errlen);
}

int tg_netns_block(tg_netns *n, int a, int b, char *err, size_t errlen) {
  return set_block(n, a, b, "add", err, errlen);
}

int tg_netns_unblock(tg_netns *n, int a, int b, char *err, size_t errlen) {
  return set_block(n, a, b, "delete", err, errlen);
}
