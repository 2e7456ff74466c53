// connpool - the connection concepts and the connection_traits customization point
// SPDX-License-Identifier: MIT
#pragma once

// Closeable, Pingable, Resettable and ConnectionFactory, all built on connection_traits<Conn>.
// The pool never calls a connection's members directly: it calls connection_traits<Conn>, whose
// default forwards to the members when present (to the pointee's members for a pointer-like
// Conn such as std::unique_ptr<T>). Specialise connection_traits for types you cannot change.

#include <concepts>
#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

#include <connpool/deadline.hpp>

namespace connpool {

namespace detail {

/// A raw pointer, or a class with operator-> and unary operator* (std::unique_ptr,
/// std::shared_ptr, ...): its operations are looked up on the pointee, never on the pointer.
/// Why: std::unique_ptr::reset() would destroy the connection instead of resetting it.
template <class C>
concept PointerLike = std::is_pointer_v<C> || requires(C& c) {
  c.operator->();
  *c;
};

/// The object whose members the default traits call: the pointee for a PointerLike Conn.
template <class C>
constexpr decltype(auto) target(C& c) noexcept {
  if constexpr (PointerLike<C>) {
    return *c;
  } else {
    return (c);
  }
}

template <class C>
using target_t = std::remove_reference_t<decltype(target(std::declval<C&>()))>;

template <class T>
concept HasMemberClose = requires(T& t) {
  t.close();
};
template <class T>
concept HasMemberPing = requires(T& t) {
  { t.ping() } -> std::convertible_to<bool>;
};
template <class T>
concept HasMemberPingDeadline = requires(T& t, const Deadline& d) {
  { t.ping(d) } -> std::convertible_to<bool>;
};
template <class T>
concept HasMemberReset = requires(T& t) {
  t.reset();
};
template <class T>
concept HasMemberIsBroken = requires(const T& t) {
  { t.is_broken() } -> std::convertible_to<bool>;
};

}  // namespace detail

/// How the pool closes, pings and resets a `C`; the customization point.
///
/// The primary template calls `c.close()`, `c.ping()` and `c.reset()` when `C` has them, and
/// `c->close()` etc. when `C` is pointer-like. Each operation exists only when the member does,
/// so Closeable<C>, Pingable<C>, Resettable<C> and BrokenCheckable<C> follow. A specialisation
/// provides any of:
///     static void close(C&);  static bool ping(C&);  static void reset(C&);
///     static bool is_broken(const C&);  static bool ping(C&, const Deadline&);
/// Example:
///     template <> struct connpool::connection_traits<PGconn*> {
///       static void close(PGconn*& c) { PQfinish(c); }
///       static bool ping(PGconn*& c) { return PQstatus(c) == CONNECTION_OK; }
///     };
template <class C>
struct connection_traits {
  static void close(C& c) requires detail::HasMemberClose<detail::target_t<C>> {
    detail::target(c).close();
  }
  static bool ping(C& c) requires detail::HasMemberPing<detail::target_t<C>> {
    return static_cast<bool>(detail::target(c).ping());
  }
  static bool ping(C& c,
                   const Deadline& d) requires detail::HasMemberPingDeadline<detail::target_t<C>> {
    return static_cast<bool>(detail::target(c).ping(d));
  }
  static void reset(C& c) requires detail::HasMemberReset<detail::target_t<C>> {
    detail::target(c).reset();
  }
  static bool is_broken(const C& c) requires detail::HasMemberIsBroken<detail::target_t<C>> {
    return static_cast<bool>(detail::target(c).is_broken());
  }
};

/// `connection_traits<C>::close(c)` is valid for an lvalue `c` of type `C`.
///
/// Semantics: close() releases the connection's resources; the pool calls it exactly once per
/// connection, outside its lock, and destroys the object afterwards. It may throw: the pool
/// swallows and counts the exception (PoolStats::close_failures). A type that is not Closeable
/// is closed by its destructor.
template <class C>
concept Closeable = requires(C& c) {
  connection_traits<C>::close(c);
};

/// `connection_traits<C>::ping(c)` is valid and converts to bool.
///
/// Semantics: true means the connection is usable. false or an exception makes the pool close
/// the connection and count a validation failure. ping() runs outside the pool's lock, in the
/// acquiring thread, and should not block much longer than the caller's acquire timeout.
template <class C>
concept Pingable = requires(C& c) {
  { connection_traits<C>::ping(c) } -> std::convertible_to<bool>;
}
|| requires(C& c, const Deadline& d) {
  { connection_traits<C>::ping(c, d) } -> std::convertible_to<bool>;
};

/// `connection_traits<C>::ping(c, deadline)` is valid and converts to bool: the pool then
/// always pings with a Deadline (PoolOptions::validation_timeout, and the pool's close signal),
/// preferring it to ping(c) when both exist.
template <class C>
concept DeadlinePingable = requires(C& c, const Deadline& d) {
  { connection_traits<C>::ping(c, d) } -> std::convertible_to<bool>;
};

/// `connection_traits<C>::reset(c)` is valid.
///
/// Semantics: reset() discards per-borrower state (open transaction, session variables) and
/// runs in the releasing thread, outside the pool's lock, every time a connection is returned.
/// If it throws, the connection is closed instead of returned.
template <class C>
concept Resettable = requires(C& c) {
  connection_traits<C>::reset(c);
};

/// `connection_traits<C>::is_broken(c)` is valid for a const `c` and converts to bool.
///
/// Semantics: a cheap check with no I/O (a flag the driver keeps, as libpq's PQstatus or Go's
/// driver.Validator): true means the connection can no longer be used. The pool asks on every
/// give-back, in the releasing thread outside its lock, and closes a broken connection
/// (CloseReason::broken) instead of pooling it. An exception counts as broken.
template <class C>
concept BrokenCheckable = requires(const C& c) {
  { connection_traits<C>::is_broken(c) } -> std::convertible_to<bool>;
};

namespace detail {

/// A factory that takes a Deadline (PoolOptions::connect_timeout and the pool's close signal).
template <class F>
concept TakesDeadline = std::invocable<F&, const Deadline&>;

/// Calls the factory `f`: with `d` if it takes a Deadline, else with no arguments.
template <class F>
decltype(auto) call_factory(F& f, const Deadline& d) {
  if constexpr (TakesDeadline<F>) {
    return std::invoke(f, d);
  } else {
    (void)d;
    return std::invoke(f);
  }
}

/// What a factory returns (called as call_factory() calls it); void if it cannot be called.
template <class F>
struct factory_result {
  using type = void;
};
template <class F>
requires TakesDeadline<F> || std::invocable<F&>
struct factory_result<F> {
  using type = decltype(call_factory(std::declval<F&>(), std::declval<const Deadline&>()));
};
template <class F>
using factory_result_t = typename factory_result<F>::type;

}  // namespace detail

/// `F` can be called with no arguments, or with a `const Deadline&`, and returns something
/// convertible to `C`. When it takes a Deadline, the pool passes one on every connect (and
/// prefers that form when both exist).
///
/// Semantics: the pool calls the factory outside its lock, possibly from several threads at
/// once, so it must be safe to call concurrently. An exception from it reaches the acquiring
/// caller unchanged. A connect that returns after its deadline (PoolOptions::connect_timeout)
/// counts as failed: its connection is closed and the caller gets ConnectTimeout.
template <class F, class C>
concept ConnectionFactory = std::convertible_to<detail::factory_result_t<F>, C>;

/// What the pool requires of a connection type: move-constructible (it is moved out of the
/// factory's result and out by PooledHandle::detach()) and destructible.
template <class C>
concept Connection = std::is_object_v<C> && std::move_constructible<C> && std::destructible<C>;

}  // namespace connpool
