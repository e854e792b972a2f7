/* Names of the API's enums for people and for JSON: the value's name in
 * the .proto without its prefix (FAULT_TRAINER_EXIT -> TRAINER_EXIT,
 * SEVERITY_ERROR -> ERROR, NODE_ACTIVE -> ACTIVE), or "UNKNOWN" for a value
 * the API does not define. tgctl and the dashboard say the same words. */
#ifndef TG_COORDINATOR_NAMES_H
#define TG_COORDINATOR_NAMES_H

const char *tg_fault_kind_name(int kind);
const char *tg_severity_name(int severity);
const char *tg_node_state_name(int state);

#endif
