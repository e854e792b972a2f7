/* Stand-in for gloo/common/memory.h, which Debian's libgloo-dev
 * (0.0~git20220518) does not ship although its transport/tcp/pair.h and
 * unbound_buffer.h include it.
 *
 * comm_gloo.cc needs tcp/pair.h for one thing: Pair::signalExceptionExternal,
 * the public call that wakes a rank blocked in a collective (see the header
 * comment there). That function is compiled inside libgloo; our code never
 * creates, copies or touches the members whose types come from this file,
 * so these declarations only have to let the headers parse. They keep the
 * same shape (one shared_ptr / weak_ptr each) all the same.
 *
 * It is found with -idirafter, after the system directories: if a later
 * package ships the real header, that one is used and this file is ignored. */
#pragma once

#include <memory>

namespace gloo {

template <typename T>
class ShareableNonOwningPtr;

template <typename T>
class WeakNonOwningPtr final {
 public:
  WeakNonOwningPtr() {}
  explicit WeakNonOwningPtr(const ShareableNonOwningPtr<T>& owner) : weak_(owner.shared_) {}
  std::weak_ptr<T> weak_;
};

template <typename T>
class NonOwningPtr final {
 public:
  NonOwningPtr() {}
  explicit NonOwningPtr(const WeakNonOwningPtr<T>& weak) : shared_(weak.weak_.lock()) {}
  T* operator->() const noexcept { return shared_.get(); }
  explicit operator bool() const noexcept { return shared_ != nullptr; }

 private:
  std::shared_ptr<T> shared_;
};

template <typename T>
class ShareableNonOwningPtr final {
 public:
  explicit ShareableNonOwningPtr(T* self) : shared_(self, [](T*) {}) {}
  ShareableNonOwningPtr(const ShareableNonOwningPtr&) = delete;
  ShareableNonOwningPtr& operator=(const ShareableNonOwningPtr&) = delete;
  std::shared_ptr<T> shared_;
};

}  // namespace gloo
