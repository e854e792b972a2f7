/* Shards: which rank owns which contiguous range of a flat array.
 *
 * ZeRO stage 1 gives every rank the AdamW moments of one contiguous slice
 * [begin, end) of the flat parameter array; the same split hands each rank
 * its micro-batches of a step. When the world changes size the slices move,
 * and the optimizer state saved as the old shards has to be cut into the
 * new ones; tg_shard_copy is that bookkeeping, without ever building the
 * whole flat array (for a 1B model the moments alone are 8 GB). The split
 * is balanced and depends only on (count, world, rank). */
#ifndef TG_SHARD_H
#define TG_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/model/status.h"

#define TG_SHARD_MAX_WORLD 1048576u

/* The range [*begin, *end) of rank `rank` of `world` ranks over `count`
 * items: ranks below count % world get count / world + 1 items, the others
 * count / world, in rank order, so the ranges tile [0, count). A range may
 * be empty (more ranks than items). EINVAL for world 0 or above
 * TG_SHARD_MAX_WORLD, or rank >= world. */
tg_model_status tg_shard_range(size_t count, uint32_t world, uint32_t rank, size_t *begin,
                               size_t *end);

/* Copies items [begin, end) of a flat array of `count` floats, held as
 * `world` shards (shards[r] holds rank r's range from tg_shard_range), into
 * out[0 .. end - begin). Only the shards that overlap the range are read
 * (others may be NULL). Gathering is the range [0, count). */
tg_model_status tg_shard_copy(size_t count, uint32_t world, const float *const *shards,
                              size_t begin, size_t end, float *out);

#endif
