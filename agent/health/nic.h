/* NIC health from sysfs: links down, carrier flaps, error counters, RDMA ports.
 *
 * A training job's collectives die with the network, and the network fails
 * at the NIC a node sees: a cable or switch port goes dark (carrier 0), a
 * marginal optic flaps, a link corrupts frames (rx/tx errors climb), or an
 * InfiniBand/RoCE port leaves the ACTIVE state. The kernel exposes all of
 * that in sysfs, so this module reads files; no netlink, no root needed:
 *
 *   ROOT/class/net/IF/{carrier,operstate,carrier_changes}
 *   ROOT/class/net/IF/statistics/{rx_errors,tx_errors,rx_dropped,tx_dropped}
 *   ROOT/class/infiniband/DEV/ports/N/state       e.g. "4: ACTIVE"
 *   ROOT/class/infiniband/DEV/ports/N/phys_state  e.g. "5: LinkUp" (optional)
 *
 * ROOT is "/sys" in production; tests and fake nodes point it at a tree they
 * build (nic_fake.h). Counters are turned into rates over a sliding window
 * of the samples taken at each check, so the module keeps a short history
 * per interface: call tg_nic_check periodically (the checker does), at most
 * TG_NIC_HISTORY times per window.
 *
 * With no interfaces configured, every physical interface is checked (those
 * with ROOT/class/net/IF/device): loopback, bridges, veths and tunnels come
 * and go with containers and say nothing about the node's hardware. A
 * discovered interface that disappears later is reported down (not
 * present), like a configured one that is missing.
 *
 * Threads: one caller at a time. */
#ifndef TG_HEALTH_NIC_H
#define TG_HEALTH_NIC_H

#include <stddef.h>
#include <stdint.h>

#define TG_NIC_NAME_LEN 32
#define TG_NIC_MAX_LINKS 64 /* links and RDMA ports beyond these are not checked */
#define TG_NIC_MAX_PORTS 64
#define TG_NIC_HISTORY 256 /* samples kept per interface */

typedef struct {
  const char *sysfs_root;        /* NULL: "/sys" */
  const char *const *interfaces; /* names to check; NULL or none: every physical one */
  size_t n_interfaces;
  uint32_t window_ms;         /* rate window; 0: 60000 */
  uint32_t flap_changes;      /* carrier_changes rising by this within the window
                                 is a flap; 0: 4 (two down-up cycles) */
  uint64_t errors_per_window; /* rx_errors + tx_errors; 0: 10; UINT64_MAX: off */
  uint64_t drops_per_window;  /* rx_dropped + tx_dropped; 0: 1000; UINT64_MAX: off */
  int skip_rdma;              /* 1: do not look at class/infiniband */
} tg_nic_config;

/* One interface at one check. */
typedef struct {
  char name[TG_NIC_NAME_LEN];
  int present;        /* ROOT/class/net/IF exists */
  int carrier;        /* 1, 0, or -1 when unreadable (admin down) */
  char operstate[16]; /* "up", "down", "unknown", ... */
  uint64_t carrier_changes;
  uint64_t rx_errors, tx_errors, rx_dropped, tx_dropped;
  /* Verdicts. */
  int down; /* not present, carrier 0, or operstate down */
  int flapping;
  uint64_t carrier_changes_in_window;
  int errors_rising; /* errors or drops over their threshold */
  uint64_t errors_in_window;
  uint64_t drops_in_window;
} tg_nic_link;

/* One RDMA port at one check. */
typedef struct {
  char device[TG_NIC_NAME_LEN]; /* e.g. "mlx5_0" */
  uint32_t port;
  char state[32];      /* as read, e.g. "1: DOWN" */
  char phys_state[32]; /* as read, or "" */
  int active;          /* state ACTIVE (4) or ACTIVE_DEFER (5) */
} tg_nic_port;

typedef struct {
  tg_nic_link links[TG_NIC_MAX_LINKS];
  size_t n_links;
  tg_nic_port ports[TG_NIC_MAX_PORTS];
  size_t n_ports;
  int truncated; /* more links or ports than fit */
} tg_nic_report;

typedef struct tg_nic tg_nic;

/* Copies the configuration. NULL with a reason in err on a bad
 * configuration (too many or too long names) or no memory. */
tg_nic *tg_nic_new(const tg_nic_config *cfg, char *err, size_t errlen);
void tg_nic_free(tg_nic *nic);

/* Reads every link and port now and judges it against the history; now_ms
 * is a monotonic clock in milliseconds (the caller's, so tests control
 * time). Returns 0, or -1 with a reason in err when sysfs cannot be read at
 * all (ROOT/class/net missing). */
int tg_nic_check(tg_nic *nic, int64_t now_ms, tg_nic_report *out, char *err, size_t errlen);

#endif
