/* A stand-in trainer for the agent's tests: it speaks the agent's local
 * service exactly as libtardigrade will (Join, ReportProgress), and
 * simulates a synchronous collective with a barrier of files, so that when
 * one worker is stopped its peers really wait in "collective" seq+1 while
 * it stays at seq. Steps take STEP_MS; a new generation makes it re-join.
 * Before reporting a step it writes its snapshot of that step into the
 * node's checkpoint store (named in the Join answer) the way libtardigrade
 * does: key {job, generation, step, shard = rank, world size}, bytes = a
 * buffer count, each buffer's length, the buffers (one of SNAPSHOT_BYTES).
 * It logs each new replicated step the agent reports back.
 *
 *   usage: worker [STEP_MS [SNAPSHOT_BYTES]]   (50 ms, 4096 bytes)
 *   TG_AGENT_SOCKET, TG_SLOT   from the agent (or the test)
 *   TG_BARRIER_DIR             shared by all workers of the test */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/ckpt/store.h"
#include "common/rpc/rpc.h"
#include "proto/tardigrade/v1/agent.pb-c.h"

static void sleep_ms(int64_t ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static int count_files(const char *dir, int world_size) {
  int n = 0;
  for (int r = 0; r < world_size; r++) {
    char path[600];
    snprintf(path, sizeof path, "%s/%d", dir, r);
    if (access(path, F_OK) == 0) n++;
  }
  return n;
}

/* The snapshot of `step`: one buffer whose bytes depend on rank and step. */
static int write_snapshot(tg_ckpt_store *store, const char *job, uint64_t gen, uint64_t step, int rank,
                          int size, size_t state_bytes) {
  size_t len = 2 * sizeof(uint64_t) + state_bytes;
  unsigned char *buf = malloc(len);
  if (!buf) return -1;
  uint64_t dir[2] = {1, state_bytes};
  memcpy(buf, dir, sizeof dir);
  for (size_t i = 0; i < state_bytes; i++) buf[sizeof dir + i] = (unsigned char)(rank * 31 + step * 7 + i);
  tg_ckpt_key key = {.generation = gen, .step = step, .shard = rank, .world_size = (uint32_t)size};
  snprintf(key.job_id, sizeof key.job_id, "%s", job);
  int rc = tg_ckpt_store_write(store, &key, buf, len);
  free(buf);
  if (rc != TG_CKPT_OK) fprintf(stderr, "worker: snapshot of step %" PRIu64 ": %s\n", step, tg_ckpt_result_name(rc));
  return rc;
}

int main(int argc, char **argv) {
  const char *sock = getenv("TG_AGENT_SOCKET"), *slot_s = getenv("TG_SLOT"), *bar = getenv("TG_BARRIER_DIR");
  int64_t step_ms = argc > 1 ? atoll(argv[1]) : 50;
  size_t state_bytes = argc > 2 ? (size_t)atoll(argv[2]) : 4096;
  if (!sock || !slot_s || !bar) {
    fprintf(stderr, "worker: needs TG_AGENT_SOCKET, TG_SLOT and TG_BARRIER_DIR\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  char target[300], err[256];
  snprintf(target, sizeof target, "unix:%s", sock);
  tg_rpc_channel *ch = tg_rpc_channel_new(target, NULL, err, sizeof err);
  if (!ch) {
    fprintf(stderr, "worker: %s\n", err);
    return 1;
  }
  uint32_t slot = (uint32_t)atoi(slot_s);
  uint64_t known = 0;
  tg_ckpt_store *store = NULL;
  char store_name[256] = "", job[TG_CKPT_JOB_ID_MAX] = "";
  for (;;) {
    Tardigrade__V1__JoinRequest jr = TARDIGRADE__V1__JOIN_REQUEST__INIT;
    jr.slot = slot;
    jr.pid = getpid();
    jr.known_generation = known;
    ProtobufCMessage *m = NULL;
    tg_rpc_status st = {0};
    tg_rpc_call_opts o = {.deadline_ms = 60000, .wait_for_ready = 1};
    if (tg_rpc_unary(ch, "/tardigrade.v1.Agent/Join", &jr.base, &tardigrade__v1__join_response__descriptor,
                     &m, &o, &st) != TG_RPC_OK) {
      fprintf(stderr, "worker: join: %s\n", st.message);
      sleep_ms(100);
      continue;
    }
    Tardigrade__V1__JoinResponse *j = (Tardigrade__V1__JoinResponse *)m;
    uint64_t gen = j->world->generation;
    int rank = j->rank, size = (int)j->world->world_size;
    printf("worker pid %d slot %u: rank %d of %d in generation %" PRIu64 "\n", (int)getpid(), slot, rank, size, gen);
    if (j->shm_name[0] && strcmp(j->shm_name, store_name) != 0) {
      tg_ckpt_store_close(store);
      store = tg_ckpt_store_open(j->shm_name, err, sizeof err);
      if (!store) fprintf(stderr, "worker: no snapshots: %s\n", err);
      snprintf(store_name, sizeof store_name, "%s", store ? j->shm_name : "");
    }
    snprintf(job, sizeof job, "%s", j->world->job_id);
    protobuf_c_message_free_unpacked(m, NULL);
    uint64_t replicated = 0;
    known = gen;
    uint64_t seq = 0;
    for (uint64_t step = 1;; step++) {
      int64_t t0 = 0;
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      t0 = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
      sleep_ms(step_ms); /* "compute" */
      if (store && job[0]) write_snapshot(store, job, gen, step, rank, size, state_bytes);
      seq++;             /* enter the collective */
      Tardigrade__V1__RankProgress p = TARDIGRADE__V1__RANK_PROGRESS__INIT;
      p.rank = rank;
      p.step = step;
      p.collective_seq = seq;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      p.step_time_ms = (uint32_t)((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - t0);
      Tardigrade__V1__ProgressRequest pr = TARDIGRADE__V1__PROGRESS_REQUEST__INIT;
      pr.slot = slot;
      pr.generation = gen;
      pr.progress = &p;
      /* Into the barrier before telling the agent: a worker stopped after
       * its report has always let its peers through, so the one that did
       * not enter is the one still at the lower seq (reporting first left
       * a window where both showed the same seq and nobody could be named). */
      char dir[600], mine[700];
      snprintf(dir, sizeof dir, "%s/g%" PRIu64 "-s%" PRIu64, bar, gen, seq);
      mkdir(dir, 0755);
      snprintf(mine, sizeof mine, "%s/%d", dir, rank);
      FILE *f = fopen(mine, "w");
      if (f) fclose(f);
      tg_rpc_call_opts po = {.deadline_ms = 5000};
      if (tg_rpc_unary(ch, "/tardigrade.v1.Agent/ReportProgress", &pr.base,
                       &tardigrade__v1__progress_response__descriptor, &m, &po, &st) != TG_RPC_OK)
        break;
      uint64_t now_gen = ((Tardigrade__V1__ProgressResponse *)m)->generation;
      uint64_t now_replicated = ((Tardigrade__V1__ProgressResponse *)m)->replicated_step;
      protobuf_c_message_free_unpacked(m, NULL);
      if (now_replicated != replicated) {
        replicated = now_replicated;
        printf("worker slot %u: replicated step %" PRIu64 " in generation %" PRIu64 "\n", slot, replicated, gen);
      }
      if (now_gen != gen) break; /* the world changed: re-join */
      /* The barrier: wait until every rank entered this collective. */
      int changed = 0;
      while (count_files(dir, size) < size && !changed) {
        sleep_ms(5);
        /* Waiting peers still report that they are in the collective. */
        Tardigrade__V1__ProgressRequest again = pr;
        if (tg_rpc_unary(ch, "/tardigrade.v1.Agent/ReportProgress", &again.base,
                         &tardigrade__v1__progress_response__descriptor, &m, &po, &st) != TG_RPC_OK) {
          changed = 1;
          break;
        }
        changed = ((Tardigrade__V1__ProgressResponse *)m)->generation != gen;
        protobuf_c_message_free_unpacked(m, NULL);
      }
      if (changed) break;
    }
  }
}
