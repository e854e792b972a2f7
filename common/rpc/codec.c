/* Messages and time, translated between protobuf-c and gRPC core.
 *
 * gRPC core moves opaque byte buffers and knows nothing of protobuf; the
 * rest of Tardigrade knows protobuf-c messages and nothing of gRPC. Both
 * halves of common/rpc cross that line here, and every crossing checks the
 * size bound first: a peer can make us allocate at most max_bytes per
 * message, and a buffer that does not decode is a status, never a crash.
 * Deadlines live on gRPC's monotonic clock so that wall-clock steps on a
 * node do not fire or stretch them. */
#include <stdint.h>
#include <stdio.h>

#include "common/rpc/rpc_internal.h"

tg_rpc_code tg_rpc_pack_message(const ProtobufCMessage *msg, size_t max_bytes,
                                grpc_byte_buffer **out, tg_rpc_status *st) {
  *out = NULL;
  size_t len = protobuf_c_message_get_packed_size(msg);
  if (len > max_bytes) {
    return tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED, "%s message is %zu bytes, limit %zu",
                             msg->descriptor->name, len, max_bytes);
  }
  grpc_slice slice = grpc_slice_malloc(len);
  protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
  *out = grpc_raw_byte_buffer_create(&slice, 1);
  grpc_slice_unref(slice);
  return tg_rpc_status_set(st, TG_RPC_OK, NULL);
}

tg_rpc_code tg_rpc_unpack_message(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
                                  size_t max_bytes, tg_rpc_code bad_code, ProtobufCMessage **out,
                                  tg_rpc_status *st) {
  *out = NULL;
  size_t wire_len = grpc_byte_buffer_length(bb);
  if (wire_len > max_bytes) {
    return tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED, "%s message is %zu bytes, limit %zu",
                             desc->name, wire_len, max_bytes);
  }
  grpc_byte_buffer_reader reader;
  if (!grpc_byte_buffer_reader_init(&reader, bb)) {
    return tg_rpc_status_set(st, bad_code, "%s message cannot be read", desc->name);
  }
  grpc_slice flat = grpc_byte_buffer_reader_readall(&reader);
  grpc_byte_buffer_reader_destroy(&reader);
  size_t len = GRPC_SLICE_LENGTH(flat);
  tg_rpc_code code = TG_RPC_OK;
  if (len > max_bytes) {
    code = tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED, "%s message is %zu bytes, limit %zu",
                             desc->name, len, max_bytes);
    goto out;
  }
  *out = protobuf_c_message_unpack(desc, NULL, len, GRPC_SLICE_START_PTR(flat));
  if (*out == NULL) {
    code = tg_rpc_status_set(st, bad_code, "%zu bytes do not decode as %s", len, desc->name);
    goto out;
  }
  tg_rpc_status_set(st, TG_RPC_OK, NULL);
out:
  grpc_slice_unref(flat);
  return code;
}

gpr_timespec tg_rpc_deadline_after_ms(int64_t ms) {
  if (ms >= INT64_MAX / 2) return gpr_inf_future(GPR_CLOCK_MONOTONIC);
  if (ms < 0) ms = 0;
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

int64_t tg_rpc_ms_until(gpr_timespec t) {
  if (gpr_time_cmp(t, gpr_inf_future(t.clock_type)) == 0) return INT64_MAX;
  gpr_timespec mono = gpr_convert_clock_type(t, GPR_CLOCK_MONOTONIC);
  gpr_timespec left = gpr_time_sub(mono, gpr_now(GPR_CLOCK_MONOTONIC));
  return left.tv_sec * 1000 + left.tv_nsec / 1000000;
}

gpr_timespec tg_rpc_deadline_plus(gpr_timespec t, int64_t ms) {
  int64_t left = tg_rpc_ms_until(t);
  if (left == INT64_MAX) return gpr_inf_future(GPR_CLOCK_MONOTONIC);
  if (left < 0) left = 0;
  return tg_rpc_deadline_after_ms(left + ms);
}

void tg_rpc_status_from_grpc(tg_rpc_status *st, grpc_status_code code, grpc_slice details) {
  if (st == NULL) return;
  size_t len = GRPC_SLICE_LENGTH(details);
  if (len == 0) {
    tg_rpc_status_set(st, (tg_rpc_code)code, "%s", tg_rpc_code_name((tg_rpc_code)code));
    return;
  }
  tg_rpc_status_set(st, (tg_rpc_code)code, "%.*s", (int)(len > 255 ? 255 : len),
                    (const char *)GRPC_SLICE_START_PTR(details));
}
