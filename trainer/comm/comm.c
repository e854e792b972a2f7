/* The communicator's front: one place for what both backends share.
 *
 * Every collective goes through `collective_begin` and `collective_end`:
 * the first refuses a communicator that was aborted or already failed and
 * checks arguments, the second records a failure (a communicator that
 * failed once is broken: its peers may be half-way through the same
 * collective, so nothing after it can be trusted), tears the backend down
 * at once so peers waiting on this rank fail fast, and names an abort as
 * ABORTED even when the backend saw it as a closed connection. Messages
 * are prefixed with the operation, rank, generation and sequence number
 * so a log line says which collective of which world failed. */
#include "trainer/comm/comm.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/comm/comm_backend.h"

#define DEFAULT_CONNECT_TIMEOUT_MS 30000

struct tg_comm {
  const tg_comm_backend_ops *ops;
  tg_comm_impl *impl;
  int rank;
  int world_size;
  int64_t generation;
  atomic_int aborted;     /* tg_comm_abort was called */
  atomic_int broken;      /* a collective failed */
  atomic_int torn_down;   /* ops->abort ran (at most once) */
  atomic_uint_fast64_t entered;
};

static const tg_comm_backend_ops *backend_ops(tg_comm_backend backend) {
  switch (backend) {
    case TG_COMM_GLOO: return &tg_comm_gloo_ops;
    case TG_COMM_NCCL:
#ifdef TG_COMM_HAVE_NCCL
      return &tg_comm_nccl_ops;
#else
      return NULL;
#endif
  }
  return NULL;
}

static tg_comm_code check_config(const tg_comm_config *cfg, tg_comm_status *st) {
  if (!cfg) return tg_comm_status_set(st, TG_COMM_ERROR, "comm create: NULL config");
  if (cfg->world_size < 1 || cfg->rank < 0 || cfg->rank >= cfg->world_size)
    return tg_comm_status_set(st, TG_COMM_ERROR, "comm create: rank %d not in a world of %d",
                              cfg->rank, cfg->world_size);
  if (cfg->generation <= 0)
    return tg_comm_status_set(st, TG_COMM_ERROR, "comm create: generation %" PRId64 " must be > 0",
                              cfg->generation);
  if (cfg->connect_timeout_ms < 0)
    return tg_comm_status_set(st, TG_COMM_ERROR, "comm create: negative connect_timeout_ms");
  if (cfg->backend == TG_COMM_GLOO &&
      (!cfg->store_address || !*cfg->store_address || !cfg->store_prefix || !*cfg->store_prefix))
    return tg_comm_status_set(st, TG_COMM_ERROR,
                              "comm create: gloo needs store_address and store_prefix");
  if (cfg->backend == TG_COMM_NCCL && !cfg->nccl_id &&
      (!cfg->store_address || !*cfg->store_address || !cfg->store_prefix || !*cfg->store_prefix))
    return tg_comm_status_set(st, TG_COMM_ERROR,
                              "comm create: NCCL needs nccl_id, or store_address and store_prefix to share one");
  if (!backend_ops(cfg->backend))
    return tg_comm_status_set(st, TG_COMM_ERROR,
                              "comm create: backend %d is not built in (NCCL needs CUDA at build time)",
                              (int)cfg->backend);
  return TG_COMM_OK;
}

tg_comm *tg_comm_create(const tg_comm_config *cfg, tg_comm_status *st) {
  tg_comm *c = NULL;
  if (check_config(cfg, st) != TG_COMM_OK) goto err;
  c = calloc(1, sizeof *c);
  if (!c) {
    tg_comm_status_set(st, TG_COMM_ERROR, "comm create: out of memory");
    goto err;
  }
  c->ops = backend_ops(cfg->backend);
  c->rank = cfg->rank;
  c->world_size = cfg->world_size;
  c->generation = cfg->generation;
  int64_t timeout_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
  tg_comm_status bst = {0};
  tg_comm_parent parent = {0};
  if (cfg->parent && cfg->parent->ops == c->ops)
    parent = (tg_comm_parent){cfg->parent->impl, cfg->parent->generation, cfg->parent->rank,
                              cfg->parent->world_size};
  if (c->ops->open(cfg, parent.impl ? &parent : NULL, timeout_ms, &c->impl, &bst) != TG_COMM_OK) {
    tg_comm_status_set(st, bst.code, "%s create (rank %d of %d, generation %" PRId64 "): %s",
                       c->ops->name, cfg->rank, cfg->world_size, cfg->generation, bst.message);
    goto err;
  }
  tg_comm_status_set(st, TG_COMM_OK, "OK");
  return c;
err:
  free(c);
  return NULL;
}

/* Refuses a dead communicator or bad arguments; counts the collective. */
static tg_comm_code collective_begin(tg_comm *c, const char *op, int64_t timeout_ms,
                                     tg_comm_status *st) {
  if (!c) return tg_comm_status_set(st, TG_COMM_ERROR, "%s: NULL communicator", op);
  uint64_t seq = atomic_fetch_add(&c->entered, 1) + 1;
  if (atomic_load(&c->aborted))
    return tg_comm_status_set(st, TG_COMM_ABORTED,
                              "%s #%" PRIu64 " (rank %d, generation %" PRId64
                              "): communicator was aborted; create one for the next generation",
                              op, seq, c->rank, c->generation);
  if (atomic_load(&c->broken))
    return tg_comm_status_set(st, TG_COMM_ERROR,
                              "%s #%" PRIu64 " (rank %d, generation %" PRId64
                              "): communicator failed earlier; create one for the next generation",
                              op, seq, c->rank, c->generation);
  if (timeout_ms <= 0)
    return tg_comm_status_set(st, TG_COMM_ERROR, "%s: timeout_ms must be > 0 (got %" PRId64 ")",
                              op, timeout_ms);
  return TG_COMM_OK;
}

/* Wakes and fails every pending operation of the backend, once. Used by
 * an abort and after any failure: tearing a failed rank's connections
 * down at once makes its peers fail fast instead of at their deadline. */
static void tear_down(tg_comm *c) {
  if (!atomic_exchange(&c->torn_down, 1)) c->ops->abort(c->impl);
}

/* Marks a failure, prefers ABORTED when an abort caused it, and prefixes
 * the backend's message. */
static tg_comm_code collective_end(tg_comm *c, const char *op, tg_comm_code code,
                                   const tg_comm_status *bst, tg_comm_status *st) {
  if (code == TG_COMM_OK) return tg_comm_status_set(st, TG_COMM_OK, "OK");
  atomic_store(&c->broken, 1);
  tear_down(c);
  if (atomic_load(&c->aborted)) code = TG_COMM_ABORTED;
  return tg_comm_status_set(st, code, "%s #%" PRIu64 " (%s, rank %d of %d, generation %" PRId64
                            "): %s%s",
                            op, (uint64_t)atomic_load(&c->entered), c->ops->name, c->rank,
                            c->world_size, c->generation,
                            code == TG_COMM_ABORTED ? "aborted: " : "", bst->message);
}

static tg_comm_code check_dtype(tg_comm_dtype dtype, const char *op, tg_comm_status *st) {
  if (tg_comm_dtype_size(dtype) == 0)
    return tg_comm_status_set(st, TG_COMM_ERROR, "%s: unknown dtype %d", op, (int)dtype);
  return TG_COMM_OK;
}

static tg_comm_code all_reduce(tg_comm *c, void *buf, size_t count, tg_comm_dtype dtype, int host,
                               int64_t timeout_ms, tg_comm_status *st) {
  const char *op = host ? "all_reduce (host)" : "all_reduce";
  tg_comm_code code = collective_begin(c, op, timeout_ms, st);
  if (code == TG_COMM_OK) code = check_dtype(dtype, op, st);
  if (code != TG_COMM_OK) return code;
  if (count == 0) return tg_comm_status_set(st, TG_COMM_OK, "OK");
  if (!buf) return tg_comm_status_set(st, TG_COMM_ERROR, "%s: NULL buffer", op);
  tg_comm_status bst = {0};
  if (host && c->ops->all_reduce_host)
    code = c->ops->all_reduce_host(c->impl, buf, count, dtype, timeout_ms, &bst);
  else
    code = c->ops->all_reduce(c->impl, buf, count, dtype, timeout_ms, &bst);
  return collective_end(c, op, code, &bst, st);
}

tg_comm_code tg_comm_all_reduce(tg_comm *c, void *buf, size_t count, tg_comm_dtype dtype,
                                int64_t timeout_ms, tg_comm_status *st) {
  return all_reduce(c, buf, count, dtype, 0, timeout_ms, st);
}

tg_comm_code tg_comm_all_reduce_host(tg_comm *c, void *buf, size_t count, tg_comm_dtype dtype,
                                     int64_t timeout_ms, tg_comm_status *st) {
  return all_reduce(c, buf, count, dtype, 1, timeout_ms, st);
}

tg_comm_code tg_comm_reduce_scatter(tg_comm *c, const void *send, void *recv, size_t recv_count,
                                    tg_comm_dtype dtype, int64_t timeout_ms, tg_comm_status *st) {
  const char *op = "reduce_scatter";
  tg_comm_code code = collective_begin(c, op, timeout_ms, st);
  if (code == TG_COMM_OK) code = check_dtype(dtype, op, st);
  if (code != TG_COMM_OK) return code;
  if (recv_count == 0) return tg_comm_status_set(st, TG_COMM_OK, "OK");
  if (!send || !recv) return tg_comm_status_set(st, TG_COMM_ERROR, "%s: NULL buffer", op);
  if (recv_count > SIZE_MAX / tg_comm_dtype_size(dtype) / (size_t)c->world_size)
    return tg_comm_status_set(st, TG_COMM_ERROR, "%s: %zu elements per rank is too many", op,
                              recv_count);
  tg_comm_status bst = {0};
  code = c->ops->reduce_scatter(c->impl, send, recv, recv_count, dtype, timeout_ms, &bst);
  return collective_end(c, op, code, &bst, st);
}

static tg_comm_code all_gather(tg_comm *c, const void *send, void *recv, size_t bytes_per_rank, int host,
                               int64_t timeout_ms, tg_comm_status *st) {
  const char *op = host ? "all_gather (host)" : "all_gather";
  tg_comm_code code = collective_begin(c, op, timeout_ms, st);
  if (code != TG_COMM_OK) return code;
  if (bytes_per_rank == 0) return tg_comm_status_set(st, TG_COMM_OK, "OK");
  if (!send || !recv) return tg_comm_status_set(st, TG_COMM_ERROR, "%s: NULL buffer", op);
  if (bytes_per_rank > SIZE_MAX / (size_t)c->world_size)
    return tg_comm_status_set(st, TG_COMM_ERROR, "%s: %zu bytes per rank is too many", op,
                              bytes_per_rank);
  tg_comm_status bst = {0};
  if (host && c->ops->all_gather_host)
    code = c->ops->all_gather_host(c->impl, send, recv, bytes_per_rank, timeout_ms, &bst);
  else
    code = c->ops->all_gather(c->impl, send, recv, bytes_per_rank, timeout_ms, &bst);
  return collective_end(c, op, code, &bst, st);
}

tg_comm_code tg_comm_all_gather(tg_comm *c, const void *send, void *recv, size_t bytes_per_rank,
                                int64_t timeout_ms, tg_comm_status *st) {
  return all_gather(c, send, recv, bytes_per_rank, 0, timeout_ms, st);
}

tg_comm_code tg_comm_all_gather_host(tg_comm *c, const void *send, void *recv, size_t bytes_per_rank,
                                     int64_t timeout_ms, tg_comm_status *st) {
  return all_gather(c, send, recv, bytes_per_rank, 1, timeout_ms, st);
}

tg_comm_code tg_comm_broadcast(tg_comm *c, void *buf, size_t bytes, int root, int64_t timeout_ms,
                               tg_comm_status *st) {
  const char *op = "broadcast";
  tg_comm_code code = collective_begin(c, op, timeout_ms, st);
  if (code != TG_COMM_OK) return code;
  if (root < 0 || root >= c->world_size)
    return tg_comm_status_set(st, TG_COMM_ERROR, "%s: root %d not in a world of %d", op, root,
                              c->world_size);
  if (bytes == 0) return tg_comm_status_set(st, TG_COMM_OK, "OK");
  if (!buf) return tg_comm_status_set(st, TG_COMM_ERROR, "%s: NULL buffer", op);
  tg_comm_status bst = {0};
  code = c->ops->broadcast(c->impl, buf, bytes, root, timeout_ms, &bst);
  return collective_end(c, op, code, &bst, st);
}

tg_comm_code tg_comm_barrier(tg_comm *c, int64_t timeout_ms, tg_comm_status *st) {
  const char *op = "barrier";
  tg_comm_code code = collective_begin(c, op, timeout_ms, st);
  if (code != TG_COMM_OK) return code;
  tg_comm_status bst = {0};
  code = c->ops->barrier(c->impl, timeout_ms, &bst);
  return collective_end(c, op, code, &bst, st);
}

void tg_comm_abort(tg_comm *c) {
  if (!c) return;
  /* The flag first: a collective that fails because of the abort must
   * already see it when it reports. */
  atomic_store(&c->aborted, 1);
  tear_down(c);
}

void tg_comm_free(tg_comm *c) {
  if (!c) return;
  c->ops->free(c->impl);
  free(c);
}

int tg_comm_rank(const tg_comm *c) { return c->rank; }
int tg_comm_device_buffers(const tg_comm *c) { return c && c->ops->all_reduce_host != NULL; }
int tg_comm_world_size(const tg_comm *c) { return c->world_size; }
int64_t tg_comm_generation(const tg_comm *c) { return c->generation; }
uint64_t tg_comm_entered(const tg_comm *c) {
  return (uint64_t)atomic_load(&((tg_comm *)c)->entered);
}
