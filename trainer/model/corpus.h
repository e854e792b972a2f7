/* The training corpus and its deterministic sample loader.
 *
 * Determinism across failures needs the data order to be a function of the
 * global sample index alone: sample i is the T+1 bytes at an offset that
 * depends only on (seed, i), so it is the same bytes whichever rank of
 * whichever world loads it, before or after a restore. (Bytes 0..T-1 are
 * the model's input, bytes 1..T its targets.)
 *
 * The text is real: by default the GNU GPL v3 from
 * /usr/share/common-licenses/, which Debian's base-files installs on every
 * machine (35 KB of English). Where no such file exists, a deterministic
 * generated text of English-like words takes its place, so the loader
 * always works; tg_corpus_checksum lets ranks confirm they hold the same
 * bytes. The whole corpus is read into memory, up to TG_CORPUS_MAX_BYTES. */
#ifndef TG_CORPUS_H
#define TG_CORPUS_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/model/status.h"

#define TG_CORPUS_DEFAULT_PATH "/usr/share/common-licenses/GPL-3"
#define TG_CORPUS_MAX_BYTES (256u << 20)     /* read at most this much of a file */
#define TG_CORPUS_FALLBACK_BYTES (64u << 10) /* size of the generated text */

typedef struct tg_corpus tg_corpus;

typedef enum {
  TG_CORPUS_FILE = 0,      /* the bytes of a file */
  TG_CORPUS_GENERATED = 1, /* the deterministic generated fallback */
} tg_corpus_source;

/* Opens the corpus for samples of `context` (T) input bytes. path NULL: the
 * default file, or the generated text if it cannot be read or is shorter
 * than T+1 bytes. An explicit path that cannot be read or is too short is
 * an error (NULL, reason in err): asking for a file and silently training
 * on something else would be worse. A non-NULL path of "" selects the
 * generated text. */
tg_corpus *tg_corpus_open(const char *path, uint32_t context, uint64_t seed, char *err,
                          size_t errlen);
void tg_corpus_close(tg_corpus *c);

size_t tg_corpus_size(const tg_corpus *c);
tg_corpus_source tg_corpus_source_of(const tg_corpus *c);
uint64_t tg_corpus_checksum(const tg_corpus *c); /* FNV-1a 64 of the bytes */
const uint8_t *tg_corpus_bytes(const tg_corpus *c);

/* The offset of sample `index` (a pure function of seed and index) and its
 * T+1 bytes into out. */
size_t tg_corpus_offset(const tg_corpus *c, uint64_t index);
tg_model_status tg_corpus_sample(const tg_corpus *c, uint64_t index, uint8_t *out);

/* Samples first .. first+count-1 as model input: tokens and targets are
 * count*T bytes, sample-major. */
tg_model_status tg_corpus_batch(const tg_corpus *c, uint64_t first, uint32_t count,
                                uint8_t *tokens, uint8_t *targets);

#endif
