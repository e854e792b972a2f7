/* The status helpers every part of trainer/comm shares (the front, both
 * backends, the store exchange); declared in comm.h and comm_backend.h. */
#include <stdarg.h>
#include <stdio.h>

#include "trainer/comm/comm_backend.h"

tg_comm_code tg_comm_status_set(tg_comm_status *st, tg_comm_code code, const char *fmt, ...) {
  if (st) {
    va_list ap;
    va_start(ap, fmt);
    st->code = code;
    vsnprintf(st->message, sizeof st->message, fmt, ap);
    va_end(ap);
  }
  return code;
}

const char *tg_comm_code_name(tg_comm_code code) {
  switch (code) {
    case TG_COMM_OK: return "OK";
    case TG_COMM_TIMEOUT: return "TIMEOUT";
    case TG_COMM_ABORTED: return "ABORTED";
    case TG_COMM_ERROR: return "ERROR";
  }
  return "UNKNOWN";
}

size_t tg_comm_dtype_size(tg_comm_dtype dtype) {
  switch (dtype) {
    case TG_COMM_FLOAT32: return 4;
    case TG_COMM_INT64: return 8;
  }
  return 0;
}
