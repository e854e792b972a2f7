/* Pieces shared by the etcd client's files (conn.c, kv.c, txn.c, lease.c,
 * watch.c); not part of the public contract in etcd.h. */
#ifndef TG_ETCD_INTERNAL_H
#define TG_ETCD_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "common/etcd/etcd.h"
#include "common/rpc/rpc.h"
#include "proto/etcd/kv.pb-c.h"
#include "proto/etcd/rpc.pb-c.h"

#define ETCD_MAX_ENDPOINTS 16
#define ETCD_MAX_TOKEN_BYTES 2048
#define ETCD_BACKOFF_MIN_MS 25
#define ETCD_BACKOFF_MAX_MS 500
/* Bounds on one attempt of a unary call when there are several endpoints. */
#define ETCD_ATTEMPT_MIN_MS 1000
#define ETCD_ATTEMPT_MAX_MS 2500
/* A long-lived stream's gRPC deadline; the stream is simply reopened then. */
#define ETCD_STREAM_DEADLINE_MS (24LL * 3600 * 1000)

/* One channel to one endpoint. A channel that failed is dropped from its
 * slot (a fresh one reconnects at once instead of waiting out gRPC's
 * reconnect backoff) and freed when its last user releases it. */
typedef struct etcd_conn {
  tg_rpc_channel *ch;
  size_t endpoint;
  int refs; /* under tg_etcd.mu */
} etcd_conn;

struct tg_etcd {
  pthread_mutex_t mu;
  char *endpoints[ETCD_MAX_ENDPOINTS];
  size_t n_endpoints;
  etcd_conn *conns[ETCD_MAX_ENDPOINTS]; /* current channel per endpoint, or NULL */
  size_t current;                       /* preferred endpoint */
  int has_tls;
  tg_rpc_tls tls; /* strings below are owned copies */
  char *tls_ca, *tls_cert, *tls_key, *tls_server_name;
  char *username;
  char *password;
  char token[ETCD_MAX_TOKEN_BYTES]; /* "" until authenticated */
  uint64_t token_gen;
  int64_t request_timeout_ms;
};

void etcd_sleep_ms(int64_t ms);

/* The channel for the preferred endpoint (created if needed), referenced. */
etcd_conn *etcd_conn_acquire(tg_etcd *c, tg_rpc_status *st);
/* Drops one reference. failed: the endpoint just failed, so forget this
 * channel and prefer the next endpoint. */
void etcd_conn_release(tg_etcd *c, etcd_conn *conn, int failed);

/* Fills md (room for 2) with the auth token and, if hasleader, the
 * "hasleader" entry; token_buf holds the token copy. Authenticates first
 * when auth is configured and there is no token yet. Returns the count,
 * or -1 with st set. */
int etcd_metadata(tg_etcd *c, etcd_conn *conn, int hasleader, int64_t timeout_ms,
                  tg_rpc_metadata *md, char *token_buf, size_t token_cap, tg_rpc_status *st);
/* Forgets `token` (if still current) so the next call authenticates again. */
void etcd_token_invalidate(tg_etcd *c, const char *token);

/* Whether a failure is worth retrying on another endpoint. */
int etcd_retryable(const tg_rpc_status *st);
/* Whether etcd refused the auth token (expired or unknown). */
int etcd_token_rejected(const tg_rpc_status *st);

/* One unary call with failover, re-authentication and backoff, within the
 * client's request timeout. */
tg_rpc_code etcd_unary(tg_etcd *c, const char *path, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                       tg_rpc_status *st);

/* Key helpers. prefix end: the smallest key greater than every key that
 * starts with `key` ("\0" for "every key"). */
void etcd_set_key(ProtobufCBinaryData *dst, const char *key);
int etcd_set_range(ProtobufCBinaryData *key_out, ProtobufCBinaryData *end_out, const char *key,
                   int prefix, const char *range_end, uint8_t **end_storage);

int etcd_kv_copy(tg_etcd_kv *dst, const Mvccpb__KeyValue *src);
void etcd_kv_clear(tg_etcd_kv *kv);
int etcd_range_result_copy(tg_etcd_range_result *out, const Etcdserverpb__RangeResponse *r);

/* Fills a RangeRequest from opts; *end_storage must be freed by the caller. */
int etcd_fill_range(Etcdserverpb__RangeRequest *req, const char *key,
                    const tg_etcd_range_opts *opts, uint8_t **end_storage);

#endif
