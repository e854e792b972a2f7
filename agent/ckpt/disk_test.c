/* Tests of persisted shards (disk.h) in a fresh directory under
 * $TEST_TMPDIR: a round trip, every way a file can go bad (a flipped data
 * byte, a truncated file, a scribbled or misplaced header), listing,
 * removal, names that would escape the directory, and writes that fail the
 * way a full disk does (a file size limit, a path that is not a directory,
 * a read-only directory), each with a clear error and nothing left behind
 * under the final name. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/ckpt/crc64.h"
#include "agent/ckpt/disk.h"
#include "agent/ckpt/store.h"
#include "common/log/log.h"

static char root[512];
static int dir_counter;

static void fill(unsigned char *buf, size_t len, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
  for (size_t i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    buf[i] = (unsigned char)x;
  }
}

static tg_ckpt_key key_of(const char *job, uint64_t generation, uint64_t step, int32_t shard,
                          uint32_t world) {
  tg_ckpt_key k;
  memset(&k, 0, sizeof(k));
  snprintf(k.job_id, sizeof(k.job_id), "%s", job);
  k.generation = generation;
  k.step = step;
  k.shard = shard;
  k.world_size = world;
  return k;
}

/* A directory of its own for each test (not created: the writer does). */
static void new_dir(char *out, size_t len) {
  snprintf(out, len, "%s/d%d", root, dir_counter++);
}

/* Writes a shard of len pseudo-random bytes; returns them (to free). */
static unsigned char *write_shard(const char *dir, const tg_ckpt_key *k, size_t len) {
  unsigned char *in = malloc(len ? len : 1);
  fill(in, len, k->step * 31 + (uint64_t)k->shard);
  char err[512] = "";
  int rc = tg_ckpt_disk_write(dir, k, in, len, tg_crc64_update(0, in, len), err, sizeof(err));
  if (rc != TG_CKPT_OK) fail_msg("write: %s (%s)", err, tg_ckpt_result_name(rc));
  return in;
}

static void shard_path(const char *dir, const tg_ckpt_key *k, char *out, size_t len) {
  snprintf(out, len, "%s/%s/%020llu/%u-%d.tgck", dir, k->job_id, (unsigned long long)k->step,
           k->world_size, k->shard);
}

/* Flips one byte of a file at off. */
static void flip_byte(const char *path, off_t off) {
  int fd = open(path, O_RDWR);
  assert_true(fd >= 0);
  unsigned char c;
  assert_int_equal(pread(fd, &c, 1, off), 1);
  c ^= 0x40;
  assert_int_equal(pwrite(fd, &c, 1, off), 1);
  close(fd);
}

static int entries_in(const char *path) {
  DIR *d = opendir(path);
  if (d == NULL) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
  closedir(d);
  return n;
}

static int read_rc(const char *dir, const tg_ckpt_key *k) {
  void *bytes = NULL;
  size_t len = 0;
  int rc = tg_ckpt_disk_read_alloc(dir, k, &bytes, &len, NULL);
  if (rc != TG_CKPT_OK) assert_null(bytes);
  free(bytes);
  return rc;
}

static void test_round_trip_any_generation(void **state) {
  char dir[600], path[1200];
  new_dir(dir, sizeof(dir));
  tg_ckpt_key k = key_of("job-r", 4, 150, 3, 8);
  size_t len = 300001;
  unsigned char *in = write_shard(dir, &k, len);
  shard_path(dir, &k, path, sizeof(path));
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal((size_t)st.st_size, 128 + len);

  tg_ckpt_key other_gen = k;
  other_gen.generation = 99; /* any generation's copy serves */
  void *bytes = NULL;
  size_t got = 0;
  uint64_t crc = 0;
  assert_int_equal(tg_ckpt_disk_read_alloc(dir, &other_gen, &bytes, &got, &crc), TG_CKPT_OK);
  assert_int_equal(got, len);
  assert_memory_equal(bytes, in, len);
  assert_true(crc == tg_crc64_update(0, in, len));
  free(bytes);
  /* Only the final file in the step directory: no temporary left over. */
  char step[900];
  snprintf(step, sizeof(step), "%s/job-r/%020d", dir, 150);
  assert_int_equal(entries_in(step), 1);

  /* Writing the same shard again replaces it whole; an empty shard is one. */
  free(write_shard(dir, &k, 10));
  assert_int_equal(tg_ckpt_disk_read_alloc(dir, &k, &bytes, &got, NULL), TG_CKPT_OK);
  assert_int_equal(got, 10);
  free(bytes);
  tg_ckpt_key empty = key_of("job-r", 4, 150, 0, 8);
  free(write_shard(dir, &empty, 0));
  assert_int_equal(tg_ckpt_disk_read_alloc(dir, &empty, &bytes, &got, NULL), TG_CKPT_OK);
  assert_int_equal(got, 0);
  free(bytes);
  tg_ckpt_key missing = key_of("job-r", 4, 151, 3, 8);
  assert_int_equal(read_rc(dir, &missing), TG_CKPT_NOT_FOUND);
  free(in);
}

static void test_corrupt_byte_refused(void **state) {
  char dir[600], path[1200];
  new_dir(dir, sizeof(dir));
  tg_ckpt_key k = key_of("job-c", 1, 50, 0, 2);
  free(write_shard(dir, &k, 5000));
  shard_path(dir, &k, path, sizeof(path));
  flip_byte(path, 128 + 4321);
  assert_int_equal(read_rc(dir, &k), TG_CKPT_CORRUPT);
  flip_byte(path, 128 + 4321);
  assert_int_equal(read_rc(dir, &k), TG_CKPT_OK);
}

static void test_truncated_file_refused(void **state) {
  char dir[600], path[1200];
  new_dir(dir, sizeof(dir));
  tg_ckpt_key k = key_of("job-t", 1, 50, 1, 2);
  free(write_shard(dir, &k, 5000));
  shard_path(dir, &k, path, sizeof(path));
  assert_int_equal(truncate(path, 128 + 4999), 0);
  assert_int_equal(read_rc(dir, &k), TG_CKPT_CORRUPT);
  assert_int_equal(truncate(path, 60), 0); /* not even a header */
  assert_int_equal(read_rc(dir, &k), TG_CKPT_CORRUPT);
  assert_int_equal(truncate(path, 0), 0);
  assert_int_equal(read_rc(dir, &k), TG_CKPT_CORRUPT);
  /* Longer than the header says is refused too. */
  free(write_shard(dir, &k, 5000));
  assert_int_equal(truncate(path, 128 + 5001), 0);
  assert_int_equal(read_rc(dir, &k), TG_CKPT_CORRUPT);
}

static void test_bad_header_refused(void **state) {
  char dir[600], path[1200], other[1200];
  new_dir(dir, sizeof(dir));
  tg_ckpt_key k = key_of("job-h", 1, 50, 1, 4);
  free(write_shard(dir, &k, 1000));
  shard_path(dir, &k, path, sizeof(path));
  /* Magic, the step field, the length field, the header's own CRC. */
  const off_t fields[] = {0, 24, 40, 120};
  for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
    flip_byte(path, fields[i]);
    assert_int_equal(read_rc(dir, &k), TG_CKPT_CORRUPT);
    assert_int_equal(tg_ckpt_disk_list(dir, "job-h", NULL, 0), 0);
    flip_byte(path, fields[i]);
    assert_int_equal(read_rc(dir, &k), TG_CKPT_OK);
  }
  /* A sound file under another shard's name: its header gives it away. */
  tg_ckpt_key moved = key_of("job-h", 1, 50, 2, 4);
  shard_path(dir, &moved, other, sizeof(other));
  assert_int_equal(rename(path, other), 0);
  assert_int_equal(read_rc(dir, &moved), TG_CKPT_CORRUPT);
  assert_int_equal(read_rc(dir, &k), TG_CKPT_NOT_FOUND);
}

static void test_list_and_remove(void **state) {
  char dir[600], path[1200], step[900];
  new_dir(dir, sizeof(dir));
  tg_ckpt_key a = key_of("job-l", 3, 100, 0, 2), b = key_of("job-l", 3, 100, 1, 2),
              c = key_of("job-l", 5, 200, 0, 2), other = key_of("job-m", 3, 100, 0, 2);
  free(write_shard(dir, &a, 100));
  free(write_shard(dir, &b, 100));
  free(write_shard(dir, &c, 100));
  free(write_shard(dir, &other, 100));
  /* Leftovers that are not shards: a dead writer's temporary, junk names. */
  snprintf(path, sizeof(path), "%s/job-l/%020d/.0-1.tgck.tmp-1-1", dir, 100);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fclose(f);
  snprintf(path, sizeof(path), "%s/job-l/%020d/2-01.tgck", dir, 100);
  f = fopen(path, "w");
  fclose(f);
  snprintf(path, sizeof(path), "%s/job-l/notastep", dir);
  assert_int_equal(mkdir(path, 0755), 0);

  tg_ckpt_key keys[8];
  size_t n = tg_ckpt_disk_list(dir, "job-l", keys, 8);
  assert_int_equal(n, 3);
  int seen = 0;
  for (size_t i = 0; i < n; i++) {
    if (tg_ckpt_key_equal(&keys[i], &a)) seen |= 1;
    if (tg_ckpt_key_equal(&keys[i], &b)) seen |= 2;
    if (tg_ckpt_key_equal(&keys[i], &c)) seen |= 4; /* generation read from the header */
  }
  assert_int_equal(seen, 7);
  assert_int_equal(tg_ckpt_disk_list(dir, "job-l", keys, 1), 3);
  assert_int_equal(tg_ckpt_disk_list(dir, "job-none", keys, 8), 0);
  assert_int_equal(tg_ckpt_disk_list(dir, "../job-l", keys, 8), 0);

  /* Remove: the step directory goes with its last shard. */
  tg_ckpt_key any_gen = c;
  any_gen.generation = 0;
  assert_int_equal(tg_ckpt_disk_remove(dir, &any_gen), TG_CKPT_OK);
  assert_int_equal(tg_ckpt_disk_remove(dir, &c), TG_CKPT_NOT_FOUND);
  assert_int_equal(read_rc(dir, &c), TG_CKPT_NOT_FOUND);
  snprintf(step, sizeof(step), "%s/job-l/%020d", dir, 200);
  assert_int_equal(entries_in(step), -1);
  assert_int_equal(tg_ckpt_disk_remove(dir, &a), TG_CKPT_OK);
  assert_int_equal(tg_ckpt_disk_list(dir, "job-l", keys, 8), 1);
  assert_int_equal(read_rc(dir, &b), TG_CKPT_OK);
}

static void test_names_that_escape_are_refused(void **state) {
  char dir[600], err[512];
  new_dir(dir, sizeof(dir));
  unsigned char in[10] = {0};
  uint64_t crc = tg_crc64_update(0, in, sizeof(in));
  const char *bad_jobs[] = {"..", "../up", "a/b", "x..y", ".hidden", "tab\there"};
  for (size_t i = 0; i < sizeof(bad_jobs) / sizeof(bad_jobs[0]); i++) {
    tg_ckpt_key k = key_of(bad_jobs[i], 1, 1, 0, 1);
    assert_int_equal(tg_ckpt_disk_write(dir, &k, in, sizeof(in), crc, err, sizeof(err)),
                     TG_CKPT_INVALID);
    assert_int_equal(read_rc(dir, &k), TG_CKPT_INVALID);
    assert_int_equal(tg_ckpt_disk_remove(dir, &k), TG_CKPT_INVALID);
    assert_int_equal(tg_ckpt_disk_list(dir, bad_jobs[i], NULL, 0), 0);
  }
  tg_ckpt_key k = key_of("job-n", 1, 1, 0, 1);
  assert_int_equal(tg_ckpt_disk_write("", &k, in, sizeof(in), crc, err, sizeof(err)),
                   TG_CKPT_INVALID);
  /* Bytes that do not match their checksum are not written. */
  assert_int_equal(tg_ckpt_disk_write(dir, &k, in, sizeof(in), crc ^ 1, err, sizeof(err)),
                   TG_CKPT_INVALID);
  assert_non_null(strstr(err, "CRC-64"));
  assert_int_equal(read_rc(dir, &k), TG_CKPT_NOT_FOUND);
}

/* Runs one write in a child limited to files of 4 KiB, the way a full disk
 * fails a write halfway; the child sends back the result and the error. */
static void test_write_fails_like_a_full_disk(void **state) {
  char dir[600], path[1200];
  new_dir(dir, sizeof(dir));
  tg_ckpt_key k = key_of("job-f", 1, 10, 0, 1);
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    signal(SIGXFSZ, SIG_IGN); /* write fails with EFBIG instead of killing */
    struct rlimit rl = {4096, 4096};
    setrlimit(RLIMIT_FSIZE, &rl);
    static unsigned char in[100000];
    char msg[600] = "";
    int rc = tg_ckpt_disk_write(dir, &k, in, sizeof(in), tg_crc64_update(0, in, sizeof(in)), msg + 4,
                                sizeof(msg) - 4);
    memcpy(msg, &rc, sizeof(rc));
    ssize_t w = write(fds[1], msg, sizeof(msg));
    _exit(w == (ssize_t)sizeof(msg) ? 0 : 1);
  }
  close(fds[1]);
  char msg[600];
  ssize_t got = 0, n;
  while (got < (ssize_t)sizeof(msg) && (n = read(fds[0], msg + got, sizeof(msg) - (size_t)got)) > 0)
    got += n;
  close(fds[0]);
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_int_equal(got, (ssize_t)sizeof(msg));
  int rc;
  memcpy(&rc, msg, sizeof(rc));
  assert_int_equal(rc, TG_CKPT_SYSTEM);
  if (strstr(msg + 4, "write") == NULL || strstr(msg + 4, strerror(EFBIG)) == NULL)
    fail_msg("unclear error: %s", msg + 4);
  /* Nothing under the final name, and the temporary is gone. */
  shard_path(dir, &k, path, sizeof(path));
  assert_int_equal(access(path, F_OK), -1);
  assert_int_equal(read_rc(dir, &k), TG_CKPT_NOT_FOUND);
  char step[900];
  snprintf(step, sizeof(step), "%s/job-f/%020d", dir, 10);
  assert_true(entries_in(step) <= 0);
}

static void test_unwritable_dir_gives_a_clear_error(void **state) {
  char dir[600], file[700], err[512] = "";
  unsigned char in[100] = {1};
  uint64_t crc = tg_crc64_update(0, in, sizeof(in));
  tg_ckpt_key k = key_of("job-u", 1, 10, 0, 1);
  /* A "directory" below a regular file. */
  new_dir(dir, sizeof(dir));
  assert_int_equal(mkdir(dir, 0755), 0);
  snprintf(file, sizeof(file), "%s/plain", dir);
  FILE *f = fopen(file, "w");
  fclose(f);
  char below[800];
  snprintf(below, sizeof(below), "%s/ckpt", file);
  assert_int_equal(tg_ckpt_disk_write(below, &k, in, sizeof(in), crc, err, sizeof(err)),
                   TG_CKPT_SYSTEM);
  if (strstr(err, "mkdir") == NULL || strstr(err, strerror(ENOTDIR)) == NULL)
    fail_msg("unclear error: %s", err);
  assert_int_equal(read_rc(below, &k), TG_CKPT_NOT_FOUND);
  /* A read-only directory (root writes anyway, so only checked as others). */
  if (geteuid() != 0) {
    char ro[700];
    snprintf(ro, sizeof(ro), "%s/ro", dir);
    assert_int_equal(mkdir(ro, 0555), 0);
    assert_int_equal(tg_ckpt_disk_write(ro, &k, in, sizeof(in), crc, err, sizeof(err)),
                     TG_CKPT_SYSTEM);
    if (strstr(err, strerror(EACCES)) == NULL) fail_msg("unclear error: %s", err);
    chmod(ro, 0755);
  }
}

int main(void) {
  tg_log_init("disk_test", TG_LOG_ERROR);
  const char *tmp = getenv("TEST_TMPDIR");
  snprintf(root, sizeof(root), "%s/disk-test-XXXXXX", tmp != NULL && tmp[0] ? tmp : "/tmp");
  if (mkdtemp(root) == NULL) {
    fprintf(stderr, "mkdtemp %s: %s\n", root, strerror(errno));
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip_any_generation),
      cmocka_unit_test(test_corrupt_byte_refused),
      cmocka_unit_test(test_truncated_file_refused),
      cmocka_unit_test(test_bad_header_refused),
      cmocka_unit_test(test_list_and_remove),
      cmocka_unit_test(test_names_that_escape_are_refused),
      cmocka_unit_test(test_write_fails_like_a_full_disk),
      cmocka_unit_test(test_unwritable_dir_gives_a_clear_error),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  char cmd[600];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
  return failed;
}
