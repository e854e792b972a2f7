/* A small read-only HTTP server for the coordinator's dashboard, metrics
 * and JSON API: a fixed set of documents, each at one path, that the
 * coordinator replaces whenever it has something new (tg_httpd_publish),
 * and one server-sent-events stream that pushes every changed document to
 * the browsers watching it.
 *
 * It knows nothing about the coordinator: the coordinator renders, this
 * serves. Requests never reach coordinator state, so a slow or hostile
 * client cannot block the coordinator's main loop; the server runs on
 * libmicrohttpd's own threads (one per connection) and reads the
 * documents under a mutex of its own.
 *
 * Input is hostile: only GET and HEAD (405 otherwise), exact paths (404
 * otherwise), request headers bounded by libmicrohttpd's per-connection
 * memory limit, a bounded number of connections and of event streams
 * (503 beyond), and an idle timeout. A client that disconnects mid-stream
 * only ends its own stream. */
#ifndef TG_COORDINATOR_HTTPD_H
#define TG_COORDINATOR_HTTPD_H

#include <stddef.h>

typedef struct tg_httpd tg_httpd;

/* One document: served at `path`; pushed on the event stream as event
 * `sse_event` (NULL: never pushed). */
typedef struct {
  const char *path;
  const char *content_type;
  const char *sse_event;
} tg_httpd_doc;

typedef struct {
  const char *listen;          /* "host:port" (IPv4 or [IPv6]); port 0 picks one */
  const tg_httpd_doc *docs;    /* copied; at most TG_HTTPD_MAX_DOCS */
  size_t n_docs;
  const char *events_path;     /* the event stream, e.g. "/api/v1/events" */
  int max_streams;             /* concurrent event streams; 0: 16 */
  int max_connections;         /* concurrent connections; 0: 64 */
  int keepalive_ms;            /* a comment on idle streams this often; 0: 10000 */
} tg_httpd_config;

#define TG_HTTPD_MAX_DOCS 16

/* Binds and starts serving (documents are empty until published). NULL
 * with a reason in err on failure (bad address, port in use). */
tg_httpd *tg_httpd_start(const tg_httpd_config *cfg, char *err, size_t errlen);

/* The TCP port bound (the chosen one with port 0). */
int tg_httpd_port(const tg_httpd *h);

/* Replaces document `doc`'s body with a copy of body[0..len); streams get
 * it when it differs from what they were sent. Returns 0, or -1 when out
 * of memory (the old body stays). */
int tg_httpd_publish(tg_httpd *h, size_t doc, const char *body, size_t len);

/* Ends every stream, stops serving and frees. NULL is fine. */
void tg_httpd_free(tg_httpd *h);

#endif
