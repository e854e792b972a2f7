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
 * error, the polling thread itself stops the communicator: ncclCommRevoke
 * where the library has it (it stops every operation in flight and leaves
 * the communicator able to be shrunk), else ncclCommAbort (NCCL drops its
 * kernels and proxy threads). Either way it is dead for collectives, as
 * with gloo.
 *
 * The next world's communicator (DESIGN.md: "abort, then ncclCommShrink or
 * a new communicator"): when every rank of it still holds the previous
 * one, in the same order, and the world only lost ranks, it is shrunk from
 * it (ncclCommShrink excluding the lost ranks: no bootstrap, no unique id);
 * otherwise it is built fresh from a unique id. The ranks agree which
 * through the generation's store (reform.h). A shrink that fails, or gives
 * a communicator of the wrong shape, turns shrinking off in this process,
 * so the generation after it is built fresh.
 * tg_comm_abort from another thread only raises the flag: NCCL calls on a
 * communicator stay on the thread that owns it, so abort never races a
 * call in flight. Without a collective in flight the abort happens at the
 * next call or at free.
 *
 * The 128-byte unique id comes from the caller, or (nccl_id NULL) from
 * the generation's store: ncclGetUniqueId opens the bootstrap root's
 * listening socket in the process that calls it, so rank 0 makes the id
 * and publishes it in the plan under the store prefix the coordinator
 * allocated for this generation (reform.h); the other ranks read it there.
 * A new generation has a new prefix, hence a new id: no rank of an old
 * world can join a new communicator.
 * ncclCommRevoke (NCCL 2.28) and ncclCommShrink (2.27) are looked up when
 * first needed instead of linked: a binary built against these headers
 * still loads with an older libnccl at run time (the GPU machine's was
 * 2.28.3, these headers 2.28.9) and then aborts and builds fresh.
 * Buffers are device memory of cfg->cuda_device; the *_host collectives
 * stage host buffers through a temporary device buffer.
 *
 * Verified on one GPU (world size 1: abort, a fresh communicator, the id
 * through the store); revoke-then-shrink needs two GPUs or more and has
 * not run anywhere yet (reform_test covers the agreement on CPU). This
 * builds wherever CUDA and NCCL are installed; comm_nccl_test skips
 * without a GPU. */
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "trainer/comm/comm_backend.h"
#include "trainer/comm/reform.h"

#define POLL_INTERVAL_NS 50000          /* 50 us between polls */
#define FINALIZE_TIMEOUT_MS 10000       /* orderly teardown before giving up and aborting */
#define QUIESCE_TIMEOUT_MS 5000         /* a revoked communicator settling before it is shrunk */
#ifndef NCCL_SHRINK_DEFAULT
#define NCCL_SHRINK_DEFAULT 0x00
#define NCCL_SHRINK_ABORT 0x01
#endif

typedef ncclResult_t (*revoke_fn)(ncclComm_t comm, int flags);
typedef ncclResult_t (*shrink_fn)(ncclComm_t comm, int *exclude, int n_exclude, ncclComm_t *newcomm,
                                  ncclConfig_t *config, int flags);
static revoke_fn nccl_revoke;      /* NULL: this libnccl has none */
static shrink_fn nccl_shrink;
static pthread_once_t lookup_once = PTHREAD_ONCE_INIT;
static atomic_int shrink_disabled; /* a shrink failed in this process: build fresh from now on */

static void lookup_optional(void) {
  void *revoke = dlsym(RTLD_DEFAULT, "ncclCommRevoke"), *shrink = dlsym(RTLD_DEFAULT, "ncclCommShrink");
  memcpy(&nccl_revoke, &revoke, sizeof revoke);
  memcpy(&nccl_shrink, &shrink, sizeof shrink);
}

/* 1 when this process can revoke and shrink communicators. */
static int can_shrink(void) {
  pthread_once(&lookup_once, lookup_optional);
  return nccl_revoke && nccl_shrink && !atomic_load(&shrink_disabled);
}

struct tg_comm_impl {
  ncclComm_t comm;
  cudaStream_t stream;
  int device;
  int rank;
  int world_size;
  atomic_int abort_requested; /* set by tg_comm_abort from any thread */
  int nccl_aborted;           /* ncclCommAbort ran (owner thread only) */
  int revoked;                /* ncclCommRevoke ran: no collectives, but it can be shrunk */
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

/* Stops every operation of the communicator (owner thread): revoked
 * where it may be shrunk into the next world's, aborted otherwise. */
static void nccl_stop(tg_comm_impl *n) {
  n->failed = 1;
  if (!n->comm || n->nccl_aborted || n->revoked) return;
  if (can_shrink()) {
    ncclResult_t r = nccl_revoke(n->comm, 0);
    if (r == ncclSuccess || r == ncclInProgress) {
      n->revoked = 1;
      return;
    }
  }
  nccl_abort_once(n);
}

/* Records a failure: stops the communicator and formats the reason. */
static tg_comm_code fail(tg_comm_impl *n, tg_comm_code code, const char *what, const char *detail,
                         tg_comm_status *st) {
  const char *last = n->comm ? ncclGetLastError(n->comm) : NULL;
  tg_comm_status_set(st, code, "%s: %s%s%s", what, detail, last && *last ? "; nccl: " : "",
                     last && *last ? last : "");
  nccl_stop(n);
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

/* Whether this rank can offer its previous communicator to be shrunk:
 * the library can, the old one is on this GPU, not aborted, and settled
 * once revoked (it is revoked here if it was still healthy: a world can
 * change without any collective failing on this rank). Aborts an old
 * communicator it cannot offer. */
static int offer_parent(const tg_comm_parent *parent, int device) {
  if (!parent || !can_shrink()) return 0;
  tg_comm_impl *old = parent->impl;
  if (!old->comm || old->nccl_aborted || old->device != device) return 0;
  cudaSetDevice(old->device);
  nccl_stop(old);
  int64_t deadline_ms = now_ms() + QUIESCE_TIMEOUT_MS;
  while (old->revoked) {
    ncclResult_t async = ncclSuccess;
    if (ncclCommGetAsyncError(old->comm, &async) != ncclSuccess) break;
    if (async != ncclInProgress) return 1; /* settled; an earlier error is what the shrink leaves behind */
    if (now_ms() >= deadline_ms) break;
    pause_briefly();
  }
  nccl_abort_once(old);
  return 0;
}

static int make_unique_id(uint8_t id[TG_COMM_NCCL_ID_BYTES], void *user, char *err, size_t errlen) {
  ncclUniqueId u;
  _Static_assert(sizeof u.internal == TG_COMM_NCCL_ID_BYTES, "ncclUniqueId is 128 bytes");
  ncclResult_t r = ncclGetUniqueId(&u);
  if (r != ncclSuccess) {
    snprintf(err, errlen, "ncclGetUniqueId: %s", ncclGetErrorString(r));
    return -1;
  }
  memcpy(id, u.internal, sizeof u.internal);
  return 0;
}

/* The new world's communicator from the old one, as the plan says. */
static tg_comm_code shrink_from(tg_comm_impl *n, const tg_comm_parent *parent, tg_comm_plan *plan,
                                int64_t deadline_ms, tg_comm_status *st) {
  if (parent->generation != plan->parent_generation || parent->world_size != plan->parent_size)
    return tg_comm_status_set(st, TG_COMM_ERROR, "shrink plan for generation %lld, this rank holds %lld",
                              (long long)plan->parent_generation, (long long)parent->generation);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclResult_t r = nccl_shrink(parent->impl->comm, plan->excluded, plan->n_excluded, &n->comm, &config,
                               NCCL_SHRINK_DEFAULT);
  if (r != ncclSuccess && r != ncclInProgress) {
    atomic_store(&shrink_disabled, 1);
    if (n->comm) nccl_abort_once(n);
    return tg_comm_status_set(st, TG_COMM_ERROR, "ncclCommShrink: %s (the next world is built fresh)",
                              ncclGetErrorString(r));
  }
  tg_comm_code code = wait_ready(n, "ncclCommShrink", deadline_ms, st);
  int rank = -1, count = -1;
  if (code == TG_COMM_OK && (ncclCommUserRank(n->comm, &rank) != ncclSuccess ||
                             ncclCommCount(n->comm, &count) != ncclSuccess || rank != n->rank ||
                             count != n->world_size))
    code = fail(n, TG_COMM_ERROR, "ncclCommShrink", "the shrunk communicator has another shape than the world",
                st);
  if (code != TG_COMM_OK) atomic_store(&shrink_disabled, 1);
  return code;
}

static tg_comm_code init_fresh(tg_comm_impl *n, const tg_comm_config *cfg, const uint8_t *id_bytes,
                               int64_t deadline_ms, tg_comm_status *st) {
  ncclUniqueId id;
  memcpy(id.internal, id_bytes, sizeof id.internal);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclResult_t r = ncclCommInitRankConfig(&n->comm, cfg->world_size, id, cfg->rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    if (n->comm) nccl_abort_once(n);
    return tg_comm_status_set(st, TG_COMM_ERROR, "ncclCommInitRankConfig: %s", ncclGetErrorString(r));
  }
  return wait_ready(n, "ncclCommInitRankConfig", deadline_ms, st);
}

static tg_comm_code nccl_open(const tg_comm_config *cfg, const tg_comm_parent *parent,
                              int64_t connect_timeout_ms, tg_comm_impl **out, tg_comm_status *st) {
  tg_comm_code code = TG_COMM_ERROR;
  int64_t deadline_ms = now_ms() + connect_timeout_ms;
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
  if (cfg->nccl_id) {
    code = init_fresh(n, cfg, cfg->nccl_id, deadline_ms, st);
  } else {
    tg_comm_vote mine = {0};
    if (offer_parent(parent, n->device))
      mine = (tg_comm_vote){parent->generation, parent->rank, parent->world_size};
    tg_comm_plan *plan = malloc(sizeof *plan);
    tg_comm_status pst = {0};
    code = plan ? tg_comm_reform_agree(cfg, &mine, make_unique_id, NULL, deadline_ms, plan, &pst)
                : tg_comm_status_set(&pst, TG_COMM_ERROR, "out of memory");
    if (code != TG_COMM_OK)
      tg_comm_status_set(st, code, "shrink or fresh: %s", pst.message);
    else if (plan->shrink && mine.parent_generation > 0)
      code = shrink_from(n, parent, plan, deadline_ms, st);
    else if (plan->shrink)
      code = tg_comm_status_set(st, TG_COMM_ERROR, "a shrink plan, but this rank offered nothing to shrink");
    else
      code = init_fresh(n, cfg, plan->nccl_id, deadline_ms, st);
    free(plan);
  }
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
