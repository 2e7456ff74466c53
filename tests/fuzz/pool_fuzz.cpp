// connpool - tests: a model-based fuzz target for ConnectionPool
// SPDX-License-Identifier: MIT

// libFuzzer entry point. The input is read as a pool configuration followed by a sequence of
// operations on one thread (acquire, try_acquire, release, invalidate, detach, clock steps,
// prune, evict_all, factory failures), applied both to a ConnectionPool driven by a ManualClock
// and to a small reference model of DESIGN.md's rules: LIFO reuse, creation below max_size,
// lifetime and idle expiry (idle only down to min_size, stalest first), refill to min_size,
// eviction. After every step the pool must agree with the model: which connection an acquire
// returns, the sizes, and every counter of PoolStats. A disagreement aborts (a finding).
//
// Built with clang's -fsanitize=fuzzer,address as connpool_fuzz (see tests/CMakeLists.txt);
// every build also replays the seed corpus in tests/fuzz/corpus through the same function.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

#include <connpool/connpool.hpp>

namespace {

using namespace std::chrono_literals;

struct FuzzTag {};
using Clock = connpool::ManualClock<FuzzTag>;

struct FactoryFailure : std::runtime_error {
  FactoryFailure() : std::runtime_error("fuzz: factory failure") {}
};

struct Conn {
  int id = 0;
};

struct Factory {
  int* next_id;
  int* failures_left;
  Conn operator()() const {
    if (*failures_left > 0) {
      --*failures_left;
      throw FactoryFailure();
    }
    return Conn{(*next_id)++};
  }
};

using Pool = connpool::ConnectionPool<Conn, Factory, Clock>;
using Handle = connpool::PooledHandle<Conn>;

[[noreturn]] void finding(const char* what, long expected, long actual) {
  std::fprintf(stderr, "pool_fuzz: model mismatch: %s: model %ld, pool %ld\n", what, expected,
               actual);
  std::abort();
}

void expect(const char* what, long expected, long actual) {
  if (expected != actual) {
    finding(what, expected, actual);
  }
}

/// The reference model: what DESIGN.md says the pool holds.
///
/// Idle connections are a LIFO stack, with the connection this thread released last (the
/// pool's per-thread hint) above it: the most recently released is handed out first (DESIGN 2).
/// A connection the pool opens on its own (warm-up, refill) goes on top of the stack, under the
/// hint.
struct Model {
  struct Entry {
    int id;
    Clock::time_point created;
    Clock::time_point last_used;
    std::uint64_t generation;
  };
  std::size_t min_size = 0;
  std::size_t max_size = 1;
  Clock::duration max_idle{};
  Clock::duration max_lifetime{};
  std::optional<Entry> hint;
  std::vector<Entry> stack;                // back = top
  std::vector<std::optional<Entry>> held;  // parallel to the harness's handles
  int next_id = 1;
  int failures_left = 0;
  std::uint64_t generation = 0;
  connpool::PoolStats stats;

  [[nodiscard]] std::size_t idle_count() const { return stack.size() + (hint ? 1 : 0); }
  [[nodiscard]] std::size_t in_use() const {
    return static_cast<std::size_t>(
        std::count_if(held.begin(), held.end(), [](const auto& e) { return e.has_value(); }));
  }
  [[nodiscard]] std::size_t open() const { return idle_count() + in_use(); }

  bool expired(const Entry& e, Clock::time_point now, std::size_t open_now) const {
    return e.generation != generation ||
           (max_lifetime.count() > 0 && now - e.created >= max_lifetime) ||
           (max_idle.count() > 0 && open_now > min_size && now - e.last_used >= max_idle);
  }

  /// A new connection, or nullopt when the factory fails (counted).
  std::optional<Entry> create(Clock::time_point now) {
    if (failures_left > 0) {
      --failures_left;
      ++stats.create_failures;
      return std::nullopt;
    }
    ++stats.created;
    return Entry{next_id++, now, now, generation};
  }

  enum class Outcome { handle, exhausted, factory_failed };

  /// acquire(0 ms) / try_acquire(): the entry handed out, if any.
  Outcome acquire(Clock::time_point now, Entry& out) {
    bool have_place = false;  // an expired connection was closed: its place is the caller's
    for (;;) {
      std::optional<Entry> e;
      if (hint) {
        e = std::exchange(hint, std::nullopt);
      } else if (!stack.empty()) {
        e = stack.back();
        stack.pop_back();
      }
      if (!e) {
        break;
      }
      // The open count at the check includes this connection.
      if (expired(*e, now, open() + 1)) {
        ++stats.closed;
        have_place = true;
        continue;
      }
      ++stats.acquired;
      ++stats.reused;
      out = *e;
      return Outcome::handle;
    }
    if (have_place || open() < max_size) {
      if (auto e = create(now)) {
        ++stats.acquired;
        out = *e;
        return Outcome::handle;
      }
      return Outcome::factory_failed;
    }
    return Outcome::exhausted;
  }

  void give_back(Entry e, Clock::time_point now, bool invalidate) {
    ++stats.released;
    if (invalidate || e.generation != generation ||
        (max_lifetime.count() > 0 && now - e.created >= max_lifetime)) {
      ++stats.closed;
      return;
    }
    e.last_used = now;
    if (hint) {
      stack.push_back(*hint);
    }
    hint = e;
  }

  /// Refill to min_size; stops at the first factory failure.
  void refill(Clock::time_point now) {
    while (open() < min_size) {
      auto e = create(now);
      if (!e) {
        return;
      }
      stack.push_back(*e);
    }
  }

  /// Closes the idle connections `close` says, stalest first (ties: oldest connection first).
  template <class Pred>
  std::size_t close_idle(Pred close) {
    std::vector<Entry> all = stack;
    if (hint) {
      all.push_back(*hint);
    }
    std::sort(all.begin(), all.end(), [](const Entry& a, const Entry& b) {
      return a.last_used != b.last_used ? a.last_used < b.last_used : a.id < b.id;
    });
    std::vector<int> closed_ids;
    std::size_t open_after = open();
    for (const Entry& e : all) {
      if (close(e, open_after)) {
        closed_ids.push_back(e.id);
        --open_after;
      }
    }
    auto gone = [&](const Entry& e) {
      return std::find(closed_ids.begin(), closed_ids.end(), e.id) != closed_ids.end();
    };
    std::erase_if(stack, gone);
    if (hint && gone(*hint)) {
      hint.reset();
    }
    stats.closed += closed_ids.size();
    return closed_ids.size();
  }

  std::size_t prune(Clock::time_point now) {
    const std::size_t n =
        close_idle([&](const Entry& e, std::size_t open_now) { return expired(e, now, open_now); });
    refill(now);
    return n;
  }

  std::size_t evict_all(Clock::time_point now) {
    ++generation;
    const std::size_t n = close_idle([](const Entry&, std::size_t) { return true; });
    refill(now);
    return n;
  }
};

/// Reads the input byte by byte; 0 when it runs out.
class Input {
 public:
  Input(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  [[nodiscard]] bool empty() const { return pos_ >= size_; }
  std::uint8_t next() { return pos_ < size_ ? data_[pos_++] : 0; }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

void compare(const Model& m, const Pool& pool) {
  const connpool::PoolStats s = pool.stats();
  expect("created", static_cast<long>(m.stats.created), static_cast<long>(s.created));
  expect("closed", static_cast<long>(m.stats.closed), static_cast<long>(s.closed));
  expect("acquired", static_cast<long>(m.stats.acquired), static_cast<long>(s.acquired));
  expect("reused", static_cast<long>(m.stats.reused), static_cast<long>(s.reused));
  expect("released", static_cast<long>(m.stats.released), static_cast<long>(s.released));
  expect("detached", static_cast<long>(m.stats.detached), static_cast<long>(s.detached));
  expect("timeouts", static_cast<long>(m.stats.timeouts), static_cast<long>(s.timeouts));
  expect("waited", static_cast<long>(m.stats.waited), static_cast<long>(s.waited));
  expect("create_failures", static_cast<long>(m.stats.create_failures),
         static_cast<long>(s.create_failures));
  expect("idle", static_cast<long>(m.idle_count()), static_cast<long>(s.idle));
  expect("in_use", static_cast<long>(m.in_use()), static_cast<long>(s.in_use));
  expect("pending", 0, static_cast<long>(s.pending));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Input in(data, size);
  Clock::set(0s);
  Model m;
  m.max_size = 1 + in.next() % 6;
  m.min_size = in.next() % (m.max_size + 1);
  const std::uint8_t idle_byte = in.next();
  const std::uint8_t life_byte = in.next();
  m.max_idle = idle_byte % 4 == 0 ? 0ms : std::chrono::milliseconds(100 * (idle_byte % 16 + 1));
  m.max_lifetime = life_byte % 4 == 0 ? 0ms : std::chrono::milliseconds(200 * (life_byte % 16 + 1));

  int next_id = 1;
  int failures_left = 0;
  connpool::PoolOptions o;
  o.min_size = m.min_size;
  o.max_size = m.max_size;
  o.max_idle = std::chrono::duration_cast<std::chrono::milliseconds>(m.max_idle);
  o.max_lifetime = std::chrono::duration_cast<std::chrono::milliseconds>(m.max_lifetime);
  o.health_check_interval = 0ms;
  o.validate_on_acquire = false;
  o.fail_fast = false;
  o.max_connect_backoff = 0ms;  // the model has no connect backoff
  Pool pool{Factory{&next_id, &failures_left}, o};
  m.refill(Clock::now());
  std::vector<Handle> handles;  // parallel to m.held
  compare(m, pool);

  int steps = 0;
  while (!in.empty() && steps++ < 512) {
    const std::uint8_t op = in.next();
    const std::uint8_t arg = in.next();
    const Clock::time_point now = Clock::now();
    switch (op % 9) {
      case 0:
      case 1: {  // acquire(0 ms) or try_acquire()
        const bool try_only = op % 9 == 1;
        Model::Entry e{};
        const auto expected = m.acquire(now, e);
        std::optional<Handle> h;
        bool failed = false;
        bool timed_out = false;
        try {
          if (try_only) {
            h = pool.try_acquire();
          } else {
            h = pool.acquire(0ms);
          }
        } catch (const FactoryFailure&) {
          failed = true;
        } catch (const connpool::AcquireTimeout&) {
          timed_out = true;
        }
        if (expected == Model::Outcome::exhausted && !try_only) {
          ++m.stats.timeouts;
          ++m.stats.waited;
        }
        expect("acquire: factory failed", expected == Model::Outcome::factory_failed, failed);
        expect("acquire: timed out", expected == Model::Outcome::exhausted && !try_only, timed_out);
        expect("acquire: got a connection", expected == Model::Outcome::handle,
               h.has_value() && static_cast<bool>(*h));
        if (expected == Model::Outcome::handle) {
          expect("acquire: LIFO: which connection", e.id, (*h)->id);
          handles.push_back(std::move(*h));
          m.held.emplace_back(e);
        }
        break;
      }
      case 2:
      case 3:
      case 4: {  // release, invalidate, detach handle `arg`
        if (handles.empty()) {
          break;
        }
        const std::size_t k = arg % handles.size();
        Model::Entry e = *m.held[k];
        if (op % 9 == 4) {
          Conn c = handles[k].detach();
          expect("detach: which connection", e.id, c.id);
          ++m.stats.detached;
        } else {
          const bool invalidate = op % 9 == 3;
          if (invalidate) {
            handles[k].invalidate();
          } else {
            handles[k].release();
          }
          m.give_back(e, now, invalidate);
        }
        handles.erase(handles.begin() + static_cast<std::ptrdiff_t>(k));
        m.held.erase(m.held.begin() + static_cast<std::ptrdiff_t>(k));
        break;
      }
      case 5:  // the clock moves on
        Clock::advance(std::chrono::milliseconds(10 * arg));
        break;
      case 6:  // prune()
        expect("prune: closed", static_cast<long>(m.prune(now)), static_cast<long>(pool.prune()));
        break;
      case 7:  // the next `arg % 4` creations fail
        failures_left = arg % 4;
        m.failures_left = failures_left;
        break;
      case 8:  // evict_all()
        expect("evict_all: closed", static_cast<long>(m.evict_all(now)),
               static_cast<long>(pool.evict_all()));
        break;
    }
    compare(m, pool);
  }
  // Everything back, then close.
  for (std::size_t k = 0; k < handles.size(); ++k) {
    handles[k].release();
    m.give_back(*std::exchange(m.held[k], std::nullopt), Clock::now(), false);
  }
  compare(m, pool);
  return 0;
}
