/* Network probes between buddy agents.
 *
 * A training job stalls long before anyone notices when the network
 * between two nodes breaks or degrades: a collective waits for the NCCL
 * watchdog, replication to a buddy silently stops. So every agent probes
 * its buddies (the nodes it replicates to, given by the world and changed
 * with it) with the Replication.Probe RPC, a few times a second, each
 * probe with a short deadline, and turns what it sees into faults the
 * agent reports:
 *   - NETWORK_PARTITION (SEVERITY_ERROR): K probes in a row failed, or the
 *     loss over the recent window is above the threshold;
 *   - NETWORK_SLOW (SEVERITY_WARNING): the median RTT over the window is
 *     above an absolute bound, or well above the peer's own baseline;
 * and a "cleared" event for each when it is over (or when the peer stops
 * being a buddy). Per-peer RTT (median, p99, baseline) and loss are also
 * available for the heartbeat and the dashboard.
 *
 * Each peer is probed by a thread of its own, so a dead peer (whose probes
 * all run to their deadline) never delays the others; a buddy list is a
 * handful of nodes. The server side is one registered method on the
 * agent's existing peer-facing tg_rpc_server. */
#ifndef TG_AGENT_PROBE_H
#define TG_AGENT_PROBE_H

#include <stddef.h>
#include <stdint.h>

#include "common/rpc/rpc.h"
#include "proto/tardigrade/v1/common.pb-c.h"

/* Longest node id and address accepted (including the NUL). */
#define TG_PROBE_NODE_ID_MAX 64
#define TG_PROBE_ADDRESS_MAX 128
/* Most peers one prober watches, and most probes in its window. */
#define TG_PROBE_MAX_PEERS 64
#define TG_PROBE_MAX_WINDOW 1024
/* The relative slowness test ignores an excess over the baseline below
 * this, so microsecond jitter on a fast link is never "5x slower". */
#define TG_PROBE_SLOW_MIN_EXCESS_US 1000

/* ---------------------------------------------------------------- server */

typedef struct tg_probe_service tg_probe_service;

/* Registers /tardigrade.v1.Replication/Probe on srv (before it starts):
 * each probe is answered at once with node_id and the probe's own
 * sent_unix_us. The returned handle must outlive the server: free it after
 * tg_rpc_server_free. NULL with a reason on failure. */
tg_probe_service *tg_probe_register_service(tg_rpc_server *srv, const char *node_id, char *err,
                                            size_t errlen);
void tg_probe_service_free(tg_probe_service *svc);

/* ---------------------------------------------------------------- prober */

typedef struct {
  char node_id[TG_PROBE_NODE_ID_MAX];
  char address[TG_PROBE_ADDRESS_MAX];
  uint64_t probes_sent;      /* since the peer was added */
  uint64_t probes_lost;      /* failed, timed out, or answered by the wrong node */
  uint32_t window_probes;    /* probes in the window (at most cfg.window) */
  uint32_t window_lost;
  double loss;               /* window_lost / window_probes; 0 with no probes */
  int64_t rtt_last_us;       /* of the last successful probe; -1 if none yet */
  int64_t rtt_median_us;     /* over the window's successful probes; -1 if none */
  int64_t rtt_p99_us;
  int64_t rtt_baseline_us;   /* slow-moving median while healthy; -1 until known */
  uint32_t consecutive_failures;
  int partitioned;           /* NETWORK_PARTITION raised and not cleared */
  int slow;                  /* NETWORK_SLOW raised and not cleared */
  int64_t last_ok_unix_ms;   /* 0 if never */
  char last_error[128];      /* why the last failed probe failed */
} tg_probe_peer_stats;

typedef struct {
  Tardigrade__V1__FaultKind kind;    /* ..._FAULT_NETWORK_PARTITION or ..._FAULT_NETWORK_SLOW */
  Tardigrade__V1__Severity severity; /* ERROR for a partition, WARNING for slowness */
  int cleared;                       /* 1: the condition is over */
  const char *node_id;               /* the prober's own node */
  tg_probe_peer_stats peer;          /* the peer it is about, at the time */
  int64_t unix_ms;
  char detail[256];                  /* one line: what was seen */
} tg_probe_event;

/* Called on a prober thread (or, for peers removed, on the thread in
 * tg_prober_set_peers), never two at once. It may call tg_prober_stats but
 * not tg_prober_set_peers or tg_prober_free. The event is valid during the
 * call only. */
typedef void (*tg_probe_event_fn)(const tg_probe_event *ev, void *user);

typedef struct {
  const char *node_id;          /* this node; sent in every probe (required) */
  int64_t period_ms;            /* between probes to one peer; 0: 1000 */
  int64_t timeout_ms;           /* deadline of one probe; 0: 500 */
  uint32_t window;              /* probes kept for loss and RTT stats; 0: 20 */
  double loss_threshold;        /* window loss above this is a partition; 0: 0.5 */
  uint32_t consecutive_failures;/* failures in a row that are a partition, and
                                   successes in a row that clear it; 0: 3 */
  int64_t slow_rtt_ms;          /* median RTT above this is slow; 0: no bound */
  double slow_factor;           /* median above this times the baseline is slow
                                   (and TG_PROBE_SLOW_MIN_EXCESS_US above it); 0: 5 */
  tg_probe_event_fn on_event;   /* may be NULL */
  void *user;
} tg_prober_config;

typedef struct {
  const char *node_id;
  const char *address;          /* "host:port" of the peer's agent */
} tg_probe_peer;

typedef struct tg_prober tg_prober;

/* Creates a prober with no peers. NULL with a reason for a bad config. */
tg_prober *tg_prober_new(const tg_prober_config *cfg, char *err, size_t errlen);

/* Replaces the set of peers. Peers kept (same node id and address) keep
 * their statistics and conditions; removed peers stop being probed and
 * their raised conditions are reported cleared; new ones start fresh.
 * Returns 0, or -1 with a reason (empty or too long id or address, a
 * duplicate id, too many peers) and the old set unchanged. Waits at most
 * about timeout_ms for removed peers' probes in flight. */
int tg_prober_set_peers(tg_prober *p, const tg_probe_peer *peers, size_t n, char *err, size_t errlen);

/* Copies up to max peers' statistics into out; returns the number of
 * peers (which may be more than max). */
size_t tg_prober_stats(tg_prober *p, tg_probe_peer_stats *out, size_t max);

/* Stops every probe (waiting at most about timeout_ms) and frees. Raised
 * conditions are not reported cleared: the node is going away. */
void tg_prober_free(tg_prober *p);

/* "NETWORK_PARTITION", "NETWORK_SLOW", or with "_CLEARED" appended. */
const char *tg_probe_event_name(const tg_probe_event *ev);

/* One line for logs: "NETWORK_PARTITION node=a peer=b address=... loss=...
 * rtt_median_us=... detail=...". Returns buf. */
const char *tg_probe_event_format(const tg_probe_event *ev, char *buf, size_t len);

#endif
