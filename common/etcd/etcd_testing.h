/* Helpers shared by the etcd client's tests (cmocka assertions inside):
 * open a client on a harness cluster, write a key, expect the next watch
 * event. Test-only. */
#ifndef TG_ETCD_TESTING_H
#define TG_ETCD_TESTING_H

#include <stdint.h>

#include "common/etcd/etcd.h"
#include "tests/harness/etcd_cluster.h"

/* Opens a plaintext client without auth; fails the test if it cannot. */
tg_etcd *etcd_testing_client(const char *endpoints, int64_t request_timeout_ms);

/* Puts a string value; fails the test on error; returns the revision. */
int64_t etcd_testing_put(tg_etcd *c, const char *key, const char *value);

/* Reads a key's value into buf ("" if absent); returns 1 if it exists. */
int etcd_testing_get(tg_etcd *c, const char *key, char *buf, size_t buflen);

/* Waits up to timeout_ms for the watch's next event and checks its type,
 * key and (for PUT, if value is not NULL) value; returns its mod revision. */
int64_t etcd_testing_expect_event(tg_etcd_watch *w, tg_etcd_event_type type, const char *key,
                                  const char *value, int64_t timeout_ms);

/* Checks that the watch has no event for `quiet_ms`. */
void etcd_testing_expect_no_event(tg_etcd_watch *w, int64_t quiet_ms);

/* The cluster of a test binary, started by a cmocka group setup. */
extern tg_etcd_cluster *etcd_testing_cluster;

/* What a test opened; released by etcd_testing_teardown. */
typedef struct {
  tg_etcd *c;
  tg_etcd *writer;
  tg_etcd_watch *w;
  tg_etcd_keepalive *ka;
} etcd_testing_fixture;

/* Starts etcd_testing_cluster with `members` members; 0 or -1. */
int etcd_testing_start(int members);
/* cmocka group teardown: frees the cluster. */
int etcd_testing_stop(void **state);
/* cmocka per-test setup: a zeroed fixture in *state. */
int etcd_testing_setup(void **state);
/* cmocka per-test teardown: releases the fixture's clients and brings
 * every member back (a test that failed mid-restart must not leave one
 * down), then waits until the cluster is healthy. */
int etcd_testing_teardown(void **state);

#endif
