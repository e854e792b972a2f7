/* Where a new world resumes, and reading shards back from wherever a copy
 * survives (see tardigrade.h: tg_resume_step, tg_restore, tg_shard_open).
 *
 * Every rank of the new world contributes one record: its node, the
 * address of its agent, and the keys of the shards in its node's memory;
 * rank 0 adds the steps complete in the persisted checkpoint directory.
 * The records are all-gathered, so every rank computes the same
 * candidates: the (step, world size) pairs of which every shard exists
 * somewhere, newest first, memory before disk. A candidate is verified
 * before it is chosen: the ranks share out its shards, each reads its
 * share (this node's memory, then other nodes' through their agents'
 * Replication service, then the disk) and checks its checksum, and the
 * failures are summed. A corrupt copy is reported and another tried; a
 * step of which some shard has no good copy is passed over for an older
 * one. The shards read are cached until the next snapshot, so restoring
 * reads each at most once. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/ckpt/disk.h"
#include "agent/ckpt/replicate.h"
#include "proto/tardigrade/v1/common.pb-c.h"
#include "trainer/lib/internal.h"

#define MAX_KEYS 256         /* memory keys per node record */
#define MAX_DISK_KEYS 65536  /* persisted shard files rank 0 looks at */
#define MAX_TRIES 8          /* candidates verified before giving up */
#define FETCH_MS 30000

/* One shard key as exchanged between ranks (fixed layout). */
typedef struct {
  uint64_t generation, step;
  int32_t shard;        /* -1 with on_disk: the whole step is complete on disk */
  uint32_t world_size;
  uint32_t on_disk;
  uint32_t pad;
} wire_key;

typedef struct {
  char node_id[128];
  char address[256];
  uint32_t n_keys;
  uint32_t pad;
  wire_key keys[MAX_KEYS];
} wire_record;

/* A resume point: a step and the size of the world that wrote it. */
typedef struct {
  uint64_t step;
  uint32_t world_size;
  int disk; /* complete only on disk */
} candidate;

struct tg_lib_plan {
  int n_records;
  wire_record *records; /* one per rank of the current world */
  int used_disk;        /* this rank read some shard from disk */
};

struct tg_shard {
  size_t n;
  const uint8_t *ptr[TG_LIB_MAX_BUFFERS];
  size_t len[TG_LIB_MAX_BUFFERS];
};

void tg_lib_forget_restore(tg_trainer *t) {
  if (t->plan) {
    free(t->plan->records);
    free(t->plan);
    t->plan = NULL;
  }
  while (t->cache) {
    tg_lib_cached *c = t->cache;
    t->cache = c->next;
    free(c->bytes);
    free(c);
  }
}

static int key_order(const void *pa, const void *pb) {
  const wire_key *a = pa, *b = pb;
  if (a->step != b->step) return a->step > b->step ? -1 : 1;
  if (a->world_size != b->world_size) return a->world_size > b->world_size ? -1 : 1;
  if (a->shard != b->shard) return a->shard < b->shard ? -1 : 1;
  return 0;
}

/* The keys of one (step, world size) in a key_order-sorted array, from
 * index i: returns where that group ends, with the number of distinct
 * shards 0 .. world_size - 1 among them in *shards and, in *disk, whether
 * one of them marks the whole step as complete on disk. */
static size_t scan_group(const wire_key *k, size_t n, size_t i, uint32_t *shards, int *disk) {
  size_t j = i;
  int32_t last = -1;
  *shards = 0;
  *disk = 0;
  for (; j < n && k[j].step == k[i].step && k[j].world_size == k[i].world_size; j++) {
    if (k[j].on_disk) {
      *disk = 1;
      continue;
    }
    if (k[j].shard < 0 || k[j].shard >= (int32_t)k[j].world_size || k[j].shard == last) continue;
    last = k[j].shard; /* sorted by shard within the group: repeats are adjacent */
    (*shards)++;
  }
  return j;
}

/* This rank's record: its node's memory keys (newest steps first when
 * there are more than fit), and for rank 0 the steps complete on disk. */
static void make_record(tg_trainer *t, wire_record *rec) {
  memset(rec, 0, sizeof *rec);
  snprintf(rec->node_id, sizeof rec->node_id, "%s", t->node_id);
  snprintf(rec->address, sizeof rec->address, "%s", t->agent_address);
  size_t cap = 4 * MAX_KEYS;
  tg_ckpt_key *keys = calloc(cap, sizeof *keys);
  wire_key *wk = calloc(cap, sizeof *wk);
  size_t n = keys && wk ? tg_ckpt_store_list(t->store, t->job, keys, cap) : 0;
  if (n > cap) n = cap;
  for (size_t i = 0; i < n; i++)
    wk[i] = (wire_key){.generation = keys[i].generation, .step = keys[i].step, .shard = keys[i].shard,
                       .world_size = keys[i].world_size};
  qsort(wk, n, sizeof *wk, key_order);
  size_t disk_room = t->world.rank == 0 && t->ckpt_dir[0] ? 16 : 0;
  for (size_t i = 0; i < n && rec->n_keys < MAX_KEYS - disk_room; i++) rec->keys[rec->n_keys++] = wk[i];
  free(keys);
  free(wk);
  if (!disk_room) return;

  /* Steps of which every shard is on disk, newest first. */
  keys = calloc(MAX_DISK_KEYS, sizeof *keys);
  wk = calloc(MAX_DISK_KEYS, sizeof *wk);
  n = keys && wk ? tg_ckpt_disk_list(t->ckpt_dir, t->job, keys, MAX_DISK_KEYS) : 0;
  if (n > MAX_DISK_KEYS) n = MAX_DISK_KEYS;
  for (size_t i = 0; i < n; i++)
    wk[i] = (wire_key){.step = keys[i].step, .shard = keys[i].shard, .world_size = keys[i].world_size};
  qsort(wk, n, sizeof *wk, key_order);
  for (size_t i = 0, j; i < n && disk_room > 0; i = j) {
    uint32_t shards;
    int marker;
    j = scan_group(wk, n, i, &shards, &marker);
    if (shards != wk[i].world_size) continue;
    rec->keys[rec->n_keys++] =
        (wire_key){.step = wk[i].step, .shard = -1, .world_size = wk[i].world_size, .on_disk = 1};
    disk_room--;
  }
  free(keys);
  free(wk);
}

/* Every (step, world size) of which all shards exist somewhere, newest
 * first; memory before disk; the current world size first among equals. */
static size_t find_candidates(const tg_trainer *t, const tg_lib_plan *p, candidate *out, size_t cap) {
  size_t total = 0;
  for (int r = 0; r < p->n_records; r++) total += p->records[r].n_keys;
  wire_key *all = calloc(total + 1, sizeof *all);
  if (!all) return 0;
  size_t n = 0, found = 0;
  for (int r = 0; r < p->n_records; r++)
    for (uint32_t i = 0; i < p->records[r].n_keys && i < MAX_KEYS; i++) all[n++] = p->records[r].keys[i];
  qsort(all, n, sizeof *all, key_order);
  for (size_t i = 0, j; i < n; i = j) {
    uint32_t shards;
    int disk;
    j = scan_group(all, n, i, &shards, &disk);
    if (all[i].world_size > 0 && all[i].step > 0 && found < cap && (shards == all[i].world_size || disk))
      out[found++] = (candidate){.step = all[i].step, .world_size = all[i].world_size,
                                 .disk = shards != all[i].world_size};
  }
  free(all);
  /* Among candidates of one step, memory first, then this world's size. */
  for (size_t i = 1; i < found; i++)
    for (size_t k = i; k > 0 && out[k].step == out[k - 1].step; k--) {
      int better = out[k].disk != out[k - 1].disk ? !out[k].disk
                                                   : (int)out[k].world_size == t->world.world_size;
      if (!better) break;
      candidate tmp = out[k];
      out[k] = out[k - 1];
      out[k - 1] = tmp;
    }
  return found;
}

static tg_lib_cached *cache_find(tg_trainer *t, uint64_t step, int32_t shard, uint32_t world_size) {
  for (tg_lib_cached *c = t->cache; c; c = c->next)
    if (c->key.step == step && c->key.shard == shard && c->key.world_size == world_size) return c;
  return NULL;
}

static tg_lib_cached *cache_add(tg_trainer *t, const tg_ckpt_key *key, void *bytes, size_t len) {
  tg_lib_cached *c = calloc(1, sizeof *c);
  if (!c) {
    free(bytes);
    return NULL;
  }
  c->key = *key;
  c->bytes = bytes;
  c->len = len;
  c->next = t->cache;
  t->cache = c;
  return c;
}

static void report_corrupt(tg_trainer *t, const tg_ckpt_key *key, const char *where) {
  char detail[400];
  snprintf(detail, sizeof detail,
           "the copy of step %" PRIu64 " shard %d of %u %s failed its checksum; refused, trying another copy",
           key->step, key->shard, key->world_size, where);
  tg_lib_report(t, TARDIGRADE__V1__FAULT_KIND__FAULT_CHECKPOINT_CORRUPT, TARDIGRADE__V1__SEVERITY__SEVERITY_WARNING,
                detail);
}

/* Reads shard (step, shard, world_size) from the first good copy: this
 * node's memory, another node's, the disk. Cached. NULL when none. */
static tg_lib_cached *obtain(tg_trainer *t, uint64_t step, int32_t shard, uint32_t world_size) {
  tg_lib_cached *c = cache_find(t, step, shard, world_size);
  if (c) return c;
  tg_lib_plan *p = t->plan;
  /* This node first (its record is anyone's with the same node id), then
   * the others, each node once. */
  for (int pass = 0; pass < 2; pass++) {
    for (int r = 0; r < p->n_records; r++) {
      const wire_record *rec = &p->records[r];
      int local = strcmp(rec->node_id, t->node_id) == 0;
      if (local != (pass == 0)) continue;
      int seen = 0;
      for (int q = 0; q < r && !seen; q++) seen = strcmp(p->records[q].node_id, rec->node_id) == 0;
      if (seen) continue;
      for (uint32_t i = 0; i < rec->n_keys && i < MAX_KEYS; i++) {
        const wire_key *k = &rec->keys[i];
        if (k->on_disk || k->step != step || k->shard != shard || k->world_size != world_size) continue;
        tg_ckpt_key key = {.generation = k->generation, .step = step, .shard = shard, .world_size = world_size};
        snprintf(key.job_id, sizeof key.job_id, "%s", t->job);
        void *bytes = NULL;
        size_t len = 0;
        char where[400];
        if (local) {
          snprintf(where, sizeof where, "in this node's memory (%s)", t->node_id);
          int rc = tg_ckpt_store_read_alloc(t->store, &key, &bytes, &len, NULL);
          if (rc == TG_CKPT_OK) return cache_add(t, &key, bytes, len);
          if (rc == TG_CKPT_CORRUPT) report_corrupt(t, &key, where);
          continue;
        }
        snprintf(where, sizeof where, "in node %s's memory", rec->node_id);
        char target[300], err[256];
        snprintf(target, sizeof target, "%s", rec->address);
        tg_rpc_channel *ch = tg_rpc_channel_new(target, NULL, err, sizeof err);
        if (!ch) continue;
        tg_ckpt_repl_config cfg = {.max_shard_bytes = tg_ckpt_store_slot_bytes(t->store),
                                   .deadline_ms = FETCH_MS,
                                   .node_id = t->node_id};
        tg_rpc_status st = {0};
        uint64_t crc = 0;
        tg_rpc_code code = tg_ckpt_fetch_alloc(ch, &key, &cfg, &bytes, &len, &crc, &st);
        tg_rpc_channel_free(ch);
        if (code == TG_RPC_OK) return cache_add(t, &key, bytes, len);
        if (code == TG_RPC_DATA_LOSS) report_corrupt(t, &key, where);
        else
          fprintf(stderr, "tardigrade: rank %d: fetching step %" PRIu64 " shard %d of %u from %s: %s: %s\n",
                  t->world.rank, step, shard, world_size, rec->node_id, tg_rpc_code_name(code), st.message);
      }
    }
  }
  if (!t->ckpt_dir[0]) return NULL;
  tg_ckpt_key key = {.step = step, .shard = shard, .world_size = world_size};
  snprintf(key.job_id, sizeof key.job_id, "%s", t->job);
  void *bytes = NULL;
  size_t len = 0;
  int rc = tg_ckpt_disk_read_alloc(t->ckpt_dir, &key, &bytes, &len, NULL);
  if (rc == TG_CKPT_CORRUPT) report_corrupt(t, &key, "on disk");
  if (rc != TG_CKPT_OK) return NULL;
  p->used_disk = 1;
  return cache_add(t, &key, bytes, len);
}

tg_result tg_resume_step(tg_trainer *t, tg_resume *resume) {
  memset(resume, 0, sizeof *resume);
  resume->committed_step = t->world.coordinator_resume_step;
  tg_lib_forget_restore(t);
  int n = t->world.world_size;
  tg_lib_plan *p = calloc(1, sizeof *p);
  wire_record *mine = calloc(1, sizeof *mine);
  if (p) p->records = calloc((size_t)n, sizeof *p->records);
  if (!p || !mine || !p->records) {
    free(mine);
    if (p) free(p->records);
    free(p);
    return tg_lib_fail(t, "out of memory");
  }
  p->n_records = n;
  t->plan = p;
  make_record(t, mine);
  tg_result r = tg_lib_all_gather_host(t, mine, p->records, sizeof *mine);
  free(mine);
  if (r != TG_OK) return r;

  candidate cands[64];
  size_t n_cands = find_candidates(t, p, cands, sizeof cands / sizeof cands[0]);
  for (size_t c = 0; c < n_cands && c < MAX_TRIES; c++) {
    /* Rank r verifies shards r, r + n, r + 2n, ... of the candidate. */
    int64_t tally[2] = {0, 0}; /* shards with no good copy; ranks that used the disk */
    p->used_disk = 0;
    for (uint32_t q = (uint32_t)t->world.rank; q < cands[c].world_size; q += (uint32_t)n)
      if (!obtain(t, cands[c].step, (int32_t)q, cands[c].world_size)) tally[0]++;
    tally[1] = p->used_disk;
    r = tg_lib_all_reduce_host(t, tally, 2);
    if (r != TG_OK) return r;
    if (tally[0] == 0) {
      resume->step = cands[c].step;
      resume->world_size = (int)cands[c].world_size;
      resume->from_disk = tally[1] > 0;
      break;
    }
    if (t->world.rank == 0)
      fprintf(stderr, "tardigrade: step %" PRIu64 " (world of %u) cannot be restored: %" PRId64
              " shards have no good copy; trying an older one\n", cands[c].step, cands[c].world_size, tally[0]);
  }
  if (resume->committed_step > resume->step) resume->lost_steps = resume->committed_step - resume->step;
  if (t->world.rank == 0 && (resume->lost_steps > 0 || resume->from_disk || (n_cands > 0 && resume->step == 0)))
    fprintf(stderr, "tardigrade: resuming at step %" PRIu64 "%s; the newest committed step was %" PRIu64
            ": %" PRIu64 " committed steps lost\n", resume->step,
            resume->from_disk ? " from the persisted checkpoint (no memory copy was left)" : "",
            resume->committed_step, resume->lost_steps);
  return TG_OK;
}

/* Splits a snapshot into its buffers, checking every length. */
static int parse_shard(const tg_lib_cached *c, tg_shard *s) {
  const uint8_t *p = c->bytes;
  uint64_t n = 0;
  if (c->len < sizeof n) return -1;
  memcpy(&n, p, sizeof n);
  if (n > TG_LIB_MAX_BUFFERS || c->len < sizeof(uint64_t) * (1 + n)) return -1;
  size_t off = sizeof(uint64_t) * (1 + n);
  s->n = (size_t)n;
  for (size_t i = 0; i < n; i++) {
    uint64_t len;
    memcpy(&len, p + sizeof(uint64_t) * (1 + i), sizeof len);
    if (len > c->len - off) return -1;
    s->ptr[i] = p + off;
    s->len[i] = (size_t)len;
    off += (size_t)len;
  }
  return off == c->len ? 0 : -1;
}

tg_result tg_shard_open(tg_trainer *t, const tg_resume *resume, int shard, tg_shard **out) {
  *out = NULL;
  if (!t->plan || !resume || resume->step == 0 || shard < 0 || shard >= resume->world_size)
    return tg_lib_fail(t, "shard %d: no such shard of the resume point (call tg_resume_step first)", shard);
  tg_lib_cached *c = obtain(t, resume->step, shard, (uint32_t)resume->world_size);
  if (!c)
    return tg_lib_fail(t, "no good copy of step %" PRIu64 " shard %d of %d is left", resume->step, shard,
                       resume->world_size);
  tg_shard *s = calloc(1, sizeof *s);
  if (!s) return tg_lib_fail(t, "out of memory");
  if (parse_shard(c, s) != 0) {
    free(s);
    return tg_lib_fail(t, "step %" PRIu64 " shard %d: not a snapshot written by libtardigrade", resume->step,
                       shard);
  }
  *out = s;
  return TG_OK;
}

size_t tg_shard_buffers(const tg_shard *s) { return s->n; }

const void *tg_shard_buffer(const tg_shard *s, size_t index, size_t *bytes) {
  if (index >= s->n) {
    *bytes = 0;
    return NULL;
  }
  *bytes = s->len[index];
  return s->ptr[index];
}

void tg_shard_close(tg_shard *s) { free(s); }

tg_result tg_restore(tg_trainer *t, const tg_resume *resume) {
  if (resume->world_size != t->world.world_size)
    return tg_lib_fail(t, "step %" PRIu64 " was written by a world of %d ranks, this one has %d: reshard "
                       "with tg_shard_open", resume->step, resume->world_size, t->world.world_size);
  tg_shard *s = NULL;
  tg_result r = tg_shard_open(t, resume, t->world.rank, &s);
  if (r != TG_OK) return r;
  if (s->n != t->n_buffers) {
    r = tg_lib_fail(t, "step %" PRIu64 " holds %zu buffers, %zu are registered", resume->step, s->n,
                    t->n_buffers);
    goto out;
  }
  for (size_t i = 0; i < s->n; i++)
    if (s->len[i] != t->buffers[i].bytes) {
      r = tg_lib_fail(t, "snapshot buffer %s has %zu bytes, %zu expected", t->buffers[i].name, s->len[i],
                      t->buffers[i].bytes);
      goto out;
    }
  for (size_t i = 0; i < s->n; i++) memcpy(t->buffers[i].data, s->ptr[i], s->len[i]);
out:
  tg_shard_close(s);
  return r;
}
