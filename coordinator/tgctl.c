/* tgctl: the operator's command line for a Tardigrade job.
 *
 * It speaks the coordinator's Operator service (finding the leader among
 * the given coordinators) and prints either a table for people or JSON
 * (--json) for scripts. Exit codes: 0 done, 1 the coordinator refused or
 * failed (the reason is printed), 2 bad usage. */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/config/config.h"
#include "coordinator/client.h"
#include "coordinator/names.h"
#include "proto/tardigrade/v1/coordinator.pb-c.h"

static const char usage[] =
    "usage: tgctl [--coordinator ADDR[,ADDR...]] [--json] COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  status                  the job's world, generation and node counts\n"
    "  nodes                   every node with its state, health and last heartbeat\n"
    "  faults [--limit N]      the fault log, newest first\n"
    "  drain NODE              take NODE out of the world now and keep it out\n"
    "  cordon NODE             keep NODE out of new worlds (the current one stays)\n"
    "  uncordon NODE           undo drain or cordon\n"
    "  quarantine clear NODE   end NODE's quarantine now\n"
    "\n"
    "Examples:\n"
    "  tgctl --coordinator 127.0.0.1:7070 status\n"
    "  tgctl --coordinator 10.0.0.1:7070,10.0.0.2:7070 --json nodes";

static char coordinators[1024] = "127.0.0.1:7070";
static int json_out;
static int64_t limit;
static char reason[256];
static int64_t timeout_ms = 5000;
static char tls_ca[512], tls_cert[512], tls_key[512], tls_name[256];


static void print_json(cJSON *j) {
  char *s = cJSON_Print(j);
  if (s) puts(s);
  free(s);
  cJSON_Delete(j);
}

static const char *ago(int64_t unix_ms, char *buf, size_t len) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  if (unix_ms <= 0) return "never";
  snprintf(buf, len, "%.1fs ago", (double)(now - unix_ms) / 1000.0);
  return buf;
}

static cJSON *world_json(const Tardigrade__V1__World *w) {
  cJSON *j = cJSON_CreateObject();
  if (!w) return j;
  cJSON_AddNumberToObject(j, "generation", (double)w->generation);
  cJSON_AddNumberToObject(j, "world_size", w->world_size);
  cJSON_AddNumberToObject(j, "slots_per_node", w->slots_per_node);
  cJSON_AddStringToObject(j, "reason", w->reason);
  cJSON_AddNumberToObject(j, "resume_step", (double)w->resume_step);
  cJSON_AddNumberToObject(j, "formed_unix_ms", (double)w->formed_unix_ms);
  cJSON *nodes = cJSON_AddArrayToObject(j, "nodes");
  for (size_t i = 0; i < w->n_nodes; i++) cJSON_AddItemToArray(nodes, cJSON_CreateString(w->nodes[i]->node_id));
  return j;
}

static int cmd_status(tg_coord_client *cl) {
  Tardigrade__V1__StatusRequest req = TARDIGRADE__V1__STATUS_REQUEST__INIT;
  ProtobufCMessage *m = NULL;
  tg_rpc_status st = {0};
  if (tg_coord_client_call(cl, "/tardigrade.v1.Operator/Status", &req.base,
                           &tardigrade__v1__status_response__descriptor, &m, timeout_ms, &st) != TG_RPC_OK) {
    fprintf(stderr, "tgctl: status: %s: %s\n", tg_rpc_code_name(st.code), st.message);
    return 1;
  }
  Tardigrade__V1__StatusResponse *r = (Tardigrade__V1__StatusResponse *)m;
  if (json_out) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "job_id", r->job_id);
    cJSON_AddStringToObject(j, "leader", r->leader_id);
    cJSON_AddStringToObject(j, "coordinator", tg_coord_client_target(cl));
    cJSON_AddItemToObject(j, "world", world_json(r->world));
    cJSON_AddNumberToObject(j, "nodes_total", r->nodes_total);
    cJSON_AddNumberToObject(j, "nodes_active", r->nodes_active);
    cJSON_AddNumberToObject(j, "nodes_spare", r->nodes_spare);
    cJSON_AddNumberToObject(j, "nodes_unhealthy", r->nodes_unhealthy);
    cJSON_AddNumberToObject(j, "committed_step", (double)r->committed_step);
    print_json(j);
  } else {
    printf("job          %s\n", r->job_id);
    printf("leader       %s (at %s)\n", r->leader_id, tg_coord_client_target(cl));
    if (r->world) {
      printf("generation   %" PRIu64 " (%s)\n", r->world->generation, r->world->reason);
      printf("world        %u ranks on %zu nodes, %u slots each\n", r->world->world_size,
             r->world->n_nodes, r->world->slots_per_node);
    } else {
      printf("generation   none yet (waiting for nodes)\n");
    }
    printf("nodes        %u total, %u active, %u spare, %u unhealthy or lost\n", r->nodes_total,
           r->nodes_active, r->nodes_spare, r->nodes_unhealthy);
    printf("committed    step %" PRIu64 "\n", r->committed_step);
  }
  protobuf_c_message_free_unpacked(m, NULL);
  return 0;
}

static int cmd_nodes(tg_coord_client *cl) {
  Tardigrade__V1__ListNodesRequest req = TARDIGRADE__V1__LIST_NODES_REQUEST__INIT;
  ProtobufCMessage *m = NULL;
  tg_rpc_status st = {0};
  if (tg_coord_client_call(cl, "/tardigrade.v1.Operator/ListNodes", &req.base,
                           &tardigrade__v1__list_nodes_response__descriptor, &m, timeout_ms, &st) != TG_RPC_OK) {
    fprintf(stderr, "tgctl: nodes: %s: %s\n", tg_rpc_code_name(st.code), st.message);
    return 1;
  }
  Tardigrade__V1__ListNodesResponse *r = (Tardigrade__V1__ListNodesResponse *)m;
  cJSON *arr = json_out ? cJSON_CreateArray() : NULL;
  if (!json_out)
    printf("%-24s %-12s %-8s %-22s %-6s %s\n", "NODE", "STATE", "HEALTHY", "ADDRESS", "FAULTS",
           "LAST HEARTBEAT");
  for (size_t i = 0; i < r->n_nodes; i++) {
    Tardigrade__V1__NodeStatus *n = r->nodes[i];
    const char *id = n->info ? n->info->node_id : "?";
    const char *addr = n->info ? n->info->address : "";
    int healthy = n->health ? n->health->healthy : 0;
    if (json_out) {
      cJSON *j = cJSON_CreateObject();
      cJSON_AddStringToObject(j, "node_id", id);
      cJSON_AddStringToObject(j, "state", tg_node_state_name(n->state));
      cJSON_AddBoolToObject(j, "healthy", healthy);
      cJSON_AddStringToObject(j, "address", addr);
      cJSON_AddNumberToObject(j, "slots", n->info ? n->info->slots : 0);
      cJSON_AddNumberToObject(j, "fault_count", n->fault_count);
      cJSON_AddNumberToObject(j, "last_heartbeat_unix_ms", (double)n->last_heartbeat_unix_ms);
      cJSON_AddNumberToObject(j, "quarantined_until_unix_ms", (double)n->quarantined_until_unix_ms);
      cJSON_AddItemToArray(arr, j);
    } else {
      char buf[32];
      printf("%-24s %-12s %-8s %-22s %-6u %s\n", id, tg_node_state_name(n->state), healthy ? "yes" : "no",
             addr, n->fault_count, ago(n->last_heartbeat_unix_ms, buf, sizeof buf));
    }
  }
  if (json_out) print_json(arr);
  protobuf_c_message_free_unpacked(m, NULL);
  return 0;
}

static int cmd_faults(tg_coord_client *cl) {
  Tardigrade__V1__ListFaultsRequest req = TARDIGRADE__V1__LIST_FAULTS_REQUEST__INIT;
  req.limit = (uint32_t)limit;
  ProtobufCMessage *m = NULL;
  tg_rpc_status st = {0};
  if (tg_coord_client_call(cl, "/tardigrade.v1.Operator/ListFaults", &req.base,
                           &tardigrade__v1__list_faults_response__descriptor, &m, timeout_ms, &st) != TG_RPC_OK) {
    fprintf(stderr, "tgctl: faults: %s: %s\n", tg_rpc_code_name(st.code), st.message);
    return 1;
  }
  Tardigrade__V1__ListFaultsResponse *r = (Tardigrade__V1__ListFaultsResponse *)m;
  cJSON *arr = json_out ? cJSON_CreateArray() : NULL;
  if (!json_out)
    printf("%-20s %-18s %-8s %-16s %-5s %-4s %s\n", "ID", "KIND", "SEVERITY", "NODE", "RANK", "GEN",
           "DETAIL");
  for (size_t i = 0; i < r->n_faults; i++) {
    Tardigrade__V1__Fault *f = r->faults[i];
    if (json_out) {
      cJSON *j = cJSON_CreateObject();
      cJSON_AddStringToObject(j, "fault_id", f->fault_id);
      cJSON_AddStringToObject(j, "kind", tg_fault_kind_name(f->kind));
      cJSON_AddStringToObject(j, "severity", tg_severity_name(f->severity));
      cJSON_AddStringToObject(j, "node_id", f->node_id);
      cJSON_AddNumberToObject(j, "rank", f->rank);
      cJSON_AddNumberToObject(j, "generation", (double)f->generation);
      cJSON_AddStringToObject(j, "detail", f->detail);
      cJSON_AddNumberToObject(j, "detected_unix_ms", (double)f->detected_unix_ms);
      cJSON_AddNumberToObject(j, "exit_code", f->exit_code);
      cJSON_AddNumberToObject(j, "signal", f->signal);
      cJSON_AddNumberToObject(j, "collective_seq", (double)f->collective_seq);
      cJSON_AddStringToObject(j, "component", f->component);
      cJSON_AddItemToArray(arr, j);
    } else {
      printf("%-20s %-18s %-8s %-16s %-5d %-4" PRIu64 " %s\n", f->fault_id, tg_fault_kind_name(f->kind),
             tg_severity_name(f->severity), f->node_id, f->rank, f->generation, f->detail);
    }
  }
  if (json_out) print_json(arr);
  protobuf_c_message_free_unpacked(m, NULL);
  return 0;
}

static int cmd_node_op(tg_coord_client *cl, const char *method, const char *verb, const char *node) {
  Tardigrade__V1__NodeRequest req = TARDIGRADE__V1__NODE_REQUEST__INIT;
  req.node_id = (char *)node;
  req.reason = reason;
  char path[128];
  snprintf(path, sizeof path, "/tardigrade.v1.Operator/%s", method);
  ProtobufCMessage *m = NULL;
  tg_rpc_status st = {0};
  if (tg_coord_client_call(cl, path, &req.base, &tardigrade__v1__node_response__descriptor, &m,
                           timeout_ms, &st) != TG_RPC_OK) {
    fprintf(stderr, "tgctl: %s %s: %s: %s\n", verb, node, tg_rpc_code_name(st.code), st.message);
    return 1;
  }
  Tardigrade__V1__NodeResponse *r = (Tardigrade__V1__NodeResponse *)m;
  if (json_out) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "node_id", node);
    cJSON_AddStringToObject(j, "state", tg_node_state_name(r->state));
    print_json(j);
  } else {
    printf("%s: %s (now %s)\n", node, verb, tg_node_state_name(r->state));
  }
  protobuf_c_message_free_unpacked(m, NULL);
  return 0;
}

int main(int argc, char **argv) {
  const tg_option opts[] = {
      {"coordinator", TG_OPT_STRING, coordinators, sizeof coordinators, 0, 0,
       "coordinator addresses, comma-separated; the leader is found among them"},
      {"json", TG_OPT_BOOL, &json_out, 0, 0, 0, "print JSON instead of a table"},
      {"limit", TG_OPT_INT, &limit, 0, 0, 512, "faults: how many (0: the server's default, 100)"},
      {"reason", TG_OPT_STRING, reason, sizeof reason, 0, 0, "drain/cordon: why, for the log"},
      {"timeout-ms", TG_OPT_INT, &timeout_ms, 0, 100, 600000, "give up after this long"},
      {"tls-ca", TG_OPT_STRING, tls_ca, sizeof tls_ca, 0, 0,
       "PEM CA that verifies the coordinators (enables TLS)"},
      {"tls-cert", TG_OPT_STRING, tls_cert, sizeof tls_cert, 0, 0, "PEM client certificate (mutual TLS)"},
      {"tls-key", TG_OPT_STRING, tls_key, sizeof tls_key, 0, 0, "PEM client key (mutual TLS)"},
      {"tls-server-name", TG_OPT_STRING, tls_name, sizeof tls_name, 0, 0,
       "name to verify in the coordinators' certificates; empty: the address's host"},
  };
  char err[512];
  int n_args = 0;
  switch (tg_config_parse(opts, sizeof opts / sizeof opts[0], argc, argv, usage, &n_args, err, sizeof err)) {
  case TG_CONFIG_HELP: return 0;
  case TG_CONFIG_ERROR: fprintf(stderr, "tgctl: %s\n", err); return 2;
  case TG_CONFIG_OK: break;
  }
  if (n_args < 1) {
    fprintf(stderr, "tgctl: no command given (see --help)\n");
    return 2;
  }
  const char *cmd = argv[1];
  tg_rpc_tls tls = {tls_ca, tls_cert[0] ? tls_cert : NULL, tls_key[0] ? tls_key : NULL, 0,
                    tls_name[0] ? tls_name : NULL};
  if ((tls_cert[0] != 0) != (tls_key[0] != 0) || (tls_cert[0] && !tls_ca[0])) {
    fprintf(stderr, "tgctl: --tls-cert and --tls-key go together, with --tls-ca\n");
    return 2;
  }
  tg_coord_client *cl = tg_coord_client_new(coordinators, tls_ca[0] ? &tls : NULL, err, sizeof err);
  if (!cl) {
    fprintf(stderr, "tgctl: %s\n", err);
    return 2;
  }
  int rc = 2;
  if (strcmp(cmd, "status") == 0 && n_args == 1)
    rc = cmd_status(cl);
  else if (strcmp(cmd, "nodes") == 0 && n_args == 1)
    rc = cmd_nodes(cl);
  else if (strcmp(cmd, "faults") == 0 && n_args == 1)
    rc = cmd_faults(cl);
  else if (strcmp(cmd, "drain") == 0 && n_args == 2)
    rc = cmd_node_op(cl, "Drain", "drained", argv[2]);
  else if (strcmp(cmd, "cordon") == 0 && n_args == 2)
    rc = cmd_node_op(cl, "Cordon", "cordoned", argv[2]);
  else if (strcmp(cmd, "uncordon") == 0 && n_args == 2)
    rc = cmd_node_op(cl, "Uncordon", "uncordoned", argv[2]);
  else if (strcmp(cmd, "quarantine") == 0 && n_args == 3 && strcmp(argv[2], "clear") == 0)
    rc = cmd_node_op(cl, "ClearQuarantine", "quarantine cleared", argv[3]);
  else
    fprintf(stderr, "tgctl: unknown command or wrong arguments: '%s' (see --help)\n", cmd);
  tg_coord_client_free(cl);
  return rc;
}
