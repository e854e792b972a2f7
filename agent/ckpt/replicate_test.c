/* Tests of shard replication (replicate.h) through a real gRPC server on
 * 127.0.0.1 serving a second store: push and fetch back bitwise equal,
 * list, a fetch into memory (tg_ckpt_fetch_alloc), the send queue a
 * server needs for a whole shard, and every refusal (wrong checksum,
 * oversized, chunks out of order or short, corrupt source, missing shard,
 * full store), each checked to leave nothing committed and no slot held. Calls have deadlines; shm
 * names are unique per process and unlinked at exit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/ckpt/crc64.h"
#include "agent/ckpt/replicate.h"
#include "agent/ckpt/store.h"
#include "agent/ckpt/testdata/test_names.h"
#include "common/log/log.h"
#include "common/rpc/rpc.h"
#include "proto/tardigrade/v1/replication.pb-c.h"

#define CALL_DEADLINE_MS 5000
#define SERVER_MAX_SHARD_BYTES (256u << 10)
#define CHUNK_BYTES (64u << 10)

typedef struct {
  char local_name[96], buddy_name[96];
  tg_ckpt_store *local; /* this node */
  tg_ckpt_store *buddy; /* the node behind the server */
  tg_rpc_server *srv;
  tg_ckpt_repl_server *repl;
  tg_rpc_channel *ch;
  tg_ckpt_repl_config cfg; /* the client's */
} fixture;

static void fill(unsigned char *buf, size_t len, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
  for (size_t i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    buf[i] = (unsigned char)x;
  }
}

static tg_ckpt_key key_of(const char *job, uint64_t step, int32_t shard) {
  tg_ckpt_key k;
  memset(&k, 0, sizeof(k));
  snprintf(k.job_id, sizeof(k.job_id), "%s", job);
  k.generation = 2;
  k.step = step;
  k.shard = shard;
  k.world_size = 4;
  return k;
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  char err[256] = "";
  tg_ckpt_test_name("local", f->local_name, sizeof(f->local_name));
  tg_ckpt_test_name("buddy", f->buddy_name, sizeof(f->buddy_name));
  f->local = tg_ckpt_store_create(f->local_name, 4 << 20, 4, 1, err, sizeof(err));
  f->buddy = tg_ckpt_store_create(f->buddy_name, 4 << 20, 4, 1, err, sizeof(err));
  if (f->local == NULL || f->buddy == NULL) fail_msg("stores: %s", err);
  tg_ckpt_repl_config server_cfg = {.max_shard_bytes = SERVER_MAX_SHARD_BYTES,
                                    .chunk_bytes = CHUNK_BYTES};
  f->srv = tg_rpc_server_new(NULL, err, sizeof(err));
  assert_non_null(f->srv);
  f->repl = tg_ckpt_repl_server_new(f->buddy, &server_cfg);
  assert_non_null(f->repl);
  assert_int_equal(tg_ckpt_repl_server_register(f->repl, f->srv), 0);
  int port = tg_rpc_server_listen(f->srv, "127.0.0.1:0", NULL, err, sizeof(err));
  if (port <= 0) fail_msg("listen: %s", err);
  assert_int_equal(tg_rpc_server_start(f->srv, err, sizeof(err)), 0);
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", port);
  f->ch = tg_rpc_channel_new(target, NULL, err, sizeof(err));
  assert_non_null(f->ch);
  f->cfg = (tg_ckpt_repl_config){
      .chunk_bytes = CHUNK_BYTES, .deadline_ms = CALL_DEADLINE_MS, .node_id = "node-a"};
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  tg_rpc_channel_free(f->ch);
  tg_rpc_server_free(f->srv, 1000);
  tg_ckpt_repl_server_free(f->repl);
  tg_ckpt_store_close(f->local);
  tg_ckpt_store_close(f->buddy);
  free(f);
  return 0;
}

/* Nothing of `key` on the buddy, and every slot free again. */
static void assert_buddy_untouched(fixture *f, const tg_ckpt_key *key) {
  size_t len = 0;
  assert_int_equal(tg_ckpt_store_read(f->buddy, key, NULL, 0, &len, NULL), TG_CKPT_NOT_FOUND);
  assert_int_equal(tg_ckpt_store_free_slots(f->buddy), tg_ckpt_store_slots(f->buddy));
}

static void test_push_then_fetch_back_bitwise_equal(void **state) {
  fixture *f = *state;
  size_t len = 200001; /* four chunks, the last one short */
  unsigned char *in = malloc(len), *out = malloc(len);
  fill(in, len, 5);
  tg_ckpt_key k = key_of("job-p", 100, 3);
  assert_int_equal(tg_ckpt_store_write(f->local, &k, in, len), TG_CKPT_OK);
  tg_rpc_status st;
  if (tg_ckpt_push(f->local, f->ch, &k, &f->cfg, &st) != TG_RPC_OK)
    fail_msg("push: %s", st.message);

  size_t got = 0;
  uint64_t crc = 0;
  assert_int_equal(tg_ckpt_store_read(f->buddy, &k, out, len, &got, &crc), TG_CKPT_OK);
  assert_int_equal(got, len);
  assert_memory_equal(in, out, len);
  assert_true(crc == tg_crc64_update(0, in, len));

  /* This node loses its copy and fetches it back. */
  assert_int_equal(tg_ckpt_store_delete(f->local, &k), TG_CKPT_OK);
  memset(out, 0, len);
  if (tg_ckpt_fetch(f->local, f->ch, &k, &f->cfg, &st) != TG_RPC_OK) {
    fail_msg("fetch: %s", st.message);
  }
  assert_int_equal(tg_ckpt_store_read(f->local, &k, out, len, &got, NULL), TG_CKPT_OK);
  assert_int_equal(got, len);
  assert_memory_equal(in, out, len);

  /* An empty shard travels as one empty chunk. */
  tg_ckpt_key empty = key_of("job-p", 100, 0);
  assert_int_equal(tg_ckpt_store_write(f->local, &empty, NULL, 0), TG_CKPT_OK);
  assert_int_equal(tg_ckpt_push(f->local, f->ch, &empty, &f->cfg, &st), TG_RPC_OK);
  assert_int_equal(tg_ckpt_store_read(f->buddy, &empty, NULL, 0, &got, NULL), TG_CKPT_OK);
  assert_int_equal(got, 0);
  free(in);
  free(out);
}

static void test_list_shows_committed(void **state) {
  fixture *f = *state;
  unsigned char in[1000] = {7};
  tg_ckpt_key a = key_of("job-l", 1, 0), b = key_of("job-l", 1, 1), c = key_of("job-m", 4, 2);
  assert_int_equal(tg_ckpt_store_write(f->buddy, &a, in, sizeof(in)), TG_CKPT_OK);
  assert_int_equal(tg_ckpt_store_write(f->buddy, &b, in, sizeof(in)), TG_CKPT_OK);
  assert_int_equal(tg_ckpt_store_write(f->buddy, &c, in, sizeof(in)), TG_CKPT_OK);
  tg_ckpt_writer *w = NULL; /* in flight: not listed */
  tg_ckpt_key d = key_of("job-l", 2, 0);
  assert_int_equal(tg_ckpt_writer_begin(f->buddy, &d, 10, &w), TG_CKPT_OK);

  tg_ckpt_key keys[8];
  size_t n = 0;
  tg_rpc_status st;
  assert_int_equal(tg_ckpt_list_remote(f->ch, "job-l", keys, 8, &n, &f->cfg, &st), TG_RPC_OK);
  assert_int_equal(n, 2);
  for (size_t i = 0; i < n; i++) {
    assert_true(tg_ckpt_key_equal(&keys[i], &a) || tg_ckpt_key_equal(&keys[i], &b));
  }
  assert_int_equal(tg_ckpt_list_remote(f->ch, "", keys, 1, &n, &f->cfg, &st), TG_RPC_OK);
  assert_int_equal(n, 3);
  assert_int_equal(tg_ckpt_list_remote(f->ch, "job-none", keys, 8, &n, &f->cfg, &st), TG_RPC_OK);
  assert_int_equal(n, 0);
  tg_ckpt_writer_abort(w);
}

static void test_push_with_wrong_checksum_is_refused(void **state) {
  fixture *f = *state;
  unsigned char in[100000];
  fill(in, sizeof(in), 9);
  tg_ckpt_key k = key_of("job-x", 1, 1);
  tg_rpc_status st;
  uint64_t crc = tg_crc64_update(0, in, sizeof(in));
  assert_int_equal(tg_ckpt_push_bytes(f->ch, &k, in, sizeof(in), crc ^ 1, &f->cfg, &st),
                   TG_RPC_DATA_LOSS);
  assert_non_null(strstr(st.message, "crc64 mismatch"));
  assert_buddy_untouched(f, &k);
  /* The same bytes with the right checksum are accepted. */
  assert_int_equal(tg_ckpt_push_bytes(f->ch, &k, in, sizeof(in), crc, &f->cfg, &st), TG_RPC_OK);
}

static void test_oversized_push_is_refused(void **state) {
  fixture *f = *state;
  size_t len = SERVER_MAX_SHARD_BYTES + 1;
  unsigned char *in = calloc(1, len);
  tg_ckpt_key k = key_of("job-o", 1, 0);
  tg_rpc_status st;
  uint64_t crc = tg_crc64_update(0, in, len);
  assert_int_equal(tg_ckpt_push_bytes(f->ch, &k, in, len, crc, &f->cfg, &st),
                   TG_RPC_RESOURCE_EXHAUSTED);
  assert_non_null(strstr(st.message, "exceeds the limit"));
  assert_buddy_untouched(f, &k);
  /* Chunks larger than the server accepts are refused too. */
  tg_ckpt_repl_config big_chunks = f->cfg;
  big_chunks.chunk_bytes = 2 * CHUNK_BYTES + 1;
  assert_int_equal(tg_ckpt_push_bytes(f->ch, &k, in, 3 * CHUNK_BYTES, 0, &big_chunks, &st),
                   TG_RPC_RESOURCE_EXHAUSTED);
  assert_buddy_untouched(f, &k);
  /* And the client does not send what it knows is too large. */
  tg_ckpt_repl_config small = f->cfg;
  small.max_shard_bytes = 10;
  assert_int_equal(tg_ckpt_push_bytes(f->ch, &k, in, 11, 0, &small, &st),
                   TG_RPC_RESOURCE_EXHAUSTED);
  free(in);
}

/* Sends hand-made chunks on a raw PushShard stream; returns the status. */
static tg_rpc_code raw_push(fixture *f, const Tardigrade__V1__ShardChunk *chunks, size_t n,
                            tg_rpc_status *st) {
  tg_rpc_call_opts opts = {.deadline_ms = CALL_DEADLINE_MS};
  tg_rpc_stream *s =
      tg_rpc_stream_open(f->ch, "/tardigrade.v1.Replication/PushShard",
                         &tardigrade__v1__push_shard_response__descriptor, &opts, st);
  assert_non_null(s);
  for (size_t i = 0; i < n; i++) {
    if (tg_rpc_stream_send(s, &chunks[i].base, CALL_DEADLINE_MS) != 0) break;
  }
  tg_rpc_stream_close_send(s);
  ProtobufCMessage *msg = NULL;
  while (tg_rpc_stream_recv(s, &msg, CALL_DEADLINE_MS, st) == TG_RPC_RECV_MESSAGE) {
    protobuf_c_message_free_unpacked(msg, NULL);
  }
  tg_rpc_stream_free(s);
  return st->code;
}

static void test_bad_chunk_sequences_are_refused(void **state) {
  fixture *f = *state;
  unsigned char data[100] = {1, 2, 3};
  tg_ckpt_key k = key_of("job-b", 1, 0);
  Tardigrade__V1__ShardKey pk = TARDIGRADE__V1__SHARD_KEY__INIT;
  pk.job_id = k.job_id;
  pk.generation = k.generation;
  pk.step = k.step;
  pk.shard = k.shard;
  pk.world_size = k.world_size;
  Tardigrade__V1__ShardChunk c[2] = {TARDIGRADE__V1__SHARD_CHUNK__INIT,
                                     TARDIGRADE__V1__SHARD_CHUNK__INIT};
  c[0].key = &pk;
  c[0].total_bytes = sizeof(data);
  c[0].crc64 = tg_crc64_update(0, data, sizeof(data));
  c[0].data.data = data;
  c[0].data.len = 10;
  c[1].offset = 50; /* a gap */
  c[1].data.data = data + 50;
  c[1].data.len = 50;
  tg_rpc_status st;
  assert_int_equal(raw_push(f, c, 2, &st), TG_RPC_INVALID_ARGUMENT);
  assert_non_null(strstr(st.message, "offset"));
  assert_buddy_untouched(f, &k);
  /* Short: 10 of 100 bytes, then the end. */
  assert_int_equal(raw_push(f, c, 1, &st), TG_RPC_INVALID_ARGUMENT);
  assert_non_null(strstr(st.message, "announced"));
  assert_buddy_untouched(f, &k);
  /* No key, and a key with an out-of-range shard. */
  c[0].key = NULL;
  assert_int_equal(raw_push(f, c, 1, &st), TG_RPC_INVALID_ARGUMENT);
  c[0].key = &pk;
  pk.shard = 4;
  assert_int_equal(raw_push(f, c, 1, &st), TG_RPC_INVALID_ARGUMENT);
  assert_int_equal(raw_push(f, NULL, 0, &st), TG_RPC_INVALID_ARGUMENT);
  assert_buddy_untouched(f, &k);
}

static void test_fetch_refuses_missing_and_corrupt(void **state) {
  fixture *f = *state;
  tg_ckpt_key k = key_of("job-f", 3, 1);
  tg_rpc_status st;
  assert_int_equal(tg_ckpt_fetch(f->local, f->ch, &k, &f->cfg, &st), TG_RPC_NOT_FOUND);
  assert_int_equal(tg_ckpt_push(f->local, f->ch, &k, &f->cfg, &st), TG_RPC_NOT_FOUND);

  unsigned char in[50000];
  fill(in, sizeof(in), 77);
  assert_int_equal(tg_ckpt_store_write(f->buddy, &k, in, sizeof(in)), TG_CKPT_OK);
  int fd = shm_open(f->buddy_name, O_RDWR, 0);
  assert_true(fd >= 0);
  struct stat sb;
  assert_int_equal(fstat(fd, &sb), 0);
  unsigned char *raw = mmap(NULL, (size_t)sb.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  assert_true(raw != MAP_FAILED);
  unsigned char *at = memmem(raw, (size_t)sb.st_size, in + 30000, 64);
  assert_non_null(at);
  at[3] ^= 1;
  assert_int_equal(tg_ckpt_fetch(f->local, f->ch, &k, &f->cfg, &st), TG_RPC_DATA_LOSS);
  size_t len = 0;
  assert_int_equal(tg_ckpt_store_read(f->local, &k, NULL, 0, &len, NULL), TG_CKPT_NOT_FOUND);
  assert_int_equal(tg_ckpt_store_free_slots(f->local), tg_ckpt_store_slots(f->local));
  munmap(raw, (size_t)sb.st_size);
}

static void test_push_to_full_store_is_refused(void **state) {
  fixture *f = *state;
  unsigned char in[1000] = {0};
  tg_ckpt_writer *w[4];
  for (int i = 0; i < 4; i++) {
    tg_ckpt_key busy = key_of("job-busy", 1, i);
    assert_int_equal(tg_ckpt_writer_begin(f->buddy, &busy, 10, &w[i]), TG_CKPT_OK);
  }
  tg_ckpt_key k = key_of("job-q", 1, 0);
  tg_rpc_status st;
  assert_int_equal(tg_ckpt_push_bytes(f->ch, &k, in, sizeof(in), tg_crc64_update(0, in, sizeof(in)),
                                      &f->cfg, &st),
                   TG_RPC_RESOURCE_EXHAUSTED);
  assert_non_null(strstr(st.message, "full"));
  for (int i = 0; i < 4; i++) tg_ckpt_writer_abort(w[i]);
  assert_buddy_untouched(f, &k);
}

static void test_fetch_alloc_returns_verified_bytes(void **state) {
  fixture *f = *state;
  size_t len = 150000; /* three chunks */
  unsigned char *in = malloc(len);
  fill(in, len, 31);
  tg_ckpt_key k = key_of("job-a", 7, 2);
  assert_int_equal(tg_ckpt_store_write(f->buddy, &k, in, len), TG_CKPT_OK);
  void *bytes = NULL;
  size_t got = 0;
  uint64_t crc = 0;
  tg_rpc_status st;
  if (tg_ckpt_fetch_alloc(f->ch, &k, &f->cfg, &bytes, &got, &crc, &st) != TG_RPC_OK)
    fail_msg("fetch_alloc: %s", st.message);
  assert_int_equal(got, len);
  assert_memory_equal(bytes, in, len);
  assert_true(crc == tg_crc64_update(0, in, len));
  free(bytes);
  /* Nothing went into a store on this side. */
  assert_int_equal(tg_ckpt_store_free_slots(f->local), tg_ckpt_store_slots(f->local));

  /* Missing, and larger than the caller accepts: no bytes. */
  tg_ckpt_key missing = key_of("job-a", 8, 2);
  bytes = &got;
  assert_int_equal(tg_ckpt_fetch_alloc(f->ch, &missing, &f->cfg, &bytes, &got, NULL, &st),
                   TG_RPC_NOT_FOUND);
  assert_null(bytes);
  tg_ckpt_repl_config small = f->cfg;
  small.max_shard_bytes = len - 1;
  assert_int_equal(tg_ckpt_fetch_alloc(f->ch, &k, &small, &bytes, &got, NULL, &st),
                   TG_RPC_RESOURCE_EXHAUSTED);
  assert_null(bytes);

  /* The buddy's copy goes bad: DATA_LOSS, nothing handed over. */
  assert_int_equal(tg_ckpt_store_corrupt(f->buddy, &k, 99999), TG_CKPT_OK);
  assert_int_equal(tg_ckpt_fetch_alloc(f->ch, &k, &f->cfg, &bytes, &got, NULL, &st),
                   TG_RPC_DATA_LOSS);
  assert_null(bytes);
  assert_int_equal(tg_ckpt_fetch_alloc(NULL, &k, &f->cfg, &bytes, &got, NULL, &st),
                   TG_RPC_INVALID_ARGUMENT);
  free(in);
}

/* A server whose send queue is sized by tg_ckpt_repl_queued_sends serves
 * a shard of as many chunks as a slot holds; a smaller queue cannot. */
static void test_queued_sends_cover_a_whole_shard(void **state) {
  fixture *f = *state;
  tg_ckpt_repl_config tiny_chunks = {.chunk_bytes = 1024};
  size_t need = tg_ckpt_repl_queued_sends(f->buddy, &tiny_chunks);
  assert_true(need >= tg_ckpt_store_slot_bytes(f->buddy) / 1024 + 1);
  assert_int_equal(tg_ckpt_repl_queued_sends(f->buddy, NULL), TG_RPC_DEFAULT_MAX_QUEUED_SENDS);

  size_t len = 64 << 10; /* 64 chunks of 1 KiB */
  unsigned char *in = malloc(len);
  fill(in, len, 3);
  tg_ckpt_key k = key_of("job-q", 2, 0);
  assert_int_equal(tg_ckpt_store_write(f->buddy, &k, in, len), TG_CKPT_OK);
  char err[256];
  for (int sized = 0; sized <= 1; sized++) {
    tg_rpc_server_config sc = {.max_queued_sends = sized ? need : 8};
    tg_rpc_server *srv = tg_rpc_server_new(&sc, err, sizeof(err));
    tg_ckpt_repl_server *repl = tg_ckpt_repl_server_new(f->buddy, &tiny_chunks);
    assert_int_equal(tg_ckpt_repl_server_register(repl, srv), 0);
    int port = tg_rpc_server_listen(srv, "127.0.0.1:0", NULL, err, sizeof(err));
    assert_true(port > 0);
    assert_int_equal(tg_rpc_server_start(srv, err, sizeof(err)), 0);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    tg_rpc_channel *ch = tg_rpc_channel_new(target, NULL, err, sizeof(err));
    tg_ckpt_repl_config client = {.chunk_bytes = 1024, .deadline_ms = CALL_DEADLINE_MS};
    void *bytes = NULL;
    size_t got = 0;
    tg_rpc_status st;
    tg_rpc_code code = tg_ckpt_fetch_alloc(ch, &k, &client, &bytes, &got, NULL, &st);
    if (sized) {
      if (code != TG_RPC_OK) fail_msg("fetch from a sized server: %s", st.message);
      assert_memory_equal(bytes, in, len);
    } else {
      assert_int_not_equal(code, TG_RPC_OK);
    }
    free(bytes);
    tg_rpc_channel_free(ch);
    tg_rpc_server_free(srv, 1000);
    tg_ckpt_repl_server_free(repl);
  }
  free(in);
}

int main(void) {
  tg_log_init("replicate_test", TG_LOG_ERROR);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_push_then_fetch_back_bitwise_equal, setup, teardown),
      cmocka_unit_test_setup_teardown(test_list_shows_committed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_push_with_wrong_checksum_is_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_oversized_push_is_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_chunk_sequences_are_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fetch_refuses_missing_and_corrupt, setup, teardown),
      cmocka_unit_test_setup_teardown(test_push_to_full_store_is_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fetch_alloc_returns_verified_bytes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_queued_sends_cover_a_whole_shard, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
