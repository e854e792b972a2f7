/* A userspace TCP proxy that makes links slow, for tg-chaos's slow_link.
 *
 * netem does not exist on these kernels, so the slow link is made here:
 * tg-chaos puts one route of this proxy on each link it may slow down
 * (a node's agent to each coordinator: registration, heartbeats, fault
 * reports), and the agent is started with the proxy's address instead of
 * the coordinator's. A route listens on a port of its own and forwards
 * every connection to one target; the bytes read from either side are
 * held until `delay_ms` after they arrived, then written on, in order.
 * The delay of a route can change at any time (it applies to bytes read
 * from then on), so a link is fast until a fault slows it and fast again
 * after.
 *
 * One thread polls every listener and connection. Bounded: at most
 * TG_CHAOS_PROXY_MAX_ROUTES routes, TG_CHAOS_PROXY_MAX_CONNS connections
 * per route (more are closed at once), TG_CHAOS_PROXY_QUEUE_BYTES held per
 * direction (reading stops while that much waits). A connection that
 * fails on either side is closed on both. */
#ifndef TG_CHAOS_PROXY_H
#define TG_CHAOS_PROXY_H

#include <stddef.h>
#include <stdint.h>

#define TG_CHAOS_PROXY_MAX_ROUTES 96
#define TG_CHAOS_PROXY_MAX_CONNS 16
#define TG_CHAOS_PROXY_QUEUE_BYTES (4 << 20)
#define TG_CHAOS_PROXY_MAX_DELAY_MS 600000

typedef struct tg_chaos_proxy tg_chaos_proxy;

tg_chaos_proxy *tg_chaos_proxy_new(char *err, size_t errlen);

/* Adds a route before tg_chaos_proxy_start: listens on listen_host (an
 * IPv4 address) at a free port, written to *port, and forwards to
 * target_host:target_port. Returns the route's index, or -1 with a
 * reason. */
int tg_chaos_proxy_add(tg_chaos_proxy *p, const char *listen_host, const char *target_host, int target_port,
                       int *port, char *err, size_t errlen);

/* Starts the thread. 0, or -1 with a reason. */
int tg_chaos_proxy_start(tg_chaos_proxy *p, char *err, size_t errlen);

/* Holds the bytes of route i for delay_ms (0..TG_CHAOS_PROXY_MAX_DELAY_MS;
 * 0: forwarded at once) from now on. Any thread. */
void tg_chaos_proxy_set_delay(tg_chaos_proxy *p, int route, int64_t delay_ms);

/* Stops the thread, closes every socket. NULL is fine. */
void tg_chaos_proxy_free(tg_chaos_proxy *p);

#endif
