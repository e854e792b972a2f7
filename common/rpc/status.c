/* Status codes and their names.
 *
 * Every outcome in common/rpc is a tg_rpc_status: a gRPC code (the numbers
 * are gRPC's, so they pass through the wire unchanged) and one line of text
 * that says what went wrong. Callers log the line as is, so it is formatted
 * once, here. */
#include <stdarg.h>
#include <stdio.h>

#include "common/rpc/rpc.h"

static const char *const code_names[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *tg_rpc_code_name(tg_rpc_code code) {
  if ((int)code < 0 || (size_t)code >= sizeof(code_names) / sizeof(code_names[0])) {
    return "UNKNOWN_CODE";
  }
  return code_names[code];
}

tg_rpc_code tg_rpc_status_set(tg_rpc_status *st, tg_rpc_code code, const char *fmt, ...) {
  if (st == NULL) return code;
  st->code = code;
  st->message[0] = '\0';
  if (fmt != NULL) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->message, sizeof(st->message), fmt, ap);
    va_end(ap);
  }
  return code;
}
