// connpool - tests: the histograms and gauges of PoolStats as pools fill them, and the
// OpenTelemetry-named Prometheus text
// SPDX-License-Identifier: MIT

#include <atomic>
#include <chrono>
#include <cstddef>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <connpool/connpool.hpp>

#include "catch.hpp"
#include "fake_conn.hpp"
#include "prometheus_text.hpp"
#include "sync.hpp"

using namespace std::chrono_literals;
using connpool::CloseReason;
using connpool::Histogram;
using connpool::PoolOptions;
using connpool::PoolStats;
using connpool::PrometheusOptions;
using connpool_test::Approx;
using connpool_test::eventually;
using connpool_test::FakeConn;
using connpool_test::FakeFactory;
using connpool_test::FakeState;
using connpool_test::Gate;
using connpool_test::prometheus_samples;

namespace {

using Clock = connpool::ManualClock<struct ObservabilityTag>;

/// Nothing expires and no maintenance thread; the rest as given.
PoolOptions quiet(std::size_t max_size) {
  PoolOptions o;
  o.max_size = max_size;
  o.max_idle = 0ms;
  o.max_lifetime = 0ms;
  o.health_check_interval = 0ms;
  o.validate_on_acquire = false;
  return o;
}

/// MultiHostPool's factory(host): every host's connections report into one FakeState.
struct HostFactory {
  FakeState* state;
  FakeConn operator()(const std::string& /*host*/) const { return FakeFactory{*state}(); }
};

/// How many lines of `text` start with `prefix`.
std::size_t lines_starting(const std::string& text, const std::string& prefix) {
  std::size_t n = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    if (text.compare(pos, prefix.size(), prefix) == 0) {
      ++n;
    }
    const std::size_t end = text.find('\n', pos);
    pos = end == std::string::npos ? text.size() : end + 1;
  }
  return n;
}

}  // namespace

TEST_CASE("PoolStats::wait_time: every acquire, those served at once in the first bucket",
          "[stats][histogram]") {
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state}, quiet(1)};
  for (int i = 0; i < 5; ++i) {
    auto h = pool.acquire();  // the first creates; then reused at once
  }
  PoolStats s = pool.stats();
  CHECK(s.acquired == 5);
  CHECK(s.wait_time.count() == 5);
  CHECK(s.wait_time.buckets()[0] >= 4);  // the reuses (and a fast connect, perhaps)

  // One caller that waits at least 20 ms for the connection another holds.
  auto held = std::make_optional(pool.acquire());
  std::thread waiter([&pool] { auto h = pool.acquire(20s); });
  REQUIRE(eventually([&pool] { return pool.stats().pending == 1; }));
  std::this_thread::sleep_for(20ms);  // a lower bound on the wait, not a guess
  held.reset();
  waiter.join();
  s = pool.stats();
  CHECK(s.acquired == 7);
  CHECK(s.waited == 1);
  CHECK(s.wait_time.count() == 7);
  CHECK(s.wait_time.quantile(1.0) >= 20ms);
  CHECK(s.wait_time.quantile(1.0) < 20s);
  CHECK(s.wait_time.sum() >= 20ms);
  CHECK(s.wait_time.quantile(0.5) == 1us);  // most were served at once
}

TEST_CASE("PoolStats::wait_time and create_time: an acquire that connects waits its connect",
          "[stats][histogram]") {
  FakeState state;
  state.on_create = [] { std::this_thread::sleep_for(5ms); };
  connpool::ConnectionPool pool{FakeFactory{state}, quiet(2)};
  {
    auto a = pool.acquire();
    auto b = pool.acquire();
  }
  const PoolStats s = pool.stats();
  CHECK(s.created == 2);
  CHECK(s.create_time.count() == 2);
  CHECK(s.create_time.quantile(0.0) >= 5ms);
  CHECK(s.create_time.sum() >= 10ms);
  CHECK(s.wait_time.count() == 2);
  CHECK(s.wait_time.quantile(0.0) >= 5ms);
  // Failed connects are not in create_time.
  state.factory_fails = true;
  connpool::ConnectionPool failing{FakeFactory{state}, quiet(1)};
  CHECK_THROWS(failing.acquire(1s));
  CHECK(failing.stats().create_failures == 1);
  CHECK(failing.stats().create_time.count() == 0);
  CHECK(failing.stats().wait_time.count() == 0);
}

TEST_CASE("PoolStats::use_time: how long each handle was held, on the pool's Clock",
          "[stats][histogram]") {
  FakeState state;
  connpool::ConnectionPool<FakeConn, FakeFactory, Clock> pool{FakeFactory{state}, quiet(2)};
  {
    auto h = pool.acquire();  // created for this caller: held from its connect
    Clock::advance(3ms);
  }
  {
    auto h = pool.acquire();  // reused
    Clock::advance(100ms);
    h.invalidate();  // an invalidated handle counts too
  }
  {
    auto h = pool.acquire();
    Clock::advance(1s);
    (void)h.detach();  // a detached one does not: it never comes back
  }
  const PoolStats s = pool.stats();
  CHECK(s.use_time.count() == 2);
  CHECK(s.use_time.buckets()[Histogram::bucket_for(3ms)] == 1);
  CHECK(s.use_time.buckets()[Histogram::bucket_for(100ms)] == 1);
  CHECK(s.use_time.sum() == 103ms);
}

TEST_CASE("PoolStats::use_time: recorded with every option off, unless record_use_time is false",
          "[stats][histogram]") {
  FakeState state;
  const bool record = GENERATE(true, false);
  PoolOptions o = quiet(1);
  o.record_use_time = record;
  connpool::ConnectionPool<FakeConn, FakeFactory, Clock> pool{FakeFactory{state}, o};
  for (int i = 0; i < 3; ++i) {
    auto h = pool.acquire();
    Clock::advance(10ms);
  }
  const PoolStats s = pool.stats();
  CHECK(s.use_time.count() == (record ? 3U : 0U));
  CHECK(s.use_time.sum() == (record ? 30ms : 0ms));
  CHECK(s.wait_time.count() == 3);  // wait_time does not depend on it
}

TEST_CASE("PoolStats::connecting counts connects in flight", "[stats]") {
  FakeState state;
  Gate entered;
  Gate release;
  state.on_create = [&] {
    entered.open();
    release.wait();
  };
  connpool::ConnectionPool pool{FakeFactory{state}, quiet(2)};
  CHECK(pool.stats().connecting == 0);
  std::thread t([&pool] { auto h = pool.acquire(20s); });
  REQUIRE(entered.wait());
  const PoolStats during = pool.stats();
  CHECK(during.connecting == 1);
  CHECK(during.pending == 0);  // a caller connecting is not waiting
  CHECK(during.to_json().find("\"connecting\":1") != std::string::npos);
  release.open();
  t.join();
  CHECK(pool.stats().connecting == 0);
}

TEST_CASE("PoolStats: closed_by_reason, min_size and the name as the pool reports them",
          "[stats]") {
  FakeState state;
  PoolOptions o = quiet(3);
  o.min_size = 1;
  o.name = "orders";
  connpool::ConnectionPool pool{FakeFactory{state}, o};
  {
    auto h = pool.acquire();
    h.invalidate();
  }
  pool.evict_all();
  PoolStats s = pool.stats();
  CHECK(s.name == "orders");
  CHECK(s.min_size == 1);
  CHECK(s.closed_for(CloseReason::invalidated) == 1);
  const std::string json = s.to_json();
  CHECK(json.find("\"closed_by_reason_invalidated\":1") != std::string::npos);
  CHECK(json.find("\"min_size\":1") != std::string::npos);
  pool.set_min_size(2);
  CHECK(pool.stats().min_size == 2);

  o.name = "";
  CHECK_THROWS_WITH(connpool::ConnectionPool(FakeFactory{state}, o),
                    "connpool: PoolOptions::name must not be empty");
  o.name = "x";
  o.health_p99_wait = -1ms;
  CHECK_THROWS_WITH(connpool::ConnectionPool(FakeFactory{state}, o),
                    Catch::Matchers::Contains("PoolOptions::health_p99_wait must not be negative"));
}

TEST_CASE("to_prometheus(): the OpenTelemetry names, labelled with the pool's name",
          "[stats][metrics]") {
  PoolStats s;
  s.name = "orders";
  s.idle = 3;
  s.in_use = 2;
  s.pending = 4;
  s.timeouts = 6;
  s.min_size = 1;
  s.max_size = 8;
  s.connecting = 1;
  s.closed_by_reason[static_cast<std::size_t>(CloseReason::expired)] = 5;
  s.wait_time.record(0ns);
  s.wait_time.record(0ns);
  s.wait_time.record(3ms);
  s.use_time.record(1500us);
  s.create_time.record(40ms);
  const std::string text = s.to_prometheus();
  INFO(text);
  const auto m = prometheus_samples(text);
  const std::string pool = "db_client_connection_pool_name=\"orders\"";
  CHECK(m.at("db_client_connection_count{" + pool + ",state=\"idle\"}") == "3");
  CHECK(m.at("db_client_connection_count{" + pool + ",state=\"used\"}") == "2");
  CHECK(m.at("db_client_connection_pending_requests{" + pool + "}") == "4");
  CHECK(m.at("db_client_connection_timeouts_total{" + pool + "}") == "6");
  CHECK(m.at("db_client_connection_max{" + pool + "}") == "8");
  CHECK(m.at("db_client_connection_idle_min{" + pool + "}") == "1");
  CHECK(m.at("connpool_connection_connecting{" + pool + "}") == "1");
  CHECK(m.at("connpool_connection_closes_total{" + pool + ",reason=\"expired\"}") == "5");
  CHECK(m.at("connpool_connection_closes_total{" + pool + ",reason=\"cleared\"}") == "0");
  CHECK(m.count("connpool_connection_closes_total{" + pool + ",reason=\"none\"}") == 0);

  // Histograms: cumulative buckets with bounds in seconds, then +Inf, _sum and _count.
  const std::string wait = "db_client_connection_wait_time_seconds";
  CHECK(m.at(wait + "_bucket{" + pool + ",le=\"1e-06\"}") == "2");
  CHECK(m.at(wait + "_bucket{" + pool + ",le=\"0.002048\"}") == "2");
  CHECK(m.at(wait + "_bucket{" + pool + ",le=\"0.004096\"}") == "3");
  CHECK(m.at(wait + "_bucket{" + pool + ",le=\"134.217728\"}") == "3");
  CHECK(m.at(wait + "_bucket{" + pool + ",le=\"+Inf\"}") == "3");
  CHECK(m.at(wait + "_count{" + pool + "}") == "3");
  CHECK(std::stod(m.at(wait + "_sum{" + pool + "}")) == Approx(0.003));
  CHECK(m.at("db_client_connection_use_time_seconds_count{" + pool + "}") == "1");
  CHECK(m.at("db_client_connection_create_time_seconds_bucket{" + pool + ",le=\"0.065536\"}") ==
        "1");
  CHECK(lines_starting(text, wait + "_bucket{") == Histogram::bucket_count);

  CHECK(text.find("# TYPE db_client_connection_wait_time_seconds histogram\n") !=
        std::string::npos);
  CHECK(text.find("# TYPE db_client_connection_timeouts_total counter\n") != std::string::npos);
  CHECK(text.find("# TYPE db_client_connection_count gauge\n") != std::string::npos);
  // No legacy name unless asked.
  CHECK(text.find("connpool_acquires_total") == std::string::npos);
}

TEST_CASE("to_prometheus(): labels, several pools, legacy names", "[stats][metrics]") {
  PoolStats a;
  a.name = "a\"b";
  a.idle = 1;
  PoolStats b;
  b.name = "second";
  b.idle = 2;

  PrometheusOptions o;
  o.labels = {{"service", "billing"}};
  const std::vector<PoolStats> both{a, b};
  const std::string text = connpool::to_prometheus(both, o);
  INFO(text);
  const auto m = prometheus_samples(text);
  CHECK(
      m.at(
          R"(db_client_connection_count{db_client_connection_pool_name="a\"b",service="billing",state="idle"})") ==
      "1");
  CHECK(
      m.at(
          R"(db_client_connection_count{db_client_connection_pool_name="second",service="billing",state="idle"})") ==
      "2");
  // Each family once: its samples together, one HELP and one TYPE line.
  CHECK(lines_starting(text, "# TYPE db_client_connection_count ") == 1);
  CHECK(lines_starting(text, "# HELP db_client_connection_wait_time_seconds ") == 1);

  o.with_help = false;
  CHECK(a.to_prometheus(o).find('#') == std::string::npos);

  // Labels the text uses itself, reserved, repeated or invalid names are refused.
  for (const char* bad :
       {"db_client_connection_pool_name", "host", "state", "le", "reason", "role"}) {
    PrometheusOptions bo;
    bo.labels = {{bad, "x"}};
    INFO(bad);
    CHECK_THROWS_WITH(a.to_prometheus(bo),
                      Catch::Matchers::Contains("is one the text uses itself"));
  }
  PrometheusOptions reserved;
  reserved.labels = {{"__x", "1"}};
  CHECK_THROWS_AS(a.to_prometheus(reserved), std::invalid_argument);
  PrometheusOptions twice;
  twice.labels = {{"zone", "1"}, {"zone", "2"}};
  CHECK_THROWS_WITH(a.to_prometheus(twice),
                    "connpool: to_prometheus: label name \"zone\" given twice");
  PrometheusOptions invalid;
  invalid.labels = {{"bad-name", "1"}};
  CHECK_THROWS_AS(a.to_prometheus(invalid), std::invalid_argument);

  // Deprecated: the names from before, after the new ones, with the pool's name as "pool".
  PrometheusOptions legacy;
  legacy.legacy_names = true;
  const std::string with_legacy = b.to_prometheus(legacy);
  const auto lm = prometheus_samples(with_legacy);
  CHECK(lm.at(R"(connpool_connections{pool="second",state="idle"})") == "2");
  CHECK(
      lm.at(
          R"(db_client_connection_count{db_client_connection_pool_name="second",state="idle"})") ==
      "2");
  legacy.legacy_prefix = "my app";
  CHECK_THROWS_WITH(b.to_prometheus(legacy),
                    "connpool: to_prometheus: invalid metric prefix \"my app\"");
}

TEST_CASE("MultiHostPool: histograms summed in total, the host label in the Prometheus text",
          "[stats][metrics][multi]") {
  FakeState state;
  connpool::MultiHostOptions m;
  m.per_host = quiet(2);
  m.per_host.name = "replicas";
  m.balance = connpool::Balance::round_robin;
  connpool::MultiHostPool<FakeConn, HostFactory, std::string> pool{
      std::vector<std::string>{"db1", "db2"}, HostFactory{&state}, m};
  for (int i = 0; i < 4; ++i) {
    auto h = pool.acquire();
  }
  const auto s = pool.stats();
  CHECK(s.total.name == "replicas");
  CHECK(s.total.wait_time.count() == 4);
  CHECK(s.total.use_time.count() == 4);
  CHECK(s.total.create_time.count() == s.total.created);
  CHECK(s.total.wait_time.count() ==
        s.hosts[0].pool.wait_time.count() + s.hosts[1].pool.wait_time.count());
  const std::string text = s.to_prometheus();
  INFO(text);
  const auto samples = prometheus_samples(text);
  CHECK(samples.at(
            R"(db_client_connection_max{db_client_connection_pool_name="replicas",host="db1"})") ==
        "2");
  CHECK(samples.at(
            R"(db_client_connection_max{db_client_connection_pool_name="replicas",host="db2"})") ==
        "2");
  CHECK(lines_starting(text, "# TYPE db_client_connection_max ") == 1);
}

TEST_CASE("health(): ok when a connection comes and goes within the timeout", "[health]") {
  FakeState state;
  PoolOptions o = quiet(2);
  o.health_p99_wait = 50ms;
  connpool::ConnectionPool pool{FakeFactory{state}, o};
  const connpool::HealthReport r = pool.health(1s);
  CHECK(r.ok);
  CHECK(r.reason.empty());
  CHECK(r.in_use == 0);
  CHECK(r.max_size == 2);
  CHECK(r.p99_wait < 50ms);
  CHECK(r.last_error.empty());
  CHECK(pool.stats().acquired == 1);  // the check's own acquire
  CHECK_THROWS_AS(pool.health(-1ms), std::invalid_argument);
}

TEST_CASE("health(): not ok when no connection can be had in time, or the pool is closed",
          "[health]") {
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state}, quiet(1)};
  auto held = pool.acquire();
  connpool::HealthReport r = pool.health(30ms);
  CHECK_FALSE(r.ok);
  CHECK(r.in_use == 1);
  CHECK_THAT(r.reason, Catch::Matchers::Contains("could not acquire and give back a connection"));
  CHECK_THAT(r.reason, Catch::Matchers::Contains("timed out"));
  held.release();
  CHECK(pool.health(1s).ok);
  pool.close();
  r = pool.health(1s);
  CHECK_FALSE(r.ok);
  CHECK_THAT(r.reason, Catch::Matchers::Contains("closed"));
}

TEST_CASE("health(): not ok while the p99 wait of the last minute exceeds health_p99_wait",
          "[health]") {
  FakeState state;
  PoolOptions o = quiet(1);
  o.health_p99_wait = 5ms;
  connpool::ConnectionPool pool{FakeFactory{state}, o};
  {
    auto held = std::make_optional(pool.acquire());
    std::thread waiter([&pool] { auto h = pool.acquire(20s); });
    REQUIRE(eventually([&pool] { return pool.stats().pending == 1; }));
    std::this_thread::sleep_for(20ms);  // that waiter waits at least this long
    held.reset();
    waiter.join();
  }
  // 3 acquires with the check's own: the p99 is the slow one.
  const connpool::HealthReport r = pool.health(1s);
  CHECK_FALSE(r.ok);
  CHECK(r.p99_wait >= 20ms);
  CHECK_THAT(r.reason, Catch::Matchers::Contains("p99 wait over the last minute"));
  CHECK_THAT(r.reason, Catch::Matchers::Contains("health_p99_wait (5 ms)"));
}

TEST_CASE("health(): the last connect error while connects fail", "[health]") {
  FakeState state;
  state.factory_fails = true;
  PoolOptions o = quiet(1);
  o.max_connect_backoff = 0ms;
  connpool::ConnectionPool pool{FakeFactory{state}, o};
  connpool::HealthReport r = pool.health(100ms);
  CHECK_FALSE(r.ok);
  CHECK_FALSE(r.last_error.empty());
  CHECK_THAT(r.reason, Catch::Matchers::Contains(r.last_error));
  state.factory_fails = false;
  r = pool.health(1s);
  CHECK(r.ok);
  CHECK(r.last_error.empty());
}

TEST_CASE("Leak reports carry the acquire's site, and a leak seen ending is reported again",
          "[leak]") {
  FakeState state;
  std::mutex mutex;  // guards reports and ended
  std::vector<connpool::LeakReport> reports;
  std::vector<connpool::PoolEvent> ended;
  PoolOptions o = quiet(3);
  // Scanned every 100 ms on the maintenance thread; long enough that the quick acquire below
  // is never reported, even on a loaded machine.
  o.leak_threshold = 200ms;
  o.on_leak = [&](const connpool::LeakReport& r) {
    const std::lock_guard lock(mutex);
    reports.push_back(r);
  };
  o.on_leak_end = [&](const connpool::PoolEvent& e) {
    const std::lock_guard lock(mutex);
    ended.push_back(e);
  };
  connpool::ConnectionPool pool{FakeFactory{state}, o};
  {
    auto quick = pool.acquire();  // given back before the threshold: never reported
  }
  const std::uint_least32_t line = __LINE__ + 1;
  auto leaked = std::make_optional(pool.acquire(5s));
  const std::uint64_t id = pool.in_use_report().at(0).connection_id;
  REQUIRE(eventually([&] {
    const std::lock_guard lock(mutex);
    return !reports.empty();
  }));
  {
    const std::lock_guard lock(mutex);
    REQUIRE(reports.size() == 1);
    CHECK(reports[0].connection_id == id);
    CHECK(reports[0].site.line() == line);
    CHECK_THAT(reports[0].site.file_name(), Catch::Matchers::Contains("observability_test.cpp"));
    CHECK(reports[0].holder == std::this_thread::get_id());
    CHECK(reports[0].held_for >= 200ms);
    CHECK(ended.empty());
  }
  leaked.reset();  // the leak ends
  const std::lock_guard lock(mutex);
  REQUIRE(ended.size() == 1);
  CHECK(ended[0].kind == connpool::PoolEventKind::leak_ended);
  CHECK(ended[0].connection_id == id);
  CHECK(ended[0].held_for >= reports[0].held_for);
  CHECK(reports.size() == 1);
}

TEST_CASE("in_use_report(): every connection out, with holder, time held and site", "[leak]") {
  FakeState state;
  PoolOptions o = quiet(3);
  o.leak_threshold = 10s;
  connpool::ConnectionPool pool{FakeFactory{state}, o};
  CHECK(pool.in_use_report().empty());
  const std::uint_least32_t line_a = __LINE__ + 1;
  auto a = pool.acquire();
  std::optional<connpool::PooledHandle<FakeConn>> b;
  std::thread::id other;
  std::uint_least32_t line_b = 0;
  std::thread t([&] {
    line_b = __LINE__ + 1;
    b = pool.try_acquire();
    other = std::this_thread::get_id();
  });
  t.join();
  REQUIRE(b.has_value());
  auto idle = pool.acquire();
  idle.release();                    // back: not in the report
  std::this_thread::sleep_for(2ms);  // a lower bound on held_for below
  const std::vector<connpool::InUseConnection> report = pool.in_use_report();
  REQUIRE(report.size() == 2);
  std::map<std::thread::id, connpool::InUseConnection> by_holder;
  for (const auto& c : report) {
    by_holder[c.holder] = c;
  }
  REQUIRE(by_holder.count(std::this_thread::get_id()) == 1);
  REQUIRE(by_holder.count(other) == 1);
  CHECK(by_holder[std::this_thread::get_id()].site.line() == line_a);
  CHECK(by_holder[other].site.line() == line_b);
  CHECK(by_holder[std::this_thread::get_id()].held_for >= 2ms);
  CHECK(by_holder[std::this_thread::get_id()].connection_id != by_holder[other].connection_id);
}

TEST_CASE("in_use_report(): without observed holds, ids only, and no site without leak_threshold",
          "[leak]") {
  FakeState state;
  const bool hooks = GENERATE(false, true);
  PoolOptions o = quiet(2);
  if (hooks) {
    o.on_acquire = [](const connpool::PoolEvent&) {};  // holds observed, sites not
  }
  connpool::ConnectionPool pool{FakeFactory{state}, o};
  auto a = pool.acquire();
  const auto report = pool.in_use_report();
  REQUIRE(report.size() == 1);
  CHECK(report[0].connection_id != 0);
  CHECK(report[0].site.line() == 0);
  CHECK((report[0].holder == std::this_thread::get_id()) == hooks);
}

TEST_CASE("MultiHostPool and AsyncConnectionPool record their callers' sites", "[leak]") {
  FakeState state;
  std::mutex mutex;  // guards reports
  std::vector<connpool::LeakReport> reports;
  connpool::MultiHostOptions m;
  m.per_host = quiet(2);
  m.per_host.leak_threshold = 20ms;
  m.per_host.on_leak = [&](const connpool::LeakReport& r) {
    const std::lock_guard lock(mutex);
    reports.push_back(r);
  };
  connpool::MultiHostPool<FakeConn, HostFactory, std::string> multi{std::vector<std::string>{"db1"},
                                                                    HostFactory{&state}, m};
  const std::uint_least32_t line_m = __LINE__ + 1;
  auto hm = multi.acquire(1s);
  REQUIRE(eventually([&] {
    const std::lock_guard lock(mutex);
    return !reports.empty();
  }));
  {
    const std::lock_guard lock(mutex);
    CHECK(reports[0].site.line() == line_m);
  }

  PoolOptions o = quiet(2);
  o.leak_threshold = 10s;
  connpool::AsyncConnectionPool<FakeConn, FakeFactory> pool{FakeFactory{state}, o};
  const std::uint_least32_t line_a = __LINE__ + 1;
  auto h = connpool::detail::sync_wait(pool.acquire(1s));
  const auto report = pool.in_use_report();
  REQUIRE(report.size() == 1);
  CHECK(report[0].site.line() == line_a);
}

TEST_CASE("on_leak_end may re-enter the pool or destroy it", "[leak][reentrancy]") {
  FakeState state;
  const bool destroy = GENERATE(false, true);
  std::optional<connpool::ConnectionPool<FakeConn, FakeFactory>> pool;
  std::atomic<int> reported{0};
  std::atomic<int> ended{0};
  std::atomic<bool> reentered{false};
  PoolOptions o = quiet(2);
  o.leak_threshold = 20ms;
  o.on_leak = [&](const connpool::LeakReport&) { reported.fetch_add(1); };
  o.on_leak_end = [&](const connpool::PoolEvent&) {
    ended.fetch_add(1);
    if (destroy) {
      pool.reset();  // from inside the give-back of the pool's own connection
    } else {
      auto other = pool->try_acquire();  // the other connection
      reentered = other.has_value();
    }
  };
  pool.emplace(FakeFactory{state}, o);
  auto leaked = std::make_optional(pool->acquire());
  REQUIRE(eventually([&] { return reported.load() == 1; }));
  leaked.reset();
  CHECK(ended.load() == 1);
  if (destroy) {
    CHECK_FALSE(pool.has_value());
  } else {
    CHECK(reentered.load());
    CHECK(pool->stats().in_use == 0);
    pool.reset();
  }
  CHECK(state.live.load() == 0);
}
