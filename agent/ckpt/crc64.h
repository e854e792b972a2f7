/* CRC-64/XZ, the checksum of every checkpoint shard.
 *
 * A shard is checksummed once when it is written into the shared-memory
 * store and verified on every read, on every push to a buddy agent and on
 * every fetch back, so one silent bit flip in memory, on the wire or by a
 * stray write of a trainer is caught before a job resumes from it. The
 * replication protocol's field is named `crc64`, and this is what it
 * carries.
 *
 * Parameters (the "CRC-64/XZ" entry of the CRC catalogue, also used by xz
 * and Go's crc64.ECMA table): polynomial 0x42F0E1EBA9EA3693 (ECMA-182),
 * reflected input and output, initial value and final xor all ones. Check
 * value: tg_crc64_update(0, "123456789", 9) == 0x995DC9BBDF1939FA.
 * On x86-64 CPUs with PCLMULQDQ long buffers are folded with carry-less
 * multiplication; elsewhere, and for short buffers, slice-by-8 tables.
 * Both give the same value for every input. */
#ifndef TG_CKPT_CRC64_H
#define TG_CKPT_CRC64_H

#include <stddef.h>
#include <stdint.h>

/* Continues a checksum: start with crc = 0; feeding a buffer in pieces
 * gives the same result as feeding it whole. Thread-safe. */
uint64_t tg_crc64_update(uint64_t crc, const void *data, size_t len);

/* ---- For tests and benchmarks only; production code calls the above. ---- */

/* The implementation tg_crc64_update uses for long buffers in this
 * process: "pclmul" or "slice-by-8". */
const char *tg_crc64_implementation(void);

/* tg_crc64_update on the portable slice-by-8 path alone, whatever the CPU. */
uint64_t tg_crc64_update_slice8(uint64_t crc, const void *data, size_t len);

/* The carry-less folding's constants, bit-reflected like the CRC itself:
 * for a fold over `lanes` 16-byte lanes (1..8), half 0 is x^(128*lanes+63)
 * mod P and half 1 is x^(128*lanes-1) mod P. 0 for arguments out of range.
 * Computed on every platform, used only where PCLMULQDQ is. */
uint64_t tg_crc64_fold_constant(int lanes, int half);

#endif
