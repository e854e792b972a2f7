/* Finding and calling the leader among a job's coordinators.
 *
 * Agents, tgctl and test agents are given a list of coordinator addresses.
 * A standby answers UNAVAILABLE with "leader at HOST:PORT"; this client
 * follows that hint, or else tries the next address, so callers just say
 * what to call. The channel of the coordinator that last answered is kept,
 * so streams opened after a successful unary call go to the leader. */
#ifndef TG_COORD_CLIENT_H
#define TG_COORD_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "common/rpc/rpc.h"

typedef struct tg_coord_client tg_coord_client;

/* endpoints: "host:port,host:port" (at most 16). tls may be NULL. */
tg_coord_client *tg_coord_client_new(const char *endpoints, const tg_rpc_tls *tls, char *err,
                                     size_t errlen);
void tg_coord_client_free(tg_coord_client *cl);

/* A unary call to the leader, trying every endpoint (and hints) until one
 * answers with something other than UNAVAILABLE or timeout_ms passes. */
tg_rpc_code tg_coord_client_call(tg_coord_client *cl, const char *path, const ProtobufCMessage *req,
                                 const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                                 int64_t timeout_ms, tg_rpc_status *st);

/* The channel to the coordinator that answered last (owned by the client). */
tg_rpc_channel *tg_coord_client_channel(tg_coord_client *cl);

/* Its address. */
const char *tg_coord_client_target(const tg_coord_client *cl);

/* The next call starts with another endpoint (after a broken stream). */
void tg_coord_client_rotate(tg_coord_client *cl);

#endif
