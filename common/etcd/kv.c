/* Key-value verbs of the etcd client: get (single key, prefix, range, at a
 * revision, count- or keys-only), put, delete, compact.
 *
 * Each verb builds one etcd request, runs it through etcd_unary (which
 * owns failover and auth, see conn.c) and copies the answer into a result
 * the caller owns, so no protobuf type leaks into etcd.h. The range
 * helpers are shared with txn.c, whose THEN/ELSE branches may read too. */
#include <stdlib.h>
#include <string.h>

#include "common/etcd/etcd_internal.h"

int etcd_fill_range(Etcdserverpb__RangeRequest *req, const char *key,
                    const tg_etcd_range_opts *opts, uint8_t **end_storage) {
  tg_etcd_range_opts none = {0};
  if (!opts) opts = &none;
  if (etcd_set_range(&req->key, &req->range_end, key, opts->prefix, opts->range_end, end_storage) !=
      0)
    return -1;
  req->limit = opts->limit;
  req->revision = opts->revision;
  req->count_only = opts->count_only != 0;
  req->keys_only = opts->keys_only != 0;
  req->serializable = opts->serializable != 0;
  return 0;
}

int etcd_range_result_copy(tg_etcd_range_result *out, const Etcdserverpb__RangeResponse *r) {
  memset(out, 0, sizeof *out);
  out->revision = r->header ? r->header->revision : 0;
  out->more = r->more != 0;
  out->count = r->count;
  if (r->n_kvs == 0) return 0;
  out->kvs = calloc(r->n_kvs, sizeof *out->kvs);
  if (!out->kvs) return -1;
  for (size_t i = 0; i < r->n_kvs; i++) {
    if (etcd_kv_copy(&out->kvs[i], r->kvs[i]) != 0) {
      tg_etcd_range_result_free(out);
      return -1;
    }
    out->n_kvs = i + 1;
  }
  return 0;
}

void tg_etcd_range_result_free(tg_etcd_range_result *r) {
  if (!r) return;
  for (size_t i = 0; i < r->n_kvs; i++) etcd_kv_clear(&r->kvs[i]);
  free(r->kvs);
  memset(r, 0, sizeof *r);
}

void tg_etcd_put_result_free(tg_etcd_put_result *r) {
  if (!r) return;
  etcd_kv_clear(&r->prev);
  memset(r, 0, sizeof *r);
}

tg_rpc_code tg_etcd_get(tg_etcd *c, const char *key, const tg_etcd_range_opts *opts,
                        tg_etcd_range_result *out, tg_rpc_status *st) {
  if (out) memset(out, 0, sizeof *out);
  if (!c || !key || !out)
    return tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "etcd get: missing argument");
  Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
  uint8_t *end = NULL;
  ProtobufCMessage *resp = NULL;
  tg_rpc_code code;
  if (etcd_fill_range(&req, key, opts, &end) != 0) {
    code = tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED, "etcd get: out of memory");
    goto out;
  }
  code = etcd_unary(c, "/etcdserverpb.KV/Range", &req.base,
                    &etcdserverpb__range_response__descriptor, &resp, st);
  if (code != TG_RPC_OK) goto out;
  if (etcd_range_result_copy(out, (Etcdserverpb__RangeResponse *)resp) != 0)
    code = tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED, "etcd get: out of memory");
out:
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  free(end);
  return code;
}

tg_rpc_code tg_etcd_put(tg_etcd *c, const char *key, const void *value, size_t value_len,
                        const tg_etcd_put_opts *opts, tg_etcd_put_result *out, tg_rpc_status *st) {
  if (out) memset(out, 0, sizeof *out);
  if (!c || !key || (!value && value_len))
    return tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "etcd put: missing argument");
  Etcdserverpb__PutRequest req = ETCDSERVERPB__PUT_REQUEST__INIT;
  etcd_set_key(&req.key, key);
  req.value.data = (uint8_t *)value;
  req.value.len = value_len;
  if (opts) {
    req.lease = opts->lease;
    req.prev_kv = opts->prev_kv != 0;
  }
  ProtobufCMessage *resp = NULL;
  tg_rpc_code code = etcd_unary(c, "/etcdserverpb.KV/Put", &req.base,
                                &etcdserverpb__put_response__descriptor, &resp, st);
  if (code != TG_RPC_OK) return code;
  Etcdserverpb__PutResponse *pr = (Etcdserverpb__PutResponse *)resp;
  if (out) {
    out->revision = pr->header ? pr->header->revision : 0;
    if (pr->prev_kv) {
      if (etcd_kv_copy(&out->prev, pr->prev_kv) != 0)
        code = tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED, "etcd put: out of memory");
      else
        out->has_prev = 1;
    }
  }
  protobuf_c_message_free_unpacked(resp, NULL);
  return code;
}

tg_rpc_code tg_etcd_delete(tg_etcd *c, const char *key, int prefix, int64_t *deleted,
                           int64_t *revision, tg_rpc_status *st) {
  if (deleted) *deleted = 0;
  if (revision) *revision = 0;
  if (!c || !key)
    return tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "etcd delete: missing argument");
  Etcdserverpb__DeleteRangeRequest req = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
  uint8_t *end = NULL;
  if (etcd_set_range(&req.key, &req.range_end, key, prefix, NULL, &end) != 0)
    return tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED, "etcd delete: out of memory");
  ProtobufCMessage *resp = NULL;
  tg_rpc_code code = etcd_unary(c, "/etcdserverpb.KV/DeleteRange", &req.base,
                                &etcdserverpb__delete_range_response__descriptor, &resp, st);
  if (code == TG_RPC_OK) {
    Etcdserverpb__DeleteRangeResponse *dr = (Etcdserverpb__DeleteRangeResponse *)resp;
    if (deleted) *deleted = dr->deleted;
    if (revision) *revision = dr->header ? dr->header->revision : 0;
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  free(end);
  return code;
}

tg_rpc_code tg_etcd_compact(tg_etcd *c, int64_t revision, int physical, tg_rpc_status *st) {
  if (!c || revision <= 0)
    return tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "etcd compact: bad revision %lld",
                             (long long)revision);
  Etcdserverpb__CompactionRequest req = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
  req.revision = revision;
  req.physical = physical != 0;
  ProtobufCMessage *resp = NULL;
  tg_rpc_code code = etcd_unary(c, "/etcdserverpb.KV/Compact", &req.base,
                                &etcdserverpb__compaction_response__descriptor, &resp, st);
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  return code;
}
