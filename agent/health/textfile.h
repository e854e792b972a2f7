/* Small text files read with a bound: sysfs attributes and fake-device files.
 *
 * Health checks read files that another party owns (the kernel's sysfs, or a
 * test or tg-chaos writing a fake device tree), so nothing here trusts a
 * file's size: every read stops at the caller's buffer, and every number is
 * parsed strictly. Writers replace a file with rename(2) so a concurrent
 * reader sees the old or the new content, never an empty or half-written
 * one. Internal to agent/health. */
#ifndef TG_HEALTH_TEXTFILE_H
#define TG_HEALTH_TEXTFILE_H

#include <stddef.h>
#include <stdint.h>

/* Reads at most cap-1 bytes of `path` into buf, NUL-terminated, with
 * trailing whitespace removed. Returns 0, or -errno (-ENOENT when the file
 * does not exist, -EINVAL when cap is 0). */
int tg_textfile_read(const char *path, char *buf, size_t cap);

/* Reads an unsigned decimal (or 0x-prefixed hexadecimal) number. Returns 0,
 * -errno from the read, or -EINVAL when the content is not one number. */
int tg_textfile_read_u64(const char *path, uint64_t *out);

/* Parses text as tg_textfile_read_u64 does; 0 or -EINVAL. */
int tg_textfile_parse_u64(const char *text, uint64_t *out);

/* Replaces `path` with `text` atomically (temporary file + rename). Returns 0
 * or -errno. */
int tg_textfile_write(const char *path, const char *text);

/* Appends `text` with one O_APPEND write, creating the file if needed, so
 * concurrent appenders never interleave inside a line. Returns 0 or -errno. */
int tg_textfile_append(const char *path, const char *text);

/* Creates a directory and its missing parents (mode 0755). Returns 0 or
 * -errno. */
int tg_textfile_mkdirs(const char *path);

#endif
