/* The GPU device interface the node agent's health checks read.
 *
 * A GPU fails in a handful of ways that matter to a training job: it raises
 * an XID, its memory reports uncorrectable ECC errors or fails to remap a
 * row, it throttles or overheats, its PCIe link trains narrower than it
 * should, or it falls off the bus. This header is the one place those are
 * asked about. It is a small vtable (tg_gpu_ops) behind a handle (tg_gpu),
 * with two backends:
 *
 *   - NVML (tg_gpu_nvml_open, below): the real thing, loaded at run time
 *     with dlopen("libnvidia-ml.so.1"), so the agent builds and runs on
 *     machines without the NVIDIA driver and fails cleanly there;
 *   - a fake driven by files (gpu_fake.h), so tests and tg-chaos can inject
 *     faults into a running agent.
 *
 * This is the only layer of the health checks with a fake; everything above
 * it (checker.h) runs the same code in tests and in production. A caller may
 * also supply its own tg_gpu_ops (tests do, to misbehave on purpose).
 *
 * Threads: a backend is used by one thread at a time. Any call may block
 * for a long time on a broken GPU (NVML does); the checker bounds that by
 * running the calls on a worker thread with a deadline. */
#ifndef TG_HEALTH_GPU_H
#define TG_HEALTH_GPU_H

#include <stddef.h>
#include <stdint.h>

/* Throttle reasons that say something about the GPU's health. Idle clocks,
 * application clock settings and sync boost are normal operation and are
 * never reported. */
#define TG_GPU_THROTTLE_THERMAL 0x1u     /* software or hardware thermal slowdown */
#define TG_GPU_THROTTLE_POWER 0x2u       /* software power cap or hardware power brake */
#define TG_GPU_THROTTLE_HW_SLOWDOWN 0x4u /* hardware slowdown (clocks halved or worse) */

/* Fixed sizes so that a status snapshot is a plain value. NVML's UUID and
 * name buffers are 96 bytes (NVML_DEVICE_UUID_V2_BUFFER_SIZE). */
#define TG_GPU_UUID_LEN 96
#define TG_GPU_NAME_LEN 96

/* The device index of an XID whose device the backend could not tell. */
#define TG_GPU_INDEX_UNKNOWN UINT32_MAX

/* One device at one moment. Fields a device cannot report are left at their
 * "unknown" values: temperature_c -1, PCIe numbers 0; counters and flags 0. */
typedef struct {
  uint32_t index;
  char uuid[TG_GPU_UUID_LEN];
  char name[TG_GPU_NAME_LEN];
  int32_t temperature_c;
  uint32_t throttle;          /* TG_GPU_THROTTLE_* bits */
  uint64_t ecc_uncorrectable; /* volatile count: since the driver loaded */
  int row_remap_failure;      /* a row remapping has failed: replace the GPU */
  int row_remap_pending;      /* a remapping waits for a GPU reset */
  uint32_t pcie_width;        /* current link width (lanes) */
  uint32_t pcie_width_max;
  uint32_t pcie_gen; /* current link generation */
  uint32_t pcie_gen_max;
  int lost; /* fell off the bus, or every query fails with GPU_IS_LOST */
} tg_gpu_status;

/* One XID event, delivered once. */
typedef struct {
  uint32_t xid;
  uint32_t device_index; /* or TG_GPU_INDEX_UNKNOWN */
} tg_gpu_xid;

/* What a backend implements. Every function returns 0 on success or -1
 * with a reason in err (NUL-terminated, truncated to errlen). A device that
 * is lost is not an error of status(): it is status->lost = 1. */
typedef struct {
  const char *name; /* "nvml", "fake", ... for logs */
  int (*count)(void *impl, uint32_t *n, char *err, size_t errlen);
  int (*status)(void *impl, uint32_t index, tg_gpu_status *out, char *err, size_t errlen);
  /* Moves up to cap new XID events into out, sets *n; never waits. */
  int (*drain_xids)(void *impl, tg_gpu_xid *out, size_t cap, size_t *n, char *err, size_t errlen);
  void (*close)(void *impl);
} tg_gpu_ops;

/* A backend instance: its functions and their state. */
typedef struct tg_gpu {
  const tg_gpu_ops *ops;
  void *impl;
} tg_gpu;

/* Wraps a caller's backend (impl is passed to every op, and ops->close, when
 * not NULL, is called by tg_gpu_close). Returns NULL when out of memory. */
tg_gpu *tg_gpu_new(const tg_gpu_ops *ops, void *impl);

/* Closes the backend and frees the handle; NULL is ignored. */
void tg_gpu_close(tg_gpu *gpu);

/* The number of devices. */
int tg_gpu_count(tg_gpu *gpu, uint32_t *n, char *err, size_t errlen);

/* A snapshot of device `index` (0 <= index < count). */
int tg_gpu_query(tg_gpu *gpu, uint32_t index, tg_gpu_status *out, char *err, size_t errlen);

/* XID events that arrived since the last call, at most cap of them (the rest
 * stay queued for the next call). */
int tg_gpu_drain_xids(tg_gpu *gpu, tg_gpu_xid *out, size_t cap, size_t *n, char *err,
                      size_t errlen);

/* Loads NVML from `library` (NULL: "libnvidia-ml.so.1", found the way the
 * dynamic linker finds libraries), initializes it and registers for XID
 * events on every device. Returns NULL with a reason in err when the library
 * is absent, lacks a needed function, or nvmlInit fails (no driver). The
 * build needs neither NVML's headers nor its library. */
tg_gpu *tg_gpu_nvml_open(const char *library, char *err, size_t errlen);

#endif
