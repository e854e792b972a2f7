/* Network probes between buddy agents; see probe.h.
 *
 * One thread per peer sends a Probe every period and records the outcome
 * in a ring of the last `window` probes; after each probe the peer's
 * statistics are recomputed from the ring and compared with the
 * conditions (partition, slow), and a change becomes an event. State lives
 * under the prober's one mutex; callbacks run outside it, one at a time
 * (cb_mu), so a callback may read statistics. set_peers and free are
 * serialized by set_mu and are the only places that start and join
 * threads.
 *
 * A failed probe replaces the peer's channel: a link that silently drops
 * packets leaves the old TCP connection stuck in retransmission backoff,
 * while a fresh connection notices a healed link at the next probe. */
#include "agent/probe/probe.h"
#include "common/clock/clock.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log/log.h"
#include "proto/tardigrade/v1/replication.pb-c.h"

#define PROBE_PATH "/tardigrade.v1.Replication/Probe"
#define MAX_REQUEST_BYTES 512

/* ---------------------------------------------------------------- time */


static int64_t unix_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static struct timespec mono_timespec_at_us(int64_t us) {
  struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};
  return ts;
}

/* ---------------------------------------------------------------- server */

struct tg_probe_service {
  tg_rpc_method method;
  char node_id[TG_PROBE_NODE_ID_MAX];
};

static void on_probe(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  const tg_probe_service *svc = user;
  const Tardigrade__V1__ProbeRequest *req = (const Tardigrade__V1__ProbeRequest *)msg;
  if (strlen(req->from_node_id) >= TG_PROBE_NODE_ID_MAX) {
    tg_rpc_call_finish(call, TG_RPC_INVALID_ARGUMENT, "from_node_id is longer than 63 bytes", NULL);
    return;
  }
  Tardigrade__V1__ProbeResponse resp = TARDIGRADE__V1__PROBE_RESPONSE__INIT;
  resp.node_id = (char *)svc->node_id;
  resp.sent_unix_us = req->sent_unix_us;
  tg_rpc_call_finish(call, TG_RPC_OK, NULL, &resp.base);
}

tg_probe_service *tg_probe_register_service(tg_rpc_server *srv, const char *node_id, char *err,
                                            size_t errlen) {
  if (!srv || !node_id || !node_id[0] || strlen(node_id) >= TG_PROBE_NODE_ID_MAX) {
    snprintf(err, errlen, "probe service: need a server and a node id of 1..%d bytes", TG_PROBE_NODE_ID_MAX - 1);
    return NULL;
  }
  tg_probe_service *svc = calloc(1, sizeof *svc);
  if (!svc) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  snprintf(svc->node_id, sizeof svc->node_id, "%s", node_id);
  svc->method = (tg_rpc_method){
      .path = PROBE_PATH,
      .kind = TG_RPC_UNARY,
      .request = &tardigrade__v1__probe_request__descriptor,
      .response = &tardigrade__v1__probe_response__descriptor,
      .max_request_bytes = MAX_REQUEST_BYTES,
      .on_message = on_probe,
      .user = svc,
  };
  if (tg_rpc_server_register(srv, &svc->method) != 0) {
    snprintf(err, errlen, "cannot register %s (already registered, or the server has started)", PROBE_PATH);
    free(svc);
    return NULL;
  }
  return svc;
}

void tg_probe_service_free(tg_probe_service *svc) { free(svc); }

/* ---------------------------------------------------------------- prober state */

typedef struct {
  int ok;
  int64_t rtt_us;
} sample;

typedef struct peer {
  struct tg_prober *owner;
  pthread_t thread;
  int started;
  int stop;              /* under owner->mu */
  pthread_cond_t wake;   /* with owner->mu: stop was set */
  tg_rpc_channel *ch;    /* the peer thread's own */
  unsigned seed;         /* for the first probe's offset */
  /* Under owner->mu: */
  tg_probe_peer_stats st;
  sample *ring;          /* cfg.window entries */
  uint32_t ring_next;
  int64_t *scratch;      /* cfg.window RTTs, for percentiles */
  uint32_t consecutive_ok;
} peer;

struct tg_prober {
  tg_prober_config cfg;
  char node_id[TG_PROBE_NODE_ID_MAX];
  pthread_mutex_t mu;
  pthread_mutex_t set_mu;
  pthread_mutex_t cb_mu;
  peer *peers[TG_PROBE_MAX_PEERS];
  size_t n_peers;
};

/* Events from one probe: at most one per condition. */
typedef struct {
  tg_probe_event ev[2];
  int n;
} event_batch;

/* ---------------------------------------------------------------- statistics */

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* Nearest-rank percentile of n sorted values. */
static int64_t percentile(const int64_t *sorted, uint32_t n, double pct) {
  uint32_t rank = (uint32_t)ceil(pct / 100.0 * n);
  return sorted[rank > 0 ? rank - 1 : 0];
}

/* Recomputes the window statistics from the ring (under mu). */
static void window_stats(const tg_prober *p, peer *pr) {
  uint32_t filled = pr->st.probes_sent < p->cfg.window ? (uint32_t)pr->st.probes_sent : p->cfg.window;
  uint32_t lost = 0, n_ok = 0;
  for (uint32_t i = 0; i < filled; i++) {
    if (pr->ring[i].ok)
      pr->scratch[n_ok++] = pr->ring[i].rtt_us;
    else
      lost++;
  }
  pr->st.window_probes = filled;
  pr->st.window_lost = lost;
  pr->st.loss = filled ? (double)lost / filled : 0;
  pr->st.rtt_median_us = pr->st.rtt_p99_us = -1;
  if (n_ok > 0) {
    qsort(pr->scratch, n_ok, sizeof pr->scratch[0], cmp_i64);
    pr->st.rtt_median_us = percentile(pr->scratch, n_ok, 50);
    pr->st.rtt_p99_us = percentile(pr->scratch, n_ok, 99);
  }
}

static void add_event(const tg_prober *p, const peer *pr, event_batch *b, Tardigrade__V1__FaultKind kind,
                      int cleared, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void add_event(const tg_prober *p, const peer *pr, event_batch *b, Tardigrade__V1__FaultKind kind,
                      int cleared, const char *fmt, ...) {
  tg_probe_event *ev = &b->ev[b->n++];
  memset(ev, 0, sizeof *ev);
  ev->kind = kind;
  ev->severity = kind == TARDIGRADE__V1__FAULT_KIND__FAULT_NETWORK_PARTITION ? TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR
                                                                             : TARDIGRADE__V1__SEVERITY__SEVERITY_WARNING;
  ev->cleared = cleared;
  ev->node_id = p->node_id;
  ev->peer = pr->st;
  ev->unix_ms = unix_us() / 1000;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ev->detail, sizeof ev->detail, fmt, ap);
  va_end(ap);
}

/* Whether the window's median RTT counts as slow, with the reason. */
static int is_slow(const tg_prober *p, const peer *pr, char *why, size_t len) {
  int64_t median = pr->st.rtt_median_us, base = pr->st.rtt_baseline_us;
  uint32_t n_ok = pr->st.window_probes - pr->st.window_lost;
  if (median < 0 || n_ok < 3) return 0;
  if (p->cfg.slow_rtt_ms > 0 && median > p->cfg.slow_rtt_ms * 1000) {
    snprintf(why, len, "median RTT %" PRId64 " us is above the bound of %" PRId64 " ms", median,
             p->cfg.slow_rtt_ms);
    return 1;
  }
  if (base > 0 && (double)median > p->cfg.slow_factor * (double)base &&
      median - base > TG_PROBE_SLOW_MIN_EXCESS_US) {
    snprintf(why, len, "median RTT %" PRId64 " us is over %.1fx this peer's baseline of %" PRId64 " us", median,
             p->cfg.slow_factor, base);
    return 1;
  }
  return 0;
}

/* Records one probe and turns condition changes into events (under mu). */
static void record(tg_prober *p, peer *pr, int ok, int64_t rtt_us, const char *error, event_batch *b) {
  tg_probe_peer_stats *st = &pr->st;
  pr->ring[pr->ring_next] = (sample){ok, rtt_us};
  pr->ring_next = (pr->ring_next + 1) % p->cfg.window;
  st->probes_sent++;
  if (ok) {
    st->consecutive_failures = 0;
    pr->consecutive_ok++;
    st->rtt_last_us = rtt_us;
    st->last_ok_unix_ms = unix_us() / 1000;
  } else {
    st->probes_lost++;
    st->consecutive_failures++;
    pr->consecutive_ok = 0;
    snprintf(st->last_error, sizeof st->last_error, "%s", error);
  }
  window_stats(p, pr);

  uint32_t k = p->cfg.consecutive_failures;
  int lossy = st->window_probes >= p->cfg.window && st->loss > p->cfg.loss_threshold;
  if (!st->partitioned && (st->consecutive_failures >= k || lossy)) {
    st->partitioned = 1;
    if (st->consecutive_failures >= k)
      add_event(p, pr, b, TARDIGRADE__V1__FAULT_KIND__FAULT_NETWORK_PARTITION, 0,
                "%u probes in a row failed (last: %s)", st->consecutive_failures, st->last_error);
    else
      add_event(p, pr, b, TARDIGRADE__V1__FAULT_KIND__FAULT_NETWORK_PARTITION, 0,
                "lost %u of the last %u probes (threshold %.0f%%)", st->window_lost, st->window_probes,
                p->cfg.loss_threshold * 100);
  } else if (st->partitioned && pr->consecutive_ok >= k && !lossy) {
    st->partitioned = 0;
    add_event(p, pr, b, TARDIGRADE__V1__FAULT_KIND__FAULT_NETWORK_PARTITION, 1,
              "%u probes in a row answered; lost %u of the last %u", pr->consecutive_ok, st->window_lost,
              st->window_probes);
  }

  char why[160] = "";
  int slow = is_slow(p, pr, why, sizeof why);
  if (slow && !st->slow) {
    st->slow = 1;
    add_event(p, pr, b, TARDIGRADE__V1__FAULT_KIND__FAULT_NETWORK_SLOW, 0, "%s", why);
  } else if (!slow && st->slow) {
    st->slow = 0;
    add_event(p, pr, b, TARDIGRADE__V1__FAULT_KIND__FAULT_NETWORK_SLOW, 1, "median RTT back to %" PRId64 " us",
              st->rtt_median_us);
  }
  /* The baseline follows the median slowly, and only while the peer is
   * healthy, so a slow spell never becomes the new normal. */
  if (!slow && st->rtt_median_us > 0 && st->window_probes - st->window_lost >= 3) {
    if (st->rtt_baseline_us < 0)
      st->rtt_baseline_us = st->rtt_median_us;
    else
      st->rtt_baseline_us += (st->rtt_median_us - st->rtt_baseline_us) / 16;
  }
}

static void emit(tg_prober *p, const event_batch *b) {
  if (b->n == 0) return;
  pthread_mutex_lock(&p->cb_mu);
  for (int i = 0; i < b->n; i++) {
    const tg_probe_event *ev = &b->ev[i];
    char line[512];
    tg_probe_event_format(ev, line, sizeof line);
    if (ev->cleared)
      TG_INFO("%s", line);
    else if (ev->severity == TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR)
      TG_ERROR("%s", line);
    else
      TG_WARN("%s", line);
    if (p->cfg.on_event) p->cfg.on_event(ev, p->cfg.user);
  }
  pthread_mutex_unlock(&p->cb_mu);
}

/* ---------------------------------------------------------------- probing */

static tg_rpc_channel *open_channel(const tg_prober *p, const peer *pr, char *err, size_t errlen) {
  tg_rpc_channel_config cc = {
      .default_deadline_ms = p->cfg.timeout_ms,
      .max_reconnect_backoff_ms = p->cfg.period_ms < 1000 ? p->cfg.period_ms : 1000,
      .max_message_bytes = 4096,
  };
  return tg_rpc_channel_new(pr->st.address, &cc, err, errlen);
}

/* One probe; 1 with the RTT, or 0 with the reason in error. */
static int probe_once(tg_prober *p, peer *pr, int64_t *rtt_us, char *error, size_t errlen) {
  if (!pr->ch && !(pr->ch = open_channel(p, pr, error, errlen))) return 0;
  Tardigrade__V1__ProbeRequest req = TARDIGRADE__V1__PROBE_REQUEST__INIT;
  req.from_node_id = p->node_id;
  req.sent_unix_us = unix_us();
  tg_rpc_call_opts opts = {.deadline_ms = p->cfg.timeout_ms};
  tg_rpc_status st = {0};
  ProtobufCMessage *msg = NULL;
  int64_t start = tg_clock_mono_us();
  tg_rpc_code code = tg_rpc_unary(pr->ch, PROBE_PATH, &req.base, &tardigrade__v1__probe_response__descriptor,
                                  &msg, &opts, &st);
  *rtt_us = tg_clock_mono_us() - start;
  int ok = 0;
  const Tardigrade__V1__ProbeResponse *resp = (const Tardigrade__V1__ProbeResponse *)msg;
  if (code != TG_RPC_OK)
    snprintf(error, errlen, "%s: %.100s", tg_rpc_code_name(code), st.message);
  else if (strcmp(resp->node_id, pr->st.node_id) != 0)
    snprintf(error, errlen, "answered by node '%.63s', not %s", resp->node_id, pr->st.node_id);
  else if (resp->sent_unix_us != req.sent_unix_us)
    snprintf(error, errlen, "answer does not echo the probe");
  else
    ok = 1;
  if (msg) protobuf_c_message_free_unpacked(msg, NULL);
  if (!ok) {
    /* Start over on a fresh connection next time (see the top). The new
     * channel is made first so gRPC is not shut down in between. */
    char ignored[128];
    tg_rpc_channel *fresh = open_channel(p, pr, ignored, sizeof ignored);
    tg_rpc_channel_free(pr->ch);
    pr->ch = fresh;
  }
  return ok;
}

static void *peer_main(void *arg) {
  peer *pr = arg;
  tg_prober *p = pr->owner;
  int64_t period_us = p->cfg.period_ms * 1000;
  /* Peers added together do not all probe at the same instant. */
  int64_t next = tg_clock_mono_us() + (int64_t)(rand_r(&pr->seed) % (unsigned)(period_us / 4 + 1));
  for (;;) {
    pthread_mutex_lock(&p->mu);
    while (!pr->stop && tg_clock_mono_us() < next) {
      struct timespec at = mono_timespec_at_us(next);
      pthread_cond_timedwait(&pr->wake, &p->mu, &at);
    }
    int stop = pr->stop;
    pthread_mutex_unlock(&p->mu);
    if (stop) break;
    next += period_us;
    int64_t rtt_us = 0;
    char error[128] = "";
    int ok = probe_once(p, pr, &rtt_us, error, sizeof error);
    if (next < tg_clock_mono_us()) next = tg_clock_mono_us(); /* a probe ran past the period */
    event_batch b = {.n = 0};
    pthread_mutex_lock(&p->mu);
    record(p, pr, ok, rtt_us, error, &b);
    pthread_mutex_unlock(&p->mu);
    emit(p, &b);
  }
  return NULL;
}

static void peer_free(peer *pr) {
  if (!pr) return;
  tg_rpc_channel_free(pr->ch);
  pthread_cond_destroy(&pr->wake);
  free(pr->ring);
  free(pr->scratch);
  free(pr);
}

static peer *peer_new(tg_prober *p, const tg_probe_peer *in) {
  peer *pr = calloc(1, sizeof *pr);
  if (!pr) return NULL;
  pr->owner = p;
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&pr->wake, &attr);
  pthread_condattr_destroy(&attr);
  pr->ring = calloc(p->cfg.window, sizeof *pr->ring);
  pr->scratch = calloc(p->cfg.window, sizeof *pr->scratch);
  if (!pr->ring || !pr->scratch) {
    peer_free(pr);
    return NULL;
  }
  snprintf(pr->st.node_id, sizeof pr->st.node_id, "%s", in->node_id);
  snprintf(pr->st.address, sizeof pr->st.address, "%s", in->address);
  pr->st.rtt_last_us = pr->st.rtt_median_us = pr->st.rtt_p99_us = pr->st.rtt_baseline_us = -1;
  pr->seed = (unsigned)tg_clock_mono_us() ^ (unsigned)(uintptr_t)pr;
  return pr;
}

/* Stops and joins the threads of peers (set_mu held, mu not). */
static void stop_peers(tg_prober *p, peer **peers, size_t n) {
  pthread_mutex_lock(&p->mu);
  for (size_t i = 0; i < n; i++) {
    peers[i]->stop = 1;
    pthread_cond_signal(&peers[i]->wake);
  }
  pthread_mutex_unlock(&p->mu);
  for (size_t i = 0; i < n; i++)
    if (peers[i]->started) pthread_join(peers[i]->thread, NULL);
}

/* ---------------------------------------------------------------- public */

static int check_config(tg_prober_config *c, char *err, size_t errlen) {
  if (!c->node_id || !c->node_id[0] || strlen(c->node_id) >= TG_PROBE_NODE_ID_MAX) {
    snprintf(err, errlen, "prober: node_id must be 1..%d bytes", TG_PROBE_NODE_ID_MAX - 1);
    return -1;
  }
  if (c->period_ms == 0) c->period_ms = 1000;
  if (c->timeout_ms == 0) c->timeout_ms = 500;
  if (c->window == 0) c->window = 20;
  if (c->loss_threshold == 0) c->loss_threshold = 0.5;
  if (c->consecutive_failures == 0) c->consecutive_failures = 3;
  if (c->slow_factor == 0) c->slow_factor = 5;
  if (c->period_ms < 10 || c->period_ms > 3600 * 1000)
    snprintf(err, errlen, "prober: period_ms must be 10..3600000, not %" PRId64, c->period_ms);
  else if (c->timeout_ms < 1 || c->timeout_ms > 600 * 1000)
    snprintf(err, errlen, "prober: timeout_ms must be 1..600000, not %" PRId64, c->timeout_ms);
  else if (c->window > TG_PROBE_MAX_WINDOW)
    snprintf(err, errlen, "prober: window must be 1..%d probes, not %u", TG_PROBE_MAX_WINDOW, c->window);
  else if (!(c->loss_threshold > 0 && c->loss_threshold <= 1))
    snprintf(err, errlen, "prober: loss_threshold must be in (0, 1], not %g", c->loss_threshold);
  else if (c->consecutive_failures > TG_PROBE_MAX_WINDOW)
    snprintf(err, errlen, "prober: consecutive_failures must be 1..%d, not %u", TG_PROBE_MAX_WINDOW,
             c->consecutive_failures);
  else if (c->slow_rtt_ms < 0)
    snprintf(err, errlen, "prober: slow_rtt_ms must be >= 0, not %" PRId64, c->slow_rtt_ms);
  else if (!(c->slow_factor > 1 && c->slow_factor < 1e6))
    snprintf(err, errlen, "prober: slow_factor must be above 1, not %g", c->slow_factor);
  else
    return 0;
  return -1;
}

tg_prober *tg_prober_new(const tg_prober_config *cfg, char *err, size_t errlen) {
  if (!cfg) {
    snprintf(err, errlen, "prober: no config");
    return NULL;
  }
  tg_prober_config c = *cfg;
  if (check_config(&c, err, errlen) != 0) return NULL;
  tg_prober *p = calloc(1, sizeof *p);
  if (!p) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  snprintf(p->node_id, sizeof p->node_id, "%s", c.node_id);
  c.node_id = p->node_id;
  p->cfg = c;
  pthread_mutex_init(&p->mu, NULL);
  pthread_mutex_init(&p->set_mu, NULL);
  pthread_mutex_init(&p->cb_mu, NULL);
  return p;
}

static int check_peers(const tg_probe_peer *peers, size_t n, char *err, size_t errlen) {
  if (n > TG_PROBE_MAX_PEERS || (n > 0 && !peers)) {
    snprintf(err, errlen, "prober: at most %d peers, not %zu", TG_PROBE_MAX_PEERS, n);
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    const tg_probe_peer *x = &peers[i];
    if (!x->node_id || !x->node_id[0] || strlen(x->node_id) >= TG_PROBE_NODE_ID_MAX || !x->address ||
        !x->address[0] || strlen(x->address) >= TG_PROBE_ADDRESS_MAX) {
      snprintf(err, errlen, "prober: peer %zu needs a node id of 1..%d bytes and an address of 1..%d", i,
               TG_PROBE_NODE_ID_MAX - 1, TG_PROBE_ADDRESS_MAX - 1);
      return -1;
    }
    for (size_t j = 0; j < i; j++)
      if (strcmp(peers[j].node_id, x->node_id) == 0) {
        snprintf(err, errlen, "prober: peer %s is listed twice", x->node_id);
        return -1;
      }
  }
  return 0;
}

int tg_prober_set_peers(tg_prober *p, const tg_probe_peer *peers, size_t n, char *err, size_t errlen) {
  if (check_peers(peers, n, err, errlen) != 0) return -1;
  peer *next[TG_PROBE_MAX_PEERS] = {0}, *fresh[TG_PROBE_MAX_PEERS], *gone[TG_PROBE_MAX_PEERS];
  size_t n_fresh = 0, n_gone = 0;
  int kept[TG_PROBE_MAX_PEERS] = {0};
  pthread_mutex_lock(&p->set_mu);
  for (size_t i = 0; i < n; i++) {
    for (size_t j = 0; j < p->n_peers && !next[i]; j++) {
      peer *old = p->peers[j];
      if (strcmp(old->st.node_id, peers[i].node_id) == 0 && strcmp(old->st.address, peers[i].address) == 0) {
        next[i] = old;
        kept[j] = 1;
      }
    }
    if (next[i]) continue;
    if (!(next[i] = fresh[n_fresh] = peer_new(p, &peers[i]))) {
      snprintf(err, errlen, "out of memory");
      goto fail;
    }
    n_fresh++;
  }
  for (size_t i = 0; i < n_fresh; i++) {
    int rc = pthread_create(&fresh[i]->thread, NULL, peer_main, fresh[i]);
    if (rc != 0) {
      snprintf(err, errlen, "prober: cannot start a probe thread: %s", strerror(rc));
      goto fail;
    }
    fresh[i]->started = 1;
  }
  for (size_t j = 0; j < p->n_peers; j++)
    if (!kept[j]) gone[n_gone++] = p->peers[j];
  pthread_mutex_lock(&p->mu);
  memcpy(p->peers, next, n * sizeof next[0]);
  p->n_peers = n;
  pthread_mutex_unlock(&p->mu);
  stop_peers(p, gone, n_gone);
  for (size_t i = 0; i < n_gone; i++) {
    /* Its conditions are over as far as this node is concerned. */
    event_batch b = {.n = 0};
    if (gone[i]->st.partitioned)
      add_event(p, gone[i], &b, TARDIGRADE__V1__FAULT_KIND__FAULT_NETWORK_PARTITION, 1, "no longer a peer");
    if (gone[i]->st.slow)
      add_event(p, gone[i], &b, TARDIGRADE__V1__FAULT_KIND__FAULT_NETWORK_SLOW, 1, "no longer a peer");
    emit(p, &b);
    peer_free(gone[i]);
  }
  pthread_mutex_unlock(&p->set_mu);
  return 0;
fail:
  stop_peers(p, fresh, n_fresh);
  for (size_t i = 0; i < n_fresh; i++) peer_free(fresh[i]);
  pthread_mutex_unlock(&p->set_mu);
  return -1;
}

size_t tg_prober_stats(tg_prober *p, tg_probe_peer_stats *out, size_t max) {
  pthread_mutex_lock(&p->mu);
  size_t n = p->n_peers;
  for (size_t i = 0; i < n && i < max; i++) out[i] = p->peers[i]->st;
  pthread_mutex_unlock(&p->mu);
  return n;
}

void tg_prober_free(tg_prober *p) {
  if (!p) return;
  pthread_mutex_lock(&p->set_mu);
  stop_peers(p, p->peers, p->n_peers);
  for (size_t i = 0; i < p->n_peers; i++) peer_free(p->peers[i]);
  p->n_peers = 0;
  pthread_mutex_unlock(&p->set_mu);
  pthread_mutex_destroy(&p->mu);
  pthread_mutex_destroy(&p->set_mu);
  pthread_mutex_destroy(&p->cb_mu);
  free(p);
}

const char *tg_probe_event_name(const tg_probe_event *ev) {
  if (ev->kind == TARDIGRADE__V1__FAULT_KIND__FAULT_NETWORK_PARTITION)
    return ev->cleared ? "NETWORK_PARTITION_CLEARED" : "NETWORK_PARTITION";
  return ev->cleared ? "NETWORK_SLOW_CLEARED" : "NETWORK_SLOW";
}

const char *tg_probe_event_format(const tg_probe_event *ev, char *buf, size_t len) {
  snprintf(buf, len,
           "%s node=%s peer=%s address=%s loss=%.2f rtt_median_us=%" PRId64 " rtt_p99_us=%" PRId64
           " rtt_baseline_us=%" PRId64 " consecutive_failures=%u detail=\"%s\"",
           tg_probe_event_name(ev), ev->node_id, ev->peer.node_id, ev->peer.address, ev->peer.loss,
           ev->peer.rtt_median_us, ev->peer.rtt_p99_us, ev->peer.rtt_baseline_us, ev->peer.consecutive_failures,
           ev->detail);
  return buf;
}
