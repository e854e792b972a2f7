/* A fake sysfs tree for the NIC checks; see nic_fake.h. */
#include "agent/health/nic_fake.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "agent/health/textfile.h"

static int fit(int n, size_t cap) {
  return n >= 0 && (size_t)n < cap ? 0 : -ENAMETOOLONG;
}

static int safe_name(const char *name) {
  return name[0] != '\0' && name[0] != '/' && strstr(name, "..") == NULL;
}

int tg_nic_fake_set(const char *root, const char *ifname, const char *file, const char *value) {
  char path[PATH_MAX];
  char line[256];
  if (!safe_name(ifname) || strchr(ifname, '/') != NULL || !safe_name(file)) return -EINVAL;
  int rc = fit(snprintf(path, sizeof path, "%s/class/net/%s/%s", root, ifname, file), sizeof path);
  if (rc == 0) rc = fit(snprintf(line, sizeof line, "%s\n", value), sizeof line);
  if (rc == 0) rc = tg_textfile_write(path, line);
  return rc;
}

int tg_nic_fake_set_u64(const char *root, const char *ifname, const char *file, uint64_t value) {
  char text[32];
  snprintf(text, sizeof text, "%" PRIu64, value);
  return tg_nic_fake_set(root, ifname, file, text);
}

int tg_nic_fake_add_link(const char *root, const char *ifname) {
  static const char *const files[][2] = {
      {"carrier", "1"},
      {"operstate", "up"},
      {"carrier_changes", "0"},
      {"statistics/rx_errors", "0"},
      {"statistics/tx_errors", "0"},
      {"statistics/rx_dropped", "0"},
      {"statistics/tx_dropped", "0"},
  };
  char path[PATH_MAX];
  if (!safe_name(ifname) || strchr(ifname, '/') != NULL) return -EINVAL;
  int rc = fit(snprintf(path, sizeof path, "%s/class/net/%s/device", root, ifname), sizeof path);
  if (rc == 0) rc = tg_textfile_mkdirs(path);
  if (rc == 0)
    rc = fit(snprintf(path, sizeof path, "%s/class/net/%s/statistics", root, ifname), sizeof path);
  if (rc == 0) rc = tg_textfile_mkdirs(path);
  for (size_t i = 0; rc == 0 && i < sizeof files / sizeof files[0]; i++)
    rc = tg_nic_fake_set(root, ifname, files[i][0], files[i][1]);
  return rc;
}

int tg_nic_fake_set_rdma_port(const char *root, const char *dev, uint32_t port, const char *state) {
  char dir[PATH_MAX];
  char path[PATH_MAX + 16];
  char line[128];
  if (!safe_name(dev) || strchr(dev, '/') != NULL) return -EINVAL;
  int rc = fit(snprintf(dir, sizeof dir, "%s/class/infiniband/%s/ports/%" PRIu32, root, dev, port),
               sizeof dir);
  if (rc == 0) rc = tg_textfile_mkdirs(dir);
  if (rc == 0) rc = fit(snprintf(line, sizeof line, "%s\n", state), sizeof line);
  if (rc == 0) rc = fit(snprintf(path, sizeof path, "%s/state", dir), sizeof path);
  if (rc == 0) rc = tg_textfile_write(path, line);
  int active = strstr(state, "ACTIVE") != NULL;
  if (rc == 0) rc = fit(snprintf(path, sizeof path, "%s/phys_state", dir), sizeof path);
  if (rc == 0) rc = tg_textfile_write(path, active ? "5: LinkUp\n" : "3: Disabled\n");
  return rc;
}
