/* Builds and edits a fake sysfs tree for the NIC checks (nic.h).
 *
 * Tests, fake nodes and tg-chaos point tg_nic_config.sysfs_root at a
 * directory of their own (for a fake node, beside its fake GPUs: DIR/sys)
 * and change link state by rewriting files, exactly as the kernel would
 * show it. Only the files nic.c reads are made:
 *
 *   ROOT/class/net/IF/device/                  (marks the interface physical)
 *   ROOT/class/net/IF/{carrier,operstate,carrier_changes}
 *   ROOT/class/net/IF/statistics/{rx,tx}_{errors,dropped}
 *   ROOT/class/infiniband/DEV/ports/N/{state,phys_state}
 *
 * Writes replace files atomically. */
#ifndef TG_HEALTH_NIC_FAKE_H
#define TG_HEALTH_NIC_FAKE_H

#include <stdint.h>

/* Adds a healthy physical interface: carrier 1, operstate up, every counter
 * 0. Returns 0 or -errno. */
int tg_nic_fake_add_link(const char *root, const char *ifname);

/* Replaces ROOT/class/net/IF/FILE with value; file is a name relative to the
 * interface directory such as "carrier" or "statistics/rx_errors" (no ".."
 * components). Returns 0 or -errno (-EINVAL for a bad name). */
int tg_nic_fake_set(const char *root, const char *ifname, const char *file, const char *value);

/* Same, with a number. */
int tg_nic_fake_set_u64(const char *root, const char *ifname, const char *file, uint64_t value);

/* Creates or updates RDMA port DEV/N with a state such as "4: ACTIVE" or
 * "1: DOWN" (phys_state follows: "5: LinkUp" when the state is ACTIVE, else
 * "3: Disabled"). Returns 0 or -errno. */
int tg_nic_fake_set_rdma_port(const char *root, const char *dev, uint32_t port, const char *state);

#endif
