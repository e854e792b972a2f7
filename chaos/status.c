/* The status poller; see status.h. One thread, one client, one lock
 * around the newest answer; stop is a condition variable so it returns at
 * once rather than after a period. */
#include "chaos/status.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock/clock.h"
#include "coordinator/client.h"
#include "proto/tardigrade/v1/coordinator.pb-c.h"

#define CALL_TIMEOUT_MS 1000

struct tg_chaos_poller {
  tg_coord_client *client;
  int64_t period_ms;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stop;
  tg_chaos_status latest;
};

static void take_answer(tg_chaos_poller *p, const Tardigrade__V1__StatusResponse *r) {
  tg_chaos_status s;
  pthread_mutex_lock(&p->mu);
  s = p->latest;
  pthread_mutex_unlock(&p->mu);
  s.ok = 1;
  s.answered_unix_ms = tg_clock_unix_ms();
  snprintf(s.leader, sizeof s.leader, "%s", r->leader_id ? r->leader_id : "");
  snprintf(s.job, sizeof s.job, "%s", r->job_id ? r->job_id : "");
  s.generation = r->world ? r->world->generation : 0;
  s.world_size = r->world ? r->world->world_size : 0;
  s.committed_step = r->committed_step;
  s.nodes_total = r->nodes_total;
  s.nodes_active = r->nodes_active;
  s.nodes_spare = r->nodes_spare;
  s.n_nodes = 0;
  /* Position order, whatever order they came in. */
  size_t n = r->world ? r->world->n_nodes : 0;
  for (uint32_t pos = 0; pos < n && s.n_nodes < TG_CHAOS_MAX_NODES; pos++)
    for (size_t i = 0; i < n; i++) {
      const Tardigrade__V1__WorldNode *wn = r->world->nodes[i];
      if (wn && wn->position == pos && wn->node_id) {
        snprintf(s.nodes[s.n_nodes++], TG_CHAOS_NAME_MAX, "%s", wn->node_id);
        break;
      }
    }
  s.polls++;
  pthread_mutex_lock(&p->mu);
  p->latest = s;
  pthread_mutex_unlock(&p->mu);
}

static void *poll_loop(void *arg) {
  tg_chaos_poller *p = arg;
  for (;;) {
    int64_t next = tg_clock_mono_ms() + p->period_ms;
    Tardigrade__V1__StatusRequest req = TARDIGRADE__V1__STATUS_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    tg_rpc_status st = {0};
    if (tg_coord_client_call(p->client, "/tardigrade.v1.Operator/Status", &req.base,
                             &tardigrade__v1__status_response__descriptor, &m, CALL_TIMEOUT_MS, &st) == TG_RPC_OK &&
        m) {
      take_answer(p, (const Tardigrade__V1__StatusResponse *)m);
    } else {
      pthread_mutex_lock(&p->mu);
      p->latest.polls++;
      p->latest.failures++;
      pthread_mutex_unlock(&p->mu);
    }
    if (m) protobuf_c_message_free_unpacked(m, NULL);
    pthread_mutex_lock(&p->mu);
    while (!p->stop && tg_clock_mono_ms() < next) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      int64_t left = next - tg_clock_mono_ms();
      if (left <= 0) break;
      ts.tv_sec += (time_t)(left / 1000);
      ts.tv_nsec += (long)(left % 1000) * 1000000L;
      if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
      }
      pthread_cond_timedwait(&p->cv, &p->mu, &ts);
    }
    int stop = p->stop;
    pthread_mutex_unlock(&p->mu);
    if (stop) return NULL;
  }
}

tg_chaos_poller *tg_chaos_poller_start(const char *coordinators, int64_t period_ms, char *err, size_t errlen) {
  tg_chaos_poller *p = calloc(1, sizeof *p);
  if (!p) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  p->period_ms = period_ms > 0 ? period_ms : 100;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  p->client = tg_coord_client_new(coordinators, NULL, err, errlen);
  if (!p->client) goto err;
  if (pthread_create(&p->thread, NULL, poll_loop, p) != 0) {
    snprintf(err, errlen, "cannot start the status thread");
    goto err;
  }
  return p;
err:
  tg_coord_client_free(p->client);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  free(p);
  return NULL;
}

void tg_chaos_poller_get(tg_chaos_poller *p, tg_chaos_status *out) {
  pthread_mutex_lock(&p->mu);
  *out = p->latest;
  pthread_mutex_unlock(&p->mu);
}

void tg_chaos_poller_stop(tg_chaos_poller *p) {
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  p->stop = 1;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  pthread_join(p->thread, NULL);
  tg_coord_client_free(p->client);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  free(p);
}
