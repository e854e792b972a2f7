/* TLS credentials from PEM files, for both ends of a connection.
 *
 * Agents, the coordinator and etcd may talk over TLS or mutual TLS; the
 * certificates are PEM files named in configuration. This file reads them
 * (bounded, so a wrong path to a huge file fails cleanly) and hands the
 * contents to gRPC, which copies them; our copies of private keys are wiped
 * before they are freed. A NULL tg_rpc_tls means plaintext. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rpc/rpc_internal.h"

/* No certificate chain or key we use comes near this. */
#define PEM_MAX_BYTES ((size_t)1 << 20)

/* Reads a whole PEM file into a NUL-terminated buffer; NULL with err set. */
static char *read_pem(const char *what, const char *path, char *err, size_t errlen) {
  char *buf = NULL;
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    snprintf(err, errlen, "cannot open %s %s: %s", what, path, strerror(errno));
    return NULL;
  }
  buf = malloc(PEM_MAX_BYTES + 1);
  if (buf == NULL) {
    snprintf(err, errlen, "out of memory reading %s %s", what, path);
    goto fail;
  }
  size_t len = fread(buf, 1, PEM_MAX_BYTES + 1, f);
  if (ferror(f)) {
    snprintf(err, errlen, "cannot read %s %s: %s", what, path, strerror(errno));
    goto fail;
  }
  if (len == 0 || len > PEM_MAX_BYTES) {
    snprintf(err, errlen, "%s %s is %s", what, path, len == 0 ? "empty" : "larger than 1 MiB");
    goto fail;
  }
  buf[len] = '\0';
  fclose(f);
  return buf;
fail:
  free(buf);
  fclose(f);
  return NULL;
}

static void free_pem(char *pem) {
  if (pem == NULL) return;
  explicit_bzero(pem, strlen(pem));
  free(pem);
}

/* Loads the optional CA bundle and the optional certificate/key pair. */
static int load_tls_files(const tg_rpc_tls *tls, char **ca, char **cert, char **key, char *err,
                          size_t errlen) {
  *ca = *cert = *key = NULL;
  if ((tls->cert_file == NULL) != (tls->key_file == NULL)) {
    snprintf(err, errlen, "TLS needs both cert_file and key_file, or neither");
    return -1;
  }
  if (tls->ca_file != NULL && (*ca = read_pem("CA file", tls->ca_file, err, errlen)) == NULL) {
    goto fail;
  }
  if (tls->cert_file != NULL) {
    if ((*cert = read_pem("certificate", tls->cert_file, err, errlen)) == NULL) goto fail;
    if ((*key = read_pem("private key", tls->key_file, err, errlen)) == NULL) goto fail;
  }
  return 0;
fail:
  free_pem(*ca);
  free_pem(*cert);
  free_pem(*key);
  *ca = *cert = *key = NULL;
  return -1;
}

grpc_channel_credentials *tg_rpc_channel_creds(const tg_rpc_tls *tls, char *err, size_t errlen) {
  if (tls == NULL) return grpc_insecure_credentials_create();
  char *ca, *cert, *key;
  if (load_tls_files(tls, &ca, &cert, &key, err, errlen) != 0) return NULL;
  grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
  grpc_channel_credentials *creds =
      grpc_ssl_credentials_create(ca, cert != NULL ? &pair : NULL, NULL, NULL);
  if (creds == NULL) snprintf(err, errlen, "gRPC refused the TLS settings");
  free_pem(ca);
  free_pem(cert);
  free_pem(key);
  return creds;
}

grpc_server_credentials *tg_rpc_server_creds(const tg_rpc_tls *tls, char *err, size_t errlen) {
  if (tls == NULL) return grpc_insecure_server_credentials_create();
  if (tls->cert_file == NULL) {
    snprintf(err, errlen, "a TLS server needs cert_file and key_file");
    return NULL;
  }
  if (tls->require_client_cert && tls->ca_file == NULL) {
    snprintf(err, errlen, "mutual TLS needs ca_file to verify client certificates");
    return NULL;
  }
  char *ca, *cert, *key;
  if (load_tls_files(tls, &ca, &cert, &key, err, errlen) != 0) return NULL;
  grpc_ssl_client_certificate_request_type request = GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
  if (tls->require_client_cert) {
    request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  } else if (ca != NULL) {
    request = GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
  grpc_server_credentials *creds =
      grpc_ssl_server_credentials_create_ex(ca, &pair, 1, request, NULL);
  if (creds == NULL) snprintf(err, errlen, "gRPC refused the TLS settings");
  free_pem(ca);
  free_pem(cert);
  free_pem(key);
  return creds;
}
