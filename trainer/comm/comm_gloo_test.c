/* The gloo communicator against a real etcd (started by the harness), with
 * 4 ranks as threads of this process on loopback:
 *   - every collective on float32 and int64, results checked exactly;
 *   - a collective with one rank missing returns TIMEOUT within its deadline,
 *     and its peers fail fast instead of waiting for theirs;
 *   - tg_comm_abort from another thread unblocks a waiting rank (ABORTED);
 *     the 3 survivors re-form under generation 2 in the same threads and
 *     all-reduce exactly, while the old rank is refused by the new world;
 *   - argument checks and a world of one.
 *
 * cmocka's assertions must run on the main thread, so rank threads record
 * what went wrong in their rank_state and the main thread checks it after
 * joining them (with a deadline). Every wait here has a deadline. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log/log.h"
#include "tests/harness/etcd_cluster.h"
#include "trainer/comm/comm.h"

#define WORLD 4
#define OP_TIMEOUT_MS 10000
#define CONNECT_TIMEOUT_MS 10000
#define JOIN_TIMEOUT_MS 30000

static tg_etcd_cluster *cluster;

/* ------------------------------------------------------------- helpers */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Counters the ranks and the main thread wait on, each wait with a deadline. */
typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int entered;       /* ranks inside the collective under test */
  int finished;      /* ranks whose collective under test returned */
  int world_changed; /* the "agent" told everyone to re-form */
  int reformed;      /* ranks done with the new generation */
} shared;

static void shared_init(shared *sh) {
  memset(sh, 0, sizeof *sh);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_mutex_init(&sh->mu, NULL);
  pthread_cond_init(&sh->cv, &ca);
  pthread_condattr_destroy(&ca);
}

static void shared_destroy(shared *sh) {
  pthread_mutex_destroy(&sh->mu);
  pthread_cond_destroy(&sh->cv);
}

static void shared_add(shared *sh, int *counter) {
  pthread_mutex_lock(&sh->mu);
  (*counter)++;
  pthread_cond_broadcast(&sh->cv);
  pthread_mutex_unlock(&sh->mu);
}

/* Waits until *counter >= target; 0, or -1 at the deadline. */
static int shared_wait(shared *sh, const int *counter, int target, int64_t timeout_ms) {
  struct timespec dl;
  clock_gettime(CLOCK_MONOTONIC, &dl);
  dl.tv_sec += timeout_ms / 1000;
  dl.tv_nsec += (timeout_ms % 1000) * 1000000;
  if (dl.tv_nsec >= 1000000000) {
    dl.tv_sec++;
    dl.tv_nsec -= 1000000000;
  }
  int rc = 0;
  pthread_mutex_lock(&sh->mu);
  while (*counter < target && rc == 0) rc = pthread_cond_timedwait(&sh->cv, &sh->mu, &dl);
  int ok = *counter >= target;
  pthread_mutex_unlock(&sh->mu);
  return ok ? 0 : -1;
}

typedef struct rank_state rank_state;
typedef void (*rank_fn)(rank_state *r);

/* One rank: its thread, its communicator and what it saw. */
struct rank_state {
  int rank;
  const char *job;
  rank_fn fn;
  shared *sh;
  pthread_t thread;
  tg_comm *comm;
  int failures;
  char failure[512];   /* the first check that failed */
  tg_comm_code code;   /* result of the collective under test */
  tg_comm_status st;
  int64_t elapsed_ms;
  tg_comm_code extra_code[2]; /* test-specific further results */
  char extra_message[2][256];
};

static void rank_fail(rank_state *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rank_fail(rank_state *r, const char *fmt, ...) {
  if (r->failures++) return;
  va_list ap;
  va_start(ap, fmt);
  int n = snprintf(r->failure, sizeof r->failure, "rank %d: ", r->rank);
  vsnprintf(r->failure + n, sizeof r->failure - (size_t)n, fmt, ap);
  va_end(ap);
}

#define CHECK(r, cond, ...)          \
  do {                               \
    if (!(cond)) rank_fail(r, __VA_ARGS__); \
  } while (0)

static void prefix_for(char *buf, size_t len, const char *job, int64_t generation) {
  snprintf(buf, len, "/tardigrade/jobs/%s/gen/%" PRId64 "/gloo/", job, generation);
}

/* Creates a gloo communicator for (job, prefix generation) holding
 * `generation`; NULL with st set on failure. */
static tg_comm *comm_open(const char *job, int64_t prefix_generation, int64_t generation, int rank,
                          int world, int64_t connect_timeout_ms, tg_comm_status *st) {
  char prefix[256];
  prefix_for(prefix, sizeof prefix, job, prefix_generation);
  tg_comm_config cfg = {
      .backend = TG_COMM_GLOO,
      .rank = rank,
      .world_size = world,
      .generation = generation,
      .store_address = tg_etcd_cluster_endpoints(cluster),
      .store_prefix = prefix,
      .connect_timeout_ms = connect_timeout_ms,
  };
  return tg_comm_create(&cfg, st);
}

/* A rank joining generation 1 of r->job in a world of WORLD. */
static tg_comm *join_first_world(rank_state *r) {
  tg_comm_status st = {0};
  tg_comm *c = comm_open(r->job, 1, 1, r->rank, WORLD, CONNECT_TIMEOUT_MS, &st);
  CHECK(r, c != NULL, "create: %s", st.message);
  return c;
}

static void *rank_main(void *arg) {
  rank_state *r = arg;
  r->fn(r);
  return NULL;
}

/* Runs fn on WORLD rank threads and joins them, each within the deadline. */
static void run_ranks(rank_state *rs, const char *job, rank_fn fn, shared *sh) {
  for (int i = 0; i < WORLD; i++) {
    memset(&rs[i], 0, sizeof rs[i]);
    rs[i].rank = i;
    rs[i].job = job;
    rs[i].fn = fn;
    rs[i].sh = sh;
    assert_int_equal(pthread_create(&rs[i].thread, NULL, rank_main, &rs[i]), 0);
  }
}

static void join_ranks(rank_state *rs) {
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += JOIN_TIMEOUT_MS / 1000;
  for (int i = 0; i < WORLD; i++) {
    int rc = pthread_timedjoin_np(rs[i].thread, NULL, &dl);
    if (rc != 0) fail_msg("rank %d did not finish within %d ms: a wait has no deadline", i,
                          JOIN_TIMEOUT_MS);
  }
  for (int i = 0; i < WORLD; i++)
    if (rs[i].failures) fail_msg("%s (%d failed checks)", rs[i].failure, rs[i].failures);
}

static void expect_ok(rank_state *r, tg_comm_code code, const tg_comm_status *st, const char *what) {
  CHECK(r, code == TG_COMM_OK, "%s: %s %s", what, tg_comm_code_name(code), st->message);
}

/* --------------------------------------------------------- collectives */

#define N_FLOAT 10007
#define N_INT64 300001 /* 2.4 MB: more than one of gloo's 1 MB segments, odd */
#define BLOCK 1001
#define GATHER_BYTES 37
#define BCAST_BYTES 4099
#define BIG 1000000000007LL

static void check_all_reduce(rank_state *r, tg_comm *c) {
  tg_comm_status st = {0};
  float *f = malloc(N_FLOAT * sizeof *f);
  int64_t *v = malloc(N_INT64 * sizeof *v);
  CHECK(r, f && v, "out of memory");
  if (!f || !v) goto out;

  /* Halves and small integers: every partial sum is exact in float32. */
  for (int i = 0; i < N_FLOAT; i++) f[i] = 0.5f * (float)(r->rank + 1) + (float)(i % 100);
  expect_ok(r, tg_comm_all_reduce(c, f, N_FLOAT, TG_COMM_FLOAT32, OP_TIMEOUT_MS, &st), &st,
            "all_reduce float32");
  for (int i = 0; i < N_FLOAT; i++)
    if (f[i] != 5.0f + 4.0f * (float)(i % 100)) {
      rank_fail(r, "all_reduce float32: [%d] = %g", i, (double)f[i]);
      break;
    }

  /* Fixed-point gradients: large, both signs, sums exact to the unit. */
  for (int i = 0; i < N_INT64; i++)
    v[i] = (int64_t)(r->rank + 1) * BIG * (i % 2 ? -1 : 1) + i;
  expect_ok(r, tg_comm_all_reduce(c, v, N_INT64, TG_COMM_INT64, OP_TIMEOUT_MS, &st), &st,
            "all_reduce int64");
  for (int i = 0; i < N_INT64; i++)
    if (v[i] != 10 * BIG * (i % 2 ? -1 : 1) + (int64_t)WORLD * i) {
      rank_fail(r, "all_reduce int64: [%d] = %" PRId64, i, v[i]);
      break;
    }
out:
  free(f);
  free(v);
}

static void check_reduce_scatter(rank_state *r, tg_comm *c) {
  tg_comm_status st = {0};
  int64_t send[WORLD * BLOCK], recv[BLOCK];
  for (int j = 0; j < WORLD * BLOCK; j++) send[j] = (int64_t)(r->rank + 1) * (BIG + j);
  expect_ok(r, tg_comm_reduce_scatter(c, send, recv, BLOCK, TG_COMM_INT64, OP_TIMEOUT_MS, &st),
            &st, "reduce_scatter int64");
  for (int k = 0; k < BLOCK; k++)
    if (recv[k] != 10 * (BIG + r->rank * BLOCK + k)) {
      rank_fail(r, "reduce_scatter int64: [%d] = %" PRId64, k, recv[k]);
      break;
    }

  float fsend[WORLD * BLOCK], frecv[BLOCK];
  for (int j = 0; j < WORLD * BLOCK; j++) fsend[j] = (float)(r->rank + j % 7);
  expect_ok(r, tg_comm_reduce_scatter(c, fsend, frecv, BLOCK, TG_COMM_FLOAT32, OP_TIMEOUT_MS, &st),
            &st, "reduce_scatter float32");
  for (int k = 0; k < BLOCK; k++)
    if (frecv[k] != (float)(6 + WORLD * ((r->rank * BLOCK + k) % 7))) {
      rank_fail(r, "reduce_scatter float32: [%d] = %g", k, (double)frecv[k]);
      break;
    }
}

static void check_gather_broadcast_barrier(rank_state *r, tg_comm *c) {
  tg_comm_status st = {0};
  uint8_t send[GATHER_BYTES], recv[WORLD * GATHER_BYTES];
  for (int k = 0; k < GATHER_BYTES; k++) send[k] = (uint8_t)(r->rank * GATHER_BYTES + k);
  expect_ok(r, tg_comm_all_gather(c, send, recv, GATHER_BYTES, OP_TIMEOUT_MS, &st), &st,
            "all_gather");
  for (int k = 0; k < WORLD * GATHER_BYTES; k++)
    if (recv[k] != (uint8_t)k) {
      rank_fail(r, "all_gather: [%d] = %d", k, recv[k]);
      break;
    }

  uint8_t buf[BCAST_BYTES];
  for (int k = 0; k < BCAST_BYTES; k++) buf[k] = r->rank == 2 ? (uint8_t)(k * 3) : 0xAA;
  expect_ok(r, tg_comm_broadcast(c, buf, BCAST_BYTES, 2, OP_TIMEOUT_MS, &st), &st, "broadcast");
  for (int k = 0; k < BCAST_BYTES; k++)
    if (buf[k] != (uint8_t)(k * 3)) {
      rank_fail(r, "broadcast: [%d] = %d", k, buf[k]);
      break;
    }

  expect_ok(r, tg_comm_barrier(c, OP_TIMEOUT_MS, &st), &st, "barrier");
}

static void collectives_rank(rank_state *r) {
  tg_comm *c = join_first_world(r);
  if (!c) return;
  CHECK(r, tg_comm_rank(c) == r->rank && tg_comm_world_size(c) == WORLD &&
               tg_comm_generation(c) == 1,
        "getters");
  check_all_reduce(r, c);
  check_reduce_scatter(r, c);
  check_gather_broadcast_barrier(r, c);
  CHECK(r, tg_comm_entered(c) == 7, "entered %" PRIu64 " collectives, expected 7",
        tg_comm_entered(c));
  tg_comm_free(c);
}

static void test_collectives_exact(void **state) {
  rank_state rs[WORLD];
  run_ranks(rs, "collectives", collectives_rank, NULL);
  join_ranks(rs);
}

/* -------------------------------------------------------- missing rank */

#define SHORT_TIMEOUT_MS 800
#define PEER_TIMEOUT_MS 2500

/* Ranks 0-2 enter an all_reduce; rank 3 never does. Rank 0 has the
 * shortest deadline, so it is the one that times out first; ranks 1-2
 * fail no later than their own (longer) deadline: at once when they wait
 * on rank 0, whose connections its failure closes, else at their deadline. */
static void missing_rank(rank_state *r) {
  tg_comm *c = join_first_world(r);
  if (!c) return;
  if (r->rank < 3) {
    int64_t v[16] = {0};
    int64_t t0 = now_ms();
    r->code = tg_comm_all_reduce(c, v, 16, TG_COMM_INT64,
                                 r->rank == 0 ? SHORT_TIMEOUT_MS : PEER_TIMEOUT_MS, &r->st);
    r->elapsed_ms = now_ms() - t0;
    shared_add(r->sh, &r->sh->finished);
  } else {
    CHECK(r, shared_wait(r->sh, &r->sh->finished, 3, JOIN_TIMEOUT_MS) == 0,
          "the others did not finish");
  }
  tg_comm_free(c);
}

static void test_missing_rank_times_out(void **state) {
  shared sh;
  shared_init(&sh);
  rank_state rs[WORLD];
  run_ranks(rs, "missing", missing_rank, &sh);
  join_ranks(rs);
  shared_destroy(&sh);

  printf("rank 0: %s after %" PRId64 " ms: %s\n", tg_comm_code_name(rs[0].code), rs[0].elapsed_ms,
         rs[0].st.message);
  assert_int_equal(rs[0].code, TG_COMM_TIMEOUT);
  assert_true(rs[0].elapsed_ms >= SHORT_TIMEOUT_MS - 50);
  assert_true(rs[0].elapsed_ms < SHORT_TIMEOUT_MS + 1500);
  for (int i = 1; i < 3; i++) {
    printf("rank %d: %s after %" PRId64 " ms: %s\n", i, tg_comm_code_name(rs[i].code),
           rs[i].elapsed_ms, rs[i].st.message);
    assert_int_not_equal(rs[i].code, TG_COMM_OK);
    assert_true(rs[i].elapsed_ms < PEER_TIMEOUT_MS + 1500);
  }
}

/* A world one member of which will never come (the coordinator already
 * replaced it): creation gives up as soon as `cancelled` says so, long
 * before its connect timeout. */
static int cancel_after_200ms(void *user) { return now_ms() >= *(const int64_t *)user; }

static void test_creation_cancelled(void **state) {
  (void)state;
  char prefix[256];
  prefix_for(prefix, sizeof prefix, "cancelled", 1);
  int64_t t0 = now_ms(), give_up = t0 + 200;
  tg_comm_config cfg = {
      .backend = TG_COMM_GLOO,
      .rank = 0,
      .world_size = 2,
      .generation = 1,
      .store_address = tg_etcd_cluster_endpoints(cluster),
      .store_prefix = prefix,
      .connect_timeout_ms = 20000,
      .cancelled = cancel_after_200ms,
      .cancel_user = &give_up,
  };
  tg_comm_status st = {0};
  tg_comm *c = tg_comm_create(&cfg, &st);
  int64_t elapsed = now_ms() - t0;
  printf("cancelled after %" PRId64 " ms: %s\n", elapsed, st.message);
  assert_null(c);
  assert_int_equal(st.code, TG_COMM_ABORTED);
  assert_non_null(strstr(st.message, "a newer world exists"));
  assert_true(elapsed >= 200 && elapsed < 5000);
}

/* ----------------------------------------------------- abort, re-form */

/* Ranks 0-2 wait in an all_reduce that rank 3 never enters. The main
 * thread (a watchdog) aborts rank 0, which returns ABORTED at once; then
 * (the agent: the world changed) it aborts every communicator. Ranks 0-2 stay alive, free the old communicator and
 * form generation 2 as a world of 3; rank 3, still holding generation 1,
 * is refused by the new world and cannot re-form the old one. */
static void survivor(rank_state *r, tg_comm *old) {
  shared *sh = r->sh;
  int64_t v[16] = {0};
  shared_add(sh, &sh->entered);
  int64_t t0 = now_ms();
  r->code = tg_comm_all_reduce(old, v, 16, TG_COMM_INT64, OP_TIMEOUT_MS, &r->st);
  r->elapsed_ms = now_ms() - t0;
  shared_add(sh, &sh->finished);
  CHECK(r, shared_wait(sh, &sh->world_changed, 1, JOIN_TIMEOUT_MS) == 0, "world never changed");
  tg_comm_free(old);

  tg_comm_status st = {0};
  tg_comm *c = comm_open(r->job, 2, 2, r->rank, 3, CONNECT_TIMEOUT_MS, &st);
  CHECK(r, c != NULL, "re-form under generation 2: %s", st.message);
  if (c) {
    int64_t g[N_FLOAT];
    for (int i = 0; i < N_FLOAT; i++) g[i] = (int64_t)(r->rank + 1) * -BIG + i;
    expect_ok(r, tg_comm_all_reduce(c, g, N_FLOAT, TG_COMM_INT64, OP_TIMEOUT_MS, &st), &st,
              "all_reduce in generation 2");
    for (int i = 0; i < N_FLOAT; i++)
      if (g[i] != 6 * -BIG + 3 * i) {
        rank_fail(r, "generation 2 all_reduce: [%d] = %" PRId64, i, g[i]);
        break;
      }
    expect_ok(r, tg_comm_barrier(c, OP_TIMEOUT_MS, &st), &st, "barrier in generation 2");
  }
  shared_add(sh, &sh->reformed);
  /* Stay in the world until the stale rank has tried to join it. */
  CHECK(r, shared_wait(sh, &sh->reformed, 4, JOIN_TIMEOUT_MS) == 0, "stale rank never finished");
  tg_comm_free(c);
}

static void stale_rank(rank_state *r, tg_comm *old) {
  shared *sh = r->sh;
  tg_comm_status st = {0};
  CHECK(r, shared_wait(sh, &sh->world_changed, 1, JOIN_TIMEOUT_MS) == 0, "world never changed");
  r->code = tg_comm_barrier(old, OP_TIMEOUT_MS, &r->st);
  tg_comm_free(old);
  CHECK(r, shared_wait(sh, &sh->reformed, 3, JOIN_TIMEOUT_MS) == 0, "survivors never re-formed");

  /* Generation 1 again: nobody is there any more. */
  tg_comm *c = comm_open(r->job, 1, 1, r->rank, WORLD, 1000, &st);
  CHECK(r, c == NULL, "a stale rank re-formed generation 1 alone");
  tg_comm_free(c);
  r->extra_code[0] = st.code;
  snprintf(r->extra_message[0], sizeof r->extra_message[0], "%s", st.message);

  /* Generation 2's prefix while holding generation 1: fenced. */
  c = comm_open(r->job, 2, 1, r->rank, WORLD, 3000, &st);
  CHECK(r, c == NULL, "a generation-1 rank joined generation 2");
  tg_comm_free(c);
  r->extra_code[1] = st.code;
  snprintf(r->extra_message[1], sizeof r->extra_message[1], "%s", st.message);
  shared_add(sh, &sh->reformed);
}

static void abort_rank(rank_state *r) {
  tg_comm *c = join_first_world(r);
  pthread_mutex_lock(&r->sh->mu);
  r->comm = c; /* read by the main thread, which aborts it */
  pthread_mutex_unlock(&r->sh->mu);
  if (!c) {
    shared_add(r->sh, &r->sh->finished); /* let the main thread go on */
    return;
  }
  if (r->rank < 3)
    survivor(r, c);
  else
    stale_rank(r, c);
}

static void test_abort_then_reform(void **state) {
  shared sh;
  shared_init(&sh);
  rank_state rs[WORLD];
  run_ranks(rs, "reform", abort_rank, &sh);

  /* Watchdog: once ranks 0-2 are blocked, abort rank 0 from this thread:
   * it must come back at once. */
  int entered = shared_wait(&sh, &sh.entered, 3, JOIN_TIMEOUT_MS);
  usleep(300 * 1000);
  int64_t t0 = now_ms();
  pthread_mutex_lock(&sh.mu);
  tg_comm_abort(rs[0].comm);
  pthread_mutex_unlock(&sh.mu);
  int first = shared_wait(&sh, &sh.finished, 1, 2000);
  int64_t first_ms = now_ms() - t0;
  /* The agent: the world changed, abort every communicator of generation
   * 1; ranks 1-2 come back at once too, long before their deadline. */
  t0 = now_ms();
  pthread_mutex_lock(&sh.mu);
  for (int i = 0; i < WORLD; i++) tg_comm_abort(rs[i].comm);
  pthread_mutex_unlock(&sh.mu);
  int all = shared_wait(&sh, &sh.finished, 3, 2000);
  int64_t all_ms = now_ms() - t0;
  shared_add(&sh, &sh.world_changed);
  join_ranks(rs);
  shared_destroy(&sh);

  assert_int_equal(entered, 0);
  printf("first rank back %" PRId64 " ms after the watchdog's abort, all %" PRId64
         " ms after the agent's\n", first_ms, all_ms);
  assert_int_equal(first, 0);
  assert_int_equal(all, 0);
  assert_int_equal(rs[0].code, TG_COMM_ABORTED);
  for (int i = 0; i < 3; i++) {
    printf("rank %d: %s after %" PRId64 " ms: %s\n", i, tg_comm_code_name(rs[i].code),
           rs[i].elapsed_ms, rs[i].st.message);
    assert_int_not_equal(rs[i].code, TG_COMM_OK);
    assert_true(rs[i].elapsed_ms < OP_TIMEOUT_MS / 2);
  }
  /* The stale rank: its aborted communicator refuses at once, the old
   * world cannot be re-formed, and the new one fences it out. */
  assert_int_equal(rs[3].code, TG_COMM_ABORTED);
  printf("stale rank, generation 1 again: %s: %s\n", tg_comm_code_name(rs[3].extra_code[0]),
         rs[3].extra_message[0]);
  assert_int_not_equal(rs[3].extra_code[0], TG_COMM_OK);
  printf("stale rank, generation 2 prefix: %s: %s\n", tg_comm_code_name(rs[3].extra_code[1]),
         rs[3].extra_message[1]);
  assert_int_equal(rs[3].extra_code[1], TG_COMM_ERROR);
  assert_non_null(strstr(rs[3].extra_message[1], "another generation"));
}

/* ------------------------------------------------ arguments, world of 1 */

static void test_arguments_and_world_of_one(void **state) {
  tg_comm_status st = {0};
  tg_comm_config bad = {.backend = TG_COMM_GLOO, .rank = 4, .world_size = 4, .generation = 1};
  assert_null(tg_comm_create(&bad, &st));
  assert_int_equal(st.code, TG_COMM_ERROR);
  bad.rank = 0;
  assert_null(tg_comm_create(&bad, &st)); /* no store */
  assert_non_null(strstr(st.message, "store"));
  assert_int_equal(tg_comm_barrier(NULL, 1000, &st), TG_COMM_ERROR);

  tg_comm *c = comm_open("one", 1, 1, 0, 1, CONNECT_TIMEOUT_MS, &st);
  assert_non_null(c);
  int64_t v[3] = {1, -2, INT64_MAX};
  assert_int_equal(tg_comm_all_reduce(c, v, 3, TG_COMM_INT64, 1000, &st), TG_COMM_OK);
  assert_true(v[0] == 1 && v[1] == -2 && v[2] == INT64_MAX);
  uint8_t b[5] = {1, 2, 3, 4, 5}, g[5];
  assert_int_equal(tg_comm_all_gather(c, b, g, 5, 1000, &st), TG_COMM_OK);
  assert_memory_equal(b, g, 5);
  assert_int_equal(tg_comm_broadcast(c, b, 5, 1, 1000, &st), TG_COMM_ERROR); /* root 1 of 1 */
  assert_int_equal(tg_comm_barrier(c, 0, &st), TG_COMM_ERROR);              /* no deadline */
  assert_int_equal(tg_comm_all_reduce(c, v, 3, (tg_comm_dtype)9, 1000, &st), TG_COMM_ERROR);
  assert_int_equal(tg_comm_barrier(c, 1000, &st), TG_COMM_OK);
  tg_comm_abort(c);
  tg_comm_abort(c); /* idempotent */
  assert_int_equal(tg_comm_barrier(c, 1000, &st), TG_COMM_ABORTED);
  tg_comm_free(c);
}

/* ------------------------------------------------------------------ main */

static int group_setup(void **state) {
  char err[256];
  cluster = tg_etcd_cluster_start(1, err, sizeof err);
  if (!cluster) fprintf(stderr, "etcd: %s\n", err);
  return cluster ? 0 : -1;
}

static int group_teardown(void **state) {
  tg_etcd_cluster_free(cluster);
  cluster = NULL;
  return 0;
}

int main(void) {
  tg_log_init("comm_gloo_test", TG_LOG_WARN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_arguments_and_world_of_one),
      cmocka_unit_test(test_collectives_exact),
      cmocka_unit_test(test_missing_rank_times_out),
      cmocka_unit_test(test_creation_cancelled),
      cmocka_unit_test(test_abort_then_reform),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
