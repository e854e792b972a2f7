/* A node's session with the coordinators; see session.h. One thread:
 * register (following the leader through coordinator/client), open the
 * heartbeat and world streams, then wait on the world stream until the next
 * heartbeat is due. Any broken stream or a rejoin request means: tear the
 * streams down and register again. */
#include "agent/session/session.h"
#include "common/clock/clock.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log/log.h"
#include "coordinator/client.h"

#define STREAM_DEADLINE_MS (24LL * 3600 * 1000) /* streams are reopened after a day */
#define CALL_TIMEOUT_MS 3000
#define RETRY_MS 100

struct tg_session {
  tg_session_config cfg;
  char job_id[64];
  Tardigrade__V1__NodeInfo *node; /* owned copy */

  pthread_t thread;
  pthread_mutex_t mu; /* guards state, flags, the stream pointers and the client */
  pthread_cond_t changed;
  tg_coord_client *client;
  tg_session_state state;
  uint32_t heartbeat_interval_ms;
  int stopping, silent;

  tg_rpc_stream *heartbeat; /* freed only by the session thread */
  tg_rpc_stream *world;
  int joined; /* tg_session_stop has joined the thread */
};


static void sleep_ms(int64_t ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Registers (mu held: the client and state). */
static int do_register(tg_session *s) {
  Tardigrade__V1__RegisterRequest req = TARDIGRADE__V1__REGISTER_REQUEST__INIT;
  req.job_id = s->job_id;
  req.node = s->node;
  req.previous_incarnation = s->state.incarnation;
  ProtobufCMessage *m = NULL;
  tg_rpc_status st = {0};
  tg_rpc_code code = tg_coord_client_call(s->client, "/tardigrade.v1.Coordinator/RegisterNode", &req.base,
                                          &tardigrade__v1__register_response__descriptor, &m,
                                          CALL_TIMEOUT_MS, &st);
  if (code != TG_RPC_OK) {
    if (code != TG_RPC_UNAVAILABLE && code != TG_RPC_DEADLINE_EXCEEDED)
      TG_WARN("node %s: registration refused: %s: %s", s->node->node_id, tg_rpc_code_name(code),
              st.message);
    return -1;
  }
  Tardigrade__V1__RegisterResponse *r = (Tardigrade__V1__RegisterResponse *)m;
  s->state.incarnation = r->incarnation;
  s->heartbeat_interval_ms = r->heartbeat_interval_ms ? r->heartbeat_interval_ms : 500;
  snprintf(s->state.coordinator, sizeof s->state.coordinator, "%s", tg_coord_client_target(s->client));
  protobuf_c_message_free_unpacked(m, NULL);
  return 0;
}

/* The stream pointers change under mu (tg_session_free cancels them from
 * another thread); only the session thread frees them. */
static void close_streams(tg_session *s) {
  pthread_mutex_lock(&s->mu);
  tg_rpc_stream *hb = s->heartbeat, *w = s->world;
  s->heartbeat = s->world = NULL;
  s->state.registered = 0;
  pthread_cond_broadcast(&s->changed);
  pthread_mutex_unlock(&s->mu);
  if (hb) tg_rpc_stream_free(hb);
  if (w) tg_rpc_stream_free(w);
}

static int send_heartbeat(tg_session *s) {
  Tardigrade__V1__HeartbeatRequest hb = TARDIGRADE__V1__HEARTBEAT_REQUEST__INIT;
  Tardigrade__V1__HealthReport healthy = TARDIGRADE__V1__HEALTH_REPORT__INIT;
  healthy.healthy = 1;
  pthread_mutex_lock(&s->mu);
  hb.node_id = s->node->node_id;
  hb.incarnation = s->state.incarnation;
  hb.generation = s->state.generation;
  pthread_mutex_unlock(&s->mu);
  hb.health = &healthy;
  if (s->cfg.fill_heartbeat) s->cfg.fill_heartbeat(&hb, s->cfg.user);
  int rc = tg_rpc_stream_send(s->heartbeat, &hb.base, CALL_TIMEOUT_MS);
  if (rc == 0) {
    pthread_mutex_lock(&s->mu);
    s->state.last_heartbeat_ms = tg_clock_mono_ms();
    pthread_mutex_unlock(&s->mu);
  }
  return rc;
}

/* Registers and opens both streams; 0 or -1. */
static int connect_session(tg_session *s) {
  tg_rpc_status st = {0};
  pthread_mutex_lock(&s->mu);
  int rc = do_register(s);
  tg_rpc_channel *ch = rc == 0 ? tg_coord_client_channel(s->client) : NULL;
  uint64_t known = s->state.generation, incarnation = s->state.incarnation;
  pthread_mutex_unlock(&s->mu);
  if (!ch) return -1;
  tg_rpc_call_opts o = {.deadline_ms = STREAM_DEADLINE_MS};
  tg_rpc_stream *hb = tg_rpc_stream_open(ch, "/tardigrade.v1.Coordinator/Heartbeat",
                                         &tardigrade__v1__heartbeat_response__descriptor, &o, &st);
  tg_rpc_stream *ws = tg_rpc_stream_open(ch, "/tardigrade.v1.Coordinator/WatchWorld",
                                         &tardigrade__v1__world_update__descriptor, &o, &st);
  pthread_mutex_lock(&s->mu);
  s->heartbeat = hb;
  s->world = ws;
  int stopping = s->stopping;
  pthread_mutex_unlock(&s->mu);
  if (!hb || !ws || stopping) goto fail;
  Tardigrade__V1__WatchWorldRequest w = TARDIGRADE__V1__WATCH_WORLD_REQUEST__INIT;
  w.node_id = s->node->node_id;
  w.incarnation = incarnation;
  w.known_generation = known;
  if (tg_rpc_stream_send(s->world, &w.base, CALL_TIMEOUT_MS) != 0 ||
      tg_rpc_stream_close_send(s->world) != 0 || send_heartbeat(s) != 0)
    goto fail;
  pthread_mutex_lock(&s->mu);
  s->state.registered = 1;
  s->state.registrations++;
  pthread_cond_broadcast(&s->changed);
  char coordinator[256];
  snprintf(coordinator, sizeof coordinator, "%s", s->state.coordinator);
  pthread_mutex_unlock(&s->mu);
  if (s->cfg.on_registered) s->cfg.on_registered(incarnation, coordinator, s->cfg.user);
  return 0;
fail:
  close_streams(s);
  return -1;
}

static void take_world(tg_session *s, const Tardigrade__V1__WorldUpdate *u) {
  if (!u->world) return;
  const Tardigrade__V1__World *w = u->world;
  pthread_mutex_lock(&s->mu);
  int newer = w->generation > s->state.generation;
  if (newer) {
    s->state.generation = w->generation;
    s->state.world_size = w->world_size;
    s->state.position = u->position;
    s->state.world_received_ms = tg_clock_mono_ms();
    s->state.worlds_received++;
    snprintf(s->state.reason, sizeof s->state.reason, "%s", w->reason);
    pthread_cond_broadcast(&s->changed);
  }
  pthread_mutex_unlock(&s->mu);
  if (newer && s->cfg.on_world) s->cfg.on_world(u, s->cfg.user);
}

/* Reads what the coordinator says on the heartbeat stream without waiting;
 * returns -1 when the session must register again. */
static int read_heartbeat_replies(tg_session *s) {
  for (;;) {
    ProtobufCMessage *m = NULL;
    tg_rpc_status st = {0};
    tg_rpc_recv_result r = tg_rpc_stream_recv(s->heartbeat, &m, 0, &st);
    if (r == TG_RPC_RECV_TIMEOUT) return 0;
    if (r == TG_RPC_RECV_END) return -1;
    Tardigrade__V1__HeartbeatResponse *hr = (Tardigrade__V1__HeartbeatResponse *)m;
    int rejoin = hr->rejoin;
    pthread_mutex_lock(&s->mu);
    if (hr->node_state) s->state.node_state = hr->node_state;
    pthread_mutex_unlock(&s->mu);
    protobuf_c_message_free_unpacked(m, NULL);
    if (rejoin) return -1;
  }
}

static void *session_main(void *arg) {
  tg_session *s = arg;
  int64_t next_heartbeat = 0;
  for (;;) {
    pthread_mutex_lock(&s->mu);
    int stopping = s->stopping, silent = s->silent;
    uint32_t interval = s->heartbeat_interval_ms;
    pthread_mutex_unlock(&s->mu);
    if (stopping) break;
    if (!s->world) {
      /* A node that is cut off does not reconnect either. */
      if (silent || connect_session(s) != 0) {
        sleep_ms(RETRY_MS);
        continue;
      }
      next_heartbeat = tg_clock_mono_ms() + interval;
      continue;
    }
    int64_t wait = next_heartbeat - tg_clock_mono_ms();
    ProtobufCMessage *m = NULL;
    tg_rpc_status st = {0};
    tg_rpc_recv_result r = tg_rpc_stream_recv(s->world, &m, wait > 0 ? wait : 0, &st);
    if (r == TG_RPC_RECV_MESSAGE) {
      take_world(s, (Tardigrade__V1__WorldUpdate *)m);
      protobuf_c_message_free_unpacked(m, NULL);
    } else if (r == TG_RPC_RECV_END) {
      close_streams(s);
      continue;
    }
    if (read_heartbeat_replies(s) != 0) {
      close_streams(s);
      continue;
    }
    pthread_mutex_lock(&s->mu);
    int due = tg_clock_mono_ms() >= next_heartbeat;
    silent = s->silent; /* cut off while this thread waited? */
    pthread_mutex_unlock(&s->mu);
    if (due) {
      next_heartbeat = tg_clock_mono_ms() + interval;
      if (!silent && send_heartbeat(s) != 0) close_streams(s);
    }
  }
  close_streams(s);
  return NULL;
}

static Tardigrade__V1__NodeInfo *copy_node(const Tardigrade__V1__NodeInfo *n) {
  size_t len = tardigrade__v1__node_info__get_packed_size(n);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) return NULL;
  tardigrade__v1__node_info__pack(n, buf);
  Tardigrade__V1__NodeInfo *copy = tardigrade__v1__node_info__unpack(NULL, len, buf);
  free(buf);
  return copy;
}

tg_session *tg_session_start(const tg_session_config *cfg, char *err, size_t errlen) {
  if (!cfg || !cfg->node || !cfg->node->node_id || !cfg->node->node_id[0]) {
    snprintf(err, errlen, "a session needs a node with a node_id");
    return NULL;
  }
  tg_session *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  s->cfg = *cfg;
  s->cfg.node = NULL;
  snprintf(s->job_id, sizeof s->job_id, "%s", cfg->job_id ? cfg->job_id : "default");
  s->state.incarnation = cfg->previous_incarnation;
  s->state.position = -1;
  s->heartbeat_interval_ms = 500;
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->changed, NULL);
  s->node = copy_node(cfg->node);
  if (!s->node) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  s->client = tg_coord_client_new(cfg->coordinators, cfg->tls, err, errlen);
  if (!s->client) goto fail;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 << 10);
  int rc = pthread_create(&s->thread, &attr, session_main, s);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    snprintf(err, errlen, "pthread_create: %s", strerror(rc));
    goto fail;
  }
  return s;
fail:
  tg_coord_client_free(s->client);
  if (s->node) protobuf_c_message_free_unpacked(&s->node->base, NULL);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->changed);
  free(s);
  return NULL;
}

void tg_session_stop(tg_session *s) {
  if (!s || s->joined) return;
  /* Wake a blocked receive: cancelling is safe from any thread. */
  pthread_mutex_lock(&s->mu);
  s->stopping = 1;
  if (s->world) tg_rpc_stream_cancel(s->world);
  if (s->heartbeat) tg_rpc_stream_cancel(s->heartbeat);
  pthread_mutex_unlock(&s->mu);
  pthread_join(s->thread, NULL);
  s->joined = 1;
}

void tg_session_free(tg_session *s) {
  if (!s) return;
  tg_session_stop(s);
  tg_coord_client_free(s->client);
  protobuf_c_message_free_unpacked(&s->node->base, NULL);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->changed);
  free(s);
}

void tg_session_silence(tg_session *s, int silent) {
  pthread_mutex_lock(&s->mu);
  s->silent = silent;
  pthread_mutex_unlock(&s->mu);
}

tg_rpc_code tg_session_report_fault(tg_session *s, const Tardigrade__V1__Fault *fault,
                                    uint64_t generation, tg_rpc_status *st) {
  Tardigrade__V1__Fault f = *fault;
  Tardigrade__V1__ReportFaultRequest req = TARDIGRADE__V1__REPORT_FAULT_REQUEST__INIT;
  req.node_id = s->node->node_id;
  req.fault = &f;
  ProtobufCMessage *m = NULL;
  pthread_mutex_lock(&s->mu);
  req.incarnation = s->state.incarnation;
  req.generation = generation ? generation : s->state.generation;
  f.generation = req.generation;
  f.node_id = s->node->node_id;
  tg_rpc_code code = tg_coord_client_call(s->client, "/tardigrade.v1.Coordinator/ReportFault", &req.base,
                                          &tardigrade__v1__report_fault_response__descriptor, &m,
                                          CALL_TIMEOUT_MS, st);
  pthread_mutex_unlock(&s->mu);
  if (m) protobuf_c_message_free_unpacked(m, NULL);
  return code;
}

tg_rpc_code tg_session_leave(tg_session *s, const char *reason, tg_rpc_status *st) {
  Tardigrade__V1__LeaveRequest req = TARDIGRADE__V1__LEAVE_REQUEST__INIT;
  req.node_id = s->node->node_id;
  req.reason = (char *)(reason ? reason : "");
  ProtobufCMessage *m = NULL;
  pthread_mutex_lock(&s->mu);
  req.incarnation = s->state.incarnation;
  tg_rpc_code code = tg_coord_client_call(s->client, "/tardigrade.v1.Coordinator/Leave", &req.base,
                                          &tardigrade__v1__leave_response__descriptor, &m,
                                          CALL_TIMEOUT_MS, st);
  s->silent = 1;
  pthread_mutex_unlock(&s->mu);
  if (m) protobuf_c_message_free_unpacked(m, NULL);
  return code;
}

void tg_session_get_state(tg_session *s, tg_session_state *out) {
  pthread_mutex_lock(&s->mu);
  *out = s->state;
  pthread_mutex_unlock(&s->mu);
}

/* Waits on `changed` until pred holds or the deadline passes. */
static int wait_for(tg_session *s, int (*pred)(const tg_session *, uint64_t), uint64_t arg,
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
  pthread_mutex_lock(&s->mu);
  while (!pred(s, arg) && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&s->changed, &s->mu, &deadline);
  int ok = pred(s, arg);
  pthread_mutex_unlock(&s->mu);
  return ok ? 0 : -1;
}

static int has_generation(const tg_session *s, uint64_t g) { return s->state.generation >= g; }
static int is_registered(const tg_session *s, uint64_t unused) {
  (void)unused;
  return s->state.registered;
}

int tg_session_wait_generation(tg_session *s, uint64_t min_generation, int64_t timeout_ms) {
  return wait_for(s, has_generation, min_generation, timeout_ms);
}

int tg_session_wait_registered(tg_session *s, int64_t timeout_ms) {
  return wait_for(s, is_registered, 0, timeout_ms);
}
