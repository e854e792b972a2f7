/* libtardigrade: the trainer side of Tardigrade (see tardigrade.h). It
 * speaks the agent's local service over the unix socket in
 * $TG_AGENT_SOCKET, builds a communicator (trainer/comm) for each world it
 * joins, and writes and reads snapshots in the agent's shared-memory
 * checkpoint store ($TG_CKPT_SHM, agent/ckpt). A snapshot is one shard
 * per rank: a small directory (buffer count, each buffer's length) followed
 * by the registered buffers' bytes. */
#include "trainer/include/tardigrade.h"

#include <inttypes.h>
#include <signal.h>
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
#include "trainer/lib/internal.h"
#include "common/clock/clock.h"

#define CALL_MS 5000
#define COLLECTIVE_MS 30000 /* a collective that takes longer means a peer is gone */
/* Building a world's communicator waits for every rank. A survivor may
 * still be inside the old world's collective until COLLECTIVE_MS (when the
 * abort on a newer generation does not interrupt it: seen under ASan, a
 * gloo send waiting its full 30 s), so the others wait longer than that:
 * giving up first wastes the generation (they then ask for a new one, see
 * tg_join). A rank that never comes is not waited for: the newer world
 * that replaces it cancels the wait. */
#define CONNECT_MS (COLLECTIVE_MS + 15000)
#define NEWER_WORLD_GRACE_MS 1000 /* after a failed communicator, before asking for a new world */
#define REPLICATION_WAIT_MS 10000 /* then go on unreplicated: the buddy is likely gone */

tg_result tg_lib_fail(tg_trainer *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->error, sizeof t->error, fmt, ap);
  va_end(ap);
  return TG_ERROR;
}

const char *tg_last_error(const tg_trainer *t) { return t->error; }

static void abandon_old_world(tg_trainer *t);

/* The address this rank's collectives listen on: the host its agent
 * advertises to other nodes ("10.77.1.2:7100" gives "10.77.1.2"), so ranks
 * on separate hosts (network namespaces, machines) reach each other the
 * way the agents do; 127.0.0.1 when the agent says nothing usable. */
static void collective_host(const char *agent_address, char *out, size_t len) {
  const char *colon = strrchr(agent_address, ':');
  size_t n = colon ? (size_t)(colon - agent_address) : 0;
  if (n >= 2 && agent_address[0] == '[' && agent_address[n - 1] == ']') {
    agent_address++;
    n -= 2;
  }
  if (n == 0 || n >= len) {
    snprintf(out, len, "127.0.0.1");
    return;
  }
  snprintf(out, len, "%.*s", (int)n, agent_address);
  if (strcmp(out, "0.0.0.0") == 0 || strcmp(out, "::") == 0) snprintf(out, len, "127.0.0.1");
}

/* Advances this slot's alive counter until tg_free: it stops only when
 * the whole process does. */
static void *alive_main(void *arg) {
  tg_trainer *t = arg;
  while (!atomic_load(&t->alive_stop)) {
    tg_counters_alive(t->counters, (int)t->slot);
    abandon_old_world(t);
    tg_clock_sleep_ms(TG_COUNTERS_ALIVE_MS);
  }
  return NULL;
}

/* Whether the agent already knows a world newer than `generation`. */
static int newer_world(const tg_trainer *t, uint64_t generation) {
  return t->counters && tg_counters_world(t->counters) > generation;
}

/* A collective of a world the agent has replaced cannot complete (a
 * member is gone, or leaves it for the new world): abort it now rather
 * than at its deadline, so the survivor re-joins at once. The alive
 * thread checks every TG_COUNTERS_ALIVE_MS (tg_comm_abort is idempotent). */
static void abandon_old_world(tg_trainer *t) {
  pthread_mutex_lock(&t->comm_mu);
  if (t->comm && newer_world(t, (uint64_t)tg_comm_generation(t->comm))) tg_comm_abort(t->comm);
  pthread_mutex_unlock(&t->comm_mu);
}

/* Whether a world newer than `generation` appears within NEWER_WORLD_GRACE_MS:
 * a failure that a peer's death caused is usually followed by the world
 * that replaces it, and then there is nothing to report. */
static int newer_world_soon(const tg_trainer *t, uint64_t generation) {
  for (int64_t waited_ms = 0; waited_ms < NEWER_WORLD_GRACE_MS; waited_ms += 50) {
    if (newer_world(t, generation)) return 1;
    tg_clock_sleep_ms(50);
  }
  return newer_world(t, generation);
}

/* tg_comm_config.cancelled while this rank builds the communicator of
 * t->world (called on tg_join's thread): a world the agent has already
 * replaced may miss a member for good. */
static int joining_cancelled(void *user) {
  const tg_trainer *t = user;
  return newer_world(t, t->world.generation);
}

tg_trainer *tg_init(void) {
  const char *sock = getenv("TG_AGENT_SOCKET"), *slot = getenv("TG_SLOT"), *shm = getenv("TG_CKPT_SHM");
  const char *job = getenv("TG_JOB");
  if (!sock || !slot || !shm) {
    fprintf(stderr, "tardigrade: TG_AGENT_SOCKET, TG_SLOT and TG_CKPT_SHM must be set (tg-agent sets them)\n");
    return NULL;
  }
  /* A peer that dies mid-collective closes its sockets; writing to one
   * must fail the collective (TG_WORLD_CHANGED), not kill this survivor
   * with SIGPIPE. A handler the program installed itself is kept. */
  struct sigaction pipe_action;
  if (sigaction(SIGPIPE, NULL, &pipe_action) == 0 && pipe_action.sa_handler == SIG_DFL)
    signal(SIGPIPE, SIG_IGN);
  tg_trainer *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  pthread_mutex_init(&t->comm_mu, NULL);
  snprintf(t->job, sizeof t->job, "%s", job && *job ? job : "default");
  t->slot = (uint32_t)atoi(slot);
  const char *backend = getenv("TG_COMM_BACKEND"), *device = getenv("TG_CUDA_DEVICE");
  t->backend = TG_COMM_GLOO;
  t->cuda_device = -1;
  if (backend && strcmp(backend, "nccl") == 0) {
    t->backend = TG_COMM_NCCL;
    t->cuda_device = device && *device ? atoi(device) : (int)t->slot;
  } else if (backend && *backend && strcmp(backend, "gloo") != 0) {
    fprintf(stderr, "tardigrade: TG_COMM_BACKEND=%s: expected gloo or nccl\n", backend);
    tg_free(t);
    return NULL;
  }
  char target[300], err[256];
  snprintf(target, sizeof target, "unix:%s", sock);
  t->agent = tg_rpc_channel_new(target, NULL, err, sizeof err);
  t->store = t->agent ? tg_ckpt_store_open(shm, err, sizeof err) : NULL;
  if (!t->agent || !t->store) {
    fprintf(stderr, "tardigrade: %s\n", err);
    tg_free(t);
    return NULL;
  }
  const char *counters = getenv("TG_PROGRESS_SHM");
  if (counters && *counters && !(t->counters = tg_counters_open(counters, err, sizeof err)))
    fprintf(stderr, "tardigrade: %s; hangs in collectives will be blamed less precisely\n", err);
  if (t->counters) t->alive_started = pthread_create(&t->alive_thread, NULL, alive_main, t) == 0;
  /* Every rank must check at the same steps (the check is a collective):
   * the agent gives all its trainers one environment. */
  const char *every = getenv("TG_REPLICA_CHECK_STEPS");
  t->replica_check_steps = TG_REPLICA_CHECK_STEPS_DEFAULT;
  if (every && *every) {
    char *end = NULL;
    long long n = strtoll(every, &end, 10);
    if (*end || n < 0) {
      fprintf(stderr, "tardigrade: TG_REPLICA_CHECK_STEPS=%s: expected a step count >= 0 (0: no check)\n", every);
      tg_free(t);
      return NULL;
    }
    t->replica_check_steps = n;
  }
  return t;
}

void tg_free(tg_trainer *t) {
  if (!t) return;
  if (t->alive_started) { /* first: it may abort the communicator */
    atomic_store(&t->alive_stop, 1);
    pthread_join(t->alive_thread, NULL);
  }
  tg_comm_free(t->comm);
  tg_lib_forget_restore(t);
  tg_ckpt_store_close(t->store);
  tg_counters_close(t->counters);
  pthread_mutex_destroy(&t->comm_mu);
  if (t->agent) tg_rpc_channel_free(t->agent);
  free(t);
}

tg_result tg_join(tg_trainer *t, tg_world *world, int64_t timeout_ms) {
  /* The old world's communicator is stopped now and freed once the new
   * one exists: NCCL may shrink it into the new one (comm.h, parent). */
  pthread_mutex_lock(&t->comm_mu);
  tg_comm *parent = t->comm;
  t->comm = NULL;
  pthread_mutex_unlock(&t->comm_mu);
  if (parent) tg_comm_abort(parent);
  tg_lib_forget_restore(t);
  /* Until the first step done in the new world: not a hang (counters.h). */
  tg_counters_set_restoring(t->counters, (int)t->slot, 1);
  Tardigrade__V1__JoinRequest req = TARDIGRADE__V1__JOIN_REQUEST__INIT;
  req.slot = t->slot;
  req.pid = getpid();
  req.known_generation = t->known_generation;
  ProtobufCMessage *m = NULL;
  tg_rpc_status st = {0};
  tg_rpc_call_opts o = {.deadline_ms = timeout_ms, .wait_for_ready = 1};
  if (tg_rpc_unary(t->agent, "/tardigrade.v1.Agent/Join", &req.base, &tardigrade__v1__join_response__descriptor,
                   &m, &o, &st) != TG_RPC_OK) {
    tg_comm_free(parent);
    return tg_lib_fail(t, "join: %s: %s", tg_rpc_code_name(st.code), st.message);
  }
  Tardigrade__V1__JoinResponse *r = (Tardigrade__V1__JoinResponse *)m;
  t->world.previous_world_size = t->world.world_size;
  t->world.generation = r->world->generation;
  t->world.rank = r->rank;
  t->world.world_size = (int)r->world->world_size;
  t->world.coordinator_resume_step = r->world->resume_step;
  t->known_generation = r->world->generation;
  t->collective_seq = 0;
  t->check_mark_ms = 0; /* the first check of a world also timed the restore: not compared */
  t->slow_checks = 0;
  snprintf(t->node_id, sizeof t->node_id, "%s", r->node_id);
  snprintf(t->agent_address, sizeof t->agent_address, "%s", r->agent_address);
  snprintf(t->ckpt_dir, sizeof t->ckpt_dir, "%s", r->ckpt_dir);
  char host[256];
  collective_host(r->agent_address, host, sizeof host);
  tg_comm_config cc = {.backend = t->backend,
                       .cuda_device = t->cuda_device,
                       .rank = r->rank,
                       .world_size = (int)r->world->world_size,
                       .generation = (int64_t)r->world->generation,
                       .store_address = r->world->store_address,
                       .store_prefix = r->world->store_prefix,
                       .host = host,
                       .connect_timeout_ms = CONNECT_MS};
  cc.cancelled = joining_cancelled;
  cc.cancel_user = t;
  cc.parent = parent;
  tg_comm_status cs = {0};
  tg_comm *comm = tg_comm_create(&cc, &cs);
  tg_comm_free(parent);
  pthread_mutex_lock(&t->comm_mu);
  t->comm = comm;
  pthread_mutex_unlock(&t->comm_mu);
  protobuf_c_message_free_unpacked(m, NULL);
  if (!t->comm) {
    /* The world may already be gone (a peer failed while forming it): the
     * next join waits for a newer one. If nothing replaces it (every rank
     * timed out: a member arrived too late, or the store failed), nobody
     * else would ask for one, so this rank does: an ERROR fault makes the
     * coordinator form the world again under a new generation. */
    snprintf(t->error, sizeof t->error, "communicator: %s", cs.message);
    if (cs.code != TG_COMM_ABORTED && !newer_world_soon(t, t->world.generation)) {
      char detail[600];
      snprintf(detail, sizeof detail, "generation %" PRIu64 " formed no communicator: %s", t->world.generation,
               cs.message);
      tg_lib_report(t, TARDIGRADE__V1__FAULT_KIND__FAULT_COLLECTIVE_TIMEOUT,
                    TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR, detail);
    }
    return TG_WORLD_CHANGED;
  }
  *world = t->world;
  return TG_OK;
}

static tg_result register_buffer(tg_trainer *t, const char *name, void *data, size_t bytes, int replica) {
  if (!name || strlen(name) >= sizeof t->buffers[0].name || (!data && bytes))
    return tg_lib_fail(t, "register: bad buffer");
  tg_lib_buffer *b = NULL;
  for (size_t i = 0; i < t->n_buffers && !b; i++)
    if (strcmp(t->buffers[i].name, name) == 0) b = &t->buffers[i]; /* replaced */
  if (!b && t->n_buffers == TG_LIB_MAX_BUFFERS)
    return tg_lib_fail(t, "register: more than %d buffers", TG_LIB_MAX_BUFFERS);
  if (!b) b = &t->buffers[t->n_buffers++];
  snprintf(b->name, sizeof b->name, "%s", name);
  b->data = data;
  b->bytes = bytes;
  b->replica = replica;
  return TG_OK;
}

tg_result tg_register(tg_trainer *t, const char *name, void *data, size_t bytes) {
  return register_buffer(t, name, data, bytes, 0);
}

tg_result tg_register_replica(tg_trainer *t, const char *name, void *data, size_t bytes) {
  return register_buffer(t, name, data, bytes, 1);
}

/* A communicator failure means the world is gone. */
static tg_result comm_result(tg_trainer *t, tg_comm_code code, const tg_comm_status *cs) {
  /* Out of the collective: the agent tells a rank waiting inside one (a
   * victim) from a rank that never came (the culprit). */
  tg_counters_done(t->counters, (int)t->slot, t->world.generation, t->collective_seq);
  t->collective_ms += tg_clock_mono_ms() - t->entered_ms;
  if (code == TG_COMM_OK) return TG_OK;
  snprintf(t->error, sizeof t->error, "%s: %s", tg_comm_code_name(code), cs->message);
  return TG_WORLD_CHANGED;
}

/* Counts a collective and tells the agent this rank entered it. */
static void enter(tg_trainer *t) {
  t->entered_ms = tg_clock_mono_ms();
  t->collective_seq++;
  tg_counters_enter(t->counters, (int)t->slot, t->world.generation, t->collective_seq);
}

tg_result tg_all_reduce(tg_trainer *t, void *buf, size_t count, tg_dtype type) {
  tg_comm_status cs = {0};
  enter(t);
  return comm_result(t,
                     tg_comm_all_reduce(t->comm, buf, count, type == TG_INT64 ? TG_COMM_INT64 : TG_COMM_FLOAT32,
                                        COLLECTIVE_MS, &cs),
                     &cs);
}

tg_result tg_all_gather(tg_trainer *t, const void *send, void *recv, size_t bytes_per_rank) {
  tg_comm_status cs = {0};
  enter(t);
  return comm_result(t, tg_comm_all_gather(t->comm, send, recv, bytes_per_rank, COLLECTIVE_MS, &cs), &cs);
}

tg_result tg_lib_all_gather_host(tg_trainer *t, const void *send, void *recv, size_t bytes_per_rank) {
  tg_comm_status cs = {0};
  enter(t);
  return comm_result(t, tg_comm_all_gather_host(t->comm, send, recv, bytes_per_rank, COLLECTIVE_MS, &cs), &cs);
}

tg_result tg_lib_all_reduce_host(tg_trainer *t, int64_t *buf, size_t count) {
  tg_comm_status cs = {0};
  enter(t);
  return comm_result(t, tg_comm_all_reduce_host(t->comm, buf, count, TG_COMM_INT64, COLLECTIVE_MS, &cs), &cs);
}

int tg_device_buffers(const tg_trainer *t) { return t->backend == TG_COMM_NCCL; }
int tg_cuda_device(const tg_trainer *t) { return t->backend == TG_COMM_NCCL ? t->cuda_device : -1; }

tg_result tg_broadcast(tg_trainer *t, void *buf, size_t bytes, int root) {
  tg_comm_status cs = {0};
  enter(t);
  return comm_result(t, tg_comm_broadcast(t->comm, buf, bytes, root, COLLECTIVE_MS, &cs), &cs);
}

tg_result tg_snapshot(tg_trainer *t, uint64_t step) {
  tg_lib_forget_restore(t); /* restored: the copies read for it are no longer needed */
  /* Before anything of the step is written: a step whose replicas differ
   * must never become a resume point. */
  tg_result checked = tg_lib_check_replicas(t, step);
  if (checked != TG_OK) return checked;
  size_t total = sizeof(uint64_t) * (1 + t->n_buffers);
  for (size_t i = 0; i < t->n_buffers; i++) total += t->buffers[i].bytes;
  tg_ckpt_key key = {.generation = t->world.generation, .step = step, .shard = t->world.rank,
                     .world_size = (uint32_t)t->world.world_size};
  snprintf(key.job_id, sizeof key.job_id, "%s", t->job);
  tg_ckpt_writer *w = NULL;
  int rc = tg_ckpt_writer_begin(t->store, &key, total, &w);
  if (rc == TG_CKPT_TOO_LARGE)
    return tg_lib_fail(t, "snapshot of step %" PRIu64 ": the shard's %zu bytes do not fit the node's store slots of %"
                       PRIu64 " bytes (start tg-agent with a larger --ckpt-mib)", step, total,
                       tg_ckpt_store_slot_bytes(t->store));
  if (rc != 0) return tg_lib_fail(t, "snapshot of step %" PRIu64 ": %s", step, tg_ckpt_result_name(rc));
  uint64_t n = t->n_buffers;
  rc = tg_ckpt_writer_append(w, &n, sizeof n);
  for (size_t i = 0; rc == 0 && i < t->n_buffers; i++) {
    uint64_t len = t->buffers[i].bytes;
    rc = tg_ckpt_writer_append(w, &len, sizeof len);
  }
  for (size_t i = 0; rc == 0 && i < t->n_buffers; i++) rc = tg_ckpt_writer_append(w, t->buffers[i].data, t->buffers[i].bytes);
  if (rc != 0) {
    tg_ckpt_writer_abort(w);
    return tg_lib_fail(t, "snapshot of step %" PRIu64 ": %s", step, tg_ckpt_result_name(rc));
  }
  rc = tg_ckpt_writer_commit(w);
  return rc == 0 ? TG_OK : tg_lib_fail(t, "snapshot commit: %s", tg_ckpt_result_name(rc));
}

static tg_result wait_replicated(tg_trainer *t, uint64_t step, uint64_t replicated);

tg_result tg_step_done(tg_trainer *t, uint64_t step, float loss, uint32_t step_time_ms) {
  tg_counters_set_restoring(t->counters, (int)t->slot, 0);
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
    return tg_lib_fail(t, "progress: %s", st.message);
  Tardigrade__V1__ProgressResponse *pr = (Tardigrade__V1__ProgressResponse *)m;
  uint64_t now = pr->generation, replicated = pr->replicated_step;
  protobuf_c_message_free_unpacked(m, NULL);
  if (now != t->world.generation) return TG_WORLD_CHANGED;
  return wait_replicated(t, step, replicated);
}

/* Waits while this rank's copies on the buddy node lag more than
 * TG_MAX_REPLICATION_LAG steps behind `step`, so that the steps the node
 * keeps in memory always include one its buddy holds too. Bounded: a
 * buddy that stopped answering is the coordinator's business (it forms a
 * new world), not a reason to stop training. */
static tg_result wait_replicated(tg_trainer *t, uint64_t step, uint64_t replicated) {
  int64_t deadline = tg_clock_mono_ms() + REPLICATION_WAIT_MS;
  while (step > replicated + TG_MAX_REPLICATION_LAG) {
    if (tg_clock_mono_ms() >= deadline) {
      if (!t->replication_stalled)
        fprintf(stderr, "tardigrade: rank %d: step %" PRIu64 " is still not copied to the buddy node "
                "(newest copied: %" PRIu64 "); going on without waiting\n", t->world.rank, step, replicated);
      t->replication_stalled = 1;
      return TG_OK;
    }
    tg_clock_sleep_ms(1);
    Tardigrade__V1__ReplicatedRequest req = TARDIGRADE__V1__REPLICATED_REQUEST__INIT;
    req.slot = t->slot;
    req.generation = t->world.generation;
    ProtobufCMessage *m = NULL;
    tg_rpc_status st = {0};
    tg_rpc_call_opts o = {.deadline_ms = CALL_MS};
    if (tg_rpc_unary(t->agent, "/tardigrade.v1.Agent/Replicated", &req.base,
                     &tardigrade__v1__replicated_response__descriptor, &m, &o, &st) != TG_RPC_OK)
      return tg_lib_fail(t, "replication status: %s", st.message);
    Tardigrade__V1__ReplicatedResponse *r = (Tardigrade__V1__ReplicatedResponse *)m;
    uint64_t gen = r->generation;
    replicated = r->replicated_step;
    protobuf_c_message_free_unpacked(m, NULL);
    if (gen != t->world.generation) return TG_WORLD_CHANGED;
  }
  t->replication_stalled = 0;
  return TG_OK;
}

void tg_lib_report(tg_trainer *t, int kind, int severity, const char *detail) {
  fprintf(stderr, "tardigrade: rank %d: %s\n", t->world.rank, detail);
  Tardigrade__V1__Fault f = TARDIGRADE__V1__FAULT__INIT;
  f.kind = kind;
  f.severity = severity;
  f.rank = t->world.rank;
  f.detail = (char *)detail;
  f.detected_unix_ms = tg_clock_unix_ms();
  Tardigrade__V1__TrainerFaultRequest req = TARDIGRADE__V1__TRAINER_FAULT_REQUEST__INIT;
  req.slot = t->slot;
  req.generation = t->world.generation;
  req.fault = &f;
  ProtobufCMessage *m = NULL;
  tg_rpc_status st = {0};
  tg_rpc_call_opts o = {.deadline_ms = CALL_MS};
  if (tg_rpc_unary(t->agent, "/tardigrade.v1.Agent/ReportFault", &req.base,
                   &tardigrade__v1__trainer_fault_response__descriptor, &m, &o, &st) == TG_RPC_OK)
    protobuf_c_message_free_unpacked(m, NULL);
}
