/* Corpus loading and the (seed, index) -> offset map (see corpus.h). */
#include "trainer/model/corpus.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tg_corpus {
  uint8_t *bytes;
  size_t size;
  uint32_t context;
  uint64_t seed;
  tg_corpus_source source;
  uint64_t checksum;
};

static uint64_t mix64(uint64_t z) { /* splitmix64's finaliser */
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Reads up to TG_CORPUS_MAX_BYTES of path. 0, or an errno value. */
static int read_file(const char *path, uint8_t **out, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return errno ? errno : EIO;
  size_t cap = 1 << 16, n = 0;
  uint8_t *buf = malloc(cap);
  int rc = buf ? 0 : ENOMEM;
  while (rc == 0 && n < TG_CORPUS_MAX_BYTES) {
    if (n == cap) {
      size_t ncap = cap * 2 > TG_CORPUS_MAX_BYTES ? TG_CORPUS_MAX_BYTES : cap * 2;
      uint8_t *nb = realloc(buf, ncap);
      if (!nb) {
        rc = ENOMEM;
        break;
      }
      buf = nb, cap = ncap;
    }
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0) {
      if (ferror(f)) rc = EIO;
      break;
    }
  }
  fclose(f);
  if (rc) {
    free(buf);
    return rc;
  }
  *out = buf;
  *size = n;
  return 0;
}

/* English-looking text from a fixed word list and a fixed seed: the same
 * TG_CORPUS_FALLBACK_BYTES on every machine, with word and sentence
 * structure for the model to learn. */
static uint8_t *generate_text(size_t size) {
  static const char *const words[] = {
      "the", "of", "and", "to", "a", "in", "that", "is", "for", "it", "as", "with", "be",
      "on", "not", "this", "by", "are", "or", "from", "at", "which", "you", "all", "may",
      "program", "work", "license", "free", "software", "source", "code", "copy", "rights",
      "terms", "conditions", "distribute", "modify", "network", "training", "model", "step",
      "failure", "node", "rank", "memory", "checkpoint", "gradient", "world", "recover"};
  const size_t nwords = sizeof words / sizeof words[0];
  uint8_t *buf = malloc(size);
  if (!buf) return NULL;
  uint64_t state = 0x7461726469677261ull; /* "tardigra" */
  size_t n = 0, in_sentence = 0;
  while (n < size) {
    state = mix64(state);
    const char *w = words[state % nwords];
    for (size_t i = 0; w[i] && n < size; i++)
      buf[n++] = (uint8_t)(in_sentence == 0 && i == 0 ? w[i] - 'a' + 'A' : w[i]);
    in_sentence++;
    const char *sep = (in_sentence > 4 && (state >> 32) % 6 == 0) ? ".\n" : " ";
    if (sep[0] == '.') in_sentence = 0;
    for (size_t i = 0; sep[i] && n < size; i++) buf[n++] = (uint8_t)sep[i];
  }
  return buf;
}

static uint64_t fnv1a64(const uint8_t *p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

tg_corpus *tg_corpus_open(const char *path, uint32_t context, uint64_t seed, char *err,
                          size_t errlen) {
  if (context == 0 || (size_t)context + 1 > TG_CORPUS_FALLBACK_BYTES) {
    if (err && errlen)
      snprintf(err, errlen, "corpus context %u outside 1..%u", context,
               TG_CORPUS_FALLBACK_BYTES - 1);
    return NULL;
  }
  tg_corpus *c = calloc(1, sizeof *c);
  if (!c) goto nomem;
  c->context = context;
  c->seed = seed;
  const char *file = path ? path : TG_CORPUS_DEFAULT_PATH;
  if (file[0]) {
    int rc = read_file(file, &c->bytes, &c->size);
    if (rc == 0 && c->size < (size_t)context + 1) rc = EINVAL;
    if (rc && path) {
      if (err && errlen)
        snprintf(err, errlen, "corpus %s: %s", path,
                 rc == EINVAL ? "shorter than one sample (context + 1 bytes)" : strerror(rc));
      tg_corpus_close(c);
      return NULL;
    }
    if (rc) { /* the default file is missing here: fall back */
      free(c->bytes);
      c->bytes = NULL;
    }
  }
  if (!c->bytes) {
    c->source = TG_CORPUS_GENERATED;
    c->size = TG_CORPUS_FALLBACK_BYTES;
    c->bytes = generate_text(c->size);
    if (!c->bytes) goto nomem;
  }
  c->checksum = fnv1a64(c->bytes, c->size);
  return c;
nomem:
  if (err && errlen) snprintf(err, errlen, "out of memory for the corpus");
  tg_corpus_close(c);
  return NULL;
}

void tg_corpus_close(tg_corpus *c) {
  if (!c) return;
  free(c->bytes);
  free(c);
}

size_t tg_corpus_size(const tg_corpus *c) { return c ? c->size : 0; }
tg_corpus_source tg_corpus_source_of(const tg_corpus *c) {
  return c ? c->source : TG_CORPUS_GENERATED;
}
uint64_t tg_corpus_checksum(const tg_corpus *c) { return c ? c->checksum : 0; }
const uint8_t *tg_corpus_bytes(const tg_corpus *c) { return c ? c->bytes : NULL; }

size_t tg_corpus_offset(const tg_corpus *c, uint64_t index) {
  if (!c) return 0;
  size_t starts = c->size - c->context; /* offsets 0 .. size - (T+1) */
  return (size_t)(mix64(c->seed ^ mix64(index)) % starts);
}

tg_model_status tg_corpus_sample(const tg_corpus *c, uint64_t index, uint8_t *out) {
  if (!c || !out) return TG_MODEL_EINVAL;
  memcpy(out, c->bytes + tg_corpus_offset(c, index), (size_t)c->context + 1);
  return TG_MODEL_OK;
}

tg_model_status tg_corpus_batch(const tg_corpus *c, uint64_t first, uint32_t count,
                                uint8_t *tokens, uint8_t *targets) {
  if (!c || (count && (!tokens || !targets))) return TG_MODEL_EINVAL;
  size_t T = c->context;
  for (uint32_t s = 0; s < count; s++) {
    const uint8_t *p = c->bytes + tg_corpus_offset(c, first + s);
    memcpy(tokens + s * T, p, T);
    memcpy(targets + s * T, p + 1, T);
  }
  return TG_MODEL_OK;
}
