/* Tests of the shared-memory checkpoint store (store.h) with real
 * processes: shards written by a child that is then SIGKILLed, a writer
 * killed in the middle of a copy, bytes and slot tables scribbled on by
 * "user code" or by deliberate fault injection, retention of the newest
 * steps, a full store, and a reader racing a writer. Every wait has a
 * deadline; names are unique per process and unlinked at exit. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include <cmocka.h>

#include "agent/ckpt/crc64.h"
#include "agent/ckpt/store.h"
#include "agent/ckpt/testdata/test_names.h"
#include "common/log/log.h"

#define CHILD_DEADLINE_MS 5000

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fill(unsigned char *buf, size_t len, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
  for (size_t i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    buf[i] = (unsigned char)x;
  }
}

static tg_ckpt_key key_of(const char *job, uint64_t step, int32_t shard, uint32_t world) {
  tg_ckpt_key k;
  memset(&k, 0, sizeof(k));
  snprintf(k.job_id, sizeof(k.job_id), "%s", job);
  k.generation = 3;
  k.step = step;
  k.shard = shard;
  k.world_size = world;
  return k;
}

static tg_ckpt_store *new_store(char *name, size_t namelen, uint64_t capacity, uint32_t slots,
                                uint32_t keep) {
  char err[256] = "";
  tg_ckpt_test_name("store", name, namelen);
  tg_ckpt_store *s = tg_ckpt_store_create(name, capacity, slots, keep, err, sizeof(err));
  if (s == NULL) fail_msg("create %s: %s", name, err);
  return s;
}

/* Waits for one byte on fd; 1 if it came within timeout_ms. */
static int wait_byte(int fd, int64_t timeout_ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  char c;
  return poll(&p, 1, (int)timeout_ms) == 1 && read(fd, &c, 1) == 1;
}

/* A child that opens the store, runs `work` and then reports on the pipe
 * and waits to be killed (an alarm bounds its life). */
typedef int (*child_work)(tg_ckpt_store *s, void *arg);

static pid_t start_child(const char *name, child_work work, void *arg, int *ready_fd) {
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    alarm(CHILD_DEADLINE_MS / 1000);
    char err[256];
    tg_ckpt_store *s = tg_ckpt_store_open(name, err, sizeof(err));
    if (s == NULL || work(s, arg) != 0) _exit(1);
    if (write(fds[1], "r", 1) != 1) _exit(1);
    for (;;) pause();
  }
  close(fds[1]);
  *ready_fd = fds[0];
  return pid;
}

static void kill_child(pid_t pid) {
  int status = 0;
  assert_int_equal(kill(pid, SIGKILL), 0);
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

/* ----------------------------------------------------------------- CRC */

static void test_crc64_check_value(void **state) {
  assert_true(tg_crc64_update(0, "123456789", 9) == 0x995DC9BBDF1939FAULL);
  assert_true(tg_crc64_update(0, "", 0) == 0);
  unsigned char buf[1000];
  fill(buf, sizeof(buf), 7);
  uint64_t whole = tg_crc64_update(0, buf, sizeof(buf));
  for (size_t cut = 0; cut <= sizeof(buf); cut += 37) {
    assert_true(tg_crc64_update(tg_crc64_update(0, buf, cut), buf + cut, sizeof(buf) - cut) ==
                whole);
  }
}

/* -------------------------------------------------------------- basics */

static void test_write_read_and_open_by_name(void **state) {
  char name[96], err[256];
  tg_ckpt_store *s = new_store(name, sizeof(name), 1 << 20, 4, 1);
  assert_true(tg_ckpt_store_slot_bytes(s) >= 200000);
  unsigned char in[5000], out[5000];
  fill(in, sizeof(in), 1);
  tg_ckpt_key k = key_of("job-a", 10, 1, 4);
  assert_int_equal(tg_ckpt_store_write(s, &k, in, sizeof(in)), TG_CKPT_OK);

  tg_ckpt_store *t = tg_ckpt_store_open(name, err, sizeof(err));
  assert_non_null(t);
  assert_int_equal(tg_ckpt_store_slots(t), 4);
  size_t len = 0;
  uint64_t crc = 0;
  assert_int_equal(tg_ckpt_store_read(t, &k, out, sizeof(out), &len, &crc), TG_CKPT_OK);
  assert_int_equal(len, sizeof(in));
  assert_memory_equal(in, out, sizeof(in));
  assert_true(crc == tg_crc64_update(0, in, sizeof(in)));
  assert_int_equal(tg_ckpt_store_read(t, &k, out, 100, &len, NULL), TG_CKPT_TOO_LARGE);
  assert_int_equal(len, sizeof(in));
  void *copy = NULL;
  assert_int_equal(tg_ckpt_store_read_alloc(t, &k, &copy, &len, NULL), TG_CKPT_OK);
  assert_memory_equal(copy, in, sizeof(in));
  free(copy);

  tg_ckpt_key other = k;
  other.generation++;
  assert_int_equal(tg_ckpt_store_read(t, &other, out, sizeof(out), &len, NULL), TG_CKPT_NOT_FOUND);
  tg_ckpt_key bad = k;
  bad.shard = 4;
  assert_int_equal(tg_ckpt_store_write(t, &bad, in, 1), TG_CKPT_INVALID);
  /* An empty shard is a shard. */
  tg_ckpt_key empty = key_of("job-a", 10, 2, 4);
  assert_int_equal(tg_ckpt_store_write(t, &empty, NULL, 0), TG_CKPT_OK);
  assert_int_equal(tg_ckpt_store_read(t, &empty, NULL, 0, &len, NULL), TG_CKPT_OK);
  assert_int_equal(len, 0);

  tg_ckpt_store_close(t);
  tg_ckpt_store_close(s);
  assert_int_equal(tg_ckpt_store_unlink(name), 0);
  assert_null(tg_ckpt_store_open(name, err, sizeof(err)));
  assert_null(tg_ckpt_store_open("no-slash", err, sizeof(err)));
}

/* ------------------------------------------------- crashes of writers */

typedef struct {
  tg_ckpt_key key;
  unsigned char *bytes;
  size_t len;
  size_t stop_after; /* bytes appended before stopping mid-write */
} child_shard;

static int write_whole(tg_ckpt_store *s, void *arg) {
  child_shard *c = arg;
  return tg_ckpt_store_write(s, &c->key, c->bytes, c->len) == TG_CKPT_OK ? 0 : -1;
}

static int write_half(tg_ckpt_store *s, void *arg) {
  child_shard *c = arg;
  tg_ckpt_writer *w = NULL;
  if (tg_ckpt_writer_begin(s, &c->key, c->len, &w) != TG_CKPT_OK) return -1;
  return tg_ckpt_writer_append(w, c->bytes, c->stop_after) == TG_CKPT_OK ? 0 : -1;
}

static void test_shard_of_killed_child_is_read_intact(void **state) {
  char name[96];
  tg_ckpt_store *s = new_store(name, sizeof(name), 16 << 20, 4, 1);
  child_shard c = {.key = key_of("job-k", 42, 0, 1), .len = 3 << 20};
  c.bytes = malloc(c.len);
  fill(c.bytes, c.len, 42);
  int fd;
  pid_t pid = start_child(name, write_whole, &c, &fd);
  assert_true(wait_byte(fd, CHILD_DEADLINE_MS));
  kill_child(pid);
  close(fd);

  void *out = NULL;
  size_t len = 0;
  assert_int_equal(tg_ckpt_store_read_alloc(s, &c.key, &out, &len, NULL), TG_CKPT_OK);
  assert_int_equal(len, c.len);
  assert_memory_equal(out, c.bytes, c.len);
  tg_ckpt_key newest;
  assert_int_equal(tg_ckpt_store_newest(s, "job-k", 0, &newest), TG_CKPT_OK);
  assert_true(tg_ckpt_key_equal(&newest, &c.key));
  free(out);
  free(c.bytes);
  tg_ckpt_store_close(s);
}

static void test_writer_killed_mid_write_never_commits(void **state) {
  char name[96];
  tg_ckpt_store *s = new_store(name, sizeof(name), 1 << 20, 3, 1);
  child_shard c = {.key = key_of("job-w", 7, 0, 1), .len = 100000, .stop_after = 40000};
  c.bytes = malloc(c.len);
  fill(c.bytes, c.len, 7);
  int fd;
  pid_t pid = start_child(name, write_half, &c, &fd);
  assert_true(wait_byte(fd, CHILD_DEADLINE_MS));

  size_t len = 0;
  tg_ckpt_key newest;
  assert_int_equal(tg_ckpt_store_free_slots(s), 2);
  assert_int_equal(tg_ckpt_store_reclaim(s), 0); /* its writer is alive */
  kill_child(pid);
  close(fd);
  unsigned char out[16];
  assert_int_equal(tg_ckpt_store_read(s, &c.key, out, sizeof(out), &len, NULL), TG_CKPT_NOT_FOUND);
  assert_int_equal(tg_ckpt_store_newest(s, "job-w", 0, &newest), TG_CKPT_NOT_FOUND);
  assert_int_equal(tg_ckpt_store_list(s, NULL, NULL, 0), 0);
  assert_int_equal(tg_ckpt_store_free_slots(s), 2);
  assert_int_equal(tg_ckpt_store_reclaim(s), 1);
  assert_int_equal(tg_ckpt_store_free_slots(s), 3);

  /* A writer that announces more than it writes cannot commit either. */
  tg_ckpt_writer *w = NULL;
  assert_int_equal(tg_ckpt_writer_begin(s, &c.key, 10, &w), TG_CKPT_OK);
  assert_int_equal(tg_ckpt_writer_append(w, c.bytes, 11), TG_CKPT_TOO_LARGE);
  assert_int_equal(tg_ckpt_writer_append(w, c.bytes, 4), TG_CKPT_OK);
  assert_int_equal(tg_ckpt_writer_commit(w), TG_CKPT_SHORT);
  assert_int_equal(tg_ckpt_store_list(s, NULL, NULL, 0), 0);
  assert_int_equal(tg_ckpt_store_free_slots(s), 3);
  free(c.bytes);
  tg_ckpt_store_close(s);
}

/* ---------------------------------------------------- user scribbling */

/* Maps the whole region as a stray trainer would. */
static unsigned char *map_raw(const char *name, size_t *bytes) {
  int fd = shm_open(name, O_RDWR, 0);
  assert_true(fd >= 0);
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  *bytes = (size_t)st.st_size;
  void *p = mmap(NULL, *bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  assert_true(p != MAP_FAILED);
  return p;
}

static void test_corrupt_byte_is_refused(void **state) {
  char name[96];
  tg_ckpt_store *s = new_store(name, sizeof(name), 1 << 20, 2, 1);
  unsigned char in[4096], out[4096];
  fill(in, sizeof(in), 99);
  tg_ckpt_key k = key_of("job-c", 5, 0, 1);
  assert_int_equal(tg_ckpt_store_write(s, &k, in, sizeof(in)), TG_CKPT_OK);

  size_t bytes;
  unsigned char *raw = map_raw(name, &bytes);
  unsigned char *at = memmem(raw, bytes, in + 1000, 64);
  assert_non_null(at);
  at[17] ^= 0x10;
  size_t len = 0;
  void *copy = NULL;
  assert_int_equal(tg_ckpt_store_read(s, &k, out, sizeof(out), &len, NULL), TG_CKPT_CORRUPT);
  assert_int_equal(tg_ckpt_store_read_alloc(s, &k, &copy, &len, NULL), TG_CKPT_CORRUPT);
  assert_null(copy);
  at[17] ^= 0x10;
  assert_int_equal(tg_ckpt_store_read(s, &k, out, sizeof(out), &len, NULL), TG_CKPT_OK);
  munmap(raw, bytes);
  tg_ckpt_store_close(s);
}

static void test_injected_corruption_is_refused(void **state) {
  char name[96];
  tg_ckpt_store *s = new_store(name, sizeof(name), 1 << 20, 2, 1);
  unsigned char in[4096], out[4096];
  fill(in, sizeof(in), 7);
  tg_ckpt_key k = key_of("job-i", 8, 0, 1);
  assert_int_equal(tg_ckpt_store_write(s, &k, in, sizeof(in)), TG_CKPT_OK);
  size_t bytes;
  unsigned char *raw = map_raw(name, &bytes);
  unsigned char *at = memmem(raw, bytes, in, sizeof(in));
  assert_non_null(at);

  /* Offset beyond the shard wraps: exactly byte 10 changes. */
  assert_int_equal(tg_ckpt_store_corrupt(s, &k, sizeof(in) * 3 + 10), TG_CKPT_OK);
  for (size_t i = 0; i < sizeof(in); i++) {
    if (i == 10) {
      assert_int_not_equal(at[i], in[i]);
    } else {
      assert_int_equal(at[i], in[i]);
    }
  }
  size_t len = 0;
  void *copy = NULL;
  assert_int_equal(tg_ckpt_store_read(s, &k, out, sizeof(out), &len, NULL), TG_CKPT_CORRUPT);
  assert_int_equal(tg_ckpt_store_read_alloc(s, &k, &copy, &len, NULL), TG_CKPT_CORRUPT);
  assert_null(copy);
  /* The same flip again undoes it. */
  assert_int_equal(tg_ckpt_store_corrupt(s, &k, 10), TG_CKPT_OK);
  assert_int_equal(tg_ckpt_store_read(s, &k, out, sizeof(out), &len, NULL), TG_CKPT_OK);
  assert_memory_equal(in, out, sizeof(in));

  tg_ckpt_key missing = key_of("job-i", 9, 0, 1);
  assert_int_equal(tg_ckpt_store_corrupt(s, &missing, 0), TG_CKPT_NOT_FOUND);
  tg_ckpt_key bad = key_of("job-i", 8, 1, 1);
  assert_int_equal(tg_ckpt_store_corrupt(s, &bad, 0), TG_CKPT_INVALID);
  tg_ckpt_key empty = key_of("job-i", 8, 0, 2);
  assert_int_equal(tg_ckpt_store_write(s, &empty, NULL, 0), TG_CKPT_OK);
  assert_int_equal(tg_ckpt_store_corrupt(s, &empty, 0), TG_CKPT_INVALID);
  munmap(raw, bytes);
  tg_ckpt_store_close(s);
}

static void test_scribbled_region_is_validated(void **state) {
  char name[96], err[256];
  tg_ckpt_store *s = new_store(name, sizeof(name), 1 << 20, 64, 1);
  size_t bytes;
  unsigned char *raw = map_raw(name, &bytes);
  /* Garbage over the slot table and data: some slots look committed with
   * absurd lengths, keys or states. Nothing may crash or read as valid. */
  fill(raw + 4096, bytes - 4096, 1234);
  tg_ckpt_key keys[64];
  size_t n = tg_ckpt_store_list(s, NULL, keys, 64);
  assert_true(n <= 64);
  unsigned char out[256];
  for (size_t i = 0; i < n; i++) {
    size_t len = 0;
    void *copy = NULL;
    int rc = tg_ckpt_store_read(s, &keys[i], out, sizeof(out), &len, NULL);
    assert_true(rc == TG_CKPT_CORRUPT || rc == TG_CKPT_TOO_LARGE);
    assert_int_equal(tg_ckpt_store_read_alloc(s, &keys[i], &copy, &len, NULL), TG_CKPT_CORRUPT);
    assert_true(len <= tg_ckpt_store_slot_bytes(s));
  }
  tg_ckpt_store_reclaim(s);
  tg_ckpt_key k = key_of("job-s", 1, 0, 1);
  if (tg_ckpt_store_free_slots(s) > 0) {
    assert_int_equal(tg_ckpt_store_write(s, &k, out, sizeof(out)), TG_CKPT_OK);
    size_t len = 0;
    assert_int_equal(tg_ckpt_store_read(s, &k, out, sizeof(out), &len, NULL), TG_CKPT_OK);
  }
  /* A scribbled header: the region is no longer opened. */
  memset(raw, 0x5a, 64);
  assert_null(tg_ckpt_store_open(name, err, sizeof(err)));
  assert_non_null(strstr(err, "not a checkpoint store"));
  munmap(raw, bytes);
  tg_ckpt_store_close(s);
}

/* ---------------------------------------------- retention and capacity */

static void test_keeps_newest_steps_per_shard(void **state) {
  char name[96];
  tg_ckpt_store *s = new_store(name, sizeof(name), 1 << 20, 6, 2);
  unsigned char in[1000];
  for (uint64_t step = 1; step <= 6; step++) {
    for (int32_t shard = 0; shard < 2; shard++) {
      fill(in, sizeof(in), step * 10 + (uint64_t)shard);
      tg_ckpt_key k = key_of("job-r", step, shard, 2);
      assert_int_equal(tg_ckpt_store_write(s, &k, in, sizeof(in)), TG_CKPT_OK);
    }
  }
  tg_ckpt_key keys[8];
  assert_int_equal(tg_ckpt_store_list(s, "job-r", keys, 8), 4);
  for (int i = 0; i < 4; i++) assert_true(keys[i].step == 5 || keys[i].step == 6);
  assert_int_equal(tg_ckpt_store_free_slots(s), 2);
  tg_ckpt_key newest;
  assert_int_equal(tg_ckpt_store_newest(s, "job-r", 1, &newest), TG_CKPT_OK);
  assert_true(newest.step == 6);
  unsigned char out[1000];
  size_t len;
  fill(in, sizeof(in), 51);
  assert_int_equal(tg_ckpt_store_read(s, &keys[0], out, sizeof(out), &len, NULL), TG_CKPT_OK);
  tg_ckpt_key k5 = key_of("job-r", 5, 1, 2);
  assert_int_equal(tg_ckpt_store_read(s, &k5, out, sizeof(out), &len, NULL), TG_CKPT_OK);
  assert_memory_equal(in, out, sizeof(in));

  /* Writing a key again replaces it; a late, older step is retired at once. */
  assert_int_equal(tg_ckpt_store_write(s, &k5, in, 10), TG_CKPT_OK);
  assert_int_equal(tg_ckpt_store_read(s, &k5, out, sizeof(out), &len, NULL), TG_CKPT_OK);
  assert_int_equal(len, 10);
  tg_ckpt_key old = key_of("job-r", 2, 1, 2);
  assert_int_equal(tg_ckpt_store_write(s, &old, in, 10), TG_CKPT_OK);
  assert_int_equal(tg_ckpt_store_read(s, &old, out, sizeof(out), &len, NULL), TG_CKPT_NOT_FOUND);
  assert_int_equal(tg_ckpt_store_list(s, NULL, NULL, 0), 4);
  tg_ckpt_store_close(s);
}

/* A new world resumed at an older step (from the disk, say): its steps
 * have lower numbers than the dead world's but a later generation, and
 * they are the ones kept. */
static void test_later_generation_is_newer_whatever_its_step(void **state) {
  char name[96];
  tg_ckpt_store *s = new_store(name, sizeof(name), 1 << 20, 6, 4);
  unsigned char in[100], out[100];
  size_t len;
  fill(in, sizeof(in), 7);
  for (uint64_t step = 67; step <= 70; step++) { /* generation 1, 8 ranks */
    tg_ckpt_key k = key_of("job-g", step, 0, 8);
    k.generation = 1;
    assert_int_equal(tg_ckpt_store_write(s, &k, in, sizeof(in)), TG_CKPT_OK);
  }
  for (uint64_t step = 61; step <= 63; step++) { /* generation 3, 4 ranks, resumed at 60 */
    tg_ckpt_key k = key_of("job-g", step, 0, 4);
    k.generation = 3;
    assert_int_equal(tg_ckpt_store_write(s, &k, in, sizeof(in)), TG_CKPT_OK);
    assert_int_equal(tg_ckpt_store_read(s, &k, out, sizeof(out), &len, NULL), TG_CKPT_OK);
  }
  tg_ckpt_key newest;
  assert_int_equal(tg_ckpt_store_newest(s, "job-g", 0, &newest), TG_CKPT_OK);
  assert_true(newest.generation == 3 && newest.step == 63);
  tg_ckpt_key keys[8];
  assert_int_equal(tg_ckpt_store_list(s, "job-g", keys, 8), 4);
  int old_world = 0;
  for (int i = 0; i < 4; i++) old_world += keys[i].generation == 1;
  assert_int_equal(old_world, 1); /* generation 1's step 70 is the 4th newest */
  tg_ckpt_key k64 = key_of("job-g", 64, 0, 4);
  k64.generation = 3;
  assert_int_equal(tg_ckpt_store_write(s, &k64, in, sizeof(in)), TG_CKPT_OK);
  assert_int_equal(tg_ckpt_store_list(s, "job-g", keys, 8), 4);
  for (int i = 0; i < 4; i++) assert_true(keys[i].generation == 3 && keys[i].step >= 61);
  tg_ckpt_store_close(s);
}

static void test_two_writers_of_one_key_leave_one_copy(void **state) {
  char name[96];
  tg_ckpt_store *s = new_store(name, sizeof(name), 1 << 20, 4, 1);
  tg_ckpt_key k = key_of("job-d", 1, 0, 1);
  unsigned char a[64], b[64], out[64];
  memset(a, 'a', sizeof(a));
  memset(b, 'b', sizeof(b));
  tg_ckpt_writer *wa = NULL, *wb = NULL;
  assert_int_equal(tg_ckpt_writer_begin(s, &k, sizeof(a), &wa), TG_CKPT_OK);
  assert_int_equal(tg_ckpt_writer_begin(s, &k, sizeof(b), &wb), TG_CKPT_OK);
  assert_int_equal(tg_ckpt_writer_append(wa, a, sizeof(a)), TG_CKPT_OK);
  assert_int_equal(tg_ckpt_writer_append(wb, b, sizeof(b)), TG_CKPT_OK);
  assert_int_equal(tg_ckpt_writer_commit(wb), TG_CKPT_OK);
  assert_int_equal(tg_ckpt_writer_commit(wa), TG_CKPT_OK); /* committed last: stays */
  assert_int_equal(tg_ckpt_store_list(s, NULL, NULL, 0), 1);
  size_t len = 0;
  assert_int_equal(tg_ckpt_store_read(s, &k, out, sizeof(out), &len, NULL), TG_CKPT_OK);
  assert_memory_equal(out, a, sizeof(a));
  assert_int_equal(tg_ckpt_store_free_slots(s), 3);
  tg_ckpt_store_close(s);
}

static void test_full_store_says_so(void **state) {
  char name[96], err[256];
  tg_ckpt_store *s = new_store(name, sizeof(name), 1 << 20, 2, 2);
  size_t big = (size_t)tg_ckpt_store_slot_bytes(s) + 1;
  unsigned char *in = calloc(1, big);
  tg_ckpt_key k = key_of("job-f", 1, 0, 1);
  assert_int_equal(tg_ckpt_store_write(s, &k, in, big), TG_CKPT_TOO_LARGE);
  assert_int_equal(tg_ckpt_store_write(s, &k, in, big - 1), TG_CKPT_OK);
  k.step = 2;
  assert_int_equal(tg_ckpt_store_write(s, &k, in, 100), TG_CKPT_OK);
  k.step = 3;
  assert_int_equal(tg_ckpt_store_write(s, &k, in, 100), TG_CKPT_FULL);
  assert_int_equal(tg_ckpt_store_list(s, NULL, NULL, 0), 2);

  char other[96];
  tg_ckpt_test_name("store", other, sizeof(other));
  assert_null(tg_ckpt_store_create(other, 4096, 2, 1, err, sizeof(err)));
  assert_non_null(strstr(err, "cannot hold"));
  assert_null(tg_ckpt_store_create(other, 1 << 20, 2, 3, err, sizeof(err)));
  assert_null(tg_ckpt_store_create(name, 1 << 20, 2, 1, err, sizeof(err)));
  assert_non_null(strstr(err, "exists"));
  free(in);
  tg_ckpt_store_close(s);
}

static void test_delete_and_list_by_job(void **state) {
  char name[96];
  tg_ckpt_store *s = new_store(name, sizeof(name), 1 << 20, 8, 1);
  unsigned char in[100] = {1};
  tg_ckpt_key a0 = key_of("job-a", 1, 0, 2), a1 = key_of("job-a", 1, 1, 2);
  tg_ckpt_key b0 = key_of("job-b", 9, 0, 1);
  assert_int_equal(tg_ckpt_store_write(s, &a0, in, sizeof(in)), TG_CKPT_OK);
  assert_int_equal(tg_ckpt_store_write(s, &a1, in, sizeof(in)), TG_CKPT_OK);
  assert_int_equal(tg_ckpt_store_write(s, &b0, in, sizeof(in)), TG_CKPT_OK);
  tg_ckpt_key keys[1];
  assert_int_equal(tg_ckpt_store_list(s, "job-a", keys, 1), 2); /* count beyond cap */
  assert_string_equal(keys[0].job_id, "job-a");
  assert_int_equal(tg_ckpt_store_list(s, "job-b", keys, 1), 1);
  assert_true(tg_ckpt_key_equal(&keys[0], &b0));
  assert_int_equal(tg_ckpt_store_list(s, NULL, NULL, 0), 3);
  assert_int_equal(tg_ckpt_store_delete(s, &a1), TG_CKPT_OK);
  assert_int_equal(tg_ckpt_store_delete(s, &a1), TG_CKPT_NOT_FOUND);
  assert_int_equal(tg_ckpt_store_list(s, "job-a", NULL, 0), 1);
  assert_int_equal(tg_ckpt_store_free_slots(s), 6);
  tg_ckpt_store_close(s);
}

/* ------------------------------------------------ a reader racing a writer */

typedef struct {
  tg_ckpt_store *store;
  atomic_int stop;
  int64_t ok_reads;
  atomic_int failures;
} race;

#define RACE_BYTES 65536

static void *race_writer(void *arg) {
  race *r = arg;
  unsigned char *buf = malloc(RACE_BYTES);
  for (uint64_t step = 1; !atomic_load(&r->stop); step++) {
    fill(buf, RACE_BYTES, step);
    tg_ckpt_key k = key_of("job-x", step, 0, 1);
    if (tg_ckpt_store_write(r->store, &k, buf, RACE_BYTES) != TG_CKPT_OK)
      atomic_fetch_add(&r->failures, 1);
  }
  free(buf);
  return NULL;
}

static void test_reader_racing_writer_sees_whole_shards(void **state) {
  char name[96];
  tg_ckpt_store *s = new_store(name, sizeof(name), 1 << 20, 2, 1);
  race r = {.store = s};
  pthread_t writer;
  assert_int_equal(pthread_create(&writer, NULL, race_writer, &r), 0);
  unsigned char *got = malloc(RACE_BYTES), *want = malloc(RACE_BYTES);
  int64_t end = now_ms() + 500;
  while (now_ms() < end) {
    tg_ckpt_key k;
    size_t len = 0;
    if (tg_ckpt_store_newest(s, "job-x", 0, &k) != TG_CKPT_OK) continue;
    int rc = tg_ckpt_store_read(s, &k, got, RACE_BYTES, &len, NULL);
    if (rc == TG_CKPT_OK) {
      fill(want, RACE_BYTES, k.step);
      if (len != RACE_BYTES || memcmp(got, want, RACE_BYTES) != 0) atomic_fetch_add(&r.failures, 1);
      r.ok_reads++;
    } else if (rc != TG_CKPT_NOT_FOUND && rc != TG_CKPT_BUSY) {
      atomic_fetch_add(&r.failures, 1);
    }
  }
  atomic_store(&r.stop, 1);
  pthread_join(writer, NULL);
  assert_int_equal(atomic_load(&r.failures), 0);
  assert_true(r.ok_reads > 0);
  free(got);
  free(want);
  tg_ckpt_store_close(s);
}

int main(void) {
  tg_log_init("store_test", TG_LOG_WARN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_crc64_check_value),
      cmocka_unit_test(test_write_read_and_open_by_name),
      cmocka_unit_test(test_shard_of_killed_child_is_read_intact),
      cmocka_unit_test(test_writer_killed_mid_write_never_commits),
      cmocka_unit_test(test_corrupt_byte_is_refused),
      cmocka_unit_test(test_injected_corruption_is_refused),
      cmocka_unit_test(test_scribbled_region_is_validated),
      cmocka_unit_test(test_keeps_newest_steps_per_shard),
      cmocka_unit_test(test_later_generation_is_newer_whatever_its_step),
      cmocka_unit_test(test_two_writers_of_one_key_leave_one_copy),
      cmocka_unit_test(test_full_store_says_so),
      cmocka_unit_test(test_delete_and_list_by_job),
      cmocka_unit_test(test_reader_racing_writer_sees_whole_shards),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
