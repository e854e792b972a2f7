/* tg-train's fault injection for tg-chaos (see inject.h): why it is a
 * file and not a signal: a request carries arguments (the straggler's
 * delay), is applied at a known point of the step (a signal arrives
 * anywhere, even inside the gather), and needs no handler state shared
 * with the training loop. */
#include "trainer/train/inject.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock/clock.h"

void tg_inject_init(tg_inject *in, const char *dir) {
  memset(in, 0, sizeof *in);
  const char *node = getenv("TG_NODE_ID"), *slot = getenv("TG_SLOT");
  if (!dir || !*dir) return;
  snprintf(in->path, sizeof in->path, "%s/%s.%s", dir, node ? node : "node", slot ? slot : "0");
  fprintf(stderr, "tg-train: fault injection on (--inject-dir): requests are read from %s\n", in->path);
}

void tg_inject_poll(tg_inject *in) {
  struct stat st;
  if (!in->path[0] || stat(in->path, &st) != 0) return;
  char line[128] = "";
  FILE *f = fopen(in->path, "r");
  if (f) {
    if (!fgets(line, sizeof line, f)) line[0] = 0;
    fclose(f);
  }
  unlink(in->path);
  line[strcspn(line, "\r\n")] = 0;
  long long delay = 0, steps = 0;
  char extra;
  if (strcmp(line, "sdc") == 0)
    in->sdc = 1;
  else if (strcmp(line, "nan") == 0)
    in->nan = 1;
  else if (sscanf(line, "straggler %lld %lld %c", &delay, &steps, &extra) == 2 && delay >= 0 &&
           delay <= 600000 && steps >= 0 && steps <= 1000000) {
    in->straggle_ms = delay;
    in->straggle_steps = steps;
  } else {
    fprintf(stderr, "tg-train: fault injection: refused request \"%.64s\" (expected sdc, nan, or "
                    "straggler DELAY_MS STEPS)\n", line);
    return;
  }
  fprintf(stderr, "tg-train: fault injection: %s\n", line);
}

void tg_inject_straggle(tg_inject *in) {
  if (in->straggle_steps <= 0) return;
  in->straggle_steps--;
  tg_clock_sleep_ms(in->straggle_ms);
}

int tg_inject_sdc(tg_inject *in, float *params, size_t index) {
  if (!in->sdc) return 0;
  in->sdc = 0;
  uint32_t bits;
  memcpy(&bits, &params[index], sizeof bits);
  bits ^= 1u;
  memcpy(&params[index], &bits, sizeof bits);
  fprintf(stderr, "tg-train: fault injection: flipped the lowest bit of parameter %zu\n", index);
  return 1;
}
