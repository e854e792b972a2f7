/* Unique shm names for tests, unlinked at exit; see test_names.h. Only
 * the process that made a name unlinks it (a forked child exits with
 * _exit and skips atexit handlers anyway). */
#include "agent/ckpt/testdata/test_names.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MAX_NAMES 256
#define NAME_BYTES 96

static char g_names[MAX_NAMES][NAME_BYTES];
static int g_count;
static int g_seq;
static unsigned long g_nonce;
static pid_t g_owner;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;

static void unlink_all(void) {
  if (getpid() != g_owner) return;
  for (int i = 0; i < g_count; i++) shm_unlink(g_names[i]);
}

const char *tg_ckpt_test_name(const char *tag, char *buf, size_t len) {
  pthread_mutex_lock(&g_mu);
  if (g_owner == 0) {
    g_owner = getpid();
    atexit(unlink_all);
  }
  /* Bazel's sandbox gives every test the same pid in its own namespace
   * while /dev/shm is shared, hence the start time beside the pid. */
  if (g_nonce == 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    g_nonce =
        ((unsigned long)ts.tv_sec * 1000000000UL + (unsigned long)ts.tv_nsec) & 0xffffffffffUL;
  }
  snprintf(buf, len, "/tg-ckpt-%s-%d-%lx-%d", tag, (int)getpid(), g_nonce, g_seq++);
  if (g_count < MAX_NAMES) snprintf(g_names[g_count++], NAME_BYTES, "%s", buf);
  pthread_mutex_unlock(&g_mu);
  return buf;
}
