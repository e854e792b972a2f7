/* A few bytes (1 to 4096) handed from one rank to the others through the
 * generation's store (etcd under World.store_prefix), e.g. NCCL's unique
 * id under store_prefix + "nccl-id". Private to trainer/comm (C only).
 *
 * Publishing is create-only: a second value for a key is refused (ERROR),
 * never swapped under ranks that already read the first. Awaiting returns
 * the value once it is there with exactly `len` bytes (ERROR for another
 * length), TIMEOUT at deadline_ms (CLOCK_MONOTONIC milliseconds), ABORTED
 * once cancelled(cancel_user) returns nonzero (cancelled may be NULL).
 * A list of entries, one per rank, is published entry by entry and read
 * at once with tg_comm_store_gather. */
#ifndef TG_TRAINER_COMM_STORE_BYTES_H
#define TG_TRAINER_COMM_STORE_BYTES_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/comm/comm.h"

#define TG_COMM_STORE_BYTES_MAX 4096

/* The key of entry `index` in a gathered list: prefix + 8 decimal digits. */
int tg_comm_store_indexed_key(char *key, size_t keylen, const char *prefix, int index);

tg_comm_code tg_comm_store_publish(const char *endpoints, const char *key, const void *bytes, size_t len,
                                   int64_t deadline_ms, tg_comm_status *st);
tg_comm_code tg_comm_store_await(const char *endpoints, const char *key, void *bytes, size_t len,
                                 int64_t deadline_ms, int (*cancelled)(void *), void *cancel_user,
                                 tg_comm_status *st);

/* Waits until every entry first..first+n-1 of a list is published (each
 * under tg_comm_store_indexed_key(prefix, i), `len` bytes) and copies them
 * into out (n * len bytes, in index order). One client, one range read per
 * poll, so rank 0 of a large world reads its peers' entries in a few
 * requests instead of one each. A key under prefix that is not a list
 * entry of this shape, or an entry of another size, is an ERROR. */
tg_comm_code tg_comm_store_gather(const char *endpoints, const char *prefix, int first, int n, size_t len,
                                  void *out, int64_t deadline_ms, int (*cancelled)(void *), void *cancel_user,
                                  tg_comm_status *st);

#endif
