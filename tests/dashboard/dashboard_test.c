/* The coordinator's HTTP face against a real etcd, real tg-coordinator
 * processes (a leader and a standby) and simulated agents:
 *
 *   - /metrics must parse as Prometheus text format under a strict parser
 *     written here (names, labels and their escapes, HELP/TYPE once per
 *     family and before its samples, families not interleaved, histogram
 *     buckets cumulative in increasing le ending at +Inf = _count);
 *   - every /api/v1 answer must match the schema blocks in README.md, both
 *     ways: each documented field present with its type, and no field the
 *     README does not document;
 *   - a fault shows up with its detection time, gets its recovery time when
 *     a step is committed in the next world, and keeps it in the fault log
 *     after the leader dies and the standby takes over.
 *
 * Every wait has a deadline; no test asserts how long anything took. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <cmocka.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "common/clock/clock.h"
#include "proto/tardigrade/v1/common.pb-c.h"
#include "tests/harness/etcd_cluster.h"
#include "tests/harness/proc.h"
#include "tests/simagent/simagent.h"

#define WAIT_MS 20000
#define MAX_BODY (4 << 20)

static tg_etcd_cluster *etcd;
static char tmpdir[512];
static int job_counter;

/* ------------------------------------------------------------ HTTP */

/* GET path on 127.0.0.1:port; returns the status (0: no answer) and the
 * body in *body (malloc'd, NUL-terminated). */
static int http_get(int port, const char *path, char **body) {
  *body = NULL;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct timeval tv = {0, 200 * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char req[512];
  int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 || send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
    close(fd);
    return 0;
  }
  char *buf = malloc(MAX_BODY);
  size_t len = 0;
  int64_t deadline = tg_clock_mono_ms() + 5000;
  while (buf && len + 1 < MAX_BODY && tg_clock_mono_ms() < deadline) {
    ssize_t r = recv(fd, buf + len, MAX_BODY - 1 - len, 0);
    if (r == 0) break;
    if (r > 0) len += (size_t)r;
  }
  close(fd);
  if (!buf) return 0;
  buf[len] = '\0';
  int status = 0;
  char *sep = strstr(buf, "\r\n\r\n");
  if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1 || !sep) {
    free(buf);
    return 0;
  }
  *body = strdup(sep + 4);
  free(buf);
  return status;
}

static cJSON *get_json(int port, const char *path) {
  char *body;
  int status = http_get(port, path, &body);
  if (status != 200) fail_msg("GET %s: status %d", path, status);
  cJSON *j = cJSON_Parse(body);
  if (!j) fail_msg("GET %s: not JSON: %.200s", path, body);
  free(body);
  return j;
}

/* ------------------------------------------------ Prometheus text format */

typedef struct {
  char series[256]; /* name{labels} as written, labels sorted as written */
  double value;
} sample;

typedef struct {
  sample *s;
  size_t n, cap;
} samples;

static int name_char(char ch, int first, int colon) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' || (colon && ch == ':') ||
         (!first && ch >= '0' && ch <= '9');
}

/* Reads a metric (colon 1) or label name at *p; 0 if there is none. */
static int read_name(const char **p, char *out, size_t cap, int colon) {
  size_t n = 0;
  while (name_char((*p)[0], n == 0, colon)) {
    if (n + 1 >= cap) return 0;
    out[n++] = *(*p)++;
  }
  out[n] = '\0';
  return n > 0;
}

static int parse_value(const char *s, double *v) {
  if (strcmp(s, "+Inf") == 0) *v = INFINITY;
  else if (strcmp(s, "-Inf") == 0) *v = -INFINITY;
  else if (strcmp(s, "NaN") == 0) *v = NAN;
  else {
    char *end;
    *v = strtod(s, &end);
    if (end == s || *end) return 0;
  }
  return 1;
}

/* The family a sample belongs to: histogram series end in _bucket, _sum, _count. */
static void family_of(const char *name, const char *type_of_base, char *out, size_t cap) {
  snprintf(out, cap, "%s", name);
  static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
  for (size_t i = 0; i < 3; i++) {
    size_t n = strlen(name), k = strlen(suffixes[i]);
    if (n > k && strcmp(name + n - k, suffixes[i]) == 0 && type_of_base &&
        strncmp(type_of_base, name, n - k) == 0 && type_of_base[n - k] == '\0')
      out[n - k] = '\0';
  }
}

#define BAD(...)                        \
  do {                                  \
    snprintf(err, errlen, __VA_ARGS__); \
    return -1;                          \
  } while (0)

/* Parses the whole exposition strictly: 0, or -1 with the first error. */
static int parse_metrics(const char *text, samples *out, char *err, size_t errlen) {
  char families_seen[64][128];
  size_t n_fam = 0;
  char current[128] = "", current_type[16] = "";
  /* histogram state for the current family */
  double last_le = -INFINITY, last_bucket = -1, inf_bucket = -1, count = -1;
  int have_sum = 0;
  const char *line = text;
  int lineno = 0;
  while (*line) {
    lineno++;
    const char *eol = strchr(line, '\n');
    if (!eol) BAD("metrics line %d has no newline", lineno);
    char l[1024];
    size_t len = (size_t)(eol - line);
    if (len >= sizeof l) BAD("metrics line %d too long", lineno);
    memcpy(l, line, len);
    l[len] = '\0';
    line = eol + 1;
    if (len == 0) continue;
    if (l[0] == '#') {
      char kw[8], name[128], rest[512] = "";
      if (sscanf(l, "# %7s %127s %511[^\n]", kw, name, rest) < 2) continue; /* a plain comment */
      if (strcmp(kw, "HELP") != 0 && strcmp(kw, "TYPE") != 0) continue;
      const char *p = name;
      char check[128];
      if (!read_name(&p, check, sizeof check, 1) || *p) BAD("line %d: bad metric name %s", lineno, name);
      if (strcmp(name, current) != 0) {
        /* a new family: close the previous histogram, refuse one seen before */
        if (strcmp(current_type, "histogram") == 0 && !(inf_bucket >= 0 && have_sum && count == inf_bucket))
          BAD("line %d: histogram %s: no +Inf bucket, no _sum, or +Inf != _count", lineno, current);
        for (size_t i = 0; i < n_fam; i++)
          if (strcmp(families_seen[i], name) == 0) BAD("line %d: family %s appears twice", lineno, name);
        if (n_fam == 64) BAD("too many families");
        snprintf(families_seen[n_fam], sizeof families_seen[n_fam], "%s", name);
        n_fam++;
        snprintf(current, sizeof current, "%s", name);
        current_type[0] = '\0';
        last_le = -INFINITY, last_bucket = -1, inf_bucket = -1, count = -1, have_sum = 0;
      }
      if (strcmp(kw, "TYPE") == 0) {
        if (current_type[0]) BAD("line %d: second TYPE for %s", lineno, name);
        if (strcmp(rest, "counter") && strcmp(rest, "gauge") && strcmp(rest, "histogram") &&
            strcmp(rest, "summary") && strcmp(rest, "untyped"))
          BAD("line %d: unknown type %s", lineno, rest);
        snprintf(current_type, sizeof current_type, "%.15s", rest);
      }
      continue;
    }
    /* A sample: name{label="value",...} value */
    const char *p = l;
    char name[128], series[256];
    if (!read_name(&p, name, sizeof name, 1)) BAD("line %d: no metric name: %s", lineno, l);
    char family[128];
    family_of(name, strcmp(current_type, "histogram") == 0 ? current : NULL, family, sizeof family);
    if (strcmp(family, current) != 0) BAD("line %d: %s outside its family's block (%s)", lineno, name, current);
    if (!current_type[0]) BAD("line %d: %s has no TYPE before it", lineno, name);
    size_t sl = (size_t)snprintf(series, sizeof series, "%s", name);
    char le[64] = "";
    if (*p == '{') {
      sl += (size_t)snprintf(series + sl, sizeof series - sl, "{");
      p++;
      int first = 1;
      while (*p != '}') {
        if (!first) {
          if (*p != ',') BAD("line %d: expected , in labels", lineno);
          p++;
        }
        first = 0;
        char lname[64], lval[128];
        if (!read_name(&p, lname, sizeof lname, 0) || *p++ != '=' || *p++ != '"')
          BAD("line %d: bad label", lineno);
        size_t k = 0;
        while (*p && *p != '"') {
          if (*p == '\\') {
            p++;
            if (*p != '\\' && *p != '"' && *p != 'n') BAD("line %d: bad escape", lineno);
          }
          if (k + 1 < sizeof lval) lval[k++] = *p;
          p++;
        }
        lval[k] = '\0';
        if (*p++ != '"') BAD("line %d: unterminated label value", lineno);
        if (strcmp(lname, "le") == 0) snprintf(le, sizeof le, "%.63s", lval);
        sl += (size_t)snprintf(series + sl, sizeof series - sl, "%s%s=\"%s\"", sl > strlen(name) + 1 ? "," : "",
                               lname, lval);
      }
      p++;
      snprintf(series + sl, sizeof series - sl, "}");
    }
    if (*p++ != ' ') BAD("line %d: expected a space before the value", lineno);
    char vtext[64];
    if (sscanf(p, "%63s", vtext) != 1) BAD("line %d: no value", lineno);
    double v;
    if (!parse_value(vtext, &v)) BAD("line %d: bad value %s", lineno, vtext);
    if (strcmp(current_type, "counter") == 0 && !(v >= 0)) BAD("line %d: negative counter", lineno);
    if (strcmp(current_type, "histogram") == 0) {
      size_t nl = strlen(name);
      if (nl > 7 && strcmp(name + nl - 7, "_bucket") == 0) {
        double lev;
        if (!le[0] || !parse_value(le, &lev)) BAD("line %d: bucket without le", lineno);
        if (!(lev > last_le)) BAD("line %d: le %s not increasing", lineno, le);
        if (v < last_bucket) BAD("line %d: buckets not cumulative", lineno);
        if (inf_bucket >= 0) BAD("line %d: bucket after +Inf", lineno);
        last_le = lev;
        last_bucket = v;
        if (isinf(lev)) inf_bucket = v;
      } else if (nl > 4 && strcmp(name + nl - 4, "_sum") == 0) {
        have_sum = 1;
      } else if (nl > 6 && strcmp(name + nl - 6, "_count") == 0) {
        count = v;
      } else {
        BAD("line %d: %s in histogram %s", lineno, name, current);
      }
    }
    if (out->n == out->cap) {
      out->cap = out->cap ? out->cap * 2 : 64;
      sample *grown = realloc(out->s, out->cap * sizeof *out->s);
      if (!grown) BAD("out of memory");
      out->s = grown;
    }
    snprintf(out->s[out->n].series, sizeof out->s[out->n].series, "%s", series);
    out->s[out->n++].value = v;
  }
  if (strcmp(current_type, "histogram") == 0 && !(inf_bucket >= 0 && have_sum && count == inf_bucket))
    BAD("histogram %s: no +Inf bucket, no _sum, or +Inf != _count", current);
  return 0;
}

/* The value of a series written exactly so; NAN when absent. */
static double metric(const samples *m, const char *series) {
  for (size_t i = 0; i < m->n; i++)
    if (strcmp(m->s[i].series, series) == 0) return m->s[i].value;
  return NAN;
}

static void get_metrics(int port, samples *m) {
  char *body;
  int status = http_get(port, "/metrics", &body);
  if (status != 200) fail_msg("GET /metrics: status %d", status);
  memset(m, 0, sizeof *m);
  char err[256];
  if (parse_metrics(body, m, err, sizeof err) != 0) fail_msg("/metrics: %s\n%s", err, body);
  free(body);
}

/* ------------------------------------------------- README's JSON schema */

typedef struct {
  char path[96];
  char type[24];
} field;

typedef struct {
  char endpoint[64];
  field f[96];
  size_t n;
} schema;

static schema schemas[8];
static size_t n_schemas;

/* The blocks of README.md that start with "GET /api/v1/...". */
static void load_schemas(void) {
  FILE *f = fopen("README.md", "r");
  if (!f) fail_msg("README.md is not in the test's runfiles");
  char line[512];
  schema *cur = NULL;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "GET /api/v1/", 12) == 0) {
      assert_true(n_schemas < 8);
      cur = &schemas[n_schemas++];
      sscanf(line + 4, "%63s", cur->endpoint);
      continue;
    }
    if (!cur) continue;
    if (line[0] == '`' || line[0] == '\n') {
      cur = NULL;
      continue;
    }
    assert_true(cur->n < 96);
    field *fd = &cur->f[cur->n++];
    if (sscanf(line, "%95s %23s", fd->path, fd->type) != 2) fail_msg("README schema line: %s", line);
  }
  fclose(f);
  assert_int_equal(n_schemas, 4);
}

static const schema *schema_for(const char *endpoint) {
  for (size_t i = 0; i < n_schemas; i++)
    if (strcmp(schemas[i].endpoint, endpoint) == 0) return &schemas[i];
  fail_msg("README documents no %s", endpoint);
  return NULL;
}

static int type_ok(const cJSON *v, const char *type) {
  char t[24];
  snprintf(t, sizeof t, "%s", type);
  char *bar = strchr(t, '|');
  if (bar) {
    if (strcmp(bar + 1, "null") != 0) return 0;
    *bar = '\0';
    if (cJSON_IsNull(v)) return 1;
  }
  if (strcmp(t, "string") == 0) return cJSON_IsString(v);
  if (strcmp(t, "number") == 0) return cJSON_IsNumber(v);
  if (strcmp(t, "integer") == 0) return cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble);
  if (strcmp(t, "boolean") == 0) return cJSON_IsBool(v);
  if (strcmp(t, "object") == 0) return cJSON_IsObject(v);
  if (strcmp(t, "array") == 0) return cJSON_IsArray(v);
  return 0;
}

static const field *documented(const schema *s, const char *path) {
  for (size_t i = 0; i < s->n; i++)
    if (strcmp(s->f[i].path, path) == 0) return &s->f[i];
  return NULL;
}

/* Walks v at `path` (schema notation): its type must be the documented
 * one, and so must every member's, recursively; counts the paths seen. */
static void check_value(const schema *s, const cJSON *v, const char *path, int *seen, int *empty) {
  const field *fd = documented(s, path);
  if (!fd) fail_msg("%s: field %s is not documented in README.md", s->endpoint, path);
  if (!type_ok(v, fd->type)) {
    char *text = cJSON_PrintUnformatted(v);
    fail_msg("%s: %s should be %s, is %.100s", s->endpoint, path, fd->type, text);
  }
  seen[fd - s->f] = 1;
  empty[fd - s->f] = cJSON_IsNull(v) || (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0);
  char sub[128];
  if (cJSON_IsArray(v)) {
    snprintf(sub, sizeof sub, "%s[]", path);
    const cJSON *e;
    cJSON_ArrayForEach(e, v) check_value(s, e, sub, seen, empty);
  } else if (cJSON_IsObject(v)) {
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
      snprintf(sub, sizeof sub, "%s%s%s", path, path[0] ? "." : "", m->string);
      check_value(s, m, sub, seen, empty);
    }
  }
}

/* A field that was not seen is excused when it lies below an empty array
 * or a null object (e.g. world.* on a standby). */
static int excused(const schema *s, size_t i, const int *seen, const int *empty) {
  char parent[96];
  snprintf(parent, sizeof parent, "%s", s->f[i].path);
  size_t n = strlen(parent);
  if (n > 2 && strcmp(parent + n - 2, "[]") == 0) parent[n - 2] = '\0';
  else if (strrchr(parent, '.')) *strrchr(parent, '.') = '\0';
  else return 0;
  const field *p = documented(s, parent);
  if (!p) return 0;
  size_t j = (size_t)(p - s->f);
  return seen[j] ? empty[j] : excused(s, j, seen, empty);
}

/* The answer matches its README block both ways. */
static void check_schema(int port, const char *endpoint, cJSON **keep) {
  const schema *s = schema_for(endpoint);
  cJSON *j = get_json(port, endpoint);
  int seen[96] = {0}, empty[96] = {0};
  const cJSON *m;
  assert_true(cJSON_IsObject(j));
  cJSON_ArrayForEach(m, j) check_value(s, m, m->string, seen, empty);
  for (size_t i = 0; i < s->n; i++)
    if (!seen[i] && !excused(s, i, seen, empty))
      fail_msg("%s: documented field %s is missing", endpoint, s->f[i].path);
  if (keep) *keep = j;
  else cJSON_Delete(j);
}

/* ------------------------------------------------------------ cluster */

typedef struct {
  char job[32], endpoints[128];
  tg_proc *coord[2];
  int port[2], http[2];
  tg_sim_agent *agent[2];
} cluster;

static cluster the_cluster, *current;

static void start_coordinator(cluster *c, int i) {
  char listen[32], http[32], id[8], log[700], err[256];
  c->port[i] = tg_proc_free_port();
  c->http[i] = tg_proc_free_port();
  snprintf(listen, sizeof listen, "127.0.0.1:%d", c->port[i]);
  snprintf(http, sizeof http, "127.0.0.1:%d", c->http[i]);
  snprintf(id, sizeof id, "c%d", i);
  snprintf(log, sizeof log, "%s/%s-%s.log", tmpdir, c->job, id);
  const char *argv[] = {"coordinator/tg-coordinator", "--job", c->job, "--id", id, "--listen", listen, "--http",
                        http, "--etcd", tg_etcd_cluster_endpoints(etcd), "--min-nodes", "2", "--max-nodes", "2",
                        "--slots", "2", "--heartbeat-interval-ms", "100", "--heartbeat-timeout-ms", "1000",
                        "--leader-ttl-s", "1", "--last-call-ms", "100", "--quarantine-faults", "0", NULL};
  c->coord[i] = tg_proc_start(argv, log, err, sizeof err);
  if (!c->coord[i]) fail_msg("coordinator: %s", err);
}

static cJSON *wait_state(int port, const char *role) {
  int64_t deadline = tg_clock_mono_ms() + WAIT_MS;
  while (tg_clock_mono_ms() < deadline) {
    char *body;
    if (http_get(port, "/api/v1/state", &body) == 200) {
      cJSON *j = cJSON_Parse(body);
      free(body);
      const cJSON *r = cJSON_GetObjectItem(j, "role");
      if (cJSON_IsString(r) && strcmp(r->valuestring, role) == 0) return j;
      cJSON_Delete(j);
    } else {
      free(body);
    }
    usleep(50000);
  }
  fail_msg("the coordinator on http port %d never became %s", port, role);
  return NULL;
}

/* Two coordinators (c0 leads: it starts first and the test waits for it),
 * two simulated agents of 2 slots: a world of 4 ranks. */
static cluster *start_cluster(void) {
  cluster *c = &the_cluster;
  memset(c, 0, sizeof *c);
  current = c;
  snprintf(c->job, sizeof c->job, "dash%d-%d", job_counter++, (int)getpid());
  start_coordinator(c, 0);
  cJSON_Delete(wait_state(c->http[0], "leader"));
  start_coordinator(c, 1);
  cJSON_Delete(wait_state(c->http[1], "standby"));
  snprintf(c->endpoints, sizeof c->endpoints, "127.0.0.1:%d,127.0.0.1:%d", c->port[0], c->port[1]);
  for (int i = 0; i < 2; i++) {
    char id[8], err[256];
    snprintf(id, sizeof id, "n%d", i);
    tg_sim_config cfg = {.coordinators = c->endpoints, .job_id = c->job, .node_id = id, .slots = 2};
    c->agent[i] = tg_sim_agent_start(&cfg, err, sizeof err);
    if (!c->agent[i]) fail_msg("agent: %s", err);
  }
  for (int i = 0; i < 2; i++)
    if (tg_sim_agent_wait_generation(c->agent[i], 1, WAIT_MS) != 0) fail_msg("no world formed");
  return c;
}

static int teardown_cluster(void **state) {
  cluster *c = current;
  if (!c) return 0;
  for (int i = 0; i < 2; i++) tg_sim_agent_free(c->agent[i]);
  for (int i = 0; i < 2; i++) {
    if (!c->coord[i]) continue;
    tg_proc_stop(c->coord[i], 3000);
    tg_proc_free(c->coord[i]);
  }
  current = NULL;
  return 0;
}

/* The member at a dotted path ("leader.id"), or NULL. */
static const cJSON *lookup(const cJSON *o, const char *path) {
  char p[128];
  snprintf(p, sizeof p, "%s", path);
  for (char *save, *t = strtok_r(p, ".", &save); t; t = strtok_r(NULL, ".", &save))
    o = cJSON_GetObjectItem(o, t);
  return o;
}

static double num(const cJSON *o, const char *path) {
  const cJSON *v = lookup(o, path);
  if (!cJSON_IsNumber(v)) fail_msg("%s is not a number", path);
  return v->valuedouble;
}

static const char *str(const cJSON *o, const char *path) {
  const cJSON *v = lookup(o, path);
  if (!cJSON_IsString(v)) fail_msg("%s is not a string", path);
  return v->valuestring;
}

/* Waits until GET endpoint holds the JSON text `needle` (as printed). */
static void wait_json_contains(int port, const char *endpoint, const char *needle) {
  int64_t deadline = tg_clock_mono_ms() + WAIT_MS;
  char *body = NULL;
  while (tg_clock_mono_ms() < deadline) {
    free(body);
    if (http_get(port, endpoint, &body) == 200 && strstr(body, needle)) {
      free(body);
      return;
    }
    usleep(50000);
  }
  fail_msg("%s never showed %s; last: %.600s", endpoint, needle, body ? body : "(nothing)");
}

/* ------------------------------------------------------------- tests */

static void test_leader_metrics_and_api(void **state) {
  cluster *c = start_cluster();
  tg_sim_agent_set_progress(c->agent[0], 0, 12, 2.5);
  tg_sim_agent_set_progress(c->agent[1], 2, 12, 2.5);
  tg_sim_agent_set_health_fault(c->agent[1], TARDIGRADE__V1__FAULT_KIND__FAULT_GPU_THERMAL,
                                TARDIGRADE__V1__SEVERITY__SEVERITY_WARNING, "gpu1");
  wait_json_contains(c->http[0], "/api/v1/nodes", "\"status\":\"WARNING\"");
  wait_json_contains(c->http[0], "/api/v1/state", "\"step\":12");

  samples m;
  get_metrics(c->http[0], &m);
  assert_true(metric(&m, "tardigrade_coordinator_leader") == 1);
  assert_true(metric(&m, "tardigrade_world_size") == 4);
  assert_true(metric(&m, "tardigrade_world_nodes") == 2);
  assert_true(metric(&m, "tardigrade_generation") >= 1);
  assert_true(metric(&m, "tardigrade_nodes{state=\"active\"}") == 2);
  assert_true(metric(&m, "tardigrade_nodes{state=\"dead\"}") == 0);
  assert_true(metric(&m, "tardigrade_nodes_degraded{component=\"gpu\"}") == 1);
  assert_true(metric(&m, "tardigrade_step") == 12);
  assert_true(metric(&m, "tardigrade_loss") == 2.5);
  assert_true(metric(&m, "tardigrade_fault_detection_seconds_count") == 0);
  free(m.s);

  cJSON *st = NULL, *nodes = NULL;
  check_schema(c->http[0], "/api/v1/state", &st);
  assert_string_equal(str(st, "role"), "leader");
  assert_string_equal(str(st, "leader.id"), "c0");
  assert_true(num(st, "world.world_size") == 4);
  assert_true(num(st, "nodes.ACTIVE") == 2);
  assert_true(num(st, "loss") == 2.5);
  cJSON_Delete(st);
  check_schema(c->http[0], "/api/v1/nodes", &nodes);
  const cJSON *list = cJSON_GetObjectItem(nodes, "nodes"), *n1 = cJSON_GetArrayItem(list, 1);
  assert_int_equal(cJSON_GetArraySize(list), 2);
  if (strcmp(str(n1, "id"), "n1") != 0) n1 = cJSON_GetArrayItem(list, 0); /* registration order */
  assert_string_equal(str(n1, "id"), "n1");
  assert_string_equal(str(n1, "state"), "ACTIVE");
  assert_string_equal(str(n1, "gpu.status"), "WARNING");
  assert_string_equal(str(n1, "nic.status"), "OK");
  cJSON_Delete(nodes);
  check_schema(c->http[0], "/api/v1/faults", NULL);
  check_schema(c->http[0], "/api/v1/generations", NULL);
  wait_json_contains(c->http[0], "/api/v1/generations", "\"reason\":\"first\"");

  /* The standby: says so, names the leader and its dashboard, exports
   * only its role. */
  cJSON *sb = NULL;
  check_schema(c->http[1], "/api/v1/state", &sb);
  assert_string_equal(str(sb, "role"), "standby");
  assert_string_equal(str(sb, "leader.id"), "c0");
  char leader_http[32];
  snprintf(leader_http, sizeof leader_http, "127.0.0.1:%d", c->http[0]);
  assert_string_equal(str(sb, "leader.http_address"), leader_http);
  assert_true(cJSON_IsNull(cJSON_GetObjectItem(sb, "world")));
  cJSON_Delete(sb);
  check_schema(c->http[1], "/api/v1/nodes", NULL);
  check_schema(c->http[1], "/api/v1/faults", NULL);
  get_metrics(c->http[1], &m);
  assert_int_equal(m.n, 1);
  assert_true(metric(&m, "tardigrade_coordinator_leader") == 0);
  free(m.s);

  /* Not a place to write to, nor to wander. */
  char *body;
  assert_int_equal(http_get(c->http[0], "/api/v1/nope", &body), 404);
  free(body);
  assert_int_equal(http_get(c->http[0], "/", &body), 200);
  assert_non_null(strstr(body, "<html"));
  free(body);
}

static void test_fault_times_survive_failover(void **state) {
  cluster *c = start_cluster();
  uint64_t gen = 0;
  tg_sim_state s;
  tg_sim_agent_state(c->agent[0], &s);
  gen = s.generation;
  for (int i = 0; i < 2; i++) tg_sim_agent_set_committed_step(c->agent[i], 5);
  wait_json_contains(c->http[0], "/api/v1/state", "\"committed_step\":5");

  /* A trainer of n0 dies; its agent saw it 250 ms after it happened. */
  tg_rpc_status st = {0};
  assert_int_equal(tg_sim_agent_report_fault_since(c->agent[0], TARDIGRADE__V1__FAULT_KIND__FAULT_TRAINER_EXIT,
                                                   TARDIGRADE__V1__SEVERITY__SEVERITY_ERROR, 1, gen,
                                                   "trainer killed by signal 9", 250, &st),
                   TG_RPC_OK);
  wait_json_contains(c->http[0], "/api/v1/faults", "\"culprit\":\"n0 rank 1\"");
  wait_json_contains(c->http[0], "/api/v1/state", "\"recovering\":true");
  wait_json_contains(c->http[0], "/api/v1/faults", "\"detection_ms\":250");
  wait_json_contains(c->http[0], "/api/v1/faults", "\"recovery_ms\":null");
  for (int i = 0; i < 2; i++)
    if (tg_sim_agent_wait_generation(c->agent[i], gen + 1, WAIT_MS) != 0) fail_msg("no new world");

  /* Training resumes: a step committed in the new world. */
  for (int i = 0; i < 2; i++) tg_sim_agent_set_committed_step(c->agent[i], 6);
  wait_json_contains(c->http[0], "/api/v1/state", "\"recovering\":false");
  cJSON *faults = NULL;
  check_schema(c->http[0], "/api/v1/faults", &faults);
  const cJSON *f = cJSON_GetArrayItem(cJSON_GetObjectItem(faults, "faults"), 0);
  assert_string_equal(str(f, "kind"), "TRAINER_EXIT");
  assert_string_equal(str(f, "severity"), "ERROR");
  assert_true(num(f, "rank") == 1);
  assert_true(num(f, "recovery_ms") >= 250);
  assert_true(num(f, "recovered_unix_ms") > 0);
  cJSON_Delete(faults);

  samples m;
  get_metrics(c->http[0], &m);
  assert_true(metric(&m, "tardigrade_faults_total{kind=\"trainer_exit\",severity=\"error\"}") == 1);
  assert_true(metric(&m, "tardigrade_fault_detection_seconds_count") == 1);
  assert_true(fabs(metric(&m, "tardigrade_fault_detection_seconds_sum") - 0.25) < 1e-9);
  assert_true(metric(&m, "tardigrade_fault_detection_seconds_bucket{le=\"0.25\"}") == 1);
  assert_true(metric(&m, "tardigrade_fault_detection_seconds_bucket{le=\"0.1\"}") == 0);
  assert_true(metric(&m, "tardigrade_fault_recovery_seconds_count") == 1);
  assert_true(metric(&m, "tardigrade_recovering") == 0);
  assert_true(metric(&m, "tardigrade_generation") >= (double)gen + 1);
  free(m.s);
  check_schema(c->http[0], "/api/v1/state", NULL);
  check_schema(c->http[0], "/api/v1/generations", NULL);
  wait_json_contains(c->http[0], "/api/v1/generations", "\"reason\":\"restart\"");

  /* The leader dies; the standby takes over with the fault log, recovery
   * time included, from etcd. */
  tg_proc_signal(c->coord[0], SIGKILL);
  cJSON_Delete(wait_state(c->http[1], "leader"));
  wait_json_contains(c->http[1], "/api/v1/faults", "\"culprit\":\"n0 rank 1\"");
  check_schema(c->http[1], "/api/v1/faults", &faults);
  f = cJSON_GetArrayItem(cJSON_GetObjectItem(faults, "faults"), 0);
  assert_string_equal(str(f, "kind"), "TRAINER_EXIT");
  assert_true(num(f, "recovery_ms") >= 250);
  cJSON_Delete(faults);
  get_metrics(c->http[1], &m);
  assert_true(metric(&m, "tardigrade_coordinator_leader") == 1);
  free(m.s);
}

static void test_metrics_parser_refuses_bad_text(void **state) {
  /* The parser is the judge: make sure it convicts. */
  static const char *const bad[] = {
      "x 1\n",                                                        /* no TYPE */
      "# TYPE x gauge\nx{a=\"1\" 1\n",                                /* unterminated labels */
      "# TYPE x gauge\nx{a=\"\\q\"} 1\n",                             /* bad escape */
      "# TYPE x gauge\nx one\n",                                      /* bad value */
      "# TYPE x gauge\n# TYPE y gauge\ny 1\n# TYPE x gauge\nx 2\n",  /* family twice */
      "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"0.5\"} 2\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n",
      "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
      "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
      "# TYPE c counter\nc -1\n",
      "# TYPE x gauge\nx 1",                                          /* no final newline */
  };
  char err[256];
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    samples m = {0};
    if (parse_metrics(bad[i], &m, err, sizeof err) == 0) fail_msg("the parser accepted bad text %zu", i);
    free(m.s);
  }
  samples m = {0};
  assert_int_equal(parse_metrics("# HELP g a gauge\n# TYPE g gauge\ng{a=\"x\\\"y\"} 1.5\n# comment\n\n# TYPE h histogram\n"
                "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n",
                                 &m, err, sizeof err),
                   0);
  assert_int_equal(m.n, 5);
  free(m.s);
}

static int setup(void **state) {
  char err[256];
  if (tg_proc_temp_dir("dashboard", tmpdir, sizeof tmpdir) != 0) return -1;
  etcd = tg_etcd_cluster_start(1, err, sizeof err);
  if (!etcd) {
    fprintf(stderr, "etcd: %s\n", err);
    return -1;
  }
  load_schemas();
  return 0;
}

static int teardown(void **state) {
  tg_etcd_cluster_free(etcd);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_metrics_parser_refuses_bad_text),
      cmocka_unit_test_teardown(test_leader_metrics_and_api, teardown_cluster),
      cmocka_unit_test_teardown(test_fault_times_survive_failover, teardown_cluster),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
