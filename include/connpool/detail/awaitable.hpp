// connpool - the Awaitable concept, await_result_t and sync_wait
// SPDX-License-Identifier: MIT
#pragma once

// The public concept Awaitable (anything `co_await` accepts in a coroutine without an
// await_transform), and in namespace detail: get_awaiter, await_result_t, the result slot that
// Task and sync_wait share, and sync_wait, which blocks a thread that is not a coroutine until
// an awaitable completes. Task<T> itself is in <connpool/task.hpp>.

#include <concepts>
#include <condition_variable>
#include <coroutine>
#include <exception>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>
#include <variant>

// Workaround for clang 14 (llvm/llvm-project#49689): with -fsanitize=function, which
// -fsanitize=undefined includes, a coroutine emitted in a section of its own (a template or
// inline coroutine) fails to compile with "Cannot represent a difference across sections".
// Exempting the coroutine from that one check avoids it; the check only concerns calls through
// a function pointer of the wrong type, which a coroutine's resume never is. User coroutines
// that are templates or inline need the same attribute, or -fno-sanitize=function.
#if defined(__clang__)
#define CONNPOOL_CORO_NO_SANITIZE_FUNCTION __attribute__((no_sanitize("function")))
#else
#define CONNPOOL_CORO_NO_SANITIZE_FUNCTION
#endif

namespace connpool {

namespace detail {

template <class T>
struct IsCoroutineHandle : std::false_type {};
template <class P>
struct IsCoroutineHandle<std::coroutine_handle<P>> : std::true_type {};

/// The three return types the language allows for `await_suspend`.
template <class T>
concept AwaitSuspendResult =
    std::is_void_v<T> || std::same_as<T, bool> || IsCoroutineHandle<T>::value;

/// An awaiter: the object whose await_ready/await_suspend/await_resume a `co_await` calls.
/// await_suspend is checked with std::coroutine_handle<>, so an awaiter that accepts only the
/// handle of one promise type does not qualify.
template <class A>
concept Awaiter = requires(A& a, std::coroutine_handle<> h) {
  { a.await_ready() } -> std::convertible_to<bool>;
  { a.await_suspend(h) } -> AwaitSuspendResult;
  a.await_resume();
};

template <class A>
concept HasMemberCoAwait = requires(A&& a) {
  { static_cast<A&&>(a).operator co_await() } -> Awaiter;
};

template <class A>
concept HasFreeCoAwait = requires(A&& a) {
  { operator co_await(static_cast<A&&>(a)) } -> Awaiter;
};

}  // namespace detail

/// A type that `co_await` accepts (in a coroutine whose promise has no await_transform): an
/// awaiter itself, or a type with a member or free `operator co_await` that returns an awaiter.
///
/// `A` may be a reference type: Awaitable<Task<int>&> asks whether an lvalue can be awaited.
/// Example:
///     static_assert(connpool::Awaitable<connpool::Task<int>>);
///     static_assert(connpool::Awaitable<std::suspend_always>);
template <class A>
concept Awaitable = detail::HasMemberCoAwait<A> || detail::HasFreeCoAwait<A> || detail::Awaiter<A>;

namespace detail {

/// The awaiter that `co_await std::forward<A>(a)` uses: the result of the member
/// `operator co_await`, else of the free one, else `a` itself (forwarded, not copied).
template <Awaitable A>
decltype(auto) get_awaiter(A&& awaitable) {
  if constexpr (HasMemberCoAwait<A>) {
    return static_cast<A&&>(awaitable).operator co_await();
  } else if constexpr (HasFreeCoAwait<A>) {
    return operator co_await(static_cast<A&&>(awaitable));
  } else {
    return static_cast<A&&>(awaitable);
  }
}

/// The type of `co_await std::declval<A>()`: what the awaiter's await_resume returns. The
/// language calls await_resume on the awaiter as an lvalue, and so does this.
template <Awaitable A>
using await_result_t =
    decltype(std::declval<std::add_lvalue_reference_t<decltype(get_awaiter(std::declval<A>()))>>()
                 .await_resume());

/// Whether `co_return` of an expression of type `Arg` (an lvalue when `Arg` is an lvalue
/// reference, an rvalue otherwise) may initialise the lvalue reference `Ref` that a coroutine
/// hands back: only when the expression is an lvalue that `Ref` binds to directly, so that the
/// referent is not a temporary that dies at the end of the co_return.
///
/// Rejected: an rvalue (a temporary such as `42`; a local of the coroutine or a by-value
/// parameter, which `co_return x;` tries as an rvalue first and which die with the frame; an
/// xvalue too, which return_value cannot tell from a temporary), and an lvalue that converts to
/// the referenced type through a temporary (a string literal for a const std::string&, an int for
/// a const long&). For an lvalue this is C++23's !std::reference_converts_from_temporary, by hand
/// for C++20: the lvalue binds directly when its type is reference-compatible with the referenced
/// type (the same type, or a class derived from it, no less cv-qualified), or when the reference
/// cannot bind a temporary at all (its referenced type is not const, or is volatile).
/// Conservative for a class whose conversion function returns a `const R&`: rejected although it
/// binds without a temporary; `co_return x.get();` (or the like) says the same directly.
template <class Ref, class Arg>
concept BindsWithoutTemporary = std::is_lvalue_reference_v<Ref> &&
    std::is_lvalue_reference_v<Arg> && std::is_convertible_v<Arg, Ref> &&
    (std::is_convertible_v<std::remove_reference_t<Arg>*, std::remove_reference_t<Ref>*> ||
     !std::is_const_v<std::remove_reference_t<Ref>> ||
     std::is_volatile_v<std::remove_reference_t<Ref>>);

/// Whether `co_return` of an `Arg` to the lvalue reference `Ref` is rejected because it would
/// dangle: `Ref` would accept an lvalue of that type, but this expression binds it to a
/// temporary or is an rvalue (see BindsWithoutTemporary).
template <class Ref, class Arg>
concept WouldDangle = std::is_lvalue_reference_v<Ref> && !BindsWithoutTemporary<Ref, Arg> &&
                      std::is_convertible_v<std::remove_reference_t<Arg>&, Ref>;

/// Whether `co_return` of an `Arg` initialises the result `T` of a coroutine that produces a
/// value (not a reference).
template <class T, class Arg>
concept InitialisesValue = !std::is_reference_v<T> && std::constructible_from<T, Arg>;

/// Where a coroutine's promise keeps what the body produced: nothing yet, the value given to
/// `co_return` (a pointer for a T&), or the exception that escaped the body. The promise types
/// of Task and sync_wait derive from it, which gives them return_value and unhandled_exception.
template <class T>
class CoroutineResult {
  static_assert(!std::is_rvalue_reference_v<T>, "connpool: a coroutine cannot produce a T&&");
  static_assert(std::is_lvalue_reference_v<T> || std::move_constructible<T>,
                "connpool: a coroutine's result must be void, a T& or a movable type");

 public:
  /// `co_return value;` for a value T: the result is initialised from `value`.
  template <class U = T>
  requires InitialisesValue<T, U&&>
  void return_value(U&& value) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
    state_.template emplace<1>(static_cast<U&&>(value));
  }

  /// `co_return x;` for a T&: the result refers to the lvalue `x`, which must outlive the
  /// awaiter's use of the result.
  template <class U>
  requires BindsWithoutTemporary<T, U>
  void return_value(U&& value) noexcept {
    T ref = value;
    state_.template emplace<1>(std::addressof(ref));
  }

  /// `co_return` for a T& of an rvalue, or of an lvalue that T binds only through a temporary,
  /// does not compile: the reference would dangle once the co_return's full-expression (or the
  /// frame) is gone, just as `const int& f() { return 42; }` is ill-formed since C++26 (P2748)
  /// and `int& f() { int x = 0; return x; }` since C++23 (P2266). Co_return an lvalue that
  /// outlives the task, or make the task produce a value (Task<std::string>, not
  /// Task<const std::string&>).
  /// Why deleted rather than a static_assert: requires-expressions see that the co_return is
  /// invalid, and the diagnostic still names return_value and points here.
  template <class U>
  requires WouldDangle<T, U>
  void return_value(U&& value_that_would_dangle) = delete;

  void unhandled_exception() noexcept { state_.template emplace<2>(std::current_exception()); }

  /// The result: the value moved out (the referent for a T&), or the body's exception
  /// rethrown. Preconditions: the body has finished, and take() has not been called before.
  T take() {
    if (state_.index() == 2) {
      std::rethrow_exception(std::get<2>(state_));
    }
    if constexpr (std::is_lvalue_reference_v<T>) {
      return *std::get<1>(state_);
    } else {
      return std::move(std::get<1>(state_));
    }
  }

 private:
  using Stored = std::conditional_t<std::is_lvalue_reference_v<T>,
                                    std::add_pointer_t<std::remove_reference_t<T>>,
                                    T>;

  // By index, never by type: Stored may itself be std::exception_ptr.
  std::variant<std::monostate, Stored, std::exception_ptr> state_;
};

template <>
class CoroutineResult<void> {
 public:
  void return_void() noexcept {}

  void unhandled_exception() noexcept { exception_ = std::current_exception(); }

  /// Rethrows the body's exception, if one escaped it. Precondition: the body has finished.
  void take() const {
    if (exception_) {
      std::rethrow_exception(exception_);
    }
  }

 private:
  std::exception_ptr exception_;
};

/// A flag that one thread sets once and another waits for.
class SyncWaitEvent {
 public:
  /// Sets the flag and wakes the waiter.
  ///
  /// Why: notify_one() runs under the lock. The waiter destroys this event as soon as wait()
  /// returns; were the lock released before notifying, the waiter could see the flag, return and
  /// destroy the condition variable while set() still uses it.
  void set() noexcept {
    const std::lock_guard lock(mutex_);
    set_ = true;
    cv_.notify_one();
  }

  /// Blocks until set() has been called.
  void wait() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return set_; });
  }

 private:
  std::mutex mutex_;  // guards set_
  std::condition_variable cv_;
  bool set_ = false;
};

/// What sync_wait returns for an awaitable whose await_resume returns `R`: `R` itself for an
/// lvalue reference, otherwise the value without reference or cv-qualifiers (an rvalue
/// reference may point into the awaiter, which is gone by the time sync_wait returns).
template <class R>
using sync_wait_result_t =
    std::conditional_t<std::is_lvalue_reference_v<R>, R, std::remove_cvref_t<R>>;

/// The coroutine that sync_wait runs: it awaits the awaitable, keeps the result and, at its
/// final suspension point, sets the event that sync_wait is blocked on.
template <class R>
class SyncWaitTask {
 public:
  class promise_type : public CoroutineResult<R> {
   public:
    SyncWaitTask get_return_object() noexcept {
      return SyncWaitTask(std::coroutine_handle<promise_type>::from_promise(*this));
    }

    std::suspend_always initial_suspend() noexcept { return {}; }

    /// Why: once the event is set, the blocked thread may destroy this frame (and with it this
    /// awaiter) at any moment, so await_suspend touches nothing after set() and returns void:
    /// the completing thread leaves the frame alone (cppcoro's sync_wait_task does the same).
    struct FinalAwaiter {
      bool await_ready() const noexcept { return false; }
      void await_suspend(std::coroutine_handle<promise_type> self) const noexcept {
        self.promise().event_->set();
      }
      void await_resume() const noexcept {}
    };

    FinalAwaiter final_suspend() noexcept { return {}; }

   private:
    friend class SyncWaitTask;
    SyncWaitEvent* event_ = nullptr;
  };

  SyncWaitTask(SyncWaitTask&& other) noexcept : coro_(std::exchange(other.coro_, nullptr)) {}
  SyncWaitTask(const SyncWaitTask&) = delete;
  SyncWaitTask& operator=(const SyncWaitTask&) = delete;
  SyncWaitTask& operator=(SyncWaitTask&&) = delete;

  ~SyncWaitTask() {
    if (coro_) {
      coro_.destroy();
    }
  }

  /// Runs the coroutine in the calling thread until its first suspension, then blocks until it
  /// has finished (possibly in another thread), and returns its result.
  R run() {
    SyncWaitEvent event;
    coro_.promise().event_ = &event;
    coro_.resume();
    event.wait();
    return coro_.promise().take();
  }

 private:
  explicit SyncWaitTask(std::coroutine_handle<promise_type> coro) noexcept : coro_(coro) {}

  std::coroutine_handle<promise_type> coro_;
};

// `awaitable` is a reference parameter: it stays in the frame of sync_wait, which outlives the
// coroutine.
template <class R, class A>
CONNPOOL_CORO_NO_SANITIZE_FUNCTION SyncWaitTask<R> make_sync_wait_task(A&& awaitable) {
  if constexpr (std::is_void_v<R>) {
    co_await static_cast<A&&>(awaitable);
  } else {
    co_return co_await static_cast<A&&>(awaitable);
  }
}

/// Blocks the calling thread until `awaitable` completes, and returns its result.
///
/// For a thread that is not a coroutine (the pool's warm-up, its background refill) to run an
/// awaitable such as a user's Task<Conn> factory. The awaitable starts in the calling thread; if
/// it suspends, the thread blocks until whichever thread resumes it has run it to completion.
///
/// Preconditions: the awaitable does not need the blocked thread to make progress (it must
/// not, say, wait for an event loop that only this thread runs): it would deadlock.
/// Returns: the result of `co_await awaitable`: by value (moved out), a T& as a reference, or
/// nothing for void (see sync_wait_result_t).
/// Throws: whatever the await throws, rethrown in the calling thread.
/// Thread safety: the awaitable may complete on any thread; its result and its side effects are
/// visible to the calling thread when sync_wait returns or throws.
/// Lifetime: `awaitable` is used by reference; it lives until sync_wait returns.
/// Complexity: one coroutine frame allocation, besides what the awaitable does.
/// Example:
///     connpool::Task<Db> open_db();
///     Db db = connpool::detail::sync_wait(open_db());
template <Awaitable A>
auto sync_wait(A&& awaitable) -> sync_wait_result_t<await_result_t<A>> {
  using R = sync_wait_result_t<await_result_t<A>>;
  return make_sync_wait_task<R>(static_cast<A&&>(awaitable)).run();
}

}  // namespace detail
}  // namespace connpool
