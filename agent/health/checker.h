/* The node agent's health checker: GPU and NIC checks turned into faults.
 *
 * The agent reports a node's health in every heartbeat and tells the
 * coordinator the moment something breaks, so that a bad GPU or a dead link
 * is taken out of the world before the job's collectives hang on it. This
 * module runs the checks and keeps the verdict:
 *
 *   - each check (GPU through gpu.h, NIC through nic.h) runs on its own
 *     worker thread, on its own period, with a deadline per run. A run that
 *     misses its deadline (an NVML call hung on a broken GPU) is itself a
 *     fault, and the checker stops waiting for it: other checks go on, and
 *     the hung run's result is used if it ever comes back;
 *   - observations become faults with the API's enums (tardigrade.v1
 *     FaultKind and Severity, proto/tardigrade/v1/common.proto);
 *   - faults are edge-triggered: the callback hears about a fault once when
 *     it appears and once when it clears. Conditions (a lost GPU, a down
 *     link) are active while the latest completed run still sees them; XID
 *     events are active for xid_hold_ms after the last occurrence (the same
 *     XID again while active is not reported again);
 *   - the node is healthy when no active fault is ERROR or FATAL.
 *
 * What becomes a fault (component / code in brackets):
 *
 *   GPU lost or GPU_IS_LOST       GPU_LOST      FATAL   [gpuN / N]
 *   uncorrectable ECC (volatile)  GPU_ECC       ERROR   [gpuN / N]
 *   row remapping failed          GPU_ROW_REMAP ERROR   [gpuN / N]
 *   row remapping pending         GPU_ROW_REMAP WARNING [gpuN / N]
 *   temperature >= threshold, or
 *     thermal / hw-slowdown throttle GPU_THERMAL WARNING [gpuN / N]
 *   PCIe width below its maximum  GPU_PCIE      WARNING [gpuN / N]
 *   XID event                     GPU_XID       by tg_health_xid_severity
 *                                                       [gpuN / XID]
 *   GPUs cannot be counted        GPU_LOST      ERROR   [gpu / -1]
 *   XIDs cannot be read           GPU_XID       WARNING [gpu / -1]
 *   GPU check missed its deadline GPU_LOST      FATAL   [gpu-check / -1]
 *   link down or missing          NIC_DOWN      ERROR   [IF / 0]
 *   carrier flapping              NIC_FLAP      WARNING [IF / 0]
 *   errors or drops rising        NIC_ERRORS    WARNING [IF / 0]
 *   RDMA port not ACTIVE          NIC_DOWN      ERROR   [DEV/PORT / PORT]
 *   sysfs unreadable              NIC_DOWN      WARNING [nic / -1]
 *   NIC check missed its deadline NIC_DOWN      ERROR   [nic-check / -1]
 *
 * A fault is identified by (kind, severity, component, code); when a
 * condition changes severity (row remapping pending -> failed) the old one
 * clears and the new one is raised.
 *
 * XID severities (tg_health_xid_severity), from NVIDIA's XID catalog:
 *
 *   FATAL   79 fell off the bus, 95 uncontained ECC error
 *   ERROR   38 driver firmware error, 48 double-bit ECC error,
 *           62 micro-controller halt, 63 row-remap / page-retirement
 *           recording event, 64 row-remap / page-retirement recording
 *           failure, 74 NVLink error, 92 high single-bit ECC rate,
 *           94 contained ECC error, 119 GSP RPC timeout, 120 GSP error,
 *           140 unrecovered ECC error
 *   WARNING every other XID (13, 31, 43, 45, ... are usually the
 *           application's fault, not the GPU's)
 *
 * Threads: callbacks run on the checker's monitor thread, never two at a
 * time, never after tg_health_checker_stop returns; they may call
 * tg_health_checker_healthy/active but not stop or free, and should return
 * promptly. The query functions may be called from any thread. */
#ifndef TG_HEALTH_CHECKER_H
#define TG_HEALTH_CHECKER_H

#include <stddef.h>
#include <stdint.h>

#include "agent/health/gpu.h"
#include "agent/health/nic.h"
#include "proto/tardigrade/v1/common.pb-c.h"

#define TG_HEALTH_COMPONENT_LEN 40
#define TG_HEALTH_DETAIL_LEN 200

/* A fault as the checker sees it. Each field maps 1:1 onto the field of the
 * same name in tardigrade.v1.Fault (tg_health_fault_to_proto); the fields
 * the checker cannot know (fault_id, node_id, rank, generation) are the
 * agent's to fill. */
typedef struct {
  Tardigrade__V1__FaultKind kind;
  Tardigrade__V1__Severity severity;
  char component[TG_HEALTH_COMPONENT_LEN]; /* "gpu3", "eth0", "mlx5_0/1" */
  int64_t code;                            /* XID, GPU index, RDMA port; see above */
  char detail[TG_HEALTH_DETAIL_LEN];       /* one line for people */
  int64_t detected_unix_ms;
  int64_t occurred_unix_ms; /* the run or event that saw it first */
} tg_health_fault;

typedef enum {
  TG_HEALTH_RAISED = 1,  /* a new fault; it is in the active list already */
  TG_HEALTH_CLEARED = 2, /* the fault went away; it left the active list */
} tg_health_event;

typedef void (*tg_health_cb)(void *arg, tg_health_event event, const tg_health_fault *fault);

/* Zero means the default in brackets. */
typedef struct {
  tg_gpu *gpu;                /* not owned; NULL: no GPU check */
  uint32_t gpu_period_ms;     /* [5000] */
  uint32_t gpu_deadline_ms;   /* [10000] */
  tg_nic *nic;                /* not owned; NULL: no NIC check */
  uint32_t nic_period_ms;     /* [2000] */
  uint32_t nic_deadline_ms;   /* [5000] */
  int32_t temperature_warn_c; /* [85] */
  uint32_t xid_hold_ms;       /* how long an XID stays active [600000] */
  uint32_t stop_timeout_ms;   /* how long stop waits for a hung check [2000] */
  tg_health_cb on_event;      /* may be NULL */
  void *cb_arg;
} tg_health_config;

typedef struct tg_health_checker tg_health_checker;

/* Copies the configuration; starts nothing. NULL with a reason in err. */
tg_health_checker *tg_health_checker_new(const tg_health_config *cfg, char *err, size_t errlen);

/* Starts the worker and monitor threads; the first run of every check
 * starts at once. Returns 0, or -1 (already started, or no threads). */
int tg_health_checker_start(tg_health_checker *c);

/* Stops the checks: no callback runs after it returns. Waits at most
 * stop_timeout_ms for a check that is running; returns the number of checks
 * still stuck in a backend call (0 when everything was joined). While that
 * is not 0 the backend (gpu, nic) is still in use: call stop again later, or
 * keep the backend alive. Safe to call more than once. */
int tg_health_checker_stop(tg_health_checker *c);

/* Stops (as above) and frees. A check still stuck is left to finish on its
 * own thread, which frees what is left when its call returns. NULL is
 * ignored. */
void tg_health_checker_free(tg_health_checker *c);

/* Runs every check that is not running now, without waiting for its
 * period. */
void tg_health_checker_check_now(tg_health_checker *c);

/* 1 when no active fault is ERROR or FATAL, else 0. */
int tg_health_checker_healthy(tg_health_checker *c);

/* Copies up to cap active faults, oldest first, into out; returns how many
 * are active (which may be more than cap). */
size_t tg_health_checker_active(tg_health_checker *c, tg_health_fault *out, size_t cap);

/* The severity of an XID, from the table above. */
Tardigrade__V1__Severity tg_health_xid_severity(uint32_t xid);

/* Fills msg (initialized here) from f. Strings point into f, so f must
 * outlive msg; rank is -1 and the agent's fields are left empty. */
void tg_health_fault_to_proto(const tg_health_fault *f, Tardigrade__V1__Fault *msg);

#endif
