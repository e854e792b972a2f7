/* Tardigrade's etcd v3 client: the whole contract in one header.
 *
 * etcd is the only durable job state (see DESIGN.md): generations are
 * allocated by transactions, coordinators are elected with leases, agents
 * and coordinators follow changes with watches. This client offers those as
 * small verbs, in the spirit of etcd's own clientv3, and hides the failure
 * handling every caller would otherwise repeat:
 *   - several endpoints: a request that fails because a member is down,
 *     lost its leader or the leader changed is retried on the next endpoint
 *     with a short backoff until the request's timeout;
 *   - user/password auth: the token is fetched at open, sent as "token"
 *     metadata and renewed when etcd says it is no longer valid;
 *   - a keep-alive runs its own thread and reopens its stream after errors;
 *   - a watch resumes after a disconnect, restart or failover from the last
 *     revision it delivered + 1, so no event is lost or repeated.
 *
 * Errors are values: every call returns a tg_rpc_code (TG_RPC_OK on success)
 * and, when `st` is not NULL, a one-line reason in st->message. A failed
 * transaction comparison is not an error: it is `succeeded == 0`.
 *
 * Requests that change state are retried after UNAVAILABLE or
 * DEADLINE_EXCEEDED like reads are: such a failure is ambiguous (the write
 * may have been applied), so callers that must know use a transaction that
 * compares revisions.
 *
 * Keys are NUL-terminated strings; values are bytes with a length. Results
 * own their memory and are released with the matching *_free / *_clear. A
 * tg_etcd handle may be used from several threads at once; one watch or
 * keep-alive object belongs to one caller thread. */
#ifndef TG_ETCD_H
#define TG_ETCD_H

#include <stddef.h>
#include <stdint.h>

#include "common/rpc/rpc.h"

typedef struct tg_etcd tg_etcd;

/* --------------------------------------------------------------- connect */

typedef struct {
  const char *endpoints;      /* "host:port,host:port" or "unix:/path" (comma-separated) */
  const tg_rpc_tls *tls;      /* NULL: plaintext */
  const char *username;       /* NULL: no authentication */
  const char *password;
  int64_t request_timeout_ms; /* whole request, retries included; 0: 5000 */
} tg_etcd_config;

/* Opens a client. With a username it authenticates at once, so a wrong
 * password fails here (NULL, st says why); otherwise it connects lazily.
 * The config is copied. */
tg_etcd *tg_etcd_open(const tg_etcd_config *cfg, tg_rpc_status *st);
/* Frees the client. Close watches and stop keep-alives first. */
void tg_etcd_close(tg_etcd *c);

/* ---------------------------------------------------------------- values */

typedef struct {
  char *key;      /* NUL-terminated copy */
  size_t key_len;
  char *value;    /* NUL-terminated copy (the NUL is not part of value_len) */
  size_t value_len;
  int64_t create_revision;
  int64_t mod_revision;
  int64_t version;
  int64_t lease;
} tg_etcd_kv;

/* ------------------------------------------------------------------- KV */

typedef struct {
  int prefix;            /* every key starting with `key` */
  const char *range_end; /* explicit [key, range_end); overrides prefix */
  int64_t limit;         /* 0: no limit */
  int64_t revision;      /* read at this revision; 0: latest */
  int count_only;        /* only count (kvs stays empty) */
  int keys_only;         /* no values */
  int serializable;      /* read from the member without consensus */
} tg_etcd_range_opts;

typedef struct {
  tg_etcd_kv *kvs;
  size_t n_kvs;
  int64_t revision; /* the store's revision when the range was served */
  int more;         /* more keys matched than `limit` returned */
  int64_t count;    /* number of keys in the range */
} tg_etcd_range_result;

void tg_etcd_range_result_free(tg_etcd_range_result *r); /* frees the contents */

/* Gets one key, or a prefix/range as opts say (opts may be NULL). */
tg_rpc_code tg_etcd_get(tg_etcd *c, const char *key, const tg_etcd_range_opts *opts,
                        tg_etcd_range_result *out, tg_rpc_status *st);

typedef struct {
  int64_t lease; /* attach to this lease; 0: none */
  int prev_kv;   /* return the previous value */
} tg_etcd_put_opts;

typedef struct {
  int64_t revision; /* of the put */
  int has_prev;
  tg_etcd_kv prev;  /* when has_prev */
} tg_etcd_put_result;

void tg_etcd_put_result_free(tg_etcd_put_result *r);

/* opts and out may be NULL. */
tg_rpc_code tg_etcd_put(tg_etcd *c, const char *key, const void *value, size_t value_len,
                        const tg_etcd_put_opts *opts, tg_etcd_put_result *out, tg_rpc_status *st);

/* Deletes `key`, or every key starting with it when prefix is set.
 * deleted and revision may be NULL. */
tg_rpc_code tg_etcd_delete(tg_etcd *c, const char *key, int prefix, int64_t *deleted,
                           int64_t *revision, tg_rpc_status *st);

/* Compacts the history up to `revision`; physical waits until it is purged. */
tg_rpc_code tg_etcd_compact(tg_etcd *c, int64_t revision, int physical, tg_rpc_status *st);

/* ----------------------------------------------------------- transactions */

typedef struct tg_etcd_txn tg_etcd_txn;

typedef enum { TG_ETCD_EQ = 0, TG_ETCD_NE, TG_ETCD_LT, TG_ETCD_GT } tg_etcd_cmp;
typedef enum { TG_ETCD_THEN = 0, TG_ETCD_ELSE = 1 } tg_etcd_branch;

/* A transaction under construction: compares, then the ops run when all
 * compares hold (THEN) or when any fails (ELSE). Builder calls return 0, or
 * -1 on bad arguments / no memory; the error sticks and commit reports it. */
tg_etcd_txn *tg_etcd_txn_new(void);
void tg_etcd_txn_free(tg_etcd_txn *t);

int tg_etcd_txn_cmp_value(tg_etcd_txn *t, const char *key, tg_etcd_cmp cmp, const void *value,
                          size_t value_len);
/* version 0 / create_revision 0 mean "the key does not exist". */
int tg_etcd_txn_cmp_version(tg_etcd_txn *t, const char *key, tg_etcd_cmp cmp, int64_t version);
int tg_etcd_txn_cmp_create_revision(tg_etcd_txn *t, const char *key, tg_etcd_cmp cmp,
                                    int64_t revision);
int tg_etcd_txn_cmp_mod_revision(tg_etcd_txn *t, const char *key, tg_etcd_cmp cmp,
                                 int64_t revision);

int tg_etcd_txn_put(tg_etcd_txn *t, tg_etcd_branch branch, const char *key, const void *value,
                    size_t value_len, int64_t lease);
int tg_etcd_txn_delete(tg_etcd_txn *t, tg_etcd_branch branch, const char *key, int prefix);
int tg_etcd_txn_get(tg_etcd_txn *t, tg_etcd_branch branch, const char *key,
                    const tg_etcd_range_opts *opts);

typedef enum { TG_ETCD_OP_RANGE = 0, TG_ETCD_OP_PUT, TG_ETCD_OP_DELETE } tg_etcd_op_type;

typedef struct {
  tg_etcd_op_type type;
  tg_etcd_range_result range; /* TG_ETCD_OP_RANGE */
  int64_t deleted;            /* TG_ETCD_OP_DELETE */
} tg_etcd_op_result;

typedef struct {
  int succeeded;                 /* 1: the THEN ops ran; 0: the ELSE ops ran */
  int64_t revision;
  tg_etcd_op_result *responses;  /* one per op of the branch that ran, in order */
  size_t n_responses;
} tg_etcd_txn_result;

void tg_etcd_txn_result_free(tg_etcd_txn_result *r);

/* Runs the transaction. out may be NULL. A comparison that does not hold
 * is TG_RPC_OK with out->succeeded == 0. */
tg_rpc_code tg_etcd_txn_commit(tg_etcd *c, const tg_etcd_txn *t, tg_etcd_txn_result *out,
                               tg_rpc_status *st);

/* ----------------------------------------------------------------- leases */

tg_rpc_code tg_etcd_lease_grant(tg_etcd *c, int64_t ttl_s, int64_t *lease_id, tg_rpc_status *st);
tg_rpc_code tg_etcd_lease_revoke(tg_etcd *c, int64_t lease_id, tg_rpc_status *st);
/* Seconds left (-1 once expired or unknown) and the granted TTL (may be NULL). */
tg_rpc_code tg_etcd_lease_ttl(tg_etcd *c, int64_t lease_id, int64_t *ttl_left_s,
                              int64_t *granted_ttl_s, tg_rpc_status *st);

typedef struct tg_etcd_keepalive tg_etcd_keepalive;

/* Called once, on the keep-alive thread, when the lease is lost: etcd says
 * it expired or was revoked, or no refresh succeeded for a whole TTL. */
typedef void (*tg_etcd_lease_lost_fn)(int64_t lease_id, void *user);

/* Keeps `lease_id` alive from a thread of its own: a refresh every TTL/3
 * over the LeaseKeepAlive stream, reopened (on the next endpoint if need
 * be) after errors. on_lost may be NULL (poll tg_etcd_keepalive_lost). */
tg_etcd_keepalive *tg_etcd_keepalive_start(tg_etcd *c, int64_t lease_id,
                                           tg_etcd_lease_lost_fn on_lost, void *user,
                                           tg_rpc_status *st);
/* 1 once the lease is lost (after which the thread has stopped refreshing). */
int tg_etcd_keepalive_lost(tg_etcd_keepalive *ka);
/* TTL etcd granted at the last refresh, in seconds (0 before the first). */
int64_t tg_etcd_keepalive_ttl(tg_etcd_keepalive *ka);
/* Stops refreshing and joins the thread; the lease is not revoked. */
void tg_etcd_keepalive_stop(tg_etcd_keepalive *ka);

/* ---------------------------------------------------------------- watches */

typedef struct tg_etcd_watch tg_etcd_watch;

typedef struct {
  int prefix;             /* every key starting with `key` */
  int64_t start_revision; /* first revision to deliver; 0: changes after open */
  int prev_kv;            /* fill prev for PUT (when it replaced a value) and DELETE */
} tg_etcd_watch_opts;

typedef enum {
  TG_ETCD_EVENT_PUT = 0,
  TG_ETCD_EVENT_DELETE = 1,
  /* The revisions the watch needed were compacted away: the watch is over.
   * Re-read the state and watch again from compact_revision. */
  TG_ETCD_EVENT_COMPACTED = 2,
} tg_etcd_event_type;

typedef struct {
  tg_etcd_event_type type;
  tg_etcd_kv kv;     /* PUT: the new kv; DELETE: key and mod_revision of the delete */
  int has_prev;
  tg_etcd_kv prev;   /* with prev_kv, when there was one */
  int64_t compact_revision; /* TG_ETCD_EVENT_COMPACTED */
} tg_etcd_event;

void tg_etcd_event_clear(tg_etcd_event *ev);

/* Starts watching. With start_revision 0 it waits (within the request
 * timeout) until etcd has confirmed the watch, so every change after open
 * returns is delivered. Sends "hasleader" metadata so a member cut off
 * from its cluster drops the watch and it moves to another endpoint. */
tg_etcd_watch *tg_etcd_watch_open(tg_etcd *c, const char *key, const tg_etcd_watch_opts *opts,
                                  tg_rpc_status *st);

typedef enum {
  TG_ETCD_WATCH_EVENT = 0,   /* *ev holds an event (clear it with tg_etcd_event_clear) */
  TG_ETCD_WATCH_TIMEOUT = 1, /* nothing within timeout_ms; call again */
  TG_ETCD_WATCH_CLOSED = 2,  /* the watch is over (after COMPACTED, or an error in st) */
} tg_etcd_watch_result;

/* Next event in revision order, waiting at most timeout_ms; reconnects
 * and resumes inside as needed. */
tg_etcd_watch_result tg_etcd_watch_next(tg_etcd_watch *w, tg_etcd_event *ev, int64_t timeout_ms,
                                        tg_rpc_status *st);
/* Revision of the last event delivered (or where the watch starts - 1). */
int64_t tg_etcd_watch_revision(const tg_etcd_watch *w);
void tg_etcd_watch_close(tg_etcd_watch *w);

#endif
