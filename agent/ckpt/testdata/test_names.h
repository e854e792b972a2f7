/* Shared-memory names for the checkpoint tests: unique per process and
 * per call, and unlinked by an atexit handler, so a failing test (cmocka
 * jumps out of it) leaves nothing behind in /dev/shm. */
#ifndef TG_CKPT_TEST_NAMES_H
#define TG_CKPT_TEST_NAMES_H

#include <stddef.h>

/* Writes "/tg-ckpt-<tag>-<pid>-<start time>-<n>" into buf and remembers it for the
 * atexit unlink; returns buf. */
const char *tg_ckpt_test_name(const char *tag, char *buf, size_t len);

#endif
