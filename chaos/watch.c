/* Reading the job's logs as they grow; see watch.h for the lines and what
 * is made of them. Each file is an fd kept open at its read offset (the
 * agent and its supervisor append, never truncate, so an offset stays
 * valid across trainer and agent restarts), and a line is handled once,
 * when its newline arrives. A line longer than the buffer is skipped. */
#include "chaos/watch.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock/clock.h"

#define LINE_MAX_BYTES 2048
#define MAX_GENERATIONS 100000
#define CONFLICT_DETAIL 1024

typedef struct {
  char path[768];
  int fd;
  char buf[LINE_MAX_BYTES];
  size_t len;
  int skipping;            /* inside an overlong line */
  int node, slot;          /* slot -1: the agent's log */
  /* trainer logs */
  uint64_t generation;     /* of the last "rank" line */
  int rank;
  int64_t lib_committed, lib_lost; /* the library's lost-steps line, for the next rank line */
  char last_error[240];    /* the trainer's last "tg-train: " or "tardigrade: " line */
  /* agent logs */
  uint64_t agent_lines, agent_generation;
  int agent_holds;
  int64_t agent_read_ms;
} tailed;

struct tg_chaos_watch {
  tailed *files;
  size_t n_files;
  int nodes, slots;
  tg_chaos_generation *gens;
  size_t n_gens, cap_gens;
  int64_t max_step, first_step_ms, done_steps;
  uint64_t newest;
  size_t conflicts;
  char conflict_detail[CONFLICT_DETAIL];
  char gave_up[512]; /* a slot whose agent stopped restarting its trainer */
};

tg_chaos_watch *tg_chaos_watch_new(const tg_chaos_cluster *c) {
  tg_chaos_watch *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  w->nodes = tg_chaos_cluster_nodes(c);
  w->slots = tg_chaos_cluster_slots(c);
  w->n_files = (size_t)w->nodes * (size_t)(w->slots + 1);
  w->files = calloc(w->n_files, sizeof *w->files);
  if (!w->files) {
    free(w);
    return NULL;
  }
  size_t k = 0;
  for (int n = 0; n < w->nodes; n++)
    for (int s = -1; s < w->slots; s++, k++) {
      tailed *f = &w->files[k];
      f->fd = -1;
      f->node = n;
      f->slot = s;
      f->rank = -1;
      f->lib_committed = f->lib_lost = -1;
      if (s < 0)
        tg_chaos_cluster_agent_log(c, n, f->path, sizeof f->path);
      else
        tg_chaos_cluster_slot_log(c, n, s, f->path, sizeof f->path);
    }
  return w;
}

void tg_chaos_watch_free(tg_chaos_watch *w) {
  if (!w) return;
  for (size_t i = 0; i < w->n_files; i++)
    if (w->files[i].fd >= 0) close(w->files[i].fd);
  free(w->files);
  free(w->gens);
  free(w);
}

/* ------------------------------------------------------------ generations */

static tg_chaos_generation *gen_get(tg_chaos_watch *w, uint64_t g, int64_t now) {
  for (size_t i = w->n_gens; i-- > 0;) {
    if (w->gens[i].generation == g) return &w->gens[i];
    if (w->gens[i].generation < g) break;
  }
  if (w->n_gens >= MAX_GENERATIONS) return NULL;
  if (w->n_gens == w->cap_gens) {
    size_t cap = w->cap_gens ? w->cap_gens * 2 : 64;
    tg_chaos_generation *gens = realloc(w->gens, cap * sizeof *gens);
    if (!gens) return NULL;
    w->gens = gens;
    w->cap_gens = cap;
  }
  size_t at = w->n_gens; /* keep them sorted: mostly appended */
  while (at > 0 && w->gens[at - 1].generation > g) at--;
  memmove(&w->gens[at + 1], &w->gens[at], (w->n_gens - at) * sizeof *w->gens);
  w->n_gens++;
  tg_chaos_generation *gen = &w->gens[at];
  memset(gen, 0, sizeof *gen);
  gen->generation = g;
  gen->world_size = UINT32_MAX; /* unknown until a line says */
  gen->seen_unix_ms = now;
  gen->resume_step = -1;
  gen->lib_committed_step = gen->lib_lost_steps = -1;
  gen->max_step = -1;
  return gen;
}

static void conflict(tg_chaos_watch *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void conflict(tg_chaos_watch *w, const char *fmt, ...) {
  w->conflicts++;
  size_t used = strlen(w->conflict_detail);
  if (w->conflicts > 4 || used + 8 >= sizeof w->conflict_detail) return;
  if (used) used += (size_t)snprintf(w->conflict_detail + used, sizeof w->conflict_detail - used, "; ");
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(w->conflict_detail + used, sizeof w->conflict_detail - used, fmt, ap);
  va_end(ap);
}

/* A line says generation g has world_size ranks: the first one decides,
 * every later one must agree. */
static void check_size(tg_chaos_watch *w, tg_chaos_generation *gen, uint32_t size, const tailed *f) {
  if (gen->world_size == UINT32_MAX) {
    gen->world_size = size;
    return;
  }
  if (gen->world_size == size) return;
  char who[48];
  if (f->slot < 0)
    snprintf(who, sizeof who, "n%d's agent", f->node);
  else
    snprintf(who, sizeof who, "the trainer in n%d slot %d", f->node, f->slot);
  conflict(w, "generation %" PRIu64 ": %s says %u ranks, an earlier line said %u", gen->generation, who, size,
           gen->world_size);
}

/* ------------------------------------------------------------ lines */

int64_t tg_chaos_watch_parse_time(const char *line) {
  struct tm tm;
  int ms = 0;
  memset(&tm, 0, sizeof tm);
  if (sscanf(line, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
             &tm.tm_sec, &ms) != 7)
    return -1;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  time_t t = timegm(&tm);
  return t == (time_t)-1 ? -1 : (int64_t)t * 1000 + ms;
}

/* The trainer log of (node, slot), or NULL. */
static const tailed *slot_file(const tg_chaos_watch *w, int node, int slot) {
  if (node < 0 || node >= w->nodes || slot < 0 || slot >= w->slots) return NULL;
  return &w->files[(size_t)node * (size_t)(w->slots + 1) + (size_t)slot + 1];
}

static void agent_line(tg_chaos_watch *w, tailed *f, const char *line, int64_t now) {
  const char *budget = strstr(line, "restart budget spent"), *in = strstr(line, " in slot ");
  int slot;
  if (budget && in && !w->gave_up[0] && sscanf(in, " in slot %d", &slot) == 1) {
    const tailed *t = slot_file(w, f->node, slot);
    snprintf(w->gave_up, sizeof w->gave_up,
             "the trainer in n%d slot %d keeps exiting and its agent stopped restarting it; its last error: %s",
             f->node, slot, t && t->last_error[0] ? t->last_error : "(none logged)");
  }
  const char *p = strstr(line, " generation ");
  if (!p || !strstr(line, " tg-agent ")) return;
  unsigned long long g;
  unsigned size;
  char reason[32], what[16];
  if (sscanf(p, " generation %llu (%31[^)]): %u ranks, this node %15s", &g, reason, &size, what) != 4) return;
  tg_chaos_generation *gen = gen_get(w, g, now);
  if (!gen) return;
  check_size(w, gen, size, f);
  if (!gen->reason[0])
    snprintf(gen->reason, sizeof gen->reason, "%s", reason);
  else if (strcmp(gen->reason, reason) != 0)
    conflict(w, "generation %llu: n%d's agent says it was formed for \"%s\", another said \"%s\"", g, f->node, reason,
             gen->reason);
  int64_t at = tg_chaos_watch_parse_time(line);
  if (at > 0 && (gen->formed_unix_ms == 0 || at < gen->formed_unix_ms)) gen->formed_unix_ms = at;
  f->agent_lines++;
  f->agent_generation = g;
  f->agent_holds = strcmp(what, "holds") == 0;
  f->agent_read_ms = now;
}

static void rank_line(tg_chaos_watch *w, tailed *f, const char *line, int64_t now) {
  unsigned rank, size;
  unsigned long long g, step;
  char verb[16];
  if (sscanf(line, "rank %u of %u (generation %llu): %15s at step %llu", &rank, &size, &g, verb, &step) != 5) return;
  tg_chaos_generation *gen = gen_get(w, g, now);
  if (!gen) return;
  check_size(w, gen, size, f);
  f->generation = g;
  f->rank = (int)rank;
  if (g > w->newest) w->newest = g;
  if (gen->resume_step < 0 || (int64_t)step > gen->resume_step) gen->resume_step = (int64_t)step;
  if (strstr(line, "(from the persisted checkpoint)")) gen->from_disk = 1;
  if (strstr(line, "resharded")) gen->resharded = 1;
  if (f->lib_lost >= 0) { /* the library's line came just before this one */
    gen->lib_lost_steps = f->lib_lost;
    gen->lib_committed_step = f->lib_committed;
    f->lib_lost = f->lib_committed = -1;
  }
  if (rank < TG_CHAOS_MAX_RANKS && rank < size && !gen->joined[rank]) {
    gen->joined[rank] = 1;
    gen->ranks_joined++;
    if (gen->ranks_joined == size) gen->joined_unix_ms = now;
  }
}

static void trainer_line(tg_chaos_watch *w, tailed *f, const char *line, int64_t now) {
  unsigned long long step, committed, lost;
  int rank;
  if (strncmp(line, "rank ", 5) == 0) {
    if (sscanf(line, "rank %d done after %llu steps", &rank, &step) == 2) {
      if (rank == 0) w->done_steps = (int64_t)step;
      return;
    }
    rank_line(w, f, line, now);
    return;
  }
  if (sscanf(line, "step %llu loss", &step) == 1) {
    if ((int64_t)step > w->max_step) w->max_step = (int64_t)step;
    if (!w->first_step_ms) w->first_step_ms = now;
    tg_chaos_generation *gen = f->generation ? gen_get(w, f->generation, now) : NULL;
    if (gen) {
      if (!gen->first_step_unix_ms) gen->first_step_unix_ms = now;
      if ((int64_t)step > gen->max_step) gen->max_step = (int64_t)step;
    }
    return;
  }
  if (strncmp(line, "tg-train: ", 10) == 0 || strncmp(line, "tardigrade: ", 12) == 0)
    snprintf(f->last_error, sizeof f->last_error, "%s", line);
  const char *p = strstr(line, "the newest committed step was ");
  if (strncmp(line, "tardigrade: resuming at step ", 29) == 0 && p &&
      sscanf(p, "the newest committed step was %llu: %llu committed steps lost", &committed, &lost) == 2) {
    f->lib_committed = (int64_t)committed;
    f->lib_lost = (int64_t)lost;
  }
}

static void read_file(tg_chaos_watch *w, tailed *f, int64_t now) {
  if (f->fd < 0) {
    f->fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) return;
  }
  for (;;) {
    ssize_t n = read(f->fd, f->buf + f->len, sizeof f->buf - 1 - f->len);
    if (n <= 0) return;
    f->len += (size_t)n;
    size_t start = 0;
    for (size_t i = 0; i < f->len; i++) {
      if (f->buf[i] != '\n') continue;
      f->buf[i] = '\0';
      if (!f->skipping) {
        if (f->slot < 0)
          agent_line(w, f, f->buf + start, now);
        else
          trainer_line(w, f, f->buf + start, now);
      }
      f->skipping = 0;
      start = i + 1;
    }
    memmove(f->buf, f->buf + start, f->len - start);
    f->len -= start;
    if (f->len == sizeof f->buf - 1) { /* no newline in a full buffer */
      f->skipping = 1;
      f->len = 0;
    }
  }
}

void tg_chaos_watch_poll(tg_chaos_watch *w) {
  int64_t now = tg_clock_unix_ms();
  for (size_t i = 0; i < w->n_files; i++) read_file(w, &w->files[i], now);
}

/* ------------------------------------------------------------ queries */

const char *tg_chaos_watch_gave_up(const tg_chaos_watch *w) { return w->gave_up[0] ? w->gave_up : NULL; }

int64_t tg_chaos_watch_max_step(const tg_chaos_watch *w) { return w->max_step; }
int64_t tg_chaos_watch_first_step_unix_ms(const tg_chaos_watch *w) { return w->first_step_ms; }
int64_t tg_chaos_watch_done_steps(const tg_chaos_watch *w) { return w->done_steps; }
uint64_t tg_chaos_watch_newest_generation(const tg_chaos_watch *w) { return w->newest; }

const tg_chaos_generation *tg_chaos_watch_generation(const tg_chaos_watch *w, uint64_t g) {
  for (size_t i = w->n_gens; i-- > 0;)
    if (w->gens[i].generation == g) return &w->gens[i];
  return NULL;
}

size_t tg_chaos_watch_generations(const tg_chaos_watch *w, const tg_chaos_generation **out) {
  *out = w->gens;
  return w->n_gens;
}

static const tailed *file_of(const tg_chaos_watch *w, int node, int slot) {
  if (node < 0 || node >= w->nodes || slot < -1 || slot >= w->slots) return NULL;
  return &w->files[(size_t)node * (size_t)(w->slots + 1) + (size_t)(slot + 1)];
}

int tg_chaos_watch_slot(const tg_chaos_watch *w, int node, int slot, int *rank, uint64_t *generation) {
  const tailed *f = file_of(w, node, slot);
  if (!f || slot < 0 || f->rank < 0) return -1;
  *rank = f->rank;
  *generation = f->generation;
  return 0;
}

uint64_t tg_chaos_watch_agent_lines(const tg_chaos_watch *w, int node) {
  const tailed *f = file_of(w, node, -1);
  return f ? f->agent_lines : 0;
}

int tg_chaos_watch_agent_last(const tg_chaos_watch *w, int node, uint64_t *generation, int *holds_ranks,
                              int64_t *read_unix_ms) {
  const tailed *f = file_of(w, node, -1);
  if (!f || !f->agent_lines) return -1;
  *generation = f->agent_generation;
  *holds_ranks = f->agent_holds;
  *read_unix_ms = f->agent_read_ms;
  return 0;
}

size_t tg_chaos_watch_conflicts(const tg_chaos_watch *w, char *detail, size_t len) {
  if (len) snprintf(detail, len, "%s%s", w->conflict_detail, w->conflicts > 4 ? "; ..." : "");
  return w->conflicts;
}
