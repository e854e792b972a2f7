/* The trainer's communicator: the collectives a data-parallel step needs,
 * behind one small C contract with two backends.
 *
 *   gloo (CPU, TCP)  every test and every CPU run uses it; ranks meet
 *                    through etcd under a per-generation key prefix.
 *   NCCL (GPU)       built only where CUDA/NCCL are installed; ranks meet
 *                    through a 128-byte ncclUniqueId the coordinator hands out.
 *
 * Why a wrapper at all: Tardigrade must survive a rank that dies or hangs
 * inside a collective (DESIGN.md, "Recovery path"). So here every operation
 *   - has a deadline (timeout_ms > 0; there is no "wait forever"),
 *   - returns a code and a one-line message instead of crashing or hanging,
 *   - can be unblocked from another thread by tg_comm_abort (a watchdog,
 *     or the agent saying the world changed).
 * A communicator belongs to one world: (generation, rank, world_size).
 * After any failure (TIMEOUT, ABORTED, ERROR) it is broken for good: every
 * later call fails at once. Recovery is to free it and create a new one for
 * the next generation; the process, its memory and its GPU state survive.
 *
 * Exactness: the trainer all-reduces gradients as fixed-point int64, so a
 * sum is exact and independent of world size and reduction order (a
 * project invariant, see "Determinism"). int64 sums wrap modulo 2^64 and
 * never trap. float32 sums are provided for the rest (loss, metrics).
 *
 * Threads: collectives on one communicator are called from one thread at a
 * time, and every rank calls the same collectives in the same order with
 * the same sizes. tg_comm_abort and the read-only getters may be called
 * from any thread at any moment, except concurrently with tg_comm_free.
 *
 * Buffers are host memory for gloo and device memory for NCCL. */
#ifndef TG_TRAINER_COMM_H
#define TG_TRAINER_COMM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tg_comm tg_comm;

typedef enum {
  TG_COMM_OK = 0,
  TG_COMM_TIMEOUT = 1, /* this rank's deadline passed (a peer did not arrive) */
  TG_COMM_ABORTED = 2, /* tg_comm_abort was called on this communicator */
  TG_COMM_ERROR = 3,   /* anything else: bad arguments, a peer closed, etcd, CUDA... */
} tg_comm_code;

/* The outcome of a call: a code and one human-readable line. */
typedef struct {
  tg_comm_code code;
  char message[256];
} tg_comm_status;

typedef enum {
  TG_COMM_GLOO = 0,
  TG_COMM_NCCL = 1,
} tg_comm_backend;

typedef enum {
  TG_COMM_FLOAT32 = 0,
  TG_COMM_INT64 = 1,
} tg_comm_dtype;

#define TG_COMM_NCCL_ID_BYTES 128

typedef struct {
  tg_comm_backend backend;
  int rank;           /* 0 .. world_size-1 */
  int world_size;
  int64_t generation; /* the world's generation (> 0) */

  /* gloo: where ranks meet (World.store_address / World.store_prefix). */
  const char *store_address; /* etcd endpoints, "host:port,host:port" */
  const char *store_prefix;  /* e.g. "/tardigrade/jobs/J/gen/7/gloo/"; one per generation */
  const char *host;          /* address to listen on and advertise; NULL: "127.0.0.1" */

  /* NCCL: the world's unique id and this rank's GPU. With nccl_id NULL,
   * rank 0 makes one (ncclGetUniqueId opens its bootstrap socket in this
   * process) and publishes it under store_prefix + "nccl-id"; the other
   * ranks read it from there (store_address and store_prefix required). */
  const uint8_t *nccl_id; /* TG_COMM_NCCL_ID_BYTES bytes, or NULL */
  int cuda_device;

  /* Bound on creation (rendezvous + connecting). 0: 30000. gloo may take
   * up to twice this when a peer dies half-way through connecting. */
  int64_t connect_timeout_ms;

  /* Optional: polled (on the creating thread) while creation waits for
   * peers; nonzero gives up at once with ABORTED. For "a newer world
   * exists": a member of this one may never arrive. */
  int (*cancelled)(void *user);
  void *cancel_user;

  /* Optional: the communicator of the world this rank was in before (any
   * state: failed or aborted is fine). A backend that can derive the new
   * world's communicator from it does: NCCL shrinks it (ncclCommShrink)
   * when every rank of the new world holds the old one in the same order
   * and the world only lost ranks (trainer/comm/reform.h); otherwise, and
   * for gloo, it is not used. The caller still frees it, after create. */
  tg_comm *parent;
} tg_comm_config;

/* Joins the world described by cfg; every rank of it must call this. NULL
 * with st set on failure (TIMEOUT if peers did not all arrive in time).
 * cfg is not kept. st may be NULL here and everywhere below. */
tg_comm *tg_comm_create(const tg_comm_config *cfg, tg_comm_status *st);

/* In place: buf (count elements) becomes the element-wise sum over ranks. */
tg_comm_code tg_comm_all_reduce(tg_comm *c, void *buf, size_t count, tg_comm_dtype dtype,
                                int64_t timeout_ms, tg_comm_status *st);

/* send holds world_size * recv_count elements; recv gets this rank's block
 * (block `rank`) of their element-wise sum over ranks. */
tg_comm_code tg_comm_reduce_scatter(tg_comm *c, const void *send, void *recv, size_t recv_count,
                                    tg_comm_dtype dtype, int64_t timeout_ms, tg_comm_status *st);

/* recv (world_size * bytes_per_rank) gets every rank's send, in rank order. */
tg_comm_code tg_comm_all_gather(tg_comm *c, const void *send, void *recv, size_t bytes_per_rank,
                                int64_t timeout_ms, tg_comm_status *st);

/* buf of rank `root` is copied into buf on every rank. */
tg_comm_code tg_comm_broadcast(tg_comm *c, void *buf, size_t bytes, int root, int64_t timeout_ms,
                               tg_comm_status *st);

tg_comm_code tg_comm_barrier(tg_comm *c, int64_t timeout_ms, tg_comm_status *st);

/* 1 when collective buffers are device memory (NCCL), 0 for host (gloo). */
int tg_comm_device_buffers(const tg_comm *c);

/* tg_comm_all_reduce and tg_comm_all_gather on HOST buffers whatever the
 * backend: NCCL stages them through device memory. For small control data
 * (a library's bookkeeping), not for gradients. */
tg_comm_code tg_comm_all_reduce_host(tg_comm *c, void *buf, size_t count, tg_comm_dtype dtype,
                                     int64_t timeout_ms, tg_comm_status *st);
tg_comm_code tg_comm_all_gather_host(tg_comm *c, const void *send, void *recv, size_t bytes_per_rank,
                                     int64_t timeout_ms, tg_comm_status *st);

/* Makes a collective blocked on this communicator return ABORTED soon, and
 * every later one at once. Safe from any thread; idempotent. A rank that
 * fails or is aborted closes its connections: a peer waiting on it fails
 * soon after (ERROR); a peer waiting on someone else fails at its own
 * deadline, or at once when it is aborted too (what the agent does when
 * the world changes). */
void tg_comm_abort(tg_comm *c);

/* Releases everything. Not concurrently with a collective or an abort on c.
 * NULL is fine. */
void tg_comm_free(tg_comm *c);

int tg_comm_rank(const tg_comm *c);
int tg_comm_world_size(const tg_comm *c);
int64_t tg_comm_generation(const tg_comm *c);
/* How many collectives this rank has entered: each rank reports it so the
 * one that did not enter the hung collective is named, not its victims. */
uint64_t tg_comm_entered(const tg_comm *c);

/* "OK", "TIMEOUT", "ABORTED", "ERROR". */
const char *tg_comm_code_name(tg_comm_code code);

#ifdef __cplusplus
}
#endif

#endif
