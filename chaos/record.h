/* What a tg-chaos run records, and the live job it records it from.
 *
 * A run is a list of faults (from the scenario, then drawn by the soak),
 * each filled in as it happens: the target, the moment it was injected,
 * what the coordinator logged about it (detection), when the job trained
 * again (recovery) and what that cost. inject.c fills in the first part,
 * measure.c the rest and the invariants, report.c prints it all; run.c
 * owns the timeline. Times are unix milliseconds (the fault log and agent
 * logs use the same clock); 0 means "did not happen". */
#ifndef TG_CHAOS_RECORD_H
#define TG_CHAOS_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "chaos/cluster.h"
#include "chaos/scenario.h"
#include "chaos/status.h"
#include "chaos/watch.h"
#include "tests/harness/etcd_cluster.h"

typedef enum {
  TG_CHAOS_PENDING = 0,   /* its trigger has not come */
  TG_CHAOS_IN_FLIGHT,     /* injected, not recovered yet */
  TG_CHAOS_RECOVERED,
  TG_CHAOS_NOT_RECOVERED, /* no recovery within recovery_timeout_s, or the run ended first */
  TG_CHAOS_SKIPPED,       /* never injected: see note */
} tg_chaos_fault_state;

typedef struct {
  tg_chaos_fault_spec spec;
  int soak;                         /* drawn by the soak, not listed */
  tg_chaos_fault_state state;
  char note[512];                   /* what happened beyond the numbers */

  /* The target as resolved when it fired. */
  char node[TG_CHAOS_NAME_MAX];     /* "" when the kind has none */
  char node2[TG_CHAOS_NAME_MAX];    /* lose_all_copies: the node at position 2 */
  int slot;                         /* -1: not a trainer */
  int rank;                         /* the trainer's rank then; -1: unknown */
  char coordinator[TG_CHAOS_NAME_MAX]; /* coordinator_crash: the leader killed */
  int etcd_member;                  /* etcd_member_crash: the member killed; -1: none */
  int expect_new_world;             /* host_return: 1 when the world should grow */
  char component[256];              /* disk_full: the checkpoint directory the record must name */
  int64_t freed_at_step;            /* disk_full: the space was freed after this step; -1: not yet */
  int gpu;                          /* device kinds: the fake GPU written; -1: none */
  int64_t step_at_detection;        /* warning kinds: the newest step when the record was seen */
  int healed;                       /* network_partition, slow_link: the link is back (or could not be) */
  int64_t healed_mono_ms;           /* when it came up; 0: not (yet) */
  int64_t next_log_read_mono_ms;    /* nic_flap, nic_errors: when to read the fault log again */

  /* At injection. */
  int64_t injected_unix_ms, injected_mono_ms;
  int64_t step_at_injection;        /* newest step logged */
  int64_t committed_at_injection;   /* the job's committed step (tgctl status); -1: unknown */
  uint64_t generation_before;       /* newest world its trainers had joined */
  uint32_t world_before;
  size_t nodes_before;              /* nodes in the world (status) */
  uint64_t agent_lines_before;      /* host_return, network_partition: lines in the node's agent log */

  /* Detection. */
  int detected;
  int64_t detected_unix_ms;
  char detect_source[16];           /* "fault_log", "leader", "world" */
  char detect_kind[32];             /* the fault record's kind (fault_log) */
  char detect_node[TG_CHAOS_NAME_MAX];
  int detect_rank;
  int detect_signal;
  char fault_id[64];
  int culprit_ok;                   /* the record names the target (fault_log) */

  /* Recovery. */
  int64_t recovered_unix_ms;
  int resumed;                      /* a newer world resumed from a checkpoint */
  uint64_t generation_after;
  uint32_t world_after;
  int64_t last_step_before;         /* the last step the old world completed */
  int64_t resume_step;              /* where the new world resumed */
  int64_t steps_lost;               /* last_step_before - resume_step */
  int64_t committed_lost;           /* committed_at_injection - resume_step, when positive */
  int from_disk;                    /* resumed from the persisted checkpoint */
  int64_t lib_lost;                 /* what libtardigrade printed as lost; -1: nothing */
  int64_t slow_end_unix_ms;         /* straggler: when its slow steps were all logged; 0: not yet */
} tg_chaos_fault;

typedef struct {
  const char *name;
  int pass;
  int not_checked; /* 1: could not be judged in this run (detail says why); counts neither way */
  char detail[1024];
} tg_chaos_invariant;

#define TG_CHAOS_INVARIANTS 3

/* One run, start to end. */
typedef struct {
  const tg_chaos_scenario *scenario;
  char scenario_path[1024];
  char job[64];
  int64_t started_unix_ms, training_started_unix_ms, finished_unix_ms;
  int64_t soak_started_unix_ms, soak_ended_unix_ms; /* 0: no soak ran */
  tg_chaos_fault *faults;
  size_t n_faults, cap_faults;
  tg_chaos_invariant invariants[TG_CHAOS_INVARIANTS];
  int invariants_checked;
  int interrupted;
  char error[512];                  /* a setup error that stopped the run */
  int64_t final_step, done_steps;
  uint64_t final_generation;
  uint32_t final_world;
  size_t generations;
  char reference_params[1024];
  int reference_ran;
  int64_t reference_ms;
  char params[1024];
  char logs_kept[1024];
  int exit_code;
  /* Attached (--attach): the addresses given, what was found, and the
   * scenario with the job's shape filled in (scenario points at it). */
  char attach[1024];
  tg_chaos_scenario attached_scenario;
  char attached_nodes[TG_CHAOS_MAX_NODES][TG_CHAOS_NAME_MAX];
  int n_attached_nodes;
  char attached_coordinators[TG_CHAOS_MAX_COORDINATORS][TG_CHAOS_NAME_MAX];
  int n_attached_coordinators;
} tg_chaos_result;

/* The live job faults are made in and measured from. */
typedef struct {
  const tg_chaos_scenario *s;
  tg_chaos_cluster *cluster;
  tg_chaos_watch *watch;
  tg_chaos_poller *poller;
  tg_etcd_cluster *etcd;
  uint64_t rng;
  int lost[TG_CHAOS_MAX_NODES];     /* killed by a fault and not returned */
  int drained[TG_CHAOS_MAX_NODES];
  int cut[TG_CHAOS_MAX_NODES];      /* network_partition, slow_link: its link is down or slow */
} tg_chaos_ctx;

#endif
