/* A tg-chaos scenario: the cluster to start, the training to run and the
 * faults to inject, read from a JSON file (format in chaos/README.md).
 *
 * Everything in the file is checked here, once, before any process starts:
 * unknown fields (a typo would otherwise silently change the scenario),
 * types, ranges, and the combinations a kind needs (a coordinator crash
 * needs a standby, losing every copy needs three nodes). Each error is one
 * line naming the field, e.g. "faults[2].target.slot: must be an integer in
 * 0..1, got 4". Sizes are bounded so a hostile file cannot make tg-chaos
 * start thousands of processes or allocate without limit. */
#ifndef TG_CHAOS_SCENARIO_H
#define TG_CHAOS_SCENARIO_H

#include <stddef.h>
#include <stdint.h>

/* Bounds on what a scenario may ask for. */
#define TG_CHAOS_MAX_FILE_BYTES (1 << 20)
#define TG_CHAOS_MAX_AGENTS 16
#define TG_CHAOS_MAX_SPARES 8
#define TG_CHAOS_MAX_NODES (TG_CHAOS_MAX_AGENTS + TG_CHAOS_MAX_SPARES)
#define TG_CHAOS_MAX_SLOTS 8
#define TG_CHAOS_MAX_RANKS (TG_CHAOS_MAX_NODES * TG_CHAOS_MAX_SLOTS)
#define TG_CHAOS_MAX_COORDINATORS 3
#define TG_CHAOS_MAX_FAULTS 256
#define TG_CHAOS_MAX_NETNS_NODES 16 /* hosts of one tests/harness/netns cluster */
#define TG_CHAOS_NAME_MAX 64

/* The fault kinds this cut injects. */
typedef enum {
  TG_CHAOS_TRAINER_CRASH = 0,  /* SIGKILL one trainer */
  TG_CHAOS_TRAINER_SEGV,       /* SIGSEGV one trainer */
  TG_CHAOS_HANG,               /* SIGSTOP one trainer */
  TG_CHAOS_HOST_LOSS,          /* SIGKILL an agent and its trainers */
  TG_CHAOS_HOST_RETURN,        /* restart a lost agent with its node id */
  TG_CHAOS_DRAIN,              /* tgctl drain NODE */
  TG_CHAOS_COORDINATOR_CRASH,  /* SIGKILL the leading coordinator */
  TG_CHAOS_CORRUPT_REPLICA,    /* corrupt a shard's copies in a node's memory, then kill its trainer */
  TG_CHAOS_LOSE_ALL_COPIES,    /* host_loss of the nodes at ring positions 1 and 2 at once */
  TG_CHAOS_GPU_XID,            /* XID 79 (fell off the bus) on one of a node's fake GPUs */
  TG_CHAOS_GPU_ECC,            /* an uncorrectable ECC error on one of a node's fake GPUs */
  TG_CHAOS_GPU_LOST,           /* one of a node's fake GPUs stops answering (lost) */
  TG_CHAOS_NIC_DOWN,           /* the node's fake NIC eth0 loses carrier */
  TG_CHAOS_ETCD_MEMBER_CRASH,  /* SIGKILL the etcd leader (restarted once training went on) */
  TG_CHAOS_NETWORK_PARTITION,  /* cut a node's host off the network (namespaces), healed after recovery */
  TG_CHAOS_NIC_FLAP,           /* the node's fake NIC eth0 flaps (carrier_changes +4): a WARNING */
  TG_CHAOS_NIC_ERRORS,         /* the node's fake NIC eth0 counts 100 rx errors: a WARNING */
  TG_CHAOS_SLOW_LINK,          /* the node's agent-coordinator link delayed (tg-chaos's proxy) */
  TG_CHAOS_DISK_FULL,          /* fill the checkpoint filesystem (a tmpfs tg-chaos mounts); freed later */
  TG_CHAOS_GPU_THERMAL,        /* a fake GPU at 92 C, thermally throttled (a WARNING); cooled later */
  TG_CHAOS_GPU_PCIE,           /* a fake GPU's PCIe link down to x8 of x16 (a WARNING); restored later */
  TG_CHAOS_GPU_ROW_REMAP,      /* a fake GPU with a memory row remapping pending (a WARNING); cleared later */
  TG_CHAOS_SILENT_DATA_CORRUPTION, /* flip a bit of one trainer's parameter replica (tg-train --inject-dir) */
  TG_CHAOS_NAN_LOSS,           /* one trainer's step ends with a non-finite loss */
  TG_CHAOS_STRAGGLER,          /* one trainer sleeps delay_ms in each of for_steps steps */
  TG_CHAOS_KIND_COUNT
} tg_chaos_kind;

/* "trainer_crash", ... */
const char *tg_chaos_kind_name(tg_chaos_kind kind);

/* The kind named `name`; -1 for a name nobody knows. */
int tg_chaos_kind_parse(const char *name);

/* What a kind's target is: a trainer (node and slot), a node, or nothing
 * the scenario chooses (the leader; the nodes at positions 1 and 2). */
typedef enum { TG_CHAOS_TARGET_TRAINER, TG_CHAOS_TARGET_NODE, TG_CHAOS_TARGET_NONE } tg_chaos_target_type;
tg_chaos_target_type tg_chaos_kind_target(tg_chaos_kind kind);

/* 1 for kinds whose fault the job must report but not act on (a WARNING:
 * the node stays in the world, training never stops). */
int tg_chaos_kind_is_warning(tg_chaos_kind kind);

/* One fault of the timeline. Exactly one of at_step / at_ms is >= 0. */
typedef struct {
  tg_chaos_kind kind;
  int64_t at_step;             /* inject once the trainers have logged this step; -1: unused */
  int64_t at_ms;               /* inject this long after the first training step; -1: unused */
  int random_target;           /* 1: drawn from the seed when the fault fires */
  char node[TG_CHAOS_NAME_MAX]; /* explicit target node ("n2"), or "" */
  int slot;                    /* explicit target slot, or -1 */
  int64_t delay_ms;            /* slow_link: how long each byte is held; straggler: added to each of its
                                * steps; -1: unused */
  int64_t for_steps;           /* straggler: how many steps; -1: unused */
} tg_chaos_fault_spec;

#define TG_CHAOS_STRAGGLER_DELAY_MS 200 /* defaults for a straggler (a soak's too) */
#define TG_CHAOS_STRAGGLER_STEPS 10

typedef struct {
  int agents;       /* nodes that form the first world */
  int slots;        /* trainers (ranks) per node */
  int spares;       /* nodes started after the first world formed: spares */
  int coordinators; /* tg-coordinators against one etcd (1: no HA) */
  int min_nodes;    /* the coordinators' --min-nodes */
  int64_t heartbeat_timeout_ms;
  int64_t persist_every; /* agents persist steps that are multiples of this to disk */
  int64_t hang_floor_ms; /* the agents' shortest hang timeout */
  int64_t ckpt_mib;      /* each node's in-memory checkpoint store */
  int etcd_members;      /* members of the job's etcd cluster */
  int namespaces;        /* cluster.network "namespaces": every node on a host of its own (root) */
} tg_chaos_cluster_spec;

/* Passed to tg-train (same names as its flags). */
typedef struct {
  int64_t steps, width, depth, context, batch, micro, seed;
  char corpus[512]; /* "" for tg-train's default */
  char device[8];   /* "cpu" (tg-train) or "cuda" (tg-train-cuda --device cuda) */
  char backend[8];  /* "gloo" or "nccl" (the trainers' $TG_COMM_BACKEND) */
} tg_chaos_training_spec;

/* Attached, steps are the job's: at_step and soak.every_steps may go up to this. */
#define TG_CHAOS_ATTACH_MAX_STEP 1000000000000LL

typedef struct {
  char name[TG_CHAOS_NAME_MAX];
  char description[512];
  /* Parsed for `run --attach`: `cluster` and `training` are not read
   * (the running job's shape is found from its processes), targets name
   * any node id, and the kinds that need what only tg-chaos's own cluster
   * has (namespace hosts, the slow-link proxy, the checkpoint tmpfs, its
   * etcd) are refused. */
  int attach;
  uint64_t seed;
  tg_chaos_cluster_spec cluster;
  tg_chaos_training_spec training;
  int64_t deadline_s;          /* the whole run, reference excluded */
  int64_t recovery_timeout_s;  /* per fault, from injection to recovery */
  tg_chaos_fault_spec *faults; /* in the order they are injected */
  size_t n_faults;
  /* Soak: after the listed faults, a fault of a kind drawn from soak_kinds
   * every soak_every_steps steps until soak_ms have passed. */
  int has_soak;
  int64_t soak_ms;
  int64_t soak_every_steps;
  tg_chaos_kind soak_kinds[TG_CHAOS_KIND_COUNT];
  size_t n_soak_kinds;
} tg_chaos_scenario;

/* Parses and validates a scenario, for a cluster tg-chaos starts
 * (attach 0) or for a running job (attach 1, see above). NULL with one
 * line in err on failure. */
tg_chaos_scenario *tg_chaos_scenario_parse(const char *text, size_t len, int attach, char *err, size_t errlen);

/* The same from a file (at most TG_CHAOS_MAX_FILE_BYTES). */
tg_chaos_scenario *tg_chaos_scenario_load(const char *path, int attach, char *err, size_t errlen);

void tg_chaos_scenario_free(tg_chaos_scenario *s);

/* Node ids are "n0".."n<agents+spares-1>": the index of `id`, or -1. */
int tg_chaos_node_index(const tg_chaos_scenario *s, const char *id);

#endif
