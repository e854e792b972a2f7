/* bench/checkpoint: what one rank's checkpoint shard costs on CPU, from
 * the stall it puts on every training step to the copy on disk.
 *
 * DESIGN.md "Checkpoints" snapshots every shard into the node's shared
 * memory at every step, replicates it to a buddy node and persists it now
 * and then. Only the first of these blocks the trainer; the others run in
 * the agent, in the background, but bound how far behind they can fall.
 * For each state size S (one shard of S bytes of pseudo-random data, so
 * that nothing can shortcut zero pages), this program measures in one
 * process on this machine:
 *
 *   memcpy      a plain memcpy of the S bytes into a warm buffer: the
 *               lower bound for any snapshot into memory;
 *   CRC-64      tg_crc64_update over the S bytes alone, the other half of
 *               the store's work;
 *   snapshot    the time the trainer is blocked writing its shard into the
 *               store, exactly as libtardigrade's tg_snapshot does with one
 *               registered buffer: tg_ckpt_writer_begin, append of the
 *               buffer count and length (16 bytes), append of the S bytes
 *               (copied and checksummed in one pass), tg_ckpt_writer_commit;
 *   restore     tg_ckpt_store_read of that shard into a caller's buffer
 *               (copy, then CRC-64 verification);
 *   push        tg_ckpt_push of the shard to a Replication gRPC server in
 *               this process on 127.0.0.1 that writes into a second store
 *               (the buddy), in 1 MiB chunks, read and verified first;
 *   fetch       tg_ckpt_fetch_alloc of it back from the buddy into memory;
 *   persist     tg_ckpt_disk_write into a temporary directory (checksum
 *               check, write, fsync of the file and its directories, rename);
 *   disk read   tg_ckpt_disk_read_alloc, after the file's pages were
 *               dropped from the page cache (posix_fadvise DONTNEED), so the
 *               bytes come from the device.
 *
 * Each operation first runs untimed until every buffer and store slot it
 * touches has its pages (as in a job's steady state, after its first
 * steps), then --rounds times, timed with CLOCK_MONOTONIC. Reported: the
 * median and the p90 (nearest rank: with 5 rounds, the slowest) in ms,
 * the median rate in GB/s (10^9 bytes/s of shard bytes) and the median
 * over memcpy's. Client and server of the replication share this
 * machine's cores; in a job they sit on two nodes.
 *
 * The two stores are POSIX shared memory "/tg-bench-<pid>-a" and "-b",
 * two slots each (the committed shard and the next one being written),
 * sized for the largest size that fits both /dev/shm and free memory;
 * sizes that do not fit are skipped with a line saying so. The stores are
 * unlinked at exit, on error paths, on SIGINT/SIGTERM/SIGHUP, and when the
 * watchdog (--timeout-s) ends a run that hangs; every RPC has a deadline.
 *
 * The GPU path (asynchronous device-to-host copy into pinned memory,
 * overlapped with compute) is measured by gpu_snapshot_bench.c.
 *
 * Usage: bazel run -c opt //bench/checkpoint -- [--sizes-mib 1,16,64,256] [--rounds 5]
 *        [--dir PARENT_OF_TEMP_DIR] [--timeout-s 600] */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "agent/ckpt/crc64.h"
#include "agent/ckpt/disk.h"
#include "agent/ckpt/replicate.h"
#include "agent/ckpt/store.h"
#include "common/config/config.h"
#include "common/log/log.h"
#include "common/rpc/rpc.h"

#define JOB_ID "bench"
#define MAX_SIZES 16
#define MAX_SIZE_MIB 65536
#define MIB ((uint64_t)1 << 20)
/* libtardigrade frames a snapshot as: buffer count, each length, the bytes. */
#define FRAME_BYTES (2 * sizeof(uint64_t))
/* A store: the committed shard and the next one being written. */
#define STORE_SLOTS 2u
#define STORE_KEEP_STEPS 1u
#define STORE_SLACK_BYTES MIB /* header, slot table, alignment */
/* Memory a size needs beyond the stores: the state, the memcpy and restore
 * targets, a fetched copy, the server's queued chunks, a disk read. */
#define HEAP_COPIES 6
#define CALL_DEADLINE_MS 60000
#define CONNECT_TIMEOUT_MS 5000
#define SERVER_GRACE_MS 1000

static char sizes_text[256] = "1,16,64,256";
static int64_t rounds = 5;
static int64_t timeout_s = 600;
static char parent_dir[512] = "";

/* ------------------------------------------------- cleanup on any exit */

/* The stores' names and their files, filled in before either exists, so
 * that the atexit and signal handlers can remove them. */
static char shm_name[2][64];
static char shm_file[2][96];
static volatile sig_atomic_t shm_made[2];
/* The newest persisted file, its step and job directories and the
 * temporary directory, innermost first ("" when absent), for the signal
 * handler's best effort; the normal exit removes them with disk.h. */
static char disk_paths[4][1024];

static void unlink_stores_at_exit(void) {
  for (int i = 0; i < 2; i++) {
    if (shm_made[i]) tg_ckpt_store_unlink(shm_name[i]);
    shm_made[i] = 0;
  }
}

/* Async-signal-safe: unlink(2) of the files behind the names, write(2). */
static void on_fatal_signal(int sig) {
  for (int i = 0; i < 2; i++) {
    if (shm_made[i]) unlink(shm_file[i]);
  }
  if (disk_paths[0][0] != '\0') unlink(disk_paths[0]);
  for (int i = 1; i < 4; i++) {
    if (disk_paths[i][0] != '\0') rmdir(disk_paths[i]);
  }
  static const char timeout_msg[] = "checkpoint_bench: gave up: the run exceeded --timeout-s\n";
  static const char signal_msg[] = "checkpoint_bench: interrupted\n";
  if (sig == SIGALRM) {
    (void)!write(2, timeout_msg, sizeof timeout_msg - 1);
  } else {
    (void)!write(2, signal_msg, sizeof signal_msg - 1);
  }
  _exit(sig == SIGALRM ? 124 : 128 + sig);
}

static void install_cleanup(void) {
  atexit(unlink_stores_at_exit);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_fatal_signal;
  sigemptyset(&sa.sa_mask);
  int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGALRM};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
}

/* --------------------------------------------------- the machine, the run */

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The value of the first "key: value" line of a /proc file, or "". */
static void proc_field(const char *path, const char *key, char *out, size_t outlen) {
  char line[512];
  size_t keylen = strlen(key);
  out[0] = '\0';
  FILE *f = fopen(path, "r");
  if (f == NULL) return;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, key, keylen) != 0) continue;
    char *v = strchr(line, ':');
    if (v == NULL) continue;
    v++;
    while (*v == ' ' || *v == '\t') v++;
    v[strcspn(v, "\n")] = '\0';
    snprintf(out, outlen, "%s", v);
    break;
  }
  fclose(f);
}

/* A /proc/meminfo figure ("MemTotal", "MemAvailable") in bytes; 0 if absent. */
static uint64_t meminfo_bytes(const char *key) {
  char v[128];
  proc_field("/proc/meminfo", key, v, sizeof v);
  return strtoull(v, NULL, 10) * 1024;
}

static uint64_t fs_available_bytes(const char *path) {
  struct statvfs vfs;
  if (statvfs(path, &vfs) != 0) return 0;
  return (uint64_t)vfs.f_bavail * vfs.f_frsize;
}

static const char *fs_type_name(const char *path) {
  struct statfs fs;
  if (statfs(path, &fs) != 0) return "unknown";
  switch ((unsigned long)fs.f_type) {
  case 0xEF53: return "ext2/3/4";
  case 0x58465342: return "xfs";
  case 0x9123683E: return "btrfs";
  case 0x01021994: return "tmpfs (fsync is a no-op: not a disk)";
  case 0x794C7630: return "overlayfs";
  case 0x6969: return "nfs";
  default: return "other";
  }
}

static void print_run_header(const char *command) {
  char cpu[256], date[64];
  struct utsname u;
  time_t t = time(NULL);
  strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S %Z", localtime(&t));
  proc_field("/proc/cpuinfo", "model name", cpu, sizeof cpu);
  if (cpu[0] == '\0') snprintf(cpu, sizeof cpu, "unknown CPU");
  if (uname(&u) != 0) snprintf(u.release, sizeof u.release, "unknown");
  printf("command: %s\n", command);
  printf("date:    %s\n", date);
  printf("machine: %s, %ld cores, %.1f GiB memory, Linux %s\n", cpu,
         sysconf(_SC_NPROCESSORS_ONLN), (double)meminfo_bytes("MemTotal") / (MIB * 1024),
         u.release);
  printf("sizes:   %s MiB, %" PRId64 " timed rounds each\n", sizes_text, rounds);
}

/* "bazel run -c opt //bench/checkpoint -- ARGS" when started by bazel run. */
static void command_line(int argc, char **argv, char *out, size_t outlen) {
  size_t n = 0;
  if (getenv("BUILD_WORKSPACE_DIRECTORY") != NULL) {
#ifdef __OPTIMIZE__
    n = (size_t)snprintf(out, outlen, "bazel run -c opt //bench/checkpoint%s", argc > 1 ? " --" : "");
#else
    n = (size_t)snprintf(out, outlen, "bazel run //bench/checkpoint%s (not -c opt!)",
                         argc > 1 ? " --" : "");
#endif
  } else {
    n = (size_t)snprintf(out, outlen, "%s", argv[0]);
  }
  for (int i = 1; i < argc && n < outlen; i++) n += (size_t)snprintf(out + n, outlen - n, " %s", argv[i]);
}

/* "1,16,64" into MiB counts; -1 on anything else. */
static int parse_sizes(const char *text, uint64_t *mib, size_t *n) {
  *n = 0;
  const char *p = text;
  while (*p != '\0') {
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(p, &end, 10);
    if (end == p || errno != 0 || v == 0 || v > MAX_SIZE_MIB || *n == MAX_SIZES) return -1;
    mib[(*n)++] = v;
    if (*end == ',') end++;
    else if (*end != '\0') return -1;
    p = end;
  }
  return *n > 0 ? 0 : -1;
}

/* -------------------------------------------------------------- the bench */

typedef struct {
  tg_ckpt_store *store;     /* this node's store: the trainer writes here */
  tg_ckpt_store *buddy;     /* the buddy node's store, behind the server */
  tg_rpc_server *srv;
  tg_ckpt_repl_server *repl;
  tg_rpc_channel *ch;
  tg_ckpt_repl_config cfg;  /* the client's */
  char dir[600];            /* temporary directory for persisted shards; "" if none */
  unsigned char *state;     /* the trainer's state: S pseudo-random bytes */
  unsigned char *copy;      /* memcpy's target */
  unsigned char *restored;  /* restore's target, and what is persisted */
  size_t buf_bytes;         /* size of each of those buffers */
  size_t state_bytes;       /* S of the size being measured */
  size_t shard_bytes;       /* S plus libtardigrade's frame */
  tg_ckpt_key snap;         /* the newest snapshot */
  tg_ckpt_key persisted;    /* the newest persisted shard (step 0: none) */
  uint64_t shard_crc;       /* CRC-64 of the newest snapshot, from its restore */
  uint64_t state_crc;       /* CRC-64 of the state alone */
  uint64_t next_step;
  int cold_reads;           /* 1 while the page cache could be dropped before each disk read */
  char err[512];
} bench;

static tg_ckpt_key key_at(uint64_t step) {
  tg_ckpt_key k;
  memset(&k, 0, sizeof k);
  snprintf(k.job_id, sizeof k.job_id, "%s", JOB_ID);
  k.generation = 1;
  k.step = step;
  k.shard = 0;
  k.world_size = 1;
  return k;
}

/* xorshift64*: incompressible bytes, generated faster than any copy here. */
static void fill_pseudo_random(unsigned char *buf, size_t len, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ULL | 1;
  size_t i = 0;
  for (; i + sizeof x <= len; i += sizeof x) {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    uint64_t v = x * 0x2545F4914F6CDD1DULL;
    memcpy(buf + i, &v, sizeof v);
  }
  for (; i < len; i++) buf[i] = (unsigned char)(x >> (8 * (i % 8)));
}

/* One timed operation: 0 with its duration in *ns, or -1 with b->err. */
typedef int (*bench_op)(bench *b, int64_t *ns);

static int op_memcpy(bench *b, int64_t *ns) {
  int64_t t0 = now_ns();
  memcpy(b->copy, b->state, b->state_bytes);
  __asm__ __volatile__("" : : "r"(b->copy) : "memory"); /* the copy is used */
  *ns = now_ns() - t0;
  return 0;
}

static int op_crc(bench *b, int64_t *ns) {
  int64_t t0 = now_ns();
  b->state_crc = tg_crc64_update(0, b->state, b->state_bytes);
  *ns = now_ns() - t0;
  return 0;
}

/* The trainer's stall: tg_snapshot of one registered buffer. */
static int op_snapshot(bench *b, int64_t *ns) {
  tg_ckpt_key key = key_at(++b->next_step);
  tg_ckpt_writer *w = NULL;
  uint64_t count = 1, len = b->state_bytes;
  int64_t t0 = now_ns();
  int rc = tg_ckpt_writer_begin(b->store, &key, b->shard_bytes, &w);
  if (rc != TG_CKPT_OK) goto err;
  rc = tg_ckpt_writer_append(w, &count, sizeof count);
  if (rc == TG_CKPT_OK) rc = tg_ckpt_writer_append(w, &len, sizeof len);
  if (rc == TG_CKPT_OK) rc = tg_ckpt_writer_append(w, b->state, b->state_bytes);
  if (rc != TG_CKPT_OK) {
    tg_ckpt_writer_abort(w);
    goto err;
  }
  rc = tg_ckpt_writer_commit(w);
  *ns = now_ns() - t0;
  if (rc != TG_CKPT_OK) goto err;
  b->snap = key;
  return 0;
err:
  snprintf(b->err, sizeof b->err, "snapshot of step %" PRIu64 ": %s", key.step,
           tg_ckpt_result_name(rc));
  return -1;
}

static int op_restore(bench *b, int64_t *ns) {
  size_t len = 0;
  uint64_t crc = 0;
  int64_t t0 = now_ns();
  int rc = tg_ckpt_store_read(b->store, &b->snap, b->restored, b->buf_bytes, &len, &crc);
  *ns = now_ns() - t0;
  if (rc != TG_CKPT_OK || len != b->shard_bytes) {
    snprintf(b->err, sizeof b->err, "restore: %s, %zu bytes of %zu", tg_ckpt_result_name(rc), len,
             b->shard_bytes);
    return -1;
  }
  b->shard_crc = crc;
  return 0;
}

static int op_push(bench *b, int64_t *ns) {
  tg_rpc_status st = {0};
  int64_t t0 = now_ns();
  tg_rpc_code code = tg_ckpt_push(b->store, b->ch, &b->snap, &b->cfg, &st);
  *ns = now_ns() - t0;
  if (code != TG_RPC_OK) {
    snprintf(b->err, sizeof b->err, "push: %s: %s", tg_rpc_code_name(code), st.message);
    return -1;
  }
  return 0;
}

static int op_fetch(bench *b, int64_t *ns) {
  tg_rpc_status st = {0};
  void *bytes = NULL;
  size_t len = 0;
  int64_t t0 = now_ns();
  tg_rpc_code code = tg_ckpt_fetch_alloc(b->ch, &b->snap, &b->cfg, &bytes, &len, NULL, &st);
  *ns = now_ns() - t0;
  if (code != TG_RPC_OK) {
    snprintf(b->err, sizeof b->err, "fetch: %s: %s", tg_rpc_code_name(code), st.message);
    return -1;
  }
  int same = len == b->shard_bytes && memcmp(bytes, b->restored, len) == 0;
  free(bytes);
  if (!same) {
    snprintf(b->err, sizeof b->err, "fetch: the shard fetched back differs from the one pushed");
    return -1;
  }
  return 0;
}

static int op_persist(bench *b, int64_t *ns) {
  /* One file per persisted step, as in a job; the previous one goes. */
  if (b->persisted.step != 0) tg_ckpt_disk_remove(b->dir, &b->persisted);
  tg_ckpt_key key = b->snap;
  key.step = ++b->next_step;
  char err[384] = "";
  int64_t t0 = now_ns();
  int rc = tg_ckpt_disk_write(b->dir, &key, b->restored, b->shard_bytes, b->shard_crc, err, sizeof err);
  *ns = now_ns() - t0;
  if (rc != TG_CKPT_OK) {
    snprintf(b->err, sizeof b->err, "persist: %s: %s", tg_ckpt_result_name(rc), err);
    return -1;
  }
  b->persisted = key;
  /* The layout documented in disk.h: DIR/<job>/<step, 20 digits>/<world_size>-<shard>.tgck */
  snprintf(disk_paths[1], sizeof disk_paths[1], "%s/%s/%020" PRIu64, b->dir, key.job_id, key.step);
  snprintf(disk_paths[0], sizeof disk_paths[0], "%s/%s/%020" PRIu64 "/%" PRIu32 "-%" PRId32 ".tgck",
           b->dir, key.job_id, key.step, key.world_size, key.shard);
  return 0;
}

/* Drops the persisted file's clean pages, so the next read hits the
 * device. */
static void drop_page_cache(bench *b) {
  int fd = open(disk_paths[0], O_RDONLY | O_CLOEXEC);
  if (fd < 0 || posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) != 0) b->cold_reads = 0;
  if (fd >= 0) close(fd);
}

static int op_disk_read(bench *b, int64_t *ns) {
  void *bytes = NULL;
  size_t len = 0;
  uint64_t crc = 0;
  drop_page_cache(b);
  int64_t t0 = now_ns();
  int rc = tg_ckpt_disk_read_alloc(b->dir, &b->persisted, &bytes, &len, &crc);
  *ns = now_ns() - t0;
  free(bytes);
  if (rc != TG_CKPT_OK || len != b->shard_bytes || crc != b->shard_crc) {
    snprintf(b->err, sizeof b->err, "disk read: %s, %zu bytes of %zu", tg_ckpt_result_name(rc),
             len, b->shard_bytes);
    return -1;
  }
  return 0;
}

typedef struct {
  double median_ms, p90_ms;
} timing;

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* Runs op `warmups` times untimed, then `rounds` times timed. */
static int measure(bench *b, bench_op op, int warmups, timing *out) {
  int64_t *ns = calloc((size_t)rounds, sizeof *ns);
  if (ns == NULL) {
    snprintf(b->err, sizeof b->err, "out of memory");
    return -1;
  }
  for (int64_t i = 0; i < warmups + rounds; i++) {
    int64_t t = 0;
    if (op(b, &t) != 0) {
      free(ns);
      return -1;
    }
    if (i >= warmups) ns[i - warmups] = t;
  }
  size_t n = (size_t)rounds;
  qsort(ns, n, sizeof *ns, cmp_i64);
  double median = n % 2 ? (double)ns[n / 2] : ((double)ns[n / 2 - 1] + (double)ns[n / 2]) / 2;
  out->median_ms = median / 1e6;
  out->p90_ms = (double)ns[(9 * n + 9) / 10 - 1] / 1e6; /* nearest rank */
  free(ns);
  return 0;
}

static void format_ms(double ms, char *out, size_t outlen) {
  snprintf(out, outlen, ms < 1 ? "%.3f" : ms < 10 ? "%.2f" : "%.1f", ms);
}

static void print_row(uint64_t mib, const char *what, const timing *t, size_t bytes,
                      double memcpy_ms) {
  char med[32], p90[32];
  format_ms(t->median_ms, med, sizeof med);
  format_ms(t->p90_ms, p90, sizeof p90);
  double gbps = t->median_ms > 0 ? (double)bytes / (t->median_ms * 1e6) : 0;
  printf("| %" PRIu64 " | %s | %s | %s | %.2f | %.1fx |\n", mib, what, med, p90, gbps,
         memcpy_ms > 0 ? t->median_ms / memcpy_ms : 0);
  fflush(stdout);
}

typedef struct {
  const char *what;
  bench_op op;
  int warmups; /* enough to touch every page the timed rounds use */
  int on_disk;
} bench_step;

static const bench_step STEPS[] = {
    {"memcpy (lower bound)", op_memcpy, 1, 0},
    {"CRC-64 alone", op_crc, 1, 0},
    {"snapshot stall (writer begin+append+commit)", op_snapshot, (int)STORE_SLOTS, 0},
    {"restore (store_read: copy + CRC check)", op_restore, 1, 0},
    {"push to buddy (gRPC, loopback)", op_push, (int)STORE_SLOTS, 0},
    {"fetch from buddy (fetch_alloc)", op_fetch, 1, 0},
    {"persist (disk_write, fsync)", op_persist, 1, 1},
    {"read from disk (disk_read_alloc, cold)", op_disk_read, 0, 1},
};

/* Measures every step at one size; the disk steps only if with_disk. */
static int bench_size(bench *b, uint64_t mib, int with_disk) {
  b->state_bytes = (size_t)(mib * MIB);
  b->shard_bytes = b->state_bytes + FRAME_BYTES;
  fill_pseudo_random(b->state, b->state_bytes, mib);
  double memcpy_ms = 0;
  for (size_t i = 0; i < sizeof STEPS / sizeof STEPS[0]; i++) {
    const bench_step *s = &STEPS[i];
    if (s->on_disk && !with_disk) continue;
    timing t;
    if (measure(b, s->op, s->warmups, &t) != 0) return -1;
    if (s->op == op_memcpy) memcpy_ms = t.median_ms;
    const char *what = s->what;
    if (s->op == op_disk_read && !b->cold_reads) what = "read from disk (disk_read_alloc, page cache NOT dropped)";
    print_row(mib, what, &t, s->op == op_memcpy || s->op == op_crc ? b->state_bytes : b->shard_bytes,
              memcpy_ms);
  }
  return 0;
}

/* Both stores, the buddy's Replication server on 127.0.0.1:0, a channel to it. */
static int bench_open(bench *b, uint64_t max_shard_bytes, char *err, size_t errlen) {
  uint64_t capacity = STORE_SLOTS * (max_shard_bytes + 4096) + STORE_SLACK_BYTES;
  tg_ckpt_store **stores[2] = {&b->store, &b->buddy};
  for (int i = 0; i < 2; i++) {
    *stores[i] = tg_ckpt_store_create(shm_name[i], capacity, STORE_SLOTS, STORE_KEEP_STEPS, err, errlen);
    if (*stores[i] == NULL) return -1;
    shm_made[i] = 1;
    if (tg_ckpt_store_slot_bytes(*stores[i]) < max_shard_bytes) {
      snprintf(err, errlen, "store %s: slots of %" PRIu64 " bytes, need %" PRIu64, shm_name[i],
               tg_ckpt_store_slot_bytes(*stores[i]), max_shard_bytes);
      return -1;
    }
  }
  tg_ckpt_repl_config server_cfg = {0}; /* slot-sized shards, default chunks */
  tg_rpc_server_config rpc_cfg = {.max_queued_sends = tg_ckpt_repl_queued_sends(b->buddy, &server_cfg)};
  b->srv = tg_rpc_server_new(&rpc_cfg, err, errlen);
  if (b->srv == NULL) return -1;
  b->repl = tg_ckpt_repl_server_new(b->buddy, &server_cfg);
  if (b->repl == NULL || tg_ckpt_repl_server_register(b->repl, b->srv) != 0) {
    snprintf(err, errlen, "cannot set up the Replication service");
    return -1;
  }
  int port = tg_rpc_server_listen(b->srv, "127.0.0.1:0", NULL, err, errlen);
  if (port <= 0 || tg_rpc_server_start(b->srv, err, errlen) != 0) return -1;
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  b->ch = tg_rpc_channel_new(target, NULL, err, errlen);
  if (b->ch == NULL) return -1;
  if (tg_rpc_channel_wait_ready(b->ch, CONNECT_TIMEOUT_MS) != 0) {
    snprintf(err, errlen, "no connection to the buddy server at %s within %d ms", target,
             CONNECT_TIMEOUT_MS);
    return -1;
  }
  b->cfg = (tg_ckpt_repl_config){.deadline_ms = CALL_DEADLINE_MS, .node_id = "bench-a"};
  return 0;
}

/* Frees whatever bench_open and main made; safe on a partial bench. */
static void bench_close(bench *b) {
  tg_rpc_channel_free(b->ch);
  if (b->srv != NULL) tg_rpc_server_free(b->srv, SERVER_GRACE_MS);
  tg_ckpt_repl_server_free(b->repl);
  tg_ckpt_store_close(b->store);
  tg_ckpt_store_close(b->buddy);
  unlink_stores_at_exit();
  if (b->dir[0] != '\0') {
    char job[700];
    if (b->persisted.step != 0) tg_ckpt_disk_remove(b->dir, &b->persisted);
    snprintf(job, sizeof job, "%s/%s", b->dir, JOB_ID);
    rmdir(job);
    if (rmdir(b->dir) != 0) fprintf(stderr, "checkpoint_bench: could not remove %s\n", b->dir);
  }
  free(b->state);
  free(b->copy);
  free(b->restored);
}

/* Allocates the buffers for the largest size and touches their pages. */
static int bench_buffers(bench *b, uint64_t max_shard_bytes) {
  b->buf_bytes = (size_t)max_shard_bytes;
  b->state = malloc(b->buf_bytes);
  b->copy = malloc(b->buf_bytes);
  b->restored = malloc(b->buf_bytes);
  if (b->state == NULL || b->copy == NULL || b->restored == NULL) return -1;
  memset(b->state, 1, b->buf_bytes);
  memset(b->copy, 1, b->buf_bytes);
  memset(b->restored, 1, b->buf_bytes);
  return 0;
}

int main(int argc, char **argv) {
  char command[1024];
  command_line(argc, argv, command, sizeof command); /* before parsing reorders argv */
  const tg_option opts[] = {
      {"sizes-mib", TG_OPT_STRING, sizes_text, sizeof sizes_text, 0, 0,
       "state sizes to measure, in MiB, comma-separated"},
      {"rounds", TG_OPT_INT, &rounds, 0, 1, 1000, "timed rounds per operation and size"},
      {"dir", TG_OPT_STRING, parent_dir, sizeof parent_dir, 0, 0,
       "where to make the temporary directory for persisted shards (default: $TMPDIR or /tmp)"},
      {"timeout-s", TG_OPT_INT, &timeout_s, 0, 10, 86400, "watchdog: give up after this long"},
  };
  char err[512] = "";
  switch (tg_config_parse(opts, sizeof opts / sizeof opts[0], argc, argv,
                          "usage: checkpoint_bench [--sizes-mib 1,16,64,256] [--rounds 5]\n\n"
                          "Measures a checkpoint shard's snapshot stall, restore, replication and "
                          "persistence on CPU.",
                          NULL, err, sizeof err)) {
  case TG_CONFIG_HELP: return 0;
  case TG_CONFIG_ERROR: fprintf(stderr, "checkpoint_bench: %s\n", err); return 2;
  case TG_CONFIG_OK: break;
  }
  uint64_t sizes[MAX_SIZES];
  size_t n_sizes = 0;
  if (parse_sizes(sizes_text, sizes, &n_sizes) != 0) {
    fprintf(stderr, "checkpoint_bench: --sizes-mib wants up to %d sizes of 1..%d MiB, like 1,16,64\n",
            MAX_SIZES, MAX_SIZE_MIB);
    return 2;
  }
  if (parent_dir[0] == '\0') snprintf(parent_dir, sizeof parent_dir, "%s", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  tg_log_init("checkpoint_bench", TG_LOG_WARN);
  for (int i = 0; i < 2; i++) {
    snprintf(shm_name[i], sizeof shm_name[i], "/tg-bench-%d-%c", (int)getpid(), 'a' + i);
    snprintf(shm_file[i], sizeof shm_file[i], "/dev/shm%s", shm_name[i]);
  }
  install_cleanup();
  alarm((unsigned)timeout_s);
  int64_t started = now_ns();
  print_run_header(command);

  /* What fits: two stores of two slots in /dev/shm, and memory for them
   * and the heap copies; disk room for one shard file at a time. */
  bench b;
  memset(&b, 0, sizeof b);
  b.cold_reads = 1;
  int rc = 1;
  uint64_t shm_free = fs_available_bytes("/dev/shm"), mem_free = meminfo_bytes("MemAvailable");
  snprintf(b.dir, sizeof b.dir, "%s/tg-bench-ckpt-XXXXXX", parent_dir);
  if (mkdtemp(b.dir) == NULL) {
    fprintf(stderr, "checkpoint_bench: mkdtemp %s: %s (choose another --dir)\n", b.dir, strerror(errno));
    b.dir[0] = '\0';
    goto out;
  }
  snprintf(disk_paths[2], sizeof disk_paths[2], "%s/%s", b.dir, JOB_ID);
  snprintf(disk_paths[3], sizeof disk_paths[3], "%s", b.dir);
  uint64_t disk_free = fs_available_bytes(b.dir);
  printf("space:   /dev/shm %.1f GiB free, memory %.1f GiB available, %s (%s) %.1f GiB free\n",
         (double)shm_free / (MIB * 1024), (double)mem_free / (MIB * 1024), b.dir,
         fs_type_name(b.dir), (double)disk_free / (MIB * 1024));
  int fits[MAX_SIZES], disk_fits[MAX_SIZES];
  uint64_t max_shard = 0;
  for (size_t i = 0; i < n_sizes; i++) {
    uint64_t shard = sizes[i] * MIB + FRAME_BYTES;
    uint64_t stores = 2 * (STORE_SLOTS * (shard + 4096) + STORE_SLACK_BYTES);
    fits[i] = stores <= shm_free && stores + HEAP_COPIES * shard <= mem_free;
    disk_fits[i] = 2 * shard <= disk_free;
    if (!fits[i]) {
      printf("skipped: %" PRIu64 " MiB: two stores need %.2f GiB of /dev/shm (%.2f free) and "
             "%.2f GiB of memory (%.2f available)\n",
             sizes[i], (double)stores / (MIB * 1024), (double)shm_free / (MIB * 1024),
             (double)(stores + HEAP_COPIES * shard) / (MIB * 1024), (double)mem_free / (MIB * 1024));
    } else if (!disk_fits[i]) {
      printf("skipped: disk rows of %" PRIu64 " MiB: %s has %.2f GiB free, need %.2f\n", sizes[i],
             b.dir, (double)disk_free / (MIB * 1024), (double)(2 * shard) / (MIB * 1024));
    }
    if (fits[i] && shard > max_shard) max_shard = shard;
  }
  if (max_shard == 0) {
    fprintf(stderr, "checkpoint_bench: no size fits this machine\n");
    goto out;
  }
  if (bench_open(&b, max_shard, err, sizeof err) != 0) {
    fprintf(stderr, "checkpoint_bench: %s\n", err);
    goto out;
  }
  if (bench_buffers(&b, max_shard) != 0) {
    fprintf(stderr, "checkpoint_bench: out of memory for %" PRIu64 " bytes x 3\n", max_shard);
    goto out;
  }

  printf("\n| MiB | operation | median ms | p90 ms | GB/s | x memcpy |\n");
  printf("| ---: | --- | ---: | ---: | ---: | ---: |\n");
  for (size_t i = 0; i < n_sizes; i++) {
    if (!fits[i]) continue;
    if (bench_size(&b, sizes[i], disk_fits[i]) != 0) {
      fprintf(stderr, "checkpoint_bench: %" PRIu64 " MiB: %s\n", sizes[i], b.err);
      goto out;
    }
  }
  printf("\ntotal: %.1f s\n", (double)(now_ns() - started) / 1e9);
  rc = 0;
out:
  bench_close(&b);
  return rc;
}
