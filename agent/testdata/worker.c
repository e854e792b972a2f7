/* A stand-in trainer for the agent's tests: it speaks the agent's local
 * service exactly as libtardigrade will (Join, ReportProgress), and
 * simulates a synchronous collective with a barrier of files, so that when
 * one worker is stopped its peers really wait in "collective" seq+1 while
 * it stays at seq. Steps take --step-ms; a new generation makes it re-join.
 *
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

int main(int argc, char **argv) {
  const char *sock = getenv("TG_AGENT_SOCKET"), *slot_s = getenv("TG_SLOT"), *bar = getenv("TG_BARRIER_DIR");
  int64_t step_ms = argc > 1 ? atoll(argv[1]) : 50;
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
    protobuf_c_message_free_unpacked(m, NULL);
    known = gen;
    uint64_t seq = 0;
    for (uint64_t step = 1;; step++) {
      int64_t t0 = 0;
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      t0 = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
      sleep_ms(step_ms); /* "compute" */
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
      tg_rpc_call_opts po = {.deadline_ms = 5000};
      if (tg_rpc_unary(ch, "/tardigrade.v1.Agent/ReportProgress", &pr.base,
                       &tardigrade__v1__progress_response__descriptor, &m, &po, &st) != TG_RPC_OK)
        break;
      uint64_t now_gen = ((Tardigrade__V1__ProgressResponse *)m)->generation;
      protobuf_c_message_free_unpacked(m, NULL);
      if (now_gen != gen) break; /* the world changed: re-join */
      /* The barrier: wait until every rank entered this collective. */
      char dir[600], mine[700];
      snprintf(dir, sizeof dir, "%s/g%" PRIu64 "-s%" PRIu64, bar, gen, seq);
      mkdir(dir, 0755);
      snprintf(mine, sizeof mine, "%s/%d", dir, rank);
      FILE *f = fopen(mine, "w");
      if (f) fclose(f);
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
