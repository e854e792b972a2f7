/* NIC checks over sysfs; what is read and why is in nic.h.
 *
 * Every check reads each interface's files once (bounded reads), appends a
 * sample {time, carrier_changes, errors, drops} to the interface's ring, and
 * compares the newest sample with the oldest one still inside the window:
 * the difference is how much each counter rose within the window. A counter
 * that goes backwards (driver reload, interface re-created) restarts the
 * history instead of producing a huge rise. */
#include "agent/health/nic.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/health/textfile.h"

typedef struct {
  int64_t t_ms;
  uint64_t carrier_changes, errors, drops;
} sample;

typedef struct {
  char name[TG_NIC_NAME_LEN];
  int configured; /* named in the configuration: checked even when absent */
  sample ring[TG_NIC_HISTORY];
  size_t head, len; /* ring[head] is the oldest of len samples */
} link_state;

struct tg_nic {
  char *root;
  tg_nic_config cfg; /* interfaces points at nothing; names live in links */
  link_state links[TG_NIC_MAX_LINKS];
  size_t n_links;
};

/* snprintf that says whether the whole path fit. */
static int path_of(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int path_of(char *buf, size_t cap, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, cap, fmt, ap);
  va_end(ap);
  return n >= 0 && (size_t)n < cap ? 0 : -ENAMETOOLONG;
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int valid_name(const char *name) {
  size_t len = strlen(name);
  return len > 0 && len < TG_NIC_NAME_LEN && strchr(name, '/') == NULL && strcmp(name, ".") != 0 &&
         strcmp(name, "..") != 0;
}

/* Names are validated shorter than TG_NIC_NAME_LEN; cut anyway. */
static void copy_name(char *dst, const char *src) {
  size_t len = strnlen(src, TG_NIC_NAME_LEN - 1);
  memcpy(dst, src, len);
  dst[len] = '\0';
}

static link_state *find_link(tg_nic *nic, const char *name) {
  for (size_t i = 0; i < nic->n_links; i++)
    if (strcmp(nic->links[i].name, name) == 0) return &nic->links[i];
  return NULL;
}

static link_state *add_link(tg_nic *nic, const char *name, int configured) {
  if (nic->n_links == TG_NIC_MAX_LINKS) return NULL;
  link_state *l = &nic->links[nic->n_links++];
  memset(l, 0, sizeof *l);
  copy_name(l->name, name);
  l->configured = configured;
  return l;
}

tg_nic *tg_nic_new(const tg_nic_config *cfg, char *err, size_t errlen) {
  tg_nic *nic = calloc(1, sizeof *nic);
  if (nic == NULL) {
    snprintf(err, errlen, "out of memory");
    goto err;
  }
  nic->cfg = *cfg;
  nic->cfg.interfaces = NULL;
  nic->root = strdup(cfg->sysfs_root != NULL ? cfg->sysfs_root : "/sys");
  if (nic->root == NULL) {
    snprintf(err, errlen, "out of memory");
    goto err;
  }
  if (nic->cfg.window_ms == 0) nic->cfg.window_ms = 60000;
  if (nic->cfg.flap_changes == 0) nic->cfg.flap_changes = 4;
  if (nic->cfg.errors_per_window == 0) nic->cfg.errors_per_window = 10;
  if (nic->cfg.drops_per_window == 0) nic->cfg.drops_per_window = 1000;
  if (cfg->n_interfaces > TG_NIC_MAX_LINKS) {
    snprintf(err, errlen, "%zu interfaces configured; at most %d are checked", cfg->n_interfaces,
             TG_NIC_MAX_LINKS);
    goto err;
  }
  for (size_t i = 0; i < cfg->n_interfaces; i++) {
    const char *name = cfg->interfaces[i];
    if (name == NULL || !valid_name(name)) {
      snprintf(err, errlen, "bad interface name \"%s\"", name != NULL ? name : "(null)");
      goto err;
    }
    if (find_link(nic, name) == NULL) add_link(nic, name, 1);
  }
  nic->cfg.n_interfaces = nic->n_links;
  return nic;
err:
  tg_nic_free(nic);
  return NULL;
}

void tg_nic_free(tg_nic *nic) {
  if (nic == NULL) return;
  free(nic->root);
  free(nic);
}

/* Adds every physical interface not yet known (auto mode only). */
static void discover(tg_nic *nic, int *truncated) {
  char path[PATH_MAX];
  if (path_of(path, sizeof path, "%s/class/net", nic->root) != 0) return;
  DIR *d = opendir(path);
  if (d == NULL) return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!valid_name(e->d_name) || find_link(nic, e->d_name) != NULL) continue;
    if (path_of(path, sizeof path, "%s/class/net/%s/device", nic->root, e->d_name) != 0 ||
        access(path, F_OK) != 0)
      continue; /* virtual: no hardware behind it */
    if (add_link(nic, e->d_name, 0) == NULL) *truncated = 1;
  }
  closedir(d);
}

static uint64_t read_counter(const char *root, const char *ifname, const char *file) {
  char path[PATH_MAX];
  uint64_t v = 0;
  if (path_of(path, sizeof path, "%s/class/net/%s/%s", root, ifname, file) == 0 &&
      tg_textfile_read_u64(path, &v) == 0)
    return v;
  return 0;
}

/* The oldest sample within the window, after appending `now`. */
static const sample *push_sample(link_state *l, const sample *now, uint32_t window_ms) {
  if (l->len > 0) {
    const sample *last = &l->ring[(l->head + l->len - 1) % TG_NIC_HISTORY];
    if (now->carrier_changes < last->carrier_changes || now->errors < last->errors ||
        now->drops < last->drops)
      l->len = 0; /* counters went back: a new interface under an old name */
  }
  if (l->len == TG_NIC_HISTORY) {
    l->head = (l->head + 1) % TG_NIC_HISTORY;
    l->len--;
  }
  l->ring[(l->head + l->len) % TG_NIC_HISTORY] = *now;
  l->len++;
  while (l->len > 1 && l->ring[l->head].t_ms < now->t_ms - (int64_t)window_ms) {
    l->head = (l->head + 1) % TG_NIC_HISTORY;
    l->len--;
  }
  return &l->ring[l->head];
}

static int is_down_state(const char *operstate) {
  return strcmp(operstate, "down") == 0 || strcmp(operstate, "lowerlayerdown") == 0 ||
         strcmp(operstate, "notpresent") == 0;
}

static void check_link(tg_nic *nic, link_state *l, int64_t now_ms, tg_nic_link *out) {
  char path[PATH_MAX];
  uint64_t v;
  memset(out, 0, sizeof *out);
  copy_name(out->name, l->name);
  out->carrier = -1;
  if (path_of(path, sizeof path, "%s/class/net/%s", nic->root, l->name) != 0 || !is_dir(path)) {
    snprintf(out->operstate, sizeof out->operstate, "notpresent");
    out->down = 1;
    l->len = 0;
    return;
  }
  out->present = 1;
  if (path_of(path, sizeof path, "%s/class/net/%s/operstate", nic->root, l->name) != 0 ||
      tg_textfile_read(path, out->operstate, sizeof out->operstate) != 0 ||
      out->operstate[0] == '\0')
    snprintf(out->operstate, sizeof out->operstate, "unknown");
  /* carrier fails to read (EINVAL) while the interface is administratively
   * down; operstate says "down" then. */
  if (path_of(path, sizeof path, "%s/class/net/%s/carrier", nic->root, l->name) == 0 &&
      tg_textfile_read_u64(path, &v) == 0)
    out->carrier = v != 0;
  out->carrier_changes = read_counter(nic->root, l->name, "carrier_changes");
  out->rx_errors = read_counter(nic->root, l->name, "statistics/rx_errors");
  out->tx_errors = read_counter(nic->root, l->name, "statistics/tx_errors");
  out->rx_dropped = read_counter(nic->root, l->name, "statistics/rx_dropped");
  out->tx_dropped = read_counter(nic->root, l->name, "statistics/tx_dropped");
  out->down = out->carrier == 0 || is_down_state(out->operstate);

  sample now = {now_ms, out->carrier_changes, out->rx_errors + out->tx_errors,
                out->rx_dropped + out->tx_dropped};
  const sample *base = push_sample(l, &now, nic->cfg.window_ms);
  out->carrier_changes_in_window = now.carrier_changes - base->carrier_changes;
  out->errors_in_window = now.errors - base->errors;
  out->drops_in_window = now.drops - base->drops;
  out->flapping = out->carrier_changes_in_window >= nic->cfg.flap_changes;
  out->errors_rising = (nic->cfg.errors_per_window != UINT64_MAX &&
                        out->errors_in_window >= nic->cfg.errors_per_window) ||
                       (nic->cfg.drops_per_window != UINT64_MAX &&
                        out->drops_in_window >= nic->cfg.drops_per_window);
}

/* "4: ACTIVE" -> 4; ACTIVE (4) and ACTIVE_DEFER (5) carry traffic. */
static int port_active(const char *state) {
  uint64_t num = 0;
  char digits[16];
  size_t len = strcspn(state, ":");
  if (len > 0 && len < sizeof digits) {
    memcpy(digits, state, len);
    digits[len] = '\0';
    if (tg_textfile_parse_u64(digits, &num) == 0) return num == 4 || num == 5;
  }
  return strstr(state, "ACTIVE") != NULL;
}

static void check_device_ports(tg_nic *nic, const char *dev, tg_nic_report *out) {
  char path[PATH_MAX];
  if (path_of(path, sizeof path, "%s/class/infiniband/%s/ports", nic->root, dev) != 0) return;
  DIR *d = opendir(path);
  if (d == NULL) return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    uint64_t port;
    if (e->d_name[0] == '.' || tg_textfile_parse_u64(e->d_name, &port) != 0 || port > UINT32_MAX)
      continue;
    if (out->n_ports == TG_NIC_MAX_PORTS) {
      out->truncated = 1;
      break;
    }
    tg_nic_port *p = &out->ports[out->n_ports];
    memset(p, 0, sizeof *p);
    copy_name(p->device, dev);
    p->port = (uint32_t)port;
    if (path_of(path, sizeof path, "%s/class/infiniband/%s/ports/%s/state", nic->root, dev,
                e->d_name) != 0 ||
        tg_textfile_read(path, p->state, sizeof p->state) != 0)
      continue; /* no state file: not a port */
    if (path_of(path, sizeof path, "%s/class/infiniband/%s/ports/%s/phys_state", nic->root, dev,
                e->d_name) == 0)
      tg_textfile_read(path, p->phys_state, sizeof p->phys_state);
    p->active = port_active(p->state);
    out->n_ports++;
  }
  closedir(d);
}

static void check_rdma(tg_nic *nic, tg_nic_report *out) {
  char path[PATH_MAX];
  if (path_of(path, sizeof path, "%s/class/infiniband", nic->root) != 0) return;
  DIR *d = opendir(path);
  if (d == NULL) return; /* no RDMA devices on this node */
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (valid_name(e->d_name)) check_device_ports(nic, e->d_name, out);
  closedir(d);
}

int tg_nic_check(tg_nic *nic, int64_t now_ms, tg_nic_report *out, char *err, size_t errlen) {
  char path[PATH_MAX];
  memset(out, 0, sizeof *out);
  if (path_of(path, sizeof path, "%s/class/net", nic->root) != 0 || !is_dir(path)) {
    snprintf(err, errlen, "%s/class/net: not a directory (is sysfs mounted?)", nic->root);
    return -1;
  }
  if (nic->cfg.n_interfaces == 0) discover(nic, &out->truncated);
  for (size_t i = 0; i < nic->n_links; i++)
    check_link(nic, &nic->links[i], now_ms, &out->links[out->n_links++]);
  if (!nic->cfg.skip_rdma) check_rdma(nic, out);
  return 0;
}
