// connpool - Task<T>, a lazy coroutine with symmetric transfer
// SPDX-License-Identifier: MIT
#pragma once

// Task<T> is the coroutine type of connpool's asynchronous API: an asynchronous connection
// factory returns Task<Conn>. It has no scheduler and no thread of its own: it runs when awaited
// and hands control back to its awaiter when it finishes. The Awaitable concept and
// detail::sync_wait (which runs an awaitable from a thread that is not a coroutine) are in
// <connpool/detail/awaitable.hpp>.

#include <coroutine>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include <connpool/detail/awaitable.hpp>

namespace connpool {

template <class T = void>
class [[nodiscard]] Task;

namespace detail {

/// What the promise of every Task<T> has, whatever T: the awaiting coroutine to resume at the
/// end, and whether the task has been awaited.
class TaskPromiseBase {
 public:
  /// Why: a lazy task needs no synchronisation between its body finishing and its awaiter
  /// registering as the continuation (an eager task has to race the two on an atomic), and a
  /// Task that is never awaited never runs (cppcoro::task, folly::coro::Task).
  std::suspend_always initial_suspend() noexcept { return {}; }

  /// Transfers to the awaiting coroutine (symmetric transfer).
  struct FinalAwaiter {
    bool await_ready() const noexcept { return false; }
    template <class Promise>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> self) const noexcept {
      return self.promise().continuation_;
    }
    void await_resume() const noexcept {}
  };

  FinalAwaiter final_suspend() noexcept { return {}; }

  void set_continuation(std::coroutine_handle<> awaiting) noexcept { continuation_ = awaiting; }

  /// Records that the task is being awaited; returns whether it had been already.
  bool mark_awaited() noexcept { return std::exchange(awaited_, true); }

 private:
  // No awaiter: the final transfer goes nowhere and the resume() that ran the body returns.
  std::coroutine_handle<> continuation_ = std::noop_coroutine();
  bool awaited_ = false;
};

template <class T>
class TaskPromise : public TaskPromiseBase, public CoroutineResult<T> {
 public:
  Task<T> get_return_object() noexcept;
};

}  // namespace detail

/// A lazy coroutine that produces a `T`: `co_await task` runs the body and yields its result.
///
/// A function returning Task<T> is a coroutine; calling it allocates the frame, copies the
/// arguments into it and returns without running any of the body. `co_await` starts the body in
/// the awaiting thread, inside the co_await; the awaiting coroutine suspends and is resumed when
/// the body finishes, with the value of its `co_return` (moved out; for a `T&`, the referent it
/// returned) or with the exception that escaped it, rethrown at the co_await. `co_await task`
/// and `co_await std::move(task)` behave the same. A task can be awaited once.
///
/// Both transfers of control, into the body and back to the awaiter, are symmetric transfers:
/// await_suspend returns the coroutine to resume instead of calling resume(), so the stack
/// does not grow however many tasks a loop awaits, even when each finishes at once.
/// Why: resuming with handle.resume() inside await_suspend nests two stack frames per
/// co_await until the body suspends, and a loop of tasks that complete synchronously
/// overflows the stack (P0913R1, "Add symmetric coroutine control transfer"; cppcoro::task).
/// Compiler limitation: g++ 12 makes the transfer a tail call only with
/// -foptimize-sibling-calls (on at -O2 and -Os) and without sanitizers (GCC PR c++/100897), so
/// in -O0, -O1, -Og and sanitizer builds of g++ each task that completes synchronously still
/// costs stack frames until the loop's coroutine suspends. clang makes it at every level.
///
/// `T` is void, a movable type (move-only types such as std::unique_ptr<int> included), or an
/// lvalue reference. A Task<T&> (const T& included) must `co_return` an lvalue that the
/// reference binds to directly and that outlives the task: `co_return 42;` in a
/// Task<const int&>, `co_return "literal";` in a Task<const std::string&> (a temporary
/// std::string), or `co_return x;` of a local or by-value parameter would hand the awaiter a
/// dangling reference, and does not compile (a deleted `return_value`; see
/// detail::BindsWithoutTemporary).
///
/// Throws: from `co_await`: std::logic_error if the task is empty (default-constructed or
/// moved-from) or was awaited before, checked before anything is resumed; otherwise whatever
/// the body throws.
/// Thread safety: a Task is used by one thread at a time; it may be moved to another thread
/// before it is awaited. Different tasks may run concurrently.
/// Lifetime: the Task owns the frame, and its destructor destroys it (with the parameter
/// copies, and the locals of a body that has started; a body that never ran constructed none).
/// The Task must outlive its co_await, as a temporary `co_await f()` does. A lazy body runs
/// after the call returns: reference parameters must still be alive when it is awaited.
/// Complexity: one frame allocation per call (which the compiler may elide); awaiting does not
/// allocate.
/// Resumes on: the awaiting coroutine always suspends at the co_await (the body has not run
/// yet) and is resumed inside the call that completes the body, on that thread: the thread that
/// resumed the body's last suspension point (an I/O thread, say), or the awaiting thread
/// itself, within the same co_await, when the body never suspends.
/// Example:
///     connpool::Task<Db> open_db(std::string url) {
///       Socket s = co_await async_connect(url);  // any awaitable
///       co_return Db{std::move(s)};
///     }
///     connpool::Task<> work() {
///       Db db = co_await open_db("postgres://db.example/app");
///     }
template <class T>
class [[nodiscard]] Task {
 public:
  using promise_type = detail::TaskPromise<T>;
  using value_type = T;

  /// An empty task: it holds no coroutine, and awaiting it throws std::logic_error.
  Task() noexcept = default;

  Task(Task&& other) noexcept : coro_(std::exchange(other.coro_, nullptr)) {}

  /// Destroys the frame this task holds (if any), then takes over `other`'s.
  Task& operator=(Task&& other) noexcept {
    if (this != &other) {
      destroy();
      coro_ = std::exchange(other.coro_, nullptr);
    }
    return *this;
  }

  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;

  ~Task() { destroy(); }

  /// Whether the task holds a coroutine (false when default-constructed or moved-from).
  explicit operator bool() const noexcept { return static_cast<bool>(coro_); }

  /// Whether the body has finished (returned or thrown). False for an empty task, and for a
  /// task that has not been awaited (a lazy body has not run).
  [[nodiscard]] bool done() const noexcept { return coro_ && coro_.done(); }

  /// What `co_await` uses: the body runs, then the awaiter resumes with its result.
  ///
  /// Throws: std::logic_error if the task is empty or was awaited before.
  auto operator co_await() {
    if (!coro_) {
      throw std::logic_error(
          "connpool: co_await on an empty Task (default-constructed or moved-from)");
    }
    if (coro_.promise().mark_awaited()) {
      throw std::logic_error(
          "connpool: co_await on a Task that was already awaited (a Task can be awaited once)");
    }
    return Awaiter{coro_};
  }

 private:
  friend class detail::TaskPromise<T>;

  class Awaiter {
   public:
    explicit Awaiter(std::coroutine_handle<promise_type> coro) noexcept : coro_(coro) {}

    // The body has not started (the task is lazy), so the awaiter always suspends.
    bool await_ready() const noexcept { return false; }

    std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiting) noexcept {
      coro_.promise().set_continuation(awaiting);
      return coro_;
    }

    T await_resume() { return coro_.promise().take(); }

   private:
    std::coroutine_handle<promise_type> coro_;
  };

  explicit Task(std::coroutine_handle<promise_type> coro) noexcept : coro_(coro) {}

  void destroy() noexcept {
    if (coro_) {
      std::exchange(coro_, nullptr).destroy();
    }
  }

  std::coroutine_handle<promise_type> coro_;
};

namespace detail {

template <class T>
Task<T> TaskPromise<T>::get_return_object() noexcept {
  return Task<T>(std::coroutine_handle<TaskPromise>::from_promise(*this));
}

}  // namespace detail
}  // namespace connpool
