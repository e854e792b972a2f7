/* Helpers for the etcd client's tests: the few steps every test repeats
 * (open, put, get, expect a watch event), with cmocka failures that say
 * what was expected and what came. */
#include "common/etcd/etcd_testing.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

tg_etcd *etcd_testing_client(const char *endpoints, int64_t request_timeout_ms) {
  tg_etcd_config cfg = {.endpoints = endpoints, .request_timeout_ms = request_timeout_ms};
  tg_rpc_status st = {0};
  tg_etcd *c = tg_etcd_open(&cfg, &st);
  if (!c) fail_msg("tg_etcd_open(%s): %s", endpoints, st.message);
  return c;
}

int64_t etcd_testing_put(tg_etcd *c, const char *key, const char *value) {
  tg_rpc_status st = {0};
  tg_etcd_put_result r;
  if (tg_etcd_put(c, key, value, strlen(value), NULL, &r, &st) != TG_RPC_OK)
    fail_msg("put %s: %s: %s", key, tg_rpc_code_name(st.code), st.message);
  int64_t rev = r.revision;
  tg_etcd_put_result_free(&r);
  return rev;
}

int etcd_testing_get(tg_etcd *c, const char *key, char *buf, size_t buflen) {
  tg_rpc_status st = {0};
  tg_etcd_range_result r;
  if (tg_etcd_get(c, key, NULL, &r, &st) != TG_RPC_OK)
    fail_msg("get %s: %s: %s", key, tg_rpc_code_name(st.code), st.message);
  int found = r.n_kvs == 1;
  snprintf(buf, buflen, "%s", found ? r.kvs[0].value : "");
  tg_etcd_range_result_free(&r);
  return found;
}

static const char *type_name(tg_etcd_event_type t) {
  return t == TG_ETCD_EVENT_PUT ? "PUT" : t == TG_ETCD_EVENT_DELETE ? "DELETE" : "COMPACTED";
}

int64_t etcd_testing_expect_event(tg_etcd_watch *w, tg_etcd_event_type type, const char *key,
                                  const char *value, int64_t timeout_ms) {
  tg_etcd_event ev;
  tg_rpc_status st = {0};
  tg_etcd_watch_result r = tg_etcd_watch_next(w, &ev, timeout_ms, &st);
  if (r != TG_ETCD_WATCH_EVENT)
    fail_msg("expected %s %s, got %s: %s", type_name(type), key,
             r == TG_ETCD_WATCH_TIMEOUT ? "timeout" : "closed", st.message);
  if (ev.type != type || strcmp(ev.kv.key, key) != 0 ||
      (type == TG_ETCD_EVENT_PUT && value && strcmp(ev.kv.value, value) != 0)) {
    char got[256];
    snprintf(got, sizeof got, "%s %s=%s (rev %lld)", type_name(ev.type), ev.kv.key ? ev.kv.key : "",
             ev.kv.value ? ev.kv.value : "", (long long)ev.kv.mod_revision);
    tg_etcd_event_clear(&ev);
    fail_msg("expected %s %s=%s, got %s", type_name(type), key, value ? value : "*", got);
  }
  int64_t rev = ev.kv.mod_revision;
  tg_etcd_event_clear(&ev);
  return rev;
}

void etcd_testing_expect_no_event(tg_etcd_watch *w, int64_t quiet_ms) {
  tg_etcd_event ev;
  tg_rpc_status st = {0};
  tg_etcd_watch_result r = tg_etcd_watch_next(w, &ev, quiet_ms, &st);
  if (r == TG_ETCD_WATCH_EVENT) {
    char got[256];
    snprintf(got, sizeof got, "%s %s (rev %lld)", type_name(ev.type), ev.kv.key ? ev.kv.key : "",
             (long long)ev.kv.mod_revision);
    tg_etcd_event_clear(&ev);
    fail_msg("expected no event, got %s", got);
  }
  assert_int_equal(r, TG_ETCD_WATCH_TIMEOUT);
}

tg_etcd_cluster *etcd_testing_cluster;

int etcd_testing_start(int members) {
  char err[256] = "";
  etcd_testing_cluster = tg_etcd_cluster_start(members, err, sizeof err);
  if (!etcd_testing_cluster) {
    fprintf(stderr, "etcd cluster: %s\n", err);
    return -1;
  }
  return 0;
}

int etcd_testing_stop(void **state) {
  tg_etcd_cluster_free(etcd_testing_cluster);
  etcd_testing_cluster = NULL;
  return 0;
}

int etcd_testing_setup(void **state) {
  static etcd_testing_fixture f;
  memset(&f, 0, sizeof f);
  *state = &f;
  return 0;
}

int etcd_testing_teardown(void **state) {
  etcd_testing_fixture *f = *state;
  tg_etcd_keepalive_stop(f->ka);
  tg_etcd_watch_close(f->w);
  tg_etcd_close(f->c);
  tg_etcd_close(f->writer);
  memset(f, 0, sizeof *f);
  char err[256];
  for (int i = 0; i < tg_etcd_cluster_size(etcd_testing_cluster); i++) {
    if (!tg_etcd_cluster_running(etcd_testing_cluster, i) &&
        tg_etcd_cluster_restart(etcd_testing_cluster, i, 15000, err, sizeof err) != 0) {
      fprintf(stderr, "restart member %d: %s\n", i, err);
      return -1;
    }
  }
  if (tg_etcd_cluster_wait_healthy(etcd_testing_cluster, 15000, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  return 0;
}
