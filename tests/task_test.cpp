// connpool - tests: Task<T>, the Awaitable concept and detail::sync_wait
// SPDX-License-Identifier: MIT

#include <coroutine>
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>

#include <connpool/detail/awaitable.hpp>
#include <connpool/task.hpp>

#include "catch.hpp"
#include "sync.hpp"

using connpool::Awaitable;
using connpool::Task;
using connpool::detail::await_result_t;
using connpool::detail::sync_wait;

namespace {

// --- Types for the Awaitable truth table ------------------------------------------------------

struct MemberCoAwait {
  std::suspend_never operator co_await() const noexcept { return {}; }
};

struct FreeCoAwait {};
std::suspend_never operator co_await(FreeCoAwait /*unused*/) noexcept {
  return {};
}

/// An awaiter whose await_suspend returns a coroutine handle (symmetric transfer).
struct TransferringAwaiter {
  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) const noexcept { return h; }
  int await_resume() const noexcept { return 7; }
};

/// Near miss: await_suspend returns a type the language does not allow.
struct SuspendReturnsInt {
  bool await_ready() const noexcept { return false; }
  int await_suspend(std::coroutine_handle<> /*unused*/) const noexcept { return 0; }
  void await_resume() const noexcept {}
};

/// Near miss: no await_resume.
struct NoAwaitResume {
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> /*unused*/) const noexcept {}
};

/// Near miss: operator co_await returns something that is not an awaiter.
struct CoAwaitReturnsInt {
  int operator co_await() const noexcept { return 0; }
};

}  // namespace

// Awaitable: an awaiter, or a type with a member or free operator co_await that returns one.
static_assert(Awaitable<Task<int>>);
static_assert(Awaitable<Task<int>&>);
static_assert(Awaitable<Task<>>);
static_assert(Awaitable<std::suspend_always>);
static_assert(Awaitable<std::suspend_never&>);
static_assert(Awaitable<MemberCoAwait>);
static_assert(Awaitable<FreeCoAwait>);
static_assert(Awaitable<TransferringAwaiter>);
static_assert(!Awaitable<int>);
static_assert(!Awaitable<int*>);
static_assert(!Awaitable<SuspendReturnsInt>);
static_assert(!Awaitable<NoAwaitResume>);
static_assert(!Awaitable<CoAwaitReturnsInt>);
static_assert(!Awaitable<const Task<int>&>);  // awaiting consumes the task: not through const

// await_result_t is the type of `co_await std::declval<A>()`.
static_assert(std::is_same_v<await_result_t<Task<int>>, int>);
static_assert(std::is_same_v<await_result_t<Task<int>&>, int>);
static_assert(std::is_same_v<await_result_t<Task<int&>>, int&>);
static_assert(std::is_same_v<await_result_t<Task<>>, void>);
static_assert(std::is_same_v<await_result_t<Task<std::unique_ptr<int>>>, std::unique_ptr<int>>);
static_assert(std::is_same_v<await_result_t<std::suspend_always>, void>);
static_assert(std::is_same_v<await_result_t<TransferringAwaiter>, int>);
static_assert(std::is_same_v<await_result_t<MemberCoAwait>, void>);

// sync_wait returns by value, except that a T& stays a reference.
static_assert(std::is_same_v<decltype(sync_wait(std::declval<Task<int>>())), int>);
static_assert(std::is_same_v<decltype(sync_wait(std::declval<Task<int&>>())), int&>);
static_assert(std::is_same_v<decltype(sync_wait(std::declval<Task<>>())), void>);

namespace {

struct Base {
  int id = 0;
};
struct Derived : Base {};

/// Whether a Task<T>'s body may `co_return` an expression of type `Arg` (an lvalue when `Arg` is
/// an lvalue reference, otherwise an rvalue).
template <class T, class Arg>
concept CanCoReturn = requires(typename Task<T>::promise_type& promise, Arg&& arg) {
  promise.return_value(static_cast<Arg&&>(arg));
};

}  // namespace

// A Task<T&> co_returns an lvalue that T binds to directly; a value that T would bind through a
// temporary would dangle once the body ends, and does not compile.
static_assert(CanCoReturn<const int&, int&>);
static_assert(CanCoReturn<const int&, const int&>);
static_assert(CanCoReturn<int&, int&>);
static_assert(CanCoReturn<const std::string&, std::string&>);
static_assert(CanCoReturn<const Base&, Derived&>);  // derived to base: no temporary
static_assert(CanCoReturn<Base&, Derived&>);
static_assert(!CanCoReturn<const int&, int>);  // `co_return 42;`, and a local (moved from)
static_assert(!CanCoReturn<const std::string&, std::string>);
static_assert(!CanCoReturn<const std::string&, const char (&)[8]>);  // `co_return "literal";`
static_assert(!CanCoReturn<const long&, int&>);  // converts through a temporary long
static_assert(!CanCoReturn<const Base&, Derived>);
static_assert(!CanCoReturn<int&, int>);
static_assert(!CanCoReturn<int&, const int&>);  // would drop const
static_assert(!CanCoReturn<int&, long&>);
// A Task<T> of a value type takes whatever initialises a T.
static_assert(CanCoReturn<int, int>);
static_assert(CanCoReturn<int, const int&>);
static_assert(CanCoReturn<std::string, const char (&)[8]>);
static_assert(CanCoReturn<std::unique_ptr<int>, std::unique_ptr<int>>);
static_assert(!CanCoReturn<std::unique_ptr<int>, std::unique_ptr<int>&>);  // no copy

// Task is move-only and converts to bool only explicitly.
static_assert(!std::is_copy_constructible_v<Task<int>>);
static_assert(!std::is_copy_assignable_v<Task<int>>);
static_assert(std::is_nothrow_move_constructible_v<Task<int>>);
static_assert(std::is_nothrow_move_assignable_v<Task<int>>);
static_assert(std::is_nothrow_default_constructible_v<Task<int>>);
static_assert(std::is_constructible_v<bool, Task<int>>);
static_assert(!std::is_convertible_v<Task<int>, bool>);
static_assert(std::is_same_v<Task<>, Task<void>>);

namespace {

std::thread::id read_thread_id() {
  return std::this_thread::get_id();
}

/// The calling thread's id, read afresh even inside a coroutine.
/// Why: clang 14 at -O2 reuses the result of pthread_self(), which glibc declares `const`,
/// across a suspension point, so a coroutine resumed on another thread would see the old id
/// (llvm/llvm-project#47177). A call through a volatile pointer cannot be merged.
std::thread::id (*volatile const current_thread_id)() = &read_thread_id;

Task<int> answer() {
  co_return 42;
}

Task<int> one() {
  co_return 1;
}

Task<int> record_run(bool& ran, std::thread::id& ran_on) {
  ran = true;
  ran_on = current_thread_id();
  co_return 1;
}

Task<> increment(int& counter) {
  ++counter;
  co_return;
}

Task<std::string> concat(std::string a, std::string b) {
  co_return a + b;
}

Task<std::unique_ptr<int>> make_unique_int(int v) {
  co_return std::make_unique<int>(v);
}

Task<int&> pick(bool first, int& a, int& b) {
  if (first) {
    co_return a;
  }
  co_return b;
}

const int global_answer = 42;

Task<const int&> global_answer_ref() {
  co_return global_answer;
}

Task<const std::string&> longer_of(const std::string& a, const std::string& b) {
  co_return a.size() >= b.size() ? a : b;
}

Task<const Base&> as_base(const Derived& d) {
  co_return d;
}

Task<int> throws_runtime_error() {
  throw std::runtime_error("inner failed");
  co_return 0;  // makes this a coroutine
}

Task<int> adds_one_to(bool& continued) {
  const int v = co_await throws_runtime_error();
  continued = true;  // never reached: the exception leaves at the co_await above
  co_return v + 1;
}

Task<std::string> catches(bool& continued) {
  try {
    co_await adds_one_to(continued);
  } catch (const std::runtime_error& e) {
    co_return std::string("caught: ") + e.what();
  }
  co_return "no exception";
}

Task<> throws_logic_error() {
  throw std::logic_error("void task failed");
  co_return;
}

/// Counts constructions and destructions of the Counted objects that refer to it.
struct Tally {
  int constructed = 0;
  int destroyed = 0;
  [[nodiscard]] int alive() const { return constructed - destroyed; }
};

class Counted {
 public:
  explicit Counted(Tally& tally) : tally_(&tally) { ++tally_->constructed; }
  Counted(const Counted& other) : tally_(other.tally_) { ++tally_->constructed; }
  Counted(Counted&& other) noexcept : tally_(other.tally_) { ++tally_->constructed; }
  Counted& operator=(const Counted&) = delete;
  Counted& operator=(Counted&&) = delete;
  ~Counted() { ++tally_->destroyed; }

 private:
  Tally* tally_;
};

// `param` is copied into the frame; `local` exists only while the body runs.
Task<int> with_counted(Counted param, Tally* locals) {
  const Counted local(*locals);
  (void)param;
  co_return 7;
}

// How many tasks that complete at once the stack-growth test awaits in one loop: a million,
// whose stack frames, were they nested, would far exceed an 8 MiB stack. Except where g++ does not
// make the symmetric transfer a tail call: g++ 12 does so only with -foptimize-sibling-calls (on
// at -O2 and -Os, off at -O0, -O1 and -Og) and without sanitizers (GCC PR c++/100897). There each
// iteration costs roughly 100 bytes of stack, so the count is cut to one that fits. No macro tells
// -O1 or -Og from -O2: a g++ build at those levels overflows here.
#if defined(__GNUC__) && !defined(__clang__) && \
    (!defined(__OPTIMIZE__) || defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__))
constexpr int loop_count = 10'000;
#else
constexpr int loop_count = 1'000'000;
#endif

Task<long> sum_of_ones(int n) {
  long sum = 0;
  for (int i = 0; i < n; ++i) {
    sum += co_await one();
  }
  co_return sum;
}

Task<> increment_many(int n, int& counter) {
  for (int i = 0; i < n; ++i) {
    co_await increment(counter);
  }
}

/// A one-shot awaitable completed by another thread: the coroutine that awaits it stores its
/// handle and suspends; resume_with() resumes it, in the calling thread (cppcoro's tests drive
/// coroutines with such manual events).
class ManualEvent {
 public:
  class Awaiter {
   public:
    explicit Awaiter(ManualEvent& event) noexcept : event_(&event) {}
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> awaiting) {
      ManualEvent& event = *event_;
      event.awaiting_ = awaiting;
      // Last: from here on, the other thread may resume the coroutine and destroy this awaiter.
      event.suspended_.open();
    }
    int await_resume() const noexcept { return event_->value_; }

   private:
    ManualEvent* event_;
  };

  Awaiter operator co_await() noexcept { return Awaiter(*this); }

  /// Waits until a coroutine is suspended on the event, then resumes it in this thread with
  /// `value`; returns false (resuming nothing) if none suspends within the deadline.
  bool resume_with(int value) {
    if (!suspended_.wait()) {
      return false;
    }
    value_ = value;
    awaiting_.resume();
    return true;
  }

 private:
  connpool_test::Gate suspended_;
  std::coroutine_handle<> awaiting_;
  int value_ = 0;
};

struct ThreadRecord {
  std::thread::id before;
  std::thread::id after;
};

Task<int> await_event(ManualEvent& event, ThreadRecord& record) {
  record.before = current_thread_id();
  const int v = co_await event;
  record.after = current_thread_id();
  co_return v;
}

Task<int> await_event_twice_removed(ManualEvent& event, ThreadRecord& inner, ThreadRecord& outer) {
  outer.before = current_thread_id();
  const int v = co_await await_event(event, inner);
  outer.after = current_thread_id();
  co_return v + 1;
}

Task<int> await_twice(Task<int>& task, std::string& second_error) {
  const int first = co_await task;
  try {
    co_await task;
  } catch (const std::logic_error& e) {
    second_error = e.what();
  }
  co_return first;
}

}  // namespace

TEST_CASE("Task: the body does not run until the task is awaited", "[task]") {
  bool ran = false;
  std::thread::id ran_on;
  auto task = record_run(ran, ran_on);
  CHECK_FALSE(ran);
  CHECK(task);
  CHECK_FALSE(task.done());
  CHECK(sync_wait(task) == 1);
  CHECK(ran);
  CHECK(task.done());
  // The body starts in the awaiting thread, inside the co_await.
  CHECK(ran_on == current_thread_id());
}

TEST_CASE("Task: co_await yields the value of co_return", "[task]") {
  CHECK(sync_wait(answer()) == 42);
  CHECK(sync_wait(concat("conn", "pool")) == "connpool");

  SECTION("awaited as an lvalue, from another Task") {
    auto outer = []() -> Task<int> {
      auto inner = answer();
      const int v = co_await inner;
      co_return v + 1;
    };
    CHECK(sync_wait(outer()) == 43);
  }
  SECTION("awaited as an rvalue, from another Task") {
    auto outer = []() -> Task<std::string> {
      auto inner = concat("a", "b");
      co_return co_await std::move(inner) + "c";
    };
    CHECK(sync_wait(outer()) == "abc");
  }
}

TEST_CASE("Task: a Task<void> runs its body and yields nothing", "[task]") {
  int counter = 0;
  auto task = increment(counter);
  CHECK(counter == 0);
  sync_wait(task);
  CHECK(counter == 1);
  CHECK(task.done());

  auto outer = [](int& c) -> Task<> {
    co_await increment(c);
    co_await increment(c);
  };
  sync_wait(outer(counter));
  CHECK(counter == 3);
}

TEST_CASE("Task: a move-only value is moved out to the awaiter", "[task]") {
  std::unique_ptr<int> p = sync_wait(make_unique_int(5));
  REQUIRE(p != nullptr);
  CHECK(*p == 5);

  auto outer = []() -> Task<int> {
    std::unique_ptr<int> q = co_await make_unique_int(6);
    co_return *q * 2;
  };
  CHECK(sync_wait(outer()) == 12);
}

TEST_CASE("Task: a Task<T&> yields a reference to the object it returned", "[task]") {
  int a = 1;
  int b = 2;
  int& ra = sync_wait(pick(true, a, b));
  int& rb = sync_wait(pick(false, a, b));
  CHECK(&ra == &a);
  CHECK(&rb == &b);

  auto outer = [](int& x, int& y) -> Task<> {
    int& r = co_await pick(false, x, y);
    r = 20;
  };
  sync_wait(outer(a, b));
  CHECK(a == 1);
  CHECK(b == 20);
}

TEST_CASE("Task: a Task<const T&> yields a reference to the lvalue it returned", "[task]") {
  // Only an lvalue that the reference binds to directly compiles (see the CanCoReturn table
  // above): `co_return 42;` or `co_return "literal";` would hand back a dangling reference.
  const int& answer = sync_wait(global_answer_ref());
  CHECK(&answer == &global_answer);

  const std::string shorter = "ab";
  const std::string longer = "abc";
  const std::string& r = sync_wait(longer_of(shorter, longer));
  CHECK(&r == &longer);

  const Derived d{};
  const Base& b = sync_wait(as_base(d));
  CHECK(&b == static_cast<const Base*>(&d));

  auto outer = [](const std::string& x, const std::string& y) -> Task<std::size_t> {
    const std::string& s = co_await longer_of(x, y);
    co_return s.size();
  };
  CHECK(sync_wait(outer(longer, shorter)) == 3);
}

TEST_CASE("Task: an exception from the body is rethrown at the co_await, through two levels",
          "[task]") {
  bool continued = false;

  SECTION("caught by a coroutine two levels up") {
    CHECK(sync_wait(catches(continued)) == "caught: inner failed");
  }
  SECTION("rethrown by sync_wait") {
    REQUIRE_THROWS_WITH(sync_wait(adds_one_to(continued)), "inner failed");
    REQUIRE_THROWS_AS(sync_wait(adds_one_to(continued)), std::runtime_error);
  }
  SECTION("from a Task<void>") {
    REQUIRE_THROWS_AS(sync_wait(throws_logic_error()), std::logic_error);
    REQUIRE_THROWS_WITH(sync_wait(throws_logic_error()), "void task failed");
  }
  // The middle task stops at its co_await: nothing after it runs.
  CHECK_FALSE(continued);
}

TEST_CASE("Task: destroying a task that was never awaited destroys its frame unstarted", "[task]") {
  Tally params;
  Tally locals;
  {
    const Counted arg(params);
    {
      auto task = with_counted(arg, &locals);
      CHECK(params.alive() == 2);  // `arg` and the parameter copy in the frame
      CHECK(locals.constructed == 0);
    }
    CHECK(params.alive() == 1);  // the frame's copy is gone with the Task
    CHECK(locals.constructed == 0);
    CHECK(locals.destroyed == 0);
  }
  CHECK(params.alive() == 0);
}

TEST_CASE("Task: an awaited task destroys its locals at the end of the body, its frame with it",
          "[task]") {
  Tally params;
  Tally locals;
  const Counted arg(params);
  {
    auto task = with_counted(arg, &locals);
    CHECK(sync_wait(task) == 7);
    CHECK(locals.constructed == 1);
    CHECK(locals.alive() == 0);
    CHECK(params.alive() == 2);  // the frame, suspended at its end, still holds its copy
  }
  CHECK(params.alive() == 1);
}

TEST_CASE("Task: move assignment destroys the frame the target held", "[task]") {
  Tally params;
  Tally locals;
  const Counted arg(params);
  auto task = with_counted(arg, &locals);
  CHECK(params.alive() == 2);
  task = with_counted(arg, &locals);
  CHECK(params.alive() == 2);  // the first frame is gone, the second holds a copy
  auto other = std::move(task);
  CHECK_FALSE(task);  // NOLINT(bugprone-use-after-move): testing the moved-from state
  CHECK(other);
  task = std::move(other);
  CHECK(task);
  CHECK(params.alive() == 2);
  task = Task<int>{};
  CHECK_FALSE(task);
  CHECK(params.alive() == 1);
  CHECK(locals.constructed == 0);
}

TEST_CASE("Task: a loop awaiting tasks that complete at once does not grow the stack", "[task]") {
  // Without symmetric transfer each iteration would nest two stack frames (the awaiter resuming
  // the task, the task resuming the awaiter): millions of frames, far beyond an 8 MiB stack.
  constexpr int n = loop_count;
  CHECK(sync_wait(sum_of_ones(n)) == n);

  int counter = 0;
  sync_wait(increment_many(n, counter));
  CHECK(counter == n);
}

TEST_CASE("sync_wait: returns the value, returns for void, rethrows the exception", "[task]") {
  CHECK(sync_wait(answer()) == 42);
  int counter = 0;
  sync_wait(increment(counter));
  CHECK(counter == 1);
  REQUIRE_THROWS_WITH(sync_wait(throws_runtime_error()), "inner failed");

  // Any awaitable, not only a Task.
  sync_wait(std::suspend_never{});
  sync_wait(MemberCoAwait{});
  sync_wait(FreeCoAwait{});
  CHECK(sync_wait(TransferringAwaiter{}) == 7);
}

TEST_CASE("sync_wait: blocks until another thread completes the awaitable", "[task]") {
  ManualEvent event;
  bool resumed = false;
  std::thread::id resumer_id;
  std::thread resumer([&] {
    resumer_id = current_thread_id();
    resumed = event.resume_with(42);
  });
  const std::thread::id resumer_handle_id = resumer.get_id();

  SECTION("the awaitable itself") {
    CHECK(sync_wait(event) == 42);
  }
  SECTION("a Task awaiting it: the task continues on the resuming thread") {
    ThreadRecord record;
    CHECK(sync_wait(await_event(event, record)) == 42);
    CHECK(record.before == current_thread_id());
    CHECK(record.after == resumer_handle_id);
  }
  SECTION("two levels of Tasks: each awaiter resumes on the thread that completed its task") {
    ThreadRecord inner;
    ThreadRecord outer;
    CHECK(sync_wait(await_event_twice_removed(event, inner, outer)) == 43);
    CHECK(inner.before == current_thread_id());
    CHECK(outer.before == current_thread_id());
    CHECK(inner.after == resumer_handle_id);
    CHECK(outer.after == resumer_handle_id);
  }
  resumer.join();
  CHECK(resumed);
  CHECK(resumer_id == resumer_handle_id);
}

TEST_CASE("sync_wait: returns only once the completing thread is done with the frame", "[task]") {
  // The waiter destroys the coroutine frame as soon as it wakes; the completing thread signals
  // at the final suspension point and touches nothing afterwards. Repeated so that ThreadSanitizer
  // and AddressSanitizer see the wake-up race both ways round.
  constexpr int rounds = 200;
  int completed = 0;
  for (int i = 0; i < rounds; ++i) {
    ManualEvent event;
    ThreadRecord record;
    std::thread resumer([&event, i] { (void)event.resume_with(i); });
    completed += sync_wait(await_event(event, record)) == i ? 1 : 0;
    resumer.join();
  }
  CHECK(completed == rounds);
}

TEST_CASE("Task: awaiting an empty task throws std::logic_error", "[task]") {
  const char* const empty_message =
      "connpool: co_await on an empty Task (default-constructed or moved-from)";

  SECTION("moved-from") {
    auto task = answer();
    auto taken = std::move(task);
    CHECK_FALSE(task);  // NOLINT(bugprone-use-after-move): testing the moved-from state
    CHECK_FALSE(task.done());
    REQUIRE_THROWS_AS(sync_wait(task), std::logic_error);
    REQUIRE_THROWS_WITH(sync_wait(task), empty_message);
    CHECK(sync_wait(taken) == 42);  // the task it moved to is intact
  }
  SECTION("default-constructed") {
    Task<> task;
    CHECK_FALSE(task);
    CHECK_FALSE(task.done());
    REQUIRE_THROWS_WITH(sync_wait(task), empty_message);
  }
}

TEST_CASE("Task: awaiting a task a second time throws std::logic_error, without resuming it",
          "[task]") {
  const char* const twice_message =
      "connpool: co_await on a Task that was already awaited (a Task can be awaited once)";
  int counter = 0;
  auto task = increment(counter);
  sync_wait(task);
  CHECK(counter == 1);
  REQUIRE_THROWS_AS(sync_wait(task), std::logic_error);
  REQUIRE_THROWS_WITH(sync_wait(task), twice_message);
  CHECK(counter == 1);
  CHECK(task.done());

  SECTION("the awaiting coroutine can catch it") {
    auto inner = answer();
    std::string error;
    CHECK(sync_wait(await_twice(inner, error)) == 42);
    CHECK(error == twice_message);
  }
}
