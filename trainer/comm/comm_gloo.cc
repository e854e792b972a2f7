/* The gloo backend: CPU collectives over TCP, reached from C.
 *
 * gloo is C++ and reports every failure by throwing; this file is the only
 * place that sees either. Every entry point is `extern "C"` and runs its
 * body inside `guarded`, which turns any exception into a code and a
 * message, so nothing C++ crosses into the trainer.
 *
 * Rendezvous. Ranks find each other through etcd: EtcdStore implements
 * gloo's key-value Store on our C etcd client, under the world's own key
 * prefix (World.store_prefix, one per generation), so ranks of an old world
 * never meet ranks of a new one. Each value also carries the generation
 * that wrote it ("gen=G\n" + bytes); a rank that reads a value written by
 * another generation refuses to connect, which fences a stale rank even if
 * it were handed the wrong prefix. Store waits poll etcd (every 5 ms at
 * first, backing off to 50 ms) until the creation deadline; etcd keys are
 * left for the coordinator to delete with the generation's prefix.
 *
 * Timeouts. Every collective is given its own timeout through gloo's
 * options; gloo's unbound buffers wait at most that long and then throw.
 * While connecting, gloo waits up to 5x the context timeout for a pair to
 * connect, so the context timeout is set to connect_timeout/5 there: a
 * creation returns within connect_timeout (rendezvous) plus about
 * connect_timeout (pairs) in the worst case.
 *
 * Abort. gloo has no "abort this context" call, and Context::closeConnections
 * closes sockets without waking a rank blocked in a receive. What does wake
 * it is tcp::Pair::signalExceptionExternal: it marks the pair failed, closes
 * its socket and signals every buffer with a pending send or receive on it,
 * so the blocked wait throws at once. abort() calls it on every pair. The
 * one wait it cannot reach is a send whose bytes sit queued because the
 * peer stopped reading (gloo tracks those without their buffer); that send
 * returns at its timeout. Peers see the closed sockets and fail fast.
 * A gloo timeout also closes every pair of the context (gloo does this
 * itself), so after any failure the context is dead: comm.c marks the
 * communicator broken and the trainer builds a new one. */
#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/tcp/pair.h>

#include <strings.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

// Our etcd client is plain C without extern "C" guards of its own.
extern "C" {
#include "common/etcd/etcd.h"
}
#include "trainer/comm/comm_backend.h"

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Thrown by the store when its deadline passes; reported as TIMEOUT.
struct StoreTimeout : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The creator gave up on this world (tg_comm_config.cancelled).
struct StoreCancelled : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// gloo's own timeouts say "Timed out ..." or "... timeout ...".
bool LooksLikeTimeout(const char* what) {
  return strcasestr(what, "timed out") != nullptr || strcasestr(what, "timeout") != nullptr;
}

// Runs body; every exception becomes a code and a message.
template <typename F>
tg_comm_code Guarded(tg_comm_status* st, F&& body) {
  try {
    body();
    return tg_comm_status_set(st, TG_COMM_OK, "OK");
  } catch (const StoreTimeout& e) {
    return tg_comm_status_set(st, TG_COMM_TIMEOUT, "%s", e.what());
  } catch (const StoreCancelled& e) {
    return tg_comm_status_set(st, TG_COMM_ABORTED, "%s", e.what());
  } catch (const std::exception& e) {
    return tg_comm_status_set(st, LooksLikeTimeout(e.what()) ? TG_COMM_TIMEOUT : TG_COMM_ERROR,
                              "%s", e.what());
  } catch (...) {
    return tg_comm_status_set(st, TG_COMM_ERROR, "unknown C++ exception");
  }
}

struct EtcdCloser {
  void operator()(tg_etcd* c) const { tg_etcd_close(c); }
};
using EtcdPtr = std::unique_ptr<tg_etcd, EtcdCloser>;

// gloo's Store on etcd, under one generation's prefix, with one deadline.
class EtcdStore : public gloo::rendezvous::Store {
 public:
  EtcdStore(tg_etcd* etcd, std::string prefix, int64_t generation, Clock::time_point deadline,
            const tg_comm_config* cfg)
      : etcd_(etcd),
        prefix_(std::move(prefix)),
        generation_(generation),
        header_("gen=" + std::to_string(generation) + "\n"),
        deadline_(deadline),
        cancelled_(cfg->cancelled),
        cancel_user_(cfg->cancel_user) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    std::string value = header_;
    value.append(data.begin(), data.end());
    tg_rpc_status st{};
    std::string full = prefix_ + key;
    if (tg_etcd_put(etcd_, full.c_str(), value.data(), value.size(), nullptr, nullptr, &st) !=
        TG_RPC_OK)
      throw gloo::IoException("etcd put " + full + ": " + st.message);
  }

  std::vector<char> get(const std::string& key) override {
    std::vector<char> data;
    WaitFor(key, &data);
    return data;
  }

  void wait(const std::vector<std::string>& keys) override { wait(keys, kDefaultTimeout); }

  // The creation deadline bounds every wait; gloo's timeout argument is
  // the context timeout, which is shorter and meant for pairs.
  void wait(const std::vector<std::string>& keys, const milliseconds& /*timeout*/) override {
    for (const auto& key : keys) WaitFor(key, nullptr);
  }

 private:
  // Polls until key exists (its payload into *out) or the deadline.
  void WaitFor(const std::string& key, std::vector<char>* out) {
    std::string full = prefix_ + key;
    milliseconds pause(5);
    std::string last_error = "not written yet";
    for (;;) {
      if (TryGet(full, out, &last_error)) return;
      if (cancelled_ && cancelled_(cancel_user_))
        throw StoreCancelled("rendezvous: given up waiting for " + full + ": a newer world exists");
      if (Clock::now() + pause >= deadline_)
        throw StoreTimeout("rendezvous: " + full + " did not appear before the deadline (" +
                           last_error + "): a rank of this world did not arrive");
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, milliseconds(50));
    }
  }

  // True when the key exists; throws if another generation wrote it.
  bool TryGet(const std::string& full, std::vector<char>* out, std::string* last_error) {
    tg_etcd_range_result r{};
    tg_rpc_status st{};
    if (tg_etcd_get(etcd_, full.c_str(), nullptr, &r, &st) != TG_RPC_OK) {
      *last_error = std::string("etcd: ") + st.message;
      return false;
    }
    bool found = r.n_kvs > 0;
    std::string value = found ? std::string(r.kvs[0].value, r.kvs[0].value_len) : std::string();
    tg_etcd_range_result_free(&r);
    if (!found) return false;
    if (value.compare(0, header_.size(), header_) != 0)
      throw gloo::IoException("rendezvous: " + full + " was written by another generation (\"" +
                              value.substr(0, value.find('\n')) + "\", this rank holds gen=" +
                              std::to_string(generation_) + "): refusing to join that world");
    if (out) out->assign(value.begin() + static_cast<std::ptrdiff_t>(header_.size()), value.end());
    return true;
  }

  tg_etcd* etcd_;
  const std::string prefix_;
  const int64_t generation_;
  const std::string header_;
  const Clock::time_point deadline_;
  int (*const cancelled_)(void*);
  void* const cancel_user_;
};

// Element-wise sums handed to gloo. int64 adds as uint64: exact, wraps
// modulo 2^64 (never undefined), and is independent of order.
void SumFloat(void* c, const void* a, const void* b, size_t n) {
  float* out = static_cast<float*>(c);
  const float* x = static_cast<const float*>(a);
  const float* y = static_cast<const float*>(b);
  for (size_t i = 0; i < n; i++) out[i] = x[i] + y[i];
}

void SumInt64(void* c, const void* a, const void* b, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint64_t x, y;
    std::memcpy(&x, static_cast<const char*>(a) + i * 8, 8);
    std::memcpy(&y, static_cast<const char*>(b) + i * 8, 8);
    uint64_t s = x + y;
    std::memcpy(static_cast<char*>(c) + i * 8, &s, 8);
  }
}

}  // namespace

struct tg_comm_impl {
  int rank = 0;
  int world_size = 0;
  uint32_t next_tag = 0;  // every rank runs the same collectives, so tags agree
  std::shared_ptr<gloo::transport::Device> device;
  std::shared_ptr<gloo::rendezvous::Context> context;
  std::vector<char> scratch;  // reduce_scatter's full-size sum
};

namespace {

template <typename T>
void AllReduceTyped(tg_comm_impl* g, T* buf, size_t count, gloo::AllreduceOptions::Func fn,
                    int64_t timeout_ms) {
  gloo::AllreduceOptions opts(g->context);
  opts.setOutput<T>(buf, count);
  opts.setReduceFunction(fn);
  opts.setTag(g->next_tag++);
  opts.setTimeout(milliseconds(timeout_ms));
  gloo::allreduce(opts);
}

void AllReduce(tg_comm_impl* g, void* buf, size_t count, tg_comm_dtype dtype, int64_t timeout_ms) {
  if (dtype == TG_COMM_INT64)
    AllReduceTyped(g, static_cast<int64_t*>(buf), count, SumInt64, timeout_ms);
  else
    AllReduceTyped(g, static_cast<float*>(buf), count, SumFloat, timeout_ms);
}

// A gloo context cannot be derived from another: the parent is not used.
tg_comm_code GlooOpen(const tg_comm_config* cfg, const tg_comm_parent* /*parent*/, int64_t connect_timeout_ms,
                      tg_comm_impl** out, tg_comm_status* st) {
  std::unique_ptr<tg_comm_impl> g(new tg_comm_impl());
  g->rank = cfg->rank;
  g->world_size = cfg->world_size;
  tg_comm_code code = Guarded(st, [&] {
    Clock::time_point deadline = Clock::now() + milliseconds(connect_timeout_ms);
    tg_etcd_config ec{};
    ec.endpoints = cfg->store_address;
    ec.request_timeout_ms = std::min<int64_t>(connect_timeout_ms, 5000);
    tg_rpc_status est{};
    EtcdPtr etcd(tg_etcd_open(&ec, &est));
    if (!etcd) throw gloo::IoException(std::string("etcd open: ") + est.message);
    EtcdStore store(etcd.get(), cfg->store_prefix, cfg->generation, deadline, cfg);

    gloo::transport::tcp::attr attr;
    attr.hostname = cfg->host ? cfg->host : "127.0.0.1";
    g->device = gloo::transport::tcp::CreateDevice(attr);
    g->context = std::make_shared<gloo::rendezvous::Context>(cfg->rank, cfg->world_size);
    g->context->setTimeout(milliseconds(std::max<int64_t>(connect_timeout_ms / 5, 1)));
    g->context->connectFullMesh(store, g->device);
  });
  if (code == TG_COMM_OK) *out = g.release();
  return code;
}

tg_comm_code GlooAllReduce(tg_comm_impl* g, void* buf, size_t count, tg_comm_dtype dtype,
                           int64_t timeout_ms, tg_comm_status* st) {
  return Guarded(st, [&] { AllReduce(g, buf, count, dtype, timeout_ms); });
}

// gloo's reduce-scatter is the old buffer API without per-call timeouts,
// so this sums the whole vector and keeps this rank's block: twice the
// bytes of a true reduce-scatter, the same exact result.
tg_comm_code GlooReduceScatter(tg_comm_impl* g, const void* send, void* recv, size_t recv_count,
                               tg_comm_dtype dtype, int64_t timeout_ms, tg_comm_status* st) {
  return Guarded(st, [&] {
    size_t block = recv_count * tg_comm_dtype_size(dtype);
    size_t total = block * static_cast<size_t>(g->world_size);
    g->scratch.resize(total);
    std::memcpy(g->scratch.data(), send, total);
    AllReduce(g, g->scratch.data(), recv_count * static_cast<size_t>(g->world_size), dtype,
              timeout_ms);
    std::memcpy(recv, g->scratch.data() + block * static_cast<size_t>(g->rank), block);
  });
}

tg_comm_code GlooAllGather(tg_comm_impl* g, const void* send, void* recv, size_t bytes_per_rank,
                           int64_t timeout_ms, tg_comm_status* st) {
  return Guarded(st, [&] {
    gloo::AllgatherOptions opts(g->context);
    // gloo only reads the input; its API takes a non-const pointer.
    opts.setInput<uint8_t>(static_cast<uint8_t*>(const_cast<void*>(send)), bytes_per_rank);
    opts.setOutput<uint8_t>(static_cast<uint8_t*>(recv),
                            bytes_per_rank * static_cast<size_t>(g->world_size));
    opts.setTag(g->next_tag++);
    opts.setTimeout(milliseconds(timeout_ms));
    gloo::allgather(opts);
  });
}

tg_comm_code GlooBroadcast(tg_comm_impl* g, void* buf, size_t bytes, int root, int64_t timeout_ms,
                           tg_comm_status* st) {
  return Guarded(st, [&] {
    gloo::BroadcastOptions opts(g->context);
    opts.setOutput<uint8_t>(static_cast<uint8_t*>(buf), bytes);
    opts.setRoot(root);
    opts.setTag(g->next_tag++);
    opts.setTimeout(milliseconds(timeout_ms));
    gloo::broadcast(opts);
  });
}

tg_comm_code GlooBarrier(tg_comm_impl* g, int64_t timeout_ms, tg_comm_status* st) {
  return Guarded(st, [&] {
    gloo::BarrierOptions opts(g->context);
    opts.setTag(g->next_tag++);
    opts.setTimeout(milliseconds(timeout_ms));
    gloo::barrier(opts);
  });
}

// tcp::Pair::signalExceptionExternal is protected (gloo calls it from its
// buffers on a timeout). A derived class may name it, and the pointer to
// member it yields can be applied to any tcp::Pair: the one standard way
// to reach it without patching gloo. The class is never instantiated.
struct PairWaker : gloo::transport::tcp::Pair {
  static auto Member() { return &PairWaker::signalExceptionExternal; }
};

void GlooAbort(tg_comm_impl* g) {
  const auto wake = PairWaker::Member();
  for (int peer = 0; peer < g->world_size; peer++) {
    if (peer == g->rank) continue;
    try {
      auto* pair = dynamic_cast<gloo::transport::tcp::Pair*>(g->context->getPair(peer).get());
      if (pair) (pair->*wake)("aborted by tg_comm_abort");
    } catch (...) {
      // A pair that is already gone needs no waking.
    }
  }
}

void GlooFree(tg_comm_impl* g) {
  if (!g) return;
  try {
    g->context.reset();  // closes the pairs before their device goes
    g->device.reset();
  } catch (...) {
  }
  delete g;
}

}  // namespace

extern "C" {

const tg_comm_backend_ops tg_comm_gloo_ops = {
    "gloo",          GlooOpen,      GlooAllReduce, GlooReduceScatter, GlooAllGather,
    GlooBroadcast,   GlooBarrier,   GlooAbort,     GlooFree,
    nullptr,         nullptr,  // host buffers already: no staging
};

}  // extern "C"
