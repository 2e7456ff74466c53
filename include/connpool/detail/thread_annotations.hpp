// connpool - clang thread-safety annotations and an annotated mutex
// SPDX-License-Identifier: MIT
#pragma once

// The CONNPOOL_* macros expand to clang's thread-safety attributes under clang and to nothing
// elsewhere. libstdc++'s std::mutex carries no annotations, so the pool locks a small annotated
// wrapper, detail::Mutex, and clang -Wthread-safety checks that every guarded member is only
// touched with its mutex held.

#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define CONNPOOL_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define CONNPOOL_THREAD_ANNOTATION(x)
#endif

#define CONNPOOL_CAPABILITY(x) CONNPOOL_THREAD_ANNOTATION(capability(x))
#define CONNPOOL_SCOPED_CAPABILITY CONNPOOL_THREAD_ANNOTATION(scoped_lockable)
#define CONNPOOL_GUARDED_BY(x) CONNPOOL_THREAD_ANNOTATION(guarded_by(x))
#define CONNPOOL_PT_GUARDED_BY(x) CONNPOOL_THREAD_ANNOTATION(pt_guarded_by(x))
#define CONNPOOL_REQUIRES(...) CONNPOOL_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define CONNPOOL_EXCLUDES(...) CONNPOOL_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define CONNPOOL_ACQUIRE(...) CONNPOOL_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define CONNPOOL_RELEASE(...) CONNPOOL_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define CONNPOOL_NO_THREAD_SAFETY_ANALYSIS CONNPOOL_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace connpool::detail {

/// A std::mutex that clang's thread-safety analysis understands.
class CONNPOOL_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;
  ~Mutex() = default;

  void lock() CONNPOOL_ACQUIRE() { m_.lock(); }
  void unlock() CONNPOOL_RELEASE() { m_.unlock(); }

  /// The wrapped mutex, for std::unique_lock and condition variables.
  std::mutex& native() noexcept { return m_; }

 private:
  std::mutex m_;
};

/// A scoped lock on a detail::Mutex that can be unlocked and relocked, and handed to a
/// std::condition_variable as the std::unique_lock it wraps.
class CONNPOOL_SCOPED_CAPABILITY UniqueLock {
 public:
  explicit UniqueLock(Mutex& m) CONNPOOL_ACQUIRE(m) : lock_(m.native()) {}
  UniqueLock(const UniqueLock&) = delete;
  UniqueLock& operator=(const UniqueLock&) = delete;
  ~UniqueLock() CONNPOOL_RELEASE() = default;

  void lock() CONNPOOL_ACQUIRE() { lock_.lock(); }
  void unlock() CONNPOOL_RELEASE() { lock_.unlock(); }

  /// The std::unique_lock, for condition_variable::wait*; the wait returns with it held again.
  std::unique_lock<std::mutex>& native() noexcept { return lock_; }

 private:
  std::unique_lock<std::mutex> lock_;
};

}  // namespace connpool::detail
