/* Fenced, job-scoped protobuf records in etcd; see store.h. */
#include "coordinator/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log/log.h"

struct tg_store {
  tg_etcd *etcd;
  char prefix[96];
  char leader_key[128];
  int64_t leader_revision;
};

static int valid_job_id(const char *id) {
  size_t n = id ? strlen(id) : 0;
  if (n == 0 || n > 63) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = id[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '-'))
      return 0;
  }
  return 1;
}

tg_store *tg_store_new(tg_etcd *etcd, const char *job_id) {
  if (!etcd || !valid_job_id(job_id)) return NULL;
  tg_store *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->etcd = etcd;
  snprintf(s->prefix, sizeof s->prefix, "/tardigrade/jobs/%s/", job_id);
  snprintf(s->leader_key, sizeof s->leader_key, "%sleader", s->prefix);
  return s;
}

void tg_store_free(tg_store *s) { free(s); }

void tg_store_key(const tg_store *s, const char *suffix, char *buf, size_t len) {
  snprintf(buf, len, "%s%s", s->prefix, suffix);
}

void tg_store_set_leader_revision(tg_store *s, int64_t revision) { s->leader_revision = revision; }

tg_rpc_code tg_store_get(tg_store *s, const char *suffix, const ProtobufCMessageDescriptor *desc,
                         ProtobufCMessage **out, int64_t *mod_revision, tg_rpc_status *st) {
  char key[TG_STORE_KEY_MAX];
  tg_etcd_range_result r = {0};
  *out = NULL;
  tg_store_key(s, suffix, key, sizeof key);
  tg_rpc_code code = tg_etcd_get(s->etcd, key, NULL, &r, st);
  if (code != TG_RPC_OK) return code;
  if (r.n_kvs == 0) {
    tg_etcd_range_result_free(&r);
    return tg_rpc_status_set(st, TG_RPC_NOT_FOUND, "%s: no such key", key);
  }
  *out = protobuf_c_message_unpack(desc, NULL, r.kvs[0].value_len, (const uint8_t *)r.kvs[0].value);
  if (mod_revision) *mod_revision = r.kvs[0].mod_revision;
  tg_etcd_range_result_free(&r);
  if (!*out) return tg_rpc_status_set(st, TG_RPC_DATA_LOSS, "%s: record does not decode", key);
  return TG_RPC_OK;
}

tg_rpc_code tg_store_list(tg_store *s, const char *suffix_prefix,
                          const ProtobufCMessageDescriptor *desc, tg_store_each_fn fn, void *user,
                          size_t *skipped, tg_rpc_status *st) {
  char key[TG_STORE_KEY_MAX];
  tg_etcd_range_result r = {0};
  tg_etcd_range_opts opts = {.prefix = 1};
  if (skipped) *skipped = 0;
  tg_store_key(s, suffix_prefix, key, sizeof key);
  tg_rpc_code code = tg_etcd_get(s->etcd, key, &opts, &r, st);
  if (code != TG_RPC_OK) return code;
  for (size_t i = 0; i < r.n_kvs; i++) {
    ProtobufCMessage *m =
        protobuf_c_message_unpack(desc, NULL, r.kvs[i].value_len, (const uint8_t *)r.kvs[i].value);
    if (!m) {
      TG_WARN("store: %s does not decode as %s; skipped", r.kvs[i].key, desc->name);
      if (skipped) (*skipped)++;
      continue;
    }
    fn(r.kvs[i].key, m, user);
  }
  tg_etcd_range_result_free(&r);
  return TG_RPC_OK;
}

/* Packs a message into a malloc'ed buffer. */
static uint8_t *pack(const ProtobufCMessage *msg, size_t *len) {
  *len = protobuf_c_message_get_packed_size(msg);
  uint8_t *buf = malloc(*len ? *len : 1);
  if (buf) protobuf_c_message_pack(msg, buf);
  return buf;
}

/* Adds the leader fence to a transaction, when fenced. */
static int fence(tg_store *s, tg_etcd_txn *t) {
  if (s->leader_revision == 0) return 0;
  return tg_etcd_txn_cmp_create_revision(t, s->leader_key, TG_ETCD_EQ, s->leader_revision);
}

static tg_rpc_code commit_fenced(tg_store *s, tg_etcd_txn *t, int64_t *revision, tg_rpc_status *st) {
  tg_etcd_txn_result r = {0};
  tg_rpc_code code = tg_etcd_txn_commit(s->etcd, t, &r, st);
  if (code == TG_RPC_OK && !r.succeeded)
    code = tg_rpc_status_set(st, TG_RPC_ABORTED, "fenced: this coordinator no longer holds %s",
                             s->leader_key);
  if (code == TG_RPC_OK && revision) *revision = r.revision;
  tg_etcd_txn_result_free(&r);
  return code;
}

tg_rpc_code tg_store_put_batch(tg_store *s, const char *const *suffixes,
                               const ProtobufCMessage *const *msgs, size_t n, tg_rpc_status *st) {
  tg_rpc_code code = TG_RPC_OK;
  for (size_t start = 0; start < n && code == TG_RPC_OK; start += TG_STORE_BATCH_OPS) {
    size_t end = start + TG_STORE_BATCH_OPS < n ? start + TG_STORE_BATCH_OPS : n;
    tg_etcd_txn *t = tg_etcd_txn_new();
    if (!t || fence(s, t) != 0) {
      tg_etcd_txn_free(t);
      return tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (size_t i = start; i < end; i++) {
      char key[TG_STORE_KEY_MAX];
      tg_store_key(s, suffixes[i], key, sizeof key);
      if (!msgs[i]) {
        tg_etcd_txn_delete(t, TG_ETCD_THEN, key, 0);
        continue;
      }
      size_t len;
      uint8_t *buf = pack(msgs[i], &len);
      if (buf) tg_etcd_txn_put(t, TG_ETCD_THEN, key, buf, len, 0);
      free(buf);
    }
    code = commit_fenced(s, t, NULL, st);
    tg_etcd_txn_free(t);
  }
  return code;
}

tg_rpc_code tg_store_put(tg_store *s, const char *suffix, const ProtobufCMessage *msg,
                         tg_rpc_status *st) {
  return tg_store_put_batch(s, &suffix, &msg, 1, st);
}

tg_rpc_code tg_store_trim(tg_store *s, const char *suffix_prefix, int64_t keep, int64_t *remaining,
                          tg_rpc_status *st) {
  char prefix[TG_STORE_KEY_MAX];
  tg_store_key(s, suffix_prefix, prefix, sizeof prefix);
  tg_etcd_range_opts count_opts = {.prefix = 1, .count_only = 1};
  tg_etcd_range_result r = {0};
  tg_rpc_code code = tg_etcd_get(s->etcd, prefix, &count_opts, &r, st);
  int64_t count = r.count;
  tg_etcd_range_result_free(&r);
  if (code != TG_RPC_OK) return code;
  while (count > keep && code == TG_RPC_OK) {
    int64_t excess = count - keep;
    tg_etcd_range_opts oldest = {.prefix = 1, .keys_only = 1,
                                 .limit = excess < TG_STORE_BATCH_OPS ? excess : TG_STORE_BATCH_OPS};
    memset(&r, 0, sizeof r);
    code = tg_etcd_get(s->etcd, prefix, &oldest, &r, st);
    if (code == TG_RPC_OK && r.n_kvs > 0) {
      tg_etcd_txn *t = tg_etcd_txn_new();
      if (!t || fence(s, t) != 0) {
        code = tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED, "out of memory");
      } else {
        for (size_t i = 0; i < r.n_kvs; i++) tg_etcd_txn_delete(t, TG_ETCD_THEN, r.kvs[i].key, 0);
        code = commit_fenced(s, t, NULL, st);
      }
      tg_etcd_txn_free(t);
      count -= (int64_t)r.n_kvs;
    } else if (code == TG_RPC_OK) {
      count = 0; /* raced with another trim */
    }
    tg_etcd_range_result_free(&r);
  }
  if (remaining) *remaining = count;
  return code;
}

tg_rpc_code tg_store_commit_world(tg_store *s, const ProtobufCMessage *world,
                                  int64_t expected_mod_revision, int64_t *new_mod_revision,
                                  tg_rpc_status *st) {
  char key[TG_STORE_KEY_MAX];
  size_t len;
  tg_store_key(s, "world", key, sizeof key);
  uint8_t *buf = pack(world, &len);
  tg_etcd_txn *t = tg_etcd_txn_new();
  tg_rpc_code code;
  if (!buf || !t || fence(s, t) != 0 ||
      tg_etcd_txn_cmp_mod_revision(t, key, TG_ETCD_EQ, expected_mod_revision) != 0 ||
      tg_etcd_txn_put(t, TG_ETCD_THEN, key, buf, len, 0) != 0) {
    code = tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  code = commit_fenced(s, t, new_mod_revision, st);
  if (code == TG_RPC_ABORTED)
    tg_rpc_status_set(st, TG_RPC_ABORTED,
                      "world not committed: leadership lost or the world changed since revision %lld",
                      (long long)expected_mod_revision);
out:
  tg_etcd_txn_free(t);
  free(buf);
  return code;
}
