/* The etcd client against secured etcd members: mutual TLS with
 * certificates this test makes with the openssl CLI, and user/password
 * authentication (set up with etcdctl) including a wrong password, a
 * missing login, and a token that expires and is renewed transparently. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/etcd/etcd.h"
#include "common/etcd/etcd_testing.h"
#include "common/log/log.h"
#include "tests/harness/certs.h"
#include "tests/harness/etcd_cluster.h"

typedef struct {
  tg_etcd_cluster *cluster;
  tg_etcd *c;
  tg_etcd_watch *w;
  char certs[512];
  tg_test_certs tls_files;
} fixture;

static int setup(void **state) {
  static fixture f;
  memset(&f, 0, sizeof f);
  *state = &f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  tg_etcd_watch_close(f->w);
  tg_etcd_close(f->c);
  tg_etcd_cluster_free(f->cluster);
  if (f->certs[0]) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->certs);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", f->certs);
  }
  memset(f, 0, sizeof *f);
  return 0;
}

/* A CA, a server certificate for 127.0.0.1 and a client certificate. */
static void make_certs(fixture *f) {
  char err[512];
  if (tg_test_make_certs(&f->tls_files, err, sizeof err) != 0) fail_msg("%s", err);
  snprintf(f->certs, sizeof f->certs, "%s", f->tls_files.dir);
}

static void test_mutual_tls(void **state) {
  fixture *f = *state;
  tg_rpc_status st = {0};
  make_certs(f);
  char cert[600], key[600], ca[600], ccert[600], ckey[600];
  snprintf(cert, sizeof cert, "--cert-file=%s/server.crt", f->certs);
  snprintf(key, sizeof key, "--key-file=%s/server.key", f->certs);
  snprintf(ca, sizeof ca, "--trusted-ca-file=%s/ca.crt", f->certs);
  const char *extra[] = {cert, key, ca, "--client-cert-auth", NULL};
  tg_etcd_cluster_opts o = {.members = 1, .client_scheme = "https", .extra_args = extra};
  char err[256];
  f->cluster = tg_etcd_cluster_start_opts(&o, err, sizeof err);
  if (!f->cluster) fail_msg("etcd with TLS: %s", err);
  assert_int_equal(strncmp(tg_etcd_cluster_url(f->cluster, 0), "https://", 8), 0);

  snprintf(ca, sizeof ca, "%s/ca.crt", f->certs);
  snprintf(ccert, sizeof ccert, "%s/client.crt", f->certs);
  snprintf(ckey, sizeof ckey, "%s/client.key", f->certs);
  tg_rpc_tls tls = {.ca_file = ca, .cert_file = ccert, .key_file = ckey};
  tg_etcd_config cfg = {
      .endpoints = tg_etcd_cluster_endpoints(f->cluster), .tls = &tls, .request_timeout_ms = 5000};
  f->c = tg_etcd_open(&cfg, &st);
  if (!f->c) fail_msg("open: %s", st.message);
  tg_etcd_watch_opts wo = {0};
  f->w = tg_etcd_watch_open(f->c, "/tls/k", &wo, &st);
  if (!f->w) fail_msg("watch over TLS: %s", st.message);
  etcd_testing_put(f->c, "/tls/k", "secret");
  char buf[32];
  assert_true(etcd_testing_get(f->c, "/tls/k", buf, sizeof buf));
  assert_string_equal(buf, "secret");
  etcd_testing_expect_event(f->w, TG_ETCD_EVENT_PUT, "/tls/k", "secret", 3000);
  tg_etcd_watch_close(f->w);
  f->w = NULL;
  tg_etcd_close(f->c);
  f->c = NULL;

  /* Without a client certificate etcd refuses us; the error says so in time. */
  tg_rpc_tls no_cert = {.ca_file = ca};
  cfg.tls = &no_cert;
  cfg.request_timeout_ms = 1500;
  f->c = tg_etcd_open(&cfg, &st);
  assert_non_null(f->c);
  tg_etcd_range_result r;
  assert_int_not_equal(tg_etcd_get(f->c, "/tls/k", NULL, &r, &st), TG_RPC_OK);
  TG_INFO("without a client certificate: %s: %s", tg_rpc_code_name(st.code), st.message);
  assert_true(strlen(st.message) > 0);
  tg_etcd_close(f->c);
  f->c = NULL;

  /* Plaintext against a TLS port fails too. */
  cfg.tls = NULL;
  f->c = tg_etcd_open(&cfg, &st);
  assert_int_not_equal(tg_etcd_get(f->c, "/tls/k", NULL, &r, &st), TG_RPC_OK);
}

static void test_user_password_auth(void **state) {
  fixture *f = *state;
  tg_rpc_status st = {0};
  char err[256], out[1024];
  /* Tokens live one second, so the test sees one expire. */
  const char *extra[] = {"--auth-token-ttl=1", "--bcrypt-cost=4", NULL};
  tg_etcd_cluster_opts o = {.members = 1, .extra_args = extra};
  f->cluster = tg_etcd_cluster_start_opts(&o, err, sizeof err);
  if (!f->cluster) fail_msg("etcd: %s", err);
  const char *add[] = {"user", "add", "root:rootpw", "--interactive=false", NULL};
  if (tg_etcd_cluster_ctl(f->cluster, add, out, sizeof out, 10000) != 0) fail_msg("%s", out);
  const char *enable[] = {"auth", "enable", NULL};
  if (tg_etcd_cluster_ctl(f->cluster, enable, out, sizeof out, 10000) != 0) fail_msg("%s", out);

  tg_etcd_config cfg = {.endpoints = tg_etcd_cluster_endpoints(f->cluster),
                        .username = "root",
                        .password = "wrong",
                        .request_timeout_ms = 3000};
  assert_null(tg_etcd_open(&cfg, &st));
  TG_INFO("wrong password: %s: %s", tg_rpc_code_name(st.code), st.message);
  assert_int_equal(st.code, TG_RPC_INVALID_ARGUMENT);
  assert_non_null(strstr(st.message, "authentication failed"));

  /* No login at all: requests are refused with a clear reason. */
  cfg.username = cfg.password = NULL;
  f->c = tg_etcd_open(&cfg, &st);
  assert_non_null(f->c);
  tg_etcd_range_result r;
  assert_int_not_equal(tg_etcd_get(f->c, "/auth/k", NULL, &r, &st), TG_RPC_OK);
  TG_INFO("no login: %s: %s", tg_rpc_code_name(st.code), st.message);
  assert_non_null(strstr(st.message, "user name"));
  tg_etcd_close(f->c);

  cfg.username = "root";
  cfg.password = "rootpw";
  f->c = tg_etcd_open(&cfg, &st);
  if (!f->c) fail_msg("open: %s", st.message);
  etcd_testing_put(f->c, "/auth/k", "v1");
  tg_etcd_watch_opts wo = {0};
  f->w = tg_etcd_watch_open(f->c, "/auth/k", &wo, &st);
  if (!f->w) fail_msg("watch with auth: %s", st.message);
  /* Let the token expire: the next calls authenticate again by themselves. */
  sleep(3);
  etcd_testing_put(f->c, "/auth/k", "v2");
  char buf[16];
  assert_true(etcd_testing_get(f->c, "/auth/k", buf, sizeof buf));
  assert_string_equal(buf, "v2");
  etcd_testing_expect_event(f->w, TG_ETCD_EVENT_PUT, "/auth/k", "v2", 3000);
  int64_t lease = 0;
  assert_int_equal(tg_etcd_lease_grant(f->c, 5, &lease, &st), TG_RPC_OK);
}

int main(void) {
  tg_log_init("etcd_secure_test", TG_LOG_INFO);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_mutual_tls, setup, teardown),
      cmocka_unit_test_setup_teardown(test_user_password_auth, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
