/* Leader election; see election.h. A campaign is one transaction: "if the
 * leader key does not exist, create it on my lease, else read it". A
 * standby blocks in a watch on the key, with a deadline, so it notices a
 * vacancy within one watch round trip of the old lease expiring. */
#include "coordinator/election.h"
#include "common/clock/clock.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log/log.h"

struct tg_election {
  tg_etcd *etcd;
  char *key;
  void *value;
  size_t value_len;
  int64_t ttl_s;
  int64_t lease;
  int64_t revision; /* create revision of our key; 0 when not leading */
  tg_etcd_keepalive *keepalive;
};


tg_election *tg_election_new(tg_etcd *etcd, const char *key, const void *value, size_t value_len,
                             int64_t ttl_s) {
  tg_election *e = calloc(1, sizeof *e);
  if (!e) return NULL;
  e->etcd = etcd;
  e->key = strdup(key);
  e->value = malloc(value_len ? value_len : 1);
  if (!e->key || !e->value) {
    tg_election_free(e);
    return NULL;
  }
  memcpy(e->value, value, value_len);
  e->value_len = value_len;
  e->ttl_s = ttl_s < 1 ? 1 : ttl_s;
  return e;
}

static void drop_lease(tg_election *e, int revoke) {
  if (e->keepalive) tg_etcd_keepalive_stop(e->keepalive);
  e->keepalive = NULL;
  if (revoke && e->lease) tg_etcd_lease_revoke(e->etcd, e->lease, NULL);
  e->lease = 0;
  e->revision = 0;
}

void tg_election_free(tg_election *e) {
  if (!e) return;
  drop_lease(e, 1);
  free(e->key);
  free(e->value);
  free(e);
}

int64_t tg_election_revision(const tg_election *e) { return e->revision; }

int tg_election_lost(tg_election *e) {
  return e->revision != 0 && e->keepalive && tg_etcd_keepalive_lost(e->keepalive);
}

void tg_election_resign(tg_election *e) { drop_lease(e, 1); }

/* One attempt. 1: won; 0: held by another (holder copied, *held_rev set). */
static int try_once(tg_election *e, void *holder, size_t *holder_len, int64_t *seen_rev,
                    tg_rpc_status *st) {
  if (!e->lease && tg_etcd_lease_grant(e->etcd, e->ttl_s, &e->lease, st) != TG_RPC_OK) return -1;
  tg_etcd_txn *t = tg_etcd_txn_new();
  tg_etcd_txn_result r = {0};
  int rc = -1;
  if (!t) return -1;
  tg_etcd_txn_cmp_create_revision(t, e->key, TG_ETCD_EQ, 0);
  tg_etcd_txn_put(t, TG_ETCD_THEN, e->key, e->value, e->value_len, e->lease);
  tg_etcd_txn_get(t, TG_ETCD_ELSE, e->key, NULL);
  if (tg_etcd_txn_commit(e->etcd, t, &r, st) != TG_RPC_OK) {
    /* A standby's lease is not kept alive between attempts: once it has
     * expired, grant a fresh one on the next attempt. */
    if (st && st->code == TG_RPC_NOT_FOUND) e->lease = 0;
    goto out;
  }
  *seen_rev = r.revision;
  if (r.succeeded) {
    e->revision = r.revision;
    e->keepalive = tg_etcd_keepalive_start(e->etcd, e->lease, NULL, NULL, st);
    if (!e->keepalive) {
      drop_lease(e, 1);
      goto out;
    }
    rc = 1;
    goto out;
  }
  rc = 0;
  if (r.n_responses == 1 && r.responses[0].range.n_kvs == 1) {
    tg_etcd_kv *kv = &r.responses[0].range.kvs[0];
    if (holder && holder_len) {
      size_t n = kv->value_len < *holder_len ? kv->value_len : *holder_len;
      memcpy(holder, kv->value, n);
      *holder_len = n;
    }
  } else if (holder_len) {
    *holder_len = 0;
  }
out:
  tg_etcd_txn_result_free(&r);
  tg_etcd_txn_free(t);
  return rc;
}

int tg_election_campaign(tg_election *e, int64_t timeout_ms, void *holder, size_t *holder_len,
                         tg_rpc_status *st) {
  if (e->revision) return 1;
  int64_t deadline = tg_clock_mono_ms() + timeout_ms;
  size_t cap = holder_len ? *holder_len : 0;
  for (;;) {
    int64_t seen = 0;
    if (holder_len) *holder_len = cap;
    int rc = try_once(e, holder, holder_len, &seen, st);
    if (rc < 0 && e->lease == 0 && st && st->code == TG_RPC_NOT_FOUND)
      rc = try_once(e, holder, holder_len, &seen, st); /* with a new lease */
    if (rc != 0) return rc;
    /* Held by another: wait for the key to go, then try again. */
    int64_t left = deadline - tg_clock_mono_ms();
    if (left <= 0) return 0;
    tg_etcd_watch_opts wo = {.start_revision = seen + 1};
    tg_etcd_watch *w = tg_etcd_watch_open(e->etcd, e->key, &wo, st);
    if (!w) return -1;
    int vacant = 0;
    while (!vacant && (left = deadline - tg_clock_mono_ms()) > 0) {
      tg_etcd_event ev = {0};
      tg_etcd_watch_result wr = tg_etcd_watch_next(w, &ev, left, st);
      if (wr == TG_ETCD_WATCH_EVENT) {
        vacant = ev.type != TG_ETCD_EVENT_PUT;
        tg_etcd_event_clear(&ev);
      } else if (wr == TG_ETCD_WATCH_CLOSED) {
        vacant = 1; /* re-read the key: the next try tells */
      }
    }
    tg_etcd_watch_close(w);
    if (!vacant) return 0;
  }
}
