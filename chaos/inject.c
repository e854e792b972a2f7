/* The injectors; see inject.h. Each one resolves its target from the
 * coordinator's view of the world (tg_chaos_poller: nodes in position
 * order) and the trainers' logs (which rank a slot holds), refuses with a
 * note when the target cannot take the fault now, and stamps the moment
 * of injection immediately before the act. */
#include "chaos/inject.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/ckpt/store.h"
#include "agent/health/gpu_fake.h"
#include "agent/health/nic_fake.h"
#include "common/clock/clock.h"

#define MAX_KEYS 512
#define NIC_FLAP_CHANGES 4 /* the agent's flap threshold: two down-up cycles within its window */
#define NIC_ERRORS 100     /* ten times the agent's errors-per-window threshold */

uint32_t tg_chaos_draw(tg_chaos_ctx *ctx, uint32_t n) {
  uint64_t z = (ctx->rng += 0x9E3779B97F4A7C15ULL); /* splitmix64 */
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return n ? (uint32_t)(z % n) : 0;
}

static int skip(tg_chaos_fault *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int skip(tg_chaos_fault *f, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(f->note, sizeof f->note, fmt, ap);
  va_end(ap);
  return -1;
}

static void stamp(tg_chaos_fault *f) {
  f->injected_unix_ms = tg_clock_unix_ms();
  f->injected_mono_ms = tg_clock_mono_ms();
}

/* Nodes of the world (position order) whose agent runs. */
static size_t ranked_nodes(tg_chaos_ctx *ctx, const tg_chaos_status *st, int *out) {
  size_t n = 0;
  for (size_t i = 0; i < st->n_nodes; i++) {
    int idx = tg_chaos_cluster_node_index(ctx->cluster, st->nodes[i]);
    if (idx >= 0 && !ctx->lost[idx] && !ctx->cut[idx] && tg_chaos_cluster_agent_running(ctx->cluster, idx))
      out[n++] = idx;
  }
  return n;
}

static int in_world(tg_chaos_ctx *ctx, const tg_chaos_status *st, int idx) {
  int nodes[TG_CHAOS_MAX_NODES];
  size_t n = ranked_nodes(ctx, st, nodes);
  for (size_t i = 0; i < n; i++)
    if (nodes[i] == idx) return 1;
  return 0;
}

static int running_coordinators(tg_chaos_ctx *ctx) {
  int n = 0;
  for (int i = 0; i < ctx->s->cluster.coordinators; i++) n += tg_chaos_cluster_coordinator_running(ctx->cluster, i);
  return n;
}

/* A node holding ranks: the explicit one if it does, else a random one. */
static int resolve_node(tg_chaos_ctx *ctx, tg_chaos_fault *f, const tg_chaos_status *st) {
  int idx;
  if (f->spec.random_target) {
    int nodes[TG_CHAOS_MAX_NODES];
    size_t n = ranked_nodes(ctx, st, nodes);
    if (n == 0) return skip(f, "no node holds ranks now");
    idx = nodes[tg_chaos_draw(ctx, (uint32_t)n)];
  } else {
    idx = tg_chaos_cluster_node_index(ctx->cluster, f->spec.node);
    if (idx < 0) return skip(f, "the job has no node %s (on this machine)", f->spec.node);
    if (!tg_chaos_cluster_agent_running(ctx->cluster, idx)) return skip(f, "%s is not running", f->spec.node);
    if (!in_world(ctx, st, idx)) return skip(f, "%s holds no ranks now", f->spec.node);
  }
  snprintf(f->node, sizeof f->node, "%s", tg_chaos_cluster_node_id(ctx->cluster, idx));
  return idx;
}

/* A trainer of a node holding ranks; its pid in *pid. */
static int resolve_trainer(tg_chaos_ctx *ctx, tg_chaos_fault *f, const tg_chaos_status *st, pid_t *pid) {
  int idx = resolve_node(ctx, f, st);
  if (idx < 0) return -1;
  f->slot = f->spec.random_target ? (int)tg_chaos_draw(ctx, (uint32_t)ctx->s->cluster.slots) : f->spec.slot;
  int rank;
  uint64_t gen;
  f->rank = tg_chaos_watch_slot(ctx->watch, idx, f->slot, &rank, &gen) == 0 && gen == f->generation_before ? rank : -1;
  *pid = tg_chaos_cluster_trainer_pid(ctx->cluster, idx, f->slot);
  if (*pid <= 0) return skip(f, "no trainer process in %s slot %d", f->node, f->slot);
  return idx;
}

static int signal_trainer(tg_chaos_ctx *ctx, tg_chaos_fault *f, const tg_chaos_status *st, int sig) {
  pid_t pid;
  if (resolve_trainer(ctx, f, st, &pid) < 0) return -1;
  stamp(f);
  if (kill(pid, sig) != 0) return skip(f, "cannot signal pid %d", (int)pid);
  return 0;
}

/* A request to the target trainer's fault injection (tg-train
 * --inject-dir, trainer/train/inject.h), written whole (a temporary file
 * renamed), so the trainer never reads half of one. The trainer applies
 * it at the start of its next step. */
static int request_fault(tg_chaos_ctx *ctx, tg_chaos_fault *f, const tg_chaos_status *st) {
  pid_t pid;
  int idx = resolve_trainer(ctx, f, st, &pid);
  if (idx < 0) return -1;
  if (f->spec.kind != TG_CHAOS_STRAGGLER && f->rank < 0)
    return skip(f, "the rank of %s slot %d in generation %llu is not known yet", f->node, f->slot,
                (unsigned long long)f->generation_before);
  char request[64], path[800], tmp[820];
  if (f->spec.kind == TG_CHAOS_STRAGGLER) {
    /* A soak's straggler has no fields of its own: the defaults. */
    if (f->spec.delay_ms <= 0) f->spec.delay_ms = TG_CHAOS_STRAGGLER_DELAY_MS;
    if (f->spec.for_steps <= 0) f->spec.for_steps = TG_CHAOS_STRAGGLER_STEPS;
    snprintf(request, sizeof request, "straggler %lld %lld", (long long)f->spec.delay_ms,
             (long long)f->spec.for_steps);
  } else {
    snprintf(request, sizeof request, "%s", f->spec.kind == TG_CHAOS_NAN_LOSS ? "nan" : "sdc");
  }
  tg_chaos_cluster_inject_path(ctx->cluster, idx, f->slot, path, sizeof path);
  if (!path[0])
    return skip(f, "%s's trainers run without --inject-dir (tg-train's fault requests are off)", f->node);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *out = fopen(tmp, "w");
  if (!out) return skip(f, "cannot write %s", tmp);
  int ok = fprintf(out, "%s\n", request) > 0;
  ok = fclose(out) == 0 && ok;
  stamp(f);
  if (!ok || rename(tmp, path) != 0) {
    remove(tmp);
    return skip(f, "cannot write the request %s", path);
  }
  return 0;
}

/* Every copy of the target trainer's shard in its node's memory gets one
 * byte flipped while the trainer is stopped (so it writes no newer step),
 * then the trainer is killed: its restart must read the shard back,
 * refuse the corrupt copies (checksum) and use the buddy's. */
static int corrupt_replica(tg_chaos_ctx *ctx, tg_chaos_fault *f, const tg_chaos_status *st) {
  pid_t pid;
  int idx = resolve_trainer(ctx, f, st, &pid);
  if (idx < 0) return -1;
  if (f->rank < 0) return skip(f, "the rank of %s slot %d in generation %llu is not known yet", f->node, f->slot,
                               (unsigned long long)f->generation_before);
  if (kill(pid, SIGSTOP) != 0) return skip(f, "cannot stop pid %d", (int)pid);
  char name[160], err[256];
  tg_chaos_cluster_store_name(ctx->cluster, idx, name, sizeof name);
  tg_ckpt_store *store = tg_ckpt_store_open(name, err, sizeof err);
  if (!store) {
    kill(pid, SIGCONT);
    return skip(f, "cannot open %s's checkpoint store %s: %s", f->node, name, err);
  }
  static tg_ckpt_key keys[MAX_KEYS];
  size_t n = tg_ckpt_store_list(store, tg_chaos_cluster_job(ctx->cluster), keys, MAX_KEYS);
  size_t corrupted = 0;
  uint64_t lo = UINT64_MAX, hi = 0;
  for (size_t i = 0; i < n && i < MAX_KEYS; i++) {
    if (keys[i].shard != f->rank || keys[i].world_size != f->world_before) continue;
    if (tg_ckpt_store_corrupt(store, &keys[i], 12345 + i) != TG_CKPT_OK) continue;
    corrupted++;
    if (keys[i].step < lo) lo = keys[i].step;
    if (keys[i].step > hi) hi = keys[i].step;
  }
  tg_ckpt_store_close(store);
  if (corrupted == 0) {
    kill(pid, SIGCONT);
    return skip(f, "no copy of shard %d (world of %u) in %s's memory", f->rank, f->world_before, f->node);
  }
  stamp(f);
  kill(pid, SIGKILL);
  snprintf(f->note, sizeof f->note,
           "corrupted %zu copies of shard %d (steps %llu..%llu) in %s's memory, then killed its trainer so they "
           "are read back", corrupted, f->rank, (unsigned long long)lo, (unsigned long long)hi, f->node);
  return 0;
}

static int host_loss(tg_chaos_ctx *ctx, tg_chaos_fault *f, const tg_chaos_status *st) {
  int idx = resolve_node(ctx, f, st);
  if (idx < 0) return -1;
  stamp(f);
  if (tg_chaos_cluster_kill_agent(ctx->cluster, idx) != 0) return skip(f, "%s's agent is not running", f->node);
  ctx->lost[idx] = 1;
  return 0;
}

static int host_return(tg_chaos_ctx *ctx, tg_chaos_fault *f, const tg_chaos_status *st) {
  int idx = -1;
  if (f->spec.random_target) {
    int lost[TG_CHAOS_MAX_NODES];
    uint32_t n = 0;
    for (int i = 0; i < tg_chaos_cluster_nodes(ctx->cluster); i++)
      if (ctx->lost[i]) lost[n++] = i;
    if (n == 0) return skip(f, "no node is lost");
    idx = lost[tg_chaos_draw(ctx, n)];
  } else {
    idx = tg_chaos_cluster_node_index(ctx->cluster, f->spec.node);
    if (idx < 0 || !ctx->lost[idx]) return skip(f, "%s is not lost", f->spec.node);
  }
  snprintf(f->node, sizeof f->node, "%s", tg_chaos_cluster_node_id(ctx->cluster, idx));
  /* A world short of its full size grows back; a full one (a spare took
   * the node's place) keeps the returning node as a spare. */
  f->expect_new_world = st->n_nodes < (size_t)ctx->s->cluster.agents;
  f->agent_lines_before = tg_chaos_watch_agent_lines(ctx->watch, idx);
  char err[256];
  stamp(f);
  if (tg_chaos_cluster_start_agent(ctx->cluster, idx, err, sizeof err) != 0)
    return skip(f, "cannot restart %s: %s", f->node, err);
  ctx->lost[idx] = 0;
  return 0;
}

static int drain(tg_chaos_ctx *ctx, tg_chaos_fault *f, const tg_chaos_status *st) {
  int idx = resolve_node(ctx, f, st);
  if (idx < 0) return -1;
  const char *args[] = {"drain", f->node, "--reason", "tg-chaos", NULL};
  char out[1024];
  stamp(f);
  int rc = tg_chaos_cluster_tgctl(ctx->cluster, args, out, sizeof out, 10000);
  if (rc != 0) {
    out[strcspn(out, "\n")] = '\0';
    return skip(f, "tgctl drain %s failed (%d): %s", f->node, rc, out);
  }
  ctx->drained[idx] = 1;
  return 0;
}

static int coordinator_crash(tg_chaos_ctx *ctx, tg_chaos_fault *f, const tg_chaos_status *st) {
  if (!st->ok || !st->leader[0]) return skip(f, "no coordinator has answered as leader yet");
  int idx = tg_chaos_cluster_coordinator_index(ctx->cluster, st->leader);
  if (idx < 0) return skip(f, "the leader \"%s\" is not one of ours", st->leader);
  if (running_coordinators(ctx) < 2) return skip(f, "no standby is running to take over");
  snprintf(f->coordinator, sizeof f->coordinator, "%s", st->leader);
  stamp(f);
  if (tg_chaos_cluster_kill_coordinator(ctx->cluster, idx) != 0) return skip(f, "%s is not running", st->leader);
  return 0;
}

/* The nodes at ring positions 1 and 2 go at once: position 2 holds the
 * only other copy of position 1's shards. */
static int lose_all_copies(tg_chaos_ctx *ctx, tg_chaos_fault *f, const tg_chaos_status *st) {
  if (st->n_nodes < 3) return skip(f, "the world has %zu nodes; positions 1 and 2 need 3", st->n_nodes);
  int a = tg_chaos_cluster_node_index(ctx->cluster, st->nodes[1]);
  int b = tg_chaos_cluster_node_index(ctx->cluster, st->nodes[2]);
  if (!tg_chaos_cluster_agent_running(ctx->cluster, a) || !tg_chaos_cluster_agent_running(ctx->cluster, b))
    return skip(f, "%s or %s is not running", st->nodes[1], st->nodes[2]);
  snprintf(f->node, sizeof f->node, "%s", st->nodes[1]);
  snprintf(f->node2, sizeof f->node2, "%s", st->nodes[2]);
  stamp(f);
  tg_chaos_cluster_kill_agent(ctx->cluster, a);
  tg_chaos_cluster_kill_agent(ctx->cluster, b);
  ctx->lost[a] = ctx->lost[b] = 1;
  return 0;
}

/* Every byte between the node's agent and the coordinators is held for
 * delay_ms by tg-chaos's proxy (the agents were started behind it): its
 * registration, heartbeats and fault reports arrive late. Below the
 * heartbeat timeout that is tolerated; above it the node is lost. The
 * link is fast again when the fault ends (measure.c). */
static int slow_link(tg_chaos_ctx *ctx, tg_chaos_fault *f, const tg_chaos_status *st) {
  int idx = resolve_node(ctx, f, st);
  if (idx < 0) return -1;
  char err[256];
  stamp(f);
  if (tg_chaos_cluster_slow_link(ctx->cluster, idx, f->spec.delay_ms, err, sizeof err) != 0)
    return skip(f, "cannot slow %s's link: %s", f->node, err);
  ctx->cut[idx] = 1;
  snprintf(f->note, sizeof f->note, "%s's agent-coordinator link delayed by %lld ms (heartbeat timeout %lld ms)",
           f->node, (long long)f->spec.delay_ms, (long long)ctx->s->cluster.heartbeat_timeout_ms);
  return 0;
}

/* Adds `by` to a counter of the fake NIC eth0 (sysfs root `sys`): what
 * a flapping link or a link corrupting frames leaves between two checks. */
static int bump_counter(const char *sys, const char *file, uint64_t by) {
  char path[900], text[32] = "";
  snprintf(path, sizeof path, "%s/class/net/eth0/%s", sys, file);
  FILE *in = fopen(path, "r");
  if (!in) return -errno;
  int ok = fgets(text, sizeof text, in) != NULL;
  fclose(in);
  char *end;
  errno = 0;
  unsigned long long v = ok ? strtoull(text, &end, 10) : 0;
  if (!ok || errno || end == text) return -EINVAL;
  return tg_nic_fake_set_u64(sys, "eth0", file, (uint64_t)v + by);
}

/* A fault in the node's fake devices (the agents run with --fake-devices):
 * its agent's health checks see it within their period, report it, and
 * mark the node unhealthy, so the world re-forms without it. The node
 * stays broken; once out of the world, later faults do not pick it
 * (targets are drawn from the world's nodes). */
static int device_fault(tg_chaos_ctx *ctx, tg_chaos_fault *f, const tg_chaos_status *st) {
  int idx = resolve_node(ctx, f, st);
  if (idx < 0) return -1;
  char dir[800], sys[820];
  tg_chaos_cluster_fake_devices(ctx->cluster, idx, dir, sizeof dir);
  if (!dir[0])
    return skip(f, "%s's agent checks real devices (no --fake-devices): GPU and NIC faults go through the fake "
                "backend only", f->node);
  snprintf(sys, sizeof sys, "%s/sys", dir);
  uint32_t gpu = tg_chaos_draw(ctx, (uint32_t)ctx->s->cluster.slots);
  int rc;
  f->gpu = (int)gpu;
  stamp(f);
  switch (f->spec.kind) {
  case TG_CHAOS_GPU_XID: rc = tg_gpu_fake_inject_xid(dir, gpu, 79); break;
  case TG_CHAOS_GPU_ECC: rc = tg_gpu_fake_set_ecc(dir, gpu, 1); break;
  case TG_CHAOS_GPU_LOST: rc = tg_gpu_fake_set_lost(dir, gpu, 1); break;
  case TG_CHAOS_GPU_THERMAL:
    rc = tg_gpu_fake_set_temperature(dir, gpu, 92);
    if (rc == 0) rc = tg_gpu_fake_set(dir, gpu, "throttle", "thermal");
    break;
  case TG_CHAOS_GPU_PCIE: rc = tg_gpu_fake_set(dir, gpu, "pcie_width", "8"); break;
  case TG_CHAOS_GPU_ROW_REMAP: rc = tg_gpu_fake_set(dir, gpu, "row_remap_pending", "1"); break;
  case TG_CHAOS_NIC_FLAP: rc = bump_counter(sys, "carrier_changes", NIC_FLAP_CHANGES); break;
  case TG_CHAOS_NIC_ERRORS: rc = bump_counter(sys, "statistics/rx_errors", NIC_ERRORS); break;
  default:
    rc = tg_nic_fake_set(sys, "eth0", "carrier", "0");
    if (rc == 0) rc = tg_nic_fake_set(sys, "eth0", "operstate", "down");
    break;
  }
  if (rc != 0) return skip(f, "cannot write %s's fake devices in %s: %s", f->node, dir, strerror(rc < 0 ? -rc : rc));
  switch (f->spec.kind) {
  case TG_CHAOS_NIC_DOWN: snprintf(f->note, sizeof f->note, "eth0 down"); break;
  case TG_CHAOS_NIC_FLAP:
    snprintf(f->note, sizeof f->note, "eth0 carrier_changes +%d (two down-up cycles between checks)", NIC_FLAP_CHANGES);
    break;
  case TG_CHAOS_NIC_ERRORS: snprintf(f->note, sizeof f->note, "eth0 rx_errors +%d", NIC_ERRORS); break;
  default: snprintf(f->note, sizeof f->note, "gpu%u", gpu); return 0;
  }
  f->gpu = -1; /* a NIC fault: no GPU to heal */
  return 0;
}

/* The node's host is cut off: both ends of its link go down, so its
 * agent's heartbeats and its ranks' traffic go nowhere while every
 * process keeps running. The coordinator loses the node on the heartbeat
 * timeout; the link comes back once the job recovered (measure.c). */
static int network_partition(tg_chaos_ctx *ctx, tg_chaos_fault *f, const tg_chaos_status *st) {
  int idx = resolve_node(ctx, f, st);
  if (idx < 0) return -1;
  char err[256];
  stamp(f);
  if (tg_chaos_cluster_cut(ctx->cluster, idx, err, sizeof err) != 0) return skip(f, "cannot cut %s: %s", f->node, err);
  ctx->cut[idx] = 1;
  snprintf(f->note, sizeof f->note, "%s's link cut", f->node);
  return 0;
}

int tg_chaos_device_heal(tg_chaos_ctx *ctx, const tg_chaos_fault *f) {
  int idx = tg_chaos_cluster_node_index(ctx->cluster, f->node);
  if (idx < 0 || f->gpu < 0) return 0; /* no fake GPU was written */
  char dir[800];
  tg_chaos_cluster_fake_devices(ctx->cluster, idx, dir, sizeof dir);
  uint32_t gpu = (uint32_t)f->gpu;
  switch (f->spec.kind) {
  case TG_CHAOS_GPU_THERMAL: {
    int rc = tg_gpu_fake_set(dir, gpu, "throttle", "none");
    return rc ? rc : tg_gpu_fake_set_temperature(dir, gpu, 40);
  }
  case TG_CHAOS_GPU_PCIE: return tg_gpu_fake_set(dir, gpu, "pcie_width", "16");
  case TG_CHAOS_GPU_ROW_REMAP: return tg_gpu_fake_set(dir, gpu, "row_remap_pending", "0");
  default: return 0; /* a fault that stays (XID, ECC, lost) */
  }
}

static int running_etcd_members(tg_chaos_ctx *ctx) {
  int n = 0;
  for (int i = 0; i < tg_etcd_cluster_size(ctx->etcd); i++) n += tg_etcd_cluster_running(ctx->etcd, i);
  return n;
}

/* The leader, as the hardest member to lose (every write goes through
 * it); a random running member when no leader answers. The rest keep a
 * quorum; coordinators and agents must fail over to them. */
static int etcd_member_crash(tg_chaos_ctx *ctx, tg_chaos_fault *f) {
  int size = tg_etcd_cluster_size(ctx->etcd);
  if (running_etcd_members(ctx) < size) return skip(f, "an etcd member is still down from an earlier fault");
  int i = tg_etcd_cluster_leader(ctx->etcd, 2000);
  if (i < 0 || i >= size) i = (int)tg_chaos_draw(ctx, (uint32_t)size);
  f->etcd_member = i;
  snprintf(f->note, sizeof f->note, "etcd member %d (%s)", i, tg_etcd_cluster_endpoint(ctx->etcd, i));
  stamp(f);
  if (tg_etcd_cluster_kill(ctx->etcd, i) != 0) return skip(f, "cannot kill etcd member %d", i);
  return 0;
}

void tg_chaos_fill_path(tg_chaos_ctx *ctx, char *out, size_t len) {
  char dir[700];
  tg_chaos_cluster_ckpt_dir(ctx->cluster, dir, sizeof dir);
  snprintf(out, len, "%s/.tg-chaos-fill", dir);
}

/* The checkpoint filesystem (the tmpfs the cluster mounted for this kind)
 * is filled with one file until a write fails with ENOSPC: every agent's
 * next persist fails, and each should report a DISK warning naming the
 * directory while training goes on from memory. tg_chaos_track frees the
 * space once a persist has had to fail. */
static int disk_full(tg_chaos_ctx *ctx, tg_chaos_fault *f) {
  char path[760];
  tg_chaos_cluster_ckpt_dir(ctx->cluster, f->component, sizeof f->component);
  tg_chaos_fill_path(ctx, path, sizeof path);
  f->freed_at_step = -1;
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return skip(f, "%s: %s (still full from an earlier fault?)", path, strerror(errno));
  static const char block[1 << 16];
  long long written = 0;
  stamp(f);
  for (;;) {
    ssize_t n = write(fd, block, sizeof block);
    if (n > 0) {
      written += n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  int full = errno == ENOSPC;
  close(fd);
  if (!full) {
    unlink(path);
    return skip(f, "filling %s stopped before the disk was full: %s", path, strerror(errno));
  }
  snprintf(f->note, sizeof f->note, "%s filled (%lld MiB written)", f->component, written >> 20);
  return 0;
}

int tg_chaos_inject(tg_chaos_ctx *ctx, tg_chaos_fault *f) {
  tg_chaos_status st;
  tg_chaos_poller_get(ctx->poller, &st);
  f->slot = f->rank = f->etcd_member = f->gpu = -1;
  switch (f->spec.kind) {
  case TG_CHAOS_TRAINER_CRASH: return signal_trainer(ctx, f, &st, SIGKILL);
  case TG_CHAOS_TRAINER_SEGV: return signal_trainer(ctx, f, &st, SIGSEGV);
  case TG_CHAOS_HANG: return signal_trainer(ctx, f, &st, SIGSTOP);
  case TG_CHAOS_HOST_LOSS: return host_loss(ctx, f, &st);
  case TG_CHAOS_HOST_RETURN: return host_return(ctx, f, &st);
  case TG_CHAOS_DRAIN: return drain(ctx, f, &st);
  case TG_CHAOS_COORDINATOR_CRASH: return coordinator_crash(ctx, f, &st);
  case TG_CHAOS_CORRUPT_REPLICA: return corrupt_replica(ctx, f, &st);
  case TG_CHAOS_LOSE_ALL_COPIES: return lose_all_copies(ctx, f, &st);
  case TG_CHAOS_GPU_XID:
  case TG_CHAOS_GPU_ECC:
  case TG_CHAOS_GPU_LOST:
  case TG_CHAOS_NIC_DOWN:
  case TG_CHAOS_NIC_FLAP:
  case TG_CHAOS_NIC_ERRORS:
  case TG_CHAOS_GPU_THERMAL:
  case TG_CHAOS_GPU_PCIE:
  case TG_CHAOS_GPU_ROW_REMAP: return device_fault(ctx, f, &st);
  case TG_CHAOS_ETCD_MEMBER_CRASH: return etcd_member_crash(ctx, f);
  case TG_CHAOS_NETWORK_PARTITION: return network_partition(ctx, f, &st);
  case TG_CHAOS_SLOW_LINK: return slow_link(ctx, f, &st);
  case TG_CHAOS_DISK_FULL: return disk_full(ctx, f);
  case TG_CHAOS_SILENT_DATA_CORRUPTION:
  case TG_CHAOS_NAN_LOSS:
  case TG_CHAOS_STRAGGLER: return request_fault(ctx, f, &st);
  default: return skip(f, "unknown kind");
  }
}

int tg_chaos_feasible(tg_chaos_ctx *ctx, tg_chaos_kind kind) {
  tg_chaos_status st;
  tg_chaos_poller_get(ctx->poller, &st);
  int nodes[TG_CHAOS_MAX_NODES];
  size_t ranked = ranked_nodes(ctx, &st, nodes);
  size_t min = (size_t)ctx->s->cluster.min_nodes, spares = st.nodes_spare;
  switch (kind) {
  case TG_CHAOS_TRAINER_CRASH:
  case TG_CHAOS_TRAINER_SEGV:
  case TG_CHAOS_HANG:
  case TG_CHAOS_CORRUPT_REPLICA:
  case TG_CHAOS_NAN_LOSS:
  case TG_CHAOS_STRAGGLER: return ranked > 0;
  case TG_CHAOS_SILENT_DATA_CORRUPTION: /* the culprit's node leaves; a majority names it */
    return ranked > 0 && ranked == st.n_nodes && (st.n_nodes - 1 >= min || spares > 0) &&
           st.n_nodes * (size_t)ctx->s->cluster.slots >= 3;
  case TG_CHAOS_HOST_LOSS:
  case TG_CHAOS_DRAIN:
  case TG_CHAOS_GPU_XID:
  case TG_CHAOS_GPU_ECC:
  case TG_CHAOS_GPU_LOST:
  case TG_CHAOS_NIC_DOWN:
  case TG_CHAOS_NETWORK_PARTITION:
  case TG_CHAOS_SLOW_LINK: return ranked > 0 && ranked == st.n_nodes && (st.n_nodes - 1 >= min || spares > 0);
  case TG_CHAOS_NIC_FLAP:
  case TG_CHAOS_NIC_ERRORS:
  case TG_CHAOS_GPU_THERMAL:
  case TG_CHAOS_GPU_PCIE:
  case TG_CHAOS_GPU_ROW_REMAP: return ranked > 0;
  case TG_CHAOS_HOST_RETURN:
    for (int i = 0; i < tg_chaos_cluster_nodes(ctx->cluster); i++)
      if (ctx->lost[i]) return 1;
    return 0;
  case TG_CHAOS_COORDINATOR_CRASH: return st.ok && running_coordinators(ctx) >= 2;
  case TG_CHAOS_ETCD_MEMBER_CRASH: return running_etcd_members(ctx) == tg_etcd_cluster_size(ctx->etcd);
  case TG_CHAOS_DISK_FULL: return 1;
  case TG_CHAOS_LOSE_ALL_COPIES:
    return st.n_nodes >= 3 && ranked == st.n_nodes && st.n_nodes - 2 + (spares < 2 ? spares : 2) >= min;
  default: return 0;
  }
}
