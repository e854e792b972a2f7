/* Collective counters in shared memory: how a trainer tells its agent,
 * at no cost per collective, which collective it entered last.
 *
 * The agent creates one small region per job and node
 * ("/tg-progress-<job>-<node>", passed to trainers as $TG_PROGRESS_SHM)
 * with one entry per slot. Before each collective a trainer stores the
 * generation it is in and the collective's sequence number (counted from 1
 * in each generation) into its slot's entry; the agent's monitor reads the
 * entries every few milliseconds and feeds them to the hang detector
 * (progress.h), so the rank that did not enter a collective its peers
 * wait in is named, not its victims. A rank stopped inside a collective
 * entered it like its peers; it is told apart by an alive counter that a
 * thread of the trainer advances and that stops with the process. Entries are two atomic words; a
 * reader may see the generation of one store and the sequence of the
 * next, which at worst delays an update by one read. The region is
 * validated when opened (magic, slot count, size), and a trainer can
 * write only numbers into it. The region also carries the agent's newest
 * world generation (tg_counters_world), so a trainer learns that its world
 * is gone without a call to the agent. */
#ifndef TG_PROGRESS_COUNTERS_H
#define TG_PROGRESS_COUNTERS_H

#include <stddef.h>
#include <stdint.h>

#define TG_COUNTERS_MAX_SLOTS 1024

typedef struct tg_counters tg_counters;

/* Agent side: creates (or replaces) the region `name` for `slots` slots. */
tg_counters *tg_counters_create(const char *name, int slots, char *err, size_t errlen);

/* Trainer side: maps an existing region. */
tg_counters *tg_counters_open(const char *name, char *err, size_t errlen);

/* Unmaps; NULL is ignored. */
void tg_counters_close(tg_counters *c);

/* Removes the name. 0, or -1 (errno). */
int tg_counters_unlink(const char *name);

int tg_counters_slots(const tg_counters *c);

/* The trainer in `slot` entered collective `seq` of `generation`.
 * Out-of-range slots are ignored. */
void tg_counters_enter(tg_counters *c, int slot, uint64_t generation, uint64_t seq);

/* The trainer in `slot` left collective `seq` of `generation` (it
 * returned, successfully or not). */
void tg_counters_done(tg_counters *c, int slot, uint64_t generation, uint64_t seq);

/* 1 when the trainer in `slot` is inside the collective it entered last
 * (waiting for its peers), 0 when it is outside any (computing, or stuck
 * before its next one), -1 for a slot out of range. A rank inside a
 * collective and still alive is a victim of a hang, never its culprit. */
int tg_counters_inside(const tg_counters *c, int slot);

/* The trainer in `slot` is joining a world and restoring its state (from
 * tg_join to its first step done there): reading shards from other nodes
 * or the disk takes as long as they are large, between collectives, and
 * is not a hang while the process is alive. 1/0, or -1 out of range. */
void tg_counters_set_restoring(tg_counters *c, int slot, int restoring);
int tg_counters_restoring(const tg_counters *c, int slot);

/* The trainer in `slot` is alive: libtardigrade calls it from a thread
 * of its own every TG_COUNTERS_ALIVE_MS, so a stopped process (SIGSTOP,
 * a debugger, a frozen container) stops counting while one stuck inside
 * a collective goes on. */
#define TG_COUNTERS_ALIVE_MS 50
void tg_counters_alive(tg_counters *c, int slot);

/* How many times the trainer in `slot` said it was alive (0: never; a
 * trainer without the library). 0, or -1 for a slot out of range. */
int tg_counters_read_alive(const tg_counters *c, int slot, uint64_t *alive);

/* The last collective the trainer in `slot` entered: 0 with *generation
 * and *seq, or -1 for a slot out of range. */
int tg_counters_read(const tg_counters *c, int slot, uint64_t *generation, uint64_t *seq);

/* The newest world generation the agent knows for this node: the agent
 * stores it when a world arrives (and stores it again every few
 * milliseconds, so a trainer that wrote over it is corrected at once);
 * libtardigrade reads it to abandon at once a communicator, or one being
 * built, of an older world, instead of waiting for its deadline. 0: none
 * yet, or c NULL. */
void tg_counters_set_world(tg_counters *c, uint64_t generation);
uint64_t tg_counters_world(const tg_counters *c);

#endif
