/* Checkpoint shards persisted to disk: the last resort, for the day every
 * in-memory copy (the node's store, its buddy's replica) is gone.
 *
 * The agent writes a shard every few steps, off the trainers' path; a
 * trainer (through libtardigrade) reads one back when no memory holds the
 * step it resumes from. One file per shard:
 *
 *   DIR/<job>/<step, 20 digits>/<world_size>-<shard>.tgck
 *
 * a fixed 128-byte header (magic, version, generation, step, shard,
 * world_size, length, the CRC-64 of the bytes, the job id, and a CRC-64 of
 * the header itself), then the shard's bytes. A file appears whole or not
 * at all: it is written under a temporary name in the same directory,
 * fsync'd, renamed, and the directory fsync'd. A reader trusts nothing in
 * it: the header is checked field by field against the key asked for and
 * the file's size, and the bytes against their CRC-64.
 *
 * Paths are built only from validated parts: a job id holds no '/', no
 * "..", no control characters and fits TG_CKPT_JOB_ID_MAX; the rest are
 * numbers. This module needs nothing from the agent, so the trainer
 * library links it to read shards back. Functions return TG_CKPT_OK or a
 * negative tg_ckpt_result (store.h). */
#ifndef TG_CKPT_DISK_H
#define TG_CKPT_DISK_H

#include <stddef.h>
#include <stdint.h>

#include "agent/ckpt/store.h"

/* Writes shard `key` (len bytes whose CRC-64 is crc64) under dir, which is
 * created if missing (its parent must exist). TG_CKPT_INVALID for a bad
 * key, dir or checksum; TG_CKPT_SYSTEM when an OS call failed, with the
 * call, the path and strerror in err ("... No space left on device").
 * Nothing is left under the final name on failure. */
int tg_ckpt_disk_write(const char *dir, const tg_ckpt_key *key, const void *bytes, size_t len,
                       uint64_t crc64, char *err, size_t errlen);

/* Reads the shard of key's job, step, shard and world size, written in any
 * generation (key->generation is ignored), into memory of its own (*bytes,
 * to be freed with free). TG_CKPT_NOT_FOUND when there is no such file,
 * TG_CKPT_CORRUPT (logged) when its header or bytes do not check out,
 * TG_CKPT_SYSTEM when it cannot be read. *crc64 may be NULL. */
int tg_ckpt_disk_read_alloc(const char *dir, const tg_ckpt_key *key, void **bytes, size_t *len,
                            uint64_t *crc64);

/* Keys of the shard files of `job` under dir (their headers are checked,
 * not their bytes), up to cap into keys (may be NULL when cap is 0).
 * Returns how many there are, which may exceed cap; 0 when there is no
 * such directory. */
size_t tg_ckpt_disk_list(const char *dir, const char *job, tg_ckpt_key *keys, size_t cap);

/* Removes the file of shard `key` (generation ignored), and its step
 * directory once empty. TG_CKPT_OK, NOT_FOUND, INVALID or SYSTEM. */
int tg_ckpt_disk_remove(const char *dir, const tg_ckpt_key *key);

#endif
