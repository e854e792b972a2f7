/* Leases: grant, revoke, time-to-live, and a keep-alive that runs on its
 * own thread.
 *
 * Why a thread: a lease is how Tardigrade proves liveness (an agent's
 * registration, the active coordinator's election key). Its refresh must
 * not depend on what the owning daemon happens to be busy with, and losing
 * it must be noticed. The keep-alive thread keeps one LeaseKeepAlive stream
 * open, sends the lease id every TTL/3, and after any stream error reopens
 * it (on the next endpoint if that one failed) with a short backoff. The
 * lease counts as lost when etcd answers TTL <= 0 (expired or revoked) or
 * when no refresh has succeeded for the whole TTL: then the callback runs
 * once and the thread stops refreshing. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/etcd/etcd_internal.h"
#include "common/clock/clock.h"
#include "common/log/log.h"

#define KEEPALIVE_MIN_INTERVAL_MS 200

tg_rpc_code tg_etcd_lease_grant(tg_etcd *c, int64_t ttl_s, int64_t *lease_id, tg_rpc_status *st) {
  if (lease_id) *lease_id = 0;
  if (!c || !lease_id || ttl_s <= 0)
    return tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "etcd lease grant: bad argument");
  Etcdserverpb__LeaseGrantRequest req = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
  req.ttl = ttl_s;
  ProtobufCMessage *resp = NULL;
  tg_rpc_code code = etcd_unary(c, "/etcdserverpb.Lease/LeaseGrant", &req.base,
                                &etcdserverpb__lease_grant_response__descriptor, &resp, st);
  if (code != TG_RPC_OK) return code;
  Etcdserverpb__LeaseGrantResponse *gr = (Etcdserverpb__LeaseGrantResponse *)resp;
  if (gr->error && gr->error[0])
    code = tg_rpc_status_set(st, TG_RPC_FAILED_PRECONDITION, "etcd lease grant: %s", gr->error);
  else
    *lease_id = gr->id;
  protobuf_c_message_free_unpacked(resp, NULL);
  return code;
}

tg_rpc_code tg_etcd_lease_revoke(tg_etcd *c, int64_t lease_id, tg_rpc_status *st) {
  if (!c) return tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "etcd lease revoke: no client");
  Etcdserverpb__LeaseRevokeRequest req = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
  req.id = lease_id;
  ProtobufCMessage *resp = NULL;
  tg_rpc_code code = etcd_unary(c, "/etcdserverpb.Lease/LeaseRevoke", &req.base,
                                &etcdserverpb__lease_revoke_response__descriptor, &resp, st);
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  return code;
}

tg_rpc_code tg_etcd_lease_ttl(tg_etcd *c, int64_t lease_id, int64_t *ttl_left_s,
                              int64_t *granted_ttl_s, tg_rpc_status *st) {
  if (ttl_left_s) *ttl_left_s = -1;
  if (granted_ttl_s) *granted_ttl_s = 0;
  if (!c) return tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "etcd lease ttl: no client");
  Etcdserverpb__LeaseTimeToLiveRequest req = ETCDSERVERPB__LEASE_TIME_TO_LIVE_REQUEST__INIT;
  req.id = lease_id;
  ProtobufCMessage *resp = NULL;
  tg_rpc_code code = etcd_unary(c, "/etcdserverpb.Lease/LeaseTimeToLive", &req.base,
                                &etcdserverpb__lease_time_to_live_response__descriptor, &resp, st);
  if (code != TG_RPC_OK) return code;
  Etcdserverpb__LeaseTimeToLiveResponse *tr = (Etcdserverpb__LeaseTimeToLiveResponse *)resp;
  if (ttl_left_s) *ttl_left_s = tr->ttl;
  if (granted_ttl_s) *granted_ttl_s = tr->grantedttl;
  protobuf_c_message_free_unpacked(resp, NULL);
  return code;
}

/* ------------------------------------------------------------ keep-alive */

struct tg_etcd_keepalive {
  tg_etcd *c;
  int64_t lease_id;
  tg_etcd_lease_lost_fn on_lost;
  void *user;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv; /* CLOCK_MONOTONIC */
  int stop;          /* under mu */
  int lost;          /* under mu */
  int64_t ttl_s;     /* under mu */
  tg_rpc_stream *stream; /* under mu, so stop can cancel it */
  /* Thread-only state. */
  etcd_conn *conn;
  int64_t expires_at_ms; /* local estimate of when etcd drops the lease */
  char token[ETCD_MAX_TOKEN_BYTES];
};

/* Sleeps until `until_ms` (monotonic) or stop; returns 1 if stopping. */
static int ka_wait(tg_etcd_keepalive *ka, int64_t until_ms) {
  pthread_mutex_lock(&ka->mu);
  while (!ka->stop) {
    int64_t now = tg_clock_mono_ms();
    if (now >= until_ms) break;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = ts.tv_nsec + (until_ms - now) * 1000000;
    ts.tv_sec += ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    pthread_cond_timedwait(&ka->cv, &ka->mu, &ts);
  }
  int stopping = ka->stop;
  pthread_mutex_unlock(&ka->mu);
  return stopping;
}

static void ka_close_stream(tg_etcd_keepalive *ka, int failed) {
  pthread_mutex_lock(&ka->mu);
  tg_rpc_stream *s = ka->stream;
  ka->stream = NULL;
  pthread_mutex_unlock(&ka->mu);
  if (s) tg_rpc_stream_free(s);
  if (ka->conn) etcd_conn_release(ka->c, ka->conn, failed);
  ka->conn = NULL;
}

static int ka_open_stream(tg_etcd_keepalive *ka, tg_rpc_status *st) {
  ka->conn = etcd_conn_acquire(ka->c, st);
  if (!ka->conn) return -1;
  tg_rpc_metadata md[2];
  int n_md = etcd_metadata(ka->c, ka->conn, 0, ka->c->request_timeout_ms, md, ka->token,
                           sizeof ka->token, st);
  if (n_md < 0) return -1;
  tg_rpc_call_opts opts = {
      .deadline_ms = ETCD_STREAM_DEADLINE_MS, .metadata = md, .n_metadata = (size_t)n_md};
  tg_rpc_stream *s = tg_rpc_stream_open(ka->conn->ch, "/etcdserverpb.Lease/LeaseKeepAlive",
                                        &etcdserverpb__lease_keep_alive_response__descriptor,
                                        &opts, st);
  if (!s) return -1;
  pthread_mutex_lock(&ka->mu);
  ka->stream = s;
  if (ka->stop) tg_rpc_stream_cancel(s);
  pthread_mutex_unlock(&ka->mu);
  return 0;
}

/* One refresh on the open stream. Returns 1 refreshed, 0 lease gone,
 * -1 stream failed (st says why). */
static int ka_refresh(tg_etcd_keepalive *ka, tg_rpc_status *st) {
  Etcdserverpb__LeaseKeepAliveRequest req = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
  req.id = ka->lease_id;
  int64_t timeout = ka->c->request_timeout_ms;
  if (tg_rpc_stream_send(ka->stream, &req.base, timeout) != 0) {
    ProtobufCMessage *m = NULL;
    /* The stream's end status says why the send failed. */
    if (tg_rpc_stream_recv(ka->stream, &m, 100, st) == TG_RPC_RECV_MESSAGE)
      protobuf_c_message_free_unpacked(m, NULL);
    if (st->code == TG_RPC_OK) tg_rpc_status_set(st, TG_RPC_UNAVAILABLE, "keep-alive send failed");
    return -1;
  }
  int64_t deadline = tg_clock_mono_ms() + timeout;
  for (;;) {
    ProtobufCMessage *m = NULL;
    int64_t left = deadline - tg_clock_mono_ms();
    if (left <= 0) {
      tg_rpc_status_set(st, TG_RPC_DEADLINE_EXCEEDED, "no keep-alive answer in %lld ms",
                        (long long)timeout);
      return -1;
    }
    tg_rpc_recv_result r = tg_rpc_stream_recv(ka->stream, &m, left, st);
    if (r == TG_RPC_RECV_TIMEOUT) continue;
    if (r == TG_RPC_RECV_END) {
      if (st->code == TG_RPC_OK) tg_rpc_status_set(st, TG_RPC_UNAVAILABLE, "keep-alive stream ended");
      return -1;
    }
    Etcdserverpb__LeaseKeepAliveResponse *kr = (Etcdserverpb__LeaseKeepAliveResponse *)m;
    int64_t ttl = kr->ttl;
    int64_t id = kr->id;
    protobuf_c_message_free_unpacked(m, NULL);
    if (id != ka->lease_id) continue;
    if (ttl <= 0) return 0;
    pthread_mutex_lock(&ka->mu);
    ka->ttl_s = ttl;
    pthread_mutex_unlock(&ka->mu);
    ka->expires_at_ms = tg_clock_mono_ms() + ttl * 1000;
    return 1;
  }
}

static void *ka_main(void *arg) {
  tg_etcd_keepalive *ka = arg;
  int64_t backoff = ETCD_BACKOFF_MIN_MS;
  int lost = 0;
  while (!lost) {
    tg_rpc_status st = {0};
    int refreshed = -1;
    if (ka->stream || ka_open_stream(ka, &st) == 0) refreshed = ka_refresh(ka, &st);
    if (refreshed == 1) {
      backoff = ETCD_BACKOFF_MIN_MS;
      int64_t interval = ka->ttl_s * 1000 / 3;
      if (interval < KEEPALIVE_MIN_INTERVAL_MS) interval = KEEPALIVE_MIN_INTERVAL_MS;
      if (ka_wait(ka, tg_clock_mono_ms() + interval)) break;
      continue;
    }
    if (refreshed == 0) {
      TG_WARN("etcd: lease %llx expired or was revoked", (unsigned long long)ka->lease_id);
      lost = 1;
      break;
    }
    pthread_mutex_lock(&ka->mu);
    int stopping = ka->stop;
    pthread_mutex_unlock(&ka->mu);
    if (stopping) break;
    if (ka->c->username && etcd_token_rejected(&st)) etcd_token_invalidate(ka->c, ka->token);
    TG_DEBUG("etcd: keep-alive of lease %llx: %s: %s; reconnecting",
             (unsigned long long)ka->lease_id, tg_rpc_code_name(st.code), st.message);
    ka_close_stream(ka, etcd_retryable(&st) || st.code == TG_RPC_CANCELLED);
    if (tg_clock_mono_ms() >= ka->expires_at_ms) {
      TG_WARN("etcd: lease %llx not refreshed for its whole TTL (%s), counting it lost",
              (unsigned long long)ka->lease_id, st.message);
      lost = 1;
      break;
    }
    if (ka_wait(ka, tg_clock_mono_ms() + backoff)) break;
    backoff = backoff * 2 > ETCD_BACKOFF_MAX_MS ? ETCD_BACKOFF_MAX_MS : backoff * 2;
  }
  ka_close_stream(ka, 0);
  if (lost) {
    pthread_mutex_lock(&ka->mu);
    ka->lost = 1;
    pthread_mutex_unlock(&ka->mu);
    if (ka->on_lost) ka->on_lost(ka->lease_id, ka->user);
  }
  return NULL;
}

tg_etcd_keepalive *tg_etcd_keepalive_start(tg_etcd *c, int64_t lease_id,
                                           tg_etcd_lease_lost_fn on_lost, void *user,
                                           tg_rpc_status *st) {
  if (!c) {
    tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "etcd keep-alive: no client");
    return NULL;
  }
  int64_t ttl_left = -1, granted = 0;
  if (tg_etcd_lease_ttl(c, lease_id, &ttl_left, &granted, st) != TG_RPC_OK) return NULL;
  if (ttl_left <= 0) {
    tg_rpc_status_set(st, TG_RPC_NOT_FOUND, "etcd keep-alive: lease %llx does not exist",
                      (unsigned long long)lease_id);
    return NULL;
  }
  tg_etcd_keepalive *ka = calloc(1, sizeof *ka);
  if (!ka) {
    tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED, "etcd keep-alive: out of memory");
    return NULL;
  }
  ka->c = c;
  ka->lease_id = lease_id;
  ka->on_lost = on_lost;
  ka->user = user;
  ka->ttl_s = granted;
  ka->expires_at_ms = tg_clock_mono_ms() + ttl_left * 1000;
  pthread_mutex_init(&ka->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&ka->cv, &ca);
  pthread_condattr_destroy(&ca);
  int rc = pthread_create(&ka->thread, NULL, ka_main, ka);
  if (rc != 0) {
    tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED, "etcd keep-alive: thread: %s", strerror(rc));
    pthread_cond_destroy(&ka->cv);
    pthread_mutex_destroy(&ka->mu);
    free(ka);
    return NULL;
  }
  tg_rpc_status_set(st, TG_RPC_OK, "ok");
  return ka;
}

int tg_etcd_keepalive_lost(tg_etcd_keepalive *ka) {
  if (!ka) return 1;
  pthread_mutex_lock(&ka->mu);
  int lost = ka->lost;
  pthread_mutex_unlock(&ka->mu);
  return lost;
}

int64_t tg_etcd_keepalive_ttl(tg_etcd_keepalive *ka) {
  if (!ka) return 0;
  pthread_mutex_lock(&ka->mu);
  int64_t ttl = ka->ttl_s;
  pthread_mutex_unlock(&ka->mu);
  return ttl;
}

void tg_etcd_keepalive_stop(tg_etcd_keepalive *ka) {
  if (!ka) return;
  pthread_mutex_lock(&ka->mu);
  ka->stop = 1;
  if (ka->stream) tg_rpc_stream_cancel(ka->stream);
  pthread_cond_broadcast(&ka->cv);
  pthread_mutex_unlock(&ka->mu);
  pthread_join(ka->thread, NULL);
  pthread_cond_destroy(&ka->cv);
  pthread_mutex_destroy(&ka->mu);
  free(ka);
}
