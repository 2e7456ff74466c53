// connpool - PoolEvent and LeakReport, what the pool's hooks receive
// SPDX-License-Identifier: MIT
#pragma once

// The hooks themselves are PoolOptions fields (options.hpp): on_create, on_acquire, on_release,
// on_close and on_leak. They receive these plain values, which do not depend on the connection
// type, so one hook can serve pools of different types.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <thread>

namespace connpool {

/// What happened to a connection, for PoolOptions::on_create, on_acquire, on_release and
/// on_close.
enum class PoolEventKind {
  create,   ///< the factory returned a new connection
  acquire,  ///< a caller got the connection
  release,  ///< a handle gave it back (release, destructor or invalidate)
  close,    ///< the pool closed it
};

/// Why the pool closed a connection (PoolEvent::reason for PoolEventKind::close).
enum class CloseReason {
  none,               ///< not a close event
  expired,            ///< older than its max_lifetime, or idle longer than max_idle
  validation_failed,  ///< a ping on acquire failed
  keepalive_failed,   ///< a keepalive ping failed
  invalidated,        ///< PooledHandle::invalidate()
  reset_failed,       ///< reset() threw on release
  evicted,            ///< evict_all() was called while it was open
  shrunk,             ///< set_max_size() lowered the bound below what was open
  pool_closed,        ///< the pool is closed
  broken,             ///< is_broken() said so when it came back (BrokenCheckable)
  evicted_by_error,   ///< PooledHandle::fail(), and on_error said evict or clear
  max_uses,           ///< handed out PoolOptions::max_uses times
  cleared,            ///< clear() was called while it was open (or on_error said clear)
};

/// How many CloseReason values there are (the size of PoolStats::closed_by_reason).
inline constexpr std::size_t close_reason_count =
    static_cast<std::size_t>(CloseReason::cleared) + 1;

/// The enumerator's name, as in the source ("expired", "evicted_by_error", ...).
constexpr const char* to_string(CloseReason r) noexcept {
  switch (r) {
    case CloseReason::none:
      return "none";
    case CloseReason::expired:
      return "expired";
    case CloseReason::validation_failed:
      return "validation_failed";
    case CloseReason::keepalive_failed:
      return "keepalive_failed";
    case CloseReason::invalidated:
      return "invalidated";
    case CloseReason::reset_failed:
      return "reset_failed";
    case CloseReason::evicted:
      return "evicted";
    case CloseReason::shrunk:
      return "shrunk";
    case CloseReason::pool_closed:
      return "pool_closed";
    case CloseReason::broken:
      return "broken";
    case CloseReason::evicted_by_error:
      return "evicted_by_error";
    case CloseReason::max_uses:
      return "max_uses";
    case CloseReason::cleared:
      return "cleared";
  }
  return "unknown";
}

/// One event of a connection's life. Hooks run outside the pool's lock, in the thread that
/// caused the event (the maintenance thread for background creations and closes).
struct PoolEvent {
  PoolEventKind kind = PoolEventKind::create;
  std::uint64_t connection_id = 0;  ///< 1, 2, 3, ... in creation order, per pool
  /// On release and on the close of a connection that was out: how long it was held. Measured
  /// only when on_acquire, on_release or leak_threshold is set; zero otherwise.
  std::chrono::nanoseconds held_for{0};
  CloseReason reason = CloseReason::none;  ///< for close events
  std::thread::id thread;                  ///< the thread that caused the event
};

/// A connection held longer than PoolOptions::leak_threshold, reported once per check-out.
struct LeakReport {
  std::uint64_t connection_id = 0;
  std::chrono::nanoseconds held_for{0};  ///< how long it had been held when it was noticed
  std::thread::id holder;                ///< the thread that acquired it
};

}  // namespace connpool
