/* Watches that survive etcd restarts and failover without losing or
 * repeating an event.
 *
 * Why: the coordinator and the agents react to changes in etcd (a node
 * left, a new generation was committed). A watch that silently misses an
 * event after a member restart would leave a daemon acting on stale state,
 * which the fencing design (DESIGN.md, "Generations and fencing") forbids.
 *
 * How: a watch remembers `next_rev`, the first revision it has not yet
 * received. Whenever its stream breaks (member killed, restarted, lost its
 * leader: "hasleader" metadata makes etcd drop such a stream) it opens a new
 * one, on the next endpoint if the old one failed, asking for events from
 * next_rev on; events below next_rev that arrive anyway are dropped. A
 * watch opened without a start revision learns next_rev from etcd's answer
 * to the create request before open returns, so "every change after open"
 * holds even across a failure that comes before the first event.
 *
 * No thread: all work happens inside tg_etcd_watch_next, which the caller
 * runs in its own loop; gRPC flow control holds events meanwhile. If the
 * revisions a watch needs were compacted, etcd cancels it with the compact
 * revision, delivered as a TG_ETCD_EVENT_COMPACTED event; the watch is then
 * over. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/etcd/etcd_internal.h"
#include "common/clock/clock.h"
#include "common/log/log.h"

#define ETCD_WATCH_MIN_SEND_MS 200

struct tg_etcd_watch {
  tg_etcd *c;
  Etcdserverpb__WatchCreateRequest create; /* key and range end owned below */
  uint8_t *key;
  uint8_t *range_end;
  int64_t next_rev; /* first revision not yet received; 0: "now" */
  /* Current stream. */
  etcd_conn *conn;
  tg_rpc_stream *stream;
  int created;
  char token[ETCD_MAX_TOKEN_BYTES];
  tg_rpc_metadata md[2];
  /* Events received and not yet delivered, in order. */
  Etcdserverpb__WatchResponse *pending;
  size_t pending_next;
  int64_t pending_compact; /* > 0: a compaction to report */
  /* Retry and end state. */
  int64_t retry_at_ms;
  int64_t backoff_ms;
  int closed;
  tg_rpc_status closed_status;
  int64_t delivered_rev;
};

void tg_etcd_event_clear(tg_etcd_event *ev) {
  if (!ev) return;
  etcd_kv_clear(&ev->kv);
  etcd_kv_clear(&ev->prev);
  memset(ev, 0, sizeof *ev);
}

static void drop_pending(tg_etcd_watch *w) {
  if (w->pending) protobuf_c_message_free_unpacked(&w->pending->base, NULL);
  w->pending = NULL;
  w->pending_next = 0;
}

static void close_stream(tg_etcd_watch *w, int failed) {
  if (w->stream) tg_rpc_stream_free(w->stream);
  w->stream = NULL;
  if (w->conn) etcd_conn_release(w->c, w->conn, failed);
  w->conn = NULL;
  w->created = 0;
}

static void finish(tg_etcd_watch *w, tg_rpc_code code, const char *why) {
  close_stream(w, 0);
  w->closed = 1;
  tg_rpc_status_set(&w->closed_status, code, "etcd watch: %s", why);
}

static int fatal_code(const tg_rpc_status *st) {
  switch (st->code) {
    case TG_RPC_INVALID_ARGUMENT:
    case TG_RPC_PERMISSION_DENIED:
    case TG_RPC_UNIMPLEMENTED:
    case TG_RPC_UNAUTHENTICATED:
    case TG_RPC_FAILED_PRECONDITION:
    case TG_RPC_RESOURCE_EXHAUSTED:
      return 1;
    default:
      return 0;
  }
}

/* The stream broke: decide between reconnecting later and giving up. */
static void stream_failed(tg_etcd_watch *w, const tg_rpc_status *st) {
  if (w->c->username && etcd_token_rejected(st)) {
    etcd_token_invalidate(w->c, w->token);
  } else if (fatal_code(st)) {
    char why[300];
    snprintf(why, sizeof why, "%s: %s", tg_rpc_code_name(st->code), st->message);
    finish(w, st->code, why);
    return;
  }
  TG_DEBUG("etcd watch: stream to %s broke (%s: %s); resuming from revision %lld",
           w->conn ? w->c->endpoints[w->conn->endpoint] : "?", tg_rpc_code_name(st->code),
           st->message, (long long)w->next_rev);
  close_stream(w, 1);
  w->retry_at_ms = tg_clock_mono_ms() + w->backoff_ms;
  w->backoff_ms = w->backoff_ms * 2 > ETCD_BACKOFF_MAX_MS ? ETCD_BACKOFF_MAX_MS : w->backoff_ms * 2;
}

static int open_stream(tg_etcd_watch *w, int64_t deadline_ms, tg_rpc_status *st) {
  w->conn = etcd_conn_acquire(w->c, st);
  if (!w->conn) return -1;
  int n_md = etcd_metadata(w->c, w->conn, 1, w->c->request_timeout_ms, w->md, w->token,
                           sizeof w->token, st);
  if (n_md < 0) return -1;
  tg_rpc_call_opts opts = {
      .deadline_ms = ETCD_STREAM_DEADLINE_MS, .metadata = w->md, .n_metadata = (size_t)n_md};
  w->stream = tg_rpc_stream_open(w->conn->ch, "/etcdserverpb.Watch/Watch",
                                 &etcdserverpb__watch_response__descriptor, &opts, st);
  if (!w->stream) return -1;
  Etcdserverpb__WatchRequest req = ETCDSERVERPB__WATCH_REQUEST__INIT;
  req.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
  req.create_request = &w->create;
  w->create.start_revision = w->next_rev;
  /* Bounded by the caller's wait, but long enough for a fresh connection. */
  int64_t send_ms = deadline_ms - tg_clock_mono_ms();
  if (send_ms < ETCD_WATCH_MIN_SEND_MS) send_ms = ETCD_WATCH_MIN_SEND_MS;
  if (send_ms > w->c->request_timeout_ms) send_ms = w->c->request_timeout_ms;
  if (tg_rpc_stream_send(w->stream, &req.base, send_ms) != 0) {
    ProtobufCMessage *m = NULL;
    if (tg_rpc_stream_recv(w->stream, &m, 100, st) == TG_RPC_RECV_MESSAGE)
      protobuf_c_message_free_unpacked(m, NULL);
    if (st->code == TG_RPC_OK) tg_rpc_status_set(st, TG_RPC_UNAVAILABLE, "watch create not sent");
    return -1;
  }
  return 0;
}

/* Files one WatchResponse: a compaction, the create ack, a cancel, or events. */
static void handle_response(tg_etcd_watch *w, Etcdserverpb__WatchResponse *wr) {
  if (wr->compact_revision > 0) {
    w->pending_compact = wr->compact_revision;
    protobuf_c_message_free_unpacked(&wr->base, NULL);
    return;
  }
  if (wr->created) {
    w->created = 1;
    w->backoff_ms = ETCD_BACKOFF_MIN_MS;
    /* Watching from "now": now is the revision etcd created the watch at. */
    if (w->next_rev == 0 && wr->header) w->next_rev = wr->header->revision + 1;
  }
  if (wr->canceled) {
    char why[300];
    snprintf(why, sizeof why, "cancelled by etcd: %s",
             wr->cancel_reason && wr->cancel_reason[0] ? wr->cancel_reason : "no reason given");
    protobuf_c_message_free_unpacked(&wr->base, NULL);
    finish(w, TG_RPC_CANCELLED, why);
    return;
  }
  /* Keep only events not delivered before (a resumed stream may repeat). */
  size_t kept = 0;
  int64_t last = 0;
  for (size_t i = 0; i < wr->n_events; i++) {
    Mvccpb__Event *ev = wr->events[i];
    int64_t rev = ev->kv ? ev->kv->mod_revision : 0;
    if (rev < w->next_rev || !ev->kv) {
      protobuf_c_message_free_unpacked(&ev->base, NULL);
      continue;
    }
    wr->events[kept++] = ev;
    last = rev;
  }
  wr->n_events = kept;
  if (kept == 0) {
    protobuf_c_message_free_unpacked(&wr->base, NULL);
    return;
  }
  w->next_rev = last + 1;
  w->pending = wr;
  w->pending_next = 0;
}

/* One step: (re)connect if needed, then wait until `deadline_ms` for one
 * response from etcd. */
static void pump(tg_etcd_watch *w, int64_t deadline_ms) {
  tg_rpc_status st = {0};
  if (!w->stream) {
    int64_t now = tg_clock_mono_ms();
    if (now < w->retry_at_ms) {
      etcd_sleep_ms((w->retry_at_ms < deadline_ms ? w->retry_at_ms : deadline_ms) - now);
      if (tg_clock_mono_ms() < w->retry_at_ms) return;
    }
    if (open_stream(w, deadline_ms, &st) != 0) {
      stream_failed(w, &st);
      return;
    }
  }
  int64_t left = deadline_ms - tg_clock_mono_ms();
  if (left < 0) left = 0;
  ProtobufCMessage *m = NULL;
  tg_rpc_recv_result r = tg_rpc_stream_recv(w->stream, &m, left, &st);
  if (r == TG_RPC_RECV_TIMEOUT) return;
  if (r == TG_RPC_RECV_END) {
    if (st.code == TG_RPC_OK) tg_rpc_status_set(&st, TG_RPC_UNAVAILABLE, "watch stream ended");
    stream_failed(w, &st);
    return;
  }
  handle_response(w, (Etcdserverpb__WatchResponse *)m);
}

tg_etcd_watch *tg_etcd_watch_open(tg_etcd *c, const char *key, const tg_etcd_watch_opts *opts,
                                  tg_rpc_status *st) {
  if (!c || !key) {
    tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "etcd watch: missing argument");
    return NULL;
  }
  tg_etcd_watch_opts none = {0};
  if (!opts) opts = &none;
  tg_etcd_watch *w = calloc(1, sizeof *w);
  if (!w) {
    tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED, "etcd watch: out of memory");
    return NULL;
  }
  w->c = c;
  w->backoff_ms = ETCD_BACKOFF_MIN_MS;
  w->next_rev = opts->start_revision > 0 ? opts->start_revision : 0;
  w->delivered_rev = w->next_rev > 0 ? w->next_rev - 1 : 0;
  etcdserverpb__watch_create_request__init(&w->create);
  w->create.prev_kv = opts->prev_kv != 0;
  ProtobufCBinaryData k, e;
  uint8_t *end_storage = NULL;
  if (etcd_set_range(&k, &e, key, opts->prefix, NULL, &end_storage) != 0) goto oom;
  w->key = malloc(k.len);
  w->range_end = e.len ? malloc(e.len) : NULL;
  if (!w->key || (e.len && !w->range_end)) {
    free(end_storage);
    goto oom;
  }
  memcpy(w->key, k.data, k.len);
  if (e.len) memcpy(w->range_end, e.data, e.len);
  free(end_storage);
  w->create.key.data = w->key;
  w->create.key.len = k.len;
  w->create.range_end.data = w->range_end;
  w->create.range_end.len = e.len;

  /* Establish the watch now, so no change after open is missed. */
  int64_t deadline = tg_clock_mono_ms() + c->request_timeout_ms;
  while (!w->created && !w->closed && tg_clock_mono_ms() < deadline) pump(w, deadline);
  if (w->closed) {
    if (st) *st = w->closed_status;
    goto err;
  }
  if (!w->created) {
    tg_rpc_status_set(st, TG_RPC_UNAVAILABLE,
                      "etcd watch: not established within %lld ms (no endpoint answered)",
                      (long long)c->request_timeout_ms);
    goto err;
  }
  if (w->delivered_rev == 0) w->delivered_rev = w->next_rev - 1;
  tg_rpc_status_set(st, TG_RPC_OK, "ok");
  return w;
oom:
  tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED, "etcd watch: out of memory");
err:
  tg_etcd_watch_close(w);
  return NULL;
}

static int event_copy(tg_etcd_event *out, const Mvccpb__Event *ev) {
  memset(out, 0, sizeof *out);
  out->type = ev->type == MVCCPB__EVENT__EVENT_TYPE__DELETE ? TG_ETCD_EVENT_DELETE
                                                             : TG_ETCD_EVENT_PUT;
  if (etcd_kv_copy(&out->kv, ev->kv) != 0) return -1;
  if (ev->prev_kv) {
    if (etcd_kv_copy(&out->prev, ev->prev_kv) != 0) {
      tg_etcd_event_clear(out);
      return -1;
    }
    out->has_prev = 1;
  }
  return 0;
}

tg_etcd_watch_result tg_etcd_watch_next(tg_etcd_watch *w, tg_etcd_event *ev, int64_t timeout_ms,
                                        tg_rpc_status *st) {
  if (ev) memset(ev, 0, sizeof *ev);
  if (!w || !ev) {
    tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "etcd watch next: missing argument");
    return TG_ETCD_WATCH_CLOSED;
  }
  int64_t deadline = tg_clock_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
  int pumped = 0; /* even a zero timeout looks at the stream once */
  for (;;) {
    if (w->pending && w->pending_next < w->pending->n_events) {
      const Mvccpb__Event *e = w->pending->events[w->pending_next];
      if (event_copy(ev, e) != 0) {
        tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED, "etcd watch: out of memory");
        return TG_ETCD_WATCH_TIMEOUT; /* the event stays queued */
      }
      w->pending_next++;
      w->delivered_rev = ev->kv.mod_revision;
      if (w->pending_next == w->pending->n_events) drop_pending(w);
      tg_rpc_status_set(st, TG_RPC_OK, "ok");
      return TG_ETCD_WATCH_EVENT;
    }
    if (w->pending_compact > 0) {
      ev->type = TG_ETCD_EVENT_COMPACTED;
      ev->compact_revision = w->pending_compact;
      w->pending_compact = 0;
      char why[128];
      snprintf(why, sizeof why, "revision %lld was compacted (compact revision %lld)",
               (long long)w->next_rev, (long long)ev->compact_revision);
      finish(w, TG_RPC_OUT_OF_RANGE, why);
      tg_rpc_status_set(st, TG_RPC_OK, "ok");
      return TG_ETCD_WATCH_EVENT;
    }
    if (w->closed) {
      if (st) *st = w->closed_status;
      return TG_ETCD_WATCH_CLOSED;
    }
    if (pumped && tg_clock_mono_ms() >= deadline) {
      tg_rpc_status_set(st, TG_RPC_DEADLINE_EXCEEDED, "etcd watch: no event within %lld ms",
                        (long long)timeout_ms);
      return TG_ETCD_WATCH_TIMEOUT;
    }
    pump(w, deadline);
    pumped = 1;
  }
}

int64_t tg_etcd_watch_revision(const tg_etcd_watch *w) { return w ? w->delivered_rev : 0; }

void tg_etcd_watch_close(tg_etcd_watch *w) {
  if (!w) return;
  drop_pending(w);
  close_stream(w, 0);
  free(w->key);
  free(w->range_end);
  free(w);
}
