/* Tests for the health checker (checker.h) end to end: the real checker on
 * fake GPUs (gpu_fake.h) and a fake sysfs tree (nic_fake.h), faults injected
 * by writing files as tg-chaos does, and a backend that hangs on purpose.
 * Every wait has a deadline; periods are tens of milliseconds. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "agent/health/checker.h"
#include "agent/health/gpu_fake.h"
#include "agent/health/health_testing.h"
#include "agent/health/nic_fake.h"

#define WAIT_MS 3000 /* generous: sanitizers and loaded machines are slow */
#define MAX_EVENTS 256
#define ANY_CODE INT64_MIN

#define SEV(s) TARDIGRADE__V1__SEVERITY__SEVERITY_##s
#define KIND(k) TARDIGRADE__V1__FAULT_KIND__FAULT_##k

/* ---- what the callback saw -------------------------------------------- */

typedef struct {
  pthread_mutex_t mu;
  tg_health_checker *checker;
  size_t n;
  struct {
    tg_health_event event;
    tg_health_fault fault;
    int healthy; /* tg_health_checker_healthy from inside the callback */
  } events[MAX_EVENTS];
} recorder;

static void on_event(void *arg, tg_health_event event, const tg_health_fault *fault) {
  recorder *r = arg;
  int healthy = tg_health_checker_healthy(r->checker);
  pthread_mutex_lock(&r->mu);
  if (r->n < MAX_EVENTS) {
    r->events[r->n].event = event;
    r->events[r->n].fault = *fault;
    r->events[r->n].healthy = healthy;
    r->n++;
  }
  pthread_mutex_unlock(&r->mu);
}

static int matches(const tg_health_fault *f, Tardigrade__V1__FaultKind kind, const char *component,
                   int64_t code) {
  return f->kind == kind && strcmp(f->component, component) == 0 &&
         (code == ANY_CODE || f->code == code);
}

/* How many events of this kind; the last one's fault into *last. */
static size_t count(recorder *r, tg_health_event event, Tardigrade__V1__FaultKind kind,
                    const char *component, int64_t code, tg_health_fault *last, int *healthy) {
  size_t n = 0;
  pthread_mutex_lock(&r->mu);
  for (size_t i = 0; i < r->n; i++) {
    if (r->events[i].event != event || !matches(&r->events[i].fault, kind, component, code))
      continue;
    n++;
    if (last != NULL) *last = r->events[i].fault;
    if (healthy != NULL) *healthy = r->events[i].healthy;
  }
  pthread_mutex_unlock(&r->mu);
  return n;
}

/* Waits (at most WAIT_MS) until at least `want` such events were seen. */
static int wait_for(recorder *r, tg_health_event event, Tardigrade__V1__FaultKind kind,
                    const char *component, int64_t code, size_t want, tg_health_fault *last) {
  int64_t deadline = health_testing_now_ms() + WAIT_MS;
  while (count(r, event, kind, component, code, last, NULL) < want) {
    if (health_testing_now_ms() >= deadline) return 0;
    health_testing_sleep_ms(5);
  }
  return 1;
}

static size_t total_events(recorder *r) {
  pthread_mutex_lock(&r->mu);
  size_t n = r->n;
  pthread_mutex_unlock(&r->mu);
  return n;
}

/* ---- fixture: two fake GPUs, eth0 and one RDMA port -------------------- */

typedef struct {
  char *dir;
  char gpus[4096];
  char sys[4096];
  tg_gpu *gpu;
  tg_nic *nic;
  tg_health_config cfg;
  tg_health_checker *checker;
  recorder rec;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  char err[256];
  if (f == NULL || (f->dir = health_testing_tmpdir("checker")) == NULL) return -1;
  pthread_mutex_init(&f->rec.mu, NULL);
  health_testing_join(f->gpus, sizeof f->gpus, f->dir, "gpus");
  health_testing_join(f->sys, sizeof f->sys, f->dir, "sys");
  if (tg_gpu_fake_create(f->gpus, 2) != 0 || tg_nic_fake_add_link(f->sys, "eth0") != 0 ||
      tg_nic_fake_set_rdma_port(f->sys, "mlx5_0", 1, "4: ACTIVE") != 0)
    return -1;
  if ((f->gpu = tg_gpu_fake_open(f->gpus, err, sizeof err)) == NULL) return -1;
  tg_nic_config nc = {0};
  nc.sysfs_root = f->sys;
  nc.window_ms = 600;
  nc.flap_changes = 4;
  nc.errors_per_window = 10;
  if ((f->nic = tg_nic_new(&nc, err, sizeof err)) == NULL) return -1;
  f->cfg.gpu = f->gpu;
  f->cfg.nic = f->nic;
  f->cfg.gpu_period_ms = 20;
  f->cfg.gpu_deadline_ms = 2000;
  f->cfg.nic_period_ms = 20;
  f->cfg.nic_deadline_ms = 2000;
  f->cfg.xid_hold_ms = 300;
  f->cfg.stop_timeout_ms = 300;
  f->cfg.on_event = on_event;
  f->cfg.cb_arg = &f->rec;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  tg_health_checker_free(f->checker);
  tg_nic_free(f->nic);
  tg_gpu_close(f->gpu);
  pthread_mutex_destroy(&f->rec.mu);
  health_testing_rmtree(f->dir);
  free(f->dir);
  free(f);
  return 0;
}

static void start(fixture *f) {
  char err[256];
  f->checker = tg_health_checker_new(&f->cfg, err, sizeof err);
  assert_non_null(f->checker);
  f->rec.checker = f->checker;
  assert_int_equal(tg_health_checker_start(f->checker), 0);
}

/* ---- tests ------------------------------------------------------------- */

static void test_healthy_node_reports_nothing(void **state) {
  fixture *f = *state;
  start(f);
  health_testing_sleep_ms(150);
  assert_int_equal(total_events(&f->rec), 0);
  assert_int_equal(tg_health_checker_healthy(f->checker), 1);
  assert_int_equal(tg_health_checker_active(f->checker, NULL, 0), 0);
}

static void test_xid_reported_once_with_its_severity(void **state) {
  fixture *f = *state;
  tg_health_fault got;
  start(f);
  assert_int_equal(tg_gpu_fake_inject_xid(f->gpus, 1, 79), 0);
  assert_true(wait_for(&f->rec, TG_HEALTH_RAISED, KIND(GPU_XID), "gpu1", 79, 1, &got));
  assert_int_equal(got.severity, SEV(FATAL));
  assert_non_null(strstr(got.detail, "fallen off the bus"));
  assert_true(got.detected_unix_ms > 0);
  assert_int_equal(tg_health_checker_healthy(f->checker), 0);
  /* The same XID while it is active: no second report. */
  assert_int_equal(tg_gpu_fake_inject_xid(f->gpus, 1, 79), 0);
  health_testing_sleep_ms(100);
  assert_int_equal(count(&f->rec, TG_HEALTH_RAISED, KIND(GPU_XID), "gpu1", 79, NULL, NULL), 1);
  /* Held for xid_hold_ms after the last one, then cleared. */
  assert_true(wait_for(&f->rec, TG_HEALTH_CLEARED, KIND(GPU_XID), "gpu1", 79, 1, NULL));
  assert_int_equal(tg_health_checker_healthy(f->checker), 1);
  /* An application-level XID is only a warning. */
  assert_int_equal(tg_gpu_fake_inject_xid(f->gpus, 0, 13), 0);
  assert_true(wait_for(&f->rec, TG_HEALTH_RAISED, KIND(GPU_XID), "gpu0", 13, 1, &got));
  assert_int_equal(got.severity, SEV(WARNING));
  assert_int_equal(tg_health_checker_healthy(f->checker), 1);
}

static void test_ecc_makes_the_node_unhealthy(void **state) {
  fixture *f = *state;
  tg_health_fault got, active[8];
  int healthy = -1;
  start(f);
  assert_int_equal(tg_gpu_fake_set_ecc(f->gpus, 0, 3), 0);
  assert_true(wait_for(&f->rec, TG_HEALTH_RAISED, KIND(GPU_ECC), "gpu0", 0, 1, &got));
  assert_int_equal(got.severity, SEV(ERROR));
  assert_int_equal(tg_health_checker_healthy(f->checker), 0);
  count(&f->rec, TG_HEALTH_RAISED, KIND(GPU_ECC), "gpu0", 0, NULL, &healthy);
  assert_int_equal(healthy, 0); /* already active when the callback ran */
  assert_int_equal(tg_health_checker_active(f->checker, active, 8), 1);
  assert_int_equal(active[0].kind, KIND(GPU_ECC));
  assert_non_null(strstr(active[0].detail, "3 uncorrectable"));

  assert_int_equal(tg_gpu_fake_set_ecc(f->gpus, 0, 0), 0);
  assert_true(wait_for(&f->rec, TG_HEALTH_CLEARED, KIND(GPU_ECC), "gpu0", 0, 1, NULL));
  count(&f->rec, TG_HEALTH_CLEARED, KIND(GPU_ECC), "gpu0", 0, NULL, &healthy);
  assert_int_equal(healthy, 1);
  assert_int_equal(tg_health_checker_healthy(f->checker), 1);
  assert_int_equal(tg_health_checker_active(f->checker, active, 8), 0);
  assert_int_equal(count(&f->rec, TG_HEALTH_RAISED, KIND(GPU_ECC), "gpu0", 0, NULL, NULL), 1);
}

static void test_heat_is_a_warning(void **state) {
  fixture *f = *state;
  tg_health_fault got;
  start(f);
  assert_int_equal(tg_gpu_fake_set_temperature(f->gpus, 1, 95), 0);
  assert_true(wait_for(&f->rec, TG_HEALTH_RAISED, KIND(GPU_THERMAL), "gpu1", 1, 1, &got));
  assert_int_equal(got.severity, SEV(WARNING));
  assert_non_null(strstr(got.detail, "95 C"));
  assert_int_equal(tg_health_checker_healthy(f->checker), 1);
  assert_int_equal(tg_gpu_fake_set_temperature(f->gpus, 1, 60), 0);
  assert_true(wait_for(&f->rec, TG_HEALTH_CLEARED, KIND(GPU_THERMAL), "gpu1", 1, 1, NULL));
  /* Thermal throttling at a normal temperature counts too. */
  assert_int_equal(tg_gpu_fake_set(f->gpus, 1, "throttle", "thermal"), 0);
  assert_true(wait_for(&f->rec, TG_HEALTH_RAISED, KIND(GPU_THERMAL), "gpu1", 1, 2, &got));
  assert_non_null(strstr(got.detail, "thermal throttling"));
  /* Power capping is normal operation. */
  assert_int_equal(tg_gpu_fake_set(f->gpus, 1, "throttle", "power"), 0);
  assert_true(wait_for(&f->rec, TG_HEALTH_CLEARED, KIND(GPU_THERMAL), "gpu1", 1, 2, NULL));
}

static void test_lost_gpu_is_fatal(void **state) {
  fixture *f = *state;
  tg_health_fault got;
  start(f);
  assert_int_equal(tg_gpu_fake_set_lost(f->gpus, 1, 1), 0);
  assert_true(wait_for(&f->rec, TG_HEALTH_RAISED, KIND(GPU_LOST), "gpu1", 1, 1, &got));
  assert_int_equal(got.severity, SEV(FATAL));
  assert_int_equal(tg_health_checker_healthy(f->checker), 0);
  assert_int_equal(tg_gpu_fake_set_lost(f->gpus, 1, 0), 0);
  assert_true(wait_for(&f->rec, TG_HEALTH_CLEARED, KIND(GPU_LOST), "gpu1", 1, 1, NULL));
  assert_int_equal(tg_health_checker_healthy(f->checker), 1);
}

static void test_row_remap_and_pcie(void **state) {
  fixture *f = *state;
  tg_health_fault got;
  start(f);
  assert_int_equal(tg_gpu_fake_set(f->gpus, 0, "row_remap_pending", "1"), 0);
  assert_true(wait_for(&f->rec, TG_HEALTH_RAISED, KIND(GPU_ROW_REMAP), "gpu0", 0, 1, &got));
  assert_int_equal(got.severity, SEV(WARNING));
  assert_int_equal(tg_health_checker_healthy(f->checker), 1);
  /* Pending -> failed: the warning clears, an error is raised. */
  assert_int_equal(tg_gpu_fake_set(f->gpus, 0, "row_remap_failure", "1"), 0);
  assert_true(wait_for(&f->rec, TG_HEALTH_RAISED, KIND(GPU_ROW_REMAP), "gpu0", 0, 2, &got));
  assert_int_equal(got.severity, SEV(ERROR));
  assert_true(wait_for(&f->rec, TG_HEALTH_CLEARED, KIND(GPU_ROW_REMAP), "gpu0", 0, 1, &got));
  assert_int_equal(got.severity, SEV(WARNING));
  assert_int_equal(tg_health_checker_healthy(f->checker), 0);

  assert_int_equal(tg_gpu_fake_set(f->gpus, 1, "pcie_width", "8"), 0);
  assert_true(wait_for(&f->rec, TG_HEALTH_RAISED, KIND(GPU_PCIE), "gpu1", 1, 1, &got));
  assert_int_equal(got.severity, SEV(WARNING));
  assert_non_null(strstr(got.detail, "x8 of x16"));
}

static void test_nic_down(void **state) {
  fixture *f = *state;
  tg_health_fault got;
  start(f);
  assert_int_equal(tg_nic_fake_set(f->sys, "eth0", "carrier", "0"), 0);
  assert_true(wait_for(&f->rec, TG_HEALTH_RAISED, KIND(NIC_DOWN), "eth0", 0, 1, &got));
  assert_int_equal(got.severity, SEV(ERROR));
  assert_int_equal(tg_health_checker_healthy(f->checker), 0);
  assert_int_equal(tg_nic_fake_set(f->sys, "eth0", "carrier", "1"), 0);
  assert_true(wait_for(&f->rec, TG_HEALTH_CLEARED, KIND(NIC_DOWN), "eth0", 0, 1, NULL));
  assert_int_equal(tg_health_checker_healthy(f->checker), 1);
}

static void test_nic_flaps_and_errors(void **state) {
  fixture *f = *state;
  tg_health_fault got;
  start(f);
  health_testing_sleep_ms(60); /* a first sample of the counters */
  assert_int_equal(tg_nic_fake_set_u64(f->sys, "eth0", "carrier_changes", 6), 0);
  assert_int_equal(tg_nic_fake_set_u64(f->sys, "eth0", "statistics/rx_errors", 50), 0);
  assert_true(wait_for(&f->rec, TG_HEALTH_RAISED, KIND(NIC_FLAP), "eth0", 0, 1, &got));
  assert_int_equal(got.severity, SEV(WARNING));
  assert_true(wait_for(&f->rec, TG_HEALTH_RAISED, KIND(NIC_ERRORS), "eth0", 0, 1, &got));
  assert_int_equal(got.severity, SEV(WARNING));
  assert_int_equal(tg_health_checker_healthy(f->checker), 1);
  /* Quiet for a window (600 ms): both clear. */
  assert_true(wait_for(&f->rec, TG_HEALTH_CLEARED, KIND(NIC_FLAP), "eth0", 0, 1, NULL));
  assert_true(wait_for(&f->rec, TG_HEALTH_CLEARED, KIND(NIC_ERRORS), "eth0", 0, 1, NULL));
}

static void test_rdma_port_down(void **state) {
  fixture *f = *state;
  tg_health_fault got;
  start(f);
  assert_int_equal(tg_nic_fake_set_rdma_port(f->sys, "mlx5_0", 1, "1: DOWN"), 0);
  assert_true(wait_for(&f->rec, TG_HEALTH_RAISED, KIND(NIC_DOWN), "mlx5_0/1", 1, 1, &got));
  assert_int_equal(got.severity, SEV(ERROR));
  assert_non_null(strstr(got.detail, "1: DOWN"));
  assert_int_equal(tg_health_checker_healthy(f->checker), 0);
  assert_int_equal(tg_nic_fake_set_rdma_port(f->sys, "mlx5_0", 1, "4: ACTIVE"), 0);
  assert_true(wait_for(&f->rec, TG_HEALTH_CLEARED, KIND(NIC_DOWN), "mlx5_0/1", 1, 1, NULL));
  assert_int_equal(tg_health_checker_healthy(f->checker), 1);
}

/* A GPU query that hangs past its deadline is a fault; the NIC check goes
 * on; the fault clears when the query comes back; stop does not wait for a
 * query that is still stuck. */
static void test_hung_gpu_check(void **state) {
  fixture *f = *state;
  tg_health_fault got;
  f->cfg.gpu_deadline_ms = 150;
  f->cfg.stop_timeout_ms = 200;
  start(f);
  assert_int_equal(tg_gpu_fake_set(f->gpus, 0, "hang_ms", "20000"), 0);
  assert_true(wait_for(&f->rec, TG_HEALTH_RAISED, KIND(GPU_LOST), "gpu-check", -1, 1, &got));
  assert_int_equal(got.severity, SEV(FATAL));
  assert_non_null(strstr(got.detail, "timed out"));
  assert_int_equal(tg_health_checker_healthy(f->checker), 0);

  assert_int_equal(tg_nic_fake_set(f->sys, "eth0", "carrier", "0"), 0);
  assert_true(wait_for(&f->rec, TG_HEALTH_RAISED, KIND(NIC_DOWN), "eth0", 0, 1, NULL));

  assert_int_equal(tg_gpu_fake_set(f->gpus, 0, "hang_ms", "0"), 0);
  assert_true(wait_for(&f->rec, TG_HEALTH_CLEARED, KIND(GPU_LOST), "gpu-check", -1, 1, NULL));

  assert_int_equal(tg_gpu_fake_set(f->gpus, 0, "hang_ms", "20000"), 0);
  assert_true(wait_for(&f->rec, TG_HEALTH_RAISED, KIND(GPU_LOST), "gpu-check", -1, 2, NULL));
  assert_int_equal(count(&f->rec, TG_HEALTH_RAISED, KIND(GPU_LOST), "gpu-check", -1, NULL, NULL),
                   2);

  int64_t t0 = health_testing_now_ms();
  assert_int_equal(tg_health_checker_stop(f->checker), 1);
  int64_t took = health_testing_now_ms() - t0;
  assert_true(took < 1500);
  size_t after_stop = total_events(&f->rec);

  /* Released: the stuck worker finishes and the next stop joins it. */
  assert_int_equal(tg_gpu_fake_set(f->gpus, 0, "hang_ms", "0"), 0);
  assert_int_equal(tg_health_checker_stop(f->checker), 0);
  assert_int_equal(total_events(&f->rec), after_stop); /* no callback after stop */
}

/* A backend of the test's own that blocks until released, to free the
 * checker while a worker is stuck inside it. */
typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int blocking, released, done;
} stuck_backend;

static int stuck_count(void *impl, uint32_t *n, char *err, size_t errlen) {
  *n = 1;
  return 0;
}

static int stuck_status(void *impl, uint32_t index, tg_gpu_status *out, char *err, size_t errlen) {
  stuck_backend *b = impl;
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += 10; /* never forever, even if the test fails */
  pthread_mutex_lock(&b->mu);
  while (b->blocking && !b->released)
    if (pthread_cond_timedwait(&b->cv, &b->mu, &deadline) != 0) break;
  pthread_mutex_unlock(&b->mu);
  return 0;
}

static int stuck_drain(void *impl, tg_gpu_xid *out, size_t cap, size_t *n, char *err,
                       size_t errlen) {
  stuck_backend *b = impl;
  pthread_mutex_lock(&b->mu);
  b->done += b->released;
  pthread_cond_broadcast(&b->cv);
  pthread_mutex_unlock(&b->mu);
  return 0;
}

static void test_free_while_a_check_is_stuck(void **state) {
  static const tg_gpu_ops ops = {
      .name = "stuck", .count = stuck_count, .status = stuck_status, .drain_xids = stuck_drain};
  fixture *f = *state;
  stuck_backend b = {.blocking = 1};
  pthread_mutex_init(&b.mu, NULL);
  pthread_cond_init(&b.cv, NULL);
  tg_gpu *gpu = tg_gpu_new(&ops, &b);
  assert_non_null(gpu);
  f->cfg.gpu = gpu;
  f->cfg.nic = NULL;
  f->cfg.gpu_deadline_ms = 100;
  f->cfg.stop_timeout_ms = 100;
  start(f);
  assert_true(wait_for(&f->rec, TG_HEALTH_RAISED, KIND(GPU_LOST), "gpu-check", -1, 1, NULL));
  int64_t t0 = health_testing_now_ms();
  tg_health_checker_free(f->checker);
  f->checker = NULL;
  assert_true(health_testing_now_ms() - t0 < 1500);

  /* Let the stuck call return; the backend must live until it has. */
  pthread_mutex_lock(&b.mu);
  b.released = 1;
  pthread_cond_broadcast(&b.cv);
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += 5;
  while (b.done == 0)
    if (pthread_cond_timedwait(&b.cv, &b.mu, &deadline) != 0) break;
  int done = b.done;
  pthread_mutex_unlock(&b.mu);
  assert_true(done > 0);
  health_testing_sleep_ms(50); /* the worker frees the checker and exits */
  tg_gpu_close(gpu);
  pthread_cond_destroy(&b.cv);
  pthread_mutex_destroy(&b.mu);
}

static void test_start_and_stop_edges(void **state) {
  fixture *f = *state;
  char err[256];
  tg_health_config none = {0};
  tg_health_checker *c = tg_health_checker_new(&none, err, sizeof err);
  assert_non_null(c);
  assert_int_equal(tg_health_checker_stop(c), 0); /* never started */
  tg_health_checker_free(c);

  c = tg_health_checker_new(&none, err, sizeof err);
  assert_non_null(c);
  assert_int_equal(tg_health_checker_start(c), 0); /* no checks at all */
  assert_int_equal(tg_health_checker_healthy(c), 1);
  tg_health_checker_free(c);

  start(f);
  assert_int_equal(tg_health_checker_start(f->checker), -1);
  tg_health_checker_check_now(f->checker);
  assert_int_equal(tg_health_checker_stop(f->checker), 0);
  assert_int_equal(tg_health_checker_stop(f->checker), 0);
}

static void test_xid_severity_table(void **state) {
  static const uint32_t fatal[] = {79, 95};
  static const uint32_t error[] = {38, 48, 62, 63, 64, 74, 92, 94, 119, 120, 140};
  static const uint32_t warning[] = {0, 13, 31, 32, 43, 45, 61, 68, 69, 109, 999999};
  for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
    assert_int_equal(tg_health_xid_severity(fatal[i]), SEV(FATAL));
  for (size_t i = 0; i < sizeof error / sizeof error[0]; i++)
    assert_int_equal(tg_health_xid_severity(error[i]), SEV(ERROR));
  for (size_t i = 0; i < sizeof warning / sizeof warning[0]; i++)
    assert_int_equal(tg_health_xid_severity(warning[i]), SEV(WARNING));
}

static void test_fault_to_proto(void **state) {
  tg_health_fault f = {KIND(GPU_XID), SEV(FATAL), "gpu1", 79, "XID 79 on gpu1", 1000, 900};
  Tardigrade__V1__Fault msg;
  tg_health_fault_to_proto(&f, &msg);
  size_t len = tardigrade__v1__fault__get_packed_size(&msg);
  uint8_t *buf = malloc(len);
  assert_non_null(buf);
  tardigrade__v1__fault__pack(&msg, buf);
  Tardigrade__V1__Fault *back = tardigrade__v1__fault__unpack(NULL, len, buf);
  assert_non_null(back);
  assert_int_equal(back->kind, KIND(GPU_XID));
  assert_int_equal(back->severity, SEV(FATAL));
  assert_string_equal(back->component, "gpu1");
  assert_int_equal(back->code, 79);
  assert_string_equal(back->detail, "XID 79 on gpu1");
  assert_int_equal(back->detected_unix_ms, 1000);
  assert_int_equal(back->occurred_unix_ms, 900);
  assert_int_equal(back->rank, -1);
  tardigrade__v1__fault__free_unpacked(back, NULL);
  free(buf);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_healthy_node_reports_nothing, setup, teardown),
      cmocka_unit_test_setup_teardown(test_xid_reported_once_with_its_severity, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ecc_makes_the_node_unhealthy, setup, teardown),
      cmocka_unit_test_setup_teardown(test_heat_is_a_warning, setup, teardown),
      cmocka_unit_test_setup_teardown(test_lost_gpu_is_fatal, setup, teardown),
      cmocka_unit_test_setup_teardown(test_row_remap_and_pcie, setup, teardown),
      cmocka_unit_test_setup_teardown(test_nic_down, setup, teardown),
      cmocka_unit_test_setup_teardown(test_nic_flaps_and_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rdma_port_down, setup, teardown),
      cmocka_unit_test_setup_teardown(test_hung_gpu_check, setup, teardown),
      cmocka_unit_test_setup_teardown(test_free_while_a_check_is_stuck, setup, teardown),
      cmocka_unit_test_setup_teardown(test_start_and_stop_edges, setup, teardown),
      cmocka_unit_test(test_xid_severity_table),
      cmocka_unit_test(test_fault_to_proto),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
