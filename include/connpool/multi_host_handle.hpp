// connpool - MultiHostHandle, a connection borrowed from a MultiHostPool
// SPDX-License-Identifier: MIT
#pragma once

// MultiHostHandle<Conn, Host>: a PooledHandle<Conn> that also names its host and reports the
// connection's return to the host's record (detail::HostLink in detail/host_entry.hpp: its
// breaker, its in-use count, its role). Depends on Conn and Host only, so that users can name it
// in signatures. The pool itself is in multi_host_pool.hpp. No locks of its own.

#include <chrono>
#include <exception>
#include <stdexcept>
#include <utility>

#include <connpool/concepts.hpp>
#include <connpool/detail/clock.hpp>
#include <connpool/detail/host_link.hpp>
#include <connpool/handle.hpp>
#include <connpool/multi_host_options.hpp>
#include <connpool/options.hpp>

namespace connpool {

namespace detail {
struct SyncHosts;
}

template <class Conn,
          class Factory,
          class Host = std::string,
          class Clock = std::chrono::steady_clock,
          class Hosts = detail::SyncHosts>
requires Connection<Conn> && detail::PoolClock<Clock> && HostName<Host>
class MultiHostPool;

/// A connection borrowed from a MultiHostPool: a PooledHandle<Conn> that also names its host.
///
/// Same members and rules as PooledHandle<Conn>; invalidate() also counts a failure against
/// the host's circuit breaker. A handle acquired under Route::primary closes its connection
/// instead of returning it when its host is no longer the primary (a failover demoted it):
/// such a session may hold state of a writer that the pool must not hand to the next caller.
///
/// Thread safety: as PooledHandle: one thread at a time; may move to another thread.
/// Lifetime: may outlive its MultiHostPool and its host's removal; giving it back then closes
/// the connection.
template <class Conn, class Host>
class MultiHostHandle {
  using Link = detail::HostLink<Host>;

 public:
  using connection_type = Conn;
  using host_type = Host;

  MultiHostHandle() noexcept = default;

  MultiHostHandle(MultiHostHandle&& other) noexcept
      : handle_(std::move(other.handle_)),
        link_(std::exchange(other.link_, nullptr)),
        primary_only_(other.primary_only_) {}

  MultiHostHandle& operator=(MultiHostHandle&& other) noexcept {
    if (this != &other) {
      release();
      handle_ = std::move(other.handle_);
      link_ = std::exchange(other.link_, nullptr);
      primary_only_ = other.primary_only_;
    }
    return *this;
  }

  MultiHostHandle(const MultiHostHandle&) = delete;
  MultiHostHandle& operator=(const MultiHostHandle&) = delete;

  ~MultiHostHandle() { release(); }

  explicit operator bool() const noexcept { return static_cast<bool>(handle_); }
  [[nodiscard]] Conn* get() const noexcept { return handle_.get(); }
  [[nodiscard]] Conn& operator*() const noexcept { return *handle_; }
  [[nodiscard]] decltype(auto) operator->() const noexcept { return handle_.operator->(); }

  /// The host that served the connection. Precondition: the handle is not empty.
  [[nodiscard]] const Host& host() const noexcept { return link_->host(); }

  /// Returns the connection to its host's pool now; the handle becomes empty. Acquired under
  /// Route::primary from a host that is no longer the primary, the connection is closed
  /// instead (neither a success nor a failure of the host).
  void release() noexcept {
    if (link_ != nullptr) {
      if (primary_only_ && link_->role() != HostRole::primary) [[unlikely]] {
        handle_.invalidate();
        std::exchange(link_, nullptr)->returned(Link::Return::detached);
        return;
      }
      handle_.release();
      std::exchange(link_, nullptr)->returned(Link::Return::released);
    }
  }

  /// Closes the connection instead of returning it, and counts a failure against the host.
  void invalidate() noexcept {
    if (link_ != nullptr) {
      handle_.invalidate();
      std::exchange(link_, nullptr)->returned(Link::Return::invalidated);
    }
  }

  /// Gives the connection back with the error that happened on it (see PooledHandle::fail()):
  /// the host's PoolOptions::on_error decides, and ErrorAction::clear clears that host's pool
  /// only. Unless the decision is keep, it counts a failure against the host, as invalidate()
  /// does. Returns the decision.
  ErrorAction fail(std::exception_ptr error) noexcept {
    if (link_ == nullptr) {
      return ErrorAction::keep;
    }
    const ErrorAction action = handle_.fail(std::move(error));
    std::exchange(link_, nullptr)
        ->returned(action == ErrorAction::keep ? Link::Return::released
                                               : Link::Return::invalidated);
    return action;
  }

  /// Takes the connection out of the pool (see PooledHandle::detach()).
  ///
  /// Throws: std::logic_error if the handle is empty; what Conn's move constructor throws.
  [[nodiscard]] Conn detach() {
    if (link_ == nullptr) {
      throw std::logic_error("connpool: MultiHostHandle::detach() called on an empty handle");
    }
    Conn out = handle_.detach();
    std::exchange(link_, nullptr)->returned(Link::Return::detached);
    return out;
  }

 private:
  template <class C, class F, class H, class Clk, class K>
  requires Connection<C> && detail::PoolClock<Clk> && HostName<H>
  friend class MultiHostPool;

  MultiHostHandle(PooledHandle<Conn> handle,
                  detail::HostLink<Host>* link,
                  bool primary_only) noexcept
      : handle_(std::move(handle)), link_(link), primary_only_(primary_only) {}

  PooledHandle<Conn> handle_;
  detail::HostLink<Host>* link_ = nullptr;  // holds one reference while the handle is engaged
  bool primary_only_ = false;               // acquired under Route::primary
};

}  // namespace connpool
