/* Scenario files: JSON in, a validated tg_chaos_scenario out. See
 * scenario.h for why everything is checked here and chaos/README.md for
 * the format. The parser walks the document with a small set of typed
 * getters that know the field's path, so every message names exactly the
 * field that is wrong and what would be right. */
#include "chaos/scenario.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Seeds and other integers must survive a trip through a double. */
#define MAX_EXACT_INT ((int64_t)1 << 53)

static const char *const kind_names[TG_CHAOS_KIND_COUNT] = {
    "trainer_crash", "trainer_segv", "hang", "host_loss", "host_return",
    "drain", "coordinator_crash", "corrupt_replica", "lose_all_copies",
    "gpu_xid", "gpu_ecc", "gpu_lost", "nic_down", "etcd_member_crash",
    "network_partition", "nic_flap", "nic_errors", "slow_link",
    "disk_full", "gpu_thermal", "gpu_pcie", "gpu_row_remap",
    "silent_data_corruption", "nan_loss", "straggler",
};

const char *tg_chaos_kind_name(tg_chaos_kind kind) {
  return (unsigned)kind < TG_CHAOS_KIND_COUNT ? kind_names[kind] : "?";
}

int tg_chaos_kind_is_warning(tg_chaos_kind kind) {
  return kind == TG_CHAOS_GPU_THERMAL || kind == TG_CHAOS_GPU_PCIE || kind == TG_CHAOS_GPU_ROW_REMAP ||
         kind == TG_CHAOS_NIC_FLAP || kind == TG_CHAOS_NIC_ERRORS;
}

int tg_chaos_kind_parse(const char *name) {
  for (int k = 0; k < TG_CHAOS_KIND_COUNT; k++)
    if (strcmp(name, kind_names[k]) == 0) return k;
  return -1;
}

tg_chaos_target_type tg_chaos_kind_target(tg_chaos_kind kind) {
  switch (kind) {
  case TG_CHAOS_TRAINER_CRASH:
  case TG_CHAOS_TRAINER_SEGV:
  case TG_CHAOS_HANG:
  case TG_CHAOS_CORRUPT_REPLICA:
  case TG_CHAOS_SILENT_DATA_CORRUPTION:
  case TG_CHAOS_NAN_LOSS:
  case TG_CHAOS_STRAGGLER: return TG_CHAOS_TARGET_TRAINER;
  case TG_CHAOS_HOST_LOSS:
  case TG_CHAOS_HOST_RETURN:
  case TG_CHAOS_DRAIN:
  case TG_CHAOS_GPU_XID:
  case TG_CHAOS_GPU_ECC:
  case TG_CHAOS_GPU_LOST:
  case TG_CHAOS_NIC_DOWN:
  case TG_CHAOS_NETWORK_PARTITION:
  case TG_CHAOS_NIC_FLAP:
  case TG_CHAOS_NIC_ERRORS:
  case TG_CHAOS_SLOW_LINK:
  case TG_CHAOS_GPU_THERMAL:
  case TG_CHAOS_GPU_PCIE:
  case TG_CHAOS_GPU_ROW_REMAP: return TG_CHAOS_TARGET_NODE;
  default: return TG_CHAOS_TARGET_NONE;
  }
}

int tg_chaos_node_index(const tg_chaos_scenario *s, const char *id) {
  if (!id || id[0] != 'n' || id[1] < '0' || id[1] > '9' || (id[1] == '0' && id[2])) return -1;
  char *end;
  errno = 0;
  long v = strtol(id + 1, &end, 10);
  if (errno || *end || v < 0 || v >= s->cluster.agents + s->cluster.spares) return -1;
  return (int)v;
}

/* ------------------------------------------------------------ getters */

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -1;
}

/* A short rendering of a value for messages. */
static const char *shown(const cJSON *item, char *buf, size_t len) {
  char *s = cJSON_PrintUnformatted(item);
  snprintf(buf, len, "%.40s%s", s ? s : "?", s && strlen(s) > 40 ? "..." : "");
  free(s);
  return buf;
}

/* Refuses anything but an object whose fields are all in `allowed`
 * (NULL-terminated), each at most once. */
static int check_fields(const cJSON *obj, const char *path, const char *const *allowed, char *err,
                        size_t errlen) {
  if (!cJSON_IsObject(obj)) return fail(err, errlen, "%s: must be an object", path);
  for (const cJSON *c = obj->child; c; c = c->next) {
    int known = 0;
    for (size_t i = 0; allowed[i] && !known; i++) known = strcmp(c->string, allowed[i]) == 0;
    if (!known) {
      char list[512] = "";
      for (size_t i = 0; allowed[i]; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", allowed[i]);
      return fail(err, errlen, "%s%s%s: unknown field (expected one of: %s)", path, *path ? "." : "",
                  c->string, list);
    }
    for (const cJSON *d = obj->child; d != c; d = d->next)
      if (strcmp(d->string, c->string) == 0)
        return fail(err, errlen, "%s%s%s: given twice", path, *path ? "." : "", c->string);
  }
  return 0;
}

/* An integer field in [min, max]; `dflt` when absent unless required. */
static int get_int(const cJSON *obj, const char *path, const char *key, int64_t min, int64_t max, int required,
                   int64_t dflt, int64_t *out, char *err, size_t errlen) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
  const char *dot = *path ? "." : "";
  if (!item) {
    if (required)
      return fail(err, errlen, "%s%s%s: missing (an integer in %lld..%lld)", path, dot, key, (long long)min,
                  (long long)max);
    *out = dflt;
    return 0;
  }
  double d = item->valuedouble;
  if (!cJSON_IsNumber(item) || d != floor(d) || d < (double)min || d > (double)max) {
    char buf[64];
    return fail(err, errlen, "%s%s%s: must be an integer in %lld..%lld, got %s", path, dot, key, (long long)min,
                (long long)max, shown(item, buf, sizeof buf));
  }
  *out = (int64_t)d;
  return 0;
}

static int get_int32(const cJSON *obj, const char *path, const char *key, int min, int max, int required,
                     int dflt, int *out, char *err, size_t errlen) {
  int64_t v;
  if (get_int(obj, path, key, min, max, required, dflt, &v, err, errlen) != 0) return -1;
  *out = (int)v;
  return 0;
}

/* A string field shorter than `size` bytes; "" when absent. */
static int get_string(const cJSON *obj, const char *path, const char *key, int required, char *out, size_t size,
                      char *err, size_t errlen) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
  const char *dot = *path ? "." : "";
  out[0] = '\0';
  if (!item) return required ? fail(err, errlen, "%s%s%s: missing (a string)", path, dot, key) : 0;
  if (!cJSON_IsString(item)) {
    char buf[64];
    return fail(err, errlen, "%s%s%s: must be a string, got %s", path, dot, key, shown(item, buf, sizeof buf));
  }
  if (strlen(item->valuestring) >= size)
    return fail(err, errlen, "%s%s%s: longer than %zu bytes", path, dot, key, size - 1);
  snprintf(out, size, "%s", item->valuestring);
  return 0;
}

static int valid_name(const char *s) {
  if (!*s) return 0;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '.' ||
          *s == '_' || *s == '-'))
      return 0;
  return 1;
}

/* A kind name from a JSON string, with the reason it is refused. */
static int get_kind(const cJSON *item, const char *path, tg_chaos_kind *out, char *err, size_t errlen) {
  char buf[64];
  if (!cJSON_IsString(item))
    return fail(err, errlen, "%s: must be a fault kind (a string), got %s", path, shown(item, buf, sizeof buf));
  int k = tg_chaos_kind_parse(item->valuestring);
  if (k < 0) {
    char list[512] = "";
    for (int i = 0; i < TG_CHAOS_KIND_COUNT; i++)
      snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", kind_names[i]);
    return fail(err, errlen, "%s: unknown kind %s (expected one of: %s)", path, shown(item, buf, sizeof buf), list);
  }
  *out = (tg_chaos_kind)k;
  return 0;
}

/* ------------------------------------------------------------ sections */

static int parse_cluster(const cJSON *c, tg_chaos_cluster_spec *cl, char *err, size_t errlen) {
  static const char *const fields[] = {"agents", "slots", "spares", "coordinators", "min_nodes",
                                       "heartbeat_timeout_ms", "persist_every", "hang_floor_ms", "ckpt_mib",
                                       "etcd_members", "network", NULL};
  if (!c) return fail(err, errlen, "cluster: missing (an object with at least \"agents\")");
  if (check_fields(c, "cluster", fields, err, errlen) != 0 ||
      get_int32(c, "cluster", "agents", 1, TG_CHAOS_MAX_AGENTS, 1, 0, &cl->agents, err, errlen) != 0 ||
      get_int32(c, "cluster", "slots", 1, TG_CHAOS_MAX_SLOTS, 0, 2, &cl->slots, err, errlen) != 0 ||
      get_int32(c, "cluster", "spares", 0, TG_CHAOS_MAX_SPARES, 0, 0, &cl->spares, err, errlen) != 0 ||
      get_int32(c, "cluster", "coordinators", 1, TG_CHAOS_MAX_COORDINATORS, 0, 1, &cl->coordinators, err,
                errlen) != 0 ||
      get_int32(c, "cluster", "min_nodes", 1, cl->agents, 0, cl->agents, &cl->min_nodes, err, errlen) != 0 ||
      get_int(c, "cluster", "heartbeat_timeout_ms", 200, 60000, 0, 1000, &cl->heartbeat_timeout_ms, err,
              errlen) != 0 ||
      get_int(c, "cluster", "persist_every", 1, 1000000, 0, 20, &cl->persist_every, err, errlen) != 0 ||
      get_int(c, "cluster", "hang_floor_ms", 500, 600000, 0, 2000, &cl->hang_floor_ms, err, errlen) != 0 ||
      get_int(c, "cluster", "ckpt_mib", 1, 4096, 0, 32, &cl->ckpt_mib, err, errlen) != 0 ||
      get_int32(c, "cluster", "etcd_members", 1, 5, 0, 1, &cl->etcd_members, err, errlen) != 0)
    return -1;
  char network[16];
  if (get_string(c, "cluster", "network", 0, network, sizeof network, err, errlen) != 0) return -1;
  if (network[0] && strcmp(network, "local") != 0 && strcmp(network, "namespaces") != 0)
    return fail(err, errlen, "cluster.network: expected \"local\" or \"namespaces\", got \"%s\"", network);
  cl->namespaces = strcmp(network, "namespaces") == 0;
  if (cl->namespaces && cl->agents + cl->spares > TG_CHAOS_MAX_NETNS_NODES)
    return fail(err, errlen, "cluster.network: \"namespaces\" puts every node on a host of its own, at most %d "
                "(agents + spares), got %d", TG_CHAOS_MAX_NETNS_NODES, cl->agents + cl->spares);
  return 0;
}

static int parse_training(const cJSON *t, tg_chaos_training_spec *tr, char *err, size_t errlen) {
  static const char *const fields[] = {"steps", "width", "depth", "context", "batch", "micro", "seed", "corpus",
                                       "device", "backend", NULL};
  if (!t) return fail(err, errlen, "training: missing (an object with at least \"steps\")");
  if (check_fields(t, "training", fields, err, errlen) != 0 ||
      get_int(t, "training", "steps", 1, 10000000, 1, 0, &tr->steps, err, errlen) != 0 ||
      get_int(t, "training", "width", 1, 65536, 0, 32, &tr->width, err, errlen) != 0 ||
      get_int(t, "training", "depth", 0, 1024, 0, 2, &tr->depth, err, errlen) != 0 ||
      get_int(t, "training", "context", 1, 65535, 0, 16, &tr->context, err, errlen) != 0 ||
      get_int(t, "training", "batch", 1, 1 << 20, 0, 24, &tr->batch, err, errlen) != 0 ||
      get_int(t, "training", "micro", 1, 1 << 20, 0, 4, &tr->micro, err, errlen) != 0 ||
      get_int(t, "training", "seed", 0, MAX_EXACT_INT, 0, 1, &tr->seed, err, errlen) != 0 ||
      get_string(t, "training", "corpus", 0, tr->corpus, sizeof tr->corpus, err, errlen) != 0 ||
      get_string(t, "training", "device", 0, tr->device, sizeof tr->device, err, errlen) != 0 ||
      get_string(t, "training", "backend", 0, tr->backend, sizeof tr->backend, err, errlen) != 0)
    return -1;
  if (!tr->device[0]) snprintf(tr->device, sizeof tr->device, "cpu");
  if (!tr->backend[0]) snprintf(tr->backend, sizeof tr->backend, "gloo");
  if (strcmp(tr->device, "cpu") != 0 && strcmp(tr->device, "cuda") != 0)
    return fail(err, errlen, "training.device: expected \"cpu\" or \"cuda\", got \"%s\"", tr->device);
  if (strcmp(tr->backend, "gloo") != 0 && strcmp(tr->backend, "nccl") != 0)
    return fail(err, errlen, "training.backend: expected \"gloo\" or \"nccl\", got \"%s\"", tr->backend);
  if (strcmp(tr->backend, "nccl") == 0 && strcmp(tr->device, "cuda") != 0)
    return fail(err, errlen, "training.backend: \"nccl\" needs \"device\": \"cuda\" (NCCL takes GPU memory)");
  if (tr->batch % tr->micro != 0)
    return fail(err, errlen, "training.micro: must divide training.batch (%lld), got %lld", (long long)tr->batch,
                (long long)tr->micro);
  return 0;
}

/* Checks that a kind can run in this cluster at all. */
static int kind_fits(const tg_chaos_scenario *s, tg_chaos_kind kind, const char *path, char *err, size_t errlen) {
  const tg_chaos_cluster_spec *c = &s->cluster;
  if (s->attach) {
    /* The rest depends on the job's shape, known once attached: faults
     * it cannot take then are skipped with the reason. */
    const char *why = kind == TG_CHAOS_NETWORK_PARTITION ? "it needs the namespace hosts tg-chaos makes"
                      : kind == TG_CHAOS_SLOW_LINK       ? "it needs agents started behind tg-chaos's proxy"
                      : kind == TG_CHAOS_DISK_FULL       ? "it needs the small checkpoint filesystem tg-chaos mounts"
                      : kind == TG_CHAOS_ETCD_MEMBER_CRASH ? "it needs the etcd members tg-chaos starts"
                                                           : NULL;
    if (why) return fail(err, errlen, "%s: %s cannot be injected into a running job (--attach): %s", path,
                         tg_chaos_kind_name(kind), why);
    return 0;
  }
  if (kind == TG_CHAOS_ETCD_MEMBER_CRASH && c->etcd_members < 3)
    return fail(err, errlen, "%s: etcd_member_crash needs cluster.etcd_members >= 3 (a quorum without it)", path);
  if (kind == TG_CHAOS_DISK_FULL && s->training.steps <= 3 * c->persist_every)
    return fail(err, errlen, "%s: disk_full needs training.steps above 3 x cluster.persist_every (a persist that "
                "fails, then one after the space is freed)", path);
  if (kind == TG_CHAOS_NETWORK_PARTITION && !c->namespaces)
    return fail(err, errlen, "%s: network_partition needs cluster.network \"namespaces\" (every node on a host of "
                "its own); local processes share one network", path);
  if (kind == TG_CHAOS_COORDINATOR_CRASH && c->coordinators < 2)
    return fail(err, errlen, "%s: coordinator_crash needs cluster.coordinators >= 2 (a standby to take over)", path);
  int numbers = kind == TG_CHAOS_SILENT_DATA_CORRUPTION || kind == TG_CHAOS_NAN_LOSS;
  if (numbers && strcmp(s->training.device, "cpu") != 0)
    return fail(err, errlen, "%s: %s is injected into the CPU trainer's numbers only (training.device \"cpu\")",
                path, tg_chaos_kind_name(kind));
  if (kind == TG_CHAOS_SILENT_DATA_CORRUPTION && c->agents * c->slots < 3)
    return fail(err, errlen, "%s: silent_data_corruption needs at least 3 ranks (agents x slots): with 2 no "
                "majority can name the culprit", path);
  if (kind == TG_CHAOS_SILENT_DATA_CORRUPTION && c->agents - 1 + c->spares < c->min_nodes)
    return fail(err, errlen, "%s: silent_data_corruption takes the culprit's node out: agents - 1 + spares must "
                "be at least cluster.min_nodes (%d)", path, c->min_nodes);
  if (kind == TG_CHAOS_LOSE_ALL_COPIES) {
    if (c->agents < 3)
      return fail(err, errlen, "%s: lose_all_copies needs cluster.agents >= 3 (nodes at ring positions 1 and 2 "
                  "besides position 0)", path);
    if (c->agents + c->spares - 2 < c->min_nodes)
      return fail(err, errlen, "%s: lose_all_copies leaves %d nodes, below cluster.min_nodes (%d)", path,
                  c->agents + c->spares - 2, c->min_nodes);
  }
  return 0;
}

static int parse_target(const cJSON *f, const tg_chaos_scenario *s, tg_chaos_fault_spec *spec, const char *path,
                        char *err, size_t errlen) {
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(f, "target");
  tg_chaos_target_type type = tg_chaos_kind_target(spec->kind);
  char tpath[64], buf[64];
  snprintf(tpath, sizeof tpath, "%s.target", path);
  spec->slot = -1;
  spec->random_target = 0;
  if (type == TG_CHAOS_TARGET_NONE) {
    if (t)
      return fail(err, errlen, "%s: %s takes no target (%s)", tpath, tg_chaos_kind_name(spec->kind),
                  spec->kind == TG_CHAOS_COORDINATOR_CRASH ? "it kills the leader"
                                                           : "it kills the nodes at ring positions 1 and 2");
    return 0;
  }
  if (!t || (cJSON_IsString(t) && strcmp(t->valuestring, "random") == 0)) {
    spec->random_target = 1;
    return 0;
  }
  if (!cJSON_IsObject(t))
    return fail(err, errlen, "%s: must be \"random\" or an object {\"node\": ...%s}, got %s", tpath,
                type == TG_CHAOS_TARGET_TRAINER ? ", \"slot\": ..." : "", shown(t, buf, sizeof buf));
  static const char *const trainer_fields[] = {"node", "slot", NULL}, *const node_fields[] = {"node", NULL};
  if (check_fields(t, tpath, type == TG_CHAOS_TARGET_TRAINER ? trainer_fields : node_fields, err, errlen) != 0 ||
      get_string(t, tpath, "node", 1, spec->node, sizeof spec->node, err, errlen) != 0)
    return -1;
  if (s->attach && !valid_name(spec->node))
    return fail(err, errlen, "%s.node: must be a node id (1..%d bytes of [A-Za-z0-9._-]), got \"%s\"", tpath,
                TG_CHAOS_NAME_MAX - 1, spec->node);
  if (!s->attach && tg_chaos_node_index(s, spec->node) < 0)
    return fail(err, errlen, "%s.node: no node \"%s\" (nodes are n0..n%d: agents first, then spares)", tpath,
                spec->node, s->cluster.agents + s->cluster.spares - 1);
  int max_slot = s->attach ? TG_CHAOS_MAX_SLOTS - 1 : s->cluster.slots - 1;
  if (type == TG_CHAOS_TARGET_TRAINER && get_int32(t, tpath, "slot", 0, max_slot, 1, 0, &spec->slot, err, errlen) != 0)
    return -1;
  return 0;
}

static int parse_fault(const cJSON *f, tg_chaos_scenario *s, size_t i, char *err, size_t errlen) {
  static const char *const fields[] = {"kind", "at_step", "at_ms", "target", "delay_ms", "for_steps", "comment",
                                       NULL};
  char path[32];
  snprintf(path, sizeof path, "faults[%zu]", i);
  tg_chaos_fault_spec *spec = &s->faults[i];
  memset(spec, 0, sizeof *spec);
  if (check_fields(f, path, fields, err, errlen) != 0) return -1;
  const cJSON *kind = cJSON_GetObjectItemCaseSensitive(f, "kind");
  char kpath[48];
  snprintf(kpath, sizeof kpath, "%s.kind", path);
  if (!kind) return fail(err, errlen, "%s: missing (a fault kind)", kpath);
  if (get_kind(kind, kpath, &spec->kind, err, errlen) != 0 || kind_fits(s, spec->kind, path, err, errlen) != 0)
    return -1;
  int has_step = cJSON_GetObjectItemCaseSensitive(f, "at_step") != NULL;
  int has_ms = cJSON_GetObjectItemCaseSensitive(f, "at_ms") != NULL;
  if (has_step == has_ms)
    return fail(err, errlen, "%s: give exactly one of at_step and at_ms", path);
  if (get_int(f, path, "at_step", 1, s->training.steps - 1, 0, -1, &spec->at_step, err, errlen) != 0 ||
      get_int(f, path, "at_ms", 0, s->deadline_s * 1000, 0, -1, &spec->at_ms, err, errlen) != 0)
    return -1;
  int has_delay = cJSON_GetObjectItemCaseSensitive(f, "delay_ms") != NULL;
  int slow = spec->kind == TG_CHAOS_SLOW_LINK, straggler = spec->kind == TG_CHAOS_STRAGGLER;
  if (has_delay && !slow && !straggler)
    return fail(err, errlen, "%s.delay_ms: only slow_link and straggler take a delay", path);
  if (slow && !has_delay)
    return fail(err, errlen, "%s.delay_ms: missing (slow_link: an integer in 1..600000, ms each byte between the "
                "node's agent and the coordinators is held)", path);
  if (!straggler && cJSON_GetObjectItemCaseSensitive(f, "for_steps"))
    return fail(err, errlen, "%s.for_steps: only straggler takes a number of steps", path);
  if (get_int(f, path, "delay_ms", 1, slow ? 600000 : 60000, 0, straggler ? TG_CHAOS_STRAGGLER_DELAY_MS : -1,
              &spec->delay_ms, err, errlen) != 0 ||
      get_int(f, path, "for_steps", 1, 100000, 0, straggler ? TG_CHAOS_STRAGGLER_STEPS : -1, &spec->for_steps, err,
              errlen) != 0)
    return -1;
  if (straggler && has_step && spec->at_step + 2 * spec->for_steps >= s->training.steps)
    return fail(err, errlen, "%s: a straggler is measured over 2 x for_steps steps after at_step: at_step + 2 x "
                "for_steps (%lld) must be below training.steps (%lld)", path,
                (long long)(spec->at_step + 2 * spec->for_steps), (long long)s->training.steps);
  if (spec->kind == TG_CHAOS_LOSE_ALL_COPIES && has_step && spec->at_step <= s->cluster.persist_every)
    return fail(err, errlen, "%s.at_step: lose_all_copies resumes from disk, so a step must be persisted first: "
                "at_step must exceed cluster.persist_every (%lld)", path, (long long)s->cluster.persist_every);
  if (spec->kind == TG_CHAOS_HOST_RETURN) {
    int lost_before = 0;
    for (size_t k = 0; k < i; k++)
      lost_before |= s->faults[k].kind == TG_CHAOS_HOST_LOSS || s->faults[k].kind == TG_CHAOS_LOSE_ALL_COPIES;
    if (!lost_before)
      return fail(err, errlen, "%s: host_return needs an earlier host_loss or lose_all_copies", path);
  }
  return parse_target(f, s, spec, path, err, errlen);
}

static int parse_soak(const cJSON *o, tg_chaos_scenario *s, char *err, size_t errlen) {
  static const char *const fields[] = {"minutes", "every_steps", "kinds", NULL};
  char buf[64];
  if (check_fields(o, "soak", fields, err, errlen) != 0) return -1;
  const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "minutes");
  if (!m || !cJSON_IsNumber(m) || !(m->valuedouble > 0) || m->valuedouble > 1440)
    return fail(err, errlen, "soak.minutes: must be a number in (0, 1440], got %s",
                m ? shown(m, buf, sizeof buf) : "nothing");
  s->soak_ms = (int64_t)(m->valuedouble * 60000.0);
  if (get_int(o, "soak", "every_steps", 1, s->training.steps, 1, 0, &s->soak_every_steps, err, errlen) != 0)
    return -1;
  const cJSON *kinds = cJSON_GetObjectItemCaseSensitive(o, "kinds");
  if (!cJSON_IsArray(kinds) || cJSON_GetArraySize(kinds) < 1)
    return fail(err, errlen, "soak.kinds: must be a non-empty list of fault kinds");
  size_t i = 0;
  for (const cJSON *k = kinds->child; k; k = k->next, i++) {
    char path[32];
    snprintf(path, sizeof path, "soak.kinds[%zu]", i);
    tg_chaos_kind kind;
    if (i >= TG_CHAOS_KIND_COUNT) return fail(err, errlen, "%s: the list repeats a kind", path);
    if (get_kind(k, path, &kind, err, errlen) != 0 || kind_fits(s, kind, path, err, errlen) != 0) return -1;
    if (kind == TG_CHAOS_SLOW_LINK)
      return fail(err, errlen, "%s: slow_link needs a delay_ms, which soak faults do not have", path);
    for (size_t j = 0; j < s->n_soak_kinds; j++)
      if (s->soak_kinds[j] == kind) return fail(err, errlen, "%s: %s is listed twice", path, kind_names[kind]);
    s->soak_kinds[s->n_soak_kinds++] = kind;
  }
  s->has_soak = 1;
  return 0;
}

tg_chaos_scenario *tg_chaos_scenario_parse(const char *text, size_t len, int attach, char *err, size_t errlen) {
  static const char *const fields[] = {"name", "description", "seed", "cluster", "training", "faults",
                                       "soak", "deadline_s", "recovery_timeout_s", NULL};
  tg_chaos_scenario *s = calloc(1, sizeof *s);
  cJSON *root = NULL;
  if (!s) {
    fail(err, errlen, "out of memory");
    goto err;
  }
  s->attach = attach;
  if (len > TG_CHAOS_MAX_FILE_BYTES) {
    fail(err, errlen, "larger than %d bytes", TG_CHAOS_MAX_FILE_BYTES);
    goto err;
  }
  root = cJSON_ParseWithLength(text, len);
  if (!root) {
    const char *at = cJSON_GetErrorPtr();
    int line = 1;
    for (const char *p = text; at && p < at && p < text + len; p++) line += *p == '\n';
    fail(err, errlen, "not valid JSON (near line %d)", line);
    goto err;
  }
  if (check_fields(root, "", fields, err, errlen) != 0 ||
      get_string(root, "", "name", 1, s->name, sizeof s->name, err, errlen) != 0 ||
      get_string(root, "", "description", 0, s->description, sizeof s->description, err, errlen) != 0)
    goto err;
  if (!valid_name(s->name)) {
    fail(err, errlen, "name: must be 1..%d bytes of [A-Za-z0-9._-], got \"%s\"", TG_CHAOS_NAME_MAX - 1, s->name);
    goto err;
  }
  int64_t seed;
  if (get_int(root, "", "seed", 0, MAX_EXACT_INT, 0, 1, &seed, err, errlen) != 0)
    goto err;
  if (attach) {
    /* The running job's shape and training are what they are: read from
     * its processes when attaching, not from here. */
    s->training.steps = TG_CHAOS_ATTACH_MAX_STEP;
  } else if (parse_cluster(cJSON_GetObjectItemCaseSensitive(root, "cluster"), &s->cluster, err, errlen) != 0 ||
             parse_training(cJSON_GetObjectItemCaseSensitive(root, "training"), &s->training, err, errlen) != 0) {
    goto err;
  }
  s->seed = (uint64_t)seed;
  const cJSON *soak = cJSON_GetObjectItemCaseSensitive(root, "soak");
  if (soak && parse_soak(soak, s, err, errlen) != 0) goto err;
  int64_t dflt_deadline = 900 + (s->has_soak ? s->soak_ms / 1000 : 0);
  if (get_int(root, "", "deadline_s", 10, 7 * 86400, 0, dflt_deadline, &s->deadline_s, err, errlen) != 0 ||
      get_int(root, "", "recovery_timeout_s", 5, 3600, 0, 120, &s->recovery_timeout_s, err, errlen) != 0)
    goto err;
  const cJSON *faults = cJSON_GetObjectItemCaseSensitive(root, "faults");
  if (faults) {
    if (!cJSON_IsArray(faults)) {
      fail(err, errlen, "faults: must be a list");
      goto err;
    }
    int n = cJSON_GetArraySize(faults);
    if (n > TG_CHAOS_MAX_FAULTS) {
      fail(err, errlen, "faults: at most %d, got %d", TG_CHAOS_MAX_FAULTS, n);
      goto err;
    }
    s->faults = calloc((size_t)n + 1, sizeof *s->faults);
    if (!s->faults) {
      fail(err, errlen, "out of memory");
      goto err;
    }
    for (const cJSON *f = faults->child; f; f = f->next, s->n_faults++)
      if (parse_fault(f, s, s->n_faults, err, errlen) != 0) goto err;
  }
  cJSON_Delete(root);
  return s;
err:
  cJSON_Delete(root);
  tg_chaos_scenario_free(s);
  return NULL;
}

tg_chaos_scenario *tg_chaos_scenario_load(const char *path, int attach, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fail(err, errlen, "%s: %s", path, strerror(errno));
    return NULL;
  }
  char *buf = malloc(TG_CHAOS_MAX_FILE_BYTES + 1);
  size_t n = buf ? fread(buf, 1, TG_CHAOS_MAX_FILE_BYTES + 1, f) : 0;
  int bad = !buf || ferror(f);
  fclose(f);
  tg_chaos_scenario *s = NULL;
  char why[400];
  if (bad)
    snprintf(why, sizeof why, "cannot read it");
  else if (n > TG_CHAOS_MAX_FILE_BYTES)
    snprintf(why, sizeof why, "larger than %d bytes", TG_CHAOS_MAX_FILE_BYTES);
  else
    s = tg_chaos_scenario_parse(buf, n, attach, why, sizeof why);
  free(buf);
  if (!s) fail(err, errlen, "%s: %s", path, why);
  return s;
}

void tg_chaos_scenario_free(tg_chaos_scenario *s) {
  if (!s) return;
  free(s->faults);
  free(s);
}
