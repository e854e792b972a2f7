/* Tardigrade's RPC layer: a small, safe surface over the gRPC core C API.
 *
 * Every Tardigrade process speaks gRPC with protobuf-c messages: agents to
 * the coordinator, trainers to their agent (over a unix socket), agents to
 * each other, and everyone to etcd. This module is the one place that
 * touches gRPC core, so the rules live here once:
 *   - every call has a deadline (a default applies when the caller gives 0);
 *   - every received message is bounded in size and must decode, or the
 *     call ends with RESOURCE_EXHAUSTED / INVALID_ARGUMENT and the server
 *     keeps serving;
 *   - unknown methods are answered with UNIMPLEMENTED at once;
 *   - TLS and mutual TLS are options on both sides; targets are "host:port"
 *     or "unix:/path".
 *
 * Server side is event driven: a few handler threads serve every call, so
 * thousands of long-lived streams cost memory, not threads. Handlers run on
 * those threads and must not block for long; they answer at once or later,
 * from any thread, through tg_rpc_call_send / tg_rpc_call_finish.
 *
 * Client side is blocking: tg_rpc_unary for one request and one response,
 * tg_rpc_stream_* for server-streaming, client-streaming and bidirectional
 * calls, where a receive waits at most the timeout it is given. */
#ifndef TG_RPC_H
#define TG_RPC_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

/* gRPC status codes (same numbers as gRPC). */
typedef enum {
  TG_RPC_OK = 0,
  TG_RPC_CANCELLED = 1,
  TG_RPC_UNKNOWN = 2,
  TG_RPC_INVALID_ARGUMENT = 3,
  TG_RPC_DEADLINE_EXCEEDED = 4,
  TG_RPC_NOT_FOUND = 5,
  TG_RPC_ALREADY_EXISTS = 6,
  TG_RPC_PERMISSION_DENIED = 7,
  TG_RPC_RESOURCE_EXHAUSTED = 8,
  TG_RPC_FAILED_PRECONDITION = 9,
  TG_RPC_ABORTED = 10,
  TG_RPC_OUT_OF_RANGE = 11,
  TG_RPC_UNIMPLEMENTED = 12,
  TG_RPC_INTERNAL = 13,
  TG_RPC_UNAVAILABLE = 14,
  TG_RPC_DATA_LOSS = 15,
  TG_RPC_UNAUTHENTICATED = 16,
} tg_rpc_code;

/* The outcome of a call: a code and one human-readable line. */
typedef struct {
  tg_rpc_code code;
  char message[256];
} tg_rpc_status;

/* "OK", "INVALID_ARGUMENT", ...; "UNKNOWN_CODE" for numbers out of range. */
const char *tg_rpc_code_name(tg_rpc_code code);

/* Sets st->code and formats st->message; returns code. st may be NULL. */
tg_rpc_code tg_rpc_status_set(tg_rpc_status *st, tg_rpc_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Default bound on one message in either direction. */
#define TG_RPC_DEFAULT_MAX_MESSAGE_BYTES ((size_t)4 << 20)
/* Longest wait between reconnect attempts (gRPC's own default is 120 s). */
#define TG_RPC_DEFAULT_MAX_RECONNECT_BACKOFF_MS 1000
/* Deadline used when a caller passes 0. */
#define TG_RPC_DEFAULT_DEADLINE_MS 10000
/* Bound on messages queued for sending on one server-side call; a consumer
 * that falls this far behind has its call ended with RESOURCE_EXHAUSTED. */
#define TG_RPC_DEFAULT_MAX_QUEUED_SENDS 1024

/* TLS settings. Files are PEM. A NULL tg_rpc_tls pointer means plaintext. */
typedef struct {
  const char *ca_file;     /* roots that verify the peer (client: NULL = system roots;
                              server: required when require_client_cert) */
  const char *cert_file;   /* own certificate chain: server always, client for mutual TLS */
  const char *key_file;    /* own private key, with cert_file */
  int require_client_cert; /* server only: mutual TLS, clients without a valid cert are refused */
  const char *server_name; /* client only: name to verify instead of the target's host */
} tg_rpc_tls;

/* One metadata entry; keys are lower-case ASCII. */
typedef struct {
  const char *key;
  const char *value;
} tg_rpc_metadata;

/* ---------------------------------------------------------------- server */

typedef struct tg_rpc_server tg_rpc_server;
typedef struct tg_rpc_call tg_rpc_call;

typedef enum {
  TG_RPC_UNARY = 0,
  TG_RPC_SERVER_STREAM = 1,
  TG_RPC_CLIENT_STREAM = 2,
  TG_RPC_BIDI_STREAM = 3,
} tg_rpc_kind;

/* A registered method. The server keeps the pointer: the struct must live
 * until tg_rpc_server_free (static const tables are the usual choice).
 *
 * Life of a call, all callbacks on a server handler thread, never two at
 * once for one call:
 *   on_start (optional)       the call arrived; tg_rpc_call_set_data here
 *   on_message                each request message, decoded and validated
 *                             (unary and server-streaming: exactly one)
 *   on_half_close (optional)  the client will send no more
 *   on_done (optional)        the call is over: finished by the handler,
 *                             cancelled by the client, deadline passed,
 *                             ended by the server (bad request, full send
 *                             queue) or server shutting down. `cancelled` is
 *                             0 only when the handler's finish reached the
 *                             client. The call pointer is invalid once
 *                             on_done returns (unless referenced with
 *                             tg_rpc_call_ref).
 * `msg` passed to on_message is freed after the callback returns. The next
 * message is read only after on_message returns, so a slow handler slows
 * its client down instead of queueing requests in memory. A unary or
 * server-streaming call that brings no request, or more than one, is ended
 * with INVALID_ARGUMENT. on_message is required; a handler that keeps a
 * call beyond on_message (a stream it writes to later) needs on_done to
 * learn when to forget it. */
typedef struct tg_rpc_method {
  const char *path; /* "/package.Service/Method" */
  tg_rpc_kind kind;
  const ProtobufCMessageDescriptor *request;
  const ProtobufCMessageDescriptor *response;
  size_t max_request_bytes; /* 0: the server's max_message_bytes */
  void (*on_start)(tg_rpc_call *call, void *user);
  void (*on_message)(tg_rpc_call *call, const ProtobufCMessage *msg, void *user);
  void (*on_half_close)(tg_rpc_call *call, void *user);
  void (*on_done)(tg_rpc_call *call, int cancelled, void *user);
  void *user;
} tg_rpc_method;

typedef struct {
  int threads;                /* handler threads; 0: 2 */
  size_t max_message_bytes;   /* 0: TG_RPC_DEFAULT_MAX_MESSAGE_BYTES */
  size_t max_queued_sends;    /* 0: TG_RPC_DEFAULT_MAX_QUEUED_SENDS */
} tg_rpc_server_config;

/* Creates a server; register methods and listen before start.
 * cfg may be NULL for defaults. On failure returns NULL and writes a reason to err. */
tg_rpc_server *tg_rpc_server_new(const tg_rpc_server_config *cfg, char *err, size_t errlen);

/* Registers a method; returns 0, or -1 if the path is taken, the server
 * started, or a required field (path, request, response, on_message) is
 * missing. */
int tg_rpc_server_register(tg_rpc_server *srv, const tg_rpc_method *method);

/* Listens on "host:port" (port 0 picks a free one) or "unix:/path".
 * tls NULL means plaintext. Returns the bound TCP port (0 for unix sockets),
 * or -1 with a reason in err. */
int tg_rpc_server_listen(tg_rpc_server *srv, const char *address, const tg_rpc_tls *tls, char *err,
                         size_t errlen);

/* Starts serving; returns 0 or -1 with a reason in err. */
int tg_rpc_server_start(tg_rpc_server *srv, char *err, size_t errlen);

/* Stops accepting new calls, lets calls in flight finish for at most
 * grace_ms, then cancels the rest and waits until every on_done has run,
 * joins the threads and frees everything. Safe on a server that never
 * started; must not be called from a handler callback. Calls still
 * referenced with tg_rpc_call_ref stay valid (and refuse sends) until their
 * last unref, which may come after this returns. */
void tg_rpc_server_free(tg_rpc_server *srv, int64_t grace_ms);

/* --- on a server-side call (thread-safe, any thread while the call is valid) */

/* Queues one response message (copied); the first send also sends the
 * initial metadata. Returns 0, or -1 if the call is already over or its
 * queue is full (then the call is ended with RESOURCE_EXHAUSTED). */
int tg_rpc_call_send(tg_rpc_call *call, const ProtobufCMessage *msg);

/* A message serialized once and sent on many calls (a broadcast): each
 * send shares the same bytes. Free it when done; sends already queued
 * keep their own reference. */
typedef struct tg_rpc_payload tg_rpc_payload;
tg_rpc_payload *tg_rpc_payload_new(const ProtobufCMessage *msg);
void tg_rpc_payload_free(tg_rpc_payload *p);

/* tg_rpc_call_send for a payload; same rules and return values. */
int tg_rpc_call_send_payload(tg_rpc_call *call, const tg_rpc_payload *p);

/* Ends the call: sends `response` first if not NULL (unary calls pass their
 * one response here), then the status. Returns 0, or -1 if the call was
 * already over or finished; later sends and finishes are ignored and
 * return -1. `message` may be NULL. */
int tg_rpc_call_finish(tg_rpc_call *call, tg_rpc_code code, const char *message,
                       const ProtobufCMessage *response);

/* Per-call pointer for the handler. */
void tg_rpc_call_set_data(tg_rpc_call *call, void *data);
void *tg_rpc_call_data(tg_rpc_call *call);

/* The method being served. */
const tg_rpc_method *tg_rpc_call_method(tg_rpc_call *call);

/* The peer ("ipv4:127.0.0.1:5555", "unix:..."), valid while the call is. */
const char *tg_rpc_call_peer(tg_rpc_call *call);

/* Copies the first value of request metadata `key` into buf (NUL-terminated);
 * returns its length, or -1 if absent or longer than buflen - 1. */
int tg_rpc_call_metadata(tg_rpc_call *call, const char *key, char *buf, size_t buflen);

/* Milliseconds until the client's deadline (INT64_MAX if none). */
int64_t tg_rpc_call_deadline_left_ms(tg_rpc_call *call);

/* Keep a call's memory valid beyond on_done; every ref needs an unref.
 * A referenced call that is over accepts no sends (they return -1). */
void tg_rpc_call_ref(tg_rpc_call *call);
void tg_rpc_call_unref(tg_rpc_call *call);

/* ---------------------------------------------------------------- client */

typedef struct tg_rpc_channel tg_rpc_channel;

typedef struct {
  const tg_rpc_tls *tls;            /* NULL: plaintext */
  size_t max_message_bytes;         /* 0: TG_RPC_DEFAULT_MAX_MESSAGE_BYTES */
  int64_t default_deadline_ms;      /* 0: TG_RPC_DEFAULT_DEADLINE_MS */
  int64_t keepalive_ms;             /* HTTP/2 pings while calls are open, to notice a dead
                                       peer within about 2x this; 0: off. Tardigrade
                                       servers accept >= 1000, etcd >= 5000. */
  int64_t max_reconnect_backoff_ms; /* longest wait between reconnects; 0: the default */
} tg_rpc_channel_config;

/* A channel to "host:port" or "unix:/path". Connects lazily; cfg may be NULL. */
tg_rpc_channel *tg_rpc_channel_new(const char *target, const tg_rpc_channel_config *cfg, char *err,
                                   size_t errlen);
void tg_rpc_channel_free(tg_rpc_channel *ch);
const char *tg_rpc_channel_target(const tg_rpc_channel *ch);

/* Waits until the channel is connected; returns 0, or -1 after timeout_ms. */
int tg_rpc_channel_wait_ready(tg_rpc_channel *ch, int64_t timeout_ms);

typedef struct {
  int64_t deadline_ms;              /* whole call, from now; 0: the channel's default */
  const tg_rpc_metadata *metadata;  /* sent with the call */
  size_t n_metadata;
  int wait_for_ready;               /* wait for a connection instead of failing fast */
} tg_rpc_call_opts;

/* One request, one response. Returns the status code (also in *st when st
 * is not NULL). On TG_RPC_OK *resp holds the decoded response, to be freed
 * with protobuf_c_message_free_unpacked(*resp, NULL); otherwise *resp is NULL.
 * opts may be NULL. */
tg_rpc_code tg_rpc_unary(tg_rpc_channel *ch, const char *path, const ProtobufCMessage *req,
                         const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                         const tg_rpc_call_opts *opts, tg_rpc_status *st);

typedef struct tg_rpc_stream tg_rpc_stream;

/* Opens a streaming call. The call starts at once (the server sees it
 * before the first message); messages go out with tg_rpc_stream_send (a
 * server-streaming call sends its one request with send, then close_send).
 * The deadline (opts or the channel's default) bounds the whole stream.
 * Returns NULL only on bad arguments, with st set; connection failures show
 * up as the end status of recv. */
tg_rpc_stream *tg_rpc_stream_open(tg_rpc_channel *ch, const char *path,
                                  const ProtobufCMessageDescriptor *resp_desc,
                                  const tg_rpc_call_opts *opts, tg_rpc_status *st);

/* Sends one message, waiting at most timeout_ms (<= 0: until the call's
 * deadline) for it to be written. One sender at a time. Returns 0, or -1
 * if the stream is over, closed for sending, the message is larger than
 * the channel's max_message_bytes, or the wait timed out (in the last two
 * cases the stream is cancelled and recv reports why). */
int tg_rpc_stream_send(tg_rpc_stream *s, const ProtobufCMessage *msg, int64_t timeout_ms);

/* Half-closes: the client sends no more. Returns 0 or -1. */
int tg_rpc_stream_close_send(tg_rpc_stream *s);

typedef enum {
  TG_RPC_RECV_MESSAGE = 0, /* *msg holds a message (free with protobuf_c_message_free_unpacked) */
  TG_RPC_RECV_TIMEOUT = 1, /* nothing within timeout_ms; the stream is still open */
  TG_RPC_RECV_END = 2,     /* the call is over; its status is in *st */
} tg_rpc_recv_result;

/* Receives the next message, waiting at most timeout_ms (0: just polls;
 * negative: until the call's deadline). One receiver at a time; a sender
 * may run concurrently on another thread. After a timeout the receive stays
 * pending and the next recv continues it, so no message is lost. Once END
 * is returned, every later recv returns END with the same status. */
tg_rpc_recv_result tg_rpc_stream_recv(tg_rpc_stream *s, ProtobufCMessage **msg, int64_t timeout_ms,
                                      tg_rpc_status *st);

/* Cancels the call; any thread, any time; wakes a blocked recv or send. */
void tg_rpc_stream_cancel(tg_rpc_stream *s);

/* Cancels if still running, waits for gRPC to release the call, frees.
 * Call it once no other thread is using the stream. */
void tg_rpc_stream_free(tg_rpc_stream *s);

#endif
