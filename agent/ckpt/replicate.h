/* Replication of checkpoint shards between agents, over the Replication
 * gRPC service (proto/tardigrade/v1/replication.proto).
 *
 * A step counts as committed only when each of its shards sits in the
 * memory of two nodes, so every agent pushes the shards its trainers wrote
 * to a buddy agent (tg_ckpt_push), and an agent that lost its copies
 * fetches them back from wherever one lives (tg_ckpt_fetch into its store,
 * tg_ckpt_fetch_alloc into memory for a trainer). The server
 * side (tg_ckpt_repl_server) serves PushShard, FetchShard and ListShards
 * from the agent's own store on the agent's existing tg_rpc_server.
 *
 * A shard travels as ShardChunk messages of at most chunk_bytes each; the
 * first carries the key, total_bytes and the shard's checksum in the field
 * named `crc64`, which holds the CRC-64/XZ of crc64.h. A pushed shard is
 * written straight into a slot of the receiving store as it arrives and is
 * committed only when every byte is there and the checksum matches;
 * otherwise the slot is given back and the client gets a clear status:
 *   INVALID_ARGUMENT    bad key, chunks out of order, fewer or more bytes
 *                       than announced
 *   RESOURCE_EXHAUSTED  shard larger than max_shard_bytes or than a slot,
 *                       chunk larger than chunk_bytes, store full
 *   DATA_LOSS           checksum mismatch (nothing stored), or the stored
 *                       copy failed its checksum (fetch)
 *   NOT_FOUND           no such committed shard (fetch)
 * A fetched shard is verified the same way before it is committed locally
 * or handed to the caller.
 *
 * FetchShard queues all of a shard's chunks at once (the RPC layer copies
 * them), so a server's max_queued_sends x chunk_bytes must exceed
 * max_shard_bytes: tg_ckpt_repl_queued_sends says how many that is. */
#ifndef TG_CKPT_REPLICATE_H
#define TG_CKPT_REPLICATE_H

#include <stddef.h>
#include <stdint.h>

#include "agent/ckpt/store.h"
#include "common/rpc/rpc.h"

#define TG_CKPT_REPL_DEFAULT_CHUNK_BYTES ((size_t)1 << 20)
/* Chunks must fit the RPC layer's default message bound with room to spare. */
#define TG_CKPT_REPL_MAX_CHUNK_BYTES ((size_t)2 << 20)
#define TG_CKPT_REPL_DEFAULT_DEADLINE_MS 30000

typedef struct {
  uint64_t max_shard_bytes; /* largest shard accepted, sent or fetched; 0: the store's slot size */
  size_t chunk_bytes;       /* data per chunk, sent and accepted; 0: the default, capped at MAX */
  int64_t deadline_ms;      /* client: a whole push or fetch; 0: the default */
  const char *node_id;      /* source_node_id in chunks sent; NULL: "" */
} tg_ckpt_repl_config;

/* ---------------------------------------------------------------- server */

typedef struct tg_ckpt_repl_server tg_ckpt_repl_server;

/* Serves `store` (not owned; it must outlive the server). cfg may be NULL.
 * NULL when out of memory. */
tg_ckpt_repl_server *tg_ckpt_repl_server_new(tg_ckpt_store *store, const tg_ckpt_repl_config *cfg);

/* Registers PushShard, FetchShard and ListShards on srv (before it
 * starts). 0, or -1 if a path is taken. */
int tg_ckpt_repl_server_register(tg_ckpt_repl_server *rs, tg_rpc_server *srv);

/* The max_queued_sends (tg_rpc_server_config) a server needs so that
 * FetchShard can queue a whole shard of `store` under cfg (may be NULL):
 * at least the RPC layer's default. */
size_t tg_ckpt_repl_queued_sends(const tg_ckpt_store *store, const tg_ckpt_repl_config *cfg);

/* Frees; call after tg_rpc_server_free of every server it was registered
 * on. NULL is ignored. */
void tg_ckpt_repl_server_free(tg_ckpt_repl_server *rs);

/* ---------------------------------------------------------------- client */

/* Pushes the committed shard `key` of the local store to the agent behind
 * ch; it is read (and its checksum verified) first. Returns the outcome
 * (also in *st when not NULL): TG_RPC_OK once the buddy stored it. */
tg_rpc_code tg_ckpt_push(tg_ckpt_store *store, tg_rpc_channel *ch, const tg_ckpt_key *key,
                         const tg_ckpt_repl_config *cfg, tg_rpc_status *st);

/* Pushes bytes the caller holds, announced with checksum crc64. */
tg_rpc_code tg_ckpt_push_bytes(tg_rpc_channel *ch, const tg_ckpt_key *key, const void *bytes,
                               size_t len, uint64_t crc64, const tg_ckpt_repl_config *cfg,
                               tg_rpc_status *st);

/* Fetches shard `key` from the agent behind ch into the local store,
 * committing it only when complete and its checksum matches. */
tg_rpc_code tg_ckpt_fetch(tg_ckpt_store *store, tg_rpc_channel *ch, const tg_ckpt_key *key,
                          const tg_ckpt_repl_config *cfg, tg_rpc_status *st);

/* Fetches shard `key` from the agent behind ch into memory of its own,
 * verified like tg_ckpt_fetch (complete, CRC-64 matches), for a caller
 * without a store of its own to fill (a trainer restoring a shard that
 * lives on another node). On TG_RPC_OK *bytes (to be freed with free),
 * *len and *crc64 (may be NULL) describe it; otherwise *bytes is NULL.
 * cfg->max_shard_bytes 0 means TG_CKPT_MAX_SHARD_BYTES. */
tg_rpc_code tg_ckpt_fetch_alloc(tg_rpc_channel *ch, const tg_ckpt_key *key,
                                const tg_ckpt_repl_config *cfg, void **bytes, size_t *len,
                                uint64_t *crc64, tg_rpc_status *st);

/* Keys of the shards of job_id ("" or NULL: every job) the agent behind ch
 * holds committed: up to cap into keys, the total number in *n. */
tg_rpc_code tg_ckpt_list_remote(tg_rpc_channel *ch, const char *job_id, tg_ckpt_key *keys,
                                size_t cap, size_t *n, const tg_ckpt_repl_config *cfg,
                                tg_rpc_status *st);

#endif
