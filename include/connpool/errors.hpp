// connpool - the exceptions a pool throws
// SPDX-License-Identifier: MIT
#pragma once

// PoolError, the failures of an acquire, and NoHealthyHost (MultiHostPool). Invalid options
// are reported with std::invalid_argument (options.hpp); a factory's own exception reaches the
// caller unchanged.

#include <stdexcept>
#include <string>

namespace connpool {

/// Base of every error the pool itself raises. Catch it to handle any pool failure.
class PoolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// An acquire waited for its whole timeout without getting a connection.
///
/// The message gives the timeout and the pool's counts at that moment, e.g.
/// "connpool: acquire timed out after 250 ms (in use 3, idle 0, max_size 3, waiting 2)".
class AcquireTimeout : public PoolError {
 public:
  using PoolError::PoolError;
};

/// A connect took longer than PoolOptions::connect_timeout: the factory returned after its
/// deadline (its connection was closed at once), or gave up at the deadline it was passed. It
/// counts as a failed connect (PoolStats::create_failures, the connect backoff) and reaches
/// the caller that was connecting, as a factory's own exception would.
class ConnectTimeout : public PoolError {
 public:
  using PoolError::PoolError;
};

/// An acquire's wait was ended through its std::stop_token.
class AcquireCancelled : public PoolError {
 public:
  using PoolError::PoolError;
};

/// The pool is closed: thrown by every acquire after close(), and to every waiter woken by it.
class PoolClosed : public PoolError {
 public:
  PoolClosed() : PoolError("connpool: the pool is closed") {}
  using PoolError::PoolError;
};

/// An acquire was refused at once because PoolOptions::max_waiters callers already wait: the
/// pool is overloaded, and queueing would only add to the wait of everyone behind. The message
/// gives the counts. Shed the request (an HTTP 503, say), or retry later.
class PoolOverloaded : public PoolError {
 public:
  using PoolError::PoolError;
};

/// The pool was cleared (clear(), e.g. after a failover) while this acquire waited: every
/// connection it had is being closed, and the caller should retry, against the new server.
class PoolCleared : public PoolError {
 public:
  PoolCleared()
      : PoolError("connpool: the pool was cleared (clear()) while this acquire waited; retry") {}
  using PoolError::PoolError;
};

/// A MultiHostPool found no host to serve an acquire: every host failed or has its circuit
/// open. The message names each host with its health state and its last error, e.g.
/// "connpool: no healthy host (db1: open, 5 consecutive failures, last error: connection
/// refused; db2: ...)".
class NoHealthyHost : public PoolError {
 public:
  using PoolError::PoolError;
};

}  // namespace connpool
