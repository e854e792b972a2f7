/* The replication worker; see replicator.h for what it promises.
 *
 * State lives in one struct under one mutex: the current world, and per
 * local slot the newest step waiting to be pushed, the newest step
 * replicated, the newest step waiting to be persisted, and the shards this
 * agent persisted (to retire all but the newest two). Trainers' reports
 * only update that state and wake the worker, so a slow buddy or disk
 * never slows a trainer down. The worker takes one piece of work at a
 * time, does it without the mutex (a push, a disk write), and records the
 * outcome. The channel to the buddy belongs to the worker alone and is
 * made again when the buddy's address changes. */
#include "agent/replicator.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/ckpt/disk.h"
#include "agent/ckpt/replicate.h"
#include "common/clock/clock.h"
#include "common/log/log.h"
#include "common/rpc/rpc.h"

#define DEFAULT_PUSH_DEADLINE_MS 5000
#define DEFAULT_RETRY_MS 100
#define DEFAULT_REPORT_EVERY_MS 10000
#define LOG_EVERY_MS 5000   /* repeated push failures: one line per this */
#define IDLE_WAIT_MS 1000   /* the worker looks around at least this often */
#define KEEP_PERSISTED 2    /* newest persisted steps kept per slot */

typedef struct {
  tg_ckpt_key push;           /* newest step waiting to be pushed */
  int has_push;
  int64_t next_try_ms;        /* after a failed push: not before this */
  uint64_t rep_generation;    /* the newest replicated step, and its world */
  uint64_t rep_step;
  tg_ckpt_key persist;        /* newest step waiting to be persisted */
  int has_persist;
  tg_ckpt_key persisted[KEEP_PERSISTED]; /* written by this agent, oldest first (worker only) */
  int n_persisted;
} slot_state;

struct tg_replicator {
  tg_replicator_config cfg;
  char job_id[TG_CKPT_JOB_ID_MAX];
  char node_id[64];
  char ckpt_dir[1024];

  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stopping;
  pthread_t thread;
  int started;
  uint64_t generation;
  uint32_t world_size;
  int32_t position;
  uint32_t nodes;
  char buddy[256];
  slot_state *slots;

  /* The worker's own. */
  tg_rpc_channel *channel;
  char channel_target[256];
  int64_t push_logged_ms;     /* rate limit of push failure lines */
  uint64_t push_failures;     /* since the last line */
  int failing;                /* the last push failed */
  int64_t persist_reported_ms;
  uint64_t persist_failures;
};

static int64_t or_default(int64_t v, int64_t d) { return v > 0 ? v : d; }

tg_replicator *tg_replicator_new(const tg_replicator_config *cfg, char *err, size_t errlen) {
  if (cfg == NULL || cfg->store == NULL || cfg->job_id == NULL || cfg->slots < 1 ||
      strlen(cfg->job_id) >= TG_CKPT_JOB_ID_MAX ||
      (cfg->ckpt_dir != NULL && strlen(cfg->ckpt_dir) >= sizeof(((tg_replicator *)0)->ckpt_dir))) {
    snprintf(err, errlen, "replicator: needs a store, a job id, slots >= 1 and a short ckpt dir");
    return NULL;
  }
  tg_replicator *r = calloc(1, sizeof(*r));
  if (r != NULL) r->slots = calloc((size_t)cfg->slots, sizeof(*r->slots));
  if (r == NULL || r->slots == NULL) {
    free(r);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  r->cfg = *cfg;
  snprintf(r->job_id, sizeof(r->job_id), "%s", cfg->job_id);
  snprintf(r->node_id, sizeof(r->node_id), "%s", cfg->node_id ? cfg->node_id : "");
  snprintf(r->ckpt_dir, sizeof(r->ckpt_dir), "%s", cfg->ckpt_dir ? cfg->ckpt_dir : "");
  r->cfg.job_id = r->job_id;
  r->cfg.node_id = r->node_id;
  r->cfg.ckpt_dir = r->ckpt_dir;
  r->cfg.push_deadline_ms = or_default(cfg->push_deadline_ms, DEFAULT_PUSH_DEADLINE_MS);
  r->cfg.retry_ms = or_default(cfg->retry_ms, DEFAULT_RETRY_MS);
  r->cfg.report_every_ms = or_default(cfg->report_every_ms, DEFAULT_REPORT_EVERY_MS);
  r->position = -1;
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  return r;
}

/* ------------------------------------------------------ trainers' side */

void tg_replicator_set_world(tg_replicator *r, const tg_replicator_world *w) {
  pthread_mutex_lock(&r->mu);
  r->generation = w->generation;
  r->world_size = w->world_size;
  r->position = w->position;
  r->nodes = w->nodes;
  snprintf(r->buddy, sizeof(r->buddy), "%s", w->buddy_address ? w->buddy_address : "");
  for (int s = 0; s < r->cfg.slots; s++) {
    slot_state *st = &r->slots[s];
    st->rep_generation = w->generation;
    st->rep_step = 0;
    st->has_push = 0; /* older generations are not pushed any more */
    st->next_try_ms = 0;
  }
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

/* 1 when the committed shard `key` is in the store (metadata only). */
static int in_store(tg_ckpt_store *store, const tg_ckpt_key *key) {
  size_t len = 0;
  int rc = tg_ckpt_store_read(store, key, NULL, 0, &len, NULL);
  return rc == TG_CKPT_OK || rc == TG_CKPT_TOO_LARGE;
}

void tg_replicator_written(tg_replicator *r, int slot, uint64_t generation, uint64_t step) {
  if (slot < 0 || slot >= r->cfg.slots || step == 0) return;
  pthread_mutex_lock(&r->mu);
  slot_state *st = &r->slots[slot];
  if (generation != r->generation || r->position < 0 || r->world_size == 0 ||
      step <= st->rep_step || (st->has_push && step <= st->push.step)) {
    pthread_mutex_unlock(&r->mu);
    return;
  }
  tg_ckpt_key key;
  memset(&key, 0, sizeof(key));
  snprintf(key.job_id, sizeof(key.job_id), "%s", r->job_id);
  key.generation = generation;
  key.step = step;
  key.shard = r->position * r->cfg.slots + slot;
  key.world_size = r->world_size;
  int alone = r->nodes <= 1;
  if (r->ckpt_dir[0] && r->cfg.persist_every > 0 && step % (uint64_t)r->cfg.persist_every == 0) {
    st->persist = key;
    st->has_persist = 1;
  }
  if (alone) {
    /* No second node to hold a copy: written is as replicated as it gets. */
    pthread_mutex_unlock(&r->mu);
    int present = in_store(r->cfg.store, &key);
    pthread_mutex_lock(&r->mu);
    if (present && generation == r->generation && step > st->rep_step) st->rep_step = step;
  } else {
    st->push = key;
    st->has_push = 1;
    st->next_try_ms = 0;
  }
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

uint64_t tg_replicator_replicated(tg_replicator *r, int slot, uint64_t generation) {
  if (slot < 0 || slot >= r->cfg.slots) return 0;
  pthread_mutex_lock(&r->mu);
  const slot_state *st = &r->slots[slot];
  uint64_t step = generation == r->generation && st->rep_generation == generation ? st->rep_step : 0;
  pthread_mutex_unlock(&r->mu);
  return step;
}

uint64_t tg_replicator_committed(tg_replicator *r) {
  pthread_mutex_lock(&r->mu);
  uint64_t lowest = UINT64_MAX;
  if (r->position < 0 || r->world_size == 0) lowest = 0;
  for (int s = 0; s < r->cfg.slots && lowest > 0; s++) {
    const slot_state *st = &r->slots[s];
    uint64_t step = st->rep_generation == r->generation ? st->rep_step : 0;
    if (step < lowest) lowest = step;
  }
  pthread_mutex_unlock(&r->mu);
  return lowest == UINT64_MAX ? 0 : lowest;
}

/* ------------------------------------------------------------ the worker */

/* The channel to `target`, made again when the buddy moved (worker only). */
static tg_rpc_channel *buddy_channel(tg_replicator *r, const char *target, char *err, size_t errlen) {
  if (r->channel != NULL && strcmp(r->channel_target, target) == 0) return r->channel;
  if (r->channel != NULL) tg_rpc_channel_free(r->channel);
  r->channel = tg_rpc_channel_new(target, NULL, err, errlen);
  snprintf(r->channel_target, sizeof(r->channel_target), "%s", r->channel ? target : "");
  return r->channel;
}

typedef enum {
  PUSH_DONE,
  PUSH_SKIPPED,     /* nothing to push: the local copy is gone or bad */
  PUSH_FAILED,      /* try again after retry_ms */
  PUSH_UNREACHABLE, /* the buddy did not connect within retry_ms: try again at once */
} push_outcome;

/* Pushes `key` from the store to the buddy at `target` (worker, no lock).
 * The buddy must be reachable before the shard is read, so that retries
 * against a node that is down do not copy the shard over and over. */
static push_outcome push_one(tg_replicator *r, const tg_ckpt_key *key, const char *target,
                             char *why, size_t whylen) {
  char err[256];
  if (!target[0]) {
    snprintf(why, whylen, "the buddy's address is not known");
    return PUSH_FAILED;
  }
  tg_rpc_channel *ch = buddy_channel(r, target, err, sizeof(err));
  if (ch == NULL) {
    snprintf(why, whylen, "channel to %s: %s", target, err);
    return PUSH_FAILED;
  }
  if (tg_rpc_channel_wait_ready(ch, r->cfg.retry_ms) != 0) {
    snprintf(why, whylen, "not reachable");
    return PUSH_UNREACHABLE;
  }
  void *bytes = NULL;
  size_t len = 0;
  uint64_t crc = 0;
  int rc = tg_ckpt_store_read_alloc(r->cfg.store, key, &bytes, &len, &crc);
  if (rc == TG_CKPT_NOT_FOUND || rc == TG_CKPT_CORRUPT) {
    /* Retired already (a newer step replaced it), or refused (logged by
     * the store): nothing to push; a newer step will come. */
    snprintf(why, whylen, "local copy %s", tg_ckpt_result_name(rc));
    return PUSH_SKIPPED;
  }
  if (rc != TG_CKPT_OK) {
    snprintf(why, whylen, "reading the local copy: %s", tg_ckpt_result_name(rc));
    return PUSH_FAILED;
  }
  push_outcome out = PUSH_FAILED;
  tg_ckpt_repl_config rc_cfg = {.deadline_ms = r->cfg.push_deadline_ms, .node_id = r->node_id};
  tg_rpc_status st = {TG_RPC_OK, ""};
  if (tg_ckpt_push_bytes(ch, key, bytes, len, crc, &rc_cfg, &st) == TG_RPC_OK) {
    out = PUSH_DONE;
  } else {
    snprintf(why, whylen, "%s: %s", tg_rpc_code_name(st.code), st.message);
  }
  free(bytes);
  return out;
}

/* Writes `key` from the store to the disk and retires what this agent
 * persisted before the newest KEEP_PERSISTED steps (worker, no lock). */
static void persist_one(tg_replicator *r, int slot, const tg_ckpt_key *key) {
  void *bytes = NULL;
  size_t len = 0;
  uint64_t crc = 0;
  char err[512] = "";
  int rc = tg_ckpt_store_read_alloc(r->cfg.store, key, &bytes, &len, &crc);
  if (rc == TG_CKPT_NOT_FOUND || rc == TG_CKPT_CORRUPT) {
    TG_DEBUG("not persisting step %" PRIu64 " of shard %d: local copy %s", key->step, key->shard,
             tg_ckpt_result_name(rc));
    return;
  }
  if (rc == TG_CKPT_OK) {
    rc = tg_ckpt_disk_write(r->ckpt_dir, key, bytes, len, crc, err, sizeof(err));
  } else {
    snprintf(err, sizeof(err), "persist: reading the local copy: %s", tg_ckpt_result_name(rc));
  }
  free(bytes);
  if (rc != TG_CKPT_OK) {
    int64_t now = tg_clock_mono_ms();
    r->persist_failures++;
    if (r->persist_reported_ms != 0 && now - r->persist_reported_ms < r->cfg.report_every_ms) return;
    char detail[900];
    snprintf(detail, sizeof(detail),
             "cannot persist step %" PRIu64 " of shard %d: %s (%" PRIu64
             " failure(s) since the last report); training goes on, memory copies only",
             key->step, key->shard, err, r->persist_failures);
    r->persist_reported_ms = now;
    r->persist_failures = 0;
    if (r->cfg.on_persist_error) {
      r->cfg.on_persist_error(detail, r->cfg.user); /* which logs it */
    } else {
      TG_WARN("%s", detail);
    }
    return;
  }
  TG_DEBUG("persisted step %" PRIu64 " of shard %d/%u under %s", key->step, key->shard,
           key->world_size, r->ckpt_dir);
  slot_state *st = &r->slots[slot];
  for (int i = 0; i < st->n_persisted; i++) {
    tg_ckpt_key *old = &st->persisted[i];
    if (old->step == key->step && old->shard == key->shard && old->world_size == key->world_size)
      return; /* the same file, written again */
  }
  if (st->n_persisted == KEEP_PERSISTED) {
    rc = tg_ckpt_disk_remove(r->ckpt_dir, &st->persisted[0]);
    if (rc != TG_CKPT_OK && rc != TG_CKPT_NOT_FOUND)
      TG_WARN("cannot retire persisted step %" PRIu64 " of shard %d: %s", st->persisted[0].step,
              st->persisted[0].shard, tg_ckpt_result_name(rc));
    memmove(&st->persisted[0], &st->persisted[1], sizeof(st->persisted[0]) * (KEEP_PERSISTED - 1));
    st->n_persisted--;
  }
  st->persisted[st->n_persisted++] = *key;
}

/* Records a push's outcome (mu held). */
static void push_finished(tg_replicator *r, int slot, const tg_ckpt_key *key, push_outcome out,
                          const char *why) {
  slot_state *st = &r->slots[slot];
  int64_t now = tg_clock_mono_ms();
  int same = st->has_push && tg_ckpt_key_equal(&st->push, key);
  if (out == PUSH_FAILED || out == PUSH_UNREACHABLE) {
    /* An unreachable buddy was waited for retry_ms already. */
    if (same) st->next_try_ms = out == PUSH_FAILED ? now + r->cfg.retry_ms : now;
    r->push_failures++;
    if (r->push_logged_ms == 0 || now - r->push_logged_ms >= LOG_EVERY_MS) {
      TG_WARN("cannot replicate step %" PRIu64 " of shard %d to buddy %s: %s (%" PRIu64
              " failed attempt(s) since the last line); retrying every %" PRId64 " ms",
              key->step, key->shard, r->buddy[0] ? r->buddy : "(unknown)", why, r->push_failures,
              r->cfg.retry_ms);
      r->push_logged_ms = now;
      r->push_failures = 0;
    }
    r->failing = 1;
    return;
  }
  if (same) st->has_push = 0;
  if (out == PUSH_SKIPPED) {
    TG_DEBUG("not replicating step %" PRIu64 " of shard %d: %s", key->step, key->shard, why);
    return;
  }
  if (r->failing) TG_INFO("replication to buddy %s works again", r->buddy);
  r->failing = 0;
  r->push_logged_ms = 0;
  r->push_failures = 0;
  if (key->generation == r->generation && st->rep_generation == key->generation &&
      key->step > st->rep_step)
    st->rep_step = key->step;
}

/* The slot whose push is due now, or -1; *wake_ms gets the soonest retry
 * of the others (mu held). */
static int due_push(tg_replicator *r, int64_t now, int64_t *wake_ms) {
  for (int s = 0; s < r->cfg.slots; s++) {
    slot_state *st = &r->slots[s];
    if (!st->has_push) continue;
    if (st->next_try_ms <= now) return s;
    if (st->next_try_ms < *wake_ms) *wake_ms = st->next_try_ms;
  }
  return -1;
}

static int due_persist(tg_replicator *r) {
  for (int s = 0; s < r->cfg.slots; s++)
    if (r->slots[s].has_persist) return s;
  return -1;
}

static void wait_until(tg_replicator *r, int64_t wake_ms) {
  int64_t ms = wake_ms - tg_clock_mono_ms();
  if (ms <= 0) return;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (ms % 1000) * 1000000L;
  ts.tv_sec += ts.tv_nsec / 1000000000L;
  ts.tv_nsec %= 1000000000L;
  pthread_cond_timedwait(&r->cv, &r->mu, &ts);
}

/* One push and one disk write per round at most, so neither starves the
 * other. */
static void *worker_main(void *arg) {
  tg_replicator *r = arg;
  pthread_mutex_lock(&r->mu);
  while (!r->stopping) {
    int64_t now = tg_clock_mono_ms(), wake = now + IDLE_WAIT_MS;
    int push_slot = due_push(r, now, &wake), persist_slot = due_persist(r);
    if (push_slot < 0 && persist_slot < 0) {
      wait_until(r, wake);
      continue;
    }
    if (push_slot >= 0) {
      tg_ckpt_key key = r->slots[push_slot].push;
      char target[256], why[400] = "";
      snprintf(target, sizeof(target), "%s", r->buddy);
      pthread_mutex_unlock(&r->mu);
      push_outcome out = push_one(r, &key, target, why, sizeof(why));
      pthread_mutex_lock(&r->mu);
      push_finished(r, push_slot, &key, out, why);
    }
    if (persist_slot >= 0 && !r->stopping) {
      slot_state *st = &r->slots[persist_slot];
      tg_ckpt_key key = st->persist;
      st->has_persist = 0;
      pthread_mutex_unlock(&r->mu);
      persist_one(r, persist_slot, &key);
      pthread_mutex_lock(&r->mu);
    }
  }
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

int tg_replicator_start(tg_replicator *r, char *err, size_t errlen) {
  if (r->started) return 0;
  int rc = pthread_create(&r->thread, NULL, worker_main, r);
  if (rc != 0) {
    snprintf(err, errlen, "cannot start the replication thread: %s", strerror(rc));
    return -1;
  }
  r->started = 1;
  return 0;
}

void tg_replicator_stop(tg_replicator *r) {
  if (r == NULL) return;
  pthread_mutex_lock(&r->mu);
  r->stopping = 1;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  if (r->started) pthread_join(r->thread, NULL);
  r->started = 0;
}

void tg_replicator_free(tg_replicator *r) {
  if (r == NULL) return;
  tg_replicator_stop(r);
  if (r->channel != NULL) tg_rpc_channel_free(r->channel);
  pthread_mutex_destroy(&r->mu);
  pthread_cond_destroy(&r->cv);
  free(r->slots);
  free(r);
}
