/* A fake GPU backend (gpu.h) driven by files, for tests and tg-chaos.
 *
 * GPU faults cannot be caused on demand on real hardware, and CI has no
 * GPU. So the agent can be started on a directory of fake devices instead of
 * NVML, and anything that can write a file (a unit test, tg-chaos, an
 * operator with echo) injects a fault into the running agent. Every value is
 * read again at each query; only the device count (at open) and the XID read
 * positions are kept.
 *
 * Directory format (DIR is what tg_gpu_fake_open gets):
 *
 *   DIR/count             optional: the number of devices, decimal. Without
 *                         it, devices are DIR/gpu0, DIR/gpu1, ... up to the
 *                         first missing one. Read once, at open.
 *   DIR/gpuN/             device N. If it disappears after open, device N
 *                         reads as lost.
 *
 * Files in DIR/gpuN/, each one value on its first line (surrounding
 * whitespace ignored, at most 4 KiB read). A missing file, or one whose
 * content does not parse, means the healthy default in brackets:
 *
 *   uuid                  text [GPU-fake-0000-0000-0000-00000000000N]
 *   name                  text [Tardigrade fake GPU]
 *   temperature_c         decimal degrees Celsius [40]
 *   throttle              a bitmask of TG_GPU_THROTTLE_* (decimal or 0x..)
 *                         or names separated by spaces, commas or '|':
 *                         "thermal", "power", "hw_slowdown"; "none" [none]
 *   ecc_uncorrectable     volatile uncorrectable ECC count [0]
 *   row_remap_failure     0 or 1 [0]
 *   row_remap_pending     0 or 1 [0]
 *   pcie_width            current link width in lanes [16]
 *   pcie_width_max        maximum link width [16]
 *   pcie_gen              current link generation [5]
 *   pcie_gen_max          maximum link generation [5]
 *   lost                  0 or 1: the device fell off the bus [0]
 *   hang_ms               a status query of this device blocks this many
 *                         milliseconds (at most 600000), like a hung NVML
 *                         call; writing 0 releases a blocked query within
 *                         10 ms [0]
 *   xid                   XID events, one decimal XID per line, appended.
 *                         Each complete line (ending in '\n') is delivered
 *                         once. Lines already there when the backend opens
 *                         are not delivered (NVML too reports only events
 *                         after registration). Append only; truncating the
 *                         file starts reading from its beginning again.
 *                         Malformed lines are skipped.
 *
 * Writers should replace value files atomically (the helpers below write a
 * temporary file and rename it) so a query never sees a half-written value,
 * and append XIDs with one write per line (tg_gpu_fake_inject_xid).
 *
 * The NIC checks (nic.h) take a sysfs root; a fake node keeps its fake
 * sysfs tree beside this one, e.g. DIR/sys (see nic_fake.h). */
#ifndef TG_HEALTH_GPU_FAKE_H
#define TG_HEALTH_GPU_FAKE_H

#include <stddef.h>
#include <stdint.h>

#include "agent/health/gpu.h"

/* Opens the fake devices under dir. NULL with a reason in err when dir is
 * not a directory. */
tg_gpu *tg_gpu_fake_open(const char *dir, char *err, size_t errlen);

/* Creates dir (if missing) holding n healthy devices: DIR/count and every
 * file above with its default value, and an empty xid file. Returns 0 or
 * -errno. */
int tg_gpu_fake_create(const char *dir, uint32_t n);

/* Replaces DIR/gpuINDEX/FILE with value (atomically). `file` is a plain
 * name from the list above. Returns 0 or -errno (-EINVAL for a bad name). */
int tg_gpu_fake_set(const char *dir, uint32_t index, const char *file, const char *value);

/* Appends one XID event for device index. Returns 0 or -errno. */
int tg_gpu_fake_inject_xid(const char *dir, uint32_t index, uint32_t xid);

/* Shorthands for tg_gpu_fake_set. */
int tg_gpu_fake_set_ecc(const char *dir, uint32_t index, uint64_t uncorrectable);
int tg_gpu_fake_set_temperature(const char *dir, uint32_t index, int32_t celsius);
int tg_gpu_fake_set_lost(const char *dir, uint32_t index, int lost);

#endif
