// connpool - PoolStats, a snapshot of a pool's counters and gauges
// SPDX-License-Identifier: MIT
#pragma once

// PoolStats is a plain value: ConnectionPool::stats() fills it, and it has no link back to the
// pool. to_json() writes it as one JSON object without any JSON library; to_prometheus() in the
// Prometheus text format, under the OpenTelemetry names (and, deprecated, the names before them).
// HealthReport is what ConnectionPool::health() returns.

#include <array>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <connpool/events.hpp>
#include <connpool/histogram.hpp>

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

inline double to_ms(std::chrono::nanoseconds d) noexcept {
  return std::chrono::duration<double, std::milli>(d).count();
}

/// Plain decimal with 6 fractional digits: valid JSON for every finite value, and, unlike
/// printf, independent of the C locale's decimal point.
inline std::string fixed(double v) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, 6);
  return std::string(buf, res.ptr);
}

}  // namespace detail

/// What PoolStats::to_prometheus() writes, besides the figures.
struct PrometheusOptions {
  /// Labels added to every sample, after db_client_connection_pool_name and host (e.g.
  /// {{"service", "orders"}}). Values are escaped as the format requires; each ill-formed UTF-8
  /// sequence in them becomes U+FFFD.
  std::vector<std::pair<std::string, std::string>> labels;
  /// The HELP and TYPE line of each family.
  bool with_help = true;
  /// Deprecated, and removed in the next release: also writes the metric names from before the
  /// OpenTelemetry ones (`<legacy_prefix>_acquires_total` and the rest, see the legacy
  /// to_prometheus(prefix, labels) overload), after them, so that dashboards can move over.
  bool legacy_names = false;
  /// The prefix of those names.
  std::string legacy_prefix = "connpool";
};

/// A snapshot of a pool's statistics.
///
/// Once the pool is quiet every figure is exact. Taken while other threads use the pool, the
/// figures may come from slightly different moments (as Go's DBStats), but each is a value the
/// pool really had. Counters and histograms only grow; gauges are the state at the snapshot.
struct PoolStats {
  /// PoolOptions::name: the db_client_connection_pool_name label of the Prometheus text.
  std::string name = "default";

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

  // Histograms (see Histogram), since the pool was constructed.
  /// Every successful acquire, by how long it took to get its connection: waiting for one that
  /// another caller held, and connecting when the acquire opened one itself. An acquire served
  /// at once counts in the first bucket and adds 0 to the sum (it is not timed: no clock is read
  /// for it). count() == acquired once the pool is quiet. Failed acquires are not in it
  /// (timeouts counts the timed-out ones).
  Histogram wait_time;
  /// Every handle given back (released, invalidated, failed or destroyed), by how long it was
  /// held, measured with the pool's Clock. Detached connections are not in it.
  Histogram use_time;
  /// Every successful connect (factory call), by how long it took.
  Histogram create_time;

  // Gauges, at the moment of the snapshot.
  std::size_t idle = 0;        ///< open connections in the idle set
  std::size_t in_use = 0;      ///< connections held through handles
  std::size_t pending = 0;     ///< callers waiting in acquire() now
  std::size_t connecting = 0;  ///< connects (factory calls) in flight now
  std::size_t min_size = 0;    ///< PoolOptions::min_size (as changed by set_min_size())
  std::size_t max_size = 0;    ///< PoolOptions::max_size (as changed by set_max_size())

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
    return detail::to_ms(total_wait_time) / static_cast<double>(acquired);
  }

  /// One flat JSON object of numbers whose keys are the field names; durations are in
  /// milliseconds, plus the derived "total_connections", "reuse_ratio" and "avg_wait_time_ms".
  /// closed_by_reason is written one key per reason ("closed_by_reason_expired", ...; not
  /// none), each histogram as "<field>_count", "_sum_ms", "_p50_ms", "_p90_ms", "_p99_ms" and
  /// "_max_ms" (quantiles are bucket bounds: Histogram::quantile; the buckets themselves are in
  /// the Prometheus text). `name` is not written.
  ///
  /// Why flat: every value is a number at the top level, so that the simplest consumer (a log
  /// line parser, a flat key-value store) reads it as well as a JSON library does.
  [[nodiscard]] std::string to_json() const;

  /// The statistics in the Prometheus text exposition format (version 0.0.4), ready to serve on
  /// /metrics, under the names of the OpenTelemetry semantic conventions for database client
  /// connection pools (db.client.connection.*, with '.' as '_', the unit as a suffix and
  /// "_total" on counters), every sample labelled
  /// db_client_connection_pool_name="<name>":
  ///
  ///     db_client_connection_count{state="idle"|"used"}   gauge      idle, in_use
  ///     db_client_connection_idle_min                     gauge      min_size
  ///     db_client_connection_max                          gauge      max_size
  ///     db_client_connection_pending_requests             gauge      pending
  ///     db_client_connection_timeouts_total               counter    timeouts
  ///     db_client_connection_create_time_seconds          histogram  create_time
  ///     db_client_connection_wait_time_seconds            histogram  wait_time
  ///     db_client_connection_use_time_seconds             histogram  use_time
  ///     connpool_connection_closes_total{reason="..."}    counter    closed_by_reason
  ///     connpool_connection_connecting                    gauge      connecting
  ///
  /// The last two have no OpenTelemetry name. Histogram buckets are Histogram's, in seconds
  /// (le="1e-06" to le="134.217728", then le="+Inf").
  ///
  /// Throws: std::invalid_argument, with a message naming the label, if a label name in
  /// `options.labels` is not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*), starts with
  /// "__" (reserved by Prometheus), is given twice, or is one the text uses itself
  /// (db_client_connection_pool_name, host, state, le, reason): a sample with two labels of one
  /// name fails the whole scrape.
  /// Example: `std::string body = pool.stats().to_prometheus();`
  [[nodiscard]] std::string to_prometheus(const PrometheusOptions& options = {}) const;

  /// Deprecated, and removed in the next release: the metric names from before the
  /// OpenTelemetry ones, one family per figure, `labels` added to every sample:
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
  /// Throws: std::invalid_argument, naming the prefix or label, if `prefix` is not a valid
  /// metric name prefix ([a-zA-Z_:][a-zA-Z0-9_:]*), or a label name is invalid, reserved,
  /// repeated or "state".
  [[nodiscard]] std::string to_prometheus(
      std::string_view prefix,
      std::initializer_list<std::pair<std::string_view, std::string_view>> labels = {},
      bool with_help = true) const;
};

/// Several pools' statistics in one Prometheus text, each family written once with the samples
/// of every pool (the text format wants a family's samples together), told apart by their
/// db_client_connection_pool_name (PoolOptions::name: give each pool its own). Otherwise as
/// PoolStats::to_prometheus(options).
[[nodiscard]] std::string to_prometheus(std::span<const PoolStats> pools,
                                        const PrometheusOptions& options = {});

/// What ConnectionPool::health() found: for a readiness probe.
struct HealthReport {
  /// Whether a connection could be acquired and given back within the timeout, and the p99
  /// wait over the last minute is under PoolOptions::health_p99_wait (when that is not 0).
  bool ok = false;
  /// Why not ok, in a sentence; empty when ok.
  std::string reason;
  /// The p99 of wait_time over about the last minute (a bucket bound: Histogram::quantile).
  std::chrono::microseconds p99_wait{0};
  std::size_t in_use = 0;    ///< connections in use, at the check
  std::size_t max_size = 0;  ///< the pool's max_size
  /// The message of the last connect error, if the last connect failed; empty otherwise.
  std::string last_error;
};

namespace detail {

/// One pool's statistics for the Prometheus writer; `host` null: no host label.
struct PrometheusSource {
  const PoolStats* stats;
  const std::string* host;
};

/// Writes the label text of `labels`: name="value", comma separated, values escaped.
inline void append_prometheus_label(std::string& out,
                                    std::string_view name,
                                    std::string_view value) {
  if (!out.empty() && out.back() != '{') {
    out += ',';
  }
  out.append(name).append("=\"");
  append_utf8_replacing_invalid(out, value, [&out](char c) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  });
  out += '"';
}

/// Throws std::invalid_argument unless `name` is a valid metric name (colon_ok) or label name.
inline void check_prometheus_name(std::string_view name, bool colon_ok, const char* what) {
  auto letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; };
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

/// Throws std::invalid_argument unless the label `name` may be added to every sample: valid,
/// not reserved, not among `own` (the labels the text uses itself) and not in `earlier`.
template <class Names>
void check_prometheus_label(std::string_view name,
                            std::initializer_list<std::string_view> own,
                            const char* own_why,
                            const Names& earlier) {
  check_prometheus_name(name, false, "label name");
  auto fail = [name](const std::string& why) {
    throw std::invalid_argument("connpool: to_prometheus: label name \"" + std::string(name) +
                                "\" " + why);
  };
  if (name.starts_with("__")) {
    fail("is reserved (names starting with \"__\" are Prometheus' own)");
  }
  for (const std::string_view o : own) {
    if (name == o) {
      fail(own_why);
    }
  }
  for (const std::string_view e : earlier) {
    if (e == name) {
      fail("given twice");
    }
  }
}

/// A double as Prometheus reads it: shortest round-trip form, "+Inf" for infinity.
inline std::string prometheus_number(double v) {
  if (v == std::numeric_limits<double>::infinity()) {
    return "+Inf";
  }
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, res.ptr);
}

inline std::string prometheus_seconds(std::chrono::nanoseconds d) {
  return prometheus_number(std::chrono::duration<double>(d).count());
}

/// The legacy text (PoolStats::to_prometheus(prefix, labels, with_help)), after its checks.
inline void write_legacy_prometheus(std::string& out,
                                    const PoolStats& s,
                                    std::string_view prefix,
                                    const std::string& label_text,
                                    bool with_help) {
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
  counter("connections_created_total", "Connections the factory returned.", s.created);
  counter("connections_closed_total", "Connections closed, for any reason.", s.closed);
  counter("acquires_total", "Successful acquires.", s.acquired);
  counter("reuses_total", "Acquires served by an existing connection.", s.reused);
  counter("releases_total", "Connections given back, including invalidated ones.", s.released);
  counter("waits_total", "Acquires that had to wait for another holder.", s.waited);
  counter("timeouts_total", "Acquires that timed out.", s.timeouts);
  counter("rejected_total", "Acquires refused because max_waiters callers waited.", s.rejected);
  counter("validation_failures_total", "Pings that failed.", s.validation_failures);
  counter("create_failures_total", "Factory calls that threw.", s.create_failures);
  counter("close_failures_total", "Connection closes that threw.", s.close_failures);
  counter("detached_total", "Connections taken out of the pool with detach().", s.detached);
  counter("leaks_total", "Handles held longer than the leak threshold.", s.leaks);
  family("wait_seconds_total", "counter", "Time acquires spent waiting, summed.");
  sample("wait_seconds_total", {}, prometheus_seconds(s.total_wait_time));
  family("wait_seconds_max", "gauge", "The longest single wait of an acquire.");
  sample("wait_seconds_max", {}, prometheus_seconds(s.max_wait_time));
  family("connections", "gauge", "Open connections, by state.");
  sample("connections", "state=\"idle\"", std::to_string(s.idle));
  sample("connections", "state=\"in_use\"", std::to_string(s.in_use));
  gauge("pending_acquires", "Callers waiting in acquire now.", s.pending);
  gauge("max_connections", "The pool's max_size.", s.max_size);
}

/// The label names the OpenTelemetry text uses itself.
inline constexpr std::string_view prometheus_pool_label = "db_client_connection_pool_name";

/// Writes the OpenTelemetry-named text of `sources` (and the legacy names, if asked).
inline std::string write_prometheus(std::span<const PrometheusSource> sources,
                                    const PrometheusOptions& options) {
  std::vector<std::string_view> seen;
  std::string user;  // the user's labels, as label text
  for (const auto& [name, value] : options.labels) {
    check_prometheus_label(name, {prometheus_pool_label, "host", "state", "le", "reason", "role"},
                           "is one the text uses itself (db_client_connection_pool_name, host, "
                           "state, le, reason, role); choose another name",
                           seen);
    seen.push_back(name);
    append_prometheus_label(user, name, value);
  }
  if (options.legacy_names) {
    check_prometheus_name(options.legacy_prefix, true, "metric prefix");
  }
  std::string out;
  auto family = [&](std::string_view name, const char* type, const char* help) {
    if (options.with_help) {
      out.append("# HELP ").append(name).append(" ").append(help).append("\n");
      out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
    }
  };
  // name{pool, host, user labels, extra} value
  auto sample = [&](std::string_view name, const PrometheusSource& src, std::string_view extra,
                    const std::string& value) {
    std::string labels = "{";
    append_prometheus_label(labels, prometheus_pool_label, src.stats->name);
    if (src.host != nullptr) {
      append_prometheus_label(labels, "host", *src.host);
    }
    if (!user.empty()) {
      labels.append(",").append(user);
    }
    if (!extra.empty()) {
      labels.append(",").append(extra);
    }
    out.append(name).append(labels).append("} ").append(value).append("\n");
  };
  auto each = [&](auto&& f) {
    for (const PrometheusSource& src : sources) {
      f(src, *src.stats);
    }
  };
  auto gauge = [&](std::string_view name, const char* help, auto field) {
    family(name, "gauge", help);
    each([&](const PrometheusSource& src, const PoolStats& s) {
      sample(name, src, {}, std::to_string(field(s)));
    });
  };
  auto histogram = [&](std::string_view name, const char* help, auto field) {
    family(name, "histogram", help);
    const std::string bucket = std::string(name) + "_bucket";
    each([&](const PrometheusSource& src, const PoolStats& s) {
      const Histogram& h = field(s);
      std::uint64_t cumulative = 0;
      for (std::size_t i = 0; i < Histogram::bucket_count; ++i) {
        cumulative += h.buckets()[i];
        const double le = i + 1 < Histogram::bucket_count
                              ? std::chrono::duration<double>(Histogram::upper_bound(i)).count()
                              : std::numeric_limits<double>::infinity();
        sample(bucket, src, "le=\"" + prometheus_number(le) + "\"", std::to_string(cumulative));
      }
      sample(std::string(name) + "_sum", src, {}, prometheus_seconds(h.sum()));
      sample(std::string(name) + "_count", src, {}, std::to_string(cumulative));
    });
  };

  family("db_client_connection_count", "gauge",
         "The number of connections that are currently in the state described by the state "
         "label.");
  each([&](const PrometheusSource& src, const PoolStats& s) {
    sample("db_client_connection_count", src, "state=\"idle\"", std::to_string(s.idle));
    sample("db_client_connection_count", src, "state=\"used\"", std::to_string(s.in_use));
  });
  gauge("db_client_connection_idle_min", "The minimum number of idle open connections allowed.",
        [](const PoolStats& s) { return s.min_size; });
  gauge("db_client_connection_max", "The maximum number of open connections allowed.",
        [](const PoolStats& s) { return s.max_size; });
  gauge("db_client_connection_pending_requests",
        "The number of current pending requests for an open connection.",
        [](const PoolStats& s) { return s.pending; });
  family("db_client_connection_timeouts_total", "counter",
         "The number of connection timeouts that have occurred trying to obtain a connection "
         "from the pool.");
  each([&](const PrometheusSource& src, const PoolStats& s) {
    sample("db_client_connection_timeouts_total", src, {}, std::to_string(s.timeouts));
  });
  histogram("db_client_connection_create_time_seconds",
            "The time it took to create a new connection.",
            [](const PoolStats& s) -> const Histogram& { return s.create_time; });
  histogram("db_client_connection_wait_time_seconds",
            "The time it took to obtain an open connection from the pool.",
            [](const PoolStats& s) -> const Histogram& { return s.wait_time; });
  histogram("db_client_connection_use_time_seconds",
            "The time between borrowing a connection and returning it to the pool.",
            [](const PoolStats& s) -> const Histogram& { return s.use_time; });
  family("connpool_connection_closes_total", "counter", "Connections closed, by reason.");
  each([&](const PrometheusSource& src, const PoolStats& s) {
    for (std::size_t r = 1; r < close_reason_count; ++r) {
      sample("connpool_connection_closes_total", src,
             std::string("reason=\"") + to_string(static_cast<CloseReason>(r)) + "\"",
             std::to_string(s.closed_by_reason[r]));
    }
  });
  gauge("connpool_connection_connecting", "Connects (factory calls) in flight.",
        [](const PoolStats& s) { return s.connecting; });

  if (options.legacy_names) {
    // One legacy block per source, with the pool name (and host) as labels of their own.
    bool first = true;
    for (const PrometheusSource& src : sources) {
      std::string label_text;
      append_prometheus_label(label_text, "pool", src.stats->name);
      if (src.host != nullptr) {
        append_prometheus_label(label_text, "host", *src.host);
      }
      if (!user.empty()) {
        label_text.append(",").append(user);
      }
      write_legacy_prometheus(out, *src.stats, options.legacy_prefix, label_text,
                              options.with_help && first);
      first = false;
    }
  }
  return out;
}

}  // namespace detail

inline std::string PoolStats::to_json() const {
  std::string out = "{";
  auto add = [&out](std::string_view key, const std::string& value) {
    if (out.size() > 1) {
      out += ',';
    }
    out += '"';
    out += key;
    out += "\":";
    out += value;
  };
  auto num = [](std::uint64_t v) { return std::to_string(v); };
  auto ms = [](std::chrono::nanoseconds d) { return detail::fixed(detail::to_ms(d)); };
  auto hist = [&](std::string_view key, const Histogram& h) {
    const std::string k(key);
    add(k + "_count", num(h.count()));
    add(k + "_sum_ms", ms(h.sum()));
    add(k + "_p50_ms", ms(h.quantile(0.5)));
    add(k + "_p90_ms", ms(h.quantile(0.9)));
    add(k + "_p99_ms", ms(h.quantile(0.99)));
    add(k + "_max_ms", ms(h.quantile(1.0)));
  };
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
  add("total_wait_time", ms(total_wait_time));
  add("max_wait_time", ms(max_wait_time));
  for (std::size_t r = 1; r < close_reason_count; ++r) {
    add(std::string("closed_by_reason_") + to_string(static_cast<CloseReason>(r)),
        num(closed_by_reason[r]));
  }
  hist("wait_time", wait_time);
  hist("use_time", use_time);
  hist("create_time", create_time);
  add("idle", num(idle));
  add("in_use", num(in_use));
  add("pending", num(pending));
  add("connecting", num(connecting));
  add("min_size", num(min_size));
  add("max_size", num(max_size));
  add("total_connections", num(total_connections()));
  add("reuse_ratio", detail::fixed(reuse_ratio()));
  add("avg_wait_time_ms", detail::fixed(avg_wait_time_ms()));
  out += '}';
  return out;
}

inline std::string PoolStats::to_prometheus(const PrometheusOptions& options) const {
  const detail::PrometheusSource source{this, nullptr};
  return detail::write_prometheus(std::span(&source, 1), options);
}

inline std::string PoolStats::to_prometheus(
    std::string_view prefix,
    std::initializer_list<std::pair<std::string_view, std::string_view>> labels,
    bool with_help) const {
  detail::check_prometheus_name(prefix, true, "metric prefix");
  std::vector<std::string_view> seen;
  std::string label_text;
  for (const auto& [name, value] : labels) {
    detail::check_prometheus_label(name, {"state"},
                                   "is the connections family's own label "
                                   "(state=\"idle\"/\"in_use\"); choose another name",
                                   seen);
    seen.push_back(name);
    detail::append_prometheus_label(label_text, name, value);
  }
  std::string out;
  detail::write_legacy_prometheus(out, *this, prefix, label_text, with_help);
  return out;
}

inline std::string to_prometheus(std::span<const PoolStats> pools,
                                 const PrometheusOptions& options) {
  std::vector<detail::PrometheusSource> sources;
  sources.reserve(pools.size());
  for (const PoolStats& s : pools) {
    sources.push_back({&s, nullptr});
  }
  return detail::write_prometheus(sources, options);
}

}  // namespace connpool
