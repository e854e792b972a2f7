/* Scratch directories for the health-check tests; see health_testing.h. */
#include "agent/health/health_testing.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

char *health_testing_tmpdir(const char *prefix) {
  const char *base = getenv("TEST_TMPDIR");
  if (base == NULL || base[0] == '\0') base = "/tmp";
  size_t cap = strlen(base) + strlen(prefix) + 16;
  char *path = malloc(cap);
  if (path == NULL) return NULL;
  snprintf(path, cap, "%s/%s.XXXXXX", base, prefix);
  if (mkdtemp(path) == NULL) {
    free(path);
    return NULL;
  }
  return path;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

int health_testing_rmtree(const char *path) {
  if (path == NULL) return 0;
  return nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

const char *health_testing_join(char *buf, size_t cap, const char *dir, const char *name) {
  int n = snprintf(buf, cap, "%s/%s", dir, name);
  if (n < 0 || (size_t)n >= cap) {
    fprintf(stderr, "path too long: %s/%s\n", dir, name);
    abort();
  }
  return buf;
}

int64_t health_testing_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void health_testing_sleep_ms(int64_t ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}
