// connpool - tests: archetypes, the minimal types that model each concept
// SPDX-License-Identifier: MIT
#pragma once

// One type per combination a user may bring: close only, ping only, reset only, all three,
// none, a pointer-like (std::unique_ptr<T>), and a type the user cannot change, adapted with a
// connection_traits specialisation. Each has exactly what its concept asks and nothing more,
// so a pool that instantiates with all of them demands no more than the concepts say (Asio's
// archetype idea). CallLog<T> records the calls, so tests can see which operation ran.

#include <atomic>
#include <memory>
#include <string>

#include <connpool/concepts.hpp>

namespace archetypes {

/// Calls made on objects of archetype `T` since the program started (compare deltas).
template <class T>
struct CallLog {
  static inline std::atomic<int> closes{0};
  static inline std::atomic<int> pings{0};
  static inline std::atomic<int> resets{0};
  static inline std::atomic<int> destroyed{0};  ///< only for types that count destruction
};

/// Closeable only.
struct CloseOnly {
  void close() { CallLog<CloseOnly>::closes.fetch_add(1); }
};

/// Pingable only.
struct PingOnly {
  bool ping() {
    CallLog<PingOnly>::pings.fetch_add(1);
    return true;
  }
};

/// Resettable only.
struct ResetOnly {
  void reset() { CallLog<ResetOnly>::resets.fetch_add(1); }
};

/// Closeable, Pingable and Resettable.
struct Full {
  void close() { CallLog<Full>::closes.fetch_add(1); }
  bool ping() {
    CallLog<Full>::pings.fetch_add(1);
    return true;
  }
  void reset() { CallLog<Full>::resets.fetch_add(1); }
};

/// None of the three: an aggregate with no members at all.
struct None {};

/// None of the three, but it counts destructions of engaged (not moved-from) objects: for
/// "not Closeable: the destructor is the close".
class DestructorOnly {
 public:
  DestructorOnly() = default;
  DestructorOnly(DestructorOnly&& other) noexcept : engaged_(other.engaged_) {
    other.engaged_ = false;
  }
  DestructorOnly& operator=(DestructorOnly&&) = delete;
  DestructorOnly(const DestructorOnly&) = delete;
  DestructorOnly& operator=(const DestructorOnly&) = delete;
  ~DestructorOnly() {
    if (engaged_) {
      CallLog<DestructorOnly>::destroyed.fetch_add(1);
    }
  }

 private:
  bool engaged_ = true;
};

/// Move-only and Closeable: the pool must never copy a connection.
struct MoveOnly {
  MoveOnly() = default;
  MoveOnly(MoveOnly&&) noexcept = default;
  MoveOnly& operator=(MoveOnly&&) noexcept = default;
  MoveOnly(const MoveOnly&) = delete;
  MoveOnly& operator=(const MoveOnly&) = delete;
  ~MoveOnly() = default;
  void close() { CallLog<MoveOnly>::closes.fetch_add(1); }
};

/// Neither movable nor copyable: not a Connection.
struct NotMovable {
  NotMovable() = default;
  NotMovable(NotMovable&&) = delete;
  NotMovable& operator=(NotMovable&&) = delete;
  ~NotMovable() = default;
};

/// The pointee of the pointer-like archetype: the pool must call these, not the pointer's own
/// members (std::unique_ptr::reset() would destroy the connection).
struct Pointee {
  void close() { CallLog<Pointee>::closes.fetch_add(1); }
  bool ping() {
    CallLog<Pointee>::pings.fetch_add(1);
    return true;
  }
  void reset() { CallLog<Pointee>::resets.fetch_add(1); }
  [[nodiscard]] int answer() const { return 42; }
};

/// Pointer-like connection.
using PointerConn = std::unique_ptr<Pointee>;

/// A type the user cannot change (think PGconn*): no members; connection_traits adapts it.
/// The specialisation below provides close and ping only, not reset.
struct Legacy {
  int fd = 3;
};

// Near misses: members that exist but do not satisfy the concept.
struct PingReturnsVoid {
  void ping() {}
};
struct PingReturnsInt {  // int converts to bool: Pingable
  int ping() { return 1; }
};
struct PingReturnsString {  // std::string does not convert to bool
  std::string ping() { return "pong"; }
};
struct CloseNeedsArgument {
  void close(int /*how*/) {}
};
struct ResetIsData {
  int reset = 0;
};

/// Builds a T the way a factory would.
template <class T>
T make() {
  return T{};
}
template <>
inline PointerConn make<PointerConn>() {
  return std::make_unique<Pointee>();
}

}  // namespace archetypes

/// connection_traits specialisation for the type that cannot be changed: close and ping only.
template <>
struct connpool::connection_traits<archetypes::Legacy> {
  static void close(archetypes::Legacy& c) {
    archetypes::CallLog<archetypes::Legacy>::closes.fetch_add(1);
    c.fd = -1;
  }
  static bool ping(archetypes::Legacy& c) {
    archetypes::CallLog<archetypes::Legacy>::pings.fetch_add(1);
    return c.fd >= 0;
  }
};
