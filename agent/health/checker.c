/* The health checker: scheduling, deadlines, and the fault table.
 *
 * Threads. One worker thread per check runs the check's backend calls;
 * one monitor thread schedules runs, enforces deadlines and owns the fault
 * table. A run is a small state machine in the check (IDLE -> REQUESTED ->
 * RUNNING -> DONE -> IDLE) under the checker's one mutex: the monitor
 * requests a run, the worker runs it without the lock into the check's own
 * result buffer, and the monitor diffs the result against the active
 * faults. When a run misses its deadline the monitor raises a timeout fault
 * and simply stops waiting; it requests no new run of that check until the
 * worker comes back (so a hung NVML never collects a pile of threads).
 *
 * Lifetime. A worker may be stuck in a backend call forever, and the agent
 * must still be able to stop. So the checker is reference counted: the
 * owner holds one reference and each worker thread one; stop waits a
 * bounded time for workers, free detaches those still stuck, and whichever
 * drops the last reference frees the memory.
 *
 * Callbacks are collected under the lock and called after it is released,
 * on the monitor thread, so a callback may query the checker. */
#include "agent/health/checker.h"
#include "common/clock/clock.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log/log.h"

#define MAX_GPUS 64
#define MAX_XIDS 64
#define MAX_OBS 512     /* observations one run may produce */
#define MAX_ACTIVE 1024 /* active faults kept; more are logged and dropped */
#define IDLE_WAIT_MS 1000

enum { CHECK_GPU = 0, CHECK_NIC = 1, N_CHECKS = 2 };
/* Which part of the checker owns an active fault: a check's conditions,
 * a check's timeout, or XID events. */
enum { SRC_TIMEOUT = N_CHECKS, SRC_XID = 2 * N_CHECKS };

typedef enum { RUN_IDLE, RUN_REQUESTED, RUN_RUNNING, RUN_DONE } run_state;

typedef struct {
  tg_health_fault f;
  int event; /* an XID: held for xid_hold_ms, not diffed */
} obs;

typedef struct {
  obs items[MAX_OBS];
  size_t n;
} obs_list;

typedef struct check check;
struct check {
  tg_health_checker *owner;
  int index; /* CHECK_GPU or CHECK_NIC */
  const char *name;
  int enabled;
  void (*run)(tg_health_checker *c, check *ck, int64_t now_ms);
  uint32_t period_ms, deadline_ms;
  /* Under c->mu. */
  run_state state;
  int64_t started_ms, next_ms;
  int timed_out; /* the current run's timeout fault is raised */
  pthread_t thread;
  int thread_started, exited, joined;
  /* Owned by the worker while RUNNING, by the monitor while DONE. */
  obs_list result;
  tg_gpu_xid xids[MAX_XIDS];
  tg_nic_report nic_report;
};

typedef struct {
  tg_health_fault f;
  int source;
  int64_t expires_ms; /* XIDs only */
  int seen;           /* diff mark */
} active_fault;

typedef struct {
  tg_health_event event;
  tg_health_fault f;
} notice;

struct tg_health_checker {
  pthread_mutex_t mu;
  pthread_cond_t cv; /* CLOCK_MONOTONIC; every state change broadcasts */
  int refs;
  int started, stopping;
  tg_health_config cfg;
  pthread_t monitor;
  int monitor_started;
  check checks[N_CHECKS];
  active_fault active[MAX_ACTIVE];
  size_t n_active;
  notice notices[MAX_ACTIVE + MAX_OBS]; /* monitor only */
  size_t n_notices;
};

/* ---- XID table -------------------------------------------------------- */

static const struct {
  uint32_t xid;
  Tardigrade__V1__Severity severity;
  const char *what;
} xid_table[] = {
    {13, TARDIGRADE__V1__SEVERITY__SEVERITY_WARNING, "graphics engine exception"},
    {31, TARDIGRADE__V1__SEVERITY__SEVERITY_WARNING, "GPU memory page fault"},
    {32, TARDIGRADE__V1__SEVERITY__SEVERITY_WARNING, "invalid or corrupted push buffer"},
    {38, TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR, "driver firmware error"},
    {43, TARDIGRADE__V1__SEVERITY__SEVERITY_WARNING, "GPU stopped processing"},
    {45, TARDIGRADE__V1__SEVERITY__SEVERITY_WARNING, "preemptive cleanup after earlier errors"},
    {48, TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR, "double-bit ECC error"},
    {61, TARDIGRADE__V1__SEVERITY__SEVERITY_WARNING, "micro-controller breakpoint or warning"},
    {62, TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR, "micro-controller halt"},
    {63, TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR, "row-remap or page-retirement recording event"},
    {64, TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR,
     "row-remap or page-retirement recording failure"},
    {68, TARDIGRADE__V1__SEVERITY__SEVERITY_WARNING, "video processor exception"},
    {69, TARDIGRADE__V1__SEVERITY__SEVERITY_WARNING, "graphics engine class error"},
    {74, TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR, "NVLink error"},
    {79, TARDIGRADE__V1__SEVERITY__SEVERITY_FATAL, "GPU has fallen off the bus"},
    {92, TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR, "high single-bit ECC error rate"},
    {94, TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR, "contained ECC error"},
    {95, TARDIGRADE__V1__SEVERITY__SEVERITY_FATAL, "uncontained ECC error"},
    {109, TARDIGRADE__V1__SEVERITY__SEVERITY_WARNING, "context switch timeout"},
    {119, TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR, "GSP RPC timeout"},
    {120, TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR, "GSP error"},
    {140, TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR, "unrecovered ECC error"},
};

static size_t xid_entry(uint32_t xid) {
  for (size_t i = 0; i < sizeof xid_table / sizeof xid_table[0]; i++)
    if (xid_table[i].xid == xid) return i;
  return SIZE_MAX;
}

Tardigrade__V1__Severity tg_health_xid_severity(uint32_t xid) {
  size_t i = xid_entry(xid);
  return i == SIZE_MAX ? TARDIGRADE__V1__SEVERITY__SEVERITY_WARNING : xid_table[i].severity;
}

/* ---- small helpers ---------------------------------------------------- */



/* Waits on c->cv until the monotonic time deadline_ms. */
static void wait_until(tg_health_checker *c, int64_t deadline_ms) {
  struct timespec ts = {(time_t)(deadline_ms / 1000), (long)(deadline_ms % 1000) * 1000000L};
  pthread_cond_timedwait(&c->cv, &c->mu, &ts);
}

static const char *kind_name(Tardigrade__V1__FaultKind kind) {
  const ProtobufCEnumValue *v =
      protobuf_c_enum_descriptor_get_value(&tardigrade__v1__fault_kind__descriptor, (int)kind);
  return v != NULL ? v->name : "FAULT_KIND_UNKNOWN";
}

static const char *severity_name(Tardigrade__V1__Severity severity) {
  const ProtobufCEnumValue *v =
      protobuf_c_enum_descriptor_get_value(&tardigrade__v1__severity__descriptor, (int)severity);
  return v != NULL ? v->name : "SEVERITY_UNKNOWN";
}

static void add_obs(obs_list *o, int event, Tardigrade__V1__FaultKind kind,
                    Tardigrade__V1__Severity severity, const char *component, int64_t code,
                    const char *fmt, ...) __attribute__((format(printf, 7, 8)));

static void add_obs(obs_list *o, int event, Tardigrade__V1__FaultKind kind,
                    Tardigrade__V1__Severity severity, const char *component, int64_t code,
                    const char *fmt, ...) {
  if (o->n == MAX_OBS) return; /* the table of a pathological machine; keep the first */
  obs *x = &o->items[o->n++];
  memset(x, 0, sizeof *x);
  x->event = event;
  x->f.kind = kind;
  x->f.severity = severity;
  x->f.code = code;
  snprintf(x->f.component, sizeof x->f.component, "%s", component);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(x->f.detail, sizeof x->f.detail, fmt, ap);
  va_end(ap);
}

#define SEV(s) TARDIGRADE__V1__SEVERITY__SEVERITY_##s
#define KIND(k) TARDIGRADE__V1__FAULT_KIND__FAULT_##k

/* ---- the checks (worker threads, without the lock) --------------------- */

static void judge_gpu(const tg_health_config *cfg, const tg_gpu_status *st, obs_list *o) {
  char comp[TG_HEALTH_COMPONENT_LEN];
  snprintf(comp, sizeof comp, "gpu%" PRIu32, st->index);
  int64_t code = st->index;
  if (st->lost) {
    add_obs(o, 0, KIND(GPU_LOST), SEV(FATAL), comp, code,
            "%s (%s) fell off the bus or is inaccessible", comp, st->uuid);
    return;
  }
  if (st->ecc_uncorrectable > 0)
    add_obs(o, 0, KIND(GPU_ECC), SEV(ERROR), comp, code,
            "%s: %" PRIu64 " uncorrectable ECC errors since the driver loaded", comp,
            st->ecc_uncorrectable);
  if (st->row_remap_failure)
    add_obs(o, 0, KIND(GPU_ROW_REMAP), SEV(ERROR), comp, code,
            "%s: a memory row remapping failed; replace the GPU", comp);
  else if (st->row_remap_pending)
    add_obs(o, 0, KIND(GPU_ROW_REMAP), SEV(WARNING), comp, code,
            "%s: a memory row remapping is pending; reset the GPU", comp);
  uint32_t hot = st->throttle & (TG_GPU_THROTTLE_THERMAL | TG_GPU_THROTTLE_HW_SLOWDOWN);
  if (hot != 0 || st->temperature_c >= cfg->temperature_warn_c)
    add_obs(o, 0, KIND(GPU_THERMAL), SEV(WARNING), comp, code,
            "%s: %" PRId32 " C (warning at %" PRId32 " C)%s%s", comp, st->temperature_c,
            cfg->temperature_warn_c, (hot & TG_GPU_THROTTLE_THERMAL) ? ", thermal throttling" : "",
            (hot & TG_GPU_THROTTLE_HW_SLOWDOWN) ? ", hardware slowdown" : "");
  if (st->pcie_width > 0 && st->pcie_width_max > 0 && st->pcie_width < st->pcie_width_max)
    add_obs(o, 0, KIND(GPU_PCIE), SEV(WARNING), comp, code,
            "%s: PCIe link x%" PRIu32 " of x%" PRIu32 " (gen %" PRIu32 " of %" PRIu32 ")", comp,
            st->pcie_width, st->pcie_width_max, st->pcie_gen, st->pcie_gen_max);
}

static void run_gpu(tg_health_checker *c, check *ck, int64_t now_ms) {
  tg_gpu *gpu = c->cfg.gpu;
  obs_list *o = &ck->result;
  char err[256] = "";
  uint32_t n = 0;
  if (tg_gpu_count(gpu, &n, err, sizeof err) != 0) {
    add_obs(o, 0, KIND(GPU_LOST), SEV(ERROR), "gpu", -1, "cannot count GPUs: %s", err);
    n = 0;
  }
  for (uint32_t i = 0; i < n && i < MAX_GPUS; i++) {
    tg_gpu_status st;
    char comp[TG_HEALTH_COMPONENT_LEN];
    err[0] = '\0';
    if (tg_gpu_query(gpu, i, &st, err, sizeof err) == 0) {
      judge_gpu(&c->cfg, &st, o);
    } else {
      snprintf(comp, sizeof comp, "gpu%" PRIu32, i);
      add_obs(o, 0, KIND(GPU_LOST), SEV(ERROR), comp, i, "%s cannot be queried: %s", comp, err);
    }
  }
  size_t k = 0;
  err[0] = '\0';
  if (tg_gpu_drain_xids(gpu, ck->xids, MAX_XIDS, &k, err, sizeof err) != 0)
    add_obs(o, 0, KIND(GPU_XID), SEV(WARNING), "gpu", -1, "cannot read XID events: %s", err);
  for (size_t i = 0; i < k; i++) {
    char comp[TG_HEALTH_COMPONENT_LEN];
    uint32_t xid = ck->xids[i].xid;
    size_t e = xid_entry(xid);
    if (ck->xids[i].device_index == TG_GPU_INDEX_UNKNOWN)
      snprintf(comp, sizeof comp, "gpu");
    else
      snprintf(comp, sizeof comp, "gpu%" PRIu32, ck->xids[i].device_index);
    add_obs(o, 1, KIND(GPU_XID), tg_health_xid_severity(xid), comp, xid,
            "XID %" PRIu32 " on %s: %s", xid, comp,
            e == SIZE_MAX ? "see NVIDIA's XID catalog" : xid_table[e].what);
  }
  (void)now_ms;
}

static void run_nic(tg_health_checker *c, check *ck, int64_t now_ms) {
  tg_nic_report *r = &ck->nic_report;
  obs_list *o = &ck->result;
  char err[256] = "";
  if (tg_nic_check(c->cfg.nic, now_ms, r, err, sizeof err) != 0) {
    add_obs(o, 0, KIND(NIC_DOWN), SEV(WARNING), "nic", -1, "cannot read NIC state: %s", err);
    return;
  }
  for (size_t i = 0; i < r->n_links; i++) {
    const tg_nic_link *l = &r->links[i];
    if (!l->present)
      add_obs(o, 0, KIND(NIC_DOWN), SEV(ERROR), l->name, 0, "%s is not present", l->name);
    else if (l->down)
      add_obs(o, 0, KIND(NIC_DOWN), SEV(ERROR), l->name, 0, "%s is down (carrier %d, operstate %s)",
              l->name, l->carrier, l->operstate);
    if (l->flapping)
      add_obs(o, 0, KIND(NIC_FLAP), SEV(WARNING), l->name, 0,
              "%s: carrier changed %" PRIu64 " times within the window", l->name,
              l->carrier_changes_in_window);
    if (l->errors_rising)
      add_obs(o, 0, KIND(NIC_ERRORS), SEV(WARNING), l->name, 0,
              "%s: %" PRIu64 " errors and %" PRIu64 " drops within the window", l->name,
              l->errors_in_window, l->drops_in_window);
  }
  for (size_t i = 0; i < r->n_ports; i++) {
    const tg_nic_port *p = &r->ports[i];
    char comp[TG_HEALTH_COMPONENT_LEN];
    if (p->active) continue;
    snprintf(comp, sizeof comp, "%s/%" PRIu32, p->device, p->port);
    add_obs(o, 0, KIND(NIC_DOWN), SEV(ERROR), comp, p->port, "RDMA port %s is %s (physical %s)",
            comp, p->state, p->phys_state[0] != '\0' ? p->phys_state : "unknown");
  }
}

/* ---- the fault table (monitor thread, under the lock) ----------------- */

static int same_fault(const tg_health_fault *a, const tg_health_fault *b) {
  return a->kind == b->kind && a->severity == b->severity && a->code == b->code &&
         strcmp(a->component, b->component) == 0;
}

static void notify(tg_health_checker *c, tg_health_event event, const tg_health_fault *f) {
  if (event == TG_HEALTH_RAISED) {
    tg_log_level level = f->severity >= SEV(ERROR) ? TG_LOG_ERROR : TG_LOG_WARN;
    tg_log_write(level, __FILE__, __LINE__, "health: %s %s: %s", kind_name(f->kind),
                 severity_name(f->severity), f->detail);
  } else {
    TG_INFO("health: cleared %s %s %s", kind_name(f->kind), severity_name(f->severity),
            f->component);
  }
  /* The monitor delivers after each run and each pass, so one batch holds at
   * most one run's raises plus every clear: the array is sized for that. */
  if (c->cfg.on_event == NULL || c->n_notices == sizeof c->notices / sizeof c->notices[0]) return;
  c->notices[c->n_notices].event = event;
  c->notices[c->n_notices].f = *f;
  c->n_notices++;
}

static active_fault *find_active(tg_health_checker *c, int source, const tg_health_fault *f) {
  for (size_t i = 0; i < c->n_active; i++)
    if (c->active[i].source == source && same_fault(&c->active[i].f, f)) return &c->active[i];
  return NULL;
}

static void raise_fault(tg_health_checker *c, int source, const tg_health_fault *f,
                        int64_t expires_ms) {
  if (c->n_active == MAX_ACTIVE) {
    TG_ERROR("health: fault table full (%d); dropped %s %s: %s", MAX_ACTIVE, kind_name(f->kind),
             f->component, f->detail);
    return;
  }
  active_fault *a = &c->active[c->n_active++];
  a->f = *f;
  a->f.detected_unix_ms = tg_clock_unix_ms();
  if (a->f.occurred_unix_ms == 0) a->f.occurred_unix_ms = a->f.detected_unix_ms;
  a->source = source;
  a->expires_ms = expires_ms;
  a->seen = 1;
  notify(c, TG_HEALTH_RAISED, &a->f);
}

/* Removes every active fault of `source` for which keep() says no. */
static void clear_faults(tg_health_checker *c, int source, int64_t now_ms,
                         int (*keep)(const active_fault *, int64_t)) {
  size_t out = 0;
  for (size_t i = 0; i < c->n_active; i++) {
    active_fault *a = &c->active[i];
    if (a->source == source && !keep(a, now_ms)) {
      notify(c, TG_HEALTH_CLEARED, &a->f);
      continue;
    }
    if (out != i) c->active[out] = *a;
    out++;
  }
  c->n_active = out;
}

static int keep_seen(const active_fault *a, int64_t now_ms) {
  return a->seen;
}
static int keep_unexpired(const active_fault *a, int64_t now_ms) {
  return a->expires_ms > now_ms;
}
static int keep_none(const active_fault *a, int64_t now_ms) {
  return 0;
}

/* A completed run: conditions are diffed against the check's active faults,
 * events are raised (or their hold extended). */
static void apply_result(tg_health_checker *c, check *ck, int64_t now_ms) {
  int source = ck->index;
  for (size_t i = 0; i < c->n_active; i++)
    if (c->active[i].source == source) c->active[i].seen = 0;
  int64_t run_unix_ms = tg_clock_unix_ms() - (now_ms - ck->started_ms);
  for (size_t i = 0; i < ck->result.n; i++) {
    obs *x = &ck->result.items[i];
    x->f.occurred_unix_ms = run_unix_ms;
    int src = x->event ? SRC_XID : source;
    int64_t expires = x->event ? now_ms + c->cfg.xid_hold_ms : 0;
    active_fault *a = find_active(c, src, &x->f);
    if (a == NULL) {
      raise_fault(c, src, &x->f, expires);
    } else {
      a->seen = 1;
      a->expires_ms = expires;
      snprintf(a->f.detail, sizeof a->f.detail, "%s", x->f.detail); /* newest numbers */
    }
  }
  clear_faults(c, source, now_ms, keep_seen);
  ck->result.n = 0;
}

static void raise_timeout(tg_health_checker *c, check *ck) {
  tg_health_fault f;
  memset(&f, 0, sizeof f);
  f.code = -1;
  if (ck->index == CHECK_GPU) {
    f.kind = KIND(GPU_LOST);
    f.severity = SEV(FATAL);
    snprintf(f.component, sizeof f.component, "gpu-check");
    snprintf(f.detail, sizeof f.detail,
             "GPU health check timed out after %" PRIu32 " ms (a driver call is hung)",
             ck->deadline_ms);
  } else {
    f.kind = KIND(NIC_DOWN);
    f.severity = SEV(ERROR);
    snprintf(f.component, sizeof f.component, "nic-check");
    snprintf(f.detail, sizeof f.detail, "NIC health check timed out after %" PRIu32 " ms",
             ck->deadline_ms);
  }
  raise_fault(c, SRC_TIMEOUT + ck->index, &f, 0);
}

/* Calls the callbacks for what the monitor collected, without the lock.
 * Meanwhile workers may finish runs and stop may be requested; the monitor
 * reads all of that again after. */
static void deliver(tg_health_checker *c) {
  if (c->n_notices == 0) return;
  size_t n = c->n_notices;
  c->n_notices = 0;
  pthread_mutex_unlock(&c->mu);
  for (size_t i = 0; i < n; i++)
    c->cfg.on_event(c->cfg.cb_arg, c->notices[i].event, &c->notices[i].f);
  pthread_mutex_lock(&c->mu);
}

/* ---- threads ---------------------------------------------------------- */

static void destroy(tg_health_checker *c) {
  pthread_cond_destroy(&c->cv);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

static void *worker_main(void *arg) {
  check *ck = arg;
  tg_health_checker *c = ck->owner;
  pthread_mutex_lock(&c->mu);
  for (;;) {
    while (ck->state != RUN_REQUESTED && !c->stopping) wait_until(c, tg_clock_mono_ms() + IDLE_WAIT_MS);
    if (c->stopping) break;
    ck->state = RUN_RUNNING;
    int64_t now = ck->started_ms;
    pthread_mutex_unlock(&c->mu);
    ck->result.n = 0;
    ck->run(c, ck, now);
    pthread_mutex_lock(&c->mu);
    ck->state = RUN_DONE;
    pthread_cond_broadcast(&c->cv);
  }
  ck->exited = 1;
  int last = --c->refs == 0;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  if (last) destroy(c); /* the owner freed the checker while this run was stuck */
  return NULL;
}

static int64_t earlier(int64_t a, int64_t b) {
  return a < b ? a : b;
}

static void *monitor_main(void *arg) {
  tg_health_checker *c = arg;
  pthread_mutex_lock(&c->mu);
  while (!c->stopping) {
    int64_t now = tg_clock_mono_ms();
    int64_t wake = now + IDLE_WAIT_MS;
    for (int i = 0; i < N_CHECKS; i++) {
      check *ck = &c->checks[i];
      if (!ck->enabled) continue;
      if (ck->state == RUN_DONE) {
        apply_result(c, ck, now);
        if (ck->timed_out) {
          TG_INFO("health: the %s check came back after %" PRId64 " ms", ck->name,
                  now - ck->started_ms);
          clear_faults(c, SRC_TIMEOUT + ck->index, now, keep_none);
          ck->timed_out = 0;
        }
        ck->state = RUN_IDLE;
        deliver(c); /* one run's notices at most: they always fit */
      }
      if (ck->state == RUN_IDLE && now >= ck->next_ms) {
        ck->state = RUN_REQUESTED;
        ck->started_ms = now;
        ck->next_ms = now + ck->period_ms;
        pthread_cond_broadcast(&c->cv);
      }
      if (ck->state == RUN_IDLE) wake = earlier(wake, ck->next_ms);
      int in_flight = ck->state == RUN_REQUESTED || ck->state == RUN_RUNNING;
      if (in_flight && !ck->timed_out) {
        if (now - ck->started_ms >= (int64_t)ck->deadline_ms) {
          raise_timeout(c, ck);
          ck->timed_out = 1;
        } else {
          wake = earlier(wake, ck->started_ms + ck->deadline_ms);
        }
      }
    }
    clear_faults(c, SRC_XID, now, keep_unexpired);
    for (size_t i = 0; i < c->n_active; i++)
      if (c->active[i].source == SRC_XID) wake = earlier(wake, c->active[i].expires_ms);
    if (c->n_notices > 0) {
      deliver(c);
      continue; /* time passed in the callbacks: look again */
    }
    int pending = 0;
    for (int i = 0; i < N_CHECKS; i++) pending |= c->checks[i].state == RUN_DONE;
    if (!pending && !c->stopping) wait_until(c, wake);
  }
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

/* ---- public ------------------------------------------------------------ */

static void init_check(tg_health_checker *c, check *ck, int index, const char *name, int enabled,
                       void (*run)(tg_health_checker *, check *, int64_t), uint32_t period_ms,
                       uint32_t deadline_ms) {
  ck->owner = c;
  ck->index = index;
  ck->name = name;
  ck->enabled = enabled;
  ck->run = run;
  ck->period_ms = period_ms;
  ck->deadline_ms = deadline_ms;
  ck->state = RUN_IDLE;
}

tg_health_checker *tg_health_checker_new(const tg_health_config *cfg, char *err, size_t errlen) {
  pthread_condattr_t attr;
  int have_attr = 0, have_mu = 0;
  tg_health_checker *c = calloc(1, sizeof *c);
  if (c == NULL) {
    snprintf(err, errlen, "out of memory");
    goto err;
  }
  c->cfg = *cfg;
  tg_health_config *k = &c->cfg;
  if (k->gpu_period_ms == 0) k->gpu_period_ms = 5000;
  if (k->gpu_deadline_ms == 0) k->gpu_deadline_ms = 10000;
  if (k->nic_period_ms == 0) k->nic_period_ms = 2000;
  if (k->nic_deadline_ms == 0) k->nic_deadline_ms = 5000;
  if (k->temperature_warn_c == 0) k->temperature_warn_c = 85;
  if (k->xid_hold_ms == 0) k->xid_hold_ms = 600000;
  if (k->stop_timeout_ms == 0) k->stop_timeout_ms = 2000;
  init_check(c, &c->checks[CHECK_GPU], CHECK_GPU, "GPU", k->gpu != NULL, run_gpu, k->gpu_period_ms,
             k->gpu_deadline_ms);
  init_check(c, &c->checks[CHECK_NIC], CHECK_NIC, "NIC", k->nic != NULL, run_nic, k->nic_period_ms,
             k->nic_deadline_ms);
  c->refs = 1;
  if (pthread_mutex_init(&c->mu, NULL) != 0) {
    snprintf(err, errlen, "pthread_mutex_init failed");
    goto err;
  }
  have_mu = 1;
  if (pthread_condattr_init(&attr) != 0) {
    snprintf(err, errlen, "pthread_condattr_init failed");
    goto err;
  }
  have_attr = 1;
  if (pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0 ||
      pthread_cond_init(&c->cv, &attr) != 0) {
    snprintf(err, errlen, "pthread_cond_init failed");
    goto err;
  }
  pthread_condattr_destroy(&attr);
  return c;
err:
  if (have_attr) pthread_condattr_destroy(&attr);
  if (have_mu) pthread_mutex_destroy(&c->mu);
  free(c);
  return NULL;
}

int tg_health_checker_start(tg_health_checker *c) {
  pthread_mutex_lock(&c->mu);
  if (c->started) {
    pthread_mutex_unlock(&c->mu);
    return -1;
  }
  c->started = 1;
  int rc = 0;
  for (int i = 0; i < N_CHECKS && rc == 0; i++) {
    check *ck = &c->checks[i];
    if (!ck->enabled) continue;
    c->refs++;
    if (pthread_create(&ck->thread, NULL, worker_main, ck) != 0) {
      c->refs--;
      rc = -1;
      break;
    }
    ck->thread_started = 1;
  }
  if (rc == 0 && pthread_create(&c->monitor, NULL, monitor_main, c) == 0)
    c->monitor_started = 1;
  else
    rc = -1;
  pthread_mutex_unlock(&c->mu);
  if (rc != 0) {
    TG_ERROR("health: cannot start the checker's threads");
    tg_health_checker_stop(c);
  }
  return rc;
}

int tg_health_checker_stop(tg_health_checker *c) {
  pthread_t joinable[N_CHECKS];
  int n_joinable = 0, stuck = 0;
  pthread_mutex_lock(&c->mu);
  c->stopping = 1;
  pthread_cond_broadcast(&c->cv);
  int join_monitor = c->monitor_started;
  c->monitor_started = 0;
  pthread_mutex_unlock(&c->mu);
  if (join_monitor) pthread_join(c->monitor, NULL);

  pthread_mutex_lock(&c->mu);
  int64_t deadline = tg_clock_mono_ms() + c->cfg.stop_timeout_ms;
  for (;;) {
    stuck = 0;
    for (int i = 0; i < N_CHECKS; i++) {
      check *ck = &c->checks[i];
      if (ck->thread_started && !ck->joined && !ck->exited) stuck++;
    }
    if (stuck == 0 || tg_clock_mono_ms() >= deadline) break;
    wait_until(c, deadline);
  }
  for (int i = 0; i < N_CHECKS; i++) {
    check *ck = &c->checks[i];
    if (ck->thread_started && !ck->joined && ck->exited) {
      joinable[n_joinable++] = ck->thread;
      ck->joined = 1;
    } else if (ck->thread_started && !ck->joined) {
      TG_WARN("health: the %s check is stuck in its backend after %" PRIu32
              " ms; not waiting for it",
              ck->name, c->cfg.stop_timeout_ms);
    }
  }
  pthread_mutex_unlock(&c->mu);
  for (int i = 0; i < n_joinable; i++) pthread_join(joinable[i], NULL);
  return stuck;
}

void tg_health_checker_free(tg_health_checker *c) {
  pthread_t stuck[N_CHECKS];
  int n_stuck = 0;
  if (c == NULL) return;
  tg_health_checker_stop(c);
  pthread_mutex_lock(&c->mu);
  for (int i = 0; i < N_CHECKS; i++) {
    check *ck = &c->checks[i];
    if (ck->thread_started && !ck->joined) {
      stuck[n_stuck++] = ck->thread;
      ck->joined = 1; /* detached below; it frees c if it is the last */
    }
  }
  int last = --c->refs == 0;
  pthread_mutex_unlock(&c->mu);
  for (int i = 0; i < n_stuck; i++) pthread_detach(stuck[i]);
  if (last) destroy(c);
}

void tg_health_checker_check_now(tg_health_checker *c) {
  pthread_mutex_lock(&c->mu);
  int64_t now = tg_clock_mono_ms();
  for (int i = 0; i < N_CHECKS; i++) c->checks[i].next_ms = now;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

int tg_health_checker_healthy(tg_health_checker *c) {
  int healthy = 1;
  pthread_mutex_lock(&c->mu);
  for (size_t i = 0; i < c->n_active; i++)
    if (c->active[i].f.severity >= SEV(ERROR)) healthy = 0;
  pthread_mutex_unlock(&c->mu);
  return healthy;
}

size_t tg_health_checker_active(tg_health_checker *c, tg_health_fault *out, size_t cap) {
  pthread_mutex_lock(&c->mu);
  size_t n = c->n_active;
  for (size_t i = 0; i < n && i < cap; i++) out[i] = c->active[i].f;
  pthread_mutex_unlock(&c->mu);
  return n;
}

void tg_health_fault_to_proto(const tg_health_fault *f, Tardigrade__V1__Fault *msg) {
  tardigrade__v1__fault__init(msg);
  msg->kind = f->kind;
  msg->severity = f->severity;
  msg->component = (char *)f->component;
  msg->code = f->code;
  msg->detail = (char *)f->detail;
  msg->detected_unix_ms = f->detected_unix_ms;
  msg->occurred_unix_ms = f->occurred_unix_ms;
  msg->rank = -1;
}
