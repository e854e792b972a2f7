/* See checksum.h. Four independent lanes of 8 bytes keep the multiplies
 * in flight together; bytes past the last whole 32 of a piece go through
 * a slower byte loop (the parameters are whole floats, so at most 31). */
#include "trainer/lib/checksum.h"

#include <string.h>

#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL

static uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static uint64_t round64(uint64_t acc, uint64_t w) { return rotl(acc + w * P2, 31) * P1; }

void tg_checksum_init(tg_checksum *c) {
  c->lane[0] = P1 + P2;
  c->lane[1] = P2;
  c->lane[2] = 0;
  c->lane[3] = 0 - P1;
  c->tail = P3;
  c->bytes = 0;
}

void tg_checksum_update(tg_checksum *c, const void *data, size_t n) {
  const unsigned char *p = data;
  size_t i = 0;
  c->bytes += n;
  for (; i + 32 <= n; i += 32) {
    uint64_t w[4];
    memcpy(w, p + i, sizeof w);
    for (int k = 0; k < 4; k++) c->lane[k] = round64(c->lane[k], w[k]);
  }
  for (; i < n; i++) c->tail = (c->tail ^ p[i]) * P3 + (uint64_t)i;
}

uint64_t tg_checksum_final(const tg_checksum *c) {
  uint64_t h = rotl(c->lane[0], 1) + rotl(c->lane[1], 7) + rotl(c->lane[2], 12) + rotl(c->lane[3], 18);
  h = round64(round64(h, c->tail), c->bytes);
  h ^= h >> 33;
  h *= P2;
  h ^= h >> 29;
  return h;
}
