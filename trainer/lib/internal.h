/* Shared by the files of libtardigrade (tardigrade.c: joining, collectives,
 * snapshots and progress; restore.c: finding the resume point and reading
 * shards back from wherever a copy survives). Not a public header. */
#ifndef TG_TRAINER_LIB_INTERNAL_H
#define TG_TRAINER_LIB_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/ckpt/store.h"
#include "agent/progress/counters.h"
#include "common/rpc/rpc.h"
#include "trainer/comm/comm.h"
#include "trainer/include/tardigrade.h"

#define TG_LIB_MAX_BUFFERS 32

typedef struct {
  char name[64];
  void *data;
  size_t bytes;
  int replica;  /* identical on every rank (tg_register_replica): checked before a snapshot */
} tg_lib_buffer;

/* A shard read whole (from any copy) and kept until the next snapshot. */
typedef struct tg_lib_cached {
  tg_ckpt_key key;
  void *bytes;
  size_t len;
  struct tg_lib_cached *next;
} tg_lib_cached;

typedef struct tg_lib_plan tg_lib_plan; /* restore.c: who holds which shard */

struct tg_trainer {
  char job[64];
  uint32_t slot;
  tg_comm_backend backend;    /* $TG_COMM_BACKEND: gloo (default) or nccl */
  int cuda_device;            /* NCCL only: $TG_CUDA_DEVICE, else the slot */
  tg_rpc_channel *agent;
  tg_ckpt_store *store;
  tg_comm *comm;              /* written by the caller's thread under comm_mu */
  pthread_mutex_t comm_mu;    /* comm vs. the alive thread aborting it */
  tg_world world;
  uint64_t known_generation;
  char node_id[128];          /* this node, and where other nodes reach its agent */
  char agent_address[256];
  char ckpt_dir[512];         /* persisted checkpoints, "" when none */
  tg_lib_buffer buffers[TG_LIB_MAX_BUFFERS];
  size_t n_buffers;
  uint64_t collective_seq;    /* collectives entered in this generation */
  tg_counters *counters;      /* where the agent reads it ($TG_PROGRESS_SHM; NULL: not told) */
  pthread_t alive_thread;     /* says this process is not stopped (see counters.h) */
  int alive_started;
  atomic_int alive_stop;
  int replication_stalled;    /* said once until replication catches up */
  tg_lib_plan *plan;          /* of the last tg_resume_step in this world */
  tg_lib_cached *cache;
  int64_t replica_check_steps; /* $TG_REPLICA_CHECK_STEPS: check every N steps (0: never) */
  /* Busy time (outside collectives) between two replica checks, which
   * all-gather it beside the checksum to name a straggler (replica.c). */
  int64_t check_mark_ms;      /* monotonic, at the end of the last check in this world; 0: none */
  int64_t collective_ms;      /* spent inside collectives since then */
  int64_t entered_ms;         /* when the current collective was entered */
  int slow_checks;            /* consecutive checks at which this rank was the slow one */
  char error[512];
};

/* Sets t->error; returns TG_ERROR. */
tg_result tg_lib_fail(tg_trainer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Forgets the resume plan and the cached shards (restore.c). */
void tg_lib_forget_restore(tg_trainer *t);

/* All-gather / all-reduce of the library's own bookkeeping in HOST memory,
 * whatever the backend (NCCL stages it through the device); counted as
 * collectives for the hang detector like the public ones. */
tg_result tg_lib_all_gather_host(tg_trainer *t, const void *send, void *recv, size_t bytes_per_rank);
tg_result tg_lib_all_reduce_host(tg_trainer *t, int64_t *buf, size_t count);

/* Reports a fault about this rank to the agent (a Severity; logged). An
 * ERROR re-forms the world; a WARNING is recorded only. */
void tg_lib_report(tg_trainer *t, int kind, int severity, const char *detail);

/* replica.c: the cross-rank check of the replicated buffers that
 * tg_snapshot runs before it writes `step`: TG_OK, or TG_WORLD_CHANGED
 * (a mismatch, reported, or a failed collective) with t->error set. */
tg_result tg_lib_check_replicas(tg_trainer *t, uint64_t step);

/* The checksum the check compares (64 bits over the replicated buffers,
 * in registration order). */
uint64_t tg_lib_replica_checksum(const tg_trainer *t);

#endif
