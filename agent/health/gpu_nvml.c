/* The NVML backend of gpu.h, with NVML loaded at run time.
 *
 * The agent must build on machines without the NVIDIA driver (CI, laptops,
 * CPU-only clusters) and start there, so NVML is never linked: the library
 * is opened with dlopen and the dozen functions used are looked up with
 * dlsym. NVML's C ABI is stable, so the few types and constants used are
 * declared here from its documentation instead of including nvml.h.
 *
 * Only nvmlInit_v2, nvmlShutdown, nvmlErrorString, nvmlDeviceGetCount_v2 and
 * nvmlDeviceGetHandleByIndex_v2 are required. Every other function is
 * optional: an old driver without row remapping, or a consumer GPU without
 * ECC, reports those fields as unknown instead of failing the whole check.
 * NVML_ERROR_GPU_IS_LOST (and RESET_REQUIRED) from any query marks the
 * device lost. XIDs come from one NVML event set registered for
 * nvmlEventTypeXidCriticalError on every device, polled without waiting. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/health/gpu.h"

/* From NVML's documented ABI. nvmlReturn_t and the other enums are C enums
 * (int-sized); handles are opaque pointers. */
typedef int nvml_return;
typedef struct nvml_device_st *nvml_device;
typedef struct nvml_event_set_st *nvml_event_set;

typedef struct {
  nvml_device device;
  unsigned long long event_type;
  unsigned long long event_data; /* the XID for an XID event */
  unsigned int gpu_instance_id;
  unsigned int compute_instance_id;
} nvml_event_data;

enum {
  NVML_SUCCESS = 0,
  NVML_ERROR_NOT_SUPPORTED = 3,
  NVML_ERROR_TIMEOUT = 10,
  NVML_ERROR_GPU_IS_LOST = 15,
  NVML_ERROR_RESET_REQUIRED = 16,
};
enum { NVML_TEMPERATURE_GPU = 0 };
enum { NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1 };
enum { NVML_VOLATILE_ECC = 0 };

#define NVML_EVENT_TYPE_XID_CRITICAL_ERROR 0x8ULL

/* nvmlClocksThrottleReason* bits. */
#define NVML_THROTTLE_SW_POWER_CAP 0x4ULL
#define NVML_THROTTLE_HW_SLOWDOWN 0x8ULL
#define NVML_THROTTLE_SW_THERMAL 0x20ULL
#define NVML_THROTTLE_HW_THERMAL 0x40ULL
#define NVML_THROTTLE_HW_POWER_BRAKE 0x80ULL

/* Devices beyond this are not watched (no machine has that many). */
#define MAX_DEVICES 64
#define DEFAULT_LIBRARY "libnvidia-ml.so.1"

typedef struct {
  void *lib;
  int initialized;
  nvml_event_set events; /* NULL when XID events are unavailable */
  uint32_t n_devices;
  nvml_device devices[MAX_DEVICES]; /* NULL until a handle was obtained */

  nvml_return (*init)(void);
  nvml_return (*shutdown)(void);
  const char *(*error_string)(nvml_return);
  nvml_return (*get_count)(unsigned int *);
  nvml_return (*get_handle)(unsigned int, nvml_device *);
  nvml_return (*get_uuid)(nvml_device, char *, unsigned int);
  nvml_return (*get_name)(nvml_device, char *, unsigned int);
  nvml_return (*get_temperature)(nvml_device, int, unsigned int *);
  nvml_return (*get_throttle)(nvml_device, unsigned long long *);
  nvml_return (*get_ecc)(nvml_device, int, int, unsigned long long *);
  nvml_return (*get_remapped_rows)(nvml_device, unsigned int *, unsigned int *, unsigned int *,
                                   unsigned int *);
  nvml_return (*get_pcie_width)(nvml_device, unsigned int *);
  nvml_return (*get_pcie_width_max)(nvml_device, unsigned int *);
  nvml_return (*get_pcie_gen)(nvml_device, unsigned int *);
  nvml_return (*get_pcie_gen_max)(nvml_device, unsigned int *);
  nvml_return (*event_set_create)(nvml_event_set *);
  nvml_return (*register_events)(nvml_device, unsigned long long, nvml_event_set);
  nvml_return (*event_set_wait)(nvml_event_set, nvml_event_data *, unsigned int);
  nvml_return (*event_set_free)(nvml_event_set);
} nvml;

/* dlsym returns an object pointer; POSIX guarantees it converts to a
 * function pointer, and memcpy says so without a type-punning warning. */
#define LOAD(state, field, symbol)               \
  do {                                           \
    void *sym_ = dlsym((state)->lib, (symbol));  \
    memcpy(&(state)->field, &sym_, sizeof sym_); \
  } while (0)

static const char *nvml_error(const nvml *n, nvml_return rc) {
  const char *s = n->error_string != NULL ? n->error_string(rc) : NULL;
  return s != NULL ? s : "unknown NVML error";
}

static int is_lost(nvml_return rc) {
  return rc == NVML_ERROR_GPU_IS_LOST || rc == NVML_ERROR_RESET_REQUIRED;
}

static void nvml_close(void *impl) {
  nvml *n = impl;
  if (n == NULL) return;
  if (n->events != NULL && n->event_set_free != NULL) n->event_set_free(n->events);
  if (n->initialized) n->shutdown();
  if (n->lib != NULL) dlclose(n->lib);
  free(n);
}

/* A handle for device i, fetched again if an earlier try failed (a device
 * can come back after a reset). NULL when the device cannot be reached. */
static nvml_device device(nvml *n, uint32_t i, nvml_return *rc) {
  *rc = NVML_SUCCESS;
  if (i < MAX_DEVICES && n->devices[i] != NULL) return n->devices[i];
  nvml_device d = NULL;
  *rc = n->get_handle(i, &d);
  if (*rc != NVML_SUCCESS) return NULL;
  if (i < MAX_DEVICES) n->devices[i] = d;
  return d;
}

static int nvml_count(void *impl, uint32_t *out, char *err, size_t errlen) {
  nvml *n = impl;
  unsigned int live = 0;
  nvml_return rc = n->get_count(&live);
  if (rc != NVML_SUCCESS && n->n_devices == 0) {
    snprintf(err, errlen, "nvmlDeviceGetCount_v2: %s", nvml_error(n, rc));
    return -1;
  }
  /* A device that fell off the bus may vanish from the count; keep asking
   * about it so that it is reported lost rather than forgotten. */
  *out = live > n->n_devices ? live : n->n_devices;
  if (*out > MAX_DEVICES) *out = MAX_DEVICES;
  return 0;
}

/* Applies one query's result: lost on GPU_IS_LOST, else ok or unknown. */
static int query_ok(tg_gpu_status *st, nvml_return rc) {
  if (is_lost(rc)) st->lost = 1;
  return rc == NVML_SUCCESS;
}

static int nvml_status(void *impl, uint32_t index, tg_gpu_status *st, char *err, size_t errlen) {
  nvml *n = impl;
  nvml_return rc;
  nvml_device d = device(n, index, &rc);
  if (d == NULL) {
    /* No handle: the device is unreachable, whatever NVML calls it. */
    st->lost = 1;
    snprintf(st->name, sizeof st->name, "unreachable: %s", nvml_error(n, rc));
    return 0;
  }
  if (n->get_uuid != NULL) query_ok(st, n->get_uuid(d, st->uuid, sizeof st->uuid));
  if (n->get_name != NULL) query_ok(st, n->get_name(d, st->name, sizeof st->name));
  st->uuid[sizeof st->uuid - 1] = '\0';
  st->name[sizeof st->name - 1] = '\0';

  unsigned int u = 0, u2 = 0, u3 = 0, u4 = 0;
  unsigned long long ull = 0;
  if (n->get_temperature != NULL && query_ok(st, n->get_temperature(d, NVML_TEMPERATURE_GPU, &u)))
    st->temperature_c = (int32_t)u;
  if (n->get_throttle != NULL && query_ok(st, n->get_throttle(d, &ull))) {
    if (ull & (NVML_THROTTLE_SW_THERMAL | NVML_THROTTLE_HW_THERMAL))
      st->throttle |= TG_GPU_THROTTLE_THERMAL;
    if (ull & (NVML_THROTTLE_SW_POWER_CAP | NVML_THROTTLE_HW_POWER_BRAKE))
      st->throttle |= TG_GPU_THROTTLE_POWER;
    if (ull & NVML_THROTTLE_HW_SLOWDOWN) st->throttle |= TG_GPU_THROTTLE_HW_SLOWDOWN;
  }
  ull = 0;
  if (n->get_ecc != NULL &&
      query_ok(st, n->get_ecc(d, NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC, &ull)))
    st->ecc_uncorrectable = ull;
  if (n->get_remapped_rows != NULL && query_ok(st, n->get_remapped_rows(d, &u, &u2, &u3, &u4))) {
    st->row_remap_pending = u3 != 0;
    st->row_remap_failure = u4 != 0;
  }
  if (n->get_pcie_width != NULL && query_ok(st, n->get_pcie_width(d, &u))) st->pcie_width = u;
  if (n->get_pcie_width_max != NULL && query_ok(st, n->get_pcie_width_max(d, &u)))
    st->pcie_width_max = u;
  if (n->get_pcie_gen != NULL && query_ok(st, n->get_pcie_gen(d, &u))) st->pcie_gen = u;
  if (n->get_pcie_gen_max != NULL && query_ok(st, n->get_pcie_gen_max(d, &u))) st->pcie_gen_max = u;
  (void)err;
  (void)errlen;
  return 0;
}

static uint32_t index_of(const nvml *n, nvml_device d) {
  for (uint32_t i = 0; i < n->n_devices && i < MAX_DEVICES; i++)
    if (n->devices[i] == d) return i;
  return TG_GPU_INDEX_UNKNOWN;
}

static int nvml_drain_xids(void *impl, tg_gpu_xid *out, size_t cap, size_t *count, char *err,
                           size_t errlen) {
  nvml *n = impl;
  if (n->events == NULL) return 0;
  while (*count < cap) {
    nvml_event_data data;
    memset(&data, 0, sizeof data);
    nvml_return rc = n->event_set_wait(n->events, &data, 0);
    if (rc == NVML_ERROR_TIMEOUT) return 0; /* nothing more queued */
    if (is_lost(rc)) return 0;              /* status() reports the device lost */
    if (rc != NVML_SUCCESS) {
      snprintf(err, errlen, "nvmlEventSetWait_v2: %s", nvml_error(n, rc));
      return -1;
    }
    if ((data.event_type & NVML_EVENT_TYPE_XID_CRITICAL_ERROR) == 0) continue;
    out[*count].xid = (uint32_t)data.event_data;
    out[*count].device_index = index_of(n, data.device);
    (*count)++;
  }
  return 0;
}

static const tg_gpu_ops nvml_ops = {
    .name = "nvml",
    .count = nvml_count,
    .status = nvml_status,
    .drain_xids = nvml_drain_xids,
    .close = nvml_close,
};

static void load_optional(nvml *n) {
  LOAD(n, get_uuid, "nvmlDeviceGetUUID");
  LOAD(n, get_name, "nvmlDeviceGetName");
  LOAD(n, get_temperature, "nvmlDeviceGetTemperature");
  LOAD(n, get_throttle, "nvmlDeviceGetCurrentClocksThrottleReasons");
  if (n->get_throttle == NULL) LOAD(n, get_throttle, "nvmlDeviceGetCurrentClocksEventReasons");
  LOAD(n, get_ecc, "nvmlDeviceGetTotalEccErrors");
  LOAD(n, get_remapped_rows, "nvmlDeviceGetRemappedRows");
  LOAD(n, get_pcie_width, "nvmlDeviceGetCurrPcieLinkWidth");
  LOAD(n, get_pcie_width_max, "nvmlDeviceGetMaxPcieLinkWidth");
  LOAD(n, get_pcie_gen, "nvmlDeviceGetCurrPcieLinkGeneration");
  LOAD(n, get_pcie_gen_max, "nvmlDeviceGetMaxPcieLinkGeneration");
  LOAD(n, event_set_create, "nvmlEventSetCreate");
  LOAD(n, register_events, "nvmlDeviceRegisterEvents");
  LOAD(n, event_set_wait, "nvmlEventSetWait_v2");
  LOAD(n, event_set_free, "nvmlEventSetFree");
}

/* XID events on every device that supports them; without the event API
 * (or with no device supporting it) XIDs are simply not reported. */
static void register_xids(nvml *n) {
  if (n->event_set_create == NULL || n->register_events == NULL || n->event_set_wait == NULL ||
      n->event_set_free == NULL)
    return;
  if (n->event_set_create(&n->events) != NVML_SUCCESS) {
    n->events = NULL;
    return;
  }
  int registered = 0;
  for (uint32_t i = 0; i < n->n_devices; i++) {
    nvml_return rc;
    nvml_device d = device(n, i, &rc);
    if (d != NULL &&
        n->register_events(d, NVML_EVENT_TYPE_XID_CRITICAL_ERROR, n->events) == NVML_SUCCESS)
      registered++;
  }
  if (registered == 0) {
    n->event_set_free(n->events);
    n->events = NULL;
  }
}

tg_gpu *tg_gpu_nvml_open(const char *library, char *err, size_t errlen) {
  const char *path = library != NULL ? library : DEFAULT_LIBRARY;
  tg_gpu *gpu = NULL;
  nvml *n = calloc(1, sizeof *n);
  if (n == NULL) {
    snprintf(err, errlen, "out of memory");
    goto err;
  }
  n->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (n->lib == NULL) {
    const char *why = dlerror();
    snprintf(err, errlen, "cannot load NVML (%s): %s", path, why != NULL ? why : "unknown");
    goto err;
  }
  LOAD(n, init, "nvmlInit_v2");
  LOAD(n, shutdown, "nvmlShutdown");
  LOAD(n, error_string, "nvmlErrorString");
  LOAD(n, get_count, "nvmlDeviceGetCount_v2");
  LOAD(n, get_handle, "nvmlDeviceGetHandleByIndex_v2");
  if (n->init == NULL || n->shutdown == NULL || n->get_count == NULL || n->get_handle == NULL) {
    snprintf(err, errlen,
             "%s lacks nvmlInit_v2, nvmlShutdown, nvmlDeviceGetCount_v2 or "
             "nvmlDeviceGetHandleByIndex_v2",
             path);
    goto err;
  }
  load_optional(n);
  nvml_return rc = n->init();
  if (rc != NVML_SUCCESS) {
    snprintf(err, errlen, "nvmlInit_v2: %s", nvml_error(n, rc));
    goto err;
  }
  n->initialized = 1;
  unsigned int count = 0;
  rc = n->get_count(&count);
  if (rc != NVML_SUCCESS) {
    snprintf(err, errlen, "nvmlDeviceGetCount_v2: %s", nvml_error(n, rc));
    goto err;
  }
  n->n_devices = count > MAX_DEVICES ? MAX_DEVICES : count;
  register_xids(n);
  gpu = tg_gpu_new(&nvml_ops, n);
  if (gpu == NULL) {
    snprintf(err, errlen, "out of memory");
    goto err;
  }
  return gpu;
err:
  nvml_close(n);
  return NULL;
}
