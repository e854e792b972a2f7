/* checksum.h: every single flipped bit of a buffer changes the checksum
 * (the replica check relies on it), the value depends only on the bytes
 * and pieces, and lengths count (zeros appended are not invisible). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "trainer/lib/checksum.h"

static uint64_t sum(const void *p, size_t n) {
  tg_checksum c;
  tg_checksum_init(&c);
  tg_checksum_update(&c, p, n);
  return tg_checksum_final(&c);
}

static void test_every_bit_flip_is_seen(void **state) {
  (void)state;
  static unsigned char buf[1003]; /* whole 32-byte blocks and a tail */
  for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)(i * 131 + 7);
  uint64_t good = sum(buf, sizeof buf);
  assert_true(good == sum(buf, sizeof buf));
  for (size_t i = 0; i < sizeof buf; i++)
    for (int bit = 0; bit < 8; bit++) {
      buf[i] ^= (unsigned char)(1u << bit);
      if (sum(buf, sizeof buf) == good) fail_msg("flipping bit %d of byte %zu went unseen", bit, i);
      buf[i] ^= (unsigned char)(1u << bit);
    }
  assert_true(sum(buf, sizeof buf) == good);
}

static void test_lengths_and_pieces_count(void **state) {
  (void)state;
  unsigned char zeros[64] = {0};
  assert_true(sum(zeros, 32) != sum(zeros, 64));
  assert_true(sum(zeros, 0) != sum(zeros, 1));
  tg_checksum a, b;
  tg_checksum_init(&a);
  tg_checksum_init(&b);
  tg_checksum_update(&a, zeros, 64);
  tg_checksum_update(&b, zeros, 64);
  assert_true(tg_checksum_final(&a) == tg_checksum_final(&b));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_bit_flip_is_seen),
      cmocka_unit_test(test_lengths_and_pieces_count),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
