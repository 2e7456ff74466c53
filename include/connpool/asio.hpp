// connpool - Asio adapter: async_acquire with completion tokens, and ExecutorScheduler
// SPDX-License-Identifier: MIT
#pragma once

// connpool::asio::async_acquire() borrows a connection from an AsyncConnectionPool as an Asio
// asynchronous operation (any completion token: use_awaitable, a callback, use_future...), with
// per-operation cancellation; connpool::asio::ExecutorScheduler resumes the pool's waiting
// coroutines on an Asio executor. Needs standalone Asio 1.19 or later (Debian: libasio-dev), an
// optional dependency: <connpool/connpool.hpp> does not include this header. The pool itself is in
// <connpool/async_pool.hpp>.

#include <chrono>
#include <concepts>
#include <condition_variable>
#include <coroutine>
#include <exception>
#include <memory>
#include <mutex>
#include <stop_token>
#include <type_traits>
#include <utility>

#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/dispatch.hpp>
#include <asio/execution/context.hpp>
#include <asio/execution/executor.hpp>
#include <asio/execution_context.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/is_executor.hpp>
#include <asio/post.hpp>
#include <asio/query.hpp>

#include <connpool/async_pool.hpp>
#include <connpool/detail/awaitable.hpp>
#include <connpool/detail/intrusive_list.hpp>
#include <connpool/handle.hpp>
#include <connpool/pool.hpp>

// Inside namespace connpool, `asio::` would name connpool::asio: Asio is always spelled `::asio::`.
//
// Note for clang with libstdc++ (Debian's clang++): Asio 1.22 enables co_await (use_awaitable,
// co_spawn) on clang only where <experimental/coroutine> exists, i.e. with libc++. Compile with
// -DASIO_HAS_CO_AWAIT=1 to use them with libstdc++ (connpool's cmake/asio.cmake does). This header
// itself needs no coroutine support from Asio.

namespace connpool {

namespace detail {

/// How many async_acquire initiations and cancellation handlers this thread is inside: a
/// completion decided while it is positive is posted, never run inline.
inline int& asio_no_inline_depth() noexcept {
  thread_local int depth = 0;
  return depth;
}

/// Raises asio_no_inline_depth() for its lifetime.
class AsioNoInlineScope {
 public:
  AsioNoInlineScope() noexcept { ++asio_no_inline_depth(); }
  AsioNoInlineScope(const AsioNoInlineScope&) = delete;
  AsioNoInlineScope& operator=(const AsioNoInlineScope&) = delete;
  ~AsioNoInlineScope() { --asio_no_inline_depth(); }
};

/// The handler async_acquire installs in the completion handler's cancellation slot: terminal,
/// partial and total cancellation all request a stop of the pool's wait.
///
/// Why all three: a wait that ends without a connection has had no side effect at all, which is
/// what the strictest of them (total) asks for.
struct AsioCancelOnSignal {
  std::stop_source* stop;

  void operator()(::asio::cancellation_type_t type) const noexcept {
    constexpr ::asio::cancellation_type_t supported = ::asio::cancellation_type::terminal |
                                                      ::asio::cancellation_type::partial |
                                                      ::asio::cancellation_type::total;
    if ((type & supported) != ::asio::cancellation_type::none) {
      // The stop may end the wait on this thread, inside emit(): the completion must be posted,
      // not run (and the operation's state destroyed) under the emit's feet.
      const AsioNoInlineScope no_inline;
      stop->request_stop();
    }
  }
};

/// An async_acquire operation as its execution context's AsioAcquireRegistry knows it.
struct AsioOpEntry : ListHook<AsioOpEntry> {
  std::coroutine_handle<> frame;                 // the operation's coroutine (asio_run_acquire)
  void* op = nullptr;                            // the pool's acquire operation it awaits
  bool (*abandon)(void* op) noexcept = nullptr;  // that operation's abandon()
};

/// The async_acquire operations of one Asio execution context (an io_context, say) that wait in
/// a pool, so that they go when the context is shut down (destroyed), as Asio's own operations
/// do: each leaves its pool's queue and is destroyed with its handler, which is never invoked.
/// Shared (std::shared_ptr) by the context's AsioAcquireService and by every operation, which
/// so can tell, after its wait, whether the context is still there to complete on.
class AsioAcquireRegistry {
 public:
  /// Lists `e` while it waits. False if the context is shut down already.
  bool add(AsioOpEntry* e) {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (!alive_) {
      return false;
    }
    ops_.push_back(e);
    return true;
  }

  /// Unlists `e` (if still listed) once its wait ended. Returns true if the context is alive,
  /// and then counts a delivery in progress until delivered(): shutdown() waits for it, so that
  /// the completion is posted (or dispatched) before the context goes.
  bool remove_for_delivery(AsioOpEntry* e) {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (IntrusiveList<AsioOpEntry>::is_linked(e)) {
      ops_.remove(e);
    }
    if (!alive_) {
      return false;
    }
    ++delivering_;
    return true;
  }

  void delivered() noexcept {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (--delivering_ == 0) {
      cv_.notify_all();
    }
  }

  /// The context shuts down: every listed operation whose wait can still be abandoned (or whose
  /// pool's resumption was dropped: nothing will resume it) is destroyed (its frame, and its
  /// handler unrun); one whose wait has just ended finds the context gone and ends without
  /// completing. Waits for deliveries in progress.
  void shutdown() noexcept {
    std::unique_lock<std::mutex> lock(mutex_);
    alive_ = false;
    while (!ops_.empty()) {
      AsioOpEntry* e = ops_.pop_front();
      if (e->abandon(e->op)) {
        lock.unlock();
        e->frame.destroy();  // no other thread resumes it now
        lock.lock();
      }
    }
    cv_.wait(lock, [this] { return delivering_ == 0; });
  }

 private:
  std::mutex mutex_;            // guards alive_, ops_, delivering_
  std::condition_variable cv_;  // delivering_ dropped to 0
  bool alive_ = true;
  IntrusiveList<AsioOpEntry> ops_;
  int delivering_ = 0;
};

/// The Asio service that shuts an execution context's async_acquire operations down with it.
class AsioAcquireService final : public ::asio::execution_context::service {
 public:
  using key_type = AsioAcquireService;
  static inline ::asio::execution_context::id id;

  explicit AsioAcquireService(::asio::execution_context& context)
      : ::asio::execution_context::service(context),
        registry_(std::make_shared<AsioAcquireRegistry>()) {}

  [[nodiscard]] std::shared_ptr<AsioAcquireRegistry> registry() const { return registry_; }

 private:
  void shutdown() override { registry_->shutdown(); }

  std::shared_ptr<AsioAcquireRegistry> registry_;
};

/// The registry of the execution context of `executor`; null for an executor without one (the
/// promise executor of use_future runs its completions inline, wherever they are decided).
template <class Executor>
std::shared_ptr<AsioAcquireRegistry> asio_registry_of(const Executor& executor) {
  if constexpr (::asio::can_query<const Executor&, ::asio::execution::context_t>::value) {
    return ::asio::use_service<AsioAcquireService>(
               ::asio::query(executor, ::asio::execution::context))
        .registry();
  } else if constexpr (requires { executor.context(); }) {
    return ::asio::use_service<AsioAcquireService>(executor.context()).registry();
  } else {
    return nullptr;
  }
}

/// `co_await AsioThisFrame{}`: the handle of the calling coroutine, without suspending.
struct AsioThisFrame {
  std::coroutine_handle<> frame;
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h) noexcept {
    frame = h;
    return false;
  }
  std::coroutine_handle<> await_resume() const noexcept { return frame; }
};

/// Clears a cancellation slot when the frame that installed a handler in it goes, however it
/// goes (completed, destroyed unrun by the executor, or destroyed by the context's shutdown).
template <class Slot>
struct AsioSlotClearer {
  Slot* slot;
  explicit AsioSlotClearer(Slot* s) noexcept : slot(s) {}
  AsioSlotClearer(const AsioSlotClearer&) = delete;
  AsioSlotClearer& operator=(const AsioSlotClearer&) = delete;
  ~AsioSlotClearer() {
    if (slot->is_connected()) {
      slot->clear();
    }
  }
};

/// The coroutine type of asio_run_acquire: eager and detached. Its frame is destroyed by the
/// AsioCompletion it hands itself to (run or destroyed unrun by the executor), never here.
struct AsioAcquireCoroutine {
  struct promise_type {
    AsioAcquireCoroutine get_return_object() noexcept { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }  // not reached: see above
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }  // the body catches everything
  };
};

/// What the final step of an async_acquire runs on the handler's executor: clears the
/// cancellation slot, takes the handler and the result out of the coroutine frame, destroys the
/// frame (the work guard and the stop source with it), then invokes the handler.
///
/// Destroyed without being run (the executor's context was destroyed first), it clears the slot
/// and destroys the frame, so the handle inside gives its connection back to the pool.
template <class Handler, class Slot, class Conn>
class AsioCompletion {
 public:
  AsioCompletion(std::coroutine_handle<> frame,
                 Handler* handler,
                 Slot* slot,
                 std::exception_ptr* error,
                 PooledHandle<Conn>* result) noexcept
      : frame_(frame), handler_(handler), slot_(slot), error_(error), result_(result) {}

  AsioCompletion(AsioCompletion&& other) noexcept
      : frame_(std::exchange(other.frame_, nullptr)),
        handler_(other.handler_),
        slot_(other.slot_),
        error_(other.error_),
        result_(other.result_) {}
  AsioCompletion(const AsioCompletion&) = delete;
  AsioCompletion& operator=(const AsioCompletion&) = delete;
  AsioCompletion& operator=(AsioCompletion&&) = delete;

  ~AsioCompletion() {
    if (frame_) {
      clear_slot();
      std::exchange(frame_, nullptr).destroy();
    }
  }

  void operator()() {
    clear_slot();
    Handler handler(std::move(*handler_));
    std::exception_ptr error = std::move(*error_);
    PooledHandle<Conn> result = std::move(*result_);
    // Why before the upcall: Asio's rule, so that the handler may start another operation that
    // reuses the memory, and nothing of this one is left when the handler returns.
    std::exchange(frame_, nullptr).destroy();
    std::move(handler)(std::move(error), std::move(result));
  }

 private:
  void clear_slot() noexcept {
    if (slot_->is_connected()) {
      slot_->clear();
    }
  }

  std::coroutine_handle<> frame_;  // owned: destroyed by operator() or the destructor
  Handler* handler_;
  Slot* slot_;
  std::exception_ptr* error_;
  PooledHandle<Conn>* result_;
};

/// The last co_await of asio_run_acquire: hands the frame to an AsioCompletion on the handler's
/// executor. Dispatched (run inline when this thread already runs that executor), or posted when
/// the result was decided inside the initiating function or inside a cancellation handler.
///
/// Workaround for g++ 12: when a coroutine is destroyed while suspended at `co_await T{...}`, a
/// braced (aggregate-initialised) prvalue awaiter, g++ 12.2 destroys the awaiter's members twice
/// (clang 14 once, as it should). The frame is destroyed at this very suspension point, so the
/// awaiter holds pointers only (it is trivially destructible), the executor included.
template <class Executor, class Handler, class Slot, class Conn>
struct AsioDeliver {
  const Executor* executor;
  Handler* handler;
  Slot* slot;
  std::exception_ptr* error;
  PooledHandle<Conn>* result;
  AsioAcquireRegistry* registry;  // null if the operation never registered (it failed before)

  bool await_ready() const noexcept { return false; }

  void await_suspend(std::coroutine_handle<> frame) const noexcept {
    deliver(frame, executor, handler, slot, error, result, registry);
  }

  /// Posts or dispatches the completion to the executor, then ends the delivery in `reg`.
  ///
  /// Why a function of its own, never inlined, with trivial parameters: once posted or
  /// dispatched, the frame (and this awaiter in it) may be destroyed at any moment, on any
  /// thread; inlined into the coroutine, the compiler may keep the locals (the executor's copy,
  /// the completion) in that very frame (clang 14 does at -O2; ThreadSanitizer reported the
  /// heap-use-after-free). Here they are on the thread's own stack. `reg` stays alive until
  /// delivered() returns: the context's shutdown waits for it.
  [[gnu::noinline]] static void deliver(std::coroutine_handle<> frame,
                                        const Executor* executor,
                                        Handler* handler,
                                        Slot* slot,
                                        std::exception_ptr* error,
                                        PooledHandle<Conn>* result,
                                        AsioAcquireRegistry* reg) noexcept {
    const Executor ex = *executor;  // copied before the frame may go
    AsioCompletion<Handler, Slot, Conn> completion(frame, handler, slot, error, result);
    if (asio_no_inline_depth() > 0) {
      ::asio::post(ex, std::move(completion));
    } else {
      ::asio::dispatch(ex, std::move(completion));
    }
    if (reg != nullptr) {
      reg->delivered();
    }
  }

  void await_resume() const noexcept {}
};

/// The body of one async_acquire: awaits the pool's own acquire, then delivers the result.
///
/// Why a coroutine: AsyncConnectionPool::acquire() is an awaitable, completed either at once or
/// by the pool (through its scheduler); a detached coroutine awaits it without a thread, and its
/// frame is the operation's state.
template <class Pool, class Handler>
CONNPOOL_CORO_NO_SANITIZE_FUNCTION AsioAcquireCoroutine
asio_run_acquire(Pool& pool, std::chrono::steady_clock::duration timeout, Handler handler) {
  using Conn = typename Pool::connection_type;
  using Executor = ::asio::associated_executor_t<Handler>;
  using Slot = ::asio::associated_cancellation_slot_t<Handler>;

  const Executor executor = ::asio::get_associated_executor(handler);
  // Why: the pool is not an Asio I/O object, so without this io_context::run() would return
  // while the wait is pending in the pool.
  const ::asio::executor_work_guard<Executor> work(executor);
  std::stop_source stop;
  Slot slot = ::asio::get_associated_cancellation_slot(handler);
  const AsioSlotClearer<Slot> clear_slot{&slot};
  std::exception_ptr error;
  PooledHandle<Conn> result;
  std::shared_ptr<AsioAcquireRegistry> registry;
  AsioOpEntry entry;
  try {
    registry = asio_registry_of(executor);
    if (slot.is_connected()) {
      slot.assign(AsioCancelOnSignal{&stop});
    }
    auto op = pool.acquire(timeout, stop.get_token());
    entry.frame = co_await AsioThisFrame{};
    entry.op = &op;
    entry.abandon = [](void* o) noexcept { return static_cast<decltype(op)*>(o)->abandon(); };
    if (registry && !registry->add(&entry)) {
      co_return;  // the context is shut down: the operation goes, its handler unrun
    }
    // If the context is shut down while this waits, this frame is destroyed right here.
    result = co_await op;
  } catch (...) {
    error = std::current_exception();
  }
  if (registry && !registry->remove_for_delivery(&entry)) {
    co_return;  // the context was shut down while the wait ended: nothing to complete on
  }
  static_assert(std::is_trivially_destructible_v<AsioDeliver<Executor, Handler, Slot, Conn>>);
  co_await AsioDeliver<Executor, Handler, Slot, Conn>{&executor, &handler, &slot,
                                                      &error,    &result,  registry.get()};
}

/// Whether `E` is an Asio executor (a standard one, or a Networking TS one).
template <class E>
concept AsioExecutor = ::asio::execution::is_executor<E>::value || ::asio::is_executor<E>::value;

/// The initiation object of async_acquire (see ::asio::async_initiate).
template <class Pool>
class AsioInitiateAcquire {
 public:
  explicit AsioInitiateAcquire(Pool& pool) noexcept : pool_(&pool) {}

  template <class Handler>
  void operator()(Handler&& handler, std::chrono::steady_clock::duration timeout) const {
    const AsioNoInlineScope no_inline;  // Asio's rule: no upcall from the initiating function
    asio_run_acquire(*pool_, timeout, std::decay_t<Handler>(std::forward<Handler>(handler)));
  }

 private:
  Pool* pool_;
};

}  // namespace detail

/// The Asio adapter: asynchronous operations and a scheduler for AsyncConnectionPool.
namespace asio {

/// The completion signature of async_acquire for connections of type `Conn`.
template <class Conn>
using acquire_signature = void(std::exception_ptr, PooledHandle<Conn>);

/// Borrows a connection from `pool` as an Asio asynchronous operation, waiting up to `timeout`.
///
/// The operation is AsyncConnectionPool::acquire(timeout) with Asio's completion-token
/// interface: it takes an idle connection, or creates one below max_size, or waits in the pool's
/// FIFO queue, exactly as a coroutine's `co_await pool.acquire()` does (and in the same queue),
/// and completes when it has a connection, when `timeout` has passed (0: do not wait), when the
/// pool closes, or when it is cancelled. Any completion token works: `::asio::use_awaitable`
/// (`co_await` yields the handle and rethrows the error), a callback, `::asio::use_future` (a
/// std::future<PooledHandle<Conn>>), a callback wrapped in `::asio::bind_executor`...
///
/// Completion Signature:
///     void(std::exception_ptr error, connpool::PooledHandle<Conn> handle)
/// On success `error` is null and `handle` holds the connection. Otherwise `handle` is empty and
/// `error` holds AcquireTimeout (the wait reached `timeout`), PoolClosed (the pool was or
/// became closed), AcquireCancelled (see below) or the factory's exception, unchanged.
///
/// Per-Operation Cancellation:
/// Supports the terminal, partial and total cancellation types. While the operation waits in the
/// pool's queue, a cancellation removes it from the queue and completes it with
/// AcquireCancelled, having taken nothing from the pool. A cancellation that comes after the
/// pool has handed the operation a connection, or while an asynchronous factory creates one, is
/// ignored: the operation completes with the connection. As everywhere in Asio, emit the signal
/// on the handler's executor (through a strand when several threads run it).
///
/// Throws: std::invalid_argument, from this call, if `timeout` is negative; std::bad_alloc.
/// Every other error goes to the completion handler.
/// Thread safety: may be called concurrently with anything else on the pool, from any thread.
/// Lifetime: the operation keeps outstanding work on the handler's associated executor until the
/// handler has run (an executor_work_guard), so io_context::run() does not return while the
/// operation waits in the pool, which Asio cannot see. The pool may be closed or destroyed
/// first: the operation then completes with PoolClosed. The executor's context may be stopped
/// and destroyed at any time, as with Asio's own operations: an operation waiting in the pool
/// leaves its queue and is destroyed with its handler, never invoked; one whose completion is
/// queued in the context is destroyed uncalled, and the handle inside gives its connection back
/// to the pool.
/// Complexity: one coroutine frame allocated (with operator new) per operation, besides what the
/// pool's acquire and the executor's post/dispatch allocate.
/// Resumes on: the handler always runs on its associated executor (for use_awaitable, the
/// coroutine's), never inside async_acquire itself nor inside a cancellation signal's emit():
/// a result known there is posted. Otherwise the completion is dispatched from the thread that
/// ended the wait (the one that released the connection or closed the pool, or the pool's timer
/// thread on a timeout; with an ExecutorScheduler, a thread of that executor), so it runs inline
/// when that thread already runs the handler's executor. A handler without an associated executor
/// gets Asio's system executor: it runs on the thread that ended the wait, or on Asio's system
/// thread pool when the result was known at once.
/// Example:
///     asio::awaitable<void> handle_request(Pool& pool) {
///       auto db = co_await connpool::asio::async_acquire(pool, 250ms, asio::use_awaitable);
///       co_await db->async_query("SELECT 1", asio::use_awaitable);
///     }  // db gives the connection back
template <class Conn,
          class Factory,
          class Clock,
          class Rep,
          class Period,
          ::asio::completion_token_for<acquire_signature<Conn>> CompletionToken>
auto async_acquire(AsyncConnectionPool<Conn, Factory, Clock>& pool,
                   std::chrono::duration<Rep, Period> timeout,
                   CompletionToken&& token) {
  const std::chrono::steady_clock::duration wait = ::connpool::detail::to_wait_duration(timeout);
  return ::asio::async_initiate<CompletionToken, acquire_signature<Conn>>(
      ::connpool::detail::AsioInitiateAcquire<AsyncConnectionPool<Conn, Factory, Clock>>(pool),
      token, wait);
}

/// As async_acquire(pool, timeout, token), waiting up to the pool's options().acquire_timeout.
template <class Conn,
          class Factory,
          class Clock,
          ::asio::completion_token_for<acquire_signature<Conn>> CompletionToken>
auto async_acquire(AsyncConnectionPool<Conn, Factory, Clock>& pool, CompletionToken&& token) {
  return ::connpool::asio::async_acquire(pool, pool.options().acquire_timeout,
                                         std::forward<CompletionToken>(token));
}

/// A connpool Scheduler that resumes coroutines on an Asio executor: the pool's waiting
/// coroutines (and async_acquire operations) continue on the executor's threads.
///
/// `schedule(r)` posts a handler that owns the connpool::Resumption `r` to the executor, so a
/// coroutine whose wait ends in another thread (a release on a worker thread, the pool's timer
/// thread) is resumed by a thread running the executor, never inline in the thread that ended the
/// wait.
///
/// Thread safety: schedule() may be called concurrently from any thread.
/// Lifetime: the scheduler keeps no work of its own: a posted resumption counts as the
/// executor's outstanding work until it runs, and nothing else does, so io_context::run() can
/// return while coroutines wait in the pool (give it work, e.g. async_acquire does, if it must
/// not). Use an untracked executor, such as io_context::get_executor(): a work-tracking one would
/// keep run() from returning for as long as the pool lives. The executor's context may be
/// destroyed (or never run again) with resumptions queued: a handler destroyed unrun drops its
/// Resumption, so the acquire gives back what its wait got (the connection returns to the pool,
/// or goes on to the next waiter, whose resumption is posted to the same context and dropped in
/// turn while it shuts down), and its coroutine is never resumed: it stays suspended, and
/// destroying it (its frame, or the Task that owns it) is safe and leaks nothing. Waits that
/// have not ended when the context is gone must not end later, though (their resumption would
/// be posted to a context that no longer exists): close the pool, or destroy those coroutines,
/// before the context, as with any executor a pool's scheduler posts to.
/// Example:
///     asio::io_context io;
///     connpool::AsyncConnectionPool pool{factory, connpool::PoolOptions{.max_size = 8},
///                                        connpool::asio::make_scheduler(io.get_executor())};
template <::connpool::detail::AsioExecutor E>
class ExecutorScheduler {
 public:
  using executor_type = E;

  explicit ExecutorScheduler(const executor_type& executor) noexcept(
      std::is_nothrow_copy_constructible_v<executor_type>)
      : executor_(executor) {}

  /// Posts `resumption` to the executor: run there, or dropped if the handler is destroyed
  /// unrun. A failed post (std::bad_alloc) terminates: a resumption that can be run nowhere
  /// cannot be recovered.
  void schedule(Resumption resumption) const noexcept {
    ::asio::post(executor_, std::move(resumption));
  }

  /// Posts `coroutine.resume()` to the executor, for callers that have a bare handle. Unlike a
  /// Resumption, a handle whose handler is destroyed unrun is never resumed (the coroutine's
  /// frame leaks). AsyncConnectionPool uses the overload above.
  void schedule(std::coroutine_handle<> coroutine) const noexcept {
    ::asio::post(executor_, [coroutine] { coroutine.resume(); });
  }

  [[nodiscard]] executor_type get_executor() const noexcept { return executor_; }

 private:
  executor_type executor_;
};

/// An ExecutorScheduler on `executor`.
template <::connpool::detail::AsioExecutor E>
[[nodiscard]] ExecutorScheduler<E> make_scheduler(const E& executor) {
  return ExecutorScheduler<E>(executor);
}

/// An ExecutorScheduler on `context.get_executor()` (an io_context, say).
template <class ExecutionContext>
requires std::derived_from<ExecutionContext, ::asio::execution_context>
[[nodiscard]] auto make_scheduler(ExecutionContext& context) {
  return ::connpool::asio::make_scheduler(context.get_executor());
}

}  // namespace asio
}  // namespace connpool
