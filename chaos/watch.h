/* What the job's logs say, read as they grow.
 *
 * tg-chaos learns about training the way train_test does: from the lines
 * the processes print. Trainers print (tg-train, libtardigrade)
 *   rank R of W (generation G): resuming at step S [(...resharded...)] [(from the persisted checkpoint)]
 *   rank R of W (generation G): starting at step 0
 *   step N loss X                       (rank 0 only)
 *   rank R done after N steps
 *   tardigrade: resuming at step S ...: N committed steps lost   (rank 0, when steps were lost)
 * and agents log, with a timestamp, every world they are told of:
 *   <time> INFO  tg-agent agent.c:NNN generation G (reason): W ranks, this node holds ranks|is a spare
 *
 * Trainer lines carry no time, so each line is stamped with the moment it
 * was read (tg_chaos_watch_poll is called every few tens of ms); step
 * lines belong to the generation of the last "rank" line of their file.
 * Everything is kept per generation, which is what recovery is measured
 * in. Agent lines also feed the split-brain check: every line about a
 * generation, from any agent or trainer, must agree on its world. */
#ifndef TG_CHAOS_WATCH_H
#define TG_CHAOS_WATCH_H

#include <stddef.h>
#include <stdint.h>

#include "chaos/cluster.h"

/* One generation, as far as the logs tell. */
typedef struct {
  uint64_t generation;
  uint32_t world_size;
  char reason[32];              /* from agent lines; "" until one is read */
  int64_t formed_unix_ms;       /* earliest agent timestamp for it; 0: none yet */
  int64_t seen_unix_ms;         /* first line about it read */
  uint32_t ranks_joined;        /* distinct ranks that printed their "rank R of W" line */
  int64_t joined_unix_ms;       /* when all world_size ranks had; 0 until then */
  int64_t resume_step;          /* the step its ranks resumed at; -1: no rank line yet */
  int from_disk;                /* resumed from the persisted checkpoint */
  int resharded;                /* resumed from shards of a world of another size */
  int64_t lib_committed_step;   /* "the newest committed step was C" (rank 0); -1: not printed */
  int64_t lib_lost_steps;       /* "N committed steps lost"; -1: not printed */
  int64_t first_step_unix_ms;   /* its first "step N" line read; 0: none yet */
  int64_t max_step;             /* its newest step line; -1: none */
  uint8_t joined[TG_CHAOS_MAX_RANKS];
} tg_chaos_generation;

typedef struct tg_chaos_watch tg_chaos_watch;

/* Watches every trainer and agent log of the cluster (files that do not
 * exist yet are picked up when they appear). */
tg_chaos_watch *tg_chaos_watch_new(const tg_chaos_cluster *c);
void tg_chaos_watch_free(tg_chaos_watch *w);

/* Reads what was appended since the last call. */
void tg_chaos_watch_poll(tg_chaos_watch *w);

/* The newest step rank 0 logged (any generation), 0 before the first;
 * and when the first step line was read (0: none yet). */
int64_t tg_chaos_watch_max_step(const tg_chaos_watch *w);
/* Why a trainer is down for good (its agent's restart budget is spent,
 * e.g. a trainer that cannot start), or NULL. */
const char *tg_chaos_watch_gave_up(const tg_chaos_watch *w);
int64_t tg_chaos_watch_first_step_unix_ms(const tg_chaos_watch *w);

/* The N of "rank 0 done after N steps", or 0 before it is printed. */
int64_t tg_chaos_watch_done_steps(const tg_chaos_watch *w);

/* The newest generation any trainer printed a "rank" line for; 0: none. */
uint64_t tg_chaos_watch_newest_generation(const tg_chaos_watch *w);

/* Generation g, or NULL if no line named it. */
const tg_chaos_generation *tg_chaos_watch_generation(const tg_chaos_watch *w, uint64_t g);

/* Every generation seen, oldest first; returns how many (into *out). */
size_t tg_chaos_watch_generations(const tg_chaos_watch *w, const tg_chaos_generation **out);

/* The newest "rank R of W (generation G)" line of the trainer log of
 * (node, slot): 0 with *rank and *generation, or -1 if it has none. */
int tg_chaos_watch_slot(const tg_chaos_watch *w, int node, int slot, int *rank, uint64_t *generation);

/* Agent lines about worlds read so far from node's log, and the newest:
 * its generation, whether the node holds ranks in it, and when it was read. */
uint64_t tg_chaos_watch_agent_lines(const tg_chaos_watch *w, int node);
int tg_chaos_watch_agent_last(const tg_chaos_watch *w, int node, uint64_t *generation, int *holds_ranks,
                              int64_t *read_unix_ms);

/* The split-brain check: the number of lines that contradicted an earlier
 * one about the same generation (world size, or reason between agents),
 * with the first few described in detail. */
size_t tg_chaos_watch_conflicts(const tg_chaos_watch *w, char *detail, size_t len);

/* Parses an agent log line's leading timestamp ("2026-11-22T08:30:01.123Z")
 * into unix ms; -1 if it has none. */
int64_t tg_chaos_watch_parse_time(const char *line);

#endif
