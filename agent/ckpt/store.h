/* The node's in-memory checkpoint store: shard snapshots in POSIX shared
 * memory that outlive the trainer that wrote them.
 *
 * The agent creates one region per job (tg_ckpt_store_create); each trainer
 * maps it by name (tg_ckpt_store_open) and writes its shard of the training
 * state every step. When a trainer crashes, the region stays with the agent,
 * and the restarted trainer (or the agent, to replicate it, see
 * replicate.h) reads the shard back. Nothing here takes a lock: a slot's
 * state lives in one atomic word, so a process killed at any instruction
 * leaves nothing locked, and a shard that was not fully written is never
 * read as committed.
 *
 * The region is a header and a fixed table of equal slots; one slot holds
 * one shard (its key, length, CRC-64 and bytes). Size the store as
 * slots >= shards on this node x (keep_steps + 1), so every shard can write
 * its next step while keeping its newest keep_steps committed ones. A slot
 * is as large as capacity_bytes allows (see tg_ckpt_store_slot_bytes).
 *
 * Everything in the region can be scribbled on by user code, so a process
 * trusts only the geometry it validated when mapping it, checks every field
 * it reads from a slot, and checks every shard's CRC-64 on the copy it
 * returns. A store handle may be used from many threads at once.
 * tg_ckpt_store_corrupt breaks a shard on purpose, so that tests and
 * tg-chaos can check that every reader refuses it. */
#ifndef TG_CKPT_STORE_H
#define TG_CKPT_STORE_H

#include <stddef.h>
#include <stdint.h>

/* Results: 0 or a negative code. */
typedef enum {
  TG_CKPT_OK = 0,
  TG_CKPT_INVALID = -1,   /* bad argument or key */
  TG_CKPT_NOT_FOUND = -2, /* no committed shard with that key */
  TG_CKPT_CORRUPT = -3,   /* a committed shard failed its checksum (logged) */
  TG_CKPT_FULL = -4,      /* no free slot: every slot is kept or being written */
  TG_CKPT_TOO_LARGE = -5, /* longer than a slot, or than the caller's buffer */
  TG_CKPT_BUSY = -6,      /* the shard was replaced while being read; try again */
  TG_CKPT_LOST = -7,      /* the slot was taken from a writer (it looked dead) */
  TG_CKPT_SHORT = -8,     /* commit before all announced bytes were written */
  TG_CKPT_SYSTEM = -9,    /* an OS call failed */
} tg_ckpt_result;

/* "OK", "NOT_FOUND", ... */
const char *tg_ckpt_result_name(int result);

/* Longest job id, including the terminating NUL. */
#define TG_CKPT_JOB_ID_MAX 64

/* The largest shard accepted from outside a store (a file on disk, a
 * fetch into memory) when no tighter bound applies: far above any rank's
 * share of a model, low enough that a corrupt length is refused before it
 * is allocated. */
#define TG_CKPT_MAX_SHARD_BYTES ((uint64_t)64 << 30)

/* What a shard is: the job, the world that wrote it, the step and which
 * shard of how many. */
typedef struct {
  char job_id[TG_CKPT_JOB_ID_MAX]; /* NUL-terminated, not empty */
  uint64_t generation;
  uint64_t step;
  int32_t shard;       /* 0 <= shard < world_size */
  uint32_t world_size; /* > 0 */
} tg_ckpt_key;

/* TG_CKPT_OK when the key is well formed, else TG_CKPT_INVALID. */
int tg_ckpt_key_valid(const tg_ckpt_key *key);

/* 1 when two keys name the same shard. */
int tg_ckpt_key_equal(const tg_ckpt_key *a, const tg_ckpt_key *b);

typedef struct tg_ckpt_store tg_ckpt_store;

/* Agent side: creates the region `name` ("/tg-ckpt-<job>", a POSIX shm name:
 * one leading '/', no other) of at most capacity_bytes with `slots` slots,
 * keeping the newest keep_steps (>= 1) committed (generation, step)s per
 * shard index of a job (a later generation is newer whatever its step). Fails if the name exists. NULL with a reason in err on failure. */
tg_ckpt_store *tg_ckpt_store_create(const char *name, uint64_t capacity_bytes, uint32_t slots,
                                    uint32_t keep_steps, char *err, size_t errlen);

/* Trainer side (or an agent after a restart): maps an existing region and
 * validates its header. NULL with a reason in err on failure. */
tg_ckpt_store *tg_ckpt_store_open(const char *name, char *err, size_t errlen);

/* Unmaps; the region stays until unlinked. NULL is ignored. */
void tg_ckpt_store_close(tg_ckpt_store *store);

/* Removes the name; mappings keep working until closed. 0, or -1 (errno). */
int tg_ckpt_store_unlink(const char *name);

/* Geometry, as validated when mapped. */
uint32_t tg_ckpt_store_slots(const tg_ckpt_store *store);
uint64_t tg_ckpt_store_slot_bytes(const tg_ckpt_store *store); /* largest shard */
uint32_t tg_ckpt_store_keep_steps(const tg_ckpt_store *store);

/* Slots neither committed nor being written (a snapshot). */
uint32_t tg_ckpt_store_free_slots(const tg_ckpt_store *store);

/* Writes one whole shard and commits it: begin + append + commit. */
int tg_ckpt_store_write(tg_ckpt_store *store, const tg_ckpt_key *key, const void *bytes,
                        size_t len);

/* Copies the committed shard `key` into buf (cap bytes) and verifies its
 * CRC-64; *len gets its length (also on TG_CKPT_TOO_LARGE, so the caller
 * can size a buffer). TG_CKPT_CORRUPT if the checksum fails: the copy is
 * refused and the event logged. *checksum (may be NULL) gets the CRC-64. */
int tg_ckpt_store_read(tg_ckpt_store *store, const tg_ckpt_key *key, void *buf, size_t cap,
                       size_t *len, uint64_t *checksum);

/* The same into a buffer of its own size (*bytes to be freed with free). */
int tg_ckpt_store_read_alloc(tg_ckpt_store *store, const tg_ckpt_key *key, void **bytes,
                             size_t *len, uint64_t *checksum);

/* The newest committed (generation, step) of shard `shard` of job_id (a
 * later generation is newer whatever its step): TG_CKPT_OK with its
 * whole key in *key, or TG_CKPT_NOT_FOUND. Metadata only: a read of it may
 * still fail its checksum. */
int tg_ckpt_store_newest(tg_ckpt_store *store, const char *job_id, int32_t shard, tg_ckpt_key *key);

/* Keys of committed shards of job_id (NULL: every job), at most cap of them
 * into keys (may be NULL when cap is 0). Returns how many there are, which
 * may exceed cap. Slot order; a snapshot. */
size_t tg_ckpt_store_list(tg_ckpt_store *store, const char *job_id, tg_ckpt_key *keys, size_t cap);

/* Forgets the committed shard `key`: TG_CKPT_OK or TG_CKPT_NOT_FOUND. */
int tg_ckpt_store_delete(tg_ckpt_store *store, const tg_ckpt_key *key);

/* Fault injection (tests, tg-chaos): flips one byte of the committed
 * shard `key` in place, the byte at offset modulo its length, leaving its
 * recorded checksum alone, so that the next read of it fails with
 * TG_CKPT_CORRUPT exactly as after a stray write or a bit flip in memory.
 * TG_CKPT_OK, TG_CKPT_NOT_FOUND, or TG_CKPT_INVALID for a bad key or an
 * empty shard (no byte to flip). Never call it on a job that matters: if
 * the slot is reused at that instant, the flip lands in its new shard. */
int tg_ckpt_store_corrupt(tg_ckpt_store *store, const tg_ckpt_key *key, uint64_t offset);

/* Frees slots left "writing" by processes that no longer exist (a trainer
 * killed mid-copy). Writers call it themselves when the store is full;
 * the agent may call it when it reaps a trainer. Returns slots freed.
 * Writers are recognised by process id, so call it from the writers' pid
 * namespace. */
uint32_t tg_ckpt_store_reclaim(tg_ckpt_store *store);

/* ------------------------------------------------------ streaming writes */

/* A shard written in pieces (a device-to-host copy in chunks, a push
 * arriving from a buddy): begin reserves a slot for `len` bytes, append
 * copies the next piece, commit publishes it once all len bytes are there.
 * Until commit nobody reads it; abort (or the writer's death, see
 * tg_ckpt_store_reclaim) gives the slot back. One thread per writer. */
typedef struct tg_ckpt_writer tg_ckpt_writer;

/* TG_CKPT_OK with a writer in *w, or INVALID, TOO_LARGE, FULL. */
int tg_ckpt_writer_begin(tg_ckpt_store *store, const tg_ckpt_key *key, uint64_t len,
                         tg_ckpt_writer **w);

/* Copies the next n bytes. TG_CKPT_TOO_LARGE past the announced length. */
int tg_ckpt_writer_append(tg_ckpt_writer *w, const void *bytes, size_t n);

/* Bytes appended so far, and the CRC-64 of them. */
uint64_t tg_ckpt_writer_written(const tg_ckpt_writer *w);
uint64_t tg_ckpt_writer_checksum(const tg_ckpt_writer *w);

/* Publishes the shard (then retires older copies of the key and steps
 * beyond keep_steps) and frees w. TG_CKPT_SHORT if bytes are missing,
 * TG_CKPT_LOST if the slot was reclaimed meanwhile; the slot is freed and
 * w too on any result. */
int tg_ckpt_writer_commit(tg_ckpt_writer *w);

/* Gives the slot back unpublished and frees w. NULL is ignored. */
void tg_ckpt_writer_abort(tg_ckpt_writer *w);

#endif
