/* CRC-64/XZ: slice-by-8 everywhere, carry-less folding on x86-64; see
 * crc64.h.
 *
 * The checkpoint snapshot stall is bound by this checksum, so long buffers
 * take the fastest path the CPU has. Slice-by-8 (eight bytes per round,
 * table k folds a byte that is k positions further from the end of the
 * word) is portable and runs at ~1.9 GB/s; it also serves short buffers,
 * the unaligned head and the tail of long ones. On x86-64 with PCLMULQDQ,
 * buffers of CLMUL_MIN_BYTES and more are folded 128 bytes a round with
 * carry-less multiplication, several times faster. The choice is made once
 * per process (__builtin_cpu_supports), together with the tables and the
 * fold constants; the CLMUL functions carry their own target attribute, so
 * the file builds with the default flags.
 *
 * How the folding works, in the reflected domain the CRC uses. A 64-bit
 * reflected value v stands for the polynomial whose x^(63-i) coefficient is
 * bit i of v; 16 message bytes loaded little-endian into an SSE register
 * stand for a polynomial of degree < 128, bit j being the x^(127-j)
 * coefficient (the first message bit is the highest power). The CRC of a
 * message M is M(x)*x^64 mod P (the running CRC xored into the first eight
 * bytes, as slice-by-8 does), so M can be replaced by anything congruent to
 * it mod P. Let a lane A = H*x^64 + L (H its low, L its high quadword)
 * stand 128*d bits before the lane B it is to be folded into. Then
 *
 *   A*x^(128d) = H*x^(128d+64) + L*x^(128d)
 *             == H*(x^(128d+64) mod P) + L*(x^(128d) mod P)   (mod P),
 *
 * two 64x64-bit products of degree < 127 that fit one lane and are xored
 * into B. One detail of the reflected domain: clmul of two reflected
 * 64-bit values puts the x^(126-k) coefficient in bit k, which read as a
 * reflected 128-bit lane is the product times x. So the constants are taken
 * one power lower: K_hi(d) = x^(128d+63) mod P, K_lo(d) = x^(128d-1) mod P.
 * They are computed at startup by xpow_mod (multiplying by x is a right
 * shift, and x^64 reduces to the reflected polynomial, the same step as
 * the table's), for d = 8 (the main loop over eight lanes), d = 1..7 (to
 * merge the eight lanes into one) and d = 1 (the remaining 16-byte
 * blocks); crc64_test checks them against long division in the ordinary
 * domain.
 *
 * What remains is one lane R congruent to everything read so far; its CRC
 * with register 0, R*x^64 mod P, is the CRC register over that prefix.
 * That last reduction and the tail (< 16 bytes) go through slice-by-8:
 * three eight-byte table rounds and up to seven single bytes, instead of
 * a Barrett reduction and its two further constants. */
#include "agent/ckpt/crc64.h"

#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#include <wmmintrin.h>
#endif

#define CRC64_XZ_POLY_REFLECTED 0xC96C5795D7870F42ULL

/* Eight independent lanes hide the multiplier's latency. */
#define FOLD_LANES 8
#define LANE_BYTES 16
/* The CLMUL path needs one whole round of eight lanes after the unaligned
 * head (< 16 bytes); from there on it is already 2-5x faster than
 * slice-by-8 on the development VM (AMD EPYC). */
#define CLMUL_MIN_BYTES (FOLD_LANES * LANE_BYTES + LANE_BYTES - 1)

static uint64_t g_table[8][256];
/* g_fold[d - 1] = {K_hi(d), K_lo(d)} for a fold over d lanes. */
static uint64_t g_fold[FOLD_LANES][2];
static bool g_use_clmul;
static pthread_once_t g_init_once = PTHREAD_ONCE_INIT;

/* x^n mod P, reflected: n multiplications by x, starting from x^0 (bit 63). */
static uint64_t xpow_mod(unsigned n) {
  uint64_t v = 1ULL << 63;
  for (unsigned i = 0; i < n; i++) {
    v = (v & 1) ? (v >> 1) ^ CRC64_XZ_POLY_REFLECTED : v >> 1;
  }
  return v;
}

static void build_tables(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint64_t crc = i;
    for (int bit = 0; bit < 8; bit++) {
      crc = (crc & 1) ? (crc >> 1) ^ CRC64_XZ_POLY_REFLECTED : crc >> 1;
    }
    g_table[0][i] = crc;
  }
  for (int k = 1; k < 8; k++) {
    for (int i = 0; i < 256; i++) {
      uint64_t prev = g_table[k - 1][i];
      g_table[k][i] = (prev >> 8) ^ g_table[0][prev & 0xff];
    }
  }
}

static void build_fold_constants(void) {
  for (unsigned d = 1; d <= FOLD_LANES; d++) {
    g_fold[d - 1][0] = xpow_mod(128 * d + 63);
    g_fold[d - 1][1] = xpow_mod(128 * d - 1);
  }
}

static bool cpu_has_clmul(void) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
#else
  return false;
#endif
}

static void init(void) {
  build_tables();
  build_fold_constants();
  g_use_clmul = cpu_has_clmul();
}

/* Slice-by-8 on the CRC register (the value before the final xor). */
static uint64_t slice8(uint64_t reg, const unsigned char *p, size_t len) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  while (len >= 8) {
    uint64_t word;
    memcpy(&word, p, sizeof(word));
    reg ^= word;
    reg = g_table[7][reg & 0xff] ^ g_table[6][(reg >> 8) & 0xff] ^ g_table[5][(reg >> 16) & 0xff] ^
          g_table[4][(reg >> 24) & 0xff] ^ g_table[3][(reg >> 32) & 0xff] ^
          g_table[2][(reg >> 40) & 0xff] ^ g_table[1][(reg >> 48) & 0xff] ^ g_table[0][reg >> 56];
    p += 8;
    len -= 8;
  }
#endif
  while (len > 0) {
    reg = (reg >> 8) ^ g_table[0][(reg ^ *p) & 0xff];
    p++;
    len--;
  }
  return reg;
}

#if defined(__x86_64__)

#define CLMUL_TARGET __attribute__((target("pclmul,sse4.1")))

CLMUL_TARGET static inline __m128i fold_constant(int lanes) {
  return _mm_set_epi64x((long long)g_fold[lanes - 1][1], (long long)g_fold[lanes - 1][0]);
}

/* A lane moved forward by the distance k was made for (fold_constant),
 * as a lane congruent to it mod P. */
CLMUL_TARGET static inline __m128i fold(__m128i lane, __m128i k) {
  return _mm_xor_si128(_mm_clmulepi64_si128(lane, k, 0x00), _mm_clmulepi64_si128(lane, k, 0x11));
}

/* The CRC register after p[0..len), from register reg before it; p is
 * 16-byte aligned and len >= FOLD_LANES * LANE_BYTES. */
CLMUL_TARGET static uint64_t clmul_update(uint64_t reg, const unsigned char *p, size_t len) {
  const size_t round_bytes = FOLD_LANES * LANE_BYTES;
  __m128i lane[FOLD_LANES];
#pragma GCC unroll 8
  for (int i = 0; i < FOLD_LANES; i++) {
    lane[i] = _mm_load_si128((const __m128i *)(p + LANE_BYTES * i));
  }
  lane[0] = _mm_xor_si128(lane[0], _mm_cvtsi64_si128((long long)reg));
  p += round_bytes;
  len -= round_bytes;

  const __m128i k_round = fold_constant(FOLD_LANES);
  while (len >= round_bytes) {
#pragma GCC unroll 8
    for (int i = 0; i < FOLD_LANES; i++) {
      __m128i next = _mm_load_si128((const __m128i *)(p + LANE_BYTES * i));
      lane[i] = _mm_xor_si128(fold(lane[i], k_round), next);
    }
    p += round_bytes;
    len -= round_bytes;
  }

  /* Lane i stands FOLD_LANES - 1 - i lanes before the last one. */
  __m128i acc = lane[FOLD_LANES - 1];
#pragma GCC unroll 8
  for (int i = 0; i < FOLD_LANES - 1; i++) {
    acc = _mm_xor_si128(acc, fold(lane[i], fold_constant(FOLD_LANES - 1 - i)));
  }

  const __m128i k_one = fold_constant(1);
  while (len >= LANE_BYTES) {
    acc = _mm_xor_si128(fold(acc, k_one), _mm_load_si128((const __m128i *)p));
    p += LANE_BYTES;
    len -= LANE_BYTES;
  }

  unsigned char rest[LANE_BYTES];
  _mm_storeu_si128((__m128i *)rest, acc);
  reg = slice8(0, rest, sizeof(rest));
  return slice8(reg, p, len);
}

#endif /* __x86_64__ */

uint64_t tg_crc64_update(uint64_t crc, const void *data, size_t len) {
  pthread_once(&g_init_once, init);
  const unsigned char *p = data;
  uint64_t reg = ~crc;
#if defined(__x86_64__)
  if (g_use_clmul && len >= CLMUL_MIN_BYTES) {
    size_t head = (size_t)(-(uintptr_t)p & (LANE_BYTES - 1));
    reg = slice8(reg, p, head);
    return ~clmul_update(reg, p + head, len - head);
  }
#endif
  return ~slice8(reg, p, len);
}

uint64_t tg_crc64_update_slice8(uint64_t crc, const void *data, size_t len) {
  pthread_once(&g_init_once, init);
  return ~slice8(~crc, data, len);
}

const char *tg_crc64_implementation(void) {
  pthread_once(&g_init_once, init);
  return g_use_clmul ? "pclmul" : "slice-by-8";
}

uint64_t tg_crc64_fold_constant(int lanes, int half) {
  if (lanes < 1 || lanes > FOLD_LANES || half < 0 || half > 1) return 0;
  pthread_once(&g_init_once, init);
  return g_fold[lanes - 1][half];
}
