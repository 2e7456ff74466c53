// connpool - the expiry rules of a pooled connection: lifetime, idleness, validation, keepalive,
// leaks
// SPDX-License-Identifier: MIT
#pragma once

// Decisions only: each function takes a connection's time stamps and the time `now`, and says
// what is due. None locks, reads a clock or runs user code; the pool (detail/pool_core.hpp) reads
// its Clock, decides here, and acts. Tests: tests/detail/expiry_test.cpp, with plain time points.
// The order in which prune() looks at idle connections is here too (stalest first).

#include <chrono>
#include <cstdint>
#include <type_traits>

namespace connpool::detail {

/// Whether a connection created at `created_at`, with a lifetime of `lifetime` (max_lifetime
/// less its jitter; 0 = unlimited), has outlived it at `now` (DESIGN 6).
template <class TimePoint>
[[nodiscard]] constexpr bool lifetime_over(TimePoint created_at,
                                           typename TimePoint::duration lifetime,
                                           TimePoint now) noexcept {
  return lifetime.count() > 0 && now - created_at >= lifetime;
}

/// Whether a connection last used at `last_used` has been idle for `max_idle` (0 = never) at
/// `now`. The caller applies it only while more than min_size connections are open (DESIGN 6).
template <class TimePoint>
[[nodiscard]] constexpr bool idle_over(TimePoint last_used,
                                       std::chrono::milliseconds max_idle,
                                       TimePoint now) noexcept {
  return max_idle.count() > 0 && now - last_used >= max_idle;
}

/// The lifetime jitter of a pool whose PoolOptions::lifetime_jitter is unset: HikariCP's 2.5 %
/// on a standard clock for lifetimes over 10 s (HikariCP's threshold), else exact lifetimes.
template <class Clock>
double default_lifetime_jitter(std::chrono::milliseconds max_lifetime) {
  constexpr bool standard_clock = std::is_same_v<Clock, std::chrono::steady_clock> ||
                                  std::is_same_v<Clock, std::chrono::system_clock>;
  return standard_clock && max_lifetime > std::chrono::seconds(10) ? 0.025 : 0.0;
}

/// A lifetime of `full` shortened by the fraction `cut` (drawn by the caller from [0, jitter)).
///
/// Why: connections opened together (warm-up, a burst) would otherwise all expire together and
/// be reopened in a storm; HikariCP shortens each lifetime by up to 2.5 % the same way.
template <class Duration>
[[nodiscard]] Duration shortened_lifetime(Duration full, double cut) noexcept {
  return full - std::chrono::duration_cast<Duration>(
                    std::chrono::duration<double, typename Duration::period>(
                        static_cast<double>(full.count()) * cut));
}

/// Whether an idle connection must be pinged before it is handed out (DESIGN 5): unused and
/// unchecked for `bypass` or longer.
///
/// Why the bypass: a connection used a moment ago is almost surely alive, and a ping is a network
/// round trip (HikariCP's aliveBypassWindowMs, 500 ms by default there too).
template <class TimePoint>
[[nodiscard]] constexpr bool validation_due(TimePoint last_used,
                                            TimePoint last_checked,
                                            std::chrono::milliseconds bypass,
                                            TimePoint now) noexcept {
  const TimePoint latest = last_used > last_checked ? last_used : last_checked;
  return now - latest >= bypass;
}

/// Whether an idle connection is due for a keepalive ping: unused and unpinged for `interval`
/// (0 = keepalive off).
template <class TimePoint>
[[nodiscard]] constexpr bool keepalive_due(TimePoint last_used,
                                           TimePoint last_checked,
                                           std::chrono::milliseconds interval,
                                           TimePoint now) noexcept {
  return interval.count() > 0 && validation_due(last_used, last_checked, interval, now);
}

/// prune()'s order of idle connections: stalest first, and among equals the oldest connection
/// (the lower id), so that idle expiry down to min_size closes the ones least likely to be used.
template <class TimePoint>
[[nodiscard]] constexpr bool staler(TimePoint a_last_used,
                                    std::uint64_t a_id,
                                    TimePoint b_last_used,
                                    std::uint64_t b_id) noexcept {
  return a_last_used != b_last_used ? a_last_used < b_last_used : a_id < b_id;
}

/// The leak detector's decision for one connection: the check-out that started at `since`
/// (steady_clock ticks; 0 = not held) is reported once it has been held for `threshold` ticks at
/// `now`, unless `reported`, the start of the check-out last reported, is that very one.
///
/// Why the start of the check-out and not a flag: the scan reads a connection without the pool's
/// lock and may read the start of an earlier check-out; recording that one as reported must not
/// hide the current one. The caller records `since` as reported with an atomic exchange, and
/// reports only if the value it replaced differs (two scans cannot both report it).
[[nodiscard]] constexpr bool leak_due(std::int64_t since,
                                      std::int64_t now,
                                      std::int64_t threshold,
                                      std::int64_t reported) noexcept {
  return since != 0 && now - since >= threshold && reported != since;
}

}  // namespace connpool::detail
