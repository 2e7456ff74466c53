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
#include <version>
#if defined(__cpp_lib_source_location)
#include <source_location>
#endif

namespace connpool {

#if defined(__has_builtin)
#if __has_builtin(__builtin_COLUMN) && __has_builtin(__builtin_FILE) && \
    __has_builtin(__builtin_FUNCTION) && __has_builtin(__builtin_LINE)
#define CONNPOOL_SOURCE_LOCATION_BUILTINS 1
#endif
#endif

#if defined(__cpp_lib_source_location)
/// The caller's location as acquire() takes it (a defaulted argument): std::source_location,
/// one pointer, passed in a register; where the library has none (clang 14 with libstdc++), a
/// struct with the same members filled by the compiler's builtins.
///
/// Why a type of its own and not source_location below: a 24-byte location built and passed on
/// every acquire cost the uncontended cycle 15 % (W1, bench/README.md); it is converted only when
/// the pool records it (leak_threshold set).
using call_site = std::source_location;
#elif defined(CONNPOOL_SOURCE_LOCATION_BUILTINS)
struct call_site {
  static constexpr call_site current(const char* file = __builtin_FILE(),
                                     const char* function = __builtin_FUNCTION(),
                                     std::uint_least32_t line = __builtin_LINE(),
                                     std::uint_least32_t column = __builtin_COLUMN()) noexcept {
    return call_site{file, function, line, column};
  }
  [[nodiscard]] constexpr const char* file_name() const noexcept { return file_; }
  [[nodiscard]] constexpr const char* function_name() const noexcept { return function_; }
  [[nodiscard]] constexpr std::uint_least32_t line() const noexcept { return line_; }
  [[nodiscard]] constexpr std::uint_least32_t column() const noexcept { return column_; }
  const char* file_;
  const char* function_;
  std::uint_least32_t line_;
  std::uint_least32_t column_;
};
#else
#error "connpool: needs std::source_location or the __builtin_FILE/LINE/FUNCTION/COLUMN builtins"
#endif

/// Where a call was made: file, function, line and column, as std::source_location has them.
/// `source_location::current()` as a defaulted argument is the caller's location.
///
/// Why not std::source_location itself: clang 14 with libstdc++ (a supported toolchain) has no
/// std::source_location (it lacks __builtin_source_location), and g++ 12 has no
/// __builtin_COLUMN. This type is filled from whichever the compiler has, and converts from a
/// std::source_location where the library has one.
class source_location {
 public:
  constexpr source_location() noexcept = default;

  /// The location of the call to current(), or of the call whose default argument it is.
  static constexpr source_location current(call_site here = call_site::current()) noexcept {
    return source_location(here.file_name(), here.function_name(), here.line(), here.column());
  }

  /// The same location.
  constexpr source_location(const call_site& s) noexcept  // NOLINT: implicit
      : file_(s.file_name()), function_(s.function_name()), line_(s.line()), column_(s.column()) {}

  constexpr source_location(const char* file,
                            const char* function,
                            std::uint_least32_t line,
                            std::uint_least32_t column) noexcept
      : file_(file), function_(function), line_(line), column_(column) {}

  [[nodiscard]] constexpr const char* file_name() const noexcept { return file_; }
  [[nodiscard]] constexpr const char* function_name() const noexcept { return function_; }
  /// 0 for a location not recorded.
  [[nodiscard]] constexpr std::uint_least32_t line() const noexcept { return line_; }
  [[nodiscard]] constexpr std::uint_least32_t column() const noexcept { return column_; }

 private:
  const char* file_ = "";
  const char* function_ = "";
  std::uint_least32_t line_ = 0;
  std::uint_least32_t column_ = 0;
};

/// What happened to a connection, for PoolOptions::on_create, on_acquire, on_release and
/// on_close.
enum class PoolEventKind {
  create,   ///< the factory returned a new connection
  acquire,  ///< a caller got the connection
  release,  ///< a handle gave it back (release, destructor or invalidate)
  close,    ///< the pool closed it
  /// a connection reported as leaked (PoolOptions::on_leak) came back at last
  /// (PoolOptions::on_leak_end); held_for is its whole hold
  leak_ended,
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
  /// Where it was acquired: the caller of acquire() (or try_acquire()), as
  /// source_location::current() there. Recorded only with a leak_threshold; line() is 0 for a
  /// connection acquired otherwise.
  source_location site{};
};

/// One connection out of the pool, in ConnectionPool::in_use_report().
struct InUseConnection {
  std::uint64_t connection_id = 0;
  /// How long it has been out, its holder and where it was acquired: recorded only while holds
  /// are observed (leak_threshold, on_acquire or on_release set; the site with leak_threshold
  /// only); zero, a default thread id and an empty site otherwise.
  std::chrono::nanoseconds held_for{0};
  std::thread::id holder;
  source_location site{};
};

}  // namespace connpool
