// connpool - tests: a model-based fuzz target for ConnectionPool
// SPDX-License-Identifier: MIT

// libFuzzer entry point. The input is read as a pool configuration followed by a sequence of
// operations on one thread (acquire, try_acquire, release, invalidate, detach, clock steps,
// prune, evict_all, set_max_size, close, factory, ping and reset failures), applied both to a
// ConnectionPool driven by a ManualClock and to a small reference model of DESIGN.md's rules:
// LIFO reuse, creation below max_size, validation pings, lifetime and idle expiry (idle only down
// to min_size, stalest first), refill to min_size, eviction, resizing, close. After every step
// the pool must agree with the model: which connection an acquire returns, the sizes, and every
// counter of PoolStats.
//
// Re-entrancy and destruction: a step may arm a callback (a hook, the factory, or a connection's
// ping, reset or close) so that its next call re-enters the pool with one of try_acquire, release
// or invalidate a handle, prune, close, set_max_size, or destroy the pool; and a step may destroy
// the pool with handles out (giving them back later must close their connections) or make a
// fresh pool. Where a re-entrant call makes an exact prediction impossible, the step checks the
// invariants instead: the pool's counts add up with the connections' own, never more open than
// max_size, no connection held twice or used after its close, and every connection that neither
// a live pool nor a handle holds closed exactly once (or detached). The model takes the pool's
// state over again as soon as nothing is idle, when the pool holds nothing the model cannot know.
// At the end, with every handle given back and the pool destroyed, every connection must have
// been closed (or detached) and destroyed. A disagreement aborts (a finding).
//
// Input: 4 bytes of configuration (max_size, min_size, max_idle and validation, max_lifetime),
// then steps of an operation byte and an argument byte; arming a callback reads two more (the
// action and its parameter). An operation byte below 0xE0 selects one of the first nine
// operations (byte % 9), one from 0xE0 on one of the others ((byte - 0xE0) % 7): inputs from
// before those existed keep most of their meaning.
//
// Built with clang's -fsanitize=fuzzer,address as connpool_fuzz (see tests/CMakeLists.txt);
// every build also replays the seed corpus in tests/fuzz/corpus through the same function.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
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

struct ResetFailure : std::runtime_error {
  ResetFailure() : std::runtime_error("fuzz: reset failure") {}
};

[[noreturn]] void finding(const char* what, long expected, long actual) {
  std::fprintf(stderr, "pool_fuzz: model mismatch: %s: model %ld, pool %ld\n", what, expected,
               actual);
  std::abort();
}

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "pool_fuzz: invariant broken: %s\n", what);
  std::abort();
}

void expect(const char* what, long expected, long actual) {
  if (expected != actual) {
    finding(what, expected, actual);
  }
}

void check(bool ok, const char* what) {
  if (!ok) {
    finding(what);
  }
}

/// Where a connection, the factory or a hook calls back into the harness.
enum class Site { factory, ping, reset, close, on_create, on_acquire, on_release, on_close, any };
constexpr int site_count = 9;  // with `any`

/// What an armed callback does.
enum class Action { try_acquire, release, invalidate, prune, close, set_max_size, destroy };
constexpr int action_count = 7;

/// A connection: an id, and every call reported to the World (below).
struct Conn {
  explicit Conn(int conn_id) noexcept : id(conn_id) {}
  Conn(Conn&& other) noexcept : id(std::exchange(other.id, 0)) {}
  Conn& operator=(Conn&& other) noexcept {
    if (this != &other) {
      finish();
      id = std::exchange(other.id, 0);
    }
    return *this;
  }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;
  ~Conn() { finish(); }

  bool ping();
  void reset();
  void close();

  int id = 0;  // 1, 2, 3, ... per input; 0 once moved from

 private:
  void finish() noexcept;
};

struct Factory {
  Conn operator()() const;
};

using Pool = connpool::ConnectionPool<Conn, Factory, Clock>;
using Handle = connpool::PooledHandle<Conn>;

/// The life of one connection, as the connection itself saw it.
struct ConnRecord {
  int pool = 0;  // World::serial_ of the pool that made it
  Clock::time_point created{};
  std::uint64_t generation = 0;  // its pool's evict_all() generation when it was made
  int closes = 0;
  bool destroyed = false;
  bool detached = false;  // taken out with detach(): the harness's from then on
};

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
  bool validate = false;  // validate_on_acquire, with validation_bypass 0: every reuse pings
  bool closed = false;
  std::optional<Entry> hint;
  std::vector<Entry> stack;  // back = top
  std::vector<Entry> held;   // parallel to the World's handles
  int next_id = 1;
  int failures_left = 0;
  int ping_failures_left = 0;
  int reset_failures_left = 0;
  std::uint64_t generation = 0;
  connpool::PoolStats stats;

  [[nodiscard]] std::size_t idle_count() const { return stack.size() + (hint ? 1 : 0); }
  [[nodiscard]] std::size_t in_use() const { return held.size(); }
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

  enum class Outcome { handle, exhausted, factory_failed, closed };

  /// acquire(0 ms) / try_acquire(): the entry handed out, if any.
  Outcome acquire(Clock::time_point now, Entry& out) {
    if (closed) {
      return Outcome::closed;  // DESIGN 7
    }
    bool have_place = false;  // a connection was closed: its place is the caller's
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
      if (validate && ping_failures_left > 0) {  // DESIGN 5: closed, and the acquire goes on
        --ping_failures_left;
        ++stats.closed;
        ++stats.validation_failures;
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

  /// The handle `k` gives its connection back (release() or invalidate()).
  void give_back(std::size_t k, Clock::time_point now, bool invalidate) {
    Entry e = held[k];
    const std::size_t open_with_it = open();
    held.erase(held.begin() + static_cast<std::ptrdiff_t>(k));
    ++stats.released;
    bool keep = !invalidate;
    if (keep && reset_failures_left > 0) {  // reset() runs on every connection kept so far
      --reset_failures_left;
      keep = false;
    }
    if (!keep || closed || e.generation != generation || open_with_it > max_size ||
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
    while (!closed && open() < min_size) {
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
    if (closed) {
      return 0;
    }
    const std::size_t n =
        close_idle([&](const Entry& e, std::size_t open_now) { return expired(e, now, open_now); });
    refill(now);
    return n;
  }

  std::size_t evict_all(Clock::time_point now) {
    if (closed) {
      return 0;
    }
    ++generation;
    const std::size_t n = close_idle([](const Entry&, std::size_t) { return true; });
    refill(now);
    return n;
  }

  /// Shrinking closes idle connections above the bound at once, in claim order: the idle stack
  /// from the top, then the hint.
  void set_max_size(std::size_t n) {
    max_size = n;
    if (closed) {
      return;
    }
    std::size_t open_after = open();
    while (open_after > n && idle_count() > 0) {
      if (!stack.empty()) {
        stack.pop_back();
      } else {
        hint.reset();
      }
      ++stats.closed;
      --open_after;
    }
  }

  /// DESIGN 7: the idle connections are closed; the others when they come back.
  void close() {
    if (!closed) {
      closed = true;
      stats.closed += idle_count();
      hint.reset();
      stack.clear();
    }
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

/// One input's pools, handles, connections and model. The pool lives in an optional so that a
/// step or a callback can destroy it; handles of a destroyed pool are kept apart (orphans_).
class World {
 public:
  World(const connpool::PoolOptions& options, const Model& fresh)
      : options_(options), fresh_(fresh) {
    conns_.emplace_back();  // ids start at 1
    options_.on_create = [this](const connpool::PoolEvent&) { callback(Site::on_create); };
    options_.on_acquire = [this](const connpool::PoolEvent&) { callback(Site::on_acquire); };
    options_.on_release = [this](const connpool::PoolEvent&) { callback(Site::on_release); };
    options_.on_close = [this](const connpool::PoolEvent&) { callback(Site::on_close); };
  }
  World(const World&) = delete;
  World& operator=(const World&) = delete;
  ~World() = default;  // finish() has given everything back

  /// Makes a pool (the first, or a fresh one once the last was destroyed).
  void create_pool() {
    if (live_) {
      return;
    }
    const long fired = fired_;
    ++serial_;
    closed_ = false;
    generation_ = 0;
    model_ = fresh_;
    sync_model_faults();
    model_.next_id = next_id_;
    pool_.emplace(Factory{}, options_);
    live_ = true;
    model_.refill(Clock::now());
    exact_ = true;
    after_step(fired != fired_, true);
  }

  /// One step of the input.
  void step(Input& in) {
    const std::uint8_t op = in.next();
    const std::uint8_t arg = in.next();
    if (op < 0xE0) {
      switch (op % 9) {
        case 0:
        case 1:  // acquire(0 ms) or try_acquire()
          acquire(op % 9 == 1);
          break;
        case 2:
        case 3:
        case 4:  // release, invalidate, detach handle `arg`
          give_back(arg, op % 9 - 2);
          break;
        case 5:  // the clock moves on
          Clock::advance(std::chrono::milliseconds(10 * arg));
          after_step(false, true);
          break;
        case 6:  // prune()
          prune();
          break;
        case 7:  // the next `arg % 4` creations fail
          failures_left_ = arg % 4;
          model_.failures_left = failures_left_;
          after_step(false, true);
          break;
        case 8:  // evict_all()
          evict_all();
          break;
      }
      return;
    }
    switch ((op - 0xE0) % 7) {
      case 0:  // close()
        close();
        break;
      case 1:  // the pool is destroyed; its handles stay out
        if (live_) {
          const long fired = fired_;
          destroy();
          after_step(fired != fired_, false);
        }
        break;
      case 2:  // a fresh pool, if there is none
        create_pool();
        break;
      case 3:  // set_max_size()
        set_max_size(arg);
        break;
      case 4: {  // the next call at a site re-enters the pool
        const std::uint8_t action = in.next();
        const std::uint8_t param = in.next();
        arm_ = Arm{static_cast<Site>(arg % site_count), static_cast<Action>(action % action_count),
                   param};
        after_step(false, true);
        break;
      }
      case 5:  // the next `arg % 3` resets throw
        reset_failures_left_ = arg % 3;
        model_.reset_failures_left = reset_failures_left_;
        after_step(false, true);
        break;
      case 6:  // the next `arg % 3` pings fail
        ping_failures_left_ = arg % 3;
        model_.ping_failures_left = ping_failures_left_;
        after_step(false, true);
        break;
    }
  }

  /// Everything back (checked against the model while it is exact), the pool destroyed, then
  /// the handles of destroyed pools given back: every connection must then be closed (or
  /// detached) and destroyed.
  void finish() {
    arm_.reset();
    while (!handles_.empty()) {
      give_back(0, 0);
    }
    if (live_) {
      destroy();
      after_step(false, false);
    }
    while (!orphans_.empty()) {
      give_back(0, 0);
    }
    for (std::size_t id = 1; id < conns_.size(); ++id) {
      check(conns_[id].destroyed, "a connection outlived its pool and its handles");
    }
  }

  // --- What the connections and the factory report -----------------------------------------

  int open_conn() {
    callback(Site::factory);
    if (failures_left_ > 0) {
      --failures_left_;
      throw FactoryFailure();
    }
    conns_.push_back(ConnRecord{serial_, Clock::now(), generation_, 0, false, false});
    return next_id_++;
  }

  bool conn_ping(int id) {
    callback(Site::ping);
    check(record(id).closes == 0, "ping on a closed connection");
    if (ping_failures_left_ > 0) {
      --ping_failures_left_;
      return false;
    }
    return true;
  }

  void conn_reset(int id) {
    callback(Site::reset);
    check(record(id).closes == 0, "reset of a closed connection");
    if (reset_failures_left_ > 0) {
      --reset_failures_left_;
      throw ResetFailure();
    }
  }

  void conn_close(int id) {
    callback(Site::close);
    ConnRecord& r = record(id);  // after the callback, which may open connections
    check(r.closes == 0, "a connection closed twice");
    check(!r.detached, "the pool closed a detached connection");
    ++r.closes;
  }

  void conn_destroyed(int id) {
    ConnRecord& r = record(id);
    check(!r.destroyed, "a connection destroyed twice");
    check(r.closes == 1 || r.detached, "a connection destroyed without close()");
    r.destroyed = true;
  }

 private:
  struct Arm {
    Site site;
    Action action;
    std::uint8_t param;
  };

  ConnRecord& record(int id) {
    check(id > 0 && static_cast<std::size_t>(id) < conns_.size(), "an unknown connection");
    return conns_[static_cast<std::size_t>(id)];
  }

  // --- Steps ------------------------------------------------------------------------------

  void acquire(bool try_only) {
    if (!live_) {
      return;
    }
    const long fired = fired_;
    const bool predict = exact_;
    Model::Entry e{};
    const Model::Outcome expected = predict ? model_.acquire(Clock::now(), e) : Model::Outcome{};
    std::optional<Handle> h;
    bool failed = false;
    bool timed_out = false;
    bool closed = false;
    try {
      if (try_only) {
        h = pool_->try_acquire();
      } else {
        h = pool_->acquire(0ms);
      }
    } catch (const FactoryFailure&) {
      failed = true;
    } catch (const connpool::AcquireTimeout&) {
      timed_out = true;
    } catch (const connpool::PoolClosed&) {
      closed = true;
    }
    const bool got = h.has_value() && static_cast<bool>(*h);
    const bool disturbed = fired != fired_;
    check(!try_only || !timed_out, "try_acquire timed out");
    if (!disturbed) {
      check(closed == closed_, "PoolClosed if and only if the pool is closed");
    }
    if (predict && !disturbed) {
      if (expected == Model::Outcome::exhausted && !try_only) {
        ++model_.stats.timeouts;
        ++model_.stats.waited;
      }
      expect("acquire: factory failed", expected == Model::Outcome::factory_failed, failed);
      expect("acquire: timed out", expected == Model::Outcome::exhausted && !try_only, timed_out);
      expect("acquire: got a connection", expected == Model::Outcome::handle, got);
      if (got) {
        expect("acquire: LIFO: which connection", e.id, (*h)->id);
        model_.held.push_back(e);
      }
    }
    if (got) {
      handles_.push_back(std::move(*h));
    }
    after_step(disturbed, predict);
  }

  /// Handle `arg` (of the live pool's, then of the orphans) goes back: `how` 0 release,
  /// 1 invalidate, 2 detach.
  void give_back(std::uint8_t arg, int how) {
    const std::size_t total = handles_.size() + orphans_.size();
    if (total == 0) {
      after_step(false, true);
      return;
    }
    const std::size_t k = arg % total;
    const long fired = fired_;
    const bool own = k < handles_.size();
    std::vector<Handle>& from = own ? handles_ : orphans_;
    const std::size_t i = own ? k : k - handles_.size();
    const bool predict = own && exact_;
    if (how == 2) {
      const int id = from[i]->id;
      Conn c = from[i].detach();
      expect("detach: which connection", id, c.id);
      record(c.id).detached = true;
      if (predict) {
        ++model_.stats.detached;
        model_.held.erase(model_.held.begin() + static_cast<std::ptrdiff_t>(i));
      }
    } else {
      if (predict) {
        model_.give_back(i, Clock::now(), how == 1);
      }
      if (how == 1) {
        from[i].invalidate();
      } else {
        from[i].release();
      }
    }
    from.erase(from.begin() + static_cast<std::ptrdiff_t>(i));
    after_step(fired != fired_, predict);
  }

  void prune() {
    if (!live_) {
      return;
    }
    const long fired = fired_;
    const bool predict = exact_;
    const std::size_t expected = predict ? model_.prune(Clock::now()) : 0;
    const std::size_t n = pool_->prune();
    if (predict && fired == fired_) {
      expect("prune: closed", static_cast<long>(expected), static_cast<long>(n));
    }
    after_step(fired != fired_, predict);
  }

  void evict_all() {
    if (!live_) {
      return;
    }
    const long fired = fired_;
    const bool predict = exact_;
    if (!closed_) {
      ++generation_;  // as the pool does, before it opens anything anew
    }
    const std::size_t expected = predict ? model_.evict_all(Clock::now()) : 0;
    const std::size_t n = pool_->evict_all();
    if (predict && fired == fired_) {
      expect("evict_all: closed", static_cast<long>(expected), static_cast<long>(n));
    }
    after_step(fired != fired_, predict);
  }

  void set_max_size(std::uint8_t arg) {
    if (!live_) {
      return;
    }
    const long fired = fired_;
    const bool predict = exact_;
    const std::size_t n = size_for(arg);
    if (predict) {
      model_.set_max_size(n);
    }
    pool_->set_max_size(n);
    after_step(fired != fired_, predict);
  }

  void close() {
    if (!live_) {
      return;
    }
    const long fired = fired_;
    const bool predict = exact_;
    if (predict) {
      model_.close();
    }
    closed_ = true;
    pool_->close();
    after_step(fired != fired_, predict);
  }

  /// Destroys the pool (in a step or a callback); its handles become orphans after the step.
  void destroy() {
    if (!live_) {
      return;
    }
    live_ = false;
    closed_ = true;
    orphaning_ = true;
    exact_ = false;
    pool_.reset();
  }

  /// A max_size for set_max_size(): between max(min_size, 1) and 6.
  [[nodiscard]] std::size_t size_for(std::uint8_t arg) const {
    const std::size_t lo = std::max<std::size_t>(1, fresh_.min_size);
    return lo + arg % (7 - lo);
  }

  // --- Callbacks --------------------------------------------------------------------------

  void callback(Site site) {
    if (!arm_ || (arm_->site != Site::any && arm_->site != site)) {
      return;
    }
    const Arm a = *std::exchange(arm_, std::nullopt);
    ++fired_;
    try {
      act(a);
    } catch (const std::exception& x) {
      std::fprintf(stderr, "pool_fuzz: a re-entrant call threw: %s\n", x.what());
      finding("a re-entrant call threw an undocumented exception");
    }
  }

  void act(const Arm& a) {
    switch (a.action) {
      case Action::try_acquire:
        if (live_) {
          try {
            if (auto h = pool_->try_acquire()) {
              check(!closed_, "try_acquire handed out a connection after close()");
              nested_.push_back(std::move(*h));
            }
          } catch (const FactoryFailure&) {
          } catch (const connpool::PoolClosed&) {
            check(closed_, "try_acquire threw PoolClosed before close()");
          }
        }
        break;
      case Action::release:
      case Action::invalidate:
        if (Handle* h = pick(a.param)) {
          if (a.action == Action::release) {
            h->release();
          } else {
            h->invalidate();
          }
        }
        break;
      case Action::prune:
        if (live_) {
          pool_->prune();
        }
        break;
      case Action::close:
        if (live_) {
          closed_ = true;
          pool_->close();
        }
        break;
      case Action::set_max_size:
        if (live_) {
          pool_->set_max_size(size_for(a.param));
        }
        break;
      case Action::destroy:
        destroy();
        break;
    }
  }

  /// A handle that holds a connection, of any pool: number `param` modulo their count.
  Handle* pick(std::uint8_t param) {
    std::vector<Handle*> all;
    for (std::vector<Handle>* v : {&handles_, &nested_, &orphans_}) {
      for (Handle& h : *v) {
        if (h) {
          all.push_back(&h);
        }
      }
    }
    return all.empty() ? nullptr : all[param % all.size()];
  }

  // --- After every step -------------------------------------------------------------------

  /// `disturbed`: a callback re-entered the pool during the step, so the model's prediction
  /// does not hold. `predicted`: the model followed the step (its fault counters included).
  void after_step(bool disturbed, bool predicted) {
    // Handles vectors change only here, never while a step runs: a callback may run inside a
    // handle's release().
    for (Handle& h : nested_) {
      handles_.push_back(std::move(h));
    }
    nested_.clear();
    std::erase_if(handles_, [](const Handle& h) { return !h; });
    std::erase_if(orphans_, [](const Handle& h) { return !h; });
    if (orphaning_) {
      for (Handle& h : handles_) {
        orphans_.push_back(std::move(h));
      }
      handles_.clear();
      orphaning_ = false;
    }
    if (disturbed || !live_) {
      exact_ = false;
    }
    check_invariants();
    if (!live_) {
      return;
    }
    if (exact_) {
      if (!predicted) {
        sync_model_faults();  // consumed by the connections of destroyed pools
      }
      compare();
    } else {
      try_resync();
    }
  }

  void sync_model_faults() {
    model_.failures_left = failures_left_;
    model_.ping_failures_left = ping_failures_left_;
    model_.reset_failures_left = reset_failures_left_;
  }

  /// The model agrees with the pool, figure by figure.
  void compare() {
    const connpool::PoolStats s = pool_->stats();
    const Model& m = model_;
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
    expect("validation_failures", static_cast<long>(m.stats.validation_failures),
           static_cast<long>(s.validation_failures));
    expect("idle", static_cast<long>(m.idle_count()), static_cast<long>(s.idle));
    expect("in_use", static_cast<long>(m.in_use()), static_cast<long>(s.in_use));
    expect("max_size", static_cast<long>(m.max_size), static_cast<long>(s.max_size));
    expect("pending", 0, static_cast<long>(s.pending));
    // The faults the model expected the pool to meet are the ones it met.
    expect("factory failures left", m.failures_left, failures_left_);
    expect("ping failures left", m.ping_failures_left, ping_failures_left_);
    expect("reset failures left", m.reset_failures_left, reset_failures_left_);
  }

  /// What holds whatever the model knows: checked after every step.
  void check_invariants() {
    std::vector<int> held;
    for (const std::vector<Handle>* v : {&handles_, &orphans_}) {
      for (const Handle& h : *v) {
        const ConnRecord& r = record(h->id);
        check(r.closes == 0 && !r.destroyed && !r.detached, "a handle holds a closed connection");
        held.push_back(h->id);
      }
    }
    std::sort(held.begin(), held.end());
    check(std::adjacent_find(held.begin(), held.end()) == held.end(),
          "a connection held by two handles");
    long created = 0;
    long closed = 0;
    long detached = 0;
    for (std::size_t id = 1; id < conns_.size(); ++id) {
      const ConnRecord& r = conns_[id];
      if (live_ && r.pool == serial_) {
        ++created;
        closed += r.closes;
        detached += r.detached ? 1 : 0;
      } else if (!std::binary_search(held.begin(), held.end(), static_cast<int>(id))) {
        // Neither a live pool nor a handle has it.
        check(r.detached ? r.closes == 0 : r.closes == 1,
              "a connection of a destroyed pool not closed exactly once");
      }
    }
    if (!live_) {
      return;
    }
    const connpool::PoolStats s = pool_->stats();
    expect("invariant: created", created, static_cast<long>(s.created));
    expect("invariant: closed", closed, static_cast<long>(s.closed));
    expect("invariant: detached", detached, static_cast<long>(s.detached));
    expect("invariant: open", created - closed - detached, static_cast<long>(s.idle + s.in_use));
    expect("invariant: in_use", static_cast<long>(handles_.size()), static_cast<long>(s.in_use));
    expect("invariant: acquired", static_cast<long>(s.released + s.detached + s.in_use),
           static_cast<long>(s.acquired));
    expect("invariant: pending", 0, static_cast<long>(s.pending));
    // Above max_size only by connections in use when it shrank, never by idle ones.
    check(s.idle + s.in_use <= std::max(s.max_size, s.in_use), "more open than max_size");
    check(!closed_ || s.idle == 0, "an idle connection in a closed pool");
  }

  /// With nothing idle, the pool holds nothing the model cannot know: the model takes over
  /// the pool's figures and the handles out, and predicts exactly again.
  void try_resync() {
    const connpool::PoolStats s = pool_->stats();
    if (s.idle != 0) {
      return;
    }
    Model m = fresh_;
    m.max_size = s.max_size;
    m.closed = closed_;
    m.generation = generation_;
    m.next_id = next_id_;
    m.stats = s;
    for (const Handle& h : handles_) {
      const ConnRecord& r = record(h->id);
      m.held.push_back(Model::Entry{h->id, r.created, r.created, r.generation});
    }
    model_ = std::move(m);
    sync_model_faults();
    exact_ = true;
  }

  connpool::PoolOptions options_;
  const Model fresh_;              // the model of a new pool, before warm-up
  std::vector<ConnRecord> conns_;  // by connection id
  int next_id_ = 1;
  int failures_left_ = 0;
  int ping_failures_left_ = 0;
  int reset_failures_left_ = 0;
  std::uint64_t generation_ = 0;  // the live pool's evict_all() generation
  int serial_ = 0;                // pools made so far
  bool live_ = false;             // pool_ holds a pool that is not being destroyed
  bool closed_ = false;           // the live pool was closed
  bool exact_ = false;            // model_ follows the live pool exactly
  bool orphaning_ = false;        // destroyed during this step: handles_ become orphans
  Model model_;
  std::optional<Arm> arm_;
  long fired_ = 0;               // armed callbacks that fired
  std::vector<Handle> orphans_;  // of destroyed pools
  std::vector<Handle> nested_;   // acquired by a callback during this step
  std::vector<Handle> handles_;  // of the live pool; parallel to model_.held while exact_
  std::optional<Pool> pool_;     // last: destroyed first
};

World* world = nullptr;  // the input being run; the target is single-threaded

bool Conn::ping() {
  return world->conn_ping(id);
}
void Conn::reset() {
  world->conn_reset(id);
}
void Conn::close() {
  world->conn_close(id);
}
void Conn::finish() noexcept {
  if (id != 0) {
    world->conn_destroyed(std::exchange(id, 0));
  }
}

Conn Factory::operator()() const {
  return Conn(world->open_conn());
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
  m.validate = (idle_byte & 0x40) != 0;

  connpool::PoolOptions o;
  o.min_size = m.min_size;
  o.max_size = m.max_size;
  o.max_idle = std::chrono::duration_cast<std::chrono::milliseconds>(m.max_idle);
  o.max_lifetime = std::chrono::duration_cast<std::chrono::milliseconds>(m.max_lifetime);
  o.health_check_interval = 0ms;
  o.validate_on_acquire = m.validate;
  o.validation_bypass = 0ms;  // every reuse pings: the model needs no validation clock
  o.fail_fast = false;
  o.max_connect_backoff = 0ms;  // the model has no connect backoff

  World w(o, m);
  world = &w;
  w.create_pool();
  int steps = 0;
  while (!in.empty() && steps++ < 512) {
    w.step(in);
  }
  w.finish();
  world = nullptr;
  return 0;
}
