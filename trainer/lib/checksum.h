/* A 64-bit checksum of byte buffers, fed in pieces: what the replica check
 * (replica.c) compares across ranks. Not cryptographic: it must change
 * when any bit flips and run near memory speed (xxHash64's round on four
 * lanes), so that checking the parameters every step costs little beside
 * the step. The same bytes fed in the same pieces give the same value on
 * every machine of one byte order. */
#ifndef TG_TRAINER_LIB_CHECKSUM_H
#define TG_TRAINER_LIB_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  uint64_t lane[4];
  uint64_t tail;
  uint64_t bytes; /* fed so far: zeros appended change the value too */
} tg_checksum;

void tg_checksum_init(tg_checksum *c);
/* Adds `n` bytes; each call's bytes are hashed as one piece. */
void tg_checksum_update(tg_checksum *c, const void *data, size_t n);
uint64_t tg_checksum_final(const tg_checksum *c);

#endif
