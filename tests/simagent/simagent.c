/* Simulated node agents; see simagent.h. One thread per agent: register
 * (following the leader through coordinator/client), open the heartbeat
 * and world streams, then wait on the world stream until the next
 * heartbeat is due. Any broken stream or a rejoin request means: tear the
 * streams down and register again, as the real agent does. */
#include "tests/simagent/simagent.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coordinator/client.h"
#include "proto/tardigrade/v1/coordinator.pb-c.h"

#define STREAM_DEADLINE_MS (24LL * 3600 * 1000)
#define CALL_TIMEOUT_MS 3000

struct tg_sim_agent {
  char job_id[64];
  char node_id[64];
  char address[256];
  uint32_t slots;

  pthread_t thread;
  pthread_mutex_t mu; /* guards state, flags and the client */
  pthread_cond_t changed;
  tg_coord_client *client;
  tg_sim_state state;
  uint32_t heartbeat_interval_ms;
  int stopping, silent, healthy;
  uint64_t committed_step;

  tg_rpc_stream *heartbeat; /* owned by the agent thread */
  tg_rpc_stream *world;
};

int64_t tg_sim_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Registers (mu held for the client and state). */
static int do_register(tg_sim_agent *a) {
  Tardigrade__V1__NodeInfo info = TARDIGRADE__V1__NODE_INFO__INIT;
  info.node_id = a->node_id;
  info.hostname = a->node_id;
  info.address = a->address;
  info.slots = a->slots;
  info.agent_version = (char *)"simagent";
  Tardigrade__V1__RegisterRequest req = TARDIGRADE__V1__REGISTER_REQUEST__INIT;
  req.job_id = a->job_id;
  req.node = &info;
  req.previous_incarnation = a->state.incarnation;
  ProtobufCMessage *m = NULL;
  tg_rpc_status st = {0};
  if (tg_coord_client_call(a->client, "/tardigrade.v1.Coordinator/RegisterNode", &req.base,
                           &tardigrade__v1__register_response__descriptor, &m, CALL_TIMEOUT_MS,
                           &st) != TG_RPC_OK)
    return -1;
  Tardigrade__V1__RegisterResponse *r = (Tardigrade__V1__RegisterResponse *)m;
  a->state.incarnation = r->incarnation;
  a->heartbeat_interval_ms = r->heartbeat_interval_ms ? r->heartbeat_interval_ms : 500;
  snprintf(a->state.coordinator, sizeof a->state.coordinator, "%s", tg_coord_client_target(a->client));
  protobuf_c_message_free_unpacked(m, NULL);
  return 0;
}

/* The stream pointers change under mu (tg_sim_agent_free cancels them
 * from another thread); only the agent thread frees them. */
static void close_streams(tg_sim_agent *a) {
  pthread_mutex_lock(&a->mu);
  tg_rpc_stream *hb = a->heartbeat, *w = a->world;
  a->heartbeat = a->world = NULL;
  a->state.registered = 0;
  pthread_cond_broadcast(&a->changed);
  pthread_mutex_unlock(&a->mu);
  if (hb) tg_rpc_stream_free(hb);
  if (w) tg_rpc_stream_free(w);
}

static int send_heartbeat(tg_sim_agent *a) {
  Tardigrade__V1__HeartbeatRequest hb = TARDIGRADE__V1__HEARTBEAT_REQUEST__INIT;
  Tardigrade__V1__HealthReport health = TARDIGRADE__V1__HEALTH_REPORT__INIT;
  pthread_mutex_lock(&a->mu);
  hb.node_id = a->node_id;
  hb.incarnation = a->state.incarnation;
  hb.generation = a->state.generation;
  hb.committed_step = a->committed_step;
  health.healthy = a->healthy;
  pthread_mutex_unlock(&a->mu);
  hb.health = &health;
  int rc = tg_rpc_stream_send(a->heartbeat, &hb.base, CALL_TIMEOUT_MS);
  if (rc == 0) {
    pthread_mutex_lock(&a->mu);
    a->state.last_heartbeat_ms = tg_sim_mono_ms();
    pthread_mutex_unlock(&a->mu);
  }
  return rc;
}

/* Registers and opens both streams; 0 or -1. */
static int connect_agent(tg_sim_agent *a) {
  tg_rpc_status st = {0};
  pthread_mutex_lock(&a->mu);
  int rc = do_register(a);
  tg_rpc_channel *ch = rc == 0 ? tg_coord_client_channel(a->client) : NULL;
  uint64_t known = a->state.generation, incarnation = a->state.incarnation;
  pthread_mutex_unlock(&a->mu);
  if (!ch) return -1;
  tg_rpc_call_opts o = {.deadline_ms = STREAM_DEADLINE_MS};
  tg_rpc_stream *hb = tg_rpc_stream_open(ch, "/tardigrade.v1.Coordinator/Heartbeat",
                                         &tardigrade__v1__heartbeat_response__descriptor, &o, &st);
  tg_rpc_stream *ws = tg_rpc_stream_open(ch, "/tardigrade.v1.Coordinator/WatchWorld",
                                         &tardigrade__v1__world_update__descriptor, &o, &st);
  pthread_mutex_lock(&a->mu);
  a->heartbeat = hb;
  a->world = ws;
  int stopping = a->stopping;
  pthread_mutex_unlock(&a->mu);
  if (!hb || !ws || stopping) goto fail;
  Tardigrade__V1__WatchWorldRequest w = TARDIGRADE__V1__WATCH_WORLD_REQUEST__INIT;
  w.node_id = a->node_id;
  w.incarnation = incarnation;
  w.known_generation = known;
  if (tg_rpc_stream_send(a->world, &w.base, CALL_TIMEOUT_MS) != 0 ||
      tg_rpc_stream_close_send(a->world) != 0 || send_heartbeat(a) != 0)
    goto fail;
  pthread_mutex_lock(&a->mu);
  a->state.registered = 1;
  a->state.registrations++;
  pthread_cond_broadcast(&a->changed);
  pthread_mutex_unlock(&a->mu);
  return 0;
fail:
  close_streams(a);
  return -1;
}

static void take_world(tg_sim_agent *a, const Tardigrade__V1__WorldUpdate *u) {
  if (!u->world) return;
  const Tardigrade__V1__World *w = u->world;
  int position = u->position;
  pthread_mutex_lock(&a->mu);
  if (w->generation > a->state.generation) {
    a->state.generation = w->generation;
    a->state.world_size = w->world_size;
    a->state.position = position;
    a->state.world_received_ms = tg_sim_mono_ms();
    a->state.worlds_received++;
    snprintf(a->state.reason, sizeof a->state.reason, "%s", w->reason);
    pthread_cond_broadcast(&a->changed);
  }
  pthread_mutex_unlock(&a->mu);
}

static void *agent_main(void *arg) {
  tg_sim_agent *a = arg;
  int64_t next_heartbeat = 0;
  for (;;) {
    pthread_mutex_lock(&a->mu);
    int stopping = a->stopping, silent = a->silent;
    uint32_t interval = a->heartbeat_interval_ms;
    pthread_mutex_unlock(&a->mu);
    if (stopping) break;
    if (!a->world) {
      if (silent || connect_agent(a) != 0) { /* a silent node does not reconnect either */
        sleep_ms(100);
        continue;
      }
      next_heartbeat = tg_sim_mono_ms() + interval;
      continue;
    }
    int64_t wait = next_heartbeat - tg_sim_mono_ms();
    ProtobufCMessage *m = NULL;
    tg_rpc_status st = {0};
    tg_rpc_recv_result r = tg_rpc_stream_recv(a->world, &m, wait > 0 ? wait : 0, &st);
    if (r == TG_RPC_RECV_MESSAGE) {
      take_world(a, (Tardigrade__V1__WorldUpdate *)m);
      protobuf_c_message_free_unpacked(m, NULL);
    } else if (r == TG_RPC_RECV_END) {
      close_streams(a);
      continue;
    }
    /* Rejoin requests and stream ends come on the heartbeat stream. */
    r = tg_rpc_stream_recv(a->heartbeat, &m, 0, &st);
    if (r == TG_RPC_RECV_MESSAGE) {
      int rejoin = ((Tardigrade__V1__HeartbeatResponse *)m)->rejoin;
      protobuf_c_message_free_unpacked(m, NULL);
      if (rejoin) {
        close_streams(a);
        continue;
      }
    } else if (r == TG_RPC_RECV_END) {
      close_streams(a);
      continue;
    }
    if (tg_sim_mono_ms() >= next_heartbeat) {
      next_heartbeat += interval;
      if (tg_sim_mono_ms() > next_heartbeat) next_heartbeat = tg_sim_mono_ms() + interval;
      pthread_mutex_lock(&a->mu); /* silenced while this thread waited? */
      silent = a->silent;
      pthread_mutex_unlock(&a->mu);
      if (!silent && send_heartbeat(a) != 0) close_streams(a);
    }
  }
  close_streams(a);
  return NULL;
}

tg_sim_agent *tg_sim_agent_start(const tg_sim_config *cfg, char *err, size_t errlen) {
  tg_sim_agent *a = calloc(1, sizeof *a);
  if (!a) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  snprintf(a->job_id, sizeof a->job_id, "%s", cfg->job_id ? cfg->job_id : "default");
  snprintf(a->node_id, sizeof a->node_id, "%s", cfg->node_id);
  if (cfg->address)
    snprintf(a->address, sizeof a->address, "%s", cfg->address);
  else
    snprintf(a->address, sizeof a->address, "sim:%s", cfg->node_id);
  a->slots = cfg->slots ? cfg->slots : 1;
  a->healthy = 1;
  a->heartbeat_interval_ms = 500;
  a->state.position = -1;
  pthread_mutex_init(&a->mu, NULL);
  pthread_cond_init(&a->changed, NULL);
  a->client = tg_coord_client_new(cfg->coordinators, NULL, err, errlen);
  if (!a->client) goto fail;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 << 10);
  int rc = pthread_create(&a->thread, &attr, agent_main, a);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    snprintf(err, errlen, "pthread_create: %s", strerror(rc));
    goto fail;
  }
  return a;
fail:
  tg_coord_client_free(a->client);
  pthread_mutex_destroy(&a->mu);
  pthread_cond_destroy(&a->changed);
  free(a);
  return NULL;
}

void tg_sim_agent_free(tg_sim_agent *a) {
  if (!a) return;
  /* Wake a blocked receive: cancelling is safe from any thread. */
  pthread_mutex_lock(&a->mu);
  a->stopping = 1;
  if (a->world) tg_rpc_stream_cancel(a->world);
  if (a->heartbeat) tg_rpc_stream_cancel(a->heartbeat);
  pthread_mutex_unlock(&a->mu);
  pthread_join(a->thread, NULL);
  tg_coord_client_free(a->client);
  pthread_mutex_destroy(&a->mu);
  pthread_cond_destroy(&a->changed);
  free(a);
}

void tg_sim_agent_silence(tg_sim_agent *a, int silent) {
  pthread_mutex_lock(&a->mu);
  a->silent = silent;
  pthread_mutex_unlock(&a->mu);
}

void tg_sim_agent_set_healthy(tg_sim_agent *a, int healthy) {
  pthread_mutex_lock(&a->mu);
  a->healthy = healthy;
  pthread_mutex_unlock(&a->mu);
}

void tg_sim_agent_set_committed_step(tg_sim_agent *a, uint64_t step) {
  pthread_mutex_lock(&a->mu);
  a->committed_step = step;
  pthread_mutex_unlock(&a->mu);
}

tg_rpc_code tg_sim_agent_report_fault(tg_sim_agent *a, int kind, int severity, int rank,
                                      uint64_t generation, const char *detail, tg_rpc_status *st) {
  Tardigrade__V1__Fault f = TARDIGRADE__V1__FAULT__INIT;
  f.kind = kind;
  f.severity = severity;
  f.rank = rank;
  f.detail = (char *)(detail ? detail : "");
  Tardigrade__V1__ReportFaultRequest req = TARDIGRADE__V1__REPORT_FAULT_REQUEST__INIT;
  req.node_id = a->node_id;
  req.fault = &f;
  ProtobufCMessage *m = NULL;
  pthread_mutex_lock(&a->mu);
  req.incarnation = a->state.incarnation;
  req.generation = generation ? generation : a->state.generation;
  f.generation = req.generation;
  tg_rpc_code code = tg_coord_client_call(a->client, "/tardigrade.v1.Coordinator/ReportFault", &req.base,
                                          &tardigrade__v1__report_fault_response__descriptor, &m,
                                          CALL_TIMEOUT_MS, st);
  pthread_mutex_unlock(&a->mu);
  if (m) protobuf_c_message_free_unpacked(m, NULL);
  return code;
}

tg_rpc_code tg_sim_agent_leave(tg_sim_agent *a, tg_rpc_status *st) {
  Tardigrade__V1__LeaveRequest req = TARDIGRADE__V1__LEAVE_REQUEST__INIT;
  req.node_id = a->node_id;
  req.reason = (char *)"test: leaving";
  ProtobufCMessage *m = NULL;
  pthread_mutex_lock(&a->mu);
  req.incarnation = a->state.incarnation;
  tg_rpc_code code = tg_coord_client_call(a->client, "/tardigrade.v1.Coordinator/Leave", &req.base,
                                          &tardigrade__v1__leave_response__descriptor, &m,
                                          CALL_TIMEOUT_MS, st);
  a->silent = 1;
  pthread_mutex_unlock(&a->mu);
  if (m) protobuf_c_message_free_unpacked(m, NULL);
  return code;
}

void tg_sim_agent_state(tg_sim_agent *a, tg_sim_state *out) {
  pthread_mutex_lock(&a->mu);
  *out = a->state;
  pthread_mutex_unlock(&a->mu);
}

/* Waits on `changed` until pred holds or the deadline passes. */
static int wait_for(tg_sim_agent *a, int (*pred)(const tg_sim_agent *, uint64_t), uint64_t arg,
                    int64_t timeout_ms) {
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += timeout_ms / 1000;
  deadline.tv_nsec += (timeout_ms % 1000) * 1000000L;
  if (deadline.tv_nsec >= 1000000000L) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000L;
  }
  int rc = 0;
  pthread_mutex_lock(&a->mu);
  while (!pred(a, arg) && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&a->changed, &a->mu, &deadline);
  int ok = pred(a, arg);
  pthread_mutex_unlock(&a->mu);
  return ok ? 0 : -1;
}

static int has_generation(const tg_sim_agent *a, uint64_t g) { return a->state.generation >= g; }
static int is_registered(const tg_sim_agent *a, uint64_t unused) {
  (void)unused;
  return a->state.registered;
}

int tg_sim_agent_wait_generation(tg_sim_agent *a, uint64_t min_generation, int64_t timeout_ms) {
  return wait_for(a, has_generation, min_generation, timeout_ms);
}

int tg_sim_agent_wait_registered(tg_sim_agent *a, int64_t timeout_ms) {
  return wait_for(a, is_registered, 0, timeout_ms);
}
