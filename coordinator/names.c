/* Enum names without their prefixes (see names.h). */
#include "coordinator/names.h"

#include <string.h>

#include "proto/tardigrade/v1/common.pb-c.h"

static const char *enum_name(const ProtobufCEnumDescriptor *d, int value, const char *prefix) {
  const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(d, value);
  if (!v) return "UNKNOWN";
  size_t n = strlen(prefix);
  return strncmp(v->name, prefix, n) == 0 ? v->name + n : v->name;
}

const char *tg_fault_kind_name(int kind) {
  return enum_name(&tardigrade__v1__fault_kind__descriptor, kind, "FAULT_");
}

const char *tg_severity_name(int severity) {
  return enum_name(&tardigrade__v1__severity__descriptor, severity, "SEVERITY_");
}

const char *tg_node_state_name(int state) {
  return enum_name(&tardigrade__v1__node_state__descriptor, state, "NODE_");
}
