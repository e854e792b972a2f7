/* What the client and server halves of common/rpc share, and nobody else
 * sees: turning protobuf-c messages into gRPC byte buffers and back under a
 * size bound, deadline arithmetic on gRPC's clock, and TLS credentials built
 * from PEM files. Kept out of rpc.h so that callers never include gRPC. */
#ifndef TG_RPC_INTERNAL_H
#define TG_RPC_INTERNAL_H

#include <grpc/grpc.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>

#include "common/rpc/rpc.h"

/* Extra time a waiter grants gRPC beyond a call's own deadline before it
 * cancels the call itself; gRPC normally ends the call first. */
#define TG_RPC_DEADLINE_SLACK_MS 5000

/* Packs msg into a new byte buffer. Returns TG_RPC_OK, or
 * TG_RPC_RESOURCE_EXHAUSTED when it packs to more than max_bytes. */
tg_rpc_code tg_rpc_pack_message(const ProtobufCMessage *msg, size_t max_bytes,
                                grpc_byte_buffer **out, tg_rpc_status *st);

/* Decodes bb as desc. Returns TG_RPC_OK with *out set, RESOURCE_EXHAUSTED
 * when bb is larger than max_bytes, or `bad_code` when it does not decode. */
tg_rpc_code tg_rpc_unpack_message(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
                                  size_t max_bytes, tg_rpc_code bad_code, ProtobufCMessage **out,
                                  tg_rpc_status *st);

/* Monotonic deadline `ms` from now (INT64_MAX or more: never). */
gpr_timespec tg_rpc_deadline_after_ms(int64_t ms);
/* Milliseconds from now until t (negative when past; INT64_MAX when never). */
int64_t tg_rpc_ms_until(gpr_timespec t);
/* The later of t and now, plus ms. */
gpr_timespec tg_rpc_deadline_plus(gpr_timespec t, int64_t ms);

/* Copies a status-details slice into a status message. */
void tg_rpc_status_from_grpc(tg_rpc_status *st, grpc_status_code code, grpc_slice details);

/* Credentials from a tg_rpc_tls (NULL: plaintext). NULL with err on failure. */
grpc_channel_credentials *tg_rpc_channel_creds(const tg_rpc_tls *tls, char *err, size_t errlen);
grpc_server_credentials *tg_rpc_server_creds(const tg_rpc_tls *tls, char *err, size_t errlen);

#endif
