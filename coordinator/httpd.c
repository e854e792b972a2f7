/* The dashboard's HTTP server (see httpd.h): libmicrohttpd with one thread
 * per connection, so an event stream may simply wait on a condition
 * variable for the next document, and a short GET never queues behind a
 * long stream.
 *
 * Documents live in one table under `mu`, each with a version that
 * tg_httpd_publish bumps when the body changes. A GET copies the body out
 * under the lock; a stream remembers the versions it sent and, woken by
 * `changed`, sends each newer document as one event ("event: NAME" then
 * "data: BODY", bodies being single-line JSON), or a keepalive comment
 * when nothing changed for a while. A document larger than
 * libmicrohttpd's write buffer is copied once into the stream's pending
 * buffer and handed out in pieces. */
#include "coordinator/httpd.h"

#include <errno.h>
#include <stdarg.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>

#include "common/log/log.h"

#define MEMORY_LIMIT (32 << 10) /* per connection: request line and headers */
#define IDLE_TIMEOUT_S 30

typedef struct {
  tg_httpd_doc spec;
  char *body;
  size_t len;
  uint64_t version;
} doc;

/* One event stream. */
typedef struct {
  tg_httpd *h;
  uint64_t sent[TG_HTTPD_MAX_DOCS];
  char *pending;           /* the event being written */
  size_t pending_len, pending_off;
  struct timespec next_keepalive;
} stream;

struct tg_httpd {
  struct MHD_Daemon *mhd;
  int port;
  char events_path[128];
  int max_streams, keepalive_ms;
  pthread_mutex_t mu;
  pthread_cond_t changed;
  doc docs[TG_HTTPD_MAX_DOCS];
  size_t n_docs;
  int streams;
  int stopping;
};

static void deadline_in(struct timespec *ts, int ms) {
  clock_gettime(CLOCK_REALTIME, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

static int past(const struct timespec *ts) {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return now.tv_sec > ts->tv_sec || (now.tv_sec == ts->tv_sec && now.tv_nsec >= ts->tv_nsec);
}

/* The next event for s, made into s->pending (mu held): a changed
 * document, a keepalive when due, or nothing (0). */
static int next_event(tg_httpd *h, stream *s) {
  for (size_t i = 0; i < h->n_docs; i++) {
    doc *d = &h->docs[i];
    if (!d->spec.sse_event || !d->body || d->version == s->sent[i]) continue;
    size_t cap = strlen(d->spec.sse_event) + d->len + 32;
    char *ev = malloc(cap);
    if (!ev) return 0;
    int n = snprintf(ev, cap, "event: %s\ndata: ", d->spec.sse_event);
    memcpy(ev + n, d->body, d->len);
    memcpy(ev + n + d->len, "\n\n", 2);
    s->pending = ev;
    s->pending_len = (size_t)n + d->len + 2;
    s->pending_off = 0;
    s->sent[i] = d->version;
    return 1;
  }
  if (past(&s->next_keepalive)) {
    s->pending = strdup(": keepalive\n\n");
    if (!s->pending) return 0;
    s->pending_len = strlen(s->pending);
    s->pending_off = 0;
    deadline_in(&s->next_keepalive, h->keepalive_ms);
    return 1;
  }
  return 0;
}

/* libmicrohttpd asks for the next bytes of a stream (its connection's
 * thread); this blocks until there is something to send. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
  stream *s = cls;
  tg_httpd *h = s->h;
  pthread_mutex_lock(&h->mu);
  for (;;) {
    if (h->stopping) {
      pthread_mutex_unlock(&h->mu);
      return MHD_CONTENT_READER_END_OF_STREAM;
    }
    if (s->pending && s->pending_off < s->pending_len) {
      size_t n = s->pending_len - s->pending_off;
      if (n > max) n = max;
      memcpy(buf, s->pending + s->pending_off, n);
      s->pending_off += n;
      pthread_mutex_unlock(&h->mu);
      return (ssize_t)n;
    }
    free(s->pending);
    s->pending = NULL;
    if (next_event(h, s)) {
      deadline_in(&s->next_keepalive, h->keepalive_ms);
      continue;
    }
    pthread_cond_timedwait(&h->changed, &h->mu, &s->next_keepalive);
  }
}

/* The response is gone: the client left, or the server is stopping. */
static void stream_free(void *cls) {
  stream *s = cls;
  tg_httpd *h = s->h;
  pthread_mutex_lock(&h->mu);
  h->streams--;
  pthread_mutex_unlock(&h->mu);
  free(s->pending);
  free(s);
}

static void common_headers(struct MHD_Response *r, const char *content_type) {
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
  /* The page loads nothing from anywhere but here. */
  MHD_add_response_header(r, "Content-Security-Policy",
                          "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                          "img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'");
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned code, const char *content_type,
                             char *body, size_t len, const char *allow) {
  struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
  if (!r) {
    free(body);
    return MHD_NO;
  }
  common_headers(r, content_type);
  if (allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
  enum MHD_Result ok = MHD_queue_response(conn, code, r);
  MHD_destroy_response(r);
  return ok;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned code, const char *text,
                                  const char *allow) {
  char *body = strdup(text);
  if (!body) return MHD_NO;
  return reply(conn, code, "text/plain; charset=utf-8", body, strlen(body), allow);
}

static enum MHD_Result open_stream(tg_httpd *h, struct MHD_Connection *conn) {
  stream *s = calloc(1, sizeof *s);
  if (!s) return MHD_NO;
  s->h = h;
  pthread_mutex_lock(&h->mu);
  if (h->streams >= h->max_streams || h->stopping) {
    pthread_mutex_unlock(&h->mu);
    free(s);
    return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "too many event streams; try again later\n",
                      NULL);
  }
  h->streams++;
  pthread_mutex_unlock(&h->mu);
  /* Browsers reconnect after `retry` ms when the stream breaks. */
  s->pending = strdup("retry: 1000\n\n");
  s->pending_len = s->pending ? strlen(s->pending) : 0;
  deadline_in(&s->next_keepalive, h->keepalive_ms);
  struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 << 10, stream_read, s,
                                                             stream_free);
  if (!r) {
    stream_free(s);
    return MHD_NO;
  }
  common_headers(r, "text/event-stream");
  enum MHD_Result ok = MHD_queue_response(conn, MHD_HTTP_OK, r);
  MHD_destroy_response(r); /* stream_free runs when the connection is done with it */
  return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
  tg_httpd *h = cls;
  /* Answered on the first call, before any body: a request body is
   * never read. */
  if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
    return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n", "GET, HEAD");
  if (*upload_data_size) return reply_text(conn, MHD_HTTP_BAD_REQUEST, "a GET has no body\n", NULL);
  if (strcmp(url, h->events_path) == 0) return open_stream(h, conn);
  for (size_t i = 0; i < h->n_docs; i++) {
    if (strcmp(url, h->docs[i].spec.path) != 0) continue;
    pthread_mutex_lock(&h->mu);
    const doc *d = &h->docs[i];
    int ready = d->body != NULL;
    char *body = ready ? malloc(d->len ? d->len : 1) : NULL;
    size_t len = d->len;
    if (body) memcpy(body, d->body, len);
    const char *type = d->spec.content_type;
    pthread_mutex_unlock(&h->mu);
    if (!ready) return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "not ready yet\n", NULL);
    if (!body) return MHD_NO;
    return reply(conn, MHD_HTTP_OK, type, body, len, NULL);
  }
  return reply_text(conn, MHD_HTTP_NOT_FOUND, "not found\n", NULL);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
  char line[256];
  vsnprintf(line, sizeof line, fmt, ap);
  size_t n = strlen(line);
  while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
  TG_DEBUG("http: %s", line);
}

/* "host:port" or "[v6]:port" into a socket address. */
static int parse_listen(const char *listen, struct sockaddr_storage *out, socklen_t *outlen, char *err,
                        size_t errlen) {
  char host[256];
  const char *colon = strrchr(listen, ':');
  if (!colon || colon == listen || !colon[1] || (size_t)(colon - listen) >= sizeof host) goto bad;
  memcpy(host, listen, (size_t)(colon - listen));
  host[colon - listen] = '\0';
  if (host[0] == '[') {
    size_t n = strlen(host);
    if (n < 3 || host[n - 1] != ']') goto bad;
    memmove(host, host + 1, n - 2);
    host[n - 2] = '\0';
  }
  char *end = NULL;
  long port = strtol(colon + 1, &end, 10);
  if (*end || port < 0 || port > 65535) goto bad;
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV | AI_PASSIVE}, *res = NULL;
  int rc = getaddrinfo(host, colon + 1, &hints, &res);
  if (rc != 0 || !res) {
    snprintf(err, errlen, "http address %s: %s", listen, gai_strerror(rc));
    return -1;
  }
  memcpy(out, res->ai_addr, res->ai_addrlen);
  *outlen = res->ai_addrlen;
  freeaddrinfo(res);
  return 0;
bad:
  snprintf(err, errlen, "http address '%s' is not host:port", listen);
  return -1;
}

tg_httpd *tg_httpd_start(const tg_httpd_config *cfg, char *err, size_t errlen) {
  struct sockaddr_storage addr;
  socklen_t addrlen = 0;
  if (cfg->n_docs > TG_HTTPD_MAX_DOCS || !cfg->events_path ||
      strlen(cfg->events_path) >= sizeof ((tg_httpd *)0)->events_path) {
    snprintf(err, errlen, "too many documents or a bad events path");
    return NULL;
  }
  if (parse_listen(cfg->listen, &addr, &addrlen, err, errlen) != 0) return NULL;
  tg_httpd *h = calloc(1, sizeof *h);
  if (!h) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&h->mu, NULL);
  pthread_cond_init(&h->changed, NULL);
  snprintf(h->events_path, sizeof h->events_path, "%s", cfg->events_path);
  h->max_streams = cfg->max_streams > 0 ? cfg->max_streams : 16;
  h->keepalive_ms = cfg->keepalive_ms > 0 ? cfg->keepalive_ms : 10000;
  h->n_docs = cfg->n_docs;
  for (size_t i = 0; i < cfg->n_docs; i++) h->docs[i].spec = cfg->docs[i];
  unsigned max_conn = cfg->max_connections > 0 ? (unsigned)cfg->max_connections : 64;
  unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                   MHD_USE_ERROR_LOG;
  if (addr.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
  /* A stream holds its connection: leave room for plain requests. */
  if ((unsigned)h->max_streams + 8 > max_conn) max_conn = (unsigned)h->max_streams + 8;
  h->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                            MHD_OPTION_CONNECTION_LIMIT, max_conn,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT, max_conn,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)MEMORY_LIMIT,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIMEOUT_S,
                            MHD_OPTION_END);
  if (!h->mhd) {
    snprintf(err, errlen, "cannot serve http on %s: %s", cfg->listen,
             errno ? strerror(errno) : "libmicrohttpd refused");
    goto fail;
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_LISTEN_FD);
  struct sockaddr_storage bound;
  socklen_t bound_len = sizeof bound;
  if (!info || getsockname(info->listen_fd, (struct sockaddr *)&bound, &bound_len) != 0) {
    snprintf(err, errlen, "cannot read the bound http port: %s", strerror(errno));
    goto fail;
  }
  h->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                              : ((struct sockaddr_in *)&bound)->sin_port);
  return h;
fail:
  tg_httpd_free(h);
  return NULL;
}

int tg_httpd_port(const tg_httpd *h) { return h->port; }

int tg_httpd_publish(tg_httpd *h, size_t i, const char *body, size_t len) {
  if (i >= h->n_docs) return -1;
  pthread_mutex_lock(&h->mu);
  doc *d = &h->docs[i];
  if (d->body && d->len == len && memcmp(d->body, body, len) == 0) {
    pthread_mutex_unlock(&h->mu);
    return 0;
  }
  pthread_mutex_unlock(&h->mu);
  char *copy = malloc(len ? len : 1);
  if (!copy) return -1;
  memcpy(copy, body, len);
  pthread_mutex_lock(&h->mu);
  free(d->body);
  d->body = copy;
  d->len = len;
  d->version++;
  pthread_cond_broadcast(&h->changed);
  pthread_mutex_unlock(&h->mu);
  return 0;
}

void tg_httpd_free(tg_httpd *h) {
  if (!h) return;
  pthread_mutex_lock(&h->mu);
  h->stopping = 1;
  pthread_cond_broadcast(&h->changed);
  pthread_mutex_unlock(&h->mu);
  if (h->mhd) MHD_stop_daemon(h->mhd); /* joins every connection's thread */
  for (size_t i = 0; i < h->n_docs; i++) free(h->docs[i].body);
  pthread_mutex_destroy(&h->mu);
  pthread_cond_destroy(&h->changed);
  free(h);
}
