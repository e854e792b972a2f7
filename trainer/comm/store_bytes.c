/* A few bytes handed from one rank to the others through the generation's
 * store (etcd, under World.store_prefix). See comm_backend.h.
 *
 * Used for NCCL's unique id: it names a listening socket that
 * ncclGetUniqueId opens in the calling process, so it must be made by a
 * rank of the world (rank 0), not by the coordinator. The coordinator's
 * part is the prefix: it allocates one per generation in etcd, so an id
 * can never be read by a rank of another generation.
 *
 * Publishing is create-only (a transaction that compares the key's
 * version with 0): a second value for one generation is refused, never
 * swapped under ranks that already read the first. Waiting polls the key
 * with a growing pause (1 ms to 50 ms): ranks usually arrive within a few
 * milliseconds of each other, and a watch would cost a stream per rank. */
#include "trainer/comm/store_bytes.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/etcd/etcd.h"
#include "trainer/comm/comm_backend.h"

#define POLL_MIN_MS 1
#define POLL_MAX_MS 50

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static tg_etcd *open_store(const char *endpoints, int64_t deadline_ms, tg_comm_status *st) {
  int64_t left = deadline_ms - now_ms();
  if (left <= 0) {
    tg_comm_status_set(st, TG_COMM_TIMEOUT, "deadline passed before the store was reached");
    return NULL;
  }
  tg_etcd_config ec = {.endpoints = endpoints, .request_timeout_ms = left < 5000 ? left : 5000};
  tg_rpc_status est = {0};
  tg_etcd *e = tg_etcd_open(&ec, &est);
  if (!e) tg_comm_status_set(st, TG_COMM_ERROR, "store %s: %s", endpoints, est.message);
  return e;
}

static tg_comm_code check_args(const char *endpoints, const char *key, const void *bytes, size_t len,
                               tg_comm_status *st) {
  if (!endpoints || !*endpoints || !key || !*key || !bytes)
    return tg_comm_status_set(st, TG_COMM_ERROR, "store bytes: endpoints, key and buffer are required");
  if (len == 0 || len > TG_COMM_STORE_BYTES_MAX)
    return tg_comm_status_set(st, TG_COMM_ERROR, "store bytes: %zu bytes (1 to %d)", len, TG_COMM_STORE_BYTES_MAX);
  return TG_COMM_OK;
}

tg_comm_code tg_comm_store_publish(const char *endpoints, const char *key, const void *bytes, size_t len,
                                   int64_t deadline_ms, tg_comm_status *st) {
  tg_comm_code code = check_args(endpoints, key, bytes, len, st);
  if (code != TG_COMM_OK) return code;
  tg_etcd *e = open_store(endpoints, deadline_ms, st);
  if (!e) return st ? st->code : TG_COMM_ERROR;
  tg_etcd_txn *txn = tg_etcd_txn_new();
  code = TG_COMM_ERROR;
  if (!txn || tg_etcd_txn_cmp_version(txn, key, TG_ETCD_EQ, 0) != 0 ||
      tg_etcd_txn_put(txn, TG_ETCD_THEN, key, bytes, len, 0) != 0) {
    tg_comm_status_set(st, TG_COMM_ERROR, "store publish %s: out of memory", key);
    goto out;
  }
  tg_etcd_txn_result res = {0};
  tg_rpc_status est = {0};
  if (tg_etcd_txn_commit(e, txn, &res, &est) != TG_RPC_OK) {
    code = tg_comm_status_set(st, est.code == TG_RPC_DEADLINE_EXCEEDED ? TG_COMM_TIMEOUT : TG_COMM_ERROR,
                              "store publish %s: %s: %s", key, tg_rpc_code_name(est.code), est.message);
    goto out;
  }
  int succeeded = res.succeeded;
  tg_etcd_txn_result_free(&res);
  if (!succeeded) {
    code = tg_comm_status_set(st, TG_COMM_ERROR,
                              "store publish %s: a value is already there (two publishers in one generation?)",
                              key);
    goto out;
  }
  code = tg_comm_status_set(st, TG_COMM_OK, "OK");
out:
  tg_etcd_txn_free(txn);
  tg_etcd_close(e);
  return code;
}

/* One look at the store: 1 when the awaited value(s) are there (or a
 * hard failure, with *code set), 0 to poll again; a failed request fills
 * last_error and is retried. */
typedef int (*look_fn)(tg_etcd *e, void *ctx, tg_comm_code *code, tg_comm_status *st, char *last_error,
                       size_t last_error_len);

/* Polls `look` with a growing pause until it is done, the deadline passes
 * or the wait is cancelled. */
static tg_comm_code poll_store(const char *endpoints, const char *what, look_fn look, void *ctx,
                               int64_t deadline_ms, int (*cancelled)(void *), void *cancel_user,
                               tg_comm_status *st) {
  tg_etcd *e = open_store(endpoints, deadline_ms, st);
  if (!e) return st ? st->code : TG_COMM_ERROR;
  int64_t pause = POLL_MIN_MS;
  char last_error[384] = "";
  tg_comm_code code;
  for (;;) {
    if (look(e, ctx, &code, st, last_error, sizeof last_error)) break;
    if (cancelled && cancelled(cancel_user)) {
      code = tg_comm_status_set(st, TG_COMM_ABORTED, "store await %s: aborted", what);
      break;
    }
    int64_t left = deadline_ms - now_ms();
    if (left <= 0) {
      code = tg_comm_status_set(st, TG_COMM_TIMEOUT, "store await %s: not all published before the deadline%s",
                                what, last_error);
      break;
    }
    sleep_ms(pause < left ? pause : left);
    if (pause < POLL_MAX_MS) pause *= 2;
  }
  tg_etcd_close(e);
  return code;
}

static void note_error(char *last_error, size_t len, const tg_rpc_status *est) {
  snprintf(last_error, len, "; last store error: %s: %s", tg_rpc_code_name(est->code), est->message);
}

typedef struct {
  const char *key;
  void *bytes;
  size_t len;
} one_value;

static int look_one(tg_etcd *e, void *ctx, tg_comm_code *code, tg_comm_status *st, char *last_error,
                    size_t last_error_len) {
  one_value *v = ctx;
  tg_etcd_range_result r = {0};
  tg_rpc_status est = {0};
  if (tg_etcd_get(e, v->key, NULL, &r, &est) != TG_RPC_OK) {
    note_error(last_error, last_error_len, &est);
    return 0;
  }
  int done = r.n_kvs == 1;
  if (done) {
    size_t got = r.kvs[0].value_len;
    if (got == v->len) memcpy(v->bytes, r.kvs[0].value, v->len);
    *code = got == v->len ? tg_comm_status_set(st, TG_COMM_OK, "OK")
                          : tg_comm_status_set(st, TG_COMM_ERROR, "store await %s: %zu bytes, expected %zu",
                                               v->key, got, v->len);
  }
  tg_etcd_range_result_free(&r);
  return done;
}

tg_comm_code tg_comm_store_await(const char *endpoints, const char *key, void *bytes, size_t len,
                                 int64_t deadline_ms, int (*cancelled)(void *), void *cancel_user,
                                 tg_comm_status *st) {
  tg_comm_code code = check_args(endpoints, key, bytes, len, st);
  if (code != TG_COMM_OK) return code;
  one_value v = {key, bytes, len};
  return poll_store(endpoints, key, look_one, &v, deadline_ms, cancelled, cancel_user, st);
}

#define INDEX_DIGITS 8
#define INDEX_LIMIT 100000000

int tg_comm_store_indexed_key(char *key, size_t keylen, const char *prefix, int index) {
  if (index < 0 || index >= INDEX_LIMIT) return -1;
  int n = snprintf(key, keylen, "%s%0*d", prefix, INDEX_DIGITS, index);
  return n < 0 || (size_t)n >= keylen ? -1 : 0;
}

typedef struct {
  const char *prefix;
  char from[512], to[512]; /* [first, first + n) as keys */
  int first, n;
  size_t len;
  uint8_t *out;
} list_values;

/* The index of a list entry's key, or -1 when it is not one of the list. */
static int entry_index(const list_values *v, const char *key) {
  size_t plen = strlen(v->prefix);
  if (strncmp(key, v->prefix, plen) != 0 || strlen(key + plen) != INDEX_DIGITS) return -1;
  int index = 0;
  for (const char *d = key + plen; *d; d++) {
    if (*d < '0' || *d > '9') return -1;
    index = index * 10 + (*d - '0');
  }
  return index >= v->first && index < v->first + v->n ? index : -1;
}

static int look_list(tg_etcd *e, void *ctx, tg_comm_code *code, tg_comm_status *st, char *last_error,
                     size_t last_error_len) {
  list_values *v = ctx;
  /* Count first: while ranks are still arriving, no values travel. */
  tg_etcd_range_opts count = {.range_end = v->to, .count_only = 1};
  tg_etcd_range_result r = {0};
  tg_rpc_status est = {0};
  if (tg_etcd_get(e, v->from, &count, &r, &est) != TG_RPC_OK) {
    note_error(last_error, last_error_len, &est);
    return 0;
  }
  int64_t there = r.count;
  tg_etcd_range_result_free(&r);
  if (there < v->n) return 0;
  tg_etcd_range_opts all = {.range_end = v->to};
  if (tg_etcd_get(e, v->from, &all, &r, &est) != TG_RPC_OK) {
    note_error(last_error, last_error_len, &est);
    return 0;
  }
  *code = tg_comm_status_set(st, TG_COMM_OK, "OK");
  if (r.n_kvs != (size_t)v->n)
    *code = tg_comm_status_set(st, TG_COMM_ERROR, "store gather %s: %zu keys in the list's range, expected %d",
                               v->prefix, r.n_kvs, v->n);
  for (size_t i = 0; i < r.n_kvs && *code == TG_COMM_OK; i++) {
    int index = entry_index(v, r.kvs[i].key);
    if (index < 0)
      *code = tg_comm_status_set(st, TG_COMM_ERROR, "store gather: %s is not an entry of %s", r.kvs[i].key,
                                 v->prefix);
    else if (r.kvs[i].value_len != v->len)
      *code = tg_comm_status_set(st, TG_COMM_ERROR, "store gather %s: %zu bytes, expected %zu", r.kvs[i].key,
                                 r.kvs[i].value_len, v->len);
    else
      memcpy(v->out + (size_t)(index - v->first) * v->len, r.kvs[i].value, v->len);
  }
  tg_etcd_range_result_free(&r);
  return 1;
}

tg_comm_code tg_comm_store_gather(const char *endpoints, const char *prefix, int first, int n, size_t len,
                                  void *out, int64_t deadline_ms, int (*cancelled)(void *), void *cancel_user,
                                  tg_comm_status *st) {
  list_values v = {.prefix = prefix, .first = first, .n = n, .len = len, .out = out};
  tg_comm_code code = check_args(endpoints, prefix, out, len, st);
  if (code != TG_COMM_OK) return code;
  if (first < 0 || n < 1 || n > INDEX_LIMIT - first || (size_t)n > SIZE_MAX / len ||
      tg_comm_store_indexed_key(v.from, sizeof v.from, prefix, first) != 0 ||
      tg_comm_store_indexed_key(v.to, sizeof v.to, prefix, first + n) != 0)
    return tg_comm_status_set(st, TG_COMM_ERROR, "store gather %s: entries %d..%d (first >= 0, n >= 1, "
                              "below %d, prefix under %zu bytes)", prefix ? prefix : "", first, first + n - 1,
                              INDEX_LIMIT, sizeof v.from - INDEX_DIGITS - 1);
  return poll_store(endpoints, prefix, look_list, &v, deadline_ms, cancelled, cancel_user, st);
}
