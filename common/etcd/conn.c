/* Connections, authentication and failover for the etcd client.
 *
 * Why this file exists: every verb of the client (kv.c, txn.c, lease.c,
 * watch.c) needs the same three things from a multi-member etcd: a channel
 * to a member that works, the auth token as metadata, and a decision about
 * what to do when a call fails. They live here once.
 *
 * The client prefers one endpoint (`current`). When a call on it fails in
 * a way another member could fix (UNAVAILABLE: connection refused, member
 * stopping, "no leader", "leader changed"; DEADLINE_EXCEEDED of one
 * attempt), the channel is dropped, the next endpoint becomes preferred and
 * the call is retried after a short, growing backoff until the request's
 * own timeout. When etcd says the token is invalid (simple tokens expire),
 * the token is forgotten and fetched again with Auth/Authenticate. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/etcd/etcd_internal.h"
#include "common/clock/clock.h"
#include "common/log/log.h"


void etcd_sleep_ms(int64_t ms) {
  if (ms <= 0) return;
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* ------------------------------------------------------------ open/close */

static char *dup_or_null(const char *s, int *oom) {
  if (!s) return NULL;
  char *d = strdup(s);
  if (!d) *oom = 1;
  return d;
}

static int parse_endpoints(tg_etcd *c, const char *list, tg_rpc_status *st) {
  const char *p = list;
  while (*p) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    while (len > 0 && (*p == ' ' || *p == '\t')) {
      p++;
      len--;
    }
    while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t')) len--;
    if (len > 0) {
      if (c->n_endpoints == ETCD_MAX_ENDPOINTS) {
        tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "etcd: more than %d endpoints",
                          ETCD_MAX_ENDPOINTS);
        return -1;
      }
      char *ep = strndup(p, len);
      if (!ep) {
        tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED, "etcd: out of memory");
        return -1;
      }
      c->endpoints[c->n_endpoints++] = ep;
    }
    if (!comma) break;
    p = comma + 1;
  }
  if (c->n_endpoints == 0) {
    tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "etcd: no endpoints in \"%s\"", list);
    return -1;
  }
  return 0;
}

tg_etcd *tg_etcd_open(const tg_etcd_config *cfg, tg_rpc_status *st) {
  if (!cfg || !cfg->endpoints) {
    tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "etcd: no endpoints configured");
    return NULL;
  }
  if (cfg->username && !cfg->password) {
    tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "etcd: username without password");
    return NULL;
  }
  tg_etcd *c = calloc(1, sizeof *c);
  if (!c) {
    tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED, "etcd: out of memory");
    return NULL;
  }
  pthread_mutex_init(&c->mu, NULL);
  c->request_timeout_ms = cfg->request_timeout_ms > 0 ? cfg->request_timeout_ms : 5000;
  if (parse_endpoints(c, cfg->endpoints, st) != 0) goto err;
  int oom = 0;
  if (cfg->tls) {
    c->has_tls = 1;
    c->tls = *cfg->tls;
    c->tls.ca_file = c->tls_ca = dup_or_null(cfg->tls->ca_file, &oom);
    c->tls.cert_file = c->tls_cert = dup_or_null(cfg->tls->cert_file, &oom);
    c->tls.key_file = c->tls_key = dup_or_null(cfg->tls->key_file, &oom);
    c->tls.server_name = c->tls_server_name = dup_or_null(cfg->tls->server_name, &oom);
  }
  c->username = dup_or_null(cfg->username, &oom);
  c->password = dup_or_null(cfg->password, &oom);
  if (oom) {
    tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED, "etcd: out of memory");
    goto err;
  }
  if (c->username) {
    /* Authenticate now so that bad credentials fail at open. */
    Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
    etcd_set_key(&req.key, "\0");
    req.count_only = 1;
    req.serializable = 1;
    ProtobufCMessage *resp = NULL;
    tg_rpc_status probe = {0};
    tg_rpc_code code = etcd_unary(c, "/etcdserverpb.KV/Range", &req.base,
                                  &etcdserverpb__range_response__descriptor, &resp, &probe);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    /* Only authentication problems fail open; a user without read
     * permission on "" still has a valid login. */
    pthread_mutex_lock(&c->mu);
    int have_token = c->token[0] != '\0';
    pthread_mutex_unlock(&c->mu);
    if (!have_token) {
      if (st) *st = probe;
      if (code == TG_RPC_OK) tg_rpc_status_set(st, TG_RPC_UNAUTHENTICATED, "etcd: no token");
      goto err;
    }
  }
  tg_rpc_status_set(st, TG_RPC_OK, "ok");
  return c;
err:
  tg_etcd_close(c);
  return NULL;
}

void tg_etcd_close(tg_etcd *c) {
  if (!c) return;
  for (size_t i = 0; i < ETCD_MAX_ENDPOINTS; i++) {
    etcd_conn *conn = c->conns[i];
    if (!conn) continue;
    /* Users must be gone by now (watches closed, keep-alives stopped). */
    if (conn->refs > 1) TG_WARN("etcd: closing with a channel still in use");
    tg_rpc_channel_free(conn->ch);
    free(conn);
  }
  for (size_t i = 0; i < c->n_endpoints; i++) free(c->endpoints[i]);
  free(c->tls_ca);
  free(c->tls_cert);
  free(c->tls_key);
  free(c->tls_server_name);
  free(c->username);
  if (c->password) {
    memset(c->password, 0, strlen(c->password));
    free(c->password);
  }
  pthread_mutex_destroy(&c->mu);
  free(c);
}

/* ------------------------------------------------------------- channels */

etcd_conn *etcd_conn_acquire(tg_etcd *c, tg_rpc_status *st) {
  pthread_mutex_lock(&c->mu);
  size_t idx = c->current;
  etcd_conn *conn = c->conns[idx];
  if (!conn) {
    conn = calloc(1, sizeof *conn);
    if (!conn) {
      pthread_mutex_unlock(&c->mu);
      tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED, "etcd: out of memory");
      return NULL;
    }
    tg_rpc_channel_config cc = {.tls = c->has_tls ? &c->tls : NULL};
    char err[256] = "";
    conn->ch = tg_rpc_channel_new(c->endpoints[idx], &cc, err, sizeof err);
    if (!conn->ch) {
      pthread_mutex_unlock(&c->mu);
      free(conn);
      /* A bad target or unreadable TLS files: no retry will fix that. */
      tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "etcd: channel to %s: %s",
                        c->endpoints[idx], err);
      return NULL;
    }
    conn->endpoint = idx;
    conn->refs = 1; /* the slot's reference */
    c->conns[idx] = conn;
  }
  conn->refs++;
  pthread_mutex_unlock(&c->mu);
  return conn;
}

void etcd_conn_release(tg_etcd *c, etcd_conn *conn, int failed) {
  if (!conn) return;
  int free_it = 0;
  pthread_mutex_lock(&c->mu);
  if (failed && c->conns[conn->endpoint] == conn) {
    c->conns[conn->endpoint] = NULL;
    conn->refs--; /* the slot's reference */
  }
  if (failed && c->current == conn->endpoint) c->current = (c->current + 1) % c->n_endpoints;
  free_it = --conn->refs == 0;
  pthread_mutex_unlock(&c->mu);
  if (free_it) {
    tg_rpc_channel_free(conn->ch);
    free(conn);
  }
}

/* ------------------------------------------------------- errors and auth */

int etcd_retryable(const tg_rpc_status *st) {
  if (st->code == TG_RPC_UNAVAILABLE || st->code == TG_RPC_DEADLINE_EXCEEDED) return 1;
  /* etcd's own words for "ask another member"; they normally arrive as
   * UNAVAILABLE, but not every path maps them. */
  return strstr(st->message, "leader changed") != NULL || strstr(st->message, "no leader") != NULL;
}

int etcd_token_rejected(const tg_rpc_status *st) {
  return (st->code == TG_RPC_UNAUTHENTICATED || st->code == TG_RPC_INVALID_ARGUMENT) &&
         strstr(st->message, "invalid auth token") != NULL;
}

void etcd_token_invalidate(tg_etcd *c, const char *token) {
  pthread_mutex_lock(&c->mu);
  if (strcmp(c->token, token) == 0) c->token[0] = '\0';
  pthread_mutex_unlock(&c->mu);
}

/* Auth/Authenticate on `conn`; stores the token. */
static tg_rpc_code authenticate(tg_etcd *c, etcd_conn *conn, int64_t timeout_ms,
                                tg_rpc_status *st) {
  Etcdserverpb__AuthenticateRequest req = ETCDSERVERPB__AUTHENTICATE_REQUEST__INIT;
  req.name = c->username;
  req.password = c->password;
  ProtobufCMessage *resp = NULL;
  tg_rpc_call_opts opts = {.deadline_ms = timeout_ms};
  tg_rpc_code code = tg_rpc_unary(conn->ch, "/etcdserverpb.Auth/Authenticate", &req.base,
                                  &etcdserverpb__authenticate_response__descriptor, &resp, &opts,
                                  st);
  if (code != TG_RPC_OK) return code;
  Etcdserverpb__AuthenticateResponse *ar = (Etcdserverpb__AuthenticateResponse *)resp;
  if (!ar->token || !ar->token[0] || strlen(ar->token) >= ETCD_MAX_TOKEN_BYTES) {
    code = tg_rpc_status_set(st, TG_RPC_UNAUTHENTICATED,
                             "etcd: %s returned no usable auth token", c->endpoints[conn->endpoint]);
  } else {
    pthread_mutex_lock(&c->mu);
    snprintf(c->token, sizeof c->token, "%s", ar->token);
    c->token_gen++;
    pthread_mutex_unlock(&c->mu);
    TG_DEBUG("etcd: authenticated as %s at %s", c->username, c->endpoints[conn->endpoint]);
  }
  protobuf_c_message_free_unpacked(resp, NULL);
  return code;
}

int etcd_metadata(tg_etcd *c, etcd_conn *conn, int hasleader, int64_t timeout_ms,
                  tg_rpc_metadata *md, char *token_buf, size_t token_cap, tg_rpc_status *st) {
  int n = 0;
  token_buf[0] = '\0';
  if (c->username) {
    pthread_mutex_lock(&c->mu);
    snprintf(token_buf, token_cap, "%s", c->token);
    pthread_mutex_unlock(&c->mu);
    if (!token_buf[0]) {
      if (authenticate(c, conn, timeout_ms, st) != TG_RPC_OK) return -1;
      pthread_mutex_lock(&c->mu);
      snprintf(token_buf, token_cap, "%s", c->token);
      pthread_mutex_unlock(&c->mu);
    }
    md[n].key = "token";
    md[n].value = token_buf;
    n++;
  }
  if (hasleader) {
    md[n].key = "hasleader";
    md[n].value = "true";
    n++;
  }
  return n;
}

/* ---------------------------------------------------------------- unary */

tg_rpc_code etcd_unary(tg_etcd *c, const char *path, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                       tg_rpc_status *st) {
  int64_t start = tg_clock_mono_ms();
  int64_t deadline = start + c->request_timeout_ms;
  /* With several members, one attempt may not eat the whole budget: a
   * member without a leader (an election in progress, or cut off from the
   * others) drops the proposal and holds the request until its own
   * timeout of several seconds. A bounded attempt lets the retry reach the
   * new leader instead. */
  int64_t attempt_cap = c->request_timeout_ms;
  if (c->n_endpoints > 1) {
    attempt_cap = c->request_timeout_ms / 3;
    if (attempt_cap < ETCD_ATTEMPT_MIN_MS) attempt_cap = ETCD_ATTEMPT_MIN_MS;
    if (attempt_cap > ETCD_ATTEMPT_MAX_MS) attempt_cap = ETCD_ATTEMPT_MAX_MS;
  }
  int64_t backoff = ETCD_BACKOFF_MIN_MS;
  int attempts = 0, reauths = 0;
  tg_rpc_status last = {TG_RPC_DEADLINE_EXCEEDED, "no attempt made"};
  *resp = NULL;
  for (;;) {
    int64_t left = deadline - tg_clock_mono_ms();
    if (left <= 0) break;
    int64_t attempt_ms = left < attempt_cap ? left : attempt_cap;
    attempts++;
    etcd_conn *conn = etcd_conn_acquire(c, &last);
    if (!conn) {
      if (st) *st = last;
      return last.code;
    }
    tg_rpc_metadata md[2];
    char token[ETCD_MAX_TOKEN_BYTES];
    int n_md = etcd_metadata(c, conn, 0, attempt_ms, md, token, sizeof token, &last);
    if (n_md >= 0) {
      tg_rpc_call_opts opts = {.deadline_ms = attempt_ms, .metadata = md, .n_metadata = (size_t)n_md};
      if (tg_rpc_unary(conn->ch, path, req, resp_desc, resp, &opts, &last) == TG_RPC_OK) {
        etcd_conn_release(c, conn, 0);
        if (st) *st = last;
        return TG_RPC_OK;
      }
      if (c->username && etcd_token_rejected(&last) && reauths < 3) {
        reauths++;
        etcd_token_invalidate(c, token);
        etcd_conn_release(c, conn, 0);
        continue;
      }
    }
    if (!etcd_retryable(&last)) {
      etcd_conn_release(c, conn, 0);
      if (st) {
        *st = last;
        if (strncmp(st->message, "etcd", 4) != 0) {
          char msg[sizeof st->message];
          snprintf(msg, sizeof msg, "%s", last.message);
          tg_rpc_status_set(st, last.code, "etcd %s at %s: %s", strrchr(path, '/') + 1,
                            c->endpoints[conn->endpoint], msg);
        }
      }
      return last.code;
    }
    TG_DEBUG("etcd: %s at %s failed (%s: %s), trying the next endpoint", path,
             c->endpoints[conn->endpoint], tg_rpc_code_name(last.code), last.message);
    etcd_conn_release(c, conn, 1);
    left = deadline - tg_clock_mono_ms();
    etcd_sleep_ms(backoff < left ? backoff : left);
    backoff = backoff * 2 > ETCD_BACKOFF_MAX_MS ? ETCD_BACKOFF_MAX_MS : backoff * 2;
  }
  char msg[sizeof last.message];
  snprintf(msg, sizeof msg, "%s", last.message);
  tg_rpc_code code = last.code == TG_RPC_OK ? TG_RPC_DEADLINE_EXCEEDED : last.code;
  tg_rpc_status_set(st, code, "etcd %s: no endpoint answered within %lld ms (%d attempts): %s",
                    strrchr(path, '/') + 1, (long long)c->request_timeout_ms, attempts, msg);
  return code;
}

/* ------------------------------------------------------------ key helpers */

void etcd_set_key(ProtobufCBinaryData *dst, const char *key) {
  dst->data = (uint8_t *)key;
  dst->len = key[0] ? strlen(key) : 1; /* "" means the single key "\0" */
}

int etcd_set_range(ProtobufCBinaryData *key_out, ProtobufCBinaryData *end_out, const char *key,
                   int prefix, const char *range_end, uint8_t **end_storage) {
  static uint8_t zero = 0;
  *end_storage = NULL;
  key_out->data = (uint8_t *)key;
  key_out->len = strlen(key);
  end_out->data = NULL;
  end_out->len = 0;
  if (range_end) {
    end_out->data = (uint8_t *)range_end;
    end_out->len = strlen(range_end);
    if (end_out->len == 0) { /* "" as end: every key >= key */
      end_out->data = &zero;
      end_out->len = 1;
    }
  } else if (prefix) {
    size_t len = key_out->len;
    uint8_t *end = malloc(len ? len : 1);
    if (!end) return -1;
    memcpy(end, key, len);
    while (len > 0 && end[len - 1] == 0xff) len--;
    if (len == 0) { /* every key */
      end[0] = 0;
      len = 1;
    } else {
      end[len - 1]++;
    }
    *end_storage = end;
    end_out->data = end;
    end_out->len = len;
  }
  if (key_out->len == 0) { /* "" is the smallest key */
    key_out->data = &zero;
    key_out->len = 1;
  }
  return 0;
}

int etcd_kv_copy(tg_etcd_kv *dst, const Mvccpb__KeyValue *src) {
  memset(dst, 0, sizeof *dst);
  dst->key = malloc(src->key.len + 1);
  dst->value = malloc(src->value.len + 1);
  if (!dst->key || !dst->value) {
    etcd_kv_clear(dst);
    return -1;
  }
  if (src->key.len) memcpy(dst->key, src->key.data, src->key.len);
  dst->key[src->key.len] = '\0';
  dst->key_len = src->key.len;
  if (src->value.len) memcpy(dst->value, src->value.data, src->value.len);
  dst->value[src->value.len] = '\0';
  dst->value_len = src->value.len;
  dst->create_revision = src->create_revision;
  dst->mod_revision = src->mod_revision;
  dst->version = src->version;
  dst->lease = src->lease;
  return 0;
}

void etcd_kv_clear(tg_etcd_kv *kv) {
  if (!kv) return;
  free(kv->key);
  free(kv->value);
  memset(kv, 0, sizeof *kv);
}
