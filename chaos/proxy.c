/* The slow-link proxy; see proxy.h. Each connection is a pair of
 * non-blocking sockets (the accepted client, the target) and two flows,
 * one per direction: a FIFO of chunks as they were read, each stamped
 * with the monotonic time it may leave. The thread polls what can move
 * now and sleeps until the next chunk is due (at most TICK_MS, so a stop
 * request is seen soon). A side that reaches EOF is passed on as a
 * half-close once everything it sent has left. */
#include "chaos/proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock/clock.h"

#define READ_BYTES 16384
#define TICK_MS 20
#define MAX_POLL (TG_CHAOS_PROXY_MAX_ROUTES * (1 + 2 * TG_CHAOS_PROXY_MAX_CONNS))

typedef struct chunk {
  struct chunk *next;
  int64_t due_mono_ms;
  size_t len, off;
  char data[];
} chunk;

/* Bytes read from one side, waiting to be written to the other. */
typedef struct {
  chunk *head, *tail;
  size_t bytes;
  int eof;  /* the side that sends them closed its end */
  int shut; /* and that was passed on (shutdown of the other side) */
} flow;

typedef struct {
  int fd[2]; /* 0: the accepted client, 1: the target; fd[0] < 0: slot unused */
  int connecting;
  flow flow[2]; /* flow[s]: read from fd[s], written to fd[1 - s] */
  int poll_at[2]; /* index in this round's pollfd array, or -1 */
} conn;

typedef struct {
  int listen_fd;
  int poll_at;
  struct sockaddr_in target;
  _Atomic int64_t delay_ms;
  conn conns[TG_CHAOS_PROXY_MAX_CONNS];
} route;

struct tg_chaos_proxy {
  route routes[TG_CHAOS_PROXY_MAX_ROUTES];
  int n_routes;
  pthread_t thread;
  int started;
  atomic_int stop;
};

tg_chaos_proxy *tg_chaos_proxy_new(char *err, size_t errlen) {
  tg_chaos_proxy *p = calloc(1, sizeof *p);
  if (!p) snprintf(err, errlen, "out of memory");
  return p;
}

static int ipv4(const char *host, int port, struct sockaddr_in *a) {
  memset(a, 0, sizeof *a);
  a->sin_family = AF_INET;
  a->sin_port = htons((uint16_t)port);
  return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

int tg_chaos_proxy_add(tg_chaos_proxy *p, const char *listen_host, const char *target_host, int target_port,
                       int *port, char *err, size_t errlen) {
  if (p->started || p->n_routes == TG_CHAOS_PROXY_MAX_ROUTES) {
    snprintf(err, errlen, "proxy: %s", p->started ? "already started" : "too many routes");
    return -1;
  }
  route *r = &p->routes[p->n_routes];
  struct sockaddr_in a;
  if (ipv4(listen_host, 0, &a) != 0 || ipv4(target_host, target_port, &r->target) != 0 || target_port <= 0 ||
      target_port > 65535) {
    snprintf(err, errlen, "proxy: %s -> %s:%d: not IPv4 addresses", listen_host, target_host, target_port);
    return -1;
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
  socklen_t len = sizeof a;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
    snprintf(err, errlen, "proxy: listen on %s: %s", listen_host, strerror(errno));
    if (fd >= 0) close(fd);
    return -1;
  }
  r->listen_fd = fd;
  for (int c = 0; c < TG_CHAOS_PROXY_MAX_CONNS; c++) r->conns[c].fd[0] = r->conns[c].fd[1] = -1;
  atomic_store(&r->delay_ms, 0);
  *port = ntohs(a.sin_port);
  return p->n_routes++;
}

void tg_chaos_proxy_set_delay(tg_chaos_proxy *p, int route_index, int64_t delay_ms) {
  if (!p || route_index < 0 || route_index >= p->n_routes) return;
  if (delay_ms < 0) delay_ms = 0;
  if (delay_ms > TG_CHAOS_PROXY_MAX_DELAY_MS) delay_ms = TG_CHAOS_PROXY_MAX_DELAY_MS;
  atomic_store(&p->routes[route_index].delay_ms, delay_ms);
}

/* ------------------------------------------------------------ connections */

static void close_conn(conn *c) {
  for (int s = 0; s < 2; s++) {
    if (c->fd[s] >= 0) close(c->fd[s]);
    c->fd[s] = -1;
    for (chunk *k = c->flow[s].head, *next; k; k = next) {
      next = k->next;
      free(k);
    }
    memset(&c->flow[s], 0, sizeof c->flow[s]);
  }
  c->connecting = 0;
}

static void accept_one(route *r) {
  int client = accept4(r->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (client < 0) return;
  conn *c = NULL;
  for (int i = 0; i < TG_CHAOS_PROXY_MAX_CONNS && !c; i++)
    if (r->conns[i].fd[0] < 0) c = &r->conns[i];
  int target = c ? socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) : -1;
  if (target < 0) { /* full: the client sees the connection close and retries */
    close(client);
    return;
  }
  c->fd[0] = client;
  c->fd[1] = target;
  if (connect(target, (struct sockaddr *)&r->target, sizeof r->target) == 0)
    c->connecting = 0;
  else if (errno == EINPROGRESS)
    c->connecting = 1;
  else
    close_conn(c);
}

/* Reads what side s has into its flow; -1 when the connection failed. */
static int read_side(route *r, conn *c, int s, int64_t now) {
  flow *f = &c->flow[s];
  while (!f->eof && f->bytes < TG_CHAOS_PROXY_QUEUE_BYTES) {
    chunk *k = malloc(sizeof *k + READ_BYTES);
    if (!k) return -1;
    ssize_t n = recv(c->fd[s], k->data, READ_BYTES, 0);
    if (n <= 0) {
      free(k);
      if (n == 0) f->eof = 1;
      else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
      return 0;
    }
    k->next = NULL;
    k->len = (size_t)n;
    k->off = 0;
    k->due_mono_ms = now + atomic_load(&r->delay_ms);
    if (f->tail) f->tail->next = k;
    else f->head = k;
    f->tail = k;
    f->bytes += (size_t)n;
  }
  return 0;
}

/* Writes the due part of flow s to the other side; -1 on failure. */
static int write_flow(conn *c, int s, int64_t now) {
  flow *f = &c->flow[s];
  int dst = c->fd[1 - s];
  while (f->head && f->head->due_mono_ms <= now) {
    chunk *k = f->head;
    ssize_t n = send(dst, k->data + k->off, k->len - k->off, MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    k->off += (size_t)n;
    f->bytes -= (size_t)n;
    if (k->off < k->len) return 0;
    f->head = k->next;
    if (!f->head) f->tail = NULL;
    free(k);
  }
  if (f->eof && !f->head && !f->shut) {
    shutdown(dst, SHUT_WR);
    f->shut = 1;
  }
  return 0;
}

/* ------------------------------------------------------------ the loop */

/* What conn c waits for on side s, and the time its next chunk is due. */
static short wanted(const conn *c, int s, int64_t now, int64_t *next_due) {
  if (s == 1 && c->connecting) return POLLOUT;
  short ev = 0;
  if (!c->flow[s].eof && c->flow[s].bytes < TG_CHAOS_PROXY_QUEUE_BYTES) ev |= POLLIN;
  const chunk *out = c->flow[1 - s].head; /* waiting to be written to side s */
  if (out && out->due_mono_ms <= now) ev |= POLLOUT;
  else if (out && out->due_mono_ms < *next_due) *next_due = out->due_mono_ms;
  return ev;
}

static void serve(conn *c, const struct pollfd *pfd, route *r, int64_t now) {
  if (c->connecting) {
    const struct pollfd *t = &pfd[c->poll_at[1]];
    if (!t->revents) return;
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (getsockopt(c->fd[1], SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0) {
      close_conn(c);
      return;
    }
    c->connecting = 0;
  }
  for (int s = 0; s < 2; s++)
    if ((pfd[c->poll_at[s]].revents & (POLLIN | POLLHUP | POLLERR)) && read_side(r, c, s, now) != 0) {
      close_conn(c);
      return;
    }
  for (int s = 0; s < 2; s++)
    if (write_flow(c, s, now) != 0) {
      close_conn(c);
      return;
    }
  if (c->flow[0].shut && c->flow[1].shut) close_conn(c);
}

static void *proxy_main(void *arg) {
  tg_chaos_proxy *p = arg;
  struct pollfd *pfd = calloc(MAX_POLL, sizeof *pfd);
  if (!pfd) return NULL;
  while (!atomic_load(&p->stop)) {
    int64_t now = tg_clock_mono_ms(), next_due = now + TICK_MS;
    int n = 0;
    for (int i = 0; i < p->n_routes; i++) {
      route *r = &p->routes[i];
      r->poll_at = n;
      pfd[n++] = (struct pollfd){.fd = r->listen_fd, .events = POLLIN};
      for (int k = 0; k < TG_CHAOS_PROXY_MAX_CONNS; k++) {
        conn *c = &r->conns[k];
        if (c->fd[0] < 0) continue;
        for (int s = 0; s < 2; s++) {
          c->poll_at[s] = n;
          pfd[n++] = (struct pollfd){.fd = c->fd[s], .events = wanted(c, s, now, &next_due)};
        }
      }
    }
    int timeout = (int)(next_due > now ? next_due - now : 0);
    if (poll(pfd, (nfds_t)n, timeout) < 0 && errno != EINTR) tg_clock_sleep_ms(TICK_MS);
    now = tg_clock_mono_ms();
    for (int i = 0; i < p->n_routes; i++) {
      route *r = &p->routes[i];
      for (int k = 0; k < TG_CHAOS_PROXY_MAX_CONNS; k++)
        if (r->conns[k].fd[0] >= 0) serve(&r->conns[k], pfd, r, now);
      if (pfd[r->poll_at].revents & POLLIN) accept_one(r);
    }
  }
  free(pfd);
  return NULL;
}

int tg_chaos_proxy_start(tg_chaos_proxy *p, char *err, size_t errlen) {
  if (p->started) return 0;
  int rc = pthread_create(&p->thread, NULL, proxy_main, p);
  if (rc != 0) {
    snprintf(err, errlen, "proxy: thread: %s", strerror(rc));
    return -1;
  }
  p->started = 1;
  return 0;
}

void tg_chaos_proxy_free(tg_chaos_proxy *p) {
  if (!p) return;
  if (p->started) {
    atomic_store(&p->stop, 1);
    pthread_join(p->thread, NULL);
  }
  for (int i = 0; i < p->n_routes; i++) {
    close(p->routes[i].listen_fd);
    for (int k = 0; k < TG_CHAOS_PROXY_MAX_CONNS; k++)
      if (p->routes[i].conns[k].fd[0] >= 0) close_conn(&p->routes[i].conns[k]);
  }
  free(p);
}
