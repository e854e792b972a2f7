/* The leader-following client; see client.h. Channels are created lazily,
 * one per address, and kept: reconnecting is gRPC's job. */
#include "coordinator/client.h"
#include "common/clock/clock.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_ENDPOINTS 16
#define HINT "leader at "

struct tg_coord_client {
  char *addr[MAX_ENDPOINTS + 1]; /* the last slot holds a hinted address */
  tg_rpc_channel *ch[MAX_ENDPOINTS + 1];
  size_t n;
  size_t current;
  tg_rpc_tls tls;
  int has_tls;
};

/* Plaintext channels are shared by every client of the process, one per
 * address: a gRPC channel is thread-safe, and a process that runs many
 * clients (the simulated agents of a benchmark, an agent re-creating its
 * client) should not build a resolver and a load balancer for each. */
typedef struct shared_channel {
  char *target;
  tg_rpc_channel *ch;
  int refs;
  struct shared_channel *next;
} shared_channel;

static pthread_mutex_t shared_mu = PTHREAD_MUTEX_INITIALIZER;
static shared_channel *shared_head;

static tg_rpc_channel *shared_get(const char *target) {
  pthread_mutex_lock(&shared_mu);
  shared_channel *s = shared_head;
  while (s && strcmp(s->target, target) != 0) s = s->next;
  if (!s && (s = calloc(1, sizeof *s)) != NULL) {
    char err[256];
    s->target = strdup(target);
    s->ch = s->target ? tg_rpc_channel_new(target, NULL, err, sizeof err) : NULL;
    if (!s->ch) {
      free(s->target);
      free(s);
      s = NULL;
    } else {
      s->next = shared_head;
      shared_head = s;
    }
  }
  if (s) s->refs++;
  pthread_mutex_unlock(&shared_mu);
  return s ? s->ch : NULL;
}

static void shared_put(tg_rpc_channel *ch) {
  pthread_mutex_lock(&shared_mu);
  for (shared_channel **p = &shared_head; *p; p = &(*p)->next) {
    shared_channel *s = *p;
    if (s->ch != ch) continue;
    if (--s->refs == 0) {
      *p = s->next;
      tg_rpc_channel_free(s->ch);
      free(s->target);
      free(s);
    }
    break;
  }
  pthread_mutex_unlock(&shared_mu);
}


tg_coord_client *tg_coord_client_new(const char *endpoints, const tg_rpc_tls *tls, char *err,
                                     size_t errlen) {
  tg_coord_client *cl = calloc(1, sizeof *cl);
  char *copy = endpoints ? strdup(endpoints) : NULL;
  if (!cl || !copy) goto fail;
  char *save = NULL;
  for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    while (*tok == ' ') tok++;
    if (!*tok) continue;
    if (cl->n == MAX_ENDPOINTS) {
      snprintf(err, errlen, "at most %d coordinator endpoints", MAX_ENDPOINTS);
      goto fail;
    }
    if (strlen(tok) > 255 || !(cl->addr[cl->n++] = strdup(tok))) goto fail;
  }
  if (cl->n == 0) {
    snprintf(err, errlen, "no coordinator endpoints given");
    goto fail;
  }
  if (tls) {
    cl->tls = *tls;
    cl->has_tls = 1;
  }
  free(copy);
  return cl;
fail:
  if (err && errlen && !err[0]) snprintf(err, errlen, "bad coordinator endpoints '%s'", endpoints ? endpoints : "");
  free(copy);
  tg_coord_client_free(cl);
  return NULL;
}

static void release(tg_coord_client *cl, tg_rpc_channel *ch) {
  if (cl->has_tls)
    tg_rpc_channel_free(ch);
  else
    shared_put(ch);
}

void tg_coord_client_free(tg_coord_client *cl) {
  if (!cl) return;
  for (size_t i = 0; i <= MAX_ENDPOINTS; i++) {
    if (cl->ch[i]) release(cl, cl->ch[i]);
    free(cl->addr[i]);
  }
  free(cl);
}

static tg_rpc_channel *channel(tg_coord_client *cl, size_t i) {
  if (!cl->ch[i] && !cl->has_tls) {
    cl->ch[i] = shared_get(cl->addr[i]);
  } else if (!cl->ch[i]) {
    char err[256];
    tg_rpc_channel_config cc = {.tls = &cl->tls};
    cl->ch[i] = tg_rpc_channel_new(cl->addr[i], &cc, err, sizeof err);
  }
  return cl->ch[i];
}

/* Remembers a hinted leader address in the spare slot; returns its index. */
static size_t follow_hint(tg_coord_client *cl, const char *message) {
  const char *h = strstr(message, HINT);
  if (!h) return (size_t)-1;
  h += strlen(HINT);
  char addr[256];
  size_t len = strcspn(h, " ;,");
  if (len == 0 || len >= sizeof addr) return (size_t)-1;
  memcpy(addr, h, len);
  addr[len] = '\0';
  for (size_t i = 0; i <= MAX_ENDPOINTS; i++)
    if (cl->addr[i] && strcmp(cl->addr[i], addr) == 0) return i;
  if (cl->ch[MAX_ENDPOINTS]) release(cl, cl->ch[MAX_ENDPOINTS]);
  cl->ch[MAX_ENDPOINTS] = NULL;
  free(cl->addr[MAX_ENDPOINTS]);
  cl->addr[MAX_ENDPOINTS] = strdup(addr);
  return cl->addr[MAX_ENDPOINTS] ? MAX_ENDPOINTS : (size_t)-1;
}

tg_rpc_code tg_coord_client_call(tg_coord_client *cl, const char *path, const ProtobufCMessage *req,
                                 const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                                 int64_t timeout_ms, tg_rpc_status *st) {
  int64_t deadline = tg_clock_mono_ms() + timeout_ms;
  tg_rpc_status local = {0};
  if (!st) st = &local;
  tg_rpc_code code = TG_RPC_UNAVAILABLE;
  tg_rpc_status_set(st, TG_RPC_UNAVAILABLE, "no coordinator answered");
  for (int attempt = 0;; attempt++) {
    int64_t left = deadline - tg_clock_mono_ms();
    if (left <= 0) break;
    tg_rpc_channel *ch = channel(cl, cl->current);
    if (ch) {
      /* Each endpoint gets a fair share of what is left (at least 1 s), so a
       * slow leader is not abandoned, and retried, while it is still answering. */
      int64_t share = left / (int64_t)cl->n;
      int64_t per_call = share > 1000 ? share : (left < 1000 ? left : 1000);
      tg_rpc_call_opts o = {.deadline_ms = per_call};
      code = tg_rpc_unary(ch, path, req, resp_desc, resp, &o, st);
      if (code != TG_RPC_UNAVAILABLE && code != TG_RPC_DEADLINE_EXCEEDED) return code;
    }
    size_t hint = follow_hint(cl, st->message);
    if (hint != (size_t)-1 && hint != cl->current) {
      cl->current = hint;
      continue; /* go straight to the leader */
    }
    tg_coord_client_rotate(cl);
    if (attempt > 0 && cl->current == 0) {
      /* Every endpoint tried once: back off a little before the next round. */
      struct timespec ts = {0, 50 * 1000000};
      nanosleep(&ts, NULL);
    }
  }
  return code == TG_RPC_OK ? TG_RPC_DEADLINE_EXCEEDED : code;
}

tg_rpc_channel *tg_coord_client_channel(tg_coord_client *cl) { return channel(cl, cl->current); }

const char *tg_coord_client_target(const tg_coord_client *cl) { return cl->addr[cl->current]; }

void tg_coord_client_rotate(tg_coord_client *cl) {
  if (cl->current == MAX_ENDPOINTS)
    cl->current = 0;
  else
    cl->current = (cl->current + 1) % cl->n;
}
