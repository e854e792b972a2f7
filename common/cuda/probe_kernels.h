/* A device kernel the GPU probe runs to prove that nvcc output links into
 * our C code and executes: y = a*x + y over n floats already on the device. */
#ifndef TG_PROBE_KERNELS_H
#define TG_PROBE_KERNELS_H

#ifdef __cplusplus
extern "C" {
#endif

/* Launches on the default stream; returns a cudaError_t as int. */
int tg_probe_saxpy(int n, float a, const float *x_dev, float *y_dev);

#ifdef __cplusplus
}
#endif

#endif
