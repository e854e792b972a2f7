/* Test certificates; see certs.h. One openssl run per file, each under a
 * deadline, with the output kept in openssl.log beside the files. */
#include "tests/harness/certs.h"

#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "tests/harness/proc.h"

int tg_test_make_certs(tg_test_certs *c, char *err, size_t errlen) {
  memset(c, 0, sizeof *c);
  if (tg_proc_temp_dir("certs", c->dir, sizeof c->dir) != 0) {
    snprintf(err, errlen, "cannot make a temporary directory");
    return -1;
  }
  char script[4096];
  snprintf(script, sizeof script,
           "set -e; cd '%s'; K='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'; "
           "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth,clientAuth\\n'"
           " > server.ext; "
           "printf 'extendedKeyUsage=clientAuth\\n' > client.ext; "
           "openssl req -x509 $K -keyout ca.key -out ca.crt -days 2 -subj /CN=tg-test-ca; "
           "openssl req $K -keyout server.key -out server.csr -subj /CN=localhost; "
           "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial"
           " -out server.crt -days 2 -extfile server.ext; "
           "openssl req $K -keyout client.key -out client.csr -subj /CN=tg-test-client; "
           "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial"
           " -out client.crt -days 2 -extfile client.ext",
           c->dir);
  const char *argv[] = {"/bin/sh", "-c", script, NULL};
  static char out[8192];
  int status = 0;
  if (tg_proc_run(argv, NULL, 30000, out, sizeof out, &status) != 0 || !WIFEXITED(status) ||
      WEXITSTATUS(status) != 0) {
    snprintf(err, errlen, "openssl failed in %s: %.300s", c->dir, out);
    return -1;
  }
  snprintf(c->ca, sizeof c->ca, "%s/ca.crt", c->dir);
  snprintf(c->server_cert, sizeof c->server_cert, "%s/server.crt", c->dir);
  snprintf(c->server_key, sizeof c->server_key, "%s/server.key", c->dir);
  snprintf(c->client_cert, sizeof c->client_cert, "%s/client.crt", c->dir);
  snprintf(c->client_key, sizeof c->client_key, "%s/client.key", c->dir);
  return 0;
}
