// connpool - HostLink, what a MultiHostHandle sees of its host's record
// SPDX-License-Identifier: MIT
#pragma once

// HostLink<Host>: a host's name, its role, its in-use count (also the reference count of the
// record) and where a handle reports its connection's return. The record itself (HostEntry, which
// derives from it) is in host_entry.hpp. No locks: atomics only.

#include <atomic>
#include <cstddef>
#include <utility>

#include <connpool/detail/balancer.hpp>
#include <connpool/multi_host_options.hpp>

namespace connpool::detail {

/// What a MultiHostHandle knows of its host: the name, and where to report the connection's
/// return. Also the reference count of the host's record (see HostEntry).
template <class Host>
class HostLink {
 public:
  HostLink(const HostLink&) = delete;
  HostLink& operator=(const HostLink&) = delete;

  [[nodiscard]] const Host& host() const noexcept { return host_; }

  /// The host's role, as the last role probe found it (HostRole::unknown without a probe).
  [[nodiscard]] HostRole role() const noexcept { return role_.load(std::memory_order_acquire); }

  /// Connections of this host out through MultiHostHandles now.
  [[nodiscard]] std::size_t in_use() const noexcept {
    return refs_.value.load(std::memory_order_relaxed) - 1;
  }

  /// A handle took a connection of this host.
  void taken() noexcept { refs_.value.fetch_add(1, std::memory_order_relaxed); }

  /// How a handle gave its connection back.
  enum class Return {
    released,     ///< release() or the destructor: the connection served; a success
    invalidated,  ///< invalidate(): a failure of the host
    detached,     ///< detach(), or closed by the pool's choice (a role change): neither
  };

  /// A handle gave its connection back. May destroy the record, when the pool is gone and
  /// this was the last handle.
  void returned(Return how) noexcept {
    if (how != Return::detached) {
      handle_returned(how == Return::invalidated);
    }
    unref();
  }

  /// Drops one reference; the last one destroys the record.
  void unref() noexcept {
    if (refs_.value.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      delete this;
    }
  }

 protected:
  explicit HostLink(Host host) : host_(std::move(host)) {}
  virtual ~HostLink() = default;
  virtual void handle_returned(bool failed) noexcept = 0;

  // The last role probe's answer. Written by whichever thread probed last (a connect, a
  // recheck); read by every routed acquire's pick and by a primary-routed handle's return.
  std::atomic<HostRole> role_{HostRole::unknown};

 private:
  const Host host_;
  // 1 for the MultiHostPool (dropped by its destructor) + 1 per connection out through a
  // handle. Why one counter for both: the in-use gauge that the balancer reads must be an
  // atomic anyway, and making it the reference count spares a second atomic write per acquire
  // (a std::shared_ptr copy in each handle would be one). Why a cache line of its own: every
  // acquire and release on the host writes it, and the fields around it (the breaker's state,
  // max_size, the host pool) are read by every acquire: sharing their line would make each of
  // those reads miss whenever another thread has just taken or returned a connection.
  struct alignas(cache_line_size) Count {
    std::atomic<std::size_t> value{1};
  };
  Count refs_;
};

}  // namespace connpool::detail
