/* The server half of common/rpc: an event-driven gRPC server.
 *
 * Daemons hold thousands of long-lived streams (agent heartbeats, trainer
 * connections), so a call costs a struct, not a thread. One completion
 * queue carries every event of the server; cfg->threads handler threads
 * take events from it and run the method's callbacks.
 *
 * Arrival: each registered method always has one grpc_server_request_
 * registered_call outstanding, re-armed as soon as a call arrives; one
 * grpc_server_request_call catches every other path and answers it with
 * UNIMPLEMENTED at once (gRPC would otherwise leave it hanging until the
 * client's deadline).
 *
 * A call (struct tg_rpc_call) runs three kinds of gRPC batch, each with its
 * own tag inside the struct:
 *   close  RECV_CLOSE_ON_SERVER, started on arrival; it completes when the
 *          call is over for any reason and tells us whether it was
 *          cancelled. It is what produces on_done.
 *   recv   one RECV_MESSAGE at a time. The next is started only after
 *          on_message returns, so a fast client cannot queue messages in
 *          our memory. Each message is bounded and must decode, or the
 *          call ends with RESOURCE_EXHAUSTED / INVALID_ARGUMENT.
 *   send   one batch in flight; further responses wait in a bounded queue.
 *          The finish (status, with an optional last message) goes through
 *          the same queue so it follows the messages sent before it.
 *
 * Callbacks for one call never run at the same time: an event (start,
 * message, half-close, done) is appended to the call's small queue, and
 * whichever thread finds the queue idle drains it. At most one event of
 * each kind can be queued, so the events live inside the call struct.
 *
 * A call's gRPC resources are released once on_done has returned and no
 * batch is pending; its memory once the last tg_rpc_call_ref is dropped. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log/log.h"
#include "common/rpc/rpc_internal.h"

#define DEFAULT_HANDLER_THREADS 2

typedef enum {
  TAG_REQUEST,         /* a registered method's call arrived */
  TAG_UNKNOWN_REQUEST, /* a call to an unknown method arrived */
  TAG_UNIMPLEMENTED,   /* the UNIMPLEMENTED answer is done */
  TAG_CALL_RECV,
  TAG_CALL_SEND,
  TAG_CALL_CLOSE,
  TAG_SHUTDOWN,
} tag_kind;

typedef struct {
  tag_kind kind;
  void *owner;
} tag;

/* One outstanding request for a registered method. */
typedef struct {
  tag tag;
  const tg_rpc_method *method;
  void *handle;
  grpc_call *call;
  gpr_timespec deadline;
  grpc_metadata_array metadata;
} method_slot;

/* A call to an unknown method, being answered with UNIMPLEMENTED. */
typedef struct {
  tag tag;
  tg_rpc_server *srv;
  grpc_call *call;
  int cancelled;
} unimplemented_call;

typedef struct send_item {
  struct send_item *next;
  grpc_byte_buffer *message; /* may be NULL for a bare status */
  int has_status;
  grpc_status_code status;
  grpc_slice details;
} send_item;

typedef enum { EV_START, EV_MESSAGE, EV_HALF_CLOSE, EV_DONE } event_kind;

typedef struct event {
  struct event *next;
  event_kind kind;
  ProtobufCMessage *message; /* EV_MESSAGE */
  int cancelled;             /* EV_DONE */
} event;

struct tg_rpc_server {
  grpc_server *server;
  grpc_completion_queue *cq;
  size_t max_message_bytes;
  size_t max_queued_sends;
  int n_threads;

  method_slot **slots;
  size_t n_slots;

  tag unknown_tag;
  grpc_call *unknown_call;
  grpc_call_details unknown_details;
  grpc_metadata_array unknown_metadata;

  tag shutdown_tag;
  pthread_t *threads;
  int threads_running;
  int started;

  pthread_mutex_t mu; /* guards the fields below */
  pthread_cond_t cv;
  int shutting_down;
  int shutdown_done;
  size_t live_calls;    /* calls whose gRPC resources are not yet released */
  int64_t peer_warn_ms; /* when the last warning about a client was logged */
  int peer_warn_suppressed;
};

struct tg_rpc_call {
  tg_rpc_server *srv; /* NULL once released */
  const tg_rpc_method *method;
  size_t max_request_bytes;
  size_t max_response_bytes;
  size_t max_queued_sends;
  grpc_call *call;
  gpr_timespec deadline;
  grpc_metadata_array metadata;
  char *peer;
  tag tag_recv, tag_send, tag_close;
  int close_cancelled;           /* written by gRPC when close completes */
  grpc_byte_buffer *recv_buffer; /* written by gRPC when recv completes */

  pthread_mutex_t mu; /* guards everything below */
  int refs;           /* user refs, plus one until released */
  int pending;        /* batches started and not completed */
  int released;
  void *data;

  event *ev_head, *ev_tail;
  event ev_start, ev_message, ev_half_close, ev_done;
  int draining;
  int done_queued;
  int done_delivered;

  int n_messages;
  int recv_stopped;

  int ended;            /* accepts no more sends or finish */
  int handler_finished; /* the handler's finish was accepted */
  int initial_metadata_sent;
  send_item *inflight;
  send_item *queue_head, *queue_tail;
  size_t queued;
};

static void process_event(tg_rpc_server *srv, void *tag_ptr, int success);

/* Whether a warning about a misbehaving client may be logged now: at most
 * one a second per server, so a hostile client cannot flood the log. */
static int may_warn_about_peer(tg_rpc_server *srv, int *suppressed) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  int64_t now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
  pthread_mutex_lock(&srv->mu);
  int ok = srv->peer_warn_ms == 0 || now_ms - srv->peer_warn_ms >= 1000;
  if (ok) {
    srv->peer_warn_ms = now_ms;
    *suppressed = srv->peer_warn_suppressed;
    srv->peer_warn_suppressed = 0;
  } else {
    srv->peer_warn_suppressed++;
  }
  pthread_mutex_unlock(&srv->mu);
  return ok;
}

/* ------------------------------------------------------------ call state */

static int single_request(const tg_rpc_method *m) {
  return m->kind == TG_RPC_UNARY || m->kind == TG_RPC_SERVER_STREAM;
}

static void free_send_item(send_item *item) {
  if (item == NULL) return;
  if (item->message != NULL) grpc_byte_buffer_destroy(item->message);
  grpc_slice_unref(item->details);
  free(item);
}

static void drop_queue_locked(tg_rpc_call *c) {
  while (c->queue_head != NULL) {
    send_item *item = c->queue_head;
    c->queue_head = item->next;
    free_send_item(item);
  }
  c->queue_tail = NULL;
  c->queued = 0;
}

static void post_locked(tg_rpc_call *c, event *ev) {
  if (c->done_queued) {
    if (ev->message != NULL) protobuf_c_message_free_unpacked(ev->message, NULL);
    ev->message = NULL;
    return;
  }
  if (ev->kind == EV_DONE) c->done_queued = 1;
  ev->next = NULL;
  if (c->ev_tail != NULL) {
    c->ev_tail->next = ev;
  } else {
    c->ev_head = ev;
  }
  c->ev_tail = ev;
}

static void start_send_locked(tg_rpc_call *c, send_item *item) {
  grpc_op ops[3];
  size_t n = 0;
  memset(ops, 0, sizeof(ops));
  if (!c->initial_metadata_sent) ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  if (item->message != NULL) {
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = item->message;
  }
  if (item->has_status) {
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = item->status;
    ops[n++].data.send_status_from_server.status_details = &item->details;
  }
  grpc_call_error err = grpc_call_start_batch(c->call, ops, n, &c->tag_send, NULL);
  if (err != GRPC_CALL_OK) {
    TG_ERROR("rpc %s: cannot start a send (gRPC error %d); cancelling the call", c->method->path,
             (int)err);
    free_send_item(item);
    c->ended = 1;
    drop_queue_locked(c);
    grpc_call_cancel(c->call, NULL);
    return;
  }
  c->initial_metadata_sent = 1;
  c->inflight = item;
  c->pending++;
}

/* Appends an item to the send queue, or sends it now if nothing is in flight. */
static void enqueue_send_locked(tg_rpc_call *c, send_item *item) {
  if (c->inflight == NULL) {
    start_send_locked(c, item);
    return;
  }
  item->next = NULL;
  if (c->queue_tail != NULL) {
    c->queue_tail->next = item;
  } else {
    c->queue_head = item;
  }
  c->queue_tail = item;
  c->queued++;
}

static send_item *new_send_item(grpc_byte_buffer *message, int has_status, grpc_status_code code,
                                const char *details) {
  send_item *item = calloc(1, sizeof(*item));
  if (item == NULL) return NULL;
  item->message = message;
  item->has_status = has_status;
  item->status = code;
  item->details =
      has_status && details != NULL ? grpc_slice_from_copied_string(details) : grpc_empty_slice();
  return item;
}

/* Ends the call on the server's own account (bad request, handler error):
 * queued responses are dropped and the status is sent. The handler then
 * sees on_done(cancelled=1). */
static void end_call_locked(tg_rpc_call *c, tg_rpc_code code, const char *why) {
  if (c->ended) return;
  c->ended = 1;
  c->recv_stopped = 1;
  drop_queue_locked(c);
  /* A send in flight may never complete if the client does not read, so
   * the status cannot wait behind it: cancel, which on a server call still
   * sends the status to the client. */
  send_item *item =
      c->inflight == NULL ? new_send_item(NULL, 1, (grpc_status_code)code, why) : NULL;
  if (item == NULL) {
    grpc_call_cancel_with_status(c->call, (grpc_status_code)code, why, NULL);
    return;
  }
  enqueue_send_locked(c, item);
}

static void start_recv_locked(tg_rpc_call *c) {
  if (c->recv_stopped || c->ended || c->done_queued) return;
  grpc_op op;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &c->recv_buffer;
  grpc_call_error err = grpc_call_start_batch(c->call, &op, 1, &c->tag_recv, NULL);
  if (err != GRPC_CALL_OK) {
    TG_ERROR("rpc %s: cannot start a receive (gRPC error %d)", c->method->path, (int)err);
    c->recv_stopped = 1;
    end_call_locked(c, TG_RPC_INTERNAL, "server could not receive");
    return;
  }
  c->pending++;
}

static void run_event(tg_rpc_call *c, event *ev) {
  const tg_rpc_method *m = c->method;
  switch (ev->kind) {
    case EV_START:
      if (m->on_start != NULL) m->on_start(c, m->user);
      break;
    case EV_MESSAGE:
      m->on_message(c, ev->message, m->user);
      protobuf_c_message_free_unpacked(ev->message, NULL);
      ev->message = NULL;
      break;
    case EV_HALF_CLOSE:
      if (m->on_half_close != NULL) m->on_half_close(c, m->user);
      break;
    case EV_DONE:
      if (m->on_done != NULL) m->on_done(c, ev->cancelled, m->user);
      break;
  }
}

/* Runs queued callbacks; called with c->mu held and c->draining set by
 * the caller, returns with c->mu held. */
static void drain_locked(tg_rpc_call *c) {
  event *ev;
  while ((ev = c->ev_head) != NULL) {
    c->ev_head = ev->next;
    if (c->ev_head == NULL) c->ev_tail = NULL;
    pthread_mutex_unlock(&c->mu);
    run_event(c, ev);
    pthread_mutex_lock(&c->mu);
    if (ev->kind == EV_MESSAGE) start_recv_locked(c);
    if (ev->kind == EV_DONE) c->done_delivered = 1;
  }
}

static void call_unref_memory(tg_rpc_call *c) {
  pthread_mutex_lock(&c->mu);
  int refs = --c->refs;
  pthread_mutex_unlock(&c->mu);
  if (refs > 0) return;
  gpr_free(c->peer);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

/* Gives the call's gRPC resources back and tells the server it is gone. */
static void call_release(tg_rpc_call *c) {
  tg_rpc_server *srv = c->srv;
  grpc_call_unref(c->call);
  c->call = NULL;
  grpc_metadata_array_destroy(&c->metadata);
  if (c->recv_buffer != NULL) grpc_byte_buffer_destroy(c->recv_buffer);
  c->recv_buffer = NULL;
  free_send_item(c->inflight);
  c->inflight = NULL;
  drop_queue_locked(c);
  c->srv = NULL;
  pthread_mutex_lock(&srv->mu);
  srv->live_calls--;
  pthread_cond_broadcast(&srv->cv);
  pthread_mutex_unlock(&srv->mu);
  call_unref_memory(c);
}

/* Common tail of every event on a call: run callbacks if nobody else is,
 * release the call when it is over, and drop c->mu. */
static void settle_and_unlock(tg_rpc_call *c) {
  if (!c->draining && c->ev_head != NULL) {
    c->draining = 1;
    drain_locked(c);
    c->draining = 0;
  }
  int release = !c->released && !c->draining && c->done_delivered && c->pending == 0;
  if (release) c->released = 1;
  pthread_mutex_unlock(&c->mu);
  if (release) call_release(c);
}

/* ---------------------------------------------------------- call events */

static void on_recv(tg_rpc_call *c, int success) {
  /* Decoding happens outside the lock; only taking the buffer needs it. */
  pthread_mutex_lock(&c->mu);
  grpc_byte_buffer *buf = c->recv_buffer;
  c->recv_buffer = NULL;
  pthread_mutex_unlock(&c->mu);
  ProtobufCMessage *msg = NULL;
  tg_rpc_status st = {TG_RPC_OK, ""};
  if (success && buf != NULL) {
    tg_rpc_unpack_message(buf, c->method->request, c->max_request_bytes, TG_RPC_INVALID_ARGUMENT,
                          &msg, &st);
    grpc_byte_buffer_destroy(buf);
  }
  pthread_mutex_lock(&c->mu);
  c->pending--;
  if (!success) {
    c->recv_stopped = 1;
  } else if (buf != NULL) {
    if (st.code != TG_RPC_OK) {
      int suppressed;
      if (may_warn_about_peer(c->srv, &suppressed)) {
        TG_WARN("rpc %s from %s: %s; ending the call with %s (%d similar not logged)",
                c->method->path, c->peer, st.message, tg_rpc_code_name(st.code), suppressed);
      }
      end_call_locked(c, st.code, st.message);
    } else if (single_request(c->method) && c->n_messages > 0) {
      protobuf_c_message_free_unpacked(msg, NULL);
      end_call_locked(c, TG_RPC_INVALID_ARGUMENT, "more than one request message on a unary call");
    } else {
      c->n_messages++;
      c->ev_message.message = msg;
      post_locked(c, &c->ev_message);
    }
  } else {
    c->recv_stopped = 1;
    if (single_request(c->method) && c->n_messages == 0) {
      end_call_locked(c, TG_RPC_INVALID_ARGUMENT, "the client sent no request message");
    } else {
      post_locked(c, &c->ev_half_close);
    }
  }
  settle_and_unlock(c);
}

static void on_send(tg_rpc_call *c, int success) {
  pthread_mutex_lock(&c->mu);
  c->pending--;
  free_send_item(c->inflight);
  c->inflight = NULL;
  if (!success) {
    c->ended = 1;
    drop_queue_locked(c);
  } else if (c->queue_head != NULL) {
    send_item *item = c->queue_head;
    c->queue_head = item->next;
    if (c->queue_head == NULL) c->queue_tail = NULL;
    c->queued--;
    start_send_locked(c, item);
  }
  settle_and_unlock(c);
}

static void on_close(tg_rpc_call *c) {
  pthread_mutex_lock(&c->mu);
  c->pending--;
  c->ended = 1;
  c->recv_stopped = 1;
  drop_queue_locked(c);
  c->ev_done.cancelled = c->close_cancelled || !c->handler_finished;
  post_locked(c, &c->ev_done);
  settle_and_unlock(c);
}

/* A registered method's call arrived: build its state, start the close and
 * the first receive, and run on_start. */
static void start_call(tg_rpc_server *srv, method_slot *slot) {
  const tg_rpc_method *m = slot->method;
  tg_rpc_call *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    grpc_call_cancel_with_status(slot->call, GRPC_STATUS_RESOURCE_EXHAUSTED, "server out of memory",
                                 NULL);
    grpc_call_unref(slot->call);
    grpc_metadata_array_destroy(&slot->metadata);
    grpc_metadata_array_init(&slot->metadata);
    return;
  }
  pthread_mutex_init(&c->mu, NULL);
  c->srv = srv;
  c->method = m;
  c->max_request_bytes = srv->max_message_bytes;
  if (m->max_request_bytes != 0 && m->max_request_bytes < c->max_request_bytes) {
    c->max_request_bytes = m->max_request_bytes;
  }
  c->max_response_bytes = srv->max_message_bytes;
  c->max_queued_sends = srv->max_queued_sends;
  c->call = slot->call;
  c->deadline = slot->deadline;
  c->metadata = slot->metadata; /* moved to the call */
  grpc_metadata_array_init(&slot->metadata);
  c->peer = grpc_call_get_peer(c->call);
  c->refs = 1;
  c->tag_recv = (tag){TAG_CALL_RECV, c};
  c->tag_send = (tag){TAG_CALL_SEND, c};
  c->tag_close = (tag){TAG_CALL_CLOSE, c};
  c->ev_start.kind = EV_START;
  c->ev_message.kind = EV_MESSAGE;
  c->ev_half_close.kind = EV_HALF_CLOSE;
  c->ev_done.kind = EV_DONE;

  pthread_mutex_lock(&srv->mu);
  srv->live_calls++;
  pthread_mutex_unlock(&srv->mu);

  pthread_mutex_lock(&c->mu);
  post_locked(c, &c->ev_start);
  grpc_op op;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  op.data.recv_close_on_server.cancelled = &c->close_cancelled;
  grpc_call_error err = grpc_call_start_batch(c->call, &op, 1, &c->tag_close, NULL);
  if (err != GRPC_CALL_OK) {
    /* Without the close batch nothing would ever end this call. */
    TG_ERROR("rpc %s: cannot watch the call (gRPC error %d)", m->path, (int)err);
    c->ended = c->recv_stopped = 1;
    grpc_call_cancel(c->call, NULL);
    c->ev_done.cancelled = 1;
    post_locked(c, &c->ev_done);
  } else {
    c->pending++;
    start_recv_locked(c);
  }
  settle_and_unlock(c);
}

/* -------------------------------------------------------------- arrivals */

static void arm_slot(tg_rpc_server *srv, method_slot *slot) {
  pthread_mutex_lock(&srv->mu);
  if (!srv->shutting_down) {
    slot->call = NULL;
    grpc_call_error err =
        grpc_server_request_registered_call(srv->server, slot->handle, &slot->call, &slot->deadline,
                                            &slot->metadata, NULL, srv->cq, srv->cq, &slot->tag);
    if (err != GRPC_CALL_OK) {
      TG_ERROR("rpc %s: cannot wait for calls (gRPC error %d)", slot->method->path, (int)err);
    }
  }
  pthread_mutex_unlock(&srv->mu);
}

static void arm_unknown(tg_rpc_server *srv) {
  pthread_mutex_lock(&srv->mu);
  if (!srv->shutting_down) {
    srv->unknown_call = NULL;
    grpc_call_error err =
        grpc_server_request_call(srv->server, &srv->unknown_call, &srv->unknown_details,
                                 &srv->unknown_metadata, srv->cq, srv->cq, &srv->unknown_tag);
    if (err != GRPC_CALL_OK)
      TG_ERROR("rpc: cannot wait for unknown calls (gRPC error %d)", (int)err);
  }
  pthread_mutex_unlock(&srv->mu);
}

static void answer_unimplemented(tg_rpc_server *srv, grpc_call *call, grpc_slice method) {
  unimplemented_call *u = calloc(1, sizeof(*u));
  if (u == NULL) {
    grpc_call_cancel_with_status(call, GRPC_STATUS_UNIMPLEMENTED, "unknown method", NULL);
    grpc_call_unref(call);
    return;
  }
  u->tag = (tag){TAG_UNIMPLEMENTED, u};
  u->srv = srv;
  u->call = call;
  char text[200];
  snprintf(text, sizeof(text), "unknown method %.*s",
           (int)GRPC_SLICE_LENGTH(method) > 150 ? 150 : (int)GRPC_SLICE_LENGTH(method),
           (const char *)GRPC_SLICE_START_PTR(method));
  grpc_slice details = grpc_slice_from_copied_string(text);
  grpc_op ops[3];
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[1].data.send_status_from_server.status = GRPC_STATUS_UNIMPLEMENTED;
  ops[1].data.send_status_from_server.status_details = &details;
  ops[2].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[2].data.recv_close_on_server.cancelled = &u->cancelled;
  pthread_mutex_lock(&srv->mu);
  srv->live_calls++;
  pthread_mutex_unlock(&srv->mu);
  grpc_call_error err = grpc_call_start_batch(call, ops, 3, &u->tag, NULL);
  grpc_slice_unref(details);
  if (err != GRPC_CALL_OK) {
    grpc_call_cancel(call, NULL);
    process_event(srv, &u->tag, 0);
  }
}

static void process_event(tg_rpc_server *srv, void *tag_ptr, int success) {
  tag *t = tag_ptr;
  switch (t->kind) {
    case TAG_REQUEST: {
      method_slot *slot = t->owner;
      if (success) {
        start_call(srv, slot);
        arm_slot(srv, slot);
      }
      break;
    }
    case TAG_UNKNOWN_REQUEST:
      if (success) answer_unimplemented(srv, srv->unknown_call, srv->unknown_details.method);
      grpc_call_details_destroy(&srv->unknown_details);
      grpc_metadata_array_destroy(&srv->unknown_metadata);
      grpc_call_details_init(&srv->unknown_details);
      grpc_metadata_array_init(&srv->unknown_metadata);
      if (success) arm_unknown(srv);
      break;
    case TAG_UNIMPLEMENTED: {
      unimplemented_call *u = t->owner;
      grpc_call_unref(u->call);
      free(u);
      pthread_mutex_lock(&srv->mu);
      srv->live_calls--;
      pthread_cond_broadcast(&srv->cv);
      pthread_mutex_unlock(&srv->mu);
      break;
    }
    case TAG_CALL_RECV:
      on_recv(t->owner, success);
      break;
    case TAG_CALL_SEND:
      on_send(t->owner, success);
      break;
    case TAG_CALL_CLOSE:
      on_close(t->owner);
      break;
    case TAG_SHUTDOWN:
      pthread_mutex_lock(&srv->mu);
      srv->shutdown_done = 1;
      pthread_cond_broadcast(&srv->cv);
      pthread_mutex_unlock(&srv->mu);
      break;
  }
}

static void *handler_main(void *arg) {
  tg_rpc_server *srv = arg;
  for (;;) {
    /* Waits without a deadline on purpose: tg_rpc_server_free shuts the
     * queue down, which wakes every thread. */
    grpc_event ev = grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    if (ev.type == GRPC_OP_COMPLETE) process_event(srv, ev.tag, ev.success);
  }
  return NULL;
}

/* ----------------------------------------------------------------- server */

tg_rpc_server *tg_rpc_server_new(const tg_rpc_server_config *cfg, char *err, size_t errlen) {
  static const tg_rpc_server_config defaults = {0};
  if (cfg == NULL) cfg = &defaults;
  if (cfg->threads < 0 || cfg->threads > 256) {
    snprintf(err, errlen, "handler threads must be 0..256, not %d", cfg->threads);
    return NULL;
  }
  tg_rpc_server *srv = calloc(1, sizeof(*srv));
  if (srv == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  grpc_init();
  srv->n_threads = cfg->threads ? cfg->threads : DEFAULT_HANDLER_THREADS;
  srv->max_message_bytes =
      cfg->max_message_bytes ? cfg->max_message_bytes : TG_RPC_DEFAULT_MAX_MESSAGE_BYTES;
  if (srv->max_message_bytes > INT32_MAX) srv->max_message_bytes = INT32_MAX;
  srv->max_queued_sends =
      cfg->max_queued_sends ? cfg->max_queued_sends : TG_RPC_DEFAULT_MAX_QUEUED_SENDS;
  srv->unknown_tag = (tag){TAG_UNKNOWN_REQUEST, srv};
  srv->shutdown_tag = (tag){TAG_SHUTDOWN, srv};
  grpc_call_details_init(&srv->unknown_details);
  grpc_metadata_array_init(&srv->unknown_metadata);
  pthread_mutex_init(&srv->mu, NULL);
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&srv->cv, &attr);
  pthread_condattr_destroy(&attr);

  grpc_arg args[4];
  memset(args, 0, sizeof(args));
  args[0].type = GRPC_ARG_INTEGER;
  args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
  args[0].value.integer = (int)srv->max_message_bytes;
  /* Identity only: a compressed request could inflate past every bound. */
  args[1].type = GRPC_ARG_INTEGER;
  args[1].key = GRPC_COMPRESSION_CHANNEL_ENABLED_ALGORITHMS_BITSET;
  args[1].value.integer = 1;
  /* Two daemons must not share a port by accident. */
  args[2].type = GRPC_ARG_INTEGER;
  args[2].key = GRPC_ARG_ALLOW_REUSEPORT;
  args[2].value.integer = 0;
  /* Let clients keep long streams alive with pings every second or more
   * (see keepalive_ms); faster pingers are still cut off by gRPC. */
  args[3].type = GRPC_ARG_INTEGER;
  args[3].key = GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS;
  args[3].value.integer = 1000;
  grpc_channel_args channel_args = {.num_args = 4, .args = args};
  srv->server = grpc_server_create(&channel_args, NULL);
  srv->cq = grpc_completion_queue_create_for_next(NULL);
  grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
  return srv;
}

int tg_rpc_server_register(tg_rpc_server *srv, const tg_rpc_method *method) {
  if (srv == NULL || method == NULL || method->path == NULL || method->path[0] != '/' ||
      method->request == NULL || method->response == NULL || method->on_message == NULL ||
      srv->started) {
    return -1;
  }
  for (size_t i = 0; i < srv->n_slots; i++) {
    if (strcmp(srv->slots[i]->method->path, method->path) == 0) return -1;
  }
  method_slot **slots = realloc(srv->slots, (srv->n_slots + 1) * sizeof(*slots));
  if (slots == NULL) return -1;
  srv->slots = slots;
  method_slot *slot = calloc(1, sizeof(*slot));
  if (slot == NULL) return -1;
  slot->handle =
      grpc_server_register_method(srv->server, method->path, NULL, GRPC_SRM_PAYLOAD_NONE, 0);
  if (slot->handle == NULL) {
    free(slot);
    return -1;
  }
  slot->tag = (tag){TAG_REQUEST, slot};
  slot->method = method;
  grpc_metadata_array_init(&slot->metadata);
  srv->slots[srv->n_slots++] = slot;
  return 0;
}

int tg_rpc_server_listen(tg_rpc_server *srv, const char *address, const tg_rpc_tls *tls, char *err,
                         size_t errlen) {
  if (srv == NULL || address == NULL || srv->started) {
    snprintf(err, errlen, "listen: no server, no address, or already started");
    return -1;
  }
  grpc_server_credentials *creds = tg_rpc_server_creds(tls, err, errlen);
  if (creds == NULL) return -1;
  int port = grpc_server_add_http2_port(srv->server, address, creds);
  grpc_server_credentials_release(creds);
  if (port <= 0) {
    snprintf(err, errlen, "cannot listen on %s (address in use or not valid?)", address);
    return -1;
  }
  return strncmp(address, "unix:", 5) == 0 ? 0 : port;
}

int tg_rpc_server_start(tg_rpc_server *srv, char *err, size_t errlen) {
  if (srv == NULL || srv->started) {
    snprintf(err, errlen, "start: no server or already started");
    return -1;
  }
  srv->threads = calloc((size_t)srv->n_threads, sizeof(pthread_t));
  if (srv->threads == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  grpc_server_start(srv->server);
  srv->started = 1;
  for (size_t i = 0; i < srv->n_slots; i++) arm_slot(srv, srv->slots[i]);
  arm_unknown(srv);
  for (int i = 0; i < srv->n_threads; i++) {
    if (pthread_create(&srv->threads[i], NULL, handler_main, srv) != 0) {
      snprintf(err, errlen, "cannot start handler thread %d of %d", i + 1, srv->n_threads);
      return -1;
    }
    srv->threads_running++;
  }
  return 0;
}

/* Waits until every call is released and gRPC reported the shutdown, or
 * until `deadline` (CLOCK_MONOTONIC). Without handler threads this thread
 * takes the events itself. Returns 1 when done. */
static int wait_quiet(tg_rpc_server *srv, const struct timespec *deadline) {
  for (;;) {
    pthread_mutex_lock(&srv->mu);
    int done = srv->live_calls == 0 && srv->shutdown_done;
    if (!done && srv->threads_running > 0) {
      pthread_cond_timedwait(&srv->cv, &srv->mu, deadline);
      done = srv->live_calls == 0 && srv->shutdown_done;
    }
    pthread_mutex_unlock(&srv->mu);
    if (done) return 1;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec > deadline->tv_sec ||
        (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec)) {
      return 0;
    }
    if (srv->threads_running == 0) {
      grpc_event ev = grpc_completion_queue_next(srv->cq, tg_rpc_deadline_after_ms(100), NULL);
      if (ev.type == GRPC_OP_COMPLETE) process_event(srv, ev.tag, ev.success);
    }
  }
}

static struct timespec monotonic_after_ms(int64_t ms) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  if (ms < 0) ms = 0;
  if (ms > 86400000) ms = 86400000;
  t.tv_sec += ms / 1000;
  t.tv_nsec += (ms % 1000) * 1000000;
  if (t.tv_nsec >= 1000000000) {
    t.tv_sec++;
    t.tv_nsec -= 1000000000;
  }
  return t;
}

void tg_rpc_server_free(tg_rpc_server *srv, int64_t grace_ms) {
  if (srv == NULL) return;
  pthread_mutex_lock(&srv->mu);
  srv->shutting_down = 1;
  pthread_mutex_unlock(&srv->mu);

  /* Stop accepting; give calls in flight the grace period to finish. */
  grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);
  struct timespec deadline = monotonic_after_ms(grace_ms);
  if (!wait_quiet(srv, &deadline)) {
    grpc_server_cancel_all_calls(srv->server);
    /* Cancelled calls end promptly unless a handler callback is stuck;
     * memory safety needs every call released, so keep waiting, loudly. */
    for (int waited_s = 5;; waited_s += 5) {
      deadline = monotonic_after_ms(5000);
      if (wait_quiet(srv, &deadline)) break;
      pthread_mutex_lock(&srv->mu);
      size_t live = srv->live_calls;
      pthread_mutex_unlock(&srv->mu);
      TG_WARN("rpc server shutdown: %zu calls still open after %d s; is a handler blocked?", live,
              waited_s);
    }
  }

  grpc_server_destroy(srv->server);
  grpc_completion_queue_shutdown(srv->cq);
  if (srv->threads_running > 0) {
    for (int i = 0; i < srv->threads_running; i++) pthread_join(srv->threads[i], NULL);
  } else {
    for (;;) {
      grpc_event ev =
          grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
      if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
      if (ev.type == GRPC_OP_COMPLETE) process_event(srv, ev.tag, ev.success);
    }
  }
  grpc_completion_queue_destroy(srv->cq);

  for (size_t i = 0; i < srv->n_slots; i++) {
    grpc_metadata_array_destroy(&srv->slots[i]->metadata);
    free(srv->slots[i]);
  }
  free(srv->slots);
  grpc_call_details_destroy(&srv->unknown_details);
  grpc_metadata_array_destroy(&srv->unknown_metadata);
  free(srv->threads);
  pthread_cond_destroy(&srv->cv);
  pthread_mutex_destroy(&srv->mu);
  free(srv);
  grpc_shutdown();
}

/* ------------------------------------------------------- call functions */

/* Queues an encoded response (taking buf), or ends the call when encoding
 * failed or the client is not reading. Shared by send and send_payload. */
static int send_encoded(tg_rpc_call *c, grpc_byte_buffer *buf, tg_rpc_code code,
                        const tg_rpc_status *st) {
  pthread_mutex_lock(&c->mu);
  int rc = -1;
  if (c->ended) goto out;
  if (code != TG_RPC_OK) {
    TG_WARN("rpc %s: response too large: %s", c->method->path, st->message);
    end_call_locked(c, code, st->message);
    goto out;
  }
  if (c->inflight != NULL && c->queued >= c->max_queued_sends) {
    /* The client is not reading; rather than buffer without bound, end
     * the call now. */
    int suppressed;
    if (may_warn_about_peer(c->srv, &suppressed)) {
      TG_WARN(
          "rpc %s to %s: %zu responses queued, client not reading; ending the call (%d "
          "similar not logged)",
          c->method->path, c->peer, c->queued, suppressed);
    }
    end_call_locked(c, TG_RPC_RESOURCE_EXHAUSTED,
                    "too many responses queued: the client is not reading");
    goto out;
  }
  send_item *item = new_send_item(buf, 0, GRPC_STATUS_OK, NULL);
  if (item == NULL) goto out;
  buf = NULL;
  enqueue_send_locked(c, item);
  rc = 0;
out:
  pthread_mutex_unlock(&c->mu);
  if (buf != NULL) grpc_byte_buffer_destroy(buf);
  return rc;
}

int tg_rpc_call_send(tg_rpc_call *c, const ProtobufCMessage *msg) {
  if (c == NULL || msg == NULL) return -1;
  pthread_mutex_lock(&c->mu);
  int ended = c->ended;
  size_t max = c->max_response_bytes;
  pthread_mutex_unlock(&c->mu);
  if (ended) return -1;
  grpc_byte_buffer *buf = NULL;
  tg_rpc_status st;
  tg_rpc_code code = tg_rpc_pack_message(msg, max, &buf, &st);
  return send_encoded(c, buf, code, &st);
}

struct tg_rpc_payload {
  grpc_slice slice; /* refcounted: every send shares it */
  size_t len;
};

tg_rpc_payload *tg_rpc_payload_new(const ProtobufCMessage *msg) {
  if (msg == NULL) return NULL;
  tg_rpc_payload *p = calloc(1, sizeof *p);
  if (p == NULL) return NULL;
  p->len = protobuf_c_message_get_packed_size(msg);
  p->slice = grpc_slice_malloc(p->len);
  protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(p->slice));
  return p;
}

void tg_rpc_payload_free(tg_rpc_payload *p) {
  if (p == NULL) return;
  grpc_slice_unref(p->slice);
  free(p);
}

int tg_rpc_call_send_payload(tg_rpc_call *c, const tg_rpc_payload *p) {
  if (c == NULL || p == NULL) return -1;
  pthread_mutex_lock(&c->mu);
  int ended = c->ended;
  size_t max = c->max_response_bytes;
  pthread_mutex_unlock(&c->mu);
  if (ended) return -1;
  tg_rpc_status st = {TG_RPC_OK, ""};
  tg_rpc_code code = TG_RPC_OK;
  grpc_byte_buffer *buf = NULL;
  if (p->len > max) {
    code = tg_rpc_status_set(&st, TG_RPC_RESOURCE_EXHAUSTED, "response of %zu bytes exceeds the %zu-byte limit",
                             p->len, max);
  } else {
    grpc_slice shared = p->slice; /* the byte buffer takes its own reference */
    buf = grpc_raw_byte_buffer_create(&shared, 1);
  }
  return send_encoded(c, buf, code, &st);
}

int tg_rpc_call_finish(tg_rpc_call *c, tg_rpc_code code, const char *message,
                       const ProtobufCMessage *response) {
  if (c == NULL) return -1;
  pthread_mutex_lock(&c->mu);
  int ended = c->ended;
  size_t max = c->max_response_bytes;
  pthread_mutex_unlock(&c->mu);
  if (ended) return -1;

  grpc_byte_buffer *buf = NULL;
  tg_rpc_status st = {TG_RPC_OK, ""};
  if (response != NULL) tg_rpc_pack_message(response, max, &buf, &st);
  pthread_mutex_lock(&c->mu);
  int rc = -1;
  if (c->ended) goto out;
  if (st.code != TG_RPC_OK) {
    TG_WARN("rpc %s: response too large: %s", c->method->path, st.message);
    end_call_locked(c, st.code, st.message);
    goto out;
  }
  send_item *item = new_send_item(buf, 1, (grpc_status_code)code, message);
  if (item == NULL) {
    end_call_locked(c, TG_RPC_RESOURCE_EXHAUSTED, "server out of memory");
    goto out;
  }
  buf = NULL;
  c->ended = 1;
  c->handler_finished = 1;
  enqueue_send_locked(c, item);
  rc = 0;
out:
  pthread_mutex_unlock(&c->mu);
  if (buf != NULL) grpc_byte_buffer_destroy(buf);
  return rc;
}

void tg_rpc_call_set_data(tg_rpc_call *c, void *data) {
  pthread_mutex_lock(&c->mu);
  c->data = data;
  pthread_mutex_unlock(&c->mu);
}

void *tg_rpc_call_data(tg_rpc_call *c) {
  pthread_mutex_lock(&c->mu);
  void *data = c->data;
  pthread_mutex_unlock(&c->mu);
  return data;
}

const tg_rpc_method *tg_rpc_call_method(tg_rpc_call *c) { return c->method; }

const char *tg_rpc_call_peer(tg_rpc_call *c) { return c->peer != NULL ? c->peer : ""; }

int tg_rpc_call_metadata(tg_rpc_call *c, const char *key, char *buf, size_t buflen) {
  if (c == NULL || key == NULL || buf == NULL || buflen == 0) return -1;
  int rc = -1;
  pthread_mutex_lock(&c->mu);
  if (c->released) goto out;
  for (size_t i = 0; i < c->metadata.count; i++) {
    if (grpc_slice_str_cmp(c->metadata.metadata[i].key, key) != 0) continue;
    grpc_slice v = c->metadata.metadata[i].value;
    size_t len = GRPC_SLICE_LENGTH(v);
    if (len + 1 > buflen) goto out;
    memcpy(buf, GRPC_SLICE_START_PTR(v), len);
    buf[len] = '\0';
    rc = (int)len;
    goto out;
  }
out:
  pthread_mutex_unlock(&c->mu);
  return rc;
}

int64_t tg_rpc_call_deadline_left_ms(tg_rpc_call *c) { return tg_rpc_ms_until(c->deadline); }

void tg_rpc_call_ref(tg_rpc_call *c) {
  pthread_mutex_lock(&c->mu);
  c->refs++;
  pthread_mutex_unlock(&c->mu);
}

void tg_rpc_call_unref(tg_rpc_call *c) { call_unref_memory(c); }
