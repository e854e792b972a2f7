/* The shared-memory checkpoint store; see store.h for what it offers.
 *
 * Layout of the region (all offsets fixed at creation):
 *   [header, 4 KiB][slot table: slots x 128 B, padded to 4 KiB][slot data: slots x slot_bytes]
 * The header carries a magic number (published last, with release
 * semantics, so an opener never sees a half-built header), the version and
 * the geometry. A process copies the header once when it maps the region,
 * checks that it describes exactly the mapped file, and from then on uses
 * only its private copy: a trainer scribbling on the header later cannot
 * make another process read outside the mapping.
 *
 * Each slot's concurrency state is one 64-bit atomic word, `ctl`:
 *   bits 0-1 state (0 empty, 1 writing, 2 committed; 3 is never written and
 *            marks a scribbled word), bits 2-33 the writer's pid, bits
 *            34-63 an epoch bumped every time the slot is claimed or freed.
 * Writer: claim an empty slot with a compare-and-swap to (epoch+1, pid,
 * writing), fill in the key and bytes while checksumming them, store the
 * checksum, then compare-and-swap to (epoch+1, pid, committed) with release
 * order, so whoever sees "committed" also sees every byte before it. A
 * writer that dies leaves "writing" behind, which no reader accepts;
 * tg_ckpt_store_reclaim frees such a slot once its pid is gone.
 * Reader (a seqlock): load ctl with acquire; if committed, copy the
 * metadata and bytes, then an acquire fence and load ctl again; a
 * different word means the slot was freed and reused meanwhile and the copy
 * is thrown away. Finally the CRC-64 of the private copy is checked, which
 * also catches scribbles that left ctl alone. Every state change is a CAS
 * from the exact word observed, so two processes never both win a slot.
 *
 * Retention runs at each commit: of several committed copies of one key
 * only the last committed stays (a counter in the header numbers commits),
 * and the (generation, step)s of the same (job, shard) older than the
 * newest keep_steps are freed (a later generation counts as newer). Slots are all one size: the shards of a data-parallel job are
 * close in size, and a fixed table needs no allocator in memory that user
 * code can corrupt. */
#include "agent/ckpt/store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/ckpt/crc64.h"
#include "common/log/log.h"

#define STORE_MAGIC 0x31304b5043475454ULL /* "TTGCPK01" little-endian */
#define STORE_VERSION 1u
#define HEADER_BYTES 4096u
#define SLOT_DESC_BYTES 128u
#define TABLE_ALIGN 4096u
#define DATA_ALIGN 64u
#define MAX_SLOTS 65536u
#define MAX_TOTAL_BYTES ((uint64_t)1 << 42) /* 4 TiB: far above any node's memory */
/* A reader racing with a writer that reuses the slot tries this often. */
#define READ_ATTEMPTS 4
/* Copy and checksum in pieces this large, so the checksum reads the
 * source while it is still in cache. */
#define COPY_PIECE_BYTES ((size_t)256 << 10)

enum { SLOT_EMPTY = 0, SLOT_WRITING = 1, SLOT_COMMITTED = 2, SLOT_STATE_MASK = 3 };

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2,
               "slot words must be lock-free to work across processes");

typedef struct {
  _Atomic uint64_t magic;
  _Atomic uint64_t commit_seq; /* orders commits; only a tie-break between copies of one key */
  uint32_t version;
  uint32_t slots;
  uint32_t keep_steps;
  uint32_t slot_desc_bytes;
  uint64_t header_bytes;
  uint64_t slot_bytes;
  uint64_t total_bytes;
} shm_header;

typedef struct {
  _Atomic uint64_t ctl;
  uint64_t generation;
  uint64_t step;
  uint64_t length;
  uint64_t checksum;
  uint64_t commit_seq;
  int32_t shard;
  uint32_t world_size;
  char job_id[TG_CKPT_JOB_ID_MAX];
} shm_slot;

_Static_assert(sizeof(shm_header) <= HEADER_BYTES, "header too large");
_Static_assert(sizeof(shm_slot) <= SLOT_DESC_BYTES, "slot descriptor too large");

/* The geometry a process trusts: validated once, then private. */
typedef struct {
  uint32_t slots;
  uint32_t keep_steps;
  uint64_t slot_bytes;
  uint64_t table_bytes;
  uint64_t total_bytes;
} geometry;

struct tg_ckpt_store {
  unsigned char *base;
  geometry geo;
  char name[NAME_MAX + 1];
};

struct tg_ckpt_writer {
  tg_ckpt_store *store;
  uint32_t slot;
  uint64_t ctl; /* the "writing" word this writer owns */
  tg_ckpt_key key;
  uint64_t length;
  uint64_t written;
  uint64_t crc;
};

/* A committed slot's metadata, copied out and validated. */
typedef struct {
  uint64_t ctl;
  tg_ckpt_key key;
  uint64_t length;
  uint64_t checksum;
  uint64_t commit_seq;
} slot_view;

/* ------------------------------------------------------------- helpers */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (err == NULL || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

const char *tg_ckpt_result_name(int result) {
  switch (result) {
    case TG_CKPT_OK:
      return "OK";
    case TG_CKPT_INVALID:
      return "INVALID";
    case TG_CKPT_NOT_FOUND:
      return "NOT_FOUND";
    case TG_CKPT_CORRUPT:
      return "CORRUPT";
    case TG_CKPT_FULL:
      return "FULL";
    case TG_CKPT_TOO_LARGE:
      return "TOO_LARGE";
    case TG_CKPT_BUSY:
      return "BUSY";
    case TG_CKPT_LOST:
      return "LOST";
    case TG_CKPT_SHORT:
      return "SHORT";
    case TG_CKPT_SYSTEM:
      return "SYSTEM";
    default:
      return "UNKNOWN_RESULT";
  }
}

static uint64_t ctl_make(uint64_t epoch, uint32_t pid, unsigned state) {
  return (epoch << 34) | ((uint64_t)pid << 2) | (state & SLOT_STATE_MASK);
}
static unsigned ctl_state(uint64_t ctl) { return (unsigned)(ctl & SLOT_STATE_MASK); }
static uint32_t ctl_pid(uint64_t ctl) { return (uint32_t)(ctl >> 2); }
static uint64_t ctl_epoch(uint64_t ctl) { return ctl >> 34; }
/* The same slot, next epoch (wraps within its 30 bits), new owner and state. */
static uint64_t ctl_next(uint64_t ctl, uint32_t pid, unsigned state) {
  return ctl_make((ctl_epoch(ctl) + 1) & ((1ULL << 30) - 1), pid, state);
}

static shm_slot *slot_desc(const tg_ckpt_store *s, uint32_t i) {
  return (shm_slot *)(s->base + HEADER_BYTES + (size_t)i * SLOT_DESC_BYTES);
}
static unsigned char *slot_data(const tg_ckpt_store *s, uint32_t i) {
  return s->base + HEADER_BYTES + s->geo.table_bytes + (size_t)i * s->geo.slot_bytes;
}

/* Moves slot i from exactly `seen` to empty; 1 if this call did it. */
static int slot_release(tg_ckpt_store *s, uint32_t i, uint64_t seen) {
  return atomic_compare_exchange_strong_explicit(&slot_desc(s, i)->ctl, &seen,
                                                 ctl_next(seen, 0, SLOT_EMPTY),
                                                 memory_order_acq_rel, memory_order_relaxed);
}

int tg_ckpt_key_valid(const tg_ckpt_key *key) {
  if (key == NULL || key->job_id[0] == '\0') return TG_CKPT_INVALID;
  if (memchr(key->job_id, '\0', sizeof(key->job_id)) == NULL) return TG_CKPT_INVALID;
  if (key->shard < 0 || key->world_size == 0 || (uint32_t)key->shard >= key->world_size) {
    return TG_CKPT_INVALID;
  }
  return TG_CKPT_OK;
}

int tg_ckpt_key_equal(const tg_ckpt_key *a, const tg_ckpt_key *b) {
  return a->generation == b->generation && a->step == b->step && a->shard == b->shard &&
         a->world_size == b->world_size && strncmp(a->job_id, b->job_id, TG_CKPT_JOB_ID_MAX) == 0;
}

/* Copies slot i's metadata if it is committed, well formed and was not
 * replaced while being copied; 1 if so, else 0. */
static int view_committed(const tg_ckpt_store *s, uint32_t i, slot_view *v) {
  shm_slot *d = slot_desc(s, i);
  v->ctl = atomic_load_explicit(&d->ctl, memory_order_acquire);
  if (ctl_state(v->ctl) != SLOT_COMMITTED) return 0;
  memcpy(v->key.job_id, d->job_id, sizeof(v->key.job_id));
  v->key.generation = d->generation;
  v->key.step = d->step;
  v->key.shard = d->shard;
  v->key.world_size = d->world_size;
  v->length = d->length;
  v->checksum = d->checksum;
  v->commit_seq = d->commit_seq;
  atomic_thread_fence(memory_order_acquire);
  if (atomic_load_explicit(&d->ctl, memory_order_relaxed) != v->ctl) return 0;
  if (tg_ckpt_key_valid(&v->key) != TG_CKPT_OK || v->length > s->geo.slot_bytes) return 0;
  return 1;
}

/* The first committed slot holding `key`, or -1. */
static int64_t find_committed(const tg_ckpt_store *s, const tg_ckpt_key *key, slot_view *v) {
  for (uint32_t i = 0; i < s->geo.slots; i++) {
    if (view_committed(s, i, v) && tg_ckpt_key_equal(&v->key, key)) return i;
  }
  return -1;
}

/* ------------------------------------------------------------ geometry */

/* Size of the slot table and of the whole region; 0 or -1 on overflow. */
static int layout_bytes(uint32_t slots, uint64_t slot_bytes, uint64_t *table_bytes,
                        uint64_t *total_bytes) {
  uint64_t table =
      ((uint64_t)slots * SLOT_DESC_BYTES + TABLE_ALIGN - 1) / TABLE_ALIGN * TABLE_ALIGN;
  uint64_t data;
  if (__builtin_mul_overflow((uint64_t)slots, slot_bytes, &data)) return -1;
  uint64_t total = HEADER_BYTES + table;
  if (__builtin_add_overflow(total, data, &total) || total > MAX_TOTAL_BYTES) return -1;
  *table_bytes = table;
  *total_bytes = total;
  return 0;
}

/* Checks a private copy of the header against the mapped file's size. */
static int geometry_from_header(const shm_header *h, uint64_t magic, uint64_t file_bytes,
                                geometry *g, char *err, size_t errlen) {
  if (magic != STORE_MAGIC) {
    set_err(err, errlen, "not a checkpoint store (bad magic %016" PRIx64 ")", magic);
    return -1;
  }
  if (h->version != STORE_VERSION || h->header_bytes != HEADER_BYTES ||
      h->slot_desc_bytes != SLOT_DESC_BYTES) {
    set_err(err, errlen, "checkpoint store version %u, this build reads version %u", h->version,
            STORE_VERSION);
    return -1;
  }
  if (h->slots == 0 || h->slots > MAX_SLOTS || h->keep_steps == 0 || h->slot_bytes == 0 ||
      h->slot_bytes % DATA_ALIGN != 0 ||
      layout_bytes(h->slots, h->slot_bytes, &g->table_bytes, &g->total_bytes) != 0 ||
      g->total_bytes != h->total_bytes || g->total_bytes != file_bytes) {
    set_err(err, errlen,
            "checkpoint store header is inconsistent (slots %u, slot bytes %" PRIu64
            ", total %" PRIu64 ", file %" PRIu64 ")",
            h->slots, h->slot_bytes, h->total_bytes, file_bytes);
    return -1;
  }
  g->slots = h->slots;
  g->keep_steps = h->keep_steps;
  g->slot_bytes = h->slot_bytes;
  return 0;
}

static int name_valid(const char *name) {
  size_t n = name == NULL ? 0 : strnlen(name, NAME_MAX + 1);
  return n >= 2 && n <= NAME_MAX && name[0] == '/' && strchr(name + 1, '/') == NULL;
}

/* Maps fd (file_bytes long), validates the header and makes the handle. */
static tg_ckpt_store *store_map(int fd, const char *name, uint64_t file_bytes, char *err,
                                size_t errlen) {
  tg_ckpt_store *s = calloc(1, sizeof(*s));
  void *base = MAP_FAILED;
  if (s == NULL) {
    set_err(err, errlen, "out of memory");
    goto err;
  }
  if (file_bytes < HEADER_BYTES || file_bytes > MAX_TOTAL_BYTES) {
    set_err(err, errlen, "%s is %" PRIu64 " bytes, not a checkpoint store", name, file_bytes);
    goto err;
  }
  base = mmap(NULL, (size_t)file_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    set_err(err, errlen, "mmap %s (%" PRIu64 " bytes): %s", name, file_bytes, strerror(errno));
    goto err;
  }
  shm_header *h = base;
  uint64_t magic = atomic_load_explicit(&h->magic, memory_order_acquire);
  shm_header copy;
  size_t fixed = offsetof(shm_header, version);
  memcpy((char *)&copy + fixed, (char *)h + fixed, sizeof(copy) - fixed);
  if (geometry_from_header(&copy, magic, file_bytes, &s->geo, err, errlen) != 0) goto err;
  s->base = base;
  snprintf(s->name, sizeof(s->name), "%s", name);
  return s;
err:
  if (base != MAP_FAILED) munmap(base, (size_t)file_bytes);
  free(s);
  return NULL;
}

/* ------------------------------------------------------------ lifetime */

tg_ckpt_store *tg_ckpt_store_create(const char *name, uint64_t capacity_bytes, uint32_t slots,
                                    uint32_t keep_steps, char *err, size_t errlen) {
  tg_ckpt_store *s = NULL;
  int fd = -1;
  void *base = MAP_FAILED;
  uint64_t table = 0, total = 0;
  if (!name_valid(name)) {
    set_err(err, errlen, "bad shared memory name (want \"/name\", at most %d bytes)", NAME_MAX);
    return NULL;
  }
  if (slots == 0 || slots > MAX_SLOTS || keep_steps == 0 || keep_steps > slots) {
    set_err(err, errlen, "need 1..%u slots and 1..slots steps kept (got %u and %u)", MAX_SLOTS,
            slots, keep_steps);
    return NULL;
  }
  if (layout_bytes(slots, 0, &table, &total) != 0 || capacity_bytes > MAX_TOTAL_BYTES ||
      capacity_bytes < total + (uint64_t)slots * DATA_ALIGN) {
    set_err(err, errlen,
            "capacity %" PRIu64 " bytes cannot hold %u slots (need at least %" PRIu64
            ", at most %" PRIu64 ")",
            capacity_bytes, slots, total + (uint64_t)slots * DATA_ALIGN, MAX_TOTAL_BYTES);
    return NULL;
  }
  uint64_t slot_bytes = (capacity_bytes - total) / slots / DATA_ALIGN * DATA_ALIGN;
  if (layout_bytes(slots, slot_bytes, &table, &total) != 0) {
    set_err(err, errlen, "capacity %" PRIu64 " bytes is too large", capacity_bytes);
    return NULL;
  }
  fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0) {
    set_err(err, errlen, "shm_open %s: %s%s", name, strerror(errno),
            errno == EEXIST ? " (open it, or unlink a stale one)" : "");
    return NULL;
  }
  if (ftruncate(fd, (off_t)total) != 0) {
    set_err(err, errlen, "ftruncate %s to %" PRIu64 " bytes: %s", name, total, strerror(errno));
    goto err;
  }
  base = mmap(NULL, (size_t)HEADER_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    set_err(err, errlen, "mmap %s: %s", name, strerror(errno));
    goto err;
  }
  /* ftruncate zero-filled the region: every slot word is (0, 0, empty). */
  shm_header *h = base;
  h->version = STORE_VERSION;
  h->slots = slots;
  h->keep_steps = keep_steps;
  h->slot_desc_bytes = SLOT_DESC_BYTES;
  h->header_bytes = HEADER_BYTES;
  h->slot_bytes = slot_bytes;
  h->total_bytes = total;
  atomic_store_explicit(&h->magic, STORE_MAGIC, memory_order_release);
  s = store_map(fd, name, total, err, errlen);
  if (s == NULL) goto err;
  munmap(base, HEADER_BYTES);
  close(fd);
  return s;
err:
  if (base != MAP_FAILED) munmap(base, HEADER_BYTES);
  close(fd);
  shm_unlink(name);
  return NULL;
}

tg_ckpt_store *tg_ckpt_store_open(const char *name, char *err, size_t errlen) {
  if (!name_valid(name)) {
    set_err(err, errlen, "bad shared memory name (want \"/name\", at most %d bytes)", NAME_MAX);
    return NULL;
  }
  int fd = shm_open(name, O_RDWR, 0);
  if (fd < 0) {
    set_err(err, errlen, "shm_open %s: %s", name, strerror(errno));
    return NULL;
  }
  tg_ckpt_store *s = NULL;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    set_err(err, errlen, "fstat %s: %s", name, strerror(errno));
  } else {
    s = store_map(fd, name, (uint64_t)st.st_size, err, errlen);
  }
  close(fd);
  return s;
}

void tg_ckpt_store_close(tg_ckpt_store *s) {
  if (s == NULL) return;
  munmap(s->base, (size_t)s->geo.total_bytes);
  free(s);
}

int tg_ckpt_store_unlink(const char *name) { return shm_unlink(name); }

uint32_t tg_ckpt_store_slots(const tg_ckpt_store *s) { return s->geo.slots; }
uint64_t tg_ckpt_store_slot_bytes(const tg_ckpt_store *s) { return s->geo.slot_bytes; }
uint32_t tg_ckpt_store_keep_steps(const tg_ckpt_store *s) { return s->geo.keep_steps; }

uint32_t tg_ckpt_store_free_slots(const tg_ckpt_store *s) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < s->geo.slots; i++) {
    uint64_t ctl = atomic_load_explicit(&slot_desc(s, i)->ctl, memory_order_relaxed);
    if (ctl_state(ctl) == SLOT_EMPTY) n++;
  }
  return n;
}

/* --------------------------------------------------------------- reads */

/* Copies the committed shard `key` into buf (cap bytes), or into a buffer
 * of its own size when allocate is set (*out), and checks its CRC-64. */
static int read_shard(tg_ckpt_store *s, const tg_ckpt_key *key, void *buf, size_t cap, int allocate,
                      void **out, size_t *len, uint64_t *checksum) {
  if (tg_ckpt_key_valid(key) != TG_CKPT_OK || len == NULL) return TG_CKPT_INVALID;
  for (int attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
    slot_view v;
    int64_t i = find_committed(s, key, &v);
    if (i < 0) return TG_CKPT_NOT_FOUND;
    *len = (size_t)v.length;
    unsigned char *dst = buf;
    if (allocate) {
      dst = malloc(v.length > 0 ? (size_t)v.length : 1);
      if (dst == NULL) return TG_CKPT_SYSTEM;
    } else if (v.length > cap) {
      return TG_CKPT_TOO_LARGE;
    }
    if (v.length > 0) memcpy(dst, slot_data(s, (uint32_t)i), (size_t)v.length);
    atomic_thread_fence(memory_order_acquire);
    int replaced =
        atomic_load_explicit(&slot_desc(s, (uint32_t)i)->ctl, memory_order_relaxed) != v.ctl;
    uint64_t crc = replaced ? 0 : tg_crc64_update(0, dst, (size_t)v.length);
    int rc = replaced ? TG_CKPT_BUSY : crc != v.checksum ? TG_CKPT_CORRUPT : TG_CKPT_OK;
    if (rc == TG_CKPT_CORRUPT) {
      TG_WARN("checkpoint store %s: job %s generation %" PRIu64 " step %" PRIu64
              " shard %d/%u in slot %" PRId64 " fails its CRC-64 (stored %016" PRIx64
              ", computed %016" PRIx64 "); refusing it: delete it and fetch a replica",
              s->name, key->job_id, key->generation, key->step, key->shard, key->world_size, i,
              v.checksum, crc);
    }
    if (rc == TG_CKPT_OK && allocate)
      *out = dst;
    else if (allocate)
      free(dst);
    if (rc == TG_CKPT_OK && checksum != NULL) *checksum = v.checksum;
    if (rc != TG_CKPT_BUSY) return rc;
  }
  return TG_CKPT_BUSY;
}

int tg_ckpt_store_read(tg_ckpt_store *s, const tg_ckpt_key *key, void *buf, size_t cap, size_t *len,
                       uint64_t *checksum) {
  if (buf == NULL && cap > 0) return TG_CKPT_INVALID;
  return read_shard(s, key, buf, cap, 0, NULL, len, checksum);
}

int tg_ckpt_store_read_alloc(tg_ckpt_store *s, const tg_ckpt_key *key, void **bytes, size_t *len,
                             uint64_t *checksum) {
  if (bytes == NULL) return TG_CKPT_INVALID;
  *bytes = NULL;
  return read_shard(s, key, NULL, 0, 1, bytes, len, checksum);
}

/* Order of retention: a later generation is newer whatever its step. A
 * world that resumed at an older step (from the disk, or after losing
 * uncommitted steps) writes step numbers its predecessor already wrote;
 * ordering by step alone would retire each of its fresh snapshots at once
 * in favour of the dead world's. */
static int key_older(const tg_ckpt_key *a, const tg_ckpt_key *b) {
  return a->generation < b->generation || (a->generation == b->generation && a->step < b->step);
}

int tg_ckpt_store_newest(tg_ckpt_store *s, const char *job_id, int32_t shard, tg_ckpt_key *key) {
  int found = 0;
  if (job_id == NULL || key == NULL) return TG_CKPT_INVALID;
  for (uint32_t i = 0; i < s->geo.slots; i++) {
    slot_view v;
    if (!view_committed(s, i, &v) || v.key.shard != shard ||
        strncmp(v.key.job_id, job_id, TG_CKPT_JOB_ID_MAX) != 0) {
      continue;
    }
    if (!found || key_older(key, &v.key)) *key = v.key;
    found = 1;
  }
  return found ? TG_CKPT_OK : TG_CKPT_NOT_FOUND;
}

size_t tg_ckpt_store_list(tg_ckpt_store *s, const char *job_id, tg_ckpt_key *keys, size_t cap) {
  size_t n = 0;
  for (uint32_t i = 0; i < s->geo.slots; i++) {
    slot_view v;
    if (!view_committed(s, i, &v)) continue;
    if (job_id != NULL && strncmp(v.key.job_id, job_id, TG_CKPT_JOB_ID_MAX) != 0) continue;
    if (keys != NULL && n < cap) keys[n] = v.key;
    n++;
  }
  return n;
}

int tg_ckpt_store_delete(tg_ckpt_store *s, const tg_ckpt_key *key) {
  int found = 0;
  if (tg_ckpt_key_valid(key) != TG_CKPT_OK) return TG_CKPT_INVALID;
  for (uint32_t i = 0; i < s->geo.slots; i++) {
    slot_view v;
    if (view_committed(s, i, &v) && tg_ckpt_key_equal(&v.key, key)) {
      found |= slot_release(s, i, v.ctl);
    }
  }
  return found ? TG_CKPT_OK : TG_CKPT_NOT_FOUND;
}

int tg_ckpt_store_corrupt(tg_ckpt_store *s, const tg_ckpt_key *key, uint64_t offset) {
  if (s == NULL || tg_ckpt_key_valid(key) != TG_CKPT_OK) return TG_CKPT_INVALID;
  slot_view v;
  int64_t i = find_committed(s, key, &v);
  if (i < 0) return TG_CKPT_NOT_FOUND;
  if (v.length == 0) return TG_CKPT_INVALID;
  /* Volatile: the flip must reach the shared mapping, not be optimised into
   * a no-op by a compiler that sees no reader in this process. */
  volatile unsigned char *at = slot_data(s, (uint32_t)i) + offset % v.length;
  *at = (unsigned char)(*at ^ 0xff);
  TG_WARN("checkpoint store %s: corrupted job %s step %" PRIu64 " shard %d/%u at byte %" PRIu64
          " on purpose (fault injection)",
          s->name, key->job_id, key->step, key->shard, key->world_size, offset % v.length);
  return TG_CKPT_OK;
}

/* ------------------------------------------------------------- reclaim */

static int pid_alive(uint32_t pid) {
  if (pid == 0 || pid > (uint32_t)INT32_MAX) return 0;
  return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

uint32_t tg_ckpt_store_reclaim(tg_ckpt_store *s) {
  uint32_t freed = 0;
  for (uint32_t i = 0; i < s->geo.slots; i++) {
    uint64_t ctl = atomic_load_explicit(&slot_desc(s, i)->ctl, memory_order_acquire);
    unsigned state = ctl_state(ctl);
    int dead_writer = state == SLOT_WRITING && !pid_alive(ctl_pid(ctl));
    if ((dead_writer || state == SLOT_STATE_MASK) && slot_release(s, i, ctl)) freed++;
  }
  if (freed > 0) {
    TG_INFO("checkpoint store %s: reclaimed %u slot(s) left unfinished by dead writers", s->name,
            freed);
  }
  return freed;
}

/* Claims an empty slot for `pid`: its index, with the owned word in *ctl,
 * or -1 when none is empty. */
static int64_t claim_slot(tg_ckpt_store *s, uint32_t pid, uint64_t *ctl) {
  for (uint32_t i = 0; i < s->geo.slots; i++) {
    _Atomic uint64_t *word = &slot_desc(s, i)->ctl;
    uint64_t seen = atomic_load_explicit(word, memory_order_relaxed);
    if (ctl_state(seen) != SLOT_EMPTY) continue;
    uint64_t mine = ctl_next(seen, pid, SLOT_WRITING);
    if (atomic_compare_exchange_strong_explicit(word, &seen, mine, memory_order_acq_rel,
                                                memory_order_relaxed)) {
      /* Readers of the slot's previous content must see the claim before
       * any byte this writer changes (the writer half of the seqlock). */
      atomic_thread_fence(memory_order_seq_cst);
      *ctl = mine;
      return i;
    }
  }
  return -1;
}

/* --------------------------------------------------------------- writes */

int tg_ckpt_writer_begin(tg_ckpt_store *s, const tg_ckpt_key *key, uint64_t len,
                         tg_ckpt_writer **out) {
  if (s == NULL || out == NULL || tg_ckpt_key_valid(key) != TG_CKPT_OK) return TG_CKPT_INVALID;
  if (len > s->geo.slot_bytes) return TG_CKPT_TOO_LARGE;
  tg_ckpt_writer *w = calloc(1, sizeof(*w));
  if (w == NULL) return TG_CKPT_SYSTEM;
  uint32_t pid = (uint32_t)getpid();
  int64_t i = claim_slot(s, pid, &w->ctl);
  if (i < 0 && tg_ckpt_store_reclaim(s) > 0) i = claim_slot(s, pid, &w->ctl);
  if (i < 0) {
    free(w);
    return TG_CKPT_FULL;
  }
  shm_slot *d = slot_desc(s, (uint32_t)i);
  memset(d->job_id, 0, sizeof(d->job_id));
  memcpy(d->job_id, key->job_id, strnlen(key->job_id, TG_CKPT_JOB_ID_MAX - 1));
  d->generation = key->generation;
  d->step = key->step;
  d->shard = key->shard;
  d->world_size = key->world_size;
  d->length = len;
  d->checksum = 0;
  d->commit_seq = 0;
  w->store = s;
  w->key = *key;
  w->slot = (uint32_t)i;
  w->length = len;
  *out = w;
  return TG_CKPT_OK;
}

static int writer_owns_slot(const tg_ckpt_writer *w) {
  return atomic_load_explicit(&slot_desc(w->store, w->slot)->ctl, memory_order_relaxed) == w->ctl;
}

int tg_ckpt_writer_append(tg_ckpt_writer *w, const void *bytes, size_t n) {
  if (w == NULL || (bytes == NULL && n > 0)) return TG_CKPT_INVALID;
  if (n > w->length - w->written) return TG_CKPT_TOO_LARGE;
  if (!writer_owns_slot(w)) return TG_CKPT_LOST;
  const unsigned char *src = bytes;
  unsigned char *dst = slot_data(w->store, w->slot) + w->written;
  for (size_t done = 0; done < n;) {
    size_t piece = n - done < COPY_PIECE_BYTES ? n - done : COPY_PIECE_BYTES;
    memcpy(dst + done, src + done, piece);
    w->crc = tg_crc64_update(w->crc, src + done, piece);
    done += piece;
  }
  w->written += n;
  return TG_CKPT_OK;
}

uint64_t tg_ckpt_writer_written(const tg_ckpt_writer *w) { return w->written; }
uint64_t tg_ckpt_writer_checksum(const tg_ckpt_writer *w) { return w->crc; }

void tg_ckpt_writer_abort(tg_ckpt_writer *w) {
  if (w == NULL) return;
  slot_release(w->store, w->slot, w->ctl);
  free(w);
}

/* The oldest (generation, step) of (job, shard) to keep: the
 * keep_steps-th newest distinct committed one. 0 with it in *oldest_kept,
 * or -1 when fewer than that exist (nothing to retire). */
static int oldest_kept_key(tg_ckpt_store *s, const tg_ckpt_key *key, tg_ckpt_key *oldest_kept) {
  tg_ckpt_key bound;
  memset(&bound, 0, sizeof bound);
  for (uint32_t k = 0; k < s->geo.keep_steps; k++) {
    int found = 0;
    tg_ckpt_key best;
    memset(&best, 0, sizeof best);
    for (uint32_t i = 0; i < s->geo.slots; i++) {
      slot_view v;
      if (!view_committed(s, i, &v) || v.key.shard != key->shard ||
          strcmp(v.key.job_id, key->job_id) != 0 || (k > 0 && !key_older(&v.key, &bound))) {
        continue;
      }
      if (!found || key_older(&best, &v.key)) best = v.key;
      found = 1;
    }
    if (!found) return -1;
    bound = best;
  }
  *oldest_kept = bound;
  return 0;
}

/* After slot `self` committed `key` as commit number `seq`: of several
 * copies of one key the last committed stays (two writers committing the
 * same key at once agree on which), and the (generation, step)s of its
 * (job, shard) older than the newest keep_steps are freed. */
static void retire_older(tg_ckpt_store *s, const tg_ckpt_key *key, uint32_t self, uint64_t self_ctl,
                         uint64_t seq) {
  for (uint32_t i = 0; i < s->geo.slots; i++) {
    slot_view v;
    if (i == self || !view_committed(s, i, &v) || !tg_ckpt_key_equal(&v.key, key)) continue;
    if (v.commit_seq < seq) {
      slot_release(s, i, v.ctl);
    } else {
      slot_release(s, self, self_ctl);
      break;
    }
  }
  tg_ckpt_key oldest_kept;
  if (oldest_kept_key(s, key, &oldest_kept) != 0) return;
  for (uint32_t i = 0; i < s->geo.slots; i++) {
    slot_view v;
    if (view_committed(s, i, &v) && v.key.shard == key->shard &&
        strcmp(v.key.job_id, key->job_id) == 0 && key_older(&v.key, &oldest_kept)) {
      slot_release(s, i, v.ctl);
    }
  }
}

int tg_ckpt_writer_commit(tg_ckpt_writer *w) {
  if (w == NULL) return TG_CKPT_INVALID;
  tg_ckpt_store *s = w->store;
  shm_slot *d = slot_desc(s, w->slot);
  int rc = TG_CKPT_OK;
  if (w->written != w->length) {
    rc = TG_CKPT_SHORT;
    goto out;
  }
  if (!writer_owns_slot(w)) {
    rc = TG_CKPT_LOST;
    goto out;
  }
  d->checksum = w->crc;
  shm_header *h = (shm_header *)s->base;
  uint64_t seq = atomic_fetch_add_explicit(&h->commit_seq, 1, memory_order_relaxed) + 1;
  d->commit_seq = seq;
  uint64_t seen = w->ctl;
  uint64_t committed = (w->ctl & ~(uint64_t)SLOT_STATE_MASK) | SLOT_COMMITTED;
  if (!atomic_compare_exchange_strong_explicit(&d->ctl, &seen, committed, memory_order_acq_rel,
                                               memory_order_relaxed)) {
    rc = TG_CKPT_LOST;
    goto out;
  }
  w->ctl = committed;
  retire_older(s, &w->key, w->slot, committed, seq);
out:
  if (rc == TG_CKPT_SHORT) slot_release(s, w->slot, w->ctl);
  free(w);
  return rc;
}

int tg_ckpt_store_write(tg_ckpt_store *s, const tg_ckpt_key *key, const void *bytes, size_t len) {
  tg_ckpt_writer *w = NULL;
  int rc = tg_ckpt_writer_begin(s, key, len, &w);
  if (rc != TG_CKPT_OK) return rc;
  rc = tg_ckpt_writer_append(w, bytes, len);
  if (rc != TG_CKPT_OK) {
    tg_ckpt_writer_abort(w);
    return rc;
  }
  return tg_ckpt_writer_commit(w);
}
