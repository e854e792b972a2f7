/* bench/replica: what the replica check's checksum costs per step
 * (trainer/lib/checksum.h, run by tg_snapshot over the parameters on
 * every rank before each step is written).
 *
 * For each size (the parameters of the default tg-train model, 136192
 * bytes, then whole MiB), pseudo-random bytes are checksummed --rounds
 * times after one untimed pass (pages touched, caches as warm as a
 * trainer's just-gathered parameters), timed with CLOCK_MONOTONIC.
 * Printed: the median and the slowest round in ms and the median rate in
 * GB/s. The check's other part, one all-gather of 16 bytes per rank, is a
 * collective among the ranks and is measured in a job (see the README of
 * trainer/ and bench/results).
 *
 * Usage: bazel run -c opt //bench/replica -- [--sizes-kib 133,1024,16384,262144] [--rounds 9] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/config/config.h"
#include "trainer/lib/checksum.h"

#define MAX_ROUNDS 101

static int by_value(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int main(int argc, char **argv) {
  char sizes[256] = "133,1024,16384,262144";
  int64_t rounds = 9;
  const tg_option opts[] = {
      {"sizes-kib", TG_OPT_STRING, sizes, sizeof sizes, 0, 0, "comma-separated sizes in KiB"},
      {"rounds", TG_OPT_INT, &rounds, 0, 1, MAX_ROUNDS, "timed rounds per size"},
  };
  char err[256];
  switch (tg_config_parse(opts, sizeof opts / sizeof opts[0], argc, argv,
                          "usage: replica_bench [--sizes-kib LIST] [--rounds N]", NULL, err, sizeof err)) {
  case TG_CONFIG_HELP: return 0;
  case TG_CONFIG_ERROR: fprintf(stderr, "replica_bench: %s\n", err); return 2;
  case TG_CONFIG_OK: break;
  }
  printf("%12s %10s %10s %8s\n", "bytes", "median ms", "max ms", "GB/s");
  for (char *tok = strtok(sizes, ","); tok; tok = strtok(NULL, ",")) {
    long long kib = atoll(tok);
    if (kib <= 0 || kib > (16LL << 20)) {
      fprintf(stderr, "replica_bench: size %s KiB: expected 1..%lld\n", tok, 16LL << 20);
      return 2;
    }
    size_t n = (size_t)kib * 1024;
    if (kib == 133) n = 136192; /* exactly tg-train's default model */
    unsigned char *buf = malloc(n);
    if (!buf) {
      fprintf(stderr, "replica_bench: %zu bytes: out of memory; skipped\n", n);
      continue;
    }
    uint64_t x = 88172645463325252ULL;
    for (size_t i = 0; i < n; i++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      buf[i] = (unsigned char)x;
    }
    volatile uint64_t sink = 0;
    int64_t t[MAX_ROUNDS];
    for (int64_t r = -1; r < rounds; r++) {
      int64_t t0 = now_ns();
      tg_checksum c;
      tg_checksum_init(&c);
      tg_checksum_update(&c, buf, n);
      sink ^= tg_checksum_final(&c);
      if (r >= 0) t[r] = now_ns() - t0;
    }
    qsort(t, (size_t)rounds, sizeof t[0], by_value);
    int64_t med = t[rounds / 2];
    printf("%12zu %10.3f %10.3f %8.2f\n", n, (double)med / 1e6, (double)t[rounds - 1] / 1e6,
           (double)n / (double)med);
    free(buf);
  }
  return 0;
}
