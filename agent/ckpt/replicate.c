/* Shard replication between agents; see replicate.h for the protocol.
 *
 * Two pieces serve both directions, so the rules live once:
 *   - a chunk sender turns a shard into ShardChunk messages (the push
 *     client sends them on its stream, the FetchShard handler queues them
 *     on its call);
 *   - a chunk receiver checks each incoming chunk against the key, the
 *     limits and the bytes so far, writes it into its sink (straight into a
 *     slot of the local store, or into a buffer for tg_ckpt_fetch_alloc),
 *     and commits only a complete shard whose CRC-64 matches (the PushShard
 *     handler and both fetch clients use it).
 * Server handlers never wait: a push is consumed chunk by chunk in
 * on_message, a fetch reads the local copy, queues its chunks and returns,
 * and on_done gives back the slot of a push that never finished. */
#include "agent/ckpt/replicate.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/ckpt/crc64.h"
#include "common/log/log.h"
#include "proto/tardigrade/v1/replication.pb-c.h"

#define PUSH_PATH "/tardigrade.v1.Replication/PushShard"
#define FETCH_PATH "/tardigrade.v1.Replication/FetchShard"
#define LIST_PATH "/tardigrade.v1.Replication/ListShards"
/* Room in a request for everything but the chunk's data. */
#define CHUNK_OVERHEAD_BYTES 4096
#define SMALL_REQUEST_BYTES 1024

typedef Tardigrade__V1__ShardChunk ShardChunk;
typedef Tardigrade__V1__ShardKey ShardKey;

/* The configuration with defaults applied. */
typedef struct {
  uint64_t max_shard_bytes;
  size_t chunk_bytes;
  int64_t deadline_ms;
  const char *node_id;
} repl_limits;

struct tg_ckpt_repl_server {
  tg_ckpt_store *store;
  repl_limits limits;
  tg_rpc_method methods[3];
};

static repl_limits limits_of(const tg_ckpt_repl_config *cfg, const tg_ckpt_store *store) {
  repl_limits l = {
      .max_shard_bytes = store != NULL ? tg_ckpt_store_slot_bytes(store) : UINT64_MAX,
      .chunk_bytes = TG_CKPT_REPL_DEFAULT_CHUNK_BYTES,
      .deadline_ms = TG_CKPT_REPL_DEFAULT_DEADLINE_MS,
      .node_id = "",
  };
  if (cfg == NULL) return l;
  if (cfg->max_shard_bytes != 0 && cfg->max_shard_bytes < l.max_shard_bytes) {
    l.max_shard_bytes = cfg->max_shard_bytes;
  }
  if (cfg->chunk_bytes != 0) l.chunk_bytes = cfg->chunk_bytes;
  if (l.chunk_bytes > TG_CKPT_REPL_MAX_CHUNK_BYTES) l.chunk_bytes = TG_CKPT_REPL_MAX_CHUNK_BYTES;
  if (cfg->deadline_ms > 0) l.deadline_ms = cfg->deadline_ms;
  if (cfg->node_id != NULL) l.node_id = cfg->node_id;
  return l;
}

/* ----------------------------------------------------------------- keys */

/* A key from the wire; 0, or -1 if it is missing or malformed. */
static int key_from_proto(const ShardKey *pk, tg_ckpt_key *k) {
  if (pk == NULL || pk->job_id == NULL) return -1;
  size_t n = strnlen(pk->job_id, TG_CKPT_JOB_ID_MAX);
  if (n == TG_CKPT_JOB_ID_MAX) return -1;
  memset(k, 0, sizeof(*k));
  memcpy(k->job_id, pk->job_id, n);
  k->generation = pk->generation;
  k->step = pk->step;
  k->shard = pk->shard;
  k->world_size = pk->world_size;
  return tg_ckpt_key_valid(k) == TG_CKPT_OK ? 0 : -1;
}

/* pk points into k: k must outlive pk. */
static void key_to_proto(const tg_ckpt_key *k, ShardKey *pk) {
  pk->job_id = (char *)k->job_id;
  pk->generation = k->generation;
  pk->step = k->step;
  pk->shard = k->shard;
  pk->world_size = k->world_size;
}

/* The gRPC status for a store result. */
static tg_rpc_code store_status(int rc, const char *what, tg_rpc_status *st) {
  switch (rc) {
    case TG_CKPT_OK:
      return tg_rpc_status_set(st, TG_RPC_OK, "%s", what);
    case TG_CKPT_NOT_FOUND:
      return tg_rpc_status_set(st, TG_RPC_NOT_FOUND, "%s: no committed shard with that key", what);
    case TG_CKPT_CORRUPT:
      return tg_rpc_status_set(st, TG_RPC_DATA_LOSS, "%s: the stored copy fails its CRC-64", what);
    case TG_CKPT_FULL:
      return tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED,
                               "%s: checkpoint store full (every slot kept or being written)",
                               what);
    case TG_CKPT_TOO_LARGE:
      return tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED, "%s: shard larger than a store slot",
                               what);
    case TG_CKPT_BUSY:
      return tg_rpc_status_set(st, TG_RPC_UNAVAILABLE, "%s: shard being replaced; retry", what);
    case TG_CKPT_LOST:
      return tg_rpc_status_set(st, TG_RPC_ABORTED, "%s: store slot reclaimed during the write",
                               what);
    case TG_CKPT_INVALID:
      return tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "%s: invalid shard key", what);
    default:
      return tg_rpc_status_set(st, TG_RPC_INTERNAL, "%s: store error %s", what,
                               tg_ckpt_result_name(rc));
  }
}

/* --------------------------------------------------------- chunk sender */

typedef int (*send_fn)(void *ctx, const ProtobufCMessage *msg);

/* Sends a shard as chunks; the first carries key, size and checksum. An
 * empty shard is one empty chunk. 0, or -1 when a send failed. */
static int send_chunks(const tg_ckpt_key *key, const unsigned char *bytes, size_t len,
                       uint64_t crc64, const repl_limits *lim, send_fn send, void *ctx) {
  ShardKey pk = TARDIGRADE__V1__SHARD_KEY__INIT;
  key_to_proto(key, &pk);
  size_t off = 0;
  do {
    ShardChunk c = TARDIGRADE__V1__SHARD_CHUNK__INIT;
    size_t n = len - off < lim->chunk_bytes ? len - off : lim->chunk_bytes;
    if (off == 0) {
      c.key = &pk;
      c.total_bytes = len;
      c.crc64 = crc64;
      c.source_node_id = (char *)lim->node_id;
    }
    c.offset = off;
    c.data.len = n;
    c.data.data = (uint8_t *)(bytes + off);
    if (send(ctx, &c.base) != 0) return -1;
    off += n;
  } while (off < len);
  return 0;
}

static int send_on_stream(void *ctx, const ProtobufCMessage *msg) {
  return tg_rpc_stream_send(ctx, msg, -1);
}

static int send_on_call(void *ctx, const ProtobufCMessage *msg) {
  return tg_rpc_call_send(ctx, msg);
}

/* ------------------------------------------------------- chunk receiver */

/* Where a receiver puts the bytes: a slot of a store (through a writer),
 * or, when it has no store, a buffer of its own for the caller. Either way
 * it counts the bytes and checksums them as they arrive. */
typedef struct {
  tg_ckpt_store *store; /* NULL: into buf */
  tg_ckpt_writer *w;    /* store sink, while open */
  unsigned char *buf;   /* buffer sink, while open or once handed over */
  uint64_t buf_written;
  uint64_t buf_crc;
  int open;
} sink;

static int sink_begin(sink *k, const tg_ckpt_key *key, uint64_t len) {
  if (k->store != NULL) {
    int rc = tg_ckpt_writer_begin(k->store, key, len, &k->w);
    k->open = rc == TG_CKPT_OK;
    return rc;
  }
  if ((uint64_t)(size_t)len != len) return TG_CKPT_TOO_LARGE;
  k->buf = malloc(len > 0 ? (size_t)len : 1);
  if (k->buf == NULL) return TG_CKPT_SYSTEM;
  k->buf_written = 0;
  k->buf_crc = 0;
  k->open = 1;
  return TG_CKPT_OK;
}

/* The caller checked that n fits in what was announced. */
static int sink_append(sink *k, const void *bytes, size_t n) {
  if (k->store != NULL) return tg_ckpt_writer_append(k->w, bytes, n);
  if (n > 0) memcpy(k->buf + k->buf_written, bytes, n);
  k->buf_crc = tg_crc64_update(k->buf_crc, bytes, n);
  k->buf_written += n;
  return TG_CKPT_OK;
}

static uint64_t sink_written(const sink *k) {
  return k->store != NULL ? tg_ckpt_writer_written(k->w) : k->buf_written;
}

static uint64_t sink_checksum(const sink *k) {
  return k->store != NULL ? tg_ckpt_writer_checksum(k->w) : k->buf_crc;
}

/* Publishes: commits the store slot, or keeps buf for the caller. */
static int sink_commit(sink *k) {
  k->open = 0;
  if (k->store == NULL) return TG_CKPT_OK;
  int rc = tg_ckpt_writer_commit(k->w);
  k->w = NULL;
  return rc;
}

static void sink_abort(sink *k) {
  if (!k->open) return;
  k->open = 0;
  tg_ckpt_writer_abort(k->w);
  k->w = NULL;
  free(k->buf);
  k->buf = NULL;
}

typedef struct {
  sink out;    /* closed before the first chunk and once finished */
  int started;
  uint64_t total_bytes;
  uint64_t crc64;
  tg_ckpt_key key;
} receiver;

/* Takes one chunk; `expect` (may be NULL) is the key the shard must have. */
static tg_rpc_code receiver_take(receiver *rx, const repl_limits *lim, const tg_ckpt_key *expect,
                                 const ShardChunk *c, tg_rpc_status *st) {
  if (!rx->started) {
    if (key_from_proto(c->key, &rx->key) != 0) {
      return tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "the first chunk has no valid key");
    }
    if (expect != NULL && !tg_ckpt_key_equal(expect, &rx->key)) {
      return tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT,
                               "got step %" PRIu64 " shard %d of job %s, not the one asked for",
                               rx->key.step, rx->key.shard, rx->key.job_id);
    }
    if (c->total_bytes > lim->max_shard_bytes) {
      return tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED,
                               "shard of %" PRIu64 " bytes exceeds the limit of %" PRIu64,
                               c->total_bytes, lim->max_shard_bytes);
    }
    int rc = sink_begin(&rx->out, &rx->key, c->total_bytes);
    if (rc != TG_CKPT_OK) return store_status(rc, "cannot store the shard", st);
    rx->started = 1;
    rx->total_bytes = c->total_bytes;
    rx->crc64 = c->crc64;
  } else if (c->key != NULL) {
    tg_ckpt_key k;
    if (key_from_proto(c->key, &k) != 0 || !tg_ckpt_key_equal(&k, &rx->key)) {
      return tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "a later chunk names another shard");
    }
  }
  if (!rx->out.open) return tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "chunk after the end");
  if (c->data.len > lim->chunk_bytes) {
    return tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED,
                             "chunk of %zu bytes exceeds the limit of %zu", c->data.len,
                             lim->chunk_bytes);
  }
  uint64_t written = sink_written(&rx->out);
  if (c->offset != written) {
    return tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT,
                             "chunk at offset %" PRIu64 ", expected %" PRIu64, c->offset, written);
  }
  if (c->data.len > rx->total_bytes - written) {
    return tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT,
                             "chunks carry more than the %" PRIu64 " bytes announced",
                             rx->total_bytes);
  }
  return store_status(sink_append(&rx->out, c->data.data, c->data.len), "chunk stored", st);
}

static void receiver_abort(receiver *rx) { sink_abort(&rx->out); }

/* The last chunk came: commit if complete and the checksum matches. */
static tg_rpc_code receiver_commit(receiver *rx, tg_rpc_status *st) {
  tg_rpc_code code;
  if (!rx->out.open) {
    code = tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "no chunks");
  } else if (sink_written(&rx->out) != rx->total_bytes) {
    code = tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT,
                             "got %" PRIu64 " of the %" PRIu64 " bytes announced; nothing stored",
                             sink_written(&rx->out), rx->total_bytes);
  } else if (sink_checksum(&rx->out) != rx->crc64) {
    code = tg_rpc_status_set(st, TG_RPC_DATA_LOSS,
                             "crc64 mismatch: announced %016" PRIx64 ", data has %016" PRIx64
                             "; nothing stored",
                             rx->crc64, sink_checksum(&rx->out));
  } else {
    return store_status(sink_commit(&rx->out), "stored", st);
  }
  receiver_abort(rx);
  return code;
}

/* --------------------------------------------------------------- server */

static void refuse(tg_rpc_call *call, const tg_rpc_status *st) {
  TG_WARN("replication %s from %s: %s (%s)", tg_rpc_call_method(call)->path, tg_rpc_call_peer(call),
          st->message, tg_rpc_code_name(st->code));
  tg_rpc_call_finish(call, st->code, st->message, NULL);
}

static void push_on_start(tg_rpc_call *call, void *user) {
  tg_ckpt_repl_server *rs = user;
  receiver *rx = calloc(1, sizeof(*rx));
  if (rx == NULL) {
    tg_rpc_call_finish(call, TG_RPC_RESOURCE_EXHAUSTED, "agent out of memory", NULL);
    return;
  }
  rx->out.store = rs->store;
  tg_rpc_call_set_data(call, rx);
}

static void push_on_message(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  tg_ckpt_repl_server *rs = user;
  receiver *rx = tg_rpc_call_data(call);
  tg_rpc_status st = {TG_RPC_OK, ""};
  if (rx == NULL || (rx->started && !rx->out.open)) return; /* already refused */
  if (receiver_take(rx, &rs->limits, NULL, (const ShardChunk *)msg, &st) != TG_RPC_OK) {
    receiver_abort(rx);
    rx->started = 1;
    refuse(call, &st);
  }
}

static void push_on_half_close(tg_rpc_call *call, void *user) {
  receiver *rx = tg_rpc_call_data(call);
  tg_rpc_status st = {TG_RPC_OK, ""};
  if (rx == NULL || (rx->started && !rx->out.open)) return;
  if (receiver_commit(rx, &st) != TG_RPC_OK) {
    refuse(call, &st);
    return;
  }
  Tardigrade__V1__PushShardResponse resp = TARDIGRADE__V1__PUSH_SHARD_RESPONSE__INIT;
  resp.stored = 1;
  tg_rpc_call_finish(call, TG_RPC_OK, NULL, &resp.base);
}

static void push_on_done(tg_rpc_call *call, int cancelled, void *user) {
  receiver *rx = tg_rpc_call_data(call);
  if (rx == NULL) return;
  receiver_abort(rx);
  free(rx);
}

static void fetch_on_message(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  tg_ckpt_repl_server *rs = user;
  const Tardigrade__V1__FetchShardRequest *req = (const Tardigrade__V1__FetchShardRequest *)msg;
  tg_rpc_status st = {TG_RPC_OK, ""};
  tg_ckpt_key key;
  void *bytes = NULL;
  size_t len = 0;
  uint64_t crc = 0;
  if (key_from_proto(req->key, &key) != 0) {
    tg_rpc_status_set(&st, TG_RPC_INVALID_ARGUMENT, "no valid shard key");
    goto refused;
  }
  int rc = tg_ckpt_store_read_alloc(rs->store, &key, &bytes, &len, &crc);
  if (rc != TG_CKPT_OK) {
    store_status(rc, "fetch", &st);
    goto refused;
  }
  if (send_chunks(&key, bytes, len, crc, &rs->limits, send_on_call, call) == 0) {
    tg_rpc_call_finish(call, TG_RPC_OK, NULL, NULL);
  }
  free(bytes);
  return;
refused:
  if (st.code == TG_RPC_NOT_FOUND) {
    tg_rpc_call_finish(call, st.code, st.message, NULL); /* routine: not logged */
  } else {
    refuse(call, &st);
  }
}

static void list_on_message(tg_rpc_call *call, const ProtobufCMessage *msg, void *user) {
  tg_ckpt_repl_server *rs = user;
  const Tardigrade__V1__ListShardsRequest *req = (const Tardigrade__V1__ListShardsRequest *)msg;
  const char *job = req->job_id != NULL && req->job_id[0] != '\0' ? req->job_id : NULL;
  size_t cap = tg_ckpt_store_slots(rs->store);
  tg_ckpt_key *keys = calloc(cap, sizeof(*keys));
  ShardKey *pks = calloc(cap, sizeof(*pks));
  ShardKey **ptrs = calloc(cap, sizeof(*ptrs));
  if (keys == NULL || pks == NULL || ptrs == NULL) {
    tg_rpc_call_finish(call, TG_RPC_RESOURCE_EXHAUSTED, "agent out of memory", NULL);
    goto out;
  }
  size_t n = tg_ckpt_store_list(rs->store, job, keys, cap);
  if (n > cap) n = cap;
  for (size_t i = 0; i < n; i++) {
    tardigrade__v1__shard_key__init(&pks[i]);
    key_to_proto(&keys[i], &pks[i]);
    ptrs[i] = &pks[i];
  }
  Tardigrade__V1__ListShardsResponse resp = TARDIGRADE__V1__LIST_SHARDS_RESPONSE__INIT;
  resp.n_shards = n;
  resp.shards = ptrs;
  tg_rpc_call_finish(call, TG_RPC_OK, NULL, &resp.base);
out:
  free(ptrs);
  free(pks);
  free(keys);
}

tg_ckpt_repl_server *tg_ckpt_repl_server_new(tg_ckpt_store *store, const tg_ckpt_repl_config *cfg) {
  if (store == NULL) return NULL;
  tg_ckpt_repl_server *rs = calloc(1, sizeof(*rs));
  if (rs == NULL) return NULL;
  rs->store = store;
  rs->limits = limits_of(cfg, store);
  rs->methods[0] = (tg_rpc_method){
      .path = PUSH_PATH,
      .kind = TG_RPC_CLIENT_STREAM,
      .request = &tardigrade__v1__shard_chunk__descriptor,
      .response = &tardigrade__v1__push_shard_response__descriptor,
      .max_request_bytes = rs->limits.chunk_bytes + CHUNK_OVERHEAD_BYTES,
      .on_start = push_on_start,
      .on_message = push_on_message,
      .on_half_close = push_on_half_close,
      .on_done = push_on_done,
      .user = rs,
  };
  rs->methods[1] = (tg_rpc_method){
      .path = FETCH_PATH,
      .kind = TG_RPC_SERVER_STREAM,
      .request = &tardigrade__v1__fetch_shard_request__descriptor,
      .response = &tardigrade__v1__shard_chunk__descriptor,
      .max_request_bytes = SMALL_REQUEST_BYTES,
      .on_message = fetch_on_message,
      .user = rs,
  };
  rs->methods[2] = (tg_rpc_method){
      .path = LIST_PATH,
      .kind = TG_RPC_UNARY,
      .request = &tardigrade__v1__list_shards_request__descriptor,
      .response = &tardigrade__v1__list_shards_response__descriptor,
      .max_request_bytes = SMALL_REQUEST_BYTES,
      .on_message = list_on_message,
      .user = rs,
  };
  return rs;
}

size_t tg_ckpt_repl_queued_sends(const tg_ckpt_store *store, const tg_ckpt_repl_config *cfg) {
  repl_limits lim = limits_of(cfg, store);
  /* Every chunk of the largest shard, plus the final status, plus one. */
  uint64_t need = lim.max_shard_bytes / lim.chunk_bytes + 3;
  return need > TG_RPC_DEFAULT_MAX_QUEUED_SENDS ? (size_t)need : TG_RPC_DEFAULT_MAX_QUEUED_SENDS;
}

int tg_ckpt_repl_server_register(tg_ckpt_repl_server *rs, tg_rpc_server *srv) {
  for (size_t i = 0; i < sizeof(rs->methods) / sizeof(rs->methods[0]); i++) {
    if (tg_rpc_server_register(srv, &rs->methods[i]) != 0) return -1;
  }
  return 0;
}

void tg_ckpt_repl_server_free(tg_ckpt_repl_server *rs) { free(rs); }

/* --------------------------------------------------------------- client */

tg_rpc_code tg_ckpt_push_bytes(tg_rpc_channel *ch, const tg_ckpt_key *key, const void *bytes,
                               size_t len, uint64_t crc64, const tg_ckpt_repl_config *cfg,
                               tg_rpc_status *st) {
  tg_rpc_status local = {TG_RPC_OK, ""};
  tg_rpc_status *out = st != NULL ? st : &local;
  repl_limits lim = limits_of(cfg, NULL);
  if (ch == NULL || tg_ckpt_key_valid(key) != TG_CKPT_OK || (bytes == NULL && len > 0)) {
    return tg_rpc_status_set(out, TG_RPC_INVALID_ARGUMENT, "push: bad arguments");
  }
  if (len > lim.max_shard_bytes) {
    return tg_rpc_status_set(out, TG_RPC_RESOURCE_EXHAUSTED,
                             "push: shard of %zu bytes exceeds the limit of %" PRIu64, len,
                             lim.max_shard_bytes);
  }
  tg_rpc_call_opts opts = {.deadline_ms = lim.deadline_ms};
  tg_rpc_stream *s = tg_rpc_stream_open(
      ch, PUSH_PATH, &tardigrade__v1__push_shard_response__descriptor, &opts, out);
  if (s == NULL) return out->code;
  /* A failed send ends the stream; the receive below reports why. */
  if (send_chunks(key, bytes, len, crc64, &lim, send_on_stream, s) == 0) {
    tg_rpc_stream_close_send(s);
  }
  int stored = 0;
  for (;;) {
    ProtobufCMessage *msg = NULL;
    tg_rpc_recv_result r = tg_rpc_stream_recv(s, &msg, -1, out);
    if (r == TG_RPC_RECV_END) break;
    if (r == TG_RPC_RECV_TIMEOUT) {
      tg_rpc_status_set(out, TG_RPC_DEADLINE_EXCEEDED, "push: no answer before the deadline");
      break;
    }
    stored = ((Tardigrade__V1__PushShardResponse *)msg)->stored;
    protobuf_c_message_free_unpacked(msg, NULL);
  }
  tg_rpc_stream_free(s);
  if (out->code == TG_RPC_OK && !stored) {
    tg_rpc_status_set(out, TG_RPC_INTERNAL, "push: the buddy answered without storing the shard");
  }
  return out->code;
}

tg_rpc_code tg_ckpt_push(tg_ckpt_store *store, tg_rpc_channel *ch, const tg_ckpt_key *key,
                         const tg_ckpt_repl_config *cfg, tg_rpc_status *st) {
  void *bytes = NULL;
  size_t len = 0;
  uint64_t crc = 0;
  if (store == NULL) return tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "push: no store");
  int rc = tg_ckpt_store_read_alloc(store, key, &bytes, &len, &crc);
  if (rc != TG_CKPT_OK) return store_status(rc, "push: local copy", st);
  tg_ckpt_repl_config with_store = cfg != NULL ? *cfg : (tg_ckpt_repl_config){0};
  repl_limits lim = limits_of(cfg, store);
  with_store.max_shard_bytes = lim.max_shard_bytes;
  tg_rpc_code code = tg_ckpt_push_bytes(ch, key, bytes, len, crc, &with_store, st);
  free(bytes);
  return code;
}

/* Runs one FetchShard call into rx (whose sink is set) and commits it. */
static tg_rpc_code fetch_into(receiver *rx, tg_rpc_channel *ch, const tg_ckpt_key *key,
                              const repl_limits *lim, tg_rpc_status *out) {
  tg_rpc_call_opts opts = {.deadline_ms = lim->deadline_ms};
  tg_rpc_stream *s =
      tg_rpc_stream_open(ch, FETCH_PATH, &tardigrade__v1__shard_chunk__descriptor, &opts, out);
  if (s == NULL) return out->code;
  Tardigrade__V1__FetchShardRequest req = TARDIGRADE__V1__FETCH_SHARD_REQUEST__INIT;
  ShardKey pk = TARDIGRADE__V1__SHARD_KEY__INIT;
  key_to_proto(key, &pk);
  req.key = &pk;
  if (tg_rpc_stream_send(s, &req.base, -1) == 0) tg_rpc_stream_close_send(s);
  tg_rpc_code code = TG_RPC_OK;
  for (;;) {
    ProtobufCMessage *msg = NULL;
    tg_rpc_recv_result r = tg_rpc_stream_recv(s, &msg, -1, out);
    if (r == TG_RPC_RECV_END) {
      code = out->code;
      break;
    }
    if (r == TG_RPC_RECV_TIMEOUT) {
      code =
          tg_rpc_status_set(out, TG_RPC_DEADLINE_EXCEEDED, "fetch: no chunk before the deadline");
      break;
    }
    code = receiver_take(rx, lim, key, (const ShardChunk *)msg, out);
    protobuf_c_message_free_unpacked(msg, NULL);
    if (code != TG_RPC_OK) break;
  }
  if (code == TG_RPC_OK) code = receiver_commit(rx, out);
  receiver_abort(rx);
  tg_rpc_stream_free(s);
  return code;
}

tg_rpc_code tg_ckpt_fetch(tg_ckpt_store *store, tg_rpc_channel *ch, const tg_ckpt_key *key,
                          const tg_ckpt_repl_config *cfg, tg_rpc_status *st) {
  tg_rpc_status local = {TG_RPC_OK, ""};
  tg_rpc_status *out = st != NULL ? st : &local;
  if (store == NULL || ch == NULL || tg_ckpt_key_valid(key) != TG_CKPT_OK) {
    return tg_rpc_status_set(out, TG_RPC_INVALID_ARGUMENT, "fetch: bad arguments");
  }
  repl_limits lim = limits_of(cfg, store);
  receiver rx = {.out = {.store = store}};
  return fetch_into(&rx, ch, key, &lim, out);
}

tg_rpc_code tg_ckpt_fetch_alloc(tg_rpc_channel *ch, const tg_ckpt_key *key,
                                const tg_ckpt_repl_config *cfg, void **bytes, size_t *len,
                                uint64_t *crc64, tg_rpc_status *st) {
  tg_rpc_status local = {TG_RPC_OK, ""};
  tg_rpc_status *out = st != NULL ? st : &local;
  if (bytes != NULL) *bytes = NULL;
  if (ch == NULL || bytes == NULL || len == NULL || tg_ckpt_key_valid(key) != TG_CKPT_OK) {
    return tg_rpc_status_set(out, TG_RPC_INVALID_ARGUMENT, "fetch: bad arguments");
  }
  repl_limits lim = limits_of(cfg, NULL);
  if (lim.max_shard_bytes > TG_CKPT_MAX_SHARD_BYTES) lim.max_shard_bytes = TG_CKPT_MAX_SHARD_BYTES;
  receiver rx = {0};
  tg_rpc_code code = fetch_into(&rx, ch, key, &lim, out);
  if (code != TG_RPC_OK) return code;
  *bytes = rx.out.buf;
  *len = (size_t)rx.total_bytes;
  if (crc64 != NULL) *crc64 = rx.crc64;
  return TG_RPC_OK;
}

tg_rpc_code tg_ckpt_list_remote(tg_rpc_channel *ch, const char *job_id, tg_ckpt_key *keys,
                                size_t cap, size_t *n, const tg_ckpt_repl_config *cfg,
                                tg_rpc_status *st) {
  repl_limits lim = limits_of(cfg, NULL);
  Tardigrade__V1__ListShardsRequest req = TARDIGRADE__V1__LIST_SHARDS_REQUEST__INIT;
  if (ch == NULL || n == NULL || (keys == NULL && cap > 0)) {
    return tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "list: bad arguments");
  }
  *n = 0;
  if (job_id != NULL) req.job_id = (char *)job_id;
  tg_rpc_call_opts opts = {.deadline_ms = lim.deadline_ms};
  ProtobufCMessage *msg = NULL;
  tg_rpc_code code = tg_rpc_unary(
      ch, LIST_PATH, &req.base, &tardigrade__v1__list_shards_response__descriptor, &msg, &opts, st);
  if (code != TG_RPC_OK) return code;
  const Tardigrade__V1__ListShardsResponse *resp = (const Tardigrade__V1__ListShardsResponse *)msg;
  for (size_t i = 0; i < resp->n_shards; i++) {
    tg_ckpt_key k;
    if (key_from_proto(resp->shards[i], &k) != 0) continue; /* a peer's garbage: skipped */
    if (*n < cap) keys[*n] = k;
    (*n)++;
  }
  protobuf_c_message_free_unpacked(msg, NULL);
  return TG_RPC_OK;
}
