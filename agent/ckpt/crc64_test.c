/* Tests of CRC-64/XZ (crc64.h) on both of its paths, the one
 * tg_crc64_update dispatches to on this CPU (printed; "pclmul" on x86-64
 * machines that have it) and slice-by-8 alone, against a bit-at-a-time
 * reference written here from the catalogue's parameters: the check value,
 * empty input, every length 0..4096 at every misalignment 0..15 (each
 * buffer ending where its allocation ends, so AddressSanitizer sees any
 * read past it), buffers of a few MiB, buffers fed in pieces, and the fold
 * constants of the carry-less path against long division. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent/ckpt/crc64.h"

/* ECMA-182, as the catalogue writes it: most significant bit is x^63. */
#define ECMA182_POLY 0x42F0E1EBA9EA3693ULL

typedef uint64_t (*crc_fn)(uint64_t crc, const void *data, size_t len);

static const struct {
  const char *name;
  crc_fn update;
} paths[] = {
    {"dispatched", tg_crc64_update},
    {"slice-by-8", tg_crc64_update_slice8},
};
#define NPATHS (sizeof(paths) / sizeof(paths[0]))

static uint64_t reflect64(uint64_t v) {
  uint64_t r = 0;
  for (int i = 0; i < 64; i++) {
    r = (r << 1) | ((v >> i) & 1);
  }
  return r;
}

/* The reference: one message bit at a time, on the register (before the
 * final xor), first bit of each byte its least significant. */
static uint64_t ref_register(uint64_t reg, const unsigned char *p, size_t len) {
  const uint64_t poly = reflect64(ECMA182_POLY);
  for (size_t i = 0; i < len; i++) {
    reg ^= p[i];
    for (int bit = 0; bit < 8; bit++) {
      reg = (reg & 1) ? (reg >> 1) ^ poly : reg >> 1;
    }
  }
  return reg;
}

static uint64_t ref_crc(uint64_t crc, const unsigned char *p, size_t len) {
  return ~ref_register(~crc, p, len);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t rng_next(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static void fill(unsigned char *buf, size_t len) {
  for (size_t i = 0; i < len; i++) buf[i] = (unsigned char)rng_next();
}

/* len bytes starting `misalignment` bytes after a 64-byte boundary, at the
 * very end of their allocation; free with free(*block). */
static unsigned char *placed_copy(const unsigned char *src, size_t len, size_t misalignment,
                                  void **block) {
  *block = NULL;
  size_t size = misalignment + len;
  assert_int_equal(posix_memalign(block, 64, size > 0 ? size : 1), 0);
  unsigned char *p = (unsigned char *)*block + misalignment;
  if (len > 0) memcpy(p, src, len);
  return p;
}

static void test_check_value_and_empty_input(void **state) {
  print_message("tg_crc64_update uses %s on this machine\n", tg_crc64_implementation());
  assert_true(ref_crc(0, (const unsigned char *)"123456789", 9) == 0x995DC9BBDF1939FAULL);
  for (size_t k = 0; k < NPATHS; k++) {
    assert_true(paths[k].update(0, "123456789", 9) == 0x995DC9BBDF1939FAULL);
    assert_true(paths[k].update(0, "", 0) == 0);
    assert_true(paths[k].update(0, NULL, 0) == 0);
    assert_true(paths[k].update(0x0123456789ABCDEFULL, "", 0) == 0x0123456789ABCDEFULL);
  }
}

/* x^n mod P by long division in the ordinary domain (bit i is x^i),
 * then reflected: an independent derivation of the fold constants. */
static uint64_t xpow_mod_by_division(unsigned n) {
  uint64_t v = 1;
  for (unsigned i = 0; i < n; i++) {
    uint64_t carry = v >> 63;
    v <<= 1;
    if (carry) v ^= ECMA182_POLY;
  }
  return reflect64(v);
}

static void test_fold_constants(void **state) {
  for (int lanes = 1; lanes <= 8; lanes++) {
    assert_true(tg_crc64_fold_constant(lanes, 0) ==
                xpow_mod_by_division((unsigned)(128 * lanes + 63)));
    assert_true(tg_crc64_fold_constant(lanes, 1) ==
                xpow_mod_by_division((unsigned)(128 * lanes - 1)));
  }
  assert_true(tg_crc64_fold_constant(0, 0) == 0);
  assert_true(tg_crc64_fold_constant(9, 1) == 0);
  assert_true(tg_crc64_fold_constant(1, 2) == 0);
  /* x^64 mod P is P without its x^64 term. */
  assert_true(xpow_mod_by_division(64) == reflect64(ECMA182_POLY));
}

static void test_every_length_at_every_misalignment(void **state) {
  enum { MAX_LEN = 4096 };
  unsigned char *data = malloc(MAX_LEN);
  uint64_t *want = malloc((MAX_LEN + 1) * sizeof(*want));
  assert_non_null(data);
  assert_non_null(want);
  fill(data, MAX_LEN);
  uint64_t reg = ~0ULL;
  want[0] = ~reg;
  for (size_t len = 1; len <= MAX_LEN; len++) {
    reg = ref_register(reg, data + len - 1, 1);
    want[len] = ~reg;
  }
  for (size_t misalignment = 0; misalignment < 16; misalignment++) {
    for (size_t len = 0; len <= MAX_LEN; len++) {
      void *block;
      unsigned char *p = placed_copy(data, len, misalignment, &block);
      for (size_t k = 0; k < NPATHS; k++) {
        uint64_t got = paths[k].update(0, p, len);
        if (got != want[len]) {
          fail_msg("%s: length %zu at misalignment %zu: %016llx, want %016llx", paths[k].name, len,
                   misalignment, (unsigned long long)got, (unsigned long long)want[len]);
        }
      }
      free(block);
    }
  }
  free(want);
  free(data);
}

static void test_mib_buffers_at_every_misalignment(void **state) {
  static const size_t lens[] = {(size_t)1 << 20, ((size_t)3 << 20) + 77};
  for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
    size_t len = lens[i];
    unsigned char *data = malloc(len);
    assert_non_null(data);
    fill(data, len);
    uint64_t want = ref_crc(0, data, len);
    for (size_t misalignment = 0; misalignment < 16; misalignment++) {
      void *block;
      unsigned char *p = placed_copy(data, len, misalignment, &block);
      for (size_t k = 0; k < NPATHS; k++) {
        uint64_t got = paths[k].update(0, p, len);
        if (got != want) {
          fail_msg("%s: %zu bytes at misalignment %zu: %016llx, want %016llx", paths[k].name, len,
                   misalignment, (unsigned long long)got, (unsigned long long)want);
        }
      }
      free(block);
    }
    free(data);
  }
}

static void test_pieces_equal_whole(void **state) {
  enum { LEN = 5000 };
  unsigned char data[LEN];
  fill(data, LEN);
  uint64_t want = ref_crc(0, data, LEN);
  for (size_t k = 0; k < NPATHS; k++) {
    crc_fn update = paths[k].update;
    for (size_t cut = 0; cut <= LEN; cut++) {
      uint64_t got = update(update(0, data, cut), data + cut, LEN - cut);
      if (got != want) fail_msg("%s: split at %zu", paths[k].name, cut);
    }
    for (size_t cut = 0; cut <= LEN; cut += 97) {
      for (size_t cut2 = cut; cut2 <= LEN; cut2 += 131) {
        uint64_t crc = update(0, data, cut);
        crc = update(crc, data + cut, cut2 - cut);
        crc = update(crc, data + cut2, LEN - cut2);
        if (crc != want) fail_msg("%s: split at %zu and %zu", paths[k].name, cut, cut2);
      }
    }
  }
}

/* Random pieces, each fed to one path or the other at random: the two
 * share one running value. */
static void test_random_pieces_on_mixed_paths(void **state) {
  size_t len = ((size_t)2 << 20) + 13;
  unsigned char *data = malloc(len);
  assert_non_null(data);
  fill(data, len);
  uint64_t want = ref_crc(0, data, len);
  for (int trial = 0; trial < 4; trial++) {
    uint64_t crc = 0;
    size_t done = 0;
    size_t max_piece = trial == 0 ? 40 : trial == 1 ? 600 : trial == 2 ? 9000 : 300000;
    while (done < len) {
      size_t piece = (size_t)(rng_next() % (max_piece + 1));
      if (piece > len - done) piece = len - done;
      crc = paths[rng_next() % NPATHS].update(crc, data + done, piece);
      done += piece;
    }
    if (crc != want) fail_msg("pieces of up to %zu bytes", max_piece);
  }
  free(data);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_check_value_and_empty_input),
      cmocka_unit_test(test_fold_constants),
      cmocka_unit_test(test_every_length_at_every_misalignment),
      cmocka_unit_test(test_mib_buffers_at_every_misalignment),
      cmocka_unit_test(test_pieces_equal_whole),
      cmocka_unit_test(test_random_pieces_on_mixed_paths),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
