/* Collective counters in shared memory (see counters.h). */
#include "agent/progress/counters.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC 0x5447434f554e5431ULL /* "TGCOUNT1" */

typedef struct {
  _Atomic uint64_t generation;
  _Atomic uint64_t seq;
  _Atomic uint64_t alive;
  _Atomic uint64_t done_generation; /* the last collective that returned */
  _Atomic uint64_t done_seq;
  _Atomic uint64_t restoring;       /* joining and restoring, before its first step */
  uint64_t pad[2]; /* one cache line per slot: trainers do not share lines */
} entry;

typedef struct {
  uint64_t magic;
  uint64_t slots;
  _Atomic uint64_t world_generation; /* the agent's newest world */
  uint64_t pad[5];
  entry entries[];
} region;

struct tg_counters {
  region *r;
  size_t len;
  int slots; /* as validated when mapped */
};

static size_t region_len(int slots) { return sizeof(region) + (size_t)slots * sizeof(entry); }

static tg_counters *map(int fd, size_t len, int slots, char *err, size_t errlen) {
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) {
    snprintf(err, errlen, "mmap: %s", strerror(errno));
    return NULL;
  }
  tg_counters *c = calloc(1, sizeof *c);
  if (!c) {
    munmap(p, len);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  c->r = p;
  c->len = len;
  c->slots = slots;
  return c;
}

tg_counters *tg_counters_create(const char *name, int slots, char *err, size_t errlen) {
  if (!name || name[0] != '/' || strchr(name + 1, '/') || slots < 1 || slots > TG_COUNTERS_MAX_SLOTS) {
    snprintf(err, errlen, "counters: bad name or slot count");
    return NULL;
  }
  shm_unlink(name); /* a crashed agent's region holds nothing worth keeping */
  int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  size_t len = region_len(slots);
  if (fd < 0 || ftruncate(fd, (off_t)len) != 0) {
    snprintf(err, errlen, "counters %s: %s", name, strerror(errno));
    if (fd >= 0) close(fd);
    return NULL;
  }
  tg_counters *c = map(fd, len, slots, err, errlen);
  if (!c) return NULL;
  c->r->slots = (uint64_t)slots;
  atomic_thread_fence(memory_order_release);
  c->r->magic = MAGIC;
  return c;
}

tg_counters *tg_counters_open(const char *name, char *err, size_t errlen) {
  if (!name || name[0] != '/' || strchr(name + 1, '/')) {
    snprintf(err, errlen, "counters: bad name");
    return NULL;
  }
  int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    snprintf(err, errlen, "counters %s: %s", name, strerror(errno));
    if (fd >= 0) close(fd);
    return NULL;
  }
  uint64_t head[2] = {0, 0};
  if ((size_t)st.st_size < sizeof(region) || pread(fd, head, sizeof head, 0) != (ssize_t)sizeof head ||
      head[0] != MAGIC || head[1] < 1 || head[1] > TG_COUNTERS_MAX_SLOTS ||
      (size_t)st.st_size < region_len((int)head[1])) {
    snprintf(err, errlen, "counters %s: not a counters region", name);
    close(fd);
    return NULL;
  }
  return map(fd, region_len((int)head[1]), (int)head[1], err, errlen);
}

void tg_counters_close(tg_counters *c) {
  if (!c) return;
  munmap(c->r, c->len);
  free(c);
}

int tg_counters_unlink(const char *name) { return shm_unlink(name); }

int tg_counters_slots(const tg_counters *c) { return c->slots; }

void tg_counters_enter(tg_counters *c, int slot, uint64_t generation, uint64_t seq) {
  if (!c || slot < 0 || slot >= c->slots) return;
  atomic_store_explicit(&c->r->entries[slot].generation, generation, memory_order_relaxed);
  atomic_store_explicit(&c->r->entries[slot].seq, seq, memory_order_release);
}

int tg_counters_read(const tg_counters *c, int slot, uint64_t *generation, uint64_t *seq) {
  if (!c || slot < 0 || slot >= c->slots) return -1;
  *seq = atomic_load_explicit(&c->r->entries[slot].seq, memory_order_acquire);
  *generation = atomic_load_explicit(&c->r->entries[slot].generation, memory_order_relaxed);
  return 0;
}

void tg_counters_alive(tg_counters *c, int slot) {
  if (!c || slot < 0 || slot >= c->slots) return;
  atomic_fetch_add_explicit(&c->r->entries[slot].alive, 1, memory_order_relaxed);
}

int tg_counters_read_alive(const tg_counters *c, int slot, uint64_t *alive) {
  if (!c || slot < 0 || slot >= c->slots) return -1;
  *alive = atomic_load_explicit(&c->r->entries[slot].alive, memory_order_relaxed);
  return 0;
}

void tg_counters_set_world(tg_counters *c, uint64_t generation) {
  if (c) atomic_store_explicit(&c->r->world_generation, generation, memory_order_release);
}

uint64_t tg_counters_world(const tg_counters *c) {
  return c ? atomic_load_explicit(&c->r->world_generation, memory_order_acquire) : 0;
}

void tg_counters_done(tg_counters *c, int slot, uint64_t generation, uint64_t seq) {
  if (!c || slot < 0 || slot >= c->slots) return;
  atomic_store_explicit(&c->r->entries[slot].done_generation, generation, memory_order_relaxed);
  atomic_store_explicit(&c->r->entries[slot].done_seq, seq, memory_order_release);
}

int tg_counters_inside(const tg_counters *c, int slot) {
  if (!c || slot < 0 || slot >= c->slots) return -1;
  const entry *e = &c->r->entries[slot];
  uint64_t done = atomic_load_explicit(&e->done_seq, memory_order_acquire);
  uint64_t done_gen = atomic_load_explicit(&e->done_generation, memory_order_relaxed);
  uint64_t seq = atomic_load_explicit(&e->seq, memory_order_acquire);
  uint64_t gen = atomic_load_explicit(&e->generation, memory_order_relaxed);
  if (seq == 0) return 0;
  return done_gen != gen || done < seq;
}

void tg_counters_set_restoring(tg_counters *c, int slot, int restoring) {
  if (!c || slot < 0 || slot >= c->slots) return;
  atomic_store_explicit(&c->r->entries[slot].restoring, restoring ? 1 : 0, memory_order_release);
}

int tg_counters_restoring(const tg_counters *c, int slot) {
  if (!c || slot < 0 || slot >= c->slots) return -1;
  return atomic_load_explicit(&c->r->entries[slot].restoring, memory_order_acquire) != 0;
}
