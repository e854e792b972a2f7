/* Bounded reads and atomic writes of small text files; see textfile.h. */
#include "agent/health/textfile.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int tg_textfile_read(const char *path, char *buf, size_t cap) {
  if (cap == 0) return -EINVAL;
  buf[0] = '\0';
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return -errno;
  size_t len = 0;
  int rc = 0;
  while (len < cap - 1) {
    ssize_t got = read(fd, buf + len, cap - 1 - len);
    if (got < 0) {
      if (errno == EINTR) continue;
      rc = -errno;
      goto out;
    }
    if (got == 0) break;
    len += (size_t)got;
  }
  while (len > 0 && isspace((unsigned char)buf[len - 1])) len--;
out:
  buf[rc == 0 ? len : 0] = '\0';
  close(fd);
  return rc;
}

int tg_textfile_parse_u64(const char *text, uint64_t *out) {
  while (isspace((unsigned char)*text)) text++;
  if (!isdigit((unsigned char)*text)) return -EINVAL;
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull(text, &end, 0);
  if (errno != 0 || end == text) return -EINVAL;
  while (isspace((unsigned char)*end)) end++;
  if (*end != '\0') return -EINVAL;
  *out = (uint64_t)v;
  return 0;
}

int tg_textfile_read_u64(const char *path, uint64_t *out) {
  char buf[64];
  int rc = tg_textfile_read(path, buf, sizeof buf);
  if (rc != 0) return rc;
  return tg_textfile_parse_u64(buf, out);
}

static int write_all(int fd, const char *text, size_t len) {
  while (len > 0) {
    ssize_t put = write(fd, text, len);
    if (put < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    text += put;
    len -= (size_t)put;
  }
  return 0;
}

int tg_textfile_write(const char *path, const char *text) {
  /* Named for the writing thread: a thread finishes (renames or unlinks) its
   * temporary file before it writes another, so concurrent writers in one or
   * many processes never share one. */
  char tmp[4096];
  int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%ld", path, (long)getpid(), (long)gettid());
  if (n < 0 || (size_t)n >= sizeof tmp) return -ENAMETOOLONG;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return -errno;
  int rc = write_all(fd, text, strlen(text));
  if (close(fd) != 0 && rc == 0) rc = -errno;
  if (rc == 0 && rename(tmp, path) != 0) rc = -errno;
  if (rc != 0) unlink(tmp);
  return rc;
}

int tg_textfile_append(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return -errno;
  int rc = write_all(fd, text, strlen(text));
  if (close(fd) != 0 && rc == 0) rc = -errno;
  return rc;
}

int tg_textfile_mkdirs(const char *path) {
  char buf[4096];
  size_t len = strlen(path);
  if (len == 0 || len >= sizeof buf) return len == 0 ? -EINVAL : -ENAMETOOLONG;
  memcpy(buf, path, len + 1);
  /* Each prefix ending before a '/', then the whole path. */
  for (size_t i = 1; i <= len; i++) {
    if (buf[i] != '/' && buf[i] != '\0') continue;
    char saved = buf[i];
    buf[i] = '\0';
    struct stat st;
    if (mkdir(buf, 0755) != 0 && !(errno == EEXIST && stat(buf, &st) == 0 && S_ISDIR(st.st_mode)))
      return -errno;
    buf[i] = saved;
  }
  return 0;
}
