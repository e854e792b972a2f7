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

tg_comm_code tg_comm_store_await(const char *endpoints, const char *key, void *bytes, size_t len,
                                 int64_t deadline_ms, int (*cancelled)(void *), void *cancel_user,
                                 tg_comm_status *st) {
  tg_comm_code code = check_args(endpoints, key, bytes, len, st);
  if (code != TG_COMM_OK) return code;
  tg_etcd *e = open_store(endpoints, deadline_ms, st);
  if (!e) return st ? st->code : TG_COMM_ERROR;
  int64_t pause = POLL_MIN_MS;
  char last_error[384] = "";
  for (;;) {
    tg_etcd_range_result r = {0};
    tg_rpc_status est = {0};
    if (tg_etcd_get(e, key, NULL, &r, &est) == TG_RPC_OK) {
      if (r.n_kvs == 1) {
        size_t got = r.kvs[0].value_len;
        if (got == len) memcpy(bytes, r.kvs[0].value, len);
        tg_etcd_range_result_free(&r);
        code = got == len ? tg_comm_status_set(st, TG_COMM_OK, "OK")
                          : tg_comm_status_set(st, TG_COMM_ERROR, "store await %s: %zu bytes, expected %zu",
                                               key, got, len);
        break;
      }
      tg_etcd_range_result_free(&r);
    } else {
      snprintf(last_error, sizeof last_error, "; last store error: %s: %s", tg_rpc_code_name(est.code),
               est.message);
    }
    if (cancelled && cancelled(cancel_user)) {
      code = tg_comm_status_set(st, TG_COMM_ABORTED, "store await %s: aborted", key);
      break;
    }
    int64_t left = deadline_ms - now_ms();
    if (left <= 0) {
      code = tg_comm_status_set(st, TG_COMM_TIMEOUT, "store await %s: nothing published before the deadline%s",
                                key, last_error);
      break;
    }
    sleep_ms(pause < left ? pause : left);
    if (pause < POLL_MAX_MS) pause *= 2;
  }
  tg_etcd_close(e);
  return code;
}
