// connpool - PooledHandle, the RAII guard over a borrowed connection
// SPDX-License-Identifier: MIT
#pragma once

// PooledHandle<Conn> depends on Conn only, so it can appear in user signatures whatever the
// pool's factory and clock. The pool that made it is reached through detail::HandleOwner.

#include <memory>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include <connpool/concepts.hpp>
#include <connpool/detail/slot.hpp>

namespace connpool {

/// A borrowed connection: returns it to its pool when destroyed.
///
/// Move-only. An empty handle (default-constructed, moved-from, released, invalidated or
/// detached) converts to false and must not be dereferenced. For a pointer-like `Conn` such as
/// std::unique_ptr<T>, `h->f()` calls `T::f` (operator-> drills through the smart pointer).
///
/// Thread safety: a handle may be used by one thread at a time, and may be moved to (and
/// destroyed in) another thread. Different handles may be used concurrently.
/// Lifetime: a handle may outlive its pool; giving it back then closes the connection.
/// Example:
///     connpool::PooledHandle<Db> h = pool.acquire();
///     h->query("SELECT 1");
///     if (network_error) h.invalidate();   // closed instead of returned
template <class Conn>
class PooledHandle {
 public:
  using connection_type = Conn;

  PooledHandle() noexcept = default;

  PooledHandle(PooledHandle&& other) noexcept
      : owner_(std::exchange(other.owner_, nullptr)), slot_(std::exchange(other.slot_, nullptr)) {}

  /// Gives back the connection this handle holds (if any), then takes over `other`'s.
  PooledHandle& operator=(PooledHandle&& other) noexcept {
    if (this != &other) {
      release();
      owner_ = std::exchange(other.owner_, nullptr);
      slot_ = std::exchange(other.slot_, nullptr);
    }
    return *this;
  }

  PooledHandle(const PooledHandle&) = delete;
  PooledHandle& operator=(const PooledHandle&) = delete;

  ~PooledHandle() { release(); }

  /// Whether the handle holds a connection.
  explicit operator bool() const noexcept { return slot_ != nullptr; }

  /// The connection, or nullptr when the handle is empty.
  [[nodiscard]] Conn* get() const noexcept { return slot_ != nullptr ? &*slot_->conn : nullptr; }

  /// The connection. Precondition: the handle is not empty.
  [[nodiscard]] Conn& operator*() const noexcept { return *slot_->conn; }

  /// Member access: `Conn*` for a value type; for a pointer-like Conn, the Conn itself, so
  /// `h->f()` reaches the pointee. Precondition: the handle is not empty.
  [[nodiscard]] decltype(auto) operator->() const noexcept {
    if constexpr (std::is_pointer_v<Conn>) {
      return Conn(*slot_->conn);
    } else if constexpr (detail::PointerLike<Conn>) {
      return static_cast<Conn&>(*slot_->conn);
    } else {
      return static_cast<Conn*>(&*slot_->conn);
    }
  }

  /// Returns the connection to the pool now; the handle becomes empty. No effect if empty.
  /// The connection is reset (when Resettable) in this thread, outside the pool's lock.
  void release() noexcept {
    if (slot_ != nullptr) {
      std::exchange(owner_, nullptr)->give_back(std::exchange(slot_, nullptr), false);
    }
  }

  /// Closes the connection instead of returning it (after a network error, say), freeing its
  /// place in the pool; the handle becomes empty. No effect if empty. Never throws.
  void invalidate() noexcept {
    if (slot_ != nullptr) {
      std::exchange(owner_, nullptr)->give_back(std::exchange(slot_, nullptr), true);
    }
  }

  /// Gives the connection back with the error that happened on it (a failed query, say), for
  /// the pool to classify through PoolOptions::on_error: ErrorAction::keep returns it as
  /// release() would; evict (the default) closes it; clear closes it and clears the pool (every
  /// idle connection closed now, those in use when they come back, and every waiting caller
  /// fails with PoolCleared). The handle becomes empty. Returns what on_error decided (keep if
  /// the handle was empty, which has no effect). Never throws.
  ///     try { h->query(sql); } catch (...) { h.fail(std::current_exception()); throw; }
  ErrorAction fail(std::exception_ptr error) noexcept {
    if (slot_ == nullptr) {
      return ErrorAction::keep;
    }
    return std::exchange(owner_, nullptr)->fail(std::exchange(slot_, nullptr), std::move(error));
  }

  /// Takes the connection out of the pool: the pool forgets it (it is neither closed nor
  /// counted as open any more) and its place is freed for a new connection.
  ///
  /// Throws: std::logic_error if the handle is empty; whatever Conn's move constructor throws
  /// (the handle then still holds the connection).
  [[nodiscard]] Conn detach() {
    if (slot_ == nullptr) {
      throw std::logic_error("connpool: PooledHandle::detach() called on an empty handle");
    }
    Conn out(std::move(*slot_->conn));
    std::exchange(owner_, nullptr)->forget(std::exchange(slot_, nullptr));
    return out;
  }

 private:
  friend struct detail::HandleAccess;

  PooledHandle(detail::HandleOwner<Conn>* owner, detail::SlotBase<Conn>* slot) noexcept
      : owner_(owner), slot_(slot) {}

  detail::HandleOwner<Conn>* owner_ = nullptr;
  detail::SlotBase<Conn>* slot_ = nullptr;
};

namespace detail {

/// The pool's way to make a handle: the constructor is not public API.
struct HandleAccess {
  template <class Conn>
  static PooledHandle<Conn> make(HandleOwner<Conn>* owner, SlotBase<Conn>* slot) noexcept {
    return PooledHandle<Conn>(owner, slot);
  }
};

}  // namespace detail
}  // namespace connpool
