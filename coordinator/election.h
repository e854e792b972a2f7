/* Leader election among coordinators of one job, on an etcd lease.
 *
 * Every coordinator campaigns: it grants a lease of ttl_s seconds and tries
 * to create the job's leader key on it in a transaction that succeeds only
 * if the key does not exist. The winner keeps the lease alive; the others
 * watch the key and campaign again when it is deleted (its holder's lease
 * expired or was revoked). The winner's fencing token is the key's create
 * revision: see store.h.
 *
 * Leadership is lost when the keep-alive fails for a whole TTL or etcd says
 * the lease is gone; the caller learns it from tg_election_lost() and must
 * stop acting as leader at once (its fenced writes would fail anyway). */
#ifndef TG_ELECTION_H
#define TG_ELECTION_H

#include <stddef.h>
#include <stdint.h>

#include "common/etcd/etcd.h"

typedef struct tg_election tg_election;

/* value: what the leader key holds while we lead (a packed LeaderRecord). */
tg_election *tg_election_new(tg_etcd *etcd, const char *key, const void *value, size_t value_len,
                             int64_t ttl_s);
void tg_election_free(tg_election *e); /* resigns if leading */

/* Tries for up to timeout_ms. Returns 1 when this process became leader,
 * 0 when another holds the key (current holder's value copied into
 * holder/holder_len when given), -1 on an etcd error (st says why). */
int tg_election_campaign(tg_election *e, int64_t timeout_ms, void *holder, size_t *holder_len,
                         tg_rpc_status *st);

/* Create revision of our leader key (the fencing token); 0 if not leader. */
int64_t tg_election_revision(const tg_election *e);

/* 1 once leadership was lost (lease expired or revoked). */
int tg_election_lost(tg_election *e);

/* Gives up leadership: revokes the lease so a standby takes over at once. */
void tg_election_resign(tg_election *e);

#endif
