/* The file-driven fake GPU backend; the format is in gpu_fake.h.
 *
 * Reads are bounded (textfile.h) and re-done at every query, so a value
 * written by another process shows up at the next check. The only state is
 * the byte offset up to which each device's xid file has been delivered. */
#include "agent/health/gpu_fake.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/health/textfile.h"

#define MAX_DEVICES 64
#define MAX_HANG_MS 600000
#define HANG_POLL_MS 10
#define XID_CHUNK 4096

typedef struct {
  char *dir;
  uint32_t n_devices;
  uint64_t xid_offset[MAX_DEVICES]; /* bytes of DIR/gpuN/xid already delivered */
} fake;

/* DIR/gpuN/file (file may be NULL for the device directory). */
static int device_path(char *buf, size_t cap, const char *dir, uint32_t index, const char *file) {
  int n = file != NULL ? snprintf(buf, cap, "%s/gpu%" PRIu32 "/%s", dir, index, file)
                       : snprintf(buf, cap, "%s/gpu%" PRIu32, dir, index);
  return n >= 0 && (size_t)n < cap ? 0 : -ENAMETOOLONG;
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static uint64_t read_u64_or(const fake *f, uint32_t index, const char *file, uint64_t dflt) {
  char path[PATH_MAX];
  uint64_t v;
  if (device_path(path, sizeof path, f->dir, index, file) != 0) return dflt;
  return tg_textfile_read_u64(path, &v) == 0 ? v : dflt;
}

static void read_text_or(const fake *f, uint32_t index, const char *file, char *buf, size_t cap,
                         const char *dflt) {
  char path[PATH_MAX];
  if (device_path(path, sizeof path, f->dir, index, file) != 0 ||
      tg_textfile_read(path, buf, cap) != 0 || buf[0] == '\0')
    snprintf(buf, cap, "%s", dflt);
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Blocks while DIR/gpuN/hang_ms says so, re-reading it so that a writer can
 * release the hang early. Bounded by MAX_HANG_MS. */
static void hang_if_asked(const fake *f, uint32_t index) {
  int64_t start = mono_ms();
  for (;;) {
    uint64_t hang_ms = read_u64_or(f, index, "hang_ms", 0);
    if (hang_ms > MAX_HANG_MS) hang_ms = MAX_HANG_MS;
    if (mono_ms() - start >= (int64_t)hang_ms) return;
    struct timespec pause = {0, HANG_POLL_MS * 1000000L};
    nanosleep(&pause, NULL);
  }
}

/* A number, or names: "thermal power", "thermal,hw_slowdown", "none". */
static uint32_t parse_throttle(const char *text) {
  uint64_t bits;
  if (tg_textfile_parse_u64(text, &bits) == 0)
    return (uint32_t)bits &
           (TG_GPU_THROTTLE_THERMAL | TG_GPU_THROTTLE_POWER | TG_GPU_THROTTLE_HW_SLOWDOWN);
  uint32_t out = 0;
  const char *p = text;
  while (*p != '\0') {
    size_t len = strcspn(p, " \t\n,|");
    if ((len == 7 && strncmp(p, "thermal", len) == 0))
      out |= TG_GPU_THROTTLE_THERMAL;
    else if (len == 5 && strncmp(p, "power", len) == 0)
      out |= TG_GPU_THROTTLE_POWER;
    else if (len == 11 &&
             (strncmp(p, "hw_slowdown", len) == 0 || strncmp(p, "hw-slowdown", len) == 0))
      out |= TG_GPU_THROTTLE_HW_SLOWDOWN;
    p += len;
    p += strspn(p, " \t\n,|");
  }
  return out;
}

static int fake_count(void *impl, uint32_t *n, char *err, size_t errlen) {
  *n = ((fake *)impl)->n_devices;
  return 0;
}

static int fake_status(void *impl, uint32_t index, tg_gpu_status *st, char *err, size_t errlen) {
  fake *f = impl;
  char path[PATH_MAX];
  if (index >= f->n_devices) {
    snprintf(err, errlen, "no fake GPU %" PRIu32 " (there are %" PRIu32 ")", index, f->n_devices);
    return -1;
  }
  hang_if_asked(f, index);
  char dflt_uuid[64];
  snprintf(dflt_uuid, sizeof dflt_uuid, "GPU-fake-0000-0000-0000-%012" PRIu32, index);
  read_text_or(f, index, "uuid", st->uuid, sizeof st->uuid, dflt_uuid);
  read_text_or(f, index, "name", st->name, sizeof st->name, "Tardigrade fake GPU");
  if (device_path(path, sizeof path, f->dir, index, NULL) != 0 || !is_dir(path)) {
    st->lost = 1; /* the device directory went away: fell off the bus */
    return 0;
  }
  st->lost = read_u64_or(f, index, "lost", 0) != 0;

  char text[256];
  char tpath[PATH_MAX];
  int64_t temp = 40;
  if (device_path(tpath, sizeof tpath, f->dir, index, "temperature_c") == 0 &&
      tg_textfile_read(tpath, text, sizeof text) == 0) {
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno == 0 && end != text && *end == '\0' && v > -300 && v < 10000) temp = v;
  }
  st->temperature_c = (int32_t)temp;
  read_text_or(f, index, "throttle", text, sizeof text, "none");
  st->throttle = parse_throttle(text);
  st->ecc_uncorrectable = read_u64_or(f, index, "ecc_uncorrectable", 0);
  st->row_remap_failure = read_u64_or(f, index, "row_remap_failure", 0) != 0;
  st->row_remap_pending = read_u64_or(f, index, "row_remap_pending", 0) != 0;
  st->pcie_width = (uint32_t)read_u64_or(f, index, "pcie_width", 16);
  st->pcie_width_max = (uint32_t)read_u64_or(f, index, "pcie_width_max", 16);
  st->pcie_gen = (uint32_t)read_u64_or(f, index, "pcie_gen", 5);
  st->pcie_gen_max = (uint32_t)read_u64_or(f, index, "pcie_gen_max", 5);
  return 0;
}

/* One line of the xid file: a decimal XID, else skipped. */
static int parse_xid_line(const char *line, size_t len, uint32_t *xid) {
  char buf[32];
  while (len > 0 && isspace((unsigned char)*line)) line++, len--;
  while (len > 0 && isspace((unsigned char)line[len - 1])) len--;
  if (len == 0 || len >= sizeof buf) return -1;
  memcpy(buf, line, len);
  buf[len] = '\0';
  uint64_t v;
  if (tg_textfile_parse_u64(buf, &v) != 0 || v > UINT32_MAX) return -1;
  *xid = (uint32_t)v;
  return 0;
}

/* Delivers complete lines of DIR/gpuN/xid past the saved offset. */
static int drain_device(fake *f, uint32_t index, tg_gpu_xid *out, size_t cap, size_t *n, char *err,
                        size_t errlen) {
  char path[PATH_MAX];
  char chunk[XID_CHUNK];
  int rc = 0;
  if (device_path(path, sizeof path, f->dir, index, "xid") != 0) return 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0; /* no file: no events */
  struct stat st;
  if (fstat(fd, &st) != 0) goto out;
  if ((uint64_t)st.st_size < f->xid_offset[index]) f->xid_offset[index] = 0; /* truncated */
  while (*n < cap) {
    ssize_t got = pread(fd, chunk, sizeof chunk, (off_t)f->xid_offset[index]);
    if (got < 0) {
      snprintf(err, errlen, "%s: %s", path, strerror(errno));
      rc = -1;
      goto out;
    }
    size_t used = 0;
    while (*n < cap) {
      char *nl = memchr(chunk + used, '\n', (size_t)got - used);
      if (nl == NULL) break; /* a partial line: the writer is not done */
      uint32_t xid;
      if (parse_xid_line(chunk + used, (size_t)(nl - (chunk + used)), &xid) == 0) {
        out[*n].xid = xid;
        out[*n].device_index = index;
        (*n)++;
      }
      used = (size_t)(nl - chunk) + 1;
    }
    /* A full chunk without one newline is garbage: skip it, never stall. */
    if (used == 0 && got == (ssize_t)sizeof chunk) used = sizeof chunk;
    f->xid_offset[index] += used;
    if (used == 0 || got < (ssize_t)sizeof chunk) break;
  }
out:
  close(fd);
  return rc;
}

static int fake_drain_xids(void *impl, tg_gpu_xid *out, size_t cap, size_t *n, char *err,
                           size_t errlen) {
  fake *f = impl;
  for (uint32_t i = 0; i < f->n_devices && *n < cap; i++)
    if (drain_device(f, i, out, cap, n, err, errlen) != 0) return -1;
  return 0;
}

static void fake_close(void *impl) {
  fake *f = impl;
  if (f == NULL) return;
  free(f->dir);
  free(f);
}

static const tg_gpu_ops fake_ops = {
    .name = "fake",
    .count = fake_count,
    .status = fake_status,
    .drain_xids = fake_drain_xids,
    .close = fake_close,
};

static uint32_t count_devices(const char *dir) {
  char path[PATH_MAX];
  uint64_t n;
  int len = snprintf(path, sizeof path, "%s/count", dir);
  if (len > 0 && (size_t)len < sizeof path && tg_textfile_read_u64(path, &n) == 0)
    return n > MAX_DEVICES ? MAX_DEVICES : (uint32_t)n;
  uint32_t i = 0;
  while (i < MAX_DEVICES && device_path(path, sizeof path, dir, i, NULL) == 0 && is_dir(path)) i++;
  return i;
}

tg_gpu *tg_gpu_fake_open(const char *dir, char *err, size_t errlen) {
  tg_gpu *gpu = NULL;
  fake *f = calloc(1, sizeof *f);
  if (f == NULL || (f->dir = strdup(dir)) == NULL) {
    snprintf(err, errlen, "out of memory");
    goto err;
  }
  if (!is_dir(dir)) {
    snprintf(err, errlen, "fake GPU directory %s: not a directory", dir);
    goto err;
  }
  f->n_devices = count_devices(dir);
  for (uint32_t i = 0; i < f->n_devices; i++) {
    char path[PATH_MAX];
    struct stat st;
    if (device_path(path, sizeof path, dir, i, "xid") == 0 && stat(path, &st) == 0)
      f->xid_offset[i] = (uint64_t)st.st_size; /* old events are not news */
  }
  gpu = tg_gpu_new(&fake_ops, f);
  if (gpu == NULL) {
    snprintf(err, errlen, "out of memory");
    goto err;
  }
  return gpu;
err:
  fake_close(f);
  return NULL;
}

int tg_gpu_fake_set(const char *dir, uint32_t index, const char *file, const char *value) {
  char path[PATH_MAX];
  if (file[0] == '\0' || strchr(file, '/') != NULL || strcmp(file, ".") == 0 ||
      strcmp(file, "..") == 0)
    return -EINVAL;
  int rc = device_path(path, sizeof path, dir, index, file);
  if (rc != 0) return rc;
  char line[512];
  int n = snprintf(line, sizeof line, "%s\n", value);
  if (n < 0 || (size_t)n >= sizeof line) return -EINVAL;
  return tg_textfile_write(path, line);
}

int tg_gpu_fake_create(const char *dir, uint32_t n) {
  static const struct {
    const char *file, *value;
  } defaults[] = {
      {"name", "Tardigrade fake GPU"},
      {"temperature_c", "40"},
      {"throttle", "none"},
      {"ecc_uncorrectable", "0"},
      {"row_remap_failure", "0"},
      {"row_remap_pending", "0"},
      {"pcie_width", "16"},
      {"pcie_width_max", "16"},
      {"pcie_gen", "5"},
      {"pcie_gen_max", "5"},
      {"lost", "0"},
      {"hang_ms", "0"},
  };
  char path[PATH_MAX];
  char text[64];
  if (n > MAX_DEVICES) return -EINVAL;
  int rc = tg_textfile_mkdirs(dir);
  for (uint32_t i = 0; rc == 0 && i < n; i++) {
    rc = device_path(path, sizeof path, dir, i, NULL);
    if (rc == 0) rc = tg_textfile_mkdirs(path);
    snprintf(text, sizeof text, "GPU-fake-0000-0000-0000-%012" PRIu32, i);
    if (rc == 0) rc = tg_gpu_fake_set(dir, i, "uuid", text);
    for (size_t k = 0; rc == 0 && k < sizeof defaults / sizeof defaults[0]; k++)
      rc = tg_gpu_fake_set(dir, i, defaults[k].file, defaults[k].value);
    if (rc == 0) rc = device_path(path, sizeof path, dir, i, "xid");
    if (rc == 0) rc = tg_textfile_write(path, "");
  }
  if (rc == 0) {
    int len = snprintf(path, sizeof path, "%s/count", dir);
    snprintf(text, sizeof text, "%" PRIu32 "\n", n);
    rc = len > 0 && (size_t)len < sizeof path ? tg_textfile_write(path, text) : -ENAMETOOLONG;
  }
  return rc;
}

int tg_gpu_fake_inject_xid(const char *dir, uint32_t index, uint32_t xid) {
  char path[PATH_MAX];
  char line[32];
  int rc = device_path(path, sizeof path, dir, index, "xid");
  if (rc != 0) return rc;
  snprintf(line, sizeof line, "%" PRIu32 "\n", xid);
  return tg_textfile_append(path, line);
}

int tg_gpu_fake_set_ecc(const char *dir, uint32_t index, uint64_t uncorrectable) {
  char v[32];
  snprintf(v, sizeof v, "%" PRIu64, uncorrectable);
  return tg_gpu_fake_set(dir, index, "ecc_uncorrectable", v);
}

int tg_gpu_fake_set_temperature(const char *dir, uint32_t index, int32_t celsius) {
  char v[32];
  snprintf(v, sizeof v, "%" PRId32, celsius);
  return tg_gpu_fake_set(dir, index, "temperature_c", v);
}

int tg_gpu_fake_set_lost(const char *dir, uint32_t index, int lost) {
  return tg_gpu_fake_set(dir, index, "lost", lost ? "1" : "0");
}
