/* The NCCL backend: GPU collectives that can be abandoned.
 *
 * A blocking NCCL communicator hangs its caller forever when a peer dies,
 * which is the failure Tardigrade exists to survive. So communicators here
 * are non-blocking (ncclConfig_t.blocking = 0): every NCCL call returns at
 * once, possibly with ncclInProgress, and this file waits for it by
 * polling, with a deadline:
 *   - creation polls ncclCommGetAsyncError until the communicator is ready;
 *   - a collective is enqueued on the communicator's own stream, then its
 *     completion is polled with cudaStreamQuery while ncclCommGetAsyncError
 *     is checked for a failure (a peer gone, a network error).
 * Every poll also checks the abort flag. On a deadline, an abort or an
 * error, the polling thread itself calls ncclCommAbort, which makes NCCL
 * drop its kernels and proxy threads; the communicator is then dead, as
 * with gloo, and the trainer builds the next generation's from a fresh
 * unique id (DESIGN.md: abort, then ncclCommShrink or a new communicator).
 * tg_comm_abort from another thread only raises the flag: NCCL calls on a
 * communicator stay on the thread that owns it, so abort never races a
 * call in flight. Without a collective in flight the abort happens at the
 * next call or at free.
 *
 * The 128-byte unique id comes from the caller, or (nccl_id NULL) from
 * the generation's store: ncclGetUniqueId opens the bootstrap root's
 * listening socket in the process that calls it, so rank 0 makes the id
 * and publishes it under the store prefix the coordinator allocated for
 * this generation (store_bytes.h); the other ranks read it there. A new
 * generation has a new prefix, hence a new id: no rank of an old world can
 * join a new communicator.
 * Buffers are device memory of cfg->cuda_device; the *_host collectives
 * stage host buffers through a temporary device buffer.
 *
 * Unverified: this builds wherever CUDA and NCCL are installed, but it has
 * only run where a GPU was present (comm_nccl_test skips without one). */
#include <cuda_runtime.h>
#include <nccl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "trainer/comm/comm_backend.h"
#include "trainer/comm/store_bytes.h"

#define POLL_INTERVAL_NS 50000          /* 50 us between polls */
#define FINALIZE_TIMEOUT_MS 10000       /* orderly teardown before giving up and aborting */

struct tg_comm_impl {
  ncclComm_t comm;
  cudaStream_t stream;
  int device;
  int rank;
  int world_size;
  atomic_int abort_requested; /* set by tg_comm_abort from any thread */
  int nccl_aborted;           /* ncclCommAbort ran (owner thread only) */
  int failed;                 /* a call failed: free aborts instead of finalizing */
  int32_t *barrier_word;      /* device memory for barrier's all-reduce */
};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pause_briefly(void) {
  struct timespec ts = {0, POLL_INTERVAL_NS};
  nanosleep(&ts, NULL);
}

/* Aborts the NCCL communicator once (owner thread only). */
static void nccl_abort_once(tg_comm_impl *n) {
  if (n->comm && !n->nccl_aborted) {
    ncclCommAbort(n->comm);
    n->nccl_aborted = 1;
  }
  n->failed = 1;
}

/* Records a failure: aborts NCCL and formats the reason. */
static tg_comm_code fail(tg_comm_impl *n, tg_comm_code code, const char *what, const char *detail,
                         tg_comm_status *st) {
  const char *last = n->comm ? ncclGetLastError(n->comm) : NULL;
  tg_comm_status_set(st, code, "%s: %s%s%s", what, detail, last && *last ? "; nccl: " : "",
                     last && *last ? last : "");
  nccl_abort_once(n);
  return code;
}

/* Waits until the communicator has no call in progress, or the deadline,
 * an abort request or an asynchronous error. */
static tg_comm_code wait_ready(tg_comm_impl *n, const char *what, int64_t deadline_ms,
                               tg_comm_status *st) {
  for (;;) {
    ncclResult_t async = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(n->comm, &async);
    if (r != ncclSuccess) return fail(n, TG_COMM_ERROR, what, ncclGetErrorString(r), st);
    if (async == ncclSuccess) return TG_COMM_OK;
    if (async != ncclInProgress) return fail(n, TG_COMM_ERROR, what, ncclGetErrorString(async), st);
    if (atomic_load(&n->abort_requested)) return fail(n, TG_COMM_ABORTED, what, "aborted", st);
    if (now_ms() >= deadline_ms)
      return fail(n, TG_COMM_TIMEOUT, what, "deadline passed while NCCL was in progress", st);
    pause_briefly();
  }
}

/* After an enqueue: waits for the enqueue, then for the stream to drain. */
static tg_comm_code finish(tg_comm_impl *n, const char *what, ncclResult_t enqueued,
                           int64_t timeout_ms, tg_comm_status *st) {
  int64_t deadline_ms = now_ms() + timeout_ms;
  if (enqueued != ncclSuccess && enqueued != ncclInProgress)
    return fail(n, TG_COMM_ERROR, what, ncclGetErrorString(enqueued), st);
  tg_comm_code code = wait_ready(n, what, deadline_ms, st);
  if (code != TG_COMM_OK) return code;
  for (;;) {
    cudaError_t q = cudaStreamQuery(n->stream);
    if (q == cudaSuccess) return tg_comm_status_set(st, TG_COMM_OK, "OK");
    if (q != cudaErrorNotReady) return fail(n, TG_COMM_ERROR, what, cudaGetErrorString(q), st);
    /* A peer that died shows up here, not in the stream. */
    code = wait_ready(n, what, deadline_ms, st);
    if (code != TG_COMM_OK) return code;
    if (atomic_load(&n->abort_requested)) return fail(n, TG_COMM_ABORTED, what, "aborted", st);
    if (now_ms() >= deadline_ms)
      return fail(n, TG_COMM_TIMEOUT, what, "collective did not complete before the deadline", st);
    pause_briefly();
  }
}

/* Every collective starts here: right device, not aborted. */
static tg_comm_code begin(tg_comm_impl *n, const char *what, tg_comm_status *st) {
  if (atomic_load(&n->abort_requested)) return fail(n, TG_COMM_ABORTED, what, "aborted", st);
  cudaError_t e = cudaSetDevice(n->device);
  if (e != cudaSuccess) return fail(n, TG_COMM_ERROR, what, cudaGetErrorString(e), st);
  return TG_COMM_OK;
}

static ncclDataType_t nccl_type(tg_comm_dtype dtype) {
  return dtype == TG_COMM_INT64 ? ncclInt64 : ncclFloat32;
}

static void nccl_free(tg_comm_impl *n);

/* The world's unique id: given, or made by rank 0 and shared through the
 * generation's store. */
static tg_comm_code unique_id(const tg_comm_config *cfg, int64_t deadline_ms, ncclUniqueId *id,
                              tg_comm_status *st) {
  _Static_assert(sizeof id->internal == TG_COMM_NCCL_ID_BYTES, "ncclUniqueId is 128 bytes");
  if (cfg->nccl_id) {
    memcpy(id->internal, cfg->nccl_id, sizeof id->internal);
    return TG_COMM_OK;
  }
  char key[512];
  if ((size_t)snprintf(key, sizeof key, "%snccl-id", cfg->store_prefix) >= sizeof key)
    return tg_comm_status_set(st, TG_COMM_ERROR, "store prefix too long");
  tg_comm_status sst = {0};
  tg_comm_code code;
  if (cfg->rank == 0) {
    ncclResult_t r = ncclGetUniqueId(id);
    if (r != ncclSuccess)
      return tg_comm_status_set(st, TG_COMM_ERROR, "ncclGetUniqueId: %s", ncclGetErrorString(r));
    code = tg_comm_store_publish(cfg->store_address, key, id->internal, sizeof id->internal, deadline_ms, &sst);
  } else {
    code = tg_comm_store_await(cfg->store_address, key, id->internal, sizeof id->internal, deadline_ms,
                               cfg->cancelled, cfg->cancel_user, &sst);
  }
  if (code != TG_COMM_OK) return tg_comm_status_set(st, code, "unique id: %s", sst.message);
  return TG_COMM_OK;
}

static tg_comm_code nccl_open(const tg_comm_config *cfg, int64_t connect_timeout_ms,
                              tg_comm_impl **out, tg_comm_status *st) {
  tg_comm_code code = TG_COMM_ERROR;
  tg_comm_impl *n = calloc(1, sizeof *n);
  if (!n) return tg_comm_status_set(st, TG_COMM_ERROR, "out of memory");
  n->device = cfg->cuda_device;
  n->rank = cfg->rank;
  n->world_size = cfg->world_size;
  cudaError_t e = cudaSetDevice(n->device);
  if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&n->stream, cudaStreamNonBlocking);
  if (e == cudaSuccess) e = cudaMalloc((void **)&n->barrier_word, sizeof *n->barrier_word);
  if (e != cudaSuccess) {
    code = tg_comm_status_set(st, TG_COMM_ERROR, "CUDA device %d: %s", n->device,
                              cudaGetErrorString(e));
    goto err;
  }
  ncclUniqueId id;
  code = unique_id(cfg, now_ms() + connect_timeout_ms, &id, st);
  if (code != TG_COMM_OK) goto err;
  code = TG_COMM_ERROR;
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclResult_t r = ncclCommInitRankConfig(&n->comm, cfg->world_size, id, cfg->rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    code = tg_comm_status_set(st, TG_COMM_ERROR, "ncclCommInitRankConfig: %s",
                              ncclGetErrorString(r));
    if (n->comm) nccl_abort_once(n);
    goto err;
  }
  code = wait_ready(n, "ncclCommInitRankConfig", now_ms() + connect_timeout_ms, st);
  if (code != TG_COMM_OK) goto err;
  *out = n;
  return TG_COMM_OK;
err:
  nccl_free(n);
  return code;
}

static tg_comm_code nccl_all_reduce(tg_comm_impl *n, void *buf, size_t count, tg_comm_dtype dtype,
                                    int64_t timeout_ms, tg_comm_status *st) {
  const char *what = "ncclAllReduce";
  tg_comm_code code = begin(n, what, st);
  if (code != TG_COMM_OK) return code;
  ncclResult_t r = ncclAllReduce(buf, buf, count, nccl_type(dtype), ncclSum, n->comm, n->stream);
  return finish(n, what, r, timeout_ms, st);
}

static tg_comm_code nccl_reduce_scatter(tg_comm_impl *n, const void *send, void *recv,
                                        size_t recv_count, tg_comm_dtype dtype, int64_t timeout_ms,
                                        tg_comm_status *st) {
  const char *what = "ncclReduceScatter";
  tg_comm_code code = begin(n, what, st);
  if (code != TG_COMM_OK) return code;
  ncclResult_t r =
      ncclReduceScatter(send, recv, recv_count, nccl_type(dtype), ncclSum, n->comm, n->stream);
  return finish(n, what, r, timeout_ms, st);
}

static tg_comm_code nccl_all_gather(tg_comm_impl *n, const void *send, void *recv,
                                    size_t bytes_per_rank, int64_t timeout_ms, tg_comm_status *st) {
  const char *what = "ncclAllGather";
  tg_comm_code code = begin(n, what, st);
  if (code != TG_COMM_OK) return code;
  ncclResult_t r = ncclAllGather(send, recv, bytes_per_rank, ncclUint8, n->comm, n->stream);
  return finish(n, what, r, timeout_ms, st);
}

static tg_comm_code nccl_broadcast(tg_comm_impl *n, void *buf, size_t bytes, int root,
                                   int64_t timeout_ms, tg_comm_status *st) {
  const char *what = "ncclBroadcast";
  tg_comm_code code = begin(n, what, st);
  if (code != TG_COMM_OK) return code;
  ncclResult_t r = ncclBroadcast(buf, buf, bytes, ncclUint8, root, n->comm, n->stream);
  return finish(n, what, r, timeout_ms, st);
}

/* NCCL has no barrier: an all-reduce of one word is one. */
static tg_comm_code nccl_barrier(tg_comm_impl *n, int64_t timeout_ms, tg_comm_status *st) {
  const char *what = "barrier (ncclAllReduce)";
  tg_comm_code code = begin(n, what, st);
  if (code != TG_COMM_OK) return code;
  ncclResult_t r =
      ncclAllReduce(n->barrier_word, n->barrier_word, 1, ncclInt32, ncclSum, n->comm, n->stream);
  return finish(n, what, r, timeout_ms, st);
}

/* A host buffer of `bytes` staged in device memory around one collective. */
static tg_comm_code stage_in(tg_comm_impl *n, const char *what, const void *host, size_t bytes, void **dev,
                             tg_comm_status *st) {
  cudaError_t e = cudaMalloc(dev, bytes);
  if (e == cudaSuccess && host) e = cudaMemcpy(*dev, host, bytes, cudaMemcpyHostToDevice);
  if (e != cudaSuccess) {
    if (*dev) cudaFree(*dev);
    *dev = NULL;
    return fail(n, TG_COMM_ERROR, what, cudaGetErrorString(e), st);
  }
  return TG_COMM_OK;
}

static tg_comm_code stage_out(tg_comm_impl *n, const char *what, void *host, const void *dev, size_t bytes,
                              tg_comm_status *st) {
  cudaError_t e = cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost);
  return e == cudaSuccess ? TG_COMM_OK : fail(n, TG_COMM_ERROR, what, cudaGetErrorString(e), st);
}

static tg_comm_code nccl_all_reduce_host(tg_comm_impl *n, void *buf, size_t count, tg_comm_dtype dtype,
                                         int64_t timeout_ms, tg_comm_status *st) {
  const char *what = "ncclAllReduce (host buffer)";
  size_t bytes = count * tg_comm_dtype_size(dtype);
  void *dev = NULL;
  tg_comm_code code = begin(n, what, st);
  if (code == TG_COMM_OK) code = stage_in(n, what, buf, bytes, &dev, st);
  if (code == TG_COMM_OK) code = nccl_all_reduce(n, dev, count, dtype, timeout_ms, st);
  if (code == TG_COMM_OK) code = stage_out(n, what, buf, dev, bytes, st);
  if (dev) cudaFree(dev);
  return code;
}

static tg_comm_code nccl_all_gather_host(tg_comm_impl *n, const void *send, void *recv, size_t bytes_per_rank,
                                         int64_t timeout_ms, tg_comm_status *st) {
  const char *what = "ncclAllGather (host buffers)";
  size_t total = bytes_per_rank * (size_t)n->world_size;
  void *dsend = NULL, *drecv = NULL;
  tg_comm_code code = begin(n, what, st);
  if (code == TG_COMM_OK) code = stage_in(n, what, send, bytes_per_rank, &dsend, st);
  if (code == TG_COMM_OK) code = stage_in(n, what, NULL, total, &drecv, st);
  if (code == TG_COMM_OK) code = nccl_all_gather(n, dsend, drecv, bytes_per_rank, timeout_ms, st);
  if (code == TG_COMM_OK) code = stage_out(n, what, recv, drecv, total, st);
  if (dsend) cudaFree(dsend);
  if (drecv) cudaFree(drecv);
  return code;
}

static void nccl_request_abort(tg_comm_impl *n) { atomic_store(&n->abort_requested, 1); }

/* Orderly teardown when healthy (finalize, bounded), abort otherwise. */
static void nccl_free(tg_comm_impl *n) {
  if (!n) return;
  if (n->comm) {
    cudaSetDevice(n->device);
    if (!n->failed && !atomic_load(&n->abort_requested) && ncclCommFinalize(n->comm) != ncclSuccess)
      n->failed = 1;
    if (!n->failed && !atomic_load(&n->abort_requested)) {
      tg_comm_status ignored;
      wait_ready(n, "ncclCommFinalize", now_ms() + FINALIZE_TIMEOUT_MS, &ignored);
    }
    if (n->failed || atomic_load(&n->abort_requested))
      nccl_abort_once(n);
    else
      ncclCommDestroy(n->comm);
  }
  if (n->barrier_word) cudaFree(n->barrier_word);
  if (n->stream) cudaStreamDestroy(n->stream);
  free(n);
}

const tg_comm_backend_ops tg_comm_nccl_ops = {
    .name = "nccl",
    .open = nccl_open,
    .all_reduce = nccl_all_reduce,
    .reduce_scatter = nccl_reduce_scatter,
    .all_gather = nccl_all_gather,
    .broadcast = nccl_broadcast,
    .barrier = nccl_barrier,
    .abort = nccl_request_abort,
    .free = nccl_free,
    .all_reduce_host = nccl_all_reduce_host,
    .all_gather_host = nccl_all_gather_host,
};
