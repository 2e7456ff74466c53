// connpool - MultiHostPool, one pool per host with load balancing and circuit breakers
// SPDX-License-Identifier: MIT
#pragma once

// MultiHostPool<Conn, Factory, Host, Clock> keeps one ConnectionPool per host (pool.hpp) and picks
// a host per acquire by a Balance strategy, skipping hosts whose circuit breaker is open. Its
// handle, MultiHostHandle<Conn, Host>, is a PooledHandle<Conn> that also names its host. The
// options are MultiHostOptions (here, around PoolOptions from options.hpp); the statistics are
// MultiHostStats (here, around PoolStats from stats.hpp); NoHealthyHost is in errors.hpp.

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <connpool/concepts.hpp>
#include <connpool/detail/thread_annotations.hpp>
#include <connpool/errors.hpp>
#include <connpool/handle.hpp>
#include <connpool/options.hpp>
#include <connpool/pool.hpp>
#include <connpool/stats.hpp>

namespace connpool {

/// How MultiHostPool picks a host for acquire() among the healthy hosts with spare capacity.
enum class Balance {
  /// In turn: host 0, 1, 2, ... (skipping unavailable ones). Even spread, deterministic order.
  round_robin,
  /// The host with the fewest connections in use through this pool; ties go to the host listed
  /// first. Follows load at once, at the price of reading every host's counter.
  least_in_use,
  /// A host chosen uniformly at random.
  random,
  /// Two distinct hosts chosen at random; the one with fewer connections in use wins
  /// ("the power of two choices", Mitzenmacher; Envoy's and Finagle's default). Nearly as even
  /// as least_in_use while reading two counters only.
  power_of_two_choices,
};

/// The state of a host's circuit breaker.
enum class HealthState {
  closed,     ///< healthy: picked normally
  open,       ///< failed failure_threshold times in a row: skipped until the cooldown is over
  half_open,  ///< cooldown over: one probe acquire is let through; its outcome decides
};

/// "closed", "open" or "half_open".
[[nodiscard]] inline const char* to_string(HealthState s) noexcept {
  switch (s) {
    case HealthState::closed:
      return "closed";
    case HealthState::open:
      return "open";
    case HealthState::half_open:
      return "half_open";
  }
  return "?";
}

/// The settings of a MultiHostPool.
struct MultiHostOptions {
  /// The options of each host's ConnectionPool (max_size is per host). per_host.acquire_timeout
  /// is also the default timeout of MultiHostPool::acquire(). per_host.max_connect_backoff is
  /// ignored: the circuit breaker below takes its place (see detail::HostEntry::host_options).
  /// Default PoolOptions{}.
  PoolOptions per_host{};

  /// How acquire() picks a host. Default Balance::round_robin.
  Balance balance = Balance::round_robin;

  /// Consecutive failures (connect errors, failed pings, invalidated handles) that open a
  /// host's circuit. Default 5 (Envoy's consecutive_5xx outlier detection). Must be >= 1.
  std::size_t failure_threshold = 5;

  /// How long an open circuit skips its host before one probe is let through. Default 5 s
  /// (Hystrix's sleep window). 0 = probe at the next acquire. Must be >= 0.
  std::chrono::milliseconds cooldown{5'000};

  /// Throws std::invalid_argument naming the first field that is out of range.
  void validate() const {
    per_host.validate();
    if (failure_threshold == 0) {
      throw std::invalid_argument(
          "connpool: MultiHostOptions::failure_threshold must be at least 1 (got 0)");
    }
    if (cooldown.count() < 0) {
      throw std::invalid_argument(
          "connpool: MultiHostOptions::cooldown must not be negative (got " +
          std::to_string(cooldown.count()) + " ms)");
    }
  }
};

/// What a host type needs: comparison (to find a host) and a printable form (for error messages
/// and statistics): convertible to std::string_view, or writable to a std::ostream.
template <class H>
concept HostName = std::copy_constructible<H> && std::equality_comparable<H> &&
    (std::convertible_to<const H&, std::string_view> ||
     requires(std::ostream & os, const H& h) { os << h; });

/// The printable form of a host: itself when it converts to std::string_view, else what
/// operator<< writes.
template <HostName Host>
[[nodiscard]] std::string host_to_string(const Host& host) {
  if constexpr (std::convertible_to<const Host&, std::string_view>) {
    return std::string(std::string_view(host));
  } else {
    std::ostringstream out;
    out << host;
    return out.str();
  }
}

/// The statistics of one host of a MultiHostPool.
template <class Host>
struct HostStats {
  Host host;                                ///< the host
  PoolStats pool;                           ///< its ConnectionPool's statistics
  HealthState state = HealthState::closed;  ///< its circuit breaker
  std::size_t consecutive_failures = 0;     ///< failures since its last success
  std::string last_error;                   ///< what its last failure said ("" if none yet)
};

/// A snapshot of a MultiHostPool's statistics: each current host (in order; removed hosts are
/// left out) and their sum.
template <class Host>
struct MultiHostStats {
  std::vector<HostStats<Host>> hosts;
  /// The sum over `hosts` of each counter and gauge (max_size included); max_wait_time is the
  /// largest of theirs.
  PoolStats total;

  /// One JSON object: {"hosts":[{"host":..,"state":..,"consecutive_failures":..,
  /// "last_error":..,"pool":{PoolStats}}, ...],"total":{PoolStats}}.
  [[nodiscard]] std::string to_json() const {
    std::string out = "{\"hosts\":[";
    bool first = true;
    for (const HostStats<Host>& h : hosts) {
      if (!first) {
        out += ',';
      }
      first = false;
      out += "{\"host\":";
      detail::append_json_string(out, host_to_string(h.host));
      out += ",\"state\":\"";
      out += to_string(h.state);
      out += "\",\"consecutive_failures\":";
      out += std::to_string(h.consecutive_failures);
      out += ",\"last_error\":";
      detail::append_json_string(out, h.last_error);
      out += ",\"pool\":";
      out += h.pool.to_json();
      out += '}';
    }
    out += "],\"total\":";
    out += total.to_json();
    out += '}';
    return out;
  }
};

namespace detail {

/// The size of a cache line, for counters written by many threads.
inline constexpr std::size_t cache_line_size = 64;

/// A small number for this thread, distinct among the first threads that ask (0, 1, 2, ...),
/// to spread per-thread writes over stripes of a counter.
inline std::size_t thread_stripe() noexcept {
  static std::atomic<std::size_t> next{0};
  thread_local const std::size_t stripe = next.fetch_add(1, std::memory_order_relaxed);
  return stripe;
}

/// What a MultiHostHandle knows of its host: the name, and where to report the connection's
/// return. Also the reference count of the host's record (see HostEntry).
template <class Host>
class HostLink {
 public:
  HostLink(const HostLink&) = delete;
  HostLink& operator=(const HostLink&) = delete;

  [[nodiscard]] const Host& host() const noexcept { return host_; }

  /// Connections of this host out through MultiHostHandles now.
  [[nodiscard]] std::size_t in_use() const noexcept {
    return refs_.value.load(std::memory_order_relaxed) - 1;
  }

  /// A handle took a connection of this host.
  void taken() noexcept { refs_.value.fetch_add(1, std::memory_order_relaxed); }

  /// How a handle gave its connection back.
  enum class Return {
    released,     ///< release() or the destructor: the connection served; a success
    invalidated,  ///< invalidate(): a failure of the host
    detached,     ///< detach(): neither
  };

  /// A handle gave its connection back. May destroy the record, when the pool is gone and
  /// this was the last handle.
  void returned(Return how) noexcept {
    if (how != Return::detached) {
      handle_returned(how == Return::invalidated);
    }
    unref();
  }

  /// Drops one reference; the last one destroys the record.
  void unref() noexcept {
    if (refs_.value.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      delete this;
    }
  }

 protected:
  explicit HostLink(Host host) : host_(std::move(host)) {}
  virtual ~HostLink() = default;
  virtual void handle_returned(bool failed) noexcept = 0;

 private:
  const Host host_;
  // 1 for the MultiHostPool (dropped by its destructor) + 1 per connection out through a
  // handle. Why one counter for both: the in-use gauge that the balancer reads must be an
  // atomic anyway, and making it the reference count spares a second atomic write per acquire
  // (a std::shared_ptr copy in each handle would be one). Why a cache line of its own: every
  // acquire and release on the host writes it, and the fields around it (the breaker's state,
  // max_size, the host pool) are read by every acquire: sharing their line would make each of
  // those reads miss whenever another thread has just taken or returned a connection.
  struct alignas(cache_line_size) Count {
    std::atomic<std::size_t> value{1};
  };
  Count refs_;
};

/// A circuit breaker over one host, driven by `Clock`.
///
/// closed --(failure_threshold consecutive failures)--> open --(cooldown over, the next
/// acquire that picks the host)--> half_open (that acquire is the single probe) --(success)-->
/// closed, or --(failure)--> open for another cooldown.
///
/// Failures: a connect error, a failed validation ping (counted when the acquire on the host
/// fails, see HostEntry::look_at_pings), an invalidated handle. Successes, which reset the
/// count and close the circuit: a handle given back with release() (the connection served its
/// user), and an acquire that got a connection while the circuit was not closed (the probe).
/// Why a successful connect alone does not reset the count: a host that accepts connections
/// but fails every request (its handles invalidated) must still trip the breaker.
///
/// Memory ordering: the state and counters are atomics, written only with mutex_ held (so
/// transitions are serialised) and read without it by the balancer's fast path.
template <class Clock>
class Breaker {
 public:
  using TimePoint = typename Clock::time_point;

  Breaker(std::size_t threshold, std::chrono::milliseconds cooldown)
      : threshold_(threshold),
        cooldown_(std::chrono::duration_cast<typename Clock::duration>(cooldown)) {}

  enum class Admit { no, normal, probe };

  /// Whether the host may be picked now, without reserving the probe.
  [[nodiscard]] bool may_admit(const TimePoint* now) const noexcept {
    switch (state_.load(std::memory_order_acquire)) {
      case HealthState::closed:
        return true;
      case HealthState::half_open:
        return !probe_out_.load(std::memory_order_relaxed);
      case HealthState::open:
        return now != nullptr &&
               now->time_since_epoch().count() >= open_until_.load(std::memory_order_relaxed);
    }
    return false;
  }

  [[nodiscard]] bool closed() const noexcept {
    return state_.load(std::memory_order_acquire) == HealthState::closed;
  }

  /// Admits one acquire: `normal` when closed, `probe` when this call takes the single probe
  /// of a half-open (or just expired open) circuit, `no` otherwise.
  Admit admit(TimePoint now) noexcept CONNPOOL_EXCLUDES(mutex_) {
    if (closed()) {
      return Admit::normal;
    }
    UniqueLock lk(mutex_);
    const HealthState s = state_.load(std::memory_order_relaxed);
    if (s == HealthState::closed) {
      return Admit::normal;
    }
    if (s == HealthState::open &&
        now.time_since_epoch().count() < open_until_.load(std::memory_order_relaxed)) {
      return Admit::no;
    }
    if (probe_out_.load(std::memory_order_relaxed)) {
      return Admit::no;
    }
    state_.store(HealthState::half_open, std::memory_order_release);
    probe_out_.store(true, std::memory_order_relaxed);
    return Admit::probe;
  }

  /// A connect or an acquire on the host succeeded. Costs two loads when already healthy.
  void success() noexcept CONNPOOL_EXCLUDES(mutex_) {
    if (closed() && failures_.load(std::memory_order_relaxed) == 0) {
      return;
    }
    UniqueLock lk(mutex_);
    failures_.store(0, std::memory_order_relaxed);
    probe_out_.store(false, std::memory_order_relaxed);
    state_.store(HealthState::closed, std::memory_order_release);
  }

  /// `n` failures on the host, the last of which said `why`.
  void failure(std::size_t n, std::string_view why) noexcept CONNPOOL_EXCLUDES(mutex_) {
    UniqueLock lk(mutex_);
    try {
      last_error_.assign(why);
    } catch (...) {  // out of memory: keep the previous message
    }
    const std::size_t f = failures_.load(std::memory_order_relaxed) + n;
    failures_.store(f, std::memory_order_relaxed);
    const HealthState s = state_.load(std::memory_order_relaxed);
    if (s == HealthState::half_open || (s == HealthState::closed && f >= threshold_)) {
      open_until_.store((Clock::now() + cooldown_).time_since_epoch().count(),
                        std::memory_order_relaxed);
      probe_out_.store(false, std::memory_order_relaxed);
      state_.store(HealthState::open, std::memory_order_release);
    }
  }

  /// The probe ended without a verdict (the host had no spare connection, the wait timed
  /// out): the next acquire may probe instead.
  void abandon_probe() noexcept CONNPOOL_EXCLUDES(mutex_) {
    UniqueLock lk(mutex_);
    if (state_.load(std::memory_order_relaxed) == HealthState::half_open) {
      probe_out_.store(false, std::memory_order_relaxed);
    }
  }

  struct View {
    HealthState state;
    std::size_t failures;
    std::string last_error;
  };

  [[nodiscard]] View view() const CONNPOOL_EXCLUDES(mutex_) {
    UniqueLock lk(mutex_);
    return View{state_.load(std::memory_order_relaxed), failures_.load(std::memory_order_relaxed),
                last_error_};
  }

  [[nodiscard]] std::string last_error() const CONNPOOL_EXCLUDES(mutex_) {
    UniqueLock lk(mutex_);
    return last_error_;
  }

 private:
  const std::size_t threshold_;
  const typename Clock::duration cooldown_;
  mutable Mutex mutex_;  // guards last_error_ and serialises every write of the atomics below
  std::string last_error_ CONNPOOL_GUARDED_BY(mutex_);
  std::atomic<HealthState> state_{HealthState::closed};
  std::atomic<std::size_t> failures_{0};
  std::atomic<bool> probe_out_{false};                        // the half-open probe is taken
  std::atomic<typename Clock::duration::rep> open_until_{0};  // Clock ticks since its epoch
};

/// Calls to a MultiHostPool host factory made by this thread. An acquire compares it before and
/// after, to learn cheaply whether it took the slow path (a connect) on its host.
inline thread_local std::uint64_t host_factory_calls = 0;

/// A small pseudo-random generator per thread (splitmix64) for the random balancers.
///
/// Why not <random>: std::mt19937 is 5 KB of state and a std::uniform_int_distribution per
/// call; splitmix64 is one multiply-xorshift chain on 8 bytes, and the balancer needs no more.
inline std::uint64_t thread_random() noexcept {
  thread_local std::uint64_t state = [] {
    const auto t =
        static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    int local = 0;
    return t ^ (reinterpret_cast<std::uintptr_t>(&local) * 0x9E3779B97F4A7C15ULL);
  }();
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30U)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27U)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31U);
}

/// A uniform index below `n` (0 < n < 2^32), by Lemire's multiply-shift (no division).
inline std::size_t random_below(std::size_t n) noexcept {
  return static_cast<std::size_t>(((thread_random() >> 32U) * static_cast<std::uint64_t>(n)) >>
                                  32U);
}

/// A set of host indices, in one word for up to 64 hosts (no allocation on the fast path).
class IndexSet {
 public:
  explicit IndexSet(std::size_t n) {
    if (n > 64) {
      more_.assign(n, false);
    }
  }
  [[nodiscard]] bool contains(std::size_t i) const noexcept {
    return more_.empty() ? ((bits_ >> i) & 1U) != 0 : static_cast<bool>(more_[i]);
  }
  void insert(std::size_t i) {
    if (more_.empty()) {
      bits_ |= std::uint64_t{1} << i;
    } else {
      more_[i] = true;
    }
  }

 private:
  std::uint64_t bits_ = 0;
  std::vector<bool> more_;
};

/// One host of a MultiHostPool: its ConnectionPool, breaker and in-use count.
///
/// Lifetime: reference-counted through HostLink. The MultiHostPool holds one reference until
/// it is destroyed (also for removed hosts: see MultiHostPool's class comment) and each handle
/// one, so a handle may outlive both the pool and its host's removal.
template <class Conn, class Factory, class Host, class Clock>
class HostEntry final : public HostLink<Host> {
 public:
  /// The factory of the host's ConnectionPool: calls the user's factory with the host and
  /// reports the outcome to the breaker (also for connects made by warm-up and maintenance).
  struct HostFactory {
    std::shared_ptr<Factory> factory;
    HostEntry* entry;

    Conn operator()() const {
      ++host_factory_calls;
      try {
        return Conn((*factory)(entry->host()));
      } catch (const std::exception& e) {
        entry->breaker.failure(1, e.what());
        throw;
      } catch (...) {
        entry->breaker.failure(1, "unknown exception from the factory");
        throw;
      }
    }
  };

  HostEntry(Host host, std::shared_ptr<Factory> factory, const MultiHostOptions& options)
      : HostLink<Host>(std::move(host)),
        max_size(options.per_host.max_size),
        breaker(options.failure_threshold, options.cooldown),
        pool(HostFactory{std::move(factory), this}, host_options(options.per_host)) {}

  /// The options of a host's ConnectionPool: per_host, without the pool's own connect backoff.
  ///
  /// Why: the circuit breaker is MultiHostPool's backoff, on `Clock` and with a single probe.
  /// A second backoff inside the host pool (PoolOptions::max_connect_backoff, on the real
  /// clock) would make the probe find the host "busy" instead of trying it, and would fail a
  /// wait on that host early even while other hosts could serve.
  static PoolOptions host_options(PoolOptions o) {
    o.max_connect_backoff = std::chrono::milliseconds(0);
    return o;
  }

  /// Reads how many validation pings failed on this host since the last look, and counts them
  /// as failures when `count` (the acquire on the host failed).
  ///
  /// Why only on slow paths: the host pool counts failed pings in stats().validation_failures,
  /// and stats() takes that pool's lock and walks its slots. Alone it is cheap (about 6 ns for 8
  /// connections, bench/multi_host_bench.cpp), but the pool's fast path takes no lock at all, so
  /// a stats() per acquire would make every thread on a host contend on that lock. A failed ping
  /// closes the connection and the acquire goes on, to another idle connection or a connect. If it
  /// then succeeds, the host answers and the pings only found stale connections (a server's idle
  /// timeout, a restart): not the host's failure. If it fails, the pings are part of the evidence.
  /// So the counter is read after an acquire that connected (`count` false: only to move the
  /// baseline) or failed (`count` true). Pings that failed in acquires served by another idle
  /// connection are counted at the next failing look.
  void look_at_pings(bool count) noexcept {
    std::uint64_t now = 0;
    try {
      now = pool.stats().validation_failures;
    } catch (...) {
      return;
    }
    std::uint64_t seen = pings_seen.load(std::memory_order_relaxed);
    while (seen < now && !pings_seen.compare_exchange_weak(seen, now)) {
    }
    if (count && seen < now) {
      breaker.failure(static_cast<std::size_t>(now - seen), "validation ping failed");
    }
  }

  const std::size_t max_size;
  Breaker<Clock> breaker;
  std::atomic<std::uint64_t> pings_seen{0};
  ConnectionPool<Conn, HostFactory, Clock> pool;  // last: its warm-up reports to `breaker`

 private:
  void handle_returned(bool failed) noexcept override {
    if (failed) {
      breaker.failure(1, "connection invalidated");
    } else {
      breaker.success();
    }
  }
};

}  // namespace detail

template <class Conn,
          class Factory,
          class Host = std::string,
          class Clock = std::chrono::steady_clock>
requires Connection<Conn> && detail::PoolClock<Clock> && HostName<Host>
class MultiHostPool;

/// A connection borrowed from a MultiHostPool: a PooledHandle<Conn> that also names its host.
///
/// Same members and rules as PooledHandle<Conn>; invalidate() also counts a failure against
/// the host's circuit breaker.
///
/// Thread safety: as PooledHandle: one thread at a time; may move to another thread.
/// Lifetime: may outlive its MultiHostPool and its host's removal; giving it back then closes
/// the connection.
template <class Conn, class Host>
class MultiHostHandle {
  using Link = detail::HostLink<Host>;

 public:
  using connection_type = Conn;
  using host_type = Host;

  MultiHostHandle() noexcept = default;

  MultiHostHandle(MultiHostHandle&& other) noexcept
      : handle_(std::move(other.handle_)), link_(std::exchange(other.link_, nullptr)) {}

  MultiHostHandle& operator=(MultiHostHandle&& other) noexcept {
    if (this != &other) {
      release();
      handle_ = std::move(other.handle_);
      link_ = std::exchange(other.link_, nullptr);
    }
    return *this;
  }

  MultiHostHandle(const MultiHostHandle&) = delete;
  MultiHostHandle& operator=(const MultiHostHandle&) = delete;

  ~MultiHostHandle() { release(); }

  explicit operator bool() const noexcept { return static_cast<bool>(handle_); }
  [[nodiscard]] Conn* get() const noexcept { return handle_.get(); }
  [[nodiscard]] Conn& operator*() const noexcept { return *handle_; }
  [[nodiscard]] decltype(auto) operator->() const noexcept { return handle_.operator->(); }

  /// The host that served the connection. Precondition: the handle is not empty.
  [[nodiscard]] const Host& host() const noexcept { return link_->host(); }

  /// Returns the connection to its host's pool now; the handle becomes empty.
  void release() noexcept {
    if (link_ != nullptr) {
      handle_.release();
      std::exchange(link_, nullptr)->returned(Link::Return::released);
    }
  }

  /// Closes the connection instead of returning it, and counts a failure against the host.
  void invalidate() noexcept {
    if (link_ != nullptr) {
      handle_.invalidate();
      std::exchange(link_, nullptr)->returned(Link::Return::invalidated);
    }
  }

  /// Takes the connection out of the pool (see PooledHandle::detach()).
  ///
  /// Throws: std::logic_error if the handle is empty; what Conn's move constructor throws.
  [[nodiscard]] Conn detach() {
    if (link_ == nullptr) {
      throw std::logic_error("connpool: MultiHostHandle::detach() called on an empty handle");
    }
    Conn out = handle_.detach();
    std::exchange(link_, nullptr)->returned(Link::Return::detached);
    return out;
  }

 private:
  template <class C, class F, class H, class Clk>
  requires Connection<C> && detail::PoolClock<Clk> && HostName<H>
  friend class MultiHostPool;

  MultiHostHandle(PooledHandle<Conn> handle, detail::HostLink<Host>* link) noexcept
      : handle_(std::move(handle)), link_(link) {}

  PooledHandle<Conn> handle_;
  detail::HostLink<Host>* link_ = nullptr;  // holds one reference while the handle is engaged
};

/// A pool of connections to several hosts: one ConnectionPool per host, a balancer that picks
/// a host per acquire, and a circuit breaker per host.
///
/// The model: acquire() picks, by `Balance`, a host whose circuit admits it and that has fewer
/// than max_size connections out, and takes a connection there without waiting. If the
/// connect fails, the failure counts against that host and the next candidate is tried, within
/// the same deadline. When every admitted host is at capacity, the acquire waits on the one with
/// the fewest connections out for the rest of its deadline (Why one host: each ConnectionPool
/// queues its own waiters FIFO, and the least busy host is the one likely to free a connection
/// first, as with HAProxy's leastconn). When no host is left (all failed or open), it throws
/// NoHealthyHost naming each host's last error.
///
/// Each host's breaker counts consecutive failures: connect errors (also those of warm-up and
/// maintenance), failed validation pings and invalidated handles; after failure_threshold of
/// them the host is skipped for `cooldown` (measured on `Clock`), then one acquire probes it.
/// A connection given back with release(), or a probe that gets a connection, is a success: it
/// resets the count and closes the circuit (details in detail::Breaker). acquire(host) uses one
/// host only and respects its circuit.
///
/// Hosts can be added and removed at run time. A removed host's pool is closed: idle
/// connections now, connections out when they come back; it is never picked again. An acquire
/// that was trying or waiting on a host when it was removed goes on, within its deadline, with
/// the current hosts (those added meanwhile included), and throws NoHealthyHost only when none
/// of them can serve.
///
/// Locking: the host list is an immutable snapshot published through an atomic pointer, so an
/// acquire reads it with one load and no lock; add_host() and remove_host() build a new
/// snapshot under admin_mutex_, which is never held while user code runs (a new host's pool
/// warms up before the lock is taken, a removed host's pool is closed after it is released).
/// Each host's breaker has a mutex of its own, taken only on failures and state changes.
/// Why no reclamation of old snapshots (nor of removed hosts' records) before destruction:
/// freeing them safely would need a reader count or hazard pointers on every acquire, a shared
/// write that all threads contend on; host changes are rare administrative events, so keeping
/// a few hundred bytes per change is the cheaper trade (RCU without grace periods).
///
/// `Factory` is called as factory(host) and must return something convertible to Conn; it
/// may be called from several threads at once (one host's pool calls it outside every lock).
/// `Host` must satisfy HostName (equality and a printable form).
///
/// Thread safety: all member functions may be called concurrently, except the destructor.
/// A handle may be used by one thread at a time.
/// Lifetime: handles may outlive the pool; giving one back then closes its connection.
/// Complexity: acquire is O(1) for round_robin, random and power_of_two_choices when the first
/// pick has a connection, O(hosts) for least_in_use; it allocates nothing for up to 64 hosts.
/// Example:
///     connpool::MultiHostPool<Db, decltype(connect)> pool{
///         {"db1:5432", "db2:5432"}, connect,
///         connpool::MultiHostOptions{.per_host = {.max_size = 8},
///                                    .balance = connpool::Balance::power_of_two_choices}};
///     auto h = pool.acquire(250ms);
///     h->query("SELECT 1");   // h.host() says which host served it
template <class Conn, class Factory, class Host, class Clock>
requires Connection<Conn> && detail::PoolClock<Clock> && HostName<Host>
class MultiHostPool {
  static_assert(std::invocable<Factory&, const Host&>,
                "connpool: MultiHostPool's Factory must be callable as factory(host)");
  static_assert(std::convertible_to<std::invoke_result_t<Factory&, const Host&>, Conn>,
                "connpool: MultiHostPool's factory(host) must return something convertible to "
                "Conn");

  using Entry = detail::HostEntry<Conn, Factory, Host, Clock>;
  using WaitClock = std::chrono::steady_clock;

  struct Snapshot {
    std::vector<Entry*> hosts;
  };

 public:
  using connection_type = Conn;
  using host_type = Host;
  using handle_type = MultiHostHandle<Conn, Host>;
  using stats_type = MultiHostStats<Host>;

  /// Validates `options` and builds one pool per host (each warms up min_size connections).
  ///
  /// Throws: std::invalid_argument for bad options or a host listed twice; with
  /// per_host.fail_fast and min_size > 0, the first factory exception of a warm-up (set
  /// fail_fast = false to start while a host is down).
  MultiHostPool(std::vector<Host> hosts, Factory factory, MultiHostOptions options = {})
      : options_(validated(options)), factory_(std::make_shared<Factory>(std::move(factory))) {
    try {
      for (Host& h : hosts) {
        add_host(std::move(h));
      }
    } catch (...) {
      destroy();
      throw;
    }
  }

  MultiHostPool(const MultiHostPool&) = delete;
  MultiHostPool& operator=(const MultiHostPool&) = delete;
  MultiHostPool(MultiHostPool&&) = delete;
  MultiHostPool& operator=(MultiHostPool&&) = delete;

  /// close(), then lets go of every host (the last outstanding handle of a host frees it).
  ~MultiHostPool() { destroy(); }

  /// Borrows a connection from a host picked by the balancer, waiting up to
  /// options().per_host.acquire_timeout.
  ///
  /// Throws: NoHealthyHost when every host failed or has its circuit open; AcquireTimeout;
  /// PoolClosed.
  [[nodiscard]] handle_type acquire() {
    return *acquire_any(detail::to_wait_duration(options_.per_host.acquire_timeout), nullptr);
  }

  /// As acquire(), waiting up to `timeout` (0: never wait for a holder; each candidate host is
  /// still tried once).
  ///
  /// Throws: std::invalid_argument if `timeout` is negative; NoHealthyHost; AcquireTimeout;
  /// PoolClosed.
  template <class Rep, class Period>
  [[nodiscard]] handle_type acquire(std::chrono::duration<Rep, Period> timeout) {
    return *acquire_any(detail::to_wait_duration(timeout), nullptr);
  }

  /// As acquire(timeout), and a stop request on `stop` ends the wait with AcquireCancelled
  /// (the host waited on is not blamed). A connection available without waiting is returned
  /// even if stop was already requested, as ConnectionPool::acquire(timeout, stop) does.
  ///
  /// Throws: std::invalid_argument if `timeout` is negative; AcquireCancelled; NoHealthyHost;
  /// AcquireTimeout; PoolClosed.
  template <class Rep, class Period>
  [[nodiscard]] handle_type acquire(std::chrono::duration<Rep, Period> timeout,
                                    std::stop_token stop) {
    return *acquire_any(detail::to_wait_duration(timeout), &stop);
  }

  /// Borrows a connection from a host picked by the balancer without waiting for another
  /// holder: each admitted host with spare capacity is tried in the balancer's order (and may
  /// connect). Returns nullopt when every healthy host is at max_size.
  ///
  /// Throws: NoHealthyHost when no host is healthy (each failed now or has its circuit open);
  /// PoolClosed.
  [[nodiscard]] std::optional<handle_type> try_acquire() {
    return acquire_any(std::nullopt, nullptr);
  }

  /// Borrows a connection from `host` only, waiting up to options().per_host.acquire_timeout.
  ///
  /// Throws: std::invalid_argument if `host` is not in the pool; NoHealthyHost if its circuit
  /// is open (Why: an open circuit fails fast for every caller, as in Hystrix, rather than
  /// letting pinned requests hammer a host known to be down); AcquireTimeout; PoolClosed; the
  /// factory's exception (unchanged).
  [[nodiscard]] handle_type acquire(const Host& host) {
    return acquire_on(host, detail::to_wait_duration(options_.per_host.acquire_timeout));
  }

  /// As acquire(host), waiting up to `timeout`.
  template <class Rep, class Period>
  [[nodiscard]] handle_type acquire(const Host& host, std::chrono::duration<Rep, Period> timeout) {
    return acquire_on(host, detail::to_wait_duration(timeout));
  }

  /// Adds a host at run time (its pool warms up first, outside every lock of this pool).
  ///
  /// Throws: std::invalid_argument if the host is already present; PoolClosed after close();
  /// with per_host.fail_fast, the factory's exception from the warm-up.
  void add_host(Host host) CONNPOOL_EXCLUDES(admin_mutex_) {
    if (closed_.load(std::memory_order_acquire)) {
      throw PoolClosed();
    }
    if (find(host) != nullptr) {
      throw_duplicate(host);
    }
    Entry* e = new Entry(std::move(host), factory_, options_);  // may connect: outside the lock
    bool published = false;
    {
      detail::UniqueLock lk(admin_mutex_);
      const bool dup = find(e->host()) != nullptr;
      if (!dup && !closed_.load(std::memory_order_acquire)) {
        auto next = std::make_unique<Snapshot>(*current_.load(std::memory_order_relaxed));
        next->hosts.push_back(e);
        entries_.push_back(e);
        current_.store(next.get(), std::memory_order_release);
        snapshots_.push_back(std::move(next));
        published = true;
      }
    }
    if (!published) {
      const bool was_closed = closed_.load(std::memory_order_acquire);
      const std::string name = host_to_string(e->host());
      e->unref();  // closes its pool
      if (was_closed) {
        throw PoolClosed();
      }
      throw std::invalid_argument("connpool: MultiHostPool::add_host: host " + name +
                                  " is already in the pool");
    }
  }

  /// Removes a host: it is never picked again, its idle connections are closed now and those
  /// out are closed when they come back.
  ///
  /// Throws: std::invalid_argument if `host` is not in the pool.
  void remove_host(const Host& host) CONNPOOL_EXCLUDES(admin_mutex_) {
    Entry* removed = nullptr;
    {
      detail::UniqueLock lk(admin_mutex_);
      const Snapshot& cur = *current_.load(std::memory_order_relaxed);
      auto next = std::make_unique<Snapshot>();
      next->hosts.reserve(cur.hosts.size());
      for (Entry* e : cur.hosts) {
        if (removed == nullptr && e->host() == host) {
          removed = e;
        } else {
          next->hosts.push_back(e);
        }
      }
      if (removed != nullptr) {
        current_.store(next.get(), std::memory_order_release);
        snapshots_.push_back(std::move(next));
      }
    }
    if (removed == nullptr) {
      throw_unknown(host);
    }
    removed->pool.close();  // outside the lock: runs the connections' close()
  }

  /// The current hosts, in order.
  [[nodiscard]] std::vector<Host> hosts() const {
    std::vector<Host> out;
    for (const Entry* e : current_.load(std::memory_order_acquire)->hosts) {
      out.push_back(e->host());
    }
    return out;
  }

  /// A snapshot of each current host's statistics and health, and their sum.
  [[nodiscard]] stats_type stats() const {
    stats_type out;
    for (Entry* e : current_.load(std::memory_order_acquire)->hosts) {
      HostStats<Host> h{e->host(), e->pool.stats(), HealthState::closed, 0, {}};
      auto v = e->breaker.view();
      h.state = v.state;
      h.consecutive_failures = v.failures;
      h.last_error = std::move(v.last_error);
      add_into(out.total, h.pool);
      out.hosts.push_back(std::move(h));
    }
    return out;
  }

  /// Closes every host's pool (DESIGN 7 for each); later acquires throw PoolClosed. Idempotent.
  void close() noexcept CONNPOOL_EXCLUDES(admin_mutex_) {
    closed_.store(true, std::memory_order_release);
    const Snapshot* snap = nullptr;
    {
      detail::UniqueLock lk(admin_mutex_);  // no add_host can publish past this point
      snap = current_.load(std::memory_order_relaxed);
    }
    for (Entry* e : snap->hosts) {
      e->pool.close();
    }
  }

  [[nodiscard]] const MultiHostOptions& options() const noexcept { return options_; }

 private:
  using Admit = typename detail::Breaker<Clock>::Admit;

  static const MultiHostOptions& validated(const MultiHostOptions& o) {
    o.validate();
    return o;
  }

  [[noreturn]] static void throw_duplicate(const Host& host) {
    throw std::invalid_argument("connpool: MultiHostPool: host " + host_to_string(host) +
                                " is already in the pool");
  }
  [[noreturn]] static void throw_unknown(const Host& host) {
    throw std::invalid_argument("connpool: MultiHostPool: unknown host " + host_to_string(host));
  }

  static void add_into(PoolStats& t, const PoolStats& s) {
    t.created += s.created;
    t.closed += s.closed;
    t.acquired += s.acquired;
    t.reused += s.reused;
    t.released += s.released;
    t.waited += s.waited;
    t.timeouts += s.timeouts;
    t.validation_failures += s.validation_failures;
    t.create_failures += s.create_failures;
    t.close_failures += s.close_failures;
    t.detached += s.detached;
    t.leaks += s.leaks;
    t.total_wait_time += s.total_wait_time;
    t.max_wait_time = std::max(t.max_wait_time, s.max_wait_time);
    t.idle += s.idle;
    t.in_use += s.in_use;
    t.pending += s.pending;
    t.max_size += s.max_size;
  }

  Entry* find(const Host& host) const noexcept {
    for (Entry* e : current_.load(std::memory_order_acquire)->hosts) {
      if (e->host() == host) {
        return e;
      }
    }
    return nullptr;
  }

  void destroy() noexcept CONNPOOL_EXCLUDES(admin_mutex_) {
    close();
    std::vector<Entry*> entries;
    {
      detail::UniqueLock lk(admin_mutex_);
      entries.swap(entries_);
    }
    for (Entry* e : entries) {
      e->unref();  // destroys the record unless handles are still out
    }
  }

  handle_type make_handle(PooledHandle<Conn> h, Entry* e) noexcept {
    e->taken();
    return handle_type(std::move(h), e);
  }

  /// The host the balancer picks among those not in `skip` whose circuit admits them and that
  /// have spare capacity; nullptr if none.
  ///
  /// `index` is in-out: after a first pick in this acquire (`again`), round_robin goes on from
  /// the host after it instead of taking a new turn, so a failed host hands its turn to the
  /// next one and the order stays exact.
  Entry* pick(const Snapshot& snap,
              const detail::IndexSet& skip,
              std::size_t& index,
              bool again) const {
    const std::size_t n = snap.hosts.size();
    std::optional<typename Clock::time_point> now;  // read only when a circuit is not closed
    auto eligible = [&](std::size_t i) {
      if (skip.contains(i)) {
        return false;
      }
      const Entry& e = *snap.hosts[i];
      if (e.in_use() >= e.max_size) {
        return false;
      }
      if (e.breaker.closed()) {
        return true;
      }
      if (!now) {
        now = Clock::now();
      }
      return e.breaker.may_admit(&*now);
    };
    auto scan_from = [&](std::size_t start) -> Entry* {
      for (std::size_t k = 0; k < n; ++k) {
        const std::size_t i = start + k < n ? start + k : start + k - n;
        if (eligible(i)) {
          index = i;
          return snap.hosts[i];
        }
      }
      return nullptr;
    };
    switch (options_.balance) {
      case Balance::round_robin:
        return scan_from(again ? (index + 1) % n : next_turn() % n);
      case Balance::random:
        return scan_from(detail::random_below(n));
      case Balance::least_in_use: {
        Entry* best = nullptr;
        for (std::size_t i = 0; i < n; ++i) {
          if (eligible(i) && (best == nullptr || snap.hosts[i]->in_use() < best->in_use())) {
            best = snap.hosts[i];
            index = i;
          }
        }
        return best;
      }
      case Balance::power_of_two_choices: {
        if (n < 2) {
          return scan_from(0);
        }
        const std::size_t a = detail::random_below(n);
        std::size_t b = detail::random_below(n - 1);
        b += b >= a ? 1 : 0;
        const bool ea = eligible(a);
        const bool eb = eligible(b);
        if (ea && eb) {
          index = snap.hosts[b]->in_use() < snap.hosts[a]->in_use() ? b : a;
          return snap.hosts[index];
        }
        if (ea || eb) {
          index = ea ? a : b;
          return snap.hosts[index];
        }
        return scan_from(a);
      }
    }
    return nullptr;
  }

  /// The admitted host with the fewest connections out among those not in `failed`, to wait
  /// on; nullptr if none.
  Entry* pick_to_wait(const Snapshot& snap, const detail::IndexSet& failed, std::size_t& index) {
    const auto now = Clock::now();
    Entry* best = nullptr;
    for (std::size_t i = 0; i < snap.hosts.size(); ++i) {
      Entry* e = snap.hosts[i];
      if (!failed.contains(i) && e->breaker.may_admit(&now) &&
          (best == nullptr || e->in_use() < best->in_use())) {
        best = e;
        index = i;
      }
    }
    return best;
  }

  /// round_robin's next turn: this thread's stripe of the turn counter.
  ///
  /// Why stripes: one counter written by every acquire of every thread bounces its cache line
  /// between cores, which cost more than the rest of the acquire together (bench/
  /// multi_host_bench.cpp, BM_Threads_MultiHost). Each thread takes turns on one of
  /// turn_stripes counters (threads share a stripe only beyond that many), so one thread's
  /// order is exact and the spread over many acquires is even.
  /// Why a load and a store rather than fetch_add: two threads that share a stripe and race here
  /// may take the same turn (a lost update), which leaves the spread even; a locked
  /// read-modify-write would cost about 6 ns more per acquire.
  std::size_t next_turn() const noexcept {
    std::atomic<std::size_t>& turn = turns_[detail::thread_stripe() % turn_stripes].value;
    const std::size_t t = turn.load(std::memory_order_relaxed);
    turn.store(t + 1, std::memory_order_relaxed);
    return t;
  }

  /// The breaker's admission of `e`, reading Clock only when its circuit is not closed.
  /// Why: a clock read costs as much as half an acquire's fast path (measured, bench/).
  static Admit admit_now(Entry& e) noexcept {
    return e.breaker.closed() ? Admit::normal : e.breaker.admit(Clock::now());
  }

  enum class Attempt { got, full, failed, gone };

  /// One acquire on host `e` (try_acquire when `wait` is empty; cancellable through `stop`
  /// when not null), recording the outcome into its breaker.
  Attempt attempt(Entry& e,
                  Admit admit,
                  std::optional<WaitClock::duration> wait,
                  const std::stop_token* stop,
                  std::optional<handle_type>& out) {
    const std::uint64_t calls = detail::host_factory_calls;
    try {
      std::optional<PooledHandle<Conn>> h;
      if (wait && stop != nullptr) {
        h.emplace(e.pool.acquire(*wait, *stop));
      } else if (wait) {
        h.emplace(e.pool.acquire(*wait));
      } else {
        h = e.pool.try_acquire();
      }
      if (!h) {
        if (admit == Admit::probe) {
          e.breaker.abandon_probe();
        }
        return Attempt::full;
      }
      if (detail::host_factory_calls != calls) {
        e.look_at_pings(false);
      }
      if (!e.breaker.closed()) {
        e.breaker.success();  // the probe (or a wait that outlived the opening) got through
      }
      out.emplace(make_handle(std::move(*h), &e));
      return Attempt::got;
    } catch (const PoolClosed&) {
      if (admit == Admit::probe) {
        e.breaker.abandon_probe();
      }
      return Attempt::gone;  // removed meanwhile, or the whole pool is closing
    } catch (const PoolError&) {
      // AcquireTimeout or AcquireCancelled: the wait ended, which says nothing of the host.
      if (admit == Admit::probe) {
        e.breaker.abandon_probe();
      }
      throw;
    } catch (...) {
      // The factory's exception: the host factory has recorded it (count and message) already.
    }
    e.look_at_pings(true);
    if (admit == Admit::probe) {
      e.breaker.abandon_probe();  // no-op: the failure has reopened the circuit
    }
    return Attempt::failed;
  }

  [[noreturn]] void throw_no_healthy_host(const Snapshot& snap) const {
    if (closed_.load(std::memory_order_acquire)) {
      throw PoolClosed();
    }
    std::string msg = "connpool: no healthy host";
    if (snap.hosts.empty()) {
      msg += ": the pool has no hosts";
    }
    const char* sep = " (";
    for (const Entry* e : snap.hosts) {
      auto v = e->breaker.view();
      msg += sep;
      msg += host_to_string(e->host());
      msg += ": ";
      msg += to_string(v.state);
      msg += ", ";
      msg += std::to_string(v.failures);
      msg += " consecutive failures, last error: ";
      msg += v.last_error.empty() ? std::string("none") : v.last_error;
      sep = "; ";
    }
    if (!snap.hosts.empty()) {
      msg += ')';
    }
    throw NoHealthyHost(msg);
  }

  /// Where one acquire stands: the host list it works on and the hosts that failed in it.
  struct Search {
    explicit Search(const Snapshot& s) : snap(&s), failed(s.hosts.size()) {}
    const Snapshot* snap;      // never freed before the pool (see the class comment)
    detail::IndexSet failed;   // indices into snap->hosts: failed or unavailable in this acquire
    bool failed_once = false;  // a host failed or left: the deadline now bounds phase 1 too
  };

  /// acquire() with `timeout`, or try_acquire() when it is empty (then nullopt = all busy).
  std::optional<handle_type> acquire_any(std::optional<WaitClock::duration> wait,
                                         const std::stop_token* stop) {
    if (closed_.load(std::memory_order_acquire)) {
      throw PoolClosed();
    }
    Search s(*current_.load(std::memory_order_acquire));
    if (s.snap->hosts.empty()) {
      throw_no_healthy_host(*s.snap);
    }
    // Why the coarse clock (detail::clock_now): the deadline must start now, before a connect
    // that may take long, but a precise steady_clock read would cost a third of the fast path;
    // the coarse one is the same clock at tick resolution (1-4 ms), ample for a deadline.
    const WaitClock::duration timeout = wait.value_or(WaitClock::duration::zero());
    const WaitClock::time_point deadline = detail::clock_now<WaitClock>() + timeout;
    std::optional<handle_type> out;
    for (;;) {
      // Phase 1: hosts with spare capacity, without waiting.
      const Attempt spare = take_spare(s, timeout, deadline, out);
      if (spare == Attempt::got) {
        return out;
      }
      if (spare == Attempt::gone) {
        reload(s);
        continue;
      }
      // Phase 2: every admitted host is busy: wait on the least busy one.
      std::size_t i = 0;
      Entry* e = pick_to_wait(*s.snap, s.failed, i);
      if (e == nullptr) {
        throw_no_healthy_host(*s.snap);
      }
      if (!wait) {
        return std::nullopt;  // try_acquire: a healthy host is busy
      }
      const Admit admit = admit_now(*e);
      if (admit == Admit::no) {
        s.failed.insert(i);
        continue;
      }
      switch (attempt(*e, admit, remaining(deadline), stop, out)) {
        case Attempt::got:
          return out;
        case Attempt::full:
          break;  // not reached: a waiting acquire returns or throws
        case Attempt::failed:
          s.failed.insert(i);
          s.failed_once = true;
          break;
        case Attempt::gone:
          s.failed.insert(i);
          s.failed_once = true;
          reload(s);
          break;
      }
    }
  }

  static WaitClock::duration remaining(WaitClock::time_point deadline) noexcept {
    return std::max(deadline - detail::clock_now<WaitClock>(), WaitClock::duration::zero());
  }

  /// Phase 1 of an acquire: tries, in the balancer's order, each admitted host of `s` that has
  /// spare capacity and has not failed yet, without waiting. Returns `got` (a handle in `out`),
  /// `gone` (a host was removed meanwhile: the caller reloads the host list) or `full` (no host
  /// served; those that failed are in s.failed).
  ///
  /// Throws: AcquireTimeout when a failover has used up the deadline.
  Attempt take_spare(Search& s,
                     WaitClock::duration timeout,
                     WaitClock::time_point deadline,
                     std::optional<handle_type>& out) {
    detail::IndexSet skip = s.failed;
    std::size_t i = 0;
    bool again = false;
    while (Entry* e = pick(*s.snap, skip, i, std::exchange(again, true))) {
      if (s.failed_once && timeout > WaitClock::duration::zero() &&
          remaining(deadline) == WaitClock::duration::zero()) {
        throw_timeout(timeout, *s.snap);
      }
      const Admit admit = admit_now(*e);
      if (admit == Admit::no) {
        skip.insert(i);
        continue;
      }
      switch (attempt(*e, admit, std::nullopt, nullptr, out)) {
        case Attempt::got:
          return Attempt::got;
        case Attempt::full:
          skip.insert(i);
          break;
        case Attempt::failed:
          s.failed.insert(i);
          skip.insert(i);
          s.failed_once = true;
          break;
        case Attempt::gone:
          s.failed.insert(i);
          s.failed_once = true;
          return Attempt::gone;
      }
    }
    return Attempt::full;
  }

  /// Moves `s` to the current host list after a host's pool said PoolClosed: the host was
  /// removed (remove_host() publishes the new list before it closes the host's pool), or the
  /// whole pool is closing. Hosts that failed in this acquire stay failed; hosts added meanwhile
  /// become candidates.
  ///
  /// Why: an acquire that kept the list it started with would, in a rolling replacement (a
  /// caller waiting on a, then add_host(b), remove_host(a)), end with NoHealthyHost blaming a
  /// while b could serve. Complexity: O(old hosts x current hosts), on this rare path only.
  ///
  /// Throws: PoolClosed after close(); NoHealthyHost when no host is left.
  void reload(Search& s) {
    if (closed_.load(std::memory_order_acquire)) {
      throw PoolClosed();
    }
    const Snapshot& cur = *current_.load(std::memory_order_acquire);
    if (&cur != s.snap) {
      detail::IndexSet failed(cur.hosts.size());
      for (std::size_t i = 0; i < cur.hosts.size(); ++i) {
        for (std::size_t j = 0; j < s.snap->hosts.size(); ++j) {
          if (s.snap->hosts[j] == cur.hosts[i] && s.failed.contains(j)) {
            failed.insert(i);
          }
        }
      }
      s.snap = &cur;
      s.failed = std::move(failed);
    }
    if (cur.hosts.empty()) {
      throw_no_healthy_host(cur);
    }
  }

  [[noreturn]] void throw_timeout(WaitClock::duration timeout, const Snapshot& snap) const {
    std::string msg =
        "connpool: MultiHostPool acquire timed out after " +
        std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count()) +
        " ms while failing over (";
    const char* sep = "";
    for (const Entry* e : snap.hosts) {
      msg += sep;
      msg += host_to_string(e->host());
      msg += ": ";
      const std::string err = e->breaker.last_error();
      msg += err.empty() ? std::string("no error") : err;
      sep = "; ";
    }
    msg += ')';
    throw AcquireTimeout(msg);
  }

  handle_type acquire_on(const Host& host, WaitClock::duration timeout) {
    if (closed_.load(std::memory_order_acquire)) {
      throw PoolClosed();
    }
    Entry* e = find(host);
    if (e == nullptr) {
      throw_unknown(host);
    }
    const Admit admit = admit_now(*e);
    if (admit == Admit::no) {
      Snapshot one{{e}};
      throw_no_healthy_host(one);
    }
    const std::uint64_t calls = detail::host_factory_calls;
    try {
      PooledHandle<Conn> h = e->pool.acquire(timeout);
      if (detail::host_factory_calls != calls) {
        e->look_at_pings(false);
      }
      if (!e->breaker.closed()) {
        e->breaker.success();
      }
      return make_handle(std::move(h), e);
    } catch (const PoolError&) {
      if (admit == Admit::probe) {
        e->breaker.abandon_probe();
      }
      throw;
    } catch (...) {
      e->look_at_pings(true);  // the host factory has counted the connect failure
      throw;
    }
  }

  const MultiHostOptions options_;
  const std::shared_ptr<Factory> factory_;  // shared with every host's pool
  std::atomic<bool> closed_{false};
  static constexpr std::size_t turn_stripes = 8;  // round_robin's turn counters
  struct alignas(detail::cache_line_size) Turn {
    std::atomic<std::size_t> value{0};
  };
  mutable std::array<Turn, turn_stripes> turns_{};  // round_robin's turns, per thread stripe

  mutable detail::Mutex admin_mutex_;  // guards entries_, snapshots_ and every store to current_
  std::vector<Entry*> entries_ CONNPOOL_GUARDED_BY(admin_mutex_);  // each holds a reference
  // Every snapshot ever published, freed by the destructor only (see the class comment).
  std::vector<std::unique_ptr<Snapshot>> snapshots_ CONNPOOL_GUARDED_BY(admin_mutex_) = [] {
    std::vector<std::unique_ptr<Snapshot>> v;
    v.push_back(std::make_unique<Snapshot>());
    return v;
  }();
  std::atomic<const Snapshot*> current_{snapshots_.front().get()};  // read without a lock
};

/// Deduces Conn from what factory(host) returns.
template <class Host, class F>
MultiHostPool(std::vector<Host>, F, MultiHostOptions)
    -> MultiHostPool<std::decay_t<std::invoke_result_t<F&, const Host&>>, F, Host>;

template <class Host, class F>
MultiHostPool(std::vector<Host>, F)
    -> MultiHostPool<std::decay_t<std::invoke_result_t<F&, const Host&>>, F, Host>;

}  // namespace connpool
