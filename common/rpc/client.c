/* The client half of common/rpc: channels, unary calls and streams.
 *
 * Callers are plain threads that want an answer (the etcd client, agents
 * talking to the coordinator, tgctl), so every function here blocks, and
 * every block is bounded by the call's deadline or the caller's timeout.
 *
 * Each call owns a completion queue of the "pluck" kind: a waiter plucks
 * exactly the tag of the operation it started, so a sender and a receiver
 * can wait on one call from two threads. A stream keeps four operations
 * apart, each with its own tag:
 *   status  sends the initial metadata at open and receives the final
 *           status; it completes when the call ends.
 *   recv    one message (the first also receives the initial metadata,
 *           which gRPC requires before or with the first message). A recv
 *           that times out leaves it pending; the next recv plucks it.
 *   send    one message; a send that times out cancels the stream.
 *   close   the client's half-close.
 * Before a call is released every started operation is plucked, because a
 * completion queue must be empty when it is destroyed. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rpc/rpc_internal.h"

struct tg_rpc_channel {
  char *target;
  grpc_channel *channel;
  size_t max_message_bytes;
  int64_t default_deadline_ms;
};

/* ---------------------------------------------------------------- channel */

tg_rpc_channel *tg_rpc_channel_new(const char *target, const tg_rpc_channel_config *cfg, char *err,
                                   size_t errlen) {
  static const tg_rpc_channel_config defaults = {0};
  if (cfg == NULL) cfg = &defaults;
  if (target == NULL || target[0] == '\0') {
    snprintf(err, errlen, "empty RPC target");
    return NULL;
  }
  grpc_init();
  grpc_channel_credentials *creds = NULL;
  tg_rpc_channel *ch = calloc(1, sizeof(*ch));
  if (ch == NULL || (ch->target = strdup(target)) == NULL) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  ch->max_message_bytes =
      cfg->max_message_bytes ? cfg->max_message_bytes : TG_RPC_DEFAULT_MAX_MESSAGE_BYTES;
  if (ch->max_message_bytes > INT32_MAX) ch->max_message_bytes = INT32_MAX;
  ch->default_deadline_ms =
      cfg->default_deadline_ms > 0 ? cfg->default_deadline_ms : TG_RPC_DEFAULT_DEADLINE_MS;
  creds = tg_rpc_channel_creds(cfg->tls, err, errlen);
  if (creds == NULL) goto fail;

  grpc_arg args[10];
  size_t nargs = 0;
  /* gRPC backs off up to 120 s between reconnects by default; a restarted
   * coordinator or etcd member must be found again within our recovery
   * budget, so retry every 100 ms at first and never wait over the cap. */
  int backoff_max = cfg->max_reconnect_backoff_ms > 0 && cfg->max_reconnect_backoff_ms < INT32_MAX
                        ? (int)cfg->max_reconnect_backoff_ms
                        : TG_RPC_DEFAULT_MAX_RECONNECT_BACKOFF_MS;
  args[nargs].type = GRPC_ARG_INTEGER;
  args[nargs].key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
  args[nargs++].value.integer = 100 < backoff_max ? 100 : backoff_max;
  args[nargs].type = GRPC_ARG_INTEGER;
  args[nargs].key = GRPC_ARG_MIN_RECONNECT_BACKOFF_MS;
  args[nargs++].value.integer = 100 < backoff_max ? 100 : backoff_max;
  args[nargs].type = GRPC_ARG_INTEGER;
  args[nargs].key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
  args[nargs++].value.integer = backoff_max;
  args[nargs].type = GRPC_ARG_INTEGER;
  args[nargs].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
  args[nargs++].value.integer = (int)ch->max_message_bytes;
  args[nargs].type = GRPC_ARG_INTEGER;
  args[nargs].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
  args[nargs++].value.integer = (int)ch->max_message_bytes;
  if (cfg->tls != NULL && cfg->tls->server_name != NULL) {
    args[nargs].type = GRPC_ARG_STRING;
    args[nargs].key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
    args[nargs++].value.string = (char *)cfg->tls->server_name;
  }
  if (cfg->keepalive_ms > 0) {
    int ms = cfg->keepalive_ms > INT32_MAX ? INT32_MAX : (int)cfg->keepalive_ms;
    args[nargs].type = GRPC_ARG_INTEGER;
    args[nargs].key = GRPC_ARG_KEEPALIVE_TIME_MS;
    args[nargs++].value.integer = ms;
    args[nargs].type = GRPC_ARG_INTEGER;
    args[nargs].key = GRPC_ARG_KEEPALIVE_TIMEOUT_MS;
    args[nargs++].value.integer = ms;
    args[nargs].type = GRPC_ARG_INTEGER;
    args[nargs].key = GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA;
    args[nargs++].value.integer = 0;
  }
  grpc_channel_args channel_args = {.num_args = nargs, .args = args};
  ch->channel = grpc_channel_create(target, creds, &channel_args);
  if (ch->channel == NULL) {
    snprintf(err, errlen, "cannot create a channel to %s", target);
    goto fail;
  }
  grpc_channel_credentials_release(creds);
  return ch;
fail:
  if (creds != NULL) grpc_channel_credentials_release(creds);
  if (ch != NULL) free(ch->target);
  free(ch);
  grpc_shutdown();
  return NULL;
}

void tg_rpc_channel_free(tg_rpc_channel *ch) {
  if (ch == NULL) return;
  grpc_channel_destroy(ch->channel);
  free(ch->target);
  free(ch);
  grpc_shutdown();
}

const char *tg_rpc_channel_target(const tg_rpc_channel *ch) { return ch->target; }

/* Shuts a pluck queue down and destroys it; every operation on it must
 * already have been plucked. */
static void destroy_cq(grpc_completion_queue *cq) {
  grpc_completion_queue_shutdown(cq);
  grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  grpc_completion_queue_destroy(cq);
}

int tg_rpc_channel_wait_ready(tg_rpc_channel *ch, int64_t timeout_ms) {
  grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
  gpr_timespec deadline = tg_rpc_deadline_after_ms(timeout_ms);
  int tag = 0, rc = -1;
  for (;;) {
    grpc_connectivity_state state = grpc_channel_check_connectivity_state(ch->channel, 1);
    if (state == GRPC_CHANNEL_READY) {
      rc = 0;
      break;
    }
    if (tg_rpc_ms_until(deadline) <= 0) break;
    /* The watch fires on a state change or at `deadline`, whichever is
     * first, so this pluck is bounded by the deadline. */
    grpc_channel_watch_connectivity_state(ch->channel, state, deadline, cq, &tag);
    grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  }
  destroy_cq(cq);
  return rc;
}

/* ------------------------------------------------------- shared by calls */

static gpr_timespec call_deadline(const tg_rpc_channel *ch, const tg_rpc_call_opts *opts) {
  int64_t ms = opts != NULL && opts->deadline_ms > 0 ? opts->deadline_ms : ch->default_deadline_ms;
  return tg_rpc_deadline_after_ms(ms);
}

/* Copies the caller's metadata into slices that live as long as the call. */
static grpc_metadata *copy_metadata(const tg_rpc_call_opts *opts, size_t *count) {
  *count = 0;
  if (opts == NULL || opts->n_metadata == 0) return NULL;
  grpc_metadata *md = calloc(opts->n_metadata, sizeof(*md));
  if (md == NULL) return NULL;
  for (size_t i = 0; i < opts->n_metadata; i++) {
    md[i].key = grpc_slice_from_copied_string(opts->metadata[i].key ? opts->metadata[i].key : "");
    md[i].value =
        grpc_slice_from_copied_string(opts->metadata[i].value ? opts->metadata[i].value : "");
  }
  *count = opts->n_metadata;
  return md;
}

static void free_metadata(grpc_metadata *md, size_t count) {
  for (size_t i = 0; i < count; i++) {
    grpc_slice_unref(md[i].key);
    grpc_slice_unref(md[i].value);
  }
  free(md);
}

/* Waits for `tag` until `deadline`; if gRPC has not completed it by then
 * the call is cancelled, which completes it promptly. Returns the event's
 * success flag. */
static int pluck_or_cancel(grpc_completion_queue *cq, grpc_call *call, void *tag,
                           gpr_timespec deadline) {
  grpc_event ev = grpc_completion_queue_pluck(cq, tag, deadline, NULL);
  if (ev.type == GRPC_OP_COMPLETE) return ev.success;
  grpc_call_cancel(call, NULL);
  ev = grpc_completion_queue_pluck(cq, tag, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  return ev.type == GRPC_OP_COMPLETE ? ev.success : 0;
}

static int check_path(const char *path, tg_rpc_status *st) {
  if (path == NULL || path[0] != '/') {
    tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "method path must start with '/'");
    return -1;
  }
  return 0;
}

/* ---------------------------------------------------------------- unary */

tg_rpc_code tg_rpc_unary(tg_rpc_channel *ch, const char *path, const ProtobufCMessage *req,
                         const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                         const tg_rpc_call_opts *opts, tg_rpc_status *st) {
  if (resp != NULL) *resp = NULL;
  if (ch == NULL || req == NULL || resp_desc == NULL || resp == NULL) {
    return tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "tg_rpc_unary: missing argument");
  }
  if (check_path(path, st) != 0) return TG_RPC_INVALID_ARGUMENT;

  grpc_byte_buffer *request = NULL, *response = NULL;
  tg_rpc_status local;
  if (st == NULL) st = &local;
  tg_rpc_code code = tg_rpc_pack_message(req, ch->max_message_bytes, &request, st);
  if (code != TG_RPC_OK) return code;

  gpr_timespec deadline = call_deadline(ch, opts);
  grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
  grpc_call *call =
      grpc_channel_create_call(ch->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                               grpc_slice_from_static_string(path), NULL, deadline, NULL);
  size_t n_md;
  grpc_metadata *md = copy_metadata(opts, &n_md);
  grpc_metadata_array initial_md, trailing_md;
  grpc_metadata_array_init(&initial_md);
  grpc_metadata_array_init(&trailing_md);
  grpc_status_code status = GRPC_STATUS_UNKNOWN;
  grpc_slice details = grpc_empty_slice();
  const char *error_string = NULL;

  grpc_op ops[6];
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = n_md;
  ops[0].data.send_initial_metadata.metadata = md;
  if (opts != NULL && opts->wait_for_ready) ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = request;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &response;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
  ops[5].data.recv_status_on_client.status = &status;
  ops[5].data.recv_status_on_client.status_details = &details;
  ops[5].data.recv_status_on_client.error_string = &error_string;

  int tag = 0;
  grpc_call_error cerr = grpc_call_start_batch(call, ops, 6, &tag, NULL);
  if (cerr != GRPC_CALL_OK) {
    code = tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "%s: gRPC refused the call (error %d)",
                             path, (int)cerr);
    goto out;
  }
  pluck_or_cancel(cq, call, &tag, tg_rpc_deadline_plus(deadline, TG_RPC_DEADLINE_SLACK_MS));
  tg_rpc_status_from_grpc(st, status, details);
  code = (tg_rpc_code)status;
  if (code != TG_RPC_OK) goto out;
  if (response == NULL) {
    code = tg_rpc_status_set(st, TG_RPC_INTERNAL, "%s: server sent OK without a response", path);
    goto out;
  }
  code =
      tg_rpc_unpack_message(response, resp_desc, ch->max_message_bytes, TG_RPC_INTERNAL, resp, st);
out:
  if (request != NULL) grpc_byte_buffer_destroy(request);
  if (response != NULL) grpc_byte_buffer_destroy(response);
  grpc_slice_unref(details);
  gpr_free((void *)error_string);
  grpc_metadata_array_destroy(&initial_md);
  grpc_metadata_array_destroy(&trailing_md);
  grpc_call_unref(call);
  free_metadata(md, n_md);
  destroy_cq(cq);
  return code;
}

/* ---------------------------------------------------------------- streams */

struct tg_rpc_stream {
  grpc_call *call;
  grpc_completion_queue *cq;
  const ProtobufCMessageDescriptor *resp_desc;
  size_t max_message_bytes;
  gpr_timespec deadline;
  char path[128];

  grpc_metadata *md; /* sent at open, alive until the status arrives */
  size_t n_md;

  pthread_mutex_t mu; /* guards the flags below between sender and receiver */
  int send_closed;    /* close_send done, or a send failed */
  int status_done;    /* the status batch was plucked */

  /* status batch (owned by the receiver once started) */
  grpc_status_code status;
  grpc_slice details;
  const char *error_string;
  grpc_metadata_array trailing_md;

  /* recv batch (receiver only) */
  int recv_pending;
  int initial_md_requested;
  int end_of_messages;
  grpc_metadata_array initial_md;
  grpc_byte_buffer *recv_buf;

  /* distinct addresses used as tags */
  char tag_status, tag_recv, tag_send, tag_close;
};

tg_rpc_stream *tg_rpc_stream_open(tg_rpc_channel *ch, const char *path,
                                  const ProtobufCMessageDescriptor *resp_desc,
                                  const tg_rpc_call_opts *opts, tg_rpc_status *st) {
  if (ch == NULL || resp_desc == NULL) {
    tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "tg_rpc_stream_open: missing argument");
    return NULL;
  }
  if (check_path(path, st) != 0) return NULL;
  tg_rpc_stream *s = calloc(1, sizeof(*s));
  if (s == NULL) {
    tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&s->mu, NULL);
  snprintf(s->path, sizeof(s->path), "%s", path);
  s->resp_desc = resp_desc;
  s->max_message_bytes = ch->max_message_bytes;
  s->deadline = call_deadline(ch, opts);
  s->status = GRPC_STATUS_UNKNOWN;
  s->details = grpc_empty_slice();
  grpc_metadata_array_init(&s->trailing_md);
  grpc_metadata_array_init(&s->initial_md);
  s->cq = grpc_completion_queue_create_for_pluck(NULL);
  s->call = grpc_channel_create_call(ch->channel, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq,
                                     grpc_slice_from_static_string(path), NULL, s->deadline, NULL);
  s->md = copy_metadata(opts, &s->n_md);

  grpc_op ops[2];
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = s->n_md;
  ops[0].data.send_initial_metadata.metadata = s->md;
  if (opts != NULL && opts->wait_for_ready) ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY;
  ops[1].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[1].data.recv_status_on_client.trailing_metadata = &s->trailing_md;
  ops[1].data.recv_status_on_client.status = &s->status;
  ops[1].data.recv_status_on_client.status_details = &s->details;
  ops[1].data.recv_status_on_client.error_string = &s->error_string;
  grpc_call_error cerr = grpc_call_start_batch(s->call, ops, 2, &s->tag_status, NULL);
  if (cerr != GRPC_CALL_OK) {
    tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "%s: gRPC refused the call (error %d)", path,
                      (int)cerr);
    s->status_done = 1; /* nothing to pluck */
    tg_rpc_stream_free(s);
    return NULL;
  }
  tg_rpc_status_set(st, TG_RPC_OK, NULL);
  return s;
}

int tg_rpc_stream_send(tg_rpc_stream *s, const ProtobufCMessage *msg, int64_t timeout_ms) {
  if (s == NULL || msg == NULL) return -1;
  pthread_mutex_lock(&s->mu);
  int closed = s->send_closed || s->status_done;
  pthread_mutex_unlock(&s->mu);
  if (closed) return -1;

  grpc_byte_buffer *buf = NULL;
  tg_rpc_status st;
  if (tg_rpc_pack_message(msg, s->max_message_bytes, &buf, &st) != TG_RPC_OK) {
    /* The server would refuse it anyway; end the call with the reason. */
    grpc_call_cancel_with_status(s->call, GRPC_STATUS_RESOURCE_EXHAUSTED, st.message, NULL);
    goto fail;
  }
  grpc_op op;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_SEND_MESSAGE;
  op.data.send_message.send_message = buf;
  if (grpc_call_start_batch(s->call, &op, 1, &s->tag_send, NULL) != GRPC_CALL_OK) goto fail;
  gpr_timespec deadline =
      timeout_ms > 0 ? tg_rpc_deadline_after_ms(timeout_ms) : tg_rpc_deadline_plus(s->deadline, 0);
  grpc_event ev = grpc_completion_queue_pluck(s->cq, &s->tag_send, deadline, NULL);
  if (ev.type != GRPC_OP_COMPLETE) {
    /* Not written in time: the peer is not reading. Cancel, which
     * completes the send at once. */
    grpc_call_cancel_with_status(s->call, GRPC_STATUS_DEADLINE_EXCEEDED,
                                 "send timed out: the server is not reading", NULL);
    ev =
        grpc_completion_queue_pluck(s->cq, &s->tag_send, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    goto fail;
  }
  if (!ev.success) goto fail;
  grpc_byte_buffer_destroy(buf);
  return 0;
fail:
  if (buf != NULL) grpc_byte_buffer_destroy(buf);
  pthread_mutex_lock(&s->mu);
  s->send_closed = 1;
  pthread_mutex_unlock(&s->mu);
  return -1;
}

int tg_rpc_stream_close_send(tg_rpc_stream *s) {
  if (s == NULL) return -1;
  pthread_mutex_lock(&s->mu);
  int closed = s->send_closed || s->status_done;
  s->send_closed = 1;
  pthread_mutex_unlock(&s->mu);
  if (closed) return -1;
  grpc_op op;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  if (grpc_call_start_batch(s->call, &op, 1, &s->tag_close, NULL) != GRPC_CALL_OK) return -1;
  return pluck_or_cancel(s->cq, s->call, &s->tag_close, tg_rpc_deadline_plus(s->deadline, 0)) ? 0
                                                                                              : -1;
}

/* Starts the receive of the next message unless one is already pending. */
static int start_recv(tg_rpc_stream *s) {
  if (s->recv_pending) return 0;
  grpc_op ops[2];
  size_t n = 0;
  memset(ops, 0, sizeof(ops));
  if (!s->initial_md_requested) {
    ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[n++].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
  }
  ops[n].op = GRPC_OP_RECV_MESSAGE;
  ops[n++].data.recv_message.recv_message = &s->recv_buf;
  if (grpc_call_start_batch(s->call, ops, n, &s->tag_recv, NULL) != GRPC_CALL_OK) return -1;
  s->initial_md_requested = 1;
  s->recv_pending = 1;
  return 0;
}

tg_rpc_recv_result tg_rpc_stream_recv(tg_rpc_stream *s, ProtobufCMessage **msg, int64_t timeout_ms,
                                      tg_rpc_status *st) {
  if (msg != NULL) *msg = NULL;
  if (s == NULL || msg == NULL) {
    tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "tg_rpc_stream_recv: missing argument");
    return TG_RPC_RECV_END;
  }
  gpr_timespec deadline =
      timeout_ms >= 0 ? tg_rpc_deadline_after_ms(timeout_ms) : tg_rpc_deadline_plus(s->deadline, 0);
  if (!s->end_of_messages) {
    if (start_recv(s) != 0) {
      grpc_call_cancel(s->call, NULL);
      s->end_of_messages = 1;
    }
  }
  if (!s->end_of_messages) {
    grpc_event ev = grpc_completion_queue_pluck(s->cq, &s->tag_recv, deadline, NULL);
    if (ev.type != GRPC_OP_COMPLETE) return TG_RPC_RECV_TIMEOUT;
    s->recv_pending = 0;
    if (ev.success && s->recv_buf != NULL) {
      tg_rpc_status bad;
      tg_rpc_code code = tg_rpc_unpack_message(s->recv_buf, s->resp_desc, s->max_message_bytes,
                                               TG_RPC_INTERNAL, msg, &bad);
      grpc_byte_buffer_destroy(s->recv_buf);
      s->recv_buf = NULL;
      if (code == TG_RPC_OK) return TG_RPC_RECV_MESSAGE;
      /* A response we cannot read ends the call with the reason. */
      grpc_call_cancel_with_status(s->call, (grpc_status_code)code, bad.message, NULL);
    }
    s->end_of_messages = 1;
  }
  if (!s->status_done) {
    /* The status follows the last message at once; a timeout here is the
     * caller's timeout, and the next recv waits again. */
    grpc_event ev = grpc_completion_queue_pluck(s->cq, &s->tag_status, deadline, NULL);
    if (ev.type != GRPC_OP_COMPLETE) return TG_RPC_RECV_TIMEOUT;
    pthread_mutex_lock(&s->mu);
    s->status_done = 1;
    pthread_mutex_unlock(&s->mu);
  }
  tg_rpc_status_from_grpc(st, s->status, s->details);
  return TG_RPC_RECV_END;
}

void tg_rpc_stream_cancel(tg_rpc_stream *s) {
  if (s != NULL) grpc_call_cancel(s->call, NULL);
}

void tg_rpc_stream_free(tg_rpc_stream *s) {
  if (s == NULL) return;
  grpc_call_cancel(s->call, NULL);
  gpr_timespec forever = gpr_inf_future(GPR_CLOCK_MONOTONIC);
  /* After the cancel every pending operation completes promptly. */
  if (s->recv_pending) grpc_completion_queue_pluck(s->cq, &s->tag_recv, forever, NULL);
  if (!s->status_done) grpc_completion_queue_pluck(s->cq, &s->tag_status, forever, NULL);
  if (s->recv_buf != NULL) grpc_byte_buffer_destroy(s->recv_buf);
  grpc_call_unref(s->call);
  destroy_cq(s->cq);
  grpc_slice_unref(s->details);
  gpr_free((void *)s->error_string);
  grpc_metadata_array_destroy(&s->trailing_md);
  grpc_metadata_array_destroy(&s->initial_md);
  free_metadata(s->md, s->n_md);
  pthread_mutex_destroy(&s->mu);
  free(s);
}
