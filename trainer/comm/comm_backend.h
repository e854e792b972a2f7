/* What a communicator backend (gloo, NCCL) implements; private to
 * trainer/comm.
 *
 * comm.c owns everything the backends have in common: argument checks,
 * the aborted/broken state, the entered-collectives counter, and turning a
 * backend's failure into ABORTED when the communicator was aborted. A
 * backend only moves bytes, honours the timeout it is given, and makes a
 * blocked call return when `abort` is called from another thread.
 * Backends are called with validated arguments and never with count 0. */
#ifndef TG_TRAINER_COMM_BACKEND_H
#define TG_TRAINER_COMM_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/comm/comm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One backend's state for one world. */
typedef struct tg_comm_impl tg_comm_impl;

/* tg_comm_config.parent as a backend sees it: the same backend's state of
 * the rank's previous world, with that world's shape. */
typedef struct {
  tg_comm_impl *impl;
  int64_t generation;
  int rank;
  int world_size;
} tg_comm_parent;

typedef struct {
  const char *name;
  /* Creates the backend's state for cfg (already validated), spending at
   * most connect_timeout_ms waiting for peers. parent: the previous
   * world's state on this rank (NULL: none), which it may derive the new
   * one from; the caller frees it afterwards either way. */
  tg_comm_code (*open)(const tg_comm_config *cfg, const tg_comm_parent *parent, int64_t connect_timeout_ms,
                       tg_comm_impl **out, tg_comm_status *st);
  tg_comm_code (*all_reduce)(tg_comm_impl *b, void *buf, size_t count, tg_comm_dtype dtype,
                             int64_t timeout_ms, tg_comm_status *st);
  tg_comm_code (*reduce_scatter)(tg_comm_impl *b, const void *send, void *recv, size_t recv_count,
                                 tg_comm_dtype dtype, int64_t timeout_ms, tg_comm_status *st);
  tg_comm_code (*all_gather)(tg_comm_impl *b, const void *send, void *recv, size_t bytes_per_rank,
                             int64_t timeout_ms, tg_comm_status *st);
  tg_comm_code (*broadcast)(tg_comm_impl *b, void *buf, size_t bytes, int root,
                            int64_t timeout_ms, tg_comm_status *st);
  tg_comm_code (*barrier)(tg_comm_impl *b, int64_t timeout_ms, tg_comm_status *st);
  /* Any thread, any time before free; must not block for long. */
  void (*abort)(tg_comm_impl *b);
  void (*free)(tg_comm_impl *b);
  /* Backends whose buffers are device memory set these: the same
   * collectives on host buffers, staged through the device. NULL: the
   * backend's buffers are host memory already. */
  tg_comm_code (*all_reduce_host)(tg_comm_impl *b, void *buf, size_t count, tg_comm_dtype dtype,
                                  int64_t timeout_ms, tg_comm_status *st);
  tg_comm_code (*all_gather_host)(tg_comm_impl *b, const void *send, void *recv, size_t bytes_per_rank,
                                  int64_t timeout_ms, tg_comm_status *st);
} tg_comm_backend_ops;

extern const tg_comm_backend_ops tg_comm_gloo_ops;
#ifdef TG_COMM_HAVE_NCCL
extern const tg_comm_backend_ops tg_comm_nccl_ops;
#endif

/* Sets st->code and formats st->message (st may be NULL); returns code. */
tg_comm_code tg_comm_status_set(tg_comm_status *st, tg_comm_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Bytes per element of dtype. */
size_t tg_comm_dtype_size(tg_comm_dtype dtype);

#ifdef __cplusplus
}
#endif

#endif
