// connpool - tests: a controllable fake connection and its factory
// SPDX-License-Identifier: MIT
#pragma once

// FakeConn models every connection concept (close, ping, reset) and reports everything that
// happens to it into a FakeState shared with the test: how many connections exist, how many
// were closed, whether two holders ever used one connection at once, and so on. The test flips
// atomics in the FakeState to make the factory, ping, close or reset fail. Everything is
// thread-safe, so the same fake serves the unit tests and the stress tests. Nothing here
// allocates after a connection is created (see alloc_test.cpp).

#include <atomic>
#include <functional>
#include <memory>
#include <stdexcept>
#include <utility>

namespace connpool_test {

/// Thrown by FakeFactory when told to fail. `code` lets a test check that the very exception
/// reached the caller unchanged (not sliced, not wrapped).
struct FactoryError : std::runtime_error {
  explicit FactoryError(int error_code)
      : std::runtime_error("fake factory: connect refused"), code(error_code) {}
  int code;
};

/// Thrown by FakeConn::ping(), close() and reset() when told to.
struct FakeConnError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// How FakeConn::ping() answers.
enum class PingResult { ok, fail, throws };

/// Decrements `counter` if it is positive; true when it did. For "the next N calls fail".
inline bool take_one(std::atomic<int>& counter) noexcept {
  int n = counter.load();
  while (n > 0) {
    if (counter.compare_exchange_weak(n, n - 1)) {
      return true;
    }
  }
  return false;
}

/// What the fake connections of one test share. Declare it before the pool, so it outlives the
/// pool and every handle.
struct FakeState {
  // --- population -----------------------------------------------------------------------
  std::atomic<int> created{0};    ///< connections the factory returned
  std::atomic<int> closed{0};     ///< close() calls, including those that threw
  std::atomic<int> destroyed{0};  ///< connection objects destroyed (moved-from ones excepted)
  std::atomic<int> live{0};       ///< open now: created, and neither closed nor destroyed
  std::atomic<int> max_live{0};   ///< the highest `live` ever observed
  std::atomic<int> next_id{1};    ///< id of the next connection; ids start at 1

  // --- misuse the pool must never commit ------------------------------------------------
  std::atomic<int> double_holds{0};   ///< two holders inside one connection at once
  std::atomic<int> double_closes{0};  ///< close() called again on a closed connection
  std::atomic<int> used_closed{0};    ///< ping/reset/hold on a closed connection

  // --- factory --------------------------------------------------------------------------
  std::atomic<int> factory_calls{0};
  std::atomic<int> factory_failures{0};       ///< calls that threw FactoryError
  std::atomic<bool> factory_fails{false};     ///< every call throws FactoryError
  std::atomic<int> factory_failures_left{0};  ///< the next N calls throw FactoryError
  std::atomic<int> factory_error_code{42};    ///< FactoryError::code of those throws

  // --- ping ---------------------------------------------------------------------------
  std::atomic<int> pings{0};
  std::atomic<int> ping_failures_left{0};  ///< the next N pings return false
  std::atomic<int> ping_throws_left{0};    ///< the next N pings throw FakeConnError

  // --- close --------------------------------------------------------------------------
  std::atomic<bool> close_throws{false};  ///< close() counts, then throws FakeConnError

  // --- reset --------------------------------------------------------------------------
  std::atomic<int> resets{0};
  std::atomic<bool> reset_throws{false};

  // --- hooks: set them before the pool is built; each runs inside the fake's call, in the
  // thread the pool calls from. Used to block a callback and look at the pool meanwhile.
  std::function<void()> on_create;  ///< at the start of every factory call
  std::function<void()> on_ping;    ///< at the start of every ping
  std::function<void()> on_close;   ///< at the start of every close
  std::function<void()> on_reset;   ///< at the start of every reset

  void note_open() noexcept {
    created.fetch_add(1);
    const int now = live.fetch_add(1) + 1;
    int seen = max_live.load();
    while (seen < now && !max_live.compare_exchange_weak(seen, now)) {
    }
  }
};

/// A fake connection: value type, movable, Closeable + Pingable + Resettable.
class FakeConn {
 public:
  explicit FakeConn(FakeState& state)
      : state_(&state),
        id_(state.next_id.fetch_add(1)),
        holders_(std::make_unique<std::atomic<int>>(0)) {
    state.note_open();
  }

  FakeConn(FakeConn&& other) noexcept
      : ping_result(other.ping_result),
        reset_count(other.reset_count),
        state_(std::exchange(other.state_, nullptr)),
        id_(std::exchange(other.id_, 0)),
        holders_(std::move(other.holders_)),
        closed_(other.closed_) {}

  FakeConn& operator=(FakeConn&& other) noexcept {
    if (this != &other) {
      finish();
      state_ = std::exchange(other.state_, nullptr);
      id_ = std::exchange(other.id_, 0);
      holders_ = std::move(other.holders_);
      closed_ = other.closed_;
      ping_result = other.ping_result;
      reset_count = other.reset_count;
    }
    return *this;
  }

  FakeConn(const FakeConn&) = delete;
  FakeConn& operator=(const FakeConn&) = delete;

  ~FakeConn() { finish(); }

  /// 1, 2, 3, ... in creation order; 0 for a moved-from object.
  [[nodiscard]] int id() const noexcept { return id_; }
  [[nodiscard]] bool is_closed() const noexcept { return closed_; }
  [[nodiscard]] FakeState& state() const noexcept { return *state_; }

  void close() {
    if (state_->on_close) {
      state_->on_close();
    }
    state_->closed.fetch_add(1);
    if (closed_) {
      state_->double_closes.fetch_add(1);
    } else {
      closed_ = true;
      state_->live.fetch_sub(1);
    }
    if (state_->close_throws.load()) {
      throw FakeConnError("fake close failed");
    }
  }

  bool ping() {
    if (state_->on_ping) {
      state_->on_ping();
    }
    state_->pings.fetch_add(1);
    check_open();
    if (ping_result == PingResult::throws || take_one(state_->ping_throws_left)) {
      throw FakeConnError("fake ping failed");
    }
    if (ping_result == PingResult::fail || take_one(state_->ping_failures_left)) {
      return false;
    }
    return true;
  }

  void reset() {
    if (state_->on_reset) {
      state_->on_reset();
    }
    state_->resets.fetch_add(1);
    ++reset_count;
    check_open();
    if (state_->reset_throws.load()) {
      throw FakeConnError("fake reset failed");
    }
  }

  /// Marks this connection as held until the guard dies; two guards at once on one connection
  /// count a double hold. Destroy the guard before giving the handle back.
  class Hold {
   public:
    explicit Hold(FakeConn& c) : conn_(&c) {
      c.check_open();
      if (c.holders_->fetch_add(1) != 0) {
        c.state_->double_holds.fetch_add(1);
      }
    }
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;
    ~Hold() { conn_->holders_->fetch_sub(1); }

   private:
    FakeConn* conn_;
  };

  [[nodiscard]] Hold hold() { return Hold(*this); }

  /// How this connection's ping answers (on top of the FakeState counters).
  PingResult ping_result = PingResult::ok;

  /// reset() calls on this connection.
  int reset_count = 0;

 private:
  void check_open() noexcept {
    if (closed_) {
      state_->used_closed.fetch_add(1);
    }
  }

  void finish() noexcept {
    if (state_ != nullptr) {
      state_->destroyed.fetch_add(1);
      if (!closed_) {
        state_->live.fetch_sub(1);
      }
      state_ = nullptr;
    }
  }

  FakeState* state_;
  int id_;
  std::unique_ptr<std::atomic<int>> holders_;  // holders inside this connection now
  bool closed_ = false;
};

/// The factory: makes a FakeConn, or throws FactoryError when the FakeState says so.
class FakeFactory {
 public:
  explicit FakeFactory(FakeState& state) noexcept : state_(&state) {}

  FakeConn operator()() const {
    state_->factory_calls.fetch_add(1);
    if (state_->on_create) {
      state_->on_create();
    }
    if (state_->factory_fails.load() || take_one(state_->factory_failures_left)) {
      state_->factory_failures.fetch_add(1);
      throw FactoryError(state_->factory_error_code.load());
    }
    return FakeConn(*state_);
  }

 private:
  FakeState* state_;
};

}  // namespace connpool_test
