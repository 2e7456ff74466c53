// connpool - tests: PoolStats, its derived values, to_json(), and the pool's counters
// SPDX-License-Identifier: MIT

#include <cctype>
#include <charconv>
#include <chrono>
#include <clocale>
#include <cstdint>
#include <limits>
#include <locale>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <connpool/connpool.hpp>

#include "catch.hpp"
#include "fake_conn.hpp"
#include "prometheus_text.hpp"
#include "utf8.hpp"

using namespace std::chrono_literals;
using connpool::PoolStats;
using connpool_test::Approx;
using connpool_test::FakeFactory;
using connpool_test::FakeState;
using connpool_test::is_valid_utf8;
using connpool_test::prometheus_samples;
using namespace std::string_view_literals;

namespace {

/// A strict parser for the one shape to_json() may produce: a flat JSON object whose values
/// are numbers. Returns key -> number text, or nullopt on any syntax error (trailing comma,
/// unbalanced braces, a duplicate key, a number JSON does not allow, trailing garbage).
class FlatJson {
 public:
  static std::optional<std::map<std::string, std::string>> parse(const std::string& text) {
    FlatJson p(text);
    std::map<std::string, std::string> out;
    p.skip_ws();
    if (!p.eat('{')) {
      return std::nullopt;
    }
    p.skip_ws();
    if (!p.eat('}')) {
      for (;;) {
        auto key = p.string();
        p.skip_ws();
        if (!key || !p.eat(':')) {
          return std::nullopt;
        }
        p.skip_ws();
        auto value = p.number();
        if (!value || !out.emplace(*key, *value).second) {
          return std::nullopt;
        }
        p.skip_ws();
        if (p.eat('}')) {
          break;
        }
        if (!p.eat(',')) {
          return std::nullopt;
        }
        p.skip_ws();
      }
    }
    p.skip_ws();
    if (p.pos_ != text.size()) {
      return std::nullopt;
    }
    return out;
  }

 private:
  explicit FlatJson(const std::string& text) : text_(text) {}

  [[nodiscard]] bool at_end() const { return pos_ >= text_.size(); }
  [[nodiscard]] char peek() const { return at_end() ? '\0' : text_[pos_]; }
  bool eat(char c) {
    if (peek() == c && !at_end()) {
      ++pos_;
      return true;
    }
    return false;
  }
  void skip_ws() {
    while (!at_end() && (peek() == ' ' || peek() == '\n' || peek() == '\t' || peek() == '\r')) {
      ++pos_;
    }
  }
  bool digits() {
    const std::size_t start = pos_;
    while (!at_end() && std::isdigit(static_cast<unsigned char>(peek())) != 0) {
      ++pos_;
    }
    return pos_ > start;
  }
  std::optional<std::string> string() {
    if (!eat('"')) {
      return std::nullopt;
    }
    std::string s;
    while (!at_end() && peek() != '"') {
      if (peek() == '\\' || static_cast<unsigned char>(peek()) < 0x20) {
        return std::nullopt;  // field names need no escapes
      }
      s += text_[pos_++];
    }
    if (!eat('"')) {
      return std::nullopt;
    }
    return s;
  }
  // JSON: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  std::optional<std::string> number() {
    const std::size_t start = pos_;
    eat('-');
    if (eat('0')) {
      // no leading zeros
    } else if (peek() >= '1' && peek() <= '9') {
      digits();
    } else {
      return std::nullopt;
    }
    if (eat('.') && !digits()) {
      return std::nullopt;
    }
    if (eat('e') || eat('E')) {
      if (!eat('+')) {
        eat('-');
      }
      if (!digits()) {
        return std::nullopt;
      }
    }
    return text_.substr(start, pos_ - start);
  }

  const std::string& text_;
  std::size_t pos_ = 0;
};

/// The value of a JSON number, read locale-independently; NaN if it does not parse whole.
double as_double(const std::string& number) {
  double v = 0;
  const auto res = std::from_chars(number.data(), number.data() + number.size(), v);
  if (res.ec != std::errc{} || res.ptr != number.data() + number.size()) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  return v;
}

PoolStats sample_stats() {
  PoolStats s;
  s.created = 1'234'567;
  s.closed = 2;
  s.acquired = 8;
  s.reused = 6;
  s.released = 5;
  s.waited = 4;
  s.timeouts = 3;
  s.rejected = 17;
  s.validation_failures = 9;
  s.create_failures = 10;
  s.close_failures = 11;
  s.detached = 12;
  s.total_wait_time = 1500us;
  s.max_wait_time = 1250us;
  s.idle = 13;
  s.in_use = 14;
  s.pending = 15;
  s.max_size = 16;
  return s;
}

/// A numpunct that writes 1234.5 as "1.234,5", as a German locale would.
struct CommaDecimal : std::numpunct<char> {
  char do_decimal_point() const override { return ','; }
  char do_thousands_sep() const override { return '.'; }
  std::string do_grouping() const override { return "\3"; }
};

/// Installs a comma-decimal global C++ locale (and, where one is installed, a comma-decimal C
/// locale) for the scope, then restores the previous ones.
class CommaLocale {
 public:
  CommaLocale()
      : previous_(std::locale::global(std::locale(std::locale::classic(), new CommaDecimal))) {
    const char* current = std::setlocale(LC_ALL, nullptr);
    previous_c_ = current != nullptr ? current : "C";
    for (const char* name : {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8"}) {
      if (std::setlocale(LC_ALL, name) != nullptr) {
        c_locale_switched_ = true;
        break;
      }
    }
  }
  CommaLocale(const CommaLocale&) = delete;
  CommaLocale& operator=(const CommaLocale&) = delete;
  ~CommaLocale() {
    std::setlocale(LC_ALL, previous_c_.c_str());
    std::locale::global(previous_);
  }
  [[nodiscard]] bool c_locale_switched() const { return c_locale_switched_; }

 private:
  std::locale previous_;
  std::string previous_c_;
  bool c_locale_switched_ = false;
};

}  // namespace

TEST_CASE("PoolStats: a default snapshot is all zeros", "[stats]") {
  const PoolStats s;
  CHECK(s.created == 0);
  CHECK(s.acquired == 0);
  CHECK(s.total_wait_time == 0ns);
  CHECK(s.max_wait_time == 0ns);
  CHECK(s.total_connections() == 0);
  CHECK(s.reuse_ratio() == 0.0);
  CHECK(s.avg_wait_time_ms() == 0.0);
}

TEST_CASE("PoolStats: reuse_ratio() is reused / acquired, and 0 when nothing was acquired",
          "[stats]") {
  PoolStats s;
  s.reused = 5;
  CHECK(s.reuse_ratio() == 0.0);  // acquired == 0: no division by zero
  s.acquired = 8;
  s.reused = 6;
  CHECK(s.reuse_ratio() == Approx(0.75));
  s.reused = 8;
  CHECK(s.reuse_ratio() == Approx(1.0));
}

TEST_CASE("PoolStats: avg_wait_time_ms() is the mean wait over successful acquires", "[stats]") {
  PoolStats s;
  s.total_wait_time = 10ms;
  CHECK(s.avg_wait_time_ms() == 0.0);  // nothing acquired
  s.acquired = 4;
  CHECK(s.avg_wait_time_ms() == Approx(2.5));
  s.total_wait_time = 3us;
  s.acquired = 1;
  CHECK(s.avg_wait_time_ms() == Approx(0.003));
}

TEST_CASE("PoolStats: total_connections() is idle + in_use", "[stats]") {
  PoolStats s;
  s.idle = 3;
  s.in_use = 4;
  s.pending = 100;  // waiters hold no connection
  CHECK(s.total_connections() == 7);
}

TEST_CASE("PoolStats: to_json() is one flat JSON object with every field and derived value",
          "[stats]") {
  const PoolStats s = sample_stats();
  const std::string json = s.to_json();
  INFO("json: " << json);
  const auto parsed = FlatJson::parse(json);
  REQUIRE(parsed.has_value());
  const auto& m = *parsed;

  // DESIGN: "to_json() (one JSON object whose keys are the field names above, plus the derived
  // values)".
  for (const char* key : {"created",
                          "closed",
                          "acquired",
                          "reused",
                          "released",
                          "waited",
                          "timeouts",
                          "rejected",
                          "validation_failures",
                          "create_failures",
                          "close_failures",
                          "detached",
                          "leaks",
                          "total_wait_time",
                          "max_wait_time",
                          "idle",
                          "in_use",
                          "pending",
                          "connecting",
                          "min_size",
                          "max_size",
                          "total_connections",
                          "reuse_ratio",
                          "avg_wait_time_ms"}) {
    INFO("key: " << key);
    CHECK(m.count(key) == 1);
  }
  // closed_by_reason, one key per reason but none; each histogram, six keys.
  for (std::size_t r = 1; r < connpool::close_reason_count; ++r) {
    const std::string key =
        std::string("closed_by_reason_") + to_string(static_cast<connpool::CloseReason>(r));
    INFO("key: " << key);
    CHECK(m.count(key) == 1);
  }
  for (const char* h : {"wait_time", "use_time", "create_time"}) {
    for (const char* part : {"_count", "_sum_ms", "_p50_ms", "_p90_ms", "_p99_ms", "_max_ms"}) {
      const std::string key = std::string(h) + part;
      INFO("key: " << key);
      CHECK(m.count(key) == 1);
    }
  }
  REQUIRE(m.size() == 24 + (connpool::close_reason_count - 1) + 18);

  CHECK(m.at("created") == "1234567");
  CHECK(m.at("closed") == "2");
  CHECK(m.at("acquired") == "8");
  CHECK(m.at("reused") == "6");
  CHECK(m.at("released") == "5");
  CHECK(m.at("waited") == "4");
  CHECK(m.at("timeouts") == "3");
  CHECK(m.at("rejected") == "17");
  CHECK(m.at("validation_failures") == "9");
  CHECK(m.at("create_failures") == "10");
  CHECK(m.at("close_failures") == "11");
  CHECK(m.at("detached") == "12");
  CHECK(m.at("leaks") == "0");
  CHECK(m.at("idle") == "13");
  CHECK(m.at("in_use") == "14");
  CHECK(m.at("pending") == "15");
  CHECK(m.at("max_size") == "16");
  CHECK(m.at("total_connections") == "27");
  // Durations are written in milliseconds (stats.hpp).
  CHECK(as_double(m.at("total_wait_time")) == Approx(1.5));
  CHECK(as_double(m.at("max_wait_time")) == Approx(1.25));
  CHECK(as_double(m.at("reuse_ratio")) == Approx(0.75));
  CHECK(as_double(m.at("avg_wait_time_ms")) == Approx(1.5 / 8));
}

TEST_CASE("PoolStats: to_json() of an empty snapshot is valid JSON too", "[stats]") {
  const std::string json = PoolStats{}.to_json();
  INFO("json: " << json);
  const auto parsed = FlatJson::parse(json);
  REQUIRE(parsed.has_value());
  CHECK(parsed->size() == 24 + (connpool::close_reason_count - 1) + 18);
  CHECK(as_double(parsed->at("reuse_ratio")) == 0.0);
}

TEST_CASE("PoolStats: to_json() writes the same numbers whatever the global locale", "[stats]") {
  const PoolStats s = sample_stats();
  const std::string classic = s.to_json();
  std::string localised;
  {
    const CommaLocale comma;
    INFO("C locale switched as well: " << comma.c_locale_switched());
    localised = s.to_json();
  }
  INFO("classic:   " << classic);
  INFO("localised: " << localised);
  CHECK(localised == classic);
  const auto parsed = FlatJson::parse(localised);
  REQUIRE(parsed.has_value());
  CHECK(parsed->at("created") == "1234567");  // no thousands separator
  CHECK(as_double(parsed->at("total_wait_time")) == Approx(1.5));
}

TEST_CASE("ConnectionPool: a quiet pool's counters add up", "[stats][pool]") {
  // acquired == released + detached + in_use, and created == closed + detached + idle + in_use.
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state},
                                connpool::PoolOptions{.max_size = 4, .health_check_interval = 0ms}};
  const auto invariants_hold = [&pool] {
    const PoolStats s = pool.stats();
    return s.acquired == s.released + s.detached + s.in_use &&
           s.created == s.closed + s.detached + s.idle + s.in_use;
  };
  CHECK(invariants_hold());

  auto a = pool.acquire();
  auto b = pool.acquire();
  auto c = pool.acquire();
  auto d = pool.try_acquire();
  REQUIRE(d.has_value());
  PoolStats s = pool.stats();
  CHECK(s.created == 4);
  CHECK(s.acquired == 4);
  CHECK(s.reused == 0);
  CHECK(s.in_use == 4);
  CHECK(s.idle == 0);
  CHECK(s.max_size == 4);
  CHECK(invariants_hold());

  a.release();
  b.invalidate();
  connpool_test::FakeConn taken = c.detach();
  d.reset();  // destroys the handle: gives the connection back
  s = pool.stats();
  CHECK(s.released == 3);  // release, invalidate and the destructor; not detach
  CHECK(s.detached == 1);
  CHECK(s.closed == 1);
  CHECK(s.idle == 2);
  CHECK(s.in_use == 0);
  CHECK(s.total_connections() == 2);
  CHECK(invariants_hold());

  auto e = pool.acquire();
  auto f = pool.try_acquire();
  REQUIRE(f.has_value());
  s = pool.stats();
  CHECK(s.acquired == 6);
  CHECK(s.reused == 2);  // both served from idle
  CHECK(s.created == 4);
  CHECK(s.reuse_ratio() == Approx(2.0 / 6.0));
  CHECK(s.waited == 0);
  CHECK(s.timeouts == 0);
  CHECK(s.pending == 0);
  CHECK(invariants_hold());
  CHECK(taken.id() != 0);
}

TEST_CASE("ConnectionPool: stats().to_json() of a live pool parses", "[stats][pool]") {
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state}, connpool::PoolOptions{
                                                        .min_size = 2,
                                                        .max_size = 3,
                                                        .health_check_interval = 0ms,
                                                    }};
  auto h = pool.acquire();
  const std::string json = pool.stats().to_json();
  INFO("json: " << json);
  const auto parsed = FlatJson::parse(json);
  REQUIRE(parsed.has_value());
  CHECK(parsed->at("created") == "2");
  CHECK(parsed->at("in_use") == "1");
  CHECK(parsed->at("idle") == "1");
  CHECK(parsed->at("max_size") == "3");
}

TEST_CASE("PoolStats: to_prometheus() writes every figure as a metric", "[stats][metrics]") {
  PoolStats s;
  s.created = 5;
  s.closed = 1;
  s.acquired = 40;
  s.reused = 36;
  s.released = 39;
  s.waited = 3;
  s.timeouts = 1;
  s.rejected = 11;
  s.validation_failures = 2;
  s.create_failures = 4;
  s.close_failures = 6;
  s.detached = 7;
  s.leaks = 9;
  s.total_wait_time = 1500ms;
  s.max_wait_time = 250ms;
  s.idle = 3;
  s.in_use = 1;
  s.pending = 2;
  s.max_size = 8;
  const std::string text = s.to_prometheus("app_db");
  INFO(text);
  const auto m = prometheus_samples(text);
  CHECK(m.size() == 19);
  CHECK(m.at("app_db_connections_created_total") == "5");
  CHECK(m.at("app_db_connections_closed_total") == "1");
  CHECK(m.at("app_db_acquires_total") == "40");
  CHECK(m.at("app_db_reuses_total") == "36");
  CHECK(m.at("app_db_releases_total") == "39");
  CHECK(m.at("app_db_waits_total") == "3");
  CHECK(m.at("app_db_timeouts_total") == "1");
  CHECK(m.at("app_db_rejected_total") == "11");
  CHECK(m.at("app_db_validation_failures_total") == "2");
  CHECK(m.at("app_db_create_failures_total") == "4");
  CHECK(m.at("app_db_close_failures_total") == "6");
  CHECK(m.at("app_db_detached_total") == "7");
  CHECK(m.at("app_db_leaks_total") == "9");
  CHECK(std::stod(m.at("app_db_wait_seconds_total")) == Approx(1.5));
  CHECK(std::stod(m.at("app_db_wait_seconds_max")) == Approx(0.25));
  CHECK(m.at("app_db_connections{state=\"idle\"}") == "3");
  CHECK(m.at("app_db_connections{state=\"in_use\"}") == "1");
  CHECK(m.at("app_db_pending_acquires") == "2");
  CHECK(m.at("app_db_max_connections") == "8");
  CHECK(text.find("# TYPE app_db_acquires_total counter\n") != std::string::npos);
  CHECK(text.find("# TYPE app_db_connections gauge\n") != std::string::npos);
}

TEST_CASE("PoolStats: to_prometheus() labels, escaping and bad names", "[stats][metrics]") {
  PoolStats s;
  s.idle = 1;
  const auto m = prometheus_samples(
      s.to_prometheus("connpool", {{"pool", "a\"b\\c\nd"}, {"region", "eu"}}, false));
  CHECK(m.at(R"(connpool_connections{pool="a\"b\\c\nd",region="eu",state="idle"})") == "1");
  CHECK(m.at(R"(connpool_max_connections{pool="a\"b\\c\nd",region="eu"})") == "0");
  CHECK(s.to_prometheus("connpool", {}, false).find('#') == std::string::npos);
  CHECK_THROWS_AS(s.to_prometheus("9lives"), std::invalid_argument);
  CHECK_THROWS_AS(s.to_prometheus(""), std::invalid_argument);
  CHECK_THROWS_AS(s.to_prometheus("ok", {{"bad-name", "x"}}), std::invalid_argument);
  CHECK_THROWS_WITH(s.to_prometheus("my app"),
                    "connpool: to_prometheus: invalid metric prefix \"my app\"");
  CHECK_NOTHROW(s.to_prometheus("ns:sub_system"));
}

TEST_CASE("PoolStats: to_prometheus() refuses reserved, repeated and colliding label names",
          "[stats][metrics]") {
  // Prometheus rejects a scrape whose sample repeats a label name, and keeps names starting
  // with "__" for itself; `state` is the label of the connections family.
  PoolStats s;
  CHECK_THROWS_WITH(s.to_prometheus("connpool", {{"__name__", "x"}}),
                    "connpool: to_prometheus: label name \"__name__\" is reserved (names "
                    "starting with \"__\" are Prometheus' own)");
  CHECK_THROWS_AS(s.to_prometheus("connpool", {{"pool", "a"}, {"__meta", "x"}}),
                  std::invalid_argument);
  CHECK_THROWS_WITH(s.to_prometheus("connpool", {{"pool", "a"}, {"region", "eu"}, {"pool", "b"}}),
                    "connpool: to_prometheus: label name \"pool\" given twice");
  CHECK_THROWS_WITH(s.to_prometheus("connpool", {{"state", "primary"}}),
                    "connpool: to_prometheus: label name \"state\" is the connections family's "
                    "own label (state=\"idle\"/\"in_use\"); choose another name");
  CHECK_THROWS_AS(s.to_prometheus("connpool", {{"bad-name", "x"}}), std::invalid_argument);
  // Near misses are fine.
  const auto m = prometheus_samples(
      s.to_prometheus("connpool", {{"_pool", "a"}, {"state_of", "b"}, {"role", "primary"}}, false));
  CHECK(m.at(R"(connpool_connections{_pool="a",state_of="b",role="primary",state="idle"})") == "0");
}

TEST_CASE("PoolStats: to_prometheus() label values are valid UTF-8, ill-formed bytes replaced",
          "[stats][metrics]") {
  // The text format requires UTF-8 label values: each ill-formed sequence becomes U+FFFD, as in
  // to_json(); valid multi-byte characters pass unchanged, and escaping still applies.
  PoolStats s;
  const std::string value = "caf\xC3\xA9 \xFF\xE2\x82\"\\\n\xC3";
  const std::string text = s.to_prometheus("connpool", {{"pool", value}}, false);
  INFO(text);
  CHECK(is_valid_utf8(text));
  const auto m = prometheus_samples(text);
  CHECK(m.at("connpool_max_connections{pool=\"caf\xC3\xA9 \xEF\xBF\xBD\xEF\xBF\xBD\\\"\\\\\\n"
             "\xEF\xBF\xBD\"}") == "0");
}

namespace {

/// `s` written by detail::append_json_string.
std::string json_string(std::string_view s) {
  std::string out;
  connpool::detail::append_json_string(out, s);
  return out;
}

const std::string fffd = "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER in UTF-8

}  // namespace

TEST_CASE("detail::append_json_string: keeps valid UTF-8 and escapes what JSON requires",
          "[stats][json]") {
  CHECK(json_string("") == "\"\"");
  CHECK(json_string("a\"b\\c\n\t\x1F\x7F") == "\"a\\\"b\\\\c\\u000a\\u0009\\u001f\x7F\"");
  CHECK(json_string("\0x"sv) == "\"\\u0000x\"");
  // Valid sequences of each length, at the edges of the ranges Unicode allows.
  const std::string valid =
      "caf\xC3\xA9 \xC2\x80 \xDF\xBF \xE0\xA0\x80 \xE2\x82\xAC \xED\x9F\xBF \xEE\x80\x80 "
      "\xEF\xBF\xBF \xF0\x90\x80\x80 \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF";
  CHECK(json_string(valid) == "\"" + valid + "\"");
  // It appends.
  std::string out = "x";
  connpool::detail::append_json_string(out, "y");
  CHECK(out == "x\"y\"");
}

TEST_CASE("detail::append_json_string: each ill-formed UTF-8 sequence becomes one U+FFFD",
          "[stats][json]") {
  // Replacement by maximal subparts (Unicode 15, section 3.9, U+FFFD substitution; the WHATWG
  // Encoding Standard's UTF-8 decoder): a lead byte and the continuation bytes that could still
  // complete it make one U+FFFD; a byte that cannot start a sequence makes one.
  struct Case {
    const char* what;
    std::string_view in;
    std::string out;  // between the quotes
  };
  const std::string r = fffd;
  const std::vector<Case> cases = {
      {"stray continuation byte", "x\x80y", "x" + r + "y"},
      {"two stray continuation bytes", "\x80\xBF", r + r},
      {"truncated 2-byte sequence at the end", "ab\xC3", "ab" + r},
      {"truncated 3-byte sequence at the end", "\xE2\x82", r},
      {"truncated 4-byte sequence before ASCII", "\xF0\x9F\x98x", r + "x"},
      {"lead byte followed by a lead byte", "\xC3\xC3\xA9", r + "\xC3\xA9"},
      {"truncated sequence before a quote", "\xE2\x82\"", r + "\\\""},
      {"truncated sequence before a control character", "\xC3\n", r + "\\u000a"},
      {"overlong 2-byte (C0, C1 never start a sequence)", "\xC0\xAF\xC1\xBF", r + r + r + r},
      {"overlong 3-byte", "\xE0\x80\xAF", r + r + r},
      {"overlong 4-byte", "\xF0\x80\x80\xAF", r + r + r + r},
      {"surrogate U+D800", "\xED\xA0\x80", r + r + r},
      {"surrogate U+DFFF", "\xED\xBF\xBF", r + r + r},
      {"above U+10FFFF (F4 90)", "\xF4\x90\x80\x80", r + r + r + r},
      {"above U+10FFFF (F5)", "\xF5\x80\x80\x80", r + r + r + r},
      {"bytes FE and FF", "\xFE\xFF", r + r},
      // The example of Unicode 15's Table 3-8: 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64.
      {"Unicode Table 3-8",
       "a\xF1\x80\x80\xE1\x80\xC2"
       "b\x80"
       "c\x80\xBF"
       "d",
       "a" + r + r + r + "b" + r + "c" + r + r + "d"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    const std::string out = json_string(c.in);
    CHECK(out == "\"" + c.out + "\"");
    CHECK(is_valid_utf8(out));
  }
}
