/* Shard ranges and shard-to-shard copies: pure index arithmetic, kept in
 * one place so the optimizer, the data split and the checkpoint restore can
 * never disagree about who owns what. */
#include "trainer/model/shard.h"

#include <string.h>

tg_model_status tg_shard_range(size_t count, uint32_t world, uint32_t rank, size_t *begin,
                               size_t *end) {
  if (!begin || !end || world == 0 || world > TG_SHARD_MAX_WORLD || rank >= world)
    return TG_MODEL_EINVAL;
  size_t base = count / world, extra = count % world;
  size_t r = rank;
  *begin = r * base + (r < extra ? r : extra);
  *end = *begin + base + (r < extra ? 1 : 0);
  return TG_MODEL_OK;
}

tg_model_status tg_shard_copy(size_t count, uint32_t world, const float *const *shards,
                              size_t begin, size_t end, float *out) {
  if (!shards || (!out && end > begin) || begin > end || end > count) return TG_MODEL_EINVAL;
  if (world == 0 || world > TG_SHARD_MAX_WORLD) return TG_MODEL_EINVAL;
  for (uint32_t r = 0; r < world && begin < end; r++) {
    size_t sb = 0, se = 0;
    tg_shard_range(count, world, r, &sb, &se);
    size_t lo = sb > begin ? sb : begin, hi = se < end ? se : end;
    if (lo >= hi) continue;
    if (!shards[r]) return TG_MODEL_EINVAL;
    memcpy(out + (lo - begin), shards[r] + (lo - sb), (hi - lo) * sizeof(float));
  }
  return TG_MODEL_OK;
}
