/* Text for the library's status codes, for the one log line a caller writes. */
#include "trainer/model/status.h"

const char *tg_model_status_text(tg_model_status status) {
  switch (status) {
  case TG_MODEL_OK: return "ok";
  case TG_MODEL_EINVAL: return "invalid argument";
  case TG_MODEL_ENOMEM: return "out of memory";
  case TG_MODEL_ENONFINITE: return "non-finite value (the run diverged)";
  case TG_MODEL_ERANGE: return "value out of fixed-point range";
  case TG_MODEL_EOVERFLOW: return "fixed-point sum overflow";
  case TG_MODEL_EIO: return "i/o error";
  case TG_MODEL_EDEVICE: return "GPU error";
  }
  return "unknown status";
}
