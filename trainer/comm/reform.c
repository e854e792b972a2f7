/* Shrink or fresh: the agreement of reform.h through the generation's
 * store. Values are encoded field by field, little-endian, with a magic
 * word, and decoded with every field checked: they come from other
 * processes, and a plan that does not decode is an ERROR, never a guess. */
#include "trainer/comm/reform.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/comm/comm_backend.h"
#include "trainer/comm/store_bytes.h"

#define VOTE_BYTES 16
#define PLAN_MAGIC 0x31504754u /* "TGP1" */
#define PLAN_HEAD (4 + 4 + 8 + 4 + 4 + TG_COMM_NCCL_ID_BYTES + 160)
#define PLAN_BYTES TG_COMM_REFORM_PLAN_BYTES
_Static_assert(PLAN_BYTES == PLAN_HEAD + 4 * TG_COMM_REFORM_MAX_EXCLUDED, "the header says the plan's size");
_Static_assert(PLAN_BYTES <= TG_COMM_STORE_BYTES_MAX, "a plan fits one store value");
_Static_assert(sizeof ((tg_comm_plan *)0)->why == 160, "the plan's reason is 160 bytes on the wire");

static void put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
  return v;
}
static uint64_t get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

static void encode_vote(const tg_comm_vote *v, uint8_t *p) {
  put64(p, (uint64_t)v->parent_generation);
  put32(p + 8, (uint32_t)v->parent_rank);
  put32(p + 12, (uint32_t)v->parent_size);
}

static void decode_vote(const uint8_t *p, tg_comm_vote *v) {
  v->parent_generation = (int64_t)get64(p);
  v->parent_rank = (int32_t)get32(p + 8);
  v->parent_size = (int32_t)get32(p + 12);
}

static void encode_plan(const tg_comm_plan *plan, uint8_t *p) {
  memset(p, 0, PLAN_BYTES);
  put32(p, PLAN_MAGIC);
  put32(p + 4, (uint32_t)plan->shrink);
  put64(p + 8, (uint64_t)plan->parent_generation);
  put32(p + 16, (uint32_t)plan->parent_size);
  put32(p + 20, (uint32_t)plan->n_excluded);
  memcpy(p + 24, plan->nccl_id, TG_COMM_NCCL_ID_BYTES);
  memcpy(p + 24 + TG_COMM_NCCL_ID_BYTES, plan->why, sizeof plan->why - 1);
  for (int32_t i = 0; i < plan->n_excluded; i++) put32(p + PLAN_HEAD + 4 * i, (uint32_t)plan->excluded[i]);
}

/* 0, or -1 when the bytes are not a plan a rank of this world can follow. */
static int decode_plan(const uint8_t *p, int world_size, tg_comm_plan *plan) {
  memset(plan, 0, sizeof *plan);
  if (get32(p) != PLAN_MAGIC) return -1;
  uint32_t shrink = get32(p + 4);
  plan->shrink = (int)shrink;
  plan->parent_generation = (int64_t)get64(p + 8);
  plan->parent_size = (int32_t)get32(p + 16);
  plan->n_excluded = (int32_t)get32(p + 20);
  memcpy(plan->nccl_id, p + 24, TG_COMM_NCCL_ID_BYTES);
  memcpy(plan->why, p + 24 + TG_COMM_NCCL_ID_BYTES, sizeof plan->why - 1);
  if (shrink > 1) return -1;
  if (!shrink) return 0;
  if (plan->parent_generation <= 0 || plan->n_excluded < 1 || plan->n_excluded > TG_COMM_REFORM_MAX_EXCLUDED ||
      plan->parent_size != world_size + plan->n_excluded)
    return -1;
  for (int32_t i = 0; i < plan->n_excluded; i++) {
    plan->excluded[i] = (int32_t)get32(p + PLAN_HEAD + 4 * i);
    if (plan->excluded[i] < 0 || plan->excluded[i] >= plan->parent_size ||
        (i > 0 && plan->excluded[i] <= plan->excluded[i - 1]))
      return -1;
  }
  return 0;
}

static void fresh(tg_comm_plan *plan, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fresh(tg_comm_plan *plan, const char *fmt, ...) {
  plan->shrink = 0;
  plan->n_excluded = 0;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(plan->why, sizeof plan->why, fmt, ap);
  va_end(ap);
}

/* Why votes[0..world_size) cannot shrink (into plan->why), or 0 if they can. */
static int cannot_shrink(const tg_comm_vote *votes, int world_size, tg_comm_plan *plan) {
  const tg_comm_vote *v0 = &votes[0];
  for (int r = 0; r < world_size; r++) {
    const tg_comm_vote *v = &votes[r];
    if (v->parent_generation <= 0) {
      fresh(plan, "rank %d holds no communicator to shrink", r);
      return 1;
    }
    if (v->parent_generation != v0->parent_generation || v->parent_size != v0->parent_size) {
      fresh(plan, "rank %d holds generation %" PRId64 " of %d ranks, unlike rank 0", r, v->parent_generation,
            (int)v->parent_size);
      return 1;
    }
    if (v->parent_rank < 0 || v->parent_rank >= v->parent_size ||
        (r > 0 && v->parent_rank <= votes[r - 1].parent_rank)) {
      fresh(plan, "rank %d was rank %d of %d (not in order)", r, (int)v->parent_rank, (int)v->parent_size);
      return 1;
    }
  }
  int64_t gone = (int64_t)v0->parent_size - world_size;
  if (gone < 1) {
    fresh(plan, "the world did not shrink (%d ranks, %d before)", world_size, (int)v0->parent_size);
    return 1;
  }
  if (gone > TG_COMM_REFORM_MAX_EXCLUDED) {
    fresh(plan, "%" PRId64 " ranks gone, more than a plan holds (%d)", gone, TG_COMM_REFORM_MAX_EXCLUDED);
    return 1;
  }
  return 0;
}

void tg_comm_reform_decide(const tg_comm_vote *votes, int world_size, tg_comm_plan *plan) {
  memset(plan, 0, sizeof *plan);
  if (cannot_shrink(votes, world_size, plan)) return;
  const tg_comm_vote *v0 = &votes[0];
  plan->shrink = 1;
  plan->parent_generation = v0->parent_generation;
  plan->parent_size = v0->parent_size;
  int r = 0;
  for (int32_t old = 0; old < v0->parent_size; old++) {
    if (r < world_size && votes[r].parent_rank == old)
      r++;
    else
      plan->excluded[plan->n_excluded++] = old;
  }
}

static tg_comm_code key_for(char *key, size_t len, const tg_comm_config *cfg, const char *what,
                            tg_comm_status *st) {
  if ((size_t)snprintf(key, len, "%s%s", cfg->store_prefix, what) >= len)
    return tg_comm_status_set(st, TG_COMM_ERROR, "store prefix too long");
  return TG_COMM_OK;
}

/* Rank 0: the plan, from every vote when it has a parent itself. */
static tg_comm_code decide_on_rank_0(const tg_comm_config *cfg, const tg_comm_vote *mine, int64_t deadline_ms,
                                     tg_comm_plan *plan, tg_comm_status *st) {
  memset(plan, 0, sizeof *plan);
  if (mine->parent_generation <= 0) {
    fresh(plan, "rank 0 holds no communicator to shrink");
    return TG_COMM_OK;
  }
  if (cfg->world_size == 1) {
    fresh(plan, "a world of one rank");
    return TG_COMM_OK;
  }
  size_t n = (size_t)cfg->world_size;
  uint8_t *raw = calloc(n - 1, VOTE_BYTES);
  tg_comm_vote *votes = calloc(n, sizeof *votes);
  char prefix[512];
  tg_comm_code code = key_for(prefix, sizeof prefix, cfg, "nccl-vote/", st);
  if (!raw || !votes) code = tg_comm_status_set(st, TG_COMM_ERROR, "out of memory for %zu votes", n);
  if (code == TG_COMM_OK)
    code = tg_comm_store_gather(cfg->store_address, prefix, 1, cfg->world_size - 1, VOTE_BYTES, raw, deadline_ms,
                                cfg->cancelled, cfg->cancel_user, st);
  if (code == TG_COMM_OK) {
    votes[0] = *mine;
    for (size_t r = 1; r < n; r++) decode_vote(raw + (r - 1) * VOTE_BYTES, &votes[r]);
    tg_comm_reform_decide(votes, cfg->world_size, plan);
  }
  free(raw);
  free(votes);
  return code;
}

tg_comm_code tg_comm_reform_agree(const tg_comm_config *cfg, const tg_comm_vote *mine, tg_comm_make_id_fn make_id,
                                  void *make_id_user, int64_t deadline_ms, tg_comm_plan *plan, tg_comm_status *st) {
  uint8_t wire[PLAN_BYTES];
  char key[512];
  tg_comm_code code = key_for(key, sizeof key, cfg, "nccl-plan", st);
  if (code != TG_COMM_OK) return code;
  if (cfg->rank != 0) {
    char prefix[512], vote_key[600];
    uint8_t vote[VOTE_BYTES];
    encode_vote(mine, vote);
    code = key_for(prefix, sizeof prefix, cfg, "nccl-vote/", st);
    if (code == TG_COMM_OK && tg_comm_store_indexed_key(vote_key, sizeof vote_key, prefix, cfg->rank) != 0)
      code = tg_comm_status_set(st, TG_COMM_ERROR, "rank %d: no vote key", cfg->rank);
    if (code == TG_COMM_OK)
      code = tg_comm_store_publish(cfg->store_address, vote_key, vote, sizeof vote, deadline_ms, st);
    if (code == TG_COMM_OK)
      code = tg_comm_store_await(cfg->store_address, key, wire, sizeof wire, deadline_ms, cfg->cancelled,
                                 cfg->cancel_user, st);
    if (code != TG_COMM_OK) return code;
    if (decode_plan(wire, cfg->world_size, plan) != 0)
      return tg_comm_status_set(st, TG_COMM_ERROR, "the plan under %s does not decode for a world of %d", key,
                                cfg->world_size);
    return TG_COMM_OK;
  }
  code = decide_on_rank_0(cfg, mine, deadline_ms, plan, st);
  if (code != TG_COMM_OK) return code;
  if (!plan->shrink) {
    char err[200] = "";
    if (make_id(plan->nccl_id, make_id_user, err, sizeof err) != 0)
      return tg_comm_status_set(st, TG_COMM_ERROR, "unique id: %s", err);
  }
  encode_plan(plan, wire);
  return tg_comm_store_publish(cfg->store_address, key, wire, sizeof wire, deadline_ms, st);
}
