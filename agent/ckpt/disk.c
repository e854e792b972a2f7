/* Shards on disk; see disk.h for the layout and the guarantees.
 *
 * The header is serialized field by field in little-endian order, so a
 * file means the same to every build that reads it, and it carries its own
 * CRC-64: a torn or scribbled header is recognised before any of its
 * fields (the length above all) is believed. A reader opens one path built
 * from the key, checks the header against that key and against the file's
 * size, and only then allocates and reads the bytes, whose CRC-64 must
 * match the header's. Listing reads headers only; a temporary file left by
 * a writer that died (a name starting with '.') is never listed. */
#include "agent/ckpt/disk.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/ckpt/crc64.h"
#include "common/log/log.h"

#define DISK_MAGIC "TGSHARD1"
#define DISK_VERSION 1u
#define HEADER_BYTES 128u
#define HEADER_CRC_AT 120u /* the header's own CRC-64 covers bytes 0..119 */
#define DIR_MAX 3072u      /* leaves room below PATH_MAX for the parts we add */
#define IO_PIECE_BYTES ((size_t)1 << 30)

typedef struct {
  uint64_t generation;
  uint64_t step;
  int32_t shard;
  uint32_t world_size;
  uint64_t length;
  uint64_t crc64;
  char job_id[TG_CKPT_JOB_ID_MAX];
} file_header;

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (err == NULL || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* ----------------------------------------------------- header encoding */

static void put_u32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
  return v;
}
static uint64_t get_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

static void header_encode(const file_header *h, unsigned char out[HEADER_BYTES]) {
  memset(out, 0, HEADER_BYTES);
  memcpy(out, DISK_MAGIC, 8);
  put_u32(out + 8, DISK_VERSION);
  put_u32(out + 12, HEADER_BYTES);
  put_u64(out + 16, h->generation);
  put_u64(out + 24, h->step);
  put_u32(out + 32, (uint32_t)h->shard);
  put_u32(out + 36, h->world_size);
  put_u64(out + 40, h->length);
  put_u64(out + 48, h->crc64);
  memcpy(out + 56, h->job_id, strnlen(h->job_id, TG_CKPT_JOB_ID_MAX - 1));
  put_u64(out + HEADER_CRC_AT, tg_crc64_update(0, out, HEADER_CRC_AT));
}

/* 0, or -1 with the reason in why. Checks only what the header says about
 * itself; the caller compares it with the key and the file. */
static int header_decode(const unsigned char in[HEADER_BYTES], file_header *h, const char **why) {
  if (memcmp(in, DISK_MAGIC, 8) != 0) {
    *why = "not a shard file (bad magic)";
    return -1;
  }
  if (get_u32(in + 8) != DISK_VERSION || get_u32(in + 12) != HEADER_BYTES) {
    *why = "shard file of another format version";
    return -1;
  }
  if (get_u64(in + HEADER_CRC_AT) != tg_crc64_update(0, in, HEADER_CRC_AT)) {
    *why = "header fails its CRC-64";
    return -1;
  }
  memset(h, 0, sizeof(*h));
  h->generation = get_u64(in + 16);
  h->step = get_u64(in + 24);
  h->shard = (int32_t)get_u32(in + 32);
  h->world_size = get_u32(in + 36);
  h->length = get_u64(in + 40);
  h->crc64 = get_u64(in + 48);
  memcpy(h->job_id, in + 56, TG_CKPT_JOB_ID_MAX);
  if (memchr(h->job_id, '\0', TG_CKPT_JOB_ID_MAX) == NULL) {
    *why = "job id in the header is not terminated";
    return -1;
  }
  if (h->length > TG_CKPT_MAX_SHARD_BYTES) {
    *why = "length in the header exceeds the largest shard accepted";
    return -1;
  }
  return 0;
}

/* ---------------------------------------------------------------- paths */

/* A job id usable as one path component. */
static int job_valid(const char *job) {
  size_t n = job == NULL ? 0 : strnlen(job, TG_CKPT_JOB_ID_MAX);
  if (n == 0 || n == TG_CKPT_JOB_ID_MAX || job[0] == '.' || strstr(job, "..") != NULL) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)job[i];
    if (c == '/' || c < 0x20 || c == 0x7f) return 0;
  }
  return 1;
}

static int dir_valid(const char *dir) {
  size_t n = dir == NULL ? 0 : strnlen(dir, DIR_MAX);
  return n > 0 && n < DIR_MAX;
}

static int key_usable(const char *dir, const tg_ckpt_key *key) {
  return dir_valid(dir) && tg_ckpt_key_valid(key) == TG_CKPT_OK && job_valid(key->job_id);
}

static void job_path(const char *dir, const char *job, char *out, size_t len) {
  snprintf(out, len, "%s/%s", dir, job);
}
static void step_path(const char *dir, const tg_ckpt_key *key, char *out, size_t len) {
  snprintf(out, len, "%s/%s/%020" PRIu64, dir, key->job_id, key->step);
}
static void file_name(const tg_ckpt_key *key, char *out, size_t len) {
  snprintf(out, len, "%" PRIu32 "-%" PRId32 ".tgck", key->world_size, key->shard);
}
static void file_path(const char *dir, const tg_ckpt_key *key, char *out, size_t len) {
  char step[PATH_MAX], name[64];
  step_path(dir, key, step, sizeof(step));
  file_name(key, name, sizeof(name));
  snprintf(out, len, "%s/%s", step, name);
}

/* ------------------------------------------------------------------ I/O */

static int write_all(int fd, const unsigned char *p, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, p, len < IO_PIECE_BYTES ? len : IO_PIECE_BYTES);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) {
      errno = EIO;
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Reads exactly len bytes at off; -1 with errno, or with errno 0 when the
 * file ended first. */
static int read_all(int fd, unsigned char *p, size_t len, uint64_t off) {
  while (len > 0) {
    ssize_t n = pread(fd, p, len < IO_PIECE_BYTES ? len : IO_PIECE_BYTES, (off_t)off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = 0;
      return -1;
    }
    p += n;
    len -= (size_t)n;
    off += (uint64_t)n;
  }
  return 0;
}

static int fsync_dir(const char *path) {
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  int saved = errno;
  close(fd);
  errno = saved;
  return rc;
}

/* mkdir that accepts an existing directory; *made says whether it was new. */
static int make_dir(const char *path, int *made) {
  *made = 0;
  if (mkdir(path, 0755) == 0) {
    *made = 1;
    return 0;
  }
  if (errno != EEXIST) return -1;
  struct stat st;
  if (stat(path, &st) != 0) return -1;
  if (!S_ISDIR(st.st_mode)) {
    errno = ENOTDIR;
    return -1;
  }
  return 0;
}

/* ---------------------------------------------------------------- write */

int tg_ckpt_disk_write(const char *dir, const tg_ckpt_key *key, const void *bytes, size_t len,
                       uint64_t crc64, char *err, size_t errlen) {
  static _Atomic unsigned counter;
  char job[PATH_MAX], step[PATH_MAX], final[PATH_MAX], tmp[PATH_MAX + 128], name[64];
  int fd = -1, created = 0, made_dir = 0, made_job = 0, made_step = 0;
  const char *failed = "mkdir", *at = dir;
  if (!key_usable(dir, key) || (bytes == NULL && len > 0)) {
    set_err(err, errlen, "persist: bad directory, key or job id (no '/', no \"..\", 1..%d bytes)",
            TG_CKPT_JOB_ID_MAX - 1);
    return TG_CKPT_INVALID;
  }
  if ((uint64_t)len > TG_CKPT_MAX_SHARD_BYTES) {
    set_err(err, errlen, "persist: shard of %zu bytes exceeds the limit of %" PRIu64, len,
            TG_CKPT_MAX_SHARD_BYTES);
    return TG_CKPT_TOO_LARGE;
  }
  /* The bytes must be what the checksum says, or the file never reads back. */
  if (tg_crc64_update(0, bytes, len) != crc64) {
    set_err(err, errlen, "persist: the shard's bytes do not match its CRC-64; not written");
    return TG_CKPT_INVALID;
  }
  job_path(dir, key->job_id, job, sizeof(job));
  step_path(dir, key, step, sizeof(step));
  file_path(dir, key, final, sizeof(final));
  file_name(key, name, sizeof(name));
  snprintf(tmp, sizeof(tmp), "%s/.%s.tmp-%d-%u", step, name, (int)getpid(),
           atomic_fetch_add(&counter, 1));

  file_header h = {.generation = key->generation,
                   .step = key->step,
                   .shard = key->shard,
                   .world_size = key->world_size,
                   .length = len,
                   .crc64 = crc64};
  memcpy(h.job_id, key->job_id, strnlen(key->job_id, TG_CKPT_JOB_ID_MAX - 1));
  unsigned char header[HEADER_BYTES];
  header_encode(&h, header);

  if (make_dir(dir, &made_dir) != 0) {
    at = dir;
    goto err;
  }
  if (make_dir(job, &made_job) != 0) {
    at = job;
    goto err;
  }
  if (make_dir(step, &made_step) != 0) {
    at = step;
    goto err;
  }
  failed = "create";
  at = tmp;
  fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) goto err;
  created = 1;
  failed = "write";
  if (write_all(fd, header, HEADER_BYTES) != 0 || write_all(fd, bytes, len) != 0) goto err;
  failed = "fsync";
  if (fsync(fd) != 0) goto err;
  failed = "close";
  int rc = close(fd);
  fd = -1;
  if (rc != 0) goto err;
  failed = "rename to";
  at = final;
  if (rename(tmp, final) != 0) goto err;
  /* The new names must survive a power cut too: every directory that got
   * one is synced, innermost first. */
  if (fsync_dir(step) != 0 || (made_step && fsync_dir(job) != 0) ||
      (made_job && fsync_dir(dir) != 0)) {
    set_err(err, errlen, "persist: fsync of the directories above %s: %s", final, strerror(errno));
    return TG_CKPT_SYSTEM;
  }
  return TG_CKPT_OK;
err:;
  int saved = errno;
  if (fd >= 0) close(fd);
  if (created) unlink(tmp);
  if (made_step) rmdir(step);
  set_err(err, errlen, "persist: %s %s: %s", failed, at, strerror(saved));
  return TG_CKPT_SYSTEM;
}

/* ----------------------------------------------------------------- read */

/* Opens the shard file at path and checks its header against `want`
 * (generation ignored) and the file's size. TG_CKPT_OK with the open fd
 * and the header, else NOT_FOUND, CORRUPT (with the reason in *why) or
 * SYSTEM. */
static int open_checked(const char *path, const tg_ckpt_key *want, int *fd_out, file_header *h,
                        const char **why) {
  unsigned char raw[HEADER_BYTES];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *why = strerror(errno);
    return errno == ENOENT || errno == ENOTDIR ? TG_CKPT_NOT_FOUND : TG_CKPT_SYSTEM;
  }
  struct stat st;
  int rc = TG_CKPT_CORRUPT;
  if (fstat(fd, &st) != 0) {
    *why = strerror(errno);
    rc = TG_CKPT_SYSTEM;
  } else if (!S_ISREG(st.st_mode)) {
    *why = "not a regular file";
  } else if ((uint64_t)st.st_size < HEADER_BYTES) {
    *why = "truncated: shorter than its header";
  } else if (read_all(fd, raw, HEADER_BYTES, 0) != 0) {
    *why = errno ? strerror(errno) : "truncated: shorter than its header";
    rc = errno ? TG_CKPT_SYSTEM : TG_CKPT_CORRUPT;
  } else if (header_decode(raw, h, why) != 0) {
    /* why set */
  } else if (strcmp(h->job_id, want->job_id) != 0 || h->step != want->step ||
             h->shard != want->shard || h->world_size != want->world_size) {
    *why = "header names another shard than its path";
  } else if ((uint64_t)st.st_size - HEADER_BYTES != h->length) {
    *why = (uint64_t)st.st_size - HEADER_BYTES < h->length ? "truncated: fewer bytes than its header says"
                                                           : "longer than its header says";
  } else {
    *fd_out = fd;
    return TG_CKPT_OK;
  }
  close(fd);
  return rc;
}

int tg_ckpt_disk_read_alloc(const char *dir, const tg_ckpt_key *key, void **bytes, size_t *len,
                            uint64_t *crc64) {
  if (bytes != NULL) *bytes = NULL;
  if (!key_usable(dir, key) || bytes == NULL || len == NULL) return TG_CKPT_INVALID;
  char path[PATH_MAX];
  file_path(dir, key, path, sizeof(path));
  int fd = -1;
  file_header h;
  const char *why = "";
  int rc = open_checked(path, key, &fd, &h, &why);
  if (rc == TG_CKPT_NOT_FOUND) return rc;
  if (rc != TG_CKPT_OK) goto refused;
  unsigned char *buf = malloc(h.length > 0 ? (size_t)h.length : 1);
  if (buf == NULL) {
    close(fd);
    why = "out of memory";
    rc = TG_CKPT_SYSTEM;
    goto refused;
  }
  if (read_all(fd, buf, (size_t)h.length, HEADER_BYTES) != 0) {
    why = errno ? strerror(errno) : "truncated while being read";
    rc = errno ? TG_CKPT_SYSTEM : TG_CKPT_CORRUPT;
    free(buf);
    close(fd);
    goto refused;
  }
  close(fd);
  uint64_t crc = tg_crc64_update(0, buf, (size_t)h.length);
  if (crc != h.crc64) {
    free(buf);
    TG_WARN("persisted shard %s fails its CRC-64 (header %016" PRIx64 ", data %016" PRIx64
            "); refusing it: restore from another copy",
            path, h.crc64, crc);
    return TG_CKPT_CORRUPT;
  }
  *bytes = buf;
  *len = (size_t)h.length;
  if (crc64 != NULL) *crc64 = crc;
  return TG_CKPT_OK;
refused:
  if (rc == TG_CKPT_CORRUPT) {
    TG_WARN("persisted shard %s is refused: %s", path, why);
  } else {
    TG_WARN("persisted shard %s cannot be read: %s", path, why);
  }
  return rc;
}

/* ----------------------------------------------------------------- list */

/* The number in a name that is exactly what `fmt` prints for it. */
static int parse_step_dir(const char *name, uint64_t *step) {
  char *end = NULL, again[32];
  if (strlen(name) != 20) return -1;
  errno = 0;
  unsigned long long v = strtoull(name, &end, 10);
  if (errno != 0 || *end != '\0') return -1;
  snprintf(again, sizeof(again), "%020llu", v);
  if (strcmp(again, name) != 0) return -1;
  *step = (uint64_t)v;
  return 0;
}

static int parse_file_name(const char *name, tg_ckpt_key *key) {
  unsigned long ws = 0;
  long shard = 0;
  char *end = NULL;
  if (name[0] < '0' || name[0] > '9') return -1;
  ws = strtoul(name, &end, 10);
  if (*end != '-' || end[1] < '0' || end[1] > '9' || ws == 0 || ws > UINT32_MAX) return -1;
  shard = strtol(end + 1, &end, 10);
  if (strcmp(end, ".tgck") != 0 || shard < 0 || (unsigned long)shard >= ws) return -1;
  key->world_size = (uint32_t)ws;
  key->shard = (int32_t)shard;
  char again[64];
  file_name(key, again, sizeof(again));
  return strcmp(again, name) == 0 ? 0 : -1;
}

/* Adds the shard files of one step directory; returns the new count. */
static size_t list_step(const char *path, const char *job, uint64_t step, tg_ckpt_key *keys,
                        size_t cap, size_t n) {
  DIR *d = opendir(path);
  if (d == NULL) return n;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    tg_ckpt_key k;
    memset(&k, 0, sizeof(k));
    snprintf(k.job_id, sizeof(k.job_id), "%s", job);
    k.step = step;
    if (parse_file_name(e->d_name, &k) != 0) continue;
    char file[PATH_MAX + 64];
    snprintf(file, sizeof(file), "%s/%s", path, e->d_name);
    int fd = -1;
    file_header h;
    const char *why = "";
    int rc = open_checked(file, &k, &fd, &h, &why);
    if (rc != TG_CKPT_OK) {
      if (rc == TG_CKPT_CORRUPT) TG_WARN("persisted shard %s is not listed: %s", file, why);
      continue;
    }
    close(fd);
    k.generation = h.generation;
    if (keys != NULL && n < cap) keys[n] = k;
    n++;
  }
  closedir(d);
  return n;
}

size_t tg_ckpt_disk_list(const char *dir, const char *job, tg_ckpt_key *keys, size_t cap) {
  if (!dir_valid(dir) || !job_valid(job)) return 0;
  char path[PATH_MAX];
  job_path(dir, job, path, sizeof(path));
  DIR *d = opendir(path);
  if (d == NULL) return 0;
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    uint64_t step = 0;
    if (parse_step_dir(e->d_name, &step) != 0) continue;
    char sub[PATH_MAX + 260];
    snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
    n = list_step(sub, job, step, keys, cap, n);
  }
  closedir(d);
  return n;
}

/* --------------------------------------------------------------- remove */

int tg_ckpt_disk_remove(const char *dir, const tg_ckpt_key *key) {
  if (!key_usable(dir, key)) return TG_CKPT_INVALID;
  char path[PATH_MAX], step[PATH_MAX];
  file_path(dir, key, path, sizeof(path));
  step_path(dir, key, step, sizeof(step));
  if (unlink(path) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return TG_CKPT_NOT_FOUND;
    TG_WARN("cannot remove persisted shard %s: %s", path, strerror(errno));
    return TG_CKPT_SYSTEM;
  }
  rmdir(step); /* only succeeds once no other shard of the step is left */
  return TG_CKPT_OK;
}
