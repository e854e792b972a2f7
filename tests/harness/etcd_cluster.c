/* Real etcd members as child processes, for integration tests.
 *
 * Why: every Tardigrade component that keeps state does so in etcd, and the
 * interesting bugs (watch resume, lease expiry, leader failover) only show
 * up against the real server. This file owns the processes: it picks free
 * loopback ports, builds each member's command line once, forks and execs
 * `etcd`, and answers questions about the members through a tiny HTTP
 * client on each member's plain-HTTP metrics port.
 *
 * Safety nets, because a failing test must not leave etcd running: members
 * are tests/harness/proc children (PR_SET_PDEATHSIG, killed at exit); every
 * live cluster is on a list that an atexit hook kills and removes; and
 * every wait (health, leader, exit, etcdctl) has a deadline. */
#include "tests/harness/etcd_cluster.h"
#include "common/clock/clock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log/log.h"
#include "tests/harness/proc.h"

#define MAX_ARGS 64
#define MAX_EXTRA_ARGS 32
#define START_ATTEMPTS 3
#define METRICS_MAX_BYTES ((size_t)2 << 20)
/* Room for the data area's path, leaving space for member file names. */
#define DIR_MAX (PATH_MAX - 64)


typedef struct {
  int client_port;
  int peer_port;
  int metrics_port;
  char name[16];
  char data_dir[PATH_MAX];
  char log_path[PATH_MAX];
  char endpoint[64];
  char url[80];
  tg_proc *proc; /* NULL when not running */
} member;

struct tg_etcd_cluster {
  int n;
  member m[TG_ETCD_CLUSTER_MAX_MEMBERS];
  char dir[DIR_MAX];
  char scheme[8];
  char client_host[48]; /* where clients reach the members */
  char etcd_path[PATH_MAX];
  char *extra[MAX_EXTRA_ARGS];
  int n_extra;
  char endpoints[TG_ETCD_CLUSTER_MAX_MEMBERS * 64];
  char urls[TG_ETCD_CLUSTER_MAX_MEMBERS * 80];
  char initial_cluster[TG_ETCD_CLUSTER_MAX_MEMBERS * 64];
  char token[64];
  int64_t start_timeout_ms;
  struct tg_etcd_cluster *next_live; /* the atexit list */
};

/* ------------------------------------------------------------ utilities */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}


static void sleep_ms(int64_t ms) {
  if (ms <= 0) return;
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Finds an executable `name` on $PATH; falls back to `fallback`. */
static int find_program(const char *name, const char *fallback, char *out, size_t outlen) {
  const char *env = getenv("TG_ETCD_BIN");
  if (env && strcmp(name, "etcd") == 0 && access(env, X_OK) == 0) {
    snprintf(out, outlen, "%s", env);
    return 0;
  }
  const char *path = getenv("PATH");
  if (path) {
    const char *p = path;
    while (*p) {
      const char *colon = strchr(p, ':');
      size_t len = colon ? (size_t)(colon - p) : strlen(p);
      if (len > 0 && len < PATH_MAX - 64) {
        char cand[PATH_MAX];
        snprintf(cand, sizeof cand, "%.*s/%s", (int)len, p, name);
        if (access(cand, X_OK) == 0) {
          snprintf(out, outlen, "%s", cand);
          return 0;
        }
      }
      if (!colon) break;
      p = colon + 1;
    }
  }
  if (access(fallback, X_OK) == 0) {
    snprintf(out, outlen, "%s", fallback);
    return 0;
  }
  return -1;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  remove(path);
  return 0;
}

static void remove_tree(const char *dir) {
  if (dir[0]) nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Picks `n` distinct free loopback ports by binding port 0 while holding
 * all sockets open. Another process may still grab one before etcd binds
 * it; start retries on that. */
static int pick_ports(int *ports, int n) {
  int fds[3 * TG_ETCD_CLUSTER_MAX_MEMBERS];
  int made = 0, rc = -1;
  for (; made < n; made++) {
    fds[made] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fds[made] < 0) goto out;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (bind(fds[made], (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fds[made], (struct sockaddr *)&a, &alen) != 0) {
      close(fds[made]);
      goto out;
    }
    ports[made] = ntohs(a.sin_port);
  }
  rc = 0;
out:
  for (int i = 0; i < made; i++) close(fds[i]);
  return rc;
}

/* A minimal HTTP/1.0 GET to 127.0.0.1:port. Fills body (NUL-terminated,
 * at most cap - 1 bytes) and returns the HTTP status, or -1. */
static int http_get(int port, const char *path, char *body, size_t cap, int64_t timeout_ms) {
  int64_t deadline = tg_clock_mono_ms() + timeout_ms;
  int status = -1;
  size_t len = 0;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    if (errno != EINPROGRESS) goto out;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int64_t left = deadline - tg_clock_mono_ms();
    if (left <= 0 || poll(&p, 1, (int)left) != 1) goto out;
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) goto out;
  }
  char req[256];
  int rl = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%d\r\n\r\n", path, port);
  if (send(fd, req, (size_t)rl, MSG_NOSIGNAL) != rl) goto out;
  for (;;) {
    if (len + 1 >= cap) break; /* bounded: keep what fits */
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int64_t left = deadline - tg_clock_mono_ms();
    if (left <= 0 || poll(&p, 1, (int)left) != 1) goto out;
    ssize_t r = recv(fd, body + len, cap - 1 - len, 0);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (r < 0) goto out;
    if (r == 0) break;
    len += (size_t)r;
  }
  body[len] = '\0';
  if (sscanf(body, "HTTP/%*d.%*d %d", &status) != 1) status = -1;
out:
  close(fd);
  return status;
}

/* ------------------------------------------------------- atexit cleanup */

static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static tg_etcd_cluster *live_head;
static pthread_once_t live_once = PTHREAD_ONCE_INIT;

static void kill_members(tg_etcd_cluster *c);

static void kill_all_at_exit(void) {
  pthread_mutex_lock(&live_mu);
  for (tg_etcd_cluster *c = live_head; c; c = c->next_live) {
    kill_members(c);
    remove_tree(c->dir);
  }
  live_head = NULL;
  pthread_mutex_unlock(&live_mu);
}

static void register_atexit(void) { atexit(kill_all_at_exit); }

static void live_add(tg_etcd_cluster *c) {
  pthread_once(&live_once, register_atexit);
  pthread_mutex_lock(&live_mu);
  c->next_live = live_head;
  live_head = c;
  pthread_mutex_unlock(&live_mu);
}

static void live_remove(tg_etcd_cluster *c) {
  pthread_mutex_lock(&live_mu);
  for (tg_etcd_cluster **p = &live_head; *p; p = &(*p)->next_live) {
    if (*p == c) {
      *p = c->next_live;
      break;
    }
  }
  pthread_mutex_unlock(&live_mu);
}

/* ------------------------------------------------------------ processes */

static void kill_member(member *mb) {
  tg_proc_free(mb->proc); /* SIGKILL and reap */
  mb->proc = NULL;
}

static void kill_members(tg_etcd_cluster *c) {
  for (int i = 0; i < c->n; i++) kill_member(&c->m[i]);
}

/* 1 if the member's process is still there; forgets it (and notes how it
 * ended in `why`) if it exited. */
static int member_alive(member *mb, char *why, size_t whylen) {
  if (!mb->proc) return 0;
  if (tg_proc_running(mb->proc)) return 1;
  if (why) tg_proc_describe_exit(mb->proc, why, whylen);
  kill_member(mb);
  return 0;
}

static int spawn_member(tg_etcd_cluster *c, int i, char *err, size_t errlen) {
  member *mb = &c->m[i];
  char client_url[80], peer_url[64], metrics_url[64];
  snprintf(client_url, sizeof client_url, "%s://%s:%d", c->scheme, c->client_host, mb->client_port);
  snprintf(peer_url, sizeof peer_url, "http://127.0.0.1:%d", mb->peer_port);
  snprintf(metrics_url, sizeof metrics_url, "http://127.0.0.1:%d", mb->metrics_port);
  const char *argv[MAX_ARGS];
  int n = 0;
  argv[n++] = c->etcd_path;
  argv[n++] = "--name";
  argv[n++] = mb->name;
  argv[n++] = "--data-dir";
  argv[n++] = mb->data_dir;
  argv[n++] = "--listen-client-urls";
  argv[n++] = client_url;
  argv[n++] = "--advertise-client-urls";
  argv[n++] = client_url;
  argv[n++] = "--listen-peer-urls";
  argv[n++] = peer_url;
  argv[n++] = "--initial-advertise-peer-urls";
  argv[n++] = peer_url;
  argv[n++] = "--initial-cluster";
  argv[n++] = c->initial_cluster;
  argv[n++] = "--initial-cluster-state";
  argv[n++] = "new";
  argv[n++] = "--initial-cluster-token";
  argv[n++] = c->token;
  argv[n++] = "--listen-metrics-urls";
  argv[n++] = metrics_url;
  argv[n++] = "--logger";
  argv[n++] = "zap";
  argv[n++] = "--log-outputs";
  argv[n++] = mb->log_path;
  for (int k = 0; k < c->n_extra && n < MAX_ARGS - 1; k++) argv[n++] = c->extra[k];
  argv[n] = NULL;

  mb->proc = tg_proc_start(argv, mb->log_path, err, errlen);
  return mb->proc ? 0 : -1;
}

static int member_healthy(const member *mb) {
  char body[512];
  int st = http_get(mb->metrics_port, "/health", body, sizeof body, 1000);
  return st == 200 && strstr(body, "\"health\":\"true\"") != NULL;
}

static int member_is_leader(const member *mb) {
  char *body = malloc(METRICS_MAX_BYTES);
  if (!body) return 0;
  int st = http_get(mb->metrics_port, "/metrics", body, METRICS_MAX_BYTES, 2000);
  int leader = st == 200 && strstr(body, "\netcd_server_is_leader 1") != NULL;
  free(body);
  return leader;
}

/* Waits until every member in `which` (bitmask) is healthy. */
static int wait_members_healthy(tg_etcd_cluster *c, unsigned which, int64_t timeout_ms, char *err,
                                size_t errlen, int *failed_member) {
  int64_t deadline = tg_clock_mono_ms() + timeout_ms;
  if (failed_member) *failed_member = -1;
  for (;;) {
    int all = 1;
    for (int i = 0; i < c->n; i++) {
      if (!(which & (1u << i))) continue;
      char why[64] = "is not running";
      if (!member_alive(&c->m[i], why, sizeof why)) {
        set_err(err, errlen, "etcd member %d (%s) %s", i, c->m[i].endpoint, why);
        if (failed_member) *failed_member = i;
        return -1;
      }
      if (!member_healthy(&c->m[i])) all = 0;
    }
    if (all) return 0;
    if (tg_clock_mono_ms() >= deadline) {
      set_err(err, errlen, "etcd cluster not healthy within %lld ms", (long long)timeout_ms);
      return -1;
    }
    sleep_ms(50);
  }
}

static int log_mentions(const char *path, const char *needle) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  char line[4096];
  int found = 0;
  while (!found && fgets(line, sizeof line, f)) found = strstr(line, needle) != NULL;
  fclose(f);
  return found;
}

/* ------------------------------------------------------------ lifecycle */

static void layout_members(tg_etcd_cluster *c, const int *ports) {
  size_t ep = 0, up = 0, ic = 0;
  c->endpoints[0] = c->urls[0] = c->initial_cluster[0] = '\0';
  for (int i = 0; i < c->n; i++) {
    member *mb = &c->m[i];
    mb->client_port = ports[3 * i];
    mb->peer_port = ports[3 * i + 1];
    mb->metrics_port = ports[3 * i + 2];
    snprintf(mb->endpoint, sizeof mb->endpoint, "%s:%d", c->client_host, mb->client_port);
    snprintf(mb->url, sizeof mb->url, "%s://%s:%d", c->scheme, c->client_host, mb->client_port);
    ep += (size_t)snprintf(c->endpoints + ep, sizeof c->endpoints - ep, "%s%s", i ? "," : "",
                           mb->endpoint);
    up += (size_t)snprintf(c->urls + up, sizeof c->urls - up, "%s%s", i ? "," : "", mb->url);
    ic += (size_t)snprintf(c->initial_cluster + ic, sizeof c->initial_cluster - ic,
                           "%s%s=http://127.0.0.1:%d", i ? "," : "", mb->name, mb->peer_port);
  }
}

/* One attempt at starting every member; on failure everything is killed,
 * the member dirs are wiped and *port_clash says whether to try again. */
static int start_attempt(tg_etcd_cluster *c, int attempt, char *err, size_t errlen,
                         int *port_clash) {
  int ports[3 * TG_ETCD_CLUSTER_MAX_MEMBERS];
  *port_clash = 0;
  if (pick_ports(ports, 3 * c->n) != 0) {
    set_err(err, errlen, "no free loopback ports: %s", strerror(errno));
    return -1;
  }
  snprintf(c->token, sizeof c->token, "tg-%d-%d-%lld", (int)getpid(), attempt,
           (long long)tg_clock_mono_ms());
  layout_members(c, ports);
  int failed = -1;
  for (int i = 0; i < c->n; i++) {
    if (spawn_member(c, i, err, errlen) != 0) goto fail;
  }
  if (wait_members_healthy(c, (1u << c->n) - 1, c->start_timeout_ms, err, errlen, &failed) == 0)
    return 0;
fail:
  kill_members(c);
  for (int i = 0; i < c->n; i++) {
    if (log_mentions(c->m[i].log_path, "address already in use")) *port_clash = 1;
  }
  if (!*port_clash) {
    for (int i = 0; i < c->n; i++) {
      if (failed < 0 || failed == i) tg_etcd_cluster_dump_log(c, i, 4096);
    }
  }
  for (int i = 0; i < c->n; i++) {
    remove_tree(c->m[i].data_dir);
    unlink(c->m[i].log_path);
  }
  return -1;
}

tg_etcd_cluster *tg_etcd_cluster_start(int members, char *err, size_t errlen) {
  tg_etcd_cluster_opts o = {.members = members};
  return tg_etcd_cluster_start_opts(&o, err, errlen);
}

tg_etcd_cluster *tg_etcd_cluster_start_opts(const tg_etcd_cluster_opts *opts, char *err,
                                            size_t errlen) {
  if (!opts || opts->members < 1 || opts->members > TG_ETCD_CLUSTER_MAX_MEMBERS) {
    set_err(err, errlen, "etcd cluster: members must be 1..%d", TG_ETCD_CLUSTER_MAX_MEMBERS);
    return NULL;
  }
  const char *scheme = opts->client_scheme ? opts->client_scheme : "http";
  if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
    set_err(err, errlen, "etcd cluster: scheme must be http or https, not %s", scheme);
    return NULL;
  }
  tg_etcd_cluster *c = calloc(1, sizeof *c);
  if (!c) {
    set_err(err, errlen, "out of memory");
    return NULL;
  }
  c->n = opts->members;
  snprintf(c->scheme, sizeof c->scheme, "%s", scheme);
  if (opts->client_host && strlen(opts->client_host) >= sizeof c->client_host) {
    set_err(err, errlen, "etcd cluster: client host %s is too long", opts->client_host);
    goto err;
  }
  snprintf(c->client_host, sizeof c->client_host, "%s", opts->client_host ? opts->client_host : "127.0.0.1");
  c->start_timeout_ms = opts->start_timeout_ms > 0 ? opts->start_timeout_ms : 15000;
  for (int k = 0; opts->extra_args && opts->extra_args[k]; k++) {
    if (c->n_extra == MAX_EXTRA_ARGS) {
      set_err(err, errlen, "etcd cluster: more than %d extra args", MAX_EXTRA_ARGS);
      goto err;
    }
    c->extra[c->n_extra] = strdup(opts->extra_args[k]);
    if (!c->extra[c->n_extra]) goto err;
    c->n_extra++;
  }
  if (find_program("etcd", "/usr/bin/etcd", c->etcd_path, sizeof c->etcd_path) != 0) {
    set_err(err, errlen, "etcd not found on PATH nor at /usr/bin/etcd");
    goto err;
  }
  const char *base = getenv("TEST_TMPDIR");
  if (!base || !*base) base = "/tmp";
  if (strlen(base) + 16 >= sizeof c->dir) {
    set_err(err, errlen, "etcd cluster: TEST_TMPDIR path too long");
    goto err;
  }
  snprintf(c->dir, sizeof c->dir, "%s/etcd-XXXXXX", base);
  if (!mkdtemp(c->dir)) {
    set_err(err, errlen, "mkdtemp %s: %s", c->dir, strerror(errno));
    c->dir[0] = '\0';
    goto err;
  }
  for (int i = 0; i < c->n; i++) {
    member *mb = &c->m[i];
    snprintf(mb->name, sizeof mb->name, "m%d", i);
    snprintf(mb->data_dir, sizeof mb->data_dir, "%s/m%d.data", c->dir, i);
    snprintf(mb->log_path, sizeof mb->log_path, "%s/m%d.log", c->dir, i);
  }
  live_add(c);
  for (int attempt = 0;; attempt++) {
    int clash = 0;
    if (start_attempt(c, attempt, err, errlen, &clash) == 0) break;
    if (!clash || attempt + 1 >= START_ATTEMPTS) goto err_live;
    TG_WARN("etcd cluster: port collision, retrying with new ports");
  }
  TG_INFO("etcd cluster of %d up at %s (data in %s)", c->n, c->endpoints, c->dir);
  return c;
err_live:
  live_remove(c);
err:
  kill_members(c);
  remove_tree(c->dir);
  for (int k = 0; k < c->n_extra; k++) free(c->extra[k]);
  free(c);
  return NULL;
}

void tg_etcd_cluster_free(tg_etcd_cluster *c) {
  if (!c) return;
  live_remove(c);
  kill_members(c);
  remove_tree(c->dir);
  for (int k = 0; k < c->n_extra; k++) free(c->extra[k]);
  free(c);
}

/* ------------------------------------------------------------- queries */

static int valid(const tg_etcd_cluster *c, int i) { return c && i >= 0 && i < c->n; }

int tg_etcd_cluster_size(const tg_etcd_cluster *c) { return c ? c->n : 0; }

const char *tg_etcd_cluster_endpoints(const tg_etcd_cluster *c) { return c ? c->endpoints : NULL; }

const char *tg_etcd_cluster_endpoint(const tg_etcd_cluster *c, int i) {
  return valid(c, i) ? c->m[i].endpoint : NULL;
}

const char *tg_etcd_cluster_url(const tg_etcd_cluster *c, int i) {
  return valid(c, i) ? c->m[i].url : NULL;
}

const char *tg_etcd_cluster_dir(const tg_etcd_cluster *c) { return c ? c->dir : NULL; }

const char *tg_etcd_cluster_log_path(const tg_etcd_cluster *c, int i) {
  return valid(c, i) ? c->m[i].log_path : NULL;
}

int tg_etcd_cluster_running(const tg_etcd_cluster *c, int i) {
  if (!valid(c, i)) return 0;
  return member_alive((member *)&c->m[i], NULL, 0);
}

int tg_etcd_cluster_kill(tg_etcd_cluster *c, int i) {
  if (!valid(c, i) || !c->m[i].proc) return -1;
  TG_INFO("etcd cluster: SIGKILL member %d (%s)", i, c->m[i].endpoint);
  kill_member(&c->m[i]);
  return 0;
}

int tg_etcd_cluster_stop(tg_etcd_cluster *c, int i, int64_t timeout_ms) {
  if (!valid(c, i) || !c->m[i].proc) return -1;
  member *mb = &c->m[i];
  TG_INFO("etcd cluster: SIGTERM member %d (%s)", i, mb->endpoint);
  tg_proc_stop(mb->proc, timeout_ms > 0 ? timeout_ms : 5000);
  kill_member(mb);
  return 0;
}

int tg_etcd_cluster_restart(tg_etcd_cluster *c, int i, int64_t timeout_ms, char *err,
                            size_t errlen) {
  if (!valid(c, i)) {
    set_err(err, errlen, "etcd cluster: no member %d", i);
    return -1;
  }
  if (member_alive(&c->m[i], NULL, 0)) {
    set_err(err, errlen, "etcd cluster: member %d is still running", i);
    return -1;
  }
  if (spawn_member(c, i, err, errlen) != 0) return -1;
  if (wait_members_healthy(c, 1u << i, timeout_ms > 0 ? timeout_ms : 15000, err, errlen, NULL) !=
      0) {
    tg_etcd_cluster_dump_log(c, i, 4096);
    return -1;
  }
  TG_INFO("etcd cluster: member %d (%s) restarted", i, c->m[i].endpoint);
  return 0;
}

int tg_etcd_cluster_wait_healthy(tg_etcd_cluster *c, int64_t timeout_ms, char *err,
                                 size_t errlen) {
  if (!c) return -1;
  unsigned which = 0;
  for (int i = 0; i < c->n; i++)
    if (member_alive(&c->m[i], NULL, 0)) which |= 1u << i;
  if (!which) {
    set_err(err, errlen, "etcd cluster: no member is running");
    return -1;
  }
  return wait_members_healthy(c, which, timeout_ms, err, errlen, NULL);
}

int tg_etcd_cluster_leader(tg_etcd_cluster *c, int64_t timeout_ms) {
  if (!c) return -1;
  int64_t deadline = tg_clock_mono_ms() + timeout_ms;
  for (;;) {
    for (int i = 0; i < c->n; i++) {
      if (member_alive(&c->m[i], NULL, 0) && member_is_leader(&c->m[i])) return i;
    }
    if (tg_clock_mono_ms() >= deadline) return -1;
    sleep_ms(50);
  }
}

void tg_etcd_cluster_dump_log(const tg_etcd_cluster *c, int i, size_t max_bytes) {
  if (valid(c, i)) tg_proc_dump_file(c->m[i].log_path, max_bytes);
}

int tg_etcd_cluster_ctl(tg_etcd_cluster *c, const char *const *args, char *out, size_t outlen,
                        int64_t timeout_ms) {
  if (!c || !args) return -1;
  char ctl_path[PATH_MAX];
  if (find_program("etcdctl", "/usr/bin/etcdctl", ctl_path, sizeof ctl_path) != 0) {
    set_err(out, outlen, "etcdctl not found");
    return -1;
  }
  char endpoints_arg[sizeof c->urls + 16];
  snprintf(endpoints_arg, sizeof endpoints_arg, "--endpoints=%s", c->urls);
  const char *argv[MAX_ARGS];
  int n = 0;
  argv[n++] = ctl_path;
  argv[n++] = endpoints_arg;
  for (int k = 0; args[k] && n < MAX_ARGS - 1; k++) argv[n++] = args[k];
  argv[n] = NULL;
  const char *env[] = {"ETCDCTL_API=3", NULL};
  int status = 0;
  int rc = tg_proc_run(argv, env, timeout_ms > 0 ? timeout_ms : 10000, out, outlen, &status);
  if (rc != 0) {
    TG_WARN("etcdctl %s did not finish: %s", args[0] ? args[0] : "", out ? out : "");
    return -1;
  }
  rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return rc;
}
