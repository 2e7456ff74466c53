// connpool - PoolStats, a snapshot of a pool's counters and gauges
// SPDX-License-Identifier: MIT
#pragma once

// PoolStats is a plain value: ConnectionPool::stats() fills it, and it has no link back to the
// pool. to_json() writes it as one JSON object without any JSON library.

#include <array>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include <connpool/events.hpp>

namespace connpool {

namespace detail {

/// The first unit of a UTF-8 string: a well-formed sequence, or the maximal subpart of an
/// ill-formed one.
struct Utf8Unit {
  std::size_t size;  ///< bytes it spans, 1 to 4
  bool valid;        ///< whether it is a well-formed sequence (one code point)
};

/// Reads the first unit of the non-empty `s`, by the byte ranges of Unicode's table of
/// well-formed UTF-8 (Unicode 15, section 3.9, table 3-7): a well-formed sequence, or else the
/// maximal subpart of an ill-formed one, the longest run that starts like a well-formed sequence
/// (at least the first byte).
///
/// A lead byte that cannot start any sequence (0x80..0xC1: continuation bytes and the leads of
/// overlong 2-byte forms; 0xF5..0xFF) is a subpart of its own. After a valid lead, the second
/// byte's range excludes overlong 3- and 4-byte forms (E0, F0), UTF-16 surrogates (ED) and code
/// points above U+10FFFF (F4); the subpart ends before the first byte out of range, or at the end
/// of `s`.
/// Why maximal subparts: one U+FFFD per subpart is the practice Unicode recommends and the WHATWG
/// Encoding Standard requires, so the replaced text reads as a browser would show it.
/// Preconditions: `s` is not empty.
/// Complexity: reads at most 4 bytes.
inline Utf8Unit next_utf8_unit(std::string_view s) noexcept {
  const auto lead = static_cast<unsigned char>(s[0]);
  if (lead < 0x80) {
    return {1, true};
  }
  std::size_t length = 0;    // of the well-formed sequence this lead starts
  unsigned char low = 0x80;  // the range of the second byte
  unsigned char high = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) {
      low = 0xA0;  // below: an overlong form
    } else if (lead == 0xED) {
      high = 0x9F;  // above: a surrogate, U+D800..U+DFFF
    }
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) {
      low = 0x90;  // below: an overlong form
    } else if (lead == 0xF4) {
      high = 0x8F;  // above: beyond U+10FFFF
    }
  } else {
    return {1, false};
  }
  std::size_t i = 1;
  for (; i < length && i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < low || c > high) {
      return {i, false};
    }
    low = 0x80;
    high = 0xBF;
  }
  return {i, i == length};
}

/// Appends `s` to `out` as well-formed UTF-8: each ill-formed sequence (maximal subpart, see
/// next_utf8_unit) becomes U+FFFD REPLACEMENT CHARACTER, valid multi-byte sequences are copied
/// unchanged, and each ASCII byte goes through `ascii(c)`, which appends it, escaped as the
/// output format requires.
template <class Ascii>
void append_utf8_replacing_invalid(std::string& out, std::string_view s, Ascii&& ascii) {
  while (!s.empty()) {
    const Utf8Unit unit = next_utf8_unit(s);
    if (!unit.valid) {
      out += "\xEF\xBF\xBD";  // U+FFFD
    } else if (unit.size == 1) {
      ascii(s[0]);
    } else {
      out.append(s.data(), unit.size);
    }
    s.remove_prefix(unit.size);
  }
}

/// Appends `s` to `out` as a JSON string: quoted, with '"', '\\' and control characters
/// escaped, and each ill-formed UTF-8 sequence replaced with U+FFFD (JSON text is UTF-8, RFC 8259
/// section 8.1, and a parser may reject anything else).
///
/// Why replace rather than fail: the strings written are names and error messages (a driver's
/// message in another encoding, one cut mid-character), and statistics must not throw because
/// of them; the replacement keeps the rest of the text readable.
inline void append_json_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  append_utf8_replacing_invalid(out, s, [&out](char c) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      out += "\\u00";
      out += hex[u >> 4];
      out += hex[u & 0xF];
    } else {
      out += c;
    }
  });
  out += '"';
}

}  // namespace detail

/// A snapshot of a pool's statistics.
///
/// Once the pool is quiet every figure is exact. Taken while other threads use the pool, the
/// figures may come from slightly different moments (as Go's DBStats), but each is a value the
/// pool really had. Counters only grow; gauges are the state at the snapshot.
struct PoolStats {
  // Counters, since the pool was constructed.
  std::uint64_t created = 0;   ///< connections the factory returned
  std::uint64_t closed = 0;    ///< connections closed (for any reason)
  std::uint64_t acquired = 0;  ///< successful acquires (acquire and try_acquire)
  std::uint64_t reused = 0;    ///< acquires served by an existing connection
  std::uint64_t released = 0;  ///< handles given back (release, destructor, invalidate)
  std::uint64_t waited = 0;    ///< acquires that had to wait for another holder
  std::uint64_t timeouts = 0;  ///< acquires that failed with AcquireTimeout
  std::uint64_t rejected = 0;  ///< acquires refused with PoolOverloaded (PoolOptions::max_waiters)
  std::uint64_t validation_failures = 0;  ///< pings that returned false or threw
  std::uint64_t create_failures = 0;      ///< factory calls that threw
  std::uint64_t close_failures = 0;       ///< close() calls that threw (swallowed)
  std::uint64_t detached = 0;             ///< connections taken out with PooledHandle::detach()
  std::uint64_t leaks = 0;                ///< handles held past PoolOptions::leak_threshold
  std::chrono::nanoseconds total_wait_time{0};  ///< summed wait of the acquires that waited
  std::chrono::nanoseconds max_wait_time{0};    ///< longest single wait
  /// `closed`, by CloseReason: closed_by_reason[size_t(CloseReason::expired)], and so on (the
  /// pool's own close counts as pool_closed; none stays 0). See closed_for().
  std::array<std::uint64_t, close_reason_count> closed_by_reason{};

  // Gauges, at the moment of the snapshot.
  std::size_t idle = 0;      ///< open connections in the idle set
  std::size_t in_use = 0;    ///< connections held through handles
  std::size_t pending = 0;   ///< callers waiting in acquire() now
  std::size_t max_size = 0;  ///< PoolOptions::max_size

  /// Connections closed for `reason`.
  [[nodiscard]] std::uint64_t closed_for(CloseReason reason) const noexcept {
    return closed_by_reason[static_cast<std::size_t>(reason)];
  }

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
    add("rejected", num(rejected));
    add("validation_failures", num(validation_failures));
    add("create_failures", num(create_failures));
    add("close_failures", num(close_failures));
    add("detached", num(detached));
    add("leaks", num(leaks));
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

  /// The statistics in the Prometheus text exposition format (version 0.0.4), one metric
  /// family per figure, each with its HELP and TYPE lines, ready to serve on /metrics:
  ///
  ///     <prefix>_connections_created_total       counter   created
  ///     <prefix>_connections_closed_total        counter   closed
  ///     <prefix>_acquires_total                  counter   acquired
  ///     <prefix>_reuses_total                    counter   reused
  ///     <prefix>_releases_total                  counter   released
  ///     <prefix>_waits_total                     counter   waited
  ///     <prefix>_timeouts_total                  counter   timeouts
  ///     <prefix>_rejected_total                  counter   rejected
  ///     <prefix>_validation_failures_total       counter   validation_failures
  ///     <prefix>_create_failures_total           counter   create_failures
  ///     <prefix>_close_failures_total            counter   close_failures
  ///     <prefix>_detached_total                  counter   detached
  ///     <prefix>_leaks_total                     counter   leaks
  ///     <prefix>_wait_seconds_total              counter   total_wait_time, in seconds
  ///     <prefix>_wait_seconds_max                gauge     max_wait_time, in seconds
  ///     <prefix>_connections{state="idle"}       gauge     idle (and state="in_use": in_use)
  ///     <prefix>_pending_acquires                gauge     pending
  ///     <prefix>_max_connections                 gauge     max_size
  ///
  /// `labels` are added to every sample (e.g. {{"pool", "orders"}}); their values are escaped
  /// as the format requires, and each ill-formed UTF-8 sequence in them is replaced with U+FFFD
  /// (the format requires UTF-8). To expose several pools in one response, give each its own
  /// labels and keep the HELP/TYPE lines of the first only (`with_help = false` for the others).
  ///
  /// Throws: std::invalid_argument, with a message naming the prefix or label, if `prefix` or a
  /// label name is not a valid Prometheus name ([a-zA-Z_:][a-zA-Z0-9_:]* for the prefix, no ':'
  /// in label names), if a label name starts with "__" (reserved by Prometheus for its own use),
  /// if a label name is given twice, or if a label is named "state", the label by which the
  /// connections family tells idle from in-use connections (a sample with two labels of one name
  /// is rejected by Prometheus, and fails the whole scrape).
  /// Example:
  ///     std::string body = pool.stats().to_prometheus("myapp_db", {{"pool", "orders"}});
  [[nodiscard]] std::string to_prometheus(
      std::string_view prefix = "connpool",
      std::initializer_list<std::pair<std::string_view, std::string_view>> labels = {},
      bool with_help = true) const {
    check_name(prefix, true, "metric prefix");
    std::string label_text;
    for (auto label = labels.begin(); label != labels.end(); ++label) {
      const auto& [name, value] = *label;
      check_label_name(name, labels.begin(), label);
      label_text += label_text.empty() ? "" : ",";
      label_text += name;
      label_text += "=\"";
      detail::append_utf8_replacing_invalid(label_text, value, [&label_text](char c) {
        switch (c) {
          case '\\':
            label_text += "\\\\";
            break;
          case '"':
            label_text += "\\\"";
            break;
          case '\n':
            label_text += "\\n";
            break;
          default:
            label_text += c;
        }
      });
      label_text += '"';
    }
    std::string out;
    auto family = [&](const char* name, const char* type, const char* help) {
      if (with_help) {
        out.append("# HELP ").append(prefix).append("_").append(name).append(" ").append(help);
        out.append("\n# TYPE ").append(prefix).append("_").append(name).append(" ");
        out.append(type).append("\n");
      }
    };
    auto sample = [&](const char* name, std::string_view extra_label, const std::string& value) {
      out.append(prefix).append("_").append(name);
      if (!label_text.empty() || !extra_label.empty()) {
        out += '{';
        out += label_text;
        if (!label_text.empty() && !extra_label.empty()) {
          out += ',';
        }
        out += extra_label;
        out += '}';
      }
      out.append(" ").append(value).append("\n");
    };
    auto counter = [&](const char* name, const char* help, std::uint64_t v) {
      family(name, "counter", help);
      sample(name, {}, std::to_string(v));
    };
    auto gauge = [&](const char* name, const char* help, std::uint64_t v) {
      family(name, "gauge", help);
      sample(name, {}, std::to_string(v));
    };
    counter("connections_created_total", "Connections the factory returned.", created);
    counter("connections_closed_total", "Connections closed, for any reason.", closed);
    counter("acquires_total", "Successful acquires.", acquired);
    counter("reuses_total", "Acquires served by an existing connection.", reused);
    counter("releases_total", "Connections given back, including invalidated ones.", released);
    counter("waits_total", "Acquires that had to wait for another holder.", waited);
    counter("timeouts_total", "Acquires that timed out.", timeouts);
    counter("rejected_total", "Acquires refused because max_waiters callers waited.", rejected);
    counter("validation_failures_total", "Pings that failed.", validation_failures);
    counter("create_failures_total", "Factory calls that threw.", create_failures);
    counter("close_failures_total", "Connection closes that threw.", close_failures);
    counter("detached_total", "Connections taken out of the pool with detach().", detached);
    counter("leaks_total", "Handles held longer than the leak threshold.", leaks);
    family("wait_seconds_total", "counter", "Time acquires spent waiting, summed.");
    sample("wait_seconds_total", {}, seconds(total_wait_time));
    family("wait_seconds_max", "gauge", "The longest single wait of an acquire.");
    sample("wait_seconds_max", {}, seconds(max_wait_time));
    family("connections", "gauge", "Open connections, by state.");
    sample("connections", "state=\"idle\"", std::to_string(idle));
    sample("connections", "state=\"in_use\"", std::to_string(in_use));
    gauge("pending_acquires", "Callers waiting in acquire now.", pending);
    gauge("max_connections", "The pool's max_size.", max_size);
    return out;
  }

 private:
  using Label = std::pair<std::string_view, std::string_view>;

  // The label the connections family adds to its samples (state="idle", state="in_use").
  static constexpr std::string_view own_label = "state";

  /// Throws std::invalid_argument unless `name` may be added to every sample: a valid label
  /// name, not reserved, not `own_label`, and not among the names in [first, last).
  static void check_label_name(std::string_view name, const Label* first, const Label* last) {
    check_name(name, false, "label name");
    auto fail = [name](const char* why) {
      throw std::invalid_argument("connpool: to_prometheus: label name \"" + std::string(name) +
                                  "\" " + why);
    };
    if (name.starts_with("__")) {
      fail("is reserved (names starting with \"__\" are Prometheus' own)");
    }
    if (name == own_label) {
      fail(
          "is the connections family's own label (state=\"idle\"/\"in_use\"); choose another "
          "name");
    }
    for (; first != last; ++first) {
      if (first->first == name) {
        fail("given twice");
      }
    }
  }

  static void check_name(std::string_view name, bool colon_ok, const char* what) {
    auto letter = [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    };
    bool ok = !name.empty();
    for (std::size_t i = 0; ok && i < name.size(); ++i) {
      const char c = name[i];
      ok = letter(c) || (colon_ok && c == ':') || (i > 0 && c >= '0' && c <= '9');
    }
    if (!ok) {
      throw std::invalid_argument("connpool: to_prometheus: invalid " + std::string(what) + " \"" +
                                  std::string(name) + "\"");
    }
  }

  static std::string seconds(std::chrono::nanoseconds d) {
    char buf[64];
    auto res = std::to_chars(buf, buf + sizeof buf, std::chrono::duration<double>(d).count(),
                             std::chars_format::general, 17);
    return std::string(buf, res.ptr);
  }

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
