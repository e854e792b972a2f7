/* Test certificates: a throwaway CA, a server certificate valid for
 * localhost and 127.0.0.1, and a client certificate, made with the openssl
 * command-line tool (EC P-256, so it takes milliseconds). Used by every
 * test of TLS and mutual TLS: the RPC layer, etcd, the coordinator. */
#ifndef TG_TEST_CERTS_H
#define TG_TEST_CERTS_H

#include <stddef.h>

typedef struct {
  char dir[512];
  char ca[600];          /* ca.crt */
  char server_cert[600]; /* server.crt: serverAuth and clientAuth, SAN localhost, 127.0.0.1 */
  char server_key[600];
  char client_cert[600]; /* client.crt: clientAuth */
  char client_key[600];
} tg_test_certs;

/* Makes the files in a new directory under $TEST_TMPDIR (or /tmp).
 * Returns 0, or -1 with the reason (and openssl's log path) in err. */
int tg_test_make_certs(tg_test_certs *out, char *err, size_t errlen);

#endif
