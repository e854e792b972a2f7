/* The coordinator's view of etcd: one key prefix per job, protobuf values,
 * and fencing on every write.
 *
 * Keys (see proto/tardigrade/v1/store.proto for the records):
 *   /tardigrade/jobs/JOB/spec, leader, world, nodes/NODE_ID, faults/SEQ
 *
 * Fencing: once a coordinator has won the election it tells the store the
 * create revision of its leader key. Every write is then a transaction
 * that first compares that revision, so a coordinator that lost its lease
 * (partitioned, paused, replaced) can never write again: its writes fail
 * with ABORTED and it steps down. The world is committed with a second
 * compare on the world key's mod revision, so two worlds can never be
 * given the same generation, even by two coordinators that both believe
 * they lead. */
#ifndef TG_STORE_H
#define TG_STORE_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "common/etcd/etcd.h"
#include "common/rpc/rpc.h"

typedef struct tg_store tg_store;

#define TG_STORE_KEY_MAX 256
/* etcd's default limit is 128 operations per transaction. */
#define TG_STORE_BATCH_OPS 100

/* job_id: 1..63 bytes of [A-Za-z0-9._-]; NULL if invalid. */
tg_store *tg_store_new(tg_etcd *etcd, const char *job_id);
void tg_store_free(tg_store *s);

/* Writes "/tardigrade/jobs/JOB/" + suffix into buf. */
void tg_store_key(const tg_store *s, const char *suffix, char *buf, size_t len);

/* Fences later writes on the leader key's create revision (0: unfenced,
 * used only before an election, e.g. by tools). */
void tg_store_set_leader_revision(tg_store *s, int64_t revision);

/* Reads one record; NOT_FOUND if absent. *out is freed with
 * protobuf_c_message_free_unpacked. mod_revision may be NULL. */
tg_rpc_code tg_store_get(tg_store *s, const char *suffix, const ProtobufCMessageDescriptor *desc,
                         ProtobufCMessage **out, int64_t *mod_revision, tg_rpc_status *st);

/* Calls fn for every record under suffix_prefix (e.g. "nodes/"), in key
 * order. Records that do not decode are skipped and counted in *skipped. */
typedef void (*tg_store_each_fn)(const char *key, ProtobufCMessage *msg, void *user);
tg_rpc_code tg_store_list(tg_store *s, const char *suffix_prefix,
                          const ProtobufCMessageDescriptor *desc, tg_store_each_fn fn, void *user,
                          size_t *skipped, tg_rpc_status *st);

/* Writes records (fenced), TG_STORE_BATCH_OPS per transaction. A NULL
 * message deletes the key. ABORTED: this coordinator is no longer leader. */
tg_rpc_code tg_store_put_batch(tg_store *s, const char *const *suffixes,
                               const ProtobufCMessage *const *msgs, size_t n, tg_rpc_status *st);
tg_rpc_code tg_store_put(tg_store *s, const char *suffix, const ProtobufCMessage *msg,
                         tg_rpc_status *st);

/* Keeps only the newest `keep` records under suffix_prefix (by key order:
 * sequence-numbered keys), deleting the oldest in fenced batches.
 * *remaining (may be NULL) gets how many are left. */
tg_rpc_code tg_store_trim(tg_store *s, const char *suffix_prefix, int64_t keep, int64_t *remaining,
                          tg_rpc_status *st);

/* Commits the world record if the world key is still at expected_mod_revision
 * (0: no world yet) and this coordinator is still leader. ABORTED otherwise.
 * *new_mod_revision gets the revision of the write. */
tg_rpc_code tg_store_commit_world(tg_store *s, const ProtobufCMessage *world,
                                  int64_t expected_mod_revision, int64_t *new_mod_revision,
                                  tg_rpc_status *st);

#endif
