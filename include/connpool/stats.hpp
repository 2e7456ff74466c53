// connpool - PoolStats, a snapshot of a pool's counters and gauges
// SPDX-License-Identifier: MIT
#pragma once

// PoolStats is a plain value: ConnectionPool::stats() fills it, and it has no link back to the
// pool. to_json() writes it as one JSON object without any JSON library.

#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace connpool {

/// A snapshot of a pool's statistics.
///
/// Once the pool is quiet every figure is exact. Taken while other threads use the pool, the
/// figures may come from slightly different moments (as Go's DBStats), but each is a value the
/// pool really had. Counters only grow; gauges are the state at the snapshot.
struct PoolStats {
  // Counters, since the pool was constructed.
  std::uint64_t created = 0;              ///< connections the factory returned
  std::uint64_t closed = 0;               ///< connections closed (for any reason)
  std::uint64_t acquired = 0;             ///< successful acquires (acquire and try_acquire)
  std::uint64_t reused = 0;               ///< acquires served by an existing connection
  std::uint64_t released = 0;             ///< handles given back (release, destructor, invalidate)
  std::uint64_t waited = 0;               ///< acquires that had to wait for another holder
  std::uint64_t timeouts = 0;             ///< acquires that failed with AcquireTimeout
  std::uint64_t validation_failures = 0;  ///< pings that returned false or threw
  std::uint64_t create_failures = 0;      ///< factory calls that threw
  std::uint64_t close_failures = 0;       ///< close() calls that threw (swallowed)
  std::uint64_t detached = 0;             ///< connections taken out with PooledHandle::detach()
  std::chrono::nanoseconds total_wait_time{0};  ///< summed wait of the acquires that waited
  std::chrono::nanoseconds max_wait_time{0};    ///< longest single wait

  // Gauges, at the moment of the snapshot.
  std::size_t idle = 0;      ///< open connections in the idle set
  std::size_t in_use = 0;    ///< connections held through handles
  std::size_t pending = 0;   ///< callers waiting in acquire() now
  std::size_t max_size = 0;  ///< PoolOptions::max_size

  /// Open connections: idle + in_use (connections being created are not counted yet).
  [[nodiscard]] std::size_t total_connections() const noexcept { return idle + in_use; }

  /// reused / acquired; 0 when nothing was acquired.
  [[nodiscard]] double reuse_ratio() const noexcept {
    return acquired == 0 ? 0.0 : static_cast<double>(reused) / static_cast<double>(acquired);
  }

  /// Mean wait over successful acquires, in milliseconds (acquires that did not wait count as
  /// 0 ms); 0 when nothing was acquired.
  [[nodiscard]] double avg_wait_time_ms() const noexcept {
    if (acquired == 0) {
      return 0.0;
    }
    return to_ms(total_wait_time) / static_cast<double>(acquired);
  }

  /// One JSON object whose keys are the field names; durations are in milliseconds (as
  /// numbers), plus the derived "total_connections", "reuse_ratio" and "avg_wait_time_ms".
  [[nodiscard]] std::string to_json() const {
    std::string out = "{";
    auto add = [&out](const char* key, const std::string& value) {
      if (out.size() > 1) {
        out += ',';
      }
      out += '"';
      out += key;
      out += "\":";
      out += value;
    };
    auto num = [](std::uint64_t v) { return std::to_string(v); };
    add("created", num(created));
    add("closed", num(closed));
    add("acquired", num(acquired));
    add("reused", num(reused));
    add("released", num(released));
    add("waited", num(waited));
    add("timeouts", num(timeouts));
    add("validation_failures", num(validation_failures));
    add("create_failures", num(create_failures));
    add("close_failures", num(close_failures));
    add("detached", num(detached));
    add("total_wait_time", fixed(to_ms(total_wait_time)));
    add("max_wait_time", fixed(to_ms(max_wait_time)));
    add("idle", num(idle));
    add("in_use", num(in_use));
    add("pending", num(pending));
    add("max_size", num(max_size));
    add("total_connections", num(total_connections()));
    add("reuse_ratio", fixed(reuse_ratio()));
    add("avg_wait_time_ms", fixed(avg_wait_time_ms()));
    out += '}';
    return out;
  }

 private:
  static double to_ms(std::chrono::nanoseconds d) noexcept {
    return std::chrono::duration<double, std::milli>(d).count();
  }
  // Plain decimal with 6 fractional digits: valid JSON for every finite value, and, unlike
  // printf, independent of the C locale's decimal point.
  static std::string fixed(double v) {
    char buf[64];
    auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, 6);
    return std::string(buf, res.ptr);
  }
};

}  // namespace connpool
