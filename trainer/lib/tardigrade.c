/* libtardigrade: the trainer side of Tardigrade (see tardigrade.h). It
 * speaks the agent's local service over the unix socket in
 * $TG_AGENT_SOCKET, builds a communicator (trainer/comm) for each world it
 * joins, and writes and reads snapshots in the agent's shared-memory
 * checkpoint store ($TG_CKPT_SHM, agent/ckpt). A snapshot is one shard
 * per rank: a small directory (buffer count, each buffer's length) followed
 * by the registered buffers' bytes. */
#include "trainer/include/tardigrade.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/ckpt/store.h"
#include "common/rpc/rpc.h"
#include "proto/tardigrade/v1/agent.pb-c.h"
#include "trainer/comm/comm.h"

#define MAX_BUFFERS 32
#define CALL_MS 5000
#define COLLECTIVE_MS 30000 /* a collective that takes longer means a peer is gone */

typedef struct {
  char name[64];
  void *data;
  size_t bytes;
} buffer;

struct tg_trainer {
  char job[64];
  uint32_t slot;
  tg_rpc_channel *agent;
  tg_ckpt_store *store;
  tg_comm *comm;
  tg_world world;
  uint64_t known_generation;
  buffer buffers[MAX_BUFFERS];
  size_t n_buffers;
  uint64_t collective_seq;
  char error[512];
};

static tg_result fail(tg_trainer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static tg_result fail(tg_trainer *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->error, sizeof t->error, fmt, ap);
  va_end(ap);
  return TG_ERROR;
}

const char *tg_last_error(const tg_trainer *t) { return t->error; }

tg_trainer *tg_init(void) {
  const char *sock = getenv("TG_AGENT_SOCKET"), *slot = getenv("TG_SLOT"), *shm = getenv("TG_CKPT_SHM");
  const char *job = getenv("TG_JOB");
  if (!sock || !slot || !shm) {
    fprintf(stderr, "tardigrade: TG_AGENT_SOCKET, TG_SLOT and TG_CKPT_SHM must be set (tg-agent sets them)\n");
    return NULL;
  }
  tg_trainer *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  snprintf(t->job, sizeof t->job, "%s", job && *job ? job : "default");
  t->slot = (uint32_t)atoi(slot);
  char target[300], err[256];
  snprintf(target, sizeof target, "unix:%s", sock);
  t->agent = tg_rpc_channel_new(target, NULL, err, sizeof err);
  t->store = t->agent ? tg_ckpt_store_open(shm, err, sizeof err) : NULL;
  if (!t->agent || !t->store) {
    fprintf(stderr, "tardigrade: %s\n", err);
    tg_free(t);
    return NULL;
  }
  return t;
}

void tg_free(tg_trainer *t) {
  if (!t) return;
  tg_comm_free(t->comm);
  tg_ckpt_store_close(t->store);
  if (t->agent) tg_rpc_channel_free(t->agent);
  free(t);
}

tg_result tg_join(tg_trainer *t, tg_world *world, int64_t timeout_ms) {
  if (t->comm) {
    tg_comm_abort(t->comm);
    tg_comm_free(t->comm);
    t->comm = NULL;
  }
  Tardigrade__V1__JoinRequest req = TARDIGRADE__V1__JOIN_REQUEST__INIT;
  req.slot = t->slot;
  req.pid = getpid();
  req.known_generation = t->known_generation;
  ProtobufCMessage *m = NULL;
  tg_rpc_status st = {0};
  tg_rpc_call_opts o = {.deadline_ms = timeout_ms, .wait_for_ready = 1};
  if (tg_rpc_unary(t->agent, "/tardigrade.v1.Agent/Join", &req.base, &tardigrade__v1__join_response__descriptor,
                   &m, &o, &st) != TG_RPC_OK)
    return fail(t, "join: %s: %s", tg_rpc_code_name(st.code), st.message);
  Tardigrade__V1__JoinResponse *r = (Tardigrade__V1__JoinResponse *)m;
  t->world.previous_world_size = t->world.world_size;
  t->world.generation = r->world->generation;
  t->world.rank = r->rank;
  t->world.world_size = (int)r->world->world_size;
  t->world.coordinator_resume_step = r->world->resume_step;
  t->known_generation = r->world->generation;
  tg_comm_config cc = {.backend = TG_COMM_GLOO,
                       .rank = r->rank,
                       .world_size = (int)r->world->world_size,
                       .generation = (int64_t)r->world->generation,
                       .store_address = r->world->store_address,
                       .store_prefix = r->world->store_prefix,
                       .host = "127.0.0.1",
                       .connect_timeout_ms = 20000};
  tg_comm_status cs = {0};
  t->comm = tg_comm_create(&cc, &cs);
  protobuf_c_message_free_unpacked(m, NULL);
  if (!t->comm) {
    /* The world may already be gone (a peer failed while forming it). */
    snprintf(t->error, sizeof t->error, "communicator: %s", cs.message);
    return TG_WORLD_CHANGED;
  }
  *world = t->world;
  return TG_OK;
}

tg_result tg_register(tg_trainer *t, const char *name, void *data, size_t bytes) {
  if (!name || strlen(name) >= sizeof t->buffers[0].name || (!data && bytes))
    return fail(t, "register: bad buffer");
  buffer *b = NULL;
  for (size_t i = 0; i < t->n_buffers && !b; i++)
    if (strcmp(t->buffers[i].name, name) == 0) b = &t->buffers[i]; /* replaced */
  if (!b && t->n_buffers == MAX_BUFFERS) return fail(t, "register: more than %d buffers", MAX_BUFFERS);
  if (!b) b = &t->buffers[t->n_buffers++];
  snprintf(b->name, sizeof b->name, "%s", name);
  b->data = data;
  b->bytes = bytes;
  return TG_OK;
}

/* A communicator failure means the world is gone. */
static tg_result comm_result(tg_trainer *t, tg_comm_code code, const tg_comm_status *cs) {
  if (code == TG_COMM_OK) return TG_OK;
  snprintf(t->error, sizeof t->error, "%s: %s", tg_comm_code_name(code), cs->message);
  return TG_WORLD_CHANGED;
}

tg_result tg_all_reduce(tg_trainer *t, void *buf, size_t count, tg_dtype type) {
  tg_comm_status cs = {0};
  t->collective_seq++;
  return comm_result(t,
                     tg_comm_all_reduce(t->comm, buf, count, type == TG_INT64 ? TG_COMM_INT64 : TG_COMM_FLOAT32,
                                        COLLECTIVE_MS, &cs),
                     &cs);
}

tg_result tg_all_gather(tg_trainer *t, const void *send, void *recv, size_t bytes_per_rank) {
  tg_comm_status cs = {0};
  t->collective_seq++;
  return comm_result(t, tg_comm_all_gather(t->comm, send, recv, bytes_per_rank, COLLECTIVE_MS, &cs), &cs);
}

tg_result tg_broadcast(tg_trainer *t, void *buf, size_t bytes, int root) {
  tg_comm_status cs = {0};
  t->collective_seq++;
  return comm_result(t, tg_comm_broadcast(t->comm, buf, bytes, root, COLLECTIVE_MS, &cs), &cs);
}

/* The key of this rank's snapshot of `step` in the current world size, of
 * any generation: a world re-formed at the same size finds it. */
static int find_snapshot(tg_trainer *t, uint64_t step, tg_ckpt_key *out) {
  tg_ckpt_key keys[256];
  size_t n = tg_ckpt_store_list(t->store, t->job, keys, 256);
  int found = 0;
  for (size_t i = 0; i < n && i < 256; i++) {
    if (keys[i].shard != t->world.rank || (int)keys[i].world_size != t->world.world_size) continue;
    if (step == UINT64_MAX ? (!found || keys[i].step > out->step) : keys[i].step == step) {
      *out = keys[i];
      found = 1;
    }
  }
  return found;
}

tg_result tg_resume_step(tg_trainer *t, uint64_t *step) {
  tg_ckpt_key newest;
  int64_t mine = find_snapshot(t, UINT64_MAX, &newest) ? (int64_t)newest.step : 0;
  /* The minimum over the ranks: gather every rank's newest and take it. */
  int64_t *all = calloc((size_t)t->world.world_size, sizeof *all);
  if (!all) return fail(t, "out of memory");
  tg_result r = tg_all_gather(t, &mine, all, sizeof mine);
  if (r == TG_OK) {
    int64_t lowest = all[0];
    for (int i = 1; i < t->world.world_size; i++)
      if (all[i] < lowest) lowest = all[i];
    *step = lowest > 0 ? (uint64_t)lowest : 0;
  }
  free(all);
  return r;
}

tg_result tg_snapshot(tg_trainer *t, uint64_t step) {
  size_t total = sizeof(uint64_t) * (1 + t->n_buffers);
  for (size_t i = 0; i < t->n_buffers; i++) total += t->buffers[i].bytes;
  tg_ckpt_key key = {.generation = t->world.generation, .step = step, .shard = t->world.rank,
                     .world_size = (uint32_t)t->world.world_size};
  snprintf(key.job_id, sizeof key.job_id, "%s", t->job);
  tg_ckpt_writer *w = NULL;
  int rc = tg_ckpt_writer_begin(t->store, &key, total, &w);
  if (rc != 0) return fail(t, "snapshot of step %" PRIu64 ": %s", step, tg_ckpt_result_name(rc));
  uint64_t n = t->n_buffers;
  rc = tg_ckpt_writer_append(w, &n, sizeof n);
  for (size_t i = 0; rc == 0 && i < t->n_buffers; i++) {
    uint64_t len = t->buffers[i].bytes;
    rc = tg_ckpt_writer_append(w, &len, sizeof len);
  }
  for (size_t i = 0; rc == 0 && i < t->n_buffers; i++) rc = tg_ckpt_writer_append(w, t->buffers[i].data, t->buffers[i].bytes);
  if (rc != 0) {
    tg_ckpt_writer_abort(w);
    return fail(t, "snapshot of step %" PRIu64 ": %s", step, tg_ckpt_result_name(rc));
  }
  rc = tg_ckpt_writer_commit(w);
  return rc == 0 ? TG_OK : fail(t, "snapshot commit: %s", tg_ckpt_result_name(rc));
}

tg_result tg_restore(tg_trainer *t, uint64_t step) {
  tg_ckpt_key key;
  if (!find_snapshot(t, step, &key))
    return fail(t, "no snapshot of step %" PRIu64 " for rank %d of %d in this node's memory", step,
                t->world.rank, t->world.world_size);
  void *bytes = NULL;
  size_t len = 0;
  int rc = tg_ckpt_store_read_alloc(t->store, &key, &bytes, &len, NULL);
  if (rc != 0) return fail(t, "snapshot of step %" PRIu64 ": %s", step, tg_ckpt_result_name(rc));
  const uint8_t *p = bytes;
  uint64_t n = 0;
  tg_result r = TG_OK;
  if (len < sizeof n || (memcpy(&n, p, sizeof n), n != t->n_buffers) ||
      len < sizeof(uint64_t) * (1 + n)) {
    r = fail(t, "snapshot of step %" PRIu64 " holds other buffers than were registered", step);
    goto out;
  }
  size_t off = sizeof(uint64_t) * (1 + n);
  for (size_t i = 0; i < t->n_buffers; i++) {
    uint64_t blen;
    memcpy(&blen, p + sizeof(uint64_t) * (1 + i), sizeof blen);
    if (blen != t->buffers[i].bytes || off + blen > len) {
      r = fail(t, "snapshot buffer %s has %" PRIu64 " bytes, %zu expected", t->buffers[i].name, blen,
               t->buffers[i].bytes);
      goto out;
    }
    memcpy(t->buffers[i].data, p + off, blen);
    off += blen;
  }
out:
  free(bytes);
  return r;
}

tg_result tg_step_done(tg_trainer *t, uint64_t step, float loss, uint32_t step_time_ms) {
  Tardigrade__V1__RankProgress p = TARDIGRADE__V1__RANK_PROGRESS__INIT;
  p.rank = t->world.rank;
  p.step = step;
  p.collective_seq = t->collective_seq;
  p.step_time_ms = step_time_ms;
  p.loss = loss;
  Tardigrade__V1__ProgressRequest req = TARDIGRADE__V1__PROGRESS_REQUEST__INIT;
  req.slot = t->slot;
  req.generation = t->world.generation;
  req.progress = &p;
  ProtobufCMessage *m = NULL;
  tg_rpc_status st = {0};
  tg_rpc_call_opts o = {.deadline_ms = CALL_MS};
  if (tg_rpc_unary(t->agent, "/tardigrade.v1.Agent/ReportProgress", &req.base,
                   &tardigrade__v1__progress_response__descriptor, &m, &o, &st) != TG_RPC_OK)
    return fail(t, "progress: %s", st.message);
  uint64_t now = ((Tardigrade__V1__ProgressResponse *)m)->generation;
  protobuf_c_message_free_unpacked(m, NULL);
  return now != t->world.generation ? TG_WORLD_CHANGED : TG_OK;
}
