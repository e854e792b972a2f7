/* CRC-64/XZ, slice-by-8; see crc64.h.
 *
 * The byte-at-a-time table algorithm spends one table lookup and a shift
 * per byte; slicing processes eight bytes per round with eight tables
 * (table k folds a byte that is k positions further from the end of the
 * word), which is several times faster on the multi-megabyte shards this
 * checksums every step. Tables are built once per process. */
#include "agent/ckpt/crc64.h"

#include <pthread.h>
#include <string.h>

#define CRC64_XZ_POLY_REFLECTED 0xC96C5795D7870F42ULL

static uint64_t g_table[8][256];
static pthread_once_t g_table_once = PTHREAD_ONCE_INIT;

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

uint64_t tg_crc64_update(uint64_t crc, const void *data, size_t len) {
  pthread_once(&g_table_once, build_tables);
  const unsigned char *p = data;
  crc = ~crc;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  while (len >= 8) {
    uint64_t word;
    memcpy(&word, p, sizeof(word));
    crc ^= word;
    crc = g_table[7][crc & 0xff] ^ g_table[6][(crc >> 8) & 0xff] ^ g_table[5][(crc >> 16) & 0xff] ^
          g_table[4][(crc >> 24) & 0xff] ^ g_table[3][(crc >> 32) & 0xff] ^
          g_table[2][(crc >> 40) & 0xff] ^ g_table[1][(crc >> 48) & 0xff] ^ g_table[0][crc >> 56];
    p += 8;
    len -= 8;
  }
#endif
  while (len > 0) {
    crc = (crc >> 8) ^ g_table[0][(crc ^ *p) & 0xff];
    p++;
    len--;
  }
  return ~crc;
}
