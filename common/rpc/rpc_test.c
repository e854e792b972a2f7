/* Tests for common/rpc against a real server started in this process.
 *
 * The Echo service (testdata/echo.proto) has one method of each kind. The
 * server listens on 127.0.0.1:0 and on a unix socket; TLS servers use a CA,
 * server and client certificates made with the openssl CLI at start-up.
 * Hostile clients (garbage bytes, oversized messages, cancellation) use the
 * raw gRPC core API where the library would refuse to misbehave, and every
 * such test ends with a normal call that must still succeed. Every wait is
 * bounded, so a bug shows up as a failure, never a hang. */
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
/* cmocka last: it needs the headers above. */
#include <cmocka.h>

#include "common/rpc/rpc.h"
#include "tests/harness/certs.h"
#include "common/rpc/testdata/echo.pb-c.h"

#define UNARY "/tg.test.Echo/Unary"
#define SERVER_STREAM "/tg.test.Echo/ServerStream"
#define CLIENT_STREAM "/tg.test.Echo/ClientStream"
#define BIDI "/tg.test.Echo/Bidi"
#define UNARY_MAX_REQUEST_BYTES (64 * 1024)
#define SERVER_MAX_MESSAGE_BYTES (256 * 1024)

typedef Tg__Test__EchoRequest EchoRequest;
typedef Tg__Test__EchoReply EchoReply;

static char g_dir[256];
static char g_unix_target[300];
static int g_port;
static tg_rpc_server *g_server;

static atomic_int g_done, g_done_cancelled, g_deferred_rc;

static pthread_mutex_t g_threads_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_t g_threads[32];
static int g_n_threads;

static int64_t now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000};
  nanosleep(&t, NULL);
}

/* Waits until *v reaches target; returns 1, or 0 after timeout_ms. */
static int wait_atomic(atomic_int *v, int target, int64_t timeout_ms) {
  int64_t end = now_ms() + timeout_ms;
  while (atomic_load(v) < target) {
    if (now_ms() > end) return 0;
    sleep_ms(5);
  }
  return 1;
}

/* ----------------------------------------------------------- the handlers */

static void finish_text(tg_rpc_call *call, const char *text, int seq) {
  EchoReply reply = TG__TEST__ECHO_REPLY__INIT;
  reply.text = (char *)text;
  reply.seq = seq;
  tg_rpc_call_finish(call, TG_RPC_OK, NULL, &reply.base);
}

typedef struct {
  tg_rpc_call *call;
  int64_t delay_ms;
  char text[64];
} deferred;

static void *deferred_main(void *arg) {
  deferred *d = arg;
  sleep_ms(d->delay_ms);
  EchoReply reply = TG__TEST__ECHO_REPLY__INIT;
  reply.text = d->text;
  atomic_store(&g_deferred_rc, tg_rpc_call_finish(d->call, TG_RPC_OK, NULL, &reply.base));
  tg_rpc_call_unref(d->call);
  free(d);
  return NULL;
}

static void join_deferred(void) {
  pthread_mutex_lock(&g_threads_mu);
  for (int i = 0; i < g_n_threads; i++) pthread_join(g_threads[i], NULL);
  g_n_threads = 0;
  pthread_mutex_unlock(&g_threads_mu);
}

static void unary_on_message(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  const EchoRequest *req = (const EchoRequest *)msg;
  if (req->delay_ms > 0) {
    /* Answer later from another thread, holding a ref meanwhile. */
    deferred *d = calloc(1, sizeof(*d));
    d->call = call;
    d->delay_ms = req->delay_ms;
    snprintf(d->text, sizeof(d->text), "%s", req->text);
    tg_rpc_call_ref(call);
    pthread_mutex_lock(&g_threads_mu);
    pthread_create(&g_threads[g_n_threads++], NULL, deferred_main, d);
    pthread_mutex_unlock(&g_threads_mu);
    return;
  }
  if (strcmp(req->text, "metadata") == 0) {
    char value[64];
    if (tg_rpc_call_metadata(call, "x-tg-test", value, sizeof(value)) < 0) strcpy(value, "-");
    finish_text(call, value, 0);
  } else if (strcmp(req->text, "not-found") == 0) {
    tg_rpc_call_finish(call, TG_RPC_NOT_FOUND, "no such thing", NULL);
  } else {
    finish_text(call, req->text, 0);
  }
}

static void server_stream_on_message(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  const EchoRequest *req = (const EchoRequest *)msg;
  if (strcmp(req->text, "payload") == 0) {
    /* One serialized message sent `count` times, as a broadcast does. */
    EchoReply reply = TG__TEST__ECHO_REPLY__INIT;
    reply.text = (char *)"shared";
    reply.seq = 7;
    tg_rpc_payload *p = tg_rpc_payload_new(&reply.base);
    for (int i = 0; i < req->count; i++)
      if (tg_rpc_call_send_payload(call, p) != 0) break;
    tg_rpc_payload_free(p); /* queued sends hold their own reference */
    tg_rpc_call_finish(call, TG_RPC_OK, NULL, NULL);
    return;
  }
  for (int i = 0; i < req->count; i++) {
    EchoReply reply = TG__TEST__ECHO_REPLY__INIT;
    reply.text = req->text;
    reply.seq = i;
    if (tg_rpc_call_send(call, &reply.base) != 0) return;
  }
  tg_rpc_call_finish(call, TG_RPC_OK, NULL, NULL);
}

static void client_stream_on_start(tg_rpc_call *call, void *user) {
  tg_rpc_call_set_data(call, calloc(1, sizeof(int)));
}

static void client_stream_on_message(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  int *count = tg_rpc_call_data(call);
  (*count)++;
}

static void client_stream_on_half_close(tg_rpc_call *call, void *user) {
  int *count = tg_rpc_call_data(call);
  finish_text(call, "counted", *count);
}

static void bidi_on_message(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  const EchoRequest *req = (const EchoRequest *)msg;
  EchoReply reply = TG__TEST__ECHO_REPLY__INIT;
  reply.text = req->text;
  reply.seq = req->count;
  tg_rpc_call_send(call, &reply.base);
}

static void bidi_on_half_close(tg_rpc_call *call, void *user) {
  tg_rpc_call_finish(call, TG_RPC_OK, NULL, NULL);
}

static void on_done(tg_rpc_call *call, int cancelled, void *user) {
  free(tg_rpc_call_data(call));
  atomic_fetch_add(&g_done, 1);
  if (cancelled) atomic_fetch_add(&g_done_cancelled, 1);
}

static const tg_rpc_method echo_methods[] = {
    {.path = UNARY,
     .kind = TG_RPC_UNARY,
     .request = &tg__test__echo_request__descriptor,
     .response = &tg__test__echo_reply__descriptor,
     .max_request_bytes = UNARY_MAX_REQUEST_BYTES,
     .on_message = unary_on_message,
     .on_done = on_done},
    {.path = SERVER_STREAM,
     .kind = TG_RPC_SERVER_STREAM,
     .request = &tg__test__echo_request__descriptor,
     .response = &tg__test__echo_reply__descriptor,
     .on_message = server_stream_on_message,
     .on_done = on_done},
    {.path = CLIENT_STREAM,
     .kind = TG_RPC_CLIENT_STREAM,
     .request = &tg__test__echo_request__descriptor,
     .response = &tg__test__echo_reply__descriptor,
     .on_start = client_stream_on_start,
     .on_message = client_stream_on_message,
     .on_half_close = client_stream_on_half_close,
     .on_done = on_done},
    {.path = BIDI,
     .kind = TG_RPC_BIDI_STREAM,
     .request = &tg__test__echo_request__descriptor,
     .response = &tg__test__echo_reply__descriptor,
     .on_message = bidi_on_message,
     .on_half_close = bidi_on_half_close,
     .on_done = on_done},
};

/* Starts an Echo server on `address` (plus `unix_address` if not NULL). */
static tg_rpc_server *start_echo_cfg(const tg_rpc_server_config *cfg, const char *address,
                                     const char *unix_address, const tg_rpc_tls *tls, int *port) {
  char err[256] = "";
  tg_rpc_server *srv = tg_rpc_server_new(cfg, err, sizeof(err));
  assert_non_null(srv);
  for (size_t i = 0; i < sizeof(echo_methods) / sizeof(echo_methods[0]); i++) {
    assert_int_equal(tg_rpc_server_register(srv, &echo_methods[i]), 0);
  }
  assert_int_equal(tg_rpc_server_register(srv, &echo_methods[0]), -1); /* taken */
  *port = tg_rpc_server_listen(srv, address, tls, err, sizeof(err));
  if (*port < 0) fail_msg("listen %s: %s", address, err);
  if (unix_address != NULL) {
    assert_int_equal(tg_rpc_server_listen(srv, unix_address, NULL, err, sizeof(err)), 0);
  }
  if (tg_rpc_server_start(srv, err, sizeof(err)) != 0) fail_msg("start: %s", err);
  return srv;
}

static tg_rpc_server *start_echo(const char *address, const char *unix_address,
                                 const tg_rpc_tls *tls, int *port) {
  tg_rpc_server_config cfg = {.threads = 3, .max_message_bytes = SERVER_MAX_MESSAGE_BYTES};
  return start_echo_cfg(&cfg, address, unix_address, tls, port);
}

static tg_rpc_channel *channel_to(const char *target, const tg_rpc_tls *tls) {
  char err[256] = "";
  tg_rpc_channel_config cfg = {.tls = tls, .default_deadline_ms = 5000};
  tg_rpc_channel *ch = tg_rpc_channel_new(target, &cfg, err, sizeof(err));
  if (ch == NULL) fail_msg("channel %s: %s", target, err);
  return ch;
}

static tg_rpc_channel *tcp_channel(void) {
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", g_port);
  return channel_to(target, NULL);
}

/* One unary Echo; returns the code and copies the reply text. */
static tg_rpc_code echo_with(tg_rpc_channel *ch, const char *text, int64_t delay_ms, const tg_rpc_call_opts *opts,
                             char *out, size_t outlen, tg_rpc_status *st) {
  EchoRequest req = TG__TEST__ECHO_REQUEST__INIT;
  req.text = (char *)text;
  req.delay_ms = delay_ms;
  ProtobufCMessage *resp = NULL;
  tg_rpc_code code =
      tg_rpc_unary(ch, UNARY, &req.base, &tg__test__echo_reply__descriptor, &resp, opts, st);
  if (code == TG_RPC_OK) {
    assert_non_null(resp);
    if (out != NULL) snprintf(out, outlen, "%s", ((EchoReply *)resp)->text);
    protobuf_c_message_free_unpacked(resp, NULL);
  } else {
    assert_null(resp);
  }
  return code;
}

static tg_rpc_code echo(tg_rpc_channel *ch, const char *text, int64_t delay_ms, int64_t deadline_ms,
                        char *out, size_t outlen, tg_rpc_status *st) {
  tg_rpc_call_opts opts = {.deadline_ms = deadline_ms};
  return echo_with(ch, text, delay_ms, &opts, out, outlen, st);
}

/* A call that waits for the channel to connect (retrying a handshake that
 * failed) until its deadline: where a test means "this connection works",
 * not "the first attempt on a loaded machine works". */
static tg_rpc_code echo_when_ready(tg_rpc_channel *ch, const char *text, int64_t deadline_ms, char *out,
                                   size_t outlen, tg_rpc_status *st) {
  tg_rpc_call_opts opts = {.deadline_ms = deadline_ms, .wait_for_ready = 1};
  return echo_with(ch, text, 0, &opts, out, outlen, st);
}

/* A normal call on a fresh channel succeeds: the server is still serving. */
static void assert_still_serving(void) {
  tg_rpc_channel *ch = tcp_channel();
  char text[64] = "";
  tg_rpc_status st;
  assert_int_equal(echo(ch, "still here", 0, 5000, text, sizeof(text), &st), TG_RPC_OK);
  assert_string_equal(text, "still here");
  tg_rpc_channel_free(ch);
}

static int send_echo(tg_rpc_stream *s, const char *text, int count) {
  EchoRequest req = TG__TEST__ECHO_REQUEST__INIT;
  req.text = (char *)text;
  req.count = count;
  return tg_rpc_stream_send(s, &req.base, 2000);
}

/* Receives one reply and checks its text and seq. */
static void recv_echo(tg_rpc_stream *s, const char *text, int seq) {
  ProtobufCMessage *msg = NULL;
  tg_rpc_status st;
  assert_int_equal(tg_rpc_stream_recv(s, &msg, 3000, &st), TG_RPC_RECV_MESSAGE);
  EchoReply *reply = (EchoReply *)msg;
  assert_string_equal(reply->text, text);
  assert_int_equal(reply->seq, seq);
  protobuf_c_message_free_unpacked(msg, NULL);
}

static tg_rpc_code recv_end(tg_rpc_stream *s, tg_rpc_status *st) {
  ProtobufCMessage *msg = NULL;
  assert_int_equal(tg_rpc_stream_recv(s, &msg, 3000, st), TG_RPC_RECV_END);
  assert_null(msg);
  return st->code;
}

/* ------------------------------------------------------------------ tests */

static void test_status(void **state) {
  assert_string_equal(tg_rpc_code_name(TG_RPC_OK), "OK");
  assert_string_equal(tg_rpc_code_name(TG_RPC_UNAUTHENTICATED), "UNAUTHENTICATED");
  assert_string_equal(tg_rpc_code_name((tg_rpc_code)99), "UNKNOWN_CODE");
  assert_string_equal(tg_rpc_code_name((tg_rpc_code)-1), "UNKNOWN_CODE");
  tg_rpc_status st;
  assert_int_equal(tg_rpc_status_set(&st, TG_RPC_NOT_FOUND, "key %s gone", "k"), TG_RPC_NOT_FOUND);
  assert_int_equal(st.code, TG_RPC_NOT_FOUND);
  assert_string_equal(st.message, "key k gone");
  assert_int_equal(tg_rpc_status_set(NULL, TG_RPC_ABORTED, "x"), TG_RPC_ABORTED);
}

static void test_unary_tcp(void **state) {
  tg_rpc_channel *ch = tcp_channel();
  assert_int_equal(tg_rpc_channel_wait_ready(ch, 5000), 0);
  char text[64] = "";
  tg_rpc_status st;
  assert_int_equal(echo(ch, "hello", 0, 0, text, sizeof(text), &st), TG_RPC_OK);
  assert_string_equal(text, "hello");

  /* Metadata reaches the handler. */
  EchoRequest req = TG__TEST__ECHO_REQUEST__INIT;
  req.text = "metadata";
  tg_rpc_metadata md[] = {{"x-tg-test", "generation-7"}};
  tg_rpc_call_opts opts = {.deadline_ms = 5000, .metadata = md, .n_metadata = 1};
  ProtobufCMessage *resp = NULL;
  assert_int_equal(
      tg_rpc_unary(ch, UNARY, &req.base, &tg__test__echo_reply__descriptor, &resp, &opts, &st),
      TG_RPC_OK);
  assert_string_equal(((EchoReply *)resp)->text, "generation-7");
  protobuf_c_message_free_unpacked(resp, NULL);

  /* A handler's error status and message reach the caller. */
  assert_int_equal(echo(ch, "not-found", 0, 0, NULL, 0, &st), TG_RPC_NOT_FOUND);
  assert_string_equal(st.message, "no such thing");

  /* Bad arguments are a status, not a crash. */
  assert_int_equal(
      tg_rpc_unary(ch, "no-slash", &req.base, &tg__test__echo_reply__descriptor, &resp, NULL, &st),
      TG_RPC_INVALID_ARGUMENT);
  tg_rpc_channel_free(ch);
}

static void test_unary_unix(void **state) {
  tg_rpc_channel *ch = channel_to(g_unix_target, NULL);
  char text[64] = "";
  tg_rpc_status st;
  assert_int_equal(echo(ch, "over a unix socket", 0, 0, text, sizeof(text), &st), TG_RPC_OK);
  assert_string_equal(text, "over a unix socket");
  tg_rpc_channel_free(ch);

  /* A daemon restarted on the same path finds its old socket file there. */
  char addr[300];
  snprintf(addr, sizeof(addr), "unix:%s/restart.sock", g_dir);
  for (int round = 0; round < 2; round++) {
    int port;
    tg_rpc_server *srv = start_echo_cfg(NULL, addr, NULL, NULL, &port);
    assert_int_equal(port, 0);
    ch = channel_to(addr, NULL);
    assert_int_equal(echo(ch, "again", 0, 5000, text, sizeof(text), &st), TG_RPC_OK);
    tg_rpc_channel_free(ch);
    tg_rpc_server_free(srv, 1000);
  }
}

static void test_server_stream(void **state) {
  tg_rpc_channel *ch = tcp_channel();
  tg_rpc_status st;
  tg_rpc_stream *s =
      tg_rpc_stream_open(ch, SERVER_STREAM, &tg__test__echo_reply__descriptor, NULL, &st);
  assert_non_null(s);
  assert_int_equal(send_echo(s, "tick", 5), 0);
  assert_int_equal(tg_rpc_stream_close_send(s), 0);
  for (int i = 0; i < 5; i++) recv_echo(s, "tick", i);
  assert_int_equal(recv_end(s, &st), TG_RPC_OK);
  /* Over stays over. */
  ProtobufCMessage *msg = NULL;
  assert_int_equal(tg_rpc_stream_recv(s, &msg, 10, &st), TG_RPC_RECV_END);
  assert_int_equal(send_echo(s, "late", 0), -1);
  tg_rpc_stream_free(s);
  tg_rpc_channel_free(ch);
}

static void test_payload_sent_many_times(void **state) {
  tg_rpc_channel *ch = tcp_channel();
  tg_rpc_status st;
  tg_rpc_stream *s =
      tg_rpc_stream_open(ch, SERVER_STREAM, &tg__test__echo_reply__descriptor, NULL, &st);
  assert_non_null(s);
  assert_int_equal(send_echo(s, "payload", 3), 0);
  assert_int_equal(tg_rpc_stream_close_send(s), 0);
  for (int i = 0; i < 3; i++) recv_echo(s, "shared", 7);
  assert_int_equal(recv_end(s, &st), TG_RPC_OK);
  tg_rpc_stream_free(s);
  tg_rpc_channel_free(ch);
}

static void test_client_stream(void **state) {
  tg_rpc_channel *ch = tcp_channel();
  tg_rpc_status st;
  tg_rpc_stream *s =
      tg_rpc_stream_open(ch, CLIENT_STREAM, &tg__test__echo_reply__descriptor, NULL, &st);
  assert_non_null(s);
  for (int i = 0; i < 10; i++) assert_int_equal(send_echo(s, "part", i), 0);
  assert_int_equal(tg_rpc_stream_close_send(s), 0);
  assert_int_equal(tg_rpc_stream_close_send(s), -1);
  recv_echo(s, "counted", 10);
  assert_int_equal(recv_end(s, &st), TG_RPC_OK);
  tg_rpc_stream_free(s);
  tg_rpc_channel_free(ch);
}

static void test_bidi_ping_pong(void **state) {
  tg_rpc_channel *ch = tcp_channel();
  tg_rpc_status st;
  tg_rpc_stream *s = tg_rpc_stream_open(ch, BIDI, &tg__test__echo_reply__descriptor, NULL, &st);
  assert_non_null(s);
  /* Nothing to receive yet: a short recv times out and leaves the receive
   * pending; the next recv picks it up. */
  ProtobufCMessage *msg = NULL;
  assert_int_equal(tg_rpc_stream_recv(s, &msg, 50, &st), TG_RPC_RECV_TIMEOUT);
  for (int i = 0; i < 20; i++) {
    assert_int_equal(send_echo(s, "ping", i), 0);
    recv_echo(s, "ping", i);
  }
  assert_int_equal(tg_rpc_stream_close_send(s), 0);
  assert_int_equal(recv_end(s, &st), TG_RPC_OK);
  tg_rpc_stream_free(s);
  tg_rpc_channel_free(ch);
}

typedef struct {
  tg_rpc_stream *s;
  int n;
  int failures;
} sender_arg;

static void *sender_main(void *arg) {
  sender_arg *a = arg;
  for (int i = 0; i < a->n; i++) {
    if (send_echo(a->s, "concurrent", i) != 0) a->failures++;
  }
  if (tg_rpc_stream_close_send(a->s) != 0) a->failures++;
  return NULL;
}

/* Send on one thread while receiving on another. */
static void test_bidi_concurrent_send_recv(void **state) {
  tg_rpc_channel *ch = tcp_channel();
  tg_rpc_status st;
  tg_rpc_stream *s = tg_rpc_stream_open(ch, BIDI, &tg__test__echo_reply__descriptor, NULL, &st);
  assert_non_null(s);
  sender_arg a = {.s = s, .n = 200};
  pthread_t t;
  pthread_create(&t, NULL, sender_main, &a);
  for (int i = 0; i < a.n; i++) recv_echo(s, "concurrent", i);
  assert_int_equal(recv_end(s, &st), TG_RPC_OK);
  pthread_join(t, NULL);
  assert_int_equal(a.failures, 0);
  tg_rpc_stream_free(s);
  tg_rpc_channel_free(ch);
}

typedef struct {
  tg_rpc_channel *ch;
  int id;
  int failures;
} worker_arg;

static void *worker_main(void *arg) {
  worker_arg *a = arg;
  char want[32], got[64];
  tg_rpc_status st;
  for (int i = 0; i < 30; i++) {
    snprintf(want, sizeof(want), "w%d-%d", a->id, i);
    if (echo(a->ch, want, 0, 5000, got, sizeof(got), &st) != TG_RPC_OK || strcmp(want, got) != 0) {
      a->failures++;
    }
  }
  tg_rpc_stream *s = tg_rpc_stream_open(a->ch, BIDI, &tg__test__echo_reply__descriptor, NULL, &st);
  for (int i = 0; i < 20; i++) {
    ProtobufCMessage *msg = NULL;
    if (send_echo(s, "w", i) != 0 ||
        tg_rpc_stream_recv(s, &msg, 3000, &st) != TG_RPC_RECV_MESSAGE) {
      a->failures++;
      break;
    }
    if (((EchoReply *)msg)->seq != i) a->failures++;
    protobuf_c_message_free_unpacked(msg, NULL);
  }
  if (a->id % 2 == 0) {
    tg_rpc_stream_close_send(s);
    ProtobufCMessage *msg = NULL;
    if (tg_rpc_stream_recv(s, &msg, 3000, &st) != TG_RPC_RECV_END || st.code != TG_RPC_OK) {
      a->failures++;
    }
  }
  tg_rpc_stream_free(s); /* odd workers abandon their stream open */
  return NULL;
}

/* Many clients at once on one channel: unary calls and streams. */
static void test_concurrent_clients(void **state) {
  enum { N = 8 };
  tg_rpc_channel *ch = tcp_channel();
  pthread_t threads[N];
  worker_arg args[N];
  for (int i = 0; i < N; i++) {
    args[i] = (worker_arg){.ch = ch, .id = i};
    pthread_create(&threads[i], NULL, worker_main, &args[i]);
  }
  for (int i = 0; i < N; i++) {
    pthread_join(threads[i], NULL);
    assert_int_equal(args[i].failures, 0);
  }
  tg_rpc_channel_free(ch);
}

static void test_deferred_reply(void **state) {
  tg_rpc_channel *ch = tcp_channel();
  char text[64] = "";
  tg_rpc_status st;
  assert_int_equal(echo(ch, "later", 50, 5000, text, sizeof(text), &st), TG_RPC_OK);
  assert_string_equal(text, "later");
  join_deferred();
  assert_int_equal(atomic_load(&g_deferred_rc), 0);
  tg_rpc_channel_free(ch);
}

static void test_deadline_exceeded(void **state) {
  tg_rpc_channel *ch = tcp_channel();
  int cancelled = atomic_load(&g_done_cancelled);
  tg_rpc_status st;
  int64_t start = now_ms();
  assert_int_equal(echo(ch, "too slow", 400, 100, NULL, 0, &st), TG_RPC_DEADLINE_EXCEEDED);
  assert_true(now_ms() - start < 350);
  /* The server sees the call end as cancelled, and the late answer is refused. */
  assert_true(wait_atomic(&g_done_cancelled, cancelled + 1, 2000));
  join_deferred();
  assert_int_equal(atomic_load(&g_deferred_rc), -1);
  tg_rpc_channel_free(ch);
}

static void test_unknown_method(void **state) {
  tg_rpc_channel *ch = tcp_channel();
  EchoRequest req = TG__TEST__ECHO_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  tg_rpc_status st;
  int64_t start = now_ms();
  assert_int_equal(tg_rpc_unary(ch, "/tg.test.Echo/Nope", &req.base,
                                &tg__test__echo_reply__descriptor, &resp, NULL, &st),
                   TG_RPC_UNIMPLEMENTED);
  assert_true(now_ms() - start < 1000);
  assert_non_null(strstr(st.message, "/tg.test.Echo/Nope"));
  /* The same for a stream. */
  tg_rpc_stream *s =
      tg_rpc_stream_open(ch, "/tg.test.Nope/Stream", &tg__test__echo_reply__descriptor, NULL, &st);
  assert_non_null(s);
  assert_int_equal(recv_end(s, &st), TG_RPC_UNIMPLEMENTED);
  tg_rpc_stream_free(s);
  tg_rpc_channel_free(ch);
  assert_still_serving();
}

/* Sends raw bytes as one message with gRPC core, bypassing every check of
 * the library, and returns the status the server answered with. */
static grpc_status_code raw_call(const char *path, const void *bytes, size_t len) {
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", g_port);
  grpc_channel_credentials *creds = grpc_insecure_credentials_create();
  grpc_arg arg = {
      .type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, .value.integer = 64 << 20};
  grpc_channel_args args = {.num_args = 1, .args = &arg};
  grpc_channel *ch = grpc_channel_create(target, creds, &args);
  grpc_channel_credentials_release(creds);
  grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
  gpr_timespec deadline =
      gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(5000, GPR_TIMESPAN));
  grpc_call *call =
      grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                               grpc_slice_from_static_string(path), NULL, deadline, NULL);
  grpc_slice slice = grpc_slice_from_copied_buffer(bytes, len);
  grpc_byte_buffer *request = grpc_raw_byte_buffer_create(&slice, 1);
  grpc_slice_unref(slice);
  grpc_byte_buffer *response = NULL;
  grpc_metadata_array initial, trailing;
  grpc_metadata_array_init(&initial);
  grpc_metadata_array_init(&trailing);
  grpc_status_code status = GRPC_STATUS_OK;
  grpc_slice details;
  grpc_op ops[6];
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = request;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &response;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
  ops[5].data.recv_status_on_client.status = &status;
  ops[5].data.recv_status_on_client.status_details = &details;
  int tag;
  assert_int_equal(grpc_call_start_batch(call, ops, 6, &tag, NULL), GRPC_CALL_OK);
  grpc_event ev = grpc_completion_queue_pluck(
      cq, &tag, gpr_time_add(deadline, gpr_time_from_millis(5000, GPR_TIMESPAN)), NULL);
  assert_int_equal(ev.type, GRPC_OP_COMPLETE);
  if (response != NULL) grpc_byte_buffer_destroy(response);
  grpc_slice_unref(details);
  grpc_byte_buffer_destroy(request);
  grpc_metadata_array_destroy(&initial);
  grpc_metadata_array_destroy(&trailing);
  grpc_call_unref(call);
  grpc_completion_queue_shutdown(cq);
  grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  grpc_completion_queue_destroy(cq);
  grpc_channel_destroy(ch);
  return status;
}

static void test_hostile_garbage(void **state) {
  /* Field 1 (a string) claims 100 bytes and has 3; then a bad wire type. */
  static const unsigned char truncated[] = {0x0a, 0x64, 'a', 'b', 'c'};
  static const unsigned char bad_wire[] = {0x0f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  assert_int_equal(raw_call(UNARY, truncated, sizeof(truncated)), GRPC_STATUS_INVALID_ARGUMENT);
  assert_int_equal(raw_call(BIDI, bad_wire, sizeof(bad_wire)), GRPC_STATUS_INVALID_ARGUMENT);
  /* A unary call with no request at all. */
  assert_int_equal(raw_call(UNARY, "", 0), GRPC_STATUS_OK); /* empty = all defaults, valid */
  assert_still_serving();
}

static void test_hostile_oversized(void **state) {
  /* Over the method's own bound, which the library checks. */
  size_t len = UNARY_MAX_REQUEST_BYTES + 1000;
  unsigned char *big = calloc(1, SERVER_MAX_MESSAGE_BYTES * 2);
  EchoRequest req = TG__TEST__ECHO_REQUEST__INIT;
  req.text = "big";
  req.payload.data = big;
  req.payload.len = len;
  tg_rpc_channel *ch = tcp_channel();
  ProtobufCMessage *resp = NULL;
  tg_rpc_status st;
  assert_int_equal(
      tg_rpc_unary(ch, UNARY, &req.base, &tg__test__echo_reply__descriptor, &resp, NULL, &st),
      TG_RPC_RESOURCE_EXHAUSTED);
  assert_null(resp);

  /* Over the server's bound, which gRPC checks before we see a byte. */
  req.payload.len = SERVER_MAX_MESSAGE_BYTES + 1000;
  tg_rpc_stream *s = tg_rpc_stream_open(ch, BIDI, &tg__test__echo_reply__descriptor, NULL, &st);
  assert_non_null(s);
  tg_rpc_stream_send(s, &req.base, 2000);
  assert_int_equal(recv_end(s, &st), TG_RPC_RESOURCE_EXHAUSTED);
  tg_rpc_stream_free(s);

  /* Over the client's own bound: refused before sending. */
  tg_rpc_channel_config small = {.max_message_bytes = 1024};
  char err[128];
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", g_port);
  tg_rpc_channel *ch_small = tg_rpc_channel_new(target, &small, err, sizeof(err));
  assert_non_null(ch_small);
  req.payload.len = 2048;
  assert_int_equal(
      tg_rpc_unary(ch_small, UNARY, &req.base, &tg__test__echo_reply__descriptor, &resp, NULL, &st),
      TG_RPC_RESOURCE_EXHAUSTED);
  tg_rpc_channel_free(ch_small);
  free(big);
  tg_rpc_channel_free(ch);
  assert_still_serving();
}

static void test_hostile_cancel_mid_stream(void **state) {
  int cancelled = atomic_load(&g_done_cancelled);
  tg_rpc_channel *ch = tcp_channel();
  tg_rpc_status st;
  tg_rpc_stream *s = tg_rpc_stream_open(ch, BIDI, &tg__test__echo_reply__descriptor, NULL, &st);
  assert_non_null(s);
  assert_int_equal(send_echo(s, "one", 1), 0);
  recv_echo(s, "one", 1);
  tg_rpc_stream_cancel(s);
  assert_true(wait_atomic(&g_done_cancelled, cancelled + 1, 3000));
  assert_int_equal(recv_end(s, &st), TG_RPC_CANCELLED);
  assert_int_equal(send_echo(s, "two", 2), -1);
  tg_rpc_stream_free(s);

  /* Freeing a stream that is still open cancels it too. */
  s = tg_rpc_stream_open(ch, BIDI, &tg__test__echo_reply__descriptor, NULL, &st);
  assert_int_equal(send_echo(s, "three", 3), 0);
  recv_echo(s, "three", 3);
  tg_rpc_stream_free(s);
  assert_true(wait_atomic(&g_done_cancelled, cancelled + 2, 3000));
  tg_rpc_channel_free(ch);
  assert_still_serving();
}

/* A handler that sends faster than the client reads overflows the bounded
 * send queue; the call ends with RESOURCE_EXHAUSTED instead of buffering. */
static void test_send_queue_bound(void **state) {
  tg_rpc_server_config cfg = {.threads = 1, .max_queued_sends = 2};
  int port;
  tg_rpc_server *srv = start_echo_cfg(&cfg, "127.0.0.1:0", NULL, NULL, &port);
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", port);
  tg_rpc_channel *ch = channel_to(target, NULL);
  tg_rpc_status st;
  tg_rpc_stream *s =
      tg_rpc_stream_open(ch, SERVER_STREAM, &tg__test__echo_reply__descriptor, NULL, &st);
  assert_int_equal(send_echo(s, "flood", 1000), 0);
  assert_int_equal(tg_rpc_stream_close_send(s), 0);
  ProtobufCMessage *msg = NULL;
  int n = 0;
  tg_rpc_recv_result r;
  while ((r = tg_rpc_stream_recv(s, &msg, 3000, &st)) == TG_RPC_RECV_MESSAGE) {
    protobuf_c_message_free_unpacked(msg, NULL);
    n++;
  }
  assert_int_equal(r, TG_RPC_RECV_END);
  print_message("flood: %d messages, then %s: %s\n", n, tg_rpc_code_name(st.code), st.message);
  assert_true(n < 1000);
  assert_int_equal(st.code, TG_RPC_RESOURCE_EXHAUSTED);
  tg_rpc_stream_free(s);
  tg_rpc_channel_free(ch);
  tg_rpc_server_free(srv, 1000);
}

static void test_unavailable(void **state) {
  /* Nothing listens on the socket path that was never created. */
  char target[300];
  snprintf(target, sizeof(target), "unix:%s/nobody.sock", g_dir);
  tg_rpc_channel *ch = channel_to(target, NULL);
  int64_t start = now_ms();
  assert_int_equal(tg_rpc_channel_wait_ready(ch, 200), -1);
  tg_rpc_status st;
  assert_int_equal(echo(ch, "anyone?", 0, 2000, NULL, 0, &st), TG_RPC_UNAVAILABLE);
  assert_true(now_ms() - start < 2000);
  tg_rpc_channel_free(ch);
}

/* --------------------------------------------------------------- TLS */

/* A CA, server and client certificates (tests/harness/certs.h). */
static tg_test_certs g_certs;

static void test_tls(void **state) {
  tg_rpc_tls server_tls = {.cert_file = g_certs.server_cert, .key_file = g_certs.server_key};
  int port;
  tg_rpc_server *srv = start_echo("127.0.0.1:0", NULL, &server_tls, &port);
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", port);

  tg_rpc_tls client_tls = {.ca_file = g_certs.ca, .server_name = "localhost"};
  tg_rpc_channel *ch = channel_to(target, &client_tls);
  char text[64] = "";
  tg_rpc_status st;
  assert_int_equal(echo_when_ready(ch, "secret", 10000, text, sizeof(text), &st), TG_RPC_OK);
  assert_string_equal(text, "secret");
  tg_rpc_channel_free(ch);

  /* A plaintext client cannot talk to a TLS server. */
  ch = channel_to(target, NULL);
  assert_int_not_equal(echo(ch, "plain", 0, 2000, NULL, 0, &st), TG_RPC_OK);
  tg_rpc_channel_free(ch);

  /* A name the certificate does not carry is refused. */
  tg_rpc_tls wrong_name = {.ca_file = g_certs.ca, .server_name = "not-localhost"};
  ch = channel_to(target, &wrong_name);
  assert_int_equal(echo(ch, "who?", 0, 2000, NULL, 0, &st), TG_RPC_UNAVAILABLE);
  tg_rpc_channel_free(ch);
  tg_rpc_server_free(srv, 1000);

  /* Bad settings fail with a reason, not a crash. */
  char err[256] = "";
  tg_rpc_tls missing = {.ca_file = "/nonexistent/ca.pem"};
  tg_rpc_channel_config cfg = {.tls = &missing};
  assert_null(tg_rpc_channel_new(target, &cfg, err, sizeof(err)));
  assert_non_null(strstr(err, "/nonexistent/ca.pem"));
}

static void test_mutual_tls(void **state) {
  tg_rpc_tls server_tls = {.ca_file = g_certs.ca,
                           .cert_file = g_certs.server_cert,
                           .key_file = g_certs.server_key,
                           .require_client_cert = 1};
  int port;
  tg_rpc_server *srv = start_echo("127.0.0.1:0", NULL, &server_tls, &port);
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", port);

  tg_rpc_tls client_tls = {.ca_file = g_certs.ca,
                           .cert_file = g_certs.client_cert,
                           .key_file = g_certs.client_key,
                           .server_name = "localhost"};
  tg_rpc_channel *ch = channel_to(target, &client_tls);
  char text[64] = "";
  tg_rpc_status st;
  assert_int_equal(echo_when_ready(ch, "mutual", 10000, text, sizeof(text), &st), TG_RPC_OK);
  assert_string_equal(text, "mutual");
  tg_rpc_channel_free(ch);

  /* Without a client certificate the handshake is refused. */
  tg_rpc_tls anonymous = {.ca_file = g_certs.ca, .server_name = "localhost"};
  ch = channel_to(target, &anonymous);
  assert_int_equal(echo(ch, "let me in", 0, 2000, NULL, 0, &st), TG_RPC_UNAVAILABLE);
  tg_rpc_channel_free(ch);
  tg_rpc_server_free(srv, 1000);

  /* mTLS without a CA to check clients against is a configuration error. */
  char err[256] = "";
  tg_rpc_server *bad = tg_rpc_server_new(NULL, err, sizeof(err));
  tg_rpc_tls no_ca = {
      .cert_file = g_certs.server_cert, .key_file = g_certs.server_key, .require_client_cert = 1};
  assert_int_equal(tg_rpc_server_listen(bad, "127.0.0.1:0", &no_ca, err, sizeof(err)), -1);
  tg_rpc_server_free(bad, 0);
}

/* ----------------------------------------------------------- shutdown */

static void test_shutdown_with_open_streams(void **state) {
  int port;
  tg_rpc_server *srv = start_echo("127.0.0.1:0", NULL, NULL, &port);
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", port);
  tg_rpc_channel *ch = channel_to(target, NULL);
  enum { N = 4 };
  tg_rpc_stream *streams[N];
  tg_rpc_status st;
  for (int i = 0; i < N; i++) {
    streams[i] = tg_rpc_stream_open(ch, BIDI, &tg__test__echo_reply__descriptor, NULL, &st);
    assert_non_null(streams[i]);
    assert_int_equal(send_echo(streams[i], "open", i), 0);
    recv_echo(streams[i], "open", i);
  }
  int done = atomic_load(&g_done), cancelled = atomic_load(&g_done_cancelled);
  int64_t start = now_ms();
  tg_rpc_server_free(srv, 100);
  assert_true(now_ms() - start < 3000);
  assert_int_equal(atomic_load(&g_done), done + N);
  assert_int_equal(atomic_load(&g_done_cancelled), cancelled + N);
  for (int i = 0; i < N; i++) {
    assert_int_not_equal(recv_end(streams[i], &st), TG_RPC_OK);
    tg_rpc_stream_free(streams[i]);
  }
  tg_rpc_channel_free(ch);
}

static void test_shutdown_deferred_call(void **state) {
  /* A handler thread still holds a call when the server goes away. */
  int port;
  tg_rpc_server *srv = start_echo("127.0.0.1:0", NULL, NULL, &port);
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", port);
  tg_rpc_channel *ch = channel_to(target, NULL);
  EchoRequest req = TG__TEST__ECHO_REQUEST__INIT;
  req.text = "pending";
  req.delay_ms = 300;
  tg_rpc_stream *s = tg_rpc_stream_open(ch, UNARY, &tg__test__echo_reply__descriptor, NULL, NULL);
  assert_int_equal(tg_rpc_stream_send(s, &req.base, 2000), 0);
  assert_int_equal(tg_rpc_stream_close_send(s), 0);
  sleep_ms(50); /* let it reach the handler */
  tg_rpc_server_free(srv, 0);
  join_deferred();
  assert_int_equal(atomic_load(&g_deferred_rc), -1);
  tg_rpc_status st;
  assert_int_not_equal(recv_end(s, &st), TG_RPC_OK);
  tg_rpc_stream_free(s);
  tg_rpc_channel_free(ch);
}

static void test_server_never_started(void **state) {
  char err[256];
  tg_rpc_server *srv = tg_rpc_server_new(NULL, err, sizeof(err));
  assert_non_null(srv);
  tg_rpc_server_free(srv, 0);
  srv = tg_rpc_server_new(NULL, err, sizeof(err));
  assert_int_equal(tg_rpc_server_register(srv, &echo_methods[0]), 0);
  assert_true(tg_rpc_server_listen(srv, "127.0.0.1:0", NULL, err, sizeof(err)) > 0);
  assert_int_equal(tg_rpc_server_listen(srv, "256.1.1.1:1", NULL, err, sizeof(err)), -1);
  tg_rpc_server_free(srv, 0);
  tg_rpc_server_free(NULL, 0);
}

/* ------------------------------------------------------------------ main */

static int setup(void **state) {
  const char *tmp = getenv("TEST_TMPDIR");
  /* Unix socket paths are limited to 107 bytes; Bazel's can be longer. */
  if (tmp != NULL && strlen(tmp) < 60) {
    snprintf(g_dir, sizeof(g_dir), "%s/rpcXXXXXX", tmp);
  } else {
    snprintf(g_dir, sizeof(g_dir), "/tmp/tg-rpc-test-XXXXXX");
  }
  if (mkdtemp(g_dir) == NULL) return -1;
  char err[512];
  if (tg_test_make_certs(&g_certs, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  char unix_addr[300];
  snprintf(unix_addr, sizeof(unix_addr), "unix:%s/rpc.sock", g_dir);
  snprintf(g_unix_target, sizeof(g_unix_target), "%s", unix_addr);
  g_server = start_echo("127.0.0.1:0", unix_addr, NULL, &g_port);
  return 0;
}

static int teardown(void **state) {
  tg_rpc_server_free(g_server, 1000);
  join_deferred();
  char cmd[400];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
  return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
  grpc_init(); /* keeps gRPC up between tests instead of restarting it each time */
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_status),
      cmocka_unit_test(test_unary_tcp),
      cmocka_unit_test(test_unary_unix),
      cmocka_unit_test(test_server_stream),
      cmocka_unit_test(test_payload_sent_many_times),
      cmocka_unit_test(test_client_stream),
      cmocka_unit_test(test_bidi_ping_pong),
      cmocka_unit_test(test_bidi_concurrent_send_recv),
      cmocka_unit_test(test_concurrent_clients),
      cmocka_unit_test(test_deferred_reply),
      cmocka_unit_test(test_deadline_exceeded),
      cmocka_unit_test(test_unknown_method),
      cmocka_unit_test(test_hostile_garbage),
      cmocka_unit_test(test_hostile_oversized),
      cmocka_unit_test(test_hostile_cancel_mid_stream),
      cmocka_unit_test(test_send_queue_bound),
      cmocka_unit_test(test_unavailable),
      cmocka_unit_test(test_tls),
      cmocka_unit_test(test_mutual_tls),
      cmocka_unit_test(test_shutdown_with_open_streams),
      cmocka_unit_test(test_shutdown_deferred_call),
      cmocka_unit_test(test_server_never_started),
  };
  int failed = cmocka_run_group_tests(tests, setup, teardown);
  grpc_shutdown();
  return failed;
}
