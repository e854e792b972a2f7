/* tardigrade.h: the whole contract between a training program and
 * Tardigrade.
 *
 * A trainer process is started by tg-agent (one per slot) with its
 * environment set: TG_AGENT_SOCKET, TG_SLOT, TG_NODE_ID, TG_JOB, TG_CKPT_SHM.
 * Optional: TG_COMM_BACKEND=nccl (default gloo) and TG_CUDA_DEVICE (default:
 * the slot number) for GPU collectives.
 * It calls tg_init once, then loops:
 *
 *   tg_join        wait for a world; learn rank and size; build the
 *                  communicator (gloo on CPU) for this generation
 *   tg_resume_step where to resume: the newest step all of whose shards
 *                  survive somewhere (0: start afresh)
 *   tg_restore     read this rank's shard of it back into the registered
 *                  buffers (or tg_shard_open the old world's shards and
 *                  reshard, when the world changed size)
 *   per step:  collectives (tg_all_reduce, tg_all_gather, ...) ...
 *              tg_snapshot(step)   check the replicated buffers across ranks,
 *                                  then this rank's buffers into the node's memory
 *              tg_step_done(step)  report progress
 *
 * Every call returns TG_OK, or TG_WORLD_CHANGED when the world this rank
 * was in is gone (a peer failed, a collective timed out, the coordinator
 * formed a new generation): the survivor does not exit; it calls tg_join
 * again and restores. TG_ERROR means this process cannot go on (bad
 * arguments, no agent); a message says why.
 *
 * Snapshots hold the buffers registered with tg_register, in registration
 * order, each with its byte length; they are written to the agent's shared
 * memory, which outlives this process, with a checksum that is verified on
 * every read. The agent copies each to a buddy agent on another node, so a
 * restarted trainer resumes from its node's memory and a replacement node
 * from its buddy's; a step is committed once every shard of it is in two
 * memories. tg_step_done waits when the copies fall more than
 * TG_MAX_REPLICATION_LAG steps behind, so that lag stays bounded. */
#ifndef TARDIGRADE_H
#define TARDIGRADE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  TG_OK = 0,
  TG_WORLD_CHANGED = 1, /* re-join, restore, go on */
  TG_ERROR = -1,        /* give up: tg_last_error() says why */
} tg_result;

typedef enum { TG_FLOAT32 = 0, TG_INT64 = 1 } tg_dtype;

#define TG_MAX_REPLICATION_LAG 2

typedef struct tg_trainer tg_trainer;

typedef struct {
  uint64_t generation;
  int rank;
  int world_size;
  int previous_world_size;  /* 0 before the first world */
  uint64_t coordinator_resume_step; /* the job's newest committed step when it formed */
} tg_world;

/* From the agent's environment. NULL (with a message on stderr) when the
 * environment is incomplete or the agent cannot be reached. Sets SIGPIPE
 * to ignored unless the program installed a handler: a peer dying
 * mid-collective must fail the collective, not kill this process. */
tg_trainer *tg_init(void);
void tg_free(tg_trainer *t);

/* The last error of this trainer, one line. */
const char *tg_last_error(const tg_trainer *t);

/* Waits (up to timeout_ms) until the agent has a world for this slot that
 * is newer than the last one joined, then builds the communicator. */
tg_result tg_join(tg_trainer *t, tg_world *world, int64_t timeout_ms);

/* Registers a buffer to snapshot and restore. The trainer keeps the
 * pointer; registering a name again replaces it (in a world of another
 * size a rank's slices have other sizes). Returns TG_OK or TG_ERROR. */
tg_result tg_register(tg_trainer *t, const char *name, void *data, size_t bytes);

/* Registers, as tg_register, a buffer of which every rank holds an
 * identical copy: in data parallelism, the parameters. Before tg_snapshot
 * writes a step (every TG_REPLICA_CHECK_STEPS steps), the ranks compare a
 * 64-bit checksum of their replicated buffers (one all-gather of 16 bytes
 * per rank); see tg_snapshot. Buffers that differ by design between ranks
 * (a ZeRO optimizer slice, an RNG state) must use tg_register. */
tg_result tg_register_replica(tg_trainer *t, const char *name, void *data, size_t bytes);

/* Steps between two replica checks: $TG_REPLICA_CHECK_STEPS when set (0:
 * never; every rank of a job must have the same value, as the check is a
 * collective), else this. The check of a step costs a checksum of the
 * replicated bytes (about 0.2 ms per MiB on a 2-core VM: bench/replica)
 * and one all-gather of 16 bytes per rank. */
#define TG_REPLICA_CHECK_STEPS_DEFAULT 1

/* Where training resumes in a new world. */
typedef struct {
  uint64_t step;            /* 0: there is no snapshot anywhere; start afresh */
  int world_size;           /* size of the world that wrote it: its shards are
                             * 0 .. world_size - 1 (one per rank of that world) */
  int from_disk;            /* some shard came from the persisted checkpoint
                             * because no memory copy of it was left */
  uint64_t committed_step;  /* the job's newest committed step, as the
                             * coordinator knew it when this world formed */
  uint64_t lost_steps;      /* committed steps that could not be recovered:
                             * committed_step - step when positive */
} tg_resume;

/* Agrees with every rank of the current world on where to resume: the
 * newest step of which every shard is still somewhere (this node's memory,
 * another node's, or the persisted checkpoint), preferring memory. Every
 * shard of it is read and its checksum verified before the step is chosen,
 * so a corrupt copy is refused and another copy, or an older step, used.
 * The world that wrote the step may have had another size: tg_restore then
 * does not apply; read the old shards with tg_shard_open and reshard. */
tg_result tg_resume_step(tg_trainer *t, tg_resume *resume);

/* Reads this rank's shard of the resume point into the registered buffers
 * (each must have the length it had when snapshotted). Only when the world
 * has the size it had then (resume->world_size). */
tg_result tg_restore(tg_trainer *t, const tg_resume *resume);

/* One shard of the resume point, read whole: its buffers in the order
 * they were registered when it was written. The bytes stay valid until
 * tg_shard_close. Copies fetched from other nodes or the disk are cached
 * until the next tg_snapshot or tg_join. */
typedef struct tg_shard tg_shard;
tg_result tg_shard_open(tg_trainer *t, const tg_resume *resume, int shard, tg_shard **out);
size_t tg_shard_buffers(const tg_shard *s);
const void *tg_shard_buffer(const tg_shard *s, size_t index, size_t *bytes);
void tg_shard_close(tg_shard *s);

/* Writes the registered buffers as this rank's snapshot of `step` into the
 * node's memory; the agent copies it to a buddy node (and every N steps to
 * disk) in the background.
 *
 * First, on a step that is a multiple of TG_REPLICA_CHECK_STEPS, every
 * rank compares its replicated buffers' checksum with the others' (silent
 * data corruption: a bit flipped in one rank's copy of the parameters).
 * When they differ the step is not written (so it can never be
 * committed) and TG_WORLD_CHANGED is returned: re-join and resume from the
 * last committed step. The ranks that differ from a strict majority are
 * the culprits: each reports SILENT_DATA_CORRUPTION at FATAL severity, so
 * the coordinator takes its node out of the world (a spare takes its
 * place) and quarantines it, as it would a GPU that fell off the bus: a
 * device that computes wrong numbers once will again, and nothing on the
 * node can tell. Without a strict majority (two ranks, or a split) no
 * culprit can be named: rank 0 reports SILENT_DATA_CORRUPTION at ERROR
 * severity naming itself, and the same nodes roll back to the last
 * committed step. A corruption of a rank's own slice before it is
 * gathered reaches every replica and is not seen by this check.
 *
 * The same all-gather carries each rank's time outside collectives since
 * the previous check: a rank at more than 3x the median (and 50 ms more)
 * at 3 checks in a row reports itself a STRAGGLER (WARNING: the world
 * stands), once until it is no longer slow. Step times cannot name it:
 * every rank waits for the slowest inside the collectives. */
tg_result tg_snapshot(tg_trainer *t, uint64_t step);

/* Says that this rank's `step` cannot be committed because its loss or
 * gradient is not finite (NaN or infinite): reports NAN_LOSS at ERROR
 * severity, so the coordinator forms a new world of the same nodes and
 * every rank rolls back to the last committed step (the peers waiting in
 * this step's collectives are released by the new world). Returns
 * TG_WORLD_CHANGED: re-join. `what` names the value ("loss", "gradient"). */
tg_result tg_report_nonfinite(tg_trainer *t, uint64_t step, const char *what);

/* Reports that `step` is done (for the hang detector and the heartbeats);
 * TG_WORLD_CHANGED if a newer generation exists. */
tg_result tg_step_done(tg_trainer *t, uint64_t step, float loss, uint32_t step_time_ms);

/* Collectives among the ranks of the current world. Sums are exact for
 * TG_INT64. Buffers are host memory with gloo and CUDA device memory (of
 * tg_cuda_device) with NCCL: see tg_device_buffers. */
tg_result tg_all_reduce(tg_trainer *t, void *buf, size_t count, tg_dtype type);
tg_result tg_all_gather(tg_trainer *t, const void *send, void *recv, size_t bytes_per_rank);
tg_result tg_broadcast(tg_trainer *t, void *buf, size_t bytes, int root);

/* 1 when the collectives above take CUDA device pointers (the NCCL
 * backend, TG_COMM_BACKEND=nccl), 0 when they take host memory (gloo).
 * Known from tg_init on. Snapshot buffers (tg_register) are always host
 * memory: on GPU, copy into pinned host buffers asynchronously and wait for
 * the copy just before tg_snapshot. */
int tg_device_buffers(const tg_trainer *t);
/* The CUDA device the NCCL communicator uses ($TG_CUDA_DEVICE, else the
 * slot number); -1 with gloo. */
int tg_cuda_device(const tg_trainer *t);

#ifdef __cplusplus
}
#endif

#endif
