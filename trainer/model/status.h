/* Status codes shared by the reference model library (trainer/model).
 *
 * Every function of the library that can fail returns one of these and
 * leaves the decision to its caller (the trainer logs it, skips a step or
 * gives up); nothing in the library aborts or prints. One enum for the whole
 * library so that a trainer step, which strings calls of several modules
 * together, can pass any failure up unchanged. */
#ifndef TG_MODEL_STATUS_H
#define TG_MODEL_STATUS_H

typedef enum {
  TG_MODEL_OK = 0,
  TG_MODEL_EINVAL = -1,    /* NULL argument, bad config, range outside the array */
  TG_MODEL_ENOMEM = -2,    /* an allocation failed (or its size overflowed) */
  TG_MODEL_ENONFINITE = -3, /* a gradient or loss is NaN or infinite: the run diverged */
  TG_MODEL_ERANGE = -4,    /* a value is too large for the fixed-point format */
  TG_MODEL_EOVERFLOW = -5, /* an int64 sum would overflow: too many terms added */
  TG_MODEL_EIO = -6,       /* a file could not be read */
  TG_MODEL_EDEVICE = -7,   /* a CUDA or cuBLAS call failed (trainer/model/cuda says which) */
} tg_model_status;

/* A short constant description ("invalid argument"), never NULL. */
const char *tg_model_status_text(tg_model_status status);

#endif
